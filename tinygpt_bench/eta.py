"""How long a curve run has left (issue 27): an estimate from the FLOP model and the repeats
finished so far, refined as they finish, and what makes a machine's numbers less trustworthy
(load from other processes, CPU steal by a hypervisor).

A repeat of backend b on preset p takes its harness time h_b (start a worker, load; measured
as the repeat's wall time beyond its timed steps) plus `steps` steps of t_b(p) = overhead_b +
FLOPs(p) / throughput_b, the chart's model (stats.fit_overhead_throughput), fitted on b's
finished repeats. With one preset finished, a larger one is scaled by its FLOPs (no overhead:
an over-estimate while the small preset's time is mostly overhead). A backend with no finished
repeat takes the model this machine's earlier runs left in the cache (same CPU, cores and
backend), else it is unknown and so is the ETA until its first repeat ends: the backends of a
preset are measured in turn, so that takes the first preset's repeats, a few seconds.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from tinygpt_bench import stats

CACHE_FILE = "eta-models.json"


@dataclass
class _Model:
    points: list[tuple[float, float]] = field(default_factory=list)  # (FLOPs a step, median ms a step)
    harness_s: list[float] = field(default_factory=list)
    prior: dict | None = None  # {overhead_ms, flop_per_ms, harness_s} from an earlier run on this machine

    def step_ms(self, flops: float) -> float | None:
        if len(self.points) >= 2 and len({f for f, _ in self.points}) >= 2:
            fit = stats.fit_overhead_throughput([f for f, _ in self.points], [m for _, m in self.points])
            if fit is not None and fit[1] > 0:
                return fit[0] + flops / fit[1]
        if self.points:  # one preset: scale by FLOPs, never below what was measured
            f0, m0 = max(self.points)
            return m0 * max(1.0, flops / f0)
        if self.prior:
            return self.prior["overhead_ms"] + flops / self.prior["flop_per_ms"]
        return None

    def harness(self) -> float | None:
        if self.harness_s:
            return statistics.median(self.harness_s)
        return self.prior["harness_s"] if self.prior else None


class Eta:
    """The run's remaining time: schedule() once, then repeat_done() / dropped() as it goes."""

    def __init__(self, steps: int, machine_key: str = "", cache_dir: str | None = None):
        self.steps, self.machine_key = steps, machine_key
        self.cache = Path(cache_dir) / CACHE_FILE if cache_dir else None
        self.models: dict[str, _Model] = {}
        self.pending: dict[tuple[str, str], list] = {}  # (preset, backend) -> [flops, repeats left]
        self.t0 = time.perf_counter()
        self.total = 0
        self.finished = 0
        self.failed: set[str] = set()  # backends with a dropped measurement
        self.prior_sources: list[str] = []  # where the up-front models came from

    def schedule(self, items: list[tuple[str, float, str, int]], fallback: dict | None = None) -> None:
        """(preset, FLOPs a step, backend, repeats to run) of the whole run. fallback: models
        {backend: {overhead_ms, flop_per_ms, harness_s, source}} for backends this machine's
        cache has none of (reference_priors: a committed run on a machine of the same size)."""
        priors = {**(fallback or {}), **self._load_priors()}
        self.prior_sources = sorted({p.get("source", "this machine's earlier runs")
                                     for b, p in priors.items() if any(b == x[2] for x in items)})
        for preset, flops, backend, repeats in items:
            if repeats > 0:
                self.pending[(preset, backend)] = [flops, repeats]
                self.total += repeats
            self.models.setdefault(backend, _Model(prior=priors.get(backend)))

    def repeat_done(self, preset: str, backend: str, wall_s: float, step_ms: list[float]) -> None:
        key = (preset, backend)
        if key in self.pending:
            flops = self.pending[key][0]
            self.pending[key][1] -= 1
            if self.pending[key][1] <= 0:
                del self.pending[key]
            m = self.models.setdefault(backend, _Model())
            steady = step_ms[1:] or step_ms
            if steady:
                med = statistics.median(steady)
                m.points = [p for p in m.points if p[0] != flops] + [(flops, med)]
                m.harness_s.append(max(0.0, wall_s - sum(step_ms) / 1e3))
        self.finished += 1

    def skip(self, preset: str, backend: str, repeats: int) -> None:
        """Repeats a killed run finished (--resume keeps them): not run again."""
        key = (preset, backend)
        if key in self.pending:
            n = min(repeats, self.pending[key][1])
            self.pending[key][1] -= n
            self.total -= n
            if self.pending[key][1] <= 0:
                del self.pending[key]

    def dropped(self, preset: str, backend: str) -> None:
        """A measurement that will run no more repeats (failed, refused, stopped). A backend that
        failed before any repeat of it finished is likely to fail again and leaves no model: its
        later repeats are estimated at nothing rather than hiding the estimate of the others."""
        left = self.pending.pop((preset, backend), [0, 0])[1]
        self.total -= left
        self.failed.add(backend)

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.t0

    def left_s(self) -> float | None:
        """Seconds the pending repeats should take; None while a backend has no model yet."""
        total = 0.0
        for (preset, backend), (flops, repeats) in self.pending.items():
            m = self.models.get(backend)
            step, harness = (m.step_ms(flops), m.harness()) if m else (None, None)
            if step is None or harness is None:
                if backend in self.failed:
                    continue
                return None
            total += repeats * (harness + self.steps * step / 1e3)
        return total

    def line(self) -> str:
        """'repeat 5 of 36, 1:23 elapsed, about 3:10 left' (or 'left: after the first repeats')."""
        left = self.left_s()
        eta = f"about {clock(left)} left" if left is not None else "time left: known after each backend's first repeat"
        return f"repeat {min(self.finished + 1, self.total)} of {self.total}, {clock(self.elapsed_s())} elapsed, {eta}"

    # ---- the machine's models, kept for the next run's up-front estimate ----------------------
    def _load_priors(self) -> dict:
        if self.cache is None or not self.cache.is_file():
            return {}
        try:
            return json.loads(self.cache.read_text()).get(self.machine_key, {})
        except (OSError, ValueError, AttributeError):
            return {}

    def save(self) -> None:  # (the source of a prior is not saved: saved models are this machine's own)
        """This run's models into the cache, for the next run on this machine."""
        if self.cache is None:
            return
        out = {}
        for b, m in self.models.items():
            fit = stats.fit_overhead_throughput([f for f, _ in m.points], [x for _, x in m.points]) \
                if len({f for f, _ in m.points}) >= 2 else None
            if fit is not None and fit[1] > 0 and m.harness_s:
                out[b] = {"overhead_ms": fit[0], "flop_per_ms": fit[1], "harness_s": statistics.median(m.harness_s)}
        if not out:
            return
        try:
            data = json.loads(self.cache.read_text()) if self.cache.is_file() else {}
            if not isinstance(data, dict):
                data = {}
        except (OSError, ValueError):
            data = {}
        data[self.machine_key] = {**data.get(self.machine_key, {}), **out}
        try:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.cache)
        except OSError:
            pass  # an estimate is a convenience: a read-only cache costs the next run its up-front figure


def clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


# ---- is the machine busy? ---------------------------------------------------------------------
def cpu_times() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs since boot, from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def load_state(cores: int, since: tuple[int, int] | None = None) -> dict:
    """The machine's load now: the 1-minute load average against the usable cores, and the share
    of CPU time a hypervisor stole since `since` (cpu_times() at the start)."""
    out: dict = {"cores": cores}
    try:
        out["loadavg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    now = cpu_times()
    if now and since and now[1] > since[1]:
        out["steal_share"] = round((now[0] - since[0]) / (now[1] - since[1]), 4)
    return out


def busy_warning(state: dict, before_run: bool) -> str | None:
    """A line when the machine was not idle: other processes' load (only before the run starts:
    during it the run itself is the load), or a hypervisor stealing CPU time."""
    parts = []
    if before_run and state.get("loadavg_1m", 0) > 0.5 * state["cores"]:
        parts.append(f"load average {state['loadavg_1m']:.2f} on {state['cores']} cores before the run started")
    if state.get("steal_share", 0) > 0.05:
        parts.append(f"{state['steal_share']:.0%} of CPU time stolen by the hypervisor")
    if not parts:
        return None
    return "WARNING the machine was busy (" + "; ".join(parts) + "): timings will be slower and noisier than idle"


def reference_priors(folders: list[Path], cores: int, gpu: bool) -> dict:
    """Models {backend: {overhead_ms, flop_per_ms, harness_s, source}} from committed result
    folders (a checkout's results/*) measured on a machine with the same number of usable cores
    and the same kind of WebGPU adapter (CPU or GPU), the newest folder first for each backend:
    the up-front estimate of a first run on a new machine, which its own repeats then replace."""
    from tinygpt_bench import results

    out: dict = {}
    for folder in sorted(folders, key=lambda f: f.stat().st_mtime if f.exists() else 0, reverse=True):
        try:
            env = results.load_environment(folder / "environment.json").get("environment", {})
            df = results.read_measurements([folder], environment=False)
        except Exception:  # a folder that does not read is no prior
            continue
        if env.get("cpu_usable_cores") != cores or bool(env.get("adapters") and any(
                a.get("adapter_type") not in (None, "CPU") for a in env["adapters"])) != gpu:
            continue
        for backend, rows in df[df.status == "ok"].groupby("backend"):
            if backend in out or len(rows) < 2:
                continue
            fit = stats.fit_overhead_throughput(list(rows.flops_per_step), list(rows.median_ms))
            harness = [h for h in rows.harness_s if h == h] if "harness_s" in rows else []
            if fit is not None and fit[1] > 0:
                out[backend] = {"overhead_ms": fit[0], "flop_per_ms": fit[1],
                                "harness_s": statistics.median(harness) if harness else 0.5,
                                "source": f"{folder.name}, a committed run on a machine of {cores} cores"}
    return out
