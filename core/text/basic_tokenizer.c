/* The clean-up transformers' CLIPTokenizer falls back on when ftfy is not
 * installed: " ".join(BasicTokenizer(strip_accents=False,
 * do_split_on_punc=False).tokenize(text)) from tokenization_clip.py (a copy
 * of BERT's). No punctuation splitting and no accent stripping here, so
 * what remains is _clean_text, _tokenize_chinese_chars, NFC, splitting on
 * whitespace and lower-casing each word. */
#include "core/text/text_internal.h"

/* BasicTokenizer._is_chinese_char: the CJK Unified Ideographs blocks */
static bool chinese(uint32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

void dfx__basic_tokenize(const uint32_t *s, size_t n, dfx__ustr *out)
{
    dfx__ustr clean = {0}, nfc = {0};
    for (size_t i = 0; i < n; i++) {
        uint32_t c = s[i];
        bool tab_or_newline = c == '\t' || c == '\n' || c == '\r';
        /* _clean_text: drop NUL, U+FFFD and _is_control (category C*, but
         * not \t \n \r); _is_whitespace (those three, ' ' and Zs) -> ' ' */
        if (c == 0 || c == 0xFFFD || (!tab_or_newline && dfx__uset_has(&dfx__py_control, c)))
            continue;
        if (tab_or_newline || c == ' ' || dfx__uset_has(&dfx__py_zs, c)) {
            dfx__ustr_push(&clean, ' ');
        } else if (chinese(c)) {
            dfx__ustr_push(&clean, ' ');
            dfx__ustr_push(&clean, c);
            dfx__ustr_push(&clean, ' ');
        } else {
            dfx__ustr_push(&clean, c);
        }
    }
    dfx__unicode_nfc(clean.c, clean.n, &nfc);
    if (clean.oom || nfc.oom)
        out->oom = true;
    /* whitespace_tokenize (str.split()), each word lower-cased, joined by
     * single spaces (the second whitespace_tokenize and the join change
     * nothing more: lower() never makes whitespace) */
    bool first = true;
    for (size_t i = 0; i < nfc.n;) {
        while (i < nfc.n && dfx__uset_has(&dfx__py_space, nfc.c[i]))
            i++;
        if (i == nfc.n)
            break;
        size_t b = i;
        while (i < nfc.n && !dfx__uset_has(&dfx__py_space, nfc.c[i]))
            i++;
        if (!first)
            dfx__ustr_push(out, ' ');
        first = false;
        dfx__unicode_lower(nfc.c + b, i - b, out);
    }
    dfx__ustr_fini(&clean);
    dfx__ustr_fini(&nfc);
}
