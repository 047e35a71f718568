/* Configuration tree: construction, lookup, YAML 1.2 core-schema typing of
 * plain scalars, and loading from YAML text with libyaml. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "core/base/node.h"
#include "core/internal.h"

#define YAML_MAX_DEPTH 64
#define YAML_MAX_NODES 100000

const char *dfx__node_where(const dfx__node *n, char *buf, size_t size)
{
    if (!n)
        snprintf(buf, size, "?");
    else if (n->line > 0)
        snprintf(buf, size, "%s:%d:%d", n->origin, n->line, n->col);
    else
        snprintf(buf, size, "%s", n->origin);
    return buf;
}

dfx__node *dfx__node_new(dfx__node_type type, const char *origin, int line, int col)
{
    dfx__node *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->type = type;
    n->origin = strdup(origin ? origin : "?");
    if (!n->origin) {
        free(n);
        return NULL;
    }
    n->line = line;
    n->col = col;
    return n;
}

dfx__node *dfx__node_new_scalar(const char *text, bool quoted, const char *origin,
                                int line, int col)
{
    dfx__node *n = dfx__node_new(DFX__NODE_SCALAR, origin, line, col);
    if (!n)
        return NULL;
    n->text = strdup(text);
    if (!n->text) {
        dfx__node_free(n);
        return NULL;
    }
    n->quoted = quoted;
    return n;
}

void dfx__node_free(dfx__node *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->count; i++) {
        if (n->keys)
            free(n->keys[i]);
        dfx__node_free(n->items[i]);
    }
    free(n->keys);
    free(n->items);
    free(n->text);
    free(n->origin);
    free(n);
}

static dfx_status grow(dfx__node *n)
{
    if (n->count < n->cap)
        return DFX_OK;
    size_t cap = n->cap ? 2 * n->cap : 8;
    dfx__node **items = realloc(n->items, cap * sizeof *items);
    if (!items)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    n->items = items;
    if (n->type == DFX__NODE_MAP) {
        char **keys = realloc(n->keys, cap * sizeof *keys);
        if (!keys)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        n->keys = keys;
    }
    n->cap = cap;
    return DFX_OK;
}

dfx__node *dfx__node_clone(const dfx__node *n)
{
    dfx__node *c;
    if (n->type == DFX__NODE_SCALAR)
        return dfx__node_new_scalar(n->text, n->quoted, n->origin, n->line, n->col);
    c = dfx__node_new(n->type, n->origin, n->line, n->col);
    if (!c)
        return NULL;
    for (size_t i = 0; i < n->count; i++) {
        dfx__node *item = dfx__node_clone(n->items[i]);
        dfx_status st = item ? (n->type == DFX__NODE_MAP
                                    ? dfx__node_set(c, n->keys[i], item)
                                    : dfx__node_append(c, item))
                             : DFX_ERR_NO_MEMORY;
        if (st) {
            dfx__node_free(c);
            return NULL;
        }
    }
    return c;
}

dfx__node *dfx__node_get(const dfx__node *map, const char *key)
{
    if (!map || map->type != DFX__NODE_MAP)
        return NULL;
    for (size_t i = 0; i < map->count; i++)
        if (strcmp(map->keys[i], key) == 0)
            return map->items[i];
    return NULL;
}

dfx_status dfx__node_set(dfx__node *map, const char *key, dfx__node *value)
{
    for (size_t i = 0; i < map->count; i++) {
        if (strcmp(map->keys[i], key) == 0) {
            dfx__node_free(map->items[i]);
            map->items[i] = value;
            return DFX_OK;
        }
    }
    dfx_status st = grow(map);
    if (st) {
        dfx__node_free(value);
        return st;
    }
    map->keys[map->count] = strdup(key);
    if (!map->keys[map->count]) {
        dfx__node_free(value);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    }
    map->items[map->count++] = value;
    return DFX_OK;
}

void dfx__node_remove(dfx__node *map, const char *key)
{
    for (size_t i = 0; map && i < map->count; i++) {
        if (strcmp(map->keys[i], key) == 0) {
            free(map->keys[i]);
            dfx__node_free(map->items[i]);
            memmove(map->keys + i, map->keys + i + 1, (map->count - i - 1) * sizeof *map->keys);
            memmove(map->items + i, map->items + i + 1, (map->count - i - 1) * sizeof *map->items);
            map->count--;
            return;
        }
    }
}

dfx_status dfx__node_append(dfx__node *seq, dfx__node *item)
{
    dfx_status st = grow(seq);
    if (st) {
        dfx__node_free(item);
        return st;
    }
    seq->items[seq->count++] = item;
    return DFX_OK;
}

dfx_status dfx__node_merge_defaults(dfx__node *dst, const dfx__node *src)
{
    for (size_t i = 0; i < src->count; i++) {
        dfx__node *mine = dfx__node_get(dst, src->keys[i]);
        if (mine) {
            if (mine->type == DFX__NODE_MAP && src->items[i]->type == DFX__NODE_MAP) {
                dfx_status st = dfx__node_merge_defaults(mine, src->items[i]);
                if (st)
                    return st;
            }
            continue;
        }
        dfx__node *c = dfx__node_clone(src->items[i]);
        if (!c)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        dfx_status st = dfx__node_set(dst, src->keys[i], c);
        if (st)
            return st;
    }
    return DFX_OK;
}

/* ---- scalar typing (YAML 1.2 core schema) ----------------------------- */

static bool is_null_text(const char *s)
{
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
           !strcmp(s, "NULL");
}

static int bool_text(const char *s)
{
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
        return 1;
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
        return 0;
    return -1;
}

static bool parse_int_text(const char *s, int64_t *out)
{
    const char *p = s;
    int base = 10;
    bool neg = false;
    if (*p == '-' || *p == '+')
        neg = *p++ == '-';
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'o')) {
        if (s != p && p[1] == 'o')
            return false;
        base = p[1] == 'x' ? 16 : 8;
        p += 2;
    }
    if (!*p)
        return false;
    for (const char *q = p; *q; q++) {
        if (base == 16 ? !isxdigit((unsigned char)*q) : (*q < '0' || *q > (base == 8 ? '7' : '9')))
            return false;
    }
    errno = 0;
    char *end;
    unsigned long long v = strtoull(p, &end, base);
    if (errno || *end)
        return false;
    if (neg ? v > (unsigned long long)INT64_MAX + 1ull : v > (unsigned long long)INT64_MAX)
        return false;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

static bool is_int_text(const char *s)
{
    const char *p = s;
    if (*p == '-' || *p == '+')
        p++;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'o') && p[2])
        return true;
    if (!*p)
        return false;
    for (; *p; p++)
        if (!isdigit((unsigned char)*p))
            return false;
    return true;
}

static bool parse_float_text(const char *s, double *out)
{
    const char *p = s;
    int sign = 1;
    if (*p == '-' || *p == '+')
        sign = *p++ == '-' ? -1 : 1;
    if (!strcmp(p, ".inf") || !strcmp(p, ".Inf") || !strcmp(p, ".INF")) {
        *out = sign * INFINITY;
        return true;
    }
    if (p == s && (!strcmp(p, ".nan") || !strcmp(p, ".NaN") || !strcmp(p, ".NAN"))) {
        *out = NAN;
        return true;
    }
    /* [0-9]* (.[0-9]*)? ([eE][-+]?[0-9]+)? with at least one digit */
    const char *q = p;
    int digits = 0;
    while (isdigit((unsigned char)*q)) {
        q++;
        digits++;
    }
    if (*q == '.') {
        q++;
        while (isdigit((unsigned char)*q)) {
            q++;
            digits++;
        }
    }
    if (!digits)
        return false;
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '-' || *q == '+')
            q++;
        if (!isdigit((unsigned char)*q))
            return false;
        while (isdigit((unsigned char)*q))
            q++;
    }
    if (*q)
        return false;
    errno = 0;
    double v = strtod(s, NULL);
    if (errno == ERANGE && isinf(v))
        return false;
    *out = v;
    return true;
}

dfx__scalar_kind dfx__scalar_kind_of(const dfx__node *n)
{
    double f;
    if (n->type != DFX__NODE_SCALAR || n->quoted)
        return DFX__SCALAR_STRING;
    if (is_null_text(n->text))
        return DFX__SCALAR_NULL;
    if (bool_text(n->text) >= 0)
        return DFX__SCALAR_BOOL;
    if (is_int_text(n->text))
        return DFX__SCALAR_INT;
    if (parse_float_text(n->text, &f))
        return DFX__SCALAR_FLOAT;
    return DFX__SCALAR_STRING;
}

bool dfx__scalar_int(const dfx__node *n, int64_t *out)
{
    return dfx__scalar_kind_of(n) == DFX__SCALAR_INT && parse_int_text(n->text, out);
}

bool dfx__scalar_float(const dfx__node *n, double *out)
{
    int64_t i;
    dfx__scalar_kind k = dfx__scalar_kind_of(n);
    if (k == DFX__SCALAR_INT && parse_int_text(n->text, &i)) {
        *out = (double)i;
        return true;
    }
    if (k == DFX__SCALAR_INT) /* beyond int64: still a number */
        return parse_float_text(n->text, out);
    return k == DFX__SCALAR_FLOAT && parse_float_text(n->text, out);
}

bool dfx__scalar_bool(const dfx__node *n, bool *out)
{
    if (dfx__scalar_kind_of(n) != DFX__SCALAR_BOOL)
        return false;
    *out = bool_text(n->text) == 1;
    return true;
}

const char *dfx__node_describe(const dfx__node *n)
{
    if (n->type == DFX__NODE_MAP)
        return "a map";
    if (n->type == DFX__NODE_SEQ)
        return "a list";
    switch (dfx__scalar_kind_of(n)) {
    case DFX__SCALAR_NULL: return "null";
    case DFX__SCALAR_BOOL: return "a boolean";
    case DFX__SCALAR_INT: return "an integer";
    case DFX__SCALAR_FLOAT: return "a number";
    case DFX__SCALAR_STRING: break;
    }
    return "a string";
}

/* ---- YAML loading ----------------------------------------------------- */

typedef struct yaml_load {
    yaml_document_t *doc;
    const char *origin;
    size_t nodes;
} yaml_load;

static dfx_status convert(yaml_load *ld, yaml_node_t *yn, int depth, dfx__node **out)
{
    int line = (int)yn->start_mark.line + 1, col = (int)yn->start_mark.column + 1;
    dfx__node *n = NULL;
    dfx_status st = DFX_OK;

    *out = NULL;
    if (depth > YAML_MAX_DEPTH)
        return dfx_error_set(DFX_ERR_CONFIG, "%s:%d:%d: nesting deeper than %d levels (an alias that refers to itself?)",
                             ld->origin, line, col, YAML_MAX_DEPTH);
    if (++ld->nodes > YAML_MAX_NODES)
        return dfx_error_set(DFX_ERR_CONFIG, "%s:%d:%d: more than %d values after expanding aliases",
                             ld->origin, line, col, YAML_MAX_NODES);
    switch (yn->type) {
    case YAML_SCALAR_NODE: {
        const char *text = (const char *)yn->data.scalar.value;
        if (strlen(text) != yn->data.scalar.length)
            return dfx_error_set(DFX_ERR_CONFIG, "%s:%d:%d: a NUL character inside a value",
                                 ld->origin, line, col);
        bool quoted = yn->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
        n = dfx__node_new_scalar(text, quoted, ld->origin, line, col);
        if (!n)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        *out = n;
        return DFX_OK;
    }
    case YAML_SEQUENCE_NODE:
        n = dfx__node_new(DFX__NODE_SEQ, ld->origin, line, col);
        if (!n)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        for (yaml_node_item_t *it = yn->data.sequence.items.start;
             it < yn->data.sequence.items.top && !st; it++) {
            dfx__node *child;
            st = convert(ld, yaml_document_get_node(ld->doc, *it), depth + 1, &child);
            if (!st)
                st = dfx__node_append(n, child);
        }
        break;
    case YAML_MAPPING_NODE:
        n = dfx__node_new(DFX__NODE_MAP, ld->origin, line, col);
        if (!n)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        for (yaml_node_pair_t *p = yn->data.mapping.pairs.start;
             p < yn->data.mapping.pairs.top && !st; p++) {
            yaml_node_t *k = yaml_document_get_node(ld->doc, p->key);
            int kl = (int)k->start_mark.line + 1, kc = (int)k->start_mark.column + 1;
            if (k->type != YAML_SCALAR_NODE) {
                st = dfx_error_set(DFX_ERR_CONFIG, "%s:%d:%d: a map key must be a plain name, not %s",
                                   ld->origin, kl, kc,
                                   k->type == YAML_MAPPING_NODE ? "a map" : "a list");
                break;
            }
            const char *key = (const char *)k->data.scalar.value;
            dfx__node *prev = dfx__node_get(n, key);
            if (prev) {
                st = dfx_error_set(DFX_ERR_CONFIG, "%s:%d:%d: duplicate key '%s' (first given at line %d)",
                                   ld->origin, kl, kc, key, prev->line);
                break;
            }
            dfx__node *child;
            st = convert(ld, yaml_document_get_node(ld->doc, p->value), depth + 1, &child);
            if (!st)
                st = dfx__node_set(n, key, child);
        }
        break;
    default:
        return dfx_error_set(DFX_ERR_CONFIG, "%s:%d:%d: empty node", ld->origin, line, col);
    }
    if (st) {
        dfx__node_free(n);
        return st;
    }
    *out = n;
    return DFX_OK;
}

static dfx_status parser_error(const yaml_parser_t *p, const char *origin)
{
    const yaml_mark_t *m = p->problem ? &p->problem_mark : &p->context_mark;
    return dfx_error_set(DFX_ERR_CONFIG, "%s:%d:%d: YAML syntax error: %s%s%s", origin,
                         (int)m->line + 1, (int)m->column + 1,
                         p->problem ? p->problem : "unreadable input",
                         p->context ? " " : "", p->context ? p->context : "");
}

dfx_status dfx__yaml_parse(const char *text, size_t len, const char *origin,
                           dfx__node **out)
{
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    dfx_status st = DFX_OK;

    *out = NULL;
    if (!yaml_parser_initialize(&parser))
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        st = parser_error(&parser, origin);
        yaml_parser_delete(&parser);
        return st;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        *out = dfx__node_new(DFX__NODE_MAP, origin, 0, 0);
        st = *out ? DFX_OK : dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    } else {
        yaml_load ld = {&doc, origin, 0};
        st = convert(&ld, root, 0, out);
    }
    if (!st) {
        /* a second document in the same file is a mistake, not ignored */
        if (!yaml_parser_load(&parser, &extra)) {
            st = parser_error(&parser, origin);
        } else {
            if (yaml_document_get_root_node(&extra))
                st = dfx_error_set(DFX_ERR_CONFIG, "%s:%d:%d: a second YAML document; a pipeline file holds one",
                                   origin, (int)extra.start_mark.line + 1,
                                   (int)extra.start_mark.column + 1);
            yaml_document_delete(&extra);
        }
        if (st) {
            dfx__node_free(*out);
            *out = NULL;
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return st;
}

void dfx__yaml_write_string(FILE *out, const char *s)
{
    dfx__node probe = {.type = DFX__NODE_SCALAR, .text = (char *)s};
    bool plain = *s && dfx__scalar_kind_of(&probe) == DFX__SCALAR_STRING &&
                 !strchr("-?:,[]{}#&*!|>'\"%@` ", s[0]) && s[strlen(s) - 1] != ' ';
    for (const char *p = s; plain && *p; p++)
        if ((unsigned char)*p < 0x20 || *p == '#' || (*p == ':' && (p[1] == ' ' || !p[1])) ||
            *p == '"' || *p == '\\' || *p == ',' || *p == '[' || *p == ']' || *p == '{' ||
            *p == '}')
            plain = false;
    if (plain) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\t': fputs("\\t", out); break;
        case '\r': fputs("\\r", out); break;
        default:
            if (*p < 0x20)
                fprintf(out, "\\x%02x", *p);
            else
                fputc(*p, out);
        }
    }
    fputc('"', out);
}
