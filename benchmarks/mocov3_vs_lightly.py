"""moma's MoCo v3 training step side by side with one built from lightly's parts.

    .venv/bin/pip install --no-deps lightly==1.6.0   # not a moma dependency; torch untouched
    python benchmarks/mocov3_vs_lightly.py                        # 32 px, 6x192/4 ViT, bf16
    python benchmarks/mocov3_vs_lightly.py --profile              # + top ops of each step

Both steps train the same timm ViT (built by moma's `BackboneConfig`, the same attention
kernel: plain softmax on the CPU as ``--trainer.attention auto`` picks, fused SDPA on a GPU,
and the same initial weights: MoCo v3's initialisation, since the CPU's GELU runs about 20%
slower on its larger activations than on timm's default init) with the same head widths,
the same fused AdamW and the symmetric MoCo v3 objective:

- moma: `MoCoV3Method.shared_step` + backward + AdamW + its momentum update (what Lightning
  runs per batch, as ``moma bench`` times it);
- lightly: ``MoCoProjectionHead(num_layers=3, batch_norm=True)`` and
  ``BYOLPredictionHead`` (MoCo v3's heads in lightly 1.6.0), each view through the
  encoders on its own (lightly's examples), ``NTXentLoss(temperature=0.2)`` in both
  directions, ``update_momentum`` from ``lightly.models.utils``.

Timed round-robin in one process (moma, lightly, moma, ...), so load drifts hit both alike.
Prints img/s (two views per image) and the ratio; ``--profile`` adds torch.profiler tables.
"""

from __future__ import annotations

import argparse
import copy
import os

import torch
from torch import nn

from moma.bench.cases import TrainStep, autocast, random_images
from moma.bench.timing import time_interleaved
from moma.methods.mocov3 import MoCoV3Config, MoCoV3Method
from moma.methods.optim import build_optimizer, build_param_groups
from moma.models.attention import set_attention
from moma.models.vit import BackboneConfig


class LightlyMoCoV3(nn.Module):
    """MoCo v3 from lightly 1.6.0's parts around a given ViT."""

    def __init__(self, vit: nn.Module, cfg: MoCoV3Config) -> None:
        from lightly.loss import NTXentLoss
        from lightly.models.modules.heads import BYOLPredictionHead, MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        dim = vit.embed_dim
        self.backbone = vit
        self.projection_head = MoCoProjectionHead(
            dim, cfg.proj_hidden_dim, cfg.proj_dim, num_layers=3, batch_norm=True
        )
        self.prediction_head = BYOLPredictionHead(cfg.proj_dim, cfg.pred_hidden_dim, cfg.proj_dim)
        self.backbone_momentum = copy.deepcopy(vit)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NTXentLoss(temperature=cfg.temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prediction_head(self.projection_head(self.backbone(x)))

    @torch.no_grad()
    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x))

    def loss(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        q0, q1 = self(x0), self(x1)
        k0, k1 = self.forward_momentum(x0), self.forward_momentum(x1)
        return self.criterion(q0, k1) + self.criterion(q1, k0)

    def momentum_update(self, m: float) -> None:
        from lightly.models.utils import update_momentum

        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.projection_head, self.projection_head_momentum, m)


class LightlyStep:
    """One optimiser step of `LightlyMoCoV3` (autocast, backward, fused AdamW, momentum)."""

    def __init__(self, model: LightlyMoCoV3, views, device, precision: str, batch: int) -> None:
        self.model, self.views, self.device, self.precision = model, views, device, precision
        trainable = [model.backbone, model.projection_head, model.prediction_head]
        groups = build_param_groups(trainable, 0.1)
        from moma.methods.mocov3 import mocov3_optim

        self.opt, _ = build_optimizer(groups, mocov3_optim(), batch, 10_000)

    def __call__(self) -> torch.Tensor:
        with autocast(self.device, self.precision):
            loss = self.model.loss(*self.views)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.model.momentum_update(0.99)
        return loss


def build(args: argparse.Namespace, device: torch.device):
    bb = BackboneConfig(
        arch="vit_tiny_patch16_224", img_size=args.img_size, patch_size=args.patch, depth=args.depth
    )
    cfg = MoCoV3Config()
    torch.manual_seed(0)
    moma = MoCoV3Method(cfg, bb).to(device).train()
    # the same encoder weights (MoCo v3's init): GELU's speed depends on the activations
    vit = bb.build()
    vit.load_state_dict(moma.base_encoder.state_dict())
    lightly = LightlyMoCoV3(vit, cfg).to(device).train()
    for m in (moma, lightly):
        set_attention(m, device, args.attention)
    views = [random_images(args.batch, args.img_size, device, s) for s in (1, 2)]
    moma_step = TrainStep(
        moma, (views, None), args.batch, device, args.precision,
        after_step=lambda: moma.momentum_update(0.99),
    )  # fmt: skip
    lightly_step = LightlyStep(lightly, views, device, args.precision, args.batch)
    return {"moma": moma_step, "lightly": lightly_step}


def profile(name: str, step, rows: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(f"\n### {name}: top ops by self CPU time\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--img_size", type=int, default=32)
    ap.add_argument("--patch", type=int, default=4)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--attention", default="auto", choices=["auto", "fused", "math"])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--rows", type=int, default=25)
    args = ap.parse_args()
    device = torch.device(args.device)
    steps = build(args, device)
    print(
        f"MoCo v3 step, ViT {args.depth}x192/{args.patch} at {args.img_size} px, batch "
        f"{args.batch}, {args.precision}, attention {args.attention}, {torch.get_num_threads()} "
        f"threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    timings = time_interleaved(list(steps.values()), args.steps, args.warmup, device)
    rates = {}
    for (name, _), t in zip(steps.items(), timings):
        rates[name] = args.batch / t.median
        q1, q3 = t.quartiles
        print(f"{name:8s} {rates[name]:7.1f} img/s  (ms/step median {1e3 * t.median:.0f}, "
              f"IQR {1e3 * q1:.0f}-{1e3 * q3:.0f})")  # fmt: skip
    print(
        f"moma / lightly: {rates['moma'] / rates['lightly']:.3f}  (load {os.getloadavg()[0]:.2f})"
    )
    if args.profile:
        for name, step in steps.items():
            profile(name, step, args.rows)


if __name__ == "__main__":
    main()
