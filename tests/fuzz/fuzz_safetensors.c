/* libFuzzer target: the safetensors header checks, straight from memory.
 * An accepted image must behave: every view lies inside the input, every
 * tensor reads, and writing the set back out and reading it again gives the
 * same names, dtypes, shapes, bytes and metadata. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "dfx/safetensors.h"

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            __builtin_trap();                                                  \
    } while (0)

static void check_round_trip(const dfx_safetensors *st, const dfx_tensor *views)
{
    int64_t n = dfx_safetensors_count(st), m = dfx_safetensors_metadata_count(st);
    const char **names = malloc((size_t)(n + 1) * sizeof *names);
    const dfx_tensor **ts = malloc((size_t)(n + 1) * sizeof *ts);
    const char **keys = malloc((size_t)(m + 1) * sizeof *keys);
    const char **vals = malloc((size_t)(m + 1) * sizeof *vals);
    CHECK(names && ts && keys && vals);
    for (int64_t i = 0; i < n; i++) {
        names[i] = dfx_safetensors_name(st, i);
        ts[i] = &views[i];
    }
    for (int64_t i = 0; i < m; i++) {
        keys[i] = dfx_safetensors_metadata_key(st, i);
        vals[i] = dfx_safetensors_metadata(st, keys[i]);
    }

    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    CHECK(fp);
    CHECK(dfx__safetensors_write_stream(fp, "copy", n, names, ts, m, keys, vals) == DFX_OK);
    CHECK(fclose(fp) == 0);

    dfx_safetensors *again = NULL;
    CHECK(dfx__safetensors_open_memory("copy", buf, len, &again) == DFX_OK);
    CHECK(dfx_safetensors_count(again) == n);
    CHECK(dfx_safetensors_metadata_count(again) == m);
    for (int64_t i = 0; i < n; i++) {
        dfx_tensor v;
        CHECK(dfx_safetensors_view(again, names[i], &v) == DFX_OK);
        CHECK(v.dtype == views[i].dtype && dfx_tensor_same_shape(&v, &views[i]));
        CHECK(memcmp(v.data, views[i].data, dfx_tensor_nbytes(&v)) == 0);
    }
    for (int64_t i = 0; i < m; i++)
        CHECK(strcmp(dfx_safetensors_metadata(again, keys[i]), vals[i]) == 0);
    dfx_safetensors_close(again);
    free(buf);
    free(names);
    free(ts);
    free(keys);
    free(vals);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dfx_safetensors *st = NULL;
    if (dfx__safetensors_open_memory("fuzz.safetensors", data, size, &st) != DFX_OK) {
        CHECK(!st);
        return 0;
    }
    int64_t n = dfx_safetensors_count(st);
    dfx_tensor *views = calloc((size_t)(n + 1), sizeof *views);
    CHECK(views);
    for (int64_t i = 0; i < n; i++) {
        const char *name = dfx_safetensors_name(st, i);
        CHECK(name && dfx_safetensors_has(st, name));
        dfx_tensor *v = &views[i];
        CHECK(dfx_safetensors_view(st, name, v) == DFX_OK);
        size_t nbytes = dfx_tensor_nbytes(v);
        const uint8_t *p = v->data;
        CHECK(p >= data && p <= data + size && nbytes <= (size_t)(data + size - p));

        dfx_tensor *r = NULL;
        CHECK(dfx_safetensors_read(st, name, v->dtype, &r) == DFX_OK);
        CHECK(memcmp(r->data, v->data, nbytes) == 0);
        dfx_tensor_destroy(r);
        CHECK(dfx_safetensors_read(st, name, DFX_DTYPE_F32, &r) == DFX_OK);
        CHECK(dfx_tensor_numel(r) == dfx_tensor_numel(v));
        dfx_tensor_destroy(r);
    }
    for (int64_t i = 0; i < dfx_safetensors_metadata_count(st); i++) {
        const char *key = dfx_safetensors_metadata_key(st, i);
        CHECK(key && dfx_safetensors_metadata(st, key));
    }
    check_round_trip(st, views);
    free(views);
    dfx_safetensors_close(st);
    return 0;
}
