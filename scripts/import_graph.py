"""Print the import graph of a package's modules and fail on a cycle.

``python scripts/import_graph.py [training]`` lists, for each module of the package, the
package modules it imports (at the top or inside functions: both are edges), then any
cycle. Exit status 1 when there is one.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def import_graph(package: str, root: Path = ROOT) -> dict[str, set[str]]:
    """``module -> package modules it imports`` for every ``.py`` file of ``package``."""
    folder = root / package
    modules = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for name in sorted(modules):
        tree = ast.parse((folder / f"{name}.py").read_text())
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                if parts[0] == package and len(parts) > 1 and parts[1] in modules:
                    edges.add(parts[1])
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or ``None`` when the graph has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    package = args[0] if args else "training"
    graph = import_graph(package)
    for name, edges in graph.items():
        print(f"{package}.{name} -> {', '.join(sorted(edges)) or '-'}")
    cycle = find_cycle(graph)
    if cycle:
        print(f"cycle: {' -> '.join(cycle)}")
        return 1
    print("no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
