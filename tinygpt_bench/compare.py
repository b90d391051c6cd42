"""`compare OLD NEW`: per preset and backend, the change in ms/step with its uncertainty.

Reads like pyperf's compare: "1.31x slower [1.22-1.40]", "no significant change". The
ratio is median(new)/median(old) over steps 2..N of all repeats, with a 95% bootstrap
interval; a change counts as significant only when the interval excludes 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tinygpt_bench import report, results, stats


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
    ci = f" [{r.low:.2f}-{r.high:.2f}]" if r.low != r.high else ""
    if not r.significant and r.low != r.high:
        return f"no significant change ({r.value:.2f}x{ci})"
    if r.value >= 1:
        return f"{r.value:.2f}x slower{ci}"
    return f"{1 / r.value:.2f}x faster{ci}"


def compare(old: Path, new: Path, threshold: float = 1.10) -> list[Change]:
    a, b = results.read_measurements([old]), results.read_measurements([new])
    sa, sb = results.read_steps([old]), results.read_steps([new])
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
