/* ftfy.fix_text (ftfy 6.1.1, default TextFixerConfig) in C, as
 * transformers' CLIPTokenizer applies it to every prompt when ftfy is
 * installed (it was for the SD reference tokenizations): HTML entities,
 * mojibake (fix_encoding with its badness heuristic, the sloppy codecs,
 * restore_byte_a0, replace_lossy_sequences, decode_inconsistent_utf8 and
 * utf-8-variants), C1 controls, Latin ligatures, character width, curly
 * quotes, line breaks, terminal escapes, control characters and NFC, in
 * ftfy's order and with its quirks. Function names follow ftfy's. */
#include <stdlib.h>
#include <string.h>

#include "core/text/text_internal.h"

/* fix_text gives up on exactness only where Python would fail or never
 * return: deeper decode_inconsistent_utf8 recursion than this (CPython
 * stops at about 1000 frames), more rounds of fixes than this. */
enum { MAX_DEPTH = 200, MAX_ROUNDS = 1000 };

/* TextFixerConfig.max_decode_length */
enum { MAX_DECODE_LENGTH = 1000000 };

/* chardata.CHARMAP_ENCODINGS indices */
enum { ENC_LATIN1 = 0, ENC_SLOPPY_1252 = 1, ENC_FIRST_NON_SLOPPY = 6 };

/* ---- byte strings --------------------------------------------------------- */

typedef struct bytes {
    unsigned char *b;
    size_t n, cap;
    bool oom;
} bytes;

static void bytes_push(bytes *s, unsigned char c)
{
    if (s->oom)
        return;
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        unsigned char *b = realloc(s->b, cap);
        if (!b) {
            s->oom = true;
            return;
        }
        s->b = b;
        s->cap = cap;
    }
    s->b[s->n++] = c;
}

static void bytes_fini(bytes *s)
{
    free(s->b);
    *s = (bytes){0};
}

static bool cls(int k, uint32_t c)
{
    return dfx__uset_has(&dfx__ftfy_classes[k], c);
}

/* ---- badness.is_bad ----------------------------------------------------- */

/* BADNESS_RE.search(text): some alternative matches at some position. */
bool dfx__ftfy_is_bad(const uint32_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t a = 0; a < dfx__badness_alt_count; a++) {
            const dfx__badness_alt *alt = &dfx__badness_alts[a];
            if ((alt->anchored && i != 0) || alt->len > n - i)
                continue;
            size_t k = 0;
            while (k < alt->len && cls(alt->cls[k], s[i + k]))
                k++;
            if (k == alt->len)
                return true;
        }
    }
    return false;
}

/* ---- single-byte encodings -------------------------------------------- */

/* The byte that code point c encodes to in encoding e, or -1 (the inverse
 * of the decoding table; see dfx__charmap). */
static int charmap_encode(int e, uint32_t c)
{
    if (c < 0x80 && c != 0x1A)
        return (int)c;
    for (int i = 0; i < 129; i++)
        if (dfx__charmap[e][i] == c)
            return i < 128 ? 0x80 + i : 0x1A;
    return -1;
}

/* chardata.possible_encoding */
static bool possible_encoding(const uint32_t *s, size_t n, int e)
{
    for (size_t i = 0; i < n; i++)
        if (charmap_encode(e, s[i]) < 0)
            return false;
    return true;
}

/* ---- transcoders on bytes (fixes.restore_byte_a0, replace_lossy_sequences) */

static bool in(unsigned b, unsigned lo, unsigned hi)
{
    return b >= lo && b <= hi;
}

/* [\x80-\x84\x86-\x9f\xa1-\xbf]: continuation bytes other than 0x85 and 0xA0 */
static bool cont_not_85_a0(unsigned b)
{
    return in(b, 0x80, 0xBF) && b != 0x85 && b != 0xA0;
}

/* The length of an ALTERED_UTF8_RE match at b[i], or 0: UTF-8 sequences
 * whose 0xA0 byte became a space. Alternatives in the expression's order. */
static size_t altered_utf8_at(const unsigned char *b, size_t n, size_t i)
{
    size_t left = n - i;
    unsigned c0 = b[i], c1 = left > 1 ? b[i + 1] : 0x100, c2 = left > 2 ? b[i + 2] : 0x100,
             c3 = left > 3 ? b[i + 3] : 0x100;
    if ((c0 == 0xC2 || c0 == 0xC3 || c0 == 0xC5 || c0 == 0xCE || c0 == 0xD0 || c0 == 0xD9) && c1 == 0x20)
        return 2;
    if ((c0 == 0xE2 || c0 == 0xE3) && c1 == 0x20 && cont_not_85_a0(c2))
        return 3;
    if (in(c0, 0xE0, 0xE3) && cont_not_85_a0(c1) && c2 == 0x20)
        return 3;
    if (c0 == 0xF0) {
        if (c1 == 0x20 && in(c2, 0x80, 0xBF) && in(c3, 0x80, 0xBF))
            return 4;
        if (in(c1, 0x80, 0xBF) && c2 == 0x20 && in(c3, 0x80, 0xBF))
            return 4;
        if (in(c1, 0x80, 0xBF) && in(c2, 0x80, 0xBF) && c3 == 0x20)
            return 4;
    }
    return 0;
}

static bool has_prefix(const unsigned char *b, size_t n, size_t i, const char *p)
{
    size_t len = strlen(p);
    return n - i >= len && memcmp(b + i, p, len) == 0;
}

/* fixes.restore_byte_a0: first A_GRAVE_WORD_RE ("Ã " as a word, except
 * before Portuguese "às", "àquele"...: 0xC3 0x20 gains its 0xA0 and keeps
 * the space), then every ALTERED_UTF8_RE match has its spaces made 0xA0. */
static void restore_byte_a0(const bytes *in_, bytes *out)
{
    bytes t = {0};
    const unsigned char *b = in_->b;
    size_t n = in_->n;
    for (size_t i = 0; i < n;) {
        if (b[i] == 0xC3 && i + 1 < n && b[i + 1] == 0x20 && !has_prefix(b, n, i + 2, " ") &&
            !has_prefix(b, n, i + 2, "quele") && !has_prefix(b, n, i + 2, "quela") &&
            !has_prefix(b, n, i + 2, "quilo") && !has_prefix(b, n, i + 2, "s ")) {
            bytes_push(&t, 0xC3);
            bytes_push(&t, 0xA0);
            bytes_push(&t, 0x20);
            i += 2;
        } else {
            bytes_push(&t, b[i++]);
        }
    }
    for (size_t i = 0; i < t.n;) {
        size_t len = altered_utf8_at(t.b, t.n, i);
        if (len) {
            for (size_t k = 0; k < len; k++)
                bytes_push(out, t.b[i + k] == 0x20 ? 0xA0 : t.b[i + k]);
            i += len;
        } else {
            bytes_push(out, t.b[i++]);
        }
    }
    if (t.oom)
        out->oom = true;
    bytes_fini(&t);
}

/* [\x1a?] and [\x1a\x80-\xbf] and [\x1a?\x80-\xbf] of LOSSY_UTF8_RE */
static bool lost(unsigned b)
{
    return b == 0x1A || b == '?';
}

static bool lost_or_cont(unsigned b)
{
    return b == 0x1A || in(b, 0x80, 0xBF);
}

/* The length of a LOSSY_UTF8_RE match at b[i], or 0: UTF-8 sequences with
 * bytes the sloppy codecs wrote as 0x1A (or '?' once). */
static size_t lossy_utf8_at(const unsigned char *b, size_t n, size_t i)
{
    unsigned c[6];
    for (size_t k = 0; k < 6; k++)
        c[k] = i + k < n ? b[i + k] : 0x100;
    if (in(c[0], 0xC2, 0xDF) && c[1] == 0x1A)
        return 2;
    if (in(c[0], 0xC2, 0xC3) && c[1] == '?')
        return 2;
    if (c[0] == 0xED && in(c[1], 0xA0, 0xAF) && lost(c[2]) && c[3] == 0xED && in(c[4], 0xB0, 0xBF) &&
        (lost(c[5]) || in(c[5], 0x80, 0xBF)))
        return 6;
    if (c[0] == 0xED && in(c[1], 0xA0, 0xAF) && (lost(c[2]) || in(c[2], 0x80, 0xBF)) && c[3] == 0xED &&
        in(c[4], 0xB0, 0xBF) && lost(c[5]))
        return 6;
    if (in(c[0], 0xE0, 0xEF)) {
        if (lost(c[1]) && lost_or_cont(c[2]))
            return 3;
        if (lost_or_cont(c[1]) && lost(c[2]))
            return 3;
    }
    if (in(c[0], 0xF0, 0xF4)) {
        if (lost(c[1]) && lost_or_cont(c[2]) && lost_or_cont(c[3]))
            return 4;
        if (lost_or_cont(c[1]) && lost(c[2]) && lost_or_cont(c[3]))
            return 4;
        if (lost_or_cont(c[1]) && lost_or_cont(c[2]) && lost(c[3]))
            return 4;
    }
    return c[0] == 0x1A ? 1 : 0;
}

/* fixes.replace_lossy_sequences: each match becomes U+FFFD's UTF-8. */
static void replace_lossy_sequences(const bytes *in_, bytes *out)
{
    for (size_t i = 0; i < in_->n;) {
        size_t len = lossy_utf8_at(in_->b, in_->n, i);
        if (len) {
            bytes_push(out, 0xEF);
            bytes_push(out, 0xBF);
            bytes_push(out, 0xBD);
            i += len;
        } else {
            bytes_push(out, in_->b[i++]);
        }
    }
}

/* ---- the utf-8-variants codec (bad_codecs/utf8_variants.py) ------------- */

/* Python's "$" in a bytes pattern: the end, or before a final newline. */
static bool at_end(const unsigned char *b, size_t n, size_t q)
{
    return q == n || (q + 1 == n && b[q] == '\n');
}

/* Whether SPECIAL_BYTES_RE (a Java-style null, or a CESU-8 / surrogate
 * sequence) matches at b[p]. */
static bool special_at(const unsigned char *b, size_t n, size_t p)
{
    if (b[p] == 0xC0)
        return (p + 1 < n && b[p + 1] == 0x80) || at_end(b, n, p + 1);
    if (b[p] == 0xED) {
        if (p + 1 < n && in(b[p + 1], 0xA0, 0xBF))
            return (p + 2 < n && in(b[p + 2], 0x80, 0xBF)) || at_end(b, n, p + 2);
        return at_end(b, n, p + 1);
    }
    return false;
}

static bool strict_decode(const unsigned char *b, size_t n, dfx__ustr *out)
{
    size_t bad;
    bool truncated;
    return dfx__utf8_decode_quiet(b, n, out, &bad, &truncated);
}

/* bytes.decode("utf-8-variants"): strict UTF-8, except that 0xC0 0x80 is
 * U+0000 and a CESU-8 surrogate pair is the code point it encodes. The
 * codec's incremental decoder's steps are kept, quirks included (its "$"
 * also matches before a final newline). False when it would raise. */
static bool decode_utf8_variants(const unsigned char *b, size_t n, dfx__ustr *out)
{
    size_t pos = 0;
    while (pos < n) {
        size_t p = pos;
        while (p < n && !special_at(b, n, p))
            p++;
        if (p > pos) {
            if (!strict_decode(b + pos, p - pos, out))
                return false;
            pos = p;
            continue;
        }
        if (b[p] == 0xC0) {
            if (n - p < 2)
                return false;   /* a lone 0xC0 at the end: strict UTF-8 refuses it */
            dfx__ustr_push(out, 0);
            pos += 2;
        } else if (n - p < 6) {
            return strict_decode(b + p, n - p, out);
        } else if (in(b[p + 1], 0xA0, 0xAF) && in(b[p + 2], 0x80, 0xBF) && b[p + 3] == 0xED &&
                   in(b[p + 4], 0xB0, 0xBF) && (in(b[p + 5], 0x80, 0xBF) || at_end(b, n, p + 5))) {
            uint32_t c = ((uint32_t)(b[p + 1] & 0x0F) << 16) + ((uint32_t)(b[p + 2] & 0x3F) << 10) +
                         ((uint32_t)(b[p + 4] & 0x0F) << 6) + (b[p + 5] & 0x3F) + 0x10000;
            dfx__ustr_push(out, c);
            pos += 6;
        } else {
            /* a lone surrogate: the three bytes go to the strict decoder,
             * which refuses them */
            return false;
        }
    }
    return true;
}

/* ---- fix_encoding ------------------------------------------------------- */

static dfx_status fix_encoding(const uint32_t *s, size_t n, dfx__ustr *out, int depth);

/* chardata.UTF8_DETECTOR_RE: the length of the match at s[i] (0: none). */
static size_t utf8_detector_at(const uint32_t *s, size_t n, size_t i)
{
    if (i > 0 && cls(dfx__ftfy_utf8_continuation_strict, s[i - 1]))
        return 0;
    size_t j = i;
    for (;;) {
        size_t need;
        if (j >= n)
            break;
        if (cls(dfx__ftfy_utf8_first_of_2, s[j]))
            need = 1;
        else if (cls(dfx__ftfy_utf8_first_of_3, s[j]))
            need = 2;
        else if (cls(dfx__ftfy_utf8_first_of_4, s[j]))
            need = 3;
        else
            break;
        if (n - j - 1 < need)
            break;
        size_t k = 1;
        while (k <= need && cls(dfx__ftfy_utf8_continuation, s[j + k]))
            k++;
        if (k <= need)
            break;
        j += need + 1;
    }
    return j - i;
}

/* fixes.decode_inconsistent_utf8: every UTF8_DETECTOR_RE match that is
 * shorter than the text and is_bad gets fix_encoding on its own. */
static dfx_status decode_inconsistent_utf8(const uint32_t *s, size_t n, dfx__ustr *out, int depth)
{
    for (size_t i = 0; i < n;) {
        size_t len = utf8_detector_at(s, n, i);
        if (!len) {
            dfx__ustr_push(out, s[i++]);
            continue;
        }
        if (len < n && dfx__ftfy_is_bad(s + i, len)) {
            dfx_status st = fix_encoding(s + i, len, out, depth + 1);
            if (st != DFX_OK)
                return st;
        } else {
            dfx__ustr_append(out, s + i, len);
        }
        i += len;
    }
    return dfx__ustr_status(out);
}

static bool any_c1(const uint32_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 0x80 && s[i] <= 0x9F)
            return true;
    return false;
}

/* fixes.fix_c1_controls: C1 controls read as sloppy-windows-1252. */
static void fix_c1_controls(const uint32_t *s, size_t n, dfx__ustr *out)
{
    for (size_t i = 0; i < n; i++)
        dfx__ustr_push(out, s[i] >= 0x80 && s[i] <= 0x9F ? dfx__charmap[ENC_SLOPPY_1252][s[i] - 0x80] : s[i]);
}

/* One encoding plan tried: encode s in charmap e, transcode, decode. */
static dfx_status try_charmap(const uint32_t *s, size_t n, int e, dfx__ustr *out, bool *fixed)
{
    bytes enc = {0}, t = {0};
    *fixed = false;
    for (size_t i = 0; i < n; i++)
        bytes_push(&enc, (unsigned char)charmap_encode(e, s[i]));
    bool altered = false;
    for (size_t i = 0; i < enc.n && !altered; i++)
        altered = altered_utf8_at(enc.b, enc.n, i) != 0;
    if (altered) {
        restore_byte_a0(&enc, &t);
        bytes_fini(&enc);
        enc = t;
        t = (bytes){0};
    }
    if (e > ENC_LATIN1 && e < ENC_FIRST_NON_SLOPPY) {
        replace_lossy_sequences(&enc, &t);
        bytes_fini(&enc);
        enc = t;
        t = (bytes){0};
    }
    dfx_status st = DFX_OK;
    if (enc.oom) {
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
    } else {
        bool variants = memchr(enc.b, 0xED, enc.n) || memchr(enc.b, 0xC0, enc.n);
        size_t mark = out->n;
        *fixed = variants ? decode_utf8_variants(enc.b, enc.n, out) : strict_decode(enc.b, enc.n, out);
        if (!*fixed)
            out->n = mark;
        st = dfx__ustr_status(out);
    }
    bytes_fini(&enc);
    return st;
}

/* _fix_encoding_one_step_and_explain: appends the text after one step to
 * out. */
static dfx_status fix_encoding_step(const uint32_t *s, size_t n, dfx__ustr *out, int depth)
{
    bool ascii = true;
    for (size_t i = 0; i < n && ascii; i++)
        ascii = s[i] < 0x80;
    if (n == 0 || ascii || !dfx__ftfy_is_bad(s, n)) {
        dfx__ustr_append(out, s, n);
        return dfx__ustr_status(out);
    }
    /* UTF-8 read as one of the single-byte encodings */
    for (int e = 0; e < DFX__CHARMAP_COUNT; e++) {
        if (!possible_encoding(s, n, e))
            continue;
        bool fixed;
        dfx_status st = try_charmap(s, n, e, out, &fixed);
        if (st != DFX_OK || fixed)
            return st;
    }
    /* UTF-8 mojibake embedded in other text */
    bool detected = false;
    for (size_t i = 0; i < n && !detected; i++)
        detected = utf8_detector_at(s, n, i) != 0;
    if (detected) {
        size_t mark = out->n;
        dfx_status st = decode_inconsistent_utf8(s, n, out, depth);
        if (st != DFX_OK)
            return st;
        if (out->n - mark != n || memcmp(out->c + mark, s, n * sizeof *s) != 0)
            return DFX_OK;
        out->n = mark;
    }
    /* What remains is the same whichever way ftfy gets there: "Latin-1
     * meant as Windows-1252" (it looks for "windows-1252" among the
     * possible encodings, where only "sloppy-windows-1252" can be, so it
     * decodes with the strict codec, which agrees with the sloppy one where
     * it succeeds) and then fix_c1_controls both map C1 controls through
     * sloppy-windows-1252, and text without them stays as it is. */
    if (any_c1(s, n))
        fix_c1_controls(s, n, out);
    else
        dfx__ustr_append(out, s, n);
    return dfx__ustr_status(out);
}

/* ftfy.fix_encoding: steps until the text stops changing. */
static dfx_status fix_encoding(const uint32_t *s, size_t n, dfx__ustr *out, int depth)
{
    if (depth > MAX_DEPTH)
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "ftfy: mojibake nested too deeply to fix");
    dfx__ustr cur = {0}, next = {0};
    dfx__ustr_append(&cur, s, n);
    dfx_status st = dfx__ustr_status(&cur);
    for (int round = 0; st == DFX_OK; round++) {
        if (round == MAX_ROUNDS) {
            st = dfx_error_set(DFX_ERR_UNSUPPORTED, "ftfy: fix_encoding did not settle");
            break;
        }
        dfx__ustr_clear(&next);
        st = fix_encoding_step(cur.c, cur.n, &next, depth);
        if (st != DFX_OK)
            break;
        bool same = dfx__ustr_equal(&cur, &next);
        dfx__ustr_swap(&cur, &next);
        if (same)
            break;
    }
    if (st == DFX_OK) {
        dfx__ustr_append(out, cur.c, cur.n);
        st = dfx__ustr_status(out);
    }
    dfx__ustr_fini(&cur);
    dfx__ustr_fini(&next);
    return st;
}

/* ---- the other fixers --------------------------------------------------- */

static bool ascii_alnum(uint32_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int hex_value(uint32_t c)
{
    if (c >= '0' && c <= '9')
        return (int)(c - '0');
    if (c >= 'a' && c <= 'f')
        return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F')
        return (int)(c - 'A' + 10);
    return -1;
}

static int entity_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const dfx__entity *)elem)->name);
}

/* html.unescape of "&#" + digits + ";" (a numeric reference that
 * HTML_ENTITY_RE matched). Appends what it decodes to, or returns false when
 * html.unescape would leave a ';' in the result, which ftfy rejects. */
static bool numeric_reference(const uint32_t *d, size_t len, dfx__ustr *out)
{
    unsigned base = 10;
    size_t k = 0;
    if (d[0] == 'x' || d[0] == 'X') {
        base = 16;
        k = 1;
    }
    if (k == len)
        return false;
    uint64_t num = 0;
    for (; k < len; k++) {
        int v = base == 16 ? hex_value(d[k]) : (d[k] >= '0' && d[k] <= '9' ? (int)(d[k] - '0') : -1);
        if (v < 0)
            return false;   /* html.unescape decodes a prefix and keeps the rest, ';' included */
        num = num * base + (uint64_t)v;
        if (num > 0x110000)
            num = 0x110000; /* only "above U+10FFFF" matters from here */
    }
    for (size_t i = 0; i < dfx__html_invalid_charref_count; i++) {
        if (dfx__html_invalid_charrefs[i].from == num) {
            dfx__ustr_push(out, dfx__html_invalid_charrefs[i].to);
            return true;
        }
    }
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
        dfx__ustr_push(out, 0xFFFD);
        return true;
    }
    if (num == ';')
        return false;
    if (!dfx__uset_has(&dfx__html_invalid_codepoints, (uint32_t)num))
        dfx__ustr_push(out, (uint32_t)num);
    return true;
}

/* fixes.unescape_html: HTML_ENTITY_RE matches (&name; or &#ref; of 1-24
 * ASCII letters and digits) decoded when ftfy's table or html.unescape
 * knows them. */
static void unescape_html(const uint32_t *s, size_t n, dfx__ustr *out)
{
    for (size_t i = 0; i < n;) {
        if (s[i] != '&') {
            dfx__ustr_push(out, s[i++]);
            continue;
        }
        size_t j = i + 1;
        bool numeric = j < n && s[j] == '#';
        if (numeric)
            j++;
        size_t k = j;
        while (k < n && ascii_alnum(s[k]))
            k++;
        if (k == j || k - j > 24 || k == n || s[k] != ';') {
            dfx__ustr_push(out, s[i++]);
            continue;
        }
        size_t mark = out->n;
        bool done = false;
        if (numeric) {
            done = numeric_reference(s + j, k - j, out);
        } else {
            char name[25];
            for (size_t q = j; q < k; q++)
                name[q - j] = (char)s[q];
            name[k - j] = '\0';
            const dfx__entity *e =
                bsearch(name, dfx__html_entities, dfx__html_entity_count, sizeof *dfx__html_entities, entity_cmp);
            if (e) {
                dfx__ustr_append_utf8(out, e->value);
                done = true;
            }
        }
        if (!done) {
            out->n = mark;
            dfx__ustr_append(out, s + i, k + 1 - i);
        }
        i = k + 1;
    }
}

static const dfx__utrans *trans_find(const dfx__utrans *map, size_t count, uint32_t c)
{
    size_t lo = 0, hi = count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c < map[mid].cp)
            hi = mid;
        else if (c > map[mid].cp)
            lo = mid + 1;
        else
            return &map[mid];
    }
    return NULL;
}

/* str.translate with a table of strings (fix_latin_ligatures,
 * fix_character_width) */
static void translate(const uint32_t *s, size_t n, const dfx__utrans *map, size_t count, dfx__ustr *out)
{
    for (size_t i = 0; i < n; i++) {
        const dfx__utrans *t = s[i] >= map[0].cp ? trans_find(map, count, s[i]) : NULL;
        if (t)
            dfx__ustr_append_utf8(out, t->to);
        else
            dfx__ustr_push(out, s[i]);
    }
}

/* fixes.uncurl_quotes: DOUBLE_QUOTE_RE and SINGLE_QUOTE_RE */
static void uncurl_quotes(const uint32_t *s, size_t n, dfx__ustr *out)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t c = s[i];
        if (c >= 0x201C && c <= 0x201F)
            c = '"';
        else if (c == 0x2BC || (c >= 0x2018 && c <= 0x201B))
            c = '\'';
        dfx__ustr_push(out, c);
    }
}

/* fixes.fix_line_breaks: CRLF, CR, U+2028, U+2029 and U+0085 become LF */
static void fix_line_breaks(const uint32_t *s, size_t n, dfx__ustr *out)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t c = s[i];
        if (c == '\r' && i + 1 < n && s[i + 1] == '\n')
            continue;
        dfx__ustr_push(out, c == '\r' || c == 0x2028 || c == 0x2029 || c == 0x85 ? '\n' : c);
    }
}

/* fixes.remove_terminal_escapes: ANSI_RE, ESC [ (\d|;)* letter */
static void remove_terminal_escapes(const uint32_t *s, size_t n, dfx__ustr *out)
{
    for (size_t i = 0; i < n;) {
        if (s[i] == 0x1B && i + 1 < n && s[i + 1] == '[') {
            size_t k = i + 2;
            while (k < n && (s[k] == ';' || dfx__uset_has(&dfx__py_digit, s[k])))
                k++;
            if (k < n && ((s[k] >= 'A' && s[k] <= 'Z') || (s[k] >= 'a' && s[k] <= 'z'))) {
                i = k + 1;
                continue;
            }
        }
        dfx__ustr_push(out, s[i++]);
    }
}

/* fixes.remove_control_chars: chardata.CONTROL_CHARS */
static void remove_control_chars(const uint32_t *s, size_t n, dfx__ustr *out)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t c = s[i];
        bool control = c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F ||
                       (c >= 0x206A && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
        if (!control)
            dfx__ustr_push(out, c);
    }
}

/* ---- fix_and_explain, fix_text ------------------------------------------ */

enum { FIX_C1, FIX_LIGATURES, FIX_WIDTH, FIX_QUOTES, FIX_LINE_BREAKS, FIX_ESCAPES, FIX_CONTROLS, FIX_NFC,
       FIX_COUNT };

static void apply_fixer(int f, const uint32_t *s, size_t n, dfx__ustr *out)
{
    switch (f) {
    case FIX_C1: fix_c1_controls(s, n, out); break;
    case FIX_LIGATURES: translate(s, n, dfx__ligature_map, dfx__ligature_map_count, out); break;
    case FIX_WIDTH: translate(s, n, dfx__width_map, dfx__width_map_count, out); break;
    case FIX_QUOTES: uncurl_quotes(s, n, out); break;
    case FIX_LINE_BREAKS: fix_line_breaks(s, n, out); break;
    case FIX_ESCAPES: remove_terminal_escapes(s, n, out); break;
    case FIX_CONTROLS: remove_control_chars(s, n, out); break;
    default: dfx__unicode_nfc(s, n, out); break;
    }
}

/* ftfy.fix_and_explain on one segment: the fixers in ftfy's order, again
 * and again until a round changes nothing. (fix_surrogates has nothing to
 * do here: the text comes from strict UTF-8, and no fixer makes a
 * surrogate.) */
static dfx_status fix_segment(const uint32_t *s, size_t n, bool unescape, dfx__ustr *out)
{
    dfx__ustr cur = {0}, next = {0}, orig = {0};
    dfx__ustr_append(&cur, s, n);
    dfx_status st = dfx__ustr_status(&cur);
    for (int round = 0; st == DFX_OK; round++) {
        if (round == MAX_ROUNDS) {
            st = dfx_error_set(DFX_ERR_UNSUPPORTED, "ftfy: fix_text did not settle");
            break;
        }
        dfx__ustr_clear(&orig);
        dfx__ustr_append(&orig, cur.c, cur.n);
        if (unescape) {
            dfx__ustr_clear(&next);
            unescape_html(cur.c, cur.n, &next);
            dfx__ustr_swap(&cur, &next);
        }
        dfx__ustr_clear(&next);
        if ((st = fix_encoding(cur.c, cur.n, &next, 0)) != DFX_OK)
            break;
        dfx__ustr_swap(&cur, &next);
        for (int f = 0; f < FIX_COUNT; f++) {
            dfx__ustr_clear(&next);
            apply_fixer(f, cur.c, cur.n, &next);
            dfx__ustr_swap(&cur, &next);
        }
        if ((st = dfx__ustr_status(&cur)) != DFX_OK || (st = dfx__ustr_status(&orig)) != DFX_OK)
            break;
        if (dfx__ustr_equal(&cur, &orig)) {
            dfx__ustr_append(out, cur.c, cur.n);
            st = dfx__ustr_status(out);
            break;
        }
    }
    dfx__ustr_fini(&cur);
    dfx__ustr_fini(&next);
    dfx__ustr_fini(&orig);
    return st;
}

dfx_status dfx__ftfy_fix_text(const uint32_t *s, size_t n, dfx__ustr *out)
{
    /* unescape_html="auto": off once a segment holds a literal '<', and
     * (TextFixerConfig being replaced, not restored) for every later
     * segment too; decided once per segment, before any fix */
    bool unescape = true;
    for (size_t pos = 0; pos < n;) {
        size_t end = pos;
        while (end < n && s[end] != '\n')
            end++;
        end = end < n ? end + 1 : n;   /* the segment keeps its '\n' */
        if (end - pos > MAX_DECODE_LENGTH)
            end = pos + MAX_DECODE_LENGTH;
        for (size_t i = pos; i < end && unescape; i++)
            unescape = s[i] != '<';
        dfx_status st = fix_segment(s + pos, end - pos, unescape, out);
        if (st != DFX_OK)
            return st;
        pos = end;
    }
    return DFX_OK;
}
