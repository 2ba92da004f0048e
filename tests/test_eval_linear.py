"""Linear probe: learns separable features, caches features, leaves the backbone untouched."""

import torch
from torch.utils.data import TensorDataset

from moma.eval.config import LinearConfig
from moma.eval.linear import linear_eval, train_linear_probe


def test_probe_separates_linearly_separable_features():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 4

    def sample(n):
        y = torch.arange(n) % 4
        return centers[y] + 0.3 * torch.randn(n, 16, generator=g), y

    xtr, ytr = sample(400)
    xte, yte = sample(200)
    cfg = LinearConfig(epochs=10, train_batch_size=64, lr=0.1, warmup_epochs=1)
    res = train_linear_probe(xtr, ytr, xte, yte, num_classes=4, cfg=cfg)
    assert res.top1 >= 99.0 and res.train_top1 >= 99.0
    assert res.losses[-1] < res.losses[0]


def test_linear_eval_caches_and_keeps_backbone_bit_identical(tmp_path, tiny_vit):
    vit = tiny_vit()
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    train = TensorDataset(torch.randn(24, 3, 16, 16, generator=g), torch.arange(24) % 3)
    test = TensorDataset(torch.randn(12, 3, 16, 16, generator=g), torch.arange(12) % 3)
    cfg = LinearConfig(epochs=2, train_batch_size=8, precision="32")
    parts = {"backbone": "tiny", "dataset": "synthetic", "img_size": 16}
    first = linear_eval(vit, train, test, cfg, 3, "cpu", tmp_path, parts)
    second = linear_eval(vit, train, test, cfg, 3, "cpu", tmp_path, parts)
    assert first.cache_hits == 0 and second.cache_hits == 2
    assert len(list(tmp_path.glob("*.pt"))) == 2
    assert first.top1 == second.top1  # same features, same seed
    after = vit.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in vit.parameters())
