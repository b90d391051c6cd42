enable subgroups;   // the WebGPU feature "subgroups" (engines/webgpu/compat.py wgsl_for: Naga takes the builtins
                    // without it and refuses the directive, so it is dropped for wgpu-native)

// row_sum for layernorm.wgsl's workgroup kernels over subgroups (kernel family "layernorm_sg",
// adapters with the subgroup feature): each
// subgroup adds its lanes, its first lane puts the sum in workgroup memory, and every
// invocation adds the subgroups' sums in order: one barrier where the tree has log2(64).
// Subgroups are taken to be runs of n consecutive invocations (lavapipe: 8, NVIDIA: 32); the
// tests compare the results with numpy. Call in uniform control flow.

fn row_sum(v: f32, lid: u32) -> f32 {
    let s = subgroupAdd(v);
    let n = subgroupAdd(1u);   // lanes in this subgroup
    if (lid % n == 0u) { red[lid / n] = s; }
    workgroupBarrier();
    var total = 0.0;
    for (var j = 0u; j < (WG + n - 1u) / n; j++) { total += red[j]; }
    workgroupBarrier();
    return total;
}
