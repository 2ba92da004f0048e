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

# The command layer (moma.commands) holds every run config and run_* function; methods/, eval/,
# report/, bench/ and cli/ keep the pieces those runs are made of.
_add("moma.methods.mae", "moma.commands.pretrain", "MAERunConfig", "run_mae",
     "RECONSTRUCTIONS_FILE", "NUM_FIGURE_IMAGES")  # fmt: skip
_add("moma.methods.mocov3", "moma.commands.pretrain", "MoCoV3RunConfig", "run_mocov3")
_DISTILL = ("MomaRunConfig", "StudentConfig", "TeacherConfig")
_add("moma.methods.moma_config", "moma.commands.distill", *_DISTILL)
_add("moma.methods.moma_teachers", "moma.commands.distill", "build_teachers", "teacher_names")
_add("moma.methods.moma_cache", "moma.commands.distill", "AUTO_VIEWS", "resolve_views",
     "build_target_cache")  # fmt: skip
_add("moma.methods.moma", "moma.commands.distill", *_DISTILL, "build_teachers", "teacher_names",
     "build_student", "build_moma", "run_moma")  # fmt: skip
_add("moma.methods.moma", "moma.methods.moma_config", "GRID_MISMATCH", "TARGETS", "CacheConfig")
_add("moma.methods.moma", "moma.methods.moma_teachers", "resample_patch_tokens", "weights_sha256")
_add("moma.eval.run", "moma.commands.evaluate", "EvalRunConfig", "KnnRunConfig",
     "LinearRunConfig", "FinetuneRunConfig", "run_knn", "run_linear", "run_finetune",
     "default_name", "default_out_dir")  # fmt: skip
_add("moma.eval", "moma.commands.evaluate", "EvalRunConfig", "KnnRunConfig", "LinearRunConfig",
     "FinetuneRunConfig", "run_knn", "run_linear", "run_finetune")  # fmt: skip
_add("moma.eval.embed", "moma.commands.embed", "run_embed")
_add("moma.cli.export", "moma.commands.export", "ExportConfig", "run_export")
_add("moma.report.run", "moma.commands.report", "ReportConfig", "run_report")
_add("moma.report", "moma.commands.report", "ReportConfig", "run_report")
_add("moma.quickstart", "moma.commands.quickstart", "BUDGETS", "Budget", "MECHANISMS",
     "QuickstartConfig", "StageLog", "run_quickstart", "run_evals", "training_stages",
     "verdict_lines", "write_report")  # fmt: skip
_add("moma.bench.run", "moma.commands.bench", "run_bench")
_add("moma.bench", "moma.commands.bench", "run_bench")
_add("moma.cli.main", "moma.commands.record", "config_to_dict")


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
