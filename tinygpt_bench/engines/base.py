"""The backend contract (docs/DESIGN.md): every engine implements this one small interface.

    describe()          -> dict: what it runs on (adapter, API, CPU/GPU, limits; runtime, threads...)
    load(preset, flat)  allocate every buffer once, upload the fp32 weights, zero the Adam moments
    step(batch, lr)     -> float loss: one whole training step (forward, loss, backward, clip,
                        AdamW), synchronous: returns once the work is done
    parameters()        -> flat fp32 weights, read back (parity checks)
    gradients()         -> flat fp32 gradient of the last step, before clipping (parity checks)
    close()             free everything; safe to call twice

describe() keys the result files stamp on every row (absent ones are left blank):
    device            adapter name (WebGPU) or CPU model (CPU engines)
    device_type       "GPU" or "CPU"
    software_adapter  True for llvmpipe/lavapipe/SwiftShader/WARP
    adapter_vendor, adapter_driver, adapter_api   (WebGPU)
    threads           worker threads (CPU engines)
    runtime           e.g. "wasmtime 50.0.1", "wgpu 0.32.0", "numpy 2.4.6"
    runtime_settings  engine settings that change speed (SIMD, relaxed SIMD, memory max...)
    module_sha256     the .wasm module run;  kernels_sha256: the WGSL sources run
Optional capabilities, declared here with their defaults (an engine overrides what it has and
lists it in `capabilities`; nobody probes for them with hasattr):
    memory_bytes() -> int | None  what the engine allocated (wasm memory, GPU buffers); None: unknown
    plan(preset, **options)       (class-level, allocates nothing) -> [{name, bytes, limit, limit_name}]:
                                 every buffer or region load() will need, against the limit it must fit
                                 (limit None for a row shown for information); [] where it cannot say
    limits() -> dict             the limits in force (adapter limits, wasm memory max, threads)
    events() -> list             memory growth events: from, to, worker threads running
    profile(batch) -> dict       kernel name -> milliseconds of one step (runs a step: diagnosis only);
                                 {} where the engine cannot time its kernels
    stages(preset) -> list       start the engine (runtime, module, workers; a browser; the preset's
                                 pipelines) and say how each part went: [{name, ok, ms, figure,
                                 error}], the failed one last; diagnose reports them between create
                                 and load; [] where none
    growth_probe() -> dict|None  (after load) grow the memory inside a parallel region and have every
                                 thread touch the new memory: {ok, error, from_bytes, to_bytes, threads,
                                 views, ...}; diagnose's growth stage; None where not offered
    host_peak_rss() -> int|None  peak resident bytes of a process of the engine's own (wasm-v8: Node)
    last_step_ns                 set by an engine that times its step where it runs (wasm-v8: in V8)
    keep_grads                   set True before step() where gradients() is wanted (parity checks)
    injected_delay_s             the harness's 'slow' fault: seconds added to every timed step
    fault=KIND constructor arg   fault injection for tests (faults.py), for the kinds the backend
                                 declares (engines/<name>/__init__.py)
A batch is an int32 array (B, T+1) of byte values: inputs batch[:, :-1], targets batch[:, 1:].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from tinygpt_bench.presets import Preset


@dataclass(frozen=True)
class AdamW:
    """docs/MODEL.md's optimizer settings; lr is passed per step."""

    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1  # decoupled; matrices and embeddings only
    clip: float = 1.0  # global gradient-norm clip; scale = clip / (norm + 1e-6) when norm > clip


DEFAULT_LR = 3e-4
OPTIM = AdamW()


class Backend(ABC):
    name: str = "?"
    # the optional capabilities below this engine has (the others keep their defaults); a test
    # checks the declaration against the methods the class overrides
    capabilities: frozenset[str] = frozenset()
    last_step_ns: int | None = None
    keep_grads: bool = False
    injected_delay_s: float = 0.0

    @abstractmethod
    def describe(self) -> dict: ...

    @abstractmethod
    def load(self, preset: Preset, params: np.ndarray) -> None: ...

    @abstractmethod
    def step(self, batch: np.ndarray, lr: float = DEFAULT_LR) -> float: ...

    @abstractmethod
    def parameters(self) -> np.ndarray: ...

    @abstractmethod
    def gradients(self) -> np.ndarray: ...

    @abstractmethod
    def close(self) -> None: ...

    # ---- optional capabilities, with their defaults --------------------------------------
    @classmethod
    def plan(cls, preset: Preset, **options) -> list[dict]:
        return []

    def memory_bytes(self) -> int | None:
        return None

    def limits(self) -> dict:
        return {}

    def events(self) -> list:
        return []

    def profile(self, batch: np.ndarray, lr: float = DEFAULT_LR) -> dict[str, float]:
        return {}

    def stages(self, preset: Preset | None = None) -> list[dict]:
        return []

    def growth_probe(self) -> dict | None:
        return None

    def host_peak_rss(self) -> int | None:
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
