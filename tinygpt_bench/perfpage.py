"""The performance page (`tinygpt-bench report DIR`): Markdown rendered from a results folder
alone, every number read from its files, none typed in.

Reads DIR/measurements.csv, steps.csv, environment.json (written by `curve`), peaks.csv
(`peak`) and diagnose-*.json (`diagnose --out DIR`), all through results' records; what a
backend is (the hardware it is built for, its native peer, its arithmetic) comes from its
rows, never from its name. The page has a hand-written part (why
each engine is where it is) and a generated block between GENERATED_START and
GENERATED_END; `--update PAGE` replaces only that block, so the hand-written text stays.
The start marker names the results folder (relative to the page), so a test can check a
committed page against its files.

Sections of the block: machine; ms/step per preset and backend; the speedup curve (the
chart, webgpu vs wasm); each engine's ratio to its native peer; achieved GFLOP/s against
the measured peaks; per-kernel time from diagnose; loss parity. Nothing internal to the
project's own planning (issue 7's targets were a section, mostly 'not measured' rows, until
issue 27): what a reader of the page can check against the files.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pandas as pd

from tinygpt_bench import chart, markdown, report, results, stats
from tinygpt_bench.errors import UserError
from tinygpt_bench.units import fmt_bytes, plural

GENERATED_START = "<!-- generated:start"
GENERATED_END = "<!-- generated:end -->"
START_RE = re.compile(r"<!-- generated:start source=(\S+) -->")

PARITY_TARGET = stats.PARITY_TOLERANCE  # relative difference of the loss at the last step, every preset

PAGE_HEAD = """# Performance

The generated block below is rendered by `tinygpt-bench report {source} --update {page}`
from the result files alone; a test keeps it equal to what those files give. Edit only
outside it.

## Why: what limits each engine (hand-written)

_To be written from the figures below: how far each engine is from its native peer (the
ratio table), where the time goes (the per-kernel tables) and what would close the gap._

"""


# ---- formatting ---------------------------------------------------------------------------

def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or (not isinstance(x, str) and pd.isna(x))


def f_ms(x) -> str:
    if _nan(x):
        return "-"
    return f"{x:,.0f}" if x >= 1000 else f"{x:.1f}" if x >= 100 else f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def f_gflops(x) -> str:
    return "-" if _nan(x) else f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.3f}"


def f_ratio(v, lo=math.nan, hi=math.nan) -> str:
    if _nan(v):
        return "-"
    ci = f" [{lo:.2f}-{hi:.2f}]" if not _nan(lo) and not _nan(hi) else ""
    return f"{v:.2f}{ci}"


def f_rel(x) -> str:
    return "-" if _nan(x) else "0" if x == 0 else f"{x:.1e}"


# ---- reading ------------------------------------------------------------------------------

class Run:
    """Everything in one results folder."""

    def __init__(self, folder: Path):
        self.dir = Path(folder)
        if not (self.dir / results.MEASUREMENTS).is_file():
            raise UserError(f"{self.dir} holds no {results.MEASUREMENTS}; give a folder written by `curve --out`")
        self.df = results.read_measurements([self.dir])
        self.steps = results.read_steps([self.dir])
        self.env = results.read_environment([self.dir])
        self.peaks = results.read_peaks(self.dir) if (self.dir / results.PEAKS).is_file() else None
        self.backends = report.backend_order(self.df)
        self.presets = list(self.df["preset"].unique())
        order = {n: i for i, n in enumerate(self.presets)}  # the curve's preset order (smallest first)
        self.diagnoses = sorted(results.diagnoses(self.dir),
                                key=lambda d: (order.get(d.preset, len(order)), d.preset, d.backend))

    def hardware(self, backend: str):
        """GPU or CPU: what `backend` is built for, as its rows say."""
        return report.stamp(self.df, backend, "hardware")

    def row(self, preset: str, backend: str):
        sel = self.df[(self.df.preset == preset) & (self.df.backend == backend)]
        return None if sel.empty else sel.iloc[0]


# ---- sections -----------------------------------------------------------------------------

def section_machine(run: Run, src: str) -> str:
    e = run.env.get("environment", {})
    s = run.env.get("settings", {})
    lines = ["## Machine", ""]
    cpu = e.get("cpu_model") or "?"
    lines.append(f"- CPU: {cpu}, {e.get('cpu_usable_cores', '?')} usable cores of {e.get('cpu_logical_cores', '?')}; "
                 f"memory {fmt_bytes(e.get('host_memory_bytes'), 1)}; {e.get('os', '?')}")
    for b in run.backends:
        sel = run.df[(run.df.backend == b) & run.df.device.notna()] if "device" in run.df else run.df.iloc[0:0]
        if sel.empty:
            continue
        r = sel.iloc[0]
        extra = []
        for col, label in (("adapter_api", "API"), ("adapter_driver", "driver"), ("threads", "threads"),
                           ("runtime", "runtime")):
            v = r.get(col)
            if not _nan(v) and str(v):
                extra.append(f"{label} {int(v) if col == 'threads' else v}")
        soft = str(r.get("software_adapter", "")).lower() == "true"
        lines.append(f"- {b}: {r.device}" + (f" ({', '.join(extra)})" if extra else "")
                     + (" - a CPU adapter: not a GPU result" if soft and run.hardware(b) == "GPU" else ""))
    libs = ", ".join(f"{k.replace('_', '-')} {e[k]}" for k in ("tinygpt_bench", "python", "numpy", "wgpu", "wasmtime", "torch")
                     if e.get(k))
    lines.append(f"- software: {libs}")
    commit = e.get("git_commit") or "?"
    lines.append(f"- curve run {run.env.get('run_id', '?')}: git commit {str(commit)[:12]}"
                 + (" (dirty)" if e.get("git_dirty") else "")
                 + f"; {s.get('steps', '?')} steps x {s.get('repeats', '?')} repeats, seed {s.get('seed', '?')}, "
                 f"corpus sha256 {str(s.get('corpus_sha256', '?'))[:12]}")
    if run.peaks is not None and len(run.peaks):
        p = run.peaks.iloc[0]
        adapters = [{"name": a, "software": str(sw).lower() == "true"}  # the adapters its rows ran on
                    for a, sw in run.peaks[["adapter", "software_adapter"]].drop_duplicates().itertuples(index=False)
                    if isinstance(a, str) and a]
        other = results.machine_difference(
            {"cpu_model": p.get("cpu_model"), "hostname": p.get("hostname"), "adapters": adapters}, e)
        lines.append(f"- peak run {p.run_id}: git commit {str(p.get('git_commit'))[:12]}; "
                     + ("the curve run's machine (CPU model, host name, GPUs)" if not other else
                        f"**another machine than the curve run** ({other})"))
    lines.append(f"- files: `{src}/` ({', '.join(sorted(f.name for f in run.dir.iterdir() if f.suffix in ('.csv', '.json')))})")
    return "\n".join(lines)


def section_steps(run: Run) -> str:
    header = ["preset", "params", "GFLOP/step"] + [f"{b} ms/step" for b in run.backends]
    rows = []
    for preset in run.presets:
        first = run.df[run.df.preset == preset].iloc[0]
        gflop = first.flops_per_step / 1e9
        line = [preset, f"{int(first.params):,}", f"{gflop:,.0f}" if gflop >= 100 else f"{gflop:.3g}"]
        for b in run.backends:
            r = run.row(preset, b)
            if r is None:
                line.append("-")
            elif r.status != "ok":
                line.append(r.status)
            else:
                line.append(f"{f_ms(r.median_ms)} [{f_ms(r.q1_ms)}-{f_ms(r.q3_ms)}]")
        rows.append(line)
    n = run.df[run.df.status == "ok"]["n_samples"]
    count = "?" if not len(n) else f"{int(n.min())}" if n.min() == n.max() else f"{int(n.min())} to {int(n.max())}"
    note = (f"Median ms of steps 2..N over all repeats [first-third quartile]; {count} steps a cell. FLOPs: matrix products, 2 per multiply-add, step = 3x "
            "forward (`tinygpt-bench presets`).")
    return "\n".join(["## Step time", "", markdown.table(header, rows), "", note])


def section_curve(run: Run, src: str) -> str:
    lines = ["## The speedup curve", ""]
    if (run.dir / "speedup.png").is_file():
        lines += [f"![speedup curve]({src}/speedup.png)", "",
                  f"(`{src}/speedup.svg`; the plotted numbers: `{src}/{chart.CHART_DATA}`)", ""]
    else:
        lines += [f"No chart in `{src}` yet: `tinygpt-bench chart {src}` draws it.", ""]
    engines = report.engines(run.df)
    base = report.cpu_engine(run.df)
    if base in engines and len(engines) > 1:
        sp = report.speedups(run.df[run.df.backend.isin(engines)], run.steps, base)
        header = ["preset"] + [f"{b} vs {base}" for b in engines if b != base]
        rows = []
        for preset in run.presets:
            line = [preset]
            for b in engines:
                if b == base:
                    continue
                s = sp[(sp.preset == preset) & (sp.backend == b)] if len(sp) else sp
                if s.empty:
                    line.append("-")
                    continue
                s = s.iloc[0]
                ci = f" [{s.low:.2f}-{s.high:.2f}]" if not _nan(s.low) else ""
                line.append(("-" if _nan(s.speedup) else f"{s.speedup:.2f}x{ci}")
                            + ("" if s.status == "ok" else f" ({s.status})"))
            rows.append(line)
        lines += [markdown.table(header, rows), "",
                  f"Speedup = {base} ms / engine ms (ratio of medians of steps 2..N), with its 95% bootstrap interval."]
    return "\n".join(lines)


def section_peers(run: Run) -> str:
    pr = report.peer_ratios(run.df, run.steps)
    lines = ["## Ratio to the native peer", ""]
    if pr.empty:
        named = ", ".join(f"{e} with {p}" for e, p in report.peers(run.df).items())
        return "\n".join(lines + ["No engine was measured beside its native peer" + (f" ({named})" if named else "")
                                  + " in this run."])
    pairs = [(e, p) for e, p in report.peers(run.df).items() if ((pr.engine == e) & (pr.peer == p)).any()]
    header = ["preset"] + [f"{e} / {p}" for e, p in pairs]
    rows = []
    for preset in run.presets:
        line = [preset]
        for e, p in pairs:
            s = pr[(pr.preset == preset) & (pr.engine == e)]
            if s.empty:
                line.append("-")
            elif s.iloc[0].status not in ("ok", "parity failed"):
                line.append(s.iloc[0].status)
            else:
                line.append(f_ratio(s.iloc[0].ratio, s.iloc[0].low, s.iloc[0].high)
                            + (" (parity failed)" if s.iloc[0].status == "parity failed" else ""))
        rows.append(line)
    threads = []
    for b in run.backends:  # the backends with threads of their own (CPU engines and peers)
        t = run.df[(run.df.backend == b)]["threads"].dropna() if "threads" in run.df else []
        if len(t):
            threads.append(f"{b} {', '.join(str(int(x)) for x in sorted(set(t)))} threads")
    return "\n".join(lines + [markdown.table(header, rows), "",
                              "Ratio = engine ms / peer ms (ratio of medians of steps 2..N, 95% bootstrap interval): "
                              "below 1 the engine is faster than PyTorch eager fp32 on the same hardware"
                              + (f" ({'; '.join(threads)})." if threads else ".")])


def _same_arithmetic(pk: pd.DataFrame, relaxed_simd) -> pd.Series:
    """The peaks.csv rows of the arithmetic a measurement ran (relaxed_simd: true, false, or
    empty where the engine has no such choice)."""
    col = pk["relaxed_simd"]
    return col.isna() if _nan(relaxed_simd) else (col == relaxed_simd)


def _peak_row(pk: pd.DataFrame, engine: str, relaxed_simd, threads=None):
    """The engine's own multiply-add peak of that arithmetic, at `threads` where measured there."""
    sel = pk[(pk.engine == engine) & (pk.kind == "peak") & _same_arithmetic(pk, relaxed_simd) & (pk.status == "ok")]
    if threads is not None and "threads" in sel:
        exact = sel[sel.threads == threads]
        sel = exact if len(exact) else sel.sort_values("threads")
    return None if sel.empty else sel.iloc[-1]


def _best(pk: pd.DataFrame, engine: str, relaxed_simd):
    """The fastest product of the engine's own matmul of that arithmetic."""
    sel = pk[(pk.engine == engine) & (pk.kind == "matmul") & _same_arithmetic(pk, relaxed_simd) & (pk.status == "ok")]
    return None if sel.empty else sel.loc[sel.gflop_per_s.idxmax()]


def _gpu_ceiling(pk: pd.DataFrame, device) -> object:
    """The fastest fp32 rate measured on this GPU, whichever row gave it (the FMA-chain kernel or
    any engine's matmul): a ceiling must not be below something that ran on the same chip."""
    sel = pk[(pk.status == "ok") & (pk.device == device) & pk.what.isin(("fp32_fma", "matmul"))]
    return None if sel.empty else sel.loc[sel.gflop_per_s.idxmax()]


def _pct(gflops: float, ref) -> str:
    """'12.3% of 400 (wasm simd128_mul_add 16t)': achieved against a peaks.csv row."""
    if ref is None:
        return "-"
    who = (f"{ref.engine} {ref.what}" + (f" {int(ref.threads)}t" if not _nan(ref.threads) else "")
           + (f" {ref['size']}" if ref.kind == "matmul" else ""))
    return f"{100 * gflops / ref.gflop_per_s:.1f}% of {f_gflops(ref.gflop_per_s)} ({who})"


def section_gflops(run: Run, src: str) -> str:
    lines = ["## Achieved GFLOP/s against the measured peaks", ""]
    pk = run.peaks
    if pk is None:
        return "\n".join(lines + [f"No `{results.PEAKS}` in `{src}`: measure it with `tinygpt-bench peak --out {src}`."])
    header = ["engine", "what", "threads / device", "size", "GFLOP/s", "check (rel err)", "note"]
    rows = []
    for _, r in pk.iterrows():
        where = plural(int(r.threads), "thread") if not _nan(r.threads) else (r.device if not _nan(r.device) else "-")
        rows.append([r.engine, r.what, where, r["size"] if not _nan(r["size"]) else "-",
                     f_gflops(r.gflop_per_s) if r.status == "ok" else r.status,
                     f_rel(r.max_rel_err), "" if _nan(r.note) else str(r.note)])
    lines += ["### Peaks (`tinygpt-bench peak`)", "", markdown.table(header, rows), "",
              "Peaks: independent multiply-add chains (wasm: 12 f32x4 a thread; WebGPU: 8 vec4 fma an invocation, "
              "kernels/peak.wgsl); matmul: each engine's own kernel alone. Every kernel was checked against numpy "
              "before it was timed; the best of the repeats.", ""]
    # the ceiling each backend is judged against
    header = ["preset", "backend", "GFLOP/s", "% of hardware peak", "% of own matmul"]
    rows = []
    for preset in run.presets:
        for b in run.backends:
            r = run.row(preset, b)
            if r is None or r.status != "ok":
                continue
            threads = None if _nan(r.get("threads")) else int(r.threads)
            # a GPU backend against the GPU's ceiling; a CPU one against its own peak of the arithmetic
            # it ran (relaxed_simd), where it has one
            arith = r.get("relaxed_simd")
            hw = _gpu_ceiling(pk, r.get("device")) if run.hardware(b) == "GPU" else _peak_row(pk, b, arith, threads)
            own = _best(pk, b, arith)

            hw_cell = _pct(r.gflop_per_s, hw)
            if hw is not None and threads and not _nan(hw.threads) and int(hw.threads) != threads:
                hw_cell += f" - measured at {int(hw.threads)}, not {threads} threads"
            rows.append([preset, b, f_gflops(r.gflop_per_s), hw_cell, _pct(r.gflop_per_s, own)])
    lines += ["### Each preset against them", "", markdown.table(header, rows), "",
              "GFLOP/s = counted FLOPs a step / median step time. Hardware peak: wasm against the SIMD128 "
              "peak of the arithmetic it ran (relaxed-SIMD FMA or mul+add, from its runtime_settings) at its "
              "thread count; webgpu and torch-cuda against the fastest fp32 rate measured on the same GPU (the "
              "FMA-chain kernel or any engine's matmul, whichever is higher); torch-cpu has none here (native "
              "code, not SIMD128). Own matmul: the fastest product of the backend's own matmul in peaks.csv "
              "(wasm: at xl's shapes, same arithmetic; webgpu, torch: square)."]
    fma = pk[(pk.what == "fp32_fma") & (pk.status == "ok")]
    for _, f in fma.iterrows():
        top = _gpu_ceiling(pk, f.device)
        if top is not None and top.gflop_per_s > f.gflop_per_s:
            lines += ["", f"Note: on {f.device} the WebGPU FMA-chain kernel measured {f_gflops(f.gflop_per_s)} "
                          f"GFLOP/s, below the {f_gflops(top.gflop_per_s)} of {top.engine} {top.what} "
                          f"{top['size']}: it is not a ceiling there, so the latter is used."]
    return "\n".join(lines)


def section_kernels(run: Run, src: str) -> str:
    lines = ["## Where the time goes (`tinygpt-bench diagnose`)", ""]
    if not run.diagnoses:
        return "\n".join(lines + [f"No diagnose reports in `{src}`: `tinygpt-bench diagnose PRESET --backend B --out "
                                  f"{src}` writes them (diagnose-PRESET-B.json)."])
    for d in run.diagnoses:
        stages = {s["name"]: s for s in d.stages}
        opts = ", ".join(f"{k} {v}" for k, v in sorted(d.options.items())) or "defaults"
        lines += [f"### {d.preset} on {d.backend}", ""]
        timed = stages.get("timed", {}).get("figure")
        head = f"Options: {opts}." + (f" Timed: {timed}." if timed else "")
        r = run.row(d.preset, d.backend)
        if r is not None and r.status == "ok":
            head += f" In the curve: {f_ms(r.median_ms)} ms/step."
        de, ce = d.environment, run.env.get("environment", {})
        other = results.machine_difference(de, ce) if de else ""
        if other:
            head += f" **Measured on another machine** ({other})."
        failed = [s for s in d.stages if not s.get("ok")]
        if failed:
            s = failed[0]
            lines += [head, "", f"Stage **{s['name']}** failed: `{s.get('error', '')}`; {s.get('meaning', '')}", ""]
            continue
        kern = stages.get("kernels", {}).get("detail", {}).get("kernels") or {}
        if not kern:
            lines += [head, "", stages.get("kernels", {}).get("figure", "no per-kernel times"), ""]
            continue
        total = sum(kern.values()) or 1.0
        rows = [[k, f"{ms:.3f}", f"{ms / total:.1%}"] for k, ms in sorted(kern.items(), key=lambda kv: (-kv[1], kv[0]))]
        how = d.kernel_timing or "the engine's own per-kernel timing"
        lines += [head + f" Per kernel: {how}; {total:.2f} ms in all.", "",
                  markdown.table(["kernel", "ms", "share"], rows + [["total", f"{total:.3f}", "100.0%"]]), ""]
    return "\n".join(lines).rstrip()


def parity_rows(run: Run) -> list[dict]:
    out = []
    last = run.steps["step"].max() if run.steps is not None and len(run.steps) else None
    for preset in run.presets:
        sub = run.df[(run.df.preset == preset) & (run.df.status == "ok")]
        finals = {r.backend: r.final_loss for _, r in sub.iterrows() if not _nan(r.get("final_loss"))}
        # between engines: curve's own figure, from the losses before the CSV rounded them
        pairs = sub["loss_rel_diff_backends"].dropna() if "loss_rel_diff_backends" in sub else []
        pair = float(pairs.max()) if len(pairs) else None
        ref = sub["loss_rel_diff_reference"].dropna() if "loss_rel_diff_reference" in sub else []
        ref_max = float(ref.max()) if len(ref) else None
        spread = None
        if last is not None:
            st = run.steps[(run.steps.preset == preset) & (run.steps.step == last)]
            for _, g in st.groupby("backend"):
                if len(g) > 1:
                    lo, hi = g.loss.min(), g.loss.max()
                    spread = max(spread or 0.0, (hi - lo) / abs(lo))
        known = [x for x in (pair, ref_max, spread) if x is not None]
        out.append({"preset": preset, "finals": finals, "pair": pair, "vs_reference": ref_max, "spread": spread,
                    "worst": max(known) if known else math.nan,
                    "flagged": any(str(v).lower() == "false" for v in sub.get("parity_ok", []))})
    return out


def section_parity(run: Run) -> str:
    backs = run.backends
    header = ["preset"] + [f"{b} final loss" for b in backs] + [
        "between engines", "vs float64 reference", "repeats spread", "parity"]
    rows = []
    for r in parity_rows(run):
        line = [r["preset"]] + [f"{r['finals'][b]:.6f}" if b in r["finals"] else "-" for b in backs]
        worst = r["worst"]
        ok = not _nan(worst) and worst <= PARITY_TARGET
        line += [f_rel(r["pair"]), f_rel(r["vs_reference"]), f_rel(r["spread"]),
                 "-" if _nan(worst) else ("ok" if ok else "**FAILED**") + (", but curve set parity_ok false" if r["flagged"] else "")]
        rows.append(line)
    return "\n".join(["## Loss parity", "", markdown.table(header, rows), "",
                      "Final loss: the last step's loss of the first repeat. Between engines: the largest "
                      "|a - b| / |b| over every pair of backends (curve's loss_rel_diff_backends); vs reference: the numpy float64 reference on the "
                      "same work (presets up to the curve's reference limit); repeats spread: the largest relative "
                      f"spread of one backend's last-step loss over its repeats (steps.csv, 6 decimals). Tolerance {PARITY_TARGET:g}."])


# ---- the page -----------------------------------------------------------------------------

def source_of(results_dir: Path, page: Path | None) -> str:
    """How the page names the results folder: relative to the page's folder (so its links work)."""
    if page is None:
        return str(results_dir).rstrip("/")
    return Path(os.path.relpath(Path(results_dir).resolve(), Path(page).resolve().parent)).as_posix()


def generated_block(results_dir: Path, page: Path | None = None) -> str:
    run = Run(results_dir)
    src = source_of(results_dir, page)
    parts = [
        f"<!-- generated:start source={src} -->",
        f"<!-- rendered by `tinygpt-bench report` from {src}/: do not edit by hand; regenerate instead -->",
        section_machine(run, src), section_steps(run), section_curve(run, src), section_peers(run),
        section_gflops(run, src), section_kernels(run, src), section_parity(run),
        GENERATED_END,
    ]
    return "\n\n".join(parts) + "\n"


def split_page(text: str, page: Path) -> tuple[str, str, str, str]:
    """(before, source, block, after) of a page with one generated block."""
    m = START_RE.search(text)
    end = text.find(GENERATED_END)
    if not m or end < m.start() or text.count(GENERATED_START) != 1:
        raise UserError(f"{page} has no single generated block ('{GENERATED_START} source=DIR -->' ... "
                        f"'{GENERATED_END}'); make a new page with `tinygpt-bench report DIR --new-page {page}`")
    stop = end + len(GENERATED_END)
    if text[stop:stop + 1] == "\n":
        stop += 1
    return text[:m.start()], m.group(1), text[m.start():stop], text[stop:]


def update_page(results_dir: Path, page: Path) -> None:
    page = Path(page)
    if not page.is_file():
        raise UserError(f"{page} does not exist; make it with `tinygpt-bench report {results_dir} --new-page {page}`")
    before, _, _, after = split_page(page.read_text(), page)
    _write(page, before + generated_block(results_dir, page) + after)


def _write(page: Path, text: str) -> None:
    try:
        page.parent.mkdir(parents=True, exist_ok=True)
        results.atomic_write(page, text.encode("utf-8"))
    except OSError as e:
        raise UserError(f"cannot write {page} ({e.strerror}); give a writable path") from None


def write_page(results_dir: Path, page: Path) -> None:
    page = Path(page)
    if page.exists():
        raise UserError(f"{page} exists; `tinygpt-bench report {results_dir} --update {page}` replaces its generated "
                        "block and keeps the hand-written text")
    head = PAGE_HEAD.format(source=str(results_dir).rstrip("/"), page=page)
    _write(page, head + generated_block(results_dir, page))


# ---- a self-contained HTML page (report --html) ----------------------------------------------
HTML_STYLE = """body{font:15px/1.45 system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f3f3f3}code{background:#f5f5f5;padding:0 3px}svg{max-width:100%;height:auto}"""


def html_page(results_dir: Path) -> str:
    """The performance page of a results folder as one HTML file that needs nothing else: its
    tables (the generated block, Markdown rendered by markdown-it, which rich brings) and the
    chart inlined as SVG from the folder's speedup.svg."""
    from markdown_it import MarkdownIt

    results_dir = Path(results_dir)
    svg_path = results_dir / "speedup.svg"
    if not svg_path.is_file():
        raise UserError(f"{results_dir} has no speedup.svg; draw it first: tinygpt-bench chart {results_dir}")
    svg = svg_path.read_text()
    svg = svg[svg.index("<svg"):]  # no XML declaration or doctype inside HTML
    block = "\n".join(ln for ln in generated_block(results_dir).splitlines() if not ln.startswith("<!--"))
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(block)
    img = re.compile(r'<img src="[^"]*speedup\.png"[^>]*>')
    body, n = img.subn(lambda _: svg, body, count=1)
    if not n:
        body = svg + body
    title = f"tinygpt-bench: {results_dir.resolve().name}"
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{HTML_STYLE}</style></head><body>\n<h1>{title}</h1>\n{body}</body></html>\n")


def write_html(results_dir: Path, page: Path) -> None:
    _write(Path(page), html_page(results_dir))
