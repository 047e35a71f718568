/* dfx_conv2d: torch.nn.Conv2d (square kernel, stride, zero padding that may
 * differ per side) as im2col + sgemm. For each output tile, col [cin k k,
 * cols] gathers the input patches and Y[:, cols] = W col runs as one sgemm,
 * accumulating onto a Y tile prefilled with the bias (and whatever the
 * caller fuses in, see dfx__conv_extra), so the bias costs no pass of its
 * own. Large images are cut into bands of output rows, so the col buffer
 * stays near COL_BUDGET however large the image; small images are batched
 * several items to a product so that sgemm sees enough columns. 1x1 stride-1
 * unpadded convolutions need no col buffer: the input is already the matrix. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/nn/internal.h"
#include "dfx/nn.h"
#include "dfx/ops.h"

/* Bytes of im2col buffer per tile: large enough that sgemm runs near its
 * peak (n in the hundreds to thousands), small enough to live in the L3
 * between its fill and the product that reads it. */
#define COL_BUDGET ((size_t)8 << 20)

/* Below this many output pixels per item, items are batched into one
 * product (sgemm with a few dozen columns runs far below its peak). */
#define MIN_COLS 1024

/* Output rows shorter than this are filled element by element: for the
 * small images of low-resolution levels, three library calls per row cost
 * more than the copy. */
#define SHORT_ROW 32

dfx_status dfx_conv2d_load(dfx_conv2d *c, dfx_weights *w, const char *prefix, int64_t cin,
                           int64_t cout, int64_t k, int64_t stride, int64_t pad, bool bias)
{
    if (!c)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_conv2d_load: NULL layer");
    *c = (dfx_conv2d){cin, cout, k, stride, pad, pad, pad, pad, NULL, NULL};
    if (cin <= 0 || cout <= 0 || k <= 0 || stride <= 0 || pad < 0)
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "%s: convolution '%s': invalid geometry (cin %lld, cout %lld, kernel "
                             "%lld, stride %lld, padding %lld)",
                             dfx_weights_path(w), prefix, (long long)cin, (long long)cout,
                             (long long)k, (long long)stride, (long long)pad);
    char wn[512], bn[512];
    snprintf(wn, sizeof wn, "%s%sweight", prefix, *prefix ? "." : "");
    snprintf(bn, sizeof bn, "%s%sbias", prefix, *prefix ? "." : "");
    const char *wnames[2] = {wn, NULL};
    const int64_t shape[4] = {cout, cin, k, k}, flat[2] = {cout, cin};
    dfx_status st = dfx__weights_load_alt(w, wnames, 4, shape, k == 1 ? 2 : 0, flat, &c->w);
    if (!st && bias)
        st = dfx_weights_load(w, bn, 1, &cout, &c->b);
    if (st)
        dfx_conv2d_free(c);
    return st;
}

void dfx_conv2d_free(dfx_conv2d *c)
{
    if (!c)
        return;
    free(c->w);
    free(c->b);
    c->w = c->b = NULL;
}

void dfx_conv2d_out_size(const dfx_conv2d *c, int64_t h, int64_t w, int64_t *ho, int64_t *wo)
{
    int64_t sh = h + c->pad_top + c->pad_bottom - c->k, sw = w + c->pad_left + c->pad_right - c->k;
    *ho = sh < 0 ? 0 : sh / c->stride + 1;
    *wo = sw < 0 ? 0 : sw / c->stride + 1;
}

/* The geometry of one forward call. */
typedef struct geom {
    int64_t cin, h, w, k, s, pt, pl, ho, wo;
} geom;

/* First output column whose input column ox * s - pl + kx is >= 0, and one
 * past the last whose input column is < w. */
static void valid_cols(const geom *g, int64_t kx, int64_t *lo, int64_t *hi)
{
    int64_t a = g->pl - kx;
    *lo = a <= 0 ? 0 : (a + g->s - 1) / g->s;
    int64_t b = g->w - 1 + g->pl - kx;
    *hi = b < 0 ? 0 : b / g->s + 1;
    if (*hi > g->wo)
        *hi = g->wo;
    if (*lo > *hi)
        *lo = *hi;
}

/* The k*k rows of col belonging to input channel ci of one item, for output
 * rows [r0, r1), written at column offset `off` of rows `ld` floats long.
 * Writes are sequential; the input rows read stay in cache across the k*k
 * kernel offsets. */
static void im2col_channel(const geom *g, const float *plane, float *col, int64_t ld,
                           int64_t off, int64_t ci, int64_t r0, int64_t r1)
{
    const int64_t k = g->k, s = g->s, wo = g->wo;
    for (int64_t ky = 0; ky < k; ky++)
        for (int64_t kx = 0; kx < k; kx++) {
            float *dst = col + ((ci * k + ky) * k + kx) * ld + off;
            int64_t lo, hi;
            valid_cols(g, kx, &lo, &hi);
            for (int64_t oy = r0; oy < r1; oy++, dst += wo) {
                int64_t iy = oy * s - g->pt + ky;
                if (iy < 0 || iy >= g->h || lo == hi) {
                    memset(dst, 0, (size_t)wo * sizeof *dst);
                    continue;
                }
                const float *src = plane + iy * g->w - g->pl + kx;
                if (s == 1 && wo >= SHORT_ROW) {
                    memset(dst, 0, (size_t)lo * sizeof *dst);
                    memcpy(dst + lo, src + lo, (size_t)(hi - lo) * sizeof *dst);
                    memset(dst + hi, 0, (size_t)(wo - hi) * sizeof *dst);
                } else {
                    int64_t ox = 0;
                    for (; ox < lo; ox++)
                        dst[ox] = 0.0f;
                    for (; ox < hi; ox++)
                        dst[ox] = src[ox * s];
                    for (; ox < wo; ox++)
                        dst[ox] = 0.0f;
                }
            }
        }
}

/* dst[j] = (acc ? dst[j] : 0) + (res ? res[j] : 0) + add, j < m */
static void init_row(float *dst, const float *res, bool acc, float add, int64_t m)
{
    if (acc && res)
        for (int64_t j = 0; j < m; j++)
            dst[j] += res[j] + add;
    else if (acc)
        for (int64_t j = 0; j < m; j++)
            dst[j] += add;
    else if (res)
        for (int64_t j = 0; j < m; j++)
            dst[j] = res[j] + add;
    else
        for (int64_t j = 0; j < m; j++)
            dst[j] = add;
}

/* The per-channel term for channel co of item i: the bias and the item's
 * extra bias. */
static float channel_add(const dfx_conv2d *c, const dfx__conv_extra *e, int64_t i, int64_t co)
{
    return (c->b ? c->b[co] : 0.0f) + (e->item_bias ? e->item_bias[i * e->item_bias_ld + co] : 0.0f);
}

dfx_status dfx__conv2d_forward_ex(const dfx_conv2d *c, const float *x, int64_t n, int64_t h,
                                  int64_t w, float *y, const dfx__conv_extra *extra, dfx_arena *a)
{
    static const dfx__conv_extra none = {NULL, 0, NULL, false};
    if (!extra)
        extra = &none;
    geom g = {c->cin, h, w, c->k, c->stride, c->pad_top, c->pad_left, 0, 0};
    dfx_conv2d_out_size(c, h, w, &g.ho, &g.wo);
    if (n < 0 || h <= 0 || w <= 0 || g.ho <= 0 || g.wo <= 0)
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "conv2d: no output for a %lld x %lld input (batch %lld) and a %lld x "
                             "%lld kernel",
                             (long long)h, (long long)w, (long long)n, (long long)c->k,
                             (long long)c->k);
    const int64_t cout = c->cout, hwo = g.ho * g.wo, hwi = h * w;
    const int64_t kk = c->cin * c->k * c->k;
    const bool direct = c->k == 1 && c->stride == 1 && !c->pad_top && !c->pad_left &&
                        !c->pad_bottom && !c->pad_right;
    const bool has_add = c->b || extra->item_bias;
    const size_t mark = dfx_arena_mark(a);

    /* items per product and output rows per tile */
    int64_t group = 1, rows = g.ho;
    if (hwo < MIN_COLS && n > 1 && !direct) {
        group = (MIN_COLS + hwo - 1) / hwo;
        int64_t fit = (int64_t)(COL_BUDGET / ((size_t)kk * (size_t)hwo * sizeof(float)));
        group = group < fit ? group : fit;
        group = group < 1 ? 1 : (group > n ? n : group);
        /* equal groups: 16 items in groups of 14 and 2 would leave the
         * second product too small */
        const int64_t groups = (n + group - 1) / group;
        group = (n + groups - 1) / groups;
    }
    if (group == 1 && !direct) {
        int64_t fit = (int64_t)(COL_BUDGET / ((size_t)kk * (size_t)g.wo * sizeof(float)));
        fit = fit < 1 ? 1 : fit;
        int64_t tiles = (g.ho + fit - 1) / fit;
        rows = (g.ho + tiles - 1) / tiles;
    }
    const bool batched = group > 1;
    float *col = NULL, *out = NULL;
    if (!direct) {
        col = dfx_arena_alloc(a, (size_t)kk * (size_t)(batched ? group * hwo : rows * g.wo));
        if (!col) {
            dfx_arena_release(a, mark);
            return DFX_ERR_NO_MEMORY;
        }
    }
    if (batched && !(out = dfx_arena_alloc(a, (size_t)cout * (size_t)(group * hwo)))) {
        dfx_arena_release(a, mark);
        return DFX_ERR_NO_MEMORY;
    }

    for (int64_t i0 = 0; i0 < n; i0 += group) {
        const int64_t gn = n - i0 < group ? n - i0 : group;
        for (int64_t r0 = 0; r0 < g.ho; r0 += rows) {
            const int64_t r1 = r0 + rows < g.ho ? r0 + rows : g.ho;
            const int64_t cols = batched ? gn * hwo : (r1 - r0) * g.wo;
            float *yt = y + i0 * cout * hwo + r0 * g.wo;
            const bool fill = !batched && (has_add || extra->residual);
            const int64_t work = kk * cols + (fill ? cout * cols : 0);
#pragma omp parallel if (DFX__NN_PAR(work))
            {
                if (!direct) {
#pragma omp for schedule(static) collapse(2) nowait
                    for (int64_t i = 0; i < gn; i++)
                        for (int64_t ci = 0; ci < g.cin; ci++)
                            im2col_channel(&g, x + ((i0 + i) * g.cin + ci) * hwi, col, cols,
                                           i * hwo, ci, r0, r1);
                }
                if (fill) {
#pragma omp for schedule(static)
                    for (int64_t co = 0; co < cout; co++) {
                        const float *res = extra->residual;
                        if (res)
                            res += (i0 * cout + co) * hwo + r0 * g.wo;
                        init_row(yt + co * hwo, res, extra->accumulate, channel_add(c, extra, i0, co),
                                 cols);
                    }
                }
            }
            if (batched) {
                dfx_ops_matmul(false, false, cout, cols, kk, 1.0f, c->w, kk, col, cols, 0.0f, out,
                               cols);
                /* scatter the items' columns to their NCHW planes with the
                 * bias and extras */
#pragma omp parallel for collapse(2) if (DFX__NN_PAR(cout * cols)) schedule(static)
                for (int64_t i = 0; i < gn; i++)
                    for (int64_t co = 0; co < cout; co++) {
                        const int64_t item = i0 + i, plane = (item * cout + co) * hwo;
                        const float add = channel_add(c, extra, item, co);
                        float *dst = y + plane;
                        const float *src = out + co * cols + i * hwo;
                        const float *res = extra->residual ? extra->residual + plane : NULL;
                        if (extra->accumulate)
                            for (int64_t j = 0; j < hwo; j++)
                                dst[j] += src[j] + (res ? res[j] : 0.0f) + add;
                        else
                            for (int64_t j = 0; j < hwo; j++)
                                dst[j] = src[j] + (res ? res[j] : 0.0f) + add;
                    }
            } else {
                const float *b = direct ? x + i0 * g.cin * hwi + r0 * g.wo : col;
                const int64_t ldb = direct ? hwi : cols;
                dfx_ops_matmul(false, false, cout, cols, kk, 1.0f, c->w, kk, b, ldb,
                               fill || extra->accumulate ? 1.0f : 0.0f, yt, hwo);
            }
        }
    }
    dfx_arena_release(a, mark);
    return DFX_OK;
}

dfx_status dfx_conv2d_forward(const dfx_conv2d *c, const float *x, int64_t n, int64_t h, int64_t w,
                              float *y, dfx_arena *a)
{
    return dfx__conv2d_forward_ex(c, x, n, h, w, y, NULL, a);
}
