"""The runner: how every command that times training steps times them (curve, run, diagnose's
timed stage), so that one preset on one backend gives the same ms/step whichever command
measured it.

- settings.py  the run's settings, typed, immutable, checked once where they are made
- messages.py  the worker's messages, both ways (one module for both ends)
- worker.py    the worker process's side and the fork server it starts from
- repeat.py    the parent's side of one repeat: start, listen, kill at the budget -> Repeat
- schedule.py  the order of repeats (backends interleaved) and the run's budget
- series.py    the repeats of one measurement aggregated into its row

`measure_one` is one repeat of one backend exactly as curve measures each of its repeats: a
fresh worker process forked from the fork server, the work handed over in a scratch file, the
step times the engine's own where it measures them (protocol.train)."""

from __future__ import annotations

import os

from tinygpt_bench import corpus as corpus_mod
from tinygpt_bench import protocol
from tinygpt_bench.runner import worker
from tinygpt_bench.runner.repeat import Repeat, harness_timeline, measure
from tinygpt_bench.runner.messages import Job
from tinygpt_bench.runner.reporter import Reporter
from tinygpt_bench.runner.schedule import Schedule
from tinygpt_bench.runner.series import PARITY_TOLERANCE, REPEAT_MARGIN, RowContext, Series, harness_note, row
from tinygpt_bench.runner.settings import REFERENCE_MAX_GFLOP, Settings

__all__ = ["Job", "PARITY_TOLERANCE", "REFERENCE_MAX_GFLOP", "REPEAT_MARGIN", "Repeat", "Reporter", "RowContext",
           "Schedule", "Series", "Settings", "harness_note", "harness_timeline", "job", "measure", "measure_one",
           "row", "worker"]


def job(backend: str, work, s: Settings) -> Job:
    """The Job of one repeat of `backend` on `work` (a Work or the HandedWork of handed_over)."""
    return Job(backend, work, work.digest, s.lr, s.options_for(backend), dict(os.environ),
               f"tinygpt-bench {work.preset.name}/{backend}")


def measure_one(s: Settings, reporter: Reporter | None = None, work: protocol.Work | None = None) -> Repeat:
    """One repeat of the settings' one backend on its one preset (`work`: made from the settings'
    corpus and seed where not given), as curve measures each repeat."""
    (preset,), (backend,) = s.presets, s.backends
    rep = reporter or Reporter()
    work = work or protocol.prepare(preset, corpus_mod.load(s.corpus), s.steps, s.seed)
    worker.start_server(s.backends)
    worker.wait_for_server(s.backends)
    with protocol.handed_over(work) as handed:
        rep.measurement_start(preset.name, backend, 1, 1, s.steps)
        return measure(job(backend, handed, s), s.backends, s.steps, s.timeout_s,
                       lambda st: rep.step(preset.name, backend, st), rep.note)
