"""curve's harness: the fork server its workers start from imports only what is safe to fork
(no thread, no device), and what it prepares for the WebGPU engine covers a training step."""

import json
import os
import subprocess
import sys

import pytest

from tinygpt_bench import engines, runner

FRESH_ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # numpy's BLAS pool aside (it handles fork itself)


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=FRESH_ENV, timeout=600)


def test_the_fork_server_imports_leave_one_thread():
    """Everything the server may import for any backend (engines, their libraries, the type
    parsing of wgpu_preload) starts no thread: a worker forked from it is a whole process."""
    modules = ["tinygpt_bench.cli", "tinygpt_bench.curve", "tinygpt_bench.runner.worker"]
    modules += [m for n in engines.names() for m in runner.worker.worker_imports(n) if m != "torch"]
    code = ("import importlib, os\n"
            f"for m in {modules!r}:\n"
            "    try: importlib.import_module(m)\n"
            "    except ImportError:\n"
            "        if not m.startswith('torch'): raise\n"  # torch is the one library CI lacks
            "print(len(os.listdir('/proc/self/task')))")
    r = _fresh(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == "1"


def test_wgpu_preload_covers_what_a_webgpu_step_parses():
    """After wgpu_preload, describe, load, two steps, memory_bytes and close of the WebGPU engine
    parse no C type: a worker forked from the server spends nothing on cffi's parser."""
    code = """
import json
from tinygpt_bench.engines.webgpu import wgpu_preload
from tinygpt_bench import corpus, presets, protocol
from wgpu.backends.wgpu_native import ffi
before = set(ffi._parsed_types)
p = presets.load("tiny")
try:
    be = protocol.create_backend("webgpu", p)
    be.describe()
except Exception as e:
    print(json.dumps({"skip": f"{type(e).__name__}: {e}"}))
    raise SystemExit(0)
protocol.train(be, protocol.prepare(p, corpus.load("synthetic"), 2, 0))
be.memory_bytes()
be.close()
print(json.dumps({"missed": wgpu_preload.MISSED, "new": sorted(k for k in set(ffi._parsed_types) - before)}))
"""
    r = _fresh(code)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    if "skip" in out:
        required = os.environ.get("TINYGPT_BENCH_REQUIRE_WEBGPU", "").split(",")
        assert "wgpu-native" not in required, out["skip"]
        pytest.skip(f"no usable wgpu-native adapter: {out['skip']}")
    assert out["missed"] == [], "wgpu_preload.STEP_TYPES names types this wgpu-py does not declare"
    assert out["new"] == [], "add these to wgpu_preload.STEP_TYPES"
