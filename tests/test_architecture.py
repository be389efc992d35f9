"""The layering of docs/architecture.md, checked on the source (AST, no imports run): a lower layer never
imports a higher one, no package reaches into another package's private module, there are no import
cycles, and an import inside a function is there for an optional or heavy dependency, with its reason."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "deepgeom"

#: the layers, lowest first; a module may import its own package and anything in a lower layer
LAYERS = [
    {"errors", "_version", "_validation", "_checks", "_results", "_defaults", "_optional", "_io", "_package"},
    {"data", "models"},
    {"train"},
    {"capture"},
    {"functional"},
    {"analysis"},
    {"viz", "claims"},
    {"studies"},
    {"report"},
    {"reproduce"},
    {"cli", "__main__", "__init__"},  # the command line and the public facade (deepgeom/__init__.py)
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}

#: function-level imports allowed without a reason (none left since analysis/similarity.py was split)
ALLOWED_FUNCTION_IMPORTS: set[tuple[str, str]] = set()
#: modules whose function-level imports are not checked (none: the reproduce package's moved too)
UNCHECKED_FUNCTION_IMPORTS: set[str] = set()
#: a lower layer importing a higher one, on purpose: the deprecated path of a moved name, resolved on
#: first use (deepgeom.functional.cka.MinibatchCKA → deepgeom.analysis.streaming)
ALLOWED_UPWARD = {("deepgeom.functional.cka", "deepgeom.analysis.streaming")}


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path):
    """(target module, line, inside a function?, the import node) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_function, typing_only = set(), set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(fn) if n is not fn)
        elif isinstance(fn, ast.If) and "TYPE_CHECKING" in ast.unparse(fn.test):
            typing_only.update(id(n) for n in ast.walk(fn))  # never runs: annotations only
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # ``from pkg import sub`` imports the submodule ``pkg.sub`` where there is one
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        else:
            continue
        if id(node) in typing_only:
            continue
        for t in dict.fromkeys(targets):
            yield t, node.lineno, id(node) in in_function, node


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _internal(target: str) -> str | None:
    """The deepgeom module a target names (its longest known prefix), or None for a third-party one."""
    if target != "deepgeom" and not target.startswith("deepgeom."):
        return None
    while target not in MODULES:
        target = target.rpartition(".")[0]
    return target


def test_every_package_has_a_layer():
    assert {_top(m) for m in MODULES} <= set(RANK), {_top(m) for m in MODULES} - set(RANK)


def test_a_lower_layer_never_imports_a_higher_one():
    bad = []
    for name, path in MODULES.items():
        for target, line, _, _ in _imports(name, path):
            t = _internal(target)
            if t is None or (name, t) in ALLOWED_UPWARD:
                continue
            if RANK[_top(t)] > RANK[_top(name)]:
                bad.append(f"{name}:{line} imports {t} (layer {RANK[_top(t)]} > {RANK[_top(name)]})")
    assert not bad, "\n".join(bad)


def test_no_package_imports_another_packages_private_module():
    bad = []
    for name, path in MODULES.items():
        for target, line, _, _ in _imports(name, path):
            t = _internal(target)
            if t is None or _top(t) == _top(name):
                continue
            # deepgeom._x are the shared helpers of every package; deepgeom.pkg._x is pkg's own
            if any(part.startswith("_") for part in t.split(".")[2:]):
                bad.append(f"{name}:{line} imports {t}")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = defaultdict(set)
    for name, path in MODULES.items():
        for target, _, _, _ in _imports(name, path):
            t = _internal(target)
            # a package's __init__ always runs before its modules: importing an ancestor is no cycle
            if t is not None and t != name and not name.startswith(t + ".") and (name, t) not in ALLOWED_UPWARD:
                graph[name].add(t)
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in list(MODULES):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def _has_reason(lines: list[str], node: ast.AST) -> bool:
    """A comment on the import itself, or on the line above the block of imports it belongs to."""
    if any("#" in lines[i] for i in range(node.lineno - 1, node.end_lineno)):
        return True
    i = node.lineno - 2
    while i >= 0 and lines[i].strip().startswith(("from ", "import ", ")")) or (i >= 0 and lines[i].startswith(" " * 8) and lines[i].strip().endswith(",")):
        i -= 1
    return i >= 0 and lines[i].strip().startswith("#")


def test_imports_inside_functions_are_for_optional_or_heavy_dependencies_with_a_reason():
    bad = []
    for name, path in MODULES.items():
        if name in UNCHECKED_FUNCTION_IMPORTS:
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for target, line, in_function, node in _imports(name, path):
            if not in_function or (name, _internal(target) or target) in ALLOWED_FUNCTION_IMPORTS:
                continue
            if target.split(".")[0] in sys.stdlib_module_names and target.split(".")[0] != "multiprocessing":
                bad.append(f"{name}:{line} imports the standard library module {target} inside a function")
            elif not _has_reason(lines, node):
                bad.append(f"{name}:{line} imports {target} inside a function without a reason")
    assert not bad, f"{len(bad)} imports:\n" + "\n".join(bad)


def test_registries_are_filled_at_import():
    # in a fresh interpreter: nothing but the import has run
    probe = ("import sys, deepgeom.report as r, deepgeom.studies.registry as g, deepgeom.claims._registry as c; "
             "print(len(r.SECTIONS), sorted(g._REGISTRY), len(c.STATISTICS))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(SRC)}).stdout.split(maxsplit=1)
    assert int(out[0]) == 12
    assert {"id_profile", "cka_matrix", "spectrum_through_training"} <= set(ast.literal_eval(out[1].rsplit(maxsplit=1)[0]))
    assert int(out[1].rsplit(maxsplit=1)[1]) >= 10


def test_no_module_in_src_is_over_500_lines():
    # analysis/similarity.py is the lead engineer's split (issue 16)
    long = {n: len(p.read_text(encoding="utf-8").splitlines()) for n, p in MODULES.items()}
    over = {n: k for n, k in long.items() if k > 500}
    assert not over, over
