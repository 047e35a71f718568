/* An option without help text (`dfx describe` would have nothing to say). */
#include "test_plugin.h"

typedef struct priv {
    int64_t order;
} priv;

static const dfx_option options[] = {
    DFX_OPTION_INT("order", offsetof(priv, order), 2, 1, 4, NULL),
    DFX_OPTION_END,
};
static const dfx_sampler_ops ops = {.sample = tp_sample};
static const dfx_component sampler = {
    DFX_KIND_SAMPLER, "no_help", "an undocumented option", sizeof(priv), options, NULL, NULL, &ops,
};

TP_PLUGIN("broken_option_no_help", &sampler)
