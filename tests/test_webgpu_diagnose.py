"""The webgpu engine under `diagnose` and the failure semantics of issue 6: each injected
fault (faults.py: shader, nan-grad, limit=BYTES) caught at its stage with the error
verbatim in the report, the adapter-limit preflight that creates no device, a failing
preset in a `curve` run followed by one that succeeds, and `diagnose small` passing every
stage with its per-kernel table.

Skips (with the fix) where no WebGPU adapter exists. About 25 s on lavapipe here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("wgpu", reason="wgpu not installed; fix: pip install wgpu==0.32.0")

from tinygpt_bench import diagnose, model, presets, protocol  # noqa: E402
from tinygpt_bench.backends import webgpu, wgpu_runtime  # noqa: E402
from tinygpt_bench.errors import UserError  # noqa: E402

FAULT = "TINYGPT_BENCH_FAULT"


@pytest.fixture(scope="module")
def gpu():
    try:
        return wgpu_runtime.Gpu()
    except Exception as e:  # UserError (none found), or a driver/loader failing to start
        pytest.skip(f"no usable WebGPU adapter ({type(e).__name__}: {e}); fix: apt-get install mesa-vulkan-drivers")


# ---- injected faults, each caught at its stage -------------------------------------------
def test_shader_fault_fails_load_naming_the_kernel_with_the_validation_text(gpu, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT, "webgpu:shader@tiny")
    d = diagnose.run(presets.load("tiny"), "webgpu", {})
    assert [s.name for s in d.stages] == ["preflight", "create", "load"]
    load = d.stages[-1]
    assert not load.ok and all(s.ok for s in d.stages[:-1])
    # the device's own validation text, verbatim: compile the same broken source here
    family, needle, typo = webgpu.SHADER_FAULT
    with pytest.raises(Exception) as device_error:
        gpu.device.create_shader_module(code=gpu.source(family).replace(needle, typo, 1), label=family)
    verbatim = str(device_error.value).rstrip()
    assert "no definition in scope for identifier: `INV_SQRT_TWO`" in verbatim
    assert load.error.startswith("WebGPUError: kernel gelu.wgsl does not compile: ")
    assert verbatim in load.error and "fault 'shader' was injected" in load.error
    assert "WGSL kernel" in load.meaning
    md, js = diagnose.write_report(d, tmp_path)
    assert load.error in md.read_text()
    report = json.loads(js.read_text())
    assert report["ok"] is False and report["stages"][-1]["error"] == load.error


def test_failed_load_releases_its_buffers_and_the_device_stays_usable(gpu):
    p = presets.load("tiny")
    w = model.Layout(p).init(0)
    be = webgpu.WebGPUBackend(fault="shader")
    be.gpu = gpu
    with pytest.raises(wgpu_runtime.WebGPUError, match=r"kernel gelu\.wgsl does not compile: Validation Error"):
        be.load(p, w)
    assert be.bufs == {} and be.memory_bytes() is None and be.readback is None
    ok = webgpu.WebGPUBackend()
    ok.gpu = gpu  # the same device goes on working
    try:
        ok.load(p, w)
        assert np.isfinite(ok.step(np.random.default_rng(1).integers(0, 256, (p.batch, p.ctx + 1), dtype=np.int32)))
    finally:
        ok.close()


def test_nan_grad_fault_fails_the_scan_naming_the_gradient(gpu, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT, "webgpu:nan-grad@tiny")
    p = presets.load("tiny")
    d = diagnose.run(p, "webgpu", {})
    assert [s.name for s in d.stages] == ["preflight", "create", "load", "step", "scan"]
    scan = d.stages[-1]
    assert not scan.ok and d.stages[-2].ok  # the step itself passed: loss finite
    assert "1 non-finite gradient" in scan.error
    lay = model.Layout(p)  # the NaN sits at the gradient's middle element (a poison_grad dispatch)
    mid = lay.total // 2
    assert next(s.name for s in lay.specs if s.offset <= mid < s.offset + s.size) in scan.error
    md, _ = diagnose.write_report(d, tmp_path)
    assert scan.error in md.read_text()


def test_limit_fault_is_named_in_preflight_before_any_device_exists(gpu, tmp_path, run_cli, monkeypatch):
    p = presets.load("small")
    need = {r["name"]: r["bytes"] for r in webgpu.WebGPUBackend.plan(p)}
    assert max(need.values()) > 1 << 20  # small's largest buffer is above the cap

    def no_device(*a, **k):
        raise AssertionError("preflight must not create a device")

    monkeypatch.setattr(wgpu_runtime.Gpu, "__init__", no_device)
    monkeypatch.setattr(webgpu.WebGPUBackend, "_allocate", no_device)
    monkeypatch.setenv(FAULT, "webgpu:limit=1MiB@small")
    code, out, _ = run_cli("diagnose", "small", "--backend", "webgpu", "--out", str(tmp_path))
    assert code == 1
    report = json.loads((tmp_path / "diagnose-small-webgpu.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["preflight"]
    err = report["stages"][0]["error"]
    device = gpu.adapter.info["device"]
    limit = (f"adapter max-storage-buffer-binding-size ({device}, capped by fault 'limit=1MiB') "
             f"1.00 MiB (1,048,576 bytes)")
    biggest = max(need, key=need.get)
    assert biggest == "webgpu buffer layer0"
    assert f"webgpu buffer layer0: 6.03 MiB ({need[biggest]:,} bytes) > {limit}, short by" in err
    for name, size in need.items():  # every buffer over the cap is named, and only those
        assert (name in err) == (size > 1 << 20), (name, size)
    assert "webgpu buffer layer0 cannot fit" in report["stages"][0]["meaning"]
    assert "nothing was allocated" in report["stages"][0]["meaning"]
    rows = {r["name"]: r for r in report["stages"][0]["detail"]["buffers"]}
    assert rows["webgpu buffer params"]["bytes"] == 4 * model.Layout(p).total
    assert "short by" in out


def test_limit_fault_is_enforced_by_load_before_allocating(gpu, monkeypatch):
    p = presets.load("tiny")
    be = webgpu.WebGPUBackend(fault="limit=512KiB")
    be.gpu = gpu
    lim = be.limits()
    assert lim["max-storage-buffer-binding-size"] == lim["max-buffer-size"] == 512 << 10
    assert lim["adapter_limits"]["max-storage-buffer-binding-size"] > 512 << 10 and lim["cap_bytes"] == 512 << 10

    def no_buffer(*a, **k):
        raise AssertionError("load must refuse before allocating")

    monkeypatch.setattr(gpu, "buffer", no_buffer)
    with pytest.raises(UserError, match=r"webgpu buffer layer0 needs 1,587,200 bytes, .* above the adapter "
                                        r"max-storage-buffer-binding-size \(.*capped by fault 'limit=512KiB'\) "
                                        r"524,288; also webgpu buffer layer1, webgpu buffer top"):
        be.load(p, model.Layout(p).init(0))
    assert be.memory_bytes() is None


def test_unknown_fault_kind_is_refused_naming_the_kinds(monkeypatch):
    for bad in ("trap", "limit", "limit=lots", "limit=8", "shader=1"):
        with pytest.raises(UserError, match="shader, nan-grad or limit=BYTES"):
            webgpu.WebGPUBackend(fault=bad)
    monkeypatch.setenv(FAULT, "webgpu:trap@tiny")
    with pytest.raises(UserError, match="fault 'trap' cannot be injected here; it takes shader, nan-grad or limit"):
        protocol.create_backend("webgpu", presets.load("tiny"))


# ---- plan() and load() agree: one size computation ---------------------------------------
@pytest.mark.parametrize("fault", [None, "nan-grad"])
def test_plan_is_what_load_allocates(gpu, fault):
    p = presets.load("small")
    rows = webgpu.WebGPUBackend.plan(p, fault=fault)
    be = webgpu.WebGPUBackend(fault=fault)
    be.gpu = gpu
    try:
        be.load(p, model.Layout(p).init(0))
        assert sum(r["bytes"] for r in rows) == be.memory_bytes()
        assert f"webgpu uniforms ({len(be.program.dispatches)} dispatches x 256 B)" in {r["name"] for r in rows}
        assert any(d.name.startswith("fault.nan-grad") for d in be.program.dispatches) == (fault == "nan-grad")
        for r in rows:
            assert r["limit"] == min(gpu.limits["max-buffer-size"], gpu.limits["max-storage-buffer-binding-size"]
                                     if "buffer " in r["name"] else gpu.limits["max-buffer-size"])
    finally:
        be.close()


# ---- a failing preset in a curve run, then one that succeeds -----------------------------
def test_shader_fault_in_a_curve_run_is_recorded_and_the_next_preset_runs(gpu, tmp_path, monkeypatch):
    import pandas as pd

    from tinygpt_bench import cli

    monkeypatch.setenv(FAULT, "webgpu:shader@tiny")
    with pytest.raises(SystemExit) as ex:
        cli.main(["curve", "--presets", "tiny,small", "--backends", "webgpu", "--steps", "3", "--repeats", "1",
                  "--out", str(tmp_path), "--plain", "--no-chart"])
    assert ex.value.code == 1  # something failed
    df = pd.read_csv(tmp_path / "measurements.csv")
    assert list(df.preset) == ["tiny", "small"]
    assert list(df.status) == ["failed", "ok"]
    assert df.stage[0] == "load"
    assert "kernel gelu.wgsl does not compile" in df.error[0]
    assert "no definition in scope for identifier: `INV_SQRT_TWO`" in df.error[0]
    assert np.isfinite(df.median_ms[1]) and df.median_ms[1] > 0


# ---- the whole walk passes, with the per-kernel table ------------------------------------
def test_diagnose_small_passes_every_stage_with_the_kernel_table(gpu, tmp_path, run_cli):
    code, out, _ = run_cli("diagnose", "small", "--backend", "webgpu", "--out", str(tmp_path))
    assert code == 0, out
    report = json.loads((tmp_path / "diagnose-small-webgpu.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["preflight", "create", "load", "step", "scan", "timed",
                                                     "parity", "kernels"]
    assert report["ok"] and all(s["ok"] for s in report["stages"])
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["create"]["detail"]["limits"]["cap_bytes"] is None
    kernels = stages["kernels"]["detail"]["kernels"]
    assert "adamw" in kernels
    for family in ("attention_forward", "attention_backward_dkv", "attention_backward_dq"):  # row or tiled
        assert any(k.startswith(family) for k in kernels), family
    for part in (" fwd", " dx", " dw"):  # the matmul variant is the adapter's choice (direct on lavapipe)
        assert any(k.startswith("matmul_") and k.endswith(part) for k in kernels), part
    rows = stages["preflight"]["detail"]["buffers"]
    assert sum(r["bytes"] for r in rows if r["name"].startswith("webgpu")) == stages["load"]["detail"]["memory_bytes"]
    md = (tmp_path / "diagnose-small-webgpu.md").read_text()
    dw = next(k for k in kernels if k.startswith("matmul_") and k.endswith(" dw"))
    assert "## per-kernel time of one step" in md and f"| {dw} |" in md
    assert "per-kernel time of one small step on webgpu" in out
