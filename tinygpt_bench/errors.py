"""Errors a user can act on.

A `UserError` is bad input or an environment problem with a known fix. The CLI prints
its one-line message (what is wrong, and the fix) and exits with code 2, no traceback.
"""

from __future__ import annotations

import difflib


class UserError(Exception):
    """Bad input or environment: one line naming the thing and the fix; CLI exit code 2."""

    exit_code = 2


def did_you_mean(name: str, choices) -> str | None:
    """The choice a mistyped name most likely meant (difflib, any case: 'WASM' -> 'wasm',
    'smal' -> 'small'), or None when none is close."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[close[0]] if close else None


def unknown(what: str, name: str, choices, other: str = "") -> UserError:
    """The one line for a name that is not one of `choices`: the closest one first, then them
    all (`other`: another way to give it, e.g. ' or pass a .toml path')."""
    choices = list(choices)
    guess = did_you_mean(name, choices)
    hint = f"did you mean '{guess}'? Or choose" if guess else "choose"
    return UserError(f"unknown {what} '{name}'; {hint} one of {', '.join(choices)}{other}")
