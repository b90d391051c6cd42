"""The WebGPU runtime under the `webgpu` backend: adapter and device, WGSL kernels, and
`Program`, a fixed list of dispatches recorded once and encoded into one compute pass per run.

Nothing here knows the model; tinygpt_bench/engines/webgpu/ops.py builds the model's dispatches
on top of it. It runs on two implementations of WebGPU through one API (wgpu-py's): wgpu-native
and Dawn (wgpudawn); their differences and wgpu-py's workarounds live in compat.py.

Every dispatch is checked, as it is recorded, against the WebGPU specification's rules for the
storage buffers of one dispatch: a buffer bound to a writable (read_write) storage binding may
appear in no other binding of it (the usage scope rule: writable storage excludes every other use
of the buffer, which wgpu-native enforces too; and the writable-binding aliasing rule, which only
Dawn enforces). A kernel that breaks them fails here, on every implementation, naming the kernel.
"""

from __future__ import annotations

import functools
import os
import re
import struct
import time
from dataclasses import dataclass, field

import numpy as np

from tinygpt_bench.engines.webgpu.compat import (DEFAULT_IMPLEMENTATION, NativeStderr, Waiter, import_wgpu,
                                                read_mapped, subgroup_feature, wgsl_for)
from tinygpt_bench.errors import UserError
from tinygpt_bench.resources import resource_dir

UNIFORM_SLOT = 256  # bytes per dispatch in the shared uniform buffer (>= any min offset alignment)
NO_ADAPTER_FIX = {  # what to install where an implementation finds no adapter
    "wgpu-native": "apt-get install mesa-vulkan-drivers (lavapipe, a CPU Vulkan driver) or a GPU driver; "
                   "./setup.sh does it",
    "dawn": "a Vulkan driver Dawn accepts: Mesa 24 or newer (Debian 12: apt-get install -t bookworm-backports "
            "mesa-vulkan-drivers; Dawn refuses Mesa 22's lavapipe) or a GPU driver; ./setup.sh does it",
}


class WebGPUError(RuntimeError):
    """A shader, pipeline or dispatch the device rejected; the message names the kernel."""


def adapters(implementation: str = DEFAULT_IMPLEMENTATION) -> list:
    """Every adapter the implementation can see, in its order (the index a user may pick by)."""
    wgpu = import_wgpu(implementation)
    with NativeStderr():
        return list(wgpu.gpu.enumerate_adapters_sync())


def pick_adapter(choice: str | int | None = None, implementation: str = DEFAULT_IMPLEMENTATION):
    """The high-performance adapter, or the one named (substring of its device name, any case)
    or numbered (index into adapters())."""
    wgpu = import_wgpu(implementation)
    fix = NO_ADAPTER_FIX[implementation]
    if choice is None or choice == "":
        adapter, why = None, ""
        with NativeStderr() as said:
            try:
                adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
            except Exception as e:  # wgpu-py raises RuntimeError "Request adapter failed" where none exists
                why = str(e).strip()
        if adapter is None:
            detail = "; ".join(x for x in (why, said.summary() and f"the driver said: {said.summary()}") if x)
            raise UserError(f"no WebGPU adapter found by {implementation}" + (f" ({detail})" if detail else "")
                            + f"; fix: {fix}")
        return adapter
    found = adapters(implementation)
    listing = "; ".join(f"{i}: {a.info['device']} ({a.info['backend_type']})" for i, a in enumerate(found))
    if isinstance(choice, int) or str(choice).isdigit():
        i = int(choice)
        if not 0 <= i < len(found):
            raise UserError(f"adapter index {i} out of range; {implementation}'s adapters are {listing or 'none'}")
        return found[i]
    for a in found:
        if str(choice).lower() in a.info["device"].lower():
            return a
    raise UserError(f"no adapter named like '{choice}'; {implementation}'s adapters are {listing or 'none'}")


LIMIT_KEYS = (
    "max-buffer-size",
    "max-storage-buffer-binding-size",
    "max-compute-workgroup-storage-size",
    "max-compute-invocations-per-workgroup",
    "max-compute-workgroups-per-dimension",
    "max-storage-buffers-per-shader-stage",
)


def describe_adapter(adapter) -> dict:
    info = adapter.info
    return {
        "adapter": info["device"],
        "description": info["description"],
        "vendor": info["vendor"],
        "backend_api": info["backend_type"],
        "adapter_type": info["adapter_type"],
        "features": sorted(adapter.features),
        "limits": {k: adapter.limits[k] for k in LIMIT_KEYS},
    }


CAPPED_LIMITS = ("max-storage-buffer-binding-size", "max-buffer-size")  # what a 'limit=BYTES' fault caps


def capped_limits(limits: dict, cap: int | None) -> dict:
    """The limits with max-storage-buffer-binding-size and max-buffer-size lowered to `cap`
    (fault injection, faults.py 'limit=BYTES'); unchanged without a cap."""
    out = dict(limits)
    if cap is not None:
        for k in CAPPED_LIMITS:
            out[k] = min(int(out[k]), int(cap))
    return out


def buffer_bytes(nbytes: int) -> int:
    """The size Gpu.buffer allocates for a request: rounded up to 16 bytes, at least 16."""
    return max(16, (int(nbytes) + 15) // 16 * 16)


def tuning_for(adapter) -> dict:
    """Kernel variants for an adapter, decided from its type alone (so plans need no device).
    layernorm: "rows" (an invocation per row) on CPU adapters, where barriers are costly;
    "workgroup" (a workgroup per row) on GPUs, whose row sums go over subgroups
    (layernorm_subgroup, kernels/layernorm_subgroup.wgsl) where the adapter has the feature
    (H100, interleaved A/B: step times equal, the forward kernel 0.95 -> 1.0 ms on behemoth; kept
    as the issue asks). ln_param_channels: channels a workgroup of the LN parameter gradient,
    32 on CPU adapters, 4 on GPUs (H100: xl 0.59 -> 0.21 ms a step, step 11.1 -> 10.55 ms;
    mega 1.02 -> 0.37; behemoth 1.06 -> 0.58, where 8 gives 0.55). min_workgroups: a matmul with fewer 64 x 64
    tiles than this uses 32 x 32 tiles (matmul_direct4); on a CPU adapter a few workgroups
    already fill the cores (H100: 256, about two an SM; it was 264, 2 x 132 SMs, which
    sent xl's 1024 x 256 x 256 products, 256 tiles of 32 x 32, to split-K 2 and a reduce: 256
    took xl 10.5-10.9 -> 9.2-9.3 ms a step and 66 fewer dispatches, mega and behemoth equal,
    interleaved A/B; 128 gave 10.2). matmul_shared
    (workgroup-memory tiles) where it pays: on the H100 16.5 TFLOP/s at 4096^3 and 11.9 at
    1024^3 against matmul_direct's 15.2 and 7.2; lavapipe: no. attention_split: invocations
    per attention row (attention.wgsl SPLIT): 1 on CPU adapters; None on GPUs lets
    ops.attention_split choose by head_dim (measured on the H100). shared_fill: workgroups
    of 256 that fill the device; a long-K product with fewer 64 x 64 tiles splits K up to that
    (H100, 1056 = 8 an SM x 132 SMs: mega 43.5 -> 37.4 ms, behemoth 210.7 -> 173.0 ms a step;
    later, with the prefetching kernel, 528 measured best: behemoth 159.5 (1056), 158.4 (528),
    159.1 (2112)).
    matmul_big (matmul_big_pf: 128 x 128 tiles, 8 x 8 an invocation): off; its first,
    non-prefetching kernel: 7.2 TFLOP/s at 4096^3 on the H100 against matmul_shared's 15.5, and
    behemoth only 1.5% faster with it. big_double_buffer: matmul_big (where on) as matmul_big_db,
    its staged tiles double-buffered (one barrier a K step instead of two; bit-identical
    results): off until a whole-step A/B on a GPU says otherwise (not yet measured). matmul_vec4:
    the 128 x 128 kernels' global loads as one 16-byte load of 4 floats where the operand is
    aligned (ops._vec4), not four; the same values: off until measured on a GPU. shared_prefetch
    (matmul_shared_pf: the next K step's loads in flight during this step's FMAs) on GPUs:
    H100, interleaved A/B in one process, xl 12.6 -> 11.3 ms, mega 37.7 -> 33.5, behemoth
    174.2 -> 162.6; lavapipe: no (its loads are not asynchronous). norm_parts: workgroups of
    the gradient norm's partial sums: 1024 on GPUs (H100 behemoth: 2.88 -> 0.87 ms, 2.2 TB/s,
    step 162.5 -> 160.6 ms), 256 on CPU adapters. attention_const_hd: head_dim / 4 as a pipeline
    constant in the attention kernels, on GPUs (H100 behemoth 160.4 -> 159.3 ms, attention dq
    14.8 -> 14.2 ms; bit-identical). attention_tiled: attention.wgsl's *_tiled kernels (score tiles as
    small matrix products through workgroup memory) instead of the row kernels, a mask: 1 the
    forward, 4 dk/dv (dq has the row kernel only); None on GPUs lets ops.attention_tiled
    choose by head_dim (measured on the H100); CPU adapters: 0 (lavapipe runs the row kernels
    faster). attention_mm: attention through matrix products (ops.attention_forward_mm,
    attention_backward_mm: the T x T scores materialised a layer at a time, batched products that
    skip the causal zeros, two row kernels) where T reaches it, 0 for never: 256 on GPUs (H200,
    interleaved A/B: behemoth 142.1 -> 114.7 ms a step on wgpu-native, 115.3 -> 90.9 on Dawn,
    attention 37.6 -> 11.5 ms; mega 28.4 -> 23.3; huge 20.1 -> 16.6; xl at T = 128 8.1 -> 7.4, not
    yet the default there), 0 on CPU adapters. matmul_unroll: the workgroup-memory matmuls' K step
    as 16 (8) calls in a row instead of a loop (matmul.wgsl UNROLL): Naga bounds every loop with a
    64-bit counter, which keeps the driver from unrolling it (H200 A/B: wgpu-native behemoth
    116.0 -> 101.4 ms, mega 23.7 -> 20.6, xl 8.4 -> 7.8; Dawn equal: 94.2 / 93.7)."""
    cpu = adapter.info["adapter_type"] == "CPU"
    return {"layernorm_variant": "rows" if cpu else "workgroup",
            "layernorm_subgroup": not cpu and subgroup_feature(adapter) is not None,
            "ln_param_channels": 32 if cpu else 4,
            "min_workgroups": 4 if cpu else 256, "matmul_shared": not cpu, "matmul_big": False,
            "big_double_buffer": False, "matmul_vec4": False,
            "shared_fill": 0 if cpu else 528, "shared_prefetch": not cpu,
            "norm_parts": 256 if cpu else 1024, "attention_const_hd": not cpu,
            "attention_split": 1 if cpu else None, "attention_tiled": 0 if cpu else None,
            "attention_mm": 0 if cpu else 256, "matmul_unroll": True}


TUNE_ENV = "TINYGPT_BENCH_TUNE"
# the allowed values of tuning keys that are not switches or counts from 0 up
TUNE_RANGES = {"norm_parts": range(1, 2049), "ln_param_channels": (1, 2, 4, 8, 16, 32, 64, 128, 256),
               "attention_tiled": (0, 1, 4, 5),
               "min_workgroups": range(1, 1 << 20)}


def tune_override(defaults: dict, text: str | None = None) -> dict:
    """Kernel tuning asked for by TINYGPT_BENCH_TUNE="key=value,..." (development A/B runs:
    e.g. shared_fill=0); values are integers (0/1 for switches). The backend's describe()
    records them in runtime_settings, so a result says what it ran with."""
    text = os.environ.get(TUNE_ENV, "") if text is None else text
    known = dict(defaults)
    out = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, _, val = item.partition("=")
        if key not in known or not val.lstrip("-").isdigit():
            raise UserError(f"{TUNE_ENV}: '{item}' is not KEY=INTEGER with KEY one of {', '.join(sorted(known))}")
        v = int(val)
        allowed = (0, 1) if isinstance(known[key], bool) else TUNE_RANGES.get(key, range(0, 1 << 31))
        if v not in allowed:
            shown = f"{allowed.start}..{allowed.stop - 1}" if isinstance(allowed, range) else "/".join(map(str, allowed))
            raise UserError(f"{TUNE_ENV}: {key}={v} is outside {shown}; fix the value")
        out[key] = bool(v) if isinstance(known[key], bool) else v
    return out


DAWN_TOGGLES_ENV = "TINYGPT_BENCH_DAWN_TOGGLES"


# Dawn rounds timestamp queries down to 65.536 us by default (as Chrome does, against timing
# attacks): per-kernel profiles of small steps would read 0 or 65.5 us. The engine turns the
# rounding off; it changes no kernel and no step time (taken on the host clock).
DAWN_DEFAULT_TOGGLES = ((), ("timestamp_quantization",))


def dawn_toggles(implementation: str, text: str | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(enabled, disabled) Dawn device toggles: DAWN_DEFAULT_TOGGLES, then those asked for by
    TINYGPT_BENCH_DAWN_TOGGLES="+name,-name" (development A/B runs, e.g. +disable_robustness to
    measure the cost of Dawn's bounds checks; recorded in runtime_settings); ((), ()) for
    wgpu-native."""
    if implementation != "dawn":
        return (), ()
    text = os.environ.get(DAWN_TOGGLES_ENV, "") if text is None else text
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        return DAWN_DEFAULT_TOGGLES
    from wgpudawn.backends.dawn.extras import all_toggles

    known = {k for k, v in all_toggles().items() if v["stage"] == "device"}
    bad = [x for x in items if x[:1] not in "+-" or x[1:] not in known]
    if bad:
        raise UserError(f"{DAWN_TOGGLES_ENV}: {', '.join(bad)}: each item is +NAME or -NAME with NAME a Dawn device "
                        f"toggle (wgpudawn.backends.dawn.extras.all_toggles())")
    on = tuple(x[1:] for x in items if x[0] == "+")
    off = tuple(x[1:] for x in items if x[0] == "-")
    return (on + tuple(n for n in DAWN_DEFAULT_TOGGLES[0] if n not in off),
            off + tuple(n for n in DAWN_DEFAULT_TOGGLES[1] if n not in on))


class AdapterPlan:
    """What a Program needs to RECORD dispatches without a device: an adapter's limits and
    kernel tuning. Program(AdapterPlan(...), label).add() checks workgroup counts and keeps the
    uniform values but compiles nothing (pipeline() returns None), so a plan can count
    dispatches and size buffers with the very code load() runs."""

    def __init__(self, adapter, limits: dict, tuning: dict | None = None):
        self.adapter = adapter
        self.limits = dict(limits)
        if tuning is None:
            tuning = tuning_for(adapter)
            tuning.update(tune_override(tuning))
        for k, v in tuning.items():
            setattr(self, k, v)

    @classmethod
    def of_gpu(cls, gpu: "Gpu", limits: dict | None = None) -> "AdapterPlan":
        """The same plan as `gpu` would record (its tuning, including overrides set on it)."""
        tuning = {k: getattr(gpu, k) for k in tuning_for(gpu.adapter)}
        return cls(gpu.adapter, gpu.limits if limits is None else limits, tuning)

    def pipeline(self, family: str, entry: str, constants: dict | None = None):
        return None


# kernel families made of several files (WGSL has no includes): layernorm.wgsl's workgroup
# kernels with their row reduction as a workgroup-memory tree, or over subgroups
COMPOSED = {"layernorm": ("layernorm", "layernorm_tree"), "layernorm_sg": ("layernorm", "layernorm_subgroup")}


def kernel_source(family: str) -> str:
    """The WGSL text of kernel family `family`: kernels/<family>.wgsl, or the files COMPOSED
    lists for it, joined (as written: wgsl_for adapts it to an implementation)."""
    texts = []
    for part in COMPOSED.get(family, (family,)):
        path = resource_dir("kernels") / f"{part}.wgsl"
        if not path.is_file():
            raise WebGPUError(f"kernel file {path} not found; reinstall tinygpt-bench")
        texts.append(path.read_text())
    return "\n".join(texts)


STORAGE_DECL = re.compile(r"@binding\((\d+)\)\s*var<storage\s*(?:,\s*(read_write|read)\s*)?>")


@functools.lru_cache(maxsize=None)
def binding_access(family: str) -> dict[int, str]:
    """{binding: 'read' | 'read_write'} of the storage bindings kernel family `family` declares
    (group 0; an access mode left out is 'read', as WGSL has it)."""
    return {int(b): mode or "read" for b, mode in STORAGE_DECL.findall(kernel_source(family))}


def check_bindings(name: str, family: str, buffers: dict[int, object]) -> None:
    """WebGPUError naming the dispatch where `buffers` (binding -> buffer) break WebGPU's rules
    for a dispatch: a buffer bound writable (read_write) appears in no other binding, read-only
    or writable, even at another offset (the engine binds whole buffers). wgpu-native accepts
    such a dispatch; Dawn, and so Chrome, rejects it."""
    access = binding_access(family)
    unknown = sorted(set(buffers) - set(access))
    if unknown:
        raise WebGPUError(f"kernel {name}: {family}.wgsl declares no storage binding {unknown}")

    def label(buf) -> str:
        return buf if isinstance(buf, str) else (getattr(buf, "label", "") or "unlabelled")

    for w, buf in sorted(buffers.items()):
        if access[w] != "read_write":
            continue
        also = [b for b, other in sorted(buffers.items()) if b != w and other is buf]
        if also:
            raise WebGPUError(
                f"kernel {name}: buffer '{label(buf)}' is bound writable at binding {w} and again at binding "
                f"{', '.join(map(str, also))}: not valid WebGPU (a writable storage binding's buffer may be in no "
                f"other binding of the dispatch; Dawn and Chrome reject it); fix: give the operands buffers of "
                f"their own, or read them through the writable binding")


class Gpu:
    """One device on one adapter, with the kernel library (WGSL files under kernels/)."""

    def __init__(self, adapter: str | int | None = None, need: dict | None = None, timestamps: bool = True,
                 implementation: str = DEFAULT_IMPLEMENTATION):
        self.implementation = implementation
        self.wgpu = import_wgpu(implementation)
        self.adapter = pick_adapter(adapter, implementation)
        have = self.adapter.limits
        need = dict(need or {})
        short = [f"{k}: needs {v:,}, adapter has {have[k]:,}" for k, v in need.items() if have[k] < v]
        if short:
            raise UserError(
                f"adapter '{self.adapter.info['device']}' falls short: " + "; ".join(short)
                + "; fix: use a smaller preset or another adapter (--adapter)"
            )
        # ask for the adapter's own maxima of what a big model needs, not just the defaults
        limits = {
            k: have[k]
            for k in (
                "max-buffer-size",
                "max-storage-buffer-binding-size",
                "max-compute-workgroup-storage-size",
                "max-storage-buffers-per-shader-stage",
                "max-compute-invocations-per-workgroup",
            )
        }
        features = ["timestamp-query"] if timestamps and "timestamp-query" in self.adapter.features else []
        self.timestamps = bool(features)
        subgroups = subgroup_feature(self.adapter)
        self.subgroups = subgroups is not None
        features += [subgroups] if subgroups else []
        self.dawn_toggles = dawn_toggles(implementation)
        if self.dawn_toggles != ((), ()):  # Dawn's own switches (dawn_toggles)
            from wgpudawn.backends.dawn.extras import request_device_sync

            self.device = request_device_sync(self.adapter, required_features=features, required_limits=limits,
                                              enable_toggles=self.dawn_toggles[0],
                                              disable_toggles=self.dawn_toggles[1])
        else:
            self.device = self.adapter.request_device_sync(required_features=features, required_limits=limits)
        self.limits = self.device.limits
        self.waiter = Waiter(self.device, self.wgpu)
        # kernel variants, decided per adapter type (tuning_for lists them and says why each);
        # TINYGPT_BENCH_TUNE, tests and dev/wgpu_bench.py may override them
        tuning = tuning_for(self.adapter)
        for k, v in tuning.items():
            setattr(self, k, v)
        self.tune_override = tune_override(tuning)
        for k, v in self.tune_override.items():
            setattr(self, k, v)
        self._modules: dict[str, object] = {}
        self._pipelines: dict[tuple, object] = {}

    # buffers -------------------------------------------------------------------------------
    def buffer(self, nbytes: int, label: str, extra_usage: int = 0):
        """A storage buffer (copy source and destination too), at least 16 bytes."""
        u = self.wgpu.BufferUsage
        nbytes = buffer_bytes(nbytes)
        if nbytes > self.limits["max-buffer-size"]:
            raise UserError(
                f"buffer '{label}' needs {nbytes:,} bytes, above the adapter's max-buffer-size "
                f"{self.limits['max-buffer-size']:,}; fix: a smaller preset or an adapter with larger buffers"
            )
        return self.device.create_buffer(size=nbytes, usage=u.STORAGE | u.COPY_SRC | u.COPY_DST | extra_usage, label=label)

    def upload(self, array: np.ndarray, label: str):
        buf = self.buffer(array.nbytes, label)
        self.write(buf, array)
        return buf

    def write(self, buf, array: np.ndarray, offset_bytes: int = 0) -> None:
        self.device.queue.write_buffer(buf, offset_bytes, np.ascontiguousarray(array))

    def read(self, buf, dtype=np.float32, count: int | None = None, offset_bytes: int = 0) -> np.ndarray:
        """Copy (part of) a buffer back to the host; waits for the work before it."""
        itemsize = np.dtype(dtype).itemsize
        nbytes = (buf.size - offset_bytes) if count is None else count * itemsize
        nbytes4 = (nbytes + 3) // 4 * 4
        u = self.wgpu.BufferUsage
        staging = self.device.create_buffer(size=nbytes4, usage=u.MAP_READ | u.COPY_DST, label="readback")
        enc = self.device.create_command_encoder(label="readback")
        enc.copy_buffer_to_buffer(buf, offset_bytes, staging, 0, nbytes4)
        self.device.queue.submit([enc.finish()])
        out = read_mapped(staging, np.uint8)[:nbytes].view(dtype)
        staging.destroy()
        return out

    def wait(self) -> None:
        self.waiter.wait()

    # kernels -------------------------------------------------------------------------------
    def source(self, family: str) -> str:
        """The WGSL text of kernel family `family` as this implementation compiles it
        (kernel_source, then wgsl_for)."""
        return wgsl_for(self.implementation, kernel_source(family))

    def compile(self, family: str, code: str):
        """A shader module of WGSL `code` (not cached); a rejected shader is raised as
        WebGPUError naming the kernel, with the validation text verbatim."""
        try:
            return self.device.create_shader_module(code=code, label=family)
        except Exception as e:  # GPUValidationError and friends
            raise WebGPUError(f"kernel {family}.wgsl does not compile: {str(e).rstrip()}") from None

    def replace_source(self, family: str, code: str) -> None:
        """Compile `code` as kernel family `family` for this device from now on, dropping the
        family's pipelines made so far (kernel variants in dev/ tools)."""
        self._modules[family] = self.compile(family, code)
        self._pipelines = {k: v for k, v in self._pipelines.items() if k[0] != family}

    def pipeline(self, family: str, entry: str, constants: dict | None = None):
        """The compute pipeline of `entry` in kernels/<family>.wgsl (cached); shader and
        pipeline errors are raised as WebGPUError naming the kernel."""
        key = (family, entry, tuple(sorted((constants or {}).items())))
        if key in self._pipelines:
            return self._pipelines[key]
        name = f"{family}.wgsl:{entry}" + (f" {dict(key[2])}" if key[2] else "")
        if family not in self._modules:
            self._modules[family] = self.compile(family, self.source(family))
        stage = {"module": self._modules[family], "entry_point": entry}
        if constants:
            stage["constants"] = {k: (float(v) if not isinstance(v, bool) else v) for k, v in constants.items()}
        try:
            p = self.device.create_compute_pipeline(layout="auto", compute=stage, label=name)
        except Exception as e:
            raise WebGPUError(f"kernel {name}: pipeline creation failed: {e}") from None
        self._pipelines[key] = p
        return p


@dataclass
class Dispatch:
    name: str  # e.g. "layer1.attn.q matmul.wgsl:matmul"
    pipeline: object
    groups: tuple[int, int, int]
    uniform: bytes
    buffers: dict[int, object]  # binding -> buffer (binding 0 is the uniform slot)
    bind_group: object = None
    # what the pipeline is made of: kernel family (kernels/<family>.wgsl), entry point, constants
    family: str = ""
    entry: str = ""
    constants: dict | None = None


def pack(values: list) -> bytes:
    """Uniform struct bytes: ints as u32, floats as f32, in field order."""
    out = bytearray()
    for v in values:
        if isinstance(v, (bool, int, np.integer)):
            if not 0 <= int(v) < 2**32:
                raise ValueError(f"uniform value {v} does not fit a u32")
            out += struct.pack("<I", int(v))
        else:
            out += struct.pack("<f", float(v))
    return bytes(out)


@dataclass
class Program:
    """A fixed sequence of dispatches: record with add(), then finalize() once (one uniform
    buffer, one bind group per dispatch), then encode() into a compute pass as often as needed."""

    gpu: Gpu
    label: str
    dispatches: list[Dispatch] = field(default_factory=list)
    uniforms: object = None
    check: bool = True  # check_bindings() on every add(); off only to prove an implementation's own check

    def add(self, name: str, family: str, entry: str, args: list, buffers: dict[int, object],
            groups: tuple[int, ...], constants: dict | None = None) -> None:
        if self.check:
            check_bindings(f"{name} [{family}.wgsl:{entry}]", family, buffers)
        groups = tuple(int(g) for g in groups) + (1,) * (3 - len(groups))
        limit = self.gpu.limits["max-compute-workgroups-per-dimension"]
        if max(groups) > limit or min(groups) < 1:
            raise WebGPUError(f"kernel {name} ({family}.wgsl:{entry}): workgroup counts {groups} outside 1..{limit}")
        data = pack(args)
        if len(data) > UNIFORM_SLOT:
            raise ValueError(f"{name}: uniform of {len(data)} bytes exceeds the {UNIFORM_SLOT}-byte slot")
        pipe = self.gpu.pipeline(family, entry, constants)
        self.dispatches.append(Dispatch(f"{name} [{family}.wgsl:{entry}]", pipe, groups, data, buffers,
                                        family=family, entry=entry, constants=dict(constants) if constants else None))

    def finalize(self) -> "Program":
        wgpu, dev = self.gpu.wgpu, self.gpu.device
        n = max(1, len(self.dispatches))
        blob = bytearray(n * UNIFORM_SLOT)
        for i, d in enumerate(self.dispatches):
            blob[i * UNIFORM_SLOT : i * UNIFORM_SLOT + len(d.uniform)] = d.uniform
        self.uniforms = dev.create_buffer_with_data(
            data=bytes(blob), usage=wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST
        )
        for i, d in enumerate(self.dispatches):
            entries = [{"binding": 0, "resource": {"buffer": self.uniforms, "offset": i * UNIFORM_SLOT, "size": UNIFORM_SLOT}}]
            entries += [{"binding": b, "resource": {"buffer": buf}} for b, buf in sorted(d.buffers.items())]
            try:
                d.bind_group = dev.create_bind_group(layout=d.pipeline.get_bind_group_layout(0), entries=entries, label=d.name)
            except Exception as e:
                raise WebGPUError(f"kernel {d.name}: bind group rejected: {e}") from None
        return self

    def encode(self, encoder, timestamp_writes: dict | None = None) -> None:
        kw = {"timestamp_writes": timestamp_writes} if timestamp_writes else {}
        cp = encoder.begin_compute_pass(label=self.label, **kw)
        for d in self.dispatches:
            cp.set_pipeline(d.pipeline)
            cp.set_bind_group(0, d.bind_group)
            cp.dispatch_workgroups(*d.groups)
        cp.end()

    def finish(self, encoder):
        """encoder.finish(), turning a validation error into one naming the failing kernel."""
        try:
            return encoder.finish()
        except Exception as e:
            raise WebGPUError(f"{self.locate_error()}: {e}") from None

    def locate_error(self) -> str:
        """Encode each dispatch alone to find the first the device rejects."""
        for d in self.dispatches:
            enc = self.gpu.device.create_command_encoder(label="locate")
            cp = enc.begin_compute_pass()
            cp.set_pipeline(d.pipeline)
            cp.set_bind_group(0, d.bind_group)
            cp.dispatch_workgroups(*d.groups)
            cp.end()
            try:
                enc.finish()
            except Exception:
                return f"kernel {d.name} rejected"
        return f"program {self.label} rejected (no single dispatch fails alone)"

    def profile(self, encode_before=None) -> list[tuple[str, float]]:
        """GPU time of each dispatch, [(name, seconds)], from timestamp queries: each dispatch in
        its own compute pass (so the numbers include a pass boundary each; for diagnosis, not for
        the step time). encode_before(encoder) may add work first (e.g. resetting state)."""
        if not self.gpu.timestamps:
            raise WebGPUError("adapter has no timestamp-query feature; per-kernel GPU times unavailable")
        wgpu, dev = self.gpu.wgpu, self.gpu.device
        n = len(self.dispatches)
        qs = dev.create_query_set(type="timestamp", count=2 * n)
        resolve = dev.create_buffer(size=16 * n, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
        out = dev.create_buffer(size=16 * n, usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST)
        enc = dev.create_command_encoder(label="profile")
        if encode_before:
            encode_before(enc)
        for i, d in enumerate(self.dispatches):
            cp = enc.begin_compute_pass(timestamp_writes={
                "query_set": qs, "beginning_of_pass_write_index": 2 * i, "end_of_pass_write_index": 2 * i + 1})
            cp.set_pipeline(d.pipeline)
            cp.set_bind_group(0, d.bind_group)
            cp.dispatch_workgroups(*d.groups)
            cp.end()
        enc.resolve_query_set(qs, 0, 2 * n, resolve, 0)
        enc.copy_buffer_to_buffer(resolve, 0, out, 0, 16 * n)
        dev.queue.submit([self.finish(enc)])
        ticks = read_mapped(out, np.uint64).reshape(n, 2).astype(np.float64)
        period_ns = 1.0  # wgpu reports timestamps in nanoseconds
        return [(d.name, (t1 - t0) * period_ns * 1e-9) for d, (t0, t1) in zip(self.dispatches, ticks)]

    def warm_up(self, seconds: float | None = None) -> int:
        """Run the program back to back for at least `seconds` of wall time, then wait: before a
        micro-benchmark times one dispatch. GPUs lower their clocks within a second of idling and
        raise them only under sustained work: on the H100, timing a kernel right after a
        CPU-only phase measured it at a third of its speed (docs/webgpu-engine.md, session 4).
        Default: a second on a GPU; 0.1 s on a CPU adapter, to keep its runs short.
        Returns how many times the program ran."""
        if seconds is None:
            seconds = 0.1 if self.gpu.adapter.info["adapter_type"] == "CPU" else 1.0
        t0, runs = time.perf_counter(), 0
        while True:
            enc = self.gpu.device.create_command_encoder(label=f"{self.label} warm-up")
            self.encode(enc)
            self.gpu.device.queue.submit([self.finish(enc)])
            runs += 1
            if runs % 4 == 0:  # keep a few submits in flight, not an unbounded queue
                self.gpu.wait()
                if time.perf_counter() - t0 >= seconds:
                    return runs

    def run(self) -> None:
        """Encode, submit and wait: for tests and diagnosis (a training step encodes itself)."""
        enc = self.gpu.device.create_command_encoder(label=self.label)
        self.encode(enc)
        self.gpu.device.queue.submit([self.finish(enc)])
        self.gpu.wait()
