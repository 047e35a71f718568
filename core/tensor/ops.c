/* Elementwise float kernels (OpenMP above a threshold) and sgemm. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#include "dfx/ops.h"

/* Below this many elements threading costs more than it saves. */
#define PAR_MIN 32768

void dfx_ops_scale(float *y, const float *x, double a, int64_t n)
{
    const float af = (float)a;
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        y[i] = af * x[i];
}

void dfx_ops_axpby(float *y, double a, const float *x, double b, int64_t n)
{
    const float af = (float)a, bf = (float)b;
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        y[i] = af * x[i] + bf * y[i];
}

void dfx_ops_lincomb(float *y, int64_t n, int count, const double *c,
                     const float *const *x)
{
    float cf[8];
    const float *xs[8];
    if (count > 8)
        count = 8;
    for (int k = 0; k < count; k++) {
        cf[k] = (float)c[k];
        xs[k] = x[k];
    }
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float acc = cf[0] * xs[0][i];
        for (int k = 1; k < count; k++)
            acc += cf[k] * xs[k][i];
        y[i] = acc;
    }
}

void dfx_ops_clamp(float *y, double lo, double hi, int64_t n)
{
    const float l = (float)lo, h = (float)hi;
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        y[i] = y[i] < l ? l : (y[i] > h ? h : y[i]);
}

bool dfx_ops_all_finite(const float *x, int64_t n)
{
    int bad = 0;
#pragma omp parallel for if (n > PAR_MIN) reduction(| : bad) schedule(static)
    for (int64_t i = 0; i < n; i++)
        bad |= !isfinite(x[i]);
    return !bad;
}

double dfx_ops_norm(const float *x, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return sqrt(s);
}

void dfx_ops_matmul(bool trans_a, bool trans_b, int64_t m, int64_t n,
                    int64_t k, float alpha, const float *a, int64_t lda,
                    const float *b, int64_t ldb, float beta, float *c,
                    int64_t ldc)
{
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n,
                (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta, c,
                (blasint)ldc);
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void dfx_ops_dynamic_threshold(float *x, int64_t batch, int64_t per_item,
                               double ratio, double max_value, float *scratch)
{
    for (int64_t b = 0; b < batch; b++) {
        float *v = x + b * per_item;
        for (int64_t i = 0; i < per_item; i++)
            scratch[i] = fabsf(v[i]);
        qsort(scratch, (size_t)per_item, sizeof *scratch, cmp_float);
        double pos = ratio * (double)(per_item - 1);
        int64_t lo = (int64_t)floor(pos);
        int64_t hi = lo + 1 < per_item ? lo + 1 : lo;
        double q = scratch[lo] + (pos - (double)lo) * (scratch[hi] - scratch[lo]);
        float s = (float)(q < 1 ? 1 : (q > max_value ? max_value : q));
        for (int64_t i = 0; i < per_item; i++) {
            float c = v[i] < -s ? -s : (v[i] > s ? s : v[i]);
            v[i] = c / s;
        }
    }
}

void dfx_ops_linspace_f32(float *out, double start, double end, int64_t n)
{
    const float s = (float)start, e = (float)end;
    if (n <= 0)
        return;
    if (n == 1) {
        out[0] = s;
        return;
    }
    const float step = (e - s) / (float)(n - 1);
    const int64_t half = n / 2;
    const int64_t vec_end = n / 16 * 16;
    int64_t k = 0;
    /* torch's vectorised loop takes two 8-lane vectors per iteration: each
     * vector starts from a fused base and adds lane * step; what is left
     * after the last pair goes through the scalar expression. */
    for (; k < vec_end; k += 8) {
        float base = k < half ? fmaf(step, (float)k, s) : fmaf(-step, (float)(n - k - 1), e);
        for (int j = 0; j < 8; j++)
            out[k + j] = base + (float)j * step;
    }
    for (; k < n; k++)
        out[k] = k < half ? fmaf(step, (float)k, s) : fmaf(-step, (float)(n - k - 1), e);
}

const char *dfx_ops_blas_core(void)
{
    return openblas_get_corename();
}

int dfx_ops_blas_threads(void)
{
    return openblas_get_num_threads();
}
