/* Core-internal declarations shared between core/ folders; never installed.
 * Non-static internals are named dfx__name. */
#ifndef DFX_CORE_INTERNAL_H
#define DFX_CORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dfx/json.h"
#include "dfx/safetensors.h"
#include "dfx/pipeline.h"
#include "dfx/status.h"
#include "dfx/tensor.h"

/* An output file written atomically: data goes to a temporary file in the
 * destination's folder, renamed over the destination by commit. */
typedef struct dfx__outfile {
    FILE *fp;
    char *path;
    char *tmp;
    char *made;   /* the top folder open created, removed again on failure */
} dfx__outfile;

/* Creates the missing folders above path and the temporary file; f->fp is
 * ready for writing. */
dfx_status dfx__outfile_open(dfx__outfile *f, const char *path);
/* Flushes, syncs, closes and renames; on failure removes the temporary file
 * and leaves the destination untouched. Always releases f. */
dfx_status dfx__outfile_commit(dfx__outfile *f);
/* Closes and removes the temporary file. Safe after a failed open. */
void dfx__outfile_abort(dfx__outfile *f);

/* One PNG text chunk: key is a PNG keyword (1-79 printable ASCII characters,
 * no leading, trailing or double spaces); value is UTF-8, written as tEXt
 * when it is ASCII and as iTXt otherwise. */
typedef struct dfx__png_text {
    const char *key;
    const char *value;
} dfx__png_text;

/* Writes an 8-bit PNG of width x height pixels, channels 1 (gray) or 3 (RGB),
 * rows top to bottom without padding, with `ntext` text chunks. Atomic (see
 * dfx__outfile): on any failure, libpng's included, no file is left at path
 * or beside it, and the message names path. */
dfx_status dfx__png_write(const char *path, const unsigned char *pixels, int width, int height,
                          int channels, const dfx__png_text *text, int ntext);

/* One image for dfx__png_encode and dfx__png_write_batch: the arguments of
 * dfx__png_write. */
typedef struct dfx__png_item {
    const char *path;
    const unsigned char *pixels;
    int width, height, channels;
    const dfx__png_text *text;
    int ntext;
} dfx__png_item;

/* The PNG file dfx__png_write would write, into a heap buffer (*data, freed
 * by the caller); item->path only names it in messages. */
dfx_status dfx__png_encode(const dfx__png_item *item, unsigned char **data, size_t *size);

/* Writes n PNGs as a whole: every image is checked and encoded before any
 * file is touched, then each file is written atomically (dfx__outfile); when
 * one of them fails, the ones this call already wrote are removed again, and
 * any folder it created. A file that was replaced is not brought back. */
dfx_status dfx__png_write_batch(const dfx__png_item *items, int n);

/* The largest image side dfx__png_read accepts (and so the largest the
 * image outputs write, so that every image dfx makes can be re-run). */
enum { DFX__PNG_MAX_SIDE = 16384 };

/* A PNG as dfx__png_read returns it: 8-bit samples whatever the file held
 * (palette expanded to RGB, tRNS to alpha, 16 bits rounded to 8, 1-4 bit
 * gray widened). */
typedef struct dfx__png_image {
    int width, height;
    int channels;            /* 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA */
    unsigned char *pixels;   /* rows top to bottom, width * channels bytes each */
    int ntext;
    dfx__png_text *text;     /* tEXt, zTXt and iTXt chunks in file order, as UTF-8 */
    char *strings;           /* the storage of text's keys and values */
} dfx__png_image;

/* Reads a PNG file strictly: a wrong signature, a CRC error in any chunk, a
 * file that ends before IEND, more than DFX__PNG_MAX_SIDE pixels a side,
 * more pixels than its bytes can hold, a text chunk beyond 8 MiB or more
 * than 64 of them, and whatever else libpng objects to (warnings included)
 * are DFX_ERR_FORMAT or DFX_ERR_UNSUPPORTED with a message naming path.
 * Chunks other than the pixels' and text are skipped, their CRCs checked.
 * Bytes after IEND are ignored. On failure *out is empty. Thread-safe. */
dfx_status dfx__png_read(const char *path, dfx__png_image *out);
/* The same from memory; `name` stands for the file in messages. The fuzzer
 * calls it directly. */
dfx_status dfx__png_read_memory(const char *name, const void *data, size_t size, dfx__png_image *out);
/* Releases what a successful read returned; safe on an emptied image. */
void dfx__png_image_fini(dfx__png_image *img);
/* The value of the first text chunk named key, or NULL. */
const char *dfx__png_image_text(const dfx__png_image *img, const char *key);

/* log p(x) for points x [N, 2] float32 into out[N]: dfx_model_ops.log_density's shape. */
typedef dfx_status (*dfx__log_density_fn)(void *ctx, const dfx_tensor *x, double *out);

/* Renders a scatter plot of n points (xy: x0, y0, x1, y1, ...) into rgb
 * [height][width][3]: an equal-aspect view of the points' 0.5-99.5%
 * quantile box with a margin, the data log-density shaded under them when
 * log_density is not NULL (called once, with every pixel centre), a grid
 * with tick labels, and the points as anti-aliased translucent dots. */
dfx_status dfx__plot_points(unsigned char *rgb, int width, int height, const float *xy, int64_t n,
                            dfx__log_density_fn log_density, void *ctx);

/* dir + "/" + name in a new string (free()); NULL when out of memory. */
char *dfx__path_join(const char *dir, const char *name);

/* Reads a whole file into a NUL-terminated heap buffer (*len excludes the
 * NUL). Errors name the path and the reason. */
dfx_status dfx__read_file(const char *path, char **data, size_t *len);

/* Gives back to the kernel the whole pages of [p, p + n) that lie in the
 * read-only file mapping [map, map + map_size); nothing when p is outside
 * it. The bytes stay readable (the file pages back them), so this only
 * lowers the resident set once a loader has converted what it read. */
void dfx__mapping_release(const void *map, size_t map_size, const void *p, size_t n);
/* The same for a tensor's bytes in a safetensors set's or a torch
 * checkpoint's mappings (a copy made at open is left alone). */
void dfx__safetensors_release(const dfx_safetensors *st, const void *p, size_t n);

/* 64-byte aligned allocation for tensor data; size 0 gives a valid pointer. */
void *dfx__aligned_alloc(size_t size);

/* strdup that reports no memory through the error message. */
char *dfx__strdup(const char *s);

/* Length of object member i's key (keys may hold an escaped NUL, which
 * dfx_json_key_at's C string cannot show); 0 when out of range. */
size_t dfx__json_key_len(const dfx_json *v, int64_t i);

/* Parses a safetensors image held in memory with the same checks as
 * dfx_safetensors_open (which maps the file and calls this); `name` stands
 * for the file in messages and dfx_safetensors_path. The set borrows data,
 * which must outlive it. The fuzzers call it directly. */
dfx_status dfx__safetensors_open_memory(const char *name, const void *data,
                                        size_t size, dfx_safetensors **out);

/* dfx_safetensors_write's body: checks the input, then writes the image to
 * fp; `name` stands for the destination in messages. Nothing is written when
 * the input is refused. */
dfx_status dfx__safetensors_write_stream(FILE *fp, const char *name,
                                         int64_t count,
                                         const char *const *names,
                                         const dfx_tensor *const *tensors,
                                         int64_t meta_count,
                                         const char *const *meta_keys,
                                         const char *const *meta_values);

/* "where: unknown sampler 'x' (did you mean 'y'?); `dfx list sampler` ..." */
dfx_status dfx__registry_unknown(const dfx_registry *reg, dfx_kind kind, const char *name,
                                 const char *where);

/* ---- pickle: a restricted unpickler (core/io/pickle.c) ----------------- */

/* What an unpickled value is. A pickle's globals resolve only to the
 * allow-listed names of dfx__pk_global; a call of one (REDUCE, NEWOBJ, ...)
 * is recorded as a CALL node and never executed. */
typedef enum dfx__pk_type {
    DFX__PK_NONE,
    DFX__PK_BOOL,
    DFX__PK_INT,
    DFX__PK_BIGINT,     /* an int beyond 64 bits: s holds its bytes */
    DFX__PK_FLOAT,
    DFX__PK_STR,
    DFX__PK_BYTES,
    DFX__PK_TUPLE,
    DFX__PK_LIST,
    DFX__PK_DICT,
    DFX__PK_SET,
    DFX__PK_FROZENSET,
    DFX__PK_GLOBAL,     /* an allowed global itself (a class as a dict key) */
    DFX__PK_CALL,       /* an allowed global applied to arguments */
    DFX__PK_PERSID,     /* a persistent id (torch: a storage reference) */
} dfx__pk_type;

/* The globals a pickle may name: what torch.save writes for tensors and
 * containers, and the inert objects training checkpoints carry beside them. */
typedef enum dfx__pk_global {
    DFX__PKG_REBUILD_TENSOR,             /* torch._utils._rebuild_tensor */
    DFX__PKG_REBUILD_TENSOR_V2,          /* torch._utils._rebuild_tensor_v2 */
    DFX__PKG_REBUILD_PARAMETER,          /* torch._utils._rebuild_parameter */
    DFX__PKG_REBUILD_PARAMETER_WITH_STATE,
    DFX__PKG_STORAGE,                    /* torch.FloatStorage etc.: dtype says which */
    DFX__PKG_ORDERED_DICT,               /* collections.OrderedDict: calls give a DICT */
    DFX__PKG_SIZE,                       /* torch.Size: a call gives its tuple */
    DFX__PKG_SET,                        /* builtins.set: a call gives a SET */
    DFX__PKG_FROZENSET,
    DFX__PKG_INERT,                      /* a placeholder that never becomes a tensor */
} dfx__pk_global;

typedef struct dfx__pk dfx__pk;
struct dfx__pk {
    dfx__pk_type type;
    dfx__pk_global global;   /* GLOBAL, CALL */
    dfx_dtype dtype;         /* GLOBAL and CALL of DFX__PKG_STORAGE */
    int64_t i;               /* BOOL (0 or 1), INT */
    double f;                /* FLOAT */
    const char *s;           /* NUL-terminated: STR (UTF-8), BYTES, BIGINT (little-endian
                              * two's complement), GLOBAL and CALL ("module.name") */
    size_t len;              /* of s, the NUL excluded */
    dfx__pk **items;         /* TUPLE, LIST, SET, FROZENSET: n items; DICT: key, value,
                              * key, value, ... in pickle order (n = 2 * pairs) */
    int64_t n, cap;
    dfx__pk *arg;            /* CALL: the argument tuple; PERSID: the id */
    dfx__pk *kwargs;         /* CALL through NEWOBJ_EX: its keyword dict, else NULL */
    dfx__pk *state;          /* CALL, DICT: the last BUILD's state (attributes), or NULL */
};

typedef struct dfx__pickle dfx__pickle;

/* Unpickles data[0..size) up to its STOP opcode (protocols 0-5). A global
 * outside the allow-list is refused when its GLOBAL/STACK_GLOBAL/INST opcode
 * is read: DFX_ERR_FORMAT "FILE: refuses to unpickle global 'os.system' (only
 * tensor data and plain containers are read)"; so are extension codes and
 * out-of-band buffers. Memory is bounded (DFX__PICKLE_MAX_BYTES) whatever the
 * input. *used receives the bytes read (STOP included); used NULL: bytes
 * after STOP are an error. `file` names the input in messages. */
dfx_status dfx__pickle_load(const char *file, const void *data, size_t size, size_t *used,
                            dfx__pickle **out);
void dfx__pickle_free(dfx__pickle *p);
const dfx__pk *dfx__pickle_root(const dfx__pickle *p);
/* Every persistent id met, in pickle order (BINPERSID and PERSID). */
int64_t dfx__pickle_persid_count(const dfx__pickle *p);
const dfx__pk *dfx__pickle_persid(const dfx__pickle *p, int64_t i);
/* "a tuple", "an int", "None", ... for messages. */
const char *dfx__pk_type_name(const dfx__pk *v);

enum { DFX__PICKLE_MAX_BYTES = 256 << 20 };

/* ---- torch checkpoints (core/io/torch.c) ------------------------------- */

/* A torch.save file read as a flat table of named tensors: the zip format
 * (torch >= 1.6) or the legacy one, the pickle through dfx__pickle_load.
 * The state dict is the top-level dict, or its "state_dict" entry when that
 * is a dict; entries that are not tensors are skipped. */
typedef struct dfx__torch dfx__torch;

/* True when the first bytes of a file (n of them, 9 or more to decide) are
 * a zip archive's or a pickle's and not a safetensors header's: what
 * dfx_weights_open serves through dfx__torch_open. */
bool dfx__torch_detect(const void *head, size_t n);

/* Maps path and reads it; errors name path and the problem. */
dfx_status dfx__torch_open(const char *path, dfx__torch **out);
/* The same from memory; `name` stands for the file in messages. The table
 * borrows data, which must outlive it. The fuzzers call it directly. */
dfx_status dfx__torch_open_memory(const char *name, const void *data, size_t size,
                                  dfx__torch **out);
void dfx__torch_close(dfx__torch *t);
void dfx__torch_release(const dfx__torch *t, const void *p, size_t n);
const char *dfx__torch_path(const dfx__torch *t);
/* "torch zip" or "torch legacy". */
const char *dfx__torch_format(const dfx__torch *t);
/* Tensors in state-dict order. */
int64_t dfx__torch_count(const dfx__torch *t);
const char *dfx__torch_name(const dfx__torch *t, int64_t i);
/* Tensor i: a view into the file (possibly unaligned) when it is contiguous,
 * else a copy made at open; valid until close. */
const dfx_tensor *dfx__torch_tensor(const dfx__torch *t, int64_t i);

#endif
