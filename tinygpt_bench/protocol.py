"""The measurement protocol's core: identical work for every backend, timed step by step.

`prepare` makes the work once on the host (initial weights from the seed, the batch
sequence from the corpus); `train` feeds it to a loaded backend and times each step on
the host clock (a backend's step() is synchronous), or, for an engine that runs in another
process and reports `last_step_ns` (wasm-v8: process.hrtime around train_step in V8), on
that engine's own clock, so the messages to the process are not counted. Stages are
named, so a failure says where it happened: create, load, step N.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tinygpt_bench import engines, faults
from tinygpt_bench.engines.base import DEFAULT_LR, Backend
from tinygpt_bench.corpus import Corpus, sample_batches
from tinygpt_bench.errors import UserError
from tinygpt_bench.model import Layout
from tinygpt_bench.presets import Preset

DEFAULT_STEPS = 15
DEFAULT_SEED = 0


class StageError(Exception):
    """A backend failed at a named stage; the message is one line: preset, backend, stage, error."""

    def __init__(self, preset: str, backend: str, stage: str, error: BaseException | str):
        self.preset, self.backend, self.stage = preset, backend, stage
        self.error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        super().__init__(f"{backend} failed on preset '{preset}' at stage '{stage}': {self.error}")


@dataclass(frozen=True)
class Work:
    """What every backend gets, identical: the preset, initial weights and batches."""

    preset: Preset
    params: np.ndarray  # (n_params,) fp32
    batches: list[np.ndarray]  # steps x (B, T+1) int32
    seed: int

    @functools.cached_property
    def digest(self) -> str:
        return work_digest(self)


def work_digest(work: Work) -> str:
    """sha256 of the initial weights and every batch: proof that two processes got the same work."""
    import hashlib

    h = hashlib.sha256(work.params.tobytes())
    for b in work.batches:
        h.update(b.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class StepTime:
    step: int  # 1-based
    ms: float
    loss: float


def check_steps(steps: int) -> int:
    if steps < 1:
        raise UserError(f"--steps {steps} is not a positive number of steps; use --steps 15 (the protocol's default)")
    return steps


def random_batches(preset: Preset, steps: int, rng) -> list:
    """`steps` batches of uniformly random bytes, (batch, ctx + 1) int32: inputs for the
    development benchmarks, which time the engines and need no corpus."""
    return [rng.integers(0, 256, size=(preset.batch, preset.ctx + 1)).astype(np.int32) for _ in range(steps)]


def prepare(preset: Preset, corpus: Corpus, steps: int = DEFAULT_STEPS, seed: int = DEFAULT_SEED) -> Work:
    check_steps(steps)
    batches = sample_batches(corpus, preset.batch, preset.ctx, steps, seed)
    return Work(preset, Layout(preset).init(seed), batches, seed)


def create_backend(name: str, preset: Preset, **options) -> Backend:
    """A backend with its declared options (threads, adapter, ...: engines/<name>/__init__.py);
    one it does not declare is a UserError, never dropped. The fault TINYGPT_BENCH_FAULT asks
    of it is injected: 'slow' by the harness, the others by the engine."""
    try:
        _, spec = engines.spec(name)  # an unknown name raises the UserError naming the choices
        fault = faults.for_backend(name, preset.name)
        engine_fault = fault if fault and fault not in faults.HARNESS_KINDS else None
        if engine_fault and not spec.faults:
            raise UserError(f"{faults.ENV}: backend '{name}' takes no injected faults; it has '{engine_fault}' asked of it")
        be = engines.create(name, **options, fault=engine_fault)
        if fault == "slow":
            be.injected_delay_s = faults.SLOW_S
        return be
    except UserError:
        raise
    except Exception as e:
        raise StageError(preset.name, name, "create", e) from e


def train(
    backend: Backend,
    work: Work,
    lr: float = DEFAULT_LR,
    on_step: Callable[[StepTime], None] | None = None,
) -> list[StepTime]:
    """Load the work's weights into `backend` and run every batch, timing each step."""
    name, preset = backend.name, work.preset.name
    try:
        backend.load(work.preset, work.params.copy())
    except Exception as e:
        raise StageError(preset, name, "load", e) from e
    out = []
    for i, batch in enumerate(work.batches, start=1):
        t0 = time.perf_counter()
        try:
            loss = float(backend.step(batch, lr))
            if backend.injected_delay_s:
                time.sleep(backend.injected_delay_s)  # fault injection: a step past its budget
        except Exception as e:
            raise StageError(preset, name, f"step {i}", e) from e
        ms = (time.perf_counter() - t0) * 1e3
        if backend.last_step_ns is not None:  # an engine in another process times the step where it runs (wasm-v8)
            ms = backend.last_step_ns / 1e6 + backend.injected_delay_s * 1e3
        if not math.isfinite(loss):
            raise StageError(preset, name, f"step {i}", f"loss is {loss} (not finite)")
        st = StepTime(i, ms, loss)
        out.append(st)
        if on_step:
            on_step(st)
    return out
