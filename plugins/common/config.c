#include "plugins/common/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

bool dfxp_is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

bool dfxp_is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

char *dfxp_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s/%s", a, b);
    return s;
}

dfx_status dfxp_field_error(const dfxp_config *r, const char *key, const char *msg)
{
    const dfx_json *v = dfx_json_get(r->root, key);
    if (!v)
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: field '%s' (absent, so diffusers' default): %s", r->path,
                             key, msg);
    return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s:%d:%d: field '%s': %s", r->path, dfx_json_line(v),
                         dfx_json_column(v), key, msg);
}

static const dfx_json *present(const dfxp_config *r, const char *key)
{
    const dfx_json *v = dfx_json_get(r->root, key);
    return v && dfx_json_type_of(v) != DFX_JSON_NULL ? v : NULL;
}

dfx_status dfxp_get_int(const dfxp_config *r, const char *key, int64_t def, int64_t lo, int64_t hi, int64_t *out)
{
    const dfx_json *v = present(r, key);
    *out = def;
    if (!v)
        return DFX_OK;
    if (!dfx_json_int(v, out) || *out < lo || *out > hi) {
        char msg[128];
        snprintf(msg, sizeof msg, "expected an integer in [%lld, %lld]", (long long)lo, (long long)hi);
        return dfxp_field_error(r, key, msg);
    }
    return DFX_OK;
}

dfx_status dfxp_get_bool(const dfxp_config *r, const char *key, bool def, bool *out)
{
    const dfx_json *v = present(r, key);
    *out = def;
    if (!v)
        return DFX_OK;
    if (dfx_json_type_of(v) != DFX_JSON_BOOL)
        return dfxp_field_error(r, key, "expected true or false");
    *out = dfx_json_bool(v);
    return DFX_OK;
}

dfx_status dfxp_get_number(const dfxp_config *r, const char *key, double def, double *out)
{
    const dfx_json *v = present(r, key);
    *out = def;
    if (!v)
        return DFX_OK;
    if (dfx_json_type_of(v) != DFX_JSON_NUMBER)
        return dfxp_field_error(r, key, "expected a number");
    *out = dfx_json_number(v);
    return DFX_OK;
}

dfx_status dfxp_get_choice(const dfxp_config *r, const char *key, const char *def, const char *const *allowed,
                           int *index)
{
    const dfx_json *v = present(r, key);
    const char *s = def;
    if (v) {
        if (dfx_json_type_of(v) != DFX_JSON_STRING)
            return dfxp_field_error(r, key, "expected a string");
        s = dfx_json_string(v);
    }
    for (int i = 0; allowed[i]; i++) {
        if (strcmp(s, allowed[i]) == 0) {
            if (index)
                *index = i;
            return DFX_OK;
        }
    }
    char msg[512];
    int n = snprintf(msg, sizeof msg, "'%s' is not supported by dfx's %s (it supports", s, r->who);
    for (int i = 0; allowed[i] && n > 0 && (size_t)n < sizeof msg; i++)
        n += snprintf(msg + n, sizeof msg - (size_t)n, "%s '%s'", i ? "," : "", allowed[i]);
    if (n > 0 && (size_t)n < sizeof msg)
        snprintf(msg + n, sizeof msg - (size_t)n, ")");
    return dfxp_field_error(r, key, msg);
}

dfx_status dfxp_get_ints(const dfxp_config *r, const char *key, int64_t lo, int64_t hi, int64_t max, int64_t *out,
                         int64_t *n)
{
    const dfx_json *v = dfx_json_get(r->root, key);
    const int64_t len = dfx_json_size(v);
    char msg[160];
    if (*n)
        snprintf(msg, sizeof msg, "expected a list of %lld integers in [%lld, %lld]", (long long)*n, (long long)lo,
                 (long long)hi);
    else
        snprintf(msg, sizeof msg, "expected a list of 1 to %lld integers in [%lld, %lld]", (long long)max,
                 (long long)lo, (long long)hi);
    if (dfx_json_type_of(v) != DFX_JSON_ARRAY || (*n ? len != *n : len < 1 || len > max))
        return dfxp_field_error(r, key, msg);
    for (int64_t i = 0; i < len; i++)
        if (!dfx_json_int(dfx_json_at(v, i), &out[i]) || out[i] < lo || out[i] > hi)
            return dfxp_field_error(r, key, msg);
    *n = len;
    return DFX_OK;
}

dfx_status dfxp_check_known(const dfxp_config *r, const char *const *known)
{
    for (int64_t i = 0; i < dfx_json_size(r->root); i++) {
        const char *k = dfx_json_key_at(r->root, i);
        bool ok = false;
        for (int j = 0; known[j] && !ok; j++)
            ok = strcmp(known[j], k) == 0;
        if (!ok) {
            char msg[160];
            snprintf(msg, sizeof msg, "unknown to dfx's %s, so its effect cannot be reproduced", r->who);
            return dfxp_field_error(r, k, msg);
        }
    }
    return DFX_OK;
}

dfx_status dfxp_read_text(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return dfx_error_set(DFX_ERR_IO, "%s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            char *b = realloc(buf, cap = cap ? 2 * cap : 4096);
            if (!b) {
                free(buf);
                fclose(f);
                return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", path);
            }
            buf = b;
        }
        const size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    const bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return dfx_error_set(DFX_ERR_IO, "%s: read error", path);
    }
    *out = buf;
    *len = n;
    return DFX_OK;
}

dfx_status dfxp_write_config(const char *dir, const char *text, size_t len)
{
    char *path = dfxp_join(dir, "config.json");
    if (!path)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    FILE *f = fopen(path, "wb");
    dfx_status st = DFX_OK;
    if (!f)
        st = dfx_error_set(DFX_ERR_IO, "%s: %s", path, strerror(errno));
    else if (fwrite(text, 1, len, f) != len)
        st = dfx_error_set(DFX_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    if (f && fclose(f) && !st)
        st = dfx_error_set(DFX_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    free(path);
    return st;
}
