// row_sum for layernorm.wgsl's workgroup kernels (kernel family "layernorm", any adapter): a
// tree reduction over the workgroup in workgroup memory. Call in uniform control flow.

fn row_sum(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) { red[lid] += red[lid + half]; }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}
