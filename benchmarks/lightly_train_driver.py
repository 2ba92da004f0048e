"""LightlyTrain's ``distillationv1`` from a moma teacher: the LightlyTrain side of
``benchmarks/vs_lightly_train.py``.

Runs in a Python environment with LightlyTrain and timm installed (not moma's)::

    LIGHTLY_TRAIN_EVENTS_DISABLED=1 /path/to/lt-venv/bin/python \
        benchmarks/lightly_train_driver.py SPEC.json

``SPEC.json`` holds ``teacher`` (a moma export: ``.safetensors`` whose header records its
timm architecture), ``pretrain`` (the keyword arguments of ``lightly_train.pretrain``) and
``result`` (where this script writes its wall time and export path as JSON).

LightlyTrain's distillation teachers are DINOv2/v3 models only: the method builds its
teacher with ``lightly_train._methods.distillation.distillation.get_teacher``. This script
replaces that one function so that the method gets the moma teacher instead: a frozen module
with an ``embed_dim`` attribute mapping images ``[B, 3, H, W]`` to the teacher's final-norm
CLS token ``[B, D]`` (what the DINOv2 teachers return). Everything else is LightlyTrain's
documented ``pretrain`` call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

log = logging.getLogger("lightly_train_driver")


class ClsTeacher(nn.Module):
    """A frozen timm ViT whose output is its final-norm CLS token ``[B, D]``."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit
        self.embed_dim = int(vit.embed_dim)
        for p in self.vit.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> ClsTeacher:
        # Lightning puts the whole LightningModule in train mode each epoch; a teacher stays
        # in eval mode (no dropout / drop path), as LightlyTrain's own teachers are used.
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.vit.forward_features(x)[:, 0]  # [B, D]


def load_teacher(path: str) -> tuple[ClsTeacher, str]:
    """The moma export at ``path`` as a :class:`ClsTeacher`, and the file's sha256."""
    with safe_open(path, "pt") as f:
        meta = (f.metadata() or {}).get("moma")
    if meta is None:
        raise SystemExit(f"{path}: not a moma export (no 'moma' entry in its safetensors header)")
    meta = json.loads(meta)
    vit = timm.create_model(meta["arch"], pretrained=False, **meta["timm_kwargs"])
    vit.load_state_dict(load_file(path), strict=True)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return ClsTeacher(vit), digest


def main() -> None:
    # LightlyTrain sets up its own console logging; this script's logger prints beside it.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    spec = json.loads(Path(sys.argv[1]).read_text())
    if os.environ.get("LIGHTLY_TRAIN_EVENTS_DISABLED") != "1":
        raise SystemExit("set LIGHTLY_TRAIN_EVENTS_DISABLED=1 (this benchmark runs offline)")
    teacher, digest = load_teacher(spec["teacher"])
    log.info(
        "teacher %s (sha256 %s..., embed_dim %d)", spec["teacher"], digest[:12], teacher.embed_dim
    )

    import lightly_train
    from lightly_train._methods.distillation import distillation

    def get_teacher(teacher_name, num_input_channels, teacher_weights=None) -> nn.Module:
        return teacher

    distillation.get_teacher = get_teacher
    kwargs = spec["pretrain"]
    t0 = time.perf_counter()
    lightly_train.pretrain(**kwargs)
    wall = time.perf_counter() - t0
    export = Path(kwargs["out"]) / "exported_models" / "exported_last.pt"
    if not export.is_file():
        raise SystemExit(f"LightlyTrain finished without writing {export}")
    result = {
        "wall_s": round(wall, 2),
        "export": str(export),
        "teacher_sha256": digest,
        "lightly_train": lightly_train.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    out = Path(spec["result"])
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)  # the result appears only once the run is complete
    log.info("LightlyTrain pretrain: %.1f s, student %s", wall, export)


if __name__ == "__main__":
    main()
