"""memspec's modules import in one direction: no circle, and the report never reaches
back into the compile step, even through an import inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "src" / "memspec"


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _target(name: str, node: ast.ImportFrom, modules: dict[str, Path]) -> str | None:
    """The module `from X import ...` names: X, resolving a relative X against `name`."""
    if node.level:
        is_package = modules[name].name == "__init__.py"
        base = name.split(".")[: len(name.split(".")) - node.level + is_package]
        return ".".join([*base, node.module] if node.module else base)
    return node.module


def _imports(name: str, modules: dict[str, Path], lazy: bool) -> set[str]:
    """The package's modules `name` imports; inside functions too when `lazy`."""
    found: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            if nested and not lazy:
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name in modules)
            elif isinstance(child, ast.ImportFrom):
                module = _target(name, child, modules)
                for a in child.names:
                    # `from memspec.passes import peak` imports the submodule
                    sub = f"{module}.{a.name}"
                    found.add(sub if sub in modules else module)
            visit(child, nested)

    visit(ast.parse(modules[name].read_text(encoding="utf-8")), False)
    return {m for m in found if m in modules and m != name}


def _graph(lazy: bool) -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, modules, lazy) for name in modules}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports, as the modules along it, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = "open"
        path.append(name)
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                return [*path[path.index(other) :], other]
            if other not in state and (found := visit(other)):
                return found
        path.pop()
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name)):
            return found
    return None


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for other in graph[todo.pop()] - seen:
            seen.add(other)
            todo.append(other)
    return seen


def test_no_import_cycle_at_module_level():
    cycle = _cycle(_graph(lazy=False))
    assert cycle is None, " -> ".join(cycle)


def test_the_report_never_imports_the_compile_step():
    graph = _graph(lazy=True)
    for name in sorted(graph):
        if name.startswith("memspec.report"):
            assert "memspec.compile" not in _reachable(graph, name), name


def test_the_walk_sees_lazy_imports():
    """The result renders itself through a lazy import of the report: the walk finds it."""
    assert "memspec.report.render" in _graph(lazy=True)["memspec.result"]
    assert "memspec.report.render" not in _graph(lazy=False)["memspec.result"]
