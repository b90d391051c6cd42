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
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<storage, read> dout: array<f32>;
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
fn hd4_t() -> u32 { return select(u.hd / 4u, HD4, HD4 > 0u); }   // hd / 4: the override if set

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
    let hd4 = hd4_t();
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
    let hd4 = hd4_t();
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
        for (var d = 0u; d < hd4; d++) { put_o4(b, hh, i, d, acc[d] * inv); }
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
    let hd4 = hd4_t();
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
    let hd4 = hd4_t();
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


// ---- tiled kernels for GPUs (*_tiled) --------------------------------------------------------
// Flash-Attention-2 as small matrix products through workgroup memory, in the manner of
// matmul.wgsl's matmul_shared: each invocation owns a 4 x 4 block of a score tile and a block
// of its output, held in vec4 variables written out by hand (no per-invocation arrays: those
// the compiler cannot resolve to registers live in local memory on the H100), and the operands
// are staged transposed, so one vec4 read from workgroup memory feeds four rows or four keys.
// Softmax row maxes and sums are combined across the invocations that share a row through
// workgroup memory, in a fixed order, and every one of them computes the same bits: results are
// deterministic.
//   attention_forward_tiled       workgroup (8, 8): 32 query rows; key tiles of 32
//   attention_backward_dkv_tiled  workgroup (8, 4): 16 key rows; query tiles of 32
// (dq has the row kernel only, attention_backward_dq above: it writes dd.) The forward takes
// its row blocks last first (the longest causal rows start first).
// Workgroup memory: at most 31,232 bytes a kernel (lavapipe offers 32 KiB). The HD4 override
// must be set (hd / 4). Transposed 32-row tiles keep rows 9 vec4s apart (padding), so that 8
// invocations reading 8 different head dims hit different banks.

var<workgroup> fq: array<vec4<f32>, 544>;   // forward: q * scale [row * 17 + d4] (rows 17 vec4s apart: no bank conflicts)
var<workgroup> fk: array<vec4<f32>, 544>;   // forward: k [key * 17 + d4], then p^T [key * 8 + ty][i] (row ty + 8i)
var<workgroup> fv: array<vec4<f32>, 512>;   // forward: v [key * 16 + d4]
var<workgroup> fr: array<f32, 512>;         // forward: row max of each invocation [row * 8 + tx] (row = ty + 8i), then row sums [256 + ...]
var<workgroup> ba: array<vec4<f32>, 576>;   // dkv: q^T [d * 9 + query / 4]   (tiles of 32)
var<workgroup> bb: array<vec4<f32>, 576>;   // dkv: dout^T
var<workgroup> bc: array<vec4<f32>, 256>;   // dkv: k^T * scale [d * 4 + key / 4]  (16 rows)
var<workgroup> bd: array<vec4<f32>, 256>;   // dkv: v^T
var<workgroup> be: array<vec4<f32>, 144>;   // dkv: p^T [key * 9 + query / 4]
var<workgroup> bf: array<vec4<f32>, 144>;   // dkv: ds^T [key * 9 + query / 4]

fn idx4(i: u32) -> vec4<u32> { return vec4<u32>(i) + vec4<u32>(0u, 1u, 2u, 3u); }
fn hmax(x: vec4<f32>) -> f32 { return max(max(x.x, x.y), max(x.z, x.w)); }
fn hsum(x: vec4<f32>) -> f32 { return x.x + x.y + x.z + x.w; }
// acc + (x0 . y, x1 . y, x2 . y, x3 . y)
fn dots(acc: vec4<f32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, y: vec4<f32>) -> vec4<f32> {
    return acc + vec4(dot(x0, y), dot(x1, y), dot(x2, y), dot(x3, y));
}
// forward: the 4 rows ty + 8i's entries in fr over the 8 invocations (tx order), folded into m
fn rows_max(ty: u32, m: vec4<f32>) -> vec4<f32> {
    var r = m;
    for (var t = 0u; t < 8u; t++) {
        r = max(r, vec4(fr[8u * ty + t], fr[8u * ty + 64u + t], fr[8u * ty + 128u + t], fr[8u * ty + 192u + t]));
    }
    return r;
}
fn rows_sum(ty: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var t = 0u; t < 8u; t++) {
        r += vec4(fr[256u + 8u * ty + t], fr[320u + 8u * ty + t], fr[384u + 8u * ty + t], fr[448u + 8u * ty + t]);
    }
    return r;
}
fn lse_or0(bh: u32, i: u32) -> f32 { return select(0.0, lse[u.lse_off + bh * u.t + min(i, u.t - 1u)], i < u.t); }
fn dd_or0(bh: u32, i: u32) -> f32 { return select(0.0, dd[u.dd_off + bh * u.t + min(i, u.t - 1u)], i < u.t); }
fn put_o4(b: u32, hh: u32, i: u32, d4: u32, y: vec4<f32>) {   // o[row i, dims 4 d4 .. 4 d4 + 3]
    if (i < u.t) { let at = u.o_off + row_base(b, i, hh) + 4u * d4; o[at] = y.x; o[at + 1u] = y.y; o[at + 2u] = y.z; o[at + 3u] = y.w; }
}
// one head dim `dim` of rows i .. i+3 (column stores: the backward kernel's accumulators are vec4s
// over rows)
fn put_dkv_col(b: u32, hh: u32, i: u32, dim: u32, yk: vec4<f32>, yv: vec4<f32>) {
    for (var r = 0u; r < 4u; r++) {
        if (i + r < u.t) {
            dk[u.dk_off + row_base(b, i + r, hh) + dim] = yk[r];
            dv[u.dv_off + row_base(b, i + r, hh) + dim] = yv[r];
        }
    }
}

@compute @workgroup_size(8, 8)
fn attention_forward_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let tx = lid.x;   // scores: keys j0 + tx + 8j (j < 4); output: head-dim vec4s tx and tx + 8
    let ty = lid.y;   // rows r0 + ty + 8i (i < 4)
    let f = ty * 8u + tx;
    let hd4 = hd4_t();
    let b = wid.y / u.h;
    let hh = wid.y % u.h;
    let r0 = ((u.t + 31u) / 32u - 1u - wid.x) * 32u;
    let row = vec4(r0 + ty) + vec4<u32>(0u, 8u, 16u, 24u);
    for (var e = f; e < 32u * hd4; e += 64u) {
        let r = e / hd4;
        let d4 = e % hd4;
        var x = vec4<f32>(0.0);
        if (r0 + r < u.t) { x = ld_q(u.q_off + row_base(b, r0 + r, hh) + 4u * d4) * u.scale; }
        fq[r * 17u + d4] = x;
    }
    var m = vec4<f32>(NEG);   // running max and sum of the 4 rows
    var l = vec4<f32>(0.0);
    var oa0 = vec4<f32>(0.0); var oa1 = vec4<f32>(0.0); var oa2 = vec4<f32>(0.0); var oa3 = vec4<f32>(0.0);
    var ob0 = vec4<f32>(0.0); var ob1 = vec4<f32>(0.0); var ob2 = vec4<f32>(0.0); var ob3 = vec4<f32>(0.0);
    let end = min(u.t, r0 + 32u);   // the keys these rows see
    for (var j0 = 0u; j0 < end; j0 += 32u) {
        workgroupBarrier();
        for (var e = f; e < 32u * hd4; e += 64u) {
            let r = e / hd4;
            let d4 = e % hd4;
            var kx = vec4<f32>(0.0);
            var vx = vec4<f32>(0.0);
            if (j0 + r < u.t) {
                let at = row_base(b, j0 + r, hh) + 4u * d4;
                kx = ld_k(u.k_off + at);
                vx = ld_v(u.v_off + at);
            }
            fk[r * 17u + d4] = kx;
            fv[r * 16u + d4] = vx;
        }
        workgroupBarrier();
        var s0 = vec4<f32>(0.0); var s1 = vec4<f32>(0.0); var s2 = vec4<f32>(0.0); var s3 = vec4<f32>(0.0);
        for (var d4 = 0u; d4 < hd4; d4++) {
            let k0 = fk[tx * 17u + d4];
            let k1 = fk[(tx + 8u) * 17u + d4];
            let k2 = fk[(tx + 16u) * 17u + d4];
            let k3 = fk[(tx + 24u) * 17u + d4];
            s0 = dots(s0, k0, k1, k2, k3, fq[ty * 17u + d4]);
            s1 = dots(s1, k0, k1, k2, k3, fq[(ty + 8u) * 17u + d4]);
            s2 = dots(s2, k0, k1, k2, k3, fq[(ty + 16u) * 17u + d4]);
            s3 = dots(s3, k0, k1, k2, k3, fq[(ty + 24u) * 17u + d4]);
        }
        let keys = vec4(j0 + tx) + vec4<u32>(0u, 8u, 16u, 24u);   // causal: key visible to row i iff key <= i
        s0 = select(s0, vec4(NEG), keys > vec4(row.x));
        s1 = select(s1, vec4(NEG), keys > vec4(row.y));
        s2 = select(s2, vec4(NEG), keys > vec4(row.z));
        s3 = select(s3, vec4(NEG), keys > vec4(row.w));
        fr[8u * ty + tx] = hmax(s0);
        fr[8u * ty + 64u + tx] = hmax(s1);
        fr[8u * ty + 128u + tx] = hmax(s2);
        fr[8u * ty + 192u + tx] = hmax(s3);
        workgroupBarrier();   // every invocation is past its reads of k: fk takes p^T
        let mn = rows_max(ty, m);
        let corr = exp(m - mn);
        m = mn;
        let p0 = exp(s0 - mn.x);
        let p1 = exp(s1 - mn.y);
        let p2 = exp(s2 - mn.z);
        let p3 = exp(s3 - mn.w);
        fk[tx * 8u + ty] = vec4(p0.x, p1.x, p2.x, p3.x);
        fk[(tx + 8u) * 8u + ty] = vec4(p0.y, p1.y, p2.y, p3.y);
        fk[(tx + 16u) * 8u + ty] = vec4(p0.z, p1.z, p2.z, p3.z);
        fk[(tx + 24u) * 8u + ty] = vec4(p0.w, p1.w, p2.w, p3.w);
        fr[256u + 8u * ty + tx] = hsum(p0);
        fr[320u + 8u * ty + tx] = hsum(p1);
        fr[384u + 8u * ty + tx] = hsum(p2);
        fr[448u + 8u * ty + tx] = hsum(p3);
        workgroupBarrier();
        l = l * corr + rows_sum(ty);
        oa0 *= corr.x; oa1 *= corr.y; oa2 *= corr.z; oa3 *= corr.w;
        ob0 *= corr.x; ob1 *= corr.y; ob2 *= corr.z; ob3 *= corr.w;
        let kn = min(32u, end - j0);
        for (var kk = 0u; kk < kn; kk++) {
            let p = fk[kk * 8u + ty];
            let va = fv[kk * 16u + tx];
            oa0 = fma(vec4(p.x), va, oa0);
            oa1 = fma(vec4(p.y), va, oa1);
            oa2 = fma(vec4(p.z), va, oa2);
            oa3 = fma(vec4(p.w), va, oa3);
            if (hd4 > 8u) {
                let vb = fv[kk * 16u + tx + 8u];
                ob0 = fma(vec4(p.x), vb, ob0);
                ob1 = fma(vec4(p.y), vb, ob1);
                ob2 = fma(vec4(p.z), vb, ob2);
                ob3 = fma(vec4(p.w), vb, ob3);
            }
        }
    }
    let inv = 1.0 / l;
    if (tx < hd4) {
        put_o4(b, hh, row.x, tx, oa0 * inv.x); put_o4(b, hh, row.y, tx, oa1 * inv.y);
        put_o4(b, hh, row.z, tx, oa2 * inv.z); put_o4(b, hh, row.w, tx, oa3 * inv.w);
    }
    if (tx + 8u < hd4) {
        put_o4(b, hh, row.x, tx + 8u, ob0 * inv.x); put_o4(b, hh, row.y, tx + 8u, ob1 * inv.y);
        put_o4(b, hh, row.z, tx + 8u, ob2 * inv.z); put_o4(b, hh, row.w, tx + 8u, ob3 * inv.w);
    }
    if (tx == 0u) {
        let lg = m + log(l);
        for (var r = 0u; r < 4u; r++) { if (row[r] < u.t) { lse[u.lse_off + wid.y * u.t + row[r]] = lg[r]; } }
    }
}

@compute @workgroup_size(8, 4)
fn attention_backward_dkv_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let tx = lid.x;   // scores: queries i0 + 4tx .. +3; dk, dv: head dims tx + 8 m
    let ty = lid.y;   // keys k0 + 4ty .. +3
    let f = ty * 8u + tx;
    let hd4 = hd4_t();
    let hd = 4u * hd4;
    let b = wid.y / u.h;
    let hh = wid.y % u.h;
    let k0 = wid.x * 16u;   // the first key blocks see the most queries: they start first
    let key = k0 + 4u * ty;
    for (var e = f; e < 16u * hd4; e += 32u) {
        let r = e / hd4;
        let d4 = e % hd4;
        var x = vec4<f32>(0.0);
        var y = vec4<f32>(0.0);
        if (k0 + r < u.t) {
            let at = row_base(b, k0 + r, hh) + 4u * d4;
            x = ld_k(u.k_off + at) * u.scale;
            y = ld_v(u.v_off + at);
        }
        for (var c = 0u; c < 4u; c++) {
            bc[(4u * d4 + c) * 4u + r / 4u][r % 4u] = x[c];
            bd[(4u * d4 + c) * 4u + r / 4u][r % 4u] = y[c];
        }
    }
    var k_0 = vec4<f32>(0.0); var k_1 = vec4<f32>(0.0); var k_2 = vec4<f32>(0.0); var k_3 = vec4<f32>(0.0);   // dk[keys, tx + 8m]
    var k_4 = vec4<f32>(0.0); var k_5 = vec4<f32>(0.0); var k_6 = vec4<f32>(0.0); var k_7 = vec4<f32>(0.0);
    var v_0 = vec4<f32>(0.0); var v_1 = vec4<f32>(0.0); var v_2 = vec4<f32>(0.0); var v_3 = vec4<f32>(0.0);   // dv[keys, tx + 8m]
    var v_4 = vec4<f32>(0.0); var v_5 = vec4<f32>(0.0); var v_6 = vec4<f32>(0.0); var v_7 = vec4<f32>(0.0);
    for (var i0 = (k0 / 32u) * 32u; i0 < u.t; i0 += 32u) {   // the queries from the 32-row tile holding k0
        workgroupBarrier();
        for (var e = f; e < 32u * hd4; e += 32u) {
            let r = e / hd4;
            let d4 = e % hd4;
            var x = vec4<f32>(0.0);
            var g = vec4<f32>(0.0);
            if (i0 + r < u.t) {
                let at = row_base(b, i0 + r, hh) + 4u * d4;
                x = ld_q(u.q_off + at);
                g = ld_do(u.do_off + at);
            }
            for (var c = 0u; c < 4u; c++) {
                ba[(4u * d4 + c) * 9u + r / 4u][r % 4u] = x[c];
                bb[(4u * d4 + c) * 9u + r / 4u][r % 4u] = g[c];
            }
        }
        workgroupBarrier();
        let qs = idx4(i0 + 4u * tx);
        let lq = vec4(lse_or0(wid.y, qs.x), lse_or0(wid.y, qs.y), lse_or0(wid.y, qs.z), lse_or0(wid.y, qs.w));
        let dq4 = vec4(dd_or0(wid.y, qs.x), dd_or0(wid.y, qs.y), dd_or0(wid.y, qs.z), dd_or0(wid.y, qs.w));
        var s0 = vec4<f32>(0.0); var s1 = vec4<f32>(0.0); var s2 = vec4<f32>(0.0); var s3 = vec4<f32>(0.0);
        var g0 = vec4<f32>(0.0); var g1 = vec4<f32>(0.0); var g2 = vec4<f32>(0.0); var g3 = vec4<f32>(0.0);
        for (var d = 0u; d < hd; d++) {
            let kk = bc[d * 4u + ty];
            let vv = bd[d * 4u + ty];
            let qa = ba[d * 9u + tx];
            let ga = bb[d * 9u + tx];
            s0 = fma(vec4(kk.x), qa, s0); s1 = fma(vec4(kk.y), qa, s1);
            s2 = fma(vec4(kk.z), qa, s2); s3 = fma(vec4(kk.w), qa, s3);
            g0 = fma(vec4(vv.x), ga, g0); g1 = fma(vec4(vv.y), ga, g1);
            g2 = fma(vec4(vv.z), ga, g2); g3 = fma(vec4(vv.w), ga, g3);
        }
        let live = qs < vec4(u.t);   // query i sees key j iff j <= i < T
        let p0 = select(vec4(0.0), exp(s0 - lq), live & (qs >= vec4(key)));
        let p1 = select(vec4(0.0), exp(s1 - lq), live & (qs >= vec4(key + 1u)));
        let p2 = select(vec4(0.0), exp(s2 - lq), live & (qs >= vec4(key + 2u)));
        let p3 = select(vec4(0.0), exp(s3 - lq), live & (qs >= vec4(key + 3u)));
        be[(4u * ty) * 9u + tx] = p0;
        be[(4u * ty + 1u) * 9u + tx] = p1;
        be[(4u * ty + 2u) * 9u + tx] = p2;
        be[(4u * ty + 3u) * 9u + tx] = p3;
        bf[(4u * ty) * 9u + tx] = p0 * (g0 - dq4);
        bf[(4u * ty + 1u) * 9u + tx] = p1 * (g1 - dq4);
        bf[(4u * ty + 2u) * 9u + tx] = p2 * (g2 - dq4);
        bf[(4u * ty + 3u) * 9u + tx] = p3 * (g3 - dq4);
        workgroupBarrier();
        // dv[keys, dim] += sum over queries p[query, key] dout[query, dim]; dk likewise with ds and q
        for (var qg = 0u; qg < 8u; qg++) {
            let p_0 = be[(4u * ty) * 9u + qg];
            let p_1 = be[(4u * ty + 1u) * 9u + qg];
            let p_2 = be[(4u * ty + 2u) * 9u + qg];
            let p_3 = be[(4u * ty + 3u) * 9u + qg];
            let d_0 = bf[(4u * ty) * 9u + qg];
            let d_1 = bf[(4u * ty + 1u) * 9u + qg];
            let d_2 = bf[(4u * ty + 2u) * 9u + qg];
            let d_3 = bf[(4u * ty + 3u) * 9u + qg];
            v_0 = dots(v_0, p_0, p_1, p_2, p_3, bb[tx * 9u + qg]);
            k_0 = dots(k_0, d_0, d_1, d_2, d_3, ba[tx * 9u + qg]);
            if (hd > 8u) {
                v_1 = dots(v_1, p_0, p_1, p_2, p_3, bb[(tx + 8u) * 9u + qg]);
                k_1 = dots(k_1, d_0, d_1, d_2, d_3, ba[(tx + 8u) * 9u + qg]);
            }
            if (hd > 16u) {
                v_2 = dots(v_2, p_0, p_1, p_2, p_3, bb[(tx + 16u) * 9u + qg]);
                k_2 = dots(k_2, d_0, d_1, d_2, d_3, ba[(tx + 16u) * 9u + qg]);
            }
            if (hd > 24u) {
                v_3 = dots(v_3, p_0, p_1, p_2, p_3, bb[(tx + 24u) * 9u + qg]);
                k_3 = dots(k_3, d_0, d_1, d_2, d_3, ba[(tx + 24u) * 9u + qg]);
            }
            if (hd > 32u) {
                v_4 = dots(v_4, p_0, p_1, p_2, p_3, bb[(tx + 32u) * 9u + qg]);
                k_4 = dots(k_4, d_0, d_1, d_2, d_3, ba[(tx + 32u) * 9u + qg]);
            }
            if (hd > 40u) {
                v_5 = dots(v_5, p_0, p_1, p_2, p_3, bb[(tx + 40u) * 9u + qg]);
                k_5 = dots(k_5, d_0, d_1, d_2, d_3, ba[(tx + 40u) * 9u + qg]);
            }
            if (hd > 48u) {
                v_6 = dots(v_6, p_0, p_1, p_2, p_3, bb[(tx + 48u) * 9u + qg]);
                k_6 = dots(k_6, d_0, d_1, d_2, d_3, ba[(tx + 48u) * 9u + qg]);
            }
            if (hd > 56u) {
                v_7 = dots(v_7, p_0, p_1, p_2, p_3, bb[(tx + 56u) * 9u + qg]);
                k_7 = dots(k_7, d_0, d_1, d_2, d_3, ba[(tx + 56u) * 9u + qg]);
            }
        }
    }
    if (tx < hd) { put_dkv_col(b, hh, key, tx, k_0 * u.scale, v_0); }
    if (tx + 8u < hd) { put_dkv_col(b, hh, key, tx + 8u, k_1 * u.scale, v_1); }
    if (tx + 16u < hd) { put_dkv_col(b, hh, key, tx + 16u, k_2 * u.scale, v_2); }
    if (tx + 24u < hd) { put_dkv_col(b, hh, key, tx + 24u, k_3 * u.scale, v_3); }
    if (tx + 32u < hd) { put_dkv_col(b, hh, key, tx + 32u, k_4 * u.scale, v_4); }
    if (tx + 40u < hd) { put_dkv_col(b, hh, key, tx + 40u, k_5 * u.scale, v_5); }
    if (tx + 48u < hd) { put_dkv_col(b, hh, key, tx + 48u, k_6 * u.scale, v_6); }
    if (tx + 56u < hd) { put_dkv_col(b, hh, key, tx + 56u, k_7 * u.scale, v_7); }
}
