"""A kernel's result against numpy (or the closed form of its recurrence) before it is timed:
the rule of `tinygpt-bench peak` (peak.py) and of each engine's peak.py, which measure with it.
A leaf module: it imports nothing of the package, so an engine uses it without importing the
command above it.
"""

from __future__ import annotations

import math

import numpy as np

CHECK_TOLERANCE = 1e-4  # relative: max |got - want| / max |want| of a product, or per value of a recurrence


class CheckFailed(RuntimeError):
    """A kernel's result disagrees with numpy: it is not timed."""


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want| (a product); nan anywhere is infinitely wrong."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if not np.isfinite(got).all():
        return math.inf
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def checked(what: str, err: float, tol: float = CHECK_TOLERANCE) -> float:
    if not err <= tol:
        raise CheckFailed(f"{what}: result differs from numpy by {err:.2e} relative (tolerance {tol:.0e}); not timed")
    return err
