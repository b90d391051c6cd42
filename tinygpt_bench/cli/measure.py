"""The commands that train and time: `run` (one preset on one backend, each step shown) and `curve`
(every preset on every backend under one protocol, written to a results folder)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tinygpt_bench import corpus, engines, model, preflight, presets, protocol, runner, runs
from tinygpt_bench import curve as curve_mod
from tinygpt_bench.cli.engine_options import Backend, engine_options
from tinygpt_bench.cli.options import (DEFAULT_CORPUS, Command, Corpus, Markdown, Out, Plain, Preset, Seed, Steps,
                                       Timeout, console)
from tinygpt_bench.cli.read import print_summary
from tinygpt_bench.errors import UserError
from tinygpt_bench.units import fmt_si, plural

app = typer.Typer(add_completion=False)  # this module's commands; cli/__init__.py adds them to the app


@app.command("run", cls=Command)
@engine_options("run")
def run_cmd(
    preset: Preset,
    backend: Backend = engines.oracle(),
    steps: Steps = protocol.DEFAULT_STEPS,
    corpus_spec: Corpus = DEFAULT_CORPUS,
    seed: Seed = protocol.DEFAULT_SEED,
    lr: float = typer.Option(3e-4, "--lr", help="AdamW learning rate"),
    plain: Plain = False,
    options: dict = None,
) -> None:
    """Train PRESET for a fixed number of steps on one backend; print each step's time and loss."""
    from tinygpt_bench import display

    p = presets.load(preset)
    s = runner.Settings(presets=(p,), backends=(backend,), steps=steps, repeats=1, corpus=corpus_spec, seed=seed,
                        lr=lr, options=options)
    c = corpus.load(corpus_spec)
    pf = preflight.preflight(p, backend, s.options_for(backend))
    if not pf.ok and "step_bytes" in (pf.detail or {}):  # what cannot fit is refused before anything starts
        raise UserError(f"{backend} cannot run preset '{p.name}' here: {pf.error}. {pf.meaning}")
    work = protocol.prepare(p, c, steps, seed)
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
    _print_steps(p, backend, results, plain)


def _print_steps(p: presets.Preset, backend: str, results: list, plain: bool) -> None:
    """run's end: each step's time and loss (not with --plain, whose lines said them), then one line
    of figures: the cold first step, the steady median, tokens/s, FLOP/s, the loss."""
    t = Table(title=f"{p.name} / {backend}")
    for col in ("step", "ms", "loss"):
        t.add_column(col, justify="right")
    for st in results:
        t.add_row(str(st.step), f"{st.ms:.2f}", f"{st.loss:.6f}")
    if not plain:
        console.print(t)
    flops = model.flops_per_step(p)["total"]
    steady = [st.ms for st in results[1:]] or [results[0].ms]
    med = statistics.median(steady)
    tokens = p.batch * p.ctx
    console.print(
        f"first step {results[0].ms:.1f} ms (cold); steady median {med:.2f} ms/step over steps "
        f"{2 if len(results) > 1 else 1}..{len(results)}; {tokens / med * 1e3:,.0f} tokens/s; "
        f"{fmt_si(flops / med * 1e3, 'FLOP/s')}; loss {results[0].loss:.4f} -> {results[-1].loss:.4f}",
        highlight=False,
    )


@app.command("curve", cls=Command)
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
    steps: Steps = protocol.DEFAULT_STEPS,
    repeats: int = typer.Option(3, "--repeats", help="repeats from a fresh load, interleaving the backends"),
    timeout: Timeout = None,
    stop_after: Optional[float] = typer.Option(
        None, "--stop-after", metavar="SECONDS", help="time budget in seconds for the whole run: no repeat is started that would end past "
                                   "it (its backend's longest repeat so far, plus 25%); what finished is kept for "
                                   "--resume (exit 3)"),
    corpus_spec: Corpus = DEFAULT_CORPUS,
    seed: Seed = protocol.DEFAULT_SEED,
    out: Out = None,
    resume: bool = typer.Option(False, "--resume", help="skip what --out (default: runs/latest) already holds with "
                                                        "the same settings"),
    plain: Plain = False,
    markdown: Markdown = False,
    chart: bool = typer.Option(True, "--chart/--no-chart", help="draw the chart into --out at the end"),
    options: dict = None,
) -> None:
    """Measure every preset on every backend under one protocol; write CSVs and the speedup chart."""
    chosen, names = _curve_selection(presets_spec, backends_spec, full)
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; give a folder path for the results")
    settings = runner.Settings(presets=tuple(chosen), backends=tuple(names), steps=steps, repeats=repeats,
                               timeout_s=timeout, corpus=corpus_spec, seed=seed, resume=resume, options=options,
                               stop_after_s=stop_after)
    if out is None:  # never the committed results/: a folder of its own (runs.py)
        out = runs.latest() if resume else runs.new_folder()
    settings = settings.at(out)
    names = list(settings.backends)
    console.print(f"curve: {', '.join(p.name for p in chosen)} on {', '.join(names)}; {plural(steps, 'step')} x {plural(repeats, 'repeat')} -> {out}/",
                  highlight=False)
    rows = _curve_run(settings, out, plain, markdown)
    print_summary([out], markdown)
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


def _curve_selection(presets_spec: str | None, backends_spec: str | None,
                     full: bool) -> tuple[list[presets.Preset], list[str]]:
    """curve's presets and backends: those given, else the defaults for this machine (said in a line)."""
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
    return chosen, names


def _curve_run(settings: runner.Settings, out: Path, plain: bool, markdown: bool) -> list:
    """curve's measurements, shown live (or as plain lines); Ctrl-C ends with 130 and a stop at
    --stop-after with 3, the summary of what finished printed first."""
    from tinygpt_bench import display

    try:
        if plain:
            return curve_mod.run(settings, display.PlainReporter(console))
        with display.LiveReporter(console) as rep:
            return curve_mod.run(settings, rep)
    except KeyboardInterrupt:
        console.print(f"interrupted: every finished measurement is in {out}/; rerun with --resume to complete it")
        raise typer.Exit(130)
    except curve_mod.Stopped as e:
        console.print(str(e), highlight=False)
        from tinygpt_bench import results

        if results.done_keys(out):  # rows of this call or of earlier ones
            print_summary([out], markdown)
        raise typer.Exit(3)
