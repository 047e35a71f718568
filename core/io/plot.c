/* Scatter plots of 2-D samples, for PNG output: a robust equal-aspect view
 * of the points, the data's log-density shaded underneath when the model
 * knows it, a light grid with tick labels, and the points as anti-aliased
 * translucent dots so that their density shows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

/* viridis (matplotlib; van der Walt & Smith 2015), sampled at 0, 0.1, ..., 1:
 * perceptually uniform and monotone in lightness, so the shading reads as
 * density, and legible to colour-blind viewers */
static const float viridis[11][3] = {
    {68, 1, 84},    {72, 36, 117},  {65, 68, 135},  {53, 95, 141},  {42, 120, 142}, {33, 145, 140},
    {34, 168, 132}, {68, 191, 112}, {122, 209, 81}, {189, 223, 38}, {253, 231, 37},
};

/* 5x7 glyphs for tick labels: "0123456789-.", one byte per row, bit 4 = left */
static const unsigned char glyphs[12][7] = {
    {0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e}, {0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e},
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f}, {0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e},
    {0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02}, {0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e},
    {0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e}, {0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08},
    {0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e}, {0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c},
    {0x00, 0x00, 0x00, 0x0e, 0x00, 0x00, 0x00}, {0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c},
};

/* The canvas: linear blending happens in float, rows top to bottom. */
typedef struct canvas {
    float *px;   /* [h][w][3], 0..255 */
    int w, h;
} canvas;

static void blend(canvas *c, int x, int y, const float rgb[3], float a)
{
    if (x < 0 || y < 0 || x >= c->w || y >= c->h || a <= 0)
        return;
    float *p = c->px + ((size_t)y * (size_t)c->w + (size_t)x) * 3;
    for (int k = 0; k < 3; k++)
        p[k] += a * (rgb[k] - p[k]);
}

static void colormap(float t, float out[3])
{
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    float f = t * 10;
    int i = (int)f;
    i = i > 9 ? 9 : i;
    f -= (float)i;
    for (int k = 0; k < 3; k++)
        out[k] = viridis[i][k] + f * (viridis[i + 1][k] - viridis[i][k]);
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The q-quantile (0..1) of n sorted values, linearly interpolated. */
static double quantile(const float *v, int64_t n, double q)
{
    double pos = q * (double)(n - 1);
    int64_t i = (int64_t)pos;
    if (i >= n - 1)
        return v[n - 1];
    return v[i] + (pos - (double)i) * (v[i + 1] - v[i]);
}

/* The 0.5% and 99.5% quantiles of coordinate `axis` of the points: a few
 * outliers do not shrink the bulk of the picture. */
static dfx_status robust_range(const float *xy, int64_t n, int axis, double *lo, double *hi)
{
    float *v = malloc((size_t)n * sizeof *v);
    if (!v)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory for the plot");
    for (int64_t i = 0; i < n; i++)
        v[i] = xy[2 * i + axis];
    qsort(v, (size_t)n, sizeof *v, cmp_float);
    *lo = quantile(v, n, 0.005);
    *hi = quantile(v, n, 0.995);
    free(v);
    return DFX_OK;
}

/* A tick spacing of 1, 2 or 5 times a power of ten giving about 4 to 10
 * lines over `span`. */
static double tick_step(double span)
{
    double p = pow(10, floor(log10(span / 5)));
    static const double m[] = {1, 2, 5, 10};
    for (int i = 0; i < 4; i++)
        if (span / (m[i] * p) <= 10)
            return m[i] * p;
    return 10 * p;
}

/* Draws `s` with its top-left corner at (x, y), `scale` pixels per font
 * pixel; characters without a glyph are skipped. */
static void draw_text(canvas *c, int x, int y, const char *s, int scale, const float rgb[3], float a)
{
    for (; *s; s++, x += 6 * scale) {
        int g = *s >= '0' && *s <= '9' ? *s - '0' : *s == '-' ? 10 : *s == '.' ? 11 : -1;
        if (g < 0)
            continue;
        for (int r = 0; r < 7; r++)
            for (int col = 0; col < 5; col++)
                if (glyphs[g][r] & (0x10 >> col))
                    for (int dy = 0; dy < scale; dy++)
                        for (int dx = 0; dx < scale; dx++)
                            blend(c, x + col * scale + dx, y + r * scale + dy, rgb, a);
    }
}

/* "-1.5", "2", "0.25": the tick value k * step with the decimals the step
 * needs (no "-0", no 0.30000000000000004). */
static void tick_label(char *buf, size_t size, int64_t k, double step)
{
    int dec = (int)ceil(-log10(step) - 1e-9);
    dec = dec < 0 ? 0 : dec > 8 ? 8 : dec;
    if (k == 0)
        snprintf(buf, size, "0");
    else
        snprintf(buf, size, "%.*f", dec, (double)k * step);
}

dfx_status dfx__plot_points(unsigned char *rgb, int width, int height, const float *xy, int64_t n,
                            dfx__log_density_fn log_density, void *ctx)
{
    if (width < 16 || height < 16 || n < 1)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "plot: needs at least one point and 16x16 pixels");
    for (int64_t i = 0; i < 2 * n; i++)
        if (!isfinite(xy[i]))
            return dfx_error_set(DFX_ERR_NUMERIC, "plot: point %lld is not finite", (long long)(i / 2));

    /* the view: the robust box of the points plus a margin, equal aspect */
    double x0, x1, y0, y1;
    dfx_status st;
    if ((st = robust_range(xy, n, 0, &x0, &x1)) || (st = robust_range(xy, n, 1, &y0, &y1)))
        return st;
    const double margin = 0.08;
    double span = fmax(x1 - x0, y1 - y0);
    if (!(span > 1e-12 * fmax(1, fmax(fabs(x0), fabs(y0)))))
        span = fmax(1, fmax(fabs(x0), fabs(y0)));
    const double scale = fmax((x1 - x0 + 2 * margin * span) / width, (y1 - y0 + 2 * margin * span) / height);
    const double cx = 0.5 * (x0 + x1), cy = 0.5 * (y0 + y1);
    const double left = cx - 0.5 * width * scale, top = cy + 0.5 * height * scale;

    canvas c = {malloc((size_t)width * (size_t)height * 3 * sizeof(float)), width, height};
    if (!c.px)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory for a %dx%d plot", width, height);
    const size_t npx = (size_t)width * (size_t)height;

    /* background: log p_data at every pixel centre, in one batch call */
    bool shaded = false;
    if (log_density) {
        int64_t shape[2] = {(int64_t)npx, 2};
        dfx_tensor *grid = NULL;
        double *lp = malloc(npx * sizeof *lp);
        st = lp ? dfx_tensor_create(&grid, DFX_DTYPE_F32, 2, shape)
                : dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory for the plot's density grid");
        if (!st) {
            float *g = grid->data;
            for (int y = 0; y < height; y++)
                for (int x = 0; x < width; x++) {
                    size_t i = (size_t)y * (size_t)width + (size_t)x;
                    g[2 * i] = (float)(left + (x + 0.5) * scale);
                    g[2 * i + 1] = (float)(top - (y + 0.5) * scale);
                }
            st = log_density(ctx, grid, lp);
        }
        if (!st) {
            /* shade (p / p_max)^(1/4) = exp((log p - max log p) / 4): a
             * Gaussian mode becomes a soft hill twice its own width, so thin
             * modes stay visible and a mode k times lighter is only k^(1/4)
             * dimmer; the colour map is perceptually uniform in t */
            double hi = -INFINITY;
            for (size_t i = 0; i < npx; i++)
                hi = isfinite(lp[i]) && lp[i] > hi ? lp[i] : hi;
            for (size_t i = 0; i < npx; i++) {
                float t = isfinite(hi) && lp[i] > -INFINITY ? (float)exp((lp[i] - hi) / 4) : 0;
                colormap(t, c.px + 3 * i);
            }
            shaded = true;
        }
        dfx_tensor_destroy(grid);
        free(lp);
        if (st) {
            free(c.px);
            return dfx_error_prefix(st, "plot: log-density: ");
        }
    }
    if (!shaded)
        for (size_t i = 0; i < 3 * npx; i++)
            c.px[i] = 250;

    /* grid lines at the ticks, the axes through 0 a little stronger */
    const float ink[3] = {255, 255, 255}, dark[3] = {40, 40, 48};
    const float *line = shaded ? ink : dark;
    const double step = tick_step(fmin(width, height) * scale);
    const int font = height >= 1024 ? 3 : height >= 480 ? 2 : 1;
    char label[32];
    for (int64_t k = (int64_t)ceil(left / step); k * step <= left + width * scale; k++) {
        int x = (int)floor((k * step - left) / scale);
        for (int y = 0; y < height; y++)
            blend(&c, x, y, line, k == 0 ? 0.45f : 0.18f);
        tick_label(label, sizeof label, k, step);
        if (x + 3 + 6 * font * (int)strlen(label) < width)
            draw_text(&c, x + 3, height - 8 * font - 3, label, font, line, 0.8f);
    }
    for (int64_t k = (int64_t)ceil((top - height * scale) / step); k * step <= top; k++) {
        int y = (int)floor((top - k * step) / scale);
        for (int x = 0; x < width; x++)
            blend(&c, x, y, line, k == 0 ? 0.45f : 0.18f);
        if (y > 10 * font && y < height - 12 * font) {
            tick_label(label, sizeof label, k, step);
            draw_text(&c, 4, y - 8 * font, label, font, line, 0.8f);
        }
    }

    /* points: discs of radius r with coverage-based anti-aliasing; smaller
     * and more transparent as n grows, so dense regions saturate gradually */
    const double density = 2000.0 / (double)n;
    const double r = fmin(3.0, fmax(1.0, 2.2 * pow(density, 0.15))) * (width / 768.0 > 1 ? width / 768.0 : 1);
    const float alpha = (float)fmin(0.85, fmax(0.04, 0.7 * sqrt(density)));
    const float dot[3] = {255, 250, 240};
    const float dot_dark[3] = {30, 40, 90};
    const float *pc = shaded ? dot : dot_dark;
    for (int64_t i = 0; i < n; i++) {
        const double px = (xy[2 * i] - left) / scale, py = (top - xy[2 * i + 1]) / scale;
        const int xa = (int)floor(px - r - 1), xb = (int)ceil(px + r + 1);
        const int ya = (int)floor(py - r - 1), yb = (int)ceil(py + r + 1);
        if (xb < 0 || yb < 0 || xa >= width || ya >= height)
            continue;
        for (int y = ya; y <= yb; y++)
            for (int x = xa; x <= xb; x++) {
                double d = hypot(x + 0.5 - px, y + 0.5 - py);
                double cover = r + 0.5 - d;
                cover = cover < 0 ? 0 : cover > 1 ? 1 : cover;
                blend(&c, x, y, pc, alpha * (float)cover);
            }
    }

    for (size_t i = 0; i < 3 * npx; i++) {
        float v = c.px[i] + 0.5f;
        rgb[i] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
    free(c.px);
    return DFX_OK;
}
