/* The one generic option validator: fills a component's private struct from a
 * configuration map (type, range, choices, required, unknown keys with a
 * "did you mean"), prints option tables, and writes resolved values back as
 * YAML. */
#ifndef DFX_CORE_OPTIONS_H
#define DFX_CORE_OPTIONS_H

#include <stdio.h>

#include "core/base/node.h"
#include "dfx/option.h"

/* Writes every default into priv (strings and lists are duplicated). */
dfx_status dfx__options_defaults(const dfx_option *opts, void *priv);

/* Applies the entries of `map` (a map node, or NULL for none). `what` names
 * the owner in messages ("sampler 'ddim'"); keys listed in `reserved`
 * (NULL-terminated, may be NULL) belong to the core and are skipped. Errors
 * name the value's file:line:col. */
dfx_status dfx__options_apply(const dfx_option *opts, void *priv,
                              const dfx__node *map, const char *what,
                              const char *const *reserved);

/* Checks that every required option was given in `map`. */
dfx_status dfx__options_check_required(const dfx_option *opts,
                                       const dfx__node *map, const char *what,
                                       const char *where);

/* Frees the strings and lists the core allocated in priv. */
void dfx__options_free(const dfx_option *opts, void *priv);

/* Validates a table at plugin load time against the private struct size:
 * names (identifiers, unique), types, offsets, defaults inside their ranges,
 * enum defaults among the choices. */
dfx_status dfx__options_check_table(const dfx_option *opts, size_t priv_size);

/* The option table as `dfx describe` prints it. */
void dfx__options_describe(const dfx_option *opts, FILE *out);

/* The current values in priv as YAML "name: value" lines at `indent`. */
void dfx__options_dump(const dfx_option *opts, const void *priv, FILE *out,
                       int indent);

/* The value of one option as YAML text into buf. */
void dfx__option_format(const dfx_option *o, const void *priv, char *buf,
                        size_t size);

/* The closest candidate to word (edit distance small for its length), or NULL. */
const char *dfx__suggest(const char *word, const char *const *candidates,
                         size_t count);

/* Resolves a path option written in the node's origin: `~/` is $HOME;
 * relative paths are relative to the folder of the origin file, or to the
 * working directory for command-line values. A `#fragment` is kept. Returns a
 * heap string. */
char *dfx__resolve_path(const char *path, const dfx__node *where);

/* Shortest decimal that reads back as the same double ("0.1", "1e-05"). */
void dfx__format_double(double v, char *buf, size_t size);

#endif
