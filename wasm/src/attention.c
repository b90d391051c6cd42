/* Causal self-attention, flash style (no T x T matrix is stored), tiled for SIMD128.
 *
 * q, k, v, out (B, T, C): head h owns columns [h hd, (h+1) hd); lse (B, H, T) is the
 * log-sum-exp of each query's scaled scores, saved for the backward pass.
 * Work splits by (b, h) pairs; one thread does all of a pair, in a fixed order, so
 * results do not depend on the thread count.
 *
 * Tiles: 4 queries x 8 keys. Scores s (4 x 8) = Q (4 x hd) K^T (hd x 8) run like the
 * matmul tile: Q packed [d][4 queries] (one load and 4 lane shuffles a d), K^T packed
 * per 8-key block [d][8 keys] (two loads a d). Forward: online softmax over key blocks
 * (running max m, sum l, accumulator rescaled by exp(m_old - m_new)), with the 4
 * queries in the 4 lanes after a transpose of the score tile. Backward recomputes
 * p = exp(s - lse), dp = dO V^T (same tile with V^T packed), ds = p (dp - D) scale
 * with D = dO . O, then dV += p^T dO, dK += ds^T Q, dQ += ds K.
 * head_dim must be a multiple of 8, at most 128.
 */
#include "kernels.h"

#define QB 4 /* queries a tile */
#define KB 8 /* keys a tile */
#define LANE(v, l) wasm_i32x4_shuffle((v), (v), l, l, l, l)

/* a b c d (rows) -> columns, in place */
static inline void transpose4(v128_t *a, v128_t *b, v128_t *c, v128_t *d) {
    v128_t t0 = wasm_i32x4_shuffle(*a, *b, 0, 4, 1, 5), t1 = wasm_i32x4_shuffle(*a, *b, 2, 6, 3, 7);
    v128_t t2 = wasm_i32x4_shuffle(*c, *d, 0, 4, 1, 5), t3 = wasm_i32x4_shuffle(*c, *d, 2, 6, 3, 7);
    *a = wasm_i32x4_shuffle(t0, t2, 0, 1, 4, 5);
    *b = wasm_i32x4_shuffle(t0, t2, 2, 3, 6, 7);
    *c = wasm_i32x4_shuffle(t1, t3, 0, 1, 4, 5);
    *d = wasm_i32x4_shuffle(t1, t3, 2, 3, 6, 7);
}

/* dst [hd][4] = rows r0..r0+3 of x (row stride C) transposed; rows >= T are zeros */
static void pack_rows4(float *dst, const float *x, int r0, int T, size_t C, int hd) {
    const v128_t z = SPLAT(0.f);
    for (int d = 0; d < hd; d += 4) {
        v128_t a = r0 < T ? LOAD(x + (size_t)r0 * C + d) : z;
        v128_t b = r0 + 1 < T ? LOAD(x + (size_t)(r0 + 1) * C + d) : z;
        v128_t c = r0 + 2 < T ? LOAD(x + (size_t)(r0 + 2) * C + d) : z;
        v128_t e = r0 + 3 < T ? LOAD(x + (size_t)(r0 + 3) * C + d) : z;
        transpose4(&a, &b, &c, &e);
        STORE(dst + 4 * d, a); STORE(dst + 4 * d + 4, b); STORE(dst + 4 * d + 8, c); STORE(dst + 4 * d + 12, e);
    }
}
/* x (T rows, stride C) -> per block of 8 rows, [hd][8]: the transposed panels of K or V */
static void pack_panels8(float *dst, const float *x, int T, size_t C, int hd) {
    for (int s0 = 0; s0 < T; s0 += KB) {
        float lo[4 * 128] __attribute__((aligned(16))), hi[4 * 128] __attribute__((aligned(16)));
        pack_rows4(lo, x, s0, T, C, hd);
        pack_rows4(hi, x, s0 + 4, T, C, hd);
        float *p = dst + (size_t)(s0 / KB) * hd * KB;
        for (int d = 0; d < hd; d++) {
            STORE(p + KB * d, LOAD(lo + 4 * d));
            STORE(p + KB * d + 4, LOAD(hi + 4 * d));
        }
    }
}

/* s[2r + h] = row r (query), keys 4h..4h+3 of A (4 x hd, packed [d][4]) B^T (hd x 8, [d][8]) */
static inline void tile_4x8_packed(v128_t s[8], const float *ap, const float *bp, int hd) {
    v128_t c00 = SPLAT(0.f), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    for (int d = 0; d < hd; d++) {
        v128_t av = LOAD(ap + 4 * d), b0 = LOAD(bp + KB * d), b1 = LOAD(bp + KB * d + 4), x;
        x = LANE(av, 0); c00 = MADD(x, b0, c00); c01 = MADD(x, b1, c01);
        x = LANE(av, 1); c10 = MADD(x, b0, c10); c11 = MADD(x, b1, c11);
        x = LANE(av, 2); c20 = MADD(x, b0, c20); c21 = MADD(x, b1, c21);
        x = LANE(av, 3); c30 = MADD(x, b0, c30); c31 = MADD(x, b1, c31);
    }
    s[0] = c00; s[1] = c01; s[2] = c10; s[3] = c11; s[4] = c20; s[5] = c21; s[6] = c30; s[7] = c31;
}

/* acc rows (nrows of 8 floats at acc + 8 i... see callers): for each of n source rows j,
 * out[i][c..c+8] += lane i of a[j] * src row j [c..c+8] */

typedef struct {
    float *out, *lse, *dq, *dk, *dv; const float *q, *k, *v, *dout, *o, *lse_in; int B, T, C, H;
    float *const *scratch; /* per thread: 2 x (T rounded up to 8) x hd floats */
} AttnArgs;

static void attention_forward_task(void *ctx, int tid, int nth) {
    const AttnArgs *a = ctx;
    const int T = a->T, H = a->H, hd = a->C / H;
    const size_t C = a->C;
    const float scale = 1.f / __builtin_sqrtf((float)hd);
    float *kt = a->scratch[tid];
    int lo, hi;
    split_range(a->B * H, tid, nth, &lo, &hi);
    for (int bh = lo; bh < hi; bh++) {
        int b = bh / H, h = bh % H;
        size_t base = (size_t)b * T * C + (size_t)h * hd;
        const float *q = a->q + base, *k = a->k + base, *v = a->v + base;
        pack_panels8(kt, k, T, C, hd);
        for (int t0 = 0; t0 < T; t0 += QB) {
            int last = imin(t0 + QB, T) - 1; /* last query of the tile, and last key it sees */
            float qp[4 * 128] __attribute__((aligned(16))), o[QB * 128] __attribute__((aligned(16)));
            pack_rows4(qp, q, t0, T, C, hd);
            for (int i = 0; i < QB * hd; i += 4) STORE(o + i, SPLAT(0.f));
            v128_t m = SPLAT(-INF), l = SPLAT(0.f);
            v128_t tq = wasm_i32x4_add(wasm_i32x4_splat(t0), wasm_i32x4_make(0, 1, 2, 3)); /* query index a lane */
            for (int s0 = 0; s0 <= last; s0 += KB) {
                v128_t s[8], st[8];
                tile_4x8_packed(s, qp, kt + (size_t)(s0 / KB) * hd * KB, hd);
                /* transpose: st[j] = key s0 + j, lanes = the 4 queries */
                st[0] = s[0]; st[1] = s[2]; st[2] = s[4]; st[3] = s[6];
                st[4] = s[1]; st[5] = s[3]; st[6] = s[5]; st[7] = s[7];
                transpose4(&st[0], &st[1], &st[2], &st[3]);
                transpose4(&st[4], &st[5], &st[6], &st[7]);
                v128_t bm = SPLAT(-INF);
                for (int j = 0; j < KB; j++) {
                    v128_t x = wasm_f32x4_mul(st[j], SPLAT(scale));
                    v128_t ok = wasm_i32x4_ge(tq, wasm_i32x4_splat(s0 + j)); /* causal: key <= query */
                    st[j] = wasm_v128_bitselect(x, SPLAT(-INF), ok);
                    bm = wasm_f32x4_pmax(st[j], bm); /* one maxps; a NaN score still reaches p below */
                }
                v128_t mn = wasm_f32x4_pmax(bm, m), corr = exp4(wasm_f32x4_sub(m, mn)), ps = SPLAT(0.f);
                for (int j = 0; j < KB; j++) {
                    st[j] = exp4(wasm_f32x4_sub(st[j], mn)); /* p, 0 where masked */
                    ps = wasm_f32x4_add(ps, st[j]);
                }
                l = wasm_f32x4_add(wasm_f32x4_mul(l, corr), ps);
                m = mn;
                int nk = imin(KB, last + 1 - s0);
                v128_t c0 = LANE(corr, 0), c1 = LANE(corr, 1), c2 = LANE(corr, 2), c3 = LANE(corr, 3);
                for (int c = 0; c < hd; c += 8) { /* o (4 x 8 columns) = o corr + p^T v */
                    float *o0 = o + c, *o1 = o + hd + c, *o2 = o + 2 * hd + c, *o3 = o + 3 * hd + c;
                    v128_t a00 = wasm_f32x4_mul(LOAD(o0), c0), a01 = wasm_f32x4_mul(LOAD(o0 + 4), c0);
                    v128_t a10 = wasm_f32x4_mul(LOAD(o1), c1), a11 = wasm_f32x4_mul(LOAD(o1 + 4), c1);
                    v128_t a20 = wasm_f32x4_mul(LOAD(o2), c2), a21 = wasm_f32x4_mul(LOAD(o2 + 4), c2);
                    v128_t a30 = wasm_f32x4_mul(LOAD(o3), c3), a31 = wasm_f32x4_mul(LOAD(o3 + 4), c3);
                    for (int j = 0; j < nk; j++) {
                        const float *vr = v + (size_t)(s0 + j) * C + c;
                        v128_t b0 = LOAD(vr), b1 = LOAD(vr + 4), p = st[j], x;
                        x = LANE(p, 0); a00 = MADD(x, b0, a00); a01 = MADD(x, b1, a01);
                        x = LANE(p, 1); a10 = MADD(x, b0, a10); a11 = MADD(x, b1, a11);
                        x = LANE(p, 2); a20 = MADD(x, b0, a20); a21 = MADD(x, b1, a21);
                        x = LANE(p, 3); a30 = MADD(x, b0, a30); a31 = MADD(x, b1, a31);
                    }
                    STORE(o0, a00); STORE(o0 + 4, a01); STORE(o1, a10); STORE(o1 + 4, a11);
                    STORE(o2, a20); STORE(o2 + 4, a21); STORE(o3, a30); STORE(o3 + 4, a31);
                }
            }
            float lf[4], mf[4];
            STORE(lf, l);
            STORE(mf, m);
            for (int r = 0; t0 + r <= last; r++) {
                v128_t il = SPLAT(1.f / lf[r]);
                float *out = a->out + base + (size_t)(t0 + r) * C;
                for (int d = 0; d < hd; d += 4) STORE(out + d, wasm_f32x4_mul(LOAD(o + r * hd + d), il));
                a->lse[(size_t)bh * T + t0 + r] = mf[r] + logf_(lf[r]);
            }
        }
    }
}
void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T, int C,
                       int H, float *const *scratch) {
    AttnArgs a = {out, lse, 0, 0, 0, q, k, v, 0, 0, 0, B, T, C, H, scratch};
    parallel_for(attention_forward_task, &a);
}

/* rows[i] (8 columns at c of row key0 + i, stride C, i < nrows) += sum over r < nq (<= 8) of
 * lane i of w[r] times src row r (8 columns at c, stride C): dV += p^T dO, dK += ds^T Q */
static inline void accumulate_rows4(float *rows, size_t C, int nrows, const v128_t *w, int nq, const float *src,
                                    int hd) {
    for (int c = 0; c < hd; c += 8) {
        float *r0 = rows + c, *r1 = rows + C + c, *r2 = rows + 2 * C + c, *r3 = rows + 3 * C + c;
        v128_t z = SPLAT(0.f);
        v128_t a00 = LOAD(r0), a01 = LOAD(r0 + 4);
        v128_t a10 = nrows > 1 ? LOAD(r1) : z, a11 = nrows > 1 ? LOAD(r1 + 4) : z;
        v128_t a20 = nrows > 2 ? LOAD(r2) : z, a21 = nrows > 2 ? LOAD(r2 + 4) : z;
        v128_t a30 = nrows > 3 ? LOAD(r3) : z, a31 = nrows > 3 ? LOAD(r3 + 4) : z;
        for (int r = 0; r < nq; r++) {
            const float *sr = src + (size_t)r * C + c;
            v128_t b0 = LOAD(sr), b1 = LOAD(sr + 4), x;
            x = LANE(w[r], 0); a00 = MADD(x, b0, a00); a01 = MADD(x, b1, a01);
            x = LANE(w[r], 1); a10 = MADD(x, b0, a10); a11 = MADD(x, b1, a11);
            x = LANE(w[r], 2); a20 = MADD(x, b0, a20); a21 = MADD(x, b1, a21);
            x = LANE(w[r], 3); a30 = MADD(x, b0, a30); a31 = MADD(x, b1, a31);
        }
        STORE(r0, a00); STORE(r0 + 4, a01);
        if (nrows > 1) { STORE(r1, a10); STORE(r1 + 4, a11); }
        if (nrows > 2) { STORE(r2, a20); STORE(r2 + 4, a21); }
        if (nrows > 3) { STORE(r3, a30); STORE(r3 + 4, a31); }
    }
}

static void attention_backward_task(void *ctx, int tid, int nth) {
    const AttnArgs *a = ctx;
    const int T = a->T, H = a->H, hd = a->C / H, Tp = (T + KB - 1) / KB * KB;
    const size_t C = a->C;
    const float scale = 1.f / __builtin_sqrtf((float)hd);
    float *kt = a->scratch[tid], *vt = kt + (size_t)Tp * hd;
    int lo, hi;
    split_range(a->B * H, tid, nth, &lo, &hi);
    for (int bh = lo; bh < hi; bh++) {
        int b = bh / H, h = bh % H;
        size_t base = (size_t)b * T * C + (size_t)h * hd;
        const float *q = a->q + base, *k = a->k + base, *v = a->v + base, *dout = a->dout + base, *o = a->o + base;
        float *dq = a->dq + base, *dk = a->dk + base, *dv = a->dv + base;
        pack_panels8(kt, k, T, C, hd);
        pack_panels8(vt, v, T, C, hd);
        for (int t = 0; t < T; t++)
            for (int d = 0; d < hd; d += 4) {
                STORE(dk + (size_t)t * C + d, SPLAT(0.f));
                STORE(dv + (size_t)t * C + d, SPLAT(0.f));
            }
        /* two 4-query tiles u = 0, 1 (queries t0 + 4u ..) at a time: t0 is a multiple of KB, so
         * both see the same key blocks s0 <= t0, and dV/dK sum over up to 8 queries per load
         * and store of their rows, in the same order as tile by tile (tile 0's rows, then 1's) */
        for (int t0 = 0; t0 < T; t0 += 2 * QB) {
            int nqt[2], lastt[2];
            float qp[2][4 * 128] __attribute__((aligned(16))), dop[2][4 * 128] __attribute__((aligned(16)));
            float dqb[2][QB * 128] __attribute__((aligned(16)));
            float Df[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}}, Lf[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
            for (int u = 0; u < 2; u++) {
                int tu = t0 + QB * u;
                nqt[u] = tu < T ? imin(QB, T - tu) : 0;
                lastt[u] = tu + nqt[u] - 1;
                if (!nqt[u]) continue;
                pack_rows4(qp[u], q, tu, T, C, hd);
                pack_rows4(dop[u], dout, tu, T, C, hd);
                for (int i = 0; i < QB * hd; i += 4) STORE(dqb[u] + i, SPLAT(0.f));
                for (int r = 0; r < nqt[u]; r++) {
                    Df[u][r] = dot4(dout + (size_t)(tu + r) * C, o + (size_t)(tu + r) * C, hd / 4);
                    Lf[u][r] = a->lse_in[(size_t)bh * T + tu + r];
                }
            }
            for (int s0 = 0; s0 <= lastt[0]; s0 += KB) {
                v128_t p[2][8], ds[2][8];
                for (int u = 0; u < 2; u++) {
                    if (!nqt[u]) continue;
                    int tu = t0 + QB * u, nq = nqt[u];
                    v128_t s[8], dp[8];
                    tile_4x8_packed(s, qp[u], kt + (size_t)(s0 / KB) * hd * KB, hd);
                    tile_4x8_packed(dp, dop[u], vt + (size_t)(s0 / KB) * hd * KB, hd);
                    for (int r = 0; r < QB; r++)
                        for (int hh = 0; hh < 2; hh++) {
                            int i = 2 * r + hh;
                            v128_t keys = wasm_i32x4_add(wasm_i32x4_splat(s0 + 4 * hh), wasm_i32x4_make(0, 1, 2, 3));
                            v128_t ok = wasm_i32x4_le(keys, wasm_i32x4_splat(tu + r)); /* causal: key <= query */
                            v128_t e = exp4(wasm_f32x4_sub(wasm_f32x4_mul(s[i], SPLAT(scale)), SPLAT(Lf[u][r])));
                            p[u][i] = r < nq ? wasm_v128_and(e, ok) : SPLAT(0.f);
                            ds[u][i] = wasm_f32x4_mul(wasm_f32x4_mul(p[u][i], wasm_f32x4_sub(dp[i], SPLAT(Df[u][r]))),
                                                      SPLAT(scale));
                        }
                }
                /* dV[key] += sum_r p[r][key] dO[r]; dK[key] += sum_r ds[r][key] Q[r]: keys s0 + 4 hh + i,
                 * r over the queries of the tiles that reach key k0 (tile 0 reaches it whenever tile 1 does
                 * not start after it, and then tile 0 is full, so the rows are contiguous) */
                for (int hh = 0; hh < 2; hh++) {
                    int k0 = s0 + 4 * hh, nk = 0, nq = 0, first = -1;
                    v128_t wp[8], wd[8];
                    for (int u = 0; u < 2; u++) {
                        int nku = imin(4, lastt[u] + 1 - k0);
                        if (!nqt[u] || nku <= 0) continue;
                        if (first < 0) first = u;
                        nk = nku > nk ? nku : nk;
                        for (int r = 0; r < QB; r++, nq++) { wp[nq] = p[u][2 * r + hh]; wd[nq] = ds[u][2 * r + hh]; }
                        nq -= QB - nqt[u];
                    }
                    if (first < 0) continue;
                    int tf = t0 + QB * first;
                    accumulate_rows4(dv + (size_t)k0 * C, C, nk, wp, nq, dout + (size_t)tf * C, hd);
                    accumulate_rows4(dk + (size_t)k0 * C, C, nk, wd, nq, q + (size_t)tf * C, hd);
                }
                /* dQ[r] += sum_key ds[r][key] K[key]: transpose ds to key-major, lanes = queries */
                for (int u = 0; u < 2; u++) {
                    if (!nqt[u]) continue;
                    v128_t dt[8] = {ds[u][0], ds[u][2], ds[u][4], ds[u][6], ds[u][1], ds[u][3], ds[u][5], ds[u][7]};
                    transpose4(&dt[0], &dt[1], &dt[2], &dt[3]);
                    transpose4(&dt[4], &dt[5], &dt[6], &dt[7]);
                    int nk = imin(KB, lastt[u] + 1 - s0);
                    for (int c = 0; c < hd; c += 8) {
                        float *q0 = dqb[u] + c, *q1 = dqb[u] + hd + c, *q2 = dqb[u] + 2 * hd + c, *q3 = dqb[u] + 3 * hd + c;
                        v128_t a00 = LOAD(q0), a01 = LOAD(q0 + 4), a10 = LOAD(q1), a11 = LOAD(q1 + 4);
                        v128_t a20 = LOAD(q2), a21 = LOAD(q2 + 4), a30 = LOAD(q3), a31 = LOAD(q3 + 4);
                        for (int j = 0; j < nk; j++) {
                            const float *kr = k + (size_t)(s0 + j) * C + c;
                            v128_t b0 = LOAD(kr), b1 = LOAD(kr + 4), w = dt[j], x;
                            x = LANE(w, 0); a00 = MADD(x, b0, a00); a01 = MADD(x, b1, a01);
                            x = LANE(w, 1); a10 = MADD(x, b0, a10); a11 = MADD(x, b1, a11);
                            x = LANE(w, 2); a20 = MADD(x, b0, a20); a21 = MADD(x, b1, a21);
                            x = LANE(w, 3); a30 = MADD(x, b0, a30); a31 = MADD(x, b1, a31);
                        }
                        STORE(q0, a00); STORE(q0 + 4, a01); STORE(q1, a10); STORE(q1 + 4, a11);
                        STORE(q2, a20); STORE(q2 + 4, a21); STORE(q3, a30); STORE(q3 + 4, a31);
                    }
                }
            }
            for (int u = 0; u < 2; u++)
                for (int r = 0; r < nqt[u]; r++)
                    for (int d = 0; d < hd; d += 4)
                        STORE(dq + (size_t)(t0 + QB * u + r) * C + d, LOAD(dqb[u] + r * hd + d));
        }
    }
}
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                        const float *v, const float *out, const float *lse, int B, int T, int C, int H,
                        float *const *scratch) {
    AttnArgs a = {0, 0, dq, dk, dv, q, k, v, dout, out, lse, B, T, C, H, scratch};
    parallel_for(attention_backward_task, &a);
}
/* floats of per-thread scratch the attention kernels need */
size_t attention_scratch_floats(int T, int hd) { return 2 * (size_t)((T + KB - 1) / KB * KB) * hd; }
