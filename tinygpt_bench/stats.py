"""Statistics of step times: summaries, outliers, and ratios with their uncertainty.

Kept apart from measuring and from display (hyperfine's split). Times are milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAD_SCALE = 1.4826  # MAD -> standard deviation for normal data
OUTLIER_MADS = 5.0  # a sample further than this many scaled MADs from the median is an outlier
BOOTSTRAP = 2000
CONFIDENCE = 0.95
PARITY_TOLERANCE = 1e-3  # relative difference of the final loss that still counts as the same training


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    mean: float
    min: float
    q1: float
    q3: float
    max: float
    mad: float  # scaled median absolute deviation
    outliers: int  # samples flagged (kept, not dropped)


def summarize(samples) -> Summary:
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples")
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med)) * MAD_SCALE)
    return Summary(
        n=int(x.size), median=med, mean=float(x.mean()), min=float(x.min()),
        q1=float(np.percentile(x, 25)), q3=float(np.percentile(x, 75)), max=float(x.max()),
        mad=mad, outliers=int(outlier_mask(x).sum()),
    )


def outlier_mask(samples) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float64)
    med = np.median(x)
    mad = np.median(np.abs(x - med)) * MAD_SCALE
    if mad == 0:
        return np.zeros(x.shape, dtype=bool)
    return np.abs(x - med) > OUTLIER_MADS * mad


@dataclass(frozen=True)
class Ratio:
    """median(a) / median(b) with a bootstrap confidence interval."""

    value: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        return not (self.low <= 1.0 <= self.high)


def ratio_ci(a, b, confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP, seed: int = 0) -> Ratio:
    """Ratio of medians median(a)/median(b); percentile bootstrap resampling each side's samples.

    With a single sample on a side there is no spread to resample: the interval collapses
    to the point and says so by low == high.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    value = float(np.median(a) / np.median(b))
    rng = np.random.Generator(np.random.PCG64(seed))
    ma = np.median(a[rng.integers(0, a.size, size=(resamples, a.size))], axis=1)
    mb = np.median(b[rng.integers(0, b.size, size=(resamples, b.size))], axis=1)
    r = ma / mb
    tail = (1 - confidence) / 2 * 100
    return Ratio(value, float(np.percentile(r, tail)), float(np.percentile(r, 100 - tail)))


def rel_diff(a: float, b: float) -> float:
    """|a - b| / |b|: the relative difference of a from the reference b."""
    return abs(a - b) / abs(b) if b != 0 else float("inf") if a != b else 0.0


def fit_overhead_throughput(flops, ms) -> tuple[float, float] | None:
    """Fit ms = overhead + flops / throughput over measured points, in relative error.

    Returns (overhead_ms, throughput_flop_per_ms), both >= 0, or None with fewer than 2
    points. Least squares on (ms_i - a - F_i c) / ms_i, c = 1/throughput, constrained
    to a, c >= 0 (by checking the boundary fits when the free fit leaves the region).
    """
    F = np.asarray(flops, dtype=np.float64)
    t = np.asarray(ms, dtype=np.float64)
    if F.size < 2 or len(set(F.tolist())) < 2:
        return None
    w = 1.0 / t
    A = np.stack([w, F * w], axis=1)
    y = t * w
    candidates = []
    sol, *_ = np.linalg.lstsq(A, y, rcond=None)
    if sol[0] >= 0 and sol[1] > 0:
        candidates.append(sol)
    c_only = float((A[:, 1] @ y) / (A[:, 1] @ A[:, 1]))  # a = 0
    candidates.append(np.array([0.0, max(c_only, 1e-30)]))
    best = min(candidates, key=lambda s: float(((A @ s - y) ** 2).sum()))
    return float(best[0]), float(1.0 / best[1])
