"""The ``moma`` command line."""
