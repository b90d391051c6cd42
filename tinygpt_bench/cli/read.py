"""The commands that read result files only: `summary`, `chart`, `compare`, `report`. None of them
loads the engine registry or an engine (tests/test_cli_layout.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tinygpt_bench.cli.options import Command, Json, Markdown, Out, Results, console, one_format
from tinygpt_bench.errors import UserError
from tinygpt_bench.units import plural

app = typer.Typer(add_completion=False)  # this module's commands; cli/__init__.py adds them to the app


def _summary(paths: list[Path]) -> tuple[list[str], list[list[str]]]:
    from tinygpt_bench import report, results

    return report.summary_rows(results.read_measurements(paths), results.read_steps(paths))


def print_summary(paths: list[Path], as_markdown: bool) -> None:
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


@app.command("summary", cls=Command)
def summary_cmd(results_paths: Results, markdown: Markdown = False, as_json: Json = False) -> None:
    """The summary table of result files (rich, Markdown for CI job summaries and the README, or JSON)."""
    from tinygpt_bench import markdown as md_table
    from tinygpt_bench import report, results

    one_format(markdown, as_json)
    _warn_mixture(results_paths)
    if as_json:
        df = results.read_measurements(results_paths)
        print(json.dumps(report.summary_json(df, results.read_steps(results_paths)), indent=2))
    elif markdown:
        print(md_table.table(*_summary(results_paths)))
    else:
        print_summary(results_paths, False)


@app.command("chart", cls=Command)
def chart_cmd(
    results_paths: Results,
    out: Out = None,
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
        _check_chart(results_paths, out)
        return
    _warn_mixture(results_paths)
    paths = chart_mod.draw(chart_mod.chart_data(results_paths), out)
    console.print("wrote " + ", ".join(str(p) for p in paths), highlight=False)


def _check_chart(results_paths: list[Path], out: Path) -> None:
    """chart --check: the committed chart files are there and chart-data.json matches the CSVs (exit 1 if not)."""
    from tinygpt_bench import chart as chart_mod

    first = results_paths[0]
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


def _warn_mixture(paths: list[Path]) -> None:
    """summary and chart read several runs as one table: where they differ in machine or settings
    they say so on stderr (as compare does); the chart says it in its title too."""
    from tinygpt_bench import results

    differ = results.mixture(paths)
    if differ:
        print(f"warning: {', '.join(map(str, paths))} were measured on different machines or with different "
              f"settings ({', '.join(differ)}); their rows are not one measurement: read them apart", file=sys.stderr)


@app.command("compare", cls=Command)
def compare_cmd(
    old: Path = typer.Argument(..., metavar="OLD", help="earlier results (folder or measurements.csv)"),
    new: Path = typer.Argument(..., metavar="NEW", help="later results"),
    threshold: float = typer.Option(1.10, "--threshold", metavar="FACTOR", help="fail when a backend got slower than this factor, significantly"),
    markdown: Markdown = False,
    as_json: Json = False,
) -> None:
    """Per preset and backend: the change in ms/step with its uncertainty; exit 1 on a regression."""
    from tinygpt_bench import compare as cmp
    from tinygpt_bench import results

    one_format(markdown, as_json)
    cmp.check_threshold(threshold)
    changes = cmp.compare(old, new, threshold)
    only_old, only_new = cmp.one_side_only(old, new)
    differ = cmp.setting_differences(results.read_environment([old]), results.read_environment([new]))
    if differ:
        print(f"warning: {old} and {new} were measured on different machines or with different settings "
              f"({', '.join(differ)}); a change may be theirs, not the code's", file=sys.stderr)
    bad = [c for c in changes if c.regression]
    if as_json:
        print(json.dumps(cmp.to_json(old, new, threshold, changes, only_old, only_new, differ), indent=2))
    else:
        _print_changes(old, new, changes, cmp.one_side_line(old, new, only_old, only_new),
                       f"{plural(len(bad), 'regression')} past {threshold:.2f}x" if bad else None, markdown)
    if bad:
        raise typer.Exit(1)


def _print_changes(old: Path, new: Path, changes: list, unmatched: str | None, verdict: str | None,
                   markdown: bool) -> None:
    """compare's table (rich, or Markdown), the line on rows one side lacks, and the verdict."""
    from tinygpt_bench import compare as cmp
    from tinygpt_bench import markdown as md_table

    title = f"{old} vs {new} (ratio of medians of steps 2..N, new / old, 95% bootstrap CI)"
    if markdown:
        table = md_table.table(cmp.HEADER, cmp.rows(changes))
        print("\n\n".join(x for x in (title, table, unmatched, verdict) if x))
        return
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


@app.command("report", cls=Command)
def report_cmd(
    results_dir: Path = typer.Argument(..., metavar="RESULTS", help="a results folder: measurements.csv, steps.csv, environment.json, "
                                                  "peaks.csv, diagnose-*.json"),
    new_page: Optional[Path] = typer.Option(None, "--new-page", metavar="FILE",
                                            help="write a whole new page here (hand-written part a stub)"),
    update: Optional[Path] = typer.Option(None, "--update", help="replace only the generated block of this page"),
    html: Optional[Path] = typer.Option(None, "--html", metavar="FILE",
                                        help="write the page as one self-contained HTML file (tables, chart as SVG)"),
) -> None:
    """The performance page (Markdown) from a results folder; every number read from its files."""
    from tinygpt_bench import perfpage

    if sum(x is not None for x in (new_page, update, html)) > 1:
        raise UserError("give one of --new-page (a new page), --update (an existing page) or --html (an HTML file)")
    if html is not None:
        perfpage.write_html(results_dir, html)
        console.print(f"wrote {html}", highlight=False)
        return
    page = new_page or update
    if page is None:
        print(perfpage.generated_block(results_dir), end="")
        return
    if update:
        perfpage.update_page(results_dir, update)
    else:
        perfpage.write_page(results_dir, new_page)
    console.print(f"wrote {page}", highlight=False)
