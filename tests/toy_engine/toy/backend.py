"""The toy engine's backend: the backend contract (tinygpt_bench/engines/base.py) over the numpy
reference's loss_and_grad, clip_grad and adamw_update in float64."""

from __future__ import annotations

import numpy as np

from tinygpt_bench.engines.base import DEFAULT_LR, OPTIM, Backend
from tinygpt_bench.engines.reference.backend import adamw_update, clip_grad, loss_and_grad
from tinygpt_bench.errors import UserError
from tinygpt_bench.model import Layout


class ToyBackend(Backend):
    name = "toy"
    capabilities = frozenset({"memory_bytes"})

    def __init__(self, label: str | None = None, fault: str | None = None):
        if fault not in (None, "nan-grad"):
            raise UserError(f"toy engine: fault '{fault}' cannot be injected here; it takes nan-grad")
        self.label, self.fault = label, fault
        self.preset = self.params = self.grad = None

    def describe(self) -> dict:
        return {"backend": self.name, "device": "numpy", "device_type": "CPU", "runtime": f"numpy {np.__version__}",
                "runtime_settings": f"float64 label={self.label or '-'}"}

    def load(self, preset, params: np.ndarray) -> None:
        self.preset, self.layout = preset, Layout(preset)
        self.params = np.asarray(params, np.float64).copy()
        self.m, self.v = np.zeros_like(self.params), np.zeros_like(self.params)
        self.mask, self.t = self.layout.decay_mask(np.float64), 0

    def step(self, batch: np.ndarray, lr: float = DEFAULT_LR) -> float:
        loss, self.grad = loss_and_grad(self.preset, self.params, batch)
        if self.fault == "nan-grad":
            self.grad[0] = np.nan
        clipped, _ = clip_grad(self.grad, OPTIM.clip)
        self.t += 1
        adamw_update(self.params, clipped, self.m, self.v, self.t, lr, self.mask, OPTIM)
        return loss

    def parameters(self) -> np.ndarray:
        return self.params.astype(np.float32)

    def gradients(self) -> np.ndarray:
        return self.grad.astype(np.float32)

    def memory_bytes(self) -> int:
        return 3 * self.params.nbytes if self.params is not None else 0

    def close(self) -> None:
        self.preset = self.params = self.grad = None
