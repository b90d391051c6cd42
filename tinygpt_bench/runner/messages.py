"""The messages between a measurement's parent and its worker process, both ways, in one module
that both ends import (pyperf's runner and worker share theirs so): the parent starts the worker
with a Job; the worker answers with Described, Stepped, Note, then Finished or Failed. Each is a
frozen dataclass, pickled over a one-way pipe."""

from __future__ import annotations

from dataclasses import dataclass, field

from tinygpt_bench.protocol import HandedWork, StepTime, Work


@dataclass(frozen=True)
class Job:
    """Parent -> worker, with its start: one repeat of one backend on one work."""

    backend: str
    work: Work | HandedWork  # the weights in a scratch file where handed_over could write one
    digest: str  # the parent's work_digest, the worker's check of what it received
    lr: float
    options: dict  # the engine options this backend declares (engines.select)
    environ: dict  # the parent's environment as the measurement starts (faults, caches, settings)
    label: str = ""  # the process's name: 'tinygpt-bench PRESET/BACKEND'


@dataclass(frozen=True)
class Described:
    """The backend's describe(): after create, and again after the steps (what only a loaded
    engine knows, such as the WebGPU plan's digest)."""

    facts: dict


@dataclass(frozen=True)
class Stepped:
    """One timed step, as soon as it ends."""

    step: StepTime


@dataclass(frozen=True)
class Note:
    """A line for the user that is not a failure (a backend's close() that failed)."""

    text: str


@dataclass(frozen=True)
class Finished:
    """Every step done: what the engine allocated, the worker's peak resident memory (its
    engine process's included), and the host clock at each stage's end (time.perf_counter,
    system-wide: the parent's harness timeline)."""

    memory_bytes: int | None
    peak_rss: int | None
    marks: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    """The repeat failed at a named stage (create, load, step N) with the error's one line."""

    stage: str
    error: str
