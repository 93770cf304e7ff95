"""The shape of src/, checked from the source itself: no import cycle, atomic renames only in src/io.py,
the cache root spelled in one place, and config.py importing no plug-in."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from src import PROJECT_ROOT

SRC = PROJECT_ROOT / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def imported(tree: ast.AST, package: str) -> set[str]:
    """Every src module a file imports, at any depth (late imports inside functions count): the module
    named, the submodule when a name is one, and the packages above them that Python runs first."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this file's package
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & MODULES.keys()
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = imported(ast.parse(path.read_text(encoding="utf-8")), package)
        # a module inside a package does not re-enter that package's __init__ by importing a sibling
        graph[name] = {m for m in edges if m != name and not name.startswith(m + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_of_src_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 40 and graph["src.main"] >= {"src.pipeline", "src.cell"}  # the graph was really read
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_config_imports_no_plug_in():
    edges = import_graph()["src.config"]
    assert not {m for m in edges if m.startswith(("src.benchmarks", "src.models", "src.toyworld", "src.data"))}


def test_only_io_renames_files_into_place():
    """Temp-then-rename (os.replace, Path.rename, mkstemp/mkdtemp) lives in src/io.py; everything else
    writes through it (atomic_path, atomic_dir, replace_dir) or through the store."""
    pattern = re.compile(r"\bos\.replace\(|\.rename\(|mkstemp\(|mkdtemp\(")
    offenders = [f"{p.relative_to(PROJECT_ROOT)}:{n}" for p in SRC.rglob("*.py") if p.name != "io.py"
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_the_cache_root_is_spelled_in_one_place():
    spelled = [p.relative_to(PROJECT_ROOT).as_posix() for p in SRC.rglob("*.py")
               if "~/.cache/imitation-gap" in p.read_text(encoding="utf-8")]
    assert spelled == ["src/store.py"]
