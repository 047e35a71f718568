/* Helpers shared by the built-in samplers (header-only, not installed):
 * level arithmetic and the optional clipping / thresholding of x0 that
 * diffusers' schedulers offer. */
#ifndef DFX_PLUGINS_SAMPLING_H
#define DFX_PLUGINS_SAMPLING_H

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "dfx/plugin.h"

/* sqrt(alpha^2 + sigma^2): divides a level into its variance-preserving form
 * (alpha_bar = (alpha / norm)^2). */
static inline double level_norm(const dfx_level *l)
{
    return sqrt(l->alpha * l->alpha + l->sigma * l->sigma);
}

/* sigma / alpha: the noise level in variance-exploding (k-diffusion) form. */
static inline double level_sigma_ve(const dfx_level *l)
{
    return l->alpha > 0 ? l->sigma / l->alpha : INFINITY;
}

/* A level rescaled to alpha = 1 (the variance-exploding parametrisation). */
static inline dfx_level level_ve(const dfx_level *l)
{
    return (dfx_level){l->t_model, 1.0, level_sigma_ve(l)};
}

/* For samplers that integrate in the variance-exploding form x / alpha:
 * into it from levels[0] at the start, out of it at levels[steps] at the
 * end (alpha is 1 there for a clean end). */
static inline void ve_enter(dfx_tensor *x, const dfx_schedule *sc)
{
    dfx_ops_scale(x->data, x->data, 1 / sc->levels[0].alpha, dfx_tensor_numel(x));
}

static inline void ve_leave(dfx_tensor *x, const dfx_schedule *sc)
{
    dfx_ops_scale(x->data, x->data, sc->levels[sc->steps].alpha, dfx_tensor_numel(x));
}

/* init_noise for the k-diffusion samplers: they start from z * sigma_max,
 * as k-diffusion and diffusers' Euler-type schedulers do. */
static inline dfx_init_noise init_noise_sigma(void *priv)
{
    (void)priv;
    return DFX_INIT_NOISE_SIGMA;
}

/* d = (x - x0) / sigma in float, as the k-diffusion-style schedulers of
 * diffusers compute their derivative (the same roundings, not just the
 * same value). */
static inline void derivative(float *d, const float *x, const float *x0, double sigma, int64_t n)
{
    const float s = (float)sigma;
    for (int64_t i = 0; i < n; i++)
        d[i] = (x[i] - x0[i]) / s;
}

/* x += d * dt in float. */
static inline void add_scaled(float *x, const float *d, double dt, int64_t n)
{
    const float t = (float)dt;
    for (int64_t i = 0; i < n; i++)
        x[i] = x[i] + d[i] * t;
}

/* Options and state for clipping or dynamically thresholding x0. */
typedef struct x0_fix {
    bool clip;
    double clip_range;
    bool threshold;
    double threshold_ratio;
    double threshold_max;
    float *scratch;
} x0_fix;

#define X0_FIX_OPTIONS(type, field)                                                                   \
    DFX_OPTION_BOOL("clip_sample", offsetof(type, field.clip), false,                                \
                    "clamp the predicted x0 to [-clip_sample_range, clip_sample_range]"),           \
    DFX_OPTION_FLOAT("clip_sample_range", offsetof(type, field.clip_range), 1.0, 0, INFINITY,        \
                     "bound for clip_sample"),                                                        \
    DFX_OPTION_BOOL("thresholding", offsetof(type, field.threshold), false,                          \
                    "dynamic thresholding of x0 (Imagen, Saharia et al. 2022)"),                     \
    DFX_OPTION_FLOAT("dynamic_thresholding_ratio", offsetof(type, field.threshold_ratio), 0.995, 0, \
                     1, "quantile of |x0| used as the threshold"),                                    \
    DFX_OPTION_FLOAT("sample_max_value", offsetof(type, field.threshold_max), 1.0, 1, INFINITY,      \
                     "largest threshold")

static inline dfx_status x0_fix_check(const x0_fix *f)
{
    if (f->clip && f->threshold)
        return dfx_error_set(DFX_ERR_CONFIG, "clip_sample and thresholding exclude each other; pick one");
    return DFX_OK;
}

/* Applies the configured fix to x0 [B, ...] in place. */
static inline dfx_status x0_fix_apply(x0_fix *f, dfx_tensor *x0)
{
    int64_t n = dfx_tensor_numel(x0);
    if (f->clip)
        dfx_ops_clamp(x0->data, -f->clip_range, f->clip_range, n);
    if (f->threshold) {
        int64_t batch = x0->ndim ? x0->shape[0] : 1, per = n / (batch ? batch : 1);
        if (!f->scratch && !(f->scratch = malloc((size_t)per * sizeof(float))))
            return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        dfx_ops_dynamic_threshold(x0->data, batch, per, f->threshold_ratio, f->threshold_max,
                                  f->scratch);
    }
    return DFX_OK;
}

static inline void x0_fix_release(x0_fix *f)
{
    free(f->scratch);
    f->scratch = NULL;
}

/* init and fini of a component whose only state beyond its options is an
 * x0_fix named `field` in struct `type`. */
#define X0_FIX_INIT_FINI(prefix, type, field)         \
    static dfx_status prefix##_init(void *priv)       \
    {                                                 \
        return x0_fix_check(&((type *)priv)->field);  \
    }                                                 \
    static void prefix##_fini(void *priv)             \
    {                                                 \
        x0_fix_release(&((type *)priv)->field);       \
    }

/* Creates `n` scratch tensors shaped like x; on failure destroys the ones
 * made. */
static inline dfx_status scratch_create(const dfx_tensor *x, dfx_tensor **t, int n)
{
    for (int i = 0; i < n; i++) {
        dfx_status st = dfx_tensor_create_like(&t[i], x);
        if (st) {
            while (i--)
                dfx_tensor_destroy(t[i]);
            return st;
        }
    }
    return DFX_OK;
}

static inline void scratch_destroy(dfx_tensor **t, int n)
{
    for (int i = 0; i < n; i++)
        dfx_tensor_destroy(t[i]);
}

/* Defines the descriptor and entry point of a plugin with one component. */
#define DFX_SINGLE_COMPONENT_PLUGIN(plugin_name, component)                      \
    static const dfx_component *const plugin_components_[] = {&(component), NULL}; \
    static const dfx_plugin plugin_descriptor_ = {                                \
        DFX_ABI_VERSION, sizeof(dfx_plugin), plugin_name, "1.0", "MIT",          \
        plugin_components_};                                                     \
    DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void)                   \
    {                                                                            \
        return &plugin_descriptor_;                                              \
    }

#endif
