/* Original single-file Stable Diffusion checkpoints as diffusers
 * components: the ldm/Stability names renamed to diffusers' (the inverse of
 * diffusers v0.27 scripts/convert_diffusers_to_original_stable_diffusion.py,
 * as loaders/single_file_utils.py reads them), and the config each plugin
 * reads inferred from the tensors' shapes and the ldm yaml. */
#include "plugins/common/single_file.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/common/config.h"
#include "plugins/common/ldm_yaml.h"

#define UNET_PREFIX "model.diffusion_model."
#define VAE_PREFIX "first_stage_model."
#define CLIP_PREFIX "cond_stage_model.transformer."
#define OPENCLIP_PREFIX "cond_stage_model.model."

/* Longest tensor name handled. */
#define NAME_MAX_LEN 512
/* Most resolution levels of a UNet or autoencoder. */
#define MAX_LEVELS 8

typedef enum sf_kind { SF_UNET, SF_VAE, SF_CLIP, SF_OPENCLIP } sf_kind;

/* How one component is laid out in the file: what renaming needs in either
 * direction (plain data: the weights set keeps a copy for its messages). */
typedef struct sf_layout {
    sf_kind kind;
    int64_t levels;     /* UNet, VAE: resolution levels */
    int64_t layers;     /* UNet: resnets per down level */
    uint32_t down_attn; /* UNet: bit i set when down_blocks.i has attentions */
    uint32_t up_attn;   /* UNet: the same for up_blocks.i */
    int64_t width;      /* OpenCLIP: rows of each of q, k, v in the fused projection */
    int64_t last;       /* OpenCLIP: the resblock left out (the penultimate-layer
                           convention), -1 for none */
    bool text_model;    /* CLIP: the file's names carry "text_model." */
} sf_layout;

/* ---- names ------------------------------------------------------------ */

/* s starts with prefix: *rest is what follows. */
static bool starts(const char *s, const char *prefix, const char **rest)
{
    size_t n = strlen(prefix);
    if (strncmp(s, prefix, n) != 0)
        return false;
    *rest = s + n;
    return true;
}

/* s starts with "N." (a decimal index): returns N, *rest after the dot;
 * else -1. */
static int64_t take_index(const char *s, const char **rest)
{
    if (!isdigit((unsigned char)*s))
        return -1;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end != '.' || v > 1 << 20)
        return -1;
    *rest = end + 1;
    return v;
}

/* A parameter's leaf: "weight" or "bias". */
static bool leaf(const char *s)
{
    return strcmp(s, "weight") == 0 || strcmp(s, "bias") == 0;
}

/* Pairs {original, diffusers} of module prefixes whose leaves are a
 * parameter's; `to_diffusers` picks the direction. */
typedef struct rename_pair {
    const char *original, *diffusers;
} rename_pair;

static bool rename_leaf(const rename_pair *t, size_t n, bool to_diffusers, const char *s, const char **to,
                        const char **tail)
{
    for (size_t i = 0; i < n; i++)
        if (starts(s, to_diffusers ? t[i].original : t[i].diffusers, tail) && leaf(*tail)) {
            *to = to_diffusers ? t[i].diffusers : t[i].original;
            return true;
        }
    return false;
}

#define COUNT(a) (sizeof(a) / sizeof *(a))

static const rename_pair unet_top[] = {
    {"time_embed.0.", "time_embedding.linear_1."}, {"time_embed.2.", "time_embedding.linear_2."},
    {"input_blocks.0.0.", "conv_in."},             {"out.0.", "conv_norm_out."},
    {"out.2.", "conv_out."},
};
static const rename_pair unet_resnet[] = {
    {"in_layers.0.", "norm1."},  {"in_layers.2.", "conv1."},  {"emb_layers.1.", "time_emb_proj."},
    {"out_layers.0.", "norm2."}, {"out_layers.3.", "conv2."}, {"skip_connection.", "conv_shortcut."},
};
static const rename_pair vae_top[] = {
    {"encoder.conv_in.", "encoder.conv_in."},   {"encoder.conv_out.", "encoder.conv_out."},
    {"encoder.norm_out.", "encoder.conv_norm_out."}, {"decoder.conv_in.", "decoder.conv_in."},
    {"decoder.conv_out.", "decoder.conv_out."}, {"decoder.norm_out.", "decoder.conv_norm_out."},
    {"quant_conv.", "quant_conv."},             {"post_quant_conv.", "post_quant_conv."},
};
static const rename_pair vae_resnet[] = {
    {"norm1.", "norm1."}, {"conv1.", "conv1."}, {"norm2.", "norm2."},
    {"conv2.", "conv2."}, {"nin_shortcut.", "conv_shortcut."},
};
static const rename_pair vae_attn[] = {
    {"norm.", "group_norm."}, {"q.", "to_q."}, {"k.", "to_k."}, {"v.", "to_v."}, {"proj_out.", "to_out.0."},
};
static const rename_pair openclip_top[] = {
    {"token_embedding.", "text_model.embeddings.token_embedding."},
    {"ln_final.", "text_model.final_layer_norm."},
};
static const rename_pair openclip_block[] = {
    {"ln_1.", "layer_norm1."},          {"ln_2.", "layer_norm2."},  {"attn.out_proj.", "self_attn.out_proj."},
    {"mlp.c_fc.", "mlp.fc1."},          {"mlp.c_proj.", "mlp.fc2."},
};

/* A SpatialTransformer's parameters keep their names in both layouts. */
static bool transformer_part(const char *s)
{
    const char *r;
    return starts(s, "transformer_blocks.", &r) || starts(s, "norm.", &r) || starts(s, "proj_in.", &r) ||
           starts(s, "proj_out.", &r);
}

#define PUT(...) (snprintf(out, size, __VA_ARGS__) < (int)size)

/* UNet: ldm name (without the prefix) -> diffusers name. */
static bool unet_to_diffusers(const sf_layout *l, const char *s, char *out, size_t size)
{
    const char *to, *r, *t;
    int64_t n, k;
    const int64_t per = l->layers + 1;
    if (rename_leaf(unet_top, COUNT(unet_top), true, s, &to, &t))
        return PUT("%s%s", to, t);
    if (starts(s, "input_blocks.", &r) && (n = take_index(r, &r)) >= 1 && (k = take_index(r, &r)) >= 0) {
        const int64_t i = (n - 1) / per, j = (n - 1) % per;
        if (i >= l->levels)
            return false;
        if (j < l->layers && k == 0 && rename_leaf(unet_resnet, COUNT(unet_resnet), true, r, &to, &t))
            return PUT("down_blocks.%lld.resnets.%lld.%s%s", (long long)i, (long long)j, to, t);
        if (j < l->layers && k == 1 && transformer_part(r))
            return PUT("down_blocks.%lld.attentions.%lld.%s", (long long)i, (long long)j, r);
        if (j == l->layers && k == 0 && i < l->levels - 1 && starts(r, "op.", &t) && leaf(t))
            return PUT("down_blocks.%lld.downsamplers.0.conv.%s", (long long)i, t);
        return false;
    }
    if (starts(s, "middle_block.", &r) && (k = take_index(r, &r)) >= 0) {
        if ((k == 0 || k == 2) && rename_leaf(unet_resnet, COUNT(unet_resnet), true, r, &to, &t))
            return PUT("mid_block.resnets.%lld.%s%s", (long long)(k / 2), to, t);
        if (k == 1 && transformer_part(r))
            return PUT("mid_block.attentions.0.%s", r);
        return false;
    }
    if (starts(s, "output_blocks.", &r) && (n = take_index(r, &r)) >= 0 && (k = take_index(r, &r)) >= 0) {
        const int64_t i = n / per, j = n % per;
        if (i >= l->levels)
            return false;
        if (k == 0 && rename_leaf(unet_resnet, COUNT(unet_resnet), true, r, &to, &t))
            return PUT("up_blocks.%lld.resnets.%lld.%s%s", (long long)i, (long long)j, to, t);
        if ((k == 1 || k == 2) && j == l->layers && i < l->levels - 1 && starts(r, "conv.", &t) && leaf(t))
            return PUT("up_blocks.%lld.upsamplers.0.conv.%s", (long long)i, t);
        if (k == 1 && transformer_part(r))
            return PUT("up_blocks.%lld.attentions.%lld.%s", (long long)i, (long long)j, r);
    }
    return false;
}

/* UNet: diffusers name -> ldm name (without the prefix). */
static bool unet_to_original(const sf_layout *l, const char *s, char *out, size_t size)
{
    const char *to, *r, *t;
    int64_t i, j;
    const int64_t per = l->layers + 1;
    if (rename_leaf(unet_top, COUNT(unet_top), false, s, &to, &t))
        return PUT("%s%s", to, t);
    if (starts(s, "down_blocks.", &r) && (i = take_index(r, &r)) >= 0) {
        if (starts(r, "resnets.", &r) && (j = take_index(r, &r)) >= 0 &&
            rename_leaf(unet_resnet, COUNT(unet_resnet), false, r, &to, &t))
            return PUT("input_blocks.%lld.0.%s%s", (long long)(1 + i * per + j), to, t);
        if (starts(r, "attentions.", &r) && (j = take_index(r, &r)) >= 0)
            return PUT("input_blocks.%lld.1.%s", (long long)(1 + i * per + j), r);
        if (starts(r, "downsamplers.0.conv.", &t) && leaf(t))
            return PUT("input_blocks.%lld.0.op.%s", (long long)(1 + i * per + l->layers), t);
        return false;
    }
    if (starts(s, "mid_block.", &r)) {
        if (starts(r, "resnets.", &r) && (j = take_index(r, &r)) >= 0 &&
            rename_leaf(unet_resnet, COUNT(unet_resnet), false, r, &to, &t))
            return PUT("middle_block.%lld.%s%s", (long long)(2 * j), to, t);
        if (starts(r, "attentions.0.", &r))
            return PUT("middle_block.1.%s", r);
        return false;
    }
    if (starts(s, "up_blocks.", &r) && (i = take_index(r, &r)) >= 0) {
        if (starts(r, "resnets.", &r) && (j = take_index(r, &r)) >= 0 &&
            rename_leaf(unet_resnet, COUNT(unet_resnet), false, r, &to, &t))
            return PUT("output_blocks.%lld.0.%s%s", (long long)(i * per + j), to, t);
        if (starts(r, "attentions.", &r) && (j = take_index(r, &r)) >= 0)
            return PUT("output_blocks.%lld.1.%s", (long long)(i * per + j), r);
        if (starts(r, "upsamplers.0.conv.", &t) && leaf(t))
            return PUT("output_blocks.%lld.%d.conv.%s", (long long)(i * per + l->layers),
                       i < MAX_LEVELS && (l->up_attn >> i) & 1u ? 2 : 1, t);
    }
    return false;
}

/* VAE, either direction: {encoder,decoder}.{down,up}.I.block.J,
 * .{down,up}sample, mid.block_K, mid.attn_1 <-> diffusers' blocks; the
 * decoder's levels count the other way round. */
static bool vae_rename(const sf_layout *l, bool to_diffusers, const char *s, char *out, size_t size)
{
    const char *to, *r, *t;
    int64_t i, j;
    if (rename_leaf(vae_top, COUNT(vae_top), to_diffusers, s, &to, &t))
        return PUT("%s%s", to, t);
    const char *coder = starts(s, "encoder.", &r) ? "encoder" : starts(s, "decoder.", &r) ? "decoder" : NULL;
    if (!coder)
        return false;
    const bool dec = coder[0] == 'd';
    const char *level = to_diffusers ? (dec ? "up." : "down.") : (dec ? "up_blocks." : "down_blocks.");
    const char *other = to_diffusers ? (dec ? "up_blocks" : "down_blocks") : (dec ? "up" : "down");
    if (starts(r, level, &r) && (i = take_index(r, &r)) >= 0) {
        if (i >= l->levels)
            return false;
        const long long io = (long long)(dec ? l->levels - 1 - i : i);
        const char *res = to_diffusers ? "block." : "resnets.";
        if (starts(r, res, &r) && (j = take_index(r, &r)) >= 0 &&
            rename_leaf(vae_resnet, COUNT(vae_resnet), to_diffusers, r, &to, &t))
            return PUT("%s.%s.%lld.%s.%lld.%s%s", coder, other, io, to_diffusers ? "resnets" : "block",
                       (long long)j, to, t);
        const char *smp = to_diffusers ? (dec ? "upsample.conv." : "downsample.conv.")
                                       : (dec ? "upsamplers.0.conv." : "downsamplers.0.conv.");
        const char *smp_to = to_diffusers ? (dec ? "upsamplers.0.conv." : "downsamplers.0.conv.")
                                          : (dec ? "upsample.conv." : "downsample.conv.");
        if (starts(r, smp, &t) && leaf(t))
            return PUT("%s.%s.%lld.%s%s", coder, other, io, smp_to, t);
        return false;
    }
    if (starts(r, to_diffusers ? "mid." : "mid_block.", &r)) {
        if (to_diffusers && starts(r, "block_", &r) && (j = take_index(r, &r)) >= 1 && j <= 2 &&
            rename_leaf(vae_resnet, COUNT(vae_resnet), true, r, &to, &t))
            return PUT("%s.mid_block.resnets.%lld.%s%s", coder, (long long)(j - 1), to, t);
        if (!to_diffusers && starts(r, "resnets.", &r) && (j = take_index(r, &r)) >= 0 && j <= 1 &&
            rename_leaf(vae_resnet, COUNT(vae_resnet), false, r, &to, &t))
            return PUT("%s.mid.block_%lld.%s%s", coder, (long long)(j + 1), to, t);
        if (starts(r, to_diffusers ? "attn_1." : "attentions.0.", &r) &&
            rename_leaf(vae_attn, COUNT(vae_attn), to_diffusers, r, &to, &t))
            return PUT("%s.%s%s%s", coder, to_diffusers ? "mid_block.attentions.0." : "mid.attn_1.", to, t);
    }
    return false;
}

/* CLIP (SD 1.x): the transformers names under the prefix, with or without
 * "text_model." (older files). */
static bool clip_to_original(const sf_layout *l, const char *s, char *out, size_t size)
{
    const char *r;
    if (!starts(s, "text_model.", &r))
        return false;
    return PUT("%s", l->text_model ? s : r);
}

/* OpenCLIP (SD 2.x): ln_1/attn/ln_2/mlp resblocks with a fused q,k,v
 * projection. *row0 and *rows receive a slice of it (rows 0: the whole
 * tensor). */
static bool openclip_rename(const sf_layout *l, bool to_diffusers, const char *s, char *out, size_t size,
                            int64_t *row0, int64_t *rows)
{
    const char *to, *r, *t;
    int64_t n;
    *row0 = *rows = 0;
    if (rename_leaf(openclip_top, COUNT(openclip_top), to_diffusers, s, &to, &t))
        return PUT("%s%s", to, t);
    const char *pos_o = "positional_embedding", *pos_d = "text_model.embeddings.position_embedding.weight";
    if (strcmp(s, to_diffusers ? pos_o : pos_d) == 0)
        return PUT("%s", to_diffusers ? pos_d : pos_o);
    if (!to_diffusers) {
        if (!starts(s, "text_model.encoder.layers.", &r) || (n = take_index(r, &r)) < 0)
            return false;
        static const char *const qkv[3] = {"self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj."};
        for (int i = 0; i < 3; i++)
            if (starts(r, qkv[i], &t) && leaf(t)) {
                *row0 = i * l->width;
                *rows = l->width;
                return PUT("transformer.resblocks.%lld.attn.in_proj_%s", (long long)n, t);
            }
        if (rename_leaf(openclip_block, COUNT(openclip_block), false, r, &to, &t))
            return PUT("transformer.resblocks.%lld.%s%s", (long long)n, to, t);
        return false;
    }
    if (!starts(s, "transformer.resblocks.", &r) || (n = take_index(r, &r)) < 0)
        return false;
    if (rename_leaf(openclip_block, COUNT(openclip_block), true, r, &to, &t))
        return PUT("text_model.encoder.layers.%lld.%s%s", (long long)n, to, t);
    return false;
}

/* dfx_weights_namer: how the file spells the diffusers name `name`. */
static bool spell(const void *ctx, const char *name, char *buf, size_t size)
{
    const sf_layout *l = ctx;
    char rest[NAME_MAX_LEN];
    int64_t row0 = 0, rows = 0;
    bool ok;
    switch (l->kind) {
    case SF_UNET:
        ok = unet_to_original(l, name, rest, sizeof rest);
        break;
    case SF_VAE:
        ok = vae_rename(l, false, name, rest, sizeof rest);
        break;
    case SF_CLIP:
        ok = clip_to_original(l, name, rest, sizeof rest);
        break;
    default:
        ok = openclip_rename(l, false, name, rest, sizeof rest, &row0, &rows);
        break;
    }
    if (!ok)
        return false;
    static const char *const prefixes[] = {UNET_PREFIX, VAE_PREFIX, CLIP_PREFIX, OPENCLIP_PREFIX};
    int n = rows ? snprintf(buf, size, "%s%s[%lld:%lld]", prefixes[l->kind], rest, (long long)row0,
                            (long long)(row0 + rows))
                 : snprintf(buf, size, "%s%s", prefixes[l->kind], rest);
    return n < (int)size;
}

/* ---- the config document ---------------------------------------------- */

typedef struct sbuf {
    char *s;
    size_t len, cap;
    bool oom;
} sbuf;

static void put(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        if (b->oom)
            return;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n >= 0 && b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? 2 * b->cap : 1024;
        while (n >= 0 && cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *grown = n < 0 ? NULL : realloc(b->s, cap);
        if (!grown) {
            b->oom = true;
            return;
        }
        b->s = grown;
        b->cap = cap;
    }
}

static void put_ints(sbuf *b, const char *key, const int64_t *v, int64_t n)
{
    put(b, ", \"%s\": [", key);
    for (int64_t i = 0; i < n; i++)
        put(b, "%s%lld", i ? ", " : "", (long long)v[i]);
    put(b, "]");
}

static void put_strings(sbuf *b, const char *key, const char *const *v, int64_t n)
{
    put(b, ", \"%s\": [", key);
    for (int64_t i = 0; i < n; i++)
        put(b, "%s\"%s\"", i ? ", " : "", v[i]);
    put(b, "]");
}

/* dim d of the tensor the model calls name (0 when absent). */
static int64_t dim_of(const dfx_weights *w, const char *name, int d)
{
    dfx_tensor v;
    if (dfx_weights_view(w, name, &v) || d >= v.ndim) {
        dfx_error_clear();
        return 0;
    }
    return v.shape[d];
}

static int ndim_of(const dfx_weights *w, const char *name)
{
    dfx_tensor v;
    if (dfx_weights_view(w, name, &v)) {
        dfx_error_clear();
        return 0;
    }
    return v.ndim;
}

/* How many of FMT % 0, 1, ... exist (FMT has one %lld). */
static int64_t count_of(const dfx_weights *w, const char *fmt)
{
    char name[NAME_MAX_LEN];
    int64_t n = 0;
    for (;; n++) {
        snprintf(name, sizeof name, fmt, (long long)n);
        if (!dfx_weights_has(w, name))
            return n;
    }
}

static dfx_status unet_config(const char *path, const dfx_weights *w, const sf_layout *l, const dfxp_ldm_yaml *y,
                              sbuf *b, dfx_prediction *prediction)
{
    char name[NAME_MAX_LEN];
    int64_t ch[MAX_LEVELS], heads[MAX_LEVELS];
    const char *down[MAX_LEVELS], *up[MAX_LEVELS];
    const int64_t levels = l->levels;
    int64_t context = 0, depth = 0;
    const char *attn = "mid_block.attentions.0";
    for (int64_t i = 0; i < levels; i++) {
        snprintf(name, sizeof name, "down_blocks.%lld.resnets.0.conv1.weight", (long long)i);
        ch[i] = dim_of(w, name, 0);
        down[i] = (l->down_attn >> i) & 1u ? "CrossAttnDownBlock2D" : "DownBlock2D";
        up[i] = (l->up_attn >> i) & 1u ? "CrossAttnUpBlock2D" : "UpBlock2D";
        if (!ch[i])
            return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '" UNET_PREFIX "input_blocks.%lld.0.in_layers.2."
                                                 "weight' is missing (the first resnet of level %lld)",
                                 path, (long long)(1 + i * (l->layers + 1)), (long long)i);
    }
    snprintf(name, sizeof name, "%s.transformer_blocks.0.attn2.to_k.weight", attn);
    context = dim_of(w, name, 1);
    snprintf(name, sizeof name, "%s.transformer_blocks.%%lld.norm1.weight", attn);
    depth = count_of(w, name);
    snprintf(name, sizeof name, "%s.proj_in.weight", attn);
    const bool linear = ndim_of(w, name) == 2;
    if (!context)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '" UNET_PREFIX "middle_block.1.transformer_blocks.0.attn2."
                                             "to_k.weight' is missing (the UNet's cross-attention)", path);
    /* SD 2.x: linear projections and OpenCLIP's 1024-wide states, heads of
     * 64 channels (ldm num_head_channels) and v-prediction by default, as
     * diffusers' from_single_file assumes; SD 1.x: 8 heads (num_heads) */
    const bool sd2 = linear || context == 1024;
    int64_t nh = y->num_heads, nhc = y->num_head_channels;
    if (nhc <= 0 && nh <= 0) {
        if (sd2)
            nhc = 64;
        else
            nh = 8;
    }
    for (int64_t i = 0; i < levels; i++) {
        heads[i] = nhc > 0 ? ch[i] / nhc : nh;
        if (nhc > 0 && (heads[i] < 1 || ch[i] % nhc))
            return dfx_error_set(DFX_ERR_FORMAT,
                                 "%s: level %lld has %lld channels, not a multiple of %lld per attention head%s",
                                 path, (long long)i, (long long)ch[i], (long long)nhc,
                                 y->num_head_channels > 0 ? "" : " (the SD 2.x default; give the model's ldm "
                                                                 "yaml with the config option)");
    }
    const bool v = *y->parameterization ? strcmp(y->parameterization, "v") == 0 : sd2;
    *prediction = v ? DFX_PREDICTION_V : DFX_PREDICTION_EPSILON;
    put(b, "{\"_class_name\": \"UNet2DConditionModel\", \"sample_size\": %d", v ? 96 : 64);
    put(b, ", \"in_channels\": %lld, \"out_channels\": %lld", (long long)dim_of(w, "conv_in.weight", 1),
        (long long)dim_of(w, "conv_out.weight", 0));
    put(b, ", \"conv_in_kernel\": %lld, \"conv_out_kernel\": %lld", (long long)dim_of(w, "conv_in.weight", 2),
        (long long)dim_of(w, "conv_out.weight", 2));
    put_strings(b, "down_block_types", down, levels);
    put_strings(b, "up_block_types", up, levels);
    put_ints(b, "block_out_channels", ch, levels);
    put(b, ", \"layers_per_block\": %lld", (long long)l->layers);
    put(b, ", \"cross_attention_dim\": %lld", (long long)(y->context_dim > 0 ? y->context_dim : context));
    if (nhc > 0)
        put_ints(b, "attention_head_dim", heads, levels);
    else
        put(b, ", \"attention_head_dim\": %lld", (long long)nh);
    put(b, ", \"use_linear_projection\": %s", (y->linear >= 0 ? y->linear : linear) ? "true" : "false");
    put(b, ", \"transformer_layers_per_block\": %lld",
        (long long)(y->transformer_depth > 0 ? y->transformer_depth : depth));
    put(b, ", \"upcast_attention\": %s}", sd2 ? "true" : "false");
    return DFX_OK;
}

static void vae_config(const dfx_weights *w, const sf_layout *l, const dfxp_ldm_yaml *y, sbuf *b)
{
    char name[NAME_MAX_LEN];
    int64_t ch[MAX_LEVELS];
    const char *down[MAX_LEVELS], *up[MAX_LEVELS];
    for (int64_t i = 0; i < l->levels; i++) {
        snprintf(name, sizeof name, "encoder.down_blocks.%lld.resnets.0.conv1.weight", (long long)i);
        ch[i] = dim_of(w, name, 0);
        down[i] = "DownEncoderBlock2D";
        up[i] = "UpDecoderBlock2D";
    }
    put(b, "{\"_class_name\": \"AutoencoderKL\", \"in_channels\": %lld, \"out_channels\": %lld",
        (long long)dim_of(w, "encoder.conv_in.weight", 1), (long long)dim_of(w, "decoder.conv_out.weight", 0));
    put_strings(b, "down_block_types", down, l->levels);
    put_strings(b, "up_block_types", up, l->levels);
    put_ints(b, "block_out_channels", ch, l->levels);
    put(b, ", \"layers_per_block\": %lld, \"latent_channels\": %lld, \"norm_num_groups\": 32",
        (long long)count_of(w, "encoder.down_blocks.0.resnets.%lld.conv1.weight"),
        (long long)dim_of(w, "decoder.conv_in.weight", 1));
    put(b, ", \"mid_block_add_attention\": %s",
        dfx_weights_has(w, "decoder.mid_block.attentions.0.to_q.weight") ? "true" : "false");
    put(b, ", \"scaling_factor\": %.9g}", isnan(y->scale_factor) ? 0.18215 : y->scale_factor);
}

/* CLIP text encoders use heads of 64 channels (ViT-L/14's 768 = 12 x 64,
 * OpenCLIP ViT-H/14's 1024 = 16 x 64); narrower ones, which only test
 * models have, heads of 8 (the tiny pipelines diffusers tests with). An
 * ldm yaml does not say: a different encoder needs its config.json. */
static void text_config(const dfx_weights *w, bool openclip, sbuf *b)
{
    const int64_t hidden = dim_of(w, "text_model.embeddings.token_embedding.weight", 1);
    const int64_t vocab = dim_of(w, "text_model.embeddings.token_embedding.weight", 0);
    const int64_t heads = hidden % 64 == 0 ? hidden / 64 : hidden % 8 == 0 ? hidden / 8 : 1;
    put(b, "{\"architectures\": [\"CLIPTextModel\"], \"model_type\": \"clip_text_model\"");
    put(b, ", \"vocab_size\": %lld, \"hidden_size\": %lld, \"num_attention_heads\": %lld", (long long)vocab,
        (long long)hidden, (long long)(heads > 0 ? heads : 1));
    put(b, ", \"intermediate_size\": %lld", (long long)dim_of(w, "text_model.encoder.layers.0.mlp.fc1.weight", 0));
    put(b, ", \"num_hidden_layers\": %lld", (long long)count_of(w, "text_model.encoder.layers.%lld.mlp.fc1.weight"));
    put(b, ", \"max_position_embeddings\": %lld",
        (long long)dim_of(w, "text_model.embeddings.position_embedding.weight", 0));
    /* the end token is the vocabulary's last (49407 of 49408): pooling at
     * its first position is what argmax pooling of the legacy configs finds */
    put(b, ", \"hidden_act\": \"%s\", \"layer_norm_eps\": 1e-05, \"eos_token_id\": %lld}",
        openclip ? "gelu" : "quick_gelu", (long long)(vocab - 1));
}

/* ---- opening ---------------------------------------------------------- */

/* Tensors a real file may hold under a component's prefix that no model
 * reads: transformers' position_ids buffer (SD 1.x files of 2022),
 * OpenCLIP's projection, logit scale and causal mask (SD 2.x), and the
 * autoencoder's training loss (LPIPS, discriminator) in full checkpoints. */
static bool optional_tensor(sf_kind kind, const char *rest)
{
    const char *r;
    switch (kind) {
    case SF_CLIP:
        return strcmp(rest, "text_model.embeddings.position_ids") == 0 || strcmp(rest, "embeddings.position_ids") == 0;
    case SF_OPENCLIP:
        return strcmp(rest, "text_projection") == 0 || strcmp(rest, "logit_scale") == 0 ||
               strcmp(rest, "attn_mask") == 0;
    case SF_VAE:
        return starts(rest, "loss.", &r);
    default:
        return false;
    }
}

/* The structure renaming needs, from the names alone. */
static dfx_status scan_layout(const dfx_weights *w, const char *path, sf_layout *l, const dfxp_ldm_yaml *y)
{
    static const char *const prefixes[] = {UNET_PREFIX, VAE_PREFIX, CLIP_PREFIX, OPENCLIP_PREFIX};
    const char *prefix = prefixes[l->kind];
    int64_t max_input = -1, first_op = -1, ops = 0, max_level = -1, max_block = -1;
    bool plain = false;
    for (int64_t i = 0; i < dfx_weights_count(w); i++) {
        const char *s = dfx_weights_name(w, i), *r, *t;
        int64_t n, k;
        if (!starts(s, prefix, &r))
            continue;
        if (l->kind == SF_UNET && starts(r, "input_blocks.", &r) && (n = take_index(r, &r)) >= 0) {
            max_input = n > max_input ? n : max_input;
            if ((k = take_index(r, &t)) == 0 && strcmp(t, "op.weight") == 0) {
                ops++;
                first_op = first_op < 0 || n < first_op ? n : first_op;
            }
        } else if (l->kind == SF_VAE && starts(r, "encoder.down.", &r) && (n = take_index(r, &r)) >= 0) {
            max_level = n > max_level ? n : max_level;
        } else if (l->kind == SF_CLIP && !starts(r, "text_model.", &t)) {
            plain = true;
        } else if (l->kind == SF_OPENCLIP && starts(r, "transformer.resblocks.", &r) &&
                   (n = take_index(r, &r)) >= 0) {
            max_block = n > max_block ? n : max_block;
        }
    }
    switch (l->kind) {
    case SF_UNET:
        if (max_input < 1)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: no " UNET_PREFIX "input_blocks: not a Stable Diffusion UNet",
                                 path);
        l->levels = ops + 1;
        l->layers = ops ? first_op - 1 : max_input;
        if (l->layers < 1)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '" UNET_PREFIX "input_blocks.%lld.0.op.weight' leaves "
                                                 "no resnet before the first downsampling", path, (long long)first_op);
        if (l->levels > MAX_LEVELS)
            return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: a UNet of %lld levels (dfx reads up to %d)", path,
                                 (long long)l->levels, MAX_LEVELS);
        /* which levels attend: any tensor of a SpatialTransformer there */
        for (int64_t i = 0; i < dfx_weights_count(w); i++) {
            const char *r, *t;
            int64_t n;
            if (!starts(dfx_weights_name(w, i), prefix, &r))
                continue;
            if (starts(r, "input_blocks.", &r) && (n = take_index(r, &r)) >= 1 && starts(r, "1.", &t) &&
                (n - 1) / (l->layers + 1) < l->levels)
                l->down_attn |= 1u << ((n - 1) / (l->layers + 1));
            else if (starts(r, "output_blocks.", &r) && (n = take_index(r, &r)) >= 0 && starts(r, "1.", &t) &&
                     !starts(t, "conv.", &t) && n / (l->layers + 1) < l->levels)
                l->up_attn |= 1u << (n / (l->layers + 1));
        }
        break;
    case SF_VAE:
        l->levels = max_level + 1;
        if (l->levels < 1 || l->levels > MAX_LEVELS)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: %s" VAE_PREFIX "encoder.down.N", path,
                                 l->levels < 1 ? "no " : "too many levels in ");
        break;
    case SF_CLIP:
        l->text_model = !plain;
        break;
    default: {
        dfx_tensor tok;
        char name[NAME_MAX_LEN];
        snprintf(name, sizeof name, "%stoken_embedding.weight", prefix);
        if (dfx_weights_view(w, name, &tok) || tok.ndim != 2)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s' is missing or not 2-D", path, name);
        l->width = tok.shape[1];
        /* FrozenOpenCLIPEmbedder's layer "penultimate" (SD 2.x) stops one
         * resblock before the end; diffusers' text encoder has one layer
         * fewer than the file. "last" runs them all. */
        l->last = strcmp(y->cond_layer, "last") == 0 ? -1 : max_block;
        if (max_block < 1 && l->last >= 0)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: %lld OpenCLIP resblocks: the penultimate layer needs two",
                                 path, (long long)(max_block + 1));
        break;
    }
    }
    return DFX_OK;
}

/* Aliases every tensor under the component's prefix to its diffusers name. */
static dfx_status alias_all(dfx_weights *w, const char *path, const sf_layout *l)
{
    static const char *const prefixes[] = {UNET_PREFIX, VAE_PREFIX, CLIP_PREFIX, OPENCLIP_PREFIX};
    const char *prefix = prefixes[l->kind];
    char name[NAME_MAX_LEN];
    int64_t found = 0;
    for (int64_t i = 0; i < dfx_weights_count(w); i++) {
        const char *s = dfx_weights_name(w, i), *r, *t;
        if (!starts(s, prefix, &r))
            continue;
        found++;
        if (optional_tensor(l->kind, r))
            continue;
        bool ok;
        dfx_status st;
        switch (l->kind) {
        case SF_UNET:
            ok = unet_to_diffusers(l, r, name, sizeof name);
            break;
        case SF_VAE:
            ok = vae_rename(l, true, r, name, sizeof name);
            break;
        case SF_CLIP:
            ok = starts(r, "embeddings.", &t) || starts(r, "encoder.layers.", &t) ||
                 starts(r, "final_layer_norm.", &t) || starts(r, "text_model.", &t);
            ok = ok && snprintf(name, sizeof name, "%s%s", l->text_model ? "" : "text_model.", r) < (int)sizeof name;
            break;
        default: {
            int64_t n;
            if (starts(r, "transformer.resblocks.", &t) && (n = take_index(t, &t)) >= 0 && n == l->last)
                continue;
            if (starts(r, "transformer.resblocks.", &t) && (n = take_index(t, &t)) >= 0 &&
                starts(t, "attn.in_proj_", &t) && leaf(t)) {
                static const char *const qkv[3] = {"q_proj", "k_proj", "v_proj"};
                for (int k = 0; k < 3; k++) {
                    snprintf(name, sizeof name, "text_model.encoder.layers.%lld.self_attn.%s.%s", (long long)n,
                             qkv[k], t);
                    if ((st = dfx_weights_alias(w, name, s, k * l->width, l->width)))
                        return st;
                }
                continue;
            }
            int64_t row0, rows;
            ok = openclip_rename(l, true, r, name, sizeof name, &row0, &rows);
            break;
        }
        }
        if (!ok)
            return dfx_error_set(DFX_ERR_FORMAT, "%s: tensor '%s' has no place in a Stable Diffusion %s", path, s,
                                 l->kind == SF_UNET ? "UNet" : l->kind == SF_VAE ? "autoencoder" : "text encoder");
        if ((st = dfx_weights_alias(w, name, s, 0, 0)))
            return st;
    }
    if (!found)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: no tensors under '%s'%s", path, prefix,
                             l->kind == SF_CLIP ? " (SD 1.x) nor '" OPENCLIP_PREFIX "' (SD 2.x): not a Stable "
                                                  "Diffusion checkpoint with a text encoder" : "");
    return DFX_OK;
}

/* STEM.yaml beside the checkpoint, or NULL. */
static char *stem_yaml(const char *path)
{
    const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
    size_t stem = dot && (!slash || dot > slash) ? (size_t)(dot - path) : strlen(path);
    char *y = malloc(stem + 6);
    if (!y)
        return NULL;
    memcpy(y, path, stem);
    memcpy(y + stem, ".yaml", 6);
    if (dfxp_is_file(y))
        return y;
    free(y);
    return NULL;
}

static bool has_prefix_tensor(const dfx_weights *w, const char *prefix)
{
    const char *r;
    for (int64_t i = 0; i < dfx_weights_count(w); i++)
        if (starts(dfx_weights_name(w, i), prefix, &r))
            return true;
    return false;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

dfx_status dfxp_single_file_open(dfxp_single_file *sf, const char *path, const char *config, const char *folder,
                                 bool random_weights)
{
    memset(sf, 0, sizeof *sf);
    sf_layout l = {0};
    if (strcmp(folder, "unet") == 0)
        l.kind = SF_UNET;
    else if (strcmp(folder, "vae") == 0)
        l.kind = SF_VAE;
    else if (strcmp(folder, "text_encoder") == 0)
        l.kind = SF_CLIP;
    else
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: a single-file checkpoint has no %s", path, folder);
    dfxp_ldm_yaml y;
    char *found_yaml = config ? NULL : stem_yaml(path);
    const char *yaml = config && !ends_with(config, ".json") ? config : found_yaml;
    const bool json = config && ends_with(config, ".json");
    sbuf b = {0};
    dfx_status st = DFX_OK;
    if (yaml)
        st = dfxp_ldm_yaml_read(yaml, &y);
    else
        dfxp_ldm_yaml_defaults(&y);
    if (st || (st = dfx_weights_open(&sf->weights, path)))
        goto fail;
    if (l.kind == SF_CLIP && !has_prefix_tensor(sf->weights, CLIP_PREFIX) &&
        has_prefix_tensor(sf->weights, OPENCLIP_PREFIX))
        l.kind = SF_OPENCLIP;
    if ((st = scan_layout(sf->weights, path, &l, &y)) || (st = alias_all(sf->weights, path, &l)))
        goto fail;
    if ((st = dfx_weights_set_namer(sf->weights, spell, &l, sizeof l)))
        goto fail;
    sf->prediction = DFX_PREDICTION_AUTO;
    if (l.kind == SF_UNET) {
        if ((st = unet_config(path, sf->weights, &l, &y, &b, &sf->prediction)))
            goto fail;
    } else if (l.kind == SF_VAE) {
        vae_config(sf->weights, &l, &y, &b);
    } else {
        text_config(sf->weights, l.kind == SF_OPENCLIP, &b);
    }
    if (b.oom) {
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        goto fail;
    }
    if (json) {
        sf->config_path = strdup(config);
        st = sf->config_path ? dfx_json_parse_file(config, &sf->config)
                             : dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    } else {
        size_t n = strlen(path) + (yaml ? strlen(yaml) : 0) + 64;
        if ((sf->config_path = malloc(n)))
            snprintf(sf->config_path, n, "%s (%s config inferred from its tensors%s%s)", path, folder,
                     yaml ? " and " : "", yaml ? yaml : "");
        st = sf->config_path ? dfx_json_parse(b.s, b.len, sf->config_path, &sf->config)
                             : dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    }
    if (st)
        goto fail;
    if (random_weights) {
        dfx_weights_close(sf->weights);
        sf->weights = NULL;
        if ((st = dfx_weights_open_random(&sf->weights, 0)))
            goto fail;
    }
    free(b.s);
    free(found_yaml);
    return DFX_OK;
fail:
    free(b.s);
    free(found_yaml);
    dfxp_single_file_close(sf);
    return st;
}

void dfxp_single_file_close(dfxp_single_file *sf)
{
    dfx_weights_close(sf->weights);
    dfx_json_destroy(sf->config);
    free(sf->config_path);
    memset(sf, 0, sizeof *sf);
}
