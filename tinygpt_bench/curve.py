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
import importlib.util
import math
import multiprocessing as mp
import os
import resource
import signal
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from tinygpt_bench import corpus as corpus_mod
from tinygpt_bench import eta as eta_mod
from tinygpt_bench import engines, envinfo, model, protocol, results, stats
from tinygpt_bench.errors import UserError
from tinygpt_bench.sigmask import sigint_blocked
from tinygpt_bench.presets import Preset

PARITY_TOLERANCE = stats.PARITY_TOLERANCE  # relative difference of the final loss
DEFAULT_BACKENDS = tuple(engines.curve_defaults())  # webgpu, webgpu-dawn, wasm (their descriptions say so)
DEFAULT_PRESETS = ("tiny", "small", "medium", "large")
# `curve` with neither --presets nor --backends on a machine whose WebGPU adapter is a CPU one
# (lavapipe): both engines on three presets, one WebGPU implementation (Dawn, Chrome's) and the
# wasm module in wasmtime and in the browser, so the first run ends in minutes; --full gives
# the set above (large alone took about half the default run on a 2-core machine).
QUICK_PRESETS = ("tiny", "small", "medium")
QUICK_BACKENDS = ("webgpu-dawn", "wasm", "wasm-chrome")


def default_selection(full: bool) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """(presets, backends, why) when the user named neither: the full set on a GPU (or when asked),
    the quick set where WebGPU runs on a software adapter (or on none); wasm-chrome only where a
    browser is installed."""
    if full:
        return DEFAULT_PRESETS, DEFAULT_BACKENDS, "the full default set (--full)"
    adapter = _webgpu_adapter_kind()
    if adapter == "GPU":
        return DEFAULT_PRESETS, DEFAULT_BACKENDS, "a GPU adapter: the full default set"
    backends = QUICK_BACKENDS
    try:
        from tinygpt_bench import browser

        browser.browser_version(browser.browser_path())
    except Exception:  # no usable browser: the quick set without it
        backends = tuple(b for b in QUICK_BACKENDS if b != "wasm-chrome")
    return QUICK_PRESETS, backends, (f"WebGPU on {'a software adapter' if adapter else 'no adapter'} here: the quick "
                                     f"set; --full adds large and the wgpu-native backend")


def _webgpu_adapter_kind() -> str | None:
    """'GPU' where a WebGPU implementation sees a hardware adapter, 'CPU' where only software
    ones, None where none: from the engine's environment record (engines/webgpu/environment.py,
    reached through the registry as `env` reaches it)."""
    try:
        eng, _ = engines.spec("webgpu-dawn")
        found = eng.resolve(eng.environment)(True).get("adapters") or []
    except Exception:  # no WebGPU engine or library here: no adapter
        return None
    kinds = {a.get("adapter_type") for a in found}
    return "GPU" if kinds - {"CPU"} - {None} else ("CPU" if found else None)
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
    # the run's own time budget (s): no repeat is started that its backend's repeats so far say
    # would end past it (repeat_estimate); what finished, repeats included, is kept for --resume (Stopped)
    stop_after_s: float | None = None
    # the engines' options (threads, adapter, relaxed_simd...: engines/<name>/__init__.py), None: not
    # given; each backend gets those it declares
    options: dict = field(default_factory=dict)


class Stopped(Exception):
    """curve stopped at its budget (CurveSettings.stop_after_s) with repeats left to measure; the
    rows it wrote are in `rows`, the finished repeats of unfinished measurements in the folder."""

    def __init__(self, message: str, rows: list):
        super().__init__(message)
        self.rows = rows


class Reporter:
    """What the protocol tells the display; the CLI supplies a live or a plain one."""

    def run_progress(self, line: str) -> None: ...  # the whole run: repeat i of N, elapsed, time left (eta.py)
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
    harness: list[float] = field(default_factory=list)  # seconds of each repeat beyond its timed steps
    timelines: list[dict] = field(default_factory=list)  # each repeat's stage times (harness_timeline)


def run_settings(s: CurveSettings, corp: corpus_mod.Corpus, env: dict) -> dict:
    """What must be equal for two runs' numbers to be mixed (the --resume check)."""
    return {
        "steps": s.steps, "repeats": s.repeats, "seed": s.seed, "lr": s.lr,
        "corpus_sha256": corp.sha256, **engines.fingerprint(s.options),
        "cpu_model": env.get("cpu_model"), "cpu_usable_cores": env.get("cpu_usable_cores"),
        "hostname": env.get("hostname"), "gpus": results.gpu_names(env), **engines.digests(),
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
    """The preflight for one measurement: '' where it fits (or where the engine cannot plan
    here: then its own create stage says why), else what cannot fit and the fix."""
    from tinygpt_bench import preflight

    st = preflight.preflight(preset, backend, engines.select(backend, s.options))
    if st.ok or "step_bytes" not in (st.detail or {}):
        return ""
    return f"{st.error}. {st.meaning}"


def _worker(conn, name: str, got: protocol.Work | protocol.HandedWork, lr: float, options: dict, digest: str,
            environ: dict) -> None:
    """One measurement in a worker process: check the work handed over, create, load, time every step.

    Messages to the parent: ("describe", dict), ("step", StepTime), ("done", memory_bytes, peak_rss,
    marks), ("failed", stage, error). marks: the host clock (time.perf_counter, system-wide) at each
    stage's end, for the harness time breakdown. The parent kills this process at the time budget.
    """
    marks = {"entered": time.perf_counter()}
    # the parent's environment as the measurement starts (faults, caches, engine settings), not the
    # fork server's, which was copied when the server started
    os.environ.clear()
    os.environ.update(environ)
    stage, be = "create", None
    try:
        work = protocol.receive(got, digest)
        marks["work"] = time.perf_counter()
        engines.get_class(name)  # the engine's import, timed apart from its creation
        marks["imported"] = time.perf_counter()
        be = protocol.create_backend(name, work.preset, **options)
        marks["created"] = time.perf_counter()
        conn.send(("describe", be.describe()))
        marks["described"] = time.perf_counter()
        stage = "load"

        def on_step(st: protocol.StepTime) -> None:
            conn.send(("step", st))

        protocol.train(be, work, lr, on_step)
        marks["trained"] = time.perf_counter()
        conn.send(("describe", be.describe()))  # what only a loaded engine knows too (the WebGPU plan's digest)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        rss += be.host_peak_rss() or 0  # an engine's own process (wasm-v8: Node)
        conn.send(("done", be.memory_bytes(), rss, marks))
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


PRELOAD_ENV = "TINYGPT_BENCH_PRELOAD"  # what tinygpt_bench/preload.py imports (not imported here: it imports)


def _worker_context(names: list[str]):
    """Where workers start: forked, one fresh process per measurement, from multiprocessing's fork
    server, a single-threaded process started once a run (_start_worker_server) that has imported
    the CLI, this module and the run's engines with their libraries, so a worker starts in
    milliseconds instead of importing them again. Nothing runs on a device in the server; each
    worker still opens its own device or engine, crashes alone and is killed alone, and exits
    without the interpreter's shutdown. A server already running keeps the import list it
    started with (a second run in the same process: its engines are imported by its workers)."""
    ctx = mp.get_context("forkserver")
    imports = [m for n in names for m in worker_imports(n)]
    # a worker runs the parent's main script again (multiprocessing does, to find what it pickled);
    # `tinygpt-bench` is one import of the CLI, imported here once. ('__main__' itself: Python 3.11's
    # fork server never gets its path, so the CLI's own name is what saves the import.) The
    # engines and their libraries go through tinygpt_bench.preload, which guards each import:
    # one that fails must fail its own backend's workers, not the server.
    os.environ[PRELOAD_ENV] = ",".join(dict.fromkeys(imports))
    ctx.set_forkserver_preload(["tinygpt_bench.worker_signals", "__main__", "tinygpt_bench.cli", __name__,
                                "tinygpt_bench.preload"])
    return ctx


def worker_imports(name: str) -> list[str]:
    """What backend `name`'s workers import, for the fork server to import first: the module of
    its class, then the modules it declares (BackendSpec.preload: its engine's libraries, or
    '.module' relative to the engine's package). Nothing for an unknown name."""
    try:
        eng, b = engines.spec(name)
    except UserError:
        return []
    return [importlib.util.resolve_name(m, eng.package) if m.startswith(".") else m
            for m in (b.cls.split(":")[0], *b.preload)]


def _start_worker_server(names: list[str]) -> None:
    """Start the fork server; it imports while this process goes on (environment, work, reference)."""
    from multiprocessing import forkserver

    _worker_context(names)
    with sigint_blocked():  # a Ctrl-C while the server's Python starts: no traceback from it (sigmask.py)
        forkserver.ensure_running()


def _nothing() -> None:
    """A worker that does nothing: its start waits for the fork server's imports."""


def _wait_for_worker_server(names: list[str]) -> None:
    """Wait until the fork server has imported everything, so its start is the run's harness time
    (the whole-run figure) rather than the first measurement's."""
    proc = _worker_context(names).Process(target=_nothing, daemon=True)
    try:
        proc.start()
        proc.join()
    except (OSError, EOFError):  # a server that cannot fork: each measurement says so in its row
        pass


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"worker process killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"worker process killed by signal {-code}"
    return f"worker process exited with code {code} without a result"


def harness_timeline(t0: float, marks: dict[str, float], wall: float, steps: list[protocol.StepTime]) -> dict:
    """Where one measurement's wall time went, in seconds: the worker's start (process, imports its
    target needs), the work's check, the engine's import, create, describe (where WebGPU opens its
    device), load (to the first step's start), the timed steps, the rest of training (messages,
    untimed parts), and the end (close, exit, join). Stages the worker did not reach are absent."""
    order = ["entered", "work", "imported", "created", "described", "loaded", "trained", "done"]
    out, prev = {}, t0
    for k in order:
        if k in marks:
            out[k] = marks[k] - prev
            prev = marks[k]
    steps_s = sum(st.ms for st in steps) / 1e3
    if "trained" in out:
        out["trained"] -= steps_s
        out["steps"] = steps_s
    out["end"] = t0 + wall - prev
    return out


def _measure_once(name: str, work: protocol.Work | protocol.HandedWork, s: CurveSettings, acc: _Acc, reporter: Reporter,
                  repeat: int) -> list[dict]:
    """One repeat of one backend, in its own process: a time budget that stops it for real
    (the process is killed), a crash that cannot take the run down, and resources (worker
    threads, GPU device, wasm memory) released when the process ends."""
    preset = work.preset
    reporter.measurement_start(preset.name, name, repeat, s.repeats, s.steps)
    t0 = time.perf_counter()  # the measurement's wall clock starts before its worker does
    ctx = _worker_context(s.backends)
    recv, send = ctx.Pipe(duplex=False)
    options = engines.select(name, s.options)
    proc = ctx.Process(target=_worker, args=(send, name, work, s.lr, options, work.digest, dict(os.environ)),
                       name=f"tinygpt-bench {preset.name}/{name}", daemon=True)
    try:  # the work travels with the start (pickled, its weights in a file where handed_over could
        # write one): a worker that dies reading it fails here
        proc.start()
    except (OSError, EOFError) as e:
        if proc.pid is not None:
            proc.kill()
            proc.join(5)
        send.close()
        recv.close()
        acc.status, acc.stage, acc.error = "failed", "create", f"worker did not start: {type(e).__name__}: {e}"
        return []
    send.close()
    t_start = time.perf_counter()
    steps: list[protocol.StepTime] = []
    marks: dict[str, float] = {}
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
            if kind == "describe":  # after create, and again after the steps (what a loaded engine knows)
                acc.describe = {**acc.describe, **msg[1]}
                stage = "load" if not steps else stage
            elif kind == "step":
                st = msg[1]
                if not steps:  # the first step started its ms before this message came
                    marks["loaded"] = time.perf_counter() - st.ms / 1e3
                steps.append(st)
                stage = f"step {st.step + 1}"
                reporter.step(preset.name, name, st)
            elif kind == "note":
                reporter.note(msg[1])
            elif kind == "done":
                acc.memory = max(filter(None, (acc.memory, msg[1])), default=None)
                acc.peak_rss = max(filter(None, (acc.peak_rss, msg[2])), default=None)
                marks.update(msg[3], done=time.perf_counter())
                result = ("ok", "", "")
            elif kind == "failed":
                result = ("failed", msg[1], msg[2])
    finally:
        if result is None or result[0] != "ok":
            proc.kill()
        proc.join(30)
        recv.close()
    wall = time.perf_counter() - t0
    if result[0] != "ok":
        acc.status, acc.stage, acc.error = result
        return []
    acc.cold.append(steps[0].ms)
    acc.steady.extend(st.ms for st in steps[1:])
    acc.losses.append([st.loss for st in steps])
    acc.harness.append(wall - sum(st.ms for st in steps) / 1e3)
    acc.timelines.append(harness_timeline(t0, marks, wall, steps))
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
        "harness_s": statistics.median(acc.harness) if acc.harness else None,
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
    # what the folder holds is decided first (results.resume: keep, measure or refuse, nothing
    # written before): resuming, the artifacts of engines this call does not run (a kernel edited
    # since the folder's WebGPU rows, while this call adds CPU engines) may differ: those rows
    # carry their digests; a preset is the same measurement only with the same shape
    shapes = {p.name: results.shape_id(p.layers, p.d_model, p.heads, p.ctx, p.batch) for p in s.presets}
    writer = results.ResultWriter(s.out, environment, s.resume, frozenset(engines.artifacts_not_run_by(s.backends)),
                                  shapes)
    environment = writer.record  # the folder's record and this run's, merged (the writer's copy)
    done = writer.decision.keep
    written = []
    t_run = time.perf_counter()
    deadline = None if s.stop_after_s is None else t_run + s.stop_after_s
    stopped = ""  # the repeat the budget left unstarted
    try:
        eta = _eta_for(s, done, env)
        load0 = eta_mod.cpu_times()
        environment["machine_load"] = {"start": eta_mod.load_state(env.get("cpu_usable_cores") or 1)}
        busy = eta_mod.busy_warning(environment["machine_load"]["start"], before_run=True)
        if busy and eta.total:  # (nothing to measure: nothing a busy machine could slow)
            reporter.note(busy)
        left = eta.left_s()
        if eta.total:
            reporter.note(f"estimate: about {eta_mod.clock(left)} for {eta.total} repeats (from "
                          f"{'; '.join(eta.prior_sources) or 'this machine'}; refined as repeats finish)"
                          if left is not None else
                          f"{eta.total} repeats to run; the time left is shown once every backend has run once "
                          "(no earlier run of them on this machine)")
        _start_worker_server(s.backends)  # it imports while this process makes the first preset's work
        prior = results.read_measurements([s.out]) if done else None
        harness: list[float] = []  # every repeat's harness seconds
        steps_s = 0.0  # the timed steps of every repeat
        server_ready = False
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
                    eta.dropped(preset.name, b)
            ref, ref_error = _reference_losses(work, s)
            if ref_error:
                reporter.note(f"{preset.name}: {ref_error}; parity against float64 is unknown")
            measured: dict[str, list[dict]] = {b: [] for b in todo}  # each repeat's step rows
            done_repeats = {b: 0 for b in todo}
            for b in todo:  # repeats that a killed run finished (--resume): not measured again
                if s.resume and accs[b].status == "ok":
                    kept = writer.load_repeats(preset.name, b, environment["settings_id"], work.digest)
                    if kept:
                        accs[b] = _Acc(**kept["acc"])
                        measured[b] = kept["steps"]
                        done_repeats[b] = kept["repeats"]
                        eta.skip(preset.name, b, kept["repeats"])
                        reporter.note(f"{preset.name}/{b}: {kept['repeats']} of {s.repeats} repeats kept from an "
                                      "interrupted run, measuring the rest")
            if not server_ready and any(a.status == "ok" for a in accs.values()):
                _wait_for_worker_server(s.backends)
                server_ready = True
            with protocol.handed_over(work) as handed:  # the weights written once for every worker
                for r in range(1, s.repeats + 1):
                    for b in todo:
                        if accs[b].status != "ok" or r <= done_repeats[b]:
                            continue
                        if deadline is not None:  # its repeats so far say whether this one fits
                            need = repeat_estimate(accs[b])
                            left = deadline - time.perf_counter()
                            if need > left:
                                longest = need / REPEAT_MARGIN
                                stopped = (f"{preset.name}/{b} repeat {r} not started: its longest repeat took "
                                           f"{longest:.0f} s, {need:.0f} s with the margin, {max(left, 0):.0f} s of "
                                           "--stop-after were left")
                                break
                        reporter.run_progress(eta.line())
                        t_rep = time.perf_counter()
                        rows_r = _measure_once(b, handed, s, accs[b], reporter, r)
                        measured[b].extend(rows_r)
                        if accs[b].status == "ok":
                            eta.repeat_done(preset.name, b, time.perf_counter() - t_rep, [x["ms"] for x in rows_r])
                        else:
                            eta.dropped(preset.name, b)
                        if accs[b].status == "ok":
                            writer.save_repeats(preset.name, b, {
                                "settings_id": environment["settings_id"], "work_digest": work.digest,
                                "repeats": r, "acc": dataclasses.asdict(accs[b]), "steps": measured[b]})
                    if stopped:
                        break
            measured_steps = {b: [results.Step(**{**row, "run_id": run_id}) for row in rows]
                              for b, rows in measured.items()}
            finals = {b: a.losses[0][-1] for b, a in accs.items() if a.status == "ok" and a.losses}
            if prior is not None:
                for _, pr in prior[(prior.preset == preset.name) & (prior.status == "ok")].iterrows():
                    if pr.backend not in finals and not math.isnan(pr.final_loss):
                        finals[pr.backend] = float(pr.final_loss)
            for b in todo:
                if accs[b].status == "ok" and len(accs[b].timelines) < s.repeats:
                    continue  # stopped at the budget: its finished repeats stay kept for --resume
                row = _row(b, work, s, accs[b], corp, env, run_id, finals, ref, environment["settings_id"])
                if ref_error:
                    row = dataclasses.replace(row, reference=f"failed: {ref_error}")
                environment["backend_descriptions"].setdefault(b, accs[b].describe)
                writer.commit(row, measured_steps[b])  # its steps and its row, together
                writer.drop_repeats(preset.name, b)
                written.append(row)
                reporter.measured(row)
                # the run's figure: this call's repeats only, not those kept from an interrupted one
                harness.extend(accs[b].harness[done_repeats[b]:])
                steps_s += sum(st.ms for st in measured_steps[b] if st.repeat > done_repeats[b]) / 1e3
            environment["machine_load"]["end"] = eta_mod.load_state(env.get("cpu_usable_cores") or 1, load0)
            writer.environment(environment)
            if stopped:
                break
    finally:
        writer.close()
    eta.save()
    busy = eta_mod.busy_warning(environment["machine_load"].get("end", {}), before_run=False)
    if busy and eta.total:
        reporter.note(busy)
    if harness:
        reporter.note(harness_note(harness, time.perf_counter() - t_run, steps_s))
    if stopped:
        raise Stopped(f"stopped at the budget: {stopped}; every finished measurement and repeat is in {s.out}/: "
                      "carry on with --resume", written)
    return written


def _eta_for(s: CurveSettings, done: set, env: dict) -> eta_mod.Eta:
    """The run's estimate: every (preset, backend) not already measured, its repeats."""
    key = f"{env.get('cpu_model')}|{env.get('cpu_usable_cores')}|{env.get('python')}"
    try:
        cache = str(corpus_mod.cache_dir())
    except UserError:
        cache = None
    e = eta_mod.Eta(s.steps, key, cache)
    gpu = any(a.get("adapter_type") not in (None, "CPU") for a in env.get("adapters") or [])
    e.schedule([(p.name, model.flops_per_step(p)["total"], b, s.repeats) for p in s.presets for b in s.backends
                if (p.name, b) not in done],
               eta_mod.reference_priors(_reference_folders(s.out), env.get("cpu_usable_cores") or 1, gpu))
    return e


def _reference_folders(out: Path) -> list[Path]:
    """The committed reference runs of the checkout this runs in (its results/*), if any."""
    from tinygpt_bench.resources import repo_root

    roots = {Path.cwd() / "results", *(([repo_root() / "results"]) if repo_root() else [])}
    return [f for r in roots if r.is_dir() for f in sorted(r.iterdir())
            if (f / "measurements.csv").is_file() and f.resolve() != Path(out).resolve()]


# A repeat of one measurement may take longer than the one before: on the lent GPU machine's 16
# shared cores, behemoth's wasm repeats took 173 and 196 s (and 214 s in a later run on the same
# lease), torch-cpu's 135 s and then more than 145 s (results/h200/NOTES.md, session 8). --stop-after starts a repeat only where the longest of
# its backend's repeats, this much longer, still ends within the budget.
REPEAT_MARGIN = 1.25


def repeat_estimate(acc: _Acc) -> float:
    """Seconds the next repeat of a measurement may take: the longest of its finished repeats
    (kept ones from an interrupted run included) times REPEAT_MARGIN; 0 before the first."""
    return max((sum(t.values()) for t in acc.timelines), default=0.0) * REPEAT_MARGIN


def harness_note(harness: list[float], run_s: float, steps_s: float) -> str:
    """The run's harness time: per measurement (its worker's wall time beyond its timed steps),
    and the whole run's time beyond the steps shared out over the measurements (with each
    preset's work, preflight and float64 reference, and the result files)."""
    n = len(harness)
    return (f"harness time: {statistics.median(harness):.2f} s per measurement beyond its steps (median of {n}, "
            f"max {max(harness):.2f} s); the whole run {run_s:.1f} s, steps {steps_s:.1f} s: "
            f"{(run_s - steps_s) / n:.2f} s per measurement with the per-preset work and the float64 reference")
