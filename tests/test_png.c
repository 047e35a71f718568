/* PNG output: the writer (round trips through libpng's reader, text chunks,
 * atomicity on every failure), the scatter plot, and a sample pipeline
 * writing .png with its settings in the file, pipelines/gmm.yaml included. */
#include <dirent.h>
#include <ftw.h>
#include <png.h>
#include <setjmp.h>
#include <sys/stat.h>

#include "core/internal.h"
#include "testutil.h"

static char tmpdir[64];

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dfx_png_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    chmod(path, 0700);
    return remove(path);
}

static void teardown(void)
{
    chmod(tmpdir, 0700);
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static const char *in_tmp(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", tmpdir, name);
    return buf;
}

/* Entries of a folder other than . and .. */
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

/* ---- reading back with libpng ------------------------------------------ */

typedef struct png_back {
    int width, height, channels, bit_depth;
    unsigned char *pixels;
    int ntext;
    char *keys[8], *values[8];
    int compression[8];
} png_back;

/* Reads path with libpng; false (and a message in err) on any libpng error. */
static bool png_read(const char *path, png_back *out, char *err, size_t errsize)
{
    memset(out, 0, sizeof *out);
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errsize, "cannot open %s", path);
        return false;
    }
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(rows);
        fclose(fp);
        snprintf(err, errsize, "libpng could not read %s", path);
        return false;
    }
    png_init_io(png, fp);
    png_read_info(png, info);
    out->width = (int)png_get_image_width(png, info);
    out->height = (int)png_get_image_height(png, info);
    out->channels = png_get_channels(png, info);
    out->bit_depth = png_get_bit_depth(png, info);
    const size_t stride = png_get_rowbytes(png, info);
    out->pixels = malloc(stride * (size_t)out->height);
    rows = malloc((size_t)out->height * sizeof *rows);
    ck_assert(out->pixels && rows);
    for (int y = 0; y < out->height; y++)
        rows[y] = out->pixels + (size_t)y * stride;
    png_read_image(png, rows);
    png_read_end(png, info);
    png_textp text;
    int n = png_get_text(png, info, &text, NULL);
    for (int i = 0; i < n && i < 8; i++) {
        out->keys[i] = strdup(text[i].key);
        out->values[i] = strdup(text[i].text);
        out->compression[i] = text[i].compression;
    }
    out->ntext = n < 8 ? n : 8;
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    fclose(fp);
    return true;
}

static void png_back_free(png_back *b)
{
    free(b->pixels);
    for (int i = 0; i < b->ntext; i++) {
        free(b->keys[i]);
        free(b->values[i]);
    }
}

/* The value of text chunk `key`; fails the test when there is none. */
static const char *text_of(const png_back *b, const char *key, int *compression)
{
    for (int i = 0; i < b->ntext; i++)
        if (strcmp(b->keys[i], key) == 0) {
            if (compression)
                *compression = b->compression[i];
            return b->values[i];
        }
    ck_abort_msg("the PNG has no text chunk '%s'", key);
    return NULL;
}

/* ---- the writer --------------------------------------------------------- */

START_TEST(test_png_round_trip)
{
    enum { W = 37, H = 23 };
    unsigned char rgb[W * H * 3], gray[W * H];
    for (int i = 0; i < W * H; i++) {
        rgb[3 * i] = (unsigned char)(i * 7);
        rgb[3 * i + 1] = (unsigned char)(i / 3);
        rgb[3 * i + 2] = (unsigned char)(255 - i);
        gray[i] = (unsigned char)(i * 13 + 1);
    }
    const char *yaml = "dfx: 1\npipeline: sample\nseed: 42\nmodel:\n  type: gmm\n";
    const char *utf8 = "un phare \xc3\xa0 l'aube \xe2\x80\x94 \xe7\x81\xaf\xe5\xa1\x94";
    const dfx__png_text text[] = {{"parameters", "Steps: 30, Sampler: euler"}, {"dfx", yaml}, {"prompt", utf8}};
    char path[256];
    in_tmp(path, sizeof path, "rgb.png");
    ck_assert_msg(dfx__png_write(path, rgb, W, H, 3, text, 3) == DFX_OK, "%s", dfx_error_message());

    png_back b;
    char err[256];
    ck_assert_msg(png_read(path, &b, err, sizeof err), "%s", err);
    ck_assert_int_eq(b.width, W);
    ck_assert_int_eq(b.height, H);
    ck_assert_int_eq(b.channels, 3);
    ck_assert_int_eq(b.bit_depth, 8);
    ck_assert_mem_eq(b.pixels, rgb, sizeof rgb);
    ck_assert_int_eq(b.ntext, 3);
    int comp;
    ck_assert_str_eq(text_of(&b, "parameters", &comp), "Steps: 30, Sampler: euler");
    ck_assert_int_eq(comp, PNG_TEXT_COMPRESSION_NONE);
    ck_assert_str_eq(text_of(&b, "dfx", &comp), yaml);
    ck_assert_int_eq(comp, PNG_TEXT_COMPRESSION_NONE);
    /* UTF-8 needs iTXt (tEXt is Latin-1) */
    ck_assert_str_eq(text_of(&b, "prompt", &comp), utf8);
    ck_assert_int_eq(comp, PNG_ITXT_COMPRESSION_NONE);
    png_back_free(&b);

    in_tmp(path, sizeof path, "gray.png");
    ck_assert_msg(dfx__png_write(path, gray, W, H, 1, NULL, 0) == DFX_OK, "%s", dfx_error_message());
    ck_assert_msg(png_read(path, &b, err, sizeof err), "%s", err);
    ck_assert_int_eq(b.channels, 1);
    ck_assert_int_eq(b.ntext, 0);
    ck_assert_mem_eq(b.pixels, gray, sizeof gray);
    png_back_free(&b);
    /* the output follows the umask like any file, not mkstemp's 0600 */
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    mode_t mask = umask(0);
    umask(mask);
    ck_assert_int_eq(sb.st_mode & 0777, 0666 & ~mask);
    /* nothing else was left in the folder */
    ck_assert_int_eq(count_entries(tmpdir), 2);
}
END_TEST

/* A failing write must return `want`, name the path, leave no file and no
 * temporary file, and leave an existing file as it was. */
static void expect_failure(const char *path, dfx_status want, dfx_status got, const char *sub)
{
    const char *msg = dfx_error_message();
    ck_assert_msg(got == want, "%s: status %d, want %d (%s)", path, got, want, msg);
    ck_assert_msg(strstr(msg, path), "message \"%s\" does not name %s", msg, path);
    if (sub)
        ck_assert_msg(strstr(msg, sub), "message \"%s\" lacks \"%s\"", msg, sub);
}

START_TEST(test_png_failures)
{
    unsigned char px[3 * 16] = {0};
    char path[256], dir[256];
    const dfx__png_text ok[] = {{"dfx", "x"}};

    /* missing folders are created (and removed again below) */
    in_tmp(path, sizeof path, "missing/deeper/out.png");
    ck_assert_int_eq(dfx__png_write(path, px, 4, 4, 3, ok, 1), DFX_OK);
    ck_assert_int_eq(access(path, F_OK), 0);
    ck_assert_int_eq(unlink(path), 0);
    in_tmp(dir, sizeof dir, "missing/deeper");
    ck_assert_int_eq(rmdir(dir), 0);
    in_tmp(dir, sizeof dir, "missing");
    ck_assert_int_eq(rmdir(dir), 0);
    ck_assert_int_eq(count_entries(tmpdir), 0);

    /* a "folder" that is a file */
    in_tmp(dir, sizeof dir, "plain");
    FILE *fp = fopen(dir, "w");
    ck_assert_ptr_nonnull(fp);
    fclose(fp);
    in_tmp(path, sizeof path, "plain/out.png");
    expect_failure(path, DFX_ERR_IO, dfx__png_write(path, px, 4, 4, 3, ok, 1), "Not a directory");
    ck_assert_int_eq(count_entries(tmpdir), 1);
    /* a folder that cannot be made: the ones made before it are removed */
    in_tmp(path, sizeof path, "made/plain/out.png");
    in_tmp(dir, sizeof dir, "made");
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    in_tmp(dir, sizeof dir, "made/plain");
    fp = fopen(dir, "w");
    ck_assert_ptr_nonnull(fp);
    fclose(fp);
    expect_failure(path, DFX_ERR_IO, dfx__png_write(path, px, 4, 4, 3, ok, 1), "Not a directory");
    ck_assert_int_eq(unlink(dir), 0);
    in_tmp(dir, sizeof dir, "made");
    ck_assert_int_eq(rmdir(dir), 0);
    ck_assert_int_eq(count_entries(tmpdir), 1);

    /* a folder we may not write to (root may write anywhere: not testable) */
    in_tmp(dir, sizeof dir, "locked");
    ck_assert_int_eq(mkdir(dir, 0500), 0);
    if (geteuid() != 0) {
        in_tmp(path, sizeof path, "locked/out.png");
        expect_failure(path, DFX_ERR_IO, dfx__png_write(path, px, 4, 4, 3, ok, 1), "Permission denied");
        ck_assert_int_eq(count_entries(dir), 0);
    }
    chmod(dir, 0700);

    /* libpng's own error, through its longjmp: the temporary file it was
     * writing is removed, and an existing file at the path is untouched */
    in_tmp(path, sizeof path, "locked/keep.png");
    ck_assert_int_eq(dfx__png_write(path, px, 4, 4, 3, ok, 1), DFX_OK);
    struct stat before, after;
    ck_assert_int_eq(stat(path, &before), 0);
    unsigned char *wide = calloc(3, 2000000);
    ck_assert_ptr_nonnull(wide);
    expect_failure(path, DFX_ERR_IO, dfx__png_write(path, wide, 2000000, 1, 3, ok, 1), "writing the PNG failed");
    free(wide);
    ck_assert_int_eq(count_entries(dir), 1);
    ck_assert_int_eq(stat(path, &after), 0);
    ck_assert_int_eq(after.st_ino, before.st_ino);
    ck_assert_int_eq(after.st_size, before.st_size);

    /* refused before anything is created */
    const dfx__png_text bad_keys[][1] = {{{"", "v"}}, {{" lead", "v"}}, {{"two  spaces", "v"}},
                                         {{"k\xc3\xa9y", "v"}},
                                         {{"a-key-of-eighty-characters-is-one-more-than-the-seventy-nine-png-allows-12345678", "v"}}};
    in_tmp(path, sizeof path, "bad.png");
    for (size_t i = 0; i < sizeof bad_keys / sizeof *bad_keys; i++)
        expect_failure(path, DFX_ERR_INVALID_ARG, dfx__png_write(path, px, 4, 4, 3, bad_keys[i], 1),
                       "is not a PNG keyword");
    const dfx__png_text no_value[] = {{"dfx", NULL}};
    expect_failure(path, DFX_ERR_INVALID_ARG, dfx__png_write(path, px, 4, 4, 3, no_value, 1), "has no value");
    expect_failure(path, DFX_ERR_INVALID_ARG, dfx__png_write(path, px, 4, 4, 2, NULL, 0), "2 channels");
    expect_failure(path, DFX_ERR_INVALID_ARG, dfx__png_write(path, px, 0, 4, 3, NULL, 0), "0x4");
    ck_assert_int_eq(count_entries(tmpdir), 2);
}
END_TEST

/* ---- the plot ------------------------------------------------------------ */

typedef struct density_probe {
    int calls;
    int64_t n;
    bool fail;
} density_probe;

/* log p of a Gaussian of std 0.3 at (1, 1), up to a constant */
static dfx_status fake_density(void *ctx, const dfx_tensor *x, double *out)
{
    density_probe *d = ctx;
    d->calls++;
    d->n = x->shape[0];
    ck_assert_int_eq(x->ndim, 2);
    ck_assert_int_eq(x->shape[1], 2);
    ck_assert_int_eq(x->dtype, DFX_DTYPE_F32);
    if (d->fail)
        return dfx_error_set(DFX_ERR_RANGE, "no density here");
    const float *p = x->data;
    for (int64_t i = 0; i < x->shape[0]; i++) {
        double dx = p[2 * i] - 1, dy = p[2 * i + 1] - 1;
        out[i] = -0.5 * (dx * dx + dy * dy) / 0.09;
    }
    return DFX_OK;
}

static double luma(const unsigned char *rgb, int w, int x, int y)
{
    const unsigned char *p = rgb + 3 * ((size_t)y * (size_t)w + (size_t)x);
    return 0.2126 * p[0] + 0.7152 * p[1] + 0.0722 * p[2];
}

START_TEST(test_plot)
{
    enum { W = 200, H = 160, N = 2001 };
    /* points on a 10 x 10 square grid [0, 2]^2 (weight in the corners), and one
     * far outlier that must not decide the view */
    float xy[2 * N];
    for (int i = 0; i < N - 1; i++) {
        xy[2 * i] = (float)(i % 10) * 2.0f / 9;
        xy[2 * i + 1] = (float)((i / 10) % 10) * 2.0f / 9;
    }
    xy[2 * (N - 1)] = 1e6f;
    xy[2 * (N - 1) + 1] = -1e6f;
    unsigned char *a = malloc(W * H * 3), *b = malloc(W * H * 3);
    ck_assert(a && b);
    ck_assert_int_eq(dfx__plot_points(a, W, H, xy, N, NULL, NULL), DFX_OK);
    /* equal aspect, the square centred: the view is 2 * 1.16 = 2.32 tall, so the
     * corner points (0, 0) and (2, 2) sit at these pixels, drawn darker than
     * the light background */
    const double scale = 2.32 / H;
    const int x0 = (int)(W / 2 - 1 / scale), y0 = (int)(H / 2 + 1 / scale);
    const int x1 = (int)(W / 2 + 1 / scale), y1 = (int)(H / 2 - 1 / scale);
    ck_assert_double_lt(luma(a, W, x0, y0), 200);
    ck_assert_double_lt(luma(a, W, x1, y1), 200);
    /* between the grid points (a ninth of the span apart) the background shows */
    ck_assert_double_gt(luma(a, W, (x0 + (int)(1 / 9.0 / scale)), y0 - (int)(1 / 9.0 / scale)), 200);

    /* with a density: one call with every pixel centre; bright where p is high */
    density_probe d = {0};
    ck_assert_int_eq(dfx__plot_points(b, W, H, xy, N, fake_density, &d), DFX_OK);
    ck_assert_int_eq(d.calls, 1);
    ck_assert_int_eq(d.n, (int64_t)W * H);
    /* (1, 1) lies half-way between grid points */
    ck_assert_double_gt(luma(b, W, W / 2, H / 2), luma(b, W, 2, H / 2) + 100);
    /* deterministic */
    ck_assert_int_eq(dfx__plot_points(a, W, H, xy, N, fake_density, &d), DFX_OK);
    ck_assert_mem_eq(a, b, W * H * 3);

    /* errors: the density's, and points that are not finite */
    d.fail = true;
    ck_assert_int_eq(dfx__plot_points(b, W, H, xy, N, fake_density, &d), DFX_ERR_RANGE);
    ck_assert_str_eq(dfx_error_message(), "plot: log-density: no density here");
    xy[7] = NAN;
    ck_assert_int_eq(dfx__plot_points(b, W, H, xy, N, NULL, NULL), DFX_ERR_NUMERIC);
    ck_assert_str_eq(dfx_error_message(), "plot: point 3 is not finite");
    /* one point, or all in one place, still makes a picture */
    ck_assert_int_eq(dfx__plot_points(b, W, H, xy + 8, 1, NULL, NULL), DFX_OK);
    free(a);
    free(b);
}
END_TEST

/* ---- pipelines ------------------------------------------------------------ */

static dfx_registry *open_registry(void)
{
    dfx_registry *reg = NULL;
    ck_assert_msg(dfx_registry_create(&reg, NULL, 0) == DFX_OK, "%s", dfx_error_message());
    return reg;
}

/* The resolved pipeline as dfx_pipeline_write_resolved prints it. */
static char *resolved(const dfx_pipeline *p)
{
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(dfx_pipeline_write_resolved(p, f), DFX_OK);
    fclose(f);
    return mem;
}

START_TEST(test_pipeline_png)
{
    dfx_registry *reg = open_registry();
    char path[512], yaml[2048];
    /* folders missing above the output are created */
    in_tmp(path, sizeof path, "new/folder/gmm.png");
    snprintf(yaml, sizeof yaml,
             "dfx: 1\npipeline: sample\nseed: 5\nbatch: 300\nmodel: {type: gmm}\n"
             "scheduler: {type: linear, steps: 10}\nsampler: {type: euler}\noutput: {path: '%s'}\n", path);
    dfx_pipeline *p = NULL;
    ck_assert_int_eq(dfx_pipeline_parse(&p, yaml, strlen(yaml), "png.yaml"), DFX_OK);
    ck_assert_msg(dfx_pipeline_resolve(p, reg) == DFX_OK && dfx_pipeline_run(p, NULL) == DFX_OK, "%s",
                  dfx_error_message());
    png_back b;
    char err[256];
    ck_assert_msg(png_read(path, &b, err, sizeof err), "%s", err);
    ck_assert_int_eq(b.width, 768);
    ck_assert_int_eq(b.height, 768);
    ck_assert_int_eq(b.channels, 3);
    ck_assert_str_eq(text_of(&b, "parameters", NULL), "Steps: 10, Sampler: euler, Scheduler: linear, Seed: 5, "
                                                      "Model: gmm");
    char *want = resolved(p);
    const char *got = text_of(&b, "dfx", NULL);
    ck_assert_str_eq(got, want);
    free(want);
    dfx_pipeline_destroy(p);

    /* the embedded pipeline runs again as it is */
    ck_assert_int_eq(dfx_pipeline_parse(&p, got, strlen(got), "from-png.yaml"), DFX_OK);
    ck_assert_msg(dfx_pipeline_resolve(p, reg) == DFX_OK, "%s", dfx_error_message());
    dfx_pipeline_destroy(p);
    png_back_free(&b);

    /* samples that are not 2-D points: refused before sampling, nothing made */
    in_tmp(path, sizeof path, "three/d.png");
    snprintf(yaml, sizeof yaml,
             "dfx: 1\npipeline: sample\nbatch: 10\nmodel: {type: gmm, dims: 3, means: [0, 0, 0]}\n"
             "scheduler: {type: linear, steps: 5}\nsampler: {type: ddim}\noutput: {path: '%s'}\n", path);
    ck_assert_int_eq(dfx_pipeline_parse(&p, yaml, strlen(yaml), "3d.yaml"), DFX_OK);
    ck_assert_int_eq(dfx_pipeline_resolve(p, reg), DFX_OK);
    ck_assert_int_eq(dfx_pipeline_run(p, NULL), DFX_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(dfx_error_message(), "PNG output draws 2-D points; these samples are [10,3]"), "%s",
                  dfx_error_message());
    dfx_pipeline_destroy(p);
    ck_assert_int_eq(count_entries(tmpdir), 1);

    /* an unknown extension, also before sampling */
    in_tmp(path, sizeof path, "x.jpg");
    snprintf(yaml, sizeof yaml,
             "dfx: 1\npipeline: sample\nbatch: 10\nmodel: {type: gmm}\nscheduler: {type: linear, steps: 5}\n"
             "sampler: {type: ddim}\noutput: {path: '%s'}\n", path);
    ck_assert_int_eq(dfx_pipeline_parse(&p, yaml, strlen(yaml), "jpg.yaml"), DFX_OK);
    ck_assert_int_eq(dfx_pipeline_resolve(p, reg), DFX_OK);
    ck_assert_int_eq(dfx_pipeline_run(p, NULL), DFX_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "unsupported extension"));
    dfx_pipeline_destroy(p);

    /* a write that fails after its folders were made removes them again:
     * the temporary name beside a 250-character file name is too long */
    char name[251];
    memset(name, 'n', 246);
    memcpy(name + 246, ".png", 5);
    snprintf(path, sizeof path, "%s/made/here/%s", tmpdir, name);
    snprintf(yaml, sizeof yaml,
             "dfx: 1\npipeline: sample\nbatch: 10\nmodel: {type: gmm}\nscheduler: {type: linear, steps: 5}\n"
             "sampler: {type: ddim}\noutput: {path: '%s'}\n", path);
    ck_assert_int_eq(dfx_pipeline_parse(&p, yaml, strlen(yaml), "long.yaml"), DFX_OK);
    ck_assert_int_eq(dfx_pipeline_resolve(p, reg), DFX_OK);
    ck_assert_int_eq(dfx_pipeline_run(p, NULL), DFX_ERR_IO);
    ck_assert_msg(strstr(dfx_error_message(), path), "%s", dfx_error_message());
    dfx_pipeline_destroy(p);
    ck_assert_int_eq(count_entries(tmpdir), 1);

    /* a folder that cannot be made: its parent is a file */
    char file[256];
    in_tmp(file, sizeof file, "plain");
    FILE *fp = fopen(file, "w");
    ck_assert_ptr_nonnull(fp);
    fclose(fp);
    in_tmp(path, sizeof path, "plain/sub/x.png");
    snprintf(yaml, sizeof yaml,
             "dfx: 1\npipeline: sample\nbatch: 10\nmodel: {type: gmm}\nscheduler: {type: linear, steps: 5}\n"
             "sampler: {type: ddim}\noutput: {path: '%s'}\n", path);
    ck_assert_int_eq(dfx_pipeline_parse(&p, yaml, strlen(yaml), "file.yaml"), DFX_OK);
    ck_assert_int_eq(dfx_pipeline_resolve(p, reg), DFX_OK);
    ck_assert_int_eq(dfx_pipeline_run(p, NULL), DFX_ERR_IO);
    ck_assert_msg(strstr(dfx_error_message(), path) && strstr(dfx_error_message(), "cannot create the folder"),
                  "%s", dfx_error_message());
    dfx_pipeline_destroy(p);
    ck_assert_int_eq(count_entries(tmpdir), 2);
    dfx_registry_destroy(reg);
}
END_TEST

/* pipelines/gmm.yaml, the default job, as shipped (only the output moved) */
START_TEST(test_default_pipeline)
{
    dfx_registry *reg = open_registry();
    char file[512], set[512], path[256];
    snprintf(file, sizeof file, "%s/pipelines/gmm.yaml", DFX_SOURCE_ROOT);
    dfx_pipeline *p = NULL;
    ck_assert_msg(dfx_pipeline_load(&p, file) == DFX_OK, "%s", dfx_error_message());
    in_tmp(path, sizeof path, "gmm.png");
    snprintf(set, sizeof set, "output.path=%s", path);
    ck_assert_int_eq(dfx_pipeline_set(p, set), DFX_OK);
    ck_assert_msg(dfx_pipeline_resolve(p, reg) == DFX_OK && dfx_pipeline_run(p, NULL) == DFX_OK, "%s",
                  dfx_error_message());
    png_back b;
    char err[256];
    ck_assert_msg(png_read(path, &b, err, sizeof err), "%s", err);
    ck_assert_int_eq(b.width, 768);
    ck_assert_ptr_nonnull(strstr(text_of(&b, "parameters", NULL), "Sampler: dpmpp_2m"));
    png_back_free(&b);
    dfx_pipeline_destroy(p);
    dfx_registry_destroy(reg);
}
END_TEST

static Suite *png_suite(void)
{
    Suite *s = suite_create("png");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_png_round_trip);
    tcase_add_test(tc, test_png_failures);
    tcase_add_test(tc, test_plot);
    tcase_add_test(tc, test_pipeline_png);
    tcase_add_test(tc, test_default_pipeline);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(png_suite());
}
