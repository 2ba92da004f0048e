"""Report: Markdown table, PNG figures, attention maps from synthetic results and logs."""

import json

import torch
from PIL import Image

from moma.models.masking import embed_tokens
from moma.report import build_report, format_table
from moma.report.attention import cls_attention, last_block_attention
from moma.report.gather import find_loss_curves

RESULTS = [
    ("knn-k20", "raw pixels", "baseline", 84.9),
    ("linear", "raw pixels", "baseline", 86.0),
    ("knn-k20", "random init", "baseline", 65.2),
    ("knn-k20", "MAE teacher", "teacher", 70.1),
    ("linear", "MAE teacher", "teacher", 82.3),
    ("knn-k200", "MAE teacher", "teacher", 69.0),
    ("knn-k20", "student | 0.9", "student", 78.8),
    ("finetune", "student | 0.9", "student", 90.5),
]


def _record(protocol, name, role, value, **extra):
    return {
        "metric": "top1",
        "value": value,
        "protocol": protocol,
        "features": "cls",
        "backbone": "raw-pixels" if role == "baseline" else f"/x/{name}.safetensors",
        "backbone_sha256": None if role == "baseline" else "ab" * 32,
        "name": name,
        "role": role,
        "dataset": "fashion_mnist",
        "seed": 0,
        "wall_time_s": 3.5,
        **extra,
    }


def _fake_runs(tmp_path):
    runs = []
    for i, chunk in enumerate((RESULTS[:3], RESULTS[3:6], RESULTS[6:])):
        run = tmp_path / f"run{i}"
        (run / "results").mkdir(parents=True)
        for protocol, name, role, value in chunk:
            extra = (
                {"train_images": 1_200_000, "train_wall_time_s": 600.0} if role == "student" else {}
            )
            rec = _record(protocol, name, role, value, **extra)
            (run / "results" / f"{protocol}-{name[:3]}.json").write_text(json.dumps(rec))
        runs.append(run)
    lines = ["epoch,step,train/loss,lr-AdamW"]
    for step in range(0, 200, 5):
        lines.append(f"0,{step},{2.0 / (1 + step / 20):.4f},")
        lines.append(f"0,{step},,0.001")  # other metrics leave the loss cell empty
    (runs[2] / "metrics.csv").write_text("\n".join(lines) + "\n")
    for version, rows in ((0, "0,0,1.0\n0,10,0.5\n0,20,0.9\n"), (1, "0,20,0.3\n0,30,0.2\n")):
        attempt = runs[1] / "logs" / f"version_{version}"  # a resumed run: two attempts
        attempt.mkdir(parents=True)
        (attempt / "metrics.csv").write_text("epoch,step,train/loss_step\n" + rows)
    img = Image.new("RGB", (64, 32), (120, 30, 200))
    img.save(runs[1] / "reconstructions_epoch1.png")
    return runs


def test_format_table_groups_roles_and_orders_protocols():
    table = format_table([_record(p, n, r, v) for p, n, r, v in RESULTS])
    lines = table.strip().splitlines()
    assert lines[0].startswith(
        "| Role | Model | Features | knn-k20 top-1 (%) | knn-k200 top-1 (%) | linear"
    )
    body = lines[2:]
    assert [ln.split("|")[1].strip() for ln in body] == [
        "baseline",
        "baseline",
        "teacher",
        "student",
    ]
    assert "| raw pixels | cls | 84.9 | – | 86.0 | – |" in body[1]
    assert "student \\| 0.9" in body[3]  # pipes escaped
    assert format_table([]) == "_no results_\n"


def test_build_report_writes_table_and_pngs(tmp_path, tiny_vit):
    runs = _fake_runs(tmp_path)
    out = tmp_path / "report"
    vit = tiny_vit()
    images = torch.randn(3, 3, 16, 16)
    path = build_report(runs, out, title="Test report", backbones={"tiny": vit}, images=images)
    text = path.read_text()
    assert path == out / "report.md"
    assert "# Test report" in text and "| Role | Model | Features |" in text
    assert "| 90.5 |" in text and "Train images" in text and "1.20M" in text and "10.0 min" in text
    pngs = [
        "accuracy.png",
        "loss_curves.png",
        "attention_maps.png",
        "figures/run1-reconstructions_epoch1.png",
    ]
    for rel in pngs:
        assert f"]({rel})" in text
        f = out / rel
        assert f.is_file()
        if rel.startswith("figures"):
            continue
        with Image.open(f) as im:
            assert im.format == "PNG" and im.width > 300
        assert f.stat().st_size > 5_000, rel


def test_manual_attention_reproduces_the_block(tiny_vit):
    vit = tiny_vit().eval()
    x = torch.randn(2, 3, 16, 16)
    weights, tokens_in = last_block_attention(vit, x)
    assert weights.shape == (2, 2, 17, 17)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 2, 17), atol=1e-5)
    last = vit.blocks[-1]
    y = last.norm1(tokens_in)
    v = last.attn.qkv(y).reshape(2, 17, 3, 2, 16).permute(2, 0, 3, 1, 4)[2]
    manual = last.attn.proj((weights @ v).transpose(1, 2).reshape(2, 17, 32))
    with torch.no_grad():
        assert torch.allclose(manual, last.attn(y), atol=1e-5)
        ref = vit.blocks[:-1](vit.norm_pre(embed_tokens(vit, x)))
    assert torch.allclose(tokens_in, ref, atol=1e-6)
    att = cls_attention(vit, x)
    assert att.shape == (2, 4, 4)
    assert torch.allclose(att.sum((1, 2)), weights[:, :, 0, 1:].sum(-1).mean(1), atol=1e-5)


def test_loss_curves_merge_resumed_attempts(tmp_path):
    runs = _fake_runs(tmp_path)
    curves = {c.label: c for c in find_loss_curves(runs)}
    assert set(curves) == {"run1", "run2"}
    assert curves["run1"].steps == [0, 10, 20, 30]
    assert curves["run1"].losses == [1.0, 0.5, 0.3, 0.2]  # the later attempt wins step 20
    assert curves["run2"].column == "train/loss" and len(curves["run2"].steps) == 40


def test_report_without_anything(tmp_path):
    path = build_report([tmp_path / "nothing"], tmp_path / "out")
    assert "_no results_" in path.read_text()
