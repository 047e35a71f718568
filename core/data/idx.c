/* LeCun's idx files (the MNIST format, yann.lecun.com/exdb/mnist): two zero
 * bytes, a type byte, the number of dimensions, the dimensions as big-endian
 * uint32, then the elements big-endian in row-major order. Read raw or
 * gzipped, strictly: the data must be exactly as long as the header says. */
#include <stdlib.h>
#include <string.h>

#include "core/data/internal.h"
#include "core/internal.h"

enum { MAX_NDIM = 4 };

static bool idx_dtype(unsigned char type, dfx_dtype *out)
{
    switch (type) {
    case 0x08: *out = DFX_DTYPE_U8; return true;
    case 0x09: *out = DFX_DTYPE_I8; return true;
    case 0x0B: *out = DFX_DTYPE_I16; return true;
    case 0x0C: *out = DFX_DTYPE_I32; return true;
    case 0x0D: *out = DFX_DTYPE_F32; return true;
    case 0x0E: *out = DFX_DTYPE_F64; return true;
    default: return false;
    }
}

/* Big-endian elements of `size` bytes to host order, in place. */
static void from_big_endian(unsigned char *p, size_t count, size_t size)
{
    const uint16_t one = 1;
    unsigned char little;
    memcpy(&little, &one, 1);
    if (!little || size == 1)
        return;
    for (size_t i = 0; i < count; i++, p += size)
        for (size_t a = 0, b = size - 1; a < b; a++, b--) {
            unsigned char t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
}

static void shape_str(const int64_t *shape, int ndim, char *buf, size_t size)
{
    dfx_tensor view = dfx_tensor_view(DFX_DTYPE_U8, ndim, shape, NULL);
    dfx_tensor_shape_str(&view, buf, size);
}

/* Reads what follows the data to the end: its length for the message, or a
 * gzip error found on the way (a bad CRC after complete data, say). */
static dfx_status check_end(dfx__data_src *src, uint64_t declared)
{
    unsigned char scratch[4096];
    uint64_t extra = 0;
    for (;;) {
        size_t got;
        dfx_status st = dfx__data_src_read(src, scratch, sizeof scratch, &got);
        if (st)
            return st;
        if (!got)
            break;
        extra += got;
    }
    if (extra)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: %llu trailing bytes after the %llu bytes of data the header "
                             "declares", src->name, (unsigned long long)extra, (unsigned long long)declared);
    return DFX_OK;
}

static dfx_status read_idx(dfx__data_src *src, dfx_tensor **out)
{
    const char *name = src->name;
    unsigned char head[4 + 4 * MAX_NDIM];
    size_t got;
    dfx_status st = dfx__data_src_read(src, head, 4, &got);
    if (st)
        return st;
    if (got < 4 || head[0] != 0 || head[1] != 0) {
        char seen[16] = "";
        for (size_t i = 0, o = 0; i < got; i++)
            o += (size_t)snprintf(seen + o, sizeof seen - o, "%s%02x", i ? " " : "", head[i]);
        if (got == 0)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: not an idx file (it is empty, expected 00 00 TYPE NDIM)",
                                 name);
        return dfx_error_set(DFX_ERR_FORMAT, "%s: not an idx file (it starts with %s, expected 00 00 TYPE "
                             "NDIM)", name, seen);
    }
    dfx_dtype dtype;
    if (!idx_dtype(head[2], &dtype))
        return dfx_error_set(DFX_ERR_FORMAT, "%s: unknown idx type byte 0x%02x (expected 0x08, 0x09, 0x0b, "
                             "0x0c, 0x0d or 0x0e)", name, head[2]);
    const int ndim = head[3];
    if (ndim == 0)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: 0 dimensions (expected 1 to %d)", name, MAX_NDIM);
    if (ndim > MAX_NDIM)
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: %d dimensions (expected 1 to %d)", name, ndim,
                             MAX_NDIM);
    if ((st = dfx__data_src_read(src, head + 4, 4 * (size_t)ndim, &got)))
        return st;
    if (got < 4 * (size_t)ndim)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: truncated: a header of %d dimensions needs %d bytes, only "
                             "%zu are there", name, ndim, 4 + 4 * ndim, 4 + got);
    int64_t shape[MAX_NDIM];
    char sbuf[96];
    for (int d = 0; d < ndim; d++) {
        const unsigned char *p = head + 4 + 4 * d;
        shape[d] = (int64_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
    }
    for (int d = 0; d < ndim; d++)
        if (shape[d] == 0) {
            shape_str(shape, ndim, sbuf, sizeof sbuf);
            return dfx_error_set(DFX_ERR_FORMAT, "%s: dimension %d of %s is 0", name, d + 1, sbuf);
        }
    const size_t esize = dfx_dtype_size(dtype);
    uint64_t bytes = esize;
    bool overflow = false;
    for (int d = 0; d < ndim; d++)
        overflow |= __builtin_mul_overflow(bytes, (uint64_t)shape[d], &bytes);
    if (overflow || bytes > (uint64_t)PTRDIFF_MAX) {
        shape_str(shape, ndim, sbuf, sizeof sbuf);
        return dfx_error_set(DFX_ERR_FORMAT, "%s: dimensions %s make more bytes than memory holds", name, sbuf);
    }
    /* refuse before allocating what the file cannot hold */
    const uint64_t can = dfx__data_src_bound(src);
    if (bytes > can) {
        shape_str(shape, ndim, sbuf, sizeof sbuf);
        if (src->gz)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: truncated: the header declares %s %s, %llu bytes of data, "
                                 "more than its %zu compressed bytes can hold", name, sbuf,
                                 dfx_dtype_name(dtype), (unsigned long long)bytes, src->size);
        return dfx_error_set(DFX_ERR_FORMAT, "%s: truncated: the header declares %s %s, %llu bytes of data, "
                             "but only %llu follow", name, sbuf, dfx_dtype_name(dtype), (unsigned long long)bytes,
                             (unsigned long long)can);
    }
    dfx_tensor *t;
    if ((st = dfx_tensor_create(&t, dtype, ndim, shape)))
        return dfx_error_prefix(st, "%s: ", name);
    if ((st = dfx__data_src_read(src, t->data, (size_t)bytes, &got))) {
        dfx_tensor_destroy(t);
        return st;
    }
    if (got < bytes) {
        shape_str(shape, ndim, sbuf, sizeof sbuf);
        dfx_tensor_destroy(t);
        return dfx_error_set(DFX_ERR_FORMAT, "%s: truncated: the header declares %s %s, %llu bytes of data, "
                             "but only %zu follow", name, sbuf, dfx_dtype_name(dtype), (unsigned long long)bytes, got);
    }
    if ((st = check_end(src, bytes))) {
        dfx_tensor_destroy(t);
        return st;
    }
    from_big_endian(t->data, (size_t)(bytes / esize), esize);
    *out = t;
    return DFX_OK;
}

dfx_status dfx__idx_read_mem(const char *name, const void *data, size_t size, dfx_tensor **out)
{
    *out = NULL;
    dfx__data_src src;
    dfx_status st = dfx__data_src_init(&src, name, data, size);
    if (!st)
        st = read_idx(&src, out);
    dfx__data_src_fini(&src);
    return st;
}

dfx_status dfx_idx_read(const char *path, dfx_tensor **out)
{
    if (out)
        *out = NULL;
    if (!path || !out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_idx_read: path and out must not be NULL");
    char *data;
    size_t len;
    dfx_status st = dfx__read_file(path, &data, &len);
    if (st)
        return st;
    st = dfx__idx_read_mem(path, data, len, out);
    free(data);
    return st;
}
