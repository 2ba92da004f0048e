"""Checkpoint formats round-trip to identical features; unsafe and broken files fail clearly."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch

from moma.errors import CheckpointError
from moma.models.checkpoint import (
    detect_format,
    extract_backbone_state_dict,
    guess_num_heads,
    load_backbone,
    read_checkpoint,
    sha256_file,
)
from moma.models.export import export_backbone
from moma.models.vit import create_vit

# embed 128 -> 2 heads is what a plain file implies (head dim 64), so arch=None reproduces it.
GUESSABLE = dict(img_size=32, patch_size=8, depth=2, embed_dim=128, num_heads=2)
# 48 dims / 4 heads cannot be guessed: only metadata (moma files) can restore it.
ODD = dict(img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=4, mlp_ratio=2.0)


def tiny(**kw) -> torch.nn.Module:
    """A tiny ViT with a pos_embed no loader could regenerate."""
    model = create_vit("vit_base_patch16_224", **{**GUESSABLE, **kw}).eval()
    with torch.no_grad():
        model.pos_embed.copy_(torch.randn_like(model.pos_embed))
    return model


def feats(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval().forward_features(x)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def assert_same(loaded: torch.nn.Module, ref: torch.nn.Module, x: torch.Tensor) -> None:
    assert torch.equal(loaded.pos_embed, ref.pos_embed)
    torch.testing.assert_close(feats(loaded, x), feats(ref, x), rtol=0, atol=0)


def decoder_keys(dim: int = 32, embed: int = 128) -> dict[str, torch.Tensor]:
    return {
        "mask_token": torch.zeros(1, 1, dim),
        "decoder_embed.weight": torch.randn(dim, embed),
        "decoder_embed.bias": torch.randn(dim),
        "decoder_pos_embed": torch.randn(1, 17, dim),
        "decoder_blocks.0.norm1.weight": torch.ones(dim),
        "decoder_blocks.0.attn.qkv.weight": torch.randn(3 * dim, dim),
        "decoder_norm.weight": torch.ones(dim),
        "decoder_norm.bias": torch.zeros(dim),
        "decoder_pred.weight": torch.randn(192, dim),
        "decoder_pred.bias": torch.zeros(192),
    }


@pytest.mark.parametrize("with_decoder", [False, True])
def test_mae_roundtrip(tmp_path: Path, x, caplog, with_decoder: bool) -> None:
    ref = tiny()
    sd = dict(ref.state_dict())
    if with_decoder:
        sd.update(decoder_keys())
    p = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": sd}, p)
    assert detect_format(read_checkpoint(p), p) == "mae"
    with caplog.at_level(logging.INFO, logger="moma.models.checkpoint"):
        model = load_backbone(p)
    assert_same(model, ref, x)
    assert ("decoder_blocks.*" in caplog.text and "mask_token" in caplog.text) == with_decoder


def test_mocov3_takes_base_encoder(tmp_path: Path, x) -> None:
    kw = dict(embed_dim=384, depth=1, num_heads=12)  # MoCo v3 ViT-S width: 12 heads, not timm's 6
    base, momentum = tiny(**kw), tiny(**kw)
    assert not torch.equal(base.blocks[0].attn.qkv.weight, momentum.blocks[0].attn.qkv.weight)
    projector = {
        "head.0.weight": torch.randn(64, 384),
        "head.1.weight": torch.ones(64),
        "head.1.bias": torch.zeros(64),
        "head.1.running_mean": torch.zeros(64),
        "head.1.running_var": torch.ones(64),
        "head.1.num_batches_tracked": torch.tensor(3),
        "head.3.weight": torch.randn(32, 64),
    }
    sd = {}
    for prefix, enc in (("module.base_encoder.", base), ("module.momentum_encoder.", momentum)):
        sd.update({prefix + k: v for k, v in {**enc.state_dict(), **projector}.items()})
    sd.update(
        {
            "module.predictor.0.weight": torch.randn(64, 32),
            "module.predictor.3.weight": torch.randn(32, 64),
        }
    )
    p = tmp_path / "vit-s-300ep.pth.tar"
    torch.save(
        {
            "epoch": 300,
            "arch": "vit_small",
            "state_dict": sd,
            "optimizer": {"state": {}, "param_groups": []},
        },
        p,
    )

    model = load_backbone(p)
    assert model.blocks[0].attn.num_heads == 12
    assert_same(model, base, x)
    assert not torch.equal(feats(model, x), feats(momentum, x))


def test_num_heads_guess() -> None:
    assert guess_num_heads(384, "mocov3") == (12, "MoCo v3 layout")
    assert guess_num_heads(768, "mocov3")[0] == 12
    assert guess_num_heads(384, "mae")[0] == 6
    assert guess_num_heads(1024, "timm")[0] == 16
    assert guess_num_heads(1280, "mae")[0] == 16
    assert guess_num_heads(192, "timm", arch="vit_tiny_patch16_224") == (
        3,
        "default of vit_tiny_patch16_224",
    )
    assert guess_num_heads(128, "timm")[0] == 2


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_roundtrip(tmp_path: Path, x, suffix: str) -> None:
    ref = tiny()
    p = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, p)
    else:
        torch.save(ref.state_dict(), p)
    assert detect_format(read_checkpoint(p), p) == "timm"
    assert_same(load_backbone(p), ref, x)
    # heads that cannot be guessed are forced with an override
    odd = tiny(**ODD)
    torch.save(odd.state_dict(), p := tmp_path / "odd.pth")
    assert_same(load_backbone(p, num_heads=4), odd, x)


def test_moma_export_roundtrip_and_timm_load(tmp_path: Path, x, caplog) -> None:
    ref = tiny(**ODD)
    p = export_backbone(
        ref,
        tmp_path / "out" / "backbone.safetensors",
        arch="vit_tiny_patch16_224",
        extra={"method": "moma"},
    )
    meta = json.loads(p.with_suffix(".json").read_text())
    assert (
        meta["format"] == "moma-backbone"
        and meta["format_version"] == 1
        and meta["method"] == "moma"
    )
    assert meta["timm_kwargs"]["num_heads"] == 4 and meta["timm_kwargs"]["num_classes"] == 0
    assert meta["sha256"] == sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()
    assert not list(p.parent.glob("*.tmp"))
    assert detect_format(read_checkpoint(p), p) == "moma"
    assert_same(load_backbone(p), ref, x)  # heads (4) come from the metadata

    # the exact call documented in moma.models.export: every key loads (timm logs none missing)
    with caplog.at_level(logging.INFO, logger="timm"):
        via_timm = timm.create_model(
            meta["arch"],
            pretrained=True,
            pretrained_cfg_overlay=dict(file=str(p)),
            **meta["timm_kwargs"],
        )
    assert "Loading pretrained weights from file" in caplog.text
    assert "Missing keys" not in caplog.text and "Unexpected keys" not in caplog.text
    assert_same(via_timm, ref, x)

    # without the sidecar, the copy in the safetensors header still gives the heads
    p.with_suffix(".json").unlink()
    assert_same(load_backbone(p), ref, x)


@pytest.mark.parametrize(
    "method,prefix", [("mae", "encoder."), ("mocov3", "base_encoder."), ("moma", "student.")]
)
def test_moma_training_checkpoint(tmp_path: Path, x, method: str, prefix: str) -> None:
    ref = tiny(**ODD)
    sd = {prefix + k: v for k, v in ref.state_dict().items()}
    if method == "mocov3":
        other = tiny(**ODD)
        sd.update({"momentum_encoder." + k: v for k, v in other.state_dict().items()})
        sd["base_encoder.head.0.weight"] = torch.randn(8, 48)
    if method == "mae":
        sd.update({"decoder." + k: v for k, v in decoder_keys(embed=48).items()})
    backbone = dict(
        arch="vit_tiny_patch16_224",
        img_size=32,
        patch_size=8,
        depth=2,
        embed_dim=48,
        num_heads=4,
        mlp_ratio=2.0,
        drop_path_rate=0.1,
    )
    ckpt = {
        "epoch": 3,
        "global_step": 30,
        "pytorch-lightning_version": "2.5.0",
        "state_dict": sd,
        "moma": {"format_version": 1, "method": method, "backbone": backbone},
    }
    p = tmp_path / "last.ckpt"
    torch.save(ckpt, p)
    assert detect_format(read_checkpoint(p), p) == "moma"
    model = load_backbone(p)
    assert model.blocks[0].attn.num_heads == 4
    assert_same(model, ref, x)


def test_pos_embed_resampled_only_on_request(tmp_path: Path, x, caplog) -> None:
    ref = tiny()
    torch.save({"model": ref.state_dict()}, p := tmp_path / "mae.pth")
    with caplog.at_level(logging.INFO, logger="moma.models.checkpoint"):
        model = load_backbone(p, img_size=48)
    assert model.pos_embed.shape[1] == 1 + 36
    assert "resampled pos_embed from a 4x4 to a 6x6 grid" in caplog.text
    torch.testing.assert_close(model.pos_embed[:, :1], ref.pos_embed[:, :1])


class _Evil:
    """Unpickling this creates a marker file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pth"
    torch.save({"model": tiny().state_dict(), "x": _Evil(marker)}, p)
    with pytest.raises(CheckpointError, match=r"evil\.pth: refused to load.*trust_pickle=True"):
        load_backbone(p)
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(p)
    assert not marker.exists()


def test_namespace_checkpoint_needs_opt_in(tmp_path: Path, x) -> None:
    ref = tiny()
    p = tmp_path / "checkpoint-799.pth"
    torch.save(
        {
            "model": ref.state_dict(),
            "epoch": 799,
            "args": argparse.Namespace(model="mae_vit_tiny", lr=1e-3),
        },
        p,
    )
    with pytest.raises(
        CheckpointError, match=r"checkpoint-799\.pth: .*argparse\.Namespace.*trust_pickle=True"
    ):
        load_backbone(p)
    assert_same(load_backbone(p, trust_pickle=True), ref, x)


def test_missing_and_misshaped_keys(tmp_path: Path) -> None:
    sd = tiny().state_dict()
    missing = {k: v for k, v in sd.items() if k != "blocks.1.mlp.fc2.bias"}
    torch.save(missing, p := tmp_path / "missing.pth")
    with pytest.raises(
        CheckpointError,
        match=r"missing\.pth: 1 backbone key\(s\) missing.*blocks\.1\.mlp\.fc2\.bias",
    ):
        load_backbone(p)
    assert load_backbone(p, strict=False) is not None

    bad = dict(sd)
    bad["blocks.0.norm1.weight"] = torch.ones(7)
    torch.save(bad, p := tmp_path / "bad.pth")
    with pytest.raises(
        CheckpointError,
        match=r"bad\.pth: 1 key\(s\) with the wrong shape: blocks\.0\.norm1\.weight \(7,\)",
    ):
        load_backbone(p)

    extra = {**sd, "something.else": torch.zeros(1)}
    torch.save(extra, p := tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\).*something\.else"):
        load_backbone(p)
    assert load_backbone(p, strict=False) is not None


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file(tmp_path: Path, suffix: str) -> None:
    ref = tiny()
    p = tmp_path / f"cut{suffix}"
    if suffix == ".pth":
        torch.save({"model": ref.state_dict()}, p)
    else:
        safetensors.torch.save_file(dict(ref.state_dict()), p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"cut{suffix}: not a valid checkpoint"):
        load_backbone(p)
    p.write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"cut{suffix}: not a valid checkpoint"):
        read_checkpoint(p)
    with pytest.raises(CheckpointError, match="file not found"):
        read_checkpoint(tmp_path / "nope.pth")


def test_unknown_layout_and_format(tmp_path: Path) -> None:
    torch.save({"weights": {"a": torch.zeros(1)}}, p := tmp_path / "odd.pth")
    with pytest.raises(
        CheckpointError, match=r"odd\.pth: cannot tell the checkpoint format.*weights"
    ):
        load_backbone(p)
    with pytest.raises(CheckpointError, match="unknown format 'bogus'"):
        load_backbone(p, format="bogus")
    with pytest.raises(CheckpointError, match="format 'mocov3' expects"):
        extract_backbone_state_dict(read_checkpoint(p), "mocov3", p)


def test_sha256_file(tmp_path: Path) -> None:
    p = tmp_path / "blob"
    p.write_bytes(b"x" * (3 << 20))
    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()


class _Harmless:
    """A custom object a trusted training script might pickle."""

    def __init__(self) -> None:
        self.note = "hi"


def test_trust_pickle_falls_back_to_full_unpickling(tmp_path: Path, x, caplog) -> None:
    ref = tiny()
    torch.save({"model": ref.state_dict(), "extra": _Harmless()}, p := tmp_path / "custom.pth")
    with pytest.raises(CheckpointError, match=r"custom\.pth: refused to load.*_Harmless"):
        load_backbone(p)
    with caplog.at_level(logging.WARNING, logger="moma.models.safe_load"):
        assert_same(load_backbone(p, trust_pickle=True), ref, x)
    assert "weights_only=False" in caplog.text


def test_moma_config_dataclass_in_checkpoint_is_allowed(tmp_path: Path, x) -> None:
    from moma.models.vit import BackboneConfig

    ref = tiny(**ODD)
    cfg = BackboneConfig(
        arch="vit_tiny_patch16_224",
        img_size=32,
        patch_size=8,
        depth=2,
        embed_dim=48,
        num_heads=4,
        mlp_ratio=2.0,
    )
    ckpt = {
        "state_dict": {"student." + k: v for k, v in ref.state_dict().items()},
        "hyper_parameters": {"backbone": cfg},
        "moma": {"format_version": 1, "method": "moma", "backbone": cfg},  # a dataclass here too
    }
    torch.save(ckpt, p := tmp_path / "last.ckpt")
    assert read_checkpoint(p)["hyper_parameters"]["backbone"] == cfg
    assert_same(load_backbone(p), ref, x)
