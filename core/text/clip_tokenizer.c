/* dfx_clip_tokenizer: transformers' CLIPTokenizer (the slow, Python one of
 * transformers 4.38) as the SD pipelines call it. Loading follows
 * PreTrainedTokenizerBase.from_pretrained (vocab.json, merges.txt, the
 * special and added tokens of tokenizer_config.json / special_tokens_map.json);
 * encoding follows PreTrainedTokenizer.tokenize (the prompt split around the
 * added tokens, each other piece through CLIPTokenizer._tokenize: clean-up,
 * pre-tokenizer, BPE) and then the ids, truncation and padding. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "core/internal.h"
#include "core/text/text_internal.h"
#include "dfx/text.h"

/* ids dfx accepts in a vocabulary: far more than any CLIP vocabulary, few
 * enough that the id -> token table stays small */
enum { MAX_ID = 1 << 24 };
/* model_max_length dfx accepts: at least bos + one token + eos */
enum { MIN_MAX_LENGTH = 3, MAX_MAX_LENGTH = 1 << 20 };
/* CLIP's text encoders have 77 positions (CLIPTokenizer's
 * max_model_input_sizes; every SD tokenizer_config.json says so) */
enum { CLIP_MAX_LENGTH = 77 };

typedef struct added_token {
    char *content;          /* UTF-8 */
    uint32_t *cps;          /* the same as code points, for matching */
    size_t ncps;
    int64_t id;
    bool lstrip, rstrip, single_word;
} added_token;

struct dfx_clip_tokenizer {
    dfx__strmap vocab;      /* CLIPTokenizer.encoder */
    char **decoder;         /* id -> vocabulary token (NULL: none) */
    size_t ndecoder;
    dfx__bpe bpe;
    int64_t *sym_ids;       /* BPE symbol -> id, -1: none */
    added_token *added;     /* _added_tokens_decoder */
    size_t nadded;
    dfx__strmap added_ids;  /* _added_tokens_encoder */
    int64_t bos, eos, pad;
    int64_t unk_vocab;      /* encoder.get(unk_token): the fallback of _convert_token_to_id */
    char *unk;
    int64_t max_length;
};

/* A special token as tokenizer_config.json / special_tokens_map.json give
 * it: a string, or an AddedToken's fields. */
typedef struct spec {
    char *content;          /* NULL: not given */
    bool lstrip, rstrip, single_word;
} spec;

static void spec_fini(spec *s)
{
    free(s->content);
    *s = (spec){0};
}

static dfx_status spec_set(spec *s, const char *content)
{
    char *c = dfx__strdup(content);
    if (!c)
        return DFX_ERR_NO_MEMORY;
    free(s->content);
    *s = (spec){c, false, false, false};
    return DFX_OK;
}

/* ---- building ---------------------------------------------------------- */

static dfx_status add_vocab(dfx_clip_tokenizer *tok, const char *key, size_t len, int64_t id, const char *origin)
{
    if (id < 0 || id >= MAX_ID)
        return dfx_error_set(DFX_ERR_RANGE, "%s: token '%s': id %lld is outside [0, %d)", origin, key,
                             (long long)id, MAX_ID);
    dfx_status st = dfx__strmap_put(&tok->vocab, key, len, id);
    if (st != DFX_OK)
        return st;
    if ((size_t)id >= tok->ndecoder) {
        size_t n = tok->ndecoder ? tok->ndecoder : 1024;
        while (n <= (size_t)id)
            n *= 2;
        char **d = realloc(tok->decoder, n * sizeof *d);
        if (!d)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
        memset(d + tok->ndecoder, 0, (n - tok->ndecoder) * sizeof *d);
        tok->decoder = d;
        tok->ndecoder = n;
    }
    char *k = malloc(len + 1);
    if (!k)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
    memcpy(k, key, len);
    k[len] = '\0';
    free(tok->decoder[id]);
    tok->decoder[id] = k;   /* {v: k for k, v in encoder.items()}: the later key wins */
    return DFX_OK;
}

static dfx_status load_vocab_json(dfx_clip_tokenizer *tok, const char *path)
{
    dfx_json *doc;
    dfx_status st = dfx_json_parse_file(path, &doc);
    if (st != DFX_OK)
        return st;
    if (dfx_json_type_of(doc) != DFX_JSON_OBJECT) {
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: expected an object of token -> id", path);
    } else {
        for (int64_t i = 0; i < dfx_json_size(doc) && st == DFX_OK; i++) {
            const dfx_json *v = dfx_json_value_at(doc, i);
            const char *key = dfx_json_key_at(doc, i);
            int64_t id;
            if (!dfx_json_int(v, &id))
                st = dfx_error_set(DFX_ERR_FORMAT, "%s:%d:%d: token '%s': expected an integer id", path,
                                   dfx_json_line(v), dfx_json_column(v), key);
            else
                st = add_vocab(tok, key, dfx__json_key_len(doc, i), id, path);
        }
    }
    dfx_json_destroy(doc);
    return st;
}

static int64_t added_lookup(const dfx_clip_tokenizer *tok, const char *s, size_t len)
{
    return dfx__strmap_get(&tok->added_ids, s, len);
}

/* Adds (or, for content already added, replaces) an added token, as
 * _added_tokens_decoder[id] = token does. Empty tokens are never matched
 * (Trie.add skips them) and are left out. */
static dfx_status add_added(dfx_clip_tokenizer *tok, const spec *sp, int64_t id, const char *origin)
{
    size_t len = strlen(sp->content);
    if (len == 0)
        return DFX_OK;
    if (id < 0 || id >= MAX_ID)
        return dfx_error_set(DFX_ERR_RANGE, "%s: added token '%s': id %lld is outside [0, %d)", origin,
                             sp->content, (long long)id, MAX_ID);
    dfx__ustr cps = {0};
    dfx_status st = dfx__utf8_decode(sp->content, len, &cps);
    if (st != DFX_OK) {
        dfx__ustr_fini(&cps);
        return dfx_error_prefix(st, "%s: added token: ", origin);
    }
    int64_t have = added_lookup(tok, sp->content, len);
    added_token *a = NULL;
    for (size_t i = 0; i < tok->nadded && have >= 0; i++)
        if (strcmp(tok->added[i].content, sp->content) == 0)
            a = &tok->added[i];
    if (!a) {
        added_token *t = realloc(tok->added, (tok->nadded + 1) * sizeof *t);
        if (!t) {
            dfx__ustr_fini(&cps);
            return dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
        }
        tok->added = t;
        a = &tok->added[tok->nadded];
        *a = (added_token){0};
        if (!(a->content = dfx__strdup(sp->content))) {
            dfx__ustr_fini(&cps);
            return DFX_ERR_NO_MEMORY;
        }
        tok->nadded++;
    }
    free(a->cps);
    a->cps = cps.c;
    a->ncps = cps.n;
    a->id = id;
    a->lstrip = sp->lstrip;
    a->rstrip = sp->rstrip;
    a->single_word = sp->single_word;
    return dfx__strmap_put(&tok->added_ids, sp->content, len, id);
}

/* Reads a special token (a string, or an AddedToken's fields) from v. */
static dfx_status read_spec(const dfx_json *v, const char *origin, const char *what, spec *out)
{
    const dfx_json *content = v;
    if (dfx_json_type_of(v) == DFX_JSON_OBJECT)
        content = dfx_json_get(v, "content");
    if (!content || dfx_json_type_of(content) != DFX_JSON_STRING)
        return dfx_error_set(DFX_ERR_FORMAT, "%s:%d:%d: %s: expected a string or an object with a \"content\" string",
                             origin, dfx_json_line(v), dfx_json_column(v), what);
    if (strlen(dfx_json_string(content)) != dfx_json_string_len(content))
        return dfx_error_set(DFX_ERR_FORMAT, "%s:%d:%d: %s: the token holds a NUL character", origin,
                             dfx_json_line(v), dfx_json_column(v), what);
    dfx_status st = spec_set(out, dfx_json_string(content));
    if (st != DFX_OK || dfx_json_type_of(v) != DFX_JSON_OBJECT)
        return st;
    static const char *const flags[] = {"lstrip", "rstrip", "single_word"};
    bool *dst[] = {&out->lstrip, &out->rstrip, &out->single_word};
    for (int i = 0; i < 3; i++) {
        const dfx_json *f = dfx_json_get(v, flags[i]);
        if (!f)
            continue;
        if (dfx_json_type_of(f) != DFX_JSON_BOOL)
            return dfx_error_set(DFX_ERR_FORMAT, "%s:%d:%d: %s: \"%s\" must be true or false", origin,
                                 dfx_json_line(f), dfx_json_column(f), what, flags[i]);
        *dst[i] = dfx_json_bool(f);
    }
    return DFX_OK;
}

enum { SPEC_BOS, SPEC_EOS, SPEC_UNK, SPEC_PAD, SPEC_COUNT };
static const char *const spec_keys[SPEC_COUNT] = {"bos_token", "eos_token", "unk_token", "pad_token"};

/* The special tokens of a config object (tokenizer_config.json, or the
 * legacy special_tokens_map.json that overrides it). */
static dfx_status read_specs(const dfx_json *cfg, const char *origin, spec specs[SPEC_COUNT], spec **extra,
                             size_t *nextra)
{
    for (int k = 0; k < SPEC_COUNT; k++) {
        const dfx_json *v = dfx_json_get(cfg, spec_keys[k]);
        if (!v)
            continue;
        if (dfx_json_type_of(v) == DFX_JSON_NULL)
            return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s:%d:%d: %s is null: CLIP needs every special token",
                                 origin, dfx_json_line(v), dfx_json_column(v), spec_keys[k]);
        dfx_status st = read_spec(v, origin, spec_keys[k], &specs[k]);
        if (st != DFX_OK)
            return st;
    }
    const dfx_json *list = dfx_json_get(cfg, "additional_special_tokens");
    if (list && dfx_json_type_of(list) != DFX_JSON_NULL) {
        if (dfx_json_type_of(list) != DFX_JSON_ARRAY)
            return dfx_error_set(DFX_ERR_FORMAT, "%s:%d:%d: additional_special_tokens: expected a list", origin,
                                 dfx_json_line(list), dfx_json_column(list));
        for (int64_t i = 0; i < dfx_json_size(list); i++) {
            spec *t = realloc(*extra, (*nextra + 1) * sizeof *t);
            if (!t)
                return dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
            *extra = t;
            t[*nextra] = (spec){0};
            dfx_status st = read_spec(dfx_json_at(list, i), origin, "additional_special_tokens", &t[(*nextra)++]);
            if (st != DFX_OK)
                return st;
        }
    }
    return DFX_OK;
}

/* Registers the special tokens as PreTrainedTokenizer.__init__ does
 * (_add_tokens(all_special_tokens_extended, special_tokens=True)): one not
 * already added becomes an added token with its vocabulary id, or, absent
 * from vocab.json, a new id after the vocabulary and the added tokens. Then
 * resolves the ids and the id of every BPE symbol. */
static dfx_status finish(dfx_clip_tokenizer *tok, spec specs[SPEC_COUNT], const spec *extra, size_t nextra,
                         const char *origin)
{
    int64_t next_id = (int64_t)tok->vocab.count;
    for (size_t i = 0; i < tok->nadded; i++)
        if (dfx__strmap_get(&tok->vocab, tok->added[i].content, strlen(tok->added[i].content)) < 0)
            next_id++;
    for (size_t k = 0; k < SPEC_COUNT + nextra; k++) {
        const spec *sp = k < SPEC_COUNT ? &specs[k] : &extra[k - SPEC_COUNT];
        size_t len = strlen(sp->content);
        if (added_lookup(tok, sp->content, len) >= 0)
            continue;
        int64_t id = dfx__strmap_get(&tok->vocab, sp->content, len);
        dfx_status st = add_added(tok, sp, id >= 0 ? id : next_id, origin);
        if (st != DFX_OK)
            return st;
        if (id < 0 && len)
            next_id++;
    }
    /* convert_tokens_to_ids: the added tokens first, then the vocabulary,
     * then the unknown token's vocabulary id */
    if (!(tok->unk = dfx__strdup(specs[SPEC_UNK].content)))
        return DFX_ERR_NO_MEMORY;
    tok->unk_vocab = dfx__strmap_get(&tok->vocab, tok->unk, strlen(tok->unk));
    int64_t *ids[] = {&tok->bos, &tok->eos, NULL, &tok->pad};
    for (int k = 0; k < SPEC_COUNT; k++) {
        if (!ids[k])
            continue;
        const char *c = specs[k].content;
        int64_t id = added_lookup(tok, c, strlen(c));
        if (id < 0)
            id = tok->unk_vocab;
        if (id < 0)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: %s '%s' is neither in the vocabulary nor the unknown token",
                                 origin, spec_keys[k], c);
        *ids[k] = id;
    }
    tok->sym_ids = malloc((tok->bpe.nsymbols ? tok->bpe.nsymbols : 1) * sizeof *tok->sym_ids);
    if (!tok->sym_ids)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
    for (size_t i = 0; i < tok->bpe.nsymbols; i++) {
        const char *name = dfx__bpe_symbol(&tok->bpe, (int32_t)i);
        size_t len = strlen(name);
        int64_t id = added_lookup(tok, name, len);
        if (id < 0)
            id = dfx__strmap_get(&tok->vocab, name, len);
        tok->sym_ids[i] = id >= 0 ? id : tok->unk_vocab;
    }
    return DFX_OK;
}

static void default_specs(spec specs[SPEC_COUNT])
{
    /* CLIPTokenizer.__init__'s defaults */
    spec_set(&specs[SPEC_BOS], "<|startoftext|>");
    spec_set(&specs[SPEC_EOS], "<|endoftext|>");
    spec_set(&specs[SPEC_UNK], "<|endoftext|>");
    spec_set(&specs[SPEC_PAD], "<|endoftext|>");
}

void dfx_clip_tokenizer_close(dfx_clip_tokenizer *tok)
{
    if (!tok)
        return;
    dfx__strmap_fini(&tok->vocab);
    for (size_t i = 0; i < tok->ndecoder; i++)
        free(tok->decoder[i]);
    free(tok->decoder);
    dfx__bpe_fini(&tok->bpe);
    free(tok->sym_ids);
    for (size_t i = 0; i < tok->nadded; i++) {
        free(tok->added[i].content);
        free(tok->added[i].cps);
    }
    free(tok->added);
    dfx__strmap_fini(&tok->added_ids);
    free(tok->unk);
    free(tok);
}

/* ---- opening a folder --------------------------------------------------- */

static char *join(const char *folder, const char *name)
{
    char *p = dfx__path_join(folder, name);
    if (!p)
        dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
    return p;
}

/* Parses folder/name when it exists: *doc is NULL when it does not. */
static dfx_status parse_optional(const char *folder, const char *name, dfx_json **doc, char **path)
{
    *doc = NULL;
    if (!(*path = join(folder, name)))
        return DFX_ERR_NO_MEMORY;
    struct stat sb;
    if (stat(*path, &sb) != 0 && errno == ENOENT)
        return DFX_OK;
    dfx_status st = dfx_json_parse_file(*path, doc);
    if (st == DFX_OK && dfx_json_type_of(*doc) != DFX_JSON_OBJECT)
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: expected a JSON object", *path);
    return st;
}

static dfx_status read_max_length(dfx_clip_tokenizer *tok, const dfx_json *cfg, const char *origin)
{
    const dfx_json *v = dfx_json_get(cfg, "model_max_length");
    for (int k = 0; k < 2; k++) {
        const char *key = k ? "truncation_side" : "padding_side";
        const dfx_json *side = dfx_json_get(cfg, key);
        if (side && (dfx_json_type_of(side) != DFX_JSON_STRING || strcmp(dfx_json_string(side), "right") != 0))
            return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s:%d:%d: %s: only \"right\" is supported", origin,
                                 dfx_json_line(side), dfx_json_column(side), key);
    }
    if (!v)
        return DFX_OK;
    double d = dfx_json_number(v);
    if (!(d >= MIN_MAX_LENGTH && d <= MAX_MAX_LENGTH && d == (double)(int64_t)d))
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s:%d:%d: model_max_length must be an integer in [%d, %d]",
                             origin, dfx_json_line(v), dfx_json_column(v), MIN_MAX_LENGTH, MAX_MAX_LENGTH);
    tok->max_length = (int64_t)d;
    return DFX_OK;
}

/* The added tokens a folder declares: tokenizer_config.json's
 * added_tokens_decoder, or (legacy) added_tokens.json. *modern tells which,
 * since special_tokens_map.json only counts in the legacy layout. */
static dfx_status read_added(dfx_clip_tokenizer *tok, const dfx_json *cfg, const char *cfg_path, const char *folder,
                             bool *modern)
{
    const dfx_json *dec = cfg ? dfx_json_get(cfg, "added_tokens_decoder") : NULL;
    *modern = dec != NULL;
    dfx_status st = DFX_OK;
    if (dec) {
        if (dfx_json_type_of(dec) != DFX_JSON_OBJECT)
            return dfx_error_set(DFX_ERR_FORMAT, "%s:%d:%d: added_tokens_decoder: expected an object", cfg_path,
                                 dfx_json_line(dec), dfx_json_column(dec));
        for (int64_t i = 0; i < dfx_json_size(dec) && st == DFX_OK; i++) {
            const char *key = dfx_json_key_at(dec, i);
            char *end;
            long long id = strtoll(key, &end, 10);
            const dfx_json *v = dfx_json_value_at(dec, i);
            if (!*key || *end || key[0] == '-' || key[0] == '+' || key[0] == ' ')
                return dfx_error_set(DFX_ERR_FORMAT, "%s:%d:%d: added_tokens_decoder: key '%s' is not an id",
                                     cfg_path, dfx_json_line(v), dfx_json_column(v), key);
            spec sp = {0};
            st = read_spec(v, cfg_path, "added_tokens_decoder", &sp);
            if (st == DFX_OK)
                st = add_added(tok, &sp, id, cfg_path);
            spec_fini(&sp);
        }
        return st;
    }
    dfx_json *doc;
    char *path;
    st = parse_optional(folder, "added_tokens.json", &doc, &path);
    for (int64_t i = 0; doc && i < dfx_json_size(doc) && st == DFX_OK; i++) {
        const dfx_json *v = dfx_json_value_at(doc, i);
        int64_t id;
        spec sp = {0};
        if (!dfx_json_int(v, &id)) {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s:%d:%d: expected an integer id", path, dfx_json_line(v),
                               dfx_json_column(v));
        } else if ((st = spec_set(&sp, dfx_json_key_at(doc, i))) == DFX_OK) {
            st = add_added(tok, &sp, id, path);
        }
        spec_fini(&sp);
    }
    dfx_json_destroy(doc);
    free(path);
    return st;
}

dfx_status dfx_clip_tokenizer_open(dfx_clip_tokenizer **out, const char *folder)
{
    if (!out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_clip_tokenizer_open: out is NULL");
    *out = NULL;
    if (!folder)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_clip_tokenizer_open: folder is NULL");
    dfx_clip_tokenizer *tok = calloc(1, sizeof *tok);
    char *vocab_path = join(folder, "vocab.json"), *merges_path = join(folder, "merges.txt");
    char *cfg_path = NULL, *map_path = NULL, *text = NULL;
    dfx_json *cfg = NULL, *map = NULL;
    spec specs[SPEC_COUNT] = {{0}}, *extra = NULL;
    size_t nextra = 0, len;
    bool modern = false;
    dfx_status st = DFX_OK;
    if (!tok || !vocab_path || !merges_path)
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
    if (st == DFX_OK) {
        tok->max_length = CLIP_MAX_LENGTH;
        default_specs(specs);
        for (int k = 0; k < SPEC_COUNT; k++)
            if (!specs[k].content)
                st = dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
    }
    if (st == DFX_OK)
        st = load_vocab_json(tok, vocab_path);
    if (st == DFX_OK)
        st = dfx__read_file(merges_path, &text, &len);
    if (st == DFX_OK)
        st = dfx__bpe_load_merges(&tok->bpe, text, len, merges_path);
    if (st == DFX_OK)
        st = parse_optional(folder, "tokenizer_config.json", &cfg, &cfg_path);
    if (st == DFX_OK && cfg)
        st = read_max_length(tok, cfg, cfg_path);
    if (st == DFX_OK)
        st = read_added(tok, cfg, cfg_path, folder, &modern);
    if (st == DFX_OK && cfg)
        st = read_specs(cfg, cfg_path, specs, &extra, &nextra);
    /* from_pretrained reads special_tokens_map.json only for folders
     * without added_tokens_decoder (written before transformers 4.34); its
     * values then override tokenizer_config.json's */
    if (st == DFX_OK && !modern)
        st = parse_optional(folder, "special_tokens_map.json", &map, &map_path);
    if (st == DFX_OK && map)
        st = read_specs(map, map_path, specs, &extra, &nextra);
    if (st == DFX_OK)
        st = finish(tok, specs, extra, nextra, cfg_path ? cfg_path : vocab_path);
    for (int k = 0; k < SPEC_COUNT; k++)
        spec_fini(&specs[k]);
    for (size_t i = 0; i < nextra; i++)
        spec_fini(&extra[i]);
    free(extra);
    dfx_json_destroy(cfg);
    dfx_json_destroy(map);
    free(text);
    free(vocab_path);
    free(merges_path);
    free(cfg_path);
    free(map_path);
    if (st != DFX_OK) {
        dfx_clip_tokenizer_close(tok);
        return st;
    }
    *out = tok;
    return DFX_OK;
}

/* ---- OpenAI's vocabulary ----------------------------------------------- */

static dfx_status read_gz(const char *path, char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz)
        return dfx_error_set(DFX_ERR_NOT_FOUND, "%s: cannot open", path);
    size_t cap = 1 << 22, n = 0;
    char *buf = malloc(cap + 1);
    dfx_status st = buf ? DFX_OK : dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
    while (st == DFX_OK) {
        if (n == cap) {
            char *b = cap <= (size_t)1 << 28 ? realloc(buf, 2 * cap + 1) : NULL;
            if (!b) {
                st = dfx_error_set(DFX_ERR_NO_MEMORY, "%s: more than 256 MiB, or out of memory", path);
                break;
            }
            buf = b;
            cap *= 2;
        }
        unsigned want = cap - n > (1u << 30) ? 1u << 30 : (unsigned)(cap - n);
        int got = gzread(gz, buf + n, want);
        if (got < 0) {
            int err;
            const char *msg = gzerror(gz, &err);
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: %s", path, msg ? msg : "read failed");
        } else if (got == 0) {
            break;
        } else {
            n += (size_t)got;
        }
    }
    gzclose(gz);
    if (st != DFX_OK) {
        free(buf);
        return st;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return DFX_OK;
}

dfx_status dfx__clip_tokenizer_open_bpe_file(dfx_clip_tokenizer **out, const char *path, bool pad_with_bang)
{
    *out = NULL;
    dfx_clip_tokenizer *tok = calloc(1, sizeof *tok);
    spec specs[SPEC_COUNT] = {{0}};
    char *text = NULL;
    size_t len;
    dfx_status st = tok ? DFX_OK : dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
    if (st == DFX_OK) {
        tok->max_length = CLIP_MAX_LENGTH;
        default_specs(specs);
        if (pad_with_bang)
            spec_set(&specs[SPEC_PAD], "!");
        for (int k = 0; k < SPEC_COUNT; k++)
            if (!specs[k].content)
                st = dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
    }
    if (st == DFX_OK)
        st = read_gz(path, &text, &len);
    if (st == DFX_OK)
        st = dfx__bpe_load_merges(&tok->bpe, text, len, path);
    /* openai/CLIP's SimpleTokenizer: vocab = the byte symbols in
     * bytes_to_unicode's order, the same with "</w>", each merge joined,
     * then the two special tokens; the id is the position (the later of
     * repeated strings wins, as in dict(zip(vocab, range(len(vocab))))) */
    int64_t id = 0;
    static const int ranges[][2] = {{0x21, 0x7E}, {0xA1, 0xAC}, {0xAE, 0xFF}};
    int order[256], n = 0;
    for (int r = 0; r < 3; r++)
        for (int b = ranges[r][0]; b <= ranges[r][1]; b++)
            order[n++] = b;
    for (int b = 0; b < 256; b++)
        if (dfx__bpe_byte_char((uint8_t)b) >= 256)
            order[n++] = b;
    for (int pass = 0; pass < 2 && st == DFX_OK; pass++) {
        for (int i = 0; i < 256 && st == DFX_OK; i++) {
            const char *s = dfx__bpe_symbol(&tok->bpe, pass ? tok->bpe.byte_end_sym[order[i]]
                                                            : tok->bpe.byte_sym[order[i]]);
            st = add_vocab(tok, s, strlen(s), id++, path);
        }
    }
    for (size_t i = 0; i < tok->bpe.nmerges && st == DFX_OK; i++) {
        if (tok->bpe.merged[i] < 0) {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: merge line %zu is not two symbols", path, i + 2);
            break;
        }
        const char *s = dfx__bpe_symbol(&tok->bpe, tok->bpe.merged[i]);
        st = add_vocab(tok, s, strlen(s), id++, path);
    }
    if (st == DFX_OK)
        st = add_vocab(tok, "<|startoftext|>", 15, id++, path);
    if (st == DFX_OK)
        st = add_vocab(tok, "<|endoftext|>", 13, id++, path);
    if (st == DFX_OK)
        st = finish(tok, specs, NULL, 0, path);
    for (int k = 0; k < SPEC_COUNT; k++)
        spec_fini(&specs[k]);
    free(text);
    if (st != DFX_OK) {
        dfx_clip_tokenizer_close(tok);
        return st;
    }
    *out = tok;
    return DFX_OK;
}

dfx_status dfx_clip_tokenizer_open_default(dfx_clip_tokenizer **out, bool pad_with_bang)
{
    if (!out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_clip_tokenizer_open_default: out is NULL");
    char *path = join(dfx__data_dir(), "clip/bpe_simple_vocab_16e6.txt.gz");
    if (!path)
        return DFX_ERR_NO_MEMORY;
    dfx_status st = dfx__clip_tokenizer_open_bpe_file(out, path, pad_with_bang);
    free(path);
    return st;
}

/* ---- accessors ---------------------------------------------------------- */

int64_t dfx_clip_tokenizer_vocab_size(const dfx_clip_tokenizer *tok)
{
    return (int64_t)tok->vocab.count;
}

int64_t dfx_clip_tokenizer_bos(const dfx_clip_tokenizer *tok)
{
    return tok->bos;
}

int64_t dfx_clip_tokenizer_eos(const dfx_clip_tokenizer *tok)
{
    return tok->eos;
}

int64_t dfx_clip_tokenizer_pad(const dfx_clip_tokenizer *tok)
{
    return tok->pad;
}

int64_t dfx_clip_tokenizer_max_length(const dfx_clip_tokenizer *tok)
{
    return tok->max_length;
}

const char *dfx_clip_tokenizer_token(const dfx_clip_tokenizer *tok, int64_t id)
{
    if (!tok || id < 0)
        return NULL;
    for (size_t i = 0; i < tok->nadded; i++)
        if (tok->added[i].id == id)
            return tok->added[i].content;
    return (uint64_t)id < tok->ndecoder ? tok->decoder[id] : NULL;
}

/* ---- encoding ----------------------------------------------------------- */

typedef struct ids {
    int64_t *v;
    size_t n, cap;
} ids;

static dfx_status ids_push(ids *a, int64_t id)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 64;
        int64_t *v = realloc(a->v, cap * sizeof *v);
        if (!v)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return DFX_OK;
}

/* s as a heap UTF-8 string (NULL when out of memory) */
static char *to_utf8(const uint32_t *s, size_t n, size_t *len)
{
    unsigned char *p = malloc(4 * n + 1);
    if (!p)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += dfx__utf8_put(s[i], p + k);
    p[k] = '\0';
    *len = k;
    return (char *)p;
}

static dfx_status unknown_token(const dfx_clip_tokenizer *tok, const char *s)
{
    return dfx_error_set(DFX_ERR_FORMAT,
                         "tokenizer: token '%s' is not in the vocabulary, nor is the unknown token '%s'", s, tok->unk);
}

/* One pre-token through CLIPTokenizer.bpe and convert_tokens_to_ids. */
static dfx_status encode_word(const dfx_clip_tokenizer *tok, const uint32_t *s, size_t n, ids *out)
{
    size_t len;
    char *utf8 = to_utf8(s, n, &len);
    if (!utf8)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
    dfx_status st = DFX_OK;
    /* CLIPTokenizer.bpe's cache starts out holding the two special tokens,
     * which it returns whole (without "</w>") */
    if (strcmp(utf8, "<|startoftext|>") == 0 || strcmp(utf8, "<|endoftext|>") == 0) {
        int64_t id = added_lookup(tok, utf8, len);
        if (id < 0)
            id = dfx__strmap_get(&tok->vocab, utf8, len);
        if (id < 0)
            id = tok->unk_vocab;
        st = id < 0 ? unknown_token(tok, utf8) : ids_push(out, id);
        free(utf8);
        return st;
    }
    int32_t *syms;
    size_t nsyms;
    st = dfx__bpe_word(&tok->bpe, (const unsigned char *)utf8, len, &syms, &nsyms);
    for (size_t i = 0; i < nsyms && st == DFX_OK; i++) {
        int64_t id = tok->sym_ids[syms[i]];
        st = id < 0 ? unknown_token(tok, dfx__bpe_symbol(&tok->bpe, syms[i])) : ids_push(out, id);
    }
    free(syms);
    free(utf8);
    return st;
}

/* CLIPTokenizer._tokenize on one piece of prompt, then its ids. */
static dfx_status encode_piece(const dfx_clip_tokenizer *tok, const uint32_t *s, size_t n, bool ftfy, ids *out)
{
    dfx__ustr text = {0};
    dfx_status st = dfx__clip_clean_text(s, n, ftfy, &text);
    size_t pos = 0, b, e;
    while (st == DFX_OK && dfx__clip_pretokenize_next(text.c, text.n, &pos, &b, &e))
        st = encode_word(tok, text.c + b, e - b, out);
    dfx__ustr_fini(&text);
    return st;
}

/* The added token whose content is s, or NULL (`token in no_split_token`). */
static const added_token *added_of(const dfx_clip_tokenizer *tok, const dfx__ustr *s)
{
    for (size_t i = 0; i < tok->nadded; i++) {
        const added_token *a = &tok->added[i];
        if (a->ncps == s->n && memcmp(a->cps, s->c, s->n * sizeof *s->c) == 0)
            return a;
    }
    return NULL;
}

typedef struct pieces {
    dfx__ustr *p;
    size_t n, cap;
    bool oom;
} pieces;

static void pieces_add(pieces *ps, const uint32_t *s, size_t n)
{
    if (ps->oom)
        return;
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? 2 * ps->cap : 16;
        dfx__ustr *p = realloc(ps->p, cap * sizeof *p);
        if (!p) {
            ps->oom = true;
            return;
        }
        ps->p = p;
        ps->cap = cap;
    }
    ps->p[ps->n] = (dfx__ustr){0};
    dfx__ustr_append(&ps->p[ps->n], s, n);
    if (ps->p[ps->n++].oom)
        ps->oom = true;
}

/* Trie.split: the text cut around the added tokens, each match the longest
 * added token at the leftmost position where one starts. (transformers'
 * Trie gives the same cuts whenever no added token is a proper infix of
 * another, as for every CLIP tokenizer: the special tokens and "!".) */
static void split_added(const dfx_clip_tokenizer *tok, const uint32_t *s, size_t n, pieces *ps)
{
    size_t start = 0;
    for (size_t i = 0; i < n;) {
        size_t best = 0;
        for (size_t k = 0; k < tok->nadded; k++) {
            const added_token *a = &tok->added[k];
            if (a->ncps > best && a->ncps <= n - i && a->cps[0] == s[i] &&
                memcmp(a->cps, s + i, a->ncps * sizeof *s) == 0)
                best = a->ncps;
        }
        if (!best) {
            i++;
            continue;
        }
        if (i > start)
            pieces_add(ps, s + start, i - start);
        pieces_add(ps, s + i, best);
        i += best;
        start = i;
    }
    if (n > start)
        pieces_add(ps, s + start, n - start);
}

/* s = s[b:e] */
static void ustr_slice(dfx__ustr *s, size_t b, size_t e)
{
    memmove(s->c, s->c + b, (e - b) * sizeof *s->c);
    s->n = e - b;
}

/* PreTrainedTokenizer.tokenize's pass over the pieces for the added
 * tokens' rstrip, lstrip and single_word, in its order and on the pieces as
 * it has changed them so far. */
static void apply_added_flags(const dfx_clip_tokenizer *tok, pieces *ps)
{
    dfx__ustr left = {0}, right = {0};
    for (size_t i = 0; i < ps->n && !ps->oom; i++) {
        const added_token *a = added_of(tok, &ps->p[i]);
        if (!a)
            continue;
        bool has_left = i > 0 && ps->p[i - 1].n, has_right = i + 1 < ps->n && ps->p[i + 1].n;
        dfx__ustr_clear(&left);
        dfx__ustr_clear(&right);
        if (i > 0)
            dfx__ustr_append(&left, ps->p[i - 1].c, ps->p[i - 1].n);
        if (i + 1 < ps->n)
            dfx__ustr_append(&right, ps->p[i + 1].c, ps->p[i + 1].n);
        if (a->rstrip && has_right) {   /* tokens[i + 1] = right.lstrip() */
            size_t b = 0;
            while (b < right.n && dfx__uset_has(&dfx__py_space, right.c[b]))
                b++;
            ustr_slice(&ps->p[i + 1], b, right.n);
        }
        if (a->lstrip && has_left) {    /* tokens[i - 1] = left.rstrip() */
            size_t e = left.n;
            while (e > 0 && dfx__uset_has(&dfx__py_space, left.c[e - 1]))
                e--;
            ustr_slice(&ps->p[i - 1], 0, e);
        }
        if (a->single_word && has_left && left.c[left.n - 1] != ' ') {
            dfx__ustr_append(&ps->p[i - 1], ps->p[i].c, ps->p[i].n);
            dfx__ustr_clear(&ps->p[i]);
        } else if (a->single_word && has_right && right.c[0] != ' ') {
            dfx__ustr joined = {0};
            dfx__ustr_append(&joined, ps->p[i].c, ps->p[i].n);
            dfx__ustr_append(&joined, ps->p[i + 1].c, ps->p[i + 1].n);
            dfx__ustr_swap(&joined, &ps->p[i + 1]);
            dfx__ustr_fini(&joined);
            dfx__ustr_clear(&ps->p[i]);
        }
        for (size_t k = i > 0 ? i - 1 : 0; k <= i + 1 && k < ps->n; k++)
            if (ps->p[k].oom)
                ps->oom = true;
    }
    if (left.oom || right.oom)
        ps->oom = true;
    dfx__ustr_fini(&left);
    dfx__ustr_fini(&right);
}

/* PreTrainedTokenizer.tokenize + convert_tokens_to_ids: the prompt's ids
 * without bos and eos. */
static dfx_status encode_text(const dfx_clip_tokenizer *tok, const char *text, bool ftfy, ids *out)
{
    dfx__ustr s = {0};
    pieces ps = {0};
    dfx_status st = dfx__utf8_decode(text, strlen(text), &s);
    if (st == DFX_OK) {
        split_added(tok, s.c, s.n, &ps);
        apply_added_flags(tok, &ps);
        if (ps.oom)
            st = dfx_error_set(DFX_ERR_NO_MEMORY, "tokenizer: out of memory");
    }
    for (size_t i = 0; i < ps.n && st == DFX_OK; i++) {
        if (!ps.p[i].n)
            continue;
        const added_token *a = added_of(tok, &ps.p[i]);
        st = a ? ids_push(out, a->id) : encode_piece(tok, ps.p[i].c, ps.p[i].n, ftfy, out);
    }
    for (size_t i = 0; i < ps.n; i++)
        dfx__ustr_fini(&ps.p[i]);
    free(ps.p);
    dfx__ustr_fini(&s);
    return st;
}

dfx_status dfx_clip_tokenizer_encode(const dfx_clip_tokenizer *tok, const char *text, bool ftfy, int64_t **ids_out,
                                     int64_t *n)
{
    if (!ids_out || !n)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_clip_tokenizer_encode: ids or n is NULL");
    *ids_out = NULL;
    *n = 0;
    if (!tok || !text)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_clip_tokenizer_encode: tokenizer or text is NULL");
    ids a = {0};
    dfx_status st = ids_push(&a, tok->bos);
    if (st == DFX_OK)
        st = encode_text(tok, text, ftfy, &a);
    if (st == DFX_OK)
        st = ids_push(&a, tok->eos);
    if (st != DFX_OK) {
        free(a.v);
        return st;
    }
    *ids_out = a.v;
    *n = (int64_t)a.n;
    return DFX_OK;
}

dfx_status dfx_clip_tokenizer_encode_padded(const dfx_clip_tokenizer *tok, const char *text, bool ftfy,
                                            int64_t *out, int64_t *dropped)
{
    if (dropped)
        *dropped = 0;
    if (!tok || !text || !out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_clip_tokenizer_encode_padded: tokenizer, text or out is NULL");
    ids a = {0};
    dfx_status st = encode_text(tok, text, ftfy, &a);
    if (st != DFX_OK) {
        free(a.v);
        return st;
    }
    /* truncation=True: the prompt's ids lose their tail so that bos and eos
     * fit; padding="max_length" fills the rest with the pad id */
    size_t room = (size_t)tok->max_length - 2, keep = a.n < room ? a.n : room;
    out[0] = tok->bos;
    if (keep)
        memcpy(out + 1, a.v, keep * sizeof *out);
    out[keep + 1] = tok->eos;
    for (size_t i = keep + 2; i < (size_t)tok->max_length; i++)
        out[i] = tok->pad;
    if (dropped)
        *dropped = (int64_t)(a.n - keep);
    free(a.v);
    return DFX_OK;
}
