/* PyTorch 1.13's CPU generator (CPUGeneratorImpl), bit for bit: the mt19937
 * engine, torch.rand's 24-bit float uniforms, and torch.randn's two paths
 * (normal_fill_AVX2 for n >= 16, at::normal_distribution<double> with its
 * cached second value for n < 16). The algorithm and the fixtures that pin it
 * are described in shared/fixtures/README.md, section "1. rng/". */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "dfx/rng.h"

/* The block transform must be inlined into the FMA-targeted copy below for
 * that copy to use FMA instructions; clang does not do it on its own. */
#if defined(__GNUC__)
#define RNG_INLINE static inline __attribute__((always_inline))
#else
#define RNG_INLINE static inline
#endif

/* MT19937 (Matsumoto and Nishimura 1998), the reference genrand_int32. */
#define MT_N 624
#define MT_M 397
#define MT_MATRIX_A 0x9908b0dfu
#define MT_UPPER 0x80000000u
#define MT_LOWER 0x7fffffffu

struct dfx_rng {
    uint32_t state[MT_N];
    int next;                 /* index of the next output; MT_N = twist first */
    bool has_cached;          /* CPUGeneratorImpl::next_double_normal_sample_ */
    double cached;
};

static void mt_seed(dfx_rng *g, uint32_t seed)
{
    /* init_genrand */
    g->state[0] = seed;
    for (uint32_t i = 1; i < MT_N; i++) {
        uint32_t prev = g->state[i - 1];
        g->state[i] = 1812433253u * (prev ^ (prev >> 30)) + i;
    }
    g->next = MT_N;
}

static inline uint32_t mt_mix(uint32_t hi, uint32_t lo, uint32_t far)
{
    uint32_t y = (hi & MT_UPPER) | (lo & MT_LOWER);
    return far ^ (y >> 1) ^ ((y & 1u) ? MT_MATRIX_A : 0u);
}

static void mt_twist(dfx_rng *g)
{
    uint32_t *s = g->state;
    int i = 0;
    for (; i < MT_N - MT_M; i++)
        s[i] = mt_mix(s[i], s[i + 1], s[i + MT_M]);
    for (; i < MT_N - 1; i++)
        s[i] = mt_mix(s[i], s[i + 1], s[i + MT_M - MT_N]);
    s[MT_N - 1] = mt_mix(s[MT_N - 1], s[0], s[MT_M - 1]);
    g->next = 0;
}

static inline uint32_t mt_next(dfx_rng *g)
{
    if (g->next >= MT_N)
        mt_twist(g);
    uint32_t y = g->state[g->next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* uniform_real_distribution<float>(0, 1): the low 24 bits, exact in float. */
static inline float uniform_f32(dfx_rng *g)
{
    return (float)(mt_next(g) & 0xffffffu) * 0x1p-24f;
}

/* uniform_real_distribution<double>(0, 1) on random64() = (first << 32) |
 * second: the low 53 bits. */
static double uniform_f64(dfx_rng *g)
{
    uint64_t hi = mt_next(g);
    uint64_t lo = mt_next(g);
    return (double)(((hi << 32) | lo) & ((UINT64_C(1) << 53) - 1)) * 0x1p-53;
}

/* at::normal_distribution<double>(0, 1): Box-Muller in double with libm; the
 * sine half is cached in the generator and returned by the next call. The
 * "+ 0.0" is transformation::normal (x * std + mean), which turns -0 into +0. */
static double normal_f64(dfx_rng *g)
{
    if (g->has_cached) {
        g->has_cached = false;
        return g->cached + 0.0;
    }
    double u1 = uniform_f64(g);
    double u2 = uniform_f64(g);
    double r = sqrt(-2.0 * log(1.0 - u2));
    double theta = 2.0 * M_PI * u1;
    g->cached = r * sin(theta);
    g->has_cached = true;
    return r * cos(theta) + 0.0;
}

/* The Cephes float polynomials as ATen/native/cpu/avx_mathfun.h has them
 * (log256_ps, sincos256_ps), one lane at a time. The constants are double
 * literals rounded to float, as the header's float tables are. torch's build
 * contracted each multiply that feeds an add into an FMA; those are the fmaf
 * calls below (the project compiles with -ffp-contract=off, so nothing else
 * is fused). Without them about 1 value in 1000 is 1 ulp off. */
static const float log_p[9] = {
    7.0376836292E-2, -1.1514610310E-1, 1.1676998740E-1,
    -1.2420140846E-1, 1.4249322787E-1, -1.6668057665E-1,
    2.0000714765E-1, -2.4999993993E-1, 3.3333331174E-1,
};
static const float log_q1 = -2.12194440e-4;
static const float log_q2 = 0.693359375;
static const float sqrthf = 0.707106781186547524;
static const float fopi = 1.27323954473516;  /* 4 / pi */
static const float dp1 = -0.78515625;        /* -pi/4 in three parts */
static const float dp2 = -2.4187564849853515625e-4;
static const float dp3 = -3.77489497744594108e-8;
static const float cos_p0 = 2.443315711809948E-005;
static const float cos_p1 = -1.388731625493765E-003;
static const float cos_p2 = 4.166664568298827E-002;
static const float sin_p0 = -1.9515295891E-4;
static const float sin_p1 = 8.3321608736E-3;
static const float sin_p2 = -1.6666654611E-1;

/* log256_ps for x in [2^-24, 1] (1 - a uniform): the clamp to the smallest
 * normal and the NaN mask for x <= 0 never act there and are left out. */
RNG_INLINE float log_ps(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    float e = (float)((int32_t)(bits >> 23) - 0x7f) + 1.0f;
    bits = (bits & ~0x7f800000u) | 0x3f000000u;
    memcpy(&x, &bits, sizeof x);
    /* mantissa in [0.5, 1); below sqrt(1/2) use 2x - 1 and e - 1 */
    bool small = x < sqrthf;
    float tmp = small ? x : 0.0f;
    x = x - 1.0f;
    e = e - (small ? 1.0f : 0.0f);
    x = x + tmp;
    float z = x * x;
    float y = log_p[0];
    for (int k = 1; k < 9; k++)
        y = fmaf(y, x, log_p[k]);
    y = y * x;
    y = fmaf(y, z, e * log_q1);
    y = fmaf(-z, 0.5f, y);
    x = x + y;
    return fmaf(e, log_q2, x);
}

/* sincos256_ps for x >= 0 (theta = 2 pi u): octant reduction, then the sine
 * or cosine polynomial per octant. The original selects with masks and an
 * add, which differs from a plain select only on -0, which neither polynomial
 * returns for x >= 0. */
RNG_INLINE void sincos_ps(float x, float *s, float *c)
{
    int32_t j = (int32_t)(x * fopi);
    j = (j + 1) & ~1;
    float y = (float)j;
    bool neg_sin = (j & 4) != 0;
    bool neg_cos = ((~(j - 2)) & 4) != 0;
    bool sin_poly = (j & 2) == 0;  /* octants where sin uses the sine poly */
    x = fmaf(y, dp1, x);
    x = fmaf(y, dp2, x);
    x = fmaf(y, dp3, x);
    float z = x * x;
    float yc = fmaf(cos_p0, z, cos_p1);
    yc = fmaf(yc, z, cos_p2);
    yc = yc * z;
    yc = fmaf(yc, z, -(z * 0.5f));
    yc = yc + 1.0f;
    float ys = fmaf(sin_p0, z, sin_p1);
    ys = fmaf(ys, z, sin_p2);
    ys = ys * z;
    ys = fmaf(ys, x, x);
    float sv = sin_poly ? ys : yc;
    float cv = sin_poly ? yc : ys;
    *s = neg_sin ? -sv : sv;
    *c = neg_cos ? -cv : cv;
}

/* torch normal_fill_16_AVX2: 16 uniforms in place to 16 normals; lane j pairs
 * u1 = 1 - data[j] with u2 = data[j + 8]. The final "+ 0.0f" is its
 * fmadd(n, std = 1, mean = 0), which turns -0 (from u1 = 1) into +0. */
RNG_INLINE void normal_fill_16(float *data)
{
    const float two_pi = (float)(2.0 * M_PI);
    for (int j = 0; j < 8; j++) {
        float r = sqrtf(-2.0f * log_ps(1.0f - data[j]));
        float s, c;
        sincos_ps(two_pi * data[j + 8], &s, &c);
        data[j] = r * c + 0.0f;
        data[j + 8] = r * s + 0.0f;
    }
}

static void normal_blocks(float *out, int64_t n)
{
    for (int64_t i = 0; i + 16 <= n; i += 16)
        normal_fill_16(out + i);
}

/* The same code compiled with FMA instructions in place of libm fmaf calls,
 * twice as fast; fma is correctly rounded either way, so the results are the
 * same bits. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define RNG_HAVE_FMA_PATH 1
__attribute__((target("fma"))) static void normal_blocks_fma(float *out,
                                                             int64_t n)
{
    for (int64_t i = 0; i + 16 <= n; i += 16)
        normal_fill_16(out + i);
}
#endif

static void normal_transform(float *out, int64_t n)
{
#ifdef RNG_HAVE_FMA_PATH
    if (__builtin_cpu_supports("fma")) {
        normal_blocks_fma(out, n);
        return;
    }
#endif
    normal_blocks(out, n);
}

dfx_status dfx_rng_create(dfx_rng **out, uint64_t seed)
{
    if (!out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_rng_create: out is NULL");
    *out = malloc(sizeof **out);
    if (!*out)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory creating a generator");
    dfx_rng_seed(*out, seed);
    return DFX_OK;
}

void dfx_rng_destroy(dfx_rng *rng)
{
    free(rng);
}

void dfx_rng_seed(dfx_rng *rng, uint64_t seed)
{
    mt_seed(rng, (uint32_t)(seed & 0xffffffffu));
    rng->has_cached = false;
    rng->cached = 0.0;
}

dfx_status dfx_rng_clone(const dfx_rng *rng, dfx_rng **out)
{
    if (!out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_rng_clone: out is NULL");
    *out = NULL;
    if (!rng)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_rng_clone: rng is NULL");
    *out = malloc(sizeof **out);
    if (!*out)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory cloning a generator");
    memcpy(*out, rng, sizeof **out);
    return DFX_OK;
}

uint32_t dfx_rng_u32(dfx_rng *rng)
{
    return mt_next(rng);
}

void dfx_rng_uniform(dfx_rng *rng, float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = uniform_f32(rng);
}

/* torch normal_kernel: contiguous float32 with n >= 16 takes normal_fill_AVX2
 * (all n uniforms first, then the full blocks of 16; when n % 16 != 0, 16
 * fresh uniforms overwrite the last 16 outputs and are transformed again);
 * smaller n takes the double-precision scalar path. */
void dfx_rng_normal(dfx_rng *rng, float *out, int64_t n)
{
    if (n < 16) {
        for (int64_t i = 0; i < n; i++)
            out[i] = (float)normal_f64(rng);
        return;
    }
    dfx_rng_uniform(rng, out, n);
    normal_transform(out, n);
    if (n % 16 != 0) {
        dfx_rng_uniform(rng, out + n - 16, 16);
        normal_transform(out + n - 16, 16);
    }
}
