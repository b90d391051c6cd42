"""Derived figures and tables from result files: speedups with confidence intervals,
the summary table (rich or Markdown). Speedup = baseline ms / backend ms, always derived
from the CSVs, never typed in."""

from __future__ import annotations

import math

import pandas as pd

from tinygpt_bench import stats


def baseline_of(backends: list[str]) -> str:
    return "wasm" if "wasm" in backends else backends[0]


def backend_order(df: pd.DataFrame) -> list[str]:
    seen = []
    for b in df["backend"]:
        if b not in seen:
            seen.append(b)
    return seen


def steady_samples(steps: pd.DataFrame | None, preset: str, backend: str) -> list[float]:
    if steps is None:
        return []
    sel = steps[(steps.preset == preset) & (steps.backend == backend) & (steps.step >= 2)]
    return sel["ms"].tolist()


def speedups(df: pd.DataFrame, steps: pd.DataFrame | None, baseline: str | None = None) -> pd.DataFrame:
    """One row per (preset, backend != baseline): speedup with its 95% bootstrap interval."""
    order = backend_order(df)
    baseline = baseline or baseline_of(order)
    rows = []
    for preset in df["preset"].unique():
        sub = df[df.preset == preset].set_index("backend")
        if baseline not in sub.index:
            continue
        base = sub.loc[baseline]
        for b in order:
            if b == baseline or b not in sub.index:
                continue
            r = sub.loc[b]
            row = {"preset": preset, "backend": b, "baseline": baseline, "flops_per_step": r.flops_per_step,
                   "params": r.params, "d_model": r.d_model, "status": "ok", "speedup": math.nan,
                   "low": math.nan, "high": math.nan,
                   "parity_ok": _bool(r.get("parity_ok")) and _bool(base.get("parity_ok"))}
            if base.status != "ok" or r.status != "ok":
                row["status"] = f"{baseline}: {base.status}" if base.status != "ok" else f"{b}: {r.status}"
                rows.append(row)
                continue
            a, c = steady_samples(steps, preset, baseline), steady_samples(steps, preset, b)
            if a and c:
                ratio = stats.ratio_ci(a, c)
                row.update(speedup=ratio.value, low=ratio.low, high=ratio.high)
            else:
                row.update(speedup=base.median_ms / r.median_ms)
            if not row["parity_ok"]:
                row["status"] = "parity failed"
            rows.append(row)
    return pd.DataFrame(rows)


# each engine's native peer: what a user would otherwise pick on the same hardware
PEERS = {"webgpu": "torch-cuda", "webgpu-dawn": "torch-cuda", "wasm": "torch-cpu", "wasm-v8": "torch-cpu"}


def peer_ratios(df: pd.DataFrame, steps: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (preset, engine) whose native peer was measured too: ratio = engine ms /
    peer ms (below 1: faster than native) with its 95% bootstrap interval; the columns of
    speedups(), with 'engine' and 'peer' in place of 'baseline' and 'backend'."""
    frames = []
    present = set(df["backend"])
    for engine, peer in PEERS.items():
        if engine not in present or peer not in present:
            continue
        sp = speedups(df[df.backend.isin([engine, peer])], steps, baseline=engine)
        if len(sp):
            sp = sp[sp.backend == peer].rename(columns={"backend": "peer", "baseline": "engine",
                                                       "speedup": "ratio"})
            sp["status"] = sp["status"].astype(str)
            frames.append(sp)
    cols = ["preset", "engine", "peer", "flops_per_step", "params", "d_model", "status", "ratio", "low", "high",
            "parity_ok"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def _bool(v) -> bool:
    if isinstance(v, str):
        return v.lower() == "true"
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return True  # parity not measured is not a failure of parity
    return bool(v)


def summary_rows(df: pd.DataFrame, steps: pd.DataFrame | None) -> tuple[list[str], list[list[str]]]:
    order = backend_order(df)
    baseline = baseline_of(order)
    sp = speedups(df, steps, baseline)
    header = ["preset", "params"] + [f"{b} ms/step" for b in order]
    header += [f"{b} vs {baseline}" for b in order if b != baseline] + ["loss parity", "status"]
    rows = []
    for preset in df["preset"].unique():
        sub = df[df.preset == preset].set_index("backend")
        first = sub.iloc[0]
        line = [preset, f"{int(first.params):,}"]
        for b in order:
            if b not in sub.index:
                line.append("-")
                continue
            r = sub.loc[b]
            if r.status == "ok":
                spread = f" ±{(r.q3_ms - r.q1_ms) / 2:.2f}" if r.n_samples > 1 else ""
                line.append(f"{r.median_ms:.2f}{spread}")
            else:
                line.append(r.status)
        for b in order:
            if b == baseline:
                continue
            s = sp[(sp.preset == preset) & (sp.backend == b)] if len(sp) else sp
            if not len(s) or math.isnan(s.iloc[0].speedup):
                line.append("-")
            else:
                s = s.iloc[0]
                ci = f" [{s.low:.2f}-{s.high:.2f}]" if not math.isnan(s.low) else ""
                line.append(f"{s.speedup:.2f}x{ci}")
        diffs = [v for v in sub.get("loss_rel_diff_backends", pd.Series(dtype=float)).tolist()
                 + sub.get("loss_rel_diff_reference", pd.Series(dtype=float)).tolist() if not pd.isna(v)]
        parity_bad = any(str(v).lower() == "false" for v in sub.get("parity_ok", []))
        line.append(("FAILED " if parity_bad else "") + (f"max {max(diffs):.1e}" if diffs else "-"))
        statuses = sorted(set(sub.status))
        line.append(",".join(statuses) if statuses != ["ok"] else "ok")
        rows.append(line)
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)
