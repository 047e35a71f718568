/* safetensors files: a reader (memory-mapped, every dtype, sharded sets through
 * their *.index.json, strict header checks) and an atomic writer. */
#ifndef DFX_SAFETENSORS_H
#define DFX_SAFETENSORS_H

#include <stdint.h>

#include "dfx/status.h"
#include "dfx/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dfx_safetensors dfx_safetensors;

/* Opens a .safetensors file, or a sharded set given its index file
 * (model.safetensors.index.json: {"weight_map": {tensor: shard file}}).
 * The header is validated in full before this returns: its length, JSON
 * syntax, known dtypes, shapes whose byte size does not overflow and equals
 * the offsets' span, offsets inside the file, no overlaps, no gaps, no
 * duplicate names. Errors name the file and the tensor. */
DFX_API dfx_status dfx_safetensors_open(const char *path, dfx_safetensors **out);

/* Unmaps and frees. NULL is a no-op. Views from dfx_safetensors_view die here. */
DFX_API void dfx_safetensors_close(dfx_safetensors *st);

/* Tensors, in order of their data offsets (file by file for a sharded set). */
DFX_API int64_t dfx_safetensors_count(const dfx_safetensors *st);
DFX_API const char *dfx_safetensors_name(const dfx_safetensors *st, int64_t i);

/* True when the set holds a tensor with this name. */
DFX_API bool dfx_safetensors_has(const dfx_safetensors *st, const char *name);

/* A read-only view into the mapped file (owns_data false; valid until close).
 * The data may be unaligned for its dtype: copy or convert before using it as
 * an array. DFX_ERR_NOT_FOUND names the file and the tensor. */
DFX_API dfx_status dfx_safetensors_view(const dfx_safetensors *st,
                                        const char *name, dfx_tensor *out);

/* A new tensor holding the named tensor converted to `dtype`. */
DFX_API dfx_status dfx_safetensors_read(const dfx_safetensors *st,
                                        const char *name, dfx_dtype dtype,
                                        dfx_tensor **out);

/* The string-to-string "__metadata__" entries (of the index file's "metadata"
 * for a sharded set, where only its string values count). */
DFX_API int64_t dfx_safetensors_metadata_count(const dfx_safetensors *st);
DFX_API const char *dfx_safetensors_metadata_key(const dfx_safetensors *st,
                                                 int64_t i);
/* The value for key, or NULL. */
DFX_API const char *dfx_safetensors_metadata(const dfx_safetensors *st,
                                             const char *key);

/* The path it was opened with. */
DFX_API const char *dfx_safetensors_path(const dfx_safetensors *st);

/* Writes `count` tensors (names unique) and optional metadata pairs to path,
 * through a temporary file in the same folder that is renamed over path only
 * when complete; on any failure path is left as it was. The header lists the
 * tensors in the given order, data back to back, the header padded with
 * spaces to a multiple of 8 bytes. */
DFX_API dfx_status dfx_safetensors_write(const char *path, int64_t count,
                                         const char *const *names,
                                         const dfx_tensor *const *tensors,
                                         int64_t meta_count,
                                         const char *const *meta_keys,
                                         const char *const *meta_values);

#ifdef __cplusplus
}
#endif
#endif
