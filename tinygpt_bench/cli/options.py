"""What the commands share: every option two or more of them take, declared once here (one flag
name, one meaning, one help text), the help's labels and the terminal they print to. (The
measuring commands' values are checked where their settings are made: runner/settings.py.)

A declaration is an `Annotated` type; a command gives the default in its own signature
(`steps: Steps = protocol.DEFAULT_STEPS`; no default: the option is required). Nothing here
loads the engine registry: the engines' own flags and --backend are in engine_options.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from tinygpt_bench.errors import UserError

# the name a value takes in --help where Typer would print its Python type
METAVARS = {"<str>": "TEXT", "<int>": "INTEGER", "<float>": "NUMBER", "<path>": "PATH"}


class ReadableHelp:
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


class Command(ReadableHelp, typer.core.TyperCommand):
    """Every command's class (`@app.command(name, cls=Command)`)."""


console = Console(width=None if sys.stdout.isatty() else 120)

DEFAULT_CORPUS = "synthetic"

# ---- arguments
Preset = Annotated[str, typer.Argument(metavar="PRESET", help="preset name (see `tinygpt-bench presets`) or a .toml "
                                                              "path")]
Results = Annotated[list[Path], typer.Argument(metavar="RESULTS", help="curve output folders or measurements.csv "
                                                                       "files")]

# ---- options of the measuring commands (run, curve, diagnose)
Steps = Annotated[int, typer.Option("--steps", help="timed training steps of a measurement, the same for every "
                                                    "preset (the protocol's fixed 15)")]
Seed = Annotated[int, typer.Option("--seed", help="seed of the initial weights and the batches")]
Corpus = Annotated[str, typer.Option("--corpus", help="'synthetic' (default, offline), 'shakespeare', or a text "
                                                      "file path")]
Timeout = Annotated[Optional[float], typer.Option(
    "--timeout", metavar="SECONDS", help="time budget in seconds per measurement, past which it is a 'timeout' "
                                         "(diagnose: of its 15 timed steps, past which that stage fails)")]
Plain = Annotated[bool, typer.Option("--plain", help="no live display (CI logs)")]

# ---- where a command writes (curve, diagnose, peak, chart)
Out = Annotated[Optional[Path], typer.Option(
    "--out", "-o", metavar="FOLDER",
    help="folder for the command's files: curve's results, diagnose's report, peak's peaks.csv, the chart (default: "
         "curve, a new runs/<UTC time>/ with runs/latest pointing at it; diagnose, a new runs/<UTC time>-diagnose/; "
         "chart, the first input's)")]

# ---- output formats (presets, env, curve, summary, compare)
Markdown = Annotated[bool, typer.Option("--markdown", help="print the table as Markdown instead (curve: print its "
                                                           "summary as Markdown too)")]
Json = Annotated[bool, typer.Option("--json", help="print one JSON object instead of the tables (the figures as "
                                                   "numbers)")]


def one_format(markdown: bool, as_json: bool) -> None:
    if markdown and as_json:
        raise UserError("--markdown and --json are two formats of one output; give one of them")
