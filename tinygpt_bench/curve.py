"""`curve`: the measurement protocol over presets x backends (DESIGN.md).

Phases, top to bottom, per preset:
  1. work      initial weights and the batch sequence, made once on the host
  2. reference the float64 numpy reference trains the same work (parity oracle), where
               the preset is small enough for numpy (--reference-max-gflop)
  3. repeats   R repeats, interleaving the backends (A B A B ...) so drift on a shared
               machine hits both alike; each repeat runs in a fresh worker process that
               loads a fresh model and times every step; past --timeout it is killed
  4. summary   cold first step apart from steady state (steps 2..N over all repeats):
               median, quartiles, MAD outliers (flagged, never dropped), tokens/s, GFLOP/s,
               peak memory (the worker's resident set, plus its engine process's where it has
               one: wasm-v8's Node; what the engine allocated),
               final-loss parity between backends and against the reference; one CSV row per
               (preset, backend), written and flushed as soon as it is known
The step count is global (--steps, default 15) and never varies per preset; a slow preset
gets a time budget (--timeout), not fewer steps.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing as mp
import os
import resource
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from tinygpt_bench import corpus as corpus_mod
from tinygpt_bench import engines, envinfo, model, protocol, results, stats
from tinygpt_bench.errors import UserError
from tinygpt_bench.presets import Preset

PARITY_TOLERANCE = stats.PARITY_TOLERANCE  # relative difference of the final loss
DEFAULT_BACKENDS = tuple(engines.curve_defaults())  # webgpu, webgpu-dawn, wasm (their descriptions say so)
DEFAULT_PRESETS = ("tiny", "small", "medium", "large")
REFERENCE_MAX_GFLOP = 30.0  # numpy float64 reference runs presets up to this many GFLOP a step


@dataclass
class CurveSettings:
    presets: list[Preset]
    backends: list[str]
    steps: int = protocol.DEFAULT_STEPS
    repeats: int = 3
    timeout_s: float | None = None
    corpus: str = "synthetic"
    seed: int = protocol.DEFAULT_SEED
    lr: float = 3e-4
    out: Path = Path("results")
    resume: bool = False
    reference_max_gflop: float = REFERENCE_MAX_GFLOP
    # the engines' options (threads, adapter, relaxed_simd...: engines/<name>/__init__.py), None: not
    # given; each backend gets those it declares
    options: dict = field(default_factory=dict)


class Reporter:
    """What the protocol tells the display; the CLI supplies a live or a plain one."""

    def preset_start(self, preset: Preset, n_backends: int) -> None: ...
    def measurement_start(self, preset: str, backend: str, repeat: int, repeats: int, steps: int) -> None: ...
    def step(self, preset: str, backend: str, st: protocol.StepTime) -> None: ...
    def measured(self, m: results.Measurement) -> None: ...
    def note(self, text: str) -> None: ...


@dataclass
class _Acc:
    """Everything measured of one (preset, backend) over its repeats."""

    cold: list[float] = field(default_factory=list)
    steady: list[float] = field(default_factory=list)
    losses: list[list[float]] = field(default_factory=list)
    status: str = "ok"
    stage: str = ""
    error: str = ""
    describe: dict = field(default_factory=dict)
    memory: int | None = None  # what the engine reports allocating (max over repeats)
    peak_rss: int | None = None  # the worker process's peak resident memory (max over repeats)


def run_settings(s: CurveSettings, corp: corpus_mod.Corpus, env: dict) -> dict:
    """What must be equal for two runs' numbers to be mixed (the --resume check)."""
    return {
        "steps": s.steps, "repeats": s.repeats, "seed": s.seed, "lr": s.lr,
        "corpus_sha256": corp.sha256, **engines.fingerprint(s.options),
        "cpu_model": env.get("cpu_model"), "cpu_usable_cores": env.get("cpu_usable_cores"),
        "hostname": env.get("hostname"), **engines.digests(),
    }


def _reference_losses(work: protocol.Work, s: CurveSettings) -> tuple[list[float] | None, str]:
    """(the float64 reference's losses on the work, or None past reference_max_gflop or where the
    oracle failed; '' or the failure with its stage). A failing oracle leaves parity against
    float64 unknown; it stops nothing."""
    if model.flops_per_step(work.preset)["total"] / 1e9 > s.reference_max_gflop:
        return None, ""
    try:
        be = protocol.create_backend(engines.oracle(), work.preset)
        try:
            return [st.loss for st in protocol.train(be, work, s.lr)], ""
        finally:
            be.close()
    except protocol.StageError as e:
        return None, f"the float64 reference failed at stage '{e.stage}': {e.error}"
    except Exception as e:  # the oracle's own bug: say so, measure on
        return None, f"the float64 reference failed: {type(e).__name__}: {e}"


def _preflight_refusal(preset: Preset, backend: str, s: CurveSettings) -> str:
    """diagnose's preflight for one measurement: '' where it fits (or where the engine cannot
    plan here: then its own create stage says why), else what cannot fit and the fix."""
    from tinygpt_bench import diagnose

    st = diagnose.preflight(preset, backend, engines.select(backend, s.options))
    if st.ok or "step_bytes" not in (st.detail or {}):
        return ""
    return f"{st.error}. {st.meaning}"


def _worker(conn, name: str, preset: Preset, corpus_spec: str, steps: int, seed: int, lr: float, options: dict,
            digest: str) -> None:
    """One measurement in a worker process: make the same work, create, load, time every step.

    Messages to the parent: ("describe", dict), ("step", StepTime), ("done", memory_bytes),
    ("failed", stage, error). The parent kills this process at the time budget.
    """
    stage, be = "create", None
    try:
        work = protocol.prepare(preset, corpus_mod.load(corpus_spec), steps, seed)
        if protocol.work_digest(work) != digest:
            raise RuntimeError("the worker made different weights or batches from the parent's (work sha256 differs)")
        be = protocol.create_backend(name, preset, **options)
        conn.send(("describe", be.describe()))
        stage = "load"

        def on_step(st: protocol.StepTime) -> None:
            conn.send(("step", st))

        protocol.train(be, work, lr, on_step)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        rss += be.host_peak_rss() or 0  # an engine's own process (wasm-v8: Node)
        conn.send(("done", be.memory_bytes(), rss))
    except protocol.StageError as e:
        conn.send(("failed", e.stage, e.error))
    except BaseException as e:  # noqa: BLE001 - everything is reported to the parent
        conn.send(("failed", stage, f"{type(e).__name__}: {e}"))
    finally:
        if be is not None:
            try:
                be.close()
            except Exception as e:
                conn.send(("note", f"{name}: close() failed: {type(e).__name__}: {e}"))
        conn.close()


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"worker process killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"worker process killed by signal {-code}"
    return f"worker process exited with code {code} without a result"


def _measure_once(name: str, work: protocol.Work, s: CurveSettings, acc: _Acc, reporter: Reporter, repeat: int) -> list[dict]:
    """One repeat of one backend, in its own process: a time budget that stops it for real
    (the process is killed), a crash that cannot take the run down, and resources (worker
    threads, GPU device, wasm memory) released when the process ends."""
    preset = work.preset
    reporter.measurement_start(preset.name, name, repeat, s.repeats, s.steps)
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    options = engines.select(name, s.options)
    proc = ctx.Process(target=_worker, args=(send, name, preset, s.corpus, s.steps, s.seed, s.lr, options,
                                                        work.digest),
                       name=f"tinygpt-bench {preset.name}/{name}", daemon=True)
    proc.start()
    send.close()
    t_start = time.perf_counter()
    steps: list[protocol.StepTime] = []
    stage, result = "create", None
    try:
        while result is None:
            remaining = None if s.timeout_s is None else s.timeout_s - (time.perf_counter() - t_start)
            if remaining is not None and remaining <= 0 or not recv.poll(remaining):
                proc.kill()
                result = ("timeout", stage, f"time budget of {s.timeout_s:g} s spent at {stage} "
                                            f"({len(steps)} of {s.steps} steps done); worker stopped")
                break
            try:
                msg = recv.recv()
            except EOFError:
                proc.join(5)
                result = ("failed", stage, _exit_text(proc.exitcode))
                break
            kind = msg[0]
            if kind == "describe":
                acc.describe = acc.describe or msg[1]
                stage = "load"
            elif kind == "step":
                st = msg[1]
                steps.append(st)
                stage = f"step {st.step + 1}"
                reporter.step(preset.name, name, st)
            elif kind == "note":
                reporter.note(msg[1])
            elif kind == "done":
                acc.memory = max(filter(None, (acc.memory, msg[1])), default=None)
                acc.peak_rss = max(filter(None, (acc.peak_rss, msg[2])), default=None)
                result = ("ok", "", "")
            elif kind == "failed":
                result = ("failed", msg[1], msg[2])
    finally:
        if result is None or result[0] != "ok":
            proc.kill()
        proc.join(30)
        recv.close()
    if result[0] != "ok":
        acc.status, acc.stage, acc.error = result
        return []
    acc.cold.append(steps[0].ms)
    acc.steady.extend(st.ms for st in steps[1:])
    acc.losses.append([st.loss for st in steps])
    return [{"run_id": "", "preset": preset.name, "backend": name, "repeat": repeat, "step": st.step,
             "ms": st.ms, "loss": st.loss} for st in steps]


def _row(name: str, work: protocol.Work, s: CurveSettings, acc: _Acc, corp, env: dict, run_id: str,
         finals: dict[str, float], ref: list[float] | None, settings_id: str = "") -> results.Measurement:
    p = work.preset
    d = acc.describe
    flops = model.flops_per_step(p)["total"]
    row = {
        "run_id": run_id, "timestamp": envinfo.now(),
        "preset": p.name, "backend": name, "status": acc.status, "stage": acc.stage, "error": acc.error,
        "layers": p.layers, "d_model": p.d_model, "heads": p.heads, "ctx": p.ctx, "batch": p.batch,
        "params": model.param_count(p), "flops_per_step": flops,
        "steps": s.steps, "repeats": s.repeats, "seed": s.seed, "lr": s.lr,
        "corpus": corp.name, "corpus_sha256": corp.sha256,
        "peak_rss_bytes": acc.peak_rss, "engine_memory_bytes": acc.memory,
        "reference": "reference (numpy float64)" if ref else "",
        "cpu_model": env.get("cpu_model"), "git_commit": env.get("git_commit"),
        "settings_id": settings_id, "hardware": engines.info(name).hardware,
        "native_peer": engines.info(name).native_peer,
        "relaxed_simd": d.get("relaxed_simd"),
    }
    for key in ("device", "device_type", "software_adapter", "adapter_vendor", "adapter_driver", "adapter_api",
                "threads", "runtime", "runtime_settings", "module_sha256", "kernels_sha256"):
        if key in d:
            row[key] = d[key]
    samples = acc.steady or acc.cold
    if acc.cold and samples:
        sm = stats.summarize(samples)
        row.update(
            cold_ms=float(sorted(acc.cold)[len(acc.cold) // 2]), median_ms=sm.median, mean_ms=sm.mean,
            min_ms=sm.min, q1_ms=sm.q1, q3_ms=sm.q3, max_ms=sm.max, mad_ms=sm.mad,
            n_samples=sm.n, n_outliers=sm.outliers,
            tokens_per_s=p.batch * p.ctx / sm.median * 1e3, gflop_per_s=flops / sm.median / 1e6,
            first_loss=acc.losses[0][0],
        )
        if len(acc.losses[0]) == s.steps:
            row["final_loss"] = acc.losses[0][-1]
    if acc.status == "ok" and "final_loss" in row:
        final = row["final_loss"]
        others = [v for k, v in finals.items() if k != name]
        if others:
            row["loss_rel_diff_backends"] = max(stats.rel_diff(final, o) for o in others)
        if ref:
            row["loss_rel_diff_reference"] = stats.rel_diff(final, ref[-1])
        diffs = [row.get("loss_rel_diff_backends"), row.get("loss_rel_diff_reference")]
        known = [x for x in diffs if x is not None]
        row["parity_ok"] = all(x <= PARITY_TOLERANCE for x in known) if known else None
        if len(acc.losses) > 1 and any(l != acc.losses[0] for l in acc.losses[1:]):
            # a nondeterministic engine (atomics, threaded reductions) is noted; only a spread
            # past the parity tolerance fails parity
            spread = max(stats.rel_diff(a, b) for r in acc.losses[1:] for a, b in zip(r, acc.losses[0]))
            row["error"] = f"losses differ between repeats of the same work (max rel {spread:.1e})"
            if spread > PARITY_TOLERANCE:
                row["parity_ok"] = False
    return results.Measurement(**row)


def run(s: CurveSettings, reporter: Reporter) -> list[results.Measurement]:
    """Measure every (preset, backend); returns the rows written."""
    protocol.check_steps(s.steps)
    # a name given twice is measured once
    s.backends = list(dict.fromkeys(s.backends))
    s.presets = list({p.name: p for p in s.presets}.values())
    if not s.backends:
        raise UserError("empty backend list; give names such as --backends wasm,reference")
    if s.repeats < 1:
        raise UserError(f"--repeats {s.repeats} is not a positive number; use --repeats 3")
    corp = corpus_mod.load(s.corpus)
    env = envinfo.collect_all()
    settings = run_settings(s, corp, env)
    run_id = f"{env['timestamp']}-{os.getpid()}"
    environment = {
        "format_version": results.FORMAT_VERSION, "run_id": run_id, "settings": settings,
        "settings_id": results.settings_id(settings), "presets": [p.name for p in s.presets],
        "backends": s.backends, "corpus": corp.describe(), "environment": env, "backend_descriptions": {},
    }
    done = results.done_keys(s.out) if s.resume else set()
    writer = results.ResultWriter(s.out, environment, s.resume)
    written = []
    try:
        prior = results.read_measurements([s.out]) if done else None
        for preset in s.presets:
            todo = [b for b in s.backends if (preset.name, b) not in done]
            if not todo:
                reporter.note(f"{preset.name}: already measured in {s.out}, skipped (--resume)")
                continue
            reporter.preset_start(preset, len(todo))
            work = protocol.prepare(preset, corp, s.steps, s.seed)
            accs = {b: _Acc() for b in todo}
            for b in todo:  # what cannot fit is refused before anything starts
                refusal = _preflight_refusal(preset, b, s)
                if refusal:
                    accs[b].status, accs[b].stage, accs[b].error = "failed", "preflight", refusal
            ref, ref_error = _reference_losses(work, s)
            if ref_error:
                reporter.note(f"{preset.name}: {ref_error}; parity against float64 is unknown")
            measured_steps: dict[str, list[results.Step]] = {b: [] for b in todo}
            for r in range(1, s.repeats + 1):
                for b in todo:
                    if accs[b].status != "ok":
                        continue
                    rows = _measure_once(b, work, s, accs[b], reporter, r)
                    measured_steps[b].extend(results.Step(**{**row, "run_id": run_id}) for row in rows)
            finals = {b: a.losses[0][-1] for b, a in accs.items() if a.status == "ok" and a.losses}
            if prior is not None:
                for _, pr in prior[(prior.preset == preset.name) & (prior.status == "ok")].iterrows():
                    if pr.backend not in finals and not math.isnan(pr.final_loss):
                        finals[pr.backend] = float(pr.final_loss)
            for b in todo:
                row = _row(b, work, s, accs[b], corp, env, run_id, finals, ref, environment["settings_id"])
                if ref_error:
                    row = dataclasses.replace(row, reference=f"failed: {ref_error}")
                environment["backend_descriptions"].setdefault(b, accs[b].describe)
                writer.commit(row, measured_steps[b])  # its steps and its row, together
                written.append(row)
                reporter.measured(row)
            writer.environment(environment)
    finally:
        writer.close()
    return written
