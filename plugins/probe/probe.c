/* Test-signal models, like GStreamer's fakesrc: closed-form "networks" that
 * let any scheduler and sampler loop run from the command line. The fixture
 * functions are the fake models the diffusers reference runs used
 * (fixtures/README.md, "schedulers/"), so a dfx run can be compared with them
 * step by step. */
#include <math.h>
#include <string.h>

#include "dfx/plugin.h"

enum { FN_FIXTURE_EPS, FN_FIXTURE_LEARNED_RANGE, FN_FIXTURE_SCORE, FN_FIXTURE_VP, FN_ZERO };

typedef struct probe {
    int function;
} probe;

static const char *const function_names[] = {"fixture_eps", "fixture_learned_range", "fixture_score",
                                              "fixture_vp", "zero", NULL};

static const dfx_option probe_options[] = {
    DFX_OPTION_ENUM("function", offsetof(probe, function), FN_FIXTURE_EPS, function_names,
                    "fixture_eps: x*0.1 + 0.05 cos(t/100); fixture_learned_range: that plus the variance "
                    "channels 0.3 sin(x + t/100); fixture_score: x * -1/(t^2+1) + 0.05 cos(t/100) with t = "
                    "sigma; fixture_vp: fixture_eps at 1000 t; zero: 0"),
    DFX_OPTION_END,
};

static void probe_info(void *priv, dfx_model_info *info)
{
    const probe *p = priv;
    memset(info, 0, sizeof *info);
    info->prediction = p->function == FN_FIXTURE_SCORE ? DFX_PREDICTION_SCORE : DFX_PREDICTION_AUTO;
    info->input_scale = p->function == FN_FIXTURE_SCORE ? DFX_INPUT_SCALE_VE : DFX_INPUT_SCALE_VP;
    info->learned_variance = p->function == FN_FIXTURE_LEARNED_RANGE;
}

/* out = x * a + c over n floats, a and c rounded to float as torch does
 * with Python scalars. */
static void affine(float *out, const float *x, int64_t n, double a, double c)
{
    const float af = (float)a, cf = (float)c;
    for (int64_t i = 0; i < n; i++)
        out[i] = x[i] * af + cf;
}

static dfx_status probe_predict(void *priv, const dfx_model_input *in, dfx_tensor *out)
{
    const probe *p = priv;
    const dfx_tensor *x = in->x;
    const double *t_model = in->t_model;
    const int64_t batch = x->shape[0], per = dfx_tensor_numel(x) / batch;
    for (int64_t b = 0; b < batch; b++) {
        const float *xb = (const float *)x->data + b * per;
        double t = t_model[b];
        switch (p->function) {
        case FN_FIXTURE_EPS:
            affine((float *)out->data + b * per, xb, per, 0.1, (float)(0.05 * cos(t / 100)));
            break;
        case FN_FIXTURE_VP:
            affine((float *)out->data + b * per, xb, per, 0.1, (float)(0.05 * cos(1000 * t / 100)));
            break;
        case FN_FIXTURE_SCORE:
            affine((float *)out->data + b * per, xb, per, (float)(-1 / (t * t + 1)),
                   (float)(0.05 * cos(t / 100)));
            break;
        case FN_FIXTURE_LEARNED_RANGE: {
            float *ob = (float *)out->data + b * 2 * per;
            affine(ob, xb, per, 0.1, (float)(0.05 * cos(t / 100)));
            const float shift = (float)(t / 100);
            for (int64_t i = 0; i < per; i++)
                ob[per + i] = 0.3f * sinf(xb[i] + shift);
            break;
        }
        default:
            memset((float *)out->data + b * per, 0, (size_t)per * sizeof(float));
            break;
        }
    }
    return DFX_OK;
}

static const dfx_model_ops probe_ops = {
    .info = probe_info,
    .predict = probe_predict,
};

static const dfx_component probe_component = {
    DFX_KIND_MODEL, "probe", "closed-form test signals (the fixtures' fake models)", sizeof(probe),
    probe_options, NULL, NULL, &probe_ops,
};

static const dfx_component *const components[] = {&probe_component, NULL};

static const dfx_plugin plugin = {
    DFX_ABI_VERSION, sizeof(dfx_plugin), "probe", "1.0", "MIT", components,
};

DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void)
{
    return &plugin;
}
