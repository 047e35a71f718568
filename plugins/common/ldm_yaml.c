/* The ldm model config beside a single-file checkpoint (v1-inference.yaml,
 * v2-inference-v.yaml), read with libyaml: only the keys under model.params
 * that the tensors cannot tell. */
#include "plugins/common/ldm_yaml.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

static const yaml_node_t *ymap_get(yaml_document_t *doc, const yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (const yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = yaml_document_get_node(doc, p->key);
        if (k && k->type == YAML_SCALAR_NODE && strcmp((const char *)k->data.scalar.value, key) == 0)
            return yaml_document_get_node(doc, p->value);
    }
    return NULL;
}

/* The node at a dotted path of keys, or NULL. */
static const yaml_node_t *ypath(yaml_document_t *doc, const char *path)
{
    const yaml_node_t *n = yaml_document_get_root_node(doc);
    char key[64];
    while (n && *path) {
        size_t len = strcspn(path, ".");
        if (len >= sizeof key)
            return NULL;
        memcpy(key, path, len);
        key[len] = '\0';
        n = ymap_get(doc, n, key);
        path += len + (path[len] == '.');
    }
    return n;
}

static const char *yscalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static dfx_status ytype_error(const char *file, const yaml_node_t *n, const char *key, const char *want)
{
    return dfx_error_set(DFX_ERR_FORMAT, "%s:%zu:%zu: '%s': expected %s", file, n->start_mark.line + 1,
                         n->start_mark.column + 1, key, want);
}

static dfx_status yint(yaml_document_t *doc, const char *file, const char *path, int64_t *out)
{
    const yaml_node_t *n = ypath(doc, path);
    const char *s = yscalar(n);
    if (!n)
        return DFX_OK;
    char *end;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end)
        return ytype_error(file, n, path, "an integer");
    *out = v;
    return DFX_OK;
}

static dfx_status ystring(yaml_document_t *doc, const char *file, const char *path, char *out, size_t size)
{
    const yaml_node_t *n = ypath(doc, path);
    const char *s = yscalar(n);
    if (!n)
        return DFX_OK;
    if (!s || strlen(s) >= size)
        return ytype_error(file, n, path, "a short string");
    memcpy(out, s, strlen(s) + 1);
    return DFX_OK;
}

void dfxp_ldm_yaml_defaults(dfxp_ldm_yaml *y)
{
    *y = (dfxp_ldm_yaml){-1, -1, 0, 0, -1, "", NAN, "", ""};
}

/* Loads the document the parser reads and takes the keys dfx uses. */
static dfx_status parse(yaml_parser_t *parser, const char *file, dfxp_ldm_yaml *y)
{
    dfxp_ldm_yaml_defaults(y);
    yaml_document_t doc;
    dfx_status st = DFX_OK;
    if (!yaml_parser_load(parser, &doc))
        return dfx_error_set(DFX_ERR_FORMAT, "%s:%zu:%zu: %s", file, parser->problem_mark.line + 1,
                             parser->problem_mark.column + 1, parser->problem ? parser->problem : "invalid YAML");
#define UNET "model.params.unet_config.params."
    char linear[8] = "", scale[32] = "";
    if (!yaml_document_get_root_node(&doc))
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: empty", file);
    if (!st && !ypath(&doc, "model.params.unet_config") && !ypath(&doc, "model.params.first_stage_config"))
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: not an ldm config (no model.params.unet_config)", file);
    if (st || (st = yint(&doc, file, UNET "num_heads", &y->num_heads)) ||
        (st = yint(&doc, file, UNET "num_head_channels", &y->num_head_channels)) ||
        (st = yint(&doc, file, UNET "context_dim", &y->context_dim)) ||
        (st = yint(&doc, file, UNET "transformer_depth", &y->transformer_depth)) ||
        (st = ystring(&doc, file, UNET "use_linear_in_transformer", linear, sizeof linear)) ||
        (st = ystring(&doc, file, "model.params.parameterization", y->parameterization,
                      sizeof y->parameterization)) ||
        (st = ystring(&doc, file, "model.params.scale_factor", scale, sizeof scale)) ||
        (st = ystring(&doc, file, "model.params.cond_stage_config.target", y->cond_target,
                      sizeof y->cond_target)) ||
        (st = ystring(&doc, file, "model.params.cond_stage_config.params.layer", y->cond_layer,
                      sizeof y->cond_layer)))
        goto done;
#undef UNET
    /* -1 is ldm's own "unset" for the head counts */
    static const struct {
        const char *key;
        size_t off;
        int64_t min;
    } ranges[] = {
        {"num_heads", offsetof(dfxp_ldm_yaml, num_heads), -1},
        {"num_head_channels", offsetof(dfxp_ldm_yaml, num_head_channels), -1},
        {"context_dim", offsetof(dfxp_ldm_yaml, context_dim), 0},
        {"transformer_depth", offsetof(dfxp_ldm_yaml, transformer_depth), 0},
    };
    for (size_t i = 0; i < sizeof ranges / sizeof *ranges; i++) {
        const int64_t v = *(const int64_t *)((const char *)y + ranges[i].off);
        if (v < ranges[i].min || v == 0 || v > 65536) {
            if (v == 0 && ranges[i].min == 0)
                continue;
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: 'model.params.unet_config.params.%s': %lld is out of range "
                                               "(%s1 to 65536)", file, ranges[i].key, (long long)v,
                               ranges[i].min < 0 ? "-1 for unset, or " : "");
            goto done;
        }
    }
    if (*linear)
        y->linear = strcmp(linear, "True") == 0 || strcmp(linear, "true") == 0;
    if (*scale) {
        char *end;
        y->scale_factor = strtod(scale, &end);
        if (*end || !(y->scale_factor > 0))
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: 'model.params.scale_factor': expected a positive number, "
                                               "got '%s'", file, scale);
    }
    if (!st && *y->parameterization && strcmp(y->parameterization, "eps") != 0 &&
        strcmp(y->parameterization, "v") != 0)
        st = dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: 'model.params.parameterization': '%s' (dfx reads \"eps\" "
                                                "and \"v\")", file, y->parameterization);
done:
    yaml_document_delete(&doc);
    return st;
}

dfx_status dfxp_ldm_yaml_read(const char *file, dfxp_ldm_yaml *y)
{
    dfxp_ldm_yaml_defaults(y);
    FILE *fp = fopen(file, "rb");
    if (!fp)
        return dfx_error_set(DFX_ERR_IO, "%s: cannot open the ldm config", file);
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, fp);
    dfx_status st = parse(&parser, file, y);
    yaml_parser_delete(&parser);
    fclose(fp);
    return st;
}

dfx_status dfxp_ldm_yaml_parse(const char *name, const void *text, size_t len, dfxp_ldm_yaml *y)
{
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, text, len);
    dfx_status st = parse(&parser, name, y);
    yaml_parser_delete(&parser);
    return st;
}

