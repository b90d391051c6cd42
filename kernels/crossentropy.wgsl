// Fused softmax cross-entropy (MODEL.md: mean next-byte cross-entropy over all B*T positions).
// Legend: R = rows (B*T), V = vocabulary.
//
// crossentropy_forward_backward   per row r: loss[r] = logsumexp(logits[r]) - logits[r, target[r]]
//                                 logits[r] <- (softmax(logits[r]) - onehot(target[r])) / R
//                                 (the gradient of the mean loss, written in place)
// loss_mean                       out = sum_r loss[r] / R   (one workgroup, fixed order)

struct Args {
    rows: u32, v: u32,
    logits_off: u32,   // (R,V) logits in, dlogits out
    tgt_off: u32,      // (R) targets in `tokens`
    loss_off: u32,     // (R) per-row losses
    out_off: u32,      // mean loss, in `st`
}
const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> u: Args;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read> tokens: array<u32>;
@group(0) @binding(3) var<storage, read_write> losses: array<f32>;
@group(0) @binding(4) var<storage, read_write> st: array<f32>;

var<workgroup> red: array<f32, 64>;

fn wg_reduce(v: f32, lid: u32, is_max: bool) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) {
            if (is_max) { red[lid] = max(red[lid], red[lid + half]); } else { red[lid] += red[lid + half]; }
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn crossentropy_forward_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let r = wid.x + wid.y * 65535u;
    if (r >= u.rows) { return; }
    let lid = lid3.x;
    let base = u.logits_off + r * u.v;
    var m = -3.0e38;
    for (var i = lid; i < u.v; i += WG) { m = max(m, logits[base + i]); }
    m = wg_reduce(m, lid, true);
    var s = 0.0;
    for (var i = lid; i < u.v; i += WG) { s += exp(logits[base + i] - m); }
    s = wg_reduce(s, lid, false);
    let tgt = tokens[u.tgt_off + r];
    let inv_rows = 1.0 / f32(u.rows);
    if (lid == 0u) { losses[u.loss_off + r] = log(s) + m - logits[base + tgt]; }
    workgroupBarrier();   // the loss read logits[target] before it is overwritten
    for (var i = lid; i < u.v; i += WG) {
        var d = exp(logits[base + i] - m) / s;
        if (i == tgt) { d -= 1.0; }
        logits[base + i] = d * inv_rows;
    }
}

@compute @workgroup_size(64)
fn loss_mean(@builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    var s = 0.0;
    for (var i = lid; i < u.rows; i += WG) { s += losses[u.loss_off + i]; }
    s = wg_reduce(s, lid, false);
    if (lid == 0u) { st[u.out_off] = s / f32(u.rows); }
}
