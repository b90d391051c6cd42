"""The WebGPU engine against numpy: each kernel on fresh random inputs, then whole steps.

Skips (with the fix) where no WebGPU adapter exists. Runs on lavapipe (CPU) in CI.
"""

from __future__ import annotations

import numpy as np
import pytest

wgpu = pytest.importorskip("wgpu", reason="wgpu not installed; fix: pip install wgpu==0.32.0")

from tinygpt_bench.backends import wgpu_ops as ops  # noqa: E402
from tinygpt_bench.backends.wgpu_runtime import Gpu, Program, WebGPUError  # noqa: E402
from tinygpt_bench.errors import UserError  # noqa: E402


@pytest.fixture(scope="module")
def gpu():
    try:
        return Gpu()
    except UserError as e:
        pytest.skip(f"no WebGPU adapter: {e}; fix: apt-get install mesa-vulkan-drivers")


def rel_err(got, want) -> float:
    """max |got - want| / max |want|: error relative to the tensor's scale."""
    want = np.asarray(want, dtype=np.float64)
    return float(np.abs(np.asarray(got, np.float64) - want).max() / max(np.abs(want).max(), 1e-30))


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False)])
@pytest.mark.parametrize("m,n,k", [(70, 45, 33), (128, 64, 16), (5, 130, 67)])
def test_matmul(gpu, trans_a, trans_b, m, n, k):
    rng = np.random.default_rng(m * 1000 + n + k)
    a = rand(rng, *((k, m) if trans_a else (m, k)))
    b = rand(rng, *((n, k) if trans_b else (k, n)))
    bias, res, c0 = rand(rng, n), rand(rng, m, n), rand(rng, m, n)
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    # operands at odd element offsets inside larger buffers, as in the flat parameter buffer
    pa = np.concatenate([rand(rng, 3), a.ravel()])
    pb = np.concatenate([rand(rng, 5), b.ravel(), bias])
    A, Bb = ops.Ref(gpu.upload(pa, "a"), 3), ops.Ref(gpu.upload(pb, "b"), 5)
    C = ops.Ref(gpu.upload(np.concatenate([c0.ravel(), c0.ravel(), res.ravel()]), "c"))
    p = Program(gpu, "test")
    ops.matmul(p, "plain", C, A, Bb, m, n, k, trans_a, trans_b)
    ops.matmul(p, "bias+res+acc", C.at(m * n), A, Bb, m, n, k, trans_a, trans_b,
               bias=Bb.at(k * n), res=C.at(2 * m * n), accum=True)
    p.finalize().run()
    out = gpu.read(C.buf, count=3 * m * n).reshape(3, m, n)
    assert rel_err(out[0], want) < 1e-5
    assert rel_err(out[1], want + bias + res + c0) < 1e-5


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


def test_shader_error_names_kernel(gpu, tmp_path):
    (tmp_path / "broken.wgsl").write_text("@compute @workgroup_size(1) fn main() { undefined_fn(); }\n")
    saved, gpu.kernels_dir = gpu.kernels_dir, tmp_path
    try:
        with pytest.raises(WebGPUError, match=r"(?s)broken\.wgsl.*undefined_fn"):
            gpu.pipeline("broken", "main")
    finally:
        gpu.kernels_dir = saved


def test_dispatch_error_names_kernel(gpu):
    buf = ops.Ref(gpu.buffer(64, "x"))
    p = Program(gpu, "test")
    with pytest.raises(WebGPUError, match="too-wide"):
        ops.matmul(p, "too-wide", buf, buf, buf, 1, 64 * 70000, 1)
