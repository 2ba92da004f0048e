"""Weighted cosine kNN: exact predictions on a hand-made set, clamping, chunk invariance."""

import math

import pytest
import torch

from moma.eval.config import KnnConfig
from moma.eval.knn import knn_accuracy, knn_classify


def _unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_known_neighbours_exact_predictions():
    # Bank on the unit circle: class 0 near 0 deg, class 1 near 90 deg, class 2 near 180 deg.
    bank = torch.tensor([_unit(a) for a in (0, 10, 80, 90, 100, 180, 185)])
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    queries = torch.tensor([_unit(5), _unit(95), _unit(178), _unit(45.5)]) * 3.0  # scale: cosine
    preds = knn_classify(bank, labels, queries, ks=(1, 3), temperature=0.07)
    assert preds[1].tolist() == [0, 1, 2, 1]  # 45.5 deg: nearest is 80 (class 1)
    # k=3 at 45.5 deg: 80 (class 1, 34.5 deg away), 10 (class 0, 35.5), 90 (class 1, 44.5):
    # class 1 gets two of the three votes. At 5, 95, 178 all three neighbours agree.
    assert preds[3].tolist() == [0, 1, 2, 1]

    res = knn_accuracy(bank, labels, queries, torch.tensor([0, 1, 2, 0]), KnnConfig(k=[1, 3]))
    assert res.top1[1] == pytest.approx(75.0)
    assert res.predictions[1].tolist() == [0, 1, 2, 1]


def test_vote_weighting_beats_majority():
    # One class-0 neighbour at sim 1 outweighs two class-1 neighbours at sim 0.5:
    # e^(1/.07) >> 2 e^(.5/.07).
    bank = torch.tensor([[1.0, 0.0], _unit(60), _unit(-60)])
    labels = torch.tensor([0, 1, 1])
    preds = knn_classify(bank, labels, torch.tensor([[1.0, 0.0]]), ks=(3,), temperature=0.07)
    assert preds[3].tolist() == [0]
    # With a huge temperature the vote is a plain majority.
    preds = knn_classify(bank, labels, torch.tensor([[1.0, 0.0]]), ks=(3,), temperature=1e6)
    assert preds[3].tolist() == [1]


def test_k_larger_than_bank_is_clamped_with_warning():
    bank = torch.randn(5, 4)
    labels = torch.tensor([0, 1, 1, 1, 0])
    queries = torch.randn(3, 4)
    with pytest.warns(UserWarning, match="exceeds the bank size 5"):
        res = knn_accuracy(
            bank, labels, queries, torch.zeros(3, dtype=torch.long), KnnConfig(k=[20])
        )
    assert res.requested_k == {20: 5}
    direct = knn_classify(bank, labels, queries, ks=(5,), temperature=0.07)
    assert torch.equal(res.predictions[20], direct[5])


def test_ties_broken_towards_lower_index():
    # Four identical bank vectors, k=2: the neighbours must be indices 0 and 1 (class 0, 1),
    # so the class scores tie and argmax picks class 0; then k=2 over [1, 1, 0, 0] gives 1.
    bank = torch.ones(4, 3)
    q = torch.ones(1, 3)
    assert knn_classify(bank, torch.tensor([0, 1, 2, 2]), q, ks=(2,))[2].tolist() == [0]
    assert knn_classify(bank, torch.tensor([1, 1, 0, 0]), q, ks=(2,))[2].tolist() == [1]


@pytest.mark.parametrize("sim_dtype", ["float64"])
def test_chunked_equals_unchunked_exactly(sim_dtype):
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(700, 24, generator=g)
    bank[350:360] = bank[10]  # exact duplicates -> tied similarities
    labels = torch.randint(0, 7, (700,), generator=g)
    queries = torch.randn(230, 24, generator=g)
    queries[:5] = bank[10]
    kw = {"ks": (1, 20, 200), "temperature": 0.07, "num_classes": 7, "sim_dtype": sim_dtype}
    full = knn_classify(bank, labels, queries, query_chunk=10_000, bank_chunk=None, **kw)
    for qc, bc in [(1, None), (50, 128), (115, 97), (100, 333), (230, 699)]:
        part = knn_classify(bank, labels, queries, query_chunk=qc, bank_chunk=bc, **kw)
        for k in full:
            assert torch.equal(full[k], part[k]), (qc, bc, k)
