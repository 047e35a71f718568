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

/* Dynamic thresholding (Saharia et al. 2022, Imagen sec. 2.3) of `batch`
 * items of `per_item` floats each: s = the `ratio` quantile of |x| within
 * the item (linear interpolation, as torch.quantile), clamped to
 * [1, max_value]; then x = clamp(x, -s, s) / s. scratch holds per_item
 * floats. */
DFX_API void dfx_ops_dynamic_threshold(float *x, int64_t batch,
                                       int64_t per_item, double ratio,
                                       double max_value, float *scratch);

/* torch.linspace(start, end, n, dtype=float32) on an AVX2 CPU, bit for bit:
 * start and end rounded to float, step = (end - start) / (n - 1) in float,
 * then fused multiply-adds from the nearer end as torch 1.13's vectorised
 * kernel computes them. Schedules built from it match diffusers' tables. */
DFX_API void dfx_ops_linspace_f32(float *out, double start, double end,
                                  int64_t n);

/* The OpenBLAS build in use ("Haswell", "SkylakeX", ...) and its threads. */
DFX_API const char *dfx_ops_blas_core(void);
DFX_API int dfx_ops_blas_threads(void);

#ifdef __cplusplus
}
#endif
#endif
