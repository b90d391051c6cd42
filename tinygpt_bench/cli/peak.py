"""`peak`: the ceilings (each engine's peak.py), written to peaks.csv and shown a row at a time."""

from __future__ import annotations

import re

import typer
from rich.table import Table

from tinygpt_bench.cli.engine_options import engine_options
from tinygpt_bench.cli.options import Command, Out, console
from tinygpt_bench.runner.settings import check_threads
from tinygpt_bench.units import plural

app = typer.Typer(add_completion=False)  # this module's commands; cli/__init__.py adds them to the app


@app.command("peak", cls=Command)
@engine_options("peak")
def peak_cmd(
    out: Out,
    quick: bool = typer.Option(False, "--quick", help="small sizes and few iterations (tests, software adapters)"),
    options: dict = None,
) -> None:
    """Measure the ceilings: wasm SIMD128 and WebGPU fp32 FMA peaks, each engine's matmul, torch matmul."""
    from tinygpt_bench import peak, results

    check_threads(options.get("threads"))
    console.print(f"peak -> {out}/{results.PEAKS}{' (quick)' if quick else ''}", highlight=False)
    console.print(_peak_table())
    rows = peak.measure(out, threads=options.get("threads"), adapter=options.get("adapter"), quick=quick,
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
