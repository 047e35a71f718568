/* Tensor allocation, shape helpers and dtype conversion. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "dfx/tensor.h"

static const struct {
    const char *name;
    size_t size;
} dtype_table[DFX_DTYPE__COUNT] = {
    [DFX_DTYPE_F32] = {"F32", 4},   [DFX_DTYPE_F16] = {"F16", 2},
    [DFX_DTYPE_BF16] = {"BF16", 2}, [DFX_DTYPE_F64] = {"F64", 8},
    [DFX_DTYPE_I64] = {"I64", 8},   [DFX_DTYPE_I32] = {"I32", 4},
    [DFX_DTYPE_I16] = {"I16", 2},   [DFX_DTYPE_I8] = {"I8", 1},
    [DFX_DTYPE_U8] = {"U8", 1},     [DFX_DTYPE_U16] = {"U16", 2},
    [DFX_DTYPE_U32] = {"U32", 4},   [DFX_DTYPE_U64] = {"U64", 8},
    [DFX_DTYPE_BOOL] = {"BOOL", 1}, [DFX_DTYPE_F8_E4M3] = {"F8_E4M3", 1},
    [DFX_DTYPE_F8_E5M2] = {"F8_E5M2", 1},
};

size_t dfx_dtype_size(dfx_dtype dtype)
{
    if ((unsigned)dtype >= DFX_DTYPE__COUNT)
        return 0;
    return dtype_table[dtype].size;
}

const char *dfx_dtype_name(dfx_dtype dtype)
{
    if ((unsigned)dtype >= DFX_DTYPE__COUNT)
        return "?";
    return dtype_table[dtype].name;
}

bool dfx_dtype_parse(const char *name, dfx_dtype *out)
{
    for (int i = 0; i < DFX_DTYPE__COUNT; i++) {
        if (strcmp(name, dtype_table[i].name) == 0) {
            *out = (dfx_dtype)i;
            return true;
        }
    }
    return false;
}

void *dfx__aligned_alloc(size_t size)
{
    size_t rounded = (size + 63) & ~(size_t)63;
    if (rounded < size)
        return NULL;
    return aligned_alloc(64, rounded ? rounded : 64);
}

char *dfx__strdup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory copying a string");
    return d;
}

/* Byte size of a shape, or false on a bad shape or overflow. */
static bool shape_bytes(dfx_dtype dtype, int ndim, const int64_t *shape,
                        size_t *bytes)
{
    size_t n = dfx_dtype_size(dtype);
    if (n == 0 || ndim < 0 || ndim > DFX_MAX_DIMS)
        return false;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return false;
        if (shape[i] != 0 && n > SIZE_MAX / (size_t)shape[i])
            return false;
        n *= (size_t)shape[i];
    }
    *bytes = n;
    return true;
}

dfx_status dfx_tensor_create(dfx_tensor **out, dfx_dtype dtype, int ndim,
                             const int64_t *shape)
{
    size_t bytes;
    *out = NULL;
    if (!shape_bytes(dtype, ndim, shape, &bytes))
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "tensor: invalid shape or dtype (ndim %d)", ndim);
    dfx_tensor *t = calloc(1, sizeof *t);
    void *data = dfx__aligned_alloc(bytes);
    if (!t || !data) {
        free(t);
        free(data);
        return dfx_error_set(DFX_ERR_NO_MEMORY,
                             "out of memory allocating a tensor of %zu bytes",
                             bytes);
    }
    memset(data, 0, bytes);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    t->data = data;
    t->owns_data = true;
    *out = t;
    return DFX_OK;
}

dfx_status dfx_tensor_create_like(dfx_tensor **out, const dfx_tensor *like)
{
    return dfx_tensor_create(out, like->dtype, like->ndim, like->shape);
}

void dfx_tensor_destroy(dfx_tensor *tensor)
{
    if (!tensor)
        return;
    if (tensor->owns_data)
        free(tensor->data);
    free(tensor);
}

dfx_tensor dfx_tensor_view(dfx_dtype dtype, int ndim, const int64_t *shape,
                           void *data)
{
    dfx_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dtype;
    t.ndim = ndim;
    for (int i = 0; i < ndim && i < DFX_MAX_DIMS; i++)
        t.shape[i] = shape[i];
    t.data = data;
    t.owns_data = false;
    return t;
}

int64_t dfx_tensor_numel(const dfx_tensor *tensor)
{
    int64_t n = 1;
    for (int i = 0; i < tensor->ndim; i++)
        n *= tensor->shape[i];
    return n;
}

size_t dfx_tensor_nbytes(const dfx_tensor *tensor)
{
    return (size_t)dfx_tensor_numel(tensor) * dfx_dtype_size(tensor->dtype);
}

bool dfx_tensor_same_shape(const dfx_tensor *a, const dfx_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

char *dfx_tensor_shape_str(const dfx_tensor *tensor, char *buf, size_t size)
{
    size_t used = 0;
    if (size == 0)
        return buf;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < tensor->ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld",
                                 i ? "," : "", (long long)tensor->shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
    return buf;
}

float dfx_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    float f;

    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {
        /* subnormal half: value = man * 2^-24, exact in float */
        f = (float)man * 0x1p-24f;
        memcpy(&bits, &f, 4);
        bits |= sign;
    }
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t dfx_f32_to_f16(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    uint32_t abs = bits & 0x7fffffffu;

    if (abs >= 0x7f800000u) /* inf or NaN (keep NaN quiet and non-zero) */
        return (uint16_t)(sign | 0x7c00u |
                          (abs > 0x7f800000u ? 0x200u | ((abs >> 13) & 0x3ffu) : 0));
    if (abs >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (abs < 0x38800000u) {
        /* result is subnormal or zero: round abs * 2^24 to an integer */
        float a;
        memcpy(&a, &abs, 4);
        float scaled = a * 0x1p24f; /* exact: a < 2^-14 */
        uint32_t m = (uint32_t)scaled;
        float rem = scaled - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1u)))
            m++;
        return (uint16_t)(sign | m);
    }
    uint32_t exp = (abs >> 23) - 112;
    uint32_t man = abs & 0x7fffffu;
    uint32_t half = (exp << 10) | (man >> 13);
    uint32_t rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u)))
        half++;
    return (uint16_t)(sign | half);
}

float dfx_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t dfx_f32_to_bf16(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((bits >> 16) | 0x40u);
    uint32_t lsb = (bits >> 16) & 1u;
    bits += 0x7fffu + lsb;
    return (uint16_t)(bits >> 16);
}

/* F8 E4M3 (finite-only, NaN = S.1111.111) and E5M2 (IEEE-like) decoders. */
static double f8_e4m3_to_double(uint8_t v)
{
    int sign = v >> 7, exp = (v >> 3) & 0xf, man = v & 7;
    if (exp == 0xf && man == 7)
        return NAN;
    double r = exp ? ldexp(1.0 + man / 8.0, exp - 7) : ldexp(man / 8.0, -6);
    return sign ? -r : r;
}

static double f8_e5m2_to_double(uint8_t v)
{
    return dfx_f16_to_f32((uint16_t)(v << 8));
}

static double load_as_double(const void *data, dfx_dtype dtype, int64_t i)
{
    switch (dtype) {
    case DFX_DTYPE_F32: return ((const float *)data)[i];
    case DFX_DTYPE_F16: return dfx_f16_to_f32(((const uint16_t *)data)[i]);
    case DFX_DTYPE_BF16: return dfx_bf16_to_f32(((const uint16_t *)data)[i]);
    case DFX_DTYPE_F64: return ((const double *)data)[i];
    case DFX_DTYPE_I64: return (double)((const int64_t *)data)[i];
    case DFX_DTYPE_I32: return ((const int32_t *)data)[i];
    case DFX_DTYPE_I16: return ((const int16_t *)data)[i];
    case DFX_DTYPE_I8: return ((const int8_t *)data)[i];
    case DFX_DTYPE_U8: return ((const uint8_t *)data)[i];
    case DFX_DTYPE_U16: return ((const uint16_t *)data)[i];
    case DFX_DTYPE_U32: return ((const uint32_t *)data)[i];
    case DFX_DTYPE_U64: return (double)((const uint64_t *)data)[i];
    case DFX_DTYPE_BOOL: return ((const uint8_t *)data)[i] != 0;
    case DFX_DTYPE_F8_E4M3: return f8_e4m3_to_double(((const uint8_t *)data)[i]);
    case DFX_DTYPE_F8_E5M2: return f8_e5m2_to_double(((const uint8_t *)data)[i]);
    case DFX_DTYPE__COUNT: break;
    }
    return NAN;
}

static bool is_integer_dtype(dfx_dtype d)
{
    return d == DFX_DTYPE_I64 || d == DFX_DTYPE_I32 || d == DFX_DTYPE_I16 ||
           d == DFX_DTYPE_I8 || d == DFX_DTYPE_U8 || d == DFX_DTYPE_U16 ||
           d == DFX_DTYPE_U32 || d == DFX_DTYPE_U64 || d == DFX_DTYPE_BOOL;
}

static void store_from_double(void *data, dfx_dtype dtype, int64_t i, double v)
{
    switch (dtype) {
    case DFX_DTYPE_F32: ((float *)data)[i] = (float)v; break;
    case DFX_DTYPE_F16: ((uint16_t *)data)[i] = dfx_f32_to_f16((float)v); break;
    case DFX_DTYPE_BF16: ((uint16_t *)data)[i] = dfx_f32_to_bf16((float)v); break;
    case DFX_DTYPE_F64: ((double *)data)[i] = v; break;
    case DFX_DTYPE_I64: ((int64_t *)data)[i] = isfinite(v) ? (int64_t)v : 0; break;
    case DFX_DTYPE_I32: ((int32_t *)data)[i] = isfinite(v) ? (int32_t)v : 0; break;
    case DFX_DTYPE_I16: ((int16_t *)data)[i] = isfinite(v) ? (int16_t)v : 0; break;
    case DFX_DTYPE_I8: ((int8_t *)data)[i] = isfinite(v) ? (int8_t)v : 0; break;
    case DFX_DTYPE_U8: ((uint8_t *)data)[i] = isfinite(v) ? (uint8_t)v : 0; break;
    case DFX_DTYPE_U16: ((uint16_t *)data)[i] = isfinite(v) ? (uint16_t)v : 0; break;
    case DFX_DTYPE_U32: ((uint32_t *)data)[i] = isfinite(v) ? (uint32_t)v : 0; break;
    case DFX_DTYPE_U64: ((uint64_t *)data)[i] = isfinite(v) ? (uint64_t)v : 0; break;
    case DFX_DTYPE_BOOL: ((uint8_t *)data)[i] = v != 0; break;
    default: break;
    }
}

dfx_status dfx_tensor_convert(const dfx_tensor *src, dfx_dtype dtype,
                              dfx_tensor **out)
{
    dfx_status st;
    if (dtype == DFX_DTYPE_F8_E4M3 || dtype == DFX_DTYPE_F8_E5M2)
        return dfx_error_set(DFX_ERR_UNSUPPORTED,
                             "tensor: conversion to %s is not supported",
                             dfx_dtype_name(dtype));
    st = dfx_tensor_create(out, dtype, src->ndim, src->shape);
    if (st)
        return st;
    int64_t n = dfx_tensor_numel(src);
    if (src->dtype == dtype) {
        memcpy((*out)->data, src->data, dfx_tensor_nbytes(src));
        return DFX_OK;
    }
    /* 64-bit integers would lose precision through double */
    if (src->dtype == DFX_DTYPE_I64 && is_integer_dtype(dtype) &&
        dtype != DFX_DTYPE_U64) {
        for (int64_t i = 0; i < n; i++) {
            int64_t v;
            memcpy(&v, (const char *)src->data + 8 * i, 8);
            switch (dtype) {
            case DFX_DTYPE_I32: ((int32_t *)(*out)->data)[i] = (int32_t)v; break;
            default: store_from_double((*out)->data, dtype, i, (double)v); break;
            }
        }
        return DFX_OK;
    }
    size_t es = dfx_dtype_size(src->dtype);
    for (int64_t i = 0; i < n; i++) {
        /* source may be unaligned (a view into a mapped file) */
        unsigned char tmp[8];
        memcpy(tmp, (const char *)src->data + (size_t)i * es, es);
        store_from_double((*out)->data, dtype, i, load_as_double(tmp, src->dtype, 0));
    }
    return DFX_OK;
}
