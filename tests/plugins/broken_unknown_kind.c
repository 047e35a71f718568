/* A component of a kind this dfx does not know (7). */
#include "test_plugin.h"

static const dfx_sampler_ops ops = {.sample = tp_sample};
static const dfx_component strange = {
    (dfx_kind)7, "strange", "a component of an unknown kind", 0, NULL, NULL, NULL, &ops,
};

TP_PLUGIN("broken_unknown_kind", &strange)
