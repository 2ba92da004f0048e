"""moma: self-supervised distillation from self-supervised teachers (MOMA, arXiv 2302.02089)."""

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "BackboneConfig",
    "create_vit",
    "distill",
    "embed",
    "export_backbone",
    "load_backbone",
    "pretrain",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # Lazy: `import moma` stays cheap (the CLI's --help should not import torch twice over).
    if name in ("BackboneConfig", "create_vit"):
        from moma.models import vit  # lazy: `import moma` must not import torch

        return getattr(vit, name)
    if name == "load_backbone":
        from moma.models.checkpoint import load_backbone  # lazy: as above

        return load_backbone
    if name in ("distill", "embed", "pretrain"):
        from moma import api  # lazy: as above

        return getattr(api, name)
    if name == "export_backbone":
        from moma.models.export import export_backbone  # lazy: as above

        return export_backbone
    raise AttributeError(f"module 'moma' has no attribute {name!r}")
