/* DDIM (Song, Meng & Ermon 2021): the non-Markovian sampler of eq. (12),
 * deterministic at eta = 0, DDPM-like at eta = 1 (eq. 16). */
#include <math.h>

#include "plugins/common/sampling.h"

typedef struct ddim {
    double eta;
    bool use_clipped_model_output;
    x0_fix fix;
} ddim;

static const dfx_option ddim_options[] = {
    DFX_OPTION_FLOAT("eta", offsetof(ddim, eta), 0.0, 0.0, 1.0,
                     "0 = deterministic DDIM, 1 = the DDPM posterior's noise (eq. 16)"),
    DFX_OPTION_BOOL("use_clipped_model_output", offsetof(ddim, use_clipped_model_output), false,
                    "recompute eps from the clipped x0"),
    X0_FIX_OPTIONS(ddim, fix),
    DFX_OPTION_END,
};

X0_FIX_INIT_FINI(ddim, ddim, fix)

static dfx_status ddim_sample(void *priv, dfx_sampling *s, const dfx_schedule *sc, dfx_tensor *x)
{
    ddim *p = priv;
    dfx_tensor *t[3];
    dfx_status st = scratch_create(x, t, 3);
    if (st)
        return st;
    dfx_tensor *x0 = t[0], *eps = t[1], *noise = t[2];
    const int64_t n = dfx_tensor_numel(x);
    float *xd = x->data;

    for (int64_t i = 0; i < sc->steps && !st; i++) {
        const dfx_level *lv = &sc->levels[i], *to = &sc->targets[i];
        /* work in the variance-preserving form: a = sqrt(alpha_bar), b = sqrt(1 - alpha_bar) */
        double ns = level_norm(lv), np_ = level_norm(to);
        double at = lv->alpha / ns, bt = lv->sigma / ns, ap = to->alpha / np_, bp = to->sigma / np_;
        dfx_denoised out = {.x0 = x0, .eps = eps};
        if ((st = dfx_sampling_denoise(s, x, lv, &out)))
            break;
        if ((st = x0_fix_apply(&p->fix, x0)))
            break;
        if (p->use_clipped_model_output) {
            const float *in[2] = {xd, x0->data};
            double c[2] = {1 / (ns * bt), -at / bt};
            dfx_ops_lincomb(eps->data, n, 2, c, in);
        }
        double std, dir;
        if (sc->float32) {
            /* eq. (16) as diffusers evaluates it in float32 */
            float a_t = (float)(at * at), a_p = (float)(ap * ap), b_t = 1.0f - a_t, b_p = 1.0f - a_p;
            float var = (b_p / b_t) * (1.0f - a_t / a_p);
            float sd = (float)p->eta * sqrtf(var > 0 ? var : 0);
            float d2 = 1.0f - a_p - sd * sd;
            std = sd;
            dir = sqrtf(d2 > 0 ? d2 : 0);
            ap = sqrtf(a_p);
        } else {
            double var = (bp * bp) / (bt * bt) * (1 - (at * at) / (ap * ap));
            std = p->eta * sqrt(var > 0 ? var : 0);
            dir = bp * bp - std * std;
            dir = sqrt(dir > 0 ? dir : 0);
        }
        const float *in[3] = {x0->data, eps->data, noise->data};
        double c[3] = {np_ * ap, np_ * dir, np_ * std};
        int k = 2;
        if (p->eta > 0) {
            if ((st = dfx_sampling_noise(s, noise)))
                break;
            k = 3;
        }
        dfx_ops_lincomb(xd, n, k, c, in);
        st = dfx_sampling_report(s, x);
    }
    scratch_destroy(t, 3);
    return st;
}

static const dfx_sampler_ops ddim_ops = {
    .sample = ddim_sample,
};

static const dfx_component ddim_component = {
    DFX_KIND_SAMPLER, "ddim", "DDIM (Song et al. 2021), deterministic at eta = 0", sizeof(ddim),
    ddim_options, ddim_init, ddim_fini, &ddim_ops,
};

DFX_SINGLE_COMPONENT_PLUGIN("ddim", ddim_component)
