"""The layering of ad3d/, read from the source: no import circle anywhere (imports inside functions count:
a lazy import is still a dependency), and the benchmark runner and the CLI sit on top of the library, never
under it."""

import ast
from pathlib import Path

import pytest

import ad3d

ROOT = Path(ad3d.__file__).parent


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Each ad3d module -> the ad3d modules it imports (the package `ad3d` itself left out: importing any
    submodule runs it, and it only re-exports)."""
    mods = modules()

    def owner(name: str) -> str | None:  # `ad3d.io.read_scan` is module ad3d.io
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    stem = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(stem + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                target = owner(name) if name.startswith("ad3d") else None
                if target not in (None, mod, "ad3d"):
                    edges.add(target)
        graph[mod] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), or a module importing itself."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walk_finds_a_circle_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "ad3d.detectors.model_file" in graph["ad3d.detectors.base"]  # imported inside Detector.save
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100


def test_no_import_circle_in_ad3d():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("top", ["ad3d.bench", "ad3d.cli"])
def test_the_runner_and_the_cli_are_never_imported_by_the_library(top):
    under = {
        mod: sorted(t for t in targets if t == top or t.startswith(top + "."))
        for mod, targets in import_graph().items()
        if not any(mod == above or mod.startswith(above + ".") for above in (top, "ad3d.cli"))
    }
    assert {mod: t for mod, t in under.items() if t} == {}
