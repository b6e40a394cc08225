"""The package's shape, read from its sources: one namespace, Ray only at the edge, no import cycles, the
rollout side and the learner apart, modules a reader can hold in their head."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("core", "actors", "learner", "reward", "launch")
EDGE = "launch/distributed/"  # the one folder that may import Ray (and torch.distributed, besides the engine)
MAX_LINES = 420


def sources() -> dict[str, Path]:
    """Module name (arbor.x.y) -> file, for every module of the package."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join(["arbor", *parts])] = path
    return out


def imports(path: Path) -> list[str]:
    """Every module a file imports, at any depth except under ``if TYPE_CHECKING:`` (types only)."""
    tree = ast.parse(path.read_text())
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for child in node.body
        for n in ast.walk(child)
    }
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names]  # `from arbor.x import module`
    return out


def graph() -> dict[str, set[str]]:
    mods = sources()
    return {name: {m for m in imports(path) if m in mods and m != name} for name, path in mods.items()}


def test_only_the_edge_folder_imports_ray():
    offenders = [
        str(path.relative_to(REPO))
        for path in sources().values()
        if not str(path.relative_to(REPO)).startswith(EDGE)
        and any(m == "ray" or m.startswith("ray.") for m in imports(path))
    ]
    assert offenders == []


def test_every_import_of_the_project_goes_through_arbor():
    bare = [
        f"{path.relative_to(REPO)}: {m}"
        for path in sources().values()
        for m in imports(path)
        if m.split(".")[0] in PACKAGES
    ]
    assert bare == []


def test_there_are_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_actors_and_learner_never_import_each_other_and_core_imports_neither():
    wrong = []
    for name, deps in graph().items():
        for dep in deps:
            side, other = name.split(".")[1], dep.split(".")[1]
            if {side, other} == {"actors", "learner"} or (side == "core" and other != "core"):
                wrong.append(f"{name} -> {dep}")
            if side == "reward" and other in ("actors", "learner", "launch"):
                wrong.append(f"{name} -> {dep}")
    assert wrong == []


def test_no_module_is_over_about_400_lines():
    long = {
        str(p.relative_to(REPO)): n for p in sources().values() if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    long |= {
        str(p.relative_to(REPO)): n
        for p in (REPO / "bench").glob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_no_test_imports_the_benchmarks():
    tests = [p for p in (REPO / "tests").rglob("*.py")]
    assert [str(p) for p in tests if any(m == "bench" or m.startswith("bench.") for m in imports(p))] == []
