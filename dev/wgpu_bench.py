"""Measure the WebGPU engine alone: per preset, step time on the host, GPU-busy time and the
slowest kernels from timestamp queries, parity of one step against the float64 reference;
and the matmul kernel's FLOP rate. For development and diagnosis (the curve itself is the
protocol's job). Prints one JSON object per line.

    python dev/wgpu_bench.py --presets tiny,small --steps 15 --parity-upto small
    python dev/wgpu_bench.py --matmul 4096
    python dev/wgpu_bench.py --presets xl,behemoth --matmul-big 0,1 --pipelined 0,1  # A/B
    python dev/wgpu_bench.py --presets mega,behemoth --tunes 'attention_tiled=0|attention_tiled=1'
    python dev/wgpu_bench.py --presets xl --backends webgpu,webgpu-dawn --rounds 3  # wgpu-native vs Dawn
    python dev/wgpu_bench.py --presets xl --backends webgpu-dawn --dawn-toggles '|+disable_robustness'
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's tinygpt_bench (dev/README.md)

from tinygpt_bench import presets, protocol  # noqa: E402
from tinygpt_bench import engines  # noqa: E402
from tinygpt_bench.engines.webgpu.backend import kernel_of  # noqa: E402
from tinygpt_bench.engines.webgpu.runtime import (DAWN_TOGGLES_ENV, Gpu, describe_adapter, tune_override,  # noqa: E402
                                                 tuning_for)
from tinygpt_bench.model import Layout, flops_per_step  # noqa: E402
from tinygpt_bench.engines.webgpu.peak import time_engine_matmul  # noqa: E402  (shared with `tinygpt-bench peak`)


EMITTED: list[dict] = []
BACKEND_OF = {"wgpu-native": "webgpu", "dawn": "webgpu-dawn"}  # implementation -> backend name
IMPLEMENTATION_OF = {b: i for i, b in BACKEND_OF.items()}


def emit(obj: dict) -> None:
    EMITTED.append(obj)
    print(json.dumps(obj), flush=True)


def summary(rows: list[dict]) -> str:
    """A short table of what was emitted, for the end of a log."""
    out = []
    for r in rows:
        if r.get("kind") == "matmul":
            out.append(f"matmul {r['variant']:>7} {r['size']}^3: {r['tflops']:.2f} TFLOP/s  rel_err {r['rel_err']:.1e}"
                       f"  {r.get('tune', '')}")
        elif r.get("kind") == "preset" and "median_ms" in r:
            peer = f"  peer {r['peer_median_ms']:.2f} ms ({r['speedup_vs_peer']:.2f}x)" if "peer_median_ms" in r else ""
            par = f"  parity {r['parity_loss_rel']:.1e} {r['parity_grad_worst']}" if "parity_loss_rel" in r else ""
            out.append(f"{r['preset']:>8} {r.get('backend', 'webgpu')}{r.get('toggles', '')} {r.get('tune', '')}"
                       f" big={int(r['matmul_big'])} pipe={int(r['pipelined'])}"
                       f" fill={r['shared_fill']}:"
                       f" {r['median_ms']:.2f} ms"
                       f" (min {r['min_ms']:.2f}, first {r['first_step_ms']:.0f}) busy {r['gpu_busy_ms']:.2f}"
                       f" encode {r['encode_ms']:.2f}{peer}{par}")
        elif r.get("kind") == "preset":
            out.append(f"{r['preset']:>8}: FAILED {r.get('error')}")
    return "\n".join(out)


def time_peer(peer: str, preset, w, batches) -> dict:
    """The same steps (same weights, same batches) on another registered backend."""
    from tinygpt_bench import engines

    be = engines.create(peer)
    try:  # the protocol's own timed loop over the same weights and batches
        steps = protocol.train(be, protocol.Work(preset, w, batches, seed=0))
    finally:
        be.close()
    times = [st.ms / 1e3 for st in steps]
    losses = [st.loss for st in steps]
    return {"peer": peer, "peer_median_ms": float(np.median(times[1:] or times)) * 1e3, "peer_last_loss": losses[-1]}


def bench_preset(gpu: Gpu, name: str, steps: int, parity: bool, peer: str | None = None,
                 parity_steps: int = 0, pipelined: bool = True) -> dict:
    preset = presets.load(name)
    layout = Layout(preset)
    w = layout.init(seed=0)
    rng = np.random.default_rng(7)
    batches = protocol.random_batches(preset, steps, rng)
    backend = BACKEND_OF[gpu.implementation]
    be = engines.create(backend)
    be.gpu = gpu
    be.pipelined = pipelined
    out = {"kind": "preset", "preset": name, "backend": backend, "params": layout.total, "matmul_big": gpu.matmul_big,
           "shared_fill": gpu.shared_fill, "attention_tiled": gpu.attention_tiled, "pipelined": pipelined}
    t0 = time.perf_counter()
    be.load(preset, w)
    out["load_s"] = time.perf_counter() - t0
    out["dispatches"] = len(be.program.dispatches)
    times, losses = [], []
    for b in batches:
        t0 = time.perf_counter()
        losses.append(be.step(b))
        times.append(time.perf_counter() - t0)
    out["first_step_ms"] = times[0] * 1e3
    steady = times[1:] or times
    out["median_ms"] = float(np.median(steady)) * 1e3
    out["min_ms"] = float(np.min(steady)) * 1e3
    out["gflops"] = flops_per_step(preset)["total"] / (out["median_ms"] * 1e-3) / 1e9
    out["losses"] = losses
    # host encoding time of one step (Python), and GPU time per kernel (one pass per dispatch)
    enc = gpu.device.create_command_encoder()
    t0 = time.perf_counter()
    be.program.encode(enc)
    out["encode_ms"] = (time.perf_counter() - t0) * 1e3
    enc.finish()
    prof = be.profile_dispatches()  # [(dispatch, GPU seconds)]: one more step, on the last batch
    out["gpu_busy_ms"] = sum(t for _, t in prof) * 1e3
    by_kernel = collections.Counter()
    for label, t in prof:  # the rows of WebGPUBackend.profile(): entry point, matmuls by role
        by_kernel[kernel_of(label)] += t * 1e3
    out["gpu_ms_by_kernel"] = dict(by_kernel.most_common())
    by_role = collections.Counter()  # "layer3.back.fc_in.dw [matmul...]" -> "back.fc_in.dw"
    for label, t in prof:
        role = label.split(" [")[0]
        by_role[role.split(".", 1)[1] if role.startswith("layer") else role] += t * 1e3
    out["gpu_ms_by_role"] = dict(by_role.most_common(12))
    if peer:
        try:
            out.update(time_peer(peer, preset, w, batches))
            out["speedup_vs_peer"] = out["peer_median_ms"] / out["median_ms"]
        except Exception as e:
            out["peer_error"] = f"{type(e).__name__}: {e}"
    if parity:
        from tinygpt_bench.engines.reference import backend as ref

        be.load(preset, w)
        loss = be.step(batches[0])
        want_loss, want_grad = ref.loss_and_grad(preset, w.astype(np.float64), batches[0])
        g = be.gradients().astype(np.float64)
        floor = 1e-3 * np.abs(want_grad).max()
        gv, wv = layout.views(g), layout.views(want_grad)
        errs = {k: float(np.abs(gv[k] - wv[k]).max() / max(np.abs(wv[k]).max(), floor)) for k in wv}
        out["parity_loss_rel"] = abs(loss - want_loss) / want_loss
        out["parity_grad_worst"] = max(errs.items(), key=lambda kv: kv[1])
        if parity_steps:
            rb = ref.ReferenceBackend("float64")
            rb.load(preset, w)
            want = [rb.step(b) for b in batches[:parity_steps]]
            got = losses[:parity_steps]
            out["parity_steps"] = len(want)
            out["parity_loss_rel_max"] = max(abs(g - r) / r for g, r in zip(got, want))
    be.close()
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--parity-upto", default="small", help="check one step against the reference up to this preset")
    ap.add_argument("--matmul", type=int, default=0, help="also time a square matmul of this size")
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--attention-split", type=int, default=0, help="override Gpu.attention_split (invocations per row; default chosen by head_dim)")
    ap.add_argument("--parity-steps", type=int, default=0,
                    help="also run the float64 reference for this many steps and compare every loss")
    ap.add_argument("--peer", default=None, help="also time this registered backend (e.g. torch-cuda) on the same steps")
    ap.add_argument("--matmul-big", default="", help="A/B: comma-separated 0/1, run each preset with Gpu.matmul_big off/on")
    ap.add_argument("--pipelined", default="1", help="A/B: comma-separated 0/1, encode the next step during this one")
    ap.add_argument("--tunes", default="", help="A/B: alternatives separated by '|', each KEY=INT,... as in "
                                                "TINYGPT_BENCH_TUNE (e.g. 'shared_prefetch=0|shared_prefetch=1'); "
                                                "everything runs under each, interleaved, --rounds times")
    ap.add_argument("--backends", default="webgpu", help="comma-separated: webgpu (wgpu-native), webgpu-dawn (Dawn); "
                                                          "each gets its own device, runs interleaved")
    ap.add_argument("--dawn-toggles", default="", help="A/B on webgpu-dawn: alternatives separated by '|', each "
                                                       "+NAME,-NAME Dawn device toggles (TINYGPT_BENCH_DAWN_TOGGLES)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the alternatives this many times, interleaved")
    ap.add_argument("--shared-fill", default="", help="A/B: comma-separated Gpu.shared_fill values (0: no split-K for "
                                                      "products matmul_shared fills)")
    args = ap.parse_args(argv)
    devices = []  # (backend, Dawn toggles text, Gpu): every device of the A/B, made once
    for backend in args.backends.split(","):
        if backend not in IMPLEMENTATION_OF:
            ap.error(f"--backends: {backend} is not one of {', '.join(IMPLEMENTATION_OF)}")
        for toggles in (args.dawn_toggles.split("|") if backend == "webgpu-dawn" else [""]):
            os.environ[DAWN_TOGGLES_ENV] = toggles  # read when the device is requested
            devices.append((backend, toggles, Gpu(args.adapter, implementation=IMPLEMENTATION_OF[backend])))
    os.environ.pop(DAWN_TOGGLES_ENV, None)
    for backend, toggles, gpu in devices:
        if args.attention_split:
            gpu.attention_split = args.attention_split
        d = describe_adapter(gpu.adapter)
        emit({"kind": "adapter", "backend": backend, "toggles": toggles,
              **{k: v for k, v in d.items() if k != "features"},
              "attention_split": gpu.attention_split})
    base = {k: getattr(devices[0][2], k) for k in tuning_for(devices[0][2].adapter)}
    tunes = args.tunes.split("|") if args.tunes else [""]
    names = [s for s in args.presets.split(",") if s]
    order = presets.ORDER
    limit = order.index(args.parity_upto) if args.parity_upto in order else -1
    first = set()  # (backend, preset) whose peer and parity ran (once, with the first configuration)
    for rnd in range(1, args.rounds + 1):
        for tune, (backend, toggles, gpu) in ((x, d) for x in tunes for d in devices):  # interleaved, every round
            for k, v in {**base, **tune_override(base, tune)}.items():
                setattr(gpu, k, v)
            tag = {"tune": tune, "round": rnd, "backend": backend, "toggles": toggles}
            if args.matmul:
                for variant in ("direct", "shared", "shared_pf", "big_pf", "big_db"):
                    emit({**time_engine_matmul(gpu, args.matmul, variant), **tag})
            bigs = [bool(int(x)) for x in args.matmul_big.split(",") if x] or [gpu.matmul_big]
            pipes = [bool(int(x)) for x in args.pipelined.split(",") if x]
            fills = [int(x) for x in args.shared_fill.split(",") if x] or [gpu.shared_fill]
            for name in names:
                parity = name in order and order.index(name) <= limit
                for big, pipe, fill in ((b, q, f) for b in bigs for q in pipes for f in fills):
                    gpu.matmul_big, gpu.shared_fill = big, fill
                    once = (backend, name) not in first
                    first.add((backend, name))
                    peer = args.peer if once and backend == devices[0][0] else None  # once per preset
                    try:  # the parity checks once per backend and preset, with the first configuration
                        emit({**bench_preset(gpu, name, args.steps, parity and once, peer,
                                             args.parity_steps if once else 0, pipelined=pipe), **tag})
                    except Exception as e:  # keep what finished; say what failed
                        emit({"kind": "preset", "preset": name, "matmul_big": big, "pipelined": pipe,
                              "shared_fill": fill, **tag, "status": "failed",
                              "error": f"{type(e).__name__}: {e}"})
    print(summary(EMITTED), flush=True)


if __name__ == "__main__":
    main()
