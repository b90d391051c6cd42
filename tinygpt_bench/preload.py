"""Imported by the runner's fork server before it forks a run's workers: the engine modules and
libraries named in $TINYGPT_BENCH_PRELOAD (runner/worker.py's context() sets it), each import
guarded. Python's fork server skips a preload that raises ImportError but dies on any other
error (a library failing to load a shared object raises OSError, say), and with it every
worker of the run; here a module that fails to import is left for its own workers, which
import it again, fail alone, and become that backend's failed row."""

from __future__ import annotations

import importlib
import os

from tinygpt_bench.runner.worker import PRELOAD_ENV  # the server imported it already (its preload list)

FAILED: dict[str, str] = {}  # module -> the error its import raised here

for _name in filter(None, os.environ.get(PRELOAD_ENV, "").split(",")):
    try:
        importlib.import_module(_name)
    except Exception as e:  # noqa: BLE001 - any failure stays the worker's to report
        FAILED[_name] = f"{type(e).__name__}: {e}"
