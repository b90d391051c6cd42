"""The PyTorch peers' ceilings for `tinygpt-bench peak` (tinygpt_bench/peak.py runs them): fp32
matmul at 4096^3 (torch-cpu on N threads; torch-cuda with TF32 off, CUDA events), checked
against numpy first; a 'skipped' row saying why where torch or CUDA is missing."""

from __future__ import annotations

import time

import numpy as np

from tinygpt_bench.kernelcheck import checked, rel_err


def torch_matmul(device: str, size: int, check: int, threads: int | None, repeats: int) -> dict:
    """fp32 a @ b at size^3 in PyTorch (CUDA: TF32 off), after a check at check^3 against numpy."""
    import torch

    dev = torch.device(device)
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ModuleNotFoundError("torch has no CUDA device here")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    old_threads = torch.get_num_threads()
    if device == "cpu" and threads:
        torch.set_num_threads(threads)
    try:
        rng = np.random.default_rng(0)
        err = 0.0
        for n in (check, size):
            a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
            ta, tb = torch.from_numpy(a).to(dev), torch.from_numpy(b).to(dev)
            c = (ta @ tb).cpu().numpy()
            rows = np.arange(n) if n == check else rng.choice(n, 8, replace=False)
            err = max(err, checked(f"torch-{device} matmul {n}^3", rel_err(c[rows], a[rows].astype(np.float64) @ b)))
        times = []
        for _ in range(repeats + 1):  # the first is a warm-up
            if device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                ta @ tb
                end.record()
                torch.cuda.synchronize()
                secs = start.elapsed_time(end) / 1e3
            else:
                t = time.perf_counter()
                ta @ tb
                secs = time.perf_counter() - t
            times.append(secs)
        best = min(times[1:] or times)
        name = torch.cuda.get_device_name(0) if device == "cuda" else None
    finally:
        torch.set_num_threads(old_threads)
    flops = 2 * size ** 3  # multiply and accumulate
    return {"gflop_per_s": flops / best / 1e9, "seconds": best, "flops": flops, "max_rel_err": err,
            "size": f"{size}x{size}x{size}", "device": name,
            "note": f"torch {torch.__version__} fp32" + (", TF32 off, CUDA events" if device == "cuda" else "")}


def measure(ctx):
    """The rows of this engine (tinygpt_bench/peak.py: PeakContext)."""
    size, check = (256, 64) if ctx.quick else (4096, 256)
    yield {}  # no machine columns of its own
    ctx.emit("torch-cpu", "matmul", "matmul", lambda: torch_matmul("cpu", size, check, ctx.threads, ctx.repeats),
             ctx.threads, ctx.machine.get("cpu_model"), ctx.repeats)
    ctx.emit("torch-cuda", "matmul", "matmul", lambda: torch_matmul("cuda", size, check, None, ctx.repeats),
             None, None, ctx.repeats)
