"""The WASM Memory64 engine: the C kernels of wasm/src compiled to wasm64, run by wasmtime.

One module (wasm/tinygpt.wasm; its matmul comes in a plain SIMD128 and a relaxed-SIMD
FMA version, each with a shuffle, splat-load or pre-broadcast 4x8 tile, picked at load) over one shared 64-bit memory of up to 16 GiB. The calling thread and N - 1 worker threads each
own a wasmtime Store and Instance of the module; workers park inside wasm
(`worker_loop`) on atomic wait/notify between parallel regions, each on its own stack
taken from the module's heap. A training step is ONE call into wasm: `train_step(lr)`.

For `tinygpt-bench diagnose` (issue 6) it offers plan() (the wasm memory a preset will
take, from the module file's header and the allocator's arithmetic, nothing compiled),
limits(), events() (each memory growth: from, to, worker threads running), memory_bytes()
and profile() (ms a step per kernel); max_memory caps growth inside the module's
allocator; fault='trap' / 'nan-grad' inject failures from inside wasm (faults.py).

Facts this relies on (docs/wasm-engine.md): wasmtime-py 50 cannot pass a SharedMemory
as an import (issue 318; `_SharedMemory._as_extern` below fixes it); growth of a shared
memory past 4 GiB needs `Config.memory_reservation` of the full maximum.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import threading
import time
from pathlib import Path

import numpy as np

from tinygpt_bench import model as model_mod
from tinygpt_bench.engines.base import DEFAULT_LR, OPTIM, Backend
from tinygpt_bench.envinfo import collect_cpu
from tinygpt_bench.errors import UserError
from tinygpt_bench.presets import Preset
from tinygpt_bench.resources import resource_dir
from tinygpt_bench.units import fmt_bytes

PAGE = 65536
# profile tags of the module, in the order of its enum (wasm/src/base.h)
PROFILE_TAGS = ("other", "embedding", "layernorm", "matmul_fwd", "attention", "gelu", "transpose", "crossentropy",
                "zero_grad", "matmul_dx", "matmul_dw", "layernorm_bwd", "gelu_bwd", "attention_bwd",
                "embedding_bwd", "grad_norm", "adamw")
MAX_MEMORY = 16 << 30  # bytes; the module declares the same maximum
WORKER_STACK = 1 << 20  # bytes of stack for each worker thread
# mirrors of the module's size constants (wasm/src); load() checks the module agrees
THREAD_SCRATCH_BYTES = (256 * 256 + 256 * 64) * 4  # base.h THREAD_SCRATCH_FLOATS
ATTN_KEY_BLOCK = 8  # attention.c KB
NORM_CHUNK = 16384  # kernels.c NORM_CHUNK
MATMUL_KERNELS = ("shuffle", "splat", "bcast")  # the 4x8 tile's A broadcast (matmul.c); model_set_matmul_kernel
FAULTS = {"trap": 1, "nan-grad": 2}  # model.c model_set_fault; faults.py's kinds for this engine
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


def _max_memory(max_memory: int | None) -> int:
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


def _trap_text(e: BaseException) -> str:
    """wasmtime's trap message without the backtrace: 'wasm trap: ... (wasm function N at 0x...)'."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    msg = "; ".join(lines[lines.index("Caused by:") + 1:]) if "Caused by:" in lines else lines[0]
    frame = next((ln for ln in lines if ln.startswith("0:")), None)
    if frame:
        msg += f" (innermost frame {frame[2:].strip()})"
    return msg


def _a64(n: int) -> int:
    return (int(n) + 63) & ~63


def model_buffers(preset: Preset, threads: int) -> list[tuple[str, int]]:
    """(name, bytes) of what model_init takes from the module's allocator, in its order
    (model.c plan(): every block rounded up to 64 bytes). The same arithmetic serves
    plan() (no module needed) and load(), which checks it against the module's own
    count (model_bytes) so the two cannot drift apart unnoticed."""
    L, C, H, T, B = preset.layers, preset.d_model, preset.heads, preset.ctx, preset.batch
    N, V = B * T, 256
    n = model_mod.Layout(preset).total

    def f(count):
        return _a64(count * 4)

    # ln1 q k v att res1 ln2 res2 (L, N, C); ln1/ln2 mean and rstd (L, N); lse (L, N, H);
    # fch fchg (L, N, 4C); x0 lnf (N, C); lnf mean and rstd, losses (N); logits (N, V)
    acts = (8 * f(L * N * C) + 4 * f(L * N) + f(L * N * H) + 2 * f(L * N * 4 * C) + 2 * f(N * C) + 3 * f(N)
            + f(N * V))
    hd = C // H
    attn = 2 * (-(-T // ATTN_KEY_BLOCK) * ATTN_KEY_BLOCK) * hd
    return [
        ("weights", f(n)),
        ("gradients", f(n)),
        ("Adam m", f(n)),
        ("Adam v", f(n)),
        ("token batch", _a64(B * (T + 1) * 4)),
        ("activations (saved for backward)", acts),
        ("backward buffers", 6 * f(N * C) + f(N * 4 * C)),
        ("gradient-norm scratch", _a64(-(-n // NORM_CHUNK) * 8)),
        (f"attention scratch ({threads} x {fmt_bytes(f(attn))})", threads * f(attn)),
    ]


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


def fma_by_default(cpuinfo: str | None = None) -> bool:
    """Whether the matmul uses relaxed-SIMD FMA unless told: on Intel CPUs with FMA, where the
    4x8 tile's multiply-then-add is bound by its ports (GPU host's Xeon, 16 threads, xl: 483
    ms/step with FMA vs 595 without); not on AMD, where the mul+add tile was faster (2-core
    EPYC, 2 threads, xl: 718 vs 787 ms) (docs/wasm-engine.md). Decided by the CPU alone, so a
    machine always gets the same choice and the same results."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    vendor = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("vendor_id")), "")
    flags = next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")), [])
    return vendor == "GenuineIntel" and "fma" in flags


class WasmBackend(Backend):
    name = "wasm"
    capabilities = frozenset({"plan", "limits", "events", "profile", "memory_bytes"})

    def __init__(self, threads: int | None = None, relaxed_simd: bool | None = None, initial_memory: int | None = None,
                 max_memory: int | None = None, module_path: str | None = None, spectre_guards: bool = False,
                 fault: str | None = None, matmul_kernel: str = "shuffle"):
        """threads: threads taking part in each step (default: all cores).
        relaxed_simd: use the matmul built with relaxed-SIMD FMA (results differ from the
        plain SIMD128 one by rounding only). None (default): where it was measured faster,
        fma_by_default() (Intel CPUs with FMA). initial_memory: bytes of shared memory at
        start (default and floor: what the module declares, 2 MiB); the allocator grows it
        on demand. max_memory: bytes the memory may grow to (default and ceiling: the
        module's declared 16 GiB); the module's allocator refuses growth past it.
        module_path: another build of the module (tests, comparisons).
        spectre_guards: cranelift's Spectre guard (a cmov) on every bounds-checked memory
        access: wasmtime's default, which protects a host from an untrusted module. Off by
        default here: the module is this project's own code, the case V8's documentation
        calls "likely unaffected" (v8.dev/docs/untrusted-code-mitigations). Off, the matmul
        ran about 11% faster on the 2-core EPYC and xl 8.7%; results are bit-identical
        either way (tested); runtime_settings records the choice (docs/wasm-engine.md).
        fault: inject a failure (tinygpt_bench/faults.py): 'trap' executes `unreachable`
        inside train_step after the forward pass; 'nan-grad' writes a NaN into the
        gradient after backward, before the clip.
        matmul_kernel: how the matmul's 4x8 tile broadcasts A values: 'shuffle' (one v128
        load of 4 rows, lanes broadcast by i32x4.shuffle; the default), 'splat' (one
        v128.load32_splat per row) or 'bcast' (A packed already broadcast, 4 plain v128
        loads a k, no shuffles). Same arithmetic in the same order: results are
        bit-identical; only speed differs (x86 shuffle port vs load ports)."""
        self.threads = thread_count(threads)
        self.relaxed_simd = fma_by_default() if relaxed_simd is None else bool(relaxed_simd)
        if matmul_kernel not in MATMUL_KERNELS:
            raise UserError(f"wasm backend: matmul_kernel '{matmul_kernel}' is not one of {', '.join(MATMUL_KERNELS)}")
        self.matmul_kernel = matmul_kernel
        self.spectre_guards = bool(spectre_guards)
        self.max_memory = _max_memory(max_memory)
        if initial_memory is not None and not 0 < int(initial_memory) <= self.max_memory:
            raise UserError(f"wasm backend: --initial-memory {initial_memory} bytes must be positive and at most "
                            f"the memory max {self.max_memory} bytes")
        self.initial_memory = None if initial_memory is None else int(initial_memory)
        if fault is not None and fault not in FAULTS:
            raise UserError(f"wasm backend: fault '{fault}' cannot be injected here; it takes "
                            f"{' or '.join(FAULTS)} (TINYGPT_BENCH_FAULT=wasm:KIND[@PRESET])")
        self.fault = fault
        self.module_path = module_path or str(resource_dir("wasm") / "tinygpt.wasm")
        self.preset: Preset | None = None
        self._wt = None
        self._workers: list[threading.Thread] = []
        self._worker_errors: list[str] = []
        self._started = False
        self._layout = None
        self._tokens: np.ndarray | None = None  # view of the module's token buffer (load())
        self._events: list[dict] = []  # growth events read so far, labelled with the stage
        self._phase = "start"
        self.events_dropped = 0
        self.profile_calls: dict[str, int] = {}

    # ---- what the module will need, without compiling or allocating ----------------
    @classmethod
    def plan(cls, preset: Preset, threads: int | None = None, initial_memory: int | None = None,
             max_memory: int | None = None, module_path: str | None = None, **_ignored) -> list[dict]:
        """Rows {name, bytes, limit, limit_name} of the wasm linear memory this preset will
        take (the module's static data and main stack, worker stacks, per-thread scratch,
        weights, gradients, Adam moments, activations, ...), and the total against the
        memory max. Reads the module file's header only: nothing is compiled or allocated.
        The sizes are the allocator's own arithmetic (model_buffers; load() checks the
        module agrees)."""
        threads, max_memory = thread_count(threads), _max_memory(max_memory)
        path = module_path or str(resource_dir("wasm") / "tinygpt.wasm")
        facts = module_facts(path)
        rows = [("module static data + main stack (__heap_base)", _a64(facts["heap_base"])),
                (f"worker stacks ({threads - 1} x {fmt_bytes(WORKER_STACK)})", (threads - 1) * _a64(WORKER_STACK)),
                (f"per-thread matmul scratch ({threads} x {fmt_bytes(THREAD_SCRATCH_BYTES)})",
                 threads * _a64(THREAD_SCRATCH_BYTES))]
        rows += model_buffers(preset, threads)
        out = [{"name": f"wasm: {n}", "bytes": int(b), "limit": None, "limit_name": MAX_MEMORY_NAME} for n, b in rows]
        total = sum(b for _, b in rows)
        out.append({"name": f"wasm linear memory in all (preset {preset.name}, {threads} threads)", "bytes": total,
                    "limit": max_memory, "limit_name": MAX_MEMORY_NAME})
        if initial_memory is not None:
            out.append({"name": "wasm initial memory (--initial-memory)", "bytes": int(initial_memory),
                        "limit": max_memory, "limit_name": MAX_MEMORY_NAME})
        return out

    def limits(self) -> dict:
        """What bounds this engine: memory max and initial size, threads, features."""
        facts = module_facts(self.module_path)
        initial = max(facts["memory_min_bytes"], -(-self.initial_memory // PAGE) * PAGE) if self.initial_memory \
            else facts["memory_min_bytes"]
        return {
            "memory_max_bytes": self.max_memory,
            "module_memory_max_bytes": facts["memory_max_bytes"],
            "initial_memory_bytes": initial,
            "initial_memory_requested_bytes": self.initial_memory,
            "module_static_bytes": facts["heap_base"],
            "threads": self.threads,
            "worker_stack_bytes": WORKER_STACK,
            "thread_scratch_bytes": THREAD_SCRATCH_BYTES,
            "features": ["memory64", "threads (shared memory, atomics)", "simd128", "relaxed-simd", "bulk-memory"],
            "relaxed_simd_matmul": self.relaxed_simd,
            "matmul_kernel": self.matmul_kernel,
            "spectre_guards": self.spectre_guards,
            "max_head_dim": 128,
            "fault": self.fault,
        }

    def events(self) -> list[dict]:
        """Each growth of the wasm memory so far: from and to (bytes), the worker threads
        inside worker_loop at the time, whether a parallel region was running, and the
        stage (start: worker stacks and scratch; load: the model; step: later)."""
        if self._started:
            self._read_events()
        return [GrowthEvent(e) for e in self._events]

    def _read_events(self) -> None:
        n = self.call("grow_log_count")
        kept = min(n, self.call("grow_log_cap"))
        if kept > len(self._events):
            log = self.view(self.call("grow_log_addr"), 4 * kept, ctypes.c_uint64).reshape(kept, 4)
            for frm, to, workers, in_region in log[len(self._events):].tolist():
                self._events.append({"from_bytes": frm, "to_bytes": to, "worker_threads_running": workers,
                                     "threads": self.threads, "in_parallel_region": bool(in_region),
                                     "stage": self._phase})
        if n > kept:
            self.events_dropped = n - kept  # growths past the log's capacity (not in events())

    # ---- runtime: the module, its shared memory, the instances and the worker pool ----------
    # start/call/view/f32/i32/put are the runtime's public API: kernel benchmarks (peak, dev/)
    # and tests call exports and read and write the module's memory through them.
    @property
    def started(self) -> bool:
        """Whether the module is instantiated and its workers parked (start() ran, close() not yet)."""
        return self._started

    @property
    def worker_threads(self) -> list[threading.Thread]:
        """The worker threads parked in the module (empty before start() and after close())."""
        return list(self._workers)

    def _no_memory(self, stage: str, what: str, asked: int) -> WasmError:
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
        self._phase = "start"
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
        imports = {(i.module, i.name): i for i in self._module.imports}
        lim = imports[("env", "memory")].type.limits
        pages = max(lim.min, -(-int(self.initial_memory) // PAGE)) if self.initial_memory else lim.min
        mem_type = wt.MemoryType(wt.Limits(pages, lim.max), is_64=True, shared=True)
        self._memory = _shared_memory_class(wt)(self._engine, mem_type)
        self._store, self._ex = self._instantiate()
        self.initial_bytes = self._memory.data_len()
        self._events = []
        self._abort_addr = self.call("pool_abort_addr")
        self._started = True
        self.call("memory_set_limit", self.max_memory if self.max_memory < MAX_MEMORY else 0)
        nworkers = self.threads - 1
        self._stacks = []
        for _ in range(nworkers):
            self._stacks.append(self.call("alloc", WORKER_STACK))
            if self._stacks[-1] == 0:
                raise self._no_memory("start", f"stack of worker {len(self._stacks)} of {nworkers}", WORKER_STACK)
        ready = threading.Barrier(nworkers + 1) if nworkers else None
        for tid in range(1, self.threads):
            t = threading.Thread(target=self._worker, args=(tid, ready), name=f"wasm-worker-{tid}", daemon=True)
            t.start()
            self._workers.append(t)
        if ready:
            ready.wait()
        while self.call("pool_started") < nworkers:  # each worker is inside worker_loop
            if self._worker_errors:
                raise WasmError(f"wasm backend: stage start: {self._worker_errors[0]}")
            threading.Event().wait(0.001)
        if self.call("pool_set_threads", self.threads) != 0:
            raise self._no_memory("start", f"matmul scratch for {self.threads} threads", THREAD_SCRATCH_BYTES)
        self._heap_mark = self.call("heap_top")
        self._read_events()

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
            self._worker_errors.append(f"worker {tid}: {e}")
            ready.wait()
            return
        ready.wait()
        try:
            ex["worker_loop"](store, tid)
        except Exception as e:  # a trap in a worker: make the caller trap instead of hang
            self._worker_errors.append(f"worker {tid}: {e}")
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

    # ---- the contract ----------------------------------------------------------------
    def describe(self) -> dict:
        import importlib.metadata as md

        try:
            version = md.version("wasmtime")
        except md.PackageNotFoundError:  # pragma: no cover
            version = "?"
        return {
            "backend": self.name,
            "runtime": f"wasmtime-py {version}",
            "adapter_type": "CPU",
            "module": os.path.basename(self.module_path),
            "threads": self.threads,
            "simd128": True,
            "relaxed_simd": self.relaxed_simd,
            "matmul_kernel": self.matmul_kernel,
            "spectre_guards": self.spectre_guards,
            "memory64": True,
            "memory_max_bytes": self.max_memory,
            "memory_bytes": self.memory_bytes(),
            # the stamps every result row carries (backends/base.py)
            "device": collect_cpu()["cpu_model"],
            "device_type": "CPU",
            "runtime_settings": f"threads={self.threads} simd128 relaxed_simd={'on' if self.relaxed_simd else 'off'} "
                                f"matmul_kernel={self.matmul_kernel} "
                                f"spectre_guards={'on' if self.spectre_guards else 'off'} memory64 max={self.max_memory}",
            "module_sha256": hashlib.sha256(open(self.module_path, "rb").read()).hexdigest(),
        }

    def load(self, preset: Preset, params: np.ndarray) -> None:
        try:
            self.start()
        except WasmError as e:
            self.close()  # workers already started must not stay parked
            raise WasmError(str(e).replace("wasm backend: ", f"wasm backend: preset {preset.name}: ", 1)) from None
        layout = model_mod.Layout(preset)
        params = np.asarray(params)
        if params.shape != (layout.total,):
            raise UserError(f"wasm backend: preset {preset.name} needs {layout.total} parameters, got {params.shape}")
        self._phase = "load"
        self.call("heap_reset", self._heap_mark)  # a second load reuses the memory
        self.preset = None
        p = preset
        need = sum(b for _, b in model_buffers(p, self.threads))
        counted = self.call("model_bytes", p.layers, p.d_model, p.heads, p.ctx, p.batch)
        if counted != need:
            raise WasmError(f"wasm backend: preset {p.name}: the module's allocation plan takes {counted} bytes, "
                            f"model_buffers() (plan(), preflight) says {need}: update model_buffers to model.c")
        room = self.max_memory - self._heap_mark
        if need > room:
            raise WasmError(
                f"wasm backend: preset {p.name}: stage preflight: the model needs {need} bytes of wasm memory "
                f"(weights, grads, Adam moments, activations), {room} are available under the {MAX_MEMORY_NAME} of "
                f"{self.max_memory} bytes ({fmt_bytes(self.max_memory)}) after {self._heap_mark} bytes of module "
                f"data, stacks and scratch; " + ("choose a smaller preset" if self.max_memory >= MAX_MEMORY else
                                                 f"raise --max-memory (at most {MAX_MEMORY}) or choose a smaller preset"))
        before = self._memory.data_len()
        rc = self.call("model_init", p.layers, p.d_model, p.heads, p.ctx, p.batch)
        self._read_events()
        if rc == 1:
            raise UserError(
                f"wasm backend: preset {p.name}: d_model {p.d_model} must be a multiple of 8 and head_dim "
                f"{p.d_model // p.heads} a multiple of 8, at most 128; choose other d_model/heads")
        if rc == 2:
            err = self._no_memory("allocation", f"the model needs {need} bytes of wasm memory; memory could not grow "
                                  "for its next block", self.call("last_request"))
            raise WasmError(str(err).replace("wasm backend: ", f"wasm backend: preset {p.name}: ", 1))
        self.grew_from, self.grew_to = before, self._memory.data_len()
        n = self.call("model_nparams")
        if n != layout.total:
            raise WasmError(f"wasm backend: module layout has {n} parameters, model.py {layout.total}")
        for i, spec in enumerate(layout.specs):
            off = self.call("model_param_offset", i)
            if off != spec.offset:
                raise WasmError(f"wasm backend: parameter {spec.name} at {off} in the module, {spec.offset} in model.py")
        self.call("model_set_fma", int(self.relaxed_simd))
        self.call("model_set_matmul_kernel", MATMUL_KERNELS.index(self.matmul_kernel))
        self.call("model_set_optimizer", OPTIM.beta1, OPTIM.beta2, OPTIM.eps, OPTIM.weight_decay, OPTIM.clip)
        self.call("model_set_fault", FAULTS.get(self.fault, 0))
        self.f32(self.call("model_params"), n)[:] = params.astype(np.float32, copy=False)
        # the step's token buffer, viewed once (shared memory never moves; growth only appends)
        self._tokens = self.i32(self.call("model_tokens"), p.batch * (p.ctx + 1))
        self._layout = layout
        self.preset = preset
        self._phase = "step"

    def _need_loaded(self):
        if self.preset is None:
            raise UserError("wasm backend: call load(preset, params) first")

    def _checked_batch(self, batch: np.ndarray) -> np.ndarray:
        """The batch as an array, refused unless it is (batch, ctx + 1) bytes of the loaded preset."""
        self._need_loaded()
        p = self.preset
        batch = np.asarray(batch)
        if batch.shape != (p.batch, p.ctx + 1):
            raise UserError(f"{self.name} backend: batch shape {batch.shape}, preset {p.name} needs "
                            f"{(p.batch, p.ctx + 1)}")
        if batch.min() < 0 or batch.max() > 255:
            raise UserError(f"{self.name} backend: batch values must be bytes 0..255")
        return batch

    def step(self, batch: np.ndarray, lr: float = DEFAULT_LR) -> float:
        batch = self._checked_batch(batch)
        self._tokens[:] = batch.astype(np.int32, copy=False).ravel()
        return float(self.guarded_call("step", "train_step", float(lr)))

    def guarded_call(self, stage: str, name: str, *args):
        """Call an export that runs parallel regions. A trap (in this thread or a worker)
        leaves the pool in an unknown state: shut it down and raise one clear error; the
        process stays usable for the next backend."""
        try:
            return self.call(name, *args)
        except Exception as e:
            why = f"; {self._worker_errors[0]}" if self._worker_errors else ""
            where = f"preset {self.preset.name}: " if self.preset else ""
            injected = (f"; fault '{self.fault}' was injected (TINYGPT_BENCH_FAULT)"
                        if self.fault == "trap" and stage == "step" else "")
            self.close()
            raise WasmError(f"wasm backend: {where}stage {stage}: wasm trapped: {_trap_text(e)}{why}{injected}; "
                            "the backend was closed, load it again") from None

    def parameters(self) -> np.ndarray:
        self._need_loaded()
        return self.f32(self.call("model_params"), self._layout.total).copy()

    def gradients(self) -> np.ndarray:
        """The raw gradient of the last step, before clipping."""
        self._need_loaded()
        return self.f32(self.call("model_grads"), self._layout.total).copy()

    def profile(self, batch: np.ndarray, lr: float = DEFAULT_LR, steps: int = 1) -> dict[str, float]:
        """Run `steps` training steps with per-kernel timing on: {kernel: ms a step}, the
        wall time of each kind of parallel region (a host clock call brackets each).
        profile_calls then holds {kernel: regions a step}."""
        self._need_loaded()
        n = self.call("prof_ntags")
        self.call("prof_reset")
        self.call("prof_enable", 1)
        try:
            for _ in range(steps):
                self.step(batch, lr)
        finally:
            if self._started:
                self.call("prof_enable", 0)
        ns = self.view(self.call("prof_ns_addr"), n, ctypes.c_int64).copy()
        calls = self.view(self.call("prof_calls_addr"), n, ctypes.c_int64).copy()
        self.profile_calls = {PROFILE_TAGS[i]: int(calls[i]) // steps for i in range(n) if calls[i]}
        return {PROFILE_TAGS[i]: float(ns[i]) / 1e6 / steps for i in range(n) if calls[i]}

    def grad_norm(self) -> float:
        """Global norm of the last step's raw gradient (computed in wasm)."""
        return float(self.call("model_grad_norm"))

    def close(self) -> None:
        if not self._started:
            return
        try:
            self._read_events()  # events() still answers after close
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
            self.preset = self._tokens = None
