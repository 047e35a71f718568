/* The clip_text conditioner: a prompt and a negative prompt through CLIP's
 * tokenizer and transformers' CLIPTextModel, as diffusers'
 * StableDiffusionPipeline.encode_prompt does (v0.27): padded to the
 * tokenizer's length, truncated with a warning, the last hidden state (or,
 * with clip_skip, an earlier one through final_layer_norm) repeated for
 * every image of the batch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dfx/plugin.h"
#include "dfx/text.h"
#include "plugins/clip_text/clip_encoder.h"
#include "plugins/common/config.h"

typedef struct clip_text {
    char *prompt;
    char *negative_prompt;
    int64_t clip_skip;
    char *path;
    char *config;
    char *tokenizer;
    char *variant;
    bool ftfy;
    bool random_weights;

    clip_encoder enc;
    int64_t len;   /* tokens per prompt: the tokenizer's model_max_length */
    int64_t *ids;  /* [2, len]: the prompt's, then the negative prompt's */
} clip_text;

static const dfx_option clip_text_options[] = {
    DFX_OPTION_STRING("prompt", offsetof(clip_text, prompt), "", "the text to condition on"),
    DFX_OPTION_STRING("negative_prompt", offsetof(clip_text, negative_prompt), "",
                      "the text of the unconditional half of guidance (\"\" as diffusers encodes when none is "
                      "given)"),
    DFX_OPTION_INT("clip_skip", offsetof(clip_text, clip_skip), 0, 0, 1024,
                   "as diffusers' clip_skip: k > 0 conditions the prompt on the text encoder's output k layers "
                   "before the last, through its final layer norm (diffusers encodes the negative prompt "
                   "without skipping); SD 2.x encoders already stop at the penultimate layer"),
    DFX_OPTION_PATH("path", offsetof(clip_text, path),
                    "an original single-file checkpoint (.safetensors, .ckpt), a diffusers pipeline folder "
                    "(model_index.json and text_encoder/) or a text_encoder folder (config.json and "
                    "model.safetensors); default: the model's path"),
    DFX_OPTION_PATH("config", offsetof(clip_text, config),
                    "a single-file checkpoint's ldm yaml (default: STEM.yaml beside it, if any) or text encoder "
                    "config.json"),
    DFX_OPTION_PATH("tokenizer", offsetof(clip_text, tokenizer),
                    "a CLIP tokenizer folder (vocab.json, merges.txt); default: the pipeline folder's "
                    "tokenizer/, else OpenAI CLIP's vocabulary that ships with dfx"),
    DFX_OPTION_STRING("variant", offsetof(clip_text, variant), NULL,
                      "weights variant: reads model.VARIANT.safetensors (e.g. fp16)"),
    DFX_OPTION_BOOL("ftfy", offsetof(clip_text, ftfy), true,
                    "clean the text as transformers does with ftfy installed (quotes, entities, mojibake)"),
    DFX_OPTION_BOOL("random_weights", offsetof(clip_text, random_weights), false,
                    "seeded random weights instead of the folder's (benchmarks): only config.json is read"),
    DFX_OPTION_END,
};

/* The tokenizer the text encoder was trained with: the option's folder, a
 * pipeline folder's tokenizer/, or OpenAI CLIP's vocabulary, padded with
 * "!" for OpenCLIP's GELU encoders (SD 2.x) as stabilityai's tokenizers
 * are. */
static dfx_status open_tokenizer(const clip_text *p, dfx_clip_tokenizer **tok)
{
    if (p->tokenizer)
        return dfx_clip_tokenizer_open(tok, p->tokenizer);
    char *index = dfxp_join(p->path, "model_index.json"), *dir = dfxp_join(p->path, "tokenizer");
    dfx_status st;
    if (!index || !dir)
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    else if (dfxp_is_file(index) && dfxp_is_dir(dir))
        st = dfx_clip_tokenizer_open(tok, dir);
    else
        st = dfx_clip_tokenizer_open_default(tok, p->enc.cfg.act == CLIP_ACT_GELU);
    free(index);
    free(dir);
    return st;
}

/* ids [len] of one text; a text longer than the model reads is truncated
 * with a warning, as diffusers does. */
static dfx_status tokenize(clip_text *p, const dfx_clip_tokenizer *tok, const char *key, const char *text,
                           int64_t *ids)
{
    int64_t dropped = 0;
    dfx_status st = dfx_clip_tokenizer_encode_padded(tok, text, p->ftfy, ids, &dropped);
    if (st)
        return dfx_error_prefix(st, "conditioner.%s: ", key);
    if (dropped > 0)
        dfx_warn("conditioner.%s: %lld tokens, the text encoder reads %lld (+ start and end): the last %lld "
                 "are dropped",
                 key, (long long)(p->len - 2 + dropped), (long long)(p->len - 2), (long long)dropped);
    const int64_t vocab = p->enc.cfg.vocab;
    for (int64_t i = 0; i < p->len; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return dfx_error_set(DFX_ERR_FORMAT,
                                 "conditioner.%s: token id %lld does not fit the text encoder's vocabulary of "
                                 "%lld (the tokenizer has %lld tokens): the tokenizer is not the encoder's; "
                                 "give the right one with conditioner.tokenizer=FOLDER",
                                 key, (long long)ids[i], (long long)vocab,
                                 (long long)dfx_clip_tokenizer_vocab_size(tok));
    return DFX_OK;
}

static void clip_text_fini(void *priv)
{
    clip_text *p = priv;
    clip_encoder_close(&p->enc);
    free(p->ids);
    p->ids = NULL;
}

static dfx_status clip_text_init(void *priv)
{
    clip_text *p = priv;
    if (!p->path)
        return dfx_error_set(DFX_ERR_CONFIG, "clip_text: no text encoder: set conditioner.path (or model.path, "
                                             "which a conditioner without a path reads) to a diffusers folder");
    dfx_status st = clip_encoder_open_config(&p->enc, p->path, p->config, p->variant, p->random_weights);
    if (st)
        return st;
    const clip_config *c = &p->enc.cfg;
    dfx_clip_tokenizer *tok = NULL;
    if (p->clip_skip > c->layers) {
        st = dfx_error_set(DFX_ERR_RANGE, "conditioner.clip_skip: %lld, but the text encoder has %lld layers",
                           (long long)p->clip_skip, (long long)c->layers);
        goto done;
    }
    if ((st = open_tokenizer(p, &tok)))
        goto done;
    p->len = dfx_clip_tokenizer_max_length(tok);
    const int64_t tv = dfx_clip_tokenizer_vocab_size(tok);
    if (p->len < 2 || p->len > c->positions) {
        st = dfx_error_set(DFX_ERR_FORMAT,
                           "clip_text: the tokenizer pads to %lld tokens but the text encoder reads 2 to %lld; "
                           "give the encoder's tokenizer with conditioner.tokenizer=FOLDER",
                           (long long)p->len, (long long)c->positions);
        goto done;
    }
    if (tv > c->vocab) {
        st = dfx_error_set(DFX_ERR_FORMAT,
                           "clip_text: the tokenizer has %lld tokens but the text encoder's vocabulary has %lld: "
                           "the tokenizer is not the encoder's; give the right one with "
                           "conditioner.tokenizer=FOLDER",
                           (long long)tv, (long long)c->vocab);
        goto done;
    }
    if (!(p->ids = malloc((size_t)(2 * p->len) * sizeof *p->ids))) {
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    if ((st = tokenize(p, tok, "prompt", p->prompt ? p->prompt : "", p->ids)))
        goto done;
    st = tokenize(p, tok, "negative_prompt", p->negative_prompt ? p->negative_prompt : "", p->ids + p->len);
done:
    dfx_clip_tokenizer_close(tok);
    if (st)
        clip_text_fini(p);
    return st;
}

/* dst [batch, len, hidden] and [batch, hidden]: copies of one encoding. */
static dfx_status repeat(const clip_text *p, const float *states, const float *pooled, int64_t batch,
                         dfx_tensor **ctx, dfx_tensor **pool)
{
    const int64_t h = p->enc.cfg.hidden, per = p->len * h;
    const int64_t cshape[3] = {batch, p->len, h}, pshape[2] = {batch, h};
    dfx_status st;
    if ((st = dfx_tensor_create(ctx, DFX_DTYPE_F32, 3, cshape)) ||
        (st = dfx_tensor_create(pool, DFX_DTYPE_F32, 2, pshape)))
        return st;
    float *cd = (*ctx)->data, *pd = (*pool)->data;
    for (int64_t b = 0; b < batch; b++) {
        memcpy(cd + b * per, states, (size_t)per * sizeof(float));
        memcpy(pd + b * h, pooled, (size_t)h * sizeof(float));
    }
    return DFX_OK;
}

static dfx_status clip_text_encode(void *priv, int64_t batch, bool uncond, dfx_conditioning *out)
{
    clip_text *p = priv;
    const clip_config *c = &p->enc.cfg;
    const int64_t per = p->len * c->hidden;
    if (batch < 1)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "clip_text: batch %lld", (long long)batch);
    float *states = malloc((size_t)(2 * (per + c->hidden)) * sizeof(float));
    if (!states)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    float *pooled = states + 2 * per;
    const int64_t skip = p->clip_skip;
    dfx_status st;
    /* both texts in one pass when they go through the same layers */
    if (uncond && skip == 0) {
        st = clip_encoder_forward(&p->enc, p->ids, 2, p->len, c->layers, true, states);
    } else {
        st = clip_encoder_forward(&p->enc, p->ids, 1, p->len, c->layers - skip, true, states);
        if (!st && uncond)
            st = clip_encoder_forward(&p->enc, p->ids + p->len, 1, p->len, c->layers, true, states + per);
    }
    if (!st) {
        clip_encoder_pool(&p->enc, p->ids, uncond ? 2 : 1, p->len, states, pooled);
        st = repeat(p, states, pooled, batch, &out->context, &out->pooled);
    }
    if (!st && uncond)
        st = repeat(p, states + per, pooled + c->hidden, batch, &out->uncond_context, &out->uncond_pooled);
    free(states);
    if (st) {
        dfx_tensor_destroy(out->context);
        dfx_tensor_destroy(out->pooled);
        dfx_tensor_destroy(out->uncond_context);
        dfx_tensor_destroy(out->uncond_pooled);
        out->context = out->pooled = out->uncond_context = out->uncond_pooled = NULL;
    }
    return st;
}

static void clip_text_info(void *priv, dfx_conditioner_info *info)
{
    const clip_text *p = priv;
    info->prompt = p->prompt;
    info->negative_prompt = p->negative_prompt;
}

static const dfx_conditioner_ops clip_text_ops = {
    .encode = clip_text_encode,
    .info = clip_text_info,
};

static const dfx_component clip_text_component = {
    DFX_KIND_CONDITIONER, "clip_text", "a prompt through CLIP's tokenizer and text encoder (Stable Diffusion 1.x/2.x)",
    sizeof(clip_text), clip_text_options, clip_text_init, clip_text_fini, &clip_text_ops,
};

static const dfx_component *const components[] = {&clip_text_component, NULL};

static const dfx_plugin plugin = {
    DFX_ABI_VERSION, sizeof(dfx_plugin), "clip_text", "1.0", "MIT", components,
};

DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void)
{
    return &plugin;
}
