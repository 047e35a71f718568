/* A component without the one-line summary `dfx list` prints. */
#include "test_plugin.h"

static const dfx_sampler_ops ops = {.sample = tp_sample};
static const dfx_component sampler = {
    DFX_KIND_SAMPLER, "no_summary", NULL, 0, NULL, NULL, NULL, &ops,
};

TP_PLUGIN("broken_null_summary", &sampler)
