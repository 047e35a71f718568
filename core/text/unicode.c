/* Python's str, in C: growable code-point strings, strict UTF-8 decoding,
 * and the str / unicodedata operations the CLIP tokenizer's Python code
 * applies (str.lower, str.strip, unicodedata.normalize("NFC")), driven by
 * the tables in unicode_tables.c. */
#include <stdlib.h>
#include <string.h>

#include "core/text/text_internal.h"

void dfx__ustr_fini(dfx__ustr *s)
{
    free(s->c);
    *s = (dfx__ustr){0};
}

void dfx__ustr_clear(dfx__ustr *s)
{
    s->n = 0;
}

static bool grow(dfx__ustr *s, size_t extra)
{
    if (s->oom)
        return false;
    if (s->n + extra <= s->cap)
        return true;
    size_t cap = s->cap ? s->cap : 16;
    while (cap < s->n + extra) {
        if (cap > SIZE_MAX / 2 / sizeof *s->c) {
            s->oom = true;
            return false;
        }
        cap *= 2;
    }
    uint32_t *c = realloc(s->c, cap * sizeof *c);
    if (!c) {
        s->oom = true;
        return false;
    }
    s->c = c;
    s->cap = cap;
    return true;
}

void dfx__ustr_push(dfx__ustr *s, uint32_t c)
{
    if (grow(s, 1))
        s->c[s->n++] = c;
}

void dfx__ustr_append(dfx__ustr *s, const uint32_t *c, size_t n)
{
    if (n && grow(s, n)) {
        memcpy(s->c + s->n, c, n * sizeof *c);
        s->n += n;
    }
}

void dfx__ustr_append_utf8(dfx__ustr *s, const char *utf8)
{
    size_t bad;
    bool truncated;
    /* the tables hold valid UTF-8; only memory can fail, and that sets s->oom */
    (void)dfx__utf8_decode_quiet((const unsigned char *)utf8, strlen(utf8), s, &bad, &truncated);
}

dfx_status dfx__ustr_status(const dfx__ustr *s)
{
    return s->oom ? dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory") : DFX_OK;
}

bool dfx__ustr_equal(const dfx__ustr *a, const dfx__ustr *b)
{
    return a->n == b->n && (a->n == 0 || memcmp(a->c, b->c, a->n * sizeof *a->c) == 0);
}

void dfx__ustr_swap(dfx__ustr *a, dfx__ustr *b)
{
    dfx__ustr t = *a;
    *a = *b;
    *b = t;
}

/* The well-formed byte sequences of Unicode's table 3-7, which is what
 * CPython's strict decoder accepts. Appends to out and returns true, or
 * returns false with the offending sequence's offset and whether the input
 * ended inside it (out then holds a partial result). */
bool dfx__utf8_decode_quiet(const unsigned char *p, size_t len, dfx__ustr *out, size_t *bad, bool *truncated)
{
    if (!grow(out, len))
        return true; /* out->oom tells */
    size_t i = 0;
    while (i < len) {
        unsigned b0 = p[i];
        if (b0 < 0x80) {
            out->c[out->n++] = b0;
            i++;
            continue;
        }
        size_t need;
        unsigned lo = 0x80, hi = 0xBF;
        uint32_t c;
        if (b0 >= 0xC2 && b0 <= 0xDF) {
            need = 1;
            c = b0 & 0x1F;
        } else if (b0 >= 0xE0 && b0 <= 0xEF) {
            need = 2;
            c = b0 & 0x0F;
            if (b0 == 0xE0)
                lo = 0xA0;  /* no overlong forms */
            else if (b0 == 0xED)
                hi = 0x9F;  /* no surrogates */
        } else if (b0 >= 0xF0 && b0 <= 0xF4) {
            need = 3;
            c = b0 & 0x07;
            if (b0 == 0xF0)
                lo = 0x90;
            else if (b0 == 0xF4)
                hi = 0x8F;  /* nothing above U+10FFFF */
        } else {
            *bad = i;
            *truncated = false;
            return false;
        }
        for (size_t k = 1; k <= need; k++) {
            if (i + k >= len || p[i + k] < lo || p[i + k] > hi) {
                *bad = i;
                *truncated = i + k >= len;
                return false;
            }
            c = (c << 6) | (p[i + k] & 0x3F);
            lo = 0x80;
            hi = 0xBF;
        }
        out->c[out->n++] = c;
        i += need + 1;
    }
    return true;
}

dfx_status dfx__utf8_decode(const char *text, size_t len, dfx__ustr *out)
{
    size_t bad;
    bool truncated;
    if (!dfx__utf8_decode_quiet((const unsigned char *)text, len, out, &bad, &truncated))
        return dfx_error_set(DFX_ERR_INVALID_ARG, "text is not valid UTF-8: %s sequence at byte offset %zu",
                             truncated ? "truncated" : "invalid", bad);
    return dfx__ustr_status(out);
}

bool dfx__uset_has(const dfx__uset *set, uint32_t c)
{
    size_t lo = 0, hi = set->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c < set->r[mid].lo)
            hi = mid;
        else if (c > set->r[mid].hi)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

/* Binary search in a map sorted by `from`; returns the entry or NULL. */
static const dfx__umap *umap_find(const dfx__umap *map, size_t n, uint32_t c)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c < map[mid].from)
            hi = mid;
        else if (c > map[mid].from)
            lo = mid + 1;
        else
            return &map[mid];
    }
    return NULL;
}

/* CPython's handle_capital_sigma: U+03A3 lowers to final sigma when a cased
 * letter precedes it and none follows, case-ignorable code points skipped
 * on both sides. */
static bool final_sigma(const uint32_t *s, size_t n, size_t i)
{
    size_t j = i;
    while (j > 0 && dfx__uset_has(&dfx__case_ignorable, s[j - 1]))
        j--;
    if (j == 0 || !dfx__uset_has(&dfx__cased, s[j - 1]))
        return false;
    j = i + 1;
    while (j < n && dfx__uset_has(&dfx__case_ignorable, s[j]))
        j++;
    return j == n || !dfx__uset_has(&dfx__cased, s[j]);
}

void dfx__unicode_lower(const uint32_t *s, size_t n, dfx__ustr *out)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t c = s[i];
        if (c < 0x80) {
            dfx__ustr_push(out, c >= 'A' && c <= 'Z' ? c + 32 : c);
        } else if (c == 0x130) {
            /* LATIN CAPITAL LETTER I WITH DOT ABOVE: the one lowercase
             * mapping to two code points (SpecialCasing.txt) */
            dfx__ustr_push(out, 'i');
            dfx__ustr_push(out, 0x307);
        } else if (c == 0x3A3) {
            dfx__ustr_push(out, final_sigma(s, n, i) ? 0x3C2 : 0x3C3);
        } else {
            const dfx__umap *m = umap_find(dfx__lower_map, dfx__lower_map_count, c);
            dfx__ustr_push(out, m ? m->to : c);
        }
    }
}

void dfx__unicode_strip(const uint32_t *s, size_t n, size_t *begin, size_t *end)
{
    size_t b = 0, e = n;
    while (b < e && dfx__uset_has(&dfx__py_space, s[b]))
        b++;
    while (e > b && dfx__uset_has(&dfx__py_space, s[e - 1]))
        e--;
    *begin = b;
    *end = e;
}

/* ---- NFC (UAX #15) ------------------------------------------------------ */

enum {
    HANGUL_S = 0xAC00, HANGUL_L = 0x1100, HANGUL_V = 0x1161, HANGUL_T = 0x11A7,
    HANGUL_LN = 19, HANGUL_VN = 21, HANGUL_TN = 28, HANGUL_N = HANGUL_VN * HANGUL_TN,
    HANGUL_SN = HANGUL_LN * HANGUL_N
};

static unsigned ccc_of(uint32_t c)
{
    if (c < 0x300)
        return 0;
    const dfx__umap *m = umap_find(dfx__ccc_map, dfx__ccc_map_count, c);
    return m ? m->to : 0;
}

static void decompose(uint32_t c, dfx__ustr *out)
{
    if (c >= HANGUL_S && c < HANGUL_S + HANGUL_SN) {
        uint32_t i = c - HANGUL_S;
        dfx__ustr_push(out, HANGUL_L + i / HANGUL_N);
        dfx__ustr_push(out, HANGUL_V + (i % HANGUL_N) / HANGUL_TN);
        if (i % HANGUL_TN)
            dfx__ustr_push(out, HANGUL_T + i % HANGUL_TN);
        return;
    }
    if (c >= 0xC0) {
        size_t lo = 0, hi = dfx__decomp_map_count;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            const dfx__udecomp *d = &dfx__decomp_map[mid];
            if (c < d->cp) {
                hi = mid;
            } else if (c > d->cp) {
                lo = mid + 1;
            } else {
                dfx__ustr_append(out, dfx__decomp_pool + d->offset, d->len);
                return;
            }
        }
    }
    dfx__ustr_push(out, c);
}

/* The primary composite of (a, b), or 0. */
static uint32_t compose_pair(uint32_t a, uint32_t b)
{
    size_t lo = 0, hi = dfx__comp_map_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const dfx__ucomp *p = &dfx__comp_map[mid];
        if (a < p->first || (a == p->first && b < p->second))
            hi = mid;
        else if (a > p->first || b > p->second)
            lo = mid + 1;
        else
            return p->composite;
    }
    return 0;
}

void dfx__unicode_nfc(const uint32_t *s, size_t n, dfx__ustr *out)
{
    /* ASCII and other text below U+0300 is already NFC */
    size_t quick = 0;
    while (quick < n && s[quick] < 0x300)
        quick++;
    if (quick == n) {
        dfx__ustr_append(out, s, n);
        return;
    }
    dfx__ustr d = {0};
    for (size_t i = 0; i < n; i++)
        decompose(s[i], &d);
    if (d.oom) {
        out->oom = true;
        dfx__ustr_fini(&d);
        return;
    }
    /* canonical ordering: a stable sort of each run of non-starters by
     * combining class (runs are short, insertion sort) */
    for (size_t i = 1; i < d.n; i++) {
        unsigned cc = ccc_of(d.c[i]);
        if (cc == 0)
            continue;
        size_t j = i;
        uint32_t c = d.c[i];
        while (j > 0) {
            unsigned pc = ccc_of(d.c[j - 1]);
            if (pc == 0 || pc <= cc)
                break;
            d.c[j] = d.c[j - 1];
            j--;
        }
        d.c[j] = c;
    }
    /* canonical composition: each code point joins the last starter unless
     * something between blocks it (a starter, or a class not below its own) */
    size_t starter = SIZE_MAX;
    unsigned last_ccc = 0;
    for (size_t i = 0; i < d.n; i++) {
        uint32_t c = d.c[i];
        unsigned cc = ccc_of(c);
        size_t len = out->n;
        bool adjacent = starter != SIZE_MAX && len - 1 == starter;
        if (starter != SIZE_MAX && (last_ccc < cc || (last_ccc == 0 && adjacent))) {
            uint32_t s0 = out->c[starter];
            if (adjacent && s0 >= HANGUL_L && s0 < HANGUL_L + HANGUL_LN && c >= HANGUL_V &&
                c < HANGUL_V + HANGUL_VN) {
                out->c[starter] = HANGUL_S + ((s0 - HANGUL_L) * HANGUL_VN + (c - HANGUL_V)) * HANGUL_TN;
                continue;
            }
            if (adjacent && s0 >= HANGUL_S && s0 < HANGUL_S + HANGUL_SN && (s0 - HANGUL_S) % HANGUL_TN == 0 &&
                c > HANGUL_T && c < HANGUL_T + HANGUL_TN) {
                out->c[starter] = s0 + (c - HANGUL_T);
                continue;
            }
            uint32_t p = compose_pair(s0, c);
            if (p) {
                out->c[starter] = p;
                continue;
            }
        }
        if (cc == 0)
            starter = len;
        last_ccc = cc;
        dfx__ustr_push(out, c);
        if (out->oom)
            break;
    }
    dfx__ustr_fini(&d);
}
