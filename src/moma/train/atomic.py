"""Old import path: the atomic writer lives in moma.run_folder.atomic now, the Lightning plugin
in moma.train.checkpoint_io (both import from here with a warning)."""

from moma.moved import forwarder

__getattr__ = forwarder(__name__)
