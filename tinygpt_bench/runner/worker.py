"""The worker side of a measurement and the fork server it starts from.

A repeat runs in a fresh process forked from multiprocessing's fork server: a single-threaded
process started once a run (start_server) that has imported the CLI, this module and the run's
engines with their libraries, so a worker starts in milliseconds instead of importing them
again. Nothing runs on a device in the server; each worker opens its own device or engine,
crashes alone and is killed alone, and exits without the interpreter's shutdown. A server
already running keeps the import list it started with (a second run in the same process: its
engines are imported by its workers)."""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import resource
import time

from tinygpt_bench import engines, protocol
from tinygpt_bench.errors import UserError
from tinygpt_bench.runner.messages import Described, Failed, Finished, Job, Note, Stepped
from tinygpt_bench.sigmask import sigint_blocked

PRELOAD_ENV = "TINYGPT_BENCH_PRELOAD"  # what tinygpt_bench/preload.py imports (not imported here: it imports)


def serve(conn, job: Job) -> None:
    """One repeat in the worker: check the work handed over, create, load, time every step, and
    tell the parent (messages.py). The parent kills this process at the time budget."""
    marks = {"entered": time.perf_counter()}
    # the parent's environment as the measurement starts, not the fork server's (copied when it started)
    os.environ.clear()
    os.environ.update(job.environ)
    stage, be = "create", None
    try:
        work = protocol.receive(job.work, job.digest)
        marks["work"] = time.perf_counter()
        engines.get_class(job.backend)  # the engine's import, timed apart from its creation
        marks["imported"] = time.perf_counter()
        be = protocol.create_backend(job.backend, work.preset, **job.options)
        marks["created"] = time.perf_counter()
        conn.send(Described(be.describe()))
        marks["described"] = time.perf_counter()
        stage = "load"
        protocol.train(be, work, job.lr, lambda st: conn.send(Stepped(st)))
        marks["trained"] = time.perf_counter()
        conn.send(Described(be.describe()))  # what only a loaded engine knows too
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        rss += be.host_peak_rss() or 0  # an engine's own process (wasm-v8: Node)
        conn.send(Finished(be.memory_bytes(), rss, marks))
    except protocol.StageError as e:
        conn.send(Failed(e.stage, e.error))
    except BaseException as e:  # noqa: BLE001 - everything is reported to the parent
        conn.send(Failed(stage, f"{type(e).__name__}: {e}"))
    finally:
        _close(conn, be, job.backend)


def _close(conn, be, name: str) -> None:
    if be is not None:
        try:
            be.close()
        except Exception as e:
            conn.send(Note(f"{name}: close() failed: {type(e).__name__}: {e}"))
    conn.close()


def context(names) -> mp.context.BaseContext:
    """The fork server's context, its preload list set for backends `names`: the worker's
    modules, then (through tinygpt_bench.preload, which guards each import: one that fails must
    fail its own backend's workers, not the server) the engines and their libraries."""
    ctx = mp.get_context("forkserver")
    imports = [m for n in names for m in worker_imports(n)]
    # a worker runs the parent's main script again (multiprocessing does, to find what it pickled);
    # `tinygpt-bench` is one import of the CLI, imported here once. ('__main__' itself: Python 3.11's
    # fork server never gets its path, so the CLI's own name is what saves the import.)
    os.environ[PRELOAD_ENV] = ",".join(dict.fromkeys(imports))
    ctx.set_forkserver_preload(["tinygpt_bench.worker_signals", "__main__", "tinygpt_bench.cli", __name__,
                                "tinygpt_bench.preload"])
    return ctx


def worker_imports(name: str) -> list[str]:
    """What backend `name`'s workers import, for the fork server to import first: the module of
    its class, then the modules it declares (BackendSpec.preload: its engine's libraries, or
    '.module' relative to the engine's package). Nothing for an unknown name."""
    try:
        eng, b = engines.spec(name)
    except UserError:
        return []
    return [importlib.util.resolve_name(m, eng.package) if m.startswith(".") else m
            for m in (b.cls.split(":")[0], *b.preload)]


def start_server(names) -> None:
    """Start the fork server; it imports while this process goes on (environment, work, reference)."""
    from multiprocessing import forkserver, resource_tracker

    context(names)
    # a Ctrl-C while the server's Python starts: no traceback from it (sigmask.py). The server
    # starts the resource tracker first, and that start unblocks SIGINT in this thread when it
    # ends (CPython's resource_tracker.ensure_running), whatever the mask was before: so the
    # tracker first, then the server under a block that nothing lifts early.
    with sigint_blocked():
        resource_tracker.ensure_running()
    with sigint_blocked():
        forkserver.ensure_running()


def _nothing() -> None:
    """A worker that does nothing: its start waits for the fork server's imports."""


def wait_for_server(names) -> None:
    """Wait until the fork server has imported everything, so that its start is the run's harness
    time rather than the first measurement's."""
    proc = context(names).Process(target=_nothing, daemon=True)
    try:
        proc.start()
        proc.join()
    except (OSError, EOFError):  # a server that cannot fork: each measurement says so in its row
        pass
