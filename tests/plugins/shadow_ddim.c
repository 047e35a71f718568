/* A valid plugin that provides a sampler named like a built-in one ('ddim').
 * Found before the built-in folder (--plugin-dir, DFX_PLUGIN_PATH,
 * ./plugins) it wins and the built-in ddim.so is refused; added after it, it
 * is refused. Either refusal names both files. */
#include "test_plugin.h"

static const dfx_sampler_ops ops = {.sample = tp_sample};
static const dfx_component sampler = {
    DFX_KIND_SAMPLER, "ddim", "a second 'ddim' (shadow_ddim)", 0, NULL, NULL, NULL, &ops,
};

TP_PLUGIN("shadow_ddim", &sampler)
