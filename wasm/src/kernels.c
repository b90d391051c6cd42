/* Layer kernels, each forward directly above its backward (llm.c style), each with a
 * threaded entry that splits its work with parallel_for. Arguments: outputs, then
 * inputs, then sizes. Backward passes ADD into parameter gradients (zeroed once per
 * step); activation gradients are written or added as each comment says.
 *
 * Determinism: every output element is computed by exactly one thread, in an order
 * of operations that does not depend on how the work was split, so results are
 * bit-identical run to run and for any thread count.
 */
#include "kernels.h"

/* matmul: the blocked kernels live in matmul.c, built six times (plain SIMD128 or
 * relaxed-SIMD FMA, x the 4x8 tile's A broadcast: shuffle, splat load, pre-broadcast
 * packing); model_set_fma() and model_set_matmul_kernel() pick one at run time. */
static int use_fma, matmul_kind;
EXPORT(model_set_fma) void model_set_fma(int on) { use_fma = on != 0; }
/* 0 shuffle (default), 1 splat, 2 bcast; returns 0, or -1 for an unknown kind (unchanged) */
EXPORT(model_set_matmul_kernel) int model_set_matmul_kernel(int kind) {
    if (kind < 0 || kind > 2) return -1;
    matmul_kind = kind;
    return 0;
}
typedef void (*MatmulShare)(const MatmulJob *J, int tid, int nth);
static MatmulShare const matmul_shares[2][3] = {
    {matmul_share_plain, matmul_share_plain_splat, matmul_share_plain_bcast},
    {matmul_share_fma, matmul_share_fma_splat, matmul_share_fma_bcast}};

/* jobs run one after another on each thread; jobs with the same (M, N) split the same
 * way, so a later job may add into an earlier job's output without a barrier */
static void matmul_task(void *ctx, int tid, int nth) {
    const MatmulJobs *js = ctx;
    MatmulShare share = matmul_shares[use_fma][matmul_kind];
    for (int j = 0; j < js->n; j++) share(&js->job[j], tid, nth);
}
void matmul_jobs(const MatmulJobs *js) { parallel_for(matmul_task, (void *)js); }

void matmul(float *c, const float *init, const float *bias, const float *a, size_t rsa, size_t csa,
            const float *b, int M, int N, int K) {
    MatmulJobs js = {1, {mmjob(c, init, bias, a, rsa, csa, b, M, N, K)}};
    matmul_jobs(&js);
}
void matmul_bt(float *c, const float *init, const float *bias, const float *a, size_t rsa, size_t csa,
               const float *b, int M, int N, int K) {
    MatmulJobs js = {1, {mmjob_bt(c, init, bias, a, rsa, csa, b, M, N, K)}};
    matmul_jobs(&js);
}

void matmul_dw(float *c, const float *a, size_t rsa, size_t csa, const float *b, int M, int N, int K, float *dbias) {
    MatmulJobs js = {1, {mmjob(c, c, 0, a, rsa, csa, b, M, N, K)}};
    js.job[0].dbias = dbias;
    matmul_jobs(&js);
}

/* ===================================================================================
 * embedding: out (N, C) = tok_emb[ids] (V, C) + pos_emb[t] (T, C), ids (B, T) with
 * row stride T + 1 (the batch keeps its targets beside the inputs)
 * =================================================================================== */
typedef struct {
    float *out, *dtok, *dpos; const float *tok, *pos, *dout; const int *ids; int B, T, C;
} EmbArgs;
static void embedding_forward_task(void *ctx, int tid, int nth) {
    const EmbArgs *e = ctx;
    int lo, hi, C = e->C;
    split_range(e->B * e->T, tid, nth, &lo, &hi);
    for (int n = lo; n < hi; n++) {
        int b = n / e->T, t = n % e->T, id = e->ids[b * (e->T + 1) + t];
        const float *tk = e->tok + (size_t)id * C, *ps = e->pos + (size_t)t * C;
        float *o = e->out + (size_t)n * C;
        for (int i = 0; i < C; i += 4) STORE(o + i, wasm_f32x4_add(LOAD(tk + i), LOAD(ps + i)));
    }
}
void embedding_forward(float *out, const int *ids, const float *tok, const float *pos, int B, int T, int C) {
    EmbArgs e = {out, 0, 0, tok, pos, 0, ids, B, T, C};
    parallel_for(embedding_forward_task, &e);
}
/* dtok (V, C) += scatter of dout (N, C) by id; dpos (T, C) += sum over b. Split by
 * columns so each gradient element is summed by one thread in row order. */
static void embedding_backward_task(void *ctx, int tid, int nth) {
    const EmbArgs *e = ctx;
    int lo, hi, C = e->C;
    split_range(C / 4, tid, nth, &lo, &hi);
    for (int n = 0; n < e->B * e->T; n++) {
        int b = n / e->T, t = n % e->T, id = e->ids[b * (e->T + 1) + t];
        const float *d = e->dout + (size_t)n * C;
        float *dt = e->dtok + (size_t)id * C, *dp = e->dpos + (size_t)t * C;
        for (int i = lo * 4; i < hi * 4; i += 4) {
            v128_t g = LOAD(d + i);
            STORE(dt + i, wasm_f32x4_add(LOAD(dt + i), g));
            STORE(dp + i, wasm_f32x4_add(LOAD(dp + i), g));
        }
    }
}
void embedding_backward(float *dtok, float *dpos, const float *dout, const int *ids, int B, int T, int C) {
    EmbArgs e = {0, dtok, dpos, 0, 0, dout, ids, B, T, C};
    parallel_for(embedding_backward_task, &e);
}

/* ===================================================================================
 * layernorm over C, eps 1e-5, population variance:
 * out (N, C) = (x - mean) * rstd * w + b; mean, rstd (N) saved for the backward pass
 * =================================================================================== */
typedef struct {
    float *out, *mean, *rstd, *dx, *dw, *db; const float *x, *w, *b, *dout, *init; int N, C;
} LNArgs;
static void layernorm_forward_task(void *ctx, int tid, int nth) {
    const LNArgs *a = ctx;
    int lo, hi, C = a->C;
    const float *w = a->w, *bias = a->b; /* locals: the stores below may alias *a */
    split_range(a->N, tid, nth, &lo, &hi);
    for (int n = lo; n < hi; n++) {
        const float *x = a->x + (size_t)n * C;
        v128_t s = SPLAT(0.f);
        for (int i = 0; i < C; i += 4) s = wasm_f32x4_add(s, LOAD(x + i));
        float m = hsum(s) / (float)C;
        v128_t vm = SPLAT(m), v = SPLAT(0.f);
        for (int i = 0; i < C; i += 4) {
            v128_t d = wasm_f32x4_sub(LOAD(x + i), vm);
            v = MADD(d, d, v);
        }
        float rs = 1.f / __builtin_sqrtf(hsum(v) / (float)C + 1e-5f);
        v128_t vr = SPLAT(rs);
        float *o = a->out + (size_t)n * C;
        for (int i = 0; i < C; i += 4) {
            v128_t nx = wasm_f32x4_mul(wasm_f32x4_sub(LOAD(x + i), vm), vr);
            STORE(o + i, wasm_f32x4_add(wasm_f32x4_mul(nx, LOAD(w + i)), LOAD(bias + i)));
        }
        a->mean[n] = m;
        a->rstd[n] = rs;
    }
}
void layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w, const float *b, int N,
                       int C) {
    LNArgs a = {out, mean, rstd, 0, 0, 0, x, w, b, 0, 0, N, C};
    parallel_for(layernorm_forward_task, &a);
}

/* dx (N, C) = init (N, C) + LN'(dout): per row, with xhat = (x - mean) * rstd and
 * g = w * dout: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)). Rows split. */
static void layernorm_backward_dx_task(void *ctx, int tid, int nth) {
    const LNArgs *a = ctx;
    int lo, hi, C = a->C;
    const float *w = a->w; /* a local: the stores below may alias *a */
    split_range(a->N, tid, nth, &lo, &hi);
    for (int n = lo; n < hi; n++) {
        const float *x = a->x + (size_t)n * C, *d = a->dout + (size_t)n * C;
        v128_t vm = SPLAT(a->mean[n]), vr = SPLAT(a->rstd[n]), sg = SPLAT(0.f), sgx = SPLAT(0.f);
        for (int i = 0; i < C; i += 4) {
            v128_t xh = wasm_f32x4_mul(wasm_f32x4_sub(LOAD(x + i), vm), vr);
            v128_t g = wasm_f32x4_mul(LOAD(w + i), LOAD(d + i));
            sg = wasm_f32x4_add(sg, g);
            sgx = MADD(g, xh, sgx);
        }
        v128_t mg = SPLAT(hsum(sg) / (float)C), mgx = SPLAT(hsum(sgx) / (float)C);
        float *dx = a->dx + (size_t)n * C;
        const float *in = a->init ? a->init + (size_t)n * C : 0;
        for (int i = 0; i < C; i += 4) {
            v128_t xh = wasm_f32x4_mul(wasm_f32x4_sub(LOAD(x + i), vm), vr);
            v128_t g = wasm_f32x4_mul(LOAD(w + i), LOAD(d + i));
            v128_t r = wasm_f32x4_mul(wasm_f32x4_sub(wasm_f32x4_sub(g, mg), wasm_f32x4_mul(xh, mgx)), vr);
            STORE(dx + i, in ? wasm_f32x4_add(LOAD(in + i), r) : r);
        }
    }
}
/* dw (C) += sum_n dout * xhat, db (C) += sum_n dout. Columns split. */
static void layernorm_backward_dw_task(void *ctx, int tid, int nth) {
    const LNArgs *a = ctx;
    int lo, hi, C = a->C;
    split_range(C / 4, tid, nth, &lo, &hi);
    for (int i = lo * 4; i < hi * 4; i += 4) {
        v128_t dw = LOAD(a->dw + i), db = LOAD(a->db + i);
        for (int n = 0; n < a->N; n++) {
            v128_t xh = wasm_f32x4_mul(wasm_f32x4_sub(LOAD(a->x + (size_t)n * C + i), SPLAT(a->mean[n])),
                                       SPLAT(a->rstd[n]));
            v128_t d = LOAD(a->dout + (size_t)n * C + i);
            dw = MADD(d, xh, dw);
            db = wasm_f32x4_add(db, d);
        }
        STORE(a->dw + i, dw);
        STORE(a->db + i, db);
    }
}
void layernorm_backward(float *dx, float *dw, float *db, const float *init, const float *dout, const float *x,
                        const float *w, const float *mean, const float *rstd, int N, int C) {
    LNArgs a = {0, (float *)mean, (float *)rstd, dx, dw, db, x, w, 0, dout, init, N, C};
    parallel_for(layernorm_backward_dx_task, &a);
    parallel_for(layernorm_backward_dw_task, &a);
}

/* ===================================================================================
 * GELU, exact (erf) form: out = 0.5 x (1 + erf(x / sqrt 2)); x, out (n), n % 4 == 0
 * backward: dx = dout * (0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi))
 * =================================================================================== */
typedef struct { float *out; const float *x, *dout; size_t n; } GeluArgs;
#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f
static void gelu_forward_task(void *ctx, int tid, int nth) {
    const GeluArgs *g = ctx;
    int lo, hi;
    const float *xs = g->x; /* locals: a store through out may alias *g, which would reload these */
    float *out = g->out;
    split_range((int)(g->n / 4), tid, nth, &lo, &hi);
    for (size_t i = (size_t)lo * 4; i < (size_t)hi * 4; i += 4) {
        v128_t x = LOAD(xs + i), e;
        v128_t ope = one_plus_erf4(wasm_f32x4_mul(x, SPLAT(INV_SQRT2)), &e);
        STORE(out + i, wasm_f32x4_mul(wasm_f32x4_mul(SPLAT(0.5f), x), ope));
    }
}
void gelu_forward(float *out, const float *x, size_t n) {
    GeluArgs g = {out, x, 0, n};
    parallel_for(gelu_forward_task, &g);
}
static void gelu_backward_task(void *ctx, int tid, int nth) {
    const GeluArgs *g = ctx;
    int lo, hi;
    const float *xs = g->x, *dout = g->dout;
    float *out = g->out;
    split_range((int)(g->n / 4), tid, nth, &lo, &hi);
    for (size_t i = (size_t)lo * 4; i < (size_t)hi * 4; i += 4) {
        v128_t x = LOAD(xs + i), e;
        v128_t ope = one_plus_erf4(wasm_f32x4_mul(x, SPLAT(INV_SQRT2)), &e);
        v128_t d = wasm_f32x4_add(wasm_f32x4_mul(SPLAT(0.5f), ope), wasm_f32x4_mul(x, wasm_f32x4_mul(e, SPLAT(INV_SQRT_2PI))));
        STORE(out + i, wasm_f32x4_mul(LOAD(dout + i), d));
    }
}
/* dx may alias dout */
void gelu_backward(float *dx, const float *x, const float *dout, size_t n) {
    GeluArgs g = {dx, x, dout, n};
    parallel_for(gelu_backward_task, &g);
}

/* causal self-attention: attention.c */

/* ===================================================================================
 * cross-entropy fused with its gradient: logits (N, V) are overwritten by
 * dlogits = (softmax(logits) - onehot(target)) / N; losses (N) = lse - logit[target].
 * targets: ids with row stride T + 1, offset by one position.
 * =================================================================================== */
typedef struct { float *logits, *losses; const int *ids; int B, T, V; } CEArgs;
static void crossentropy_task(void *ctx, int tid, int nth) {
    const CEArgs *c = ctx;
    int lo, hi, V = c->V, N = c->B * c->T;
    float invN = 1.f / (float)N;
    split_range(N, tid, nth, &lo, &hi);
    for (int n = lo; n < hi; n++) {
        float *x = c->logits + (size_t)n * V;
        int y = c->ids[(n / c->T) * (c->T + 1) + n % c->T + 1];
        v128_t mx = SPLAT(-INF);
        for (int i = 0; i < V; i += 4) mx = wasm_f32x4_max(mx, LOAD(x + i));
        float m = hmax(mx);
        v128_t s = SPLAT(0.f), vm = SPLAT(m);
        for (int i = 0; i < V; i += 4) s = wasm_f32x4_add(s, exp4(wasm_f32x4_sub(LOAD(x + i), vm)));
        float sum = hsum(s), lse = m + logf_(sum);
        c->losses[n] = lse - x[y];
        v128_t vl = SPLAT(lse), vi = SPLAT(invN);
        for (int i = 0; i < V; i += 4) STORE(x + i, wasm_f32x4_mul(exp4(wasm_f32x4_sub(LOAD(x + i), vl)), vi));
        x[y] -= invN;
    }
}
void crossentropy_forward_backward(float *logits, float *losses, const int *ids, int B, int T, int V) {
    CEArgs c = {logits, losses, ids, B, T, V};
    parallel_for(crossentropy_task, &c);
}

/* ===================================================================================
 * global gradient norm: sum of squares in fixed chunks (one partial each, in
 * double), the partials summed in order: the same result for any thread count.
 * =================================================================================== */
#define NORM_CHUNK 16384
typedef struct { const float *g; size_t n; double *partial; } NormArgs;
static void sumsq_task(void *ctx, int tid, int nth) {
    const NormArgs *a = ctx;
    int lo, hi, nchunks = (int)((a->n + NORM_CHUNK - 1) / NORM_CHUNK);
    split_range(nchunks, tid, nth, &lo, &hi);
    for (int c = lo; c < hi; c++) {
        size_t i0 = (size_t)c * NORM_CHUNK, i1 = i0 + NORM_CHUNK < a->n ? i0 + NORM_CHUNK : a->n, i = i0;
        v128_t s = SPLAT(0.f);
        for (; i + 4 <= i1; i += 4) { v128_t x = LOAD(a->g + i); s = MADD(x, x, s); }
        double d = (double)hsum(s);
        for (; i < i1; i++) d += (double)a->g[i] * a->g[i];
        a->partial[c] = d;
    }
}
double global_norm(const float *g, size_t n, double *scratch) {
    NormArgs a = {g, n, scratch};
    parallel_for(sumsq_task, &a);
    double s = 0;
    for (size_t c = 0; c < (n + NORM_CHUNK - 1) / NORM_CHUNK; c++) s += scratch[c];
    return __builtin_sqrt(s);
}
size_t global_norm_scratch(size_t n) { return (n + NORM_CHUNK - 1) / NORM_CHUNK; }

/* ===================================================================================
 * AdamW (PyTorch's order): p *= 1 - lr wd (decayed tensors only); m = b1 m + (1-b1) g;
 * v = b2 v + (1-b2) g^2; p -= lr (m / bc1) / (sqrt(v / bc2) + eps), g = grad * gscale
 * (the clip factor). Segments say which ranges decay.
 * =================================================================================== */
typedef struct {
    float *p, *m, *v; const float *g; size_t n; const Segment *seg; int nseg;
    float lr, b1, b2, eps, wd, bc1, bc2, gscale;
} AdamArgs;
static void adamw_task(void *ctx, int tid, int nth) {
    const AdamArgs *a = ctx;
    int lo, hi, nblk = (int)((a->n + 1023) / 1024);
    split_range(nblk, tid, nth, &lo, &hi);
    size_t i0 = (size_t)lo * 1024, i1 = (size_t)hi * 1024 < a->n ? (size_t)hi * 1024 : a->n;
    for (int s = 0; s < a->nseg; s++) {
        size_t s0 = a->seg[s].offset, s1 = s0 + a->seg[s].size;
        size_t j0 = s0 > i0 ? s0 : i0, j1 = s1 < i1 ? s1 : i1;
        float decay = a->seg[s].decay ? 1.f - a->lr * a->wd : 1.f;
        for (size_t i = j0; i < j1; i++) {
            float g = a->g[i] * a->gscale;
            float m = a->b1 * a->m[i] + (1.f - a->b1) * g;
            float v = a->b2 * a->v[i] + (1.f - a->b2) * g * g;
            a->m[i] = m;
            a->v[i] = v;
            a->p[i] = a->p[i] * decay - a->lr * (m / a->bc1) / (__builtin_sqrtf(v / a->bc2) + a->eps);
        }
    }
}
void adamw(float *p, float *m, float *v, const float *g, size_t n, const Segment *seg, int nseg, float lr, float b1,
           float b2, float eps, float wd, float bc1, float bc2, float gscale) {
    AdamArgs a = {p, m, v, g, n, seg, nseg, lr, b1, b2, eps, wd, bc1, bc2, gscale};
    parallel_for(adamw_task, &a);
}

/* ---- zero a float buffer in parallel --------------------------------------------- */
typedef struct { float *p; size_t n; } ZeroArgs;
static void zero_task(void *ctx, int tid, int nth) {
    const ZeroArgs *z = ctx;
    int lo, hi, nblk = (int)((z->n + 4095) / 4096);
    split_range(nblk, tid, nth, &lo, &hi);
    size_t i0 = (size_t)lo * 4096, i1 = (size_t)hi * 4096 < z->n ? (size_t)hi * 4096 : z->n;
    if (i1 > i0) zero_floats(z->p + i0, i1 - i0);
}
void zero_parallel(float *p, size_t n) {
    ZeroArgs z = {p, n};
    parallel_for(zero_task, &z);
}
