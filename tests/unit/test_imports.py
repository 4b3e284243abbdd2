"""ivc_tasks' imports point down (issue 15): no import circle, counting imports under
TYPE_CHECKING and inside functions; status and destroy import nothing of rotate; resources/
imports no step and no task; the declaration model imports nothing of ivc; the spec reading
imports no operation. Read from the source with ``ast`` (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ivc_tasks"


def module_files() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = module_files()


def imported(name: str, path: Path) -> set[str]:
    """The ivc_tasks modules that module ``name`` imports anywhere in its source (top level,
    functions, ``if TYPE_CHECKING:``); ``from package import module`` counts the module."""
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
            subs = {f"{base}.{alias.name}" for alias in node.names} & MODULES.keys()
            found |= subs
            if len(subs) < len(node.names):  # a name defined in ``base`` itself
                found.add(base)
    return {m for m in found if m in MODULES} - {name}


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import each other, directly or not (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in sorted(graph[node]):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            group = []
            while True:
                item = stack.pop()
                group.append(item)
                if item == node:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in GRAPH[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_the_walk_sees_every_kind_of_import():
    """The control: the walk finds imports inside functions and under TYPE_CHECKING."""
    assert "ivc_tasks.spec_model" in GRAPH["ivc_tasks.userdata"]  # under TYPE_CHECKING
    assert "ivc_tasks.steps.destroy" in GRAPH["ivc_tasks.tasks.rotate"]  # inside a task
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_in_ivc_tasks():
    assert circles(GRAPH) == []


@pytest.mark.parametrize("step", ["ivc_tasks.steps.status", "ivc_tasks.steps.destroy"])
def test_status_and_destroy_import_nothing_of_rotate(step):
    assert not {m for m in reachable(step) if m.startswith("ivc_tasks.steps.rotate")}


def test_resources_import_no_step_and_no_task():
    wrong = {f"{name} -> {dep}" for name, deps in GRAPH.items()
             if name.startswith("ivc_tasks.resources") for dep in deps
             if dep.startswith(("ivc_tasks.steps", "ivc_tasks.tasks"))}
    assert wrong == set()


def test_the_declaration_model_imports_nothing_of_ivc_and_reading_it_no_operation():
    assert GRAPH["ivc_tasks.spec_model"] == set()
    for name in ("ivc_tasks.spec", "ivc_tasks.spec_loader", "ivc_tasks.spec_rules",
                 "ivc_tasks.userdata"):
        operations = {m for m in reachable(name)
                      if m == "ivc_tasks.cloud"  # not cloudconfig: the schema check is pure
                      or m.startswith(("ivc_tasks.resources", "ivc_tasks.steps", "ivc_tasks.tasks",
                                       "ivc_tasks.devcloud"))}
        assert operations == set(), name
