// Token and position embeddings (MODEL.md: x0 = tok_emb[ids] + pos_emb[0..T)).
// Legend: B = batch, T = context, C = channels, V = vocabulary, BT = B*T rows.
//
// embedding_forward       x (BT,C) = tok_emb[ids[r]] + pos_emb[r % T]
// embedding_backward_pos  dpos_emb (T,C) = sum_b dx[b, t]                    (overwrites)
// embedding_backward_tok  dtok_emb (V,C) += sum over rows r with ids[r] = v of dx[r]
//
// The token backward uses no atomics: the host sorts the batch's positions by token once per
// step (a CSR list: start (V+1) and rows (BT) in the tokens buffer), and one invocation per
// (v, c) sums its rows in order. Deterministic, O(BT*C). It adds (+=) because the tied head's
// weight gradient (logits = ln_f(x) @ tok_emb^T) was written into dtok_emb first.

struct Args {
    bt: u32, t: u32, c: u32, v: u32,
    ids_off: u32,        // (BT) token ids in `tokens`
    csr_start_off: u32,  // (V+1) in `tokens`: rows of token v are rows[start[v] .. start[v+1])
    csr_rows_off: u32,   // (BT) in `tokens`
    tok_off: u32, pos_off: u32,   // tok_emb, pos_emb in the parameter (and gradient) layout
    x_off: u32,          // x (forward output) or dx (backward input)
}

@group(0) @binding(0) var<uniform> u: Args;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read> p: array<f32>;   // parameters (forward)
@group(0) @binding(3) var<storage, read_write> x: array<f32>;   // x or dx (BT,C)
@group(0) @binding(4) var<storage, read_write> g: array<f32>;   // gradients (backward)

@compute @workgroup_size(64)
fn embedding_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * 64u;
    for (var e = gid.x; e < u.bt * u.c; e += stride) {
        let r = e / u.c;
        let ch = e % u.c;
        let id = tokens[u.ids_off + r];
        x[u.x_off + e] = p[u.tok_off + id * u.c + ch] + p[u.pos_off + (r % u.t) * u.c + ch];
    }
}

@compute @workgroup_size(64)
fn embedding_backward_pos(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * 64u;
    let nb = u.bt / u.t;
    for (var e = gid.x; e < u.t * u.c; e += stride) {   // e = t * C + ch
        var s = 0.0;
        for (var b = 0u; b < nb; b++) { s += x[u.x_off + b * u.t * u.c + e]; }
        g[u.pos_off + e] = s;
    }
}

@compute @workgroup_size(64)
fn embedding_backward_tok(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * 64u;
    for (var e = gid.x; e < u.v * u.c; e += stride) {   // e = v * C + ch
        let tok = e / u.c;
        let ch = e % u.c;
        let lo = tokens[u.csr_start_off + tok];
        let hi = tokens[u.csr_start_off + tok + 1u];
        var s = 0.0;
        for (var k = lo; k < hi; k++) { s += x[u.x_off + tokens[u.csr_rows_off + k] * u.c + ch]; }
        g[u.tok_off + e] += s;
    }
}
