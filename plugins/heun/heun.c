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

static dfx_status heun_init(void *priv)
{
    return x0_fix_check(&((heun *)priv)->fix);
}

static void heun_fini(void *priv)
{
    x0_fix_release(&((heun *)priv)->fix);
}

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

    dfx_ops_scale(xd, xd, 1 / sc->levels[0].alpha, n);
    for (int64_t i = 0; i < sc->steps && !st; i++) {
        dfx_level lv = level_ve(&sc->levels[i]), to = level_ve(&sc->targets[i]);
        double sig = lv.sigma, next = to.sigma, dt = next - sig;
        dfx_denoised out = {.x0 = x0};
        if ((st = dfx_sampling_denoise(s, x, &lv, &out)) || (st = x0_fix_apply(&p->fix, x0)))
            break;
        /* d1 = (x - x0) / sigma */
        const float *in[2] = {xd, x0->data};
        double c[2] = {1 / sig, -1 / sig};
        dfx_ops_lincomb(d1->data, n, 2, c, in);
        memcpy(start->data, xd, (size_t)n * sizeof(float));
        dfx_ops_axpby(xd, dt, d1->data, 1.0, n);
        if ((st = dfx_sampling_report(s, x)) || next == 0)
            continue;
        if ((st = dfx_sampling_denoise(s, x, &to, &out)) || (st = x0_fix_apply(&p->fix, x0)))
            break;
        /* x = start + dt (d1 + d2) / 2 with d2 = (x_pred - x0') / next */
        const float *in2[4] = {start->data, d1->data, xd, x0->data};
        double c2[4] = {1, dt / 2, dt / (2 * next), -dt / (2 * next)};
        dfx_ops_lincomb(xd, n, 4, c2, in2);
        st = dfx_sampling_report(s, x);
    }
    if (!st)
        dfx_ops_scale(xd, xd, sc->levels[sc->steps].alpha, n);
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

static dfx_init_noise heun_init_noise(void *priv)
{
    (void)priv;
    return DFX_INIT_NOISE_SIGMA;
}

static const dfx_sampler_ops heun_ops = {
    .sample = heun_sample,
    .evaluations = heun_evaluations,
    .init_noise = heun_init_noise,
};

static const dfx_component heun_component = {
    DFX_KIND_SAMPLER, "heun", "Heun's 2nd-order method (Karras et al. 2022, Algorithm 1)", sizeof(heun),
    heun_options, heun_init, heun_fini, &heun_ops,
};

DFX_SINGLE_COMPONENT_PLUGIN("heun", heun_component)
