"""Errors a user can cause. The CLI prints them as one line, without a stack trace."""


class MomaError(Exception):
    """Base class: the message alone must tell the user what is wrong and where."""


class ConfigError(MomaError):
    """An option or config file is invalid."""


class CheckpointError(MomaError):
    """A checkpoint or weights file cannot be used (unsafe, corrupt, wrong model, mismatch)."""


class DataError(MomaError):
    """A dataset cannot be read (missing, empty, unreadable files in strict mode)."""


class TrainingError(MomaError):
    """A run cannot go on (non-finite loss, locked output folder, ...)."""
