"""``moma bench``: images/s, FLOPs and FLOP/s of every training step and of the data pipeline.

The command itself (``run_bench``) is :mod:`moma.commands.bench`; this old path still imports
it, warning once.
"""

from moma.bench.run import BenchConfig, run_benchmark
from moma.moved import forwarder

__all__ = ["BenchConfig", "run_benchmark"]
__getattr__ = forwarder(__name__)
