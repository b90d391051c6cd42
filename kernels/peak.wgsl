// fp32 fused multiply-add throughput of the adapter (`tinygpt-bench peak`): the ceiling the
// engine's kernels are judged against. Not part of the model.
//
// peak_fma  every invocation runs CHAINS independent vec4 chains c = fma(c, x, y) for
//           u.iters rounds, then writes the sum of its chains to out[gid] so no chain can be
//           dropped by the compiler. x and y come from a buffer and the round count from the
//           uniform, so nothing is known at compile time.
//           FLOPs: invocations x iters x CHAINS x 4 lanes x 2 (multiply and add).
//
// The chains start from c0 = (gid % 64) / 64 + j / 8 + lane / 32 and converge to y / (1 - x),
// so a check on the host is the closed form c_n = x^n c0 + y (1 - x^n) / (1 - x).

const CHAINS: u32 = 8u;

struct Args { iters: u32, n: u32 }

@group(0) @binding(0) var<uniform> u: Args;
@group(0) @binding(1) var<storage, read> xy: array<f32>;        // (2): x, y
@group(0) @binding(2) var<storage, read_write> out: array<f32>; // (n): one sum per invocation

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn peak_fma(@builtin(global_invocation_id) gid3: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let gid = gid3.x + gid3.y * nwg.x * WG;
    let x = vec4<f32>(xy[0]);
    let y = vec4<f32>(xy[1]);
    let base = f32(gid % 64u) / 64.0;
    let lanes = vec4<f32>(0.0, 1.0, 2.0, 3.0) / 32.0;
    var c0 = vec4<f32>(base + 0.0 / 8.0) + lanes;
    var c1 = vec4<f32>(base + 1.0 / 8.0) + lanes;
    var c2 = vec4<f32>(base + 2.0 / 8.0) + lanes;
    var c3 = vec4<f32>(base + 3.0 / 8.0) + lanes;
    var c4 = vec4<f32>(base + 4.0 / 8.0) + lanes;
    var c5 = vec4<f32>(base + 5.0 / 8.0) + lanes;
    var c6 = vec4<f32>(base + 6.0 / 8.0) + lanes;
    var c7 = vec4<f32>(base + 7.0 / 8.0) + lanes;
    for (var i = 0u; i < u.iters; i++) {
        c0 = fma(c0, x, y); c1 = fma(c1, x, y); c2 = fma(c2, x, y); c3 = fma(c3, x, y);
        c4 = fma(c4, x, y); c5 = fma(c5, x, y); c6 = fma(c6, x, y); c7 = fma(c7, x, y);
    }
    if (gid < u.n) {
        let s = (c0 + c1) + (c2 + c3) + ((c4 + c5) + (c6 + c7));
        out[gid] = s.x + s.y + s.z + s.w;
    }
}
