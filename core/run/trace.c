/* The per-call trace of a run (--trace): model inputs and outputs, the
 * timesteps fed to the model, the state after each step and the noise drawn,
 * each stacked along a new first axis, written as safetensors. */
#include <stdlib.h>
#include <string.h>

#include "core/run/run.h"
#include "dfx/safetensors.h"

typedef struct series {
    char *name;
    dfx_dtype dtype;
    int ndim;
    int64_t shape[DFX_MAX_DIMS];
    int64_t count;
    size_t item_bytes;
    unsigned char *data;
    size_t cap;
} series;

struct dfx__trace {
    series *s;
    size_t n, cap;
};

dfx_status dfx__trace_create(dfx__trace **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? DFX_OK : dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
}

static series *find_or_add(dfx__trace *t, const char *name, dfx_dtype dtype, int ndim,
                           const int64_t *shape)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->s[i].name, name) == 0)
            return &t->s[i];
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 8;
        series *s = realloc(t->s, cap * sizeof *s);
        if (!s)
            return NULL;
        t->s = s;
        t->cap = cap;
    }
    series *s = &t->s[t->n];
    memset(s, 0, sizeof *s);
    if (!(s->name = strdup(name)))
        return NULL;
    s->dtype = dtype;
    s->ndim = ndim;
    if (ndim)
        memcpy(s->shape, shape, (size_t)ndim * sizeof *shape);
    s->item_bytes = dfx_dtype_size(dtype);
    for (int i = 0; i < ndim; i++)
        s->item_bytes *= (size_t)shape[i];
    t->n++;
    return s;
}

static dfx_status append(series *s, const void *data)
{
    size_t need = (size_t)(s->count + 1) * s->item_bytes;
    if (need > s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 4 * s->item_bytes;
        cap = cap < need ? need : cap;
        unsigned char *d = realloc(s->data, cap);
        if (!d)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "trace: out of memory");
        s->data = d;
        s->cap = cap;
    }
    memcpy(s->data + (size_t)s->count * s->item_bytes, data, s->item_bytes);
    s->count++;
    return DFX_OK;
}

dfx_status dfx__trace_add(dfx__trace *t, const char *name, const dfx_tensor *x)
{
    series *s = find_or_add(t, name, x->dtype, x->ndim, x->shape);
    if (!s)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "trace: out of memory");
    if (s->ndim != x->ndim || memcmp(s->shape, x->shape, (size_t)x->ndim * sizeof *x->shape))
        return dfx_error_set(DFX_ERR_INVALID_ARG, "trace: series '%s' changed shape", name);
    return append(s, x->data);
}

dfx_status dfx__trace_add_f64(dfx__trace *t, const char *name, double v)
{
    series *s = find_or_add(t, name, DFX_DTYPE_F64, 0, NULL);
    if (!s)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "trace: out of memory");
    return append(s, &v);
}

dfx_status dfx__trace_write(const dfx__trace *t, const char *path)
{
    const char **names = calloc(t->n + 1, sizeof *names);
    dfx_tensor *views = calloc(t->n + 1, sizeof *views);
    const dfx_tensor **ptrs = calloc(t->n + 1, sizeof *ptrs);
    dfx_status st = DFX_OK;
    if (!names || !views || !ptrs) {
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "trace: out of memory");
    } else {
        for (size_t i = 0; i < t->n; i++) {
            const series *s = &t->s[i];
            int64_t shape[DFX_MAX_DIMS];
            shape[0] = s->count;
            memcpy(shape + 1, s->shape, (size_t)s->ndim * sizeof *shape);
            views[i] = dfx_tensor_view(s->dtype, s->ndim + 1, shape, s->data);
            names[i] = s->name;
            ptrs[i] = &views[i];
        }
        st = dfx_safetensors_write(path, (int64_t)t->n, names, ptrs, 0, NULL, NULL);
    }
    free(names);
    free(views);
    free(ptrs);
    return st;
}

void dfx__trace_destroy(dfx__trace *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++) {
        free(t->s[i].name);
        free(t->s[i].data);
    }
    free(t->s);
    free(t);
}
