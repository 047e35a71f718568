/* Declarations shared by the files of core/nn (never installed): the fused
 * variants of the public layers that the blocks use to save passes over
 * memory, a vectorisable exp, and the threading threshold. */
#ifndef DFX_CORE_NN_INTERNAL_H
#define DFX_CORE_NN_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "dfx/nn.h"

/* Below this many elements an OpenMP region costs more than it saves (the
 * value core/tensor/ops.c uses). */
#define DFX__NN_PAR_MIN 32768

/* True when the layers may use OpenMP threads for their elementwise passes
 * (see parallel.c: not when idle OpenMP threads would spin beside
 * OpenBLAS's own). Every `omp parallel` in core/nn has
 * `if (DFX__NN_PAR(work))`. */
bool dfx__nn_parallel(void);
#define DFX__NN_PAR(work) ((work) > DFX__NN_PAR_MIN && dfx__nn_parallel())

/* The exp-heavy loops (softmax, SiLU) are compiled twice: for the baseline
 * x86-64 the build targets (4 floats a vector) and for AVX2 (8), chosen at
 * run time. Both copies perform the same float operations in the same
 * order (no FMA contraction: the project builds with -ffp-contract=off), so
 * they give the same bits. DFX__NN_INLINE puts the shared body into each
 * copy; DFX__NN_AVX2 marks the AVX2 one. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define DFX__NN_HAVE_AVX2 1
#define DFX__NN_INLINE static inline __attribute__((always_inline))
#define DFX__NN_AVX2 __attribute__((target("avx2")))
static inline bool dfx__nn_use_avx2(void)
{
    return __builtin_cpu_supports("avx2");
}
#else
#define DFX__NN_INLINE static inline
#endif

/* A float's bits as an int32 that orders like the float (negative values
 * count down from -1), and back: the map is its own inverse. Integer
 * compares on these vectorise where float compares do not (gcc keeps float
 * selects as branches under the default -ftrapping-math). */
DFX__NN_INLINE uint32_t dfx__float_order(uint32_t u)
{
    return u ^ ((0u - (u >> 31)) & 0x7fffffffu);
}

/* exp(x) in float within 1.5 ulp of the true value for -87.3 <= x <= 88,
 * written so that compilers vectorise loops calling it (libm's expf is a
 * call per element, which would make softmax and SiLU slower than the matrix
 * products around them). Below -87.3 it returns about 1.2e-38 (the smallest
 * normal float) instead of a subnormal or zero, above 88 about 1.7e38
 * instead of a larger value or inf: every caller adds 1 to the result or
 * normalises by a sum, where that difference is far below float
 * resolution. NaN gives NaN (a broken input must show, not vanish into a
 * softmax).
 * Range reduction x = n ln2 + r with ln2 split in two (Cody and Waite 1980),
 * then a degree-6 polynomial for exp(r) on |r| <= ln2/2 fitted for this file
 * (relative least squares on Chebyshev nodes, reweighted towards minimax). */
DFX__NN_INLINE float dfx__expf(float x)
{
    uint32_t u, nan;
    memcpy(&u, &x, sizeof u);
    nan = u;
    int32_t o = (int32_t)dfx__float_order(u);
    const int32_t lo = -1 - 0x42ae999a;   /* -87.3f */
    const int32_t hi = 0x42b00000;        /* 88.0f */
    o = o < lo ? lo : o;
    o = o > hi ? hi : o;
    u = dfx__float_order((uint32_t)o);
    memcpy(&x, &u, sizeof x);
    /* round x / ln2 to the nearest integer: adding 1.5 * 2^23 pushes the
     * fraction out of the mantissa */
    const float shifter = 12582912.0f;
    float t = x * 1.44269504f + shifter;
    float n = t - shifter;
    float r = x - n * 0.693145752f;   /* ln2's high part: n * it is exact */
    r = r - n * 1.42860677e-6f;       /* ln2's low part */
    float p = 1.38368458e-3f;
    p = p * r + 8.37481581e-3f;
    p = p * r + 4.16682251e-2f;
    p = p * r + 1.66664198e-1f;
    p = p * r + 4.99999911e-1f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* 2^n through the exponent field; n is in [-126, 127] */
    int32_t bits = ((int32_t)n + 127) * (1 << 23);
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float e = p * scale;
    uint32_t eu;
    memcpy(&eu, &e, sizeof eu);
    const uint32_t is_nan = 0u - (uint32_t)((nan & 0x7fffffffu) > 0x7f800000u);
    eu = (eu & ~is_nan) | (nan & is_nan);
    memcpy(&e, &eu, sizeof e);
    return e;
}

/* A set of named tensors: the same lookup as dfx_weights_load_any, also
 * accepting a tensor of shape alt[0..alt_ndim) (same element order, e.g. a
 * [C, C, 1, 1] convolution for a [C, C] linear weight). alt_ndim 0: none. */
dfx_status dfx__weights_load_alt(dfx_weights *w, const char *const *names, int ndim,
                                 const int64_t *shape, int alt_ndim, const int64_t *alt_shape,
                                 float **out);

/* y [rows, out] (row stride ldy) = op(x) W^T + b, where op(x) is x [rows, in]
 * with row stride ldx, or, with trans_x, the transpose of x [in, rows] with
 * row stride ldx (channel-major activations feed a token-major product
 * without a transposed copy). */
void dfx__linear_apply(const dfx_linear *l, bool trans_x, const float *x, int64_t ldx,
                       int64_t rows, float *y, int64_t ldy);

/* What a convolution adds to its product in the same pass (each term may be
 * absent): y = conv(x) + bias + item_bias[i, :] + residual + (accumulate ?
 * the previous y : 0), the per-channel terms broadcast over the pixels. */
typedef struct dfx__conv_extra {
    const float *item_bias;    /* [n, item_bias_ld], channel c at [i, c] */
    int64_t item_bias_ld;
    const float *residual;     /* [n, cout, ho, wo] */
    bool accumulate;
} dfx__conv_extra;

dfx_status dfx__conv2d_forward_ex(const dfx_conv2d *c, const float *x, int64_t n, int64_t h,
                                  int64_t w, float *y, const dfx__conv_extra *extra,
                                  dfx_arena *a);

/* Group norm whose affine output is modulated per item and channel before
 * the optional SiLU: y = norm(x) * (1 + scale[i, c]) + shift[i, c], with
 * scale and shift rows ld floats apart (the scale_shift time embedding). */
void dfx__group_norm_modulated(const dfx_group_norm *g, const float *x, int64_t n, int64_t hw,
                               float *y, bool silu, const float *scale, const float *shift,
                               int64_t ld);

#endif
