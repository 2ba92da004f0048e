"""The README's Python API example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from toy import needs_fashion_mnist

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- tests/test_readme.py executes the next python block -->"


def readme_block() -> str:
    text = README.read_text()
    assert MARKER in text, "the README lost its tested example"
    m = re.search(r"```python\n(.*?)```", text[text.index(MARKER) :], re.S)
    assert m is not None
    return m.group(1)


@needs_fashion_mnist
def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example writes runs/api/...
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    scope: dict = {}
    try:
        exec(compile(readme_block(), str(README), "exec"), scope)
    finally:
        torch.set_num_threads(before)
    X, rows = scope["X"], scope["rows"]
    assert X.shape == (10000, 64) and X.dtype == np.float32 and np.isfinite(X).all()
    assert len(rows) == 10000 and set(rows["label"]) == set(range(10))
    assert (tmp_path / "runs/api/student/backbone.safetensors").is_file()
    assert scope["run"].global_step == 20
