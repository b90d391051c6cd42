"""Human-readable figures, one formatter each, shared by the CLI, diagnose and the engines."""

from __future__ import annotations


def fmt_bytes(n: int | float | None, digits: int = 2) -> str:
    """Binary units: 1536 -> '1.50 KiB'; None -> '?'."""
    if n is None:
        return "?"
    for div, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= div:
            return f"{n / div:.{digits}f} {unit}"
    return f"{int(n)} B"


def fmt_si(n: float, unit: str = "") -> str:
    """Decimal prefixes: 1.9e10, 'FLOP/s' -> '19.00 GFLOP/s'."""
    for div, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {prefix}{unit}"
    return f"{n:.0f} {unit}".strip()
