/* Predictor-corrector sampling of a reverse-time SDE (Song et al. 2021,
 * Algorithm 1 and appendix G): at every level, Langevin corrector steps
 * with a signal-to-noise-ratio step size (Algorithm 5), then one predictor
 * step: reverse diffusion (the discretised reverse SDE, eq. 46) or
 * Euler-Maruyama on the continuous SDE. */
#include <math.h>
#include <string.h>

#include "plugins/common/sampling.h"

enum { PRED_REVERSE_DIFFUSION, PRED_EULER_MARUYAMA, PRED_NONE };
enum { CORR_LANGEVIN, CORR_NONE };

typedef struct pc {
    int predictor;
    int corrector;
    double snr;
    int64_t corrector_steps;
    bool denoise_final;
} pc;

static const char *const pred_names[] = {"reverse_diffusion", "euler_maruyama", "none", NULL};
static const char *const corr_names[] = {"langevin", "none", NULL};

static const dfx_option pc_options[] = {
    DFX_OPTION_ENUM("predictor", offsetof(pc, predictor), PRED_REVERSE_DIFFUSION, pred_names,
                    "reverse diffusion (ancestral, on the level grid) or Euler-Maruyama (needs a "
                    "continuous-time scheduler such as ve or vp)"),
    DFX_OPTION_ENUM("corrector", offsetof(pc, corrector), CORR_LANGEVIN, corr_names,
                    "Langevin MCMC correction at each level"),
    DFX_OPTION_FLOAT("snr", offsetof(pc, snr), 0.16, 0, INFINITY,
                     "corrector signal-to-noise ratio r: step = 2 (r |z| / |score|)^2"),
    DFX_OPTION_INT("corrector_steps", offsetof(pc, corrector_steps), 1, 1, 1000,
                   "Langevin steps per level"),
    DFX_OPTION_BOOL("denoise_final", offsetof(pc, denoise_final), true,
                    "return the last predictor step's mean, without its noise"),
    DFX_OPTION_END,
};

static dfx_status pc_init(void *priv)
{
    pc *p = priv;
    if (p->predictor == PRED_NONE && p->corrector == CORR_NONE)
        return dfx_error_set(DFX_ERR_CONFIG, "predictor and corrector are both 'none': nothing would run");
    return DFX_OK;
}

/* Mean Euclidean norm of the batch items of x. */
static double mean_item_norm(const dfx_tensor *x)
{
    int64_t b = x->ndim ? x->shape[0] : 1, n = dfx_tensor_numel(x), per = n / (b ? b : 1);
    double sum = 0;
    for (int64_t i = 0; i < b; i++)
        sum += dfx_ops_norm((const float *)x->data + i * per, per);
    return sum / (double)b;
}

static dfx_status pc_sample(void *priv, dfx_sampling *s, const dfx_schedule *sc, dfx_tensor *x)
{
    pc *p = priv;
    if (p->predictor == PRED_EULER_MARUYAMA && !sc->sde_g2)
        return dfx_error_set(DFX_ERR_CONFIG, "sampler 'pc': predictor euler_maruyama needs a continuous-time "
                                             "scheduler (ve, vp); use predictor: reverse_diffusion");
    dfx_tensor *t[3];
    dfx_status st = scratch_create(x, t, 3);
    if (st)
        return st;
    dfx_tensor *x0 = t[0], *score = t[1], *noise = t[2];
    const int64_t n = dfx_tensor_numel(x);
    float *xd = x->data, *sd = score->data, *zd = noise->data;

    for (int64_t i = 0; i < sc->steps && !st; i++) {
        const dfx_level *lv = &sc->levels[i], *to = &sc->targets[i];
        dfx_denoised out = {.x0 = x0, .score = score};
        for (int64_t c = 0; p->corrector == CORR_LANGEVIN && c < p->corrector_steps && !st; c++) {
            if ((st = dfx_sampling_denoise(s, x, lv, &out)) || (st = dfx_sampling_noise(s, noise)))
                break;
            /* Algorithm 5: step = 2 (r |z| / |score|)^2, batch-averaged norms
             * as score_sde and diffusers compute them, in float32 */
            const float r = (float)p->snr * (float)mean_item_norm(noise) / (float)mean_item_norm(score);
            const float step = r * r * 2.0f, amp = sqrtf(step * 2.0f);
            for (int64_t k = 0; k < n; k++)
                xd[k] = (xd[k] + step * sd[k]) + amp * zd[k];
            st = dfx_sampling_report(s, x);
        }
        if (st || p->predictor == PRED_NONE)
            continue;
        if ((st = dfx_sampling_denoise(s, x, lv, &out)))
            break;
        bool noisy = !(p->denoise_final && i == sc->steps - 1);
        if (noisy && (st = dfx_sampling_noise(s, noise)))
            break;
        float c_x, c_s, c_z;
        if (p->predictor == PRED_REVERSE_DIFFUSION) {
            /* eq. (46) in the variance-exploding form x/alpha: mean = x + g^2 score
             * with g^2 = s^2 - s_to^2 (the score of x/alpha is alpha times x's),
             * noise of std g; then back to the target's scale */
            const float sv = (float)level_sigma_ve(lv), st_ = (float)level_sigma_ve(to);
            const float g = sqrtf(sv * sv - st_ * st_);
            const float ratio = (float)(to->alpha / lv->alpha);
            c_x = ratio;
            c_s = ratio * (float)(lv->alpha * lv->alpha) * (g * g);
            c_z = (float)to->alpha * g;
        } else {
            /* dx = (f x - g^2 score) dt + g dW over dt = t_to - t < 0, in
             * float32 with g^2 recomputed from g as score_sde does */
            const double dtd = sc->time_to[i] - sc->time[i];
            const float f = (float)sc->sde_f[i], g = sqrtf((float)sc->sde_g2[i]), dt = (float)dtd;
            const float amp = g * (float)sqrt(-dtd);
            for (int64_t k = 0; k < n; k++) {
                float mean = xd[k] + (f * xd[k] - (g * g) * sd[k]) * dt;
                xd[k] = noisy ? mean + amp * zd[k] : mean;
            }
            st = dfx_sampling_report(s, x);
            continue;
        }
        for (int64_t k = 0; k < n; k++) {
            float mean = c_x * xd[k] + c_s * sd[k];
            xd[k] = noisy ? mean + c_z * zd[k] : mean;
        }
        st = dfx_sampling_report(s, x);
    }
    scratch_destroy(t, 3);
    return st;
}

static int64_t pc_evaluations(void *priv, const dfx_schedule *sc)
{
    const pc *p = priv;
    int64_t per = (p->corrector == CORR_LANGEVIN ? p->corrector_steps : 0) + (p->predictor != PRED_NONE);
    return per * sc->steps;
}

static const dfx_sampler_ops pc_ops = {
    .sample = pc_sample,
    .evaluations = pc_evaluations,
};

static const dfx_component pc_component = {
    DFX_KIND_SAMPLER, "pc", "predictor-corrector SDE sampler (Song et al. 2021)", sizeof(pc), pc_options,
    pc_init, NULL, &pc_ops,
};

DFX_SINGLE_COMPONENT_PLUGIN("pc", pc_component)
