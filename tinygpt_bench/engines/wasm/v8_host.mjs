// The V8 host of the tinygpt wasm64 module (backend `wasm-v8`, tinygpt_bench/engines/wasm/v8.py).
//
// One Node process per backend instance. It runs wasm/tinygpt.wasm unchanged, as the
// wasmtime host does: one shared 64-bit WebAssembly.Memory, the module instantiated on
// the main thread, and N - 1 worker_threads, each instantiating the same module on the
// same memory with its own stack (carved from the module's heap by `alloc`, set through
// the exported __stack_pointer) and parked inside worker_loop(tid).
//
// Protocol: one JSON object a line on stdin (commands), one JSON object a line on stdout
// (replies), strictly in turn. Bulk data (parameters, gradients) goes through files the
// Python side names; tokens go inline as base64. Every reply is {ok: true, ...} or
// {ok: false, error, trap?, worker_errors?}. Node exits when stdin closes.
//
// Commands:
//   start {module, threads, initial_bytes, max_memory}     compile, memory, instances, workers
//   call {name, args}             call an export; i64 parameters as listed in I64_PARAMS
//   write {addr, file}            the file's bytes into memory at addr
//   write64 {addr, data}          base64 bytes into memory at addr (small writes)
//   read {addr, bytes, file}      memory [addr, addr + bytes) into the file
//   read64 {addr, bytes}          memory [addr, addr + bytes) as base64 (small reads)
//   step {tokens_addr, tokens, lr}  tokens (base64 int32) into memory, then train_step(lr)
//                                 timed with process.hrtime around the call: {loss, ns}
//   memory                        {bytes, peak_rss}: the memory's current size, Node's peak RSS
//   stop                          pool_stop, workers joined, then exit
import { Worker, isMainThread, workerData } from "node:worker_threads";
import fs from "node:fs";
import readline from "node:readline";

const PAGE = 65536;
// exports whose parameters are size_t / pointers (i64 in wasm64): BigInt arguments
const I64_PARAMS = {
  alloc: [0], heap_reset: [0], memory_set_limit: [0], grow_in_region: [0],
  bench_matmul: [0, 1, 2], bench_gelu: [0, 1, 2, 3],
};
const ERR_BYTES = 4096; // shared buffer where a dying worker leaves its error text

function imports(memory) {
  return { env: { memory, clock_ns: () => process.hrtime.bigint() } };
}

function errorText(e) {
  // "RuntimeError: unreachable (innermost frame wasm-function[12]:0x3ab)"
  const msg = `${e && e.name ? e.name : "Error"}: ${e && e.message !== undefined ? e.message : e}`;
  const frame = String((e && e.stack) || "").split("\n").map((s) => s.trim()).find((s) => s.includes("wasm-function"));
  const where = frame ? frame.match(/wasm-function\[\d+\]:0x[0-9a-f]+/) : null;
  return where ? `${msg} (innermost frame ${where[0]})` : msg;
}

if (!isMainThread) {
  // a worker: same module, same memory, own stack; parks in worker_loop until pool_stop
  const { module, memory, tid, stack, abortAddr, errSab } = workerData;
  try {
    const inst = new WebAssembly.Instance(module, imports(memory));
    inst.exports.__stack_pointer.value = BigInt(stack);
    inst.exports.worker_loop(tid);
  } catch (e) {
    // a trap in a worker: leave the text for the main thread, make the caller trap, not hang
    const text = new TextEncoder().encode(`worker ${tid}: ${errorText(e)}`.slice(0, ERR_BYTES - 8));
    const head = new Int32Array(errSab, 0, 1);
    if (Atomics.compareExchange(head, 0, 0, text.length) === 0) new Uint8Array(errSab, 4).set(text);
    Atomics.store(new Int32Array(memory.buffer), Number(abortAddr) / 4, 1);
  }
} else {
  await main();
}

async function main() {
  let module = null, memory = null, ex = null, workers = [], errSab = new SharedArrayBuffer(ERR_BYTES);
  const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
  const num = (v) => (typeof v === "bigint" ? Number(v) : v);
  const workerErrors = () => {
    const n = Atomics.load(new Int32Array(errSab, 0, 1), 0);
    return n ? [new TextDecoder().decode(new Uint8Array(errSab, 4, n).slice())] : [];
  };
  const bytes = (addr, n) => {
    if (addr + n > memory.buffer.byteLength) throw new RangeError(`address ${addr}+${n} past memory end ${memory.buffer.byteLength}`);
    return new Uint8Array(memory.buffer, addr, n); // re-read memory.buffer: growth gives a longer one
  };
  const call = (name, args = []) => {
    const f = ex[name];
    if (typeof f !== "function") throw new TypeError(`the module exports no function ${name}`);
    const big = I64_PARAMS[name] || [];
    return f(...args.map((a, i) => (big.includes(i) ? BigInt(a) : a)));
  };

  async function stopWorkers() {
    if (!ex) return;
    try { ex.pool_stop(); } catch (e) { /* the memory is still there; never block stop */ }
    await Promise.all(workers.map((w) => new Promise((res) => {
      const t = setTimeout(() => { w.terminate(); res(); }, 10000);
      w.once("exit", () => { clearTimeout(t); res(); });
    })));
    workers = [];
  }

  async function start(c) {
    let bytesOfModule;
    try {
      bytesOfModule = fs.readFileSync(c.module);
      module = new WebAssembly.Module(bytesOfModule);
    } catch (e) {
      return { ok: false, stage: "compile", error: `${c.module}: ${errorText(e)}` };
    }
    const mem = WebAssembly.Module.imports(module).find((i) => i.module === "env" && i.name === "memory");
    if (!mem) return { ok: false, stage: "compile", error: `${c.module} imports no env.memory` };
    const pages = Math.max(c.min_pages, Math.ceil((c.initial_bytes || 0) / PAGE));
    try {
      // i64-addressed memories take BigInt limits in V8 13.6 (Numbers in some earlier builds)
      try {
        memory = new WebAssembly.Memory({ initial: BigInt(pages), maximum: BigInt(c.max_pages), shared: true, address: "i64" });
      } catch (e) {
        if (!(e instanceof TypeError)) throw e;
        memory = new WebAssembly.Memory({ initial: pages, maximum: c.max_pages, shared: true, address: "i64" });
      }
    } catch (e) {
      return { ok: false, stage: "memory", error: errorText(e) };
    }
    try {
      ex = new WebAssembly.Instance(module, imports(memory)).exports;
    } catch (e) {
      return { ok: false, stage: "instantiate", error: errorText(e) };
    }
    const initial = memory.buffer.byteLength;
    const abortAddr = num(ex.pool_abort_addr());
    ex.memory_set_limit(BigInt(c.limit));
    const stacks = [];
    for (let t = 1; t < c.threads; t++) {
      const s = num(ex.alloc(BigInt(c.stack_bytes)));
      if (s === 0) return { ok: false, stage: "start", no_memory: `stack of worker ${t} of ${c.threads - 1}`, asked: c.stack_bytes };
      stacks.push(s);
    }
    for (let t = 1; t < c.threads; t++) {
      const w = new Worker(new URL(import.meta.url), {
        workerData: { module, memory, tid: t, stack: stacks[t - 1] + c.stack_bytes, abortAddr, errSab },
      });
      w.on("error", (e) => { // an error outside wasm (e.g. instantiation): as a worker trap
        const text = new TextEncoder().encode(`worker ${t}: ${errorText(e)}`.slice(0, ERR_BYTES - 8));
        if (Atomics.compareExchange(new Int32Array(errSab, 0, 1), 0, 0, text.length) === 0) new Uint8Array(errSab, 4).set(text);
      });
      workers.push(w);
    }
    const t0 = Date.now();
    while (ex.pool_started() < c.threads - 1) { // each worker is inside worker_loop
      const we = workerErrors();
      if (we.length) return { ok: false, stage: "start", error: we[0] };
      if (Date.now() - t0 > 60000) return { ok: false, stage: "start", error: "workers did not start within 60 s" };
      await new Promise((r) => setTimeout(r, 1));
    }
    if (ex.pool_set_threads(c.threads) !== 0) return { ok: false, stage: "start", no_memory: `matmul scratch for ${c.threads} threads`, asked: 0 };
    return { ok: true, initial_bytes: initial, memory_bytes: memory.buffer.byteLength, heap_mark: num(ex.heap_top()) };
  }

  async function handle(c) {
    switch (c.op) {
      case "hello":
        return { ok: true, node: process.versions.node, v8: process.versions.v8 };
      case "start":
        return await start(c);
      case "call":
        return { ok: true, result: num(call(c.name, c.args)) ?? null };
      case "step": {
        const tok = Buffer.from(c.tokens, "base64");
        bytes(c.tokens_addr, tok.length).set(tok);
        const t0 = process.hrtime.bigint();
        const loss = ex.train_step(c.lr);
        const ns = process.hrtime.bigint() - t0;
        return { ok: true, loss: Number.isFinite(loss) ? loss : String(loss), ns: Number(ns) };
      }
      case "write": {
        const fd = fs.openSync(c.file, "r");
        try {
          const n = fs.fstatSync(fd).size;
          const dst = bytes(c.addr, n);
          for (let off = 0; off < n;) off += fs.readSync(fd, dst, off, Math.min(n - off, 1 << 30), null);
          return { ok: true, bytes: n };
        } finally { fs.closeSync(fd); }
      }
      case "write64": {
        const data = Buffer.from(c.data, "base64");
        bytes(c.addr, data.length).set(data);
        return { ok: true, bytes: data.length };
      }
      case "read": {
        const src = bytes(c.addr, c.bytes);
        const fd = fs.openSync(c.file, "w");
        try {
          for (let off = 0; off < c.bytes;) off += fs.writeSync(fd, src, off, Math.min(c.bytes - off, 1 << 30));
        } finally { fs.closeSync(fd); }
        return { ok: true };
      }
      case "read64":
        return { ok: true, data: Buffer.from(bytes(c.addr, c.bytes)).toString("base64") };
      case "memory":
        return { ok: true, bytes: memory ? memory.buffer.byteLength : 0, peak_rss: process.resourceUsage().maxRSS * 1024 };
      case "stop":
        await stopWorkers();
        return { ok: true };
      default:
        return { ok: false, error: `unknown command ${c.op}` };
    }
  }

  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    if (!line.trim()) continue;
    let c, reply;
    try {
      c = JSON.parse(line);
      reply = await handle(c);
    } catch (e) {
      // a trap (or any error) in an export: the pool may be inconsistent; the caller closes
      reply = { ok: false, trap: e instanceof WebAssembly.RuntimeError, error: errorText(e), worker_errors: workerErrors() };
    }
    out(reply);
    if (c && c.op === "stop") break;
  }
  // stdin closed (the Python side is gone) or stop: never leave the process behind
  await Promise.race([stopWorkers(), new Promise((r) => setTimeout(r, 2000))]);
  process.exit(0);
}
