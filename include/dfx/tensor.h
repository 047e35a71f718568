/* dfx tensors: a dtype, a shape and a contiguous row-major buffer.
 *
 * Compute is float32; other dtypes exist for storage (checkpoints, traces)
 * and are converted once at load with dfx_tensor_convert(). */
#ifndef DFX_TENSOR_H
#define DFX_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dfx/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DFX_MAX_DIMS 8

/* Names follow the safetensors spelling (dfx_dtype_name). */
typedef enum dfx_dtype {
    DFX_DTYPE_F32 = 0,
    DFX_DTYPE_F16,
    DFX_DTYPE_BF16,
    DFX_DTYPE_F64,
    DFX_DTYPE_I64,
    DFX_DTYPE_I32,
    DFX_DTYPE_I16,
    DFX_DTYPE_I8,
    DFX_DTYPE_U8,
    DFX_DTYPE_U16,
    DFX_DTYPE_U32,
    DFX_DTYPE_U64,
    DFX_DTYPE_BOOL,
    DFX_DTYPE_F8_E4M3,
    DFX_DTYPE_F8_E5M2,
    DFX_DTYPE__COUNT
} dfx_dtype;

typedef struct dfx_tensor {
    dfx_dtype dtype;
    int ndim;                       /* 0 = scalar (one element) */
    int64_t shape[DFX_MAX_DIMS];
    void *data;                     /* contiguous, row-major */
    bool owns_data;                 /* destroy frees data */
} dfx_tensor;

/* Bytes per element (1 for BOOL and the F8 types). */
DFX_API size_t dfx_dtype_size(dfx_dtype dtype);

/* "F32", "BF16", ...; "?" for an invalid value. */
DFX_API const char *dfx_dtype_name(dfx_dtype dtype);

/* Parses a safetensors dtype name; false when unknown. */
DFX_API bool dfx_dtype_parse(const char *name, dfx_dtype *out);

/* Allocates a zero-filled tensor with 64-byte aligned data. Fails with
 * DFX_ERR_INVALID_ARG on a bad shape (ndim out of [0, DFX_MAX_DIMS], a
 * negative dimension, or a byte size that overflows); *out is NULL then. */
DFX_API dfx_status dfx_tensor_create(dfx_tensor **out, dfx_dtype dtype,
                                     int ndim, const int64_t *shape);

/* A new zero-filled tensor with `like`'s dtype and shape. */
DFX_API dfx_status dfx_tensor_create_like(dfx_tensor **out,
                                          const dfx_tensor *like);

/* Frees the tensor (and its data when it owns it). NULL is a no-op. */
DFX_API void dfx_tensor_destroy(dfx_tensor *tensor);

/* A non-owning tensor over caller memory, returned by value. */
DFX_API dfx_tensor dfx_tensor_view(dfx_dtype dtype, int ndim,
                                   const int64_t *shape, void *data);

DFX_API int64_t dfx_tensor_numel(const dfx_tensor *tensor);
DFX_API size_t dfx_tensor_nbytes(const dfx_tensor *tensor);
DFX_API bool dfx_tensor_same_shape(const dfx_tensor *a, const dfx_tensor *b);

/* Writes "[1,4,8,8]" into buf (always NUL-terminated); returns buf. */
DFX_API char *dfx_tensor_shape_str(const dfx_tensor *tensor, char *buf,
                                   size_t size);

/* Converts src into a new tensor of `dtype` (same shape). Float to float
 * conversions round to nearest even; float to integer truncates toward zero;
 * integer to float is exact where the value fits. */
DFX_API dfx_status dfx_tensor_convert(const dfx_tensor *src, dfx_dtype dtype,
                                      dfx_tensor **out);

/* IEEE binary16 and bfloat16 conversions (round to nearest even; NaN kept). */
DFX_API float dfx_f16_to_f32(uint16_t h);
DFX_API uint16_t dfx_f32_to_f16(float f);
DFX_API float dfx_bf16_to_f32(uint16_t h);
DFX_API uint16_t dfx_f32_to_bf16(float f);

#ifdef __cplusplus
}
#endif
#endif
