"""Route modules do not import each other (issue 30): the JSON routes (services/api/rest) and the pages
(services/api/web) share use cases through plain modules in services/api."""
from __future__ import annotations

import ast
from pathlib import Path

API = Path(__file__).resolve().parents[2] / "services" / "api"


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _offenders(package: str, allowed: set[str], forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((API / package).glob("*.py")):
        if path.name == "__init__.py":
            continue
        found += [f"{package}/{path.name} imports {name}" for name in sorted(_imported_modules(path))
                  if name.startswith(forbidden) and name not in allowed]
    return found


def test_json_routes_import_no_other_route_module():
    rest = "services.api.rest"
    assert _offenders("rest", {rest, f"{rest}.api"}, (rest, "services.api.web")) == []


def test_pages_import_no_json_route_module():
    assert _offenders("web", set(), ("services.api.rest",)) == []
