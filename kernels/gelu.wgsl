// Exact GELU (MODEL.md: erf form, torch's default), elementwise over n values.
//
// gelu_forward   y = x * Phi(x),  Phi(x) = 0.5 * (1 + erf(x / sqrt(2)))
// gelu_backward  dy <- dy * (Phi(x) + x * phi(x)),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)  (in place)
//
// WGSL has no erf: erf_f32 below is this project's own fit (numpy least squares in float64,
// evaluated in f32 by Horner), max abs error about 1.2e-7 over the real line (f32 rounding of a
// value near 1 is 6e-8):
//   |a| < 0.9        erf(a) = a * P(a^2), P of degree 6
//   0.9 <= |a| < 3.92 erf(a) = 1 - exp(-a^2) * G(u), u = (1/a - 0.68310658) / 0.42800454,
//                    G of degree 11 (G fits erfc(a) * exp(a^2))
//   |a| >= 3.92      erf(a) = +-1 (erfc(3.92) < 3e-8)
// exp(-a^2) is taken as exp(-hi^2) * exp(-lo * (a + hi)) with hi = a truncated to 12
// significant bits, so hi^2 is exact and the rounding of a^2 does not enter.

struct Args { n: u32, x_off: u32, y_off: u32, dy_off: u32 }

@group(0) @binding(0) var<uniform> u: Args;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> dy: array<f32>;

fn exp_neg_sq(a: f32) -> f32 {   // exp(-a*a) without the rounding error of a*a
    let hi = bitcast<f32>(bitcast<u32>(a) & 0xfffff000u);
    let lo = a - hi;
    return exp(-hi * hi) * exp(-lo * (a + hi));
}

fn erf_f32(x: f32) -> f32 {
    let a = abs(x);
    if (a < 0.9) {
        let t = a * a;
        var r = 8.578062445e-05;
        r = fma(r, t, -8.191941773e-04);
        r = fma(r, t, 5.205409149e-03);
        r = fma(r, t, -2.686119896e-02);
        r = fma(r, t, 1.128372936e-01);
        r = fma(r, t, -3.761263614e-01);
        r = fma(r, t, 1.128379167e+00);
        return x * r;
    }
    if (a >= 3.92) { return sign(x); }
    let t = (1.0 / a - 0.6831065760) / 0.4280045351;
    var r = 1.779734442e-06;
    r = fma(r, t, -4.111433545e-06);
    r = fma(r, t, 1.472312914e-06);
    r = fma(r, t, 1.096918520e-05);
    r = fma(r, t, -5.858057259e-05);
    r = fma(r, t, 2.050988032e-04);
    r = fma(r, t, -4.839657610e-04);
    r = fma(r, t, 3.923068317e-04);
    r = fma(r, t, 3.744903679e-03);
    r = fma(r, t, -3.011198785e-02);
    r = fma(r, t, 1.552408198e-01);
    r = fma(r, t, 3.275929469e-01);
    return sign(x) * (1.0 - exp_neg_sq(a) * r);
}

const INV_SQRT2: f32 = 0.7071067811865476;
const INV_SQRT_2PI: f32 = 0.3989422804014327;

@compute @workgroup_size(64)
fn gelu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * 64u;
    for (var i = gid.x; i < u.n; i += stride) {
        let v = x[u.x_off + i];
        y[u.y_off + i] = v * 0.5 * (1.0 + erf_f32(v * INV_SQRT2));
    }
}

@compute @workgroup_size(64)
fn gelu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * 64u;
    for (var i = gid.x; i < u.n; i += stride) {
        let v = x[u.x_off + i];
        let cdf = 0.5 * (1.0 + erf_f32(v * INV_SQRT2));
        let pdf = INV_SQRT_2PI * exp(-0.5 * v * v);
        dy[u.dy_off + i] = dy[u.dy_off + i] * (cdf + v * pdf);
    }
}

// erf itself, for the kernel test: y = erf(x)
@compute @workgroup_size(64)
fn erf_test(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * 64u;
    for (var i = gid.x; i < u.n; i += stride) { y[u.y_off + i] = erf_f32(x[u.x_off + i]); }
}
