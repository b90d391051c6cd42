"""`diagnose`: why a preset fails on a backend, stage by stage, with a report written to a folder."""

from __future__ import annotations

import typer
from rich.table import Table

from tinygpt_bench import engines, presets, runs
from tinygpt_bench import curve as curve_mod
from tinygpt_bench.cli.engine_options import Backend, engine_options
from tinygpt_bench.cli.options import Command, Out, Preset, Timeout, console
from tinygpt_bench.runner.settings import check_engine_options, check_faults, check_seconds, check_threads

app = typer.Typer(add_completion=False)  # this module's commands; cli/__init__.py adds them to the app


@app.command("diagnose", cls=Command)
@engine_options("diagnose")
def diagnose_cmd(preset: Preset, backend: Backend = None, timeout: Timeout = None, out: Out = None,
                 options: dict = None) -> None:
    """Find out why a preset fails on a backend: stages in order, stop at the first failure, say what it means."""
    from tinygpt_bench import diagnose as diag

    check_faults()
    if out is not None:
        diag.check_out(out)
    check_threads(options.get("threads"))
    check_seconds("--timeout", timeout, 600)
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
        d = diag.run(p, name, engines.select(name, options), timeout, on_stage=_show_stage)
        kern = next((s for s in d.stages if s.name == "kernels"), None)
        if kern and kern.detail.get("kernels"):
            console.print(_kernel_table(p.name, name, kern.detail["kernels"]))
        md, js = diag.write_report(d, out)
        console.print(f"  report: {md}, {js}", highlight=False)
        failed |= not d.ok
    if failed:
        raise typer.Exit(1)


def _show_stage(st) -> None:
    """One stage as it ends: pass or FAIL, its figure; the load's events; a failure's error and meaning."""
    mark = "[green]pass[/green]" if st.ok else "[red]FAIL[/red]"
    console.print(f"  {mark} {st.name:<9} {st.figure}", highlight=False)
    for ev in st.detail.get("events", []) if st.name == "load" else []:
        console.print(f"            {ev}", highlight=False, markup=False)
    if not st.ok:
        console.print(f"       error: {st.error}", highlight=False, markup=False)
        console.print(f"       means: {st.meaning}", highlight=False, markup=False)


def _kernel_table(preset: str, backend: str, kernels: dict) -> Table:
    """The per-kernel times of one step, longest first, with each one's share."""
    t = Table(title=f"per-kernel time of one {preset} step on {backend}")
    for h in ("kernel", "ms", "share"):
        t.add_column(h, justify="left" if h == "kernel" else "right")
    total = sum(kernels.values()) or 1.0
    for k, ms in sorted(kernels.items(), key=lambda kv: -kv[1]):
        t.add_row(k, f"{ms:.3f}", f"{ms / total:.1%}")
    return t
