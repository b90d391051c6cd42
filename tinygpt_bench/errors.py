"""Errors a user can act on.

A `UserError` is bad input or an environment problem with a known fix. The CLI prints
its one-line message (what is wrong, and the fix) and exits with code 2, no traceback.
"""


class UserError(Exception):
    """Bad input or environment: one line naming the thing and the fix; CLI exit code 2."""

    exit_code = 2
