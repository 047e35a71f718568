/* The control: a valid plugin with one component of each kind and an option
 * table using every option type, so test_registry can show that the harness
 * loads good plugins (next to the broken ones) and that a pipeline built only
 * from them resolves and runs.
 *   scheduler good_linear: VE levels sigma_max * (1 - i/steps), alpha = 1
 *   sampler   good_fill:   one denoiser call, then x[:] = value
 *   model     good_zero:   predicts eps = 0 for samples of shape [3] */
#include <math.h>

#include "test_plugin.h"

typedef struct good_linear {
    double sigma_max;
} good_linear;

static const dfx_option good_linear_options[] = {
    DFX_OPTION_FLOAT("sigma_max", offsetof(good_linear, sigma_max), 10.0, 0.001, INFINITY,
                     "the first noise level"),
    DFX_OPTION_END,
};

static dfx_status good_linear_plan(void *priv, int64_t steps, dfx_schedule *s)
{
    const good_linear *p = priv;
    for (int64_t i = 0; i <= steps; i++) {
        double sigma = p->sigma_max * (1.0 - (double)i / (double)steps);
        s->levels[i] = (dfx_level){sigma, 1.0, sigma};
    }
    return DFX_OK;
}

static const dfx_scheduler_ops good_linear_ops = {.plan = good_linear_plan};

static const dfx_component good_linear_component = {
    DFX_KIND_SCHEDULER, "good_linear", "test: sigma linear from sigma_max to 0", sizeof(good_linear),
    good_linear_options, NULL, NULL, &good_linear_ops,
};

typedef struct good_fill {
    double value;
    double gain;
    bool flag;
    int64_t count;
    int mode;
    char *label;
    char *file;
    dfx_floats weights;
    dfx_ints sizes;
} good_fill;

static const char *const good_modes[] = {"first", "second", "third", NULL};

static const dfx_option good_fill_options[] = {
    DFX_OPTION_FLOAT("value", offsetof(good_fill, value), 0.5, -10.0, 10.0, "what x is filled with"),
    DFX_OPTION_FLOAT_OR_NULL("gain", offsetof(good_fill, gain), 0.0, 1.0, "a nullable float"),
    DFX_OPTION_BOOL("flag", offsetof(good_fill, flag), true, "a bool"),
    DFX_OPTION_INT("count", offsetof(good_fill, count), 3, 1, 100, "an int"),
    DFX_OPTION_ENUM("mode", offsetof(good_fill, mode), 1, good_modes, "an enum"),
    DFX_OPTION_STRING("label", offsetof(good_fill, label), "hello", "a string"),
    DFX_OPTION_PATH("file", offsetof(good_fill, file), "a path"),
    DFX_OPTION_FLOATS("weights", offsetof(good_fill, weights), 0.0, 1.0, "a list of floats"),
    DFX_OPTION_INTS("sizes", offsetof(good_fill, sizes), 1, 64, "a list of ints"),
    DFX_OPTION_END,
};

static dfx_status good_fill_sample(void *priv, dfx_sampling *s, const dfx_schedule *sched,
                                   dfx_tensor *x)
{
    const good_fill *p = priv;
    dfx_tensor *x0;
    dfx_status st = dfx_tensor_create_like(&x0, x);
    if (st)
        return st;
    dfx_denoised out = {.x0 = x0};
    st = dfx_sampling_denoise(s, x, &sched->levels[0], &out);
    dfx_tensor_destroy(x0);
    if (st)
        return st;
    float *xd = x->data;
    for (int64_t i = 0; i < dfx_tensor_numel(x); i++)
        xd[i] = (float)p->value;
    return dfx_sampling_report(s, x);
}

static int64_t good_fill_evaluations(void *priv, const dfx_schedule *sched)
{
    (void)priv, (void)sched;
    return 1;
}

static const dfx_sampler_ops good_fill_ops = {
    .sample = good_fill_sample,
    .evaluations = good_fill_evaluations,
};

static const dfx_component good_fill_component = {
    DFX_KIND_SAMPLER, "good_fill", "test: fills x with a value", sizeof(good_fill), good_fill_options,
    NULL, NULL, &good_fill_ops,
};

static void good_zero_info(void *priv, dfx_model_info *info)
{
    (void)priv;
    memset(info, 0, sizeof *info);
    info->prediction = DFX_PREDICTION_EPSILON;
    info->input_scale = DFX_INPUT_SCALE_VE;
    info->sample_ndim = 1;
    info->sample_shape[0] = 3;
}

static const dfx_model_ops good_zero_ops = {.info = good_zero_info, .predict = tp_predict};

static const dfx_component good_zero_component = {
    DFX_KIND_MODEL, "good_zero", "test: eps = 0 on samples of shape [3]", 0, NULL, NULL, NULL,
    &good_zero_ops,
};

TP_PLUGIN("good_plugin", &good_linear_component, &good_fill_component, &good_zero_component)
