"""Where multi-thread scaling is lost (issue 3): a measurement script, not a test.

    python dev/scaling.py --threads 1,2,4,8,16 --rounds 5 --json scaling.json

One process, one pool per thread count (all alive at once), and rounds in which every
thread count runs every probe in turn, so clock or neighbour drift hits all of them alike:
- peak: bench_peak (12 independent f32x4 mul+add chains a thread, no memory traffic);
  it scales with threads unless threads share a core's ports (SMT siblings) or clocks;
- matmul: the engine's matmul at xl's fc_in shape (1024x1024x256);
- regions: empty parallel regions (the pool's fork-join cost).
Per probe: wall time, and the process's CPU time over the same interval (every thread,
spinning included). busy = CPU / wall is how many threads were on a CPU on average: near N
with no speed-up means the threads ran but slowly (shared core, lower clocks); below N
means threads were off CPU (descheduled vCPUs, waiting). Medians over rounds are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tinygpt_bench.engines.wasm.backend import WasmBackend  # noqa: E402


def timed(fn) -> tuple[float, float]:
    c, t = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ncpu = os.cpu_count() or 1
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default=",".join(str(n) for n in (1, 2, 4, 8, 16) if n <= ncpu))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--peak-iters", type=int, default=5_000_000, help="rounds of 12 chains a thread")
    ap.add_argument("--matmul-flops", type=float, default=20e9, help="matmul FLOPs a probe, split over reps")
    ap.add_argument("--json")
    a = ap.parse_args()
    counts = [int(x) for x in a.threads.split(",")]
    M, N, K = 1024, 1024, 256
    rng = np.random.default_rng(0)
    pools = {}
    for n in counts:
        b = WasmBackend(threads=n)
        b.runtime.start()
        A, B = b.runtime.put(rng.standard_normal(M * K)), b.runtime.put(rng.standard_normal(K * N))
        C = b.runtime.call("alloc", 4 * M * N)
        b.runtime.call("model_set_fma", 0)
        b.runtime.call("bench_matmul", C, A, B, M, N, K, 0, 1)
        b.runtime.call("bench_peak", 1000)
        pools[n] = (b, A, B, C)
    mm_reps = max(1, int(a.matmul_flops / (2 * M * N * K)))
    rows = []
    try:
        for r in range(a.rounds):
            for n in counts:
                b, A, B, C = pools[n]
                probes = {
                    "peak": (lambda: b.runtime.call("bench_peak", a.peak_iters), 12 * 4 * 2 * a.peak_iters * n),
                    "matmul": (lambda: b.runtime.call("bench_matmul", C, A, B, M, N, K, 0, mm_reps), 2 * M * N * K * mm_reps),
                    "regions": (lambda: b.runtime.call("bench_regions", 2000), 0),
                }
                for name, (fn, flops) in probes.items():
                    wall, cpu = timed(fn)
                    rows.append({"round": r, "threads": n, "probe": name, "wall_s": wall, "cpu_s": cpu,
                                 "gflops": flops / wall / 1e9 if flops else None,
                                 "us_per_region": wall / 2000 * 1e6 if name == "regions" else None})
    finally:
        for b, *_ in pools.values():
            b.close()
    print(f"cpu: {ncpu} logical; rounds {a.rounds}; medians over rounds")
    print("| threads | peak GFLOP/s | x1 | busy | matmul GFLOP/s | x1 | busy | region us | busy |")
    print("|---|---|---|---|---|---|---|---|---|")
    med = {}
    for n in counts:
        for p in ("peak", "matmul", "regions"):
            sel = [x for x in rows if x["threads"] == n and x["probe"] == p]
            med[n, p] = {k: statistics.median(x[k] for x in sel) for k in ("wall_s", "cpu_s")}
            med[n, p]["gflops"] = statistics.median(x["gflops"] for x in sel) if p != "regions" else None
            med[n, p]["busy"] = statistics.median(x["cpu_s"] / x["wall_s"] for x in sel)
    base = counts[0]
    for n in counts:
        pk, mm, rg = med[n, "peak"], med[n, "matmul"], med[n, "regions"]
        print(f"| {n} | {pk['gflops']:.1f} | {pk['gflops'] / med[base, 'peak']['gflops']:.2f} | {pk['busy']:.2f} "
              f"| {mm['gflops']:.1f} | {mm['gflops'] / med[base, 'matmul']['gflops']:.2f} | {mm['busy']:.2f} "
              f"| {rg['wall_s'] / 2000 * 1e6:.1f} | {rg['busy']:.2f} |")
    spread = {n: [round(x["gflops"], 1) for x in rows if x["threads"] == n and x["probe"] == "matmul"] for n in counts}
    print("matmul GFLOP/s by round:", spread)
    if a.json:
        Path(a.json).write_text(json.dumps({"cpu_count": ncpu, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
