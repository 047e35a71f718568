/* A component without an ops struct. */
#include "test_plugin.h"

static const dfx_component model = {
    DFX_KIND_MODEL, "no_ops", "a model with no ops", 0, NULL, NULL, NULL, NULL,
};

TP_PLUGIN("broken_null_ops", &model)
