"""The PyTorch peer passes the same parity checks as the engines (skips without torch)."""

import numpy as np
import pytest

from tinygpt_bench import corpus, model, presets, protocol
from tinygpt_bench.backends import reference

torch = pytest.importorskip("torch")
from tinygpt_bench.backends.torch_peer import TorchBackend  # noqa: E402


def _rel(a, b, scale):
    """Relative error of a group; groups whose true gradient is ~0 (bk: softmax ignores a
    key bias) are measured against a small fraction of the whole gradient's norm."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-3 * scale))


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_one_step_loss_and_gradients_match_reference(name):
    p = presets.load(name)
    work = protocol.prepare(p, corpus.synthetic(n_bytes=100_000), steps=1, seed=3)
    loss64, grad64 = reference.loss_and_grad(p, work.params.astype(np.float64), work.batches[0])
    be = TorchBackend("cpu", threads=1)
    be.keep_grads = True
    be.load(p, work.params)
    loss = be.step(work.batches[0])
    g = be.gradients()
    be.close()
    assert abs(loss - loss64) / loss64 < 1e-4
    lay = model.Layout(p)
    for s in lay.specs:
        sl = slice(s.offset, s.offset + s.size)
        assert _rel(g[sl], grad64[sl], np.linalg.norm(grad64)) < 1e-4, s.name


def test_fifteen_steps_match_reference():
    p = presets.load("tiny")
    work = protocol.prepare(p, corpus.synthetic(n_bytes=100_000), steps=15, seed=0)
    ref = [st.loss for st in protocol.train(reference.ReferenceBackend("float64"), work)]
    be = TorchBackend("cpu", threads=1)
    got = [st.loss for st in protocol.train(be, work)]
    w = be.parameters()
    be.close()
    assert abs(got[-1] - ref[-1]) / ref[-1] < 1e-3
    assert got[-1] < got[0]
    assert w.shape == (model.Layout(p).total,) and w.dtype == np.float32
