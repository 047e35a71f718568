/* A plugin without a component list at all. */
#include "test_plugin.h"

static const dfx_plugin descriptor = {
    DFX_ABI_VERSION, sizeof(dfx_plugin), "broken_null_components", "0.0", "MIT", NULL,
};

DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void)
{
    return &descriptor;
}
