"""Backend registry. Engines are imported lazily so a missing optional part (a GPU
driver, torch) only matters to the backend that needs it."""

from __future__ import annotations

import importlib

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


def create(name: str, **options):
    """A new, unloaded backend instance; options are passed to its constructor."""
    cls, kwargs = get_class(name)
    return cls(**{**kwargs, **options})
