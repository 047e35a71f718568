/* fixtures sd_tiny / sd2_tiny: transformers' CLIPTextModel and the clip_text
 * conditioner (fixtures/README.md section 5, README_sd2.md section 8).
 *  - encoder: the recorded ids fed straight to the encoder give
 *    last_hidden_state, pooler_output (first-eos and legacy argmax pooling),
 *    every hidden state before the final norm and clip_skip = 1 (SD 1.x,
 *    quick_gelu), and the SD 2.x encoder (gelu, ids padded with "!" = 0
 *    and with eos);
 *  - conditioner: the SD prompt with and without a negative prompt through
 *    the pipeline folders gives the pipelines' prompt_embeds and
 *    negative_prompt_embeds, repeated over the batch; clip_skip; a text
 *    encoder folder with its tokenizer named; an over-long prompt is
 *    truncated with a warning;
 *  - errors: no path, a missing or extra tensor, a tokenizer of another
 *    vocabulary, clip_skip beyond the layers, config fields dfx cannot
 *    honour; the position_ids buffer of older files is accepted.
 * Tolerance: 1e-5 absolute (the float32-vs-float64 error of the reference
 * is 1.4e-6).
 *
 * usage: test_parity_clip_text */
#include <sys/stat.h>

#include "plugins/clip_text/clip_encoder.h"
#include "testutil.h"

#define TOL 1e-5

static const char *const sd_prompt = "a photo of an astronaut riding a horse on mars";

static dfx_registry *reg;

static dfx_tensor *read_ref(const char *rel, const char *name, dfx_dtype dtype)
{
    dfx_safetensors *st;
    dfx_tensor *t;
    ck_assert_msg(dfx_safetensors_open(test_fixture(rel), &st) == DFX_OK, "%s", dfx_error_message());
    ck_assert_msg(dfx_safetensors_read(st, name, dtype, &t) == DFX_OK, "%s", dfx_error_message());
    dfx_safetensors_close(st);
    return t;
}

static void check(const char *what, const float *got, const float *want, int64_t n)
{
    double e = test_max_abs_diff(got, want, n);
    fprintf(stderr, "%-70s max abs err %.3g (max |ref| %.3g)\n", what, e, test_max_abs(want, n));
    ck_assert_msg(e <= TOL, "%s: max abs error %g > %g", what, e, TOL);
}

/* ---- the encoder on recorded ids -------------------------------------- */

static void open_encoder(clip_encoder *e, const char *model)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/%s", test_fixtures_dir(), model);
    ck_assert_msg(clip_encoder_open(e, dir, NULL, false) == DFX_OK, "%s", dfx_error_message());
}

/* states of the first n sequences of ids after `layers` layers */
static float *run(clip_encoder *e, const dfx_tensor *ids, int64_t n, int64_t layers, bool final_norm)
{
    const int64_t len = ids->shape[1];
    float *out = malloc((size_t)(n * len * e->cfg.hidden) * sizeof(float));
    ck_assert(out != NULL);
    ck_assert_msg(clip_encoder_forward(e, ids->data, n, len, layers, final_norm, out) == DFX_OK, "%s",
                  dfx_error_message());
    return out;
}

static void check_against(const char *rel, const char *name, const float *got, int64_t n_items)
{
    dfx_tensor *want = read_ref(rel, name, DFX_DTYPE_F32);
    ck_assert_int_eq(want->shape[0], n_items);
    char what[256];
    snprintf(what, sizeof what, "%s %s", rel, name);
    check(what, got, want->data, dfx_tensor_numel(want));
    dfx_tensor_destroy(want);
}

START_TEST(encoder_sd1)
{
    static const char *const ref = "sd_tiny_expected/text_encoder.safetensors";
    clip_encoder e;
    open_encoder(&e, "sd_tiny");
    ck_assert_int_eq(e.cfg.hidden, 32);
    ck_assert_int_eq(e.cfg.layers, 2);
    ck_assert_int_eq(e.cfg.act, CLIP_ACT_QUICK_GELU);
    dfx_tensor *ids = read_ref(ref, "input_ids", DFX_DTYPE_I64);
    const int64_t n = ids->shape[0], len = ids->shape[1];
    ck_assert_int_eq(n, 23);
    ck_assert_int_eq(len, 77);

    float *last = run(&e, ids, n, e.cfg.layers, true);
    check_against(ref, "last_hidden_state", last, n);
    float *pooled = malloc((size_t)(n * e.cfg.hidden) * sizeof(float));
    clip_encoder_pool(&e, ids->data, n, len, last, pooled);
    check_against(ref, "pooler_output", pooled, n);
    free(pooled);
    free(last);

    for (int64_t k = 0; k <= e.cfg.layers; k++) {
        char name[64];
        snprintf(name, sizeof name, "hidden_states_%lld_first4", (long long)k);
        float *h = run(&e, ids, 4, k, false);
        check_against(ref, name, h, 4);
        if (k == 0)
            check_against(ref, "embeddings_first4", h, 4);
        free(h);
    }
    float *skip = run(&e, ids, 4, e.cfg.layers - 1, true);
    check_against(ref, "clip_skip1_embeds_first4", skip, 4);
    free(skip);
    dfx_tensor_destroy(ids);
    clip_encoder_close(&e);
}
END_TEST

START_TEST(encoder_sd2)
{
    static const char *const ref = "sd2_tiny_expected/text_encoder.safetensors";
    clip_encoder e;
    open_encoder(&e, "sd2_tiny");
    ck_assert_int_eq(e.cfg.act, CLIP_ACT_GELU);
    ck_assert_int_eq(e.cfg.eos_id, 2);
    dfx_tensor *ids = read_ref(ref, "input_ids", DFX_DTYPE_I64);
    const int64_t n = ids->shape[0], len = ids->shape[1];
    ck_assert_int_eq(n, 8);
    /* padded with "!" (id 0) */
    ck_assert_int_eq(((const int64_t *)ids->data)[len - 1], 0);

    float *last = run(&e, ids, n, e.cfg.layers, true);
    check_against(ref, "last_hidden_state", last, n);
    float *pooled = malloc((size_t)(n * e.cfg.hidden) * sizeof(float));
    clip_encoder_pool(&e, ids->data, n, len, last, pooled);
    check_against(ref, "pooler_output", pooled, n);
    free(pooled);
    free(last);
    for (int64_t k = 0; k < e.cfg.layers; k++) {
        char name[64];
        snprintf(name, sizeof name, "hidden_states_%lld_first2", (long long)k);
        float *h = run(&e, ids, 2, k, false);
        check_against(ref, name, h, 2);
        free(h);
    }
    dfx_tensor *ids1 = read_ref(ref, "input_ids_sd1_padded_first2", DFX_DTYPE_I64);
    float *h1 = run(&e, ids1, 2, e.cfg.layers, true);
    check_against(ref, "last_hidden_state_of_sd1_padded_ids_first2", h1, 2);
    free(h1);
    dfx_tensor_destroy(ids1);
    dfx_tensor_destroy(ids);
    clip_encoder_close(&e);
}
END_TEST

/* ---- the conditioner -------------------------------------------------- */

static const char *last_warning;
static int warnings;

static void on_warning(const char *message, void *user)
{
    (void)user;
    free((void *)last_warning);
    last_warning = strdup(message);
    warnings++;
}

/* s as a YAML double-quoted scalar */
static void yaml_quote(char *dst, size_t cap, const char *s)
{
    size_t n = 0;
    dst[n++] = '"';
    for (; *s; s++) {
        ck_assert(n + 8 < cap);
        const unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            dst[n++] = '\\';
            dst[n++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            n += (size_t)snprintf(dst + n, cap - n, "\\x%02x", ch);
        } else {
            dst[n++] = (char)ch;
        }
    }
    dst[n++] = '"';
    dst[n] = '\0';
}

/* "{type: clip_text, path: DIR, prompt: ..., ...}" from the fields given
 * (NULL: left out; path relative to the fixtures) */
static dfx_status try_open(dfx_instance **out, const char *path, const char *tokenizer, const char *prompt,
                           const char *negative, const char *extra)
{
    static char yaml[16384];
    char q[4096];
    int n = snprintf(yaml, sizeof yaml, "{type: clip_text");
    if (path)
        n += snprintf(yaml + n, sizeof yaml - (size_t)n, ", path: '%s/%s'", test_fixtures_dir(), path);
    if (tokenizer)
        n += snprintf(yaml + n, sizeof yaml - (size_t)n, ", tokenizer: '%s/%s'", test_fixtures_dir(), tokenizer);
    if (prompt) {
        yaml_quote(q, sizeof q, prompt);
        n += snprintf(yaml + n, sizeof yaml - (size_t)n, ", prompt: %s", q);
    }
    if (negative) {
        yaml_quote(q, sizeof q, negative);
        n += snprintf(yaml + n, sizeof yaml - (size_t)n, ", negative_prompt: %s", q);
    }
    if (extra)
        n += snprintf(yaml + n, sizeof yaml - (size_t)n, ", %s", extra);
    snprintf(yaml + n, sizeof yaml - (size_t)n, "}");
    return dfx_instance_create(out, reg, DFX_KIND_CONDITIONER, yaml, "test");
}

static dfx_instance *open_cond(const char *path, const char *tokenizer, const char *prompt, const char *negative,
                               const char *extra)
{
    dfx_instance *c;
    ck_assert_msg(try_open(&c, path, tokenizer, prompt, negative, extra) == DFX_OK, "%s", dfx_error_message());
    return c;
}

static void encode(dfx_instance *c, int64_t batch, bool uncond, dfx_conditioning *out)
{
    const dfx_conditioner_ops *ops = dfx_instance_component(c)->ops;
    memset(out, 0, sizeof *out);
    ck_assert_msg(ops->encode(dfx_instance_priv(c), batch, uncond, out) == DFX_OK, "%s", dfx_error_message());
    ck_assert(out->context && out->pooled);
    ck_assert_int_eq(out->context->ndim, 3);
    ck_assert_int_eq(out->context->shape[0], batch);
    ck_assert(uncond ? out->uncond_context && out->uncond_pooled : !out->uncond_context && !out->uncond_pooled);
}

/* every item of ctx [batch, tokens, dim] against want [1, tokens, dim] */
static void check_items(const char *what, const dfx_tensor *ctx, const dfx_tensor *want)
{
    const int64_t per = dfx_tensor_numel(want);
    ck_assert_int_eq(dfx_tensor_numel(ctx), ctx->shape[0] * per);
    for (int64_t b = 0; b < ctx->shape[0]; b++) {
        char name[256];
        snprintf(name, sizeof name, "%s [%lld]", what, (long long)b);
        check(name, (const float *)ctx->data + b * per, want->data, per);
    }
}

/* pooled [batch, dim] is the context's row at position `at` */
static void check_pooled(const dfx_tensor *ctx, const dfx_tensor *pooled, int64_t at)
{
    const int64_t tokens = ctx->shape[1], dim = ctx->shape[2];
    ck_assert_int_eq(pooled->shape[1], dim);
    for (int64_t b = 0; b < ctx->shape[0]; b++)
        ck_assert(memcmp((const float *)pooled->data + b * dim, (const float *)ctx->data + (b * tokens + at) * dim,
                         (size_t)dim * sizeof(float)) == 0);
}

static const struct {
    const char *model, *ref, *negative;
} runs[] = {
    {"sd_tiny", "sd_tiny_expected/pipeline_ddim.safetensors", NULL},
    {"sd_tiny", "sd_tiny_expected/pipeline_ddim_negprompt.safetensors", "blurry, low quality"},
    {"sd2_tiny", "sd2_tiny_expected/pipeline_ddim_vpred_negprompt.safetensors", "blurry, low quality"},
};

START_TEST(pipeline_prompts)
{
    if (access(test_fixture(runs[_i].ref), R_OK) != 0) {
        fprintf(stderr, "NOTE: %s is not in this copy of the fixtures (held back): not compared\n",
                runs[_i].ref);
        return;
    }
    dfx_instance *c = open_cond(runs[_i].model, NULL, sd_prompt, runs[_i].negative, NULL);
    const dfx_conditioner_ops *ops = dfx_instance_component(c)->ops;
    dfx_conditioner_info info = {NULL, NULL};
    ops->info(dfx_instance_priv(c), &info);
    ck_assert_str_eq(info.prompt, sd_prompt);
    ck_assert_str_eq(info.negative_prompt, runs[_i].negative ? runs[_i].negative : "");
    dfx_tensor *pe = read_ref(runs[_i].ref, "prompt_embeds", DFX_DTYPE_F32);
    dfx_tensor *ne = read_ref(runs[_i].ref, "negative_prompt_embeds", DFX_DTYPE_F32);
    char what[256];
    for (int64_t batch = 1; batch <= 2; batch++) {
        dfx_conditioning out;
        encode(c, batch, true, &out);
        snprintf(what, sizeof what, "%s prompt_embeds", runs[_i].ref);
        check_items(what, out.context, pe);
        snprintf(what, sizeof what, "%s negative_prompt_embeds", runs[_i].ref);
        check_items(what, out.uncond_context, ne);
        /* 11 prompt tokens after the start token: the end token at 12 */
        check_pooled(out.context, out.pooled, 12);
        dfx_conditioning_fini(&out);
    }
    dfx_conditioning out;
    encode(c, 3, false, &out);
    snprintf(what, sizeof what, "%s prompt_embeds, no guidance", runs[_i].ref);
    check_items(what, out.context, pe);
    dfx_conditioning_fini(&out);
    dfx_tensor_destroy(pe);
    dfx_tensor_destroy(ne);
    dfx_instance_destroy(c);
}
END_TEST

/* clip_skip 1 conditions the prompt on the penultimate layer; diffusers
 * encodes the negative prompt from the last one */
START_TEST(clip_skip)
{
    static const char *const ref = "sd_tiny_expected/text_encoder.safetensors";
    dfx_instance *c = open_cond("sd_tiny", NULL, sd_prompt, "", "clip_skip: 1");
    dfx_conditioning out;
    encode(c, 1, true, &out);
    dfx_tensor *skip = read_ref(ref, "clip_skip1_embeds_first4", DFX_DTYPE_F32);
    dfx_tensor *last = read_ref(ref, "last_hidden_state", DFX_DTYPE_F32);
    const int64_t per = skip->shape[1] * skip->shape[2];
    /* case 0 is the SD prompt, case 1 the empty one */
    check("clip_skip 1: prompt", out.context->data, skip->data, per);
    check("clip_skip 1: negative prompt, not skipped", out.uncond_context->data, (const float *)last->data + per,
          per);
    dfx_conditioning_fini(&out);
    dfx_tensor_destroy(skip);
    dfx_tensor_destroy(last);
    dfx_instance_destroy(c);

    dfx_instance *bad;
    ck_assert(try_open(&bad, "sd_tiny", NULL, sd_prompt, NULL, "clip_skip: 3") != DFX_OK);
    ck_assert_msg(strstr(dfx_error_message(), "clip_skip: 3, but the text encoder has 2 layers"), "%s",
                  dfx_error_message());
}
END_TEST

/* a text_encoder folder: the tokenizer is named, or OpenAI's (of another
 * vocabulary than the tiny encoder's) is refused */
START_TEST(component_folder)
{
    dfx_instance *c = open_cond("sd_tiny/text_encoder", "sd_tiny/tokenizer", sd_prompt, NULL, NULL);
    dfx_conditioning out;
    encode(c, 1, true, &out);
    dfx_tensor *pe = read_ref("sd_tiny_expected/pipeline_ddim.safetensors", "prompt_embeds", DFX_DTYPE_F32);
    check_items("text_encoder folder + tokenizer: prompt_embeds", out.context, pe);
    dfx_tensor_destroy(pe);
    dfx_conditioning_fini(&out);
    dfx_instance_destroy(c);

    dfx_instance *bad;
    ck_assert(try_open(&bad, "sd_tiny/text_encoder", NULL, sd_prompt, NULL, NULL) == DFX_ERR_FORMAT);
    const char *msg = dfx_error_message();
    ck_assert_msg(strstr(msg, "49408") && strstr(msg, "1114") && strstr(msg, "conditioner.tokenizer=FOLDER"), "%s",
                  msg);
}
END_TEST

/* the fixture's 143-token prompt: truncated as diffusers does, with one
 * warning that counts the dropped tokens */
START_TEST(truncation)
{
    static const char *const ref = "sd_tiny_expected/text_encoder.safetensors";
    dfx_json *cases;
    ck_assert(dfx_json_parse_file(test_fixture("sd_tiny_expected/tokenizer_cases.json"), &cases) == DFX_OK);
    const dfx_json *list = dfx_json_get(cases, "cases");
    int64_t idx = -1, tokens = 0;
    for (int64_t i = 0; i < dfx_json_size(list) && idx < 0; i++) {
        int64_t n = dfx_json_size(dfx_json_get(dfx_json_at(list, i), "input_ids_untruncated"));
        if (n > 77)
            idx = i, tokens = n - 2;
    }
    ck_assert_msg(idx >= 0, "no over-long prompt among the tokenizer cases");
    const dfx_json *want_ids = dfx_json_get(dfx_json_at(list, idx), "input_ids_padded77");
    const char *prompt = dfx_json_string(dfx_json_get(dfx_json_at(list, idx), "prompt"));
    /* the encoder's rows are every case the fixture was made with, some of
     * them held back from this copy: find the case's row by its ids */
    dfx_tensor *ids = read_ref(ref, "input_ids", DFX_DTYPE_I64);
    int64_t row = -1;
    for (int64_t r = 0; r < ids->shape[0] && row < 0; r++) {
        const int64_t *have = (const int64_t *)ids->data + r * ids->shape[1];
        int64_t j = 0, v = 0;
        while (j < ids->shape[1] && dfx_json_int(dfx_json_at(want_ids, j), &v) && v == have[j])
            j++;
        if (j == ids->shape[1])
            row = r;
    }
    dfx_tensor_destroy(ids);
    ck_assert_msg(row >= 0, "the over-long prompt's ids are not among the encoder's inputs");
    dfx_set_warning_handler(on_warning, NULL);
    warnings = 0;
    dfx_instance *c = open_cond("sd_tiny", NULL, prompt, NULL, NULL);
    ck_assert_int_eq(warnings, 1);
    char want[256];
    snprintf(want, sizeof want,
             "conditioner.prompt: %lld tokens, the text encoder reads 75 (+ start and end): the last %lld are dropped",
             (long long)tokens, (long long)(tokens - 75));
    ck_assert_str_eq(last_warning, want);
    dfx_conditioning out;
    encode(c, 1, false, &out);
    dfx_tensor *last = read_ref(ref, "last_hidden_state", DFX_DTYPE_F32);
    const int64_t per = last->shape[1] * last->shape[2];
    check("over-long prompt: truncated", out.context->data, (const float *)last->data + row * per, per);
    dfx_conditioning_fini(&out);
    dfx_tensor_destroy(last);
    dfx_instance_destroy(c);
    /* a prompt that fits: no warning */
    c = open_cond("sd_tiny", NULL, sd_prompt, NULL, NULL);
    ck_assert_int_eq(warnings, 1);
    dfx_instance_destroy(c);
    dfx_set_warning_handler(NULL, NULL);
    free((void *)last_warning);
    last_warning = NULL;
    dfx_json_destroy(cases);
}
END_TEST

/* ---- broken text encoder folders -------------------------------------- */

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s", path);
    fseek(f, 0, SEEK_END);
    size_t len = (size_t)ftell(f);
    rewind(f);
    char *text = malloc(len + 1);
    ck_assert_uint_eq(fread(text, 1, len, f), len);
    fclose(f);
    text[len] = '\0';
    return text;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert(f != NULL);
    fputs(text, f);
    fclose(f);
}

/* dir/config.json (sd_tiny's with `replace` substituted for `find`, when
 * given) and dir/model.safetensors (sd_tiny's without `drop`, plus an
 * `extra` tensor: I64 [1, 77] position ids, or an F32 [4]) */
static void make_folder(const char *dir, const char *find, const char *replace, const char *drop, const char *extra)
{
    char path[4300];
    char *config = read_text(test_fixture("sd_tiny/text_encoder/config.json"));
    if (find) {
        char *at = strstr(config, find);
        ck_assert(at != NULL);
        size_t n = strlen(config) + strlen(replace) + 1;
        char *out = malloc(n);
        snprintf(out, n, "%.*s%s%s", (int)(at - config), config, replace, at + strlen(find));
        free(config);
        config = out;
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_text(path, config);
    free(config);

    dfx_safetensors *st;
    ck_assert(dfx_safetensors_open(test_fixture("sd_tiny/text_encoder/model.safetensors"), &st) == DFX_OK);
    const int64_t n = dfx_safetensors_count(st);
    const char **names = calloc((size_t)n + 1, sizeof *names);
    dfx_tensor **ts = calloc((size_t)n + 1, sizeof *ts);
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        const char *name = dfx_safetensors_name(st, i);
        if (drop && strcmp(name, drop) == 0)
            continue;
        ck_assert(dfx_safetensors_read(st, name, DFX_DTYPE_F32, &ts[k]) == DFX_OK);
        names[k++] = name;
    }
    if (extra) {
        const bool pos = strstr(extra, "position_ids") != NULL;
        const int64_t shape[2] = {1, pos ? 77 : 4};
        ck_assert(dfx_tensor_create(&ts[k], pos ? DFX_DTYPE_I64 : DFX_DTYPE_F32, 2, shape) == DFX_OK);
        if (pos)
            for (int64_t i = 0; i < 77; i++)
                ((int64_t *)ts[k]->data)[i] = i;
        names[k++] = extra;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ck_assert_msg(dfx_safetensors_write(path, k, names, (const dfx_tensor *const *)ts, 0, NULL, NULL) == DFX_OK,
                  "%s", dfx_error_message());
    for (int64_t i = 0; i < k; i++)
        dfx_tensor_destroy(ts[i]);
    free(names);
    free(ts);
    dfx_safetensors_close(st);
}

static dfx_status open_folder(const char *dir, dfx_instance **out)
{
    char yaml[9000];
    snprintf(yaml, sizeof yaml, "{type: clip_text, path: '%s', tokenizer: '%s/sd_tiny/tokenizer', prompt: 'a photo'}",
             dir, test_fixtures_dir());
    return dfx_instance_create(out, reg, DFX_KIND_CONDITIONER, yaml, "test");
}

static const struct {
    const char *find, *replace, *drop, *extra;
    dfx_status status;
    const char *expect;
} broken[] = {
    {NULL, NULL, "text_model.encoder.layers.1.mlp.fc2.bias", NULL, DFX_ERR_NOT_FOUND,
     "tensor 'text_model.encoder.layers.1.mlp.fc2.bias' is missing"},
    {NULL, NULL, NULL, "text_projection.weight", DFX_ERR_FORMAT, "'text_projection.weight'"},
    {"\"vocab_size\": 1114", "\"vocab_size\": 1000", NULL, NULL, DFX_ERR_FORMAT,
     "tensor 'text_model.embeddings.token_embedding.weight' has shape [1114,32] but the model expects [1000,32]"},
    {"\"hidden_act\": \"quick_gelu\"", "\"hidden_act\": \"relu\"", NULL, NULL, DFX_ERR_UNSUPPORTED,
     "field 'hidden_act': 'relu' is not supported by dfx's clip_text"},
    {"\"vocab_size\"", "\"use_attention_mask\": true, \"vocab_size\"", NULL, NULL, DFX_ERR_UNSUPPORTED,
     "field 'use_attention_mask'"},
    {"\"vocab_size\"", "\"rope_theta\": 10000, \"vocab_size\"", NULL, NULL, DFX_ERR_UNSUPPORTED,
     "field 'rope_theta': unknown to dfx's clip_text"},
    {"\"CLIPTextModel\"", "\"CLIPTextModelWithProjection\"", NULL, NULL, DFX_ERR_UNSUPPORTED,
     "field 'architectures'"},
    /* accepted: the buffer is dropped as transformers 4.38 drops it */
    {NULL, NULL, NULL, "text_model.embeddings.position_ids", DFX_OK, NULL},
};

START_TEST(broken_folder)
{
    char *dir = test_tmpdir();
    make_folder(dir, broken[_i].find, broken[_i].replace, broken[_i].drop, broken[_i].extra);
    dfx_instance *c = NULL;
    dfx_status st = open_folder(dir, &c);
    const char *msg = dfx_error_message();
    ck_assert_msg(st == broken[_i].status, "status %d, expected %d: %s", st, broken[_i].status, msg);
    if (broken[_i].expect)
        ck_assert_msg(strstr(msg, broken[_i].expect), "'%s' does not say '%s'", msg, broken[_i].expect);
    if (st == DFX_OK) {
        dfx_conditioning out;
        encode(c, 1, false, &out);
        ck_assert(dfx_ops_all_finite(out.context->data, dfx_tensor_numel(out.context)));
        dfx_conditioning_fini(&out);
        dfx_instance_destroy(c);
    }
    test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(no_path)
{
    dfx_instance *c;
    ck_assert(try_open(&c, NULL, NULL, sd_prompt, NULL, NULL) == DFX_ERR_CONFIG);
    ck_assert_msg(strstr(dfx_error_message(), "conditioner.path") && strstr(dfx_error_message(), "model.path"), "%s",
                  dfx_error_message());
}
END_TEST

int main(void)
{
    test_require_fixtures("clip_text parity");
    if (dfx_registry_create(&reg, NULL, 0) != DFX_OK)
        return EXIT_FAILURE;
    Suite *s = suite_create("clip_text parity");
    TCase *tc = tcase_create("clip_text");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, encoder_sd1);
    tcase_add_test(tc, encoder_sd2);
    tcase_add_loop_test(tc, pipeline_prompts, 0, (int)(sizeof runs / sizeof *runs));
    tcase_add_test(tc, clip_skip);
    tcase_add_test(tc, component_folder);
    tcase_add_test(tc, truncation);
    tcase_add_loop_test(tc, broken_folder, 0, (int)(sizeof broken / sizeof *broken));
    tcase_add_test(tc, no_path);
    suite_add_tcase(s, tc);
    int rc = test_run_suite(s);
    dfx_registry_destroy(reg);
    return rc;
}
