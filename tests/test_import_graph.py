"""The package's imports form no cycle: every ``import`` and ``from ... import`` in ``src/gradpower``, at module
level or inside a function, read with ``ast`` (a module that imports another inside a function still depends on it,
and a cycle through such an import is a design knot even when it happens to load)."""

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent / "src" / "gradpower"


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # `from . import x` names a module; `from .m import f` the module m
                targets.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module)
        elif isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
    return {t for t in targets if t in known and t != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that returns to its start, or None (a depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_scan_finds_a_cycle_it_is_shown():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_package_has_no_import_cycle():
    known = modules()
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    assert "gradpower.experiments.job" in graph["gradpower.experiments.slurm"]  # the scan sees real edges
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_experiments_layer_takes_the_run_assembly_not_the_loop_module():
    known = modules()
    direct = {name for name, path in known.items() if name.startswith("gradpower.experiments")
              and "gradpower.train.loop" in imports_of(name, path, known)}
    assert not direct, direct
    assert "gradpower.train.assemble" in imports_of("gradpower.experiments.execute",
                                                    known["gradpower.experiments.execute"], known)
