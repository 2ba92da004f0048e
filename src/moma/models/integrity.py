"""Old import path: these names live in moma.integrity now (they import from here with a warning)."""

from moma.moved import forwarder

__getattr__ = forwarder(__name__)
