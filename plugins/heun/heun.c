/* Heun's second-order method on the probability-flow ODE (Karras et al. 2022,
 * Algorithm 1): an Euler predictor, a second evaluation at the next level and
 * the trapezoidal corrector; the last step to sigma = 0 is plain Euler. */
#include <math.h>
#include <string.h>

#include "plugins/common/sampling.h"

typedef struct heun {
    x0_fix fix;
} heun;

static const dfx_option heun_options[] = {
    X0_FIX_OPTIONS(heun, fix),
    DFX_OPTION_END,
};

X0_FIX_INIT_FINI(heun, heun, fix)

static dfx_status heun_sample(void *priv, dfx_sampling *s, const dfx_schedule *sc, dfx_tensor *x)
{
    heun *p = priv;
    dfx_tensor *t[3];
    dfx_status st = scratch_create(x, t, 3);
    if (st)
        return st;
    dfx_tensor *x0 = t[0], *d1 = t[1], *start = t[2];
    const int64_t n = dfx_tensor_numel(x);
    float *xd = x->data;

    ve_enter(x, sc);
    for (int64_t i = 0; i < sc->steps && !st; i++) {
        dfx_level lv = level_ve(&sc->levels[i]), to = level_ve(&sc->targets[i]);
        double sig = lv.sigma, next = to.sigma;
        dfx_denoised out = {.x0 = x0};
        if ((st = dfx_sampling_denoise(s, x, &lv, &out)) || (st = x0_fix_apply(&p->fix, x0)))
            break;
        /* the arithmetic of diffusers' HeunDiscreteScheduler, in float32 */
        const float dtf = (float)next - (float)sig;
        derivative(d1->data, xd, x0->data, sig, n);
        memcpy(start->data, xd, (size_t)n * sizeof(float));
        add_scaled(xd, d1->data, dtf, n);
        if ((st = dfx_sampling_report(s, x)) || next == 0)
            continue;
        if ((st = dfx_sampling_denoise(s, x, &to, &out)) || (st = x0_fix_apply(&p->fix, x0)))
            break;
        /* x = start + dt (d1 + d2) / 2 with d2 = (x_pred - x0') / next */
        derivative(x0->data, xd, x0->data, next, n);
        float *sd = start->data, *a = d1->data, *b = x0->data;
        for (int64_t k = 0; k < n; k++)
            xd[k] = sd[k] + (a[k] + b[k]) / 2.0f * dtf;
        st = dfx_sampling_report(s, x);
    }
    if (!st)
        ve_leave(x, sc);
    scratch_destroy(t, 3);
    return st;
}

static int64_t heun_evaluations(void *priv, const dfx_schedule *sc)
{
    (void)priv;
    int64_t n = 0;
    for (int64_t i = 0; i < sc->steps; i++)
        n += sc->targets[i].sigma > 0 ? 2 : 1;
    return n;
}

static const dfx_sampler_ops heun_ops = {
    .sample = heun_sample,
    .evaluations = heun_evaluations,
    .init_noise = init_noise_sigma,
};

static const dfx_component heun_component = {
    DFX_KIND_SAMPLER, "heun", "Heun's 2nd-order method (Karras et al. 2022, Algorithm 1)", sizeof(heun),
    heun_options, heun_init, heun_fini, &heun_ops,
};

DFX_SINGLE_COMPONENT_PLUGIN("heun", heun_component)
