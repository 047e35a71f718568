/* Synthetic data for the classifier tests (test_classifier, test_eval):
 * idx files of small gray images in two brightness classes, a tiny
 * DfxClassifier config, and a classifier trained on them in-process. */
#ifndef DFX_TESTS_CLASSIFIER_FIXTURE_H
#define DFX_TESTS_CLASSIFIER_FIXTURE_H

#include "testutil.h"

/* 8x8 input, 2 classes, channels [4, 8], 8 features */
#define TINY_CONFIG                                                                              \
    "{\n  \"_class_name\": \"DfxClassifier\",\n  \"in_channels\": 1,\n  \"sample_size\": 8,\n"   \
    "  \"num_classes\": 2,\n  \"block_out_channels\": [4, 8],\n  \"norm_num_groups\": 2,\n"      \
    "  \"feature_dim\": 8\n}\n"

/* dir/name (static buffer, overwritten by the next call) */
static inline const char *fx_path(const char *dir, const char *name)
{
    static char buf[4200];
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

static inline void fx_write(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "%s", path);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

static inline void fx_put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

/* An idx file of n u8 images h x w. */
static inline void fx_write_idx_images(const char *path, int64_t n, int h, int w, const uint8_t *px)
{
    const size_t len = 16 + (size_t)(n * h * w);
    unsigned char *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);
    buf[0] = buf[1] = 0, buf[2] = 0x08, buf[3] = 3;
    fx_put_be32(buf + 4, (uint32_t)n);
    fx_put_be32(buf + 8, (uint32_t)h);
    fx_put_be32(buf + 12, (uint32_t)w);
    memcpy(buf + 16, px, (size_t)(n * h * w));
    fx_write(path, buf, len);
    free(buf);
}

static inline void fx_write_idx_labels(const char *path, int64_t n, const uint8_t *labels)
{
    const size_t len = 8 + (size_t)n;
    unsigned char *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);
    buf[0] = buf[1] = 0, buf[2] = 0x08, buf[3] = 1;
    fx_put_be32(buf + 4, (uint32_t)n);
    memcpy(buf + 8, labels, (size_t)n);
    fx_write(path, buf, len);
    free(buf);
}

static inline uint32_t fx_lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 33);
}

/* n images h x w: image i is of class `classes[i]` when classes is given,
 * else i % 2; class 0 dark (pixels in [10, 90)), class 1 bright ([160,
 * 240)), each pixel drawn from seed. Labels into labels (may be NULL). */
static inline void fx_make_images(int64_t n, int h, int w, uint64_t seed, const uint8_t *classes,
                                  uint8_t *px, uint8_t *labels)
{
    for (int64_t i = 0; i < n; i++) {
        const uint8_t c = classes ? classes[i] : (uint8_t)(i % 2);
        for (int k = 0; k < h * w; k++)
            px[i * h * w + k] = (uint8_t)((c ? 160 : 10) + fx_lcg(&seed) % 80);
        if (labels)
            labels[i] = c;
    }
}

/* Trains TINY_CONFIG on 32 8x8-padded 6x6 images (written to dir/train-
 * images.idx and dir/train-labels.idx) for `steps` steps into dir/out with
 * seed, in-process; returns the pipeline's status. */
static inline dfx_status fx_train_tiny(dfx_registry *reg, const char *dir, int64_t steps, uint64_t seed)
{
    uint8_t px[32 * 36], lab[32];
    fx_make_images(32, 6, 6, 11, NULL, px, lab);
    char images[4200], labels[4200], config[4200], out[4200];
    snprintf(images, sizeof images, "%s", fx_path(dir, "train-images.idx"));
    snprintf(labels, sizeof labels, "%s", fx_path(dir, "train-labels.idx"));
    snprintf(config, sizeof config, "%s", fx_path(dir, "tiny.json"));
    snprintf(out, sizeof out, "%s", fx_path(dir, "out"));
    fx_write_idx_images(images, 32, 6, 6, px);
    fx_write_idx_labels(labels, 32, lab);
    fx_write(config, TINY_CONFIG, strlen(TINY_CONFIG));
    char yaml[20000];
    snprintf(yaml, sizeof yaml,
             "dfx: 1\npipeline: train\nseed: %llu\nmodel: {type: classifier, config: '%s', seed: 2}\n"
             "data: {images: '%s', labels: '%s', pad_to: [8, 8]}\n"
             "train: {objective: classify, steps: %lld, batch: 16, lr: 0.01, ema_decay: 0, log_every: 5}\n"
             "output: {path: '%s'}\n",
             (unsigned long long)seed, config, images, labels, (long long)steps, out);
    dfx_pipeline *p;
    ck_assert_msg(dfx_pipeline_parse(&p, yaml, strlen(yaml), "train.yaml") == DFX_OK, "%s",
                  dfx_error_message());
    dfx_status st = dfx_pipeline_resolve(p, reg);
    if (!st)
        st = dfx_pipeline_run(p, NULL);
    dfx_pipeline_destroy(p);
    return st;
}

#endif
