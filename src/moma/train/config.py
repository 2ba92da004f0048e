"""How a run is executed: where it writes, how long it lasts, on which devices."""

from __future__ import annotations

from dataclasses import dataclass

from moma.train.compile import check_compile
from moma.train.cpu_share import check_threads


@dataclass
class TrainerConfig:
    """Options passed through to ``lightning.Trainer`` plus moma's run management.

    ``devices``/``strategy``/``num_nodes`` select the distributed mode (DDP is the
    multi-process path). The data's ``batch_size`` is per process: the global batch is
    ``batch_size * devices * num_nodes * accumulate_grad_batches`` and sets the lr.

    Attributes:
        out_dir: the run's folder: checkpoints, logs, config and the exported backbone.
        max_epochs: epochs to train (ignored when ``max_steps`` > 0).
        max_steps: optimiser steps to train; > 0 overrides ``max_epochs``.
        precision: ``bf16-mixed``, ``32-true`` or (GPU) ``16-mixed``.
        accelerator: ``auto``, ``cpu`` or ``gpu`` (Lightning's names).
        devices: processes / GPUs per node.
        strategy: ``auto`` or ``ddp`` (Lightning's names).
        num_nodes: machines of a multi-node DDP run.
        accumulate_grad_batches: batches per optimiser step.
        gradient_clip_val: clip the gradient norm to this value (None: no clipping).
        ckpt_every_n_steps: steps between checkpoints (one is also saved at the end and on
            SIGTERM / Ctrl-C).
        log_every_n_steps: steps between logged metric rows.
        seed: seed of every generator: model init, masks, data order and augmentation.
        resume: ``auto`` (continue from ``OUT/checkpoints/last.ckpt`` when present), ``never``
            (start over; a previous run in the folder is moved to ``OUT/replaced/``) or a
            checkpoint path. A resumed run must use the options it was started with.
        allow_config_change: resume although options changed since the checkpoint (beyond
            run length, reporting and file locations): the change is logged and the earlier
            config kept in ``OUT/config_history/``.
        progress_bar: show a progress bar with ETA.
        deterministic: ask torch for deterministic kernels (slower).
        attention: timm attention kernel: ``auto`` (fused SDPA on a GPU, plain softmax on the
            CPU, where it is faster in bf16), ``fused`` or ``math``.
        threads: torch intra-op CPU threads. ``null`` (default): all usable CPUs, fewer while
            other processes keep some busy (only when OpenMP threads spin, see
            ``moma.threads``); a number fixes the count.
        compile: ``none``; ``blocks``: compile each transformer block of the student and
            teachers in place with ``torch.compile`` (CUDA graphs on a GPU:
            ``reduce-overhead``); ``blocks-nograph``: the same without CUDA graphs.
            Checkpoints and exports are unchanged; the first steps take the compilation.
    """

    out_dir: str = "runs/run"
    max_epochs: int = 10
    max_steps: int = -1
    precision: str = "bf16-mixed"
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    ckpt_every_n_steps: int = 200
    log_every_n_steps: int = 10
    seed: int = 0
    resume: str = "auto"
    allow_config_change: bool = False
    progress_bar: bool = True
    deterministic: bool = False
    attention: str = "auto"
    threads: int | None = None
    compile: str = "none"

    def check(self) -> None:
        """Refuse values of moma's own engine options that cannot work (`ConfigError`)."""

        check_threads(self.threads)
        check_compile(self.compile)
