/* An option whose field lies outside the private struct (an offset taken
 * from another struct): the core would write past the allocation. */
#include "test_plugin.h"

typedef struct priv {
    double eta;
} priv;

typedef struct bigger {
    double eta;
    double tail;
} bigger;

static const dfx_option options[] = {
    DFX_OPTION_FLOAT("tail", offsetof(bigger, tail), 0.0, 0.0, 1.0, "a field priv does not have"),
    DFX_OPTION_END,
};
static const dfx_sampler_ops ops = {.sample = tp_sample};
static const dfx_component sampler = {
    DFX_KIND_SAMPLER, "offset_outside", "an option outside priv", sizeof(priv), options, NULL, NULL, &ops,
};

TP_PLUGIN("broken_option_offset", &sampler)
