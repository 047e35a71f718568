/* The tape's arithmetic, written once for an element type REAL and compiled
 * twice (kernels_f32.c, kernels_f64.c): the includer defines REAL, K(name)
 * (the name with its type suffix), GEMM (cblas_sgemm or cblas_dgemm) and
 * EXP, LOG, SQRT, ERF, TANH for REAL. Every forward writes its output;
 * every backward ADDS into the gradients it is given (NULL: not wanted), so
 * a variable used twice gathers both contributions. Sums over many
 * elements accumulate in double. */
#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "core/grad/internal.h"
#include "core/nn/internal.h"

static void K(gemm)(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
                    const REAL *a, int64_t lda, const REAL *b, int64_t ldb, double beta, REAL *c,
                    int64_t ldc)
{
    GEMM(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m,
         (int)n, (int)k, (REAL)alpha, a, (int)lda, b, (int)ldb, (REAL)beta, c, (int)ldc);
}

/* ---- elementwise ------------------------------------------------------ */

static void K(binary_fw)(int op, const void *va, const void *vb, void *vy, int64_t n)
{
    const REAL *a = va, *b = vb;
    REAL *y = vy;
#pragma omp parallel for if (DFX__NN_PAR(n)) schedule(static)
    for (int64_t i = 0; i < n; i++)
        y[i] = op == DFX__G_ADD ? a[i] + b[i] : op == DFX__G_SUB ? a[i] - b[i] : a[i] * b[i];
}

static void K(binary_bw)(int op, const void *va, const void *vb, const void *vdy, void *vda,
                         void *vdb, int64_t n)
{
    const REAL *a = va, *b = vb, *dy = vdy;
    REAL *da = vda, *db = vdb;
#pragma omp parallel for if (DFX__NN_PAR(n)) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        if (da)
            da[i] += op == DFX__G_MUL ? dy[i] * b[i] : dy[i];
        if (db)
            db[i] += op == DFX__G_MUL ? dy[i] * a[i] : op == DFX__G_SUB ? -dy[i] : dy[i];
    }
}

static void K(scale_fw)(const void *vx, void *vy, double s, int64_t n)
{
    const REAL *x = vx;
    REAL *y = vy;
#pragma omp parallel for if (DFX__NN_PAR(n)) schedule(static)
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] * (REAL)s;
}

static void K(scale_bw)(const void *vdy, void *vdx, double s, int64_t n)
{
    const REAL *dy = vdy;
    REAL *dx = vdx;
#pragma omp parallel for if (DFX__NN_PAR(n)) schedule(static)
    for (int64_t i = 0; i < n; i++)
        dx[i] += dy[i] * (REAL)s;
}

static void K(unary_fw)(int op, const void *vx, void *vy, int64_t n)
{
    const REAL *x = vx;
    REAL *y = vy;
#pragma omp parallel for if (DFX__NN_PAR(n)) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const REAL v = x[i];
        switch (op) {
        case DFX_G_SILU: y[i] = v / (1 + EXP(-v)); break;
        case DFX_G_GELU: y[i] = (REAL)0.5 * v * (1 + ERF(v * (REAL)0.70710678118654752)); break;
        case DFX_G_RELU: y[i] = v > 0 ? v : 0; break;
        case DFX_G_TANH: y[i] = TANH(v); break;
        case DFX_G_SIGMOID: y[i] = 1 / (1 + EXP(-v)); break;
        case DFX_G_EXP: y[i] = EXP(v); break;
        case DFX_G_LOG: y[i] = LOG(v); break;
        default: y[i] = v * v; break;
        }
    }
}

static void K(unary_bw)(int op, const void *vx, const void *vy, const void *vdy, void *vdx,
                        int64_t n)
{
    const REAL *x = vx, *y = vy, *dy = vdy;
    REAL *dx = vdx;
#pragma omp parallel for if (DFX__NN_PAR(n)) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const REAL v = x[i];
        REAL d;
        switch (op) {
        case DFX_G_SILU: {
            const REAL s = 1 / (1 + EXP(-v));
            d = s * (1 + v * (1 - s));
            break;
        }
        case DFX_G_GELU:
            d = (REAL)0.5 * (1 + ERF(v * (REAL)0.70710678118654752)) +
                v * EXP(-(REAL)0.5 * v * v) * (REAL)0.39894228040143268;
            break;
        case DFX_G_RELU: d = v > 0 ? 1 : 0; break;
        case DFX_G_TANH: d = 1 - y[i] * y[i]; break;
        case DFX_G_SIGMOID: d = y[i] * (1 - y[i]); break;
        case DFX_G_EXP: d = y[i]; break;
        case DFX_G_LOG: d = 1 / v; break;
        default: d = 2 * v; break;
        }
        dx[i] += dy[i] * d;
    }
}

/* y [n, c, rest] = x + v, v [n, c] (per_item) or [c] */
static void K(add_channel_fw)(const void *vx, const void *vv, void *vy, int64_t n, int64_t c,
                              int64_t rest, bool per_item)
{
    const REAL *x = vx, *v = vv;
    REAL *y = vy;
#pragma omp parallel for collapse(2) if (DFX__NN_PAR(n * c * rest)) schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < c; j++) {
            const REAL add = v[per_item ? i * c + j : j];
            const int64_t o = (i * c + j) * rest;
            for (int64_t r = 0; r < rest; r++)
                y[o + r] = x[o + r] + add;
        }
}

static void K(add_channel_bw)(const void *vdy, void *vdx, void *vdv, int64_t n, int64_t c,
                              int64_t rest, bool per_item)
{
    const REAL *dy = vdy;
    REAL *dx = vdx, *dv = vdv;
    /* channel-outer, so that threads never add into the same dv */
#pragma omp parallel for if (DFX__NN_PAR(n * c * rest)) schedule(static)
    for (int64_t j = 0; j < c; j++)
        for (int64_t i = 0; i < n; i++) {
            const int64_t o = (i * c + j) * rest;
            double s = 0;
            for (int64_t r = 0; r < rest; r++) {
                if (dx)
                    dx[o + r] += dy[o + r];
                s += dy[o + r];
            }
            if (dv)
                dv[per_item ? i * c + j : j] += (REAL)s;
        }
}

/* ---- copies ----------------------------------------------------------- */

static void K(accumulate)(const void *vs, void *vd, int64_t n)
{
    const REAL *s = vs;
    REAL *d = vd;
#pragma omp parallel for if (DFX__NN_PAR(n)) schedule(static)
    for (int64_t i = 0; i < n; i++)
        d[i] += s[i];
}

/* [n, a, b] -> [n, b, a]; backward is the same map with a and b swapped,
 * accumulating */
static void K(transpose12)(const void *vx, void *vy, int64_t n, int64_t a, int64_t b, bool acc)
{
    const REAL *x = vx;
    REAL *y = vy;
#pragma omp parallel for collapse(2) if (DFX__NN_PAR(n * a * b)) schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int64_t p = 0; p < a; p++)
            for (int64_t q = 0; q < b; q++) {
                const REAL v = x[(i * a + p) * b + q];
                REAL *d = &y[(i * b + q) * a + p];
                *d = acc ? *d + v : v;
            }
}

/* copies (or accumulates) rows of `len` elements between strided layouts:
 * item i's block [off, off + len) of a row of `ld` */
static void K(block_copy)(const void *vs, int64_t ld_s, int64_t off_s, void *vd, int64_t ld_d,
                          int64_t off_d, int64_t n, int64_t len, bool acc)
{
    const REAL *s = vs;
    REAL *d = vd;
#pragma omp parallel for if (DFX__NN_PAR(n * len)) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const REAL *si = s + i * ld_s + off_s;
        REAL *di = d + i * ld_d + off_d;
        if (acc)
            for (int64_t j = 0; j < len; j++)
                di[j] += si[j];
        else
            memcpy(di, si, (size_t)len * sizeof(REAL));
    }
}

static void K(upsample2x_fw)(const void *vx, void *vy, int64_t nc, int64_t h, int64_t w)
{
    const REAL *x = vx;
    REAL *y = vy;
#pragma omp parallel for if (DFX__NN_PAR(4 * nc * h * w)) schedule(static)
    for (int64_t p = 0; p < nc; p++)
        for (int64_t i = 0; i < 2 * h; i++)
            for (int64_t j = 0; j < 2 * w; j++)
                y[(p * 2 * h + i) * 2 * w + j] = x[(p * h + i / 2) * w + j / 2];
}

static void K(upsample2x_bw)(const void *vdy, void *vdx, int64_t nc, int64_t h, int64_t w)
{
    const REAL *dy = vdy;
    REAL *dx = vdx;
#pragma omp parallel for if (DFX__NN_PAR(4 * nc * h * w)) schedule(static)
    for (int64_t p = 0; p < nc; p++)
        for (int64_t i = 0; i < 2 * h; i++)
            for (int64_t j = 0; j < 2 * w; j++)
                dx[(p * h + i / 2) * w + j / 2] += dy[(p * 2 * h + i) * 2 * w + j];
}

/* y [nc] = the mean of each of nc rows x [nc, hw], summed in double */
static void K(mean_rows_fw)(const void *vx, void *vy, int64_t nc, int64_t hw)
{
    const REAL *x = vx;
    REAL *y = vy;
#pragma omp parallel for if (DFX__NN_PAR(nc * hw)) schedule(static)
    for (int64_t p = 0; p < nc; p++) {
        double s = 0;
        for (int64_t j = 0; j < hw; j++)
            s += x[p * hw + j];
        y[p] = (REAL)(s / (double)hw);
    }
}

static void K(mean_rows_bw)(const void *vdy, void *vdx, int64_t nc, int64_t hw)
{
    const REAL *dy = vdy;
    REAL *dx = vdx;
#pragma omp parallel for if (DFX__NN_PAR(nc * hw)) schedule(static)
    for (int64_t p = 0; p < nc; p++) {
        const REAL g = (REAL)((double)dy[p] / (double)hw);
        for (int64_t j = 0; j < hw; j++)
            dx[p * hw + j] += g;
    }
}

static void K(embedding_fw)(const void *vt, const int64_t *ids, void *vy, int64_t n, int64_t dim)
{
    const REAL *t = vt;
    REAL *y = vy;
    for (int64_t i = 0; i < n; i++)
        memcpy(y + i * dim, t + ids[i] * dim, (size_t)dim * sizeof(REAL));
}

static void K(embedding_bw)(const void *vdy, const int64_t *ids, void *vdt, int64_t n, int64_t dim)
{
    const REAL *dy = vdy;
    REAL *dt = vdt;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < dim; j++)
            dt[ids[i] * dim + j] += dy[i * dim + j];
}

/* ---- reductions and losses -------------------------------------------- */

static double K(sum)(const void *vx, int64_t n)
{
    const REAL *x = vx;
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += x[i];
    return s;
}

static void K(fill_add)(void *vd, double v, int64_t n)
{
    REAL *d = vd;
    for (int64_t i = 0; i < n; i++)
        d[i] += (REAL)v;
}

static double K(mse_fw)(const void *va, const void *vb, int64_t n)
{
    const REAL *a = va, *b = vb;
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)a[i] - (double)b[i];
        s += d * d;
    }
    return s / (double)n;
}

static void K(mse_bw)(const void *va, const void *vb, double dy, void *vda, void *vdb, int64_t n)
{
    const REAL *a = va, *b = vb;
    REAL *da = vda, *db = vdb;
    const REAL c = (REAL)(2.0 * dy / (double)n);
    for (int64_t i = 0; i < n; i++) {
        const REAL g = c * (a[i] - b[i]);
        if (da)
            da[i] += g;
        if (db)
            db[i] -= g;
    }
}

/* probabilities saved in p [n, k] */
static double K(cross_entropy_fw)(const void *vl, const int64_t *labels, void *vp, int64_t n,
                                  int64_t k)
{
    const REAL *l = vl;
    REAL *p = vp;
    double loss = 0;
    for (int64_t i = 0; i < n; i++) {
        const REAL *row = l + i * k;
        REAL m = row[0];
        for (int64_t j = 1; j < k; j++)
            m = row[j] > m ? row[j] : m;
        double s = 0;
        for (int64_t j = 0; j < k; j++)
            s += (double)EXP(row[j] - m);
        const double lse = (double)m + log(s);
        for (int64_t j = 0; j < k; j++)
            p[i * k + j] = (REAL)exp((double)row[j] - lse);
        loss += lse - (double)row[labels[i]];
    }
    return loss / (double)n;
}

static void K(cross_entropy_bw)(const void *vp, const int64_t *labels, double dy, void *vdl,
                                int64_t n, int64_t k)
{
    const REAL *p = vp;
    REAL *dl = vdl;
    const REAL c = (REAL)(dy / (double)n);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < k; j++)
            dl[i * k + j] += c * (p[i * k + j] - (j == labels[i] ? 1 : 0));
}

/* ---- IDDPM's variational bound ----------------------------------------- */

/* guided-diffusion's approx_standard_normal_cdf: 0.5 (1 + tanh(sqrt(2/pi)
 * (x + 0.044715 x^3))), and its derivative */
static double K(ncdf)(double x, double *d)
{
    const double c = 0.7978845608028654, u = c * (x + 0.044715 * x * x * x);
    const double th = tanh(u);
    if (d)
        *d = 0.5 * (1 - th * th) * c * (1 + 3 * 0.044715 * x * x);
    return 0.5 * (1 + th);
}

/* One element's term of L_vlb in nats and its derivative with respect to
 * the model's log variance lv: KL(N(tm, e^tlv) || N(mm, e^lv)) for t > 0,
 * the discretized Gaussian's negative log-likelihood of x0 (pixels in
 * [-1, 1], 256 levels) for t = 0. */
static double K(vlb_term)(double x0, double tm, double tlv, double mm, double lv, bool first,
                          double *dlv)
{
    if (!first) {
        const double d = tm - mm;
        *dlv = 0.5 * (1 - exp(tlv - lv) - d * d * exp(-lv));
        return 0.5 * (-1 + lv - tlv + exp(tlv - lv) + d * d * exp(-lv));
    }
    const double inv = exp(-0.5 * lv), c = x0 - mm;
    const double xp = (c + 1.0 / 255) * inv, xm = (c - 1.0 / 255) * inv;
    /* d(x)/d(lv) = -x / 2 */
    double dp, dm, lp;
    const double cp = K(ncdf)(xp, &dp), cm = K(ncdf)(xm, &dm);
    double dlp;
    if (x0 < -0.999) {
        lp = log(fmax(cp, 1e-12));
        dlp = cp > 1e-12 ? dp * (-0.5 * xp) / cp : 0;
    } else if (x0 > 0.999) {
        lp = log(fmax(1 - cm, 1e-12));
        dlp = 1 - cm > 1e-12 ? -dm * (-0.5 * xm) / (1 - cm) : 0;
    } else {
        const double delta = cp - cm;
        lp = log(fmax(delta, 1e-12));
        dlp = delta > 1e-12 ? (dp * (-0.5 * xp) - dm * (-0.5 * xm)) / delta : 0;
    }
    *dlv = -dlp;
    return -lp;
}

/* v [n, per] in [-1, 1] maps to the log variance frac * max_log + (1 -
 * frac) * min_log, frac = (v + 1) / 2 (IDDPM eq. 15); c [n, 6] per item:
 * true-mean coefficient of x0 and of x_t (posterior mean), model-mean
 * coefficient of x_t and of eps (through x0's estimate), min_log, max_log;
 * first[n]: t = 0. The mean over all elements of the terms in bits; g, when
 * not NULL, receives d(that)/d(v). */
static double K(iddpm_vlb)(const void *vv, const float *x0, const float *xt, const float *eps,
                           const double *c, const bool *first, int64_t n, int64_t per, void *vg)
{
    const REAL *v = vv;
    REAL *g = vg;
    const double scale = 1.0 / ((double)(n * per) * log(2.0));
    double total = 0;
    for (int64_t i = 0; i < n; i++) {
        const double *ci = c + 6 * i;
        const double tlv = ci[4];
        for (int64_t j = 0; j < per; j++) {
            const int64_t k = i * per + j;
            const double tm = ci[0] * x0[k] + ci[1] * xt[k];
            const double mm = ci[2] * xt[k] + ci[3] * eps[k];
            const double frac = 0.5 * ((double)v[k] + 1);
            const double lv = frac * ci[5] + (1 - frac) * ci[4];
            double dlv;
            total += K(vlb_term)(x0[k], tm, tlv, mm, lv, first[i], &dlv);
            if (g)
                g[k] = (REAL)(dlv * 0.5 * (ci[5] - ci[4]) * scale);
        }
    }
    return total * scale;
}

/* ---- linear ----------------------------------------------------------- */

static void K(linear_fw)(const void *x, const void *w, const void *b, void *y, int64_t rows,
                         int64_t in, int64_t out)
{
    K(gemm)(false, true, rows, out, in, 1.0, x, in, w, in, 0.0, y, out);
    if (b)
        K(add_channel_fw)(y, b, y, rows, out, 1, false);
}

static void K(linear_bw)(const void *x, const void *w, const void *dy, void *dx, void *dw,
                         void *db, int64_t rows, int64_t in, int64_t out)
{
    if (dx)
        K(gemm)(false, false, rows, in, out, 1.0, dy, out, w, in, 1.0, dx, in);
    if (dw)
        K(gemm)(true, false, out, in, rows, 1.0, dy, out, x, in, 1.0, dw, in);
    if (db)
        K(add_channel_bw)(dy, NULL, db, rows, out, 1, false);
}

/* ---- convolution ------------------------------------------------------ */

/* The output columns [lo, hi) whose input column for kernel column kx lies
 * inside the image (the others read the zero padding). */
static void K(inside_cols)(const dfx__conv_geom *g, int64_t kx, int64_t *lo, int64_t *hi)
{
    *lo = 0;
    *hi = g->wo;
    while (*lo < g->wo && *lo * g->stride - g->pad[1] + kx < 0)
        ++*lo;
    while (*hi > *lo && (*hi - 1) * g->stride - g->pad[1] + kx >= g->w)
        --*hi;
}

/* Columns of one image into col (row length ld): row (c, ky, kx), column
 * oy * wo + ox holds x[c, oy * stride - pad_top + ky, ox * stride -
 * pad_left + kx], 0 outside the image. */
static void K(im2col)(const REAL *x, const dfx__conv_geom *g, REAL *col, int64_t ld)
{
    for (int64_t c = 0; c < g->cin; c++)
        for (int64_t ky = 0; ky < g->k; ky++)
            for (int64_t kx = 0; kx < g->k; kx++) {
                REAL *row = col + ((c * g->k + ky) * g->k + kx) * ld;
                int64_t lo, hi;
                K(inside_cols)(g, kx, &lo, &hi);
                for (int64_t oy = 0; oy < g->ho; oy++) {
                    REAL *r = row + oy * g->wo;
                    const int64_t iy = oy * g->stride - g->pad[0] + ky;
                    if (iy < 0 || iy >= g->h) {
                        memset(r, 0, (size_t)g->wo * sizeof(REAL));
                        continue;
                    }
                    const REAL *xr = x + (c * g->h + iy) * g->w - g->pad[1] + kx;
                    for (int64_t ox = 0; ox < lo; ox++)
                        r[ox] = 0;
                    if (g->stride == 1)
                        memcpy(r + lo, xr + lo, (size_t)(hi - lo) * sizeof(REAL));
                    else
                        for (int64_t ox = lo; ox < hi; ox++)
                            r[ox] = xr[ox * g->stride];
                    for (int64_t ox = hi; ox < g->wo; ox++)
                        r[ox] = 0;
                }
            }
}

/* The adjoint of im2col: adds the columns back onto dx. */
static void K(col2im)(const REAL *col, int64_t ld, const dfx__conv_geom *g, REAL *dx)
{
    for (int64_t c = 0; c < g->cin; c++)
        for (int64_t ky = 0; ky < g->k; ky++)
            for (int64_t kx = 0; kx < g->k; kx++) {
                const REAL *row = col + ((c * g->k + ky) * g->k + kx) * ld;
                int64_t lo, hi;
                K(inside_cols)(g, kx, &lo, &hi);
                for (int64_t oy = 0; oy < g->ho; oy++) {
                    const int64_t iy = oy * g->stride - g->pad[0] + ky;
                    if (iy < 0 || iy >= g->h)
                        continue;
                    const REAL *r = row + oy * g->wo;
                    REAL *dr = dx + (c * g->h + iy) * g->w - g->pad[1] + kx;
                    if (g->stride == 1)
                        for (int64_t ox = lo; ox < hi; ox++)
                            dr[ox] += r[ox];
                    else
                        for (int64_t ox = lo; ox < hi; ox++)
                            dr[ox * g->stride] += r[ox];
                }
            }
}

/* Images a chunk of the batch holds: the columns of all of them make one
 * product (few large products run far better than one per image), their
 * size bounded near 16M elements. */
static int64_t K(conv_chunk)(const dfx__conv_geom *g)
{
    const int64_t per = g->cin * g->k * g->k * g->ho * g->wo;
    const int64_t nb = ((int64_t)1 << 24) / (per > 0 ? per : 1);
    return nb < 1 ? 1 : nb > g->n ? g->n : nb;
}

/* scratch: conv2d_scratch(g) elements */
static int64_t K(conv2d_scratch)(const dfx__conv_geom *g)
{
    const int64_t nb = K(conv_chunk)(g), howo = g->ho * g->wo;
    const int64_t ckk = g->cin * g->k * g->k;
    return nb * howo * (ckk + g->cout);
}

static void K(conv2d_fw)(const void *vx, const void *vw, const void *vb, void *vy,
                         const dfx__conv_geom *g, void *vscratch)
{
    const REAL *x = vx;
    REAL *y = vy;
    const int64_t howo = g->ho * g->wo, ckk = g->cin * g->k * g->k, chw = g->cin * g->h * g->w;
    const int64_t nb = K(conv_chunk)(g);
    REAL *col = vscratch, *out = col + nb * howo * ckk;
    for (int64_t i0 = 0; i0 < g->n; i0 += nb) {
        const int64_t m = g->n - i0 < nb ? g->n - i0 : nb, ld = m * howo;
#pragma omp parallel for if (DFX__NN_PAR(ckk * ld)) schedule(static)
        for (int64_t i = 0; i < m; i++)
            K(im2col)(x + (i0 + i) * chw, g, col + i * howo, ld);
        K(gemm)(false, false, g->cout, ld, ckk, 1.0, vw, ckk, col, ld, 0.0, out, ld);
        for (int64_t i = 0; i < m; i++)
            K(block_copy)(out + i * howo, ld, 0, y + (i0 + i) * g->cout * howo, howo, 0, g->cout,
                          howo, false);
    }
    if (vb)
        K(add_channel_fw)(y, vb, y, g->n, g->cout, howo, false);
}

static void K(conv2d_bw)(const void *vx, const void *vw, const void *vdy, void *vdx, void *vdw,
                         void *vdb, const dfx__conv_geom *g, void *vscratch)
{
    const REAL *x = vx, *dy = vdy;
    REAL *dx = vdx;
    const int64_t howo = g->ho * g->wo, ckk = g->cin * g->k * g->k, chw = g->cin * g->h * g->w;
    const int64_t nb = K(conv_chunk)(g);
    REAL *col = vscratch, *dyc = col + nb * howo * ckk;
    for (int64_t i0 = 0; i0 < g->n; i0 += nb) {
        const int64_t m = g->n - i0 < nb ? g->n - i0 : nb, ld = m * howo;
        for (int64_t i = 0; i < m; i++)
            K(block_copy)(dy + (i0 + i) * g->cout * howo, howo, 0, dyc + i * howo, ld, 0, g->cout,
                          howo, false);
        if (vdw) {
#pragma omp parallel for if (DFX__NN_PAR(ckk * ld)) schedule(static)
            for (int64_t i = 0; i < m; i++)
                K(im2col)(x + (i0 + i) * chw, g, col + i * howo, ld);
            K(gemm)(false, true, g->cout, ckk, ld, 1.0, dyc, ld, col, ld, 1.0, vdw, ckk);
        }
        if (dx) {
            K(gemm)(true, false, ckk, ld, g->cout, 1.0, vw, ckk, dyc, ld, 0.0, col, ld);
#pragma omp parallel for if (DFX__NN_PAR(ckk * ld)) schedule(static)
            for (int64_t i = 0; i < m; i++)
                K(col2im)(col + i * howo, ld, g, dx + (i0 + i) * chw);
        }
    }
    if (vdb)
        K(add_channel_bw)(dy, NULL, vdb, g->n, g->cout, howo, false);
}

/* ---- normalisation ---------------------------------------------------- */

/* Normalises each of `sets` sets of `groups` groups: set s, group g holds
 * channels [g*cg, (g+1)*cg) of `rest` elements each, channel c of set s at
 * x + (s * c_total + c) * rest. The affine parameters are per channel.
 * stats [sets * groups * 2]: mean, rstd. Layer norm is rest = 1, groups =
 * 1, channels = dim. */
static void K(norm_fw)(const void *vx, const void *vgamma, const void *vbeta, void *vy,
                       int64_t sets, int64_t channels, int64_t rest, int64_t groups, double eps,
                       double *stats)
{
    const REAL *x = vx, *gamma = vgamma, *beta = vbeta;
    REAL *y = vy;
    const int64_t cg = channels / groups, m = cg * rest;
#pragma omp parallel for collapse(2) if (DFX__NN_PAR(sets * channels * rest)) schedule(static)
    for (int64_t s = 0; s < sets; s++)
        for (int64_t gi = 0; gi < groups; gi++) {
            const int64_t o = (s * channels + gi * cg) * rest;
            double mean = 0, var = 0;
            for (int64_t j = 0; j < m; j++)
                mean += x[o + j];
            mean /= (double)m;
            for (int64_t j = 0; j < m; j++) {
                const double d = x[o + j] - mean;
                var += d * d;
            }
            var /= (double)m;
            const double rstd = 1.0 / sqrt(var + eps);
            stats[2 * (s * groups + gi)] = mean;
            stats[2 * (s * groups + gi) + 1] = rstd;
            for (int64_t c = 0; c < cg; c++) {
                const int64_t ch = gi * cg + c;
                const REAL ga = gamma ? gamma[ch] : 1, be = beta ? beta[ch] : 0;
                for (int64_t r = 0; r < rest; r++) {
                    const int64_t at = o + c * rest + r;
                    y[at] = (REAL)((x[at] - mean) * rstd) * ga + be;
                }
            }
        }
}

static void K(norm_bw)(const void *vx, const void *vgamma, const void *vdy, void *vdx,
                       void *vdgamma, void *vdbeta, int64_t sets, int64_t channels, int64_t rest,
                       int64_t groups, const double *stats)
{
    const REAL *x = vx, *gamma = vgamma, *dy = vdy;
    REAL *dx = vdx, *dgamma = vdgamma, *dbeta = vdbeta;
    const int64_t cg = channels / groups, m = cg * rest;
    /* group-outer, so that threads never add into the same dgamma, dbeta */
#pragma omp parallel for if (DFX__NN_PAR(sets * channels * rest) && groups > 1) schedule(static)
    for (int64_t gi = 0; gi < groups; gi++)
        for (int64_t s = 0; s < sets; s++) {
            const int64_t o = (s * channels + gi * cg) * rest;
            const double mean = stats[2 * (s * groups + gi)];
            const double rstd = stats[2 * (s * groups + gi) + 1];
            double sg = 0, sgx = 0;
            for (int64_t c = 0; c < cg; c++) {
                const int64_t ch = gi * cg + c;
                const double ga = gamma ? gamma[ch] : 1;
                double sdy = 0, sdyx = 0;
                for (int64_t r = 0; r < rest; r++) {
                    const int64_t at = o + c * rest + r;
                    const double xh = (x[at] - mean) * rstd;
                    sdy += dy[at];
                    sdyx += dy[at] * xh;
                }
                sg += sdy * ga;
                sgx += sdyx * ga;
                if (dgamma)
                    dgamma[ch] += (REAL)sdyx;
                if (dbeta)
                    dbeta[ch] += (REAL)sdy;
            }
            if (!dx)
                continue;
            sg /= (double)m;
            sgx /= (double)m;
            for (int64_t c = 0; c < cg; c++) {
                const int64_t ch = gi * cg + c;
                const double ga = gamma ? gamma[ch] : 1;
                for (int64_t r = 0; r < rest; r++) {
                    const int64_t at = o + c * rest + r;
                    const double xh = (x[at] - mean) * rstd;
                    dx[at] += (REAL)(rstd * (dy[at] * ga - sg - xh * sgx));
                }
            }
        }
}

/* ---- attention -------------------------------------------------------- */

/* p [b, heads, nq, nk] keeps the probabilities for backward */
static void K(attention_fw)(const void *vq, const void *vk, const void *vv, void *vo, void *vp,
                            int64_t b, int64_t heads, int64_t nq, int64_t nk, int64_t dh,
                            double scale, bool causal)
{
    const REAL *q = vq, *k = vk, *v = vv;
    REAL *o = vo, *p = vp;
    const int64_t ld = heads * dh;
    for (int64_t i = 0; i < b; i++)
        for (int64_t h = 0; h < heads; h++) {
            const REAL *qi = q + i * nq * ld + h * dh, *ki = k + i * nk * ld + h * dh;
            const REAL *vi = v + i * nk * ld + h * dh;
            REAL *pi = p + (i * heads + h) * nq * nk;
            K(gemm)(false, true, nq, nk, dh, scale, qi, ld, ki, ld, 0.0, pi, nk);
            for (int64_t r = 0; r < nq; r++) {
                REAL *row = pi + r * nk;
                const int64_t valid = causal ? (r < nk ? r + 1 : nk) : nk;
                REAL mx = row[0];
                for (int64_t j = 1; j < valid; j++)
                    mx = row[j] > mx ? row[j] : mx;
                double s = 0;
                for (int64_t j = 0; j < valid; j++) {
                    row[j] = EXP(row[j] - mx);
                    s += row[j];
                }
                for (int64_t j = 0; j < valid; j++)
                    row[j] = (REAL)(row[j] / s);
                for (int64_t j = valid; j < nk; j++)
                    row[j] = 0;
            }
            K(gemm)(false, false, nq, dh, nk, 1.0, pi, nk, vi, ld, 0.0, o + i * nq * ld + h * dh,
                    ld);
        }
}

/* dp is scratch [nq, nk] */
static void K(attention_bw)(const void *vq, const void *vk, const void *vv, const void *vp,
                            const void *vdo, void *vdq, void *vdk, void *vdv, void *vdp, int64_t b,
                            int64_t heads, int64_t nq, int64_t nk, int64_t dh, double scale)
{
    const REAL *q = vq, *k = vk, *v = vv, *p = vp, *dout = vdo;
    REAL *dq = vdq, *dk = vdk, *dv = vdv, *dp = vdp;
    const int64_t ld = heads * dh;
    for (int64_t i = 0; i < b; i++)
        for (int64_t h = 0; h < heads; h++) {
            const int64_t oq = i * nq * ld + h * dh, ok = i * nk * ld + h * dh;
            const REAL *pi = p + (i * heads + h) * nq * nk;
            if (dv)
                K(gemm)(true, false, nk, dh, nq, 1.0, pi, nk, dout + oq, ld, 1.0, dv + ok, ld);
            if (!dq && !dk)
                continue;
            K(gemm)(false, true, nq, nk, dh, 1.0, dout + oq, ld, v + ok, ld, 0.0, dp, nk);
            for (int64_t r = 0; r < nq; r++) {
                const REAL *pr = pi + r * nk;
                REAL *dr = dp + r * nk;
                double s = 0;
                for (int64_t j = 0; j < nk; j++)
                    s += (double)dr[j] * pr[j];
                for (int64_t j = 0; j < nk; j++)
                    dr[j] = pr[j] * (REAL)(dr[j] - s);
            }
            if (dq)
                K(gemm)(false, false, nq, dh, nk, scale, dp, nk, k + ok, ld, 1.0, dq + oq, ld);
            if (dk)
                K(gemm)(true, false, nk, dh, nq, scale, dp, nk, q + oq, ld, 1.0, dk + ok, ld);
        }
}

const dfx__grad_kernels K(dfx__grad_kernels) = {
    .iddpm_vlb = K(iddpm_vlb),
    .elem_size = sizeof(REAL),
    .binary_fw = K(binary_fw),
    .binary_bw = K(binary_bw),
    .scale_fw = K(scale_fw),
    .scale_bw = K(scale_bw),
    .unary_fw = K(unary_fw),
    .unary_bw = K(unary_bw),
    .add_channel_fw = K(add_channel_fw),
    .add_channel_bw = K(add_channel_bw),
    .accumulate = K(accumulate),
    .transpose12 = K(transpose12),
    .block_copy = K(block_copy),
    .upsample2x_fw = K(upsample2x_fw),
    .upsample2x_bw = K(upsample2x_bw),
    .mean_rows_fw = K(mean_rows_fw),
    .mean_rows_bw = K(mean_rows_bw),
    .embedding_fw = K(embedding_fw),
    .embedding_bw = K(embedding_bw),
    .sum = K(sum),
    .fill_add = K(fill_add),
    .mse_fw = K(mse_fw),
    .mse_bw = K(mse_bw),
    .cross_entropy_fw = K(cross_entropy_fw),
    .cross_entropy_bw = K(cross_entropy_bw),
    .linear_fw = K(linear_fw),
    .linear_bw = K(linear_bw),
    .conv2d_scratch = K(conv2d_scratch),
    .conv2d_fw = K(conv2d_fw),
    .conv2d_bw = K(conv2d_bw),
    .norm_fw = K(norm_fw),
    .norm_bw = K(norm_bw),
    .attention_fw = K(attention_fw),
    .attention_bw = K(attention_bw),
};
