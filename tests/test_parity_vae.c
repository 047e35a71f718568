/* The vae codec (diffusers' AutoencoderKL) against fixtures/sd_tiny_expected
 * and sd2_tiny_expected vae.safetensors (README sections 4, 5 and 8), atol
 * 1e-4 as the README suggests for VAE decode and encode:
 *  - decode: z * scaling_factor gives vae.decode(z) (decode_out), z itself
 *    gives vae.decode(z / scaling_factor), one batch of both; the
 *    scaling_factor option; without post_quant_conv, post_quant_conv_out
 *    gives decode_out;
 *  - encode: the mean times scaling_factor; a sampled batch of two against
 *    (mean + std * randn) * scaling_factor with the same seeded draws; without
 *    quant_conv, encoder_out's mean and std;
 *  - bad input: no path, a missing tensor, unknown or unsupported config
 *    fields, wrong latent channels, image sizes and output shapes.
 *
 * usage: test_parity_vae */
#include <sys/stat.h>
#include <time.h>

#include "testutil.h"

#define SCALING 0.18215f
#define ATOL 1e-4

static dfx_registry *reg;

/* A vae instance from YAML options after the type; NULL with the message
 * in dfx_error_message() when init fails. */
static dfx_instance *try_open(const char *opts, dfx_status *status)
{
    char yaml[8300];
    snprintf(yaml, sizeof yaml, "{type: vae, %s}", opts);
    dfx_instance *v = NULL;
    *status = dfx_instance_create(&v, reg, DFX_KIND_CODEC, yaml, "test");
    return v;
}

static dfx_instance *open_vae(const char *dir, const char *extra)
{
    char opts[8192];
    snprintf(opts, sizeof opts, "path: '%s'%s%s", dir, extra ? ", " : "", extra ? extra : "");
    dfx_status st;
    dfx_instance *v = try_open(opts, &st);
    ck_assert_msg(st == DFX_OK, "%s", dfx_error_message());
    return v;
}

static const dfx_codec_ops *ops_of(dfx_instance *v)
{
    return dfx_instance_component(v)->ops;
}

static dfx_tensor *new_tensor(int64_t n, int64_t c, int64_t h, int64_t w)
{
    int64_t shape[4] = {n, c, h, w};
    dfx_tensor *t;
    ck_assert(dfx_tensor_create(&t, DFX_DTYPE_F32, 4, shape) == DFX_OK);
    return t;
}

static dfx_tensor *decode(dfx_instance *v, const dfx_tensor *z)
{
    dfx_tensor *out = new_tensor(z->shape[0], 3, z->shape[2] * 8, z->shape[3] * 8);
    ck_assert_msg(ops_of(v)->decode(dfx_instance_priv(v), z, out) == DFX_OK, "%s", dfx_error_message());
    return out;
}

static dfx_tensor *encode(dfx_instance *v, const dfx_tensor *x, dfx_rng *rng)
{
    dfx_tensor *out = new_tensor(x->shape[0], 4, x->shape[2] / 8, x->shape[3] / 8);
    ck_assert_msg(ops_of(v)->encode(dfx_instance_priv(v), x, rng, out) == DFX_OK, "%s", dfx_error_message());
    return out;
}

/* max |got - want| over n floats, asserted under ATOL */
static double check(const char *what, const float *got, const float *want, int64_t n)
{
    double e = test_max_abs_diff(got, want, n);
    ck_assert_msg(e <= ATOL, "%s: max abs error %.3g (max|ref| %.3g)", what, e, test_max_abs(want, n));
    printf("  %-52s max abs error %.2e (max|ref| %.2f)\n", what, e, test_max_abs(want, n));
    return e;
}

/* dst = n copies of src (one batch item each) */
static dfx_tensor *repeat(const dfx_tensor *src, int64_t n)
{
    dfx_tensor *t = new_tensor(n, src->shape[1], src->shape[2], src->shape[3]);
    const int64_t k = dfx_tensor_numel(src);
    for (int64_t i = 0; i < n; i++)
        memcpy((float *)t->data + i * k, src->data, (size_t)k * sizeof(float));
    return t;
}

/* ---- modified copies of the sd_tiny vae -------------------------------- */

#define BASE_CONFIG                                                                                          \
    "{\"_class_name\": \"AutoencoderKL\", \"block_out_channels\": [32, 32, 32, 64],"                        \
    " \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\","        \
    " \"DownEncoderBlock2D\"], \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\","             \
    " \"UpDecoderBlock2D\", \"UpDecoderBlock2D\"], \"layers_per_block\": 2, \"latent_channels\": 4,"         \
    " \"norm_num_groups\": 32, \"sample_size\": 64, \"scaling_factor\": 0.18215"

/* A vae folder in a new temporary directory: config BASE_CONFIG + extra,
 * the sd_tiny weights without the tensors whose names start with one of
 * `drop` (NULL-terminated, may be NULL). */
static char *make_folder(const char *extra, const char *const *drop)
{
    char *dir = test_tmpdir(), path[4300];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    ck_assert(f != NULL);
    fprintf(f, "%s%s}\n", BASE_CONFIG, extra);
    fclose(f);
    dfx_safetensors *src = test_open_fixture("sd_tiny/vae/diffusion_pytorch_model.safetensors");
    const int64_t n = dfx_safetensors_count(src);
    const char **names = calloc((size_t)n, sizeof *names);
    dfx_tensor **ts = calloc((size_t)n, sizeof *ts);
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        const char *name = dfx_safetensors_name(src, i);
        bool keep = true;
        for (int j = 0; drop && drop[j] && keep; j++)
            keep = strncmp(name, drop[j], strlen(drop[j])) != 0;
        if (keep) {
            names[k] = name;
            ts[k++] = test_read_f32(src, name);
        }
    }
    ck_assert(drop ? k < n : k == n);
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    ck_assert_msg(dfx_safetensors_write(path, k, names, (const dfx_tensor *const *)ts, 0, NULL, NULL) == DFX_OK,
                  "%s", dfx_error_message());
    for (int64_t i = 0; i < k; i++)
        dfx_tensor_destroy(ts[i]);
    free(names);
    free(ts);
    dfx_safetensors_close(src);
    return dir;
}

/* ---- decode ------------------------------------------------------------ */

START_TEST(decode_sd_tiny)
{
    dfx_safetensors *ref = test_open_fixture("sd_tiny_expected/vae.safetensors");
    dfx_tensor *z = test_read_f32(ref, "input_latents"), *want = test_read_f32(ref, "decode_out"),
               *want_div = test_read_f32(ref, "decode_of_latents_div_scaling");
    dfx_instance *v = open_vae(test_fixture("sd_tiny"), NULL);
    dfx_codec_info info;
    ops_of(v)->info(dfx_instance_priv(v), &info);
    ck_assert_int_eq(info.latent_channels, 4);
    ck_assert_int_eq(info.downscale, 8);
    ck_assert_int_eq(info.data_channels, 3);

    /* one batch: [z, z * scaling_factor] */
    const int64_t k = dfx_tensor_numel(z), m = dfx_tensor_numel(want);
    dfx_tensor *zz = repeat(z, 2);
    for (int64_t i = 0; i < k; i++)
        ((float *)zz->data)[k + i] *= SCALING;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    dfx_tensor *got = decode(v, zz);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    check("sd_tiny decode_of_latents_div_scaling", got->data, want_div->data, m);
    check("sd_tiny decode_out (z * scaling_factor in)", (float *)got->data + m, want->data, m);
    printf("  sd_tiny decode of 2 x [4,8,8]: %.1f ms\n",
           (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6);
    dfx_tensor_destroy(got);
    dfx_instance_destroy(v);

    /* the option overrides the config's factor */
    v = open_vae(test_fixture("sd_tiny"), "scaling_factor: 1");
    got = decode(v, z);
    check("sd_tiny decode_out (scaling_factor: 1)", got->data, want->data, m);
    dfx_tensor_destroy(got);
    dfx_instance_destroy(v);

    /* without post_quant_conv, its recorded output decodes to decode_out */
    static const char *const drop[] = {"post_quant_conv.", NULL};
    char *dir = make_folder(", \"use_post_quant_conv\": false", drop);
    v = open_vae(dir, "scaling_factor: 1");
    dfx_tensor *pq = test_read_f32(ref, "post_quant_conv_out");
    got = decode(v, pq);
    check("sd_tiny decode_out from post_quant_conv_out", got->data, want->data, m);
    dfx_tensor_destroy(got);
    dfx_tensor_destroy(pq);
    dfx_instance_destroy(v);
    test_rmtree(dir);
    free(dir);

    dfx_tensor_destroy(zz);
    dfx_tensor_destroy(z);
    dfx_tensor_destroy(want);
    dfx_tensor_destroy(want_div);
    dfx_safetensors_close(ref);
}
END_TEST

START_TEST(decode_sd2_tiny)
{
    dfx_safetensors *ref = test_open_fixture("sd2_tiny_expected/vae.safetensors");
    dfx_tensor *z = test_read_f32(ref, "input_latents"), *want = test_read_f32(ref, "decode_of_latents_div_scaling");
    dfx_instance *v = open_vae(test_fixture("sd2_tiny"), NULL);
    dfx_tensor *got = decode(v, z);
    check("sd2_tiny decode_of_latents_div_scaling", got->data, want->data, dfx_tensor_numel(want));
    dfx_tensor_destroy(got);
    dfx_instance_destroy(v);
    dfx_tensor_destroy(z);
    dfx_tensor_destroy(want);
    dfx_safetensors_close(ref);
}
END_TEST

/* ---- encode ------------------------------------------------------------ */

/* want[i, k] = (mean[k] + std[k] * eps[i, k]) * scaling for a batch of n
 * and eps drawn from seed as one tensor; with eps NULL, the mean only. */
static float *expected_sample(const float *mean, const float *std, int64_t k, int64_t n, uint64_t seed, bool sample)
{
    float *want = malloc((size_t)(n * k) * sizeof(float)), *eps = calloc((size_t)(n * k), sizeof(float));
    ck_assert(want && eps);
    if (sample) {
        dfx_rng *rng;
        ck_assert(dfx_rng_create(&rng, seed) == DFX_OK);
        dfx_rng_normal(rng, eps, n * k);
        dfx_rng_destroy(rng);
    }
    for (int64_t i = 0; i < n * k; i++)
        want[i] = (mean[i % k] + std[i % k] * eps[i]) * SCALING;
    free(eps);
    return want;
}

static dfx_tensor *sampled_encode(dfx_instance *v, const dfx_tensor *x, uint64_t seed)
{
    dfx_rng *rng;
    ck_assert(dfx_rng_create(&rng, seed) == DFX_OK);
    dfx_tensor *got = encode(v, x, rng);
    dfx_rng_destroy(rng);
    return got;
}

START_TEST(encode_sd_tiny)
{
    dfx_safetensors *ref = test_open_fixture("sd_tiny_expected/vae.safetensors");
    dfx_tensor *img = test_read_f32(ref, "input_image"), *mean = test_read_f32(ref, "encode_mean"),
               *std = test_read_f32(ref, "encode_std"), *h = test_read_f32(ref, "encoder_out");
    const int64_t k = dfx_tensor_numel(mean);
    dfx_instance *v = open_vae(test_fixture("sd_tiny"), NULL);

    dfx_tensor *got = encode(v, img, NULL);
    float *want = expected_sample(mean->data, std->data, k, 1, 0, false);
    check("sd_tiny encode_mean * scaling_factor", got->data, want, k);
    free(want);
    dfx_tensor_destroy(got);

    /* a batch of two samples: one draw of randn([2, 4, 8, 8]) */
    dfx_tensor *img2 = repeat(img, 2);
    got = sampled_encode(v, img2, 1234);
    want = expected_sample(mean->data, std->data, k, 2, 1234, true);
    check("sd_tiny sample (mean + std * randn) * scaling_factor", got->data, want, 2 * k);
    ck_assert(test_max_abs_diff(got->data, (float *)got->data + k, k) > 0.01);
    free(want);
    dfx_tensor_destroy(got);
    dfx_instance_destroy(v);

    /* without quant_conv the posterior is encoder_out's: mean and
     * exp(0.5 * clamp(logvar, -30, 20)) */
    static const char *const drop[] = {"quant_conv.", NULL};
    char *dir = make_folder(", \"use_quant_conv\": false", drop);
    v = open_vae(dir, NULL);
    float hstd[256];
    ck_assert_int_eq(2 * k, dfx_tensor_numel(h));
    for (int64_t i = 0; i < k; i++) {
        float lv = ((float *)h->data)[k + i];
        lv = lv < -30.0f ? -30.0f : lv > 20.0f ? 20.0f : lv;
        hstd[i] = expf(0.5f * lv);
    }
    got = encode(v, img, NULL);
    want = expected_sample(h->data, hstd, k, 1, 0, false);
    check("sd_tiny encoder_out mean (no quant_conv)", got->data, want, k);
    free(want);
    dfx_tensor_destroy(got);
    got = sampled_encode(v, img, 7);
    want = expected_sample(h->data, hstd, k, 1, 7, true);
    check("sd_tiny encoder_out sample (no quant_conv)", got->data, want, k);
    free(want);
    dfx_tensor_destroy(got);
    dfx_instance_destroy(v);
    test_rmtree(dir);
    free(dir);

    dfx_tensor_destroy(img2);
    dfx_tensor_destroy(img);
    dfx_tensor_destroy(mean);
    dfx_tensor_destroy(std);
    dfx_tensor_destroy(h);
    dfx_safetensors_close(ref);
}
END_TEST

/* ---- bad input --------------------------------------------------------- */

static void expect_init_error(const char *opts, dfx_status want, const char *msg)
{
    dfx_status st;
    dfx_instance *v = try_open(opts, &st);
    ck_assert_msg(st == want && v == NULL, "%s: status %d, expected %d (%s)", opts, st, want, dfx_error_message());
    ck_assert_msg(strstr(dfx_error_message(), msg) != NULL, "expected \"%s\" in: %s", msg, dfx_error_message());
}

static void expect_folder_error(const char *extra, const char *const *drop, const char *msg)
{
    char *dir = make_folder(extra, drop), opts[4300];
    snprintf(opts, sizeof opts, "path: '%s'", dir);
    dfx_status st;
    dfx_instance *v = try_open(opts, &st);
    ck_assert_msg(st != DFX_OK && v == NULL, "%s: loaded", extra);
    ck_assert_msg(strstr(dfx_error_message(), msg) != NULL, "expected \"%s\" in: %s", msg, dfx_error_message());
    test_rmtree(dir);
    free(dir);
}

static void expect_call_error(dfx_status st, const char *msg)
{
    ck_assert_int_eq(st, DFX_ERR_INVALID_ARG);
    ck_assert_msg(strstr(dfx_error_message(), msg) != NULL, "expected \"%s\" in: %s", msg, dfx_error_message());
}

START_TEST(bad_input)
{
    expect_init_error("scaling_factor: 0.5", DFX_ERR_CONFIG, "vae: no checkpoint: set codec.path (or model.path)");
    static const char *const drop_bias[] = {"decoder.up_blocks.1.resnets.2.conv1.bias", NULL};
    expect_folder_error("", drop_bias, "tensor 'decoder.up_blocks.1.resnets.2.conv1.bias' is missing");
    expect_folder_error(", \"frobnicate\": 1", NULL, "field 'frobnicate': unknown to dfx's vae");
    expect_folder_error(", \"latents_mean\": [0, 0, 0, 0], \"latents_std\": [1, 1, 1, 1]", NULL,
                        "field 'latents_mean': per-channel latent normalisation");
    expect_folder_error(", \"act_fn\": \"relu\"", NULL, "field 'act_fn': 'relu' is not supported by dfx's vae");
    expect_folder_error(", \"use_quant_conv\": false", NULL, "'quant_conv.bias'");
    expect_folder_error(", \"latent_channels\": 8", NULL,
                        "tensor 'encoder.conv_out.weight' has shape [8,64,3,3] but the model expects [16,64,3,3]");

    dfx_instance *v = open_vae(test_fixture("sd_tiny"), NULL);
    void *priv = dfx_instance_priv(v);
    const dfx_codec_ops *ops = ops_of(v);
    dfx_tensor *z3 = new_tensor(1, 3, 8, 8), *img = new_tensor(1, 3, 64, 64);
    dfx_tensor *x60 = new_tensor(1, 3, 60, 64), *x64w3 = new_tensor(1, 3, 64, 3);
    dfx_tensor *out = new_tensor(1, 3, 64, 64), *bad_out = new_tensor(1, 3, 32, 64), *lat = new_tensor(1, 4, 8, 8);
    memset(z3->data, 0, dfx_tensor_nbytes(z3));
    memset(img->data, 0, dfx_tensor_nbytes(img));
    memset(x60->data, 0, dfx_tensor_nbytes(x60));
    memset(x64w3->data, 0, dfx_tensor_nbytes(x64w3));
    memset(lat->data, 0, dfx_tensor_nbytes(lat));
    expect_call_error(ops->decode(priv, z3, out), "vae: decode takes float32 latents [B, 4, h, w], got F32 [1,3,8,8]");
    expect_call_error(ops->decode(priv, lat, bad_out), "writes float32 [1,3,64,64], got F32 [1,3,32,64]");
    expect_call_error(ops->encode(priv, x60, NULL, lat),
                      "vae: image height 60 is not a multiple of 8, the VAE's downscale factor (nearest valid: 56 or 64)");
    expect_call_error(ops->encode(priv, x64w3, NULL, lat), "image width 3 is not a multiple of 8");
    expect_call_error(ops->encode(priv, img, NULL, z3), "writes float32 [1,4,8,8], got F32 [1,3,8,8]");
    expect_call_error(ops->encode(priv, lat, NULL, lat), "encode takes float32 images [B, 3, H, W]");
    dfx_tensor *list[] = {z3, img, x60, x64w3, out, bad_out, lat};
    for (size_t i = 0; i < sizeof list / sizeof *list; i++)
        dfx_tensor_destroy(list[i]);
    dfx_instance_destroy(v);
}
END_TEST

int main(void)
{
    test_require_fixtures("vae parity");
    if (dfx_registry_create(&reg, NULL, 0) != DFX_OK)
        return EXIT_FAILURE;
    Suite *s = suite_create("vae parity");
    TCase *tc = tcase_create("vae");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, decode_sd_tiny);
    tcase_add_test(tc, decode_sd2_tiny);
    tcase_add_test(tc, encode_sd_tiny);
    tcase_add_test(tc, bad_input);
    suite_add_tcase(s, tc);
    int rc = test_run_suite(s);
    dfx_registry_destroy(reg);
    return rc;
}
