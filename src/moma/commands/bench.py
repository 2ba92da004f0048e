"""``moma bench``: throughput and FLOP/s of the training steps (:mod:`moma.bench`)."""

from __future__ import annotations

from moma.bench.run import BenchConfig, run_benchmark
from moma.validation import prepare_run

__all__ = ["BenchConfig", "run_bench"]


def run_bench(cfg: BenchConfig) -> dict:
    """Run the benchmark, write ``OUT/bench.md`` and ``OUT/bench.json``, print the table.

    Returns the result: ``command``, ``machine``, ``config``, ``rows`` (one per case),
    ``targets`` and ``epochs``.
    """
    cfg = prepare_run(cfg)  # checked once (the bench's own rules are BenchConfig.check)
    return run_benchmark(cfg)
