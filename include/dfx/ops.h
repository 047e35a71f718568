/* Numeric kernels on float32 arrays: elementwise arithmetic (OpenMP-threaded
 * above a size threshold) and the matrix product (always OpenBLAS sgemm).
 *
 * All functions accept aliasing between `y` and an input unless noted; none
 * allocate. */
#ifndef DFX_OPS_H
#define DFX_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "dfx/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y[i] = a * x[i] */
DFX_API void dfx_ops_scale(float *y, const float *x, double a, int64_t n);

/* y[i] = a * x[i] + b * y[i] */
DFX_API void dfx_ops_axpby(float *y, double a, const float *x, double b,
                           int64_t n);

/* y[i] = sum_k c[k] * x[k][i], for k < count (count <= 8). Each product is
 * rounded to float and the sum accumulated left to right in float, the
 * order a chain of tensor operations would use. */
DFX_API void dfx_ops_lincomb(float *y, int64_t n, int count, const double *c,
                             const float *const *x);

/* Clamps every element into [lo, hi]. */
DFX_API void dfx_ops_clamp(float *y, double lo, double hi, int64_t n);

/* True when no element is NaN or infinite. */
DFX_API bool dfx_ops_all_finite(const float *x, int64_t n);

/* Euclidean norm, accumulated in double. */
DFX_API double dfx_ops_norm(const float *x, int64_t n);

/* Row-major C[m,n] = alpha * op(A) * op(B) + beta * C with op(X) = X or its
 * transpose; lda/ldb/ldc are the row strides of the stored matrices. */
DFX_API void dfx_ops_matmul(bool trans_a, bool trans_b, int64_t m, int64_t n,
                            int64_t k, float alpha, const float *a,
                            int64_t lda, const float *b, int64_t ldb,
                            float beta, float *c, int64_t ldc);

/* The OpenBLAS build in use ("Haswell", "SkylakeX", ...) and its threads. */
DFX_API const char *dfx_ops_blas_core(void);
DFX_API int dfx_ops_blas_threads(void);

#ifdef __cplusplus
}
#endif
#endif
