/* dfx_weights: named float32 tensors from a safetensors file or sharded set,
 * or a torch checkpoint (core/io/torch.c), converted once at load into
 * 64-byte aligned arrays, with a record of which tensors the model took so
 * that leftovers (a checkpoint for another configuration) are reported
 * instead of silently ignored. */
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "core/nn/internal.h"
#include "dfx/rng.h"
#include "dfx/nn.h"
#include "dfx/safetensors.h"

/* Unused tensors named in check_used's message; the count covers the rest. */
#define UNUSED_SHOWN 5

/* A name the model asks for that stands for rows [row0, row0 + view's
 * first dimension) of a stored tensor. */
typedef struct alias {
    char *name;
    int64_t idx;          /* the stored tensor */
    dfx_tensor view;      /* its data, sliced to the rows */
    bool used;
} alias;

/* Whichever reader opened the file fills the same table: names and views
 * in file order, which is all the rest of this file reads. */
struct dfx_weights {
    dfx_safetensors *st;     /* a safetensors file or set, or NULL */
    dfx__torch *torch;       /* a torch checkpoint, or NULL */
    dfx_rng *rng;            /* the random source's generator */
    int64_t count;
    const char **names;      /* owned by the reader */
    dfx_tensor *views;       /* views[i]: names[i]'s data as stored (maybe unaligned) */
    int64_t *by_name;   /* tensor indices sorted by name */
    uint8_t *used;      /* bitmap over tensor indices */
    /* Aliases (dfx_weights_alias): once there is one, they are the only
     * names the set answers to, sorted by name. */
    alias *aliases;
    int64_t n_aliases, cap_aliases;
    dfx_weights_namer namer;     /* spells a name that has no alias, for messages */
    void *namer_ctx;             /* owned: a copy of what dfx_weights_set_namer got */
};

/* qsort takes no context argument in C11: the names being sorted are passed
 * through a thread-local, so opens on different threads do not race */
static _Thread_local const char *const *sort_names;

static int cmp_index_name(const void *a, const void *b)
{
    return strcmp(sort_names[*(const int64_t *)a], sort_names[*(const int64_t *)b]);
}

/* The file's format from its first bytes, not its name: a torch checkpoint
 * is a zip archive or a pickle; anything else goes to the safetensors
 * reader, whose messages explain what is wrong with it. */
static dfx_status open_reader(dfx_weights *w, const char *path)
{
    unsigned char head[16];
    size_t n = 0;
    FILE *fp = fopen(path, "rb");
    if (fp) {
        n = fread(head, 1, sizeof head, fp);
        fclose(fp);
    }
    if (!dfx__torch_detect(head, n)) {
        dfx_status st = dfx_safetensors_open(path, &w->st);
        if (st)
            return st;
        w->count = dfx_safetensors_count(w->st);
    } else {
        dfx_status st = dfx__torch_open(path, &w->torch);
        if (st)
            return st;
        w->count = dfx__torch_count(w->torch);
    }
    size_t count = (size_t)(w->count ? w->count : 1);
    w->names = malloc(count * sizeof *w->names);
    w->views = malloc(count * sizeof *w->views);
    if (!w->names || !w->views)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", path);
    for (int64_t i = 0; i < w->count; i++) {
        if (w->st) {
            w->names[i] = dfx_safetensors_name(w->st, i);
            dfx_status st = dfx_safetensors_view(w->st, w->names[i], &w->views[i]);
            if (st)
                return st;
        } else {
            w->names[i] = dfx__torch_name(w->torch, i);
            w->views[i] = *dfx__torch_tensor(w->torch, i);
        }
    }
    return DFX_OK;
}

dfx_status dfx_weights_open(dfx_weights **out, const char *path)
{
    if (!out || !path)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_weights_open: NULL argument");
    *out = NULL;
    dfx_weights *w = calloc(1, sizeof *w);
    if (!w)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", path);
    dfx_status st = open_reader(w, path);
    if (st) {
        dfx_weights_close(w);
        return st;
    }
    size_t n = (size_t)(w->count ? w->count : 1);
    w->by_name = malloc(n * sizeof *w->by_name);
    w->used = calloc((n + 7) / 8, 1);
    if (!w->by_name || !w->used) {
        dfx_weights_close(w);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", path);
    }
    for (int64_t i = 0; i < w->count; i++)
        w->by_name[i] = i;
    sort_names = w->names;
    qsort(w->by_name, (size_t)w->count, sizeof *w->by_name, cmp_index_name);
    sort_names = NULL;
    *out = w;
    return DFX_OK;
}

dfx_status dfx_weights_open_random(dfx_weights **out, uint64_t seed)
{
    *out = NULL;
    dfx_weights *w = calloc(1, sizeof *w);
    if (!w)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    dfx_status st = dfx_rng_create(&w->rng, seed);
    if (st) {
        free(w);
        return st;
    }
    *out = w;
    return DFX_OK;
}

/* A random source's tensor: norm scales 1, biases 0, other weights normal
 * with std 1/sqrt(fan_in) (fan_in = all but the first dimension), so that
 * activations keep unit scale through a network as they do when trained. */
static dfx_status load_random(dfx_weights *w, const char *name, int ndim, const int64_t *shape, float **out)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    float *data = dfx__aligned_alloc((size_t)n * sizeof *data);
    if (!data)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "random weights: out of memory for '%s'", name);
    size_t len = strlen(name);
    bool bias = len >= 5 && strcmp(name + len - 5, ".bias") == 0;
    if (bias || ndim == 1) {
        for (int64_t i = 0; i < n; i++)
            data[i] = bias ? 0.0f : 1.0f;
    } else {
        dfx_rng_normal(w->rng, data, n);
        float scale = (float)(1 / sqrt((double)(n / shape[0])));
        for (int64_t i = 0; i < n; i++)
            data[i] *= scale;
    }
    *out = data;
    return DFX_OK;
}

void dfx_weights_close(dfx_weights *w)
{
    if (!w)
        return;
    dfx_rng_destroy(w->rng);
    dfx_safetensors_close(w->st);
    dfx__torch_close(w->torch);
    free(w->names);
    free(w->views);
    free(w->by_name);
    free(w->used);
    for (int64_t i = 0; i < w->n_aliases; i++)
        free(w->aliases[i].name);
    free(w->aliases);
    free(w->namer_ctx);
    free(w);
}

const char *dfx_weights_path(const dfx_weights *w)
{
    return !w ? NULL : w->st ? dfx_safetensors_path(w->st)
                     : w->torch ? dfx__torch_path(w->torch) : "(random weights)";
}

/* Index of the tensor called name, or -1. */
static int64_t find(const dfx_weights *w, const char *name)
{
    int64_t lo = 0, hi = w->count;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(w->names[w->by_name[mid]], name);
        if (c == 0)
            return w->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

static bool shape_equal(int na, const int64_t *a, int nb, const int64_t *b)
{
    if (na != nb)
        return false;
    for (int i = 0; i < na; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

/* a's shape is b's with trailing size-1 dimensions added (a [C, C, 1, 1]
 * convolution kernel for a [C, C] linear weight). */
static bool shape_squeezes_to(int na, const int64_t *a, int nb, const int64_t *b)
{
    if (na <= nb)
        return false;
    for (int i = nb; i < na; i++)
        if (a[i] != 1)
            return false;
    return shape_equal(nb, a, nb, b);
}

static void shape_str(int ndim, const int64_t *shape, char *buf, size_t size)
{
    dfx_tensor t = dfx_tensor_view(DFX_DTYPE_F32, ndim, shape, NULL);
    dfx_tensor_shape_str(&t, buf, size);
}

/* Position of the alias called name, or where it would be inserted (then
 * *found is false). */
static int64_t find_alias(const dfx_weights *w, const char *name, bool *found)
{
    int64_t lo = 0, hi = w->n_aliases;
    *found = false;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(w->aliases[mid].name, name);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The tensor the model calls name: its data, and in *slot where its use
 * is recorded (an alias when the set has aliases, else a stored tensor). */
static bool lookup(const dfx_weights *w, const char *name, dfx_tensor *view, int64_t *slot)
{
    if (w->n_aliases) {
        bool found;
        int64_t a = find_alias(w, name, &found);
        if (!found)
            return false;
        *view = w->aliases[a].view;
        *slot = a;
        return true;
    }
    int64_t i = find(w, name);
    if (i < 0)
        return false;
    *view = w->views[i];
    *slot = i;
    return true;
}

static void mark_used(dfx_weights *w, int64_t slot)
{
    if (w->n_aliases)
        w->aliases[slot].used = true;
    else
        w->used[slot / 8] |= (uint8_t)(1u << (slot % 8));
}

/* How the file spells what slot holds: the stored name, with the rows of
 * an alias's slice ("NAME[32:64]"). */
static void stored_desc(const dfx_weights *w, int64_t slot, char *buf, size_t size)
{
    if (!w->n_aliases) {
        snprintf(buf, size, "%s", w->names[slot]);
        return;
    }
    const alias *a = &w->aliases[slot];
    const dfx_tensor *whole = &w->views[a->idx];
    if (a->view.ndim > 0 && whole->shape[0] != a->view.shape[0]) {
        size_t row = whole->shape[0] ? dfx_tensor_nbytes(whole) / (size_t)whole->shape[0] : 0;
        long long r0 = row ? (long long)(((const char *)a->view.data - (const char *)whole->data) / (ptrdiff_t)row)
                           : 0;
        snprintf(buf, size, "%s[%lld:%lld]", w->names[a->idx], r0, r0 + (long long)a->view.shape[0]);
    } else {
        snprintf(buf, size, "%s", w->names[a->idx]);
    }
}

bool dfx_weights_has(const dfx_weights *w, const char *name)
{
    dfx_tensor v;
    int64_t slot;
    return w && name && (w->rng || lookup(w, name, &v, &slot));
}

dfx_status dfx_weights_alias(dfx_weights *w, const char *name, const char *stored, int64_t row0, int64_t rows)
{
    if (!w || !name || !stored || row0 < 0 || rows < 0)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_weights_alias: invalid argument");
    if (w->rng)
        return DFX_OK;
    const char *path = dfx_weights_path(w);
    int64_t idx = find(w, stored);
    if (idx < 0)
        return dfx_error_set(DFX_ERR_NOT_FOUND, "%s: tensor '%s' is missing", path, stored);
    dfx_tensor v = w->views[idx];
    if (rows > 0) {
        if (v.ndim < 1 || row0 + rows > v.shape[0]) {
            char have[256];
            shape_str(v.ndim, v.shape, have, sizeof have);
            return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s' has shape %s, so no rows %lld:%lld", path,
                                 stored, have, (long long)row0, (long long)(row0 + rows));
        }
        size_t row = dfx_tensor_nbytes(&v) / (size_t)v.shape[0];
        v.data = (char *)v.data + (size_t)row0 * row;
        v.shape[0] = rows;
    }
    bool found;
    int64_t at = find_alias(w, name, &found);
    if (found)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: tensor name '%s' given two sources ('%s' and '%s')",
                             path, name, w->names[w->aliases[at].idx], stored);
    if (w->n_aliases == w->cap_aliases) {
        int64_t cap = w->cap_aliases ? 2 * w->cap_aliases : 256;
        alias *grown = realloc(w->aliases, (size_t)cap * sizeof *grown);
        if (!grown)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", path);
        w->aliases = grown;
        w->cap_aliases = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", path);
    memmove(w->aliases + at + 1, w->aliases + at, (size_t)(w->n_aliases - at) * sizeof *w->aliases);
    w->aliases[at] = (alias){copy, idx, v, false};
    w->n_aliases++;
    return DFX_OK;
}

dfx_status dfx_weights_set_namer(dfx_weights *w, dfx_weights_namer namer, const void *ctx, size_t ctx_size)
{
    if (!w || (ctx_size && !ctx))
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_weights_set_namer: invalid argument");
    void *copy = NULL;
    if (namer && ctx_size) {
        if (!(copy = malloc(ctx_size)))
            return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        memcpy(copy, ctx, ctx_size);
    }
    free(w->namer_ctx);
    w->namer = namer;
    w->namer_ctx = copy;
    return DFX_OK;
}

/* Converts the mapped (possibly unaligned) data of v into dst. The 16-bit
 * and 64-bit float types, what checkpoints hold, go through a direct loop
 * (memcpy per element: the mapping guarantees no alignment); anything else
 * through an aligned copy and dfx_tensor_convert. */
static dfx_status convert(const dfx_weights *w, const char *name, const dfx_tensor *v,
                          float *dst, int64_t n)
{
    const unsigned char *src = v->data;
    switch (v->dtype) {
    case DFX_DTYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof *dst);
        return DFX_OK;
    case DFX_DTYPE_F16:
#pragma omp parallel for if (n > DFX__NN_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = dfx_f16_to_f32(h);
        }
        return DFX_OK;
    case DFX_DTYPE_BF16:
#pragma omp parallel for if (n > DFX__NN_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = dfx_bf16_to_f32(h);
        }
        return DFX_OK;
    case DFX_DTYPE_F64:
        for (int64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            dst[i] = (float)d;
        }
        return DFX_OK;
    default:
        break;
    }
    dfx_tensor *copy, *t;
    dfx_status st = dfx_tensor_create(&copy, v->dtype, v->ndim, v->shape);
    if (st)
        return dfx_error_prefix(st, "%s: tensor '%s': ", dfx_weights_path(w), name);
    memcpy(copy->data, v->data, dfx_tensor_nbytes(v));
    st = dfx_tensor_convert(copy, DFX_DTYPE_F32, &t);
    dfx_tensor_destroy(copy);
    if (st)
        return dfx_error_prefix(st, "%s: tensor '%s': ", dfx_weights_path(w), name);
    memcpy(dst, t->data, (size_t)n * sizeof *dst);
    dfx_tensor_destroy(t);
    return DFX_OK;
}

dfx_status dfx__weights_load_alt(dfx_weights *w, const char *const *names, int ndim,
                                 const int64_t *shape, int alt_ndim, const int64_t *alt_shape,
                                 float **out)
{
    if (!out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_weights_load: out is NULL");
    *out = NULL;
    if (!w || !names || !names[0] || ndim < 0 || ndim > DFX_MAX_DIMS || (ndim && !shape))
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_weights_load: invalid argument");
    if (w->rng)
        return load_random(w, names[0], ndim, shape, out);
    const char *path = dfx_weights_path(w);
    int64_t idx = -1;
    dfx_tensor v;
    bool found = false;
    for (int i = 0; names[i] && !found; i++)
        found = lookup(w, names[i], &v, &idx);
    if (!found) {
        char spelled[512];
        if (w->n_aliases && w->namer && w->namer(w->namer_ctx, names[0], spelled, sizeof spelled))
            return dfx_error_set(DFX_ERR_NOT_FOUND, "%s: tensor '%s' is missing (what the model calls '%s')",
                                 path, spelled, names[0]);
        /* the first name is the one the current layout uses; legacy
         * spellings that were also tried follow in parentheses */
        char also[512] = "";
        size_t used = 0;
        for (int i = 1; names[i] && used < sizeof also; i++)
            used += (size_t)snprintf(also + used, sizeof also - used, "%s'%s'",
                                     i == 1 ? " (nor " : " or ", names[i]);
        if (names[1] && used < sizeof also)
            snprintf(also + used, sizeof also - used, ")");
        return dfx_error_set(DFX_ERR_NOT_FOUND, "%s: tensor '%s' is missing%s", path, names[0],
                             also);
    }
    char name[512];
    stored_desc(w, idx, name, sizeof name);
    /* an aliased set stands for another layout, whose kernels may carry
     * trailing size-1 dimensions the model's do not */
    if (!shape_equal(v.ndim, v.shape, ndim, shape) &&
        !(alt_ndim > 0 && shape_equal(v.ndim, v.shape, alt_ndim, alt_shape)) &&
        !(w->n_aliases && (shape_squeezes_to(v.ndim, v.shape, ndim, shape) ||
                           (alt_ndim > 0 && shape_squeezes_to(v.ndim, v.shape, alt_ndim, alt_shape))))) {
        char have[256], want[256];
        shape_str(v.ndim, v.shape, have, sizeof have);
        shape_str(ndim, shape, want, sizeof want);
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s' has shape %s but the model expects %s",
                             path, name, have, want);
    }
    int64_t n = dfx_tensor_numel(&v);
    float *data = dfx__aligned_alloc((size_t)n * sizeof *data);
    if (!data)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: tensor '%s': out of memory (%lld floats)", path,
                             name, (long long)n);
    dfx_status st = convert(w, name, &v, data, n);
    if (st) {
        free(data);
        return st;
    }
    /* the converted copy is what the model keeps: the file's pages it was
     * read from need not stay resident beside it (a full-size checkpoint
     * would otherwise count twice at the peak of loading) */
    dfx__safetensors_release(w->st, v.data, dfx_tensor_nbytes(&v));
    dfx__torch_release(w->torch, v.data, dfx_tensor_nbytes(&v));
    mark_used(w, idx);
    *out = data;
    return DFX_OK;
}

dfx_status dfx_weights_load_any(dfx_weights *w, const char *const *names, int ndim,
                                const int64_t *shape, float **out)
{
    return dfx__weights_load_alt(w, names, ndim, shape, 0, NULL, out);
}

dfx_status dfx_weights_load(dfx_weights *w, const char *name, int ndim, const int64_t *shape,
                            float **out)
{
    const char *names[2] = {name, NULL};
    return dfx__weights_load_alt(w, names, ndim, shape, 0, NULL, out);
}

dfx_status dfx_weights_check_used(const dfx_weights *w, const char *prefix)
{
    if (!w)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_weights_check_used: NULL weights");
    if (!prefix)
        prefix = "";
    if (w->rng)
        return DFX_OK;
    size_t plen = strlen(prefix);
    char list[1024] = "";
    size_t len = 0;
    int64_t unused = 0;
    /* an aliased set reports the aliases never loaded, by their stored
     * names (tensors without an alias belong to no model of this set) */
    const int64_t n = w->n_aliases ? w->n_aliases : w->count;
    for (int64_t i = 0; i < n; i++) {
        const char *name = w->n_aliases ? w->aliases[i].name : w->names[i];
        bool used = w->n_aliases ? w->aliases[i].used : (w->used[i / 8] >> (i % 8)) & 1u;
        if (strncmp(name, prefix, plen) != 0 || used)
            continue;
        char stored[512];
        stored_desc(w, i, stored, sizeof stored);
        if (unused < UNUSED_SHOWN && len < sizeof list)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s'%s'", unused ? ", " : "",
                                    stored);
        unused++;
    }
    if (!unused)
        return DFX_OK;
    char more[64] = "";
    if (unused > UNUSED_SHOWN)
        snprintf(more, sizeof more, " and %lld more", (long long)(unused - UNUSED_SHOWN));
    char under[300] = "";
    if (*prefix)
        snprintf(under, sizeof under, " under '%s'", prefix);
    return dfx_error_set(DFX_ERR_FORMAT,
                         "%s: %lld tensor%s%s %s not used by the model: %s%s (a checkpoint for "
                         "another configuration?)",
                         dfx_weights_path(w), (long long)unused, unused == 1 ? "" : "s", under,
                         unused == 1 ? "is" : "are", list, more);
}

int64_t dfx_weights_count(const dfx_weights *w)
{
    return w ? w->count : 0;
}

const char *dfx_weights_name(const dfx_weights *w, int64_t i)
{
    return w && i >= 0 && i < w->count ? w->names[i] : NULL;
}

const char *dfx_weights_format(const dfx_weights *w)
{
    return !w ? NULL : w->st ? "safetensors" : w->torch ? dfx__torch_format(w->torch) : "random";
}

dfx_status dfx_weights_view(const dfx_weights *w, const char *name, dfx_tensor *out)
{
    if (!w || !name || !out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_weights_view: NULL argument");
    int64_t slot;
    if (w->rng || !lookup(w, name, out, &slot)) {
        memset(out, 0, sizeof *out);
        return dfx_error_set(DFX_ERR_NOT_FOUND, "%s: no tensor named '%s'", dfx_weights_path(w),
                             name);
    }
    return DFX_OK;
}
