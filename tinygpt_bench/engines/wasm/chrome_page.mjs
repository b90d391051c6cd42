// The page's main thread for the wasm-chrome backend (chrome.py). A page's main thread may not
// block in memory.atomic.wait, so the module's calling thread (tid 0) runs in a dedicated
// Worker (chrome_host.mjs), which starts the pool's Workers itself. The harness drives the page
// over the DevTools protocol: `await tinygpt.request(command)` posts one command to that worker
// and resolves with its reply (host_core.mjs lists the commands).
const host = new Worker(new URL("chrome_host.mjs", import.meta.url), { type: "module" });
const pending = new Map();
let next = 0, failure = null, markReady;
const ready = new Promise((res) => { markReady = res; });

function failAll(error) {
  failure = failure || error;
  markReady({ ok: false, stage: "worker", error: failure });
  for (const res of pending.values()) res({ ok: false, stage: "worker", error: failure });
  pending.clear();
}

host.onmessage = (e) => {
  if (e.data.ready) return markReady({ ok: true });
  const res = pending.get(e.data.id);
  pending.delete(e.data.id);
  if (res) res(e.data.reply);
};
host.onerror = (e) => failAll(`the host worker failed: ${e.message || "its script did not load"}`);
host.onmessageerror = () => failAll("a reply of the host worker could not be read");

window.tinygpt = {
  isolated: self.crossOriginIsolated,
  ready: () => ready,
  request(command) {
    if (failure) return Promise.resolve({ ok: false, stage: "worker", error: failure });
    return new Promise((res) => {
      const id = next++;
      pending.set(id, res);
      host.postMessage({ id, command });
    });
  },
};
