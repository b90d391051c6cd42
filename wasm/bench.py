"""Benchmark of the WASM engine (issue 3): not a test, a measurement to record.

    python wasm/bench.py                       # all cores, small..xl, 15 steps, torch-cpu if importable
    python wasm/bench.py --threads 1,2 --presets small,xl --steps 15 --json out.json

In one run on one machine:
1. the SIMD128 peak: a multiply-add throughput kernel inside wasm (plain mul+add and
   relaxed-SIMD FMA), per thread count: the ceiling the matmul is judged against; and
   the cost of an empty parallel region (the pool's fork-join);
2. the matmul kernel alone at xl's shapes, GFLOP/s and % of that peak;
3. ms/step of the whole training step per preset and thread count (median of steps
   2..N; step 1 is reported apart as cold), tokens/s, GFLOP/s from model.flops_per_step,
   beside PyTorch CPU fp32 eager of the same model, weights, batches and thread count;
4. a per-kernel profile of the largest preset at the largest thread count.
FLOPs: 2 per multiply-add of the matmuls and attention (model.flops_per_step).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tinygpt_bench import model, presets, protocol  # noqa: E402
from tinygpt_bench.backends.wasm import WasmBackend  # noqa: E402

XL_SHAPES = [  # (M, N, K, a transposed): xl's matmuls, B*T = 1024, C = 256
    ("qkv/o fwd", 1024, 256, 256, 0),
    ("fc_in fwd", 1024, 1024, 256, 0),
    ("fc_out fwd", 1024, 256, 1024, 0),
    ("fc_in dW", 256, 1024, 1024, 1),
]


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def peak(threads: int, iters: int = 20_000_000) -> dict:
    out = {}
    with WasmBackend(threads=threads) as b:
        b._start()
        for name in ("bench_peak", "bench_peak_fma"):
            b._call(name, 100_000)
            t = time.perf_counter()
            b._call(name, iters)
            dt = time.perf_counter() - t
            out[name] = 12 * 8 * iters * threads / dt / 1e9
    return {"simd128_mul_add": out["bench_peak"], "simd128_relaxed_fma": out["bench_peak_fma"]}


def fork_join_us(threads: int, n: int = 2000) -> float:
    """Microseconds a parallel region with nothing to do costs (spin, then wait/notify)."""
    with WasmBackend(threads=threads) as b:
        b._start()
        b._call("bench_regions", 100)
        t = time.perf_counter()
        b._call("bench_regions", n)
        return (time.perf_counter() - t) / n * 1e6


def matmul(threads: int, reps: int = 5) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    with WasmBackend(threads=threads) as b:
        b._start()
        for label, M, N, K, tr in XL_SHAPES:
            A, B, C = b._call("alloc", 4 * M * K), b._call("alloc", 4 * K * N), b._call("alloc", 4 * M * N)
            b._f32(A, M * K)[:] = rng.standard_normal(M * K)
            b._f32(B, K * N)[:] = rng.standard_normal(K * N)
            for fma in (0, 1):
                b._call("model_set_fma", fma)
                b._call("bench_matmul", C, A, B, M, N, K, tr, 1)
                t = time.perf_counter()
                b._call("bench_matmul", C, A, B, M, N, K, tr, reps)
                dt = (time.perf_counter() - t) / reps
                rows.append({"shape": label, "M": M, "N": N, "K": K, "fma": bool(fma), "threads": threads,
                             "ms": dt * 1e3, "gflops": 2 * M * N * K / dt / 1e9})
    return rows


def train(backend, p, flat, batches) -> dict:
    """The protocol's own timed loop (protocol.train) over the same weights and batches."""
    steps = protocol.train(backend, protocol.Work(p, flat, batches, seed=0))
    times = [st.ms / 1e3 for st in steps]
    steady = times[1:] or times
    med = statistics.median(steady)
    return {"cold_ms": times[0] * 1e3, "median_ms": med * 1e3, "min_ms": min(steady) * 1e3,
            "max_ms": max(steady) * 1e3, "tokens_per_s": p.batch * p.ctx / med,
            "gflops": model.flops_per_step(p)["total"] / med / 1e9, "final_loss": steps[-1].loss}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ncpu = len(os.sched_getaffinity(0))
    ap.add_argument("--threads", default=f"1,{ncpu}" if ncpu > 1 else "1", help="comma list of thread counts")
    ap.add_argument("--presets", default="small,medium,large,xl")
    ap.add_argument("--steps", type=int, default=15, help="steps per measurement (the protocol's 15)")
    ap.add_argument("--relaxed", action="store_true", help="time the relaxed-SIMD FMA matmul in the steps")
    ap.add_argument("--no-spectre-guards", action="store_true",
                    help="compile without cranelift's Spectre guard on memory accesses (steps only)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch CPU peer")
    ap.add_argument("--json", help="write all results to this file")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    out = {"machine": {"cpu": cpu_model(), "cores": ncpu, "python": platform.python_version()},
           "steps": args.steps, "peak": {}, "matmul": [], "train": [], "profile": {}}
    print(f"# {out['machine']['cpu']}, {ncpu} cores; steps {args.steps}", flush=True)
    peak(max(threads), iters=50_000_000)  # warm-up: let clocks settle before measuring
    for th in threads:
        out["peak"][th] = pk = peak(th)
        pk["fork_join_us"] = fork_join_us(th)
        print(f"peak threads={th}: SIMD128 mul+add {pk['simd128_mul_add']:.1f} GFLOP/s, "
              f"relaxed FMA {pk['simd128_relaxed_fma']:.1f} GFLOP/s; an empty parallel region "
              f"{pk['fork_join_us']:.1f} us", flush=True)
        for r in matmul(th):
            ref = pk["simd128_relaxed_fma" if r["fma"] else "simd128_mul_add"]
            r["pct_of_peak"] = 100 * r["gflops"] / ref
            out["matmul"].append(r)
            print(f"  matmul {r['shape']:11s} {r['M']}x{r['N']}x{r['K']} fma={int(r['fma'])}: {r['ms']:.2f} ms "
                  f"{r['gflops']:.1f} GFLOP/s ({r['pct_of_peak']:.0f}% of peak)", flush=True)
    torch_ok = False
    if not args.no_torch:
        try:
            from tinygpt_bench.backends.torch_peer import TorchBackend

            torch_ok = True
        except Exception as e:  # torch missing: say so, keep going
            print(f"# torch-cpu peer unavailable: {e}")
    for name in args.presets.split(","):
        p = presets.load(name)
        flat = model.Layout(p).init(0)
        rng = np.random.default_rng(1)
        batches = [rng.integers(0, 256, (p.batch, p.ctx + 1), dtype=np.int32) for _ in range(args.steps)]
        for th in threads:
            with WasmBackend(threads=th, relaxed_simd=args.relaxed, spectre_guards=not args.no_spectre_guards) as b:
                r = {"preset": name, "backend": "wasm", "threads": th, **train(b, p, flat, batches)}
            out["train"].append(r)
            line = f"{name:7s} threads={th:2d} wasm {r['median_ms']:8.1f} ms/step ({r['gflops']:.1f} GFLOP/s)"
            if torch_ok:
                tb = TorchBackend(device="cpu", threads=th)
                try:
                    t = {"preset": name, "backend": "torch-cpu", "threads": th, **train(tb, p, flat, batches)}
                finally:
                    tb.close()
                out["train"].append(t)
                line += (f" | torch-cpu {t['median_ms']:8.1f} ms/step ({t['gflops']:.1f} GFLOP/s) | wasm/torch "
                         f"{r['median_ms'] / t['median_ms']:.2f}x | final loss rel diff "
                         f"{abs(r['final_loss'] - t['final_loss']) / t['final_loss']:.1e}")
            print(line, flush=True)
    last = presets.load(args.presets.split(",")[-1])
    with WasmBackend(threads=max(threads), relaxed_simd=args.relaxed, spectre_guards=not args.no_spectre_guards) as b:
        b.load(last, model.Layout(last).init(0))
        x = np.random.default_rng(1).integers(0, 256, (last.batch, last.ctx + 1), dtype=np.int32)
        b.step(x)
        ms = b.profile(x, steps=2)
        out["profile"] = prof = {k: {"ms": v, "calls": b.profile_calls[k]} for k, v in ms.items()}
    total = sum(v["ms"] for v in prof.values())
    print(f"profile {last.name} threads={max(threads)} ({total:.1f} ms in parallel regions a step):")
    for k, v in sorted(prof.items(), key=lambda kv: -kv[1]["ms"]):
        print(f"  {k:14s} {v['ms']:8.1f} ms {100 * v['ms'] / total:5.1f}%  {v['calls']} regions")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
