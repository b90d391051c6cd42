"""Checks of the numpy reference, the oracle every engine is compared against.

    erf              against math.erf (libm) over [-7, 7] and special values
    gradients        4th-order central finite differences in float64, every parameter group
    fp32 vs fp64     15 steps of `tiny`: the losses agree within 1e-4 relative
    training         loss starts near ln(256) and falls over 15 steps at lr 3e-4
    clip, AdamW      against hand calculations, decay order included
    backend          step = loss_and_grad + clip + AdamW; raw gradients; input errors
    torch (optional) loss and every gradient group vs PyTorch float64 within 1e-8;
                     clipped AdamW steps vs torch.optim.AdamW
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tinygpt_bench import engines, model, presets
from tinygpt_bench.engines.reference import backend as ref
from tinygpt_bench.engines.base import OPTIM
from tinygpt_bench.errors import UserError

LN256 = math.log(256)
# B=2 rows of T=5 positions, 2 layers, C=8 split into 2 heads: every code path, ~3.8K params
FD_PRESET = presets.Preset(name="fd", layers=2, d_model=8, heads=2, ctx=5, batch=2)

_WORDS = (
    "the of and to in is was that for it with as his on be at by had not are but from or have an they which "
    "one you were her all she there would their we him been has when who will more no if out so said what up "
    "its about into than them can only other new some could time these two may then do first any my now such "
    "like our over man me even most made after also did many before must through back years where much your "
    "way well down should because each just those people how too little state good very make world still own "
    "see men work long get here between both life being under never day same another know while last might us"
).split()


def pseudo_text(n_bytes: int = 60_000, seed: int = 1234) -> np.ndarray:
    """Deterministic English-like bytes: Zipf-weighted words, capitals, punctuation, line breaks."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(_WORDS) + 1)
    picks = rng.choice(len(_WORDS), size=n_bytes // 3, p=weights / weights.sum())
    out, start = [], True
    for i, w in enumerate(picks):
        word = _WORDS[w].capitalize() if start else _WORDS[w]
        r = rng.random()
        sep = ". " if r < 0.06 else ", " if r < 0.12 else ".\n" if r < 0.14 else " "
        start = sep[0] == "."
        out.append(word + sep)
    return np.frombuffer("".join(out).encode()[:n_bytes], dtype=np.uint8)


def batches(text: np.ndarray, B: int, T: int, n: int, seed: int) -> list[np.ndarray]:
    """n batches (B, T+1) int32 of windows at uniform random offsets."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        starts = rng.integers(0, len(text) - T - 1, size=B)
        out.append(np.stack([text[s : s + T + 1] for s in starts]).astype(np.int32))
    return out


def random_params(layout: model.Layout, seed: int) -> np.ndarray:
    """A float64 point away from init (non-zero biases, LN gains != 1), so no gradient is trivial."""
    rng = np.random.default_rng(seed)
    flat = rng.normal(0.0, 0.3, layout.total)
    views = layout.views(flat)
    for s in layout.specs:
        if s.init == "ones":
            views[s.name][...] = 1.0 + 0.2 * rng.standard_normal(s.shape)
        elif s.init == "zeros":
            views[s.name][...] = 0.1 * rng.standard_normal(s.shape)
    return flat


# ----------------------------------------------------------------------------------------
# erf


def test_erf_matches_math_erf():
    x = np.concatenate(
        [np.linspace(-7, 7, 200_001), np.random.default_rng(0).normal(0, 2, 50_000), [1.0, -1.0, 3.0, 6.0, 1e-300]]
    )
    want = np.array([math.erf(v) for v in x])
    got = ref.erf(x)
    assert got.dtype == np.float64
    err = np.abs(got - want).max()
    assert err < 2e-15, f"erf max abs error {err:.2e} vs math.erf"
    special = ref.erf(np.array([0.0, -0.0, np.inf, -np.inf, np.nan]))
    assert special[0] == 0.0 and special[2] == 1.0 and special[3] == -1.0 and np.isnan(special[4])
    assert np.signbit(special[1])
    y32 = ref.erf(np.linspace(-3, 3, 101, dtype=np.float32))
    assert y32.dtype == np.float32
    assert ref.erf(np.zeros((3, 4, 5))).shape == (3, 4, 5)


# ----------------------------------------------------------------------------------------
# gradients against finite differences


def _fd_indices(layout: model.Layout, batch: np.ndarray, rng) -> dict[str, list[int]]:
    """Flat indices to probe, several per group; tok_emb rows both fed as input and head-only."""
    picks = {}
    for s in layout.specs:
        picks[s.name] = list(s.offset + rng.choice(s.size, size=min(6, s.size), replace=False))
    C = layout.preset.d_model
    tok = layout.by_name["tok_emb"]
    used = np.unique(batch[:, :-1])
    unused = np.setdiff1d(np.arange(256), used)
    for row in list(used[:3]) + list(unused[:3]):  # input + head rows, then head-only rows
        picks["tok_emb"] += [tok.offset + int(row) * C + int(rng.integers(C))]
    return picks


def test_gradient_matches_finite_differences_every_group():
    layout = model.Layout(FD_PRESET)
    rng = np.random.default_rng(7)
    flat = random_params(layout, seed=3)
    batch = rng.integers(0, 256, size=(FD_PRESET.batch, FD_PRESET.ctx + 1)).astype(np.int32)
    loss, grad = ref.loss_and_grad(FD_PRESET, flat, batch)
    assert loss == pytest.approx(ref.loss_only(FD_PRESET, flat, batch), rel=1e-14)

    # bk is the one group whose true gradient is zero: q.(k + b) adds q.b to every score
    # of a query, and softmax ignores a constant. Its computed gradient is rounding noise.
    g = layout.views(grad)
    assert np.abs(g["bk"]).max() < 1e-13 * np.abs(grad).max()
    # 4th-order stencil, h = 1e-3: truncation ~h^4, rounding ~18 * 1e-16 * loss / (12 h)
    # ~1e-12. An entry passes when |fd - grad| <= 1e-6 |grad| + 1e-10 (the 1e-10 covers
    # rounding and bk's zero); measured worst: ~1e-2 of that bound.
    h, rtol, atol = 1e-3, 1e-6, 1e-10
    worst = {}
    for name, idx in _fd_indices(layout, batch, rng).items():
        if name != "bk":
            assert np.abs(g[name]).min() > 0, f"group {name} has a zero gradient entry"
        for i in idx:
            f = {}
            for k in (-2, -1, 1, 2):
                p = flat.copy()
                p[i] += k * h
                f[k] = ref.loss_only(FD_PRESET, p, batch)
            fd = (f[-2] - 8 * f[-1] + 8 * f[1] - f[2]) / (12 * h)
            ratio = abs(fd - grad[i]) / (rtol * abs(grad[i]) + atol)  # must stay < 1
            worst[name] = max(worst.get(name, 0.0), ratio)
    assert set(worst) == {s.name for s in layout.specs}
    bad = {k: f"{v:.1f}" for k, v in worst.items() if v >= 1}
    assert not bad, f"finite differences disagree (|fd - grad| / (1e-6 |grad| + 1e-10) per group): {bad}"


# ----------------------------------------------------------------------------------------
# training behaviour on the `tiny` preset


def test_fp32_losses_track_fp64_for_15_steps():
    p = presets.load("tiny")
    w = model.Layout(p).init(seed=0)
    data = batches(pseudo_text(), p.batch, p.ctx, n=15, seed=11)
    runs = {}
    for dtype in ("float64", "float32"):
        with ref.ReferenceBackend(dtype) as be:
            be.load(p, w)
            runs[dtype] = np.array([be.step(b, 3e-4) for b in data])
            assert {be.params.dtype, be.m.dtype, be.v.dtype, be.grad.dtype} == {np.dtype(dtype)}
    rel = np.abs(runs["float32"] - runs["float64"]) / runs["float64"]
    assert rel.max() < 1e-4, f"fp32 vs fp64 loss, worst relative difference {rel.max():.2e} at step {rel.argmax() + 1}"
    assert not np.array_equal(runs["float32"], runs["float64"])  # the fp32 path really ran in fp32
    ids = data[0][:, :-1]
    logits, acts = ref.forward(model.Layout(p).views(w), ids, p.heads)
    assert logits.dtype == np.float32 and acts["layers"][0]["fch_cdf"].dtype == np.float32


def test_loss_starts_near_ln256_and_falls():
    p = presets.load("tiny")
    w = model.Layout(p).init(seed=0)
    text = pseudo_text()
    train = batches(text[:50_000], p.batch, p.ctx, n=15, seed=5)
    held_out = batches(text[50_000:], p.batch, p.ctx, n=4, seed=6)
    be = ref.ReferenceBackend("float64")
    be.load(p, w)

    def held_out_loss():
        params = be.params.copy()
        return np.mean([ref.loss_only(p, params, b) for b in held_out])

    before = held_out_loss()
    losses = [be.step(b, 3e-4) for b in train]
    after = held_out_loss()
    assert abs(losses[0] - LN256) < 0.05, f"loss at init {losses[0]:.4f}, expected about ln(256) = {LN256:.4f}"
    assert abs(before - LN256) < 0.05
    # 15 AdamW steps at 3e-4 move each weight by at most ~4.5e-3: enough to learn the
    # byte frequencies of English-like text, measured on windows not trained on.
    assert after < before - 0.2, f"held-out loss {before:.4f} -> {after:.4f} after 15 steps"
    assert np.mean(losses[-3:]) < losses[0] - 0.2


# ----------------------------------------------------------------------------------------
# optimizer pieces against hand calculations


def test_clip_grad_by_hand():
    g = np.array([3.0, 4.0])  # norm 5
    clipped, norm = ref.clip_grad(g, 1.0)
    assert norm == 5.0
    np.testing.assert_allclose(clipped, [3.0 / (5.0 + 1e-6), 4.0 / (5.0 + 1e-6)], rtol=1e-15)
    np.testing.assert_array_equal(g, [3.0, 4.0])  # input untouched
    clipped, norm = ref.clip_grad(g, 10.0)  # below the clip: unchanged
    assert norm == 5.0 and np.array_equal(clipped, g)
    clipped, norm = ref.clip_grad(g, 5.0)  # exactly at the clip: "norm > clip" is false
    assert np.array_equal(clipped, g)
    g32 = np.array([30.0, 40.0], dtype=np.float32)
    assert ref.clip_grad(g32)[0].dtype == np.float32


def test_adamw_update_by_hand():
    # two parameters: index 0 decays (a matrix entry), index 1 does not (a bias)
    lr, wd, b1, b2, eps = 1e-2, OPTIM.weight_decay, OPTIM.beta1, OPTIM.beta2, OPTIM.eps
    p = np.array([0.5, -2.0])
    m, v = np.zeros(2), np.zeros(2)
    mask = np.array([1.0, 0.0])
    hand_p, hand_m, hand_v = [0.5, -2.0], [0.0, 0.0], [0.0, 0.0]
    for t, g in enumerate(([0.3, -0.1], [-0.2, 0.4], [1e-9, 0.0]), start=1):
        ref.adamw_update(p, np.array(g), m, v, t, lr, mask)
        for i in range(2):
            hand_m[i] = b1 * hand_m[i] + (1 - b1) * g[i]
            hand_v[i] = b2 * hand_v[i] + (1 - b2) * g[i] ** 2
            mhat = hand_m[i] / (1 - b1**t)
            vhat = hand_v[i] / (1 - b2**t)
            hand_p[i] -= lr * (mhat / (math.sqrt(vhat) + eps) + wd * mask[i] * hand_p[i])
        np.testing.assert_allclose(p, hand_p, rtol=1e-14, atol=0)
        np.testing.assert_allclose(m, hand_m, rtol=1e-14, atol=0)
        np.testing.assert_allclose(v, hand_v, rtol=1e-14, atol=0)
    # first step is sign(g) * lr for the undecayed entry: mhat / sqrt(vhat) = g / |g|
    p, m, v = np.array([0.0]), np.zeros(1), np.zeros(1)
    ref.adamw_update(p, np.array([0.25]), m, v, 1, 1e-3, np.zeros(1))
    assert p[0] == pytest.approx(-1e-3 * 0.25 / (0.25 + eps), rel=1e-14)
    with pytest.raises(ValueError, match="1-based"):
        ref.adamw_update(p, np.array([0.25]), m, v, 0, 1e-3, np.zeros(1))


# ----------------------------------------------------------------------------------------
# the Backend contract


def test_backend_step_is_loss_grad_clip_adamw():
    layout = model.Layout(FD_PRESET)
    w = random_params(layout, seed=5).astype(np.float32)  # large gradients: clipping is active
    data = batches(pseudo_text(), FD_PRESET.batch, FD_PRESET.ctx, n=3, seed=2)
    be = engines.create("reference")
    assert be.describe()["dtype"] == "float64" and be.describe()["api"] == "numpy"
    be.load(FD_PRESET, w)
    p = w.astype(np.float64)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, b in enumerate(data, start=1):
        loss, grad = ref.loss_and_grad(FD_PRESET, p, b)
        clipped, norm = ref.clip_grad(grad, 1.0)
        assert norm > 1.0
        ref.adamw_update(p, clipped, m, v, t, 2e-3, layout.decay_mask(np.float64))
        assert be.step(b, 2e-3) == loss
        np.testing.assert_array_equal(be.gradients(), grad.astype(np.float32))  # raw, not clipped
        assert be.last_grad_norm == norm
    out = be.parameters()
    assert out.dtype == np.float32 and out.shape == (layout.total,)
    np.testing.assert_array_equal(out, p.astype(np.float32))
    be.close()
    be.close()  # safe twice


def test_backend_rejects_bad_input():
    with pytest.raises(UserError, match="float16"):
        ref.ReferenceBackend("float16")
    be = engines.create("reference-fp32")
    assert be.describe()["dtype"] == "float32"
    with pytest.raises(RuntimeError, match="load"):
        be.step(np.zeros((2, 6), dtype=np.int32))
    w = model.Layout(FD_PRESET).init(0)
    with pytest.raises(ValueError, match="needs"):
        be.load(FD_PRESET, w[:-1])
    be.load(FD_PRESET, w)
    with pytest.raises(RuntimeError, match="step"):
        be.gradients()
    with pytest.raises(ValueError, match="ctx"):
        be.step(np.zeros((2, 7), dtype=np.int32))  # T = 6 > ctx 5
    with pytest.raises(ValueError, match="bytes"):
        be.step(np.full((2, 6), 256, dtype=np.int32))
    with pytest.raises(ValueError, match="integer"):
        be.step(np.zeros((2, 6), dtype=np.float32))
    assert be.t == 0  # nothing ran
    be.step(np.zeros((2, 4), dtype=np.int32))  # shorter T than ctx is allowed
    assert be.gradients().dtype == np.float32


# ----------------------------------------------------------------------------------------
# PyTorch, where installed: an independent implementation of the same model


def _torch_model(torch, p: presets.Preset, flat: np.ndarray):
    """name -> leaf float64 tensor from the flat vector, and the loss function."""
    F = torch.nn.functional
    layout = model.Layout(p)
    P = {k: torch.tensor(np.array(v), dtype=torch.float64, requires_grad=True) for k, v in layout.views(flat).items()}
    C, H = p.d_model, p.heads

    def loss_fn(batch: np.ndarray):
        x_ids = torch.tensor(batch[:, :-1], dtype=torch.long)
        y_ids = torch.tensor(batch[:, 1:], dtype=torch.long)
        B, T = x_ids.shape
        x = P["tok_emb"][x_ids] + P["pos_emb"][:T]
        for l in range(p.layers):
            h = F.layer_norm(x, (C,), P["ln1_w"][l], P["ln1_b"][l], eps=1e-5)
            q, k, v = (F.linear(h, P["w" + n][l].T, P["b" + n][l]) for n in "qkv")
            q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
            x = x + F.linear(y, P["wo"][l].T, P["bo"][l])
            h = F.layer_norm(x, (C,), P["ln2_w"][l], P["ln2_b"][l], eps=1e-5)
            h = F.gelu(F.linear(h, P["fc_in_w"][l].T, P["fc_in_b"][l]), approximate="none")
            x = x + F.linear(h, P["fc_out_w"][l].T, P["fc_out_b"][l])
        x = F.layer_norm(x, (C,), P["lnf_w"], P["lnf_b"], eps=1e-5)
        logits = x @ P["tok_emb"].T  # tied head
        return F.cross_entropy(logits.reshape(B * T, -1), y_ids.reshape(-1))

    return P, loss_fn


def test_loss_and_every_gradient_match_torch():
    torch = pytest.importorskip("torch")
    for p, flat in (
        (presets.load("tiny"), model.Layout(presets.load("tiny")).init(0).astype(np.float64)),
        (FD_PRESET, random_params(model.Layout(FD_PRESET), seed=9)),
    ):
        layout = model.Layout(p)
        batch = batches(pseudo_text(), p.batch, p.ctx, n=1, seed=3)[0]
        loss, grad = ref.loss_and_grad(p, flat, batch)
        P, loss_fn = _torch_model(torch, p, flat)
        t_loss = loss_fn(batch)
        t_loss.backward()
        assert loss == pytest.approx(t_loss.item(), rel=1e-12)
        g = layout.views(grad)
        largest = np.abs(grad).max()
        for s in layout.specs:
            want = P[s.name].grad.numpy()
            # relative to the group's largest entry; bk's true gradient is 0 (see the
            # finite-difference test), so its scale is floored at 1e-6 of the largest overall
            scale = max(np.abs(want).max(), 1e-6 * largest)
            err = np.abs(g[s.name] - want).max() / scale
            assert err < 1e-8, f"{p.name}: gradient of {s.name} differs from torch by {err:.1e} (relative to its max)"


def test_adamw_steps_match_torch_optim():
    torch = pytest.importorskip("torch")
    lr = 3e-4
    tiny = presets.load("tiny")
    rng = np.random.default_rng(8)
    for p, w, data, clips in (
        # init weights on uniform random bytes: gradient norm ~0.7, no clipping
        (tiny, model.Layout(tiny).init(0), [rng.integers(0, 256, (16, 33)) for _ in range(3)], False),
        # away from init, on text: gradient norm > 1, clipped every step
        (
            FD_PRESET,
            random_params(model.Layout(FD_PRESET), seed=4).astype(np.float32),
            batches(pseudo_text(), FD_PRESET.batch, FD_PRESET.ctx, n=3, seed=8),
            True,
        ),
    ):
        layout = model.Layout(p)
        be = ref.ReferenceBackend("float64")
        be.load(p, w)
        P, loss_fn = _torch_model(torch, p, w.astype(np.float64))
        groups = [
            {"params": [P[s.name] for s in layout.specs if s.decay], "weight_decay": OPTIM.weight_decay},
            {"params": [P[s.name] for s in layout.specs if not s.decay], "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(groups, lr=lr, betas=(OPTIM.beta1, OPTIM.beta2), eps=OPTIM.eps)
        for b in data:
            loss = be.step(b, lr)
            opt.zero_grad()
            t_loss = loss_fn(b)
            t_loss.backward()
            raw = np.concatenate([P[s.name].grad.numpy().ravel() for s in layout.specs])
            norm = torch.nn.utils.clip_grad_norm_(list(P.values()), OPTIM.clip).item()
            opt.step()
            assert loss == pytest.approx(t_loss.item(), rel=1e-12)
            assert (be.last_grad_norm > OPTIM.clip) == clips
            assert be.last_grad_norm == pytest.approx(norm, rel=1e-12)
            np.testing.assert_allclose(be.gradients(), raw.astype(np.float32), rtol=1e-6, atol=1e-9)
        t_params = np.concatenate([P[s.name].detach().numpy().ravel() for s in layout.specs])
        # one step moves a weight by ~lr; decaying after instead of before the Adam update
        # would differ by ~lr*wd*lr = 1e-8, so 1e-12 checks the order too
        diff = np.abs(be.params - t_params).max()
        assert diff < 1e-12, f"{p.name}: parameters after 3 AdamW steps differ from torch by {diff:.1e}"
        assert np.abs(be.params - w).max() > 1e-4  # they did move
