/* Samplers against an exact denoiser: the gmm model's x0 prediction is the
 * true posterior mean of a Gaussian mixture, so (a) every sampler must draw
 * the mixture's mean and covariance, within Monte-Carlo error plus a
 * measured discretisation allowance, and (b) the deterministic ones must
 * converge at their order (Euler and DDIM 1, Heun and DPM-Solver++(2M) 2)
 * as the number of steps doubles. The gmm plugin itself is checked first,
 * against Tweedie's formula. */
#include <ftw.h>
#include <sys/stat.h>
#include <time.h>

#include "testutil.h"

static char tmpdir[64];
static char out_path[128];
static dfx_registry *reg;

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dfx_samplers_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(out_path, sizeof out_path, "%s/samples.safetensors", tmpdir);
    ck_assert_msg(dfx_registry_create(&reg, NULL, 0) == DFX_OK, "%s", dfx_error_message());
    ck_assert_msg(dfx_registry_find(reg, DFX_KIND_MODEL, "gmm"), "the gmm plugin is not in %s",
                  dfx_registry_builtin_dir());
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    dfx_registry_destroy(reg);
    reg = NULL;
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- the mixture of the distribution tests ----------------------------- */

/* Three unequal, anisotropic components with mean exactly 0: a zero mean
 * makes the prior mismatch of a finite sigma_max (x_T ~ N(0, sigma_max^2)
 * instead of N(m, C + sigma_max^2)) a relative error of C / sigma_max^2 < 1e-4
 * instead of a shift of the mean, while the unequal weights still move the
 * mean when a sampler puts the wrong mass on a mode. Covariance: diag(1.622,
 * 1.854) with 0.27 off the diagonal. */
#define MIX_K 3
static const double mix_w[MIX_K] = {0.5, 0.3, 0.2};
static const double mix_mu[2 * MIX_K] = {1.2, 0.4, -1.4, 1.0, -0.9, -2.5};
static const double mix_sd[2 * MIX_K] = {0.3, 0.6, 0.5, 0.2, 0.4, 0.4};
#define MIX_YAML                                                                                   \
    "{type: gmm, weights: [0.5, 0.3, 0.2], means: [1.2, 0.4, -1.4, 1.0, -0.9, -2.5], stds: [0.3, " \
    "0.6, 0.5, 0.2, 0.4, 0.4]}"

/* Mean and covariance (xx, xy, yy) of a 2-D mixture with diagonal
 * components: E[x] = sum w mu, E[x x^T] = sum w (S + mu mu^T). */
static void mixture_moments(int k, const double *w, const double *mu, const double *sd, double m[2],
                            double c[3])
{
    double wsum = 0, e[2] = {0}, ee[3] = {0};
    for (int i = 0; i < k; i++)
        wsum += w[i];
    for (int i = 0; i < k; i++) {
        const double p = w[i] / wsum, *u = mu + 2 * i, *s = sd + 2 * i;
        e[0] += p * u[0];
        e[1] += p * u[1];
        ee[0] += p * (s[0] * s[0] + u[0] * u[0]);
        ee[1] += p * u[0] * u[1];
        ee[2] += p * (s[1] * s[1] + u[1] * u[1]);
    }
    m[0] = e[0], m[1] = e[1];
    c[0] = ee[0] - e[0] * e[0], c[1] = ee[1] - e[0] * e[1], c[2] = ee[2] - e[1] * e[1];
}

/* Runs a sample pipeline (YAML text) into out_path and returns its samples
 * [n, 2] (malloc'd). */
static float *run_pipeline(const char *yaml, int64_t n)
{
    dfx_pipeline *p = NULL;
    dfx_status st = dfx_pipeline_parse(&p, yaml, strlen(yaml), "test.yaml");
    if (!st)
        st = dfx_pipeline_resolve(p, reg);
    if (!st)
        st = dfx_pipeline_run(p, NULL);
    ck_assert_msg(st == DFX_OK, "%s\n---\n%s", dfx_error_message(), yaml);
    dfx_pipeline_destroy(p);
    dfx_safetensors *sf = NULL;
    dfx_tensor *t = NULL;
    ck_assert_msg(dfx_safetensors_open(out_path, &sf) == DFX_OK, "%s", dfx_error_message());
    ck_assert_msg(dfx_safetensors_read(sf, "samples", DFX_DTYPE_F32, &t) == DFX_OK, "%s", dfx_error_message());
    ck_assert_int_eq(t->ndim, 2);
    ck_assert_int_eq(t->shape[0], n);
    ck_assert_int_eq(t->shape[1], 2);
    float *x = malloc((size_t)n * 2 * sizeof *x);
    ck_assert_ptr_nonnull(x);
    memcpy(x, t->data, (size_t)n * 2 * sizeof *x);
    dfx_tensor_destroy(t);
    dfx_safetensors_close(sf);
    return x;
}

static float *sample(const char *model, const char *scheduler, const char *sampler, const char *extra,
                     int64_t n, int64_t seed)
{
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "dfx: 1\npipeline: sample\nseed: %lld\nbatch: %lld\nmodel: %s\nscheduler: %s\nsampler: %s\n%s"
             "output: {path: '%s'}\n",
             (long long)seed, (long long)n, model, scheduler, sampler, extra ? extra : "", out_path);
    return run_pipeline(yaml, n);
}

/* ---- the gmm model itself ---------------------------------------------- */

/* An instance made through the ABI, as the core makes one: priv zeroed, the
 * option fields set at their table offsets, then init. */
typedef struct gmm_inst {
    const dfx_component *comp;
    const dfx_model_ops *ops;
    void *priv;
    dfx_floats *lists[3];
} gmm_inst;

static dfx_status gmm_open(gmm_inst *g, int64_t dims, const double *w, int64_t nw, const double *mu, int64_t nm,
                           const double *sd, int64_t ns)
{
    memset(g, 0, sizeof *g);
    g->comp = dfx_registry_find(reg, DFX_KIND_MODEL, "gmm");
    ck_assert_ptr_nonnull(g->comp);
    g->ops = g->comp->ops;
    g->priv = calloc(1, g->comp->priv_size);
    ck_assert_ptr_nonnull(g->priv);
    const char *names[3] = {"weights", "means", "stds"};
    const double *src[3] = {w, mu, sd};
    const int64_t len[3] = {nw, nm, ns};
    for (const dfx_option *o = g->comp->options; o->name; o++) {
        if (strcmp(o->name, "dims") == 0)
            *(int64_t *)((char *)g->priv + o->offset) = dims;
        for (int i = 0; i < 3; i++) {
            if (strcmp(o->name, names[i]) != 0)
                continue;
            dfx_floats *f = (dfx_floats *)((char *)g->priv + o->offset);
            f->n = len[i];
            f->v = len[i] ? malloc((size_t)len[i] * sizeof(double)) : NULL;
            if (len[i])
                memcpy(f->v, src[i], (size_t)len[i] * sizeof(double));
            g->lists[i] = f;
        }
    }
    for (int i = 0; i < 3; i++)
        ck_assert_msg(g->lists[i], "gmm has no option '%s'", names[i]);
    dfx_status st = g->comp->init(g->priv);
    if (st) {
        for (int i = 0; i < 3; i++)
            free(g->lists[i]->v);
        free(g->priv);
        g->priv = NULL;
    }
    return st;
}

static void gmm_close(gmm_inst *g)
{
    g->comp->fini(g->priv);
    for (int i = 0; i < 3; i++)
        free(g->lists[i]->v);
    free(g->priv);
}

/* log of the density of the model input x_t = a x0 + b eps (a = 1/sqrt(1+s^2),
 * b = s a) under the test mixture, written out independently of the plugin */
static double log_marginal(const double x[2], double s)
{
    const double a = 1 / sqrt(1 + s * s), b = s * a;
    double p = 0;
    for (int k = 0; k < MIX_K; k++) {
        double q = 1;
        for (int d = 0; d < 2; d++) {
            const double v = a * a * mix_sd[2 * k + d] * mix_sd[2 * k + d] + b * b;
            const double r = x[d] - a * mix_mu[2 * k + d];
            q *= exp(-0.5 * r * r / v) / sqrt(2 * M_PI * v);
        }
        p += mix_w[k] * q;
    }
    return log(p);
}

/* predict() at one noise level for a batch of points */
static void gmm_predict(gmm_inst *g, const float *x, int64_t n, double s, float *out)
{
    int64_t shape[2] = {n, 2};
    double *sig = malloc((size_t)n * sizeof *sig), *t = calloc((size_t)n, sizeof *t);
    ck_assert(sig && t);
    for (int64_t i = 0; i < n; i++)
        sig[i] = s;
    dfx_tensor xt = dfx_tensor_view(DFX_DTYPE_F32, 2, shape, (void *)x);
    dfx_tensor ot = dfx_tensor_view(DFX_DTYPE_F32, 2, shape, out);
    dfx_model_input in = {&xt, t, sig, NULL};
    ck_assert_msg(g->ops->predict(g->priv, &in, &ot) == DFX_OK, "%s", dfx_error_message());
    free(sig);
    free(t);
}

START_TEST(test_gmm_exact)
{
    gmm_inst g;
    ck_assert_msg(gmm_open(&g, 2, mix_w, 3, mix_mu, 6, mix_sd, 6) == DFX_OK, "%s", dfx_error_message());
    dfx_model_info info;
    g.ops->info(g.priv, &info);
    ck_assert_int_eq(info.prediction, DFX_PREDICTION_SAMPLE);
    ck_assert_int_eq(info.input_scale, DFX_INPUT_SCALE_VP);
    ck_assert_int_eq(info.sample_ndim, 1);
    ck_assert_int_eq(info.sample_shape[0], 2);

    enum { N = 5 };
    const float pts[2 * N] = {0.0f, 0.0f, 1.1f, 0.5f, -1.3f, 0.9f, 0.4f, -1.7f, 3.0f, 2.5f};
    float out[2 * N];
    double m[2], c[3];
    mixture_moments(MIX_K, mix_w, mix_mu, mix_sd, m, c);

    /* s = 0: the data is observed exactly */
    gmm_predict(&g, pts, N, 0.0, out);
    ck_assert_double_le(test_max_abs_diff(out, pts, 2 * N), 1e-6);
    /* s = inf: nothing is observed; the posterior mean is the mixture mean */
    gmm_predict(&g, pts, N, INFINITY, out);
    for (int i = 0; i < N; i++) {
        ck_assert_double_eq_tol(out[2 * i], m[0], 1e-6);
        ck_assert_double_eq_tol(out[2 * i + 1], m[1], 1e-6);
    }
    /* in between, Tweedie's formula: E[x0 | x_t] = (x_t + b^2 grad log p_t(x_t)) / a,
     * the gradient by central differences of the independent log_marginal */
    const double levels[] = {0.05, 0.3, 1.0, 4.0, 150.0};
    for (size_t li = 0; li < sizeof levels / sizeof *levels; li++) {
        const double s = levels[li], a = 1 / sqrt(1 + s * s), b = s * a, h = 1e-5;
        gmm_predict(&g, pts, N, s, out);
        for (int i = 0; i < N; i++) {
            for (int d = 0; d < 2; d++) {
                double xp[2] = {pts[2 * i], pts[2 * i + 1]}, xm[2] = {pts[2 * i], pts[2 * i + 1]};
                xp[d] += h;
                xm[d] -= h;
                const double grad = (log_marginal(xp, s) - log_marginal(xm, s)) / (2 * h);
                const double want = (pts[2 * i + d] + b * b * grad) / a;
                ck_assert_msg(fabs(out[2 * i + d] - want) <= 2e-6 * fmax(1, fabs(want)),
                              "sigma %g, point %d, dim %d: gmm gives %.8g, Tweedie %.8g", s, i, d, out[2 * i + d],
                              want);
            }
        }
    }
    /* log_density is the data's (s = 0) */
    int64_t shape[2] = {N, 2};
    dfx_tensor xt = dfx_tensor_view(DFX_DTYPE_F32, 2, shape, (void *)pts);
    double lp[N];
    ck_assert(g.ops->log_density(g.priv, &xt, lp) == DFX_OK);
    for (int i = 0; i < N; i++) {
        const double x[2] = {pts[2 * i], pts[2 * i + 1]};
        ck_assert_double_eq_tol(lp[i], log_marginal(x, 0), 1e-9 * fmax(1, fabs(lp[i])));
    }
    /* a batch mixing noise levels gives each item its own */
    {
        float mixed[2 * N];
        double sig[N] = {0.3, 0.3, 4.0, 0.3, INFINITY}, t[N] = {0};
        dfx_tensor ot = dfx_tensor_view(DFX_DTYPE_F32, 2, shape, mixed);
        dfx_model_input in = {&xt, t, sig, NULL};
        ck_assert(g.ops->predict(g.priv, &in, &ot) == DFX_OK);
        for (int i = 0; i < N; i++) {
            float one[2 * N];
            gmm_predict(&g, pts, N, sig[i], one);
            ck_assert_float_eq(mixed[2 * i], one[2 * i]);
            ck_assert_float_eq(mixed[2 * i + 1], one[2 * i + 1]);
        }
        /* a negative or NaN level is refused */
        sig[1] = -1;
        ck_assert_int_eq(g.ops->predict(g.priv, &in, &ot), DFX_ERR_RANGE);
        ck_assert_ptr_nonnull(strstr(dfx_error_message(), "item 1"));
    }
    gmm_close(&g);
}
END_TEST

START_TEST(test_gmm_options)
{
    gmm_inst g;
    const double w[8] = {1, 1, 1, 1, 1, 1, 1, 1}, mu[16] = {0}, sd[16] = {1, 1, 1, 1, 1, 1, 1, 1};
    ck_assert_int_eq(gmm_open(&g, 2, w, 8, mu, 14, sd, 8), DFX_ERR_CONFIG);
    ck_assert_str_eq(dfx_error_message(), "means has 14 values, expected K*D = 16 (K = 8 weights, D = 2 dims)");
    ck_assert_int_eq(gmm_open(&g, 2, w, 8, mu, 16, sd, 5), DFX_ERR_CONFIG);
    ck_assert_str_eq(dfx_error_message(), "stds has 5 values, expected K = 8 (isotropic) or K*D = 16 (diagonal)");
    ck_assert_int_eq(gmm_open(&g, 2, NULL, 0, mu, 15, NULL, 0), DFX_ERR_CONFIG);
    ck_assert_str_eq(dfx_error_message(), "means has 15 values, not a multiple of dims = 2");
    const double bad_w[2] = {1, 0};
    ck_assert_int_eq(gmm_open(&g, 1, bad_w, 2, mu, 2, NULL, 0), DFX_ERR_CONFIG);
    ck_assert_str_eq(dfx_error_message(), "weights[1] is 0; weights must be positive and finite");
    const double bad_sd[2] = {1, 0};
    ck_assert_int_eq(gmm_open(&g, 1, NULL, 0, mu, 2, bad_sd, 2), DFX_ERR_CONFIG);
    ck_assert_str_eq(dfx_error_message(), "stds[1] is 0; standard deviations must be positive and finite");
    ck_assert_int_eq(gmm_open(&g, 3, NULL, 0, NULL, 0, NULL, 0), DFX_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "the default mixture is 2-D"));
    ck_assert_int_eq(gmm_open(&g, 2, w, 2, NULL, 0, NULL, 0), DFX_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "means is empty"));

    /* equal weights and unit stds when left out: the moments of N(mu_k, I) */
    const double mu2[4] = {1, 0, -1, 0};
    ck_assert_int_eq(gmm_open(&g, 2, NULL, 0, mu2, 4, NULL, 0), DFX_OK);
    const float origin[2] = {0, 0};
    float out[2];
    gmm_predict(&g, origin, 1, INFINITY, out);
    ck_assert_float_eq_tol(out[0], 0.0f, 1e-7f);
    gmm_close(&g);

    /* the errors reach a pipeline's user with the place in the file */
    dfx_pipeline *p = NULL;
    const char *yaml = "dfx: 1\npipeline: sample\nmodel: {type: gmm, weights: [1, 2], means: [0, 1, 2]}\n"
                       "scheduler: {type: linear}\nsampler: {type: ddim}\n";
    ck_assert_int_eq(dfx_pipeline_parse(&p, yaml, strlen(yaml), "mix.yaml"), DFX_OK);
    ck_assert_int_eq(dfx_pipeline_resolve(p, reg), DFX_ERR_CONFIG);
    ck_assert_msg(strstr(dfx_error_message(), "mix.yaml:3:") &&
                      strstr(dfx_error_message(), "means has 3 values, expected K*D = 4"),
                  "%s", dfx_error_message());
    dfx_pipeline_destroy(p);
}
END_TEST

/* The default mixture: 8 components of std 0.2 at radius 2 with weights
 * 1..8, and one of std 0.35 and weight 6 at the centre. */
START_TEST(test_gmm_default_mixture)
{
    double w[9], mu[18], sd[18], m[2], c[3];
    for (int k = 0; k < 8; k++) {
        w[k] = k + 1;
        mu[2 * k] = 2 * cos(k * M_PI / 4);
        mu[2 * k + 1] = 2 * sin(k * M_PI / 4);
        sd[2 * k] = sd[2 * k + 1] = 0.2;
    }
    w[8] = 6, mu[16] = mu[17] = 0, sd[16] = sd[17] = 0.35;
    mixture_moments(9, w, mu, sd, m, c);
    gmm_inst g;
    ck_assert_int_eq(gmm_open(&g, 2, NULL, 0, NULL, 0, NULL, 0), DFX_OK);
    const float at[2] = {0.3f, -0.2f};
    float out[2];
    gmm_predict(&g, at, 1, INFINITY, out);
    ck_assert_double_eq_tol(out[0], m[0], 1e-6);
    ck_assert_double_eq_tol(out[1], m[1], 1e-6);
    /* the density at a ring mode: its own Gaussian's peak (the others are
     * more than 7 standard deviations away) */
    int64_t shape[2] = {1, 2};
    const float mode[2] = {0.0f, 2.0f};
    dfx_tensor xt = dfx_tensor_view(DFX_DTYPE_F32, 2, shape, (void *)mode);
    double lp;
    ck_assert(g.ops->log_density(g.priv, &xt, &lp) == DFX_OK);
    ck_assert_double_eq_tol(lp, log(3.0 / 42 / (2 * M_PI * 0.04)), 1e-6);
    gmm_close(&g);
}
END_TEST

/* ---- (a) distributions -------------------------------------------------- */

/* Karras et al. 2022 noise levels over the whole linear-beta table: sigma
 * from 157 down to 0.01 (the large sigma_max keeps the prior mismatch
 * negligible, see above). */
#define KARRAS(steps) \
    "{type: linear, steps: " #steps ", spacing: linspace, round_timesteps: false, sigmas: karras, sigma_bounds: full}"

typedef struct dist_case {
    const char *name;
    const char *scheduler;
    const char *sampler;
    /* discretisation allowance on |error| of a mean and of a covariance entry */
    double allow_mean, allow_cov;
} dist_case;

/* The steps make each sampler's discretisation bias small next to the
 * Monte-Carlo error without making the test slow; the bias left is then
 * measured and allowed for. Measured with 2 x 400000 points (seeds 11 and
 * 12), the largest |bias| of a mean / of a covariance entry was (standard
 * error of these estimates: ~0.0014 for a mean, 0.0012-0.003 for a
 * covariance entry):
 *   ddim 250 steps            0.003 / 0.014 (yy; xx 0.014): first order, too
 *                             little spread, as Euler's method
 *   ddpm 500                  0.0013 / 0.011 (yy): the fixed posterior variance
 *                             leaves out the x0 uncertainty, an O(1/steps)
 *                             under-dispersion (0.008 at 1000 steps)
 *   pndm, heun, lms, dpmpp_2m  none above 2 standard errors
 *   euler 250                 0.004 / 0.023 (yy; xx 0.021)
 *   euler_ancestral 500       0.0023 / 0.015 (yy; 0.038 at 250 steps)
 *   pc ve 500, pc vp 500      0.0025 / 0.0073 (yy; 0.020 at 250 steps)
 * Each allowance is that bias plus about twice its estimate's standard
 * error, rounded up. */
static const dist_case dist_cases[] = {
    {"ddim", "{type: linear, steps: 250}", "{type: ddim}", 0.006, 0.02},
    {"ddpm", "{type: linear, steps: 500}", "{type: ddpm}", 0.004, 0.017},
    {"pndm", "{type: linear, steps: 100}", "{type: pndm}", 0.003, 0.006},
    {"euler", KARRAS(250), "{type: euler}", 0.007, 0.03},
    {"euler_ancestral", KARRAS(500), "{type: euler_ancestral}", 0.006, 0.022},
    {"heun", KARRAS(100), "{type: heun}", 0.003, 0.006},
    {"lms", KARRAS(100), "{type: lms}", 0.003, 0.006},
    {"dpmpp_2m", KARRAS(100), "{type: dpmpp_2m}", 0.003, 0.006},
    {"pc reverse_diffusion (ve)", "{type: ve, steps: 500}", "{type: pc, predictor: reverse_diffusion}", 0.006,
     0.013},
    {"pc euler_maruyama (vp)", "{type: vp, steps: 500}", "{type: pc, predictor: euler_maruyama}", 0.006, 0.013},
};

/* 40000 points: standard errors ~0.0064 / 0.0068 (mean x / y), 0.0055 /
 * 0.008 / 0.012 (covariance xx / xy / yy), estimated from the samples
 * themselves. */
enum { DIST_N = 40000 };

START_TEST(test_distribution)
{
    const dist_case *dc = &dist_cases[_i];
    const double t0 = now();
    float *x = sample(MIX_YAML, dc->scheduler, dc->sampler, NULL, DIST_N, 1234);
    double tm[2], tc[3];
    mixture_moments(MIX_K, mix_w, mix_mu, mix_sd, tm, tc);

    double m[2] = {0}, c[3] = {0}, c2[3] = {0};
    for (int64_t i = 0; i < DIST_N; i++)
        m[0] += x[2 * i], m[1] += x[2 * i + 1];
    m[0] /= DIST_N, m[1] /= DIST_N;
    for (int64_t i = 0; i < DIST_N; i++) {
        const double dx = x[2 * i] - m[0], dy = x[2 * i + 1] - m[1];
        const double p[3] = {dx * dx, dx * dy, dy * dy};
        for (int j = 0; j < 3; j++)
            c[j] += p[j], c2[j] += p[j] * p[j];
    }
    double est[5], truth[5], se[5];
    for (int j = 0; j < 3; j++) {
        c[j] /= DIST_N;
        /* the standard error of a mean of products: their spread / sqrt(N) */
        se[2 + j] = sqrt((c2[j] / DIST_N - c[j] * c[j]) / DIST_N);
    }
    se[0] = sqrt(c[0] / DIST_N), se[1] = sqrt(c[2] / DIST_N);
    memcpy(est, m, sizeof m), memcpy(est + 2, c, sizeof c);
    memcpy(truth, tm, sizeof tm), memcpy(truth + 2, tc, sizeof tc);
    static const char *const what[5] = {"mean x", "mean y", "cov xx", "cov xy", "cov yy"};
    printf("%-26s %5.2f s  errors (in standard errors):", dc->name, now() - t0);
    for (int j = 0; j < 5; j++)
        printf(" %s %+.4f (%+.1f)", what[j], est[j] - truth[j], (est[j] - truth[j]) / se[j]);
    printf("\n");
    fflush(stdout);
    for (int j = 0; j < 5; j++) {
        const double tol = 5 * se[j] + (j < 2 ? dc->allow_mean : dc->allow_cov);
        ck_assert_msg(fabs(est[j] - truth[j]) <= tol, "%s: %s is %.5f, the mixture's %.5f: error %.5f > %.5f "
                      "(5 standard errors %.5f + allowance)", dc->name, what[j], est[j], truth[j],
                      est[j] - truth[j], tol, 5 * se[j]);
    }
    free(x);
}
END_TEST

/* ---- (b) convergence order --------------------------------------------- */

/* A smoother mixture than the one above (component stds 0.5-0.9): the
 * error is in its asymptotic regime, C h^p, from 8 steps on, so the fitted
 * slope is the order and not a pre-asymptotic blend. */
#define SMOOTH_YAML                                                                                \
    "{type: gmm, weights: [0.5, 0.3, 0.2], means: [1.2, 0.4, -1.4, 1.0, -0.9, -2.5], stds: [0.6, " \
    "0.9, 0.8, 0.5, 0.7, 0.7]}"
/* Karras levels over scaled_linear's whole table (sigma 14.6 to 0.029): the
 * same end points for every step count, so every run integrates the same
 * ODE from the same x_T (init scale fixed, same seed) */
#define SMOOTH_SCHED                                                                                 \
    "{type: scaled_linear, steps: %d, spacing: linspace, round_timesteps: false, sigmas: karras, " \
    "sigma_bounds: full}"

typedef struct order_case {
    const char *sampler;
    double lo, hi;  /* bounds on the fitted order */
} order_case;

/* Measured slopes of the RMS error at 8, 16, 32, 64 steps (2000 points,
 * seed 7): euler 1.02 (local 1.05, 1.02, 1.01), ddim the same (on these
 * levels DDIM is Euler's method in x/alpha, Song et al. 2021 sec. 4.3),
 * heun 2.21 (local 2.38, 2.17, 2.08), dpmpp_2m 2.22 (2.30, 2.24, 2.11): the
 * local slopes fall towards the order from above as the higher-order terms
 * fade. The bounds exclude the neighbouring order by a wide margin and leave
 * room for the pre-asymptotic excess; each local slope gets 0.2 less below
 * and 0.4 more above. */
static const order_case order_cases[] = {
    {"{type: euler}", 0.8, 1.3},
    {"{type: ddim}", 0.8, 1.3},
    {"{type: heun}", 1.6, 2.6},
    {"{type: dpmpp_2m}", 1.6, 2.6},
};

enum { ORDER_N = 2000, ORDER_REF_STEPS = 1000 };

static double rms_diff(const float *a, const float *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < 2 * n; i++)
        s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sqrt(s / (double)n);
}

START_TEST(test_convergence_order)
{
    const order_case *oc = &order_cases[_i];
    char sched[256];
    /* all runs start from sigma_max * z with the same z */
    const char *init = "init: {scale: sigma}\n";
    /* the reference: Heun with 1000 steps. Its own error is a third of its
     * distance to Heun with 500 steps (second order: e(500) = 4 e(1000)),
     * measured 1.8e-5, so ~6e-6: under 1% of the smallest error fitted. A
     * reference that has not converged (a broken heun) fails here. */
    snprintf(sched, sizeof sched, SMOOTH_SCHED, ORDER_REF_STEPS);
    float *ref = sample(SMOOTH_YAML, sched, "{type: heun}", init, ORDER_N, 7);
    snprintf(sched, sizeof sched, SMOOTH_SCHED, ORDER_REF_STEPS / 2);
    float *half = sample(SMOOTH_YAML, sched, "{type: heun}", init, ORDER_N, 7);
    const double ref_err = rms_diff(ref, half, ORDER_N) / 3;
    free(half);
    ck_assert_msg(ref_err < 2e-5, "the reference (heun, %d steps) has not converged: error ~%g", ORDER_REF_STEPS,
                  ref_err);
    static const int steps[] = {8, 16, 32, 64};
    enum { NS = 4 };
    double lx[NS], ly[NS], sx = 0, sy = 0;
    char line[512];
    int used = snprintf(line, sizeof line, "%-20s errors:", oc->sampler);
    for (int j = 0; j < NS; j++) {
        snprintf(sched, sizeof sched, SMOOTH_SCHED, steps[j]);
        float *x = sample(SMOOTH_YAML, sched, oc->sampler, init, ORDER_N, 7);
        const double e = rms_diff(x, ref, ORDER_N);
        free(x);
        ck_assert_msg(e > 0 && isfinite(e), "%s, %d steps: error %g", oc->sampler, steps[j], e);
        lx[j] = log(steps[j]), ly[j] = log(e);
        sx += lx[j], sy += ly[j];
        used += snprintf(line + used, sizeof line - (size_t)used, " %d: %.3g", steps[j], e);
    }
    /* least-squares slope of log error against log steps */
    double sxx = 0, sxy = 0;
    for (int j = 0; j < NS; j++) {
        sxx += (lx[j] - sx / NS) * (lx[j] - sx / NS);
        sxy += (lx[j] - sx / NS) * (ly[j] - sy / NS);
    }
    const double order = -sxy / sxx;
    printf("%s  order %.3f\n", line, order);
    fflush(stdout);
    ck_assert_msg(order >= oc->lo && order <= oc->hi, "%s: convergence order %.3f outside [%.1f, %.1f] (%s)",
                  oc->sampler, order, oc->lo, oc->hi, line);
    /* and every doubling must gain about as much: a scheme that converges to
     * a wrong limit has errors that stop falling, which a fitted slope over
     * four points can hide */
    for (int j = 1; j < NS; j++) {
        const double local = -(ly[j] - ly[j - 1]) / (lx[j] - lx[j - 1]);
        ck_assert_msg(local >= oc->lo - 0.2 && local <= oc->hi + 0.4,
                      "%s: from %d to %d steps the error falls with order %.3f, outside [%.1f, %.1f] (%s)",
                      oc->sampler, steps[j - 1], steps[j], local, oc->lo - 0.2, oc->hi + 0.4, line);
    }
    free(ref);
}
END_TEST

static Suite *samplers_suite(void)
{
    Suite *s = suite_create("samplers");
    TCase *tc = tcase_create("gmm");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_gmm_exact);
    tcase_add_test(tc, test_gmm_options);
    tcase_add_test(tc, test_gmm_default_mixture);
    suite_add_tcase(s, tc);
    tc = tcase_create("distribution");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_distribution, 0, (int)(sizeof dist_cases / sizeof *dist_cases));
    suite_add_tcase(s, tc);
    tc = tcase_create("order");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_convergence_order, 0, (int)(sizeof order_cases / sizeof *order_cases));
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(samplers_suite());
}
