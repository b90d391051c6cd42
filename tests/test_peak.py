"""`tinygpt-bench peak`: every measurement checked against numpy before it is timed, one
versioned row each in peaks.csv; here on lavapipe and wasm at 2 threads (--quick)."""

import math

import numpy as np
import pandas as pd
import pytest

from tinygpt_bench import kernelcheck, peak, results
from tinygpt_bench.engines.torch import peak as torch_peak
from tinygpt_bench.engines.wasm import peak as wasm_peak
from tinygpt_bench.engines.webgpu import peak as webgpu_peak
from tinygpt_bench.errors import UserError


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from tinygpt_bench import cli

    out = tmp_path_factory.mktemp("peak")
    try:
        cli.main(["peak", "--out", str(out), "--threads", "2", "--quick"])
        code = 0
    except SystemExit as e:
        code = e.code
    return code, out


def test_quick_peak_writes_every_row(quick_run):
    code, out = quick_run
    assert code == 0
    df = results.read_peaks(out)
    assert set(df.format_version) == {results.FORMAT_VERSION}
    assert list(df.columns) == results.PEAK_COLUMNS
    ok = df[df.status == "ok"]
    wasm_peaks = ok[(ok.engine == "wasm") & (ok.kind == "peak")]
    assert sorted(zip(wasm_peaks.what, wasm_peaks.threads)) == [
        ("simd128_mul_add", 1), ("simd128_mul_add", 2), ("simd128_relaxed_fma", 1), ("simd128_relaxed_fma", 2)]
    mm = ok[(ok.engine == "wasm") & (ok.kind == "matmul")]
    assert sorted(set(mm["size"])) == sorted(f"{m}x{n}x{k}" for _, m, n, k, _ in wasm_peak.XL_SHAPES)
    assert set(mm.what) == {"matmul simd128", "matmul relaxed-fma"} and set(mm.threads) == {2}
    for name in ("webgpu", "webgpu-dawn"):  # each implementation's rows, under its backend's name
        gpu = ok[ok.engine == name]
        assert "fp32_fma" in set(gpu.what)
        assert sorted(gpu[gpu.what == "matmul"]["size"]) == ["128x128x128", "256x256x256"]
        assert (gpu[gpu.what == "matmul check"]["size"] == "64x64x64").all()
        best = gpu[gpu.what == "matmul best kernel"]
        assert list(best["size"]) == ["256x256x256"] and "matmul.wgsl:matmul_" in best.note.iloc[0]
        assert all(v in best.note.iloc[0] for v in ("shared", "big_pf", "big_db", "vec4"))  # every kernel was timed
    for _, r in df.iterrows():
        assert r.status in ("ok", "skipped"), (r.engine, r.what, r.note)
        if r.status == "ok":
            assert r.gflop_per_s > 0 and r.seconds > 0 and r.flops > 0
            assert math.isclose(r.gflop_per_s, r.flops / r.seconds / 1e9, rel_tol=1e-3)
            assert r.max_rel_err <= kernelcheck.CHECK_TOLERANCE * 10
            assert r.cpu_model and pd.notna(r.git_commit)
    torch_rows = df[df.engine.str.startswith("torch")]
    assert set(torch_rows.engine) == {"torch-cpu", "torch-cuda"}
    for _, r in torch_rows.iterrows():  # measured, or skipped with the reason
        assert r.status == "ok" or (r.status == "skipped" and r.note)


def test_wasm_peak_value_is_its_recurrence():
    from tinygpt_bench.engines.wasm.backend import WasmBackend

    with WasmBackend(threads=1) as b:
        b.runtime.start()
        assert b.runtime.call("bench_peak", 500) == pytest.approx(wasm_peak.wasm_peak_expected(500, False), rel=1e-6)
        assert b.runtime.call("bench_peak_fma", 500) == pytest.approx(wasm_peak.wasm_peak_expected(500, True), rel=1e-5)


def test_a_kernel_that_fails_its_check_is_not_timed(tmp_path, monkeypatch):
    monkeypatch.setattr(webgpu_peak, "webgpu_peak_expected", lambda n, iters: np.full(n, 1e6))
    monkeypatch.setattr(wasm_peak, "wasm_peak", lambda *a, **k: (_ for _ in ()).throw(kernelcheck.CheckFailed("wasm: off")))
    monkeypatch.setattr(wasm_peak, "wasm_matmul", lambda *a, **k: [])
    monkeypatch.setattr(torch_peak, "torch_matmul", lambda *a, **k: {"status": "skipped", "note": "not here"})
    monkeypatch.setattr(webgpu_peak, "webgpu_matmul", lambda *a, **k: {"status": "skipped", "note": "not here"})
    rows = peak.measure(tmp_path, threads=2, quick=True)
    fma = next(r for r in rows if r["what"] == "fp32_fma")
    assert fma["status"] == "failed" and "differs from numpy" in fma["note"] and fma["gflop_per_s"] is None
    assert {r["status"] for r in rows if r["engine"] == "wasm"} == {"failed"}
    df = results.read_peaks(tmp_path)
    assert df[df.what == "fp32_fma"].gflop_per_s.isna().all()


def test_read_peaks_refuses_other_versions(tmp_path):
    pd.DataFrame([{c: "" for c in results.PEAK_COLUMNS} | {"format_version": 99}]).to_csv(tmp_path / results.PEAKS,
                                                                                    index=False)
    with pytest.raises(UserError, match="format version '99'"):
        results.read_peaks(tmp_path)
    with pytest.raises(UserError, match="tinygpt-bench peak --out"):
        results.read_peaks(tmp_path / "nowhere")


def test_webgpu_peak_without_timestamp_queries_uses_host_time():
    from tinygpt_bench.engines.webgpu.runtime import Gpu

    gpu = Gpu(timestamps=False)
    r = webgpu_peak.webgpu_peak(gpu, seconds=0.002, repeats=1)
    assert r["gflop_per_s"] > 0 and r["max_rel_err"] <= 1e-3 and "host time" in r["note"]
    with pytest.raises(UserError, match="timestamp-query"):
        webgpu_peak.webgpu_matmul(gpu, 64, 1)


def test_no_adapter_skips_the_webgpu_rows_and_measures_the_rest(tmp_path, monkeypatch):
    from tinygpt_bench.engines.webgpu import runtime as wgpu_runtime

    def no_adapter(*a, **k):
        raise UserError("no WebGPU adapter found; fix: apt-get install mesa-vulkan-drivers")

    monkeypatch.setattr(wgpu_runtime, "Gpu", no_adapter)
    monkeypatch.setattr(wasm_peak, "wasm_matmul", lambda *a, **k: [])
    monkeypatch.setattr(torch_peak, "torch_matmul", lambda *a, **k: {"status": "skipped", "note": "not here"})
    rows = peak.measure(tmp_path, threads=1, quick=True)
    for name in ("webgpu", "webgpu-dawn"):
        gpu = [r for r in rows if r["engine"] == name]
        assert len(gpu) == 1 and gpu[0]["status"] == "skipped" and "mesa-vulkan-drivers" in gpu[0]["note"]
    wasm_peaks = [r for r in rows if r["engine"] == "wasm" and r["kind"] == "peak"]
    assert len(wasm_peaks) == 2 and all(r["status"] == "ok" for r in wasm_peaks), wasm_peaks  # simd128, relaxed
