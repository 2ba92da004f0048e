"""A short training run alone and beside a CPU hog, under each OpenMP threading policy.

    python benchmarks/contention.py                       # 40 MAE steps, the full grid
    python benchmarks/contention.py --steps 12 --policies active,auto --rounds 1   # a trial

Each measurement is a fresh process running ``moma pretrain mae`` on the Fashion-MNIST
config (6x192 ViT/4, batch 256, bf16) through the CLI entry point, so moma's own start-up
choice (``moma.threads``) and its training-time guard act as they do for a user. It reports
the run's wall time (process start to exit) and the time of its training steps after the
first two. Scenes:

- ``alone``;
- ``hog``: beside an equal-priority 2-thread torch job (an MLP training loop, libgomp's
  default wait policy) started 3 s before the run;
- ``hog-late``: the same job started once the run has trained its first step (what moma's
  training-time guard is for).

Policies: ``active`` (``OMP_WAIT_POLICY=ACTIVE``, the issue's "today"), ``default``
(libgomp's default spin, what moma did before it chose), ``passive``
(``OMP_WAIT_POLICY=PASSIVE``): all three with the thread count fixed to the CPUs; ``guard``:
libgomp's default spin with moma's training-time thread guard (what ``auto`` does when the
machine was idle at start); ``auto``: nothing set, moma decides. Measurements go round-robin (round, scene, policy), so a drift in
the machine's load hits every policy alike; each one records the CPUs other processes used
meanwhile (``others``: the machine's busy time from /proc/stat minus this script's children).

Goals (issue 16): ``auto`` beside the hog at most 2x its time alone; ``auto`` alone at most
5% slower than ``active`` alone. Writes OUT/contention.md (printed) and OUT/contention.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "mae" / "fashion_mnist.yaml"
POLICIES = ("active", "default", "passive", "guard", "auto")
SCENES = ("alone", "hog", "hog-late")
OMP_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MOMA_OMP_MODE", "OMP_NUM_THREADS")
WARM_STEPS = 2

HOG = r"""
import torch
torch.set_num_threads(2)
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(768, 3072), torch.nn.GELU(), torch.nn.Linear(3072, 768))
opt = torch.optim.SGD(net.parameters(), lr=1e-4)
x = torch.randn(256, 768)
while True:
    loss = net(x).square().mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
"""


def clean_env() -> dict:
    """This environment without any OpenMP choice (what a user's shell would have)."""
    return {k: v for k, v in os.environ.items() if k not in OMP_KEYS}


def policy_env(policy: str, cpus: int) -> tuple[dict, list[str]]:
    """Environment and extra CLI flags of one policy."""
    env = clean_env()
    fixed = ["--trainer.threads", str(cpus)]
    if policy == "active":
        env["OMP_WAIT_POLICY"] = "ACTIVE"
        return env, fixed
    if policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        return env, fixed
    if policy in ("default", "guard"):
        env["MOMA_OMP_MODE"] = "spin"  # "already decided": moma leaves libgomp's default
        return env, fixed if policy == "default" else []
    return env, []


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine (all processes) since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_for_quiet(max_others: float, patience_s: float) -> float:
    """Wait (up to ``patience_s``) until other processes use under ``max_others`` CPUs over
    one second; returns the last reading."""
    deadline = time.monotonic() + patience_s
    while True:
        b0, t0 = machine_busy_s(), time.monotonic()
        time.sleep(1.0)
        others = (machine_busy_s() - b0) / (time.monotonic() - t0)
        if others < max_others or time.monotonic() > deadline:
            return others
        time.sleep(2.0)


def measure(policy: str, scene: str, args: argparse.Namespace, cpus: int) -> dict:
    """One run of the child in ``scene``; returns its report plus ``others``."""
    env, flags = policy_env(policy, cpus)
    with tempfile.TemporaryDirectory(prefix="moma-contention-") as tmp:
        marker = Path(tmp) / "first-step"
        cmd = [sys.executable, __file__, "--child", "--steps", str(args.steps), "--out", tmp]
        cmd += ["--marker", str(marker), "--", *flags]
        hog = None
        b0, c0, t0 = machine_busy_s(), children_cpu_s(), time.monotonic()
        if scene == "hog":
            hog = subprocess.Popen([sys.executable, "-c", HOG], env=clean_env())
            time.sleep(3.0)
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
        if scene == "hog-late":
            while child.poll() is None and not marker.exists():
                time.sleep(0.05)
            if child.poll() is None:
                hog = subprocess.Popen([sys.executable, "-c", HOG], env=clean_env())
        out, _ = child.communicate()
        if hog is not None:
            hog.kill()
            hog.wait()
        wall = time.monotonic() - t0
        others = (machine_busy_s() - b0 - (children_cpu_s() - c0)) / wall
    if child.returncode != 0:
        raise RuntimeError(f"{policy}/{scene}: the training run failed (rc {child.returncode})")
    report = json.loads(out.strip().splitlines()[-1])
    return {"policy": policy, "scene": scene, **report, "others": round(others, 2)}


def child(args: argparse.Namespace, cli_flags: list[str]) -> None:
    """Run ``moma pretrain mae`` as the CLI does, timing its steps from inside."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from step_clock import prepare, run_timed

    mode = prepare()  # before torch loads, as `moma` does (the CLI's own call is then a no-op)
    batch = 256
    argv = [
        "pretrain", "mae", "--config", str(CONFIG),
        "--trainer.max_steps", str(args.steps), "--data.subset", str(batch * args.steps),
        "--data.batch_size", str(batch), "--trainer.out_dir", str(Path(args.out) / "run"),
        "--trainer.progress_bar", "false", "--trainer.ckpt_every_n_steps", "100000",
        *cli_flags,
    ]  # fmt: skip
    report = run_timed(argv, WARM_STEPS, args.marker or None)
    if report.pop("rc") != 0:
        sys.exit(1)
    report.update(mode=mode, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", ""))
    print(json.dumps(report))


def summarize(results: list[dict], policies: list[str], scenes: list[str]) -> tuple[str, dict]:
    """Median times per (policy, scene), ratios and the issue's two goals, as Markdown."""

    def med(policy: str, scene: str, key: str) -> float | None:
        xs = [r[key] for r in results if r["policy"] == policy and r["scene"] == scene]
        return statistics.median(xs) if xs else None

    lines = [
        "| policy | scene | runs | mode | threads | steps s (median) | wall s | x alone (steps) "
        "| others CPUs |",
        "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for p in policies:
        for s in scenes:
            rows = [r for r in results if r["policy"] == p and r["scene"] == s]
            if not rows:
                continue
            alone = med(p, "alone", "steps_s")
            steps = med(p, s, "steps_s")
            ratio = f"{steps / alone:.2f}" if alone else "-"
            thr = sorted({f"{r['threads_min']}-{r['threads_max']}" for r in rows})
            others = ", ".join(f"{r['others']:.2f}" for r in rows)
            lines.append(
                f"| {p} | {s} | {len(rows)} | {rows[0]['mode']} | {', '.join(thr)} | "
                f"{steps:.2f} | {med(p, s, 'wall_s'):.2f} | {ratio} | {others} |"
            )
    goals = {}
    auto_alone, active_alone = med("auto", "alone", "steps_s"), med("active", "alone", "steps_s")
    for scene in ("hog", "hog-late"):
        hog = med("auto", scene, "steps_s")
        if hog and auto_alone:
            goals[f"auto {scene} / auto alone (goal <= 2.0)"] = round(hog / auto_alone, 3)
        before = med("active", scene, "steps_s")
        if before and active_alone:
            goals[f"active {scene} / active alone (today)"] = round(before / active_alone, 3)
    if auto_alone and active_alone:
        goals["auto alone / active alone (goal <= 1.05)"] = round(auto_alone / active_alone, 3)
    lines += ["", "| ratio | value |", "| --- | ---: |"]
    lines += [f"| {k} | {v:.3f} |" for k, v in goals.items()]
    return "\n".join(lines) + "\n", goals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40, help="training steps per run")
    ap.add_argument("--rounds", type=int, default=2, help="measurements per policy and scene")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--scenes", default=",".join(SCENES))
    ap.add_argument("--out", default="runs/contention")
    ap.add_argument("--max_others", type=float, default=0.3,
                    help="before each run wait until other processes use fewer CPUs")  # fmt: skip
    ap.add_argument("--patience", type=float, default=60.0, help="seconds to wait for that")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--marker", default="", help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    args = ap.parse_args(argv)
    if args.child:
        child(args, extra)
        return
    policies = [p for p in args.policies.split(",") if p]
    scenes = [s for s in args.scenes.split(",") if s]
    bad = [p for p in policies if p not in POLICIES] + [s for s in scenes if s not in SCENES]
    if bad:
        ap.error(f"unknown policy/scene {bad}: policies {POLICIES}, scenes {SCENES}")
    if "alone" not in scenes:
        scenes.insert(0, "alone")
    cpus = len(os.sched_getaffinity(0))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    header = (
        f"# Contention: {args.steps} MAE steps (Fashion-MNIST config, bf16), {cpus} CPUs\n\n"
        f"    python benchmarks/contention.py {' '.join(argv)}\n\n"
        f"Start {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load {os.getloadavg()}.\n\n"
    )
    for rnd in range(args.rounds):
        for scene in scenes:
            for policy in policies:
                quiet = wait_for_quiet(args.max_others, args.patience)
                r = measure(policy, scene, args, cpus)
                r.update(round=rnd, others_before=round(quiet, 2))
                results.append(r)
                print(
                    f"round {rnd} {scene:8s} {policy:8s} steps {r['steps_s']:7.2f} s  wall "
                    f"{r['wall_s']:7.2f} s  threads {r['threads_min']}-{r['threads_max']}  "
                    f"mode {r['mode']}  others {r['others']:.2f}",
                    flush=True,
                )
                table, goals = summarize(results, policies, scenes)
                text = header + table + f"\nEnd {time.strftime('%H:%M:%S')}.\n"
                (out / "contention.md").write_text(text)
                (out / "contention.json").write_text(
                    json.dumps({"results": results, "goals": goals}, indent=2) + "\n"
                )
    print(text, end="")


if __name__ == "__main__":
    main()
