"""The wasm engine's runtime: a wasm64 module in wasmtime over one shared 64-bit memory, with a
pool of worker threads parked inside the module. Nothing here knows the model: it compiles and
instantiates the module, owns its shared memory, starts and stops the workers, calls exports,
reads and writes the memory (view/f32/i32/put), and logs the memory's growth. The trainer
(backend.py) runs the model on top of it; v8.py gives the same runtime in V8 (Node).

The module's runtime exports used here (wasm/src): alloc, heap_top, heap_reset, memory_set_limit,
last_request, pool_abort_addr, pool_started, pool_set_threads, pool_stop, worker_loop and the
growth log (grow_log_count, grow_log_cap, grow_log_addr).

Facts this relies on (docs/wasm-engine.md): wasmtime-py 50 cannot pass a SharedMemory as an
import (issue 318; `_SharedMemory._as_extern` below fixes it); growth of a shared memory past
4 GiB needs `Config.memory_reservation` of the full maximum.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time

import numpy as np

from tinygpt_bench.errors import UserError
from tinygpt_bench.units import fmt_bytes

PAGE = 65536
MAX_MEMORY = 16 << 30  # bytes; the module declares the same maximum
WORKER_STACK = 1 << 20  # bytes of stack for each worker thread
# mirror of the module's per-thread scratch (wasm/src/base.h THREAD_SCRATCH_FLOATS); the trainer checks it
THREAD_SCRATCH_BYTES = (256 * 256 + 256 * 64) * 4
MAX_MEMORY_NAME = "wasm memory max (--max-memory)"


class WasmError(RuntimeError):
    """A failure of the wasm engine, naming the preset, the stage and the bytes involved."""


def _wasmtime():
    try:
        import wasmtime
    except ImportError:  # pragma: no cover - wasmtime is a dependency
        raise UserError("the wasm backend needs wasmtime: pip install wasmtime==50.0.1") from None
    return wasmtime


def _shared_memory_class(wt):
    from wasmtime import _ffi as ffi

    class _SharedMemory(wt.SharedMemory):
        """wasmtime-py issue 318: the extern union wants the pointer itself, not a pointer to it."""

        def _as_extern(self):
            union = ffi.wasmtime_extern_union(sharedmemory=self.ptr())
            return ffi.wasmtime_extern_t(ffi.WASMTIME_EXTERN_SHAREDMEMORY, union)

    return _SharedMemory


def thread_count(threads: int | None) -> int:
    """The threads a step takes part in: `threads`, or all usable cores; 1..64."""
    n = int(threads or len(os.sched_getaffinity(0)) or 1)
    if not 1 <= n <= 64:
        raise UserError(f"wasm backend: threads must be 1..64, got {threads}")
    return n


def memory_max(max_memory: int | None) -> int:
    if max_memory is None:
        return MAX_MEMORY
    if not PAGE <= int(max_memory) <= MAX_MEMORY:
        raise UserError(f"wasm backend: --max-memory {max_memory} bytes must be between 64 KiB and {MAX_MEMORY} "
                        f"bytes (16 GiB, the module's declared maximum)")
    return int(max_memory)


class GrowthEvent(dict):
    """One growth of the wasm memory (a dict; str() is a sentence for reports)."""

    def __str__(self) -> str:
        w, n = self["worker_threads_running"], self["threads"] - 1
        who = f"with {w} worker thread{'s' * (w != 1)} of {n} running" if n else "with no worker threads (1 thread)"
        return (f"{self['stage']}: memory grew {fmt_bytes(self['from_bytes'])} -> {fmt_bytes(self['to_bytes'])} "
                f"({self['from_bytes']} -> {self['to_bytes']} bytes) {who}"
                f"{' inside a parallel region' if self['in_parallel_region'] else ''}")


def trap_text(e: BaseException) -> str:
    """wasmtime's trap message without the backtrace: 'wasm trap: ... (wasm function N at 0x...)'."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    msg = "; ".join(lines[lines.index("Caused by:") + 1:]) if "Caused by:" in lines else lines[0]
    frame = next((ln for ln in lines if ln.startswith("0:")), None)
    if frame:
        msg += f" (innermost frame {frame[2:].strip()})"
    return msg


def align64(n: int) -> int:
    """n rounded up to 64 bytes: the module allocator's block alignment."""
    return (int(n) + 63) & ~63


def _leb(b: bytes, i: int, signed: bool = False) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = b[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if signed and byte & 0x40:
                result -= 1 << shift
            return result, i


_FACTS: dict = {}


def module_facts(path: str) -> dict:
    """Read, without compiling, what the module declares: its imported memory's minimum
    and maximum (bytes) and __heap_base (static data + the main stack end there)."""
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    if key in _FACTS:
        return _FACTS[key]
    b = open(path, "rb").read()
    if b[:8] != b"\0asm\x01\0\0\0":
        raise WasmError(f"wasm backend: stage compile: {path} is not a wasm module")
    i, mem, imported_globals, globals_, exports = 8, None, 0, [], {}
    try:
        while i < len(b):
            sid = b[i]
            size, i = _leb(b, i + 1)
            end = i + size
            if sid == 2:  # imports
                count, i = _leb(b, i)
                for _ in range(count):
                    names = []
                    for _ in range(2):
                        n, i = _leb(b, i)
                        names.append(b[i:i + n].decode())
                        i += n
                    kind = b[i]
                    i += 1
                    if kind == 0:
                        _, i = _leb(b, i)
                    elif kind in (1, 2):  # table (reftype first) or memory: limits
                        i += kind == 1
                        flags = b[i]
                        lo, i = _leb(b, i + 1)
                        hi = None
                        if flags & 1:
                            hi, i = _leb(b, i)
                        if kind == 2 and names == ["env", "memory"]:
                            mem = (lo * PAGE, None if hi is None else hi * PAGE)
                    elif kind == 3:
                        i += 2
                        imported_globals += 1
                    else:
                        raise ValueError(f"import kind {kind}")
            elif sid == 6:  # globals: keep i32/i64 constant initialisers
                count, i = _leb(b, i)
                for _ in range(count):
                    i += 2
                    op, val = b[i], None
                    i += 1
                    if op in (0x41, 0x42):
                        val, i = _leb(b, i, signed=True)
                    while b[i] != 0x0B:
                        i += 1
                    i += 1
                    globals_.append(val)
            elif sid == 7:  # exports
                count, i = _leb(b, i)
                for _ in range(count):
                    n, i = _leb(b, i)
                    name = b[i:i + n].decode()
                    i += n
                    kind = b[i]
                    idx, i = _leb(b, i + 1)
                    if kind == 3:  # a global
                        exports[name] = idx
            i = end
        heap_base = globals_[exports["__heap_base"] - imported_globals]
    except (IndexError, KeyError, ValueError, UnicodeDecodeError) as e:
        raise WasmError(f"wasm backend: stage compile: {path}: cannot read its memory import or __heap_base ({e})") from None
    if mem is None:
        raise WasmError(f"wasm backend: stage compile: {path} imports no env.memory")
    _FACTS[key] = out = {"memory_min_bytes": mem[0], "memory_max_bytes": mem[1], "heap_base": heap_base}
    return out


class WasmRuntime:
    """The module in wasmtime: `threads` threads (the caller's and threads - 1 parked workers),
    memory from `initial_memory` (default: what the module declares) up to `max_memory`."""

    def __init__(self, module_path: str, threads: int, initial_memory: int | None = None,
                 max_memory: int = MAX_MEMORY, spectre_guards: bool = False):
        self.module_path, self.threads = module_path, threads
        self.initial_memory, self.max_memory, self.spectre_guards = initial_memory, max_memory, spectre_guards
        self.phase = "start"  # the label of growth events read from now on (the trainer sets it)
        self.worker_errors: list[str] = []  # what a worker raised (a trap inside worker_loop)
        self.events_dropped = 0  # growths past the module's log capacity (not in events())
        self.heap_mark: int | None = None  # the heap top after start: what a model's allocations start from
        self.initial_bytes: int | None = None
        # start()'s stages as they ran: {name, ms, figure}; diagnose reports them (WasmBackend.stages)
        self.start_log: list[dict] = []
        self._wt = None
        self._workers: list[threading.Thread] = []
        self._started = False
        self._events: list[dict] = []

    @property
    def started(self) -> bool:
        """Whether the module is instantiated and its workers parked (start() ran, close() not yet)."""
        return self._started

    @property
    def worker_threads(self) -> list[threading.Thread]:
        """The worker threads parked in the module (empty before start() and after close())."""
        return list(self._workers)

    def no_memory(self, stage: str, what: str, asked: int) -> WasmError:
        """The error of an allocation the memory max refuses: what asked, how much, how much is left."""
        top = self.call("heap_top")
        have = self._memory.data_len()
        return WasmError(
            f"wasm backend: stage {stage}: {what}: asked for {asked} bytes, {max(self.max_memory - top, 0)} bytes "
            f"available (memory {have} bytes, heap at {top}, {MAX_MEMORY_NAME} {self.max_memory} bytes); raise "
            f"--max-memory (at most {MAX_MEMORY}) or choose a smaller preset or fewer threads")

    def start(self) -> None:
        """Engine, module, shared memory, the main instance and the parked workers."""
        if self._started:
            return
        self.phase = "start"
        self.start_log = []
        t0 = time.perf_counter()
        wt = self._wt = _wasmtime()
        cfg = wt.Config()
        cfg.wasm_memory64 = True
        cfg.wasm_threads = True
        cfg.shared_memory = True
        cfg.wasm_simd = True
        cfg.wasm_bulk_memory = True
        cfg.wasm_relaxed_simd = True
        cfg.memory_reservation = MAX_MEMORY  # shared memories never move: reserve the max
        if not self.spectre_guards:
            cfg.cranelift_flag_set("enable_heap_access_spectre_mitigation", "false")
        self._engine = wt.Engine(cfg)
        try:
            self._module = wt.Module.from_file(self._engine, self.module_path)
        except Exception as e:
            raise WasmError(f"wasm backend: stage compile: {self.module_path}: {e}") from None
        self.log_stage("compile", t0, f"wasmtime compiled {os.path.basename(self.module_path)}")
        t0 = time.perf_counter()
        imports = {(i.module, i.name): i for i in self._module.imports}
        lim = imports[("env", "memory")].type.limits
        pages = max(lim.min, -(-int(self.initial_memory) // PAGE)) if self.initial_memory else lim.min
        mem_type = wt.MemoryType(wt.Limits(pages, lim.max), is_64=True, shared=True)
        self._memory = _shared_memory_class(wt)(self._engine, mem_type)
        self._store, self._ex = self._instantiate()
        self.initial_bytes = self._memory.data_len()
        self.log_stage("instantiate", t0, f"shared memory of {self.initial_bytes} bytes, the calling thread's instance")
        t0 = time.perf_counter()
        self._events = []
        self._abort_addr = self.call("pool_abort_addr")
        self._started = True
        self.call("memory_set_limit", self.max_memory if self.max_memory < MAX_MEMORY else 0)
        nworkers = self.threads - 1
        self._stacks = []
        for _ in range(nworkers):
            self._stacks.append(self.call("alloc", WORKER_STACK))
            if self._stacks[-1] == 0:
                raise self.no_memory("start", f"stack of worker {len(self._stacks)} of {nworkers}", WORKER_STACK)
        ready = threading.Barrier(nworkers + 1) if nworkers else None
        for tid in range(1, self.threads):
            t = threading.Thread(target=self._worker, args=(tid, ready), name=f"wasm-worker-{tid}", daemon=True)
            t.start()
            self._workers.append(t)
        if ready:
            ready.wait()
        while self.call("pool_started") < nworkers:  # each worker is inside worker_loop
            if self.worker_errors:
                raise WasmError(f"wasm backend: stage start: {self.worker_errors[0]}")
            threading.Event().wait(0.001)
        if self.call("pool_set_threads", self.threads) != 0:
            raise self.no_memory("start", f"matmul scratch for {self.threads} threads", THREAD_SCRATCH_BYTES)
        self.log_stage("workers", t0, f"{nworkers} worker thread(s) parked in worker_loop")
        self.heap_mark = self.call("heap_top")
        self.read_events()

    def log_stage(self, name: str, t0: float | None, figure: str, ms: float | None = None) -> None:
        """One stage of start() done: since t0 (perf_counter) or `ms` as the host measured it."""
        took = ms if ms is not None else (time.perf_counter() - t0) * 1e3
        self.start_log.append({"name": name, "ms": round(took, 3), "figure": figure})

    def _instantiate(self):
        wt = self._wt
        store = wt.Store(self._engine)
        clock = wt.Func(store, wt.FuncType([], [wt.ValType.i64()]), time.perf_counter_ns)
        provided = {("env", "memory"): self._memory, ("env", "clock_ns"): clock}
        try:
            inst = wt.Instance(store, self._module, [provided[(i.module, i.name)] for i in self._module.imports])
        except Exception as e:
            raise WasmError(f"wasm backend: stage instantiate: {e}") from None
        return store, inst.exports(store)

    def _worker(self, tid: int, ready) -> None:
        try:
            store, ex = self._instantiate()
            ex["__stack_pointer"].set_value(store, self._stacks[tid - 1] + WORKER_STACK)
        except Exception as e:
            self.worker_errors.append(f"worker {tid}: {e}")
            ready.wait()
            return
        ready.wait()
        try:
            ex["worker_loop"](store, tid)
        except Exception as e:  # a trap in a worker: make the caller trap instead of hang
            self.worker_errors.append(f"worker {tid}: {trap_text(e)}")
            self.i32(self._abort_addr, 1)[0] = 1

    def call(self, name: str, *args):
        return self._ex[name](self._store, *args)

    def view(self, addr: int, count: int, ctype) -> np.ndarray:
        size = ctypes.sizeof(ctype)
        if addr + count * size > self._memory.data_len():
            raise WasmError(f"wasm backend: address {addr}+{count * size} past memory end {self._memory.data_len()}")
        base = ctypes.cast(self._memory.data_ptr(), ctypes.c_void_p).value
        return np.ctypeslib.as_array((ctype * count).from_address(base + addr))

    def f32(self, addr: int, count: int) -> np.ndarray:
        return self.view(addr, count, ctypes.c_float)

    def i32(self, addr: int, count: int) -> np.ndarray:
        return self.view(addr, count, ctypes.c_int32)

    def put(self, values: np.ndarray) -> int:
        """A new float32 buffer in the module's heap holding `values` (for benchmarks and tests
        of single kernels); its address."""
        addr = self.call("alloc", 4 * values.size)
        self.f32(addr, values.size)[:] = np.ravel(values)
        return addr

    def memory_bytes(self) -> int:
        """Current size of the shared memory in bytes."""
        return self._memory.data_len() if self._started else 0

    def events(self) -> list[GrowthEvent]:
        """Each growth of the memory so far: from and to (bytes), the worker threads inside
        worker_loop at the time, whether a parallel region was running, and the phase."""
        if self._started:
            self.read_events()
        return [GrowthEvent(e) for e in self._events]

    def read_events(self) -> None:
        """Collect the growths of the memory logged since the last read, labelled with `phase`."""
        n = self.call("grow_log_count")
        kept = min(n, self.call("grow_log_cap"))
        if kept > len(self._events):
            log = self.view(self.call("grow_log_addr"), 4 * kept, ctypes.c_uint64).reshape(kept, 4)
            for frm, to, workers, in_region in log[len(self._events):].tolist():
                self._events.append({"from_bytes": frm, "to_bytes": to, "worker_threads_running": workers,
                                     "threads": self.threads, "in_parallel_region": bool(in_region),
                                     "stage": self.phase})
        if n > kept:
            self.events_dropped = n - kept  # growths past the log's capacity (not in events())

    def close(self) -> None:
        """Stop the workers and free the module and its memory; events() still answers after."""
        if not self._started:
            return
        try:
            self.read_events()
        except Exception:  # pragma: no cover - the memory is still there; never block close
            pass
        self._started = False
        try:
            self.call("pool_stop")
        finally:
            for t in self._workers:
                t.join(timeout=10)
            self._workers = []
            self._ex = self._store = self._memory = self._module = self._engine = None
