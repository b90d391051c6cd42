"""Where a curve measurement's wall time goes beyond its timed steps (issue 17, docs/harness.md).

Runs curve's own measurement (`runner.measure`: one worker process per repeat, as `curve`
runs it) and prints, per preset and backend, the median over repeats of each stage of
`runner.harness_timeline`, then the parent's per-preset work (corpus, weights and batches,
preflight, the float64 reference) that curve does once per preset, not per measurement.

    python dev/harness_profile.py --presets tiny,small,medium,large --backends webgpu,webgpu-dawn,wasm,wasm-v8
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# curve's worker is started by spawn, which re-imports the parent's main module in the worker;
# `tinygpt-bench` is a script importing the CLI, so this one imports it too, to time the same start
from tinygpt_bench import cli  # noqa: E402,F401
from tinygpt_bench import corpus as corpus_mod  # noqa: E402
from tinygpt_bench import curve, presets, protocol, runner  # noqa: E402

STAGES = ("entered", "work", "imported", "created", "described", "loaded", "steps", "trained", "done", "end")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,small,medium,large")
    ap.add_argument("--backends", default="webgpu,webgpu-dawn,wasm,wasm-v8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=protocol.DEFAULT_STEPS)
    a = ap.parse_args()
    t = time.perf_counter()
    corp = corpus_mod.load("synthetic")
    print(f"corpus: {time.perf_counter() - t:.3f} s (once per run)")
    names = a.backends.split(",")
    runner.worker.start_server(names)  # as curve.run does, before the first preset
    runner.worker.wait_for_server(names)  # and before the first measurement
    print("| preset | backend | wall s | harness s | " + " | ".join(STAGES) + " |")
    print("|---|---|---:|---:|" + "---:|" * len(STAGES))
    for pname in a.presets.split(","):
        p = presets.load(pname)
        s = runner.Settings(presets=[p], backends=names, steps=a.steps, repeats=a.repeats)
        t = time.perf_counter()
        work = protocol.prepare(p, corp, a.steps, 0)
        _ = work.digest
        t_work = time.perf_counter() - t
        t = time.perf_counter()
        for b in names:
            curve._preflight_refusal(p, b, s)
        t_pre = time.perf_counter() - t
        t = time.perf_counter()
        curve._reference_losses(work, s)
        t_ref = time.perf_counter() - t
        accs = {b: runner.Series() for b in names}
        t = time.perf_counter()
        with protocol.handed_over(work) as handed:
            t_hand = time.perf_counter() - t
            for r in range(1, a.repeats + 1):
                for b in names:
                    accs[b].add(runner.measure(runner.job(b, handed, s), s.backends, s.steps, s.timeout_s))
        for b in names:
            acc = accs[b]
            if acc.status != "ok":
                print(f"| {pname} | {b} | {acc.status} at {acc.stage}: {acc.error} |")
                continue
            med = {k: statistics.median(tl.get(k, 0.0) for tl in acc.timelines) for k in STAGES}
            wall = statistics.median(sum(tl.values()) for tl in acc.timelines)
            print(f"| {pname} | {b} | {wall:.2f} | {statistics.median(acc.harness):.2f} | "
                  + " | ".join(f"{med[k]:.2f}" for k in STAGES) + " |", flush=True)
        print(f"| {pname} | (parent, once per preset) | work {t_work:.2f} s, preflight of {len(names)} backends "
              f"{t_pre:.2f} s, float64 reference {t_ref:.2f} s, weights handed over {t_hand:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
