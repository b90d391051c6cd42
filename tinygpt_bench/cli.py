"""The `tinygpt-bench` command line (Typer). CLI -> protocol -> backends -> kernels."""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import re
import statistics
import sys
import tempfile
import traceback
import typing
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from pathlib import Path

from tinygpt_bench import __version__, corpus, engines, envinfo, model, preflight, presets, protocol, runs
from tinygpt_bench import curve as curve_mod
from tinygpt_bench.errors import UserError, unknown
from tinygpt_bench.units import fmt_bytes, fmt_si, plural

# the name a value takes in --help where Typer would print its Python type
METAVARS = {"<str>": "TEXT", "<int>": "INTEGER", "<float>": "NUMBER", "<path>": "PATH"}


class _ReadableHelp:
    """Typer labels every option in --help with its Python type: `<bool>` on a flag, which takes
    no value, `<str>` on text. A flag gets no label here and a value a name (TEXT, SECONDS)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for p in params:
            # display_type is Typer's own (0.29); an older Typer keeps its labels
            label = getattr(p, "display_type", None)
            if isinstance(p, typer.core.TyperOption) and p.metavar is None and label:
                p.metavar = "" if p.is_bool_flag else METAVARS.get(label(ctx))
        return params


class _Command(_ReadableHelp, typer.core.TyperCommand):
    pass


class _Group(_ReadableHelp, typer.core.TyperGroup):
    pass


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Train one small byte-level GPT on WebGPU and WebAssembly Memory64 and measure the speedup curve.",
)
console = Console(width=None if sys.stdout.isatty() else 120)

CorpusOpt = typer.Option("synthetic", "--corpus", help="'synthetic' (default, offline), 'shakespeare', or a text file path")


@app.command("presets", cls=_Command)
def presets_cmd(
    markdown: bool = typer.Option(False, "--markdown", help="print a Markdown table instead"),
) -> None:
    """List the presets: shape, exact parameter count, FLOPs and bytes per training step."""
    cols = ["preset", "layers", "d_model", "heads", "ctx", "batch", "params", "GFLOP/step",
            "W+G+Adam", "activations", "total"]
    rows = []
    for name in presets.builtin_names():
        p = presets.load(name)
        b = model.step_bytes(p)
        rows.append([
            p.name, str(p.layers), str(p.d_model), str(p.heads), str(p.ctx), str(p.batch),
            f"{model.param_count(p):,}", f"{model.flops_per_step(p)['total'] / 1e9:.3f}",
            fmt_bytes(b["weights"] + b["grads"] + b["adam"], 1), fmt_bytes(b["activations"], 1), fmt_bytes(b["total"], 1),
        ])
    note = (
        "W+G+Adam: fp32 weights, gradients and both AdamW moments (16 bytes a parameter). "
        "FLOPs: matrix products only, 2 per multiply-add; causal attention counts only allowed "
        "pairs; backward = 2x forward; step = 3x forward. Bytes: fp32; activations are those saved "
        "for backward, flash-attention style (no T x T matrix)."
    )
    if markdown:
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for r in rows:
            print("| " + " | ".join(r) + " |")
        print(f"\n{note}")
        return
    t = Table(title="tinygpt-bench presets", caption=note, caption_justify="left", padding=(0, 1))
    for c in cols:
        t.add_column(c, justify="left" if c == "preset" else "right", no_wrap=True)
    for r in rows:
        t.add_row(*r)
    console.print(t)


@app.command("env", cls=_Command)
def env_cmd(as_json: bool = typer.Option(False, "--json", help="print the raw JSON record")) -> None:
    """Show the machine: CPU, Python and library versions, WebGPU adapters, wasmtime features."""
    info = envinfo.collect_all()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    t = Table(title="environment", show_header=False)
    t.add_column("what")
    t.add_column("value")
    t.add_row("CPU", f"{info['cpu_model']} ({info['cpu_usable_cores']} usable of {info['cpu_logical_cores']} logical cores)")
    if info.get("host_memory_bytes"):
        t.add_row("memory", fmt_bytes(info["host_memory_bytes"], 1))
    t.add_row("OS", info["os"])
    t.add_row("Python", info["python"])
    for lib in envinfo.LIBRARIES:
        t.add_row(lib, info.get(lib) or "not installed")
    t.add_row("tinygpt-bench", info["tinygpt_bench"])
    t.add_row("git commit", f"{info['git_commit']}{' (dirty)' if info.get('git_dirty') else ''} ({info['git_source']})"
              if info["git_commit"] else "none: not run from a git checkout of tinygpt-bench")
    if "wasmtime_features" in info:
        feats = ", ".join(f"{k.removeprefix('wasm_')}={'yes' if v else 'no'}" for k, v in info["wasmtime_features"].items())
        t.add_row("wasmtime", f"{info['wasmtime_version']}: {feats}")
    else:
        t.add_row("wasmtime", info.get("wasmtime_error", "?"))
    if info.get("node_version"):
        t.add_row("Node (wasm-v8)", f"node {info['node_version']}, V8 {info['v8_version']} ({info['node_path']})")
    else:
        t.add_row("Node (wasm-v8)", info.get("node_error", "?"))
    if info.get("browser_version"):
        v8 = f", V8 {info['browser_v8_version']}" if info.get("browser_v8_version") else ""
        t.add_row("Chromium (wasm-chrome)", f"{info['browser_version']}{v8} ({info['browser_path']})"
                  + (f"; {info['browser_error']}" if info.get("browser_error") else ""))
    else:
        t.add_row("Chromium (wasm-chrome)", info.get("browser_error", "?"))
    console.print(t)
    a = Table(title="WebGPU adapters (backend webgpu: wgpu-native; webgpu-dawn: Dawn)")
    for c in ("implementation", "#", "name", "backend", "type", "software", "driver", "max binding"):
        a.add_column(c)
    for ad in info["adapters"]:
        a.add_row(ad["implementation"], str(ad["index"]), ad["name"], ad["backend"], ad["adapter_type"],
                  "yes" if ad["software"] else "no", ad["driver"], fmt_bytes(ad["max_storage_buffer_binding_size"], 1))
    console.print(a)
    for impl, error in info.get("adapters_errors", {}).items():
        console.print(f"[yellow]WebGPU ({impl}): {error}[/yellow]", highlight=False)
    console.print(f"backends: {', '.join(engines.names())}")


def engine_options(command: str):
    """Add the engines' flags that `command` offers (declared once each, engines/<name>/__init__.py)
    to a command; the command gets them as `options`: {option name: value}, those left at their
    default left out (a flag's text parsed where the declaration says how, e.g. sizes)."""
    decl = engines.cli_options(command)

    def wrap(fn):
        sig = inspect.signature(fn)
        extra = []
        for o in decl:
            kind = Optional[str] if o.parse else o.type
            extra.append(inspect.Parameter(o.key, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                                           default=typer.Option(o.default, o.flag, help=o.help, metavar=o.metavar,
                                                                rich_help_panel="Engine options")))
        params = [p for p in sig.parameters.values() if p.name != "options"] + extra

        @functools.wraps(fn)
        def command_fn(**kw):
            options = {}
            for o in decl:
                value = kw.pop(o.key)
                if value is not None and value != o.default:
                    options[o.name] = o.parse(value) if o.parse else value
            return fn(**kw, options=options)

        command_fn.__signature__ = sig.replace(parameters=params)
        command_fn.__annotations__ = {**typing.get_type_hints(fn), **{p.name: p.annotation for p in extra}}
        del command_fn.__wrapped__  # typer reads the signature above, not the wrapped function's
        return command_fn

    return wrap


def check_engine_options(backend_names: list[str], options: dict) -> None:
    """Every given engine option must be taken by a chosen backend: one line naming it otherwise."""
    for name in options:
        if not any(o.name == name for b in backend_names for o in engines.options_of(b)):
            takers = [b for b in engines.names() if any(o.name == name for o in engines.options_of(b))]
            flag = next(o.flag for o in engines.options_of(takers[0]) if o.name == name).split("/")[0]
            raise UserError(f"{flag} is not an option of {', '.join(backend_names)}; it is one of "
                            f"{', '.join(takers)}: leave it out or choose one of those backends")


@app.command("run", cls=_Command)
@engine_options("run")
def run_cmd(
    preset: str = typer.Argument(..., metavar="PRESET", help="preset name (see `tinygpt-bench presets`) or a .toml path"),
    backend: str = typer.Option(engines.oracle(), "--backend", "-b", metavar="NAME", help=f"one of: {', '.join(engines.names())}"),
    steps: int = typer.Option(protocol.DEFAULT_STEPS, "--steps", help="training steps (the protocol's fixed 15)"),
    corpus_spec: str = CorpusOpt,
    seed: int = typer.Option(protocol.DEFAULT_SEED, "--seed", help="seed of the initial weights and the batches"),
    lr: float = typer.Option(3e-4, "--lr", help="AdamW learning rate"),
    plain: bool = typer.Option(False, "--plain", help="no live display (CI logs)"),
    options: dict = None,
) -> None:
    """Train PRESET for a fixed number of steps on one backend; print each step's time and loss."""
    from tinygpt_bench import display, runner

    p = presets.load(preset)
    s = runner.Settings(presets=(p,), backends=(backend,), steps=steps, repeats=1, corpus=corpus_spec, seed=seed,
                        lr=lr, options=options)
    c = corpus.load(corpus_spec)
    pf = preflight.preflight(p, backend, s.options_for(backend))
    if not pf.ok and "step_bytes" in (pf.detail or {}):  # what cannot fit is refused before anything starts
        raise UserError(f"{backend} cannot run preset '{p.name}' here: {pf.error}. {pf.meaning}")
    work = protocol.prepare(p, c, steps, seed)
    flops = model.flops_per_step(p)["total"]
    console.print(
        f"[bold]{p.name}[/bold] on [bold]{backend}[/bold]: {model.param_count(p):,} parameters, "
        f"{plural(steps, 'step')}, corpus {c.name} (sha256 {c.sha256[:12]}), seed {seed}", highlight=False,
    )
    reporter = display.PlainReporter(console) if plain else display.LiveReporter(console)
    with reporter:  # one repeat in a worker process, exactly as curve measures each (the runner)
        rep = runner.measure_one(s, reporter, work)
    if not rep.ok:
        raise protocol.StageError(p.name, backend, rep.stage, rep.error)
    results = list(rep.steps)
    t = Table(title=f"{p.name} / {backend}")
    for col in ("step", "ms", "loss"):
        t.add_column(col, justify="right")
    for st in results:
        t.add_row(str(st.step), f"{st.ms:.2f}", f"{st.loss:.6f}")
    if not plain:
        console.print(t)
    steady = [st.ms for st in results[1:]] or [results[0].ms]
    med = statistics.median(steady)
    tokens = p.batch * p.ctx
    console.print(
        f"first step {results[0].ms:.1f} ms (cold); steady median {med:.2f} ms/step over steps "
        f"{2 if len(results) > 1 else 1}..{len(results)}; {tokens / med * 1e3:,.0f} tokens/s; "
        f"{fmt_si(flops / med * 1e3, 'FLOP/s')}; loss {results[0].loss:.4f} -> {results[-1].loss:.4f}",
        highlight=False,
    )


@app.command("curve", cls=_Command)
@engine_options("curve")
def curve_cmd(
    presets_spec: Optional[str] = typer.Option(
        None, "--presets", metavar="NAMES", help="comma-separated preset names or .toml paths, or 'all' for all nine "
        f"(default: {','.join(curve_mod.DEFAULT_PRESETS)}; {','.join(curve_mod.QUICK_PRESETS)} where WebGPU runs on a "
        "software adapter)"),
    backends_spec: Optional[str] = typer.Option(
        None, "--backends", metavar="NAMES", help=f"comma-separated; from: {', '.join(engines.names())} (default: "
        f"{','.join(curve_mod.DEFAULT_BACKENDS)}; {','.join(curve_mod.QUICK_BACKENDS)} where WebGPU runs on a software "
        "adapter)"),
    full: bool = typer.Option(False, "--full", help="the full default set (tiny..large on webgpu, webgpu-dawn, wasm) "
                                                    "even where WebGPU runs on a software adapter"),
    steps: int = typer.Option(protocol.DEFAULT_STEPS, "--steps", help="timed steps per measurement, the same for every preset"),
    repeats: int = typer.Option(3, "--repeats", help="repeats from a fresh load, interleaving the backends"),
    timeout: Optional[float] = typer.Option(None, "--timeout", metavar="SECONDS", help="time budget in seconds per measurement; past it: 'timeout'"),
    stop_after: Optional[float] = typer.Option(
        None, "--stop-after", metavar="SECONDS", help="time budget in seconds for the whole run: no repeat is started that would end past "
                                   "it (its backend's longest repeat so far, plus 25%); what finished is kept for "
                                   "--resume (exit 3)"),
    corpus_spec: str = CorpusOpt,
    seed: int = typer.Option(protocol.DEFAULT_SEED, "--seed"),
    out: Optional[Path] = typer.Option(None, "--out", metavar="FOLDER",
                                       help="folder for measurements.csv, steps.csv, environment.json, charts "
                                            "(default: a new runs/<UTC time>/, with runs/latest pointing at it)"),
    resume: bool = typer.Option(False, "--resume", help="skip what --out (default: runs/latest) already holds with "
                                                        "the same settings"),
    plain: bool = typer.Option(False, "--plain", help="no live display (CI logs)"),
    markdown: bool = typer.Option(False, "--markdown", help="also print the summary as a Markdown table"),
    chart: bool = typer.Option(True, "--chart/--no-chart", help="draw the chart into --out at the end"),
    options: dict = None,
) -> None:
    """Measure every preset on every backend under one protocol; write CSVs and the speedup chart."""
    from tinygpt_bench import display, runner

    if presets_spec is None or backends_spec is None:
        dp, db, why = curve_mod.default_selection(full)
        presets_spec = presets_spec if presets_spec is not None else ",".join(dp)
        backends_spec = backends_spec if backends_spec is not None else ",".join(db)
        console.print(f"defaults: {why}", highlight=False)
    chosen = presets.load_list(presets_spec)
    names = [b.strip() for b in backends_spec.split(",") if b.strip()]
    if not names:
        raise UserError(f"--backends '{backends_spec}' names no backend; give names such as "
                        f"--backends {','.join(curve_mod.DEFAULT_BACKENDS)}")
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; give a folder path for the results")
    settings = runner.Settings(presets=tuple(chosen), backends=tuple(names), steps=steps, repeats=repeats,
                               timeout_s=timeout, corpus=corpus_spec, seed=seed, resume=resume, options=options,
                               stop_after_s=stop_after)
    if out is None:  # never the committed results/: a folder of its own (runs.py)
        out = runs.latest() if resume else runs.new_folder()
    settings = settings.at(out)
    curve = curve_mod
    names = list(settings.backends)
    console.print(f"curve: {', '.join(p.name for p in chosen)} on {', '.join(names)}; {plural(steps, 'step')} x {plural(repeats, 'repeat')} -> {out}/",
                  highlight=False)
    try:
        if plain:
            rows = curve.run(settings, display.PlainReporter(console))
        else:
            with display.LiveReporter(console) as rep:
                rows = curve.run(settings, rep)
    except KeyboardInterrupt:
        console.print(f"interrupted: every finished measurement is in {out}/; rerun with --resume to complete it")
        raise typer.Exit(130)
    except curve.Stopped as e:
        console.print(str(e), highlight=False)
        from tinygpt_bench import results

        if results.done_keys(out):  # rows of this call or of earlier ones
            _print_summary([out], markdown)
        raise typer.Exit(3)
    _print_summary([out], markdown)
    if chart:
        from tinygpt_bench import chart as chart_mod

        paths = chart_mod.draw(chart_mod.chart_data([out]), out)
        console.print("chart: " + ", ".join(str(p) for p in paths), highlight=False)
    failed = [r for r in rows if r.status != "ok" or r.parity_ok is False
              or (r.reference or "").startswith("failed")]
    if failed:
        console.print(f"{plural(len(failed), 'measurement')} failed, timed out, missed loss parity or have it unknown "
                      "(the float64 reference failed)", style="red")
        raise typer.Exit(1)


def _summary(paths: list[Path]) -> tuple[list[str], list[list[str]]]:
    from tinygpt_bench import report, results

    return report.summary_rows(results.read_measurements(paths), results.read_steps(paths))


def _print_summary(paths: list[Path], as_markdown: bool) -> None:
    """The rich summary table, then (as_markdown) the same rows as a Markdown table. The module
    is imported as md_table: a local `markdown` once shadowed the flag and made it always true."""
    from tinygpt_bench import markdown as md_table

    header, rows = _summary(paths)
    t = Table(title="summary (ms/step: median of steps 2..N ± half IQR; speedup: 95% bootstrap CI)")
    for h in header:
        t.add_column(h, justify="left" if h in ("preset", "status") else "right")
    for r in rows:
        t.add_row(*r)
    console.print(t)
    if as_markdown:
        print(md_table.table(header, rows))


@app.command("summary", cls=_Command)
def summary_cmd(
    results_paths: list[Path] = typer.Argument(..., metavar="RESULTS", help="curve output folders or measurements.csv files"),
    markdown: bool = typer.Option(False, "--markdown", help="print only a Markdown table"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object: the figures as numbers"),
) -> None:
    """The summary table of result files (rich, Markdown for CI job summaries and the README, or JSON)."""
    from tinygpt_bench import markdown as md_table
    from tinygpt_bench import report, results

    _one_format(markdown, as_json)
    _warn_mixture(results_paths)
    if as_json:
        df = results.read_measurements(results_paths)
        print(json.dumps(report.summary_json(df, results.read_steps(results_paths)), indent=2))
    elif markdown:
        print(md_table.table(*_summary(results_paths)))
    else:
        _print_summary(results_paths, False)


@app.command("chart", cls=_Command)
def chart_cmd(
    results_paths: list[Path] = typer.Argument(..., metavar="RESULTS", help="curve output folders or measurements.csv files"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="folder for speedup.png/.svg (default: the first input's)"),
    check: bool = typer.Option(False, "--check", help="fail when the committed chart-data.json no longer matches the CSVs"),
) -> None:
    """Draw the speedup chart (PNG + SVG + chart-data.json) from result files alone."""
    from tinygpt_bench import chart as chart_mod

    for path in results_paths:  # checked first: a missing folder's parent is no place to look for a chart
        if not path.exists():
            raise UserError(f"{path} does not exist; give a curve output folder or its measurements.csv")
    first = results_paths[0]
    out = out or (first if first.is_dir() else first.parent)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; give a folder for the chart")
    if check:
        for name in ("speedup.png", "speedup.svg", chart_mod.CHART_DATA):
            if not (out / name).is_file():
                print(f"error: chart check: {out / name} is missing; draw the chart with "
                      f"`tinygpt-bench chart {first}` and commit it", file=sys.stderr)
                raise typer.Exit(1)
            if chart_mod.not_a_chart(out / name):
                print(f"error: chart check: {out / name} is empty or not a {name.rsplit('.')[-1].upper()} file; draw "
                      f"the chart with `tinygpt-bench chart {first}` and commit it", file=sys.stderr)
                raise typer.Exit(1)
        diffs = chart_mod.check(results_paths, out / chart_mod.CHART_DATA)
        if diffs:
            keys = ", ".join(d.split(":")[0] for d in diffs)
            print(f"error: chart check: {out / chart_mod.CHART_DATA} does not match the CSVs ({keys}); "
                  f"regenerate it with `tinygpt-bench chart {first}`", file=sys.stderr)
            raise typer.Exit(1)
        console.print(f"chart check: {out}/{chart_mod.CHART_DATA} matches the CSVs", highlight=False)
        return
    _warn_mixture(results_paths)
    paths = chart_mod.draw(chart_mod.chart_data(results_paths), out)
    console.print("wrote " + ", ".join(str(p) for p in paths), highlight=False)


def _warn_mixture(paths: list[Path]) -> None:
    """summary and chart read several runs as one table: where they differ in machine or settings
    they say so on stderr (as compare does); the chart says it in its title too."""
    from tinygpt_bench import results

    differ = results.mixture(paths)
    if differ:
        print(f"warning: {', '.join(map(str, paths))} were measured on different machines or with different "
              f"settings ({', '.join(differ)}); their rows are not one measurement: read them apart", file=sys.stderr)


@app.command("compare", cls=_Command)
def compare_cmd(
    old: Path = typer.Argument(..., metavar="OLD", help="earlier results (folder or measurements.csv)"),
    new: Path = typer.Argument(..., metavar="NEW", help="later results"),
    threshold: float = typer.Option(1.10, "--threshold", metavar="FACTOR", help="fail when a backend got slower than this factor, significantly"),
    markdown: bool = typer.Option(False, "--markdown", help="print a Markdown table instead"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead"),
) -> None:
    """Per preset and backend: the change in ms/step with its uncertainty; exit 1 on a regression."""
    from tinygpt_bench import compare as cmp
    from tinygpt_bench import markdown as md_table
    from tinygpt_bench import results

    _one_format(markdown, as_json)
    cmp.check_threshold(threshold)
    changes = cmp.compare(old, new, threshold)
    only_old, only_new = cmp.one_side_only(old, new)
    differ = cmp.setting_differences(results.read_environment([old]), results.read_environment([new]))
    if differ:
        print(f"warning: {old} and {new} were measured on different machines or with different settings "
              f"({', '.join(differ)}); a change may be theirs, not the code's", file=sys.stderr)
    bad = [c for c in changes if c.regression]
    title = f"{old} vs {new} (ratio of medians of steps 2..N, new / old, 95% bootstrap CI)"
    unmatched = cmp.one_side_line(old, new, only_old, only_new)
    verdict = f"{plural(len(bad), 'regression')} past {threshold:.2f}x" if bad else None
    if as_json:
        print(json.dumps(cmp.to_json(old, new, threshold, changes, only_old, only_new, differ), indent=2))
    elif markdown:
        table = md_table.table(cmp.HEADER, cmp.rows(changes))
        print("\n\n".join(x for x in (title, table, unmatched, verdict) if x))
    else:
        t = Table(title=title)
        for h in cmp.HEADER:
            t.add_column(h)
        for c, row in zip(changes, cmp.rows(changes)):
            t.add_row(*row[:-1], f"[red]{row[-1]}[/red]" if c.regression else row[-1])
        console.print(t)
        if unmatched:
            console.print(unmatched, highlight=False, markup=False)
        if verdict:
            console.print(verdict, style="red")
    if bad:
        raise typer.Exit(1)


def _one_format(markdown: bool, as_json: bool) -> None:
    if markdown and as_json:
        raise UserError("--markdown and --json are two formats of one output; give one of them")


@app.command("diagnose", cls=_Command)
@engine_options("diagnose")
def diagnose_cmd(
    preset: str = typer.Argument(..., metavar="PRESET", help="preset name or .toml path"),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", metavar="NAME", help="one backend (default: the curve's, in turn)"),
    timeout: Optional[float] = typer.Option(None, "--timeout", metavar="SECONDS", help="time budget in seconds for 15 steps"),
    out: Optional[Path] = typer.Option(None, "--out", metavar="FOLDER",
                                       help="folder for the report (Markdown and JSON; default: a new "
                                            "runs/<UTC time>-diagnose/)"),
    options: dict = None,
) -> None:
    """Find out why a preset fails on a backend: stages in order, stop at the first failure, say what it means."""
    from tinygpt_bench import diagnose as diag

    _check_faults()
    if out is not None:
        diag.check_out(out)
    _check_threads(options.get("threads"))
    _check_seconds("--timeout", timeout, 600)
    p = presets.load(preset)
    names = [backend] if backend else list(curve_mod.DEFAULT_BACKENDS)
    for b in names:
        engines.spec(b)  # an unknown name raises the error naming the choices
    check_engine_options(names, options)
    if out is None:  # never the committed results/: a folder of its own (runs.py)
        out = runs.new_folder("diagnose")
    failed = False
    for name in names:
        console.print(f"[bold]diagnose {p.name} on {name}[/bold]")

        def show(st) -> None:
            mark = "[green]pass[/green]" if st.ok else "[red]FAIL[/red]"
            console.print(f"  {mark} {st.name:<9} {st.figure}", highlight=False)
            for ev in st.detail.get("events", []) if st.name == "load" else []:
                console.print(f"            {ev}", highlight=False, markup=False)
            if not st.ok:
                console.print(f"       error: {st.error}", highlight=False, markup=False)
                console.print(f"       means: {st.meaning}", highlight=False, markup=False)

        d = diag.run(p, name, engines.select(name, options), timeout, on_stage=show)
        kern = next((s for s in d.stages if s.name == "kernels"), None)
        if kern and kern.detail.get("kernels"):
            t = Table(title=f"per-kernel time of one {p.name} step on {name}")
            for h in ("kernel", "ms", "share"):
                t.add_column(h, justify="left" if h == "kernel" else "right")
            total = sum(kern.detail["kernels"].values()) or 1.0
            for k, ms in sorted(kern.detail["kernels"].items(), key=lambda kv: -kv[1]):
                t.add_row(k, f"{ms:.3f}", f"{ms / total:.1%}")
            console.print(t)
        md, js = diag.write_report(d, out)
        console.print(f"  report: {md}, {js}", highlight=False)
        failed |= not d.ok
    if failed:
        raise typer.Exit(1)


@app.command("peak", cls=_Command)
def peak_cmd(
    out: Path = typer.Option(..., "--out", help="folder for peaks.csv (e.g. the curve's results folder)"),
    threads: Optional[int] = typer.Option(None, "--threads", help="threads of the N-thread rows (default: all cores)"),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="WebGPU adapter name substring or index"),
    quick: bool = typer.Option(False, "--quick", help="small sizes and few iterations (tests, software adapters)"),
) -> None:
    """Measure the ceilings: wasm SIMD128 and WebGPU fp32 FMA peaks, each engine's matmul, torch matmul."""
    from tinygpt_bench import peak, results

    _check_threads(threads)
    console.print(f"peak -> {out}/{results.PEAKS}{' (quick)' if quick else ''}", highlight=False)
    console.print(_peak_table())
    rows = peak.measure(out, threads=threads, adapter=adapter, quick=quick,
                        on_row=lambda r: console.print(_peak_table(_peak_cells(r))))
    if any(r["status"] == "failed" for r in rows):
        console.print("a measurement failed its check against numpy or raised; see its note", style="red")
        raise typer.Exit(1)


# peak's table, printed a row at a time as each is measured: every column but the last has a
# fixed width (a longer cell folds inside it), so the rows line up without knowing them all first
PEAK_COLUMNS = (("engine", 11, "left"), ("kind", 6, "left"), ("what", 19, "left"), ("GFLOP/s", 9, "right"),
                ("threads / device", 18, "left"), ("size", 22, "left"), ("note", None, "left"))


def _peak_table(cells: list[str] | None = None) -> Table:
    """The header of peak's table (no cells) or one row of it."""
    t = Table(box=None, show_header=cells is None, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0),
              header_style="bold")
    for name, width, justify in PEAK_COLUMNS:
        t.add_column(name, width=width, justify=justify, overflow="fold")
    if cells is not None:
        t.add_row(*cells)
    return t


def _peak_cells(r: dict) -> list[str]:
    """A peaks.csv row's cells; the size without the ' x N threads' the threads cell says."""
    size = str(r.get("size") or "")
    if r.get("threads"):
        where = plural(r["threads"], "thread")
        size = re.sub(rf" x {r['threads']} threads?$", "", size)
    else:
        where = r.get("device") or ""
    fig = f"{r['gflop_per_s']:,.1f}" if r["status"] == "ok" else r["status"]
    return [r["engine"], r["kind"], r["what"], fig, where, size, str(r.get("note") or "")]


@app.command("report", cls=_Command)
def report_cmd(
    results_dir: Path = typer.Argument(..., metavar="RESULTS", help="a results folder: measurements.csv, steps.csv, environment.json, "
                                                  "peaks.csv, diagnose-*.json"),
    out: Optional[Path] = typer.Option(None, "--out", help="write a whole new page here (hand-written part a stub)"),
    update: Optional[Path] = typer.Option(None, "--update", help="replace only the generated block of this page"),
    html: Optional[Path] = typer.Option(None, "--html", metavar="FILE",
                                        help="write the page as one self-contained HTML file (tables, chart as SVG)"),
) -> None:
    """The performance page (Markdown) from a results folder; every number read from its files."""
    from tinygpt_bench import perfpage

    if sum(x is not None for x in (out, update, html)) > 1:
        raise UserError("give one of --out (a new page), --update (an existing page) or --html (an HTML file)")
    if html is not None:
        perfpage.write_html(results_dir, html)
        console.print(f"wrote {html}", highlight=False)
        return
    page = out or update
    if page is None:
        print(perfpage.generated_block(results_dir), end="")
        return
    if update:
        perfpage.update_page(results_dir, update)
    else:
        perfpage.write_page(results_dir, out)
    console.print(f"wrote {page}", highlight=False)


def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**63:
        raise UserError(f"--seed {seed} is not a seed; give a whole number from 0 to 2**63-1, e.g. --seed 0")


def _check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads} is not a positive number of threads; leave it out for all cores")


def _check_seconds(flag: str, value: float | None, example: int) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UserError(f"{flag} {value} is not a positive number of seconds; e.g. {flag} {example}")


def _check_faults() -> None:
    """A malformed TINYGPT_BENCH_FAULT is refused before anything is measured."""
    from tinygpt_bench import faults

    for backend, _, _ in faults.parse(os.environ.get(faults.ENV)):
        if backend not in engines.names():
            raise UserError(f"{faults.ENV}: {unknown('backend', backend, engines.names())}")


_DEBUG = False


def _print_version(value: bool) -> None:
    if value:
        print(f"tinygpt-bench {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="on an unexpected error, print its traceback "
                                                      "(otherwise saved to a file)"),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="print the version and exit"),
) -> None:
    """Train one small byte-level GPT on WebGPU and WebAssembly Memory64 and measure the speedup curve."""
    global _DEBUG
    _DEBUG = debug


def _unexpected(e: BaseException) -> int:
    """One line for an error nobody foresaw, with the traceback saved to a file (--debug: printed)."""
    text = "".join(traceback.format_exception(e))
    what = f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__
    if _DEBUG:
        print(text, file=sys.stderr, end="")
        print(f"error: unexpected {what}", file=sys.stderr)
        return 1
    try:
        fd, path = tempfile.mkstemp(prefix="tinygpt-bench-error-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        where = f"traceback saved to {path}"
    except OSError:
        where = "the traceback could not be saved; rerun with --debug to see it"
    print(f"error: unexpected {what}; {where} (please report it; --debug prints it)", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input and failing engines end with one line on stderr and exit code 2;
    an unexpected error with one line and the path of its saved traceback, exit code 1."""
    global _DEBUG
    _DEBUG = False
    try:
        _check_empty_paths(sys.argv[1:] if argv is None else argv)
        rc = app(args=argv, prog_name="tinygpt-bench", standalone_mode=False)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except protocol.StageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as e:
        if e.filename is None:  # not a file system's answer about a path: unforeseen
            sys.exit(_unexpected(e))
        name = str(e.filename) if len(str(e.filename)) <= 80 else str(e.filename)[:80] + "..."
        print(f"error: cannot use {name} ({e.strerror}); check the path (its length, its folders), its "
              "permissions and the free space", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - the last guard: no traceback on the terminal
        if type(e).__name__ == "NoArgsIsHelpError":
            print(e.format_message(), file=sys.stderr)  # no command: the help
            sys.exit(2)
        if hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int):
            # the command line's own usage errors (no such option, a value of the wrong type)
            message = " ".join(e.format_message().split())
            sys.exit(_usage(message, e.exit_code))
        if type(e).__name__ == "Abort":
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        sys.exit(_unexpected(e))
    sys.exit(rc if isinstance(rc, int) else 0)


PATH_FLAGS = ("--out", "-o", "--update")


def _check_empty_paths(argv: list[str]) -> None:
    """`--out ''` is refused: as a path it is '.', and a command would write into the current
    folder (what the option is for is a folder of its own)."""
    for i, a in enumerate(argv):
        flag, eq, value = a.partition("=")
        empty = (eq and flag in PATH_FLAGS and not value.strip()) or (
            a in PATH_FLAGS and i + 1 < len(argv) and not argv[i + 1].strip())
        if empty:
            raise UserError(f"{flag} '' names no folder or file; give one, e.g. {flag} results/run1")


def _usage(message: str, code: int) -> int:
    print(f"error: {message.rstrip('.')}; see `tinygpt-bench --help`", file=sys.stderr)
    return code
