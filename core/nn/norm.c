/* Group and layer normalisation (torch.nn.GroupNorm, torch.nn.LayerNorm):
 * one pass for the statistics, accumulated in double so that large groups
 * (a 64x64x10 group holds 40960 values) lose nothing, and one pass that
 * applies the normalisation folded into a per-channel multiply-add, with the
 * SiLU that follows almost every group norm in a diffusion network fused in. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/nn/internal.h"
#include "dfx/nn.h"

/* Sum and sum of squares of x[0..m) in double, in eight independent lanes so
 * that the loop vectorises (a single accumulator is bound by add latency). */
static void moments(const float *x, int64_t m, double *sum, double *sumsq)
{
    double s[8] = {0}, q[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= m; i += 8)
        for (int j = 0; j < 8; j++) {
            double v = x[i + j];
            s[j] += v;
            q[j] += v * v;
        }
    for (; i < m; i++) {
        double v = x[i];
        s[0] += v;
        q[0] += v * v;
    }
    double ts = 0, tq = 0;
    for (int j = 0; j < 8; j++) {
        ts += s[j];
        tq += q[j];
    }
    *sum = ts;
    *sumsq = tq;
}

/* y = ((x - mhi) - mlo) * a + b over m values, then SiLU when asked. The
 * mean enters as a float pair (mhi + mlo = the double mean to 48 bits):
 * x - mhi is exact for x near the mean, so a mean far larger than the spread
 * costs no accuracy, where torch's folded x * scale + bias cancels digits. */
DFX__NN_INLINE void affine_body(const float *x, float *y, int64_t m, float mhi, float mlo, float a,
                                float b, bool silu)
{
    if (silu)
        for (int64_t i = 0; i < m; i++) {
            float v = ((x[i] - mhi) - mlo) * a + b;
            y[i] = v / (1.0f + dfx__expf(-v));
        }
    else
        for (int64_t i = 0; i < m; i++)
            y[i] = ((x[i] - mhi) - mlo) * a + b;
}

static void affine_base(const float *x, float *y, int64_t m, float mhi, float mlo, float a, float b,
                        bool silu)
{
    affine_body(x, y, m, mhi, mlo, a, b, silu);
}

#ifdef DFX__NN_HAVE_AVX2
DFX__NN_AVX2 static void affine_avx2(const float *x, float *y, int64_t m, float mhi, float mlo,
                                     float a, float b, bool silu)
{
    affine_body(x, y, m, mhi, mlo, a, b, silu);
}
#endif

static char *join(char *buf, size_t size, const char *prefix, const char *leaf)
{
    snprintf(buf, size, "%s%s%s", prefix, *prefix ? "." : "", leaf);
    return buf;
}

/* prefix.weight and prefix.bias, both [len]. */
static dfx_status load_affine(dfx_weights *w, const char *prefix, int64_t len, float **gamma,
                              float **beta)
{
    char name[512];
    dfx_status st = dfx_weights_load(w, join(name, sizeof name, prefix, "weight"), 1, &len, gamma);
    if (!st)
        st = dfx_weights_load(w, join(name, sizeof name, prefix, "bias"), 1, &len, beta);
    if (st) {
        free(*gamma);
        *gamma = NULL;
    }
    return st;
}

dfx_status dfx_group_norm_load(dfx_group_norm *g, dfx_weights *w, const char *prefix,
                               int64_t groups, int64_t channels, double eps)
{
    if (!g)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_group_norm_load: NULL layer");
    *g = (dfx_group_norm){groups, channels, eps, NULL, NULL};
    if (groups <= 0 || channels % groups != 0)
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "%s: group norm '%s': %lld channels do not split into %lld groups",
                             dfx_weights_path(w), prefix, (long long)channels, (long long)groups);
    return load_affine(w, prefix, channels, &g->gamma, &g->beta);
}

void dfx_group_norm_free(dfx_group_norm *g)
{
    if (!g)
        return;
    free(g->gamma);
    free(g->beta);
    g->gamma = g->beta = NULL;
}

void dfx__group_norm_modulated(const dfx_group_norm *g, const float *x, int64_t n, int64_t hw,
                               float *y, bool silu, const float *scale, const float *shift,
                               int64_t ld)
{
    const int64_t groups = g->groups, c = g->channels, cpg = c / groups;
    const int64_t tasks = n * groups, m = cpg * hw;
    void (*affine)(const float *, float *, int64_t, float, float, float, float, bool) = affine_base;
#ifdef DFX__NN_HAVE_AVX2
    if (dfx__nn_use_avx2())
        affine = affine_avx2;
#endif
#pragma omp parallel for if (DFX__NN_PAR(n * c * hw)) schedule(static)
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t item = t / groups, ch0 = (t % groups) * cpg;
        const float *xs = x + (item * c + ch0) * hw;
        float *ys = y + (item * c + ch0) * hw;
        double sum, sumsq;
        moments(xs, m, &sum, &sumsq);
        double mean = sum / (double)m;
        double var = sumsq / (double)m - mean * mean;  /* biased, as torch */
        double rstd = 1.0 / sqrt((var > 0 ? var : 0) + g->eps);
        const float mhi = (float)mean, mlo = (float)(mean - mhi);
        for (int64_t k = 0; k < cpg; k++) {
            const int64_t ch = ch0 + k;
            double a = rstd * g->gamma[ch], b = g->beta[ch];
            if (scale) {
                /* norm(x) * (1 + scale) + shift, folded into the affine */
                double s1 = 1.0 + (double)scale[item * ld + ch];
                a *= s1;
                b = b * s1 + shift[item * ld + ch];
            }
            affine(xs + k * hw, ys + k * hw, hw, mhi, mlo, (float)a, (float)b, silu);
        }
    }
}

void dfx_group_norm_forward(const dfx_group_norm *g, const float *x, int64_t n, int64_t hw,
                            float *y, bool silu)
{
    dfx__group_norm_modulated(g, x, n, hw, y, silu, NULL, NULL, 0);
}

dfx_status dfx_layer_norm_load(dfx_layer_norm *l, dfx_weights *w, const char *prefix, int64_t dim,
                               double eps)
{
    if (!l)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_layer_norm_load: NULL layer");
    *l = (dfx_layer_norm){dim, eps, NULL, NULL};
    return load_affine(w, prefix, dim, &l->gamma, &l->beta);
}

void dfx_layer_norm_free(dfx_layer_norm *l)
{
    if (!l)
        return;
    free(l->gamma);
    free(l->beta);
    l->gamma = l->beta = NULL;
}

void dfx_layer_norm_forward(const dfx_layer_norm *l, const float *x, int64_t rows, float *y)
{
    const int64_t dim = l->dim;
#pragma omp parallel for if (DFX__NN_PAR(rows * dim)) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float *yr = y + r * dim;
        double sum, sumsq;
        moments(xr, dim, &sum, &sumsq);
        double mean = sum / (double)dim;
        double var = sumsq / (double)dim - mean * mean;
        double rstd = 1.0 / sqrt((var > 0 ? var : 0) + l->eps);
        const float mhi = (float)mean, mlo = (float)(mean - mhi), rf = (float)rstd;
        for (int64_t i = 0; i < dim; i++)
            yr[i] = ((xr[i] - mhi) - mlo) * rf * l->gamma[i] + l->beta[i];
    }
}
