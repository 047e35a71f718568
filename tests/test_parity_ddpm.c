/* fixtures/ddpm: diffusers' UNet2DModel and its DDPM / DDIM pipelines
 * (fixtures/README.md section 3).
 *  - forward: the UNet on the recorded input at integer, batched and
 *    fractional timesteps, for model a, model b (learned variance,
 *    scale_shift) and b's legacy attention key names; atol 1e-4 of max|ref|;
 *  - teacher-forced: every recorded step's UNet input gives the recorded
 *    model output (atol 1e-4);
 *  - free-running through `dfx run pipelines/ddpm.yaml` / `ddim.yaml` with
 *    seed 0 and 10 steps: the trajectory, the drawn noise and the image
 *    (atol 1e-3, the README's figure for free-running runs).
 *
 * usage: test_parity_ddpm DFX_EXECUTABLE SOURCE_ROOT */
#include "testutil.h"

static const char *dfx_exe, *source_root;
static dfx_registry *reg;

/* max|a - b| / max(1e-30, max|b|) over n floats */
static double rel_err(const float *a, const float *b, int64_t n)
{
    double m = test_max_abs(b, n);
    return test_max_abs_diff(a, b, n) / (m > 0 ? m : 1e-30);
}

static dfx_instance *open_unet(const char *dir)
{
    char yaml[4300];
    dfx_instance *m;
    snprintf(yaml, sizeof yaml, "{type: unet2d, path: '%s'}", dir);
    ck_assert_msg(dfx_instance_create(&m, reg, DFX_KIND_MODEL, yaml, "test") == DFX_OK, "%s", dfx_error_message());
    return m;
}

/* out = unet(x, t) for one t per batch item */
static dfx_tensor *forward(dfx_instance *m, const dfx_tensor *x, const double *t)
{
    const dfx_model_ops *ops = dfx_instance_component(m)->ops;
    dfx_model_info info;
    ops->info(dfx_instance_priv(m), &info);
    int64_t shape[4] = {x->shape[0], x->shape[1] * (info.learned_variance ? 2 : 1), x->shape[2], x->shape[3]};
    dfx_tensor *out;
    ck_assert(dfx_tensor_create(&out, DFX_DTYPE_F32, 4, shape) == DFX_OK);
    double sig[64];
    for (int64_t i = 0; i < x->shape[0]; i++)
        sig[i] = 1;
    dfx_model_input in = {x, t, sig, NULL};
    ck_assert_msg(ops->predict(dfx_instance_priv(m), &in, out) == DFX_OK, "%s", dfx_error_message());
    return out;
}

static const char *const models[] = {"ddpm_unet_a", "ddpm_unet_b", "ddpm_unet_b_legacy_attn_names"};

START_TEST(unet_forward)
{
    char dir[4200], ref_path[4300];
    snprintf(dir, sizeof dir, "%s/ddpm/%s", test_fixtures_dir(), models[_i]);
    /* the legacy-names copy holds b's weights, so b's expected outputs */
    snprintf(ref_path, sizeof ref_path, "%s/ddpm/%s/expected_forward.safetensors", test_fixtures_dir(),
             _i == 2 ? models[1] : models[_i]);
    dfx_instance *m = open_unet(_i == 2 ? strcat(dir, "/unet") : dir);
    dfx_safetensors *ref;
    ck_assert(dfx_safetensors_open(ref_path, &ref) == DFX_OK);
    dfx_tensor *x = test_read_f32(ref, "input_sample");
    double worst = 0;
    static const struct {
        const char *name;
        double t[2];
    } cases[] = {{"out_t0", {0, 0}},           {"out_t10", {10, 10}},   {"out_t500", {500, 500}},
                 {"out_t999", {999, 999}},     {"out_t_batch", {1, 750}}, {"out_t_float_250p5", {250.5, 250.5}}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        dfx_tensor *want = test_read_f32(ref, cases[c].name), *got = forward(m, x, cases[c].t);
        ck_assert(dfx_tensor_same_shape(want, got));
        double e = rel_err(got->data, want->data, dfx_tensor_numel(want));
        ck_assert_msg(e <= 1e-4, "%s %s: error %.3g of max|ref|", models[_i], cases[c].name, e);
        worst = e > worst ? e : worst;
        dfx_tensor_destroy(want);
        dfx_tensor_destroy(got);
    }
    printf("  forward %-32s worst %.2e of max|ref|\n", models[_i], worst);
    dfx_tensor_destroy(x);
    dfx_safetensors_close(ref);
    dfx_instance_destroy(m);
}
END_TEST

typedef struct run_case {
    const char *model, *expected, *pipeline;
    const char *sets[4];
} run_case;

static const run_case runs[] = {
    {"ddpm_unet_a", "expected_ddpm_pipeline_10", "pipelines/ddpm.yaml", {NULL}},
    {"ddpm_unet_b", "expected_ddpm_pipeline_10", "pipelines/ddpm.yaml", {NULL}},
    {"ddpm_unet_a", "expected_ddim_pipeline_10_eta0", "pipelines/ddim.yaml", {"sampler.eta=0", NULL}},
    {"ddpm_unet_a", "expected_ddim_pipeline_10_eta1", "pipelines/ddim.yaml", {"sampler.eta=1", NULL}},
};

START_TEST(teacher_forced)
{
    const run_case *r = &runs[_i];
    char dir[4200], ref_path[4400];
    snprintf(dir, sizeof dir, "%s/ddpm/%s", test_fixtures_dir(), r->model);
    snprintf(ref_path, sizeof ref_path, "%s/%s.safetensors", dir, r->expected);
    dfx_instance *m = open_unet(dir);
    dfx_safetensors *ref;
    ck_assert(dfx_safetensors_open(ref_path, &ref) == DFX_OK);
    dfx_tensor *ins = test_read_f32(ref, "per_step_sample_in"), *outs = test_read_f32(ref, "per_step_model_output");
    dfx_tensor *ts;
    ck_assert(dfx_safetensors_read(ref, "timesteps", DFX_DTYPE_F64, &ts) == DFX_OK);
    const int64_t k = ins->shape[0], per_in = dfx_tensor_numel(ins) / k, per_out = dfx_tensor_numel(outs) / k;
    double worst = 0;
    for (int64_t s = 0; s < k; s++) {
        dfx_tensor x = dfx_tensor_view(DFX_DTYPE_F32, 4, ins->shape + 1, (float *)ins->data + s * per_in);
        double t = ((double *)ts->data)[s];
        dfx_tensor *got = forward(m, &x, &t);
        const float *want = (const float *)outs->data + s * per_out;
        double e = test_max_abs_diff(got->data, want, per_out);
        ck_assert_msg(e <= 1e-4, "%s %s step %lld: |error| %.3g", r->model, r->expected, (long long)s, e);
        worst = e > worst ? e : worst;
        dfx_tensor_destroy(got);
    }
    printf("  teacher-forced %-14s %-32s worst |error| %.2e\n", r->model, r->expected, worst);
    dfx_tensor_destroy(ins);
    dfx_tensor_destroy(outs);
    dfx_tensor_destroy(ts);
    dfx_safetensors_close(ref);
    dfx_instance_destroy(m);
}
END_TEST

START_TEST(free_running)
{
    const run_case *r = &runs[_i];
    char dir[4200], ref_path[4400], pipe[4200], set_model[4300], set_out[4300], trace[4300];
    char *tmp = test_tmpdir();
    snprintf(dir, sizeof dir, "%s/ddpm/%s", test_fixtures_dir(), r->model);
    snprintf(ref_path, sizeof ref_path, "%s/%s.safetensors", dir, r->expected);
    snprintf(pipe, sizeof pipe, "%s/%s", source_root, r->pipeline);
    snprintf(set_model, sizeof set_model, "model.path=%s", dir);
    snprintf(set_out, sizeof set_out, "output.path=%s/out.safetensors", tmp);
    snprintf(trace, sizeof trace, "%s/trace.safetensors", tmp);
    char *argv[32] = {(char *)dfx_exe, "run", pipe, "--quiet", "--seed", "0", "--set", "scheduler.steps=10",
                      "--set", set_model, "--set", set_out, "--trace", trace};
    int argc = 14;
    for (int i = 0; r->sets[i]; i++) {
        argv[argc++] = "--set";
        argv[argc++] = (char *)r->sets[i];
    }
    argv[argc] = NULL;
    char *err = NULL;
    int rc = test_run(argv, NULL, &err);
    ck_assert_msg(rc == 0, "%s %s: dfx exited %d: %s", r->model, r->expected, rc, err);
    free(err);

    dfx_safetensors *ref, *tr, *out;
    ck_assert(dfx_safetensors_open(ref_path, &ref) == DFX_OK);
    ck_assert(dfx_safetensors_open(trace, &tr) == DFX_OK);
    snprintf(trace, sizeof trace, "%s/out.safetensors", tmp);
    ck_assert(dfx_safetensors_open(trace, &out) == DFX_OK);
    dfx_tensor *got = test_read_f32(tr, "samples"), *want = test_read_f32(ref, "per_step_samples");
    ck_assert(dfx_tensor_same_shape(got, want));
    double traj = test_max_abs_diff(got->data, want->data, dfx_tensor_numel(want));
    ck_assert_msg(traj <= 1e-3, "%s %s: trajectory off by %.3g", r->model, r->expected, traj);
    dfx_tensor_destroy(got);
    dfx_tensor_destroy(want);
    double noise = 0;
    if (dfx_safetensors_has(ref, "step_noise")) {
        got = test_read_f32(tr, "step_noise"), want = test_read_f32(ref, "step_noise");
        ck_assert(dfx_tensor_same_shape(got, want));
        noise = test_max_abs_diff(got->data, want->data, dfx_tensor_numel(want));
        ck_assert_msg(noise == 0, "%s %s: the drawn noise differs by %.3g", r->model, r->expected, noise);
        dfx_tensor_destroy(got);
        dfx_tensor_destroy(want);
    } else {
        ck_assert(!dfx_safetensors_has(tr, "step_noise"));
    }
    /* the image as output_type="np" gives it: (x/2 + 0.5).clamp(0, 1), NHWC */
    dfx_tensor *x = test_read_f32(out, "samples"), *img = test_read_f32(ref, "image_np_nhwc");
    const int64_t c = x->shape[1], h = x->shape[2], w = x->shape[3];
    double image = 0;
    for (int64_t ch = 0; ch < c; ch++) {
        for (int64_t i = 0; i < h * w; i++) {
            float v = ((float *)x->data)[ch * h * w + i] / 2 + 0.5f;
            v = v < 0 ? 0 : v > 1 ? 1 : v;
            double d = fabs(v - ((float *)img->data)[i * c + ch]);
            image = d > image ? d : image;
        }
    }
    ck_assert_msg(image <= 1e-3, "%s %s: image off by %.3g", r->model, r->expected, image);
    printf("  free-running %-16s %-32s trajectory %.2e, image %.2e\n", r->model, r->expected, traj, image);
    dfx_tensor_destroy(x);
    dfx_tensor_destroy(img);
    dfx_safetensors_close(ref);
    dfx_safetensors_close(tr);
    dfx_safetensors_close(out);
    test_rmtree(tmp);
    free(tmp);
}
END_TEST

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s DFX SOURCE_ROOT\n", argv[0]);
        return EXIT_FAILURE;
    }
    dfx_exe = argv[1];
    source_root = argv[2];
    test_require_fixtures("ddpm parity");
    if (dfx_registry_create(&reg, NULL, 0) != DFX_OK)
        return EXIT_FAILURE;
    Suite *s = suite_create("ddpm parity");
    TCase *tc = tcase_create("ddpm");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, unet_forward, 0, 3);
    tcase_add_loop_test(tc, teacher_forced, 0, (int)(sizeof runs / sizeof *runs));
    tcase_add_loop_test(tc, free_running, 0, (int)(sizeof runs / sizeof *runs));
    suite_add_tcase(s, tc);
    int rc = test_run_suite(s);
    dfx_registry_destroy(reg);
    return rc;
}
