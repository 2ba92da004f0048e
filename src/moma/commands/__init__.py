"""The command layer: every ``moma`` command as a run config and a ``run_*`` function.

The top floor below the CLI (docs/ARCHITECTURE.md, "Layers"): a command validates and seeds
its config once (:func:`moma.validation.prepare_run`), builds what the lower floors define
(data, models, the methods' LightningModules), runs them (:mod:`moma.train`, :mod:`moma.eval`,
:mod:`moma.report`) and records the run. The CLI (:mod:`moma.cli.main`) and the one-call API
(:mod:`moma.api`) call these functions; nothing below imports them.

Submodules are imported on first use, so ``moma --help`` stays cheap.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "MAERunConfig": "moma.commands.pretrain",
    "MoCoV3RunConfig": "moma.commands.pretrain",
    "run_mae": "moma.commands.pretrain",
    "run_mocov3": "moma.commands.pretrain",
    "MomaRunConfig": "moma.commands.distill",
    "StudentConfig": "moma.commands.distill",
    "TeacherConfig": "moma.commands.distill",
    "build_moma": "moma.commands.distill",
    "build_target_cache": "moma.commands.distill",
    "run_moma": "moma.commands.distill",
    "EvalRunConfig": "moma.commands.evaluate",
    "KnnRunConfig": "moma.commands.evaluate",
    "LinearRunConfig": "moma.commands.evaluate",
    "FinetuneRunConfig": "moma.commands.evaluate",
    "run_knn": "moma.commands.evaluate",
    "run_linear": "moma.commands.evaluate",
    "run_finetune": "moma.commands.evaluate",
    "EmbedConfig": "moma.commands.embed",
    "run_embed": "moma.commands.embed",
    "ExportConfig": "moma.commands.export",
    "run_export": "moma.commands.export",
    "ReportConfig": "moma.commands.report",
    "run_report": "moma.commands.report",
    "QuickstartConfig": "moma.commands.quickstart",
    "run_quickstart": "moma.commands.quickstart",
    "BenchConfig": "moma.commands.bench",
    "run_bench": "moma.commands.bench",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'moma.commands' has no attribute {name!r}")
