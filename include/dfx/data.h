/* Training data: LeCun's idx files (MNIST, Fashion-MNIST), CSV tables,
 * image datasets and a batch loader.
 *
 * Every reader takes plain or gzip-compressed files, told by the first two
 * bytes (1f 8b), not by the name, and is strict: a malformed file is
 * refused with a non-zero dfx_status and a message (dfx_error_message)
 * naming the file, the line where one applies, and what was expected.
 * Nothing is fixed up silently.
 *
 * The loader is a pure function of (seed, step): batch `step` is the same
 * whenever and on however many threads it is computed, so a training run
 * resumed at step k sees exactly the batches an uninterrupted one would. */
#ifndef DFX_DATA_H
#define DFX_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dfx/status.h"
#include "dfx/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- idx files ---------------------------------------------------------- */

/* Reads an idx file (LeCun's MNIST format: bytes 00 00 TYPE NDIM, NDIM
 * big-endian uint32 dimensions, then the elements, big-endian, row-major)
 * into a new tensor of the stored type and shape: TYPE 0x08 gives
 * DFX_DTYPE_U8, 0x09 I8, 0x0B I16, 0x0C I32, 0x0D F32, 0x0E F64 (values in
 * host byte order). Errors, all naming path (*out is NULL then):
 *   DFX_ERR_NOT_FOUND / DFX_ERR_IO   the file cannot be opened or read;
 *   DFX_ERR_FORMAT "PATH: not an idx file (it starts with 12 34 56 78,
 *     expected 00 00 TYPE NDIM)";
 *   DFX_ERR_FORMAT "PATH: unknown idx type byte 0x07 (expected 0x08, 0x09,
 *     0x0b, 0x0c, 0x0d or 0x0e)";
 *   DFX_ERR_FORMAT "PATH: 0 dimensions (expected 1 to 4)";
 *   DFX_ERR_UNSUPPORTED "PATH: 5 dimensions (expected 1 to 4)";
 *   DFX_ERR_FORMAT "PATH: dimension 2 of [3,0,4] is 0";
 *   DFX_ERR_FORMAT "PATH: dimensions [..] make more bytes than memory holds";
 *   DFX_ERR_FORMAT "PATH: truncated: ..." (the header or the data ends
 *     before the size the header declares);
 *   DFX_ERR_FORMAT "PATH: N trailing bytes after the data the header
 *     declares";
 *   DFX_ERR_FORMAT "PATH: corrupt gzip stream: ZLIB'S MESSAGE" (a bad
 *     block, CRC or length), "PATH: truncated gzip stream ...", "PATH: N
 *     bytes of garbage after the gzip stream".
 * Thread-safe. */
DFX_API dfx_status dfx_idx_read(const char *path, dfx_tensor **out);

/* ---- CSV tables ------------------------------------------------------- */

typedef enum dfx_csv_header {
    DFX_CSV_HEADER_AUTO = 0,  /* the first row is a header when any of its cells is not a number */
    DFX_CSV_HEADER_YES,       /* the first row is a header */
    DFX_CSV_HEADER_NO,        /* every row is data */
} dfx_csv_header;

typedef struct dfx_csv_options {
    dfx_csv_header header;    /* DFX_CSV_HEADER_AUTO */
    char delimiter;           /* ','; not '"', CR, LF or NUL */
} dfx_csv_options;

/* Fills the defaults (above). */
DFX_API void dfx_csv_options_init(dfx_csv_options *opt);

/* A table of strings: rows x cols cells, and the column names when the
 * file has a header. Read-only once read: safe to share between threads. */
typedef struct dfx_csv dfx_csv;

/* Reads a CSV file (RFC 4180): fields separated by opt->delimiter, records
 * by LF or CRLF (a lone CR counts as a line break too); a field in double
 * quotes may hold delimiters, line breaks and quotes written twice (""); a
 * UTF-8 byte order mark at the start is skipped; empty lines are skipped
 * (write "" for a one-column row holding the empty string); the last line
 * needs no line break. Lines in messages are the file's 1-based physical
 * lines (a quoted line break starts a new one). opt NULL: the defaults.
 * Errors (*out is NULL then):
 *   DFX_ERR_FORMAT "PATH:LINE: row has 7 fields, expected 8" (every row
 *     has the first row's field count);
 *   DFX_ERR_FORMAT "PATH:LINE: a quoted field is not closed (it opens on
 *     this line)", "PATH:LINE: '\"' inside an unquoted field (quote the
 *     whole field and write the quote twice)", "PATH:LINE: 'x' after a
 *     closing quote (expected the delimiter or the end of the line)",
 *     "PATH:LINE: a NUL byte";
 *   DFX_ERR_FORMAT "PATH: no rows" for a file without any;
 *   DFX_ERR_UNSUPPORTED beyond 2 GiB of (decompressed) text;
 *   the gzip and file errors of dfx_idx_read;
 *   DFX_ERR_INVALID_ARG for a bad delimiter. */
DFX_API dfx_status dfx_csv_read(const char *path, const dfx_csv_options *opt, dfx_csv **out);
/* NULL is a no-op. */
DFX_API void dfx_csv_destroy(dfx_csv *csv);

/* The path as given to dfx_csv_read. */
DFX_API const char *dfx_csv_path(const dfx_csv *csv);
/* Data rows (the header not counted) and columns. */
DFX_API int64_t dfx_csv_rows(const dfx_csv *csv);
DFX_API int64_t dfx_csv_cols(const dfx_csv *csv);
DFX_API bool dfx_csv_has_header(const dfx_csv *csv);
/* Column col's name from the header; NULL without a header or when col is
 * out of range. */
DFX_API const char *dfx_csv_column_name(const dfx_csv *csv, int64_t col);
/* The first column named `name`, or -1. */
DFX_API int64_t dfx_csv_column_index(const dfx_csv *csv, const char *name);
/* A cell's text, quotes removed ("" made one quote), NUL-terminated, valid
 * until destroy; NULL when row or col is out of range. */
DFX_API const char *dfx_csv_cell(const dfx_csv *csv, int64_t row, int64_t col);
/* The 1-based physical line on which data row `row` starts; 0 when out of
 * range. */
DFX_API int64_t dfx_csv_line(const dfx_csv *csv, int64_t row);

/* A cell as a number: the whole cell, spaces and tabs around it allowed,
 * must be a decimal floating-point number as C's strtod reads it in the C
 * locale (whatever the process's locale), "nan" and "inf" included,
 * hexadecimal not. Errors: DFX_ERR_FORMAT "PATH:LINE: column 3 ('GBP'):
 * expected a number, got 'abc'" (columns counted from 1, the name only
 * with a header), DFX_ERR_RANGE for a value beyond double's range,
 * DFX_ERR_INVALID_ARG for a cell out of range. */
DFX_API dfx_status dfx_csv_number(const dfx_csv *csv, int64_t row, int64_t col, double *out);

/* Every data cell as a number, row-major, into a new rows x cols array
 * (free with free(); NULL for a table of no rows). The first cell that is
 * not a number fails as dfx_csv_number says; *out is NULL then. */
DFX_API dfx_status dfx_csv_matrix(const dfx_csv *csv, double **out);

/* ---- image datasets ----------------------------------------------------- */

/* N images of one shape [C, H, W], 8 bits a sample, with optional int64
 * labels. Items come out as float32 x / 127.5 - 1, in [-1, 1]. Read-only
 * once made: safe to share between threads and loaders. */
typedef struct dfx_dataset dfx_dataset;

/* A dataset holding a copy of pixels [n, channels, height, width] and, when
 * labels is not NULL, of labels [n]. DFX_ERR_INVALID_ARG for n < 1, a side
 * or channel count < 1, or more than 2^32 - 1 items. */
DFX_API dfx_status dfx_dataset_create(int64_t n, int channels, int height, int width,
                                      const uint8_t *pixels, const int64_t *labels,
                                      dfx_dataset **out);

/* Images from an idx file of type 0x08 (u8): [N, H, W] gives C = 1, [N, H,
 * W, C] is transposed to [C, H, W]. Labels (labels_path not NULL) from a 1-D
 * idx file of an integer type with N entries. Errors: those of dfx_idx_read;
 * DFX_ERR_UNSUPPORTED "PATH: images must be u8 (idx type 0x08), not F32";
 * DFX_ERR_FORMAT "PATH: images of shape [5] (expected [N,H,W] or
 * [N,H,W,C])", "LABELS: labels of shape [5,2] (expected [N])", "LABELS: 59999
 * labels for the 60000 images of IMAGES". */
DFX_API dfx_status dfx_dataset_open_idx(const char *images_path, const char *labels_path,
                                        dfx_dataset **out);

/* Every *.png in folder dir (names beginning with '.' skipped), sorted by
 * name in byte order, read with dfx's strict PNG reader (8 bits a sample:
 * palettes become RGB, 16 bits are rounded to 8); C is the number of
 * channels of the first image (1 gray, 2 gray + alpha, 3 RGB, 4 RGBA). No
 * labels. Errors: DFX_ERR_NOT_FOUND "DIR: no *.png files"; DFX_ERR_FORMAT
 * "DIR/b.png: 32x32 RGB, expected 28x28 gray like DIR/a.png (the first
 * image)"; a PNG reader error naming the file. */
DFX_API dfx_status dfx_dataset_open_png_dir(const char *dir, dfx_dataset **out);

/* NULL is a no-op. A loader must not outlive its dataset. */
DFX_API void dfx_dataset_destroy(dfx_dataset *ds);

DFX_API int64_t dfx_dataset_count(const dfx_dataset *ds);
/* shape[0..3) = C, H, W. */
DFX_API void dfx_dataset_shape(const dfx_dataset *ds, int64_t shape[3]);
DFX_API bool dfx_dataset_has_labels(const dfx_dataset *ds);

/* Item i as float32 [C, H, W] into x and its label into *label (label may
 * be NULL; must be NULL for a dataset without labels). DFX_ERR_INVALID_ARG
 * for i out of range or a label asked of a dataset without labels. */
DFX_API dfx_status dfx_dataset_item(const dfx_dataset *ds, int64_t i, float *x, int64_t *label);

/* ---- batches ------------------------------------------------------------ */

typedef struct dfx_loader_options {
    bool shuffle;        /* true: each epoch in its own random order */
    bool hflip;          /* false: true mirrors each item left-right with probability 1/2 */
    int pad_h, pad_w;    /* 0, 0: output size, >= the images' (28x28 -> 32x32); the image
                          * centred (an odd excess goes to the bottom and right), the
                          * border -1 (black); 0 keeps that side as it is */
} dfx_loader_options;

/* Fills the defaults (above). */
DFX_API void dfx_loader_options_init(dfx_loader_options *opt);

/* Batches of a dataset. The item sequence is the concatenation of epoch 0,
 * 1, 2, ...: each epoch every item once, in dataset order without shuffle,
 * else in the order of a Fisher-Yates shuffle drawn from a dfx_rng seeded
 * with a hash of (seed, epoch). Batch `step` holds positions [step * B,
 * step * B + B) of that sequence, crossing epoch boundaries where they fall
 * (no item is dropped or repeated within an epoch). With hflip, the item at
 * position p is mirrored when a counter-based hash of (seed, epoch, p's
 * place in its epoch) says so: no generator state, so the result does not
 * depend on which batches were made before or on the thread count. The
 * mirror is applied before the padding. */
typedef struct dfx_loader dfx_loader;

/* A loader of batch_size items a batch over ds (borrowed: it must outlive
 * the loader). opt NULL: the defaults. DFX_ERR_INVALID_ARG for batch_size
 * outside [1, 2^32], DFX_ERR_RANGE "loader: pad_to 20x20 is smaller than the images
 * (28x28)". */
DFX_API dfx_status dfx_loader_create(const dfx_dataset *ds, int64_t batch_size, uint64_t seed,
                                     const dfx_loader_options *opt, dfx_loader **out);
/* NULL is a no-op. */
DFX_API void dfx_loader_destroy(dfx_loader *l);

/* shape[0..4) = B, C, H, W of a batch (H, W after padding). */
DFX_API void dfx_loader_shape(const dfx_loader *l, int64_t shape[4]);

/* Batch `step` (>= 0) into x [B, C, H, W] float32 (not NULL) and, when labels is not
 * NULL, the items' labels into labels [B]. A pure function of the loader's
 * dataset, seed, options and step. Assembles the items on OpenMP threads
 * when the batch is large enough and threads do not slow dfx's matrix
 * products down (see nn.h). Keeps the permutations of the last epochs it
 * needed: one thread at a time per loader. Errors: DFX_ERR_RANGE for a
 * negative step or one whose positions overflow int64; DFX_ERR_INVALID_ARG
 * for labels asked of a dataset without labels. */
DFX_API dfx_status dfx_loader_batch(dfx_loader *l, int64_t step, float *x, int64_t *labels);

/* The epoch of batch step's first item, and the epochs done when batch
 * `step` is finished as a fraction (2.5: two and a half), for progress
 * display; -1 for a negative step or one that overflows. */
DFX_API int64_t dfx_loader_epoch_of(const dfx_loader *l, int64_t step);
DFX_API double dfx_loader_epochs_done(const dfx_loader *l, int64_t step);

#ifdef __cplusplus
}
#endif
#endif
