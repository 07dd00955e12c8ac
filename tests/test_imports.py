"""The package's imports run one way: no module reaches back up the pipeline, directly or
through others, and none takes another module's private names. Function-level imports count:
they only move a cycle from import time to run time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import embedscope

SRC = Path(embedscope.__file__).parent


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    found = {}
    for path in SRC.rglob("*.py"):
        parts = ["embedscope", *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str | None]]:
    """``(module, imported name or None)`` for every import in the file, wherever it sits;
    the module is the deepest package module the import names."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                # ``from package import module`` imports a module, not a name
                out.append((full, None) if full in modules else (base, alias.name))
    resolved = []
    for target, imported in out:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target:
            resolved.append((target, imported))
    return resolved


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {m: set() for m in modules}
    for name, path in modules.items():
        for target, _ in _imports(name, path, modules):
            # a module may import its own package's __init__ only by accident of Python's
            # import machinery (it runs first anyway): not an edge
            if target != name and not name.startswith(target + "."):
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_the_cycle_finder_finds_cycles_through_several_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_another_that_imports_it_back():
    graph = _graph()
    assert len(graph) > 20, "the walk did not find the package's modules"
    assert _cycles(graph) == []


def test_no_private_name_is_imported_from_another_module():
    modules = _modules()
    private = [
        f"{name}: {imported} from {target}"
        for name, path in modules.items()
        for target, imported in _imports(name, path, modules)
        if imported
        and imported.startswith("_")
        and not imported.startswith("__")
        and target != name
    ]
    assert private == []


def test_reading_vectors_does_not_import_torch():
    """Reduce, analyse and the store read vectors: they must not pay for torch (3 s here)
    through the embedding stage, not even to rebuild an output from the shards."""
    code = (
        "import sys, embedscope.analyse, embedscope.reduce, embedscope.store;"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('embedscope.embed')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
