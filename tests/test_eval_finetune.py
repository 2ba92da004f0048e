"""Fine-tuning: layer-wise lr decay groups and a 2-step run on a tiny ViT."""

import pytest
import torch
from torch.utils.data import TensorDataset

from moma.eval.config import FinetuneConfig
from moma.eval.finetune import finetune_eval, layer_decay_param_groups, prepare_classifier


def _layer_id(name: str, depth: int) -> int:
    if name.startswith(("cls_token", "pos_embed", "patch_embed")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1  # final norm, head


def test_layer_decay_groups_have_expected_rates(tiny_vit):
    model = prepare_classifier(tiny_vit(), 5, "cls", 0.1)
    lr, decay, num_layers = 1e-3, 0.75, 2 + 1
    groups = layer_decay_param_groups(model, lr, weight_decay=0.05, layer_decay=decay)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert set(lr_of) == {id(p) for p in names.values()}
    for name, p in names.items():
        expected = lr * decay ** (num_layers - _layer_id(name, 2))
        assert lr_of[id(p)] == pytest.approx(expected, rel=1e-12), name
        assert wd_of[id(p)] == (0.0 if p.ndim <= 1 or name in ("cls_token", "pos_embed") else 0.05)
    assert {round(g["lr"] / lr, 6) for g in groups} == {round(decay**i, 6) for i in range(4)}


def test_two_step_finetune_runs_and_leaves_backbone_alone(tiny_vit):
    vit = tiny_vit()
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.randn(16, 3, 16, 16, generator=g), torch.arange(16) % 4)
    test = TensorDataset(torch.randn(8, 3, 16, 16, generator=g), torch.arange(8) % 4)
    cfg = FinetuneConfig(batch_size=8, max_steps=2, warmup_epochs=0.5, drop_path=0.1)
    res = finetune_eval(vit, train, test, num_classes=4, cfg=cfg, device="cpu")
    assert res.steps == 2 and res.images == 16 and len(res.losses) == 2
    assert 0.0 <= res.top1 <= 100.0
    assert all(torch.isfinite(torch.tensor(res.losses)))
    assert all(torch.equal(before[k], v) for k, v in vit.state_dict().items())
    assert vit.num_classes == 0
