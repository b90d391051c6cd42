"""Workarounds for wgpu-py 0.32.0, in one place (issue 4). Each says what and why.

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
"""

from __future__ import annotations

import os

import numpy as np


def import_wgpu():
    """Import wgpu quietly (it warns when XDG_RUNTIME_DIR is unset, harmless for compute)."""
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    import wgpu

    return wgpu


class Waiter:
    """Waits until all submitted work is done (workaround 1): one 4-byte copy into a mappable
    buffer, submitted after the work, then a blocking map."""

    def __init__(self, device):
        wgpu = import_wgpu()
        self.device = device
        self.src = device.create_buffer(size=4, usage=wgpu.BufferUsage.COPY_SRC, label="waiter_src")
        self.dst = device.create_buffer(
            size=4, usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST, label="waiter_dst"
        )

    def wait(self) -> None:
        wgpu = import_wgpu()
        enc = self.device.create_command_encoder(label="waiter")
        enc.copy_buffer_to_buffer(self.src, 0, self.dst, 0, 4)
        self.device.queue.submit([enc.finish()])
        self.dst.map_sync(wgpu.MapMode.READ)
        self.dst.unmap()


def read_mapped(buffer, dtype, count: int | None = None) -> np.ndarray:
    """Map a MAP_READ buffer (blocks until the work writing it is done), copy out, unmap."""
    wgpu = import_wgpu()
    buffer.map_sync(wgpu.MapMode.READ)
    try:
        out = np.frombuffer(buffer.read_mapped(), dtype=dtype).copy()
    finally:
        buffer.unmap()
    return out if count is None else out[:count]
