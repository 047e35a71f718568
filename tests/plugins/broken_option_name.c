/* An option whose name is not an identifier (a pipeline key must be one). */
#include "test_plugin.h"

typedef struct priv {
    double step_size;
} priv;

static const dfx_option options[] = {
    DFX_OPTION_FLOAT("step-size", offsetof(priv, step_size), 1.0, 0.0, 2.0, "step size"),
    DFX_OPTION_END,
};
static const dfx_sampler_ops ops = {.sample = tp_sample};
static const dfx_component sampler = {
    DFX_KIND_SAMPLER, "bad_option_name", "an option named with a dash", sizeof(priv), options, NULL,
    NULL, &ops,
};

TP_PLUGIN("broken_option_name", &sampler)
