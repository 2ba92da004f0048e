"""MAE: masked-only loss, norm_pix target, decoder, init, overfit, resume, config and CLI."""

import dataclasses
from pathlib import Path

import pytest
import torch
from toy import TINY, ToyData

from moma.commands.pretrain import MAERunConfig
from moma.data import DataConfig
from moma.methods.mae import MAEConfig, MAEMethod
from moma.methods.mae_loss import MAELoss, normalize_patches, patchify, unpatchify
from moma.methods.optim import OptimConfig, build_param_groups, warmup_cosine
from moma.models.pos_embed import sincos_2d
from moma.run_folder import read_metrics
from moma.train import TrainerConfig, fit, last_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMALL = MAEConfig(mask_ratio=0.75, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


def _mae(**kw) -> MAEMethod:
    return MAEMethod(dataclasses.replace(SMALL, **kw), TINY, OptimConfig(base_lr=1e-3))


def test_patchify_roundtrip_and_layout():
    imgs = torch.randn(2, 3, 16, 16)
    patches = patchify(imgs, 4)  # [2, 16, 48]
    assert patches.shape == (2, 16, 48)
    # patch 5 = grid row 1, col 1; value order (pixel row, pixel col, channel)
    assert torch.equal(patches[1, 5].view(4, 4, 3), imgs[1, :, 4:8, 4:8].permute(1, 2, 0))
    assert torch.equal(unpatchify(patches, 4, (4, 4)), imgs)


def test_norm_pix_target_is_per_patch_standardised():
    target = torch.randn(3, 5, 48) * 4 + 2
    mean = target.mean(-1, keepdim=True)
    var = target.var(-1, keepdim=True)  # unbiased, as in the official code
    torch.testing.assert_close(normalize_patches(target), (target - mean) / torch.sqrt(var + 1e-6))
    # and it is what the loss regresses: a perfect prediction of it gives zero loss
    mask = torch.ones(3, 5)
    assert MAELoss(norm_pix=True)(normalize_patches(target), target, mask) == 0


def test_loss_averages_over_masked_patches_only():
    pred, target = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    mask = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
    per_patch = ((pred - target) ** 2).mean(-1)
    expected = per_patch[mask.bool()].mean()
    torch.testing.assert_close(MAELoss(norm_pix=False)(pred, target, mask), expected)


@pytest.mark.parametrize("norm_pix", [True, False])
def test_changing_a_visible_patch_target_does_not_change_the_loss(norm_pix):
    model = _mae(norm_pix_loss=norm_pix).eval()
    imgs = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        latent, mask, ids_restore = model.forward_encoder(imgs)
        pred = model.forward_decoder(latent, ids_restore)
        loss = model.forward_loss(imgs, pred, mask)
        visible = (mask[0] == 0).nonzero()[0].item()
        removed = (mask[0] == 1).nonzero()[0].item()
        row, col = divmod(visible, 4)
        changed = imgs.clone()
        changed[0, :, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] = torch.randn(3, 4, 4) * 5
        assert model.forward_loss(changed, pred, mask) == loss
        # ... while changing a removed patch does
        row, col = divmod(removed, 4)
        changed[0, :, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] += 1.0 + torch.rand(3, 4, 4)
        assert model.forward_loss(changed, pred, mask) != loss


def test_forward_shapes_mask_and_decoder_pos_embed_fixed():
    model = _mae(mask_ratio=0.75)
    imgs = torch.randn(3, 3, 16, 16)
    loss, pred, mask = model(imgs)
    assert pred.shape == (3, 16, 48) and mask.shape == (3, 16)
    assert torch.all(mask.sum(1) == 12)
    loss.backward()
    assert not model.decoder_pos_embed.requires_grad and model.decoder_pos_embed.grad is None
    torch.testing.assert_close(model.decoder_pos_embed.data, sincos_2d(32, (4, 4), 1, "mae"))
    assert model.mask_token.grad is not None and model.decoder_embed.weight.grad is not None
    # the fixed encoder table is MAE's sin-cos, frozen; exported weights live under "encoder."
    assert not model.encoder.pos_embed.requires_grad
    torch.testing.assert_close(model.encoder.pos_embed.data, sincos_2d(32, (4, 4), 1, "mae"))
    keys = model.state_dict().keys()
    assert {"mask_token", "decoder_pos_embed", "decoder_pred.weight"} <= set(keys)
    assert model.export_backbone() is model.encoder and "encoder.pos_embed" in keys


def test_sincos_layouts_are_transposed():
    mae, moco = sincos_2d(16, (3, 3), 1, "mae")[0, 1:], sincos_2d(16, (3, 3), 1, "mocov3")[0, 1:]
    # MAE: first half encodes the column; MoCo v3: first half encodes the row
    assert torch.equal(mae[0, :8], mae[3, :8]) and not torch.equal(mae[0, :8], mae[1, :8])
    assert torch.equal(moco[0, :8], moco[1, :8]) and not torch.equal(moco[0, :8], moco[3, :8])
    assert torch.equal(mae[:, :8], moco[:, 8:]) and torch.equal(mae[:, 8:], moco[:, :8])


def test_pretrained_encoder_is_kept_as_is():
    enc = TINY.build()
    with torch.no_grad():
        enc.pos_embed.normal_()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    model = MAEMethod(SMALL, TINY, encoder=enc)
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model.encoder.pos_embed.requires_grad  # not frozen either


def test_init_follows_mae():
    model = _mae()
    assert model.mask_token.std().item() == pytest.approx(0.02, rel=0.5)
    lin = model.encoder.blocks[0].mlp.fc1
    bound = (6 / (lin.in_features + lin.out_features)) ** 0.5
    assert lin.weight.abs().max() <= bound and lin.bias.abs().sum() == 0
    assert {"encoder.cls_token", "encoder.pos_embed", "mask_token"} <= model.no_weight_decay()
    groups = build_param_groups(model.trainable_modules(), 0.05)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(model.encoder.cls_token) not in decayed and id(model.mask_token) not in decayed
    assert id(lin.weight) in decayed and id(lin.bias) not in decayed
    trainable = {id(p) for g in groups for p in g["params"]}
    assert id(model.decoder_pos_embed) not in trainable  # fixed tables are not optimised


def test_norm_pix_loss_mask_ratio_check():
    from moma.errors import ConfigError

    with pytest.raises(ConfigError, match="mae.mask_ratio"):
        _mae(mask_ratio=0.99)
    with pytest.raises(ConfigError, match="decoder_num_heads"):
        _mae(decoder_embed_dim=32, decoder_num_heads=3)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    model = _mae()
    imgs = torch.randn(8, 3, 16, 16)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95))

    def fixed_loss() -> float:
        with torch.no_grad():
            return model(imgs, torch.Generator().manual_seed(0))[0].item()

    start = fixed_loss()
    for _ in range(25):
        loss = model(imgs)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed_loss() < 0.8 * start


def test_shared_step_under_bf16_autocast():
    model = _mae()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.shared_step((torch.randn(4, 3, 16, 16), torch.zeros(4)))
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])


# --- a real run through the engine --------------------------------------------------------
class Killed(Exception):
    pass


class CrashingMAE(MAEMethod):
    """Simulates a crash (lost process) at a step: raised before that step runs."""

    crash_at = 5

    def on_train_batch_start(self, batch, batch_idx):
        if self.global_step == self.crash_at:
            raise Killed


def _trainer(out, **kw) -> TrainerConfig:
    base = dict(out_dir=str(out), max_steps=8, precision="32-true", ckpt_every_n_steps=3,
                progress_bar=False, log_every_n_steps=1)  # fmt: skip
    base.update(kw)
    return TrainerConfig(**base)


def test_kill_and_resume_continues_steps_and_lr_schedule(tmp_path):
    """Crash at step 5 (last checkpoint: step 3), re-run the same command: it goes on from
    step 3 to the end, and the lr of every logged step follows the schedule of the whole run."""
    optim = OptimConfig(base_lr=1e-3, warmup_fraction=0.25)
    with pytest.raises(Killed):
        fit(CrashingMAE(SMALL, TINY, optim), ToyData(n=32, batch_size=4), _trainer(tmp_path))
    ck = torch.load(last_checkpoint(tmp_path), weights_only=True)
    assert ck["global_step"] == 3 and ck["moma"]["method"] == "mae"
    assert not (tmp_path / "backbone.safetensors").exists()

    r = fit(MAEMethod(SMALL, TINY, optim), ToyData(n=32, batch_size=4), _trainer(tmp_path))
    assert r.global_step == 8 and not r.interrupted and r.export is not None
    lr = dict(read_metrics(tmp_path, "train/lr"))
    peak = optim.peak_lr(4)
    for step in range(8):
        assert lr[step] == pytest.approx(peak * warmup_cosine(step, 8, 2, 0.0), rel=1e-6), step
    ck = torch.load(last_checkpoint(tmp_path), weights_only=True)
    assert ck["global_step"] == 8
    assert any(k.startswith("encoder.") for k in ck["state_dict"])


def test_resume_refuses_another_backbone(tmp_path):
    from moma.errors import CheckpointError

    fit(MAEMethod(SMALL, TINY), ToyData(n=16, batch_size=4), _trainer(tmp_path, max_steps=1))
    other = dataclasses.replace(TINY, depth=1)
    with pytest.raises(CheckpointError, match="depth"):
        fit(MAEMethod(SMALL, other), ToyData(n=16, batch_size=4), _trainer(tmp_path, max_steps=2))


def test_reconstruction_figure(tmp_path):
    from moma.methods.mae_figures import reconstruct, save_reconstructions

    model = _mae()
    imgs = torch.randn(8, 3, 16, 16)
    out = reconstruct(model, imgs)
    visible = out["mask"] == 0
    assert torch.equal(out["pasted"][visible.expand_as(imgs)], imgs[visible.expand_as(imgs)])
    assert model.training  # mode restored
    path = save_reconstructions(model, imgs, tmp_path / "rec.png", (0.5,) * 3, (0.25,) * 3)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- config files and CLI -----------------------------------------------------------------
def test_yaml_config_parses_to_the_run_config():
    pytest.importorskip("jsonargparse")
    from moma.cli.main import command_parser, to_config

    parser = command_parser(MAERunConfig, "moma pretrain mae", "")
    path = ROOT / "configs" / "mae" / "fashion_mnist.yaml"
    ns = parser.parse_args(["--config", str(path), "--mae.mask_ratio", "0.8"])
    cfg = to_config(MAERunConfig, parser, ns)
    assert isinstance(cfg, MAERunConfig)
    assert cfg.mae.mask_ratio == 0.8 and cfg.backbone.depth == 6 and cfg.backbone.patch_size == 4
    assert cfg.data.img_size == 32 and cfg.trainer.precision == "bf16-mixed"
    assert tuple(cfg.optim.betas) == (0.9, 0.95)
    model = MAEMethod(cfg.mae, cfg.backbone, cfg.optim)
    assert model.encoder.embed_dim == 192 and len(model.encoder.blocks) == 6


def test_cli_print_config(capsys, monkeypatch):
    """``moma pretrain mae --config ... --print-config`` through the real entry point (the
    parser is limited to the pretrain subcommands, so other unfinished ones do not matter)."""
    pytest.importorskip("moma.data")
    import moma.cli.main as cli

    pretrain = {k: v for k, v in cli.COMMANDS.items() if k[0] == "pretrain"}
    monkeypatch.setattr(cli, "COMMANDS", pretrain)
    path = ROOT / "configs" / "mae" / "fashion_mnist.yaml"
    rc = cli.main(["pretrain", "mae", "--config", str(path), "--trainer.max_steps", "7",
                   "--print-config"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "mask_ratio: 0.75" in out and "max_steps: 7" in out and "norm_pix_loss: true" in out


def test_python_api_run_seeds_before_building_the_model(monkeypatch, tmp_path):
    """``run_mae(cfg)`` from Python: the initial weights depend on ``trainer.seed`` alone,
    not on what drew random numbers before (the CLI used to be the only one to seed)."""
    from types import SimpleNamespace

    import moma.commands.pretrain
    from moma.commands.pretrain import run_mae

    seen = []

    def fake_fit(module, datamodule, trainer_cfg, config):
        seen.append(torch.cat([p.detach().flatten() for p in module.parameters()]))
        return SimpleNamespace(export=None)

    monkeypatch.setattr(moma.commands.pretrain, "fit", fake_fit)
    data = DataConfig(img_size=TINY.img_size)  # the encoder's size (prepare_run checks it)
    cfg = MAERunConfig(data=data, backbone=TINY, mae=SMALL, trainer=_trainer(tmp_path, seed=3))
    for earlier in (1, 2):
        torch.manual_seed(earlier)
        run_mae(cfg)
    cfg.trainer.seed = 4
    run_mae(cfg)
    assert torch.equal(seen[0], seen[1]) and not torch.equal(seen[0], seen[2])
