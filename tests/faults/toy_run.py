"""Child process of the fault tests: ``moma.train.fit`` on the toy method of ``tests/toy.py``.

Usage: ``python toy_run.py '<json options>'`` with ``out_dir``, ``max_steps``, ``ckpt_every``,
``sleep`` (seconds per step) and, to freeze a checkpoint write half-way so that the test can
kill the process *during* it, ``hang_save`` (the n-th checkpoint write, 1-based) and
``hang_marker`` (a file created once half of that checkpoint is on disk). The hang is built
here, by wrapping ``torch.save`` in this process only: production code has no test hook.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the toy module

import torch  # noqa: E402
from toy import ToyData, ToyMethod  # noqa: E402

from moma.train import TrainerConfig, fit  # noqa: E402


def hang_on_save(n: int, marker: Path) -> None:
    """Make the ``n``-th ``torch.save`` write half its bytes, create ``marker``, then hang."""
    real_save = torch.save
    calls = 0

    def save(obj, f, *args, **kwargs):
        nonlocal calls
        calls += 1
        if calls != n or not hasattr(f, "fileno"):
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        marker.write_text(str(obj.get("global_step")))
        time.sleep(600)  # the test kills the process here
        f.write(data[len(data) // 2 :])

    torch.save = save


def main() -> None:
    opts = json.loads(sys.argv[1])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    if opts.get("hang_save"):
        hang_on_save(int(opts["hang_save"]), Path(opts["hang_marker"]))
    cfg = TrainerConfig(
        out_dir=opts["out_dir"],
        max_steps=int(opts.get("max_steps", 40)),
        ckpt_every_n_steps=int(opts.get("ckpt_every", 2)),
        precision="32-true",
        accelerator="cpu",
        progress_bar=False,
        log_every_n_steps=1,
    )
    fit(ToyMethod(sleep=float(opts.get("sleep", 0.0))), ToyData(), cfg)


if __name__ == "__main__":
    main()
