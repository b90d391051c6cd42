"""The wasm engine's part of the environment record (envinfo.collect_all, `tinygpt-bench env`):
wasmtime's version and the features this engine needs, the Node that runs wasm-v8 and the
Chromium that runs wasm-chrome."""

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


def collect_browser(launch: bool) -> dict:
    """The Chromium that runs wasm-chrome: its path and version, and with `launch` its V8's
    version (from the running browser: about half a second), or why there is none."""
    from tinygpt_bench import browser

    try:
        path = browser.browser_path()
        out = {"browser_path": path, "browser_version": browser.browser_version(path)["browser"]}
    except Exception as e:  # a UserError naming the fix, usually
        return {"browser_error": str(e)}
    if launch:
        try:
            out["browser_v8_version"] = browser.v8_version(path)
        except Exception as e:
            out["browser_error"] = f"{type(e).__name__}: {e}"
    return out


def collect(adapters: bool) -> dict:
    return {**collect_wasmtime(), **collect_node(), **collect_browser(adapters)}
