/* What transformers' CLIPTokenizer._tokenize does to a piece of prompt
 * before BPE: the clean-up (ftfy.fix_text, whitespace_clean and lower(); or
 * BasicTokenizer without ftfy) and the pre-tokenizer pattern
 *   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * (regex module, IGNORECASE), matched by hand with the classes the regex
 * module itself gave tools/gen_unicode_tables.py. */
#include "core/text/text_internal.h"

dfx_status dfx__clip_clean_text(const uint32_t *s, size_t n, bool ftfy, dfx__ustr *out)
{
    if (!ftfy) {
        dfx__basic_tokenize(s, n, out);
        return dfx__ustr_status(out);
    }
    dfx__ustr fixed = {0}, clean = {0};
    dfx_status st = dfx__ftfy_fix_text(s, n, &fixed);
    if (st == DFX_OK) {
        /* whitespace_clean: re.sub(r"\s+", " ", text) with the regex
         * module's \s, then str.strip() with Python's (wider) whitespace */
        for (size_t i = 0; i < fixed.n;) {
            if (dfx__uset_has(&dfx__regex_space, fixed.c[i])) {
                while (i < fixed.n && dfx__uset_has(&dfx__regex_space, fixed.c[i]))
                    i++;
                dfx__ustr_push(&clean, ' ');
            } else {
                dfx__ustr_push(&clean, fixed.c[i++]);
            }
        }
        size_t b, e;
        dfx__unicode_strip(clean.c, clean.n, &b, &e);
        /* an empty text has no buffer at all */
        if (e > b)
            dfx__unicode_lower(clean.c + b, e - b, out);
        if (fixed.oom || clean.oom)
            out->oom = true;
        st = dfx__ustr_status(out);
    }
    dfx__ustr_fini(&fixed);
    dfx__ustr_fini(&clean);
    return st;
}

/* Whether c matches the pattern's letter x (a-z) under IGNORECASE. */
static bool letter_ci(uint32_t c, char x)
{
    if (c == (uint32_t)x || c == (uint32_t)x - 32)
        return true;
    for (size_t i = 0; i < dfx__clip_fold_count; i++)
        if (dfx__clip_fold[i].cp == c)
            return dfx__clip_fold[i].letter == x;
    return false;
}

/* The length of literal lit at s[i] under IGNORECASE, or 0. */
static size_t literal_at(const uint32_t *s, size_t n, size_t i, const char *lit)
{
    size_t k = 0;
    for (; lit[k]; k++) {
        if (i + k >= n)
            return 0;
        char x = lit[k];
        if (x >= 'a' && x <= 'z' ? !letter_ci(s[i + k], x) : s[i + k] != (uint32_t)x)
            return 0;
    }
    return k;
}

bool dfx__clip_pretokenize_next(const uint32_t *s, size_t n, size_t *pos, size_t *begin, size_t *end)
{
    static const char *const literals[] = {"<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve", "'m",
                                           "'ll", "'d"};
    for (size_t i = *pos; i < n; i++) {
        size_t len = 0;
        if (s[i] == '<' || s[i] == '\'') {
            for (size_t k = 0; k < sizeof literals / sizeof *literals && !len; k++)
                len = literal_at(s, n, i, literals[k]);
        }
        if (!len && dfx__uset_has(&dfx__clip_letter, s[i])) {
            while (i + len < n && dfx__uset_has(&dfx__clip_letter, s[i + len]))
                len++;
        }
        if (!len && dfx__uset_has(&dfx__clip_number, s[i]))
            len = 1;
        if (!len && dfx__uset_has(&dfx__clip_other, s[i])) {
            while (i + len < n && dfx__uset_has(&dfx__clip_other, s[i + len]))
                len++;
        }
        /* else: whitespace, or one of the few code points (U+0345...) that
         * IGNORECASE keeps out of every class: the pattern skips it */
        if (len) {
            *begin = i;
            *end = i + len;
            *pos = i + len;
            return true;
        }
    }
    *pos = n;
    return false;
}
