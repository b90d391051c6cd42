"""The WASM Memory64 engine's trainer: the C kernels of wasm/src compiled to wasm64, run as one
model on top of the runtime (runtime.py: the module in wasmtime, its shared memory of up to
16 GiB, the instances and the worker pool; it knows nothing of the model).

One module (wasm/tinygpt.wasm; its matmul comes in a plain SIMD128 and a relaxed-SIMD FMA
version, each with a shuffle, splat-load or pre-broadcast 4x8 tile, picked at load). A
training step is ONE call into wasm: `train_step(lr)`; the workers run its parallel regions.

For `tinygpt-bench diagnose` (issue 6) it offers plan() (the wasm memory a preset will
take, from the module file's header and the allocator's arithmetic, nothing compiled),
limits(), events() (each memory growth: from, to, worker threads running), memory_bytes()
and profile() (ms a step per kernel); max_memory caps growth inside the module's
allocator; fault='trap' / 'nan-grad' inject failures from inside wasm (faults.py).
Kernel benchmarks (peak, dev/) and tests reach the module through `backend.runtime`.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
from pathlib import Path

import numpy as np

from tinygpt_bench import model as model_mod
from tinygpt_bench.engines.base import DEFAULT_LR, OPTIM, Backend
from tinygpt_bench.errors import UserError
from tinygpt_bench.host import collect_cpu
from tinygpt_bench.presets import Preset
from tinygpt_bench.resources import resource_dir
from tinygpt_bench.engines.wasm.runtime import (MAX_MEMORY, MAX_MEMORY_NAME, PAGE, THREAD_SCRATCH_BYTES,  # noqa: F401
                                                WORKER_STACK, GrowthEvent, WasmError, WasmRuntime, align64,
                                                memory_max, module_facts, thread_count, trap_text)
from tinygpt_bench.units import fmt_bytes

# profile tags of the module, in the order of its enum (wasm/src/base.h)
PROFILE_TAGS = ("other", "embedding", "layernorm", "matmul_fwd", "attention", "gelu", "transpose", "crossentropy",
                "zero_grad", "matmul_dx", "matmul_dw", "layernorm_bwd", "gelu_bwd", "attention_bwd",
                "embedding_bwd", "grad_norm", "adamw")
# mirrors of the module's size constants (wasm/src); load() checks the module agrees
ATTN_KEY_BLOCK = 8  # attention.c KB
NORM_CHUNK = 16384  # kernels.c NORM_CHUNK
MATMUL_KERNELS = ("shuffle", "splat", "bcast")  # the 4x8 tile's A broadcast (matmul.c); model_set_matmul_kernel
FAULTS = {"trap": 1, "nan-grad": 2}  # model.c model_set_fault; faults.py's kinds for this engine
HOST_FAULTS = ("grow-oob",)  # injected by this trainer, not the module: growth_probe() touches past the end
GROWTH_PAGES = 16  # growth_probe(): the pages grown inside a parallel region (1 MiB)


def model_buffers(preset: Preset, threads: int) -> list[tuple[str, int]]:
    """(name, bytes) of what model_init takes from the module's allocator, in its order
    (model.c plan(): every block rounded up to 64 bytes). The same arithmetic serves
    plan() (no module needed) and load(), which checks it against the module's own
    count (model_bytes) so the two cannot drift apart unnoticed."""
    L, C, H, T, B = preset.layers, preset.d_model, preset.heads, preset.ctx, preset.batch
    N, V = B * T, 256
    n = model_mod.Layout(preset).total

    def f(count):
        return align64(count * 4)

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
        ("token batch", align64(B * (T + 1) * 4)),
        ("activations (saved for backward)", acts),
        ("backward buffers", 6 * f(N * C) + f(N * 4 * C)),
        ("gradient-norm scratch", align64(-(-n // NORM_CHUNK) * 8)),
        (f"attention scratch ({threads} x {fmt_bytes(f(attn))})", threads * f(attn)),
    ]


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
    capabilities = frozenset({"plan", "limits", "events", "profile", "memory_bytes", "stages", "growth_probe"})
    fault_kinds: tuple[str, ...] = (*FAULTS, *HOST_FAULTS)  # the module's (model_set_fault), then this trainer's

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
        self.max_memory = memory_max(max_memory)
        if initial_memory is not None and not 0 < int(initial_memory) <= self.max_memory:
            raise UserError(f"wasm backend: --initial-memory {initial_memory} bytes must be positive and at most "
                            f"the memory max {self.max_memory} bytes")
        self.initial_memory = None if initial_memory is None else int(initial_memory)
        if fault is not None and fault not in self.fault_kinds:
            raise UserError(f"wasm backend: fault '{fault}' cannot be injected here; it takes "
                            f"{', '.join(self.fault_kinds)} (TINYGPT_BENCH_FAULT={self.name}:KIND[@PRESET])")
        self.fault = fault
        self.module_path = module_path or str(resource_dir("wasm") / "tinygpt.wasm")
        self.preset: Preset | None = None
        self._layout = None
        self._tokens: np.ndarray | None = None  # view of the module's token buffer (load())
        self.profile_calls: dict[str, int] = {}
        self.runtime = self.make_runtime()

    def make_runtime(self) -> WasmRuntime:
        """The runtime under this trainer: the module in wasmtime (wasm-v8: in V8)."""
        return WasmRuntime(self.module_path, self.threads, self.initial_memory, self.max_memory, self.spectre_guards)

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
        threads, max_memory = thread_count(threads), memory_max(max_memory)
        path = module_path or str(resource_dir("wasm") / "tinygpt.wasm")
        facts = module_facts(path)
        rows = [("module static data + main stack (__heap_base)", align64(facts["heap_base"])),
                (f"worker stacks ({threads - 1} x {fmt_bytes(WORKER_STACK)})", (threads - 1) * align64(WORKER_STACK)),
                (f"per-thread matmul scratch ({threads} x {fmt_bytes(THREAD_SCRATCH_BYTES)})",
                 threads * align64(THREAD_SCRATCH_BYTES))]
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
        return self.runtime.events()

    def memory_bytes(self) -> int:
        """Current size of the shared memory in bytes."""
        return self.runtime.memory_bytes()

    def stages(self, preset: Preset | None = None) -> list[dict]:
        """Start the runtime (module, memory, workers; the browser and its page for wasm-chrome) and
        say how each part went: [{name, ok, ms, figure, error}], the failed one last."""
        try:
            self.runtime.start()
        except (WasmError, UserError) as e:
            done = [dict(s, ok=True, error="") for s in self.runtime.start_log]
            failed = re.search(r"stage ([\w-]+)", str(e))
            return done + [{"name": failed.group(1) if failed else "start", "ok": False, "ms": None, "figure": "",
                            "error": str(e)}]
        return [dict(s, ok=True, error="") for s in self.runtime.start_log]

    def growth_probe(self, pages: int = GROWTH_PAGES) -> dict:
        """Grow the memory by `pages` inside a parallel region (thread 0 grows while the others
        wait in the region), then have every thread touch the new memory at once: TinyGPT's
        worst failure (decision log, Decisions 2 and 12) was an out-of-bounds trap on memory
        growth with workers running in a browser. Returns {ok, error, from_bytes, to_bytes,
        threads, worker_threads_running, in_parallel_region, views}: views[t] is the size thread
        t saw through memory.size right after the growth ('new', 'old', or 'none' when it wrote
        nowhere), read from where it wrote (the module's grow_in_region writes t + 1 at the end
        of the memory as that thread sees it). A stale view is a fact to report, not a failure
        (no thread of the module relies on another's growth being visible through memory.size:
        only thread 0 grows, and the others reach new memory through addresses it hands them);
        a trap when the threads touch the new memory is. Fault 'grow-oob' makes the touch run
        one page past the end, to prove a trap there is caught and named."""
        rt, n = self.runtime, self.threads
        rt.start()
        mark = rt.call("heap_top")
        before = rt.memory_bytes()
        if self.max_memory < MAX_MEMORY and before + (pages + 1) * PAGE > self.max_memory:
            return {"ok": True, "skipped": f"no room to grow: the memory is {before} bytes and {MAX_MEMORY_NAME} is "
                    f"{self.max_memory}", "from_bytes": before, "to_bytes": before, "threads": n, "views": {}}
        if before - align64(mark) < 4 * n + 64:  # the old end's words must be free heap, not a buffer
            rt.call("alloc", 4 * n + 64)
            before = rt.memory_bytes()
        rt.i32(before - 4 * n, n)[:] = 0
        phase, rt.phase = rt.phase, "growth probe"
        out = {"ok": False, "error": "", "from_bytes": before, "to_bytes": before, "threads": n, "views": {}}
        try:
            grown = self.guarded_call("growth", "grow_in_region", pages)
            if grown < 0:
                out["error"] = (f"stage growth: memory.grow by {pages} pages from {before} bytes was refused "
                                f"({MAX_MEMORY_NAME} {self.max_memory} bytes)")
                return out
            after = int(grown) * PAGE
            new, old = list(rt.i32(after - 4 * n, n).copy()), list(rt.i32(before - 4 * n, n).copy())
            out["to_bytes"] = after
            out["views"] = {t: "new" if new[n - 1 - t] == t + 1 else "old" if old[n - 1 - t] == t + 1 else "none"
                            for t in range(n)}
            ev = rt.events()
            if ev:
                out["worker_threads_running"] = ev[-1]["worker_threads_running"]
                out["in_parallel_region"] = ev[-1]["in_parallel_region"]
            # every thread touches its share of the new memory (gelu over it, in place of a kernel)
            floats = (after - before) // 8 // (4 * n) * (4 * n)
            if self.fault == "grow-oob":
                floats += PAGE // 4  # the last thread's share runs one page past the end
            x, y = before, before + (after - before) // 2
            self.guarded_call("growth", "bench_gelu", y, x, 0, floats, 0, 1)
            out["touched_bytes"] = 2 * 4 * floats
            out["ok"] = True
            return out
        except WasmError as e:
            out["error"] = str(e) + ("; fault 'grow-oob' was injected (TINYGPT_BENCH_FAULT)"
                                     if self.fault == "grow-oob" else "")
            return out
        finally:
            if rt.started:
                rt.call("heap_reset", mark)
            rt.phase = phase

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
            # the stamps every result row carries (engines/base.py)
            "device": collect_cpu()["cpu_model"],
            "device_type": "CPU",
            "runtime_settings": f"threads={self.threads} simd128 relaxed_simd={'on' if self.relaxed_simd else 'off'} "
                                f"matmul_kernel={self.matmul_kernel} "
                                f"spectre_guards={'on' if self.spectre_guards else 'off'} memory64 max={self.max_memory}",
            "module_sha256": hashlib.sha256(open(self.module_path, "rb").read()).hexdigest(),
        }

    def load(self, preset: Preset, params: np.ndarray) -> None:
        try:
            self.runtime.start()
        except WasmError as e:
            self.close()  # workers already started must not stay parked
            raise WasmError(str(e).replace("wasm backend: ", f"wasm backend: preset {preset.name}: ", 1)) from None
        layout = model_mod.Layout(preset)
        params = np.asarray(params)
        if params.shape != (layout.total,):
            raise UserError(f"wasm backend: preset {preset.name} needs {layout.total} parameters, got {params.shape}")
        rt = self.runtime
        rt.phase = "load"
        rt.call("heap_reset", rt.heap_mark)  # a second load reuses the memory
        self.preset = None
        p = preset
        need = sum(b for _, b in model_buffers(p, self.threads))
        counted = self.runtime.call("model_bytes", p.layers, p.d_model, p.heads, p.ctx, p.batch)
        if counted != need:
            raise WasmError(f"wasm backend: preset {p.name}: the module's allocation plan takes {counted} bytes, "
                            f"model_buffers() (plan(), preflight) says {need}: update model_buffers to model.c")
        room = self.max_memory - rt.heap_mark
        if need > room:
            raise WasmError(
                f"wasm backend: preset {p.name}: stage preflight: the model needs {need} bytes of wasm memory "
                f"(weights, grads, Adam moments, activations), {room} are available under the {MAX_MEMORY_NAME} of "
                f"{self.max_memory} bytes ({fmt_bytes(self.max_memory)}) after {rt.heap_mark} bytes of module "
                f"data, stacks and scratch; " + ("choose a smaller preset" if self.max_memory >= MAX_MEMORY else
                                                 f"raise --max-memory (at most {MAX_MEMORY}) or choose a smaller preset"))
        before = rt.memory_bytes()
        rc = self.runtime.call("model_init", p.layers, p.d_model, p.heads, p.ctx, p.batch)
        rt.read_events()
        if rc == 1:
            raise UserError(
                f"wasm backend: preset {p.name}: d_model {p.d_model} must be a multiple of 8 and head_dim "
                f"{p.d_model // p.heads} a multiple of 8, at most 128; choose other d_model/heads")
        if rc == 2:
            err = rt.no_memory("allocation", f"the model needs {need} bytes of wasm memory; memory could not grow "
                                  "for its next block", rt.call("last_request"))
            raise WasmError(str(err).replace("wasm backend: ", f"wasm backend: preset {p.name}: ", 1))
        self.grew_from, self.grew_to = before, rt.memory_bytes()
        n = self.runtime.call("model_nparams")
        if n != layout.total:
            raise WasmError(f"wasm backend: module layout has {n} parameters, model.py {layout.total}")
        for i, spec in enumerate(layout.specs):
            off = self.runtime.call("model_param_offset", i)
            if off != spec.offset:
                raise WasmError(f"wasm backend: parameter {spec.name} at {off} in the module, {spec.offset} in model.py")
        self.runtime.call("model_set_fma", int(self.relaxed_simd))
        self.runtime.call("model_set_matmul_kernel", MATMUL_KERNELS.index(self.matmul_kernel))
        self.runtime.call("model_set_optimizer", OPTIM.beta1, OPTIM.beta2, OPTIM.eps, OPTIM.weight_decay, OPTIM.clip)
        self.runtime.call("model_set_fault", FAULTS.get(self.fault, 0))
        self.runtime.f32(self.runtime.call("model_params"), n)[:] = params.astype(np.float32, copy=False)
        # the step's token buffer, viewed once (shared memory never moves; growth only appends)
        self._tokens = self.runtime.i32(self.runtime.call("model_tokens"), p.batch * (p.ctx + 1))
        self._layout = layout
        self.preset = preset
        rt.phase = "step"

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
            return self.runtime.call(name, *args)
        except Exception as e:
            why = f"; {self.runtime.worker_errors[0]}" if self.runtime.worker_errors else ""
            where = f"preset {self.preset.name}: " if self.preset else ""
            injected = (f"; fault '{self.fault}' was injected (TINYGPT_BENCH_FAULT)"
                        if self.fault == "trap" and stage == "step" else "")
            self.close()
            raise WasmError(f"wasm backend: {where}stage {stage}: wasm trapped: {trap_text(e)}{why}{injected}; "
                            "the backend was closed, load it again") from None

    def parameters(self) -> np.ndarray:
        self._need_loaded()
        return self.runtime.f32(self.runtime.call("model_params"), self._layout.total).copy()

    def gradients(self) -> np.ndarray:
        """The raw gradient of the last step, before clipping."""
        self._need_loaded()
        return self.runtime.f32(self.runtime.call("model_grads"), self._layout.total).copy()

    def profile(self, batch: np.ndarray, lr: float = DEFAULT_LR, steps: int = 1) -> dict[str, float]:
        """Run `steps` training steps with per-kernel timing on: {kernel: ms a step}, the
        wall time of each kind of parallel region (a host clock call brackets each).
        profile_calls then holds {kernel: regions a step}."""
        self._need_loaded()
        n = self.runtime.call("prof_ntags")
        self.runtime.call("prof_reset")
        self.runtime.call("prof_enable", 1)
        try:
            for _ in range(steps):
                self.step(batch, lr)
        finally:
            if self.runtime.started:
                self.runtime.call("prof_enable", 0)
        ns = self.runtime.view(self.runtime.call("prof_ns_addr"), n, ctypes.c_int64).copy()
        calls = self.runtime.view(self.runtime.call("prof_calls_addr"), n, ctypes.c_int64).copy()
        self.profile_calls = {PROFILE_TAGS[i]: int(calls[i]) // steps for i in range(n) if calls[i]}
        return {PROFILE_TAGS[i]: float(ns[i]) / 1e6 / steps for i in range(n) if calls[i]}

    def grad_norm(self) -> float:
        """Global norm of the last step's raw gradient (computed in wasm)."""
        return float(self.runtime.call("model_grad_norm"))

    def close(self) -> None:
        self.runtime.close()
        self.preset = self._tokens = None
