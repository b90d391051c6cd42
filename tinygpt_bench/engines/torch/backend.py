"""The PyTorch peer: the same model in PyTorch eager fp32, as a user would write it.

What a native framework gives on the same hardware, so the curve can show how close
each engine comes. Built from the same flat weights (model.Layout), fed the same
batches, with torch.optim.AdamW (two parameter groups: decay on matrices and
embeddings only) and torch.nn.utils.clip_grad_norm_. fp32 throughout; TF32 is turned
off on CUDA. torch is an optional dependency: `pip install torch`.

Backends: 'torch-cpu' (threads = --threads, default all cores) and 'torch-cuda'.
"""

from __future__ import annotations

import os

import numpy as np

from tinygpt_bench.engines.base import DEFAULT_LR, OPTIM, Backend
from tinygpt_bench.errors import UserError
from tinygpt_bench.model import Layout
from tinygpt_bench.presets import Preset


def _torch():
    try:
        import torch
    except ImportError:
        raise UserError("the torch peers need PyTorch: pip install torch (CPU: torch==2.13.0 here)") from None
    return torch


def build_forward(torch, heads: int):
    """forward(p: dict name -> tensor, ids (B,T) long, targets (B,T) long) -> mean loss."""
    F = torch.nn.functional

    def forward(p, ids, targets):
        B, T = ids.shape
        L, C, _ = p["wq"].shape
        hd = C // heads
        x = p["tok_emb"][ids] + p["pos_emb"][:T]
        for l in range(L):
            h = F.layer_norm(x, (C,), p["ln1_w"][l], p["ln1_b"][l], eps=1e-5)
            q = (h @ p["wq"][l] + p["bq"][l]).view(B, T, heads, hd).transpose(1, 2)
            k = (h @ p["wk"][l] + p["bk"][l]).view(B, T, heads, hd).transpose(1, 2)
            v = (h @ p["wv"][l] + p["bv"][l]).view(B, T, heads, hd).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + a.transpose(1, 2).reshape(B, T, C) @ p["wo"][l] + p["bo"][l]
            h = F.layer_norm(x, (C,), p["ln2_w"][l], p["ln2_b"][l], eps=1e-5)
            h = F.gelu(h @ p["fc_in_w"][l] + p["fc_in_b"][l], approximate="none")
            x = x + h @ p["fc_out_w"][l] + p["fc_out_b"][l]
        x = F.layer_norm(x, (C,), p["lnf_w"], p["lnf_b"], eps=1e-5)
        logits = x @ p["tok_emb"].T
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))

    return forward


class TorchBackend(Backend):
    capabilities = frozenset({"memory_bytes"})
    def __init__(self, device: str = "cpu", threads: int | None = None):
        self.torch = _torch()
        self.device = device
        self.name = f"torch-{device}"
        self.threads = threads
        if device == "cuda" and not self.torch.cuda.is_available():
            raise UserError("torch-cuda: PyTorch sees no CUDA device here; use --backends torch-cpu")
        if device == "cpu":
            self.torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
        else:
            self.torch.backends.cuda.matmul.allow_tf32 = False
            self.torch.backends.cudnn.allow_tf32 = False
        self.params = None

    def describe(self) -> dict:
        t = self.torch
        d = {"backend": self.name, "runtime": f"torch {t.__version__}", "runtime_settings": "eager fp32, TF32 off"}
        if self.device == "cuda":
            d.update(device=t.cuda.get_device_name(0), device_type="GPU", software_adapter=False)
        else:
            from tinygpt_bench.host import collect_cpu

            d.update(device=collect_cpu()["cpu_model"], device_type="CPU", threads=t.get_num_threads())
        return d

    def load(self, preset: Preset, params: np.ndarray) -> None:
        t = self.torch
        self.layout = Layout(preset)
        params = np.asarray(params)
        if params.shape != (self.layout.total,):
            raise ValueError(f"parameters have shape {params.shape}; preset '{preset.name}' needs ({self.layout.total},)")
        self.preset = preset
        views = self.layout.views(np.asarray(params, dtype=np.float32))
        dev = t.device(self.device)
        self.params = {s.name: t.nn.Parameter(t.from_numpy(views[s.name].copy()).to(dev)) for s in self.layout.specs}
        decay = [self.params[s.name] for s in self.layout.specs if s.decay]
        other = [self.params[s.name] for s in self.layout.specs if not s.decay]
        self.opt = t.optim.AdamW(
            [{"params": decay, "weight_decay": OPTIM.weight_decay}, {"params": other, "weight_decay": 0.0}],
            lr=DEFAULT_LR, betas=(OPTIM.beta1, OPTIM.beta2), eps=OPTIM.eps, foreach=True,
        )
        self.forward = build_forward(t, preset.heads)
        self._grads = None

    def _sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def step(self, batch: np.ndarray, lr: float = DEFAULT_LR) -> float:
        t = self.torch
        pr = self.preset
        if np.shape(batch) != (pr.batch, pr.ctx + 1):
            raise ValueError(f"batch has shape {np.shape(batch)}; preset '{pr.name}' needs ({pr.batch}, {pr.ctx + 1})")
        b = t.from_numpy(np.ascontiguousarray(batch, dtype=np.int64)).to(self.device, non_blocking=True)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss = self.forward(self.params, b[:, :-1], b[:, 1:])
        loss.backward()
        self._grads = [self.params[s.name].grad.detach().clone() for s in self.layout.specs] if self.keep_grads else None
        t.nn.utils.clip_grad_norm_(list(self.params.values()), OPTIM.clip, foreach=True)
        self.opt.step()
        out = float(loss.item())  # .item() waits for the device: the step is done
        self._sync()
        return out

    keep_grads = False  # a copy of every gradient each step costs time; parity checks turn it on

    def parameters(self) -> np.ndarray:
        return np.concatenate([self.params[s.name].detach().cpu().numpy().ravel() for s in self.layout.specs])

    def gradients(self) -> np.ndarray:
        if self._grads is None:
            raise RuntimeError("gradients() needs keep_grads = True before step()")
        return np.concatenate([g.cpu().numpy().ravel() for g in self._grads]).astype(np.float32)

    def memory_bytes(self) -> int | None:
        if self.device == "cuda":
            return int(self.torch.cuda.max_memory_allocated())
        return None

    def close(self) -> None:
        self.params = self.opt = self._grads = None
        if self.device == "cuda":
            self.torch.cuda.empty_cache()
