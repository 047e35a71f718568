/* The exact denoiser of a Gaussian mixture with diagonal covariances: a
 * "model" with no weights whose x0 prediction is the true posterior mean
 * E[x0 | x_t], so samplers can be checked against the distribution they
 * should produce (its mean and covariance are known in closed form) and for
 * their order of convergence. log_density() gives log p_data for plots.
 * Class labels (dfx_cond.labels) make it class-conditional: label k is
 * component k alone, -1 the whole mixture, so classifier-free guidance has
 * an exact conditional and unconditional model to mix. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "dfx/plugin.h"

/* below this many items a batch is not worth waking the thread team for */
#define GMM_PAR_MIN 512

typedef struct gmm {
    int64_t dims;
    dfx_floats weights, means, stds;

    /* set by init */
    int64_t k;          /* components */
    double *logw;       /* [K] log of the normalised weights */
    double *mu;         /* [K*D] */
    double *var;        /* [K*D] diagonal variances */
    /* the Gaussian of x_t given component k at one noise level (set_level) */
    double *amu;        /* [K*D] a mu */
    double *inv_v;      /* [K*D] 1 / (a^2 S + b^2) */
    double *gain;       /* [K*D] a S / (a^2 S + b^2) */
    double *cst;        /* [K] log w - 1/2 sum_d log(2 pi v) */
    int nthreads;
    int64_t stride;     /* doubles of scratch per thread: K + D rounded up to
                           whole 128-byte blocks, so threads share no cache line */
    double *scratch;    /* [nthreads * stride] per-thread logits and sums */
} gmm;

static const dfx_option gmm_options[] = {
    DFX_OPTION_INT("dims", offsetof(gmm, dims), 2, 1, 1000000, "dimension D of a sample"),
    DFX_OPTION_FLOATS("weights", offsetof(gmm, weights), 0, INFINITY,
                      "K positive component weights (normalised here); empty: equal weights, or the "
                      "default mixture when means is empty too"),
    DFX_OPTION_FLOATS("means", offsetof(gmm, means), -INFINITY, INFINITY,
                      "K*D component means, row-major; empty (with weights and stds empty, dims 2): the "
                      "default mixture, 8 components on a circle of radius 2 with weights 1..8 and std "
                      "0.2, and one of weight 6 and std 0.35 at the centre"),
    DFX_OPTION_FLOATS("stds", offsetof(gmm, stds), 0, INFINITY,
                      "standard deviations: K values (isotropic) or K*D (diagonal); empty: 1"),
    DFX_OPTION_END,
};

enum { DEFAULT_K = 9 };

/* The default mixture: a ring of 8 with weights growing counter-clockwise
 * (so its mean is off the origin and the picture has an orientation) around
 * a wider central component. */
static void default_mixture(double *w, double *mu, double *sd)
{
    for (int k = 0; k < 8; k++) {
        const double angle = k * (M_PI / 4);
        w[k] = k + 1;
        mu[2 * k] = 2 * cos(angle);
        mu[2 * k + 1] = 2 * sin(angle);
        sd[2 * k] = sd[2 * k + 1] = 0.2;
    }
    w[8] = 6;
    mu[16] = mu[17] = 0;
    sd[16] = sd[17] = 0.35;
}

static void gmm_release(gmm *g)
{
    free(g->logw);
    free(g->mu);
    free(g->var);
    free(g->amu);
    free(g->inv_v);
    free(g->gain);
    free(g->cst);
    free(g->scratch);
    g->logw = g->mu = g->var = g->amu = g->inv_v = g->gain = g->cst = g->scratch = NULL;
}

static void gmm_fini(void *priv)
{
    gmm_release(priv);
}

static dfx_status gmm_init(void *priv)
{
    gmm *g = priv;
    const int64_t d = g->dims;
    const int64_t nw = g->weights.n, nm = g->means.n, ns = g->stds.n;
    const bool use_default = nw == 0 && nm == 0 && ns == 0;
    int64_t k;

    if (use_default) {
        if (d != 2)
            return dfx_error_set(DFX_ERR_CONFIG, "the default mixture is 2-D; with dims %lld give weights, "
                                                 "means (K*D values) and stds", (long long)d);
        k = DEFAULT_K;
    } else if (nm == 0) {
        return dfx_error_set(DFX_ERR_CONFIG, "means is empty: give K*D values (row-major), or leave weights, "
                                             "means and stds all empty for the default mixture");
    } else if (nw > 0) {
        k = nw;
        if (nm != k * d)
            return dfx_error_set(DFX_ERR_CONFIG, "means has %lld values, expected K*D = %lld (K = %lld weights, "
                                                 "D = %lld dims)", (long long)nm, (long long)(k * d),
                                 (long long)k, (long long)d);
    } else {
        if (nm % d != 0)
            return dfx_error_set(DFX_ERR_CONFIG, "means has %lld values, not a multiple of dims = %lld",
                                 (long long)nm, (long long)d);
        k = nm / d;
    }
    if (!use_default && ns != 0 && ns != k && ns != k * d)
        return dfx_error_set(DFX_ERR_CONFIG, "stds has %lld values, expected K = %lld (isotropic) or K*D = %lld "
                                             "(diagonal)", (long long)ns, (long long)k, (long long)(k * d));
    for (int64_t i = 0; i < nw; i++)
        if (!(g->weights.v[i] > 0) || !isfinite(g->weights.v[i]))
            return dfx_error_set(DFX_ERR_CONFIG, "weights[%lld] is %g; weights must be positive and finite",
                                 (long long)i, g->weights.v[i]);
    for (int64_t i = 0; i < ns; i++)
        if (!(g->stds.v[i] > 0) || !isfinite(g->stds.v[i]))
            return dfx_error_set(DFX_ERR_CONFIG, "stds[%lld] is %g; standard deviations must be positive and "
                                                 "finite", (long long)i, g->stds.v[i]);
    for (int64_t i = 0; i < nm; i++)
        if (!isfinite(g->means.v[i]))
            return dfx_error_set(DFX_ERR_CONFIG, "means[%lld] is %g; means must be finite", (long long)i,
                                 g->means.v[i]);

    g->k = k;
    g->nthreads = 1;
#ifdef _OPENMP
    g->nthreads = omp_get_max_threads();
#endif
    const size_t kd = (size_t)(k * d);
    g->logw = malloc((size_t)k * sizeof(double));
    g->cst = malloc((size_t)k * sizeof(double));
    g->mu = malloc(kd * sizeof(double));
    g->var = malloc(kd * sizeof(double));
    g->amu = malloc(kd * sizeof(double));
    g->inv_v = malloc(kd * sizeof(double));
    g->gain = malloc(kd * sizeof(double));
    g->stride = (k + d + 15) / 16 * 16;
    g->scratch = aligned_alloc(128, (size_t)g->nthreads * (size_t)g->stride * sizeof(double));
    if (!g->logw || !g->cst || !g->mu || !g->var || !g->amu || !g->inv_v || !g->gain || !g->scratch) {
        gmm_release(g);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory for %lld components in %lld dimensions",
                             (long long)k, (long long)d);
    }

    double wsum = 0;
    if (use_default) {
        double sd[2 * DEFAULT_K];
        default_mixture(g->logw, g->mu, sd);
        for (size_t i = 0; i < kd; i++)
            g->var[i] = sd[i] * sd[i];
    } else {
        memcpy(g->mu, g->means.v, kd * sizeof(double));
        for (int64_t c = 0; c < k; c++) {
            g->logw[c] = nw ? g->weights.v[c] : 1.0;
            for (int64_t j = 0; j < d; j++) {
                double s = ns == 0 ? 1.0 : ns == k ? g->stds.v[c] : g->stds.v[c * d + j];
                g->var[c * d + j] = s * s;
            }
        }
    }
    for (int64_t c = 0; c < k; c++)
        wsum += g->logw[c];
    for (int64_t c = 0; c < k; c++)
        g->logw[c] = log(g->logw[c] / wsum);
    return DFX_OK;
}

static void gmm_info(void *priv, dfx_model_info *info)
{
    const gmm *g = priv;
    memset(info, 0, sizeof *info);
    info->prediction = DFX_PREDICTION_SAMPLE;
    info->input_scale = DFX_INPUT_SCALE_VP;
    info->sample_ndim = 1;
    info->sample_shape[0] = g->dims;
}

/* The law of the model input at VE noise level s (s = sigma/alpha): the
 * input is x_t / sqrt(alpha^2 + sigma^2) = a x0 + b eps with a = 1/sqrt(1+s^2),
 * b = s a, so given component k it is N(a mu_k, a^2 S_k + b^2 I); and by the
 * Gaussian conditioning formula E[x0 | x_t, k] = mu_k + a S_k (a^2 S_k + b^2 I)^-1
 * (x_t - a mu_k). s = 0 gives the data itself; s = inf (a = 0, b = 1) makes
 * x_t independent of x0. */
static void set_level(gmm *g, double s)
{
    double a, b;
    if (isinf(s)) {
        a = 0;
        b = 1;
    } else {
        /* hypot keeps a and b finite where s^2 would overflow */
        const double r = hypot(1.0, s);
        a = 1 / r;
        b = s / r;
    }
    const int64_t d = g->dims;
    for (int64_t c = 0; c < g->k; c++) {
        double logdet = 0;
        for (int64_t j = 0; j < d; j++) {
            const int64_t i = c * d + j;
            const double v = a * a * g->var[i] + b * b;
            g->amu[i] = a * g->mu[i];
            g->inv_v[i] = 1 / v;
            g->gain[i] = a * g->var[i] / v;
            logdet += log(2 * M_PI * v);
        }
        g->cst[c] = g->logw[c] - 0.5 * logdet;
    }
}

/* For one point x [D] at the level of the last set_level: writes the
 * posterior mean E[x0 | x] to x0 (when not NULL) and returns log p(x).
 * gamma_k is the softmax of log w_k + log N(x; a mu_k, a^2 S_k + b^2 I),
 * taken with the largest logit subtracted (log-sum-exp). With `only` >= 0
 * the data is component `only` alone (a class-conditional model: E[x0 | x,
 * k] and log p(x | k) + log w_k). lg holds K + D doubles of scratch. */
static double posterior(const gmm *g, const float *x, float *x0, double *lg, int64_t only)
{
    const int64_t k = g->k, d = g->dims;
    double *acc = lg + k;
    double top = -INFINITY;
    for (int64_t c = 0; c < k; c++) {
        if (only >= 0 && c != only) {
            lg[c] = -INFINITY;
            continue;
        }
        const double *amu = g->amu + c * d, *iv = g->inv_v + c * d;
        double q = 0;
        for (int64_t j = 0; j < d; j++) {
            const double r = x[j] - amu[j];
            q += r * r * iv[j];
        }
        lg[c] = g->cst[c] - 0.5 * q;
        top = lg[c] > top ? lg[c] : top;
    }
    double sum = 0;
    if (x0)
        memset(acc, 0, (size_t)d * sizeof *acc);
    for (int64_t c = 0; c < k; c++) {
        /* e^-50 < 2e-22 is below the rounding of sum >= 1: skip the exp;
         * the largest term is e^0 */
        if (!(lg[c] - top >= -50))
            continue;
        const double e = lg[c] == top ? 1.0 : exp(lg[c] - top);
        sum += e;
        if (!x0)
            continue;
        const double *amu = g->amu + c * d, *mu = g->mu + c * d, *gain = g->gain + c * d;
        for (int64_t j = 0; j < d; j++)
            acc[j] += e * (mu[j] + gain[j] * (x[j] - amu[j]));
    }
    if (x0)
        for (int64_t j = 0; j < d; j++)
            x0[j] = (float)(acc[j] / sum);
    return top + log(sum);
}

static int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static dfx_status check_points(const gmm *g, const dfx_tensor *x, const char *what)
{
    if (x->dtype != DFX_DTYPE_F32 || x->ndim != 2 || x->shape[1] != g->dims) {
        char buf[128];
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: expected float32 points [N, %lld], got %s %s", what,
                             (long long)g->dims, dfx_dtype_name(x->dtype), dfx_tensor_shape_str(x, buf, sizeof buf));
    }
    return DFX_OK;
}

/* Evaluates rows [lo, hi) of x at the current level, in parallel; row i
 * conditioned on component labels[i] when labels is not NULL and that is
 * >= 0. */
static void run_rows(gmm *g, const float *x, float *x0, double *logp, const int64_t *labels, int64_t lo,
                     int64_t hi)
{
    const int64_t d = g->dims, stride = g->stride;
#pragma omp parallel for num_threads(g->nthreads) if (hi - lo >= GMM_PAR_MIN) schedule(static)
    for (int64_t i = lo; i < hi; i++) {
        double *lg = g->scratch + (int64_t)thread_id() * stride;
        double lp = posterior(g, x + i * d, x0 ? x0 + i * d : NULL, lg, labels ? labels[i] : -1);
        if (logp)
            logp[i] = lp;
    }
}

static dfx_status gmm_predict(void *priv, const dfx_model_input *in, dfx_tensor *out)
{
    gmm *g = priv;
    dfx_status st = check_points(g, in->x, "gmm input");
    if (st)
        return st;
    if (!in->sigma)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "gmm needs the noise level of its input (dfx_model_input.sigma)");
    const int64_t batch = in->x->shape[0];
    const float *x = in->x->data;
    float *x0 = out->data;
    const int64_t *labels = in->cond ? in->cond->labels : NULL;
    for (int64_t i = 0; labels && i < batch; i++)
        if (labels[i] < -1 || labels[i] >= g->k)
            return dfx_error_set(DFX_ERR_RANGE, "item %lld: class label %lld is not a component of the mixture "
                                 "(0 to %lld, or -1 for none)", (long long)i, (long long)labels[i],
                                 (long long)g->k - 1);
    /* items sharing a noise level (usually the whole batch) share the tables */
    for (int64_t lo = 0, hi; lo < batch; lo = hi) {
        const double s = in->sigma[lo];
        if (!(s >= 0))
            return dfx_error_set(DFX_ERR_RANGE, "item %lld: noise level sigma/alpha = %g is not >= 0",
                                 (long long)lo, s);
        for (hi = lo + 1; hi < batch && in->sigma[hi] == s; hi++)
            ;
        set_level(g, s);
        run_rows(g, x, x0, NULL, labels, lo, hi);
    }
    return DFX_OK;
}

static dfx_status gmm_log_density(void *priv, const dfx_tensor *x, double *out)
{
    gmm *g = priv;
    dfx_status st = check_points(g, x, "gmm log_density");
    if (st)
        return st;
    set_level(g, 0);
    run_rows(g, x->data, NULL, out, NULL, 0, x->shape[0]);
    return DFX_OK;
}

static const dfx_model_ops gmm_ops = {
    .info = gmm_info,
    .predict = gmm_predict,
    .log_density = gmm_log_density,
};

static const dfx_component gmm_component = {
    DFX_KIND_MODEL, "gmm", "exact denoiser of a Gaussian mixture (tests samplers without weights)",
    sizeof(gmm), gmm_options, gmm_init, gmm_fini, &gmm_ops,
};

static const dfx_component *const components[] = {&gmm_component, NULL};

static const dfx_plugin plugin = {
    DFX_ABI_VERSION, sizeof(dfx_plugin), "gmm", "1.0", "MIT", components,
};

DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void)
{
    return &plugin;
}
