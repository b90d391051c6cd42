"""`compare OLD NEW`: per preset and backend, the change in ms/step with its uncertainty.

Reads like pyperf's compare: "1.31x slower [1.22-1.40]", "no significant change". The
ratio is median(new)/median(old) over steps 2..N of all repeats, with a 95% bootstrap
interval; a change counts as significant only when the interval excludes 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from tinygpt_bench import report, results, stats
from tinygpt_bench.errors import UserError


@dataclass(frozen=True)
class Change:
    preset: str
    backend: str
    old_ms: float
    new_ms: float
    ratio: stats.Ratio | None  # new / old
    verdict: str
    regression: bool


def describe(r: stats.Ratio) -> str:
    """The change in words; its interval always brackets the factor printed beside it (a
    speed-up of new/old = 0.33 [0.30-0.36] reads 3.00x faster [2.78-3.33])."""
    ci = f" [{r.low:.2f}-{r.high:.2f}]" if r.low != r.high else ""
    if not r.significant and r.low != r.high:
        return f"no significant change ({r.value:.2f}x{ci})"
    if r.value >= 1:
        return f"{r.value:.2f}x slower{ci}"
    ci = f" [{1 / r.high:.2f}-{1 / r.low:.2f}]" if r.low != r.high else ""
    return f"{1 / r.value:.2f}x faster{ci}"


def check_threshold(threshold: float) -> float:
    if not math.isfinite(threshold) or threshold < 0:
        raise UserError(f"--threshold {threshold} is not a finite non-negative factor; use e.g. --threshold 1.10")
    return threshold


def setting_differences(old_env: dict, new_env: dict) -> list[str]:
    """The run settings (environment.json 'settings': machine, engine digests, protocol) that
    differ between two results folders, and the device of each backend both measured (an H100
    and an H200 machine share CPU model and settings, not their GPU)."""
    a, b = old_env.get("settings", {}) or {}, new_env.get("settings", {}) or {}
    out = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    da, db = ({k: (d or {}).get("device") for k, d in (env.get("backend_descriptions") or {}).items()}
              for env in (old_env, new_env))
    return out + [f"device of {k}" for k in sorted(set(da) & set(db)) if da[k] != db[k]]


def compare(old: Path, new: Path, threshold: float = 1.10) -> list[Change]:
    check_threshold(threshold)
    a, b = results.read_measurements([old]), results.read_measurements([new])
    sa, sb = results.read_steps([old]), results.read_steps([new])
    common = set(zip(a.preset, a.backend)) & set(zip(b.preset, b.backend))
    if not common:
        raise UserError(f"{old} and {new} have no (preset, backend) in common, so there is nothing to compare; "
                        "give two results folders that measured the same presets on the same backends")
    out = []
    for _, nr in b.iterrows():
        match = a[(a.preset == nr.preset) & (a.backend == nr.backend)]
        if not len(match):
            continue
        orow = match.iloc[0]
        if orow.status != "ok" or nr.status != "ok":
            out.append(Change(nr.preset, nr.backend, orow.median_ms, nr.median_ms, None,
                              f"status {orow.status} -> {nr.status}", nr.status != "ok" and orow.status == "ok"))
            continue
        xo = report.steady_samples(sa, nr.preset, nr.backend) or [orow.median_ms]
        xn = report.steady_samples(sb, nr.preset, nr.backend) or [nr.median_ms]
        r = stats.ratio_ci(xn, xo)
        regression = r.value > threshold and (r.significant or r.low == r.high)
        out.append(Change(nr.preset, nr.backend, float(orow.median_ms), float(nr.median_ms), r, describe(r), regression))
    return out
