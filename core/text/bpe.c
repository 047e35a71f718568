/* Byte-level BPE as transformers' CLIPTokenizer runs it: the merges file
 * read into bpe_ranks, the bytes_to_unicode alphabet, and CLIPTokenizer.bpe
 * (repeatedly merge every occurrence of the lowest-ranked adjacent pair, the
 * last symbol of a word carrying "</w>"). Symbols are interned strings, so
 * the merge loop compares integers. Also the string -> int64 hash map the
 * tokenizer's vocabularies use. */
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "core/text/text_internal.h"

/* ---- string map --------------------------------------------------------- */

struct dfx__strmap_slot {
    char *key;      /* NULL: empty */
    size_t len;
    uint64_t hash;
    int64_t value;
};

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

void dfx__strmap_fini(dfx__strmap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    *m = (dfx__strmap){0};
}

static struct dfx__strmap_slot *find_slot(struct dfx__strmap_slot *slots, size_t cap, const char *key,
                                          size_t len, uint64_t h)
{
    for (size_t i = h & (cap - 1);; i = (i + 1) & (cap - 1)) {
        struct dfx__strmap_slot *s = &slots[i];
        if (!s->key || (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0))
            return s;
    }
}

dfx_status dfx__strmap_put(dfx__strmap *m, const char *key, size_t len, int64_t value)
{
    if (2 * (m->count + 1) > m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 64;
        struct dfx__strmap_slot *slots = calloc(cap, sizeof *slots);
        if (!slots)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
        for (size_t i = 0; i < m->cap; i++) {
            struct dfx__strmap_slot *s = &m->slots[i];
            if (s->key)
                *find_slot(slots, cap, s->key, s->len, s->hash) = *s;
        }
        free(m->slots);
        m->slots = slots;
        m->cap = cap;
    }
    uint64_t h = hash_bytes(key, len);
    struct dfx__strmap_slot *s = find_slot(m->slots, m->cap, key, len, h);
    if (!s->key) {
        char *k = malloc(len + 1);
        if (!k)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
        memcpy(k, key, len);
        k[len] = '\0';
        *s = (struct dfx__strmap_slot){k, len, h, value};
        m->count++;
    } else {
        s->value = value;
    }
    return DFX_OK;
}

int64_t dfx__strmap_get(const dfx__strmap *m, const char *key, size_t len)
{
    if (!m->cap)
        return -1;
    const struct dfx__strmap_slot *s = find_slot(m->slots, m->cap, key, len, hash_bytes(key, len));
    return s->key ? s->value : -1;
}

void dfx__strmap_each(const dfx__strmap *m, bool (*fn)(void *ctx, const char *key, size_t len, int64_t value),
                      void *ctx)
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key && !fn(ctx, m->slots[i].key, m->slots[i].len, m->slots[i].value))
            return;
}

/* ---- the byte alphabet -------------------------------------------------- */

/* bytes_to_unicode (tokenization_clip.py): the printable bytes '!'..'~',
 * 0xA1..0xAC and 0xAE..0xFF stand for themselves; the other 68 take the code
 * points 256, 257, ... in byte order. */
uint32_t dfx__bpe_byte_char(uint8_t b)
{
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)
        return b;
    /* count the non-printable bytes below b */
    uint32_t n = b <= 0x20 ? b : b <= 0xA0 ? 0x21 + (b - 0x7F) : 0x21 + 0x22;
    return 256 + n;
}

/* ---- symbols and ranks ------------------------------------------------- */

struct dfx__bpe_pair {
    uint64_t key;   /* left << 32 | right, UINT64_MAX: empty */
    int32_t rank, merged;
};

void dfx__bpe_fini(dfx__bpe *bpe)
{
    dfx__strmap_fini(&bpe->symbols);
    for (size_t i = 0; i < bpe->nsymbols; i++)
        free(bpe->names[i]);
    free(bpe->names);
    free(bpe->pairs);
    free(bpe->merged);
    *bpe = (dfx__bpe){0};
}

static dfx_status intern(dfx__bpe *bpe, const char *s, size_t len, int32_t *id)
{
    int64_t have = dfx__strmap_get(&bpe->symbols, s, len);
    if (have >= 0) {
        *id = (int32_t)have;
        return DFX_OK;
    }
    if (bpe->nsymbols >= INT32_MAX)
        return dfx_error_set(DFX_ERR_RANGE, "tokenizer: too many BPE symbols");
    if (bpe->nsymbols == bpe->cap_symbols) {
        size_t cap = bpe->cap_symbols ? 2 * bpe->cap_symbols : 1024;
        char **names = realloc(bpe->names, cap * sizeof *names);
        if (!names)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
        bpe->names = names;
        bpe->cap_symbols = cap;
    }
    char *name = malloc(len + 1);
    if (!name)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
    memcpy(name, s, len);
    name[len] = '\0';
    dfx_status st = dfx__strmap_put(&bpe->symbols, s, len, (int64_t)bpe->nsymbols);
    if (st != DFX_OK) {
        free(name);
        return st;
    }
    bpe->names[bpe->nsymbols] = name;
    *id = (int32_t)bpe->nsymbols++;
    return DFX_OK;
}

const char *dfx__bpe_symbol(const dfx__bpe *bpe, int32_t sym)
{
    return bpe->names[sym];
}

static uint64_t pair_key(int32_t a, int32_t b)
{
    return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}

static struct dfx__bpe_pair *pair_slot(struct dfx__bpe_pair *pairs, size_t cap, uint64_t key)
{
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    for (size_t i = (size_t)(h >> 32) & (cap - 1);; i = (i + 1) & (cap - 1))
        if (pairs[i].key == key || pairs[i].key == UINT64_MAX)
            return &pairs[i];
}

static dfx_status put_pair(dfx__bpe *bpe, int32_t a, int32_t b, int32_t rank, int32_t merged)
{
    if (2 * (bpe->npairs + 1) > bpe->cap_pairs) {
        size_t cap = bpe->cap_pairs ? 2 * bpe->cap_pairs : 1024;
        struct dfx__bpe_pair *pairs = malloc(cap * sizeof *pairs);
        if (!pairs)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
        for (size_t i = 0; i < cap; i++)
            pairs[i].key = UINT64_MAX;
        for (size_t i = 0; i < bpe->cap_pairs; i++)
            if (bpe->pairs[i].key != UINT64_MAX)
                *pair_slot(pairs, cap, bpe->pairs[i].key) = bpe->pairs[i];
        free(bpe->pairs);
        bpe->pairs = pairs;
        bpe->cap_pairs = cap;
    }
    uint64_t key = pair_key(a, b);
    struct dfx__bpe_pair *p = pair_slot(bpe->pairs, bpe->cap_pairs, key);
    if (p->key == UINT64_MAX)
        bpe->npairs++;
    /* dict(zip(bpe_merges, range(...))): a repeated pair keeps its last rank */
    *p = (struct dfx__bpe_pair){key, rank, merged};
    return DFX_OK;
}

static const struct dfx__bpe_pair *get_pair(const dfx__bpe *bpe, int32_t a, int32_t b)
{
    if (!bpe->cap_pairs)
        return NULL;
    const struct dfx__bpe_pair *p = pair_slot(bpe->pairs, bpe->cap_pairs, pair_key(a, b));
    return p->key == UINT64_MAX ? NULL : p;
}

/* CLIPTokenizer reads merges[1 : 49152 - 256 - 2 + 1] */
enum { MAX_MERGES = 49152 - 256 - 2 };

static dfx_status intern_cps(dfx__bpe *bpe, const uint32_t *c, size_t n, const char *suffix, int32_t *id)
{
    size_t slen = suffix ? strlen(suffix) : 0;
    char *buf = malloc(4 * n + slen + 1);
    if (!buf)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += dfx__utf8_put(c[i], (unsigned char *)buf + len);
    memcpy(buf + len, suffix ? suffix : "", slen);
    dfx_status st = intern(bpe, buf, len + slen, id);
    free(buf);
    return st;
}

static dfx_status init_alphabet(dfx__bpe *bpe)
{
    for (int b = 0; b < 256; b++) {
        uint32_t c = dfx__bpe_byte_char((uint8_t)b);
        dfx_status st = intern_cps(bpe, &c, 1, NULL, &bpe->byte_sym[b]);
        if (st == DFX_OK)
            st = intern_cps(bpe, &c, 1, "</w>", &bpe->byte_end_sym[b]);
        if (st != DFX_OK)
            return st;
    }
    return DFX_OK;
}

/* One merges line split on whitespace (str.split()): parts[k] = [b, e). */
static size_t split_line(const uint32_t *c, size_t n, size_t parts[3][2])
{
    size_t np = 0, i = 0;
    while (i < n) {
        while (i < n && dfx__uset_has(&dfx__py_space, c[i]))
            i++;
        if (i == n)
            break;
        size_t b = i;
        while (i < n && !dfx__uset_has(&dfx__py_space, c[i]))
            i++;
        if (np < 3) {
            parts[np][0] = b;
            parts[np][1] = i;
        }
        np++;
    }
    return np;
}

dfx_status dfx__bpe_load_merges(dfx__bpe *bpe, const char *text, size_t len, const char *origin)
{
    dfx__ustr raw = {0}, t = {0};
    int32_t *merged = NULL;
    dfx_status st = dfx__utf8_decode(text, len, &raw);
    if (st != DFX_OK) {
        dfx_error_prefix(st, "%s: ", origin);
        goto done;
    }
    /* open(..., encoding="utf-8") reads with universal newlines */
    for (size_t i = 0; i < raw.n; i++) {
        if (raw.c[i] == '\r') {
            dfx__ustr_push(&t, '\n');
            if (i + 1 < raw.n && raw.c[i + 1] == '\n')
                i++;
        } else {
            dfx__ustr_push(&t, raw.c[i]);
        }
    }
    if ((st = dfx__ustr_status(&t)) != DFX_OK || (st = init_alphabet(bpe)) != DFX_OK)
        goto done;
    size_t b, e;
    dfx__unicode_strip(t.c, t.n, &b, &e);
    merged = malloc(MAX_MERGES * sizeof *merged);
    if (!merged) {
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
        goto done;
    }
    size_t line = 0, nmerges = 0;
    for (size_t i = b; i <= e && nmerges < MAX_MERGES; line++) {
        size_t j = i;
        while (j < e && t.c[j] != '\n')
            j++;
        if (line > 0) {
            size_t parts[3][2];
            int32_t id = -1;
            if (split_line(t.c + i, j - i, parts) == 2) {
                int32_t l, r;
                const uint32_t *c = t.c + i;
                if ((st = intern_cps(bpe, c + parts[0][0], parts[0][1] - parts[0][0], NULL, &l)) != DFX_OK ||
                    (st = intern_cps(bpe, c + parts[1][0], parts[1][1] - parts[1][0], NULL, &r)) != DFX_OK)
                    goto done;
                /* the merged symbol: the two parts' strings joined */
                size_t ll = strlen(bpe->names[l]), rl = strlen(bpe->names[r]);
                char *joined = malloc(ll + rl + 1);
                if (!joined) {
                    st = dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
                    goto done;
                }
                memcpy(joined, bpe->names[l], ll);
                memcpy(joined + ll, bpe->names[r], rl);
                st = intern(bpe, joined, ll + rl, &id);
                free(joined);
                if (st != DFX_OK || (st = put_pair(bpe, l, r, (int32_t)nmerges, id)) != DFX_OK)
                    goto done;
            }
            merged[nmerges++] = id;
        }
        i = j + 1;
    }
    bpe->merged = merged;
    bpe->nmerges = nmerges;
    merged = NULL;
done:
    free(merged);
    dfx__ustr_fini(&raw);
    dfx__ustr_fini(&t);
    return st;
}

/* ---- CLIPTokenizer.bpe ---------------------------------------------------- */

dfx_status dfx__bpe_word(const dfx__bpe *bpe, const unsigned char *bytes, size_t len, int32_t **syms,
                         size_t *nsyms)
{
    *syms = NULL;
    *nsyms = 0;
    if (len == 0)
        return DFX_OK;
    /* word and its pair ranks (INT32_MAX: not a merge), double-buffered */
    int32_t *w = malloc(len * sizeof *w), *w2 = malloc(len * sizeof *w2);
    int32_t *rank = malloc(len * sizeof *rank), *rank2 = malloc(len * sizeof *rank2);
    size_t *src = malloc(len * sizeof *src);
    if (!w || !w2 || !rank || !rank2 || !src) {
        free(w);
        free(w2);
        free(rank);
        free(rank2);
        free(src);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
    }
    size_t m = len;
    for (size_t i = 0; i < len; i++)
        w[i] = i + 1 < len ? bpe->byte_sym[bytes[i]] : bpe->byte_end_sym[bytes[i]];
    for (size_t i = 0; i + 1 < m; i++) {
        const struct dfx__bpe_pair *p = get_pair(bpe, w[i], w[i + 1]);
        rank[i] = p ? p->rank : INT32_MAX;
    }
    while (m > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < m; i++)
            if (rank[i] < rank[best])
                best = i;
        if (rank[best] == INT32_MAX)
            break;
        /* ranks are unique per pair, so the lowest rank names one pair;
         * merge each of its occurrences, left to right */
        int32_t a = w[best], b = w[best + 1];
        int32_t merged = get_pair(bpe, a, b)->merged;
        size_t n2 = 0;
        for (size_t i = 0; i < m;) {
            if (i + 1 < m && w[i] == a && w[i + 1] == b) {
                src[n2] = SIZE_MAX;
                w2[n2++] = merged;
                i += 2;
            } else {
                src[n2] = i;
                w2[n2++] = w[i++];
            }
        }
        /* a pair of two untouched, still adjacent symbols keeps its rank */
        for (size_t j = 0; j + 1 < n2; j++) {
            if (src[j] != SIZE_MAX && src[j + 1] == src[j] + 1) {
                rank2[j] = rank[src[j]];
            } else {
                const struct dfx__bpe_pair *p = get_pair(bpe, w2[j], w2[j + 1]);
                rank2[j] = p ? p->rank : INT32_MAX;
            }
        }
        int32_t *t = w;
        w = w2;
        w2 = t;
        t = rank;
        rank = rank2;
        rank2 = t;
        m = n2;
    }
    free(w2);
    free(rank);
    free(rank2);
    free(src);
    *syms = w;
    *nsyms = m;
    return DFX_OK;
}
