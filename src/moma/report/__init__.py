"""Reports: Markdown tables and matplotlib figures from result JSONs and CSV logs.

Submodules are imported lazily (``format_table`` needs neither torch nor matplotlib).
"""

from importlib import import_module
from typing import Any

from moma.moved import forwarder

_EXPORTS = {
    "build_report": "moma.report.build",
    "format_table": "moma.report.table",
    "load_results": "moma.report.gather",
    "find_loss_curves": "moma.report.gather",
    "plot_accuracy": "moma.report.plots",
    "plot_losses": "moma.report.plots",
    "attention_maps": "moma.report.attention",
    "cls_attention": "moma.report.attention",
}
__all__ = sorted(_EXPORTS)


_moved = forwarder(__name__)  # moma report's config and run moved to moma.commands.report


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    return _moved(name)
