/* Micro-benchmarks called from wasm/bench.py: the matmul kernel alone and the
 * machine's SIMD128 multiply-add throughput (the peak the matmul is judged against). */
#include "kernels.h"

#ifndef TG_RELAXED
/* c (M, N) = a (M, K) @ b (K, N), reps times; trans_a: a is read as x^T of x (K, M) */
EXPORT(bench_matmul) void bench_matmul(float *c, const float *a, const float *b, int M, int N, int K, int trans_a,
                                       int reps) {
    for (int r = 0; r < reps; r++) {
        if (trans_a) matmul(c, 0, 0, a, 1, M, b, M, N, K);
        else matmul(c, 0, 0, a, K, 1, b, M, N, K);
    }
}

/* GELU alone over n floats (n % 4 == 0), reps times: forward out = gelu(x), or with
 * backward the input gradient out = dout * gelu'(x) (the step's two GELU regions) */
EXPORT(bench_gelu) void bench_gelu(float *out, const float *x, const float *dout, size_t n, int backward, int reps) {
    for (int r = 0; r < reps; r++) {
        if (backward) gelu_backward(out, x, dout, n);
        else gelu_forward(out, x, n);
    }
}

/* n empty parallel regions: the fork-join cost of the pool */
static void empty_task(void *ctx, int tid, int nth) { (void)ctx; (void)tid; (void)nth; }
EXPORT(bench_regions) void bench_regions(int n) {
    for (int i = 0; i < n; i++) parallel_for(empty_task, 0);
}
#endif

#ifndef TG_RELAXED
#define BENCH_PEAK bench_peak
#define PEAK_TASK peak_task
#else
#define BENCH_PEAK bench_peak_fma
#define PEAK_TASK peak_task_fma
#endif

/* The SIMD128 multiply-add peak: per thread, 12 independent chains c = c * x + y of
 * f32x4 (8 FLOPs each a round), iters rounds. Built twice like matmul.c: bench_peak
 * (multiply then add) and bench_peak_fma (relaxed fused multiply-add). */
typedef struct { int iters; float out[64]; } PeakArgs;
static void PEAK_TASK(void *ctx, int tid, int nth) {
    PeakArgs *p = ctx;
    v128_t x = SPLAT(1.0001f), y = SPLAT(0.9999f);
    v128_t c0 = SPLAT(0.f), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0,
           c10 = c0, c11 = c0;
    for (int i = 0; i < p->iters; i++) {
        c0 = MADD(c0, x, y); c1 = MADD(c1, x, y); c2 = MADD(c2, x, y); c3 = MADD(c3, x, y);
        c4 = MADD(c4, x, y); c5 = MADD(c5, x, y); c6 = MADD(c6, x, y); c7 = MADD(c7, x, y);
        c8 = MADD(c8, x, y); c9 = MADD(c9, x, y); c10 = MADD(c10, x, y); c11 = MADD(c11, x, y);
    }
    v128_t s = wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_add(c0, c1), wasm_f32x4_add(c2, c3)),
                              wasm_f32x4_add(wasm_f32x4_add(c4, c5), wasm_f32x4_add(c6, c7)));
    s = wasm_f32x4_add(s, wasm_f32x4_add(wasm_f32x4_add(c8, c9), wasm_f32x4_add(c10, c11)));
    p->out[tid] = hsum(s);
}
/* FLOPs done: 12 chains x 4 lanes x 2 x iters, on each of the pool's threads */
EXPORT(BENCH_PEAK) float BENCH_PEAK(int iters) {
    PeakArgs p = {iters, {0}};
    parallel_for(PEAK_TASK, &p);
    return p.out[0];
}
