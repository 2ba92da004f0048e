"""moma's CPU threading defaults: the OpenMP wait policy chosen before torch loads, and the
thread count that follows the CPUs other processes leave free."""

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from toy import ToyData, ToyMethod

from moma import threads
from moma.errors import ConfigError
from moma.train import TrainerConfig, cpu_share, fit
from moma.train.cpu_share import CpuShareGuard

# libgomp prints its settings when torch loads it; GOMP_SPINCOUNT 0 = threads sleep at once.
PROBE = """
import sys
import moma.threads as t
t.measure_others = lambda seconds=0.3: {others}
if {cli}:  # the whole command line (it imports torch while building its parser)
    from moma.cli.main import main
    sys.exit(main(["report", "--results_dir", {missing!r}]))
t.configure_openmp()
import torch
"""


def libgomp_settings(others, env_extra=None, tmp_path=None, cli=False) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (*threads.OMP_VARS, threads.MODE_ENV)}
    env.update(env_extra or {})
    env["OMP_DISPLAY_ENV"] = "VERBOSE"
    code = PROBE.format(others=others, cli=cli, missing=str(tmp_path / "missing"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    spin = [ln for ln in out.stderr.splitlines() if "GOMP_SPINCOUNT =" in ln]
    policy = [ln for ln in out.stderr.splitlines() if "OMP_WAIT_POLICY =" in ln]
    assert spin and policy, out.stderr[-2000:]
    return policy[0].split("=")[1].strip(" '"), spin[0].split("=")[1].strip(" '")


def test_cli_makes_threads_sleep_when_other_processes_are_busy(tmp_path):
    policy, spin = libgomp_settings(1.5, tmp_path=tmp_path, cli=True)
    assert policy == "PASSIVE" and spin == "0"


def test_configure_keeps_spinning_threads_on_an_idle_machine(tmp_path):
    _, spin = libgomp_settings(0.0, tmp_path=tmp_path)
    assert int(spin) > 0  # libgomp's default spin


def test_configure_keeps_the_users_choice(tmp_path):
    policy, _ = libgomp_settings(1.5, {"OMP_WAIT_POLICY": "ACTIVE"}, tmp_path=tmp_path)
    assert policy == "ACTIVE"


def test_configure_after_torch_changes_nothing(monkeypatch):
    for k in (*threads.OMP_VARS, threads.MODE_ENV):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(threads, "measure_others", lambda seconds=0.3: 1.5)
    assert threads.configure_openmp() == "spin"  # torch is loaded: too late to choose
    assert "OMP_WAIT_POLICY" not in os.environ


def test_others_cpus_leaves_out_this_process():
    before = threads.sample()
    t0 = time.process_time()
    while time.process_time() - t0 < 0.3:  # burn CPU in this process
        pass
    after = threads.sample()
    assert after.own - before.own >= 0.25
    assert threads.others_cpus(before, after) <= (after.machine_busy - before.machine_busy) / (
        after.wall - before.wall
    )


@pytest.mark.parametrize(
    ("others", "cpus", "full", "want"),
    [(0.0, 2, 2, 2), (1.0, 2, 2, 1), (2.0, 2, 2, 1), (0.4, 2, 2, 2), (5.0, 16, 16, 11)],
)
def test_fair_threads(monkeypatch, others, cpus, full, want):
    monkeypatch.setattr(threads, "usable_cpus", lambda: cpus)
    assert threads.fair_threads(others, full) == want


class FakeMachine:
    """CPU samples on demand: each one ``dt`` seconds after the last, during which this
    process kept one CPU busy and other processes ``others`` CPUs."""

    def __init__(self) -> None:
        self.last: threads.CpuSample | None = None
        self.others, self.dt = 0.0, 3.0

    def __call__(self) -> threads.CpuSample:
        s = self.last
        if s is None:
            s = threads.CpuSample(wall=100.0, machine_busy=0.0, own=0.0)
        else:
            busy = s.machine_busy + (1.0 + self.others) * self.dt
            s = threads.CpuSample(s.wall + self.dt, busy, s.own + self.dt)
        self.last = s
        return s


@pytest.fixture
def four_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(before)


def run_guard(monkeypatch, mode: str, trace: list[float], threads_opt=None) -> list[int]:
    machine = FakeMachine()
    monkeypatch.setattr(cpu_share, "sample", machine)
    monkeypatch.setattr(cpu_share, "omp_mode", lambda: mode)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 4)
    clock = iter(range(10**6))
    monkeypatch.setattr(cpu_share.time, "monotonic", lambda: 1000.0 + 10 * next(clock))
    guard = CpuShareGuard(threads_opt)
    trainer = SimpleNamespace(world_size=1)
    module = SimpleNamespace(device=torch.device("cpu"))
    guard.on_fit_start(trainer, module)
    seen = []
    for others in trace:
        machine.others = others
        guard.on_train_batch_end(trainer, module, None, None, 0)
        seen.append(torch.get_num_threads())
    guard.teardown(trainer, module, "fit")
    assert torch.get_num_threads() == 4  # restored
    return seen


def test_guard_follows_free_cpus_while_threads_spin(monkeypatch, four_threads):
    seen = run_guard(monkeypatch, "spin", [0.0, 3.0, 2.0, 0.0])
    assert seen == [4, 1, 2, 4]


def test_guard_leaves_sleeping_threads_alone(monkeypatch, four_threads):
    assert run_guard(monkeypatch, "passive", [0.0, 3.0, 3.0]) == [4, 4, 4]
    assert run_guard(monkeypatch, "user", [3.0, 3.0]) == [4, 4]


def test_fixed_thread_count(monkeypatch, four_threads):
    assert run_guard(monkeypatch, "spin", [3.0, 0.0], threads_opt=2) == [2, 2]


def test_bad_thread_count_fails_before_writing(tmp_path):
    cfg = TrainerConfig(out_dir=str(tmp_path / "run"), threads=0, progress_bar=False)
    with pytest.raises(ConfigError, match="trainer.threads"):
        fit(ToyMethod(), ToyData(), cfg)
    assert not (tmp_path / "run").exists()
