"""``moma bench``: images/s, FLOPs and FLOP/s of every training step and of the data pipeline."""

from moma.bench.run import BenchConfig, run_bench

__all__ = ["BenchConfig", "run_bench"]
