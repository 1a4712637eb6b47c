"""The layers of the product code, read from its imports with `ast` (nothing is imported).

`topology.py` is the composition root: nothing below it imports it, `choreo/` never reaches
up into the Faust layers (`streams/`, `agents/`), no module imports itself back through
others, and the pure modules stay free of Faust, Kafka, RocksDB and Prometheus.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("choreo", "streams", "agents", "tables")
HEAVY = ("faust", "mode", "aiokafka", "kafka", "rocksdict", "rocksdb", "prometheus_client")
# Modules that hold rules and data only: they must run without a broker, a store or metrics.
# (Not yet here: choreo.matchers, choreo.state_evolution and choreo.replay_diff reach
# faust and aiokafka through choreo.actions; choreo.dead_letter classifies aiokafka errors.)
PURE = (
    "choreo.envelope", "choreo.conditions", "choreo.content_filter", "choreo.patterns",
    "choreo.durations", "choreo.workflows", "choreo.masking", "choreo.signing",
    "choreo.routing", "choreo.trail", "choreo.graph", "choreo.graph_svg", "choreo.schemas",
    "choreo.samples", "choreo.static_check", "choreo.worker_policy", "choreo.registry",
    "choreo.config", "choreo.security", "choreo.errors",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_files() -> dict[str, Path]:
    files = {module_name(ROOT / "topology.py"): ROOT / "topology.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            files[module_name(path)] = path
    return files


def imported(path: Path, name: str) -> set[str]:
    """Every module `path` imports (at any depth in the file, lazy imports included), as
    absolute dotted names; `from a import b` counts as `a.b` when `a.b` is a module."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """Product module -> the product modules it imports (a package's __init__ counts)."""
    files = product_files()
    edges: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        for dotted in imported(path, name):
            if dotted in files:
                targets.add(dotted)
        targets.discard(name)
        edges[name] = targets
    return edges


@pytest.fixture(scope="module")
def external() -> dict[str, set[str]]:
    """Product module -> the top-level names of the libraries it imports."""
    files = product_files()
    return {name: {dotted.split(".")[0] for dotted in imported(path, name)}
            for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target in edges.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_graph_sees_the_known_imports(graph):
    assert "choreo.envelope" in graph["choreo.patterns"]
    assert "choreo.app" in graph["topology"]


def test_a_cycle_is_found_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_product_modules(graph):
    assert cycles(graph) == []


def test_choreo_never_imports_the_faust_layers_or_topology(graph):
    upward = {(name, target) for name, targets in graph.items() if in_package(name, "choreo")
              for target in targets
              if target == "topology" or in_package(target, "streams")
              or in_package(target, "agents")}
    assert upward == set()


def test_nothing_but_tests_imports_topology(graph):
    assert {name for name, targets in graph.items() if "topology" in targets} == set()


@pytest.mark.parametrize("pure", PURE)
def test_pure_modules_import_no_faust_kafka_rocksdb_or_prometheus(graph, external, pure):
    modules = {name for name in graph if in_package(name, pure)}
    assert modules, f"{pure} is not a product module"
    closure = set().union(*(reachable(graph, name) for name in modules))
    heavy = {(name, lib) for name in sorted(closure) for lib in external[name] if lib in HEAVY}
    assert heavy == set()


def runtime_fields() -> set[str]:
    """The attributes `choreo.app.Runtime` declares: its fields, methods and properties."""
    tree = ast.parse((ROOT / "choreo" / "app.py").read_text())
    runtime = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Runtime")
    names = {n.target.id for n in runtime.body
             if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    names |= {n.name for n in runtime.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    init = next(n for n in runtime.body if isinstance(n, ast.FunctionDef)
                and n.name == "__post_init__")
    names |= {t.attr for n in ast.walk(init) if isinstance(n, ast.Assign) for t in n.targets
              if isinstance(t, ast.Attribute)}
    return names


def test_nothing_is_attached_to_the_runtime_after_it_is_built():
    """No `runtime.<undeclared> = ...`, no `getattr(runtime, ...)` and no
    `type: ignore[attr-defined]` in product code: what a component needs, it is given."""
    declared = runtime_fields()
    assert {"action_router", "workers", "matcher"} <= declared
    found = []
    for name, path in product_files().items():
        text = path.read_text()
        if "type: ignore[attr-defined]" in text:
            found.append((name, "type: ignore[attr-defined]"))
        for node in ast.walk(ast.parse(text)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "setattr") and node.args
                    and isinstance(node.args[0], ast.Name) and node.args[0].id == "runtime"):
                found.append((name, f"{node.func.id}(runtime, ...)"))
            targets = (node.targets if isinstance(node, ast.Assign)
                       else [node.target] if isinstance(node, ast.AnnAssign | ast.AugAssign)
                       else [])
            for target in targets:
                for part in ast.walk(target):
                    if (isinstance(part, ast.Attribute) and isinstance(part.value, ast.Name)
                            and part.value.id in ("runtime", "rt")
                            and part.attr not in declared):
                        found.append((name, f"runtime.{part.attr} = ..."))
    assert found == []


def test_mypy_checks_every_pure_module():
    """`make test` runs mypy over `[tool.mypy] files`: the pure modules, all of them."""
    files = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["files"])
    expected = {name.replace(".", "/") + ("" if (ROOT / name.replace(".", "/")).is_dir()
                                          else ".py") for name in PURE}
    assert files == expected
