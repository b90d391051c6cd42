"""The WebGPU engine's part of the environment record (envinfo.collect_all, `tinygpt-bench env`)."""

from __future__ import annotations

from tinygpt_bench import host


def collect_adapters() -> dict:
    """Every WebGPU adapter each implementation (wgpu-native, Dawn) can see: {"adapters": [...],
    each with its implementation and its index there}, and per implementation that cannot run
    or finds none, the reason and the fix in "adapters_errors" ({implementation: text})."""
    from tinygpt_bench.engines.webgpu.compat import IMPLEMENTATIONS
    from tinygpt_bench.engines.webgpu.runtime import NO_ADAPTER_FIX, adapters

    host.quiet_mesa()
    out, errors = [], {}
    for impl in IMPLEMENTATIONS:
        try:
            found = adapters(impl)
        except Exception as e:  # not installed, no Vulkan loader, no driver: say so, the rest of env still works
            errors[impl] = f"{type(e).__name__}: {e}"
            continue
        if not found:
            errors[impl] = f"{impl} found no adapter; fix: {NO_ADAPTER_FIX[impl]}"
        for i, a in enumerate(found):
            info = dict(a.info)
            out.append({
                "implementation": impl, "index": i,
                "name": info.get("device", ""),
                "vendor": info.get("vendor", ""),
                "driver": info.get("description", ""),
                "backend": info.get("backend_type", ""),
                "adapter_type": info.get("adapter_type", ""),
                "software": host.is_software_adapter(info),
                "max_buffer_size": int(a.limits.get("max-buffer-size", 0)),
                "max_storage_buffer_binding_size": int(a.limits.get("max-storage-buffer-binding-size", 0)),
                "features": sorted(str(f) for f in a.features),
            })
    result = {"adapters": out}
    if errors:
        result["adapters_errors"] = errors
    return result


def collect(adapters: bool) -> dict:
    return collect_adapters() if adapters else {}
