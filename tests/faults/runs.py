"""Helpers of the fault-injection suite: tiny training commands, child processes, waiting.

Child processes run with one intra-op thread (``OMP_NUM_THREADS=1``): on two shared cores a
tiny ViT step is ~20x slower with two spinning OpenMP threads than with one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOY_RUN = Path(__file__).with_name("toy_run.py")
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# A tiny student: 16 px images, patch 4 (a 4x4 grid), 2 blocks of width 32.
TINY_STUDENT = [
    "--student.backbone.img_size=16",
    "--student.backbone.patch_size=4",
    "--student.backbone.depth=2",
    "--student.backbone.embed_dim=32",
    "--student.backbone.num_heads=2",
]
TRACEBACK = "Traceback (most recent call last)"


def child_env() -> dict[str, str]:
    """The environment of a child training process (one thread, unbuffered, repo importable)."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return env


def distill_args(
    out_dir: Path,
    teacher: Path,
    data: list[str],
    max_steps: int = 8,
    ckpt_every: int = 2,
    extra: list[str] | None = None,
) -> list[str]:
    """``moma distill`` arguments of a tiny, fp32, CPU run (one teacher named ``t``)."""
    return [
        "distill",
        "--teachers=" + json.dumps([{"path": str(teacher), "name": "t"}]),
        *TINY_STUDENT,
        *data,
        "--data.img_size=16",
        "--data.batch_size=16",
        "--moma.mask_ratio=0.75",
        "--optim.base_lr=1e-3",
        f"--trainer.out_dir={out_dir}",
        f"--trainer.max_steps={max_steps}",
        f"--trainer.ckpt_every_n_steps={ckpt_every}",
        "--trainer.precision=32-true",
        "--trainer.accelerator=cpu",
        "--trainer.progress_bar=false",
        "--trainer.log_every_n_steps=1",
        "--trainer.seed=0",
        *(extra or []),
    ]


@dataclass
class Child:
    """A training process started by a test; its stdout and stderr go to ``log``."""

    proc: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, pattern: str, timeout: float = 180.0) -> re.Match:
        """Wait until ``pattern`` (a regex) appears in the log; fail if the process ends first."""
        return wait_until(
            lambda: re.search(pattern, self.text()),
            timeout,
            f"{pattern!r} in the log of pid {self.pid}",
            self,
        )

    def signal(self, sig: int) -> None:
        assert self.proc.poll() is None, f"process ended before {sig!r}:\n{self.text()[-3000:]}"
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 180.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"pid {self.pid} still running after {timeout}s") from None

    def stop(self) -> None:
        """Make sure the process is gone (test clean-up)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def start(argv: list[str], log: Path, cwd: Path | None = None) -> Child:
    """Start ``python argv...`` in the background, stdout and stderr into ``log``."""
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, *argv],
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd or REPO,
            env=child_env(),
        )
    return Child(proc, log)


def start_cli(args: list[str], log: Path, cwd: Path | None = None) -> Child:
    """Start the ``moma`` command line (``python -m moma.cli.main ARGS``)."""
    return start(["-m", "moma.cli.main", *args], log, cwd)


def start_toy(opts: dict, log: Path) -> Child:
    """Start ``toy_run.py`` (a toy ``fit()`` run, see its docstring) with ``opts``."""
    return start([str(TOY_RUN), json.dumps(opts)], log)


def wait_until(
    cond: Callable[[], object], timeout: float, what: str, child: Child | None = None
) -> object:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        if child is not None and child.proc.poll() is not None:
            got = cond()
            if got:
                return got
            raise AssertionError(
                f"pid {child.pid} exited ({child.proc.returncode}) before {what}:\n"
                f"{child.text()[-3000:]}"
            )
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def error_lines(text: str) -> list[str]:
    """The ``moma: error: ...`` lines of a command's output."""
    return [ln for ln in text.splitlines() if ln.startswith("moma: error: ")]


def one_line_error(capsys, rc: int, *parts: str) -> str:
    """Assert exit status 2 and exactly one ``moma: error:`` line containing every part."""
    err = capsys.readouterr().err
    assert rc == 2, err[-3000:]
    assert TRACEBACK not in err
    lines = error_lines(err)
    assert len(lines) == 1, err[-3000:]
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def image(path: Path, bright: bool, seed: int, size: int = 8) -> Path:
    """A random ``size`` px PNG, dark (values < 100) or bright (>= 150)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    lo, hi = (150, 256) if bright else (0, 100)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(lo, hi, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def two_classes(root: Path) -> Path:
    """An image folder with ``train/`` and ``val/``, a dark class ``a``, a bright class ``b``
    (8 + 8 training, 4 + 4 held-out images): raw-pixel kNN tells them apart perfectly."""
    for split, n in (("train", 8), ("val", 4)):
        for i in range(n):
            image(root / split / "a" / f"{i}.png", bright=False, seed=i)
            image(root / split / "b" / f"{i}.png", bright=True, seed=100 + i)
    return root


def knn_argv(data: Path, out: Path, *extra: str) -> list[str]:
    """``moma eval knn`` of raw pixels on ``data`` (8 px), results in ``out``."""
    return ["eval", "knn", "--backbone=raw-pixels", f"--data.dataset={data}",
            "--data.img_size=8", "--knn.precision=32", f"--out_dir={out}", *extra]  # fmt: skip


def knn_top1(data: Path, out: Path, cache: bool = True) -> float:
    """Run :func:`knn_argv` with k=1 in-process; the top-1 it writes."""
    from moma.cli.main import main

    assert main(knn_argv(data, out, "--knn.k=[1]", f"--knn.use_cache={str(cache).lower()}")) == 0
    return json.loads((out / "results" / "knn-k1-raw-pixels.json").read_text())["value"]


def attempt_steps(run_dir: Path, key: str = "train/loss") -> list[list[int]]:
    """The steps that logged ``key``, per attempt (``logs/version_N/metrics.csv``), in order."""
    import csv

    files = sorted(
        Path(run_dir).glob("logs/version_*/metrics.csv"),
        key=lambda p: int(p.parent.name.split("_")[-1]),
    )
    out = []
    for path in files:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        out.append([int(float(r["step"])) for r in rows if r.get(key) not in (None, "")])
    return out


def logged_up_to(run_dir: Path) -> int:
    """The highest step whose loss the (running) run has written so far (-1: none yet)."""
    try:
        steps = [s for a in attempt_steps(run_dir) for s in a]
    except (OSError, ValueError, KeyError):  # a row being written
        return -1
    return max(steps, default=-1)


class Deadline(BaseException):
    """Raised inside the code under test when it runs past a :func:`deadline` (a
    BaseException, so that the code's own ``except Exception`` does not swallow it)."""


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail (raise :class:`Deadline` in this thread) if the block runs longer than ``seconds``.

    A ``SIGALRM`` handler raises, which also interrupts a blocking ``open()`` of a FIFO or an
    endless read, so a hang of the code under test becomes a test failure, in-process.
    """

    def expired(signum, frame):
        raise Deadline(f"still running after {seconds}s (a hang)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
