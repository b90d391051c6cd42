"""The `tinygpt-bench` command line (Typer): the app, its entry point and how it ends on an error.

Each command is declared in a module of this package (COMMANDS) that is imported when the command
is looked up: to run it, or to list it in --help. So `summary` imports what reading result files
needs and no engine registry. The options two or more commands share are declared once, in
options.py; the engines' own flags and --backend, which need the registry, in engine_options.py.
Importing this package is cheap (curve's fork server imports it by name).
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import traceback

import typer

from tinygpt_bench import __version__
from tinygpt_bench.cli.options import ReadableHelp
from tinygpt_bench.errors import UserError

# each command and the module of this package that declares it, in the order --help lists them
COMMANDS = {"presets": "info", "env": "info", "run": "measure", "curve": "measure", "summary": "read",
            "chart": "read", "compare": "read", "diagnose": "diagnose", "peak": "peak", "report": "read"}


class _Group(ReadableHelp, typer.core.TyperGroup):
    """The app's commands, each built from its module when first looked up."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, name: str):
        if name not in self.commands and name in COMMANDS:
            module = importlib.import_module(f"{__name__}.{COMMANDS[name]}")
            built = typer.main.get_command(module.app)  # one command, or a group of the module's commands
            self.commands.update(getattr(built, "commands", None) or {built.name: built})
        return self.commands.get(name)


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Train one small byte-level GPT on WebGPU and WebAssembly Memory64 and measure the speedup curve.",
)

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
        _check_renamed(sys.argv[1:] if argv is None else argv)
        rc = app(args=argv, prog_name="tinygpt-bench", standalone_mode=False)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
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
        sys.exit(_last_guard(e))
    sys.exit(rc if isinstance(rc, int) else 0)


def _last_guard(e: Exception) -> int:
    """The exit code of an error no narrower handler took, its line printed: a backend failing at
    a stage, the command line's own usage errors and help, an abort, or the unforeseen."""
    protocol = sys.modules.get("tinygpt_bench.protocol")  # a StageError comes from a loaded protocol only
    if protocol is not None and isinstance(e, protocol.StageError):
        print(f"error: {e}", file=sys.stderr)
        return 2
    if type(e).__name__ == "NoArgsIsHelpError":
        print(e.format_message(), file=sys.stderr)  # no command: the help
        return 2
    if hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int):
        # the command line's own usage errors (no such option, a value of the wrong type)
        message = " ".join(e.format_message().split())
        return _usage(message, e.exit_code)
    if type(e).__name__ == "Abort":
        print("interrupted", file=sys.stderr)
        return 130
    return _unexpected(e)


PATH_FLAGS = ("--out", "-o", "--update", "--new-page")


def _check_empty_paths(argv: list[str]) -> None:
    """`--out ''` is refused: as a path it is '.', and a command would write into the current
    folder (what the option is for is a folder of its own)."""
    for i, a in enumerate(argv):
        flag, eq, value = a.partition("=")
        empty = (eq and flag in PATH_FLAGS and not value.strip()) or (
            a in PATH_FLAGS and i + 1 < len(argv) and not argv[i + 1].strip())
        if empty:
            raise UserError(f"{flag} '' names no folder or file; give one, e.g. {flag} results/run1")


# flags a command had under another name: (command, old flags) -> what to give instead
RENAMED = {("report", ("--out", "-o")): "--new-page FILE (a new page; --out is a folder in every other command)"}


def _check_renamed(argv: list[str]) -> None:
    """A flag a command used to take under another name is one line naming the new one, not
    click's 'no such option' with a guess."""
    command = next((a for a in argv if not a.startswith("-")), None)
    for (name, olds), new in RENAMED.items():
        if command == name and any(a.partition("=")[0] in olds for a in argv):
            raise UserError(f"{name} {olds[0]} is now {new}")


def _usage(message: str, code: int) -> int:
    print(f"error: {message.rstrip('.')}; see `tinygpt-bench --help`", file=sys.stderr)
    return code
