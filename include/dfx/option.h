/* Options as data: a component describes its settings in a table and the core
 * fills its private struct from the pipeline, validating generically (type,
 * range, choices, required, unknown keys). No component parses its options. */
#ifndef DFX_OPTION_H
#define DFX_OPTION_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dfx/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dfx_option_type {
    DFX_OPTION_TYPE_BOOL = 1,   /* stored as bool */
    DFX_OPTION_TYPE_INT,        /* int64_t */
    DFX_OPTION_TYPE_FLOAT,      /* double; NAN stands for null when nullable */
    DFX_OPTION_TYPE_ENUM,       /* int: index into choices */
    DFX_OPTION_TYPE_STRING,     /* char *, owned by the core (NULL = unset) */
    DFX_OPTION_TYPE_PATH,       /* char *, resolved against the pipeline file's
                                   folder and `~`; owned by the core */
    DFX_OPTION_TYPE_FLOATS,     /* dfx_floats, owned by the core */
    DFX_OPTION_TYPE_INTS        /* dfx_ints, owned by the core */
} dfx_option_type;

enum {
    DFX_OPTION_REQUIRED = 1u << 0,  /* the pipeline must give a value */
    DFX_OPTION_NULLABLE = 1u << 1   /* `null` is a valid value */
};

typedef struct dfx_floats {
    double *v;
    int64_t n;
} dfx_floats;

typedef struct dfx_ints {
    int64_t *v;
    int64_t n;
} dfx_ints;

typedef struct dfx_option {
    const char *name;           /* NULL ends a table */
    dfx_option_type type;
    size_t offset;              /* of the field in the component's priv */
    double def;                 /* BOOL (0/1), INT, FLOAT, ENUM (index) */
    const char *def_str;        /* STRING / PATH default; NULL = unset */
    double min, max;            /* INT / FLOAT and list elements, inclusive */
    const char *const *choices; /* ENUM: NULL-terminated names */
    unsigned flags;             /* DFX_OPTION_REQUIRED, DFX_OPTION_NULLABLE */
    const char *help;
} dfx_option;

#define DFX_OPTION_BOOL(name, off, def, help) \
    { (name), DFX_OPTION_TYPE_BOOL, (off), (def) ? 1.0 : 0.0, NULL, 0, 1, NULL, 0, (help) }
#define DFX_OPTION_INT(name, off, def, lo, hi, help) \
    { (name), DFX_OPTION_TYPE_INT, (off), (def), NULL, (lo), (hi), NULL, 0, (help) }
#define DFX_OPTION_FLOAT(name, off, def, lo, hi, help) \
    { (name), DFX_OPTION_TYPE_FLOAT, (off), (def), NULL, (lo), (hi), NULL, 0, (help) }
/* A float whose default is null (stored as NAN): "not given, derive it". */
#define DFX_OPTION_FLOAT_OR_NULL(name, off, lo, hi, help) \
    { (name), DFX_OPTION_TYPE_FLOAT, (off), NAN, NULL, (lo), (hi), NULL, DFX_OPTION_NULLABLE, (help) }
#define DFX_OPTION_ENUM(name, off, def, choices, help) \
    { (name), DFX_OPTION_TYPE_ENUM, (off), (def), NULL, 0, 0, (choices), 0, (help) }
#define DFX_OPTION_STRING(name, off, def, help) \
    { (name), DFX_OPTION_TYPE_STRING, (off), 0, (def), 0, 0, NULL, 0, (help) }
#define DFX_OPTION_PATH(name, off, help) \
    { (name), DFX_OPTION_TYPE_PATH, (off), 0, NULL, 0, 0, NULL, DFX_OPTION_NULLABLE, (help) }
#define DFX_OPTION_PATH_REQUIRED(name, off, help) \
    { (name), DFX_OPTION_TYPE_PATH, (off), 0, NULL, 0, 0, NULL, DFX_OPTION_REQUIRED, (help) }
#define DFX_OPTION_FLOATS(name, off, lo, hi, help) \
    { (name), DFX_OPTION_TYPE_FLOATS, (off), 0, NULL, (lo), (hi), NULL, 0, (help) }
#define DFX_OPTION_INTS(name, off, lo, hi, help) \
    { (name), DFX_OPTION_TYPE_INTS, (off), 0, NULL, (lo), (hi), NULL, 0, (help) }
#define DFX_OPTION_END { NULL, 0, 0, 0, NULL, 0, 0, NULL, 0, NULL }

/* The type's name as `dfx describe` prints it ("float", "enum", ...). */
DFX_API const char *dfx_option_type_name(dfx_option_type type);

#ifdef __cplusplus
}
#endif
#endif
