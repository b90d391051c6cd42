"""The measurement protocol's core: identical work for every backend, timed step by step.

`prepare` makes the work once on the host (initial weights from the seed, the batch
sequence from the corpus); `train` feeds it to a loaded backend and times each step on
the host clock (a backend's step() is synchronous), or, for an engine that runs in another
process and reports `last_step_ns` (wasm-v8: process.hrtime around train_step in V8), on
that engine's own clock, so the messages to the process are not counted. Stages are
named, so a failure says where it happened: create, load, step N.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tinygpt_bench import engines, faults, scratch
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
    """What every backend gets, identical: the preset, initial weights and batches. `prepare`
    makes the arrays read-only: a backend copies what it changes (train hands it the weights
    themselves, not a copy)."""

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

    h = hashlib.sha256(memoryview(np.ascontiguousarray(work.params)).cast("B"))
    return _hash_batches(h, work.batches)


def batches_digest(batches: list[np.ndarray]) -> str:
    import hashlib

    return _hash_batches(hashlib.sha256(), batches)


def _hash_batches(h, batches: list[np.ndarray]) -> str:
    for b in batches:
        h.update(np.ascontiguousarray(b).tobytes())
    return h.hexdigest()


WORK_PREFIX = "tinygpt-bench-work-"  # scratch files of handed_over: tinygpt-bench-work-<pid>-<random>.f32


@dataclass(frozen=True)
class HandedWork:
    """A Work as it travels to a worker process (curve): the preset, batches and seed pickled with
    it, the weights left in a scratch file that the parent wrote once for the preset and that each
    worker maps read-only, so that no measurement pickles, copies or hashes them again (behemoth's
    1.9 GB: 2.8 s through a pipe and 2.4 s of sha256 per measurement on the H200 machine's Xeon,
    docs/harness.md). The file's identity as the parent hashed it (inode, size, modification time)
    stands in the worker for the weights' sha256; the batches are hashed again."""

    preset: Preset
    batches: list[np.ndarray]
    seed: int
    path: str
    count: int  # fp32 values in the file
    stamp: tuple[int, int, int]  # (inode, size, mtime ns) when written
    digest: str  # work_digest of the whole work, the parent's (curve passes it to the worker)
    batches_digest: str

    def open(self) -> Work:
        """The work, its weights mapped read-only from the parent's file; RuntimeError where the
        file is not the one the parent wrote or a batch differs."""
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise RuntimeError(f"the work's weights file is gone: {e}") from None
        if (st.st_ino, st.st_size, st.st_mtime_ns) != self.stamp:
            raise RuntimeError(f"the work's weights file {self.path} changed after the parent wrote and hashed it")
        if batches_digest(self.batches) != self.batches_digest:
            raise RuntimeError("the worker got other batches than the parent's (sha256 differs)")
        params = np.memmap(self.path, dtype=np.float32, mode="r", shape=(self.count,))
        work = Work(self.preset, params, self.batches, self.seed)
        work.__dict__["digest"] = self.digest  # cached_property's slot: the identity checked above stands for it
        return work


@contextlib.contextmanager
def handed_over(work: Work):
    """The work to pass to worker processes: a HandedWork whose weights file lives as long as this
    block, or, where no scratch file can be written (a full or missing /dev/shm), the work itself
    (pickled whole to each worker). Files left by runs that were killed are removed first."""
    where = scratch.folder()
    scratch.remove_orphans(WORK_PREFIX, where)
    handed, path = None, None
    try:
        path = scratch.create(WORK_PREFIX, ".f32", where)
        np.ascontiguousarray(work.params, dtype=np.float32).tofile(path)
        st = os.stat(path)
        handed = HandedWork(work.preset, work.batches, work.seed, path, int(work.params.size),
                            (st.st_ino, st.st_size, st.st_mtime_ns), work.digest, batches_digest(work.batches))
    except OSError:
        if path:
            scratch.remove(path)
        path = None
    try:
        yield handed or work
    finally:
        if path:
            scratch.remove(path)


def receive(got: Work | HandedWork, digest: str) -> Work:
    """In a worker: the work the parent handed over, checked against the parent's digest (a
    HandedWork: its file's identity and its batches, HandedWork.open)."""
    if isinstance(got, HandedWork):
        return got.open()
    if work_digest(got) != digest:
        raise RuntimeError("the worker got other weights or batches than the parent's (work sha256 differs)")
    return got


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
    params = Layout(preset).init(seed)
    for a in (params, *batches):
        a.flags.writeable = False
    return Work(preset, params, batches, seed)


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
    """Load the work's weights into `backend` and run every batch, timing each step. The weights
    go as they are where they are read-only (prepare's, a worker's mapped file), else as a copy."""
    name, preset = backend.name, work.preset.name
    params = work.params if not work.params.flags.writeable else work.params.copy()
    try:
        backend.load(work.preset, params)
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
