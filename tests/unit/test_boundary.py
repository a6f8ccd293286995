"""#29 item 6: the plug-in boundary, read off the import graph of the source (every import, at
module level or inside a function; a `if TYPE_CHECKING:` block is not an import at run time).

- A plug-in (`protocols/<name>/`) imports only its own package, the SDK (`protocols/sdk/`),
  `chain/`, pure `risk/`, the config's types and the metrics.
- Nothing outside `protocols/<name>/` imports a plug-in's module, the registry aside.
- `risk/` is pure: it imports no I/O (chain, storage, alerts, execution, HTTP).
- No import circle crosses a package.
- No hook is looked up by name (`getattr`) outside the registry.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ("aave_v3", "morpho_blue", "perp_curie")
PLUGIN_MAY_IMPORT = ("keeperd.protocols.sdk", "keeperd.chain", "keeperd.risk.cascade",
                     "keeperd.risk.health", "keeperd.risk.depth", "keeperd.risk.kernels",
                     "keeperd.config", "keeperd.metrics")
IMPURE = ("keeperd.chain", "keeperd.storage", "keeperd.alerts", "keeperd.execution",
          "keeperd.protocols", "keeperd.oracles", "aiohttp", "asyncpg", "web3", "requests")


def _type_checking(node: ast.If) -> bool:
    return (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING") or (
        isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[str]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            continue  # (types only: nothing is imported at run time)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        else:
            yield from _imports(node)


@cache
def graph() -> dict[str, set[str]]:
    """module -> the keeperd modules (and outside packages) it imports."""
    modules: dict[str, Path] = {}
    for path in sorted((ROOT / "keeperd").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    out: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set(_imports(ast.parse(path.read_text())))
        out[name] = {m for m in found if m in modules and m != name} | {
            m.split(".")[0] for m in found if not m.startswith("keeperd")}
    return out


def plugin_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] == ["keeperd", "protocols"] and len(parts) > 2 and parts[2] in PLUGINS:
        return parts[2]
    return None


def test_a_plugin_imports_only_the_sdk_chain_pure_risk_config_and_metrics() -> None:
    wrong = {}
    for module, imported in graph().items():
        name = plugin_of(module)
        if name is None:
            continue
        bad = sorted(m for m in imported if m.startswith("keeperd")
                     and plugin_of(m) != name and not m.startswith(PLUGIN_MAY_IMPORT))
        if bad:
            wrong[module] = bad
    assert wrong == {}


def test_nothing_outside_a_plugin_imports_its_modules_but_the_registry() -> None:
    wrong = {}
    for module, imported in graph().items():
        if plugin_of(module) is not None or module == "keeperd.protocols.registry":
            continue
        bad = sorted(m for m in imported if plugin_of(m) is not None)
        if bad:
            wrong[module] = bad
    assert wrong == {}


def test_risk_is_pure() -> None:
    wrong = {m: sorted(i for i in imported if i.startswith(IMPURE))
             for m, imported in graph().items() if m.startswith("keeperd.risk")}
    assert {m: bad for m, bad in wrong.items() if bad} == {}


def test_no_import_circle_crosses_a_package() -> None:
    edges = {m: {i for i in imported if i in graph()} for m, imported in graph().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
                circles.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    crossing = [c for c in circles if len({m.rsplit(".", 1)[0] for m in c}) > 1]
    assert crossing == []


def test_no_hook_is_looked_up_by_name() -> None:
    """`getattr(plugin|adapter|liquidator, ...)`: the optional hooks are declared and
    defaulted on `PluginBase` and `LiquidatorBase` and called directly."""
    lookup = re.compile(r"getattr\((self\.)?(plugin|adapter|liquidator)\b")
    found = [f"{path.relative_to(ROOT)}:{n}" for path in (ROOT / "keeperd").rglob("*.py")
             if path.name != "registry.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if lookup.search(line)]
    assert found == []


def test_the_rules_see_a_violation() -> None:
    """The graph is read right: a plug-in's import of the executor would be seen."""
    tree = ast.parse("def f():\n    from keeperd.execution.executor import Executor\n"
                     "if TYPE_CHECKING:\n    import keeperd.daemon\n")
    assert set(_imports(tree)) == {"keeperd.execution.executor",
                                   "keeperd.execution.executor.Executor"}
