"""Moved: ``moma quickstart`` is :mod:`moma.commands.quickstart` (this old path still imports
its names, warning once)."""

from moma.moved import forwarder

__getattr__ = forwarder(__name__)
