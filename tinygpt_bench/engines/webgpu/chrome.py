"""The WebGPU engine in Chromium (backend `webgpu-chrome`): the engine's training step replayed
by Chrome's WebGPU in a web page, as a page gets it: the GPU process, the commands serialised
from the renderer to it, the browser's validation and limits.

Nothing of the step is written twice. The plan (plan.py) is exported from the very Program
that backend.record() fills for the wgpu-py backends, recorded here on an AdapterPlan made of
the page's adapter (its type, features and limits, read from the page), so the dispatches the
page runs are the engine's and nothing else; a digest of the plan goes into every row, and
equals webgpu's and webgpu-dawn's where the adapters' tunings are the same. The page
(chrome_page.html, chrome_replay.mjs) fetches the plan, the WGSL texts and the weights from
the harness's local server (tinygpt_bench/browser.py, shared with wasm-chrome), builds every
object on its device, then runs one compute pass a step: the step's two queue writes (tokens,
step record) and the 12-byte readback, as the Python backends do. Each step is timed inside the
page with performance.now(), from the first write to the mapped readback (the span
protocol.train times around the Python backends' step), and, where the adapter has
timestamp queries, the pass's GPU time beside it.

Adapters (--adapter): 'swiftshader' (Chrome's own CPU adapter, --enable-unsafe-webgpu; the
default on a machine without a GPU), 'compat' (lavapipe through ANGLE on OpenGL ES, in
WebGPU's compatibility mode: Chrome refuses lavapipe as a core adapter), 'gpu' (the machine's
GPU over Vulkan; the default where an NVIDIA device node exists).
"""

from __future__ import annotations

import collections
import glob
import json
import re
import time
from pathlib import Path

import numpy as np

from tinygpt_bench import browser as br
from tinygpt_bench.engines.base import DEFAULT_LR, Backend
from tinygpt_bench.engines.webgpu import ops, plan as planmod
from tinygpt_bench.engines.webgpu.backend import (SHADER_FAULT, SHADER_FALLBACK, WebGPUBackend, kernel_of, parse_fault,
                                                   plan_rows, step_floats, step_plan, step_tokens)
from tinygpt_bench.engines.webgpu.runtime import (UNIFORM_SLOT, AdapterPlan, WebGPUError, binding_access,
                                                  capped_limits, tuning_for)
from tinygpt_bench.errors import UserError
from tinygpt_bench.host import is_software_adapter
from tinygpt_bench.model import Layout
from tinygpt_bench.presets import Preset
from tinygpt_bench.resources import resource_dir, sha256_of

HERE = Path(__file__).resolve().parent
NAME = "webgpu-chrome backend"
# the browser's flags and requestAdapter() options of each adapter choice; developer features
# turn off Chrome's 100 us quantization of timestamps (the per-kernel profile needs them)
ADAPTERS = {
    "swiftshader": (("--enable-unsafe-webgpu", "--enable-webgpu-developer-features"), {}),
    "compat": (("--enable-unsafe-webgpu", "--enable-webgpu-developer-features", "--use-angle=vulkan",
                "--enable-features=Vulkan", "--use-vulkan=native", "--use-webgpu-adapter=opengles"),
               {"featureLevel": "compatibility"}),
    # the GPU process's own sandbox keeps the NVIDIA Vulkan driver from loading in a container
    # (vkCreateInstance -7, then SwiftShader); without it Chrome offers the GPU (the H100 machine,
    # dev/chrome_gpu_probe.py: every set without --disable-gpu-sandbox fell back). The browser
    # itself already runs --no-sandbox (root, headless, our own pages only).
    "gpu": (("--enable-unsafe-webgpu", "--enable-webgpu-developer-features", "--enable-features=Vulkan",
             "--use-vulkan=native", "--use-angle=vulkan", "--ignore-gpu-blocklist", "--enable-gpu",
             "--use-gl=angle", "--disable-gpu-sandbox", "--disable-vulkan-surface"), {}),
}
FAULT_KINDS = "shader, nan-grad, alias or limit=BYTES"
NULL_ADAPTER = "gave null"  # chrome_replay.mjs's words where requestAdapter gives null (a test holds both)
# JS limit names -> wgpu-py's, which AdapterPlan and plan_rows use
KEBAB = re.compile(r"([A-Z])")


def default_adapter() -> str:
    """'gpu' where the machine has an NVIDIA or AMD GPU device node, else 'swiftshader'."""
    return "gpu" if glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/kfd") else "swiftshader"


class PageAdapter:
    """The page's adapter as AdapterPlan and tuning_for read one: info, features, limits."""

    def __init__(self, facts: dict):
        info = facts["info"]
        text = " ".join(str(info.get(k) or "") for k in ("vendor", "architecture", "device", "description"))
        cpu = bool(info.get("isFallbackAdapter")) or bool(re.search(r"swiftshader|llvmpipe|lavapipe", text, re.I))
        name = info.get("description") or info.get("device") or info.get("architecture") or "?"
        self.info = {"device": name, "description": info.get("description") or "", "vendor": info.get("vendor") or "",
                     "architecture": info.get("architecture") or "", "adapter_type": "CPU" if cpu else "GPU",
                     "backend_type": f"Chrome WebGPU ({facts.get('featureLevel', 'core')})"}
        self.features = set(facts.get("device_features") or facts.get("features") or ())
        self.limits = {KEBAB.sub(lambda m: "-" + m.group(1).lower(), k): v for k, v in facts["limits"].items()}


class ChromeWebGPUBackend(Backend):
    name = "webgpu-chrome"
    capabilities = frozenset({"plan", "limits", "profile", "memory_bytes", "stages"})

    def __init__(self, adapter: str | None = None, browser: str | None = None, fault: str | None = None):
        """adapter: 'swiftshader', 'compat' or 'gpu' (default: default_adapter()). browser: the
        Chromium to run (default: the system's; $TINYGPT_BENCH_BROWSER). fault: 'shader' (a
        kernel with a typo, rejected by the page's device), 'nan-grad', 'limit=BYTES' (as the
        webgpu backend's), 'alias' (one dispatch binds a writable buffer twice: invalid WebGPU,
        which the page's validation must catch and name)."""
        choice = (adapter or default_adapter()).lower()
        if choice not in ADAPTERS:
            raise UserError(f"{NAME}: --adapter {adapter}: choose one of {', '.join(ADAPTERS)}")
        self.adapter_choice = choice
        if fault == "alias":
            self.fault_kind, self.cap = "alias", None
        else:
            try:
                self.fault_kind, self.cap = parse_fault(fault, self.name)
            except UserError as e:
                raise UserError(str(e).replace("shader, nan-grad or limit=BYTES", FAULT_KINDS)) from None
        self.fault = fault
        self.browser_path = br.browser_path(browser)
        self.browser_version = br.browser_version(self.browser_path)["browser"]
        self._chrome: br.Chromium | None = None
        self._server: br.Server | None = None
        self.facts: dict | None = None
        self.adapter: PageAdapter | None = None
        self.launch_log: list[dict] = []
        self.build_log: list[dict] = []
        self.last_step_ns: int | None = None
        self.last_gpu_ns: int | None = None
        self._free()

    def _free(self) -> None:
        self.preset = self.planned = self.plan = None
        self.built_for: str | None = None
        self.t = 0
        self._last_inputs = None

    # ---- the browser, its page and its adapter --------------------------------------------
    def _call(self, method: str, arg: dict | None = None, stage: str | None = None, timeout: float | None = None):
        """`await tinygpt.<method>(arg)` in the page; a failed reply or a dead page is a WebGPUError
        naming the stage."""
        stage = stage or method
        try:
            r = self._chrome.evaluate(f"tinygpt.{method}({json.dumps(arg or {})})", timeout=timeout, stage=stage)
        except br.BrowserError as e:
            self.close()
            raise WebGPUError(f"{NAME}: stage {e.stage}: {e}") from None
        if not isinstance(r, dict) or not r.get("ok"):
            err = " ".join(str(r.get("error")).split()) if isinstance(r, dict) else repr(r)  # one line
            raise WebGPUError(f"{NAME}: stage {(r or {}).get('stage', stage)}: {err}")
        return r

    def launch(self) -> None:
        """The browser, the server and the page, and the page's adapter and device (once)."""
        if self._chrome is not None:
            return
        flags, opts = ADAPTERS[self.adapter_choice]
        self.launch_log = []
        t0 = time.perf_counter()
        self._server = br.Server()
        for name in ("chrome_page.html", "chrome_replay.mjs"):
            self._server.add_file(name, HERE / name)
        self._chrome = br.Chromium(self.browser_path, flags, name="Chromium")
        try:
            self._chrome.start()
            self._log(self.launch_log, "launch", t0, f"{self.browser_version} (V8 {self._chrome.js_version})")
            t0 = time.perf_counter()
            self._chrome.open(self._server.url("chrome_page.html"))
            self._log(self.launch_log, "page", t0, f"loaded from {self._server.origin}")
            t0 = time.perf_counter()
            self.facts = self._call("open", {**opts, "timestamps": True}, stage="adapter", timeout=120)
        except WebGPUError as e:
            self.close()
            if self.adapter_choice == "gpu" and NULL_ADAPTER in str(e):
                # seen on a machine without a GPU: under the GPU flags Chrome gives SwiftShader on
                # some launches and no adapter at all on others (about 1 in 4 here); both mean no GPU
                raise self._no_gpu_adapter("none at all: requestAdapter gave null") from None
            raise
        except br.BrowserError as e:
            self.close()
            raise WebGPUError(f"{NAME}: stage {e.stage}: {e}") from None
        except BaseException:
            self.close()
            raise
        self.adapter = PageAdapter(self.facts)
        if self.adapter_choice == "gpu" and self.adapter.info["adapter_type"] == "CPU":
            # Chrome falls back to SwiftShader where it cannot use the GPU: a number measured so
            # would be the CPU's under the GPU's name
            device = self.adapter.info["device"]
            self.close()
            raise self._no_gpu_adapter(f"only its CPU adapter, {device}")
        self._log(self.launch_log, "adapter", t0, f"{self.adapter.info['device']} ({self.adapter.info['adapter_type']}, "
                  f"{self.adapter.info['backend_type']}); timestamps "
                  + ("yes" if "timestamp-query" in self.adapter.features else "no"))

    @staticmethod
    def _no_gpu_adapter(offered: str) -> WebGPUError:
        return WebGPUError(f"{NAME}: --adapter gpu: Chrome offered no GPU adapter ({offered}); fix: check the GPU's "
                           "Vulkan driver (dev/chrome_gpu_probe.py shows what Chrome sees), or --adapter swiftshader "
                           "to measure the CPU adapter")

    @staticmethod
    def _log(log: list, name: str, t0: float, figure: str, ms: float | None = None) -> None:
        took = ms if ms is not None else (time.perf_counter() - t0) * 1e3
        log.append({"name": name, "ms": round(took, 3), "figure": figure, "ok": True, "error": ""})

    def _limits(self) -> dict:
        return capped_limits(self.adapter.limits, self.cap)

    def _adapter_plan(self) -> AdapterPlan:
        return AdapterPlan(self.adapter, self._limits())

    # ---- diagnose and preflight -----------------------------------------------------------
    @classmethod
    def plan(cls, preset: Preset, adapter: str | None = None, browser: str | None = None, fault: str | None = None,
             **_ignored) -> list[dict]:
        """plan_rows against the page's adapter (a browser is started to read it, nothing is
        built), and each kernel's storage bindings against max-storage-buffers-per-shader-stage."""
        if fault is None:
            from tinygpt_bench import faults

            fault = faults.for_backend(cls.name, preset.name)
        be = cls(adapter=adapter, browser=browser, fault=fault)
        try:
            be.launch()
            sp = be._step_plan(preset)
            return plan_rows(sp, be._limits(), be.adapter.info["device"], fault if be.cap is not None else None)
        finally:
            be.close()

    def _step_plan(self, preset: Preset):
        """The step's plan on the page's adapter; a UserError where the adapter cannot run it: a
        workgroup count past its limits, or a kernel binding more storage buffers than it allows
        (SwiftShader: 10 a stage)."""
        try:
            sp = step_plan(preset, self._adapter_plan(), self.fault if self.fault_kind == "nan-grad" else None)
        except WebGPUError as e:
            raise UserError(f"{self.name} backend: preset '{preset.name}' cannot be planned on this adapter: {e}") from None
        per_stage = self.adapter.limits.get("max-storage-buffers-per-shader-stage")
        for family in sorted({d.family for d in sp.recorded.dispatches}):
            n = len(binding_access(family))
            if per_stage is not None and n > per_stage:
                raise UserError(f"{self.name} backend: kernel {family}.wgsl binds {n} storage buffers; the adapter "
                                f"'{self.adapter.info['device']}' allows {per_stage} a shader stage; fix: another "
                                f"--adapter ({', '.join(ADAPTERS)})")
        return sp

    def stages(self, preset: Preset | None = None) -> list[dict]:
        """launch, page, adapter; with a preset, the build of its plan on the page's device
        (modules, pipelines, buffers, bind groups), each timed: diagnose reports them."""
        try:
            self.launch()
            if preset is not None:
                self._build(preset)
        except (WebGPUError, UserError) as e:
            done = self.launch_log + self.build_log
            failed = re.search(r"stage ([\w -]+?):", str(e))
            return done + [{"name": failed.group(1) if failed else "build", "ok": False, "ms": None, "figure": "",
                            "error": str(e)}]
        return self.launch_log + self.build_log

    def limits(self) -> dict:
        self.launch()
        lim = self._limits()
        return {"adapter": self.adapter.info["device"], **lim, "adapter_limits": self.adapter.limits,
                "cap_bytes": self.cap, "fault": self.fault, "features": sorted(self.adapter.features),
                "timestamp_query": "timestamp-query" in self.adapter.features,
                "tuning": tuning_for(self.adapter)}

    def describe(self) -> dict:
        self.launch()
        info = self.adapter.info
        stamps = "timestamp queries around the pass beside it" if "timestamp-query" in self.adapter.features \
            else "no timestamp queries (onSubmittedWorkDone is inside the span)"
        d = {"backend": self.name, "api": "WebGPU (Chrome's, in a web page)", "adapter": info["device"],
             "description": info["description"], "vendor": info["vendor"], "architecture": info["architecture"],
             "backend_api": info["backend_type"], "adapter_type": info["adapter_type"],
             "features": sorted(self.adapter.features), "limits": self.adapter.limits,
             "browser_version": self.browser_version, "v8_version": self._chrome.js_version,
             "browser_path": self.browser_path,
             "step_timing": f"performance.now() in the page from the step's first queue write to its mapped readback; "
                            f"{stamps}"}
        d.update(device=info["device"], device_type=info["adapter_type"],
                 software_adapter=is_software_adapter({"device": info["device"], "adapter_type": info["adapter_type"],
                                                       "description": info["description"]}),
                 adapter_vendor=info["vendor"], adapter_driver=info["description"], adapter_api=info["backend_type"],
                 runtime=f"{self.browser_version} (WebGPU: Dawn in Chrome)",
                 kernels_sha256=sha256_of(list(resource_dir("kernels").glob("*.wgsl"))),
                 runtime_settings=f"adapter={self.adapter_choice}, step timed in the page (performance.now"
                                  + (", pass GPU time by timestamps)" if "timestamp-query" in self.adapter.features
                                     else ")")
                                  + (f", plan={self.plan_sha256()[:16]}" if self.plan is not None else ""))
        if self.plan is not None:
            d["plan_sha256"] = self.plan_sha256()
        if info["adapter_type"] == "CPU":
            d["note"] = "CPU adapter (SwiftShader or lavapipe): not a GPU result"
        if self.fault:
            d["fault"] = self.fault
        return d

    def plan_sha256(self) -> str | None:
        """The digest of the built plan (plan.py), as the webgpu backends' own."""
        return planmod.digest(self.plan) if self.plan is not None else None

    # ---- the contract -----------------------------------------------------------------------
    def _build(self, preset: Preset) -> None:
        """The preset's plan built on the page's device (once a preset): modules, pipelines,
        buffers (zeroed), uniforms, bind groups."""
        if self.built_for == preset.name:
            return
        self.launch()
        sp = self._step_plan(preset)
        WebGPUBackend.check_limits(plan_rows(sp, self._limits(), self.adapter.info["device"],
                                             self.fault if self.cap else None))
        data = planmod.plan_data(sp.recorded, sp.storage)
        if self.fault_kind == "alias":
            alias_one_dispatch(data)
        kernels = planmod.kernel_texts(data)
        if self.fault_kind == "shader":
            family, needle, typo = SHADER_FAULT
            code = kernels.get(family, "")
            kernels[family] = code.replace(needle, typo, 1) if needle in code else code + SHADER_FALLBACK
        keys = []
        try:
            kp, purl = self._server.offer(json.dumps(data).encode())
            kk, kurl = self._server.offer(json.dumps(kernels).encode())
            keys = [kp, kk]
            t0 = time.perf_counter()
            r = self._call("build", {"planUrl": purl, "kernelsUrl": kurl}, stage="pipelines")
        except WebGPUError as e:
            if self.fault_kind == "shader":
                raise WebGPUError(f"{e}; fault 'shader' was injected (TINYGPT_BENCH_FAULT)") from None
            raise
        finally:
            for k in keys:
                if self._server is not None:
                    self._server.forget(k)
        self.build_log = []
        self._log(self.build_log, "pipelines", t0, f"{r['pipelines']} pipelines of {len(kernels)} kernel files for "
                  f"{r['dispatches']} dispatches: modules {r['modules_ms']:.0f} ms, pipelines {r['pipelines_ms']:.0f} ms, "
                  f"buffers {r['buffers_ms']:.0f} ms, bind groups {r['bind_groups_ms']:.0f} ms",
                  r["modules_ms"] + r["pipelines_ms"] + r["buffers_ms"] + r["bind_groups_ms"])
        self.build_log[-1]["detail"] = r
        self.preset, self.planned, self.plan, self.built_for = preset, sp, data, preset.name

    def load(self, preset: Preset, params: np.ndarray) -> None:
        layout = Layout(preset)
        params = np.asarray(params)
        if params.shape != (layout.total,):
            raise ValueError(f"parameters have shape {params.shape}; preset '{preset.name}' needs ({layout.total},)")
        if self.built_for is not None and self.t:  # a second load: a fresh device state
            self.close()
        self._build(preset)
        self._upload("params", np.ascontiguousarray(params, dtype=np.float32))
        self._upload("decay_mask", ops.decay_bits(self.planned.layout.decay_mask(bool)))
        self.t = 0

    def _upload(self, buffer: str, data: np.ndarray) -> None:
        key, url = self._server.offer(data)
        try:
            self._call("upload", {"buffer": buffer, "url": url}, stage="load")
        finally:
            if self._server is not None:  # a dead browser closed it (and the error says why)
                self._server.forget(key)

    def _inputs(self, batch: np.ndarray, lr: float) -> dict:
        if self.plan is None:
            raise RuntimeError(f"{self.name} backend: call load(preset, params) before step()")
        tokens = step_tokens(self.preset, self.planned.tl, np.asarray(batch))
        self.t += 1
        floats = [float(x) for x in step_floats(lr, self.t)]
        return tokens, floats

    def _step(self, batch: np.ndarray, lr: float) -> dict:
        """One step in the page; the tokens go by the server (fetched before the page's timer)."""
        tokens, floats = self._inputs(batch, lr)
        key, url = self._server.offer(tokens)
        try:
            return self._call("step", {"tokensUrl": url, "floats": floats})
        finally:
            if self._server is not None:
                self._server.forget(key)

    def step(self, batch: np.ndarray, lr: float = DEFAULT_LR) -> float:
        r = self._step(batch, lr)
        self.last_step_ns, self.last_gpu_ns = int(r["ns"]), r.get("gpu_ns")
        loss = float(r["loss"])
        if not np.isfinite(loss):
            raise FloatingPointError(f"{self.name} backend: loss is {loss} at step {self.t}")
        return loss

    def _read(self, buffer: str) -> np.ndarray:
        if self.plan is None:
            raise RuntimeError(f"{self.name} backend: call load(preset, params) first")
        n = self.planned.layout.total
        key, url, buf = self._server.expect(4 * n)
        try:
            self._call("read", {"buffer": buffer, "bytes": 4 * n, "url": url})
        finally:
            if self._server is not None:
                self._server.forget(key)
        return np.frombuffer(buf, np.float32).copy()

    def parameters(self) -> np.ndarray:
        return self._read("params")

    def gradients(self) -> np.ndarray:
        if self.t == 0:
            raise RuntimeError(f"{self.name} backend: no gradient yet; call step() first")
        return self._read("grads")

    def memory_bytes(self) -> int | None:
        if self.plan is None:
            return None
        return sum(b["bytes"] for b in self.plan["buffers"]) + max(1, len(self.plan["dispatches"])) * UNIFORM_SLOT + 16

    def profile(self, batch: np.ndarray | None = None, lr: float = DEFAULT_LR) -> dict[str, float]:
        """{kernel: ms of one step}: each dispatch in its own pass between timestamp queries in
        the page (Chrome's quantization off: --enable-webgpu-developer-features), summed by
        kernel as the webgpu backend's profile. It runs a step on `batch` (or the last inputs)."""
        if batch is not None:
            self._step(batch, lr)
        r = self._call("profile")
        out = collections.Counter()
        for d, ns in zip(self.plan["dispatches"], r["ns"]):
            out[kernel_of(d["name"])] += ns / 1e6
        return dict(out.most_common())

    def browser_pids(self) -> list[int]:
        return self._chrome.pids() if self._chrome is not None else []

    def close(self) -> None:
        chrome, server, self._chrome, self._server = self._chrome, self._server, None, None
        if chrome is not None:
            chrome.close()
        if server is not None:
            server.close()
        self._free()


def alias_one_dispatch(data: dict) -> str:
    """Fault 'alias': the first dispatch with a writable storage binding and another storage
    binding gets the writable one's buffer in that other binding too: invalid WebGPU (the
    writable-binding aliasing rule), which only the device's validation can catch now."""
    for d in data["dispatches"]:
        family = data["pipelines"][d["pipeline"]]["family"]
        access = binding_access(family)
        writable = [b for b in d["bindings"] if access.get(int(b)) == "read_write"]
        others = [b for b in d["bindings"] if b not in writable]
        if writable and others:
            d["bindings"][others[0]] = d["bindings"][writable[0]]
            return d["name"]
    raise WebGPUError("fault 'alias': no dispatch has a writable and another storage binding")
