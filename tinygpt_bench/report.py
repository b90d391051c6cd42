"""Derived figures and tables from result files: speedups with confidence intervals,
the summary table (rich or Markdown). Speedup = baseline ms / backend ms, always derived
from the CSVs, never typed in. What a backend is (the hardware it is built for, its native
peer) is read from its rows (results.Measurement), never from its name."""

from __future__ import annotations

import math

import pandas as pd

from tinygpt_bench import stats


def backend_order(df: pd.DataFrame) -> list[str]:
    seen = []
    for b in df["backend"]:
        if b not in seen:
            seen.append(b)
    return seen


def stamp(df: pd.DataFrame, backend: str, column: str):
    """What the rows of `backend` say in `column` (the first one that says anything), or None."""
    if column not in df:
        return None
    vals = df.loc[df.backend == backend, column].dropna()
    return vals.iloc[0] if len(vals) else None


def peers(df: pd.DataFrame) -> dict[str, str]:
    """Each engine's native peer, as its rows name it (native_peer), in the rows' backend order."""
    out = {}
    for b in backend_order(df):
        peer = stamp(df, b, "native_peer")
        if peer:
            out[b] = peer
    return out


def engines(df: pd.DataFrame) -> list[str]:
    """The backends that are not some engine's native peer, in order."""
    named = set(peers(df).values())
    return [b for b in backend_order(df) if b not in named]


def cpu_engine(df: pd.DataFrame) -> str | None:
    """The first engine built for the CPU (hardware CPU, with a native peer): the speedup
    curve's baseline."""
    return next((b for b in peers(df) if stamp(df, b, "hardware") == "CPU"), None)


def baseline_of(df: pd.DataFrame) -> str:
    """What speedups are measured against: the CPU engine, else the first backend."""
    return cpu_engine(df) or backend_order(df)[0]


def steady_samples(steps: pd.DataFrame | None, preset: str, backend: str) -> list[float]:
    if steps is None:
        return []
    sel = steps[(steps.preset == preset) & (steps.backend == backend) & (steps.step >= 2)]
    return sel["ms"].tolist()


def speedups(df: pd.DataFrame, steps: pd.DataFrame | None, baseline: str | None = None) -> pd.DataFrame:
    """One row per (preset, backend != baseline): speedup with its 95% bootstrap interval."""
    order = backend_order(df)
    baseline = baseline or baseline_of(df)
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


def peer_ratios(df: pd.DataFrame, steps: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (preset, engine) whose native peer was measured too: ratio = engine ms /
    peer ms (below 1: faster than native) with its 95% bootstrap interval; the columns of
    speedups(), with 'engine' and 'peer' in place of 'baseline' and 'backend'."""
    frames = []
    present = set(df["backend"])
    for engine, peer in peers(df).items():
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
    baseline = baseline_of(df)
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


def _num(x) -> float | None:
    """A figure for JSON: None where it is missing (NaN is not JSON)."""
    return None if x is None or pd.isna(x) else float(x)


def _flag(x) -> bool | None:
    return None if x is None or (not isinstance(x, str) and pd.isna(x)) else str(x).lower() == "true"


def summary_json(df: pd.DataFrame, steps: pd.DataFrame | None) -> dict:
    """The summary as one JSON object (hyperfine's --export-json habit): per preset and backend
    the figures summary_rows formats, as numbers; speedup against `baseline`, null where none."""
    baseline = baseline_of(df)
    sp = speedups(df, steps, baseline)
    out = []
    for _, r in df.iterrows():
        s = sp[(sp.preset == r.preset) & (sp.backend == r.backend)] if len(sp) else sp
        s = s.iloc[0] if len(s) else None
        out.append({
            "preset": r.preset, "backend": r.backend, "params": int(r.params), "status": r.status,
            "median_ms": _num(r.get("median_ms")), "q1_ms": _num(r.get("q1_ms")), "q3_ms": _num(r.get("q3_ms")),
            "n_samples": None if _num(r.get("n_samples")) is None else int(r.n_samples),
            "speedup": _num(s.speedup) if s is not None else None,
            "speedup_low": _num(s.low) if s is not None else None,
            "speedup_high": _num(s.high) if s is not None else None,
            "loss_rel_diff_backends": _num(r.get("loss_rel_diff_backends")),
            "loss_rel_diff_reference": _num(r.get("loss_rel_diff_reference")),
            "parity_ok": _flag(r.get("parity_ok")),
        })
    return {"baseline": baseline, "presets": list(df["preset"].unique()), "backends": backend_order(df),
            "results": out}
