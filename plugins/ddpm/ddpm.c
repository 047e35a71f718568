/* Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2) through the posterior
 * q(x_prev | x_t, x0) of eq. (7), with the fixed variances of the paper and
 * IDDPM's learned-range variance (Nichol & Dhariwal 2021, eq. 15). */
#include <math.h>

#include "plugins/common/sampling.h"

enum { VAR_FIXED_SMALL, VAR_FIXED_SMALL_LOG, VAR_FIXED_LARGE, VAR_LEARNED_RANGE };

typedef struct ddpm {
    int variance;
    x0_fix fix;
} ddpm;

static const char *const variance_names[] = {"fixed_small", "fixed_small_log", "fixed_large",
                                             "learned_range", NULL};

static const dfx_option ddpm_options[] = {
    DFX_OPTION_ENUM("variance", offsetof(ddpm, variance), VAR_FIXED_SMALL, variance_names,
                    "posterior variance beta~ (fixed_small), beta (fixed_large), or the model's "
                    "interpolation between their logs (learned_range)"),
    X0_FIX_OPTIONS(ddpm, fix),
    DFX_OPTION_END,
};

X0_FIX_INIT_FINI(ddpm, ddpm, fix)

static dfx_status ddpm_sample(void *priv, dfx_sampling *s, const dfx_schedule *sc, dfx_tensor *x)
{
    ddpm *p = priv;
    const bool learned = p->variance == VAR_LEARNED_RANGE;
    dfx_tensor *t[3];
    dfx_status st = scratch_create(x, t, 3);
    if (st)
        return st;
    dfx_tensor *x0 = t[0], *noise = t[1], *v = t[2];
    const int64_t n = dfx_tensor_numel(x);
    float *xd = x->data;

    for (int64_t i = 0; i < sc->steps && !st; i++) {
        const dfx_level *lv = &sc->levels[i], *to = &sc->targets[i];
        double ns = level_norm(lv), np_ = level_norm(to);
        double abar_t = (lv->alpha / ns) * (lv->alpha / ns), abar_p = (to->alpha / np_) * (to->alpha / np_);
        double one_t, one_p, alpha_cur, beta_cur, c0, ct, small;
        if (sc->float32) {
            /* the coefficients of eq. (7) as diffusers evaluates them in float32 */
            float at = (float)abar_t, ap = (float)abar_p;
            float bt = 1.0f - at, bp = 1.0f - ap, ca = at / ap, cb = 1.0f - ca;
            one_t = bt, one_p = bp, alpha_cur = ca, beta_cur = cb;
            c0 = (sqrtf(ap) * cb) / bt;
            ct = sqrtf(ca) * bp / bt;
            small = (float)((float)(bp / bt) * cb);
        } else {
            one_t = (lv->sigma / ns) * (lv->sigma / ns), one_p = (to->sigma / np_) * (to->sigma / np_);
            alpha_cur = abar_t / abar_p, beta_cur = 1 - alpha_cur;
            c0 = sqrt(abar_p) * beta_cur / one_t;
            ct = sqrt(alpha_cur) * one_p / one_t;
            small = one_p / one_t * beta_cur;
        }
        dfx_denoised out = {.x0 = x0, .var = learned ? v : NULL};
        if ((st = dfx_sampling_denoise(s, x, lv, &out)))
            break;
        if ((st = x0_fix_apply(&p->fix, x0)))
            break;
        /* eq. (7): mean = c0 x0 + ct x_t, in the variance-preserving form */
        const float *in[2] = {x0->data, xd};
        double c[2] = {np_ * c0, np_ * ct / ns};
        dfx_ops_lincomb(xd, n, 2, c, in);
        /* like diffusers, every step but the one from training step 0 adds
         * noise (its variance may be ~0) */
        if (lv->t_model > 0) {
            if ((st = dfx_sampling_noise(s, noise)))
                break;
            small = small > 1e-20 ? small : 1e-20;
            float *z = noise->data;
            if (learned) {
                /* IDDPM eq. (15): log var = v' log beta + (1 - v') log beta~, v' = (v + 1) / 2 */
                const double min_log = log(small), max_log = log(beta_cur);
                const float *vd = v->data;
                for (int64_t k = 0; k < n; k++) {
                    float frac = (vd[k] + 1.0f) / 2.0f;
                    float logvar = frac * (float)max_log + (1.0f - frac) * (float)min_log;
                    xd[k] += (float)np_ * expf(0.5f * logvar) * z[k];
                }
            } else {
                double var = p->variance == VAR_FIXED_LARGE ? beta_cur : small;
                dfx_ops_axpby(xd, np_ * sqrt(var), z, 1.0, n);
            }
        }
        st = dfx_sampling_report(s, x);
    }
    scratch_destroy(t, 3);
    return st;
}

static const dfx_sampler_ops ddpm_ops = {
    .sample = ddpm_sample,
};

static const dfx_component ddpm_component = {
    DFX_KIND_SAMPLER, "ddpm", "ancestral DDPM sampling (Ho et al. 2020; IDDPM learned variance)",
    sizeof(ddpm), ddpm_options, ddpm_init, ddpm_fini, &ddpm_ops,
};

DFX_SINGLE_COMPONENT_PLUGIN("ddpm", ddpm_component)
