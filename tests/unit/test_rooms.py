"""The rooms of tasks/ stay honest: no import goes up a room, and no module imports itself round a circle.

Every import counts: at the top, inside a function, and under ``TYPE_CHECKING``. The order of the
rooms is the one docs/development.md draws; a module directly under tasks/ is a step.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Lowest first. A room may import its own modules and the rooms before it, never one after it.
ROOMS = ("core", "oci", "run", "builders", "helm", "proof", "supplychain", "promote", "control", "forge", "steps",
         "flows")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {module_name(p): p for package in ("tasks", "flows") for p in (ROOT / package).rglob("*.py")}
    assert "tasks.core.errors" in found, "the walk found no room"
    return found


def room(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "flows":
        return "flows"
    if len(parts) >= 3 or (len(parts) == 2 and parts[1] in ROOMS):
        return parts[1]
    return "steps"  # tasks.<step> and the package tasks itself


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """Every project module ``module`` imports, with the line, wherever the import statement stands."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for named in targets:
            found = named
            while found and found not in known:
                found = found.rpartition(".")[0]
            if found and found != module:
                yield found, node.lineno


def graph() -> dict[str, dict[str, int]]:
    known = modules()
    return {name: dict(imports(name, path, known)) for name, path in known.items()}


def upward_imports(edges: dict[str, dict[str, int]]) -> list[str]:
    """``module:line imports target`` for each import of a later room, or of a sibling room of the same rank."""
    rank = {name: i for i, name in enumerate(ROOMS)}
    bad = []
    for module, targets in edges.items():
        for target, line in targets.items():
            here, there = room(module), room(target)
            if there != here and rank[there] >= rank[here]:
                bad.append(f"{module}:{line} ({here}) imports {target} ({there})")
    return sorted(bad)


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_goes_up_a_room() -> None:
    """A lower room never imports a higher one (TYPE_CHECKING and function-level imports included)."""
    assert upward_imports(graph()) == []


def test_no_import_cycle() -> None:
    """No module reaches itself through the modules it imports."""
    assert cycles(graph()) == []


def test_only_steps_live_directly_under_tasks() -> None:
    """A module directly under tasks/ defines a Prefect task: everything else lives in a room."""
    loose = []
    for path in (ROOT / "tasks").glob("*.py"):
        if path.name != "__init__.py" and "@task(" not in path.read_text(encoding="utf-8"):
            loose.append(path.name)
    assert loose == []


def test_every_room_says_what_lives_there() -> None:
    """Each room's package docstring says what it holds and what it may import."""
    for name in ROOMS[:-2]:
        doc = ast.get_docstring(ast.parse((ROOT / "tasks" / name / "__init__.py").read_text(encoding="utf-8")))
        assert doc and "import" in doc.lower(), f"tasks/{name}/__init__.py needs a docstring naming what it may import"


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b": 1}, "b": {"a": 2}}, [["a", "b"]]),
        ({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}, [["a", "b", "c"]]),
        ({"a": {"b": 1}, "b": {}}, []),
    ],
)
def test_the_cycle_finder_finds_circles(edges: dict[str, dict[str, int]], expected: list[list[str]]) -> None:
    """The check itself can fail: a circle of two or three modules is found, a line is not."""
    assert cycles(edges) == expected


def test_the_room_check_sees_an_upward_import() -> None:
    """A core module importing a step, or a sibling room of equal standing, is reported."""
    edges = {"tasks.core.cmd": {"tasks.build": 3}, "tasks.oci.registry": {"tasks.core.errors": 1}}
    assert upward_imports(edges) == ["tasks.core.cmd:3 (core) imports tasks.build (steps)"]
