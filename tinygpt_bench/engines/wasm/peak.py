"""The wasm engine's ceilings for `tinygpt-bench peak` (tinygpt_bench/peak.py runs them): the
module's SIMD128 throughput peak, multiply then add and relaxed-SIMD FMA (bench_peak /
bench_peak_fma: 12 independent f32x4 chains a thread), at 1 thread and at N threads; the
engine's matmul alone at xl's shapes at N threads (bench_matmul), plain SIMD128 and relaxed
FMA. Each checked against numpy (or the closed form of its recurrence) before it is timed."""

from __future__ import annotations

import math
import time

import numpy as np

from tinygpt_bench.engines.wasm.backend import MATMUL_KERNELS, WasmBackend
from tinygpt_bench.kernelcheck import checked, rel_err

XL_SHAPES = [  # (label, M, N, K, a transposed): xl's matmuls, B*T = 1024, C = 256
    ("qkv/o fwd", 1024, 256, 256, 0),
    ("fc_in fwd", 1024, 1024, 256, 0),
    ("fc_out fwd", 1024, 256, 1024, 0),
    ("fc_in dW", 256, 1024, 1024, 1),
]
WASM_PEAK_EXPORTS = {"simd128_mul_add": "bench_peak", "simd128_relaxed_fma": "bench_peak_fma"}
WASM_PEAK_X, WASM_PEAK_Y = np.float32(1.0001), np.float32(0.9999)  # bench.c's chain constants
WASM_PEAK_CHAINS = 12  # f32x4 chains a thread (bench.c)


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

    out = {}
    check_iters = 1000
    with WasmBackend(threads=threads) as b:
        b.runtime.start()
        for what, export in WASM_PEAK_EXPORTS.items():
            got = float(b.runtime.call(export, check_iters))
            err = min(rel_err([got], [wasm_peak_expected(check_iters, f)]) for f in (False, True))
            checked(f"wasm {export}({check_iters})", err)
            b.runtime.call(export, iters)  # warm-up: clocks and threads settle
            best = math.inf
            for _ in range(repeats):
                t = time.perf_counter()
                b.runtime.call(export, iters)
                best = min(best, time.perf_counter() - t)
            flops = WASM_PEAK_CHAINS * 4 * 2 * iters * threads  # chains x lanes x multiply-add, each thread
            out[what] = {"gflop_per_s": flops / best / 1e9, "seconds": best, "flops": flops, "max_rel_err": err,
                         "relaxed_simd": export == WASM_PEAK_EXPORTS["simd128_relaxed_fma"],
                         "size": f"{iters} rounds x {WASM_PEAK_CHAINS} f32x4 chains x {threads} threads"}
    return out


def wasm_matmul(threads: int, reps: int, shapes=XL_SHAPES, repeats: int = 3) -> list[dict]:
    """The engine's matmul alone (bench_matmul) at each shape, plain SIMD128 and relaxed FMA:
    checked against numpy, then the best of `repeats` timings of `reps` products."""

    rows = []
    rng = np.random.default_rng(0)
    with WasmBackend(threads=threads) as b:
        b.runtime.start()
        kernel = b.matmul_kernel  # the engine's default 4x8 tile, as load() sets it
        b.runtime.call("model_set_matmul_kernel", MATMUL_KERNELS.index(kernel))
        for label, M, N, K, tr in shapes:
            a = rng.standard_normal(M * K).astype(np.float32)
            bb = rng.standard_normal(K * N).astype(np.float32)
            A, B, C = b.runtime.put(a), b.runtime.put(bb), b.runtime.call("alloc", 4 * M * N)
            a2 = a.reshape(K, M).T if tr else a.reshape(M, K)  # trans_a: a is stored (K, M)
            want = a2.astype(np.float64) @ bb.reshape(K, N)
            for fma in (0, 1):
                b.runtime.call("model_set_fma", fma)
                b.runtime.call("bench_matmul", C, A, B, M, N, K, tr, 1)
                err = checked(f"wasm matmul {label} {M}x{N}x{K} fma={fma}", rel_err(b.runtime.f32(C, M * N).reshape(M, N), want))
                best = math.inf
                for _ in range(repeats):
                    t = time.perf_counter()
                    b.runtime.call("bench_matmul", C, A, B, M, N, K, tr, reps)
                    best = min(best, (time.perf_counter() - t) / reps)
                flops = 2 * M * N * K  # multiply and accumulate
                rows.append({"what": "matmul relaxed-fma" if fma else "matmul simd128", "size": f"{M}x{N}x{K}",
                             "note": f"xl {label}" + (" (a transposed)" if tr else "")
                             + f"; {kernel} tile", "flops": flops,
                             "seconds": best, "gflop_per_s": flops / best / 1e9, "max_rel_err": err,
                             "repeats": repeats, "relaxed_simd": bool(fma)})
        b.runtime.call("model_set_fma", 0)
    return rows


def measure(ctx):
    """The rows of this engine (tinygpt_bench/peak.py: PeakContext)."""
    iters, reps = (1_000_000, 1) if ctx.quick else (20_000_000, 5)
    yield {}  # no machine columns of its own
    cpu_name = ctx.machine.get("cpu_model")
    for th in sorted({1, ctx.threads}):
        res: dict = {}

        def peak_row(what, th=th, res=res):
            if not res:
                res.update(wasm_peak(th, iters, ctx.repeats))
            return res[what]

        for what in WASM_PEAK_EXPORTS:
            ctx.emit("wasm", "peak", what, lambda what=what: peak_row(what), th, cpu_name, ctx.repeats)
    ctx.emit("wasm", "matmul", "matmul", lambda: wasm_matmul(ctx.threads, reps, repeats=ctx.repeats),
             ctx.threads, cpu_name, ctx.repeats)
