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
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/internal.h"
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
    *c = (dfx_conv2d){cin, cout, k, stride, pad, pad, pad, pad, NULL, NULL, DFX_CONV2D_ALGO_AUTO, 0, NULL};
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
    if (!st)
        st = dfx_conv2d_set_algo(c, DFX_CONV2D_ALGO_AUTO);
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
    free(c->wino_w);
    c->w = c->b = c->wino_w = NULL;
    c->wino_tile = 0;
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

static dfx_status forward_im2col(const dfx_conv2d *c, const float *x, int64_t n, int64_t h,
                                 int64_t w, float *y, const dfx__conv_extra *extra, dfx_arena *a)
{
    geom g = {c->cin, h, w, c->k, c->stride, c->pad_top, c->pad_left, 0, 0};
    dfx_conv2d_out_size(c, h, w, &g.ho, &g.wo);
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

/* ---- Winograd convolution ------------------------------------------------
 *
 * Minimal filtering F(m x m, 3 x 3) (Lavin & Gray 2016, "Fast Algorithms for
 * Convolutional Neural Networks", eq. 8): an output tile of m x m pixels is
 * Y = A^T [U (.) V] A with V = B^T d B the transform of the (m+2) x (m+2)
 * input tile d and U = G g G^T the transform of the 3 x 3 kernel g. Summed
 * over input channels, each of the (m+2)^2 positions of the transformed tile
 * is an independent matrix product, M_p [cout, tiles] = U_p [cout, cin]
 * V_p [cin, tiles] (Lavin & Gray, section 4.1), so the multiplies drop from
 * 9 m^2 to (m+2)^2 per tile and channel pair: 2.25x for F(2x2, 3x3), 4x for
 * F(4x4, 3x3). The kernels are transformed once, at load; the input tiles of
 * a chunk of tile rows (across the items of the batch) are transformed into
 * V, the (m+2)^2 products run side by side on the OpenMP threads, each one a
 * single-threaded sgemm (OpenBLAS's OpenMP build runs one thread inside a
 * parallel region), which spares OpenBLAS's per-call thread handshakes, and
 * the output transform adds the bias and the fused extras as it writes y.
 *
 * F(4x4, 3x3) uses the interpolation points 0, 1, -1, 1/2, -2 (and
 * infinity) instead of Lavin's 0, +-1, +-2: the error of float transforms
 * grows with the spread of the points' powers (Barabasz et al. 2020, "Error
 * analysis and improving the accuracy of Winograd convolution for deep
 * neural networks"), and on random 128..512-channel layers these points
 * measured 3-4e-6 of the output's largest value against 1e-5 for Lavin's
 * (F(2x2, 3x3): 5e-7; the im2col path: 1e-6). */

/* Bytes of transformed inputs and products per chunk of tile rows: the
 * products read V_p and write M_p while both stay in the L3 between the
 * transforms that write and read them. */
#define WINO_BUDGET ((size_t)16 << 20)

/* Channels and tiles from which AUTO takes the Winograd path. Below them the
 * (m+2)^2 products are too small for sgemm to run near its rate and the
 * transforms cost more than the multiplies they save. */
#define WINO_MIN_CHANNELS 16
#define WINO_MIN_TILES 16

/* G for F(2x2, 3x3) (Lavin & Gray, eq. 7) and for F(4x4, 3x3) with the
 * points 0, 1, -1, 1/2, -2: row j is (1, p_j, p_j^2) / prod_{l != j}(p_j -
 * p_l), the last row that of the point at infinity. The matching B^T and A^T
 * are written out in bt2/at2 and bt4/at4. */
static const double wino_g2[4][3] = {
    {1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
static const double wino_g4[6][3] = {
    {1, 0, 0},
    {1.0 / 3, 1.0 / 3, 1.0 / 3},
    {-1.0 / 3, 1.0 / 3, -1.0 / 3},
    {-16.0 / 15, -8.0 / 15, -4.0 / 15},
    {1.0 / 15, -2.0 / 15, 4.0 / 15},
    {0, 0, 1}};

/* U [(m+2)^2, cout, cin], position p = a (m+2) + b holding (G g G^T)[a][b]
 * for every kernel, computed in double and rounded once. */
static float *wino_weights(const float *w, int64_t cin, int64_t cout, int64_t m)
{
    const int64_t alpha = m + 2, kernels = cout * cin;
    const double(*gm)[3] = m == 2 ? wino_g2 : wino_g4;
    float *u = dfx__aligned_alloc((size_t)(alpha * alpha * kernels) * sizeof *u);
    if (!u)
        return NULL;
#pragma omp parallel for if (DFX__NN_PAR(kernels * alpha * alpha * 8)) schedule(static)
    for (int64_t kk = 0; kk < kernels; kk++) {
        const float *g = w + kk * 9;
        double gg[6][3];
        for (int64_t a = 0; a < alpha; a++)
            for (int j = 0; j < 3; j++)
                gg[a][j] = gm[a][0] * g[j] + gm[a][1] * g[3 + j] + gm[a][2] * g[6 + j];
        for (int64_t a = 0; a < alpha; a++)
            for (int64_t b = 0; b < alpha; b++)
                u[(a * alpha + b) * kernels + kk] =
                    (float)(gg[a][0] * gm[b][0] + gg[a][1] * gm[b][1] + gg[a][2] * gm[b][2]);
    }
    return u;
}

/* The 1-D transforms, applied to nt tiles side by side: element q of tile
 * t is s_q[t], result r goes to d_r[t]. Every row is a pointer of its own
 * so that the compiler knows they do not overlap and vectorises along t. */
DFX__NN_INLINE void bt2_rows(const float *restrict s0, const float *restrict s1,
                             const float *restrict s2, const float *restrict s3,
                             float *restrict d0, float *restrict d1, float *restrict d2,
                             float *restrict d3, int64_t nt)
{
    for (int64_t t = 0; t < nt; t++) {
        d0[t] = s0[t] - s2[t];
        d1[t] = s1[t] + s2[t];
        d2[t] = s2[t] - s1[t];
        d3[t] = s1[t] - s3[t];
    }
}

DFX__NN_INLINE void at2_rows(const float *restrict s0, const float *restrict s1,
                             const float *restrict s2, const float *restrict s3,
                             float *restrict d0, float *restrict d1, int64_t nt)
{
    for (int64_t t = 0; t < nt; t++) {
        d0[t] = (s0[t] + s1[t]) + s2[t];
        d1[t] = (s1[t] - s2[t]) - s3[t];
    }
}

/* B^T for the points 0, 1, -1, 1/2, -2, infinity:
 *   [1, -3/2,   -2,  3/2,   1, 0]
 *   [0,   -1,  1/2,  5/2,   1, 0]
 *   [0,    1, -5/2,  1/2,   1, 0]
 *   [0,   -2,   -1,    2,   1, 0]
 *   [0,  1/2,   -1, -1/2,   1, 0]
 *   [0,    1, -3/2,   -2, 3/2, 1] */
DFX__NN_INLINE void bt4_rows(const float *restrict s0, const float *restrict s1,
                             const float *restrict s2, const float *restrict s3,
                             const float *restrict s4, const float *restrict s5,
                             float *restrict d0, float *restrict d1, float *restrict d2,
                             float *restrict d3, float *restrict d4, float *restrict d5, int64_t nt)
{
    for (int64_t t = 0; t < nt; t++) {
        const float x0 = s0[t], x1 = s1[t], x2 = s2[t], x3 = s3[t], x4 = s4[t], x5 = s5[t];
        d0[t] = ((x0 + x4) - 2.0f * x2) + 1.5f * (x3 - x1);
        d1[t] = ((x4 - x1) + 0.5f * x2) + 2.5f * x3;
        d2[t] = ((x4 + x1) - 2.5f * x2) + 0.5f * x3;
        d3[t] = (x4 - x2) + 2.0f * (x3 - x1);
        d4[t] = (x4 - x2) - 0.5f * (x3 - x1);
        d5[t] = ((x1 + x5) - 2.0f * x3) + 1.5f * (x4 - x2);
    }
}

/* A^T: rows (1, p_j^r) for r = 0..3, the infinity column (0, 0, 0, 1) */
DFX__NN_INLINE void at4_rows(const float *restrict s0, const float *restrict s1,
                             const float *restrict s2, const float *restrict s3,
                             const float *restrict s4, const float *restrict s5,
                             float *restrict d0, float *restrict d1, float *restrict d2,
                             float *restrict d3, int64_t nt)
{
    for (int64_t t = 0; t < nt; t++) {
        const float x0 = s0[t], x3 = s3[t], x4 = s4[t];
        const float sum = s1[t] + s2[t], dif = s1[t] - s2[t];
        d0[t] = (x0 + sum) + (x3 + x4);
        d1[t] = (dif + 0.5f * x3) - 2.0f * x4;
        d2[t] = (sum + 0.25f * x3) + 4.0f * x4;
        d3[t] = ((dif + 0.125f * x3) - 8.0f * x4) + s5[t];
    }
}

/* B^T (m = 2 or 4) along rows ss floats apart, into rows ds apart */
DFX__NN_INLINE void bt(int64_t m, const float *s, int64_t ss, float *d, int64_t ds, int64_t nt)
{
    if (m == 2)
        bt2_rows(s, s + ss, s + 2 * ss, s + 3 * ss, d, d + ds, d + 2 * ds, d + 3 * ds, nt);
    else
        bt4_rows(s, s + ss, s + 2 * ss, s + 3 * ss, s + 4 * ss, s + 5 * ss, d, d + ds, d + 2 * ds,
                 d + 3 * ds, d + 4 * ds, d + 5 * ds, nt);
}

DFX__NN_INLINE void at(int64_t m, const float *s, int64_t ss, float *d, int64_t ds, int64_t nt)
{
    if (m == 2)
        at2_rows(s, s + ss, s + 2 * ss, s + 3 * ss, d, d + ds, nt);
    else
        at4_rows(s, s + ss, s + 2 * ss, s + 3 * ss, s + 4 * ss, s + 5 * ss, d, d + ds, d + 2 * ds,
                 d + 3 * ds, nt);
}

/* Phases of a bordered row, e_q[t] = p[t m + q]: split2 and split4 give
 * phases 0..m-1 (a group of exactly m loads per tile, which vectorises
 * cleanly), split4_tail phases 4 and 5 (for t <= nt, so that the scalar
 * iteration the vectoriser keeps for the unread end of the group falls on
 * a tile nobody uses). */
DFX__NN_INLINE void split2(const float *restrict p, float *restrict e0, float *restrict e1,
                           int64_t nt)
{
    for (int64_t t = 0; t < nt; t++) {
        e0[t] = p[2 * t];
        e1[t] = p[2 * t + 1];
    }
}

DFX__NN_INLINE void split4(const float *restrict p, float *restrict e0, float *restrict e1,
                           float *restrict e2, float *restrict e3, int64_t nt)
{
    for (int64_t t = 0; t < nt; t++) {
        e0[t] = p[4 * t];
        e1[t] = p[4 * t + 1];
        e2[t] = p[4 * t + 2];
        e3[t] = p[4 * t + 3];
    }
}

DFX__NN_INLINE void split4_tail(const float *restrict p, float *restrict e4, float *restrict e5,
                                int64_t nt)
{
    for (int64_t t = 0; t <= nt; t++) {
        e4[t] = p[4 * t + 4];
        e5[t] = p[4 * t + 5];
    }
}

/* y[t m + c] = o_c[t] + add (+ res[t m + c]) (+ y[t m + c]) for full tiles
 * t < nt: the inverse of split, with the output's extras. */
DFX__NN_INLINE void merge2(float *restrict y, const float *restrict res, const float *restrict o0,
                           const float *restrict o1, bool acc, float add, int64_t nt)
{
    if (acc && res)
        for (int64_t t = 0; t < nt; t++) {
            y[2 * t] += (o0[t] + res[2 * t]) + add;
            y[2 * t + 1] += (o1[t] + res[2 * t + 1]) + add;
        }
    else if (acc)
        for (int64_t t = 0; t < nt; t++) {
            y[2 * t] += o0[t] + add;
            y[2 * t + 1] += o1[t] + add;
        }
    else if (res)
        for (int64_t t = 0; t < nt; t++) {
            y[2 * t] = (o0[t] + res[2 * t]) + add;
            y[2 * t + 1] = (o1[t] + res[2 * t + 1]) + add;
        }
    else
        for (int64_t t = 0; t < nt; t++) {
            y[2 * t] = o0[t] + add;
            y[2 * t + 1] = o1[t] + add;
        }
}

DFX__NN_INLINE void merge4(float *restrict y, const float *restrict res, const float *restrict o0,
                           const float *restrict o1, const float *restrict o2,
                           const float *restrict o3, bool acc, float add, int64_t nt)
{
    if (acc && res)
        for (int64_t t = 0; t < nt; t++) {
            y[4 * t] += (o0[t] + res[4 * t]) + add;
            y[4 * t + 1] += (o1[t] + res[4 * t + 1]) + add;
            y[4 * t + 2] += (o2[t] + res[4 * t + 2]) + add;
            y[4 * t + 3] += (o3[t] + res[4 * t + 3]) + add;
        }
    else if (acc)
        for (int64_t t = 0; t < nt; t++) {
            y[4 * t] += o0[t] + add;
            y[4 * t + 1] += o1[t] + add;
            y[4 * t + 2] += o2[t] + add;
            y[4 * t + 3] += o3[t] + add;
        }
    else if (res)
        for (int64_t t = 0; t < nt; t++) {
            y[4 * t] = (o0[t] + res[4 * t]) + add;
            y[4 * t + 1] = (o1[t] + res[4 * t + 1]) + add;
            y[4 * t + 2] = (o2[t] + res[4 * t + 2]) + add;
            y[4 * t + 3] = (o3[t] + res[4 * t + 3]) + add;
        }
    else
        for (int64_t t = 0; t < nt; t++) {
            y[4 * t] = o0[t] + add;
            y[4 * t + 1] = o1[t] + add;
            y[4 * t + 2] = o2[t] + add;
            y[4 * t + 3] = o3[t] + add;
        }
}

/* One output row of wo pixels from o_c[t] (rows os floats apart): merge for
 * the full tiles, element by element for a last partial one. */
DFX__NN_INLINE void store_row(int64_t m, float *y, const float *res, const float *o, int64_t os,
                              bool acc, float add, int64_t wo)
{
    const int64_t full = wo / m;
    if (m == 2)
        merge2(y, res, o, o + os, acc, add, full);
    else
        merge4(y, res, o, o + os, o + 2 * os, o + 3 * os, acc, add, full);
    for (int64_t x = full * m; x < wo; x++) {
        const float v = o[(x % m) * os + x / m];
        if (acc)
            y[x] += (res ? v + res[x] : v) + add;
        else
            y[x] = (res ? v + res[x] : v) + add;
    }
}

/* The geometry of one Winograd forward call. */
typedef struct wgeom {
    int64_t m, alpha;
    int64_t cin, cout, h, w, pt, pl, ho, wo;
    int64_t tx, ty;   /* tiles across and down one output image */
} wgeom;

/* Tiles a transform task handles at once: the transforms run along
 * vectors of this many tiles (across tile rows and items, so that small
 * images vectorise as well as large ones) while the task's scratch stays in
 * the L2. */
#define WINO_BLOCK_TILES 256

/* Floats of a bordered row: the (tx - 1) m + alpha columns the tiles
 * cover and the few more split4_tail reads past the last tile, in whole
 * cache lines. */
static int64_t bordered_len(const wgeom *g)
{
    return ((g->tx + 2) * g->m + 15) / 16 * 16;
}

/* Floats of per-thread scratch for a block of nu tile rows: the input
 * transform's zero row, alpha bordered rows per tile row and the alpha
 * phases of each; the output transform's m x alpha rows and m rows of
 * phases. */
static int64_t wino_scratch(const wgeom *g, int64_t nu)
{
    const int64_t tiles = nu * g->tx;
    const int64_t in = (g->w + 15) / 16 * 16 + nu * g->alpha * bordered_len(g) +
                       g->alpha * g->alpha * (tiles + 1);
    const int64_t out = (g->m * g->alpha + g->m) * tiles;
    return in > out ? in : out;
}

/* V's columns for the tile rows [u, u + nu) of the batch (u counts tile
 * rows across items) in input channel ci: v[p * pstride + t] for position p
 * and the block's tile t. The alpha input rows of each tile row (a zero row
 * where the padding is) are transformed along y into rows bordered with
 * the left and right padding, each row is split into its alpha phases
 * (phase q of tile t is bordered column t m + q), and the phases of all the
 * block's tiles are transformed along x straight into V. Each step runs
 * over the whole block before the next reads its results (a load that
 * straddles recent stores waits for them to leave the store buffer), and
 * the last one along vectors of all the block's tiles. */
DFX__NN_INLINE void in_block_body(const wgeom *g, int64_t m, const float *x, int64_t ci, int64_t u,
                                  int64_t nu, float *v, int64_t pstride, float *scr)
{
    const int64_t alpha = m + 2, nt = g->tx, w = g->w, pl = g->pl, zs = bordered_len(g);
    const int64_t T = nu * nt, es = T + 1, used = (nt + 2) * m;
    float *zero = scr, *z = scr + (w + 15) / 16 * 16, *e = z + nu * alpha * zs;
    memset(zero, 0, (size_t)w * sizeof *zero);
    for (int64_t k = 0; k < nu; k++) {
        const int64_t item = (u + k) / g->ty, y0 = (u + k) % g->ty * m - g->pt;
        const float *plane = x + (item * g->cin + ci) * g->h * w, *r[6];
        for (int64_t j = 0; j < alpha; j++)
            r[j] = y0 + j >= 0 && y0 + j < g->h ? plane + (y0 + j) * w : zero;
        float *zk = z + k * alpha * zs;
        for (int64_t a = 0; a < alpha; a++) {
            for (int64_t i = 0; i < pl; i++)
                zk[a * zs + i] = 0.0f;
            for (int64_t i = pl + w; i < used; i++)
                zk[a * zs + i] = 0.0f;
        }
        zk += pl;
        if (m == 2)
            bt2_rows(r[0], r[1], r[2], r[3], zk, zk + zs, zk + 2 * zs, zk + 3 * zs, w);
        else
            bt4_rows(r[0], r[1], r[2], r[3], r[4], r[5], zk, zk + zs, zk + 2 * zs, zk + 3 * zs,
                     zk + 4 * zs, zk + 5 * zs, w);
    }
    for (int64_t k = 0; k < nu; k++)
        for (int64_t a = 0; a < alpha; a++) {
            const float *zr = z + (k * alpha + a) * zs;
            float *ea = e + a * alpha * es + k * nt;
            if (m == 2) {
                split2(zr, ea, ea + es, nt);
                split2(zr + 2, ea + 2 * es, ea + 3 * es, nt);
            } else {
                split4(zr, ea, ea + es, ea + 2 * es, ea + 3 * es, nt);
                split4_tail(zr, ea + 4 * es, ea + 5 * es, nt);
            }
        }
    for (int64_t a = 0; a < alpha; a++)
        bt(m, e + a * alpha * es, es, v + a * alpha * pstride, pstride, T);
}

/* What the output transform adds to the pixels of output channel co. */
typedef struct wout {
    float *y;
    const dfx__conv_extra *extra;
    const dfx_conv2d *c;
} wout;

/* The output pixels of the tile rows [u, u + nu) in output channel co from
 * the products mo[p * pstride + t]: along y, then along x, both along
 * vectors of all the block's tiles, then written row by row with the
 * extras. */
DFX__NN_INLINE void out_block_body(const wgeom *g, int64_t m, const float *mo, int64_t pstride,
                                   int64_t co, int64_t u, int64_t nu, const wout *o, float *scr)
{
    const int64_t alpha = m + 2, nt = g->tx, T = nu * nt, hwo = g->ho * g->wo;
    const dfx__conv_extra *e = o->extra;
    float *s = scr, *r1 = scr + m * alpha * T;
    for (int64_t b = 0; b < alpha; b++)
        at(m, mo + b * pstride, alpha * pstride, s + b * T, alpha * T, T);
    for (int64_t r = 0; r < m; r++) {
        at(m, s + r * alpha * T, T, r1, T, T);
        for (int64_t k = 0; k < nu; k++) {
            const int64_t item = (u + k) / g->ty, oy = (u + k) % g->ty * m + r;
            if (oy >= g->ho)
                continue;
            const int64_t at = (item * g->cout + co) * hwo + oy * g->wo;
            store_row(m, o->y + at, e->residual ? e->residual + at : NULL, r1 + k * nt, T,
                      e->accumulate, channel_add(o->c, e, item, co), g->wo);
        }
    }
}

/* One copy per tile size and instruction set; the AVX2 copies run when the
 * CPU has it. Both perform the same float operations (no FMA contraction),
 * so they give the same bits. */
typedef void (*in_block_fn)(const wgeom *, const float *, int64_t, int64_t, int64_t, float *,
                            int64_t, float *);
typedef void (*out_block_fn)(const wgeom *, const float *, int64_t, int64_t, int64_t, int64_t,
                             const wout *, float *);

#define WINO_COPIES(m, attr, suffix)                                                              \
    attr static void in_block##m##suffix(const wgeom *g, const float *x, int64_t ci, int64_t u,  \
                                         int64_t nu, float *v, int64_t ps, float *scr)           \
    {                                                                                             \
        in_block_body(g, m, x, ci, u, nu, v, ps, scr);                                            \
    }                                                                                             \
    attr static void out_block##m##suffix(const wgeom *g, const float *mo, int64_t ps,           \
                                          int64_t co, int64_t u, int64_t nu, const wout *o,      \
                                          float *scr)                                             \
    {                                                                                             \
        out_block_body(g, m, mo, ps, co, u, nu, o, scr);                                          \
    }
WINO_COPIES(2, , )
WINO_COPIES(4, , )
#ifdef DFX__NN_HAVE_AVX2
WINO_COPIES(2, DFX__NN_AVX2, _avx2)
WINO_COPIES(4, DFX__NN_AVX2, _avx2)
#endif

static void wino_geom(const dfx_conv2d *c, int64_t h, int64_t w, int64_t m, wgeom *g)
{
    *g = (wgeom){m, m + 2, c->cin, c->cout, h, w, c->pad_top, c->pad_left, 0, 0, 0, 0};
    dfx_conv2d_out_size(c, h, w, &g->ho, &g->wo);
    g->tx = (g->wo + m - 1) / m;
    g->ty = (g->ho + m - 1) / m;
}

static dfx_status forward_winograd(const dfx_conv2d *c, const float *x, int64_t n, int64_t h,
                                   int64_t w, float *y, const dfx__conv_extra *extra, dfx_arena *a)
{
    wgeom g;
    wino_geom(c, h, w, c->wino_tile, &g);
    const int64_t cin = c->cin, cout = c->cout, npos = g.alpha * g.alpha;
    const int64_t units = n * g.ty;   /* tile rows of the whole batch */
    /* tile rows per chunk: as many as the budget holds, in equal chunks */
    const size_t row_bytes = (size_t)(npos * (cin + cout) * g.tx) * sizeof(float);
    int64_t per = (int64_t)(WINO_BUDGET / row_bytes);
    per = per < 1 ? 1 : (per > units ? units : per);
    const int64_t chunks = (units + per - 1) / per;
    per = (units + chunks - 1) / chunks;
    /* tile rows per transform block, in equal blocks of a chunk */
    int64_t blk = WINO_BLOCK_TILES / g.tx;
    blk = blk < 1 ? 1 : (blk > per ? per : blk);
    const int64_t blocks = (per + blk - 1) / blk;
    blk = (per + blocks - 1) / blocks;
    /* V and M rows padded to whole cache lines */
    const int64_t ld = (per * g.tx + 15) / 16 * 16;
    const bool par = DFX__NN_PAR(npos * (cin + cout) * per * g.tx);
    int nthreads = 1;
#ifdef _OPENMP
    if (par)
        nthreads = omp_get_max_threads();
#endif
    const int64_t scr_len = wino_scratch(&g, blk);
    const size_t mark = dfx_arena_mark(a);
    float *v = dfx_arena_alloc(a, (size_t)(npos * cin * ld));
    float *mo = v ? dfx_arena_alloc(a, (size_t)(npos * cout * ld)) : NULL;
    float *scratch = mo ? dfx_arena_alloc(a, (size_t)(nthreads * scr_len)) : NULL;
    if (!scratch) {
        dfx_arena_release(a, mark);
        return DFX_ERR_NO_MEMORY;
    }
    in_block_fn in_block = g.m == 2 ? in_block2 : in_block4;
    out_block_fn out_block = g.m == 2 ? out_block2 : out_block4;
#ifdef DFX__NN_HAVE_AVX2
    if (dfx__nn_use_avx2()) {
        in_block = g.m == 2 ? in_block2_avx2 : in_block4_avx2;
        out_block = g.m == 2 ? out_block2_avx2 : out_block4_avx2;
    }
#endif
    const float *u = c->wino_w;
    const wout o = {y, extra, c};
#pragma omp parallel if (par)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *scr = scratch + tid * scr_len;
        for (int64_t u0 = 0; u0 < units; u0 += per) {
            const int64_t nu = units - u0 < per ? units - u0 : per, cols = nu * g.tx;
            const int64_t nb = (nu + blk - 1) / blk;
            /* the barrier after this loop also keeps the previous chunk's
             * output transform (nowait) clear of this chunk's products */
#pragma omp for collapse(2) schedule(dynamic, 4)
            for (int64_t bi = 0; bi < nb; bi++)
                for (int64_t ci = 0; ci < cin; ci++) {
                    const int64_t k = bi * blk, kn = nu - k < blk ? nu - k : blk;
                    in_block(&g, x, ci, u0 + k, kn, v + ci * ld + k * g.tx, cin * ld, scr);
                }
#pragma omp for schedule(dynamic, 1)
            for (int64_t p = 0; p < npos; p++)
                dfx_ops_matmul(false, false, cout, cols, cin, 1.0f, u + p * cout * cin, cin,
                               v + p * cin * ld, ld, 0.0f, mo + p * cout * ld, ld);
#pragma omp for collapse(2) schedule(dynamic, 4) nowait
            for (int64_t bi = 0; bi < nb; bi++)
                for (int64_t co = 0; co < cout; co++) {
                    const int64_t k = bi * blk, kn = nu - k < blk ? nu - k : blk;
                    out_block(&g, mo + co * ld + k * g.tx, cout * ld, co, u0 + k, kn, &o, scr);
                }
        }
    }
    dfx_arena_release(a, mark);
    return DFX_OK;
}

/* Whether this call takes the Winograd path: always when forced, under AUTO
 * when the layer has its transformed kernels and the products are large
 * enough to pay for the transforms. */
static bool use_winograd(const dfx_conv2d *c, int64_t n, int64_t h, int64_t w)
{
    if (c->algo == DFX_CONV2D_ALGO_WINOGRAD_2X2 || c->algo == DFX_CONV2D_ALGO_WINOGRAD_4X4)
        return true;
    if (c->algo != DFX_CONV2D_ALGO_AUTO || !c->wino_w)
        return false;
    wgeom g;
    wino_geom(c, h, w, c->wino_tile, &g);
    return c->cin >= WINO_MIN_CHANNELS && c->cout >= WINO_MIN_CHANNELS &&
           n * g.tx * g.ty >= WINO_MIN_TILES;
}

dfx_status dfx__conv2d_forward_ex(const dfx_conv2d *c, const float *x, int64_t n, int64_t h,
                                  int64_t w, float *y, const dfx__conv_extra *extra, dfx_arena *a)
{
    static const dfx__conv_extra none = {NULL, 0, NULL, false};
    if (!extra)
        extra = &none;
    int64_t ho, wo;
    dfx_conv2d_out_size(c, h, w, &ho, &wo);
    if (n < 0 || h <= 0 || w <= 0 || ho <= 0 || wo <= 0)
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "conv2d: no output for a %lld x %lld input (batch %lld) and a %lld x "
                             "%lld kernel",
                             (long long)h, (long long)w, (long long)n, (long long)c->k,
                             (long long)c->k);
    if (!use_winograd(c, n, h, w))
        return forward_im2col(c, x, n, h, w, y, extra, a);
    const int64_t want = c->algo == DFX_CONV2D_ALGO_WINOGRAD_2X2 ? 2 : 4;
    if (!c->wino_w || (c->algo != DFX_CONV2D_ALGO_AUTO && c->wino_tile != want))
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "conv2d: Winograd F(%lldx%lld, 3x3) forced without its transformed "
                             "kernels (set it with dfx_conv2d_set_algo)",
                             (long long)want, (long long)want);
    if (n == 0)
        return DFX_OK;
    return forward_winograd(c, x, n, h, w, y, extra, a);
}

dfx_status dfx_conv2d_set_algo(dfx_conv2d *c, dfx_conv2d_algo algo)
{
    if (!c || !c->w)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_conv2d_set_algo: no loaded layer");
    const bool fits = c->k == 3 && c->stride == 1;
    int64_t tile = 0;
    switch (algo) {
    case DFX_CONV2D_ALGO_AUTO:
        tile = fits && c->cin >= WINO_MIN_CHANNELS && c->cout >= WINO_MIN_CHANNELS ? 4 : 0;
        break;
    case DFX_CONV2D_ALGO_IM2COL:
        break;
    case DFX_CONV2D_ALGO_WINOGRAD_2X2:
    case DFX_CONV2D_ALGO_WINOGRAD_4X4:
        if (!fits)
            return dfx_error_set(DFX_ERR_UNSUPPORTED,
                                 "conv2d: Winograd needs a 3x3 kernel with stride 1 (this one is "
                                 "%lldx%lld with stride %lld)",
                                 (long long)c->k, (long long)c->k, (long long)c->stride);
        tile = algo == DFX_CONV2D_ALGO_WINOGRAD_2X2 ? 2 : 4;
        break;
    default:
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_conv2d_set_algo: unknown algorithm %d",
                             (int)algo);
    }
    if (tile != c->wino_tile) {
        float *u = NULL;
        if (tile && !(u = wino_weights(c->w, c->cin, c->cout, tile)))
            return dfx_error_set(DFX_ERR_NO_MEMORY,
                                 "conv2d: no memory for the Winograd kernels (%lld x %lld "
                                 "channels)",
                                 (long long)c->cout, (long long)c->cin);
        free(c->wino_w);
        c->wino_w = u;
        c->wino_tile = tile;
    }
    c->algo = algo;
    return DFX_OK;
}

dfx_status dfx_conv2d_forward(const dfx_conv2d *c, const float *x, int64_t n, int64_t h, int64_t w,
                              float *y, dfx_arena *a)
{
    return dfx__conv2d_forward_ex(c, x, n, h, w, y, NULL, a);
}
