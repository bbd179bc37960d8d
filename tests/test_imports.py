"""The package's modules form layers: no import cycle, every layerwise import at a module's top,
and worker processes start without the heavy analysis libraries."""

import ast
import subprocess
import sys
from pathlib import Path

from conftest import cli_env

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "layerwise"
HEAVY = ("pandas", "scipy", "matplotlib")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules():
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(node, name: str, is_package: bool, known) -> set:
    """The layerwise modules an import statement of module `name` names."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    if node.level == 0:
        base = node.module or ""
    else:
        here = name.split(".") if is_package else name.split(".")[:-1]
        here = here[:len(here) - (node.level - 1)]
        base = ".".join(here + ([node.module] if node.module else []))
    submodules = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
    attributes = len(submodules) < len(node.names)  # names defined in `base` itself: it runs first
    return submodules | ({base} if base in known and attributes else set())


def graph():
    known = modules()
    edges, local = {}, []
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body} | {id(n) for n in ast.walk(tree) if isinstance(n, ast.If)
                                             for n in n.body if isinstance(n, (ast.Import, ast.ImportFrom))}
        edges[name] = set()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = imported(node, name, path.name == "__init__.py", known) - {name}
            if id(node) in top:
                edges[name] |= targets
            elif targets:
                local.append(f"{name} line {node.lineno} imports {', '.join(sorted(targets))}")
    return edges, local


def cycle(edges):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(edges):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_graph_reader_sees_a_planted_cycle_and_a_local_import():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    tree = ast.parse("def f():\n    from .store import Store\n")
    node = tree.body[0].body[0]
    assert imported(node, "layerwise.report", False, modules()) == {"layerwise.store"}


def test_no_module_of_the_package_takes_part_in_an_import_cycle():
    edges, _ = graph()
    assert "layerwise.executors" in edges and "layerwise.sweep" not in edges["layerwise.executors"]
    assert cycle(edges) is None, " -> ".join(cycle(edges))


def test_no_function_imports_a_module_of_the_package():
    _, local = graph()
    assert local == []


def test_a_worker_process_starts_without_pandas_scipy_or_matplotlib():
    code = ("import sys, layerwise.worker, layerwise.runner, layerwise.executors, layerwise.estimate; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
