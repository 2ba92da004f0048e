"""What a MOMA checkpoint carries: format version, resolved config, teacher sha256, a digest."""

from __future__ import annotations

import yaml

from moma.integrity import DIGEST_KEY, content_digest
from moma.methods.base import CHECKPOINT_FORMAT_VERSION
from moma.models.checkpoint import load_backbone
from moma.models.safe_load import sha256_file
from moma.train import last_checkpoint
from moma.train.fit import read_run_checkpoint


def test_moma_checkpoint_records_version_config_teacher_hashes_and_digest(finished_run, teacher):
    out, _ = finished_run
    ckpt = read_run_checkpoint(last_checkpoint(out), "moma")  # safe load, digest verified
    meta = ckpt["moma"]
    assert meta["format_version"] == CHECKPOINT_FORMAT_VERSION
    assert meta["method"] == "moma"

    # the resolved config: what config.yaml holds, every section, the teacher list included
    assert meta["config"] == yaml.safe_load((out / "config.yaml").read_text())
    assert set(meta["config"]) >= {"data", "teachers", "student", "moma", "optim", "trainer"}
    assert meta["config"]["trainer"]["out_dir"] == str(out)
    assert meta["config"]["moma"]["mask_ratio"] == 0.75

    # the teachers: not their weights, but name, path and the file's sha256
    (rec,) = meta["teachers"]
    assert rec["name"] == "t" and rec["path"] == str(teacher)
    assert rec["sha256"] == sha256_file(teacher) and rec["sha256_of"] == "file"
    assert not any(k.startswith("teachers.") for k in ckpt["state_dict"])

    # the content digest (checked on every read) matches the content
    assert ckpt[DIGEST_KEY] == {"algorithm": "sha256", "value": content_digest(ckpt)}
    assert ckpt["global_step"] == 4
    assert load_backbone(last_checkpoint(out)).embed_dim == 32  # readable as a backbone
