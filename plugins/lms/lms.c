/* Linear multistep (Adams-Bashforth over the noise level, as k-diffusion's
 * sample_lms): the derivative history is extrapolated with the Lagrange
 * polynomial through the last `order` levels, integrated exactly over the
 * step. */
#include <math.h>

#include "plugins/common/sampling.h"

#define LMS_MAX_ORDER 8

typedef struct lms {
    int64_t order;
} lms;

static const dfx_option lms_options[] = {
    DFX_OPTION_INT("order", offsetof(lms, order), 4, 1, LMS_MAX_ORDER, "number of past derivatives used"),
    DFX_OPTION_END,
};

/* Integral over [a, b] of the Lagrange basis polynomial for node k of
 * nodes[0..m): exact by Gauss-Legendre with enough points for degree m-1. */
static double lagrange_integral(const double *nodes, int m, int k, double a, double b)
{
    static const double gx[5] = {-0.9061798459386640, -0.5384693101056831, 0.0, 0.5384693101056831,
                                 0.9061798459386640};
    static const double gw[5] = {0.2369268850561891, 0.4786286704993665, 0.5688888888888889,
                                 0.4786286704993665, 0.2369268850561891};
    double sum = 0;
    for (int q = 0; q < 5; q++) {
        double tau = 0.5 * (b - a) * gx[q] + 0.5 * (a + b), prod = 1;
        for (int j = 0; j < m; j++)
            if (j != k)
                prod *= (tau - nodes[j]) / (nodes[k] - nodes[j]);
        sum += gw[q] * prod;
    }
    return 0.5 * (b - a) * sum;
}

static dfx_status lms_sample(void *priv, dfx_sampling *s, const dfx_schedule *sc, dfx_tensor *x)
{
    lms *p = priv;
    const int order = (int)p->order;
    dfx_tensor *t[LMS_MAX_ORDER + 1] = {0};
    dfx_status st = scratch_create(x, t, order + 1);
    if (st)
        return st;
    dfx_tensor *x0 = t[order];
    dfx_tensor *ds[LMS_MAX_ORDER]; /* ds[0] newest */
    for (int k = 0; k < order; k++)
        ds[k] = t[k];
    const int64_t n = dfx_tensor_numel(x);
    float *xd = x->data;
    int have = 0;

    ve_enter(x, sc);
    for (int64_t i = 0; i < sc->steps && !st; i++) {
        dfx_level lv = level_ve(&sc->levels[i]);
        double sig = lv.sigma, next = level_sigma_ve(&sc->targets[i]);
        dfx_denoised out = {.x0 = x0};
        if ((st = dfx_sampling_denoise(s, x, &lv, &out)))
            break;
        /* rotate the history and store d = (x - x0) / sigma as the newest */
        dfx_tensor *oldest = ds[order - 1];
        for (int k = order - 1; k > 0; k--)
            ds[k] = ds[k - 1];
        ds[0] = oldest;
        derivative(ds[0]->data, xd, x0->data, sig, n);
        have = have < order ? have + 1 : order;

        double nodes[LMS_MAX_ORDER];
        for (int k = 0; k < have; k++)
            nodes[k] = level_sigma_ve(&sc->levels[i - k]);
        /* x + sum_k c_k d_k, the sum formed first as diffusers does */
        float coef[LMS_MAX_ORDER];
        for (int k = 0; k < have; k++)
            coef[k] = (float)lagrange_integral(nodes, have, k, sig, next);
        for (int64_t j = 0; j < n; j++) {
            float acc = coef[0] * ((const float *)ds[0]->data)[j];
            for (int k = 1; k < have; k++)
                acc += coef[k] * ((const float *)ds[k]->data)[j];
            xd[j] = xd[j] + acc;
        }
        st = dfx_sampling_report(s, x);
    }
    if (!st)
        ve_leave(x, sc);
    scratch_destroy(t, order + 1);
    return st;
}

static const dfx_sampler_ops lms_ops = {
    .sample = lms_sample,
    .init_noise = init_noise_sigma,
};

static const dfx_component lms_component = {
    DFX_KIND_SAMPLER, "lms", "linear multistep over sigma (k-diffusion's LMS)", sizeof(lms),
    lms_options, NULL, NULL, &lms_ops,
};

DFX_SINGLE_COMPONENT_PLUGIN("lms", lms_component)
