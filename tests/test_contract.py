"""The backend contract (engines/base.py), one suite for every engine (issue 14).

Each test runs once per engine that can run here, against the project's one float64 oracle
(tinygpt_bench/engines/reference/backend.py: loss_and_grad, ReferenceBackend('float64')):

  one step       tiny and small: the loss within 1e-6 relative, every gradient tensor within 1e-4
  15 steps       tiny and small (medium with -m slow): the loss within 1e-5 relative at every step
  nan-grad       the injected fault is caught by diagnose's scan, naming the gradient (engines with faults)
  unknown fault  refused in one line naming the kinds the engine takes
  plan == load   plan()'s rows are what load() allocates (engines with plan())
  diagnose       `diagnose small --backend B` passes every stage, with a per-kernel table
  bad input      a wrong batch shape and a wrong parameter shape are refused naming what is needed

Markers: `gpu` (needs a GPU or a WebGPU adapter: webgpu, webgpu-dawn, torch-cuda) and one per engine
family (`webgpu`, `wasm`, `torch`, `reference`), e.g. `pytest -m "not gpu" tests/test_contract.py`.
A WebGPU implementation without an adapter skips, unless TINYGPT_BENCH_REQUIRE_WEBGPU names it
(conftest.open_gpu); torch-* skip without torch, torch-cuda without CUDA. Each engine's instance
(and WebGPU device) is made once per module and shared by its tests.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tinygpt_bench import faults, engines, diagnose, model, presets, protocol
from tinygpt_bench.engines.reference import backend as reference
from tinygpt_bench.errors import UserError
from conftest import WEBGPU_BACKENDS, open_gpu

FAULT = "TINYGPT_BENCH_FAULT"
IMPLEMENTATION = {b: impl for impl, b in WEBGPU_BACKENDS.items()}  # webgpu -> wgpu-native, ...

# backends whose whole contract suite is slow on a machine without a GPU: webgpu-chrome runs on
# SwiftShader there (a pipeline build of 7-15 s an instance; the suite took 5 min on 2 cores);
# tests/test_webgpu_chrome.py covers it in the default run, `pytest -m slow` runs this suite too
SLOW_HERE = ("webgpu-chrome",)


def _markers(name: str) -> tuple:
    """The engine family's marker, `gpu` for a backend built for the GPU, `slow` for SLOW_HERE."""
    i = engines.info(name)
    return ((getattr(pytest.mark, i.engine),) + ((pytest.mark.gpu,) if i.hardware == "GPU" else ())
            + ((pytest.mark.slow,) if name in SLOW_HERE else ()))


# backend -> (markers, fault kinds its constructor takes (None: no fault argument)), from the
# engines' descriptions: every backend of the package but the oracle itself
ENGINES = {n: (_markers(n), tuple(k + "BYTES" if k == "limit=" else k for k in engines.spec(n)[1].faults) or None)
           for n in engines.names() if n != engines.oracle()}
# kernels every engine with a per-kernel profile must name in diagnose's table
KERNELS = {
    "webgpu": ("adamw", "attention_forward", "attention_backward_dkv", "attention_backward_dq"),
    "webgpu-dawn": ("adamw", "attention_forward", "attention_backward_dkv", "attention_backward_dq"),
    "wasm": ("matmul_fwd", "matmul_dx", "matmul_dw", "attention", "adamw"),
    "wasm-v8": ("matmul_fwd", "matmul_dx", "matmul_dw", "attention", "adamw"),
    "wasm-chrome": ("matmul_fwd", "matmul_dx", "matmul_dw", "attention", "adamw"),
    "webgpu-chrome": ("adamw", "attention_forward", "attention_backward_dkv", "attention_backward_dq"),
}
STAGES = ["preflight", "create", "load", "step", "scan", "timed", "parity", "kernels"]


def engine_params(names=ENGINES):
    return [pytest.param(n, marks=ENGINES[n][0], id=n) for n in names]


class Engine:
    """One engine under test: its registry name, a shared loaded-per-test instance, and a
    factory for more instances on the same device."""

    def __init__(self, name: str):
        self.name = name
        self.gpu = None
        if name.startswith("torch-"):
            torch = pytest.importorskip("torch", reason="torch not installed")
            if name == "torch-cuda" and not torch.cuda.is_available():
                pytest.skip("torch-cuda: PyTorch sees no CUDA device here")
        elif name in IMPLEMENTATION:
            pytest.importorskip("wgpu", reason="wgpu not installed; fix: pip install wgpu==0.32.0")
            self.gpu = open_gpu(IMPLEMENTATION[name])  # skips (or fails, where required) without an adapter
        elif name.startswith("wasm"):
            pytest.importorskip("tinygpt_bench.engines.wasm.backend")
        self.be = self.make()

    def options(self) -> dict:
        if self.name.startswith("wasm"):
            return {"threads": 2}
        if self.name == "torch-cpu":
            return {"threads": 1}
        return {}

    def make(self, **kw):
        be = engines.create(self.name, **{**self.options(), **kw})
        if self.gpu is not None:
            be.gpu = self.gpu  # shares the module's device
        if self.name.startswith("torch-"):
            be.keep_grads = True  # gradients() for the parity checks
        return be


@pytest.fixture(scope="module", params=engine_params())
def engine(request):
    e = Engine(request.param)
    yield e
    e.be.close()


def setup_run(name: str, steps: int, seed: int = 7):
    preset = presets.load(name)
    layout = model.Layout(preset)
    rng = np.random.default_rng(seed)
    batches = [rng.integers(0, 256, size=(preset.batch, preset.ctx + 1)).astype(np.int32) for _ in range(steps)]
    return preset, layout, layout.init(seed=0), batches


def grad_errors(layout, got, want) -> dict[str, float]:
    """Per tensor: max |got - want| / max |want|, with max |want| floored at 1e-3 of the whole
    gradient's largest entry: bk's true gradient is exactly zero (softmax ignores a constant
    added to every key's score), so its reference is rounding noise (~1e-17)."""
    floor = 1e-3 * np.abs(want).max()
    g, w = layout.views(np.asarray(got, np.float64)), layout.views(want)
    return {n: float(np.abs(g[n] - w[n]).max() / max(np.abs(w[n]).max(), floor)) for n in w}


def grad_norm(be) -> float | None:
    """The engine's own global gradient norm (the one it clips by), where it reports one."""
    if hasattr(be, "grad_norm"):
        return float(be.grad_norm())
    return getattr(be, "last_grad_norm", None)


# ---- parity with the float64 oracle ----------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny", "small"])
def test_one_step_matches_the_float64_reference(engine, name):
    be = engine.be
    preset, layout, w, (batch,) = setup_run(name, 1)
    want_loss, want_grad = reference.loss_and_grad(preset, w.astype(np.float64), batch)
    be.load(preset, w)
    loss = be.step(batch)
    assert abs(loss - want_loss) / want_loss < 1e-6, f"{engine.name}: loss {loss} vs reference {want_loss}"
    grad = be.gradients()
    assert grad.shape == (layout.total,)
    bad = {n: e for n, e in grad_errors(layout, grad, want_grad).items() if not e < 1e-4}
    assert not bad, f"{engine.name}: gradients off the float64 reference: {bad}"
    norm, want_norm = grad_norm(be), float(np.linalg.norm(want_grad))
    if norm is not None:
        assert abs(norm - want_norm) < 1e-4 * want_norm, (norm, want_norm)


@pytest.mark.parametrize("name", ["tiny", "small", pytest.param("medium", marks=pytest.mark.slow)])
def test_fifteen_steps_match_the_float64_reference(engine, name):
    """The loss within 1e-5 relative of ReferenceBackend('float64') at every step, and the weights'
    movement over the 15 steps within 1e-2 of the reference's (norm-wise: AdamW amplifies float32
    rounding in elements whose gradient is near zero)."""
    be = engine.be
    preset, layout, w, batches = setup_run(name, 15)
    rb = reference.ReferenceBackend("float64")
    rb.load(preset, w)
    be.load(preset, w)
    for i, batch in enumerate(batches):
        want, got = rb.step(batch), be.step(batch)
        assert abs(got - want) / want < 1e-5, f"{engine.name} step {i + 1}: loss {got} vs reference {want}"
    moved = be.parameters().astype(np.float64) - w
    want_moved = rb.params - w
    assert np.linalg.norm(moved - want_moved) / np.linalg.norm(want_moved) < 1e-2
    rb.close()


# ---- faults ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", engine_params([n for n, (_, kinds) in ENGINES.items() if kinds and "nan-grad" in kinds]))
def test_nan_grad_fault_is_caught_by_the_scan_naming_the_gradient(name, tmp_path, monkeypatch):
    """A NaN written into the gradient's middle element after backward: the step's loss is finite,
    diagnose's scan fails naming that element's tensor, and the report carries the error verbatim."""
    e = Engine(name)  # skips where the engine cannot run; diagnose makes its own instance
    e.be.close()
    monkeypatch.setenv(FAULT, f"{name}:nan-grad@tiny")
    p = presets.load("tiny")
    d = diagnose.run(p, name, e.options())
    assert d.harness_stages() == ["preflight", "create", "load", "step", "scan"]
    scan = d.stages[-1]
    assert not scan.ok and all(s.ok for s in d.stages[:-1])  # the step itself passed: loss finite
    assert "1 non-finite gradient" in scan.error
    lay = model.Layout(p)
    mid = lay.total // 2
    assert next(s.name for s in lay.specs if s.offset <= mid < s.offset + s.size) in scan.error
    md, _ = diagnose.write_report(d, tmp_path)
    assert scan.error in md.read_text()


@pytest.mark.parametrize("name", engine_params())
def test_unknown_fault_is_refused_in_one_line_naming_the_kinds(name, monkeypatch):
    """A fault kind the engine does not take (another engine's, or none at all) is refused before
    anything starts: one UserError, one line, naming every kind the engine does take."""
    kinds = ENGINES[name][1]
    other = "trap" if not kinds or "trap" not in kinds else "shader"
    if kinds:
        with pytest.raises(UserError) as ex:
            engines.create(name, fault="bogus")
        msg = str(ex.value)
        assert "fault 'bogus' cannot be injected here" in msg and "\n" not in msg
        for k in kinds:
            assert k in msg, (k, msg)
    monkeypatch.setenv(FAULT, f"{name}:{other}@tiny")
    if name.startswith("torch-"):
        pytest.importorskip("torch", reason="torch not installed")
    with pytest.raises(UserError) as ex:
        protocol.create_backend(name, presets.load("tiny"))
    msg = str(ex.value)
    assert "\n" not in msg and f"'{other}'" in msg
    for k in kinds or ():
        assert k in msg, (k, msg)
    if not kinds:
        assert "takes no injected faults" in msg
    # and a kind no engine takes is refused by the parser, naming them all
    monkeypatch.setenv(FAULT, f"{name}:bogus@tiny")
    with pytest.raises(UserError, match=f"unknown kind 'bogus'; kinds are {', '.join(faults.KINDS)}, limit=BYTES"):
        protocol.create_backend(name, presets.load("tiny"))


# ---- plan() is what load() allocates ---------------------------------------------------------
@pytest.mark.parametrize("fault", [None, "nan-grad"])
@pytest.mark.parametrize("name", ["tiny", "small"])
def test_plan_is_what_load_allocates(engine, name, fault):
    cls = type(engine.be)
    if "plan" not in cls.capabilities:
        pytest.skip(f"{engine.name} has no plan()")
    p = presets.load(name)
    opts = {**engine.options(), "fault": fault}
    rows = cls.plan(p, **opts)
    be = engine.make(fault=fault) if fault else engine.be
    try:
        be.load(p, model.Layout(p).init(0))
        if engine.name.startswith("wasm"):
            # the last row is the total against the memory max; the allocator's heap top is it exactly
            *parts, total = rows
            assert sum(r["bytes"] for r in parts) == total["bytes"]
            assert be.runtime.call("heap_top") == total["bytes"]
            assert be.memory_bytes() >= total["bytes"]
        else:
            assert sum(r["bytes"] for r in rows) == be.memory_bytes()
    finally:
        if be is not engine.be:
            be.close()


# ---- diagnose passes -------------------------------------------------------------------------
def test_diagnose_small_passes_every_stage(engine, tmp_path, run_cli):
    B = engine.name
    args = ["--threads", "2"] if B.startswith("wasm") else []
    code, out, _ = run_cli("diagnose", "small", "--backend", B, *args, "--out", str(tmp_path))
    assert code == 0, out
    report = json.loads((tmp_path / f"diagnose-small-{B}.json").read_text())
    assert [s["name"] for s in report["stages"] if s["name"] in STAGES] == STAGES  # and the engine's own between
    assert report["ok"] and all(s["ok"] for s in report["stages"]), report["stages"]
    stages = {s["name"]: s for s in report["stages"]}
    md = (tmp_path / f"diagnose-small-{B}.md").read_text()
    assert "| parity | pass |" in md
    if B in KERNELS:
        kernels = stages["kernels"]["detail"]["kernels"]
        for family in KERNELS[B]:
            assert any(k.startswith(family) for k in kernels), (family, sorted(kernels))
        if B in IMPLEMENTATION:  # the matmul variant is the adapter's choice (direct on lavapipe)
            for part in (" fwd", " dx", " dw"):
                assert any(k.startswith("matmul_") and k.endswith(part) for k in kernels), part
        assert "## per-kernel time of one step" in md
        if B in IMPLEMENTATION:  # the console shows the WebGPU engines' table
            assert f"per-kernel time of one small step on {B}" in out
            dw = next(k for k in kernels if k.startswith("matmul_") and k.endswith(" dw"))
            assert f"| {dw} |" in md
            assert stages["create"]["detail"]["limits"]["cap_bytes"] is None  # no limit fault in force
    if "plan" in type(engine.be).capabilities and B in IMPLEMENTATION:
        rows = stages["preflight"]["detail"]["buffers"]
        assert sum(r["bytes"] for r in rows if r["name"].startswith("webgpu")) == \
            stages["load"]["detail"]["memory_bytes"]


# ---- bad input -------------------------------------------------------------------------------
def test_bad_input_is_refused_naming_what_is_needed(engine):
    """A batch of the wrong shape and parameters of the wrong shape are refused with a clear error
    (naming the shape needed); the engine still trains afterwards."""
    be = engine.be
    preset, layout, w, (batch,) = setup_run("tiny", 1)
    be.load(preset, w)
    for bad in (np.zeros((preset.batch, preset.ctx + 2), np.int32), batch[:, :-2][:1]):
        if engine.name.startswith("reference") and bad.shape[1] <= preset.ctx + 1:
            continue  # the reference takes any (B, T+1) with T <= ctx
        with pytest.raises((UserError, ValueError)) as ex:
            be.step(bad)
        msg = str(ex.value)
        assert "batch" in msg and "\n" not in msg, msg
        assert str(preset.ctx + 1) in msg or f"ctx {preset.ctx}" in msg, msg
    with pytest.raises((UserError, ValueError)) as ex:
        be.load(preset, w[:-1])
    msg = str(ex.value)
    assert str(layout.total) in msg and "\n" not in msg, msg
    be.load(preset, w)
    assert math.isfinite(be.step(batch))
