/* Component instances: the core allocates priv, applies the option defaults
 * and the pipeline's values through the generic validator, then calls the
 * component's init. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/options.h"
#include "core/internal.h"
#include "core/run/run.h"

dfx_status dfx__instance_create(dfx__instance *inst, const dfx_component *comp,
                                const dfx__node *section, const char *const *reserved)
{
    dfx_status st;
    memset(inst, 0, sizeof *inst);
    inst->comp = comp;
    snprintf(inst->what, sizeof inst->what, "%s '%s'", dfx_kind_name(comp->kind), comp->name);
    inst->priv = dfx__aligned_alloc(comp->priv_size ? comp->priv_size : 1);
    if (!inst->priv)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory for %s", inst->what);
    memset(inst->priv, 0, comp->priv_size ? comp->priv_size : 1);
    if ((st = dfx__options_defaults(comp->options, inst->priv)) ||
        (st = dfx__options_apply(comp->options, inst->priv, section, inst->what, reserved))) {
        dfx__instance_destroy(inst);
        return st;
    }
    char where[512];
    if ((st = dfx__options_check_required(comp->options, section, inst->what,
                                          dfx__node_where(section, where, sizeof where)))) {
        dfx__instance_destroy(inst);
        return st;
    }
    if (comp->init) {
        dfx_error_clear();
        st = comp->init(inst->priv);
        if (st) {
            dfx_error_prefix(st, "%s: %s: ", dfx__node_where(section, where, sizeof where), inst->what);
            dfx__instance_destroy(inst);
            return st;
        }
    }
    inst->inited = true;
    return DFX_OK;
}

void dfx__instance_destroy(dfx__instance *inst)
{
    if (!inst->comp)
        return;
    if (inst->inited && inst->comp->fini)
        inst->comp->fini(inst->priv);
    if (inst->priv)
        dfx__options_free(inst->comp->options, inst->priv);
    free(inst->priv);
    memset(inst, 0, sizeof *inst);
}

