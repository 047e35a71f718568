/* The sampling context: the denoiser a sampler calls (model adapter: input
 * normalisation, conversion of eps / v / x0 / score predictions and the
 * learned variance into x0 and eps), the run's noise, the trace, progress,
 * NaN checks and interruption. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/run/run.h"

/* Guided evaluations: the model run on [uncond; cond] as one batch of 2B. */
struct dfx_guiding {
    dfx_sampling *s;
    const dfx_guidance_ops *ops;
    void *priv;
    dfx_tensor *in2, *raw2;          /* [2B, ...] model input and output */
    dfx_tensor *ctx2, *pooled2;      /* [2B, ...] the two contexts, uncond first */
    int64_t *labels2;
    double *t2, *s2;                 /* [2B] */
    dfx_cond cond2, cond_u, cond_c;  /* both halves, each half alone */
    dfx_tensor half_u, half_c;       /* views of raw2's halves */
};

struct dfx_sampling {
    const dfx_model_ops *mops;
    void *mpriv;
    const char *mname;
    dfx_model_info info;
    dfx_prediction prediction;
    const dfx_scheduler_ops *sops;
    void *spriv;
    dfx_rng **rngs;
    int64_t nrngs;
    dfx__trace *trace;
    dfx__progress *progress;
    dfx_cond cond;       /* the conditional half (unguided runs) */
    dfx_guiding *guiding; /* NULL without guidance */
    dfx_tensor *input;   /* model input */
    dfx_tensor *raw;     /* model output (2C channels with learned variance) */
    dfx_tensor *pred;    /* with learned variance: the prediction channels */
    double *tvec;        /* t_model per batch item */
    double *svec;        /* sigma/alpha per batch item */
    int64_t evals;
    int64_t reports;
};

void dfx_conditioning_fini(dfx_conditioning *c)
{
    dfx_tensor_destroy(c->context);
    dfx_tensor_destroy(c->uncond_context);
    dfx_tensor_destroy(c->pooled);
    dfx_tensor_destroy(c->uncond_pooled);
    free(c->labels);
    free(c->uncond_labels);
    memset(c, 0, sizeof *c);
}

/* [2B, ...] = cat(a, b) along the batch of two [B, ...] tensors. */
static dfx_status cat2(dfx_tensor **out, const dfx_tensor *a, const dfx_tensor *b)
{
    int64_t shape[DFX_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[0] *= 2;
    dfx_status st = dfx_tensor_create(out, DFX_DTYPE_F32, a->ndim, shape);
    if (st)
        return st;
    const size_t n = (size_t)dfx_tensor_numel(a);
    memcpy((*out)->data, a->data, n * sizeof(float));
    memcpy((float *)(*out)->data + n, b->data, n * sizeof(float));
    return DFX_OK;
}

static void guiding_destroy(dfx_guiding *g)
{
    if (!g)
        return;
    dfx_tensor_destroy(g->in2);
    dfx_tensor_destroy(g->raw2);
    dfx_tensor_destroy(g->ctx2);
    dfx_tensor_destroy(g->pooled2);
    free(g->labels2);
    free(g->t2);
    free(g->s2);
    free(g);
}

static dfx_status guiding_create(dfx_sampling *s, const dfx__instance *inst, const dfx_conditioning *c,
                                 const dfx_tensor *like)
{
    dfx_guiding *g = calloc(1, sizeof *g);
    if (!g)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    s->guiding = g;
    g->s = s;
    g->ops = inst->comp->ops;
    g->priv = inst->priv;
    const int64_t batch = like->shape[0];
    int64_t shape[DFX_MAX_DIMS];
    memcpy(shape, like->shape, sizeof shape);
    shape[0] *= 2;
    dfx_status st;
    if ((st = dfx_tensor_create(&g->in2, DFX_DTYPE_F32, like->ndim, shape)))
        return st;
    if (s->info.learned_variance)
        shape[1] *= 2;
    if ((st = dfx_tensor_create(&g->raw2, DFX_DTYPE_F32, like->ndim, shape)))
        return st;
    if (!(g->t2 = calloc((size_t)(2 * batch), sizeof *g->t2)) ||
        !(g->s2 = calloc((size_t)(2 * batch), sizeof *g->s2)))
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    g->cond_c = s->cond;
    g->cond_u = (dfx_cond){c->uncond_context, c->uncond_pooled, c->uncond_labels};
    if (c->context && c->uncond_context && (st = cat2(&g->ctx2, c->uncond_context, c->context)))
        return st;
    if (c->pooled && c->uncond_pooled && (st = cat2(&g->pooled2, c->uncond_pooled, c->pooled)))
        return st;
    if (c->labels && c->uncond_labels) {
        if (!(g->labels2 = malloc((size_t)(2 * batch) * sizeof *g->labels2)))
            return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        memcpy(g->labels2, c->uncond_labels, (size_t)batch * sizeof *g->labels2);
        memcpy(g->labels2 + batch, c->labels, (size_t)batch * sizeof *g->labels2);
    }
    g->cond2 = (dfx_cond){g->ctx2, g->pooled2, g->labels2};
    return DFX_OK;
}

dfx_status dfx__sampling_create(dfx_sampling **out, const dfx__sampling_params *pp,
                                const dfx_tensor *like)
{
    dfx_sampling *s = calloc(1, sizeof *s);
    dfx_status st;
    *out = NULL;
    if (!s)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    s->mops = pp->model->comp->ops;
    s->mpriv = pp->model->priv;
    s->mname = pp->model->what;
    s->mops->info(s->mpriv, &s->info);
    s->prediction = pp->prediction;
    s->sops = pp->scheduler->comp->ops;
    s->spriv = pp->scheduler->priv;
    s->rngs = pp->rngs;
    s->nrngs = pp->nrngs;
    s->trace = pp->trace;
    s->progress = pp->progress;
    if (pp->cond)
        s->cond = (dfx_cond){pp->cond->context, pp->cond->pooled, pp->cond->labels};
    int64_t shape[DFX_MAX_DIMS];
    memcpy(shape, like->shape, sizeof shape);
    if (s->info.learned_variance)
        shape[1] *= 2;
    if ((st = dfx_tensor_create_like(&s->input, like)) ||
        (st = dfx_tensor_create(&s->raw, DFX_DTYPE_F32, like->ndim, shape)) ||
        (s->info.learned_variance && (st = dfx_tensor_create_like(&s->pred, like))) ||
        (pp->guidance && (st = guiding_create(s, pp->guidance, pp->cond, like)))) {
        dfx__sampling_destroy(s);
        return st;
    }
    s->tvec = calloc((size_t)like->shape[0], sizeof *s->tvec);
    s->svec = calloc((size_t)like->shape[0], sizeof *s->svec);
    if (!s->tvec || !s->svec) {
        dfx__sampling_destroy(s);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    }
    *out = s;
    return DFX_OK;
}

void dfx__sampling_destroy(dfx_sampling *s)
{
    if (!s)
        return;
    guiding_destroy(s->guiding);
    dfx_tensor_destroy(s->input);
    dfx_tensor_destroy(s->raw);
    dfx_tensor_destroy(s->pred);
    free(s->tvec);
    free(s->svec);
    free(s);
}

/* A view of batch items [i0, i0 + n) of t. */
static dfx_tensor batch_view(const dfx_tensor *t, int64_t i0, int64_t n)
{
    dfx_tensor v = *t;
    const int64_t per = dfx_tensor_numel(t) / t->shape[0];
    v.shape[0] = n;
    v.data = (float *)t->data + i0 * per;
    return v;
}

dfx_status dfx_guiding_model(dfx_guiding *g, const dfx_tensor *x, const dfx_level *lv, const dfx_tensor **uncond,
                             const dfx_tensor **cond)
{
    dfx_sampling *s = g->s;
    const int64_t batch = x->shape[0];
    if (batch * 2 != g->in2->shape[0] || dfx_tensor_numel(x) * 2 != dfx_tensor_numel(g->in2))
        return dfx_error_set(DFX_ERR_INVALID_ARG, "guidance: the model input does not have the run's shape");
    const double t = lv->t_model, sv = dfx__level_sigma(lv);
    for (int64_t i = 0; i < 2 * batch; i++) {
        g->t2[i] = t;
        g->s2[i] = sv;
    }
    dfx_status st;
    if (uncond && cond) {
        const size_t n = (size_t)dfx_tensor_numel(x);
        memcpy(g->in2->data, x->data, n * sizeof(float));
        memcpy((float *)g->in2->data + n, x->data, n * sizeof(float));
        const dfx_model_input mi = {g->in2, g->t2, g->s2, &g->cond2};
        st = s->mops->predict(s->mpriv, &mi, g->raw2);
        g->half_u = batch_view(g->raw2, 0, batch);
        g->half_c = batch_view(g->raw2, batch, batch);
    } else {
        dfx_tensor *half = uncond ? &g->half_u : &g->half_c;
        *half = batch_view(g->raw2, uncond ? 0 : batch, batch);
        const dfx_model_input mi = {x, g->t2, g->s2, uncond ? &g->cond_u : &g->cond_c};
        st = uncond || cond ? s->mops->predict(s->mpriv, &mi, half) : DFX_OK;
    }
    if (st)
        return dfx_error_prefix(st, "%s: ", s->mname);
    if (uncond)
        *uncond = &g->half_u;
    if (cond)
        *cond = &g->half_c;
    return DFX_OK;
}

/* The raw model output for the model input at lv: the network's, or the
 * guidance's mix of its two halves. */
static dfx_status evaluate(dfx_sampling *s, const dfx_level *lv)
{
    dfx_guiding *g = s->guiding;
    if (!g) {
        const dfx_model_input mi = {s->input, s->tvec, s->svec, &s->cond};
        dfx_status st = s->mops->predict(s->mpriv, &mi, s->raw);
        return st ? dfx_error_prefix(st, "%s: ", s->mname) : DFX_OK;
    }
    memset(&g->half_c, 0, sizeof g->half_c);
    dfx_status st = g->ops->guide(g->priv, g, s->input, lv, s->raw);
    if (st)
        return st;
    if (s->info.learned_variance) {
        /* the variance is the conditional one (as GLIDE and guided-diffusion
         * do); evaluate it when the guidance did not */
        const dfx_tensor *c = &g->half_c;
        if (!c->data && (st = dfx_guiding_model(g, s->input, lv, NULL, &c)))
            return st;
        const int64_t batch = s->raw->shape[0], per = dfx_tensor_numel(s->raw) / batch;
        for (int64_t i = 0; i < batch; i++)
            memcpy((float *)s->raw->data + i * per + per / 2, (const float *)c->data + i * per + per / 2,
                   (size_t)(per / 2) * sizeof(float));
    }
    return DFX_OK;
}

/* Copies channels [c0, c0 + c) of every batch item of src [B, C2, ...] into
 * dst [B, c, ...]. */
static void take_channels(dfx_tensor *dst, const dfx_tensor *src, int64_t c0)
{
    const int64_t b = src->shape[0], per_src = dfx_tensor_numel(src) / b;
    const int64_t per_dst = dfx_tensor_numel(dst) / b;
    const int64_t plane = per_src / src->shape[1];
    for (int64_t i = 0; i < b; i++)
        memcpy((float *)dst->data + i * per_dst, (const float *)src->data + i * per_src + c0 * plane,
               (size_t)per_dst * sizeof(float));
}

/* y = (x - c z) / d in float, the order diffusers' schedulers use to turn a
 * prediction into x0 or eps in the level's own coordinates, so results
 * agree with them to the last bits rather than to a rounding each. */
static void sub_div(float *y, const float *x, double c, const float *z, double d, int64_t n)
{
    const float cf = (float)c, df = (float)d;
    for (int64_t i = 0; i < n; i++)
        y[i] = (x[i] - cf * z[i]) / df;
}

dfx_status dfx_sampling_denoise(dfx_sampling *s, const dfx_tensor *x, const dfx_level *lv,
                                dfx_denoised *out)
{
    const int64_t n = dfx_tensor_numel(x);
    const int64_t batch = x->shape[0];
    const bool ve = s->info.input_scale == DFX_INPUT_SCALE_VE;
    /* normalise the level: a = alpha / k, b = sigma / k with k = |(alpha, sigma)|
     * for variance-preserving models or alpha for variance-exploding ones */
    const double k = ve ? lv->alpha : sqrt(lv->alpha * lv->alpha + lv->sigma * lv->sigma);
    const double a = lv->alpha / k, b = lv->sigma / k;
    const float kf = (float)k;
    dfx_status st;

    if (out->var && !s->info.learned_variance)
        return dfx_error_set(DFX_ERR_CONFIG, "%s does not learn its variance, but the sampler asks for "
                                             "it (variance: learned_range); use a fixed variance", s->mname);
    const float *xd = x->data;
    float *in = s->input->data;
    if (kf == 1.0f) {
        memcpy(in, xd, (size_t)n * sizeof(float));
    } else {
        for (int64_t i = 0; i < n; i++)
            in[i] = xd[i] / kf;
    }
    for (int64_t i = 0; i < batch; i++) {
        s->tvec[i] = lv->t_model;
        s->svec[i] = dfx__level_sigma(lv);
    }
    if ((st = evaluate(s, lv)))
        return st;
    s->evals++;
    if (!dfx_ops_all_finite(s->raw->data, dfx_tensor_numel(s->raw)))
        return dfx_error_set(DFX_ERR_NUMERIC, "%s: output is not finite at model evaluation %lld (t_model %g, "
                                              "sigma %g)", s->mname, (long long)s->evals, lv->t_model,
                             lv->sigma / lv->alpha);
    if (s->trace) {
        if ((st = dfx__trace_add_f64(s->trace, "timesteps", lv->t_model)) ||
            (st = dfx__trace_add(s->trace, "model_inputs", s->input)) ||
            (st = dfx__trace_add(s->trace, "model_outputs", s->raw)))
            return st;
    }

    /* the prediction proper: the first C channels */
    dfx_tensor pred_view = *s->input, *pred = &pred_view;
    dfx_tensor *eps_out = out->eps, *x0 = out->x0;
    if (s->info.learned_variance) {
        take_channels(s->pred, s->raw, 0);
        pred = s->pred;
        if (out->var)
            take_channels(out->var, s->raw, x->shape[1]);
    } else {
        pred_view.data = s->raw->data;
    }
    const float *p = pred->data;
    const float *const xin[2] = {in, p};
    switch (s->prediction) {
    case DFX_PREDICTION_SAMPLE:
        if (eps_out)
            sub_div(eps_out->data, xd, lv->alpha, p, lv->sigma, n);
        if (x0->data != p)
            memcpy(x0->data, p, (size_t)n * sizeof(float));
        break;
    case DFX_PREDICTION_V: {
        /* Salimans & Ho 2022: x0 = a x - b v, eps = b x + a v */
        if (eps_out) {
            double c[2] = {b, a};
            dfx_ops_lincomb(eps_out->data, n, 2, c, xin);
        }
        double c[2] = {a, -b};
        dfx_ops_lincomb(x0->data, n, 2, c, xin);
        break;
    }
    case DFX_PREDICTION_SCORE:
        /* the network's output is grad log p(input): eps = -b score, and the
         * score of x itself is that divided by the input scale k */
        if (out->score)
            dfx_ops_scale(out->score->data, p, 1 / k, n);
        if (eps_out)
            dfx_ops_scale(eps_out->data, p, -b, n);
        {
            double c[2] = {1 / a, b * b / a};
            dfx_ops_lincomb(x0->data, n, 2, c, xin);
        }
        break;
    default:
        if (eps_out && eps_out->data != p)
            memcpy(eps_out->data, p, (size_t)n * sizeof(float));
        sub_div(x0->data, xd, lv->sigma, p, lv->alpha, n);
        break;
    }
    if (out->score && s->prediction != DFX_PREDICTION_SCORE) {
        /* score = -eps / sigma, from the eps just computed or from x0 */
        const float *e = s->prediction == DFX_PREDICTION_EPSILON ? p : eps_out ? eps_out->data : NULL;
        if (e) {
            const float sf = (float)-lv->sigma;
            float *sc = out->score->data;
            for (int64_t i = 0; i < n; i++)
                sc[i] = e[i] / sf;
        } else {
            const float *const in2[2] = {xd, x0->data};
            double c[2] = {-1 / (lv->sigma * lv->sigma), lv->alpha / (lv->sigma * lv->sigma)};
            dfx_ops_lincomb(out->score->data, n, 2, c, in2);
        }
    }
    if (s->progress)
        dfx__progress_tick(s->progress);
    return DFX_OK;
}

dfx_status dfx_sampling_noise(dfx_sampling *s, dfx_tensor *out)
{
    const int64_t n = dfx_tensor_numel(out);
    if (s->nrngs == 1) {
        dfx_rng_normal(s->rngs[0], out->data, n);
    } else {
        const int64_t per = n / s->nrngs;
        for (int64_t i = 0; i < s->nrngs; i++)
            dfx_rng_normal(s->rngs[i], (float *)out->data + i * per, per);
    }
    return s->trace ? dfx__trace_add(s->trace, "step_noise", out) : DFX_OK;
}

dfx_status dfx_sampling_report(dfx_sampling *s, const dfx_tensor *x)
{
    dfx_status st;
    s->reports++;
    if (s->trace && (st = dfx__trace_add(s->trace, "samples", x)))
        return st;
    if (!dfx_ops_all_finite(x->data, dfx_tensor_numel(x)))
        return dfx_error_set(DFX_ERR_NUMERIC, "the sample became NaN or infinite at step %lld (after model "
                                              "evaluation %lld)", (long long)s->reports, (long long)s->evals);
    if (dfx__abort_flag)
        return dfx_error_set(DFX_ERR_ABORTED, "interrupted at step %lld", (long long)s->reports);
    return DFX_OK;
}

dfx_status dfx_sampling_level_at(dfx_sampling *s, double t_model, dfx_level *out)
{
    if (!s->sops->level_at)
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "the scheduler cannot give noise levels between its steps "
                                                  "(no level_at)");
    return s->sops->level_at(s->spriv, t_model, out);
}

dfx_status dfx_sampling_t_model(dfx_sampling *s, double sigma_ve, double *t_model)
{
    if (!s->sops->t_model_of)
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "the scheduler cannot map a noise level to a model time "
                                                  "(no t_model_of)");
    return s->sops->t_model_of(s->spriv, sigma_ve, t_model);
}
