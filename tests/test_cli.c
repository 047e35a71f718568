/* The command line's answers to bad input: every case gets one clear message
 * on stderr naming the file:line:col, the --set or the option, and a
 * non-zero exit; never a crash. Also the commands' normal output: list,
 * describe, inspect, schedule, --dry-run.
 *
 * usage: test_cli DFX_EXECUTABLE SOURCE_TESTS_DIR */
#include <signal.h>
#include <stdarg.h>

#include "testutil.h"

static const char *dfx_exe, *data_dir;
static char pipeline[4096];

/* Runs dfx with up to 30 arguments (NULL-terminated) and returns the exit
 * status; stdout and stderr go to out and err (freed by the caller). */
static int dfx(char **out, char **err, ...)
{
    char *argv[32] = {(char *)dfx_exe};
    int n = 1;
    va_list ap;
    va_start(ap, err);
    for (char *a; n < 31 && (a = va_arg(ap, char *));)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    return test_run(argv, out, err);
}

#define ASSERT_HAS(text, sub) ck_assert_msg(strstr((text), (sub)) != NULL, "expected \"%s\" in:\n%s", (sub), (text))

/* A run of the probe pipeline with one override that must fail with rc 1 and
 * a message containing `expect`. */
static void expect_set_error(const char *set, const char *expect)
{
    char *out, *err;
    int rc = dfx(&out, &err, "run", pipeline, "--quiet", "--set", "scheduler.type=linear", "--set",
                 "sampler.type=ddim", "--set", "output.path=/nonexistent-dir/never.safetensors", "--set", set,
                 NULL);
    ck_assert_msg(rc == 1, "--set %s: exit %d, stderr: %s", set, rc, err);
    ASSERT_HAS(err, "dfx: error: ");
    ASSERT_HAS(err, expect);
    ck_assert_msg(strchr(err, '\n') == strrchr(err, '\n'), "one message expected, got:\n%s", err);
    free(out);
    free(err);
}

START_TEST(bad_options)
{
    expect_set_error("sampler.etaa=1", "--set sampler.etaa=1: sampler 'ddim' has no option 'etaa' (did you mean 'eta'?)");
    expect_set_error("sampler.eta=1.5", "sampler 'ddim': option 'eta': 1.5 is out of range [0, 1]");
    expect_set_error("sampler.eta=abc", "option 'eta': expected a number, found a string 'abc'");
    expect_set_error("sampler.eta=[1]", "option 'eta': expected a number, found a list");
    expect_set_error("scheduler.spacing=leadin", "'leadin' is not one of: leading, trailing, linspace, respaced (did you mean 'leading'?)");
    expect_set_error("scheduler.steps=0", "option 'steps': 0 is out of range [1, 100000000]");
    expect_set_error("scheduler.steps=2.5", "option 'steps': expected an integer, found a number '2.5'");
    expect_set_error("scheduler.zero_snr=yes", "option 'zero_snr': expected true or false, found a string 'yes'");
    expect_set_error("model.function=foo", "'foo' is not one of: fixture_eps");
    expect_set_error("dfx=2", "option 'dfx': 2 is out of range [1, 1]");
    expect_set_error("pipeline=samples", "'samples' is not one of: sample, schedule, train (did you mean 'sample'?)");
    expect_set_error("seed=-1", "option 'seed': -1 is out of range");
    expect_set_error("shape=[1,a]", "option 'shape': expected an integer, found a string 'a'");
    expect_set_error("shapee=1", "--set shapee=1: unknown key 'shapee' (did you mean 'shape'?)");
    expect_set_error("model.function.x=1", "--set model.function.x=1: 'function' is a value");
    expect_set_error("sampler.type=dddim", "unknown sampler 'dddim' (did you mean 'ddim'?); `dfx list sampler`");
    expect_set_error("scheduler.type=lineer", "unknown scheduler 'lineer' (did you mean 'linear'?)");
    expect_set_error("model=3", "'model' must be a section of keys");
    expect_set_error("scheduler.steps=2000", "2000 steps exceed the 1000 training steps");
    expect_set_error("scheduler.trained_betas=[0.1, 0.2]", "trained_betas has 2 values but train_steps is 1000");
    expect_set_error("init.noise=/nonexistent.safetensors#x", "init.noise: /nonexistent.safetensors: cannot open");
    expect_set_error("scheduler.config=/nonexistent/scheduler_config.json", "scheduler.config: /nonexistent/scheduler_config.json: cannot open");
    expect_set_error("novalue", "--set novalue: expected key.path=value");
    expect_set_error("sampler.eta=1]", "--set sampler.eta=1]");
}
END_TEST

/* Writes text to dir/name and returns the path (static buffer). */
static const char *write_file(const char *dir, const char *name, const char *text, size_t len)
{
    static char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    ck_assert(f != NULL);
    ck_assert_uint_eq(fwrite(text, 1, len, f), len);
    fclose(f);
    return path;
}

static void expect_file_error(const char *text, const char *expect)
{
    char *dir = test_tmpdir(), *out, *err;
    const char *path = write_file(dir, "p.yaml", text, strlen(text));
    int rc = dfx(&out, &err, "run", path, "--quiet", NULL);
    ck_assert_msg(rc == 1, "exit %d for:\n%s\nstderr: %s", rc, text, err);
    ASSERT_HAS(err, expect);
    free(out);
    free(err);
    test_rmtree(dir);
    free(dir);
}

START_TEST(bad_yaml)
{
    expect_file_error("dfx: 1\npipeline: sample\nmodel: {type: probe\n", "p.yaml:4:1: YAML syntax error");
    expect_file_error("dfx: 1\n  pipeline: sample\n", "p.yaml:2:11: YAML syntax error");
    expect_file_error("dfx: 1\ndfx: 1\n", "p.yaml:2:1: duplicate key 'dfx' (first given at line 1)");
    expect_file_error("- a\n- b\n", "a pipeline is a map of keys");
    expect_file_error("pipeline: sample\n", "option 'dfx' is required");
    expect_file_error("dfx: 1\npipeline: sample\nscheduler: {type: linear}\nsampler: {type: ddim}\nshape: [1, 2]\n",
                      "the pipeline needs a model section");
    expect_file_error("dfx: 1\npipeline: sample\nmodel: {type: probe}\nsampler: {type: ddim}\n",
                      "the pipeline needs a scheduler section");
    expect_file_error("dfx: 1\npipeline: sample\nmodel: {type: probe}\nscheduler: {type: linear, stepz: 3}\n"
                      "sampler: {type: ddim}\n", "p.yaml:4:34: scheduler 'linear' has no option 'stepz' (did you mean 'steps'?)");
    expect_file_error("dfx: 1\npipeline: sample\nmodel: {type: probe}\nscheduler: {type: linear}\nsampler: {type: ddim}\n"
                      "output: {path: out.safetensors}\n", "has no fixed sample shape: give shape: [B, ...]");
    expect_file_error("dfx: 1\npipeline: sample\nshape: [1, 4]\nmodel: {type: probe}\nscheduler: {type: linear}\n"
                      "sampler: {type: ddim}\n", "nothing to write: set output.path");
    expect_file_error("a: &x [*x]\n", "p.yaml:1:4: nesting deeper than 64 levels (an alias that refers to itself?)");
    expect_file_error("dfx: 1\n---\ndfx: 1\n", "a second YAML document");
}
END_TEST

START_TEST(bad_safetensors)
{
    char *dir = test_tmpdir(), *out, *err;
    /* a header length beyond the file, then offsets past the data */
    unsigned char bad1[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
    const char *hdr = "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
    char bad2[256];
    size_t hl = strlen(hdr);
    for (int i = 0; i < 8; i++)
        bad2[i] = (char)((hl >> (8 * i)) & 0xff);
    memcpy(bad2 + 8, hdr, hl);
    memset(bad2 + 8 + hl, 0, 8); /* 8 bytes of data where 16 are promised */
    struct {
        const char *name;
        const void *data;
        size_t len;
        const char *expect;
    } cases[] = {
        {"len.safetensors", bad1, 10, "len.safetensors"},
        {"trunc.safetensors", bad2, 8 + hl + 8, "trunc.safetensors"},
        {"empty.safetensors", "", 0, "empty.safetensors"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *path = write_file(dir, cases[i].name, cases[i].data, cases[i].len);
        int rc = dfx(&out, &err, "inspect", path, NULL);
        ck_assert_msg(rc == 1, "%s: exit %d", cases[i].name, rc);
        ASSERT_HAS(err, cases[i].expect);
        free(out);
        free(err);
        char set[4300];
        snprintf(set, sizeof set, "init.noise=%s#x", path);
        expect_set_error(set, "init.noise: ");
    }
    test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(usage_errors)
{
    char *out, *err;
    ck_assert_int_eq(dfx(&out, &err, "frobnicate", NULL), 2);
    ASSERT_HAS(err, "unknown command 'frobnicate'");
    free(out), free(err);
    ck_assert_int_eq(dfx(&out, &err, "run", NULL), 2);
    ASSERT_HAS(err, "run: which pipeline?");
    free(out), free(err);
    ck_assert_int_eq(dfx(&out, &err, "run", pipeline, "--bogus", NULL), 2);
    ASSERT_HAS(err, "run: unknown option '--bogus'");
    free(out), free(err);
    ck_assert_int_eq(dfx(&out, &err, "run", pipeline, "--seed", "x1", NULL), 2);
    ASSERT_HAS(err, "--seed: 'x1' is not a non-negative integer");
    free(out), free(err);
    ck_assert_int_eq(dfx(&out, &err, "list", "samplers", NULL), 2);
    ASSERT_HAS(err, "list: unknown kind 'samplers'");
    free(out), free(err);
    ck_assert_int_eq(dfx(&out, &err, "describe", "sampler", "nope", NULL), 1);
    ASSERT_HAS(err, "no sampler named 'nope'");
    free(out), free(err);
    ck_assert_int_eq(dfx(&out, &err, "run", "/nonexistent.yaml", NULL), 1);
    ASSERT_HAS(err, "/nonexistent.yaml: cannot open: No such file or directory");
    free(out), free(err);
}
END_TEST

START_TEST(list_describe_inspect)
{
    char *out, *err;
    ck_assert_int_eq(dfx(&out, &err, "list", NULL), 0);
    static const char *const names[] = {"linear", "scaled_linear", "cosine", "sqrt", "ve", "vp", "ddpm", "ddim",
                                        "pndm", "euler", "euler_ancestral", "heun", "dpmpp_2m", "lms", "pc",
                                        "probe"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char word[64];
        snprintf(word, sizeof word, "  %s ", names[i]);
        ASSERT_HAS(out, word);
    }
    free(out), free(err);
    ck_assert_int_eq(dfx(&out, &err, "describe", "sampler", "ddim", NULL), 0);
    ASSERT_HAS(out, "eta");
    ASSERT_HAS(out, "[0, 1]");
    ASSERT_HAS(out, "0 = deterministic DDIM");
    free(out), free(err);
    ck_assert_int_eq(dfx(&out, &err, "describe", "scheduler", "linear", NULL), 0);
    ASSERT_HAS(out, "leading|trailing|linspace|respaced");
    free(out), free(err);
    if (!test_fixtures_dir())
        return;
    ck_assert_int_eq(dfx(&out, &err, "inspect", test_fixture("schedulers/heun_sd/N10.safetensors"), NULL), 0);
    ASSERT_HAS(out, "timesteps");
    ASSERT_HAS(out, "F32      [19]");
    ASSERT_HAS(out, "model_inputs");
    ASSERT_HAS(out, "[19,1,4,4,4]");
    free(out), free(err);
}
END_TEST

START_TEST(convert_command)
{
    /* float tensors change dtype with rounding to nearest, an integer tensor
     * and the metadata are copied as they are; bad input gets a message and
     * leaves no output file (folders missing above the
     * output are made, as for every output) */
    char *dir = test_tmpdir(), *out, *err, in[4200], dst[4200], none[4300];
    snprintf(in, sizeof in, "%s/in.safetensors", dir);
    snprintf(dst, sizeof dst, "%s/out.safetensors", dir);
    snprintf(none, sizeof none, "%s/in.safetensors/out.safetensors", dir); /* under a file */
    float w[4] = {1.0f, 1.0f / 3.0f, -65504.0f, 1e-8f};
    int64_t idx[2] = {7, -3};
    const dfx_tensor tw = dfx_tensor_view(DFX_DTYPE_F32, 1, (int64_t[]){4}, w),
                     ti = dfx_tensor_view(DFX_DTYPE_I64, 1, (int64_t[]){2}, idx);
    const char *names[] = {"w", "idx"}, *keys[] = {"format"}, *vals[] = {"pt"};
    ck_assert(dfx_safetensors_write(in, 2, names, (const dfx_tensor *const[]){&tw, &ti}, 1, keys, vals) == DFX_OK);

    int rc = dfx(&out, &err, "convert", in, dst, NULL);
    ck_assert_msg(rc == 0, "%s", err);
    ASSERT_HAS(out, "2 tensors, floating point as F16");
    free(out), free(err);
    dfx_safetensors *st;
    dfx_tensor *t;
    ck_assert(dfx_safetensors_open(dst, &st) == DFX_OK);
    ck_assert_str_eq(dfx_safetensors_metadata(st, "format"), "pt");
    ck_assert(dfx_safetensors_read(st, "w", DFX_DTYPE_F32, &t) == DFX_OK);
    const float *got = t->data;
    ck_assert_float_eq(got[0], 1.0f);
    ck_assert_float_eq(got[1], 0.333251953125f); /* the nearest half to 1/3 */
    ck_assert_float_eq(got[2], -65504.0f);
    ck_assert_float_eq(got[3], 0.0f); /* below the smallest half subnormal */
    dfx_tensor_destroy(t);
    ck_assert(dfx_safetensors_read(st, "idx", DFX_DTYPE_I64, &t) == DFX_OK);
    ck_assert_int_eq(((int64_t *)t->data)[0], 7);
    ck_assert_int_eq(((int64_t *)t->data)[1], -3);
    dfx_tensor_destroy(t);
    dfx_safetensors_close(st);

    ck_assert_int_eq(dfx(&out, &err, "convert", in, dst, "--dtype", "I8", NULL), 2);
    ASSERT_HAS(err, "convert: --dtype 'I8': expected F16, BF16 or F32");
    free(out), free(err);
    ck_assert_int_eq(dfx(&out, &err, "convert", in, NULL), 2);
    ASSERT_HAS(err, "convert needs IN.safetensors and OUT.safetensors");
    free(out), free(err);
    const char *trunc = write_file(dir, "trunc.safetensors", "\x10\0\0\0\0\0\0\0{", 9);
    ck_assert_int_eq(dfx(&out, &err, "convert", trunc, dst, NULL), 1);
    ASSERT_HAS(err, "trunc.safetensors");
    free(out), free(err);
    ck_assert_int_eq(dfx(&out, &err, "convert", in, none, NULL), 1);
    ASSERT_HAS(err, none);
    ck_assert_int_ne(access(none, F_OK), 0);
    free(out), free(err);
    test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(schedule_command)
{
    if (!test_fixtures_dir())
        return;
    char *dir = test_tmpdir(), *out, *err, dump[4200];
    snprintf(dump, sizeof dump, "%s/s.safetensors", dir);
    int rc = dfx(&out, &err, "schedule", test_fixture("schedulers/ddim_sd_leading_eta0/scheduler_config.json"),
                 "--steps", "10", "--dump", dump, NULL);
    ck_assert_msg(rc == 0, "%s", err);
    ASSERT_HAS(out, "scheduler 'scaled_linear', 10 steps");
    ASSERT_HAS(out, "901.000000");
    dfx_safetensors *st;
    ck_assert(dfx_safetensors_open(dump, &st) == DFX_OK);
    dfx_tensor *t;
    ck_assert(dfx_safetensors_read(st, "timesteps", DFX_DTYPE_F64, &t) == DFX_OK);
    ck_assert_int_eq(dfx_tensor_numel(t), 10);
    ck_assert_double_eq(((double *)t->data)[0], 901);
    ck_assert_double_eq(((double *)t->data)[9], 1);
    dfx_tensor_destroy(t);
    dfx_safetensors_close(st);
    free(out), free(err);
    test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(dry_run_round_trip)
{
    /* the resolved pipeline, fed back, resolves to the same text */
    char *dir = test_tmpdir(), *out, *err, *out2, *err2;
    int rc = dfx(&out, &err, "run", pipeline, "--dry-run", "--set", "scheduler.type=cosine", "--set",
                 "sampler.type=ddpm", "--set", "sampler.variance=fixed_large", "--set", "output.path=x.safetensors",
                 NULL);
    ck_assert_msg(rc == 0, "%s", err);
    ASSERT_HAS(out, "variance: fixed_large");
    ASSERT_HAS(out, "max_beta: 0.999");
    ASSERT_HAS(out, "prediction: epsilon");
    const char *path = write_file(dir, "resolved.yaml", out, strlen(out));
    rc = dfx(&out2, &err2, "run", path, "--dry-run", NULL);
    ck_assert_msg(rc == 0, "%s", err2);
    /* output paths resolve against the file's folder, so compare the rest */
    *strstr(out, "output:") = '\0';
    *strstr(out2, "output:") = '\0';
    ck_assert_str_eq(out, out2);
    free(out), free(err), free(out2), free(err2);
    test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(no_partial_output)
{
    /* a failing run (NaN) writes nothing where the output would go */
    char *dir = test_tmpdir(), *out, *err, set[4300];
    snprintf(set, sizeof set, "output.path=%s/o.safetensors", dir);
    int rc = dfx(&out, &err, "run", pipeline, "--quiet", "--set", "scheduler.type=linear", "--set",
                 "sampler.type=ddim", "--set", "scheduler.zero_snr=true", "--set", "scheduler.spacing=trailing",
                 "--set", set, NULL);
    ck_assert_int_eq(rc, 1);
    ASSERT_HAS(err, "became NaN or infinite at step 1");
    char path[4300];
    snprintf(path, sizeof path, "%s/o.safetensors", dir);
    ck_assert_int_ne(access(path, F_OK), 0);
    free(out), free(err);
    test_rmtree(dir);
    free(dir);
}
END_TEST

/* Reads tensor `name` of a safetensors file as float32. */
static dfx_tensor *read_samples(const char *path)
{
    dfx_safetensors *st;
    dfx_tensor *t;
    ck_assert_msg(dfx_safetensors_open(path, &st) == DFX_OK, "%s", dfx_error_message());
    ck_assert(dfx_safetensors_read(st, "samples", DFX_DTYPE_F32, &t) == DFX_OK);
    dfx_safetensors_close(st);
    return t;
}

START_TEST(per_image_noise)
{
    /* noise: per_image makes item k of a batch the single run with seed + k,
     * with a sampler that draws noise at every step */
    char *dir = test_tmpdir(), *out, *err, set_out[4400], path[4300];
    snprintf(path, sizeof path, "%s/batch.safetensors", dir);
    snprintf(set_out, sizeof set_out, "output.path=%s", path);
    int rc = dfx(&out, &err, "run", pipeline, "--quiet", "--set", "scheduler.type=scaled_linear", "--set",
                 "sampler.type=euler_ancestral", "--set", "noise=per_image", "--set", "shape=[3, 4, 4, 4]", "--seed",
                 "5", "--set", set_out, NULL);
    ck_assert_msg(rc == 0, "%s", err);
    free(out), free(err);
    dfx_tensor *batch = read_samples(path);
    for (int k = 0; k < 3; k++) {
        char seed[16], one[4300];
        snprintf(seed, sizeof seed, "%d", 5 + k);
        snprintf(one, sizeof one, "output.path=%s/one.safetensors", dir);
        rc = dfx(&out, &err, "run", pipeline, "--quiet", "--set", "scheduler.type=scaled_linear", "--set",
                 "sampler.type=euler_ancestral", "--set", "shape=[1, 4, 4, 4]", "--seed", seed, "--set", one, NULL);
        ck_assert_msg(rc == 0, "%s", err);
        free(out), free(err);
        snprintf(one, sizeof one, "%s/one.safetensors", dir);
        dfx_tensor *single = read_samples(one);
        ck_assert_mem_eq((float *)batch->data + 64 * k, single->data, 64 * sizeof(float));
        dfx_tensor_destroy(single);
    }
    /* shared noise gives different items (one generator for the batch) */
    rc = dfx(&out, &err, "run", pipeline, "--quiet", "--set", "scheduler.type=scaled_linear", "--set",
             "sampler.type=euler_ancestral", "--set", "shape=[3, 4, 4, 4]", "--seed", "5", "--set", set_out, NULL);
    ck_assert_int_eq(rc, 0);
    free(out), free(err);
    dfx_tensor *shared = read_samples(path);
    ck_assert(memcmp((float *)shared->data + 64, (float *)batch->data + 64, 64 * sizeof(float)) != 0);
    dfx_tensor_destroy(shared);
    dfx_tensor_destroy(batch);
    test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(interrupt)
{
    /* SIGINT stops the run at the next step: exit 130, no output file */
    char *dir = test_tmpdir(), set[4400], path[4300];
    snprintf(path, sizeof path, "%s/o.safetensors", dir);
    snprintf(set, sizeof set, "output.path=%s", path);
    char *argv[] = {(char *)dfx_exe, "run", pipeline, "--quiet", "--set", "scheduler.type=linear", "--set",
                    "sampler.type=ddpm", "--set", "scheduler.steps=1000", "--set", "shape=[512, 4, 64, 64]",
                    "--set", set, NULL};
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        int nul = open("/dev/null", O_WRONLY);
        dup2(nul, 1);
        dup2(nul, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    usleep(1500 * 1000);
    kill(pid, SIGINT);
    int status;
    waitpid(pid, &status, 0);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 130, "status %d", status);
    ck_assert_int_ne(access(path, F_OK), 0);
    test_rmtree(dir);
    free(dir);
}
END_TEST

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s DFX TESTS_SOURCE_DIR\n", argv[0]);
        return EXIT_FAILURE;
    }
    dfx_exe = argv[1];
    data_dir = argv[2];
    snprintf(pipeline, sizeof pipeline, "%s/data/scheduler_case.yaml", data_dir);
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, bad_options);
    tcase_add_test(tc, bad_yaml);
    tcase_add_test(tc, bad_safetensors);
    tcase_add_test(tc, usage_errors);
    tcase_add_test(tc, list_describe_inspect);
    tcase_add_test(tc, schedule_command);
    tcase_add_test(tc, convert_command);
    tcase_add_test(tc, dry_run_round_trip);
    tcase_add_test(tc, no_partial_output);
    tcase_add_test(tc, per_image_noise);
    tcase_add_test(tc, interrupt);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
