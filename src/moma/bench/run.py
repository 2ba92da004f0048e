"""``moma bench``: throughput, FLOPs and FLOP/s of every training step, in one process.

    moma bench                              # 32 px Fashion-MNIST sizes, fp32 and bf16
    moma bench --sizes 224 --precision bf16 # ViT-Ti/S/B at 224 px (slow on a CPU)
    moma bench --device cuda                # on a GPU

Writes ``OUT/bench.md`` (also printed) and ``OUT/bench.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import gc
import json
import logging
import os
import platform
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from moma.bench.cache_cases import cache_cases
from moma.bench.cases import (
    Case,
    baseline_cases,
    batch_sweep_cases,
    moma_cases,
    student_cases,
    teacher_cases,
)
from moma.bench.compile_cases import compile_cases
from moma.bench.data_cases import data_cases
from moma.bench.flops import count_flops, matmul_peak
from moma.bench.presets import SizePreset, get_presets
from moma.bench.report import render
from moma.bench.targets import check_targets, epoch_costs
from moma.bench.timing import Timing, time_interleaved, time_steps
from moma.errors import ConfigError
from moma.models.attention import use_fused_attention
from moma.moved import forwarder
from moma.paths import output_folder

log = logging.getLogger(__name__)
__getattr__ = forwarder(__name__)  # run_bench moved to moma.commands.bench

GROUPS = ("teacher", "student", "moma", "mae", "mocov3", "batch", "cache", "data", "compile")
# compile only when asked: inductor takes minutes on a CPU
DEFAULT_GROUPS = tuple(g for g in GROUPS if g != "compile")
PRECISIONS = ("fp32", "bf16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class BenchConfig:
    """Options of ``moma bench``.

    Attributes:
        sizes: ``fmnist`` (32 px, 6x192 ViT/4), ``224`` (ViT-Ti/S/B/16), ``tiny`` (smoke
            test) or a comma list, e.g. ``fmnist,224``.
        precision: ``fp32``, ``bf16`` (autocast) or ``both``.
        batch_size: images per step; default: the size's own (256 at 32 px, 16 at 224 px).
        steps: timed steps per case; default: the size's own (10 at 32 px, 3 at 224 px).
        warmup: untimed steps before them; default: the size's own (3, 1).
        out_dir: where ``bench.md`` and ``bench.json`` go.
        device: ``cpu``, ``cuda`` or ``auto`` (cuda when available).
        threads: torch intra-op threads (default: torch's choice).
        mask_ratios: the student step's mask ratios.
        moma_mask_ratio: the mask ratio of the whole MOMA steps.
        batch_sweep: extra batch sizes for the two-teacher MOMA step; default: the size's
            own (32/64/128 at 32 px, 4/8 at 224 px); ``[]`` for none.
        groups: the case groups to run (default all but compile): teacher, student, moma,
            mae, mocov3, batch, cache (the teacher-target cache: cached vs uncached MOMA steps
            vs MAE, data included, and the cache build), data, compile (eager vs
            ``--trainer.compile`` steps). The matmul peak always runs.
        cache_build_batch: teacher batch of the cache-build row (default: 1024 on a CPU,
            4096 on a GPU, as ``moma distill`` builds).
        jpeg_images: JPEGs generated for the image-folder pipeline (0 skips it).
        data_workers: DataLoader workers of the streaming image-folder pipeline.
        matmul_size: side of the square matmul that measures the peak.
        seed: seed of the random inputs and data order.
        attention: timm attention kernel of every model built: ``auto`` (fused SDPA on a GPU,
            plain softmax on the CPU, as training and evaluation choose), ``fused`` or ``math``.
        compile: the compile mode of the compile group (``blocks``, ``blocks-nograph``).
        compile_backend: torch.compile backend of the compile group (``inductor``; tests
            use ``aot_eager``).
    """

    sizes: str = "fmnist"
    precision: str = "both"
    batch_size: int | None = None
    steps: int | None = None
    warmup: int | None = None
    out_dir: str = "runs/bench"
    device: str = "cpu"
    threads: int | None = None
    mask_ratios: list[float] = field(default_factory=lambda: [0.0, 0.75, 0.9, 0.95])
    moma_mask_ratio: float = 0.9
    batch_sweep: list[int] | None = None
    groups: list[str] | None = None
    jpeg_images: int = 512
    data_workers: int = 2
    matmul_size: int = 2048
    cache_build_batch: int | None = None
    seed: int = 0
    attention: str = "auto"
    compile: str = "blocks"
    compile_backend: str = "inductor"

    def check(self) -> None:
        """The bench's own rules (groups, counts, mask ratios, precision, sizes), naming the
        option (raises `ConfigError`)."""
        _check(self)
        precisions_of(self.precision)
        get_presets(self.sizes)


_DEFAULT_SWEEPS = {"fmnist": [32, 64, 128], "224": [4, 8], "tiny": []}


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (``cuda:N``) or ``auto``; refuses cuda without a GPU."""
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("bench device cuda: no CUDA GPU is visible to torch")
    if not (name == "cpu" or name.startswith("cuda")):
        raise ConfigError(f"bench device must be cpu, cuda or auto, got {name!r}")
    return torch.device(name)


def precisions_of(precision: str) -> list[str]:
    """``fp32`` / ``bf16`` / ``both`` -> the list of precisions to run."""
    p = str(precision).strip().lower()
    if p == "both":
        return list(PRECISIONS)
    if p not in PRECISIONS:
        raise ConfigError(f"bench precision must be fp32, bf16 or both, got {precision!r}")
    return [p]


def _check(cfg: BenchConfig) -> list[str]:
    groups = list(DEFAULT_GROUPS) if cfg.groups is None else [str(g) for g in cfg.groups]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ConfigError(f"bench groups must be among {', '.join(GROUPS)}, got {unknown}")
    for key in ("batch_size", "steps"):
        v = getattr(cfg, key)
        if v is not None and int(v) < 1:
            raise ConfigError(f"bench {key} must be >= 1, got {v}")
    if cfg.warmup is not None and int(cfg.warmup) < 0:
        raise ConfigError(f"bench warmup must be >= 0, got {cfg.warmup}")
    for r in [*cfg.mask_ratios, cfg.moma_mask_ratio]:
        if not 0.0 <= float(r) <= 0.98:
            raise ConfigError(f"bench mask ratios must be in [0, 0.98], got {r}")
    return groups


def machine_info(device: torch.device) -> dict:
    """CPU/GPU model, cores, threads, versions, date and load: the facts a table needs."""
    import timm
    from timm.layers import use_fused_attn

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "device": str(device),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "fused_attn": bool(use_fused_attn()),
        "omp": os.environ.get("OMP_WAIT_POLICY", "unset (libgomp default: spin)"),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_start": _load(),
    }
    if device.type == "cuda":
        info["device"] = f"{device} ({torch.cuda.get_device_name(device)})"
    return info


def _load() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _load1() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return None


def make_row(case: Case, preset: str, timing: Timing, flops: int | None, load1) -> dict:
    """One result row (``peak_fraction`` is filled in at the end of the run, against the
    best matmul peak seen)."""
    row = {
        "preset": preset,
        "group": case.group,
        "key": case.key,
        "name": case.name,
        "model": case.model,
        "precision": case.precision,
        "batch": case.batch,
        **case.extra,
        "images_per_s": timing.rate(case.batch),
        "time": timing.summary(),
        "seconds": timing.seconds,
        "flops_per_image": None if flops is None else flops / case.batch,
        "achieved_tflops": None if flops is None else flops / timing.median / 1e12,
        "peak_fraction": None,
        "load1": load1,
    }
    ips = row["images_per_s"]
    log.info(
        "%s | %s | %s | %s: %s img/s (IQR %s-%s)%s",
        preset, case.name, case.model, case.precision, f"{ips['median']:.1f}",
        f"{ips['q1']:.1f}", f"{ips['q3']:.1f}",
        "" if flops is None else f", {row['achieved_tflops']:.3f} TFLOP/s",
    )  # fmt: skip
    return row


def measure_set(
    cases: list[Case], preset: str, steps: int, warmup: int, device: torch.device
) -> list[dict]:
    """Time a set of cases that are compared with each other round-robin (see
    :func:`~moma.bench.timing.time_interleaved`), then count each one's FLOPs."""
    if not cases:
        return []
    load1 = _load1()
    log.info("timing %d case(s) round-robin: %s", len(cases), ", ".join(c.key for c in cases))
    timings = time_interleaved([c.step for c in cases], steps, warmup, device)
    rows = []
    for case, timing in zip(cases, timings):
        flops = count_flops(case.step) if case.flops else None
        rows.append(make_row(case, preset, timing, flops, load1))
    return rows


def measure_each(
    cases: Iterable[Case], preset: str, steps: int, warmup: int, device: torch.device
) -> list[dict]:
    """Time cases one after the other (each built only when its turn comes)."""
    rows = []
    for case in cases:
        load1 = _load1()
        timing = time_steps(case.step, steps, warmup, device)
        flops = count_flops(case.step) if case.flops else None
        rows.append(make_row(case, preset, timing, flops, load1))
        if hasattr(case.step, "cpu_summary"):  # data streams: CPU of the workers too
            rows[-1].update(case.step.cpu_summary(steps))
        del case
    gc.collect()
    return rows


def steps_set(args: tuple, groups: list[str], mask_ratio: float) -> list[Case]:
    """MOMA steps with their parts, and the MAE and MoCo v3 steps, as selected."""
    cases: list[Case] = []
    if "moma" in groups:
        cases += moma_cases(*args, mask_ratio)
    if "mae" in groups or "mocov3" in groups:
        cases += [c for c in baseline_cases(*args) if c.group in groups]
    return cases


def preset_rows(
    p: SizePreset,
    cfg: BenchConfig,
    groups: list[str],
    precisions: list[str],
    device: torch.device,
    rows: list[dict],
    save: Callable[[], None] = lambda: None,
) -> None:
    """Append the rows of one size preset to ``rows``, calling ``save`` after each set."""
    batch = int(cfg.batch_size or p.batch_size)
    steps = int(cfg.steps or p.steps)
    warmup = int(p.warmup if cfg.warmup is None else cfg.warmup)
    sweep = _DEFAULT_SWEEPS.get(p.name, []) if cfg.batch_sweep is None else cfg.batch_sweep
    sweep = [int(b) for b in sweep if int(b) != batch]
    seed = int(cfg.seed)
    log.info("size %s: batch %d, %d steps after %d warm-up", p.name, batch, steps, warmup)
    for prec in precisions:
        args = (p, prec, batch, device, seed)
        # Each set is built when its turn comes and freed after it.
        sets: list[Callable[[], list[Case]]] = []
        if "teacher" in groups:
            sets.append(lambda args=args: list(teacher_cases(*args)))
        if "student" in groups:
            sets.append(lambda args=args: list(student_cases(*args, list(cfg.mask_ratios))))
        # Whole steps, their parts and the baselines are compared: one round-robin set.
        sets.append(lambda args=args: steps_set(args, groups, float(cfg.moma_mask_ratio)))
        if "cache" in groups:
            build = int(cfg.cache_build_batch or (4096 if device.type == "cuda" else 1024))
            sets.append(
                lambda args=args, build=build: list(
                    cache_cases(*args, float(cfg.moma_mask_ratio), build_batch=build)
                )
            )
        if "compile" in groups:
            sets.append(
                lambda args=args: list(
                    compile_cases(
                        *args, float(cfg.moma_mask_ratio), cfg.compile, cfg.compile_backend
                    )  # fmt: skip
                )
            )
        if "batch" in groups and sweep:
            sets.append(
                lambda prec=prec: list(
                    batch_sweep_cases(p, prec, sweep, device, seed, float(cfg.moma_mask_ratio))
                )
            )
        for build in sets:
            rows += measure_set(build(), p.name, steps, warmup, device)
            gc.collect()
            save()
    if "data" in groups:
        cases = data_cases(
            p.img_size,
            batch,
            device,
            p.embedded_data,
            int(cfg.jpeg_images),
            p.jpeg_side,
            int(cfg.data_workers),
            seed,
        )
        rows += measure_each(cases, p.name, max(steps, 10), max(warmup, 2), device)
        save()


def peak_rows(precisions: list[str], device: torch.device, n: int, when: str) -> list[dict]:
    """The matmul peak of each precision (measured at the start and at the end of a run)."""
    rows = []
    for prec in precisions:
        load1 = _load1()
        flops, timing = matmul_peak(device, _DTYPES[prec], n)
        rows.append(
            {
                "preset": "-",
                "group": "peak",
                "key": f"peak:{prec}:{when}",
                "name": f"matmul {n}x{n}x{n} ({when}, fastest)",
                "model": "torch.mm",
                "precision": prec,
                "batch": None,
                "images_per_s": None,
                "time": timing.summary(),
                "seconds": timing.seconds,
                "flops_per_image": None,
                "achieved_tflops": flops / 1e12,
                "peak_fraction": None,
                "load1": load1,
            }
        )
        log.info("matmul peak %s (%s): %.3f TFLOP/s", prec, when, flops / 1e12)
    return rows


def best_peaks(rows: list[dict]) -> dict[str, float]:
    """The best matmul TFLOP/s of each precision over the run's peak rows."""
    peaks: dict[str, float] = {}
    for r in rows:
        if r["group"] == "peak":
            peaks[r["precision"]] = max(peaks.get(r["precision"], 0.0), r["achieved_tflops"])
    return peaks


def command_line(cfg: BenchConfig) -> str:
    """The ``moma bench`` command that reproduces ``cfg`` (non-default options only)."""
    default = BenchConfig()
    parts = ["moma bench"]
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if v != getattr(default, f.name):
            text = json.dumps(v) if isinstance(v, list) else str(v)
            parts.append(f"--{f.name} {text}")
    return " ".join(parts)


@contextlib.contextmanager
def _timm_attention(fused: bool) -> Iterator[None]:
    """timm's default attention kernel for the models built inside the block."""
    from timm.layers import set_fused_attn, use_fused_attn

    before = use_fused_attn()
    set_fused_attn(fused)
    try:
        yield
    finally:
        set_fused_attn(before)


def run_benchmark(cfg: BenchConfig) -> dict:
    """Run the benchmark of a checked config, write ``OUT/bench.md`` and ``OUT/bench.json``,
    print the table (``moma bench`` is :func:`moma.commands.bench.run_bench`).

    Returns the result: ``command``, ``machine``, ``config``, ``rows`` (one per case),
    ``targets`` and ``epochs``.
    """
    device = resolve_device(cfg.device)
    with _timm_attention(use_fused_attention(device, cfg.attention)):
        return _run_bench(cfg, device)


def _run_bench(cfg: BenchConfig, device: torch.device) -> dict:
    groups = _check(cfg)
    precisions = precisions_of(cfg.precision)
    presets = get_presets(cfg.sizes)
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(int(cfg.seed))
    machine = machine_info(device)
    log.info("bench on %s, %s, %d torch threads", machine["device"], machine["cpu"],
             machine["threads"])  # fmt: skip

    out = output_folder(cfg.out_dir, "out_dir")
    out.mkdir(parents=True, exist_ok=True)

    def result_of(rows: list[dict], complete: bool) -> dict:
        peaks = best_peaks(rows)
        for r in rows:
            if r.get("achieved_tflops") is not None and r["precision"] in peaks:
                r["peak_fraction"] = r["achieved_tflops"] / peaks[r["precision"]]
        return {
            "command": command_line(cfg),
            "complete": complete,
            "machine": machine,
            "config": dataclasses.asdict(cfg),
            "peaks_tflops": peaks,
            "rows": rows,
            "targets": check_targets(rows, presets, precisions),
            "epochs": epoch_costs(rows, presets, precisions),
        }

    def write(result: dict) -> str:
        markdown = render(result)
        (out / "bench.md").write_text(markdown)
        (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
        return markdown

    rows = peak_rows(precisions, device, int(cfg.matmul_size), "start")

    def save() -> None:
        """Partial results after every set: a run cut short still leaves what it measured."""
        write(result_of(rows, complete=False))

    for p in presets:
        preset_rows(p, cfg, groups, precisions, device, rows, save)
    rows += peak_rows(precisions, device, int(cfg.matmul_size), "end")
    machine["load_end"] = _load()
    result = result_of(rows, complete=True)
    markdown = write(result)
    print(markdown, end="")
    log.info("wrote %s and %s", out / "bench.md", out / "bench.json")
    return result
