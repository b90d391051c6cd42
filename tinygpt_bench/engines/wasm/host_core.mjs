// The host of the tinygpt wasm64 module that V8 runs, in Node (v8_host.mjs, backend `wasm-v8`)
// and in Chromium (chrome_host.mjs, backend `wasm-chrome`): one source for what both do.
//
// It runs wasm/tinygpt.wasm unchanged, as the wasmtime host does (runtime.py): one shared
// 64-bit WebAssembly.Memory, the module instantiated on the calling thread (tid 0), and
// N - 1 worker threads, each instantiating the same module on the same memory with its own
// stack (carved from the module's heap by `alloc`, set through the exported __stack_pointer)
// and parked inside worker_loop(tid).
//
// What differs between the two hosts is given as a `platform` object:
//   clockNs()                     BigInt nanoseconds (the module's clock_ns import)
//   stepNs(fn)                    [fn(), nanoseconds it took] timed with the host's own clock
//   loadModule(c)                 Promise of the compiled WebAssembly.Module named by c.module
//   spawn(data, onError)          start a worker thread running poolWorker(data); returns an
//                                 object with stop(): Promise, resolved once it has exited
//   readInto(c, dst)              Promise: fill dst (a Uint8Array on the memory) from c's source
//                                 (a file in Node, a URL of the harness's server in Chromium)
//   writeOut(c, src)              Promise: send src's bytes to c's destination
//   decode64(text) / encode64(u8) base64 <-> bytes
//   fetchBytes(url)               Promise of a URL's bytes (Chromium; Node's steps send them inline)
//   processFacts()                {peak_rss?}: what the host knows of its own process
//
// Commands (one object each, one reply object each; every reply is {ok: true, ...} or
// {ok: false, error, stage?, trap?, worker_errors?}):
//   start {module, threads, min_pages, max_pages, initial_bytes, stack_bytes, limit}
//   call {name, args}             call an export; i64 parameters as listed in I64_PARAMS
//   write {addr, ...source}       bytes from the source into memory at addr
//   write64 {addr, data}          base64 bytes into memory at addr (small writes)
//   read {addr, bytes, ...dest}   memory [addr, addr + bytes) to the destination
//   read64 {addr, bytes}          memory [addr, addr + bytes) as base64 (small reads)
//   step {tokens_addr, tokens | tokens_url, lr}  tokens (base64 int32, or a URL of the
//                                 harness's server) into memory, then train_step(lr), timed by
//                                 the host around the call: {loss, ns}
//   memory                        {bytes, ...processFacts()}: the memory's current size
//   stop                          pool_stop, workers joined

const PAGE = 65536;
// exports whose parameters are size_t / pointers (i64 in wasm64): BigInt arguments
const I64_PARAMS = {
  alloc: [0], heap_reset: [0], memory_set_limit: [0], grow_in_region: [0],
  bench_matmul: [0, 1, 2], bench_gelu: [0, 1, 2, 3],
};
export const ERR_BYTES = 4096; // shared buffer where a dying worker leaves its error text

export function errorText(e) {
  // "RuntimeError: unreachable (innermost frame wasm-function[12]:0x3ab)"
  const msg = `${e && e.name ? e.name : "Error"}: ${e && e.message !== undefined ? e.message : e}`;
  const frame = String((e && e.stack) || "").split("\n").map((s) => s.trim()).find((s) => s.includes("wasm-function"));
  const where = frame ? frame.match(/wasm-function\[\d+\]:0x[0-9a-f]+/) : null;
  return where ? `${msg} (innermost frame ${where[0]})` : msg;
}

function imports(memory, platform) {
  return { env: { memory, clock_ns: platform.clockNs } };
}

// A worker's text into the shared error buffer (the first one wins), then the caller's abort flag.
export function reportWorkerError(data, text) {
  const bytes = new TextEncoder().encode(text.slice(0, ERR_BYTES - 8));
  const head = new Int32Array(data.errSab, 0, 1);
  if (Atomics.compareExchange(head, 0, 0, bytes.length) === 0) new Uint8Array(data.errSab, 4).set(bytes);
  if (data.memory) Atomics.store(new Int32Array(data.memory.buffer), Number(data.abortAddr) / 4, 1);
}

// The body of a worker thread: same module, same memory, own stack; parks in worker_loop until
// pool_stop. A trap leaves its text for the caller and makes the caller trap, not hang.
export function poolWorker(data, platform) {
  const { module, memory, tid, stack } = data;
  try {
    const inst = new WebAssembly.Instance(module, imports(memory, platform));
    inst.exports.__stack_pointer.value = BigInt(stack);
    inst.exports.worker_loop(tid);
  } catch (e) {
    reportWorkerError(data, `worker ${tid}: ${errorText(e)}`);
  }
}

export function makeHost(platform) {
  let memory = null, ex = null, workers = [];
  const errSab = new SharedArrayBuffer(ERR_BYTES);
  const num = (v) => (typeof v === "bigint" ? Number(v) : v);
  const workerErrors = () => {
    const n = Atomics.load(new Int32Array(errSab, 0, 1), 0);
    return n ? [new TextDecoder().decode(new Uint8Array(errSab, 4, n).slice())] : [];
  };
  const bytes = (addr, n) => {
    const len = memory ? memory.buffer.byteLength : 0; // re-read memory.buffer: growth gives a longer one
    if (addr + n > len) throw new RangeError(`address ${addr}+${n} past memory end ${len}`);
    return new Uint8Array(memory.buffer, addr, n);
  };
  const call = (name, args = []) => {
    const f = ex && ex[name];
    if (typeof f !== "function") throw new TypeError(`the module exports no function ${name}`);
    const big = I64_PARAMS[name] || [];
    return f(...args.map((a, i) => (big.includes(i) ? BigInt(a) : a)));
  };

  async function stopWorkers() {
    if (!ex) return;
    try { ex.pool_stop(); } catch (e) { /* the memory is still there; never block stop */ }
    await Promise.all(workers.map((w) => w.stop()));
    workers = [];
  }

  async function start(c) {
    let module, t0 = Date.now();
    const ms = {}; // each part's wall time, for diagnose's start-up stages
    try {
      module = await platform.loadModule(c);
      ms.compile = Date.now() - t0;
    } catch (e) {
      return { ok: false, stage: "compile", error: `${c.module}: ${errorText(e)}` };
    }
    const mem = WebAssembly.Module.imports(module).find((i) => i.module === "env" && i.name === "memory");
    if (!mem) return { ok: false, stage: "compile", error: `${c.module} imports no env.memory` };
    const pages = Math.max(c.min_pages, Math.ceil((c.initial_bytes || 0) / PAGE));
    try {
      // i64-addressed memories take BigInt limits in V8 13.6+ (Numbers in some earlier builds)
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
      ex = new WebAssembly.Instance(module, imports(memory, platform)).exports;
    } catch (e) {
      return { ok: false, stage: "instantiate", error: errorText(e) };
    }
    const initial = memory.buffer.byteLength;
    ms.instantiate = Date.now() - t0 - ms.compile;
    t0 = Date.now();
    const abortAddr = num(ex.pool_abort_addr());
    ex.memory_set_limit(BigInt(c.limit));
    const stacks = [];
    for (let t = 1; t < c.threads; t++) {
      const s = num(ex.alloc(BigInt(c.stack_bytes)));
      if (s === 0) return { ok: false, stage: "start", no_memory: `stack of worker ${t} of ${c.threads - 1}`, asked: c.stack_bytes };
      stacks.push(s);
    }
    for (let t = 1; t < c.threads; t++) {
      const data = { module, memory, tid: t, stack: stacks[t - 1] + c.stack_bytes, abortAddr, errSab };
      // an error outside wasm (the worker's script, its instantiation): as a worker trap
      workers.push(platform.spawn(data, (e) => reportWorkerError({ errSab }, `worker ${t}: ${errorText(e)}`)));
    }
    while (ex.pool_started() < c.threads - 1) { // each worker is inside worker_loop
      const we = workerErrors();
      if (we.length) return { ok: false, stage: "start", error: we[0] };
      if (Date.now() - t0 > 60000) return { ok: false, stage: "start", error: "workers did not start within 60 s" };
      await new Promise((r) => setTimeout(r, 1));
    }
    if (ex.pool_set_threads(c.threads) !== 0) return { ok: false, stage: "start", no_memory: `matmul scratch for ${c.threads} threads`, asked: 0 };
    ms.workers = Date.now() - t0;
    return { ok: true, initial_bytes: initial, memory_bytes: memory.buffer.byteLength, heap_mark: num(ex.heap_top()), ms };
  }

  async function handle(c) {
    switch (c.op) {
      case "start":
        return await start(c);
      case "call":
        return { ok: true, result: num(call(c.name, c.args)) ?? null };
      case "step": {
        // the step's tokens: inline (Node) or fetched from the harness's server (Chromium), before the timer
        const tok = c.tokens_url ? await platform.fetchBytes(c.tokens_url) : platform.decode64(c.tokens);
        bytes(c.tokens_addr, tok.length).set(tok);
        const [loss, ns] = platform.stepNs(() => ex.train_step(c.lr));
        return { ok: true, loss: Number.isFinite(loss) ? loss : String(loss), ns: Number(ns) };
      }
      case "write": {
        const n = await platform.readInto(c, (count) => bytes(c.addr, count));
        return { ok: true, bytes: n };
      }
      case "write64": {
        const data = platform.decode64(c.data);
        bytes(c.addr, data.length).set(data);
        return { ok: true, bytes: data.length };
      }
      case "read":
        await platform.writeOut(c, bytes(c.addr, c.bytes));
        return { ok: true };
      case "read64":
        return { ok: true, data: platform.encode64(bytes(c.addr, c.bytes)) };
      case "memory":
        return { ok: true, bytes: memory ? memory.buffer.byteLength : 0, ...platform.processFacts() };
      case "stop":
        await stopWorkers();
        return { ok: true };
      default:
        return { ok: false, error: `unknown command ${c.op}` };
    }
  }

  // one command, one reply: a trap (or any error) in an export is a failed reply; the pool
  // may then be inconsistent, and the caller closes
  async function request(c) {
    try {
      return await handle(c);
    } catch (e) {
      return { ok: false, trap: e instanceof WebAssembly.RuntimeError, error: errorText(e), worker_errors: workerErrors() };
    }
  }

  return { request, stopWorkers };
}
