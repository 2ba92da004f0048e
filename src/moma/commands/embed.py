"""``moma embed``: the embedding of every image of a dataset (``.npy`` + ``.csv`` + ``.json``).

The options (:class:`~moma.eval.embed.EmbedConfig`) and the resumable writer
(:func:`~moma.eval.embed.write_embeddings`) are the eval floor's; the command checks the
options once and runs the writer.
"""

from __future__ import annotations

from moma.eval.embed import EmbedConfig, EmbedResult, write_embeddings
from moma.validation import prepare_run

__all__ = ["EmbedConfig", "EmbedResult", "run_embed"]


def run_embed(cfg: EmbedConfig) -> EmbedResult:
    """``moma embed``: write ``OUT.npy`` + ``OUT.csv`` + ``OUT.json`` (resumable; see
    :mod:`moma.eval.embed`)."""
    cfg = prepare_run(cfg)  # paths expanded, values checked (split, batch size, ...)
    return write_embeddings(cfg)
