"""Which flags give headless Chromium's WebGPU the machine's GPU (issue 29)?

Starts the browser (tinygpt_bench.browser, as the backends do) once per flag set, opens a blank
page on the local server and asks navigator.gpu for an adapter three ways (default, high
performance, compatibility); then reads chrome://gpu's lines about Vulkan, WebGPU and the GPU,
and the browser's last log lines. One JSON line per flag set; a summary table last.

    python dev/chrome_gpu_probe.py [--browser PATH] [--out FILE] [--logs DIR] [SET ...]

SET names one of FLAG_SETS (default: all of them).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tinygpt_bench import browser as br  # noqa: E402

WEBGPU = ("--enable-unsafe-webgpu", "--enable-webgpu-developer-features")
VULKAN = ("--enable-features=Vulkan", "--use-vulkan=native", "--use-angle=vulkan", "--ignore-gpu-blocklist")
LOG = ("--enable-logging=stderr", "--v=0")
FLAG_SETS = {
    "backend-gpu": WEBGPU + VULKAN,
    "enable-gpu": WEBGPU + VULKAN + ("--enable-gpu",),
    "gl-angle": WEBGPU + VULKAN + ("--enable-gpu", "--use-gl=angle"),
    "no-gpu-sandbox": WEBGPU + VULKAN + ("--enable-gpu", "--use-gl=angle", "--disable-gpu-sandbox",
                                         "--disable-vulkan-surface"),
    "adapter-vulkan": WEBGPU + ("--enable-features=Vulkan", "--ignore-gpu-blocklist", "--enable-gpu",
                                "--use-webgpu-adapter=vulkan"),
    "egl": WEBGPU + ("--ignore-gpu-blocklist", "--enable-gpu", "--use-gl=angle", "--use-angle=gl-egl"),
    "angle-vulkan-all": WEBGPU + ("--enable-features=Vulkan,VulkanFromANGLE,DefaultANGLEVulkan", "--use-gl=angle",
                                  "--use-angle=vulkan", "--ignore-gpu-blocklist", "--enable-gpu",
                                  "--disable-vulkan-surface", "--disable-gpu-sandbox",
                                  "--disable-software-rasterizer", "--disable-dawn-features=disallow_unsafe_apis"),
    "high-perf": WEBGPU + VULKAN + ("--enable-gpu", "--use-webgpu-power-preference=default-high-performance",
                                    "--disable-software-rasterizer"),
}
VERBOSE = ("--vmodule=*dawn*=2,*webgpu*=2,*vulkan*=2,*gpu_init*=2,*gpu_info*=2",)

ASK = """(async () => {
  const out = {};
  if (!navigator.gpu) return {error: 'no navigator.gpu'};
  for (const [k, o] of Object.entries({default: {}, high: {powerPreference: 'high-performance'},
                                        compat: {featureLevel: 'compatibility'}})) {
    try {
      const a = await navigator.gpu.requestAdapter(o);
      out[k] = a ? {vendor: a.info.vendor, architecture: a.info.architecture, device: a.info.device,
                    description: a.info.description, fallback: a.info.isFallbackAdapter,
                    fl: a.featureLevel} : null;
    } catch (e) { out[k] = {error: String(e)}; }
  }
  return out;
})()"""

GPU_PAGE = """(async () => {
  for (let i = 0; i < 50 && !document.body.innerText.includes('Driver'); i++)
    await new Promise(r => setTimeout(r, 100));
  return document.body.innerText;
})()"""

KEEP = ("vulkan", "webgpu", "gpu0", "driver", "angle", "vendor", "gl_renderer", "dawn", "disabled",
        "swiftshader", "nvidia", "blocklist", "problem")


def probe(name: str, flags: tuple[str, ...], path: str | None, logs: Path | None = None) -> dict:
    rec: dict = {"set": name, "flags": list(flags)}
    server = br.Server()
    page = Path(tempfile.mkdtemp()) / "blank.html"
    page.write_text("<!doctype html><title>probe</title>")
    chrome = br.Chromium(path, flags + LOG + (VERBOSE if logs else ()), name="Chromium")
    try:
        chrome.start()
        chrome.open(server.add_file("blank.html", page))
        rec["adapters"] = chrome.evaluate(ASK, timeout=60)
        try:
            chrome.open("chrome://gpu")
            text = chrome.evaluate(GPU_PAGE, timeout=30) or ""
            rec["gpu_page"] = [ln.strip() for ln in text.splitlines()
                               if any(k in ln.lower() for k in KEEP)][:60]
        except br.BrowserError as e:
            rec["gpu_page"] = [f"unreadable: {e}"]
    except br.BrowserError as e:
        rec["error"] = str(e)
    finally:
        rec["stderr"] = chrome.stderr_tail(25).splitlines() if chrome._stderr else []
        if logs and chrome._stderr:
            logs.mkdir(parents=True, exist_ok=True)
            chrome._stderr.seek(0)
            (logs / f"{name}.stderr.txt").write_bytes(chrome._stderr.read()[-2_000_000:])
        chrome.close()
        server.close()
    return rec


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("sets", nargs="*", default=list(FLAG_SETS))
    ap.add_argument("--browser")
    ap.add_argument("--out")
    ap.add_argument("--logs", help="a folder for each set's whole browser log (verbose about Dawn and Vulkan)")
    a = ap.parse_args()
    recs = [probe(s, FLAG_SETS[s], a.browser, Path(a.logs) if a.logs else None) for s in a.sets]
    if a.out:
        Path(a.out).write_text("".join(json.dumps(r) + "\n" for r in recs))
    for r in recs:
        ad = r.get("adapters") or {}
        cells = [f"{k}={(v or {}).get('vendor') or ''}/{(v or {}).get('device') or (v or {}).get('description') or v}"
                 for k, v in ad.items()] if isinstance(ad, dict) else [str(ad)]
        print(f"{r['set']:<16} {r.get('error', '')[:80]} {' '.join(cells)}"[:300])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
