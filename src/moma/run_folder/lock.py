"""A lock file that stops two runs from writing into the same output folder."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from moma.errors import TrainingError

log = logging.getLogger(__name__)
LOCK_NAME = ".moma.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Exclusive lock on an output folder, held by one process; a dead holder's lock is taken over."""

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / LOCK_NAME
        self.held = False

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = self._read()
                same_host = other.get("host") == me["host"]
                pid = int(other.get("pid", -1))
                if same_host and pid > 0 and pid != me["pid"] and _alive(pid):
                    raise TrainingError(
                        f"output folder {self.path.parent} is in use by process {pid}; wait "
                        "for it to finish or choose another --trainer.out_dir"
                    ) from None
                if not same_host and other:
                    raise TrainingError(
                        f"output folder {self.path.parent} is locked by host {other.get('host')} "
                        f"(pid {pid}); if that run is dead, delete {self.path}"
                    ) from None
                log.warning("taking over the stale lock %s (process %s is gone)", self.path, pid)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise TrainingError(f"could not lock output folder {self.path.parent}")

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
