"""The `tinygpt-bench` command's entry point: imports the CLI and runs it. The commands are built
from their modules (and the engines' declarations) when looked up, inside `cli.main`, so engines
which cannot be listed (a TINYGPT_BENCH_ENGINES folder that does not exist, a broken engine
description) end as every bad input does: one line naming the thing and the fix, exit code 2, no
traceback. What goes wrong while the CLI itself imports ends the same way here."""

from __future__ import annotations

import sys

from tinygpt_bench.errors import UserError


def main(argv: list[str] | None = None) -> None:
    try:
        from tinygpt_bench import cli
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:  # Ctrl-C while the CLI was still importing: nothing had started
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    cli.main(argv)
