/* A strict JSON reader for config files (diffusers, transformers, safetensors
 * headers). It also accepts the non-standard NaN, Infinity and -Infinity that
 * Python's json module writes (diffusers writes "lambda_min_clipped":
 * -Infinity). Errors name origin:line:col. */
#ifndef DFX_JSON_H
#define DFX_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dfx/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dfx_json_type {
    DFX_JSON_NULL = 0,
    DFX_JSON_BOOL,
    DFX_JSON_NUMBER,
    DFX_JSON_STRING,
    DFX_JSON_ARRAY,
    DFX_JSON_OBJECT
} dfx_json_type;

typedef struct dfx_json dfx_json;

/* Parses text[0..len) (need not be NUL-terminated). `origin` names the source
 * in error messages (a path). Nesting deeper than 256 is an error. On failure
 * *out is NULL and the message reads "origin:line:col: what was expected". */
DFX_API dfx_status dfx_json_parse(const char *text, size_t len,
                                  const char *origin, dfx_json **out);

/* Reads and parses a whole file. */
DFX_API dfx_status dfx_json_parse_file(const char *path, dfx_json **out);

/* Frees a document returned by a parse function. NULL is a no-op. */
DFX_API void dfx_json_destroy(dfx_json *doc);

DFX_API dfx_json_type dfx_json_type_of(const dfx_json *v);
DFX_API const char *dfx_json_type_name(dfx_json_type type);

/* Position of the value in its source (1-based). */
DFX_API int dfx_json_line(const dfx_json *v);
DFX_API int dfx_json_column(const dfx_json *v);

/* Number of elements of an array or members of an object; 0 otherwise. */
DFX_API int64_t dfx_json_size(const dfx_json *v);

/* Array element i, or NULL when v is not an array or i is out of range. */
DFX_API const dfx_json *dfx_json_at(const dfx_json *v, int64_t i);

/* Object member i in source order: its key and value (NULL when out of range). */
DFX_API const char *dfx_json_key_at(const dfx_json *v, int64_t i);
DFX_API const dfx_json *dfx_json_value_at(const dfx_json *v, int64_t i);

/* The member named key (the last one if repeated), or NULL when absent or when
 * v is not an object. */
DFX_API const dfx_json *dfx_json_get(const dfx_json *v, const char *key);

/* Scalar accessors. number: NAN unless a number; bool: false unless true;
 * string: NULL unless a string (NUL-terminated UTF-8; an embedded \u0000
 * truncates it, see dfx_json_string_len). */
DFX_API double dfx_json_number(const dfx_json *v);
DFX_API bool dfx_json_bool(const dfx_json *v);
DFX_API const char *dfx_json_string(const dfx_json *v);
DFX_API size_t dfx_json_string_len(const dfx_json *v);

/* True when v is a number written as an integer literal (no fraction or
 * exponent) that fits in int64; stores it in *out. */
DFX_API bool dfx_json_int(const dfx_json *v, int64_t *out);

#ifdef __cplusplus
}
#endif
#endif
