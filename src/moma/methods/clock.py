"""Where an epoch's time goes: named stages summed over the epoch.

On the CPU a stage is timed with ``perf_counter``. CUDA work is asynchronous, so there a
stage is bracketed by CUDA events (no synchronisation inside the step) that are read once,
when the totals are collected at the end of the epoch.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class StageClock:
    """Sums of wall time per stage name; :meth:`collect` returns and resets them."""

    def __init__(self) -> None:
        self._totals: dict[str, float] = defaultdict(float)
        self._open: dict[str, tuple] = {}
        self._events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    def start(self, name: str, device: torch.device) -> None:
        """Start timing ``name`` (work queued on ``device`` from now on counts)."""
        if device.type == "cuda":
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self._open[name] = ("cuda", ev)
        else:
            self._open[name] = ("cpu", time.perf_counter())

    def stop(self, name: str) -> None:
        """Stop timing ``name`` (no-op when it was not started)."""
        kind, start = self._open.pop(name, (None, None))
        if kind == "cuda":
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((name, start, end))
        elif kind == "cpu":
            self._totals[name] += time.perf_counter() - start

    @contextmanager
    def timed(self, name: str, device: torch.device) -> Iterator[None]:
        """``with clock.timed("teacher", x.device): ...`` adds the block's time to ``name``."""
        self.start(name, device)
        try:
            yield
        finally:
            self.stop(name)

    def collect(self) -> dict[str, float]:
        """Seconds per stage since the last call (waits for pending CUDA events)."""
        for name, start, end in self._events:
            end.synchronize()
            self._totals[name] += start.elapsed_time(end) / 1000.0
        totals = dict(self._totals)
        self._totals.clear()
        self._events.clear()
        self._open.clear()
        return totals
