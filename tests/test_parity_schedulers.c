/* Every case of fixtures/schedulers through the command line: `dfx run` on
 * the fixture's fake model with the case's scheduler_config.json, N = 10 and
 * 50, compared step by step with the diffusers reference run through the
 * --trace file (fixtures/README.md section 2). Tolerance, per model call:
 * max|dfx - ref| <= 1e-5 * max(1, max|ref|). Cases come from index.json, so
 * a case added there is tested without touching this file.
 *
 * usage: test_parity_schedulers DFX_EXECUTABLE PIPELINE.yaml */
#include "testutil.h"

static const char *dfx_exe, *pipeline;
static const dfx_json *cases;
static dfx_json *index_doc;

#define TOL 1e-5

/* Worst per-step ratio |a - b| / (TOL * max(1, max|ref|)) over a [K, ...]
 * pair; fails the test on a shape mismatch. */
static double compare_series(const char *what, const char *case_name, int n_steps,
                             const dfx_safetensors *trace, const char *tkey,
                             const dfx_safetensors *ref, const char *rkey)
{
    dfx_tensor *a, *b;
    ck_assert_msg(dfx_safetensors_read(trace, tkey, DFX_DTYPE_F32, &a) == DFX_OK, "%s N%d: trace lacks '%s': %s",
                  case_name, n_steps, tkey, dfx_error_message());
    ck_assert_msg(dfx_safetensors_read(ref, rkey, DFX_DTYPE_F32, &b) == DFX_OK, "%s", dfx_error_message());
    char sa[128], sb[128];
    ck_assert_msg(dfx_tensor_same_shape(a, b), "%s N%d: %s has shape %s, reference %s", case_name, n_steps, what,
                  dfx_tensor_shape_str(a, sa, sizeof sa), dfx_tensor_shape_str(b, sb, sizeof sb));
    const int64_t k = b->ndim ? b->shape[0] : 1, per = dfx_tensor_numel(b) / (k ? k : 1);
    double worst = 0;
    for (int64_t i = 0; i < k; i++) {
        const float *x = (const float *)a->data + i * per, *y = (const float *)b->data + i * per;
        double scale = test_max_abs(y, per);
        double r = test_max_abs_diff(x, y, per) / (TOL * (scale > 1 ? scale : 1));
        ck_assert_msg(r <= 1.0, "%s N%d: %s at model call %lld differs by %.3g x the tolerance", case_name,
                      n_steps, what, (long long)i, r);
        worst = r > worst ? r : worst;
    }
    dfx_tensor_destroy(a);
    dfx_tensor_destroy(b);
    return worst;
}

static const char *fake_model(const char *model)
{
    if (strstr(model, "learned_var"))
        return "fixture_learned_range";
    if (strstr(model, "F_score"))
        return "fixture_score";
    if (strstr(model, "1000*t"))
        return "fixture_vp";
    return "fixture_eps";
}

/* Runs one case at N steps, optionally from the fixture's initial noise
 * file, and checks the trace against N{N}.safetensors. */
static void run_case(const char *name, const dfx_json *c, int n_steps, bool init_from_file, double *worst)
{
    const char *fixtures = test_fixtures_dir();
    char *tmp = test_tmpdir();
    char trace_path[4200], ref_path[4200], cfg[4200], steps[64], model[128], eta[64], init[4300];
    snprintf(trace_path, sizeof trace_path, "%s/trace.safetensors", tmp);
    snprintf(ref_path, sizeof ref_path, "%s/schedulers/%s/N%d.safetensors", fixtures, name, n_steps);
    snprintf(cfg, sizeof cfg, "scheduler.config=%s/schedulers/%s/scheduler_config.json", fixtures, name);
    snprintf(steps, sizeof steps, "scheduler.steps=%d", n_steps);
    snprintf(model, sizeof model, "model.function=%s", fake_model(dfx_json_string(dfx_json_get(c, "model"))));
    snprintf(init, sizeof init, "init.noise=%s#initial_noise", ref_path);
    char *argv[32] = {(char *)dfx_exe, "run", (char *)pipeline, "--quiet", "--trace", trace_path,
                      "--set", cfg, "--set", steps, "--set", model};
    int argc = 12;
    const dfx_json *step_eta = dfx_json_get(dfx_json_get(c, "step_kwargs"), "eta");
    if (step_eta) {
        snprintf(eta, sizeof eta, "sampler.eta=%.17g", dfx_json_number(step_eta));
        argv[argc++] = "--set";
        argv[argc++] = eta;
    }
    /* the fixtures record the scheduler's last prev_sample, noise included;
     * a score-SDE pipeline would return the mean */
    if (strncmp(dfx_json_string(dfx_json_get(c, "class")), "ScoreSde", 8) == 0) {
        argv[argc++] = "--set";
        argv[argc++] = "sampler.denoise_final=false";
    }
    if (init_from_file) {
        argv[argc++] = "--set";
        argv[argc++] = init;
    }
    argv[argc] = NULL;
    char *err = NULL;
    int rc = test_run(argv, NULL, &err);
    ck_assert_msg(rc == 0, "%s N%d: dfx exited %d: %s", name, n_steps, rc, err);
    free(err);

    dfx_safetensors *trace, *ref;
    ck_assert_msg(dfx_safetensors_open(trace_path, &trace) == DFX_OK, "%s", dfx_error_message());
    ck_assert_msg(dfx_safetensors_open(ref_path, &ref) == DFX_OK, "%s", dfx_error_message());
    static const char *const pairs[][2] = {
        {"timesteps", "step_timesteps"}, {"model_inputs", "model_inputs"},
        {"model_outputs", "model_outputs"}, {"samples", "samples"}, {"step_noise", "step_noise"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
        bool in_ref = dfx_safetensors_has(ref, pairs[i][1]);
        ck_assert_msg(in_ref == dfx_safetensors_has(trace, pairs[i][0]), "%s N%d: '%s' is %s the trace", name,
                      n_steps, pairs[i][0], in_ref ? "missing from" : "unexpected in");
        if (in_ref) {
            double w = compare_series(pairs[i][0], name, n_steps, trace, pairs[i][0], ref, pairs[i][1]);
            *worst = w > *worst ? w : *worst;
        }
    }
    dfx_safetensors_close(trace);
    dfx_safetensors_close(ref);
    test_rmtree(tmp);
    free(tmp);
}

START_TEST(scheduler_case)
{
    const char *name = dfx_json_key_at(cases, _i);
    const dfx_json *c = dfx_json_value_at(cases, _i);
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/schedulers/%s", test_fixtures_dir(), name);
    if (access(dir, F_OK) != 0) {
        /* listed in index.json but not in this copy of the fixtures */
        printf("  %-34s held back (not in this copy of the fixtures)\n", name);
        return;
    }
    const dfx_json *runs = dfx_json_get(c, "runs");
    ck_assert_int_gt(dfx_json_size(runs), 0);
    double worst = 0;
    for (int64_t r = 0; r < dfx_json_size(runs); r++) {
        int64_t n;
        ck_assert(dfx_json_int(dfx_json_get(dfx_json_at(runs, r), "N"), &n));
        run_case(name, c, (int)n, false, &worst);
        /* deterministic samplers must give the same run from the noise file */
        int64_t draws = 0;
        dfx_json_int(dfx_json_get(dfx_json_at(runs, r), "num_noise_draws"), &draws);
        if (draws == 0)
            run_case(name, c, (int)n, true, &worst);
    }
    printf("  %-34s worst error %.2e (%.1f%% of the tolerance)\n", name, worst * TOL, 100 * worst);
}
END_TEST

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s DFX PIPELINE.yaml\n", argv[0]);
        return EXIT_FAILURE;
    }
    dfx_exe = argv[1];
    pipeline = argv[2];
    const char *fixtures = test_require_fixtures("scheduler parity");
    char path[4200];
    snprintf(path, sizeof path, "%s/schedulers/index.json", fixtures);
    if (dfx_json_parse_file(path, &index_doc) != DFX_OK) {
        fprintf(stderr, "%s\n", dfx_error_message());
        return EXIT_FAILURE;
    }
    cases = dfx_json_get(index_doc, "cases");
    Suite *s = suite_create("scheduler parity");
    TCase *tc = tcase_create("cases");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, scheduler_case, 0, (int)dfx_json_size(cases));
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    dfx_json_destroy(index_doc);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
