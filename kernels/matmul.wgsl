// Matrix products of the model (MODEL.md: linear y = x @ W + b, W stored (in, out) row-major).
// Legend: B = batch, T = context, C = channels, V = vocabulary; M, N, K are the product's sizes.
//
//   c (M,N) = op(a) (M,K) @ op(b) (K,N)  [+ bias (N)]  [+ res (M,N)]  [+ c (M,N)]
//
//   op(a) = a, stored (M,K), or a^T with a stored (K,M)        (override TRANS_A)
//   op(b) = b, stored (K,N), or b^T with b stored (N,K)        (override TRANS_B)
//
// forward        y  = x @ W + b (+ residual)       NN   (and logits = ln_f(x) @ tok_emb^T: NT)
// backward       dx = dy @ W^T                     NT   (flag ACCUM adds into dx)
//                dW = x^T @ dy                     TN
//                db = column sums of dy            bias_backward below
//
// Every operand is a whole storage buffer plus an element offset (the flat parameter and
// gradient buffers are bound whole; the offsets come from the uniform). WebGPU forbids a buffer
// bound writable in one binding of a dispatch and in any other binding of it (the usage scope
// and the binding-aliasing rules): so a, b, bias and res are read-only, c is the one writable
// binding, and what a kernel writes besides c (the bias gradient, split-K partial bias sums) is
// in c's buffer and written through c, at bias_off.

struct Args {
    m: u32, n: u32, k: u32,
    a_off: u32, b_off: u32, c_off: u32,   // element offsets of a, b, c
    bias_off: u32, res_off: u32,          // element offsets of bias (N) and res (M,N)
    flags: u32,                           // HAS_BIAS | HAS_RES | ACCUM | BIAS_GRAD
    k_split: u32,                         // matmul_splitk, splitk_reduce: number of K slices S
    // batched products (override BATCHED; matmul_shared_pf, matmul_big_pf): workgroup z
    // takes product z of a batch, whose operands are at a_off + (z / zin) * a_so + (z % zin) * a_si
    // (b and c alike), rows lda, ldb, ldc elements apart: the per-head products of attention, whose
    // head slices of (B,T,C) tensors are rows C apart (zin = H heads inside each of B batches)
    lda: u32, ldb: u32, ldc: u32, zin: u32,
    a_so: u32, a_si: u32, b_so: u32, b_si: u32, c_so: u32, c_si: u32,
}
const HAS_BIAS: u32 = 1u;
const HAS_RES: u32 = 2u;
const ACCUM: u32 = 4u;
const SKIP_UPPER: u32 = 16u;   // batched, causal: a tile whose columns all exceed its rows is not computed
const K_UPTO_ROW: u32 = 32u;   // batched, causal: op(a)[i, kk] = 0 for kk > i: K stops at the tile's last row
const K_FROM_ROW: u32 = 64u;   // batched, causal: op(a)[j, kk] = 0 for kk < j: K starts at the tile's first row
const BIAS_GRAD: u32 = 8u;   // matmul_direct, weight gradient dW = x^T @ dy: also db = column sums
                             // of op(b) = dy into c[bias_off..+n] (overwritten), by the
                             // invocations of the first row block, which read all of dy anyway

@group(0) @binding(0) var<uniform> u: Args;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> res: array<f32>;
// (bindings 6 and 7, the 128 x 128 kernels' a and b again as vec4s: at fetch_ga below)

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override BATCHED: bool = false;   // a batch of products, one a workgroup z (Args); no bias, res or split
var<private> zbase: vec3<u32>;    // batched: element offsets of this workgroup's a, b and c (batch_begin)

fn load_a(row: u32, kk: u32) -> f32 {   // op(a)[row, kk], zero outside
    if (row >= u.m || kk >= u.k) { return 0.0; }
    if (BATCHED) {
        if (TRANS_A) { return a[zbase.x + kk * u.lda + row]; }
        return a[zbase.x + row * u.lda + kk];
    }
    if (TRANS_A) { return a[u.a_off + kk * u.m + row]; }
    return a[u.a_off + row * u.k + kk];
}

fn load_b(kk: u32, col: u32) -> f32 {   // op(b)[kk, col], zero outside
    if (kk >= u.k || col >= u.n) { return 0.0; }
    if (BATCHED) {
        if (TRANS_B) { return b[zbase.y + col * u.ldb + kk]; }
        return b[zbase.y + kk * u.ldb + col];
    }
    if (TRANS_B) { return b[u.b_off + col * u.k + kk]; }
    return b[u.b_off + kk * u.n + col];
}

// Batched products: this workgroup's operand offsets (zbase) and its range of K, (lo, hi, 0): all
// of K, or under the causal flags only where op(a) can be non-zero for the tile's rows
// row0 .. row0 + tile - 1 (the range stays in whole BK steps: row0 and tile are multiples of 16).
// Not batched: k_range(z), the split-K slice.
fn tile_k_range(z: u32, row0: u32, tile: u32) -> vec3<u32> {
    if (!BATCHED) { return k_range(z); }
    let zo = z / u.zin;
    let zi = z % u.zin;
    zbase = vec3(u.a_off + zo * u.a_so + zi * u.a_si, u.b_off + zo * u.b_so + zi * u.b_si,
                 u.c_off + zo * u.c_so + zi * u.c_si);
    var lo = 0u;
    var hi = u.k;
    if ((u.flags & K_UPTO_ROW) != 0u) { hi = min(hi, row0 + tile); }
    if ((u.flags & K_FROM_ROW) != 0u) { lo = min(hi, row0); }
    return vec3(lo, hi, 0u);
}

// Batched, causal (SKIP_UPPER): the tile at (row0, col0) lies wholly above the diagonal (every
// column past every row): nothing of it is computed or stored (what reads c reads only j <= i).
fn skip_tile(row0: u32, col0: u32, tile: u32) -> bool {
    return BATCHED && (u.flags & SKIP_UPPER) != 0u && col0 >= row0 + tile;
}

// ---------------------------------------------------------------------------------------------
// matmul_direct: the same product, the default everywhere. "Register blocking without
// workgroup memory": each invocation computes an 8 x 8 block of c (rows row..row+8, columns
// col..col+8) in sixteen vec4 accumulators written out by hand (no arrays: lavapipe keeps
// dynamically indexed private arrays in memory), reading a and b straight from the buffers
// (CPU caches do what workgroup tiles do on a GPU; lavapipe's barriers are costly). Seen on
// lavapipe about 4x a removed kernel with 4x4 blocks through workgroup memory ("tiled"), on the
// H100 15.5 TFLOP/s at 4096^3 against its 0.36 (docs/webgpu-engine.md, removed in session 6).
// Workgroup (8, 8) covers a 64 x 64 tile of c. Rows and
// columns past the edge are clamped on load and skipped on store.

fn load_a_clamped(row: u32, kk: u32) -> f32 {   // op(a)[min(row, m-1), kk]
    let r = min(row, u.m - 1u);
    if (TRANS_A) { return a[u.a_off + kk * u.m + r]; }
    return a[u.a_off + r * u.k + kk];
}

fn load_b4(kk: u32, col: u32) -> vec4<f32> {   // op(b)[kk, col..col+4], columns clamped to n-1
    let n1 = u.n - 1u;
    let j0 = min(col, n1);
    let j1 = min(col + 1u, n1);
    let j2 = min(col + 2u, n1);
    let j3 = min(col + 3u, n1);
    if (TRANS_B) {
        return vec4(b[u.b_off + j0 * u.k + kk], b[u.b_off + j1 * u.k + kk],
                    b[u.b_off + j2 * u.k + kk], b[u.b_off + j3 * u.k + kk]);
    }
    let base = u.b_off + kk * u.n;
    return vec4(b[base + j0], b[base + j1], b[base + j2], b[base + j3]);
}

fn store_8(row: u32, col: u32, lo: vec4<f32>, hi: vec4<f32>) {   // epilogue of one row of 8
    if (row >= u.m) { return; }
    for (var j = 0u; j < 8u; j++) {
        let cc = col + j;
        if (cc >= u.n) { return; }
        var v = select(hi[max(j, 4u) - 4u], lo[min(j, 3u)], j < 4u);
        if ((u.flags & HAS_BIAS) != 0u) { v += bias[u.bias_off + cc]; }
        if ((u.flags & HAS_RES) != 0u) { v += res[u.res_off + row * u.n + cc]; }
        let idx = u.c_off + row * u.n + cc;
        if ((u.flags & ACCUM) != 0u) { v += c[idx]; }
        c[idx] = v;
    }
}

@compute @workgroup_size(8, 8)
fn matmul_direct(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x * 8u;
    let row = gid.y * 8u;
    if (row >= u.m || col >= u.n) { return; }
    var c0a = vec4<f32>(0.0); var c0b = vec4<f32>(0.0);
    var c1a = vec4<f32>(0.0); var c1b = vec4<f32>(0.0);
    var c2a = vec4<f32>(0.0); var c2b = vec4<f32>(0.0);
    var c3a = vec4<f32>(0.0); var c3b = vec4<f32>(0.0);
    var c4a = vec4<f32>(0.0); var c4b = vec4<f32>(0.0);
    var c5a = vec4<f32>(0.0); var c5b = vec4<f32>(0.0);
    var c6a = vec4<f32>(0.0); var c6b = vec4<f32>(0.0);
    var c7a = vec4<f32>(0.0); var c7b = vec4<f32>(0.0);
    let want_db = (u.flags & BIAS_GRAD) != 0u && row == 0u;
    var db0 = vec4<f32>(0.0);
    var db1 = vec4<f32>(0.0);
    for (var kk = 0u; kk < u.k; kk++) {
        let b0 = load_b4(kk, col);
        let b1 = load_b4(kk, col + 4u);
        if (want_db) { db0 += b0; db1 += b1; }
        let a0 = vec4(load_a_clamped(row + 0u, kk)); c0a = fma(a0, b0, c0a); c0b = fma(a0, b1, c0b);
        let a1 = vec4(load_a_clamped(row + 1u, kk)); c1a = fma(a1, b0, c1a); c1b = fma(a1, b1, c1b);
        let a2 = vec4(load_a_clamped(row + 2u, kk)); c2a = fma(a2, b0, c2a); c2b = fma(a2, b1, c2b);
        let a3 = vec4(load_a_clamped(row + 3u, kk)); c3a = fma(a3, b0, c3a); c3b = fma(a3, b1, c3b);
        let a4 = vec4(load_a_clamped(row + 4u, kk)); c4a = fma(a4, b0, c4a); c4b = fma(a4, b1, c4b);
        let a5 = vec4(load_a_clamped(row + 5u, kk)); c5a = fma(a5, b0, c5a); c5b = fma(a5, b1, c5b);
        let a6 = vec4(load_a_clamped(row + 6u, kk)); c6a = fma(a6, b0, c6a); c6b = fma(a6, b1, c6b);
        let a7 = vec4(load_a_clamped(row + 7u, kk)); c7a = fma(a7, b0, c7a); c7b = fma(a7, b1, c7b);
    }
    if (want_db) {
        for (var j = 0u; j < 8u; j++) {
            if (col + j < u.n) { c[u.bias_off + col + j] = select(db1[max(j, 4u) - 4u], db0[min(j, 3u)], j < 4u); }
        }
    }
    store_8(row + 0u, col, c0a, c0b);
    store_8(row + 1u, col, c1a, c1b);
    store_8(row + 2u, col, c2a, c2b);
    store_8(row + 3u, col, c3a, c3b);
    store_8(row + 4u, col, c4a, c4b);
    store_8(row + 5u, col, c5a, c5b);
    store_8(row + 6u, col, c6a, c6b);
    store_8(row + 7u, col, c7a, c7b);
}

// ---------------------------------------------------------------------------------------------
// matmul_direct4: matmul_direct with a 4 x 4 block per invocation, so a workgroup (8, 8) covers
// a 32 x 32 tile of c: four times the workgroups, for products too small to fill a GPU with
// 64 x 64 tiles (the model's C x C weight gradients, say). Same flags, BIAS_GRAD included.

fn store_4(row: u32, col: u32, acc: vec4<f32>) {
    if (row >= u.m) { return; }
    for (var j = 0u; j < 4u; j++) {
        let cc = col + j;
        if (cc >= u.n) { return; }
        var v = acc[j];
        if ((u.flags & HAS_BIAS) != 0u) { v += bias[u.bias_off + cc]; }
        if ((u.flags & HAS_RES) != 0u) { v += res[u.res_off + row * u.n + cc]; }
        let idx = u.c_off + row * u.n + cc;
        if ((u.flags & ACCUM) != 0u) { v += c[idx]; }
        c[idx] = v;
    }
}

@compute @workgroup_size(8, 8)
fn matmul_direct4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x * 4u;
    let row = gid.y * 4u;
    if (row >= u.m || col >= u.n) { return; }
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    let want_db = (u.flags & BIAS_GRAD) != 0u && row == 0u;
    var db = vec4<f32>(0.0);
    for (var kk = 0u; kk < u.k; kk++) {
        let b0 = load_b4(kk, col);
        if (want_db) { db += b0; }
        c0 = fma(vec4(load_a_clamped(row + 0u, kk)), b0, c0);
        c1 = fma(vec4(load_a_clamped(row + 1u, kk)), b0, c1);
        c2 = fma(vec4(load_a_clamped(row + 2u, kk)), b0, c2);
        c3 = fma(vec4(load_a_clamped(row + 3u, kk)), b0, c3);
    }
    if (want_db) {
        for (var j = 0u; j < 4u; j++) { if (col + j < u.n) { c[u.bias_off + col + j] = db[j]; } }
    }
    store_4(row + 0u, col, c0);
    store_4(row + 1u, col, c1);
    store_4(row + 2u, col, c2);
    store_4(row + 3u, col, c3);
}

// ---------------------------------------------------------------------------------------------
// matmul_shared: "64 x 64 workgroup tiles through workgroup memory as vec4s, 4 x 4 per
// invocation in four vec4 accumulators". Workgroup (16, 16); invocation (tx, ty) owns rows
// row0 + 4ty .. +3 and columns col0 + 4tx .. +3. Per step of BK = 16 along K each invocation
// loads one vec4 of each tile (along the stored rows, so neighbouring invocations read
// neighbouring addresses), then does 16 vec4 FMAs per 2 workgroup-memory vec4 reads.
// Same flags as matmul_direct; BIAS_GRAD: the first row of workgroups also sums the staged
// op(b) tiles. Split-K over workgroup z when k_split > 1 (slices of whole BK steps).

var<workgroup> sa: array<vec4<f32>, 256>;   // (BK, 16): sa[kk*16 + r4][i] = op(a)[row0 + 4 r4 + i, k0 + kk]
var<workgroup> sb: array<vec4<f32>, 256>;   // (BK, 16): sb[kk*16 + c4][j] = op(b)[k0 + kk, col0 + 4 c4 + j]

// The accumulators of the 64 x 64 kernels (4 x 4 an invocation) and their bias-gradient sums,
// private so that one step of k is a function (shared_k) and a BK = 16 step is 16 calls of it
// in a row (shared_step): Naga, wgpu-native's compiler, emits every loop as an unbounded loop
// with a 64-bit iteration counter (its guard against infinite loops), which the driver cannot
// unroll; Tint (Dawn) emits a loop the driver unrolls. UNROLL = false keeps the loop (A/B).
override UNROLL: bool = true;
var<private> s_acc0: vec4<f32>;
var<private> s_acc1: vec4<f32>;
var<private> s_acc2: vec4<f32>;
var<private> s_acc3: vec4<f32>;
var<private> s_db: vec4<f32>;

fn shared_k(kk: u32, tx: u32, ty: u32, want_db: bool) {
    let a4 = sa[kk * 16u + ty];
    let b4 = sb[kk * 16u + tx];
    s_acc0 = fma(vec4(a4.x), b4, s_acc0);
    s_acc1 = fma(vec4(a4.y), b4, s_acc1);
    s_acc2 = fma(vec4(a4.z), b4, s_acc2);
    s_acc3 = fma(vec4(a4.w), b4, s_acc3);
    if (want_db) { s_db += b4; }
}

fn shared_step(tx: u32, ty: u32, w: bool) {   // the 16 k of one staged step, in order
    if (!UNROLL) {
        for (var kk = 0u; kk < 16u; kk++) { shared_k(kk, tx, ty, w); }
        return;
    }
    shared_k(0u, tx, ty, w);  shared_k(1u, tx, ty, w);  shared_k(2u, tx, ty, w);  shared_k(3u, tx, ty, w);
    shared_k(4u, tx, ty, w);  shared_k(5u, tx, ty, w);  shared_k(6u, tx, ty, w);  shared_k(7u, tx, ty, w);
    shared_k(8u, tx, ty, w);  shared_k(9u, tx, ty, w);  shared_k(10u, tx, ty, w); shared_k(11u, tx, ty, w);
    shared_k(12u, tx, ty, w); shared_k(13u, tx, ty, w); shared_k(14u, tx, ty, w); shared_k(15u, tx, ty, w);
}

fn shared_store(wid: vec3<u32>, row0: u32, col0: u32, tx: u32, ty: u32, want_db: bool, zoff: u32) {
    let row = row0 + 4u * ty;
    let col = col0 + 4u * tx;
    if (want_db) {
        for (var j = 0u; j < 4u; j++) { if (col + j < u.n) { c[u.bias_off + wid.z * u.n + col + j] = s_db[j]; } }
    }
    store_4z(row, col, s_acc0, zoff);
    store_4z(row + 1u, col, s_acc1, zoff);
    store_4z(row + 2u, col, s_acc2, zoff);
    store_4z(row + 3u, col, s_acc3, zoff);
}

@compute @workgroup_size(16, 16)
fn matmul_shared(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let kr = k_range(wid.z);
    let want_db = (u.flags & BIAS_GRAD) != 0u && wid.y == 0u && lid.y == 0u;
    s_acc0 = vec4(0.0); s_acc1 = vec4(0.0); s_acc2 = vec4(0.0); s_acc3 = vec4(0.0); s_db = vec4(0.0);
    let tx = lid.x;
    let ty = lid.y;
    let t = ty * 16u + tx;
    let row0 = wid.y * 64u;
    let col0 = wid.x * 64u;
    for (var k0 = kr.x; k0 < kr.y; k0 += 16u) {
        put_a(t, fetch_a(t, row0, k0));   // staging: fetch_a/put_a and fetch_b/put_b below
        put_b(t, fetch_b(t, col0, k0));
        workgroupBarrier();
        shared_step(tx, ty, want_db);
        workgroupBarrier();
    }
    shared_store(wid, row0, col0, tx, ty, want_db, kr.z);
}

// ---------------------------------------------------------------------------------------------
// matmul_shared_pf: matmul_shared with the next K step's global loads issued before the current
// step's arithmetic ("register prefetch"): each invocation holds the 4 values of op(a) and of
// op(b) it stages next in registers, so their latency overlaps the 16 FMA rounds instead of
// stalling at the barrier. Both kernels stage through the functions below (fetch: the 4 values
// of each operand an invocation stages at k0, along the stored rows so that neighbouring
// invocations read neighbouring addresses; put: into sa/sb), and do the same arithmetic in
// the same order: results equal matmul_shared's bit for bit.

fn fetch_a(t: u32, row0: u32, k0: u32) -> vec4<f32> {   // the 4 values of op(a) invocation t stages at k0
    if (TRANS_A) {
        let kk = t / 16u; let r4 = t % 16u;
        return vec4(load_a(row0 + 4u * r4, k0 + kk), load_a(row0 + 4u * r4 + 1u, k0 + kk),
                    load_a(row0 + 4u * r4 + 2u, k0 + kk), load_a(row0 + 4u * r4 + 3u, k0 + kk));
    }
    let row = t / 4u; let k4 = 4u * (t % 4u);
    return vec4(load_a(row0 + row, k0 + k4), load_a(row0 + row, k0 + k4 + 1u),
                load_a(row0 + row, k0 + k4 + 2u), load_a(row0 + row, k0 + k4 + 3u));
}

fn put_a(t: u32, x: vec4<f32>) {
    if (TRANS_A) { sa[(t / 16u) * 16u + t % 16u] = x; return; }
    let row = t / 4u; let k4 = 4u * (t % 4u);
    for (var i = 0u; i < 4u; i++) { sa[(k4 + i) * 16u + row / 4u][row % 4u] = x[i]; }
}

fn fetch_b(t: u32, col0: u32, k0: u32) -> vec4<f32> {   // the 4 values of op(b) invocation t stages at k0
    if (TRANS_B) {
        let col = t / 4u; let k4 = 4u * (t % 4u);
        return vec4(load_b(k0 + k4, col0 + col), load_b(k0 + k4 + 1u, col0 + col),
                    load_b(k0 + k4 + 2u, col0 + col), load_b(k0 + k4 + 3u, col0 + col));
    }
    let kk = t / 16u; let c4 = t % 16u;
    return vec4(load_b(k0 + kk, col0 + 4u * c4), load_b(k0 + kk, col0 + 4u * c4 + 1u),
                load_b(k0 + kk, col0 + 4u * c4 + 2u), load_b(k0 + kk, col0 + 4u * c4 + 3u));
}

fn put_b(t: u32, x: vec4<f32>) {
    if (TRANS_B) {
        let col = t / 4u; let k4 = 4u * (t % 4u);
        for (var i = 0u; i < 4u; i++) { sb[(k4 + i) * 16u + col / 4u][col % 4u] = x[i]; }
        return;
    }
    sb[(t / 16u) * 16u + t % 16u] = x;
}

@compute @workgroup_size(16, 16)
fn matmul_shared_pf(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wid.y * 64u;
    let col0 = wid.x * 64u;
    if (skip_tile(row0, col0, 64u)) { return; }
    let kr = tile_k_range(wid.z, row0, 64u);
    let want_db = (u.flags & BIAS_GRAD) != 0u && wid.y == 0u && lid.y == 0u;
    s_acc0 = vec4(0.0); s_acc1 = vec4(0.0); s_acc2 = vec4(0.0); s_acc3 = vec4(0.0); s_db = vec4(0.0);
    let tx = lid.x;
    let ty = lid.y;
    let t = ty * 16u + tx;
    var xa = fetch_a(t, row0, kr.x);
    var xb = fetch_b(t, col0, kr.x);
    for (var k0 = kr.x; k0 < kr.y; k0 += 16u) {
        put_a(t, xa);
        put_b(t, xb);
        workgroupBarrier();
        if (k0 + 16u < kr.y) {   // the next step's loads, in flight during this step's arithmetic
            xa = fetch_a(t, row0, k0 + 16u);
            xb = fetch_b(t, col0, k0 + 16u);
        }
        shared_step(tx, ty, want_db);
        workgroupBarrier();
    }
    shared_store(wid, row0, col0, tx, ty, want_db, kr.z);
}

// ---------------------------------------------------------------------------------------------
// matmul_big_pf: "128 x 128 workgroup tiles, 8 x 8 per invocation". Workgroup (16, 16); invocation
// (tx, ty) owns rows row0 + 4ty + {0..3, 64..67} and columns col0 + 4tx + {0..3, 64..67}
// (two vec4 of a and two of b from workgroup memory per k: 64 FMAs per 4 reads, against
// matmul_shared's 16 per 2), in sixteen vec4 accumulators written out by hand. BK = 8 along K.
// For large products on GPUs (H100: two workgroups of 256 an SM). Same flags and split-K
// (k_range slices are whole multiples of 16, so of BK) as matmul_shared; BIAS_GRAD: the
// invocations with ty = 0 of the first row of workgroups sum the staged op(b) tiles. The next K
// step's global loads are issued before this step's arithmetic (register prefetch, as
// matmul_shared_pf does for matmul_shared): with one or two workgroups an SM (the 8 x 8 blocks
// take many registers), their latency is not hidden otherwise.
// matmul_big_db: the same, with the staged tiles double-buffered in workgroup memory (the two
// halves of ga and gb, at o = 0 and 256): a step stages the next K step's tiles into the half
// its FMAs do not read, so one barrier a step instead of two. The same FMAs in the same order:
// its results equal matmul_big_pf's bit for bit. Both kernels declare the two halves (16 KiB):
// they share big_k and the stores, and WGSL counts what a function reads for every entry point
// that can call it; sizing the arrays by an override crashes the pinned Naga (session 13).

var<workgroup> ga: array<vec4<f32>, 512>;   // (BK, 32) at o: ga[o + kk*32 + r4][i] = op(a)[row0 + 4 r4 + i, k0 + kk]
var<workgroup> gb: array<vec4<f32>, 512>;   // (BK, 32) at o: gb[o + kk*32 + c4][j] = op(b)[k0 + kk, col0 + 4 c4 + j]

// The 4 values of op(a) / op(b) invocation t stages at k0 into ga / gb, along the stored rows
// (neighbouring invocations read neighbouring addresses), and where they go (put_ga / put_gb).
// They are 4 consecutive floats of the stored operand in every layout: with A_VEC4 (B_VEC4),
// set where the operand's offset and its stored row length are multiples of 4 (not batched),
// one 16-byte load through a4 (b4), the same buffer bound as vec4s, instead of four loads;
// the same values, so the same results bit for bit.
@group(0) @binding(6) var<storage, read> a4: array<vec4<f32>>;   // the 128 x 128 kernels: a's buffer again
@group(0) @binding(7) var<storage, read> b4: array<vec4<f32>>;   // and b's
override A_VEC4: bool = false;
override B_VEC4: bool = false;

fn fetch_ga(t: u32, row0: u32, k0: u32) -> vec4<f32> {
    if (TRANS_A) {   // a stored (K, M): 4 consecutive rows at one k
        let kk = t / 32u; let r = row0 + 4u * (t % 32u);
        if (A_VEC4) {   // M % 4 == 0: rows r..r+3 are all in or all out
            if (r >= u.m || k0 + kk >= u.k) { return vec4<f32>(0.0); }
            return a4[(u.a_off + (k0 + kk) * u.m + r) / 4u];
        }
        return vec4(load_a(r, k0 + kk), load_a(r + 1u, k0 + kk), load_a(r + 2u, k0 + kk), load_a(r + 3u, k0 + kk));
    }
    let r = row0 + t / 2u; let k4 = k0 + 4u * (t % 2u);   // a stored (M, K): 4 consecutive k of one row
    if (A_VEC4) {   // K % 4 == 0 and k4 % 4 == 0: k4..k4+3 are all in or all out
        if (r >= u.m || k4 >= u.k) { return vec4<f32>(0.0); }
        return a4[(u.a_off + r * u.k + k4) / 4u];
    }
    return vec4(load_a(r, k4), load_a(r, k4 + 1u), load_a(r, k4 + 2u), load_a(r, k4 + 3u));
}

fn put_ga(t: u32, x: vec4<f32>, o: u32) {
    if (TRANS_A) { ga[o + t] = x; return; }
    let row = t / 2u; let k4 = 4u * (t % 2u);
    for (var i = 0u; i < 4u; i++) { ga[o + (k4 + i) * 32u + row / 4u][row % 4u] = x[i]; }
}

fn fetch_gb(t: u32, col0: u32, k0: u32) -> vec4<f32> {
    if (TRANS_B) {   // b stored (N, K): 4 consecutive k of one column
        let cc = col0 + t / 2u; let k4 = k0 + 4u * (t % 2u);
        if (B_VEC4) {   // K % 4 == 0
            if (cc >= u.n || k4 >= u.k) { return vec4<f32>(0.0); }
            return b4[(u.b_off + cc * u.k + k4) / 4u];
        }
        return vec4(load_b(k4, cc), load_b(k4 + 1u, cc), load_b(k4 + 2u, cc), load_b(k4 + 3u, cc));
    }
    let kk = k0 + t / 32u; let cc = col0 + 4u * (t % 32u);   // b stored (K, N): 4 consecutive columns at one k
    if (B_VEC4) {   // N % 4 == 0
        if (kk >= u.k || cc >= u.n) { return vec4<f32>(0.0); }
        return b4[(u.b_off + kk * u.n + cc) / 4u];
    }
    return vec4(load_b(kk, cc), load_b(kk, cc + 1u), load_b(kk, cc + 2u), load_b(kk, cc + 3u));
}

fn put_gb(t: u32, x: vec4<f32>, o: u32) {
    if (!TRANS_B) { gb[o + t] = x; return; }
    let col = t / 2u; let k4 = 4u * (t % 2u);
    for (var i = 0u; i < 4u; i++) { gb[o + (k4 + i) * 32u + col / 4u][col % 4u] = x[i]; }
}

@compute @workgroup_size(16, 16)
fn matmul_big_pf(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    if (skip_tile(wid.y * 128u, wid.x * 128u, 128u)) { return; }
    big_tile(wid, lid, false);
}

@compute @workgroup_size(16, 16)
fn matmul_big_db(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    if (skip_tile(wid.y * 128u, wid.x * 128u, 128u)) { return; }
    big_tile(wid, lid, true);
}

// The 8 x 8 accumulators of the 128 x 128 kernels and their bias-gradient sums, private for the
// same reason as the 64 x 64 kernels' (UNROLL): big_k is one k, big_step the 8 of a BK = 8 step.
var<private> r0a: vec4<f32>; var<private> r0b: vec4<f32>;
var<private> r1a: vec4<f32>; var<private> r1b: vec4<f32>;
var<private> r2a: vec4<f32>; var<private> r2b: vec4<f32>;
var<private> r3a: vec4<f32>; var<private> r3b: vec4<f32>;
var<private> r4a: vec4<f32>; var<private> r4b: vec4<f32>;
var<private> r5a: vec4<f32>; var<private> r5b: vec4<f32>;
var<private> r6a: vec4<f32>; var<private> r6b: vec4<f32>;
var<private> r7a: vec4<f32>; var<private> r7b: vec4<f32>;
var<private> r_db_lo: vec4<f32>;
var<private> r_db_hi: vec4<f32>;

fn big_k(kk: u32, tx: u32, ty: u32, want_db: bool, o: u32) {
    let a_lo = ga[o + kk * 32u + ty];
    let a_hi = ga[o + kk * 32u + 16u + ty];
    let b_lo = gb[o + kk * 32u + tx];
    let b_hi = gb[o + kk * 32u + 16u + tx];
    r0a = fma(vec4(a_lo.x), b_lo, r0a); r0b = fma(vec4(a_lo.x), b_hi, r0b);
    r1a = fma(vec4(a_lo.y), b_lo, r1a); r1b = fma(vec4(a_lo.y), b_hi, r1b);
    r2a = fma(vec4(a_lo.z), b_lo, r2a); r2b = fma(vec4(a_lo.z), b_hi, r2b);
    r3a = fma(vec4(a_lo.w), b_lo, r3a); r3b = fma(vec4(a_lo.w), b_hi, r3b);
    r4a = fma(vec4(a_hi.x), b_lo, r4a); r4b = fma(vec4(a_hi.x), b_hi, r4b);
    r5a = fma(vec4(a_hi.y), b_lo, r5a); r5b = fma(vec4(a_hi.y), b_hi, r5b);
    r6a = fma(vec4(a_hi.z), b_lo, r6a); r6b = fma(vec4(a_hi.z), b_hi, r6b);
    r7a = fma(vec4(a_hi.w), b_lo, r7a); r7b = fma(vec4(a_hi.w), b_hi, r7b);
    if (want_db) { r_db_lo += b_lo; r_db_hi += b_hi; }
}

fn big_step(tx: u32, ty: u32, w: bool, o: u32) {   // the 8 k of one staged step (at o), in order
    if (!UNROLL) {
        for (var kk = 0u; kk < 8u; kk++) { big_k(kk, tx, ty, w, o); }
        return;
    }
    big_k(0u, tx, ty, w, o); big_k(1u, tx, ty, w, o); big_k(2u, tx, ty, w, o); big_k(3u, tx, ty, w, o);
    big_k(4u, tx, ty, w, o); big_k(5u, tx, ty, w, o); big_k(6u, tx, ty, w, o); big_k(7u, tx, ty, w, o);
}

fn big_tile(wid: vec3<u32>, lid: vec3<u32>, double_buffer: bool) {   // a literal at each entry point
    let row0 = wid.y * 128u;
    let col0 = wid.x * 128u;
    let kr = tile_k_range(wid.z, row0, 128u);
    let want_db = (u.flags & BIAS_GRAD) != 0u && wid.y == 0u && lid.y == 0u;
    let t = lid.y * 16u + lid.x;
    big_zero();
    if (double_buffer) { big_steps_db(t, lid.x, lid.y, row0, col0, kr, want_db); }
    else { big_steps(t, lid.x, lid.y, row0, col0, kr, want_db); }
    big_store(wid, row0 + 4u * lid.y, col0 + 4u * lid.x, want_db, kr.z);
}

fn big_steps(t: u32, tx: u32, ty: u32, row0: u32, col0: u32, kr: vec3<u32>, want_db: bool) {   // matmul_big_pf
    var xa = fetch_ga(t, row0, kr.x);
    var xb = fetch_gb(t, col0, kr.x);
    for (var k0 = kr.x; k0 < kr.y; k0 += 8u) {
        put_ga(t, xa, 0u);
        put_gb(t, xb, 0u);
        workgroupBarrier();
        if (k0 + 8u < kr.y) {   // the next step's loads, in flight during this step's FMAs
            xa = fetch_ga(t, row0, k0 + 8u);
            xb = fetch_gb(t, col0, k0 + 8u);
        }
        big_step(tx, ty, want_db, 0u);
        workgroupBarrier();
    }
}

fn big_steps_db(t: u32, tx: u32, ty: u32, row0: u32, col0: u32, kr: vec3<u32>, want_db: bool) {   // matmul_big_db
    var o = 0u;   // the half this step's FMAs read
    if (kr.x < kr.y) {
        put_ga(t, fetch_ga(t, row0, kr.x), 0u);
        put_gb(t, fetch_gb(t, col0, kr.x), 0u);
    }
    workgroupBarrier();
    for (var k0 = kr.x; k0 < kr.y; k0 += 8u) {
        let more = k0 + 8u < kr.y;
        var xa = vec4<f32>(0.0);
        var xb = vec4<f32>(0.0);
        if (more) {   // the next step's loads, in flight during this step's FMAs
            xa = fetch_ga(t, row0, k0 + 8u);
            xb = fetch_gb(t, col0, k0 + 8u);
        }
        big_step(tx, ty, want_db, o);
        if (more) {   // into the other half: last read in the step before, which a barrier ended
            put_ga(t, xa, 256u - o);
            put_gb(t, xb, 256u - o);
        }
        workgroupBarrier();   // the other half staged (and this one read) before the next step
        o = 256u - o;
    }
}

fn big_zero() {
    let z4 = vec4<f32>(0.0);
    r0a = z4; r0b = z4; r1a = z4; r1b = z4; r2a = z4; r2b = z4; r3a = z4; r3b = z4;
    r4a = z4; r4b = z4; r5a = z4; r5b = z4; r6a = z4; r6b = z4; r7a = z4; r7b = z4;
    r_db_lo = z4; r_db_hi = z4;
}

fn big_store(wid: vec3<u32>, r: u32, col: u32, want_db: bool, c_z: u32) {   // the 8 x 8 block at (r, col)
    if (want_db) {
        for (var j = 0u; j < 4u; j++) {
            if (col + j < u.n) { c[u.bias_off + wid.z * u.n + col + j] = r_db_lo[j]; }
            if (col + 64u + j < u.n) { c[u.bias_off + wid.z * u.n + col + 64u + j] = r_db_hi[j]; }
        }
    }
    store_4z(r, col, r0a, c_z);               store_4z(r, col + 64u, r0b, c_z);
    store_4z(r + 1u, col, r1a, c_z);          store_4z(r + 1u, col + 64u, r1b, c_z);
    store_4z(r + 2u, col, r2a, c_z);          store_4z(r + 2u, col + 64u, r2b, c_z);
    store_4z(r + 3u, col, r3a, c_z);          store_4z(r + 3u, col + 64u, r3b, c_z);
    store_4z(r + 64u, col, r4a, c_z);         store_4z(r + 64u, col + 64u, r4b, c_z);
    store_4z(r + 65u, col, r5a, c_z);         store_4z(r + 65u, col + 64u, r5b, c_z);
    store_4z(r + 66u, col, r6a, c_z);         store_4z(r + 66u, col + 64u, r6b, c_z);
    store_4z(r + 67u, col, r7a, c_z);         store_4z(r + 67u, col + 64u, r7b, c_z);
}

// db (N) = sum over rows of dy (M,N)   [+ db with ACCUM]
// dy is binding a at a_off, db is binding c at c_off. One invocation per column, rows in order:
// deterministic, no atomics.
@compute @workgroup_size(64)
fn bias_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    if (col >= u.n) { return; }
    var s = 0.0;
    for (var row = 0u; row < u.m; row++) { s += a[u.a_off + row * u.n + col]; }
    let idx = u.c_off + col;
    if ((u.flags & ACCUM) != 0u) { s += c[idx]; }
    c[idx] = s;
}

// ---------------------------------------------------------------------------------------------
// matmul_splitk: matmul_direct4 over one slice of K per workgroup z (split-K), for products with
// a long K and few output tiles (weight gradients, K = B*T, on a wide GPU). No bias or res.
// (A separate entry point: the same K-range logic inside matmul_direct made it about 1.5x slower
// on lavapipe.) Slice z of S takes k in [z * ceil(K/S), (z+1) * ceil(K/S)) and writes its partial c
// at c_off + z*M*N (and partial db at bias_off + z*N); splitk_reduce adds the S partials.
fn k_range(z: u32) -> vec3<u32> {   // (k_lo, k_hi, element offset of this slice's c)
    if (u.k_split <= 1u) { return vec3(0u, u.k, 0u); }
    let chunk = ((u.k + u.k_split - 1u) / u.k_split + 15u) / 16u * 16u;   // whole BK = 16 steps
    let lo = min(u.k, z * chunk);
    return vec3(lo, min(u.k, lo + chunk), z * u.m * u.n);
}

fn store_4z(row: u32, col: u32, acc: vec4<f32>, zoff: u32) {   // store_4 into slice zoff
    if (row >= u.m) { return; }
    if (BATCHED) {   // plain stores (no bias, res or split), ldc apart, into this product's c
        for (var j = 0u; j < 4u; j++) {
            let cc = col + j;
            if (cc >= u.n) { return; }
            let idx = zbase.z + row * u.ldc + cc;
            if ((u.flags & ACCUM) != 0u) { c[idx] += acc[j]; } else { c[idx] = acc[j]; }
        }
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let cc = col + j;
        if (cc >= u.n) { return; }
        var v = acc[j];
        if ((u.flags & HAS_BIAS) != 0u) { v += bias[u.bias_off + cc]; }
        if ((u.flags & HAS_RES) != 0u) { v += res[u.res_off + row * u.n + cc]; }
        let idx = u.c_off + zoff + row * u.n + cc;
        if ((u.flags & ACCUM) != 0u) { v += c[idx]; }
        c[idx] = v;
    }
}

@compute @workgroup_size(8, 8)
fn matmul_splitk(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let col = gid.x * 4u;
    let row = gid.y * 4u;
    if (row >= u.m || col >= u.n) { return; }
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    let want_db = (u.flags & BIAS_GRAD) != 0u && row == 0u;
    var db = vec4<f32>(0.0);
    let kr = k_range(wid.z);
    for (var kk = kr.x; kk < kr.y; kk++) {
        let b0 = load_b4(kk, col);
        if (want_db) { db += b0; }
        c0 = fma(vec4(load_a_clamped(row + 0u, kk)), b0, c0);
        c1 = fma(vec4(load_a_clamped(row + 1u, kk)), b0, c1);
        c2 = fma(vec4(load_a_clamped(row + 2u, kk)), b0, c2);
        c3 = fma(vec4(load_a_clamped(row + 3u, kk)), b0, c3);
    }
    if (want_db) {
        for (var j = 0u; j < 4u; j++) { if (col + j < u.n) { c[u.bias_off + wid.z * u.n + col + j] = db[j]; } }
    }
    store_4z(row + 0u, col, c0, kr.z);
    store_4z(row + 1u, col, c1, kr.z);
    store_4z(row + 2u, col, c2, kr.z);
    store_4z(row + 3u, col, c3, kr.z);
}


// matmul_splitk8: the same split over K with matmul_direct's 8 x 8 blocks (long K, few 64 x 64
// tiles: the model's fc_out forward on a wide GPU, say).
fn store_8z(row: u32, col: u32, lo: vec4<f32>, hi: vec4<f32>, zoff: u32) {   // store_8 into slice zoff
    if (row >= u.m) { return; }
    for (var j = 0u; j < 8u; j++) {
        let cc = col + j;
        if (cc >= u.n) { return; }
        var v = select(hi[max(j, 4u) - 4u], lo[min(j, 3u)], j < 4u);
        if ((u.flags & HAS_BIAS) != 0u) { v += bias[u.bias_off + cc]; }
        if ((u.flags & HAS_RES) != 0u) { v += res[u.res_off + row * u.n + cc]; }
        let idx = u.c_off + zoff + row * u.n + cc;
        if ((u.flags & ACCUM) != 0u) { v += c[idx]; }
        c[idx] = v;
    }
}

@compute @workgroup_size(8, 8)
fn matmul_splitk8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let col = gid.x * 8u;
    let row = gid.y * 8u;
    if (row >= u.m || col >= u.n) { return; }
    var c0a = vec4<f32>(0.0); var c0b = vec4<f32>(0.0);
    var c1a = vec4<f32>(0.0); var c1b = vec4<f32>(0.0);
    var c2a = vec4<f32>(0.0); var c2b = vec4<f32>(0.0);
    var c3a = vec4<f32>(0.0); var c3b = vec4<f32>(0.0);
    var c4a = vec4<f32>(0.0); var c4b = vec4<f32>(0.0);
    var c5a = vec4<f32>(0.0); var c5b = vec4<f32>(0.0);
    var c6a = vec4<f32>(0.0); var c6b = vec4<f32>(0.0);
    var c7a = vec4<f32>(0.0); var c7b = vec4<f32>(0.0);
    let want_db = (u.flags & BIAS_GRAD) != 0u && row == 0u;
    var db0 = vec4<f32>(0.0);
    var db1 = vec4<f32>(0.0);
    let kr = k_range(wid.z);
    for (var kk = kr.x; kk < kr.y; kk++) {
        let b0 = load_b4(kk, col);
        let b1 = load_b4(kk, col + 4u);
        if (want_db) { db0 += b0; db1 += b1; }
        let a0 = vec4(load_a_clamped(row + 0u, kk)); c0a = fma(a0, b0, c0a); c0b = fma(a0, b1, c0b);
        let a1 = vec4(load_a_clamped(row + 1u, kk)); c1a = fma(a1, b0, c1a); c1b = fma(a1, b1, c1b);
        let a2 = vec4(load_a_clamped(row + 2u, kk)); c2a = fma(a2, b0, c2a); c2b = fma(a2, b1, c2b);
        let a3 = vec4(load_a_clamped(row + 3u, kk)); c3a = fma(a3, b0, c3a); c3b = fma(a3, b1, c3b);
        let a4 = vec4(load_a_clamped(row + 4u, kk)); c4a = fma(a4, b0, c4a); c4b = fma(a4, b1, c4b);
        let a5 = vec4(load_a_clamped(row + 5u, kk)); c5a = fma(a5, b0, c5a); c5b = fma(a5, b1, c5b);
        let a6 = vec4(load_a_clamped(row + 6u, kk)); c6a = fma(a6, b0, c6a); c6b = fma(a6, b1, c6b);
        let a7 = vec4(load_a_clamped(row + 7u, kk)); c7a = fma(a7, b0, c7a); c7b = fma(a7, b1, c7b);
    }
    if (want_db) {
        for (var j = 0u; j < 8u; j++) {
            if (col + j < u.n) { c[u.bias_off + wid.z * u.n + col + j] = select(db1[max(j, 4u) - 4u], db0[min(j, 3u)], j < 4u); }
        }
    }
    store_8z(row + 0u, col, c0a, c0b, kr.z);
    store_8z(row + 1u, col, c1a, c1b, kr.z);
    store_8z(row + 2u, col, c2a, c2b, kr.z);
    store_8z(row + 3u, col, c3a, c3b, kr.z);
    store_8z(row + 4u, col, c4a, c4b, kr.z);
    store_8z(row + 5u, col, c5a, c5b, kr.z);
    store_8z(row + 6u, col, c6a, c6b, kr.z);
    store_8z(row + 7u, col, c7a, c7b, kr.z);
}


// c (M,N) [+]= sum_z partial[z] (M,N) [+ bias (N)] [+ res (M,N)]: partials at a_off in a (S of
// them, then S partial db (N)); with BIAS_GRAD instead, bias (N) = sum_z partial db[z].
// Fixed order: deterministic.
@compute @workgroup_size(64)
fn splitk_reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * 64u;
    let mn = u.m * u.n;
    let ns = max(u.k_split, 1u);
    for (var i = gid.x; i < mn; i += stride) {
        var v = 0.0;
        for (var z = 0u; z < ns; z++) { v += a[u.a_off + z * mn + i]; }
        if ((u.flags & HAS_BIAS) != 0u) { v += bias[u.bias_off + i % u.n]; }
        if ((u.flags & HAS_RES) != 0u) { v += res[u.res_off + i]; }
        if ((u.flags & ACCUM) != 0u) { v += c[u.c_off + i]; }
        c[u.c_off + i] = v;
    }
    if ((u.flags & BIAS_GRAD) != 0u) {
        for (var j = gid.x; j < u.n; j += stride) {
            var v = 0.0;
            for (var z = 0u; z < ns; z++) { v += a[u.a_off + ns * mn + z * u.n + j]; }
            c[u.bias_off + j] = v;
        }
    }
}
