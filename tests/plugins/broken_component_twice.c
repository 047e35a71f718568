/* Two components of the same kind and name in one plugin. (The same name
 * for different kinds is allowed: names are unique within a kind.) */
#include "test_plugin.h"

static const dfx_sampler_ops sampler_ops = {.sample = tp_sample};
static const dfx_model_ops model_ops = {.info = tp_info, .predict = tp_predict};
static const dfx_component first = {
    DFX_KIND_SAMPLER, "twice", "the first", 0, NULL, NULL, NULL, &sampler_ops,
};
static const dfx_component model = {
    DFX_KIND_MODEL, "twice", "a model may share the name", 0, NULL, NULL, NULL, &model_ops,
};
static const dfx_component second = {
    DFX_KIND_SAMPLER, "twice", "the second", 0, NULL, NULL, NULL, &sampler_ops,
};

TP_PLUGIN("broken_component_twice", &first, &model, &second)
