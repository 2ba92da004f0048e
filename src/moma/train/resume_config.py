"""A resumed run must be the run that was started: its config is compared with the one the
checkpoint records (``checkpoint["moma"]["config"]``, the resolved run config).

A change (another mask ratio, batch size, lr, teacher weight ...) would silently mix two
configurations in one run, and a changed batch size breaks the exact-resume data position,
so it is refused in one line naming the changed options, unless the user passes
``--trainer.allow_config_change true``; then the change is logged and the config that
trained the earlier steps is kept in ``OUT/config_history/`` before ``config.yaml`` is
replaced. Options that only say how long the run goes on or how it reports and runs are on
:data:`RESUME_MAY_CHANGE`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from moma.errors import CheckpointError
from moma.run_folder import RunFolder

log = logging.getLogger(__name__)

#: Options a resumed run may change freely (``[*]`` stands for any list index, a final ``.*``
#: for a whole section). Everything else needs ``--trainer.allow_config_change true``. Extend
#: this one constant when an option only changes run length, reporting, resources or file
#: locations.
RESUME_MAY_CHANGE: frozenset[str] = frozenset(
    {
        "trainer.max_steps",  # extend (or shorten) a run
        "trainer.max_epochs",
        "trainer.progress_bar",  # reporting
        "trainer.log_every_n_steps",
        "trainer.ckpt_every_n_steps",
        "trainer.resume",  # how this attempt was started
        "trainer.allow_config_change",
        "trainer.out_dir",  # the same folder spelled otherwise, or a checkpoint moved
        "trainer.attention",  # fused or plain softmax attention: the same maths
        "data.num_workers",  # loader processes of the streaming path
        "teachers[*].path",  # a moved teacher file (its sha256 is still compared)
        "cache.dir",  # where the teacher-target stores live (a moved store is rebuilt or reused)
        "cache.batch_size",  # the teachers' batch while building: speed only
        "trainer.threads",  # CPU threads: speed only
        "trainer.compile",  # compiled blocks compute what eager ones do
    }
)
_SHOW = 4  # changes named in the message before "(+N more)"


@dataclass
class Change:
    """One option whose value differs between the checkpoint's config and the new one."""

    key: str  # dotted option name, list items as ``[i]``
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key} {_short(self.old)} -> {_short(self.new)}"


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optim.base_lr": 0.001, "teachers[0].path": "t.pth", ...}``: one entry per option;
    a list of mappings (teachers) is entered item by item, any other list is one value."""
    if isinstance(config, dict):
        out: dict[str, Any] = {}
        for k, v in config.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(config, list | tuple) and config and all(isinstance(v, dict) for v in config):
        out = {f"{prefix}.len": len(config)}
        for i, v in enumerate(config):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: list(config) if isinstance(config, tuple) else config}


def may_change(key: str) -> bool:
    """Whether ``key`` is on :data:`RESUME_MAY_CHANGE` (itself or a section of it)."""
    key = re.sub(r"\[\d+\]", "[*]", key)
    parts = key.split(".")
    sections = {".".join(parts[:i]) + ".*" for i in range(1, len(parts))}
    return key in RESUME_MAY_CHANGE or bool(sections & RESUME_MAY_CHANGE)


def config_changes(old: dict, new: dict) -> list[Change]:
    """The options whose values differ. An option the old config does not record (added by a
    later moma) or the new one lacks (removed) is not a change: nothing says it differed."""
    before, after = flatten(old), flatten(new)
    return [
        Change(k, before[k], after[k])
        for k in after
        if k in before and before[k] != after[k] and not _same_number(before[k], after[k])
    ]


def _same_number(a: Any, b: Any) -> bool:
    """1 and 1.0 are the same value (YAML and the command line may type them apart)."""
    numbers = (int, float)
    return (
        isinstance(a, numbers)
        and isinstance(b, numbers)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and float(a) == float(b)
    )


def check_resume_config(
    ckpt_path: Path, old: dict | None, new: dict | None, allow: bool
) -> list[Change]:
    """The changes between the checkpoint's config ``old`` and this run's ``new``.

    Raises:
        CheckpointError: an option outside :data:`RESUME_MAY_CHANGE` changed and ``allow``
            is false (one line, naming the first changes and the way out).
    """
    if not isinstance(old, dict) or not isinstance(new, dict):
        return []  # a checkpoint (or a Python-API run) without a recorded config
    changes = config_changes(old, new)
    refused = [c for c in changes if not may_change(c.key)]
    if refused and not allow:
        shown = ", ".join(map(str, refused[:_SHOW]))
        more = f" (+{len(refused) - _SHOW} more)" if len(refused) > _SHOW else ""
        raise CheckpointError(
            f"{ckpt_path} was trained with other options: {shown}{more}; resume with the "
            "options it was started with, start a new run (another --trainer.out_dir, or "
            "--trainer.resume never), or pass --trainer.allow_config_change true to go on "
            "with the new ones (the old config is kept in config_history/)"
        )
    if refused:
        log.warning(
            "resuming %s with changed options (--trainer.allow_config_change): %s",
            ckpt_path,
            ", ".join(map(str, refused)),
        )
    return changes


def history_path(out_dir: Path, step: int) -> Path:
    """Where the config that trained steps up to ``step`` is kept when it is replaced."""
    folder = RunFolder(out_dir).config_history
    path = folder / f"config_until_step_{step}.yaml"
    n = 1
    while path.exists():  # the same step replaced twice: keep both
        n += 1
        path = folder / f"config_until_step_{step}_{n}.yaml"
    return path


def history_text(old: dict, changes: list[Change], step: int) -> str:
    """The YAML kept in ``config_history/``: the old config, the changes as a comment."""
    lines = [f"# the config of this run up to step {step}; then changed:"]
    lines += [f"#   {c}" for c in changes]
    return "\n".join(lines) + "\n" + yaml.safe_dump(old, sort_keys=False)
