/* libFuzzer target: the CLIP tokenizer's parsers of outside input. The
 * first byte picks what the rest is:
 *  - even: a prompt, encoded by OpenAI's tokenizer (data/clip) with and
 *    without the ftfy clean-up, untruncated and padded: every id must be in
 *    the vocabulary, the padded form exactly max_length long with bos first;
 *  - odd: a merges.txt, loaded into an empty BPE table (an accepted table
 *    has every merge's result among its symbols) and applied to a word. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/text_internal.h"
#include "dfx/text.h"

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            __builtin_trap();                                                  \
    } while (0)

/* The fuzz build has no installed data folder: the source tree's. */
const char *dfx__data_dir(void)
{
    return DFX_FUZZ_DATA_DIR;
}

static dfx_clip_tokenizer *tok;

static void check_prompt(const char *text)
{
    for (int ftfy = 0; ftfy < 2; ftfy++) {
        int64_t *ids = NULL, n = 0;
        if (dfx_clip_tokenizer_encode(tok, text, ftfy, &ids, &n) == DFX_OK) {
            CHECK(n >= 2 && ids[0] == dfx_clip_tokenizer_bos(tok) && ids[n - 1] == dfx_clip_tokenizer_eos(tok));
            for (int64_t i = 0; i < n; i++)
                CHECK(ids[i] >= 0 && ids[i] < dfx_clip_tokenizer_vocab_size(tok));
            free(ids);
        }
        int64_t padded[77], dropped = -1;
        CHECK(dfx_clip_tokenizer_max_length(tok) == 77);
        if (dfx_clip_tokenizer_encode_padded(tok, text, ftfy, padded, &dropped) == DFX_OK) {
            CHECK(dropped >= 0 && padded[0] == dfx_clip_tokenizer_bos(tok));
            for (int i = 0; i < 77; i++)
                CHECK(padded[i] >= 0 && padded[i] < dfx_clip_tokenizer_vocab_size(tok));
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char *rest = malloc(size);
    if (!rest)
        return 0;
    memcpy(rest, data + 1, size - 1);
    rest[size - 1] = '\0';
    if (data[0] % 2 == 0) {
        if (!tok)
            CHECK(dfx_clip_tokenizer_open_default(&tok, false) == DFX_OK);
        check_prompt(rest);
    } else {
        dfx__bpe bpe;
        memset(&bpe, 0, sizeof bpe);
        if (dfx__bpe_load_merges(&bpe, rest, size - 1, "merges.txt") == DFX_OK) {
            for (size_t i = 0; i < bpe.nmerges; i++)
                CHECK(bpe.merged[i] < (int64_t)bpe.nsymbols);
            /* and the table applied to a word made of the input's bytes */
            int32_t *syms = NULL;
            size_t nsyms = 0, len = size - 1 < 24 ? size - 1 : 24;
            if (len && dfx__bpe_word(&bpe, (const unsigned char *)rest, len, &syms, &nsyms) == DFX_OK) {
                for (size_t i = 0; i < nsyms; i++)
                    CHECK(syms[i] >= 0 && (size_t)syms[i] < bpe.nsymbols);
                free(syms);
            }
        }
        dfx__bpe_fini(&bpe);
    }
    free(rest);
    return 0;
}
