"""Running methods with Lightning: checkpoints, resume, locks, guards."""

from moma.run_folder import last_checkpoint
from moma.train.config import TrainerConfig
from moma.train.fit import RunResult, fit, seed_run

__all__ = ["RunResult", "TrainerConfig", "fit", "last_checkpoint", "seed_run"]
