"""The WASM Memory64 engine's own tests (issue 3): bit-identity across thread counts and matmul
tiles, relaxed SIMD, memory growth, traps, the Memory64 ceiling.

Parity with the float64 reference (tinygpt_bench/engines/reference/backend.py, the project's one
oracle), faults, plan() and diagnose are the contract suite's, for every engine:
tests/test_contract.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tinygpt_bench import model, presets
from tinygpt_bench.errors import UserError

wasm = pytest.importorskip("tinygpt_bench.engines.wasm.backend")


def batches_for(p, n, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(p.batch, p.ctx + 1), dtype=np.int32) for _ in range(n)]


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30))


# ---- tests ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine():
    """One backend (2 threads) shared by the tests: starting workers costs a little."""
    b = wasm.WasmBackend(threads=2)
    yield b
    b.close()


def run_steps(threads, p, flat, batches, relaxed=False, spectre_guards=False, matmul_kernel="shuffle"):
    with wasm.WasmBackend(threads=threads, relaxed_simd=relaxed, spectre_guards=spectre_guards,
                          matmul_kernel=matmul_kernel) as b:
        b.load(p, flat)
        losses = [b.step(x) for x in batches]
        return losses, b.parameters(), b.gradients()


def test_bit_identical_runs_and_thread_counts():
    """Same thread count: bit-identical run to run. The kernels split work so that no
    result depends on the thread count either; check 1, 2, 3, 4 and 6 threads (4 and 6 split
    the weight-gradient products over a 2-D grid of threads), and with the Spectre guards
    compiled in (code generation only; the arithmetic is the same)."""
    p = presets.load("small")
    flat = model.Layout(p).init(3)
    batches = batches_for(p, 3, seed=4)
    first = run_steps(2, p, flat, batches)
    for threads, guards in ((2, False), (1, False), (3, False), (4, False), (6, False), (2, True)):
        again = run_steps(threads, p, flat, batches, spectre_guards=guards)
        assert again[0] == first[0], threads
        assert np.array_equal(again[1], first[1]) and np.array_equal(again[2], first[2]), threads


@pytest.mark.parametrize("name,relaxed", [("tiny", False), ("small", False), ("tiny", True)])
def test_matmul_kernel_variants_bit_identical(name, relaxed):
    """The splat-load and pre-broadcast 4x8 tiles do the same multiply and add per element in the same k
    order as the shuffle tile: losses, parameters and gradients bit-identical (plain and FMA)."""
    p = presets.load(name)
    flat = model.Layout(p).init(5)
    batches = batches_for(p, 3, seed=6)
    shuffle = run_steps(2, p, flat, batches, relaxed=relaxed)
    assert not np.array_equal(shuffle[1], flat)  # the steps did move the weights
    for kernel in ("splat", "bcast"):
        other = run_steps(2, p, flat, batches, relaxed=relaxed, matmul_kernel=kernel)
        assert other[0] == shuffle[0], kernel
        assert np.array_equal(other[1], shuffle[1]) and np.array_equal(other[2], shuffle[2]), kernel


@pytest.mark.parametrize("trans_a", [0, 1])
def test_matmul_kernel_variants_ragged_shapes(trans_a):
    """M not a multiple of 4 and above every variant's MC, K above KC: the three tile forms
    agree to the bit, plain and FMA, and match numpy."""
    M, N, K = 263, 40, 300
    rng = np.random.default_rng(7)
    a, bm = rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((K, N)).astype(np.float32)
    with wasm.WasmBackend(threads=2) as b:
        b.runtime.start()
        A, B, C = b.runtime.put(a.T if trans_a else a), b.runtime.put(bm), b.runtime.call("alloc", 4 * M * N)
        for fma in (0, 1):
            b.runtime.call("model_set_fma", fma)
            outs = []
            for kind in range(len(wasm.MATMUL_KERNELS)):
                assert b.runtime.call("model_set_matmul_kernel", kind) == 0
                b.runtime.call("bench_matmul", C, A, B, M, N, K, trans_a, 1)
                outs.append(b.runtime.f32(C, M * N).copy())
            for o in outs[1:]:
                assert np.array_equal(o, outs[0]), fma
            assert rel(outs[0], (a.astype(np.float64) @ bm).ravel()) < 1e-5
        assert b.runtime.call("model_set_matmul_kernel", 3) == -1


def test_matmul_kernel_setting_shown_and_checked():
    with wasm.WasmBackend(threads=1, matmul_kernel="splat") as b:
        d = b.describe()
        assert d["matmul_kernel"] == "splat" and "matmul_kernel=splat" in d["runtime_settings"]
        assert b.limits()["matmul_kernel"] == "splat"
    assert "matmul_kernel=shuffle" in wasm.WasmBackend(threads=1).describe()["runtime_settings"]
    with pytest.raises(UserError, match="matmul_kernel 'vbroadcast'"):
        wasm.WasmBackend(threads=1, matmul_kernel="vbroadcast")


def test_relaxed_simd_build_within_tolerance():
    p = presets.load("tiny")
    flat = model.Layout(p).init(0)
    batches = batches_for(p, 2)
    plain = run_steps(2, p, flat, batches)
    relaxed = run_steps(2, p, flat, batches, relaxed=True)
    assert abs(relaxed[0][-1] - plain[0][-1]) / plain[0][-1] < 1e-5
    assert rel(relaxed[2], plain[2]) < 1e-4


def test_memory_grows_from_small_start_with_threads_running():
    p = presets.load("small")
    flat = model.Layout(p).init(0)
    (batch,) = batches_for(p, 1)
    with wasm.WasmBackend(threads=2, initial_memory=1 << 20) as b:
        b.runtime.start()  # workers parked in wasm before any growth
        start = b.memory_bytes()
        assert start < 4 << 20
        b.load(p, flat)  # the allocator grows memory while the workers are parked
        assert b.grew_from == start and b.grew_to > start + (8 << 20)
        loss = b.step(batch)
        assert abs(loss - math.log(256)) < 0.1
        # growth from inside a parallel region, then every thread touches the new memory: the
        # same assertions on every host (tests/test_wasm_chrome.py)
        g = b.growth_probe()
        assert g["ok"] and g["to_bytes"] == g["from_bytes"] + 16 * 65536 == b.memory_bytes()
        assert g["views"][0] == "new" and set(g["views"].values()) <= {"new", "old"}
        assert b.step(batch) < loss + 0.1  # the model still trains after the growth


def test_second_load_reuses_memory_and_a_width_not_a_multiple_of_8_is_named(engine):
    p = presets.load("tiny")
    flat = model.Layout(p).init(0)
    engine.load(p, flat)
    used = engine.memory_bytes()
    engine.load(p, flat)
    assert engine.memory_bytes() == used
    bad = presets.Preset(name="odd", layers=1, d_model=36, heads=3, ctx=8, batch=2)
    with pytest.raises(Exception, match="multiple of 8"):
        engine.load(bad, model.Layout(bad).init(0))


@pytest.mark.parametrize("tid", [0, 1])
def test_trap_in_a_region_raises_clearly_and_does_not_hang(tid):
    """A trap on the calling thread (0) or a worker (1): one clear error, workers shut
    down, and a new backend works afterwards in the same process."""
    b = wasm.WasmBackend(threads=2)
    b.runtime.start()
    with pytest.raises(wasm.WasmError, match="stage selftest: wasm trapped"):
        b.guarded_call("selftest", "trap_in_region", tid)
    assert not b.runtime.worker_threads  # joined
    b.close()  # safe twice
    p = presets.load("tiny")
    with wasm.WasmBackend(threads=2) as again:
        again.load(p, model.Layout(p).init(0))
        assert math.isfinite(again.step(batches_for(p, 1)[0]))


def test_preset_past_the_memory64_maximum_is_refused_up_front(engine):
    big = presets.Preset(name="too-big", layers=100, d_model=1280, heads=20, ctx=64, batch=1)
    with pytest.raises(wasm.WasmError, match=r"too-big: stage preflight: the model needs \d+ bytes"):
        engine.load(big, np.zeros(model.Layout(big).total, np.float32))  # calloc: never touched


def test_shipped_module_rebuilds_identically():
    """wasm/build.py --check: the committed tinygpt.wasm is what the sources build to."""
    pytest.importorskip("ziglang")
    import subprocess
    import sys
    from pathlib import Path

    build = Path(__file__).resolve().parent.parent / "wasm" / "build.py"
    r = subprocess.run([sys.executable, str(build), "--check"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_variant_build_is_built_elsewhere_and_trains_the_same(tmp_path):
    """wasm/build.py --define NAME=VALUE --out DIR: a variant of a guarded tunable (the pool's
    spin count) for an A/B, never over the shipped module; it differs from the shipped bytes
    and trains the same bits (the spin decides when a worker sleeps, not what it computes)."""
    pytest.importorskip("ziglang")
    import subprocess
    import sys
    from pathlib import Path

    from tinygpt_bench import protocol
    from tinygpt_bench.engines.wasm import backend as wasm_backend

    root = Path(__file__).resolve().parent.parent
    build = [sys.executable, str(root / "wasm" / "build.py")]
    r = subprocess.run([*build, "--define", "SPIN_ITERS=0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--out" in r.stderr  # no variant over wasm/
    r = subprocess.run([*build, "--define", "SPIN_ITERS=0", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    variant, shipped = tmp_path / "tinygpt.wasm", root / "wasm" / "tinygpt.wasm"
    assert variant.read_bytes() != shipped.read_bytes()
    p = presets.load("tiny")
    work = protocol.Work(p, model.Layout(p).init(0), protocol.random_batches(p, 3, np.random.default_rng(0)), seed=0)
    losses = []
    for path in (shipped, variant):
        with wasm_backend.WasmBackend(threads=2, module_path=str(path)) as be:
            losses.append([st.loss for st in protocol.train(be, work)])
    assert losses[0] == losses[1] and len(losses[0]) == 3


@pytest.mark.slow
def test_behemoth_one_step_past_4_gib():
    """The Memory64 ceiling break: about 8 GiB of wasm memory, one step, finite loss at
    the initial model's expected value. Needs about 10 GB of free RAM."""
    import importlib.util
    from pathlib import Path

    try:
        avail = int(next(line for line in open("/proc/meminfo") if line.startswith("MemAvailable")).split()[1]) << 10
    except (OSError, StopIteration):
        avail = 0
    if avail < 12 << 30:
        pytest.skip(f"needs about 12 GB of free RAM, {avail >> 20} MiB available")
    path = Path(__file__).resolve().parent.parent / "dev" / "behemoth.py"
    spec = importlib.util.spec_from_file_location("behemoth", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.run("behemoth")
    assert r["memory_after_load_bytes"] > 4 << 30
    assert math.isfinite(r["loss"]) and abs(r["loss"] - mod.expected_loss(r["d_model"])) < 0.1
    assert r["params_finite"] and r["params_changed"]


def test_module_that_fails_to_compile_names_preset_and_stage(tmp_path):
    bad = tmp_path / "broken.wasm"
    bad.write_bytes(b"\0asm\x01\0\0\0garbage")
    p = presets.load("tiny")
    with pytest.raises(wasm.WasmError, match=r"preset tiny: stage compile: .*broken.wasm"):
        wasm.WasmBackend(threads=2, module_path=str(bad)).load(p, model.Layout(p).init(0))


def test_nan_in_the_weights_reaches_the_loss(engine):
    """Clamps and max-reductions inside the kernels must not hide a NaN (diagnose scans
    for them): a NaN in one query weight makes the loss NaN."""
    p = presets.load("tiny")
    flat = model.Layout(p).init(0)
    flat[model.Layout(p).by_name["wq"].offset + 5] = np.nan
    engine.load(p, flat)
    assert math.isnan(engine.step(batches_for(p, 1)[0]))


def test_fma_default_follows_the_cpu():
    """relaxed-SIMD FMA by default on Intel CPUs with FMA (measured faster there), never on
    AMD or without the flag; the backend records the choice."""
    intel = "vendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx fma avx2\n"
    assert wasm.fma_by_default(intel)
    assert not wasm.fma_by_default(intel.replace(" fma", ""))
    assert not wasm.fma_by_default("vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx fma avx2\n")
    assert not wasm.fma_by_default("")
    assert wasm.WasmBackend(threads=1).relaxed_simd == wasm.fma_by_default()
    assert wasm.WasmBackend(threads=1, relaxed_simd=False).relaxed_simd is False


def test_the_runtime_module_imports_nothing_of_the_model():
    """runtime.py imports nothing of the model, its presets or the backend contract, however
    spelled (`import x.model`, `from tinygpt_bench import model`, relative): the import graph of
    test_layers. (v8.py holds the V8 backend beside V8Runtime, so only runtime.py is held to it.)"""
    from test_layers import import_graph

    imported = set(import_graph()["engines.wasm.runtime"])
    assert imported and not imported & {"model", "presets", "engines.base", "engines.wasm.backend"}, imported


@pytest.mark.parametrize("host", ["wasmtime", "v8"])
def test_the_runtime_alone_knows_nothing_of_the_model(host):
    """WasmRuntime (and v8.py's V8Runtime) run the module without a trainer: start the pool,
    put and read memory, call an export on every thread, log the growth, close."""
    from tinygpt_bench.engines.wasm import runtime
    from tinygpt_bench.resources import resource_dir

    module = str(resource_dir("wasm") / "tinygpt.wasm")
    if host == "v8":
        v8 = pytest.importorskip("tinygpt_bench.engines.wasm.v8")
        rt = v8.V8Runtime(module, threads=2)
    else:
        rt = runtime.WasmRuntime(module, threads=2)
    try:
        rt.start()
        assert rt.started and rt.heap_mark > 0
        x = np.arange(1000, dtype=np.float32)
        addr = rt.put(x)
        assert np.array_equal(np.asarray(rt.f32(addr, x.size).copy()), x)
        assert rt.call("bench_peak", 10) != 0  # every thread runs its chains
        pages = rt.memory_bytes() // runtime.PAGE
        assert rt.call("grow_in_region", 4) == pages + 4  # grown while the workers run a region
        assert any(e["in_parallel_region"] for e in rt.events())
    finally:
        rt.close()
    assert not rt.started and rt.events()  # the growth log answers after close
