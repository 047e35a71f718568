/* Calls a function nothing provides (a typo, or a symbol of a newer libdfx):
 * dlopen fails with "undefined symbol" since the loader binds every symbol at
 * load time (RTLD_NOW), not at the first call in the middle of a run. */
#include "test_plugin.h"

void dfx_test_no_such_function(void);

static dfx_status calls_nothing(void *priv, dfx_sampling *s, const dfx_schedule *sched, dfx_tensor *x)
{
    (void)priv, (void)s, (void)sched, (void)x;
    dfx_test_no_such_function();
    return DFX_OK;
}

static const dfx_sampler_ops ops = {.sample = calls_nothing};
static const dfx_component sampler = {
    DFX_KIND_SAMPLER, "unresolved", "calls a missing function", 0, NULL, NULL, NULL, &ops,
};

TP_PLUGIN("broken_unresolved_symbol", &sampler)
