/* The sampling context: the denoiser a sampler calls (model adapter: input
 * normalisation, conversion of eps / v / x0 / score predictions and the
 * learned variance into x0 and eps), the run's noise, the trace, progress,
 * NaN checks and interruption. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/run/run.h"

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
    dfx_tensor *input;   /* model input */
    dfx_tensor *raw;     /* model output (2C channels with learned variance) */
    dfx_tensor *pred;    /* with learned variance: the prediction channels */
    double *tvec;        /* t_model per batch item */
    double *svec;        /* sigma/alpha per batch item */
    int64_t evals;
    int64_t reports;
};

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
    int64_t shape[DFX_MAX_DIMS];
    memcpy(shape, like->shape, sizeof shape);
    if (s->info.learned_variance)
        shape[1] *= 2;
    if ((st = dfx_tensor_create_like(&s->input, like)) ||
        (st = dfx_tensor_create(&s->raw, DFX_DTYPE_F32, like->ndim, shape)) ||
        (s->info.learned_variance && (st = dfx_tensor_create_like(&s->pred, like)))) {
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
    dfx_tensor_destroy(s->input);
    dfx_tensor_destroy(s->raw);
    dfx_tensor_destroy(s->pred);
    free(s->tvec);
    free(s->svec);
    free(s);
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
        s->svec[i] = lv->alpha > 0 ? lv->sigma / lv->alpha : INFINITY;
    }
    const dfx_model_input mi = {s->input, s->tvec, s->svec, NULL};
    if ((st = s->mops->predict(s->mpriv, &mi, s->raw)))
        return dfx_error_prefix(st, "%s: ", s->mname);
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
