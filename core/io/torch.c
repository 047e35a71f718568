/* torch.save checkpoints (.ckpt, .pt, .pth, .bin) as a flat table of named
 * tensors, read through the restricted unpickler (pickle.c) so that loading
 * a file never runs anything it names. Both formats of torch/serialization.py:
 * the zip archive of torch >= 1.6 (_save: "<name>/data.pkl" and one stored
 * entry "<name>/data/<key>" per storage) and the legacy stream (_legacy_save:
 * magic number, protocol version and sys_info pickles, the object pickle,
 * the storage key list, then each storage's element count and bytes). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"

/* torch/serialization.py MAGIC_NUMBER 0x1950a86a20f9469cfc6c as LONG1 writes
 * it (little-endian), and PROTOCOL_VERSION. */
static const unsigned char legacy_magic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                               0x20, 0x6a, 0xa8, 0x50, 0x19};
#define LEGACY_PROTOCOL_VERSION 1001

/* Keys of the state dict listed when none of its entries is a tensor. */
#define KEYS_SHOWN 5

struct dfx__torch {
    char *path;
    const char *format;
    void *map;                  /* the mapped file, or NULL */
    size_t map_size;
    int64_t count, cap;
    char **names;
    dfx_tensor *tensors;
    void **copies;              /* non-contiguous tensors' data, one per tensor or NULL */
    uint64_t copied;            /* bytes in copies, bounded by the file size */
    uint64_t name_bytes;        /* bytes in names, bounded likewise */
};

/* A zip entry (APPNOTE.TXT 4.3.12): its name points into the central
 * directory, unterminated. */
typedef struct zip_entry {
    const char *name;
    size_t name_len;
    uint16_t method, flags;
    uint32_t crc;
    uint64_t local, data, csize, usize;   /* offsets into the file, sizes */
} zip_entry;

/* A storage of the legacy format: its bytes follow the key list. */
typedef struct legacy_storage {
    const char *key;
    size_t key_len;
    dfx_dtype dtype;
    int64_t numel;
    const unsigned char *data;  /* NULL until the key list places it */
} legacy_storage;

typedef struct reader {
    const char *file;
    const unsigned char *img;
    size_t size;
    bool legacy;
    zip_entry *entries;         /* sorted by name */
    int64_t nentries;
    const char *prefix;         /* the archive's folder, unterminated */
    size_t prefix_len;
    legacy_storage *storages;   /* sorted by key */
    int64_t nstorages;
} reader;

/* What a tensor's persistent id resolves to. */
typedef struct storage {
    const char *key;
    dfx_dtype dtype;
    const unsigned char *data;
    int64_t numel;
} storage;

static dfx_status no_memory(const char *file)
{
    return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", file);
}

bool dfx__torch_detect(const void *head, size_t n)
{
    const unsigned char *b = head;
    if (n >= 4 && b[0] == 'P' && b[1] == 'K' &&
        ((b[2] == 3 && b[3] == 4) || (b[2] == 5 && b[3] == 6)))
        return true;
    /* a safetensors file: an 8-byte header length, then the header's '{' */
    if (n >= 9 && b[8] == '{')
        return false;
    /* a pickle of protocol 2 or later opens with PROTO; the legacy format
     * of protocols 0 and 1 opens with the magic number as a text LONG */
    return (n >= 1 && b[0] == 0x80) || (n >= 2 && b[0] == 'L' && b[1] >= '0' && b[1] <= '9');
}

/* ---- the table ---------------------------------------------------------- */

static dfx_status table_add(dfx__torch *t, const char *name, const dfx_tensor *v, void *copy)
{
    if (t->count == t->cap) {
        int64_t cap = t->cap ? 2 * t->cap : 64;
        char **names = realloc(t->names, (size_t)cap * sizeof *names);
        if (names)
            t->names = names;
        dfx_tensor *tensors = realloc(t->tensors, (size_t)cap * sizeof *tensors);
        if (tensors)
            t->tensors = tensors;
        void **copies = realloc(t->copies, (size_t)cap * sizeof *copies);
        if (copies)
            t->copies = copies;
        if (!names || !tensors || !copies) {
            free(copy);
            return no_memory(t->path);
        }
        t->cap = cap;
    }
    char *dup = strdup(name);
    if (!dup) {
        free(copy);
        return no_memory(t->path);
    }
    t->names[t->count] = dup;
    t->tensors[t->count] = *v;
    t->copies[t->count] = copy;
    t->count++;
    return DFX_OK;
}

void dfx__torch_close(dfx__torch *t)
{
    if (!t)
        return;
    for (int64_t i = 0; i < t->count; i++) {
        free(t->names[i]);
        free(t->copies[i]);
    }
    free(t->names);
    free(t->tensors);
    free(t->copies);
    if (t->map)
        munmap(t->map, t->map_size);
    free(t->path);
    free(t);
}

const char *dfx__torch_path(const dfx__torch *t)
{
    return t ? t->path : NULL;
}

const char *dfx__torch_format(const dfx__torch *t)
{
    return t ? t->format : NULL;
}

int64_t dfx__torch_count(const dfx__torch *t)
{
    return t ? t->count : 0;
}

const char *dfx__torch_name(const dfx__torch *t, int64_t i)
{
    return t && i >= 0 && i < t->count ? t->names[i] : NULL;
}

const dfx_tensor *dfx__torch_tensor(const dfx__torch *t, int64_t i)
{
    return t && i >= 0 && i < t->count ? &t->tensors[i] : NULL;
}

/* ---- zip archives (APPNOTE.TXT 6.3) ------------------------------------ */

enum {
    ZIP_LOCAL_SIG = 0x04034b50, ZIP_CENTRAL_SIG = 0x02014b50, ZIP_END_SIG = 0x06054b50,
    ZIP64_END_SIG = 0x06064b50, ZIP64_LOCATOR_SIG = 0x07064b50,
    ZIP_LOCAL_SIZE = 30, ZIP_CENTRAL_SIZE = 46, ZIP_END_SIZE = 22,
    ZIP64_END_SIZE = 56, ZIP64_LOCATOR_SIZE = 20,
};

static uint64_t rd(const unsigned char *b, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | b[i];
    return v;
}

/* CRC-32 of APPNOTE.TXT 4.4.7 (reflected polynomial 0xedb88320), with the
 * byte table built on the stack: only data.pkl is checked. */
static uint32_t crc32_of(const unsigned char *p, uint64_t n)
{
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
        table[i] = c;
    }
    uint32_t c = 0xffffffffu;
    for (uint64_t i = 0; i < n; i++)
        c = table[(c ^ p[i]) & 0xffu] ^ (c >> 8);
    return ~c;
}

static int cmp_entry_name(const void *a, const void *b)
{
    const zip_entry *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    if (c)
        return c;
    return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

static int cmp_entry_local(const void *a, const void *b)
{
    const zip_entry *x = *(zip_entry *const *)a, *y = *(zip_entry *const *)b;
    return x->local < y->local ? -1 : x->local > y->local;
}

static const zip_entry *zip_find(const reader *r, const char *name, size_t len)
{
    zip_entry key = {.name = name, .name_len = len};
    return bsearch(&key, r->entries, (size_t)r->nentries, sizeof key, cmp_entry_name);
}

/* "<prefix>/rest" looked up; NULL when absent. */
static const zip_entry *zip_find_record(const reader *r, const char *rest, size_t rest_len)
{
    char buf[512];
    if (r->prefix_len + 1 + rest_len > sizeof buf)
        return NULL;
    memcpy(buf, r->prefix, r->prefix_len);
    buf[r->prefix_len] = '/';
    memcpy(buf + r->prefix_len + 1, rest, rest_len);
    return zip_find(r, buf, r->prefix_len + 1 + rest_len);
}

/* An entry's bytes, which must be stored (method 0): torch.save writes every
 * record uncompressed so that storages can be mapped in place. */
static dfx_status zip_data(const reader *r, const zip_entry *e, const unsigned char **out)
{
    *out = r->img + e->data;
    if (e->method != 0)
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: zip entry '%.*s' is compressed (method "
                             "%u%s); torch.save stores every entry uncompressed, and dfx reads "
                             "only stored entries (was the archive re-zipped?)", r->file,
                             (int)e->name_len, e->name, e->method,
                             e->method == 8 ? ", deflate" : "");
    return DFX_OK;
}

/* The end of central directory record, and its ZIP64 counterpart when the
 * archive has one (miniz writes it for archives beyond 4 GiB or 65535
 * entries). */
static dfx_status zip_find_end(reader *r, uint64_t *cd_off, uint64_t *cd_size, uint64_t *count,
                               uint64_t *cd_end)
{
    const unsigned char *img = r->img;
    size_t size = r->size;
    if (size < ZIP_END_SIZE)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: a zip archive of %zu bytes, too short for its "
                             "end record (truncated file?)", r->file, size);
    /* the record is the last thing in the file but for a comment of up to
     * 65535 bytes; the one whose comment ends the file is it */
    size_t lowest = size - ZIP_END_SIZE > 65535 ? size - ZIP_END_SIZE - 65535 : 0;
    size_t at = SIZE_MAX;
    for (size_t i = size - ZIP_END_SIZE + 1; i-- > lowest;) {
        if (rd(img + i, 4) == ZIP_END_SIG && i + ZIP_END_SIZE + rd(img + i + 20, 2) == size) {
            at = i;
            break;
        }
    }
    if (at == SIZE_MAX)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: no zip end of central directory record at the "
                             "end of the file (truncated or corrupt archive?)", r->file);
    const unsigned char *e = img + at;
    uint64_t disk = rd(e + 4, 2), cd_disk = rd(e + 6, 2), here = rd(e + 8, 2);
    *count = rd(e + 10, 2);
    *cd_size = rd(e + 12, 4);
    *cd_off = rd(e + 16, 4);
    *cd_end = at;
    bool has_locator = at >= ZIP64_LOCATOR_SIZE &&
                       rd(img + at - ZIP64_LOCATOR_SIZE, 4) == ZIP64_LOCATOR_SIG;
    bool needs64 = *count == 0xffff || here == 0xffff || *cd_size == 0xffffffffu ||
                   *cd_off == 0xffffffffu || disk == 0xffff || cd_disk == 0xffff;
    if (needs64 && !has_locator)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: the zip end record defers to a ZIP64 record "
                             "that is missing (corrupt archive?)", r->file);
    if (has_locator) {
        const unsigned char *l = img + at - ZIP64_LOCATOR_SIZE;
        uint64_t off = rd(l + 8, 8);
        if (rd(l + 4, 4) != 0 || rd(l + 16, 4) > 1)
            return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: a zip archive split over several "
                                 "disks", r->file);
        if (off > at - ZIP64_LOCATOR_SIZE || at - ZIP64_LOCATOR_SIZE - off < ZIP64_END_SIZE ||
            rd(img + off, 4) != ZIP64_END_SIG)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: the ZIP64 end record locator points at "
                                 "offset %llu, where no ZIP64 end record is (corrupt archive?)",
                                 r->file, (unsigned long long)off);
        const unsigned char *z = img + off;
        /* the record's size field counts what follows its first 12 bytes */
        if (rd(z + 4, 8) < ZIP64_END_SIZE - 12 || rd(z + 4, 8) != at - ZIP64_LOCATOR_SIZE - off - 12)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: the ZIP64 end record's size %llu does not "
                                 "reach the locator (corrupt archive?)", r->file,
                                 (unsigned long long)rd(z + 4, 8));
        disk = rd(z + 16, 4);
        cd_disk = rd(z + 20, 4);
        here = rd(z + 24, 8);
        *count = rd(z + 32, 8);
        *cd_size = rd(z + 40, 8);
        *cd_off = rd(z + 48, 8);
        *cd_end = off;
    }
    if (disk != 0 || cd_disk != 0 || here != *count)
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: a zip archive split over several disks",
                             r->file);
    if (*cd_off > *cd_end || *cd_size != *cd_end - *cd_off)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: the zip central directory (%llu bytes at offset "
                             "%llu) does not end where the end record begins (offset %llu; "
                             "truncated or corrupt archive?)", r->file,
                             (unsigned long long)*cd_size, (unsigned long long)*cd_off,
                             (unsigned long long)*cd_end);
    if (*count > *cd_size / ZIP_CENTRAL_SIZE)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: the zip end record counts %llu entries, more "
                             "than its %llu-byte central directory can hold", r->file,
                             (unsigned long long)*count, (unsigned long long)*cd_size);
    return DFX_OK;
}

/* The ZIP64 extended information field (APPNOTE.TXT 4.5.3): 8-byte values
 * for exactly the 32-bit fields that hold 0xffffffff, in order. */
static dfx_status zip64_extra(const reader *r, const zip_entry *e, const unsigned char *x,
                              size_t xlen, uint64_t *usize, uint64_t *csize, uint64_t *local)
{
    uint64_t *want[3] = {*usize == 0xffffffffu ? usize : NULL, *csize == 0xffffffffu ? csize : NULL,
                         *local == 0xffffffffu ? local : NULL};
    if (!want[0] && !want[1] && !want[2])
        return DFX_OK;
    for (size_t i = 0; i + 4 <= xlen;) {
        uint64_t tag = rd(x + i, 2), len = rd(x + i + 2, 2);
        if (len > xlen - i - 4)
            break;
        if (tag == 0x0001) {
            size_t k = 0;
            for (int f = 0; f < 3; f++) {
                if (!want[f])
                    continue;
                if (k + 8 > len)
                    return dfx_error_set(DFX_ERR_FORMAT, "%s: zip entry '%.*s': its ZIP64 field "
                                         "is too short for the sizes it stands for", r->file,
                                         (int)e->name_len, e->name);
                *want[f] = rd(x + i + 4 + k, 8);
                k += 8;
            }
            return DFX_OK;
        }
        i += 4 + (size_t)len;
    }
    return dfx_error_set(DFX_ERR_FORMAT, "%s: zip entry '%.*s' has 32-bit fields set to "
                         "0xffffffff but no ZIP64 field (corrupt archive?)", r->file,
                         (int)e->name_len, e->name);
}

/* Reads and checks the central directory: every entry's local header inside
 * the file and before the central directory, names matching, data inside
 * the file, no two entries overlapping, no name twice. */
static dfx_status zip_read(reader *r)
{
    uint64_t cd_off = 0, cd_size = 0, count = 0, cd_end = 0;
    dfx_status st = zip_find_end(r, &cd_off, &cd_size, &count, &cd_end);
    if (st)
        return st;
    r->entries = calloc((size_t)(count ? count : 1), sizeof *r->entries);
    zip_entry **by_local = calloc((size_t)(count ? count : 1), sizeof *by_local);
    if (!r->entries || !by_local) {
        free(by_local);
        return no_memory(r->file);
    }
    const unsigned char *img = r->img;
    uint64_t pos = cd_off;
    for (uint64_t i = 0; i < count; i++) {
        zip_entry *e = &r->entries[i];
        if (cd_end - pos < ZIP_CENTRAL_SIZE || rd(img + pos, 4) != ZIP_CENTRAL_SIG) {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: zip central directory entry %llu (offset %llu) "
                               "is not a central directory header (corrupt archive?)", r->file,
                               (unsigned long long)i, (unsigned long long)pos);
            goto done;
        }
        const unsigned char *h = img + pos;
        uint64_t nlen = rd(h + 28, 2), xlen = rd(h + 30, 2), clen = rd(h + 32, 2);
        if (cd_end - pos - ZIP_CENTRAL_SIZE < nlen + xlen + clen) {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: zip central directory entry %llu runs past "
                               "the directory's end (corrupt archive?)", r->file,
                               (unsigned long long)i);
            goto done;
        }
        e->name = (const char *)h + ZIP_CENTRAL_SIZE;
        e->name_len = (size_t)nlen;
        e->flags = (uint16_t)rd(h + 8, 2);
        e->method = (uint16_t)rd(h + 10, 2);
        e->crc = (uint32_t)rd(h + 16, 4);
        e->csize = rd(h + 20, 4);
        e->usize = rd(h + 24, 4);
        e->local = rd(h + 42, 4);
        if ((st = zip64_extra(r, e, h + ZIP_CENTRAL_SIZE + nlen, (size_t)xlen, &e->usize,
                              &e->csize, &e->local)))
            goto done;
        pos += ZIP_CENTRAL_SIZE + nlen + xlen + clen;
        if (!nlen || memchr(e->name, '\0', e->name_len)) {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: zip entry %llu has an empty name or one with "
                               "a NUL byte", r->file, (unsigned long long)i);
            goto done;
        }
        if (e->flags & 1u) {
            st = dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: zip entry '%.*s' is encrypted", r->file,
                               (int)e->name_len, e->name);
            goto done;
        }
        if (e->local > cd_off || cd_off - e->local < ZIP_LOCAL_SIZE ||
            rd(img + e->local, 4) != ZIP_LOCAL_SIG) {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: zip entry '%.*s': no local header at offset "
                               "%llu (the entry points outside the file's data; corrupt "
                               "archive?)", r->file, (int)e->name_len, e->name,
                               (unsigned long long)e->local);
            goto done;
        }
        const unsigned char *l = img + e->local;
        uint64_t lnlen = rd(l + 26, 2), lxlen = rd(l + 28, 2);
        if (cd_off - e->local - ZIP_LOCAL_SIZE < lnlen + lxlen || lnlen != nlen ||
            memcmp(l + ZIP_LOCAL_SIZE, e->name, nlen) != 0 || rd(l + 8, 2) != e->method) {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: zip entry '%.*s': the local header at offset "
                               "%llu does not match the central directory (corrupt archive?)",
                               r->file, (int)e->name_len, e->name, (unsigned long long)e->local);
            goto done;
        }
        e->data = e->local + ZIP_LOCAL_SIZE + lnlen + lxlen;
        if (e->csize > cd_off - e->data) {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: zip entry '%.*s': %llu bytes at offset %llu "
                               "run past the end of the entries' data (offset %llu; the entry "
                               "points outside the file's data, truncated or corrupt archive?)",
                               r->file, (int)e->name_len, e->name, (unsigned long long)e->csize,
                               (unsigned long long)e->data, (unsigned long long)cd_off);
            goto done;
        }
        if (e->method == 0 && e->csize != e->usize) {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: zip entry '%.*s' is stored but its sizes "
                               "differ (%llu and %llu; corrupt archive?)", r->file,
                               (int)e->name_len, e->name, (unsigned long long)e->csize,
                               (unsigned long long)e->usize);
            goto done;
        }
        by_local[i] = e;
    }
    if (pos != cd_end) {
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: %llu bytes of the zip central directory belong "
                           "to no entry (corrupt archive?)", r->file,
                           (unsigned long long)(cd_end - pos));
        goto done;
    }
    qsort(by_local, (size_t)count, sizeof *by_local, cmp_entry_local);
    for (uint64_t i = 1; i < count; i++) {
        const zip_entry *a = by_local[i - 1], *b = by_local[i];
        if (b->local < a->data + a->csize) {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: zip entries '%.*s' and '%.*s' overlap "
                               "(corrupt or crafted archive)", r->file, (int)a->name_len,
                               a->name, (int)b->name_len, b->name);
            goto done;
        }
    }
    r->nentries = (int64_t)count;
    /* torch's reader (caffe2/serialize/inline_container.cc) takes the
     * archive's folder from its first entry */
    if (count) {
        const zip_entry *first = &r->entries[0];
        const char *slash = memchr(first->name, '/', first->name_len);
        if (slash) {
            r->prefix = first->name;
            r->prefix_len = (size_t)(slash - first->name);
        }
    }
    qsort(r->entries, (size_t)count, sizeof *r->entries, cmp_entry_name);
    for (uint64_t i = 1; i < count; i++) {
        const zip_entry *a = &r->entries[i - 1];
        if (cmp_entry_name(a, &r->entries[i]) == 0) {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: zip entry '%.*s' appears more than once",
                               r->file, (int)a->name_len, a->name);
            goto done;
        }
    }
done:
    free(by_local);
    return st;
}

/* ---- tensors ------------------------------------------------------------ */

static bool is_text(const dfx__pk *v)
{
    /* pickles written by Python 2 hold str as bytes (serialization.py
     * _maybe_decode_ascii) */
    return v && (v->type == DFX__PK_STR || v->type == DFX__PK_BYTES);
}

static bool text_is(const dfx__pk *v, const char *s)
{
    return is_text(v) && v->len == strlen(s) && memcmp(v->s, s, v->len) == 0;
}

/* A storage tuple of a persistent id, the fields torch/serialization.py's
 * persistent_load takes apart: ('storage', storage_type, key, location,
 * numel) in a zip archive, with view_metadata after numel in the legacy
 * format. */
static dfx_status parse_pid(const reader *r, const dfx__pk *pid, const char *tname,
                            const dfx__pk **key, dfx_dtype *dtype, int64_t *numel,
                            const dfx__pk **view)
{
    const char *which = tname ? tname : "";
    *key = NULL;
    *dtype = DFX_DTYPE_U8;
    *numel = 0;
    if (view)
        *view = NULL;
    size_t want = r->legacy ? 6 : 5;
    if (!pid || pid->type != DFX__PK_TUPLE || (size_t)pid->n != want ||
        !text_is(pid->items[0], "storage"))
        return dfx_error_set(DFX_ERR_FORMAT, "%s: %s%s%sa persistent id that is not a storage "
                             "reference ('storage', type, key, location, size%s)", r->file,
                             tname ? "tensor '" : "", which, tname ? "': " : "",
                             r->legacy ? ", view" : "");
    const dfx__pk *type = pid->items[1];
    if (type->type != DFX__PK_GLOBAL || type->global != DFX__PKG_STORAGE)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: %s%s%sthe storage type is %s, not a torch "
                             "storage class", r->file, tname ? "tensor '" : "", which,
                             tname ? "': " : "", type->type == DFX__PK_GLOBAL ? type->s
                                                 : dfx__pk_type_name(type));
    const dfx__pk *k = pid->items[2], *loc = pid->items[3], *n = pid->items[4];
    if (!is_text(k) || !is_text(loc) || n->type != DFX__PK_INT || n->i < 0)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: %s%s%sa storage reference whose key, location "
                             "or size is malformed", r->file, tname ? "tensor '" : "", which,
                             tname ? "': " : "");
    *key = k;
    *dtype = type->dtype;
    *numel = n->i;
    if (view)
        *view = r->legacy ? pid->items[5] : NULL;
    return DFX_OK;
}

static int cmp_storage_key(const void *a, const void *b)
{
    const legacy_storage *x = a, *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    if (c)
        return c;
    return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

static legacy_storage *legacy_find(const reader *r, const dfx__pk *key)
{
    legacy_storage k = {.key = key->s, .key_len = key->len};
    return bsearch(&k, r->storages, (size_t)r->nstorages, sizeof k, cmp_storage_key);
}

/* The storage a tensor's persistent id names, its bytes checked to be in
 * the file. */
static dfx_status resolve_storage(const reader *r, const char *tname, const dfx__pk *ref,
                                  storage *out)
{
    if (ref->type != DFX__PK_PERSID)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': its storage is %s, not a "
                             "persistent id", r->file, tname, dfx__pk_type_name(ref));
    const dfx__pk *key, *view;
    dfx_dtype dtype;
    int64_t numel;
    dfx_status st = parse_pid(r, ref->arg, tname, &key, &dtype, &numel, &view);
    if (st)
        return st;
    size_t es = dfx_dtype_size(dtype);
    out->key = key->s;
    out->dtype = dtype;
    out->numel = numel;
    if (!r->legacy) {
        char rest[300];
        int len = snprintf(rest, sizeof rest, "data/%s", key->s);
        const zip_entry *e = len > 0 && (size_t)len < sizeof rest && strlen(key->s) == key->len
                                 ? zip_find_record(r, rest, (size_t)len) : NULL;
        if (!e)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': its storage '%s' has no "
                                 "entry '%.*s/data/%s' in the archive", r->file, tname, key->s,
                                 (int)r->prefix_len, r->prefix, key->s);
        if ((st = zip_data(r, e, &out->data)))
            return st;
        if ((uint64_t)numel > e->usize / es)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': storage '%s' holds %llu bytes, "
                                 "less than the %lld %s elements it is said to have (a storage "
                                 "too short for its tensor)", r->file, tname, key->s,
                                 (unsigned long long)e->usize, (long long)numel,
                                 dfx_dtype_name(dtype));
        return DFX_OK;
    }
    const legacy_storage *s = legacy_find(r, key);
    /* every storage the pickle references has been placed (legacy_read) */
    out->data = s->data;
    if (view->type == DFX__PK_NONE)
        return DFX_OK;
    /* (view_key, offset, view_size): a slice of the root storage, what
     * torch before 0.4 wrote for storage views */
    if (view->type != DFX__PK_TUPLE || view->n != 3 || !is_text(view->items[0]) ||
        view->items[1]->type != DFX__PK_INT || view->items[2]->type != DFX__PK_INT)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': storage '%s' has a malformed view "
                             "(expected None or (key, offset, size))", r->file, tname, key->s);
    int64_t off = view->items[1]->i, size = view->items[2]->i;
    if (off < 0 || size < 0 || off > numel || size > numel - off)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': a view of %lld elements at "
                             "offset %lld of storage '%s', which holds %lld (a storage too "
                             "short for its tensor)", r->file, tname, (long long)size,
                             (long long)off, key->s, (long long)numel);
    out->data = s->data + (size_t)off * es;
    out->numel = size;
    return DFX_OK;
}

static const char *dims_str(int n, const int64_t *d, char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < n && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? "," : "", (long long)d[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
    return buf;
}

/* A tuple of non-negative ints (a size or a stride) into out[0..*n). */
static bool int_tuple(const dfx__pk *v, int64_t *out, int *n, int max)
{
    if (v->type != DFX__PK_TUPLE)
        return false;
    if (v->n > max) {
        *n = (int)(v->n > INT32_MAX ? INT32_MAX : v->n);
        return true;
    }
    for (int64_t i = 0; i < v->n; i++) {
        if (v->items[i]->type != DFX__PK_INT || v->items[i]->i < 0)
            return false;
        out[i] = v->items[i]->i;
    }
    *n = (int)v->n;
    return true;
}

/* Copies a strided tensor into a contiguous array: es-byte elements at
 * base[sum(index[i] * stride[i])] in row-major order of index. */
static void gather(unsigned char *dst, const unsigned char *base, size_t es, int ndim,
                   const int64_t *size, const int64_t *stride, int64_t numel)
{
    int64_t index[DFX_MAX_DIMS] = {0};
    int64_t off = 0;
    for (int64_t k = 0; k < numel; k++) {
        memcpy(dst + (size_t)k * es, base + (size_t)off * es, es);
        for (int d = ndim - 1; d >= 0; d--) {
            if (++index[d] < size[d]) {
                off += stride[d];
                break;
            }
            off -= (size[d] - 1) * stride[d];
            index[d] = 0;
        }
    }
}

/* A tensor of the state dict: torch._utils._rebuild_tensor_v2(storage,
 * storage_offset, size, stride, requires_grad, backward_hooks[, metadata]),
 * _rebuild_tensor(storage, storage_offset, size, stride), or a
 * _rebuild_parameter[_with_state](data, requires_grad, backward_hooks
 * [, state]) around one. Offsets and strides count storage elements. */
static dfx_status add_tensor(const reader *r, dfx__torch *t, const char *name, const dfx__pk *v)
{
    const dfx__pk *args = v->arg;
    if (v->global == DFX__PKG_REBUILD_PARAMETER || v->global == DFX__PKG_REBUILD_PARAMETER_WITH_STATE) {
        int64_t want = v->global == DFX__PKG_REBUILD_PARAMETER ? 3 : 4;
        if (args->n != want || v->kwargs)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': %s takes %lld arguments, not "
                                 "%lld", r->file, name, v->s, (long long)want, (long long)args->n);
        v = args->items[0];
        if (v->type != DFX__PK_CALL || (v->global != DFX__PKG_REBUILD_TENSOR &&
                                        v->global != DFX__PKG_REBUILD_TENSOR_V2))
            return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': a parameter whose data is %s, "
                                 "not a tensor", r->file, name,
                                 v->type == DFX__PK_CALL ? v->s : dfx__pk_type_name(v));
        args = v->arg;
    }
    bool v2 = v->global == DFX__PKG_REBUILD_TENSOR_V2;
    if (v->kwargs || (v2 ? args->n != 6 && args->n != 7 : args->n != 4))
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': %s takes %s arguments, not %lld",
                             r->file, name, v->s, v2 ? "6 or 7" : "4", (long long)args->n);
    storage s = {0};
    dfx_status st = resolve_storage(r, name, args->items[0], &s);
    if (st)
        return st;
    const dfx__pk *offset = args->items[1];
    int64_t size[DFX_MAX_DIMS], stride[DFX_MAX_DIMS];
    int ndim = 0, nstride = 0;
    if (offset->type != DFX__PK_INT || offset->i < 0 ||
        !int_tuple(args->items[2], size, &ndim, DFX_MAX_DIMS) ||
        !int_tuple(args->items[3], stride, &nstride, DFX_MAX_DIMS) || ndim != nstride)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': the storage offset, size or stride "
                             "is not what torch writes (an int and two tuples of as many "
                             "non-negative ints)", r->file, name);
    if (ndim > DFX_MAX_DIMS)
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: tensor '%s' has %d dimensions, dfx "
                             "supports at most %d", r->file, name, ndim, DFX_MAX_DIMS);
    char b1[200], b2[200];
    int64_t numel = 1, last = offset->i, expect = 1;
    bool overflow = false, contiguous = true;
    for (int d = ndim - 1; d >= 0; d--) {
        if (size[d] && numel > INT64_MAX / size[d])
            overflow = true;
        else
            numel *= size[d];
        if (size[d] > 0 && stride[d] && size[d] - 1 > (INT64_MAX - last) / stride[d])
            overflow = true;
        else if (size[d] > 0)
            last += (size[d] - 1) * stride[d];
        /* torch's is_contiguous: dimensions of size 1 may have any stride */
        if (size[d] != 1 && stride[d] != expect)
            contiguous = false;
        if (size[d] > 1 && expect <= INT64_MAX / size[d])
            expect *= size[d];
    }
    size_t es = dfx_dtype_size(s.dtype);
    if (!overflow && (uint64_t)numel > SIZE_MAX / es)
        overflow = true;
    if (overflow)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': size %s with stride %s overflows",
                             r->file, name, dims_str(ndim, size, b1, sizeof b1),
                             dims_str(ndim, stride, b2, sizeof b2));
    if (numel > 0 ? last >= s.numel : offset->i > s.numel)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': size %s with stride %s at offset "
                             "%lld reaches element %lld of storage '%s', which holds %lld (a "
                             "storage too short for its tensor)", r->file, name,
                             dims_str(ndim, size, b1, sizeof b1),
                             dims_str(ndim, stride, b2, sizeof b2), (long long)offset->i,
                             (long long)last, s.key, (long long)s.numel);
    const unsigned char *base = s.data + (size_t)offset->i * es;
    dfx_tensor view = dfx_tensor_view(s.dtype, ndim, size, (void *)(uintptr_t)base);
    if (numel == 0 || contiguous)
        return table_add(t, name, &view, NULL);
    /* a strided tensor (a transposed weight, say) is copied into row-major
     * order; the copies are bounded by the file's size, which a tensor that
     * repeats its storage's elements (stride 0) could otherwise multiply */
    uint64_t nbytes = (uint64_t)numel * es;
    if (nbytes > r->size - t->copied)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s': size %s with stride %s repeats "
                             "its storage's elements; copying it would take %llu bytes, more "
                             "than the file holds", r->file, name,
                             dims_str(ndim, size, b1, sizeof b1),
                             dims_str(ndim, stride, b2, sizeof b2), (unsigned long long)nbytes);
    unsigned char *copy = malloc((size_t)nbytes);
    if (!copy)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: tensor '%s': out of memory copying %llu "
                             "bytes", r->file, name, (unsigned long long)nbytes);
    gather(copy, base, es, ndim, size, stride, numel);
    t->copied += nbytes;
    view.data = copy;
    return table_add(t, name, &view, copy);
}

static bool is_tensor(const dfx__pk *v)
{
    return v->type == DFX__PK_CALL &&
           (v->global == DFX__PKG_REBUILD_TENSOR || v->global == DFX__PKG_REBUILD_TENSOR_V2 ||
            v->global == DFX__PKG_REBUILD_PARAMETER ||
            v->global == DFX__PKG_REBUILD_PARAMETER_WITH_STATE);
}

static int cmp_name_ptr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The flat table from the unpickled object: a state dict is the top-level
 * dict, or its "state_dict" entry when that is a dict (Lightning and the
 * original Stable Diffusion checkpoints, with "global_step" and the like
 * beside it). Entries that are not tensors are skipped; other nestings
 * ("model", "module") are not searched. */
static dfx_status collect(const reader *r, dfx__torch *t, const dfx__pk *root)
{
    if (root->type != DFX__PK_DICT)
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: the checkpoint holds %s, not a dict of "
                             "tensors (dfx reads state dicts)", r->file, dfx__pk_type_name(root));
    const dfx__pk *sd = root;
    for (int64_t i = 0; i + 1 < root->n; i += 2) {
        if (!text_is(root->items[i], "state_dict") || root->items[i]->type != DFX__PK_STR ||
            root->items[i + 1]->type != DFX__PK_DICT)
            continue;
        if (sd != root)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: \"state_dict\" appears more than once",
                                 r->file);
        sd = root->items[i + 1];
    }
    int64_t skipped = 0;
    for (int64_t i = 0; i + 1 < sd->n; i += 2) {
        const dfx__pk *key = sd->items[i], *value = sd->items[i + 1];
        if (!is_tensor(value)) {
            skipped++;
            continue;
        }
        if (key->type != DFX__PK_STR)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: a tensor under %s, not a str name",
                                 r->file, dfx__pk_type_name(key));
        if (strlen(key->s) != key->len)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor name '%s\\x00...' contains a NUL "
                                 "character", r->file, key->s);
        /* a pickle writes each name once; the memo can repeat a long one
         * for free, which the table's copies must not multiply */
        if (key->len + 1 > r->size - t->name_bytes)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: the tensor names add up to more bytes "
                                 "than the file holds (names repeated through the memo)",
                                 r->file);
        t->name_bytes += key->len + 1;
        dfx_status st = add_tensor(r, t, key->s, value);
        if (st)
            return st;
    }
    if (t->count == 0 && skipped) {
        char keys[512] = "";
        size_t used = 0;
        for (int64_t i = 0, shown = 0; i + 1 < sd->n && shown < KEYS_SHOWN && used < sizeof keys;
             i += 2) {
            const dfx__pk *key = sd->items[i];
            if (key->type != DFX__PK_STR)
                continue;
            used += (size_t)snprintf(keys + used, sizeof keys - used, "%s'%.60s'",
                                     shown++ ? ", " : "", key->s);
        }
        return dfx_error_set(DFX_ERR_FORMAT, "%s: no tensors in the %s (its keys: %s%s); dfx reads "
                             "a state dict, at the top level or under \"state_dict\"", r->file,
                             sd == root ? "top-level dict" : "\"state_dict\" dict", keys,
                             sd->n / 2 > KEYS_SHOWN ? ", ..." : "");
    }
    char **sorted = malloc((size_t)(t->count ? t->count : 1) * sizeof *sorted);
    if (!sorted)
        return no_memory(r->file);
    memcpy(sorted, t->names, (size_t)t->count * sizeof *sorted);
    qsort(sorted, (size_t)t->count, sizeof *sorted, cmp_name_ptr);
    dfx_status st = DFX_OK;
    for (int64_t i = 1; i < t->count && !st; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0)
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s' appears more than once in the "
                               "state dict", r->file, sorted[i]);
    free(sorted);
    return st;
}

/* ---- the two formats ---------------------------------------------------- */

static dfx_status read_zip(reader *r, dfx__torch *t)
{
    dfx_status st = zip_read(r);
    if (st)
        return st;
    if (!r->prefix)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: a zip archive whose first entry is not in a "
                             "folder (not a torch.save checkpoint?)", r->file);
    const zip_entry *pkl = zip_find_record(r, "data.pkl", 8);
    if (!pkl)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: a zip archive without '%.*s/data.pkl' (not a "
                             "torch.save checkpoint?)", r->file, (int)r->prefix_len, r->prefix);
    const unsigned char *data;
    if ((st = zip_data(r, pkl, &data)))
        return st;
    if (crc32_of(data, pkl->usize) != pkl->crc)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: zip entry '%.*s/data.pkl' fails its CRC check "
                             "(corrupt archive?)", r->file, (int)r->prefix_len, r->prefix);
    /* torch >= 2.1 records the byte order of the storages; before, it was
     * always the writer's, little-endian in practice */
    const zip_entry *bo = zip_find_record(r, "byteorder", 9);
    const unsigned char *order;
    if (bo) {
        if ((st = zip_data(r, bo, &order)))
            return st;
        if (!(bo->usize == 6 && memcmp(order, "little", 6) == 0))
            return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: the storages' byte order is '%.*s'; "
                                 "dfx reads little-endian checkpoints", r->file,
                                 bo->usize > 16 ? 16 : (int)bo->usize, (const char *)order);
    }
    dfx__pickle *p;
    if ((st = dfx__pickle_load(r->file, data, (size_t)pkl->usize, NULL, &p)))
        return st;
    st = collect(r, t, dfx__pickle_root(p));
    dfx__pickle_free(p);
    return st;
}

/* Places the legacy format's storages: the pickle's persistent ids give
 * each key's type and element count, the key list their order after it;
 * each is an int64 element count (checked against the pickle's) followed by
 * its bytes (torch/csrc/serialization.cpp doWrite). */
static dfx_status legacy_place(reader *r, const dfx__pickle *main, size_t pos)
{
    int64_t n = dfx__pickle_persid_count(main);
    r->storages = calloc((size_t)(n ? n : 1), sizeof *r->storages);
    if (!r->storages)
        return no_memory(r->file);
    int64_t count = 0;
    for (int64_t i = 0; i < n; i++) {
        const dfx__pk *key;
        legacy_storage *s = &r->storages[count];
        dfx_status st = parse_pid(r, dfx__pickle_persid(main, i)->arg, NULL, &key, &s->dtype,
                                  &s->numel, NULL);
        if (st)
            return st;
        s->key = key->s;
        s->key_len = key->len;
        count++;
    }
    qsort(r->storages, (size_t)count, sizeof *r->storages, cmp_storage_key);
    int64_t k = 0;
    for (int64_t i = 0; i < count; i++) {
        if (k && cmp_storage_key(&r->storages[k - 1], &r->storages[i]) == 0) {
            const legacy_storage *a = &r->storages[k - 1], *b = &r->storages[i];
            if (a->dtype != b->dtype || a->numel != b->numel)
                return dfx_error_set(DFX_ERR_FORMAT, "%s: storage '%s' is referenced as %lld %s "
                                     "and as %lld %s elements", r->file, a->key,
                                     (long long)a->numel, dfx_dtype_name(a->dtype),
                                     (long long)b->numel, dfx_dtype_name(b->dtype));
            continue;
        }
        r->storages[k++] = r->storages[i];
    }
    r->nstorages = k;

    dfx__pickle *keys;
    size_t used;
    dfx_status st = dfx__pickle_load(r->file, r->img + pos, r->size - pos, &used, &keys);
    if (st)
        return st;
    const dfx__pk *list = dfx__pickle_root(keys);
    pos += used;
    if (list->type != DFX__PK_LIST) {
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: the storage key list after the pickle is %s, "
                           "not a list", r->file, dfx__pk_type_name(list));
        goto done;
    }
    for (int64_t i = 0; i < list->n; i++) {
        const dfx__pk *key = list->items[i];
        legacy_storage *s = is_text(key) ? legacy_find(r, key) : NULL;
        if (!s) {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: storage %lld of the key list (%s%s%s) is "
                               "not referenced by the pickle", r->file, (long long)i,
                               is_text(key) ? "'" : "", is_text(key) ? key->s
                               : dfx__pk_type_name(key), is_text(key) ? "'" : "");
            goto done;
        }
        if (s->data) {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: storage '%s' is listed twice", r->file, s->key);
            goto done;
        }
        size_t es = dfx_dtype_size(s->dtype);
        uint64_t nbytes = (uint64_t)s->numel * es;
        if (r->size - pos < 8 || rd(r->img + pos, 8) != (uint64_t)s->numel ||
            (uint64_t)s->numel > UINT64_MAX / es || nbytes > r->size - pos - 8) {
            if (r->size - pos >= 8 && rd(r->img + pos, 8) != (uint64_t)s->numel)
                st = dfx_error_set(DFX_ERR_FORMAT, "%s: storage '%s' at offset %zu holds %llu "
                                   "elements, the pickle says %lld", r->file, s->key, pos,
                                   (unsigned long long)rd(r->img + pos, 8), (long long)s->numel);
            else
                st = dfx_error_set(DFX_ERR_FORMAT, "%s: storage '%s' (%lld %s elements at offset "
                                   "%zu) runs past the end of the file (truncated file?)", r->file,
                                   s->key, (long long)s->numel, dfx_dtype_name(s->dtype), pos);
            goto done;
        }
        s->data = r->img + pos + 8;
        pos += 8 + (size_t)nbytes;
    }
    for (int64_t i = 0; i < r->nstorages; i++) {
        if (!r->storages[i].data) {
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: storage '%s' is referenced by the pickle but "
                               "missing from the key list (truncated file?)", r->file,
                               r->storages[i].key);
            goto done;
        }
    }
    if (pos != r->size)
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: %zu bytes after the last storage", r->file,
                           r->size - pos);
done:
    /* the key list pickle only ordered storages whose keys live in main */
    dfx__pickle_free(keys);
    return st;
}

static dfx_status read_legacy(reader *r, dfx__torch *t)
{
    r->legacy = true;
    const char *what[3] = {"magic number", "protocol version", "system information"};
    size_t pos = 0;
    dfx__pickle *p = NULL;
    dfx_status st;
    for (int i = 0; i < 3; i++) {
        size_t used;
        if ((st = dfx__pickle_load(r->file, r->img + pos, r->size - pos, &used, &p)))
            return st;
        pos += used;
        const dfx__pk *v = dfx__pickle_root(p);
        bool ok = true;
        if (i == 0)
            ok = v->type == DFX__PK_BIGINT && v->len == sizeof legacy_magic &&
                 memcmp(v->s, legacy_magic, sizeof legacy_magic) == 0;
        else if (i == 1)
            ok = v->type == DFX__PK_INT && v->i == LEGACY_PROTOCOL_VERSION;
        else
            ok = v->type == DFX__PK_DICT;
        if (!ok) {
            dfx__pickle_free(p);
            if (i == 0)
                return dfx_error_set(DFX_ERR_FORMAT, "%s: a pickle that does not start with "
                                     "torch's magic number (not a torch.save checkpoint)", r->file);
            return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: the legacy torch format's %s is not "
                                 "the one torch.save writes (%s)", r->file, what[i],
                                 i == 1 ? "1001" : "a dict");
        }
        if (i == 2) {
            for (int64_t k = 0; k + 1 < v->n; k += 2) {
                const dfx__pk *val = v->items[k + 1];
                if (text_is(v->items[k], "little_endian") && val->type == DFX__PK_BOOL && !val->i) {
                    dfx__pickle_free(p);
                    return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: written on a big-endian "
                                         "machine; dfx reads little-endian checkpoints", r->file);
                }
            }
        }
        dfx__pickle_free(p);
    }
    size_t used;
    if ((st = dfx__pickle_load(r->file, r->img + pos, r->size - pos, &used, &p)))
        return st;
    st = legacy_place(r, p, pos + used);
    if (!st)
        st = collect(r, t, dfx__pickle_root(p));
    dfx__pickle_free(p);
    return st;
}

static dfx_status open_image(dfx__torch *t, const void *data, size_t size)
{
    reader r = {.file = t->path, .img = data, .size = size};
    dfx_status st;
    if (size >= 4 && memcmp(data, "PK", 2) == 0) {
        t->format = "torch zip";
        st = read_zip(&r, t);
    } else if (size >= 2 && (r.img[0] == 0x80 || r.img[0] == 'L')) {
        t->format = "torch legacy";
        st = read_legacy(&r, t);
    } else {
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: neither a zip archive nor a pickle (not a "
                           "torch.save checkpoint)", t->path);
    }
    free(r.entries);
    free(r.storages);
    return st;
}

static dfx__torch *torch_new(const char *name)
{
    dfx__torch *t = calloc(1, sizeof *t);
    if (t && !(t->path = strdup(name))) {
        free(t);
        return NULL;
    }
    return t;
}

dfx_status dfx__torch_open_memory(const char *name, const void *data, size_t size,
                                  dfx__torch **out)
{
    *out = NULL;
    dfx__torch *t = torch_new(name);
    if (!t)
        return no_memory(name);
    dfx_status st = open_image(t, data, size);
    if (st) {
        dfx__torch_close(t);
        return st;
    }
    *out = t;
    return DFX_OK;
}

dfx_status dfx__torch_open(const char *path, dfx__torch **out)
{
    *out = NULL;
    dfx__torch *t = torch_new(path);
    if (!t)
        return no_memory(path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    dfx_status st = DFX_OK;
    if (fd < 0) {
        st = dfx_error_set(errno == ENOENT ? DFX_ERR_NOT_FOUND : DFX_ERR_IO,
                           "%s: cannot open: %s", path, strerror(errno));
    } else if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = dfx_error_set(DFX_ERR_IO, "%s: not a regular file", path);
    } else if ((uint64_t)sb.st_size > SIZE_MAX) {
        st = dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: too large to map", path);
    } else if (sb.st_size > 0) {
        void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED)
            st = dfx_error_set(DFX_ERR_IO, "%s: cannot map %lld bytes: %s", path,
                               (long long)sb.st_size, strerror(errno));
        else
            t->map = m, t->map_size = (size_t)sb.st_size;
    }
    if (fd >= 0)
        close(fd);
    if (!st)
        st = open_image(t, t->map ? t->map : "", t->map_size);
    if (st) {
        dfx__torch_close(t);
        return st;
    }
    *out = t;
    return DFX_OK;
}

void dfx__torch_release(const dfx__torch *t, const void *p, size_t n)
{
    if (t)
        dfx__mapping_release(t->map, t->map_size, p, n);
}
