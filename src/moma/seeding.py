"""Seeding a run: every generator (Python, NumPy, torch, dataloader workers) from one seed."""

from __future__ import annotations


def seed_run(seed: int) -> None:
    """Seed every generator before a run builds its models, so that a randomly initialised
    model depends on the seed alone (``moma.train.fit`` seeds again before training, so the
    training stream does not depend on how much randomness building the models used)."""
    import lightning as L  # lazy: Lightning takes seconds to import; validation must not

    L.seed_everything(int(seed), workers=True, verbose=False)
