/* The classifier plugin and the evaluation library around it: predict()
 * against the tape forward it is built from; a tiny classifier trained
 * through the pipeline API fits a two-class training set; image sets
 * (padding, formats), features, probabilities, FID statistics and accuracy
 * come out with the shapes and values they promise; config errors name the
 * file and the field. */
#include <ftw.h>
#include <sys/stat.h>

#include "classifier_fixture.h"
#include "dfx/metrics.h"

static char tmpdir[64];
static dfx_registry *reg;

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dfx_classifier_XXXXXX");
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

/* A classifier instance from a section "{type: classifier, KEY: 'VALUE'...}". */
static dfx_status open_model(const char *section, dfx_instance **out)
{
    return dfx_instance_create(out, reg, DFX_KIND_MODEL, section, "test");
}

static dfx_instance *tiny_random(uint64_t seed)
{
    const char *cfg = fx_path(tmpdir, "tiny.json");
    fx_write(cfg, TINY_CONFIG, strlen(TINY_CONFIG));
    char sec[4400];
    snprintf(sec, sizeof sec, "{type: classifier, config: '%s', seed: %llu}", cfg, (unsigned long long)seed);
    dfx_instance *m;
    ck_assert_msg(open_model(sec, &m) == DFX_OK, "%s", dfx_error_message());
    return m;
}

static const dfx_model_ops *ops_of(dfx_instance *m)
{
    return dfx_instance_component(m)->ops;
}

START_TEST(test_predict_is_the_tape_forward)
{
    dfx_instance *m = tiny_random(3);
    const dfx_model_ops *ops = ops_of(m);
    void *priv = dfx_instance_priv(m);
    dfx_model_info info;
    ck_assert_int_eq(dfx_classifier_info(m, &info), DFX_OK);
    ck_assert_int_eq(info.classes, 2);
    ck_assert_int_eq(info.features, 8);
    ck_assert_int_eq(info.sample_ndim, 3);
    ck_assert_int_eq(info.sample_shape[1], 8);
    ck_assert_str_eq(info.checkpoint_folder, "classifier");
    ck_assert_str_eq(info.checkpoint_stem, "model");

    enum { N = 5, F = 8, K = 2 };
    const int64_t xs[4] = {N, 1, 8, 8}, os[2] = {N, F + K};
    float x[N * 64], out[N * (F + K)];
    dfx_rng *rng;
    ck_assert_int_eq(dfx_rng_create(&rng, 9), DFX_OK);
    dfx_rng_normal(rng, x, N * 64);
    dfx_rng_destroy(rng);
    dfx_tensor xt = dfx_tensor_view(DFX_DTYPE_F32, 4, xs, x), ot = dfx_tensor_view(DFX_DTYPE_F32, 2, os, out);
    const double zeros[N] = {0};
    const dfx_model_input in = {.x = &xt, .t_model = zeros, .sigma = zeros};
    ck_assert_msg(ops->predict(priv, &in, &ot) == DFX_OK, "%s", dfx_error_message());

    /* the training forward, recording, with the weights as parameters */
    dfx_params *p;
    dfx_tape *t;
    ck_assert_int_eq(dfx_params_create(&p), DFX_OK);
    ck_assert_int_eq(ops->train_params(priv, p), DFX_OK);
    ck_assert_ptr_nonnull(dfx_params_find_name(p, "conv_in.weight"));
    ck_assert_ptr_nonnull(dfx_params_find_name(p, "blocks.0.resnet.conv1.weight"));
    ck_assert_ptr_nonnull(dfx_params_find_name(p, "blocks.1.resnet.conv_shortcut.weight"));
    ck_assert_ptr_nonnull(dfx_params_find_name(p, "blocks.0.downsample.weight"));
    ck_assert_ptr_null(dfx_params_find_name(p, "blocks.1.downsample.weight"));
    ck_assert_ptr_nonnull(dfx_params_find_name(p, "norm_out.weight"));
    ck_assert_ptr_nonnull(dfx_params_find_name(p, "feature.bias"));
    ck_assert_int_eq(dfx_tape_create(&t, DFX_DTYPE_F32), DFX_OK);
    dfx_var *vx = dfx_tape_from_f32(t, 4, xs, x, false);
    dfx_var *logits = ops->train_forward(priv, t, p, vx, &in);
    ck_assert_msg(logits != NULL, "%s", dfx_error_message());
    ck_assert_int_eq(logits->ndim, 2);
    ck_assert_int_eq(logits->shape[0], N);
    ck_assert_int_eq(logits->shape[1], K);
    double scale = 0;
    for (int i = 0; i < N * K; i++)
        scale = fmax(scale, fabs(dfx_var_get(logits, i)));
    ck_assert_double_gt(scale, 1e-3);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < K; k++)
            ck_assert_double_eq_tol(out[i * (F + K) + F + k], dfx_var_get(logits, i * K + k), 1e-6 * scale);
    /* the features come first: head(features) gives the logits */
    const dfx_param *hw = dfx_params_find_name(p, "head.weight"), *hb = dfx_params_find_name(p, "head.bias");
    ck_assert_ptr_nonnull(hw);
    ck_assert_ptr_nonnull(hb);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < K; k++) {
            double v = hb->data[k];
            for (int j = 0; j < F; j++)
                v += (double)hw->data[k * F + j] * out[i * (F + K) + j];
            ck_assert_double_eq_tol(out[i * (F + K) + F + k], v, 1e-5 * scale);
        }
    /* a gradient reaches the first layer */
    const int64_t labels[N] = {0, 1, 1, 0, 1};
    dfx_params_zero_grad(p);
    ck_assert_int_eq(dfx_tape_backward(t, dfx_g_cross_entropy(t, logits, labels)), DFX_OK);
    ck_assert_double_gt(dfx_params_grad_norm(p), 0);
    double g = 0;
    const dfx_param *w0 = dfx_params_find_name(p, "conv_in.weight");
    for (int64_t i = 0; i < w0->numel; i++)
        g += fabs(w0->grad[i]);
    ck_assert_double_gt(g, 0);
    dfx_tape_destroy(t);
    dfx_params_destroy(p);

    /* an output of the wrong size is refused */
    const int64_t bad[2] = {N, K};
    dfx_tensor bt = dfx_tensor_view(DFX_DTYPE_F32, 2, bad, out);
    ck_assert_int_eq(ops->predict(priv, &in, &bt), DFX_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "features, then logits"));
    dfx_instance_destroy(m);

    /* another seed, other weights; the same seed, the same */
    dfx_instance *m2 = tiny_random(4), *m3 = tiny_random(3);
    float out2[N * (F + K)], out3[N * (F + K)];
    dfx_tensor o2 = dfx_tensor_view(DFX_DTYPE_F32, 2, os, out2), o3 = dfx_tensor_view(DFX_DTYPE_F32, 2, os, out3);
    ck_assert_int_eq(ops->predict(dfx_instance_priv(m2), &in, &o2), DFX_OK);
    ck_assert_int_eq(ops->predict(dfx_instance_priv(m3), &in, &o3), DFX_OK);
    ck_assert(memcmp(out, out2, sizeof out) != 0);
    ck_assert_mem_eq(out, out3, sizeof out);
    dfx_instance_destroy(m2);
    dfx_instance_destroy(m3);
}
END_TEST

/* The mean loss of the first and the last line of dir/out/train_log.csv. */
static void first_last_loss(double *first, double *last)
{
    FILE *f = fopen(fx_path(tmpdir, "out/train_log.csv"), "r");
    ck_assert_ptr_nonnull(f);
    char line[256];
    int rows = 0;
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    ck_assert_str_eq(line, "step,loss\n");
    while (fgets(line, sizeof line, f)) {
        long long step;
        double loss;
        ck_assert_int_eq(sscanf(line, "%lld,%lf", &step, &loss), 2);
        if (!rows++)
            *first = loss;
        *last = loss;
    }
    fclose(f);
    ck_assert_int_ge(rows, 2);
}

START_TEST(test_overfit)
{
    /* untrained, the classifier's accuracy on the training set is what the
     * random weights give; 60 steps of AdamW make it fit all 32 items */
    dfx_instance *m0 = tiny_random(2);
    uint8_t px[32 * 36], lab[32];
    fx_make_images(32, 6, 6, 11, NULL, px, lab);
    char images[4200], labels[4200];
    snprintf(images, sizeof images, "%s", fx_path(tmpdir, "check-images.idx"));
    snprintf(labels, sizeof labels, "%s", fx_path(tmpdir, "check-labels.idx"));
    fx_write_idx_images(images, 32, 6, 6, px);
    fx_write_idx_labels(labels, 32, lab);
    dfx_image_set *set;
    ck_assert_msg(dfx_image_set_open(images, labels, &set) == DFX_OK, "%s", dfx_error_message());
    int64_t correct0, total, conf[4];
    ck_assert_msg(dfx_classifier_accuracy(m0, set, NULL, &correct0, &total, conf) == DFX_OK, "%s",
                  dfx_error_message());
    ck_assert_int_eq(total, 32);
    dfx_instance_destroy(m0);

    ck_assert_msg(fx_train_tiny(reg, tmpdir, 60, 5) == DFX_OK, "%s", dfx_error_message());
    double first, last;
    first_last_loss(&first, &last);
    ck_assert_msg(last < 0.25 * first && last < 0.1, "loss %g -> %g", first, last);
    /* the checkpoint reads back from the output folder and from its classifier/ */
    const char *where[2] = {"out", "out/classifier"};
    for (int k = 0; k < 2; k++) {
        char sec[4400];
        snprintf(sec, sizeof sec, "{type: classifier, path: '%s'}", fx_path(tmpdir, where[k]));
        dfx_instance *m;
        ck_assert_msg(open_model(sec, &m) == DFX_OK, "%s", dfx_error_message());
        int64_t correct;
        ck_assert_int_eq(dfx_classifier_accuracy(m, set, NULL, &correct, &total, conf), DFX_OK);
        ck_assert_int_eq(total, 32);
        ck_assert_msg(correct == 32, "%lld of 32 right after training (%lld before)", (long long)correct,
                      (long long)correct0);
        ck_assert_int_eq(conf[0], 16);
        ck_assert_int_eq(conf[3], 16);
        dfx_instance_destroy(m);
    }
    dfx_image_set_destroy(set);
}
END_TEST

START_TEST(test_features_and_probs)
{
    dfx_instance *m = tiny_random(7);
    uint8_t px[10 * 36];
    fx_make_images(10, 6, 6, 3, NULL, px, NULL);
    char images[4200];
    snprintf(images, sizeof images, "%s", fx_path(tmpdir, "ten.idx"));
    fx_write_idx_images(images, 10, 6, 6, px);
    dfx_image_set *set;
    ck_assert_int_eq(dfx_image_set_open(images, NULL, &set), DFX_OK);
    ck_assert_int_eq(dfx_image_set_count(set), 10);
    ck_assert(!dfx_image_set_has_labels(set));
    int64_t shape[3];
    dfx_image_set_shape(set, shape);
    ck_assert_int_eq(shape[0], 1);
    ck_assert_int_eq(shape[1], 6);
    ck_assert_int_eq(shape[2], 6);

    /* padding: centred in -1, the pixels as x / 127.5 - 1 */
    float x[2 * 64];
    ck_assert_int_eq(dfx_image_set_read(set, 3, 2, 8, 8, x, NULL), DFX_OK);
    for (int i = 0; i < 2; i++)
        for (int r = 0; r < 8; r++)
            for (int c = 0; c < 8; c++) {
                const bool inside = r >= 1 && r < 7 && c >= 1 && c < 7;
                const float want = inside ? px[(3 + i) * 36 + (r - 1) * 6 + (c - 1)] / 127.5f - 1 : -1.0f;
                ck_assert_float_eq_tol(x[i * 64 + r * 8 + c], want, 1e-6f);
            }
    ck_assert_int_eq(dfx_image_set_read(set, 9, 2, 8, 8, x, NULL), DFX_ERR_RANGE);
    ck_assert_int_eq(dfx_image_set_read(set, 0, 1, 5, 8, x, NULL), DFX_ERR_RANGE);
    int64_t lab;
    ck_assert_int_eq(dfx_image_set_read(set, 0, 1, 8, 8, x, &lab), DFX_ERR_INVALID_ARG);

    /* batches of 3 (the last one short) and of 10 give the same rows */
    enum { F = 8, K = 2 };
    float f3[10 * F], p3[10 * K], f10[10 * F], p10[10 * K];
    dfx_classify_params cp;
    dfx_classify_params_init(&cp);
    ck_assert_int_eq(cp.batch, 100);
    cp.batch = 3;
    ck_assert_msg(dfx_classifier_run(m, set, &cp, f3, p3) == DFX_OK, "%s", dfx_error_message());
    cp.batch = 10;
    ck_assert_int_eq(dfx_classifier_run(m, set, &cp, f10, p10), DFX_OK);
    ck_assert_double_le(test_max_abs_diff(f3, f10, 10 * F), 1e-5 * test_max_abs(f10, 10 * F));
    ck_assert_double_le(test_max_abs_diff(p3, p10, 10 * K), 1e-6);
    for (int i = 0; i < 10; i++) {
        ck_assert_float_eq_tol(p10[i * K] + p10[i * K + 1], 1.0f, 1e-6f);
        ck_assert(p10[i * K] > 0 && p10[i * K + 1] > 0);
    }
    ck_assert_double_gt(test_max_abs(f10, 10 * F), 0);
    /* limit: the first images only, NULL outputs allowed */
    float f4[4 * F];
    cp.limit = 4;
    ck_assert_int_eq(dfx_classifier_run(m, set, &cp, f4, NULL), DFX_OK);
    ck_assert_double_le(test_max_abs_diff(f4, f10, 4 * F), 1e-5 * test_max_abs(f10, 10 * F));

    /* FID statistics: the features' mean and their count */
    dfx_fid_stats s;
    cp.limit = 0;
    ck_assert_int_eq(dfx_classifier_fid_stats(m, set, &cp, &s), DFX_OK);
    ck_assert_int_eq(s.d, F);
    ck_assert_int_eq(s.n, 10);
    for (int j = 0; j < F; j++) {
        double mean = 0;
        for (int i = 0; i < 10; i++)
            mean += f10[i * F + j] / 10.0;
        ck_assert_double_eq_tol(s.mean[j], mean, 1e-5 * test_max_abs(f10, 10 * F));
    }
    dfx_fid_stats_fini(&s);
    ck_assert_int_eq(dfx_classifier_accuracy(m, set, NULL, &(int64_t){0}, &(int64_t){0}, NULL),
                     DFX_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "ten.idx: no labels"));
    dfx_image_set_destroy(set);

    /* images larger than the classifier's, or of other channels, are refused */
    uint8_t big[2 * 100] = {0};
    const char *bigpath = fx_path(tmpdir, "big.idx");
    fx_write_idx_images(bigpath, 2, 10, 10, big);
    ck_assert_int_eq(dfx_image_set_open(bigpath, NULL, &set), DFX_OK);
    ck_assert_int_eq(dfx_classifier_run(m, set, NULL, NULL, NULL), DFX_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "big.idx: images of 1x10x10"));
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "the classifier takes 1x8x8"));
    dfx_image_set_destroy(set);

    /* a `dfx run` output: "samples" [N, C, H, W], or "image" [N, H, W, C] in [0, 1] */
    float samples[3 * 36], image[3 * 36];
    for (int i = 0; i < 3 * 36; i++) {
        samples[i] = px[i] / 127.5f - 1;
        image[i] = px[i] / 255.0f;
    }
    const int64_t ss[4] = {3, 1, 6, 6}, is[4] = {3, 6, 6, 1};
    dfx_tensor st_s = dfx_tensor_view(DFX_DTYPE_F32, 4, ss, samples);
    dfx_tensor st_i = dfx_tensor_view(DFX_DTYPE_F32, 4, is, image);
    const char *names[2] = {"samples", "image"};
    const dfx_tensor *ts[2] = {&st_s, &st_i};
    char one[4200], both[4200];
    snprintf(one, sizeof one, "%s", fx_path(tmpdir, "samples.safetensors"));
    snprintf(both, sizeof both, "%s", fx_path(tmpdir, "both.safetensors"));
    ck_assert_int_eq(dfx_safetensors_write(one, 1, names, ts, 0, NULL, NULL), DFX_OK);
    ck_assert_int_eq(dfx_safetensors_write(both, 2, names, ts, 0, NULL, NULL), DFX_OK);
    const char *files[2] = {one, both};
    for (int k = 0; k < 2; k++) {
        ck_assert_msg(dfx_image_set_open(files[k], NULL, &set) == DFX_OK, "%s", dfx_error_message());
        ck_assert_int_eq(dfx_image_set_count(set), 3);
        float f[3 * F];
        ck_assert_int_eq(dfx_classifier_run(m, set, NULL, f, NULL), DFX_OK);
        ck_assert_double_le(test_max_abs_diff(f, f10, 3 * F), 1e-5 * test_max_abs(f10, 10 * F));
        dfx_image_set_destroy(set);
    }
    /* not images */
    dfx_fid_stats fs;
    ck_assert_int_eq(dfx_fid_stats_init(&fs, 4), DFX_OK);
    fs.n = 5;
    const char *statsf = fx_path(tmpdir, "stats.safetensors");
    ck_assert_int_eq(dfx_fid_stats_save(&fs, statsf), DFX_OK);
    dfx_fid_stats_fini(&fs);
    ck_assert(dfx_fid_stats_is_file(statsf));
    ck_assert(!dfx_fid_stats_is_file(one));
    ck_assert(!dfx_fid_stats_is_file(images));
    ck_assert_int_eq(dfx_image_set_open(statsf, NULL, &set), DFX_ERR_NOT_FOUND);
    ck_assert_ptr_null(set);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "stats.safetensors: no tensor 'image' or 'samples'"));
    ck_assert_int_eq(dfx_image_set_open(one, images, &set), DFX_ERR_INVALID_ARG);
    dfx_instance_destroy(m);
}
END_TEST

/* A config file with text, then the error of building a classifier from it. */
static void expect_config_error(const char *text, const char *expect)
{
    const char *cfg = fx_path(tmpdir, "bad.json");
    fx_write(cfg, text, strlen(text));
    char sec[4400];
    snprintf(sec, sizeof sec, "{type: classifier, config: '%s'}", cfg);
    dfx_instance *m = NULL;
    ck_assert_msg(open_model(sec, &m) != DFX_OK, "no error for:\n%s", text);
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(dfx_error_message(), "bad.json") && strstr(dfx_error_message(), expect),
                  "expected \"%s\" naming bad.json, got: %s", expect, dfx_error_message());
}

#define CFG(fields)                                                                               \
    "{\"_class_name\": \"DfxClassifier\", \"in_channels\": 1, \"sample_size\": 8, " fields "}"

START_TEST(test_config_errors)
{
    expect_config_error(CFG("\"block_out_channels\": [4, 8], \"norm_num_groups\": 2, \"feature_dim\": 8"),
                        "field 'num_classes' is missing");
    expect_config_error(CFG("\"num_classes\": 2, \"block_out_channels\": [4, 8], \"norm_num_groups\": 3, "
                            "\"feature_dim\": 8"),
                        "field 'norm_num_groups': does not divide every entry of block_out_channels");
    expect_config_error(CFG("\"num_classes\": 2, \"block_out_channels\": [], \"norm_num_groups\": 2, "
                            "\"feature_dim\": 8"),
                        "field 'block_out_channels': expected a list of 1 to 6 integers");
    expect_config_error(CFG("\"num_classes\": 1, \"block_out_channels\": [4], \"norm_num_groups\": 2, "
                            "\"feature_dim\": 8"),
                        "field 'num_classes': expected an integer in [2, ");
    expect_config_error(CFG("\"num_classes\": 2, \"block_out_channels\": [4], \"norm_num_groups\": 2, "
                            "\"feature_dim\": 8, \"dropout\": 0.1"),
                        "field 'dropout': unknown to dfx's classifier");
    expect_config_error(CFG("\"num_classes\": 2, \"block_out_channels\": [4], \"norm_num_groups\": 2, "
                            "\"feature_dim\": \"x\""),
                        "field 'feature_dim': expected an integer");
    expect_config_error("{\"_class_name\": \"UNet2DModel\"}", "_class_name is 'UNet2DModel', not DfxClassifier");
    expect_config_error("{\"_class_name\": ", "bad.json");

    /* path and config: exactly one */
    char cfg[4200], never[4200];
    snprintf(cfg, sizeof cfg, "%s", fx_path(tmpdir, "tiny.json"));
    snprintf(never, sizeof never, "%s", fx_path(tmpdir, "never"));
    fx_write(cfg, TINY_CONFIG, strlen(TINY_CONFIG));
    char sec[8800];
    snprintf(sec, sizeof sec, "{type: classifier, config: '%s', path: '%s'}", cfg, tmpdir);
    dfx_instance *m;
    ck_assert_int_eq(open_model(sec, &m), DFX_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "not both"));
    ck_assert_int_eq(open_model("{type: classifier}", &m), DFX_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "no checkpoint"));
    snprintf(sec, sizeof sec, "{type: classifier, path: '%s'}", tmpdir);
    ck_assert_int_ne(open_model(sec, &m), DFX_OK);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "config.json"));

    /* a classifier does not sample, nor train as a denoiser */
    char yaml[16000];
    snprintf(yaml, sizeof yaml,
             "dfx: 1\npipeline: sample\nmodel: {type: classifier, config: '%s'}\nscheduler: {type: linear}\n"
             "sampler: {type: ddim}\noutput: {path: x.safetensors}\n", cfg);
    dfx_pipeline *p;
    ck_assert_int_eq(dfx_pipeline_parse(&p, yaml, strlen(yaml), "s.yaml"), DFX_OK);
    ck_assert_int_eq(dfx_pipeline_resolve(p, reg), DFX_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "is a classifier, not a denoiser"));
    dfx_pipeline_destroy(p);
    snprintf(yaml, sizeof yaml,
             "dfx: 1\npipeline: train\nmodel: {type: classifier, config: '%s'}\nscheduler: {type: linear}\n"
             "data: {images: '%s'}\noutput: {path: '%s'}\n", cfg, cfg, never);
    ck_assert_int_eq(dfx_pipeline_parse(&p, yaml, strlen(yaml), "t.yaml"), DFX_OK);
    ck_assert_int_eq(dfx_pipeline_resolve(p, reg), DFX_OK);
    ck_assert_int_eq(dfx_pipeline_run(p, NULL), DFX_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "is a classifier: set train.objective: classify"));
    dfx_pipeline_destroy(p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("classifier");
    TCase *tc = tcase_create("classifier");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_predict_is_the_tape_forward);
    tcase_add_test(tc, test_overfit);
    tcase_add_test(tc, test_features_and_probs);
    tcase_add_test(tc, test_config_errors);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
