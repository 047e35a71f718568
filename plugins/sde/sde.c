/* Continuous-time schedules of score-based SDEs (Song et al. 2021, "Score-
 * based generative modeling through SDEs"): VE with geometric sigmas
 * (eq. 30) and VP with linear beta(t) (eq. 32), sampled at
 * t = linspace(1, sampling_eps, N) as score_sde and diffusers do. */
#include <math.h>
#include <stdlib.h>

#include "dfx/plugin.h"

enum { GRID_DISCRETE, GRID_CONTINUOUS };

typedef struct ve {
    double sigma_min, sigma_max, sampling_eps;
    int grid;
} ve;

typedef struct vp {
    double beta_min, beta_max, sampling_eps;
} vp;

static const char *const grid_names[] = {"discrete", "continuous", NULL};

static const dfx_option ve_options[] = {
    DFX_OPTION_FLOAT("sigma_min", offsetof(ve, sigma_min), 0.01, 1e-12, INFINITY, "smallest noise level"),
    DFX_OPTION_FLOAT("sigma_max", offsetof(ve, sigma_max), 1348.0, 1e-12, INFINITY, "largest noise level"),
    DFX_OPTION_FLOAT("sampling_eps", offsetof(ve, sampling_eps), 1e-5, 0, 1, "the last continuous time"),
    DFX_OPTION_ENUM("grid", offsetof(ve, grid), GRID_DISCRETE, grid_names,
                    "levels the solver steps between: N geometric sigmas (score_sde's discretisation, as "
                    "diffusers' ScoreSdeVeScheduler) or sigma(t) itself; the model always sees sigma(t)"),
    DFX_OPTION_END,
};

static const dfx_option vp_options[] = {
    DFX_OPTION_FLOAT("beta_min", offsetof(vp, beta_min), 0.1, 0, INFINITY, "beta(0)"),
    DFX_OPTION_FLOAT("beta_max", offsetof(vp, beta_max), 20.0, 0, INFINITY, "beta(1)"),
    DFX_OPTION_FLOAT("sampling_eps", offsetof(vp, sampling_eps), 1e-3, 0, 1, "the last continuous time"),
    DFX_OPTION_END,
};

static dfx_status ve_init(void *priv)
{
    ve *v = priv;
    if (!(v->sigma_max > v->sigma_min))
        return dfx_error_set(DFX_ERR_CONFIG, "sigma_max (%g) must exceed sigma_min (%g)", v->sigma_max, v->sigma_min);
    return DFX_OK;
}

static double ve_sigma(const ve *v, float t)
{
    /* diffusers evaluates sigma_min * (sigma_max / sigma_min) ** t in float32 */
    return (float)v->sigma_min * powf((float)(v->sigma_max / v->sigma_min), t);
}

static dfx_status ve_plan(void *priv, int64_t steps, dfx_schedule *s)
{
    ve *v = priv;
    float *t = malloc((size_t)steps * sizeof *t), *ls = malloc((size_t)steps * sizeof *ls);
    if (!t || !ls) {
        free(t);
        free(ls);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    }
    dfx_ops_linspace_f32(t, 1.0, v->sampling_eps, steps);
    dfx_ops_linspace_f32(ls, log(v->sigma_min), log(v->sigma_max), steps);
    const double g2c = 2 * (log(v->sigma_max) - log(v->sigma_min));
    for (int64_t i = 0; i < steps; i++) {
        double sig_t = ve_sigma(v, t[i]);
        s->levels[i] = (dfx_level){sig_t, 1, sig_t};
        s->time[i] = t[i];
        s->time_to[i] = t[i] - 1.0 / (double)steps;
        s->sde_f[i] = 0;
        s->sde_g2[i] = sig_t * sig_t * g2c;
    }
    s->levels[steps] = (dfx_level){0, 1, 0};
    s->time[steps] = 0;
    for (int64_t i = 0; i < steps; i++)
        s->targets[i] = s->levels[i + 1];
    if (v->grid == GRID_DISCRETE) {
        /* score_sde's VESDE.discretize: index floor(t * (N - 1)) into the
         * geometric grid, stepping to the grid's next lower sigma */
        for (int64_t i = 0; i < steps; i++) {
            int64_t k = (int64_t)(t[i] * (float)(steps - 1));
            k = k < 0 ? 0 : (k > steps - 1 ? steps - 1 : k);
            s->levels[i].sigma = expf(ls[k]);
            s->targets[i] = (dfx_level){i + 1 < steps ? s->levels[i + 1].t_model : 0, 1,
                                        k > 0 ? expf(ls[k - 1]) : 0};
        }
    }
    s->init_noise = DFX_INIT_NOISE_SIGMA;
    s->init_sigma = v->sigma_max;
    free(t);
    free(ls);
    return DFX_OK;
}

static dfx_status ve_level_at(void *priv, double t_model, dfx_level *out)
{
    (void)priv;
    if (!(t_model >= 0))
        return dfx_error_set(DFX_ERR_RANGE, "sigma %g is negative", t_model);
    *out = (dfx_level){t_model, 1, t_model};
    return DFX_OK;
}

static dfx_status ve_t_model_of(void *priv, double sigma, double *t_model)
{
    (void)priv;
    *t_model = sigma;
    return DFX_OK;
}

static bool yes(void *priv)
{
    (void)priv;
    return true;
}

static double vp_log_mean(const vp *v, double t)
{
    return -0.25 * t * t * (v->beta_max - v->beta_min) - 0.5 * t * v->beta_min;
}

static dfx_level vp_level(const vp *v, double t)
{
    /* sigma = sqrt(1 - exp(2 log_mean)) in float32, as score_sde and
     * diffusers compute it: the cancellation near t = 0 is part of the
     * reference numbers */
    const float tf = (float)t;
    const float lm = -0.25f * (tf * tf) * (float)(v->beta_max - v->beta_min) - 0.5f * tf * (float)v->beta_min;
    return (dfx_level){t, exp(vp_log_mean(v, t)), sqrtf(1.0f - expf(2.0f * lm))};
}

static dfx_status vp_plan(void *priv, int64_t steps, dfx_schedule *s)
{
    vp *v = priv;
    float *t = malloc((size_t)steps * sizeof *t);
    if (!t)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    dfx_ops_linspace_f32(t, 1.0, v->sampling_eps, steps);
    for (int64_t i = 0; i < steps; i++) {
        /* beta(t) in float32, as score_sde evaluates it */
        double beta = (float)v->beta_min + t[i] * (float)(v->beta_max - v->beta_min);
        s->levels[i] = vp_level(v, t[i]);
        s->time[i] = t[i];
        /* score_sde's Euler-Maruyama steps dt = -1/N whatever the grid */
        s->time_to[i] = t[i] - 1.0 / (double)steps;
        s->sde_f[i] = -0.5 * beta;
        s->sde_g2[i] = beta;
    }
    s->levels[steps] = (dfx_level){0, 1, 0};
    s->time[steps] = 0;
    s->sde_f[steps] = -0.5 * v->beta_min;
    s->sde_g2[steps] = v->beta_min;
    for (int64_t i = 0; i < steps; i++)
        s->targets[i] = s->levels[i + 1];
    s->init_noise = DFX_INIT_NOISE_UNIT;
    free(t);
    return DFX_OK;
}

static dfx_status vp_level_at(void *priv, double t_model, dfx_level *out)
{
    if (!(t_model >= 0 && t_model <= 1))
        return dfx_error_set(DFX_ERR_RANGE, "time %g is outside [0, 1]", t_model);
    *out = vp_level(priv, t_model);
    return DFX_OK;
}

static const dfx_scheduler_ops ve_ops = {
    .plan = ve_plan,
    .continuous = yes,
    .level_at = ve_level_at,
    .t_model_of = ve_t_model_of,
};

static const dfx_scheduler_ops vp_ops = {
    .plan = vp_plan,
    .continuous = yes,
    .level_at = vp_level_at,
};

static const dfx_component ve_component = {
    DFX_KIND_SCHEDULER, "ve", "variance-exploding SDE, geometric sigmas (NCSN / score_sde VE)", sizeof(ve),
    ve_options, ve_init, NULL, &ve_ops,
};

static const dfx_component vp_component = {
    DFX_KIND_SCHEDULER, "vp", "variance-preserving SDE, linear beta(t) (score_sde VP / DDPM++)", sizeof(vp),
    vp_options, NULL, NULL, &vp_ops,
};

static const dfx_component *const components[] = {&ve_component, &vp_component, NULL};

static const dfx_plugin plugin = {
    DFX_ABI_VERSION, sizeof(dfx_plugin), "sde", "1.0", "MIT", components,
};

DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void)
{
    return &plugin;
}
