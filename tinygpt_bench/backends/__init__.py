"""Backend registry. Engines are imported lazily so a missing optional part (a GPU
driver, torch) only matters to the backend that needs it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from tinygpt_bench.errors import UserError

# name -> (module, class name, keyword arguments)
_REGISTRY: dict[str, tuple[str, str, dict]] = {
    "reference": ("tinygpt_bench.backends.reference", "ReferenceBackend", {"dtype": "float64"}),
    "reference-fp32": ("tinygpt_bench.backends.reference", "ReferenceBackend", {"dtype": "float32"}),
    "torch-cpu": ("tinygpt_bench.backends.torch_peer", "TorchBackend", {"device": "cpu"}),
    "torch-cuda": ("tinygpt_bench.backends.torch_peer", "TorchBackend", {"device": "cuda"}),
    "webgpu": ("tinygpt_bench.backends.webgpu", "WebGPUBackend", {}),
    "webgpu-dawn": ("tinygpt_bench.backends.webgpu", "DawnWebGPUBackend", {}),
    "wasm": ("tinygpt_bench.backends.wasm", "WasmBackend", {}),
    "wasm-v8": ("tinygpt_bench.backends.wasm_v8", "WasmV8Backend", {}),
}


def names() -> list[str]:
    return list(_REGISTRY)


def get_class(name: str):
    """(backend class, its registry keyword arguments), importing the engine's module."""
    if name not in _REGISTRY:
        raise UserError(f"unknown backend '{name}'; choose one of {', '.join(_REGISTRY)}")
    module, cls, kwargs = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls), kwargs


def module_name(name: str) -> str | None:
    """The module that holds backend `name`, not imported (None for an unknown name)."""
    return _REGISTRY[name][0] if name in _REGISTRY else None


def create(name: str, **options):
    """A new, unloaded backend instance; options are passed to its constructor."""
    cls, kwargs = get_class(name)
    return cls(**{**kwargs, **options})


@dataclass(frozen=True)
class Info:
    """What a result row says about a backend beyond its own describe(): the hardware it is built
    for (GPU or CPU, whatever adapter it ran on), its native peer (the backend a user would
    otherwise pick on that hardware; None for a peer or a reference) and how its per-kernel
    times (profile) are measured (None: it has no profile)."""

    hardware: str
    native_peer: str | None = None
    kernel_timing: str | None = None


_GPU_TIMESTAMPS = "GPU time from timestamp queries, each dispatch in its own compute pass"
_WASM_REGIONS = "wall time of each kind of parallel region"
_INFO: dict[str, Info] = {
    "reference": Info("CPU"),
    "reference-fp32": Info("CPU"),
    "torch-cpu": Info("CPU"),
    "torch-cuda": Info("GPU"),
    "webgpu": Info("GPU", "torch-cuda", _GPU_TIMESTAMPS),
    "webgpu-dawn": Info("GPU", "torch-cuda", _GPU_TIMESTAMPS),
    "wasm": Info("CPU", "torch-cpu", _WASM_REGIONS),
    "wasm-v8": Info("CPU", "torch-cpu", _WASM_REGIONS),
}


def info(name: str) -> Info:
    """The Info of a registered backend (UserError for an unknown name, as get_class)."""
    if name not in _REGISTRY:
        raise UserError(f"unknown backend '{name}'; choose one of {', '.join(_REGISTRY)}")
    return _INFO[name]
