"""One callback that keeps a run safe: non-finite loss guard, signals, periodic checkpoints.

The order inside ``on_train_batch_end`` matters: the loss is checked *before* a checkpoint is
written, so a NaN step never reaches disk; the weights are checked right before every save,
so NaN/Inf weights from non-finite gradients (with a still finite loss) never do either. The
loggers are flushed *before* the checkpoint is written, so the metrics of the steps a
checkpoint covers are on disk; the row of the step being checkpointed is logged by Lightning
right after this hook (and flushed at once: ``fit`` sets the CSV logger to flush every row).
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

_ADVICE = (
    "try a lower --optim.base_lr, --trainer.precision 32-true or --trainer.gradient_clip_val 1.0"
)


class RunGuard(L.Callback):
    """Checkpoint every ``every_n_steps`` and at the end; stop cleanly on SIGTERM/SIGINT.

    After a stop on a signal, ``interrupted`` is true and ``stop_signal`` holds its number.
    """

    def __init__(self, ckpt_path: str | Path, every_n_steps: int) -> None:
        self.ckpt_path = Path(ckpt_path)
        self.every_n_steps = max(1, int(every_n_steps))
        self._stop_signal: int | None = None
        self._old_handlers: dict[int, object] = {}
        self.interrupted = False
        self.stop_signal: int | None = None

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
        # A SIGTERM between Lightning's handler and ours: take it over (Lightning would exit
        # at the end of the epoch without a checkpoint).
        if getattr(trainer, "received_sigterm", False):
            self._stop_signal = signal.SIGTERM
            with contextlib.suppress(AttributeError):
                trainer._signal_connector.received_sigterm = False
        log.info(
            "training from step %d; SIGINT (Ctrl-C) or SIGTERM saves a checkpoint and stops",
            trainer.global_step,
        )

    def on_train_end(self, trainer, pl_module) -> None:
        if not self.interrupted:
            self.save(trainer, pl_module)
        self._restore_handlers()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for s, h in self._old_handlers.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(s, h)
        self._old_handlers.clear()

    # --- per step ----------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        step = trainer.global_step
        if loss is not None and not math.isfinite(
            float(loss.detach() if torch.is_tensor(loss) else loss)
        ):
            raise TrainingError(  # step - 1: the step's index in the metrics (0-based)
                f"loss became {float(loss)} at step {step - 1} ({self._kept()}); {_ADVICE}"
            )
        stop = trainer.strategy.reduce_boolean_decision(self._stop_signal is not None, all=False)
        if stop:
            self.save(trainer, pl_module)
            self.interrupted = True
            self.stop_signal = self._stop_signal or signal.SIGTERM
            trainer.should_stop = True
            log.warning(
                "stopped at step %d; checkpoint %s saved. Re-run the same command to resume.",
                step,
                self.ckpt_path,
            )
        elif step % self.every_n_steps == 0:
            self.save(trainer, pl_module)

    def _kept(self) -> str:
        if self.ckpt_path.exists():
            return f"last good checkpoint {self.ckpt_path} kept"
        return "no checkpoint yet"

    def save(self, trainer, pl_module: L.LightningModule | None = None) -> None:
        """Flush the loggers, then write the checkpoint (atomically, with optimiser state).

        Refuses (``TrainingError``) to write weights that are not finite.
        """
        if pl_module is not None:
            params = pl_module.named_parameters()  # the trainable ones: frozen ones never change
            bad = next((n for n, p in params if p.requires_grad and not _finite(p)), None)
            if bad is not None:
                raise TrainingError(
                    f"weights became non-finite at step {trainer.global_step} (parameter "
                    f"{bad}; NaN/Inf gradients) and were not saved ({self._kept()}); {_ADVICE}"
                )
        for logger in trainer.loggers:
            with contextlib.suppress(Exception):  # metrics are best effort, the checkpoint is not
                logger.save()
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)  # with optimiser state


def _finite(p: torch.Tensor) -> bool:
    return bool(torch.isfinite(p.detach()).all())
