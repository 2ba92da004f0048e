"""CPU threads that stay fast when other processes share the machine.

torch's OpenMP runtime (libgomp) lets a thread that waits for work spin for a while before it
sleeps. On an idle machine that is the fastest choice: the gaps between two parallel ops are
shorter than a wake-up. When another process competes for the cores it is the slowest: a
parallel op waits for its descheduled thread while the other threads spin away the time
slice, and a short training run took 3.6x its time alone beside one other 2-thread torch job
(BENCHMARKS.md, "Threads on a shared CPU"). ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once)
avoids the collapse but costs up to 25% on an idle machine.

So moma decides from the CPUs that are actually free:

1. ``configure_openmp()`` runs before torch is imported (the ``moma`` command calls it first
   thing). It samples the machine's CPU use for a fraction of a second: when other processes
   keep CPUs busy it sets ``OMP_WAIT_POLICY=PASSIVE`` (mode ``passive``); on an idle machine
   it leaves libgomp's spinning default (mode ``spin``). ``OMP_WAIT_POLICY`` or
   ``GOMP_SPINCOUNT`` set by the user are kept as they are (mode ``user``).
2. During training in mode ``spin`` (`moma.train.cpu_share.CpuShareGuard`), every couple of
   seconds the torch thread count follows the CPUs other processes leave free (at least one,
   at most the default), so spinning threads never wait for a descheduled partner; it goes
   back up when the others finish. ``--trainer.threads N`` fixes the count instead.

Python API: call ``moma.threads.configure_openmp()`` before ``import torch`` (libgomp reads
its environment once, when torch loads it), or export ``OMP_WAIT_POLICY`` yourself; `fit`
adapts the thread count either way.

This module must not import torch at module level.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MODE_ENV = "MOMA_OMP_MODE"  # what configure_openmp chose, for child processes and reports
OMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
SAMPLE_S = 0.3  # how long configure_openmp watches the machine
# Other processes using at least this many CPUs (averaged over the sample) make a machine busy.
BUSY_CPUS = 0.5


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU seconds at one instant: the whole machine (busy, all processes) and
    this process with its children (DataLoader workers)."""

    wall: float
    machine_busy: float
    own: float


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _clock_ticks() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100.0


def _machine_busy_seconds() -> float | None:
    """Busy CPU seconds of the whole machine since boot (``/proc/stat``), None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    v = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(v) - v[3] - v[4]) / _clock_ticks()


def _proc_cpu_seconds(pid: int | str) -> float:
    """utime + stime of one process (all its threads), 0 when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    rest = text[text.rfind(")") + 2 :].split()  # fields after "(comm)": state is rest[0]
    return (int(rest[11]) + int(rest[12])) / _clock_ticks()


def _children(pid: int | str) -> list[str]:
    found: list[str] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            found += Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except OSError:
            continue
    return found


def own_cpu_seconds() -> float:
    """CPU seconds of this process (all threads, fine-grained) and of its descendants
    (DataLoader workers, compilers; from ``/proc``, in clock ticks)."""
    total, todo, seen = time.process_time(), _children(os.getpid()), {str(os.getpid())}
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _proc_cpu_seconds(pid)
        todo += _children(pid)
    return total


def sample() -> CpuSample | None:
    """The CPU counters now, or None where ``/proc`` cannot tell (not Linux)."""
    busy = _machine_busy_seconds()
    if busy is None:
        return None
    return CpuSample(time.monotonic(), busy, own_cpu_seconds())


def others_cpus(before: CpuSample, after: CpuSample) -> float:
    """CPUs other processes kept busy between two samples (average, >= 0)."""
    wall = after.wall - before.wall
    if wall <= 0:
        return 0.0
    others = (after.machine_busy - before.machine_busy) - (after.own - before.own)
    return max(0.0, others / wall)


def measure_others(seconds: float = SAMPLE_S) -> float | None:
    """CPUs other processes use, averaged over ``seconds`` (None off Linux)."""
    before = sample()
    if before is None:
        return None
    time.sleep(seconds)
    after = sample()
    return None if after is None else others_cpus(before, after)


def user_set_omp() -> bool:
    """Whether the environment already chose a wait policy or spin count."""
    return any(os.environ.get(k) for k in OMP_VARS)


def omp_mode() -> str:
    """``user``, ``passive`` or ``spin``: how torch's OpenMP threads wait in this process."""
    recorded = os.environ.get(MODE_ENV)
    if recorded in ("passive", "spin"):
        return recorded
    return "user" if user_set_omp() else "spin"


def configure_openmp(sample_s: float = SAMPLE_S) -> str:
    """Choose how OpenMP threads wait, before torch loads; returns the mode.

    ``user``: ``OMP_WAIT_POLICY``/``GOMP_SPINCOUNT`` were set, nothing changes. ``passive``:
    other processes keep CPUs busy now, ``OMP_WAIT_POLICY=PASSIVE`` is set. ``spin``: the
    machine is idle, libgomp's spinning default stays. A child process keeps its parent's
    choice (recorded in ``MOMA_OMP_MODE``). Once torch is imported the environment no longer
    matters: the mode is then only reported.
    """
    if os.environ.get(MODE_ENV) in ("passive", "spin") or user_set_omp():
        return omp_mode()
    if "torch" in sys.modules:
        return "spin"
    others = measure_others(sample_s)
    busy = others is not None and others >= BUSY_CPUS
    mode = "passive" if busy else "spin"
    if busy:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    os.environ[MODE_ENV] = mode
    log.debug(
        "OpenMP threads: %s (other processes used %s CPUs of %d)",
        mode, "n/a" if others is None else f"{others:.2f}", usable_cpus(),
    )  # fmt: skip
    return mode


def fair_threads(others: float, full: int) -> int:
    """Threads to run beside ``others`` busy CPUs: the free CPUs, at least 1, at most ``full``."""
    free = usable_cpus() - others
    return max(1, min(full, int(free + 0.5)))
