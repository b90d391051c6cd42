"""Where does the tiled attention forward spend its time? Times attention_forward_tiled alone at a
preset's shapes, as shipped and with one part of its tile loop cut out at a time (the WGSL text
edited in memory; the ablated kernels compute wrong numbers and are for timing only).

    python dev/attention_ablation.py --preset behemoth --reps 5

Prints one line per variant: GPU ms (min over reps, timestamp queries) and the share saved.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's tinygpt_bench (dev/README.md)

from tinygpt_bench import presets  # noqa: E402
from tinygpt_bench.engines.webgpu import ops  # noqa: E402
from tinygpt_bench.engines.webgpu.runtime import Gpu, Program  # noqa: E402

FWD = "fn attention_forward_tiled("


def cut(src: str, old: str, new: str, nth: int = 0) -> str:
    """Replace the nth occurrence of `old` after the forward kernel's start."""
    start = src.index(FWD)
    at = start
    for _ in range(nth + 1):
        at = src.index(old, at + 1)
    return src[:at] + new + src[at + len(old):]


VARIANTS = {
    "shipped": [],
    "row kernel": [],   # attention_forward (one row an invocation), for scale
    "no S loop": [("for (var d4 = 0u; d4 < hd4; d4++) {", "for (var d4 = 0u; d4 < 0u; d4++) {", 0)],
    "no PV loop": [("for (var kk = 0u; kk < kn; kk++) {", "for (var kk = 0u; kk < 0u; kk++) {", 0)],
    "no K/V staging": [("for (var e = f; e < 32u * hd4; e += 64u) {", "for (var e = f; e < 0u; e += 64u) {", 1)],
    "no exp": [("let p0 = exp(s0 - mn.x);", "let p0 = s0 - mn.x;", 0), ("let p1 = exp(s1 - mn.y);", "let p1 = s1 - mn.y;", 0),
               ("let p2 = exp(s2 - mn.z);", "let p2 = s2 - mn.z;", 0), ("let p3 = exp(s3 - mn.w);", "let p3 = s3 - mn.w;", 0)],
    "S loop 1/4": [("for (var d4 = 0u; d4 < hd4; d4++) {", "for (var d4 = 0u; d4 < hd4 / 4u; d4++) {", 0)],
    "PV loop 1/4": [("for (var kk = 0u; kk < kn; kk++) {", "for (var kk = 0u; kk < kn / 4u; kk++) {", 0)],
    "S+PV loops off": [("for (var d4 = 0u; d4 < hd4; d4++) {", "for (var d4 = 0u; d4 < 0u; d4++) {", 0),
                       ("for (var kk = 0u; kk < kn; kk++) {", "for (var kk = 0u; kk < 0u; kk++) {", 0)],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="behemoth")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    pr = presets.load(args.preset)
    b, t, c, h = pr.batch, pr.ctx, pr.d_model, pr.heads
    gpu = Gpu()
    rng = np.random.default_rng(0)
    btc = b * t * c
    A = gpu.upload(rng.standard_normal(3 * btc).astype(np.float32), "qkv")
    O = gpu.buffer(4 * (btc + b * h * t), "o")
    Q, K, V = (ops.Ref(A, i * btc) for i in range(3))
    src = gpu.source("attention")
    base = None
    for name, edits in VARIANTS.items():
        code = src
        for old, new, nth in edits:
            code = cut(code, old, new, nth)
        gpu.replace_source("attention", code)
        p = Program(gpu, name)
        ops.attention_forward(p, "att", ops.Ref(O), ops.Ref(O, btc), Q, K, V, b, t, c, h, tiled=name != "row kernel")
        p.finalize().run()
        ms = min(sum(s for _, s in p.profile()) for _ in range(args.reps)) * 1e3
        base = base or ms
        print(json.dumps({"preset": args.preset, "variant": name, "gpu_ms": round(ms, 4),
                          "saved": round(1 - ms / base, 3)}), flush=True)


if __name__ == "__main__":
    main()
