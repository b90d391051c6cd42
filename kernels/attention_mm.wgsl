// Causal multi-head self-attention through matrix products (engines/webgpu/ops.py: attention_forward_mm and
// attention_backward_mm): the T x T scores of every head are materialised, one layer at a time, in
// two scratch buffers, and the products run as batched matmul.wgsl products (one head a
// workgroup z, skipping the tiles above the diagonal). This file holds the row-wise parts between
// them. Legend as in attention.wgsl: B = batch, T = context, C = channels, H = heads, hd = C / H;
// o and dout are (B,T,C) with head h in channels [h*hd, (h+1)*hd); s, dp are (B,H,T,T); lse (B,H,T).
//
//   forward:   s = q k^T (product)   ->  softmax_causal: p = softmax(s * scale, j <= i) in s, lse
//              o = p v (product)
//   backward:  s = q k^T, dp = dout v^T (products)
//              ->  softmax_grad: p = exp(s * scale - lse) in s; ds = scale * p * (dp - D) in dp,
//                  D = rowsum(dout * o) (FA2's D); zeros for j > i in both
//              dv = p^T dout, dq = ds k, dk = ds^T q (products)
// One workgroup of 64 a row of the scores; rows spread over workgroups x and y.

struct Args {
    t: u32, c: u32, h: u32, hd: u32,
    rows: u32,                     // B * H * T
    s_off: u32, dp_off: u32, lse_off: u32, o_off: u32, do_off: u32,
    scale: f32,
}
const WG: u32 = 64u;
const NEG: f32 = -3.0e38;

@group(0) @binding(0) var<uniform> u: Args;
@group(0) @binding(1) var<storage, read_write> s: array<f32>;
@group(0) @binding(2) var<storage, read_write> dp: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
@group(0) @binding(4) var<storage, read> o: array<f32>;
@group(0) @binding(5) var<storage, read> dout: array<f32>;

var<workgroup> red: array<f32, 64>;

fn wg_reduce(lid: u32, x: f32, take_max: bool) -> f32 {   // the workgroup's max or sum of x, to all
    red[lid] = x;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) {
            let y = red[lid + half];
            red[lid] = select(red[lid] + y, max(red[lid], y), take_max);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 { return wid.x + wid.y * nwg.x; }

@compute @workgroup_size(64)
fn softmax_causal(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let r = row_of(wid, nwg);
    if (r >= u.rows) { return; }   // uniform: one row a workgroup
    let i = r % u.t;
    let base = u.s_off + r * u.t;
    var m = NEG;
    for (var j = lid; j <= i; j += WG) { m = max(m, s[base + j] * u.scale); }
    m = wg_reduce(lid, m, true);
    var l = 0.0;
    for (var j = lid; j <= i; j += WG) { l += exp(s[base + j] * u.scale - m); }
    l = wg_reduce(lid, l, false);
    let inv = 1.0 / l;
    for (var j = lid; j < u.t; j += WG) {
        var p = 0.0;
        if (j <= i) { p = exp(s[base + j] * u.scale - m) * inv; }
        s[base + j] = p;
    }
    if (lid == 0u) { lse[u.lse_off + r] = m + log(l); }
}

@compute @workgroup_size(64)
fn softmax_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let r = row_of(wid, nwg);
    if (r >= u.rows) { return; }
    let i = r % u.t;
    let z = r / u.t;                                              // b * H + h
    let xb = ((z / u.h) * u.t + i) * u.c + (z % u.h) * u.hd;      // row i of head h in (B,T,C)
    var d = 0.0;
    for (var e = lid; e < u.hd; e += WG) { d += dout[u.do_off + xb + e] * o[u.o_off + xb + e]; }
    d = wg_reduce(lid, d, false);
    let li = lse[u.lse_off + r];
    let base = r * u.t;
    for (var j = lid; j < u.t; j += WG) {
        var p = 0.0;
        var g = 0.0;
        if (j <= i) {
            p = exp(s[u.s_off + base + j] * u.scale - li);
            g = u.scale * p * (dp[u.dp_off + base + j] - d);
        }
        s[u.s_off + base + j] = p;
        dp[u.dp_off + base + j] = g;
    }
}
