"""`tinygpt-bench peak`: the measured ceilings each engine's GFLOP/s is judged against.

One run on one machine writes DIR/peaks.csv, one row per measurement:
- wasm     SIMD128 throughput peak, multiply then add and relaxed-SIMD FMA (the module's
           bench_peak / bench_peak_fma: 12 independent f32x4 chains a thread), at 1 thread
           and at N threads; the engine's matmul alone at xl's shapes at N threads
           (bench_matmul), plain SIMD128 and relaxed FMA
- webgpu   fp32 FMA throughput peak (kernels/peak.wgsl: 8 independent vec4 fma chains an
           invocation, enough workgroups to fill the device); the engine's own matmul
           (its kernel planning, time_engine_matmul) at 1024^3 and 4096^3 (2048^3 at
           most on a CPU adapter such as lavapipe, where 4096^3 takes minutes)
- torch-cpu / torch-cuda   fp32 matmul at 4096^3 (N threads; CUDA with TF32 off), when
           torch is importable, else a 'skipped' row saying why
Correctness before timing (kernelcheck.py): every kernel's result is checked against numpy
(or the closed form of its recurrence) first; a kernel that fails its check is recorded as
'failed' and not timed. FLOPs: 2 per multiply-add. Times: the best of the repeats (timestamp queries
on the GPU where the adapter has them, else host time over several submits).

A row is a results.Peak (its columns, version and history there). The file is rewritten by
each `peak` run, a row flushed as each measurement finishes.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

from tinygpt_bench import envinfo, results
from tinygpt_bench.errors import UserError
from tinygpt_bench.kernelcheck import CheckFailed


# ---- the run ------------------------------------------------------------------------------

def machine_columns() -> dict:
    cpu, py, git = envinfo.collect_cpu(), envinfo.collect_python(), envinfo.collect_git()
    out = {k: cpu.get(k) for k in ("cpu_model", "cpu_usable_cores", "host_memory_bytes", "hostname", "os")}
    out.update({k: py.get(k) for k in ("numpy", "wgpu", "wasmtime", "torch")})
    out["git_commit"] = git.get("git_commit")
    return out


class PeakWriter:
    """peaks.csv in `out_dir`, rewritten by a run; the file is replaced atomically as each row is
    measured (results.write_peaks), so an earlier peaks.csv stays whole until the first new row."""

    def __init__(self, out_dir: Path):
        self.dir = Path(out_dir)
        if self.dir.exists() and not self.dir.is_dir():
            raise UserError(f"--out {self.dir} is a file, not a folder; give a folder for {results.PEAKS}")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create {self.dir} ({e.strerror}); give a writable --out folder") from None
        self.path = self.dir / results.PEAKS
        self.run_id = f"{envinfo.now()}-{os.getpid()}"
        self._rows: list[results.Peak] = []

    def row(self, row: dict) -> dict:
        """One measurement (a dict of Peak's fields; others are not written): written with the run's
        id and the time; returns it as written."""
        columns = set(results.PEAK_COLUMNS)
        rec = results.Peak(**{"run_id": self.run_id, "timestamp": envinfo.now(),
                              **{k: v for k, v in row.items() if k in columns}})
        self._rows.append(rec)
        results.write_peaks(self.path, self._rows)
        return dataclasses.asdict(rec)

    def close(self) -> None:
        pass


def measure(out_dir: Path, threads: int | None = None, adapter: str | None = None, quick: bool = False,
            on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """Every engine's ceilings (its peak.py), written to out_dir/peaks.csv as each finishes.
    A measurement that cannot run here (no adapter, no torch) or fails its check is a row
    with status 'skipped' or 'failed' and the reason; the others go on."""
    from tinygpt_bench import engines
    from tinygpt_bench.engines.description import PeakContext

    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads} is not a positive number of threads; leave it out for all cores")
    n = int(threads or len(os.sched_getaffinity(0)) or 1)
    machine = machine_columns()
    writer = PeakWriter(out_dir)
    written = []

    def emit(engine: str, kind: str, what: str, fn: Callable[[], dict], threads_: int | None = None,
             device: str | None = None, repeats: int | None = None) -> None:
        base = {"engine": engine, "kind": kind, "what": what, "threads": threads_, "device": device,
                "repeats": repeats, **machine}
        try:
            results = fn()
        except CheckFailed as e:
            results = [{"status": "failed", "note": str(e)}]
        except (ImportError, ModuleNotFoundError, UserError) as e:
            results = [{"status": "skipped", "note": str(e)}]
        except Exception as e:  # a failure of one measurement is recorded; the others go on
            results = [{"status": "failed", "note": f"{type(e).__name__}: {e}"}]
        for r in results if isinstance(results, list) else [results]:
            row = writer.row({**base, "status": "ok", **{k: v for k, v in r.items() if v is not None or k == "note"}})
            written.append(row)
            if on_row:
                on_row(row)

    ctx = PeakContext(threads=n, adapter=adapter, quick=quick, repeats=2 if quick else 5, machine=machine, emit=emit)
    try:
        runs = [e.resolve(e.peak)(ctx) for e in engines.in_order() if e.peak]
        for run in runs:  # set-up first (an adapter's columns go on every row), then the measurements
            machine.update(next(run, None) or {})
        for run in runs:
            for _ in run:
                pass
    finally:
        writer.close()
    return written
