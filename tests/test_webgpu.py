"""The WebGPU engine against numpy: each kernel on fresh random inputs, then whole steps.

Every test that takes the `gpu` fixture runs on both WebGPU implementations, wgpu-native and Dawn
(conftest.py), and so checks every kernel variant against Dawn's validation too. Skips (with the
fix) where an implementation finds no adapter, except where CI requires it. Runs on lavapipe
(CPU) in CI. One-step and 15-step parity of the plain engine, bad input, plan() against load()
and diagnose are the contract suite's, for every engine: tests/test_contract.py.
"""

from __future__ import annotations


import numpy as np
import pytest

wgpu = pytest.importorskip("wgpu", reason="wgpu not installed; fix: pip install wgpu==0.32.0")

from tinygpt_bench.engines.webgpu import ops  # noqa: E402
from tinygpt_bench.engines.webgpu.runtime import Gpu, Program, WebGPUError  # noqa: E402
from tinygpt_bench.errors import UserError  # noqa: E402
from conftest import WEBGPU_BACKENDS  # noqa: E402


def backend_on(gpu):
    """An unloaded backend of the engine on `gpu`'s implementation, sharing its device."""
    from tinygpt_bench import engines

    be = engines.create(WEBGPU_BACKENDS[gpu.implementation])
    be.gpu = gpu
    return be


def rel_err(got, want) -> float:
    """max |got - want| / max |want|: error relative to the tensor's scale."""
    want = np.asarray(want, dtype=np.float64)
    return float(np.abs(np.asarray(got, np.float64) - want).max() / max(np.abs(want).max(), 1e-30))


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


@pytest.mark.parametrize("variant", ["direct", "direct4", "shared", "shared_pf", "big_pf", "big_db"])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False)])
@pytest.mark.parametrize("m,n,k", [(70, 45, 33), (128, 64, 16), (5, 130, 67), (200, 136, 9)])
def test_matmul(gpu, variant, trans_a, trans_b, m, n, k):
    rng = np.random.default_rng(m * 1000 + n + k)
    a = rand(rng, *((k, m) if trans_a else (m, k)))
    b = rand(rng, *((n, k) if trans_b else (k, n)))
    bias, res, c0 = rand(rng, n), rand(rng, m, n), rand(rng, m, n)
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    # operands at odd element offsets inside larger buffers, as in the flat parameter buffer
    pa = np.concatenate([rand(rng, 3), a.ravel()])
    pb = np.concatenate([rand(rng, 5), b.ravel(), bias])
    A, Bb = ops.Ref(gpu.upload(pa, "a"), 3), ops.Ref(gpu.upload(pb, "b"), 5)
    C = ops.Ref(gpu.upload(np.concatenate([c0.ravel(), c0.ravel()]), "c"))
    R = ops.Ref(gpu.upload(np.concatenate([rand(rng, 7), res.ravel()]), "res"), 7)
    p = Program(gpu, "test")
    ops.matmul(p, "plain", C, A, Bb, m, n, k, trans_a, trans_b, variant=variant)
    ops.matmul(p, "bias+res+acc", C.at(m * n), A, Bb, m, n, k, trans_a, trans_b,
               bias=Bb.at(k * n), res=R, accum=True, variant=variant)
    p.finalize().run()
    out = gpu.read(C.buf, count=2 * m * n).reshape(2, m, n)
    assert rel_err(out[0], want) < 1e-5
    assert rel_err(out[1], want + bias + res + c0) < 1e-5


def test_warm_up_runs_the_program_back_to_back_for_the_time_asked(gpu):
    """Program.warm_up (before micro-benchmark timings): the program runs whole, several times,
    for at least the seconds asked, and leaves the same result as one run."""
    import time

    rng = np.random.default_rng(11)
    a, b = rand(rng, 40, 24), rand(rng, 24, 32)
    A, B, C = ops.Ref(gpu.upload(a, "a")), ops.Ref(gpu.upload(b, "b")), ops.Ref(gpu.buffer(4 * 40 * 32, "c"))
    p = Program(gpu, "warm")
    ops.matmul(p, "plain", C, A, B, 40, 32, 24)
    p.finalize()
    t = time.perf_counter()
    runs = p.warm_up(0.05)
    assert time.perf_counter() - t >= 0.05 and runs >= 4 and runs % 4 == 0
    assert rel_err(gpu.read(C.buf, count=40 * 32).reshape(40, 32), a.astype(np.float64) @ b) < 1e-5


def test_matmul_bias_grad(gpu):
    """The weight-gradient product also writing the bias gradient (column sums of dy)."""
    rng = np.random.default_rng(9)
    m, n, k = 45, 70, 131  # dW (m,n) = x^T (m,k) @ dy (k,n); x stored (k,m)
    x, dy = rand(rng, k, m), rand(rng, k, n)
    X, DY = ops.Ref(gpu.upload(x, "x")), ops.Ref(gpu.upload(dy, "dy"))
    G = ops.Ref(gpu.upload(rand(rng, 3 + m * n + n), "g"))
    p = Program(gpu, "test")
    G2 = ops.Ref(gpu.upload(rand(rng, 3 + m * n + n), "g"))
    ops.matmul(p, "dw+db", G.at(3), X, DY, m, n, k, trans_a=True, variant="direct", bias_grad=G.at(3 + m * n))
    ops.matmul(p, "dw+db4", G2.at(3), X, DY, m, n, k, trans_a=True, variant="direct4", bias_grad=G2.at(3 + m * n))
    G3 = ops.Ref(gpu.upload(rand(rng, 3 + m * n + n), "g"))
    ops.matmul(p, "dw+db-shared", G3.at(3), X, DY, m, n, k, trans_a=True, variant="shared", bias_grad=G3.at(3 + m * n))
    G5 = ops.Ref(gpu.upload(rand(rng, 3 + m * n + n), "g"))
    ops.matmul(p, "dw+db-pf", G5.at(3), X, DY, m, n, k, trans_a=True, variant="shared_pf", bias_grad=G5.at(3 + m * n))
    G6 = ops.Ref(gpu.upload(rand(rng, 3 + m * n + n), "g"))
    ops.matmul(p, "dw+db-big-pf", G6.at(3), X, DY, m, n, k, trans_a=True, variant="big_pf", bias_grad=G6.at(3 + m * n))
    G7 = ops.Ref(gpu.upload(rand(rng, 3 + m * n + n), "g"))
    ops.matmul(p, "dw+db-big-db", G7.at(3), X, DY, m, n, k, trans_a=True, variant="big_db", bias_grad=G7.at(3 + m * n))
    p.finalize().run()
    for buf in (G.buf, G2.buf, G3.buf, G5.buf, G6.buf, G7.buf):
        out = gpu.read(buf, count=3 + m * n + n)
        assert rel_err(out[3:3 + m * n].reshape(m, n), x.T.astype(np.float64) @ dy) < 1e-5
        assert rel_err(out[3 + m * n:], dy.astype(np.float64).sum(0)) < 1e-5


@pytest.mark.parametrize("variant", ["direct", "direct4", "shared", "shared_pf", "big_pf", "big_db"])
@pytest.mark.parametrize("accum", [False, True])
def test_matmul_split_k(gpu, variant, accum):
    rng = np.random.default_rng(10)
    m, n, k, s = 37, 52, 301, 3  # weight gradient shape: dW (m,n) = x^T @ dy, K split in 3
    x, dy, c0 = rand(rng, k, m), rand(rng, k, n), rand(rng, m * n + n)
    X, DY = ops.Ref(gpu.upload(x, "x")), ops.Ref(gpu.upload(dy, "dy"))
    G = ops.Ref(gpu.upload(np.concatenate([rand(rng, 3), c0]), "g"), 3)
    S = ops.Ref(gpu.buffer(4 * (5 + ops.splitk_scratch(m, n, s)), "scratch"), 5)
    p = Program(gpu, "test")
    ops.matmul(p, "dw", G, X, DY, m, n, k, trans_a=True, variant=variant, bias_grad=G.at(m * n), accum=accum,
               split_k=s, scratch=S)
    # forward-style product with bias and residual: y = x^T @ dy + bias + res, K split
    bias, res = rand(rng, n), rand(rng, m, n)
    R = ops.Ref(gpu.upload(np.concatenate([bias, res.ravel()]), "bias_res"))
    Y = ops.Ref(gpu.buffer(4 * m * n, "y"))
    ops.matmul(p, "y", Y, X, DY, m, n, k, trans_a=True, variant=variant, bias=R, res=R.at(n), split_k=s, scratch=S)
    p.finalize().run()
    out = gpu.read(G.buf, count=3 + m * n + n)[3:]
    prod = x.T.astype(np.float64) @ dy
    want = prod + (c0[:m * n].reshape(m, n) if accum else 0)
    assert rel_err(out[:m * n].reshape(m, n), want) < 1e-5
    assert rel_err(out[m * n:], dy.astype(np.float64).sum(0)) < 1e-5
    assert rel_err(gpu.read(Y.buf, count=m * n).reshape(m, n), prod + bias + res) < 1e-5


def test_plan_matmul():
    class Wide:  # a GPU wanting 264 workgroups
        min_workgroups = 264

    assert ops.plan_matmul(Wide, 4096, 4096, 4096) == ("direct", 1)
    assert ops.plan_matmul(Wide, 512, 1280, 5120) == ("direct", 2)  # behemoth fc_out: long K
    assert ops.plan_matmul(Wide, 1024, 256, 256) == ("direct4", 2)  # xl q: short K, small
    assert ops.plan_matmul(Wide, 256, 256, 1024)[1] > 1  # xl weight gradient: split

    class WideShared(Wide):
        matmul_shared = True

    assert ops.plan_matmul(WideShared, 512, 1280, 5120) == ("shared", 1)
    assert ops.plan_matmul(WideShared, 256, 256, 1024, bias_grad=True) == ("shared", 4)

    class WideBig(WideShared):
        matmul_big = True

    assert ops.plan_matmul(WideBig, 4096, 4096, 4096) == ("big_pf", 1)
    assert ops.plan_matmul(WideBig, 512, 5120, 1280) == ("big_pf", 1)  # behemoth fc_in: 160 tiles of 128
    assert ops.plan_matmul(WideBig, 1024, 1024, 256) == ("shared", 1)  # xl fc_in: 64 such tiles, too few

    class WideBigDouble(WideBig):
        big_double_buffer = True

    assert ops.plan_matmul(WideBigDouble, 4096, 4096, 4096) == ("big_db", 1)
    assert ops.plan_matmul(WideBigDouble, 1024, 1024, 256) == ("shared", 1)


def test_attention_split_rule():
    class P:  # a Program on a GPU that leaves the choice to head_dim
        class gpu:
            attention_split = None

    assert ops.attention_split(P, 64, backward=True) == 2 and ops.attention_split(P, 64, backward=False) == 4
    assert ops.attention_split(P, 32, backward=True) == 4
    P.gpu.attention_split = 1
    assert ops.attention_split(P, 64, backward=True) == 1


def test_bias_backward(gpu):
    rng = np.random.default_rng(1)
    m, n = 77, 130
    dy, db0 = rand(rng, m, n), rand(rng, n)
    DY, DB = ops.Ref(gpu.upload(dy, "dy")), ops.Ref(gpu.upload(np.concatenate([db0, db0]), "db"))
    p = Program(gpu, "test")
    ops.bias_backward(p, "db", DB, DY, m, n)
    ops.bias_backward(p, "db+", DB.at(n), DY, m, n, accum=True)
    p.finalize().run()
    out = gpu.read(DB.buf, count=2 * n).reshape(2, n)
    want = dy.astype(np.float64).sum(0)
    assert rel_err(out[0], want) < 1e-5
    assert rel_err(out[1], want + db0) < 1e-5


def test_shader_error_names_kernel(gpu, tmp_path, monkeypatch):
    from tinygpt_bench.engines.webgpu import runtime as wgpu_runtime

    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "broken.wgsl").write_text("@compute @workgroup_size(1) fn main() { undefined_fn(); }\n")
    monkeypatch.setattr(wgpu_runtime, "resource_dir", lambda name: tmp_path / name)
    with pytest.raises(WebGPUError, match=r"(?s)broken\.wgsl.*undefined_fn"):
        gpu.pipeline("broken", "main")


def test_dispatch_error_names_kernel(gpu):
    buf = ops.Ref(gpu.buffer(64, "x"))
    p = Program(gpu, "test")
    with pytest.raises(WebGPUError, match="too-wide"):
        ops.matmul(p, "too-wide", buf, buf, buf, 1, 64 * 70000, 1)


# numpy references of single layers (float64), written here for the kernel checks -------------
def ln_ref(x, w, b, eps=1e-5):
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)
    return (x - mean) * rstd * w + b, mean[..., 0], rstd[..., 0]


def ln_back_ref(dy, x, w, eps=1e-5):
    _, mean, rstd = ln_ref(x, np.ones_like(w), np.zeros_like(w), eps)
    xhat = (x - mean[:, None]) * rstd[:, None]
    g = dy * w
    dx = rstd[:, None] * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    return dx, (dy * xhat).sum(0), dy.sum(0)


@pytest.mark.parametrize("variant,pch", [("workgroup", 32), ("subgroup", 8), ("rows", 4), ("workgroup", 256)])
def test_layernorm(gpu, variant, pch, monkeypatch):
    """Both row reductions of the workgroup kernels (tree; subgroups where the adapter has them)
    and the per-row kernels against numpy."""
    if variant == "subgroup" and not gpu.subgroups:
        pytest.skip("adapter without the subgroup feature")
    monkeypatch.setattr(gpu, "layernorm_subgroup", variant == "subgroup")
    monkeypatch.setattr(gpu, "ln_param_channels", pch)   # channels a workgroup of the parameter gradient
    variant = "rows" if variant == "rows" else "workgroup"
    rng = np.random.default_rng(2)
    rows, c = 37, 96
    x, dy, dx0 = rand(rng, rows, c, scale=2.0) + 0.5, rand(rng, rows, c), rand(rng, rows, c)
    w, b = rand(rng, c) + 1, rand(rng, c)
    P = gpu.upload(np.concatenate([rand(rng, 7), w, b]), "p")
    X, DY = ops.Ref(gpu.upload(x, "x")), ops.Ref(gpu.upload(dy, "dy"))
    Y, S = ops.Ref(gpu.buffer(4 * rows * c, "y")), ops.Ref(gpu.buffer(8 * rows, "s"))
    DX = ops.Ref(gpu.upload(np.concatenate([dx0.ravel(), dx0.ravel()]), "dx"))
    G = ops.Ref(gpu.buffer(4 * (5 + 4 * c), "g"))
    p = Program(gpu, "test")
    ops.layernorm_forward(p, "ln", Y, S, X, ops.Ref(P, 7), ops.Ref(P, 7 + c), rows, c, variant=variant)
    ops.layernorm_backward(p, "ln", DX, G.at(5), G.at(5 + c), DY, X, S, ops.Ref(P, 7), rows, c, variant=variant)
    ops.layernorm_backward(p, "ln+", DX.at(rows * c), G.at(5 + 2 * c), G.at(5 + 3 * c), DY, X, S, ops.Ref(P, 7),
                           rows, c, accum=True, variant=variant)
    want = "layernorm_sg.wgsl" if gpu.layernorm_subgroup and variant == "workgroup" else "layernorm.wgsl"
    assert all(want in d.name for d in p.dispatches if "param" not in d.name)
    p.finalize().run()
    y, mean, rstd = ln_ref(x, w, b)
    assert rel_err(gpu.read(Y.buf, count=rows * c).reshape(rows, c), y) < 1e-5
    st = gpu.read(S.buf, count=2 * rows)
    assert rel_err(st[:rows], mean) < 1e-5 and rel_err(st[rows:], rstd) < 1e-5
    dx, dw, db = ln_back_ref(dy.astype(np.float64), x.astype(np.float64), w)
    got = gpu.read(DX.buf, count=2 * rows * c).reshape(2, rows, c)
    assert rel_err(got[0], dx) < 1e-5
    assert rel_err(got[1], dx + dx0) < 1e-5
    g = gpu.read(G.buf, count=5 + 4 * c)[5:].reshape(4, c)
    assert rel_err(g[0], dw) < 1e-5 and rel_err(g[1], db) < 1e-5
    assert rel_err(g[2], dw) < 1e-5 and rel_err(g[3], db) < 1e-5


def test_erf_and_gelu(gpu):
    from math import erf

    rng = np.random.default_rng(3)
    xs = np.concatenate([np.linspace(-6, 6, 24001), rand(rng, 5000, scale=3.0)]).astype(np.float32)
    n = len(xs)
    X, Y, DY = ops.Ref(gpu.upload(xs, "x")), ops.Ref(gpu.buffer(8 * n, "y")), rand(rng, n)
    DYb = ops.Ref(gpu.upload(DY, "dy"))
    p = Program(gpu, "test")
    ops.erf_test(p, "erf", Y, X, n)
    ops.gelu_forward(p, "gelu", Y.at(n), X, n)
    ops.gelu_backward(p, "gelu", DYb, X, n)
    p.finalize().run()
    out = gpu.read(Y.buf, count=2 * n).reshape(2, n)
    x64 = xs.astype(np.float64)
    erf64 = np.array([erf(v) for v in x64])
    assert np.abs(out[0] - erf64).max() < 2e-7  # about 1.2e-7 seen on lavapipe
    cdf = 0.5 * (1 + np.array([erf(v / np.sqrt(2)) for v in x64]))
    assert np.abs(out[1] - x64 * cdf).max() < 1e-6 * np.abs(x64).max()
    dgelu = cdf + x64 * np.exp(-0.5 * x64**2) / np.sqrt(2 * np.pi)
    assert rel_err(gpu.read(DYb.buf, count=n), DY * dgelu) < 1e-6


def test_embedding(gpu):
    rng = np.random.default_rng(4)
    b, t, c, v = 3, 11, 20, 256
    ids = rng.integers(0, 40, size=(b, t))  # repeated tokens exercise the scatter
    tok, pos = rand(rng, v, c), rand(rng, t, c)
    params = np.concatenate([rand(rng, 9), tok.ravel(), pos.ravel()])
    tl = ops.TokenLayout.of(b * t, v)
    start, rows = ops.token_csr(ids, v)
    toks = np.zeros(tl.total, np.uint32)
    toks[tl.ids:tl.ids + b * t], toks[tl.csr_start:tl.csr_start + v + 1] = ids.ravel(), start
    toks[tl.csr_rows:tl.csr_rows + b * t] = rows
    T, P = gpu.upload(toks, "tokens"), gpu.upload(params, "p")
    dx, g0 = rand(rng, b * t, c), rand(rng, len(params))
    X, DX, G = ops.Ref(gpu.buffer(4 * b * t * c, "x")), ops.Ref(gpu.upload(dx, "dx")), gpu.upload(g0, "g")
    p = Program(gpu, "test")
    ops.embedding_forward(p, "emb", X, T, tl, P, 9, 9 + v * c, b * t, t, c, v)
    ops.embedding_backward(p, "emb", G, DX, T, tl, 9, 9 + v * c, b * t, t, c, v)
    p.finalize().run()
    want = tok[ids] + pos[None]
    assert rel_err(gpu.read(X.buf, count=b * t * c).reshape(b, t, c), want) < 1e-6
    g = gpu.read(G, count=len(params))
    dtok = g0[9:9 + v * c].reshape(v, c).astype(np.float64)
    np.add.at(dtok, ids.ravel(), dx.astype(np.float64))
    assert rel_err(g[9:9 + v * c].reshape(v, c), dtok) < 1e-6
    assert rel_err(g[9 + v * c:].reshape(t, c), dx.reshape(b, t, c).astype(np.float64).sum(0)) < 1e-6


def test_crossentropy(gpu):
    rng = np.random.default_rng(5)
    rows, v = 45, 256
    logits, tgt = rand(rng, rows, v, scale=3.0), rng.integers(0, v, rows)
    L = ops.Ref(gpu.upload(logits, "logits"))
    T = gpu.upload(np.concatenate([np.zeros(3, np.uint32), tgt.astype(np.uint32)]), "tgt")
    LS, ST = ops.Ref(gpu.buffer(4 * rows, "losses")), ops.Ref(gpu.buffer(64, "st"), 5)
    p = Program(gpu, "test")
    ops.crossentropy(p, "ce", L, T, 3, LS, ST, rows, v)
    p.finalize().run()
    x = logits.astype(np.float64)
    lse = np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1)
    losses = lse - x[np.arange(rows), tgt]
    prob = np.exp(x - lse[:, None])
    prob[np.arange(rows), tgt] -= 1
    assert rel_err(gpu.read(LS.buf, count=rows), losses) < 1e-6
    assert abs(gpu.read(ST.buf, count=6)[5] - losses.mean()) < 1e-6 * losses.mean()
    assert rel_err(gpu.read(L.buf, count=rows * v).reshape(rows, v), prob / rows) < 1e-5


@pytest.mark.parametrize("norm_scale", [0.001, 10.0])  # below and above the clip
def test_clip_adamw(gpu, norm_scale):
    rng = np.random.default_rng(6)
    n = 100_003
    p0, g = rand(rng, n), rand(rng, n, scale=norm_scale / np.sqrt(n))
    m0, v0 = rand(rng, n, scale=0.01), np.abs(rand(rng, n, scale=1e-4))
    decay = rng.integers(0, 2, n)
    lr, b1, b2, eps, wd, clip, t = 3e-4, 0.9, 0.95, 1e-8, 0.1, 1.0, 3
    bufs = [gpu.upload(a, name) for a, name in ((p0, "p"), (g, "g"), (m0, "m"), (v0, "v"))]
    mask = gpu.upload(ops.decay_bits(decay), "mask")
    st = np.zeros(ops.ST_PART + ops.NPARTS, np.float32)
    st[:3] = lr, 1 - b1**t, 1 - b2**t
    ST = gpu.upload(st, "st")
    p = Program(gpu, "test")
    ops.clip_adamw(p, "opt", *bufs, mask, ST, n, b1, b2, eps, wd, clip)
    p.finalize().run()
    g64 = g.astype(np.float64)
    norm = np.sqrt((g64**2).sum())
    scale = clip / (norm + 1e-6) if norm > clip else 1.0
    gc = g64 * scale
    m = b1 * m0 + (1 - b1) * gc
    v = b2 * v0 + (1 - b2) * gc**2
    pw = p0 - lr * (wd * decay * p0 + (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps))
    out_st = gpu.read(ST, count=5)
    assert abs(out_st[ops.ST_NORM] - norm) < 1e-5 * norm and abs(out_st[ops.ST_SCALE] - scale) < 1e-5
    assert rel_err(gpu.read(bufs[2], count=n), m) < 1e-5 and rel_err(gpu.read(bufs[3], count=n), v) < 1e-5
    assert rel_err(gpu.read(bufs[0], count=n) - p0, pw - p0) < 1e-4  # the update itself, not just p
    assert np.array_equal(gpu.read(bufs[1], count=n), g)  # raw gradient left untouched


def attention_ref(q, k, v, h):
    """(B,T,C) float64 causal attention; returns o and the pieces backward needs."""
    b, t, c = q.shape
    hd = c // h
    split = lambda a: a.reshape(b, t, h, hd).transpose(0, 2, 1, 3)  # noqa: E731
    qh, kh, vh = split(q), split(k), split(v)
    s = qh @ kh.transpose(0, 1, 3, 2) / np.sqrt(hd)
    s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
    pr = np.exp(s - s.max(-1, keepdims=True))
    pr /= pr.sum(-1, keepdims=True)
    o = (pr @ vh).transpose(0, 2, 1, 3).reshape(b, t, c)
    return o, (qh, kh, vh, pr, split, hd)


def attention_back_ref(dout, q, k, v, h):
    b, t, c = q.shape
    _, (qh, kh, vh, pr, split, hd) = attention_ref(q, k, v, h)
    doh = split(dout)
    dvh = pr.transpose(0, 1, 3, 2) @ doh
    dp = doh @ vh.transpose(0, 1, 3, 2)
    ds = pr * (dp - (dp * pr).sum(-1, keepdims=True)) / np.sqrt(hd)
    dqh, dkh = ds @ kh, ds.transpose(0, 1, 3, 2) @ qh
    merge = lambda a: a.transpose(0, 2, 1, 3).reshape(b, t, c)  # noqa: E731
    return merge(dqh), merge(dkh), merge(dvh)


def run_attention(gpu, q, k, v, dout, h, **kw):
    """Attention forward and backward on the adapter: (program, o (B,T,C), [dq, dk, dv]). The
    inputs share one buffer at odd element offsets (read-only bindings may); each output has a
    buffer of its own, at an odd offset (a writable binding's buffer is in no other binding).
    kw goes to both ops (split, tiled)."""
    b, t, c = q.shape
    btc = b * t * c
    A = gpu.upload(np.concatenate([np.zeros(5, np.float32), q.ravel(), k.ravel(), v.ravel(), dout.ravel()]), "qkv")
    Q, K, V, DO = (ops.Ref(A, 5 + i * btc) for i in range(4))

    def out(n, label):
        return ops.Ref(gpu.buffer(4 * (3 + n), label), 3)

    O, LSE, DD = out(btc, "o"), out(b * h * t, "lse"), out(b * h * t, "dd")
    DQ, DK, DV = (out(btc, f"d{x}") for x in "qkv")
    p = Program(gpu, "test")
    ops.attention_forward(p, "att", O, LSE, Q, K, V, b, t, c, h, **kw)
    ops.attention_backward(p, "att", DQ, DK, DV, DD, DO, Q, K, V, O, LSE, b, t, c, h, **kw)
    p.finalize().run()
    read = lambda r: gpu.read(r.buf, count=3 + btc)[3:].reshape(b, t, c)  # noqa: E731
    return p, read(O), np.stack([read(DQ), read(DK), read(DV)])


def assert_attention_matches_reference(q, k, v, dout, h, o, dqkv):
    q64, k64, v64 = (a.astype(np.float64) for a in (q, k, v))
    want_o, _ = attention_ref(q64, k64, v64, h)
    assert rel_err(o, want_o) < 1e-5
    for name, g, want in zip("qkv", dqkv, attention_back_ref(dout.astype(np.float64), q64, k64, v64, h)):
        assert rel_err(g, want) < 1e-5, name


@pytest.mark.parametrize("split", [1, 4, 8])
@pytest.mark.parametrize("b,t,c,h", [(2, 37, 48, 3), (1, 70, 128, 2), (2, 16, 32, 2)])
def test_attention(gpu, b, t, c, h, split):
    rng = np.random.default_rng(t)
    q, k, v, dout = (rand(rng, b, t, c) for _ in range(4))
    _, o, dqkv = run_attention(gpu, q, k, v, dout, h, split=split)
    assert_attention_matches_reference(q, k, v, dout, h, o, dqkv)


@pytest.mark.parametrize("variant", ops.BATCHED_VARIANTS)
@pytest.mark.parametrize("b,t,c,h", [(2, 37, 48, 3), (1, 150, 128, 2), (2, 16, 32, 2)])
def test_attention_through_products(gpu, b, t, c, h, variant):
    """attention_forward_mm / attention_backward_mm (scores materialised, batched products that
    skip the causal zeros) against the float64 reference; T = 150 spans partial and skipped tiles
    of 64 and of 128. The score buffers sit at odd offsets in buffers of their own."""
    rng = np.random.default_rng(t + c)
    q, k, v, dout = (rand(rng, b, t, c) for _ in range(4))
    btc, n = b * t * c, ops.attention_mm_scratch(b, t, h)

    def put(x, label):  # at an odd offset, as the engine's parameter slices are
        return ops.Ref(gpu.upload(np.concatenate([rand(rng, 3), x.ravel()]), label), 3)

    def out(count, label):
        return ops.Ref(gpu.upload(np.full(3 + count, np.nan, np.float32), label), 3)  # NaN: unwritten shows

    Q, K, V, DO = put(q, "q"), put(k, "k"), put(v, "v"), put(dout, "dout")
    O, LSE, S, DP = out(btc, "o"), out(b * h * t, "lse"), out(n, "s"), out(n, "dp")
    DQ, DK, DV = (out(btc, f"d{x}") for x in "qkv")
    p = Program(gpu, "test")
    ops.attention_forward_mm(p, "att", O, LSE, Q, K, V, b, t, c, h, S, variant=variant)
    ops.attention_backward_mm(p, "att", DQ, DK, DV, DO, Q, K, V, O, LSE, b, t, c, h, S, DP, variant=variant)
    p.finalize().run()
    read = lambda r: gpu.read(r.buf, count=3 + btc)[3:].reshape(b, t, c)  # noqa: E731
    assert_attention_matches_reference(q, k, v, dout, h, read(O), np.stack([read(DQ), read(DK), read(DV)]))


def test_batched_product_rejects_a_kernel_without_batches(gpu):
    x = ops.Ref(gpu.buffer(64, "x"))
    with pytest.raises(ValueError, match="takes no batch"):
        ops.matmul_batched(Program(gpu, "test"), "mm", *(ops.Operand(x, 4, 0, 0),) * 3, 4, 4, 4, (1, 1),
                           variant="direct")


# the whole training step against the float64 numpy reference ---------------------------------
def setup_run(name: str, steps: int):
    from tinygpt_bench import presets
    from tinygpt_bench.model import Layout

    preset = presets.load(name)
    layout = Layout(preset)
    rng = np.random.default_rng(7)
    batches = [rng.integers(0, 256, size=(preset.batch, preset.ctx + 1)).astype(np.int32) for _ in range(steps)]
    return preset, layout, layout.init(seed=0), batches


@pytest.fixture(scope="module")
def webgpu_backend(gpu):
    be = backend_on(gpu)  # shares the module's device
    yield be
    be.close()


SLOW = pytest.mark.slow  # about a minute on lavapipe: `pytest -m slow`


def grad_errors(layout, got, want) -> dict[str, float]:
    """Per tensor: max |got - want| / max |want|, with max |want| floored at 1e-3 of the whole
    gradient's largest entry: bk's true gradient is exactly zero (softmax ignores a constant
    added to every key's score), so its reference is rounding noise (~1e-17)."""
    floor = 1e-3 * np.abs(want).max()
    g, w = layout.views(got.astype(np.float64)), layout.views(want)
    return {n: float(np.abs(g[n] - w[n]).max() / max(np.abs(w[n]).max(), floor)) for n in w}


def assert_one_step_matches_reference(be, name: str, check=None) -> np.ndarray:
    """Load preset `name` into backend `be`, run one step and hold its loss and every gradient
    tensor to the float64 reference (the loss to 1e-6 relative, each gradient tensor to 1e-4);
    check(be) runs after load. Returns the reference gradient."""
    ref = pytest.importorskip("tinygpt_bench.engines.reference.backend", reason="numpy reference not in this checkout")
    preset, layout, w, (batch,) = setup_run(name, 1)
    want_loss, want_grad = ref.loss_and_grad(preset, w.astype(np.float64), batch)
    be.load(preset, w)
    if check:
        check(be)
    loss = be.step(batch)
    assert abs(loss - want_loss) / want_loss < 1e-6, f"loss {loss} vs reference {want_loss}"
    errs = grad_errors(layout, be.gradients(), want_grad)
    bad = {n: e for n, e in errs.items() if not e < 1e-4}
    assert not bad, f"gradients off the float64 reference: {bad}"
    return want_grad


@pytest.mark.parametrize("name", ["medium", "large"])
def test_the_default_presets_pass_validation(webgpu_backend, name):
    """With tiny and small above, every preset of the default curve: a step of every dispatch is
    accepted (Dawn validates each dispatch as the step is encoded) and its loss is finite."""
    preset, layout, w, (batch,) = setup_run(name, 1)
    webgpu_backend.load(preset, w)
    assert np.isfinite(webgpu_backend.step(batch))


def test_backend_memory_and_profile(webgpu_backend):
    preset, layout, w, (batch,) = setup_run("tiny", 1)
    webgpu_backend.load(preset, w)
    assert webgpu_backend.memory_bytes() >= 16 * layout.total  # weights, grads, two moments
    webgpu_backend.step(batch)
    prof = webgpu_backend.profile_dispatches()  # the last batch again
    assert len(prof) == len(webgpu_backend.program.dispatches) and all(t >= 0 for _, t in prof)
    assert any("attention_backward_dkv" in name for name, _ in prof)
    assert webgpu_backend.t == 2  # a profile is a real step
    by_kernel = webgpu_backend.profile(batch)  # {kernel: ms}, layers summed
    assert webgpu_backend.t == 3 and len(webgpu_backend.last_profile) == len(prof)
    assert {"adamw"} <= set(by_kernel) and any(k.startswith("attention_backward_dkv") for k in by_kernel)
    for part in (" fwd", " dx", " dw"):  # the matmul variant is the adapter's (direct on lavapipe)
        assert any(k.startswith("matmul_") and k.endswith(part) for k in by_kernel), part
    assert all(isinstance(v, float) and v >= 0 for v in by_kernel.values())
    assert len(by_kernel) < len(prof) / 2


def test_adapter_choice(gpu):
    from tinygpt_bench.engines.webgpu.runtime import adapters, pick_adapter

    name, impl = gpu.adapter.info["device"], gpu.implementation
    assert pick_adapter(name.split()[0].upper(), impl).info["device"] == name  # by name, any case
    assert pick_adapter(0, impl).info["device"] == adapters(impl)[0].info["device"]  # by index
    with pytest.raises(UserError, match="adapters are 0: "):
        pick_adapter("no-such-adapter", impl)
    with pytest.raises(UserError, match="out of range"):
        pick_adapter(99, impl)


def test_binding_limit_message(webgpu_backend):
    rows = [{"name": "webgpu buffer params", "bytes": 4_000_000, "limit": 1 << 20, "limit_name": "adapter X (Y)"},
            {"name": "webgpu buffer grads", "bytes": 2_000_000, "limit": 1 << 20, "limit_name": "adapter X (Y)"},
            {"name": "webgpu buffer top", "bytes": 10, "limit": 1 << 20, "limit_name": "adapter X (Y)"}]
    with pytest.raises(UserError, match=r"webgpu buffer params needs 4,000,000 bytes, 2,951,424 above the "
                                        r"adapter X \(Y\) 1,048,576; also webgpu buffer grads"):
        webgpu_backend.check_limits(rows)
    webgpu_backend.check_limits(rows[2:])  # fits: no error


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False)])
def test_matmul_kernels_without_split_are_bit_identical(gpu, trans_a, trans_b):
    """Every matmul kernel without a split of K accumulates each output's K products in order,
    one fused multiply-add at a time: the prefetching kernels (which reorder loads only) and the
    tile sizes give the same products bit for bit, so the plan may choose among them freely."""
    rng = np.random.default_rng(21)
    m, n, k = 70, 140, 77
    a = rand(rng, *((k, m) if trans_a else (m, k)))
    b = rand(rng, *((n, k) if trans_b else (k, n)))
    A, B = ops.Ref(gpu.upload(a, "a")), ops.Ref(gpu.upload(b, "b"))
    variants = ["direct", "shared", "shared_pf", "big_pf", "big_db"]
    C = ops.Ref(gpu.buffer(4 * len(variants) * m * n, "c"))
    p = Program(gpu, "test")
    for i, v in enumerate(variants):
        ops.matmul(p, v, C.at(i * m * n), A, B, m, n, k, trans_a, trans_b, variant=v, split_k=1)
    p.finalize().run()
    out = gpu.read(C.buf, count=len(variants) * m * n).reshape(len(variants), m, n)
    assert rel_err(out[0], (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)) < 1e-5
    for i, v in enumerate(variants[1:], start=1):
        assert np.array_equal(out[0], out[i]), v


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False), (True, True)])
def test_vec4_loads_give_the_scalar_loads_bits(gpu, trans_a, trans_b, monkeypatch):
    """matmul_vec4 (the 128 x 128 kernels' 16-byte global loads where an operand is aligned):
    the same values loaded, so the same products bit for bit as the scalar loads, on edge tiles
    (m, n not multiples of 128; K not of 8) and with K split; an operand at an unaligned offset
    keeps its scalar loads (the constants say which)."""
    rng = np.random.default_rng(33)
    m, n, k = 136, 200, 84  # every stored row length a multiple of 4
    a = rand(rng, *((k, m) if trans_a else (m, k)))
    b = rand(rng, *((n, k) if trans_b else (k, n)))
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    A = ops.Ref(gpu.upload(np.concatenate([rand(rng, 4), a.ravel()]), "a"), 4)   # aligned
    Au = ops.Ref(gpu.upload(np.concatenate([rand(rng, 1), a.ravel()]), "au"), 1)  # not
    B = ops.Ref(gpu.upload(np.concatenate([rand(rng, 8), b.ravel()]), "b"), 8)
    S = ops.Ref(gpu.buffer(4 * ops.splitk_scratch(m, n, 2), "scratch"))
    runs = [("big_pf", False, A, 1), ("big_pf", True, A, 1), ("big_db", True, A, 1), ("big_db", True, Au, 1),
            ("big_pf", False, A, 2), ("big_db", True, A, 2)]
    C = ops.Ref(gpu.buffer(4 * len(runs) * m * n, "c"))
    p = Program(gpu, "test")
    for i, (variant, vec4, a_ref, split) in enumerate(runs):
        monkeypatch.setattr(gpu, "matmul_vec4", vec4)
        ops.matmul(p, f"{variant}-{vec4}-{split}", C.at(i * m * n), a_ref, B, m, n, k, trans_a, trans_b,
                   variant=variant, split_k=split, scratch=S if split > 1 else None)
    consts = [d.constants for d in p.dispatches if "reduce" not in d.name]
    assert [(c.get("A_VEC4"), c.get("B_VEC4")) for c in consts] == [
        (None, None), (True, True), (True, True), (False, True), (None, None), (True, True)]
    p.finalize().run()
    out = gpu.read(C.buf, count=len(runs) * m * n).reshape(len(runs), m, n)
    assert rel_err(out[0], want) < 1e-5
    for i in (1, 2, 3):
        assert np.array_equal(out[0], out[i]), runs[i]
    assert rel_err(out[4], want) < 1e-5 and np.array_equal(out[4], out[5])


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, True)])
@pytest.mark.parametrize("k,split", [(83, 1), (20, 4)])
def test_vec4_loads_keep_scalar_loads_for_an_odd_row_and_empty_k_slices(gpu, trans_a, trans_b, k, split,
                                                                        monkeypatch):
    """An operand at an aligned offset whose stored row length is not a multiple of 4 (K = 83
    for a row-major a or a transposed b) keeps its scalar loads; K = 20 split 4 ways leaves
    slices with no K at all (slices are whole multiples of 16), which the double-buffered
    kernel stages nothing for. Bit-identical to big_pf's scalar loads, near float64."""
    rng = np.random.default_rng(k)
    m, n = 132, 196
    a = rand(rng, *((k, m) if trans_a else (m, k)))
    b = rand(rng, *((n, k) if trans_b else (k, n)))
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    A, B = ops.Ref(gpu.upload(a, "a")), ops.Ref(gpu.upload(b, "b"))
    S = ops.Ref(gpu.buffer(4 * max(1, ops.splitk_scratch(m, n, split)), "scratch"))
    C = ops.Ref(gpu.buffer(4 * 2 * m * n, "c"))
    p = Program(gpu, "test")
    for i, (variant, vec4) in enumerate([("big_pf", False), ("big_db", True)]):
        monkeypatch.setattr(gpu, "matmul_vec4", vec4)
        ops.matmul(p, variant, C.at(i * m * n), A, B, m, n, k, trans_a, trans_b, variant=variant, split_k=split,
                   scratch=S if split > 1 else None)
    db = [d.constants for d in p.dispatches if d.name.startswith("big_db") and "reduce" not in d.name][0]
    a_row, b_row = (m if trans_a else k), (k if trans_b else n)
    assert (db["A_VEC4"], db["B_VEC4"]) == (a_row % 4 == 0, b_row % 4 == 0)
    p.finalize().run()
    out = gpu.read(C.buf, count=2 * m * n).reshape(2, m, n)
    assert rel_err(out[0], want) < 1e-5 and np.array_equal(out[0], out[1])


def test_wgsl_for_puts_enable_directives_first_and_drops_subgroups_for_naga():
    """The kernels say `enable subgroups;` as the specification wants (Dawn requires it); Naga
    refuses the directive, so wgpu-native gets the text without it."""
    from tinygpt_bench.engines.webgpu.compat import wgsl_for

    code = "fn a() {}\nenable subgroups;   // why\nenable f16;\nfn b() {}\n"
    assert wgsl_for("dawn", code) == "enable subgroups;\nenable f16;\nfn a() {}\n\n\nfn b() {}\n"
    assert wgsl_for("wgpu-native", code) == "enable f16;\nfn a() {}\n\n\nfn b() {}\n"


def test_dawn_toggles_from_the_environment():
    """Dawn's device toggles for A/B runs: +NAME / -NAME on top of the engine's default (timestamp
    quantization off); an unknown or malformed one is one clear error; wgpu-native takes none."""
    pytest.importorskip("wgpudawn", reason="wgpudawn not installed; fix: pip install wgpudawn==0.32.0.4")
    from tinygpt_bench.engines.webgpu.runtime import DAWN_DEFAULT_TOGGLES, dawn_toggles

    assert dawn_toggles("dawn", "") == DAWN_DEFAULT_TOGGLES == ((), ("timestamp_quantization",))
    assert dawn_toggles("dawn", "+disable_robustness") == (("disable_robustness",), ("timestamp_quantization",))
    assert dawn_toggles("dawn", "+timestamp_quantization, -lazy_clear_resource_on_first_use") == (
        ("timestamp_quantization",), ("lazy_clear_resource_on_first_use",))
    assert dawn_toggles("wgpu-native", "+disable_robustness") == ((), ())
    for bad in ("disable_robustness", "+no_such_toggle", "+use_dxc"):  # unsigned; unknown; not a device toggle
        with pytest.raises(UserError, match="TINYGPT_BENCH_DAWN_TOGGLES"):
            dawn_toggles("dawn", bad)


def test_tune_override_from_the_environment(monkeypatch):
    """TINYGPT_BENCH_TUNE sets kernel tuning for A/B runs; bad text is one clear error."""
    from tinygpt_bench.engines.webgpu.runtime import tune_override
    from tinygpt_bench.errors import UserError

    defaults = {"shared_fill": 1056, "matmul_big": False, "shared_prefetch": False}
    assert tune_override(defaults, "shared_fill=0, shared_prefetch=1") == {"shared_fill": 0, "shared_prefetch": True}
    assert tune_override(defaults, "") == {}
    for bad in ("shared_fill", "nosuch=1", "shared_fill=x", "shared_prefetch=2", "norm_parts=0",
                "norm_parts=4096", "attention_tiled=8", "attention_tiled=2"):
        with pytest.raises(UserError, match="TINYGPT_BENCH_TUNE"):
            tune_override({**defaults, "norm_parts": 1024, "attention_tiled": 0}, bad)


def test_prefetch_tuning_runs_a_step_and_says_so(gpu, monkeypatch):
    """A whole step with the prefetching matmul asked for through the environment: the plan and
    the load agree, the loss matches the default kernels' (on lavapipe those are the direct
    ones: equal to rounding; shared vs shared_pf bit for bit is the kernel test above), and
    describe() says it."""
    from tinygpt_bench import engines, presets
    from tinygpt_bench.model import Layout

    p = presets.load("tiny")
    w = Layout(p).init(0)
    batch = np.random.default_rng(3).integers(0, 256, (p.batch, p.ctx + 1)).astype(np.int32)
    losses = []
    for tune in ("", "shared_prefetch=1,matmul_shared=1,min_workgroups=4"):  # tiny is too small for GPU defaults
        monkeypatch.setenv("TINYGPT_BENCH_TUNE", tune)
        be = engines.create(WEBGPU_BACKENDS[gpu.implementation])  # a device of its own: the tuning is read there
        be.load(p, w)
        losses.append(be.step(batch))
        if tune:
            assert "shared_prefetch=True" in be.describe()["runtime_settings"]
            assert any("matmul_shared_pf" in d.name for d in be.program.dispatches)
        be.close()
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_attention_through_products_trains_a_step_against_the_reference(gpu, monkeypatch):
    """A whole step of small with attention through products (the GPU default at T >= 256, asked
    for here through the environment at every T): the plan allocates the score buffers, the step
    records the batched products and softmax kernels, and loss and gradients hold to float64."""
    monkeypatch.setenv("TINYGPT_BENCH_TUNE", "attention_mm=1")
    from tinygpt_bench import engines

    be = engines.create(WEBGPU_BACKENDS[gpu.implementation])  # a device of its own: the tuning is read there

    def check(be):
        names = [d.name for d in be.program.dispatches]
        assert any("softmax_grad" in n for n in names) and not any("attention_backward_dq" in n for n in names)
        assert "scratch.att_s" in be.bufs and "scratch.att_dp" in be.bufs

    try:
        assert_one_step_matches_reference(be, "small", check)
        assert "attention_mm=1" in be.describe()["runtime_settings"]
    finally:
        be.close()


TILED_CASES = [(2, 37, 48, 3), (2, 70, 128, 2), (2, 45, 128, 4), (2, 33, 64, 4), (1, 100, 96, 2),
               (2, 17, 24, 2), (1, 129, 256, 4)]


@pytest.mark.parametrize("b,t,c,h", TILED_CASES)
def test_attention_tiled(gpu, b, t, c, h):
    """attention.wgsl's *_tiled kernels (score tiles as small matrix products in workgroup memory;
    the forward and dk/dv, dq by its row kernel) against the float64 reference: head_dim 12, 16,
    32, 48, 64; T not a multiple of any tile."""
    rng = np.random.default_rng(t + c)
    q, k, v, dout = (rand(rng, b, t, c) for _ in range(4))
    p, o, dqkv = run_attention(gpu, q, k, v, dout, h, tiled=True)
    entries = [d.name.rsplit(":", 1)[1][:-1] for d in p.dispatches]
    assert entries == ["attention_forward_tiled", "attention_backward_dq", "attention_backward_dkv_tiled"]
    assert_attention_matches_reference(q, k, v, dout, h, o, dqkv)


@pytest.mark.parametrize("mask", [1, 4, 5])
def test_attention_tiled_parts_mix_with_row_kernels(gpu, mask):
    """A mask tiles some parts and runs the rest as row kernels (the H100 default at head_dim 64
    is 5: the forward and dk/dv tiled, dq by rows); dd passes between the two kinds."""
    rng = np.random.default_rng(mask)
    q, k, v, dout = (rand(rng, 2, 45, 128) for _ in range(4))
    p, o, dqkv = run_attention(gpu, q, k, v, dout, 2, tiled=mask)
    tiled = [d.name.endswith("_tiled]") for d in p.dispatches]
    assert tiled == [bool(mask & 1), False, bool(mask & 4)]
    assert_attention_matches_reference(q, k, v, dout, 2, o, dqkv)


def test_attention_tiled_is_deterministic(gpu):
    """Same inputs, same bits: every sum runs in a fixed order."""
    rng = np.random.default_rng(5)
    q, k, v, dout = (rand(rng, 2, 70, 128) for _ in range(4))
    runs = [run_attention(gpu, q, k, v, dout, 2, tiled=True)[1:] for _ in range(2)]
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])


def test_attention_tiled_rule():
    class P:
        class gpu:
            attention_tiled = True
    assert ops.attention_tiled(P.gpu) and not ops.attention_tiled(P.gpu, False)
    P.gpu.attention_tiled = False
    assert not ops.attention_tiled(P.gpu) and ops.attention_tiled(P.gpu, True)
    P.gpu.attention_tiled = 1   # a mask: the forward only
    assert ops.attention_tiled(P.gpu) and not ops.attention_tiled(P.gpu, None, ops.TILED_DKV)
    assert ops.attention_tiled(P.gpu, 4, ops.TILED_DKV) and not ops.attention_tiled(P.gpu, 4)
    P.gpu.attention_tiled = None   # by head_dim: the forward always, dk/dv above 32
    assert [ops.attention_tiled(P.gpu, None, part, 64) for part in (1, 4)] == [True, True]
    assert [ops.attention_tiled(P.gpu, None, part, 32) for part in (1, 4)] == [True, False]


@pytest.mark.parametrize("name,ln_subgroup", [("tiny", False), ("small", True)])
def test_one_step_tiled_attention_matches_reference(gpu, name, ln_subgroup, monkeypatch):
    """A whole training step with the tiled attention kernels (and, on small, the GPU LayerNorm
    kernels with subgroup row sums where the adapter has them) against float64."""
    monkeypatch.setattr(gpu, "attention_tiled", True, raising=False)
    if ln_subgroup and gpu.subgroups:
        monkeypatch.setattr(gpu, "layernorm_variant", "workgroup")
    monkeypatch.setattr(gpu, "layernorm_subgroup", ln_subgroup and gpu.subgroups)   # (GPUs default to it)
    be = backend_on(gpu)
    def kernels_chosen(be):
        names = [d.name for d in be.program.dispatches]
        assert any(n.endswith("attention_backward_dkv_tiled]") for n in names)
        assert any("layernorm_sg.wgsl" in n for n in names) == (ln_subgroup and gpu.subgroups)

    try:
        assert_one_step_matches_reference(be, name, kernels_chosen)
    finally:
        be.close()


@pytest.mark.parametrize("c,h", [(48, 3), (128, 2)])  # head_dim 16 and 64
def test_attention_constant_head_dim_is_bit_identical(gpu, c, h, monkeypatch):
    """HD4 as a pipeline constant (attention_const_hd) changes loop bounds only: outputs equal the
    uniform-bound kernels' bit for bit."""
    rng = np.random.default_rng(c)
    b, t = 2, 45
    q, k, v, dout = (rand(rng, b, t, c) for _ in range(4))
    outs = []
    for const in (False, True):
        monkeypatch.setattr(gpu, "attention_const_hd", const, raising=False)
        p, o, dqkv = run_attention(gpu, q, k, v, dout, h, split=2, tiled=False)   # the row kernels
        assert all(("HD4" in str(d.pipeline.label)) == const for d in p.dispatches)
        outs.append(np.concatenate([o.ravel(), dqkv.ravel()]))
    assert np.array_equal(outs[0], outs[1])


# WebGPU validity: what Dawn (Chrome) rejects and wgpu-native accepts --------------------------
def aliasing_program(gpu, check: bool):
    """A LayerNorm forward whose two outputs (y and the row statistics, both writable bindings)
    share one buffer at different offsets, as the engine's per-layer buffers once did: not valid
    WebGPU (a writable binding's buffer in another binding of the dispatch)."""
    rows, c = 4, 16
    rng = np.random.default_rng(1)
    X = ops.Ref(gpu.upload(rand(rng, rows * c), "x"))
    Y = ops.Ref(gpu.buffer(4 * (rows * c + 2 * rows), "shared"))
    W = ops.Ref(gpu.upload(np.concatenate([np.ones(c), np.zeros(c)]).astype(np.float32), "ln"))
    p = Program(gpu, "aliasing", check=check)
    ops.layernorm_forward(p, "deliberate.alias", Y, Y.at(rows * c), X, W, W.at(c), rows, c)
    return p


def test_aliasing_dispatch_is_refused_by_the_engine_naming_the_kernel(gpu):
    """The engine's own check, on every implementation: the kernel, the buffer and both bindings."""
    with pytest.raises(WebGPUError, match=r"kernel deliberate\.alias \[layernorm\.wgsl:layernorm_forward\w*\]: "
                                          r"buffer 'shared' is bound writable at binding 3 and again at binding 4"):
        aliasing_program(gpu, check=True)


def test_dawn_rejects_an_aliasing_dispatch_naming_the_kernel(gpu):
    """The guard's guard: with the engine's check off, Dawn itself rejects the dispatch, and the
    error names the kernel (Program.locate_error). wgpu-native runs it: it checks the usage scope
    (a buffer read-only and writable in one dispatch) but not two writable bindings that overlap."""
    p = aliasing_program(gpu, check=False).finalize()
    if gpu.implementation != "dawn":
        p.run()  # accepted: why a permissive runtime is no evidence of validity
        return
    with pytest.raises(WebGPUError, match=r"(?s)kernel deliberate\.alias \[layernorm\.wgsl:layernorm_forward\w*\] "
                                          r"rejected: .*aliasing"):
        p.run()


def gpu_default_tuning(gpu) -> dict:
    """The kernel choices tuning_for makes for a GPU adapter with this one's features."""
    from types import SimpleNamespace

    from tinygpt_bench.engines.webgpu.runtime import tuning_for

    return tuning_for(SimpleNamespace(info={"adapter_type": "DiscreteGPU"}, features=gpu.adapter.features))


@pytest.mark.parametrize("name", ["tiny", pytest.param("small", marks=SLOW)])
def test_one_step_with_gpu_default_tuning_matches_reference(gpu, name, monkeypatch):
    """A GPU adapter's kernel choices (workgroup LayerNorm over subgroups, the workgroup-memory
    matmul with prefetch and split K, tiled attention by head_dim, head_dim as a constant, ...)
    run here on the CPU adapter: valid on both implementations, and equal to float64."""
    tuning = gpu_default_tuning(gpu)
    for key, value in tuning.items():
        monkeypatch.setattr(gpu, key, value)
    be = backend_on(gpu)

    def chosen(be):
        names = " ".join(d.name for d in be.program.dispatches)
        assert "attention_forward_tiled" in names and ("matmul_shared_pf" in names or name == "tiny")
        assert ("layernorm_sg.wgsl" in names) == tuning["layernorm_subgroup"]

    try:
        assert_one_step_matches_reference(be, name, chosen)
    finally:
        be.close()
