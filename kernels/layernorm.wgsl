// LayerNorm over C (MODEL.md: gain w and bias b, eps 1e-5, population variance).
// Legend: R = rows (B*T), C = channels.
//
// layernorm_forward         y (R,C) = (x - mean) * rstd * w + b;   mean (R), rstd (R) saved
// layernorm_backward        dx (R,C) [+]= rstd * (g - mean_c(g) - xhat * mean_c(g * xhat)),
//                           g = dy * w, xhat = (x - mean) * rstd   (ACCUM adds into dx: the
//                           residual stream's gradient)
// layernorm_param_backward  dw (C) = sum_r dy * xhat,  db (C) = sum_r dy   (rows in order, no atomics)
//
// Forward and backward: one workgroup of 64 invocations per row with a workgroup-memory
// tree reduction (GPUs), or, the *_rows variants, one invocation per row with no barriers
// (CPU adapters such as lavapipe, where barriers are costly and invocations are SIMD lanes).
// The workgroup kernels reduce a row with row_sum(v, lid), defined in one of two companion
// files (WGSL has no includes; engines/webgpu/runtime.py COMPOSED joins them): layernorm_tree.wgsl (a
// workgroup-memory tree, any adapter) or layernorm_subgroup.wgsl (subgroup sums, adapters with
// the subgroup feature; kernel family "layernorm_sg").

struct Args {
    rows: u32, c: u32,
    x_off: u32, w_off: u32, b_off: u32, y_off: u32,
    stat_off: u32,   // mean at stat_off + r, rstd at stat_off + rows + r
    dy_off: u32, dx_off: u32, dw_off: u32, db_off: u32,
    flags: u32,      // ACCUM
}
const ACCUM: u32 = 4u;
const EPS: f32 = 1e-5;
const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> u: Args;
@group(0) @binding(1) var<storage, read> x: array<f32>;    // (R,C) input
@group(0) @binding(2) var<storage, read> p: array<f32>;    // parameters: w (C), b (C)
@group(0) @binding(3) var<storage, read_write> y: array<f32>;    // (R,C) forward output or dx
@group(0) @binding(4) var<storage, read_write> s: array<f32>;    // stats: mean (R), rstd (R)
@group(0) @binding(5) var<storage, read> dy: array<f32>;   // (R,C) output gradient
@group(0) @binding(6) var<storage, read_write> g: array<f32>;    // gradients: dw (C), db (C)

var<workgroup> red: array<f32, 64>;   // row_sum's partial sums

@compute @workgroup_size(64)
fn layernorm_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let r = wid.x + wid.y * 65535u;
    if (r >= u.rows) { return; }   // uniform per workgroup
    let lid = lid3.x;
    let base = u.x_off + r * u.c;
    var acc = 0.0;
    for (var i = lid; i < u.c; i += WG) { acc += x[base + i]; }
    let mean = row_sum(acc, lid) / f32(u.c);
    acc = 0.0;
    for (var i = lid; i < u.c; i += WG) { let d = x[base + i] - mean; acc += d * d; }
    let rstd = inverseSqrt(row_sum(acc, lid) / f32(u.c) + EPS);
    for (var i = lid; i < u.c; i += WG) {
        y[u.y_off + r * u.c + i] = (x[base + i] - mean) * rstd * p[u.w_off + i] + p[u.b_off + i];
    }
    if (lid == 0u) {
        s[u.stat_off + r] = mean;
        s[u.stat_off + u.rows + r] = rstd;
    }
}

@compute @workgroup_size(64)
fn layernorm_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let r = wid.x + wid.y * 65535u;
    if (r >= u.rows) { return; }
    let lid = lid3.x;
    let mean = s[u.stat_off + r];
    let rstd = s[u.stat_off + u.rows + r];
    let xb = u.x_off + r * u.c;
    let db = u.dy_off + r * u.c;
    var sg = 0.0;
    var sgx = 0.0;
    for (var i = lid; i < u.c; i += WG) {
        let gi = dy[db + i] * p[u.w_off + i];
        sg += gi;
        sgx += gi * (x[xb + i] - mean) * rstd;
    }
    let mg = row_sum(sg, lid) / f32(u.c);
    let mgx = row_sum(sgx, lid) / f32(u.c);
    for (var i = lid; i < u.c; i += WG) {
        let gi = dy[db + i] * p[u.w_off + i];
        let xhat = (x[xb + i] - mean) * rstd;
        var d = rstd * (gi - mg - xhat * mgx);
        let o = u.dx_off + r * u.c + i;
        if ((u.flags & ACCUM) != 0u) { d += y[o]; }
        y[o] = d;
    }
}

// A workgroup of 256 invocations: PCH channels x (256 / PCH) row slices (override; 32 by
// default, fewer channels and more slices give a GPU more workgroups for narrow models).
// Invocation (i, j) sums rows j, j + slices, ... of channel i; the slices are added in
// workgroup memory in a fixed order.
override PCH: u32 = 32u;
var<workgroup> red_w: array<f32, 256>;
var<workgroup> red_b: array<f32, 256>;

@compute @workgroup_size(256)
fn layernorm_param_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = lid % PCH;
    let slice = lid / PCH;
    let slices = 256u / PCH;
    let i = wid.x * PCH + ch;
    let ic = min(i, u.c - 1u);
    var dw = 0.0;
    var dbias = 0.0;
    for (var r = slice; r < u.rows; r += slices) {
        let d = dy[u.dy_off + r * u.c + ic];
        dw += d * (x[u.x_off + r * u.c + ic] - s[u.stat_off + r]) * s[u.stat_off + u.rows + r];
        dbias += d;
    }
    red_w[lid] = dw;
    red_b[lid] = dbias;
    workgroupBarrier();
    if (slice == 0u && i < u.c) {
        var tw = 0.0;
        var tb = 0.0;
        for (var j = 0u; j < slices; j++) { tw += red_w[j * PCH + ch]; tb += red_b[j * PCH + ch]; }
        g[u.dw_off + i] = tw;
        g[u.db_off + i] = tb;
    }
}

@compute @workgroup_size(64)
fn layernorm_forward_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x + gid.y * 65535u * 64u;
    if (r >= u.rows) { return; }
    let base = u.x_off + r * u.c;
    var acc = 0.0;
    for (var i = 0u; i < u.c; i++) { acc += x[base + i]; }
    let mean = acc / f32(u.c);
    acc = 0.0;
    for (var i = 0u; i < u.c; i++) { let d = x[base + i] - mean; acc += d * d; }
    let rstd = inverseSqrt(acc / f32(u.c) + EPS);
    for (var i = 0u; i < u.c; i++) {
        y[u.y_off + r * u.c + i] = (x[base + i] - mean) * rstd * p[u.w_off + i] + p[u.b_off + i];
    }
    s[u.stat_off + r] = mean;
    s[u.stat_off + u.rows + r] = rstd;
}

@compute @workgroup_size(64)
fn layernorm_backward_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x + gid.y * 65535u * 64u;
    if (r >= u.rows) { return; }
    let mean = s[u.stat_off + r];
    let rstd = s[u.stat_off + u.rows + r];
    let xb = u.x_off + r * u.c;
    let db = u.dy_off + r * u.c;
    var sg = 0.0;
    var sgx = 0.0;
    for (var i = 0u; i < u.c; i++) {
        let gi = dy[db + i] * p[u.w_off + i];
        sg += gi;
        sgx += gi * (x[xb + i] - mean) * rstd;
    }
    let mg = sg / f32(u.c);
    let mgx = sgx / f32(u.c);
    for (var i = 0u; i < u.c; i++) {
        let gi = dy[db + i] * p[u.w_off + i];
        let xhat = (x[xb + i] - mean) * rstd;
        var d = rstd * (gi - mg - xhat * mgx);
        let o = u.dx_off + r * u.c + i;
        if ((u.flags & ACCUM) != 0u) { d += y[o]; }
        y[o] = d;
    }
}
