"""Read weights files without ever running code stored in them.

``.safetensors`` files are read with safetensors; everything else with
``torch.load(..., weights_only=True)``. Besides tensors and plain containers, the only objects
allowed are moma's own configuration dataclasses (a Lightning checkpoint's ``hyper_parameters``
may hold them; rebuilding one only sets its attributes). A file that needs any other object is
refused unless the caller passes ``trust_pickle=True``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import logging
import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moma.errors import CheckpointError
from moma.integrity import verify_digest
from moma.paths import regular_file

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_SHOW = 5  # keys listed in an error message before "(+N more)"


def one_line(err: BaseException | str, limit: int = 200) -> str:
    """An exception (or text) as one short line for a CheckpointError message."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def list_keys(keys: Iterable[str]) -> str:
    """The first few keys, then ``(+N more)``."""
    keys = list(keys)
    shown = ", ".join(keys[:_SHOW])
    return shown + (f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def weights_file(path: str | Path) -> Path:
    """``path`` if it is a regular file; ``CheckpointError`` otherwise (missing, a folder, a
    FIFO, a device), *before* anything opens it: reading ``/dev/zero`` or a FIFO never ends."""
    return regular_file(path, CheckpointError, "checkpoint file")


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a regular file, read in 1 MiB chunks (never the whole file in memory)."""
    path = weights_file(path)
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from None
    return h.hexdigest()


def is_safetensors(path: Path) -> bool:
    """By extension, or by the header: 8-byte little-endian length, then a JSON object."""
    if path.suffix == ".safetensors":
        return True
    try:
        with path.open("rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored in a safetensors header (``{}`` if none or unreadable)."""
    try:
        with Path(path).open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= 100_000_000:
                return {}
            header = json.loads(f.read(n))
    except (OSError, ValueError):
        return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def verify_export_sidecar(path: str | Path) -> None:
    """Refuse a moma export whose bytes differ from the sha256 its ``.json`` sidecar records.

    safetensors checks a file's header, not its tensor bytes; the sidecar written by
    :func:`moma.models.export.export_backbone` holds the file's sha256. No sidecar: no check.
    """
    path = Path(path)
    side = path.with_suffix(".json")
    try:
        meta = json.loads(regular_file(side, CheckpointError, "sidecar").read_text())
    except (CheckpointError, OSError, ValueError):
        return
    if not isinstance(meta, dict) or meta.get("format") != "moma-backbone":
        return
    want = meta.get("sha256")
    if isinstance(want, str) and sha256_file(path) != want:
        raise CheckpointError(
            f"{path}: corrupt export: its sha256 differs from the one recorded in {side} "
            "(damaged, or replaced without its .json); export it again"
        )


def _unsafe_global(err: BaseException) -> str | None:
    """The global a weights-only unpickler refused (None when the error is something else)."""
    m = re.search(r"GLOBAL ([\w.]+)", str(err))
    return m.group(1) if m else None


def _moma_dataclass(name: str) -> type | None:
    """``moma.x.y.Cls`` if it names one of moma's own dataclasses, else None."""
    module, _, attr = name.rpartition(".")
    if not (module == "moma" or module.startswith("moma.")):
        return None
    if any(part.startswith("_") for part in name.split(".")):  # moma.__main__ would run the CLI
        return None
    try:
        obj = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None
    if isinstance(obj, type) and dataclasses.is_dataclass(obj) and "__setstate__" not in vars(obj):
        return obj
    return None


def _corrupt(path: Path, err: BaseException | str) -> CheckpointError:
    return CheckpointError(
        f"{path}: not a valid checkpoint (truncated or corrupt?): {one_line(err)}"
    )


def _weights_only_load(path: Path, allowed: list[type]) -> tuple[Any, str | None]:
    """torch.load(weights_only=True) with ``allowed`` (+ moma dataclasses found on the way).

    Returns ``(obj, None)``, or ``(None, global)`` for the first global that is not allowed.
    """
    allowed = list(allowed)
    for _ in range(64):
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True), None
        except pickle.UnpicklingError as e:
            needed = _unsafe_global(e)
            if needed is None:
                raise _corrupt(path, e) from None
            cls = _moma_dataclass(needed)
            if cls is None or cls in allowed:
                return None, needed
            allowed.append(cls)
        except Exception as e:
            raise _corrupt(path, e) from None
    raise _corrupt(path, "too many distinct globals")


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict:
    """Read a weights file safely: safetensors, or ``torch.load(weights_only=True)``.

    Returns the top-level dict (a flat ``{name: tensor}`` for safetensors). Raises
    :class:`CheckpointError` for a missing, truncated or corrupt file, a file that is not a dict,
    and a file that needs arbitrary unpickling unless ``trust_pickle=True``. Only for files you
    trust: ``trust_pickle=True`` first also allows ``argparse.Namespace`` (what MAE and MoCo v3
    training checkpoints hold), and only if more is needed loads with ``weights_only=False``,
    which can execute code stored in the file (a warning is logged).
    """
    path = weights_file(path)
    if is_safetensors(path):
        import safetensors.torch

        try:
            sd = dict(safetensors.torch.load_file(str(path), device="cpu"))
        except Exception as e:
            raise _corrupt(path, e) from None
        verify_export_sidecar(path)
        return sd

    obj, needed = _weights_only_load(path, [])
    if needed is not None and not trust_pickle:
        why = " (an argparse.Namespace, as in MAE/MoCo v3 training checkpoints)"
        raise CheckpointError(
            f"{path}: refused to load: the file needs arbitrary unpickling of {needed}"
            f"{why if needed == 'argparse.Namespace' else ''}, which could run code stored in the "
            "file; only if you trust this file, pass trust_pickle=True"
        )
    if needed is not None:
        obj, needed = _weights_only_load(path, [argparse.Namespace])
    if needed is not None:
        log.warning(
            "%s: trust_pickle=True: unpickling with weights_only=False (the file needs %s); "
            "this can run code stored in the file",
            path,
            needed,
        )
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise _corrupt(path, e) from None
    verify_digest(obj, path)  # moma training checkpoints carry one: bit flips are refused
    if isinstance(obj, nn.Module):  # only reachable with trust_pickle=True
        log.info("%s: holds a pickled %s; using its state_dict()", path, type(obj).__name__)
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a dict of weights")
    return dict(obj)
