/* The data readers' byte source: a file image in memory read as it is, or,
 * when it starts with gzip's magic bytes, inflated member after member with
 * every CRC and length checked. Unlike gzread, which ignores what follows
 * the last member, bytes there are an error: they would be data the reader
 * silently dropped. */
#include <stdlib.h>
#include <string.h>

#include "core/data/internal.h"

/* zlib counts in uInt: feed it at most this much at a time */
#define ZCHUNK ((size_t)1 << 30)

static bool gz_magic(const unsigned char *p, size_t n)
{
    return n >= 2 && p[0] == 0x1f && p[1] == 0x8b;
}

dfx_status dfx__data_src_init(dfx__data_src *s, const char *name, const void *data, size_t size)
{
    memset(s, 0, sizeof *s);
    s->name = name;
    s->data = data;
    s->size = size;
    s->gz = gz_magic(s->data, size);
    if (!s->gz)
        return DFX_OK;
    /* 16 + MAX_WBITS: a gzip wrapper only (a zlib header is an error) */
    int rc = inflateInit2(&s->z, 16 + MAX_WBITS);
    if (rc != Z_OK)
        return dfx_error_set(rc == Z_MEM_ERROR ? DFX_ERR_NO_MEMORY : DFX_ERR_IO,
                             "%s: cannot start zlib: %s", name, s->z.msg ? s->z.msg : zError(rc));
    s->z_ready = true;
    return DFX_OK;
}

void dfx__data_src_fini(dfx__data_src *s)
{
    if (s->z_ready)
        inflateEnd(&s->z);
    s->z_ready = false;
}

uint64_t dfx__data_src_bound(const dfx__data_src *s)
{
    if (s->eof)
        return 0;
    if (!s->gz)
        return s->size - s->pos;
    /* bytes zlib holds in its window but has not handed out are bounded by
     * the input it consumed: count them generously with a 64 KiB slack */
    uint64_t left = (uint64_t)(s->size - s->pos) + s->z.avail_in;
    return left * DFX__DEFLATE_MAX_RATIO + 65536;
}

static dfx_status gz_read(dfx__data_src *s, unsigned char *dst, size_t n, size_t *got)
{
    *got = 0;
    while (*got < n && !s->eof) {
        if (s->z_member_end) {
            /* after a member: the end, another member, or garbage */
            if (s->z.avail_in == 0 && s->pos == s->size) {
                s->eof = true;
                break;
            }
            /* zlib's unread input ends where s->pos begins: contiguous */
            size_t left = s->z.avail_in + (s->size - s->pos);
            const unsigned char *next = s->z.avail_in ? s->z.next_in : s->data + s->pos;
            if (!gz_magic(next, left))
                return dfx_error_set(DFX_ERR_FORMAT, "%s: %zu bytes of garbage after the gzip stream", s->name,
                                     left);
            int rc = inflateReset(&s->z);
            if (rc != Z_OK)
                return dfx_error_set(DFX_ERR_IO, "%s: zlib: %s", s->name, zError(rc));
            s->z_member_end = false;
        }
        if (s->z.avail_in == 0 && s->pos < s->size) {
            size_t take = s->size - s->pos > ZCHUNK ? ZCHUNK : s->size - s->pos;
            s->z.next_in = (Bytef *)(uintptr_t)(s->data + s->pos);
            s->z.avail_in = (uInt)take;
            s->pos += take;
        }
        size_t want = n - *got > ZCHUNK ? ZCHUNK : n - *got;
        s->z.next_out = dst + *got;
        s->z.avail_out = (uInt)want;
        int rc = inflate(&s->z, Z_NO_FLUSH);
        *got += want - s->z.avail_out;
        if (rc == Z_STREAM_END) {
            s->z_member_end = true;
        } else if (rc == Z_BUF_ERROR) {
            /* no progress possible: avail_out is not 0, so the input ran out
             * before the member's end marker */
            if (s->z.avail_in == 0 && s->pos == s->size)
                return dfx_error_set(DFX_ERR_FORMAT, "%s: truncated gzip stream (the file ends before the "
                                     "end of its compressed data)", s->name);
            return dfx_error_set(DFX_ERR_FORMAT, "%s: corrupt gzip stream: %s", s->name, zError(rc));
        } else if (rc == Z_MEM_ERROR) {
            return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory inflating", s->name);
        } else if (rc != Z_OK) {
            return dfx_error_set(DFX_ERR_FORMAT, "%s: corrupt gzip stream: %s", s->name,
                                 s->z.msg ? s->z.msg : zError(rc));
        }
    }
    return DFX_OK;
}

dfx_status dfx__data_src_read(dfx__data_src *s, void *dst, size_t n, size_t *got)
{
    *got = 0;
    if (!s->gz) {
        size_t take = s->size - s->pos < n ? s->size - s->pos : n;
        if (take)
            memcpy(dst, s->data + s->pos, take);
        s->pos += take;
        *got = take;
        s->eof = s->pos == s->size;
        return DFX_OK;
    }
    return gz_read(s, dst, n, got);
}

dfx_status dfx__data_src_read_all(dfx__data_src *s, size_t max, char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    /* plain bytes: exactly what is left; gzip: grow as it inflates */
    size_t cap = s->gz ? (s->size < 1 << 20 ? 4 * s->size + 4096 : 4 * s->size) : s->size - s->pos;
    if (cap > max)
        cap = max;
    char *buf = malloc(cap + 1);
    if (!buf)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", s->name);
    size_t n = 0;
    for (;;) {
        size_t got;
        dfx_status st = dfx__data_src_read(s, buf + n, cap - n, &got);
        n += got;
        if (st) {
            free(buf);
            return st;
        }
        if (n < cap)
            break;
        /* full: one more byte decides between the end and more content */
        unsigned char probe;
        if ((st = dfx__data_src_read(s, &probe, 1, &got))) {
            free(buf);
            return st;
        }
        if (!got)
            break;
        if (cap >= max) {
            free(buf);
            return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: more than %zu MiB of content, more than dfx reads",
                                 s->name, max >> 20);
        }
        size_t ncap = cap > max / 2 ? max : 2 * cap;
        char *b = realloc(buf, ncap + 1);
        if (!b) {
            free(buf);
            return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", s->name);
        }
        buf = b;
        cap = ncap;
        buf[n++] = (char)probe;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return DFX_OK;
}
