/* The right ABI version but a descriptor of another size (a plugin built
 * against a header whose dfx_plugin had fewer fields). The object ends after
 * struct_size, so a loader that read on would trip ASan. */
#include "test_plugin.h"

static const struct {
    _Alignas(dfx_plugin) uint32_t abi_version;
    uint32_t struct_size;
} short_descriptor = {DFX_ABI_VERSION, 2 * sizeof(uint32_t)};

DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void)
{
    return (const dfx_plugin *)(const void *)&short_descriptor;
}
