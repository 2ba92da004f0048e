"""Teacher families beyond MAE and MoCo v3, saved in their official checkpoint layouts.

Each test builds a randomly initialised timm model of the family, writes it the way the
family's own code does (DINO's ``teacher``/``student`` training checkpoint, DINOv2's hub file
with ``register_tokens`` / ``mask_token`` / LayerScale gammas, a SigLIP-style attention-pooled
ViT without a CLS token in timm's and OpenCLIP's layouts), loads it with
``moma.load_backbone`` and checks the features against timm's on the same weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from families import dino_checkpoint, dinov2_official, randomised
from timm.models.vision_transformer import checkpoint_filter_fn

import moma
from moma.errors import CheckpointError, ConfigError
from moma.models.checkpoint import detect_format, read_checkpoint
from moma.models.vit import global_feature, has_global_feature

TOL = dict(rtol=0, atol=1e-5)
SMALL = dict(depth=2, embed_dim=128, num_heads=2, num_classes=0)  # 128 dims: 2 heads is guessable


def images(size: int) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def tokens(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.eval().forward_features(x)


# ----------------------------------------------------------------------------- DINO


@pytest.mark.parametrize("teacher_prefix", ["", "module."])
def test_dino_takes_the_teacher_backbone(tmp_path: Path, teacher_prefix: str) -> None:
    kw = dict(SMALL, img_size=32)
    teacher = randomised(timm.create_model("vit_small_patch16_224", **kw))
    student = randomised(timm.create_model("vit_small_patch16_224", **kw))
    torch.nn.init.normal_(student.blocks[0].attn.qkv.weight)  # make the two clearly differ
    x = images(32)
    path = tmp_path / "dino_vitsmall16_checkpoint.pth"
    torch.save(dino_checkpoint(teacher, student, teacher_prefix, args=True), path)
    assert detect_format(read_checkpoint(path, trust_pickle=True), path) == "dino"
    with pytest.raises(CheckpointError, match="trust_pickle"):
        moma.load_backbone(path)  # DINO pickles its argparse.Namespace
    loaded = moma.load_backbone(path, trust_pickle=True)
    torch.testing.assert_close(tokens(loaded, x), tokens(teacher, x), **TOL)
    assert not torch.allclose(tokens(loaded, x), tokens(student, x))
    # without args (e.g. re-saved by a user), no opt-in is needed
    torch.save(dino_checkpoint(teacher, student, teacher_prefix, args=False), path)
    torch.testing.assert_close(tokens(moma.load_backbone(path), x), tokens(teacher, x), **TOL)


# ----------------------------------------------------------------------------- DINOv2


# 42 px / patch 14 = a 3x3 grid: the official register pos_embed has 1 + 9 = 10 rows, 9 after
# the mapping, and 9 - 5 prefix tokens = 4 is square too, so the layout must not be guessed.
@pytest.mark.parametrize(
    "arch", ["vit_small_patch14_reg4_dinov2", "vit_small_patch14_dinov2", "vit_base_patch14_dinov2"]
)
def test_dinov2_hub_layout(tmp_path: Path, arch: str) -> None:
    ref = randomised(timm.create_model(arch, **dict(SMALL, img_size=42)))
    official = dinov2_official(ref)
    assert "blocks.0.ls1.gamma" in official and "mask_token" in official
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(official, path)
    # timm's own DINOv2 loader reads the same file into the same weights (the layout is right)
    same = timm.create_model(arch, **dict(SMALL, img_size=42))
    same.load_state_dict(checkpoint_filter_fn(torch.load(path), same))
    x = images(42)
    torch.testing.assert_close(tokens(same, x), tokens(ref, x), **TOL)

    loaded = moma.load_backbone(path)
    assert loaded.patch_embed.patch_size == (14, 14)
    assert loaded.num_prefix_tokens == ref.num_prefix_tokens
    torch.testing.assert_close(tokens(loaded, x), tokens(ref, x), **TOL)
    torch.testing.assert_close(
        global_feature(loaded, tokens(loaded, x)), tokens(ref, x)[:, 0], **TOL
    )


def test_dinov2_training_checkpoint_with_block_chunks(tmp_path: Path) -> None:
    """DINOv2's training checkpoints: ``teacher.backbone.blocks.<chunk>.<block>.*`` + heads."""
    ref = randomised(timm.create_model("vit_small_patch14_reg4_dinov2", **dict(SMALL, img_size=28)))
    teacher = {}
    for k, v in dinov2_official(ref).items():
        if k.startswith("blocks."):
            i = int(k.split(".")[1])
            k = f"blocks.{i}.{k[len('blocks.') :]}"  # one block per chunk: blocks.i.i.*
        teacher[f"backbone.{k}"] = v
    teacher["dino_head.mlp.0.weight"] = torch.randn(64, 128)
    teacher["ibot_head.mlp.0.weight"] = torch.randn(64, 128)
    path = tmp_path / "teacher_checkpoint.pth"
    torch.save({"teacher": teacher, "iteration": 1249}, path)
    x = images(28)
    torch.testing.assert_close(tokens(moma.load_backbone(path), x), tokens(ref, x), **TOL)


# ----------------------------------------------------------------------------- no CLS token


@pytest.mark.parametrize("layout", ["timm", "open_clip"])
def test_attention_pooled_vit_without_cls(tmp_path: Path, layout: str) -> None:
    """SigLIP's image tower: no CLS token, ``global_pool='map'``; its pooled feature is global."""
    ref = randomised(
        timm.create_model("vit_base_patch16_siglip_224", **dict(SMALL, img_size=32, patch_size=8))
    )
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    if layout == "timm":  # timm's hub file (model.safetensors)
        path = tmp_path / "model.safetensors"
        safetensors.torch.save_file(sd, path)
    else:  # OpenCLIP's (open_clip_pytorch_model.bin): the text tower and scales alongside
        path = tmp_path / "open_clip_pytorch_model.bin"
        full = {f"visual.trunk.{k}": v for k, v in sd.items()}
        full.update(
            {
                "text.token_embedding.weight": torch.randn(100, 128),
                "text.text_projection.weight": torch.randn(128, 128),
                "logit_scale": torch.tensor(2.3),
                "logit_bias": torch.tensor(-10.0),
            }
        )
        torch.save(full, path)
    loaded = moma.load_backbone(path)
    assert not loaded.has_class_token and loaded.global_pool == "map"
    assert has_global_feature(loaded)
    x = images(32)
    with torch.no_grad():
        want = ref(x)  # timm's pooled (pre-logits) feature, num_classes=0
        got = global_feature(loaded, tokens(loaded, x))
    assert got.shape == want.shape == (2, 128)
    torch.testing.assert_close(got, want, **TOL)


def test_mean_pooled_vit_without_cls(tmp_path: Path) -> None:
    """A ViT with neither CLS nor attention pool: its pooled feature is the patch-token mean."""
    ref = randomised(
        timm.create_model(
            "vit_base_patch16_224",
            **dict(SMALL, img_size=32, patch_size=8, class_token=False, global_pool="avg"),
        )
    )
    path = tmp_path / "gap_vit.pth"
    torch.save(ref.state_dict(), path)
    loaded = moma.load_backbone(path)
    x = images(32)
    with torch.no_grad():
        torch.testing.assert_close(global_feature(loaded, tokens(loaded, x)), ref(x), **TOL)


def test_vit_without_global_feature_is_refused_clearly() -> None:
    vit = timm.create_model(
        "vit_base_patch16_224",
        **dict(SMALL, img_size=32, patch_size=8, class_token=False, global_pool=""),
    )
    assert not has_global_feature(vit)
    with pytest.raises(ConfigError, match="no CLS token and no pooling head"):
        global_feature(vit, tokens(vit, images(32)))
