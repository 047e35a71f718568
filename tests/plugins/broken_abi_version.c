/* Built for a future plugin ABI whose descriptor has another layout: only
 * the leading abi_version is common to every ABI, so the loader must refuse
 * the plugin before it reads any other field. The object is just that one
 * field, so a loader that read further would trip ASan (global overflow). */
#include "test_plugin.h"

static const struct {
    _Alignas(dfx_plugin) uint32_t abi_version;
} future_descriptor = {DFX_ABI_VERSION + 1};

DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void)
{
    return (const dfx_plugin *)(const void *)&future_descriptor;
}
