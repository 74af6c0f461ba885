"""The layout of src/handover/ keeps its promises (docs/architecture.md).

The layer contracts themselves run as import-linter contracts in `make lint`
(pyproject.toml, [tool.importlinter]); these tests hold the rest: which
package may touch which library, module size, no import cycles, and that the
API error codes are the ones the OpenAPI document lists.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from handover.web.errors import STATUS
from handover.workflow.errors import ErrorCode

SRC = Path(__file__).resolve().parents[1] / "src" / "handover"
MAX_LINES = 500


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out[name] = path
    return out


_MODULES = set(modules())


def imports_of(path: Path) -> set[str]:
    """Absolute module names imported by a file (top level and inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            known = {s for s in submodules if s in _MODULES}
            # `from package import module` imports the module, not the package's names.
            found.update(known or {node.module})
            found.update(submodules - known)
    return found


def importers(prefix: str) -> set[str]:
    """Modules of handover that import `prefix` or anything below it."""
    return {
        name
        for name, path in modules().items()
        if any(i == prefix or i.startswith(prefix + ".") for i in imports_of(path))
    }


def test_nacl_is_imported_by_the_crypto_module_only() -> None:
    assert importers("nacl") == {"handover.protocol.crypto"}


def test_asyncpg_is_imported_under_store_only() -> None:
    outside = {m for m in importers("asyncpg") if not m.startswith("handover.store")}
    assert outside == set()


def test_the_aiohttp_server_is_used_under_web_only() -> None:
    outside = {m for m in importers("aiohttp.web") if not m.startswith("handover.web")}
    assert outside == set()


def test_http_status_numbers_appear_under_web_and_cli_only() -> None:
    status = re.compile(r"\b(200|201|202|204|400|401|403|404|405|409|410|413|415|422|500|503)\b")
    found = []
    for name, path in modules().items():
        if name.startswith(("handover.web", "handover.cli")):
            continue
        for lineno, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if status.search(code) and ("status" in code.lower() or "http" in code.lower()):
                found.append(f"{name}:{lineno}: {line.strip()}")
    assert found == []


def test_no_module_is_over_500_lines() -> None:
    long = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text("utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_modules_import_each_other_without_cycles() -> None:
    mods = modules()
    graph = {
        name: {i for i in imports_of(path) if i in mods and i != name}
        for name, path in mods.items()
    }
    # Tarjan's strongly connected components: any component of two or more is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_error_codes_are_the_ones_the_openapi_document_lists() -> None:
    doc = yaml.safe_load((SRC.parents[1] / "schemas" / "openapi.yaml").read_text("utf-8"))
    documented = set(doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"])
    assert documented == {code.value for code in ErrorCode}
    assert set(STATUS) == set(ErrorCode)


def test_every_error_code_has_a_meaning() -> None:
    source = (SRC / "workflow" / "errors.py").read_text("utf-8")
    tree = ast.parse(source)
    (enum,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ErrorCode"]
    documented = []
    body = enum.body
    for i, item in enumerate(body):
        if isinstance(item, ast.Assign):
            following = body[i + 1] if i + 1 < len(body) else None
            has_doc = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
            documented.append((item.targets[0].id, has_doc))  # type: ignore[attr-defined]
    assert documented and all(has_doc for _, has_doc in documented)
