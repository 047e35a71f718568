/* Elementwise activations and additions, in float as torch computes them,
 * threaded above DFX__NN_PAR_MIN elements. The exp-based ones use the
 * vectorisable dfx__expf (in AVX2 and baseline copies): they run over every
 * activation of a network, where a libm call per element would cost as much
 * as the convolutions. */
#include <math.h>

#include "core/nn/internal.h"
#include "dfx/nn.h"

/* Elements per task of the threaded maps. */
#define CHUNK 16384

/* Defines name(x, n), applying `expr` (of v = x[i]) in place: a shared body,
 * its baseline and AVX2 copies, and the threaded driver choosing one. */
#ifdef DFX__NN_HAVE_AVX2
#define MAP_AVX2(name)                                                                             \
    DFX__NN_AVX2 static void name##_avx2(float *x, int64_t n)                                      \
    {                                                                                              \
        name##_body(x, n);                                                                         \
    }
#define MAP_CALL(name, p, len) (avx2 ? name##_avx2(p, len) : name##_base(p, len))
#define MAP_AVX2_FLAG const bool avx2 = dfx__nn_use_avx2()
#else
#define MAP_AVX2(name)
#define MAP_CALL(name, p, len) name##_base(p, len)
#define MAP_AVX2_FLAG (void)0
#endif
#define DEFINE_MAP(name, expr)                                                                     \
    DFX__NN_INLINE void name##_body(float *x, int64_t n)                                           \
    {                                                                                              \
        for (int64_t i = 0; i < n; i++) {                                                          \
            const float v = x[i];                                                                  \
            x[i] = (expr);                                                                         \
        }                                                                                          \
    }                                                                                              \
    static void name##_base(float *x, int64_t n)                                                   \
    {                                                                                              \
        name##_body(x, n);                                                                         \
    }                                                                                              \
    MAP_AVX2(name)                                                                                 \
    void name(float *x, int64_t n)                                                                 \
    {                                                                                              \
        MAP_AVX2_FLAG;                                                                             \
        const int64_t chunks = (n + CHUNK - 1) / CHUNK;                                            \
        _Pragma("omp parallel for if (DFX__NN_PAR(n)) schedule(static)")                     \
        for (int64_t c = 0; c < chunks; c++) {                                                     \
            const int64_t lo = c * CHUNK, len = n - lo < CHUNK ? n - lo : CHUNK;                   \
            MAP_CALL(name, x + lo, len);                                                           \
        }                                                                                          \
    }

/* torch's silu kernel: x / (1 + exp(-x)) */
DEFINE_MAP(dfx_nn_silu, v / (1.0f + dfx__expf(-v)))

/* CLIP's quick_gelu: x * sigmoid(1.702 x) */
DEFINE_MAP(dfx_nn_quick_gelu, v / (1.0f + dfx__expf(-1.702f * v)))

/* F.gelu(approximate='tanh'): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))),
 * with tanh(u) = 1 - 2 / (exp(2u) + 1), whose absolute error (what counts
 * once 1 is added) is that of exp. */
#define GELU_TANH_U(v) (0.79788456080286536f * ((v) + 0.044715f * (v) * (v) * (v)))
DEFINE_MAP(dfx_nn_gelu_tanh, 0.5f * v * (2.0f - 2.0f / (dfx__expf(2.0f * GELU_TANH_U(v)) + 1.0f)))

/* F.gelu(approximate='none'): x * 0.5 * (1 + erf(x / sqrt(2))). libm's erff
 * is a call per element, which no vector copy would speed up. */
void dfx_nn_gelu(float *x, int64_t n)
{
    const float rsqrt2 = 0.70710678118654752f;
#pragma omp parallel for if (DFX__NN_PAR(n * 8)) schedule(static)
    for (int64_t i = 0; i < n; i++)
        x[i] = x[i] * 0.5f * (1.0f + erff(x[i] * rsqrt2));
}

void dfx_nn_add(float *y, const float *a, const float *b, int64_t n)
{
#pragma omp parallel for if (DFX__NN_PAR(n)) schedule(static)
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}

void dfx_nn_add_channel(float *x, const float *v, int64_t n, int64_t c, int64_t hw)
{
    int64_t planes = n * c;
#pragma omp parallel for if (DFX__NN_PAR(planes * hw)) schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        float *row = x + p * hw;
        const float add = v[p];
        for (int64_t i = 0; i < hw; i++)
            row[i] += add;
    }
}
