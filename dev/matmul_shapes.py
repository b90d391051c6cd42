"""Time every matrix product of one training step of a preset, alone, under each matmul kernel
and split-K, on the WebGPU engine: which (variant, split) is fastest for each shape, and what
the step's products would cost with each choice. For tuning engines/webgpu/ops.py: plan_matmul.

The products are the ones the engine really records for the preset (ops.matmul calls made
while it builds its step), grouped by shape; each candidate is first checked against numpy in
float64 on fresh random inputs (8 rows), then timed by timestamp queries (best of --reps, after
a warm-up). Prints one JSON object per line, then a table.

    python dev/matmul_shapes.py --preset behemoth --backends webgpu,webgpu-dawn \
        --variants shared_pf,big_pf --splits 1,2,3,4
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's tinygpt_bench (dev/README.md)

from tinygpt_bench import engines, presets  # noqa: E402
from tinygpt_bench.engines.webgpu import ops  # noqa: E402
from tinygpt_bench.engines.webgpu.runtime import Program  # noqa: E402
from tinygpt_bench.model import Layout  # noqa: E402

Shape = collections.namedtuple("Shape", "m n k trans_a trans_b bias res accum bias_grad")


def step_products(backend_name: str, preset) -> tuple[object, collections.Counter, dict]:
    """Load the preset on the backend, recording every product of its step: (backend, shapes with
    counts, the plan the engine chose for each shape)."""
    seen: collections.Counter = collections.Counter()
    chosen: dict = {}
    real = ops.matmul

    def spy(p, name, c, a, b, m, n, k, trans_a=False, trans_b=False, bias=None, res=None, accum=False,
            variant=None, bias_grad=None, split_k=None, scratch=None):
        s = Shape(m, n, k, trans_a, trans_b, bias is not None, res is not None, accum, bias_grad is not None)
        seen[s] += 1
        chosen[s] = ops.plan_matmul(p.gpu, m, n, k, bias_grad is not None)
        return real(p, name, c, a, b, m, n, k, trans_a, trans_b, bias, res, accum, variant, bias_grad, split_k,
                    scratch)

    be = engines.create(backend_name)
    ops.matmul = spy
    try:
        be.load(preset, Layout(preset).init(0))
    finally:
        ops.matmul = real
    return be, seen, chosen


def time_shape(gpu, s: Shape, variant: str, split: int, reps: int, rng) -> dict:
    """One product of shape s under (variant, split): checked on 8 rows, then GPU ms (best of reps)."""
    a = rng.standard_normal((s.k, s.m) if s.trans_a else (s.m, s.k), dtype=np.float32)
    b = rng.standard_normal((s.n, s.k) if s.trans_b else (s.k, s.n), dtype=np.float32)
    bias = rng.standard_normal(s.n, dtype=np.float32)
    res = rng.standard_normal((s.m, s.n), dtype=np.float32)
    c0 = rng.standard_normal((s.m, s.n), dtype=np.float32) if s.accum else np.zeros((s.m, s.n), np.float32)
    extra = s.n if s.bias_grad else 0  # the bias gradient lives in c's buffer, after c
    bufs = [gpu.upload(a, "a"), gpu.upload(b, "b"), gpu.upload(np.concatenate([c0.ravel(), np.zeros(extra, np.float32)]), "c"),
            gpu.upload(bias, "bias"), gpu.upload(res, "res"),
            gpu.buffer(4 * max(1, ops.splitk_scratch(s.m, s.n, split)), "scratch")]
    A, B, C, Bi, R, S = (ops.Ref(x) for x in bufs)
    p = Program(gpu, "shape-bench")
    ops.matmul(p, "mm", C, A, B, s.m, s.n, s.k, s.trans_a, s.trans_b, bias=Bi if s.bias else None,
               res=R if s.res else None, accum=s.accum, variant=variant,
               bias_grad=C.at(s.m * s.n) if s.bias_grad else None, split_k=split, scratch=S)
    p.finalize().run()
    rows = rng.choice(s.m, 8, replace=False)
    opa = (a.T if s.trans_a else a).astype(np.float64)
    opb = (b.T if s.trans_b else b).astype(np.float64)
    want = opa[rows] @ opb + (bias if s.bias else 0) + (res[rows] if s.res else 0) + (c0[rows] if s.accum else 0)
    got = gpu.read(C.buf, count=s.m * s.n + extra)
    err = float(np.abs(got[: s.m * s.n].reshape(s.m, s.n)[rows] - want).max() / np.abs(want).max())
    if s.bias_grad:
        db = opb.sum(axis=0)
        err = max(err, float(np.abs(got[s.m * s.n:] - db).max() / np.abs(db).max()))
    p.warm_up(0.3)
    secs = min(sum(t for _, t in p.profile()) for _ in range(reps))
    for x in bufs:
        x.destroy()
    return {"ms": secs * 1e3, "tflops": 2 * s.m * s.n * s.k / secs / 1e12, "rel_err": err}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="behemoth")
    ap.add_argument("--backends", default="webgpu")
    ap.add_argument("--variants", default="shared_pf,big_pf")
    ap.add_argument("--splits", default="1,2,3,4")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    preset = presets.load(args.preset)
    rng = np.random.default_rng(1)
    table = []
    for name in args.backends.split(","):
        be, shapes, chosen = step_products(name, preset)
        gpu = be.gpu
        total_plan = 0.0
        total_best = 0.0
        for s, count in shapes.items():
            results = {}
            for v in args.variants.split(","):
                for sp in (int(x) for x in args.splits.split(",")):
                    if sp > 1 and s.k < 256 * sp:
                        continue
                    r = time_shape(gpu, s, v, sp, args.reps, rng)
                    results[(v, sp)] = r
                    print(json.dumps({"backend": name, "shape": s._asdict(), "count": count, "variant": v,
                                      "split": sp, **r}), flush=True)
                    if r["rel_err"] > 1e-4:
                        print(f"  ! {v} split {sp}: rel_err {r['rel_err']:.1e}", flush=True)
            plan = chosen[s]
            plan_r = results.get(plan) or time_shape(gpu, s, *plan, args.reps, rng)
            best = min(results, key=lambda x: results[x]["ms"])
            total_plan += count * plan_r["ms"]
            total_best += count * results[best]["ms"]
            table.append(f"{name:>11} {s.m:>5}x{s.n:<5}x{s.k:<5} {'T' if s.trans_a else 'N'}{'T' if s.trans_b else 'N'}"
                         f" x{count:<3} plan {plan[0]}/{plan[1]} {plan_r['ms']:.3f} ms ({plan_r['tflops']:.1f} TF/s)"
                         f"  best {best[0]}/{best[1]} {results[best]['ms']:.3f} ms ({results[best]['tflops']:.1f} TF/s)")
        table.append(f"{name:>11} step's products: plan {total_plan:.2f} ms, best per shape {total_best:.2f} ms")
        be.close()
    print("\n".join(table))


if __name__ == "__main__":
    main()
