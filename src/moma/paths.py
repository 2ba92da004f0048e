"""Paths a user gives: ``~`` and ``$VARS`` expanded one way, files and folders checked.

Every path option of a run (output folders, datasets, teachers, checkpoints, export and
report paths) goes through :func:`user_path` once, in ``moma.validation.prepare_run``, so the
checkpoint, the logs and the export of a run all land in the same expanded folder, and the
recorded config says where that is. Shell syntax other than ``~`` and ``$NAME`` /
``${NAME}`` stays literal: no path is ever given to a shell.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from moma.errors import ConfigError, MomaError

_VAR = re.compile(r"\$(\w+|\{[^}]*\})")


def user_path(value: str, option: str) -> str:
    """``value`` with ``~`` / ``~user`` and ``$NAME`` / ``${NAME}`` expanded.

    Raises:
        ConfigError: naming ``option``, for an empty path or a variable that is not set
            (which would otherwise become a literal ``$NAME`` folder).
    """
    text = str(value)
    if not text.strip():
        raise ConfigError(f"{option} is empty: give a path")
    expanded = os.path.expandvars(os.path.expanduser(text))
    missing = _VAR.search(expanded)
    if missing:
        name = missing.group(1).strip("{}")
        raise ConfigError(f"{option} {text!r}: environment variable {name} is not set")
    return expanded


def regular_file(path: str | Path, error: type[MomaError], what: str = "file") -> Path:
    """``path`` if it is a regular file (after links); else ``error`` naming it.

    Checked with ``stat`` *before* anything opens the path: opening a FIFO blocks until a
    writer appears and ``/dev/zero`` never ends, so a device, a FIFO or a socket given as a
    weights, config or result file would hang the run instead of failing.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path}: is a directory, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: not a regular file ({_kind(st.st_mode)}), refused as a {what}")
    return path


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a file"


def output_folder(path: str | Path, option: str) -> Path:
    """``path`` as a folder to write into: absent (it will be created) or a folder.

    Raises:
        ConfigError: naming ``option`` when something else (a file) is in the way.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} exists and is not a folder")
    for parent in path.parents:  # `a/file/run`: a file where a folder is needed
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{option} {path}: {parent} is not a folder")
            break
    return path
