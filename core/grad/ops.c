/* The tape's operations: shape checks, the forward through the tape's
 * kernels, and the record of what backward needs. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/grad/internal.h"

#define IN(...) ((dfx_var *const[]){__VA_ARGS__})
#define N_IN(...) ((int)(sizeof(IN(__VA_ARGS__)) / sizeof(dfx_var *)))
/* the output variable and, when it needs a gradient, its node */
#define OUT(t, ndim, shape, ...) dfx__tape_out(t, ndim, shape, IN(__VA_ARGS__), N_IN(__VA_ARGS__))
#define RECORD(t, out, bw, ...) dfx__tape_record(t, out, bw, IN(__VA_ARGS__), N_IN(__VA_ARGS__))

static char *shape_str(const dfx_var *v, char *buf, size_t size)
{
    size_t o = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < v->ndim && o < size; i++)
        o += (size_t)snprintf(buf + o, size - o, "%s%lld", i ? "," : "", (long long)v->shape[i]);
    if (o < size)
        snprintf(buf + o, size - o, "]");
    return buf;
}

static bool same_shape(const dfx_var *a, const dfx_var *b)
{
    return a->ndim == b->ndim && !memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof *a->shape);
}

static dfx_var *mismatch(dfx_tape *t, const char *op, const dfx_var *a, const dfx_var *b,
                         const char *expect)
{
    char sa[96], sb[96];
    return dfx__tape_fail(t, DFX_ERR_INVALID_ARG, "tape: %s of %s and %s: %s", op,
                          shape_str(a, sa, sizeof sa), shape_str(b, sb, sizeof sb), expect);
}

static bool usable(const dfx_tape *t, int count, dfx_var *const *v)
{
    if (t->status)
        return false;
    for (int i = 0; i < count; i++)
        if (!v[i])
            return false;
    return true;
}
#define USABLE(t, ...) usable(t, N_IN(__VA_ARGS__), IN(__VA_ARGS__))

/* ---- elementwise ------------------------------------------------------ */

static void binary_bw(dfx_tape *t, const dfx__node *n)
{
    t->k->binary_bw(n->op, n->in[0]->data, n->in[1]->data, n->out->grad,
                    dfx__tape_grad(t, n->in[0]), dfx__tape_grad(t, n->in[1]), n->out->numel);
}

static dfx_var *binary(dfx_tape *t, int op, const char *name, dfx_var *a, dfx_var *b)
{
    if (!USABLE(t, a, b))
        return NULL;
    if (!same_shape(a, b))
        return mismatch(t, name, a, b, "the shapes must be equal");
    dfx_var *y = OUT(t, a->ndim, a->shape, a, b);
    if (!y)
        return NULL;
    t->k->binary_fw(op, a->data, b->data, y->data, y->numel);
    dfx__node *n = RECORD(t, y, binary_bw, a, b);
    if (n)
        n->op = op;
    return y;
}

dfx_var *dfx_g_add(dfx_tape *t, dfx_var *a, dfx_var *b)
{
    return binary(t, DFX__G_ADD, "add", a, b);
}

dfx_var *dfx_g_sub(dfx_tape *t, dfx_var *a, dfx_var *b)
{
    return binary(t, DFX__G_SUB, "sub", a, b);
}

dfx_var *dfx_g_mul(dfx_tape *t, dfx_var *a, dfx_var *b)
{
    return binary(t, DFX__G_MUL, "mul", a, b);
}

static void scale_bw(dfx_tape *t, const dfx__node *n)
{
    void *dx = dfx__tape_grad(t, n->in[0]);
    if (dx)
        t->k->scale_bw(n->out->grad, dx, n->d[0], n->out->numel);
}

dfx_var *dfx_g_scale(dfx_tape *t, dfx_var *a, double s)
{
    if (!USABLE(t, a))
        return NULL;
    dfx_var *y = OUT(t, a->ndim, a->shape, a);
    if (!y)
        return NULL;
    t->k->scale_fw(a->data, y->data, s, y->numel);
    dfx__node *n = RECORD(t, y, scale_bw, a);
    if (n)
        n->d[0] = s;
    return y;
}

static void unary_bw(dfx_tape *t, const dfx__node *n)
{
    void *dx = dfx__tape_grad(t, n->in[0]);
    if (dx)
        t->k->unary_bw(n->op, n->in[0]->data, n->out->data, n->out->grad, dx, n->out->numel);
}

dfx_var *dfx_g_unary_op(dfx_tape *t, dfx_g_unary op, dfx_var *a)
{
    if (!USABLE(t, a))
        return NULL;
    if ((int)op < DFX_G_SILU || op > DFX_G_SQUARE)
        return dfx__tape_fail(t, DFX_ERR_INVALID_ARG, "tape: unknown unary operation %d", (int)op);
    dfx_var *y = OUT(t, a->ndim, a->shape, a);
    if (!y)
        return NULL;
    t->k->unary_fw(op, a->data, y->data, y->numel);
    dfx__node *n = RECORD(t, y, unary_bw, a);
    if (n)
        n->op = op;
    return y;
}

static void add_channel_bw(dfx_tape *t, const dfx__node *n)
{
    t->k->add_channel_bw(n->out->grad, dfx__tape_grad(t, n->in[0]), dfx__tape_grad(t, n->in[1]),
                         n->i[0], n->i[1], n->i[2], n->op);
}

dfx_var *dfx_g_add_channel(dfx_tape *t, dfx_var *x, dfx_var *v)
{
    if (!USABLE(t, x, v))
        return NULL;
    if (x->ndim < 2)
        return mismatch(t, "add_channel", x, v, "x needs [n, c, ...]");
    const int64_t n = x->shape[0], c = x->shape[1], rest = x->numel / (n * c);
    const bool per_item = v->ndim == 2 && v->shape[0] == n && v->shape[1] == c;
    if (!per_item && !(v->ndim == 1 && v->shape[0] == c))
        return mismatch(t, "add_channel", x, v, "v must be [n, c] or [c]");
    dfx_var *y = OUT(t, x->ndim, x->shape, x, v);
    if (!y)
        return NULL;
    t->k->add_channel_fw(x->data, v->data, y->data, n, c, rest, per_item);
    dfx__node *nd = RECORD(t, y, add_channel_bw, x, v);
    if (nd) {
        nd->i[0] = n;
        nd->i[1] = c;
        nd->i[2] = rest;
        nd->op = per_item;
    }
    return y;
}

/* ---- views and copies ------------------------------------------------- */

static void accumulate_bw(dfx_tape *t, const dfx__node *n)
{
    void *dx = dfx__tape_grad(t, n->in[0]);
    if (dx)
        t->k->accumulate(n->out->grad, dx, n->out->numel);
}

dfx_var *dfx_g_reshape(dfx_tape *t, dfx_var *a, int ndim, const int64_t *shape)
{
    if (!USABLE(t, a))
        return NULL;
    dfx_var *y = OUT(t, ndim, shape, a);
    if (!y)
        return NULL;
    if (y->numel != a->numel) {
        char sa[96], sb[96];
        dfx_var tmp = *y;
        return dfx__tape_fail(t, DFX_ERR_INVALID_ARG, "tape: cannot reshape %s to %s",
                              shape_str(a, sa, sizeof sa), shape_str(&tmp, sb, sizeof sb));
    }
    memcpy(y->data, a->data, (size_t)a->numel * t->k->elem_size);
    RECORD(t, y, accumulate_bw, a);
    return y;
}

static void transpose12_bw(dfx_tape *t, const dfx__node *n)
{
    void *dx = dfx__tape_grad(t, n->in[0]);
    if (dx)
        t->k->transpose12(n->out->grad, dx, n->i[0], n->i[2], n->i[1], true);
}

dfx_var *dfx_g_transpose12(dfx_tape *t, dfx_var *a)
{
    if (!USABLE(t, a))
        return NULL;
    if (a->ndim != 3)
        return mismatch(t, "transpose12", a, a, "needs 3 dimensions");
    const int64_t shape[3] = {a->shape[0], a->shape[2], a->shape[1]};
    dfx_var *y = OUT(t, 3, shape, a);
    if (!y)
        return NULL;
    t->k->transpose12(a->data, y->data, a->shape[0], a->shape[1], a->shape[2], false);
    dfx__node *n = RECORD(t, y, transpose12_bw, a);
    if (n)
        memcpy(n->i, a->shape, 3 * sizeof *a->shape);
    return y;
}

/* x [n, c, rest]: i[0] n, i[1] rest, i[2] c of a, i[3] c of b */
static void concat1_bw(dfx_tape *t, const dfx__node *n)
{
    const int64_t items = n->i[0], rest = n->i[1], ca = n->i[2], cb = n->i[3];
    const int64_t ld = (ca + cb) * rest;
    void *da = dfx__tape_grad(t, n->in[0]), *db = dfx__tape_grad(t, n->in[1]);
    if (da)
        t->k->block_copy(n->out->grad, ld, 0, da, ca * rest, 0, items, ca * rest, true);
    if (db)
        t->k->block_copy(n->out->grad, ld, ca * rest, db, cb * rest, 0, items, cb * rest, true);
}

dfx_var *dfx_g_concat1(dfx_tape *t, dfx_var *a, dfx_var *b)
{
    if (!USABLE(t, a, b))
        return NULL;
    bool ok = a->ndim >= 2 && a->ndim == b->ndim && a->shape[0] == b->shape[0];
    for (int i = 2; ok && i < a->ndim; i++)
        ok = a->shape[i] == b->shape[i];
    if (!ok)
        return mismatch(t, "concat1", a, b, "all dimensions but the second must be equal");
    int64_t shape[DFX_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[1] = a->shape[1] + b->shape[1];
    dfx_var *y = OUT(t, a->ndim, shape, a, b);
    if (!y)
        return NULL;
    const int64_t items = a->shape[0], rest = a->numel / (items * a->shape[1]);
    const int64_t ca = a->shape[1], cb = b->shape[1], ld = (ca + cb) * rest;
    t->k->block_copy(a->data, ca * rest, 0, y->data, ld, 0, items, ca * rest, false);
    t->k->block_copy(b->data, cb * rest, 0, y->data, ld, ca * rest, items, cb * rest, false);
    dfx__node *n = RECORD(t, y, concat1_bw, a, b);
    if (n) {
        n->i[0] = items;
        n->i[1] = rest;
        n->i[2] = ca;
        n->i[3] = cb;
    }
    return y;
}

/* i[0] n, i[1] rest, i[2] c of a, i[3] start, i[4] len */
static void slice1_bw(dfx_tape *t, const dfx__node *n)
{
    void *da = dfx__tape_grad(t, n->in[0]);
    const int64_t rest = n->i[1];
    if (da)
        t->k->block_copy(n->out->grad, n->i[4] * rest, 0, da, n->i[2] * rest, n->i[3] * rest,
                         n->i[0], n->i[4] * rest, true);
}

dfx_var *dfx_g_slice1(dfx_tape *t, dfx_var *a, int64_t start, int64_t len)
{
    if (!USABLE(t, a))
        return NULL;
    if (a->ndim < 2 || start < 0 || len <= 0 || start + len > a->shape[1]) {
        char sa[96];
        return dfx__tape_fail(t, DFX_ERR_INVALID_ARG,
                              "tape: slice [%lld, %lld) of dimension 1 of %s is out of range",
                              (long long)start, (long long)(start + len),
                              shape_str(a, sa, sizeof sa));
    }
    int64_t shape[DFX_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[1] = len;
    dfx_var *y = OUT(t, a->ndim, shape, a);
    if (!y)
        return NULL;
    const int64_t items = a->shape[0], rest = a->numel / (items * a->shape[1]);
    t->k->block_copy(a->data, a->shape[1] * rest, start * rest, y->data, len * rest, 0, items,
                     len * rest, false);
    dfx__node *n = RECORD(t, y, slice1_bw, a);
    if (n) {
        n->i[0] = items;
        n->i[1] = rest;
        n->i[2] = a->shape[1];
        n->i[3] = start;
        n->i[4] = len;
    }
    return y;
}

static void upsample2x_bw(dfx_tape *t, const dfx__node *n)
{
    void *dx = dfx__tape_grad(t, n->in[0]);
    if (dx)
        t->k->upsample2x_bw(n->out->grad, dx, n->i[0], n->i[1], n->i[2]);
}

dfx_var *dfx_g_upsample2x(dfx_tape *t, dfx_var *x)
{
    if (!USABLE(t, x))
        return NULL;
    if (x->ndim != 4)
        return mismatch(t, "upsample2x", x, x, "needs [n, c, h, w]");
    const int64_t shape[4] = {x->shape[0], x->shape[1], 2 * x->shape[2], 2 * x->shape[3]};
    dfx_var *y = OUT(t, 4, shape, x);
    if (!y)
        return NULL;
    const int64_t nc = x->shape[0] * x->shape[1];
    t->k->upsample2x_fw(x->data, y->data, nc, x->shape[2], x->shape[3]);
    dfx__node *n = RECORD(t, y, upsample2x_bw, x);
    if (n) {
        n->i[0] = nc;
        n->i[1] = x->shape[2];
        n->i[2] = x->shape[3];
    }
    return y;
}

static void mean_hw_bw(dfx_tape *t, const dfx__node *n)
{
    void *dx = dfx__tape_grad(t, n->in[0]);
    if (dx)
        t->k->mean_rows_bw(n->out->grad, dx, n->i[0], n->i[1]);
}

dfx_var *dfx_g_mean_hw(dfx_tape *t, dfx_var *x)
{
    if (!USABLE(t, x))
        return NULL;
    if (x->ndim != 4)
        return mismatch(t, "mean_hw", x, x, "needs [n, c, h, w]");
    const int64_t shape[2] = {x->shape[0], x->shape[1]};
    dfx_var *y = OUT(t, 2, shape, x);
    if (!y)
        return NULL;
    const int64_t nc = x->shape[0] * x->shape[1], hw = x->shape[2] * x->shape[3];
    t->k->mean_rows_fw(x->data, y->data, nc, hw);
    dfx__node *n = RECORD(t, y, mean_hw_bw, x);
    if (n) {
        n->i[0] = nc;
        n->i[1] = hw;
    }
    return y;
}

static void embedding_bw(dfx_tape *t, const dfx__node *n)
{
    void *dt = dfx__tape_grad(t, n->in[0]);
    if (dt)
        t->k->embedding_bw(n->out->grad, n->ids, dt, n->i[0], n->i[1]);
}

dfx_var *dfx_g_embedding(dfx_tape *t, dfx_var *table, const int64_t *ids, int64_t count)
{
    if (!USABLE(t, table) || !ids)
        return NULL;
    if (table->ndim != 2 || count <= 0)
        return mismatch(t, "embedding", table, table, "needs a table [rows, dim] and ids");
    for (int64_t i = 0; i < count; i++)
        if (ids[i] < 0 || ids[i] >= table->shape[0])
            return dfx__tape_fail(t, DFX_ERR_RANGE,
                                  "tape: embedding id %lld (item %lld) is outside [0, %lld)",
                                  (long long)ids[i], (long long)i, (long long)table->shape[0]);
    const int64_t shape[2] = {count, table->shape[1]};
    dfx_var *y = OUT(t, 2, shape, table);
    if (!y)
        return NULL;
    t->k->embedding_fw(table->data, ids, y->data, count, table->shape[1]);
    dfx__node *n = RECORD(t, y, embedding_bw, table);
    if (n) {
        int64_t *copy = dfx__tape_alloc(t, (size_t)count * sizeof *copy);
        if (copy)
            memcpy(copy, ids, (size_t)count * sizeof *copy);
        n->ids = copy;
        n->i[0] = count;
        n->i[1] = table->shape[1];
    }
    return y;
}

/* ---- reductions and losses -------------------------------------------- */

static double grad0(const dfx_tape *t, const dfx_var *v)
{
    (void)t;
    return dfx_var_grad(v, 0);
}

static void set_scalar(dfx_var *y, double v)
{
    if (y->dtype == DFX_DTYPE_F64)
        *(double *)y->data = v;
    else
        *(float *)y->data = (float)v;
}

static void sum_bw(dfx_tape *t, const dfx__node *n)
{
    void *dx = dfx__tape_grad(t, n->in[0]);
    if (dx)
        t->k->fill_add(dx, grad0(t, n->out) * n->d[0], n->in[0]->numel);
}

static dfx_var *reduce(dfx_tape *t, dfx_var *a, bool mean)
{
    if (!USABLE(t, a))
        return NULL;
    dfx_var *y = OUT(t, 0, NULL, a);
    if (!y)
        return NULL;
    const double c = mean ? 1.0 / (double)a->numel : 1.0;
    set_scalar(y, t->k->sum(a->data, a->numel) * c);
    dfx__node *n = RECORD(t, y, sum_bw, a);
    if (n)
        n->d[0] = c;
    return y;
}

dfx_var *dfx_g_sum(dfx_tape *t, dfx_var *a)
{
    return reduce(t, a, false);
}

dfx_var *dfx_g_mean(dfx_tape *t, dfx_var *a)
{
    return reduce(t, a, true);
}

static void mse_bw(dfx_tape *t, const dfx__node *n)
{
    t->k->mse_bw(n->in[0]->data, n->in[1]->data, grad0(t, n->out), dfx__tape_grad(t, n->in[0]),
                 dfx__tape_grad(t, n->in[1]), n->in[0]->numel);
}

dfx_var *dfx_g_mse(dfx_tape *t, dfx_var *a, dfx_var *b)
{
    if (!USABLE(t, a, b))
        return NULL;
    if (!same_shape(a, b))
        return mismatch(t, "mse", a, b, "the shapes must be equal");
    dfx_var *y = OUT(t, 0, NULL, a, b);
    if (!y)
        return NULL;
    set_scalar(y, t->k->mse_fw(a->data, b->data, a->numel));
    RECORD(t, y, mse_bw, a, b);
    return y;
}

static void cross_entropy_bw(dfx_tape *t, const dfx__node *n)
{
    void *dl = dfx__tape_grad(t, n->in[0]);
    if (dl)
        t->k->cross_entropy_bw(n->saved, n->ids, grad0(t, n->out), dl, n->i[0], n->i[1]);
}

dfx_var *dfx_g_cross_entropy(dfx_tape *t, dfx_var *logits, const int64_t *labels)
{
    if (!USABLE(t, logits) || !labels)
        return NULL;
    if (logits->ndim != 2)
        return mismatch(t, "cross_entropy", logits, logits, "needs logits [n, k]");
    const int64_t n = logits->shape[0], k = logits->shape[1];
    for (int64_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= k)
            return dfx__tape_fail(t, DFX_ERR_RANGE,
                                  "tape: label %lld (item %lld) is outside [0, %lld)",
                                  (long long)labels[i], (long long)i, (long long)k);
    dfx_var *y = OUT(t, 0, NULL, logits);
    void *p = y ? dfx__tape_alloc(t, (size_t)(n * k) * t->k->elem_size) : NULL;
    if (!p)
        return NULL;
    set_scalar(y, t->k->cross_entropy_fw(logits->data, labels, p, n, k));
    dfx__node *nd = RECORD(t, y, cross_entropy_bw, logits);
    if (nd) {
        int64_t *copy = dfx__tape_alloc(t, (size_t)n * sizeof *copy);
        if (copy)
            memcpy(copy, labels, (size_t)n * sizeof *copy);
        nd->ids = copy;
        nd->saved = p;
        nd->i[0] = n;
        nd->i[1] = k;
    }
    return y;
}

/* ---- linear, convolution ---------------------------------------------- */

static void linear_bw(dfx_tape *t, const dfx__node *n)
{
    t->k->linear_bw(n->in[0]->data, n->in[1]->data, n->out->grad, dfx__tape_grad(t, n->in[0]),
                    dfx__tape_grad(t, n->in[1]), dfx__tape_grad(t, n->in[2]), n->i[0], n->i[1],
                    n->i[2]);
}

dfx_var *dfx_g_linear(dfx_tape *t, dfx_var *x, dfx_var *w, dfx_var *b)
{
    if (!USABLE(t, x, w))
        return NULL;
    if (x->ndim < 1 || w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[1] ||
        (b && (b->ndim != 1 || b->shape[0] != w->shape[0])))
        return mismatch(t, "linear", x, w, "x [..., in], w [out, in] and b [out]");
    const int64_t in = w->shape[1], out = w->shape[0], rows = x->numel / in;
    int64_t shape[DFX_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = out;
    dfx_var *y = OUT(t, x->ndim, shape, x, w, b);
    if (!y)
        return NULL;
    t->k->linear_fw(x->data, w->data, b ? b->data : NULL, y->data, rows, in, out);
    dfx__node *n = RECORD(t, y, linear_bw, x, w, b);
    if (n) {
        n->i[0] = rows;
        n->i[1] = in;
        n->i[2] = out;
    }
    return y;
}

static void *conv_scratch(dfx_tape *t, const dfx__conv_geom *g)
{
    return dfx__tape_scratch(t, (size_t)t->k->conv2d_scratch(g) * t->k->elem_size);
}

static void conv2d_bw(dfx_tape *t, const dfx__node *n)
{
    void *dx = dfx__tape_grad(t, n->in[0]), *dw = dfx__tape_grad(t, n->in[1]);
    void *db = dfx__tape_grad(t, n->in[2]);
    void *col = conv_scratch(t, &n->geom);
    if (col)
        t->k->conv2d_bw(n->in[0]->data, n->in[1]->data, n->out->grad, dx, dw, db, &n->geom, col);
}

dfx_var *dfx_g_conv2d(dfx_tape *t, dfx_var *x, dfx_var *w, dfx_var *b, int64_t stride,
                      const int64_t pad[4])
{
    if (!USABLE(t, x, w))
        return NULL;
    if (x->ndim != 4 || w->ndim != 4 || w->shape[1] != x->shape[1] || w->shape[2] != w->shape[3] ||
        (b && (b->ndim != 1 || b->shape[0] != w->shape[0])))
        return mismatch(t, "conv2d", x, w, "x [n, cin, h, w], w [cout, cin, k, k], b [cout]");
    dfx__conv_geom g = {.n = x->shape[0], .cin = x->shape[1], .h = x->shape[2],
                        .w = x->shape[3], .cout = w->shape[0], .k = w->shape[2],
                        .stride = stride};
    memcpy(g.pad, pad, sizeof g.pad);
    if (stride < 1 || pad[0] < 0 || pad[1] < 0 || pad[2] < 0 || pad[3] < 0)
        return mismatch(t, "conv2d", x, w, "stride >= 1 and padding >= 0");
    const int64_t hp = g.h + pad[0] + pad[2], wp = g.w + pad[1] + pad[3];
    if (hp < g.k || wp < g.k)
        return mismatch(t, "conv2d", x, w, "the kernel is larger than the padded input");
    g.ho = (hp - g.k) / stride + 1;
    g.wo = (wp - g.k) / stride + 1;
    const int64_t shape[4] = {g.n, g.cout, g.ho, g.wo};
    dfx_var *y = OUT(t, 4, shape, x, w, b);
    void *col = y ? conv_scratch(t, &g) : NULL;
    if (!col)
        return NULL;
    t->k->conv2d_fw(x->data, w->data, b ? b->data : NULL, y->data, &g, col);
    dfx__node *n = RECORD(t, y, conv2d_bw, x, w, b);
    if (n)
        n->geom = g;
    return y;
}

/* ---- normalisation ---------------------------------------------------- */

/* i[0] sets, i[1] channels, i[2] rest, i[3] groups; saved: statistics */
static void norm_bw(dfx_tape *t, const dfx__node *n)
{
    t->k->norm_bw(n->in[0]->data, n->in[1] ? n->in[1]->data : NULL, n->out->grad,
                  dfx__tape_grad(t, n->in[0]), dfx__tape_grad(t, n->in[1]),
                  dfx__tape_grad(t, n->in[2]), n->i[0], n->i[1], n->i[2], n->i[3], n->saved);
}

static dfx_var *norm(dfx_tape *t, const char *name, dfx_var *x, dfx_var *gamma, dfx_var *beta,
                     int64_t sets, int64_t channels, int64_t rest, int64_t groups, double eps)
{
    if ((gamma && (gamma->ndim != 1 || gamma->shape[0] != channels)) ||
        (beta && (beta->ndim != 1 || beta->shape[0] != channels)))
        return mismatch(t, name, x, gamma ? gamma : beta, "the affine parameters must be [c]");
    if (groups <= 0 || channels % groups)
        return mismatch(t, name, x, x, "the channels must split into the groups");
    dfx_var *y = OUT(t, x->ndim, x->shape, x, gamma, beta);
    double *stats = y ? dfx__tape_alloc(t, (size_t)(sets * groups * 2) * sizeof *stats) : NULL;
    if (!stats)
        return NULL;
    t->k->norm_fw(x->data, gamma ? gamma->data : NULL, beta ? beta->data : NULL, y->data, sets,
                  channels, rest, groups, eps, stats);
    dfx__node *n = RECORD(t, y, norm_bw, x, gamma, beta);
    if (n) {
        n->i[0] = sets;
        n->i[1] = channels;
        n->i[2] = rest;
        n->i[3] = groups;
        n->saved = stats;
    }
    return y;
}

dfx_var *dfx_g_group_norm(dfx_tape *t, dfx_var *x, dfx_var *gamma, dfx_var *beta,
                          int64_t groups, double eps)
{
    if (!USABLE(t, x))
        return NULL;
    if (x->ndim < 2)
        return mismatch(t, "group_norm", x, x, "needs [n, c, ...]");
    const int64_t n = x->shape[0], c = x->shape[1];
    return norm(t, "group_norm", x, gamma, beta, n, c, x->numel / (n * c), groups, eps);
}

dfx_var *dfx_g_layer_norm(dfx_tape *t, dfx_var *x, dfx_var *gamma, dfx_var *beta, double eps)
{
    if (!USABLE(t, x))
        return NULL;
    if (x->ndim < 1)
        return mismatch(t, "layer_norm", x, x, "needs [..., dim]");
    const int64_t dim = x->shape[x->ndim - 1];
    /* each row one set of one group of `dim` channels of one element */
    return norm(t, "layer_norm", x, gamma, beta, x->numel / dim, dim, 1, 1, eps);
}

/* ---- attention -------------------------------------------------------- */

/* i[0] b, i[1] heads, i[2] nq, i[3] nk, i[4] dh; d[0] scale; saved: P */
static void attention_bw(dfx_tape *t, const dfx__node *n)
{
    void *dq = dfx__tape_grad(t, n->in[0]), *dk = dfx__tape_grad(t, n->in[1]);
    void *dv = dfx__tape_grad(t, n->in[2]);
    void *dp = dfx__tape_scratch(t, (size_t)(n->i[2] * n->i[3]) * t->k->elem_size);
    if (dp)
        t->k->attention_bw(n->in[0]->data, n->in[1]->data, n->in[2]->data, n->saved,
                           n->out->grad, dq, dk, dv, dp, n->i[0], n->i[1], n->i[2], n->i[3],
                           n->i[4], n->d[0]);
}

dfx_var *dfx_g_attention(dfx_tape *t, dfx_var *q, dfx_var *k, dfx_var *v, int64_t heads,
                         double scale, bool causal)
{
    if (!USABLE(t, q, k, v))
        return NULL;
    if (q->ndim != 3 || k->ndim != 3 || !same_shape(k, v) || q->shape[0] != k->shape[0] ||
        q->shape[2] != k->shape[2] || heads <= 0 || q->shape[2] % heads)
        return mismatch(t, "attention", q, k,
                        "q [b, nq, heads*dh], k and v [b, nk, heads*dh]");
    const int64_t b = q->shape[0], nq = q->shape[1], nk = k->shape[1], dh = q->shape[2] / heads;
    dfx_var *y = OUT(t, 3, q->shape, q, k, v);
    void *p = y ? dfx__tape_alloc(t, (size_t)(b * heads * nq * nk) * t->k->elem_size) : NULL;
    if (!p)
        return NULL;
    t->k->attention_fw(q->data, k->data, v->data, y->data, p, b, heads, nq, nk, dh, scale, causal);
    dfx__node *n = RECORD(t, y, attention_bw, q, k, v);
    if (n) {
        n->i[0] = b;
        n->i[1] = heads;
        n->i[2] = nq;
        n->i[3] = nk;
        n->i[4] = dh;
        n->d[0] = scale;
        n->saved = p;
    }
    return y;
}

/* ---- IDDPM's variational bound ---------------------------------------- */

typedef struct vlb_saved {
    float *x0, *xt, *eps;
    double *c;
    bool *first;
} vlb_saved;

static void iddpm_vlb_bw(dfx_tape *t, const dfx__node *n)
{
    void *dv = dfx__tape_grad(t, n->in[0]);
    const vlb_saved *sv = n->saved;
    void *g = dfx__tape_scratch(t, (size_t)n->in[0]->numel * t->k->elem_size);
    if (!dv || !g)
        return;
    t->k->iddpm_vlb(n->in[0]->data, sv->x0, sv->xt, sv->eps, sv->c, sv->first, n->i[0], n->i[1], g);
    t->k->scale_bw(g, dv, dfx_var_grad(n->out, 0), n->in[0]->numel);
}

dfx_var *dfx_g_iddpm_vlb(dfx_tape *t, dfx_var *v, const float *x0, const float *xt,
                         const float *eps, const dfx_vlb_item *items)
{
    if (!USABLE(t, v) || !x0 || !xt || !eps || !items)
        return NULL;
    if (v->ndim < 2)
        return mismatch(t, "iddpm_vlb", v, v, "needs v [n, ...]");
    const int64_t n = v->shape[0], per = v->numel / n;
    vlb_saved *sv = dfx__tape_alloc(t, sizeof *sv);
    const size_t fb = (size_t)v->numel * sizeof(float);
    if (!sv || !(sv->x0 = dfx__tape_alloc(t, fb)) || !(sv->xt = dfx__tape_alloc(t, fb)) ||
        !(sv->eps = dfx__tape_alloc(t, fb)) ||
        !(sv->c = dfx__tape_alloc(t, (size_t)(6 * n) * sizeof(double))) ||
        !(sv->first = dfx__tape_alloc(t, (size_t)n * sizeof(bool))))
        return NULL;
    memcpy(sv->x0, x0, fb);
    memcpy(sv->xt, xt, fb);
    memcpy(sv->eps, eps, fb);
    for (int64_t i = 0; i < n; i++) {
        const dfx_vlb_item *it = &items[i];
        if (!(it->max_log >= it->min_log) || !isfinite(it->min_log) || !isfinite(it->max_log))
            return dfx__tape_fail(t, DFX_ERR_RANGE,
                                  "tape: iddpm_vlb item %lld: log variance range [%g, %g]",
                                  (long long)i, it->min_log, it->max_log);
        const double c[6] = {it->true_x0, it->true_xt, it->model_xt, it->model_eps, it->min_log,
                             it->max_log};
        memcpy(sv->c + 6 * i, c, sizeof c);
        sv->first[i] = it->first;
    }
    dfx_var *y = OUT(t, 0, NULL, v);
    if (!y)
        return NULL;
    set_scalar(y, t->k->iddpm_vlb(v->data, sv->x0, sv->xt, sv->eps, sv->c, sv->first, n, per, NULL));
    dfx__node *nd = RECORD(t, y, iddpm_vlb_bw, v);
    if (nd) {
        nd->saved = sv;
        nd->i[0] = n;
        nd->i[1] = per;
    }
    return y;
}
