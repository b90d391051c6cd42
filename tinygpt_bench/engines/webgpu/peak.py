"""The WebGPU engine's ceilings for `tinygpt-bench peak` (tinygpt_bench/peak.py runs them), on
each implementation (rows named webgpu and webgpu-dawn): the adapter's fp32 FMA throughput peak
(kernels/peak.wgsl: 8 independent vec4 fma chains an invocation, enough workgroups to fill the
device); the engine's own matmul (its kernel planning, time_engine_matmul) at 1024^3 and 4096^3
(2048^3 at most on a CPU adapter such as lavapipe, where 4096^3 takes minutes), and at the
largest size the fastest of its matmul kernels. Each checked against numpy (or the closed form
of its recurrence) before it is timed; GPU time by timestamp queries where the adapter has them."""

from __future__ import annotations

import math
import time

import numpy as np

from tinygpt_bench import host
from tinygpt_bench.errors import UserError
from tinygpt_bench.kernelcheck import checked, rel_err

WGPU_PEAK_CHAINS, WGPU_PEAK_WG = 8, 256  # vec4 chains an invocation, invocations a workgroup (peak.wgsl)
WGPU_PEAK_X, WGPU_PEAK_Y = 0.999, 0.001


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
    err = checked(f"webgpu peak.wgsl ({iters} rounds)",
                   rel_err(gpu.read(out, count=n), webgpu_peak_expected(n, iters)), 1e-3)
    t = _gpu_seconds(gpu, p, 2, warm=True)  # the calibration below follows without idle gaps
    while t < seconds / 8 and iters < 1 << 22:  # grow past the launch overhead before extrapolating
        iters *= 8
        t = _gpu_seconds(gpu, program(iters), 1)
    iters = int(min(max(iters * seconds / max(t, 1e-7), 64), 1 << 22))  # scaled to about `seconds`
    p = program(iters)
    p.run()
    err = max(err, checked(f"webgpu peak.wgsl ({iters} rounds)",
                            rel_err(gpu.read(out, count=n), webgpu_peak_expected(n, iters)), 1e-3))
    best = _gpu_seconds(gpu, p, repeats, warm=True)
    flops = n * iters * WGPU_PEAK_CHAINS * 4 * 2  # invocations x rounds x chains x lanes x multiply-add
    for buf in (xy, out):
        buf.destroy()
    return {"gflop_per_s": flops / best / 1e9, "seconds": best, "flops": flops, "max_rel_err": err,
            "size": f"{iters} rounds x {WGPU_PEAK_CHAINS} vec4 chains x {n} invocations",
            "note": "timestamp queries" if gpu.timestamps else "host time over 3 submits"}


def time_engine_matmul(gpu, size: int, variant: str | None = None, reps: int = 3) -> dict:
    """The WebGPU engine's matmul (ops.matmul, its own kernel planning unless `variant` names
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
    """The engine's matmul at size^3 with its own kernel planning (ops.plan_matmul), timed by
    time_engine_matmul (which spot-checks 8 rows against numpy; checked here)."""
    if not gpu.timestamps:
        raise UserError("the adapter has no timestamp-query feature, which the engine's matmul is timed with")
    r = time_engine_matmul(gpu, size, None, reps=repeats)
    err = checked(f"webgpu matmul {size}^3", r["rel_err"])
    flops = 2 * size ** 3  # multiply and accumulate
    return {"gflop_per_s": r["tflops"] * 1e3, "seconds": r["gpu_ms"] / 1e3, "flops": flops, "max_rel_err": err,
            "size": f"{size}x{size}x{size}",
            "note": f"kernels {' + '.join(r['kernels'])}; timestamp queries"}


def adapter_columns(gpu) -> dict:
    """The adapter's columns of every peaks.csv row."""
    info = dict(gpu.adapter.info)
    return dict(adapter=info.get("device"), adapter_type=info.get("adapter_type"),
                adapter_driver=info.get("description"), adapter_api=info.get("backend_type"),
                software_adapter=host.is_software_adapter(info))


def webgpu_matmul_best(gpu, size: int, repeats: int) -> dict:
    """The engine's fastest square product at size^3 over every kernel it has for one (ops.ENTRIES
    but the 32 x 32 direct4 of small products; the 128 x 128 ones also with their 16-byte loads,
    "+vec4", the tuning matmul_vec4), each checked as time_engine_matmul checks: the ceiling of
    the WGSL matmul on this adapter, which the step's plan may not reach for its shapes (the plan
    picks per shape and adapter type, runtime.tuning_for)."""
    from tinygpt_bench.engines.webgpu import ops

    if not gpu.timestamps:
        raise UserError("the adapter has no timestamp-query feature, which the engine's matmul is timed with")
    runs = {}
    before = getattr(gpu, "matmul_vec4", False)
    try:
        for v in [v for v in ops.ENTRIES if v != "direct4"]:  # in order: the note lists them so
            for vec4 in ((False, True) if v in ops.BIG_VARIANTS else (False,)):
                gpu.matmul_vec4 = vec4
                runs[v + ("+vec4" if vec4 else "")] = time_engine_matmul(gpu, size, v, reps=repeats)
    finally:
        gpu.matmul_vec4 = before
    for v, r in runs.items():
        checked(f"webgpu matmul {v} {size}^3", r["rel_err"])
    name = min(runs, key=lambda v: runs[v]["gpu_ms"])
    best = runs[name]
    others = ", ".join(f"{v} {r['tflops'] * 1e3:,.0f}" for v, r in runs.items() if r is not best)
    loads = ", 16-byte loads" if name.endswith("+vec4") else ""
    return {"gflop_per_s": best["tflops"] * 1e3, "seconds": best["gpu_ms"] / 1e3, "flops": 2 * size ** 3,
            "max_rel_err": best["rel_err"], "size": f"{size}x{size}x{size}",
            "note": f"kernels {' + '.join(best['kernels'])}{loads} (others, GFLOP/s: {others}); timestamp queries"}


def measure(ctx):
    """The rows of this engine (tinygpt_bench/peak.py: PeakContext), for each implementation its
    backend stands for (webgpu: wgpu-native, webgpu-dawn: Dawn; the same WGSL, compiled by Naga or
    by Tint): the FMA peak, the planned matmul at each size, and at the largest the fastest of the
    engine's kernels (webgpu_matmul_best). Yields the adapter's machine columns first (every row
    of the run carries them: the first implementation's adapter), then measures."""
    from tinygpt_bench.engines.webgpu.backend import DawnWebGPUBackend, WebGPUBackend
    from tinygpt_bench.engines.webgpu.runtime import Gpu

    seconds, sizes, check = (0.005, (128, 256), 64) if ctx.quick else (0.05, (1024, 4096), 256)
    gpus, errors = {}, {}
    for cls in (WebGPUBackend, DawnWebGPUBackend):
        try:
            host.quiet_mesa()
            gpus[cls.name] = Gpu(ctx.adapter, implementation=cls.implementation)
        except Exception as e:  # no adapter: the rows say so, the other engines are measured
            errors[cls.name] = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
    yield adapter_columns(next(iter(gpus.values()))) if gpus else {}
    for name, error in errors.items():
        ctx.emit(name, "peak", "fp32_fma", lambda error=error: {"status": "skipped", "note": error})
    for name, gpu in gpus.items():
        gpu_name = gpu.adapter.info.get("device")
        ctx.emit(name, "peak", "fp32_fma", lambda gpu=gpu: webgpu_peak(gpu, seconds, ctx.repeats), None, gpu_name,
                 ctx.repeats)
        ctx.emit(name, "matmul", "matmul check", lambda gpu=gpu: webgpu_matmul(gpu, check, 1), None, gpu_name, 1)
        cpu_adapter = gpu.adapter.info["adapter_type"] == "CPU"  # 4096^3 takes minutes on lavapipe
        todo = [min(x, 2048) for x in sizes] if cpu_adapter else list(sizes)
        for s in todo:
            ctx.emit(name, "matmul", "matmul", lambda gpu=gpu, s=s: webgpu_matmul(gpu, s, ctx.repeats), None,
                     gpu_name, ctx.repeats)
        ctx.emit(name, "matmul", "matmul best kernel", lambda gpu=gpu, s=todo[-1]: webgpu_matmul_best(gpu, s, ctx.repeats),
                 None, gpu_name, ctx.repeats)
