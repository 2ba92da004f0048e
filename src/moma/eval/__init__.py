"""Evaluation of frozen or fine-tuned backbones: kNN, linear probe, fine-tuning, baselines.

Submodules are imported lazily, so ``from moma.eval import KnnConfig`` stays cheap.
"""

from importlib import import_module
from typing import Any

from moma.moved import forwarder

_EXPORTS = {
    "KnnConfig": "moma.eval.config",
    "LinearConfig": "moma.eval.config",
    "FinetuneConfig": "moma.eval.config",
    "extract_features": "moma.eval.features",
    "RawPixels": "moma.eval.baselines",
    "random_init_backbone": "moma.eval.baselines",
    "resolve_backbone": "moma.eval.baselines",
    "knn_classify": "moma.eval.knn",
    "knn_accuracy": "moma.eval.knn",
    "knn_eval": "moma.eval.knn",
    "train_linear_probe": "moma.eval.linear",
    "linear_eval": "moma.eval.linear",
    "finetune_eval": "moma.eval.finetune",
    "layer_decay_param_groups": "moma.eval.finetune",
    "write_result": "moma.eval.results",
    "run_eval": "moma.eval.run",
    "PROTOCOLS": "moma.eval.run",
}
__all__ = sorted(_EXPORTS)


_moved = forwarder(__name__)  # the moma eval run configs moved to moma.commands.evaluate


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    return _moved(name)
