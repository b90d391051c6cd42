"""A training step's dispatch plan as data (issue 25): what a replayer outside this process (the
`webgpu-chrome` backend's page) needs to run the engine's very dispatches and nothing else.

The data comes from the Program that backend.record() fills, the same code that load() runs:
recorded on an AdapterPlan (no device; step_plan()) or on a device (a loaded backend), it
gives the same plan. Its parts:

    buffers     [{name, bytes}]: the storage buffers, created zeroed, bound whole
    kernels     {family: sha256 of its WGSL source, kernels/*.wgsl as written} (the texts
                travel apart, adapted to the implementation that compiles them: wgsl_for)
    pipelines   [{family, entry, constants}]: one per distinct (family, entry, constants)
    dispatches  [{name, pipeline, groups, uniform (hex of its bytes), bindings {binding: buffer}}]
    inputs      what the host writes before each step: the token buffer (ids, targets, the
                rows of each token) and the step record's first three floats (lr and the two
                bias corrections), and what it reads after: 12 bytes of the step record (the
                gradient norm, the clip scale, the loss)

digest(plan) is a sha256 over all but the inputs' values: equal plans, equal dispatches.
"""

from __future__ import annotations

import hashlib
import json

from tinygpt_bench.engines.webgpu import ops
from tinygpt_bench.engines.webgpu.compat import wgsl_for
from tinygpt_bench.engines.webgpu.runtime import UNIFORM_SLOT, Program, buffer_bytes, kernel_source

FORMAT = 1


def _label(buf) -> str:
    return buf if isinstance(buf, str) else (getattr(buf, "label", "") or "unlabelled")


def plan_data(program: Program, storage: dict[str, int]) -> dict:
    """The plan of `program` (recorded by backend.record) over the storage buffers `storage`
    (name -> bytes asked; buffer_bytes rounds them as Gpu.buffer does)."""
    pipelines, index = [], {}
    dispatches = []
    for d in program.dispatches:
        key = (d.family, d.entry, json.dumps(d.constants or {}, sort_keys=True))
        if key not in index:
            index[key] = len(pipelines)
            pipelines.append({"family": d.family, "entry": d.entry, "constants": d.constants or {}})
        dispatches.append({"name": d.name, "pipeline": index[key], "groups": list(d.groups),
                           "uniform": d.uniform.hex(),
                           "bindings": {str(b): _label(buf) for b, buf in sorted(d.buffers.items())}})
    families = sorted({p["family"] for p in pipelines})
    return {
        "format": FORMAT,
        "uniform_slot": UNIFORM_SLOT,
        "buffers": [{"name": n, "bytes": buffer_bytes(b)} for n, b in storage.items()],
        "kernels": {f: hashlib.sha256(kernel_source(f).encode()).hexdigest() for f in families},
        "pipelines": pipelines,
        "dispatches": dispatches,
        "inputs": {"tokens": "tokens", "step": "step", "step_floats": 3,
                   "readback": {"buffer": "step", "offset": 4 * ops.ST_NORM, "bytes": 12}},
    }


def digest(plan: dict) -> str:
    """sha256 of the plan's buffers, kernels, pipelines and dispatches (canonical JSON)."""
    body = {k: plan[k] for k in ("format", "uniform_slot", "buffers", "kernels", "pipelines", "dispatches", "inputs")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def kernel_texts(plan: dict, implementation: str = "dawn") -> dict[str, str]:
    """{family: WGSL text} of the plan's kernels, as the implementation compiles them."""
    return {f: wgsl_for(implementation, kernel_source(f)) for f in plan["kernels"]}
