"""Check the package's import structure: no import circles, imports go down the layers only.

Layers (``docs/architecture.md``), lowest first:

0. ``errors``, ``metrics``, ``version``: no itk, no torch;
1. ``solver``: pure torch, never itk;
2. ``edge``: the only layer that imports itk;
3. ``apps``: the applications (scorer, outputs, QC, batch, export, training, phantom);
4. ``cli``: the commands; no other module imports it;
5. ``itk_samconvex`` itself, the lazy public facade: no module of the package imports it.

Every import counts, at module level and inside functions (a function-level import is
still a dependency). Usage: ``python test/check_layers.py [PACKAGE_DIR]``; exit code 1 and
one line per problem when the rules are broken.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "itk_samconvex"
LAYER_OF_TOP = {"solver": 1, "edge": 2, "apps": 3, "cli": 4}
LAYER_NAMES = {0: "core", 1: "solver", 2: "edge", 3: "apps", 4: "cli", 5: "facade"}
#: third-party modules allowed from this layer up
EXTERNAL_FLOOR = {"torch": 1, "itk": 2, "itkConfig": 2, "SimpleITK": 2}
#: third-party modules allowed in this layer only
EXTERNAL_ONLY = {"itk": {2}, "itkConfig": {2}, "SimpleITK": {2}}


def module_name(root: Path, path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return 5
    return LAYER_OF_TOP.get(parts[1], 0)


def imports(root: Path, path: Path, modules: set[str]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import statement of a file, relative ones resolved;
    ``from package import name`` counts as importing the submodule when it is one."""
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target == "__future__":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub if sub in modules else target), node.lineno


def check(root: Path) -> list[str]:
    """Every rule violation and import circle in the package at ``root``."""
    files = sorted(root.rglob("*.py"))
    modules = {module_name(root, f) for f in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    problems: list[str] = []
    for path in files:
        source = module_name(root, path)
        source_layer = layer(source)
        where = f"{path.relative_to(root.parent)}"
        for target, line in imports(root, path, modules):
            top = target.split(".")[0]
            if top == PACKAGE:
                if target not in modules:
                    continue  # a name, not a module (e.g. __version__ from the facade)
                graph[source].add(target)
                target_layer = layer(target)
                if target_layer == 5 and source != target:
                    problems.append(
                        f"{where}:{line}: {source} imports the package facade "
                        f"({target}); import the defining module instead"
                    )
                elif target_layer == 4 and source_layer != 4:
                    problems.append(f"{where}:{line}: {source} imports the CLI ({target})")
                elif target_layer > source_layer:
                    problems.append(
                        f"{where}:{line}: {source} ({LAYER_NAMES[source_layer]}) imports "
                        f"{target} ({LAYER_NAMES[target_layer]}), a higher layer"
                    )
            else:
                floor = EXTERNAL_FLOOR.get(top)
                only = EXTERNAL_ONLY.get(top)
                if (floor is not None and source_layer < floor) or (
                    only is not None and source_layer not in only
                ):
                    problems.append(
                        f"{where}:{line}: {source} ({LAYER_NAMES[source_layer]}) "
                        f"imports {top}, which only the "
                        f"{'/'.join(LAYER_NAMES[x] for x in sorted(only or {floor}))}"
                        " layer may import"
                    )
    problems.extend(f"import circle: {' -> '.join([*cycle, cycle[0]])}" for cycle in circles(graph))
    return problems


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), plus self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    sys.setrecursionlimit(max(1000, 10 * len(graph)))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "python" / PACKAGE
    problems = check(root)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{root}: no import circle, every import goes down the layers")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
