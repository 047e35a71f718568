/* libFuzzer target: the CSV reader, straight from memory. Each input is
 * read with the default options, and (its first byte choosing the
 * delimiter and the header mode) the rest with others. An accepted table
 * must behave: every cell and name there, lines increasing, each cell a
 * number or refused with a message naming the file and line; written back
 * out with every cell quoted it reads again as the same table, and so does
 * the input gzip-compressed. A refusal leaves no table and names the file. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/data/internal.h"

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            __builtin_trap();                                                  \
    } while (0)

typedef struct buf {
    char *d;
    size_t n, cap;
} buf;

static void put(buf *b, const char *p, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = 2 * (b->n + n + 1);
        b->d = realloc(b->d, b->cap);
        CHECK(b->d);
    }
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void put_quoted(buf *b, const char *s)
{
    put(b, "\"", 1);
    for (; *s; s++) {
        put(b, s, 1);
        if (*s == '"')
            put(b, "\"", 1);
    }
    put(b, "\"", 1);
}

/* The table written back: every cell quoted, CRLF line breaks. */
static buf write_back(const dfx_csv *csv, char delim)
{
    buf b = {NULL, 0, 0};
    const int64_t cols = dfx_csv_cols(csv);
    if (dfx_csv_has_header(csv)) {
        for (int64_t c = 0; c < cols; c++) {
            if (c)
                put(&b, &delim, 1);
            put_quoted(&b, dfx_csv_column_name(csv, c));
        }
        put(&b, "\r\n", 2);
    }
    for (int64_t r = 0; r < dfx_csv_rows(csv); r++) {
        for (int64_t c = 0; c < cols; c++) {
            if (c)
                put(&b, &delim, 1);
            put_quoted(&b, dfx_csv_cell(csv, r, c));
        }
        put(&b, "\r\n", 2);
    }
    return b;
}

static void same(const dfx_csv *a, const dfx_csv *b)
{
    CHECK(dfx_csv_rows(a) == dfx_csv_rows(b) && dfx_csv_cols(a) == dfx_csv_cols(b));
    CHECK(dfx_csv_has_header(a) == dfx_csv_has_header(b));
    for (int64_t c = 0; c < dfx_csv_cols(a) && dfx_csv_has_header(a); c++)
        CHECK(strcmp(dfx_csv_column_name(a, c), dfx_csv_column_name(b, c)) == 0);
    for (int64_t r = 0; r < dfx_csv_rows(a); r++)
        for (int64_t c = 0; c < dfx_csv_cols(a); c++)
            CHECK(strcmp(dfx_csv_cell(a, r, c), dfx_csv_cell(b, r, c)) == 0);
}

static unsigned char *gzip(const void *data, size_t n, size_t *out_n)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    CHECK(deflateInit2(&z, 1, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    size_t cap = deflateBound(&z, (uLong)n);
    unsigned char *b = malloc(cap);
    CHECK(b);
    z.next_in = (Bytef *)(uintptr_t)data;
    z.avail_in = (uInt)n;
    z.next_out = b;
    z.avail_out = (uInt)cap;
    CHECK(deflate(&z, Z_FINISH) == Z_STREAM_END);
    *out_n = cap - z.avail_out;
    deflateEnd(&z);
    return b;
}

static void read_one(const uint8_t *data, size_t size, const dfx_csv_options *opt)
{
    dfx_csv *csv = (dfx_csv *)&csv;
    if (dfx__csv_parse_mem("fuzz.csv", data, size, opt, &csv) != DFX_OK) {
        CHECK(csv == NULL);
        CHECK(strncmp(dfx_error_message(), "fuzz.csv", 8) == 0);
        return;
    }
    const int64_t rows = dfx_csv_rows(csv), cols = dfx_csv_cols(csv);
    CHECK(rows >= 0 && cols >= 1);
    CHECK(dfx_csv_has_header(csv) || rows >= 1);
    for (int64_t c = 0; c < cols; c++)
        CHECK(!dfx_csv_has_header(csv) || dfx_csv_column_name(csv, c));
    int64_t prev = 0;
    for (int64_t r = 0; r < rows; r++) {
        const int64_t line = dfx_csv_line(csv, r);
        CHECK(line > prev);
        prev = line;
        for (int64_t c = 0; c < cols; c++) {
            CHECK(dfx_csv_cell(csv, r, c));
            double v;
            dfx_status st = dfx_csv_number(csv, r, c, &v);
            CHECK(st == DFX_OK || st == DFX_ERR_FORMAT || st == DFX_ERR_RANGE);
            if (st)
                CHECK(strncmp(dfx_error_message(), "fuzz.csv:", 9) == 0);
        }
    }
    CHECK(!dfx_csv_cell(csv, rows, 0) && !dfx_csv_cell(csv, 0, cols));
    double *m;
    dfx_status st = dfx_csv_matrix(csv, &m);
    CHECK(st == DFX_OK ? (m != NULL) == (rows > 0) : m == NULL);
    free(m);

    dfx_csv_options again_opt = *opt;
    again_opt.header = dfx_csv_has_header(csv) ? DFX_CSV_HEADER_YES : DFX_CSV_HEADER_NO;
    buf b = write_back(csv, opt->delimiter);
    dfx_csv *again;
    CHECK(dfx__csv_parse_mem("copy.csv", b.d, b.n, &again_opt, &again) == DFX_OK);
    same(csv, again);
    dfx_csv_destroy(again);
    free(b.d);

    size_t gn;
    unsigned char *gz = gzip(data, size, &gn);
    CHECK(dfx__csv_parse_mem("fuzz.csv", gz, gn, opt, &again) == DFX_OK);
    same(csv, again);
    dfx_csv_destroy(again);
    free(gz);
    dfx_csv_destroy(csv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dfx_csv_options opt;
    dfx_csv_options_init(&opt);
    /* an input that is gzip itself is not compressed again */
    if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b) {
        dfx_csv *csv;
        if (dfx__csv_parse_mem("fuzz.csv", data, size, &opt, &csv) == DFX_OK)
            dfx_csv_destroy(csv);
        else
            CHECK(strncmp(dfx_error_message(), "fuzz.csv", 8) == 0);
        return 0;
    }
    read_one(data, size, &opt);
    if (size > 1 && !(data[1] == 0x1f && size > 2 && data[2] == 0x8b)) {
        static const char delims[4] = {',', ';', '\t', '|'};
        opt.delimiter = delims[data[0] & 3];
        opt.header = (dfx_csv_header)((data[0] >> 2) % 3);
        read_one(data + 1, size - 1, &opt);
    }
    return 0;
}
