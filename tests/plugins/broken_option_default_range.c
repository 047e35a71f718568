/* A default outside the option's own range. */
#include "test_plugin.h"

typedef struct priv {
    double eta;
} priv;

static const dfx_option options[] = {
    DFX_OPTION_FLOAT("eta", offsetof(priv, eta), 1.5, 0.0, 1.0, "noise scale"),
    DFX_OPTION_END,
};
static const dfx_sampler_ops ops = {.sample = tp_sample};
static const dfx_component sampler = {
    DFX_KIND_SAMPLER, "default_outside", "eta defaults to 1.5 in [0, 1]", sizeof(priv), options, NULL,
    NULL, &ops,
};

TP_PLUGIN("broken_option_default_range", &sampler)
