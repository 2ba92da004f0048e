"""``--trainer.compile blocks``: a compiled step equals the eager one; checkpoints and exports
are unchanged (no ``_orig_mod.`` keys)."""

import copy

import pytest
import torch
from safetensors.torch import load_file
from toy import TINY, ToyData

from moma.commands.distill import MomaRunConfig, StudentConfig, build_student
from moma.errors import ConfigError
from moma.methods.mocov3 import MoCoV3Config, MoCoV3Method
from moma.methods.moma import MomaMethod, Teacher
from moma.methods.optim import build_optimizer, build_param_groups
from moma.train import TrainerConfig, fit
from moma.train import compile as compile_mod
from moma.train.compile import compile_blocks, transformer_blocks, uncompile_blocks


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch._dynamo.reset()
    torch.set_num_threads(before)


def tiny_moma(seed: int = 0) -> MomaMethod:
    torch.manual_seed(seed)
    teacher = Teacher(TINY.build(), name="t")
    student, bb = build_student(StudentConfig(backbone=TINY), img_size=16)
    run = MomaRunConfig()
    run.moma.mask_ratio = 0.75
    run.moma.targets = "cls+patch"
    return MomaMethod([teacher], student, run.moma, run.optim, backbone_cfg=bb)


def train_steps(module, batches, steps: int = 3) -> list[float]:
    """``steps`` AdamW steps; the masks come from torch's global RNG, seeded alike."""
    groups = build_param_groups(module.trainable_modules(), module.optim_cfg.weight_decay)
    opt, _ = build_optimizer(groups, module.optim_cfg, 8, 100)
    losses = []
    torch.manual_seed(123)
    for i in range(steps):
        loss = module.shared_step(batches[i % len(batches)])["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def batches(n: int = 2) -> list:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 3, 16, 16, generator=g), torch.zeros(8)) for _ in range(n)]


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module, atol: float) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=atol, rtol=0, msg=k)


def test_compiled_moma_steps_equal_eager_steps():
    eager = tiny_moma()
    compiled = copy.deepcopy(eager)
    n = compile_blocks(compiled, "cpu", backend="aot_eager")
    assert n == 4  # 2 student + 2 teacher blocks
    ref = train_steps(eager, batches())
    got = train_steps(compiled, batches())
    assert got == pytest.approx(ref, abs=1e-6)
    assert_same_state(compiled, eager, atol=1e-6)
    # the blocks did run compiled (dynamo saw frames), and nothing was renamed
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert not any("_orig_mod" in k for k in compiled.state_dict())


def test_compiled_mocov3_step_equals_eager_step():
    torch.manual_seed(0)
    cfg = MoCoV3Config(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32)
    eager = MoCoV3Method(cfg, TINY)
    compiled = copy.deepcopy(eager)
    assert compile_blocks(compiled, "cpu", backend="aot_eager") == 4  # encoder + momentum copy
    g = torch.Generator().manual_seed(2)
    views = [torch.randn(8, 3, 16, 16, generator=g) for _ in range(2)]
    data = [([views[0], views[1]], torch.zeros(8))]
    for m in (eager, compiled):
        m.train()
    ref, got = train_steps(eager, data, 2), train_steps(compiled, data, 2)
    assert got == pytest.approx(ref, abs=1e-6)
    assert_same_state(compiled, eager, atol=1e-6)


def test_uncompile_restores_eager_blocks():
    m = tiny_moma()
    compile_blocks(m, "cpu", backend="aot_eager")
    assert all(b._compiled_call_impl is not None for b in transformer_blocks(m))
    uncompile_blocks(m)
    assert all(b._compiled_call_impl is None for b in transformer_blocks(m))


def test_compile_options_per_device():
    gpu = compile_mod.compile_options("blocks", "cuda")
    assert gpu["mode"] == "reduce-overhead" and gpu["dynamic"] is False
    assert compile_mod.compile_options("blocks-nograph", "cuda")["mode"] == "default"
    assert compile_mod.compile_options("blocks", "cpu")["mode"] == "default"
    with pytest.raises(ConfigError, match="trainer.compile"):
        compile_mod.check_compile("everything")


def test_fit_with_compiled_blocks_keeps_checkpoint_and_export(tmp_path, monkeypatch):
    """A compiled run writes the same checkpoint keys and export as an eager run."""
    # inductor would take minutes on this CPU; the cheap backend traces the same graphs
    real = compile_mod.compile_options
    monkeypatch.setattr(
        compile_mod, "compile_options", lambda m, d, backend="inductor": real(m, d, "aot_eager")
    )
    outs = {}
    for mode in ("none", "blocks"):
        cfg = TrainerConfig(
            out_dir=str(tmp_path / mode),
            max_steps=2,
            precision="32-true",
            progress_bar=False,
            compile=mode,
            threads=1,
        )
        module = tiny_moma()
        torch._dynamo.utils.counters.clear()
        outs[mode] = (fit(module, ToyData(n=16, batch_size=8), cfg, {"m": mode}), module)
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        assert (graphs > 0) == (mode == "blocks")  # the blocks did run compiled
    (r0, _), (r1, m1) = outs["none"], outs["blocks"]
    ck0 = torch.load(r0.checkpoint, weights_only=True)["state_dict"]
    ck1 = torch.load(r1.checkpoint, weights_only=True)["state_dict"]
    assert list(ck0) == list(ck1) and not any("_orig_mod" in k for k in ck1)
    e0, e1 = load_file(r0.export), load_file(r1.export)
    assert sorted(e0) == sorted(e1)
    for k in e0:
        torch.testing.assert_close(e1[k], e0[k], atol=1e-5, rtol=0)
    # the run ended with plain blocks again
    assert all(b._compiled_call_impl is None for b in transformer_blocks(m1))


def test_bad_compile_option_fails_before_writing(tmp_path):
    cfg = TrainerConfig(out_dir=str(tmp_path / "run"), compile="all", progress_bar=False)
    with pytest.raises(ConfigError, match="trainer.compile"):
        fit(tiny_moma(), ToyData(n=16, batch_size=8), cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_inductor_compiled_step_close_to_eager():
    """The real backend (C++ kernels on the CPU): fused ops round differently, so a looser
    tolerance than the eager-graph test."""
    eager = tiny_moma()
    compiled = copy.deepcopy(eager)
    compile_blocks(compiled, "cpu")
    ref = train_steps(eager, batches())
    got = train_steps(compiled, batches())
    assert got == pytest.approx(ref, abs=1e-4)
    assert_same_state(compiled, eager, atol=1e-4)
