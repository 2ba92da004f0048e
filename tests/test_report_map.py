"""The report's 2-D feature maps: from the evaluation's feature cache, else computed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from toy import TINY

from moma.data import DataConfig
from moma.eval.run import run_eval
from moma.models.export import export_backbone
from moma.report import build_report
from moma.report.feature_map import map_inputs, subsample
from moma.report.gather import load_results


@pytest.fixture
def evaluated(tmp_path) -> tuple[Path, DataConfig]:
    """A 3-class folder, a tiny student and raw pixels evaluated with kNN (features cached)."""
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 8), ("val", 10)):
        for c in ("ankle", "bag", "coat"):
            folder = tmp_path / "imgs" / split / c
            folder.mkdir(parents=True)
            for i in range(n):
                px = torch.randint(0, 256, (16, 16, 3), generator=g, dtype=torch.uint8)
                Image.fromarray(px.numpy()).save(folder / f"{i}.png")
    torch.manual_seed(0)
    backbone = export_backbone(TINY.build(), tmp_path / "student" / "backbone.safetensors")
    data = DataConfig(dataset=str(tmp_path / "imgs"), img_size=16)
    out = tmp_path / "eval"
    run_eval("knn", backbone, data, out, "student", "student", k=[5], precision="32")
    run_eval("knn", "raw-pixels", data, out, "raw-pixels", "baseline", k=[5], precision="32")
    return out, data


def test_report_draws_maps_from_the_feature_cache(evaluated, tmp_path, monkeypatch):
    out, data = evaluated
    import moma.eval.features

    def no_extraction(*a, **k):
        raise AssertionError("features should come from the evaluation's cache")

    monkeypatch.setattr(moma.eval.features, "extract_features", no_extraction)
    report = build_report([out], tmp_path / "report", data_cfg=None, map_points=20)
    md = report.read_text()
    assert (tmp_path / "report" / "feature_maps.png").stat().st_size > 0
    table_end = md.index("## Results")
    assert (
        table_end < md.index("feature_maps.png") < md.find("## Figures") or "## Figures" not in md
    )
    assert "20 test images" in md and "from the evaluation's feature cache;" in md
    with Image.open(tmp_path / "report" / "feature_maps.png") as im:
        assert im.width > im.height  # two panels side by side


def test_maps_computed_without_a_cache_show_the_same_images(evaluated):
    out, data = evaluated
    rows = load_results([out])
    cached = {m.name: m for m in map_inputs(rows, [out], data, points=20)}
    for path in (out / "cache" / "features").glob("*.pt"):
        path.unlink()
    computed = {m.name: m for m in map_inputs(rows, [out], data, points=20)}
    assert set(cached) == set(computed) == {"student", "raw-pixels"}
    for name in cached:
        assert cached[name].source == "feature cache" and computed[name].source == "computed"
        np.testing.assert_array_equal(cached[name].labels, computed[name].labels)
        np.testing.assert_allclose(cached[name].feats, computed[name].feats, atol=1e-4)
    assert map_inputs(rows, [out], None, points=20) == []  # no cache, no data: no map


def test_subsample_is_fixed_and_sorted():
    a, b = subsample(10000, 2000), subsample(10000, 2000)
    assert np.array_equal(a, b) and len(a) == 2000 and np.all(np.diff(a) > 0)
    assert np.array_equal(subsample(50, 2000), np.arange(50))
