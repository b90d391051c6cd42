"""The webgpu engine under `diagnose` and the failure semantics of issue 6: the injected faults
of its own (faults.py: shader, limit=BYTES) caught at their stage with the error verbatim in the
report, the adapter-limit preflight that creates no device, a failing preset in a `curve` run
followed by one that succeeds. nan-grad, a fault kind it does not take, plan() against load() and
`diagnose small` passing every stage with its per-kernel table: tests/test_contract.py.

Every test that takes the `gpu` fixture runs on both WebGPU implementations (backends webgpu and
webgpu-dawn, conftest.py). Skips (with the fix) where an implementation finds no adapter, except
where CI requires it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("wgpu", reason="wgpu not installed; fix: pip install wgpu==0.32.0")

from tinygpt_bench import engines, diagnose, model, presets  # noqa: E402
from tinygpt_bench.engines.webgpu import backend as webgpu, runtime as wgpu_runtime  # noqa: E402
from tinygpt_bench.errors import UserError  # noqa: E402
from conftest import WEBGPU_BACKENDS  # noqa: E402

FAULT = "TINYGPT_BENCH_FAULT"


@pytest.fixture(scope="module")
def B(gpu):
    """The backend of the `gpu` fixture's implementation (conftest.py): webgpu or webgpu-dawn."""
    return WEBGPU_BACKENDS[gpu.implementation]


def engine(B):
    """The backend class of B."""
    return engines.get_class(B)[0]


# ---- injected faults, each caught at its stage -------------------------------------------
def test_shader_fault_fails_load_naming_the_kernel_with_the_validation_text(gpu, B, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT, f"{B}:shader@tiny")
    d = diagnose.run(presets.load("tiny"), B, {})
    assert d.harness_stages() == ["preflight", "create", "load"]
    load = d.stages[-1]
    assert not load.ok and all(s.ok for s in d.stages[:-1])
    # the device's own validation text, verbatim: compile the same broken source here
    family, needle, typo = webgpu.SHADER_FAULT
    with pytest.raises(Exception) as device_error:
        gpu.device.create_shader_module(code=gpu.source(family).replace(needle, typo, 1), label=family)
    verbatim = str(device_error.value).rstrip()
    assert "INV_SQRT_TWO" in verbatim  # Naga's or Tint's words: the unknown identifier
    assert load.error.startswith("WebGPUError: kernel gelu.wgsl does not compile: ")
    assert verbatim in load.error and "fault 'shader' was injected" in load.error
    assert "WGSL kernel" in load.meaning
    md, js = diagnose.write_report(d, tmp_path)
    assert load.error in md.read_text()
    report = json.loads(js.read_text())
    assert report["ok"] is False and report["stages"][-1]["error"] == load.error


def test_failed_load_releases_its_buffers_and_the_device_stays_usable(gpu, B):
    p = presets.load("tiny")
    w = model.Layout(p).init(0)
    be = engine(B)(fault="shader")
    be.gpu = gpu
    with pytest.raises(wgpu_runtime.WebGPUError, match=r"(?s)kernel gelu\.wgsl does not compile: .*INV_SQRT_TWO"):
        be.load(p, w)
    assert be.bufs == {} and be.memory_bytes() is None and be.readback is None
    ok = engine(B)()
    ok.gpu = gpu  # the same device goes on working
    try:
        ok.load(p, w)
        assert np.isfinite(ok.step(np.random.default_rng(1).integers(0, 256, (p.batch, p.ctx + 1), dtype=np.int32)))
    finally:
        ok.close()


def test_limit_fault_is_named_in_preflight_before_any_device_exists(gpu, B, tmp_path, run_cli, monkeypatch):
    p = presets.load("small")
    need = {r["name"]: r["bytes"] for r in engine(B).plan(p)}
    assert max(need.values()) > 1 << 20  # small's largest buffer is above the cap

    def no_device(*a, **k):
        raise AssertionError("preflight must not create a device")

    monkeypatch.setattr(wgpu_runtime.Gpu, "__init__", no_device)
    monkeypatch.setattr(webgpu.WebGPUBackend, "load", no_device)
    monkeypatch.setenv(FAULT, f"{B}:limit=1MiB@small")
    code, out, _ = run_cli("diagnose", "small", "--backend", B, "--out", str(tmp_path))
    assert code == 1
    report = json.loads((tmp_path / f"diagnose-small-{B}.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["preflight"]
    err = report["stages"][0]["error"]
    device = gpu.adapter.info["device"]
    limit = (f"adapter max-storage-buffer-binding-size ({device}, capped by fault 'limit=1MiB') "
             f"1.00 MiB (1,048,576 bytes)")
    biggest = max(need, key=need.get)  # small: an MLP activation (BT x 4C floats, 1.5 MiB)
    assert biggest == "webgpu buffer layer0.f"
    assert f"{biggest}: 1.50 MiB ({need[biggest]:,} bytes) > {limit}, short by" in err
    over = [name for name, size in need.items() if size > 1 << 20]
    assert len(over) > 3  # the parameters, their gradients and moments, the MLP activations
    for name, size in need.items():  # every buffer over the cap is named, and only those
        assert (f"{name}:" in err or f"{name}," in err or err.endswith(name)) == (size > 1 << 20), (name, size)
    assert f"{biggest} cannot fit" in report["stages"][0]["meaning"]
    assert "nothing was allocated" in report["stages"][0]["meaning"]
    rows = {r["name"]: r for r in report["stages"][0]["detail"]["buffers"]}
    assert rows["webgpu buffer params"]["bytes"] == 4 * model.Layout(p).total
    assert "short by" in out


def test_limit_fault_is_enforced_by_load_before_allocating(gpu, B, monkeypatch):
    p = presets.load("tiny")
    be = engine(B)(fault="limit=256KiB")
    be.gpu = gpu
    lim = be.limits()
    assert lim["max-storage-buffer-binding-size"] == lim["max-buffer-size"] == 256 << 10
    assert lim["adapter_limits"]["max-storage-buffer-binding-size"] > 256 << 10 and lim["cap_bytes"] == 256 << 10

    def no_buffer(*a, **k):
        raise AssertionError("load must refuse before allocating")

    monkeypatch.setattr(gpu, "buffer", no_buffer)
    # tiny's logits (BT x V floats, 512 KiB) are furthest over; then the parameter-sized buffers
    # and the MLP activations
    with pytest.raises(UserError, match=r"webgpu buffer top.logits needs 524,288 bytes, .* above the adapter "
                                        r"max-storage-buffer-binding-size \(.*capped by fault 'limit=256KiB'\) "
                                        r"262,144; also webgpu buffer params, webgpu buffer grads, .*"
                                        r"webgpu buffer layer0.f, webgpu buffer layer0.g, .*webgpu buffer scratch.dg;"):
        be.load(p, model.Layout(p).init(0))
    assert be.memory_bytes() is None


def test_malformed_fault_kind_is_refused_naming_the_kinds():
    """A limit without a size, with one that is not a size or too small, a shader with a value
    (another engine's kind and a kind nobody takes: test_contract.py)."""
    for bad in ("limit", "limit=lots", "limit=8", "shader=1"):
        with pytest.raises(UserError, match="shader, nan-grad or limit=BYTES"):
            webgpu.WebGPUBackend(fault=bad)


# ---- plan() and load() agree: one size computation ---------------------------------------
@pytest.mark.parametrize("fault", [None, "nan-grad"])
def test_plan_names_the_uniforms_the_fault_dispatch_and_each_limit(gpu, B, fault):
    """plan()'s rows against what load() built (their sum is load's memory_bytes(): test_contract.py)."""
    p = presets.load("small")
    rows = engine(B).plan(p, fault=fault)
    be = engine(B)(fault=fault)
    be.gpu = gpu
    try:
        be.load(p, model.Layout(p).init(0))
        assert f"webgpu uniforms ({len(be.program.dispatches)} dispatches x 256 B)" in {r["name"] for r in rows}
        assert any(d.name.startswith("fault.nan-grad") for d in be.program.dispatches) == (fault == "nan-grad")
        for r in rows:
            assert r["limit"] == min(gpu.limits["max-buffer-size"], gpu.limits["max-storage-buffer-binding-size"]
                                     if "buffer " in r["name"] else gpu.limits["max-buffer-size"])
    finally:
        be.close()


# ---- a failing preset in a curve run, then one that succeeds -----------------------------
def test_shader_fault_in_a_curve_run_is_recorded_and_the_next_preset_runs(gpu, B, tmp_path, monkeypatch):
    import pandas as pd

    from tinygpt_bench import cli

    monkeypatch.setenv(FAULT, f"{B}:shader@tiny")
    with pytest.raises(SystemExit) as ex:
        cli.main(["curve", "--presets", "tiny,small", "--backends", B, "--steps", "3", "--repeats", "1",
                  "--out", str(tmp_path), "--plain", "--no-chart"])
    assert ex.value.code == 1  # something failed
    df = pd.read_csv(tmp_path / "measurements.csv")
    assert list(df.preset) == ["tiny", "small"]
    assert list(df.status) == ["failed", "ok"]
    assert df.stage[0] == "load"
    assert "kernel gelu.wgsl does not compile" in df.error[0]
    assert "INV_SQRT_TWO" in df.error[0]
    assert np.isfinite(df.median_ms[1]) and df.median_ms[1] > 0


# ---- where Dawn finds no adapter ---------------------------------------------------------------

def test_no_dawn_adapter_is_one_line_for_run_and_a_failed_row_at_create_for_curve(tmp_path):
    """A Vulkan loader with no driver (VK_DRIVER_FILES naming no file): `run` ends with one line
    saying Dawn found no adapter and what to install, exit 2; `curve` records a failed row at
    stage create and measures the next backend. Fresh processes: the tests' own Dawn instance
    has long found lavapipe."""
    import os
    import subprocess
    import sys

    import pandas as pd

    env = {**os.environ, "VK_DRIVER_FILES": str(tmp_path / "no-such-driver.json"), "TINYGPT_BENCH_FAULT": ""}
    tb = [sys.executable, "-m", "tinygpt_bench"]
    r = subprocess.run([*tb, "run", "tiny", "--backend", "webgpu-dawn", "--steps", "2", "--plain"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr + r.stdout, r.stderr
    assert "no WebGPU adapter found by dawn" in lines[0] and "fix: a Vulkan driver Dawn accepts" in lines[0]
    out = tmp_path / "curve"
    r = subprocess.run([*tb, "curve", "--presets", "tiny", "--backends", "webgpu-dawn,reference", "--steps", "2",
                        "--repeats", "1", "--out", str(out), "--plain", "--no-chart"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr + r.stdout, r.stderr
    df = pd.read_csv(out / "measurements.csv")
    assert list(df.backend) == ["webgpu-dawn", "reference"] and list(df.status) == ["failed", "ok"]
    assert df.stage[0] == "create" and "no WebGPU adapter found by dawn" in df.error[0]


def test_timeout_stops_a_dawn_measurement_and_the_run_goes_on(gpu, B, tmp_path, run_cli, monkeypatch):
    """--timeout on webgpu-dawn as on every backend: the worker is stopped at the budget, the row
    says timeout, the next measurement runs (the mechanism is the protocol's; test_curve.py
    checks it on the reference; here it is Dawn's worker that must stop)."""
    import pandas as pd

    if B != "webgpu-dawn":
        pytest.skip("the protocol's timeout on wgpu-native's worker is the same code as test_curve's")
    monkeypatch.setenv(FAULT, f"{B}:slow@tiny")  # every step sleeps 1 s more inside the timed region
    code, out, _ = run_cli("curve", "--presets", "tiny", "--backends", f"{B},reference", "--steps", "60",
                           "--repeats", "1", "--timeout", "25", "--out", str(tmp_path), "--plain", "--no-chart")
    assert code == 1
    df = pd.read_csv(tmp_path / "measurements.csv")
    assert list(df.backend) == [B, "reference"] and list(df.status) == ["timeout", "ok"]
    assert "worker stopped" in df.error[0]
