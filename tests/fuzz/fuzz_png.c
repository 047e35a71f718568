/* libFuzzer target: the strict PNG reader, straight from memory. Each input
 * is read three times: as it is (bad CRCs and all); with every chunk's CRC
 * recomputed, so that mutations reach the chunk parsers instead of stopping
 * at the first CRC; and as the recipe of a well-formed file (header fields,
 * palette, transparency, a zTXt chunk, raw scanlines) that the target
 * assembles with correct CRCs and stored (uncompressed) deflate blocks, so
 * that random pixel data reaches the filters, the interlacing and every
 * conversion to 8 bits, which mutated compressed data rarely does. An
 * accepted image must behave: its size within the limits, every pixel byte
 * there, NUL-terminated text; and an 8-bit gray or RGB image written back
 * out with its text reads again as the same pixels and text. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            __builtin_trap();                                                  \
    } while (0)

static uint32_t crc_table[256];

static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    if (!crc_table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
            crc_table[i] = c;
        }
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++)
        c = crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

/* Recomputes the CRC of every whole chunk after the signature. */
static void fix_crcs(uint8_t *d, size_t size)
{
    size_t p = 8;
    while (p + 12 <= size) {
        uint32_t n = (uint32_t)d[p] << 24 | (uint32_t)d[p + 1] << 16 | (uint32_t)d[p + 2] << 8 | d[p + 3];
        if (n > size - p - 12)
            break;
        uint32_t c = crc32_of(d + p + 4, (size_t)n + 4);
        d[p + 8 + n] = (uint8_t)(c >> 24);
        d[p + 9 + n] = (uint8_t)(c >> 16);
        d[p + 10 + n] = (uint8_t)(c >> 8);
        d[p + 11 + n] = (uint8_t)c;
        p += 12 + (size_t)n;
    }
}

static bool ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s > 126)
            return false;
    return true;
}

/* Writes img back out (as the writer takes it: gray or RGB, ASCII keys) and
 * reads it again: the same pixels and text. */
static void check_round_trip(const dfx__png_image *img)
{
    dfx__png_text *text = malloc(((size_t)img->ntext + 1) * sizeof *text);
    CHECK(text);
    int n = 0;
    for (int i = 0; i < img->ntext; i++) {
        /* a value near the reader's chunk limit may not fit it again once
         * written uncompressed with its keyword */
        if (ascii(img->text[i].key) && strlen(img->text[i].value) < (1u << 20))
            text[n++] = img->text[i];
    }
    const dfx__png_item item = {"copy.png", img->pixels, img->width, img->height, img->channels, text, n};
    unsigned char *data = NULL;
    size_t size = 0;
    CHECK(dfx__png_encode(&item, &data, &size) == DFX_OK);
    dfx__png_image again;
    CHECK(dfx__png_read_memory("copy.png", data, size, &again) == DFX_OK);
    CHECK(again.width == img->width && again.height == img->height && again.channels == img->channels);
    CHECK(memcmp(again.pixels, img->pixels, (size_t)img->width * img->height * img->channels) == 0);
    CHECK(again.ntext == n);
    for (int i = 0; i < n; i++)
        CHECK(strcmp(again.text[i].key, text[i].key) == 0 && strcmp(again.text[i].value, text[i].value) == 0);
    dfx__png_image_fini(&again);
    free(data);
    free(text);
}

static void read_one(const uint8_t *data, size_t size)
{
    dfx__png_image img;
    if (dfx__png_read_memory("fuzz.png", data, size, &img) != DFX_OK) {
        CHECK(!img.pixels && !img.text && !img.strings && img.ntext == 0);
        return;
    }
    CHECK(img.width >= 1 && img.width <= 16384 && img.height >= 1 && img.height <= 16384);
    CHECK(img.channels >= 1 && img.channels <= 4 && img.pixels);
    /* every byte is there (a sanitizer sees a short buffer) */
    const size_t n = (size_t)img.width * img.height * img.channels;
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += img.pixels[i];
    volatile unsigned sink = sum;
    (void)sink;
    CHECK(img.ntext >= 0 && img.ntext <= 64 && (img.ntext == 0 || img.text));
    for (int i = 0; i < img.ntext; i++) {
        size_t k = strlen(img.text[i].key);
        CHECK(k >= 1 && k <= 2 * 79 && img.text[i].value);
        CHECK(dfx__png_image_text(&img, img.text[i].key) != NULL);
    }
    if (img.channels == 1 || img.channels == 3)
        check_round_trip(&img);
    dfx__png_image_fini(&img);
}

/* ---- a well-formed file from a recipe ---------------------------------- */

typedef struct buf {
    uint8_t *d;
    size_t n, cap;
} buf;

static void put(buf *b, const void *p, size_t n)
{
    if (!n)
        return;
    if (b->n + n > b->cap) {
        b->cap = 2 * (b->n + n);
        b->d = realloc(b->d, b->cap);
        CHECK(b->d);
    }
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void put32(buf *b, uint32_t v)
{
    uint8_t be[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(b, be, 4);
}

static void put_chunk(buf *b, const char *type, const uint8_t *data, size_t n)
{
    put32(b, (uint32_t)n);
    size_t at = b->n;
    put(b, type, 4);
    put(b, data, n);
    put32(b, crc32_of(b->d + at, n + 4));
}

/* A zlib stream of stored deflate blocks (RFC 1950, RFC 1951 3.2.4). */
static void put_zlib(buf *b, const uint8_t *p, size_t n)
{
    static const uint8_t head[2] = {0x78, 0x01};
    put(b, head, 2);
    size_t off = 0;
    do {
        size_t len = n - off > 65535 ? 65535 : n - off;
        uint8_t h[5] = {off + len == n, (uint8_t)len, (uint8_t)(len >> 8), (uint8_t)~len, (uint8_t)(~len >> 8)};
        put(b, h, 5);
        put(b, p + off, len);
        off += len;
    } while (off < n);
    uint32_t a = 1, s = 0;
    for (size_t i = 0; i < n; i++) {
        a = (a + p[i]) % 65521;
        s = (s + a) % 65521;
    }
    put32(b, s << 16 | a);
}

/* Bytes of the filtered scanlines of a w x h image of `bits` per pixel. */
static size_t raw_size(uint32_t w, uint32_t h, int bits, bool interlace)
{
    static const int adam7[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                                    {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
    if (!interlace)
        return h * (1 + ((size_t)w * bits + 7) / 8);
    size_t n = 0;
    for (int p = 0; p < 7; p++) {
        size_t pw = w > (uint32_t)adam7[p][0] ? (w - adam7[p][0] + adam7[p][2] - 1) / adam7[p][2] : 0;
        size_t ph = h > (uint32_t)adam7[p][1] ? (h - adam7[p][1] + adam7[p][3] - 1) / adam7[p][3] : 0;
        if (pw && ph)
            n += ph * (1 + (pw * bits + 7) / 8);
    }
    return n;
}

/* The recipe: [kind, width - 1, height - 1, flags, text length, text...,
 * scanlines...]; flags: 1 interlaced, 2 tRNS, 4 zTXt, 8 two IDATs, 16 the
 * scanlines cut or zero-padded to the exact size. */
static void read_recipe(const uint8_t *data, size_t size)
{
    static const uint8_t kinds[15][3] = {
        /* colour type, bit depth, channels */
        {0, 1, 1}, {0, 2, 1}, {0, 4, 1}, {0, 8, 1}, {0, 16, 1}, {2, 8, 3}, {2, 16, 3}, {3, 1, 1},
        {3, 2, 1}, {3, 4, 1}, {3, 8, 1}, {4, 8, 2}, {4, 16, 2}, {6, 8, 4}, {6, 16, 4},
    };
    if (size < 5)
        return;
    const uint8_t *kind = kinds[data[0] % 15], flags = data[3];
    const uint32_t w = data[1] % 64 + 1, h = data[2] % 64 + 1;
    size_t text_len = data[4], at = 5;
    if (text_len > size - at)
        text_len = size - at;
    const uint8_t *text = data + at;
    at += text_len;
    buf b = {NULL, 0, 0}, z = {NULL, 0, 0};
    put(&b, "\x89PNG\r\n\x1a\n", 8);
    uint8_t ihdr[13] = {0, 0, 0, 0, 0, 0, 0, 0, kind[1], kind[0], 0, 0, flags & 1};
    ihdr[3] = (uint8_t)w;
    ihdr[7] = (uint8_t)h;
    put_chunk(&b, "IHDR", ihdr, 13);
    if (kind[0] == 3) {
        uint8_t plte[768];
        for (int i = 0; i < 256; i++) {
            plte[3 * i] = (uint8_t)i;
            plte[3 * i + 1] = (uint8_t)(255 - i);
            plte[3 * i + 2] = (uint8_t)(i * 7);
        }
        put_chunk(&b, "PLTE", plte, (size_t)3 << kind[1] > 768 ? 768 : (size_t)3 << kind[1]);
    }
    if (flags & 2 && kind[0] != 4 && kind[0] != 6) {
        static const uint8_t trns[6] = {0, 1, 0, 2, 0, 3};
        /* a palette's alpha entries: no more than it has colours */
        put_chunk(&b, "tRNS", trns, kind[0] == 0 ? 2 : kind[0] == 2 ? 6 : kind[1] == 1 ? 2 : 5);
    }
    if (flags & 4) {
        put(&z, "dfx\0\0", 5);
        put_zlib(&z, text, text_len);
        put_chunk(&b, "zTXt", z.d, z.n);
        z.n = 0;
    }
    size_t need = raw_size(w, h, kind[1] * kind[2], flags & 1), have = size - at;
    uint8_t *raw = calloc(need + have + 1, 1);
    CHECK(raw);
    memcpy(raw, data + at, have);
    put_zlib(&z, raw, flags & 16 ? need : have);
    free(raw);
    size_t half = flags & 8 ? z.n / 2 : z.n;
    put_chunk(&b, "IDAT", z.d, half);
    if (half < z.n)
        put_chunk(&b, "IDAT", z.d + half, z.n - half);
    put_chunk(&b, "IEND", NULL, 0);
    read_one(b.d, b.n);
    free(b.d);
    free(z.d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    read_one(data, size);
    uint8_t *fixed = malloc(size ? size : 1);
    CHECK(fixed);
    memcpy(fixed, data, size);
    fix_crcs(fixed, size);
    if (memcmp(fixed, data, size) != 0)
        read_one(fixed, size);
    free(fixed);
    read_recipe(data, size);
    return 0;
}
