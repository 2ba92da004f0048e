"""Moved: ``moma report``'s config and run are :mod:`moma.commands.report` (this old path
still imports them, warning once)."""

from moma.moved import forwarder

__getattr__ = forwarder(__name__)
