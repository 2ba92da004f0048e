"""Evaluation of frozen or fine-tuned backbones: kNN, linear probe, fine-tuning, baselines.

Submodules are imported lazily, so ``from moma.eval import KnnConfig`` stays cheap.
"""

from importlib import import_module
from typing import Any

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
    "EvalRunConfig": "moma.eval.run",
    "KnnRunConfig": "moma.eval.run",
    "LinearRunConfig": "moma.eval.run",
    "FinetuneRunConfig": "moma.eval.run",
    "run_knn": "moma.eval.run",
    "run_linear": "moma.eval.run",
    "run_finetune": "moma.eval.run",
    "PROTOCOLS": "moma.eval.run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'moma.eval' has no attribute {name!r}")
