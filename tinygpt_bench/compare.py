"""`compare OLD NEW`: per preset and backend, the change in ms/step with its uncertainty.

Reads like pyperf's compare: "1.31x slower [1.22-1.40]", "no significant change". The
ratio is median(new)/median(old) over steps 2..N of all repeats, with a 95% bootstrap
interval; a change counts as significant only when the interval excludes 1. What one side
measured and the other did not is named (one_side_only), never dropped without a word.
Output: the CLI's table, Markdown (rows()) or JSON (to_json(), its keys pinned by a test).
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
    """The slow-down factor past which a significant change is a regression: a finite factor of
    at least 1 (below 1 a speed-up would count as a regression: refused)."""
    if not math.isfinite(threshold) or threshold < 1:
        raise UserError(f"--threshold {threshold} is not a slow-down factor of 1 or more (new ms / old ms past which "
                        "a significant change fails); use e.g. --threshold 1.10")
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


def one_side_only(old: Path, new: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (preset, backend) pairs measured in only one of the two: (in OLD only, in NEW only),
    in their files' row order."""
    a, b = results.read_measurements([old]), results.read_measurements([new])
    pa, pb = list(zip(a.preset, a.backend)), list(zip(b.preset, b.backend))
    return [k for k in pa if k not in set(pb)], [k for k in pb if k not in set(pa)]


def one_side_line(old: Path, new: Path, only_old: list, only_new: list) -> str | None:
    """One line naming what was not compared, by backend: 'not compared: webgpu (tiny, small)
    only in A; wasm-v8 (tiny) only in B'; None when both measured the same."""
    def named(pairs) -> str:
        by_backend: dict[str, list[str]] = {}
        for preset, backend in pairs:
            by_backend.setdefault(backend, []).append(preset)
        return ", ".join(f"{b} ({', '.join(ps)})" for b, ps in by_backend.items())

    parts = [f"{named(pairs)} only in {where}" for where, pairs in ((old, only_old), (new, only_new)) if pairs]
    return "not compared: " + "; ".join(parts) if parts else None


HEADER = ["preset", "backend", "old ms", "new ms", "change"]


def rows(changes: list[Change]) -> list[list[str]]:
    """The table's rows (HEADER), for the terminal and Markdown alike."""
    return [[c.preset, c.backend, f"{c.old_ms:.2f}", f"{c.new_ms:.2f}", c.verdict] for c in changes]


def _num(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def to_json(old: Path, new: Path, threshold: float, changes: list[Change], only_old: list, only_new: list,
            differ: list[str]) -> dict:
    """The comparison as one JSON object (ratio = new ms / old ms; null where not measured)."""
    def change(c: Change) -> dict:
        r = c.ratio
        return {"preset": c.preset, "backend": c.backend, "old_ms": _num(c.old_ms), "new_ms": _num(c.new_ms),
                "ratio": _num(r.value) if r else None, "ratio_low": _num(r.low) if r else None,
                "ratio_high": _num(r.high) if r else None, "significant": bool(r.significant) if r else None,
                "verdict": c.verdict, "regression": bool(c.regression)}

    return {"old": str(old), "new": str(new), "threshold": threshold, "changes": [change(c) for c in changes],
            "only_in_old": [{"preset": p, "backend": b} for p, b in only_old],
            "only_in_new": [{"preset": p, "backend": b} for p, b in only_new],
            "settings_differ": list(differ), "regressions": sum(c.regression for c in changes)}
