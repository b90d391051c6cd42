// Causal multi-head self-attention, Flash-Attention-2 style: online softmax, no T x T matrix.
// Legend: B = batch, T = context, C = channels, H = heads, hd = C / H (at most MAX_HD).
// q, k, v, o, dout, dq, dk, dv are (B,T,C) with head h in channels [h*hd, (h+1)*hd);
// lse and dd are (B,H,T).
//
// attention_forward       o = softmax(q k^T * scale + causal mask) v,  scale = 1/sqrt(hd)
//                         lse = log-sum-exp of each row's scaled scores (saved for backward)
// attention_backward_dq   dd = rowsum(dout * o)   (FA2's D)
//                         dq = scale * sum_j p_ij (dout_i . v_j - dd_i) k_j,  p_ij = exp(s_ij - lse_i)
// attention_backward_dkv  dv_j = sum_{i>=j} p_ij dout_i
//                         dk_j = scale * sum_{i>=j} p_ij (dout_i . v_j - dd_i) q_i
// dq runs before dkv (it writes dd). Each invocation owns one query row (forward, dq) or one
// key row (dkv) and loops over tiles of the other side staged in workgroup memory; the two
// backward kernels together recompute p instead of storing it, and need no atomics.

struct Args {
    t: u32, c: u32, h: u32, hd: u32,
    q_off: u32, k_off: u32, v_off: u32, o_off: u32, lse_off: u32,
    do_off: u32, dq_off: u32, dk_off: u32, dv_off: u32, dd_off: u32,
    scale: f32,
}
const BR: u32 = 32u;        // rows (queries or keys) per workgroup, one per invocation
const BT: u32 = 32u;        // rows per staged tile of the other side
const MAX_HD: u32 = 64u;
const NEG: f32 = -3.0e38;

@group(0) @binding(0) var<uniform> u: Args;
@group(0) @binding(1) var<storage, read_write> q: array<f32>;
@group(0) @binding(2) var<storage, read_write> k: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<storage, read_write> dout: array<f32>;
@group(0) @binding(7) var<storage, read_write> dq: array<f32>;
@group(0) @binding(8) var<storage, read_write> dk: array<f32>;
@group(0) @binding(9) var<storage, read_write> dv: array<f32>;
@group(0) @binding(10) var<storage, read_write> dd: array<f32>;

var<workgroup> tile1: array<f32, 2048>;   // (BT, MAX_HD): k (forward, dq) or q (dkv)
var<workgroup> tile2: array<f32, 2048>;   // (BT, MAX_HD): v (forward, dq) or dout (dkv)
var<workgroup> tile_lse: array<f32, 32>;  // dkv: lse of the staged queries
var<workgroup> tile_dd: array<f32, 32>;   // dkv: dd of the staged queries

fn row_base(b: u32, i: u32, hh: u32) -> u32 { return (b * u.t + i) * u.c + hh * u.hd; }

// Stage rows j0 .. j0+BT of two (B,T,C) tensors' head slices into tile1/tile2 (zero past T).
fn stage_kv(b: u32, hh: u32, j0: u32, lid: u32) {
    for (var e = lid; e < BT * u.hd; e += BR) {
        let jj = e / u.hd;
        let d = e % u.hd;
        let j = j0 + jj;
        var a = 0.0;
        var c = 0.0;
        if (j < u.t) {
            let r = row_base(b, j, hh) + d;
            a = k[u.k_off + r];
            c = v[u.v_off + r];
        }
        tile1[jj * MAX_HD + d] = a;
        tile2[jj * MAX_HD + d] = c;
    }
}

@compute @workgroup_size(32)
fn attention_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    let b = wid.y / u.h;
    let hh = wid.y % u.h;
    let i = wid.x * BR + lid;
    let valid = i < u.t;
    let rb = row_base(b, min(i, u.t - 1u), hh);
    var qr: array<f32, 64>;
    var acc: array<f32, 64>;
    for (var d = 0u; d < u.hd; d++) { qr[d] = q[u.q_off + rb + d] * u.scale; acc[d] = 0.0; }
    var mx = NEG;
    var l = 0.0;
    let kv_end = min(u.t, wid.x * BR + BR);
    for (var j0 = 0u; j0 < kv_end; j0 += BT) {
        stage_kv(b, hh, j0, lid);
        workgroupBarrier();
        if (valid && j0 <= i) {
            let jn = min(BT, i + 1u - j0);
            var s: array<f32, 32>;
            var tmax = mx;
            for (var jj = 0u; jj < jn; jj++) {
                var dot = 0.0;
                for (var d = 0u; d < u.hd; d++) { dot = fma(qr[d], tile1[jj * MAX_HD + d], dot); }
                s[jj] = dot;
                tmax = max(tmax, dot);
            }
            let corr = exp(mx - tmax);
            l *= corr;
            for (var d = 0u; d < u.hd; d++) { acc[d] *= corr; }
            for (var jj = 0u; jj < jn; jj++) {
                let pj = exp(s[jj] - tmax);
                l += pj;
                for (var d = 0u; d < u.hd; d++) { acc[d] = fma(pj, tile2[jj * MAX_HD + d], acc[d]); }
            }
            mx = tmax;
        }
        workgroupBarrier();
    }
    if (valid) {
        let inv = 1.0 / l;
        for (var d = 0u; d < u.hd; d++) { o[u.o_off + rb + d] = acc[d] * inv; }
        lse[u.lse_off + wid.y * u.t + i] = mx + log(l);
    }
}

@compute @workgroup_size(32)
fn attention_backward_dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    let b = wid.y / u.h;
    let hh = wid.y % u.h;
    let i = wid.x * BR + lid;
    let valid = i < u.t;
    let rb = row_base(b, min(i, u.t - 1u), hh);
    var qr: array<f32, 64>;
    var dor: array<f32, 64>;
    var acc: array<f32, 64>;
    var di = 0.0;
    for (var d = 0u; d < u.hd; d++) {
        qr[d] = q[u.q_off + rb + d] * u.scale;
        dor[d] = dout[u.do_off + rb + d];
        di = fma(dor[d], o[u.o_off + rb + d], di);
        acc[d] = 0.0;
    }
    let li = lse[u.lse_off + wid.y * u.t + min(i, u.t - 1u)];
    let kv_end = min(u.t, wid.x * BR + BR);
    for (var j0 = 0u; j0 < kv_end; j0 += BT) {
        stage_kv(b, hh, j0, lid);
        workgroupBarrier();
        if (valid && j0 <= i) {
            let jn = min(BT, i + 1u - j0);
            for (var jj = 0u; jj < jn; jj++) {
                var s = 0.0;
                var dp = 0.0;
                for (var d = 0u; d < u.hd; d++) {
                    s = fma(qr[d], tile1[jj * MAX_HD + d], s);
                    dp = fma(dor[d], tile2[jj * MAX_HD + d], dp);
                }
                let ds = exp(s - li) * (dp - di);
                for (var d = 0u; d < u.hd; d++) { acc[d] = fma(ds, tile1[jj * MAX_HD + d], acc[d]); }
            }
        }
        workgroupBarrier();
    }
    if (valid) {
        for (var d = 0u; d < u.hd; d++) { dq[u.dq_off + rb + d] = acc[d] * u.scale; }
        dd[u.dd_off + wid.y * u.t + i] = di;
    }
}

@compute @workgroup_size(32)
fn attention_backward_dkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    let b = wid.y / u.h;
    let hh = wid.y % u.h;
    let j = wid.x * BR + lid;
    let valid = j < u.t;
    let rb = row_base(b, min(j, u.t - 1u), hh);
    var kr: array<f32, 64>;
    var vr: array<f32, 64>;
    var dka: array<f32, 64>;
    var dva: array<f32, 64>;
    for (var d = 0u; d < u.hd; d++) {
        kr[d] = k[u.k_off + rb + d] * u.scale;
        vr[d] = v[u.v_off + rb + d];
        dka[d] = 0.0;
        dva[d] = 0.0;
    }
    for (var i0 = wid.x * BR; i0 < u.t; i0 += BT) {
        // stage queries i0 .. i0+BT: q, dout, lse, dd
        for (var e = lid; e < BT * u.hd; e += BR) {
            let ii = e / u.hd;
            let d = e % u.hd;
            let i = i0 + ii;
            var a = 0.0;
            var c = 0.0;
            if (i < u.t) {
                let r = row_base(b, i, hh) + d;
                a = q[u.q_off + r];
                c = dout[u.do_off + r];
            }
            tile1[ii * MAX_HD + d] = a;
            tile2[ii * MAX_HD + d] = c;
        }
        if (i0 + lid < u.t) {
            tile_lse[lid] = lse[u.lse_off + wid.y * u.t + i0 + lid];
            tile_dd[lid] = dd[u.dd_off + wid.y * u.t + i0 + lid];
        }
        workgroupBarrier();
        if (valid) {
            let ni = min(BT, u.t - i0);
            for (var ii = 0u; ii < ni; ii++) {
                if (i0 + ii < j) { continue; }
                var s = 0.0;
                var dp = 0.0;
                for (var d = 0u; d < u.hd; d++) {
                    s = fma(tile1[ii * MAX_HD + d], kr[d], s);
                    dp = fma(tile2[ii * MAX_HD + d], vr[d], dp);
                }
                let pij = exp(s - tile_lse[ii]);
                let ds = pij * (dp - tile_dd[ii]);
                for (var d = 0u; d < u.hd; d++) {
                    dva[d] = fma(pij, tile2[ii * MAX_HD + d], dva[d]);
                    dka[d] = fma(ds, tile1[ii * MAX_HD + d], dka[d]);
                }
            }
        }
        workgroupBarrier();
    }
    if (valid) {
        for (var d = 0u; d < u.hd; d++) {
            dk[u.dk_off + rb + d] = dka[d] * u.scale;
            dv[u.dv_off + rb + d] = dva[d];
        }
    }
}
