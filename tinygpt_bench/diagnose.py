"""`diagnose PRESET --backend B`: find out WHY a preset fails, instead of retrying it.

Stages, in order; the first failure stops the walk and is reported with the error
verbatim and a plain sentence on what it means and what would fix it:

  preflight   bytes the preset needs (weights, grads, Adam moments, activations; each
              engine buffer where the engine can say) against host RAM, the wasm memory
              maximum and the adapter's buffer and binding limits, before allocating
  create      module compile and instantiate / adapter and device
  (engine)    the engine's own start-up stages, each timed, where it has them (wasm: compile,
              instantiate, workers; wasm-v8: the Node host first; wasm-chrome: launch, page,
              isolation, worker first)
  load        allocate and upload; memory growth events (from, to, threads running)
  growth      where the engine offers it (wasm): memory grown inside a parallel region, each
              thread's view of the size after it, every thread touching the new memory
  step        one whole training step (forward, loss, backward, clip, AdamW)
  scan        NaN/Inf scan of the gradients and weights, with max |value|
  timed       one repeat of the protocol's steps as curve measures it (the runner: a worker
              process, a fresh load), against --timeout as curve gives a measurement
  parity      one step on a shrunk copy of the preset against the float64 reference
  kernels     per-kernel time breakdown, where the engine can time its kernels

Backends declare optional capabilities (engines/base.py): plan(), limits(), events(),
profile(). A report (Markdown and JSON) is written beside the results.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tinygpt_bench import corpus as corpus_mod
from tinygpt_bench import engines, envinfo, markdown, model, protocol, results, runner
from tinygpt_bench.errors import UserError
from tinygpt_bench.preflight import Stage, meaning_of, preflight  # noqa: F401 - diagnose's names, too
from tinygpt_bench.units import fmt_bytes, parse_bytes
from tinygpt_bench.presets import Preset

# the harness's own stages, in order; an engine may add its own between them (Backend.stages(),
# growth_probe())
STAGES = ("preflight", "create", "load", "step", "scan", "timed", "parity", "kernels")
LOSS_TOLERANCE = 1e-4
GRAD_TOLERANCE = 1e-3

@dataclass
class Diagnosis:
    preset: str
    backend: str
    options: dict
    stages: list[Stage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.stages)

    def harness_stages(self) -> list[str]:
        """The names of the harness's own stages walked (the engine's left out)."""
        return [s.name for s in self.stages if s.name in STAGES]

    def to_markdown(self) -> str:
        lines = [f"# diagnose {self.preset} on {self.backend}", "", f"options: {json.dumps(self.options)}", "",
                 markdown.table(["stage", "result", "figure"],
                                [[s.name, "pass" if s.ok else "FAIL", s.figure] for s in self.stages])]
        for s in self.stages:
            if not s.ok:
                lines += ["", f"## {s.name} failed", "", "```", s.error, "```", "", s.meaning]
            if s.name == "kernels" and s.detail.get("kernels"):
                total = sum(s.detail["kernels"].values()) or 1.0
                rows = [[k, f"{ms:.3f}", f"{ms / total:.1%}"]
                        for k, ms in sorted(s.detail["kernels"].items(), key=lambda kv: -kv[1])]
                lines += ["", "## per-kernel time of one step", "", markdown.table(["kernel", "ms", "share"], rows)]
            if s.name == "load" and s.detail.get("events"):
                lines += ["", "## memory events", ""] + [f"- {e}" for e in s.detail["events"]]
        return "\n".join(lines) + "\n"

    def record(self, environment: dict) -> results.Diagnosis:
        """The report as the result record diagnose-PRESET-BACKEND.json holds."""
        return results.Diagnosis(preset=self.preset, backend=self.backend,
                                 kernel_timing=engines.info(self.backend).kernel_timing, options=self.options,
                                 ok=self.ok, stages=[asdict(s) for s in self.stages], environment=environment)


def run(preset: Preset, backend: str, options: dict, timeout_s: float | None = None, seed: int = 0,
        on_stage=None) -> Diagnosis:
    """Walk the stages; stop at the first failure."""
    d = Diagnosis(preset.name, backend, {k: v for k, v in options.items() if v is not None})

    def add(stage: Stage) -> bool:
        d.stages.append(stage)
        if on_stage:
            on_stage(stage)
        return stage.ok

    def fail(name: str, e: BaseException | str, detail: dict | None = None) -> bool:
        err = e if isinstance(e, str) else f"{type(e).__name__}: {e}"
        return add(Stage(name, False, "", err, meaning_of(name, err, backend), detail or {}))

    if not add(preflight(preset, backend, options)):
        return d
    corp = corpus_mod.synthetic()
    work = protocol.prepare(preset, corp, steps=2, seed=seed)
    t0 = time.perf_counter()
    try:
        be = protocol.create_backend(backend, preset, **options)
    except protocol.StageError as e:
        fail("create", e.error)
        return d
    try:
        try:
            desc = be.describe()
            limits = be.limits()
        except Exception as e:  # a browser backend starts its browser here: its failure is create's
            fail("create", e)
            return d
        add(Stage("create", True, f"{(time.perf_counter() - t0) * 1e3:.0f} ms; {desc.get('device', '')}",
                  detail={"describe": desc, "limits": limits}))
        for st in be.stages(preset):
            figure = (f"{st['ms']:.0f} ms; " if st.get("ms") is not None else "") + st.get("figure", "")
            if not st["ok"]:
                fail(st["name"], st["error"])
                return d
            add(Stage(st["name"], True, figure, detail={"ms": st.get("ms")}))
        t0 = time.perf_counter()
        try:
            be.load(preset, work.params.copy())
        except Exception as e:
            fail("load", e, {"events": be.events()})
            return d
        events = be.events()
        mem = be.memory_bytes()
        add(Stage("load", True, f"{(time.perf_counter() - t0) * 1e3:.0f} ms; allocated {fmt_bytes(mem)}; "
                  f"{len(events)} memory growth event(s)", detail={"events": events, "memory_bytes": mem}))
        if not growth(be, add, fail):
            return d
        t0 = time.perf_counter()
        try:
            loss = float(be.step(work.batches[0]))
        except Exception as e:
            fail("step", e, {"events": be.events()})
            return d
        ms = (time.perf_counter() - t0) * 1e3
        if not math.isfinite(loss):
            fail("step", f"loss is {loss} (not finite) after step 1")
            return d
        add(Stage("step", True, f"loss {loss:.4f} (ln 256 = {math.log(256):.4f}); {ms:.1f} ms cold"))
        try:
            g, w = be.gradients(), be.parameters()
        except Exception as e:
            fail("scan", e)
            return d
        bad_g, bad_w = int((~np.isfinite(g)).sum()), int((~np.isfinite(w)).sum())
        fig = f"max |grad| {np.nanmax(np.abs(g)):.3g}, max |weight| {np.nanmax(np.abs(w)):.3g}"
        if bad_g or bad_w:
            lay = model.Layout(preset)
            where = [s.name for s in lay.specs if not np.isfinite(g[s.offset:s.offset + s.size]).all()
                     or not np.isfinite(w[s.offset:s.offset + s.size]).all()]
            fail("scan", f"{bad_g} non-finite gradient and {bad_w} non-finite weight values (not finite) in "
                         f"{', '.join(where)}")
            return d
        add(Stage("scan", True, fig))
        try:
            be.step(work.batches[1])  # warm, as the timed steps left it before: then its kernels
            kernels = be.profile(work.batches[0])  # {} where the engine cannot time its kernels
        except Exception as e:
            kernels = {"error": str(e)}
    finally:
        be.close()  # before the timed stage's worker opens the engine again
    if not add(timed(preset, backend, options, timeout_s, seed)):
        return d
    if not add(parity(preset, backend, options, seed)):
        return d
    if isinstance(kernels, dict) and "error" not in kernels and kernels:
        total = sum(kernels.values())
        top = max(kernels, key=kernels.get)
        add(Stage("kernels", True, f"{len(kernels)} kernels, {total:.2f} ms in all; most: {top} "
                  f"{kernels[top]:.2f} ms", detail={"kernels": kernels}))
    else:
        add(Stage("kernels", True, "this engine offers no per-kernel timing"
                  + (f" ({kernels['error']})" if isinstance(kernels, dict) and "error" in kernels else ""),
                  detail={"kernels": {}}))
    return d


def timed(preset: Preset, backend: str, options: dict, timeout_s: float | None, seed: int) -> Stage:
    """One repeat of the protocol's steps exactly as curve measures each (runner.measure_one: a
    worker process, a fresh load, the engine's own step clock where it has one), against --timeout
    as curve gives it to a measurement: so diagnose, run and curve say the same ms/step."""
    s = runner.Settings(presets=(preset,), backends=(backend,), steps=protocol.DEFAULT_STEPS, repeats=1,
                        timeout_s=timeout_s, seed=seed,
                        options={k: v for k, v in options.items() if v is not None})
    rep = runner.measure_one(s)
    if not rep.ok:
        err = rep.error + (f" (--timeout {timeout_s:g} s for the {s.steps} steps, as curve gives a measurement)"
                           if rep.status == "timeout" else "")
        return Stage("timed", False, "", f"{rep.stage}: {err}", meaning_of("timed", err, backend))
    steady = [st.ms for st in rep.steps[1:]] or [rep.steps[0].ms]
    return Stage("timed", True, f"median {float(np.median(steady)):.2f} ms/step over steps 2..{len(rep.steps)} of one "
                 f"repeat as curve measures it (cold step {rep.steps[0].ms:.1f} ms)",
                 detail={"median_ms": float(np.median(steady)), "cold_ms": rep.steps[0].ms,
                         "steps_ms": [st.ms for st in rep.steps], "harness_s": rep.harness_s})


def growth(be, add, fail) -> bool:
    """The growth stage, where the engine offers a growth probe; False when it failed."""
    t0 = time.perf_counter()
    g = be.growth_probe()
    if g is None:
        return True
    if not g["ok"]:
        return fail("growth", g["error"], g)
    if g.get("skipped"):
        return add(Stage("growth", True, f"not probed: {g['skipped']}", detail=g))
    views = g.get("views", {})
    stale = sorted(t for t, v in views.items() if v != "new")
    seen = ", ".join(f"thread {t}: {v}" for t, v in sorted(views.items()))
    running = g.get("worker_threads_running")
    figure = (f"{(time.perf_counter() - t0) * 1e3:.0f} ms; {fmt_bytes(g['from_bytes'])} -> {fmt_bytes(g['to_bytes'])} "
              f"(+{fmt_bytes(g['to_bytes'] - g['from_bytes'])}) "
              f"inside a parallel region with {running} of {g['threads'] - 1} worker thread(s) running; every thread "
              f"touched the new memory; memory.size right after: {seen}")
    if stale:
        figure += (f" ({len(stale)} thread(s) still saw the old size: allowed, and the module never relies on "
                   "another thread's growth being visible through memory.size)")
    return add(Stage("growth", True, figure, detail=g))


def parity(preset: Preset, backend: str, options: dict, seed: int = 0) -> Stage:
    small = preset.shrunk()
    work = protocol.prepare(small, corpus_mod.synthetic(n_bytes=100_000), steps=1, seed=seed)
    loss64, grad64 = engines.oracle_loss_and_grad(small, work.params.astype(np.float64), work.batches[0])
    try:
        be = protocol.create_backend(backend, small, **options)
        try:
            be.keep_grads = True
            be.load(small, work.params.copy())
            loss = float(be.step(work.batches[0]))
            grad = be.gradients().astype(np.float64)
        finally:
            be.close()
    except Exception as e:
        err = e.error if isinstance(e, protocol.StageError) else f"{type(e).__name__}: {e}"
        return Stage("parity", False, "", err, meaning_of("parity", err, backend))
    loss_err = abs(loss - loss64) / abs(loss64)
    grad_err = float(np.linalg.norm(grad - grad64) / np.linalg.norm(grad64))
    fig = (f"shrunk preset (L{small.layers} C{small.d_model} H{small.heads} T{small.ctx} B{small.batch}): "
           f"loss rel err {loss_err:.1e}, gradient rel err {grad_err:.1e}")
    if loss_err > LOSS_TOLERANCE or grad_err > GRAD_TOLERANCE or not math.isfinite(loss_err + grad_err):
        return Stage("parity", False, fig, f"parity failed: loss rel err {loss_err:.3e} (tolerance {LOSS_TOLERANCE}), "
                     f"gradient rel err {grad_err:.3e} (tolerance {GRAD_TOLERANCE})",
                     "The engine computes a different function from the reference: a kernel bug, not a size limit.")
    return Stage("parity", True, fig)


def check_out(out_dir: Path) -> None:
    """Refuse an --out the report cannot be written into, before anything is measured."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a folder; give a folder for the diagnose report")


def write_report(d: Diagnosis, out_dir: Path) -> tuple[Path, Path]:
    """diagnose-PRESET-BACKEND.md and .json in out_dir (results.write_diagnosis)."""
    return results.write_diagnosis(Path(out_dir), d.record(envinfo.collect_all(adapters=False)), d.to_markdown())
