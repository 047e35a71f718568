/* Stable Diffusion pipelines against diffusers' StableDiffusionPipeline
 * (fixtures/README.md section 5, README_sd2.md section 10): every run that
 * sd_tiny_expected/index.json and sd2_tiny_expected/index.json describe and
 * this copy of the fixtures holds.
 *  - teacher-forced: at every recorded step, sd_unet on the recorded UNet
 *    input with the recorded prompt embeddings, guided at the run's scale,
 *    gives the recorded guided prediction (atol 1e-4);
 *  - free-running through `dfx run` (clip_text, cfg, vae, the run's
 *    scheduler config, the recorded initial latents): the first UNet input
 *    and the drawn noise exactly, the final latents and the image within
 *    the README's free-running figures (DDIM/PNDM are chaotic on random
 *    weights: latents 1e-2, image 2e-2; the others: latents 1e-4 of
 *    max|ref|, image 1e-3);
 *  - pipelines/sd_txt2img.yaml and sd_img2img.yaml as shipped: the same
 *    image as diffusers when pointed at the tiny model and a run's
 *    scheduler (img2img: a reference made by diffusers' img2img pipeline,
 *    tests/data/sd_img2img), the PNG's size and A1111 parameters, and bad sizes and a
 *    missing checkpoint refused with their messages.
 *
 * usage: test_parity_sd_pipeline DFX_EXECUTABLE SOURCE_ROOT */
#include <errno.h>
#include <stdarg.h>

#include "core/internal.h"
#include "testutil.h"

static const char *dfx_exe, *source_root;
static dfx_registry *reg;

/* One recorded pipeline run. */
typedef struct run_case {
    char model[64];        /* folder under fixtures: sd_tiny, sd2_tiny */
    char expected[64];     /* its expected folder */
    char name[96];         /* pipeline_ddim, ... */
    char scheduler[4200];  /* absolute path of its scheduler config */
    char prompt[512], negative[512];
    bool has_negative;
    double scale;
    int64_t steps, width, height, seed;
    bool chaotic;          /* DDIM or PNDM: compared loosely */
} run_case;

#define MAX_RUNS 32
static run_case runs[MAX_RUNS];
static int nruns;
static char *tmp_root;

/* Collecting the runs happens before the suite: a broken index stops the
 * program with its message. */
static void need(bool ok, const char *fmt, ...)
{
    if (ok)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("test_parity_sd_pipeline: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(EXIT_FAILURE);
}

/* test_fixture without Check's bookkeeping, for use before the suite. */
static const char *fixture_path(const char *rel)
{
    static char buf[4096];
    int n = snprintf(buf, sizeof buf, "%s/%s", test_fixtures_dir(), rel);
    need(n > 0 && (size_t)n < sizeof buf, "fixture path too long: %s", rel);
    return buf;
}

/* Writes a flat JSON object (strings, numbers, booleans, null) to path. */
static void write_flat_json(const dfx_json *obj, const char *path)
{
    FILE *f = fopen(path, "w");
    need(f != NULL, "%s", path);
    fputc('{', f);
    for (int64_t i = 0; i < dfx_json_size(obj); i++) {
        const dfx_json *v = dfx_json_value_at(obj, i);
        fprintf(f, "%s\"%s\": ", i ? ", " : "", dfx_json_key_at(obj, i));
        switch (dfx_json_type_of(v)) {
        case DFX_JSON_STRING:
            fprintf(f, "\"%s\"", dfx_json_string(v));
            break;
        case DFX_JSON_NUMBER:
            fprintf(f, "%.17g", dfx_json_number(v));
            break;
        case DFX_JSON_BOOL:
            fputs(dfx_json_bool(v) ? "true" : "false", f);
            break;
        default:
            fputs("null", f);
            break;
        }
    }
    fputs("}\n", f);
    need(fclose(f) == 0, "%s", "fixture index");
}

static void add_run(const char *model, const char *expected, const char *name, const dfx_json *r)
{
    need(nruns < MAX_RUNS, "%s", "fixture index");
    run_case *c = &runs[nruns];
    memset(c, 0, sizeof *c);
    snprintf(c->model, sizeof c->model, "%s", model);
    snprintf(c->expected, sizeof c->expected, "%s", expected);
    snprintf(c->name, sizeof c->name, "%s", name);
    char rel[512];
    snprintf(rel, sizeof rel, "%s/%s.safetensors", expected, name);
    if (access(fixture_path(rel), R_OK) != 0) {
        printf("NOTE: %s is not in this copy of the fixtures (held back): not compared\n", rel);
        return;
    }
    const dfx_json *sc = dfx_json_get(r, "scheduler_config");
    if (dfx_json_type_of(sc) == DFX_JSON_STRING) {
        snprintf(rel, sizeof rel, "%s/%s", expected, dfx_json_string(sc));
        snprintf(c->scheduler, sizeof c->scheduler, "%s", fixture_path(rel));
    } else {
        need(dfx_json_type_of(sc) == DFX_JSON_OBJECT, "%s: scheduler_config", name);
        snprintf(c->scheduler, sizeof c->scheduler, "%s/%s-%s.json", tmp_root, model, name);
        write_flat_json(sc, c->scheduler);
    }
    const dfx_json *cls = dfx_json_get(dfx_json_type_of(sc) == DFX_JSON_OBJECT ? sc : r,
                                       dfx_json_type_of(sc) == DFX_JSON_OBJECT ? "_class_name" : "scheduler");
    c->chaotic = cls && (strstr(dfx_json_string(cls), "DDIM") || strstr(dfx_json_string(cls), "PNDM"));
    snprintf(c->prompt, sizeof c->prompt, "%s", dfx_json_string(dfx_json_get(r, "prompt")));
    const dfx_json *neg = dfx_json_get(r, "negative_prompt");
    c->has_negative = dfx_json_type_of(neg) == DFX_JSON_STRING;
    snprintf(c->negative, sizeof c->negative, "%s", c->has_negative ? dfx_json_string(neg) : "");
    c->scale = dfx_json_number(dfx_json_get(r, "guidance_scale"));
    need(dfx_json_int(dfx_json_get(r, "num_inference_steps"), &c->steps), "%s: steps", name);
    need(dfx_json_int(dfx_json_get(r, "width"), &c->width), "%s: width", name);
    need(dfx_json_int(dfx_json_get(r, "height"), &c->height), "%s: height", name);
    need(dfx_json_int(dfx_json_get(r, "generator_seed"), &c->seed), "%s: seed", name);
    need(!dfx_json_get(r, "guidance_rescale") && !dfx_json_get(r, "clip_skip"),
                  "%s: a run option this test does not pass on", name);
    nruns++;
}

/* The runs of both index files: sd_tiny's under "pipelines", sd2_tiny's as
 * top-level pipeline_* entries. */
static void collect_runs(void)
{
    static const struct {
        const char *model, *expected;
    } sets[] = {{"sd_tiny", "sd_tiny_expected"}, {"sd2_tiny", "sd2_tiny_expected"}};
    for (size_t s = 0; s < sizeof sets / sizeof *sets; s++) {
        char rel[256];
        snprintf(rel, sizeof rel, "%s/index.json", sets[s].expected);
        dfx_json *index;
        need(dfx_json_parse_file(fixture_path(rel), &index) == DFX_OK, "%s", dfx_error_message());
        const dfx_json *pipes = dfx_json_get(index, "pipelines");
        const dfx_json *obj = pipes ? pipes : index;
        for (int64_t i = 0; i < dfx_json_size(obj); i++)
            if (pipes || strncmp(dfx_json_key_at(obj, i), "pipeline_", 9) == 0)
                add_run(sets[s].model, sets[s].expected, dfx_json_key_at(obj, i), dfx_json_value_at(obj, i));
        dfx_json_destroy(index);
    }
}

static const char *ref_path(const run_case *r)
{
    static char path[4400];
    char rel[256];
    snprintf(rel, sizeof rel, "%s/%s.safetensors", r->expected, r->name);
    snprintf(path, sizeof path, "%s", test_fixture(rel));
    return path;
}

static double max_rel(const dfx_tensor *got, const dfx_tensor *want)
{
    ck_assert(dfx_tensor_same_shape(got, want));
    const int64_t n = dfx_tensor_numel(want);
    const double m = test_max_abs(want->data, n);
    return test_max_abs_diff(got->data, want->data, n) / (m > 1 ? m : 1);
}

START_TEST(teacher_forced)
{
    const run_case *r = &runs[_i];
    char yaml[4400];
    snprintf(yaml, sizeof yaml, "{type: sd_unet, path: '%s/%s'}", test_fixtures_dir(), r->model);
    dfx_instance *m;
    ck_assert_msg(dfx_instance_create(&m, reg, DFX_KIND_MODEL, yaml, "test") == DFX_OK, "%s", dfx_error_message());
    const dfx_model_ops *ops = dfx_instance_component(m)->ops;
    dfx_safetensors *ref;
    ck_assert(dfx_safetensors_open(ref_path(r), &ref) == DFX_OK);
    dfx_tensor *in = test_read_f32(ref, "per_step_unet_input"), *want = test_read_f32(ref, "per_step_noise_pred_cfg");
    dfx_tensor *pos = test_read_f32(ref, "prompt_embeds"), *neg = test_read_f32(ref, "negative_prompt_embeds");
    dfx_tensor *ts;
    ck_assert(dfx_safetensors_read(ref, "timesteps", DFX_DTYPE_F64, &ts) == DFX_OK);
    const int64_t steps = in->shape[0], per = dfx_tensor_numel(in) / steps;
    const int64_t tok = pos->shape[1], dim = pos->shape[2];
    const int64_t xshape[4] = {2, in->shape[2], in->shape[3], in->shape[4]}, cshape[3] = {2, tok, dim};
    dfx_tensor *x, *out, *ctx;
    ck_assert(dfx_tensor_create(&x, DFX_DTYPE_F32, 4, xshape) == DFX_OK);
    ck_assert(dfx_tensor_create(&out, DFX_DTYPE_F32, 4, xshape) == DFX_OK);
    ck_assert(dfx_tensor_create(&ctx, DFX_DTYPE_F32, 3, cshape) == DFX_OK);
    memcpy(ctx->data, neg->data, (size_t)(tok * dim) * sizeof(float));
    memcpy((float *)ctx->data + tok * dim, pos->data, (size_t)(tok * dim) * sizeof(float));
    dfx_cond cond = {ctx, NULL, NULL};
    double worst = 0;
    for (int64_t s = 0; s < steps; s++) {
        const float *xs = (const float *)in->data + s * per;
        memcpy(x->data, xs, (size_t)per * sizeof(float));
        memcpy((float *)x->data + per, xs, (size_t)per * sizeof(float));
        const double t = ((const double *)ts->data)[s], tt[2] = {t, t}, sig[2] = {1, 1};
        dfx_model_input mi = {x, tt, sig, &cond};
        ck_assert_msg(ops->predict(dfx_instance_priv(m), &mi, out) == DFX_OK, "%s", dfx_error_message());
        const float *u = out->data, *c = u + per, *w = (const float *)want->data + s * per;
        double e = 0;
        for (int64_t i = 0; i < per; i++) {
            const float g = u[i] + (float)r->scale * (c[i] - u[i]);
            e = fmax(e, fabs(g - w[i]));
        }
        ck_assert_msg(e <= 1e-4, "%s/%s step %lld (t %g): guided prediction off by %.3g", r->expected, r->name,
                      (long long)s, t, e);
        worst = fmax(worst, e);
    }
    printf("  teacher-forced %-18s %-28s %lld steps, worst %.2e\n", r->expected, r->name, (long long)steps, worst);
    dfx_tensor_destroy(x);
    dfx_tensor_destroy(out);
    dfx_tensor_destroy(ctx);
    dfx_tensor_destroy(in);
    dfx_tensor_destroy(want);
    dfx_tensor_destroy(pos);
    dfx_tensor_destroy(neg);
    dfx_tensor_destroy(ts);
    dfx_safetensors_close(ref);
    dfx_instance_destroy(m);
}
END_TEST

/* Runs `dfx run PIPE --quiet --set ...` (sets NULL-terminated); returns the
 * exit status, *err the standard error. */
static int run_dfx(const char *pipe, const char *const *sets, const char *trace, char **err)
{
    char *argv[64] = {(char *)dfx_exe, "run", (char *)pipe, "--quiet"};
    int argc = 4;
    for (int i = 0; sets[i]; i++) {
        ck_assert(argc < 60);
        argv[argc++] = "--set";
        argv[argc++] = (char *)sets[i];
    }
    if (trace) {
        argv[argc++] = "--trace";
        argv[argc++] = (char *)trace;
    }
    argv[argc] = NULL;
    return test_run(argv, NULL, err);
}

/* Quotes s as a YAML double-quoted scalar into buf. */
static const char *yq(char *buf, size_t size, const char *s)
{
    size_t n = 0;
    buf[n++] = '"';
    for (; *s && n + 3 < size; s++) {
        if (*s == '"' || *s == '\\')
            buf[n++] = '\\';
        buf[n++] = *s;
    }
    buf[n++] = '"';
    buf[n] = 0;
    return buf;
}

/* Compares a free run's output and trace with the recorded run. */
static void check_run(const run_case *r, const char *out_path, const char *trace_path, const char *what)
{
    dfx_safetensors *ref, *tr = NULL, *out;
    ck_assert(dfx_safetensors_open(ref_path(r), &ref) == DFX_OK);
    ck_assert_msg(dfx_safetensors_open(out_path, &out) == DFX_OK, "%s", dfx_error_message());
    double first = 0, noise = -1;
    if (trace_path) {
        ck_assert(dfx_safetensors_open(trace_path, &tr) == DFX_OK);
        dfx_tensor *got = test_read_f32(tr, "model_inputs"), *want = test_read_f32(ref, "per_step_unet_input");
        const int64_t per = dfx_tensor_numel(want) / want->shape[0];
        ck_assert_int_eq(got->shape[0], want->shape[0]);
        first = test_max_abs_diff(got->data, want->data, per) / fmax(1, test_max_abs(want->data, per));
        ck_assert_msg(first <= 1e-6, "%s/%s: the first UNet input differs by %.3g", r->expected, r->name, first);
        dfx_tensor_destroy(got);
        dfx_tensor_destroy(want);
        if (dfx_safetensors_has(ref, "step_noise")) {
            got = test_read_f32(tr, "step_noise"), want = test_read_f32(ref, "step_noise");
            ck_assert(dfx_tensor_same_shape(got, want));
            noise = test_max_abs_diff(got->data, want->data, dfx_tensor_numel(want));
            ck_assert_msg(noise == 0, "%s/%s: the drawn noise differs by %.3g", r->expected, r->name, noise);
            dfx_tensor_destroy(got);
            dfx_tensor_destroy(want);
        }
    }
    dfx_tensor *got = test_read_f32(out, "samples"), *want = test_read_f32(ref, "final_latents");
    const double lat = r->chaotic ? test_max_abs_diff(got->data, want->data, dfx_tensor_numel(want))
                                  : max_rel(got, want);
    const double lat_tol = r->chaotic ? 1e-2 : 1e-4;
    ck_assert_msg(lat <= lat_tol, "%s/%s: final latents off by %.3g (> %g)", r->expected, r->name, lat, lat_tol);
    dfx_tensor_destroy(got);
    dfx_tensor_destroy(want);
    got = test_read_f32(out, "image"), want = test_read_f32(ref, "image_np_nhwc");
    ck_assert(dfx_tensor_same_shape(got, want));
    const double img = test_max_abs_diff(got->data, want->data, dfx_tensor_numel(want));
    const double img_tol = r->chaotic ? 2e-2 : 1e-3;
    ck_assert_msg(img <= img_tol, "%s/%s: image off by %.3g (> %g)", r->expected, r->name, img, img_tol);
    printf("  %-14s %-18s %-28s first input %.1e, latents %.2e, image %.2e%s\n", what, r->expected, r->name, first,
           lat, img, noise == 0 ? ", noise exact" : "");
    dfx_tensor_destroy(got);
    dfx_tensor_destroy(want);
    dfx_safetensors_close(ref);
    if (tr)
        dfx_safetensors_close(tr);
    dfx_safetensors_close(out);
}

START_TEST(free_running)
{
    const run_case *r = &runs[_i];
    char *tmp = test_tmpdir();
    char pipe[4300], out[4300], trace[4300], qp[1100], qn[1100];
    snprintf(pipe, sizeof pipe, "%s/run.yaml", tmp);
    snprintf(out, sizeof out, "%s/out.safetensors", tmp);
    snprintf(trace, sizeof trace, "%s/trace.safetensors", tmp);
    FILE *f = fopen(pipe, "w");
    ck_assert(f != NULL);
    fprintf(f,
            "dfx: 1\npipeline: sample\nseed: %lld\nbatch: 1\nwidth: %lld\nheight: %lld\n"
            "model: {type: sd_unet, path: '%s/%s'}\n"
            "conditioner: {type: clip_text, prompt: %s, negative_prompt: %s}\n"
            "guidance: {type: cfg, scale: %.17g}\ncodec: {type: vae}\n"
            "scheduler: {config: '%s', steps: %lld}\n"
            "init: {noise: '%s#input_latents'}\noutput: {path: '%s'}\n",
            (long long)r->seed, (long long)r->width, (long long)r->height, test_fixtures_dir(), r->model,
            yq(qp, sizeof qp, r->prompt), yq(qn, sizeof qn, r->negative), r->scale, r->scheduler,
            (long long)r->steps, ref_path(r), out);
    ck_assert(fclose(f) == 0);
    const char *none[] = {NULL};
    char *err = NULL;
    int rc = run_dfx(pipe, none, trace, &err);
    ck_assert_msg(rc == 0, "%s/%s: dfx exited %d: %s", r->expected, r->name, rc, err);
    free(err);
    check_run(r, out, trace, "free-running");
    test_rmtree(tmp);
    free(tmp);
}
END_TEST

/* pipelines/sd_txt2img.yaml as shipped, pointed at the tiny model and a
 * recorded run's scheduler: its other settings (clip_text, cfg 7.5, vae)
 * are diffusers' defaults, so it gives the recorded image. Loop 0 reads the
 * diffusers folder, loop 1 the same weights as an original single file
 * (sd_tiny_original, with its ldm yaml and the tiny model's tokenizer). */
START_TEST(txt2img_yaml)
{
    const bool single = _i == 1;
    const run_case *r = NULL;
    for (int i = 0; i < nruns && !r; i++)
        if (strcmp(runs[i].model, "sd_tiny") == 0 && !runs[i].has_negative && runs[i].scale == 7.5)
            r = &runs[i];
    ck_assert_msg(r != NULL, "no sd_tiny run without a negative prompt");
    char *tmp = test_tmpdir();
    char pipe[4300], model[4300], sched[4400], noise[4500], out[4300], prompt[700], steps[64], sampler[128];
    snprintf(pipe, sizeof pipe, "%s/pipelines/sd_txt2img.yaml", source_root);
    snprintf(model, sizeof model, "model.path=%s/%s", test_fixtures_dir(), r->model);
    snprintf(sched, sizeof sched, "scheduler.config=%s", r->scheduler);
    snprintf(noise, sizeof noise, "init.noise=%s#input_latents", ref_path(r));
    snprintf(out, sizeof out, "output.path=%s/out.safetensors", tmp);
    snprintf(prompt, sizeof prompt, "conditioner.prompt=\"%s\"", r->prompt);
    snprintf(steps, sizeof steps, "scheduler.steps=%lld", (long long)r->steps);
    /* the run's sampler: the one its scheduler config implies */
    dfx_json *cfg;
    ck_assert(dfx_json_parse_file(r->scheduler, &cfg) == DFX_OK);
    const char *cls = dfx_json_string(dfx_json_get(cfg, "_class_name"));
    snprintf(sampler, sizeof sampler, "sampler.type=%s",
             strstr(cls, "DDIM") ? "ddim" : strstr(cls, "PNDM") ? "pndm" : strstr(cls, "Ancestral") ? "euler_ancestral"
             : strstr(cls, "Euler") ? "euler" : "dpmpp_2m");
    dfx_json_destroy(cfg);
    char config[4300], tokenizer[4300];
    snprintf(config, sizeof config, "model.config=%s/sd_tiny_original/v1-inference-tiny.yaml", test_fixtures_dir());
    snprintf(tokenizer, sizeof tokenizer, "conditioner.tokenizer=%s/sd_tiny/tokenizer", test_fixtures_dir());
    if (single)
        snprintf(model, sizeof model, "model.path=%s/sd_tiny_original/sd_tiny.safetensors", test_fixtures_dir());
    const char *sets[] = {model, sched, sampler, noise, out, prompt, steps, "width=64", "height=64",
                          single ? config : NULL, tokenizer, NULL};
    char *err = NULL;
    int rc = run_dfx(pipe, sets, NULL, &err);
    ck_assert_msg(rc == 0, "sd_txt2img.yaml: dfx exited %d: %s", rc, err);
    free(err);
    snprintf(out, sizeof out, "%s/out.safetensors", tmp);
    check_run(r, out, NULL, single ? "single file" : "sd_txt2img.yaml");
    test_rmtree(tmp);
    free(tmp);
}
END_TEST

/* pipelines/sd_img2img.yaml against StableDiffusionImg2ImgPipeline: the
 * reference in tests/data/sd_img2img comes from diffusers itself
 * (tools/gen_sd_img2img_ref.py): DDIM, 10 steps, strength 0.6, so the last
 * 6 steps run from the VAE's sample of the input (drawn from the seeded
 * generator, then the noise) — the schedule slice, the encoder and the
 * draw order all show in the numbers. */
START_TEST(img2img_yaml)
{
    const run_case *r = NULL;
    for (int i = 0; i < nruns && !r; i++)
        if (strcmp(runs[i].model, "sd_tiny") == 0 && strstr(runs[i].scheduler, "/ddim/"))
            r = &runs[i];
    ck_assert_msg(r != NULL, "no sd_tiny DDIM run");
    char *tmp = test_tmpdir();
    char pipe[4300], model[4300], sched[4400], init[4400], out[4300], prompt[700], ref[4300];
    snprintf(pipe, sizeof pipe, "%s/pipelines/sd_img2img.yaml", source_root);
    snprintf(model, sizeof model, "model.path=%s/%s", test_fixtures_dir(), r->model);
    snprintf(sched, sizeof sched, "scheduler.config=%s", r->scheduler);
    snprintf(init, sizeof init, "init.image=%s/tests/data/sd_img2img/init.png", source_root);
    snprintf(out, sizeof out, "output.path=%s/out.safetensors", tmp);
    snprintf(prompt, sizeof prompt, "conditioner.prompt=\"%s\"", r->prompt);
    const char *sets[] = {model, sched, "sampler.type=ddim", init, "init.strength=0.6", "scheduler.steps=10", out,
                          prompt, NULL};
    char trace[4300];
    snprintf(trace, sizeof trace, "%s/trace.safetensors", tmp);
    char *err = NULL;
    int rc = run_dfx(pipe, sets, trace, &err);
    ck_assert_msg(rc == 0, "sd_img2img.yaml: dfx exited %d: %s", rc, err);
    free(err);
    snprintf(ref, sizeof ref, "%s/tests/data/sd_img2img/img2img_ddim.safetensors", source_root);
    dfx_safetensors *want_st, *got_st, *tr;
    ck_assert(dfx_safetensors_open(ref, &want_st) == DFX_OK);
    snprintf(out, sizeof out, "%s/out.safetensors", tmp);
    ck_assert(dfx_safetensors_open(out, &got_st) == DFX_OK);
    ck_assert(dfx_safetensors_open(trace, &tr) == DFX_OK);
    dfx_tensor *ts_got, *ts_want;
    ck_assert(dfx_safetensors_read(tr, "timesteps", DFX_DTYPE_F64, &ts_got) == DFX_OK);
    ck_assert(dfx_safetensors_read(want_st, "timesteps", DFX_DTYPE_F64, &ts_want) == DFX_OK);
    ck_assert_int_eq(ts_got->shape[0], ts_want->shape[0]);
    for (int64_t i = 0; i < ts_want->shape[0]; i++)
        ck_assert_double_eq(((double *)ts_got->data)[i], ((double *)ts_want->data)[i]);
    dfx_tensor *steps_got = test_read_f32(tr, "samples"), *steps_want = test_read_f32(want_st, "per_step_latents");
    const double traj = test_max_abs_diff(steps_got->data, steps_want->data, dfx_tensor_numel(steps_want));
    dfx_tensor *got = test_read_f32(got_st, "image"), *want = test_read_f32(want_st, "image_np_nhwc");
    ck_assert(dfx_tensor_same_shape(got, want));
    const double img = test_max_abs_diff(got->data, want->data, dfx_tensor_numel(want));
    ck_assert_msg(traj <= 1e-3 && img <= 1e-3, "img2img: trajectory off by %.3g, image by %.3g", traj, img);
    printf("  img2img        sd_img2img.yaml strength 0.6: %lld steps, trajectory %.2e, image %.2e\n",
           (long long)ts_want->shape[0], traj, img);
    dfx_tensor_destroy(ts_got);
    dfx_tensor_destroy(ts_want);
    dfx_tensor_destroy(steps_got);
    dfx_tensor_destroy(steps_want);
    dfx_tensor_destroy(got);
    dfx_tensor_destroy(want);
    dfx_safetensors_close(want_st);
    dfx_safetensors_close(got_st);
    dfx_safetensors_close(tr);
    test_rmtree(tmp);
    free(tmp);
}
END_TEST

/* The shipped pipelines write PNGs with their settings; img2img keeps the
 * input's size and says its strength. */
START_TEST(png_outputs)
{
    char *tmp = test_tmpdir();
    char pipe[4300], model[4300], out[4300], init[4400], png[4300];
    snprintf(pipe, sizeof pipe, "%s/pipelines/sd_txt2img.yaml", source_root);
    snprintf(model, sizeof model, "model.path=%s/sd_tiny", test_fixtures_dir());
    snprintf(out, sizeof out, "output.path=%s/t2i.png", tmp);
    const char *t2i[] = {model, out, "width=48", "height=32", "scheduler.steps=4", "seed=3",
                         "conditioner.negative_prompt=ugly", NULL};
    char *err = NULL;
    ck_assert_msg(run_dfx(pipe, t2i, NULL, &err) == 0, "%s", err);
    free(err);
    snprintf(png, sizeof png, "%s/t2i.png", tmp);
    dfx__png_image im;
    ck_assert_msg(dfx__png_read(png, &im) == DFX_OK, "%s", dfx_error_message());
    ck_assert_int_eq(im.width, 48);
    ck_assert_int_eq(im.height, 32);
    ck_assert_str_eq(dfx__png_image_text(&im, "parameters"),
                     "a lighthouse at dawn, oil painting\nNegative prompt: ugly\nSteps: 4, Sampler: DPM++ 2M, "
                     "Schedule type: Karras, CFG scale: 7.5, Seed: 3, Size: 48x32, Model: sd_tiny");
    dfx__png_image_fini(&im);

    snprintf(pipe, sizeof pipe, "%s/pipelines/sd_img2img.yaml", source_root);
    snprintf(init, sizeof init, "init.image=%s", png);
    snprintf(out, sizeof out, "output.path=%s/i2i.png", tmp);
    const char *i2i[] = {model, out, init, "scheduler.steps=8", "init.strength=0.5", NULL};
    ck_assert_msg(run_dfx(pipe, i2i, NULL, &err) == 0, "%s", err);
    free(err);
    snprintf(png, sizeof png, "%s/i2i.png", tmp);
    ck_assert_msg(dfx__png_read(png, &im) == DFX_OK, "%s", dfx_error_message());
    ck_assert_int_eq(im.width, 48);
    ck_assert_int_eq(im.height, 32);
    ck_assert_str_eq(dfx__png_image_text(&im, "parameters"),
                     "a watercolor painting\nSteps: 8, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, "
                     "Seed: 0, Size: 48x32, Model: sd_tiny, Denoising strength: 0.5");
    dfx__png_image_fini(&im);
    test_rmtree(tmp);
    free(tmp);
}
END_TEST

/* Bad sizes and a missing checkpoint: a message that says what to do, a
 * non-zero exit and no output. */
START_TEST(bad_input)
{
    static const struct {
        const char *set1, *set2, *want;
    } cases[] = {
        {"width=60", NULL, "width 60 is not a multiple of 8 (the codec's scale factor): use 56 or 64"},
        {"height=4", NULL, "height 4 is not a multiple of 8 (the codec's scale factor): use 8"},
        {"model.path=null", NULL, "no checkpoint: set model.path"},
    };
    char *tmp = test_tmpdir();
    char pipe[4300], model[4300], out[4300], png[4300];
    snprintf(pipe, sizeof pipe, "%s/pipelines/sd_txt2img.yaml", source_root);
    snprintf(model, sizeof model, "model.path=%s/sd_tiny", test_fixtures_dir());
    snprintf(out, sizeof out, "output.path=%s/x.png", tmp);
    snprintf(png, sizeof png, "%s/x.png", tmp);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *sets[] = {model, out, "scheduler.steps=2", cases[i].set1, cases[i].set2, NULL};
        char *err = NULL;
        int rc = run_dfx(pipe, sets, NULL, &err);
        ck_assert_msg(rc != 0 && err && strstr(err, cases[i].want), "%s: exit %d, '%s' does not say '%s'",
                      cases[i].set1, rc, err, cases[i].want);
        ck_assert_msg(access(png, F_OK) != 0, "%s: an output was written", cases[i].set1);
        free(err);
    }
    test_rmtree(tmp);
    free(tmp);
}
END_TEST

/* `dfx tokenize MODEL PROMPT` prints the ids transformers' CLIPTokenizer
 * gives: every tokenizer case through the diffusers folder, one through
 * the tokenizer folder itself, and for a single-file checkpoint OpenAI's
 * vocabulary (ids from CLIP's reference BPE over
 * bpe_simple_vocab_16e6.txt.gz, computed outside dfx). */
static char *tokenize(const char *model, const char *prompt, int *rc)
{
    char *argv[] = {(char *)dfx_exe, "tokenize", (char *)model, (char *)prompt, NULL};
    char *out = NULL, *err = NULL;
    *rc = test_run(argv, &out, &err);
    free(err);
    return out;
}

static void expect_ids_line(const char *out, const dfx_json *ids, const char *what)
{
    char want[4096] = "ids:";
    size_t n = strlen(want);
    for (int64_t i = 0; i < dfx_json_size(ids); i++) {
        int64_t v = 0;
        ck_assert(dfx_json_int(dfx_json_at(ids, i), &v));
        n += (size_t)snprintf(want + n, sizeof want - n, " %lld", (long long)v);
    }
    snprintf(want + n, sizeof want - n, "\n");
    ck_assert_msg(out && strstr(out, want), "%s: '%s' lacks '%s'", what, out, want);
}

START_TEST(tokenize_cli)
{
    dfx_json *cases;
    ck_assert(dfx_json_parse_file(test_fixture("sd_tiny_expected/tokenizer_cases.json"), &cases) == DFX_OK);
    const dfx_json *list = dfx_json_get(cases, "cases");
    char folder[4200], tokdir[4300], file[4300];
    snprintf(folder, sizeof folder, "%s/sd_tiny", test_fixtures_dir());
    snprintf(tokdir, sizeof tokdir, "%s/tokenizer", folder);
    snprintf(file, sizeof file, "%s/sd_tiny_original/sd_tiny.safetensors", test_fixtures_dir());
    int rc;
    for (int64_t i = 0; i < dfx_json_size(list); i++) {
        const dfx_json *c = dfx_json_at(list, i);
        const char *prompt = dfx_json_string(dfx_json_get(c, "prompt"));
        if (!*prompt || prompt[0] == '-')
            continue; /* not expressible as one argument after the model */
        const dfx_json *ids = dfx_json_get(c, "input_ids_untruncated");
        char *out = tokenize(i ? folder : tokdir, prompt, &rc);
        ck_assert_int_eq(rc, 0);
        expect_ids_line(out, ids, prompt);
        char count[128];
        const int64_t used = dfx_json_size(ids) - 2;
        int k = snprintf(count, sizeof count, "tokens: %lld of 75 (+ start and end)", (long long)used);
        if (used > 75)
            snprintf(count + k, sizeof count - (size_t)k, ": the last %lld are dropped", (long long)(used - 75));
        ck_assert_msg(strstr(out, count), "'%s' lacks '%s'", out, count);
        free(out);
    }
    dfx_json_destroy(cases);
    char *out = tokenize(file, "a photo of an astronaut riding a horse on mars", &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(strstr(out, "ids: 49406 320 1125 539 550 18376 6765 320 4558 525 7496 49407\n"));
    free(out);
    out = tokenize(file, "a lighthouse at dawn, oil painting", &rc);
    ck_assert_ptr_nonnull(strstr(out, "ids: 49406 320 13717 536 7689 267 2870 3086 49407\n"));
    free(out);
    char *argv[] = {(char *)dfx_exe, "tokenize", "/nonexistent/model", "a", NULL};
    char *err = NULL;
    ck_assert_int_ne(test_run(argv, NULL, &err), 0);
    ck_assert_msg(err && strstr(err, "/nonexistent/model"), "%s", err);
    free(err);
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
    test_require_fixtures("Stable Diffusion pipeline parity");
    if (dfx_registry_create(&reg, NULL, 0) != DFX_OK)
        return EXIT_FAILURE;
    char tmpl[] = "/tmp/dfx-sd-XXXXXX";
    need(mkdtemp(tmpl) != NULL, "mkdtemp: %s", strerror(errno));
    tmp_root = strdup(tmpl);
    collect_runs();
    if (!nruns) {
        fprintf(stderr, "no Stable Diffusion pipeline run in this copy of the fixtures\n");
        return EXIT_FAILURE;
    }
    Suite *s = suite_create("sd pipeline parity");
    TCase *tc = tcase_create("sd");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, teacher_forced, 0, nruns);
    tcase_add_loop_test(tc, free_running, 0, nruns);
    tcase_add_loop_test(tc, txt2img_yaml, 0, 2);
    tcase_add_test(tc, img2img_yaml);
    tcase_add_test(tc, png_outputs);
    tcase_add_test(tc, bad_input);
    tcase_add_test(tc, tokenize_cli);
    suite_add_tcase(s, tc);
    int rc = test_run_suite(s);
    char rm[4200];
    snprintf(rm, sizeof rm, "rm -rf '%s'", tmp_root);
    need(system(rm) == 0, "%s failed", rm);
    free(tmp_root);
    dfx_registry_destroy(reg);
    return rc;
}
