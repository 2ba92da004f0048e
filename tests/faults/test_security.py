"""Files and paths from users never run code: payload pickles are refused, paths stay literal."""

from __future__ import annotations

import ast
import os
import pickle
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from faults.runs import REPO, TRACEBACK, error_lines
from moma.cli.main import main
from moma.errors import CheckpointError
from moma.models.checkpoint import load_backbone
from moma.train import last_checkpoint


class Payload:
    """Unpickling this runs ``touch MARKER`` through a shell (what an attacker would ship)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def evil_checkpoint(path: Path, marker: Path, legacy: int = 0) -> Path:
    """A file laid out like a moma training checkpoint, with a payload inside."""
    obj = {
        "state_dict": {"student.cls_token": torch.zeros(1, 1, 32)},
        "moma": {"format_version": 1, "method": "moma", "payload": Payload(marker)},
        "global_step": 1,
    }
    if legacy:  # a plain pickle stream (protocol ``legacy``), not torch's zip container
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=legacy)
    else:
        torch.save(obj, path)
    return path


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    """``(payload checkpoint, marker)``; the payload is checked to be live."""
    marker = tmp_path / "PWNED"
    live = evil_checkpoint(tmp_path / "live.ckpt", tmp_path / "LIVE")
    torch.load(live, weights_only=False)  # control: an unsafe load runs the payload
    assert (tmp_path / "LIVE").exists(), "the payload does not work: the test proves nothing"
    return evil_checkpoint(tmp_path / "evil.ckpt", marker), marker


def refused(err: str, path: Path) -> None:
    assert TRACEBACK not in err
    (line,) = error_lines(err)
    assert f"{path}: refused to load: the file needs arbitrary unpickling of posix.system" in line


@pytest.mark.parametrize(
    "legacy, why",
    [
        (0, r"refused to load: .* posix\.system"),
        (2, r"refused to load: the file needs arbitrary unpickling of "),
        # protocol 4 framing is beyond torch's weights-only unpickler: refused as unreadable
        (4, r"not a valid checkpoint"),
    ],
    ids=["torch-zip", "pickle-protocol-2", "pickle-protocol-4"],
)
def test_payload_refused_by_load_backbone(tmp_path, legacy, why):
    marker = tmp_path / "PWNED"
    path = evil_checkpoint(tmp_path / "evil.pth", marker, legacy=legacy)
    for fmt in ("auto", "moma", "timm", "mae"):
        with pytest.raises(CheckpointError, match=why):
            load_backbone(path, format=fmt)
    assert not marker.exists()


def test_payload_refused_by_export_and_disguised_as_an_export(evil, tmp_path, capsys):
    path, marker = evil
    rc = main(["export", f"--checkpoint={path}", f"--out={tmp_path}/out.safetensors"])
    assert rc == 2
    refused(capsys.readouterr().err, path)
    disguised = tmp_path / "backbone.safetensors"  # a pickle named like an export
    shutil.copy(path, disguised)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_backbone(disguised)
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_payload_refused_as_resume_teacher_and_student_init(evil, tmp_path, distill, capsys):
    path, marker = evil
    auto = tmp_path / "auto"  # found as the run folder's last.ckpt (auto-resume)
    last_checkpoint(auto).parent.mkdir(parents=True)
    shutil.copy(path, last_checkpoint(auto))
    cases = {
        last_checkpoint(auto): distill(auto),
        path: distill(tmp_path / "a", extra=[f"--trainer.resume={path}"]),
    }
    for target, args in cases.items():
        assert main(args) == 2
        err = capsys.readouterr().err
        refused(err, target)
        assert "--trainer.resume never" in err
    assert main(distill(tmp_path / "b", teacher=path)) == 2
    refused(capsys.readouterr().err, path)
    assert main(distill(tmp_path / "c", extra=[f"--student.init={path}"])) == 2
    refused(capsys.readouterr().err, path)
    assert not marker.exists()


def test_paths_from_configs_are_not_interpreted_by_a_shell(
    tmp_path, teacher, data_args, distill, monkeypatch
):
    """Shell syntax in the output folder, a teacher path and a config file path stays literal."""
    monkeypatch.chdir(tmp_path)  # a shell would create the markers here
    tricky = "x $(touch M1) `touch M2` ; touch M3 && touch M4 | touch M5 'q\" *"
    own = tmp_path / f"teacher {tricky}.safetensors"
    shutil.copy(teacher, own)
    shutil.copy(teacher.with_suffix(".json"), own.with_suffix(".json"))
    cfg = tmp_path / f"cfg {tricky}.yaml"
    cfg.write_text("moma:\n  mask_ratio: 0.5\n")
    out = tmp_path / f"run {tricky}"
    assert main([*distill(out, teacher=own, max_steps=2), f"--config={cfg}"]) == 0
    assert last_checkpoint(out).exists()  # the folder was taken literally
    assert not [p.name for p in tmp_path.iterdir() if re.fullmatch(r"M\d", p.name)]
    ck = torch.load(last_checkpoint(out), weights_only=True)
    assert ck["moma"]["teachers"][0]["path"] == str(own)
    assert ck["moma"]["config"]["moma"]["mask_ratio"] == 0.5


def _dangerous_calls(path: Path) -> list[str]:
    """Calls in ``path`` that run a shell, evaluate code or unpickle without restrictions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        kwargs = {k.arg: ast.unparse(k.value) for k in node.keywords if k.arg}
        if (
            name in {"eval", "exec", "os.system", "os.popen", "pickle.load", "pickle.loads"}
            or name.endswith(("yaml.load", "yaml.unsafe_load"))
            or kwargs.get("shell") == "True"
            or (name.endswith("torch.load") and kwargs.get("weights_only") != "True")
        ):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)[:120]}")
    return found


def test_no_shell_and_no_unsafe_loading_in_the_source():
    """Nothing in moma hands strings to a shell, evaluates text, or unpickles unrestricted."""
    found = [c for p in sorted((REPO / "src" / "moma").rglob("*.py")) for c in _dangerous_calls(p)]
    # the one documented opt-in: trust_pickle=True, for files the user trusts (safe_load.py)
    opt_in = [c for c in found if "safe_load.py" in c and "weights_only=False" in c]
    assert len(opt_in) == 1 and sorted(set(found) - set(opt_in)) == [], found
