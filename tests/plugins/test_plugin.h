/* Shared by the test plugins in this folder: do-nothing ops of each kind and
 * the descriptor boilerplate, so that each broken plugin differs from a good
 * one only in the field its file name says is broken. The loader never calls
 * these ops (it refuses the plugins first); they only have to exist. */
#ifndef DFX_TEST_PLUGIN_H
#define DFX_TEST_PLUGIN_H

#include <string.h>

#include "dfx/plugin.h"

static inline dfx_status tp_plan(void *priv, int64_t steps, dfx_schedule *s)
{
    (void)priv;
    for (int64_t i = 0; i <= steps; i++)
        s->levels[i] = (dfx_level){(double)(steps - i), 1.0, (double)(steps - i)};
    return DFX_OK;
}

static inline dfx_status tp_sample(void *priv, dfx_sampling *s, const dfx_schedule *sched,
                                   dfx_tensor *x)
{
    (void)priv, (void)s, (void)sched, (void)x;
    return DFX_OK;
}

static inline void tp_info(void *priv, dfx_model_info *info)
{
    (void)priv;
    memset(info, 0, sizeof *info);
}

static inline dfx_status tp_predict(void *priv, const dfx_model_input *in, dfx_tensor *out)
{
    (void)priv, (void)in;
    memset(out->data, 0, dfx_tensor_nbytes(out));
    return DFX_OK;
}

/* The descriptor of plugin `plugin_name` with the given components and its
 * entry point. */
#define TP_PLUGIN(plugin_name, ...)                                                       \
    static const dfx_component *const tp_components[] = {__VA_ARGS__, NULL};             \
    static const dfx_plugin tp_descriptor = {DFX_ABI_VERSION, sizeof(dfx_plugin),         \
                                             plugin_name, "0.0", "MIT", tp_components}; \
    DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void)                           \
    {                                                                                     \
        return &tp_descriptor;                                                            \
    }

#endif
