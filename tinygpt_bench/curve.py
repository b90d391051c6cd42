"""`curve`: the measurement protocol over presets x backends (DESIGN.md).

Phases, top to bottom, per preset:
  1. work      initial weights and the batch sequence, made once on the host
  2. reference the float64 numpy reference trains the same work (parity oracle), where
               the preset is small enough for numpy (--reference-max-gflop)
  3. repeats   R repeats, interleaving the backends (A B A B ...) so drift on a shared
               machine hits both alike; each repeat runs in a fresh worker process that
               loads a fresh model and times every step; past --timeout it is killed
               (the runner package: runner/schedule.py, runner/repeat.py, runner/worker.py)
  4. summary   cold first step apart from steady state (steps 2..N over all repeats):
               median, quartiles, MAD outliers (flagged, never dropped), tokens/s, GFLOP/s,
               peak memory (the worker's resident set, plus its engine process's where it has
               one: wasm-v8's Node; what the engine allocated),
               final-loss parity between backends and against the reference (runner/series.py);
               one CSV row per (preset, backend), written and flushed as soon as it is known
This module is the run over the folder: what it keeps (--resume), the reference, the estimate,
the rows and steps written as each measurement ends.
The step count is global (--steps, default 15) and never varies per preset; a slow preset
gets a time budget (--timeout), not fewer steps.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

from tinygpt_bench import corpus as corpus_mod
from tinygpt_bench import eta as eta_mod
from tinygpt_bench import engines, envinfo, model, preflight, protocol, results, runner
from tinygpt_bench.errors import UserError
from tinygpt_bench.presets import Preset
from tinygpt_bench.runner import Reporter, Settings

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


class Stopped(Exception):
    """curve stopped at its budget (Settings.stop_after_s) with repeats left to measure; the rows
    it wrote are in `rows`, the finished repeats of unfinished measurements in the folder."""

    def __init__(self, message: str, rows: list):
        super().__init__(message)
        self.rows = rows


def run_settings(s: Settings, corp: corpus_mod.Corpus, env: dict) -> dict:
    """What must be equal for two runs' numbers to be mixed (the --resume check)."""
    return {
        "steps": s.steps, "repeats": s.repeats, "seed": s.seed, "lr": s.lr,
        "corpus_sha256": corp.sha256, **engines.fingerprint(dict(s.options)),
        "cpu_model": env.get("cpu_model"), "cpu_usable_cores": env.get("cpu_usable_cores"),
        "hostname": env.get("hostname"), "gpus": results.gpu_names(env), **engines.digests(),
    }


def _reference_losses(work: protocol.Work, s: Settings) -> tuple[list[float] | None, str]:
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


def _preflight_refusal(preset: Preset, backend: str, s: Settings) -> str:
    """The preflight for one measurement: '' where it fits (or where the engine cannot plan
    here: then its own create stage says why), else what cannot fit and the fix."""
    st = preflight.preflight(preset, backend, s.options_for(backend))
    if st.ok or "step_bytes" not in (st.detail or {}):
        return ""
    return f"{st.error}. {st.meaning}"


def step_rows(preset: str, backend: str, r: int, rep: runner.Repeat) -> list[dict]:
    """steps.csv's rows of one repeat (the run's id filled in when they are written)."""
    return [{"run_id": "", "preset": preset, "backend": backend, "repeat": r, "step": st.step, "ms": st.ms,
             "loss": st.loss} for st in rep.steps]


class _Run:
    """One curve run: its folder (the writer and what it decided to keep), its record, its
    estimate, and what it measured so far. run() drives it preset by preset."""

    def __init__(self, s: Settings, reporter: Reporter):
        self.s, self.reporter = s, reporter
        self.corp = corpus_mod.load(s.corpus)
        self.env = envinfo.collect_all()
        settings = run_settings(s, self.corp, self.env)
        self.run_id = f"{self.env['timestamp']}-{os.getpid()}"
        record = {
            "format_version": results.FORMAT_VERSION, "run_id": self.run_id, "settings": settings,
            "settings_id": results.settings_id(settings), "presets": [p.name for p in s.presets],
            "backends": list(s.backends), "corpus": self.corp.describe(), "environment": self.env,
            "backend_descriptions": {},
        }
        # what the folder holds is decided first (results.resume: keep, measure or refuse, nothing
        # written before): resuming, the artifacts of engines this call does not run (a kernel
        # edited since the folder's WebGPU rows, while this call adds CPU engines) may differ:
        # those rows carry their digests; a preset is the same measurement only with the same shape
        shapes = {p.name: results.shape_id(p.layers, p.d_model, p.heads, p.ctx, p.batch) for p in s.presets}
        self.writer = results.ResultWriter(s.out, record, s.resume,
                                           frozenset(engines.artifacts_not_run_by(list(s.backends))), shapes)
        self.record = self.writer.record  # the folder's record and this run's, merged (the writer's copy)
        self.done = self.writer.decision.keep
        self.rows: list[results.Measurement] = []
        self.t0 = time.perf_counter()
        self.deadline = None if s.stop_after_s is None else self.t0 + s.stop_after_s
        self.stopped = ""  # the repeat the budget left unstarted
        self.harness: list[float] = []  # every repeat's harness seconds
        self.steps_s = 0.0  # the timed steps of every repeat
        self.server_ready = False
        self.rc = runner.RowContext(s.steps, s.repeats, s.seed, s.lr, self.corp, self.env, self.run_id,
                                    self.record["settings_id"])

    def start(self) -> None:
        """The estimate and the machine's load, said up front; the fork server started."""
        s, env = self.s, self.env
        self.eta = _eta_for(s, self.done, env)
        self.load0 = eta_mod.cpu_times()
        self.record["machine_load"] = {"start": eta_mod.load_state(env.get("cpu_usable_cores") or 1)}
        busy = eta_mod.busy_warning(self.record["machine_load"]["start"], before_run=True)
        if busy and self.eta.total:  # (nothing to measure: nothing a busy machine could slow)
            self.reporter.note(busy)
        left = self.eta.left_s()
        if self.eta.total:
            self.reporter.note(
                f"estimate: about {eta_mod.clock(left)} for {self.eta.total} repeats (from "
                f"{'; '.join(self.eta.prior_sources) or 'this machine'}; refined as repeats finish)"
                if left is not None else
                f"{self.eta.total} repeats to run; the time left is shown once every backend has run once "
                "(no earlier run of them on this machine)")
        runner.worker.start_server(s.backends)  # it imports while this process makes the first preset's work
        self.prior = results.read_measurements([s.out]) if self.done else None

    def preset(self, preset: Preset) -> None:
        """Every backend's repeats on one preset, then their rows."""
        todo = [b for b in self.s.backends if (preset.name, b) not in self.done]
        if not todo:
            self.reporter.note(f"{preset.name}: already measured in {self.s.out}, skipped (--resume)")
            return
        self.reporter.preset_start(preset, len(todo))
        work = protocol.prepare(preset, self.corp, self.s.steps, self.s.seed)
        series = {b: runner.Series() for b in todo}
        for b in todo:  # what cannot fit is refused before anything starts
            refusal = _preflight_refusal(preset, b, self.s)
            if refusal:
                series[b].fail("failed", "preflight", refusal)
                self.eta.dropped(preset.name, b)
        ref, ref_error = _reference_losses(work, self.s)
        if ref_error:
            self.reporter.note(f"{preset.name}: {ref_error}; parity against float64 is unknown")
        measured, kept = self._kept(preset, work, series)
        if not self.server_ready and any(x.ok for x in series.values()):
            runner.worker.wait_for_server(self.s.backends)
            self.server_ready = True
        self._repeats(preset, work, series, measured, kept)
        self._commit(preset, series, measured, kept, ref, ref_error)
        self.record["machine_load"]["end"] = eta_mod.load_state(self.env.get("cpu_usable_cores") or 1, self.load0)
        self.writer.environment(self.record)

    def _kept(self, preset: Preset, work, series: dict) -> tuple[dict, dict]:
        """The repeats an interrupted run finished (--resume), taken up rather than measured again:
        (each backend's step rows so far, its repeats done)."""
        measured = {b: [] for b in series}
        kept = {b: 0 for b in series}
        for b, x in series.items():
            if not (self.s.resume and x.ok):
                continue
            got = self.writer.load_repeats(preset.name, b, self.record["settings_id"], work.digest)
            if got:
                series[b] = runner.Series(**got["acc"])
                measured[b], kept[b] = got["steps"], got["repeats"]
                self.eta.skip(preset.name, b, got["repeats"])
                self.reporter.note(f"{preset.name}/{b}: {got['repeats']} of {self.s.repeats} repeats kept from an "
                                   "interrupted run, measuring the rest")
        return measured, kept

    def _repeats(self, preset: Preset, work, series: dict, measured: dict, kept: dict) -> None:
        """The preset's repeats in the schedule's order, each kept in the folder as it ends."""
        s, rep_ = self.s, self.reporter
        schedule = runner.Schedule(preset.name, list(series), s.repeats, kept, self.deadline)
        with protocol.handed_over(work) as handed:  # the weights written once for every worker
            for r, b in schedule(series):
                rep_.run_progress(self.eta.line())
                rep_.measurement_start(preset.name, b, r, s.repeats, s.steps)
                rep = runner.measure(runner.job(b, handed, s), s.backends, s.steps, s.timeout_s,
                                     lambda st, b=b: rep_.step(preset.name, b, st), rep_.note)
                series[b].add(rep)
                measured[b].extend(step_rows(preset.name, b, r, rep))
                if not rep.ok:
                    self.eta.dropped(preset.name, b)
                    continue
                self.eta.repeat_done(preset.name, b, rep.wall_s, [st.ms for st in rep.steps])
                self.writer.save_repeats(preset.name, b, {
                    "settings_id": self.record["settings_id"], "work_digest": work.digest, "repeats": r,
                    "acc": dataclasses.asdict(series[b]), "steps": measured[b]})
        self.stopped = schedule.stopped

    def _finals(self, preset: Preset, series: dict) -> dict[str, float]:
        """Each backend's final loss on the preset: this run's, and the folder's earlier rows'."""
        finals = {b: x.final_loss for b, x in series.items() if x.final_loss is not None}
        if self.prior is not None:
            for _, pr in self.prior[(self.prior.preset == preset.name) & (self.prior.status == "ok")].iterrows():
                if pr.backend not in finals and not math.isnan(pr.final_loss):
                    finals[pr.backend] = float(pr.final_loss)
        return finals

    def _commit(self, preset: Preset, series: dict, measured: dict, kept: dict, ref, ref_error: str) -> None:
        """Each finished measurement's row and steps, written together."""
        finals = self._finals(preset, series)
        for b, x in series.items():
            if x.ok and len(x.timelines) < self.s.repeats:
                continue  # stopped at the budget: its finished repeats stay kept for --resume
            m = runner.row(b, preset, x, self.rc, finals, ref)
            if ref_error:
                m = dataclasses.replace(m, reference=f"failed: {ref_error}")
            steps = [results.Step(**{**st, "run_id": self.run_id}) for st in measured[b]]
            self.record["backend_descriptions"].setdefault(b, x.describe)
            self.writer.commit(m, steps)  # its steps and its row, together
            self.writer.drop_repeats(preset.name, b)
            self.rows.append(m)
            self.reporter.measured(m)
            # the run's figure: this call's repeats only, not those kept from an interrupted one
            self.harness.extend(x.harness[kept[b]:])
            self.steps_s += sum(st.ms for st in steps if st.repeat > kept[b]) / 1e3

    def finish(self) -> None:
        self.eta.save()
        busy = eta_mod.busy_warning(self.record["machine_load"].get("end", {}), before_run=False)
        if busy and self.eta.total:
            self.reporter.note(busy)
        if self.harness:
            self.reporter.note(runner.harness_note(self.harness, time.perf_counter() - self.t0, self.steps_s))
        if self.stopped:
            raise Stopped(f"stopped at the budget: {self.stopped}; every finished measurement and repeat is in "
                          f"{self.s.out}/: carry on with --resume", self.rows)


def run(s: Settings, reporter: Reporter) -> list[results.Measurement]:
    """Measure every (preset, backend); returns the rows written."""
    r = _Run(s, reporter)
    try:
        r.start()
        for preset in s.presets:
            r.preset(preset)
            if r.stopped:
                break
    finally:
        r.writer.close()
    r.finish()
    return r.rows


def _eta_for(s: Settings, done: set, env: dict) -> eta_mod.Eta:
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
