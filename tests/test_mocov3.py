"""MoCo v3: loss values, momentum encoder (no gradient, EMA rule, schedule), heads, overfit,
kill-and-resume, config and CLI. Multi-process key gathering: tests/test_ddp.py."""

import dataclasses
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from toy import TINY, ToyTwoViewData

from moma.commands.pretrain import MoCoV3RunConfig
from moma.errors import ConfigError
from moma.methods.mocov3 import MoCoV3Config, MoCoV3Method, cosine_momentum
from moma.methods.mocov3_loss import MoCoV3Loss, concat_all_gather
from moma.methods.optim import OptimConfig, build_param_groups, warmup_cosine
from moma.models.pos_embed import sincos_2d
from moma.run_folder import read_metrics
from moma.train import TrainerConfig, fit, last_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMALL = MoCoV3Config(proj_hidden_dim=64, proj_dim=16, pred_hidden_dim=64)
T = 0.2


def _moco(**kw) -> MoCoV3Method:
    return MoCoV3Method(dataclasses.replace(SMALL, **kw), TINY, OptimConfig(base_lr=1e-3))


def _views(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 3, 16, 16)
    return x + 0.1 * torch.randn_like(x), x + 0.1 * torch.randn_like(x)


def _ref_ctr(q: torch.Tensor, k: torch.Tensor, t: float) -> torch.Tensor:
    """InfoNCE written out: mean_i [logsumexp_j(s_ij / t) - s_ii / t] * 2t, s = cos sim."""
    q = q / q.norm(dim=1, keepdim=True)
    k = k / k.norm(dim=1, keepdim=True)
    s = q @ k.T / t
    return (torch.logsumexp(s, dim=1) - s.diagonal()).mean() * 2 * t


# --- the loss -----------------------------------------------------------------------------
def test_loss_of_orthonormal_identical_queries_and_keys_is_analytic():
    n = 6
    e = torch.eye(n, 16) * 3.0  # scale does not matter: rows are normalised
    # logits: 1/T on the diagonal, 0 elsewhere -> ctr = 2T * log(1 + (N - 1) exp(-1/T))
    expected = 2 * (2 * T * math.log(1 + (n - 1) * math.exp(-1 / T)))
    assert MoCoV3Loss(T)(e, e, e, e).item() == pytest.approx(expected, rel=1e-6)


def test_loss_matches_written_out_infonce_and_is_symmetric():
    q1, q2, k1, k2 = (torch.randn(5, 8) for _ in range(4))
    loss = MoCoV3Loss(0.5)(q1, q2, k1, k2)
    expected = _ref_ctr(q1, k2, 0.5) + _ref_ctr(q2, k1, 0.5)
    torch.testing.assert_close(loss, expected)


def test_single_process_gather_is_identity_and_gradients_reach_queries_only():
    k = torch.randn(4, 8, requires_grad=True)
    assert concat_all_gather(k) is k or torch.equal(concat_all_gather(k), k)
    q = torch.randn(4, 8, requires_grad=True)
    MoCoV3Loss(T).contrastive(q, k).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0 and k.grad is None


def test_identical_views_and_identical_encoders_give_the_analytic_loss():
    """At init the momentum branch equals the base branch: with x1 = x2 the keys equal the
    projector outputs, and the loss is InfoNCE between predictor(z) and z, twice."""
    model = _moco()
    x = torch.randn(8, 3, 16, 16)
    loss = model(x, x)
    with torch.no_grad():
        z = model.projector(model.base_encoder(x))  # BN in train mode: this batch's stats
        q = model.predictor(z)
        expected = 2 * _ref_ctr(q, z, T)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-5)

    # with an identity predictor, q == k: every positive has cosine 1
    model.predictor = nn.Identity()
    loss = model(x, x)
    with torch.no_grad():
        z = model.projector(model.base_encoder(x))
        zn = z / z.norm(dim=1, keepdim=True)
        s = zn @ zn.T / T
        expected = 2 * 2 * T * (torch.logsumexp(s, dim=1) - 1 / T).mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-5)


# --- momentum encoder -----------------------------------------------------------------------
def test_momentum_encoder_gets_no_gradient_and_moves_by_the_ema_rule():
    model = _moco()
    mom = [*model.momentum_encoder.parameters(), *model.momentum_projector.parameters()]
    base = [*model.base_encoder.parameters(), *model.projector.parameters()]
    assert all(not p.requires_grad for p in mom)
    groups = build_param_groups(model.trainable_modules(), 0.1)
    in_opt = {id(p) for g in groups for p in g["params"]}
    assert not in_opt & {id(p) for p in mom}
    assert {id(p) for p in model.predictor.parameters()} <= in_opt

    opt = torch.optim.AdamW(groups, lr=1e-2)
    loss = model(*_views())
    loss.backward()
    assert all(p.grad is None for p in mom)
    opt.step()
    old = [p.detach().clone() for p in mom]
    changed = [b for b, o in zip(base, old) if not torch.equal(b, o)]
    assert changed, "the optimiser step should move the base branch away from the copy"
    m = 0.9
    model.momentum_update(m)
    for p, o, b in zip(mom, old, base):
        torch.testing.assert_close(p, m * o + (1 - m) * b)


def test_cosine_momentum_schedule():
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)
    assert cosine_momentum(100, 100, 0.99) == pytest.approx(1.0)
    s = 37
    expected = 1 - (1 - 0.99) * (math.cos(math.pi * s / 100) + 1) / 2
    assert cosine_momentum(s, 100, 0.99) == pytest.approx(expected)


class EMAProbe(L.Callback):
    """Checks, at each step's end (before any checkpoint is written), that the momentum
    branch was just updated by m(step) from its value before the step."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.before = [p.detach().clone() for p in module.momentum_encoder.parameters()]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step, total = trainer.global_step, int(trainer.estimated_stepping_batches)
        m = cosine_momentum(step, total, module.cfg.momentum)
        assert module.current_momentum == pytest.approx(m)
        for p, o, b in zip(
            module.momentum_encoder.parameters(), self.before, module.base_encoder.parameters()
        ):
            torch.testing.assert_close(p, m * o + (1 - m) * b, rtol=1e-5, atol=1e-6)
        self.steps.append(step)


def _trainer(out, **kw) -> TrainerConfig:
    base = dict(out_dir=str(out), max_steps=8, precision="32-true", ckpt_every_n_steps=3,
                progress_bar=False, log_every_n_steps=1)  # fmt: skip
    base.update(kw)
    return TrainerConfig(**base)


class ProbedMoCo(MoCoV3Method):
    def configure_callbacks(self):
        self.probe = EMAProbe()
        return [self.probe]


def test_ema_rule_and_schedule_through_the_trainer(tmp_path):
    """Callbacks (the checkpointing RunGuard among them) already see the updated momentum
    branch at the end of each optimiser step."""
    model = ProbedMoCo(dataclasses.replace(SMALL, momentum=0.9), TINY, OptimConfig(base_lr=1e-3))
    r = fit(model, ToyTwoViewData(n=16, batch_size=4), _trainer(tmp_path, max_steps=3))
    assert r.global_step == 3 and model.probe.steps == [1, 2, 3]
    assert model.current_momentum == pytest.approx(1.0)  # the schedule ends at 1


# --- heads, options, init -------------------------------------------------------------------
def test_heads_follow_mocov3():
    model = _moco()
    proj, pred = model.projector, model.predictor
    assert sum(isinstance(m, nn.Linear) for m in proj) == 3
    assert sum(isinstance(m, nn.Linear) for m in pred) == 2
    assert isinstance(proj[-1], nn.BatchNorm1d) and not proj[-1].affine
    assert isinstance(pred[-1], nn.Linear)
    assert proj[0].in_features == 32 and proj[-2].out_features == 16
    assert pred[0].in_features == 16 and pred[-1].out_features == 16


def test_init_follows_mocov3_and_export_is_the_base_encoder():
    model = _moco()
    enc = model.base_encoder
    assert not enc.pos_embed.requires_grad
    torch.testing.assert_close(enc.pos_embed.data, sincos_2d(32, (4, 4), 1, "mocov3"))
    qkv = enc.blocks[0].attn.qkv.weight  # [3D, D], each third xavier for [D, D]
    assert qkv.abs().max() <= math.sqrt(6 / (32 + 32))
    assert enc.cls_token.abs().max() < 1e-4
    assert model.export_backbone() is enc
    keys = model.state_dict().keys()
    assert "base_encoder.pos_embed" in keys and "momentum_encoder.pos_embed" in keys


def test_freeze_patch_embed():
    model = _moco(freeze_patch_embed=True)
    pe = model.base_encoder.patch_embed.proj
    assert not pe.weight.requires_grad and not pe.bias.requires_grad
    groups = build_param_groups(model.trainable_modules(), 0.1)
    assert id(pe.weight) not in {id(p) for g in groups for p in g["params"]}
    before = pe.weight.detach().clone()
    opt = torch.optim.AdamW(groups, lr=1e-2)
    model(*_views()).backward()
    opt.step()
    model.momentum_update(0.5)
    assert torch.equal(pe.weight, before)
    assert torch.equal(model.momentum_encoder.patch_embed.proj.weight, before)


def test_shared_step_needs_two_views_and_runs_under_bf16():
    model = _moco()
    with pytest.raises(ConfigError, match="two views"):
        model.shared_step((torch.randn(4, 3, 16, 16), torch.zeros(4)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.shared_step((list(_views(4)), torch.zeros(4)))
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])


def test_config_checks():
    with pytest.raises(ConfigError, match="temperature"):
        _moco(temperature=0.0)
    with pytest.raises(ConfigError, match="momentum"):
        _moco(momentum=1.5)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    model = _moco()
    x1, x2 = _views(16)
    opt = torch.optim.AdamW(build_param_groups(model.trainable_modules(), 0.0), lr=1e-3)

    def fixed_loss() -> float:
        with torch.no_grad():
            return model(x1, x2).item()

    start = fixed_loss()
    for _ in range(15):
        loss = model(x1, x2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.momentum_update(0.99)
    assert fixed_loss() < 0.8 * start


# --- kill and resume ------------------------------------------------------------------------
class Killed(Exception):
    pass


class CrashingMoCo(MoCoV3Method):
    """Simulates a crash (lost process) at a step: raised before that step runs."""

    crash_at = 5

    def on_train_batch_start(self, batch, batch_idx):
        if self.global_step == self.crash_at:
            raise Killed


def test_kill_and_resume_continues_steps_lr_and_momentum_schedules(tmp_path):
    """Crash at step 5 (last checkpoint: step 3), re-run the same command: it goes on from
    step 3 to the end; lr and momentum of every logged step follow the whole run's schedule."""
    optim = OptimConfig(base_lr=1e-3, warmup_fraction=0.25)
    data = ToyTwoViewData(n=32, batch_size=4)
    with pytest.raises(Killed):
        fit(CrashingMoCo(SMALL, TINY, optim), data, _trainer(tmp_path))
    ck = torch.load(last_checkpoint(tmp_path), weights_only=True)
    assert ck["global_step"] == 3 and ck["moma"]["method"] == "mocov3"
    assert any(k.startswith("momentum_encoder.") for k in ck["state_dict"])

    resumed = MoCoV3Method(SMALL, TINY, optim)
    r = fit(resumed, data, _trainer(tmp_path))
    assert r.global_step == 8 and not r.interrupted and r.export is not None
    lr = dict(read_metrics(tmp_path, "train/lr"))
    mom = dict(read_metrics(tmp_path, "train/momentum"))
    peak = optim.peak_lr(4)
    for step in range(8):
        assert lr[step] == pytest.approx(peak * warmup_cosine(step, 8, 2, 0.0), rel=1e-6), step
        assert mom[step] == pytest.approx(cosine_momentum(step, 8, SMALL.momentum), abs=1e-6)
    assert resumed.current_momentum == pytest.approx(1.0)


# --- config files and CLI -------------------------------------------------------------------
def test_yaml_config_parses_to_the_run_config():
    from moma.cli.main import command_parser, to_config

    parser = command_parser(MoCoV3RunConfig, "moma pretrain mocov3", "")
    path = ROOT / "configs" / "mocov3" / "fashion_mnist.yaml"
    ns = parser.parse_args(["--config", str(path), "--mocov3.freeze_patch_embed", "true"])
    cfg = to_config(MoCoV3RunConfig, parser, ns)
    assert isinstance(cfg, MoCoV3RunConfig) and cfg.mocov3.freeze_patch_embed
    assert cfg.mocov3.temperature == 0.2 and cfg.mocov3.momentum == 0.99
    assert cfg.optim.weight_decay == 0.1 and tuple(cfg.optim.betas) == (0.9, 0.999)
    assert cfg.backbone.depth == 6 and cfg.trainer.precision == "bf16-mixed"
    defaults = MoCoV3RunConfig()
    assert defaults.optim.base_lr == 1.5e-4 and defaults.trainer.out_dir == "runs/mocov3"


def test_cli_print_config(capsys, monkeypatch):
    pytest.importorskip("moma.data")
    import moma.cli.main as cli

    pretrain = {k: v for k, v in cli.COMMANDS.items() if k[0] == "pretrain"}
    monkeypatch.setattr(cli, "COMMANDS", pretrain)
    path = ROOT / "configs" / "mocov3" / "fashion_mnist.yaml"
    rc = cli.main(["pretrain", "mocov3", "--config", str(path), "--print-config"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "temperature: 0.2" in out and "freeze_patch_embed: false" in out


def test_cpu_step_runs_each_view_through_the_encoders_alone():
    """On the CPU the views go through each encoder one by one ([N], faster there than one
    [2N] pass: BENCHMARKS.md); the loss equals the one-pass computation."""
    m = _moco().train()
    x1, x2 = _views(8)
    seen = []
    hooks = [
        enc.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
        for enc in (m.base_encoder, m.momentum_encoder)
    ]
    loss = m(x1, x2)
    for h in hooks:
        h.remove()
    assert seen == [8, 8, 8, 8]
    with torch.no_grad():
        feats = m.base_encoder(torch.cat([x1, x2]))  # the one-pass reference
        mom = m.momentum_encoder(torch.cat([x1, x2]))
        q1, q2 = (m.predictor(m.projector(f)) for f in (feats[:8], feats[8:]))
        k1, k2 = m.momentum_projector(mom[:8]), m.momentum_projector(mom[8:])
        ref = m.loss_fn(q1, q2, k1, k2)
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-5, atol=1e-6)
