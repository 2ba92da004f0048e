"""Running methods with Lightning: checkpoints, resume, locks, guards."""

from moma.train.config import TrainerConfig
from moma.train.fit import RunResult, fit, last_checkpoint, seed_run

__all__ = ["RunResult", "TrainerConfig", "fit", "last_checkpoint", "seed_run"]
