/* Noise schedules: the tables of every fixtures/schedulers case against
 * diffusers' (timesteps exact, alphas_cumprod and sigmas to rel 1e-6, as
 * fixtures/README.md asks), and the schedule layouts whose reference values
 * come from the original code: IDDPM's space_timesteps, zero-SNR, Karras. */
#include "testutil.h"

static dfx_registry *reg;

/* Plans the scheduler of a pipeline text for `steps` steps. */
static void plan_text(const char *yaml, int64_t steps, dfx_schedule *out)
{
    dfx_pipeline *p;
    ck_assert_msg(dfx_pipeline_parse(&p, yaml, strlen(yaml), "test.yaml") == DFX_OK, "%s", dfx_error_message());
    ck_assert_msg(dfx_pipeline_resolve(p, reg) == DFX_OK, "%s", dfx_error_message());
    ck_assert_msg(dfx_pipeline_plan(p, steps, out) == DFX_OK, "%s", dfx_error_message());
    dfx_pipeline_destroy(p);
}

static void plan_scheduler(const char *section, int64_t steps, dfx_schedule *out)
{
    char yaml[4096];
    snprintf(yaml, sizeof yaml, "dfx: 1\npipeline: schedule\nscheduler: %s\n", section);
    plan_text(yaml, steps, out);
}

static dfx_tensor *read_f64(const dfx_safetensors *st, const char *name)
{
    dfx_tensor *t;
    ck_assert_msg(dfx_safetensors_read(st, name, DFX_DTYPE_F64, &t) == DFX_OK, "%s", dfx_error_message());
    return t;
}

static void assert_rel(double a, double b, double rel, const char *what, const char *name, int64_t i)
{
    double scale = fabs(b) > 1e-30 ? fabs(b) : 1;
    ck_assert_msg(fabs(a - b) <= rel * scale, "%s %s[%lld]: dfx %.10g, diffusers %.10g", name, what, (long long)i,
                  a, b);
}

START_TEST(fixture_tables)
{
    const char *fixtures = test_fixtures_dir();
    if (!fixtures) {
        printf("SKIP fixture tables: no fixtures folder\n");
        return;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/schedulers/index.json", fixtures);
    dfx_json *index;
    ck_assert(dfx_json_parse_file(path, &index) == DFX_OK);
    const dfx_json *cases = dfx_json_get(index, "cases");
    int checked = 0;
    for (int64_t c = 0; c < dfx_json_size(cases); c++) {
        const char *name = dfx_json_key_at(cases, c);
        const char *cls = dfx_json_string(dfx_json_get(dfx_json_value_at(cases, c), "class"));
        snprintf(path, sizeof path, "%s/schedulers/%s", fixtures, name);
        if (access(path, F_OK) != 0)
            continue;
        for (int n_steps = 10; n_steps <= 50; n_steps += 40) {
            char section[4400], ref_path[4300];
            snprintf(section, sizeof section, "{config: '%s/scheduler_config.json'}", path);
            snprintf(ref_path, sizeof ref_path, "%s/N%d.safetensors", path, n_steps);
            dfx_schedule s;
            plan_scheduler(section, n_steps, &s);
            dfx_safetensors *ref;
            ck_assert(dfx_safetensors_open(ref_path, &ref) == DFX_OK);

            /* the level timesteps as diffusers lists them */
            dfx_tensor *ts = read_f64(ref, "timesteps");
            const double *t = ts->data;
            int64_t nt = dfx_tensor_numel(ts);
            bool heun = strcmp(cls, "HeunDiscreteScheduler") == 0;
            bool pndm = strcmp(cls, "PNDMScheduler") == 0;
            bool ve = strcmp(cls, "ScoreSdeVeScheduler") == 0;
            for (int64_t i = 0; i < s.steps; i++) {
                double want;
                if (heun) /* t0, t1, t1, t2, t2, ... */
                    want = t[i == 0 ? 0 : 2 * i - 1];
                else if (pndm) /* the last entries are the main grid, bar the first steps */
                    want = t[nt - (s.steps - i)];
                else
                    want = t[i];
                if (pndm && i < 3)
                    continue;
                if (ve) /* the model is fed sigma(t) */
                    continue;
                assert_rel(s.levels[i].t_model, want, 1e-6, "timesteps", name, i);
            }
            if (pndm) {
                ck_assert_int_eq(nt, s.steps + (strstr(name, "skip_prk") ? 1 : 9));
            } else if (heun) {
                ck_assert_int_eq(nt, 2 * s.steps - 1);
            } else {
                ck_assert_int_eq(nt, s.steps);
            }
            dfx_tensor_destroy(ts);

            if (dfx_safetensors_has(ref, "alphas_cumprod") && !ve) {
                dfx_tensor *ac = read_f64(ref, "alphas_cumprod");
                ck_assert_int_eq(dfx_tensor_numel(ac), s.train_steps);
                for (int64_t i = 0; i < s.train_steps; i++)
                    assert_rel(s.train_alpha_bar[i], ((double *)ac->data)[i], 1e-6, "alphas_cumprod", name, i);
                dfx_tensor_destroy(ac);
            }
            if (dfx_safetensors_has(ref, "sigmas") && !ve) {
                dfx_tensor *sg = read_f64(ref, "sigmas");
                const double *sv = sg->data;
                for (int64_t i = 0; i <= s.steps; i++) {
                    const dfx_level *l = &s.levels[i];
                    double mine = l->sigma / l->alpha;
                    double want = heun ? sv[i == 0 ? 0 : i == s.steps ? 2 * i - 1 : 2 * i - 1] : sv[i];
                    if (i == s.steps && strcmp(cls, "DPMSolverMultistepScheduler") != 0 && want == 0)
                        mine = l->sigma; /* the clean end */
                    assert_rel(mine, want, 1e-6, "sigmas", name, i);
                }
                dfx_tensor_destroy(sg);
            }
            if (ve) {
                dfx_tensor *sg = read_f64(ref, "sigmas"), *ds = read_f64(ref, "discrete_sigmas");
                for (int64_t i = 0; i < s.steps; i++) {
                    assert_rel(s.levels[i].t_model, ((double *)sg->data)[i], 1e-6, "sigmas", name, i);
                    assert_rel(s.levels[i].sigma, ((double *)ds->data)[s.steps - 1 - i], 1e-6, "discrete_sigmas",
                               name, i);
                }
                dfx_tensor_destroy(sg);
                dfx_tensor_destroy(ds);
            }
            dfx_safetensors_close(ref);
            dfx_schedule_fini(&s);
            checked++;
        }
    }
    ck_assert_int_gt(checked, 0);
    printf("fixture tables: %d schedules checked\n", checked);
    dfx_json_destroy(index);
}
END_TEST

/* IDDPM's space_timesteps (guided-diffusion respace.py), values from running
 * that function. */
START_TEST(iddpm_respacing)
{
    static const struct {
        int64_t train;
        const char *spec;
        int64_t steps;
        int64_t first[5], last;
        int64_t sum;
    } cases[] = {
        {1000, "ddim", 25, {960, 920, 880, 840, 800}, 0, 12000},
        {1000, "10", 10, {999, 888, 777, 666, 555}, 0, 4995},
        {100, "10,15,20", 45, {99, 97, 96, 94, 92}, 0, 2575},
        {1000, "250", 250, {999, 995, 991, 987, 983}, 0, 124875},
        {1000, "3,1,5", 9, {999, 916, 833, 750, 667}, 0, 4998},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char section[512];
        snprintf(section, sizeof section, "{type: linear, train_steps: %lld, spacing: respaced, respacing: '%s'}",
                 (long long)cases[c].train, cases[c].spec);
        dfx_schedule s;
        plan_scheduler(section, cases[c].steps, &s);
        int64_t sum = 0;
        for (int64_t i = 0; i < s.steps; i++)
            sum += (int64_t)s.levels[i].t_model;
        for (int i = 0; i < 5; i++)
            ck_assert_int_eq((int64_t)s.levels[i].t_model, cases[c].first[i]);
        ck_assert_int_eq((int64_t)s.levels[s.steps - 1].t_model, cases[c].last);
        ck_assert_int_eq(sum, cases[c].sum);
        /* the respaced chain steps between kept levels: target = next level */
        for (int64_t i = 0; i < s.steps; i++)
            ck_assert_double_eq(s.targets[i].alpha, s.levels[i + 1].alpha);
        dfx_schedule_fini(&s);
    }
}
END_TEST

START_TEST(respacing_errors)
{
    dfx_pipeline *p;
    const char *bad[][2] = {
        {"{type: linear, spacing: respaced, respacing: '250', steps: 50}", "respacing '250' gives 250 steps but steps is 50"},
        {"{type: linear, spacing: respaced, steps: 5}", "spacing: respaced needs respacing"},
        {"{type: linear, spacing: respaced, respacing: 'x,1', steps: 5}", "expected comma-separated positive counts"},
        {"{type: linear, respacing: '10', steps: 10}", "only read with spacing: respaced"},
        {"{type: linear, spacing: respaced, respacing: ddim, steps: 600}", "no integer stride gives exactly 600 of 1000"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char yaml[1024];
        snprintf(yaml, sizeof yaml, "dfx: 1\npipeline: schedule\nscheduler: %s\n", bad[i][0]);
        ck_assert(dfx_pipeline_parse(&p, yaml, strlen(yaml), "t.yaml") == DFX_OK);
        dfx_status st = dfx_pipeline_resolve(p, reg);
        dfx_schedule s;
        if (st == DFX_OK)
            st = dfx_pipeline_plan(p, 0, &s);
        ck_assert_msg(st != DFX_OK, "%s was accepted", bad[i][0]);
        ck_assert_msg(strstr(dfx_error_message(), bad[i][1]), "%s: got '%s'", bad[i][0], dfx_error_message());
        dfx_pipeline_destroy(p);
    }
}
END_TEST

START_TEST(zero_snr_and_trailing)
{
    dfx_schedule s;
    /* Lin et al. 2023: the last training step is pure noise */
    plan_scheduler("{type: scaled_linear, zero_snr: true, spacing: trailing}", 61, &s);
    ck_assert_double_eq(s.train_alpha_bar[999], 0);
    ck_assert_double_eq(s.levels[0].t_model, 999);
    ck_assert_double_eq(s.levels[0].alpha, 0);
    /* 61 trailing steps stay 61 (numpy's arange would add a 62nd at t = -1) */
    ck_assert_int_eq(s.steps, 61);
    ck_assert_double_eq(s.levels[60].t_model, 15);
    dfx_schedule_fini(&s);
}
END_TEST

START_TEST(karras_sigmas)
{
    /* Karras et al. 2022 eq. (5): the ends are the table's, rho = 7 between */
    dfx_schedule s;
    plan_scheduler("{type: scaled_linear, spacing: linspace, round_timesteps: false, sigmas: karras, levels: ve}", 20,
                   &s);
    double hi = s.levels[0].sigma, lo = s.levels[19].sigma;
    ck_assert_double_eq_tol(hi, 14.6146, 1e-3);
    ck_assert_double_eq_tol(lo, 0.0292, 1e-3);
    for (int i = 0; i < 20; i++) {
        double r = i / 19.0, a = pow(hi, 1 / 7.0), b = pow(lo, 1 / 7.0);
        ck_assert_double_eq_tol(s.levels[i].sigma, pow(a + r * (b - a), 7), 1e-5 * s.levels[i].sigma);
    }
    ck_assert_double_eq(s.levels[20].sigma, 0);
    dfx_schedule_fini(&s);
}
END_TEST

START_TEST(vp_continuous)
{
    /* score_sde's VP SDE: alpha = exp(-t^2 (b1 - b0) / 4 - t b0 / 2) */
    dfx_schedule s;
    plan_scheduler("{type: vp}", 5, &s);
    ck_assert_ptr_nonnull(s.sde_g2);
    for (int i = 0; i < 5; i++) {
        double t = s.time[i], lm = -0.25 * t * t * 19.9 - 0.5 * t * 0.1;
        ck_assert_double_eq_tol(s.levels[i].alpha, exp(lm), 1e-12);
        /* sigma is computed in float32 as the reference does; near t = 0 its
         * cancellation costs about 1e-4 relative */
        ck_assert_double_eq_tol(s.levels[i].sigma, sqrt(1 - exp(2 * lm)), 2e-4 * s.levels[i].sigma);
        ck_assert_double_eq_tol(s.sde_g2[i], 0.1 + t * 19.9, 1e-5);
        ck_assert_double_eq_tol(s.time_to[i], t - 0.2, 1e-7);
    }
    dfx_schedule_fini(&s);
}
END_TEST

int main(void)
{
    if (dfx_registry_create(&reg, NULL, 0) != DFX_OK)
        return EXIT_FAILURE;
    Suite *s = suite_create("schedule");
    TCase *tc = tcase_create("schedule");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, fixture_tables);
    tcase_add_test(tc, iddpm_respacing);
    tcase_add_test(tc, respacing_errors);
    tcase_add_test(tc, zero_snr_and_trailing);
    tcase_add_test(tc, karras_sigmas);
    tcase_add_test(tc, vp_continuous);
    suite_add_tcase(s, tc);
    int rc = test_run_suite(s);
    dfx_registry_destroy(reg);
    return rc;
}
