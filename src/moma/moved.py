"""Old import paths: names that moved to another module still import from where they were.

Each module that gave names away serves them with a module ``__getattr__`` made by
:func:`forwarder`; the first use of each old path warns once (``DeprecationWarning``) and
names the new one. The table below is the only place that knows both paths; nothing in moma
itself imports through it (``tests/test_import_direction.py`` checks both).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any

#: old module -> {name: the module that holds it now}
MOVED: dict[str, dict[str, str]] = {}

_warned: set[tuple[str, str]] = set()


def _add(old: str, new: str, *names: str) -> None:
    MOVED.setdefault(old, {}).update(dict.fromkeys(names, new))


# The run folder's owner (paths, atomic writes, metrics, the folder lock) and the content digest
# live at ground level, below every layer that writes or reads a run.
_add("moma.train.atomic", "moma.run_folder.atomic", "atomic_write", "stale_temp_files",
     "remove_stale_temp_files")  # fmt: skip
_add("moma.train.atomic", "moma.train.checkpoint_io", "AtomicCheckpointIO")
_add("moma.train.metrics", "moma.run_folder.metrics", "read_metrics")
_add("moma.train.run_folder", "moma.run_folder.layout", "RUN_OUTPUTS", "set_aside_previous_run")
_add("moma.train.lock", "moma.run_folder.lock", "RunLock", "LOCK_NAME")
_add("moma.models.integrity", "moma.integrity", "DIGEST_KEY", "content_digest", "with_digest",
     "verify_digest")  # fmt: skip

# The checkpoint loader re-exported its pieces' constants with ``X as X``; they are read from
# the modules that own them now (moma.models.checkpoint keeps its public API, ``__all__``).
_add("moma.models.checkpoint", "moma.models.checkpoint_arch", "BASE_ARCH", "MOCOV3_HEADS",
     "TIMM_HEADS", "mlp_ratio_for")  # fmt: skip
_add("moma.models.checkpoint", "moma.models.checkpoint_formats", "FORMAT_VERSION",
     "METHOD_PREFIXES", "MOMA_EXPORT_FORMAT")  # fmt: skip
_add("moma.models.checkpoint", "moma.models.checkpoint_keys", "HEAD_PREFIXES")


def forwarder(module: str) -> Callable[[str], Any]:
    """The ``__getattr__`` of ``module``: its moved names, from their new home (warning once)."""
    table = MOVED.get(module, {})

    def __getattr__(name: str) -> Any:
        new = table.get(name)
        if new is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        if (module, name) not in _warned:
            _warned.add((module, name))
            warnings.warn(
                f"{module}.{name} moved to {new}.{name}; import it from there",
                DeprecationWarning,
                stacklevel=2,
            )
        return getattr(importlib.import_module(new), name)

    return __getattr__
