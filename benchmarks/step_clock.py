"""Run a ``moma`` command in this process and time its training steps from inside.

Used by `contention.py` and `throughput.py`: the command runs through the CLI entry point
(so moma's start-up choices act as for a user), with one extra Lightning callback that
stamps the end of every training step. Call `prepare` first thing in a process (before
torch is imported): it makes moma's OpenMP choice, as the ``moma`` command does.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path


def prepare() -> str:
    """moma's OpenMP choice for this process (the CLI's first act); returns the mode."""
    from moma.threads import configure_openmp

    return configure_openmp()


def run_timed(argv: list[str], warm: int = 2, marker: str | None = None) -> dict:
    """Run ``moma ARGV``; returns the exit code, the wall time of the call, the time of the
    steps after the first ``warm``, their count and the torch thread counts seen.

    ``marker``: a file touched when the first step ends (another process can wait for it).
    """
    import lightning as L
    import torch

    from moma.cli.main import main

    fit_mod = importlib.import_module("moma.train.fit")  # moma.train.fit is also a function
    stamps: list[float] = []
    threads: list[int] = []

    class StepClock(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if torch.cuda.is_available() and pl_module.device.type == "cuda":
                torch.cuda.synchronize(pl_module.device)
            stamps.append(time.perf_counter())
            threads.append(torch.get_num_threads())
            if len(stamps) == 1 and marker:
                Path(marker).touch()

    build = fit_mod.build_trainer

    def build_with_clock(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.callbacks.append(StepClock())
        return trainer

    fit_mod.build_trainer = build_with_clock
    start = time.perf_counter()
    try:
        rc = main(argv)
    finally:
        fit_mod.build_trainer = build
    timed = len(stamps) - warm
    return {
        "rc": rc,
        "wall_s": round(time.perf_counter() - start, 2),
        "steps_s": round(stamps[-1] - stamps[warm - 1], 3) if timed > 0 else None,
        "timed_steps": max(0, timed),
        "threads_min": min(threads, default=0),
        "threads_max": max(threads, default=0),
    }
