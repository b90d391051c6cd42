"""Human-readable figures, one formatter each, shared by the CLI, diagnose and the engines."""

from __future__ import annotations

import math
import re

from tinygpt_bench.errors import UserError


def fmt_bytes(n: int | float | None, digits: int = 2) -> str:
    """Binary units: 1536 -> '1.50 KiB'; None -> '?'."""
    if n is None:
        return "?"
    for div, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= div:
            return f"{n / div:.{digits}f} {unit}"
    return f"{int(n)} B"


def plural(n: int, noun: str) -> str:
    """A count and its noun: 1 -> '1 repeat', 3 -> '3 repeats'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def fmt_si(n: float, unit: str = "") -> str:
    """Decimal prefixes: 1.9e10, 'FLOP/s' -> '19.00 GFLOP/s'."""
    for div, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {prefix}{unit}"
    return f"{n:.0f} {unit}".strip()


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "K": 2**10, "M": 2**20, "G": 2**30}


def parse_bytes(text: str | None) -> int | None:
    """'4GiB', '256MiB', '1e9', '65536' -> bytes."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).upper() not in _UNITS:
        raise UserError(f"'{text}' is not a size; write bytes like 4GiB, 512MiB or 1073741824")
    try:
        value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    except ValueError:
        raise UserError(f"'{text}' is not a size; write bytes like 4GiB, 512MiB or 1073741824") from None
    if not math.isfinite(value) or value < 1 or value >= 2**64:
        raise UserError(f"'{text}' is not a usable size (1 byte to 16 EiB); write bytes like 4GiB or 512MiB")
    return int(value)
