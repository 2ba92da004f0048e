"""The command line: help, config files with dotted overrides, --print-config, errors."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from moma.cli.main import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    return capsys.readouterr().out


def test_help_lists_every_subcommand(capsys):
    out = _help(["--help"], capsys)
    for path in COMMANDS:
        assert path[0] in out
    out = _help(["pretrain", "--help"], capsys)
    assert "mae" in out and "mocov3" in out
    out = _help(["eval", "--help"], capsys)
    assert all(p in out for p in ("knn", "linear", "finetune"))


def test_print_config_applies_file_then_overrides(capsys):
    cfg = ROOT / "configs" / "mae" / "fashion_mnist.yaml"
    rc = main(["pretrain", "mae", "--config", str(cfg), "--mae.mask_ratio", "0.8",
               "--trainer.devices", "2", "--print-config"])  # fmt: skip
    assert rc == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    on_disk = yaml.safe_load(cfg.read_text())
    assert resolved["mae"]["mask_ratio"] == 0.8  # the override wins
    assert resolved["trainer"]["devices"] == 2
    assert resolved["backbone"]["depth"] == on_disk["backbone"]["depth"]  # the file's value
    assert resolved["data"]["batch_size"] == on_disk["data"]["batch_size"]


def test_every_shipped_config_parses(capsys):
    for cfg in sorted((ROOT / "configs").rglob("*.yaml")):
        group = cfg.parent.name
        cmd = {"mae": ["pretrain", "mae"], "mocov3": ["pretrain", "mocov3"], "moma": ["distill"]}
        assert main([*cmd[group], "--config", str(cfg), "--print-config"]) == 0, cfg
        capsys.readouterr()


def test_unknown_option_is_one_line_error():
    r = subprocess.run(
        [sys.executable, "-m", "moma.cli.main", "distill", "--moma.bogus_option", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("moma: error")]
    assert lines and "bogus_option" in lines[-1]
    assert "Traceback" not in r.stderr
