"""The import rules of docs/architecture.md, held on the package's whole import graph (issue 28).

The graph: every module under tinygpt_bench/ (packages' __init__ included), and every import
anywhere in it (at the top, in functions, under `if`/`try`), relative imports resolved, read
from the source (ast): a `from X import name` counts as an import of X.name where that is a
module, else of X. An import of a.b.c also runs a/__init__ and a/b/__init__; those implicit
imports of the parents are not edges (an engine's modules would otherwise all 'import' the
registry, the folder they sit in). Imports by name at run time (importlib: the registry's
engine hooks, the runner's preload list) are not edges either: that is how the registry
reaches an engine without importing it.

The rules:
- no circle of imports;
- every module has a layer (LAYERS, top first) and imports only its own layer or those below;
- an engine's package (engines/<name>/) is reached only through the registry: no module
  outside it imports it, and it imports no other engine's;
- the results package imports only errors.py and itself;
- the reporting modules import only each other and the leaf modules (never an engine, the
  registry, the runner or a measuring command);
- the measuring commands (curve, diagnose, peak) do not import each other.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "tinygpt_bench"
ROOT = "__init__"  # the name of tinygpt_bench/__init__.py below (the package itself)
ENGINE_PACKAGE = "engines/*"  # LAYERS' name for every module of an engine's folder, engines/<name>/**

# Each layer, top first, and the modules in it (names relative to tinygpt_bench). A name stands
# for the module and, when it is a package, every module in it (cli -> cli/**, runner ->
# runner/**), except `engines`, whose registry, contract and engine folders sit in three layers.
# `cli` stands for the package it is becoming as well as for cli.py.
LAYERS: list[tuple[str, set[str]]] = [
    ("entry", {"__main__", "entry"}),  # the console script: imports the CLI
    ("cli", {"cli", "display"}),  # the commands (Typer) and curve's terminal display
    ("commands", {"curve", "diagnose", "peak",  # measuring commands
                  "report", "chart", "compare", "perfpage"}),  # reporting: result files only
    ("runner", {"runner", "preload"}),  # how steps are timed: settings, worker, repeats, rows
    ("shared", {"preflight", "protocol", "envinfo"}),  # what the commands share above the registry
    ("registry", {"engines"}),  # engines/__init__.py: the only way to an engine
    ("engine packages", {ENGINE_PACKAGE}),  # engines/<name>/: one folder each
    ("contract", {"engines.base", "engines.description"}),  # what a backend is; what an engine says
    ("leaves", {ROOT, "errors", "model", "presets", "units", "resources", "host", "kernelcheck", "scratch",
                "browser", "sigmask", "worker_signals", "corpus", "faults", "markdown", "stats", "eta", "runs",
                "results"}),
]
MEASURING = ("curve", "diagnose", "peak")
REPORTING = ("report", "chart", "compare", "perfpage")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or ROOT


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(full: str, modules: dict) -> str | None:
    """The package's module a dotted name imports (its longest prefix that is one)."""
    if full != "tinygpt_bench" and not full.startswith("tinygpt_bench."):
        return None
    parts = full.split(".")[1:]
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return ROOT


def imports_of(name: str, path: Path, modules: dict) -> dict[str, int]:
    """{module it imports: the line of the first such import}, itself left out."""
    here = "tinygpt_bench" + ("" if name == ROOT else "." + name)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            # `from X import name`: the module X.name where there is one, else X
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}".partition(".")[2] in modules else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            m = _resolve(t, modules)
            if m is not None and m != name:
                out.setdefault(m, node.lineno)
    return out


def import_graph() -> dict[str, dict[str, int]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


GRAPH = import_graph()


def engine_folder(name: str) -> str | None:
    """The engine a module belongs to ('wasm' of engines.wasm.backend), None outside engine folders."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[0] == "engines" and (PKG / "engines" / parts[1]).is_dir():
        return parts[1]
    return None


def layer_key(name: str) -> str | None:
    """The LAYERS entry a module falls under, None where it has none."""
    keys = {k for _, ks in LAYERS for k in ks}
    if name in keys:
        return name
    if engine_folder(name):
        return ENGINE_PACKAGE
    top = name.split(".")[0]
    return top if top in keys and top != "engines" else None


def layer_of(name: str) -> int:
    """0 for the top layer; larger is lower."""
    key = layer_key(name)
    return next(i for i, (_, ks) in enumerate(LAYERS) if key in ks)


def shown(name: str) -> str:
    return "tinygpt_bench" if name == ROOT else f"tinygpt_bench.{name}"


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One circle of imports through each group of modules that import each other (Tarjan's
    strongly connected components, then a path around each), as [a, b, ..., a]."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:
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
            group = set()
            while True:
                w = stack.pop()
                on.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    out = []
    for group in groups:  # a shortest way back to the start, within the group (breadth first)
        start = min(group)
        prev = {start: None}
        frontier = [start]
        while frontier and start not in [w for v in frontier for w in graph[v]]:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w in group and w not in prev:
                        prev[w] = v
                        nxt.append(w)
            frontier = nxt
        path = [next(v for v in frontier if start in graph[v])]  # the last before start, back to start
        while prev[path[-1]] is not None:
            path.append(prev[path[-1]])
        out.append([*reversed(path), start])
    return out


def describe(path: list[str], graph: dict[str, dict[str, int]]) -> str:
    """a --line 3--> b --line 7--> a: each module, and the line of its import of the next."""
    return shown(path[0]) + "".join(f" --line {graph[a][b]}--> {shown(b)}" for a, b in zip(path, path[1:]))


def violations(graph, rule) -> list[str]:
    return [f"{shown(a)} imports {shown(b)} (line {line}): {why}"
            for a in sorted(graph) for b, line in sorted(graph[a].items()) if (why := rule(a, b))]


# ---- the graph itself ---------------------------------------------------------------------

def test_the_graph_sees_every_kind_of_import():
    """The reader finds what the rules need: relative imports, function-level imports, a
    `from package import module`; and no module imports itself."""
    assert "engines.wasm.runtime" in GRAPH["engines.wasm.backend"]  # relative, from .runtime import
    assert "engines" in GRAPH["peak"]  # inside measure()
    assert "envinfo" in GRAPH["curve"]  # from tinygpt_bench import envinfo
    assert "engines.description" in GRAPH["engines.reference"]  # absolute, in an engine's __init__
    assert all(a not in bs for a, bs in GRAPH.items())


def test_a_circle_is_found_and_named():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}, "e": {"e2": 1}, "e2": {"e": 1}}
    assert sorted(map(tuple, cycles(graph))) == [("a", "b", "c", "a"), ("e", "e2", "e")]
    assert describe(["a", "b", "c", "a"], graph) == ("tinygpt_bench.a --line 1--> tinygpt_bench.b --line 2--> "
                                                     "tinygpt_bench.c --line 3--> tinygpt_bench.a")
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_a_package_is_placed_by_its_top_level_name():
    """cli/ (to come), runner/ and results/ take their name's layer; engines/ does not: its
    registry, contract and engine folders are three layers, and a new flat module there is placed
    by hand."""
    assert layer_key("cli.options") == "cli" and layer_key("runner.worker") == "runner"
    assert layer_key("results.codec") == "results"
    assert layer_key("engines.wasm.backend") == layer_key("engines.webgpu") == ENGINE_PACKAGE
    assert layer_key("engines.base") == "engines.base" and layer_key("engines") == "engines"
    assert layer_key("engines.something_new") is None and layer_key("something_new") is None
    assert layer_of("runner") < layer_of("preflight") and layer_of("cli") < layer_of("runner")


# ---- the rules ------------------------------------------------------------------------------

def test_no_circle_of_imports():
    found = cycles(GRAPH)
    assert not found, "modules that import each other (break the circle: move what both need down to a " \
                      "leaf module):\n" + "\n".join(describe(c, GRAPH) for c in found)


def test_every_module_has_a_layer():
    missing = [f"{shown(m)} ({p.relative_to(PKG.parent)})" for m, p in all_modules().items() if layer_key(m) is None]
    assert not missing, ("modules in no layer: place each in tests/test_layers.py's LAYERS (docs/architecture.md "
                         "says which layer takes what): " + ", ".join(missing))


def test_imports_go_down_the_layers():
    def rule(a, b):
        if layer_key(a) and layer_key(b) and layer_of(b) < layer_of(a):
            return f"up from layer '{LAYERS[layer_of(a)][0]}' to '{LAYERS[layer_of(b)][0]}'"
        return None

    bad = violations(GRAPH, rule)
    assert not bad, "imports go down the layers or stay within one:\n" + "\n".join(bad)


def test_an_engine_is_reached_only_through_the_registry():
    """No module outside engines/<name>/ imports it (the registry imports it by name, when a
    backend or hook is needed); an engine imports no other engine's modules."""
    def rule(a, b):
        theirs = engine_folder(b)
        if theirs and engine_folder(a) != theirs:
            return f"engine '{theirs}' is reached through the registry (tinygpt_bench.engines) only"
        return None

    bad = violations(GRAPH, rule)
    assert not bad, "\n".join(bad)


def test_the_engines_import_no_command():
    """The registry, the contract and the engines' folders import nothing above the registry."""
    registry = layer_of("engines")

    def rule(a, b):
        if (a == "engines" or a.startswith("engines.")) and layer_of(b) < registry:
            return "an engine knows nothing of the commands, the runner or the CLI"
        return None

    bad = violations(GRAPH, rule)
    assert not bad, "\n".join(bad)


def test_the_results_package_imports_only_errors_and_itself():
    def rule(a, b):
        if a.split(".")[0] == "results" and b != "errors" and b.split(".")[0] != "results":
            return "the results package imports only errors.py and itself"
        return None

    bad = violations(GRAPH, rule)
    assert not bad, "\n".join(bad)


def test_reporting_reads_result_files_only():
    leaves = layer_of("errors")

    def rule(a, b):
        if a.split(".")[0] in REPORTING and b.split(".")[0] not in REPORTING and layer_of(b) != leaves:
            return "a reporting module imports only the others and the leaf modules (results, stats...)"
        return None

    bad = violations(GRAPH, rule)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", MEASURING)
def test_a_measuring_command_imports_no_other(module):
    others = set(MEASURING) - {module}
    bad = {m for m in GRAPH.get(module, {}) if m.split(".")[0] in others}
    assert not bad, f"{module} imports {sorted(bad)}: what two measuring commands share sits below them"


def test_the_preflight_sits_below_the_commands():
    assert not {m.split(".")[0] for m in GRAPH["preflight"]} & {*MEASURING, "runner", "cli"}


def test_the_drawing_names_every_module_of_the_middle_layers():
    """docs/architecture.md's drawing is of the code: each module of the CLI, the commands, the
    runner and the shared layer appears in it by its file name, so a new one is drawn."""
    doc = (PKG.parent / "docs" / "architecture.md").read_text()
    drawing = doc.split("## The layers", 1)[1].split("```")[1]
    middle = set().union(*(keys for lname, keys in LAYERS if lname in {"cli", "commands", "runner", "shared"}))
    def drawn(name: str, path: Path) -> bool:
        # a package's module by its path (cli/info.py), a top-level one by its file name standing
        # alone: not inside a longer name (envinfo.py) or a path (cli/diagnose.py)
        if "." in name:
            return path.relative_to(PKG).as_posix() in drawing
        return re.search(rf"(?<![\w/.]){re.escape(path.name)}", drawing) is not None

    missing = [name for name, path in all_modules().items()
               if layer_key(name) in middle and path.name != "__init__.py" and not drawn(name, path)]
    assert not missing, f"docs/architecture.md's drawing does not show {missing}: draw them where they sit"
