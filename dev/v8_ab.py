"""wasm (wasmtime) against wasm-v8 (the same module in V8), step by step in one process:
both backends loaded at once with the same weights, their steps alternating (A B A B ...) so
that a shared machine's load hits both alike; each step timed where it runs (wasmtime: the
host clock around the call; V8: process.hrtime around train_step). Prints per preset the
median ms/step of steps 2..N of each, the median of the paired ratios and whether the
losses agreed to the bit.

    python dev/v8_ab.py --presets tiny,small,medium,large --threads 2 --steps 15
    python dev/v8_ab.py --presets xl --threads 2 --steps 5 --fma --profile 5   # and per kernel
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's tinygpt_bench (dev/README.md)

from tinygpt_bench import model, presets  # noqa: E402
from tinygpt_bench.engines.wasm.backend import WasmBackend  # noqa: E402
from tinygpt_bench.engines.wasm.v8 import WasmV8Backend  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="tiny,small,medium,large")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--fma", action="store_true", help="relaxed-SIMD FMA matmul on both")
    ap.add_argument("--profile", type=int, default=0,
                    help="then per kernel: this many profiled steps of each engine, alternating (ms a step)")
    a = ap.parse_args()
    print(f"threads={a.threads} steps={a.steps} fma={'on' if a.fma else 'off'}")
    print("| preset | wasm ms/step | wasm-v8 ms/step | wasm / wasm-v8 (median of pairs) | losses bit-identical |")
    print("|---|---|---|---|---|")
    for name in a.presets.split(","):
        p = presets.load(name)
        flat = model.Layout(p).init(0)
        rng = np.random.default_rng(1)
        batches = [rng.integers(0, 256, size=(p.batch, p.ctx + 1), dtype=np.int32) for _ in range(a.steps)]
        with WasmBackend(threads=a.threads, relaxed_simd=a.fma) as wt, \
                WasmV8Backend(threads=a.threads, relaxed_simd=a.fma) as v8:
            wt.load(p, flat)
            v8.load(p, flat)
            tw, tv, lw, lv = [], [], [], []
            for i, x in enumerate(batches):
                first, second = (wt, v8) if i % 2 == 0 else (v8, wt)  # alternate who goes first
                for be in (first, second):
                    t0 = time.perf_counter()
                    loss = be.step(x)
                    ms = (time.perf_counter() - t0) * 1e3
                    if be is v8:
                        tv.append(v8.last_step_ns / 1e6)
                        lv.append(loss)
                    else:
                        tw.append(ms)
                        lw.append(loss)
            kernels = per_kernel(wt, v8, batches, a.profile) if a.profile else None
        ratio = statistics.median(w / v for w, v in zip(tw[1:], tv[1:]))
        print(f"| {name} | {statistics.median(tw[1:]):.2f} | {statistics.median(tv[1:]):.2f} | {ratio:.3f} | "
              f"{lw == lv} |", flush=True)
        if kernels:
            print(f"\n{name}, per kernel (ms a step, median of {a.profile} profiled steps each, alternating):\n")
            print("| kernel | wasm | wasm-v8 | wasm / wasm-v8 |\n|---|---|---|---|")
            for k, (w, v) in sorted(kernels.items(), key=lambda kv: -kv[1][0]):
                print(f"| {k} | {w:.2f} | {v:.2f} | {w / v if v else float('nan'):.2f} |")
            print(flush=True)


def per_kernel(wt, v8, batches, n: int) -> dict[str, tuple[float, float]]:
    """{kernel: (wasm ms, wasm-v8 ms)} a step: the engines' own per-kernel profile (a host clock
    around each parallel region), n steps of each, alternating which goes first."""
    got: dict = {"wasm": [], "v8": []}
    for i in range(n):
        order = (("wasm", wt), ("v8", v8)) if i % 2 == 0 else (("v8", v8), ("wasm", wt))
        for key, be in order:
            got[key].append(be.profile(batches[i % len(batches)]))
    names = set().union(*got["wasm"], *got["v8"])
    med = lambda runs, k: statistics.median(r.get(k, 0.0) for r in runs)  # noqa: E731
    return {k: (med(got["wasm"], k), med(got["v8"], k)) for k in names}


if __name__ == "__main__":
    main()
