/* Conditioning and guidance through pipelines, on the class-conditional
 * gmm (label k: component k alone; -1: the whole mixture): the guided
 * output every evaluation records must be u + s (c - u) of the model's own
 * conditional and unconditional outputs at the recorded inputs (and the
 * rescaled blend with guidance_rescale); a class label alone must draw its
 * component's distribution; A1111 sampler names must resolve and be
 * written back into image metadata; misconfigured sections must fail with
 * a message that names them. */
#include <ftw.h>
#include <math.h>
#include <sys/stat.h>

#include "testutil.h"

static char tmpdir[64];
static dfx_registry *reg;

#define MIX_YAML                                                                                   \
    "{type: gmm, weights: [0.5, 0.3, 0.2], means: [1.2, 0.4, -1.4, 1.0, -0.9, -2.5], stds: [0.3, " \
    "0.6, 0.5, 0.2, 0.4, 0.4]}"

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dfx_guidance_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    ck_assert_msg(dfx_registry_create(&reg, NULL, 0) == DFX_OK, "%s", dfx_error_message());
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

static dfx_pipeline *resolved(const char *yaml)
{
    dfx_pipeline *p = NULL;
    ck_assert_msg(dfx_pipeline_parse(&p, yaml, strlen(yaml), "test.yaml") == DFX_OK, "%s", dfx_error_message());
    ck_assert_msg(dfx_pipeline_resolve(p, reg) == DFX_OK, "%s", dfx_error_message());
    return p;
}

static dfx_tensor *read_tensor(const char *path, const char *name)
{
    dfx_safetensors *f;
    dfx_tensor *t;
    ck_assert_msg(dfx_safetensors_open(path, &f) == DFX_OK, "%s", dfx_error_message());
    ck_assert_msg(dfx_safetensors_read(f, name, DFX_DTYPE_F32, &t) == DFX_OK, "%s", dfx_error_message());
    dfx_safetensors_close(f);
    return t;
}

/* The gmm's raw outputs at model inputs x [n, 2] and VE level s, with every
 * item labelled `label`. */
static void gmm_outputs(dfx_instance *m, const float *x, int64_t n, double s, int64_t label, float *out)
{
    const int64_t shape[2] = {n, 2};
    dfx_tensor xin = dfx_tensor_view(DFX_DTYPE_F32, 2, shape, (void *)x);
    dfx_tensor y = dfx_tensor_view(DFX_DTYPE_F32, 2, shape, out);
    double tv[64], sv[64];
    int64_t labels[64];
    ck_assert_int_le(n, 64);
    for (int64_t i = 0; i < n; i++) {
        tv[i] = 0;
        sv[i] = s;
        labels[i] = label;
    }
    const dfx_cond cond = {NULL, NULL, labels};
    const dfx_model_input in = {&xin, tv, sv, &cond};
    const dfx_model_ops *ops = dfx_instance_component(m)->ops;
    ck_assert_msg(ops->predict(dfx_instance_priv(m), &in, &y) == DFX_OK, "%s", dfx_error_message());
}

static double stddev(const float *x, int64_t n)
{
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < n; i++)
        sum += x[i];
    for (int64_t i = 0; i < n; i++)
        sq += (x[i] - sum / (double)n) * (x[i] - sum / (double)n);
    return sqrt(sq / (double)(n - 1));
}

/* Runs cfg with `scale` and `rescale` over a traced DDIM run of 6 steps and
 * recomputes every recorded guided output from the model's two halves. */
static void check_mix(double scale, double rescale)
{
    enum { B = 8 };
    char yaml[2048], trace[256];
    snprintf(trace, sizeof trace, "%s/trace.safetensors", tmpdir);
    snprintf(yaml, sizeof yaml,
             "dfx: 1\npipeline: sample\nbatch: %d\nseed: 3\nmodel: " MIX_YAML "\n"
             "conditioner: {type: label, labels: [1]}\nguidance: {type: cfg, scale: %g, rescale: %g}\n"
             "scheduler: {type: linear, steps: 6}\nsampler: {type: ddim}\n",
             B, scale, rescale);
    dfx_pipeline *p = resolved(yaml);
    dfx_run_params rp;
    dfx_run_params_init(&rp);
    rp.trace_path = trace;
    ck_assert_msg(dfx_pipeline_run(p, &rp) == DFX_OK, "%s", dfx_error_message());
    dfx_schedule sched;
    ck_assert_int_eq(dfx_pipeline_plan(p, 0, &sched), DFX_OK);
    dfx_pipeline_destroy(p);

    dfx_instance *m;
    ck_assert_msg(dfx_instance_create(&m, reg, DFX_KIND_MODEL, MIX_YAML, "model") == DFX_OK, "%s",
                  dfx_error_message());
    dfx_tensor *in = read_tensor(trace, "model_inputs"), *out = read_tensor(trace, "model_outputs");
    ck_assert_int_eq(in->shape[0], sched.steps);
    double worst = 0;
    for (int64_t e = 0; e < sched.steps; e++) {
        const dfx_level *l = &sched.levels[e];
        const float *x = (const float *)in->data + e * B * 2, *got = (const float *)out->data + e * B * 2;
        float u[B * 2], c[B * 2], want[B * 2];
        gmm_outputs(m, x, B, l->sigma / l->alpha, -1, u);
        gmm_outputs(m, x, B, l->sigma / l->alpha, 1, c);
        for (int i = 0; i < B * 2; i++)
            want[i] = scale > 1 ? u[i] + (float)scale * (c[i] - u[i]) : c[i];
        for (int b = 0; rescale > 0 && b < B; b++) {
            const double k = stddev(c + 2 * b, 2) / stddev(want + 2 * b, 2);
            for (int i = 2 * b; i < 2 * b + 2; i++)
                want[i] = (float)(rescale * want[i] * k + (1 - rescale) * want[i]);
        }
        for (int i = 0; i < B * 2; i++)
            worst = fmax(worst, fabs(got[i] - want[i]) / fmax(1, fabs(want[i])));
    }
    ck_assert_msg(worst < 2e-6, "scale %g, rescale %g: guided outputs differ from u + s(c - u) by %g", scale,
                  rescale, worst);
    dfx_tensor_destroy(in);
    dfx_tensor_destroy(out);
    dfx_instance_destroy(m);
    dfx_schedule_fini(&sched);
}

START_TEST(test_cfg_mix)
{
    check_mix(4.0, 0);
    check_mix(7.5, 0.7);
    /* s <= 1 is no guidance (diffusers): the conditional output alone */
    check_mix(1.0, 0);
}
END_TEST

/* A class label without guidance draws its component: N(mu_k, diag sd_k^2).
 * The component is centred at 0, so the finite sigma_max (x_T ~ N(0, ...)
 * instead of N(alpha_T mu_k, ...)) does not shift its mean; the mixture's
 * mean is far from 0, so samples that ignored the label would show. */
START_TEST(test_label_distribution)
{
    enum { N = 4000, K = 1 };
    static const double mu[4] = {2.0, -1.0, 0.0, 0.0}, sd[4] = {0.3, 0.3, 0.5, 0.25};
    char yaml[2048], out[256];
    snprintf(out, sizeof out, "%s/samples.safetensors", tmpdir);
    snprintf(yaml, sizeof yaml,
             "dfx: 1\npipeline: sample\nbatch: %d\nseed: 5\nmodel: {type: gmm, weights: [0.7, 0.3], means: "
             "[2.0, -1.0, 0.0, 0.0], stds: [0.3, 0.3, 0.5, 0.25]}\nconditioner: {type: label, labels: [%d]}\nscheduler: {type: scaled_linear, steps: 40}\n"
             "sampler: {type: heun}\noutput: {path: \"%s\"}\n",
             N, K, out);
    dfx_pipeline *p = resolved(yaml);
    ck_assert_msg(dfx_pipeline_run(p, NULL) == DFX_OK, "%s", dfx_error_message());
    dfx_pipeline_destroy(p);
    dfx_tensor *x = read_tensor(out, "samples");
    for (int d = 0; d < 2; d++) {
        double sum = 0, sq = 0;
        for (int i = 0; i < N; i++)
            sum += ((const float *)x->data)[2 * i + d];
        const double mean = sum / N;
        for (int i = 0; i < N; i++) {
            const double r = ((const float *)x->data)[2 * i + d] - mean;
            sq += r * r;
        }
        const double got_sd = sqrt(sq / (N - 1)), want_sd = sd[2 * K + d];
        /* 4 standard errors of the mean and of the standard deviation */
        ck_assert_msg(fabs(mean - mu[2 * K + d]) < 4 * want_sd / sqrt(N) + 0.005,
                      "dim %d: mean %g, component mean %g", d, mean, mu[2 * K + d]);
        ck_assert_msg(fabs(got_sd - want_sd) < 4 * want_sd / sqrt(2.0 * N) + 0.005,
                      "dim %d: sd %g, component sd %g", d, got_sd, want_sd);
    }
    dfx_tensor_destroy(x);
}
END_TEST

/* The resolved pipeline as text. */
static char *resolved_text(dfx_pipeline *p)
{
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    ck_assert_int_eq(dfx_pipeline_write_resolved(p, f), DFX_OK);
    fclose(f);
    return mem;
}

START_TEST(test_a1111_names)
{
    static const struct {
        const char *name;
        const char *want[3];
    } cases[] = {
        {"DPM++ 2M Karras", {"sampler:\n  type: dpmpp_2m\n", "  noise: none\n", "  sigmas: karras\n"}},
        {"dpm++ 2m sde", {"sampler:\n  type: dpmpp_2m\n", "  noise: sde\n", "  sigmas: default\n"}},
        {"Euler a", {"sampler:\n  type: euler_ancestral\n", "  sigmas: default\n", NULL}},
        {"LMS Exponential", {"sampler:\n  type: lms\n", "  sigmas: exponential\n", NULL}},
        {"PLMS", {"sampler:\n  type: pndm\n", "  skip_prk: true\n", NULL}},
        {"DDIM", {"sampler:\n  type: ddim\n", NULL, NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char yaml[1024];
        snprintf(yaml, sizeof yaml,
                 "dfx: 1\npipeline: sample\nshape: [2, 2]\nmodel: {type: gmm}\nscheduler: {type: "
                 "scaled_linear, steps: 5}\nsampler: {type: \"%s\"}\n",
                 cases[i].name);
        dfx_pipeline *p = resolved(yaml);
        char *text = resolved_text(p);
        for (int k = 0; k < 3 && cases[i].want[k]; k++)
            ck_assert_msg(strstr(text, cases[i].want[k]), "'%s': no '%s' in\n%s", cases[i].name, cases[i].want[k],
                          text);
        free(text);
        dfx_pipeline_destroy(p);
    }
    /* a pipeline's own scheduler key wins over the name's */
    dfx_pipeline *p = resolved("dfx: 1\npipeline: sample\nshape: [2, 2]\nmodel: {type: gmm}\nscheduler: {type: "
                               "scaled_linear, sigmas: exponential}\nsampler: {type: Euler Karras}\n");
    char *text = resolved_text(p);
    ck_assert_msg(strstr(text, "  sigmas: exponential\n"), "%s", text);
    free(text);
    dfx_pipeline_destroy(p);
}
END_TEST

/* The PNG's A1111 parameters name the A1111 sampler, schedule and scale. */
START_TEST(test_a1111_metadata)
{
    char yaml[1024], png[256];
    snprintf(png, sizeof png, "%s/plot.png", tmpdir);
    snprintf(yaml, sizeof yaml,
             "dfx: 1\npipeline: sample\nbatch: 64\nmodel: {type: gmm}\nconditioner: {type: label, labels: [3]}\n"
             "guidance: {type: cfg, scale: 2.5}\nscheduler: {type: scaled_linear, steps: 7}\n"
             "sampler: {type: DPM++ 2M Karras}\noutput: {path: \"%s\"}\n",
             png);
    dfx_pipeline *p = resolved(yaml);
    ck_assert_msg(dfx_pipeline_run(p, NULL) == DFX_OK, "%s", dfx_error_message());
    dfx_pipeline_destroy(p);
    FILE *f = fopen(png, "rb");
    ck_assert_ptr_nonnull(f);
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    const char *want = "Steps: 7, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 2.5, Seed: 0, Model: gmm";
    bool found = false;
    for (size_t i = 0; i + strlen(want) <= n && !found; i++)
        found = memcmp(buf + i, want, strlen(want)) == 0;
    ck_assert_msg(found, "no '%s' in the PNG's text", want);
}
END_TEST

/* yaml's "OUT" becomes a path in the test's folder. */
static void expect_error(const char *yaml, bool at_run, const char *want)
{
    dfx_pipeline *p = NULL;
    char text[4096];
    const char *out = strstr(yaml, "OUT");
    if (out)
        snprintf(text, sizeof text, "%.*s%s/out.safetensors%s", (int)(out - yaml), yaml, tmpdir, out + 3);
    else
        snprintf(text, sizeof text, "%s", yaml);
    yaml = text;
    ck_assert_int_eq(dfx_pipeline_parse(&p, yaml, strlen(yaml), "test.yaml"), DFX_OK);
    dfx_status st = dfx_pipeline_resolve(p, reg);
    if (at_run && !st)
        st = dfx_pipeline_run(p, NULL);
    ck_assert_msg(st != DFX_OK && strstr(dfx_error_message(), want), "expected '%s', got %d: %s", want, st,
                  dfx_error_message());
    dfx_pipeline_destroy(p);
}

START_TEST(test_errors)
{
    expect_error("dfx: 1\npipeline: sample\nshape: [2, 2]\nmodel: {type: gmm}\nguidance: {type: cfg}\n"
                 "scheduler: {type: linear}\nsampler: {type: ddim}\n",
                 false, "guidance needs a conditioner section");
    expect_error("dfx: 1\npipeline: sample\nshape: [2, 2]\nmodel: {type: gmm}\nconditioner: {type: nope}\n"
                 "scheduler: {type: linear}\nsampler: {type: ddim}\n",
                 false, "nope");
    expect_error("dfx: 1\npipeline: sample\nshape: [2, 2]\nmodel: {type: gmm}\nconditioner: {labels: [1]}\n"
                 "scheduler: {type: linear}\nsampler: {type: ddim}\n",
                 false, "conditioner: give a type");
    expect_error("dfx: 1\npipeline: sample\nshape: [3, 2]\nmodel: {type: gmm}\nconditioner: {type: label, "
                 "labels: [1, 2]}\nscheduler: {type: linear, steps: 3}\nsampler: {type: ddim}\n"
                 "output: {path: OUT}\n",
                 true, "2 labels for a batch of 3");
    expect_error("dfx: 1\npipeline: sample\nshape: [2, 2]\nmodel: {type: gmm}\nconditioner: {type: label, "
                 "labels: [9]}\nscheduler: {type: linear, steps: 3}\nsampler: {type: ddim}\n"
                 "output: {path: OUT}\n",
                 true, "class label 9 is not a component");
    expect_error("dfx: 1\npipeline: sample\nshape: [2, 2]\nwidth: 64\nmodel: {type: gmm}\n"
                 "scheduler: {type: linear, steps: 3}\nsampler: {type: ddim}\noutput: {path: OUT}\n",
                 true, "give shape or width/height, not both");
    expect_error("dfx: 1\npipeline: sample\nwidth: 64\nmodel: {type: gmm}\n"
                 "scheduler: {type: linear, steps: 3}\nsampler: {type: ddim}\noutput: {path: OUT}\n",
                 true, "makes samples of one size only");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("guidance");
    TCase *tc = tcase_create("guidance");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_cfg_mix);
    tcase_add_test(tc, test_label_distribution);
    tcase_add_test(tc, test_a1111_names);
    tcase_add_test(tc, test_a1111_metadata);
    tcase_add_test(tc, test_errors);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
