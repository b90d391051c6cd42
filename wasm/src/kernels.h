/* Kernel entry points (kernels.c). Shapes in each comment; see base.h for the legend. */
#ifndef TG_KERNELS_H
#define TG_KERNELS_H
#include "base.h"

/* c (M, N) = init + bias + a (M, K, strided by rsa, csa) @ b (K, N), or @ b^T with b
 * (N, K) when bt (x @ W^T for input gradients, the tied head) */
typedef struct {
    float *c; const float *init, *bias, *a, *b; size_t rsa, csa; int M, N, K, bt;
    float *dbias; /* optional, b not transposed: dbias (N) += sum over b's K rows, row order 0..K-1 */
} MatmulJob;
typedef struct { int n; MatmulJob job[3]; } MatmulJobs;
/* a job in the argument order of matmul() */
static inline MatmulJob mmjob(float *c, const float *init, const float *bias, const float *a, size_t rsa, size_t csa,
                              const float *b, int M, int N, int K) {
    return (MatmulJob){c, init, bias, a, b, rsa, csa, M, N, K, 0, 0};
}
/* the same with b^T: b is (N, K) row-major */
static inline MatmulJob mmjob_bt(float *c, const float *init, const float *bias, const float *a, size_t rsa,
                                 size_t csa, const float *b, int M, int N, int K) {
    return (MatmulJob){c, init, bias, a, b, rsa, csa, M, N, K, 1, 0};
}
#define MAX_HEAD_DIM 128 /* attention keeps 4 x head_dim tiles on the stack */
void matmul_jobs(const MatmulJobs *js);
void matmul_share_plain(const MatmulJob *J, int tid, int nth); /* matmul.c */
void matmul_share_fma(const MatmulJob *J, int tid, int nth);
void matmul_share_plain_splat(const MatmulJob *J, int tid, int nth);
void matmul_share_fma_splat(const MatmulJob *J, int tid, int nth);
void matmul_share_plain_bcast(const MatmulJob *J, int tid, int nth);
void matmul_share_fma_bcast(const MatmulJob *J, int tid, int nth);
void matmul(float *c, const float *init, const float *bias, const float *a, size_t rsa, size_t csa,
            const float *b, int M, int N, int K);
void matmul_bt(float *c, const float *init, const float *bias, const float *a, size_t rsa, size_t csa,
               const float *b, int M, int N, int K);
/* weight gradient c (M, N) += a @ b with dbias (N) += column sums of b (K, N), fused */
void matmul_dw(float *c, const float *a, size_t rsa, size_t csa, const float *b, int M, int N, int K, float *dbias);

void embedding_forward(float *out, const int *ids, const float *tok, const float *pos, int B, int T, int C);
void embedding_backward(float *dtok, float *dpos, const float *dout, const int *ids, int B, int T, int C);
void layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w, const float *b, int N,
                       int C);
void layernorm_backward(float *dx, float *dw, float *db, const float *init, const float *dout, const float *x,
                        const float *w, const float *mean, const float *rstd, int N, int C);
void gelu_forward(float *out, const float *x, size_t n);
void gelu_backward(float *dx, const float *x, const float *dout, size_t n);
/* attention.c; scratch: one buffer of attention_scratch_floats(T, hd) per thread */
void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T, int C,
                       int H, float *const *scratch);
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                        const float *v, const float *out, const float *lse, int B, int T, int C, int H,
                        float *const *scratch);
size_t attention_scratch_floats(int T, int hd);
void crossentropy_forward_backward(float *logits, float *losses, const int *ids, int B, int T, int V);
double global_norm(const float *g, size_t n, double *scratch);
size_t global_norm_scratch(size_t n);

typedef struct { size_t offset, size; int decay; } Segment;
void adamw(float *p, float *m, float *v, const float *g, size_t n, const Segment *seg, int nseg, float lr, float b1,
           float b2, float eps, float wd, float bc1, float bc2, float gscale);
void zero_parallel(float *p, size_t n);
#endif
