// Global gradient-norm clipping and AdamW over the flat parameter buffer (MODEL.md).
// Legend: P = number of parameters (one flat fp32 vector; same layout for p, g, m, v).
//
// grad_norm_partial  st[PART + w] = sum of g^2 over the grid-stride slice of workgroup w
// grad_norm_finish   st[NORM] = sqrt(sum_w st[PART + w]);
//                    st[SCALE] = clip / (norm + 1e-6) if norm > clip else 1
// adamw              gc = g * st[SCALE] (g itself is left untouched: the raw gradient)
//                    m = b1 m + (1 - b1) gc;  v = b2 v + (1 - b2) gc^2
//                    p -= lr * (wd * p * decay + (m / bc1) / (sqrt(v / bc2) + eps))
//                    decay = bit i of the mask (matrices and embeddings only)
// poison_grad        g[u.n] = the f32 whose bits are u.nparts (fault injection, faults.py
//                    'nan-grad': a NaN written into the gradient after backward; the two u32
//                    fields carry the index and the bits, so no NaN is a shader constant)
// st (the step record, f32): LR, BC1 = 1 - b1^t, BC2 = 1 - b2^t written by the host each step;
// NORM, SCALE, LOSS written on the device; partial sums from PART.

const LR: u32 = 0u;
const BC1: u32 = 1u;
const BC2: u32 = 2u;
const NORM: u32 = 3u;
const SCALE: u32 = 4u;
const LOSS: u32 = 5u;
const PART: u32 = 8u;

struct Args {
    n: u32,         // P
    nparts: u32,    // workgroups of grad_norm_partial
    beta1: f32, beta2: f32, eps: f32, wd: f32, clip: f32,
}
const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> u: Args;
@group(0) @binding(1) var<storage, read_write> p: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read> mask: array<u32>;
@group(0) @binding(6) var<storage, read_write> st: array<f32>;
@group(0) @binding(7) var<storage, read_write> gw: array<f32>;   // poison_grad only: g, writable

var<workgroup> red: array<f32, 256>;

fn wg_sum(x: f32, lid: u32) -> f32 {
    red[lid] = x;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) { red[lid] += red[lid + half]; }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn grad_norm_partial(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                     @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * WG;
    var s = 0.0;
    for (var i = gid.x; i < u.n; i += stride) { let x = g[i]; s += x * x; }
    s = wg_sum(s, lid.x);
    if (lid.x == 0u) { st[PART + wid.x] = s; }
}

@compute @workgroup_size(256)
fn grad_norm_finish(@builtin(local_invocation_id) lid: vec3<u32>) {
    var s = 0.0;
    for (var i = lid.x; i < u.nparts; i += WG) { s += st[PART + i]; }
    s = wg_sum(s, lid.x);
    if (lid.x == 0u) {
        let norm = sqrt(s);
        st[NORM] = norm;
        st[SCALE] = select(1.0, u.clip / (norm + 1e-6), norm > u.clip);
    }
}

@compute @workgroup_size(256)
fn adamw(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * WG;
    let lr = st[LR];
    let bc1 = st[BC1];
    let bc2 = st[BC2];
    let scale = st[SCALE];
    for (var i = gid.x; i < u.n; i += stride) {
        let gc = g[i] * scale;
        let mi = u.beta1 * m[i] + (1.0 - u.beta1) * gc;
        let vi = u.beta2 * v[i] + (1.0 - u.beta2) * gc * gc;
        m[i] = mi;
        v[i] = vi;
        let decay = f32((mask[i / 32u] >> (i % 32u)) & 1u);
        let pi = p[i];
        p[i] = pi - lr * (u.wd * decay * pi + (mi / bc1) / (sqrt(vi / bc2) + u.eps));
    }
}

@compute @workgroup_size(1)
fn poison_grad() {
    gw[u.n] = bitcast<f32>(u.nparts);
}
