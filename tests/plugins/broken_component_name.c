/* The second component's name is not an identifier, so a pipeline could not
 * name it as `type: ...` unambiguously. */
#include "test_plugin.h"

static const dfx_sampler_ops ops = {.sample = tp_sample};
static const dfx_component fine = {
    DFX_KIND_SAMPLER, "fine", "a valid sampler", 0, NULL, NULL, NULL, &ops,
};
static const dfx_component dashed = {
    DFX_KIND_SAMPLER, "my-sampler", "a sampler with a dash in its name", 0, NULL, NULL, NULL, &ops,
};

TP_PLUGIN("broken_component_name", &fine, &dashed)
