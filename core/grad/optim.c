/* Optimisation of a parameter set: AdamW, gradient clipping and the
 * exponential moving average of the weights. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/grad/internal.h"

struct dfx_adamw {
    dfx_params *params;
    dfx_adamw_params hp;
    int64_t steps;
    int64_t count;
    float **m, **v;
};

void dfx_adamw_params_init(dfx_adamw_params *p)
{
    *p = (dfx_adamw_params){.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0};
}

static float **alloc_like(const dfx_params *params, int64_t count)
{
    float **a = calloc((size_t)(count ? count : 1), sizeof *a);
    for (int64_t i = 0; a && i < count; i++) {
        a[i] = calloc((size_t)dfx_params_get((dfx_params *)params, i)->numel, sizeof(float));
        if (!a[i]) {
            while (i--)
                free(a[i]);
            free(a);
            return NULL;
        }
    }
    return a;
}

static void free_like(float **a, int64_t count)
{
    for (int64_t i = 0; a && i < count; i++)
        free(a[i]);
    free(a);
}

dfx_status dfx_adamw_create(dfx_adamw **out, dfx_params *params, const dfx_adamw_params *hp)
{
    *out = NULL;
    if (!(hp->beta1 >= 0 && hp->beta1 < 1 && hp->beta2 >= 0 && hp->beta2 < 1 && hp->eps > 0 &&
          hp->weight_decay >= 0))
        return dfx_error_set(DFX_ERR_RANGE, "AdamW: betas must be in [0, 1), eps > 0 and "
                                            "weight_decay >= 0");
    dfx_adamw *o = calloc(1, sizeof *o);
    if (!o)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "AdamW: out of memory");
    o->params = params;
    o->hp = *hp;
    o->count = dfx_params_count(params);
    o->m = alloc_like(params, o->count);
    o->v = o->m ? alloc_like(params, o->count) : NULL;
    if (!o->v) {
        dfx_adamw_destroy(o);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "AdamW: out of memory for the moments");
    }
    *out = o;
    return DFX_OK;
}

void dfx_adamw_destroy(dfx_adamw *o)
{
    if (!o)
        return;
    free_like(o->m, o->count);
    free_like(o->v, o->count);
    free(o);
}

void dfx_adamw_step(dfx_adamw *o, double lr)
{
    o->steps++;
    const double bc1 = 1.0 - pow(o->hp.beta1, (double)o->steps);
    const double bc2 = 1.0 - pow(o->hp.beta2, (double)o->steps);
    const float b1 = (float)o->hp.beta1, b2 = (float)o->hp.beta2;
    const float decay = (float)(1.0 - lr * o->hp.weight_decay);
    const float step = (float)(lr / bc1), rbc2 = (float)(1.0 / sqrt(bc2));
    const float eps = (float)o->hp.eps;
    for (int64_t i = 0; i < o->count; i++) {
        dfx_param *p = dfx_params_get(o->params, i);
        float *m = o->m[i], *v = o->v[i], *w = p->data;
        const float *g = p->grad;
        for (int64_t j = 0; j < p->numel; j++) {
            w[j] *= decay;
            m[j] = b1 * m[j] + (1 - b1) * g[j];
            v[j] = b2 * v[j] + (1 - b2) * g[j] * g[j];
            w[j] -= step * m[j] / (sqrtf(v[j]) * rbc2 + eps);
        }
    }
}

int64_t dfx_adamw_steps(const dfx_adamw *o)
{
    return o->steps;
}

void dfx_adamw_set_steps(dfx_adamw *o, int64_t steps)
{
    o->steps = steps;
}

float *dfx_adamw_m(dfx_adamw *o, int64_t i)
{
    return i >= 0 && i < o->count ? o->m[i] : NULL;
}

float *dfx_adamw_v(dfx_adamw *o, int64_t i)
{
    return i >= 0 && i < o->count ? o->v[i] : NULL;
}

double dfx_params_clip_grad(dfx_params *p, double max_norm)
{
    const double norm = dfx_params_grad_norm(p);
    if (max_norm > 0 && norm > max_norm) {
        /* torch's clip_grad_norm_: coefficient max_norm / (norm + 1e-6) */
        const float c = (float)(max_norm / (norm + 1e-6));
        for (int64_t i = 0; i < dfx_params_count(p); i++) {
            dfx_param *q = dfx_params_get(p, i);
            for (int64_t j = 0; j < q->numel; j++)
                q->grad[j] *= c;
        }
    }
    return norm;
}

struct dfx_ema {
    const dfx_params *params;
    double decay;
    int64_t updates, count;
    float **shadow;
};

dfx_status dfx_ema_create(dfx_ema **out, const dfx_params *params, double decay)
{
    *out = NULL;
    if (!(decay >= 0 && decay < 1))
        return dfx_error_set(DFX_ERR_RANGE, "EMA: decay %g is outside [0, 1)", decay);
    dfx_ema *e = calloc(1, sizeof *e);
    if (!e)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "EMA: out of memory");
    e->params = params;
    e->decay = decay;
    e->count = dfx_params_count(params);
    if (!(e->shadow = alloc_like(params, e->count))) {
        free(e);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "EMA: out of memory for the shadow weights");
    }
    for (int64_t i = 0; i < e->count; i++) {
        const dfx_param *p = dfx_params_get((dfx_params *)params, i);
        memcpy(e->shadow[i], p->data, (size_t)p->numel * sizeof(float));
    }
    *out = e;
    return DFX_OK;
}

void dfx_ema_destroy(dfx_ema *e)
{
    if (!e)
        return;
    free_like(e->shadow, e->count);
    free(e);
}

void dfx_ema_update(dfx_ema *e)
{
    const double warm = (1.0 + (double)e->updates) / (10.0 + (double)e->updates);
    const float d = (float)(warm < e->decay ? warm : e->decay);
    e->updates++;
    for (int64_t i = 0; i < e->count; i++) {
        const dfx_param *p = dfx_params_get((dfx_params *)e->params, i);
        float *s = e->shadow[i];
        const float *w = p->data;
        for (int64_t j = 0; j < p->numel; j++)
            s[j] -= (1 - d) * (s[j] - w[j]);
    }
}

int64_t dfx_ema_updates(const dfx_ema *e)
{
    return e->updates;
}

void dfx_ema_set_updates(dfx_ema *e, int64_t n)
{
    e->updates = n;
}

float *dfx_ema_shadow(dfx_ema *e, int64_t i)
{
    return i >= 0 && i < e->count ? e->shadow[i] : NULL;
}

void dfx_ema_swap(dfx_ema *e)
{
    for (int64_t i = 0; i < e->count; i++) {
        const dfx_param *p = dfx_params_get((dfx_params *)e->params, i);
        float *s = e->shadow[i], *w = p->data;
        for (int64_t j = 0; j < p->numel; j++) {
            const float t = s[j];
            s[j] = w[j];
            w[j] = t;
        }
    }
}
