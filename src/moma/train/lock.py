"""Old import path: these names live in moma.run_folder.lock now (they import from here with a warning)."""

from moma.moved import forwarder

__getattr__ = forwarder(__name__)
