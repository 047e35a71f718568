/* A scheduler without its required plan(). */
#include "test_plugin.h"

static const dfx_scheduler_ops ops = {.plan = NULL};
static const dfx_component scheduler = {
    DFX_KIND_SCHEDULER, "no_plan", "a scheduler that cannot plan", 0, NULL, NULL, NULL, &ops,
};

TP_PLUGIN("broken_scheduler_no_plan", &scheduler)
