/* The tape: its memory (a stack of chunks, merged into one on reset so a
 * training step after the first allocates nothing), the variables, the
 * record of operations and the backward walk. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "core/grad/internal.h"

#define ALIGN 64
#define MIN_CHUNK ((size_t)1 << 22)

struct dfx__chunk {
    dfx__chunk *next;
    size_t size, used;
    unsigned char *base;
};

dfx_status dfx_tape_create(dfx_tape **out, dfx_dtype dtype)
{
    if (!out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_tape_create: NULL argument");
    *out = NULL;
    if (dtype != DFX_DTYPE_F32 && dtype != DFX_DTYPE_F64)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_tape_create: a tape computes in F32 or F64, not %s",
                             dfx_dtype_name(dtype));
    dfx_tape *t = calloc(1, sizeof *t);
    if (!t)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "dfx_tape_create: out of memory");
    t->dtype = dtype;
    t->k = dtype == DFX_DTYPE_F32 ? &dfx__grad_kernels_f32 : &dfx__grad_kernels_f64;
    t->recording = true;
    *out = t;
    return DFX_OK;
}

static void free_chunks(dfx__chunk *c)
{
    while (c) {
        dfx__chunk *next = c->next;
        free(c->base);
        free(c);
        c = next;
    }
}

void dfx_tape_destroy(dfx_tape *t)
{
    if (!t)
        return;
    free_chunks(t->chunks);
    free(t->nodes);
    free(t->message);
    free(t->scratch);
    free(t);
}

dfx_dtype dfx_tape_dtype(const dfx_tape *t)
{
    return t->dtype;
}

void dfx_tape_reset(dfx_tape *t)
{
    size_t total = 0;
    int count = 0;
    for (dfx__chunk *c = t->chunks; c; c = c->next, count++)
        total += c->size;
    if (count > 1) {
        /* one chunk as large as all of them: the next step fits in it */
        free_chunks(t->chunks);
        t->chunks = NULL;
        dfx__chunk *c = calloc(1, sizeof *c);
        if (c && (c->base = aligned_alloc(ALIGN, total))) {
            c->size = total;
            t->chunks = c;
        } else {
            free(c);
        }
    } else if (t->chunks) {
        t->chunks->used = 0;
    }
    t->bytes = 0;
    t->n_nodes = 0;
    t->status = DFX_OK;
    free(t->message);
    t->message = NULL;
}

dfx_status dfx_tape_status(const dfx_tape *t)
{
    if (!t->status)
        return DFX_OK;
    return dfx_error_set(t->status, "%s", t->message ? t->message : dfx_status_text(t->status));
}

void dfx_tape_set_recording(dfx_tape *t, bool on)
{
    t->recording = on;
}

size_t dfx_tape_bytes(const dfx_tape *t)
{
    return t->bytes;
}

size_t dfx_tape_peak(const dfx_tape *t)
{
    return t->peak;
}

dfx_var *dfx__tape_fail(dfx_tape *t, dfx_status st, const char *fmt, ...)
{
    if (t->status)
        return NULL;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    t->status = st;
    t->message = strdup(buf);
    dfx_error_set(st, "%s", buf);
    return NULL;
}

dfx_var *dfx_tape_fail(dfx_tape *t, dfx_status st)
{
    return dfx__tape_fail(t, st ? st : DFX_ERR_INVALID_ARG, "%s", dfx_error_message());
}

void *dfx__tape_alloc(dfx_tape *t, size_t bytes)
{
    if (t->status)
        return NULL;
    bytes = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    if (!bytes)
        bytes = ALIGN;
    dfx__chunk *c = t->chunks;
    if (!c || c->size - c->used < bytes) {
        const size_t size = bytes > MIN_CHUNK ? bytes : MIN_CHUNK;
        c = calloc(1, sizeof *c);
        if (!c || !(c->base = aligned_alloc(ALIGN, size))) {
            free(c);
            dfx__tape_fail(t, DFX_ERR_NO_MEMORY, "tape: out of memory (%zu bytes in use)",
                           t->bytes);
            return NULL;
        }
        c->size = size;
        c->next = t->chunks;
        t->chunks = c;
    }
    void *p = c->base + c->used;
    c->used += bytes;
    t->bytes += bytes;
    if (t->bytes > t->peak)
        t->peak = t->bytes;
    return p;
}

void *dfx__tape_scratch(dfx_tape *t, size_t bytes)
{
    if (t->status)
        return NULL;
    if (bytes > t->scratch_size) {
        free(t->scratch);
        t->scratch_size = 0;
        t->scratch = aligned_alloc(ALIGN, (bytes + ALIGN - 1) / ALIGN * ALIGN);
        if (!t->scratch) {
            dfx__tape_fail(t, DFX_ERR_NO_MEMORY, "tape: out of memory (%zu bytes of scratch)",
                           bytes);
            return NULL;
        }
        t->scratch_size = bytes;
    }
    return t->scratch;
}

static bool shape_ok(dfx_tape *t, int ndim, const int64_t *shape, int64_t *numel)
{
    if (ndim < 0 || ndim > DFX_MAX_DIMS) {
        dfx__tape_fail(t, DFX_ERR_INVALID_ARG, "tape: %d dimensions (at most %d)", ndim,
                       DFX_MAX_DIMS);
        return false;
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0 || n > INT64_MAX / 8 / shape[i]) {
            dfx__tape_fail(t, DFX_ERR_INVALID_ARG, "tape: invalid dimension %lld",
                           (long long)shape[i]);
            return false;
        }
        n *= shape[i];
    }
    *numel = n;
    return true;
}

static dfx_var *new_var(dfx_tape *t, int ndim, const int64_t *shape, bool requires_grad,
                        bool alloc_data)
{
    int64_t numel;
    if (t->status || !shape_ok(t, ndim, shape, &numel))
        return NULL;
    dfx_var *v = dfx__tape_alloc(t, sizeof *v);
    if (!v)
        return NULL;
    *v = (dfx_var){.dtype = t->dtype, .ndim = ndim, .numel = numel, .requires_grad = requires_grad};
    if (ndim)
        memcpy(v->shape, shape, (size_t)ndim * sizeof *shape);
    if (alloc_data && !(v->data = dfx__tape_alloc(t, (size_t)numel * t->k->elem_size)))
        return NULL;
    return v;
}

dfx_var *dfx_tape_new(dfx_tape *t, int ndim, const int64_t *shape, bool requires_grad)
{
    return new_var(t, ndim, shape, requires_grad && t->recording, true);
}

dfx_var *dfx_tape_zeros(dfx_tape *t, int ndim, const int64_t *shape, bool requires_grad)
{
    dfx_var *v = dfx_tape_new(t, ndim, shape, requires_grad);
    if (v)
        memset(v->data, 0, (size_t)v->numel * t->k->elem_size);
    return v;
}

dfx_var *dfx_tape_from_f32(dfx_tape *t, int ndim, const int64_t *shape, const float *data,
                           bool requires_grad)
{
    dfx_var *v = dfx_tape_new(t, ndim, shape, requires_grad);
    if (!v)
        return NULL;
    if (t->dtype == DFX_DTYPE_F32) {
        memcpy(v->data, data, (size_t)v->numel * sizeof(float));
    } else {
        double *d = v->data;
        for (int64_t i = 0; i < v->numel; i++)
            d[i] = data[i];
    }
    return v;
}

dfx_var *dfx_tape_param(dfx_tape *t, dfx_param *param)
{
    if (!param)
        return NULL;
    if (t->dtype != DFX_DTYPE_F32)
        return dfx__tape_fail(t, DFX_ERR_INVALID_ARG,
                              "tape: parameter '%s' is float32 but the tape computes in %s",
                              param->name, dfx_dtype_name(t->dtype));
    dfx_var *v = new_var(t, param->ndim, param->shape, t->recording, false);
    if (!v)
        return NULL;
    v->data = param->data;
    v->grad = t->recording ? param->grad : NULL;
    v->param = param;
    return v;
}

dfx_var *dfx_tape_weight(dfx_tape *t, const dfx_params *params, float *data, int ndim,
                         const int64_t *shape)
{
    if (!data)
        return NULL;
    if (t->dtype != DFX_DTYPE_F32)
        return dfx__tape_fail(t, DFX_ERR_INVALID_ARG, "tape: layer weights need a float32 tape");
    dfx_param *p = params ? dfx_params_find(params, data) : NULL;
    if (p) {
        int64_t numel;
        if (!shape_ok(t, ndim, shape, &numel))
            return NULL;
        if (numel != p->numel)
            return dfx__tape_fail(t, DFX_ERR_INVALID_ARG,
                                  "tape: parameter '%s' has %lld elements, the layer uses %lld",
                                  p->name, (long long)p->numel, (long long)numel);
        dfx_var *v = dfx_tape_param(t, p);
        if (v) {
            v->ndim = ndim;
            memcpy(v->shape, shape, (size_t)ndim * sizeof *shape);
        }
        return v;
    }
    dfx_var *v = new_var(t, ndim, shape, false, false);
    if (v)
        v->data = data;
    return v;
}

static double element(dfx_dtype dtype, const void *p, int64_t i)
{
    return dtype == DFX_DTYPE_F64 ? ((const double *)p)[i] : ((const float *)p)[i];
}

double dfx_var_get(const dfx_var *v, int64_t i)
{
    return element(v->dtype, v->data, i);
}

double dfx_var_grad(const dfx_var *v, int64_t i)
{
    return v->grad ? element(v->dtype, v->grad, i) : 0.0;
}

void *dfx__tape_grad(dfx_tape *t, dfx_var *v)
{
    if (!v || !v->requires_grad)
        return NULL;
    if (!v->grad) {
        v->grad = dfx__tape_alloc(t, (size_t)v->numel * t->k->elem_size);
        if (v->grad)
            memset(v->grad, 0, (size_t)v->numel * t->k->elem_size);
    }
    return v->grad;
}

dfx_var *dfx__tape_out(dfx_tape *t, int ndim, const int64_t *shape, dfx_var *const *in, int n_in)
{
    bool rg = false;
    for (int i = 0; i < n_in; i++)
        rg = rg || (in[i] && in[i]->requires_grad);
    return new_var(t, ndim, shape, rg && t->recording, true);
}

dfx__node *dfx__tape_record(dfx_tape *t, dfx_var *out, dfx__backward_fn bw, dfx_var *const *in,
                            int n_in)
{
    if (!out || !out->requires_grad || t->status)
        return NULL;
    if (t->n_nodes == t->cap_nodes) {
        const int64_t cap = t->cap_nodes ? 2 * t->cap_nodes : 256;
        dfx__node *n = realloc(t->nodes, (size_t)cap * sizeof *n);
        if (!n) {
            dfx__tape_fail(t, DFX_ERR_NO_MEMORY, "tape: out of memory for the operation record");
            return NULL;
        }
        t->nodes = n;
        t->cap_nodes = cap;
    }
    dfx__node *n = &t->nodes[t->n_nodes++];
    *n = (dfx__node){.backward = bw, .out = out};
    for (int i = 0; i < n_in && i < 4; i++)
        n->in[i] = in[i];
    return n;
}

dfx_status dfx_tape_backward(dfx_tape *t, dfx_var *loss)
{
    if (t->status)
        return dfx_tape_status(t);
    if (!loss || loss->numel != 1)
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "tape: backward starts from a scalar (got %lld elements)",
                             loss ? (long long)loss->numel : 0LL);
    if (!loss->requires_grad)
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "tape: the loss depends on nothing that needs a gradient");
    void *g = dfx__tape_grad(t, loss);
    if (!g)
        return dfx_tape_status(t);
    t->k->fill_add(g, 1.0, 1);
    for (int64_t i = t->n_nodes - 1; i >= 0 && !t->status; i--) {
        const dfx__node *n = &t->nodes[i];
        if (n->out->grad)
            n->backward(t, n);
    }
    return dfx_tape_status(t);
}

/* ---- parameters ------------------------------------------------------- */

struct dfx_params {
    dfx_param *items;
    int64_t count, cap;
};

dfx_status dfx_params_create(dfx_params **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? DFX_OK : dfx_error_set(DFX_ERR_NO_MEMORY, "dfx_params_create: out of memory");
}

void dfx_params_destroy(dfx_params *p)
{
    if (!p)
        return;
    for (int64_t i = 0; i < p->count; i++) {
        free((char *)p->items[i].name);
        free(p->items[i].grad);
    }
    free(p->items);
    free(p);
}

dfx_status dfx_params_add(dfx_params *p, const char *name, float *data, int ndim,
                          const int64_t *shape)
{
    if (!name || !data || ndim < 0 || ndim > DFX_MAX_DIMS)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_params_add: invalid argument");
    if (dfx_params_find_name(p, name))
        return dfx_error_set(DFX_ERR_INVALID_ARG, "parameter '%s' is registered twice", name);
    const dfx_param *dup = dfx_params_find(p, data);
    if (dup)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "parameter '%s' shares its data with '%s'",
                             name, dup->name);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0)
            return dfx_error_set(DFX_ERR_INVALID_ARG, "parameter '%s': invalid shape", name);
        numel *= shape[i];
    }
    if (p->count == p->cap) {
        const int64_t cap = p->cap ? 2 * p->cap : 64;
        dfx_param *items = realloc(p->items, (size_t)cap * sizeof *items);
        if (!items)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "dfx_params_add: out of memory");
        p->items = items;
        p->cap = cap;
    }
    dfx_param *q = &p->items[p->count];
    *q = (dfx_param){.ndim = ndim, .numel = numel, .data = data};
    memcpy(q->shape, shape, (size_t)ndim * sizeof *shape);
    q->name = strdup(name);
    q->grad = calloc((size_t)numel, sizeof(float));
    if (!q->name || !q->grad) {
        free((char *)q->name);
        free(q->grad);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "dfx_params_add: out of memory");
    }
    p->count++;
    return DFX_OK;
}

int64_t dfx_params_count(const dfx_params *p)
{
    return p->count;
}

dfx_param *dfx_params_get(dfx_params *p, int64_t i)
{
    return i >= 0 && i < p->count ? &p->items[i] : NULL;
}

dfx_param *dfx_params_find(const dfx_params *p, const float *data)
{
    for (int64_t i = 0; i < p->count; i++)
        if (p->items[i].data == data)
            return &p->items[i];
    return NULL;
}

dfx_param *dfx_params_find_name(const dfx_params *p, const char *name)
{
    for (int64_t i = 0; i < p->count; i++)
        if (!strcmp(p->items[i].name, name))
            return &p->items[i];
    return NULL;
}

int64_t dfx_params_numel(const dfx_params *p)
{
    int64_t n = 0;
    for (int64_t i = 0; i < p->count; i++)
        n += p->items[i].numel;
    return n;
}

void dfx_params_zero_grad(dfx_params *p)
{
    for (int64_t i = 0; i < p->count; i++)
        memset(p->items[i].grad, 0, (size_t)p->items[i].numel * sizeof(float));
}

double dfx_params_grad_norm(const dfx_params *p)
{
    double s = 0;
    for (int64_t i = 0; i < p->count; i++)
        for (int64_t j = 0; j < p->items[i].numel; j++)
            s += (double)p->items[i].grad[j] * p->items[i].grad[j];
    return sqrt(s);
}
