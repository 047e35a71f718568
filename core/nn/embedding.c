/* The sinusoidal timestep embedding of DDPM (Ho et al. 2020, after the
 * Transformer's positional encoding), as diffusers' get_timestep_embedding
 * (models/embeddings.py) computes it in float32, every intermediate rounded
 * to float in torch's order. The frequencies come from the same exp as
 * torch's (below), because at t near 1000 a frequency one ulp off moves sin
 * and cos by 2e-6; sin and cos themselves are libm's, which differ from
 * torch's SLEEF routines by at most an ulp of the result (6e-8). */
#include <math.h>

#include "dfx/nn.h"

/* torch 1.13's float exp on an AVX2 CPU, bit for bit: SLEEF's xexpf (the
 * Sleef_expf8_u10 that Vectorized<float>::exp calls; SLEEF, Boost Software
 * License), one lane at a time. Round d / ln2 to q, reduce with ln2 in two
 * parts, a degree-6 polynomial with SLEEF's published coefficients,
 * multiply-adds fused as its AVX2 build fuses them, scale by 2^q. Only
 * arguments in [-ln(max_period), 0] reach it here, far from SLEEF's
 * underflow and overflow cut-offs, which are left out. Checked against
 * torch.exp on 2.5 million arguments in [-20, 20]: no bit differs. */
static float torch_expf(float d)
{
    float q = nearbyintf(d * 1.44269504088896341f);
    float s = fmaf(q, -0.693145751953125f, d);
    s = fmaf(q, -1.428606765330187045e-06f, s);
    float u = 0.000198527617612853646278381f;
    u = fmaf(u, s, 0.00139304355252534151077271f);
    u = fmaf(u, s, 0.00833336077630519866943359f);
    u = fmaf(u, s, 0.0416664853692054748535156f);
    u = fmaf(u, s, 0.166666671633720397949219f);
    u = fmaf(u, s, 0.5f);
    u = 1.0f + fmaf(s * s, u, s);
    return ldexpf(u, (int)q);
}

void dfx_nn_timestep_embedding(const double *t, int64_t n, int64_t dim, bool flip_sin_to_cos,
                               double freq_shift, double scale, double max_period, float *out)
{
    const int64_t half = dim / 2;
    /* -math.log(max_period) * torch.arange(half, dtype=float32): the Python
     * scalar is rounded to float before the product; then a float division
     * by (half - freq_shift) */
    const float neg_log = (float)-log(max_period);
    const float denom = (float)((double)half - freq_shift);
    const float fscale = (float)scale;
    for (int64_t i = 0; i < half; i++) {
        float exponent = neg_log * (float)i;
        exponent = exponent / denom;
        const float freq = torch_expf(exponent);
        for (int64_t b = 0; b < n; b++) {
            float arg = (float)t[b] * freq;
            arg = fscale * arg;
            float *row = out + b * dim;
            row[flip_sin_to_cos ? half + i : i] = sinf(arg);
            row[flip_sin_to_cos ? i : half + i] = cosf(arg);
        }
    }
    if (dim % 2)
        for (int64_t b = 0; b < n; b++)
            out[b * dim + dim - 1] = 0.0f;
}
