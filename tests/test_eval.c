/* `dfx eval` through the built dfx, with a tiny classifier trained on two
 * brightness classes: FID of a set with itself is 0 whichever format holds
 * it (idx, gzip idx, PNG folder, dfx run's safetensors, saved statistics),
 * FID between different sets is not, the Inception Score lies in [1,
 * classes], accuracy and its per-class lines; bad input fails with a
 * message naming the file; Ctrl-C stops a long pass with exit 130.
 *
 * usage: test_eval DFX_EXECUTABLE */
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <zlib.h>

#include "classifier_fixture.h"
#include "core/internal.h"
#include "dfx/metrics.h"

static const char *dfx_exe;
static char tmpdir[64], cls[4200];

enum { N = 40 };

/* Runs dfx with up to 30 arguments (NULL-terminated); returns the exit
 * status, stdout and stderr in out and err (freed by the caller). */
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

/* a path under tmpdir in a buffer of its own */
static char *at(const char *name)
{
    static char bufs[8][4200];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", tmpdir, name);
    return b;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* The sets: mixed (classes alternating), dark and bright, N 6x6 images
 * each, and mixed again as gzip idx, a PNG folder, safetensors and a folder
 * of two safetensors files; the
 * classifier trained once for all tests. */
static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dfx_eval_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    dfx_registry *reg;
    ck_assert_msg(dfx_registry_create(&reg, NULL, 0) == DFX_OK, "%s", dfx_error_message());
    ck_assert_msg(fx_train_tiny(reg, tmpdir, 40, 1) == DFX_OK, "%s", dfx_error_message());
    dfx_registry_destroy(reg);
    snprintf(cls, sizeof cls, "%s/out", tmpdir);

    uint8_t px[N * 36], lab[N], dark[N], bright[N];
    memset(dark, 0, sizeof dark);
    memset(bright, 1, sizeof bright);
    fx_make_images(N, 6, 6, 23, NULL, px, lab);
    fx_write_idx_images(at("mixed.idx"), N, 6, 6, px);
    fx_write_idx_labels(at("mixed-labels.idx"), N, lab);
    /* gzip */
    gzFile gz = gzopen(at("mixed.idx.gz"), "wb");
    ck_assert_ptr_nonnull(gz);
    FILE *f = fopen(at("mixed.idx"), "rb");
    unsigned char buf[16 + N * 36];
    ck_assert_uint_eq(fread(buf, 1, sizeof buf, f), sizeof buf);
    fclose(f);
    ck_assert_int_eq(gzwrite(gz, buf, sizeof buf), (int)sizeof buf);
    ck_assert_int_eq(gzclose(gz), Z_OK);
    /* PNGs */
    ck_assert_int_eq(mkdir(at("mixed-png"), 0777), 0);
    for (int i = 0; i < N; i++) {
        char name[64];
        snprintf(name, sizeof name, "mixed-png/s-%04d.png", i);
        ck_assert_int_eq(dfx__png_write(at(name), px + i * 36, 6, 6, 1, NULL, 0), DFX_OK);
    }
    /* dfx run's samples [N, 1, 6, 6] in [-1, 1] */
    float *s = malloc(sizeof(float) * N * 36);
    for (int i = 0; i < N * 36; i++)
        s[i] = px[i] / 127.5f - 1;
    const int64_t shape[4] = {N, 1, 6, 6};
    dfx_tensor t = dfx_tensor_view(DFX_DTYPE_F32, 4, shape, s);
    const char *names[1] = {"samples"};
    const dfx_tensor *ts[1] = {&t};
    ck_assert_int_eq(dfx_safetensors_write(at("mixed.safetensors"), 1, names, ts, 0, NULL, NULL), DFX_OK);
    /* and split in two runs' outputs: 25 images, then 15 */
    ck_assert_int_eq(mkdir(at("mixed-parts"), 0777), 0);
    const int64_t first[4] = {25, 1, 6, 6}, rest[4] = {N - 25, 1, 6, 6};
    t = dfx_tensor_view(DFX_DTYPE_F32, 4, first, s);
    ck_assert_int_eq(dfx_safetensors_write(at("mixed-parts/a.safetensors"), 1, names, ts, 0, NULL, NULL), DFX_OK);
    t = dfx_tensor_view(DFX_DTYPE_F32, 4, rest, s + 25 * 36);
    ck_assert_int_eq(dfx_safetensors_write(at("mixed-parts/b.safetensors"), 1, names, ts, 0, NULL, NULL), DFX_OK);
    free(s);

    fx_make_images(N, 6, 6, 24, dark, px, NULL);
    fx_write_idx_images(at("dark.idx"), N, 6, 6, px);
    fx_make_images(N, 6, 6, 25, bright, px, NULL);
    fx_write_idx_images(at("bright.idx"), N, 6, 6, px);
}

static void teardown(void)
{
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* The value after `key` in text. */
static double value_after(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    ck_assert_msg(p != NULL, "no \"%s\" in:\n%s", key, text);
    char *end;
    double v = strtod(p + strlen(key), &end);
    ck_assert_msg(end != p + strlen(key), "no number after \"%s\" in:\n%s", key, text);
    return v;
}

/* FID of a and b (the command must succeed). */
static double fid(const char *a, const char *b, char **out_text)
{
    char *out, *err;
    int rc = dfx(&out, &err, "eval", "fid", a, b, "--classifier", cls, "--batch", "7", NULL);
    ck_assert_msg(rc == 0, "eval fid %s %s: exit %d: %s", a, b, rc, err);
    const double v = value_after(out, "FID ");
    free(err);
    if (out_text)
        *out_text = out;
    else
        free(out);
    return v;
}

START_TEST(test_fid)
{
    char *out;
    const double self = fid(at("mixed.idx"), at("mixed.idx"), &out);
    ck_assert_msg(fabs(self) < 1e-6, "FID of a set with itself: %g", self);
    ASSERT_HAS(out, "(A: 40 images, B: 40 images; features: dfx classifier ");
    ASSERT_HAS(out, "/out, 8-d)");
    free(out);
    /* the same images in every format */
    const char *same[] = {"mixed.idx.gz", "mixed-png", "mixed.safetensors", "mixed-parts"};
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        const double v = fid(at("mixed.idx"), at(same[i]), NULL);
        ck_assert_msg(fabs(v) < 1e-6, "FID of mixed.idx and %s: %g", same[i], v);
    }
    /* different sets */
    const double db = fid(at("dark.idx"), at("bright.idx"), NULL);
    const double dm = fid(at("dark.idx"), at("mixed.idx"), NULL);
    ck_assert_msg(db > 1e-2 && db > 1e4 * fabs(self), "FID dark/bright %g (self %g)", db, self);
    ck_assert_msg(dm > 1e-3 && dm < db, "FID dark/mixed %g, dark/bright %g", dm, db);
    /* --limit */
    char *err;
    ck_assert_int_eq(dfx(&out, &err, "eval", "fid", at("dark.idx"), at("mixed.idx"), "--classifier", cls, "--limit",
                         "10", NULL), 0);
    ASSERT_HAS(out, "(A: 10 images, B: 10 images;");
    free(out), free(err);
    /* statistics saved once, then used as A */
    ck_assert_int_eq(dfx(&out, &err, "eval", "fid", at("dark.idx"), "--save-stats", at("dark.stats"),
                         "--classifier", cls, NULL), 0);
    ASSERT_HAS(err, "saved the statistics of ");
    ck_assert_str_eq(out, "");
    free(out), free(err);
    const double from_file = fid(at("dark.stats"), at("bright.idx"), &out);
    ASSERT_HAS(out, "(A: 40 images as saved statistics, B: 40 images;");
    free(out);
    ck_assert_double_eq_tol(from_file, db, 1e-5 * db);
}
END_TEST

START_TEST(test_is_and_accuracy)
{
    char *out, *err;
    ck_assert_int_eq(dfx(&out, &err, "eval", "is", at("mixed.idx"), "--classifier", cls, "--splits", "4", NULL), 0);
    const double mixed = value_after(out, "IS ");
    ASSERT_HAS(out, "(40 images, 4 splits; classifier ");
    ASSERT_HAS(out, "2 classes)");
    free(out), free(err);
    /* confident and balanced: near 2 classes; one class: near 1 */
    ck_assert_msg(mixed >= 1.5 && mixed <= 2.0 + 1e-9, "IS of the mixed set %g", mixed);
    ck_assert_int_eq(dfx(&out, &err, "eval", "is", at("dark.idx"), "--classifier", cls, "--splits", "1", NULL), 0);
    const double dark = value_after(out, "IS ");
    ck_assert_msg(dark >= 1.0 - 1e-9 && dark < 1.2, "IS of the dark set %g", dark);
    ASSERT_HAS(out, "\u00b1 0.0000 (40 images, 1 splits");
    free(out), free(err);

    ck_assert_int_eq(dfx(&out, &err, "eval", "accuracy", at("mixed.idx"), at("mixed-labels.idx"), "--classifier", cls,
                         NULL), 0);
    ASSERT_HAS(out, "accuracy 1.0000 (40 of 40 images; classifier ");
    ASSERT_HAS(out, "\n  class 0: 1.0000 (20 of 20)\n  class 1: 1.0000 (20 of 20)\n");
    free(out), free(err);
}
END_TEST

/* Reads tensor "samples" of path as float32 into a new tensor. */
static dfx_tensor *read_samples(const char *path)
{
    dfx_safetensors *f;
    dfx_tensor *t;
    ck_assert_msg(dfx_safetensors_open(path, &f) == DFX_OK, "%s", dfx_error_message());
    ck_assert_int_eq(dfx_safetensors_read(f, "samples", DFX_DTYPE_F32, &t), DFX_OK);
    dfx_safetensors_close(f);
    return t;
}

/* The noise baseline has each pixel's mean and variance over the set (two
 * classes of different brightness: far from one Gaussian per image), is
 * fixed by its seed, and scores a far larger FID than the set itself. */
START_TEST(test_noise_baseline)
{
    char *out, *err;
    ck_assert_int_eq(dfx(&out, &err, "eval", "noise", at("mixed.idx"), at("noise.safetensors"), "--count", "20000",
                         "--seed", "3", NULL), 0);
    ASSERT_HAS(out, "20000 images of Gaussian noise matched in each pixel's mean and variance to the first 40");
    free(out), free(err);
    uint8_t px[N * 36], lab[N];
    fx_make_images(N, 6, 6, 23, NULL, px, lab);
    dfx_tensor *t = read_samples(at("noise.safetensors"));
    ck_assert_int_eq(t->shape[0], 20000);
    ck_assert_int_eq(t->shape[1] * t->shape[2] * t->shape[3], 36);
    const float *y = t->data;
    for (int j = 0; j < 36; j++) {
        double m = 0, v = 0, gm = 0, gv = 0;
        for (int i = 0; i < N; i++)
            m += (px[i * 36 + j] / 127.5 - 1) / N;
        for (int i = 0; i < N; i++)
            v += pow(px[i * 36 + j] / 127.5 - 1 - m, 2) / N;
        for (int64_t i = 0; i < 20000; i++)
            gm += y[i * 36 + j] / 20000.0;
        for (int64_t i = 0; i < 20000; i++)
            gv += pow(y[i * 36 + j] - gm, 2) / 20000.0;
        /* 5 standard errors of the mean; the variance's is 1% */
        ck_assert_msg(fabs(gm - m) < 5 * sqrt(v / 20000), "pixel %d: mean %g, the set's %g", j, gm, m);
        ck_assert_msg(fabs(gv / v - 1) < 0.05, "pixel %d: variance %g, the set's %g", j, gv, v);
    }
    dfx_tensor_destroy(t);
    /* the same seed draws the same noise; another seed other noise */
    ck_assert_int_eq(dfx(&out, &err, "eval", "noise", at("mixed.idx"), at("noise3.safetensors"), "--count", "100",
                         "--seed", "3", NULL), 0);
    free(out), free(err);
    ck_assert_int_eq(dfx(&out, &err, "eval", "noise", at("mixed.idx"), at("noise4.safetensors"), "--count", "100",
                         "--seed", "4", NULL), 0);
    free(out), free(err);
    dfx_tensor *a = read_samples(at("noise3.safetensors")), *b = read_samples(at("noise4.safetensors"));
    t = read_samples(at("noise.safetensors"));
    ck_assert_int_eq(memcmp(a->data, t->data, dfx_tensor_nbytes(a)), 0);
    ck_assert_int_ne(memcmp(a->data, b->data, dfx_tensor_nbytes(a)), 0);
    dfx_tensor_destroy(a);
    dfx_tensor_destroy(b);
    dfx_tensor_destroy(t);
    const double self = fid(at("mixed.idx"), at("mixed-parts"), NULL), base = fid(at("mixed.idx"), at("noise3.safetensors"), NULL);
    ck_assert_msg(base > 1e-3 && base > 1e4 * fabs(self), "FID of the noise baseline %g, of the set itself %g", base,
                  self);
}
END_TEST

/* dfx eval with the arguments fails with exit rc and a message holding
 * every one of the NULL-terminated strings after rc. */
static void expect_error(char **args, int rc, ...)
{
    char *argv[32] = {(char *)dfx_exe, "eval"};
    int n = 2;
    for (; args[n - 2]; n++)
        argv[n] = args[n - 2];
    argv[n] = NULL;
    char *out, *err;
    const int got = test_run(argv, &out, &err);
    ck_assert_msg(got == rc, "%s %s: exit %d, expected %d: %s", argv[2], argv[3] ? argv[3] : "", got, rc, err);
    va_list ap;
    va_start(ap, rc);
    for (const char *s; (s = va_arg(ap, const char *));)
        ASSERT_HAS(err, s);
    va_end(ap);
    ck_assert_str_eq(out, "");
    free(out), free(err);
}

#define ARGS(...) ((char *[]){__VA_ARGS__, NULL})

START_TEST(test_bad_input)
{
    expect_error(ARGS("fid", "/nonexistent/a.idx", at("mixed.idx"), "--classifier", cls), 1,
                 "dfx: error: /nonexistent/a.idx: ", NULL);
    /* images larger than the classifier's */
    uint8_t big[3 * 100] = {0};
    fx_write_idx_images(at("big.idx"), 3, 10, 10, big);
    expect_error(ARGS("fid", at("mixed.idx"), at("big.idx"), "--classifier", cls), 1,
                 "big.idx: images of 1x10x10 (channels x height x width); the classifier takes 1x8x8", NULL);
    /* RGB PNGs for a gray classifier */
    ck_assert_int_eq(mkdir(at("rgb"), 0777), 0);
    uint8_t rgb[6 * 6 * 3] = {0};
    ck_assert_int_eq(dfx__png_write(at("rgb/a.png"), rgb, 6, 6, 3, NULL, 0), DFX_OK);
    expect_error(ARGS("is", at("rgb"), "--classifier", cls), 1, "rgb: images of 3x6x6", NULL);
    expect_error(ARGS("is", at("rgb/a.png"), "--classifier", cls), 1,
                 "rgb/a.png: one image; give the folder of the PNGs", NULL);
    /* a truncated idx file */
    FILE *f = fopen(at("mixed.idx"), "rb");
    unsigned char buf[200];
    ck_assert_uint_eq(fread(buf, 1, sizeof buf, f), sizeof buf);
    fclose(f);
    fx_write(at("corrupt.idx"), buf, sizeof buf);
    expect_error(ARGS("fid", at("corrupt.idx"), at("mixed.idx"), "--classifier", cls), 1, "corrupt.idx: truncated",
                 NULL);
    /* labels that do not go with the images */
    uint8_t few[5] = {0};
    fx_write_idx_labels(at("few-labels.idx"), 5, few);
    expect_error(ARGS("accuracy", at("mixed.idx"), at("few-labels.idx"), "--classifier", cls), 1,
                 "few-labels.idx: 5 labels for the 40 images of ", NULL);
    /* statistics where images are needed; a safetensors file without samples */
    expect_error(ARGS("fid", at("mixed.idx"), "--save-stats", at("m.safetensors"), "--classifier", cls), 0, NULL);
    expect_error(ARGS("is", at("m.safetensors"), "--classifier", cls), 1,
                 "m.safetensors: no tensor 'image' or 'samples' (not written by dfx run?); it holds FID statistics",
                 NULL);
    /* a folder of samples of two shapes */
    ck_assert_int_eq(mkdir(at("two-shapes"), 0777), 0);
    float zeros[2 * 8 * 8] = {0};
    const int64_t s6[4] = {2, 1, 6, 6}, s8[4] = {1, 1, 8, 8};
    const char *names[1] = {"samples"};
    dfx_tensor t = dfx_tensor_view(DFX_DTYPE_F32, 4, s6, zeros);
    ck_assert_int_eq(dfx_safetensors_write(at("two-shapes/0.safetensors"), 1, names,
                                           (const dfx_tensor *const[]){&t}, 0, NULL, NULL), DFX_OK);
    t = dfx_tensor_view(DFX_DTYPE_F32, 4, s8, zeros);
    ck_assert_int_eq(dfx_safetensors_write(at("two-shapes/1.safetensors"), 1, names,
                                           (const dfx_tensor *const[]){&t}, 0, NULL, NULL), DFX_OK);
    expect_error(ARGS("is", at("two-shapes"), "--classifier", cls), 1,
                 "two-shapes/1.safetensors: images of 1x8x8, the folder's first file has 1x6x6", NULL);
    /* the classifier */
    expect_error(ARGS("is", at("mixed.idx"), "--classifier", "/nonexistent/classifier"), 1,
                 "--classifier /nonexistent/classifier: no such folder", NULL);
    ck_assert_int_eq(chdir(tmpdir), 0);
    expect_error(ARGS("is", at("mixed.idx")), 1, "no trained classifier in models/fashion-classifier",
                 "pass --classifier DIR", "dfx train pipelines/train_fashion_classifier.yaml", NULL);
    expect_error(ARGS("is", at("mixed.idx"), "--classifier", at("mixed-png")), 1, "mixed-png", NULL);
    /* usage */
    expect_error(ARGS("noise", at("mixed.idx")), 2, "eval noise needs an image set and OUT.safetensors", NULL);
    expect_error(ARGS("noise", at("mixed.idx"), at("n.safetensors"), "--count", "0"), 2,
                 "--count: '0' is not an integer >= 1", NULL);
    expect_error(ARGS("noise", "/nonexistent/a.idx", at("n.safetensors")), 1, "/nonexistent/a.idx", NULL);
    ck_assert_int_ne(access(at("n.safetensors"), F_OK), 0);
    expect_error(ARGS("frechet", "a", "b"), 2, "eval: unknown metric 'frechet' (fid, is, accuracy, noise)", NULL);
    expect_error(ARGS("fid", at("mixed.idx")), 2, "eval fid needs two image sets", NULL);
    expect_error(ARGS("is", at("mixed.idx"), "--splits", "0"), 2, "--splits: '0' is not an integer >= 1", NULL);
    expect_error(ARGS("is", at("mixed.idx"), "--save-stats", "x"), 2, "eval: unknown option '--save-stats'", NULL);
    expect_error(ARGS("is", at("mixed.idx"), "--classifier", cls, "--splits", "41"), 1,
                 "inception score: 41 splits of 40 samples", NULL);
}
END_TEST

START_TEST(test_interrupt)
{
    /* SIGINT during a long feature pass: exit 130 and a message, at once */
    enum { BIG = 400000 };
    uint8_t *px = malloc((size_t)BIG * 36);
    fx_make_images(BIG, 6, 6, 5, NULL, px, NULL);
    fx_write_idx_images(at("many.idx"), BIG, 6, 6, px);
    free(px);
    char *argv[] = {(char *)dfx_exe, "eval", "fid", at("many.idx"), at("many.idx"), "--classifier", cls,
                    "--batch", "1", NULL};
    char errpath[4200];
    snprintf(errpath, sizeof errpath, "%s", at("interrupt.err"));
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        int fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    sleep(3);
    kill(pid, SIGINT);
    int status;
    waitpid(pid, &status, 0);
    FILE *f = fopen(errpath, "r");
    char err[1024] = "";
    ck_assert_ptr_nonnull(f);
    size_t len = fread(err, 1, sizeof err - 1, f);
    err[len] = 0;
    fclose(f);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 130, "status %d: %s", status, err);
    ASSERT_HAS(err, "dfx: error: interrupted after ");
    ASSERT_HAS(err, " of 400000 images");
}
END_TEST

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DFX\n", argv[0]);
        return EXIT_FAILURE;
    }
    /* absolute: a test changes the current folder */
    dfx_exe = realpath(argv[1], NULL);
    if (!dfx_exe) {
        perror(argv[1]);
        return EXIT_FAILURE;
    }
    Suite *s = suite_create("eval");
    TCase *tc = tcase_create("eval");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_fid);
    tcase_add_test(tc, test_is_and_accuracy);
    tcase_add_test(tc, test_noise_baseline);
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_interrupt);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
