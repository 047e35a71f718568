/* Allocation of dfx_schedule arrays. */
#include <stdlib.h>
#include <string.h>

#include "dfx/plugin.h"

dfx_status dfx_schedule_init(dfx_schedule *s, int64_t steps, bool continuous,
                             int64_t train_steps)
{
    memset(s, 0, sizeof *s);
    if (steps < 1 || steps > 100000000)
        return dfx_error_set(DFX_ERR_RANGE, "schedule: %lld steps is out of range [1, 100000000]",
                             (long long)steps);
    s->steps = steps;
    s->levels = calloc((size_t)steps + 1, sizeof *s->levels);
    s->targets = calloc((size_t)steps, sizeof *s->targets);
    bool ok = s->levels && s->targets;
    if (continuous) {
        s->time = calloc((size_t)steps + 1, sizeof *s->time);
        s->time_to = calloc((size_t)steps, sizeof *s->time_to);
        s->sde_f = calloc((size_t)steps + 1, sizeof *s->sde_f);
        s->sde_g2 = calloc((size_t)steps + 1, sizeof *s->sde_g2);
        ok = ok && s->time && s->time_to && s->sde_f && s->sde_g2;
    }
    if (train_steps > 0) {
        s->train_steps = train_steps;
        s->train_alpha_bar = calloc((size_t)train_steps, sizeof *s->train_alpha_bar);
        ok = ok && s->train_alpha_bar;
    }
    if (!ok) {
        dfx_schedule_fini(s);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "schedule: out of memory for %lld steps",
                             (long long)steps);
    }
    return DFX_OK;
}

void dfx_schedule_fini(dfx_schedule *s)
{
    free(s->levels);
    free(s->targets);
    free(s->time);
    free(s->time_to);
    free(s->sde_f);
    free(s->sde_g2);
    free(s->train_alpha_bar);
    memset(s, 0, sizeof *s);
}
