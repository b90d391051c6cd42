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
Correctness before timing: every kernel's result is checked against numpy (or the closed
form of its recurrence) first; a kernel that fails its check is recorded as 'failed' and
not timed. FLOPs: 2 per multiply-add. Times: the best of the repeats (timestamp queries
on the GPU where the adapter has them, else host time over several submits).

peaks.csv format history (PEAKS_FORMAT_VERSION, written into every row):
  1  2026-11  first version
The file is rewritten by each `peak` run, a row flushed as each measurement finishes.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from tinygpt_bench import envinfo
from tinygpt_bench.errors import UserError

PEAKS = "peaks.csv"
PEAKS_FORMAT_VERSION = 1
PEAK_COLUMNS = [
    "format_version", "run_id", "timestamp", "engine", "kind", "what", "threads", "device", "size", "flops",
    "repeats", "seconds", "gflop_per_s", "max_rel_err", "status", "note",
    # the machine
    "cpu_model", "cpu_usable_cores", "host_memory_bytes", "hostname", "os", "adapter", "adapter_type",
    "adapter_driver", "adapter_api", "software_adapter", "numpy", "wgpu", "wasmtime", "torch", "git_commit",
]
CHECK_TOLERANCE = 1e-4  # relative: max |got - want| / max |want| of a product, or per value of a recurrence

XL_SHAPES = [  # (label, M, N, K, a transposed): xl's matmuls, B*T = 1024, C = 256
    ("qkv/o fwd", 1024, 256, 256, 0),
    ("fc_in fwd", 1024, 1024, 256, 0),
    ("fc_out fwd", 1024, 256, 1024, 0),
    ("fc_in dW", 256, 1024, 1024, 1),
]
WASM_PEAK_EXPORTS = {"simd128_mul_add": "bench_peak", "simd128_relaxed_fma": "bench_peak_fma"}
WASM_PEAK_X, WASM_PEAK_Y = np.float32(1.0001), np.float32(0.9999)  # bench.c's chain constants
WASM_PEAK_CHAINS = 12  # f32x4 chains a thread (bench.c)
WGPU_PEAK_CHAINS, WGPU_PEAK_WG = 8, 256  # vec4 chains an invocation, invocations a workgroup (peak.wgsl)
WGPU_PEAK_X, WGPU_PEAK_Y = 0.999, 0.001


class CheckFailed(RuntimeError):
    """A kernel's result disagrees with numpy: it is not timed."""


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does; --quick for tests and software adapters."""

    wasm_iters: int = 20_000_000
    wasm_matmul_reps: int = 5
    webgpu_seconds: float = 0.05  # GPU time a peak dispatch is scaled to
    webgpu_matmul: tuple[int, ...] = (1024, 4096)
    webgpu_check: int = 256
    torch_size: int = 4096
    torch_check: int = 256
    repeats: int = 5

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(wasm_iters=1_000_000, wasm_matmul_reps=1, webgpu_seconds=0.005, webgpu_matmul=(128, 256),
                   webgpu_check=64, torch_size=256, torch_check=64, repeats=2)


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want| (a product); nan anywhere is infinitely wrong."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if not np.isfinite(got).all():
        return math.inf
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def _checked(what: str, err: float, tol: float = CHECK_TOLERANCE) -> float:
    if not err <= tol:
        raise CheckFailed(f"{what}: result differs from numpy by {err:.2e} relative (tolerance {tol:.0e}); not timed")
    return err


# ---- wasm ---------------------------------------------------------------------------------

def wasm_peak_expected(iters: int, fused: bool) -> float:
    """What bench_peak(iters) returns: thread 0's sum of its 12 x 4 chain values, c <- c * x + y
    from 0, in f32 (fused: one rounding a step, as relaxed FMA on hardware with FMA)."""
    c = np.float32(0)
    for _ in range(iters):
        c = np.float32(np.float64(c) * WASM_PEAK_X + WASM_PEAK_Y) if fused else np.float32(c * WASM_PEAK_X) + WASM_PEAK_Y
    two = c + c  # bench.c's tree: ((c0+c1)+(c2+c3)) + ((c4+c5)+(c6+c7)) + ((c8+c9)+(c10+c11)), then 4 lanes
    s = (two + two + (two + two)) + (two + two)
    return float(np.float32(s + s) + np.float32(s + s))


def wasm_peak(threads: int, iters: int, repeats: int = 3) -> dict[str, dict]:
    """{what: {gflop_per_s, seconds, flops, max_rel_err}} of bench_peak and bench_peak_fma at
    `threads` threads (each thread runs `iters` rounds of 12 f32x4 multiply-adds)."""
    from tinygpt_bench.engines.wasm.backend import WasmBackend

    out = {}
    check_iters = 1000
    with WasmBackend(threads=threads) as b:
        b._start()
        for what, export in WASM_PEAK_EXPORTS.items():
            got = float(b._call(export, check_iters))
            err = min(rel_err([got], [wasm_peak_expected(check_iters, f)]) for f in (False, True))
            _checked(f"wasm {export}({check_iters})", err)
            b._call(export, iters)  # warm-up: clocks and threads settle
            best = math.inf
            for _ in range(repeats):
                t = time.perf_counter()
                b._call(export, iters)
                best = min(best, time.perf_counter() - t)
            flops = WASM_PEAK_CHAINS * 4 * 2 * iters * threads  # chains x lanes x multiply-add, each thread
            out[what] = {"gflop_per_s": flops / best / 1e9, "seconds": best, "flops": flops, "max_rel_err": err,
                         "size": f"{iters} rounds x {WASM_PEAK_CHAINS} f32x4 chains x {threads} threads"}
    return out


def wasm_matmul(threads: int, reps: int, shapes=XL_SHAPES, repeats: int = 3) -> list[dict]:
    """The engine's matmul alone (bench_matmul) at each shape, plain SIMD128 and relaxed FMA:
    checked against numpy, then the best of `repeats` timings of `reps` products."""
    from tinygpt_bench.engines.wasm.backend import WasmBackend

    from tinygpt_bench.engines.wasm import backend as wasm_mod

    rows = []
    rng = np.random.default_rng(0)
    with WasmBackend(threads=threads) as b:
        b._start()
        kernel = getattr(b, "matmul_kernel", None)  # the engine's default 4x8 tile, as load() sets it
        if kernel is not None:
            b._call("model_set_matmul_kernel", wasm_mod.MATMUL_KERNELS.index(kernel))
        for label, M, N, K, tr in shapes:
            a = rng.standard_normal(M * K).astype(np.float32)
            bb = rng.standard_normal(K * N).astype(np.float32)
            A, B, C = b._put(a), b._put(bb), b._call("alloc", 4 * M * N)
            a2 = a.reshape(K, M).T if tr else a.reshape(M, K)  # trans_a: a is stored (K, M)
            want = a2.astype(np.float64) @ bb.reshape(K, N)
            for fma in (0, 1):
                b._call("model_set_fma", fma)
                b._call("bench_matmul", C, A, B, M, N, K, tr, 1)
                err = _checked(f"wasm matmul {label} {M}x{N}x{K} fma={fma}", rel_err(b._f32(C, M * N).reshape(M, N), want))
                best = math.inf
                for _ in range(repeats):
                    t = time.perf_counter()
                    b._call("bench_matmul", C, A, B, M, N, K, tr, reps)
                    best = min(best, (time.perf_counter() - t) / reps)
                flops = 2 * M * N * K  # multiply and accumulate
                rows.append({"what": "matmul relaxed-fma" if fma else "matmul simd128", "size": f"{M}x{N}x{K}",
                             "note": f"xl {label}" + (" (a transposed)" if tr else "")
                             + (f"; {kernel} tile" if kernel else ""), "flops": flops,
                             "seconds": best, "gflop_per_s": flops / best / 1e9, "max_rel_err": err,
                             "repeats": repeats})
        b._call("model_set_fma", 0)
    return rows


# ---- webgpu -------------------------------------------------------------------------------

def webgpu_peak_expected(n: int, iters: int) -> np.ndarray:
    """Closed form of peak.wgsl's out[gid]: the sum over 8 chains x 4 lanes of
    x^iters c0 + y (1 - x^iters) / (1 - x), c0 = (gid % 64) / 64 + j / 8 + lane / 32."""
    gid = np.arange(n, dtype=np.float64)
    x, y = np.float64(np.float32(WGPU_PEAK_X)), np.float64(np.float32(WGPU_PEAK_Y))
    xn = x ** iters
    c0_sum = WGPU_PEAK_CHAINS * 4 * ((gid % 64) / 64) + 4 * sum(j / 8 for j in range(WGPU_PEAK_CHAINS)) \
        + WGPU_PEAK_CHAINS * sum(lane / 32 for lane in range(4))
    return xn * c0_sum + WGPU_PEAK_CHAINS * 4 * y * (1 - xn) / (1 - x)


def _gpu_seconds(gpu, program, repeats: int, warm: bool = False) -> float:
    """Best GPU time of the program's single dispatch (after a warm-up of sustained work with
    warm, Program.warm_up): timestamp queries where the adapter has them, else host time over
    several submits waited for together."""
    if warm:
        program.warm_up()
    if gpu.timestamps:
        return min(program.profile()[0][1] for _ in range(repeats))
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(3):
            enc = gpu.device.create_command_encoder(label=program.label)
            program.encode(enc)
            gpu.device.queue.submit([program.finish(enc)])
        gpu.wait()
        best = min(best, (time.perf_counter() - t) / 3)
    return best


def webgpu_peak(gpu, seconds: float, repeats: int) -> dict:
    """fp32 FMA throughput of the adapter with kernels/peak.wgsl: checked against the closed form
    at a few rounds, then the round count scaled so a dispatch takes about `seconds`."""
    from tinygpt_bench.engines.webgpu.runtime import Program

    cpu = gpu.adapter.info["adapter_type"] == "CPU"
    groups = 64 if cpu else 8192  # a CPU adapter is full with a few; a GPU wants thousands of warps
    limit = gpu.limits["max-compute-workgroups-per-dimension"]
    gx = min(groups, limit)
    gy = -(-groups // gx)
    n = gx * gy * WGPU_PEAK_WG
    xy = gpu.upload(np.array([WGPU_PEAK_X, WGPU_PEAK_Y], dtype=np.float32), "peak.xy")
    out = gpu.buffer(4 * n, "peak.out")

    def program(iters: int):
        p = Program(gpu, f"peak-{iters}")
        p.add("peak", "peak", "peak_fma", [iters, n], {1: xy, 2: out}, (gx, gy))
        return p.finalize()

    iters = 64
    p = program(iters)
    p.run()
    err = _checked(f"webgpu peak.wgsl ({iters} rounds)",
                   rel_err(gpu.read(out, count=n), webgpu_peak_expected(n, iters)), 1e-3)
    t = _gpu_seconds(gpu, p, 2, warm=True)  # the calibration below follows without idle gaps
    while t < seconds / 8 and iters < 1 << 22:  # grow past the launch overhead before extrapolating
        iters *= 8
        t = _gpu_seconds(gpu, program(iters), 1)
    iters = int(min(max(iters * seconds / max(t, 1e-7), 64), 1 << 22))  # scaled to about `seconds`
    p = program(iters)
    p.run()
    err = max(err, _checked(f"webgpu peak.wgsl ({iters} rounds)",
                            rel_err(gpu.read(out, count=n), webgpu_peak_expected(n, iters)), 1e-3))
    best = _gpu_seconds(gpu, p, repeats, warm=True)
    flops = n * iters * WGPU_PEAK_CHAINS * 4 * 2  # invocations x rounds x chains x lanes x multiply-add
    for buf in (xy, out):
        buf.destroy()
    return {"gflop_per_s": flops / best / 1e9, "seconds": best, "flops": flops, "max_rel_err": err,
            "size": f"{iters} rounds x {WGPU_PEAK_CHAINS} vec4 chains x {n} invocations",
            "note": "timestamp queries" if gpu.timestamps else "host time over 3 submits"}


def time_engine_matmul(gpu, size: int, variant: str | None = None, reps: int = 3) -> dict:
    """The WebGPU engine's matmul (wgpu_ops.matmul, its own kernel planning unless `variant` names
    one) at size^3: run once, 8 random rows spot-checked against numpy in float64 (rel_err), then
    the best of `reps` timings of every dispatch of the product by timestamp queries, after
    Program.warm_up. Shared by `peak` (webgpu_matmul) and dev/wgpu_bench.py --matmul."""
    from tinygpt_bench.engines.webgpu import ops
    from tinygpt_bench.engines.webgpu.runtime import Program

    m = n = k = size
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    A, B, C = ops.Ref(gpu.upload(a, "a")), ops.Ref(gpu.upload(b, "b")), ops.Ref(gpu.buffer(4 * m * n, "c"))
    p = Program(gpu, "matmul-bench")
    ops.matmul(p, "bench", C, A, B, m, n, k, variant=variant)
    p.finalize().run()
    rows = rng.choice(m, 8, replace=False)  # spot-check 8 rows against numpy
    got = gpu.read(C.buf, count=m * n).reshape(m, n)[rows]
    want = a[rows].astype(np.float64) @ b
    err = float(np.abs(got - want).max() / np.abs(want).max())
    p.warm_up()  # clocks up before timing (Program.warm_up)
    secs = min(sum(t for _, t in p.profile()) for _ in range(reps))  # every dispatch of the product
    flops = 2 * m * n * k  # multiply and accumulate
    kernels = [d.name.split("[")[-1].rstrip("]") for d in p.dispatches]  # what really ran
    for ref in (A, B, C):
        ref.buf.destroy()
    return {"kind": "matmul", "variant": variant, "size": size, "gpu_ms": secs * 1e3,
            "tflops": flops / secs / 1e12, "rel_err": err, "kernels": kernels}


def webgpu_matmul(gpu, size: int, repeats: int) -> dict:
    """The engine's matmul at size^3 with its own kernel planning (wgpu_ops.plan_matmul), timed by
    time_engine_matmul (which spot-checks 8 rows against numpy; checked here)."""
    if not gpu.timestamps:
        raise UserError("the adapter has no timestamp-query feature, which the engine's matmul is timed with")
    r = time_engine_matmul(gpu, size, None, reps=repeats)
    err = _checked(f"webgpu matmul {size}^3", r["rel_err"])
    flops = 2 * size ** 3  # multiply and accumulate
    return {"gflop_per_s": r["tflops"] * 1e3, "seconds": r["gpu_ms"] / 1e3, "flops": flops, "max_rel_err": err,
            "size": f"{size}x{size}x{size}",
            "note": f"kernels {' + '.join(r['kernels'])}; timestamp queries"}


# ---- torch --------------------------------------------------------------------------------

def torch_matmul(device: str, size: int, check: int, threads: int | None, repeats: int) -> dict:
    """fp32 a @ b at size^3 in PyTorch (CUDA: TF32 off), after a check at check^3 against numpy."""
    import torch

    dev = torch.device(device)
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ModuleNotFoundError("torch has no CUDA device here")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    old_threads = torch.get_num_threads()
    if device == "cpu" and threads:
        torch.set_num_threads(threads)
    try:
        rng = np.random.default_rng(0)
        err = 0.0
        for n in (check, size):
            a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
            ta, tb = torch.from_numpy(a).to(dev), torch.from_numpy(b).to(dev)
            c = (ta @ tb).cpu().numpy()
            rows = np.arange(n) if n == check else rng.choice(n, 8, replace=False)
            err = max(err, _checked(f"torch-{device} matmul {n}^3", rel_err(c[rows], a[rows].astype(np.float64) @ b)))
        times = []
        for _ in range(repeats + 1):  # the first is a warm-up
            if device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                ta @ tb
                end.record()
                torch.cuda.synchronize()
                secs = start.elapsed_time(end) / 1e3
            else:
                t = time.perf_counter()
                ta @ tb
                secs = time.perf_counter() - t
            times.append(secs)
        best = min(times[1:] or times)
        name = torch.cuda.get_device_name(0) if device == "cuda" else None
    finally:
        torch.set_num_threads(old_threads)
    flops = 2 * size ** 3  # multiply and accumulate
    return {"gflop_per_s": flops / best / 1e9, "seconds": best, "flops": flops, "max_rel_err": err,
            "size": f"{size}x{size}x{size}", "device": name,
            "note": f"torch {torch.__version__} fp32" + (", TF32 off, CUDA events" if device == "cuda" else "")}


# ---- the run ------------------------------------------------------------------------------

def machine_columns(gpu=None) -> dict:
    cpu, py, git = envinfo.collect_cpu(), envinfo.collect_python(), envinfo.collect_git()
    out = {k: cpu.get(k) for k in ("cpu_model", "cpu_usable_cores", "host_memory_bytes", "hostname", "os")}
    out.update({k: py.get(k) for k in ("numpy", "wgpu", "wasmtime", "torch")})
    out["git_commit"] = git.get("git_commit")
    if gpu is not None:
        info = dict(gpu.adapter.info)
        out.update(adapter=info.get("device"), adapter_type=info.get("adapter_type"),
                   adapter_driver=info.get("description"), adapter_api=info.get("backend_type"),
                   software_adapter=envinfo.is_software_adapter(info))
    return out


class PeakWriter:
    """peaks.csv in `out_dir`, rewritten by a run; the file is replaced atomically as each row is
    measured (results.atomic_write), so an earlier peaks.csv stays whole until the first new row."""

    def __init__(self, out_dir: Path):
        from tinygpt_bench import results

        self.dir = Path(out_dir)
        if self.dir.exists() and not self.dir.is_dir():
            raise UserError(f"--out {self.dir} is a file, not a folder; give a folder for {PEAKS}")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create {self.dir} ({e.strerror}); give a writable --out folder") from None
        self.path = self.dir / PEAKS
        self.run_id = f"{envinfo.now()}-{os.getpid()}"
        self._atomic_write = results.atomic_write
        self._rows: list[dict] = []

    def row(self, row: dict) -> dict:
        full = {"format_version": PEAKS_FORMAT_VERSION, "run_id": self.run_id, "timestamp": envinfo.now(), **row}
        self._rows.append({k: _fmt(full.get(k)) for k in PEAK_COLUMNS})
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=PEAK_COLUMNS, extrasaction="raise", lineterminator="\n")
        w.writeheader()
        w.writerows(self._rows)
        try:
            self._atomic_write(self.path, buf.getvalue().encode("utf-8"))
        except OSError as e:
            raise UserError(f"cannot write {self.path} ({e.strerror}); free space or fix permissions") from None
        return full

    def close(self) -> None:
        pass


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else repr(float(f"{v:.6g}"))
    return v


def read_peaks(path: Path) -> pd.DataFrame:
    """peaks.csv (a file or the folder holding it), its format version checked."""
    path = Path(path)
    if path.is_dir():
        path = path / PEAKS
    if not path.is_file():
        raise UserError(f"{path} does not exist; measure it with `tinygpt-bench peak --out {path.parent}`")
    try:
        df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable peaks CSV ({e}); pass a file written by `peak`") from None
    missing = [c for c in ("format_version", "engine", "kind", "what", "gflop_per_s", "status") if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column '{missing[0]}'; pass a peaks.csv written by `peak`")
    bad = sorted(set(df["format_version"].astype(int)) - {PEAKS_FORMAT_VERSION})
    if bad:
        raise UserError(f"{path}: peaks format version {bad[0]}, this tinygpt-bench reads {PEAKS_FORMAT_VERSION}; upgrade it")
    return df


def measure(out_dir: Path, threads: int | None = None, adapter: str | None = None, quick: bool = False,
            on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """Every measurement of the module docstring, written to out_dir/peaks.csv as it finishes.
    A measurement that cannot run here (no adapter, no torch) or fails its check is a row
    with status 'skipped' or 'failed' and the reason; the others go on."""
    from tinygpt_bench.engines.wasm.backend import _threads

    sizes = Sizes.quick() if quick else Sizes()
    n = _threads(threads)
    gpu, gpu_error = None, None
    try:
        from tinygpt_bench.engines.webgpu.runtime import Gpu

        envinfo.quiet_mesa()
        gpu = Gpu(adapter)
    except Exception as e:  # no adapter: the webgpu rows say so, the rest is measured
        gpu_error = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
    machine = machine_columns(gpu)
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

    cpu_name = machine.get("cpu_model")
    try:
        for th in sorted({1, n}):
            res: dict = {}

            def wasm_peak_row(what, th=th, res=res):
                if not res:
                    res.update(wasm_peak(th, sizes.wasm_iters, sizes.repeats))
                return res[what]

            for what in WASM_PEAK_EXPORTS:
                emit("wasm", "peak", what, lambda what=what: wasm_peak_row(what), th, cpu_name, sizes.repeats)
        emit("wasm", "matmul", "matmul", lambda: wasm_matmul(n, sizes.wasm_matmul_reps, repeats=sizes.repeats),
             n, cpu_name, sizes.repeats)
        gpu_name = machine.get("adapter")
        if gpu is None:
            emit("webgpu", "peak", "fp32_fma", lambda: {"status": "skipped", "note": gpu_error})
        else:
            emit("webgpu", "peak", "fp32_fma", lambda: webgpu_peak(gpu, sizes.webgpu_seconds, sizes.repeats),
                 None, gpu_name, sizes.repeats)
            emit("webgpu", "matmul", "matmul check", lambda: webgpu_matmul(gpu, sizes.webgpu_check, 1),
                 None, gpu_name, 1)
            cpu_adapter = machine.get("adapter_type") == "CPU"  # 4096^3 takes minutes on lavapipe
            for s in [min(x, 2048) for x in sizes.webgpu_matmul] if cpu_adapter else sizes.webgpu_matmul:
                emit("webgpu", "matmul", "matmul", lambda s=s: webgpu_matmul(gpu, s, sizes.repeats),
                     None, gpu_name, sizes.repeats)
        emit("torch-cpu", "matmul", "matmul",
             lambda: torch_matmul("cpu", sizes.torch_size, sizes.torch_check, n, sizes.repeats), n, cpu_name,
             sizes.repeats)
        emit("torch-cuda", "matmul", "matmul",
             lambda: torch_matmul("cuda", sizes.torch_size, sizes.torch_check, None, sizes.repeats), None, None,
             sizes.repeats)
    finally:
        writer.close()
    return written
