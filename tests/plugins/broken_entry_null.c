/* An entry point that returns no descriptor. */
#include "test_plugin.h"

DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void)
{
    return NULL;
}
