/* diffusers' Transformer2DModel on image features, as the cross-attention
 * blocks of UNet2DConditionModel use it (models/transformers/transformer_2d.py
 * and models/attention.py): GroupNorm, proj_in, BasicTransformerBlocks
 * (self-attention, cross-attention on the text states, GEGLU feed-forward,
 * each after a LayerNorm and with a residual), proj_out, residual. */
#ifndef DFX_PLUGINS_SD_UNET_TRANSFORMER_H
#define DFX_PLUGINS_SD_UNET_TRANSFORMER_H

#include <stdbool.h>
#include <stdint.h>

#include "dfx/nn.h"

/* diffusers' Attention without biases on q, k, v (attention_bias false) */
typedef struct sdu_attention {
    dfx_linear q, k, v, out;
} sdu_attention;

/* BasicTransformerBlock, norm_type "layer_norm", activation "geglu" */
typedef struct sdu_block {
    dfx_layer_norm norm1, norm2, norm3;
    sdu_attention attn1, attn2;
    dfx_linear ff_in;    /* ff.net.0.proj [2 * ff, inner]: the value half, then the gate half */
    dfx_linear ff_out;   /* ff.net.2 [inner, ff] */
} sdu_block;

typedef struct sdu_transformer {
    int64_t channels;     /* of the image features */
    int64_t heads, head_dim, inner;  /* inner = heads * head_dim */
    int64_t context_dim;  /* width of the cross-attention states */
    int64_t ff;           /* feed-forward width, 4 * inner */
    int64_t depth;        /* transformer blocks */
    dfx_group_norm norm;
    dfx_linear proj_in, proj_out;
    sdu_block *blocks;    /* [depth] */
} sdu_transformer;

typedef struct sdu_transformer_params {
    int64_t channels;
    int64_t heads;        /* head_dim = channels / heads, as diffusers' blocks derive it */
    int64_t depth;
    int64_t groups;       /* of the group norm (eps 1e-6) */
    int64_t context_dim;
} sdu_transformer_params;

/* Loads prefix.{norm, proj_in, transformer_blocks.K.*, proj_out}. proj_in and
 * proj_out may be stored as linear weights [out, in] or as 1x1 convolutions
 * [out, in, 1, 1] (use_linear_projection true or false): both compute the
 * same product on every pixel. Frees what it loaded on failure. */
dfx_status sdu_transformer_load(sdu_transformer *t, dfx_weights *w, const char *prefix,
                                const sdu_transformer_params *p);
/* Releases what load allocated; a zeroed struct is fine. */
void sdu_transformer_free(sdu_transformer *t);

/* x [n, channels, hw] += the transformer's output on x, attending to
 * context [n, tokens, context_dim]. Temporaries come from the arena. */
dfx_status sdu_transformer_forward(const sdu_transformer *t, float *x, int64_t n, int64_t hw,
                                   const float *context, int64_t tokens, dfx_arena *a);

#endif
