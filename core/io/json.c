/* The JSON reader: strict RFC 8259 plus the NaN, Infinity and -Infinity that
 * Python's json module writes. The tree lives in one arena and is immutable.
 * Parsing is iterative (an explicit stack, depth capped at 256), so hostile
 * input cannot exhaust the C stack; integer literals keep their exact value. */
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/utf8.h"
#include "core/internal.h"
#include "dfx/json.h"

#define JSON_MAX_DEPTH 256

struct dfx_json {
    dfx_json_type type;
    int line, column;
    bool is_int;            /* number: an integer literal that fits int64 */
    const char *key;        /* member of an object: its key, else NULL */
    size_t key_len;
    union {
        bool b;
        struct {
            double d;
            int64_t i;
        } num;
        struct {
            const char *s;
            size_t len;
        } str;
        struct {
            dfx_json *items;  /* arrays and objects: children, in order */
            int64_t n;
        } kids;
    } u;
};

/* Bump allocation: a document is a handful of large blocks, freed at once. */
typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
} arena_block;

#define ARENA_ALIGN _Alignof(max_align_t)
#define ARENA_HEAD (((sizeof(arena_block) + ARENA_ALIGN - 1) / ARENA_ALIGN) * ARENA_ALIGN)
#define ARENA_MIN_BLOCK 4096u
#define ARENA_MAX_BLOCK (1u << 20)

/* The root comes first so that dfx_json_destroy can recover the document. */
typedef struct json_doc {
    dfx_json root;
    arena_block *blocks;
} json_doc;

static void *arena_alloc(arena_block **head, size_t size)
{
    size = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    arena_block *b = *head;
    if (b && b->cap - b->used >= size) {
        void *p = (char *)b + ARENA_HEAD + b->used;
        b->used += size;
        return p;
    }
    size_t cap = b ? b->cap * 2 : ARENA_MIN_BLOCK;
    if (cap > ARENA_MAX_BLOCK)
        cap = ARENA_MAX_BLOCK;
    if (size > cap / 2) {
        /* a big array gets a block of its own, kept behind the current one
         * so the current block's free space is not wasted */
        if (size > SIZE_MAX - ARENA_HEAD)
            return NULL;
        arena_block *own = malloc(ARENA_HEAD + size);
        if (!own)
            return NULL;
        own->used = own->cap = size;
        if (b) {
            own->next = b->next;
            b->next = own;
        } else {
            own->next = NULL;
            *head = own;
        }
        return (char *)own + ARENA_HEAD;
    }
    arena_block *nb = malloc(ARENA_HEAD + cap);
    if (!nb)
        return NULL;
    nb->next = b;
    nb->cap = cap;
    nb->used = size;
    *head = nb;
    return (char *)nb + ARENA_HEAD;
}

static void arena_free(arena_block *b)
{
    while (b) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
}

typedef struct json_frame {
    dfx_json_type type;
    size_t start;           /* first pending child in the value stack */
    int line, column;
    const char *key;        /* the container's own key in its parent */
    size_t key_len;
} json_frame;

typedef struct parser {
    const char *text;
    size_t len, pos;
    const char *origin;
    int line;
    size_t line_start;
    /* columns count UTF-8 characters; cached so that a long single-line
     * document (a safetensors header) is scanned once, not once per value */
    size_t col_pos;
    int col;
    arena_block **arena;
    dfx_json *stack;        /* finished children of the open containers */
    size_t nstack, capstack;
    json_frame frames[JSON_MAX_DEPTH];
    int depth;
    const char *key;        /* key of the member value about to be parsed */
    size_t key_len;
    locale_t c_locale;      /* strtod_l: numbers ignore the process locale */
} parser;

static int column_at(parser *p, size_t pos)
{
    if (pos > p->len)
        pos = p->len;
    if (pos < p->col_pos) {
        p->col_pos = p->line_start;
        p->col = 1;
    }
    for (size_t i = p->col_pos; i < pos; i++)
        if (((unsigned char)p->text[i] & 0xc0u) != 0x80u)
            p->col++;
    p->col_pos = pos;
    return p->col;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0. Rejects
 * overlong forms, UTF-16 surrogates and code points above U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t v, min;

    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        v = c & 0x1fu;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        v = c & 0x0fu;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        v = c & 0x07u;
        min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0u) != 0x80u)
            return 0;
        v = (v << 6) | (s[i] & 0x3fu);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

static bool is_word_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '+' || c == '-';
}

/* What the user wrote at pos, for "found ..." in messages. */
static const char *describe(const parser *p, size_t pos, char *buf, size_t size)
{
    const unsigned char *s = (const unsigned char *)p->text;
    if (pos >= p->len)
        return "end of input";
    unsigned char c = s[pos];
    if (p->len - pos >= 3 && c == 0xef && s[pos + 1] == 0xbb && s[pos + 2] == 0xbf)
        return "a UTF-8 byte order mark (save the file without one)";
    if (is_word_char(c)) {
        size_t n = 0;
        while (pos + n < p->len && n < 24 && is_word_char(s[pos + n]))
            n++;
        bool more = pos + n < p->len && is_word_char(s[pos + n]);
        const char *hint = "";
        if (n == 4 && memcmp(s + pos, "True", 4) == 0)
            hint = " (JSON spells it true)";
        else if (n == 5 && memcmp(s + pos, "False", 5) == 0)
            hint = " (JSON spells it false)";
        else if (n == 4 && memcmp(s + pos, "None", 4) == 0)
            hint = " (JSON spells it null)";
        snprintf(buf, size, "'%.*s%s'%s", (int)n, (const char *)s + pos,
                 more ? "..." : "", hint);
        return buf;
    }
    if (c == '/' && pos + 1 < p->len && (s[pos + 1] == '/' || s[pos + 1] == '*'))
        return "a comment (JSON has no comments)";
    if (c >= 0x20 && c < 0x7f) {
        snprintf(buf, size, "'%c'", c);
        return buf;
    }
    if (c < 0x20 || c == 0x7f) {
        snprintf(buf, size, "control character U+%04X", c);
        return buf;
    }
    uint32_t cp;
    size_t n = utf8_seq(s + pos, p->len - pos, &cp);
    if (n)
        snprintf(buf, size, "'%.*s' (U+%04X)", (int)n, (const char *)s + pos, (unsigned)cp);
    else
        snprintf(buf, size, "byte 0x%02X (not UTF-8)", c);
    return buf;
}

static dfx_status fail_at(parser *p, size_t pos, const char *fmt, ...)
    DFX_PRINTF(3, 4);

static dfx_status fail_at(parser *p, size_t pos, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int col = column_at(p, pos);
    return dfx_error_set(DFX_ERR_FORMAT, "%s:%d:%d: %s", p->origin, p->line, col, msg);
}

static dfx_status fail_expected(parser *p, const char *what)
{
    char buf[96];
    return fail_at(p, p->pos, "expected %s, found %s", what,
                   describe(p, p->pos, buf, sizeof buf));
}

static dfx_status no_memory(parser *p)
{
    return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory parsing JSON", p->origin);
}

static void skip_ws(parser *p)
{
    while (p->pos < p->len) {
        char c = p->text[p->pos];
        if (c == '\n') {
            p->line++;
            p->line_start = p->col_pos = p->pos + 1;
            p->col = 1;
        } else if (c != ' ' && c != '\t' && c != '\r') {
            return;
        }
        p->pos++;
    }
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Four hex digits at text[i..stop), or -1. */
static long hex4(const parser *p, size_t i, size_t stop)
{
    long v = 0;
    if (stop - i < 4)
        return -1;
    for (size_t k = 0; k < 4; k++) {
        int h = hex_value(p->text[i + k]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

/* Parses the string whose opening quote is at p->pos into a NUL-terminated
 * arena copy. */
static dfx_status parse_string(parser *p, const char **out, size_t *out_len)
{
    const size_t open = p->pos;
    size_t stop = open + 1;

    /* first pass: where the string ends (or the first raw control character,
     * which is an error reported in order by the second pass) */
    while (stop < p->len) {
        unsigned char c = (unsigned char)p->text[stop];
        if (c == '"' || c < 0x20)
            break;
        stop += c == '\\' ? 2 : 1;
    }
    if (stop > p->len)
        stop = p->len;

    char *buf = arena_alloc(p->arena, stop - open);
    if (!buf)
        return no_memory(p);
    size_t n = 0, i = open + 1;
    while (i < stop) {
        unsigned char c = (unsigned char)p->text[i];
        if (c == '\\') {
            if (i + 1 >= stop)
                break;
            char e = p->text[i + 1];
            char simple = 0;
            switch (e) {
            case '"': simple = '"'; break;
            case '\\': simple = '\\'; break;
            case '/': simple = '/'; break;
            case 'b': simple = '\b'; break;
            case 'f': simple = '\f'; break;
            case 'n': simple = '\n'; break;
            case 'r': simple = '\r'; break;
            case 't': simple = '\t'; break;
            case 'u': break;
            default: {
                char d[96];
                return fail_at(p, i, "invalid escape: expected one of \\\" \\\\ \\/ \\b \\f "
                               "\\n \\r \\t \\uXXXX, found '\\' followed by %s",
                               describe(p, i + 1, d, sizeof d));
            }
            }
            if (simple) {
                buf[n++] = simple;
                i += 2;
                continue;
            }
            long cp = hex4(p, i + 2, stop);
            if (cp < 0)
                return fail_at(p, i, "invalid \\u escape: expected 4 hex digits after \\u");
            if (cp >= 0xdc00 && cp <= 0xdfff)
                return fail_at(p, i, "invalid \\u escape: lone low surrogate \\u%04lX "
                               "(expected a high surrogate \\uD800-\\uDBFF before it)", cp);
            if (cp >= 0xd800 && cp <= 0xdbff) {
                long lo = -1;
                if (i + 7 < stop && p->text[i + 6] == '\\' && p->text[i + 7] == 'u')
                    lo = hex4(p, i + 8, stop);
                if (lo < 0xdc00 || lo > 0xdfff)
                    return fail_at(p, i, "invalid \\u escape: lone high surrogate \\u%04lX "
                                   "(expected a low surrogate \\uDC00-\\uDFFF after it)", cp);
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                i += 12;
            } else {
                i += 6;
            }
            n += dfx__utf8_put((uint32_t)cp, (unsigned char *)buf + n);
            continue;
        }
        if (c < 0x80) {
            buf[n++] = (char)c;
            i++;
            continue;
        }
        uint32_t cp;
        size_t k = utf8_seq((const unsigned char *)p->text + i, stop - i, &cp);
        if (!k)
            return fail_at(p, i, "invalid UTF-8 in a string (byte 0x%02X); JSON text must be UTF-8", c);
        memcpy(buf + n, p->text + i, k);
        n += k;
        i += k;
    }
    if (stop >= p->len || p->text[stop] != '"') {
        if (stop < p->len) {
            unsigned char c = (unsigned char)p->text[stop];
            return fail_at(p, stop, "control character U+%04X in a string (write it as an escape such as \\n or \\u%04X)",
                           c, c);
        }
        return fail_at(p, open, "unterminated string: expected a closing '\"' before the end of input");
    }
    buf[n] = '\0';
    p->pos = stop + 1;
    *out = buf;
    *out_len = n;
    return DFX_OK;
}

static bool is_digit(const parser *p, size_t i)
{
    return i < p->len && p->text[i] >= '0' && p->text[i] <= '9';
}

static bool match_word(const parser *p, size_t i, const char *word)
{
    size_t n = strlen(word);
    return p->len - i >= n && memcmp(p->text + i, word, n) == 0;
}

static dfx_status parse_number(parser *p, dfx_json *v)
{
    const size_t start = p->pos;
    size_t i = start;
    bool neg = false, is_int = true;

    if (p->text[i] == '-') {
        neg = true;
        i++;
        if (match_word(p, i, "Infinity")) {
            v->u.num.d = -INFINITY;
            p->pos = i + 8;
            return DFX_OK;
        }
    }
    if (!is_digit(p, i)) {
        p->pos = i;
        return fail_expected(p, "a digit after '-'");
    }
    if (p->text[i] == '0') {
        i++;
        if (is_digit(p, i))
            return fail_at(p, start, "leading zeros are not allowed in numbers");
    } else {
        while (is_digit(p, i))
            i++;
    }
    const size_t int_end = i;
    if (i < p->len && p->text[i] == '.') {
        i++;
        is_int = false;
        if (!is_digit(p, i)) {
            p->pos = i;
            return fail_expected(p, "a digit after '.'");
        }
        while (is_digit(p, i))
            i++;
    }
    if (i < p->len && (p->text[i] == 'e' || p->text[i] == 'E')) {
        i++;
        is_int = false;
        if (i < p->len && (p->text[i] == '+' || p->text[i] == '-'))
            i++;
        if (!is_digit(p, i)) {
            p->pos = i;
            return fail_expected(p, "a digit in the exponent");
        }
        while (is_digit(p, i))
            i++;
    }

    if (is_int) {
        /* exact: accumulate the magnitude and check it against int64 */
        uint64_t mag = 0;
        bool fits = true;
        for (size_t k = start + neg; k < int_end && fits; k++) {
            unsigned d = (unsigned)(p->text[k] - '0');
            if (mag > (UINT64_MAX - d) / 10)
                fits = false;
            else
                mag = mag * 10 + d;
        }
        if (fits && mag <= (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX)) {
            v->is_int = true;
            v->u.num.i = neg ? (int64_t)(0 - mag) : (int64_t)mag;
        }
    }

    if (!p->c_locale) {
        p->c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
        if (!p->c_locale)
            return no_memory(p);
    }
    size_t n = i - start;
    char small[128];
    char *lit = n < sizeof small ? small : malloc(n + 1);
    if (!lit)
        return no_memory(p);
    memcpy(lit, p->text + start, n);
    lit[n] = '\0';
    double d = strtod_l(lit, NULL, p->c_locale);
    if (lit != small)
        free(lit);
    if (isinf(d))
        return fail_at(p, start, "number %.*s%s is too large for a double",
                       (int)(n > 40 ? 40 : n), p->text + start, n > 40 ? "..." : "");
    v->u.num.d = d;
    p->pos = i;
    return DFX_OK;
}

/* A value that is complete once read: a scalar. */
static dfx_status parse_scalar(parser *p, dfx_json *v)
{
    char c = p->text[p->pos];
    v->type = DFX_JSON_NUMBER;
    switch (c) {
    case '"':
        v->type = DFX_JSON_STRING;
        return parse_string(p, &v->u.str.s, &v->u.str.len);
    case '-':
    case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        return parse_number(p, v);
    default:
        break;
    }
    static const struct {
        const char *word;
        dfx_json_type type;
        bool b;
        double d;
    } words[] = {
        {"true", DFX_JSON_BOOL, true, 0},
        {"false", DFX_JSON_BOOL, false, 0},
        {"null", DFX_JSON_NULL, false, 0},
        {"NaN", DFX_JSON_NUMBER, false, NAN},
        {"Infinity", DFX_JSON_NUMBER, false, INFINITY},
    };
    for (size_t k = 0; k < sizeof words / sizeof words[0]; k++) {
        if (match_word(p, p->pos, words[k].word)) {
            v->type = words[k].type;
            if (v->type == DFX_JSON_BOOL)
                v->u.b = words[k].b;
            else if (v->type == DFX_JSON_NUMBER)
                v->u.num.d = words[k].d;
            p->pos += strlen(words[k].word);
            return DFX_OK;
        }
    }
    return fail_expected(p, "a value (object, array, string, number, true, false or null)");
}

/* Reads `"key" :` inside an object. */
static dfx_status parse_key(parser *p, bool after_comma)
{
    skip_ws(p);
    if (p->pos >= p->len || p->text[p->pos] != '"') {
        if (after_comma && p->pos < p->len && p->text[p->pos] == '}')
            return fail_at(p, p->pos, "expected a string key after ',', found '}' "
                           "(trailing commas are not allowed)");
        return fail_expected(p, after_comma ? "a string key after ','" : "a string key or '}'");
    }
    dfx_status st = parse_string(p, &p->key, &p->key_len);
    if (st)
        return st;
    skip_ws(p);
    if (p->pos >= p->len || p->text[p->pos] != ':')
        return fail_expected(p, "':' after the object key");
    p->pos++;
    return DFX_OK;
}

static dfx_status push_value(parser *p, const dfx_json *v)
{
    if (p->nstack == p->capstack) {
        size_t cap = p->capstack ? p->capstack * 2 : 64;
        dfx_json *s = realloc(p->stack, cap * sizeof *s);
        if (!s)
            return no_memory(p);
        p->stack = s;
        p->capstack = cap;
    }
    p->stack[p->nstack++] = *v;
    return DFX_OK;
}

/* Moves the open container's children from the value stack into the arena. */
static dfx_status close_container(parser *p, dfx_json *v)
{
    json_frame *f = &p->frames[p->depth - 1];
    size_t n = p->nstack - f->start;
    memset(v, 0, sizeof *v);
    v->type = f->type;
    v->line = f->line;
    v->column = f->column;
    v->key = f->key;
    v->key_len = f->key_len;
    if (n) {
        v->u.kids.items = arena_alloc(p->arena, n * sizeof(dfx_json));
        if (!v->u.kids.items)
            return no_memory(p);
        memcpy(v->u.kids.items, p->stack + f->start, n * sizeof(dfx_json));
    }
    v->u.kids.n = (int64_t)n;
    p->nstack = f->start;
    p->depth--;
    return DFX_OK;
}

/* The value stack machine: read a value; when it opens a container, go on
 * reading its first child; when it is complete, attach it to the open
 * container and read ',' (next child) or the closing bracket (which completes
 * the container in turn). */
static dfx_status parse_root(parser *p, dfx_json *root)
{
    dfx_status st;
    for (;;) {
        dfx_json v;
        memset(&v, 0, sizeof v);
        skip_ws(p);
        if (p->pos >= p->len)
            return fail_expected(p, "a value");
        v.line = p->line;
        v.column = column_at(p, p->pos);
        v.key = p->key;
        v.key_len = p->key_len;
        p->key = NULL;
        p->key_len = 0;
        char c = p->text[p->pos];
        if (c == '{' || c == '[') {
            if (p->depth == JSON_MAX_DEPTH)
                return fail_at(p, p->pos, "nesting deeper than %d levels", JSON_MAX_DEPTH);
            json_frame *f = &p->frames[p->depth++];
            f->type = c == '{' ? DFX_JSON_OBJECT : DFX_JSON_ARRAY;
            f->start = p->nstack;
            f->line = v.line;
            f->column = v.column;
            f->key = v.key;
            f->key_len = v.key_len;
            p->pos++;
            skip_ws(p);
            if (p->pos < p->len && p->text[p->pos] == (c == '{' ? '}' : ']')) {
                p->pos++;
                st = close_container(p, &v);
                if (st)
                    return st;
            } else if (c == '{') {
                st = parse_key(p, false);
                if (st)
                    return st;
                continue;
            } else {
                continue;
            }
        } else {
            st = parse_scalar(p, &v);
            if (st)
                return st;
        }

        /* v is complete */
        for (;;) {
            if (p->depth == 0) {
                *root = v;
                return DFX_OK;
            }
            st = push_value(p, &v);
            if (st)
                return st;
            const json_frame *f = &p->frames[p->depth - 1];
            const bool obj = f->type == DFX_JSON_OBJECT;
            skip_ws(p);
            if (p->pos < p->len && p->text[p->pos] == ',') {
                p->pos++;
                if (obj) {
                    st = parse_key(p, true);
                    if (st)
                        return st;
                } else {
                    skip_ws(p);
                    if (p->pos < p->len && p->text[p->pos] == ']')
                        return fail_at(p, p->pos, "expected a value after ',', found ']' "
                                       "(trailing commas are not allowed)");
                }
                break;
            }
            if (p->pos < p->len && p->text[p->pos] == (obj ? '}' : ']')) {
                p->pos++;
                st = close_container(p, &v);
                if (st)
                    return st;
                continue;
            }
            return fail_expected(p, obj ? "',' or '}' after an object member"
                                        : "',' or ']' after an array element");
        }
    }
}

dfx_status dfx_json_parse(const char *text, size_t len, const char *origin,
                          dfx_json **out)
{
    if (!out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_json_parse: out is NULL");
    *out = NULL;
    if (!origin)
        origin = "<json>";
    if (!text && len)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: text is NULL", origin);

    json_doc *doc = calloc(1, sizeof *doc);
    parser *p = calloc(1, sizeof *p);
    if (!doc || !p) {
        free(doc);
        free(p);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory parsing JSON", origin);
    }
    p->text = text ? text : "";
    p->len = len;
    p->origin = origin;
    p->line = 1;
    p->col = 1;
    p->arena = &doc->blocks;

    dfx_status st = parse_root(p, &doc->root);
    if (!st) {
        skip_ws(p);
        if (p->pos < p->len)
            st = fail_expected(p, "end of input after the top-level value");
    }
    free(p->stack);
    if (p->c_locale)
        freelocale(p->c_locale);
    free(p);
    if (st) {
        arena_free(doc->blocks);
        free(doc);
        return st;
    }
    *out = &doc->root;
    return DFX_OK;
}

dfx_status dfx_json_parse_file(const char *path, dfx_json **out)
{
    char *text;
    size_t len;
    if (!out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_json_parse_file: out is NULL");
    *out = NULL;
    dfx_status st = dfx__read_file(path, &text, &len);
    if (st)
        return st;
    st = dfx_json_parse(text, len, path, out);
    free(text);
    return st;
}

void dfx_json_destroy(dfx_json *doc)
{
    if (!doc)
        return;
    json_doc *d = (json_doc *)doc;
    arena_free(d->blocks);
    free(d);
}

dfx_json_type dfx_json_type_of(const dfx_json *v)
{
    return v ? v->type : DFX_JSON_NULL;
}

const char *dfx_json_type_name(dfx_json_type type)
{
    switch (type) {
    case DFX_JSON_NULL: return "null";
    case DFX_JSON_BOOL: return "boolean";
    case DFX_JSON_NUMBER: return "number";
    case DFX_JSON_STRING: return "string";
    case DFX_JSON_ARRAY: return "array";
    case DFX_JSON_OBJECT: return "object";
    }
    return "?";
}

int dfx_json_line(const dfx_json *v)
{
    return v ? v->line : 0;
}

int dfx_json_column(const dfx_json *v)
{
    return v ? v->column : 0;
}

static bool is_container(const dfx_json *v)
{
    return v && (v->type == DFX_JSON_ARRAY || v->type == DFX_JSON_OBJECT);
}

int64_t dfx_json_size(const dfx_json *v)
{
    return is_container(v) ? v->u.kids.n : 0;
}

const dfx_json *dfx_json_at(const dfx_json *v, int64_t i)
{
    if (!v || v->type != DFX_JSON_ARRAY || i < 0 || i >= v->u.kids.n)
        return NULL;
    return &v->u.kids.items[i];
}

const char *dfx_json_key_at(const dfx_json *v, int64_t i)
{
    if (!v || v->type != DFX_JSON_OBJECT || i < 0 || i >= v->u.kids.n)
        return NULL;
    return v->u.kids.items[i].key;
}

size_t dfx__json_key_len(const dfx_json *v, int64_t i)
{
    if (!v || v->type != DFX_JSON_OBJECT || i < 0 || i >= v->u.kids.n)
        return 0;
    return v->u.kids.items[i].key_len;
}

const dfx_json *dfx_json_value_at(const dfx_json *v, int64_t i)
{
    if (!v || v->type != DFX_JSON_OBJECT || i < 0 || i >= v->u.kids.n)
        return NULL;
    return &v->u.kids.items[i];
}

const dfx_json *dfx_json_get(const dfx_json *v, const char *key)
{
    if (!v || v->type != DFX_JSON_OBJECT || !key)
        return NULL;
    size_t n = strlen(key);
    for (int64_t i = v->u.kids.n - 1; i >= 0; i--) {
        const dfx_json *m = &v->u.kids.items[i];
        if (m->key_len == n && memcmp(m->key, key, n) == 0)
            return m;
    }
    return NULL;
}

double dfx_json_number(const dfx_json *v)
{
    if (!v || v->type != DFX_JSON_NUMBER)
        return NAN;
    return v->u.num.d;
}

bool dfx_json_bool(const dfx_json *v)
{
    return v && v->type == DFX_JSON_BOOL && v->u.b;
}

const char *dfx_json_string(const dfx_json *v)
{
    if (!v || v->type != DFX_JSON_STRING)
        return NULL;
    return v->u.str.s;
}

size_t dfx_json_string_len(const dfx_json *v)
{
    if (!v || v->type != DFX_JSON_STRING)
        return 0;
    return v->u.str.len;
}

bool dfx_json_int(const dfx_json *v, int64_t *out)
{
    if (!v || v->type != DFX_JSON_NUMBER || !v->is_int)
        return false;
    if (out)
        *out = v->u.num.i;
    return true;
}
