/* transformers' CLIPTextModel (v4.38 modeling_clip.py): token + position
 * embeddings, pre-LN transformer layers with causal self-attention
 * (layer_norm1 -> attention -> residual, layer_norm2 -> fc1 -> activation ->
 * fc2 -> residual), final_layer_norm, and the pooled end-token state. */
#include "plugins/clip_text/clip_encoder.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dfx/ops.h"
#include "plugins/common/checkpoint.h"
#include "plugins/common/config.h"

/* ---- config.json ------------------------------------------------------ */

/* Fields of a CLIPTextConfig (and of PretrainedConfig, which older
 * transformers wrote out in full) that do not change the text encoder's
 * output: bookkeeping, training-only settings (dropout, init), the
 * projection of CLIPModel, token ids the encoder never reads (bos, pad),
 * and text-generation defaults. */
static const char *const inert_fields[] = {
    "_name_or_path", "_commit_hash", "transformers_version", "torch_dtype", "projection_dim", "bos_token_id",
    "pad_token_id", "dropout", "attention_dropout", "initializer_range", "initializer_factor",
    "_attn_implementation", "gradient_checkpointing",
    /* PretrainedConfig */
    "add_cross_attention", "chunk_size_feed_forward", "cross_attention_hidden_size", "decoder_start_token_id",
    "finetuning_task", "id2label", "label2id", "num_labels", "is_decoder", "is_encoder_decoder",
    "output_attentions", "output_hidden_states", "prefix", "problem_type", "return_dict", "sep_token_id",
    "task_specific_params", "tf_legacy_loss", "tie_encoder_decoder", "tie_word_embeddings", "tokenizer_class",
    "torchscript", "use_bfloat16", "xla_device",
    /* generation defaults */
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
    "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty",
    "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences",
    "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    NULL};

/* Fields read below. */
static const char *const honoured_fields[] = {
    "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "max_position_embeddings", "hidden_act", "layer_norm_eps", "eos_token_id",
    "use_attention_mask", "pruned_heads", NULL};

static bool listed(const char *const *list, const char *key)
{
    for (int i = 0; list[i]; i++)
        if (strcmp(list[i], key) == 0)
            return true;
    return false;
}

dfx_status clip_config_read(const char *path, const dfx_json *doc, clip_config *c)
{
    dfxp_config r = {path, doc, "clip_text"};
    memset(c, 0, sizeof *c);
    for (int64_t i = 0; i < dfx_json_size(doc); i++) {
        const char *k = dfx_json_key_at(doc, i);
        if (!listed(inert_fields, k) && !listed(honoured_fields, k))
            return dfxp_field_error(&r, k, "unknown to dfx's clip_text, so its effect cannot be reproduced");
    }
    const dfx_json *arch = dfx_json_get(doc, "architectures");
    if (arch && dfx_json_type_of(arch) != DFX_JSON_NULL) {
        bool ok = dfx_json_type_of(arch) == DFX_JSON_ARRAY && dfx_json_size(arch) > 0;
        for (int64_t i = 0; ok && i < dfx_json_size(arch); i++) {
            const char *s = dfx_json_string(dfx_json_at(arch, i));
            ok = s && strcmp(s, "CLIPTextModel") == 0;
        }
        if (!ok)
            return dfxp_field_error(&r, "architectures", "dfx's clip_text reads a CLIPTextModel (no projection "
                                                         "head) and nothing else");
    }
    static const char *const types[] = {"clip_text_model", NULL};
    static const char *const acts[] = {"quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh", NULL};
    static const clip_act act_of[] = {CLIP_ACT_QUICK_GELU, CLIP_ACT_GELU, CLIP_ACT_GELU_TANH, CLIP_ACT_GELU_TANH};
    int act = 0;
    bool mask;
    dfx_status st;
    if ((st = dfxp_get_choice(&r, "model_type", "clip_text_model", types, NULL)) ||
        (st = dfxp_get_int(&r, "vocab_size", 49408, 1, INT64_C(1) << 24, &c->vocab)) ||
        (st = dfxp_get_int(&r, "hidden_size", 512, 1, 65536, &c->hidden)) ||
        (st = dfxp_get_int(&r, "intermediate_size", 2048, 1, 1 << 20, &c->intermediate)) ||
        (st = dfxp_get_int(&r, "num_hidden_layers", 12, 0, 1024, &c->layers)) ||
        (st = dfxp_get_int(&r, "num_attention_heads", 8, 1, 65536, &c->heads)) ||
        (st = dfxp_get_int(&r, "max_position_embeddings", 77, 1, 1 << 16, &c->positions)) ||
        (st = dfxp_get_choice(&r, "hidden_act", "quick_gelu", acts, &act)) ||
        (st = dfxp_get_number(&r, "layer_norm_eps", 1e-5, &c->eps)) ||
        (st = dfxp_get_int(&r, "eos_token_id", 49407, INT64_MIN, INT64_MAX, &c->eos_id)) ||
        (st = dfxp_get_bool(&r, "use_attention_mask", false, &mask)))
        return st;
    c->act = act_of[act];
    if (!(c->eps > 0))
        return dfxp_field_error(&r, "layer_norm_eps", "expected a positive number");
    if (c->hidden % c->heads)
        return dfxp_field_error(&r, "num_attention_heads", "does not divide hidden_size");
    /* diffusers then passes the tokenizer's padding mask to the encoder */
    if (mask)
        return dfxp_field_error(&r, "use_attention_mask", "dfx's clip_text does not mask the padding tokens");
    const dfx_json *pruned = dfx_json_get(doc, "pruned_heads");
    if (pruned && dfx_json_type_of(pruned) != DFX_JSON_NULL &&
        (dfx_json_type_of(pruned) != DFX_JSON_OBJECT || dfx_json_size(pruned) != 0))
        return dfxp_field_error(&r, "pruned_heads", "pruned attention heads are not supported");
    return DFX_OK;
}

/* ---- weights ---------------------------------------------------------- */

/* q_proj, k_proj and v_proj of one layer as one [3 hidden, hidden] linear
 * (one product instead of three), with transformers' query scaling
 * head_dim^-0.5 folded into q_proj. */
static dfx_status load_qkv(dfx_linear *qkv, dfx_weights *w, const char *prefix, int64_t h, float scale)
{
    static const char *const parts[3] = {"q_proj", "k_proj", "v_proj"};
    char name[300];
    *qkv = (dfx_linear){h, 3 * h, malloc((size_t)(3 * h * h) * sizeof(float)),
                        malloc((size_t)(3 * h) * sizeof(float))};
    if (!qkv->w || !qkv->b) {
        dfx_linear_free(qkv);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "clip_text: out of memory for %s", prefix);
    }
    for (int i = 0; i < 3; i++) {
        dfx_linear part;
        snprintf(name, sizeof name, "%s.%s", prefix, parts[i]);
        dfx_status st = dfx_linear_load(&part, w, name, h, h, true);
        if (st) {
            dfx_linear_free(qkv);
            return st;
        }
        const float s = i == 0 ? scale : 1.0f;
        for (int64_t j = 0; j < h * h; j++)
            qkv->w[i * h * h + j] = part.w[j] * s;
        for (int64_t j = 0; j < h; j++)
            qkv->b[i * h + j] = part.b[j] * s;
        dfx_linear_free(&part);
    }
    return DFX_OK;
}

static dfx_status load_network(clip_encoder *e, dfx_weights *w)
{
    const clip_config *c = &e->cfg;
    const int64_t h = c->hidden;
    const float scale = (float)pow((double)(h / c->heads), -0.5);
    char name[256];
    dfx_status st;
    const int64_t tok_shape[2] = {c->vocab, h}, pos_shape[2] = {c->positions, h};
    if ((st = dfx_weights_load(w, "text_model.embeddings.token_embedding.weight", 2, tok_shape, &e->tok_emb)) ||
        (st = dfx_weights_load(w, "text_model.embeddings.position_embedding.weight", 2, pos_shape, &e->pos_emb)))
        return st;
    /* the position_ids buffer of files saved before transformers 4.31: not
     * read since (position i is always i), so marked used and dropped */
    dfx_tensor ids;
    if (dfx_weights_view(w, "text_model.embeddings.position_ids", &ids) == DFX_OK) {
        float *unused;
        if ((st = dfx_weights_load(w, "text_model.embeddings.position_ids", ids.ndim, ids.shape, &unused)))
            return st;
        free(unused);
    }
    dfx_error_clear();
    e->layer = calloc((size_t)(c->layers > 0 ? c->layers : 1), sizeof *e->layer);
    if (!e->layer)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "clip_text: out of memory");
    for (int64_t l = 0; l < c->layers; l++) {
        clip_layer *L = &e->layer[l];
        char p[128];
        snprintf(p, sizeof p, "text_model.encoder.layers.%lld", (long long)l);
#define SUB(leaf) (snprintf(name, sizeof name, "%s.%s", p, leaf), name)
        if ((st = dfx_layer_norm_load(&L->ln1, w, SUB("layer_norm1"), h, c->eps)) ||
            (st = load_qkv(&L->qkv, w, SUB("self_attn"), h, scale)) ||
            (st = dfx_linear_load(&L->out, w, SUB("self_attn.out_proj"), h, h, true)) ||
            (st = dfx_layer_norm_load(&L->ln2, w, SUB("layer_norm2"), h, c->eps)) ||
            (st = dfx_linear_load(&L->fc1, w, SUB("mlp.fc1"), h, c->intermediate, true)) ||
            (st = dfx_linear_load(&L->fc2, w, SUB("mlp.fc2"), c->intermediate, h, true)))
            return st;
#undef SUB
    }
    if ((st = dfx_layer_norm_load(&e->final_norm, w, "text_model.final_layer_norm", h, c->eps)))
        return st;
    return dfx_weights_check_used(w, "");
}

dfx_status clip_encoder_open(clip_encoder *e, const char *path, const char *variant, bool random_weights)
{
    return clip_encoder_open_config(e, path, NULL, variant, random_weights);
}

dfx_status clip_encoder_open_config(clip_encoder *e, const char *path, const char *config, const char *variant,
                                    bool random_weights)
{
    static const dfxp_component_files files = {"text_encoder", "model", true};
    memset(e, 0, sizeof *e);
    dfxp_checkpoint ck;
    dfx_status st = dfxp_checkpoint_open_config(&ck, path, config, &files, variant, random_weights);
    if (st)
        return st;
    if (!(st = clip_config_read(ck.config_path, ck.config, &e->cfg)) && !(st = load_network(e, ck.weights)))
        st = dfx_arena_create(&e->arena);
    dfxp_checkpoint_close(&ck);
    if (st)
        clip_encoder_close(e);
    return st;
}

void clip_encoder_close(clip_encoder *e)
{
    if (e->layer) {
        for (int64_t l = 0; l < e->cfg.layers; l++) {
            clip_layer *L = &e->layer[l];
            dfx_layer_norm_free(&L->ln1);
            dfx_layer_norm_free(&L->ln2);
            dfx_linear_free(&L->qkv);
            dfx_linear_free(&L->out);
            dfx_linear_free(&L->fc1);
            dfx_linear_free(&L->fc2);
        }
    }
    free(e->layer);
    free(e->tok_emb);
    free(e->pos_emb);
    dfx_layer_norm_free(&e->final_norm);
    dfx_arena_destroy(e->arena);
    memset(e, 0, sizeof *e);
}

/* ---- forward ---------------------------------------------------------- */

static void activate(clip_act act, float *x, int64_t n)
{
    switch (act) {
    case CLIP_ACT_QUICK_GELU:
        dfx_nn_quick_gelu(x, n);
        break;
    case CLIP_ACT_GELU:
        dfx_nn_gelu(x, n);
        break;
    case CLIP_ACT_GELU_TANH:
        dfx_nn_gelu_tanh(x, n);
        break;
    }
}

dfx_status clip_encoder_forward(clip_encoder *e, const int64_t *ids, int64_t n, int64_t len, int64_t layers,
                                bool final_norm, float *out)
{
    const clip_config *c = &e->cfg;
    const int64_t h = c->hidden, rows = n * len;
    if (n < 1 || len < 1 || len > c->positions || layers < 0 || layers > c->layers)
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "clip_text: %lld sequences of %lld tokens through %lld layers (the encoder has %lld "
                             "positions and %lld layers)",
                             (long long)n, (long long)len, (long long)layers, (long long)c->positions,
                             (long long)c->layers);
    dfx_arena *a = e->arena;
    const size_t mark = dfx_arena_mark(a);
    float *y = dfx_arena_alloc(a, (size_t)(rows * h));
    float *att = dfx_arena_alloc(a, (size_t)(rows * h));
    float *qkv = dfx_arena_alloc(a, (size_t)(rows * 3 * h));
    float *mlp = dfx_arena_alloc(a, (size_t)(rows * c->intermediate));
    if (!y || !att || !qkv || !mlp) {
        dfx_arena_release(a, mark);
        return DFX_ERR_NO_MEMORY;
    }
    /* the residual stream lives in out */
    float *x = out;
    for (int64_t r = 0; r < rows; r++) {
        const float *tok = e->tok_emb + ids[r] * h, *pos = e->pos_emb + (r % len) * h;
        for (int64_t j = 0; j < h; j++)
            x[r * h + j] = tok[j] + pos[j];
    }
    for (int64_t l = 0; l < layers; l++) {
        const clip_layer *L = &e->layer[l];
        dfx_layer_norm_forward(&L->ln1, x, rows, y);
        dfx_linear_forward(&L->qkv, y, rows, qkv);
        /* queries already scaled */
        dfx_status st = dfx_nn_attention_causal(qkv, 3 * h, qkv + h, 3 * h, qkv + 2 * h, 3 * h, n, c->heads, len,
                                                h / c->heads, 1.0f, att, h, a);
        if (st) {
            dfx_arena_release(a, mark);
            return st;
        }
        dfx_linear_forward(&L->out, att, rows, y);
        dfx_nn_add(x, x, y, rows * h);
        dfx_layer_norm_forward(&L->ln2, x, rows, y);
        dfx_linear_forward(&L->fc1, y, rows, mlp);
        activate(c->act, mlp, rows * c->intermediate);
        dfx_linear_forward(&L->fc2, mlp, rows, y);
        dfx_nn_add(x, x, y, rows * h);
    }
    if (final_norm)
        dfx_layer_norm_forward(&e->final_norm, x, rows, x);
    dfx_arena_release(a, mark);
    return DFX_OK;
}

void clip_encoder_pool(const clip_encoder *e, const int64_t *ids, int64_t n, int64_t len, const float *states,
                       float *pooled)
{
    const int64_t h = e->cfg.hidden;
    for (int64_t b = 0; b < n; b++) {
        const int64_t *row = ids + b * len;
        int64_t at = 0;
        if (e->cfg.eos_id == 2) {
            /* before transformers PR #24773: the end token has the largest id */
            for (int64_t t = 1; t < len; t++)
                at = row[t] > row[at] ? t : at;
        } else {
            while (at < len && row[at] != e->cfg.eos_id)
                at++;
            at = at < len ? at : 0;
        }
        memcpy(pooled + b * h, states + (b * len + at) * h, (size_t)h * sizeof(float));
    }
}
