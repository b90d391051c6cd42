"""The model's kernels as dispatch builders: each function appends one or more dispatches of a
kernel in kernels/*.wgsl to a Program. Operands are `Ref`s: a buffer plus an element offset
(the flat parameter and gradient buffers are bound whole; offsets travel in the uniform).

Legend: B = batch, T = context, C = channels, H = heads, hd = C / H, V = vocabulary, BT = B*T rows.
"""

from __future__ import annotations

from typing import NamedTuple

from tinygpt_bench.backends.wgpu_runtime import Program


class Ref(NamedTuple):
    buf: object  # wgpu GPUBuffer
    off: int = 0  # element offset (f32 or u32 elements)

    def at(self, extra: int) -> "Ref":
        return Ref(self.buf, self.off + extra)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# matmul.wgsl ---------------------------------------------------------------------------------
HAS_BIAS, HAS_RES, ACCUM = 1, 2, 4


def matmul(p: Program, name: str, c: Ref, a: Ref, b: Ref, m: int, n: int, k: int,
           trans_a: bool = False, trans_b: bool = False, bias: Ref | None = None,
           res: Ref | None = None, accum: bool = False) -> None:
    """c (m,n) [+]= op(a) (m,k) @ op(b) (k,n) [+ bias (n)] [+ res (m,n)]; see matmul.wgsl."""
    flags = (HAS_BIAS if bias else 0) | (HAS_RES if res else 0) | (ACCUM if accum else 0)
    bias = bias or c
    res = res or c
    args = [m, n, k, a.off, b.off, c.off, bias.off, res.off, flags]
    bufs = {1: a.buf, 2: b.buf, 3: c.buf, 4: bias.buf, 5: res.buf}
    p.add(name, "matmul", "matmul", args, bufs, (cdiv(n, 64), cdiv(m, 64)),
          constants={"TRANS_A": trans_a, "TRANS_B": trans_b})


def bias_backward(p: Program, name: str, db: Ref, dy: Ref, m: int, n: int, accum: bool = False) -> None:
    """db (n) [+]= column sums of dy (m,n)."""
    args = [m, n, 0, dy.off, 0, db.off, 0, 0, ACCUM if accum else 0]
    p.add(name, "matmul", "bias_backward", args, {1: dy.buf, 3: db.buf}, (cdiv(n, 64),))
