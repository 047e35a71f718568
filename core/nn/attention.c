/* Scaled dot-product attention (Vaswani et al. 2017, eq. 1) in blocks of
 * query rows: S = scale Q_blk K^T (sgemm on strided views of the
 * token-major projections), exp(S - rowmax) in one pass while S is in
 * cache, O_blk = P V (sgemm written straight into the output's columns of
 * that head), then O_blk divided by the row sums, which touches dh values a
 * row instead of the nk of P.
 *
 * When the layers may thread (see parallel.c), the blocks are independent
 * tasks on the OpenMP threads, each a single-threaded sgemm, softmax and
 * sgemm on that thread's own scores (OpenBLAS's OpenMP build runs one
 * thread inside a parallel region): with dh = 40..80 the products are too
 * thin for OpenBLAS's threads to share one without handshakes that cost
 * more than the work, and a thread that falls behind simply takes fewer
 * blocks. Otherwise the blocks run one after the other on OpenBLAS's
 * threads, several heads (and batch items) sharing one block when a block
 * of one head is small, so that the softmax runs once per SCORE_BUDGET
 * bytes of scores, however the problem is shaped. Each block of scores
 * stays under SCORE_BUDGET: 4096-token self-attention never materialises
 * heads x 4096 x 4096 floats as diffusers' AttnProcessor does, only one
 * block of one head per thread. */
#include <math.h>
#include <stdbool.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/nn/internal.h"
#include "dfx/nn.h"
#include "dfx/ops.h"

/* Bytes of scores per block: it lives in the L3 between the product that
 * writes it, the softmax, and the product that reads it. */
#define SCORE_BUDGET ((size_t)4 << 20)

/* Lanes of the row reductions: independent accumulators that the compiler
 * maps onto vector registers. */
#define LANES 8

/* x = exp(x - max(x)) over n values; returns the sum (torch's softmax
 * subtracts the maximum too, and divides by the sum afterwards) */
DFX__NN_INLINE float exp_row_body(float *x, int64_t n)
{
    float mx[LANES], sm[LANES];
    for (int j = 0; j < LANES; j++) {
        mx[j] = x[0];
        sm[j] = 0.0f;
    }
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++)
            mx[j] = x[i + j] > mx[j] ? x[i + j] : mx[j];
    float m = mx[0];
    for (int j = 1; j < LANES; j++)
        m = mx[j] > m ? mx[j] : m;
    for (; i < n; i++)
        m = x[i] > m ? x[i] : m;
    for (i = 0; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            float e = dfx__expf(x[i + j] - m);
            x[i + j] = e;
            sm[j] += e;
        }
    float s = 0.0f;
    for (; i < n; i++) {
        x[i] = dfx__expf(x[i] - m);
        s += x[i];
    }
    for (int j = 0; j < LANES; j++)
        s += sm[j];
    return s;
}

static float exp_row(float *x, int64_t n)
{
    return exp_row_body(x, n);
}

#ifdef DFX__NN_HAVE_AVX2
DFX__NN_AVX2 static float exp_row_avx2(float *x, int64_t n)
{
    return exp_row_body(x, n);
}
#endif

static void exp_rows(float *s, int64_t nk, int64_t m, float *sums)
{
#ifdef DFX__NN_HAVE_AVX2
    if (dfx__nn_use_avx2()) {
        for (int64_t r = 0; r < m; r++)
            sums[r] = exp_row_avx2(s + r * nk, nk);
        return;
    }
#endif
    for (int64_t r = 0; r < m; r++)
        sums[r] = exp_row(s + r * nk, nk);
}

/* Causal attention: query q0 + r sees keys 0 .. q0 + r; the later scores
 * of its row become -inf, so exp gives them exactly 0. q0 < 0: no mask. */
static void mask_future(float *s, int64_t nk, int64_t m, int64_t q0)
{
    if (q0 < 0)
        return;
    for (int64_t r = 0; r < m; r++)
        for (int64_t j = q0 + r + 1; j < nk; j++)
            s[r * nk + j] = -INFINITY;
}

/* o [m, dh] (row stride ldo) = softmax(scale q k^T) v for one block of m
 * query rows of one head, with s [m, nk] and sums [m] as scratch; causal_q0
 * is the block's first query when the attention is causal, else -1 */
static void attend_block(const float *q, int64_t ldq, const float *k, int64_t ldk, const float *v,
                         int64_t ldv, int64_t m, int64_t nk, int64_t dh, float scale, float *o,
                         int64_t ldo, float *s, float *sums, int64_t causal_q0)
{
    dfx_ops_matmul(false, true, m, nk, dh, scale, q, ldq, k, ldk, 0.0f, s, nk);
    mask_future(s, nk, m, causal_q0);
    exp_rows(s, nk, m, sums);
    dfx_ops_matmul(false, false, m, dh, nk, 1.0f, s, nk, v, ldv, 0.0f, o, ldo);
    for (int64_t r = 0; r < m; r++) {
        const float inv = 1.0f / sums[r];
        for (int64_t d = 0; d < dh; d++)
            o[r * ldo + d] *= inv;
    }
}

/* Every (item, head, block of `rows` queries) as a task of the OpenMP
 * threads, each with its own scores. */
static dfx_status attention_tasks(const float *q, int64_t ldq, const float *k, int64_t ldk,
                                  const float *v, int64_t ldv, int64_t heads, int64_t units,
                                  int64_t nq, int64_t nk, int64_t dh, float scale, float *out,
                                  int64_t ldo, int64_t rows, int nthreads, bool causal, dfx_arena *a)
{
    const size_t mark = dfx_arena_mark(a);
    const size_t per = (size_t)rows * (size_t)nk;
    float *s = dfx_arena_alloc(a, (size_t)nthreads * per);
    float *sums = s ? dfx_arena_alloc(a, (size_t)nthreads * (size_t)rows) : NULL;
    if (!sums) {
        dfx_arena_release(a, mark);
        return DFX_ERR_NO_MEMORY;
    }
    const int64_t blocks = (nq + rows - 1) / rows, tasks = units * blocks;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (int64_t t = 0; t < tasks; t++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        const int64_t unit = t / blocks, q0 = t % blocks * rows;
        const int64_t bi = unit / heads, h = unit % heads;
        const int64_t m = nq - q0 < rows ? nq - q0 : rows;
        attend_block(q + (bi * nq + q0) * ldq + h * dh, ldq, k + bi * nk * ldk + h * dh, ldk,
                     v + bi * nk * ldv + h * dh, ldv, m, nk, dh, scale,
                     out + (bi * nq + q0) * ldo + h * dh, ldo, s + (size_t)tid * per,
                     sums + (size_t)tid * (size_t)rows, causal ? q0 : -1);
    }
    dfx_arena_release(a, mark);
    return DFX_OK;
}

static dfx_status attention(const float *q, int64_t ldq, const float *k, int64_t ldk, const float *v,
                            int64_t ldv, int64_t b, int64_t heads, int64_t nq, int64_t nk, int64_t dh,
                            float scale, float *out, int64_t ldo, bool causal, dfx_arena *a)
{
    const int64_t width = heads * dh;
    if (b < 0 || heads <= 0 || dh <= 0 || nq < 0 || nk <= 0 || ldq < width || ldk < width ||
        ldv < width || ldo < width)
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "attention: invalid shape (batch %lld, %lld heads of %lld, %lld "
                             "queries, %lld keys, strides %lld/%lld/%lld/%lld)",
                             (long long)b, (long long)heads, (long long)dh, (long long)nq,
                             (long long)nk, (long long)ldq, (long long)ldk, (long long)ldv,
                             (long long)ldo);
    if (b == 0 || nq == 0)
        return DFX_OK;
    /* as many query rows per block as the budget holds (the longer the
     * block, the fewer times K and V are packed and the larger each
     * product), in equal blocks; then, when one unit's block is smaller
     * than the budget, as many (item, head) units per block as fit */
    const size_t row_bytes = (size_t)nk * sizeof(float);
    int64_t rows = (int64_t)(SCORE_BUDGET / row_bytes);
    rows = rows < 1 ? 1 : (rows > nq ? nq : rows);
    const int64_t blocks = (nq + rows - 1) / rows;
    rows = (nq + blocks - 1) / blocks;
    const int64_t units = b * heads;
#ifdef _OPENMP
    const int nthreads = omp_get_max_threads();
    if (nthreads > 1 && units * blocks > 1 && DFX__NN_PAR(units * nq * nk))
        return attention_tasks(q, ldq, k, ldk, v, ldv, heads, units, nq, nk, dh, scale, out, ldo,
                               rows, nthreads < units * blocks ? nthreads : (int)(units * blocks), causal, a);
#endif
    int64_t group = (int64_t)(SCORE_BUDGET / (row_bytes * (size_t)rows));
    group = group < 1 ? 1 : (group > units ? units : group);
    const size_t mark = dfx_arena_mark(a);
    float *s = dfx_arena_alloc(a, (size_t)(group * rows) * (size_t)nk);
    float *sums = s ? dfx_arena_alloc(a, (size_t)(group * rows)) : NULL;
    if (!sums) {
        dfx_arena_release(a, mark);
        return DFX_ERR_NO_MEMORY;
    }
#ifdef DFX__NN_HAVE_AVX2
    const bool avx2 = dfx__nn_use_avx2();
#endif
    for (int64_t u0 = 0; u0 < units; u0 += group) {
        const int64_t gu = units - u0 < group ? units - u0 : group;
        for (int64_t q0 = 0; q0 < nq; q0 += rows) {
            const int64_t m = nq - q0 < rows ? nq - q0 : rows;
            for (int64_t u = 0; u < gu; u++) {
                const int64_t bi = (u0 + u) / heads, h = (u0 + u) % heads;
                dfx_ops_matmul(false, true, m, nk, dh, scale, q + (bi * nq + q0) * ldq + h * dh, ldq,
                               k + bi * nk * ldk + h * dh, ldk, 0.0f, s + u * rows * nk, nk);
                mask_future(s + u * rows * nk, nk, m, causal ? q0 : -1);
            }
            const int64_t total = gu * rows;
#pragma omp parallel for if (DFX__NN_PAR(gu * m * nk)) schedule(static)
            for (int64_t r = 0; r < total; r++) {
                if (r % rows >= m)
                    continue;
#ifdef DFX__NN_HAVE_AVX2
                sums[r] = avx2 ? exp_row_avx2(s + r * nk, nk) : exp_row(s + r * nk, nk);
#else
                sums[r] = exp_row(s + r * nk, nk);
#endif
            }
            for (int64_t u = 0; u < gu; u++) {
                const int64_t bi = (u0 + u) / heads, h = (u0 + u) % heads;
                float *o = out + (bi * nq + q0) * ldo + h * dh;
                dfx_ops_matmul(false, false, m, dh, nk, 1.0f, s + u * rows * nk, nk,
                               v + bi * nk * ldv + h * dh, ldv, 0.0f, o, ldo);
                for (int64_t r = 0; r < m; r++) {
                    const float inv = 1.0f / sums[u * rows + r];
                    for (int64_t d = 0; d < dh; d++)
                        o[r * ldo + d] *= inv;
                }
            }
        }
    }
    dfx_arena_release(a, mark);
    return DFX_OK;
}

dfx_status dfx_nn_attention(const float *q, int64_t ldq, const float *k, int64_t ldk, const float *v,
                            int64_t ldv, int64_t b, int64_t heads, int64_t nq, int64_t nk, int64_t dh,
                            float scale, float *out, int64_t ldo, dfx_arena *a)
{
    return attention(q, ldq, k, ldk, v, ldv, b, heads, nq, nk, dh, scale, out, ldo, false, a);
}

dfx_status dfx_nn_attention_causal(const float *q, int64_t ldq, const float *k, int64_t ldk, const float *v,
                                   int64_t ldv, int64_t b, int64_t heads, int64_t n, int64_t dh, float scale,
                                   float *out, int64_t ldo, dfx_arena *a)
{
    return attention(q, ldq, k, ldk, v, ldv, b, heads, n, n, dh, scale, out, ldo, true, a);
}
