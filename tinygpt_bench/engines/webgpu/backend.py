"""The `webgpu` and `webgpu-dawn` backends: docs/MODEL.md's whole training step as WGSL kernels,
through wgpu-py's API on two implementations of WebGPU: wgpu-native (`webgpu`) and Dawn, the
implementation inside Chrome (`webgpu-dawn`, the wgpudawn package). One engine: the same
kernels, buffers and dispatches on both; only the module behind the API differs.

Runs on any WebGPU adapter the implementation finds: lavapipe (Mesa's CPU Vulkan driver) on
machines without a GPU, an NVIDIA GPU over Vulkan elsewhere. Everything is created once in load():
buffers, pipelines, bind groups and the uniform values of every dispatch. A step then writes
the batch (token ids, targets, the tokens' row lists) and three step scalars, encodes all
dispatches into ONE compute pass, submits once and reads back 12 bytes (loss, gradient norm,
clip scale).

Legend: B = batch, T = context, C = channels, L = layers, H = heads, V = vocabulary, BT = B*T.

Buffers (fp32 unless noted):
    params, grads, adam_m, adam_v   (P)  the flat layout of tinygpt_bench.model, bound whole
    decay_mask                      (P/32) u32 bits
    tokens                          u32: ids (BT), targets (BT), CSR start (V+1), CSR rows (BT)
    step                            the step record (optimizer.wgsl: lr, bias corrections,
                                    norm, scale, loss, norm partials)
    layer{l}.{x,h1,q,k,v,att,xm,h2,f,g,lse,s1,s2}
                                    what layer l's backward needs, a buffer each
    top.{xf,hf,sf,logits,losses}    final residual, ln_f output and stats, logits/dlogits, losses
    scratch.{dx,dh,dq,dk,dv,datt,dg,dd}
                                    gradients flowing backward, reused by every layer
    scratch.{att_s,att_dp}          with attention through products (ops.attention_mm): the
                                    scores and their gradient (B,H,T,T), reused by every layer
    splitk                          partial products of split-K matmuls
    uniforms                        256 bytes of uniform values per dispatch
    loss readback                   16 bytes, mappable
Every activation tensor has a buffer of its own: WebGPU forbids a buffer bound writable in one
binding of a dispatch and in any other binding of it (a whole-buffer usage rule, then the
binding-aliasing rule), and a kernel writes one tensor of a layer while it reads others. So no
binding's buffer is another's unless both are read-only (the parameters, say), and no binding
exceeds max-storage-buffer-binding-size (128 MiB on lavapipe) before the parameter buffer does.
runtime.Program checks this for every dispatch it records (Dawn, Chrome's implementation,
checks both rules too; wgpu-native only the first).

Diagnosis hooks (engines/base.py; tinygpt_bench/diagnose.py calls them):
    plan(preset, **options)   every buffer load() creates, its size against the adapter's
                              binding and buffer limits; reads the adapter, creates no device.
                              plan() and load() size buffers with the same code (step_plan).
    limits()                  the adapter limits in force (after an injected cap)
    memory_bytes()            bytes of device buffers allocated
    profile(batch)            {kernel: ms of one step} from timestamp queries (runs a step)
    fault=KIND                'shader', 'nan-grad', 'limit=BYTES' (faults.py; FAULT_KINDS)
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from tinygpt_bench.engines.webgpu import ops
from tinygpt_bench.engines.base import DEFAULT_LR, OPTIM, Backend
from tinygpt_bench.engines.webgpu.compat import implementation_versions, read_mapped
from tinygpt_bench.engines.webgpu.ops import Ref
from tinygpt_bench.engines.webgpu.runtime import (DAWN_DEFAULT_TOGGLES, UNIFORM_SLOT, AdapterPlan, Gpu, Program,
                                                 WebGPUError, buffer_bytes, capped_limits, describe_adapter,
                                                 pick_adapter)
from tinygpt_bench.errors import UserError
from tinygpt_bench.host import is_software_adapter
from tinygpt_bench.model import Layout
from tinygpt_bench.presets import VOCAB, Preset
from tinygpt_bench.resources import resource_dir, sha256_of

# ---- fault injection (tinygpt_bench/faults.py) -----------------------------------------------
FAULT_KINDS = "shader, nan-grad or limit=BYTES"
# 'shader': load() compiles this kernel with a typo (an identifier that does not exist), through
# the same compile call as every kernel: the device's own validation error comes back verbatim
SHADER_FAULT = ("gelu", "erf_f32(v * INV_SQRT2)", "erf_f32(v * INV_SQRT_TWO)")
SHADER_FALLBACK = "\nfn injected_fault() -> f32 { return undefined_by_fault; }\n"


def parse_fault(fault: str | None, backend: str = "webgpu") -> tuple[str | None, int | None]:
    """(kind, cap bytes): None, 'shader', 'nan-grad' or ('limit', BYTES); anything else is refused."""
    if fault is None or fault == "":
        return None, None
    kind, _, arg = str(fault).partition("=")
    if kind in ("shader", "nan-grad") and not arg:
        return kind, None
    if kind == "limit" and arg:
        from tinygpt_bench.units import parse_bytes  # the project's one size parser

        try:
            cap = parse_bytes(arg)
        except UserError as e:
            raise UserError(f"{backend} backend: fault '{fault}': {e}; it takes {FAULT_KINDS}") from None
        if cap < 16:
            raise UserError(f"{backend} backend: fault '{fault}': the cap must be at least 16 bytes; it takes "
                            f"{FAULT_KINDS}")
        return "limit", cap
    raise UserError(f"{backend} backend: fault '{fault}' cannot be injected here; it takes {FAULT_KINDS} "
                    f"(TINYGPT_BENCH_FAULT={backend}:KIND[@PRESET], e.g. {backend}:limit=1MiB@small)")


# ---- buffers and dispatches of a step, sized without a device -------------------------------
@dataclass
class StepPlan:
    """Everything load() will allocate, computed once by step_plan() for both plan() and load()."""

    preset: Preset
    layout: Layout
    tl: ops.TokenLayout
    n_split: int  # floats of split-K scratch
    storage: dict[str, int]  # storage buffer name -> bytes requested (Gpu.buffer rounds: buffer_bytes)
    dispatches: list[str]  # every dispatch of a step, in order
    uniform_bytes: int
    readback_bytes: int = 16
    recorded: Program | None = None  # the step recorded without a device (plan.plan_data exports it)

    def rows(self) -> list[tuple[str, int, str]]:
        """(buffer, bytes allocated, kind) for every buffer load() creates."""
        out = [(n, buffer_bytes(b), "storage") for n, b in self.storage.items()]
        out.append((f"uniforms ({len(self.dispatches)} dispatches x {UNIFORM_SLOT} B)", self.uniform_bytes, "uniform"))
        out.append(("loss readback", self.readback_bytes, "map-read"))
        return out


def step_plan(preset: Preset, gpu, fault: str | None = None) -> StepPlan:
    """Sizes of every buffer of a step and its dispatch list, for `gpu`: a Gpu or an AdapterPlan
    (its tuning decides split-K scratch and variants). Records the step into a Program on an
    AdapterPlan, which compiles nothing, so the dispatch count is the one load() records."""
    if preset.head_dim > ops.MAX_HD:
        raise UserError(
            f"preset '{preset.name}' has head_dim {preset.head_dim}; the attention kernel supports at most "
            f"{ops.MAX_HD}; fix: more heads"
        )
    layout = Layout(preset)
    B, T, C, L, H, V = preset.batch, preset.ctx, preset.d_model, preset.layers, preset.heads, VOCAB
    BT, BTC, P = B * T, B * T * C, layout.total
    # one buffer per activation tensor (floats): a dispatch's writable binding may share its buffer
    # with no other binding (WebGPU's usage scope and aliasing rules), and every kernel writes one
    # tensor while it reads others of the same layer
    layer = dict(x=BTC, h1=BTC, q=BTC, k=BTC, v=BTC, att=BTC, xm=BTC, h2=BTC, f=4 * BTC, g=4 * BTC,
                 lse=B * H * T, s1=2 * BT, s2=2 * BT)
    top = dict(xf=BTC, hf=BTC, sf=2 * BT, logits=BT * V, losses=BT)
    scr = dict(dx=BTC, dh=BTC, dq=BTC, dk=BTC, dv=BTC, datt=BTC, dg=4 * BTC, dd=B * H * T)
    tl = ops.TokenLayout.of(BT, V)
    # split-K scratch: the largest any of the step's products needs (ops.plan_matmul)
    shapes = [(BT, C, C), (BT, 4 * C, C), (BT, C, 4 * C), (BT, V, C), (BT, C, V),  # (m, n, k)
              (C, C, BT), (4 * C, C, BT), (C, 4 * C, BT), (V, C, BT)]
    n_split = max(ops.splitk_scratch(m, n, ops.plan_matmul(gpu, m, n, k, bg)[1])
                  for m, n, k in shapes for bg in (False, True))
    if ops.attention_mm(gpu, T):  # attention through products: two score buffers, reused by every layer
        scr.update(att_s=ops.attention_mm_scratch(B, T, H), att_dp=ops.attention_mm_scratch(B, T, H))
    storage = {"params": 4 * P, "grads": 4 * P, "adam_m": 4 * P, "adam_v": 4 * P,
               "decay_mask": 4 * ops.cdiv(P, 32), "tokens": 4 * tl.total, "step": 4 * (ops.ST_PART + ops.NPARTS),
               **{f"layer{l}.{n}": 4 * f for l in range(L) for n, f in layer.items()},
               **{f"top.{n}": 4 * f for n, f in top.items()}, **{f"scratch.{n}": 4 * f for n, f in scr.items()},
               "splitk": 4 * n_split}
    plan = StepPlan(preset, layout, tl, n_split, storage, [], 0)
    dry = gpu if isinstance(gpu, AdapterPlan) else AdapterPlan.of_gpu(gpu)
    prog = record(Program(dry, "train_step (plan)"), plan, {n: n for n in storage}, fault)
    plan.dispatches = [d.name for d in prog.dispatches]
    plan.recorded = prog
    plan.uniform_bytes = max(1, len(prog.dispatches)) * UNIFORM_SLOT  # Program.finalize's buffer
    return plan


def record(p: Program, plan: StepPlan, b: dict, fault: str | None = None) -> Program:
    """Every dispatch of one training step, in order (forward, loss, backward, optimizer), into
    p; b: storage buffer name -> buffer (or any placeholder, for a plan)."""
    preset, layout, tl = plan.preset, plan.layout, plan.tl
    B, T, C, L, H, V = preset.batch, preset.ctx, preset.d_model, preset.layers, preset.heads, VOCAB
    BT = B * T
    spec = layout.by_name
    P, G = b["params"], b["grads"]

    def par(name, l=None, buf=P) -> Ref:  # a parameter (or its gradient) tensor, layer l
        s = spec[name]
        per = s.size // preset.layers if l is not None else 0
        return Ref(buf, s.offset + (l or 0) * per)

    def grad(name, l=None) -> Ref:
        return par(name, l, G)

    def act(l, name) -> Ref:
        return Ref(b[f"layer{l}.{name}"])

    tp = lambda name: Ref(b[f"top.{name}"])  # noqa: E731
    sc = lambda name: Ref(b[f"scratch.{name}"])  # noqa: E731
    mm_attention = "scratch.att_s" in b  # step_plan chose attention through products (ops.attention_mm)
    step = Ref(b["step"], 0)

    def mm(*args, **kw):  # every product may split K into the shared scratch (ops.plan_matmul)
        ops.matmul(p, *args, scratch=Ref(b["splitk"], 0), **kw)

    def wgrad(name, dw: Ref, x: Ref, dy: Ref, m: int, n: int, db: Ref | None = None):
        """dW (m,n) = x^T @ dy over K = B*T rows, and db (column sums of dy) with it."""
        mm(name, dw, x, dy, m, n, BT, trans_a=True, bias_grad=db)

    # forward ---------------------------------------------------------------------------
    ops.embedding_forward(p, "embed", act(0, "x"), b["tokens"], tl, P, spec["tok_emb"].offset,
                          spec["pos_emb"].offset, BT, T, C, V)
    for l in range(L):
        n = f"layer{l}"
        x_next = act(l + 1, "x") if l + 1 < L else tp("xf")
        ops.layernorm_forward(p, f"{n}.ln1", act(l, "h1"), act(l, "s1"), act(l, "x"), par("ln1_w", l),
                              par("ln1_b", l), BT, C)
        for w, bias, out in (("wq", "bq", "q"), ("wk", "bk", "k"), ("wv", "bv", "v")):
            mm(f"{n}.{out}", act(l, out), act(l, "h1"), par(w, l), BT, C, C, bias=par(bias, l))
        if mm_attention:
            ops.attention_forward_mm(p, f"{n}.attn", act(l, "att"), act(l, "lse"), act(l, "q"), act(l, "k"),
                                     act(l, "v"), B, T, C, H, sc("att_s"))
        else:
            ops.attention_forward(p, f"{n}.attn", act(l, "att"), act(l, "lse"), act(l, "q"), act(l, "k"),
                                  act(l, "v"), B, T, C, H)
        mm(f"{n}.proj", act(l, "xm"), act(l, "att"), par("wo", l), BT, C, C, bias=par("bo", l),
                   res=act(l, "x"))
        ops.layernorm_forward(p, f"{n}.ln2", act(l, "h2"), act(l, "s2"), act(l, "xm"), par("ln2_w", l),
                              par("ln2_b", l), BT, C)
        mm(f"{n}.fc_in", act(l, "f"), act(l, "h2"), par("fc_in_w", l), BT, 4 * C, C,
                   bias=par("fc_in_b", l))
        ops.gelu_forward(p, f"{n}.gelu", act(l, "g"), act(l, "f"), BT * 4 * C)
        mm(f"{n}.fc_out", x_next, act(l, "g"), par("fc_out_w", l), BT, C, 4 * C,
                   bias=par("fc_out_b", l), res=act(l, "xm"))
    ops.layernorm_forward(p, "ln_f", tp("hf"), tp("sf"), tp("xf"), par("lnf_w"), par("lnf_b"), BT, C)
    mm("head", tp("logits"), tp("hf"), par("tok_emb"), BT, V, C, trans_b=True)
    ops.crossentropy(p, "loss", tp("logits"), b["tokens"], tl.targets, tp("losses"), step.at(ops.ST_LOSS), BT, V)

    # backward (tp("logits") now holds dlogits) -----------------------------------------
    mm("head.dx", sc("dh"), tp("logits"), par("tok_emb"), BT, C, V)
    wgrad("head.dw", grad("tok_emb"), tp("logits"), tp("hf"), V, C)
    ops.layernorm_backward(p, "ln_f.back", sc("dx"), grad("lnf_w"), grad("lnf_b"), sc("dh"), tp("xf"), tp("sf"),
                           par("lnf_w"), BT, C)
    for l in reversed(range(L)):
        n = f"layer{l}.back"
        mm(f"{n}.fc_out.dx", sc("dg"), sc("dx"), par("fc_out_w", l), BT, 4 * C, C, trans_b=True)
        wgrad(f"{n}.fc_out.dw", grad("fc_out_w", l), act(l, "g"), sc("dx"), 4 * C, C, grad("fc_out_b", l))
        ops.gelu_backward(p, f"{n}.gelu", sc("dg"), act(l, "f"), BT * 4 * C)
        mm(f"{n}.fc_in.dx", sc("dh"), sc("dg"), par("fc_in_w", l), BT, C, 4 * C, trans_b=True)
        wgrad(f"{n}.fc_in.dw", grad("fc_in_w", l), act(l, "h2"), sc("dg"), C, 4 * C, grad("fc_in_b", l))
        ops.layernorm_backward(p, f"{n}.ln2", sc("dx"), grad("ln2_w", l), grad("ln2_b", l), sc("dh"),
                               act(l, "xm"), act(l, "s2"), par("ln2_w", l), BT, C, accum=True)
        mm(f"{n}.proj.dx", sc("datt"), sc("dx"), par("wo", l), BT, C, C, trans_b=True)
        wgrad(f"{n}.proj.dw", grad("wo", l), act(l, "att"), sc("dx"), C, C, grad("bo", l))
        if mm_attention:
            ops.attention_backward_mm(p, f"{n}.attn", sc("dq"), sc("dk"), sc("dv"), sc("datt"), act(l, "q"),
                                      act(l, "k"), act(l, "v"), act(l, "att"), act(l, "lse"), B, T, C, H,
                                      sc("att_s"), sc("att_dp"))
        else:
            ops.attention_backward(p, f"{n}.attn", sc("dq"), sc("dk"), sc("dv"), sc("dd"), sc("datt"), act(l, "q"),
                                   act(l, "k"), act(l, "v"), act(l, "att"), act(l, "lse"), B, T, C, H)
        for i, (w, bias, d) in enumerate((("wq", "bq", "dq"), ("wk", "bk", "dk"), ("wv", "bv", "dv"))):
            mm(f"{n}.{w}.dx", sc("dh"), sc(d), par(w, l), BT, C, C, trans_b=True, accum=i > 0)
            wgrad(f"{n}.{w}.dw", grad(w, l), act(l, "h1"), sc(d), C, C, grad(bias, l))
        ops.layernorm_backward(p, f"{n}.ln1", sc("dx"), grad("ln1_w", l), grad("ln1_b", l), sc("dh"),
                               act(l, "x"), act(l, "s1"), par("ln1_w", l), BT, C, accum=True)
    ops.embedding_backward(p, "embed.back", G, sc("dx"), b["tokens"], tl, spec["tok_emb"].offset,
                           spec["pos_emb"].offset, BT, T, C, V)
    if parse_fault(fault)[0] == "nan-grad":  # injected: a NaN in the gradient, before norm and clip
        ops.poison_grad(p, "fault.nan-grad", G, layout.total // 2)

    # optimizer ---------------------------------------------------------------------------
    ops.clip_adamw(p, "optim", P, G, b["adam_m"], b["adam_v"], b["decay_mask"], b["step"], layout.total,
                   OPTIM.beta1, OPTIM.beta2, OPTIM.eps, OPTIM.weight_decay, OPTIM.clip)
    return p


def step_tokens(preset: Preset, tl: ops.TokenLayout, batch: np.ndarray) -> np.ndarray:
    """The token buffer a step writes (ids, targets, the CSR of rows per token: TokenLayout),
    for a batch checked against the preset; the plan's 'tokens' input (plan.py)."""
    if batch.shape != (preset.batch, preset.ctx + 1):
        raise ValueError(f"batch has shape {batch.shape}; preset '{preset.name}' needs ({preset.batch}, "
                         f"{preset.ctx + 1})")
    if batch.min() < 0 or batch.max() >= VOCAB:
        raise ValueError(f"batch values must be bytes 0..{VOCAB - 1}; got {batch.min()}..{batch.max()}")
    ids = batch[:, :-1]
    start, rows = ops.token_csr(ids, VOCAB)
    tokens = np.empty(tl.total, np.uint32)
    tokens[tl.ids:tl.targets] = ids.ravel()
    tokens[tl.targets:tl.csr_start] = batch[:, 1:].ravel()
    tokens[tl.csr_start:tl.csr_rows] = start
    tokens[tl.csr_rows:] = rows
    return tokens


def step_floats(lr: float, t: int) -> np.ndarray:
    """The step record's first three floats for step t (1-based): lr and Adam's bias corrections."""
    return np.array([lr, 1.0 - OPTIM.beta1**t, 1.0 - OPTIM.beta2**t], np.float32)


def plan_rows(sp: StepPlan, limits: dict, device: str, cap_fault: str | None = None) -> list[dict]:
    """plan()'s rows: each buffer against the tighter of the limits it must fit (storage
    buffers: max-storage-buffer-binding-size, they are bound whole; all: max-buffer-size)."""
    capped = f", capped by fault '{cap_fault}'" if cap_fault else ""
    out = []
    for name, nbytes, kind in sp.rows():
        keys = ["max-buffer-size"] + (["max-storage-buffer-binding-size"] if kind == "storage" else [])
        key = min(keys, key=lambda k: (limits[k], k != "max-storage-buffer-binding-size"))
        out.append({"name": f"webgpu buffer {name}" if kind == "storage" else f"webgpu {name}", "bytes": nbytes,
                    "limit": int(limits[key]), "limit_name": f"adapter {key} ({device}{capped})"})
    return out


class WebGPUBackend(Backend):
    name = "webgpu"
    capabilities = frozenset({"plan", "limits", "profile", "memory_bytes"})
    implementation = "wgpu-native"  # the WebGPU implementation under wgpu-py's API (compat.py)

    def __init__(self, adapter: str | int | None = None, fault: str | None = None):
        """adapter: None for the high-performance adapter, or a name substring or an index.
        fault: inject a failure (tinygpt_bench/faults.py): 'shader' compiles a kernel with a
        typo at load (the device's validation error, naming the kernel); 'nan-grad' writes a
        NaN into the gradient after backward, before the norm and clip (a dispatch of the step);
        'limit=BYTES' treats the adapter's max-storage-buffer-binding-size and max-buffer-size
        as capped to BYTES (plan() and load() both)."""
        self.fault_kind, self.cap = parse_fault(fault, self.name)
        self.fault = fault
        self.adapter_choice = adapter
        self.gpu: Gpu | None = None
        self.last_profile: list[tuple[str, float]] = []
        # step() encodes the next step's command buffer while the GPU runs the current one
        # (the commands are the same every step); False: encode, submit, wait, in turn
        self.pipelined = True
        self._free()

    def _free(self) -> None:
        self.preset = None
        self.program = None
        self.planned: StepPlan | None = None  # what load() allocated by
        self.bufs: dict[str, object] = {}
        self.readback = None
        self._next_commands = None
        self.t = 0
        self._last_batch = None
        self.last_loss = self.last_grad_norm = self.last_clip_scale = None

    # ---- what load() will allocate, without a device -----------------------------------------
    @classmethod
    def plan(cls, preset: Preset, adapter: str | int | None = None, fault: str | None = None,
             **_ignored) -> list[dict]:
        """Rows {name, bytes, limit, limit_name}: every buffer load() will create, at the size it
        will have, against the tighter of the adapter's max-storage-buffer-binding-size (storage
        buffers are bound whole) and max-buffer-size, after a 'limit=BYTES' fault's cap. Reads
        the adapter (enumerating or requesting it); creates no device and allocates nothing.
        The sizes come from step_plan(), the same code load() allocates by. fault: as the
        constructor's; when not given, TINYGPT_BENCH_FAULT's for this backend and preset."""
        if fault is None:
            from tinygpt_bench import faults

            fault = faults.for_backend(cls.name, preset.name)
        kind, cap = parse_fault(fault, cls.name)
        a = pick_adapter(adapter, cls.implementation)
        limits = capped_limits(a.limits, cap)
        try:
            sp = step_plan(preset, AdapterPlan(a, limits), fault if kind == "nan-grad" else None)
        except WebGPUError as e:  # a dispatch the adapter cannot run (workgroup counts): say so, no traceback
            raise UserError(f"{cls.name} backend: preset '{preset.name}' cannot be planned on this adapter: {e}") from None
        return plan_rows(sp, limits, a.info["device"], fault if cap is not None else None)

    def limits(self) -> dict:
        """The adapter limits in force (after an injected 'limit=BYTES' cap), and its own."""
        gpu = self._gpu()
        own = describe_adapter(gpu.adapter)["limits"]
        return {"adapter": gpu.adapter.info["device"],
                **capped_limits({k: gpu.limits[k] for k in own}, self.cap),
                "adapter_limits": own, "cap_bytes": self.cap, "fault": self.fault,
                "timestamp_query": gpu.timestamps, "max_head_dim": ops.MAX_HD,
                "matmul_shared": gpu.matmul_shared, "matmul_big": gpu.matmul_big,
                "min_workgroups": gpu.min_workgroups,
                "layernorm_variant": gpu.layernorm_variant}

    # -------------------------------------------------------------------------------------
    def describe(self) -> dict:
        gpu = self._gpu()
        versions = implementation_versions(self.implementation)
        d = {"backend": self.name, "api": f"WebGPU ({versions['api_package']} on {self.implementation})",
             **describe_adapter(gpu.adapter), **versions}
        # the stamps every result row carries (engines/base.py)
        d.update(device=d.get("adapter"), device_type="CPU" if d["adapter_type"] == "CPU" else "GPU",
                 software_adapter=is_software_adapter({"device": d.get("adapter"), "adapter_type": d["adapter_type"]}),
                 adapter_vendor=d.get("vendor"), adapter_driver=d.get("description"), adapter_api=d.get("backend_api"),
                 runtime=f"{self.implementation} {versions['implementation_version']} ({versions['api_package']})",
                 kernels_sha256=sha256_of(list(resource_dir("kernels").glob("*.wgsl"))),
                 runtime_settings=f"encoding {'pipelined' if self.pipelined else 'in turn'}, matmul "
                                  + ("128x128 tiles where they fill the device" if gpu.matmul_big else "64x64 tiles")
                                  + "".join(f", {k}={v}" for k, v in gpu.tune_override.items())
                                  + "".join(f", dawn {s}{n}" for s, names, usual in zip("+-", gpu.dawn_toggles,
                                                                                         DAWN_DEFAULT_TOGGLES)
                                            for n in names if n not in usual))
        if self.program is not None:  # loaded: the plan's digest (plan.py), equal wherever the dispatches are
            d["plan_sha256"] = self.plan_sha256()
            d["runtime_settings"] += f", plan={d['plan_sha256'][:16]}"
        if d["adapter_type"] == "CPU":
            d["note"] = "CPU adapter (software rasteriser such as lavapipe): not a GPU result"
        if self.fault:
            d["fault"] = self.fault
        return d

    def plan_sha256(self) -> str | None:
        """The digest of the loaded step's plan (plan.plan_data of the Program load() recorded)."""
        if self.program is None:
            return None
        from tinygpt_bench.engines.webgpu import plan as planmod

        return planmod.digest(planmod.plan_data(self.program, self.planned.storage))

    def _gpu(self) -> Gpu:
        if self.gpu is None:
            self.gpu = Gpu(self.adapter_choice, implementation=self.implementation)
        return self.gpu

    def load(self, preset: Preset, params: np.ndarray) -> None:
        self.close()
        layout = Layout(preset)
        params = np.asarray(params)
        if params.shape != (layout.total,):
            raise ValueError(f"parameters have shape {params.shape}; preset '{preset.name}' needs ({layout.total},)")
        gpu = self._gpu()
        limits = capped_limits(gpu.limits, self.cap)
        # sizes first (the plan's own code), so a shortfall is reported before anything is allocated
        sp = step_plan(preset, AdapterPlan.of_gpu(gpu, limits), self.fault if self.fault_kind == "nan-grad" else None)
        self.check_limits(plan_rows(sp, limits, gpu.adapter.info["device"], self.fault if self.cap else None))
        try:
            self._allocate(gpu, sp, params)
        except BaseException:
            self.close()  # a failed load keeps no device memory
            raise

    def _allocate(self, gpu: Gpu, sp: StepPlan, params: np.ndarray) -> None:
        self.preset, self.layout, self.tl, self.planned = sp.preset, sp.layout, sp.tl, sp
        b = self.bufs
        for name, nbytes in sp.storage.items():  # created zeroed
            b[name] = gpu.buffer(nbytes, name)
        gpu.write(b["params"], np.ascontiguousarray(params, dtype=np.float32))  # no copy of fp32 weights
        gpu.write(b["decay_mask"], ops.decay_bits(sp.layout.decay_mask(bool)))
        u = gpu.wgpu.BufferUsage
        self.readback = gpu.device.create_buffer(size=sp.readback_bytes, usage=u.MAP_READ | u.COPY_DST,
                                                 label="loss readback")
        if self.fault_kind == "shader":
            self._compile_broken_kernel(gpu)
        p = record(Program(gpu, "train_step"), sp, b, self.fault if self.fault_kind == "nan-grad" else None)
        if [d.name for d in p.dispatches] != sp.dispatches:  # one code path; a guard all the same
            raise RuntimeError(f"{self.name} backend: the recorded step differs from step_plan()'s")
        self.program = p.finalize()
        self.t = 0

    @staticmethod
    def _compile_broken_kernel(gpu: Gpu) -> None:
        """Fault 'shader': compile a real kernel with a typo in it, as every kernel is compiled."""
        family, needle, typo = SHADER_FAULT
        code = gpu.source(family)
        code = code.replace(needle, typo, 1) if needle in code else code + SHADER_FALLBACK
        try:
            gpu.compile(family, code)
        except WebGPUError as e:
            raise WebGPUError(f"{e}\n(fault 'shader' was injected: TINYGPT_BENCH_FAULT)") from None
        raise WebGPUError(f"fault 'shader' was injected but the adapter accepted the broken {family}.wgsl")

    @staticmethod
    def check_limits(rows: list[dict]) -> None:
        """UserError naming the buffer furthest over its limit (plan_rows), before any allocation."""
        over = [r for r in rows if r["limit"] is not None and r["bytes"] > r["limit"]]
        if over:
            worst = max(over, key=lambda r: r["bytes"] / r["limit"])
            raise UserError(
                f"{worst['name']} needs {worst['bytes']:,} bytes, {worst['bytes'] - worst['limit']:,} above "
                f"the {worst['limit_name']} {worst['limit']:,}"
                + (f"; also {', '.join(r['name'] for r in over if r is not worst)}" if len(over) > 1 else "")
                + "; fix: a smaller preset or an adapter with larger bindings (splitting the buffer is not built yet)"
            )

    # -------------------------------------------------------------------------------------
    def _write_inputs(self, batch: np.ndarray, lr: float) -> None:
        """The step's host writes: tokens (ids, targets, CSR of rows per token) and the step
        record (lr, bias corrections of step t+1); t moves on."""
        if self.program is None:
            raise RuntimeError(f"{self.name} backend: call load(preset, params) before step()")
        batch = np.asarray(batch)
        tokens = step_tokens(self.preset, self.tl, batch)
        self.t += 1
        self.gpu.write(self.bufs["tokens"], tokens)
        self.gpu.write(self.bufs["step"], step_floats(lr, self.t))
        self._last_batch = batch

    def _encode_step(self):
        """The command buffer of one training step (the same every step: inputs change through
        queue writes, never through the commands)."""
        enc = self.gpu.device.create_command_encoder(label="train_step")
        self.program.encode(enc)
        enc.copy_buffer_to_buffer(self.bufs["step"], 4 * ops.ST_NORM, self.readback, 0, 12)
        return self.program.finish(enc)

    def step(self, batch: np.ndarray, lr: float = DEFAULT_LR) -> float:
        self._write_inputs(batch, lr)
        gpu = self.gpu
        commands = self._next_commands or self._encode_step()
        self._next_commands = None
        gpu.device.queue.submit([commands])
        if self.pipelined:  # encode the next step's commands while the GPU runs this one
            self._next_commands = self._encode_step()
        norm, scale, loss = read_mapped(self.readback, np.float32, 3)
        self.last_loss, self.last_grad_norm, self.last_clip_scale = float(loss), float(norm), float(scale)
        if not np.isfinite(loss):
            raise FloatingPointError(f"{self.name} backend: loss is {loss} at step {self.t}")
        return float(loss)

    def parameters(self) -> np.ndarray:
        if self.program is None:
            raise RuntimeError(f"{self.name} backend: call load(preset, params) before parameters()")
        return self.gpu.read(self.bufs["params"], count=self.layout.total)

    def gradients(self) -> np.ndarray:
        if self.program is None or self.t == 0:
            raise RuntimeError(f"{self.name} backend: no gradient yet; call step() first")
        return self.gpu.read(self.bufs["grads"], count=self.layout.total)

    def memory_bytes(self) -> int | None:
        """Bytes of device buffers this backend allocated (all of them, at load: nothing per step);
        equal to the sum of plan()'s rows."""
        if self.program is None:
            return None
        return sum(buf.size for buf in self.bufs.values()) + self.program.uniforms.size + self.readback.size

    def profile_dispatches(self, batch: np.ndarray | None = None, lr: float = DEFAULT_LR) -> list[tuple[str, float]]:
        """[(dispatch name, GPU seconds)] of one training step from timestamp queries, each
        dispatch in its own compute pass (so each includes a pass boundary: for diagnosis, not
        the step time). It RUNS a step, on `batch` or else the last step's batch: weights, Adam
        moments and the step count move on. Kept in last_profile."""
        if batch is None:
            if self._last_batch is None:
                raise RuntimeError(f"{self.name} backend: profile() needs a batch, or a step() before it")
            batch = self._last_batch
        self._write_inputs(batch, lr)
        self.last_profile = self.program.profile()
        return self.last_profile

    def profile(self, batch: np.ndarray | None = None, lr: float = DEFAULT_LR) -> dict[str, float]:
        """{kernel: milliseconds of one step}, GPU time summed over the step's dispatches of each
        kernel (layers together; matmuls by role: fwd, dx, dw), from profile_dispatches()
        (which runs a step; its per-dispatch list stays in last_profile)."""
        out = collections.Counter()
        for name, secs in self.profile_dispatches(batch, lr):
            out[kernel_of(name)] += secs * 1e3
        return dict(out.most_common())

    def close(self) -> None:
        for buf in self.bufs.values():
            buf.destroy()
        if getattr(self, "readback", None) is not None:
            self.readback.destroy()
        if getattr(self, "program", None) is not None and self.program.uniforms is not None:
            self.program.uniforms.destroy()
        self._free()


def kernel_of(dispatch: str) -> str:
    """A dispatch name ("layer3.back.fc_in.dw [matmul.wgsl:matmul_direct]") -> its row in
    profile(): the entry point, and for matmul.wgsl the product's role ("matmul_direct dw"), or
    for attention's products their part ("attention pv", "attention dq")."""
    role, _, kernel = dispatch.partition(" [")
    family, _, entry = kernel.rstrip("]").partition(".wgsl:")
    if family != "matmul":
        return entry or dispatch
    if ".attn." in role:  # attention through products (ops.attention_*_mm): "attention s", ...
        return f"attention {role.rsplit('.', 1)[1]}"
    role = role.removesuffix(".reduce")
    kind = "dw" if role.endswith(".dw") else "dx" if role.endswith(".dx") else "fwd"
    return f"{entry} {kind}"


class DawnWebGPUBackend(WebGPUBackend):
    """The same engine on Dawn (wgpudawn): what Chrome's WebGPU accepts and how fast it runs it."""

    name = "webgpu-dawn"
    implementation = "dawn"
