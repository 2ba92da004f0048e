"""Imports flow one way (docs/ARCHITECTURE.md, "Layers"): ground-level helpers, then data and
models, methods, train, eval, report (and bench), commands, the CLI and the one-call API.

Read from the source with ``ast`` (nothing is imported): no module imports one on a higher
floor, the module-level imports have no cycle, and an import inside a function is there only
to save start-up time, says so (``# lazy: <reason>`` on its line) and is listed in
:data:`LAZY`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Ground level: imported by every floor, import none of them.
GROUND = ("errors", "paths", "validation", "threads", "integrity", "seeding", "moved", "run_folder")
FLOORS = {
    **dict.fromkeys(GROUND, 0),
    "data": 1,
    "models": 1,
    "methods": 2,
    "train": 3,
    "eval": 4,
    "report": 5,
    "bench": 5,  # times the methods' steps and the data path; used by the bench command only
    "commands": 6,
    "quickstart": 6,  # the old path of moma.commands.quickstart (names forwarded by moma.moved)
    "cli": 7,
    "api": 8,
}

#: module -> the moma modules it imports inside a function (each line says why: ``# lazy:``).
LAZY: dict[str, set[str]] = {
    # `import moma` and the one-call API stay cheap (no torch until a job runs)
    "moma": {"moma.models.vit", "moma.models.checkpoint", "moma.api", "moma.models.export"},
    "moma.api": {"moma.commands.record", "moma.cli.main"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> int | None:
    """The floor of a moma module; ``None`` for the package itself (``moma/__init__.py``
    only re-exports lazily and is loaded with any submodule)."""
    parts = module.split(".")
    if parts[0] != "moma" or len(parts) == 1:
        return None
    return FLOORS[parts[1]]


MODULES = {module_name(p): p for p in sorted((SRC / "moma").rglob("*.py"))}


def imports(module: str) -> list[tuple[str, int, bool, bool]]:
    """``(imported module, line, inside a function, under TYPE_CHECKING)`` of each import of
    a moma module (``from moma.x import y`` names ``moma.x.y`` when that is a module)."""
    path = MODULES[module]
    found: list[tuple[str, int, bool, bool]] = []

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            func = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            tc = type_checking or (
                isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
            )
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append((alias.name, child.lineno, in_function, type_checking))
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                for alias in child.names:
                    sub = f"{child.module}.{alias.name}"
                    target = sub if sub in MODULES else child.module
                    found.append((target, child.lineno, in_function, type_checking))
            visit(child, func, tc)

    visit(ast.parse(path.read_text()), False, False)
    return [f for f in found if f[0] == "moma" or f[0].startswith("moma.")]


def test_every_module_has_a_floor():
    assert {m: floor(m) for m in MODULES if m != "moma"}  # FLOORS raises on an unknown folder


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_one_on_a_higher_floor(module):
    mine = floor(module)
    if mine is None:
        return
    up = [
        f"line {line}: {target} (floor {floor(target)} > {mine})"
        for target, line, _, _ in imports(module)
        if floor(target) is not None and floor(target) > mine
    ]
    assert not up, f"{module} imports a higher floor: {up}"


def test_module_level_imports_have_no_cycle():
    graph = {
        m: {t for t, _, func, tc in imports(m) if not func and not tc and t in MODULES}
        for m in MODULES
    }
    cycles = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def walk(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append([*path[path.index(t) :], t])
            elif t not in state:
                walk(t, [*path, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m, [m])
    assert not cycles, cycles


def test_an_import_inside_a_function_is_lazy_on_purpose_and_says_why():
    problems = []
    listed: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        for target, line, func, _ in imports(module):
            if not func:
                continue
            listed.setdefault(module, set()).add(target)
            if "# lazy:" not in lines[line - 1]:
                problems.append(f"{module} line {line}: {target} has no '# lazy: <reason>'")
            if target not in LAZY.get(module, set()):
                problems.append(f"{module} line {line}: {target} is not listed in LAZY")
    stale = {m: LAZY[m] - listed.get(m, set()) for m in LAZY if LAZY[m] - listed.get(m, set())}
    assert not problems and not stale, (problems, stale)


def test_no_module_imports_a_name_through_its_old_path():
    """moma.moved serves old import paths to users; moma itself imports from the new ones."""
    from moma.moved import MOVED

    old = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in MOVED:
                old += [
                    f"{module} line {node.lineno}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name in MOVED[node.module]
                ]
    assert not old, old
