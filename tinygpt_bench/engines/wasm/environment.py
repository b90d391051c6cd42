"""The wasm engine's part of the environment record (envinfo.collect_all, `tinygpt-bench env`):
wasmtime's version and the features this engine needs, and the Node that runs wasm-v8."""

from __future__ import annotations

import importlib.metadata as md


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
    return {"wasmtime_version": md.version("wasmtime"), "wasmtime_features": features}


def collect_node() -> dict:
    """The Node that runs the wasm-v8 backend: its path and the Node and V8 versions, or why not."""
    try:
        from tinygpt_bench.engines.wasm.v8 import node_path, node_versions

        path = node_path()
        v = node_versions(path)
    except Exception as e:  # a UserError naming the fix, usually
        return {"node_error": str(e)}
    return {"node_path": path, "node_version": v["node"], "v8_version": v["v8"]}


def collect(adapters: bool) -> dict:
    return {**collect_wasmtime(), **collect_node()}
