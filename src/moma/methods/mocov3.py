"""MoCo v3 pre-training (Chen, Xie, He, "An Empirical Study of Training Self-Supervised ViTs").

Two augmented views go through the base encoder (a timm ViT, CLS token), a projector (3-layer
MLP with BatchNorm, the last BN without affine) and a predictor (2-layer MLP). A momentum
copy of encoder + projector, updated by an exponential moving average whose coefficient
follows a cosine schedule from ``momentum`` to 1, gives the keys. The loss
(:class:`~moma.methods.mocov3_loss.MoCoV3Loss`) is the symmetric InfoNCE with temperature
0.2 scaled by 2T, against the keys of every process.

Faithful to the official ViT recipe: fixed 2-D sin-cos position table (MoCo v3 layout),
Q/K/V initialised as three separate matrices, optional frozen random patch embedding,
SyncBatchNorm in the MLP heads under multi-GPU DDP, AdamW (0.9, 0.999) with base lr 1.5e-4,
weight decay 0.1, warm-up 40 of 300 epochs. Unlike the official code, weight decay skips
norms, biases and tokens (the shared optimiser's rule), and the predictor's last Linear has a
bias (``moma.models.heads.build_mlp``).

SyncBatchNorm has no CPU kernel: with CPU processes (gloo) each process normalises its own
batch, like MoCo v3 with plain BatchNorm.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import asdict, dataclass

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from moma.errors import ConfigError
from moma.methods.base import SSLMethod
from moma.methods.mae import check_same_backbone
from moma.methods.mocov3_loss import MoCoV3Loss
from moma.methods.optim import OptimConfig
from moma.models.heads import build_mlp
from moma.models.pos_embed import init_vit_sincos_pos_embed
from moma.models.vit import BackboneConfig
from moma.moved import forwarder

log = logging.getLogger(__name__)
__getattr__ = forwarder(__name__)  # the run config and run_mocov3 moved to moma.commands


@dataclass
class MoCoV3Config:
    """MoCo v3's own options (the backbone is a :class:`~moma.models.vit.BackboneConfig`).

    Attributes:
        temperature: InfoNCE temperature T (paper: 0.2); the loss is scaled by 2T.
        momentum: initial EMA coefficient m0 of the momentum encoder (paper, ViT: 0.99); it
            rises to 1 by ``m = 1 - (1 - m0) * (cos(pi * step / total) + 1) / 2``, per step.
        proj_hidden_dim: projector (3 layers) hidden width (paper: 4096; sized down).
        proj_dim: projector / predictor output width (paper: 256).
        pred_hidden_dim: predictor (2 layers) hidden width (paper: 4096; sized down).
        freeze_patch_embed: keep the random patch embedding fixed (the paper's trick for
            training stability).
        sincos_pos_embed: a fresh encoder gets a fixed 2-D sin-cos position table, as in
            MoCo v3; ``False`` keeps timm's learned, randomly initialised table.
        sync_batchnorm: use SyncBatchNorm in the MLP heads when training on several GPUs.
    """

    temperature: float = 0.2
    momentum: float = 0.99
    proj_hidden_dim: int = 1024
    proj_dim: int = 256
    pred_hidden_dim: int = 1024
    freeze_patch_embed: bool = False
    sincos_pos_embed: bool = True
    sync_batchnorm: bool = True

    def check(self) -> None:
        """Refuse values that cannot work, naming the option (raises `ConfigError`)."""
        if self.temperature <= 0:
            raise ConfigError(f"mocov3.temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ConfigError(f"mocov3.momentum must be in [0, 1], got {self.momentum}")
        for key in ("proj_hidden_dim", "proj_dim", "pred_hidden_dim"):
            if getattr(self, key) < 1:
                raise ConfigError(f"mocov3.{key} must be >= 1, got {getattr(self, key)}")


def mocov3_optim() -> OptimConfig:
    """MoCo v3's ViT optimiser: AdamW (0.9, 0.999), base lr 1.5e-4, wd 0.1, warm-up 40/300."""
    return OptimConfig(
        base_lr=1.5e-4, weight_decay=0.1, betas=(0.9, 0.999), warmup_fraction=40 / 300
    )


def cosine_momentum(step: int, total_steps: int, m0: float) -> float:
    """EMA coefficient after ``step`` of ``total_steps``: m0 at 0, rising to 1 at the end."""
    progress = min(1.0, step / max(1, total_steps))
    return 1.0 - (1.0 - m0) * (math.cos(math.pi * progress) + 1.0) / 2.0


class MoCoV3Method(SSLMethod):
    """MoCo v3 with a timm ViT base encoder.

    Args:
        cfg: MoCo v3 options.
        backbone: the encoder's architecture; ignored for building when ``encoder`` is given
            (but still recorded in checkpoints and exports).
        optim: optimiser options (default: :func:`mocov3_optim`).
        encoder: an existing (e.g. pre-trained) timm ViT to continue from; kept as it is.
    """

    name = "mocov3"
    backbone_prefix = "base_encoder."

    def __init__(
        self,
        cfg: MoCoV3Config | None = None,
        backbone: BackboneConfig | None = None,
        optim: OptimConfig | None = None,
        encoder: VisionTransformer | None = None,
    ) -> None:
        cfg = cfg or MoCoV3Config()
        backbone = backbone or BackboneConfig()
        cfg.check()
        super().__init__(optim or mocov3_optim(), asdict(backbone))
        self.cfg = cfg
        self.base_encoder = backbone.build() if encoder is None else encoder
        if encoder is None:
            self.initialize_weights()
        if cfg.freeze_patch_embed:
            self.base_encoder.patch_embed.requires_grad_(False)
        self.projector, self.predictor = self._build_projector_and_predictor_mlps(
            self.base_encoder.embed_dim
        )
        # The momentum branch starts as an exact copy and never receives gradients.
        self.momentum_encoder = copy.deepcopy(self.base_encoder).requires_grad_(False)
        self.momentum_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.loss_fn = MoCoV3Loss(cfg.temperature)
        self.current_momentum = float(cfg.momentum)
        self._total_steps: int | None = None

    def _build_projector_and_predictor_mlps(self, dim: int) -> tuple[nn.Module, nn.Module]:
        """Projector: 3 layers, BN, last BN without affine. Predictor: 2 layers, no last BN."""
        c = self.cfg
        projector = build_mlp(3, dim, c.proj_hidden_dim, c.proj_dim, norm="bn", last_norm=True)
        predictor = build_mlp(2, c.proj_dim, c.pred_hidden_dim, c.proj_dim, norm="bn",
                              last_norm=False)  # fmt: skip
        return projector, predictor

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """MoCo v3's ViT initialisation (for a freshly built encoder only)."""
        enc = self.base_encoder
        if self.cfg.sincos_pos_embed:
            init_vit_sincos_pos_embed(enc, layout="mocov3")
        for name, m in enc.named_modules():
            if isinstance(m, nn.Linear):
                if name.endswith("qkv"):  # Q, K and V as three separate xavier matrices
                    bound = math.sqrt(6.0 / (m.weight.shape[0] // 3 + m.weight.shape[1]))
                    nn.init.uniform_(m.weight, -bound, bound)
                else:
                    nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if enc.cls_token is not None:
            nn.init.normal_(enc.cls_token, std=1e-6)
        w = enc.patch_embed.proj.weight  # a conv: xavier over (out, in * p * p)
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if enc.patch_embed.proj.bias is not None:
            nn.init.zeros_(enc.patch_embed.proj.bias)

    # --- momentum ------------------------------------------------------------------------
    def _momentum_pairs(self) -> tuple[list[Tensor], list[Tensor]]:
        base = [*self.base_encoder.parameters(), *self.projector.parameters()]
        mom = [*self.momentum_encoder.parameters(), *self.momentum_projector.parameters()]
        return base, mom

    @torch.no_grad()
    def momentum_update(self, m: float) -> None:
        """``momentum_params = m * momentum_params + (1 - m) * base_params``."""
        base, mom = self._momentum_pairs()
        base = [b.detach().to(p.dtype) for b, p in zip(base, mom)]
        torch._foreach_mul_(mom, m)
        torch._foreach_add_(mom, base, alpha=1.0 - m)

    def momentum_at(self, step: int, total_steps: int) -> float:
        """The EMA coefficient after ``step`` optimiser steps (cosine from m0 to 1)."""
        return cosine_momentum(step, total_steps, self.cfg.momentum)

    # --- forward -------------------------------------------------------------------------
    def encode(self, encoder: nn.Module, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        """Both views through ``encoder``: CLS features ``[N, D]`` each.

        The ViT has no BatchNorm, so one pass over both views equals two passes. On a GPU one
        ``[2N]`` pass halves the kernel launches of these launch-bound models; on the CPU two
        ``[N]`` passes are faster (their activations stay nearer the caches: the element-wise
        ops ran about 5% of the step slower at ``[2N]``, BENCHMARKS.md, "MoCo v3 step").
        """
        if x1.device.type == "cuda":
            feats = encoder(torch.cat([x1, x2], dim=0))  # [2N, D]
            return feats[: x1.shape[0]], feats[x1.shape[0] :]
        return encoder(x1), encoder(x2)

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        """Two views ``[N, C, H, W]`` each -> the symmetric contrastive loss (a scalar)."""
        f1, f2 = self.encode(self.base_encoder, x1, x2)  # [N, D] each (CLS after final norm)
        # The MLP heads have BatchNorm: one call per view, as in MoCo v3.
        q1 = self.predictor(self.projector(f1))  # [N, C]
        q2 = self.predictor(self.projector(f2))  # [N, C]
        with torch.no_grad():
            m1, m2 = self.encode(self.momentum_encoder, x1, x2)  # [N, D] each
            k1 = self.momentum_projector(m1)  # [N, C]
            k2 = self.momentum_projector(m2)  # [N, C]
        return self.loss_fn(q1, q2, k1, k2)

    # --- SSLMethod / Lightning -----------------------------------------------------------
    def shared_step(self, batch) -> dict[str, Tensor]:
        views = batch[0]
        if not isinstance(views, list | tuple) or len(views) != 2:
            raise ConfigError("MoCo v3 needs two views per image: use SSLDataModule(views=2)")
        loss = self(views[0], views[1])
        return {"loss": loss, "momentum": torch.tensor(self.current_momentum)}

    def trainable_modules(self) -> list[nn.Module]:
        return [self.base_encoder, self.projector, self.predictor]

    def export_backbone(self) -> VisionTransformer:
        return self.base_encoder

    def check_resume(self, checkpoint: dict) -> None:
        check_same_backbone(checkpoint, self.backbone_cfg)

    def setup(self, stage: str) -> None:
        trainer = self.trainer
        if (
            self.cfg.sync_batchnorm
            and trainer.world_size > 1
            and trainer.strategy.root_device.type != "cpu"
        ):
            convert = nn.SyncBatchNorm.convert_sync_batchnorm
            self.projector = convert(self.projector)
            self.predictor = convert(self.predictor)
            self.momentum_projector = convert(self.momentum_projector)

    def on_train_start(self) -> None:
        self._total_steps = int(self.trainer.estimated_stepping_batches)
        self.current_momentum = self.momentum_at(self.trainer.global_step, self._total_steps)

    def after_optimizer_step(self, step: int) -> None:
        """EMA update of the momentum branch with m from the cosine schedule at ``step``."""
        total = self._total_steps or int(self.trainer.estimated_stepping_batches)
        self.current_momentum = self.momentum_at(step, total)
        self.momentum_update(self.current_momentum)
