/* PNDM (Liu et al. 2022, "Pseudo numerical methods for diffusion models on
 * manifolds"): the transfer function of eq. (9) driven by a pseudo
 * Runge-Kutta warm-up (3 steps of 4 evaluations) and then pseudo linear
 * multistep (PLMS, eq. 12); with skip_prk the warm-up is the 2-evaluation
 * first step of the PLMS sampler Stable Diffusion ships. */
#include <math.h>
#include <string.h>

#include "plugins/common/sampling.h"

typedef struct pndm {
    bool skip_prk;
} pndm;

static const dfx_option pndm_options[] = {
    DFX_OPTION_BOOL("skip_prk", offsetof(pndm, skip_prk), true,
                    "replace the Runge-Kutta warm-up by one Heun-like step (PLMS, as SD uses)"),
    DFX_OPTION_END,
};

/* eq. (9): x at level `to` from x at level `from` and a noise estimate eps,
 * in the variance-preserving form (equal to a deterministic DDIM step). */
static void transfer(float *out, const float *xin, const dfx_level *from, const dfx_level *to,
                     const float *eps, int64_t n)
{
    double nf = level_norm(from), nt = level_norm(to);
    double a = (from->alpha / nf) * (from->alpha / nf), ap = (to->alpha / nt) * (to->alpha / nt);
    double sample_coeff = sqrt(ap / a);
    double denom = a * sqrt(1 - ap) + sqrt(a * (1 - a) * ap);
    const float *in[2] = {xin, eps};
    double c[2] = {nt * sample_coeff / nf, -nt * (ap - a) / denom};
    dfx_ops_lincomb(out, n, 2, c, in);
}

static dfx_status pndm_sample(void *priv, dfx_sampling *s, const dfx_schedule *sc, dfx_tensor *x)
{
    pndm *p = priv;
    const int64_t n = dfx_tensor_numel(x);
    const int64_t warm = p->skip_prk ? 0 : 3;
    if (!p->skip_prk && sc->steps < 4)
        return dfx_error_set(DFX_ERR_CONFIG, "sampler 'pndm': the Runge-Kutta warm-up needs at least 4 steps "
                                             "(got %lld); use skip_prk: true", (long long)sc->steps);
    /* ets[0..3]: eps history (newest last); x0 is scratch for the denoiser */
    dfx_tensor *t[8];
    dfx_status st = scratch_create(x, t, 8);
    if (st)
        return st;
    dfx_tensor *ets[4] = {t[0], t[1], t[2], t[3]};
    dfx_tensor *eps = t[4], *x0 = t[5], *start = t[6], *acc = t[7];
    int nets = 0;
    float *xd = x->data;

#define PUSH_ETS(src)                                                                   \
    do {                                                                                \
        if (nets == 4) {                                                                \
            dfx_tensor *old = ets[0];                                                   \
            ets[0] = ets[1], ets[1] = ets[2], ets[2] = ets[3], ets[3] = old;            \
            nets = 3;                                                                   \
        }                                                                               \
        memcpy(ets[nets++]->data, (src)->data, (size_t)n * sizeof(float));              \
    } while (0)

    for (int64_t i = 0; i < sc->steps && !st; i++) {
        const dfx_level *lv = &sc->levels[i], *to = &sc->targets[i];
        dfx_denoised out = {.x0 = x0, .eps = eps};
        if (i < warm) {
            /* pseudo RK4 from lv to `to` through the half-way level */
            dfx_level mid;
            double tm = lv->t_model - floor((lv->t_model - to->t_model) / 2);
            if ((st = dfx_sampling_level_at(s, tm, &mid)))
                break;
            memcpy(start->data, xd, (size_t)n * sizeof(float));
            static const double w[4] = {1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6};
            const dfx_level *eval_at[4] = {lv, &mid, &mid, to};
            const dfx_level *land[4] = {&mid, &mid, to, to};
            for (int k = 0; k < 4 && !st; k++) {
                if ((st = dfx_sampling_denoise(s, k ? x : start, eval_at[k], &out)))
                    break;
                if (k == 0) {
                    PUSH_ETS(eps);
                    dfx_ops_scale(acc->data, eps->data, w[0], n);
                } else if (k < 3) {
                    dfx_ops_axpby(acc->data, w[k], eps->data, 1.0, n);
                } else {
                    dfx_ops_axpby(eps->data, 1.0, acc->data, w[3], n);
                }
                transfer(xd, start->data, lv, land[k], eps->data, n);
                st = dfx_sampling_report(s, x);
            }
            continue;
        }
        if ((st = dfx_sampling_denoise(s, x, lv, &out)))
            break;
        if (p->skip_prk && i == 0 && sc->steps > 1) {
            /* first step (of several): Euler to `to`, re-evaluate there,
             * average the two estimates and redo the step from the start */
            memcpy(start->data, xd, (size_t)n * sizeof(float));
            PUSH_ETS(eps);
            transfer(xd, start->data, lv, to, eps->data, n);
            if ((st = dfx_sampling_report(s, x)))
                break;
            if ((st = dfx_sampling_denoise(s, x, to, &out)))
                break;
            dfx_ops_axpby(eps->data, 0.5, ets[0]->data, 0.5, n);
            transfer(xd, start->data, lv, to, eps->data, n);
            st = dfx_sampling_report(s, x);
            continue;
        }
        PUSH_ETS(eps);
        /* linear multistep combination of the last estimates (eq. 12) */
        static const double coef[4][4] = {
            {1, 0, 0, 0},
            {3.0 / 2, -1.0 / 2, 0, 0},
            {23.0 / 12, -16.0 / 12, 5.0 / 12, 0},
            {55.0 / 24, -59.0 / 24, 37.0 / 24, -9.0 / 24},
        };
        const float *in[4];
        double c[4];
        for (int k = 0; k < nets; k++) {
            in[k] = ets[nets - 1 - k]->data;
            c[k] = coef[nets - 1][k];
        }
        dfx_ops_lincomb(eps->data, n, nets, c, in);
        transfer(xd, xd, lv, to, eps->data, n);
        st = dfx_sampling_report(s, x);
    }
#undef PUSH_ETS
    scratch_destroy(t, 8);
    return st;
}

static int64_t pndm_evaluations(void *priv, const dfx_schedule *sc)
{
    const pndm *p = priv;
    return p->skip_prk ? sc->steps + (sc->steps > 1) : sc->steps + 9;
}

static const dfx_sampler_ops pndm_ops = {
    .sample = pndm_sample,
    .evaluations = pndm_evaluations,
};

static const dfx_component pndm_component = {
    DFX_KIND_SAMPLER, "pndm", "PNDM / PLMS pseudo numerical methods (Liu et al. 2022)", sizeof(pndm),
    pndm_options, NULL, NULL, &pndm_ops,
};

DFX_SINGLE_COMPONENT_PLUGIN("pndm", pndm_component)
