"""moma: self-supervised distillation from self-supervised teachers (MOMA, arXiv 2302.02089)."""

from moma.models.checkpoint import load_backbone
from moma.models.vit import BackboneConfig, create_vit

__version__ = "0.1.0"
__all__ = ["BackboneConfig", "create_vit", "load_backbone", "__version__"]
