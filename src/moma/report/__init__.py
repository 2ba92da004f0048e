"""Reports: Markdown tables and matplotlib figures from result JSONs and CSV logs.

Submodules are imported lazily (``format_table`` needs neither torch nor matplotlib).
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "build_report": "moma.report.build",
    "ReportConfig": "moma.report.run",
    "run_report": "moma.report.run",
    "format_table": "moma.report.table",
    "load_results": "moma.report.gather",
    "find_loss_curves": "moma.report.gather",
    "plot_accuracy": "moma.report.plots",
    "plot_losses": "moma.report.plots",
    "attention_maps": "moma.report.attention",
    "cls_attention": "moma.report.attention",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'moma.report' has no attribute {name!r}")
