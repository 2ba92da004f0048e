"""Run a method with Lightning: the one place that builds a Trainer."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger

from moma.errors import CheckpointError, ConfigError
from moma.methods.base import CHECKPOINT_FORMAT_VERSION, SSLMethod
from moma.models.attention import set_attention, use_fused_attention
from moma.models.export import export_backbone
from moma.models.safe_load import one_line, read_checkpoint
from moma.paths import output_folder
from moma.run_folder import RunFolder, RunLock, atomic_write_text, last_checkpoint
from moma.run_folder.atomic import remove_stale_temp_files
from moma.run_folder.layout import LOGS, TENSORBOARD, set_aside_previous_run
from moma.seeding import seed_run
from moma.train.checkpoint_io import AtomicCheckpointIO
from moma.train.compile import CompileBlocks
from moma.train.config import TrainerConfig
from moma.train.cpu_share import CpuShareGuard
from moma.train.guards import RunGuard
from moma.train.resume_config import check_resume_config, history_path, history_text

log = logging.getLogger(__name__)


class _DropLightningTip(logging.Filter):
    """Drops Lightning's advert for its cloud logger, printed at every run: not actionable."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("\N{ELECTRIC LIGHT BULB} Tip:")


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropLightningTip())
# Raised inside Lightning 2.6's own pytree helper under torch 2.14, once per run; nothing a
# user (or moma) can change.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


@dataclass
class RunResult:
    """Where a finished run put its outputs."""

    out_dir: Path
    checkpoint: Path
    export: Path | None
    global_step: int
    interrupted: bool
    stop_signal: int | None = None  # the signal that interrupted the run (SIGTERM, SIGINT)


def _resume_path(cfg: TrainerConfig) -> Path | None:
    if cfg.resume == "never":
        return None
    if cfg.resume == "auto":
        p = last_checkpoint(cfg.out_dir)
        return p if p.exists() else None
    p = Path(cfg.resume)
    if not p.exists():
        raise CheckpointError(f"--trainer.resume {p}: no such checkpoint")
    return p


def read_run_checkpoint(path: Path, method: str | None = None) -> dict:
    """Load and validate a moma training checkpoint safely (``weights_only=True``).

    Refuses (``CheckpointError``) a truncated or corrupt file (content digest included), a
    file that needs arbitrary unpickling (named, never run), and another method's checkpoint.
    """
    try:
        ckpt = read_checkpoint(path)
    except CheckpointError as e:
        raise CheckpointError(
            f"{e}; to start over, delete it or pass --trainer.resume never"
        ) from None
    meta = ckpt.get("moma") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a moma training checkpoint (no 'moma' record)")
    if meta.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {meta.get('format_version')}, this moma reads "
            f"{CHECKPOINT_FORMAT_VERSION}"
        )
    if method is not None and meta.get("method") != method:
        raise CheckpointError(
            f"{path} is a checkpoint of method {meta.get('method')!r}, not {method!r}"
        )
    return ckpt


def _mismatch(err: Exception, show: int = 2) -> str:
    """The first problems of a ``load_state_dict`` error, on one line."""
    lines = [ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()]
    text = "; ".join(lines[:show]) + (f" (+{len(lines) - show} more)" if len(lines) > show else "")
    return " ".join(text.split())[:400] or str(err).splitlines()[0]


class AttentionKernel(L.Callback):
    """Picks the attention kernel of every timm ViT in the module once it is on its device."""

    def __init__(self, mode: str) -> None:
        use_fused_attention("cpu", mode)  # a bad mode fails before training starts
        self.mode = mode

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        n = len(set_attention(pl_module, pl_module.device, self.mode))
        fused = use_fused_attention(pl_module.device, self.mode)
        log.debug("%d attention layers: %s", n, "fused SDPA" if fused else "plain softmax")


def build_trainer(
    cfg: TrainerConfig,
    guard: RunGuard,
    out_dir: Path,
    callbacks_in: list[L.Callback] | None = None,
) -> L.Trainer:
    """The Lightning Trainer for a moma run (``callbacks``: the method's own)."""
    # One CSV per attempt (logs/version_N/metrics.csv): Lightning's CSV logger would
    # otherwise overwrite the metrics of the interrupted attempt on resume.
    # flush_logs_every_n_steps=1: a row reaches the disk when logged, not up to 100 steps later
    # (a SIGKILL would lose those rows; an interrupted run is resumed from its checkpoint).
    loggers = [CSVLogger(save_dir=str(out_dir), name=LOGS, flush_logs_every_n_steps=1)]
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(out_dir), name=TENSORBOARD))
    except ImportError:
        pass
    # The method's own callbacks (a target cache built at fit start) run once the attention
    # kernel and the thread count are set, and before the blocks are compiled.
    callbacks: list[L.Callback] = [
        guard,
        AttentionKernel(cfg.attention),
        CpuShareGuard(cfg.threads),
    ]
    callbacks += [*(callbacks_in or []), CompileBlocks(cfg.compile)]
    if cfg.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=1 if sys.stderr.isatty() else 25))
    return L.Trainer(
        default_root_dir=str(out_dir),
        max_epochs=cfg.max_epochs if cfg.max_steps <= 0 else -1,
        max_steps=cfg.max_steps,
        precision=cfg.precision,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        num_nodes=cfg.num_nodes,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        gradient_clip_val=cfg.gradient_clip_val,
        log_every_n_steps=cfg.log_every_n_steps,
        deterministic=cfg.deterministic,
        enable_checkpointing=False,  # RunGuard writes checkpoints (atomically)
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        logger=loggers,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
    )


def fit(
    module: SSLMethod,
    datamodule: L.LightningDataModule,
    cfg: TrainerConfig,
    config: dict | None = None,
    callbacks: list[L.Callback] | None = None,
) -> RunResult:
    """Train ``module`` on ``datamodule``; resumable, checkpointed, exported at the end.

    Writes into ``cfg.out_dir``: ``config.yaml`` (resolved config), ``metrics.csv``,
    ``checkpoints/last.ckpt`` (atomic, every ``ckpt_every_n_steps`` and at the end) and the
    export ``backbone.safetensors`` + ``backbone.json``. Re-running the same command resumes.
    ``callbacks`` are the method's own Lightning callbacks (e.g. MOMA's target cache).
    """
    use_fused_attention("cpu", cfg.attention)  # a bad option fails before anything is written
    cfg.check()
    out_dir = output_folder(cfg.out_dir, "trainer.out_dir")
    run = RunFolder(out_dir)
    guard = RunGuard(run.checkpoint, cfg.ckpt_every_n_steps)
    try:  # before the lock: a refused option leaves no folder behind
        trainer = build_trainer(cfg, guard, out_dir, callbacks)
    except (MisconfigurationException, ValueError) as e:  # Lightning refused an option
        raise ConfigError(f"trainer options: {one_line(e, 300)}") from None
    rank0 = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
    lock = RunLock(out_dir)
    if rank0:  # DDP children re-run this command: only the launching process locks
        lock.acquire()
        # A run killed while writing left its temp files: under the lock they are nobody's.
        for folder in (run.root, run.checkpoints):
            for p in remove_stale_temp_files(folder):
                log.info("removed %s (a write interrupted by a crash)", p)
    try:
        ckpt_path = _resume_path(cfg)
        history = None
        if ckpt_path is not None:
            ckpt = read_run_checkpoint(ckpt_path, module.name)
            module.check_resume(ckpt)
            old = ckpt["moma"].get("config")
            changes = check_resume_config(ckpt_path, old, config, cfg.allow_config_change)
            step = int(ckpt.get("global_step") or 0)
            if changes:
                history = (history_path(out_dir, step), history_text(old, changes, step))
            log.info("resuming from %s (step %s)", ckpt_path, step)
            del ckpt
        module.run_config = config or {}
        if rank0:  # every check passed: now the folder changes
            if cfg.resume == "never" and run.checkpoint.exists():
                set_aside_previous_run(out_dir)
            if history is not None:
                atomic_write_text(*history)
                log.info("the config of the earlier steps is kept in %s", history[0])
            if config is not None:
                atomic_write_text(run.config, yaml.safe_dump(config, sort_keys=False))
        seed_run(cfg.seed)
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except RuntimeError as e:
            if ckpt_path is not None and "state_dict" in str(e):
                raise CheckpointError(
                    f"{ckpt_path} does not match this model: {_mismatch(e)}; resume it with "
                    "the architecture it was made with, or start a new run (another "
                    "--trainer.out_dir or --trainer.resume never)"
                ) from None
            raise
        export = None
        if trainer.is_global_zero and not guard.interrupted:
            export = export_backbone(
                module.export_backbone(),
                run.export,
                arch=module.backbone_cfg.get("arch"),
                extra={"method": module.name, "global_step": trainer.global_step},
            )
        return RunResult(
            out_dir,
            guard.ckpt_path,
            export,
            trainer.global_step,
            guard.interrupted,
            guard.stop_signal,
        )
    finally:
        lock.release()
