"""Chrome's overhead over Dawn on one adapter: the WebGPU engine's step in Dawn in this process
(webgpu-dawn) and replayed by Chrome's WebGPU in a page (webgpu-chrome), both on SwiftShader,
the CPU adapter Chrome ships. Dawn reaches the same SwiftShader through the Vulkan driver file
in Chromium's package (VK_DRIVER_FILES, set here before wgpudawn loads), so the two differ in
what a browser adds: the GPU process, the commands serialised to it, its validation.

Both backends are loaded at once with the same weights and their steps alternate (A B A B ...);
each step is timed as curve times it (Dawn: the host clock around step(); Chrome: the page's
performance.now() from the first queue write to the mapped readback), and Chrome's pass GPU
time (timestamp queries) is printed beside it. Then each backend's per-kernel profile (each
dispatch in its own pass between timestamps), --profile times, alternating.

    python dev/chrome_overhead.py --presets tiny,small --steps 15 --profile 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's tinygpt_bench (dev/README.md)

SWIFTSHADER_ICD = "/usr/lib/chromium/vk_swiftshader_icd.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--profile", type=int, default=3, help="profiled steps of each backend, alternating (0: none)")
    ap.add_argument("--icd", default=SWIFTSHADER_ICD, help="the SwiftShader Vulkan driver file Dawn is given")
    a = ap.parse_args()
    if not os.path.isfile(a.icd):
        sys.exit(f"no SwiftShader driver file at {a.icd} (Debian's chromium package has one); give --icd")
    os.environ["VK_DRIVER_FILES"] = a.icd  # before wgpudawn loads: Dawn then sees SwiftShader alone

    import numpy as np

    from tinygpt_bench import engines, model, presets

    print("| preset | webgpu-dawn ms/step | webgpu-chrome ms/step (page) | chrome pass GPU ms | chrome / dawn "
          "(median of pairs) | losses equal |\n|---|---|---|---|---|---|")
    for name in a.presets.split(","):
        p = presets.load(name)
        flat = model.Layout(p).init(0)
        rng = np.random.default_rng(1)
        batches = [rng.integers(0, 256, size=(p.batch, p.ctx + 1), dtype=np.int32) for _ in range(a.steps)]
        with engines.create("webgpu-dawn") as dawn, engines.create("webgpu-chrome", adapter="swiftshader") as chrome:
            assert "swiftshader" in dawn.describe()["adapter"].lower(), dawn.describe()["adapter"]
            dawn.load(p, flat)
            chrome.load(p, flat)
            t = {"dawn": [], "chrome": [], "gpu": []}
            losses = {"dawn": [], "chrome": []}
            for i, x in enumerate(batches):
                order = (("dawn", dawn), ("chrome", chrome)) if i % 2 == 0 else (("chrome", chrome), ("dawn", dawn))
                for key, be in order:
                    t0 = time.perf_counter()
                    losses[key].append(be.step(x))
                    t[key].append(be.last_step_ns / 1e6 if key == "chrome" else (time.perf_counter() - t0) * 1e3)
                    if key == "chrome" and be.last_gpu_ns is not None:
                        t["gpu"].append(be.last_gpu_ns / 1e6)
            ratio = statistics.median(c / d for c, d in zip(t["chrome"][1:], t["dawn"][1:]))
            gpu = f"{statistics.median(t['gpu'][1:]):.2f}" if len(t["gpu"]) > 1 else "-"
            print(f"| {name} | {statistics.median(t['dawn'][1:]):.2f} | {statistics.median(t['chrome'][1:]):.2f} | "
                  f"{gpu} | {ratio:.2f} | {losses['dawn'] == losses['chrome']} |", flush=True)
            if a.profile:
                kernels = per_kernel(dawn, chrome, batches, a.profile)
                print(f"\n{name}, per kernel (ms of GPU time a step, each dispatch in its own pass; median of "
                      f"{a.profile}):\n\n| kernel | webgpu-dawn | webgpu-chrome | chrome - dawn |\n|---|---|---|---|")
                for k, (d, c) in sorted(kernels.items(), key=lambda kv: -kv[1][1]):
                    print(f"| {k} | {d:.2f} | {c:.2f} | {c - d:+.2f} |")
                td, tc = (sum(v[i] for v in kernels.values()) for i in (0, 1))
                print(f"| all | {td:.2f} | {tc:.2f} | {tc - td:+.2f} |\n", flush=True)


def per_kernel(dawn, chrome, batches, n: int) -> dict[str, tuple[float, float]]:
    got = {"dawn": [], "chrome": []}
    for i in range(n):
        order = (("dawn", dawn), ("chrome", chrome)) if i % 2 == 0 else (("chrome", chrome), ("dawn", dawn))
        for key, be in order:
            got[key].append(be.profile(batches[i % len(batches)]))
    names = set().union(*got["dawn"], *got["chrome"])
    med = lambda runs, k: statistics.median(r.get(k, 0.0) for r in runs)  # noqa: E731
    return {k: (med(got["dawn"], k), med(got["chrome"], k)) for k in names}


if __name__ == "__main__":
    main()
