"""The WebAssembly Memory64 engine: the C kernels of wasm/src compiled to one wasm64 module
(wasm/tinygpt.wasm), run by wasmtime ('wasm', runtime.py + backend.py), by V8 in Node
('wasm-v8', v8.py + v8_host.mjs) or by Chromium in a web page ('wasm-chrome', chrome.py +
chrome_page.* + chrome_host.mjs); the two V8 hosts share host_core.mjs. Description only: importing this imports no runtime."""

from __future__ import annotations

from dataclasses import dataclass

from tinygpt_bench.engines.description import (CURVE, DIAGNOSE, RUN, BackendSpec, Engine, browser_option, option,
                                                threads_option)


def _bytes(text: str) -> int | None:
    from tinygpt_bench.units import parse_bytes

    return parse_bytes(text)


@dataclass(frozen=True)
class WasmOptions:
    """The options of both hosts of the module (wasmtime and V8)."""

    threads: int | None = threads_option()
    relaxed_simd: bool | None = option(
        None, "wasm matmul with relaxed-SIMD FMA (default: on for Intel CPUs with FMA, where it measured faster)",
        "--wasm-fma/--no-wasm-fma", fingerprint="given")
    initial_memory: int | None = option(None, "wasm initial memory, e.g. 64MiB", "--initial-memory", (DIAGNOSE,),
                                        parse=_bytes, metavar="SIZE")
    max_memory: int | None = option(None, "wasm memory maximum, e.g. 4GiB", "--max-memory", (DIAGNOSE,),
                                    parse=_bytes, metavar="SIZE")
    matmul_kernel: str = option("shuffle", "the matmul tile's A broadcast: shuffle (default), splat or bcast "
                                             "(bit-identical results; dev/ tools and tests)")
    module_path: str | None = option(None, "another build of the module (dev/ tools and tests)")


@dataclass(frozen=True)
class ChromeOptions(WasmOptions):
    """Chromium's: the module's options and which browser runs it."""

    browser: str | None = browser_option()


@dataclass(frozen=True)
class WasmtimeOptions(WasmOptions):
    """wasmtime's: the module's options and cranelift's Spectre guard."""

    spectre_guards: bool = option(False, "wasm: cranelift's Spectre guard on every memory access (wasmtime's "
                                         "default; off by default here: the module is this project's own code)",
                                  "--spectre-guards", (RUN, CURVE, DIAGNOSE), fingerprint="given")


def explain(error: str) -> str | None:
    """What the wasm engine's error texts mean, and the fix."""
    e = error.lower()
    if "out of bounds memory access" in e or "out-of-bounds" in e:
        return ("The WebAssembly code touched memory past the end of its linear memory: a kernel indexed past "
                "its buffer, or memory grew and a worker kept the old size. Run with --threads 1 and a larger "
                "--initial-memory to tell the two apart.")
    if "memory" in e and ("grow" in e or "cannot allocate" in e or "exceeds" in e or "memory max" in e):
        return ("The engine could not get the memory the preset needs: raise --max-memory (wasm) or pick a "
                "smaller preset; the preflight figures say how much is needed.")
    if "unreachable" in e or "wasm trap" in e or "trap" in e:
        return "The WebAssembly module trapped: a bug or a failed check inside the module at the stage named."
    return None


REGIONS = "wall time of each kind of parallel region"  # how profile() times the kernels

ENGINE = Engine(
    name="wasm",
    summary="the wasm64 module (wasm/tinygpt.wasm) on shared memory and worker threads, in wasmtime, Node or Chromium",
    backends=(
        BackendSpec("wasm", ".backend:WasmBackend", "CPU", WasmtimeOptions, faults=("trap", "nan-grad", "grow-oob"),
                    native_peer="torch-cpu", label="wasm64 in wasmtime", kernel_timing=REGIONS,
                    curve_default=True, preload=("wasmtime",)),
        BackendSpec("wasm-v8", ".v8:WasmV8Backend", "CPU", WasmOptions, faults=("trap", "nan-grad", "grow-oob"),
                    native_peer="torch-cpu", label="wasm64 in V8 (Node)", kernel_timing=REGIONS,
                    preload=("wasmtime",)),
        BackendSpec("wasm-chrome", ".chrome:WasmChromeBackend", "CPU", ChromeOptions,
                    faults=("trap", "nan-grad", "grow-oob", "renderer-crash"),
                    native_peer="torch-cpu", label="wasm64 in Chromium (a web page)", kernel_timing=REGIONS,
                    preload=("wasmtime",)),
    ),
    peak=".peak:measure",
    environment=".environment:collect",
    order=10,
    artifacts={"module_sha256": ("wasm", "*.wasm")},
    explain=explain,
    too_big_fix="raise --max-memory (at most 16 GiB) or pick a smaller preset",
)
