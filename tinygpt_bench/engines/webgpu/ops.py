"""The model's kernels as dispatch builders: each function appends one or more dispatches of a
kernel in kernels/*.wgsl to a Program. Operands are `Ref`s: a buffer plus an element offset
(the flat parameter and gradient buffers are bound whole; offsets travel in the uniform).

Legend: B = batch, T = context, C = channels, H = heads, hd = C / H, V = vocabulary, BT = B*T rows.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from tinygpt_bench.engines.webgpu.runtime import Program


class Ref(NamedTuple):
    buf: object  # wgpu GPUBuffer
    off: int = 0  # element offset (f32 or u32 elements)

    def at(self, extra: int) -> "Ref":
        return Ref(self.buf, self.off + extra)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# matmul.wgsl ---------------------------------------------------------------------------------
HAS_BIAS, HAS_RES, ACCUM, BIAS_GRAD = 1, 2, 4, 8
ENTRIES = {"direct": "matmul_direct", "direct4": "matmul_direct4", "shared": "matmul_shared",
           "shared_pf": "matmul_shared_pf", "big_pf": "matmul_big_pf", "big_db": "matmul_big_db"}  # variant -> entry point
BIG_VARIANTS = ("big_pf", "big_db")  # the 128 x 128 kernels (8 x 8 an invocation, a4/b4 bound)
TILE = {"direct4": 32, **{v: 128 for v in BIG_VARIANTS}}  # a workgroup's output tile (rows = columns); else 64
# with K split: the direct kinds have split-K entries of their own; the workgroup-memory ones split by z
SPLITK_ENTRIES = {**ENTRIES, "direct4": "matmul_splitk", "direct": "matmul_splitk8"}


def matmul(p: Program, name: str, c: Ref, a: Ref, b: Ref, m: int, n: int, k: int,
           trans_a: bool = False, trans_b: bool = False, bias: Ref | None = None,
           res: Ref | None = None, accum: bool = False, variant: str | None = None,
           bias_grad: Ref | None = None, split_k: int | None = None, scratch: Ref | None = None) -> None:
    """c (m,n) [+]= op(a) (m,k) @ op(b) (k,n) [+ bias (n)] [+ res (m,n)]; see matmul.wgsl.

    variant: "direct" (8x8 blocks, 64x64 tiles), "direct4" (4x4 blocks, 32x32 tiles), "shared"
    (64x64 workgroup-memory tiles; "shared_pf": the same with the next K step's loads issued
    early) or "big_pf" (128x128 workgroup-memory tiles, 8x8 blocks, loads issued early; "big_db":
    the same with the staged tiles double-buffered, one barrier a K step, bit-identical results).
    split_k: slices of K (matmul_splitk8 or matmul_splitk into scratch, then splitk_reduce,
    which applies bias, res and accum).
    Left as None, both are chosen by plan_matmul for the Gpu (split-K only if scratch is given).
    bias_grad (direct kinds, with trans_a: a weight gradient x^T @ dy): also write the column
    sums of dy there (the bias gradient), overwriting; not with bias; in c's buffer."""
    auto_variant, auto_split = plan_matmul(p.gpu, m, n, k, bias_grad is not None)
    variant = variant or auto_variant
    if split_k is None:
        split_k = auto_split if scratch is not None and variant == auto_variant else 1
    if bias_grad is not None and bias is not None:
        raise ValueError(f"{name}: bias_grad and bias exclude each other")
    if split_k > 1 and scratch is None:
        raise ValueError(f"{name}: split_k needs a scratch buffer")
    consts = {"TRANS_A": trans_a, "TRANS_B": trans_b, **_unroll(p, variant),
              **_vec4(p, variant, a.off, m if trans_a else k, b.off, k if trans_b else n)}
    tile = TILE.get(variant, 64)
    flags = (HAS_BIAS if bias is not None else 0) | (HAS_RES if res is not None else 0) | (ACCUM if accum else 0)
    flags |= BIAS_GRAD if bias_grad is not None else 0
    if bias_grad is not None and bias_grad.buf is not c.buf:
        raise ValueError(f"{name}: bias_grad must be in c's buffer (the kernel writes it through c)")
    # c is the one writable binding (matmul.wgsl); an operand the product does not use is bound
    # to a buffer it only reads, never to c's (WebGPU forbids a writable binding's buffer in any
    # other binding of the dispatch)
    if split_k > 1:
        parts, db_parts = scratch, scratch.at(split_k * m * n)
        entry = SPLITK_ENTRIES[variant]
        args = [m, n, k, a.off, b.off, parts.off, db_parts.off, 0, flags & BIAS_GRAD, split_k]
        p.add(name, "matmul", entry, args, {1: a.buf, 2: b.buf, 3: parts.buf, 4: a.buf, 5: a.buf,
                                            **_as_vec4(variant, a, b)},
              (cdiv(n, tile), cdiv(m, tile), split_k), constants=consts)
        bb, rr = bias_grad or bias or parts, res or parts
        args = [m, n, k, parts.off, 0, c.off, bb.off, rr.off, flags, split_k]
        p.add(name + ".reduce", "matmul", "splitk_reduce", args,
              {1: parts.buf, 3: c.buf, 4: (bias or parts).buf, 5: rr.buf}, grid(m * n, 64, 2048))
        return
    bb, rr = bias_grad or bias or a, res or a
    entry = ENTRIES[variant]
    args = [m, n, k, a.off, b.off, c.off, bb.off, rr.off, flags, 1]
    bufs = {1: a.buf, 2: b.buf, 3: c.buf, 4: (bias or a).buf, 5: rr.buf, **_as_vec4(variant, a, b)}
    p.add(name, "matmul", entry, args, bufs, (cdiv(n, tile), cdiv(m, tile)), constants=consts)


def _as_vec4(variant: str, a, b) -> dict:
    """The 128 x 128 kernels bind a's and b's buffers again as vec4s (matmul.wgsl: a4, b4)."""
    return {6: a.buf, 7: b.buf} if variant in BIG_VARIANTS else {}


def _vec4(p: Program, variant: str, a_off: int, a_row: int, b_off: int, b_row: int) -> dict:
    """A_VEC4 / B_VEC4 of the 128 x 128 kernels (16-byte loads of 4 consecutive floats), where
    the Gpu's matmul_vec4 is on and the operand's offset and stored row length (a_row, b_row
    floats) are multiples of 4; else the kernels load the 4 floats one by one."""
    if variant not in BIG_VARIANTS or not getattr(p.gpu, "matmul_vec4", False):
        return {}
    return {"A_VEC4": a_off % 4 == 0 and a_row % 4 == 0, "B_VEC4": b_off % 4 == 0 and b_row % 4 == 0}


def _unroll(p: Program, variant: str) -> dict:
    """The UNROLL override of the workgroup-memory kernels (matmul.wgsl): the Gpu's matmul_unroll."""
    if variant in ("shared", "shared_pf", *BIG_VARIANTS):
        return {"UNROLL": bool(getattr(p.gpu, "matmul_unroll", True))}
    return {}


def plan_matmul(gpu, m: int, n: int, k: int, bias_grad: bool = False, max_split: int = 8) -> tuple[str, int]:
    """(variant, split_k) for a product on this Gpu. With matmul_big (off by default): 128x128
    tiles ("big_pf") when there are at least min_workgroups / 2 of them. Where the Gpu has matmul_shared
    (GPUs): the workgroup-memory kernel (256 invocations a 64x64 tile) if its tiles bring as
    many invocations as min_workgroups of 64, with K split (slices >= 256 of K) while fewer
    than shared_fill tiles are in flight and K >= 1024; or with K split if K is long (>= 1024).
    Otherwise: 8x8 blocks when there are at least min_workgroups 64x64 tiles; else split a long
    K (>= 1024) over enough slices of 64x64 tiles, each slice >= 256 of K; else 4x4 blocks
    (32x32 tiles), splitting K if still short. The workgroup-memory kernel is "shared_pf" (loads
    of the next K step issued early) where the Gpu has shared_prefetch."""
    want = gpu.min_workgroups
    tiles64 = cdiv(m, 64) * cdiv(n, 64)
    if getattr(gpu, "matmul_big", False) and 2 * cdiv(m, 128) * cdiv(n, 128) >= want:
        # 128 x 128 tiles, at least one workgroup of 256 per SM; double-buffered with big_double_buffer
        return ("big_db" if getattr(gpu, "big_double_buffer", False) else "big_pf"), 1
    if getattr(gpu, "matmul_shared", False):
        shared = "shared_pf" if getattr(gpu, "shared_prefetch", False) else "shared"  # next K step's loads early
        if 4 * tiles64 >= want:
            fill = getattr(gpu, "shared_fill", 0)  # workgroups that fill the device (tuning_for)
            if fill and tiles64 < fill and k >= 1024:  # few tiles, long K: split K to fill it
                return shared, max(1, min(max_split, fill // tiles64, k // 256))
            return shared, 1
        if k >= 1024:
            return shared, max(1, min(max_split, cdiv(want, 4 * tiles64), k // 256))
    if tiles64 >= want:
        return "direct", 1
    if k >= 1024:
        return "direct", max(1, min(max_split, cdiv(want, tiles64), k // 256))
    tiles32 = cdiv(m, 32) * cdiv(n, 32)
    if tiles32 >= want:
        return "direct4", 1
    return "direct4", max(1, min(max_split, cdiv(want, tiles32), k // 128))


SKIP_UPPER, K_UPTO_ROW, K_FROM_ROW = 16, 32, 64  # matmul.wgsl: causal flags of batched products
BATCHED_VARIANTS = ("shared_pf", *BIG_VARIANTS)  # the kernels that take a batch (BATCHED)


class Operand(NamedTuple):
    """One operand of a batched product: product z's matrix is at ref + (z // inner) * outer_stride
    + (z % inner) * inner_stride, its rows ld elements apart."""
    ref: Ref
    ld: int
    outer_stride: int
    inner_stride: int


def matmul_batched(p: Program, name: str, c: Operand, a: Operand, b: Operand, m: int, n: int, k: int,
                   batch: tuple[int, int], trans_a: bool = False, trans_b: bool = False, causal: int = 0,
                   variant: str = "shared_pf") -> None:
    """c_z (m,n) = op(a_z) (m,k) @ op(b_z) (k,n) for the batch's outer * inner products z, one a
    workgroup z (matmul.wgsl, BATCHED). causal: SKIP_UPPER (tiles of c above the diagonal are not
    computed: nothing reads them), K_UPTO_ROW or K_FROM_ROW (K limited to where op(a) of a causal
    row can be non-zero). No bias, residual or split of K."""
    if variant not in BATCHED_VARIANTS:
        raise ValueError(f"{name}: variant {variant!r} takes no batch; one of {', '.join(BATCHED_VARIANTS)}")
    outer, inner = batch
    tile = TILE.get(variant, 64)
    args = [m, n, k, a.ref.off, b.ref.off, c.ref.off, 0, 0, causal, 1, a.ld, b.ld, c.ld, inner,
            a.outer_stride, a.inner_stride, b.outer_stride, b.inner_stride, c.outer_stride, c.inner_stride]
    p.add(name, "matmul", ENTRIES[variant], args, {1: a.ref.buf, 2: b.ref.buf, 3: c.ref.buf, 4: a.ref.buf, 5: a.ref.buf,
                                                   **_as_vec4(variant, a.ref, b.ref)},
          (cdiv(n, tile), cdiv(m, tile), outer * inner),
          constants={"TRANS_A": trans_a, "TRANS_B": trans_b, "BATCHED": True, **_unroll(p, variant)})


def splitk_scratch(m: int, n: int, split_k: int) -> int:
    """Floats of scratch a split-K product needs: S partial products and S partial bias sums."""
    return split_k * (m * n + n) if split_k > 1 else 0


def bias_backward(p: Program, name: str, db: Ref, dy: Ref, m: int, n: int, accum: bool = False) -> None:
    """db (n) [+]= column sums of dy (m,n)."""
    args = [m, n, 0, dy.off, 0, db.off, 0, 0, ACCUM if accum else 0, 1]
    p.add(name, "matmul", "bias_backward", args, {1: dy.buf, 3: db.buf}, (cdiv(n, 64),))


def grid(n: int, per_group: int = 64, max_groups: int = 4096) -> tuple[int]:
    """Workgroups for a grid-stride kernel over n items."""
    return (max(1, min(max_groups, cdiv(n, per_group))),)


def rows_grid(rows: int) -> tuple[int, int]:
    """One workgroup per row, rows spread over x and y (x < 65535)."""
    return (min(rows, 65535), cdiv(rows, 65535))


# layernorm.wgsl ------------------------------------------------------------------------------
def _ln_args(rows, c, x=0, w=0, b=0, y=0, stat=0, dy=0, dx=0, dw=0, db=0, flags=0):
    return [rows, c, x, w, b, y, stat, dy, dx, dw, db, flags]


def _ln_entry(p: Program, entry: str, rows: int, variant: str | None):
    """(kernel family, entry point, workgroups): per-row workgroups (GPUs; their row sums over
    subgroups where the Gpu's layernorm_subgroup is set: family layernorm_sg) or one invocation
    per row (variant "rows", CPUs)."""
    if (variant or p.gpu.layernorm_variant) == "rows":
        return "layernorm", entry + "_rows", (min(cdiv(rows, 64), 65535), cdiv(rows, 64 * 65535))
    return ("layernorm_sg" if getattr(p.gpu, "layernorm_subgroup", False) else "layernorm"), entry, rows_grid(rows)


def layernorm_forward(p: Program, name: str, y: Ref, stats: Ref, x: Ref, w: Ref, b: Ref, rows: int, c: int,
                      variant: str | None = None) -> None:
    """y (rows,c) = LN(x) * w + b; stats = mean (rows) then rstd (rows). w and b share a buffer.
    variant: "workgroup" (a workgroup per row) or "rows" (an invocation per row); default by adapter."""
    assert w.buf is b.buf
    args = _ln_args(rows, c, x=x.off, w=w.off, b=b.off, y=y.off, stat=stats.off)
    family, entry, groups = _ln_entry(p, "layernorm_forward", rows, variant)
    p.add(name, family, entry, args, {1: x.buf, 2: w.buf, 3: y.buf, 4: stats.buf}, groups)


def layernorm_backward(p: Program, name: str, dx: Ref, dw: Ref, db: Ref, dy: Ref, x: Ref, stats: Ref, w: Ref,
                       rows: int, c: int, accum: bool = False, variant: str | None = None) -> None:
    """dx (rows,c) [+]= LN input gradient; dw, db (c) = LN parameter gradients (overwritten)."""
    assert dw.buf is db.buf
    args = _ln_args(rows, c, x=x.off, w=w.off, stat=stats.off, dy=dy.off, dx=dx.off, dw=dw.off, db=db.off,
                    flags=ACCUM if accum else 0)
    family, entry, groups = _ln_entry(p, "layernorm_backward", rows, variant)
    p.add(name + ".dx", family, entry, args, {1: x.buf, 2: w.buf, 3: dx.buf, 4: stats.buf, 5: dy.buf}, groups)
    pch = getattr(p.gpu, "ln_param_channels", 32)
    p.add(name + ".dw", "layernorm", "layernorm_param_backward", args,
          {1: x.buf, 4: stats.buf, 5: dy.buf, 6: dw.buf}, (cdiv(c, pch),), constants={"PCH": pch})


# gelu.wgsl -----------------------------------------------------------------------------------
def gelu_forward(p: Program, name: str, y: Ref, x: Ref, n: int) -> None:
    p.add(name, "gelu", "gelu_forward", [n, x.off, y.off, 0], {1: x.buf, 2: y.buf}, grid(n))


def gelu_backward(p: Program, name: str, dy: Ref, x: Ref, n: int) -> None:
    """dy <- dy * gelu'(x), in place."""
    p.add(name, "gelu", "gelu_backward", [n, x.off, 0, dy.off], {1: x.buf, 3: dy.buf}, grid(n))


def erf_test(p: Program, name: str, y: Ref, x: Ref, n: int) -> None:
    p.add(name, "gelu", "erf_test", [n, x.off, y.off, 0], {1: x.buf, 2: y.buf}, grid(n))


# embedding.wgsl ------------------------------------------------------------------------------
class TokenLayout(NamedTuple):
    """Element offsets into the u32 tokens buffer the host writes each step."""
    ids: int  # (BT) inputs
    targets: int  # (BT)
    csr_start: int  # (V+1)
    csr_rows: int  # (BT)
    total: int

    @staticmethod
    def of(bt: int, v: int) -> "TokenLayout":
        return TokenLayout(0, bt, 2 * bt, 2 * bt + v + 1, 3 * bt + v + 1)


def _emb_args(bt, t, c, v, tl: TokenLayout, tok_off, pos_off, x_off):
    return [bt, t, c, v, tl.ids, tl.csr_start, tl.csr_rows, tok_off, pos_off, x_off]


def embedding_forward(p: Program, name: str, x: Ref, tokens, tl: TokenLayout, params, tok_off: int, pos_off: int,
                      bt: int, t: int, c: int, v: int) -> None:
    args = _emb_args(bt, t, c, v, tl, tok_off, pos_off, x.off)
    p.add(name, "embedding", "embedding_forward", args, {1: tokens, 2: params, 3: x.buf}, grid(bt * c))


def embedding_backward(p: Program, name: str, grads, dx: Ref, tokens, tl: TokenLayout, tok_off: int, pos_off: int,
                       bt: int, t: int, c: int, v: int) -> None:
    """dpos_emb = sum over batch (overwrite); dtok_emb += scatter of dx by token (CSR, no atomics)."""
    args = _emb_args(bt, t, c, v, tl, tok_off, pos_off, dx.off)
    p.add(name + ".pos", "embedding", "embedding_backward_pos", args, {3: dx.buf, 4: grads}, grid(t * c))
    p.add(name + ".tok", "embedding", "embedding_backward_tok", args, {1: tokens, 3: dx.buf, 4: grads}, grid(v * c))


def token_csr(ids, v: int):
    """(start (V+1), rows (BT)) u32: the rows holding each token, in row order."""
    import numpy as np

    flat = np.asarray(ids).ravel()
    rows = np.argsort(flat, kind="stable").astype(np.uint32)
    start = np.zeros(v + 1, dtype=np.uint32)
    np.cumsum(np.bincount(flat, minlength=v), out=start[1:])
    return start, rows


# crossentropy.wgsl ---------------------------------------------------------------------------
def crossentropy(p: Program, name: str, logits: Ref, tokens, tgt_off: int, losses: Ref, st: Ref,
                 rows: int, v: int) -> None:
    """losses (rows) = CE per row; logits <- dlogits of the mean loss; st[0] = mean loss."""
    args = [rows, v, logits.off, tgt_off, losses.off, st.off]
    p.add(name, "crossentropy", "crossentropy_forward_backward", args,
          {1: logits.buf, 2: tokens, 3: losses.buf}, rows_grid(rows))
    p.add(name + ".mean", "crossentropy", "loss_mean", args, {3: losses.buf, 4: st.buf}, (1,))


# optimizer.wgsl ------------------------------------------------------------------------------
ST_LR, ST_BC1, ST_BC2, ST_NORM, ST_SCALE, ST_LOSS, ST_PART = 0, 1, 2, 3, 4, 5, 8
NPARTS = 2048  # most partial sums of the gradient norm (the step record has room for them)


def clip_adamw(p: Program, name: str, params, grads, m, v, mask, st, n: int, beta1: float, beta2: float,
               eps: float, wd: float, clip: float) -> None:
    """Global grad-norm (st[NORM]), clip scale (st[SCALE]), AdamW over all n parameters.
    The host writes st[LR], st[BC1], st[BC2] before the step."""
    parts = min(NPARTS, getattr(p.gpu, "norm_parts", 256))  # workgroups of the partial sums (tuning_for)
    args = [n, parts, float(beta1), float(beta2), float(eps), float(wd), float(clip)]
    p.add(name + ".norm", "optimizer", "grad_norm_partial", args, {2: grads, 6: st}, (parts,))
    p.add(name + ".clip", "optimizer", "grad_norm_finish", args, {6: st}, (1,))
    p.add(name + ".adamw", "optimizer", "adamw", args, {1: params, 2: grads, 3: m, 4: v, 5: mask, 6: st},
          grid(n, 256, 65535))


NAN_BITS = 0x7FC00000  # a quiet NaN


def poison_grad(p: Program, name: str, grads, index: int, bits: int = NAN_BITS) -> None:
    """grads[index] = the f32 with these bits (a NaN): fault injection ('nan-grad', faults.py),
    a real dispatch between backward and the gradient norm."""
    args = [index, bits, 0.0, 0.0, 0.0, 0.0, 0.0]
    p.add(name, "optimizer", "poison_grad", args, {7: grads}, (1,))


def decay_bits(decay_mask) -> "object":
    """Pack a 0/1 mask (P) into u32 words, bit i%32 of word i//32."""
    import numpy as np

    packed = np.packbits(np.asarray(decay_mask, dtype=bool), bitorder="little")  # bit i%8 of byte i//8
    packed = np.concatenate([packed, np.zeros((-len(packed)) % 4, np.uint8)])
    return packed.view("<u4").astype(np.uint32, copy=False)  # little-endian words: bit i%32 of word i//32


# attention.wgsl ------------------------------------------------------------------------------
MAX_HD = 64


def attention_split(p: Program, hd: int, backward: bool) -> int:
    """Invocations per row: the Gpu's attention_split if set, else 4, but 2 for the backward
    kernels at head_dim above 32 (they hold four hd-float rows per invocation). H100, SPLIT
    2/4/8: behemoth (hd 64) forward 15.7/10.3/11.9 ms, dk/dv 20.2/26.7/42.5, dq 14.7/18.3/22.0;
    mega (hd 32) best at 4 in all three."""
    if p.gpu.attention_split:
        return p.gpu.attention_split
    return 2 if backward and hd > 32 else 4


def _hd4(p: Program, hd: int) -> dict:
    """The HD4 override of the attention kernels: hd / 4 as a pipeline constant where the Gpu's
    attention_const_hd is set (constant loop bounds: the per-row arrays can live in registers),
    else 0 (the kernels read hd from the uniform)."""
    return {"HD4": hd // 4} if getattr(p.gpu, "attention_const_hd", False) else {}


TILED_FORWARD, TILED_DKV = 1, 4  # bits of the attention_tiled mask (2 was dq's tiled kernel, removed)


def attention_tiled(gpu, tiled: bool | int | None = None, part: int = TILED_FORWARD, hd: int = 0) -> bool:
    """Whether `part` (TILED_FORWARD or TILED_DKV) runs as attention.wgsl's *_tiled kernel (score
    tiles as small matrix products in workgroup memory) instead of the row kernel; dq always runs
    as the row kernel. `tiled` (default the Gpu's attention_tiled): True/False for both, a mask of
    the parts, or None: by head_dim, as measured on the H100 (interleaved A/B, ms a step): the
    forward always (behemoth 10.6 -> 5.9, mega 3.7 -> 2.5, xl 0.55 -> 0.38), dk/dv above head_dim
    32 (behemoth 19.8 -> 17.6; at 32 slower: mega 5.1 -> 6.3)."""
    v = getattr(gpu, "attention_tiled", 0) if tiled is None else tiled
    if v is None:
        v = TILED_FORWARD | (TILED_DKV if hd > 32 else 0)
    return v if isinstance(v, bool) else bool(int(v) & part)


def _att_args(b, t, c, h, q, k, v, o, lse, dout=None, dq=None, dk=None, dv=None, dd=None):
    offs = [r.off if r is not None else 0 for r in (q, k, v, o, lse, dout, dq, dk, dv, dd)]
    return [t, c, h, c // h, *offs, float(1.0 / math.sqrt(c // h))]


def attention_forward(p: Program, name: str, o: Ref, lse: Ref, q: Ref, k: Ref, v: Ref,
                      b: int, t: int, c: int, h: int, split: int | None = None, tiled: bool | None = None) -> None:
    """o (B,T,C) = causal softmax attention; lse (B,H,T) saved. split: invocations per row
    (attention.wgsl SPLIT; default attention_split()); tiled: attention_forward_tiled instead
    (default attention_tiled())."""
    hd = c // h
    if hd > MAX_HD or hd % 4:
        raise ValueError(f"{name}: head_dim {hd}; the kernel needs a multiple of 4, at most {MAX_HD}")
    args = _att_args(b, t, c, h, q, k, v, o, lse)
    binds = {1: q.buf, 2: k.buf, 3: v.buf, 4: o.buf, 5: lse.buf}
    if attention_tiled(p.gpu, tiled, TILED_FORWARD, hd):
        p.add(name, "attention", "attention_forward_tiled", args, binds, (cdiv(t, 32), b * h),
              constants={"HD4": hd // 4})
        return
    p.add(name, "attention", "attention_forward", args, binds,
          (cdiv(t, 32), b * h), constants={"SPLIT": split or attention_split(p, hd, False), **_hd4(p, hd)})


def attention_backward(p: Program, name: str, dq: Ref, dk: Ref, dv: Ref, dd: Ref, dout: Ref, q: Ref, k: Ref,
                       v: Ref, o: Ref, lse: Ref, b: int, t: int, c: int, h: int, split: int | None = None,
                       tiled: bool | None = None) -> None:
    """dq, dk, dv (B,T,C) from dout; dd (B,H,T) is scratch (FA2's D = rowsum(dout * o)).
    tiled: as in attention_forward, for dk/dv (attention_backward_dkv_tiled). dq runs first: it
    writes dd."""
    hd = c // h
    args = _att_args(b, t, c, h, q, k, v, o, lse, dout, dq, dk, dv, dd)
    rows = {"SPLIT": split or attention_split(p, hd, True), **_hd4(p, hd)}
    p.add(f"{name}.dq", "attention", "attention_backward_dq", args,
          {1: q.buf, 2: k.buf, 3: v.buf, 4: o.buf, 5: lse.buf, 6: dout.buf, 7: dq.buf, 10: dd.buf},
          (cdiv(t, 32), b * h), constants=rows)
    dkv_binds = {1: q.buf, 2: k.buf, 3: v.buf, 5: lse.buf, 6: dout.buf, 8: dk.buf, 9: dv.buf, 10: dd.buf}
    if attention_tiled(p.gpu, tiled, TILED_DKV, hd):
        p.add(f"{name}.dkv", "attention", "attention_backward_dkv_tiled", args, dkv_binds, (cdiv(t, 16), b * h),
              constants={"HD4": hd // 4})
    else:
        p.add(f"{name}.dkv", "attention", "attention_backward_dkv", args, dkv_binds, (cdiv(t, 32), b * h),
              constants=rows)


# attention_mm.wgsl + batched products ----------------------------------------------------------

def attention_mm(gpu, t: int) -> bool:
    """Whether attention runs through matrix products (attention_forward_mm, attention_backward_mm)
    instead of attention.wgsl's kernels: where the Gpu's attention_mm is set and T reaches it."""
    at = getattr(gpu, "attention_mm", 0)
    return bool(at) and t >= at


def attention_mm_scratch(b: int, t: int, h: int) -> int:
    """Floats of each of the two score buffers of attention_*_mm: B*H*T*T."""
    return b * h * t * t


def _heads(x: Ref, t: int, c: int, hd: int) -> Operand:
    """Head h of batch b of a (B,T,C) tensor: rows C apart, at b*T*C + h*hd."""
    return Operand(x, c, t * c, hd)


def _scores(x: Ref, t: int, h: int) -> Operand:
    """Head h of batch b of a (B,H,T,T) score tensor: rows T apart, at (b*H + h)*T*T."""
    return Operand(x, t, h * t * t, t * t)


def _rows_args(b, t, c, h, s, dp, lse, o=None, dout=None):
    return [t, c, h, c // h, b * h * t, s.off, dp.off, lse.off, o.off if o else 0, dout.off if dout else 0,
            float(1.0 / math.sqrt(c // h))]


def _rows(rows: int) -> tuple[int, int]:
    """attention_mm.wgsl's grid: a workgroup a row, over x and y."""
    x = min(rows, 65535)
    return (x, cdiv(rows, x))


def attention_forward_mm(p: Program, name: str, o: Ref, lse: Ref, q: Ref, k: Ref, v: Ref, b: int, t: int, c: int,
                         h: int, s: Ref, variant: str = "shared_pf") -> None:
    """o (B,T,C) = causal softmax attention and lse (B,H,T), as attention_forward, through the
    scores s (B,H,T,T; attention_mm_scratch floats): s = q k^T, p = softmax(s * scale) in place,
    o = p v."""
    hd, batch = c // h, (b, h)
    matmul_batched(p, name + ".s", _scores(s, t, h), _heads(q, t, c, hd), _heads(k, t, c, hd), t, t, hd, batch,
                   trans_b=True, causal=SKIP_UPPER, variant=variant)
    p.add(name + ".softmax", "attention_mm", "softmax_causal", _rows_args(b, t, c, h, s, s, lse),
          {1: s.buf, 3: lse.buf}, _rows(b * h * t))
    matmul_batched(p, name + ".pv", _heads(o, t, c, hd), _scores(s, t, h), _heads(v, t, c, hd), t, hd, t, batch,
                   causal=K_UPTO_ROW, variant=variant)


def attention_backward_mm(p: Program, name: str, dq: Ref, dk: Ref, dv: Ref, dout: Ref, q: Ref, k: Ref, v: Ref,
                          o: Ref, lse: Ref, b: int, t: int, c: int, h: int, s: Ref, dp: Ref,
                          variant: str = "shared_pf") -> None:
    """dq, dk, dv (B,T,C) from dout, as attention_backward, through the scores s and dp (B,H,T,T
    each): s = q k^T and dp = dout v^T again; then p and ds = scale * p * (dp - rowsum(dout * o))
    in place (softmax_grad); dv = p^T dout, dq = ds k, dk = ds^T q."""
    hd, batch = c // h, (b, h)
    S, DP = _scores(s, t, h), _scores(dp, t, h)
    heads = lambda x: _heads(x, t, c, hd)  # noqa: E731
    matmul_batched(p, name + ".s", S, heads(q), heads(k), t, t, hd, batch, trans_b=True, causal=SKIP_UPPER,
                   variant=variant)
    matmul_batched(p, name + ".dp", DP, heads(dout), heads(v), t, t, hd, batch, trans_b=True, causal=SKIP_UPPER,
                   variant=variant)
    p.add(name + ".softmax_grad", "attention_mm", "softmax_grad", _rows_args(b, t, c, h, s, dp, lse, o, dout),
          {1: s.buf, 2: dp.buf, 3: lse.buf, 4: o.buf, 5: dout.buf}, _rows(b * h * t))
    matmul_batched(p, name + ".dv", heads(dv), S, heads(dout), t, hd, t, batch, trans_a=True, causal=K_FROM_ROW,
                   variant=variant)
    matmul_batched(p, name + ".dq", heads(dq), DP, heads(k), t, hd, t, batch, causal=K_UPTO_ROW, variant=variant)
    matmul_batched(p, name + ".dk", heads(dk), DP, heads(q), t, hd, t, batch, trans_a=True, causal=K_FROM_ROW,
                   variant=variant)
