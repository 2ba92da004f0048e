"""The base LightningModule of every method: one hook to implement, shared optimisation."""

from __future__ import annotations

import time

import lightning as L
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from moma.errors import TrainingError
from moma.methods.clock import StageClock
from moma.methods.optim import OptimConfig, build_optimizer, build_param_groups

CHECKPOINT_FORMAT_VERSION = 1


class SSLMethod(L.LightningModule):
    """Base class. Subclasses implement :meth:`shared_step` and :meth:`export_backbone`.

    ``name`` identifies the method in checkpoints (``"mae"``, ``"mocov3"``, ``"moma"``);
    ``backbone_cfg`` (a dict of :class:`~moma.models.vit.BackboneConfig` fields) is recorded
    so that :func:`moma.load_backbone` can rebuild the exported backbone.
    """

    name: str = "ssl"
    backbone_prefix: str = "encoder."  # where the exported backbone lives in state_dict

    def __init__(self, optim: OptimConfig, backbone_cfg: dict) -> None:
        super().__init__()
        self.optim_cfg = optim
        self.backbone_cfg = dict(backbone_cfg)
        self.run_config: dict = {}  # the resolved config, stored in every checkpoint
        # Per-epoch time of each stage (``time/*_s`` in the metrics); methods time their own
        # stages with ``with self.clock.timed(name, device)``.
        self.clock = StageClock()
        self._epoch_t0 = 0.0

    # --- the hooks -------------------------------------------------------------------
    def shared_step(self, batch) -> dict[str, Tensor]:
        """Compute the loss of one batch: returns ``{"loss": ..., **other scalars to log}``."""
        raise NotImplementedError

    def export_backbone(self) -> VisionTransformer:
        """The backbone that ``moma export`` writes."""
        raise NotImplementedError

    def trainable_modules(self) -> list[nn.Module]:
        """Modules whose parameters the optimiser updates (default: all children)."""
        return [self]

    def after_optimizer_step(self, step: int) -> None:
        """Called right after optimiser step number ``step`` (1-based), before any callback
        (so a checkpoint holds its effect); MoCo v3's momentum update lives here."""

    def check_resume(self, checkpoint: dict) -> None:
        """Refuse to resume from ``checkpoint`` if it belongs to another run (raise CheckpointError)."""

    # --- Lightning ---------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> Tensor:
        out = self.shared_step(batch)
        n = _batch_len(batch)
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=n)
        for k, v in out.items():
            if k != "loss":
                self.log(f"train/{k}", v, batch_size=n)
        sched = self.lr_schedulers()
        if sched is not None:
            self.log("train/lr", sched.get_last_lr()[0], batch_size=n)
        return out["loss"]

    def on_train_epoch_start(self) -> None:
        self.clock.collect()  # drop whatever ran between epochs
        self._epoch_t0 = time.perf_counter()

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self.clock.start("step", self.device)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.clock.stop("step")

    def on_train_epoch_end(self) -> None:
        times = self.epoch_times(self.clock.collect(), time.perf_counter() - self._epoch_t0)
        for name, seconds in times.items():
            self.log(f"time/{name}_s", seconds, on_step=False, on_epoch=True, reduce_fx="max")

    def epoch_times(self, stages: dict[str, float], epoch_s: float) -> dict[str, float]:
        """Seconds of the epoch per stage: ``epoch`` (wall), ``step`` (forward, backward and
        optimiser), ``data`` (the rest: loading and augmenting batches) and each stage the
        method timed. Methods may add derived entries."""
        step = stages.get("step", 0.0)
        return {"epoch": epoch_s, **stages, "data": max(0.0, epoch_s - step)}

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # Once per real optimiser step (not per accumulated micro-batch); Lightning counts
        # the step in global_step only after this hook returns.
        self.after_optimizer_step(self.trainer.global_step + 1)

    def global_batch_size(self) -> int:
        """Images per optimiser step over all processes (sets the lr by the scaling rule)."""
        dm = self.trainer.datamodule
        per_device = getattr(dm, "batch_size", None)
        if per_device is None:
            raise TrainingError("the datamodule must expose batch_size")
        return per_device * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def configure_optimizers(self):
        groups = build_param_groups(self.trainable_modules(), self.optim_cfg.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        opt, sched = build_optimizer(groups, self.optim_cfg, self.global_batch_size(), total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["moma"] = {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "method": self.name,
            "backbone": self.backbone_cfg,
            "backbone_prefix": self.backbone_prefix,
            "config": self.run_config,
            **self.extra_checkpoint_meta(),
        }
        checkpoint["rng"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # The random state of the interrupted run at its checkpoint: masks, drop-path and
        # MoCo v3's views continue as the uninterrupted run would have drawn them.
        if "rng" in checkpoint:
            set_rng_states(checkpoint["rng"])

    def extra_checkpoint_meta(self) -> dict:
        """Method-specific entries of the checkpoint's ``moma`` record (e.g. teacher hashes)."""
        return {}


def rng_states() -> dict:
    """torch's global generators (CPU, and every CUDA device once CUDA is in use)."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restore what :func:`rng_states` returned (CUDA states only where CUDA is in use)."""
    torch.set_rng_state(states["torch"].cpu())
    cuda = states.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def _batch_len(batch) -> int:
    x = batch[0]
    if isinstance(x, list | tuple):
        x = x[0]
    return int(x.shape[0]) if torch.is_tensor(x) else 1
