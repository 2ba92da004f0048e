"""MAE pre-training (He et al., "Masked Autoencoders Are Scalable Vision Learners").

The encoder is a timm ViT that sees only the visible patches (``mask_ratio`` of them are
dropped per sample); a light decoder fills the removed positions with a shared mask token,
adds its own fixed 2-D sin-cos position table and predicts the pixels of every patch. The
loss (:class:`~moma.methods.mae_loss.MAELoss`) is the per-patch MSE on removed patches only,
against per-patch normalised pixels by default (``norm_pix_loss``).

Faithful to the official recipe: fixed sin-cos encoder position table, xavier-uniform Linear
layers, tokens drawn from N(0, 0.02), AdamW (0.9, 0.95), lr = base_lr * global batch / 256,
warm-up + cosine per step. Unlike the official code, weight decay skips the CLS, mask and
position tokens as well as norms and biases.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from functools import partial

import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from moma.errors import CheckpointError, ConfigError
from moma.methods.base import SSLMethod
from moma.methods.mae_loss import MAELoss, patchify
from moma.methods.optim import OptimConfig
from moma.models.masking import check_mask_ratio, forward_encoder_masked
from moma.models.pos_embed import init_vit_sincos_pos_embed, sincos_2d
from moma.models.vit import BackboneConfig
from moma.moved import forwarder

log = logging.getLogger(__name__)
__getattr__ = forwarder(__name__)  # the run config and run_mae moved to moma.commands


@dataclass
class MAEConfig:
    """MAE's own options (the backbone is a :class:`~moma.models.vit.BackboneConfig`).

    Attributes:
        mask_ratio: fraction of patches removed per image, in [0, 0.98] (paper: 0.75).
        decoder_embed_dim: decoder width (paper: 512; sized down for small encoders).
        decoder_depth: number of decoder blocks (paper: 8).
        decoder_num_heads: decoder attention heads (paper: 16).
        decoder_mlp_ratio: decoder MLP width / decoder width.
        norm_pix_loss: regress per-patch normalised pixels (paper's best setting).
        sincos_pos_embed: a fresh encoder gets a fixed 2-D sin-cos position table, as in
            MAE; ``False`` keeps timm's learned, randomly initialised table.
    """

    mask_ratio: float = 0.75
    decoder_embed_dim: int = 128
    decoder_depth: int = 2
    decoder_num_heads: int = 4
    decoder_mlp_ratio: float = 4.0
    norm_pix_loss: bool = True
    sincos_pos_embed: bool = True

    def check(self) -> None:
        """Refuse values that cannot work, naming the option (raises `ConfigError`)."""
        try:
            check_mask_ratio(self.mask_ratio)
        except ValueError as e:
            raise ConfigError(f"mae.mask_ratio: {e}") from None
        if self.decoder_embed_dim < 4 or self.decoder_embed_dim % 4:
            raise ConfigError(
                f"mae.decoder_embed_dim must be a positive multiple of 4 (sin-cos table), "
                f"got {self.decoder_embed_dim}"
            )
        if self.decoder_num_heads < 1 or self.decoder_embed_dim % self.decoder_num_heads:
            raise ConfigError(
                f"mae.decoder_embed_dim ({self.decoder_embed_dim}) must be divisible by "
                f"mae.decoder_num_heads ({self.decoder_num_heads})"
            )
        if self.decoder_depth < 1:
            raise ConfigError(f"mae.decoder_depth must be >= 1, got {self.decoder_depth}")


class MAEMethod(SSLMethod):
    """Masked autoencoder: a timm ViT encoder on visible patches and a light decoder.

    Args:
        cfg: MAE options.
        backbone: the encoder's architecture; ignored for building when ``encoder`` is given
            (but still recorded in checkpoints and exports).
        optim: optimiser options.
        encoder: an existing (e.g. pre-trained) timm ViT to continue from; its weights,
            ``pos_embed`` included, are kept as they are.
    """

    name = "mae"
    backbone_prefix = "encoder."

    def __init__(
        self,
        cfg: MAEConfig | None = None,
        backbone: BackboneConfig | None = None,
        optim: OptimConfig | None = None,
        encoder: VisionTransformer | None = None,
    ) -> None:
        cfg = cfg or MAEConfig()
        backbone = backbone or BackboneConfig()
        cfg.check()
        super().__init__(optim or OptimConfig(), asdict(backbone))
        self.cfg = cfg
        fresh = encoder is None
        self.encoder = backbone.build() if fresh else encoder

        enc = self.encoder
        self.patch_size = int(enc.patch_embed.patch_size[0])
        self.in_chans = int(enc.patch_embed.proj.in_channels)
        self.grid = tuple(int(g) for g in enc.patch_embed.grid_size)
        num_prefix = enc.num_prefix_tokens
        dec_dim = cfg.decoder_embed_dim

        # --- decoder ---
        self.decoder_embed = nn.Linear(enc.embed_dim, dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        table = sincos_2d(dec_dim, self.grid, num_prefix, layout="mae")  # [1, P + L, Dd]
        self.decoder_pos_embed = nn.Parameter(table, requires_grad=False)  # fixed
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.decoder_blocks = nn.ModuleList(
            Block(dec_dim, cfg.decoder_num_heads, cfg.decoder_mlp_ratio, qkv_bias=True,
                  norm_layer=norm_layer)
            for _ in range(cfg.decoder_depth)
        )  # fmt: skip
        self.decoder_norm = norm_layer(dec_dim)
        self.decoder_pred = nn.Linear(dec_dim, self.patch_size**2 * self.in_chans)

        self.loss_fn = MAELoss(norm_pix=cfg.norm_pix_loss)
        self.initialize_weights(init_encoder=fresh)

    # --- initialisation ----------------------------------------------------------------
    @torch.no_grad()
    def initialize_weights(self, init_encoder: bool) -> None:
        """MAE's initialisation; the encoder's only when it was freshly built."""
        decoder = [self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred]
        if init_encoder:
            enc = self.encoder
            if self.cfg.sincos_pos_embed:
                init_vit_sincos_pos_embed(enc, layout="mae")
            w = enc.patch_embed.proj.weight  # a conv: initialise it as a Linear
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            if enc.cls_token is not None:
                nn.init.normal_(enc.cls_token, std=0.02)
            modules = [*enc.blocks, enc.norm, enc.fc_norm, *decoder]
        else:
            modules = decoder
        nn.init.normal_(self.mask_token, std=0.02)
        for m in modules:
            m.apply(_init_layer)

    def no_weight_decay(self) -> set[str]:
        """Parameter names kept out of weight decay (besides norms and biases)."""
        enc = {f"encoder.{k}" for k in self.encoder.no_weight_decay()}
        return enc | {"mask_token", "decoder_pos_embed"}

    # --- the stages ----------------------------------------------------------------------
    def forward_encoder(
        self, imgs: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Encode the visible patches: latent ``[N, P + K, D]``, mask ``[N, L]``, ids_restore ``[N, L]``.

        Position embeddings are added, then ``mask_ratio`` of the patch tokens are dropped per
        sample (:func:`moma.models.masking.random_masking`); the blocks and the final norm see
        the prefix (CLS) token and the ``K`` kept patches only.
        """
        out = forward_encoder_masked(self.encoder, imgs, self.cfg.mask_ratio, generator)
        return out.tokens, out.mask, out.ids_restore

    def forward_decoder(self, x: Tensor, ids_restore: Tensor) -> Tensor:
        """Latent ``[N, P + K, D]`` -> pixel predictions of every patch ``[N, L, p*p*C]``."""
        p = self.encoder.num_prefix_tokens
        x = self.decoder_embed(x)  # [N, P + K, Dd]
        n, length = ids_restore.shape
        d = x.shape[-1]
        mask_tokens = self.mask_token.to(x.dtype).expand(n, length - (x.shape[1] - p), d)
        x_ = torch.cat([x[:, p:], mask_tokens], dim=1)  # [N, L, Dd]: kept, then removed
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, d))  # grid order
        x = torch.cat([x[:, :p], x_], dim=1)  # [N, P + L, Dd]
        x = x + self.decoder_pos_embed.to(x.dtype)
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        x = self.decoder_pred(x)  # [N, P + L, p*p*C]
        return x[:, p:]  # [N, L, p*p*C]

    def patchify(self, imgs: Tensor) -> Tensor:
        """``[N, C, H, W] -> [N, L, p*p*C]`` (the pixel target of every patch)."""
        return patchify(imgs, self.patch_size)

    def forward_loss(self, imgs: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """MSE between ``pred [N, L, p*p*C]`` and the patches of ``imgs``, removed patches only."""
        return self.loss_fn(pred, self.patchify(imgs), mask)

    def forward(
        self, imgs: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``imgs [N, C, H, W]`` -> (loss, pred ``[N, L, p*p*C]``, mask ``[N, L]``)."""
        latent, mask, ids_restore = self.forward_encoder(imgs, generator)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask

    # --- SSLMethod -----------------------------------------------------------------------
    def shared_step(self, batch) -> dict[str, Tensor]:
        imgs = batch[0]
        if isinstance(imgs, list | tuple):  # a two-view datamodule: MAE uses the first view
            imgs = imgs[0]
        loss, _, _ = self(imgs)
        return {"loss": loss}

    def export_backbone(self) -> VisionTransformer:
        return self.encoder

    def on_train_start(self) -> None:
        # Lightning seeds every process alike, which would give all of them the same masks;
        # like the official code, each process draws from its own seed.
        if self.trainer.world_size > 1:
            torch.manual_seed(torch.initial_seed() + self.trainer.global_rank)

    def check_resume(self, checkpoint: dict) -> None:
        check_same_backbone(checkpoint, self.backbone_cfg)


def check_same_backbone(checkpoint: dict, backbone_cfg: dict) -> None:
    """Refuse to resume a run whose checkpoint records another backbone."""
    saved = (checkpoint.get("moma") or {}).get("backbone")
    if not isinstance(saved, dict):
        return
    diff = sorted(k for k in set(saved) | set(backbone_cfg) if saved.get(k) != backbone_cfg.get(k))
    if diff:
        pairs = ", ".join(f"{k}: {saved.get(k)!r} -> {backbone_cfg.get(k)!r}" for k in diff)
        raise CheckpointError(
            f"the checkpoint to resume was trained with another backbone ({pairs}); "
            "use another --trainer.out_dir or --trainer.resume never"
        )


def _init_layer(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
