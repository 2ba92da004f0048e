"""The per-device attention kernel choice (moma.models.attention) and where it is applied."""

import pytest
import torch
from toy import TINY

from moma.errors import ConfigError
from moma.models.attention import attention_kernel, set_attention, use_fused_attention
from moma.train.fit import AttentionKernel


def flags(model):
    return [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]


def test_auto_is_plain_on_cpu_and_fused_on_cuda():
    assert use_fused_attention("cpu") is False
    assert use_fused_attention("cuda") is True
    assert use_fused_attention("cpu", "fused") is True
    assert use_fused_attention("cuda", "math") is False
    with pytest.raises(ConfigError, match="attention must be one of"):
        use_fused_attention("cpu", "flash")
    with pytest.raises(ConfigError, match="attention must be one of"):
        AttentionKernel("flash")


def test_set_and_restore_every_layer_same_output():
    torch.manual_seed(0)
    model = TINY.build().eval()
    assert flags(model) == [True, True]  # timm's default
    x = torch.randn(3, 3, 16, 16)
    fused = model.forward_features(x)
    before = set_attention(model, "cpu")
    assert flags(model) == [False, False] and len(before) == 2
    plain = model.forward_features(x)
    torch.testing.assert_close(plain, fused, atol=1e-5, rtol=1e-4)  # same maths, other kernel
    with attention_kernel(model, "cpu", "fused"):
        assert flags(model) == [True, True]
    assert flags(model) == [False, False]


def test_feature_extraction_restores_the_flags():
    from moma.eval.features import extract_features

    model = TINY.build()
    data = [(torch.randn(4, 3, 16, 16), torch.arange(4))]
    feats, labels = extract_features(model, data, device="cpu", precision="32")
    assert feats.shape == (4, 32) and flags(model) == [True, True]


def test_a_bad_attention_option_fails_before_anything_is_written(tmp_path):
    from toy import ToyData

    from moma.methods.mae import MAEConfig, MAEMethod
    from moma.train import TrainerConfig, fit

    mae = MAEConfig(mask_ratio=0.75, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
    out = tmp_path / "run"
    cfg = TrainerConfig(out_dir=str(out), max_steps=1, attention="flash", progress_bar=False)
    with pytest.raises(ConfigError, match="attention must be one of"):
        fit(MAEMethod(mae, TINY), ToyData(n=8, batch_size=4), cfg)
    assert not out.exists()
