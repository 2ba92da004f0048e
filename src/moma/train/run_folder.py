"""What a run folder holds, and how a run started over keeps the previous one.

``--trainer.resume never`` on a folder that holds a finished or interrupted run starts a new
run there. Replacing files one by one would leave a mix (the new ``config.yaml`` beside the
old checkpoint, which the next auto-resume would continue) if the new run fails early, and it
would lose the old run. So the previous run's outputs are moved, whole, into
``OUT/replaced/<UTC time>/`` before the new run writes anything.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: What moma writes into a run folder (a user's own files there are never moved).
RUN_OUTPUTS = (
    "checkpoints",
    "config.yaml",
    "config_history",
    "logs",
    "tb",
    "backbone.safetensors",
    "backbone.json",
    "reconstructions.png",
    "results",
    "cache",
)


def set_aside_previous_run(out_dir: Path) -> Path | None:
    """Move the previous run's outputs into ``out_dir/replaced/<UTC time>/``; returns that
    folder (None when there was nothing to move)."""
    present = [name for name in RUN_OUTPUTS if os.path.lexists(out_dir / name)]
    if not present:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    dest = out_dir / "replaced" / stamp
    n = 1
    while dest.exists():
        n += 1
        dest = out_dir / "replaced" / f"{stamp}-{n}"
    dest.mkdir(parents=True)
    for name in present:
        os.replace(out_dir / name, dest / name)  # same filesystem: a rename, nothing copied
    log.warning(
        "--trainer.resume never: the previous run in %s was moved to %s (%s)",
        out_dir,
        dest,
        ", ".join(present),
    )
    return dest
