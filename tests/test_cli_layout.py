"""The shape of the CLI package (issue 28): no function over 60 lines; each flag declared in one
place (one flag name, one meaning), across the CLI and the engines' option declarations; the
commands that read result files do not load the engine registry."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "tinygpt_bench" / "cli"
# where options are declared: the CLI (typer.Option / typer.Argument) and the engines (option())
ENGINE_DECLARATIONS = [ROOT / "tinygpt_bench" / "engines", ROOT / "tests" / "toy_engine"]
MAX_LINES = 60


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_function_in_the_cli_is_over_60_lines():
    long = [f"{p.relative_to(ROOT)}:{f.lineno} {f.name} ({f.end_lineno - f.lineno + 1} lines)"
            for p in sorted(CLI.glob("*.py")) for f in _functions(p) if f.end_lineno - f.lineno + 1 > MAX_LINES]
    assert not long, f"functions over {MAX_LINES} lines: {long}"


def _flags(nodes) -> list[str]:
    """The flag names among a declaration's arguments: '--out', '-o'; '--chart/--no-chart' is two."""
    out = []
    for n in nodes:
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.startswith("-"):
            out += [f for f in n.value.split("/") if f]
    return out


def _called(node: ast.Call) -> str | None:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None


def declarations() -> dict[str, list[str]]:
    """{flag: [where it is declared]} over the CLI's typer.Option/typer.Argument calls and the
    engines' option() calls (the flag: option's third argument or flag=)."""
    found = defaultdict(list)
    for path in sorted(CLI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _called(node) in ("Option", "Argument"):
                for flag in _flags(node.args):
                    found[flag].append(f"{path.relative_to(ROOT)}:{node.lineno}")
    for path in sorted(p for d in ENGINE_DECLARATIONS for p in d.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _called(node) == "option":
                given = node.args[2:3] + [k.value for k in node.keywords if k.arg == "flag"]
                for flag in _flags(given):
                    found[flag].append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_each_flag_is_declared_in_one_place():
    found = declarations()
    # the scan sees the declarations: the CLI's shared ones, a command's own, the engines'
    assert {"--out", "-o", "--markdown", "--json", "--steps", "--backend", "-b", "--new-page", "--chart",
            "--no-chart", "--threads", "--adapter", "--browser", "--wasm-fma", "--toy-label"} <= set(found)
    twice = {flag: where for flag, where in found.items() if len(where) > 1}
    assert not twice, f"flags declared in more than one place: {twice}"


def _fresh(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)


READ_ONLY = [["summary", "results/h200"], ["summary", "results/h200", "--json"], ["chart", "--check", "results/h200"],
             ["compare", "results/h200", "results/h200"], ["report", "results/h200"], ["presets"]]


@pytest.mark.parametrize("argv", READ_ONLY, ids=lambda a: " ".join(a))
def test_a_command_that_reads_result_files_loads_no_engine_registry(argv):
    code = (
        "import json, sys\n"
        "from tinygpt_bench import cli\n"
        "try:\n"
        f"    cli.main({argv!r})\n"
        "except SystemExit as e:\n"
        "    rc = e.code\n"
        "loaded = sorted(m for m in sys.modules if m == 'tinygpt_bench.engines' or m.startswith('tinygpt_bench.engines.'))\n"
        "print(json.dumps({'rc': rc, 'engines': loaded}), file=sys.stderr)\n"
    )
    r = _fresh(code)
    out = json.loads(r.stderr.strip().splitlines()[-1])
    assert out["rc"] == 0, r.stderr
    assert out["engines"] == [], f"{' '.join(argv)} loaded {out['engines']}"


def test_importing_the_cli_loads_no_command():
    """curve's fork server imports tinygpt_bench.cli by name: that stays cheap (no command, no registry)."""
    r = _fresh("import sys\nimport tinygpt_bench.cli\n"
               "print(sorted(m for m in sys.modules if m.startswith('tinygpt_bench.')))")
    assert r.returncode == 0, r.stderr
    loaded = set(ast.literal_eval(r.stdout.strip().splitlines()[-1]))
    assert "tinygpt_bench.cli.options" in loaded
    heavy = {"tinygpt_bench.engines", "tinygpt_bench.curve", "tinygpt_bench.protocol", "tinygpt_bench.cli.measure",
             "tinygpt_bench.cli.read"}
    assert not loaded & heavy, sorted(loaded & heavy)


def test_help_lists_every_command_and_each_command_its_options(run_cli):
    from tinygpt_bench import cli

    code, out, _ = run_cli("--help")
    assert code == 0
    for name in cli.COMMANDS:
        assert f" {name} " in out, name
    assert "Train PRESET for a fixed number of steps" in out and "The summary table of result files" in out
    code, out, _ = run_cli("run", "--help")
    assert code == 0 and "Engine options" in out and "--threads" in out and "--backend" in out
    code, out, _ = run_cli("peak", "--help")
    assert code == 0 and "Engine options" in out and "--threads" in out and "--adapter" in out
    code, out, _ = run_cli("summary", "--help")
    assert code == 0 and "--markdown" in out and "--json" in out and "Engine options" not in out
