"""The package's shape: no import cycles between its modules, and no module past 300 lines
except those already listed to be split.

The import graph is read from the source with ``ast`` (nothing is imported): every ``import``
and ``from ... import`` counts, at module level or inside a function, absolute or relative.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "brain_tumor"
MAX_LINES = 300
# Over MAX_LINES today, to split. This list may only shrink: a module that fits again must leave
# it, and no module may join it.
TO_SPLIT: frozenset[str] = frozenset()


def module_files(src: Path = SRC, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` under ``src``."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module of ours that importing ``name`` runs: ``name`` itself, or the nearest package or
    module above it (``a.b.attr`` -> ``a.b``); None for other packages' modules."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, known: dict[str, Path]) -> set[str]:
    """Our modules that module ``name`` imports, anywhere in its source."""
    path = known[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x, from ..y import z
                parent = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # "from pkg import sub" imports the module pkg.sub; "from mod import name" imports mod
            targets += [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    found = {_resolve(t, known) for t in targets}
    return {m for m in found if m is not None and m != name}


def import_graph(src: Path = SRC, package: str = PACKAGE) -> dict[str, set[str]]:
    known = module_files(src, package)
    return {name: imports_of(name, known) for name in known}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per back edge that a depth-first search meets."""
    state: dict[str, int] = {}  # absent: unvisited, 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 40 and graph["brain_tumor.cli"], "the import graph looks empty: is SRC right?"
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def _write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)


def test_the_graph_sees_relative_and_function_level_imports(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from . import b\n    return b\n",
        "pkg/b.py": "from .sub.c import VALUE\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "import os\n\nVALUE = 1\n\n\ndef g():\n    from ..a import f\n    return f\n",
        "pkg/d.py": "import pkg.sub.c\nfrom pkg import sub\n",
    })
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.a"}  # os is not ours
    assert graph["pkg.d"] == {"pkg.sub.c", "pkg.sub"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, []),  # a diamond is no cycle
    ({"a": {"b"}, "b": {"a"}}, [["a", "b", "a"]]),
])
def test_find_cycles(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert find_cycles(graph) == expected


def test_no_module_is_longer_than_300_lines_except_those_to_split() -> None:
    lengths = {name: len(path.read_text().splitlines()) for name, path in module_files().items()}
    too_long = {name for name, n in lengths.items() if n > MAX_LINES}
    new = sorted(too_long - TO_SPLIT)
    assert not new, (f"over {MAX_LINES} lines: " + ", ".join(f"{m} ({lengths[m]})" for m in new)
                     + "; split them rather than add them to TO_SPLIT")
    done = sorted(TO_SPLIT - too_long)
    assert not done, f"{done} now fit in {MAX_LINES} lines: remove them from TO_SPLIT"
