"""Fault injection, for testing every failure path end to end.

TINYGPT_BENCH_FAULT holds comma-separated specs `BACKEND:KIND[@PRESET]`; a spec applies
when that backend is created for that preset (any preset without @). Kinds:

  slow         every step sleeps 1 s more inside the timed region (harness; any backend)
  nan-grad     the engine writes a NaN into the gradient after backward (wasm, wasm-v8, webgpu,
               webgpu-dawn, reference)
  trap         the wasm module executes `unreachable` during the step (wasm, wasm-v8, wasm-chrome)
  grow-oob     diagnose's growth probe touches one page past the grown memory's end: an
               out-of-bounds trap in a worker at growth (wasm, wasm-v8, wasm-chrome)
  renderer-crash  the page's renderer is crashed (DevTools Page.crash) before each step (wasm-chrome)
  shader       an invalid WGSL kernel is compiled at load (webgpu, webgpu-dawn)
  alias        one dispatch of the replayed plan binds a writable buffer twice: invalid WebGPU
               that the page's device must reject, naming the kernel (webgpu-chrome)
  limit=BYTES  the adapter's storage-binding and buffer limits are capped to BYTES (webgpu,
               webgpu-dawn)

Engines take their kinds through a `fault` constructor argument; the harness applies
`slow` itself. The variable is inherited by the worker processes `curve` starts.
"""

from __future__ import annotations

import os

from tinygpt_bench.errors import UserError

ENV = "TINYGPT_BENCH_FAULT"
HARNESS_KINDS = {"slow"}
KINDS = ("slow", "nan-grad", "trap", "grow-oob", "renderer-crash", "shader", "alias")  # and limit=BYTES
SLOW_S = 1.0


def parse(text: str | None) -> list[tuple[str, str, str | None]]:
    out = []
    for spec in (text or "").split(","):
        spec = spec.strip()
        if not spec:
            continue
        if ":" not in spec:
            raise UserError(f"{ENV}: '{spec}' is not BACKEND:KIND[@PRESET], e.g. wasm:trap@small")
        backend, rest = spec.split(":", 1)
        kind, _, preset = rest.partition("@")
        backend, kind = backend.strip(), kind.strip()
        if not backend:
            raise UserError(f"{ENV}: '{spec}' names no backend; write BACKEND:KIND[@PRESET], e.g. wasm:trap@small")
        if kind.startswith("limit="):
            from tinygpt_bench.units import parse_bytes  # the project's one size parser

            try:
                parse_bytes(kind.removeprefix("limit="))
            except UserError as e:
                raise UserError(f"{ENV}: '{spec}': limit= takes a size in bytes ({e}), e.g. webgpu:limit=1MiB") from None
        elif kind not in KINDS:
            raise UserError(f"{ENV}: '{spec}': unknown kind '{kind}'; kinds are {', '.join(KINDS)}, limit=BYTES")
        out.append((backend, kind, preset.strip() or None))
    return out


def for_backend(backend: str, preset: str) -> str | None:
    """The fault kind to inject into this backend for this preset, if any."""
    for b, kind, p in parse(os.environ.get(ENV)):
        if b == backend and (p is None or p == preset or preset.startswith(p + "-")):
            return kind
    return None
