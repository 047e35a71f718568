/* Original single-file Stable Diffusion checkpoints through the sd_unet,
 * vae and clip_text plugins (fixtures README section 6, README_sd2
 * sections 8-9), atol 1e-4 as for the diffusers folders:
 *  - SD 1.x: fixtures/sd_tiny_original/sd_tiny.safetensors with its ldm
 *    yaml gives sd_tiny_expected's UNet outputs, VAE decode and encode and
 *    the text encoder's states of a prompt and "", each bit for bit what
 *    the diffusers folder gives;
 *  - SD 2.x: a Stability-layout file written here from sd2_tiny's diffusers
 *    weights, all F16 (lossless: the weights are F16 values), with the
 *    OpenCLIP text tower (fused q,k,v, one extra resblock that must be left
 *    out, text_projection and logit_scale) and linear UNet projections,
 *    its ldm yaml as STEM.yaml beside it: sd2_tiny_expected's v-prediction
 *    outputs, decode and text states;
 *  - bad input: a missing tensor (named as the file spells it), a misshapen
 *    one, one that has no place in the layout, an unused alias.
 *
 * usage: test_single_file */
#include "testutil.h"

#define ATOL 1e-4
#define SD1_FILE "sd_tiny_original/sd_tiny.safetensors"
#define SD1_YAML "sd_tiny_original/v1-inference-tiny.yaml"

static dfx_registry *reg;

static char *fixture_dup(const char *rel)
{
    return strdup(test_fixture(rel));
}

static dfx_instance *try_open(dfx_kind kind, const char *type, const char *opts, dfx_status *status)
{
    char yaml[8300];
    snprintf(yaml, sizeof yaml, "{type: %s, %s}", type, opts);
    dfx_instance *m = NULL;
    *status = dfx_instance_create(&m, reg, kind, yaml, "test");
    return m;
}

static dfx_instance *open_ok(dfx_kind kind, const char *type, const char *opts)
{
    dfx_status st;
    dfx_instance *m = try_open(kind, type, opts, &st);
    ck_assert_msg(st == DFX_OK, "%s: %s", opts, dfx_error_message());
    return m;
}

static void expect_error(dfx_kind kind, const char *type, const char *opts, const char *sub)
{
    dfx_status st;
    dfx_instance *m = try_open(kind, type, opts, &st);
    ck_assert_msg(st != DFX_OK && !m, "%s: opened", opts);
    ck_assert_msg(strstr(dfx_error_message(), sub), "%s: expected '%s' in: %s", opts, sub, dfx_error_message());
    printf("  error: %s\n", dfx_error_message());
}

static dfx_tensor *new_tensor(int ndim, const int64_t *shape)
{
    dfx_tensor *t;
    ck_assert(dfx_tensor_create(&t, DFX_DTYPE_F32, ndim, shape) == DFX_OK);
    memset(t->data, 0, dfx_tensor_nbytes(t));
    return t;
}

static void check(const char *what, const float *got, const float *want, int64_t n)
{
    const double e = test_max_abs_diff(got, want, n), ref = test_max_abs(want, n);
    ck_assert_msg(e <= ATOL * (ref > 1 ? ref : 1), "%s: max abs error %.3g (max|ref| %.3g)", what, e, ref);
    printf("  %-56s max abs error %.2e (max|ref| %.2f)\n", what, e, ref);
}

/* ---- the three components ------------------------------------------- */

/* out_t1, out_t500, out_t999 of the model at `opts`, back to back; checked
 * against expected/unet.safetensors. */
static float *unet_outputs(const char *opts, const char *expected, dfx_prediction prediction)
{
    char rel[256], what[300];
    snprintf(rel, sizeof rel, "%s/unet.safetensors", expected);
    dfx_safetensors *ref = test_open_fixture(rel);
    dfx_tensor *x = test_read_f32(ref, "input_sample"), *ctx = test_read_f32(ref, "input_encoder_hidden_states");
    dfx_instance *m = open_ok(DFX_KIND_MODEL, "sd_unet", opts);
    const dfx_model_ops *ops = dfx_instance_component(m)->ops;
    dfx_model_info info;
    ops->info(dfx_instance_priv(m), &info);
    ck_assert_int_eq(info.context_dim, 32);
    ck_assert_int_eq(info.prediction, prediction);
    const int64_t n = dfx_tensor_numel(x);
    float *all = malloc((size_t)(3 * n) * sizeof *all);
    static const int ts[3] = {1, 500, 999};
    for (int i = 0; i < 3; i++) {
        const double t[2] = {ts[i], ts[i]}, sigma[2] = {0, 0};
        dfx_cond cond = {ctx, NULL, NULL};
        dfx_model_input in = {x, t, sigma, &cond};
        dfx_tensor *out = new_tensor(4, x->shape);
        ck_assert_msg(ops->predict(dfx_instance_priv(m), &in, out) == DFX_OK, "%s", dfx_error_message());
        char name[32];
        snprintf(name, sizeof name, "out_t%d", ts[i]);
        dfx_tensor *want = test_read_f32(ref, name);
        snprintf(what, sizeof what, "%s unet %s", expected, name);
        check(what, out->data, want->data, n);
        memcpy(all + i * n, out->data, (size_t)n * sizeof *all);
        dfx_tensor_destroy(want);
        dfx_tensor_destroy(out);
    }
    dfx_instance_destroy(m);
    dfx_tensor_destroy(x);
    dfx_tensor_destroy(ctx);
    dfx_safetensors_close(ref);
    return all;
}

/* decode(input_latents) (= vae.decode(z / 0.18215)), then with `encode`
 * the mean of encode(input_image) times 0.18215; back to back. */
static float *vae_outputs(const char *opts, const char *expected, bool encode)
{
    char rel[256], what[300];
    snprintf(rel, sizeof rel, "%s/vae.safetensors", expected);
    dfx_safetensors *ref = test_open_fixture(rel);
    dfx_instance *v = open_ok(DFX_KIND_CODEC, "vae", opts);
    const dfx_codec_ops *ops = dfx_instance_component(v)->ops;
    dfx_tensor *z = test_read_f32(ref, "input_latents"), *want = test_read_f32(ref, "decode_of_latents_div_scaling");
    dfx_tensor *img = new_tensor(4, want->shape);
    ck_assert_msg(ops->decode(dfx_instance_priv(v), z, img) == DFX_OK, "%s", dfx_error_message());
    snprintf(what, sizeof what, "%s vae decode", expected);
    check(what, img->data, want->data, dfx_tensor_numel(want));
    const int64_t nd = dfx_tensor_numel(img), ne = encode ? dfx_tensor_numel(z) : 0;
    float *all = malloc((size_t)(nd + ne) * sizeof *all);
    memcpy(all, img->data, (size_t)nd * sizeof *all);
    if (encode) {
        dfx_tensor *x = test_read_f32(ref, "input_image"), *mean = test_read_f32(ref, "encode_mean");
        dfx_tensor *lat = new_tensor(4, z->shape);
        ck_assert_msg(ops->encode(dfx_instance_priv(v), x, NULL, lat) == DFX_OK, "%s", dfx_error_message());
        float *m = mean->data;
        for (int64_t i = 0; i < ne; i++)
            m[i] *= 0.18215f;
        snprintf(what, sizeof what, "%s vae encode mean * 0.18215", expected);
        check(what, lat->data, m, ne);
        memcpy(all + nd, lat->data, (size_t)ne * sizeof *all);
        dfx_tensor_destroy(x);
        dfx_tensor_destroy(mean);
        dfx_tensor_destroy(lat);
    }
    dfx_tensor_destroy(z);
    dfx_tensor_destroy(want);
    dfx_tensor_destroy(img);
    dfx_instance_destroy(v);
    dfx_safetensors_close(ref);
    return all;
}

/* The states of the first prompt of expected/tokenizer_cases.json and of
 * "" (rows 0 and 1 of expected/text_encoder.safetensors), back to back. */
static float *text_outputs(const char *opts, const char *expected, const char *tokenizer)
{
    char rel[256], what[300], all_opts[8192];
    snprintf(rel, sizeof rel, "%s/tokenizer_cases.json", expected);
    dfx_json *cases;
    ck_assert_msg(dfx_json_parse_file(test_fixture(rel), &cases) == DFX_OK, "%s", dfx_error_message());
    const dfx_json *c0 = dfx_json_at(dfx_json_get(cases, "cases"), 0);
    const char *prompt = dfx_json_string(dfx_json_get(c0, "prompt"));
    ck_assert_ptr_nonnull(prompt);
    ck_assert_str_eq(dfx_json_string(dfx_json_get(dfx_json_at(dfx_json_get(cases, "cases"), 1), "prompt")), "");
    snprintf(all_opts, sizeof all_opts, "%s, tokenizer: '%s', prompt: '%s', negative_prompt: ''", opts,
             test_fixture(tokenizer), prompt);
    dfx_json_destroy(cases);
    dfx_instance *c = open_ok(DFX_KIND_CONDITIONER, "clip_text", all_opts);
    const dfx_conditioner_ops *ops = dfx_instance_component(c)->ops;
    dfx_conditioning out = {0};
    ck_assert_msg(ops->encode(dfx_instance_priv(c), 1, true, &out) == DFX_OK, "%s", dfx_error_message());
    snprintf(rel, sizeof rel, "%s/text_encoder.safetensors", expected);
    dfx_safetensors *ref = test_open_fixture(rel);
    dfx_tensor *want = test_read_f32(ref, "last_hidden_state");
    const int64_t n = want->shape[1] * want->shape[2];
    ck_assert_int_eq(dfx_tensor_numel(out.context), n);
    snprintf(what, sizeof what, "%s text states (prompt)", expected);
    check(what, out.context->data, want->data, n);
    snprintf(what, sizeof what, "%s text states (\"\")", expected);
    check(what, out.uncond_context->data, (float *)want->data + n, n);
    float *all = malloc((size_t)(2 * n) * sizeof *all);
    memcpy(all, out.context->data, (size_t)n * sizeof *all);
    memcpy(all + n, out.uncond_context->data, (size_t)n * sizeof *all);
    dfx_conditioning_fini(&out);
    dfx_tensor_destroy(want);
    dfx_safetensors_close(ref);
    dfx_instance_destroy(c);
    return all;
}

static void expect_same(const char *what, const float *a, const float *b, int64_t n)
{
    ck_assert_msg(memcmp(a, b, (size_t)n * sizeof *a) == 0, "%s: the single file and the folder differ (max %.3g)",
                  what, test_max_abs_diff(a, b, n));
}

/* ---- SD 1.x ----------------------------------------------------------- */

START_TEST(sd1_single_file)
{
    char *file = fixture_dup(SD1_FILE), *yaml = fixture_dup(SD1_YAML), *folder = fixture_dup("sd_tiny");
    char opts[8192], fopts[8192];
    snprintf(opts, sizeof opts, "path: '%s', config: '%s'", file, yaml);
    snprintf(fopts, sizeof fopts, "path: '%s'", folder);

    float *a = unet_outputs(opts, "sd_tiny_expected", DFX_PREDICTION_EPSILON);
    float *b = unet_outputs(fopts, "sd_tiny_expected", DFX_PREDICTION_AUTO);
    expect_same("unet", a, b, 3 * 2 * 4 * 8 * 8);
    free(a);
    free(b);

    a = vae_outputs(opts, "sd_tiny_expected", true);
    b = vae_outputs(fopts, "sd_tiny_expected", true);
    expect_same("vae", a, b, 3 * 64 * 64 + 4 * 8 * 8);
    free(a);
    free(b);

    a = text_outputs(opts, "sd_tiny_expected", "sd_tiny/tokenizer");
    b = text_outputs(fopts, "sd_tiny_expected", "sd_tiny/tokenizer");
    expect_same("text encoder", a, b, 2 * 77 * 32);
    free(a);
    free(b);
    free(file);
    free(yaml);
    free(folder);
}
END_TEST

/* ---- writing single files ------------------------------------------------ */

typedef struct tensor_list {
    char **names;
    dfx_tensor **ts;
    int64_t n, cap;
} tensor_list;

/* takes ownership of t */
static void add(tensor_list *l, const char *name, dfx_tensor *t)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->names = realloc(l->names, (size_t)l->cap * sizeof *l->names);
        l->ts = realloc(l->ts, (size_t)l->cap * sizeof *l->ts);
        ck_assert(l->names && l->ts);
    }
    l->names[l->n] = strdup(name);
    l->ts[l->n++] = t;
}

static void write_list(tensor_list *l, const char *path, dfx_dtype dtype)
{
    for (int64_t i = 0; i < l->n; i++) {
        dfx_tensor *c;
        ck_assert(dfx_tensor_convert(l->ts[i], dtype, &c) == DFX_OK);
        dfx_tensor_destroy(l->ts[i]);
        l->ts[i] = c;
    }
    ck_assert_msg(dfx_safetensors_write(path, l->n, (const char *const *)l->names,
                                        (const dfx_tensor *const *)l->ts, 0, NULL, NULL) == DFX_OK,
                  "%s", dfx_error_message());
    for (int64_t i = 0; i < l->n; i++) {
        free(l->names[i]);
        dfx_tensor_destroy(l->ts[i]);
    }
    free(l->names);
    free(l->ts);
    memset(l, 0, sizeof *l);
}

/* The tensors of fixture file `rel`, renamed by index.json's
 * key_mapping_diffusers_to_original[component] of sd_tiny_original (sd2_tiny's
 * UNet and VAE have sd_tiny's structure); [C, C] VAE attention weights
 * become the original's [C, C, 1, 1]. Names in `skip` (may be NULL) are
 * left out. */
static void add_mapped(tensor_list *l, const char *rel, const char *component, const char *skip)
{
    dfx_json *index;
    ck_assert_msg(dfx_json_parse_file(test_fixture("sd_tiny_original/index.json"), &index) == DFX_OK, "%s",
                  dfx_error_message());
    const dfx_json *map = dfx_json_get(dfx_json_get(index, "key_mapping_diffusers_to_original"), component);
    ck_assert_ptr_nonnull(map);
    dfx_safetensors *src = test_open_fixture(rel);
    ck_assert_int_eq(dfx_safetensors_count(src), dfx_json_size(map));
    for (int64_t i = 0; i < dfx_safetensors_count(src); i++) {
        const char *name = dfx_safetensors_name(src, i);
        const char *orig = dfx_json_string(dfx_json_get(map, name));
        ck_assert_msg(orig != NULL, "%s: no original name", name);
        if (skip && strcmp(orig, skip) == 0)
            continue;
        dfx_tensor *t = test_read_f32(src, name);
        if (strstr(orig, ".attn_1.") && t->ndim == 2) {
            t->ndim = 4;
            t->shape[2] = t->shape[3] = 1;
        }
        add(l, orig, t);
    }
    dfx_safetensors_close(src);
    dfx_json_destroy(index);
}

/* sd2_tiny's text encoder as OpenCLIP's text tower (README_sd2 section 9):
 * q, k, v fused row-wise, and resblock 2 (the "24th layer" SD 2.x never
 * runs) made of layer 0's weights reversed, so using it shows. */
static void add_openclip(tensor_list *l)
{
    static const char *const P = "cond_stage_model.model.";
    static const char *const parts[][2] = {
        {"layer_norm1.weight", "ln_1.weight"},         {"layer_norm1.bias", "ln_1.bias"},
        {"layer_norm2.weight", "ln_2.weight"},         {"layer_norm2.bias", "ln_2.bias"},
        {"self_attn.out_proj.weight", "attn.out_proj.weight"}, {"self_attn.out_proj.bias", "attn.out_proj.bias"},
        {"mlp.fc1.weight", "mlp.c_fc.weight"},         {"mlp.fc1.bias", "mlp.c_fc.bias"},
        {"mlp.fc2.weight", "mlp.c_proj.weight"},       {"mlp.fc2.bias", "mlp.c_proj.bias"},
    };
    dfx_safetensors *src = test_open_fixture("sd2_tiny/text_encoder/model.safetensors");
    char from[256], to[256];
    snprintf(to, sizeof to, "%stoken_embedding.weight", P);
    add(l, to, test_read_f32(src, "text_model.embeddings.token_embedding.weight"));
    snprintf(to, sizeof to, "%spositional_embedding", P);
    add(l, to, test_read_f32(src, "text_model.embeddings.position_embedding.weight"));
    snprintf(to, sizeof to, "%sln_final.weight", P);
    add(l, to, test_read_f32(src, "text_model.final_layer_norm.weight"));
    snprintf(to, sizeof to, "%sln_final.bias", P);
    add(l, to, test_read_f32(src, "text_model.final_layer_norm.bias"));
    for (int layer = 0; layer < 3; layer++) {
        const int from_layer = layer < 2 ? layer : 0;
        for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
            snprintf(from, sizeof from, "text_model.encoder.layers.%d.%s", from_layer, parts[i][0]);
            snprintf(to, sizeof to, "%stransformer.resblocks.%d.%s", P, layer, parts[i][1]);
            dfx_tensor *t = test_read_f32(src, from);
            if (layer == 2) {
                float *d = t->data;
                const int64_t n = dfx_tensor_numel(t);
                for (int64_t j = 0; j < n / 2; j++) {
                    float s = d[j];
                    d[j] = d[n - 1 - j];
                    d[n - 1 - j] = s;
                }
            }
            add(l, to, t);
        }
        static const char *const leaves[] = {"weight", "bias"};
        for (int k = 0; k < 2; k++) {
            dfx_tensor *q, *kk, *v, *fused;
            snprintf(from, sizeof from, "text_model.encoder.layers.%d.self_attn.q_proj.%s", from_layer, leaves[k]);
            q = test_read_f32(src, from);
            snprintf(from, sizeof from, "text_model.encoder.layers.%d.self_attn.k_proj.%s", from_layer, leaves[k]);
            kk = test_read_f32(src, from);
            snprintf(from, sizeof from, "text_model.encoder.layers.%d.self_attn.v_proj.%s", from_layer, leaves[k]);
            v = test_read_f32(src, from);
            int64_t shape[2] = {3 * q->shape[0], q->ndim == 2 ? q->shape[1] : 0};
            fused = new_tensor(q->ndim, shape);
            const size_t part = dfx_tensor_nbytes(q);
            memcpy(fused->data, layer == 2 ? v->data : q->data, part);
            memcpy((char *)fused->data + part, kk->data, part);
            memcpy((char *)fused->data + 2 * part, layer == 2 ? q->data : v->data, part);
            snprintf(to, sizeof to, "%stransformer.resblocks.%d.attn.in_proj_%s", P, layer, leaves[k]);
            add(l, to, fused);
            dfx_tensor_destroy(q);
            dfx_tensor_destroy(kk);
            dfx_tensor_destroy(v);
        }
    }
    const int64_t proj[2] = {32, 16};
    dfx_tensor *tp = new_tensor(2, proj), *ls = new_tensor(0, NULL);
    for (int64_t i = 0; i < 32 * 16; i++)
        ((float *)tp->data)[i] = (float)(i % 7) * 0.125f;
    *(float *)ls->data = 4.60546875f;
    snprintf(to, sizeof to, "%stext_projection", P);
    add(l, to, tp);
    snprintf(to, sizeof to, "%slogit_scale", P);
    add(l, to, ls);
    dfx_safetensors_close(src);
}

static const char sd2_yaml[] =
    "model:\n"
    "  target: ldm.models.diffusion.ddpm.LatentDiffusion\n"
    "  params:\n"
    "    parameterization: \"v\"\n"
    "    scale_factor: 0.18215\n"
    "    unet_config:\n"
    "      target: ldm.modules.diffusionmodules.openaimodel.UNetModel\n"
    "      params:\n"
    "        num_head_channels: 16\n"
    "        use_linear_in_transformer: True\n"
    "        context_dim: 32\n"
    "    cond_stage_config:\n"
    "      target: ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder\n"
    "      params:\n"
    "        layer: \"penultimate\"\n";

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* ---- SD 2.x ----------------------------------------------------------- */

START_TEST(sd2_single_file)
{
    char *dir = test_tmpdir(), path[4300], yaml[4300], opts[8800];
    tensor_list l = {0};
    add_mapped(&l, "sd2_tiny/unet/diffusion_pytorch_model.safetensors", "unet", NULL);
    add_mapped(&l, "sd2_tiny/vae/diffusion_pytorch_model.safetensors", "vae", NULL);
    add_openclip(&l);
    ck_assert_int_eq(l.n, 590);
    snprintf(path, sizeof path, "%s/sd2_tiny.safetensors", dir);
    write_list(&l, path, DFX_DTYPE_F16);
    snprintf(yaml, sizeof yaml, "%s/sd2_tiny.yaml", dir);
    write_text(yaml, sd2_yaml);
    snprintf(opts, sizeof opts, "path: '%s'", path);

    free(unet_outputs(opts, "sd2_tiny_expected", DFX_PREDICTION_V));
    free(vae_outputs(opts, "sd2_tiny_expected", false));
    free(text_outputs(opts, "sd2_tiny_expected", "sd2_tiny/tokenizer"));

    /* the yaml given by name, away from the file */
    char moved[4300];
    snprintf(moved, sizeof moved, "%s/v2-inference-v-tiny.yaml", dir);
    ck_assert_int_eq(rename(yaml, moved), 0);
    snprintf(opts, sizeof opts, "path: '%s', config: '%s'", path, moved);
    free(unet_outputs(opts, "sd2_tiny_expected", DFX_PREDICTION_V));
    /* without it, SD 2.x's 64 channels per head do not divide 32 */
    snprintf(opts, sizeof opts, "path: '%s'", path);
    expect_error(DFX_KIND_MODEL, "sd_unet", opts, "not a multiple of 64 per attention head");
    test_rmtree(dir);
    free(dir);
}
END_TEST

/* ---- bad files -------------------------------------------------------- */

/* A broken ldm yaml is named with what is wrong in it. */
START_TEST(bad_yaml)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"model: {params: {unet_config: {params: {num_heads: 0}}}}\n",
         "'model.params.unet_config.params.num_heads': 0 is out of range (-1 for unset, or 1 to 65536)"},
        {"model: {params: {unet_config: {params: {context_dim: [768]}}}}\n",
         "'model.params.unet_config.params.context_dim': expected an integer"},
        {"model: {params: {parameterization: x0, unet_config: {}}}\n",
         "'model.params.parameterization': 'x0' (dfx reads \"eps\" and \"v\")"},
        {"model: {params: {scale_factor: -1, unet_config: {}}}\n",
         "'model.params.scale_factor': expected a positive number, got '-1'"},
        {"model:\n  params: [\n", "bad.yaml:"},
        {"a: 1\n", "not an ldm config (no model.params.unet_config)"},
    };
    char *dir = test_tmpdir(), yaml[4100], opts[8250];
    char *file = fixture_dup(SD1_FILE);
    snprintf(yaml, sizeof yaml, "%s/bad.yaml", dir);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_text(yaml, cases[i].text);
        snprintf(opts, sizeof opts, "path: '%s', config: '%s'", file, yaml);
        dfx_status st;
        dfx_instance *m = try_open(DFX_KIND_MODEL, "sd_unet", opts, &st);
        ck_assert_ptr_null(m);
        ck_assert_msg(st != DFX_OK && strstr(dfx_error_message(), cases[i].want), "case %zu: '%s' lacks '%s'", i,
                      dfx_error_message(), cases[i].want);
    }
    free(file);
    test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(bad_files)
{
    char *dir = test_tmpdir(), path[4300], opts[8800];
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    snprintf(opts, sizeof opts, "path: '%s'", path);

    /* a missing tensor, named as the file spells it */
    tensor_list l = {0};
    add_mapped(&l, "sd_tiny/unet/diffusion_pytorch_model.safetensors", "unet",
               "model.diffusion_model.input_blocks.1.1.proj_in.weight");
    write_list(&l, path, DFX_DTYPE_F32);
    expect_error(DFX_KIND_MODEL, "sd_unet", opts,
                 "bad.safetensors: tensor 'model.diffusion_model.input_blocks.1.1.proj_in.weight' is missing");

    /* a misshapen one */
    add_mapped(&l, "sd_tiny/unet/diffusion_pytorch_model.safetensors", "unet",
               "model.diffusion_model.out.2.bias");
    const int64_t five[1] = {5};
    add(&l, "model.diffusion_model.out.2.bias", new_tensor(1, five));
    write_list(&l, path, DFX_DTYPE_F32);
    expect_error(DFX_KIND_MODEL, "sd_unet", opts,
                 "tensor 'model.diffusion_model.out.2.bias' has shape [5] but the model expects [4]");

    /* one the layout has no place for */
    add_mapped(&l, "sd_tiny/unet/diffusion_pytorch_model.safetensors", "unet", NULL);
    add(&l, "model.diffusion_model.label_emb.0.0.weight", new_tensor(1, five));
    write_list(&l, path, DFX_DTYPE_F32);
    expect_error(DFX_KIND_MODEL, "sd_unet", opts,
                 "tensor 'model.diffusion_model.label_emb.0.0.weight' has no place in a Stable Diffusion UNet");

    /* a third transformer block the config (1 per level) does not read */
    add_mapped(&l, "sd_tiny/vae/diffusion_pytorch_model.safetensors", "vae", NULL);
    add(&l, "first_stage_model.encoder.down.0.block.2.norm1.weight", new_tensor(1, five));
    write_list(&l, path, DFX_DTYPE_F32);
    expect_error(DFX_KIND_CODEC, "vae", opts, "'first_stage_model.encoder.down.0.block.2.norm1.weight'");

    /* no component there */
    expect_error(DFX_KIND_CONDITIONER, "clip_text", opts, "bad.safetensors: no tensors under 'cond_stage_model.");
    test_rmtree(dir);
    free(dir);
}
END_TEST

int main(void)
{
    test_require_fixtures("single-file checkpoints");
    if (dfx_registry_create(&reg, NULL, 0) != DFX_OK)
        return EXIT_FAILURE;
    Suite *s = suite_create("single-file checkpoints");
    TCase *tc = tcase_create("single_file");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, sd1_single_file);
    tcase_add_test(tc, sd2_single_file);
    tcase_add_test(tc, bad_files);
    tcase_add_test(tc, bad_yaml);
    suite_add_tcase(s, tc);
    int rc = test_run_suite(s);
    dfx_registry_destroy(reg);
    return rc;
}
