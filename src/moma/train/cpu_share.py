"""`CpuShareGuard`: the torch thread count of a CPU run follows the CPUs left free.

See `moma.threads` for why: spinning OpenMP threads collapse when another process takes
their cores. The guard acts only where that can happen: a single-process run on the CPU
whose threads spin (moma's ``spin`` mode) and whose thread count the user did not fix.
"""

from __future__ import annotations

import logging
import time

import lightning as L
import torch

from moma.errors import ConfigError
from moma.threads import CpuSample, fair_threads, omp_mode, others_cpus, sample

log = logging.getLogger(__name__)

CHECK_EVERY_S = 2.0  # seconds of training between two looks at the machine


def check_threads(threads: int | None) -> None:
    """Refuse a thread count below 1, naming the option."""
    if threads is not None and int(threads) < 1:
        raise ConfigError(f"trainer.threads must be >= 1 or null (automatic), got {threads}")


class CpuShareGuard(L.Callback):
    """Sets ``threads`` when given; otherwise, while spinning threads would wait for cores
    other processes hold, lowers the thread count to the free CPUs (and raises it again).

    Args:
        threads: fixed torch intra-op thread count, or None (automatic).
        every_s: seconds between two looks at the machine's CPU use.
    """

    def __init__(self, threads: int | None = None, every_s: float = CHECK_EVERY_S) -> None:
        check_threads(threads)
        self.threads, self.every_s = threads, float(every_s)
        self.full = 0  # the thread count to return to
        self.active = False
        self._last: CpuSample | None = None
        self._before: int | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(int(self.threads))
            return
        self.full = self._before
        self._last = sample()
        self.active = (
            self._last is not None
            and self.full > 1
            and omp_mode() == "spin"
            and pl_module.device.type == "cpu"
            and trainer.world_size == 1
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.active or self._last is None:
            return
        if time.monotonic() - self._last.wall < self.every_s:
            return
        now = sample()
        if now is None:
            return
        others, self._last = others_cpus(self._last, now), now
        want, have = fair_threads(others, self.full), torch.get_num_threads()
        if want != have:
            torch.set_num_threads(want)
            log.info(
                "other processes use %.1f CPUs: %d torch thread(s) instead of %d",
                others, want, have,
            )  # fmt: skip

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._before is not None:
            torch.set_num_threads(self._before)
