"""What the engines need to know of this machine, below both them and envinfo.py: the CPU
(`collect_cpu`, part of every environment record and of the CPU backends' describe()),
whether a WebGPU adapter is a software one (`is_software_adapter`), and a private runtime
directory for Mesa's drivers (`quiet_mesa`). A leaf module: it imports nothing of the package,
so an engine may use it without importing envinfo (which reaches the engines, through the
registry, for their parts of the record).
"""

from __future__ import annotations

import os
import platform
import re
import tempfile
from pathlib import Path

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


def is_software_adapter(info: dict) -> bool:
    text = " ".join(str(info.get(k, "")) for k in ("device", "description", "vendor", "architecture"))
    return str(info.get("adapter_type", "")).upper() == "CPU" or bool(SOFTWARE_ADAPTERS.search(text))
