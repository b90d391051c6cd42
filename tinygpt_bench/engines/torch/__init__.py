"""The PyTorch peers (backend.py): the same model in eager fp32 PyTorch, the native
baseline each engine is set beside (torch-cpu for wasm, torch-cuda for WebGPU).
Description only: importing this imports no torch."""

from __future__ import annotations

from dataclasses import dataclass

from tinygpt_bench.engines.description import BackendSpec, Engine, threads_option


# torch, and torch._dynamo, which the first optimizer a worker makes imports (torch._disable_dynamo
# on Optimizer's methods): 858 modules (sympy, torch.fx, ...), 3.5-4 s of each torch-cuda worker's
# load on the H200 machine (docs/harness.md)
TORCH_PRELOAD = ("torch", "torch._dynamo")


@dataclass(frozen=True)
class TorchCpuOptions:
    threads: int | None = threads_option()


ENGINE = Engine(
    name="torch",
    summary="PyTorch eager fp32, the native peers",
    backends=(
        BackendSpec("torch-cpu", ".backend:TorchBackend", "CPU", TorchCpuOptions, fixed={"device": "cpu"},
                    label="PyTorch CPU", preload=TORCH_PRELOAD),
        BackendSpec("torch-cuda", ".backend:TorchBackend", "GPU", fixed={"device": "cuda"}, label="PyTorch CUDA",
                    preload=TORCH_PRELOAD),
    ),
    peak=".peak:measure",
    order=30,
)
