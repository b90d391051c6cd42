/* Shared definitions of the tinygpt wasm64 module: types, SIMD helpers, math without
 * libc, the thread pool and the allocator. No libc anywhere in this module.
 *
 * Legend (as in llm.c): B = batch, T = context, C = d_model, L = layers, H = heads,
 * hd = C / H, V = vocabulary (256), N = B * T rows.
 */
#ifndef TG_BASE_H
#define TG_BASE_H
#include <wasm_simd128.h>

typedef unsigned long size_t; /* wasm64: long is 64-bit */
typedef unsigned int u32;
typedef unsigned long long u64;

#define STR_(x) #x
#define STR(x) STR_(x)
#define EXPORT(name) __attribute__((export_name(STR(name))))
#define INF (__builtin_inff())

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }
static inline float fmax_(float a, float b) { return a > b ? a : b; }

/* ---- SIMD helpers ------------------------------------------------------------- */
#ifdef TG_RELAXED
/* relaxed-SIMD fused multiply-add where the engine has it: c + a * b */
#define MADD(a, b, c) wasm_f32x4_relaxed_madd((a), (b), (c))
#else
#define MADD(a, b, c) wasm_f32x4_add((c), wasm_f32x4_mul((a), (b)))
#endif
#define SPLAT(x) wasm_f32x4_splat(x)
#define LOAD(p) wasm_v128_load(p)
#define STORE(p, v) wasm_v128_store((p), (v))

/* horizontal sum in a fixed order: (l0 + l1) + (l2 + l3) */
static inline float hsum(v128_t v) {
    v128_t s = wasm_f32x4_add(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
    return wasm_f32x4_extract_lane(s, 0) + wasm_f32x4_extract_lane(s, 2);
}
static inline float hmax(v128_t v) {
    v128_t s = wasm_f32x4_max(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
    return fmax_(wasm_f32x4_extract_lane(s, 0), wasm_f32x4_extract_lane(s, 2));
}
/* dot product of two float vectors of length 4 * nv */
static inline float dot4(const float *a, const float *b, int nv) {
    v128_t acc = SPLAT(0.f);
    for (int i = 0; i < nv; i++) acc = MADD(LOAD(a + 4 * i), LOAD(b + 4 * i), acc);
    return hsum(acc);
}

/* ---- math without libc ---------------------------------------------------------
 * exp: x = n ln2 + r, |r| <= ln2/2, Taylor polynomial to r^7 (error ~5e-9 relative),
 * scaled by 2^n built in the exponent bits; x below -87.3 gives exactly 0.
 * The scalar and the 4-lane versions run the same operations.                   */
#define EXP_LO (-87.3f)
#define EXP_HI (88.0f)
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693145751953125f
#define LN2_LO 1.42860682030941723212e-6f
#define EXP_MAGIC (12582912.0f + 127.0f) /* 1.5 * 2^23 + the exponent bias */
static inline v128_t exp4(v128_t x) {
    v128_t under = wasm_f32x4_lt(x, SPLAT(EXP_LO));
    /* clamp with pmax/pmin (one maxps/minps each; f32x4.min/max's NaN and signed-zero
     * rules cost about 8 instructions in cranelift); operand order keeps a NaN x NaN */
    x = wasm_f32x4_pmin(wasm_f32x4_pmax(x, SPLAT(EXP_LO)), SPLAT(EXP_HI));
    /* n = round(x log2 e) by the magic-number add (round to nearest even, as f32.nearest);
     * the low bits of t then hold n + 127: t << 23 is 2^n's bit pattern, no conversion */
    v128_t t = wasm_f32x4_add(wasm_f32x4_mul(x, SPLAT(LOG2E)), SPLAT(EXP_MAGIC));
    v128_t n = wasm_f32x4_sub(t, SPLAT(EXP_MAGIC));
    v128_t r = wasm_f32x4_sub(wasm_f32x4_sub(x, wasm_f32x4_mul(n, SPLAT(LN2_HI))), wasm_f32x4_mul(n, SPLAT(LN2_LO)));
    /* Estrin's scheme (pairs, then r^2 and r^4): a dependency chain of 4 multiply-adds
     * instead of Horner's 7, so more of these overlap in the out-of-order window */
    v128_t r2 = wasm_f32x4_mul(r, r), r4 = wasm_f32x4_mul(r2, r2);
    v128_t p01 = wasm_f32x4_add(SPLAT(1.f), r), p23 = wasm_f32x4_add(SPLAT(0.5f), wasm_f32x4_mul(r, SPLAT(1.f / 6.f)));
    v128_t p45 = wasm_f32x4_add(SPLAT(1.f / 24.f), wasm_f32x4_mul(r, SPLAT(1.f / 120.f)));
    v128_t p67 = wasm_f32x4_add(SPLAT(1.f / 720.f), wasm_f32x4_mul(r, SPLAT(1.f / 5040.f)));
    v128_t p03 = wasm_f32x4_add(p01, wasm_f32x4_mul(r2, p23)), p47 = wasm_f32x4_add(p45, wasm_f32x4_mul(r2, p67));
    v128_t p = wasm_f32x4_add(p03, wasm_f32x4_mul(r4, p47));
    v128_t e = wasm_i32x4_shl(t, 23);
    return wasm_v128_andnot(wasm_f32x4_mul(p, e), under);
}
static inline float expf_(float x) { return wasm_f32x4_extract_lane(exp4(SPLAT(x)), 0); }

/* natural log of a positive normal float: m * 2^e with m in [sqrt(1/2), sqrt(2)),
 * log m = 2 atanh(s), s = (m-1)/(m+1), series to s^9 (error < 1e-9). */
static inline float logf_(float x) {
    union { float f; u32 u; } v = {x};
    int e = (int)(v.u >> 23) - 127;
    v.u = (v.u & 0x7fffffu) | 0x3f800000u;
    float m = v.f;
    if (m > 1.41421356f) { m *= 0.5f; e += 1; }
    float s = (m - 1.f) / (m + 1.f), s2 = s * s;
    float p = s2 * (1.f / 3.f + s2 * (1.f / 5.f + s2 * (1.f / 7.f + s2 * (1.f / 9.f))));
    return 2.f * s + 2.f * s * p + (float)e * 0.693147180559945f;
}

/* erfc(|z|) by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7), with exp(-z^2)
 * returned too (GELU's backward needs it). 1 + erf(z) = z >= 0 ? 2 - q : q, which
 * keeps the negative tail free of cancellation. */
static inline v128_t erfc_abs4(v128_t z, v128_t *expmz2) {
    v128_t a = wasm_f32x4_abs(z);
    v128_t t = wasm_f32x4_div(SPLAT(1.f), wasm_f32x4_add(SPLAT(1.f), wasm_f32x4_mul(SPLAT(0.3275911f), a)));
    /* t (a1 + a2 t + a3 t^2 + a4 t^3 + a5 t^4), Estrin's scheme (see exp4) */
    v128_t t2 = wasm_f32x4_mul(t, t);
    v128_t q12 = wasm_f32x4_add(SPLAT(0.254829592f), wasm_f32x4_mul(t, SPLAT(-0.284496736f)));
    v128_t q34 = wasm_f32x4_add(SPLAT(1.421413741f), wasm_f32x4_mul(t, SPLAT(-1.453152027f)));
    v128_t q35 = wasm_f32x4_add(q34, wasm_f32x4_mul(t2, SPLAT(1.061405429f)));
    v128_t p = wasm_f32x4_mul(t, wasm_f32x4_add(q12, wasm_f32x4_mul(t2, q35)));
    v128_t e = exp4(wasm_f32x4_neg(wasm_f32x4_mul(z, z)));
    *expmz2 = e;
    return wasm_f32x4_mul(p, e);
}
static inline v128_t one_plus_erf4(v128_t z, v128_t *expmz2) {
    v128_t q = erfc_abs4(z, expmz2);
    return wasm_v128_bitselect(wasm_f32x4_sub(SPLAT(2.f), q), q, wasm_f32x4_ge(z, SPLAT(0.f)));
}

/* ---- thread pool (pool.c) -------------------------------------------------------
 * parallel_for(fn, ctx) runs fn(ctx, tid, nth) on every thread tid in [0, nth) and
 * returns when all are done. Thread 0 is the caller. Work splits are static, so a
 * result never depends on timing; kernels split so that it does not depend on nth. */
#define MAX_THREADS 64
#define THREAD_SCRATCH_FLOATS (256 * 256 + 256 * 64) /* per-thread scratch (matmul packing) */
typedef void (*task_fn)(void *ctx, int tid, int nth);
float *thread_scratch(int tid);
void parallel_for(task_fn fn, void *ctx);

/* ---- profile: with profiling on, parallel_for adds each region's wall time (from
 * the host's clock, imported as env.clock_ns) to prof_ns[prof_tag]. Order of tags =
 * PROFILE_TAGS in tinygpt_bench/backends/wasm.py. */
enum {
    P_OTHER, P_EMBEDDING, P_LAYERNORM, P_MATMUL_FWD, P_ATTENTION, P_GELU, P_TRANSPOSE, P_CROSSENTROPY, P_ZERO,
    P_MATMUL_DX, P_MATMUL_DW, P_LAYERNORM_BWD, P_GELU_BWD, P_ATTENTION_BWD, P_EMBEDDING_BWD,
    P_GRAD_NORM, P_ADAMW, P_NTAGS
};
extern int prof_tag;
int pool_threads(void);

/* [lo, hi) of n items for thread tid of nth, contiguous and balanced */
static inline void split_range(int n, int tid, int nth, int *lo, int *hi) {
    int q = n / nth, r = n % nth;
    *lo = tid * q + imin(tid, r);
    *hi = *lo + q + (tid < r);
}

/* ---- allocator (pool.c): bump allocation, grows memory on demand ---------------- */
void *tg_alloc(size_t bytes); /* 64-byte aligned; 0 when memory cannot grow */
extern size_t tg_last_request; /* bytes asked by the last failed tg_alloc / tg_reserve */
int tg_reserve(size_t bytes);  /* grow once for `bytes` of allocations to come; 0 ok, -1 refused */

static inline void zero_floats(float *p, size_t n) { __builtin_memset(p, 0, n * sizeof(float)); }
#endif
