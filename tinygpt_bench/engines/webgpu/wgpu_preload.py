"""Imported by curve's fork server (curve._worker_context) before it forks the workers of a run
with the `webgpu` backend (its BackendSpec.preload): wgpu-native's API module, and the C types a training step uses,
parsed once, so that each worker finds them parsed.

wgpu-py talks to wgpu-native through cffi in ABI mode: the first time a process names a C type
('WGPUBufferDescriptor *'), cffi parses it with pycparser against all of webgpu.h's typedefs, at
30-60 ms a type on the 2-core EPYC VM; a training step names the 43 below, so each fresh worker
spent 1.3-2.4 s on parsing (docs/harness.md). Dawn's binding (webgpu-dawn) is compiled cffi and
needs none of this. Parsing only: no library call, no adapter, no device, no thread (a fork
server must stay single-threaded). A type this wgpu-py no longer names is skipped here, and
tests/test_harness.py says so.
"""

from __future__ import annotations

# the C type names wgpu-py 0.32 gives cffi in describe, load, step, memory_bytes and close
# (listed by tests/test_harness.py from cffi's cache after a tiny and a small step)
STEP_TYPES = (
    "WGPUAdapterInfo *", "WGPUBindGroupDescriptor *", "WGPUBindGroupEntry *", "WGPUBindGroupEntry[]",
    "WGPUBufferDescriptor *", "WGPUBufferMapCallbackInfo *", "WGPUChainedStruct *", "WGPUChainedStruct * ",
    "WGPUCommandBufferDescriptor *", "WGPUCommandBuffer[]", "WGPUCommandEncoderDescriptor *",
    "WGPUComputePassDescriptor *", "WGPUComputePipelineDescriptor *", "WGPUComputeState *", "WGPUConstantEntry *",
    "WGPUConstantEntry[]", "WGPUDeviceDescriptor *", "WGPUDeviceExtras *", "WGPUDeviceLostCallbackInfo *",
    "WGPUFeatureName[]", "WGPUInstanceDescriptor *", "WGPULimits *", "WGPUNativeLimits *", "WGPUQueueDescriptor *",
    "WGPURequestAdapterCallbackInfo *", "WGPURequestAdapterOptions *", "WGPURequestDeviceCallbackInfo *",
    "WGPUShaderModuleDescriptor *", "WGPUShaderSourceWGSL *", "WGPUStringView *",
    "WGPUUncapturedErrorCallbackInfo *", "char []", "intptr_t", "uint32_t []", "uint8_t *", "uint8_t []", "uintptr_t",
    # callback types (ffi.callback parses them as function pointers)
    "void(WGPUDevice const *, WGPUDeviceLostReason, WGPUStringView, void *, void *)",
    "void(WGPUDevice const *, WGPUErrorType, WGPUStringView, void *, void *)",
    "void(WGPULogLevel, WGPUStringView, void *)",
    "void(WGPUMapAsyncStatus, WGPUStringView, void *, void *)",
    "void(WGPURequestAdapterStatus, WGPUAdapter, WGPUStringView, void *, void *)",
    "void(WGPURequestDeviceStatus, WGPUDevice, WGPUStringView, void *, void *)",
)


def parse_step_types() -> list[str]:
    """Parse STEP_TYPES into cffi's cache of wgpu-native's API; returns those that did not parse.
    Never raises: the fork server that imports this must start whatever wgpu-py is installed."""
    try:
        from tinygpt_bench.engines.webgpu.compat import import_wgpu

        import_wgpu("wgpu-native")
        from wgpu.backends.wgpu_native import ffi
    except Exception:  # not installed, or a driver library that does not load: the worker will say so
        return list(STEP_TYPES)
    missed = []
    for cdecl in STEP_TYPES:
        try:
            if "(" in cdecl:
                ffi.callback(cdecl)  # parses it as wgpu-py's callbacks do, as a function pointer
            else:
                ffi.typeof(cdecl)
        except Exception:
            missed.append(cdecl)
    return missed


MISSED = parse_step_types()
