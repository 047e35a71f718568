/* transformers' CLIPTextModel (the Stable Diffusion text encoder), inside the
 * clip_text plugin: its config.json, its weights under diffusers /
 * transformers names, and the forward pass on token ids. Separate from the
 * conditioner so that the parity tests can feed ids to it directly. */
#ifndef DFX_PLUGINS_CLIP_ENCODER_H
#define DFX_PLUGINS_CLIP_ENCODER_H

#include <stdbool.h>
#include <stdint.h>

#include "dfx/json.h"
#include "dfx/nn.h"

typedef enum clip_act {
    CLIP_ACT_QUICK_GELU = 0,  /* x sigmoid(1.702 x): OpenAI CLIP (SD 1.x) */
    CLIP_ACT_GELU,            /* exact erf GELU: OpenCLIP (SD 2.x) */
    CLIP_ACT_GELU_TANH        /* tanh approximation ("gelu_new", "gelu_pytorch_tanh") */
} clip_act;

/* The CLIPTextConfig fields that change the numbers. */
typedef struct clip_config {
    int64_t vocab, hidden, intermediate, layers, heads, positions;
    clip_act act;
    double eps;
    int64_t eos_id;  /* 2 selects transformers' legacy argmax pooling */
} clip_config;

typedef struct clip_layer {
    dfx_layer_norm ln1, ln2;
    dfx_linear qkv;  /* q_proj, k_proj and v_proj stacked: [3 hidden, hidden] */
    dfx_linear out, fc1, fc2;
} clip_layer;

typedef struct clip_encoder {
    clip_config cfg;
    float *tok_emb;  /* [vocab, hidden] */
    float *pos_emb;  /* [positions, hidden] */
    clip_layer *layer;  /* [layers] */
    dfx_layer_norm final_norm;
    dfx_arena *arena;
} clip_encoder;

/* Reads a transformers CLIPTextConfig document (transformers' defaults for
 * absent fields); a field that would change the result and that dfx does
 * not honour is an error naming it. */
dfx_status clip_config_read(const char *path, const dfx_json *doc, clip_config *c);

/* Loads the text encoder of `path` (a diffusers pipeline folder, or a
 * text_encoder folder: config.json and model[.VARIANT].safetensors); with
 * random_weights, seeded random weights for the config's shapes. Every
 * tensor of the file must be used (the position_ids buffer older files
 * carry is accepted and ignored, as transformers 4.38 does). On failure e
 * is left empty. */
dfx_status clip_encoder_open(clip_encoder *e, const char *path, const char *variant, bool random_weights);
/* As clip_encoder_open; `path` may also be an original single-file Stable
 * Diffusion checkpoint, described by `config` (see
 * dfxp_checkpoint_open_config; NULL: none given). */
dfx_status clip_encoder_open_config(clip_encoder *e, const char *path, const char *config, const char *variant,
                                    bool random_weights);
void clip_encoder_close(clip_encoder *e);

/* out [n, len, hidden] = the hidden states after the first `layers` layers
 * (0: the embeddings) of the n sequences of `len` ids, followed by
 * final_layer_norm when final_norm. layers = cfg.layers with final_norm is
 * last_hidden_state; diffusers' clip_skip = k is layers = cfg.layers - k.
 * Ids must lie in [0, vocab) and len in [1, positions] (checked by the
 * caller). Not reentrant (the encoder's arena). */
dfx_status clip_encoder_forward(clip_encoder *e, const int64_t *ids, int64_t n, int64_t len, int64_t layers,
                                bool final_norm, float *out);

/* pooled [n, hidden] = the row of states [n, len, hidden] at the end token
 * of each sequence, as transformers' pooler_output picks it: the first
 * position of eos_id, or with the legacy eos_id 2 the position of the
 * largest id (the first one on ties). */
void clip_encoder_pool(const clip_encoder *e, const int64_t *ids, int64_t n, int64_t len, const float *states,
                       float *pooled);

#endif
