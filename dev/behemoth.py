"""The Memory64 ceiling break (issue 3): behemoth (473M parameters, about 7.6 GB of fp32
weights, gradients and Adam moments) allocated past 4 GiB inside one wasm64 memory, and
one training step with a finite loss near ln(256).

    python dev/behemoth.py [--threads N] [--preset behemoth]

Needs about 10 GB of free RAM. Prints what it did; record the output in docs/wasm-engine.md.
The same check as a test: `pytest -m slow tests/test_wasm.py -k behemoth`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tinygpt_bench import model, presets  # noqa: E402
from tinygpt_bench.engines.wasm.backend import WasmBackend  # noqa: E402


def expected_loss(d_model: int) -> float:
    """Loss of the freshly initialised model: logits = ln_f(x) @ tok_emb^T have a standard
    deviation of about 0.02 sqrt(C), so the mean cross-entropy is about ln 256 + var / 2
    (5.80 for behemoth's C = 1280, 5.55 for tiny's C = 48)."""
    return math.log(256) + 0.5 * (0.02**2 * d_model)


def run(preset: str = "behemoth", threads: int | None = None) -> dict:
    p = presets.load(preset)
    lay = model.Layout(p)
    t0 = time.perf_counter()
    flat = lay.init(0)
    t_init = time.perf_counter() - t0
    batch = np.random.default_rng(1).integers(0, 256, (p.batch, p.ctx + 1), dtype=np.int32)
    with WasmBackend(threads=threads) as b:
        b.runtime.start()
        start_bytes = b.memory_bytes()
        t0 = time.perf_counter()
        b.load(p, flat)
        t_load = time.perf_counter() - t0
        grown = b.memory_bytes()
        t0 = time.perf_counter()
        loss = b.step(batch)
        t_step = time.perf_counter() - t0
        norm = b.grad_norm()
        w = b.parameters()
        out = {"preset": p.name, "d_model": p.d_model, "params": lay.total, "threads": b.threads, "memory_start_bytes": start_bytes,
               "memory_after_load_bytes": grown, "state_bytes": 16 * lay.total, "init_s": t_init, "load_s": t_load,
               "step_s": t_step, "loss": loss, "grad_norm": norm,
               "params_finite": bool(np.isfinite(w).all()), "params_changed": bool((w != flat).any())}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="behemoth")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()
    r = run(args.preset, args.threads)
    for k, v in r.items():
        print(f"{k}: {v}")
    gib = r["memory_after_load_bytes"] / 2**30
    ok = (r["memory_after_load_bytes"] > 4 * 2**30 and math.isfinite(r["loss"])
          and abs(r["loss"] - expected_loss(r["d_model"])) < 0.1)
    print(f"wasm memory grew from {r['memory_start_bytes'] / 2**20:.0f} MiB to {gib:.2f} GiB; "
          f"loss {r['loss']:.4f} (ln 256 = {math.log(256):.4f}, expected at init {expected_loss(r['d_model']):.4f}); "
          f"{'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
