"""The WebGPU engine: WGSL kernels (kernels/*.wgsl) through wgpu-py's API, on wgpu-native
('webgpu') or on Dawn ('webgpu-dawn'), and the same step replayed by Chrome's WebGPU in a page
('webgpu-chrome': chrome.py, plan.py, chrome_replay.mjs). runtime.py (device, buffers, pipelines, programs:
nothing there knows the model), ops.py (each kernel's dispatch), backend.py (the training
step). Description only: importing this imports no wgpu."""

from __future__ import annotations

from dataclasses import dataclass

from tinygpt_bench.engines.description import MEASURING, PEAK, BackendSpec, Engine, browser_option, option


@dataclass(frozen=True)
class WebGPUOptions:
    adapter: str | None = option(None, "WebGPU adapter: webgpu, webgpu-dawn and peak take a name substring or an "
                                       "index; webgpu-chrome takes swiftshader, compat or gpu", "--adapter", MEASURING + (PEAK,), fingerprint="always")


@dataclass(frozen=True)
class ChromeWebGPUOptions(WebGPUOptions):
    browser: str | None = browser_option()


def explain(error: str) -> str | None:
    """What the WebGPU engine's error texts mean, and the fix."""
    e = error.lower()
    if "aliasing" in e or "not valid webgpu" in e or "conflicting usages" in e:
        return ("A dispatch binds one buffer writable and again in another binding: not valid WebGPU (Dawn and "
                "Chrome reject it; wgpu-native may not). A bug in the engine's bindings for the kernel named.")
    if "offered no gpu adapter" in e:
        return ("The browser's WebGPU has no GPU adapter: its GPU process could not use the GPU's Vulkan driver, "
                "and a CPU adapter's numbers under the GPU's name would be false. dev/chrome_gpu_probe.py shows "
                "which adapters each set of the browser's flags gives.")
    if "validation" in e or "shader" in e or "wgsl" in e:
        return "A WGSL kernel or a GPU command failed WebGPU validation: a bug in the kernel or pipeline named."
    if "limit" in e or "binding" in e or "max_buffer" in e or "max-buffer" in e:
        return "A buffer is larger than the adapter allows; the preflight says which buffer and by how much."
    if "no adapter" in e or "adapter" in e:
        return ("No usable WebGPU adapter: install a Vulkan driver that the implementation accepts "
                "(./setup.sh does it: lavapipe from Mesa 24 or newer; Dawn refuses Mesa 22's).")
    return None


TIMESTAMPS = "GPU time from timestamp queries, each dispatch in its own compute pass"  # profile()'s timing

ENGINE = Engine(
    name="webgpu",
    summary="WGSL kernels through wgpu-py's API on wgpu-native or Dawn, or replayed in Chromium",
    backends=(
        BackendSpec("webgpu", ".backend:WebGPUBackend", "GPU", WebGPUOptions, faults=("nan-grad", "shader", "limit="),
                    native_peer="torch-cuda", label="WebGPU on wgpu-native",
                    kernel_timing=TIMESTAMPS, curve_default=True, preload=(".wgpu_preload",)),
        BackendSpec("webgpu-dawn", ".backend:DawnWebGPUBackend", "GPU", WebGPUOptions,
                    faults=("nan-grad", "shader", "limit="), native_peer="torch-cuda", label="WebGPU on Dawn",
                    kernel_timing=TIMESTAMPS, curve_default=True, preload=("wgpudawn.backends.dawn",)),
        BackendSpec("webgpu-chrome", ".chrome:ChromeWebGPUBackend", "GPU", ChromeWebGPUOptions,
                    faults=("nan-grad", "shader", "limit=", "alias"), native_peer="torch-cuda",
                    label="WebGPU in Chromium (a web page)", kernel_timing=TIMESTAMPS),
    ),
    peak=".peak:measure",
    environment=".environment:collect",
    order=20,
    artifacts={"kernels_sha256": ("kernels", "*.wgsl")},
    explain=explain,
    too_big_fix="pick an adapter with larger limits (--adapter) or a smaller preset",
)
