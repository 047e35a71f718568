/* A sampler without its required sample(). */
#include "test_plugin.h"

static const dfx_sampler_ops ops = {.sample = NULL};
static const dfx_component sampler = {
    DFX_KIND_SAMPLER, "no_sample", "a sampler that cannot sample", 0, NULL, NULL, NULL, &ops,
};

TP_PLUGIN("broken_sampler_no_sample", &sampler)
