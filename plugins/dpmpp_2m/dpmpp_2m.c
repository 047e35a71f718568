/* DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2): a
 * multistep second-order solver in log-SNR time on the data prediction,
 * with the midpoint or Heun form of the correction and an optional SDE
 * variant (sde-dpmsolver++, Lu et al. 2022 appendix). */
#include <math.h>
#include <string.h>

#include "plugins/common/sampling.h"

enum { SOLVER_MIDPOINT, SOLVER_HEUN };
enum { NOISE_NONE, NOISE_SDE };

typedef struct dpmpp_2m {
    int64_t order;
    int solver_type;
    int noise;
    bool lower_order_final;
    bool euler_at_final;
    x0_fix fix;
} dpmpp_2m;

static const char *const solver_names[] = {"midpoint", "heun", NULL};
static const char *const noise_names[] = {"none", "sde", NULL};

static const dfx_option dpm_options[] = {
    DFX_OPTION_INT("order", offsetof(dpmpp_2m, order), 2, 1, 2, "1 = DDIM-equivalent, 2 = DPM-Solver++(2M)"),
    DFX_OPTION_ENUM("solver_type", offsetof(dpmpp_2m, solver_type), SOLVER_MIDPOINT, solver_names,
                    "form of the second-order term"),
    DFX_OPTION_ENUM("noise", offsetof(dpmpp_2m, noise), NOISE_NONE, noise_names,
                    "none: the ODE solver; sde: SDE-DPM-Solver++(2M) with fresh noise each step"),
    DFX_OPTION_BOOL("lower_order_final", offsetof(dpmpp_2m, lower_order_final), true,
                    "first order on the last step when there are fewer than 15 steps"),
    DFX_OPTION_BOOL("euler_at_final", offsetof(dpmpp_2m, euler_at_final), false,
                    "always first order on the last step"),
    X0_FIX_OPTIONS(dpmpp_2m, fix),
    DFX_OPTION_END,
};

X0_FIX_INIT_FINI(dpm, dpmpp_2m, fix)

static double lambda_of(const dfx_level *l)
{
    return log(l->alpha) - log(l->sigma);
}

static dfx_status dpm_sample(void *priv, dfx_sampling *s, const dfx_schedule *sc, dfx_tensor *x)
{
    dpmpp_2m *p = priv;
    dfx_tensor *t[3];
    dfx_status st = scratch_create(x, t, 3);
    if (st)
        return st;
    dfx_tensor *m0 = t[0], *m1 = t[1], *noise = t[2];
    const int64_t n = dfx_tensor_numel(x);
    const bool sde = p->noise == NOISE_SDE;
    float *xd = x->data;

    for (int64_t i = 0; i < sc->steps && !st; i++) {
        const dfx_level *s0 = &sc->levels[i], *to = &sc->targets[i];
        dfx_tensor *swap = m1;
        m1 = m0;
        m0 = swap;
        dfx_denoised out = {.x0 = m0};
        if ((st = dfx_sampling_denoise(s, x, s0, &out)) || (st = x0_fix_apply(&p->fix, m0)))
            break;
        if (sde && (st = dfx_sampling_noise(s, noise)))
            break;
        bool last = i == sc->steps - 1;
        bool first_order = p->order == 1 || i == 0 ||
                           (last && (p->euler_at_final || to->sigma == 0 ||
                                     (p->lower_order_final && sc->steps < 15)));
        if (to->sigma == 0) {
            /* the limit h -> inf of the update: x = alpha_t x0 */
            dfx_ops_scale(xd, m0->data, to->alpha, n);
            st = dfx_sampling_report(s, x);
            continue;
        }
        double h = lambda_of(to) - lambda_of(s0);
        double ratio = to->sigma / s0->sigma;
        double em = expm1(-h);                      /* e^{-h} - 1 */
        double c_x = sde ? ratio * exp(-h) : ratio; /* coefficient of x */
        double c_d0 = sde ? -to->alpha * expm1(-2 * h) : -to->alpha * em;
        double c_d1 = 0;
        if (!first_order) {
            const dfx_level *s1 = &sc->levels[i - 1];
            double r0 = (lambda_of(s0) - lambda_of(s1)) / h;
            /* D1 = (m0 - m1) / r0 */
            if (p->solver_type == SOLVER_MIDPOINT)
                c_d1 = 0.5 * c_d0;
            else
                c_d1 = sde ? to->alpha * (expm1(-2 * h) / (2 * h) + 1) : to->alpha * (em / h + 1);
            c_d1 /= r0;
        }
        const float *in[4] = {xd, m0->data, m1->data, noise->data};
        double c[4] = {c_x, c_d0 + c_d1, -c_d1, sde ? to->sigma * sqrt(-expm1(-2 * h)) : 0};
        dfx_ops_lincomb(xd, n, sde ? 4 : (first_order ? 2 : 3), c, in);
        st = dfx_sampling_report(s, x);
    }
    scratch_destroy(t, 3);
    return st;
}

static const dfx_sampler_ops dpm_ops = {
    .sample = dpm_sample,
};

static const dfx_component dpm_component = {
    DFX_KIND_SAMPLER, "dpmpp_2m", "DPM-Solver++(2M) (Lu et al. 2022), A1111's \"DPM++ 2M\"",
    sizeof(dpmpp_2m), dpm_options, dpm_init, dpm_fini, &dpm_ops,
};

DFX_SINGLE_COMPONENT_PLUGIN("dpmpp_2m", dpm_component)
