/* PNG files: the writer (round trips through libpng's reader, text chunks,
 * atomicity on every failure, batches), the strict reader (round trips, the
 * formats it converts, each kind of bad file refused with its message), the
 * scatter plot, and a sample pipeline writing .png with its settings in the
 * file, pipelines/gmm.yaml included. */
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

/* ---- the reader ------------------------------------------------------------ */

/* CRC-32 of the PNG spec (annex D), to build and patch files. */
static uint32_t crc32_of(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xffffffffu;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    ck_assert_ptr_nonnull(fp);
    fseek(fp, 0, SEEK_END);
    *len = (size_t)ftell(fp);
    rewind(fp);
    unsigned char *d = malloc(*len);
    ck_assert_ptr_nonnull(d);
    ck_assert_uint_eq(fread(d, 1, *len, fp), *len);
    fclose(fp);
    return d;
}

static void spill(const char *path, const unsigned char *d, size_t len)
{
    FILE *fp = fopen(path, "wb");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fwrite(d, 1, len, fp), len);
    fclose(fp);
}

/* Offset of the first chunk of this type in a PNG held in memory. */
static size_t chunk_at(const unsigned char *d, size_t len, const char *type)
{
    for (size_t p = 8; p + 12 <= len;) {
        uint32_t n = (uint32_t)d[p] << 24 | (uint32_t)d[p + 1] << 16 | (uint32_t)d[p + 2] << 8 | d[p + 3];
        if (memcmp(d + p + 4, type, 4) == 0)
            return p;
        p += 12 + n;
    }
    ck_abort_msg("no %s chunk", type);
    return 0;
}

/* A PNG that libpng itself writes, in the formats dfx does not write. */
typedef struct libpng_case {
    int color, depth;
    bool interlace, trns;
    int width, height;
} libpng_case;

static void write_with_libpng(const char *path, const libpng_case *c, const png_byte *rows_data, size_t stride,
                              const png_text *text, int ntext)
{
    FILE *fp = fopen(path, "wb");
    ck_assert_ptr_nonnull(fp);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    ck_assert(png && info);
    ck_assert_int_eq(setjmp(png_jmpbuf(png)), 0);
    png_init_io(png, fp);
    png_set_IHDR(png, info, (png_uint_32)c->width, (png_uint_32)c->height, c->depth, c->color,
                 c->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_color palette[4] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {10, 20, 30}};
    png_byte alpha[2] = {0, 128};
    if (c->color == PNG_COLOR_TYPE_PALETTE)
        png_set_PLTE(png, info, palette, 4);
    if (c->trns)
        png_set_tRNS(png, info, alpha, 2, NULL);
    if (ntext)
        png_set_text(png, info, text, ntext);
    /* a gAMA chunk, which the reader skips */
    png_set_gAMA(png, info, 0.45455);
    png_write_info(png, info);
    if (c->depth == 16)
        png_set_swap(png); /* the rows below are host-order (little-endian) 16-bit */
    png_bytep rows[64];
    for (int y = 0; y < c->height; y++)
        rows[y] = (png_bytep)rows_data + (size_t)y * stride;
    png_write_image(png, rows);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    fclose(fp);
}

/* Reads path with dfx__png_read, failing the test with its message. */
static void read_ok(const char *path, dfx__png_image *img)
{
    ck_assert_msg(dfx__png_read(path, img) == DFX_OK, "%s", dfx_error_message());
}

START_TEST(test_png_read_round_trip)
{
    enum { W = 37, H = 23 };
    unsigned char rgb[W * H * 3], gray[W * H];
    for (int i = 0; i < W * H; i++) {
        rgb[3 * i] = (unsigned char)(i * 7);
        rgb[3 * i + 1] = (unsigned char)(i / 3);
        rgb[3 * i + 2] = (unsigned char)(255 - i);
        gray[i] = (unsigned char)(i * 13 + 1);
    }
    const char *utf8 = "un phare \xc3\xa0 l'aube \xe2\x80\x94 \xe7\x81\xaf\xe5\xa1\x94";
    const dfx__png_text text[] = {{"parameters", "Steps: 30, Sampler: euler"}, {"dfx", "dfx: 1\nseed: 42\n"},
                                  {"prompt", utf8}};
    char path[256];
    in_tmp(path, sizeof path, "rgb.png");
    ck_assert_int_eq(dfx__png_write(path, rgb, W, H, 3, text, 3), DFX_OK);
    dfx__png_image img;
    read_ok(path, &img);
    ck_assert_int_eq(img.width, W);
    ck_assert_int_eq(img.height, H);
    ck_assert_int_eq(img.channels, 3);
    ck_assert_mem_eq(img.pixels, rgb, sizeof rgb);
    ck_assert_int_eq(img.ntext, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_str_eq(img.text[i].key, text[i].key);
        ck_assert_str_eq(img.text[i].value, text[i].value);
    }
    ck_assert_str_eq(dfx__png_image_text(&img, "dfx"), "dfx: 1\nseed: 42\n");
    ck_assert_ptr_null(dfx__png_image_text(&img, "nope"));
    dfx__png_image_fini(&img);
    ck_assert_ptr_null(img.pixels);
    dfx__png_image_fini(&img);

    in_tmp(path, sizeof path, "gray.png");
    ck_assert_int_eq(dfx__png_write(path, gray, W, H, 1, NULL, 0), DFX_OK);
    read_ok(path, &img);
    ck_assert_int_eq(img.channels, 1);
    ck_assert_int_eq(img.ntext, 0);
    ck_assert_mem_eq(img.pixels, gray, sizeof gray);
    dfx__png_image_fini(&img);

    /* the batch writer: every file, each with its own text */
    char names[3][256];
    const dfx__png_text t0[] = {{"k", "zero"}}, t1[] = {{"k", "one"}}, t2[] = {{"k", "two"}};
    dfx__png_item items[3] = {{in_tmp(names[0], 256, "new/b0.png"), rgb, W, H, 3, t0, 1},
                              {in_tmp(names[1], 256, "new/b1.png"), gray, W, H, 1, t1, 1},
                              {in_tmp(names[2], 256, "new/b2.png"), rgb, 5, 5, 3, t2, 1}};
    ck_assert_msg(dfx__png_write_batch(items, 3) == DFX_OK, "%s", dfx_error_message());
    for (int k = 0; k < 3; k++) {
        read_ok(names[k], &img);
        ck_assert_int_eq(img.width, items[k].width);
        ck_assert_int_eq(img.channels, items[k].channels);
        ck_assert_mem_eq(img.pixels, items[k].pixels, (size_t)img.width * img.height * img.channels);
        ck_assert_str_eq(dfx__png_image_text(&img, "k"), items[k].text[0].value);
        dfx__png_image_fini(&img);
    }
}
END_TEST

START_TEST(test_png_read_formats)
{
    char path[256];
    dfx__png_image img;
    /* palette with transparency: RGBA, the palette's entries beyond tRNS opaque */
    png_byte idx[3 * 2] = {0, 1, 2, 3, 1, 0};
    libpng_case pal = {PNG_COLOR_TYPE_PALETTE, 8, false, true, 3, 2};
    in_tmp(path, sizeof path, "palette.png");
    write_with_libpng(path, &pal, idx, 3, NULL, 0);
    read_ok(path, &img);
    ck_assert_int_eq(img.channels, 4);
    const unsigned char want_pal[] = {255, 0, 0, 0,   0, 255, 0, 128, 0, 0, 255, 255,
                                      10, 20, 30, 255, 0, 255, 0, 128, 255, 0, 0, 0};
    ck_assert_mem_eq(img.pixels, want_pal, sizeof want_pal);
    dfx__png_image_fini(&img);

    /* 16-bit RGB, interlaced: v * 257 reads back as v */
    enum { W = 9, H = 7 };
    uint16_t rgb16[W * H * 3];
    unsigned char want[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) {
        want[i] = (unsigned char)(i * 5 + 3);
        rgb16[i] = (uint16_t)(want[i] * 257);
    }
    libpng_case deep = {PNG_COLOR_TYPE_RGB, 16, true, false, W, H};
    in_tmp(path, sizeof path, "deep.png");
    write_with_libpng(path, &deep, (const png_byte *)rgb16, W * 6, NULL, 0);
    read_ok(path, &img);
    ck_assert_int_eq(img.channels, 3);
    ck_assert_int_eq(img.width, W);
    ck_assert_mem_eq(img.pixels, want, sizeof want);
    dfx__png_image_fini(&img);

    /* 1-bit gray widens to 0 / 255; gray + alpha stays two channels; tEXt
     * (Latin-1) and zTXt come back as UTF-8 */
    png_byte bits[2] = {0xa0, 0x40}; /* 1 0 1 / 0 1 0 */
    libpng_case onebit = {PNG_COLOR_TYPE_GRAY, 1, false, false, 3, 2};
    png_text text[2] = {{PNG_TEXT_COMPRESSION_NONE, "Title", "caf\xe9", 0, 0, NULL, NULL},
                        {PNG_TEXT_COMPRESSION_zTXt, "dfx", "dfx: 1\nseed: 3\n", 0, 0, NULL, NULL}};
    in_tmp(path, sizeof path, "bits.png");
    write_with_libpng(path, &onebit, bits, 1, text, 2);
    read_ok(path, &img);
    ck_assert_int_eq(img.channels, 1);
    const unsigned char want_bits[] = {255, 0, 255, 0, 255, 0};
    ck_assert_mem_eq(img.pixels, want_bits, sizeof want_bits);
    ck_assert_int_eq(img.ntext, 2);
    ck_assert_str_eq(dfx__png_image_text(&img, "Title"), "caf\xc3\xa9");
    ck_assert_str_eq(dfx__png_image_text(&img, "dfx"), "dfx: 1\nseed: 3\n");
    dfx__png_image_fini(&img);

    png_byte ga[4] = {10, 20, 30, 40};
    libpng_case gray_alpha = {PNG_COLOR_TYPE_GRAY_ALPHA, 8, false, false, 2, 1};
    in_tmp(path, sizeof path, "ga.png");
    write_with_libpng(path, &gray_alpha, ga, 4, NULL, 0);
    read_ok(path, &img);
    ck_assert_int_eq(img.channels, 2);
    ck_assert_mem_eq(img.pixels, ga, 4);
    dfx__png_image_fini(&img);
}
END_TEST

/* dfx__png_read of `data` must fail with status `want` and a message that
 * names the file and holds `sub`, and leave the image empty. */
static void expect_read_error(const char *name, const unsigned char *data, size_t len, dfx_status want,
                              const char *sub)
{
    char path[256];
    in_tmp(path, sizeof path, name);
    spill(path, data, len);
    dfx__png_image img;
    memset(&img, 0xab, sizeof img);
    dfx_status st = dfx__png_read(path, &img);
    const char *msg = dfx_error_message();
    ck_assert_msg(st == want, "%s: status %d, want %d (%s)", name, st, want, msg);
    ck_assert_msg(strstr(msg, path), "message \"%s\" does not name %s", msg, path);
    ck_assert_msg(strstr(msg, sub), "%s: message \"%s\" lacks \"%s\"", name, msg, sub);
    ck_assert_ptr_null(img.pixels);
    ck_assert_ptr_null(img.text);
    ck_assert_int_eq(img.ntext, 0);
}

START_TEST(test_png_read_errors)
{
    enum { W = 16, H = 16 };
    unsigned char px[W * H * 3];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (unsigned char)(i * 31);
    char path[256];
    const dfx__png_text text[] = {{"dfx", "dfx: 1\n"}};
    in_tmp(path, sizeof path, "good.png");
    ck_assert_int_eq(dfx__png_write(path, px, W, H, 3, text, 1), DFX_OK);
    size_t len;
    unsigned char *good = slurp(path, &len), *bad = malloc(len);
    ck_assert_ptr_nonnull(bad);

    /* not a PNG at all, or a PNG signature with one byte changed */
    expect_read_error("empty.png", good, 0, DFX_ERR_FORMAT, "not a PNG file");
    expect_read_error("yaml.png", (const unsigned char *)"dfx: 1\npipeline: sample\n", 24, DFX_ERR_FORMAT,
                      "not a PNG file");
    memcpy(bad, good, len);
    bad[1] = 'Q';
    expect_read_error("sig.png", bad, len, DFX_ERR_FORMAT, "not a PNG file");

    /* a CRC error in the critical IHDR, and in the ancillary tEXt, which
     * libpng's default would only warn about */
    memcpy(bad, good, len);
    bad[8 + 8 + 13] ^= 1;
    expect_read_error("crc_ihdr.png", bad, len, DFX_ERR_FORMAT, "IHDR: CRC error");
    memcpy(bad, good, len);
    size_t t = chunk_at(good, len, "tEXt");
    bad[t + 8 + 2] ^= 0x20; /* a byte of the text, not its CRC */
    expect_read_error("crc_text.png", bad, len, DFX_ERR_FORMAT, "tEXt: CRC error");
    memcpy(bad, good, len);
    bad[len - 1] ^= 1;
    expect_read_error("crc_iend.png", bad, len, DFX_ERR_FORMAT, "IEND: CRC error");

    /* truncated anywhere, the last case a file without its IEND chunk */
    const size_t cuts[] = {9, 20, 40, len / 2, len - 12, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        char name[64];
        snprintf(name, sizeof name, "cut%zu.png", cuts[i]);
        expect_read_error(name, good, cuts[i], DFX_ERR_FORMAT, "truncated PNG (the file ends before its IEND");
    }

    /* sizes: absurd (with a correct CRC, so that only the size is wrong),
     * zero, and large within the limit but more than the file can hold */
    const struct {
        uint32_t w, h;
        dfx_status st;
        const char *sub;
    } sizes[] = {
        {100000, 16, DFX_ERR_UNSUPPORTED, "100000x16 pixels is larger than dfx reads (at most 16384x16384)"},
        {16, 0x7fffffffu, DFX_ERR_UNSUPPORTED, "16x2147483647 pixels is larger than dfx reads"},
        {0, 16, DFX_ERR_FORMAT, "Image width is zero in IHDR"},
        {16384, 16384, DFX_ERR_FORMAT, "16384x16384 pixels cannot be stored in its"},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        memcpy(bad, good, len);
        put_be32(bad + 16, sizes[i].w);
        put_be32(bad + 20, sizes[i].h);
        put_be32(bad + 29, crc32_of(bad + 12, 17));
        expect_read_error("size.png", bad, len, sizes[i].st, sizes[i].sub);
    }
    free(bad);
    free(good);

    /* more text chunks than the reader keeps is an error, not a quiet loss */
    dfx__png_text many[80];
    char keys[80][8];
    for (int i = 0; i < 80; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        many[i] = (dfx__png_text){keys[i], "v"};
    }
    in_tmp(path, sizeof path, "many.png");
    ck_assert_int_eq(dfx__png_write(path, px, W, H, 3, many, 80), DFX_OK);
    dfx__png_image img;
    ck_assert_int_eq(dfx__png_read(path, &img), DFX_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), path));
    ck_assert_int_eq(dfx__png_write(path, px, W, H, 3, many, 40), DFX_OK);
    read_ok(path, &img);
    ck_assert_int_eq(img.ntext, 40);
    dfx__png_image_fini(&img);

    in_tmp(path, sizeof path, "missing.png");
    ck_assert_int_eq(dfx__png_read(path, &img), DFX_ERR_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "missing.png: cannot open"));
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
    ck_assert_str_eq(text_of(&b, "parameters", NULL), "Steps: 10, Sampler: Euler, Schedule type: Automatic, Seed: 5, "
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
    ck_assert_msg(strstr(dfx_error_message(), "PNG output writes images [B, C, H, W] or draws 2-D points [B, 2]; "
                                              "these samples are [10,3]"), "%s", dfx_error_message());
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
    ck_assert_ptr_nonnull(strstr(text_of(&b, "parameters", NULL), "Sampler: DPM++ 2M,"));
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
    tcase_add_test(tc, test_png_read_round_trip);
    tcase_add_test(tc, test_png_read_formats);
    tcase_add_test(tc, test_png_read_errors);
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
