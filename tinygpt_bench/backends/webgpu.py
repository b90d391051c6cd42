"""The `webgpu` backend: MODEL.md's whole training step as WGSL kernels through wgpu-py.

Runs on any WebGPU adapter wgpu-py finds: lavapipe (Mesa's CPU Vulkan driver) on machines
without a GPU, an NVIDIA GPU over Vulkan elsewhere. Everything is created once in load():
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
    layer{l}                        what layer l's backward needs (offsets in LayerActs)
    top                             final residual, ln_f output and stats, logits/dlogits, losses
    scratch                         gradients flowing backward, reused by every layer
Activations are split per layer so that no binding exceeds max-storage-buffer-binding-size
(128 MiB on lavapipe) before the parameter buffer itself does.
"""

from __future__ import annotations

import numpy as np

from tinygpt_bench.backends import wgpu_ops as ops
from tinygpt_bench.backends.base import DEFAULT_LR, OPTIM, Backend
from tinygpt_bench.backends.wgpu_compat import read_mapped
from tinygpt_bench.backends.wgpu_ops import Ref
from tinygpt_bench.backends.wgpu_runtime import Gpu, Program, describe_adapter
from tinygpt_bench.errors import UserError
from tinygpt_bench.model import Layout
from tinygpt_bench.presets import VOCAB, Preset


class Arena:
    """Element offsets of named (sized) regions inside one buffer."""

    def __init__(self, **sizes: int):
        self.off, total = {}, 0
        for name, n in sizes.items():
            self.off[name] = total
            total += (n + 7) // 8 * 8  # 32-byte aligned regions
        self.total = total


from tinygpt_bench.envinfo import is_software_adapter, sha256_of  # noqa: E402
from tinygpt_bench.resources import resource_dir  # noqa: E402


class WebGPUBackend(Backend):
    name = "webgpu"

    def __init__(self, adapter: str | int | None = None):
        """adapter: None for the high-performance adapter, or a name substring or an index."""
        self.adapter_choice = adapter
        self.gpu: Gpu | None = None
        self._free()

    def _free(self) -> None:
        self.preset = None
        self.program = None
        self.bufs: dict[str, object] = {}
        self.t = 0
        self.last_loss = self.last_grad_norm = self.last_clip_scale = None

    # -------------------------------------------------------------------------------------
    def describe(self) -> dict:
        gpu = self._gpu()
        d = {"backend": self.name, "api": "WebGPU (wgpu-py)", **describe_adapter(gpu.adapter)}
        d["wgpu"] = gpu.wgpu.__version__
        # the stamps every result row carries (backends/base.py)
        d.update(device=d.get("adapter"), device_type="CPU" if d["adapter_type"] == "CPU" else "GPU",
                 software_adapter=is_software_adapter({"device": d.get("adapter"), "adapter_type": d["adapter_type"]}),
                 adapter_vendor=d.get("vendor"), adapter_driver=d.get("description"), adapter_api=d.get("backend_api"),
                 runtime=f"wgpu-py {d['wgpu']}", kernels_sha256=sha256_of(list(resource_dir("kernels").glob("*.wgsl"))))
        if d["adapter_type"] == "CPU":
            d["note"] = "CPU adapter (software rasteriser such as lavapipe): not a GPU result"
        return d

    def _gpu(self) -> Gpu:
        if self.gpu is None:
            self.gpu = Gpu(self.adapter_choice)
        return self.gpu

    def load(self, preset: Preset, params: np.ndarray) -> None:
        self.close()
        layout = Layout(preset)
        params = np.asarray(params)
        if params.shape != (layout.total,):
            raise ValueError(f"parameters have shape {params.shape}; preset '{preset.name}' needs ({layout.total},)")
        if preset.head_dim > ops.MAX_HD:
            raise UserError(
                f"preset '{preset.name}' has head_dim {preset.head_dim}; the attention kernel supports at most "
                f"{ops.MAX_HD}; fix: more heads"
            )
        gpu = self._gpu()
        B, T, C, L, H, V = preset.batch, preset.ctx, preset.d_model, preset.layers, preset.heads, VOCAB
        BT, BTC, P = B * T, B * T * C, layout.total
        self.preset, self.layout = preset, layout

        # sizes first, so a shortfall is reported before anything is allocated
        la = Arena(x=BTC, h1=BTC, q=BTC, k=BTC, v=BTC, att=BTC, xm=BTC, h2=BTC, f=4 * BTC, g=4 * BTC,
                   lse=B * H * T, s1=2 * BT, s2=2 * BT)
        top = Arena(xf=BTC, hf=BTC, sf=2 * BT, logits=BT * V, losses=BT)
        scr = Arena(dx=BTC, dh=BTC, dq=BTC, dk=BTC, dv=BTC, datt=BTC, dg=4 * BTC, dd=B * H * T)
        self.tl = ops.TokenLayout.of(BT, V)
        # split-K scratch: the largest any of the step's products needs (ops.plan_matmul)
        shapes = [(BT, C, C), (BT, 4 * C, C), (BT, C, 4 * C), (BT, V, C), (BT, C, V),  # (m, n, k)
                  (C, C, BT), (4 * C, C, BT), (C, 4 * C, BT), (V, C, BT)]
        n_split = max(ops.splitk_scratch(m, n, ops.plan_matmul(gpu, m, n, k, bg)[1])
                      for m, n, k in shapes for bg in (False, True))
        sizes = {"params": 4 * P, "grads": 4 * P, "adam_m": 4 * P, "adam_v": 4 * P,
                 **{f"layer{l}": 4 * la.total for l in range(L)}, "top": 4 * top.total, "scratch": 4 * scr.total,
                 "splitk": 4 * n_split}
        self._check_limits(gpu, sizes)

        b = self.bufs
        b["params"] = gpu.upload(params.astype(np.float32), "params")
        for name in ("grads", "adam_m", "adam_v"):
            b[name] = gpu.buffer(4 * P, name)  # created zeroed
        b["mask"] = gpu.upload(ops.decay_bits(layout.decay_mask()), "decay_mask")
        b["tokens"] = gpu.buffer(4 * self.tl.total, "tokens")
        b["step"] = gpu.buffer(4 * (ops.ST_PART + ops.NPARTS), "step")
        for l in range(L):
            b[f"layer{l}"] = gpu.buffer(4 * la.total, f"layer{l}")
        b["top"], b["scratch"] = gpu.buffer(4 * top.total, "top"), gpu.buffer(4 * scr.total, "scratch")
        b["splitk"] = gpu.buffer(4 * n_split, "splitk")
        u = gpu.wgpu.BufferUsage
        self.readback = gpu.device.create_buffer(size=16, usage=u.MAP_READ | u.COPY_DST, label="loss readback")

        self.program = self._record(gpu, preset, layout, la, top, scr).finalize()
        self.t = 0

    def _check_limits(self, gpu: Gpu, sizes: dict[str, int]) -> None:
        cap = gpu.limits["max-storage-buffer-binding-size"]
        over = {k: v for k, v in sizes.items() if v > cap}
        if over:
            worst = max(over, key=over.get)
            raise UserError(
                f"buffer '{worst}' needs {over[worst]:,} bytes, {over[worst] - cap:,} above the adapter's "
                f"max-storage-buffer-binding-size {cap:,} ('{gpu.adapter.info['device']}'"
                + (f"; also {', '.join(k for k in over if k != worst)}" if len(over) > 1 else "")
                + "); fix: a smaller preset or an adapter with larger bindings (splitting the buffer is not built yet)"
            )

    # -------------------------------------------------------------------------------------
    def _record(self, gpu, preset, layout, la, top, scr) -> Program:
        """Every dispatch of one training step, in order (forward, loss, backward, optimizer)."""
        B, T, C, L, H, V = preset.batch, preset.ctx, preset.d_model, preset.layers, preset.heads, VOCAB
        BT = B * T
        b, tl = self.bufs, self.tl
        spec = layout.by_name
        P, G = b["params"], b["grads"]

        def par(name, l=None, buf=P) -> Ref:  # a parameter (or its gradient) tensor, layer l
            s = spec[name]
            per = s.size // preset.layers if l is not None else 0
            return Ref(buf, s.offset + (l or 0) * per)

        def grad(name, l=None) -> Ref:
            return par(name, l, G)

        def act(l, name) -> Ref:
            return Ref(b[f"layer{l}"], la.off[name])

        tp = lambda name: Ref(b["top"], top.off[name])  # noqa: E731
        sc = lambda name: Ref(b["scratch"], scr.off[name])  # noqa: E731
        step = Ref(b["step"], 0)
        p = Program(gpu, "train_step")

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
            ops.attention_backward(p, f"{n}.attn", sc("dq"), sc("dk"), sc("dv"), sc("dd"), sc("datt"), act(l, "q"),
                                   act(l, "k"), act(l, "v"), act(l, "att"), act(l, "lse"), B, T, C, H)
            for i, (w, bias, d) in enumerate((("wq", "bq", "dq"), ("wk", "bk", "dk"), ("wv", "bv", "dv"))):
                mm(f"{n}.{w}.dx", sc("dh"), sc(d), par(w, l), BT, C, C, trans_b=True, accum=i > 0)
                wgrad(f"{n}.{w}.dw", grad(w, l), act(l, "h1"), sc(d), C, C, grad(bias, l))
            ops.layernorm_backward(p, f"{n}.ln1", sc("dx"), grad("ln1_w", l), grad("ln1_b", l), sc("dh"),
                                   act(l, "x"), act(l, "s1"), par("ln1_w", l), BT, C, accum=True)
        ops.embedding_backward(p, "embed.back", G, sc("dx"), b["tokens"], tl, spec["tok_emb"].offset,
                               spec["pos_emb"].offset, BT, T, C, V)

        # optimizer ---------------------------------------------------------------------------
        ops.clip_adamw(p, "optim", P, G, b["adam_m"], b["adam_v"], b["mask"], b["step"], layout.total,
                       OPTIM.beta1, OPTIM.beta2, OPTIM.eps, OPTIM.weight_decay, OPTIM.clip)
        return p

    # -------------------------------------------------------------------------------------
    def step(self, batch: np.ndarray, lr: float = DEFAULT_LR) -> float:
        if self.program is None:
            raise RuntimeError("webgpu backend: call load(preset, params) before step()")
        pr = self.preset
        batch = np.asarray(batch)
        if batch.shape != (pr.batch, pr.ctx + 1):
            raise ValueError(f"batch has shape {batch.shape}; preset '{pr.name}' needs ({pr.batch}, {pr.ctx + 1})")
        if batch.min() < 0 or batch.max() >= VOCAB:
            raise ValueError(f"batch values must be bytes 0..{VOCAB - 1}; got {batch.min()}..{batch.max()}")
        gpu, tl = self.gpu, self.tl
        ids = batch[:, :-1]
        start, rows = ops.token_csr(ids, VOCAB)
        tokens = np.empty(tl.total, np.uint32)
        tokens[tl.ids:tl.targets] = ids.ravel()
        tokens[tl.targets:tl.csr_start] = batch[:, 1:].ravel()
        tokens[tl.csr_start:tl.csr_rows] = start
        tokens[tl.csr_rows:] = rows
        self.t += 1
        st = np.array([lr, 1.0 - OPTIM.beta1**self.t, 1.0 - OPTIM.beta2**self.t], np.float32)
        gpu.write(self.bufs["tokens"], tokens)
        gpu.write(self.bufs["step"], st)
        enc = gpu.device.create_command_encoder(label="train_step")
        self.program.encode(enc)
        enc.copy_buffer_to_buffer(self.bufs["step"], 4 * ops.ST_NORM, self.readback, 0, 12)
        gpu.device.queue.submit([self.program.finish(enc)])
        norm, scale, loss = read_mapped(self.readback, np.float32, 3)
        self.last_loss, self.last_grad_norm, self.last_clip_scale = float(loss), float(norm), float(scale)
        if not np.isfinite(loss):
            raise FloatingPointError(f"webgpu backend: loss is {loss} at step {self.t}")
        return float(loss)

    def parameters(self) -> np.ndarray:
        if self.program is None:
            raise RuntimeError("webgpu backend: call load(preset, params) before parameters()")
        return self.gpu.read(self.bufs["params"], count=self.layout.total)

    def gradients(self) -> np.ndarray:
        if self.program is None or self.t == 0:
            raise RuntimeError("webgpu backend: no gradient yet; call step() first")
        return self.gpu.read(self.bufs["grads"], count=self.layout.total)

    def memory_bytes(self) -> int | None:
        """Bytes of device buffers this backend allocated (all of them, at load: nothing per step)."""
        if self.program is None:
            return None
        return sum(buf.size for buf in self.bufs.values()) + self.program.uniforms.size + self.readback.size

    def profile(self) -> list[tuple[str, float]]:
        """[(dispatch name, GPU seconds)] of one training step from timestamp queries, each
        dispatch in its own compute pass. It RUNS a step on the last batch (weights and Adam
        moments move on, the step count does not): for diagnosis, not inside a measured run."""
        if self.program is None or self.t == 0:
            raise RuntimeError("webgpu backend: call step() once before profile()")
        return self.program.profile()

    def close(self) -> None:
        for buf in self.bufs.values():
            buf.destroy()
        if getattr(self, "readback", None) is not None:
            self.readback.destroy()
            self.readback = None
        if getattr(self, "program", None) is not None and self.program.uniforms is not None:
            self.program.uniforms.destroy()
        self._free()

