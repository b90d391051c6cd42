/* The matmul kernel, compiled six times by wasm/build.py: plain SIMD128 (multiply then
 * add) or relaxed-SIMD FMA (-mrelaxed-simd -DTG_RELAXED), each with one of three ways
 * for the 4x8 tile to get its A values as 4 equal lanes:
 *   shuffle (default): one v128 load of a 4-row column, lanes broadcast by i32x4.shuffle
 *           (x86: vpshufd, Intel's shuffle port 5);
 *   splat (-DTG_SPLAT): one v128.load32_splat per row (cranelift in wasmtime 50 emits a
 *           bounds-checked scalar load + vmovd + vpbroadcastd: two port-5 ops on Intel);
 *   bcast (-DTG_BCAST): pack_a stores every A value already broadcast ([k][4 rows][4]),
 *           the tile does 4 plain v128 loads a k and no shuffles at all (4x the packed
 *           A bytes, so MC is 64 for it).
 * model_set_fma / model_set_matmul_kernel pick one at run time. The three forms do the
 * same multiply and add per element in the same k order, so their results are
 * bit-identical; plain and FMA differ by rounding only.
 */
#include "kernels.h"

#if defined(TG_SPLAT)
#define KIND_ _splat
#elif defined(TG_BCAST)
#define KIND_ _bcast
#else
#define KIND_
#endif
#ifdef TG_RELAXED
#define ARITH_ matmul_share_fma
#else
#define ARITH_ matmul_share_plain
#endif
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define MATMUL_SHARE CAT(ARITH_, KIND_)

/* ===================================================================================
 * matmul: c (M, N) = init (M, N) + bias (N) + a (M, K) @ b (K, N)
 * a is read strided, a[i * rsa + k * csa]: rsa = K, csa = 1 for a plain row-major a,
 * rsa = 1, csa = M for a transposed one (x^T @ dy for weight gradients).
 * b and c are row-major with row length N. init may be 0 (zeros), c itself (add into
 * c), or another (M, N) buffer (residual). bias may be 0. N must be a multiple of 8.
 * With bt, b is (N, K) and the product is a @ b^T (K a multiple of 4): packing b reads
 * it transposed, so input gradients need no transposed copy of the weights.
 *
 * Blocking: for each MC x KC block of a, the thread packs it into panels of MR = 4
 * rows, k-major ([k][4] floats), so one v128 load gives a column of 4 rows and lane
 * shuffles broadcast them (in wasmtime each scalar load costs a bounds check and a
 * move into a vector register; this is 1 load a k instead of 4). The block is then
 * reused across all of N in panels of NR = 8 columns, packed NC columns at a time
 * (pack_b); the KC x 8 panel of b stays in L1 across the MC rows. Register tile
 * 4 x 8: 8 f32x4 accumulators (cranelift, with 16 vector registers, spilled a 6 x 8
 * tile's 12 and a 4 x 12 tile's 12; both were slower).
 * The k order of every output element is 0..K-1 whatever the blocking or split.
 * =================================================================================== */
#define MR 4
#define NR 8
#ifdef TG_BCAST
#define MC 64
#define AW 16 /* floats of packed A a k of a 4-row panel: each value 4 times */
#else
#define MC 256
#define AW 4
#endif
#define KC 256
#define NC 64 /* columns of b packed at a time */
_Static_assert(MC / MR * AW * KC + KC * NC <= THREAD_SCRATCH_FLOATS, "packed blocks must fit the thread's scratch");

/* pack rows [i0, i1) x depth [k0, k0 + kc) of a into 4-row panels, zero-padded */
#ifdef TG_BCAST
#define LANE(v, l) wasm_i32x4_shuffle((v), (v), l, l, l, l)
static void pack_a(float *dst, const MatmulJob *J, int i0, int i1, int k0, int kc) {
    const size_t rsa = J->rsa, csa = J->csa;
    for (int i = i0; i < i1; i += MR) {
        int rows = imin(MR, i1 - i);
        const float *a = J->a + i * rsa + k0 * csa;
        if (rsa == 1 && rows == MR) { /* rows contiguous: one vector a k, lanes broadcast here once */
            for (int k = 0; k < kc; k++) {
                v128_t v = LOAD(a + k * csa);
                STORE(dst + AW * k, LANE(v, 0)); STORE(dst + AW * k + 4, LANE(v, 1));
                STORE(dst + AW * k + 8, LANE(v, 2)); STORE(dst + AW * k + 12, LANE(v, 3));
            }
        } else {
            for (int k = 0; k < kc; k++)
                for (int r = 0; r < MR; r++) STORE(dst + AW * k + 4 * r, SPLAT(r < rows ? a[r * rsa + k * csa] : 0.f));
        }
        dst += AW * kc;
    }
}
#else
static void pack_a(float *dst, const MatmulJob *J, int i0, int i1, int k0, int kc) {
    const size_t rsa = J->rsa, csa = J->csa;
    for (int i = i0; i < i1; i += MR) {
        int rows = imin(MR, i1 - i);
        const float *a = J->a + i * rsa + k0 * csa;
        if (rsa == 1 && rows == MR) { /* rows contiguous: one vector a k */
            for (int k = 0; k < kc; k++) STORE(dst + 4 * k, LOAD(a + k * csa));
        } else {
            for (int k = 0; k < kc; k++)
                for (int r = 0; r < MR; r++) dst[4 * k + r] = r < rows ? a[r * rsa + k * csa] : 0.f;
        }
        dst += MR * kc;
    }
}
#define LANE(v, l) wasm_i32x4_shuffle((v), (v), l, l, l, l)
#endif

static inline void tile_4x8(float *c, const float *src, const float *bias, const float *ap, const float *b, int N,
                            int kc) {
    v128_t c00, c01, c10, c11, c20, c21, c30, c31;
    if (src) {
        c00 = LOAD(src); c01 = LOAD(src + 4);
        c10 = LOAD(src + N); c11 = LOAD(src + N + 4);
        c20 = LOAD(src + 2 * N); c21 = LOAD(src + 2 * N + 4);
        c30 = LOAD(src + 3 * N); c31 = LOAD(src + 3 * N + 4);
    } else {
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = SPLAT(0.f);
    }
    if (bias) {
        v128_t b0 = LOAD(bias), b1 = LOAD(bias + 4);
        c00 = wasm_f32x4_add(c00, b0); c01 = wasm_f32x4_add(c01, b1);
        c10 = wasm_f32x4_add(c10, b0); c11 = wasm_f32x4_add(c11, b1);
        c20 = wasm_f32x4_add(c20, b0); c21 = wasm_f32x4_add(c21, b1);
        c30 = wasm_f32x4_add(c30, b0); c31 = wasm_f32x4_add(c31, b1);
    }
    /* loop closed by comparing the b pointer with its end (one fused cmp/jne a k) */
    for (const float *be = b + NR * kc; b != be; b += NR, ap += AW) {
#if defined(TG_SPLAT) /* each A value broadcast by its own splat load */
        const float *a = ap;
#define AVAL(r) wasm_v128_load32_splat(a + (r))
#elif defined(TG_BCAST) /* A values packed already broadcast: plain loads */
        const float *a = ap;
#define AVAL(r) LOAD(a + 4 * (r))
#else /* one load of the 4-row column, lanes broadcast by shuffles (x86: vpshufd) */
        v128_t av = LOAD(ap);
#define AVAL(r) LANE(av, r)
#endif
        v128_t b0 = LOAD(b), b1 = LOAD(b + 4), x;
        x = AVAL(0); c00 = MADD(x, b0, c00); c01 = MADD(x, b1, c01);
        x = AVAL(1); c10 = MADD(x, b0, c10); c11 = MADD(x, b1, c11);
        x = AVAL(2); c20 = MADD(x, b0, c20); c21 = MADD(x, b1, c21);
        x = AVAL(3); c30 = MADD(x, b0, c30); c31 = MADD(x, b1, c31);
#undef AVAL
    }
    STORE(c, c00); STORE(c + 4, c01);
    STORE(c + N, c10); STORE(c + N + 4, c11);
    STORE(c + 2 * N, c20); STORE(c + 2 * N + 4, c21);
    STORE(c + 3 * N, c30); STORE(c + 3 * N + 4, c31);
}

/* one row of the tile above, same operations per element (the last rows when M % 4) */
static inline void tile_1x8(float *c, const float *src, const float *bias, const float *ap, const float *b, int N,
                            int kc) {
    v128_t c0 = SPLAT(0.f), c1 = SPLAT(0.f);
    if (src) { c0 = LOAD(src); c1 = LOAD(src + 4); }
    if (bias) { c0 = wasm_f32x4_add(c0, LOAD(bias)); c1 = wasm_f32x4_add(c1, LOAD(bias + 4)); }
    for (int k = 0; k < kc; k++) {
        v128_t x = wasm_v128_load32_splat(ap + AW * k);
        c0 = MADD(x, LOAD(b + NR * k), c0); c1 = MADD(x, LOAD(b + NR * k + 4), c1);
    }
    STORE(c, c0); STORE(c + 4, c1);
}

/* rows a b c d -> columns, in place */
static inline void transpose4(v128_t *a, v128_t *b, v128_t *c, v128_t *d) {
    v128_t t0 = wasm_i32x4_shuffle(*a, *b, 0, 4, 1, 5), t1 = wasm_i32x4_shuffle(*a, *b, 2, 6, 3, 7);
    v128_t t2 = wasm_i32x4_shuffle(*c, *d, 0, 4, 1, 5), t3 = wasm_i32x4_shuffle(*c, *d, 2, 6, 3, 7);
    *a = wasm_i32x4_shuffle(t0, t2, 0, 1, 4, 5);
    *b = wasm_i32x4_shuffle(t0, t2, 2, 3, 6, 7);
    *c = wasm_i32x4_shuffle(t1, t3, 0, 1, 4, 5);
    *d = wasm_i32x4_shuffle(t1, t3, 2, 3, 6, 7);
}

/* pack depth [k0, k0 + kc) x columns [j0, j1) of b into panels of NR columns, each
 * k-major with row stride NR: a panel is read contiguously, whatever N is (rows of b
 * N floats apart alias in the cache when N is a power of two: 4 KiB for N = 1024) */
static void pack_b(float *dst, const MatmulJob *J, int k0, int kc, int j0, int j1, float *dbias) {
    if (J->bt) { /* b is (N, K): a panel's 8 columns are 8 rows of b, 4 x 4 blocks transposed */
        for (int j = j0; j < j1; j += NR, dst += NR * kc)
            for (int x = 0; x < NR; x += 4) {
                const float *b = J->b + (size_t)(j + x) * J->K + k0;
                for (int k = 0; k < kc; k += 4) {
                    v128_t r0 = LOAD(b + k), r1 = LOAD(b + J->K + k), r2 = LOAD(b + 2 * (size_t)J->K + k),
                           r3 = LOAD(b + 3 * (size_t)J->K + k);
                    transpose4(&r0, &r1, &r2, &r3);
                    STORE(dst + NR * k + x, r0); STORE(dst + NR * (k + 1) + x, r1);
                    STORE(dst + NR * (k + 2) + x, r2); STORE(dst + NR * (k + 3) + x, r3);
                }
            }
        return;
    }
    for (int j = j0; j < j1; j += NR) {
        const float *b = J->b + (size_t)k0 * J->N + j;
        if (dbias) { /* the bias gradient rides along: each column's sum over the rows of b in
                      * row order (the caller passes it for one row block only) */
            v128_t s0 = LOAD(dbias + j), s1 = LOAD(dbias + j + 4);
            for (int k = 0; k < kc; k++) {
                v128_t v0 = LOAD(b + (size_t)k * J->N), v1 = LOAD(b + (size_t)k * J->N + 4);
                STORE(dst + NR * k, v0); STORE(dst + NR * k + 4, v1);
                s0 = wasm_f32x4_add(s0, v0); s1 = wasm_f32x4_add(s1, v1);
            }
            STORE(dbias + j, s0); STORE(dbias + j + 4, s1);
            dst += NR * kc;
            continue;
        }
        for (int k = 0; k < kc; k++) {
            STORE(dst + NR * k, LOAD(b + (size_t)k * J->N));
            STORE(dst + NR * k + 4, LOAD(b + (size_t)k * J->N + 4));
        }
        dst += NR * kc;
    }
}

/* rows [i0, i1) x columns [j0, j1) of one job; j0, j1 multiples of NR */
static void matmul_block(const MatmulJob *J, int i0, int i1, int j0, int j1, float *scratch) {
    const int N = J->N, K = J->K;
    float *pa = scratch, *pb = scratch + MC / MR * AW * KC;
    for (int ib = i0; ib < i1; ib += MC) {
        int ie = imin(ib + MC, i1);
        for (int kb = 0; kb < K; kb += KC) {
            int kc = imin(KC, K - kb);
            pack_a(pa, J, ib, ie, kb, kc);
            for (int jb = j0; jb < j1; jb += NC) {
                int je = imin(jb + NC, j1);
                /* kb runs 0..K-1 in order, and row block 0 is one thread's: each column's sum
                 * is taken by exactly one thread in row order */
                pack_b(pb, J, kb, kc, jb, je, ib == 0 ? J->dbias : 0);
                for (int j = jb; j < je; j += NR) {
                    const float *bp = pb + (size_t)(j - jb) * kc;
                    const float *bias = (kb == 0 && J->bias) ? J->bias + j : 0;
                    const float *ap = pa;
                    for (int i = ib; i < ie; i += MR, ap += AW * kc) {
                        int rows = imin(MR, ie - i);
                        for (int r = 0; r < (rows == MR ? 1 : rows); r++) {
                            float *cp = J->c + (size_t)(i + r) * N + j;
                            const float *src = kb ? cp : (J->init ? J->init + (size_t)(i + r) * N + j : 0);
                            if (rows == MR) tile_4x8(cp, src, bias, ap, bp, N, kc);
                            else tile_1x8(cp, src, bias, ap + (AW / MR) * r, bp, N, kc);
                        }
                    }
                }
            }
        }
    }
}

/* the thread's share of a job: split rows when there are enough, else columns */
void MATMUL_SHARE(const MatmulJob *J, int tid, int nth) {
    int lo, hi, mblocks = (J->M + MR - 1) / MR, npanels = J->N / NR;
    if (mblocks >= 4 * nth || mblocks >= npanels) {
        split_range(mblocks, tid, nth, &lo, &hi);
        matmul_block(J, lo * MR, imin(hi * MR, J->M), 0, J->N, thread_scratch(tid));
    } else {
        split_range(npanels, tid, nth, &lo, &hi);
        matmul_block(J, 0, J->M, lo * NR, hi * NR, thread_scratch(tid));
    }
}

