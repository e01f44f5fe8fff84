"""Imports inside ssl_syre/ point one way: no module imports, even inside a function, one that
imports it back (the registries' name checks reach config through one hook instead)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ssl_syre"
# The team's own checker, in the shared folder beside the clone when there is one.
SHARED_TOOL = ROOT.parent / "shared" / "tools" / "import_cycles.py"


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> modules of `package` it imports anywhere, except under `if TYPE_CHECKING:`.

    A module importing its own package (whose __init__ always runs first) is not an edge.
    """
    modules = {module_name(f, package): f for f in package.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        skipped = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = (
                        module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                    )
                    here = here[: len(here) - (node.level - 1)]
                    base = ".".join(here + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] != package.name:
                    continue
                found = resolve(target)
                if found and found != module and not module.startswith(found + "."):
                    graph[module].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle(tmp_path: Path) -> None:
    """Two modules that import each other (one inside a function) are a cycle; a
    TYPE_CHECKING import is not."""
    package = tmp_path / "ssl_syre"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def f():\n    from ssl_syre.high import g\n")
    (package / "high.py").write_text("from ssl_syre import low\n")
    (package / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ssl_syre.user import U\n"
    )
    (package / "user.py").write_text("from .typed import TYPE_CHECKING\n")
    assert cycles(import_graph(package)) == [["ssl_syre.high", "ssl_syre.low"]]


def test_no_import_cycle_in_ssl_syre() -> None:
    graph = import_graph(PACKAGE)
    assert {"ssl_syre.config", "ssl_syre.methods.base", "ssl_syre.syre.core"} <= set(graph)
    assert cycles(graph) == []


def test_config_imports_no_registry() -> None:
    """No module of the config package (schema, YAML, validation, checks, usage) imports a
    registry: they import config's dataclasses, not the other way round."""
    graph = import_graph(PACKAGE)
    registries = {m for m in graph if m.startswith(("ssl_syre.data", "ssl_syre.methods"))}
    config_modules = [
        m for m in graph if m == "ssl_syre.config" or m.startswith("ssl_syre.config.")
    ]
    assert len(config_modules) > 1
    for module in config_modules:
        assert not graph[module] & registries, module


@pytest.mark.skipif(not SHARED_TOOL.exists(), reason="no shared/ folder beside this clone")
def test_the_shared_checker_agrees() -> None:
    result = subprocess.run(
        [sys.executable, str(SHARED_TOOL), str(PACKAGE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_config_alone_still_checks_registry_names() -> None:
    """Importing only ssl_syre.config loads no registry, yet load_config still refuses an
    unknown method or data set: the hook is wired at the top of the package."""
    script = (
        "import sys\n"
        "from ssl_syre.config import load_config\n"
        "from ssl_syre.errors import UserError\n"
        "assert 'ssl_syre.methods' not in sys.modules and 'torch' not in sys.modules\n"
        "for override in ('method=simclrr', 'data.name=fashion'):\n"
        "    try:\n"
        "        load_config(None, [override])\n"
        "    except UserError as error:\n"
        "        print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("unknown method 'simclrr' (did you mean 'simclr'?)")
    assert lines[1].startswith("unknown data.name 'fashion' (did you mean 'fashion_mnist'?)")
