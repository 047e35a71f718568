/* PNG files. The writer: 8-bit gray or RGB images with text chunks (the
 * run's settings), written through libpng into a temporary file that is
 * renamed over the destination only when complete, one at a time or as an
 * all-or-nothing batch. The reader: strict (every CRC checked, bounded sizes,
 * a missing IEND is an error) and returns 8-bit pixels and the text chunks.
 * libpng reports errors by longjmp; every one of them ends here with
 * everything released and a message naming the file. */
#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"

/* libpng's message for the error being handled. Not a local of the writer:
 * a local changed between setjmp and longjmp would be indeterminate after
 * the jump (C11 7.13.2.1). */
static _Thread_local char failure[256];

static void on_error(png_structp png, png_const_charp msg)
{
    snprintf(failure, sizeof failure, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg)
{
    /* writer warnings (e.g. about text chunks) do not make the file invalid */
    (void)png;
    (void)msg;
}

/* ---- writing -------------------------------------------------------------- */

/* PNG keywords (PNG spec 11.3.4.2): 1-79 printable Latin-1 characters, no
 * leading, trailing or consecutive spaces. The writer accepts the ASCII
 * subset (its keys are C strings that could be UTF-8); the reader checks
 * what libpng does not in tEXt chunks. */
static bool keyword_ok(const char *key, bool latin1)
{
    size_t n = strlen(key);
    if (n < 1 || n > 79 || key[0] == ' ' || key[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 32 || (c > 126 && (!latin1 || c < 161)) || (c == ' ' && key[i + 1] == ' '))
            return false;
    }
    return true;
}

static bool is_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s > 126)
            return false;
    return true;
}

/* Everything dfx__png_write refuses before it creates anything. */
static dfx_status check_item(const dfx__png_item *it)
{
    const char *path = it->path ? it->path : "(null)";
    if (!it->path || !it->pixels || (it->channels != 1 && it->channels != 3) || it->width < 1 ||
        it->height < 1 || it->ntext < 0 || (it->ntext > 0 && !it->text))
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: PNG writer: invalid image (%dx%d, %d channels)", path,
                             it->width, it->height, it->channels);
    for (int i = 0; i < it->ntext; i++) {
        const dfx__png_text *t = &it->text[i];
        if (!t->key || !keyword_ok(t->key, false))
            return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: PNG text key '%s' is not a PNG keyword (1-79 "
                                 "printable characters, no leading, trailing or double spaces)", path,
                                 t->key ? t->key : "(null)");
        if (!t->value)
            return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: PNG text '%s' has no value", path, t->key);
    }
    return DFX_OK;
}

/* Encodes a checked item into fp; on failure the message names the item's
 * path and what was being written to fp must be discarded. */
static dfx_status encode(FILE *fp, const dfx__png_item *it)
{
    /* everything libpng may need after a longjmp is set up before setjmp and
     * not changed after it (C11 7.13.2.1: such locals keep their values) */
    png_textp chunks = it->ntext ? calloc((size_t)it->ntext, sizeof *chunks) : NULL;
    if (it->ntext && !chunks)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", it->path);
    for (int i = 0; i < it->ntext; i++) {
        /* tEXt is Latin-1: anything beyond ASCII goes to an iTXt chunk,
         * whose text is UTF-8 */
        chunks[i].compression = is_ascii(it->text[i].value) ? PNG_TEXT_COMPRESSION_NONE
                                                            : PNG_ITXT_COMPRESSION_NONE;
        chunks[i].key = (png_charp)it->text[i].key;
        chunks[i].text = (png_charp)it->text[i].value;
        chunks[i].text_length = strlen(it->text[i].value);
    }
    snprintf(failure, sizeof failure, "out of memory");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        free(chunks);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory starting the PNG writer", it->path);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(chunks);
        return dfx_error_set(DFX_ERR_IO, "%s: writing the PNG failed: %s (no file was written)", it->path,
                             failure);
    }
    png_init_io(png, fp);
    png_set_IHDR(png, info, (png_uint_32)it->width, (png_uint_32)it->height, 8,
                 it->channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (it->ntext)
        png_set_text(png, info, chunks, it->ntext);
    png_write_info(png, info);
    const size_t stride = (size_t)it->width * (size_t)it->channels;
    for (int y = 0; y < it->height; y++)
        png_write_row(png, it->pixels + (size_t)y * stride);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(chunks);
    return DFX_OK;
}

dfx_status dfx__png_write(const char *path, const unsigned char *pixels, int width, int height, int channels,
                          const dfx__png_text *text, int ntext)
{
    const dfx__png_item it = {path, pixels, width, height, channels, text, ntext};
    dfx_status st = check_item(&it);
    if (st)
        return st;
    dfx__outfile out;
    if ((st = dfx__outfile_open(&out, path)))
        return st;
    if ((st = encode(out.fp, &it))) {
        dfx__outfile_abort(&out);
        return st;
    }
    return dfx__outfile_commit(&out);
}

dfx_status dfx__png_encode(const dfx__png_item *it, unsigned char **data, size_t *size)
{
    *data = NULL;
    *size = 0;
    dfx_status st = check_item(it);
    if (st)
        return st;
    char *mem = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&mem, &len);
    if (!fp)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", it->path);
    st = encode(fp, it);
    if (fclose(fp) != 0 && !st)
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory encoding the PNG", it->path);
    if (st) {
        free(mem);
        return st;
    }
    *data = (unsigned char *)mem;
    *size = len;
    return DFX_OK;
}

/* Removes the folders an output's open created above path (empty again once
 * the batch's files are gone), deepest first, up to and including `made`. */
static void remove_made(const char *path, const char *made)
{
    char *dir = strdup(path);
    size_t top = strlen(made);
    char *slash;
    while (dir && (slash = strrchr(dir, '/')) && (size_t)(slash - dir) >= top) {
        *slash = '\0';
        if (rmdir(dir) != 0)
            break;
    }
    free(dir);
}

dfx_status dfx__png_write_batch(const dfx__png_item *items, int n)
{
    dfx_status st = DFX_OK;
    if (n < 1)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "PNG writer: an empty batch");
    /* every image is checked and encoded before any file is touched: a
     * refusal or a libpng failure (or no memory) leaves the destination as
     * it was */
    unsigned char **data = calloc((size_t)n, sizeof *data);
    size_t *size = calloc((size_t)n, sizeof *size);
    if (!data || !size) {
        free(data);
        free(size);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", items[0].path);
    }
    for (int k = 0; k < n && !st; k++)
        st = dfx__png_encode(&items[k], &data[k], &size[k]);
    int written = 0, made_by = -1;
    char *made = NULL;
    for (int k = 0; k < n && !st; k++) {
        dfx__outfile out;
        if ((st = dfx__outfile_open(&out, items[k].path)))
            break;
        if (out.made && !made) {
            if (!(made = strdup(out.made))) {
                dfx__outfile_abort(&out);
                st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
                break;
            }
            made_by = k;
        }
        if (fwrite(data[k], 1, size[k], out.fp) != size[k]) {
            st = dfx_error_set(DFX_ERR_IO, "%s: write failed: %s", items[k].path, strerror(errno));
            dfx__outfile_abort(&out);
            break;
        }
        if ((st = dfx__outfile_commit(&out)))
            break;
        written++;
    }
    if (st && written) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", dfx_error_message());
        for (int k = 0; k < written; k++)
            unlink(items[k].path);
        dfx_error_set(st, "%s (the %d image%s of the batch already written %s removed)", msg, written,
                      written == 1 ? "" : "s", written == 1 ? "was" : "were");
    }
    if (st && made && made_by < written)
        remove_made(items[made_by].path, made);
    for (int k = 0; k < n; k++)
        free(data[k]);
    free(data);
    free(size);
    free(made);
    return st;
}

/* ---- reading -------------------------------------------------------------- */

enum {
    MAX_SIDE = DFX__PNG_MAX_SIDE,  /* 1 GiB of RGBA at most */
    MAX_CHUNK = 8 << 20,           /* bytes of one ancillary chunk, decompressed */
    MAX_CACHED_CHUNKS = 64,        /* text (and other kept ancillary) chunks */
    DEFLATE_MAX_RATIO = 1032,      /* deflate's best: 258 bytes from 2 bits */
};

/* The reader's state, on the heap: it changes between setjmp and a longjmp,
 * which a local of the function calling setjmp may not (C11 7.13.2.1). */
typedef struct reader {
    const unsigned char *data;
    size_t size, pos;
    bool truncated;
    char failure[256];
    unsigned char *pixels;
    png_bytep *rows;
} reader;

static void on_read_error(png_structp png, png_const_charp msg)
{
    reader *r = png_get_error_ptr(png);
    if (!r->failure[0])
        snprintf(r->failure, sizeof r->failure, "%s", msg);
    png_longjmp(png, 1);
}

/* Strict: libpng warns where it drops or repairs something (a text chunk
 * beyond the cache, say); the caller would get less than the file says. */
static void on_read_warning(png_structp png, png_const_charp msg)
{
    reader *r = png_get_error_ptr(png);
    snprintf(r->failure, sizeof r->failure, "%s", msg);
    png_longjmp(png, 1);
}

static void read_data(png_structp png, png_bytep out, size_t n)
{
    reader *r = png_get_io_ptr(png);
    if (n > r->size - r->pos) {
        r->truncated = true;
        png_error(png, "the file ends early");
    }
    memcpy(out, r->data + r->pos, n);
    r->pos += n;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Copies s (Latin-1 when latin1, else UTF-8 already) as UTF-8 with its NUL
 * to dst; returns the end. libpng has cut each text at its first NUL. */
static char *put_utf8(char *dst, const char *s, bool latin1)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (latin1 && c >= 0x80) {
            *dst++ = (char)(0xc0 | c >> 6);
            *dst++ = (char)(0x80 | (c & 0x3f));
        } else {
            *dst++ = (char)c;
        }
    }
    *dst++ = '\0';
    return dst;
}

/* Copies libpng's text chunks into out (keys and values UTF-8). */
static dfx_status take_text(const char *name, png_structp png, png_infop info, dfx__png_image *out)
{
    png_textp text = NULL;
    int n = png_get_text(png, info, &text, NULL);
    if (n <= 0)
        return DFX_OK;
    /* each string at most doubles from Latin-1 to UTF-8 */
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (!keyword_ok(text[i].key, true))
            return dfx_error_set(DFX_ERR_FORMAT, "%s: corrupt PNG: a text chunk's keyword is not a PNG keyword "
                                 "(1-79 printable Latin-1 characters, no leading, trailing or double spaces)",
                                 name);
        total += 2 * (strlen(text[i].key) + strlen(text[i].text ? text[i].text : "")) + 2;
    }
    out->text = calloc((size_t)n, sizeof *out->text);
    out->strings = malloc(total);
    if (!out->text || !out->strings)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory for its text chunks", name);
    char *dst = out->strings;
    for (int i = 0; i < n; i++) {
        /* keywords are Latin-1 in every text chunk (PNG spec 11.3.4.2), the
         * text too except in iTXt, which is UTF-8 */
        bool itxt = text[i].compression >= PNG_ITXT_COMPRESSION_NONE;
        out->text[i].key = dst;
        dst = put_utf8(dst, text[i].key, true);
        out->text[i].value = dst;
        dst = put_utf8(dst, text[i].text ? text[i].text : "", !itxt);
    }
    out->ntext = n;
    return DFX_OK;
}

dfx_status dfx__png_read_memory(const char *name, const void *data, size_t size, dfx__png_image *out)
{
    const unsigned char *d = data;
    memset(out, 0, sizeof *out);
    if (size < 8 || png_sig_cmp(d, 0, 8) != 0)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: not a PNG file (it does not start with the PNG signature)",
                             name);
    /* the size, from IHDR (the first chunk) before libpng, whose limit
     * message would not say the size */
    if (size >= 24 && memcmp(d + 12, "IHDR", 4) == 0) {
        uint32_t w = be32(d + 16), h = be32(d + 20);
        if (w > MAX_SIDE || h > MAX_SIDE)
            return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: %lux%lu pixels is larger than dfx reads (at most "
                                 "%dx%d)", name, (unsigned long)w, (unsigned long)h, MAX_SIDE, MAX_SIDE);
    }
    reader *r = calloc(1, sizeof *r);
    if (!r)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", name);
    r->data = d;
    r->size = size;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, r, on_read_error, on_read_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_read_struct(&png, NULL, NULL);
        free(r);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory starting the PNG reader", name);
    }
    if (setjmp(png_jmpbuf(png))) {
        dfx_status st = r->truncated
                            ? dfx_error_set(DFX_ERR_FORMAT, "%s: truncated PNG (the file ends before its IEND "
                                                            "chunk)", name)
                            : dfx_error_set(DFX_ERR_FORMAT, "%s: corrupt PNG: %s", name, r->failure);
        png_destroy_read_struct(&png, &info, NULL);
        free(r->pixels);
        free(r->rows);
        free(r);
        dfx__png_image_fini(out);
        return st;
    }
    png_set_read_fn(png, r, read_data);
    /* strict: a CRC error in any chunk, ancillary ones included, and what
     * libpng calls benign errors, end the read */
    png_set_crc_action(png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
    png_set_benign_errors(png, 0);
    png_set_user_limits(png, MAX_SIDE, MAX_SIDE);
    png_set_chunk_malloc_max(png, MAX_CHUNK);
    png_set_chunk_cache_max(png, MAX_CACHED_CHUNKS);
    /* only pixels and text matter here: the colour-management and other
     * ancillary chunks are skipped (their CRCs still checked) rather than
     * parsed, so their oddities in files from other tools do not fail the
     * read; an unknown critical chunk still does */
    static const png_byte text_chunks[] = "tEXt\0zTXt\0iTXt";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_AS_DEFAULT, text_chunks, 3);
    png_read_info(png, info);

    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int depth = png_get_bit_depth(png, info), color = png_get_color_type(png, info);
    /* the stored pixels cannot come from fewer compressed bytes than
     * deflate's best ratio allows: refuse before allocating for them */
    uint64_t stored = (uint64_t)w * h * png_get_channels(png, info) * (uint64_t)depth / 8;
    if (stored / DEFLATE_MAX_RATIO > r->size - r->pos + 64) {
        snprintf(r->failure, sizeof r->failure, "%lux%lu pixels cannot be stored in its %zu bytes",
                 (unsigned long)w, (unsigned long)h, r->size);
        png_error(png, r->failure);
    }
    if (color == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_tRNS_to_alpha(png);
    if (depth == 16)
        png_set_scale_16(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    const int channels = png_get_channels(png, info);
    const size_t stride = png_get_rowbytes(png, info);
    if (png_get_bit_depth(png, info) != 8 || stride != (size_t)w * (size_t)channels)
        png_error(png, "unexpected pixel layout after conversion to 8 bits");
    r->pixels = malloc(stride * h);
    r->rows = malloc(h * sizeof *r->rows);
    if (!r->pixels || !r->rows)
        png_error(png, "out of memory for the pixels");
    for (png_uint_32 y = 0; y < h; y++)
        r->rows[y] = r->pixels + (size_t)y * stride;
    png_read_image(png, r->rows);
    /* the chunks after the pixels up to IEND: text, and every CRC */
    png_read_end(png, info);

    dfx_status st = take_text(name, png, info, out);
    png_destroy_read_struct(&png, &info, NULL);
    free(r->rows);
    if (st) {
        free(r->pixels);
        free(r);
        dfx__png_image_fini(out);
        return st;
    }
    out->width = (int)w;
    out->height = (int)h;
    out->channels = channels;
    out->pixels = r->pixels;
    free(r);
    return DFX_OK;
}

dfx_status dfx__png_read(const char *path, dfx__png_image *out)
{
    char *data;
    size_t len;
    memset(out, 0, sizeof *out);
    dfx_status st = dfx__read_file(path, &data, &len);
    if (st)
        return st;
    st = dfx__png_read_memory(path, data, len, out);
    free(data);
    return st;
}

void dfx__png_image_fini(dfx__png_image *img)
{
    free(img->pixels);
    free(img->text);
    free(img->strings);
    memset(img, 0, sizeof *img);
}

const char *dfx__png_image_text(const dfx__png_image *img, const char *key)
{
    for (int i = 0; i < img->ntext; i++)
        if (strcmp(img->text[i].key, key) == 0)
            return img->text[i].value;
    return NULL;
}
