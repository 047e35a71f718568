/* The same option name twice in one table. */
#include "test_plugin.h"

typedef struct priv {
    double eta;
    double eta_again;
} priv;

static const dfx_option options[] = {
    DFX_OPTION_FLOAT("eta", offsetof(priv, eta), 0.0, 0.0, 1.0, "noise scale"),
    DFX_OPTION_FLOAT("eta", offsetof(priv, eta_again), 0.0, 0.0, 1.0, "noise scale, again"),
    DFX_OPTION_END,
};
static const dfx_sampler_ops ops = {.sample = tp_sample};
static const dfx_component sampler = {
    DFX_KIND_SAMPLER, "duplicate_option", "declares eta twice", sizeof(priv), options, NULL, NULL, &ops,
};

TP_PLUGIN("broken_option_duplicate", &sampler)
