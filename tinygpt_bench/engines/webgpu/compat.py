"""Workarounds for wgpu-py 0.32.0 and wgpudawn 0.32.0.4, in one place (issues 4 and 13). Each
says what and why.

Seen on: 2-core x86 VM, no GPU, Debian 12, Mesa 22.3.6 lavapipe (Vulkan, adapter type CPU),
wgpu-py 0.32.0 (see docs/webgpu-engine.md for the smoke tests that found these).

1. `queue.on_submitted_work_done_sync()` raises TypeError ("initializer for ctype
   'void(*)(WGPUQueueWorkDoneStatus, WGPUStringView, void *, void *)' must be a pointer to
   same type", wgpu-py issue 834). `wait_idle` below waits on a buffer map instead: mapping a
   buffer that the last submission writes returns only once that submission has finished.
2. `GPUDevice.push_error_scope` / `pop_error_scope` do not exist in 0.32.0. Not needed:
   validation errors are raised as `wgpu.GPUValidationError` by the call that caused them
   (create_shader_module, create_bind_group, command_encoder.finish, ...). A failed dispatch is
   reported by `finish()` without the kernel's name; `WebGPUError` naming is done by the caller.
3. `queue.read_buffer` allocates a staging buffer per call; the engine keeps its own mappable
   staging buffer and maps it (`read_mapped`) so a step allocates nothing.

4. Two implementations of one API: `wgpu` (wgpu-py on wgpu-native) and `wgpudawn` (the same
   API on Dawn, Chrome's WebGPU implementation). `import_wgpu(implementation)` returns either
   module; the engine uses only what both have. Where they differ:
   - Features: wgpu-py names the subgroup feature "subgroup", Dawn (and the specification)
     "subgroups" (`subgroup_feature`).
   - WGSL: the specification (and Dawn) needs `enable subgroups;` before a module calls
     subgroupAdd; Naga (wgpu-native) refuses the directive ("not yet implemented in Naga") and
     takes the builtins without it. The kernels are written as the specification says;
     `wgsl_for` drops the directive for wgpu-native.
   - Native code prints to stderr when it looks for adapters: Dawn a note when it first opens
     lavapipe ("Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced ..."),
     the Vulkan loader and Dawn several lines where no driver suits. `NativeStderr` keeps them
     off the terminal, so that an error stays one line (which quotes them where no adapter is
     found).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import tempfile

import numpy as np

from tinygpt_bench.errors import UserError

# implementation -> (Python module, pip requirement); the project pins both in pyproject.toml
IMPLEMENTATIONS = {"wgpu-native": ("wgpu", "wgpu==0.32.0"), "dawn": ("wgpudawn", "wgpudawn==0.32.0.4")}
DEFAULT_IMPLEMENTATION = "wgpu-native"


def import_wgpu(implementation: str = DEFAULT_IMPLEMENTATION):
    """The wgpu-py API module of a WebGPU implementation ('wgpu-native' or 'dawn'), imported
    quietly (Mesa warns when XDG_RUNTIME_DIR is unset, harmless for compute)."""
    if implementation not in IMPLEMENTATIONS:
        raise UserError(f"unknown WebGPU implementation '{implementation}'; one of {', '.join(IMPLEMENTATIONS)}")
    module, requirement = IMPLEMENTATIONS[implementation]
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise UserError(f"WebGPU implementation {implementation} is not installed ({e}); "
                        f"fix: pip install '{requirement}'") from None


def implementation_versions(implementation: str) -> dict:
    """{'implementation': 'wgpu-native' | 'dawn', 'implementation_version': its own version,
    'api_package': the Python package and version}: what a result row records."""
    mod = import_wgpu(implementation)
    if implementation == "dawn":
        from wgpudawn.backends import dawn

        own = dawn.__version__
        package = f"wgpudawn {mod.__version__}"
    else:
        from wgpu.backends import wgpu_native

        own = wgpu_native.__version__
        package = f"wgpu-py {mod.__version__}"
    return {"implementation": implementation, "implementation_version": own, "api_package": package}


def subgroup_feature(adapter) -> str | None:
    """The adapter's name for the subgroup feature ('subgroups' on Dawn, 'subgroup' on wgpu-py),
    or None where it has none."""
    for name in ("subgroups", "subgroup"):
        if name in adapter.features:
            return name
    return None


ENABLE = re.compile(r"^[ \t]*enable\s+([\w\s,]+);[^\n]*$", re.M)  # a directive line (and its comment)


def wgsl_for(implementation: str, code: str) -> str:
    """WGSL `code` (possibly several files joined) with its `enable` directives gathered at the
    top, where the specification wants them; for wgpu-native without `subgroups`, which Naga
    refuses (workaround 4)."""
    names = []
    for m in ENABLE.finditer(code):
        names += [n.strip() for n in m.group(1).split(",") if n.strip() not in names]
    if implementation == "wgpu-native":
        names = [n for n in names if n != "subgroups"]
    body = ENABLE.sub("", code)
    return "".join(f"enable {n};\n" for n in dict.fromkeys(names)) + body


class NativeStderr:
    """What native code printed to stderr (file descriptor 2) inside a `with` block, kept off the
    terminal (workaround 4): the Vulkan loader and Dawn print warnings of several lines when they
    look for adapters (an ICD file that does not open, a driver too old for Dawn, Dawn's lavapipe
    limit notes). `lines` holds them for an error message that needs them."""

    def __init__(self):
        self.lines: list[str] = []

    def __enter__(self) -> "NativeStderr":
        sys.stderr.flush()
        self._tmp = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._tmp.fileno(), 2)
        return self

    def __exit__(self, *exc) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._tmp.seek(0)
        text = self._tmp.read().decode(errors="replace")
        self._tmp.close()
        self.lines = [ln.strip() for ln in text.splitlines() if ln.strip()]

    def summary(self, limit: int = 300) -> str:
        """The captured lines on one line, shortened: for an error message."""
        text = " / ".join(self.lines)
        return text if len(text) <= limit else text[: limit - 3] + "..."


class Waiter:
    """Waits until all submitted work is done (workaround 1): one 4-byte copy into a mappable
    buffer, submitted after the work, then a blocking map."""

    def __init__(self, device, wgpu):
        self.wgpu = wgpu
        self.device = device
        self.src = device.create_buffer(size=4, usage=wgpu.BufferUsage.COPY_SRC, label="waiter_src")
        self.dst = device.create_buffer(
            size=4, usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST, label="waiter_dst"
        )

    def wait(self) -> None:
        enc = self.device.create_command_encoder(label="waiter")
        enc.copy_buffer_to_buffer(self.src, 0, self.dst, 0, 4)
        self.device.queue.submit([enc.finish()])
        self.dst.map_sync(self.wgpu.MapMode.READ)
        self.dst.unmap()


MAP_READ = 1  # GPUMapMode.READ, the specification's value in both modules


def read_mapped(buffer, dtype, count: int | None = None) -> np.ndarray:
    """Map a MAP_READ buffer (blocks until the work writing it is done), copy out, unmap."""
    buffer.map_sync(MAP_READ)
    try:
        out = np.frombuffer(buffer.read_mapped(), dtype=dtype).copy()
    finally:
        buffer.unmap()
    return out if count is None else out[:count]
