/* libFuzzer target: the JSON reader. Any input must either parse or fail
 * with an "origin:line:col:" message; a parsed tree is walked in full so that
 * every accessor runs and the tree's invariants are checked. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/internal.h"
#include "dfx/json.h"

/* Invariant failures must crash so that libFuzzer keeps the input. */
#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            __builtin_trap();                                                  \
    } while (0)

/* Recursion is bounded by the parser's nesting limit (256). */
static void walk(const dfx_json *v, int depth)
{
    CHECK(v && depth <= 257);
    CHECK(dfx_json_line(v) >= 1 && dfx_json_column(v) >= 1);
    int64_t n = dfx_json_size(v), i;
    switch (dfx_json_type_of(v)) {
    case DFX_JSON_NULL:
    case DFX_JSON_BOOL:
        CHECK(n == 0 && isnan(dfx_json_number(v)) && !dfx_json_string(v));
        break;
    case DFX_JSON_NUMBER:
        if (dfx_json_int(v, &i))
            CHECK((double)i == dfx_json_number(v));
        break;
    case DFX_JSON_STRING: {
        const char *s = dfx_json_string(v);
        size_t len = dfx_json_string_len(v);
        CHECK(s && s[len] == '\0' && strlen(s) <= len);
        break;
    }
    case DFX_JSON_ARRAY:
        for (int64_t k = 0; k < n; k++)
            walk(dfx_json_at(v, k), depth + 1);
        CHECK(!dfx_json_at(v, n) && !dfx_json_key_at(v, 0));
        break;
    case DFX_JSON_OBJECT:
        for (int64_t k = 0; k < n; k++) {
            const char *key = dfx_json_key_at(v, k);
            CHECK(key && strlen(key) <= dfx__json_key_len(v, k));
            /* a key with an escaped NUL cannot be named by a C string */
            if (strlen(key) == dfx__json_key_len(v, k))
                CHECK(dfx_json_get(v, key));
            walk(dfx_json_value_at(v, k), depth + 1);
        }
        CHECK(!dfx_json_value_at(v, n) && !dfx_json_at(v, 0));
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dfx_json *doc = NULL;
    dfx_status st = dfx_json_parse((const char *)data, size, "fuzz", &doc);
    if (st == DFX_OK) {
        walk(doc, 1);
        dfx_json_destroy(doc);
    } else {
        CHECK(!doc);
        CHECK(st != DFX_ERR_FORMAT || strncmp(dfx_error_message(), "fuzz:", 5) == 0);
    }
    return 0;
}
