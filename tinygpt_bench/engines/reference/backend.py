"""The numpy reference: the readable model every engine is checked against (docs/MODEL.md).

Legend (as in llm.c): B = batch, T = context actually used (<= preset ctx), C = channels
(d_model), V = vocabulary (256), L = layers, H = heads, hd = C / H, BT = B*T rows.
The residual stream is kept as (BT, C) so every linear layer is one 2-D matrix product.

Layout of this file, top to bottom:
    erf                      float64-accurate error function in pure numpy (no scipy)
    <layer>_forward/backward each forward directly above its backward; backward ADDS
                             parameter gradients into the given views (`+=`, after the one
                             zero_grad in `backward`) and RETURNS the input gradient
    forward, backward        the whole model over the flat parameter vector (model.Layout)
    loss_and_grad, loss_only pure functions for tests, parity checks and other code
    clip_grad, adamw_update  the optimizer: one pass over the flat vectors
    ReferenceBackend         the Backend contract around all of the above

Everything is computed in the dtype of the flat parameter vector it is given: float64
for the oracle ('reference'), float32 to see what fp32 rounding alone does to a run
('reference-fp32'). Python float constants keep float32 arrays float32 (NEP 50).
"""

from __future__ import annotations

import math
import os

import numpy as np
from numpy.polynomial import Chebyshev, Polynomial

from tinygpt_bench.engines.base import DEFAULT_LR, OPTIM, AdamW, Backend
from tinygpt_bench.errors import UserError
from tinygpt_bench.host import collect_cpu
from tinygpt_bench.model import Layout
from tinygpt_bench.presets import VOCAB, Preset

LN_EPS = 1e-5  # LayerNorm epsilon, population variance (torch default)
CLIP_EPS = 1e-6  # clip scale = clip / (norm + CLIP_EPS), as torch.nn.utils.clip_grad_norm_

# ----------------------------------------------------------------------------------------
# erf: numpy has none, scipy is not a dependency, and math.erf over an array through
# np.frompyfunc costs ~0.1 s per million values (xl runs 8M GELU inputs a step). The GELU
# needs erf to float64 accuracy (the finite-difference and torch checks compare at 1e-8
# and tighter), so, for a = |x| (erf is odd):
#   a <= 1      erf = a * P(a^2): the Maclaurin series of erf(x)/x in u = x^2 (alternating,
#               shrinking terms), economised to degree 11 through Chebyshev polynomials on
#               u in [0, 1]; the first dropped Chebyshev coefficient is ~6e-18.
#   1 < a < 6   erf = 1 - exp(-a^2) * erfcx(a), erfcx(a) = exp(a^2) erfc(a) smooth and slowly
#               varying: Chebyshev interpolants on [1, 3] (degree 18) and [3, 6] (degree 14),
#               built once at import from math.erfc (libm, < 1 ulp) at Chebyshev points and
#               evaluated as polynomials in the interval's own variable t in [-1, 1].
#   a >= 6      erf = 1 (erfc(6) = 2e-17 is below half an ulp of 1); evaluated as a = 6.
# Max abs error against math.erf over [-7, 7]: ~4e-16 (tests/test_reference.py checks 2e-15).
# Work goes in chunks of 64K values so the ~20 passes of Horner stay in cache: ~15-20 ms
# per million values on this machine, against ~100 ms for np.frompyfunc(math.erf).

_ERF_CHUNK = 1 << 16


def _erf_small_poly() -> np.ndarray:
    taylor = Polynomial(
        [2.0 / math.sqrt(math.pi) * (-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(25)]
    )  # erf(x)/x in u = x^2; 25 terms: the rest is < 1e-27 on [0, 1]
    cheb = taylor.convert(kind=Chebyshev, domain=[0.0, 1.0]).truncate(12)  # degree 11
    return cheb.convert(kind=Polynomial, domain=[-1.0, 1.0], window=[-1.0, 1.0]).coef  # plain powers of u


def _erfcx_poly(lo: float, hi: float, deg: int) -> np.ndarray:
    f = np.frompyfunc(lambda s: math.erfc(s) * math.exp(s * s), 1, 1)
    cheb = Chebyshev.interpolate(lambda s: f(s).astype(np.float64), deg, domain=[lo, hi])
    return cheb.convert(kind=Polynomial, domain=[lo, hi]).coef  # powers of t = (2s - lo - hi) / (hi - lo)


_ERF_SMALL = _erf_small_poly()
_ERFCX_1_3 = _erfcx_poly(1.0, 3.0, 18)
_ERFCX_3_6 = _erfcx_poly(3.0, 6.0, 14)


def _horner(coef: np.ndarray, t: np.ndarray) -> np.ndarray:
    """sum_k coef[k] t^k."""
    acc = np.full_like(t, coef[-1])
    for c in coef[-2::-1]:
        acc *= t
        acc += c
    return acc


def _erf_abs(a: np.ndarray, out: np.ndarray) -> None:
    # a (N,) float64, a >= 0 or NaN -> out (N,) = erf(a)
    u = a * a
    np.minimum(u, 1.0, out=u)  # entries with a > 1 are overwritten below
    out[...] = _horner(_ERF_SMALL, u)
    out *= a
    mid = np.flatnonzero(a > 1.0)
    if mid.size:
        s = np.minimum(a[mid], 6.0)
        g = _horner(_ERFCX_1_3, np.minimum(s, 3.0) - 2.0)  # t = (2s - 4) / 2
        far = np.flatnonzero(s > 3.0)
        if far.size:
            g[far] = _horner(_ERFCX_3_6, (2.0 * s[far] - 9.0) / 3.0)
        g *= np.exp(-s * s)
        out[mid] = 1.0 - g


def erf(x: np.ndarray) -> np.ndarray:
    """Error function, elementwise; computed in float64, returned in x's float dtype."""
    x = np.asarray(x)
    out_dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    x64 = x.astype(np.float64, copy=False).ravel()  # (N,)
    a = np.abs(x64)
    out = np.empty_like(a)
    for i in range(0, a.size, _ERF_CHUNK):
        _erf_abs(a[i : i + _ERF_CHUNK], out[i : i + _ERF_CHUNK])
    np.copysign(out, x64, out=out)
    return out.reshape(x.shape).astype(out_dtype, copy=False)


# ----------------------------------------------------------------------------------------
# encoder: token + position embeddings


def encoder_forward(tok_emb, pos_emb, ids):
    # tok_emb (V,C), pos_emb (ctx,C), ids (B,T) int -> out (BT,C)
    B, T = ids.shape
    return (tok_emb[ids] + pos_emb[:T]).reshape(B * T, -1)


def encoder_backward(dtok_emb, dpos_emb, dout, ids):
    # dout (BT,C); adds into dtok_emb (V,C) and dpos_emb (ctx,C)
    B, T = ids.shape
    np.add.at(dtok_emb, ids.ravel(), dout)
    dpos_emb[:T] += dout.reshape(B, T, -1).sum(axis=0)


# ----------------------------------------------------------------------------------------
# layernorm over C, gain and bias, population variance, eps 1e-5


def layernorm_forward(inp, weight, bias):
    # inp (BT,C), weight (C,), bias (C,) -> out (BT,C), mean (BT,1), rstd (BT,1)
    mean = inp.mean(axis=-1, keepdims=True)
    xc = inp - mean
    var = (xc * xc).mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + LN_EPS)
    return xc * rstd * weight + bias, mean, rstd


def layernorm_backward(dweight, dbias, dout, inp, weight, mean, rstd):
    # dout (BT,C), inp (BT,C), mean/rstd (BT,1) -> dinp (BT,C); adds dweight, dbias (C,)
    xhat = (inp - mean) * rstd
    dbias += dout.sum(axis=0)
    dweight += (dout * xhat).sum(axis=0)
    dxhat = dout * weight
    return rstd * (
        dxhat - dxhat.mean(axis=-1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)
    )


# ----------------------------------------------------------------------------------------
# matmul (linear): y = x @ W + b, W stored (in, out)


def matmul_forward(inp, weight, bias):
    # inp (BT,IC), weight (IC,OC), bias (OC,) -> out (BT,OC)
    return inp @ weight + bias


def matmul_backward(dweight, dbias, dout, inp, weight):
    # dout (BT,OC), inp (BT,IC) -> dinp (BT,IC); adds dweight (IC,OC), dbias (OC,)
    dweight += inp.T @ dout
    dbias += dout.sum(axis=0)
    return dout @ weight.T


# ----------------------------------------------------------------------------------------
# causal multi-head attention on projected q, k, v; the (B,H,T,T) probabilities are kept


def _heads(x, B, T, H):
    # (BT,C) -> (B,H,T,hd)
    return x.reshape(B, T, H, -1).transpose(0, 2, 1, 3)


def _merge(x):
    # (B,H,T,hd) -> (BT,C)
    B, H, T, hd = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B * T, H * hd)


def attention_forward(q, k, v, B, T, H):
    # q, k, v (BT,C) -> out (BT,C), att (B,H,T,T) softmax probabilities
    scale = 1.0 / math.sqrt(q.shape[1] // H)
    qh, kh, vh = _heads(q, B, T, H), _heads(k, B, T, H), _heads(v, B, T, H)  # (B,H,T,hd)
    preatt = (qh @ kh.transpose(0, 1, 3, 2)) * scale  # (B,H,T,T)
    preatt[:, :, np.triu(np.ones((T, T), dtype=bool), k=1)] = -np.inf  # key after query
    preatt -= preatt.max(axis=-1, keepdims=True)
    att = np.exp(preatt)
    att /= att.sum(axis=-1, keepdims=True)
    return _merge(att @ vh), att


def attention_backward(dout, q, k, v, att, B, T, H):
    # dout (BT,C), q/k/v (BT,C), att (B,H,T,T) -> dq, dk, dv (BT,C)
    scale = 1.0 / math.sqrt(q.shape[1] // H)
    qh, kh, vh = _heads(q, B, T, H), _heads(k, B, T, H), _heads(v, B, T, H)
    dy = _heads(dout, B, T, H)  # (B,H,T,hd)
    datt = dy @ vh.transpose(0, 1, 3, 2)  # (B,H,T,T)
    dvh = att.transpose(0, 1, 3, 2) @ dy  # (B,H,T,hd)
    # softmax backward; masked entries have att == 0 and so get no gradient
    dpreatt = att * (datt - (datt * att).sum(axis=-1, keepdims=True))
    dpreatt *= scale
    dqh = dpreatt @ kh  # (B,H,T,hd)
    dkh = dpreatt.transpose(0, 1, 3, 2) @ qh  # (B,H,T,hd)
    return _merge(dqh), _merge(dkh), _merge(dvh)


# ----------------------------------------------------------------------------------------
# GELU, exact (erf) form: y = x * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def gelu_forward(inp):
    # inp (BT,4C) -> out (BT,4C), cdf (BT,4C) = Phi(inp), kept for backward
    cdf = 0.5 * (1.0 + erf(inp * _SQRT_HALF))
    return inp * cdf, cdf


def gelu_backward(dout, inp, cdf):
    # dout, inp, cdf (BT,4C) -> dinp (BT,4C); d/dx x Phi(x) = Phi(x) + x phi(x)
    pdf = _INV_SQRT_2PI * np.exp(-0.5 * inp * inp)
    return dout * (cdf + inp * pdf)


# ----------------------------------------------------------------------------------------
# cross-entropy over the tied head's logits, mean over all BT positions


def crossentropy_forward(logits, targets):
    # logits (BT,V), targets (BT,) int -> loss (0-d, logits' dtype), probs (BT,V)
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=-1, keepdims=True)  # (BT,1)
    rows = np.arange(len(targets))
    loss = (np.log(s[:, 0]) - z[rows, targets]).mean()
    return loss, e / s


def crossentropy_backward(probs, targets):
    # probs (BT,V), targets (BT,) -> dlogits (BT,V) of the MEAN loss
    dlogits = probs.copy()
    dlogits[np.arange(len(targets)), targets] -= 1.0
    dlogits /= len(targets)
    return dlogits


# ----------------------------------------------------------------------------------------
# the whole model over named views of the flat vector (model.Layout)


def forward(params: dict, ids: np.ndarray, heads: int):
    """params: Layout.views of the flat vector; ids (B,T) -> logits (BT,V), acts (for backward)."""
    B, T = ids.shape
    L = params["wq"].shape[0]
    x = encoder_forward(params["tok_emb"], params["pos_emb"], ids)  # (BT,C)
    acts = {"x0": x, "layers": []}
    for l in range(L):
        a = {"x_in": x}
        a["ln1"], a["ln1_mean"], a["ln1_rstd"] = layernorm_forward(x, params["ln1_w"][l], params["ln1_b"][l])
        a["q"] = matmul_forward(a["ln1"], params["wq"][l], params["bq"][l])  # (BT,C)
        a["k"] = matmul_forward(a["ln1"], params["wk"][l], params["bk"][l])
        a["v"] = matmul_forward(a["ln1"], params["wv"][l], params["bv"][l])
        a["atty"], a["att"] = attention_forward(a["q"], a["k"], a["v"], B, T, heads)  # (BT,C), (B,H,T,T)
        x = x + matmul_forward(a["atty"], params["wo"][l], params["bo"][l])
        a["x_mid"] = x
        a["ln2"], a["ln2_mean"], a["ln2_rstd"] = layernorm_forward(x, params["ln2_w"][l], params["ln2_b"][l])
        a["fch"] = matmul_forward(a["ln2"], params["fc_in_w"][l], params["fc_in_b"][l])  # (BT,4C)
        a["fch_gelu"], a["fch_cdf"] = gelu_forward(a["fch"])
        x = x + matmul_forward(a["fch_gelu"], params["fc_out_w"][l], params["fc_out_b"][l])
        acts["layers"].append(a)
    acts["x_final"] = x
    acts["lnf"], acts["lnf_mean"], acts["lnf_rstd"] = layernorm_forward(x, params["lnf_w"], params["lnf_b"])
    logits = acts["lnf"] @ params["tok_emb"].T  # (BT,V), tied head
    return logits, acts


def backward(grads: dict, dlogits: np.ndarray, params: dict, ids: np.ndarray, heads: int, acts: dict) -> None:
    """Adds the gradient of every parameter into `grads` (Layout.views of a zeroed vector)."""
    B, T = ids.shape
    L = params["wq"].shape[0]
    grads["tok_emb"] += dlogits.T @ acts["lnf"]  # (V,C), the tied head's share
    dlnf = dlogits @ params["tok_emb"]  # (BT,C)
    dx = layernorm_backward(
        grads["lnf_w"], grads["lnf_b"], dlnf, acts["x_final"], params["lnf_w"], acts["lnf_mean"], acts["lnf_rstd"]
    )
    for l in reversed(range(L)):
        a = acts["layers"][l]
        # MLP branch: x = x_mid + fc_out(gelu(fc_in(ln2(x_mid))))
        dgelu = matmul_backward(grads["fc_out_w"][l], grads["fc_out_b"][l], dx, a["fch_gelu"], params["fc_out_w"][l])
        dfch = gelu_backward(dgelu, a["fch"], a["fch_cdf"])
        dln2 = matmul_backward(grads["fc_in_w"][l], grads["fc_in_b"][l], dfch, a["ln2"], params["fc_in_w"][l])
        dx = dx + layernorm_backward(
            grads["ln2_w"][l], grads["ln2_b"][l], dln2, a["x_mid"], params["ln2_w"][l], a["ln2_mean"], a["ln2_rstd"]
        )
        # attention branch: x_mid = x_in + wo(attn(q, k, v of ln1(x_in)))
        datty = matmul_backward(grads["wo"][l], grads["bo"][l], dx, a["atty"], params["wo"][l])
        dq, dk, dv = attention_backward(datty, a["q"], a["k"], a["v"], a["att"], B, T, heads)
        dln1 = matmul_backward(grads["wq"][l], grads["bq"][l], dq, a["ln1"], params["wq"][l])
        dln1 += matmul_backward(grads["wk"][l], grads["bk"][l], dk, a["ln1"], params["wk"][l])
        dln1 += matmul_backward(grads["wv"][l], grads["bv"][l], dv, a["ln1"], params["wv"][l])
        dx = dx + layernorm_backward(
            grads["ln1_w"][l], grads["ln1_b"][l], dln1, a["x_in"], params["ln1_w"][l], a["ln1_mean"], a["ln1_rstd"]
        )
    encoder_backward(grads["tok_emb"], grads["pos_emb"], dx, ids)


def _check(layout: Layout, flat: np.ndarray, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate inputs up front, naming the bad one; -> ids (B,T), targets (BT,)."""
    if flat.dtype not in (np.float32, np.float64):
        raise ValueError(f"flat parameters are {flat.dtype}; give float32 or float64")
    name = layout.preset.name
    if flat.shape != (layout.total,):
        raise ValueError(f"flat parameters have shape {flat.shape}; preset '{name}' needs ({layout.total},)")
    batch = np.asarray(batch)
    if batch.ndim != 2 or batch.shape[1] < 2 or not np.issubdtype(batch.dtype, np.integer):
        raise ValueError(f"batch must be an integer array (B, T+1) with T >= 1; got {batch.dtype} {batch.shape}")
    if batch.shape[1] - 1 > layout.preset.ctx:
        raise ValueError(f"batch has T = {batch.shape[1] - 1} positions; preset '{name}' has ctx {layout.preset.ctx}")
    if batch.size and (batch.min() < 0 or batch.max() >= VOCAB):
        raise ValueError(f"batch values must be bytes 0..{VOCAB - 1}; got {batch.min()}..{batch.max()}")
    return batch[:, :-1].astype(np.intp), batch[:, 1:].reshape(-1).astype(np.intp)


def loss_and_grad(preset: Preset, flat_params: np.ndarray, batch: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of `batch` (B, T+1) and its gradient, a flat vector in flat_params' dtype."""
    layout = Layout(preset)
    ids, targets = _check(layout, flat_params, batch)
    params = layout.views(flat_params)
    logits, acts = forward(params, ids, preset.heads)
    loss, probs = crossentropy_forward(logits, targets)
    grad = np.zeros_like(flat_params)  # zero_grad
    backward(layout.views(grad), crossentropy_backward(probs, targets), params, ids, preset.heads, acts)
    return float(loss), grad


def loss_only(preset: Preset, flat_params: np.ndarray, batch: np.ndarray) -> float:
    """Mean cross-entropy of `batch` (B, T+1), forward pass only."""
    layout = Layout(preset)
    ids, targets = _check(layout, flat_params, batch)
    logits, _ = forward(layout.views(flat_params), ids, preset.heads)
    return float(crossentropy_forward(logits, targets)[0])


# ----------------------------------------------------------------------------------------
# optimizer: global-norm clip, then AdamW, each one pass over the flat vectors


def clip_grad(grad: np.ndarray, max_norm: float = OPTIM.clip) -> tuple[np.ndarray, float]:
    """-> (grad scaled by max_norm / (norm + 1e-6) if norm > max_norm, else grad itself; norm).

    norm = sqrt(sum g^2) over ALL parameters. `grad` is never modified.
    """
    norm = float(np.sqrt(np.dot(grad, grad)))
    if norm > max_norm:
        return grad * (max_norm / (norm + CLIP_EPS)), norm
    return grad, norm


def adamw_update(params, grad, m, v, t: int, lr: float, decay_mask, opt: AdamW = OPTIM) -> None:
    """One AdamW step over flat vectors, in place, in torch.optim.AdamW's order.

    t is the 1-based step count; decay_mask (Layout.decay_mask) is 1 where weight decay
    applies. Per element:
        p *= 1 - lr*wd*mask                       decoupled decay, on the old p, first
        m  = b1*m + (1-b1)*g
        v  = b2*v + (1-b2)*g^2
        p -= (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)
    which is p -= lr * (mhat / (sqrt(vhat) + eps) + wd*mask*p_old).
    """
    if t < 1:
        raise ValueError(f"AdamW step count t is 1-based; got {t}")
    params *= 1.0 - (lr * opt.weight_decay) * decay_mask
    m *= opt.beta1
    m += (1.0 - opt.beta1) * grad
    v *= opt.beta2
    v += (1.0 - opt.beta2) * (grad * grad)
    bias1 = 1.0 - opt.beta1**t
    bias2 = 1.0 - opt.beta2**t
    denom = np.sqrt(v)
    denom /= math.sqrt(bias2)
    denom += opt.eps
    params -= (lr / bias1) * (m / denom)


# ----------------------------------------------------------------------------------------


def _blas() -> str:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # older numpy, or a build without the record
        return "unknown"


def _blas_threads() -> str:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var):
            return f"{var}={os.environ[var]}"
    return f"BLAS default (cpu_count {os.cpu_count()})"


class ReferenceBackend(Backend):
    """The numpy reference as a Backend: 'reference' (float64, the oracle) or 'reference-fp32'."""

    def __init__(self, dtype: str = "float64", fault: str | None = None):
        if dtype not in ("float64", "float32"):
            raise UserError(f"reference backend dtype '{dtype}' is not supported; choose float64 or float32")
        self.dtype = np.dtype(dtype)
        self.name = "reference" if dtype == "float64" else "reference-fp32"
        if fault not in (None, "nan-grad"):
            raise UserError(f"reference backend: fault '{fault}' cannot be injected here; it takes nan-grad")
        self.fault = fault
        self._free()

    def _free(self) -> None:
        self.preset: Preset | None = None
        self.params = self.m = self.v = self.mask = self.grad = None
        self.t = 0
        self.last_grad_norm: float | None = None

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "api": "numpy",
            "device": collect_cpu()["cpu_model"],
            "device_type": "CPU",
            "runtime": f"numpy {np.__version__}",
            "runtime_settings": f"{self.dtype} BLAS {_blas()}",
            "dtype": str(self.dtype),
            "numpy": np.__version__,
            "blas": _blas(),
            "blas_threads": _blas_threads(),
        }

    def load(self, preset: Preset, params: np.ndarray) -> None:
        layout = Layout(preset)
        params = np.asarray(params)
        if params.shape != (layout.total,):
            raise ValueError(f"parameters have shape {params.shape}; preset '{preset.name}' needs ({layout.total},)")
        self.preset = preset
        self.params = params.astype(self.dtype, copy=True)
        self.m = np.zeros_like(self.params)
        self.v = np.zeros_like(self.params)
        self.mask = layout.decay_mask(self.dtype)
        self.grad = None
        self.t = 0
        self.last_grad_norm = None

    def step(self, batch: np.ndarray, lr: float = DEFAULT_LR) -> float:
        if self.params is None:
            raise RuntimeError("reference backend: call load(preset, params) before step()")
        loss, grad = loss_and_grad(self.preset, self.params, batch)
        if self.fault == "nan-grad":  # fault injection (faults.py): a NaN in the gradient
            grad[grad.size // 2] = np.nan
        self.grad = grad  # raw, before clipping (gradients())
        clipped, self.last_grad_norm = clip_grad(grad, OPTIM.clip)
        self.t += 1
        adamw_update(self.params, clipped, self.m, self.v, self.t, lr, self.mask, OPTIM)
        return loss

    def parameters(self) -> np.ndarray:
        if self.params is None:
            raise RuntimeError("reference backend: call load(preset, params) before parameters()")
        return self.params.astype(np.float32)

    def gradients(self) -> np.ndarray:
        if self.grad is None:
            raise RuntimeError("reference backend: no gradient yet; call step() first")
        return self.grad.astype(np.float32)

    def close(self) -> None:
        self._free()
