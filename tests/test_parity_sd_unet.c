/* The sd_unet model (diffusers' UNet2DConditionModel) against
 * fixtures/sd_tiny_expected and sd2_tiny_expected unet.safetensors (README
 * sections 4, 5, 7 and 8), atol 1e-4 as the README suggests for one UNet
 * forward (the reference's float32-vs-float64 error is 1.2e-6):
 *  - SD 1.x (1x1-convolution projections, 8 heads of a width that varies)
 *    and SD 2.x (linear projections, heads [2, 4] of width 16, upcast
 *    attention): out_t{1,500,999} on random states, a batch of two float
 *    timesteps, the real text embeddings at the first DDIM step, a batch
 *    of one giving the first item of the batch of two, and out_t500 with
 *    each setting of the winograd option;
 *  - time_proj and time_embedding of t = 1, 500, 999 through the layers
 *    the model is built from, with the folder's weights;
 *  - bad input: no path, a missing and a misshapen tensor, an extra one,
 *    an unknown config field, unsupported block types and values, no or
 *    the wrong width of conditioning, wrong input and output shapes.
 *
 * usage: test_parity_sd_unet */
#include "testutil.h"

#define ATOL 1e-4

static dfx_registry *reg;

static dfx_instance *try_open(const char *opts, dfx_status *status)
{
    char yaml[8300];
    snprintf(yaml, sizeof yaml, "{type: sd_unet, %s}", opts);
    dfx_instance *m = NULL;
    *status = dfx_instance_create(&m, reg, DFX_KIND_MODEL, yaml, "test");
    return m;
}

static dfx_instance *open_unet(const char *dir, const char *extra)
{
    char opts[8192];
    snprintf(opts, sizeof opts, "path: '%s'%s%s", dir, extra ? ", " : "", extra ? extra : "");
    dfx_status st;
    dfx_instance *m = try_open(opts, &st);
    ck_assert_msg(st == DFX_OK, "%s", dfx_error_message());
    return m;
}

static const dfx_model_ops *ops_of(dfx_instance *m)
{
    return dfx_instance_component(m)->ops;
}

static dfx_tensor *new_tensor(int ndim, const int64_t *shape)
{
    dfx_tensor *t;
    ck_assert(dfx_tensor_create(&t, DFX_DTYPE_F32, ndim, shape) == DFX_OK);
    memset(t->data, 0, dfx_tensor_nbytes(t));
    return t;
}

/* the model on x [B, 4, h, w] at timesteps t [B] attending to context */
static dfx_status try_predict(dfx_instance *m, const dfx_tensor *x, const double *t, const dfx_tensor *context,
                              dfx_tensor *out)
{
    dfx_cond cond = {context, NULL, NULL};
    double sigma[16] = {0};
    dfx_model_input in = {x, t, sigma, context ? &cond : NULL};
    return ops_of(m)->predict(dfx_instance_priv(m), &in, out);
}

static dfx_tensor *predict(dfx_instance *m, const dfx_tensor *x, const double *t, const dfx_tensor *context)
{
    dfx_tensor *out = new_tensor(4, x->shape);
    ck_assert_msg(try_predict(m, x, t, context, out) == DFX_OK, "%s", dfx_error_message());
    return out;
}

/* max |got - want| over n floats, asserted under ATOL * max(1, max|ref|) */
static void check(const char *what, const float *got, const float *want, int64_t n)
{
    const double e = test_max_abs_diff(got, want, n), ref = test_max_abs(want, n);
    ck_assert_msg(e <= ATOL * (ref > 1 ? ref : 1), "%s: max abs error %.3g (max|ref| %.3g)", what, e, ref);
    printf("  %-56s max abs error %.2e (max|ref| %.2f)\n", what, e, ref);
}

static void check_ref(const char *what, const dfx_tensor *got, const dfx_safetensors *ref, const char *name)
{
    dfx_tensor *want = test_read_f32(ref, name);
    ck_assert_int_eq(dfx_tensor_numel(want), dfx_tensor_numel(got));
    check(what, got->data, want->data, dfx_tensor_numel(want));
    dfx_tensor_destroy(want);
}

/* ---- forward ----------------------------------------------------------- */

/* The recorded forwards of one fixture set: `text` names the real text
 * embeddings and `text_out` their output at timestep `text_t`. */
static void forward_cases(const char *model, const char *expected, const char *text, const char *text_out,
                          double text_t, bool float_batch)
{
    char rel[256], what[128];
    snprintf(rel, sizeof rel, "%s/unet.safetensors", expected);
    dfx_safetensors *ref = test_open_fixture(rel);
    dfx_tensor *x = test_read_f32(ref, "input_sample"), *ctx = test_read_f32(ref, "input_encoder_hidden_states");
    dfx_instance *m = open_unet(test_fixture(model), NULL);

    dfx_model_info info;
    ops_of(m)->info(dfx_instance_priv(m), &info);
    ck_assert_int_eq(info.context_dim, 32);
    ck_assert_int_eq(info.sample_ndim, 3);
    ck_assert_int_eq(info.sample_shape[0], 4);
    ck_assert_int_eq(info.sample_shape[1], 8);
    ck_assert_int_eq(info.sample_shape[2], 8);
    ck_assert(info.any_size);

    static const int ts[3] = {1, 500, 999};
    for (int i = 0; i < 3; i++) {
        const double t[2] = {ts[i], ts[i]};
        dfx_tensor *got = predict(m, x, t, ctx);
        char name[32];
        snprintf(name, sizeof name, "out_t%d", ts[i]);
        snprintf(what, sizeof what, "%s %s", model, name);
        check_ref(what, got, ref, name);
        dfx_tensor_destroy(got);
    }
    if (float_batch) {
        dfx_tensor *tf = test_read_f32(ref, "input_timesteps_float");
        const double t[2] = {((float *)tf->data)[0], ((float *)tf->data)[1]};
        ck_assert(t[1] == 250.5);
        dfx_tensor *got = predict(m, x, t, ctx);
        snprintf(what, sizeof what, "%s out_t_float_batch (t = 999, 250.5)", model);
        check_ref(what, got, ref, "out_t_float_batch");
        dfx_tensor_destroy(got);
        dfx_tensor_destroy(tf);
    }
    dfx_tensor *emb = test_read_f32(ref, text);
    const double tt[2] = {text_t, text_t};
    dfx_tensor *got = predict(m, x, tt, emb);
    snprintf(what, sizeof what, "%s %s", model, text_out);
    check_ref(what, got, ref, text_out);
    dfx_tensor_destroy(got);

    /* a batch of one: the first item of out_t500 */
    dfx_tensor *want = test_read_f32(ref, "out_t500");
    const int64_t s1[4] = {1, 4, 8, 8}, c1[3] = {1, 77, 32};
    dfx_tensor *x1 = new_tensor(4, s1), *ctx1 = new_tensor(3, c1);
    memcpy(x1->data, x->data, dfx_tensor_nbytes(x1));
    memcpy(ctx1->data, ctx->data, dfx_tensor_nbytes(ctx1));
    const double t1 = 500;
    got = predict(m, x1, &t1, ctx1);
    snprintf(what, sizeof what, "%s out_t500[0] from a batch of one", model);
    check(what, got->data, want->data, dfx_tensor_numel(got));
    dfx_tensor_destroy(got);
    dfx_instance_destroy(m);

    /* every convolution algorithm gives the same network */
    static const char *const algos[] = {"winograd: off", "winograd: fast"};
    for (int i = 0; i < 2; i++) {
        m = open_unet(test_fixture(model), algos[i]);
        const double t[2] = {500, 500};
        got = predict(m, x, t, ctx);
        snprintf(what, sizeof what, "%s out_t500, %s", model, algos[i]);
        check_ref(what, got, ref, "out_t500");
        dfx_tensor_destroy(got);
        dfx_instance_destroy(m);
    }
    dfx_tensor *list[] = {want, x1, ctx1, emb, x, ctx};
    for (size_t i = 0; i < sizeof list / sizeof *list; i++)
        dfx_tensor_destroy(list[i]);
    dfx_safetensors_close(ref);
}

START_TEST(forward_sd_tiny)
{
    forward_cases("sd_tiny", "sd_tiny_expected", "input_text_embeds_uncond_cond", "out_t981_text", 981, true);
}
END_TEST

START_TEST(forward_sd2_tiny)
{
    forward_cases("sd2_tiny", "sd2_tiny_expected", "input_text_embeds_neg_cond", "out_t901_text", 901, false);
}
END_TEST

/* ---- time embedding ---------------------------------------------------- */

/* time_proj (flip_sin_to_cos, freq_shift 0, width block_out_channels[0] =
 * 32) and time_embedding (linear_1, SiLU, linear_2 to 128) of t = 1, 500,
 * 999 with the folder's weights, as sd_unet computes them */
static void time_cases(const char *model, const char *expected)
{
    char rel[256], what[128];
    snprintf(rel, sizeof rel, "%s/unet.safetensors", expected);
    dfx_safetensors *ref = test_open_fixture(rel);
    snprintf(rel, sizeof rel, "%s/unet/diffusion_pytorch_model.safetensors", model);
    dfx_weights *w;
    ck_assert_msg(dfx_weights_open(&w, test_fixture(rel)) == DFX_OK, "%s", dfx_error_message());
    dfx_linear l1, l2;
    ck_assert_msg(dfx_linear_load(&l1, w, "time_embedding.linear_1", 32, 128, true) == DFX_OK, "%s",
                  dfx_error_message());
    ck_assert_msg(dfx_linear_load(&l2, w, "time_embedding.linear_2", 128, 128, true) == DFX_OK, "%s",
                  dfx_error_message());
    const double t[3] = {1, 500, 999};
    float proj[3 * 32], h[3 * 128], emb[3 * 128];
    dfx_nn_timestep_embedding(t, 3, 32, true, 0.0, 1.0, 10000.0, proj);
    dfx_tensor *want = test_read_f32(ref, "time_proj_t1_500_999");
    snprintf(what, sizeof what, "%s time_proj_t1_500_999", model);
    check(what, proj, want->data, 3 * 32);
    dfx_tensor_destroy(want);
    dfx_linear_forward(&l1, proj, 3, h);
    dfx_nn_silu(h, 3 * 128);
    dfx_linear_forward(&l2, h, 3, emb);
    want = test_read_f32(ref, "time_embedding_t1_500_999");
    snprintf(what, sizeof what, "%s time_embedding_t1_500_999", model);
    check(what, emb, want->data, 3 * 128);
    dfx_tensor_destroy(want);
    dfx_linear_free(&l1);
    dfx_linear_free(&l2);
    dfx_weights_close(w);
    dfx_safetensors_close(ref);
}

START_TEST(time_embedding)
{
    time_cases("sd_tiny", "sd_tiny_expected");
    time_cases("sd2_tiny", "sd2_tiny_expected");
}
END_TEST

/* ---- bad input --------------------------------------------------------- */

/* A unet folder in a new temporary directory: sd_tiny's config.json with
 * each `"key": value` of `edits` (NULL-terminated pairs of key and JSON
 * value) replaced or added, and sd_tiny's weights without the tensor `drop`,
 * with tensor `halve` cut to the first half of its rows, and with an extra
 * tensor `extra` (each may be NULL). */
static char *make_folder(const char *const *edits, const char *drop, const char *halve, const char *extra)
{
    char *dir = test_tmpdir(), path[4300];
    FILE *src = fopen(test_fixture("sd_tiny/unet/config.json"), "r");
    ck_assert(src != NULL);
    char text[8192];
    const size_t len = fread(text, 1, sizeof text - 1, src);
    fclose(src);
    text[len] = '\0';
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    ck_assert(f != NULL);
    /* the file has one "  \"key\": value" per field (a list spans lines) */
    fputs("{\n", f);
    for (int i = 0; edits && edits[i]; i += 2)
        fprintf(f, "  \"%s\": %s,\n", edits[i], edits[i + 1]);
    for (char *p = strstr(text, "\n  \""); p; p = strstr(p + 1, "\n  \"")) {
        char *key = p + 4, *q = strchr(key, '"');
        char *next = strstr(p + 1, "\n  \"");
        char *stop = next ? next : strstr(p, "\n}");
        ck_assert(q != NULL && stop != NULL);
        bool edited = false;
        for (int i = 0; edits && edits[i]; i += 2)
            edited = edited || ((size_t)(q - key) == strlen(edits[i]) && strncmp(key, edits[i], (size_t)(q - key)) == 0);
        if (!edited)
            fprintf(f, "%.*s%s\n", (int)(stop - p - 1), p + 1, next ? "" : ",");
    }
    fputs("  \"_name_or_path\": \"copy of sd_tiny/unet\"\n}\n", f);
    fclose(f);

    dfx_safetensors *st = test_open_fixture("sd_tiny/unet/diffusion_pytorch_model.safetensors");
    const int64_t n = dfx_safetensors_count(st);
    const char **names = calloc((size_t)n + 1, sizeof *names);
    dfx_tensor **ts = calloc((size_t)n + 1, sizeof *ts);
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        const char *name = dfx_safetensors_name(st, i);
        if (drop && strcmp(name, drop) == 0)
            continue;
        names[k] = name;
        ts[k] = test_read_f32(st, name);
        if (halve && strcmp(name, halve) == 0)
            ts[k]->shape[0] /= 2;
        k++;
    }
    if (extra) {
        const int64_t shape[1] = {4};
        names[k] = extra;
        ts[k++] = new_tensor(1, shape);
    }
    ck_assert_int_eq(k, n - (drop ? 1 : 0) + (extra ? 1 : 0));
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    ck_assert_msg(dfx_safetensors_write(path, k, names, (const dfx_tensor *const *)ts, 0, NULL, NULL) == DFX_OK,
                  "%s", dfx_error_message());
    for (int64_t i = 0; i < k; i++)
        dfx_tensor_destroy(ts[i]);
    free(names);
    free(ts);
    dfx_safetensors_close(st);
    return dir;
}

static void expect_folder_error(const char *const *edits, const char *drop, const char *halve, const char *extra,
                                const char *msg)
{
    char *dir = make_folder(edits, drop, halve, extra), opts[4300];
    snprintf(opts, sizeof opts, "path: '%s'", dir);
    dfx_status st;
    dfx_instance *m = try_open(opts, &st);
    ck_assert_msg(st != DFX_OK && m == NULL, "loaded, expected \"%s\"", msg);
    ck_assert_msg(strstr(dfx_error_message(), msg) != NULL, "expected \"%s\" in: %s", msg, dfx_error_message());
    test_rmtree(dir);
    free(dir);
}

static void expect_config_error(const char *key, const char *value, const char *msg)
{
    const char *edits[] = {key, value, NULL};
    expect_folder_error(edits, NULL, NULL, NULL, msg);
}

static void expect_call_error(dfx_status st, const char *msg)
{
    ck_assert_int_eq(st, DFX_ERR_INVALID_ARG);
    ck_assert_msg(strstr(dfx_error_message(), msg) != NULL, "expected \"%s\" in: %s", msg, dfx_error_message());
}

START_TEST(bad_checkpoints)
{
    dfx_status st;
    ck_assert(try_open("random_weights: false", &st) == NULL);
    ck_assert_int_eq(st, DFX_ERR_CONFIG);
    ck_assert_msg(strstr(dfx_error_message(), "sd_unet: no checkpoint: set model.path") != NULL, "%s",
                  dfx_error_message());

    ck_assert(try_open("path: '/nonexistent', winograd: quick", &st) == NULL);
    ck_assert_int_eq(st, DFX_ERR_CONFIG);
    ck_assert_msg(strstr(dfx_error_message(), "winograd") != NULL, "%s", dfx_error_message());

    /* the unchanged copy loads: the failures below are the edits' */
    char *dir = make_folder(NULL, NULL, NULL, NULL);
    dfx_instance_destroy(open_unet(dir, NULL));
    test_rmtree(dir);
    free(dir);

    expect_folder_error(NULL, "up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k.weight", NULL, NULL,
                        "tensor 'up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k.weight' is missing");
    expect_folder_error(NULL, "mid_block.resnets.1.time_emb_proj.bias", NULL, NULL,
                        "tensor 'mid_block.resnets.1.time_emb_proj.bias' is missing");
    expect_folder_error(NULL, NULL, "down_blocks.0.attentions.1.proj_in.weight", NULL,
                        "tensor 'down_blocks.0.attentions.1.proj_in.weight' has shape [16,32,1,1] but the model "
                        "expects [32,32]");
    expect_folder_error(NULL, NULL, "up_blocks.0.resnets.2.conv1.weight", NULL,
                        "tensor 'up_blocks.0.resnets.2.conv1.weight' has shape [32,96,3,3] but the model expects "
                        "[64,96,3,3]");
    expect_folder_error(NULL, NULL, NULL, "add_embedding.linear_1.bias", "'add_embedding.linear_1.bias'");

    expect_config_error("frobnicate", "1", "field 'frobnicate': unknown to dfx's sd_unet");
    expect_config_error("down_block_types", "[\"CrossAttnDownBlock2D\", \"SimpleCrossAttnDownBlock2D\"]",
                        "field 'down_block_types': block type 'SimpleCrossAttnDownBlock2D' is not supported");
    expect_config_error("up_block_types", "[\"AttnUpBlock2D\", \"CrossAttnUpBlock2D\"]",
                        "field 'up_block_types': block type 'AttnUpBlock2D' is not supported");
    expect_config_error("down_block_types", "[\"CrossAttnDownBlock2D\"]",
                        "field 'down_block_types': expected a list with one block type per entry");
    expect_config_error("mid_block_type", "\"UNetMidBlock2DSimpleCrossAttn\"", "field 'mid_block_type'");
    expect_config_error("mid_block_type", "null", "field 'mid_block_type': a UNet without a mid block");
    expect_config_error("class_embed_type", "\"timestep\"", "field 'class_embed_type': a class embedding");
    expect_config_error("addition_embed_type", "\"text_time\"", "field 'addition_embed_type'");
    expect_config_error("attention_type", "\"gated\"", "field 'attention_type'");
    expect_config_error("dual_cross_attention", "true", "field 'dual_cross_attention'");
    expect_config_error("only_cross_attention", "[true, false]", "field 'only_cross_attention'");
    expect_config_error("time_embedding_type", "\"fourier\"", "field 'time_embedding_type'");
    expect_config_error("act_fn", "\"gelu\"", "field 'act_fn'");
    expect_config_error("cross_attention_dim", "[32, 64]",
                        "field 'cross_attention_dim': different widths per block are not supported");
    expect_config_error("attention_head_dim", "[8, 128]",
                        "field 'attention_head_dim': more heads than channels in a block");
    expect_config_error("conv_in_kernel", "2", "field 'conv_in_kernel': an even kernel is not supported");
    expect_config_error("_class_name", "\"UNet2DModel\"", "_class_name is 'UNet2DModel', not UNet2DConditionModel");
    /* a config that disagrees with the weights names the first tensor it misreads */
    expect_config_error("cross_attention_dim", "16",
                        "tensor 'down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight' has shape "
                        "[32,32] but the model expects [32,16]");
    expect_config_error("layers_per_block", "1",
                        "tensor 'up_blocks.0.resnets.1.norm1.weight' has shape [128] but the model expects [96]");
}
END_TEST

START_TEST(bad_calls)
{
    dfx_instance *m = open_unet(test_fixture("sd_tiny"), NULL);
    const int64_t xs[4] = {2, 4, 8, 8}, x3s[4] = {2, 3, 8, 8}, o7s[4] = {2, 4, 8, 7};
    const int64_t cs[3] = {2, 77, 32}, c16s[3] = {2, 77, 16}, c1s[3] = {1, 77, 32};
    dfx_tensor *x = new_tensor(4, xs), *x3 = new_tensor(4, x3s), *out = new_tensor(4, xs), *o7 = new_tensor(4, o7s);
    dfx_tensor *ctx = new_tensor(3, cs), *c16 = new_tensor(3, c16s), *c1 = new_tensor(3, c1s);
    const double t[2] = {500, 500};
    expect_call_error(try_predict(m, x, t, c16, out),
                      "sd_unet: the conditioning is F32 [2,77,16] but the model expects float32 [2, tokens, 32] "
                      "(the cross_attention_dim of its config)");
    expect_call_error(try_predict(m, x, t, c1, out), "the conditioning is F32 [1,77,32] but the model expects");
    expect_call_error(try_predict(m, x, t, NULL, out), "sd_unet: no text conditioning");
    expect_call_error(try_predict(m, x3, t, ctx, out), "sd_unet: input must be float32 [B, 4, H, W]");
    expect_call_error(try_predict(m, x, t, ctx, o7), "sd_unet: output must be float32 [2, 4, 8, 8]");
    /* it still works after the refusals */
    ck_assert_int_eq(try_predict(m, x, t, ctx, out), DFX_OK);
    dfx_tensor *list[] = {x, x3, out, o7, ctx, c16, c1};
    for (size_t i = 0; i < sizeof list / sizeof *list; i++)
        dfx_tensor_destroy(list[i]);
    dfx_instance_destroy(m);
}
END_TEST

int main(void)
{
    test_require_fixtures("sd_unet parity");
    if (dfx_registry_create(&reg, NULL, 0) != DFX_OK)
        return EXIT_FAILURE;
    Suite *s = suite_create("sd_unet parity");
    TCase *tc = tcase_create("sd_unet");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, forward_sd_tiny);
    tcase_add_test(tc, forward_sd2_tiny);
    tcase_add_test(tc, time_embedding);
    tcase_add_test(tc, bad_checkpoints);
    tcase_add_test(tc, bad_calls);
    suite_add_tcase(s, tc);
    int rc = test_run_suite(s);
    dfx_registry_destroy(reg);
    return rc;
}
