"""One callback that keeps a run safe: non-finite loss guard, signals, periodic checkpoints.

The order inside ``on_train_batch_end`` matters: the loss is checked *before* a checkpoint is
written, so a NaN step never reaches disk.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
from pathlib import Path

import lightning as L
import torch

from moma.errors import TrainingError

log = logging.getLogger(__name__)


class RunGuard(L.Callback):
    """Checkpoint every ``every_n_steps`` and at the end; stop cleanly on SIGTERM/SIGINT."""

    def __init__(self, ckpt_path: str | Path, every_n_steps: int) -> None:
        self.ckpt_path = Path(ckpt_path)
        self.every_n_steps = max(1, int(every_n_steps))
        self._stop_signal: int | None = None
        self._old_handlers: dict[int, object] = {}
        self.interrupted = False

    # --- signals ---------------------------------------------------------------------
    def _handle(self, signum, frame) -> None:
        if self._stop_signal is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum
        log.warning("received %s: saving a checkpoint after this step", signal.Signals(signum).name)

    def on_train_start(self, trainer, pl_module) -> None:
        # Installed after Lightning's own handlers so that ours win during training.
        for s in (signal.SIGTERM, signal.SIGINT):
            # ValueError: not the main thread (e.g. a notebook worker); then no handler.
            with contextlib.suppress(ValueError):
                self._old_handlers[s] = signal.signal(s, self._handle)

    def on_train_end(self, trainer, pl_module) -> None:
        if not self.interrupted:
            self.save(trainer)
        for s, h in self._old_handlers.items():
            signal.signal(s, h)
        self._old_handlers.clear()

    # --- per step ----------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        step = trainer.global_step
        if loss is not None and not math.isfinite(
            float(loss.detach() if torch.is_tensor(loss) else loss)
        ):
            have = self.ckpt_path.exists()
            kept = f"last good checkpoint {self.ckpt_path} kept" if have else "no checkpoint yet"
            raise TrainingError(
                f"loss became {float(loss)} at step {step} ({kept}); try a lower "
                "--optim.base_lr, --trainer.precision 32-true or --trainer.gradient_clip_val 1.0"
            )
        stop = trainer.strategy.reduce_boolean_decision(self._stop_signal is not None, all=False)
        if stop:
            self.save(trainer)
            self.interrupted = True
            trainer.should_stop = True
            log.warning(
                "stopped at step %d; checkpoint %s saved. Re-run the same command to resume.",
                step,
                self.ckpt_path,
            )
        elif step % self.every_n_steps == 0:
            self.save(trainer)

    def save(self, trainer) -> None:
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)  # with optimiser state
