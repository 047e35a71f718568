/* Text for text-conditioned models: CLIP's byte-level BPE tokenizer, as
 * transformers' CLIPTokenizer applies it to Stable Diffusion prompts
 * (ftfy clean-up, whitespace normalisation, lower-casing, CLIP's
 * pre-tokenizer pattern, the byte alphabet, </w> word ends, special tokens,
 * padding and truncation to the model's length). */
#ifndef DFX_TEXT_H
#define DFX_TEXT_H

#include <stdbool.h>
#include <stdint.h>

#include "dfx/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dfx_clip_tokenizer dfx_clip_tokenizer;

/* Opens a tokenizer folder as transformers writes it: vocab.json,
 * merges.txt, and (optional) special_tokens_map.json / tokenizer_config.json
 * for the bos/eos/pad/unk tokens and model_max_length (pad is "!" in SD 2.x,
 * <|endoftext|> in SD 1.x). Errors name the file and what was expected. */
DFX_API dfx_status dfx_clip_tokenizer_open(dfx_clip_tokenizer **out, const char *folder);

/* OpenAI CLIP's own vocabulary (bpe_simple_vocab_16e6, shipped with dfx:
 * what single-file SD 1.x/2.x checkpoints were trained with), 77 tokens,
 * padded with <|endoftext|> (SD 1.x) or "!" (pad_with_bang, SD 2.x). */
DFX_API dfx_status dfx_clip_tokenizer_open_default(dfx_clip_tokenizer **out, bool pad_with_bang);

DFX_API void dfx_clip_tokenizer_close(dfx_clip_tokenizer *tok);

/* Vocabulary size and special ids. */
DFX_API int64_t dfx_clip_tokenizer_vocab_size(const dfx_clip_tokenizer *tok);
DFX_API int64_t dfx_clip_tokenizer_bos(const dfx_clip_tokenizer *tok);
DFX_API int64_t dfx_clip_tokenizer_eos(const dfx_clip_tokenizer *tok);
DFX_API int64_t dfx_clip_tokenizer_pad(const dfx_clip_tokenizer *tok);
DFX_API int64_t dfx_clip_tokenizer_max_length(const dfx_clip_tokenizer *tok);

/* The token string of an id ("photo</w>"), or NULL. */
DFX_API const char *dfx_clip_tokenizer_token(const dfx_clip_tokenizer *tok, int64_t id);

/* Tokenizes text into [bos] + ids + [eos], untruncated: *ids is a heap
 * array of *n ids (free with free()). `ftfy` applies ftfy's fix_text as
 * transformers does when ftfy is installed (it was for the SD fixtures);
 * without it, transformers' BasicTokenizer clean-up. */
DFX_API dfx_status dfx_clip_tokenizer_encode(const dfx_clip_tokenizer *tok, const char *text, bool ftfy,
                                             int64_t **ids, int64_t *n);

/* As the SD pipelines call the tokenizer (padding="max_length",
 * truncation=True): exactly max_length ids in out: [bos] + ids[:max-2] +
 * [eos] + [pad]...; *dropped receives how many prompt tokens truncation
 * removed (0 when all fit). */
DFX_API dfx_status dfx_clip_tokenizer_encode_padded(const dfx_clip_tokenizer *tok, const char *text, bool ftfy,
                                                    int64_t *out, int64_t *dropped);

#ifdef __cplusplus
}
#endif
#endif
