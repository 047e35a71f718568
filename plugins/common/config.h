/* Helpers shared by the model plugins (a static library, not installed):
 * files and folders, and typed reads of diffusers / transformers
 * config.json fields whose errors name the file, line and field. */
#ifndef DFX_PLUGINS_CONFIG_H
#define DFX_PLUGINS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dfx/json.h"
#include "dfx/status.h"

bool dfxp_is_dir(const char *path);
bool dfxp_is_file(const char *path);
/* a + "/" + b in a new string (NULL when out of memory). */
char *dfxp_join(const char *a, const char *b);

/* A whole file into a new buffer (*out, free with free(); not
 * NUL-terminated) of *len bytes. Errors name the file. */
dfx_status dfxp_read_text(const char *path, char **out, size_t *len);
/* Writes text [0, len) as DIR/config.json: what a trainable model's
 * save_config writes, the config.json it was built from. */
dfx_status dfxp_write_config(const char *dir, const char *text, size_t len);

/* A config document being read: `path` names it in messages, `who` is the
 * component reading it ("unet2d") for "not supported by dfx's unet2d". */
typedef struct dfxp_config {
    const char *path;
    const dfx_json *root;
    const char *who;
} dfxp_config;

/* DFX_ERR_UNSUPPORTED "PATH:LINE:COL: field 'KEY': MSG", or for an absent
 * field "PATH: field 'KEY' (absent, so diffusers' default): MSG". */
dfx_status dfxp_field_error(const dfxp_config *r, const char *key, const char *msg);

/* Typed fields; absent or null reads as def. */
dfx_status dfxp_get_int(const dfxp_config *r, const char *key, int64_t def, int64_t lo, int64_t hi,
                        int64_t *out);
dfx_status dfxp_get_bool(const dfxp_config *r, const char *key, bool def, bool *out);
dfx_status dfxp_get_number(const dfxp_config *r, const char *key, double def, double *out);
/* A string that must be one of `allowed` (NULL-terminated); *index (may be
 * NULL) receives its position. */
dfx_status dfxp_get_choice(const dfxp_config *r, const char *key, const char *def,
                           const char *const *allowed, int *index);
/* An array of n integers (n = 0: any length, up to max; *n receives it). */
dfx_status dfxp_get_ints(const dfxp_config *r, const char *key, int64_t lo, int64_t hi, int64_t max,
                         int64_t *out, int64_t *n);
/* Fails on the first member of the root object not in `known`
 * (NULL-terminated): a field dfx cannot honour must not be ignored. */
dfx_status dfxp_check_known(const dfxp_config *r, const char *const *known);

#endif
