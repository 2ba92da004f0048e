"""Wall-clock timing of repeated steps: warm-up, per-step samples, median and spread."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on the CPU, where ops run eagerly)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Per-step wall-clock seconds of the timed (post warm-up) steps, and the CPU seconds
    this process used meanwhile (all its threads), which tell a busy machine apart: on an
    idle one CPU time is about wall time x threads."""

    seconds: list[float]
    cpu_seconds: list[float] | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def quartiles(self) -> tuple[float, float]:
        """First and third quartile (inclusive method; the min and max for < 4 samples)."""
        s = sorted(self.seconds)
        if len(s) < 4:
            return s[0], s[-1]
        q = statistics.quantiles(s, n=4, method="inclusive")
        return q[0], q[2]

    def rate(self, items: int) -> dict[str, float]:
        """Items per second: median, IQR bounds and min/max over the steps."""
        q1, q3 = self.quartiles
        return {
            "median": items / self.median,
            "q1": items / q3,  # the slow quartile of time is the low quartile of rate
            "q3": items / q1,
            "min": items / max(self.seconds),
            "max": items / min(self.seconds),
        }

    def summary(self) -> dict[str, float | int]:
        """Step time statistics in milliseconds (JSON-friendly)."""
        q1, q3 = self.quartiles
        return {
            "steps": len(self.seconds),
            "ms_median": 1e3 * self.median,
            "ms_q1": 1e3 * q1,
            "ms_q3": 1e3 * q3,
            "ms_min": 1e3 * min(self.seconds),
            "ms_max": 1e3 * max(self.seconds),
            "cpu_ms_median": (
                None if not self.cpu_seconds else 1e3 * statistics.median(self.cpu_seconds)
            ),
        }


def time_steps(
    step: Callable[[], object],
    steps: int,
    warmup: int,
    device: torch.device,
) -> Timing:
    """Run ``step`` ``warmup`` times untimed, then ``steps`` times, timing each call.

    Each timed call is bracketed by a device synchronisation, so queued GPU work is counted
    in the step that issued it.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return time_interleaved([step], steps, warmup, device)[0]


def time_interleaved(
    steps: list[Callable[[], object]],
    repeats: int,
    warmup: int,
    device: torch.device,
) -> list[Timing]:
    """Time several steps round-robin (A, B, C, A, B, C, ...), one timing each.

    On a shared machine the load drifts; steps that are compared with each other (a whole
    step and its parts, the mask ratios) then see the same drift instead of each its own
    window.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(max(0, warmup)):
        for step in steps:
            step()
    synchronize(device)
    seconds: list[list[float]] = [[] for _ in steps]
    cpu: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for i, step in enumerate(steps):
            c0, t0 = time.process_time(), time.perf_counter()
            step()
            synchronize(device)
            seconds[i].append(time.perf_counter() - t0)
            cpu[i].append(time.process_time() - c0)
    return [Timing(s, c) for s, c in zip(seconds, cpu)]
