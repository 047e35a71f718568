/* libFuzzer target: the idx reader, straight from memory. Each input is read
 * as it is (raw or, when it starts with 1f 8b, gzip), and as the recipe of a
 * well-formed header (type, dimensions) followed by the input's bytes, cut
 * or padded to the declared size unless the recipe asks for a mismatch, so
 * that mutations reach every type's data path instead of stopping at the
 * size check. An accepted tensor must behave: 1 to 4 positive dimensions,
 * every byte there; written back out as idx it reads again the same, raw
 * and gzip-compressed. A refusal must leave no tensor and name the file. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/data/internal.h"

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            __builtin_trap();                                                  \
    } while (0)

static const unsigned char types[6] = {0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E};

static unsigned char type_byte(dfx_dtype d)
{
    switch (d) {
    case DFX_DTYPE_U8: return 0x08;
    case DFX_DTYPE_I8: return 0x09;
    case DFX_DTYPE_I16: return 0x0B;
    case DFX_DTYPE_I32: return 0x0C;
    case DFX_DTYPE_F32: return 0x0D;
    case DFX_DTYPE_F64: return 0x0E;
    default: __builtin_trap();
    }
}

/* The idx file of t (big-endian), in a new buffer. */
static unsigned char *encode(const dfx_tensor *t, size_t *n)
{
    const size_t es = dfx_dtype_size(t->dtype), bytes = dfx_tensor_nbytes(t);
    *n = 4 + 4 * (size_t)t->ndim + bytes;
    unsigned char *b = malloc(*n);
    CHECK(b);
    b[0] = b[1] = 0;
    b[2] = type_byte(t->dtype);
    b[3] = (unsigned char)t->ndim;
    for (int d = 0; d < t->ndim; d++)
        for (int k = 0; k < 4; k++)
            b[4 + 4 * d + k] = (unsigned char)((uint64_t)t->shape[d] >> (24 - 8 * k));
    unsigned char *p = b + 4 + 4 * t->ndim;
    const unsigned char *src = t->data;
    for (size_t i = 0; i < bytes; i += es)
        for (size_t k = 0; k < es; k++)
            p[i + k] = src[i + es - 1 - k];   /* the fuzzer runs little-endian */
    return b;
}

/* data as one gzip member, in a new buffer. */
static unsigned char *gzip(const unsigned char *data, size_t n, size_t *out_n)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    CHECK(deflateInit2(&z, 1, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    size_t cap = deflateBound(&z, (uLong)n);
    unsigned char *b = malloc(cap);
    CHECK(b);
    z.next_in = (Bytef *)(uintptr_t)data;
    z.avail_in = (uInt)n;
    z.next_out = b;
    z.avail_out = (uInt)cap;
    CHECK(deflate(&z, Z_FINISH) == Z_STREAM_END);
    *out_n = cap - z.avail_out;
    deflateEnd(&z);
    return b;
}

static void same(const dfx_tensor *a, const dfx_tensor *b)
{
    CHECK(a->dtype == b->dtype && a->ndim == b->ndim);
    for (int d = 0; d < a->ndim; d++)
        CHECK(a->shape[d] == b->shape[d]);
    CHECK(memcmp(a->data, b->data, dfx_tensor_nbytes(a)) == 0);
}

static void read_one(const uint8_t *data, size_t size, bool round_trip)
{
    dfx_tensor *t = (dfx_tensor *)&t;
    if (dfx__idx_read_mem("fuzz.idx", data, size, &t) != DFX_OK) {
        CHECK(t == NULL);
        CHECK(strncmp(dfx_error_message(), "fuzz.idx", 8) == 0);
        return;
    }
    CHECK(t && t->ndim >= 1 && t->ndim <= 4);
    for (int d = 0; d < t->ndim; d++)
        CHECK(t->shape[d] >= 1 && t->shape[d] <= 0xffffffffLL);
    const size_t bytes = dfx_tensor_nbytes(t);
    /* raw: the file is exactly header + data */
    if (!(size >= 2 && data[0] == 0x1f && data[1] == 0x8b))
        CHECK(bytes == size - 4 - 4 * (size_t)t->ndim);
    unsigned sum = 0;
    for (size_t i = 0; i < bytes; i++)
        sum += ((const unsigned char *)t->data)[i];
    volatile unsigned sink = sum;
    (void)sink;
    if (round_trip) {
        size_t n, gn;
        unsigned char *raw = encode(t, &n);
        dfx_tensor *again;
        CHECK(dfx__idx_read_mem("copy.idx", raw, n, &again) == DFX_OK);
        same(t, again);
        dfx_tensor_destroy(again);
        unsigned char *gz = gzip(raw, n, &gn);
        CHECK(dfx__idx_read_mem("copy.idx.gz", gz, gn, &again) == DFX_OK);
        same(t, again);
        dfx_tensor_destroy(again);
        free(gz);
        free(raw);
    }
    dfx_tensor_destroy(t);
}

/* The recipe: [type, ndim - 1, flags, dim bytes..., payload...]; each
 * dimension 1 + byte % 16; flags: 1 the payload as it is (a size mismatch
 * likely), 2 gzip the file. */
static void read_recipe(const uint8_t *data, size_t size)
{
    if (size < 3)
        return;
    const unsigned char type = types[data[0] % 6], flags = data[2];
    const int ndim = data[1] % 4 + 1;
    size_t at = 3;
    if (size < at + (size_t)ndim)
        return;
    static const size_t es[6] = {1, 1, 2, 4, 4, 8};
    size_t need = es[data[0] % 6];
    unsigned char head[20] = {0, 0, type, (unsigned char)ndim};
    for (int d = 0; d < ndim; d++) {
        const uint32_t dim = 1 + data[at++] % 16;
        need *= dim;
        head[4 + 4 * d + 3] = (unsigned char)dim;
    }
    const size_t have = size - at, pay = flags & 1 ? have : need;
    const size_t hn = 4 + 4 * (size_t)ndim, n = hn + pay;
    unsigned char *file = calloc(n, 1);
    CHECK(file);
    memcpy(file, head, hn);
    memcpy(file + hn, data + at, have < pay ? have : pay);
    if (flags & 2) {
        size_t gn;
        unsigned char *gz = gzip(file, n, &gn);
        read_one(gz, gn, false);
        free(gz);
    } else {
        read_one(file, n, true);
    }
    free(file);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    read_one(data, size, true);
    read_recipe(data, size);
    return 0;
}
