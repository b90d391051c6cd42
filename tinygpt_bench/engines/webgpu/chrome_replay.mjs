// The replayer of the webgpu-chrome backend (chrome.py): the WebGPU engine's training step as
// Chrome's WebGPU runs it in a page. It builds nothing of its own: it takes the engine's plan
// (plan.py: buffers, kernels, pipelines, dispatches with their uniform bytes and bindings,
// recorded by the same code that builds the Program in Python) from the harness's local server,
// creates each object on the page's device, and replays the dispatches in one compute pass a
// step, as the Python backends encode them. The harness drives it over the DevTools protocol:
// `await tinygpt.<method>(...)`, each method resolving with {ok: true, ...} or
// {ok: false, stage, error}.
//
//   open({featureLevel, powerPreference, timestamps})  adapter and device: {info, features, limits}
//   build({planUrl, kernelsUrl})   shader modules, pipelines (timed: SwiftShader compiles slowly),
//                                  buffers, the uniform buffer, one bind group per dispatch
//   upload({buffer, url})          a buffer's bytes fetched from the server (the weights)
//   step({tokensUrl, floats})      the tokens (u32, fetched from the server before the timer)
//                                  and the step record's first floats
//                                  written, the pass encoded, submitted, the 12-byte readback
//                                  mapped: {norm, scale, loss, ns (page wall time from the
//                                  first write to the mapped readback), gpu_ns (the pass,
//                                  timestamp queries) or null}
//   read({buffer, bytes, url})     a buffer's first bytes sent to the server (PUT parts)
//   profile()                      each dispatch in its own pass between timestamps: ns each
//                                  (runs a step on the inputs last written)
// Errors: every creation in its own error scope, so a rejected shader, pipeline or bind group
// names its kernel; a step's validation error is located by encoding each dispatch alone; an
// uncaptured error or a lost device fails the next request, named.

let adapter = null, device = null, lost = null, uncaptured = [];
let plan = null, buffers = new Map(), pipelines = [], bindGroups = [], uniforms = null;
let readback = null, timing = null, inputs = null;
const UPLOAD_PART = 64 << 20;

const fail = (stage, error) => ({ ok: false, stage, error: String(error) });
const ms = (t0) => performance.now() - t0;

function deviceGone() {
  if (lost) return `the device was lost: ${lost}`;
  if (uncaptured.length) return `uncaptured WebGPU error: ${uncaptured[0]}`;
  return null;
}

function bytesOf(b64) {
  if (Uint8Array.fromBase64) return Uint8Array.fromBase64(b64);
  const s = atob(b64), out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function hexBytes(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
  return out;
}

async function scoped(fn) {
  device.pushErrorScope("out-of-memory");
  device.pushErrorScope("validation");
  let value, thrown = null;
  try { value = await fn(); } catch (e) { thrown = e; }
  const validation = await device.popErrorScope();
  const memory = await device.popErrorScope();
  const err = thrown || validation || memory;
  return err ? { error: err.message || String(err) } : { value };
}

async function open(opts) {
  if (!navigator.gpu) return fail("adapter", "navigator.gpu is missing: WebGPU is off in this browser (flags?)");
  const req = { powerPreference: opts.powerPreference || "high-performance" };
  if (opts.featureLevel) req.featureLevel = opts.featureLevel;
  adapter = await navigator.gpu.requestAdapter(req);
  if (!adapter) return fail("adapter", `no WebGPU adapter (requestAdapter(${JSON.stringify(req)}) gave null)`);
  const features = [...adapter.features].sort();
  const want = [];
  if (opts.timestamps !== false && adapter.features.has("timestamp-query")) want.push("timestamp-query");
  if (adapter.features.has("subgroups")) want.push("subgroups");
  const requiredLimits = {};
  for (const k of ["maxBufferSize", "maxStorageBufferBindingSize", "maxComputeWorkgroupStorageSize",
                   "maxStorageBuffersPerShaderStage", "maxComputeInvocationsPerWorkgroup",
                   "maxComputeWorkgroupSizeX", "maxComputeWorkgroupSizeY", "maxComputeWorkgroupSizeZ",
                   "maxComputeWorkgroupsPerDimension"]) {
    if (adapter.limits[k] !== undefined) requiredLimits[k] = adapter.limits[k];
  }
  try {
    device = await adapter.requestDevice({ requiredFeatures: want, requiredLimits });
  } catch (e) {
    return fail("device", e.message || e);
  }
  device.lost.then((info) => { lost = `${info.reason}: ${info.message}`; });
  device.onuncapturederror = (ev) => { uncaptured.push(ev.error.message); };
  const limits = {};
  for (const k in device.limits) limits[k] = device.limits[k];
  const info = adapter.info || {};
  return {
    ok: true, features, device_features: [...device.features].sort(), limits,
    info: { vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description,
            isFallbackAdapter: info.isFallbackAdapter ?? adapter.isFallbackAdapter ?? null,
            subgroupMinSize: info.subgroupMinSize, subgroupMaxSize: info.subgroupMaxSize },
    featureLevel: opts.featureLevel || "core",
  };
}

async function fetchJson(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`HTTP ${r.status} fetching ${url}`);
  return await r.json();
}

function constantsOf(c) {
  const out = {};
  for (const [k, v] of Object.entries(c || {})) out[k] = typeof v === "boolean" ? (v ? 1 : 0) : v;
  return out;
}

async function build({ planUrl, kernelsUrl }) {
  const gone = deviceGone();
  if (gone) return fail("build", gone);
  const times = {};
  let t0 = performance.now();
  plan = await fetchJson(planUrl);
  const kernels = await fetchJson(kernelsUrl);
  // shader modules, each checked by its compilation messages
  const modules = {};
  for (const [family, code] of Object.entries(kernels)) {
    const r = await scoped(async () => {
      const m = device.createShaderModule({ code, label: family });
      const info = await m.getCompilationInfo();
      const errors = info.messages.filter((x) => x.type === "error");
      if (errors.length) throw new Error(errors.map((x) => `${x.lineNum}:${x.linePos}: ${x.message}`).join("; "));
      return m;
    });
    if (r.error) return fail("pipelines", `kernel ${family}.wgsl does not compile: ${r.error}`);
    modules[family] = r.value;
  }
  times.modules_ms = ms(t0);
  t0 = performance.now();
  // pipelines, made in parallel (the browser may compile them on several threads)
  const made = await Promise.all(plan.pipelines.map(async (p) => {
    const label = `${p.family}.wgsl:${p.entry}`;
    try {
      const stage = { module: modules[p.family], entryPoint: p.entry };
      if (p.constants && Object.keys(p.constants).length) stage.constants = constantsOf(p.constants);
      return { pipe: await device.createComputePipelineAsync({ layout: "auto", compute: stage, label }) };
    } catch (e) {
      return { error: `kernel ${label}${p.constants ? " " + JSON.stringify(p.constants) : ""}: pipeline creation failed: ${e.message || e}` };
    }
  }));
  const bad = made.find((m) => m.error);
  if (bad) return fail("pipelines", bad.error);
  pipelines = made.map((m) => m.pipe);
  times.pipelines_ms = ms(t0);
  t0 = performance.now();
  // buffers (zeroed at creation), the uniform slots, the readback
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  for (const b of plan.buffers) {
    const r = await scoped(() => device.createBuffer({ size: b.bytes, usage, label: b.name }));
    if (r.error) return fail("buffers", `buffer ${b.name} (${b.bytes} bytes): ${r.error}`);
    buffers.set(b.name, r.value);
  }
  const slot = plan.uniform_slot, n = Math.max(1, plan.dispatches.length);
  const blob = new Uint8Array(n * slot);
  plan.dispatches.forEach((d, i) => blob.set(hexBytes(d.uniform), i * slot));
  uniforms = device.createBuffer({ size: blob.length, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
                                   label: "uniforms" });
  device.queue.writeBuffer(uniforms, 0, blob);
  readback = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
                                   label: "loss readback" });
  if (device.features.has("timestamp-query")) {
    timing = {
      set: device.createQuerySet({ type: "timestamp", count: 2 }),
      resolve: device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC }),
      out: device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }),
    };
  }
  times.buffers_ms = ms(t0);
  t0 = performance.now();
  bindGroups = [];
  for (let i = 0; i < plan.dispatches.length; i++) {
    const d = plan.dispatches[i];
    const entries = [{ binding: 0, resource: { buffer: uniforms, offset: i * slot, size: slot } }];
    for (const [b, name] of Object.entries(d.bindings)) entries.push({ binding: Number(b), resource: { buffer: buffers.get(name) } });
    const r = await scoped(() => device.createBindGroup({ layout: pipelines[d.pipeline].getBindGroupLayout(0), entries,
                                                          label: d.name }));
    if (r.error) return fail("bind groups", `kernel ${d.name}: bind group rejected: ${r.error}`);
    bindGroups.push(r.value);
  }
  times.bind_groups_ms = ms(t0);
  const gone2 = deviceGone();
  if (gone2) return fail("build", gone2);
  return { ok: true, ...times, dispatches: plan.dispatches.length, pipelines: pipelines.length,
           buffers: plan.buffers.length, timestamps: !!timing };
}

async function upload({ buffer, url }) {
  const r = await fetch(url);
  if (!r.ok) return fail("upload", `HTTP ${r.status} fetching ${url}`);
  const data = new Uint8Array(await r.arrayBuffer());
  device.queue.writeBuffer(buffers.get(buffer), 0, data);
  await device.queue.onSubmittedWorkDone();
  return deviceGone() ? fail("upload", deviceGone()) : { ok: true, bytes: data.length };
}

function encodeStep(encoder) {
  const passDesc = { label: "train_step" };
  if (timing) passDesc.timestampWrites = { querySet: timing.set, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 };
  const pass = encoder.beginComputePass(passDesc);
  plan.dispatches.forEach((d, i) => {
    pass.setPipeline(pipelines[d.pipeline]);
    pass.setBindGroup(0, bindGroups[i]);
    pass.dispatchWorkgroups(...d.groups);
  });
  pass.end();
  const rb = plan.inputs.readback;
  encoder.copyBufferToBuffer(buffers.get(rb.buffer), rb.offset, readback, 0, rb.bytes);
  if (timing) {
    encoder.resolveQuerySet(timing.set, 0, 2, timing.resolve, 0);
    encoder.copyBufferToBuffer(timing.resolve, 0, timing.out, 0, 16);
  }
}

async function locate() {
  // the first dispatch the device rejects when each is encoded alone
  for (let i = 0; i < plan.dispatches.length; i++) {
    const d = plan.dispatches[i];
    const r = await scoped(() => {
      const enc = device.createCommandEncoder({ label: "locate" });
      const pass = enc.beginComputePass();
      pass.setPipeline(pipelines[d.pipeline]);
      pass.setBindGroup(0, bindGroups[i]);
      pass.dispatchWorkgroups(...d.groups);
      pass.end();
      return enc.finish();
    });
    if (r.error) return `kernel ${d.name} rejected: ${r.error}`;
  }
  return null;
}

async function step({ tokens, tokensUrl, floats }) {
  const gone = deviceGone();
  if (gone) return fail("step", gone);
  let data = tokens ? bytesOf(tokens) : null;
  if (tokensUrl) { // from the harness's server, before the timer
    const r = await fetch(tokensUrl);
    if (!r.ok) return fail("step", `HTTP ${r.status} fetching ${tokensUrl}`);
    data = new Uint8Array(await r.arrayBuffer());
  }
  inputs = { data, floats };
  // the error scopes are pushed before the timer and popped after it: their round trips to the
  // GPU process are not part of a step (the Python backends have none)
  device.pushErrorScope("out-of-memory");
  device.pushErrorScope("validation");
  const t0 = performance.now();
  device.queue.writeBuffer(buffers.get(plan.inputs.tokens), 0, data);
  device.queue.writeBuffer(buffers.get(plan.inputs.step), 0, new Float32Array(floats));
  let thrown = null;
  try {
    const enc = device.createCommandEncoder({ label: "train_step" });
    encodeStep(enc);
    device.queue.submit([enc.finish()]);
    await readback.mapAsync(GPUMapMode.READ);
  } catch (e) { thrown = e; }
  const ns = Math.round((performance.now() - t0) * 1e6);
  const validation = await device.popErrorScope();
  const memory = await device.popErrorScope();
  const err = thrown || validation || memory;
  if (err) {
    if (readback.mapState === "mapped") readback.unmap();
    return fail("step", (await locate()) || `the step was rejected: ${err.message || err}`);
  }
  const [norm, scale, loss] = new Float32Array(readback.getMappedRange().slice(0));
  readback.unmap();
  let gpuNs = null;
  if (timing) {
    await timing.out.mapAsync(GPUMapMode.READ);
    const [a, b] = new BigUint64Array(timing.out.getMappedRange().slice(0));
    timing.out.unmap();
    gpuNs = Number(b - a);
  }
  const gone2 = deviceGone();
  if (gone2) return fail("step", gone2);
  return { ok: true, norm, scale, loss: Number.isFinite(loss) ? loss : String(loss), ns, gpu_ns: gpuNs };
}

async function read({ buffer, bytes, url }) {
  const src = buffers.get(buffer);
  const size = Math.ceil(bytes / 4) * 4;
  const staging = device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = device.createCommandEncoder({ label: "read" });
  enc.copyBufferToBuffer(src, 0, staging, 0, size);
  device.queue.submit([enc.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const data = new Uint8Array(staging.getMappedRange().slice(0, bytes));
  staging.unmap();
  staging.destroy();
  for (let off = 0; off < data.length; off += UPLOAD_PART) {
    const part = data.subarray(off, Math.min(off + UPLOAD_PART, data.length));
    const r = await fetch(`${url}?offset=${off}`, { method: "PUT", body: part });
    if (!r.ok) return fail("read", `HTTP ${r.status} sending bytes ${off}.. to ${url}`);
  }
  return { ok: true };
}

async function profile() {
  // each dispatch in its own pass between timestamps (as Program.profile does in Python): for
  // diagnosis, not the step time; it runs a step on the inputs last written
  if (!device.features.has("timestamp-query")) return fail("profile", "the adapter has no timestamp-query");
  const n = plan.dispatches.length;
  const set = device.createQuerySet({ type: "timestamp", count: 2 * n });
  const resolve = device.createBuffer({ size: 16 * n, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const out = device.createBuffer({ size: 16 * n, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  if (inputs) {
    device.queue.writeBuffer(buffers.get(plan.inputs.tokens), 0, inputs.data);
    device.queue.writeBuffer(buffers.get(plan.inputs.step), 0, new Float32Array(inputs.floats));
  }
  const enc = device.createCommandEncoder({ label: "profile" });
  plan.dispatches.forEach((d, i) => {
    const pass = enc.beginComputePass({ timestampWrites: { querySet: set, beginningOfPassWriteIndex: 2 * i,
                                                           endOfPassWriteIndex: 2 * i + 1 } });
    pass.setPipeline(pipelines[d.pipeline]);
    pass.setBindGroup(0, bindGroups[i]);
    pass.dispatchWorkgroups(...d.groups);
    pass.end();
  });
  enc.resolveQuerySet(set, 0, 2 * n, resolve, 0);
  enc.copyBufferToBuffer(resolve, 0, out, 0, 16 * n);
  device.queue.submit([enc.finish()]);
  await out.mapAsync(GPUMapMode.READ);
  const t = new BigUint64Array(out.getMappedRange().slice(0));
  out.unmap();
  const ns = [];
  for (let i = 0; i < n; i++) ns.push(Number(t[2 * i + 1] - t[2 * i]));
  set.destroy(); resolve.destroy(); out.destroy();
  return { ok: true, ns };
}

async function guarded(stage, fn, arg) {
  try {
    return await fn(arg || {});
  } catch (e) {
    return fail(stage, `${e && e.name ? e.name + ": " : ""}${e && e.message !== undefined ? e.message : e}`);
  }
}

window.tinygpt = {
  isolated: self.crossOriginIsolated,
  open: (o) => guarded("adapter", open, o),
  build: (o) => guarded("build", build, o),
  upload: (o) => guarded("upload", upload, o),
  step: (o) => guarded("step", step, o),
  read: (o) => guarded("read", read, o),
  profile: () => guarded("profile", profile),
};
