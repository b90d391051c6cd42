"""Two hosts of the same wasm module, step by step in one process: wasm (wasmtime), wasm-v8 (V8
in Node) or wasm-chrome (V8 in a Chromium page). Both backends are loaded at once with the same
weights and their steps alternate (A B A B ...) so that a shared machine's load hits both
alike; each step is timed where it runs (wasmtime: the host clock around the call; Node:
process.hrtime around train_step; Chromium: performance.now() in the page's tid-0 Worker).
Prints per preset the median ms/step of steps 2..N of each, the median of the paired ratios
and whether the losses agreed to the bit.

    python dev/v8_ab.py --presets tiny,small,medium,large --threads 2 --steps 15
    python dev/v8_ab.py --presets xl --threads 2 --steps 5 --fma --profile 5   # and per kernel
    python dev/v8_ab.py --hosts wasm-v8,wasm-chrome --presets small,large --profile 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's tinygpt_bench (dev/README.md)

from tinygpt_bench import engines, model, presets  # noqa: E402

HOSTS = ("wasm", "wasm-v8", "wasm-chrome")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="tiny,small,medium,large")
    ap.add_argument("--hosts", default="wasm,wasm-v8", help=f"two of {', '.join(HOSTS)}: A,B")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--fma", action="store_true", help="relaxed-SIMD FMA matmul on both")
    ap.add_argument("--profile", type=int, default=0,
                    help="then per kernel: this many profiled steps of each host, alternating (ms a step)")
    a = ap.parse_args()
    names = a.hosts.split(",")
    if len(names) != 2 or not set(names) <= set(HOSTS):
        ap.error(f"--hosts takes two of {', '.join(HOSTS)}")
    A, B = names
    print(f"threads={a.threads} steps={a.steps} fma={'on' if a.fma else 'off'}")
    print(f"| preset | {A} ms/step | {B} ms/step | {A} / {B} (median of pairs) | losses bit-identical |")
    print("|---|---|---|---|---|")
    for name in a.presets.split(","):
        p = presets.load(name)
        flat = model.Layout(p).init(0)
        rng = np.random.default_rng(1)
        batches = [rng.integers(0, 256, size=(p.batch, p.ctx + 1), dtype=np.int32) for _ in range(a.steps)]
        with engines.create(A, threads=a.threads, relaxed_simd=a.fma) as ba, \
                engines.create(B, threads=a.threads, relaxed_simd=a.fma) as bb:
            ba.load(p, flat)
            bb.load(p, flat)
            times, losses = {A: [], B: []}, {A: [], B: []}
            for i, x in enumerate(batches):
                order = ((A, ba), (B, bb)) if i % 2 == 0 else ((B, bb), (A, ba))  # alternate who goes first
                for key, be in order:
                    t0 = time.perf_counter()
                    losses[key].append(be.step(x))
                    ms = (time.perf_counter() - t0) * 1e3
                    times[key].append(be.last_step_ns / 1e6 if be.last_step_ns is not None else ms)
            kernels = per_kernel({A: ba, B: bb}, batches, a.profile) if a.profile else None
        ratio = statistics.median(x / y for x, y in zip(times[A][1:], times[B][1:]))
        print(f"| {name} | {statistics.median(times[A][1:]):.2f} | {statistics.median(times[B][1:]):.2f} | "
              f"{ratio:.3f} | {losses[A] == losses[B]} |", flush=True)
        if kernels:
            print(f"\n{name}, per kernel (ms a step, median of {a.profile} profiled steps each, alternating):\n")
            print(f"| kernel | {A} | {B} | {A} / {B} |\n|---|---|---|---|")
            for k, (x, y) in sorted(kernels.items(), key=lambda kv: -kv[1][0]):
                print(f"| {k} | {x:.2f} | {y:.2f} | {x / y if y else float('nan'):.2f} |")
            print(flush=True)


def per_kernel(backends: dict, batches, n: int) -> dict[str, tuple[float, float]]:
    """{kernel: (A ms, B ms)} a step: the engines' own per-kernel profile (a host clock around
    each parallel region), n steps of each, alternating which goes first."""
    (ka, ba), (kb, bb) = backends.items()
    got: dict = {ka: [], kb: []}
    for i in range(n):
        order = ((ka, ba), (kb, bb)) if i % 2 == 0 else ((kb, bb), (ka, ba))
        for key, be in order:
            got[key].append(be.profile(batches[i % len(batches)]))
    names = set().union(*got[ka], *got[kb])
    med = lambda runs, k: statistics.median(r.get(k, 0.0) for r in runs)  # noqa: E731
    return {k: (med(got[ka], k), med(got[kb], k)) for k in names}


if __name__ == "__main__":
    main()
