"""A training DataLoader that resumes mid-epoch where the interrupted run stopped.

Without it, a run resumed from a mid-epoch checkpoint starts a fresh shuffle of the epoch:
some images are seen twice, others not at all, and the result differs from the
uninterrupted run. Here the order of every epoch is a pure function of ``(seed, epoch)``
(torch's ``DistributedSampler``, one replica in a single process), and the loader's state is
the number of batches the *training steps* consumed, counted by the datamodule (the loader
itself runs a batch ahead: Lightning prefetches). Lightning saves that state in each
checkpoint (the loader has ``state_dict`` / ``load_state_dict``) and hands it back on resume;
the next pass over the epoch then skips the batches already trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """Shuffled indices of one process's share, the same for the same ``(seed, epoch)``.

    Lightning calls ``set_epoch`` before every epoch and, seeing a ``DistributedSampler``,
    leaves it in place under DDP (each rank is given its ``rank`` and ``num_replicas`` here).
    ``skip(epoch, n)`` drops the first ``n`` indices of that epoch's next pass.
    """

    def __init__(self, dataset: Dataset, seed: int, rank: int = 0, num_replicas: int = 1) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self._skip: tuple[int, int] | None = None  # (epoch, indices to drop)

    def skip(self, epoch: int, n: int) -> None:
        """Drop the first ``n`` indices of ``epoch`` (once, on its next pass)."""
        self._skip = (int(epoch), int(n)) if n > 0 else None

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        if self._skip is not None and self._skip[0] == self.epoch:
            indices = indices[self._skip[1] :]
            self._skip = None
        return iter(indices)


class ResumableLoader(DataLoader):
    """A DataLoader whose state (epoch, batches trained on) Lightning checkpoints and restores.

    ``state_fn()`` gives the position to save and ``restore_fn(state)`` applies a saved one;
    both belong to the datamodule, which counts the batches that reached a training step.
    """

    def __init__(
        self,
        *args: Any,
        state_fn: Callable[[], dict],
        restore_fn: Callable[[dict], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._state_fn, self._restore_fn = state_fn, restore_fn

    def state_dict(self) -> dict:
        return self._state_fn()

    def load_state_dict(self, state: dict) -> None:
        self._restore_fn(state)
