"""The repeats of one measurement (preset, backend) aggregated, and the row they make: the cold
first step apart from steady state (steps 2..N over all repeats), median, quartiles, MAD
outliers (flagged, never dropped), tokens/s, GFLOP/s, peak memory, final-loss parity between
backends and against the float64 reference."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from tinygpt_bench import engines, envinfo, model, results, stats
from tinygpt_bench.runner.repeat import Repeat

PARITY_TOLERANCE = stats.PARITY_TOLERANCE  # relative difference of the final loss
# A repeat of one measurement may take longer than the one before: on the lent GPU machine's 16
# shared cores, behemoth's wasm repeats took 173 and 196 s (and 214 s in a later run on the same
# lease), torch-cpu's 135 s and then more than 145 s (results/h200/NOTES.md, session 8). A budget
# starts a repeat only where the longest of its backend's repeats, this much longer, still ends
# within it.
REPEAT_MARGIN = 1.25
# the columns of a row taken as they are from the backend's describe()
DESCRIBED = ("device", "device_type", "software_adapter", "adapter_vendor", "adapter_driver", "adapter_api",
             "threads", "runtime", "runtime_settings", "module_sha256", "kernels_sha256")


@dataclass
class Series:
    """Everything measured of one (preset, backend) over its repeats. Its fields are what an
    interrupted run keeps of finished repeats (results' repeats-in-progress: dataclasses.asdict,
    and Series(**kept) to take them up), so they keep their names."""

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

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def fail(self, status: str, stage: str, error: str) -> None:
        self.status, self.stage, self.error = status, stage, error

    def add(self, rep: Repeat) -> None:
        self.describe = {**self.describe, **rep.describe}
        if not rep.ok:
            self.fail(rep.status, rep.stage, rep.error)
            return
        self.memory = max(filter(None, (self.memory, rep.memory_bytes)), default=None)
        self.peak_rss = max(filter(None, (self.peak_rss, rep.peak_rss)), default=None)
        self.cold.append(rep.steps[0].ms)
        self.steady.extend(st.ms for st in rep.steps[1:])
        self.losses.append([st.loss for st in rep.steps])
        self.harness.append(rep.harness_s)
        self.timelines.append(rep.timeline)

    def repeat_estimate(self) -> float:
        """Seconds the next repeat may take: the longest of the finished ones (kept ones from an
        interrupted run included) times REPEAT_MARGIN; 0 before the first."""
        return max((sum(t.values()) for t in self.timelines), default=0.0) * REPEAT_MARGIN

    @property
    def final_loss(self) -> float | None:
        return self.losses[0][-1] if self.ok and self.losses else None


@dataclass(frozen=True)
class RowContext:
    """What every row of a run carries beside its series: the run's settings and identity."""

    steps: int
    repeats: int
    seed: int
    lr: float
    corpus: object  # corpus.Corpus
    env: dict
    run_id: str
    settings_id: str = ""


def row(name: str, preset, series: Series, rc: RowContext, finals: dict[str, float],
        ref: list[float] | None) -> results.Measurement:
    """The measurement's row: its series summarised, its final loss against the other backends'
    (`finals`) and the float64 reference's (`ref`)."""
    r = _identity(name, preset, series, rc, ref)
    r.update(_timing(preset, series, rc.steps))
    if series.ok and "final_loss" in r:
        r.update(_parity(name, r["final_loss"], series, finals, ref))
    return results.Measurement(**r)


def _identity(name: str, p, series: Series, rc: RowContext, ref) -> dict:
    d, info = series.describe, engines.info(name)
    r = {
        "run_id": rc.run_id, "timestamp": envinfo.now(),
        "preset": p.name, "backend": name, "status": series.status, "stage": series.stage, "error": series.error,
        "layers": p.layers, "d_model": p.d_model, "heads": p.heads, "ctx": p.ctx, "batch": p.batch,
        "params": model.param_count(p), "flops_per_step": model.flops_per_step(p)["total"],
        "steps": rc.steps, "repeats": rc.repeats, "seed": rc.seed, "lr": rc.lr,
        "corpus": rc.corpus.name, "corpus_sha256": rc.corpus.sha256,
        "peak_rss_bytes": series.peak_rss, "engine_memory_bytes": series.memory,
        "harness_s": statistics.median(series.harness) if series.harness else None,
        "reference": "reference (numpy float64)" if ref else "",
        "cpu_model": rc.env.get("cpu_model"), "git_commit": rc.env.get("git_commit"),
        "settings_id": rc.settings_id, "hardware": info.hardware, "native_peer": info.native_peer,
        "relaxed_simd": d.get("relaxed_simd"),
    }
    r.update({k: d[k] for k in DESCRIBED if k in d})
    return r


def _timing(p, series: Series, steps: int) -> dict:
    samples = series.steady or series.cold
    if not (series.cold and samples):
        return {}
    sm, flops = stats.summarize(samples), model.flops_per_step(p)["total"]
    r = dict(cold_ms=float(sorted(series.cold)[len(series.cold) // 2]), median_ms=sm.median, mean_ms=sm.mean,
             min_ms=sm.min, q1_ms=sm.q1, q3_ms=sm.q3, max_ms=sm.max, mad_ms=sm.mad, n_samples=sm.n,
             n_outliers=sm.outliers, tokens_per_s=p.batch * p.ctx / sm.median * 1e3,
             gflop_per_s=flops / sm.median / 1e6, first_loss=series.losses[0][0])
    if len(series.losses[0]) == steps:
        r["final_loss"] = series.losses[0][-1]
    return r


def _parity(name: str, final: float, series: Series, finals: dict[str, float], ref) -> dict:
    r = {}
    others = [v for k, v in finals.items() if k != name]
    if others:
        r["loss_rel_diff_backends"] = max(stats.rel_diff(final, o) for o in others)
    if ref:
        r["loss_rel_diff_reference"] = stats.rel_diff(final, ref[-1])
    known = [x for x in (r.get("loss_rel_diff_backends"), r.get("loss_rel_diff_reference")) if x is not None]
    r["parity_ok"] = all(x <= PARITY_TOLERANCE for x in known) if known else None
    first = series.losses[0]
    if len(series.losses) > 1 and any(l != first for l in series.losses[1:]):
        # a nondeterministic engine (atomics, threaded reductions) is noted; only a spread past
        # the parity tolerance fails parity
        spread = max(stats.rel_diff(a, b) for rep in series.losses[1:] for a, b in zip(rep, first))
        r["error"] = f"losses differ between repeats of the same work (max rel {spread:.1e})"
        if spread > PARITY_TOLERANCE:
            r["parity_ok"] = False
    return r


def harness_note(harness: list[float], run_s: float, steps_s: float) -> str:
    """The run's harness time: per measurement (its worker's wall time beyond its timed steps),
    and the whole run's time beyond the steps shared out over the measurements (with each
    preset's work, preflight and float64 reference, and the result files)."""
    n = len(harness)
    return (f"harness time: {statistics.median(harness):.2f} s per measurement beyond its steps (median of {n}, "
            f"max {max(harness):.2f} s); the whole run {run_s:.1f} s, steps {steps_s:.1f} s: "
            f"{(run_s - steps_s) / n:.2f} s per measurement with the per-preset work and the float64 reference")
