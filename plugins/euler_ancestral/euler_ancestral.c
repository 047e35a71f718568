/* Ancestral Euler sampling in the variance-exploding form (k-diffusion's
 * sample_euler_ancestral): an Euler step down to sigma_down, then fresh
 * noise of std sigma_up, with sigma_down^2 + sigma_up^2 = sigma_next^2. */
#include <math.h>

#include "plugins/common/sampling.h"

typedef struct euler_ancestral {
    double eta, s_noise;
} euler_ancestral;

static const dfx_option ea_options[] = {
    DFX_OPTION_FLOAT("eta", offsetof(euler_ancestral, eta), 1.0, 0.0, INFINITY,
                     "fraction of the DDPM-like noise re-injected per step (0 = plain Euler)"),
    DFX_OPTION_FLOAT("s_noise", offsetof(euler_ancestral, s_noise), 1.0, 0.0, INFINITY,
                     "scale of the injected noise"),
    DFX_OPTION_END,
};

static dfx_status ea_sample(void *priv, dfx_sampling *s, const dfx_schedule *sc, dfx_tensor *x)
{
    euler_ancestral *p = priv;
    dfx_tensor *t[2];
    dfx_status st = scratch_create(x, t, 2);
    if (st)
        return st;
    dfx_tensor *x0 = t[0], *noise = t[1];
    const int64_t n = dfx_tensor_numel(x);
    float *xd = x->data;

    ve_enter(x, sc);
    for (int64_t i = 0; i < sc->steps && !st; i++) {
        dfx_level lv = level_ve(&sc->levels[i]);
        /* sigma_up and sigma_down as diffusers computes them, in float32 */
        const float sig = (float)lv.sigma, to = (float)level_sigma_ve(&sc->targets[i]);
        float up = (float)p->eta * sqrtf(to * to * (sig * sig - to * to) / (sig * sig));
        up = up < to ? up : to;
        const float down = sqrtf(to * to - up * up);
        dfx_denoised out = {.x0 = x0};
        if ((st = dfx_sampling_denoise(s, x, &lv, &out)))
            break;
        derivative(x0->data, xd, x0->data, sig, n);
        add_scaled(xd, x0->data, down - sig, n);
        if ((st = dfx_sampling_noise(s, noise)))
            break;
        dfx_ops_axpby(xd, p->s_noise * up, noise->data, 1.0, n);
        st = dfx_sampling_report(s, x);
    }
    if (!st)
        ve_leave(x, sc);
    scratch_destroy(t, 2);
    return st;
}

static const dfx_sampler_ops ea_ops = {
    .sample = ea_sample,
    .init_noise = init_noise_sigma,
};

static const dfx_component ea_component = {
    DFX_KIND_SAMPLER, "euler_ancestral", "ancestral Euler (k-diffusion; A1111's \"Euler a\")",
    sizeof(euler_ancestral), ea_options, NULL, NULL, &ea_ops,
};

DFX_SINGLE_COMPONENT_PLUGIN("euler_ancestral", ea_component)
