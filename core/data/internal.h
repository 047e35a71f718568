/* Declarations shared by the files of core/data (never installed): a byte
 * source that reads a file image held in memory as it is or, when it starts
 * with gzip's magic bytes, through zlib, and the from-memory entry points of
 * the idx and CSV readers that the fuzzers call. */
#ifndef DFX_CORE_DATA_INTERNAL_H
#define DFX_CORE_DATA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

#include "dfx/data.h"

/* deflate's best ratio (258 bytes from 2 bits), rounded up: no gzip stream
 * of n bytes holds more than n * DFX__DEFLATE_MAX_RATIO bytes */
enum { DFX__DEFLATE_MAX_RATIO = 1032 };

/* A file image read front to back: the bytes themselves, or the
 * decompressed content of the gzip members they hold (told by the first
 * two bytes, 1f 8b). Every member's CRC and length are checked; bytes after
 * the last member that do not start another member are an error, as is a
 * stream that ends before its end marker. Errors name `name`. */
typedef struct dfx__data_src {
    const char *name;
    const unsigned char *data;
    size_t size, pos;          /* pos: the next unread byte of data */
    bool gz;
    bool z_ready;              /* inflateInit2 done: inflateEnd owed */
    bool z_member_end;         /* the current member ended (Z_STREAM_END) */
    bool eof;
    z_stream z;
} dfx__data_src;

/* Starts reading data[0, size); borrows name and data, which must outlive
 * the source. Release with dfx__data_src_fini. */
dfx_status dfx__data_src_init(dfx__data_src *s, const char *name, const void *data, size_t size);
void dfx__data_src_fini(dfx__data_src *s);

/* Reads up to n bytes into dst; *got < n only at the end of the content.
 * A gzip error (corrupt data, a CRC or length mismatch, truncation,
 * garbage after the stream) is DFX_ERR_FORMAT "NAME: corrupt gzip stream:
 * ZLIB'S MESSAGE" or similar. */
dfx_status dfx__data_src_read(dfx__data_src *s, void *dst, size_t n, size_t *got);

/* The most content bytes that can remain: exact for plain bytes, a bound
 * from deflate's best ratio for gzip. */
uint64_t dfx__data_src_bound(const dfx__data_src *s);

/* Reads the whole content into a NUL-terminated heap buffer (*len excludes
 * the NUL); more than `max` bytes is DFX_ERR_UNSUPPORTED. */
dfx_status dfx__data_src_read_all(dfx__data_src *s, size_t max, char **data, size_t *len);

/* dfx_idx_read on a file image in memory (raw or gzip); `name` stands for
 * the file in messages. */
dfx_status dfx__idx_read_mem(const char *name, const void *data, size_t size, dfx_tensor **out);

/* dfx_csv_read on a file image in memory (raw or gzip); `name` stands for
 * the file in messages and dfx_csv_path. opt NULL: the defaults. */
dfx_status dfx__csv_parse_mem(const char *name, const void *data, size_t size,
                              const dfx_csv_options *opt, dfx_csv **out);

/* The largest CSV content (decompressed) dfx_csv_read accepts. */
#define DFX__CSV_MAX_BYTES ((size_t)1 << 31)

#endif
