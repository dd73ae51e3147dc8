"""The layout's promises, checked on the source: the pure folders do no I/O, and no
module imports its way back to itself (imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "collector"
PURE = ("collector.core", "collector.gemini")
# What a pure module must not import: I/O, the event loop, logging, the runtime around it.
IO_MODULES = ("os", "io", "socket", "asyncio", "threading", "subprocess", "shutil", "select",
              "selectors", "signal", "http", "urllib.request", "structlog", "logging",
              "websockets", "picows", "prometheus_client", "collector.runtime", "collector.ops",
              "collector.tools", "collector.sim", "collector.config", "collector.cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy and TYPE_CHECKING ones too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
GRAPH = {name: {m for m in _imports(p) if m in MODULES and m != name}
         for name, p in MODULES.items()}


def _is(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("name", [m for m in MODULES if any(_is(m, p) for p in PURE)])
def test_pure_modules_do_no_io(name: str) -> None:
    bad = sorted(m for m in _imports(MODULES[name]) if any(_is(m, io) for io in IO_MODULES))
    assert not bad, f"{name} is in a pure folder but imports {bad}"


def test_no_import_cycles() -> None:
    """Package __init__ modules are left out: importing `collector.x.y` runs them, which
    is not a dependency of theirs on `y`."""
    graph = {n: {m for m in deps if MODULES[m].name != "__init__.py"}
             for n, deps in GRAPH.items() if MODULES[n].name != "__init__.py"}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checks_see_what_they_guard() -> None:
    """The two tests above would pass on an empty graph; make sure they read real imports."""
    assert "collector.core.format" in GRAPH["collector.gemini.v1_stream"]
    assert "collector.runtime.writer" in GRAPH["collector.runtime.feed"]
    assert "asyncio" in _imports(MODULES["collector.runtime.feed"])
