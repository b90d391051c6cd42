// The V8 host of the tinygpt wasm64 module in Node (backend `wasm-v8`,
// tinygpt_bench/engines/wasm/v8.py): host_core.mjs with Node's threads, files and clock.
//
// One Node process per backend instance. The module runs on Node's main thread (tid 0) and
// on N - 1 worker_threads running this same file, each parked in worker_loop.
//
// Protocol: one JSON object a line on stdin (commands), one JSON object a line on stdout
// (replies), strictly in turn; the commands are host_core.mjs's, plus `hello` {node, v8}.
// Bulk data (parameters, gradients) goes through files the Python side names ({file}); tokens
// go inline as base64. Steps are timed with process.hrtime. Node exits when stdin closes.
import { Worker, isMainThread, workerData } from "node:worker_threads";
import fs from "node:fs";
import readline from "node:readline";
import { makeHost, poolWorker } from "./host_core.mjs";

const platform = {
  clockNs: () => process.hrtime.bigint(),
  stepNs(fn) {
    const t0 = process.hrtime.bigint();
    const r = fn();
    return [r, process.hrtime.bigint() - t0];
  },
  loadModule: async (c) => new WebAssembly.Module(fs.readFileSync(c.module)),
  spawn(data, onError) {
    const w = new Worker(new URL(import.meta.url), { workerData: data });
    w.on("error", onError);
    const exited = new Promise((res) => w.once("exit", res));
    return {
      stop: () => Promise.race([exited, new Promise((res) => setTimeout(() => { w.terminate(); res(); }, 10000))]),
    };
  },
  async readInto(c, dstOf) {
    const fd = fs.openSync(c.file, "r");
    try {
      const n = fs.fstatSync(fd).size;
      const dst = dstOf(n);
      for (let off = 0; off < n;) off += fs.readSync(fd, dst, off, Math.min(n - off, 1 << 30), null);
      return n;
    } finally { fs.closeSync(fd); }
  },
  async writeOut(c, src) {
    const fd = fs.openSync(c.file, "w");
    try {
      for (let off = 0; off < src.length;) off += fs.writeSync(fd, src, off, Math.min(src.length - off, 1 << 30));
    } finally { fs.closeSync(fd); }
  },
  decode64: (text) => Buffer.from(text, "base64"),
  encode64: (u8) => Buffer.from(u8).toString("base64"),
  processFacts: () => ({ peak_rss: process.resourceUsage().maxRSS * 1024 }),
};

if (!isMainThread) {
  poolWorker(workerData, platform);
} else {
  const host = makeHost(platform);
  const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    if (!line.trim()) continue;
    let c;
    try {
      c = JSON.parse(line);
    } catch (e) {
      out({ ok: false, error: `not a JSON command: ${e.message}` });
      continue;
    }
    out(c.op === "hello" ? { ok: true, node: process.versions.node, v8: process.versions.v8 } : await host.request(c));
    if (c.op === "stop") break;
  }
  // stdin closed (the Python side is gone) or stop: never leave the process behind
  await Promise.race([host.stopWorkers(), new Promise((r) => setTimeout(r, 2000))]);
  process.exit(0);
}
