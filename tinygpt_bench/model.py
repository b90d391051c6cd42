"""The model's parameter layout, initialisation and cost counts (docs/MODEL.md).

Legend (as in llm.c): B = batch, T = context, C = d_model, L = layers, H = heads,
V = vocabulary (256), hd = C / H.

All parameters live in ONE flat fp32 vector, split by one (name, shape) table shared
by every backend: the numpy reference, the wasm module and the GPU buffers. Per-layer
tensors are stacked over L, so each group is one contiguous block:

    tok_emb  (V, C)        pos_emb (T, C)
    ln1_w    (L, C)        ln1_b   (L, C)
    wq, wk, wv, wo (L, C, C)   bq, bk, bv, bo (L, C)     linear: y = x @ W + b, W is (in, out)
    ln2_w    (L, C)        ln2_b   (L, C)
    fc_in_w  (L, C, 4C)    fc_in_b (L, 4C)
    fc_out_w (L, 4C, C)    fc_out_b (L, C)
    lnf_w    (C,)          lnf_b   (C,)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tinygpt_bench.presets import VOCAB, Preset


@dataclass(frozen=True)
class ParamSpec:
    name: str
    shape: tuple[int, ...]
    offset: int  # in elements, into the flat vector
    decay: bool  # AdamW weight decay applies (matrices and embeddings only)
    init: str  # "normal", "normal_resid", "zeros", "ones"

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def _table(p: Preset) -> list[tuple[str, tuple[int, ...], bool, str]]:
    V, C, T, L = VOCAB, p.d_model, p.ctx, p.layers
    return [
        ("tok_emb", (V, C), True, "normal"),
        ("pos_emb", (T, C), True, "normal"),
        ("ln1_w", (L, C), False, "ones"),
        ("ln1_b", (L, C), False, "zeros"),
        ("wq", (L, C, C), True, "normal"),
        ("bq", (L, C), False, "zeros"),
        ("wk", (L, C, C), True, "normal"),
        ("bk", (L, C), False, "zeros"),
        ("wv", (L, C, C), True, "normal"),
        ("bv", (L, C), False, "zeros"),
        ("wo", (L, C, C), True, "normal_resid"),
        ("bo", (L, C), False, "zeros"),
        ("ln2_w", (L, C), False, "ones"),
        ("ln2_b", (L, C), False, "zeros"),
        ("fc_in_w", (L, C, 4 * C), True, "normal"),
        ("fc_in_b", (L, 4 * C), False, "zeros"),
        ("fc_out_w", (L, 4 * C, C), True, "normal_resid"),
        ("fc_out_b", (L, C), False, "zeros"),
        ("lnf_w", (C,), False, "ones"),
        ("lnf_b", (C,), False, "zeros"),
    ]


class Layout:
    """Named views into the one flat parameter vector of a preset."""

    def __init__(self, preset: Preset):
        self.preset = preset
        specs, off = [], 0
        for name, shape, decay, init in _table(preset):
            spec = ParamSpec(name, shape, off, decay, init)
            specs.append(spec)
            off += spec.size
        self.specs: list[ParamSpec] = specs
        self.by_name = {s.name: s for s in specs}
        self.total = off  # number of fp32 parameters

    def views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """name -> view (no copy) of `flat` with the tensor's shape."""
        if flat.shape != (self.total,):
            raise ValueError(f"flat vector has shape {flat.shape}, layout needs ({self.total},)")
        return {s.name: flat[s.offset : s.offset + s.size].reshape(s.shape) for s in self.specs}

    def decay_mask(self, dtype=np.float32) -> np.ndarray:
        mask = np.zeros(self.total, dtype=dtype)
        for s in self.specs:
            if s.decay:
                mask[s.offset : s.offset + s.size] = 1
        return mask

    def init(self, seed: int = 0) -> np.ndarray:
        """Seeded initial weights (docs/MODEL.md), fp32, generated once on the host."""
        rng = np.random.Generator(np.random.PCG64(seed))
        flat = np.empty(self.total, dtype=np.float32)
        views = self.views(flat)
        resid_std = 0.02 / math.sqrt(2 * self.preset.layers)
        for s in self.specs:
            v = views[s.name]
            if s.init == "zeros":
                v.fill(0.0)
            elif s.init == "ones":
                v.fill(1.0)
            else:
                rng.standard_normal(out=v, dtype=np.float32)
                v *= np.float32(0.02 if s.init == "normal" else resid_std)
        return flat


def param_count(p: Preset) -> int:
    """docs/MODEL.md: 256*C + ctx*C + L*(12*C*C + 13*C) + 2*C."""
    C = p.d_model
    return VOCAB * C + p.ctx * C + p.layers * (12 * C * C + 13 * C) + 2 * C


def flops_per_step(p: Preset) -> dict[str, int]:
    """Floating-point operations of one training step, matrix products only.

    Counted as 2 FLOPs per multiply-add of every matrix product in the forward pass:
    per token and layer Q, K, V, O (4 * 2C^2) and the MLP (2 * 2 * 4C^2), the tied
    head (2 * C * V per token), and causal attention computing only the allowed
    pairs (Q K^T and P V: 2 * 2 * C * T(T+1)/2 per sequence and layer). The backward
    pass is counted as twice the forward (a gradient for inputs and one for weights
    per product). Layernorm, GELU, softmax, cross-entropy and AdamW are left out
    (they are O(N) per element, a few percent at these sizes).
    """
    B, T, C, L = p.batch, p.ctx, p.d_model, p.layers
    matmul = B * T * (L * 24 * C * C + 2 * C * VOCAB)
    attention = B * L * 2 * C * T * (T + 1)
    forward = matmul + attention
    return {"forward": forward, "backward": 2 * forward, "total": 3 * forward}


def step_bytes(p: Preset) -> dict[str, int]:
    """fp32 bytes a training step keeps resident.

    weights, grads and the two AdamW moments: 4 bytes a parameter each. Activations:
    what the backward pass needs saved, flash-attention style (no T x T matrix):
    per layer 16*B*T*C values (ln1 out, q, k, v, attention out, residual, ln2 out,
    MLP pre- and post-GELU at 4C each, residual), 4*B*T layernorm statistics and
    B*H*T softmax log-sum-exps; plus the embedding sum and final layernorm (2*B*T*C
    + 2*B*T) and the logits with their gradient (2*B*T*V).
    """
    B, T, C, L, H = p.batch, p.ctx, p.d_model, p.layers, p.heads
    n = param_count(p)
    act = L * (16 * B * T * C + 4 * B * T + B * H * T) + 2 * B * T * C + 2 * B * T + 2 * B * T * VOCAB
    out = {"weights": 4 * n, "grads": 4 * n, "adam": 8 * n, "activations": 4 * act}
    out["total"] = sum(out.values())
    return out
