"""The owner of a run folder, at ground level (every layer that writes or reads a run uses it):
its layout (:class:`RunFolder`), the one atomic writer, the metrics reader and the folder lock.
"""

from moma.run_folder.atomic import atomic_write, atomic_write_text
from moma.run_folder.layout import RunFolder, last_checkpoint
from moma.run_folder.lock import RunLock
from moma.run_folder.metrics import read_metrics

__all__ = [
    "RunFolder",
    "RunLock",
    "atomic_write",
    "atomic_write_text",
    "last_checkpoint",
    "read_metrics",
]
