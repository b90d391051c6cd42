// The host of the tinygpt wasm64 module in Chromium (backend `wasm-chrome`, chrome.py):
// host_core.mjs with the browser's Workers, fetch and clock. The same file runs as the module's
// calling thread (tid 0: a dedicated Worker the page starts, taking the page's commands) and as
// each pool thread (a Worker started by tid 0, told so by its first message). Bulk data comes
// from and goes to the harness's local server ({url}); steps are timed with performance.now()
// (5 us resolution in a cross-origin isolated page).
import { makeHost, poolWorker } from "./host_core.mjs";

const UPLOAD_CHUNK = 64 << 20;

const platform = {
  clockNs: () => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6)),
  stepNs(fn) {
    const t0 = performance.now();
    const r = fn();
    return [r, Math.round((performance.now() - t0) * 1e6)];
  },
  async loadModule(c) {
    const resp = await fetch(c.module);
    if (!resp.ok) throw new Error(`HTTP ${resp.status} fetching the module`);
    return await WebAssembly.compileStreaming(resp);
  },
  spawn(data, onError) {
    const w = new Worker(new URL(import.meta.url), { type: "module" });
    w.onerror = (e) => { e.preventDefault(); onError(new Error(e.message || "the worker's script did not load")); };
    const exited = new Promise((res) => { w.onmessage = (e) => { if (e.data.exited) res(); }; });
    w.postMessage({ pool: data });
    return {
      async stop() {
        await Promise.race([exited, new Promise((res) => setTimeout(res, 10000))]);
        w.terminate();
      },
    };
  },
  async readInto(c, dstOf) {
    const resp = await fetch(c.url);
    if (!resp.ok) throw new Error(`HTTP ${resp.status} fetching ${c.url}`);
    const n = Number(resp.headers.get("Content-Length"));
    const dst = dstOf(n);
    const reader = resp.body.getReader();
    let off = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (off + value.length > n) throw new RangeError(`the server sent more than its ${n} bytes`);
      dst.set(value, off);
      off += value.length;
    }
    if (off !== n) throw new Error(`got ${off} of ${n} bytes from ${c.url}`);
    return n;
  },
  async writeOut(c, src) {
    for (let off = 0; off < src.length; off += UPLOAD_CHUNK) {
      const part = src.slice(off, Math.min(off + UPLOAD_CHUNK, src.length)); // a copy: fetch takes no shared buffer
      const resp = await fetch(`${c.url}?offset=${off}`, { method: "PUT", body: part });
      if (!resp.ok) throw new Error(`HTTP ${resp.status} sending bytes ${off}.. to ${c.url}`);
    }
  },
  async fetchBytes(url) {
    const resp = await fetch(url);
    if (!resp.ok) throw new Error(`HTTP ${resp.status} fetching ${url}`);
    return new Uint8Array(await resp.arrayBuffer());
  },
  decode64(text) {
    if (Uint8Array.fromBase64) return Uint8Array.fromBase64(text);
    const s = atob(text), out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  },
  encode64(u8) {
    const plain = u8.slice(); // toBase64 and String.fromCharCode want an unshared copy
    if (plain.toBase64) return plain.toBase64();
    let s = "";
    for (let i = 0; i < plain.length; i += 8192) s += String.fromCharCode(...plain.subarray(i, i + 8192));
    return btoa(s);
  },
  processFacts: () => ({}), // the harness reads the browser's processes from /proc
};

let host = null;
self.onmessage = async (e) => {
  if (e.data.pool) { // a pool thread: parks in worker_loop until pool_stop, then says so
    self.onmessage = null;
    poolWorker(e.data.pool, platform);
    self.postMessage({ exited: true });
    return;
  }
  host = host || makeHost(platform);
  self.postMessage({ id: e.data.id, reply: await host.request(e.data.command) });
};
self.postMessage({ ready: true });
