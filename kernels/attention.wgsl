// Causal multi-head self-attention, Flash-Attention-2 style: online softmax, no T x T matrix.
// Legend: B = batch, T = context, C = channels, H = heads, hd = C / H (a multiple of 4, at most 64).
// q, k, v, o, dout, dq, dk, dv are (B,T,C) with head h in channels [h*hd, (h+1)*hd);
// lse and dd are (B,H,T).
//
// attention_forward       o = softmax(q k^T * scale + causal mask) v,  scale = 1/sqrt(hd)
//                         lse = log-sum-exp of each row's scaled scores (saved for backward)
// attention_backward_dq   dd = rowsum(dout * o)   (FA2's D)
//                         dq = scale * sum_j p_ij (dout_i . v_j - dd_i) k_j,  p_ij = exp(s_ij - lse_i)
// attention_backward_dkv  dv_j = sum_{i>=j} p_ij dout_i
//                         dk_j = scale * sum_{i>=j} p_ij (dout_i . v_j - dd_i) q_i
// dq runs before dkv (it writes dd). A workgroup owns 32 query rows (forward, dq) or 32 key
// rows (dkv) and loops over tiles of the other side staged in workgroup memory; the two
// backward kernels together recompute p instead of storing it, and need no atomics.
// Each row is shared by SPLIT invocations (override; workgroup (32, SPLIT)): invocation
// (x, s) takes every SPLIT-th row of each staged tile, and the SPLIT partial results are
// merged in workgroup memory in a fixed order (forward: online-softmax states; backward:
// sums). SPLIT = 1 suits CPU adapters; 4 gives a GPU four times the invocations.
// Rows are handled as vec4s (hd must be a multiple of 4; hd4 = hd / 4).

struct Args {
    t: u32, c: u32, h: u32, hd: u32,
    q_off: u32, k_off: u32, v_off: u32, o_off: u32, lse_off: u32,
    do_off: u32, dq_off: u32, dk_off: u32, dv_off: u32, dd_off: u32,
    scale: f32,
}
const BR: u32 = 32u;        // rows (queries or keys) per workgroup
override SPLIT: u32 = 1u;   // invocations per row
override HD4: u32 = 0u;     // hd / 4 fixed at pipeline creation (0: read it from the uniform), so the
                            // per-row loops have constant bounds and the per-row arrays can be registers
const BT: u32 = 32u;        // rows per staged tile of the other side
const MAX_HD4: u32 = 16u;   // head_dim at most 64
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

var<workgroup> tile1: array<vec4<f32>, 512>;   // (BT, MAX_HD4): k (forward, dq) or q (dkv)
var<workgroup> tile2: array<vec4<f32>, 512>;   // (BT, MAX_HD4): v (forward, dq) or dout (dkv)
var<workgroup> tile_lse: array<f32, 32>;  // dkv: lse of the staged queries
var<workgroup> tile_dd: array<f32, 32>;   // dkv: dd of the staged queries
var<workgroup> part_m: array<f32, 32>;    // forward merge: running max of one split
var<workgroup> part_l: array<f32, 32>;    // forward merge: running sum of one split

fn row_base(b: u32, i: u32, hh: u32) -> u32 { return (b * u.t + i) * u.c + hh * u.hd; }

// 4 consecutive values at element i (one function per binding: an entry point's layout holds
// only the bindings it uses)
fn ld_q(i: u32) -> vec4<f32> { return vec4(q[i], q[i + 1u], q[i + 2u], q[i + 3u]); }
fn ld_k(i: u32) -> vec4<f32> { return vec4(k[i], k[i + 1u], k[i + 2u], k[i + 3u]); }
fn ld_v(i: u32) -> vec4<f32> { return vec4(v[i], v[i + 1u], v[i + 2u], v[i + 3u]); }
fn ld_o(i: u32) -> vec4<f32> { return vec4(o[i], o[i + 1u], o[i + 2u], o[i + 3u]); }
fn ld_do(i: u32) -> vec4<f32> { return vec4(dout[i], dout[i + 1u], dout[i + 2u], dout[i + 3u]); }

// Stage rows j0 .. j0+BT of k and v (head hh) into tile1/tile2 (zero past T); f is the
// invocation's flat index in the workgroup, 32 * SPLIT invocations share the work.
fn stage_kv(b: u32, hh: u32, j0: u32, f: u32) {
    let hd4 = select(u.hd / 4u, HD4, HD4 > 0u);
    for (var e = f; e < BT * hd4; e += BR * SPLIT) {
        let jj = e / hd4;
        let d4 = e % hd4;
        let j = j0 + jj;
        var a = vec4<f32>(0.0);
        var c = vec4<f32>(0.0);
        if (j < u.t) {
            let r = row_base(b, j, hh) + 4u * d4;
            a = ld_k(u.k_off + r);
            c = ld_v(u.v_off + r);
        }
        tile1[jj * MAX_HD4 + d4] = a;
        tile2[jj * MAX_HD4 + d4] = c;
    }
}

@compute @workgroup_size(32, SPLIT)
fn attention_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let x = lid.x;
    let sp = lid.y;
    let f = x + BR * sp;
    let b = wid.y / u.h;
    let hh = wid.y % u.h;
    let hd4 = select(u.hd / 4u, HD4, HD4 > 0u);
    let i = wid.x * BR + x;
    let valid = i < u.t;
    let rb = row_base(b, min(i, u.t - 1u), hh);
    var qr: array<vec4<f32>, 16>;    // q_i * scale
    var acc: array<vec4<f32>, 16>;   // sum_j p_ij v_j (unnormalised) over this split's keys
    for (var d = 0u; d < hd4; d++) { qr[d] = ld_q(u.q_off + rb + 4u * d) * u.scale; acc[d] = vec4(0.0); }
    var mx = NEG;
    var l = 0.0;
    let kv_end = min(u.t, wid.x * BR + BR);
    for (var j0 = 0u; j0 < kv_end; j0 += BT) {
        stage_kv(b, hh, j0, f);
        workgroupBarrier();
        if (valid && j0 <= i) {
            let jn = min(BT, i + 1u - j0);
            var s: array<f32, 32>;
            var tmax = mx;
            for (var jj = sp; jj < jn; jj += SPLIT) {
                var d4 = vec4<f32>(0.0);
                for (var d = 0u; d < hd4; d++) { d4 = fma(qr[d], tile1[jj * MAX_HD4 + d], d4); }
                let sc = d4.x + d4.y + d4.z + d4.w;
                s[jj] = sc;
                tmax = max(tmax, sc);
            }
            let corr = exp(mx - tmax);
            l *= corr;
            for (var d = 0u; d < hd4; d++) { acc[d] *= corr; }
            for (var jj = sp; jj < jn; jj += SPLIT) {
                let pj = exp(s[jj] - tmax);
                l += pj;
                for (var d = 0u; d < hd4; d++) { acc[d] = fma(vec4(pj), tile2[jj * MAX_HD4 + d], acc[d]); }
            }
            mx = tmax;
        }
        workgroupBarrier();
    }
    // merge the splits into split 0, one at a time, in order
    for (var other = 1u; other < SPLIT; other++) {
        if (sp == other) {
            part_m[x] = mx;
            part_l[x] = l;
            for (var d = 0u; d < hd4; d++) { tile1[x * MAX_HD4 + d] = acc[d]; }
        }
        workgroupBarrier();
        if (sp == 0u) {
            let m2 = part_m[x];
            let mn = max(mx, m2);
            let a0 = exp(mx - mn);
            let a1 = exp(m2 - mn);
            l = l * a0 + part_l[x] * a1;
            for (var d = 0u; d < hd4; d++) { acc[d] = acc[d] * a0 + tile1[x * MAX_HD4 + d] * a1; }
            mx = mn;
        }
        workgroupBarrier();
    }
    if (valid && sp == 0u) {
        let inv = 1.0 / l;
        for (var d = 0u; d < hd4; d++) {
            let y = acc[d] * inv;
            let at = u.o_off + rb + 4u * d;
            o[at] = y.x; o[at + 1u] = y.y; o[at + 2u] = y.z; o[at + 3u] = y.w;
        }
        lse[u.lse_off + wid.y * u.t + i] = mx + log(l);
    }
}

@compute @workgroup_size(32, SPLIT)
fn attention_backward_dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let x = lid.x;
    let sp = lid.y;
    let f = x + BR * sp;
    let b = wid.y / u.h;
    let hh = wid.y % u.h;
    let hd4 = select(u.hd / 4u, HD4, HD4 > 0u);
    let i = wid.x * BR + x;
    let valid = i < u.t;
    let rb = row_base(b, min(i, u.t - 1u), hh);
    var qr: array<vec4<f32>, 16>;
    var dor: array<vec4<f32>, 16>;
    var acc: array<vec4<f32>, 16>;
    var di4 = vec4<f32>(0.0);
    for (var d = 0u; d < hd4; d++) {
        qr[d] = ld_q(u.q_off + rb + 4u * d) * u.scale;
        dor[d] = ld_do(u.do_off + rb + 4u * d);
        di4 = fma(dor[d], ld_o(u.o_off + rb + 4u * d), di4);
        acc[d] = vec4(0.0);
    }
    let di = di4.x + di4.y + di4.z + di4.w;
    let li = lse[u.lse_off + wid.y * u.t + min(i, u.t - 1u)];
    let kv_end = min(u.t, wid.x * BR + BR);
    for (var j0 = 0u; j0 < kv_end; j0 += BT) {
        stage_kv(b, hh, j0, f);
        workgroupBarrier();
        if (valid && j0 <= i) {
            let jn = min(BT, i + 1u - j0);
            for (var jj = sp; jj < jn; jj += SPLIT) {
                var s4 = vec4<f32>(0.0);
                var dp4 = vec4<f32>(0.0);
                for (var d = 0u; d < hd4; d++) {
                    s4 = fma(qr[d], tile1[jj * MAX_HD4 + d], s4);
                    dp4 = fma(dor[d], tile2[jj * MAX_HD4 + d], dp4);
                }
                let s = s4.x + s4.y + s4.z + s4.w;
                let dp = dp4.x + dp4.y + dp4.z + dp4.w;
                let ds = exp(s - li) * (dp - di);
                for (var d = 0u; d < hd4; d++) { acc[d] = fma(vec4(ds), tile1[jj * MAX_HD4 + d], acc[d]); }
            }
        }
        workgroupBarrier();
    }
    for (var other = 1u; other < SPLIT; other++) {   // sum the splits into split 0, in order
        if (sp == other) { for (var d = 0u; d < hd4; d++) { tile1[x * MAX_HD4 + d] = acc[d]; } }
        workgroupBarrier();
        if (sp == 0u) { for (var d = 0u; d < hd4; d++) { acc[d] += tile1[x * MAX_HD4 + d]; } }
        workgroupBarrier();
    }
    if (valid && sp == 0u) {
        for (var d = 0u; d < hd4; d++) {
            let y = acc[d] * u.scale;
            let at = u.dq_off + rb + 4u * d;
            dq[at] = y.x; dq[at + 1u] = y.y; dq[at + 2u] = y.z; dq[at + 3u] = y.w;
        }
        dd[u.dd_off + wid.y * u.t + i] = di;
    }
}

@compute @workgroup_size(32, SPLIT)
fn attention_backward_dkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let x = lid.x;
    let sp = lid.y;
    let f = x + BR * sp;
    let b = wid.y / u.h;
    let hh = wid.y % u.h;
    let hd4 = select(u.hd / 4u, HD4, HD4 > 0u);
    let j = wid.x * BR + x;
    let valid = j < u.t;
    let rb = row_base(b, min(j, u.t - 1u), hh);
    var kr: array<vec4<f32>, 16>;    // k_j * scale
    var vr: array<vec4<f32>, 16>;
    var dka: array<vec4<f32>, 16>;
    var dva: array<vec4<f32>, 16>;
    for (var d = 0u; d < hd4; d++) {
        kr[d] = ld_k(u.k_off + rb + 4u * d) * u.scale;
        vr[d] = ld_v(u.v_off + rb + 4u * d);
        dka[d] = vec4(0.0);
        dva[d] = vec4(0.0);
    }
    for (var i0 = wid.x * BR; i0 < u.t; i0 += BT) {
        // stage queries i0 .. i0+BT: q, dout, lse, dd
        for (var e = f; e < BT * hd4; e += BR * SPLIT) {
            let ii = e / hd4;
            let d = e % hd4;
            let i = i0 + ii;
            var a = vec4<f32>(0.0);
            var c = vec4<f32>(0.0);
            if (i < u.t) {
                let r = row_base(b, i, hh) + 4u * d;
                a = ld_q(u.q_off + r);
                c = ld_do(u.do_off + r);
            }
            tile1[ii * MAX_HD4 + d] = a;
            tile2[ii * MAX_HD4 + d] = c;
        }
        if (f < BT && i0 + f < u.t) {
            tile_lse[f] = lse[u.lse_off + wid.y * u.t + i0 + f];
            tile_dd[f] = dd[u.dd_off + wid.y * u.t + i0 + f];
        }
        workgroupBarrier();
        if (valid) {
            let ni = min(BT, u.t - i0);
            let first = select(0u, j - i0, j > i0);                    // queries i >= j only
            for (var ii = first + (sp + SPLIT - first % SPLIT) % SPLIT; ii < ni; ii += SPLIT) {
                var s4 = vec4<f32>(0.0);
                var dp4 = vec4<f32>(0.0);
                for (var d = 0u; d < hd4; d++) {
                    s4 = fma(tile1[ii * MAX_HD4 + d], kr[d], s4);
                    dp4 = fma(tile2[ii * MAX_HD4 + d], vr[d], dp4);
                }
                let pij = exp(s4.x + s4.y + s4.z + s4.w - tile_lse[ii]);
                let ds = pij * (dp4.x + dp4.y + dp4.z + dp4.w - tile_dd[ii]);
                for (var d = 0u; d < hd4; d++) {
                    dva[d] = fma(vec4(pij), tile2[ii * MAX_HD4 + d], dva[d]);
                    dka[d] = fma(vec4(ds), tile1[ii * MAX_HD4 + d], dka[d]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var other = 1u; other < SPLIT; other++) {   // sum the splits into split 0, in order
        if (sp == other) {
            for (var d = 0u; d < hd4; d++) { tile1[x * MAX_HD4 + d] = dka[d]; tile2[x * MAX_HD4 + d] = dva[d]; }
        }
        workgroupBarrier();
        if (sp == 0u) {
            for (var d = 0u; d < hd4; d++) { dka[d] += tile1[x * MAX_HD4 + d]; dva[d] += tile2[x * MAX_HD4 + d]; }
        }
        workgroupBarrier();
    }
    if (valid && sp == 0u) {
        for (var d = 0u; d < hd4; d++) {
            let y = dka[d] * u.scale;
            let w = dva[d];
            let at = rb + 4u * d;
            dk[u.dk_off + at] = y.x; dk[u.dk_off + at + 1u] = y.y; dk[u.dk_off + at + 2u] = y.z; dk[u.dk_off + at + 3u] = y.w;
            dv[u.dv_off + at] = w.x; dv[u.dv_off + at + 1u] = w.y; dv[u.dv_off + at + 2u] = w.z; dv[u.dv_off + at + 3u] = w.w;
        }
    }
}

// ---- head-dim split variants (*_hs): the HSPLIT invocations of a row each hold HD4P = hd/4/HSPLIT
// vec4s of it (a quarter of the registers of the kernels above at HSPLIT 4). Workgroup
// (HSPLIT, 32): invocation (g, x) holds vec4s [g*HD4P, (g+1)*HD4P) of row x. Per staged tile:
// phase 1 writes each invocation's partial dot products (q.k, and do.v in backward) to `part`;
// barrier; phase 2 sums the HSPLIT partials of each pair in the fixed order g = 0, 1, ... (every
// member of a group gets the same bits) and updates its own slice. The staged tile holds
// bt = min(32, 48 / HSPLIT) rows so that `part` (32 x bt x HSPLIT vec2s) fits in 12 KiB and a
// kernel's workgroup memory (tiles 16 KiB, part, lse/dd 256 B) in 32 KiB.
// Loop bounds are overrides (constants after pipeline creation), so the per-row arrays can
// live in registers.
override HSPLIT: u32 = 2u;   // invocations per row, splitting its head dim
override HD4P: u32 = 8u;     // vec4s of a row per invocation: hd / 4 / HSPLIT
var<workgroup> part: array<vec2<f32>, 1536>;   // (BR, bt, HSPLIT) partial (s, dp); dq first: rowsum(dout * o)

fn hs_tile() -> u32 { return min(BT, 48u / HSPLIT); }

fn stage_kv_hs(b: u32, hh: u32, j0: u32, f: u32, bt: u32) {
    let hd4 = HD4P * HSPLIT;
    for (var e = f; e < bt * hd4; e += BR * HSPLIT) {
        let jj = e / hd4;
        let d4 = e % hd4;
        let j = j0 + jj;
        var a = vec4<f32>(0.0);
        var c = vec4<f32>(0.0);
        if (j < u.t) {
            let r = row_base(b, j, hh) + 4u * d4;
            a = ld_k(u.k_off + r);
            c = ld_v(u.v_off + r);
        }
        tile1[jj * MAX_HD4 + d4] = a;
        tile2[jj * MAX_HD4 + d4] = c;
    }
}

// the full dot products of pair jj of row x: partials summed in order g = 0 .. HSPLIT-1
fn part_sum(x: u32, jj: u32, bt: u32) -> vec2<f32> {
    var s = vec2<f32>(0.0);
    for (var gg = 0u; gg < HSPLIT; gg++) { s += part[(x * bt + jj) * HSPLIT + gg]; }
    return s;
}

@compute @workgroup_size(HSPLIT, 32)
fn attention_forward_hs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = lid.x;
    let x = lid.y;
    let f = g + HSPLIT * x;
    let b = wid.y / u.h;
    let hh = wid.y % u.h;
    let d0 = g * HD4P;
    let bt = hs_tile();
    let i = wid.x * BR + x;
    let valid = i < u.t;
    let rb = row_base(b, min(i, u.t - 1u), hh);
    var qr: array<vec4<f32>, 16>;    // this slice of q_i * scale
    var acc: array<vec4<f32>, 16>;   // this slice of sum_j p_ij v_j (unnormalised)
    for (var e = 0u; e < HD4P; e++) { qr[e] = ld_q(u.q_off + rb + 4u * (d0 + e)) * u.scale; acc[e] = vec4(0.0); }
    var mx = NEG;
    var l = 0.0;
    let kv_end = min(u.t, wid.x * BR + BR);
    for (var j0 = 0u; j0 < kv_end; j0 += bt) {
        stage_kv_hs(b, hh, j0, f, bt);
        workgroupBarrier();
        let jn = select(0u, min(bt, i + 1u - j0), valid && j0 <= i);
        for (var jj = 0u; jj < jn; jj++) {
            var s4 = vec4<f32>(0.0);
            for (var e = 0u; e < HD4P; e++) { s4 = fma(qr[e], tile1[jj * MAX_HD4 + d0 + e], s4); }
            part[(x * bt + jj) * HSPLIT + g] = vec2(s4.x + s4.y + s4.z + s4.w, 0.0);
        }
        workgroupBarrier();
        if (jn > 0u) {
            var tmax = mx;
            for (var jj = 0u; jj < jn; jj++) { tmax = max(tmax, part_sum(x, jj, bt).x); }
            let corr = exp(mx - tmax);
            l *= corr;
            for (var e = 0u; e < HD4P; e++) { acc[e] *= corr; }
            for (var jj = 0u; jj < jn; jj++) {
                let pj = exp(part_sum(x, jj, bt).x - tmax);
                l += pj;
                for (var e = 0u; e < HD4P; e++) { acc[e] = fma(vec4(pj), tile2[jj * MAX_HD4 + d0 + e], acc[e]); }
            }
            mx = tmax;
        }
        workgroupBarrier();
    }
    if (valid) {
        let inv = 1.0 / l;
        for (var e = 0u; e < HD4P; e++) {
            let y = acc[e] * inv;
            let at = u.o_off + rb + 4u * (d0 + e);
            o[at] = y.x; o[at + 1u] = y.y; o[at + 2u] = y.z; o[at + 3u] = y.w;
        }
        if (g == 0u) { lse[u.lse_off + wid.y * u.t + i] = mx + log(l); }
    }
}

@compute @workgroup_size(HSPLIT, 32)
fn attention_backward_dq_hs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = lid.x;
    let x = lid.y;
    let f = g + HSPLIT * x;
    let b = wid.y / u.h;
    let hh = wid.y % u.h;
    let d0 = g * HD4P;
    let bt = hs_tile();
    let i = wid.x * BR + x;
    let valid = i < u.t;
    let rb = row_base(b, min(i, u.t - 1u), hh);
    var qr: array<vec4<f32>, 16>;
    var dor: array<vec4<f32>, 16>;
    var acc: array<vec4<f32>, 16>;
    var di4 = vec4<f32>(0.0);
    for (var e = 0u; e < HD4P; e++) {
        let at = rb + 4u * (d0 + e);
        qr[e] = ld_q(u.q_off + at) * u.scale;
        dor[e] = ld_do(u.do_off + at);
        di4 = fma(dor[e], ld_o(u.o_off + at), di4);
        acc[e] = vec4(0.0);
    }
    part[x * HSPLIT + g] = vec2(di4.x + di4.y + di4.z + di4.w, 0.0);
    workgroupBarrier();
    var di = 0.0;   // read before the first tile's barrier, after which part is written again
    for (var gg = 0u; gg < HSPLIT; gg++) { di += part[x * HSPLIT + gg].x; }
    let li = lse[u.lse_off + wid.y * u.t + min(i, u.t - 1u)];
    let kv_end = min(u.t, wid.x * BR + BR);
    for (var j0 = 0u; j0 < kv_end; j0 += bt) {
        stage_kv_hs(b, hh, j0, f, bt);
        workgroupBarrier();
        let jn = select(0u, min(bt, i + 1u - j0), valid && j0 <= i);
        for (var jj = 0u; jj < jn; jj++) {
            var s4 = vec4<f32>(0.0);
            var dp4 = vec4<f32>(0.0);
            for (var e = 0u; e < HD4P; e++) {
                s4 = fma(qr[e], tile1[jj * MAX_HD4 + d0 + e], s4);
                dp4 = fma(dor[e], tile2[jj * MAX_HD4 + d0 + e], dp4);
            }
            part[(x * bt + jj) * HSPLIT + g] = vec2(s4.x + s4.y + s4.z + s4.w, dp4.x + dp4.y + dp4.z + dp4.w);
        }
        workgroupBarrier();
        for (var jj = 0u; jj < jn; jj++) {
            let sd = part_sum(x, jj, bt);
            let ds = exp(sd.x - li) * (sd.y - di);
            for (var e = 0u; e < HD4P; e++) { acc[e] = fma(vec4(ds), tile1[jj * MAX_HD4 + d0 + e], acc[e]); }
        }
        workgroupBarrier();
    }
    if (valid) {
        for (var e = 0u; e < HD4P; e++) {
            let y = acc[e] * u.scale;
            let at = u.dq_off + rb + 4u * (d0 + e);
            dq[at] = y.x; dq[at + 1u] = y.y; dq[at + 2u] = y.z; dq[at + 3u] = y.w;
        }
        if (g == 0u) { dd[u.dd_off + wid.y * u.t + i] = di; }
    }
}

@compute @workgroup_size(HSPLIT, 32)
fn attention_backward_dkv_hs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = lid.x;
    let x = lid.y;
    let f = g + HSPLIT * x;
    let b = wid.y / u.h;
    let hh = wid.y % u.h;
    let d0 = g * HD4P;
    let hd4 = HD4P * HSPLIT;
    let bt = hs_tile();
    let j = wid.x * BR + x;
    let valid = j < u.t;
    let rb = row_base(b, min(j, u.t - 1u), hh);
    var kr: array<vec4<f32>, 16>;    // this slice of k_j * scale
    var vr: array<vec4<f32>, 16>;
    var dka: array<vec4<f32>, 16>;
    var dva: array<vec4<f32>, 16>;
    for (var e = 0u; e < HD4P; e++) {
        kr[e] = ld_k(u.k_off + rb + 4u * (d0 + e)) * u.scale;
        vr[e] = ld_v(u.v_off + rb + 4u * (d0 + e));
        dka[e] = vec4(0.0);
        dva[e] = vec4(0.0);
    }
    for (var i0 = wid.x * BR; i0 < u.t; i0 += bt) {
        // stage queries i0 .. i0+bt: q, dout, lse, dd
        for (var e = f; e < bt * hd4; e += BR * HSPLIT) {
            let ii = e / hd4;
            let d = e % hd4;
            let i = i0 + ii;
            var a = vec4<f32>(0.0);
            var c = vec4<f32>(0.0);
            if (i < u.t) {
                let r = row_base(b, i, hh) + 4u * d;
                a = ld_q(u.q_off + r);
                c = ld_do(u.do_off + r);
            }
            tile1[ii * MAX_HD4 + d] = a;
            tile2[ii * MAX_HD4 + d] = c;
        }
        if (f < bt && i0 + f < u.t) {
            tile_lse[f] = lse[u.lse_off + wid.y * u.t + i0 + f];
            tile_dd[f] = dd[u.dd_off + wid.y * u.t + i0 + f];
        }
        workgroupBarrier();
        let ni = select(0u, min(bt, u.t - i0), valid);
        let first = select(0u, j - i0, j > i0);                        // queries i >= j only
        for (var ii = first; ii < ni; ii++) {
            var s4 = vec4<f32>(0.0);
            var dp4 = vec4<f32>(0.0);
            for (var e = 0u; e < HD4P; e++) {
                s4 = fma(tile1[ii * MAX_HD4 + d0 + e], kr[e], s4);
                dp4 = fma(tile2[ii * MAX_HD4 + d0 + e], vr[e], dp4);
            }
            part[(x * bt + ii) * HSPLIT + g] = vec2(s4.x + s4.y + s4.z + s4.w, dp4.x + dp4.y + dp4.z + dp4.w);
        }
        workgroupBarrier();
        for (var ii = first; ii < ni; ii++) {
            let sd = part_sum(x, ii, bt);
            let pij = exp(sd.x - tile_lse[ii]);
            let ds = pij * (sd.y - tile_dd[ii]);
            for (var e = 0u; e < HD4P; e++) {
                dva[e] = fma(vec4(pij), tile2[ii * MAX_HD4 + d0 + e], dva[e]);
                dka[e] = fma(vec4(ds), tile1[ii * MAX_HD4 + d0 + e], dka[e]);
            }
        }
        workgroupBarrier();
    }
    if (valid) {
        for (var e = 0u; e < HD4P; e++) {
            let y = dka[e] * u.scale;
            let w = dva[e];
            let at = rb + 4u * (d0 + e);
            dk[u.dk_off + at] = y.x; dk[u.dk_off + at + 1u] = y.y; dk[u.dk_off + at + 2u] = y.z; dk[u.dk_off + at + 3u] = y.w;
            dv[u.dv_off + at] = w.x; dv[u.dv_off + at + 1u] = w.y; dv[u.dv_off + at + 2u] = w.z; dv[u.dv_off + at + 3u] = w.w;
        }
    }
}
