/* PNG output: 8-bit gray or RGB images with text chunks (the run's settings),
 * written through libpng into a temporary file that is renamed over the
 * destination only when complete. libpng reports errors by longjmp; every
 * one of them ends here with the temporary file removed. */
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

/* libpng's message for the error being handled. Not a local of
 * dfx__png_write: a local changed between setjmp and longjmp would be
 * indeterminate after the jump (C11 7.13.2.1). */
static _Thread_local char failure[256];

static void on_error(png_structp png, png_const_charp msg)
{
    snprintf(failure, sizeof failure, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg)
{
    /* warnings (e.g. about text chunks) do not make the file invalid */
    (void)png;
    (void)msg;
}

/* PNG keywords (PNG spec 11.3.4.2): 1-79 printable Latin-1 characters, no
 * leading, trailing or consecutive spaces. We accept the ASCII subset. */
static bool keyword_ok(const char *key)
{
    size_t n = strlen(key);
    if (n < 1 || n > 79 || key[0] == ' ' || key[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 32 || c > 126 || (c == ' ' && key[i + 1] == ' '))
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

dfx_status dfx__png_write(const char *path, const unsigned char *pixels, int width, int height, int channels,
                          const dfx__png_text *text, int ntext)
{
    if (!path || !pixels || (channels != 1 && channels != 3) || width < 1 || height < 1 || ntext < 0 ||
        (ntext > 0 && !text))
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: PNG writer: invalid image (%dx%d, %d channels)",
                             path ? path : "(null)", width, height, channels);
    for (int i = 0; i < ntext; i++) {
        if (!text[i].key || !keyword_ok(text[i].key))
            return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: PNG text key '%s' is not a PNG keyword (1-79 "
                                 "printable characters, no leading, trailing or double spaces)", path,
                                 text[i].key ? text[i].key : "(null)");
        if (!text[i].value)
            return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: PNG text '%s' has no value", path, text[i].key);
    }

    /* everything libpng may need after a longjmp is set up before setjmp and
     * not changed after it (C11 7.13.2.1: such locals keep their values) */
    png_textp chunks = ntext ? calloc((size_t)ntext, sizeof *chunks) : NULL;
    if (ntext && !chunks)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", path);
    for (int i = 0; i < ntext; i++) {
        /* tEXt is Latin-1: anything beyond ASCII goes to an iTXt chunk,
         * whose text is UTF-8 */
        chunks[i].compression = is_ascii(text[i].value) ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
        chunks[i].key = (png_charp)text[i].key;
        chunks[i].text = (png_charp)text[i].value;
        chunks[i].text_length = strlen(text[i].value);
    }
    dfx__outfile out;
    dfx_status st = dfx__outfile_open(&out, path);
    if (st) {
        free(chunks);
        return st;
    }
    snprintf(failure, sizeof failure, "out of memory");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        dfx__outfile_abort(&out);
        free(chunks);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory starting the PNG writer", path);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        dfx__outfile_abort(&out);
        free(chunks);
        return dfx_error_set(DFX_ERR_IO, "%s: writing the PNG failed: %s (no file was written)", path,
                             failure);
    }
    png_init_io(png, out.fp);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8,
                 channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (ntext)
        png_set_text(png, info, chunks, ntext);
    png_write_info(png, info);
    const size_t stride = (size_t)width * (size_t)channels;
    for (int y = 0; y < height; y++)
        png_write_row(png, pixels + (size_t)y * stride);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(chunks);
    return dfx__outfile_commit(&out);
}
