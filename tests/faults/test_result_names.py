"""Result files say what was measured and never replace another model's result.

Before the fix, kNN with k=200 on a 48-image bank (k clamped to 48) was written as
``knn-k200``; ``--name a/b`` and ``--name a_b`` wrote the same result file (the second run
silently replaced the first model's result); and ``moma report`` on a result JSON whose
value is a string ended in a traceback.
"""

from __future__ import annotations

import json

from faults.runs import TRACEBACK, knn_argv, one_line_error, two_classes
from moma.cli.main import main


def test_a_clamped_k_is_labelled_by_the_k_used(tmp_path):
    data, out = two_classes(tmp_path / "data"), tmp_path / "eval"  # a 16-image bank
    assert main(knn_argv(data, out, "--knn.k=[1,200]")) == 0
    names = sorted(p.name for p in (out / "results").glob("*.json"))
    assert names == ["knn-k1-raw-pixels.json", "knn-k16-raw-pixels.json"]
    rec = json.loads((out / "results" / "knn-k16-raw-pixels.json").read_text())
    assert rec["protocol"] == "knn-k16" and rec["k"] == 16 and rec["k_requested"] == 200


def test_names_that_share_a_file_name_do_not_replace_each_other(tmp_path, capsys):
    data, out = two_classes(tmp_path / "data"), tmp_path / "eval"
    assert main(knn_argv(data, out, "--knn.k=[1]", "--name=a_b")) == 0
    path = out / "results" / "knn-k1-a_b.json"
    first = path.read_text()
    capsys.readouterr()
    one_line_error(capsys, main(knn_argv(data, out, "--knn.k=[1]", "--name=a/b")), "'a_b'", "'a/b'")
    assert path.read_text() == first
    assert main(knn_argv(data, out, "--knn.k=[1]", "--name=a_b")) == 0  # the same name: fine


def test_report_skips_a_record_whose_value_is_not_a_number(tmp_path, capsys, caplog):
    results = tmp_path / "runs" / "x" / "results"
    results.mkdir(parents=True)
    good = {"protocol": "knn-k20", "value": 71.5, "name": "good", "dataset": "d"}
    (results / "knn-k20-good.json").write_text(json.dumps(good))
    for i, value in enumerate(["12.5", None, [1], float("nan")]):
        bad = {**good, "name": f"bad{i}", "value": value}
        (results / f"knn-k20-bad{i}.json").write_text(json.dumps(bad))
    (results / "knn-k20-list.json").write_text("[1, 2]")
    rc = main(["report", f"--runs=[{tmp_path / 'runs'}]", f"--out_dir={tmp_path / 'rep'}",
               "--attention=false"])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0 and TRACEBACK not in captured.err
    assert "| good |" in captured.out and "bad" not in captured.out
    skipped = [r.getMessage() for r in caplog.records if "not a result record" in r.getMessage()]
    assert len(set(skipped)) == 5 and any("'value' is '12.5'" in m for m in skipped)
