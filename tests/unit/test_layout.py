"""The layout ARCHITECTURE.md draws: the domain imports no plumbing, the library no service, services not each
other, and no two library modules import each other (at module level or inside functions)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "services", "nucleus")
DATA_PACKAGES = ("shared.weights", "shared.splits")


def _module_files() -> dict[str, Path]:
    found = {}
    for top in PACKAGES:
        for path in (ROOT / top).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _module_files()


def _named(path: Path) -> set[str]:
    """Every module name a file imports, anywhere in it (a `from a import b` also names a.b)."""
    named = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named.add(node.module)
            named.update(f"{node.module}.{alias.name}" for alias in node.names)
    return named


def _imports(path: Path) -> set[str]:
    """The project modules a file imports, anywhere in it."""
    modules = set()
    for name in _named(path):
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name:
            modules.add(name)
    return modules


GRAPH = {module: {m for m in _imports(path) if m != module and not module.startswith(m + ".")}
         for module, path in MODULES.items()}


def _offenders(importer: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    return sorted(f"{module} imports {target}" for module, targets in GRAPH.items()
                  if module == importer or module.startswith(importer + ".")
                  for target in targets if target.startswith(forbidden) and not target.startswith(allowed))


def test_the_domain_imports_no_plumbing_and_no_adapter():
    assert _offenders("shared.domain", ("shared", "services", "nucleus"), ("shared.domain",) + DATA_PACKAGES) == []


def test_the_library_imports_no_service_and_no_command():
    assert _offenders("shared", ("services", "nucleus")) == []


def test_the_product_never_imports_the_test_kit():
    found = sorted(f"{module} imports {name}" for module, path in MODULES.items() for name in _named(path)
                   if name.split(".")[0] in ("testkit", "tests", "pytest"))
    assert found == []


@pytest.mark.parametrize("service", sorted({m.split(".")[1] for m in MODULES if m.count(".") >= 1
                                            and m.startswith("services.")}))
def test_services_never_import_each_other(service):
    others = tuple(f"services.{s}" for s in {m.split(".")[1] for m in MODULES if m.startswith("services.")} - {service})
    assert _offenders(f"services.{service}", others + ("nucleus",)) == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_no_import_cycles_in_the_library_and_services():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
