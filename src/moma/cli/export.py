"""Moved: ``moma export``'s config and run are :mod:`moma.commands.export` (this old path
still imports them, warning once)."""

from moma.moved import forwarder

__getattr__ = forwarder(__name__)
