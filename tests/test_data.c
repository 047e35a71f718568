/* Training data: idx files (every type, raw and gzip, every corruption
 * refused with its message), CSV tables (quoting, header detection, line
 * numbers in messages, numbers in any locale), datasets from idx files and
 * PNG folders, and the batch loader (permutations per epoch, purity in
 * (seed, step), flips, padding). Fashion-MNIST and the shared CSV data are
 * read when installed, with a loud SKIP when not. */
#include <ftw.h>
#include <locale.h>
#include <stdint.h>
#include <sys/stat.h>
#include <zlib.h>

#include "core/internal.h"
#include "dfx/data.h"
#include "testutil.h"

static char tmpdir[64];

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dfx_data_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* A path in the test's folder (one of four rotating static buffers). */
static const char *tmp(const char *name)
{
    static char bufs[4][256];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", tmpdir, name);
    return b;
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *fp = fopen(path, "wb");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fwrite(data, 1, n, fp), n);
    ck_assert_int_eq(fclose(fp), 0);
}

static void write_text(const char *path, const char *text)
{
    write_bytes(path, text, strlen(text));
}

/* A gzip member of data appended to path (mode "wb" starts the file). */
static void write_gz(const char *path, const char *mode, const void *data, size_t n)
{
    gzFile gz = gzopen(path, mode);
    ck_assert_ptr_nonnull(gz);
    if (n)
        ck_assert_int_eq(gzwrite(gz, data, (unsigned)n), (int)n);
    ck_assert_int_eq(gzclose(gz), Z_OK);
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    char *d;
    ck_assert_msg(dfx__read_file(path, &d, n) == DFX_OK, "%s", dfx_error_message());
    return (unsigned char *)d;
}

/* The call fails with `status` and a message containing `part`. */
#define ck_fails(call, status, part)                                                              \
    do {                                                                                          \
        dfx_error_clear();                                                                        \
        dfx_status st_ = (call);                                                                  \
        ck_assert_msg(st_ == (status), "%s: status %d (%s), expected %d", #call, (int)st_,       \
                      dfx_error_message(), (int)(status));                                        \
        ck_assert_msg(strstr(dfx_error_message(), part), "%s: message '%s' lacks '%s'", #call,  \
                      dfx_error_message(), part);                                                 \
    } while (0)

#define ck_ok(call) ck_assert_msg((call) == DFX_OK, "%s: %s", #call, dfx_error_message())

/* ---- idx ------------------------------------------------------------------ */

/* An idx image: 00 00 type ndim, the dims big-endian, then payload. */
static size_t idx_make(unsigned char *buf, unsigned char type, int ndim, const uint32_t *dims,
                       const void *payload, size_t n)
{
    buf[0] = buf[1] = 0;
    buf[2] = type;
    buf[3] = (unsigned char)ndim;
    for (int d = 0; d < ndim; d++)
        for (int k = 0; k < 4; k++)
            buf[4 + 4 * d + k] = (unsigned char)(dims[d] >> (24 - 8 * k));
    memcpy(buf + 4 + 4 * ndim, payload, n);
    return 4 + 4 * (size_t)ndim + n;
}

START_TEST(test_idx_u8_raw_and_gzip)
{
    unsigned char pay[24], buf[64];
    for (int i = 0; i < 24; i++)
        pay[i] = (unsigned char)(i * 11);
    const uint32_t dims[3] = {2, 3, 4};
    size_t n = idx_make(buf, 0x08, 3, dims, pay, 24);
    write_bytes(tmp("raw.idx"), buf, n);
    /* the gzip one is named like a raw file: the bytes decide */
    write_gz(tmp("packed.bin"), "wb", buf, n);
    /* two gzip members are one stream (as gzip -c a b > c makes) */
    write_gz(tmp("two.gz"), "wb", buf, 10);
    write_gz(tmp("two.gz"), "ab", buf + 10, n - 10);
    const char *files[3] = {tmp("raw.idx"), tmp("packed.bin"), tmp("two.gz")};
    for (int f = 0; f < 3; f++) {
        dfx_tensor *t;
        ck_ok(dfx_idx_read(files[f], &t));
        ck_assert_int_eq(t->dtype, DFX_DTYPE_U8);
        ck_assert_int_eq(t->ndim, 3);
        ck_assert_int_eq(t->shape[0], 2);
        ck_assert_int_eq(t->shape[1], 3);
        ck_assert_int_eq(t->shape[2], 4);
        ck_assert_mem_eq(t->data, pay, 24);
        dfx_tensor_destroy(t);
    }
}
END_TEST

START_TEST(test_idx_types)
{
    /* big-endian payloads of -2 and 300 (or 1.5 and -0.25) */
    static const struct {
        unsigned char type;
        dfx_dtype dtype;
        unsigned char pay[16];
        size_t n;
        double v0, v1;
    } cases[] = {
        {0x09, DFX_DTYPE_I8, {0xfe, 0x7f}, 2, -2, 127},
        {0x0B, DFX_DTYPE_I16, {0xff, 0xfe, 0x01, 0x2c}, 4, -2, 300},
        {0x0C, DFX_DTYPE_I32, {0xff, 0xff, 0xff, 0xfe, 0x00, 0x01, 0x00, 0x00}, 8, -2, 65536},
        {0x0D, DFX_DTYPE_F32, {0x3f, 0xc0, 0, 0, 0xbe, 0x80, 0, 0}, 8, 1.5, -0.25},
        {0x0E, DFX_DTYPE_F64, {0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0xbf, 0xd0, 0, 0, 0, 0, 0, 0}, 16, 1.5, -0.25},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        unsigned char buf[64];
        const uint32_t dims[1] = {2};
        write_bytes(tmp("t.idx"), buf, idx_make(buf, cases[c].type, 1, dims, cases[c].pay, cases[c].n));
        dfx_tensor *t;
        ck_ok(dfx_idx_read(tmp("t.idx"), &t));
        ck_assert_int_eq(t->dtype, cases[c].dtype);
        ck_assert_int_eq(t->ndim, 1);
        ck_assert_int_eq(t->shape[0], 2);
        dfx_tensor *d;
        ck_ok(dfx_tensor_convert(t, DFX_DTYPE_F64, &d));
        ck_assert_double_eq(((double *)d->data)[0], cases[c].v0);
        ck_assert_double_eq(((double *)d->data)[1], cases[c].v1);
        dfx_tensor_destroy(d);
        dfx_tensor_destroy(t);
    }
}
END_TEST

/* path is refused with status and a message naming it and containing part. */
static void idx_refused(const char *path, dfx_status status, const char *part)
{
    dfx_tensor *t = (dfx_tensor *)&t;
    ck_fails(dfx_idx_read(path, &t), status, part);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(dfx_error_message(), path), "message '%s' does not name %s", dfx_error_message(), path);
}

static void idx_bytes_refused(const void *data, size_t n, dfx_status status, const char *part)
{
    write_bytes(tmp("bad.idx"), data, n);
    idx_refused(tmp("bad.idx"), status, part);
}

START_TEST(test_idx_errors)
{
    unsigned char pay[24] = {0}, buf[128];
    const uint32_t dims[3] = {2, 3, 4};
    const size_t n = idx_make(buf, 0x08, 3, dims, pay, 24);

    idx_refused(tmp("missing.idx"), DFX_ERR_NOT_FOUND, "cannot open");
    idx_bytes_refused(buf, 0, DFX_ERR_FORMAT, "not an idx file (it is empty");
    unsigned char bad[128];
    memcpy(bad, buf, n);
    bad[0] = 0x01;
    idx_bytes_refused(bad, n, DFX_ERR_FORMAT, "not an idx file (it starts with 01 00 08 03, expected 00 00 TYPE NDIM)");
    idx_bytes_refused(buf, 3, DFX_ERR_FORMAT, "not an idx file (it starts with 00 00 08,");
    memcpy(bad, buf, n);
    bad[2] = 0x07;
    idx_bytes_refused(bad, n, DFX_ERR_FORMAT, "unknown idx type byte 0x07");
    bad[2] = 0x08;
    bad[3] = 0;
    idx_bytes_refused(bad, n, DFX_ERR_FORMAT, ": 0 dimensions (expected 1 to 4)");
    bad[3] = 5;
    idx_bytes_refused(bad, n, DFX_ERR_UNSUPPORTED, ": 5 dimensions (expected 1 to 4)");
    const uint32_t zero[3] = {3, 0, 4};
    idx_bytes_refused(bad, idx_make(bad, 0x08, 3, zero, pay, 0), DFX_ERR_FORMAT, "dimension 2 of [3,0,4] is 0");
    const uint32_t huge[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
    idx_bytes_refused(bad, idx_make(bad, 0x0E, 4, huge, pay, 0), DFX_ERR_FORMAT, "make more bytes than memory holds");
    /* the header itself cut short, then the data */
    idx_bytes_refused(buf, 9, DFX_ERR_FORMAT, "truncated: a header of 3 dimensions needs 16 bytes, only 9");
    idx_bytes_refused(buf, n - 1, DFX_ERR_FORMAT,
                      "truncated: the header declares [2,3,4] U8, 24 bytes of data, but only 23 follow");
    memcpy(bad, buf, n);
    memcpy(bad + n, "xyz", 3);
    idx_bytes_refused(bad, n + 3, DFX_ERR_FORMAT, "3 trailing bytes after the 24 bytes of data the header declares");

    /* gzip: the same checks on the content, and the stream's own */
    write_gz(tmp("short.gz"), "wb", buf, n - 1);
    idx_refused(tmp("short.gz"), DFX_ERR_FORMAT, "but only 23 follow");
    write_gz(tmp("long.gz"), "wb", bad, n + 3);
    idx_refused(tmp("long.gz"), DFX_ERR_FORMAT, "3 trailing bytes");
    /* a second member after complete data is trailing data too */
    write_gz(tmp("member.gz"), "wb", buf, n);
    write_gz(tmp("member.gz"), "ab", "!", 1);
    idx_refused(tmp("member.gz"), DFX_ERR_FORMAT, "1 trailing bytes");
    /* a header declaring far more than the compressed bytes can hold is
     * refused before anything that size is allocated */
    const uint32_t big[3] = {60000, 280, 280};
    write_gz(tmp("big.gz"), "wb", bad, idx_make(bad, 0x08, 3, big, pay, 24));
    idx_refused(tmp("big.gz"), DFX_ERR_FORMAT, "more than its");

    write_gz(tmp("good.gz"), "wb", buf, n);
    size_t gn;
    unsigned char *gz = read_bytes(tmp("good.gz"), &gn);
    unsigned char *g = malloc(gn + 8);
    ck_assert_ptr_nonnull(g);
    /* CRC-32 and ISIZE are the last 8 bytes (RFC 1952 2.3) */
    memcpy(g, gz, gn);
    g[gn - 8] ^= 0x55;
    idx_bytes_refused(g, gn, DFX_ERR_FORMAT, "corrupt gzip stream: incorrect data check");
    memcpy(g, gz, gn);
    g[gn - 2] ^= 0x01;
    idx_bytes_refused(g, gn, DFX_ERR_FORMAT, "corrupt gzip stream: incorrect length check");
    memcpy(g, gz, gn);
    g[10] = 0xff;   /* the first block: BTYPE 11, reserved */
    idx_bytes_refused(g, gn, DFX_ERR_FORMAT, "corrupt gzip stream: invalid block type");
    idx_bytes_refused(gz, gn - 4, DFX_ERR_FORMAT, "truncated gzip stream");
    idx_bytes_refused(gz, 2, DFX_ERR_FORMAT, "truncated gzip stream");
    memcpy(g, gz, gn);
    memcpy(g + gn, "\0\0\0", 3);
    idx_bytes_refused(g, gn + 3, DFX_ERR_FORMAT, "3 bytes of garbage after the gzip stream");
    memcpy(g + gn, "\x1f", 1);
    idx_bytes_refused(g, gn + 1, DFX_ERR_FORMAT, "1 bytes of garbage after the gzip stream");
    free(g);
    free(gz);
}
END_TEST

/* ---- CSV ------------------------------------------------------------------ */

static dfx_csv *csv_of(const char *text, dfx_csv_header header)
{
    write_text(tmp("t.csv"), text);
    dfx_csv_options opt;
    dfx_csv_options_init(&opt);
    opt.header = header;
    dfx_csv *csv;
    ck_ok(dfx_csv_read(tmp("t.csv"), &opt, &csv));
    return csv;
}

static void csv_refused(const char *text, dfx_status status, const char *part)
{
    write_text(tmp("t.csv"), text);
    dfx_csv *csv = (dfx_csv *)&csv;
    char want[512];
    snprintf(want, sizeof want, "%s%s", tmp("t.csv"), part);
    ck_fails(dfx_csv_read(tmp("t.csv"), NULL, &csv), status, want);
    ck_assert_ptr_null(csv);
}

START_TEST(test_csv_quoting)
{
    dfx_csv *csv = csv_of("\xef\xbb\xbfname,text,n\r\n"
                          "a,\"x,y\",1\r\n"
                          "\r\n"
                          "b,\"he said \"\"hi\"\"\",2\n"
                          "c,\"two\nlines\",3\n"
                          "\"\",,4", DFX_CSV_HEADER_AUTO);
    ck_assert(dfx_csv_has_header(csv));
    ck_assert_int_eq(dfx_csv_rows(csv), 4);
    ck_assert_int_eq(dfx_csv_cols(csv), 3);
    ck_assert_str_eq(dfx_csv_column_name(csv, 0), "name");
    ck_assert_str_eq(dfx_csv_column_name(csv, 2), "n");
    ck_assert_ptr_null(dfx_csv_column_name(csv, 3));
    ck_assert_int_eq(dfx_csv_column_index(csv, "text"), 1);
    ck_assert_int_eq(dfx_csv_column_index(csv, "nope"), -1);
    ck_assert_str_eq(dfx_csv_cell(csv, 0, 1), "x,y");
    ck_assert_str_eq(dfx_csv_cell(csv, 1, 1), "he said \"hi\"");
    ck_assert_str_eq(dfx_csv_cell(csv, 2, 1), "two\nlines");
    ck_assert_str_eq(dfx_csv_cell(csv, 3, 0), "");
    ck_assert_str_eq(dfx_csv_cell(csv, 3, 1), "");
    ck_assert_str_eq(dfx_csv_cell(csv, 3, 2), "4");
    ck_assert_ptr_null(dfx_csv_cell(csv, 4, 0));
    ck_assert_ptr_null(dfx_csv_cell(csv, 0, -1));
    /* physical lines: the empty line 3 skipped, row c spans lines 5-6 */
    ck_assert_int_eq(dfx_csv_line(csv, 0), 2);
    ck_assert_int_eq(dfx_csv_line(csv, 1), 4);
    ck_assert_int_eq(dfx_csv_line(csv, 2), 5);
    ck_assert_int_eq(dfx_csv_line(csv, 3), 7);
    double v;
    ck_ok(dfx_csv_number(csv, 1, 2, &v));
    ck_assert_double_eq(v, 2);
    /* a cell after a quoted line break is on the next line */
    dfx_csv_destroy(csv);
    csv = csv_of("a,b,c\n\"x\ny\",2,oops\n", DFX_CSV_HEADER_AUTO);
    ck_fails(dfx_csv_number(csv, 0, 2, &v), DFX_ERR_FORMAT, "t.csv:3: column 3 ('c'): expected a number, got 'oops'");
    ck_fails(dfx_csv_number(csv, 0, 0, &v), DFX_ERR_FORMAT, "t.csv:2: column 1 ('a'): expected a number, got 'x\\ny'");
    ck_fails(dfx_csv_number(csv, 1, 0, &v), DFX_ERR_INVALID_ARG, "no cell at row 1, column 0");
    dfx_csv_destroy(csv);
}
END_TEST

START_TEST(test_csv_header_detection)
{
    dfx_csv *csv = csv_of("1,2.5,-3e2\n4, 5 ,6\n", DFX_CSV_HEADER_AUTO);
    ck_assert(!dfx_csv_has_header(csv));
    ck_assert_int_eq(dfx_csv_rows(csv), 2);
    ck_assert_ptr_null(dfx_csv_column_name(csv, 0));
    double *m;
    ck_ok(dfx_csv_matrix(csv, &m));
    const double want[6] = {1, 2.5, -300, 4, 5, 6};
    for (int i = 0; i < 6; i++)
        ck_assert_double_eq(m[i], want[i]);
    free(m);
    dfx_csv_destroy(csv);
    /* one text cell in the first row makes it a header */
    csv = csv_of("1,x,3\n4,5,6\n", DFX_CSV_HEADER_AUTO);
    ck_assert(dfx_csv_has_header(csv));
    ck_assert_int_eq(dfx_csv_rows(csv), 1);
    dfx_csv_destroy(csv);
    /* forced either way */
    csv = csv_of("1,2\n3,4\n", DFX_CSV_HEADER_YES);
    ck_assert(dfx_csv_has_header(csv));
    ck_assert_str_eq(dfx_csv_column_name(csv, 1), "2");
    ck_assert_int_eq(dfx_csv_rows(csv), 1);
    dfx_csv_destroy(csv);
    csv = csv_of("a,b\n3,4\n", DFX_CSV_HEADER_NO);
    ck_assert(!dfx_csv_has_header(csv));
    ck_assert_int_eq(dfx_csv_rows(csv), 2);
    ck_fails(dfx_csv_matrix(csv, &m), DFX_ERR_FORMAT, "t.csv:1: column 1: expected a number, got 'a'");
    ck_assert_ptr_null(m);
    dfx_csv_destroy(csv);
    /* a header alone: no rows, no matrix */
    csv = csv_of("a,b\n", DFX_CSV_HEADER_AUTO);
    ck_assert_int_eq(dfx_csv_rows(csv), 0);
    ck_ok(dfx_csv_matrix(csv, &m));
    ck_assert_ptr_null(m);
    dfx_csv_destroy(csv);
    /* tab-separated */
    write_text(tmp("t.tsv"), "x\ty\n1\t2\n");
    dfx_csv_options opt;
    dfx_csv_options_init(&opt);
    opt.delimiter = '\t';
    ck_ok(dfx_csv_read(tmp("t.tsv"), &opt, &csv));
    ck_assert_str_eq(dfx_csv_column_name(csv, 1), "y");
    ck_assert_str_eq(dfx_csv_cell(csv, 0, 1), "2");
    dfx_csv_destroy(csv);
    opt.delimiter = '"';
    ck_fails(dfx_csv_read(tmp("t.tsv"), &opt, &csv), DFX_ERR_INVALID_ARG, "delimiter");
}
END_TEST

START_TEST(test_csv_errors)
{
    csv_refused("a,b\n1,2\n3\n", DFX_ERR_FORMAT, ":3: row has 1 field, expected 2");
    csv_refused("a,b\n\"x\ny\",2\n\n3,4,5\n", DFX_ERR_FORMAT, ":5: row has 3 fields, expected 2");
    csv_refused("1,2,3,4,5,6,7,8\n1,2,3,4,5,6,7\n", DFX_ERR_FORMAT, ":2: row has 7 fields, expected 8");
    csv_refused("a,b\n1,\"2\n3,4\n", DFX_ERR_FORMAT, ":2: a quoted field is not closed (it opens on this line)");
    csv_refused("a,b\n1,x\"y\n", DFX_ERR_FORMAT, ":2: '\"' inside an unquoted field");
    csv_refused("a,b\n\n1,\"x\"y\n", DFX_ERR_FORMAT, ":3: 'y' after a closing quote");
    csv_refused("", DFX_ERR_FORMAT, ": no rows");
    csv_refused("\n\r\n", DFX_ERR_FORMAT, ": no rows");
    write_bytes(tmp("t.csv"), "a,b\n1,\0\n", 8);
    dfx_csv *csv;
    ck_fails(dfx_csv_read(tmp("t.csv"), NULL, &csv), DFX_ERR_FORMAT, "t.csv:2: a NUL byte");
    ck_fails(dfx_csv_read(tmp("none.csv"), NULL, &csv), DFX_ERR_NOT_FOUND, "none.csv: cannot open");
    /* out of double's range */
    csv = csv_of("x\n1e999\n", DFX_CSV_HEADER_AUTO);
    double v;
    ck_fails(dfx_csv_number(csv, 0, 0, &v), DFX_ERR_RANGE, "t.csv:2: column 1 ('x'): expected a number within");
    dfx_csv_destroy(csv);
    /* not numbers: hex, empty, trailing text */
    csv = csv_of("x,y,z\n0x10,,1.5kg\n", DFX_CSV_HEADER_AUTO);
    ck_fails(dfx_csv_number(csv, 0, 0, &v), DFX_ERR_FORMAT, "got '0x10'");
    ck_fails(dfx_csv_number(csv, 0, 1, &v), DFX_ERR_FORMAT, "column 2 ('y'): expected a number, got ''");
    ck_fails(dfx_csv_number(csv, 0, 2, &v), DFX_ERR_FORMAT, "got '1.5kg'");
    dfx_csv_destroy(csv);
}
END_TEST

START_TEST(test_csv_gzip_and_locale)
{
    const char *text = "t,v\n0,1.25\n1,-2.5\n";
    write_gz(tmp("t.csv.gz"), "wb", text, strlen(text));
    dfx_csv *csv;
    ck_ok(dfx_csv_read(tmp("t.csv.gz"), NULL, &csv));
    ck_assert_int_eq(dfx_csv_rows(csv), 2);
    /* a decimal comma locale must not change how the file reads */
    const char *old = setlocale(LC_NUMERIC, NULL);
    char saved[64];
    snprintf(saved, sizeof saved, "%s", old ? old : "C");
    bool comma = setlocale(LC_NUMERIC, "de_DE.UTF-8") || setlocale(LC_NUMERIC, "fr_FR.UTF-8");
    double v;
    ck_ok(dfx_csv_number(csv, 1, 1, &v));
    ck_assert_double_eq(v, -2.5);
    setlocale(LC_NUMERIC, saved);
    if (!comma)
        fprintf(stderr, "test_csv_gzip_and_locale: no decimal-comma locale installed; read in the C locale only\n");
    dfx_csv_destroy(csv);
    /* a corrupt gzip CSV names the file */
    size_t n;
    unsigned char *gz = read_bytes(tmp("t.csv.gz"), &n);
    gz[n - 8] ^= 1;
    write_bytes(tmp("bad.csv.gz"), gz, n);
    free(gz);
    ck_fails(dfx_csv_read(tmp("bad.csv.gz"), NULL, &csv), DFX_ERR_FORMAT, "bad.csv.gz: corrupt gzip stream");
}
END_TEST

START_TEST(test_csv_shared_data)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/../shared/data/exchange_rate/exchange_rate.txt.gz", DFX_SOURCE_ROOT);
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "\n*** SKIP test_csv_shared_data: %s not found; the real CSV files were NOT read ***\n\n",
                path);
        return;
    }
    dfx_csv *csv;
    ck_ok(dfx_csv_read(path, NULL, &csv));
    ck_assert(!dfx_csv_has_header(csv));
    ck_assert_int_eq(dfx_csv_rows(csv), 7588);
    ck_assert_int_eq(dfx_csv_cols(csv), 8);
    double *m;
    ck_ok(dfx_csv_matrix(csv, &m));
    ck_assert_double_eq(m[0], 0.7855);
    ck_assert_double_eq(m[7], 0.525486);
    free(m);
    dfx_csv_destroy(csv);

    snprintf(path, sizeof path, "%s/../shared/data/e2e/devset.csv", DFX_SOURCE_ROOT);
    ck_ok(dfx_csv_read(path, NULL, &csv));
    ck_assert(dfx_csv_has_header(csv));
    ck_assert_int_eq(dfx_csv_rows(csv), 4672);
    ck_assert_int_eq(dfx_csv_cols(csv), 2);
    ck_assert_str_eq(dfx_csv_column_name(csv, 0), "mr");
    ck_assert_str_eq(dfx_csv_column_name(csv, 1), "ref");
    ck_assert_str_eq(dfx_csv_cell(csv, 0, 0), "name[Alimentum], area[city centre], familyFriendly[no]");
    ck_assert_int_eq(dfx_csv_line(csv, 0), 2);
    dfx_csv_destroy(csv);
}
END_TEST

/* ---- datasets and the loader --------------------------------------------- */

/* n items of [1, 2, 3]: sample 0 is the item's index (mod 256), sample 1
 * its index / 256, then 10, 20, 30, 40: a row pattern a mirror changes. */
static dfx_dataset *index_dataset(int64_t n, bool labels)
{
    uint8_t *px = malloc((size_t)n * 6);
    int64_t *lab = malloc((size_t)n * sizeof *lab);
    ck_assert(px && lab);
    for (int64_t i = 0; i < n; i++) {
        const uint8_t item[6] = {(uint8_t)i, (uint8_t)(i / 256), 10, 20, 30, 40};
        memcpy(px + 6 * i, item, 6);
        lab[i] = 1000 + i;
    }
    dfx_dataset *ds;
    ck_ok(dfx_dataset_create(n, 1, 2, 3, px, labels ? lab : NULL, &ds));
    free(px);
    free(lab);
    return ds;
}

static int sample(float x)
{
    return (int)lrintf((x + 1.0f) * 127.5f);
}

/* The dataset index of an unflipped or flipped [1, 2, 3] item. */
static int64_t item_index(const float *x, bool *flipped)
{
    /* unflipped rows: [i%256, i/256, 10] [20, 30, 40]; flipped: [10, i/256, i%256] [40, 30, 20] */
    *flipped = sample(x[3]) == 40;
    return *flipped ? sample(x[2]) + 256 * sample(x[1]) : sample(x[0]) + 256 * sample(x[1]);
}

START_TEST(test_loader_epochs_are_permutations)
{
    /* B = 3 over N = 7: batches straddle epochs; B = 8 over N = 3: one
     * batch spans several */
    const int64_t cases[2][2] = {{7, 3}, {3, 8}};
    for (int c = 0; c < 2; c++) {
        const int64_t n = cases[c][0], b = cases[c][1];
        dfx_dataset *ds = index_dataset(n, true);
        dfx_loader *l;
        ck_ok(dfx_loader_create(ds, b, 42, NULL, &l));
        int64_t shape[4];
        dfx_loader_shape(l, shape);
        ck_assert(shape[0] == b && shape[1] == 1 && shape[2] == 2 && shape[3] == 3);
        const int64_t epochs = 20, steps = epochs * n / b;
        int64_t *seq = malloc((size_t)(steps * b) * sizeof *seq);
        float *x = malloc((size_t)b * 6 * sizeof *x);
        int64_t *lab = malloc((size_t)b * sizeof *lab);
        for (int64_t s = 0; s < steps; s++) {
            ck_ok(dfx_loader_batch(l, s, x, lab));
            for (int64_t k = 0; k < b; k++) {
                bool flipped;
                seq[s * b + k] = item_index(x + 6 * k, &flipped);
                ck_assert(!flipped);
                ck_assert_int_eq(lab[k], 1000 + seq[s * b + k]);
            }
        }
        bool differs_from_identity = false, differs_between_epochs = false;
        for (int64_t e = 0; (e + 1) * n <= steps * b; e++) {
            int seen[16] = {0};
            for (int64_t i = 0; i < n; i++) {
                const int64_t v = seq[e * n + i];
                ck_assert(v >= 0 && v < n);
                seen[v]++;
                differs_from_identity |= v != i;
                differs_between_epochs |= e > 0 && v != seq[i];
            }
            for (int64_t i = 0; i < n; i++)
                ck_assert_msg(seen[i] == 1, "epoch %lld: item %lld seen %d times", (long long)e, (long long)i,
                              seen[i]);
        }
        ck_assert(differs_from_identity && differs_between_epochs);
        free(seq);
        free(x);
        free(lab);
        dfx_loader_destroy(l);
        dfx_dataset_destroy(ds);
    }
}
END_TEST

/* Batches [0, steps) of a fresh loader, concatenated. */
static float *batches(const dfx_dataset *ds, int64_t b, uint64_t seed, const dfx_loader_options *opt,
                      int64_t steps)
{
    dfx_loader *l;
    ck_ok(dfx_loader_create(ds, b, seed, opt, &l));
    int64_t shape[4];
    dfx_loader_shape(l, shape);
    const int64_t per = shape[0] * shape[1] * shape[2] * shape[3];
    float *x = malloc((size_t)(steps * per) * sizeof *x);
    for (int64_t s = 0; s < steps; s++)
        ck_ok(dfx_loader_batch(l, s, x + s * per, NULL));
    dfx_loader_destroy(l);
    return x;
}

START_TEST(test_loader_pure_and_seeded)
{
    dfx_dataset *ds = index_dataset(300, true);
    dfx_loader_options opt;
    dfx_loader_options_init(&opt);
    opt.hflip = true;
    const int64_t b = 16, steps = 60, per = b * 6;   /* 3.2 epochs */
    float *a = batches(ds, b, 7, &opt, steps);
    float *again = batches(ds, b, 7, &opt, steps);
    float *other = batches(ds, b, 8, &opt, steps);
    ck_assert_mem_eq(a, again, (size_t)(steps * per) * sizeof *a);
    ck_assert(memcmp(a, other, (size_t)(steps * per) * sizeof *a) != 0);
    /* out of order, repeated, on a loader that has seen other epochs, and
     * on a fresh one: batch(step) is always the same */
    dfx_loader *l;
    ck_ok(dfx_loader_create(ds, b, 7, &opt, &l));
    float *x = malloc((size_t)per * sizeof *x);
    const int64_t order[] = {59, 0, 37, 18, 19, 1000, 18, 59, 3, 2, 1, 0};
    for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) {
        ck_ok(dfx_loader_batch(l, order[k], x, NULL));
        if (order[k] < steps)
            ck_assert_msg(memcmp(x, a + order[k] * per, (size_t)per * sizeof *x) == 0, "step %lld differs",
                          (long long)order[k]);
    }
    /* labels follow the items */
    int64_t lab[16];
    ck_ok(dfx_loader_batch(l, 37, x, lab));
    for (int64_t k = 0; k < b; k++) {
        bool flipped;
        ck_assert_int_eq(lab[k], 1000 + item_index(x + 6 * k, &flipped));
    }
    /* epochs for progress: N = 300, B = 16 */
    ck_assert_int_eq(dfx_loader_epoch_of(l, 0), 0);
    ck_assert_int_eq(dfx_loader_epoch_of(l, 18), 0);    /* positions 288..303 */
    ck_assert_int_eq(dfx_loader_epoch_of(l, 19), 1);
    ck_assert_double_eq_tol(dfx_loader_epochs_done(l, 0), 16.0 / 300, 1e-12);
    ck_assert_double_eq_tol(dfx_loader_epochs_done(l, 74), 4.0, 1e-12);
    ck_assert_int_eq(dfx_loader_epoch_of(l, -1), -1);
    ck_fails(dfx_loader_batch(l, -1, x, NULL), DFX_ERR_RANGE, "step -1 is out of range");
    ck_fails(dfx_loader_batch(l, INT64_MAX / 8, x, NULL), DFX_ERR_RANGE, "out of range");
    dfx_loader_destroy(l);
    free(x);
    free(a);
    free(again);
    free(other);
    dfx_dataset_destroy(ds);
}
END_TEST

START_TEST(test_loader_no_shuffle_and_errors)
{
    dfx_dataset *ds = index_dataset(5, false);
    dfx_loader_options opt;
    dfx_loader_options_init(&opt);
    opt.shuffle = false;
    dfx_loader *l;
    ck_ok(dfx_loader_create(ds, 3, 1, &opt, &l));
    float x[18];
    ck_ok(dfx_loader_batch(l, 1, x, NULL));   /* positions 3, 4, 5 = items 3, 4, 0 */
    const int64_t want[3] = {3, 4, 0};
    for (int k = 0; k < 3; k++) {
        bool flipped;
        ck_assert_int_eq(item_index(x + 6 * k, &flipped), want[k]);
    }
    int64_t lab[3];
    ck_fails(dfx_loader_batch(l, 0, x, lab), DFX_ERR_INVALID_ARG, "dataset without labels");
    dfx_loader_destroy(l);
    ck_fails(dfx_loader_create(ds, 0, 1, NULL, &l), DFX_ERR_INVALID_ARG, "batch size 0");
    ck_assert_ptr_null(l);
    opt.pad_h = 1;
    opt.pad_w = 3;
    ck_fails(dfx_loader_create(ds, 2, 1, &opt, &l), DFX_ERR_RANGE, "pad_to 1x3 is smaller than the images (2x3)");
    /* items */
    float item[6];
    ck_ok(dfx_dataset_item(ds, 4, item, NULL));
    ck_assert_float_eq(item[0], (float)(4 / 127.5 - 1));
    ck_assert_float_eq(item[2], (float)(10 / 127.5 - 1));
    int64_t label;
    ck_fails(dfx_dataset_item(ds, 4, item, &label), DFX_ERR_INVALID_ARG, "without labels");
    ck_fails(dfx_dataset_item(ds, 5, item, NULL), DFX_ERR_INVALID_ARG, "item 5 is out of range");
    dfx_dataset_destroy(ds);
    /* the [-1, 1] mapping's ends */
    const uint8_t ends[2] = {0, 255};
    ck_ok(dfx_dataset_create(2, 1, 1, 1, ends, NULL, &ds));
    ck_ok(dfx_dataset_item(ds, 0, item, NULL));
    ck_assert_float_eq(item[0], -1.0f);
    ck_ok(dfx_dataset_item(ds, 1, item, NULL));
    ck_assert_float_eq(item[0], 1.0f);
    dfx_dataset_destroy(ds);
    ck_fails(dfx_dataset_create(0, 1, 1, 1, ends, NULL, &ds), DFX_ERR_INVALID_ARG, "at least 1");
}
END_TEST

START_TEST(test_loader_flips)
{
    const int64_t n = 1000, b = 50;
    dfx_dataset *ds = index_dataset(n, false);
    dfx_loader_options opt;
    dfx_loader_options_init(&opt);
    opt.hflip = true;
    dfx_loader *l;
    ck_ok(dfx_loader_create(ds, b, 3, &opt, &l));
    float *x = malloc((size_t)b * 6 * sizeof *x), ref[6];
    int flips = 0, seen[1000] = {0};
    for (int64_t s = 0; s < n / b; s++) {
        ck_ok(dfx_loader_batch(l, s, x, NULL));
        for (int64_t k = 0; k < b; k++) {
            const float *it = x + 6 * k;
            bool flipped;
            const int64_t i = item_index(it, &flipped);
            ck_assert(i >= 0 && i < n);
            seen[i]++;
            flips += flipped;
            /* exactly the item, or exactly its mirror */
            ck_ok(dfx_dataset_item(ds, i, ref, NULL));
            for (int y = 0; y < 2; y++)
                for (int c = 0; c < 3; c++)
                    ck_assert_float_eq(it[3 * y + c], ref[3 * y + (flipped ? 2 - c : c)]);
        }
    }
    for (int64_t i = 0; i < n; i++)
        ck_assert_int_eq(seen[i], 1);
    /* binomial(1000, 1/2): sd 15.8, so 430..570 is beyond 4.4 sd */
    ck_assert_msg(flips > 430 && flips < 570, "%d flips of 1000", flips);
    /* the flips of the next epoch are drawn anew */
    int flips2 = 0, both = 0;
    bool flipped_e0[1000];
    for (int64_t s = 0; s < n / b; s++) {
        ck_ok(dfx_loader_batch(l, s, x, NULL));
        for (int64_t k = 0; k < b; k++) {
            bool f;
            flipped_e0[item_index(x + 6 * k, &f)] = f;
        }
    }
    for (int64_t s = n / b; s < 2 * n / b; s++) {
        ck_ok(dfx_loader_batch(l, s, x, NULL));
        for (int64_t k = 0; k < b; k++) {
            bool f;
            const int64_t i = item_index(x + 6 * k, &f);
            flips2 += f;
            both += f && flipped_e0[i];
        }
    }
    ck_assert_msg(flips2 > 430 && flips2 < 570, "%d flips of 1000 in epoch 1", flips2);
    ck_assert_msg(both > 170 && both < 330, "%d items flipped in both epochs", both);
    free(x);
    dfx_loader_destroy(l);
    dfx_dataset_destroy(ds);
}
END_TEST

START_TEST(test_loader_padding)
{
    /* [2, 2, 3] padded to 5x6: top 1, left 1, the odd excess below and right */
    uint8_t px[12];
    for (int i = 0; i < 12; i++)
        px[i] = (uint8_t)(200 + i);
    dfx_dataset *ds;
    ck_ok(dfx_dataset_create(1, 2, 2, 3, px, NULL, &ds));
    dfx_loader_options opt;
    dfx_loader_options_init(&opt);
    opt.pad_h = 5;
    opt.pad_w = 6;
    dfx_loader *l;
    ck_ok(dfx_loader_create(ds, 2, 0, &opt, &l));
    int64_t shape[4];
    dfx_loader_shape(l, shape);
    ck_assert(shape[0] == 2 && shape[1] == 2 && shape[2] == 5 && shape[3] == 6);
    float x[2 * 2 * 5 * 6];
    ck_ok(dfx_loader_batch(l, 0, x, NULL));
    for (int k = 0; k < 2; k++)
        for (int c = 0; c < 2; c++)
            for (int y = 0; y < 5; y++)
                for (int xx = 0; xx < 6; xx++) {
                    const float v = x[((k * 2 + c) * 5 + y) * 6 + xx];
                    if (y >= 1 && y < 3 && xx >= 1 && xx < 4)
                        ck_assert_float_eq(v, (float)(px[(c * 2 + y - 1) * 3 + xx - 1] / 127.5 - 1));
                    else
                        ck_assert_float_eq(v, -1.0f);
                }
    dfx_loader_destroy(l);
    /* an even excess is split evenly: 28x28 in 32x32 at (2, 2) */
    dfx_dataset_destroy(ds);
    uint8_t *big = malloc(28 * 28);
    memset(big, 255, 28 * 28);
    ck_ok(dfx_dataset_create(1, 1, 28, 28, big, NULL, &ds));
    free(big);
    opt.pad_h = opt.pad_w = 32;
    ck_ok(dfx_loader_create(ds, 1, 0, &opt, &l));
    float *y = malloc(32 * 32 * sizeof *y);
    ck_ok(dfx_loader_batch(l, 0, y, NULL));
    for (int r = 0; r < 32; r++)
        for (int c = 0; c < 32; c++)
            ck_assert_float_eq(y[r * 32 + c], r >= 2 && r < 30 && c >= 2 && c < 30 ? 1.0f : -1.0f);
    free(y);
    dfx_loader_destroy(l);
    dfx_dataset_destroy(ds);
}
END_TEST

/* Batches big enough for the threaded assembly, larger than the dataset
 * (each spans several epochs), mirrored and padded: every item is its
 * dataset item, or its mirror, centred in -1, as the label says. */
START_TEST(test_loader_large_batches)
{
    const int64_t n = 100, b = 256, side = 16, out = 20;
    uint8_t *px = malloc((size_t)(n * side * side));
    int64_t lab[100];
    for (int64_t i = 0; i < n * side * side; i++)
        px[i] = (uint8_t)((i * 2654435761u) >> 13);
    for (int64_t i = 0; i < n; i++)
        lab[i] = i;
    dfx_dataset *ds;
    ck_ok(dfx_dataset_create(n, 1, (int)side, (int)side, px, lab, &ds));
    dfx_loader_options opt;
    dfx_loader_options_init(&opt);
    opt.hflip = true;
    opt.pad_h = opt.pad_w = (int)out;
    dfx_loader *l;
    ck_ok(dfx_loader_create(ds, b, 11, &opt, &l));
    float *x = malloc((size_t)(b * out * out) * sizeof *x), ref[256];
    int64_t labels[256], seen[100] = {0};
    int flips = 0;
    for (int64_t s = 0; s < 25; s++) {   /* 64 epochs */
        ck_ok(dfx_loader_batch(l, s, x, labels));
        for (int64_t k = 0; k < b; k++) {
            const int64_t i = labels[k];
            ck_assert(i >= 0 && i < n);
            seen[i]++;
            ck_ok(dfx_dataset_item(ds, i, ref, NULL));
            const float *it = x + k * out * out;
            /* the first row of the image tells a mirror from the item */
            bool flipped = false;
            for (int64_t c = 0; c < side && !flipped; c++)
                flipped = it[2 * out + 2 + c] != ref[c];
            flips += flipped;
            for (int64_t r = 0; r < out; r++)
                for (int64_t c = 0; c < out; c++) {
                    const bool inside = r >= 2 && r < 18 && c >= 2 && c < 18;
                    const float want = !inside ? -1.0f : ref[(r - 2) * side + (flipped ? 17 - c : c - 2)];
                    if (it[r * out + c] != want)
                        ck_abort_msg("step %lld item %lld (%lld) at (%lld, %lld): %g, expected %g", (long long)s,
                                     (long long)k, (long long)i, (long long)r, (long long)c, it[r * out + c],
                                     want);
                }
        }
        /* whole epochs so far: each item equally often */
        if ((s + 1) * b % n == 0)
            for (int64_t i = 0; i < n; i++)
                ck_assert_int_eq(seen[i], (s + 1) * b / n);
    }
    ck_assert_msg(flips > 25 * 256 / 2 - 300 && flips < 25 * 256 / 2 + 300, "%d flips of %d", flips, 25 * 256);
    free(x);
    free(px);
    dfx_loader_destroy(l);
    dfx_dataset_destroy(ds);
}
END_TEST

/* ---- datasets from files ---------------------------------------------------- */

START_TEST(test_dataset_idx)
{
    /* 3 images of 2x2, gray */
    unsigned char buf[64], pay[12];
    for (int i = 0; i < 12; i++)
        pay[i] = (unsigned char)(i * 20);
    const uint32_t d3[3] = {3, 2, 2};
    write_gz(tmp("img.gz"), "wb", buf, idx_make(buf, 0x08, 3, d3, pay, 12));
    const uint32_t d1[1] = {3};
    const unsigned char lab[3] = {7, 0, 9};
    write_bytes(tmp("lab.idx"), buf, idx_make(buf, 0x08, 1, d1, lab, 3));
    dfx_dataset *ds;
    ck_ok(dfx_dataset_open_idx(tmp("img.gz"), tmp("lab.idx"), &ds));
    ck_assert_int_eq(dfx_dataset_count(ds), 3);
    int64_t shape[3];
    dfx_dataset_shape(ds, shape);
    ck_assert(shape[0] == 1 && shape[1] == 2 && shape[2] == 2);
    ck_assert(dfx_dataset_has_labels(ds));
    float x[4];
    int64_t label;
    ck_ok(dfx_dataset_item(ds, 2, x, &label));
    ck_assert_int_eq(label, 9);
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq(x[i], (float)(pay[8 + i] / 127.5 - 1));
    dfx_dataset_destroy(ds);

    /* [N, H, W, C] becomes [N, C, H, W]: 2 images of 1x2 RGB */
    const unsigned char hwc[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const uint32_t d4[4] = {2, 1, 2, 3};
    write_bytes(tmp("rgb.idx"), buf, idx_make(buf, 0x08, 4, d4, hwc, 12));
    ck_ok(dfx_dataset_open_idx(tmp("rgb.idx"), NULL, &ds));
    dfx_dataset_shape(ds, shape);
    ck_assert(shape[0] == 3 && shape[1] == 1 && shape[2] == 2);
    ck_assert(!dfx_dataset_has_labels(ds));
    float rgb[6];
    ck_ok(dfx_dataset_item(ds, 1, rgb, NULL));
    const int chw[6] = {7, 10, 8, 11, 9, 12};
    for (int i = 0; i < 6; i++)
        ck_assert_float_eq(rgb[i], (float)(chw[i] / 127.5 - 1));
    dfx_dataset_destroy(ds);

    /* labels that do not fit the images */
    const uint32_t d1b[1] = {2};
    write_bytes(tmp("lab2.idx"), buf, idx_make(buf, 0x08, 1, d1b, lab, 2));
    ds = (dfx_dataset *)&ds;
    ck_fails(dfx_dataset_open_idx(tmp("img.gz"), tmp("lab2.idx"), &ds), DFX_ERR_FORMAT, "lab2.idx: 2 labels for the 3 images of ");
    ck_assert_ptr_null(ds);
    write_bytes(tmp("lab3.idx"), buf, idx_make(buf, 0x08, 3, d3, pay, 12));
    ck_fails(dfx_dataset_open_idx(tmp("img.gz"), tmp("lab3.idx"), &ds), DFX_ERR_FORMAT, "lab3.idx: labels of shape [3,2,2] (expected [N])");
    const unsigned char f32lab[12] = {0};
    write_bytes(tmp("labf.idx"), buf, idx_make(buf, 0x0D, 1, d1, f32lab, 12));
    ck_fails(dfx_dataset_open_idx(tmp("img.gz"), tmp("labf.idx"), &ds), DFX_ERR_UNSUPPORTED, "labels must be integers, not F32");
    ck_fails(dfx_dataset_open_idx(tmp("img.gz"), tmp("nolabels.idx"), &ds), DFX_ERR_NOT_FOUND, "nolabels.idx");
    /* images that are not u8, or not 3-D/4-D */
    write_bytes(tmp("f.idx"), buf, idx_make(buf, 0x0D, 1, d1, f32lab, 12));
    ck_fails(dfx_dataset_open_idx(tmp("f.idx"), NULL, &ds), DFX_ERR_UNSUPPORTED, "f.idx: images must be u8 (idx type 0x08), not F32");
    ck_fails(dfx_dataset_open_idx(tmp("lab.idx"), NULL, &ds), DFX_ERR_FORMAT, "lab.idx: images of shape [3] (expected [N,H,W] or [N,H,W,C])");
}
END_TEST

/* A w x h PNG of `channels` (1 or 3) whose samples are base + their index. */
static void write_png(const char *name, int w, int h, int channels, int base)
{
    unsigned char px[256];
    for (int i = 0; i < w * h * channels; i++)
        px[i] = (unsigned char)(base + i);
    ck_ok(dfx__png_write(tmp(name), px, w, h, channels, NULL, 0));
}

START_TEST(test_dataset_png_dir)
{
    ck_assert_int_eq(mkdir(tmp("png"), 0700), 0);
    dfx_dataset *ds = (dfx_dataset *)&ds;
    ck_fails(dfx_dataset_open_png_dir(tmp("png"), &ds), DFX_ERR_NOT_FOUND, "png: no *.png files");
    ck_assert_ptr_null(ds);
    ck_fails(dfx_dataset_open_png_dir(tmp("nowhere"), &ds), DFX_ERR_NOT_FOUND, "nowhere: cannot open the folder");
    /* written out of order; a hidden PNG and other files are ignored */
    write_png("png/b.png", 3, 2, 3, 100);
    write_png("png/a.png", 3, 2, 3, 0);
    write_png("png/c.png", 3, 2, 3, 200);
    write_png("png/.hidden.png", 5, 5, 1, 0);
    write_text(tmp("png/notes.txt"), "x");
    write_text(tmp("png/B.PNG"), "x");
    ck_ok(dfx_dataset_open_png_dir(tmp("png"), &ds));
    ck_assert_int_eq(dfx_dataset_count(ds), 3);
    int64_t shape[3];
    dfx_dataset_shape(ds, shape);
    ck_assert(shape[0] == 3 && shape[1] == 2 && shape[2] == 3);
    ck_assert(!dfx_dataset_has_labels(ds));
    float x[18];
    for (int i = 0; i < 3; i++) {
        ck_ok(dfx_dataset_item(ds, i, x, NULL));
        /* CHW from the file's HWC: sample (c, y, x) was base + (y*3 + x)*3 + c */
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < 6; p++)
                ck_assert_float_eq(x[c * 6 + p], (float)((100 * i + p * 3 + c) / 127.5 - 1));
    }
    dfx_dataset_destroy(ds);
    /* a different size, then a different colour type, named with the first */
    write_png("png/d.png", 3, 3, 3, 0);
    ck_fails(dfx_dataset_open_png_dir(tmp("png"), &ds), DFX_ERR_FORMAT, "png/d.png: 3x3 RGB, expected 3x2 RGB like ");
    ck_assert_msg(strstr(dfx_error_message(), "png/a.png (the first image)"), "%s", dfx_error_message());
    ck_assert_ptr_null(ds);
    write_png("png/d.png", 3, 2, 1, 0);
    ck_fails(dfx_dataset_open_png_dir(tmp("png"), &ds), DFX_ERR_FORMAT, "png/d.png: 3x2 gray, expected 3x2 RGB");
    /* a broken file is named by the PNG reader; the first in name order is reported */
    write_text(tmp("png/ab.png"), "not a png");
    write_text(tmp("png/bb.png"), "not a png either");
    ck_fails(dfx_dataset_open_png_dir(tmp("png"), &ds), DFX_ERR_FORMAT, "png/ab.png: not a PNG file");
}
END_TEST

START_TEST(test_fashion_mnist)
{
    const char *dir = "/usr/share/datasets/fashion-mnist";
    char images[256], labels[256];
    snprintf(images, sizeof images, "%s/train-images-idx3-ubyte.gz", dir);
    snprintf(labels, sizeof labels, "%s/train-labels-idx1-ubyte.gz", dir);
    if (access(images, R_OK) != 0 || access(labels, R_OK) != 0) {
        fprintf(stderr, "\n*** SKIP test_fashion_mnist: %s not found (Debian package dataset-fashion-mnist); "
                        "the real idx files were NOT read ***\n\n", images);
        return;
    }
    dfx_dataset *ds;
    ck_ok(dfx_dataset_open_idx(images, labels, &ds));
    ck_assert_int_eq(dfx_dataset_count(ds), 60000);
    int64_t shape[3];
    dfx_dataset_shape(ds, shape);
    ck_assert(shape[0] == 1 && shape[1] == 28 && shape[2] == 28);
    dfx_loader_options opt;
    dfx_loader_options_init(&opt);
    opt.pad_h = opt.pad_w = 32;
    dfx_loader *l;
    ck_ok(dfx_loader_create(ds, 500, 0, &opt, &l));
    float *x = malloc(500 * 32 * 32 * sizeof *x);
    int64_t lab[500], count[10] = {0};
    /* one epoch: every label in 0..9, 6000 of each class */
    for (int64_t s = 0; s < 120; s++) {
        ck_ok(dfx_loader_batch(l, s, x, lab));
        for (int k = 0; k < 500; k++) {
            if (lab[k] < 0 || lab[k] > 9)
                ck_abort_msg("label %lld of step %lld is not in 0..9", (long long)lab[k], (long long)s);
            count[lab[k]]++;
        }
    }
    for (int c = 0; c < 10; c++)
        ck_assert_int_eq(count[c], 6000);
    float lo = 1, hi = -1;
    for (int64_t i = 0; i < 500 * 32 * 32; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    ck_assert_float_eq(lo, -1.0f);
    ck_assert_float_eq(hi, 1.0f);
    free(x);
    dfx_loader_destroy(l);
    dfx_dataset_destroy(ds);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("data");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_idx_u8_raw_and_gzip);
    tcase_add_test(tc, test_idx_types);
    tcase_add_test(tc, test_idx_errors);
    tcase_add_test(tc, test_csv_quoting);
    tcase_add_test(tc, test_csv_header_detection);
    tcase_add_test(tc, test_csv_errors);
    tcase_add_test(tc, test_csv_gzip_and_locale);
    tcase_add_test(tc, test_csv_shared_data);
    tcase_add_test(tc, test_loader_epochs_are_permutations);
    tcase_add_test(tc, test_loader_pure_and_seeded);
    tcase_add_test(tc, test_loader_no_shuffle_and_errors);
    tcase_add_test(tc, test_loader_flips);
    tcase_add_test(tc, test_loader_padding);
    tcase_add_test(tc, test_loader_large_batches);
    tcase_add_test(tc, test_dataset_idx);
    tcase_add_test(tc, test_dataset_png_dir);
    tcase_add_test(tc, test_fashion_mnist);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
