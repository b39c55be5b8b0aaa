"""The package's layout: no import cycles between modules, every command in cachewise/cli/."""

from __future__ import annotations

import ast
from pathlib import Path

import cachewise
import cachewise.cli

PACKAGE = Path(cachewise.__file__).parent


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The cachewise modules ``module`` imports, TYPE_CHECKING imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    # A submodule importing its own package's parent only runs an __init__ that is
    # already running; that is how packages work, not a cycle between modules.
    return {name for name in found if name in modules and not module.startswith(name + ".")}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return out


def test_no_module_imports_one_that_imports_it_back() -> None:
    modules = _module_names()
    graph = {name: _imports(name, path, modules) - {name} for name, path in modules.items()}
    assert "cachewise.stats" in graph["cachewise.pool"]  # the graph sees the imports
    assert _cycles(graph) == []


def test_statistics_know_nothing_of_the_pool() -> None:
    modules = _module_names()
    assert "cachewise.pool" not in _imports("cachewise.stats", modules["cachewise.stats"], modules)


def test_every_command_lives_in_the_cli_package() -> None:
    commands = {name.rsplit(".", 1)[-1] for name in cachewise.cli.COMMANDS}
    assert all(name.startswith("cachewise.cli.") for name in cachewise.cli.COMMANDS)
    assert commands == {"aggregate", "journal", "pool", "lab", "stats"}
    stray = [
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "cli" in path.stem and path.parent.name != "cli"
    ]
    assert stray == []
