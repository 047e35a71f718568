/* A model without its required predict(). */
#include "test_plugin.h"

static const dfx_model_ops ops = {.info = tp_info, .predict = NULL};
static const dfx_component model = {
    DFX_KIND_MODEL, "no_predict", "a model that cannot predict", 0, NULL, NULL, NULL, &ops,
};

TP_PLUGIN("broken_model_no_predict", &model)
