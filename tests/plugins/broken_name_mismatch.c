/* The descriptor's name differs from the file's base name (a renamed .so). */
#include "test_plugin.h"

static const dfx_sampler_ops ops = {.sample = tp_sample};
static const dfx_component sampler = {
    DFX_KIND_SAMPLER, "misnamed", "a sampler in a misnamed plugin", 0, NULL, NULL, NULL, &ops,
};

TP_PLUGIN("other_name", &sampler)
