"""A randomised sweep of every subcommand's options (Hypothesis): no traceback, no hang, no
exit 0 on invalid input, and no refusal of valid input.

Each case is a quick valid command (tiny models, an image folder of 24 images, 1-2 steps)
with a few options replaced by values drawn from ``sweep_space`` (good, bad or maybe). It
runs in-process (``moma.cli.main.main``, what the console script calls) under a deadline;
expected: exit 0 when every value is good, exit 2 with exactly one ``moma: error:`` line when
one is bad, one of the two for a ``maybe``; an exception escaping ``main`` is a traceback.

Slow: ``pytest -m slow tests/faults/test_cli_sweep.py``. ``MOMA_SWEEP_EXAMPLES`` (cases per
subcommand, default 80) and ``MOMA_SWEEP_SECONDS`` (time budget per subcommand, default 300)
bound it; Hypothesis prints the failing command line, shrunk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import os
import re
import time
from pathlib import Path

import pytest
import torch

from faults.conftest import save_teacher
from faults.runs import TRACEBACK, Deadline, deadline, error_lines, two_classes
from faults.sweep_space import COMMANDS, Command, Opt
from moma.cli.main import main as moma_main
from moma.cli.main import resolve_command

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = int(os.environ.get("MOMA_SWEEP_EXAMPLES", "80"))
BUDGET_S = float(os.environ.get("MOMA_SWEEP_SECONDS", "300"))
CASE_DEADLINE_S = 180
VERDICTS = ("good", "maybe", "bad")  # a case is as bad as its worst value
ON_DISK = re.compile(r"\{(missing|file|fifo)\}|/dev/zero")  # bad only when opened


@dataclasses.dataclass
class Case:
    argv: list[str]
    verdict: str
    why: str  # the values that made it bad / maybe


class World:
    """The files and folders the sweep's values point at (one set per module), and a
    finished tiny ``moma distill`` run with a kNN result (for export, eval and report)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.counter = itertools.count()
        self.img = two_classes(root / "img")
        self.teacher = save_teacher(root / "teacher" / "t.safetensors", depth=1)
        self.file = root / "file"
        self.file.write_text("a user's file")
        self.fifo = root / "fifo"
        os.mkfifo(self.fifo)
        self.runs = root / "runs"
        self.run = self.runs / "run"
        distill = COMMANDS["distill"]
        assert moma_main(fill([*distill.argv, *distill.base], self, fresh=self.run)) == 0
        knn = COMMANDS["eval knn"]
        argv = fill([*knn.argv, *knn.base, f"--backbone={self.run}"], self, fresh=self.run)
        assert moma_main(argv) == 0

    def values(self, fresh: Path | None = None) -> dict[str, str]:
        return {
            "fresh": str(fresh or self.root / "out" / f"case{next(self.counter)}"),
            "file": str(self.file),
            "fifo": str(self.fifo),
            "img": str(self.img),
            "teacher": str(self.teacher),
            "run": str(self.run),
            "export": str(self.run / "backbone.safetensors"),
            "runs": str(self.runs),
            "missing": str(self.root / "missing" / "x"),
        }


def fill(argv: list[str], world: World, fresh: Path | None = None) -> list[str]:
    """``{name}`` fields replaced by the world's paths (one new folder per case)."""
    values = world.values(fresh)
    pattern = re.compile(r"\{(" + "|".join(values) + r")\}")
    return [pattern.sub(lambda m: values[m.group(1)], a) for a in argv]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield World(tmp_path_factory.mktemp("sweep"))
    finally:
        torch.set_num_threads(before)


@st.composite
def cases(draw, command: Command) -> Case:
    """A valid base command with 0-6 options drawn from the command's space."""
    names = draw(st.lists(st.sampled_from(sorted(command.options)), unique=True, max_size=6))
    # Mostly all-good cases or cases with one bad (or maybe) value, which show what each
    # value does on its own; sometimes any mix.
    mode = draw(st.sampled_from(["good"] * 4 + ["one"] * 5 + ["mix"]))
    odd = [n for n in names if command.options[n].bad or command.options[n].maybe]
    pick = draw(st.sampled_from(odd)) if mode == "one" and odd else None
    printing = draw(st.sampled_from([False] * 6 + [True]))  # --print-config: nothing opened
    verdict, why, args, teacher = "good", [], [], {}
    for name in names:
        opt: Opt = command.options[name]
        kinds = ["good"] * 3 + ["bad"] * bool(opt.bad) + ["maybe"] * bool(opt.maybe)
        if mode != "mix":
            kinds = [k for k in kinds if k != "good"] if name == pick else ["good"]
        kind = draw(st.sampled_from(kinds))
        value = draw(st.sampled_from(getattr(opt, kind)))
        if kind == "bad" and printing and ON_DISK.search(value):
            kind = "maybe"  # a missing file or a FIFO is a run's problem, not the config's
        if VERDICTS.index(kind) > VERDICTS.index(verdict):
            verdict = kind
        if kind != "good":
            why.append(f"{name}={value!r} ({kind})")
        if name.startswith("teachers."):
            teacher[name.split(".", 1)[1]] = value
        else:
            args.append(f"--{name}={value}")
    if teacher:
        args.append(teachers_arg(teacher))
    if draw(st.sampled_from([False] * 12 + [True])):
        args.append("--no_such_option=1")
        verdict, why = "bad", [*why, "--no_such_option (bad)"]
    if printing:
        args.append("--print-config")
    return Case([*command.argv, *command.base, *args], verdict, "; ".join(why))


def teachers_arg(fields: dict[str, str]) -> str:
    """``--teachers=[{...}]`` with the drawn fields (JSON; ``null`` and numbers unquoted)."""
    spec = {"path": "{teacher}", "name": "t"}
    for k, v in fields.items():
        spec[k] = None if v == "null" else v
    text = json.dumps([spec])
    # the weight as a number (1e400 parses as inf)
    return "--teachers=" + re.sub(r'"weight": "([^"]*)"', r'"weight": \1', text)


def run_case(case: Case, world: World) -> tuple[int, str, str]:
    """``main(argv)`` under a deadline: (exit status, stderr, the command line)."""
    argv = fill(case.argv, world)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            with deadline(CASE_DEADLINE_S):
                rc = moma_main(argv)
        except SystemExit as e:  # --help / --version, or jsonargparse's own exit
            rc = e.code if isinstance(e.code, int) else 2
        except Deadline:
            pytest.fail(f"hang (> {CASE_DEADLINE_S}s): moma {' '.join(argv)}")
        except Exception as e:  # escaping main: the console script would print a traceback
            pytest.fail(f"traceback {type(e).__name__}: {e}\n  moma {' '.join(argv)}")
    return rc, err.getvalue(), " ".join(argv)


def check(case: Case, world: World) -> None:
    t0 = time.monotonic()
    rc, err, argv = run_case(case, world)
    if os.environ.get("MOMA_SWEEP_LOG"):  # one JSON line per case, to see what ran
        rec = {"verdict": case.verdict, "rc": rc, "s": round(time.monotonic() - t0, 2),
               "why": case.why, "argv": argv}  # fmt: skip
        with open(os.environ["MOMA_SWEEP_LOG"], "a") as f:
            f.write(json.dumps(rec) + "\n")
    assert TRACEBACK not in err, f"traceback printed: moma {argv}\n{err[-2000:]}"
    if rc == 2:
        lines = error_lines(err)
        assert len(lines) == 1, f"{len(lines)} error lines: moma {argv}\n{err[-2000:]}"
    allowed = {"good": {0}, "bad": {2}, "maybe": {0, 2}}[case.verdict]
    assert rc in allowed, (
        f"exit {rc} for a {case.verdict} case ({case.why or 'all values good'}):\n"
        f"  moma {argv}\n{err[-2000:]}"
    )


def sweep(command: str):
    """A Hypothesis test of ``command``: EXAMPLES cases within BUDGET_S seconds."""
    state = {"end": None}

    @pytest.mark.slow
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=bool(os.environ.get("MOMA_SWEEP_DERANDOMIZE")),
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases(COMMANDS[command]))
    def test(world, case):
        state["end"] = state["end"] or time.monotonic() + BUDGET_S
        if time.monotonic() > state["end"]:  # time budget spent: the rest pass unrun
            return
        check(case, world)

    test.__name__ = f"test_sweep_{command.replace(' ', '_')}"
    return test


for _command in COMMANDS:
    globals()[f"test_sweep_{_command.replace(' ', '_')}"] = sweep(_command)


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv, ok",
    [(["--version"], True), (["--help"], True), (["eval", "--help"], True), ([], False),
     (["nope"], False), (["eval"], False), (["eval", "nope"], False), (["-v"], False),
     (["distill", "--config"], False), (["export"], False)],
)  # fmt: skip
def test_sweep_root(world, argv, ok):
    check(Case(argv, "good" if ok else "bad", ""), world)


def _fields(cls: type, prefix: str = "") -> set[str]:
    out = set()
    for f in dataclasses.fields(cls):
        t = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(t):
            out |= _fields(type(t), f"{prefix}{f.name}.")
        elif f.name == "teachers":
            from moma.commands.distill import TeacherConfig

            out |= _fields(TeacherConfig, f"{prefix}teachers.")
        else:
            out.add(f"{prefix}{f.name}")
    return out


def test_sweep_covers_every_option():
    """Fast: every option of every subcommand has values in the sweep's space."""
    from moma.cli.main import COMMANDS as CLI

    for path in CLI:
        cfg_cls, _ = resolve_command(path)
        missing = _fields(cfg_cls) - set(COMMANDS[" ".join(path)].options)
        assert not missing, f"moma {' '.join(path)}: no sweep values for {sorted(missing)}"
