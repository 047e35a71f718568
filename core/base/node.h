/* The configuration tree: what a pipeline YAML file (or a --set override, or
 * an imported diffusers config) says, with the file:line:col of every value
 * so errors can point at it. Maps keep their key order. */
#ifndef DFX_CORE_NODE_H
#define DFX_CORE_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dfx/status.h"

typedef enum dfx__node_type {
    DFX__NODE_SCALAR = 1,
    DFX__NODE_MAP,
    DFX__NODE_SEQ
} dfx__node_type;

/* What a plain scalar means under the YAML 1.2 core schema. Quoted scalars
 * are always strings. */
typedef enum dfx__scalar_kind {
    DFX__SCALAR_NULL = 1,
    DFX__SCALAR_BOOL,
    DFX__SCALAR_INT,
    DFX__SCALAR_FLOAT,
    DFX__SCALAR_STRING
} dfx__scalar_kind;

typedef struct dfx__node dfx__node;

struct dfx__node {
    dfx__node_type type;
    char *text;             /* SCALAR */
    bool quoted;            /* SCALAR: written quoted (a string whatever it says) */
    char **keys;            /* MAP */
    dfx__node **items;      /* MAP values / SEQ items */
    size_t count, cap;
    char *origin;           /* "pipe.yaml", "--set a.b=1", "scheduler_config.json" */
    int line, col;          /* 1-based; 0 when the origin has no positions */
};

/* "origin:line:col" or "origin" into buf; returns buf. */
const char *dfx__node_where(const dfx__node *n, char *buf, size_t size);

dfx__node *dfx__node_new(dfx__node_type type, const char *origin, int line, int col);
dfx__node *dfx__node_new_scalar(const char *text, bool quoted, const char *origin,
                                int line, int col);
void dfx__node_free(dfx__node *n);
dfx__node *dfx__node_clone(const dfx__node *n);

/* MAP: the value for key, or NULL. */
dfx__node *dfx__node_get(const dfx__node *map, const char *key);
/* MAP: sets key to value (takes ownership of value; replaces and frees an
 * existing value, keeping the key's position). */
dfx_status dfx__node_set(dfx__node *map, const char *key, dfx__node *value);
/* MAP: removes key if present. */
void dfx__node_remove(dfx__node *map, const char *key);
/* SEQ: appends (takes ownership). */
dfx_status dfx__node_append(dfx__node *seq, dfx__node *item);

/* Recursively copies every key of `src` into `dst` that dst does not have
 * (maps merge key by key; dst wins on conflicts). */
dfx_status dfx__node_merge_defaults(dfx__node *dst, const dfx__node *src);

dfx__scalar_kind dfx__scalar_kind_of(const dfx__node *n);
bool dfx__scalar_int(const dfx__node *n, int64_t *out);
bool dfx__scalar_float(const dfx__node *n, double *out);
bool dfx__scalar_bool(const dfx__node *n, bool *out);
/* "a string", "an integer", "a map", ... for messages. */
const char *dfx__node_describe(const dfx__node *n);

/* Parses one YAML document. Errors name origin:line:col. Anchors and aliases
 * are expanded (bounded: deep nesting or more than 100000 nodes is an error);
 * duplicate keys and non-scalar keys are errors. An empty document gives an
 * empty map. */
dfx_status dfx__yaml_parse(const char *text, size_t len, const char *origin,
                           dfx__node **out);

/* Writes a scalar as YAML (plain when that reads back as the same string,
 * double-quoted with escapes otherwise). */
void dfx__yaml_write_string(FILE *out, const char *s);

#endif
