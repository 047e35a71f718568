/* The classic mistake: the entry point is defined but not exported (no
 * DFX_PLUGIN_EXPORT while the module is built with hidden visibility), so
 * the loader finds no dfx_plugin_entry symbol. */
#include "test_plugin.h"

static const dfx_sampler_ops ops = {.sample = tp_sample};
static const dfx_component sampler = {
    DFX_KIND_SAMPLER, "unreachable", "never seen", 0, NULL, NULL, NULL, &ops,
};
static const dfx_component *const components[] = {&sampler, NULL};
static const dfx_plugin descriptor = {
    DFX_ABI_VERSION, sizeof(dfx_plugin), "broken_no_entry", "0.0", "MIT", components,
};

const dfx_plugin *dfx_plugin_entry(void);

const dfx_plugin *dfx_plugin_entry(void)
{
    return &descriptor;
}
