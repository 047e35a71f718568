/* safetensors: a memory-mapped reader that validates the whole header before
 * handing out a single byte (files come from the internet), sharded sets
 * through their *.index.json, and an atomic writer.
 * Format: u64 little-endian header length N, N bytes of JSON, then the data
 * region that the header's data_offsets index. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"
#include "dfx/json.h"
#include "dfx/safetensors.h"

/* The reference implementation refuses headers above 100 MB; a header this
 * large already describes millions of tensors. */
#define HEADER_MAX ((uint64_t)100 << 20)

typedef struct st_tensor {
    char *name;
    dfx_dtype dtype;
    int ndim;
    int64_t shape[DFX_MAX_DIMS];
    uint64_t begin, end;        /* into the data region of its file */
    int file;
} st_tensor;

typedef struct st_file {
    char *path;                 /* as it appears in messages */
    const unsigned char *data;  /* the data region */
    uint64_t data_size;
    void *map;                  /* the whole mapped file, or NULL */
    size_t map_size;
} st_file;

struct dfx_safetensors {
    char *path;
    st_file *files;
    int nfiles;
    st_tensor *tensors;         /* file by file, by offset within a file */
    int64_t count;
    st_tensor **by_name;        /* sorted by name, for lookups */
    char **meta_keys;
    char **meta_values;
    int64_t meta_count;
};

static const char *a_type(const dfx_json *v)
{
    switch (dfx_json_type_of(v)) {
    case DFX_JSON_NULL: return "null";
    case DFX_JSON_BOOL: return "a boolean";
    case DFX_JSON_NUMBER: return "a number";
    case DFX_JSON_STRING: return "a string";
    case DFX_JSON_ARRAY: return "an array";
    case DFX_JSON_OBJECT: return "an object";
    }
    return "?";
}

/* A JSON value as the user wrote it, near enough for a message. */
static const char *value_str(const dfx_json *v, char *buf, size_t size)
{
    int64_t i;
    if (dfx_json_int(v, &i)) {
        snprintf(buf, size, "%lld", (long long)i);
        return buf;
    }
    if (dfx_json_type_of(v) != DFX_JSON_NUMBER)
        return a_type(v);
    double d = dfx_json_number(v);
    if (isnan(d))
        return "NaN";
    if (isinf(d))
        return d < 0 ? "-Infinity" : "Infinity";
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    /* 2.0 is not an integer literal: do not print it as "2" */
    if (!strpbrk(buf, ".,e"))
        snprintf(buf + strlen(buf), size - strlen(buf), ".0");
    return buf;
}

static const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? "," : "",
                                 (long long)shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
    return buf;
}

/* Byte size of a shape. The element count is multiplied in the same order as
 * dfx_tensor_numel and must fit int64 at every step, so that no caller can
 * overflow later, even for shapes with a zero dimension. */
static bool shape_nbytes(dfx_dtype dtype, int ndim, const int64_t *shape, uint64_t *out)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return false;
        if (shape[i] != 0 && n > INT64_MAX / shape[i])
            return false;
        n *= shape[i];
    }
    uint64_t es = dfx_dtype_size(dtype);
    if ((uint64_t)n > UINT64_MAX / es || (uint64_t)n * es > SIZE_MAX)
        return false;
    *out = (uint64_t)n * es;
    return true;
}

static bool utf8_valid(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        unsigned char c = *s;
        size_t len;
        uint32_t v, min;
        if (c < 0x80) {
            s++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            len = 2, v = c & 0x1fu, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3, v = c & 0x0fu, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4, v = c & 0x07u, min = 0x10000;
        } else {
            return false;
        }
        for (size_t i = 1; i < len; i++) {
            if ((s[i] & 0xc0u) != 0x80u)
                return false;
            v = (v << 6) | (s[i] & 0x3fu);
        }
        if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
            return false;
        s += len;
    }
    return true;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first string that occurs twice, or NULL. Sorts `v` in place. */
static const char *first_duplicate(const char **v, int64_t n)
{
    if (n < 2)
        return NULL;
    qsort(v, (size_t)n, sizeof *v, cmp_str_ptr);
    for (int64_t i = 1; i < n; i++)
        if (strcmp(v[i - 1], v[i]) == 0)
            return v[i];
    return NULL;
}

static dfx_status no_memory(const char *name)
{
    return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", name);
}

static dfx_safetensors *set_new(const char *path)
{
    dfx_safetensors *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->path = strdup(path);
    if (!s->path) {
        free(s);
        return NULL;
    }
    return s;
}

/* Adds a file entry named `path`; returns its index or -1 without memory. */
static int set_add_file(dfx_safetensors *s, const char *path)
{
    st_file *f = realloc(s->files, (size_t)(s->nfiles + 1) * sizeof *f);
    if (!f)
        return -1;
    s->files = f;
    memset(&f[s->nfiles], 0, sizeof *f);
    f[s->nfiles].path = strdup(path);
    if (!f[s->nfiles].path)
        return -1;
    return s->nfiles++;
}

static dfx_status set_add_meta(dfx_safetensors *s, const char *key, const char *value)
{
    size_t n = (size_t)s->meta_count + 1;
    char **k = realloc(s->meta_keys, n * sizeof *k);
    if (!k)
        return no_memory(s->path);
    s->meta_keys = k;
    char **v = realloc(s->meta_values, n * sizeof *v);
    if (!v)
        return no_memory(s->path);
    s->meta_values = v;
    k[n - 1] = strdup(key);
    v[n - 1] = strdup(value);
    if (!k[n - 1] || !v[n - 1]) {
        free(k[n - 1]);
        free(v[n - 1]);
        return no_memory(s->path);
    }
    s->meta_count++;
    return DFX_OK;
}

void dfx_safetensors_close(dfx_safetensors *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->nfiles; i++) {
        if (s->files[i].map)
            munmap(s->files[i].map, s->files[i].map_size);
        free(s->files[i].path);
    }
    for (int64_t i = 0; i < s->count; i++)
        free(s->tensors[i].name);
    for (int64_t i = 0; i < s->meta_count; i++) {
        free(s->meta_keys[i]);
        free(s->meta_values[i]);
    }
    free(s->files);
    free(s->tensors);
    free(s->by_name);
    free(s->meta_keys);
    free(s->meta_values);
    free(s->path);
    free(s);
}

static bool has_nul(const dfx_json *str)
{
    return strlen(dfx_json_string(str)) != dfx_json_string_len(str);
}

/* Validates "__metadata__" (or an index's "metadata" with strings_only,
 * where other values are skipped); keeps the pairs when `keep`. */
static dfx_status parse_meta(dfx_safetensors *s, const char *file, const char *what,
                             const dfx_json *m, bool strings_only, bool keep)
{
    if (dfx_json_type_of(m) != DFX_JSON_OBJECT)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: \"%s\" is %s, expected an object of strings",
                             file, what, a_type(m));
    int64_t n = dfx_json_size(m);
    const char **keys = malloc((size_t)(n ? n : 1) * sizeof *keys);
    if (!keys)
        return no_memory(file);
    int64_t nkeys = 0;
    dfx_status st = DFX_OK;
    for (int64_t i = 0; i < n && !st; i++) {
        const char *key = dfx_json_key_at(m, i);
        const dfx_json *v = dfx_json_value_at(m, i);
        if (dfx_json_type_of(v) != DFX_JSON_STRING) {
            if (!strings_only)
                st = dfx_error_set(DFX_ERR_FORMAT,
                                   "%s: \"%s\" entry '%s' is %s, expected a string",
                                   file, what, key, a_type(v));
            continue;
        }
        if (strlen(key) != dfx__json_key_len(m, i) || has_nul(v))
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: \"%s\" entry '%s' contains a NUL character",
                               file, what, key);
        else
            keys[nkeys++] = key;
    }
    const char *dup = st ? NULL : first_duplicate(keys, nkeys);
    if (dup)
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: \"%s\" entry '%s' appears more than once",
                           file, what, dup);
    free(keys);
    for (int64_t i = 0; i < n && keep && !st; i++) {
        const dfx_json *v = dfx_json_value_at(m, i);
        if (dfx_json_type_of(v) == DFX_JSON_STRING)
            st = set_add_meta(s, dfx_json_key_at(m, i), dfx_json_string(v));
    }
    return st;
}

/* A non-negative integer that fits int64, else an error naming it. */
static dfx_status get_index(const char *file, const char *name, const char *field,
                            int64_t index, const dfx_json *v, int64_t *out)
{
    char buf[64];
    if (dfx_json_int(v, out) && *out >= 0)
        return DFX_OK;
    return dfx_error_set(DFX_ERR_FORMAT,
                         "%s: tensor '%s': %s[%lld] is %s, expected a non-negative 64-bit integer",
                         file, name, field, (long long)index, value_str(v, buf, sizeof buf));
}

static dfx_status parse_entry(const char *file, const char *name, const dfx_json *e,
                              uint64_t data_size, st_tensor *t)
{
    static const char *const fields[3] = {"dtype", "shape", "data_offsets"};
    const dfx_json *val[3] = {NULL, NULL, NULL};
    char b1[256], b2[64];

    if (dfx_json_type_of(e) != DFX_JSON_OBJECT)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s' is %s, expected an object "
                             "with dtype, shape and data_offsets", file, name, a_type(e));
    for (int64_t i = 0; i < dfx_json_size(e); i++) {
        const char *key = dfx_json_key_at(e, i);
        int k = 0;
        while (k < 3 && strcmp(key, fields[k]) != 0)
            k++;
        if (k == 3)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': unexpected key '%s' "
                                 "(an entry has exactly dtype, shape and data_offsets)",
                                 file, name, key);
        if (val[k])
            return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': key '%s' appears more than once",
                                 file, name, key);
        val[k] = dfx_json_value_at(e, i);
    }
    for (int k = 0; k < 3; k++)
        if (!val[k])
            return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': missing \"%s\"",
                                 file, name, fields[k]);

    const char *dtype = dfx_json_string(val[0]);
    if (!dtype)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': dtype is %s, expected a string such as \"F32\"",
                             file, name, a_type(val[0]));
    if (has_nul(val[0]))
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': dtype '%s\\u0000...' contains a "
                             "NUL character", file, name, dtype);
    if (!dfx_dtype_parse(dtype, &t->dtype)) {
        size_t used = 0;
        b1[0] = '\0';
        for (int d = 0; d < DFX_DTYPE__COUNT && used < sizeof b1; d++)
            used += (size_t)snprintf(b1 + used, sizeof b1 - used, "%s%s", d ? ", " : "",
                                     dfx_dtype_name((dfx_dtype)d));
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%s' (known: %s)",
                             file, name, dtype, b1);
    }

    if (dfx_json_type_of(val[1]) != DFX_JSON_ARRAY)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': shape is %s, expected an array "
                             "of non-negative integers", file, name, a_type(val[1]));
    int64_t ndim = dfx_json_size(val[1]);
    if (ndim > DFX_MAX_DIMS)
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: tensor '%s': shape has %lld dimensions, "
                             "dfx supports at most %d", file, name, (long long)ndim, DFX_MAX_DIMS);
    t->ndim = (int)ndim;
    for (int i = 0; i < t->ndim; i++) {
        dfx_status st = get_index(file, name, "shape", i, dfx_json_at(val[1], i), &t->shape[i]);
        if (st)
            return st;
    }

    if (dfx_json_type_of(val[2]) != DFX_JSON_ARRAY || dfx_json_size(val[2]) != 2) {
        if (dfx_json_type_of(val[2]) == DFX_JSON_ARRAY)
            snprintf(b2, sizeof b2, "an array of %lld elements", (long long)dfx_json_size(val[2]));
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': data_offsets is %s, expected "
                             "[begin, end]", file, name,
                             dfx_json_type_of(val[2]) == DFX_JSON_ARRAY ? b2 : a_type(val[2]));
    }
    int64_t off[2];
    for (int i = 0; i < 2; i++) {
        dfx_status st = get_index(file, name, "data_offsets", i, dfx_json_at(val[2], i), &off[i]);
        if (st)
            return st;
    }
    t->begin = (uint64_t)off[0];
    t->end = (uint64_t)off[1];
    if (t->begin > t->end)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] end "
                             "before they begin", file, name,
                             (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > data_size)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] past "
                             "the end of the data (%llu bytes; truncated file?)", file, name,
                             (unsigned long long)t->begin, (unsigned long long)t->end,
                             (unsigned long long)data_size);
    uint64_t nbytes;
    if (!shape_nbytes(t->dtype, t->ndim, t->shape, &nbytes))
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': shape %s has too many elements "
                             "(its size overflows 64 bits)", file, name,
                             shape_str(t->ndim, t->shape, b1, sizeof b1));
    if (nbytes != t->end - t->begin)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': shape %s of %s is %llu bytes but "
                             "data_offsets [%llu, %llu] span %llu", file, name,
                             shape_str(t->ndim, t->shape, b1, sizeof b1), dfx_dtype_name(t->dtype),
                             (unsigned long long)nbytes, (unsigned long long)t->begin,
                             (unsigned long long)t->end, (unsigned long long)(t->end - t->begin));
    return DFX_OK;
}

/* Member i of the header is "__metadata__" (an escaped NUL after it makes it
 * a tensor name, which is then refused). */
static bool is_metadata_key(const dfx_json *header, int64_t i)
{
    return dfx__json_key_len(header, i) == 12 &&
           strcmp(dfx_json_key_at(header, i), "__metadata__") == 0;
}

static int cmp_offsets(const void *a, const void *b)
{
    const st_tensor *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Parses and checks the image of file `fi` (the whole file), appending its
 * tensors to the set in offset order; keeps "__metadata__" when keep_meta. */
static dfx_status parse_image(dfx_safetensors *s, int fi, const unsigned char *img,
                              size_t size, bool keep_meta)
{
    const char *file = s->files[fi].path;
    if (size < 8)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: the file is %zu bytes, too short for a "
                             "safetensors file (an 8-byte header length comes first)", file, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | img[i];
    if (n == 0)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: the header length is 0, expected a JSON "
                             "object (at least \"{}\")", file);
    if (n > size - 8)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: the header length %llu is larger than the "
                             "rest of the file (%zu bytes; truncated or not a safetensors file?)",
                             file, (unsigned long long)n, size - 8);
    if (n > HEADER_MAX)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: the header length %llu exceeds the 100 MiB limit",
                             file, (unsigned long long)n);

    const uint64_t data_size = size - 8 - n;
    s->files[fi].data = img + 8 + n;
    s->files[fi].data_size = data_size;

    size_t olen = strlen(file) + sizeof " header";
    char *origin = malloc(olen);
    if (!origin)
        return no_memory(file);
    snprintf(origin, olen, "%s header", file);
    dfx_json *doc;
    dfx_status st = dfx_json_parse((const char *)img + 8, (size_t)n, origin, &doc);
    free(origin);
    if (st)
        return st;
    if (dfx_json_type_of(doc) != DFX_JSON_OBJECT) {
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: the header is %s, expected a JSON object",
                           file, a_type(doc));
        dfx_json_destroy(doc);
        return st;
    }

    int64_t members = dfx_json_size(doc);
    st_tensor *ts = calloc((size_t)(members ? members : 1), sizeof *ts);
    const char **names = malloc((size_t)(members ? members : 1) * sizeof *names);
    int64_t nt = 0;
    bool seen_meta = false;
    if (!ts || !names) {
        st = no_memory(file);
        goto done;
    }
    for (int64_t i = 0; i < members; i++) {
        const char *key = dfx_json_key_at(doc, i);
        const dfx_json *v = dfx_json_value_at(doc, i);
        if (is_metadata_key(doc, i)) {
            if (seen_meta) {
                st = dfx_error_set(DFX_ERR_FORMAT, "%s: \"__metadata__\" appears more than once", file);
                goto done;
            }
            seen_meta = true;
            st = parse_meta(s, file, "__metadata__", v, false, keep_meta);
            if (st)
                goto done;
            continue;
        }
        if (strlen(key) != dfx__json_key_len(doc, i)) {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: tensor name '%s\\u0000...' contains a NUL "
                               "character", file, key);
            goto done;
        }
        st = parse_entry(file, key, v, data_size, &ts[nt]);
        if (st)
            goto done;
        names[nt++] = key;
    }
    const char *dup = first_duplicate(names, nt);
    if (dup) {
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s' appears more than once in the header",
                           file, dup);
        goto done;
    }
    /* the names are checked; give each entry its own copy, then sort */
    for (int64_t i = 0, k = 0; i < members; i++) {
        if (is_metadata_key(doc, i))
            continue;
        ts[k].name = strdup(dfx_json_key_at(doc, i));
        ts[k].file = fi;
        if (!ts[k++].name) {
            st = no_memory(file);
            goto done;
        }
    }
    qsort(ts, (size_t)nt, sizeof *ts, cmp_offsets);

    /* the tensors must tile the data region exactly */
    uint64_t expect = 0;
    for (int64_t i = 0; i < nt; i++) {
        if (ts[i].begin < expect) {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap",
                               file, ts[i - 1].name, (unsigned long long)ts[i - 1].begin,
                               (unsigned long long)ts[i - 1].end, ts[i].name,
                               (unsigned long long)ts[i].begin, (unsigned long long)ts[i].end);
            goto done;
        }
        if (ts[i].begin > expect) {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: data bytes [%llu, %llu) belong to no tensor "
                               "(a gap before tensor '%s')", file, (unsigned long long)expect,
                               (unsigned long long)ts[i].begin, ts[i].name);
            goto done;
        }
        expect = ts[i].end;
    }
    if (expect != data_size) {
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: the last %llu bytes of the data (from offset %llu) "
                           "belong to no tensor", file, (unsigned long long)(data_size - expect),
                           (unsigned long long)expect);
        goto done;
    }

    st_tensor *all = realloc(s->tensors, (size_t)(s->count + nt ? s->count + nt : 1) * sizeof *all);
    if (!all) {
        st = no_memory(file);
        goto done;
    }
    s->tensors = all;
    memcpy(all + s->count, ts, (size_t)nt * sizeof *ts);
    s->count += nt;
    nt = 0;

done:
    if (ts)
        for (int64_t i = 0; i < nt; i++)
            free(ts[i].name);
    free(ts);
    free(names);
    dfx_json_destroy(doc);
    return st;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp((*(st_tensor *const *)a)->name, (*(st_tensor *const *)b)->name);
}

/* Sorts the name index; a name in two files (of a sharded set) is an error. */
static dfx_status build_index(dfx_safetensors *s)
{
    s->by_name = malloc((size_t)(s->count ? s->count : 1) * sizeof *s->by_name);
    if (!s->by_name)
        return no_memory(s->path);
    for (int64_t i = 0; i < s->count; i++)
        s->by_name[i] = &s->tensors[i];
    qsort(s->by_name, (size_t)s->count, sizeof *s->by_name, cmp_tensor_name);
    for (int64_t i = 1; i < s->count; i++) {
        const st_tensor *a = s->by_name[i - 1], *b = s->by_name[i];
        if (strcmp(a->name, b->name) == 0)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s' is in both %s and %s",
                                 s->path, a->name, s->files[a->file].path,
                                 s->files[b->file].path);
    }
    return DFX_OK;
}

static const st_tensor *find(const dfx_safetensors *s, const char *name)
{
    size_t lo = 0, hi = s && name ? (size_t)s->count : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->by_name[mid]->name, name);
        if (c == 0)
            return s->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static dfx_status map_file(const char *path, void **map, size_t *size)
{
    struct stat sb;
    *map = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return dfx_error_set(errno == ENOENT ? DFX_ERR_NOT_FOUND : DFX_ERR_IO,
                             "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return dfx_error_set(DFX_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: too large to map", path);
    }
    if (sb.st_size > 0) {
        void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            return dfx_error_set(DFX_ERR_IO, "%s: cannot map %lld bytes: %s", path,
                                 (long long)sb.st_size, strerror(e));
        }
        *map = m;
        *size = (size_t)sb.st_size;
    }
    close(fd);
    return DFX_OK;
}

/* Maps path as file entry fi and parses it. */
static dfx_status load_file(dfx_safetensors *s, int fi, bool keep_meta)
{
    st_file *f = &s->files[fi];
    dfx_status st = map_file(f->path, &f->map, &f->map_size);
    if (st)
        return st;
    return parse_image(s, fi, f->map, f->map_size, keep_meta);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static dfx_status open_index(const char *path, dfx_safetensors **out)
{
    dfx_json *doc;
    dfx_status st = dfx_json_parse_file(path, &doc);
    if (st)
        return st;
    dfx_safetensors *s = set_new(path);
    const char **shards = NULL;
    char *full = NULL;
    if (!s) {
        st = no_memory(path);
        goto fail;
    }
    if (dfx_json_type_of(doc) != DFX_JSON_OBJECT) {
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: the index is %s, expected an object with \"weight_map\"",
                           path, a_type(doc));
        goto fail;
    }
    const dfx_json *wm = dfx_json_get(doc, "weight_map");
    if (dfx_json_type_of(wm) != DFX_JSON_OBJECT) {
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: \"weight_map\" is %s, expected an object "
                           "{tensor name: shard file} (is this a sharded safetensors index?)",
                           path, wm ? a_type(wm) : "missing");
        goto fail;
    }
    int64_t n = dfx_json_size(wm);
    shards = malloc((size_t)(n ? n : 1) * sizeof *shards);
    if (!shards) {
        st = no_memory(path);
        goto fail;
    }
    for (int64_t i = 0; i < n; i++) {
        const char *name = dfx_json_key_at(wm, i);
        const dfx_json *v = dfx_json_value_at(wm, i);
        const char *shard = dfx_json_string(v);
        if (strlen(name) != dfx__json_key_len(wm, i)) {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: weight_map name '%s\\u0000...' contains a "
                               "NUL character", path, name);
            goto fail;
        }
        if (!shard || !*shard || has_nul(v) || shard[0] == '/') {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: weight_map entry '%s' is %s, expected the "
                               "name of a shard file in the index's folder", path, name,
                               shard ? "not a relative file name" : a_type(v));
            goto fail;
        }
        shards[i] = name;
    }
    const char *dup = first_duplicate(shards, n);
    if (dup) {
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s' appears more than once in weight_map",
                           path, dup);
        goto fail;
    }
    for (int64_t i = 0; i < n; i++)
        shards[i] = dfx_json_string(dfx_json_value_at(wm, i));
    qsort(shards, (size_t)n, sizeof *shards, cmp_str_ptr);

    const char *slash = strrchr(path, '/');
    size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;
    for (int64_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(shards[i], shards[i - 1]) == 0)
            continue;
        size_t len = dirlen + strlen(shards[i]) + 1;
        full = malloc(len);
        if (!full) {
            st = no_memory(path);
            goto fail;
        }
        snprintf(full, len, "%.*s%s", (int)dirlen, path, shards[i]);
        int fi = set_add_file(s, full);
        free(full);
        full = NULL;
        if (fi < 0) {
            st = no_memory(path);
            goto fail;
        }
        st = load_file(s, fi, false);
        if (st) {
            dfx_error_prefix(st, "%s: shard '%s' listed in weight_map: ", path, shards[i]);
            goto fail;
        }
    }

    const dfx_json *meta = dfx_json_get(doc, "metadata");
    if (meta) {
        st = parse_meta(s, path, "metadata", meta, true, true);
        if (st)
            goto fail;
    }
    st = build_index(s);
    if (st)
        goto fail;
    for (int64_t i = 0; i < n; i++) {
        const char *name = dfx_json_key_at(wm, i);
        const char *shard = dfx_json_string(dfx_json_value_at(wm, i));
        const st_tensor *t = find(s, name);
        if (!t) {
            st = dfx_error_set(DFX_ERR_NOT_FOUND, "%s: tensor '%s' is mapped to '%s' but that "
                               "file has no such tensor", path, name, shard);
            goto fail;
        }
        const char *in = s->files[t->file].path + dirlen;
        if (strcmp(in, shard) != 0) {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s' is mapped to '%s' but it is in '%s'",
                               path, name, shard, in);
            goto fail;
        }
    }
    free(shards);
    dfx_json_destroy(doc);
    *out = s;
    return DFX_OK;

fail:
    free(shards);
    dfx_json_destroy(doc);
    dfx_safetensors_close(s);
    return st;
}

dfx_status dfx_safetensors_open(const char *path, dfx_safetensors **out)
{
    if (!out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_safetensors_open: out is NULL");
    *out = NULL;
    if (!path)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_safetensors_open: path is NULL");
    if (ends_with(path, ".json"))
        return open_index(path, out);
    dfx_safetensors *s = set_new(path);
    if (!s || set_add_file(s, path) < 0) {
        dfx_safetensors_close(s);
        return no_memory(path);
    }
    dfx_status st = load_file(s, 0, true);
    if (!st)
        st = build_index(s);
    if (st) {
        dfx_safetensors_close(s);
        return st;
    }
    *out = s;
    return DFX_OK;
}

dfx_status dfx__safetensors_open_memory(const char *name, const void *data, size_t size,
                                        dfx_safetensors **out)
{
    *out = NULL;
    dfx_safetensors *s = set_new(name);
    if (!s || set_add_file(s, name) < 0) {
        dfx_safetensors_close(s);
        return no_memory(name);
    }
    dfx_status st = parse_image(s, 0, data, size, true);
    if (!st)
        st = build_index(s);
    if (st) {
        dfx_safetensors_close(s);
        return st;
    }
    *out = s;
    return DFX_OK;
}

int64_t dfx_safetensors_count(const dfx_safetensors *s)
{
    return s ? s->count : 0;
}

const char *dfx_safetensors_name(const dfx_safetensors *s, int64_t i)
{
    if (!s || i < 0 || i >= s->count)
        return NULL;
    return s->tensors[i].name;
}

bool dfx_safetensors_has(const dfx_safetensors *s, const char *name)
{
    return find(s, name) != NULL;
}

dfx_status dfx_safetensors_view(const dfx_safetensors *s, const char *name, dfx_tensor *out)
{
    if (!s || !name || !out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_safetensors_view: NULL argument");
    memset(out, 0, sizeof *out);
    const st_tensor *t = find(s, name);
    if (!t)
        return dfx_error_set(DFX_ERR_NOT_FOUND, "%s: no tensor named '%s'", s->path, name);
    const st_file *f = &s->files[t->file];
    /* the mapping is read-only: the view's data must not be written */
    *out = dfx_tensor_view(t->dtype, t->ndim, t->shape, (void *)(uintptr_t)(f->data + t->begin));
    return DFX_OK;
}

dfx_status dfx_safetensors_read(const dfx_safetensors *s, const char *name, dfx_dtype dtype,
                                dfx_tensor **out)
{
    dfx_tensor v;
    if (!out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_safetensors_read: out is NULL");
    *out = NULL;
    dfx_status st = dfx_safetensors_view(s, name, &v);
    if (st)
        return st;
    const char *file = s->files[find(s, name)->file].path;
    if ((unsigned)dtype >= DFX_DTYPE__COUNT)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: tensor '%s': invalid target dtype %d",
                             file, name, (int)dtype);
    size_t es = dfx_dtype_size(v.dtype);
    dfx_tensor *copy = NULL;
    /* a plain copy keeps every dtype (F8 included); conversion needs the
     * source aligned for its element type */
    if (dtype == v.dtype || (uintptr_t)v.data % es != 0) {
        st = dfx_tensor_create(&copy, v.dtype, v.ndim, v.shape);
        if (st)
            return dfx_error_prefix(st, "%s: tensor '%s': ", file, name);
        memcpy(copy->data, v.data, dfx_tensor_nbytes(&v));
        if (dtype == v.dtype) {
            *out = copy;
            return DFX_OK;
        }
    }
    st = dfx_tensor_convert(copy ? copy : &v, dtype, out);
    dfx_tensor_destroy(copy);
    if (st)
        return dfx_error_prefix(st, "%s: tensor '%s': ", file, name);
    return DFX_OK;
}

int64_t dfx_safetensors_metadata_count(const dfx_safetensors *s)
{
    return s ? s->meta_count : 0;
}

const char *dfx_safetensors_metadata_key(const dfx_safetensors *s, int64_t i)
{
    if (!s || i < 0 || i >= s->meta_count)
        return NULL;
    return s->meta_keys[i];
}

const char *dfx_safetensors_metadata(const dfx_safetensors *s, const char *key)
{
    if (!s || !key)
        return NULL;
    for (int64_t i = 0; i < s->meta_count; i++)
        if (strcmp(s->meta_keys[i], key) == 0)
            return s->meta_values[i];
    return NULL;
}

const char *dfx_safetensors_path(const dfx_safetensors *s)
{
    return s ? s->path : NULL;
}

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->cap - b->n < n + 1) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->n < n + 1) {
            if (cap > SIZE_MAX / 2) {
                b->oom = true;
                return;
            }
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_printf(sbuf *b, const char *fmt, ...) DFX_PRINTF(2, 3);

static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    /* callers format a few numbers; a longer result would be a bug here */
    if (n < 0 || (size_t)n >= sizeof tmp)
        b->oom = true;
    else
        sb_put(b, tmp, (size_t)n);
}

/* A JSON string literal; the input is valid UTF-8 (checked by the caller). */
static void sb_string(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\b': sb_put(b, "\\b", 2); break;
        case '\f': sb_put(b, "\\f", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        default:
            if (c < 0x20)
                sb_printf(b, "\\u%04x", c);
            else
                sb_put(b, s, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static dfx_status check_input(const char *name, int64_t count, const char *const *names,
                              const dfx_tensor *const *tensors, int64_t meta_count,
                              const char *const *meta_keys, const char *const *meta_values)
{
    if (count < 0 || (count > 0 && (!names || !tensors)))
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: invalid tensor list (count %lld)",
                             name, (long long)count);
    if (meta_count < 0 || (meta_count > 0 && (!meta_keys || !meta_values)))
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: invalid metadata list (count %lld)",
                             name, (long long)meta_count);
    for (int64_t i = 0; i < count; i++) {
        const dfx_tensor *t = tensors[i];
        const char *tn = names[i];
        uint64_t nbytes;
        if (!tn || !utf8_valid(tn))
            return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: tensor %lld: the name is %s",
                                 name, (long long)i, tn ? "not valid UTF-8" : "NULL");
        if (strcmp(tn, "__metadata__") == 0)
            return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: \"__metadata__\" is reserved and "
                                 "cannot name a tensor", name);
        if (!t)
            return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: tensor '%s' is NULL", name, tn);
        if ((unsigned)t->dtype >= DFX_DTYPE__COUNT)
            return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: tensor '%s': unsupported dtype %d",
                                 name, tn, (int)t->dtype);
        if (t->ndim < 0 || t->ndim > DFX_MAX_DIMS)
            return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: tensor '%s': ndim %d is outside [0, %d]",
                                 name, tn, t->ndim, DFX_MAX_DIMS);
        if (!shape_nbytes(t->dtype, t->ndim, t->shape, &nbytes)) {
            char b[256];
            return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: tensor '%s': invalid shape %s "
                                 "(negative or too large)", name, tn,
                                 shape_str(t->ndim, t->shape, b, sizeof b));
        }
        if (nbytes > 0 && !t->data)
            return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: tensor '%s' has no data", name, tn);
    }
    for (int64_t i = 0; i < meta_count; i++) {
        if (!meta_keys[i] || !meta_values[i])
            return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: metadata entry %lld is NULL",
                                 name, (long long)i);
        if (!utf8_valid(meta_keys[i]) || !utf8_valid(meta_values[i]))
            return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: metadata entry %lld is not valid UTF-8",
                                 name, (long long)i);
    }

    int64_t most = count > meta_count ? count : meta_count;
    const char **v = malloc((size_t)(most ? most : 1) * sizeof *v);
    if (!v)
        return no_memory(name);
    if (count)
        memcpy(v, names, (size_t)count * sizeof *v);
    const char *dup = first_duplicate(v, count);
    if (dup) {
        dfx_status st = dfx_error_set(DFX_ERR_INVALID_ARG, "%s: tensor name '%s' is given "
                                      "more than once", name, dup);
        free(v);
        return st;
    }
    if (meta_count)
        memcpy(v, meta_keys, (size_t)meta_count * sizeof *v);
    dup = first_duplicate(v, meta_count);
    free(v);
    if (dup)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: metadata key '%s' is given more than once",
                             name, dup);
    return DFX_OK;
}

static dfx_status write_all(FILE *fp, const char *name, const void *p, size_t n)
{
    if (n && fwrite(p, 1, n, fp) != n)
        return dfx_error_set(DFX_ERR_IO, "%s: write failed: %s", name, strerror(errno));
    return DFX_OK;
}

dfx_status dfx__safetensors_write_stream(FILE *fp, const char *name, int64_t count,
                                         const char *const *names,
                                         const dfx_tensor *const *tensors,
                                         int64_t meta_count, const char *const *meta_keys,
                                         const char *const *meta_values)
{
    dfx_status st = check_input(name, count, names, tensors, meta_count, meta_keys, meta_values);
    if (st)
        return st;

    /* safetensors writers put __metadata__ first; readers accept any order */
    sbuf b = {NULL, 0, 0, false};
    sb_put(&b, "{", 1);
    if (meta_count) {
        sb_put(&b, "\"__metadata__\":{", 16);
        for (int64_t i = 0; i < meta_count; i++) {
            if (i)
                sb_put(&b, ",", 1);
            sb_string(&b, meta_keys[i]);
            sb_put(&b, ":", 1);
            sb_string(&b, meta_values[i]);
        }
        sb_put(&b, "}", 1);
    }
    uint64_t offset = 0;
    for (int64_t i = 0; i < count; i++) {
        const dfx_tensor *t = tensors[i];
        uint64_t nbytes = 0;
        shape_nbytes(t->dtype, t->ndim, t->shape, &nbytes);
        if (i || meta_count)
            sb_put(&b, ",", 1);
        sb_string(&b, names[i]);
        sb_printf(&b, ":{\"dtype\":\"%s\",\"shape\":[", dfx_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            sb_printf(&b, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        sb_printf(&b, "],\"data_offsets\":[%llu,", (unsigned long long)offset);
        if (nbytes > UINT64_MAX - offset) {
            free(b.p);
            return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: the tensors add up to more than "
                                 "2^64 bytes", name);
        }
        offset += nbytes;
        sb_printf(&b, "%llu]}", (unsigned long long)offset);
    }
    sb_put(&b, "}", 1);
    /* 8-byte alignment of the data region (relative to the file start) */
    while (!b.oom && b.n % 8 != 0)
        sb_put(&b, " ", 1);
    if (b.oom) {
        free(b.p);
        return no_memory(name);
    }
    if ((uint64_t)b.n > HEADER_MAX) {
        st = dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: the header would be %zu bytes, more than "
                           "the 100 MiB that readers accept", name, b.n);
        free(b.p);
        return st;
    }

    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)b.n >> (8 * i));
    st = write_all(fp, name, len8, 8);
    if (!st)
        st = write_all(fp, name, b.p, b.n);
    free(b.p);
    for (int64_t i = 0; i < count && !st; i++) {
        uint64_t nbytes = 0;
        shape_nbytes(tensors[i]->dtype, tensors[i]->ndim, tensors[i]->shape, &nbytes);
        st = write_all(fp, name, tensors[i]->data, (size_t)nbytes);
    }
    return st;
}

dfx_status dfx_safetensors_write(const char *path, int64_t count, const char *const *names,
                                 const dfx_tensor *const *tensors, int64_t meta_count,
                                 const char *const *meta_keys, const char *const *meta_values)
{
    dfx__outfile f;
    if (!path)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_safetensors_write: path is NULL");
    /* refuse bad input before touching the file system */
    dfx_status st = check_input(path, count, names, tensors, meta_count, meta_keys, meta_values);
    if (st)
        return st;
    st = dfx__outfile_open(&f, path);
    if (st)
        return st;
    st = dfx__safetensors_write_stream(f.fp, path, count, names, tensors, meta_count,
                                       meta_keys, meta_values);
    if (st) {
        dfx__outfile_abort(&f);
        return st;
    }
    return dfx__outfile_commit(&f);
}

void dfx__safetensors_release(const dfx_safetensors *st, const void *p, size_t n)
{
    for (int i = 0; st && i < st->nfiles; i++)
        dfx__mapping_release(st->files[i].map, st->files[i].map_size, p, n);
}
