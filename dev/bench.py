"""Benchmark of the WASM engine (issue 3): not a test, a measurement to record.

    python dev/bench.py                       # all cores, small..xl, 15 steps, torch-cpu if importable
    python dev/bench.py --threads 1,2 --presets small,xl --steps 15 --json out.json

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

A/B of the matmul's 4x8 tile variants (one module; WasmBackend(matmul_kernel=...,
relaxed_simd=...)): with --matmul-kernels, steps 2 and 3 run once per variant and the
PyTorch peer and the profile are skipped; a compact table comes at the end:

    python dev/bench.py --threads 1,16 --presets xl --steps 6 --matmul-kernels shuffle,splat,bcast,fma --json ab.json

Variants: shuffle (default: one v128 load of 4 A rows + 4 i32x4.shuffle a k), splat
(4 v128.load32_splat a k), bcast (A packed pre-broadcast: 4 v128 loads a k, no shuffle),
and fma, fma-splat, fma-bcast (the same with relaxed-SIMD FMA). The matmul alone is
timed in rounds, variants interleaved within each round, median of the rounds;
--steps 0 skips the training steps.
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
from tinygpt_bench.engines.wasm.backend import MATMUL_KERNELS, WasmBackend  # noqa: E402
from tinygpt_bench.engines.wasm.peak import XL_SHAPES, wasm_peak  # noqa: E402  (shared with `tinygpt-bench peak`)


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def peak(threads: int, iters: int = 20_000_000) -> dict:
    """GFLOP/s of bench_peak and bench_peak_fma, each checked against its recurrence first
    (tinygpt_bench.engines.wasm.peak.wasm_peak, the same measurement `tinygpt-bench peak` records)."""
    return {k: v["gflop_per_s"] for k, v in wasm_peak(threads, iters, repeats=1).items()}


def fork_join_us(threads: int, n: int = 2000) -> float:
    """Microseconds a parallel region with nothing to do costs (spin, then wait/notify)."""
    with WasmBackend(threads=threads) as b:
        b.runtime.start()
        b.runtime.call("bench_regions", 100)
        t = time.perf_counter()
        b.runtime.call("bench_regions", n)
        return (time.perf_counter() - t) / n * 1e6


def matmul(threads: int, reps: int = 5) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    with WasmBackend(threads=threads) as b:
        b.runtime.start()
        for label, M, N, K, tr in XL_SHAPES:
            A, B = b.runtime.put(rng.standard_normal(M * K)), b.runtime.put(rng.standard_normal(K * N))
            C = b.runtime.call("alloc", 4 * M * N)
            for fma in (0, 1):  # the default tile (shuffle); --matmul-kernels compares the tiles
                b.runtime.call("model_set_fma", fma)
                b.runtime.call("bench_matmul", C, A, B, M, N, K, tr, 1)
                t = time.perf_counter()
                b.runtime.call("bench_matmul", C, A, B, M, N, K, tr, reps)
                dt = (time.perf_counter() - t) / reps
                rows.append({"shape": label, "M": M, "N": N, "K": K, "fma": bool(fma), "threads": threads,
                             "ms": dt * 1e3, "gflops": 2 * M * N * K / dt / 1e9})
    return rows


def variant(name: str) -> dict:
    """'shuffle' -> plain mul+add with that tile; 'fma' / 'fma-splat' -> relaxed-SIMD FMA."""
    relaxed = name == "fma" or name.startswith("fma-")
    kernel = "shuffle" if name == "fma" else name[4:] if relaxed else name
    if kernel not in MATMUL_KERNELS:
        raise SystemExit(f"--matmul-kernels: unknown variant {name!r}; use {', '.join(MATMUL_KERNELS)}, "
                         f"fma, {', '.join('fma-' + k for k in MATMUL_KERNELS[1:])}")
    return {"name": name, "relaxed_simd": relaxed, "matmul_kernel": kernel}


def matmul_ab(threads: int, variants: list[dict], reps: int = 3, rounds: int = 3,
              spectre_guards: bool = False) -> list[dict]:
    """The matmul alone at xl's shapes per variant: rounds x (every variant, every shape),
    reps calls timed each; the median over rounds. Interleaving keeps clock or neighbour
    drift from favouring one variant."""
    rng = np.random.default_rng(0)
    times: dict[tuple[str, str], list[float]] = {}
    with WasmBackend(threads=threads, spectre_guards=spectre_guards) as b:
        b.runtime.start()
        bufs = []
        for label, M, N, K, tr in XL_SHAPES:
            A, B = b.runtime.put(rng.standard_normal(M * K)), b.runtime.put(rng.standard_normal(K * N))
            C = b.runtime.call("alloc", 4 * M * N)
            bufs.append((label, M, N, K, tr, A, B, C))
        for _ in range(rounds):
            for v in variants:
                b.runtime.call("model_set_fma", int(v["relaxed_simd"]))
                if b.runtime.call("model_set_matmul_kernel", MATMUL_KERNELS.index(v["matmul_kernel"])):
                    raise SystemExit("the module has no model_set_matmul_kernel variant " + v["matmul_kernel"])
                for label, M, N, K, tr, A, B, C in bufs:
                    b.runtime.call("bench_matmul", C, A, B, M, N, K, tr, 1)
                    t = time.perf_counter()
                    b.runtime.call("bench_matmul", C, A, B, M, N, K, tr, reps)
                    times.setdefault((v["name"], label), []).append((time.perf_counter() - t) / reps)
    rows = []
    for v in variants:
        for label, M, N, K, tr, *_ in bufs:
            dt = statistics.median(times[(v["name"], label)])
            rows.append({"variant": v["name"], "shape": label, "M": M, "N": N, "K": K, "fma": v["relaxed_simd"],
                         "matmul_kernel": v["matmul_kernel"], "threads": threads, "ms": dt * 1e3,
                         "gflops": 2 * M * N * K / dt / 1e9,
                         "gflops_rounds": [2 * M * N * K / x / 1e9 for x in times[(v["name"], label)]]})
    return rows


def peak_and_fork_join(th: int) -> dict:
    """The SIMD128 peaks and an empty parallel region's cost at th threads, printed."""
    pk = peak(th)
    pk["fork_join_us"] = fork_join_us(th)
    print(f"peak threads={th}: SIMD128 mul+add {pk['simd128_mul_add']:.1f} GFLOP/s, "
          f"relaxed FMA {pk['simd128_relaxed_fma']:.1f} GFLOP/s; an empty parallel region "
          f"{pk['fork_join_us']:.1f} us", flush=True)
    return pk


def ab_main(args, threads: list[int], names: list[str], out: dict) -> int:
    """--matmul-kernels: peak, the matmul per variant, steps per variant; a table at the end."""
    variants = [variant(n) for n in names]
    step_threads = [int(t) for t in args.step_threads.split(",")] if args.step_threads else threads
    out["variants"] = variants
    out["matmul_ab"], out["train_ab"] = [], []
    peak(max(threads), iters=50_000_000)  # warm-up: let clocks settle before measuring
    for th in threads:
        out["peak"][th] = pk = peak_and_fork_join(th)
        for r in matmul_ab(th, variants, spectre_guards=args.spectre_guards):
            r["pct_of_peak"] = 100 * r["gflops"] / pk["simd128_relaxed_fma" if r["fma"] else "simd128_mul_add"]
            out["matmul_ab"].append(r)
            print(f"  matmul {r['variant']:9s} {r['shape']:11s} {r['M']}x{r['N']}x{r['K']}: {r['ms']:7.2f} ms "
                  f"{r['gflops']:6.1f} GFLOP/s ({r['pct_of_peak']:.0f}% of peak)", flush=True)
    if args.steps > 0:
        for name in args.presets.split(","):
            p = presets.load(name)
            flat = model.Layout(p).init(0)
            rng = np.random.default_rng(1)
            batches = [rng.integers(0, 256, (p.batch, p.ctx + 1), dtype=np.int32) for _ in range(args.steps)]
            for th in step_threads:
                for v in variants:
                    with WasmBackend(threads=th, relaxed_simd=v["relaxed_simd"], matmul_kernel=v["matmul_kernel"],
                                     spectre_guards=args.spectre_guards) as b:
                        r = {"preset": name, "variant": v["name"], "threads": th, **train(b, p, flat, batches)}
                    out["train_ab"].append(r)
                    print(f"{name:7s} threads={th:2d} {v['name']:9s} {r['median_ms']:8.1f} ms/step "
                          f"({r['gflops']:.1f} GFLOP/s), final loss {r['final_loss']:.6f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    # the compact table
    print(f"\n## matmul variants A/B: {out['machine']['cpu']}, {out['machine']['cores']} cores"
          f"{', Spectre guards on' if args.spectre_guards else ''}")
    shapes = [s[0] for s in XL_SHAPES]
    print("matmul at xl's shapes, GFLOP/s (% of the SIMD128 peak of its arithmetic: mul+add, or FMA for fma*)")
    print(f"| threads | variant | {' | '.join(shapes)} | mean GFLOP/s | mean % peak |")
    print("|---|---|" + "---|" * (len(shapes) + 2))
    for th in threads:
        for v in variants:
            rs = [r for r in out["matmul_ab"] if r["threads"] == th and r["variant"] == v["name"]]
            cells = " | ".join(f"{r['gflops']:.1f} ({r['pct_of_peak']:.0f}%)" for r in rs)
            g = statistics.mean(r["gflops"] for r in rs)
            pc = statistics.mean(r["pct_of_peak"] for r in rs)
            print(f"| {th} | {v['name']} | {cells} | {g:.1f} | {pc:.0f}% |")
    if out["train_ab"]:
        base = variants[0]["name"]
        print(f"whole step, median ms of steps 2..{args.steps} (vs {base})")
        print(f"| preset | threads | {' | '.join(v['name'] for v in variants)} |")
        print("|---|---|" + "---|" * len(variants))
        for name in args.presets.split(","):
            for th in step_threads:
                rs = {r["variant"]: r for r in out["train_ab"] if r["preset"] == name and r["threads"] == th}
                b0 = rs[base]["median_ms"]
                cells = " | ".join(f"{rs[v['name']]['median_ms']:.1f} ({rs[v['name']]['median_ms'] / b0:.3f}x)"
                                   for v in variants)
                print(f"| {name} | {th} | {cells} |")
        print("final losses equal across non-FMA variants: " + str(len({
            (r["preset"], r["threads"], r["final_loss"]) for r in out["train_ab"] if not variant(r["variant"])["relaxed_simd"]})
            == len({(r["preset"], r["threads"]) for r in out["train_ab"] if not variant(r["variant"])["relaxed_simd"]})))
    return 0


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
    ap.add_argument("--relaxed", action=argparse.BooleanOptionalAction, default=None,
                    help="time the relaxed-SIMD FMA matmul in the steps (default: the engine's choice for this CPU)")
    ap.add_argument("--spectre-guards", action="store_true",
                    help="compile with cranelift's Spectre guard on memory accesses, wasmtime's default (the "
                    "engine's is off; steps; with --matmul-kernels the matmul too)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch CPU peer")
    ap.add_argument("--matmul-kernels", help="A/B of the matmul tile variants, comma list of "
                    "shuffle, splat, bcast, fma, fma-splat, fma-bcast (the first is the baseline): the matmul alone "
                    "per variant and thread count, then --steps steps of --presets per variant (0: none); no torch, no "
                    "profile")
    ap.add_argument("--step-threads", help="with --matmul-kernels: thread counts for the steps (default: --threads)")
    ap.add_argument("--json", help="write all results to this file")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    out = {"machine": {"cpu": cpu_model(), "cores": ncpu, "python": platform.python_version()},
           "steps": args.steps, "peak": {}, "matmul": [], "train": [], "profile": {}}
    print(f"# {out['machine']['cpu']}, {ncpu} cores; steps {args.steps}", flush=True)
    if args.matmul_kernels:
        return ab_main(args, threads, args.matmul_kernels.split(","), out)
    peak(max(threads), iters=50_000_000)  # warm-up: let clocks settle before measuring
    for th in threads:
        out["peak"][th] = pk = peak_and_fork_join(th)
        for r in matmul(th):
            ref = pk["simd128_relaxed_fma" if r["fma"] else "simd128_mul_add"]
            r["pct_of_peak"] = 100 * r["gflops"] / ref
            out["matmul"].append(r)
            print(f"  matmul {r['shape']:11s} {r['M']}x{r['N']}x{r['K']} fma={int(r['fma'])}: {r['ms']:.2f} ms "
                  f"{r['gflops']:.1f} GFLOP/s ({r['pct_of_peak']:.0f}% of peak)", flush=True)
    torch_ok = False
    if not args.no_torch:
        try:
            from tinygpt_bench.engines.torch.backend import TorchBackend

            torch_ok = True
        except Exception as e:  # torch missing: say so, keep going
            print(f"# torch-cpu peer unavailable: {e}")
    for name in args.presets.split(","):
        p = presets.load(name)
        flat = model.Layout(p).init(0)
        rng = np.random.default_rng(1)
        batches = [rng.integers(0, 256, (p.batch, p.ctx + 1), dtype=np.int32) for _ in range(args.steps)]
        for th in threads:
            with WasmBackend(threads=th, relaxed_simd=args.relaxed, spectre_guards=args.spectre_guards) as b:
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
    with WasmBackend(threads=max(threads), relaxed_simd=args.relaxed, spectre_guards=args.spectre_guards) as b:
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
