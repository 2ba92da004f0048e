"""The Markdown report of a benchmark run (``OUT/bench.md``)."""

from __future__ import annotations

from moma.report.table import format_duration


def _f(x: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def _rate(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def _duration(s: float) -> str:
    return format_duration(s, hour_digits=1)


def machine_lines(machine: dict) -> list[str]:
    """The machine facts as a bullet list."""
    keys = [
        ("device", "device"),
        ("cpu", "CPU"),
        ("cores", "logical cores"),
        ("threads", "torch threads"),
        ("torch", "torch"),
        ("timm", "timm"),
        ("fused_attn", "timm fused attention (SDPA)"),
        ("omp", "OMP_WAIT_POLICY"),
        ("date", "date"),
        ("load_start", "load average (1/5/15 min) at start"),
        ("load_end", "load average (1/5/15 min) at end"),
    ]
    return [f"- {label}: {machine[k]}" for k, label in keys if k in machine]


def rows_table(rows: list[dict]) -> list[str]:
    """One Markdown table of measurement rows."""
    lines = [
        "| case | model | prec | batch | img/s median | img/s IQR | img/s min-max "
        "| ms/step | GFLOP/img | TFLOP/s | % peak | load | cpu |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ips = r.get("images_per_s")
        gflop = None if r.get("flops_per_image") is None else r["flops_per_image"] / 1e9
        frac = r.get("peak_fraction")
        cpu_ms = r["time"].get("cpu_ms_median")
        busy = None if cpu_ms is None else cpu_ms / r["time"]["ms_median"]
        lines.append(
            "| "
            + " | ".join(
                [
                    r["name"],
                    r["model"],
                    r["precision"],
                    _f(r.get("batch"), "{}"),
                    "-" if ips is None else _rate(ips["median"]),
                    "-" if ips is None else f"{_rate(ips['q1'])}-{_rate(ips['q3'])}",
                    "-" if ips is None else f"{_rate(ips['min'])}-{_rate(ips['max'])}",
                    _f(r["time"]["ms_median"]),
                    _f(gflop, "{:.3f}"),
                    _f(r.get("achieved_tflops"), "{:.3f}"),
                    _f(None if frac is None else 100 * frac, "{:.0f}%"),
                    _f(r.get("load1"), "{:.1f}"),
                    _f(busy, "{:.1f}"),
                ]
            )
            + " |"
        )
    return lines


def data_cpu_table(rows: list[dict]) -> list[str]:
    """Streamed data rows by throughput per CPU: every process counted (DataLoader workers)."""
    lines = [
        "| size | case | how | batch | img/s overall | CPU cores busy | img per CPU-second |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['name']} | {r['model']} | {r['batch']} "
            f"| {_f(r.get('images_per_s_overall'), '{:.0f}')} "
            f"| {_f(r.get('cpu_cores_all'), '{:.2f}')} | {_f(r.get('images_per_cpu_s'), '{:.0f}')} |"
        )
    return lines


def targets_table(targets: list[dict]) -> list[str]:
    lines = [
        "| target | size | prec | value | goal | met | detail |",
        "| --- | --- | --- | ---: | --- | --- | --- |",
    ]
    for t in targets:
        v = t["value"]
        value = f"{100 * v:.1f}%" if "%" in t["goal"] else f"{v:.2f}"
        met = "yes" if t["ok"] else "**no**"
        lines.append(
            f"| {t['target']} | {t['preset']} | {t['precision']} | {value} | {t['goal']} "
            f"| {met} | {t['detail']} |"
        )
    return lines


def epoch_table(epochs: list[dict]) -> list[str]:
    lines = [
        "| method | size | prec | epoch | compute | data | total | x MAE | x MoCo v3 |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in epochs:
        lines.append(
            f"| {e['method']} | {e['preset']} | {e['precision']} | {e['epoch']} "
            f"({e['images']} img) | {_duration(e['step_s'])} | {_duration(e['data_s'])} "
            f"| {_duration(e['total_s'])} | {_f(e['vs_mae'], '{:.2f}')} "
            f"| {_f(e['vs_mocov3'], '{:.2f}')} |"
        )
    return lines


def render(result: dict) -> str:
    """The whole report: machine, command, one table per size preset, targets, epochs."""
    out = ["# moma bench", "", f"Command: `{result['command']}`", ""]
    if not result.get("complete", True):
        out += ["**Partial results: the run has not finished (or was cut short).**", ""]
    out += machine_lines(result["machine"])
    out += [
        "",
        "img/s: median over the timed steps after warm-up, with the interquartile range and "
        "min-max; GFLOP/img counted by `torch.utils.flop_counter` (matmul, conv, attention; "
        "forward + backward); % peak: achieved FLOP/s over the measured matmul peak of the "
        "same precision (the fastest matmul of the run); load: 1-minute load average when the "
        "case started; cpu: CPU seconds this process used per wall second (about the thread "
        "count when it had the cores to itself).",
        "",
        "## Matmul peak",
        "",
    ]
    out += rows_table([r for r in result["rows"] if r["group"] == "peak"])
    presets = list(dict.fromkeys(r["preset"] for r in result["rows"] if r["group"] != "peak"))
    for name in presets:
        out += ["", f"## Size: {name}", ""]
        out += rows_table([r for r in result["rows"] if r["preset"] == name])
    data = [r for r in result["rows"] if r.get("images_per_cpu_s") is not None]
    if data:
        out += ["", "## Data pipeline per CPU (this process and its workers)", ""]
        out += data_cpu_table(data)
    if result["targets"]:
        out += ["", "## Targets", ""] + targets_table(result["targets"])
    if result["epochs"]:
        out += ["", "## One epoch", ""] + epoch_table(result["epochs"])
    return "\n".join(out) + "\n"
