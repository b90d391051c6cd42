"""The wasm engine under `diagnose` and the failure semantics of issue 6: injected
faults caught at the right stage with the error verbatim, the --max-memory preflight
that allocates nothing, observable memory growth (with threads running), limits().

Kept fast (tiny/small presets): the whole file runs in well under 30 s here.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from tinygpt_bench import diagnose, model, presets
from tinygpt_bench.errors import UserError

wasm = pytest.importorskip("tinygpt_bench.engines.wasm.backend")

FAULT = "TINYGPT_BENCH_FAULT"


def _batch(p, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (p.batch, p.ctx + 1), dtype=np.int32)


# ---- injected faults, each caught at its stage -------------------------------------------
def test_trap_fails_the_step_stage_with_the_trap_text(tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT, "wasm:trap@tiny")
    d = diagnose.run(presets.load("tiny"), "wasm", {"threads": 2})
    assert d.harness_stages() == ["preflight", "create", "load", "step"]
    step = d.stages[-1]
    assert not step.ok and all(s.ok for s in d.stages[:-1])
    assert "stage step: wasm trapped: wasm trap: wasm `unreachable` instruction executed" in step.error
    assert "fault 'trap' was injected" in step.error
    assert "trapped" in step.meaning
    md, js = diagnose.write_report(d, tmp_path)
    assert step.error in md.read_text()  # verbatim in the report
    report = json.loads(js.read_text())
    assert report["ok"] is False and report["stages"][-1]["error"] == step.error


def test_trap_in_a_curve_run_is_recorded_and_the_next_preset_runs(tmp_path, monkeypatch):
    from tinygpt_bench import cli

    monkeypatch.setenv(FAULT, "wasm:trap@tiny")
    with pytest.raises(SystemExit) as ex:
        cli.main(["curve", "--presets", "tiny,small", "--backends", "wasm", "--steps", "3", "--repeats", "1",
                  "--out", str(tmp_path), "--plain", "--no-chart"])
    assert ex.value.code == 1  # something failed
    df = pd.read_csv(tmp_path / "measurements.csv")
    assert list(df.preset) == ["tiny", "small"]
    assert list(df.status) == ["failed", "ok"]
    assert df.stage[0] == "step 1"
    assert "wasm trap: wasm `unreachable` instruction executed" in df.error[0]
    assert "preset tiny" in df.error[0]


# ---- the memory max: predicted before anything is allocated, enforced by the allocator ----

def test_max_memory_shortfall_is_named_in_preflight_without_allocating(tmp_path, run_cli, monkeypatch):
    def no_start(self):
        raise AssertionError("preflight must not start the engine")

    monkeypatch.setattr(wasm.WasmRuntime, "start", no_start)  # nothing started, nothing allocated
    code, out, _ = run_cli("diagnose", "behemoth", "--backend", "wasm", "--max-memory", "4GiB", "--threads", "2",
                           "--out", str(tmp_path))
    assert code == 1
    report = json.loads((tmp_path / "diagnose-behemoth-wasm.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["preflight"]
    err = report["stages"][0]["error"]
    assert "wasm linear memory in all (preset behemoth, 2 threads)" in err
    assert "> wasm memory max (--max-memory) 4.00 GiB (4,294,967,296 bytes), short by" in err
    rows = {r["name"]: r for r in report["stages"][0]["detail"]["buffers"]}
    assert rows["wasm: weights"]["bytes"] == 4 * model.Layout(presets.load("behemoth")).total
    assert "short by" in out


@pytest.mark.parametrize("threads", [1, 3])  # 2 threads: test_contract.py, for wasm and wasm-v8
@pytest.mark.parametrize("name", ["tiny", "small"])
def test_plan_is_what_the_allocator_takes(name, threads):
    """plan()'s total is the heap top after load, to the byte (one arithmetic for both)."""
    p = presets.load(name)
    total = wasm.WasmBackend.plan(p, threads=threads)[-1]["bytes"]
    with wasm.WasmBackend(threads=threads) as b:
        b.load(p, model.Layout(p).init(0))
        assert b.runtime.call("heap_top") == total
        assert b.memory_bytes() >= total


def test_load_refuses_past_max_memory_and_allocator_refuses_growth():
    p = presets.load("small")
    need = wasm.WasmBackend.plan(p, threads=2)[-1]["bytes"]
    cap = need - (1 << 20)
    with wasm.WasmBackend(threads=2, max_memory=cap) as b:
        with pytest.raises(wasm.WasmError, match=r"preset small: stage preflight: the model needs \d+ bytes .* "
                                                 r"raise --max-memory"):
            b.load(p, model.Layout(p).init(0))
        before = b.memory_bytes()
        assert b.runtime.call("alloc", cap) == 0  # the module's allocator refuses to grow past the cap
        assert b.memory_bytes() == before <= cap
        assert b.runtime.call("last_request") == cap
    # a cap below even the worker stacks: the start stage says what it asked and what was left
    with pytest.raises(wasm.WasmError, match=r"preset small: stage start: stack of worker 1 of 1: asked for "
                                             r"1048576 bytes, \d+ bytes available .*--max-memory"):
        wasm.WasmBackend(threads=2, max_memory=2 << 20).load(p, model.Layout(p).init(0))
    with pytest.raises(UserError, match="at most the memory max"):
        wasm.WasmBackend(initial_memory=8 << 20, max_memory=4 << 20)
    with pytest.raises(UserError, match="16 GiB"):
        wasm.WasmBackend(max_memory=32 << 30)


# ---- memory growth, observable, and safe with threads running --------------------------
def test_growth_with_threads_running_is_logged_and_bit_identical():
    """Decision 12's bug class: memory growing while worker threads run must not change a
    thing. From a 1 MiB start the model's memory grows with a worker parked inside wasm,
    then again inside a parallel region; results equal those of a run that never grew."""
    p = presets.load("small")
    flat = model.Layout(p).init(0)
    batches = [_batch(p, s) for s in (1, 2)]
    with wasm.WasmBackend(threads=2, initial_memory=64 << 20) as roomy:
        roomy.load(p, flat)
        assert not [e for e in roomy.events() if e["stage"] == "load"]  # never grew for the model
        want = [roomy.step(b) for b in batches], roomy.parameters()
    with wasm.WasmBackend(threads=2, initial_memory=1 << 20) as b:
        b.load(p, flat)
        ev = b.events()
        load = [e for e in ev if e["stage"] == "load"]
        assert load and all(e["worker_threads_running"] == 1 and e["threads"] == 2 for e in load)
        assert all(e["to_bytes"] > e["from_bytes"] for e in ev)
        assert all(a["to_bytes"] == c["from_bytes"] for a, c in zip(ev, ev[1:]))  # one chain, nothing missed
        assert ev[-1]["to_bytes"] == b.memory_bytes()
        assert "with 1 worker thread of 1 running" in str(load[0])
        got = [b.step(x) for x in batches]
        assert got == want[0] and np.array_equal(b.parameters(), want[1])
        # growth from inside a parallel region, every thread touching the new memory at once
        assert b.growth_probe()["ok"]
        last = b.events()[-1]
        assert last["in_parallel_region"] and last["stage"] == "growth probe" and last["to_bytes"] == b.memory_bytes()
        assert math.isfinite(b.step(batches[0]))
    assert b.events()[-1] == last  # still answers after close


def test_diagnose_small_from_1mib_with_threads_passes_and_reports_growth(tmp_path):
    d = diagnose.run(presets.load("small"), "wasm", {"threads": 2, "initial_memory": 1 << 20})
    assert d.ok, [(s.name, s.error) for s in d.stages if not s.ok]
    assert d.harness_stages() == ["preflight", "create", "load", "step", "scan", "timed", "parity",
                                          "kernels"]
    load = next(s for s in d.stages if s.name == "load")
    assert any(e["stage"] == "load" and e["worker_threads_running"] == 1 for e in load.detail["events"])
    kernels = next(s for s in d.stages if s.name == "kernels").detail["kernels"]
    assert {"matmul_fwd", "matmul_dx", "matmul_dw", "attention", "adamw"} <= set(kernels)
    md = diagnose.write_report(d, tmp_path)[0].read_text()
    assert "## memory events" in md and "load: memory grew" in md and "## per-kernel time of one step" in md


def test_limits_say_memory_threads_and_features():
    b = wasm.WasmBackend(threads=3, initial_memory=1 << 20, max_memory=1 << 30)
    lim = b.limits()  # before load: nothing started
    assert lim["memory_max_bytes"] == 1 << 30 and lim["module_memory_max_bytes"] == 16 << 30
    assert lim["initial_memory_bytes"] == 2 << 20 and lim["initial_memory_requested_bytes"] == 1 << 20
    assert lim["threads"] == 3 and "memory64" in lim["features"]
    assert not b.runtime.started
    assert b.describe()["memory_max_bytes"] == 1 << 30
