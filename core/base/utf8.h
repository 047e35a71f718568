/* UTF-8 encoding of one code point, shared by the parsers that build
 * strings from escapes or code points (JSON, pickle, the tokenizer). */
#ifndef DFX_CORE_UTF8_H
#define DFX_CORE_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Writes c (a Unicode scalar value) as UTF-8 into out; returns the byte
 * count (1 to 4). */
static inline size_t dfx__utf8_put(uint32_t c, unsigned char out[4])
{
    if (c < 0x80) {
        out[0] = (unsigned char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (unsigned char)(0xC0 | (c >> 6));
        out[1] = (unsigned char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (c >> 12));
        out[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (c >> 18));
    out[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

#endif
