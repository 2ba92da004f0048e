"""Smoke test of the ``moma bench`` harness on a tiny model (speeds are never asserted)."""

from __future__ import annotations

import json

import pytest
import torch

from moma.bench import BenchConfig
from moma.bench.flops import count_flops
from moma.commands.bench import run_bench
from moma.errors import ConfigError


@pytest.fixture
def one_thread():
    """Tiny steps are dispatch-bound: one thread keeps them fast on a busy machine."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_bench_tiny_writes_table_and_json(tmp_path, one_thread, capsys):
    cfg = BenchConfig(
        sizes="tiny",
        precision="both",
        steps=1,
        warmup=0,
        out_dir=str(tmp_path / "bench"),
        threads=1,
        mask_ratios=[0.0, 0.9],
        batch_sweep=[4],
        jpeg_images=8,
        data_workers=0,
        matmul_size=64,
        cache_build_batch=16,
    )
    result = run_bench(cfg)
    out = tmp_path / "bench"
    saved = json.loads((out / "bench.json").read_text())
    md = (out / "bench.md").read_text()
    assert md == capsys.readouterr().out  # the table is printed as written
    assert saved["command"].startswith("moma bench --sizes tiny")

    keys = {(r["precision"], r["key"]) for r in result["rows"]}
    for prec in ("fp32", "bf16"):
        assert (prec, f"peak:{prec}:start") in keys and (prec, f"peak:{prec}:end") in keys
        for key in ("teacher:ViT 2x32/4", "student:0", "student:0.9", "moma:1t", "moma:2t",
                    "moma-teachers:2t", "moma-student:2t", "mae", "mocov3", "batch:4",
                    "cache:cached:ViT 2x32/4", "cache:live:ViT 2x32/4", "cache:mae:ViT 2x32/4",
                    "cache:build"):  # fmt: skip
            assert (prec, key) in keys, key
    for key in ("stream", "workers", "device", "ram"):
        assert ("-", f"data:jpeg:{key}") in keys, key
    assert ("-", "data:shards:workers") in keys
    streamed = [r for r in result["rows"] if r["key"] == "data:jpeg:workers"]
    assert streamed[0]["images_per_cpu_s"] > 0 and "img per CPU-second" in md
    for r in result["rows"]:
        assert r["time"]["ms_median"] > 0
        if r["group"] not in ("peak", "data"):
            assert r["flops_per_image"] > 0 and r["images_per_s"]["median"] > 0
    targets = {(t["precision"], t["target"]) for t in saved["targets"]}
    assert ("bf16", "MOMA step 2t vs sum of parts") in targets
    assert ("fp32", "student step speed-up, mask 0.9 vs 0") in targets
    assert ("bf16", "cached MOMA step (ViT 2x32/4) vs an MAE step") in targets
    methods = {e["method"] for e in saved["epochs"] if e["precision"] == "bf16"}
    assert {"MOMA, 1 teacher", "MAE", "MoCo v3"} <= methods
    assert "## Targets" in md and "| MOMA step, 2 teachers" in md


def test_flops_count_attention_on_cpu(tiny_vit):
    vit = tiny_vit(depth=1)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        total = count_flops(lambda: vit.forward_features(x))
    tokens, dim = 17, 32
    linear = 2 * 2 * tokens * (dim * 3 * dim + dim * dim + 2 * dim * 4 * dim)
    attention = 2 * 2 * 2 * tokens * tokens * dim  # q @ k^T and attn @ v
    patch_embed = 2 * 2 * 16 * dim * 3 * 16
    assert total == linear + attention + patch_embed


def test_bench_refuses_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="sizes"):
        run_bench(BenchConfig(sizes="huge", out_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="precision"):
        run_bench(BenchConfig(sizes="tiny", precision="fp8", out_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="groups"):
        run_bench(BenchConfig(sizes="tiny", groups=["nope"], out_dir=str(tmp_path)))


def test_cli_parses_bench_sizes(capsys):
    from moma.cli.main import main

    assert main(["bench", "--sizes", "224", "--device", "cpu", "--print-config"]) == 0
    assert "sizes: '224'" in capsys.readouterr().out


def test_bench_compile_group_times_eager_and_compiled_steps(tmp_path, one_thread):
    """The compile group: the same steps eager and with compiled blocks (the cheap backend
    here: inductor takes minutes on this CPU)."""
    cfg = BenchConfig(
        sizes="tiny",
        precision="fp32",
        steps=1,
        warmup=1,
        out_dir=str(tmp_path / "bench"),
        threads=1,
        groups=["compile"],
        matmul_size=64,
        compile_backend="aot_eager",
    )
    keys = {r["key"] for r in run_bench(cfg)["rows"]}
    for what in ("moma:2t", "student", "teacher", "mocov3"):
        assert {f"compile:{what}:eager", f"compile:{what}:compiled"} <= keys, what
