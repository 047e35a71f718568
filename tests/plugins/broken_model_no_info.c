/* A model without its required info(). */
#include "test_plugin.h"

static const dfx_model_ops ops = {.info = NULL, .predict = tp_predict};
static const dfx_component model = {
    DFX_KIND_MODEL, "no_info", "a model that does not describe itself", 0, NULL, NULL, NULL, &ops,
};

TP_PLUGIN("broken_model_no_info", &model)
