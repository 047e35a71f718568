/* Generic option handling (FFmpeg AVOption style): defaults, validation of
 * configuration values against a component's table, describe and dump. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/options.h"
#include "core/internal.h"

const char *dfx_option_type_name(dfx_option_type type)
{
    switch (type) {
    case DFX_OPTION_TYPE_BOOL: return "bool";
    case DFX_OPTION_TYPE_INT: return "int";
    case DFX_OPTION_TYPE_FLOAT: return "float";
    case DFX_OPTION_TYPE_ENUM: return "enum";
    case DFX_OPTION_TYPE_STRING: return "string";
    case DFX_OPTION_TYPE_PATH: return "path";
    case DFX_OPTION_TYPE_FLOATS: return "floats";
    case DFX_OPTION_TYPE_INTS: return "ints";
    }
    return "?";
}

#define FIELD(priv, o, T) ((T *)((char *)(priv) + (o)->offset))

static size_t type_size(dfx_option_type t)
{
    switch (t) {
    case DFX_OPTION_TYPE_BOOL: return sizeof(bool);
    case DFX_OPTION_TYPE_INT: return sizeof(int64_t);
    case DFX_OPTION_TYPE_FLOAT: return sizeof(double);
    case DFX_OPTION_TYPE_ENUM: return sizeof(int);
    case DFX_OPTION_TYPE_STRING:
    case DFX_OPTION_TYPE_PATH: return sizeof(char *);
    case DFX_OPTION_TYPE_FLOATS: return sizeof(dfx_floats);
    case DFX_OPTION_TYPE_INTS: return sizeof(dfx_ints);
    }
    return 0;
}

void dfx__format_double(double v, char *buf, size_t size)
{
    if (isnan(v)) {
        snprintf(buf, size, ".nan");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, size, v < 0 ? "-.inf" : ".inf");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    size_t len = strlen(buf);
    if (!strpbrk(buf, ".eE") && len + 2 < size)
        memcpy(buf + len, ".0", 3);
}

/* ---- did you mean ----------------------------------------------------- */

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return 99;
    size_t d[65][65];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            size_t v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v)
                v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v)
                v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1; /* transposition */
            d[i][j] = v;
        }
    }
    return d[la][lb];
}

const char *dfx__suggest(const char *word, const char *const *candidates,
                         size_t count)
{
    const char *best = NULL;
    size_t best_d = (size_t)-1;
    size_t limit = strlen(word) / 3 + 1;
    if (limit > 3)
        limit = 3;
    for (size_t i = 0; i < count; i++) {
        if (!candidates[i])
            continue;
        size_t d = edit_distance(word, candidates[i]);
        /* a prefix match ("spac" for "spacing") also helps */
        if (strlen(word) >= 3 && strncmp(candidates[i], word, strlen(word)) == 0)
            d = d < 1 ? d : 1;
        /* on a tie, a candidate as long as the word wins ("stepz": steps) */
        if (d < best_d || (d == best_d && best && strlen(best) != strlen(word) &&
                           strlen(candidates[i]) == strlen(word))) {
            best_d = d;
            best = candidates[i];
        }
    }
    return best_d <= limit ? best : NULL;
}

/* ---- paths ------------------------------------------------------------ */

char *dfx__resolve_path(const char *path, const dfx__node *where)
{
    const char *home = getenv("HOME");
    size_t need;
    char *out;

    if (path[0] == '~' && path[1] == '/' && home) {
        need = strlen(home) + strlen(path) + 1;
        out = malloc(need);
        if (out)
            snprintf(out, need, "%s%s", home, path + 1);
        return out;
    }
    if (path[0] == '/' || !where || strncmp(where->origin, "--", 2) == 0)
        return strdup(path);
    const char *slash = strrchr(where->origin, '/');
    if (!slash)
        return strdup(path);
    size_t dirlen = (size_t)(slash - where->origin);
    need = dirlen + 1 + strlen(path) + 1;
    out = malloc(need);
    if (out)
        snprintf(out, need, "%.*s/%s", (int)dirlen, where->origin, path);
    return out;
}

/* ---- defaults and application ----------------------------------------- */

dfx_status dfx__options_defaults(const dfx_option *opts, void *priv)
{
    for (const dfx_option *o = opts; o && o->name; o++) {
        switch (o->type) {
        case DFX_OPTION_TYPE_BOOL: *FIELD(priv, o, bool) = o->def != 0; break;
        case DFX_OPTION_TYPE_INT: *FIELD(priv, o, int64_t) = (int64_t)o->def; break;
        case DFX_OPTION_TYPE_FLOAT: *FIELD(priv, o, double) = o->def; break;
        case DFX_OPTION_TYPE_ENUM: *FIELD(priv, o, int) = (int)o->def; break;
        case DFX_OPTION_TYPE_STRING:
        case DFX_OPTION_TYPE_PATH:
            *FIELD(priv, o, char *) = NULL;
            if (o->def_str && !(*FIELD(priv, o, char *) = dfx__strdup(o->def_str)))
                return DFX_ERR_NO_MEMORY;
            break;
        case DFX_OPTION_TYPE_FLOATS: FIELD(priv, o, dfx_floats)->v = NULL; FIELD(priv, o, dfx_floats)->n = 0; break;
        case DFX_OPTION_TYPE_INTS: FIELD(priv, o, dfx_ints)->v = NULL; FIELD(priv, o, dfx_ints)->n = 0; break;
        }
    }
    return DFX_OK;
}

void dfx__options_free(const dfx_option *opts, void *priv)
{
    for (const dfx_option *o = opts; o && o->name; o++) {
        switch (o->type) {
        case DFX_OPTION_TYPE_STRING:
        case DFX_OPTION_TYPE_PATH:
            free(*FIELD(priv, o, char *));
            *FIELD(priv, o, char *) = NULL;
            break;
        case DFX_OPTION_TYPE_FLOATS:
            free(FIELD(priv, o, dfx_floats)->v);
            FIELD(priv, o, dfx_floats)->v = NULL;
            FIELD(priv, o, dfx_floats)->n = 0;
            break;
        case DFX_OPTION_TYPE_INTS:
            free(FIELD(priv, o, dfx_ints)->v);
            FIELD(priv, o, dfx_ints)->v = NULL;
            FIELD(priv, o, dfx_ints)->n = 0;
            break;
        default:
            break;
        }
    }
}

static void format_range(const dfx_option *o, char *buf, size_t size)
{
    char lo[40], hi[40];
    if (o->type == DFX_OPTION_TYPE_INT || o->type == DFX_OPTION_TYPE_INTS) {
        snprintf(lo, sizeof lo, "%lld", (long long)o->min);
        snprintf(hi, sizeof hi, "%lld", (long long)o->max);
        if (o->min <= -9.2e18)
            snprintf(lo, sizeof lo, "-inf");
        if (o->max >= 9.2e18)
            snprintf(hi, sizeof hi, "inf");
    } else {
        snprintf(lo, sizeof lo, "%g", o->min);
        snprintf(hi, sizeof hi, "%g", o->max);
    }
    snprintf(buf, size, "[%s, %s]", lo, hi);
}

static dfx_status value_error(const dfx__node *v, const char *what, const dfx_option *o,
                              const char *msg)
{
    char where[512];
    return dfx_error_set(DFX_ERR_CONFIG, "%s: %s: option '%s': %s",
                         dfx__node_where(v, where, sizeof where), what, o->name, msg);
}

static dfx_status number_in_range(const dfx__node *v, const char *what, const dfx_option *o,
                                  double x)
{
    char range[100], val[64], msg[256];
    if ((o->type == DFX_OPTION_TYPE_FLOAT || o->type == DFX_OPTION_TYPE_FLOATS) && isnan(x))
        return value_error(v, what, o, "NaN is not a valid value");
    if (x >= o->min && x <= o->max)
        return DFX_OK;
    format_range(o, range, sizeof range);
    snprintf(val, sizeof val, "%s", v->text);
    snprintf(msg, sizeof msg, "%s is out of range %s", val, range);
    return value_error(v, what, o, msg);
}

static dfx_status scalar_expected(const dfx__node *v, const char *what, const dfx_option *o,
                                  const char *expected)
{
    char msg[256];
    snprintf(msg, sizeof msg, "expected %s, found %s%s%s%s", expected, dfx__node_describe(v),
             v->type == DFX__NODE_SCALAR ? " '" : "", v->type == DFX__NODE_SCALAR ? v->text : "",
             v->type == DFX__NODE_SCALAR ? "'" : "");
    return value_error(v, what, o, msg);
}

static dfx_status apply_list(const dfx_option *o, void *priv, const dfx__node *v,
                             const char *what)
{
    bool ints = o->type == DFX_OPTION_TYPE_INTS;
    const dfx__node *single = NULL;
    size_t n;
    if (v->type == DFX__NODE_SEQ) {
        n = v->count;
    } else if (v->type == DFX__NODE_SCALAR && dfx__scalar_kind_of(v) != DFX__SCALAR_NULL &&
               dfx__scalar_kind_of(v) != DFX__SCALAR_STRING) {
        single = v; /* a lone number is a list of one */
        n = 1;
    } else if (v->type == DFX__NODE_SCALAR && dfx__scalar_kind_of(v) == DFX__SCALAR_NULL) {
        n = 0;
    } else {
        return scalar_expected(v, what, o, ints ? "a list of integers" : "a list of numbers");
    }
    void *arr = n ? malloc(n * (ints ? sizeof(int64_t) : sizeof(double))) : NULL;
    if (n && !arr)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const dfx__node *e = single ? single : v->items[i];
        dfx_status st;
        if (e->type != DFX__NODE_SCALAR) {
            st = scalar_expected(e, what, o, ints ? "an integer" : "a number");
        } else if (ints) {
            int64_t x;
            st = dfx__scalar_int(e, &x) ? number_in_range(e, what, o, (double)x)
                                        : scalar_expected(e, what, o, "an integer");
            ((int64_t *)arr)[i] = x;
        } else {
            double x = 0;
            st = dfx__scalar_float(e, &x) ? number_in_range(e, what, o, x)
                                          : scalar_expected(e, what, o, "a number");
            ((double *)arr)[i] = x;
        }
        if (st) {
            free(arr);
            return st;
        }
    }
    if (ints) {
        free(FIELD(priv, o, dfx_ints)->v);
        FIELD(priv, o, dfx_ints)->v = arr;
        FIELD(priv, o, dfx_ints)->n = (int64_t)n;
    } else {
        free(FIELD(priv, o, dfx_floats)->v);
        FIELD(priv, o, dfx_floats)->v = arr;
        FIELD(priv, o, dfx_floats)->n = (int64_t)n;
    }
    return DFX_OK;
}

static dfx_status apply_one(const dfx_option *o, void *priv, const dfx__node *v,
                            const char *what)
{
    if (o->type == DFX_OPTION_TYPE_FLOATS || o->type == DFX_OPTION_TYPE_INTS)
        return apply_list(o, priv, v, what);
    if (v->type != DFX__NODE_SCALAR)
        return scalar_expected(v, what, o,
                               o->type == DFX_OPTION_TYPE_BOOL ? "true or false"
                               : o->type == DFX_OPTION_TYPE_INT ? "an integer"
                               : o->type == DFX_OPTION_TYPE_FLOAT ? "a number"
                                                                  : "a string");
    bool is_null = dfx__scalar_kind_of(v) == DFX__SCALAR_NULL;
    /* a string without a default reads null as "unset", as dumps write it */
    bool nullable = (o->flags & DFX_OPTION_NULLABLE) ||
                    ((o->type == DFX_OPTION_TYPE_STRING || o->type == DFX_OPTION_TYPE_PATH) && !o->def_str &&
                     !(o->flags & DFX_OPTION_REQUIRED));
    if (is_null && !nullable)
        return value_error(v, what, o, "null is not allowed here: give a value");
    switch (o->type) {
    case DFX_OPTION_TYPE_BOOL: {
        bool b;
        if (!dfx__scalar_bool(v, &b))
            return scalar_expected(v, what, o, "true or false");
        *FIELD(priv, o, bool) = b;
        return DFX_OK;
    }
    case DFX_OPTION_TYPE_INT: {
        int64_t x;
        if (!dfx__scalar_int(v, &x))
            return scalar_expected(v, what, o, "an integer");
        dfx_status st = number_in_range(v, what, o, (double)x);
        if (!st)
            *FIELD(priv, o, int64_t) = x;
        return st;
    }
    case DFX_OPTION_TYPE_FLOAT: {
        double x;
        if (is_null) {
            *FIELD(priv, o, double) = NAN;
            return DFX_OK;
        }
        if (!dfx__scalar_float(v, &x))
            return scalar_expected(v, what, o, "a number");
        dfx_status st = number_in_range(v, what, o, x);
        if (!st)
            *FIELD(priv, o, double) = x;
        return st;
    }
    case DFX_OPTION_TYPE_ENUM: {
        size_t n = 0;
        while (o->choices[n])
            n++;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(v->text, o->choices[i]) == 0) {
                *FIELD(priv, o, int) = (int)i;
                return DFX_OK;
            }
        }
        char msg[1024];
        size_t used = (size_t)snprintf(msg, sizeof msg, "'%s' is not one of: ", v->text);
        for (size_t i = 0; i < n && used < sizeof msg; i++)
            used += (size_t)snprintf(msg + used, sizeof msg - used, "%s%s", i ? ", " : "",
                                     o->choices[i]);
        const char *s = dfx__suggest(v->text, (const char *const *)o->choices, n);
        if (s && used < sizeof msg)
            snprintf(msg + used, sizeof msg - used, " (did you mean '%s'?)", s);
        return value_error(v, what, o, msg);
    }
    case DFX_OPTION_TYPE_STRING:
    case DFX_OPTION_TYPE_PATH: {
        char *s = NULL;
        if (!is_null) {
            if (o->type == DFX_OPTION_TYPE_PATH && !*v->text)
                return value_error(v, what, o, "an empty path");
            s = o->type == DFX_OPTION_TYPE_PATH ? dfx__resolve_path(v->text, v) : strdup(v->text);
            if (!s)
                return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        }
        free(*FIELD(priv, o, char *));
        *FIELD(priv, o, char *) = s;
        return DFX_OK;
    }
    default:
        break;
    }
    return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: option '%s' has an invalid type", what, o->name);
}

static bool is_reserved(const char *key, const char *const *reserved)
{
    for (; reserved && *reserved; reserved++)
        if (strcmp(key, *reserved) == 0)
            return true;
    return false;
}

dfx_status dfx__options_apply(const dfx_option *opts, void *priv,
                              const dfx__node *map, const char *what,
                              const char *const *reserved)
{
    if (!map)
        return DFX_OK;
    for (size_t i = 0; i < map->count; i++) {
        const char *key = map->keys[i];
        const dfx_option *o = opts;
        if (is_reserved(key, reserved))
            continue;
        while (o && o->name && strcmp(o->name, key) != 0)
            o++;
        if (!o || !o->name) {
            const char *names[256];
            size_t n = 0;
            for (const dfx_option *p = opts; p && p->name && n < 240; p++)
                names[n++] = p->name;
            for (const char *const *r = reserved; r && *r && n < 256; r++)
                names[n++] = *r;
            const char *s = dfx__suggest(key, names, n);
            char where[512];
            return dfx_error_set(DFX_ERR_CONFIG, "%s: %s has no option '%s'%s%s%s",
                                 dfx__node_where(map->items[i], where, sizeof where), what, key,
                                 s ? " (did you mean '" : "", s ? s : "", s ? "'?)" : "");
        }
        dfx_status st = apply_one(o, priv, map->items[i], what);
        if (st)
            return st;
    }
    return DFX_OK;
}

dfx_status dfx__options_check_required(const dfx_option *opts,
                                       const dfx__node *map, const char *what,
                                       const char *where)
{
    for (const dfx_option *o = opts; o && o->name; o++)
        if ((o->flags & DFX_OPTION_REQUIRED) && !dfx__node_get(map, o->name))
            return dfx_error_set(DFX_ERR_CONFIG, "%s: %s: option '%s' is required (%s)", where,
                                 what, o->name, o->help ? o->help : "no default");
    return DFX_OK;
}

/* ---- table checks ----------------------------------------------------- */

static bool is_identifier(const char *s)
{
    if (!*s || !(isalpha((unsigned char)*s) || *s == '_'))
        return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_'))
            return false;
    return true;
}

dfx_status dfx__options_check_table(const dfx_option *opts, size_t priv_size)
{
    for (const dfx_option *o = opts; o && o->name; o++) {
        if (!is_identifier(o->name))
            return dfx_error_set(DFX_ERR_PLUGIN, "option '%s': the name must be an identifier", o->name);
        for (const dfx_option *p = opts; p < o; p++)
            if (strcmp(p->name, o->name) == 0)
                return dfx_error_set(DFX_ERR_PLUGIN, "option '%s' is declared twice", o->name);
        size_t sz = type_size(o->type);
        size_t align = o->type == DFX_OPTION_TYPE_BOOL ? _Alignof(bool)
                       : o->type == DFX_OPTION_TYPE_ENUM ? _Alignof(int)
                                                         : _Alignof(double);
        if (sz && o->offset % align)
            return dfx_error_set(DFX_ERR_PLUGIN, "option '%s': offset %zu is not aligned for a %s (a field of "
                                                 "another type?)", o->name, o->offset,
                                 dfx_option_type_name(o->type));
        if (!sz)
            return dfx_error_set(DFX_ERR_PLUGIN, "option '%s': unknown type %d", o->name, (int)o->type);
        if (o->offset > priv_size || sz > priv_size - o->offset)
            return dfx_error_set(DFX_ERR_PLUGIN,
                                 "option '%s': offset %zu + size %zu lies outside priv_size %zu",
                                 o->name, o->offset, sz, priv_size);
        if (!o->help || !*o->help)
            return dfx_error_set(DFX_ERR_PLUGIN, "option '%s' has no help text", o->name);
        bool ranged = o->type == DFX_OPTION_TYPE_INT || o->type == DFX_OPTION_TYPE_FLOAT ||
                      o->type == DFX_OPTION_TYPE_FLOATS || o->type == DFX_OPTION_TYPE_INTS;
        if (ranged && !(o->min <= o->max))
            return dfx_error_set(DFX_ERR_PLUGIN, "option '%s': range [%g, %g] is empty", o->name,
                                 o->min, o->max);
        if ((o->type == DFX_OPTION_TYPE_INT || o->type == DFX_OPTION_TYPE_FLOAT) &&
            !(o->type == DFX_OPTION_TYPE_FLOAT && isnan(o->def) && (o->flags & DFX_OPTION_NULLABLE)) &&
            !(o->def >= o->min && o->def <= o->max))
            return dfx_error_set(DFX_ERR_PLUGIN, "option '%s': default %g is outside its range [%g, %g]",
                                 o->name, o->def, o->min, o->max);
        if (o->type == DFX_OPTION_TYPE_INT && o->def != floor(o->def))
            return dfx_error_set(DFX_ERR_PLUGIN, "option '%s': default %g is not an integer", o->name, o->def);
        if (o->type == DFX_OPTION_TYPE_ENUM) {
            size_t n = 0;
            if (!o->choices || !o->choices[0])
                return dfx_error_set(DFX_ERR_PLUGIN, "option '%s': an enum needs choices", o->name);
            while (o->choices[n])
                n++;
            if (!(o->def >= 0 && o->def < (double)n && o->def == floor(o->def)))
                return dfx_error_set(DFX_ERR_PLUGIN, "option '%s': default index %g is not one of its %zu choices",
                                     o->name, o->def, n);
        }
    }
    return DFX_OK;
}

/* ---- describe and dump ------------------------------------------------ */

static void format_default(const dfx_option *o, char *buf, size_t size)
{
    switch (o->type) {
    case DFX_OPTION_TYPE_BOOL: snprintf(buf, size, "%s", o->def ? "true" : "false"); return;
    case DFX_OPTION_TYPE_INT: snprintf(buf, size, "%lld", (long long)o->def); return;
    case DFX_OPTION_TYPE_FLOAT:
        if (isnan(o->def))
            snprintf(buf, size, "null");
        else
            dfx__format_double(o->def, buf, size);
        return;
    case DFX_OPTION_TYPE_ENUM: snprintf(buf, size, "%s", o->choices[(int)o->def]); return;
    case DFX_OPTION_TYPE_STRING:
    case DFX_OPTION_TYPE_PATH:
        snprintf(buf, size, "%s", o->def_str ? o->def_str : (o->flags & DFX_OPTION_REQUIRED) ? "(required)" : "null");
        return;
    case DFX_OPTION_TYPE_FLOATS:
    case DFX_OPTION_TYPE_INTS: snprintf(buf, size, "[]"); return;
    }
    buf[0] = '\0';
}

void dfx__options_describe(const dfx_option *opts, FILE *out)
{
    int wn = 6, wt = 4, wd = 7, wr = 15;
    char buf[1024];
    for (const dfx_option *o = opts; o && o->name; o++) {
        int l = (int)strlen(o->name);
        wn = l > wn ? l : wn;
        l = (int)strlen(dfx_option_type_name(o->type));
        wt = l > wt ? l : wt;
        format_default(o, buf, sizeof buf);
        l = (int)strlen(buf);
        wd = l > wd ? l : wd;
    }
    if (!opts || !opts->name) {
        fprintf(out, "  (no options)\n");
        return;
    }
    fprintf(out, "  %-*s  %-*s  %-*s  %-*s  %s\n", wn, "option", wt, "type", wd, "default", wr,
            "range / choices", "help");
    for (const dfx_option *o = opts; o && o->name; o++) {
        char def[256], range[1024] = "";
        format_default(o, def, sizeof def);
        if (o->type == DFX_OPTION_TYPE_ENUM) {
            size_t used = 0;
            for (size_t i = 0; o->choices[i] && used < sizeof range; i++)
                used += (size_t)snprintf(range + used, sizeof range - used, "%s%s", i ? "|" : "",
                                         o->choices[i]);
        } else if (o->type == DFX_OPTION_TYPE_INT || o->type == DFX_OPTION_TYPE_FLOAT ||
                   o->type == DFX_OPTION_TYPE_FLOATS || o->type == DFX_OPTION_TYPE_INTS) {
            format_range(o, range, sizeof range);
        } else {
            snprintf(range, sizeof range, "-");
        }
        fprintf(out, "  %-*s  %-*s  %-*s  %-*s  %s%s\n", wn, o->name, wt,
                dfx_option_type_name(o->type), wd, def, wr, range, o->help,
                (o->flags & DFX_OPTION_REQUIRED) ? " (required)" : "");
    }
}

void dfx__option_format(const dfx_option *o, const void *priv, char *buf, size_t size)
{
    const void *p = (const char *)priv + o->offset;
    size_t used = 0;
    buf[0] = '\0';
    switch (o->type) {
    case DFX_OPTION_TYPE_BOOL: snprintf(buf, size, "%s", *(const bool *)p ? "true" : "false"); break;
    case DFX_OPTION_TYPE_INT: snprintf(buf, size, "%lld", (long long)*(const int64_t *)p); break;
    case DFX_OPTION_TYPE_FLOAT:
        if (isnan(*(const double *)p) && (o->flags & DFX_OPTION_NULLABLE))
            snprintf(buf, size, "null");
        else
            dfx__format_double(*(const double *)p, buf, size);
        break;
    case DFX_OPTION_TYPE_ENUM: snprintf(buf, size, "%s", o->choices[*(const int *)p]); break;
    case DFX_OPTION_TYPE_STRING:
    case DFX_OPTION_TYPE_PATH: {
        const char *s = *(char *const *)p;
        if (!s) {
            snprintf(buf, size, "null");
        } else {
            char *mem = NULL;
            size_t len = 0;
            FILE *f = open_memstream(&mem, &len);
            if (f) {
                dfx__yaml_write_string(f, s);
                fclose(f);
                snprintf(buf, size, "%s", mem);
                free(mem);
            }
        }
        break;
    }
    case DFX_OPTION_TYPE_FLOATS: {
        const dfx_floats *l = p;
        used += (size_t)snprintf(buf, size, "[");
        for (int64_t i = 0; i < l->n && used < size; i++) {
            char num[40];
            dfx__format_double(l->v[i], num, sizeof num);
            used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "", num);
        }
        if (used < size)
            snprintf(buf + used, size - used, "]");
        break;
    }
    case DFX_OPTION_TYPE_INTS: {
        const dfx_ints *l = p;
        used += (size_t)snprintf(buf, size, "[");
        for (int64_t i = 0; i < l->n && used < size; i++)
            used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? ", " : "",
                                     (long long)l->v[i]);
        if (used < size)
            snprintf(buf + used, size - used, "]");
        break;
    }
    }
}

void dfx__options_dump(const dfx_option *opts, const void *priv, FILE *out, int indent)
{
    for (const dfx_option *o = opts; o && o->name; o++) {
        size_t size = 1 << 16;
        char *buf = malloc(size);
        if (!buf)
            return;
        dfx__option_format(o, priv, buf, size);
        fprintf(out, "%*s%s: %s\n", indent, "", o->name, buf);
        free(buf);
    }
}
