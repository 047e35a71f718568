/* CSV tables (RFC 4180, with LF line breaks allowed beside CRLF): the cells
 * kept as strings, numbers read on demand in the C locale. One pass over
 * the (decompressed) text copies each cell, unquoted, into one buffer; a
 * cell is an offset into it. Errors name the file and the physical line. */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/data/internal.h"
#include "core/internal.h"

struct dfx_csv {
    char *path;
    char *text;         /* every cell, NUL-terminated, back to back */
    size_t *cells;      /* (header + rows) * cols offsets into text, row-major */
    int64_t *lines;     /* the physical line each record (the header's first) starts on */
    int64_t rows, cols;
    bool header;
};

void dfx_csv_options_init(dfx_csv_options *opt)
{
    opt->header = DFX_CSV_HEADER_AUTO;
    opt->delimiter = ',';
}

/* ---- numbers ------------------------------------------------------------ */

static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static locale_t c_locale;

static void make_c_locale(void)
{
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

typedef enum number_kind { NUMBER_OK, NUMBER_NOT, NUMBER_RANGE } number_kind;

/* The whole of s, spaces and tabs around it allowed, as strtod reads a
 * decimal number in the C locale (hexadecimal refused: a cell "0x10" is
 * more likely an identifier than sixteen). */
static number_kind parse_number(const char *s, double *out)
{
    while (*s == ' ' || *s == '\t')
        s++;
    const char *p = s + (*s == '+' || *s == '-');
    if (*p == '\0' || (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) || !(*p == '.' || (*p >= '0' && *p <= '9') ||
                                                                        *p == 'n' || *p == 'N' || *p == 'i' ||
                                                                        *p == 'I'))
        return NUMBER_NOT;
    pthread_once(&c_locale_once, make_c_locale);
    char *end;
    errno = 0;
    double v = c_locale ? strtod_l(s, &end, c_locale) : strtod(s, &end);
    const int err = errno;
    if (end == s)
        return NUMBER_NOT;
    while (*end == ' ' || *end == '\t')
        end++;
    if (*end != '\0')
        return NUMBER_NOT;
    *out = v;
    /* underflow gives a usable tiny value; overflow does not */
    return err == ERANGE && isinf(v) ? NUMBER_RANGE : NUMBER_OK;
}

/* ---- messages ------------------------------------------------------------ */

/* s for a message: at most ~60 bytes (cut at a UTF-8 character boundary,
 * "..." added), control characters as \n, \xNN. */
static const char *shown(const char *s, char *buf, size_t size)
{
    size_t o = 0, i = 0;
    for (; s[i] && o + 8 < size && i < 60; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            o += (size_t)snprintf(buf + o, size - o, "\\n");
        else if (c == '\r')
            o += (size_t)snprintf(buf + o, size - o, "\\r");
        else if (c == '\t')
            o += (size_t)snprintf(buf + o, size - o, "\\t");
        else if (c < 32 || c == 127)
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    if (s[i]) {
        while (o > 0 && ((unsigned char)buf[o - 1] & 0xc0) == 0x80)
            o--;
        if (o > 0 && (unsigned char)buf[o - 1] >= 0xc0)
            o--;
        snprintf(buf + o, size - o, "...");
    } else {
        buf[o] = '\0';
    }
    return buf;
}

static const char *char_shown(unsigned char c, char *buf, size_t size)
{
    if (c < 32 || c >= 127)
        snprintf(buf, size, "\\x%02x", c);
    else
        snprintf(buf, size, "%c", c);
    return buf;
}

/* ---- parsing ------------------------------------------------------------ */

typedef struct parser {
    const char *name;
    const char *in;
    size_t n, pos;
    char delim;
    int64_t line;
    char *out;
    size_t olen;
    size_t *cells;
    size_t ncells, cells_cap;
    int64_t *lines;
    int64_t nrec, lines_cap;
} parser;

static dfx_status push_cell(parser *p, size_t off)
{
    if (p->ncells == p->cells_cap) {
        size_t cap = p->cells_cap ? 2 * p->cells_cap : 256;
        size_t *c = cap < SIZE_MAX / sizeof *c ? realloc(p->cells, cap * sizeof *c) : NULL;
        if (!c)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory for its cells", p->name);
        p->cells = c;
        p->cells_cap = cap;
    }
    p->cells[p->ncells++] = off;
    return DFX_OK;
}

static dfx_status push_line(parser *p, int64_t line)
{
    if (p->nrec == p->lines_cap) {
        int64_t cap = p->lines_cap ? 2 * p->lines_cap : 256;
        int64_t *l = realloc(p->lines, (size_t)cap * sizeof *l);
        if (!l)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory for its rows", p->name);
        p->lines = l;
        p->lines_cap = cap;
    }
    p->lines[p->nrec++] = line;
    return DFX_OK;
}

/* At a line break (CRLF, LF or a lone CR): steps over it. */
static bool take_break(parser *p)
{
    if (p->pos < p->n && p->in[p->pos] == '\r') {
        p->pos += 1 + (p->pos + 1 < p->n && p->in[p->pos + 1] == '\n');
        p->line++;
        return true;
    }
    if (p->pos < p->n && p->in[p->pos] == '\n') {
        p->pos++;
        p->line++;
        return true;
    }
    return false;
}

static dfx_status quoted_field(parser *p)
{
    const int64_t open = p->line;
    p->pos++;
    for (;;) {
        if (p->pos >= p->n)
            return dfx_error_set(DFX_ERR_FORMAT, "%s:%lld: a quoted field is not closed (it opens on this line)",
                                 p->name, (long long)open);
        const char c = p->in[p->pos];
        if (c == '"') {
            if (p->pos + 1 < p->n && p->in[p->pos + 1] == '"') {
                p->out[p->olen++] = '"';
                p->pos += 2;
                continue;
            }
            p->pos++;
            break;
        }
        if (c == '\0')
            return dfx_error_set(DFX_ERR_FORMAT, "%s:%lld: a NUL byte", p->name, (long long)p->line);
        if (c == '\n' || (c == '\r' && !(p->pos + 1 < p->n && p->in[p->pos + 1] == '\n')))
            p->line++;
        p->out[p->olen++] = c;
        p->pos++;
    }
    if (p->pos < p->n) {
        const char c = p->in[p->pos];
        char b[8];
        if (c != p->delim && c != '\n' && c != '\r')
            return dfx_error_set(DFX_ERR_FORMAT, "%s:%lld: '%s' after a closing quote (expected the delimiter or "
                                 "the end of the line)", p->name, (long long)p->line,
                                 char_shown((unsigned char)c, b, sizeof b));
    }
    return DFX_OK;
}

static dfx_status plain_field(parser *p)
{
    while (p->pos < p->n) {
        const char c = p->in[p->pos];
        if (c == p->delim || c == '\n' || c == '\r')
            break;
        if (c == '"')
            return dfx_error_set(DFX_ERR_FORMAT, "%s:%lld: '\"' inside an unquoted field (quote the whole field "
                                 "and write the quote twice)", p->name, (long long)p->line);
        if (c == '\0')
            return dfx_error_set(DFX_ERR_FORMAT, "%s:%lld: a NUL byte", p->name, (long long)p->line);
        p->out[p->olen++] = c;
        p->pos++;
    }
    return DFX_OK;
}

/* One record from p->pos (not at a line break): its fields to the end of
 * its line, the line break consumed. */
static dfx_status record(parser *p, int64_t *fields)
{
    dfx_status st;
    *fields = 0;
    for (;;) {
        const size_t off = p->olen;
        st = p->pos < p->n && p->in[p->pos] == '"' ? quoted_field(p) : plain_field(p);
        if (st)
            return st;
        p->out[p->olen++] = '\0';
        if ((st = push_cell(p, off)))
            return st;
        ++*fields;
        if (p->pos < p->n && p->in[p->pos] == p->delim) {
            p->pos++;
            continue;
        }
        take_break(p);
        return DFX_OK;
    }
}

static dfx_status parse(parser *p, int64_t *cols)
{
    dfx_status st;
    *cols = 0;
    if (p->n >= 3 && memcmp(p->in, "\xef\xbb\xbf", 3) == 0)
        p->pos = 3;
    while (p->pos < p->n) {
        if (take_break(p))
            continue;   /* an empty line */
        const int64_t line = p->line;
        int64_t fields;
        if ((st = record(p, &fields)))
            return st;
        if (p->nrec == 0)
            *cols = fields;
        else if (fields != *cols)
            return dfx_error_set(DFX_ERR_FORMAT, "%s:%lld: row has %lld field%s, expected %lld", p->name,
                                 (long long)line, (long long)fields, fields == 1 ? "" : "s", (long long)*cols);
        if ((st = push_line(p, line)))
            return st;
    }
    if (p->nrec == 0)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: no rows", p->name);
    return DFX_OK;
}

static dfx_status parse_text(const char *name, const char *in, size_t n, const dfx_csv_options *opt,
                             dfx_csv **out)
{
    dfx_csv *csv = calloc(1, sizeof *csv);
    parser p = {.name = name, .in = in, .n = n, .delim = opt->delimiter, .line = 1};
    /* unquoting only shrinks; each cell's NUL takes its delimiter's or line
     * break's place, the last cell's possibly past the end */
    p.out = malloc(n + 2);
    if (!csv || !p.out || !(csv->path = dfx__strdup(name))) {
        free(p.out);
        dfx_csv_destroy(csv);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", name);
    }
    int64_t cols;
    dfx_status st = parse(&p, &cols);
    if (st) {
        free(p.out);
        free(p.cells);
        free(p.lines);
        dfx_csv_destroy(csv);
        return st;
    }
    csv->text = p.out;
    csv->cells = p.cells;
    csv->lines = p.lines;
    csv->cols = cols;
    if (opt->header == DFX_CSV_HEADER_AUTO) {
        for (int64_t c = 0; c < cols && !csv->header; c++) {
            double v;
            csv->header = parse_number(csv->text + csv->cells[c], &v) == NUMBER_NOT;
        }
    } else {
        csv->header = opt->header == DFX_CSV_HEADER_YES;
    }
    csv->rows = p.nrec - csv->header;
    *out = csv;
    return DFX_OK;
}

dfx_status dfx__csv_parse_mem(const char *name, const void *data, size_t size, const dfx_csv_options *opt,
                              dfx_csv **out)
{
    *out = NULL;
    dfx_csv_options defaults;
    if (!opt) {
        dfx_csv_options_init(&defaults);
        opt = &defaults;
    }
    const char d = opt->delimiter;
    if (d == '"' || d == '\r' || d == '\n' || d == '\0')
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: CSV delimiter 0x%02x is not allowed (not '\"', CR, LF "
                             "or NUL)", name, (unsigned char)d);
    if (opt->header != DFX_CSV_HEADER_AUTO && opt->header != DFX_CSV_HEADER_YES &&
        opt->header != DFX_CSV_HEADER_NO)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: unknown CSV header option %d", name, (int)opt->header);
    dfx__data_src src;
    dfx_status st = dfx__data_src_init(&src, name, data, size);
    if (st)
        return st;
    if (!src.gz) {
        if (size > DFX__CSV_MAX_BYTES)
            st = dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: more than %zu MiB of content, more than dfx reads",
                               name, DFX__CSV_MAX_BYTES >> 20);
        else
            st = parse_text(name, data, size, opt, out);
        dfx__data_src_fini(&src);
        return st;
    }
    char *text;
    size_t len;
    st = dfx__data_src_read_all(&src, DFX__CSV_MAX_BYTES, &text, &len);
    dfx__data_src_fini(&src);
    if (st)
        return st;
    st = parse_text(name, text, len, opt, out);
    free(text);
    return st;
}

dfx_status dfx_csv_read(const char *path, const dfx_csv_options *opt, dfx_csv **out)
{
    if (out)
        *out = NULL;
    if (!path || !out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_csv_read: path and out must not be NULL");
    char *data;
    size_t len;
    dfx_status st = dfx__read_file(path, &data, &len);
    if (st)
        return st;
    st = dfx__csv_parse_mem(path, data, len, opt, out);
    free(data);
    return st;
}

void dfx_csv_destroy(dfx_csv *csv)
{
    if (!csv)
        return;
    free(csv->path);
    free(csv->text);
    free(csv->cells);
    free(csv->lines);
    free(csv);
}

/* ---- access --------------------------------------------------------------- */

const char *dfx_csv_path(const dfx_csv *csv)
{
    return csv->path;
}

int64_t dfx_csv_rows(const dfx_csv *csv)
{
    return csv->rows;
}

int64_t dfx_csv_cols(const dfx_csv *csv)
{
    return csv->cols;
}

bool dfx_csv_has_header(const dfx_csv *csv)
{
    return csv->header;
}

const char *dfx_csv_column_name(const dfx_csv *csv, int64_t col)
{
    if (!csv->header || col < 0 || col >= csv->cols)
        return NULL;
    return csv->text + csv->cells[col];
}

int64_t dfx_csv_column_index(const dfx_csv *csv, const char *name)
{
    for (int64_t c = 0; csv->header && name && c < csv->cols; c++)
        if (strcmp(csv->text + csv->cells[c], name) == 0)
            return c;
    return -1;
}

const char *dfx_csv_cell(const dfx_csv *csv, int64_t row, int64_t col)
{
    if (row < 0 || row >= csv->rows || col < 0 || col >= csv->cols)
        return NULL;
    return csv->text + csv->cells[(row + csv->header) * csv->cols + col];
}

int64_t dfx_csv_line(const dfx_csv *csv, int64_t row)
{
    if (row < 0 || row >= csv->rows)
        return 0;
    return csv->lines[row + csv->header];
}

/* The physical line of a cell: its record's first line, plus the line
 * breaks quoted in the cells before it (a CRLF counts once). */
static int64_t cell_line(const dfx_csv *csv, int64_t row, int64_t col)
{
    int64_t line = csv->lines[row + csv->header];
    for (int64_t c = 0; c < col; c++)
        for (const char *s = dfx_csv_cell(csv, row, c); *s; s++)
            line += *s == '\n' || (*s == '\r' && s[1] != '\n');
    return line;
}

dfx_status dfx_csv_number(const dfx_csv *csv, int64_t row, int64_t col, double *out)
{
    const char *s = dfx_csv_cell(csv, row, col);
    if (!s)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: no cell at row %lld, column %lld (the table has %lld x "
                             "%lld)", csv->path, (long long)row, (long long)col, (long long)csv->rows,
                             (long long)csv->cols);
    number_kind k = parse_number(s, out);
    if (k == NUMBER_OK)
        return DFX_OK;
    char where[160] = "", b[256];
    const char *cname = dfx_csv_column_name(csv, col);
    if (cname)
        snprintf(where, sizeof where, " ('%s')", shown(cname, b, sizeof b));
    return dfx_error_set(k == NUMBER_RANGE ? DFX_ERR_RANGE : DFX_ERR_FORMAT,
                         "%s:%lld: column %lld%s: %s, got '%s'", csv->path, (long long)cell_line(csv, row, col),
                         (long long)col + 1, where,
                         k == NUMBER_RANGE ? "expected a number within double's range" : "expected a number",
                         shown(s, b, sizeof b));
}

dfx_status dfx_csv_matrix(const dfx_csv *csv, double **out)
{
    *out = NULL;
    if (csv->rows == 0)
        return DFX_OK;
    size_t n;
    if (__builtin_mul_overflow((size_t)csv->rows, (size_t)csv->cols, &n) || n > SIZE_MAX / sizeof(double))
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: too many cells", csv->path);
    double *m = malloc(n * sizeof *m);
    if (!m)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory for %zu numbers", csv->path, n);
    for (int64_t r = 0; r < csv->rows; r++)
        for (int64_t c = 0; c < csv->cols; c++) {
            dfx_status st = dfx_csv_number(csv, r, c, &m[r * csv->cols + c]);
            if (st) {
                free(m);
                return st;
            }
        }
    *out = m;
    return DFX_OK;
}
