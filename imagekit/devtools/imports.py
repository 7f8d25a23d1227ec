"""The import graph of imagekit and marketplace_server, and its cycles.

``python -m imagekit.devtools.imports`` prints every module-to-module edge of the packages
(imports inside functions included: a cycle hidden in a function is still a cycle) and exits
non-zero if the graph has a cycle, naming one. Edges come from the source (``ast``), so
nothing is imported to draw them.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

PACKAGES = ("imagekit", "marketplace_server")


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name → source file, for every module of ``PACKAGES`` under ``root``."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _target(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def edges(root: Path) -> dict[str, set[str]]:
    """Module → the modules of ``PACKAGES`` it imports (a name imported from a package that
    is itself a module counts as that module), and the packages whose ``__init__`` such an
    import runs."""
    files = module_files(root)
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: Iterable[str]
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _target(module, is_package, node)
                names = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names
                ]
            else:
                continue
            for name in names:
                if name not in files or name == module:
                    continue
                graph[module].add(name)
                # importing a.b.c runs a/b/__init__ first, unless it is one's own package
                parts = name.split(".")
                for i in range(1, len(parts)):
                    parent = ".".join(parts[:i])
                    if parent in files and not (module + ".").startswith(parent + "."):
                        graph[module].add(parent)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first = last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parents[2]
    graph = edges(root)
    for module in sorted(graph):
        for target in sorted(graph[module]):
            print(f"{module} -> {target}")
    cycle = find_cycle(graph)
    if cycle:
        print("import cycle: " + " -> ".join(cycle), file=sys.stderr)
        return 1
    print(
        f"{len(graph)} modules, {sum(map(len, graph.values()))} imports, no cycle", file=sys.stderr
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
