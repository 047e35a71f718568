/* Image outputs end to end through the built dfx, with the probe model's
 * samples [B, C, H, W]: PNG files (one per image, their names, pixels equal
 * to diffusers' conversion computed here, the `parameters` and `dfx` text
 * chunks), the .safetensors `image` tensor, `dfx run IMAGE.png` reproducing
 * an image bit for bit (and where it writes), and the failures: a PNG
 * without a pipeline, a corrupt one, shapes PNG cannot hold, and a batch
 * that fails half-way leaving no file.
 *
 * usage: test_images DFX_EXECUTABLE SOURCE_TESTS_DIR */
#include <dirent.h>
#include <limits.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "core/internal.h"
#include "testutil.h"

static const char *dfx_exe;
static char pipeline[4096];

#define ASSERT_HAS(text, sub) ck_assert_msg(strstr((text), (sub)) != NULL, "expected \"%s\" in:\n%s", (sub), (text))

/* Runs dfx with the arguments (NULL-terminated); returns the exit status,
 * stderr in *err (freed by the caller). */
static int dfx(char **err, ...)
{
    char *argv[48] = {(char *)dfx_exe};
    int n = 1;
    va_list ap;
    va_start(ap, err);
    for (char *a; n < 47 && (a = va_arg(ap, char *));)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    char *out;
    int rc = test_run(argv, &out, err);
    free(out);
    return rc;
}

/* The probe pipeline as an image model: v-prediction gives samples that
 * mostly lie in [-1, 1] with some beyond (so both the scale and the clamp
 * show), and euler_ancestral draws noise at every step (so shared and
 * per_image batches differ). `shape` is "[B, C, H, W]". */
static int run_probe(char **err, const char *shape, const char *noise, const char *seed, const char *out)
{
    char set_shape[64], set_noise[64], set_out[4400];
    snprintf(set_shape, sizeof set_shape, "shape=%s", shape);
    snprintf(set_noise, sizeof set_noise, "noise=%s", noise);
    snprintf(set_out, sizeof set_out, "output.path=%s", out);
    return dfx(err, "run", pipeline, "--quiet", "--set", "scheduler.type=linear", "--set",
               "sampler.type=euler_ancestral", "--set", "model.prediction=v_prediction", "--set", set_shape,
               "--set", set_noise, "--seed", seed, "--set", set_out, NULL);
}

static const char *in_dir(char *buf, const char *dir, const char *name)
{
    snprintf(buf, 4300, "%s/%s", dir, name);
    return buf;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static dfx_tensor *read_tensor(const char *path, const char *name)
{
    dfx_safetensors *st;
    dfx_tensor *t;
    ck_assert_msg(dfx_safetensors_open(path, &st) == DFX_OK, "%s", dfx_error_message());
    ck_assert_msg(dfx_safetensors_read(st, name, DFX_DTYPE_F32, &t) == DFX_OK, "%s", dfx_error_message());
    dfx_safetensors_close(st);
    return t;
}

static void read_png(const char *path, dfx__png_image *img)
{
    ck_assert_msg(dfx__png_read(path, img) == DFX_OK, "%s", dfx_error_message());
}

/* diffusers, written out here on its own: VaeImageProcessor.denormalize
 * ((x / 2 + 0.5).clamp(0, 1), float32), numpy_to_pil ((x * 255).round(),
 * numpy rounding half to even, like nearbyintf). */
static float np_image(float x)
{
    float v = x / 2.0f + 0.5f;
    return fminf(fmaxf(v, 0.0f), 1.0f);
}

static unsigned char pil_pixel(float x)
{
    return (unsigned char)nearbyintf(np_image(x) * 255.0f);
}

/* PNG image k of a batch of samples [B, C, H, W] holds pil_pixel of each. */
static void expect_pixels(const dfx__png_image *img, const dfx_tensor *samples, int64_t k)
{
    const int64_t c = samples->shape[1], h = samples->shape[2], w = samples->shape[3];
    ck_assert_int_eq(img->width, w);
    ck_assert_int_eq(img->height, h);
    ck_assert_int_eq(img->channels, c);
    const float *x = (const float *)samples->data + k * c * h * w;
    int clamped = 0, inside = 0;
    for (int64_t y = 0; y < h; y++)
        for (int64_t i = 0; i < w; i++)
            for (int64_t ch = 0; ch < c; ch++) {
                float v = x[(ch * h + y) * w + i];
                unsigned char want = pil_pixel(v), got = img->pixels[(y * w + i) * c + ch];
                ck_assert_msg(got == want, "image %lld pixel (%lld, %lld) channel %lld: %d, want %d (sample %.9g)",
                              (long long)k, (long long)i, (long long)y, (long long)ch, got, want, v);
                clamped += fabsf(v) > 1;
                inside += got > 0 && got < 255;
            }
    /* the test means something: both the scale and the clamp are exercised */
    ck_assert_int_gt(clamped, 0);
    ck_assert_int_gt(inside, (int)(h * w * c / 2));
}

START_TEST(png_and_safetensors)
{
    char *dir = test_tmpdir(), *err, path[4300], name[4300];

    /* the samples, and the image as diffusers' output_type="np" */
    ck_assert_msg(run_probe(&err, "[3, 3, 16, 16]", "shared", "7", in_dir(path, dir, "s.safetensors")) == 0, "%s", err);
    free(err);
    dfx_tensor *samples = read_tensor(path, "samples"), *np = read_tensor(path, "image");
    ck_assert_int_eq(np->ndim, 4);
    ck_assert(np->shape[0] == 3 && np->shape[1] == 16 && np->shape[2] == 16 && np->shape[3] == 3);
    const float *x = samples->data, *img = np->data;
    for (int64_t n = 0; n < 3; n++)
        for (int64_t y = 0; y < 16; y++)
            for (int64_t i = 0; i < 16; i++)
                for (int64_t c = 0; c < 3; c++) {
                    float want = np_image(x[((n * 3 + c) * 16 + y) * 16 + i]);
                    float got = img[((n * 16 + y) * 16 + i) * 3 + c];
                    ck_assert_msg(got == want, "image[%lld,%lld,%lld,%lld] = %.9g, want %.9g", (long long)n,
                                  (long long)y, (long long)i, (long long)c, got, want);
                }
    dfx_tensor_destroy(np);

    /* B = 3: b-0000.png ... b-0002.png, and no b.png */
    ck_assert_msg(run_probe(&err, "[3, 3, 16, 16]", "shared", "7", in_dir(path, dir, "b.png")) == 0, "%s", err);
    free(err);
    ck_assert_int_ne(access(path, F_OK), 0);
    ck_assert_int_eq(count_entries(dir), 4);
    for (int k = 0; k < 3; k++) {
        char file[32];
        snprintf(file, sizeof file, "b-%04d.png", k);
        dfx__png_image png;
        read_png(in_dir(name, dir, file), &png);
        expect_pixels(&png, samples, k);
        ck_assert_int_eq(png.ntext, 2);
        /* shared noise: each image is its batch's, seed and all */
        ck_assert_str_eq(dfx__png_image_text(&png, "parameters"),
                         "Steps: 10, Sampler: Euler a, Schedule type: Automatic, Seed: 7, Size: 16x16, "
                         "Model: probe");
        const char *yaml = dfx__png_image_text(&png, "dfx");
        ck_assert_ptr_nonnull(yaml);
        ASSERT_HAS(yaml, "seed: 7\n");
        ASSERT_HAS(yaml, "shape: [3, 3, 16, 16]\n");
        ASSERT_HAS(yaml, "noise: shared\n");
        ASSERT_HAS(yaml, in_dir(name, dir, "b.png\n"));
        dfx__png_image_fini(&png);
    }
    dfx_tensor_destroy(samples);

    /* B = 1, gray: exactly output.path */
    ck_assert_msg(run_probe(&err, "[1, 1, 8, 12]", "shared", "3", in_dir(path, dir, "g.safetensors")) == 0, "%s", err);
    free(err);
    samples = read_tensor(path, "samples");
    ck_assert_msg(run_probe(&err, "[1, 1, 8, 12]", "shared", "3", in_dir(path, dir, "g.png")) == 0, "%s", err);
    free(err);
    ck_assert_int_eq(count_entries(dir), 6);
    dfx__png_image png;
    read_png(path, &png);
    expect_pixels(&png, samples, 0);
    ck_assert_str_eq(dfx__png_image_text(&png, "parameters"),
                     "Steps: 10, Sampler: Euler a, Schedule type: Automatic, Seed: 3, Size: 12x8, Model: probe");
    dfx__png_image_fini(&png);
    dfx_tensor_destroy(samples);

    /* per_image noise: image k is seed + k alone, in its text and its pipeline */
    ck_assert_msg(run_probe(&err, "[2, 3, 8, 8]", "per_image", "40", in_dir(path, dir, "p.png")) == 0, "%s", err);
    free(err);
    read_png(in_dir(path, dir, "p-0001.png"), &png);
    ASSERT_HAS(dfx__png_image_text(&png, "parameters"), ", Seed: 41, Size: 8x8,");
    const char *yaml = dfx__png_image_text(&png, "dfx");
    ASSERT_HAS(yaml, "seed: 41\n");
    ASSERT_HAS(yaml, "shape: [1, 3, 8, 8]\n");
    ASSERT_HAS(yaml, in_dir(name, dir, "p-0001.png\n"));
    dfx__png_image_fini(&png);
    test_rmtree(dir);
    free(dir);
}
END_TEST

/* The pixels of two PNG files are the same, byte for byte. */
static void expect_same_pixels(const char *a, const char *b)
{
    dfx__png_image x, y;
    read_png(a, &x);
    read_png(b, &y);
    ck_assert_int_eq(x.width, y.width);
    ck_assert_int_eq(x.height, y.height);
    ck_assert_int_eq(x.channels, y.channels);
    ck_assert_msg(memcmp(x.pixels, y.pixels, (size_t)x.width * x.height * x.channels) == 0, "%s and %s differ", a,
                  b);
    ck_assert_str_eq(dfx__png_image_text(&x, "parameters"), dfx__png_image_text(&y, "parameters"));
    dfx__png_image_fini(&x);
    dfx__png_image_fini(&y);
}

START_TEST(rerun)
{
    char *dir = test_tmpdir(), *err, path[4300], other[4300], set[4400];

    /* image 1 of a per_image batch, re-run alone, beside itself */
    ck_assert_msg(run_probe(&err, "[3, 3, 16, 16]", "per_image", "5", in_dir(path, dir, "b.png")) == 0, "%s", err);
    free(err);
    ck_assert_msg(dfx(&err, "run", in_dir(path, dir, "b-0001.png"), "--quiet", NULL) == 0, "%s", err);
    snprintf(set, sizeof set, "writing %s/b-0001-rerun.png instead", dir);
    ASSERT_HAS(err, set);
    free(err);
    ck_assert_int_eq(count_entries(dir), 4);
    expect_same_pixels(in_dir(path, dir, "b-0001.png"), in_dir(other, dir, "b-0001-rerun.png"));

    /* a single image under shared noise */
    ck_assert_msg(run_probe(&err, "[1, 3, 16, 16]", "shared", "9", in_dir(path, dir, "s.png")) == 0, "%s", err);
    free(err);
    ck_assert_msg(dfx(&err, "run", path, "--quiet", NULL) == 0, "%s", err);
    ASSERT_HAS(err, "its pipeline would write over it");
    free(err);
    expect_same_pixels(path, in_dir(other, dir, "s-rerun.png"));

    /* an image of a shared batch brings its whole batch back */
    ck_assert_msg(run_probe(&err, "[2, 3, 8, 8]", "shared", "11", in_dir(path, dir, "c.png")) == 0, "%s", err);
    free(err);
    ck_assert_msg(dfx(&err, "run", in_dir(path, dir, "c-0001.png"), "--quiet", NULL) == 0, "%s", err);
    free(err);
    expect_same_pixels(in_dir(path, dir, "c-0000.png"), in_dir(other, dir, "c-rerun-0000.png"));
    expect_same_pixels(in_dir(path, dir, "c-0001.png"), in_dir(other, dir, "c-rerun-0001.png"));

    /* --set output.path chooses, without a note; --seed changes the image */
    snprintf(set, sizeof set, "output.path=%s/chosen.png", dir);
    ck_assert_msg(dfx(&err, "run", in_dir(path, dir, "s.png"), "--quiet", "--set", set, NULL) == 0, "%s", err);
    ck_assert_msg(strstr(err, "write over") == NULL, "%s", err);
    free(err);
    expect_same_pixels(path, in_dir(other, dir, "chosen.png"));
    ck_assert_msg(dfx(&err, "run", path, "--quiet", "--set", set, "--seed", "10", NULL) == 0, "%s", err);
    free(err);
    dfx__png_image a, b;
    read_png(path, &a);
    read_png(other, &b);
    ck_assert(memcmp(a.pixels, b.pixels, 16 * 16 * 3) != 0);
    ASSERT_HAS(dfx__png_image_text(&b, "parameters"), "Seed: 10,");
    dfx__png_image_fini(&a);
    dfx__png_image_fini(&b);

    /* the signature decides, not the name: an image called .yaml re-runs, a
     * pipeline called .png runs */
    char data[4300], cmd[9000];
    snprintf(cmd, sizeof cmd, "cp '%s/s.png' '%s/image.yaml'", dir, dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(set, sizeof set, "output.path=%s/from_yaml_name.png", dir);
    ck_assert_msg(dfx(&err, "run", in_dir(data, dir, "image.yaml"), "--quiet", "--set", set, NULL) == 0, "%s", err);
    free(err);
    expect_same_pixels(in_dir(path, dir, "s.png"), in_dir(other, dir, "from_yaml_name.png"));
    snprintf(cmd, sizeof cmd, "cp '%s' '%s/pipeline.png'", pipeline, dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(set, sizeof set, "output.path=%s/o.safetensors", dir);
    ck_assert_msg(dfx(&err, "run", in_dir(data, dir, "pipeline.png"), "--quiet", "--set", set, "--set",
                      "scheduler.type=linear", "--set", "sampler.type=ddim", NULL) == 0, "%s", err);
    free(err);
    test_rmtree(dir);
    free(dir);
}
END_TEST

/* Runs `cmd` with /bin/sh (for a working folder of its own). */
static int sh(char **err, const char *cmd)
{
    char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
    char *out;
    int rc = test_run(argv, &out, err);
    free(out);
    return rc;
}

START_TEST(relative_paths)
{
    /* a pipeline with relative paths, run from its grandparent folder: the
     * image stores them absolute, so it re-runs from anywhere */
    char *dir = test_tmpdir(), *err, path[4300], other[4300], cmd[9000];
    char *real = realpath(dir, NULL);
    ck_assert_ptr_nonnull(real);
    snprintf(path, sizeof path, "%s/sub", dir);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    /* the starting noise, from a file named relative to the pipeline */
    int64_t shape[4] = {1, 3, 8, 8};
    dfx_tensor *noise;
    ck_assert_int_eq(dfx_tensor_create(&noise, DFX_DTYPE_F32, 4, shape), DFX_OK);
    for (int i = 0; i < 192; i++)
        ((float *)noise->data)[i] = sinf((float)i * 0.7f) * 1.5f;
    const char *names[] = {"x"};
    const dfx_tensor *ts[] = {noise};
    ck_assert_int_eq(dfx_safetensors_write(in_dir(path, dir, "sub/noise.safetensors"), 1, names, ts, 0, NULL, NULL),
                     DFX_OK);
    dfx_tensor_destroy(noise);
    FILE *f = fopen(in_dir(path, dir, "sub/p.yaml"), "w");
    ck_assert_ptr_nonnull(f);
    fputs("dfx: 1\npipeline: sample\nseed: 2\nshape: [1, 3, 8, 8]\nmodel: {type: probe, prediction: v_prediction}\n"
          "scheduler: {type: linear, steps: 10}\nsampler: {type: euler_ancestral}\n"
          "init: {noise: noise.safetensors#x}\noutput: {path: out/img.png}\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "cd '%s' && exec '%s' run sub/p.yaml --quiet", dir, dfx_exe);
    ck_assert_msg(sh(&err, cmd) == 0, "%s", err);
    free(err);
    dfx__png_image png;
    read_png(in_dir(path, dir, "sub/out/img.png"), &png);
    snprintf(cmd, sizeof cmd, "  noise: \"%s/sub/noise.safetensors#x\"\n", real);
    ASSERT_HAS(dfx__png_image_text(&png, "dfx"), cmd);
    snprintf(cmd, sizeof cmd, "  path: %s/sub/out/img.png\n", real);
    ASSERT_HAS(dfx__png_image_text(&png, "dfx"), cmd);
    dfx__png_image_fini(&png);
    snprintf(cmd, sizeof cmd, "cd / && exec '%s' run '%s/sub/out/img.png' --quiet", dfx_exe, dir);
    ck_assert_msg(sh(&err, cmd) == 0, "%s", err);
    free(err);
    expect_same_pixels(in_dir(path, dir, "sub/out/img.png"), in_dir(other, dir, "sub/out/img-rerun.png"));
    free(real);
    test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(failures)
{
    char *dir = test_tmpdir(), *err, path[4300], msg[4400];

    /* a PNG that dfx did not make, and a corrupt one */
    unsigned char px[4 * 4 * 3] = {0};
    const dfx__png_text text[] = {{"parameters", "Steps: 20, Sampler: Euler a"}};
    ck_assert_int_eq(dfx__png_write(in_dir(path, dir, "other.png"), px, 4, 4, 3, text, 1), DFX_OK);
    ck_assert_int_eq(dfx(&err, "run", path, NULL), 1);
    snprintf(msg, sizeof msg, "dfx: error: %s has no dfx pipeline in its metadata (not made by dfx?)\n", path);
    ck_assert_str_eq(err, msg);
    free(err);
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    fseek(f, 30, SEEK_SET); /* in IHDR's CRC */
    fputc(0x55, f);
    fclose(f);
    ck_assert_int_eq(dfx(&err, "run", path, NULL), 1);
    snprintf(msg, sizeof msg, "dfx: error: %s: corrupt PNG: IHDR: CRC error\n", path);
    ck_assert_str_eq(err, msg);
    free(err);
    unlink(path);

    /* shapes a PNG cannot hold: refused before sampling, nothing written */
    ck_assert_int_eq(run_probe(&err, "[1, 4, 8, 8]", "shared", "1", in_dir(path, dir, "x.png")), 1);
    ASSERT_HAS(err, "PNG images have 1 (gray) or 3 (RGB) channels; these samples are [1,4,8,8], 4 channels");
    free(err);
    ck_assert_int_eq(run_probe(&err, "[2, 3, 8]", "shared", "1", path), 1);
    ASSERT_HAS(err, "PNG output writes images [B, C, H, W] or draws 2-D points [B, 2]; these samples are [2,3,8]");
    free(err);
    ck_assert_int_eq(run_probe(&err, "[1, 3, 16385, 1]", "shared", "1", path), 1);
    ASSERT_HAS(err, "at most 16384 pixels a side");
    free(err);
    ck_assert_int_eq(count_entries(dir), 0);

    /* the second file of a batch cannot be written (a folder has its name):
     * the first is removed again, no temporary file stays */
    ck_assert_int_eq(mkdir(in_dir(path, dir, "f-0001.png"), 0755), 0);
    ck_assert_int_eq(run_probe(&err, "[3, 3, 8, 8]", "shared", "1", in_dir(path, dir, "f.png")), 1);
    ASSERT_HAS(err, "f-0001.png: rename failed");
    ASSERT_HAS(err, "(the 1 image of the batch already written was removed)");
    free(err);
    ck_assert_int_eq(count_entries(dir), 1);
    ck_assert_int_eq(access(in_dir(path, dir, "f-0000.png"), F_OK), -1);
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
    /* absolute: some runs start from another folder */
    dfx_exe = realpath(argv[1], NULL);
    if (!dfx_exe) {
        fprintf(stderr, "%s: %s not found\n", argv[0], argv[1]);
        return EXIT_FAILURE;
    }
    snprintf(pipeline, sizeof pipeline, "%s/data/scheduler_case.yaml", argv[2]);
    Suite *s = suite_create("images");
    TCase *tc = tcase_create("images");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, png_and_safetensors);
    tcase_add_test(tc, rerun);
    tcase_add_test(tc, relative_paths);
    tcase_add_test(tc, failures);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
