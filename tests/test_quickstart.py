"""`moma quickstart --budget smoke` end to end (the CI-sized run of the main job)."""

import json
import subprocess
import sys

from toy import needs_fashion_mnist

MODELS = ["raw-pixels", "random-init", "mae", "mocov3", "moma_mocov3_to_mae",
          "moma_mae_to_mocov3", "moma_both_to_random"]  # fmt: skip


@needs_fashion_mnist
def test_quickstart_smoke_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "qs"
    cmd = [sys.executable, "-m", "moma.cli.main", "quickstart", "--budget", "smoke",
           "--out", str(out), "--progress_bar", "false"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    stages = json.loads((out / "stages.json").read_text())
    assert all(rec["done"] for rec in stages.values())
    assert stages["mae"]["steps"] == 30 and stages["moma_both_to_random"]["steps"] == 20
    # distillation gets fewer images than the teachers' pre-training (the paper's claim)
    assert stages["moma_mocov3_to_mae"]["images_processed"] < stages["mae"]["images_processed"]
    report = (out / "report.md").read_text()
    for name in MODELS:
        assert name in report, name
    assert "## Stages (compute)" in report
    # the teachers' targets were computed once, in their own stage, and shared
    assert stages["targets"]["teachers"] == ["mocov3", "mae"]
    assert stages["targets"]["images_processed"] == 2 * 4096  # 2 teachers x 1 view
    store_folders = {p.parent for p in (out / "targets").glob("*/meta.json")}
    assert len(store_folders) == 2
    used = {
        t["folder"]
        for name in MODELS[4:]
        for t in json.loads((out / name / "target_cache.json").read_text())["teachers"]
    }
    assert used == {str(f) for f in store_folders}
    for name in MODELS[4:]:
        summary = json.loads((out / name / "target_cache.json").read_text())
        assert all(t["built_chunks"] == 0 for t in summary["teachers"])  # reused, not rebuilt
    # the verdict sits right under the results table, before the maps and figures
    verdict = report.index("### Did the students beat their teachers?")
    assert report.index("## Results") < verdict < report.index("feature_maps.png")
    assert report.count("**moma_") >= 3  # one sentence per mechanism
    results = {p.name for p in (out / "eval" / "results").glob("*.json")}
    assert len(results) == len(MODELS) * 3  # knn-k20, knn-k200, linear
    for png in ("accuracy.png", "loss_curves.png", "attention_maps.png", "feature_maps.png"):
        assert (out / png).stat().st_size > 5000
    # the t-SNE map of every model sits next to the table, from the evaluation's cache
    assert report.index("feature_maps.png") < report.index("## Figures")
    assert "500 test images" in report and "from the evaluation's feature cache;" in report
    # a whole-run estimate before the first stage, refined after each stage
    assert "[eta] these stages took" in r.stderr and "so far, about" in r.stderr
    table = r.stdout
    assert "| baseline | raw-pixels |" in table
    # the printed table holds real accuracies (raw pixels on Fashion-MNIST: ~80%)
    rec = json.loads((out / "eval" / "results" / "knn-k20-raw-pixels.json").read_text())
    assert 60 < rec["value"] < 95

    # Re-running the same command skips every finished stage.
    r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert r2.stderr.count("done earlier, skipped") == 7  # 2 teachers, targets, 3 students, eval
    assert "[eta] these stages took" in r2.stderr and "so far" not in r2.stderr  # report only
