"""The import structure: every module imports on its own, the library stays below the pipeline, no cycles.

A cycle works only in the import order it was tested in (``from a import x`` fails
when ``a`` is half-initialised), and hiding one behind an import inside a function
hides the design problem too. So the graph here is built from the imports that run
when a module is loaded: module level, class bodies and ``if``/``try`` blocks, but
not function bodies (KFP component bodies must import inside, and heavy libraries
may be imported late on purpose). A second check adds the imports inside
functions and still wants no cycle: a late import may save time, but must not
be what keeps two modules from importing each other.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shrink", "pipelines", "components")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _imports(module: str, *, in_functions: bool) -> set[str]:
    """Names ``module`` imports (``a.b`` for ``from a import b`` when ``a.b`` is a module, else ``a``)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
        for child in ast.iter_child_nodes(node):
            if in_functions or not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def _graph(in_functions: bool = False) -> dict[str, set[str]]:
    """Module -> the project modules it imports at load time (or at all, with ``in_functions``)."""
    return {m: {d for d in _imports(m, in_functions=in_functions) if d in MODULES and d != m} for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return groups


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.split(".")[0] in ("shrink", "pipelines")))
def test_module_imports_on_its_own(module):
    """Each in a fresh interpreter: a cycle or a missing import hides when another module loaded first."""
    proc = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_library_does_not_import_the_pipeline():
    """``shrink/`` is plain Python: KFP's DAG and components sit on top of it, only the CLI reaches up."""
    offenders = {
        m: sorted(d for d in _imports(m, in_functions=True) if d.split(".")[0] in ("pipelines", "components"))
        for m in MODULES
        if m.split(".")[0] == "shrink" and m != "shrink.cli"
    }
    assert not {m: d for m, d in offenders.items() if d}


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_no_cycle_is_hidden_inside_a_function():
    """A late import may be for speed (torch, kfp), never to break a cycle: the graph with them has none either."""
    assert _cycles(_graph(in_functions=True)) == []


def test_no_test_module_imports_another():
    """Shared builders live in tests/factories.py (fixtures in conftest.py), never in a test module."""
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[-1].startswith("test_")]
    assert offenders == []
