"""The parent side of one measurement's repeat: start its worker process with a Job, read the
worker's messages as they come, kill it at the time budget, and return what happened as a
Repeat. A time budget that stops the repeat for real (the process is killed), a crash that
cannot take the run down, and resources (worker threads, GPU device, wasm memory) released
when the process ends."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from typing import Callable

from tinygpt_bench.protocol import StepTime
from tinygpt_bench.runner import worker
from tinygpt_bench.runner.messages import Described, Failed, Finished, Job, Note, Stepped

TIMELINE = ("entered", "work", "imported", "created", "described", "loaded", "trained", "done")


@dataclass(frozen=True)
class Repeat:
    """One repeat of one backend: 'ok' with every step, or 'failed'/'timeout' at a stage."""

    status: str
    stage: str = ""
    error: str = ""
    steps: tuple[StepTime, ...] = ()
    describe: dict = field(default_factory=dict)  # the backend's describe() facts, merged
    memory_bytes: int | None = None
    peak_rss: int | None = None
    wall_s: float = 0.0  # the repeat's wall time, from before its worker started to its end
    timeline: dict = field(default_factory=dict)  # where the wall time went (harness_timeline)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def harness_s(self) -> float:
        """The wall time beyond the timed steps."""
        return self.wall_s - sum(st.ms for st in self.steps) / 1e3


def harness_timeline(t0: float, marks: dict[str, float], wall: float, steps) -> dict:
    """Where one measurement's wall time went, in seconds: the worker's start (process, imports its
    target needs), the work's check, the engine's import, create, describe (where WebGPU opens its
    device), load (to the first step's start), the timed steps, the rest of training (messages,
    untimed parts), and the end (close, exit, join). Stages the worker did not reach are absent."""
    out, prev = {}, t0
    for k in TIMELINE:
        if k in marks:
            out[k] = marks[k] - prev
            prev = marks[k]
    steps_s = sum(st.ms for st in steps) / 1e3
    if "trained" in out:
        out["trained"] -= steps_s
        out["steps"] = steps_s
    out["end"] = t0 + wall - prev
    return out


def exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"worker process killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"worker process killed by signal {-code}"
    return f"worker process exited with code {code} without a result"


class _Listener:
    """The parent's state while a worker runs: what it said so far, and the stage it is at."""

    def __init__(self, on_step, on_note):
        self.on_step, self.on_note = on_step, on_note
        self.steps: list[StepTime] = []
        self.describe: dict = {}
        self.marks: dict[str, float] = {}
        self.stage = "create"
        self.finished: Finished | None = None

    def take(self, msg) -> tuple[str, str, str] | None:
        """One message; the repeat's end (status, stage, error) where it is one."""
        if isinstance(msg, Described):
            self.describe = {**self.describe, **msg.facts}
            self.stage = "load" if not self.steps else self.stage
        elif isinstance(msg, Stepped):
            st = msg.step
            if not self.steps:  # the first step started its ms before this message came
                self.marks["loaded"] = time.perf_counter() - st.ms / 1e3
            self.steps.append(st)
            self.stage = f"step {st.step + 1}"
            self.on_step(st)
        elif isinstance(msg, Note):
            self.on_note(msg.text)
        elif isinstance(msg, Finished):
            self.finished = msg
            self.marks.update(msg.marks, done=time.perf_counter())
            return ("ok", "", "")
        elif isinstance(msg, Failed):
            return ("failed", msg.stage, msg.error)
        return None


def measure(job: Job, backends, steps: int, timeout_s: float | None,
            on_step: Callable[[StepTime], None] = lambda st: None,
            on_note: Callable[[str], None] = lambda text: None) -> Repeat:
    """One repeat of `job` in a worker forked from the run's server (`backends`: the run's, its
    preload list); `steps`: how many the work has (for the timeout's message)."""
    t0 = time.perf_counter()  # the measurement's wall clock starts before its worker does
    ctx = worker.context(backends)
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=worker.serve, args=(send, job), name=job.label, daemon=True)
    try:  # the work travels with the start: a worker that dies reading it fails here
        proc.start()
    except (OSError, EOFError) as e:
        if proc.pid is not None:
            proc.kill()
            proc.join(5)
        send.close()
        recv.close()
        return Repeat("failed", "create", f"worker did not start: {type(e).__name__}: {e}")
    send.close()
    listener = _Listener(on_step, on_note)
    end = None
    try:
        end = _listen(proc, recv, listener, steps, timeout_s)
    finally:
        if end is None or end[0] != "ok":
            proc.kill()
        proc.join(30)
        recv.close()
    wall = time.perf_counter() - t0
    if end[0] != "ok":
        return Repeat(*end, describe=listener.describe, wall_s=wall)
    fin = listener.finished
    return Repeat("ok", steps=tuple(listener.steps), describe=listener.describe, memory_bytes=fin.memory_bytes,
                  peak_rss=fin.peak_rss, wall_s=wall,
                  timeline=harness_timeline(t0, listener.marks, wall, listener.steps))


def _listen(proc, recv, listener: _Listener, steps: int, timeout_s: float | None) -> tuple[str, str, str]:
    """The worker's messages until its end, or the budget's."""
    t_start = time.perf_counter()
    while True:
        remaining = None if timeout_s is None else timeout_s - (time.perf_counter() - t_start)
        if remaining is not None and remaining <= 0 or not recv.poll(remaining):
            proc.kill()
            return ("timeout", listener.stage, f"time budget of {timeout_s:g} s spent at {listener.stage} "
                                               f"({len(listener.steps)} of {steps} steps done); worker stopped")
        try:
            msg = recv.recv()
        except EOFError:
            proc.join(5)
            return ("failed", listener.stage, exit_text(proc.exitcode))
        end = listener.take(msg)
        if end is not None:
            return end
