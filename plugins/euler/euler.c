/* Euler's method on the probability-flow ODE in the variance-exploding form
 * (Karras et al. 2022, Algorithm 2 with its optional "churn"). */
#include <math.h>

#include "plugins/common/sampling.h"

typedef struct euler {
    double s_churn, s_tmin, s_tmax, s_noise;
} euler;

static const dfx_option euler_options[] = {
    DFX_OPTION_FLOAT("s_churn", offsetof(euler, s_churn), 0.0, 0.0, INFINITY,
                     "stochasticity (Karras et al. 2022, Algorithm 2): gamma = min(s_churn/steps, sqrt(2)-1)"),
    DFX_OPTION_FLOAT("s_tmin", offsetof(euler, s_tmin), 0.0, 0.0, INFINITY,
                     "churn only where sigma >= s_tmin"),
    DFX_OPTION_FLOAT("s_tmax", offsetof(euler, s_tmax), INFINITY, 0.0, INFINITY,
                     "churn only where sigma <= s_tmax"),
    DFX_OPTION_FLOAT("s_noise", offsetof(euler, s_noise), 1.0, 0.0, INFINITY, "scale of the churn noise"),
    DFX_OPTION_END,
};

static dfx_status euler_sample(void *priv, dfx_sampling *s, const dfx_schedule *sc, dfx_tensor *x)
{
    euler *p = priv;
    dfx_tensor *t[2];
    dfx_status st = scratch_create(x, t, 2);
    if (st)
        return st;
    dfx_tensor *x0 = t[0], *noise = t[1];
    const int64_t n = dfx_tensor_numel(x);
    float *xd = x->data;

    /* integrate x / alpha (variance-exploding form) */
    ve_enter(x, sc);
    for (int64_t i = 0; i < sc->steps && !st; i++) {
        dfx_level lv = level_ve(&sc->levels[i]);
        double sig = lv.sigma, next = level_sigma_ve(&sc->targets[i]);
        double gamma = 0;
        if (sig >= p->s_tmin && sig <= p->s_tmax) {
            gamma = p->s_churn / (double)sc->steps;
            gamma = gamma < sqrt(2.0) - 1 ? gamma : sqrt(2.0) - 1;
        }
        /* one draw per step even without churn, as diffusers' Euler does,
         * so the generator stays in step with a diffusers run */
        if ((st = dfx_sampling_noise(s, noise)))
            break;
        if (gamma > 0) {
            double hat = sig * (gamma + 1);
            dfx_ops_axpby(xd, p->s_noise * sqrt(hat * hat - sig * sig), noise->data, 1.0, n);
            if ((st = dfx_sampling_t_model(s, hat, &lv.t_model)))
                break;
            lv.sigma = sig = hat;
        }
        dfx_denoised out = {.x0 = x0};
        if ((st = dfx_sampling_denoise(s, x, &lv, &out)))
            break;
        /* d = (x - x0) / sigma; x += d (next - sigma), with diffusers'
         * float32 sigmas and roundings */
        derivative(x0->data, xd, x0->data, sig, n);
        add_scaled(xd, x0->data, (double)((float)next - (float)sig), n);
        st = dfx_sampling_report(s, x);
    }
    if (!st)
        ve_leave(x, sc);
    scratch_destroy(t, 2);
    return st;
}

static const dfx_sampler_ops euler_ops = {
    .sample = euler_sample,
    .init_noise = init_noise_sigma,
};

static const dfx_component euler_component = {
    DFX_KIND_SAMPLER, "euler", "Euler on the probability-flow ODE (Karras et al. 2022)", sizeof(euler),
    euler_options, NULL, NULL, &euler_ops,
};

DFX_SINGLE_COMPONENT_PLUGIN("euler", euler_component)
