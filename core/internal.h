/* Core-internal declarations shared between core/ folders; never installed.
 * Non-static internals are named dfx__name. */
#ifndef DFX_CORE_INTERNAL_H
#define DFX_CORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "dfx/status.h"

/* An output file written atomically: data goes to a temporary file in the
 * destination's folder, renamed over the destination by commit. */
typedef struct dfx__outfile {
    FILE *fp;
    char *path;
    char *tmp;
} dfx__outfile;

/* Creates the temporary file; f->fp is ready for writing. */
dfx_status dfx__outfile_open(dfx__outfile *f, const char *path);
/* Flushes, syncs, closes and renames; on failure removes the temporary file
 * and leaves the destination untouched. Always releases f. */
dfx_status dfx__outfile_commit(dfx__outfile *f);
/* Closes and removes the temporary file. Safe after a failed open. */
void dfx__outfile_abort(dfx__outfile *f);

/* Reads a whole file into a NUL-terminated heap buffer (*len excludes the
 * NUL). Errors name the path and the reason. */
dfx_status dfx__read_file(const char *path, char **data, size_t *len);

/* 64-byte aligned allocation for tensor data; size 0 gives a valid pointer. */
void *dfx__aligned_alloc(size_t size);

/* strdup that reports no memory through the error message. */
char *dfx__strdup(const char *s);

#endif
