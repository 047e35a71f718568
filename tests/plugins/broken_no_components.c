/* A plugin whose component list is empty. */
#include "test_plugin.h"

static const dfx_component *const components[] = {NULL};
static const dfx_plugin descriptor = {
    DFX_ABI_VERSION, sizeof(dfx_plugin), "broken_no_components", "0.0", "MIT", components,
};

DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void)
{
    return &descriptor;
}
