"""The import graph of umust_cli follows the pipeline: no cycles, lower layers only, no hidden imports.

Every module is parsed with ``ast``; module-level and function-local imports of
umust_cli modules are both edges (``if TYPE_CHECKING:`` blocks are not).

Layers, lowest first; a module imports only its own package or a lower layer::

    errors (and the package's __init__) < io < inputs < registry, checkpoint, device < model
        < codecs < data < eval < train < retrieval, translate < cli < __main__

train sits below retrieval because the retrieval trainer runs on the generic
training engine (umust_cli.train.engine); nothing in train imports retrieval.

Function-local imports are for heavy third-party modules only, so a function-local
import of a umust_cli module is allowed in one place: the command modules of
umust_cli/cli, and only of a module that imports a third-party package besides the
CLI's own (typer, click) when it is loaded. The core imports torch, numpy, music21 and
friends at module level, and ``umust --help`` must not load them: the command
functions import the core when they run. A light module (errors, io, registry, ...)
is imported at the top of the command module.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "umust_cli"
LAYERS = (
    ("errors", "__init__"), ("io",), ("inputs",), ("registry", "checkpoint", "device"), ("model",),
    ("codecs",), ("data",), ("eval",), ("train",), ("retrieval", "translate"), ("cli",), ("__main__",),
)
RANK = {pkg: rank for rank, names in enumerate(LAYERS) for pkg in names}
CLI_OWN = {"typer", "click"}  # what `umust --help` loads anyway


@dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. umust_cli.data.corpus
    target: str  # imported umust_cli module (or package)
    line: int
    local: bool  # inside a function body


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The umust_cli module ``name`` names (a submodule imported with from-import, or its package)."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _walk(node: ast.AST, local: bool = False):
    """(import node, inside a function) for every import under ``node``, TYPE_CHECKING blocks skipped."""
    for child in ast.iter_child_nodes(node):
        if _is_type_checking(child):
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, local
        yield from _walk(child, local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def _imported_names(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative import
        anchor = module.split(".")
        anchor = anchor if is_package else anchor[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, *([node.module] if node.module else [])])
    return [f"{base}.{a.name}" for a in node.names]


def scan() -> tuple[list[Import], dict[str, set[str]]]:
    """Every import of a umust_cli module, and each module's module-level third-party imports."""
    modules, imports, third = _modules(), [], defaultdict(set)
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, local in _walk(tree):
            for name in _imported_names(node, module, path.name == "__init__.py"):
                top = name.split(".")[0]
                if top == "umust_cli":
                    imports.append(Import(module, _resolve(name, modules), node.lineno, local))
                elif top and not local and top not in sys.stdlib_module_names and top != "__future__":
                    third[module].add(top)
    return imports, third


def package(module: str) -> str:
    """The layer unit of a module: umust_cli.data.corpus -> data, umust_cli.io -> io, umust_cli -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def package_graph(imports: list[Import]) -> dict[str, set[str]]:
    graph = defaultdict(set)
    for imp in imports:
        if package(imp.source) != package(imp.target):
            graph[package(imp.source)].add(package(imp.target))
    return graph


def heavy_modules(imports: list[Import], third: dict[str, set[str]]) -> set[str]:
    """Modules whose loading imports a third-party package other than typer/click (through
    module-level imports, parent packages included)."""
    deps = defaultdict(set)
    for imp in imports:
        if not imp.local:
            deps[imp.source].add(imp.target)
    for module in _modules():
        parent = module.rsplit(".", 1)[0] if "." in module else None
        if parent:
            deps[module].add(parent)
    heavy = {m for m, names in third.items() if names - CLI_OWN}
    changed = True
    while changed:
        changed = False
        for module, targets in deps.items():
            if module not in heavy and targets & heavy:
                heavy.add(module)
                changed = True
    return heavy


def _where(imp: Import) -> str:
    return f"{imp.source} line {imp.line} -> {imp.target}{' (function-local)' if imp.local else ''}"


# --------------------------------------------------------------------- tests
def test_scan_sees_module_level_and_local_imports():
    imports, third = scan()
    edges = {(i.source, i.target, i.local) for i in imports}
    assert ("umust_cli.data.stats", "umust_cli.data.corpus", False) in edges
    assert ("umust_cli.cli.main", "umust_cli.cli.dataset", False) in edges  # from umust_cli.cli import dataset
    assert any(i.source == "umust_cli.cli.dataset" and i.local for i in imports)
    assert "torch" in third["umust_cli.model.retrieval"] and "typer" in third["umust_cli.cli.main"]
    assert "torch" not in third["umust_cli.device"]  # imported under TYPE_CHECKING and in a function only
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_every_package_has_a_layer():
    modules = _modules()
    assert {package(m) for m in modules} <= set(RANK), sorted({package(m) for m in modules} - set(RANK))


def test_no_import_cycles():
    imports, _ = scan()
    packages = find_cycles(package_graph(imports))
    assert not packages, f"package cycles: {packages}"
    module_graph = defaultdict(set)
    for imp in imports:
        if imp.source != imp.target and not imp.target.startswith(imp.source + "."):
            module_graph[imp.source].add(imp.target)
    modules = find_cycles(module_graph)
    assert not modules, f"module cycles: {modules}"


def test_imports_follow_the_layers():
    imports, _ = scan()
    wrong = sorted({_where(i) for i in imports if package(i.source) != package(i.target)
                    and RANK[package(i.target)] >= RANK[package(i.source)]})
    assert not wrong, "imports of the same or a higher layer:\n" + "\n".join(wrong)


def test_function_local_imports_only_for_heavy_modules_in_cli():
    imports, third = scan()
    heavy = heavy_modules(imports, third)
    wrong = sorted({_where(i) for i in imports if i.local and not (package(i.source) == "cli" and i.target in heavy)})
    assert not wrong, ("function-local imports of umust_cli modules outside the documented case "
                       "(cli/ importing a module that loads heavy third-party packages):\n" + "\n".join(wrong))


def test_the_cli_entry_point_loads_no_heavy_module():
    imports, third = scan()
    heavy = heavy_modules(imports, third)
    assert "umust_cli.cli.main" not in heavy
    assert "umust_cli.registry" not in heavy and "umust_cli.errors" not in heavy
    assert "umust_cli.retrieval.index" in heavy
