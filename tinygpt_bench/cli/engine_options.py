"""What the command line takes from the engine registry: the engines' own flags (each declared once,
by `option()` in its engine's description, engines/<name>/__init__.py, or in engines/description.py
where several engines take it), added to a command by `engine_options(command)`; and --backend,
whose help names the backends. (Their values are checked against the registry where the settings
are made: runner/settings.py.)

Importing this loads the registry: only the commands that run an engine (run, curve, diagnose,
peak) import it; those that read result files do not.
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Annotated, Optional

import typer

from tinygpt_bench import engines

Backend = Annotated[Optional[str], typer.Option(
    "--backend", "-b", metavar="NAME",
    help=f"one backend; one of: {', '.join(engines.names())} (diagnose without it: the curve's, in turn)")]


def engine_options(command: str):
    """Add the engines' flags that `command` offers to a command; the command gets them as
    `options`: {option name: value}, those left at their default left out (a flag's text parsed
    where the declaration says how, e.g. sizes)."""
    decl = engines.cli_options(command)

    def wrap(fn):
        sig = inspect.signature(fn, eval_str=True)  # Annotated declarations as objects, which Typer reads
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
        command_fn.__annotations__ = {**typing.get_type_hints(fn, include_extras=True),
                                      **{p.name: p.annotation for p in extra}}
        del command_fn.__wrapped__  # typer reads the signature above, not the wrapped function's
        return command_fn

    return wrap
