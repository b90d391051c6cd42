"""Why is the WebGPU 4096^3 matmul micro-benchmark bimodal? A diagnosis script, not a test.

    python dev/matmul_modes.py [--size 4096] [--trials 4] [--runs 10]

The engine's own 4096^3 product (engines/webgpu/ops.py: matmul with its planning) measured 15-17 TFLOP/s in
some processes and 5.5-9 in others (docs/webgpu-engine.md). Per trial, fresh buffers and a
fresh program, then the same product timed three ways, each `--runs` times:
- ts: timestamp queries around the dispatch in its own pass (Program.profile, what `peak` uses);
- wall1: wall clock of one submit + wait (Program.run);
- wallN: wall clock of `--runs` dispatches recorded in one command buffer, divided by runs.
If timestamps and the wall clock agree, the slow mode is real GPU time; whether it moves with
fresh buffers (trial to trial) or stays for a process says where to look next.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinygpt_bench.engines.webgpu import ops  # noqa: E402
from tinygpt_bench.engines.webgpu.runtime import Gpu, Program  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    gpu = Gpu()
    n = a.size
    flops = 2 * n ** 3
    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    print(f"adapter: {gpu.adapter.info.get('device')}; {n}^3, {flops / 1e9:.0f} GFLOP a product")
    for trial in range(a.trials):
        A, B, C = ops.Ref(gpu.upload(x, "a")), ops.Ref(gpu.upload(y, "b")), ops.Ref(gpu.buffer(4 * n * n, "c"))
        p = Program(gpu, f"modes-{trial}")
        ops.matmul(p, "bench", C, A, B, n, n, n)
        p.finalize().run()
        kernels = [d.name for d in p.dispatches]
        ts = [sum(t for _, t in p.profile()) for _ in range(a.runs)]
        wall1 = []
        for _ in range(a.runs):
            t = time.perf_counter()
            p.run()
            wall1.append(time.perf_counter() - t)
        enc = gpu.device.create_command_encoder(label="modes-many")
        cp = enc.begin_compute_pass()
        for _ in range(a.runs):
            for d in p.dispatches:
                cp.set_pipeline(d.pipeline)
                cp.set_bind_group(0, d.bind_group)
                cp.dispatch_workgroups(*d.groups)
        cp.end()
        t = time.perf_counter()
        gpu.device.queue.submit([p.finish(enc)])
        gpu.read(C.buf, count=4)  # waits for the queue
        walln = (time.perf_counter() - t) / a.runs

        def tf(s: float) -> str:
            return f"{flops / s / 1e9:6.0f}"

        print(f"trial {trial} [{', '.join(kernels)}] GFLOP/s: ts med {tf(statistics.median(ts))} "
              f"(min {tf(min(ts))}, max {tf(max(ts))}) | wall1 med {tf(statistics.median(wall1))} "
              f"(best {tf(min(wall1))}) | wallN {tf(walln)}")
        print("   ts by run:", " ".join(tf(s) for s in ts))
        for r in (A, B, C):
            r.buf.destroy()


if __name__ == "__main__":
    main()
