"""How a run is executed: where it writes, how long it lasts, on which devices."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainerConfig:
    """Options passed through to ``lightning.Trainer`` plus moma's run management.

    ``devices``/``strategy``/``num_nodes`` select the distributed mode (DDP is the
    multi-process path). The data's ``batch_size`` is per process: the global batch is
    ``batch_size * devices * num_nodes * accumulate_grad_batches`` and sets the lr.
    """

    out_dir: str = "runs/run"
    max_epochs: int = 10
    max_steps: int = -1  # > 0 overrides max_epochs
    precision: str = "bf16-mixed"  # or "32-true", "16-mixed" (GPU)
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    ckpt_every_n_steps: int = 200
    log_every_n_steps: int = 10
    seed: int = 0
    resume: str = (
        "auto"  # "auto": continue from OUT/checkpoints/last.ckpt if present; "never"; or a path
    )
    progress_bar: bool = True
    deterministic: bool = False
    # timm attention kernel: "auto" (fused SDPA on a GPU, plain softmax(QK^T)V on the CPU,
    # where it is faster in bf16: moma.models.attention), "fused" or "math".
    attention: str = "auto"
