"""Weighted cosine kNN classification (DINO-style, docs/DESIGN.md, section 4).

Features are L2-normalised; each query takes its k most similar bank vectors
(ties broken towards the lower bank index), weights each vote by ``exp(sim / T)`` and
predicts the class with the highest summed weight (ties -> lower class id). Queries and
the bank are processed in chunks, and the result does not depend on the chunk sizes.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moma.eval.cache import split_features
from moma.eval.config import KnnConfig
from moma.eval.features import default_device

log = logging.getLogger(__name__)


@dataclass
class KnnResult:
    """Top-1 accuracy (percent) and predictions ``[N]`` per k (after clamping to the bank)."""

    top1: dict[int, float]
    predictions: dict[int, Tensor]
    requested_k: dict[int, int] = field(default_factory=dict)  # k asked -> k used


def _merge_topk(
    best_v: Tensor, best_i: Tensor, sims: Tensor, offset: int, k: int
) -> tuple[Tensor, Tensor]:
    """The k most similar of ``[running candidates, new bank chunk]``, ties to lower index.

    Args:
        best_v: ``[Q, R]`` running candidate similarities, ``best_i [Q, R]`` their global bank
            indices, ascending along each row and all below ``offset``.
        sims: ``[Q, B]`` similarities to bank rows ``offset .. offset + B - 1``.

    Returns:
        ``(values [Q, k'], indices [Q, k'])`` with ``k' = min(k, R + B)``, in ascending index
        order, so the same neighbour set always comes out in the same order.
    """
    r = best_v.shape[1]
    cand = torch.cat([best_v, sims], dim=1) if r else sims  # [Q, R + B], ascending index
    k = min(k, cand.shape[1])
    vals, pos = cand.topk(k, dim=1)  # [Q, k]
    idx = pos - r + offset
    if r:
        from_best = pos < r
        idx = torch.where(from_best, best_i.gather(1, pos.clamp(max=r - 1)), idx)
    # topk's choice among values tied with the k-th is unspecified: redo the ambiguous rows.
    kth = vals[:, -1:]
    ambiguous = (cand == kth).sum(dim=1) > (vals == kth).sum(dim=1)  # [Q]
    if bool(ambiguous.any()):
        rows = ambiguous.nonzero().squeeze(1)
        c = cand[rows]  # [A, R + B]
        c_idx = torch.cat(
            [
                best_i[rows],
                torch.arange(offset, offset + sims.shape[1], device=c.device).expand(len(rows), -1),
            ],
            dim=1,
        )
        greater, equal = c > kth[rows], c == kth[rows]
        need = k - greater.sum(dim=1, keepdim=True)  # ties admitted, lowest index first
        chosen = greater | (equal & (equal.cumsum(dim=1) <= need))  # exactly k per row
        vals[rows] = c[chosen].view(len(rows), k)
        idx[rows] = c_idx[chosen].view(len(rows), k)
    order = idx.argsort(dim=1)
    return vals.gather(1, order), idx.gather(1, order)


def _similarities(queries: Tensor, bank: Tensor, sim_dtype: torch.dtype) -> Tensor:
    """Cosine similarities of normalised vectors ``[Q, D] x [M, D] -> float32 [Q, M]``."""
    return (queries.to(sim_dtype) @ bank.to(sim_dtype).T).float()


def knn_classify(
    bank_feats: Tensor,
    bank_labels: Tensor,
    query_feats: Tensor,
    ks: list[int] | tuple[int, ...] = (20, 200),
    temperature: float = 0.07,
    num_classes: int | None = None,
    query_chunk: int = 1024,
    bank_chunk: int | None = None,
    sim_dtype: str = "float64",
) -> dict[int, Tensor]:
    """Predict a class for every query by weighted cosine kNN over the bank.

    Args:
        bank_feats: ``[M, D]`` training features (the memory bank).
        bank_labels: ``[M]`` their labels.
        query_feats: ``[N, D]`` test features.
        ks: neighbour counts; a k larger than the bank is clamped (with a warning).
        temperature: vote weight ``exp(sim / temperature)``.
        num_classes: number of classes (default: ``max(bank_labels) + 1``).
        query_chunk: queries per chunk.
        bank_chunk: bank rows per chunk (``None`` = whole bank).
        sim_dtype: ``float64`` (chunking-independent) or ``float32``.

    Returns:
        ``{effective k: predictions int64 [N]}``.
    """
    m = bank_feats.shape[0]
    if m == 0:
        raise ValueError("kNN needs a non-empty bank")
    eff = _clamp_ks(ks, m)
    kmax = max(eff.values())
    dtype = {"float64": torch.float64, "float32": torch.float32}[sim_dtype]
    c = int(num_classes if num_classes is not None else int(bank_labels.max()) + 1)
    bank = F.normalize(bank_feats.float(), dim=1)  # [M, D]
    queries = F.normalize(query_feats.float(), dim=1)  # [N, D]
    bank_labels = bank_labels.long().to(bank.device)
    bank_chunk = bank_chunk or m
    preds: dict[int, list[Tensor]] = {k: [] for k in set(eff.values())}
    for q0 in range(0, queries.shape[0], query_chunk):
        q = queries[q0 : q0 + query_chunk]  # [Q, D]
        best_v = q.new_empty(q.shape[0], 0)  # running top-k similarities [Q, <=kmax]
        best_i = torch.empty(q.shape[0], 0, dtype=torch.long, device=q.device)
        for b0 in range(0, m, bank_chunk):
            sims = _similarities(q, bank[b0 : b0 + bank_chunk], dtype)  # [Q, B]
            best_v, best_i = _merge_topk(best_v, best_i, sims, b0, kmax)
        # Neighbours ranked by (similarity desc, index asc); the first k are the k nearest.
        order = torch.sort(-best_v, dim=1, stable=True).indices
        best_v, best_i = best_v.gather(1, order), best_i.gather(1, order)
        weights = (best_v / temperature).exp()  # [Q, kmax]
        labels = bank_labels[best_i]  # [Q, kmax]
        for k in preds:
            # Sum the k votes in a canonical (ascending index) order.
            v, i = weights[:, :k], best_i[:, :k]
            lab = labels[:, :k].gather(1, i.argsort(dim=1))
            v = v.gather(1, i.argsort(dim=1))
            scores = torch.zeros(q.shape[0], c, dtype=v.dtype, device=q.device)
            scores.scatter_add_(1, lab, v)  # [Q, C]
            preds[k].append(scores.argmax(dim=1))
    return {k: torch.cat(p) for k, p in preds.items()}


def _clamp_ks(ks: list[int] | tuple[int, ...], bank_size: int) -> dict[int, int]:
    """``{k asked: k used}``; k above the bank size is clamped with a warning."""
    out: dict[int, int] = {}
    for k in ks:
        if int(k) < 1:
            raise ValueError(f"kNN k must be >= 1, got {k}")
        if k > bank_size:
            msg = f"kNN k={k} exceeds the bank size {bank_size}; using k={bank_size}"
            warnings.warn(msg, stacklevel=3)
            log.warning(msg)
        out[int(k)] = min(int(k), bank_size)
    return out


def knn_accuracy(
    bank_feats: Tensor,
    bank_labels: Tensor,
    query_feats: Tensor,
    query_labels: Tensor,
    cfg: KnnConfig | None = None,
    num_classes: int | None = None,
) -> KnnResult:
    """kNN predictions and top-1 accuracy (percent) for every k of ``cfg``, keyed by the k asked."""
    cfg = cfg or KnnConfig()
    eff = _clamp_ks(cfg.k, bank_feats.shape[0])
    preds = knn_classify(
        bank_feats,
        bank_labels,
        query_feats,
        ks=list(eff.values()),
        temperature=cfg.temperature,
        num_classes=num_classes,
        query_chunk=cfg.query_chunk,
        bank_chunk=cfg.bank_chunk,
        sim_dtype=cfg.sim_dtype,
    )
    y = query_labels.long().cpu()
    top1, by_k = {}, {}
    for k_asked, k_used in eff.items():
        p = preds[k_used].cpu()
        by_k[k_asked] = p
        top1[k_asked] = 100.0 * float((p == y).float().mean())
    return KnnResult(top1=top1, predictions=by_k, requested_k=dict(eff))


def knn_eval(
    model: nn.Module,
    train_data,
    test_data,
    cfg: KnnConfig | None = None,
    num_classes: int | None = None,
    device: str | torch.device | None = None,
    cache_dir: Path | None = None,
    cache_parts: dict | None = None,
) -> KnnResult:
    """Extract (or read cached) frozen features of both splits and run :func:`knn_accuracy`.

    The train split is the memory bank. Features and the similarity search live on
    ``device`` (default: CUDA if available). ``cache_dir``/``cache_parts`` as in
    :func:`moma.eval.cache.split_features` (shared with the linear probe).
    """
    cfg = cfg or KnnConfig()
    dev = default_device(device)
    splits, _ = split_features(
        model, {"train": train_data, "test": test_data}, features=cfg.features,
        batch_size=cfg.batch_size, precision=cfg.precision, device=dev,
        cache_dir=cache_dir, cache_parts=cache_parts,
    )  # fmt: skip
    (bank, bank_y), (queries, query_y) = splits["train"], splits["test"]
    # The similarity search runs on the same device (much faster on a GPU).
    return knn_accuracy(bank.to(dev), bank_y.to(dev), queries.to(dev), query_y, cfg, num_classes)
