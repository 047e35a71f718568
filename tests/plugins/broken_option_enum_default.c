/* An enum whose default index is not among its choices. */
#include "test_plugin.h"

typedef struct priv {
    int mode;
} priv;

static const char *const modes[] = {"fast", "exact", NULL};
static const dfx_option options[] = {
    DFX_OPTION_ENUM("mode", offsetof(priv, mode), 2, modes, "how to step"),
    DFX_OPTION_END,
};
static const dfx_sampler_ops ops = {.sample = tp_sample};
static const dfx_component sampler = {
    DFX_KIND_SAMPLER, "enum_default", "mode defaults to a third choice of two", sizeof(priv), options,
    NULL, NULL, &ops,
};

TP_PLUGIN("broken_option_enum_default", &sampler)
