/* The model of MODEL.md and its training step, chained from the kernels.
 *
 * Parameters live in ONE flat fp32 vector in the layout of tinygpt_bench/model.py
 * (the table below is the same table, in the same order); gradients and both AdamW
 * moments have the same layout. Per-layer tensors are stacked over L.
 * One exported train_step(lr) runs forward, loss, backward, clip and AdamW.
 */
#include "kernels.h"

#define V 256

enum { TOK, POS, LN1W, LN1B, WQ, BQ, WK, BK, WV, BV, WO, BO, LN2W, LN2B, FCW, FCB, FPW, FPB, LNFW, LNFB, NPARAM };

typedef struct {
    /* per layer, each (L, ...) stacked: index with layer * size */
    float *ln1, *ln1_mean, *ln1_rstd; /* (N, C), (N), (N) */
    float *q, *k, *v, *att;           /* (N, C) each */
    float *lse;                       /* (B, H, T) */
    float *res1;                      /* (N, C) residual after attention */
    float *ln2, *ln2_mean, *ln2_rstd; /* (N, C), (N), (N) */
    float *fch, *fchg;                /* (N, 4C) MLP pre- and post-GELU */
    float *res2;                      /* (N, C) residual after the MLP = the layer's output */
} Acts;

static struct {
    int L, C, H, T, B;
    size_t nparams, off[NPARAM], size[NPARAM];
    float *params, *grads, *m, *v; /* (nparams) each */
    int *tokens;                   /* (B, T + 1) */
    Acts a;
    float *x0;                           /* (N, C) embeddings */
    float *lnf, *lnf_mean, *lnf_rstd;    /* (N, C), (N), (N) */
    float *logits;                       /* (N, V), overwritten by dlogits */
    float *losses;                       /* (N) */
    float *dres, *dln, *datt, *dq, *dk, *dv; /* (N, C) each */
    float *dfch;                         /* (N, 4C) */
    double *norm_scratch;
    float *attn_scratch[MAX_THREADS]; /* per thread: attention_scratch_floats(T, hd) */
    Segment seg[NPARAM];
    int step;
    float loss;
    double grad_norm;
    float b1, b2, eps, wd, clip;
    size_t bytes; /* total allocated by model_init */
} M = {.b1 = 0.9f, .b2 = 0.95f, .eps = 1e-8f, .wd = 0.1f, .clip = 1.0f};

/* the parameter table of model.py: sizes in elements and whether AdamW decays it */
static void layout(void) {
    size_t L = M.L, C = M.C, T = M.T;
    size_t sz[NPARAM] = {V * C, T * C, L * C, L * C, L * C * C, L * C, L * C * C, L * C, L * C * C, L * C,
                         L * C * C, L * C, L * C, L * C, L * C * 4 * C, L * 4 * C, L * 4 * C * C, L * C, C, C};
    static const int decay[NPARAM] = {1, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0};
    size_t off = 0;
    for (int i = 0; i < NPARAM; i++) {
        M.off[i] = off;
        M.size[i] = sz[i];
        M.seg[i] = (Segment){off, sz[i], decay[i]};
        off += sz[i];
    }
    M.nparams = off;
}

/* allocation plan: counts bytes when counting, else takes memory from tg_alloc */
static int counting, failed;
static size_t counted;
static void *take(size_t bytes) {
    bytes = (bytes + 63) & ~(size_t)63;
    if (counting) { counted += bytes; return 0; }
    if (failed) return 0;
    void *p = tg_alloc(bytes);
    if (!p) failed = 1;
    counted += bytes;
    return p;
}
#define F(n) ((float *)take((size_t)(n) * sizeof(float)))

static void plan(void) {
    size_t L = M.L, C = M.C, N = (size_t)M.B * M.T, np = M.nparams;
    M.params = F(np); M.grads = F(np); M.m = F(np); M.v = F(np);
    M.tokens = (int *)take((size_t)M.B * (M.T + 1) * sizeof(int));
    Acts *a = &M.a;
    a->ln1 = F(L * N * C); a->ln1_mean = F(L * N); a->ln1_rstd = F(L * N);
    a->q = F(L * N * C); a->k = F(L * N * C); a->v = F(L * N * C); a->att = F(L * N * C);
    a->lse = F(L * N * M.H);
    a->res1 = F(L * N * C);
    a->ln2 = F(L * N * C); a->ln2_mean = F(L * N); a->ln2_rstd = F(L * N);
    a->fch = F(L * N * 4 * C); a->fchg = F(L * N * 4 * C);
    a->res2 = F(L * N * C);
    M.x0 = F(N * C);
    M.lnf = F(N * C); M.lnf_mean = F(N); M.lnf_rstd = F(N);
    M.logits = F(N * V); M.losses = F(N);
    M.dres = F(N * C); M.dln = F(N * C); M.datt = F(N * C);
    M.dq = F(N * C); M.dk = F(N * C); M.dv = F(N * C);
    M.dfch = F(N * 4 * C);
    M.norm_scratch = (double *)take(global_norm_scratch(np) * sizeof(double));
    for (int t = 0; t < pool_threads(); t++) M.attn_scratch[t] = F(attention_scratch_floats(M.T, M.C / M.H));
}

/* 0: ok; 1: shape not supported (C % 8, head_dim % 8, head_dim > 128);
 * 2: memory could not grow (model_bytes() says how much the model needs) */
EXPORT(model_init) int model_init(int L, int C, int H, int T, int B) {
    if (L < 1 || C < 8 || H < 1 || T < 1 || B < 1 || C % H || C % 8 || (C / H) % 8 || C / H > MAX_HEAD_DIM)
        return 1;
    M.L = L; M.C = C; M.H = H; M.T = T; M.B = B; M.step = 0;
    layout();
    counting = 1; counted = 0; plan();
    M.bytes = counted;
    if (tg_reserve(M.bytes)) return 2; /* one growth for the whole model */
    counting = 0; failed = 0; counted = 0; plan();
    if (failed) return 2;
    zero_parallel(M.m, M.nparams);
    zero_parallel(M.v, M.nparams);
    zero_parallel(M.grads, M.nparams);
    return 0;
}
/* bytes the model of this shape takes from the allocator (no allocation) */
EXPORT(model_bytes) size_t model_bytes(int L, int C, int H, int T, int B) {
    M.L = L; M.C = C; M.H = H; M.T = T; M.B = B;
    layout();
    counting = 1; counted = 0; plan(); counting = 0;
    return counted;
}
/* fault injection (tinygpt_bench/faults.py): 0 none; 1 trap: `unreachable` during the
 * step, after the forward pass; 2 nan-grad: a NaN written into the gradient after
 * backward, before the clip */
static int fault;
EXPORT(model_set_fault) void model_set_fault(int kind) { fault = kind; }

EXPORT(model_set_optimizer) void model_set_optimizer(float b1, float b2, float eps, float wd, float clip) {
    M.b1 = b1; M.b2 = b2; M.eps = eps; M.wd = wd; M.clip = clip;
}
EXPORT(model_nparams) size_t model_nparams(void) { return M.nparams; }
EXPORT(model_param_offset) size_t model_param_offset(int i) { return i < NPARAM ? M.off[i] : 0; }
EXPORT(model_params) size_t model_params(void) { return (size_t)M.params; }
EXPORT(model_grads) size_t model_grads(void) { return (size_t)M.grads; }
EXPORT(model_adam_m) size_t model_adam_m(void) { return (size_t)M.m; }
EXPORT(model_adam_v) size_t model_adam_v(void) { return (size_t)M.v; }
EXPORT(model_tokens) size_t model_tokens(void) { return (size_t)M.tokens; }
EXPORT(model_losses) size_t model_losses(void) { return (size_t)M.losses; }
EXPORT(model_grad_norm) double model_grad_norm(void) { return M.grad_norm; }

/* profile tag of the parallel regions that follow (pool.c times them when enabled) */
#define PT(tag) (prof_tag = (tag))

#define P(i) (M.params + M.off[i])
#define G(i) (M.grads + M.off[i])

static void forward(void) {
    const int L = M.L, C = M.C, H = M.H, T = M.T, B = M.B, N = B * T;
    const size_t NC = (size_t)N * C, CC = (size_t)C * C;
    Acts *a = &M.a;
    PT(P_EMBEDDING);
    embedding_forward(M.x0, M.tokens, P(TOK), P(POS), B, T, C);
    for (int l = 0; l < L; l++) {
        const float *x = l ? a->res2 + (l - 1) * NC : M.x0; /* (N, C) layer input */
        float *ln1 = a->ln1 + l * NC, *q = a->q + l * NC, *k = a->k + l * NC, *v = a->v + l * NC;
        float *att = a->att + l * NC, *res1 = a->res1 + l * NC, *ln2 = a->ln2 + l * NC;
        float *fch = a->fch + 4 * l * NC, *fchg = a->fchg + 4 * l * NC;
        PT(P_LAYERNORM);
        layernorm_forward(ln1, a->ln1_mean + l * N, a->ln1_rstd + l * N, x, P(LN1W) + l * C, P(LN1B) + l * C, N, C);
        MatmulJobs qkv = {3, {mmjob(q, 0, P(BQ) + l * C, ln1, C, 1, P(WQ) + l * CC, N, C, C),
                              mmjob(k, 0, P(BK) + l * C, ln1, C, 1, P(WK) + l * CC, N, C, C),
                              mmjob(v, 0, P(BV) + l * C, ln1, C, 1, P(WV) + l * CC, N, C, C)}};
        PT(P_MATMUL_FWD);
        matmul_jobs(&qkv);
        PT(P_ATTENTION);
        attention_forward(att, a->lse + (size_t)l * N * H, q, k, v, B, T, C, H, M.attn_scratch);
        PT(P_MATMUL_FWD);
        matmul(res1, x, P(BO) + l * C, att, C, 1, P(WO) + l * CC, N, C, C);
        PT(P_LAYERNORM);
        layernorm_forward(ln2, a->ln2_mean + l * N, a->ln2_rstd + l * N, res1, P(LN2W) + l * C, P(LN2B) + l * C, N, C);
        PT(P_MATMUL_FWD);
        matmul(fch, 0, P(FCB) + 4 * l * C, ln2, C, 1, P(FCW) + 4 * l * CC, N, 4 * C, C);
        PT(P_GELU);
        gelu_forward(fchg, fch, 4 * NC);
        PT(P_MATMUL_FWD);
        matmul(a->res2 + l * NC, res1, P(FPB) + l * C, fchg, 4 * C, 1, P(FPW) + 4 * l * CC, N, C, 4 * C);
    }
    PT(P_LAYERNORM);
    layernorm_forward(M.lnf, M.lnf_mean, M.lnf_rstd, a->res2 + (L - 1) * NC, P(LNFW), P(LNFB), N, C);
    /* tied head: logits (N, V) = lnf (N, C) @ tok_emb^T (C, V) */
    PT(P_MATMUL_FWD);
    matmul_bt(M.logits, 0, 0, M.lnf, C, 1, P(TOK), N, V, C);
}

static void backward(void) {
    const int L = M.L, C = M.C, H = M.H, T = M.T, B = M.B, N = B * T;
    const size_t NC = (size_t)N * C, CC = (size_t)C * C;
    Acts *a = &M.a;
    PT(P_ZERO);
    zero_parallel(M.grads, M.nparams);
    /* head: dtok_emb (V, C) += dlogits^T (V, N) @ lnf (N, C); dlnf (N, C) = dlogits @ tok_emb */
    PT(P_MATMUL_DW);
    matmul(G(TOK), G(TOK), 0, M.logits, 1, V, M.lnf, V, C, N);
    PT(P_MATMUL_DX);
    matmul(M.dln, 0, 0, M.logits, V, 1, P(TOK), N, C, V);
    PT(P_LAYERNORM_BWD);
    layernorm_backward(M.dres, G(LNFW), G(LNFB), 0, M.dln, a->res2 + (L - 1) * NC, P(LNFW), M.lnf_mean, M.lnf_rstd,
                       N, C);
    for (int l = L - 1; l >= 0; l--) {
        const float *x = l ? a->res2 + (l - 1) * NC : M.x0;
        float *ln1 = a->ln1 + l * NC, *q = a->q + l * NC, *k = a->k + l * NC, *v = a->v + l * NC;
        float *att = a->att + l * NC, *res1 = a->res1 + l * NC, *ln2 = a->ln2 + l * NC;
        float *fch = a->fch + 4 * l * NC, *fchg = a->fchg + 4 * l * NC;
        /* M.dres (N, C) is the gradient of the layer output res2 */
        /* MLP out: dfchg (N, 4C) = dres @ fc_out_w^T; dfc_out_w (4C, C) += fchg^T @ dres */
        PT(P_MATMUL_DX);
        matmul_bt(M.dfch, 0, 0, M.dres, C, 1, P(FPW) + 4 * l * CC, N, 4 * C, C);
        PT(P_MATMUL_DW);
        /* dfc_out_b += column sums of dres, taken while the dW matmul packs dres */
        matmul_dw(G(FPW) + 4 * l * CC, fchg, 1, 4 * C, M.dres, 4 * C, C, N, G(FPB) + l * C);
        PT(P_GELU_BWD);
        gelu_backward(M.dfch, fch, M.dfch, 4 * NC);
        /* MLP in: dln2 (N, C) = dfch @ fc_in_w^T; dfc_in_w (C, 4C) += ln2^T @ dfch */
        PT(P_MATMUL_DX);
        matmul_bt(M.dln, 0, 0, M.dfch, 4 * C, 1, P(FCW) + 4 * l * CC, N, C, 4 * C);
        PT(P_MATMUL_DW);
        matmul_dw(G(FCW) + 4 * l * CC, ln2, 1, C, M.dfch, C, 4 * C, N, G(FCB) + 4 * l * C);
        /* dres += LN2'(dln2): now the gradient of res1 */
        PT(P_LAYERNORM_BWD);
        layernorm_backward(M.dres, G(LN2W) + l * C, G(LN2B) + l * C, M.dres, M.dln, res1, P(LN2W) + l * C,
                           a->ln2_mean + l * N, a->ln2_rstd + l * N, N, C);
        /* attention out: datt = dres @ wo^T; dwo += att^T @ dres */
        PT(P_MATMUL_DX);
        matmul_bt(M.datt, 0, 0, M.dres, C, 1, P(WO) + l * CC, N, C, C);
        PT(P_MATMUL_DW);
        matmul_dw(G(WO) + l * CC, att, 1, C, M.dres, C, C, N, G(BO) + l * C);
        PT(P_ATTENTION_BWD);
        attention_backward(M.dq, M.dk, M.dv, M.datt, q, k, v, att, a->lse + (size_t)l * N * H, B, T, C, H,
                           M.attn_scratch);
        /* dln1 = dq @ wq^T + dk @ wk^T + dv @ wv^T; dw{q,k,v} += ln1^T @ d{q,k,v} */
        MatmulJobs dx = {3, {mmjob_bt(M.dln, 0, 0, M.dq, C, 1, P(WQ) + l * CC, N, C, C),
                             mmjob_bt(M.dln, M.dln, 0, M.dk, C, 1, P(WK) + l * CC, N, C, C),
                             mmjob_bt(M.dln, M.dln, 0, M.dv, C, 1, P(WV) + l * CC, N, C, C)}};
        PT(P_MATMUL_DX);
        matmul_jobs(&dx);
        MatmulJobs dw = {3, {mmjob(G(WQ) + l * CC, G(WQ) + l * CC, 0, ln1, 1, C, M.dq, C, C, N),
                             mmjob(G(WK) + l * CC, G(WK) + l * CC, 0, ln1, 1, C, M.dk, C, C, N),
                             mmjob(G(WV) + l * CC, G(WV) + l * CC, 0, ln1, 1, C, M.dv, C, C, N)}};
        dw.job[0].dbias = G(BQ) + l * C; dw.job[1].dbias = G(BK) + l * C; dw.job[2].dbias = G(BV) + l * C;
        PT(P_MATMUL_DW);
        matmul_jobs(&dw);
        /* dres += LN1'(dln1): now the gradient of the layer input */
        PT(P_LAYERNORM_BWD);
        layernorm_backward(M.dres, G(LN1W) + l * C, G(LN1B) + l * C, M.dres, M.dln, x, P(LN1W) + l * C,
                           a->ln1_mean + l * N, a->ln1_rstd + l * N, N, C);
    }
    PT(P_EMBEDDING_BWD);
    embedding_backward(G(TOK), G(POS), M.dres, M.tokens, B, T, C);
}

/* one training step on the batch in model_tokens(): returns the mean loss */
EXPORT(train_step) float train_step(float lr) {
    const int N = M.B * M.T;
    forward();
    PT(P_CROSSENTROPY);
    crossentropy_forward_backward(M.logits, M.losses, M.tokens, M.B, M.T, V);
    double loss = 0;
    for (int n = 0; n < N; n++) loss += M.losses[n];
    M.loss = (float)(loss / N);
    if (fault == 1) __builtin_trap();
    backward();
    if (fault == 2) M.grads[M.nparams / 2] = __builtin_nanf("");
    PT(P_GRAD_NORM);
    M.grad_norm = global_norm(M.grads, M.nparams, M.norm_scratch);
    float gscale = M.grad_norm > M.clip ? (float)(M.clip / (M.grad_norm + 1e-6)) : 1.f;
    M.step++;
    double p1 = 1, p2 = 1;
    for (int i = 0; i < M.step; i++) p1 *= M.b1, p2 *= M.b2;
    PT(P_ADAMW);
    adamw(M.params, M.m, M.v, M.grads, M.nparams, M.seg, NPARAM, lr, M.b1, M.b2, M.eps, M.wd, (float)(1 - p1),
          (float)(1 - p2), gscale);
    return M.loss;
}
