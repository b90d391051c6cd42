"""The WASM Memory64 engine in Chromium: the same module (wasm/tinygpt.wasm), byte for byte, run
by the browser's V8 inside a web page, as a web page runs it (backend `wasm-chrome`).

One headless browser per backend instance (tinygpt_bench/browser.py: the system's Chromium,
driven over the DevTools protocol on a pipe, and a local server on 127.0.0.1 that serves the
page with the cross-origin isolation headers a shared memory needs). The page (chrome_page.html,
chrome_page.mjs) starts the module's calling thread (tid 0) in a dedicated Worker
(chrome_host.mjs), since a page's main thread may not block in memory.atomic.wait; that Worker
starts the pool's Workers, each with its own instance and stack on the one shared Memory64:
host_core.mjs, the same host code as wasm-v8's Node host.

Commands travel as protocol evaluations of `tinygpt.request(...)` (one round trip each, as
wasm-v8's JSON lines do); data goes through the server: initial weights and each step's tokens
are fetched by the page (the tokens before the step's timer starts), parameters and gradients
sent back to it.
Each step is timed inside the page's tid-0 Worker with performance.now() around train_step
(`last_step_ns`, which protocol.train uses). Closing the backend ends the browser, every process
it started, and the server.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from tinygpt_bench import browser as br
from tinygpt_bench.engines.base import DEFAULT_LR
from tinygpt_bench.engines.wasm import backend as w
from tinygpt_bench.engines.wasm.v8 import V8Runtime, WasmV8Backend
from tinygpt_bench.errors import UserError

NAME = "wasm-chrome backend"
PAGE_FILES = ("chrome_page.html", "chrome_page.mjs", "chrome_host.mjs", "host_core.mjs")
HERE = Path(__file__).resolve().parent
# no GPU process: the page computes on the CPU only
FLAGS = ("--disable-gpu",)


class ChromeRuntime(V8Runtime):
    """The wasm engine's runtime (runtime.py) in a Chromium page: the module, its shared memory
    and the workers live in the page's Workers; every call is one protocol round trip."""

    name = NAME

    def __init__(self, module_path: str, threads: int, initial_memory: int | None = None,
                 max_memory: int = w.MAX_MEMORY, browser: str | None = None):
        w.WasmRuntime.__init__(self, module_path, threads, initial_memory, max_memory, spectre_guards=False)
        self.browser_path = br.browser_path(browser)  # UserError: none, or not runnable
        found = br.browser_version(self.browser_path)  # UserError: too old for Memory64
        self.versions = {"browser": found["browser"], "v8": None}
        self._chrome: br.Chromium | None = None
        self._server: br.Server | None = None
        self._memory = None
        self.launch_log: list[dict] = []

    # ---- the browser and its page --------------------------------------------------------
    def launch(self) -> None:
        """Start the browser, the server and the page (once); the page's host Worker is ready.
        Its stages (launch, page, isolation, worker) are timed into launch_log."""
        if self._chrome is not None:
            return
        self.launch_log = []
        t0 = time.perf_counter()
        self._server = br.Server()
        for name in PAGE_FILES:
            self._server.add_file(name, HERE / name)
        self._module_url = self._server.add_file("tinygpt.wasm", self.module_path)
        self._chrome = br.Chromium(self.browser_path, FLAGS, name="Chromium")
        try:
            self._chrome.start()
            self.versions = {"browser": self.versions["browser"], "v8": self._chrome.js_version}
            self._log(self.launch_log, "launch", t0, f"{self.versions['browser']} (V8 {self.versions['v8']}), "
                      f"{len(self._chrome.pids())} processes")
            t0 = time.perf_counter()
            self._chrome.open(self._server.url("chrome_page.html"))
            self._log(self.launch_log, "page", t0, f"loaded from {self._server.origin}")
            t0 = time.perf_counter()
            if not self._chrome.evaluate("self.crossOriginIsolated", stage="isolation"):
                raise UserError(f"{self.name}: stage isolation: the page is not cross-origin isolated, so it has no "
                                "SharedArrayBuffer; the server sends COOP/COEP headers: check that no browser policy "
                                f"or flag overrides them ({self.browser_path})")
            self._log(self.launch_log, "isolation", t0, "crossOriginIsolated: SharedArrayBuffer and shared memories")
            t0 = time.perf_counter()
            ready = self._chrome.evaluate("tinygpt.ready()", stage="worker")
            if not ready.get("ok"):
                raise w.WasmError(f"{self.name}: stage worker: {ready.get('error')}")
            self._log(self.launch_log, "worker", t0, "the module's calling thread (tid 0) in a dedicated Worker")
        except br.BrowserError as e:
            self._kill()
            raise w.WasmError(f"{self.name}: stage {e.stage}: {e}") from None
        except BaseException:
            self._kill()
            raise

    @staticmethod
    def _log(log: list, name: str, t0: float, figure: str) -> None:
        log.append({"name": name, "ms": round((time.perf_counter() - t0) * 1e3, 3), "figure": figure})

    def _open_host(self) -> None:
        self.launch()
        self.start_log.extend(self.launch_log)

    def _module_ref(self) -> str:
        return self._module_url

    def _rejected(self, stage: str, error: str) -> UserError:
        return UserError(f"{self.name}: stage {stage}: {self.versions['browser']} (V8 {self.versions['v8']}) rejected "
                         f"{self.module_path}: {error}; use the shipped wasm/tinygpt.wasm with Chromium "
                         f"{br.MIN_MAJOR} or newer, or run it with the wasm backend")

    def _host_alive(self) -> bool:
        return self._chrome is not None

    @property
    def host_process(self):
        """The browser's main process (None before launch() and after close())."""
        return self._chrome.proc if self._chrome is not None else None

    def crash_page(self) -> None:
        """Fault 'renderer-crash': the page's renderer is crashed before the step."""
        if self._chrome is not None:
            self._chrome.crash_page()

    def browser_pids(self) -> list[int]:
        """The browser's running processes (empty before launch() and after close())."""
        return self._chrome.pids() if self._chrome is not None else []

    def send(self, cmd: dict) -> dict:
        """One request to the page's host Worker; the browser's failure is a WasmError naming the stage."""
        if self._chrome is None:
            raise w.WasmError(f"{self.name}: the browser is not running (closed); load the backend again")
        stage = cmd.get("op", "?") if cmd.get("op") != "call" else f"call {cmd.get('name')}"
        try:
            reply = self._chrome.evaluate(f"tinygpt.request({json.dumps(cmd)})", timeout=None, stage=stage)
        except br.BrowserError as e:
            self._kill()
            raise w.WasmError(f"{self.name}: stage {stage}: {e}") from None
        except BaseException:  # interrupted (Ctrl-C) with the page still busy: nothing more is sent to it
            self._kill()
            raise
        if not isinstance(reply, dict):
            self._kill()
            raise w.WasmError(f"{self.name}: stage {stage}: the page answered {reply!r}, not a reply")
        return reply

    def _write_bulk(self, addr: int, data: np.ndarray) -> dict:
        key, url = self._server.offer(np.ascontiguousarray(data))
        try:
            return self.send({"op": "write", "addr": addr, "url": url})
        finally:
            if self._server is not None:
                self._server.forget(key)

    def _read_bulk(self, addr: int, nbytes: int) -> tuple[dict, np.ndarray | None]:
        key, url, buf = self._server.expect(nbytes)
        try:
            r = self.send({"op": "read", "addr": addr, "bytes": nbytes, "url": url})
        finally:
            if self._server is not None:
                self._server.forget(key)
        return r, (np.frombuffer(buf, np.uint8) if r["ok"] else None)

    def send_step(self, tokens_addr: int, tokens: np.ndarray, lr: float) -> dict:
        """The step command: the page fetches the tokens from the server, then times train_step."""
        key, url = self._server.offer(tokens)
        try:
            return self.send({"op": "step", "tokens_addr": tokens_addr, "tokens_url": url, "lr": lr})
        finally:
            if self._server is not None:
                self._server.forget(key)

    def peak_rss(self) -> int | None:
        return self._chrome.peak_rss() if self._chrome is not None else None

    def _kill(self) -> None:
        chrome, server, self._chrome, self._server = self._chrome, self._server, None, None
        if chrome is not None:
            chrome.close()
        if server is not None:
            server.close()


class WasmChromeBackend(WasmV8Backend):
    name = "wasm-chrome"
    label = NAME
    fault_kinds = (*WasmV8Backend.fault_kinds, "renderer-crash")  # Page.crash before each step

    def __init__(self, threads: int | None = None, relaxed_simd: bool | None = None, initial_memory: int | None = None,
                 max_memory: int | None = None, module_path: str | None = None, fault: str | None = None,
                 matmul_kernel: str = "shuffle", browser: str | None = None):
        """The wasm-v8 backend's options, and browser: the Chromium to run (default: the
        system's; $TINYGPT_BENCH_BROWSER)."""
        self.browser = browser
        try:
            w.WasmBackend.__init__(self, threads=threads, relaxed_simd=relaxed_simd, initial_memory=initial_memory,
                                   max_memory=max_memory, module_path=module_path, fault=fault,
                                   matmul_kernel=matmul_kernel)
        except UserError as e:
            raise UserError(str(e).replace("wasm backend:", f"{self.label}:", 1)) from None
        self.node = None
        self.versions = self.runtime.versions
        self.last_step_ns: int | None = None

    def make_runtime(self) -> ChromeRuntime:
        return ChromeRuntime(self.module_path, self.threads, self.initial_memory, self.max_memory, self.browser)

    def _runtime_text(self) -> str:
        try:
            self.runtime.launch()  # V8's version is the running browser's
        except w.WasmError:  # stages() and load() start it again and say why it failed
            pass
        v = self.runtime.versions
        return f"{v['browser']} (V8 {v['v8']})"

    def describe(self) -> dict:
        runtime = self._runtime_text()
        d = w.WasmBackend.describe(self)
        d.pop("spectre_guards", None)
        v = self.runtime.versions
        d.update({
            "backend": self.name,
            "runtime": runtime,
            "browser_version": v["browser"],
            "v8_version": v["v8"],
            "browser_path": self.runtime.browser_path,
            "step_timing": "performance.now() in the page's tid-0 Worker around train_step (last_step_ns; "
                           "protocol.train uses it)",
            "runtime_settings": f"threads={self.threads} simd128 relaxed_simd={'on' if self.relaxed_simd else 'off'} "
                                f"matmul_kernel={self.matmul_kernel} memory64 max={self.max_memory} "
                                f"browser={v['browser']} v8={v['v8']}",
        })
        return d

    def limits(self) -> dict:
        d = w.WasmBackend.limits(self)
        d.pop("spectre_guards", None)
        d["runtime"] = self._runtime_text()
        return d

    def browser_pids(self) -> list[int]:
        return self.runtime.browser_pids()

    def step(self, batch: np.ndarray, lr: float = DEFAULT_LR) -> float:
        if self.fault == "renderer-crash" and self.runtime.started:
            self.runtime.crash_page()
        return super().step(batch, lr)
