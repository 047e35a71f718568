/* An enum without choices. */
#include "test_plugin.h"

typedef struct priv {
    int mode;
} priv;

static const char *const no_modes[] = {NULL};
static const dfx_option options[] = {
    DFX_OPTION_ENUM("mode", offsetof(priv, mode), 0, no_modes, "how to step"),
    DFX_OPTION_END,
};
static const dfx_sampler_ops ops = {.sample = tp_sample};
static const dfx_component sampler = {
    DFX_KIND_SAMPLER, "enum_empty", "an enum with nothing to choose", sizeof(priv), options, NULL, NULL,
    &ops,
};

TP_PLUGIN("broken_option_enum_empty", &sampler)
