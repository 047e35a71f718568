/* One of three plugins that provide the same sampler 'ordered', placed in
 * different search folders by test_registry to pin the search order; the
 * summary says which one won. */
#include "test_plugin.h"

static const dfx_sampler_ops ops = {.sample = tp_sample};
static const dfx_component sampler = {
    DFX_KIND_SAMPLER, "ordered", "order_dirs", 0, NULL, NULL, NULL, &ops,
};

TP_PLUGIN("order_dirs", &sampler)
