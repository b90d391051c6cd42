"""The WASM Memory64 engine: the C kernels of wasm/src compiled to wasm64, run by wasmtime.

One module (wasm/tinygpt.wasm; its matmul comes in a plain SIMD128 and a relaxed-SIMD
FMA version, picked at load) over one shared 64-bit memory of up to 16 GiB. The calling thread and N - 1 worker threads each
own a wasmtime Store and Instance of the module; workers park inside wasm
(`worker_loop`) on atomic wait/notify between parallel regions, each on its own stack
taken from the module's heap. A training step is ONE call into wasm: `train_step(lr)`.

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

import numpy as np

from tinygpt_bench import model as model_mod
from tinygpt_bench.backends.base import DEFAULT_LR, OPTIM, Backend
from tinygpt_bench.envinfo import collect_cpu
from tinygpt_bench.errors import UserError
from tinygpt_bench.presets import Preset
from tinygpt_bench.resources import resource_dir

PAGE = 65536
# profile tags of the module, in the order of its enum (wasm/src/base.h)
PROFILE_TAGS = ("other", "embedding", "layernorm", "matmul_fwd", "attention", "gelu", "transpose", "crossentropy",
                "zero_grad", "matmul_dx", "matmul_dw", "layernorm_bwd", "bias_bwd", "gelu_bwd", "attention_bwd",
                "embedding_bwd", "grad_norm", "adamw")
MAX_MEMORY = 16 << 30  # bytes; the module declares the same maximum
WORKER_STACK = 1 << 20  # bytes of stack for each worker thread


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


class WasmBackend(Backend):
    name = "wasm"

    def __init__(self, threads: int | None = None, relaxed_simd: bool = False, initial_memory: int | None = None,
                 module_path: str | None = None, spectre_guards: bool = True):
        """threads: threads taking part in each step (default: all cores).
        relaxed_simd: use the matmul built with relaxed-SIMD FMA (results differ from the
        plain SIMD128 one by rounding only). initial_memory: bytes of shared memory at
        start (default: what the module declares); the allocator grows it on demand.
        module_path: another build of the module (tests, comparisons).
        spectre_guards: keep cranelift's Spectre guard on every memory access (wasmtime's
        default). Off, each load's bounds check loses a cmov: the matmul ran about 11%
        faster here, results bit-identical (docs/wasm-engine.md)."""
        self.threads = int(threads or len(os.sched_getaffinity(0)) or 1)
        if not 1 <= self.threads <= 64:
            raise UserError(f"wasm backend: threads must be 1..64, got {threads}")
        self.relaxed_simd = bool(relaxed_simd)
        self.spectre_guards = bool(spectre_guards)
        self.initial_memory = initial_memory
        self.module_path = module_path or str(resource_dir("wasm") / "tinygpt.wasm")
        self.preset: Preset | None = None
        self._wt = None
        self._workers: list[threading.Thread] = []
        self._worker_errors: list[str] = []
        self._started = False
        self._layout = None

    # ---- runtime ---------------------------------------------------------------------
    def _start(self) -> None:
        """Engine, module, shared memory, the main instance and the parked workers."""
        if self._started:
            return
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
        self._abort_addr = self._call("pool_abort_addr")
        self._started = True
        nworkers = self.threads - 1
        self._stacks = [self._call("alloc", WORKER_STACK) for _ in range(nworkers)]
        if any(s == 0 for s in self._stacks):
            raise WasmError(f"wasm backend: stage start: no memory for {nworkers} worker stacks")
        ready = threading.Barrier(nworkers + 1) if nworkers else None
        for tid in range(1, self.threads):
            t = threading.Thread(target=self._worker, args=(tid, ready), name=f"wasm-worker-{tid}", daemon=True)
            t.start()
            self._workers.append(t)
        if ready:
            ready.wait()
        while self._call("pool_started") < nworkers:  # each worker is inside worker_loop
            if self._worker_errors:
                raise WasmError(f"wasm backend: stage start: {self._worker_errors[0]}")
            threading.Event().wait(0.001)
        if self._call("pool_set_threads", self.threads) != 0:
            raise WasmError(f"wasm backend: stage start: no memory for {self.threads} threads' scratch")
        self._heap_mark = self._call("heap_top")

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
            self._i32(self._abort_addr, 1)[0] = 1

    def _call(self, name: str, *args):
        return self._ex[name](self._store, *args)

    def _view(self, addr: int, count: int, ctype) -> np.ndarray:
        size = ctypes.sizeof(ctype)
        if addr + count * size > self._memory.data_len():
            raise WasmError(f"wasm backend: address {addr}+{count * size} past memory end {self._memory.data_len()}")
        base = ctypes.cast(self._memory.data_ptr(), ctypes.c_void_p).value
        return np.ctypeslib.as_array((ctype * count).from_address(base + addr))

    def _f32(self, addr: int, count: int) -> np.ndarray:
        return self._view(addr, count, ctypes.c_float)

    def _i32(self, addr: int, count: int) -> np.ndarray:
        return self._view(addr, count, ctypes.c_int32)

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
            "spectre_guards": self.spectre_guards,
            "memory64": True,
            "memory_max_bytes": MAX_MEMORY,
            "memory_bytes": self.memory_bytes(),
            # the stamps every result row carries (backends/base.py)
            "device": collect_cpu()["cpu_model"],
            "device_type": "CPU",
            "runtime_settings": f"threads={self.threads} simd128 relaxed_simd={'on' if self.relaxed_simd else 'off'} "
                                f"spectre_guards={'on' if self.spectre_guards else 'off'} memory64 max={MAX_MEMORY}",
            "module_sha256": hashlib.sha256(open(self.module_path, "rb").read()).hexdigest(),
        }

    def load(self, preset: Preset, params: np.ndarray) -> None:
        try:
            self._start()
        except WasmError as e:
            self.close()  # workers already started must not stay parked
            raise WasmError(str(e).replace("wasm backend: ", f"wasm backend: preset {preset.name}: ", 1)) from None
        layout = model_mod.Layout(preset)
        params = np.asarray(params)
        if params.shape != (layout.total,):
            raise UserError(f"wasm backend: preset {preset.name} needs {layout.total} parameters, got {params.shape}")
        self._call("heap_reset", self._heap_mark)  # a second load reuses the memory
        self.preset = None
        p = preset
        need = self._call("model_bytes", p.layers, p.d_model, p.heads, p.ctx, p.batch)
        room = MAX_MEMORY - self._heap_mark
        if need > room:
            raise WasmError(
                f"wasm backend: preset {p.name}: stage preflight: the model needs {need} bytes of wasm memory "
                f"(weights, grads, Adam moments, activations), {room} are available under the {MAX_MEMORY >> 30} "
                f"GiB maximum of a wasm64 memory here; choose a smaller preset")
        before = self._memory.data_len()
        rc = self._call("model_init", p.layers, p.d_model, p.heads, p.ctx, p.batch)
        if rc == 1:
            raise UserError(
                f"wasm backend: preset {p.name}: d_model {p.d_model} must be a multiple of 8 and head_dim "
                f"{p.d_model // p.heads} a multiple of 8, at most 128; choose other d_model/heads")
        if rc == 2:
            have = self._memory.data_len()
            raise WasmError(
                f"wasm backend: preset {p.name}: stage allocation: the model needs {need} bytes of wasm memory; "
                f"memory could not grow past {have} bytes (max {MAX_MEMORY}, asked for "
                f"{self._call('last_request')} more in one block)")
        self.grew_from, self.grew_to = before, self._memory.data_len()
        n = self._call("model_nparams")
        if n != layout.total:
            raise WasmError(f"wasm backend: module layout has {n} parameters, model.py {layout.total}")
        for i, spec in enumerate(layout.specs):
            off = self._call("model_param_offset", i)
            if off != spec.offset:
                raise WasmError(f"wasm backend: parameter {spec.name} at {off} in the module, {spec.offset} in model.py")
        self._call("model_set_fma", int(self.relaxed_simd))
        self._call("model_set_optimizer", OPTIM.beta1, OPTIM.beta2, OPTIM.eps, OPTIM.weight_decay, OPTIM.clip)
        self._f32(self._call("model_params"), n)[:] = params.astype(np.float32, copy=False)
        self._layout = layout
        self.preset = preset

    def _need_loaded(self):
        if self.preset is None:
            raise UserError("wasm backend: call load(preset, params) first")

    def step(self, batch: np.ndarray, lr: float = DEFAULT_LR) -> float:
        self._need_loaded()
        p = self.preset
        batch = np.asarray(batch)
        if batch.shape != (p.batch, p.ctx + 1):
            raise UserError(f"wasm backend: batch shape {batch.shape}, preset {p.name} needs {(p.batch, p.ctx + 1)}")
        if batch.min() < 0 or batch.max() > 255:
            raise UserError("wasm backend: batch values must be bytes 0..255")
        self._i32(self._call("model_tokens"), batch.size)[:] = batch.astype(np.int32, copy=False).ravel()
        return float(self._guarded("train_step", "train_step", float(lr)))

    def _guarded(self, stage: str, name: str, *args):
        """Call an export that runs parallel regions. A trap (in this thread or a worker)
        leaves the pool in an unknown state: shut it down and raise one clear error; the
        process stays usable for the next backend."""
        try:
            return self._call(name, *args)
        except Exception as e:
            why = f"; {self._worker_errors[0]}" if self._worker_errors else ""
            where = f"preset {self.preset.name}: " if self.preset else ""
            self.close()
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WasmError(f"wasm backend: {where}stage {stage}: wasm trapped: {msg}{why}; "
                            "the backend was closed, load it again") from None

    def parameters(self) -> np.ndarray:
        self._need_loaded()
        return self._f32(self._call("model_params"), self._layout.total).copy()

    def gradients(self) -> np.ndarray:
        """The raw gradient of the last step, before clipping."""
        self._need_loaded()
        return self._f32(self._call("model_grads"), self._layout.total).copy()

    def profile(self, batch: np.ndarray, lr: float = DEFAULT_LR, steps: int = 1) -> dict[str, dict]:
        """Run `steps` training steps with per-kernel timing on: {tag: {ms, calls}}, the
        wall time of each kind of parallel region (a host clock call brackets each)."""
        self._need_loaded()
        n = self._call("prof_ntags")
        self._call("prof_reset")
        self._call("prof_enable", 1)
        try:
            for _ in range(steps):
                self.step(batch, lr)
        finally:
            self._call("prof_enable", 0)
        ns = self._view(self._call("prof_ns_addr"), n, ctypes.c_int64).copy()
        calls = self._view(self._call("prof_calls_addr"), n, ctypes.c_int64).copy()
        return {PROFILE_TAGS[i]: {"ms": ns[i] / 1e6 / steps, "calls": int(calls[i]) // steps}
                for i in range(n) if calls[i]}

    def grad_norm(self) -> float:
        """Global norm of the last step's raw gradient (computed in wasm)."""
        return float(self._call("model_grad_norm"))

    def close(self) -> None:
        if not self._started:
            return
        self._started = False
        try:
            self._call("pool_stop")
        finally:
            for t in self._workers:
                t.join(timeout=10)
            self._workers = []
            self._ex = self._store = self._memory = self._module = self._engine = None
            self.preset = None
