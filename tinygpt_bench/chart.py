"""The speedup chart, drawn from result files alone (`tinygpt-bench chart`).

Left panel: speedup (baseline ms / backend ms, the engines only: native peers are
compared in the third panel) against FLOPs per step, every measured
preset a point with its 95% interval, failed presets marked at the axis, a failed loss
parity drawn hollow and labelled, and the fitted shape: each backend's time modelled as
overhead + FLOPs / throughput on its own points, the ratio of the two fits drawn as a
line. Middle panel: ms/step per backend on log axes with each fit. Third panel, where an
engine was measured beside its native peer (its rows' native_peer, report.peers): engine ms
/ peer ms (e.g. a GPU engine over PyTorch on CUDA) with 95% intervals and the ratio of the two
fits.

`chart_data()` is everything plotted, as plain numbers; it is written beside the PNG/SVG
(chart-data.json) so CI can check a committed chart against the CSVs without pixels.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from tinygpt_bench import report, results, stats
from tinygpt_bench.errors import UserError

CHART_DATA = "chart-data.json"
CHART_FORMAT_VERSION = 1  # chart-data.json's own layout (history: 1 2026-11 first version)


def _r(x, digits: int = 6):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    x = float(x)
    return 0.0 if x == 0 else round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


def title_of(df: pd.DataFrame, env: dict) -> str:
    e = env.get("environment", {})
    cpu = e.get("cpu_model") or (df["cpu_model"].dropna().iloc[0] if "cpu_model" in df and df["cpu_model"].notna().any() else "?")
    cores = e.get("cpu_usable_cores")
    machine = f"{cpu}" + (f", {cores} cores" if cores else "")
    parts = [machine]
    gpu_rows = df[df.get("device_type", pd.Series(dtype=str)).astype(str) == "GPU"] if "device_type" in df else df.iloc[0:0]
    software = df[df.get("software_adapter", pd.Series(dtype=str)).astype(str).str.lower() == "true"] if "software_adapter" in df else df.iloc[0:0]
    if len(software):
        name = str(software["device"].dropna().iloc[0]) if software["device"].notna().any() else "software adapter"
        parts.append(f"WebGPU on a CPU adapter ({name}): not a GPU result")
    elif len(gpu_rows) and gpu_rows["device"].notna().any():
        parts.append(f"WebGPU on {gpu_rows['device'].dropna().iloc[0]}")
    return " | ".join(parts)


def chart_data(paths: list[Path]) -> dict:
    df = results.read_measurements(paths)
    steps = results.read_steps(paths)
    env = results.read_environment(paths)
    order = report.backend_order(df)
    baseline = report.baseline_of(df)
    # the speedup panel compares the engines; native peers get their own panel (engine / peer)
    engines = report.engines(df)
    compared = engines if any(b != baseline for b in engines) else order
    sp = report.speedups(df[df.backend.isin(compared)], steps, baseline)
    pr = report.peer_ratios(df, steps)
    differ = results.mixture(paths)
    mixed = f"MIXED RUNS ({', '.join(differ)} differ): not one measurement | " if differ else ""
    data = {
        "format_version": CHART_FORMAT_VERSION,
        "title": mixed + title_of(df, env),
        "x": "flops_per_step",
        "baseline": baseline,
        "speedup_points": [],
        "ms_points": [],
        "fits": {},
        "fit_curves": {},
        "peer_ratio_points": [],
        "peer_fit_curves": {},
    }
    for _, r in sp.iterrows():
        data["speedup_points"].append({
            "preset": r.preset, "backend": r.backend, "flops_per_step": int(r.flops_per_step),
            "speedup": _r(r.speedup), "low": _r(r.low), "high": _r(r.high), "status": r.status,
        })
    for _, r in pr.iterrows():
        data["peer_ratio_points"].append({
            "preset": r.preset, "engine": r.engine, "peer": r.peer, "flops_per_step": int(r.flops_per_step),
            "ratio": _r(r.ratio), "low": _r(r.low), "high": _r(r.high), "status": r.status,
        })
    for _, r in df.iterrows():
        data["ms_points"].append({
            "preset": r.preset, "backend": r.backend, "flops_per_step": int(r.flops_per_step),
            "median_ms": _r(r.median_ms), "q1_ms": _r(r.q1_ms), "q3_ms": _r(r.q3_ms), "status": r.status,
        })
    ok = df[df.status == "ok"]
    lo, hi = (df.flops_per_step.min(), df.flops_per_step.max()) if len(df) else (1, 1)
    grid = np.geomspace(max(lo, 1) / 1.5, hi * 1.5, 60) if hi > lo else np.array([lo])
    for b in order:
        sel = ok[ok.backend == b]
        fit = stats.fit_overhead_throughput(sel.flops_per_step.to_numpy(), sel.median_ms.to_numpy())
        if fit:
            data["fits"][b] = {"overhead_ms": _r(fit[0]), "gflop_per_s": _r(fit[1] / 1e6)}
    if baseline in data["fits"]:
        fb = data["fits"][baseline]
        for b, f in data["fits"].items():
            if b == baseline or b not in compared:
                continue
            t_base = fb["overhead_ms"] + grid / (fb["gflop_per_s"] * 1e6)
            t_b = f["overhead_ms"] + grid / (f["gflop_per_s"] * 1e6)
            data["fit_curves"][b] = {"flops_per_step": [_r(x) for x in grid], "speedup": [_r(x) for x in t_base / t_b]}
    for engine, peer in report.peers(df).items():
        if engine in data["fits"] and peer in data["fits"] and any(
                p["engine"] == engine for p in data["peer_ratio_points"]):
            fe, fp = data["fits"][engine], data["fits"][peer]
            t_e = fe["overhead_ms"] + grid / (fe["gflop_per_s"] * 1e6)
            t_p = fp["overhead_ms"] + grid / (fp["gflop_per_s"] * 1e6)
            data["peer_fit_curves"][engine] = {"peer": peer, "flops_per_step": [_r(x) for x in grid],
                                               "ratio": [_r(x) for x in t_e / t_p]}
    return data


def draw(data: dict, out_dir: Path, stem: str = "speedup") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "tinygpt-bench"  # the SVG's ids the same on every redraw
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    peers = bool(data.get("peer_ratio_points"))
    if peers:
        fig, (ax, ax2, ax3) = plt.subplots(1, 3, figsize=(19, 5.4))
    else:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    backends = []
    for p in data["ms_points"]:
        if p["backend"] not in backends:
            backends.append(p["backend"])
    color = {b: colors[i % len(colors)] for i, b in enumerate(backends)}
    base = data["baseline"]

    # left: speedup (one legend entry per backend: its points, and its fitted curve in the same colour)
    any_point = False
    handles = []
    for b in backends:
        if b == base:
            continue
        pts = [p for p in data["speedup_points"] if p["backend"] == b]
        good = [p for p in pts if p["status"] == "ok" and p["speedup"] is not None]
        parity = [p for p in pts if p["status"] == "parity failed" and p["speedup"] is not None]
        failed = [p for p in pts if p["status"] not in ("ok", "parity failed") or p["speedup"] is None]
        marker = None
        if good:
            any_point = True
            x = [p["flops_per_step"] for p in good]
            y = [p["speedup"] for p in good]
            err = None
            if all(p["low"] is not None for p in good):
                err = [[max(p["speedup"] - p["low"], 0) for p in good], [max(p["high"] - p["speedup"], 0) for p in good]]
            marker = ax.errorbar(x, y, yerr=err, fmt="o", color=color[b], capsize=3)
        for p in parity:
            ax.plot(p["flops_per_step"], p["speedup"], "o", mfc="none", color=color[b])
            ax.annotate(f"{p['preset']}: loss parity failed", (p["flops_per_step"], p["speedup"]),
                        textcoords="offset points", xytext=(4, -12), fontsize=8, color="red")
        _mark_failed(ax, failed)
        line = None
        if b in data["fit_curves"]:
            c = data["fit_curves"][b]
            (line,) = ax.plot(c["flops_per_step"], c["speedup"], "-", color=color[b], alpha=0.6)
        if marker is not None or line is not None:
            handles.append(((marker, line) if marker is not None and line is not None else (marker or line),
                            f"{b} vs {base}"))
    ax.axhline(1.0, color="gray", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs per training step (matrix products)")
    ax.set_ylabel(f"speedup over {base} (x)")
    ax.set_title("speedup vs model size\n(points: 95% CI; lines: ratio of fitted overhead + FLOPs/throughput)",
                 fontsize=10)
    if any_point or data["fit_curves"]:
        _legend_below(ax, handles)
    ax.grid(True, which="both", alpha=0.3)

    # right: ms/step per backend (one legend entry per backend, its fit in the entry's text)
    handles = []
    for b in backends:
        pts = [p for p in data["ms_points"] if p["backend"] == b and p["status"] == "ok" and p["median_ms"]]
        _mark_failed(ax2, [p for p in data["ms_points"] if p["backend"] == b and p["status"] != "ok"])
        if not pts:
            continue
        x = [p["flops_per_step"] for p in pts]
        y = [p["median_ms"] for p in pts]
        err = [[max(p["median_ms"] - (p["q1_ms"] or p["median_ms"]), 0) for p in pts],
               [max((p["q3_ms"] or p["median_ms"]) - p["median_ms"], 0) for p in pts]]
        marker = ax2.errorbar(x, y, yerr=err, fmt="o", color=color[b], capsize=2)
        label, line = b, None
        if b in data["fits"]:
            f = data["fits"][b]
            g = np.geomspace(min(x) / 1.5, max(x) * 1.5, 50)
            (line,) = ax2.plot(g, f["overhead_ms"] + g / (f["gflop_per_s"] * 1e6), "-", color=color[b], alpha=0.5)
            label = f"{b}: {f['overhead_ms']:.3g} ms + FLOPs / {f['gflop_per_s']:.3g} GFLOP/s"
        handles.append(((marker, line) if line is not None else marker, label))
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("FLOPs per training step")
    ax2.set_ylabel("ms per step (median of steps 2..N; bars: quartiles)")
    ax2.set_title("step time per backend\n(lines: fitted overhead + FLOPs/throughput)", fontsize=10)
    ax2.grid(True, which="both", alpha=0.3)
    if handles:
        _legend_below(ax2, handles)
    if peers:
        _draw_peer_panel(ax3, data, color)
    for a in (ax, ax2) + ((ax3,) if peers else ()):
        a.xaxis.set_minor_formatter(NullFormatter())
        _preset_axis(a, data, backends)
    ax2.yaxis.set_minor_formatter(NullFormatter())
    fig.suptitle(data["title"], fontsize=10)
    fig.tight_layout()
    files = {}
    for ext in ("png", "svg"):
        meta = {"Date": None} if ext == "svg" else {}
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=120, metadata=meta, bbox_inches="tight")
        files[out_dir / f"{stem}.{ext}"] = buf.getvalue()
    plt.close(fig)
    files[out_dir / CHART_DATA] = (json.dumps(data, indent=1) + "\n").encode("utf-8")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for path, blob in files.items():  # each file whole or not at all
            results.atomic_write(path, blob)
    except OSError as e:
        raise UserError(f"cannot write the chart into {out_dir} ({e.strerror}); give a writable folder "
                        f"(`tinygpt-bench chart RESULTS -o FOLDER`)") from None
    return list(files)


def _draw_peer_panel(ax, data: dict, color: dict) -> None:
    """Third panel: each engine's step time over its native peer's (webgpu / torch-cuda,
    wasm / torch-cpu), lower is faster than native, with the ratio of the two fits."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    handles = []
    for engine in dict.fromkeys(p["engine"] for p in data["peer_ratio_points"]):
        pts = [p for p in data["peer_ratio_points"] if p["engine"] == engine]
        peer = pts[0]["peer"]
        good = [p for p in pts if p["ratio"] is not None and p["status"] in ("ok", "parity failed")]
        failed = [p for p in pts if p not in good]
        c = color.get(engine, "black")
        marker = line = None
        if good:
            err = None
            if all(p["low"] is not None for p in good):
                err = [[max(p["ratio"] - p["low"], 0) for p in good], [max(p["high"] - p["ratio"], 0) for p in good]]
            marker = ax.errorbar([p["flops_per_step"] for p in good], [p["ratio"] for p in good], yerr=err, fmt="s",
                                 color=c, capsize=3)
            for p in good:
                if p["status"] == "parity failed":
                    ax.plot(p["flops_per_step"], p["ratio"], "s", mfc="white", color=c)
                    ax.annotate(f"{p['preset']}: loss parity failed", (p["flops_per_step"], p["ratio"]),
                                textcoords="offset points", xytext=(4, 6), fontsize=8, color="red")
        _mark_failed(ax, failed)
        fc = data.get("peer_fit_curves", {}).get(engine)
        if fc:
            (line,) = ax.plot(fc["flops_per_step"], fc["ratio"], "-", color=c, alpha=0.6)
        if marker is not None or line is not None:
            handles.append(((marker, line) if marker is not None and line is not None else (marker or line),
                            f"{engine} / {peer}"))
    ax.axhline(1.0, color="gray", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FLOPs per training step")
    ax.set_ylabel("engine ms / native peer ms (below 1: faster than native)")
    ax.set_title("each engine against its native peer (PyTorch eager fp32)\n(points: 95% CI; lines: ratio of "
                 "the fits)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    if handles:
        _legend_below(ax, handles)


def _mark_failed(ax, points: list[dict]) -> None:
    """A red cross at the foot of the panel, over the preset's FLOPs, with its status."""
    for p in points:
        ax.plot(p["flops_per_step"], 0.02, "x", color="red", transform=ax.get_xaxis_transform(), ms=9)
        ax.annotate(f"{p['preset']}: {p['status']}", (p["flops_per_step"], 0.04), xycoords=("data", "axes fraction"),
                    rotation=90, fontsize=7, color="red", va="bottom", ha="right")


def _legend_below(ax, handles: list | None) -> None:
    """The legend under the panel, off the data; `handles`: [(artist or (marker, line), label)]."""
    from matplotlib.legend_handler import HandlerTuple

    kw = dict(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
    if handles is None:
        ax.legend(**kw)
    else:
        ax.legend([h for h, _ in handles], [label for _, label in handles],
                  handler_map={tuple: HandlerTuple(ndivide=None)}, **kw)


def _preset_axis(ax, data: dict, backends: list[str]) -> None:
    """The presets named once, on a top axis at their FLOPs (on every panel; presets within 15%
    of each other's FLOPs share a tick), and the cells a backend did not measure (a preset of
    the run with no row of it) said so once a preset, in the panel."""
    from matplotlib.ticker import NullLocator

    flops = {}
    for p in data["ms_points"]:
        flops.setdefault(p["preset"], p["flops_per_step"])
    ticks: list[list] = []  # [flops, [names]]
    for name, f in sorted(flops.items(), key=lambda kv: kv[1]):
        if ticks and f <= ticks[-1][0] * 1.15:
            ticks[-1][1].append(name)
        else:
            ticks.append([f, [name]])
    top = ax.secondary_xaxis("top")
    top.set_xticks([t[0] for t in ticks], labels=["/".join(t[1]) for t in ticks], fontsize=7, rotation=90)
    top.xaxis.set_minor_locator(NullLocator())
    measured = {(p["preset"], p["backend"]) for p in data["ms_points"]}
    for name, f in flops.items():
        missing = [b for b in backends if (name, b) not in measured]
        if missing:
            ax.annotate("not measured:\n" + "\n".join(missing), (f, 0.5), xycoords=("data", "axes fraction"),
                        rotation=90, fontsize=6, color="gray", va="center", ha="center", multialignment="center")


def load_chart_data(path: Path) -> dict:
    """A committed chart-data.json: a JSON object, else a UserError naming it and the fix."""
    fix = f"regenerate it with `tinygpt-bench chart {path.parent}` and commit it"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; {fix}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e}); {fix}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a JSON {type(data).__name__}, not chart data (an object); {fix}")
    return data


# what a drawn chart file starts with (PNG) or holds (SVG): a file without it is no chart
CHART_MAGIC = {"speedup.png": (b"\x89PNG\r\n\x1a\n", 0), "speedup.svg": (b"<svg", None)}


def not_a_chart(path: Path) -> bool:
    """Whether a drawn chart file is empty or not what its name says (a zero-byte speedup.png)."""
    magic, at = CHART_MAGIC.get(path.name, (b"", None))
    blob = path.read_bytes()
    return not blob or (blob[: len(magic)] != magic if at == 0 else magic not in blob)


def check(paths: list[Path], committed: Path) -> list[str]:
    """Differences between the chart data regenerated from CSVs and a committed chart-data.json."""
    fresh = chart_data(paths)
    if not committed.is_file():
        return [f"{committed} does not exist"]
    old = load_chart_data(committed)
    diffs = []
    for key in sorted(set(fresh) | set(old)):
        if fresh.get(key) != old.get(key):
            diffs.append(f"{key}: committed chart differs from the CSVs")
    return diffs
