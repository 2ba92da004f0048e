"""run_eval end to end on synthetic data: result JSONs with the agreed keys."""

import json

import pytest
import torch
from torch.utils.data import TensorDataset
from toy import TINY

from moma.errors import ConfigError
from moma.eval.results import RESULT_KEYS
from moma.eval.run import run_eval


def _datasets():
    g = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.randn(30, 3, 16, 16, generator=g), torch.arange(30) % 3)
    test = TensorDataset(torch.randn(9, 3, 16, 16, generator=g), torch.arange(9) % 3)
    return train, test


def test_run_eval_writes_results(tmp_path):
    kw = {"datasets": _datasets(), "backbone_cfg": TINY}
    with pytest.warns(UserWarning, match="exceeds the bank size"):
        knn = run_eval(
            "knn", "random-init", None, tmp_path, "random init", "baseline", k=[5, 200], **kw
        )
    assert set(knn) == {"knn-k5", "knn-k30"}  # labelled by the k used: 200 clamped to the bank
    assert knn["knn-k30"]["k"] == 30 and knn["knn-k30"]["k_requested"] == 200
    lin = run_eval("linear", "raw-pixels", None, tmp_path, "raw pixels", "baseline", epochs=2, **kw)
    files = sorted(p.name for p in (tmp_path / "results").glob("*.json"))
    assert files == [
        "knn-k30-random_init.json",
        "knn-k5-random_init.json",
        "linear-raw_pixels.json",
    ]
    rec = json.loads((tmp_path / "results" / "linear-raw_pixels.json").read_text())
    assert rec == lin["linear"]
    assert list(rec)[: len(RESULT_KEYS)] == list(RESULT_KEYS)
    assert rec["metric"] == "top1" and rec["backbone_sha256"] is None and rec["role"] == "baseline"
    assert 0 <= rec["value"] <= 100 and rec["epochs"] == 2
    assert not list((tmp_path / "results").glob("*.tmp"))
    with pytest.raises(ConfigError, match="unknown knn option"):
        run_eval("knn", "raw-pixels", None, tmp_path, "x", "baseline", bogus=1, **kw)
    with pytest.raises(ConfigError, match="role"):
        run_eval("knn", "raw-pixels", None, tmp_path, "x", "boss", **kw)


def test_run_eval_on_an_exported_backbone(tmp_path):
    from moma.commands.evaluate import default_name, default_out_dir
    from moma.models.checkpoint import sha256_file
    from moma.models.export import export_backbone

    run = tmp_path / "mae-run"
    vit = TINY.build()
    path = export_backbone(
        vit,
        run / "backbone.safetensors",
        arch="vit_tiny_patch16_224",
        extra={"method": "mae", "global_step": 7},
    )
    assert default_name(str(run)) == "mae-run" and default_out_dir(str(path)) == run
    recs = run_eval("knn", run, None, run, "mae", "teacher", datasets=_datasets(), k=[3])
    rec = recs["knn-k3"]
    assert rec["backbone"] == str(path) and rec["backbone_sha256"] == sha256_file(path)
    assert rec["train_steps"] == 7 and rec["train_method"] == "mae" and rec["features"] == "cls"
    assert (run / "results" / "knn-k3-mae.json").is_file()


def test_knn_and_linear_share_one_feature_extraction(tmp_path, monkeypatch):
    import moma.eval.features as features

    calls = []
    real = features.extract_features
    monkeypatch.setattr(
        features, "extract_features", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    kw = {"datasets": _datasets(), "backbone_cfg": TINY}
    run_eval("knn", "random-init", None, tmp_path, "r", "baseline", k=[5], **kw)
    assert len(calls) == 2  # train + test
    lin = run_eval("linear", "random-init", None, tmp_path, "r", "baseline", epochs=1, **kw)
    assert len(calls) == 2 and lin["linear"]["feature_cache_hits"] == 2
