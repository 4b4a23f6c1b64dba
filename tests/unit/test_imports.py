"""The import graph of `ecst`, read from the source with `ast` (every import, also those inside
functions, where loops hide; not those under `if TYPE_CHECKING:`, which never run): no cycle
among the library's modules, and no library module reaching for the demo or the local stack.

The cycle check covers the whole package, `ecst/cli` included (its commands are registered with
`add_command` in `main.py`, which no command module imports).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "ecst"
CYCLE_EXEMPT: tuple[str, ...] = ()  # packages left out of the cycle check: none
# Not library code: the command line, the demo and its producer side, the local stack.
NOT_LIBRARY = ("ecst.cli", "ecst.demo", "ecst.source", "ecst.stack", "ecst.__main__")
FORBIDDEN_IN_LIBRARY = ("ecst.demo", "ecst.source", "ecst.stack")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: anywhere in the module, functions included, except
    the body of an `if TYPE_CHECKING:` (its `else:` runs)."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def imports_of(name: str) -> set[str]:
    """The `ecst` modules `name` imports (`from pkg import mod` counts as importing `pkg.mod`)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # a name that is a submodule is that module; any other name comes from `module`
            candidates = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module
                          for alias in node.names]
        for candidate in candidates:
            while candidate and candidate not in MODULES:  # `import ecst.a.b` of a module
                candidate = candidate.rpartition(".")[0]
            if candidate.startswith("ecst") and candidate != name:
                targets.add(candidate)
    return targets


GRAPH = {name: imports_of(name) for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that ends where it starts), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = GREY
        path.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in graph:
                continue
            if colour[nxt] == GREY:
                return path[path.index(nxt):] + [nxt]
            if colour[nxt] == WHITE:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        colour[node] = BLACK
        return None

    for start in sorted(graph):
        if colour[start] == WHITE:
            found = visit(start)
            if found:
                return found
    return None


def test_the_walker_sees_function_local_imports_and_skips_type_checking_ones():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ecst.a\n"
                     "def f():\n    from ecst import b\n")
    names = [a.name for n in _runtime_imports(tree) for a in n.names]
    assert "b" in names and "ecst.a" not in names
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_ecst_modules_import_no_cycle():
    graph = {m: {t for t in ts if not under(t, CYCLE_EXEMPT)}
             for m, ts in GRAPH.items() if not under(m, CYCLE_EXEMPT)}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_library_module_imports_the_demo_or_the_local_stack():
    library = [m for m in GRAPH if not under(m, NOT_LIBRARY)]
    assert "ecst.consumer.rebuild" in library and "ecst.verify" in library
    offending = sorted(f"{m} imports {t}" for m in library for t in GRAPH[m]
                       if under(t, FORBIDDEN_IN_LIBRARY))
    assert not offending, "; ".join(offending)
