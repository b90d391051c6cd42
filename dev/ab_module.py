"""Interleaved A/B of two builds of the wasm module on one machine, in one process: the
training step of one preset, the modules taking turns round after round (drift hits them
alike), median of steps 2..N of each turn, and whether their losses agree bit for bit.

    git show HEAD~1:wasm/tinygpt.wasm > /tmp/old.wasm
    python dev/ab_module.py /tmp/old.wasm wasm/tinygpt.wasm --threads 16 --preset xl --steps 6 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from tinygpt_bench import model, presets, protocol  # noqa: E402
from tinygpt_bench.engines.wasm import backend as wasm  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs=2, help="the two .wasm files, A then B")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--preset", default="xl")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true",
                    help="also a per-kernel profile (2 steps) each turn; medians of A and B per kernel at the end")
    args = ap.parse_args()
    p = presets.load(args.preset)
    rng = np.random.default_rng(0)
    batches = protocol.random_batches(p, args.steps, rng)
    work = protocol.Work(p, model.Layout(p).init(0), batches, seed=0)
    meds = {m: [] for m in args.modules}
    losses = {}
    prof = {m: {} for m in args.modules}
    for rnd in range(1, args.rounds + 1):
        for m in args.modules:
            with wasm.WasmBackend(threads=args.threads, module_path=m) as be:
                steps = protocol.train(be, work)
                if args.profile:
                    for kernel, ms in be.profile(batches[0], steps=2).items():
                        prof[m].setdefault(kernel, []).append(ms)
            ms = statistics.median(st.ms for st in steps[1:])
            meds[m].append(ms)
            losses[m] = [st.loss for st in steps]
            print(json.dumps({"round": rnd, "module": m, "threads": args.threads, "preset": args.preset,
                              "median_ms": round(ms, 2), "final_loss": losses[m][-1]}), flush=True)
    a, b = args.modules
    for kernel in prof[a]:
        pa, pb = statistics.median(prof[a][kernel]), statistics.median(prof[b].get(kernel, [float("nan")]))
        print(json.dumps({"kernel": kernel, "A_ms": round(pa, 2), "B_ms": round(pb, 2)}), flush=True)
    print(json.dumps({"preset": args.preset, "threads": args.threads, "A": a, "B": b,
                      "A_ms": round(statistics.median(meds[a]), 2), "B_ms": round(statistics.median(meds[b]), 2),
                      "B_over_A": round(statistics.median(meds[b]) / statistics.median(meds[a]), 3),
                      "losses_identical": losses[a] == losses[b]}), flush=True)


if __name__ == "__main__":
    main()
