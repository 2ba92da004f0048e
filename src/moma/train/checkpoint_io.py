"""Lightning's checkpoint I/O, made atomic and self-checking."""

from __future__ import annotations

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from moma.integrity import with_digest
from moma.run_folder.atomic import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O whose saves are atomic (Lightning writes in place)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        """Write ``checkpoint`` plus its content digest (checked on every read) atomically."""
        checkpoint = with_digest(checkpoint)
        atomic_write(path, lambda f: torch.save(checkpoint, f))
