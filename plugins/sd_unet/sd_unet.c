/* diffusers' UNet2DConditionModel as Stable Diffusion 1.x and 2.x use it
 * (models/unets/unet_2d_condition.py and unet_2d_blocks.py, v0.27): resnet
 * levels with cross-attention transformers on the text states
 * (CrossAttnDownBlock2D / DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D /
 * CrossAttnUpBlock2D), loaded from a diffusers folder. Every config field
 * that changes the numbers is honoured; a field or value it cannot honour is
 * an error naming it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dfx/json.h"
#include "dfx/nn.h"
#include "dfx/plugin.h"
#include "plugins/common/checkpoint.h"
#include "plugins/common/config.h"
#include "plugins/sd_unet/transformer.h"

#define MAX_LEVELS 8
#define MAX_LAYERS 8
#define MAX_DEPTH 64
#define MAX_SKIPS (1 + MAX_LEVELS * (MAX_LAYERS + 1))

/* One resnet (+ transformer) of a down or up block. */
typedef struct unit {
    dfx_resblock res;
    sdu_transformer attn;
    bool has_attn;
} unit;

/* Down block i and the up block that mirrors it (up block L-1-i) work at
 * level i; diffusers' per-block lists are reversed for the up blocks, so
 * both read entry i. */
typedef struct level {
    unit down[MAX_LAYERS];
    unit up[MAX_LAYERS + 1];
    dfx_conv2d downsample;  /* w NULL on the last level */
    dfx_conv2d upsample;    /* w NULL on the first level */
} level;

typedef struct config {
    int64_t in_ch, out_ch, sample_h, sample_w;
    bool center_input;
    bool flip_sin_to_cos;
    double freq_shift;
    int64_t levels;
    int64_t ch[MAX_LEVELS];
    int64_t layers[MAX_LEVELS];   /* resnets of down block i; its up block has one more */
    int64_t heads[MAX_LEVELS];    /* attention heads at level i */
    int64_t depth[MAX_LEVELS];    /* transformer blocks per transformer at level i */
    bool down_attn[MAX_LEVELS], up_attn[MAX_LEVELS];  /* by level */
    int64_t context_dim;
    int64_t groups;
    double eps;
    bool scale_shift;
    double mid_scale;
    int64_t downsample_padding;
    int64_t temb_dim;
    bool temb_post_silu;   /* timestep_post_act "silu" */
    bool temb_act_silu;    /* time_embedding_act_fn "silu" */
    int64_t conv_in_k, conv_out_k;
} config;

/* How the 3x3 convolutions run (sd_unet's winograd option). */
enum { WINOGRAD_BALANCED, WINOGRAD_FAST, WINOGRAD_OFF };

/* Output channels above which 'balanced' runs 3x3 layers with im2col: the
 * memory of transformed kernels grows with cin x cout, the time they save
 * with cin x cout x pixels, and a UNet's widest layers work at its smallest
 * resolutions. SD 1.5 at 512x512 with CFG, 2 threads: F(4x4) everywhere
 * would keep 8.3 GB of kernels; F(4x4) below and F(2x2) above 1024 channels
 * 4.3 GB for an 11.3 s step; F(4x4) below and im2col above 0.9 GB for
 * 13.0 s; im2col only none for 14.7 s. The default favours memory. */
#define WIDE_CHANNELS 1024

typedef struct sd_unet {
    char *path;
    char *config;
    char *variant;
    bool random_weights;
    dfx_prediction prediction; /* a single file's; AUTO for a folder */

    config cfg;
    char *scheduler_config; /* the pipeline folder's scheduler config, if any */
    dfx_conv2d conv_in, conv_out;
    dfx_linear time_1, time_2;
    level lv[MAX_LEVELS];
    dfx_resblock mid_res[2];
    sdu_transformer mid_attn;
    dfx_group_norm norm_out;
    dfx_arena *arena;
    int winograd;
} sd_unet;

static const char *const winograd_names[] = {"balanced", "fast", "off", NULL};

static const dfx_option sd_unet_options[] = {
    DFX_OPTION_PATH("path", offsetof(sd_unet, path),
                    "a Stable Diffusion checkpoint: an original single file (.safetensors, .ckpt; SD 1.x or "
                    "2.x), a diffusers pipeline folder (model_index.json and unet/) or a unet folder "
                    "(config.json and diffusion_pytorch_model.safetensors)"),
    DFX_OPTION_PATH("config", offsetof(sd_unet, config),
                    "a single-file checkpoint's ldm yaml (default: STEM.yaml beside it, if any) or unet "
                    "config.json"),
    DFX_OPTION_STRING("variant", offsetof(sd_unet, variant), NULL,
                      "weights variant: reads diffusion_pytorch_model.VARIANT.safetensors (e.g. fp16)"),
    DFX_OPTION_BOOL("random_weights", offsetof(sd_unet, random_weights), false,
                    "seeded random weights instead of the checkpoint's (benchmarks): only config.json is read"),
    DFX_OPTION_ENUM("winograd", offsetof(sd_unet, winograd), WINOGRAD_BALANCED, winograd_names,
                    "3x3 convolutions: 'balanced' keeps Winograd F(4x4,3x3) kernels (4x the layer's weights) up "
                    "to 1024 output channels and runs wider layers with im2col (SD 1.5: 0.9 GB besides its 3.4 GB "
                    "of weights), 'fast' F(4x4,3x3) everywhere (8.3 GB), 'off' im2col only (none, slowest)"),
    DFX_OPTION_END,
};

/* ---- config.json ------------------------------------------------------ */

static bool is_null(const dfx_json *v)
{
    return v && dfx_json_type_of(v) == DFX_JSON_NULL;
}

/* Fields whose only supported value is null (or absence). */
static dfx_status must_be_null(const dfxp_config *r, const char *key, const char *what)
{
    const dfx_json *v = dfx_json_get(r->root, key);
    if (!v || is_null(v))
        return DFX_OK;
    char msg[256];
    snprintf(msg, sizeof msg, "%s is not supported by dfx's sd_unet (only null)", what);
    return dfxp_field_error(r, key, msg);
}

/* Fields where null is not the default and means something dfx does not do. */
static dfx_status not_null(const dfxp_config *r, const char *key, const char *msg)
{
    return is_null(dfx_json_get(r->root, key)) ? dfxp_field_error(r, key, msg) : DFX_OK;
}

/* An integer for every block, or a list with one per block. */
static dfx_status per_block(const dfxp_config *r, const char *key, int64_t def, int64_t lo, int64_t hi,
                            int64_t levels, int64_t *out)
{
    const dfx_json *v = dfx_json_get(r->root, key);
    if (v && dfx_json_type_of(v) == DFX_JSON_ARRAY) {
        int64_t n = levels;
        return dfxp_get_ints(r, key, lo, hi, levels, out, &n);
    }
    dfx_status st = not_null(r, key, "expected an integer or a list with one per block, not null");
    int64_t x = def;
    if (!st)
        st = dfxp_get_int(r, key, def, lo, hi, &x);
    for (int64_t i = 0; i < levels; i++)
        out[i] = x;
    return st;
}

/* A bool, or a list of them with one per block, that must be false. */
static dfx_status all_false(const dfxp_config *r, const char *key, const char *what)
{
    const dfx_json *v = dfx_json_get(r->root, key);
    bool bad = false;
    if (v && dfx_json_type_of(v) == DFX_JSON_ARRAY) {
        for (int64_t i = 0; i < dfx_json_size(v); i++) {
            const dfx_json *e = dfx_json_at(v, i);
            bad = bad || dfx_json_type_of(e) != DFX_JSON_BOOL || dfx_json_bool(e);
        }
    } else if (v && !is_null(v)) {
        bad = dfx_json_type_of(v) != DFX_JSON_BOOL || dfx_json_bool(v);
    }
    if (!bad)
        return DFX_OK;
    char msg[256];
    snprintf(msg, sizeof msg, "%s is not supported by dfx's sd_unet (only false)", what);
    return dfxp_field_error(r, key, msg);
}

/* An optional activation: null (none) or SiLU. */
static dfx_status optional_silu(const dfxp_config *r, const char *key, bool *out)
{
    static const char *const silu[] = {"silu", "swish", NULL};
    const dfx_json *v = dfx_json_get(r->root, key);
    *out = v && !is_null(v);
    return *out ? dfxp_get_choice(r, key, NULL, silu, NULL) : DFX_OK;
}

/* Block types, by level: `attn` marks the levels whose type is the
 * cross-attention one. Absent means diffusers' default (4 blocks). */
static dfx_status block_types(const dfxp_config *r, const char *key, const char *const *defaults, const char *plain,
                              const char *attn, int64_t levels, bool up, bool *out)
{
    const dfx_json *v = dfx_json_get(r->root, key);
    if (!v && levels != 4)
        return dfxp_field_error(r, key, "the default lists 4 blocks but block_out_channels has another length");
    if (v && (dfx_json_type_of(v) != DFX_JSON_ARRAY || dfx_json_size(v) != levels))
        return dfxp_field_error(r, key, "expected a list with one block type per entry of block_out_channels");
    for (int64_t b = 0; b < levels; b++) {
        const char *s = v ? dfx_json_string(dfx_json_at(v, b)) : defaults[b];
        bool is_attn = s && strcmp(s, attn) == 0;
        if (!is_attn && !(s && strcmp(s, plain) == 0)) {
            char msg[256];
            snprintf(msg, sizeof msg, "block type '%s' is not supported (dfx's sd_unet has %s and %s)",
                     s ? s : "?", plain, attn);
            return dfxp_field_error(r, key, msg);
        }
        out[up ? levels - 1 - b : b] = is_attn;
    }
    return DFX_OK;
}

/* The latent size: an integer or [height, width]. */
static dfx_status sample_size(const dfxp_config *r, config *c)
{
    const dfx_json *v = dfx_json_get(r->root, "sample_size");
    if (v && dfx_json_type_of(v) == DFX_JSON_ARRAY) {
        int64_t hw[2], n = 2;
        dfx_status st = dfxp_get_ints(r, "sample_size", 1, 1 << 16, 2, hw, &n);
        c->sample_h = hw[0];
        c->sample_w = hw[1];
        return st;
    }
    if (!v || is_null(v))
        return dfxp_field_error(r, "sample_size", "expected the default latent size (an integer)");
    dfx_status st = dfxp_get_int(r, "sample_size", 0, 1, 1 << 16, &c->sample_h);
    c->sample_w = c->sample_h;
    return st;
}

/* Reads a UNet2DConditionModel config.json (diffusers v0.27 fields and
 * defaults). */
static dfx_status read_config(const char *path, const dfx_json *doc, config *c)
{
    dfx_status st = DFX_OK;
    dfxp_config r = {path, doc, "sd_unet"};
    memset(c, 0, sizeof *c);
    const char *cls = dfx_json_string(dfx_json_get(doc, "_class_name"));
    if (dfx_json_type_of(doc) != DFX_JSON_OBJECT || (cls && strcmp(cls, "UNet2DConditionModel") != 0))
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: _class_name is '%s', not UNet2DConditionModel", path,
                             cls ? cls : "(not an object)");
    /* every field of UNet2DConditionModel's config, each honoured or refused;
     * resnet_skip_time_act, resnet_out_scale_factor, cross_attention_norm
     * and mid_block_only_cross_attention only reach the Simple* and
     * ResnetDownsample blocks, addition_embed_type_num_heads,
     * addition_time_embed_dim, projection_class_embeddings_input_dim and
     * class_embeddings_concat only the class and addition embeddings (which
     * must be null), dropout only training: none of them changes this
     * network's output */
    static const char *const known[] = {
        "_class_name", "_diffusers_version", "_name_or_path", "sample_size", "in_channels", "out_channels",
        "center_input_sample", "flip_sin_to_cos", "freq_shift", "down_block_types", "mid_block_type",
        "up_block_types", "only_cross_attention", "block_out_channels", "layers_per_block", "downsample_padding",
        "mid_block_scale_factor", "dropout", "act_fn", "norm_num_groups", "norm_eps", "cross_attention_dim",
        "transformer_layers_per_block", "reverse_transformer_layers_per_block", "encoder_hid_dim",
        "encoder_hid_dim_type", "attention_head_dim", "num_attention_heads", "dual_cross_attention",
        "use_linear_projection", "class_embed_type", "addition_embed_type", "addition_time_embed_dim",
        "num_class_embeds", "upcast_attention", "resnet_time_scale_shift", "resnet_skip_time_act",
        "resnet_out_scale_factor", "time_embedding_type", "time_embedding_dim", "time_embedding_act_fn",
        "timestep_post_act", "time_cond_proj_dim", "conv_in_kernel", "conv_out_kernel",
        "projection_class_embeddings_input_dim", "attention_type", "class_embeddings_concat",
        "mid_block_only_cross_attention", "cross_attention_norm", "addition_embed_type_num_heads", NULL};
    if ((st = dfxp_check_known(&r, known)))
        return st;
    static const char *const positional[] = {"positional", NULL};
    static const char *const silu[] = {"silu", "swish", NULL};
    static const char *const shifts[] = {"default", "scale_shift", NULL};
    static const char *const mid_types[] = {"UNetMidBlock2DCrossAttn", NULL};
    static const char *const attn_types[] = {"default", NULL};
    static const char *const down_default[] = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                               "CrossAttnDownBlock2D", "DownBlock2D"};
    static const char *const up_default[] = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                             "CrossAttnUpBlock2D"};
    static const int64_t ch_default[] = {320, 640, 1280, 1280};

    if (dfx_json_get(doc, "block_out_channels")) {
        st = dfxp_get_ints(&r, "block_out_channels", 1, 65536, MAX_LEVELS, c->ch, &c->levels);
    } else {
        c->levels = 4;
        memcpy(c->ch, ch_default, sizeof ch_default);
    }
    if (st)
        return st;
    const int64_t L = c->levels;
    int shift = 0;
    double dropout;
    bool upcast, linear_proj;
    int64_t context[MAX_LEVELS];
    /* attention_head_dim is diffusers' misnomer for the number of heads;
     * num_attention_heads, when given, says the same under its right name */
    const dfx_json *nah = dfx_json_get(doc, "num_attention_heads");
    const char *heads_key = nah && !is_null(nah) ? "num_attention_heads" : "attention_head_dim";
    if ((st = sample_size(&r, c)) ||
        (st = dfxp_get_int(&r, "in_channels", 4, 1, 4096, &c->in_ch)) ||
        (st = dfxp_get_int(&r, "out_channels", 4, 1, 4096, &c->out_ch)) ||
        (st = dfxp_get_bool(&r, "center_input_sample", false, &c->center_input)) ||
        (st = dfxp_get_bool(&r, "flip_sin_to_cos", true, &c->flip_sin_to_cos)) ||
        (st = dfxp_get_number(&r, "freq_shift", 0, &c->freq_shift)) ||
        (st = block_types(&r, "down_block_types", down_default, "DownBlock2D", "CrossAttnDownBlock2D", L, false,
                          c->down_attn)) ||
        (st = not_null(&r, "mid_block_type", "a UNet without a mid block is not supported by dfx's sd_unet")) ||
        (st = dfxp_get_choice(&r, "mid_block_type", "UNetMidBlock2DCrossAttn", mid_types, NULL)) ||
        (st = block_types(&r, "up_block_types", up_default, "UpBlock2D", "CrossAttnUpBlock2D", L, true,
                          c->up_attn)) ||
        (st = all_false(&r, "only_cross_attention", "cross-attention only transformer blocks")) ||
        (st = per_block(&r, "layers_per_block", 2, 1, MAX_LAYERS, L, c->layers)) ||
        (st = dfxp_get_int(&r, "downsample_padding", 1, 0, 3, &c->downsample_padding)) ||
        (st = dfxp_get_number(&r, "mid_block_scale_factor", 1, &c->mid_scale)) ||
        (st = dfxp_get_number(&r, "dropout", 0, &dropout)) ||
        (st = dfxp_get_choice(&r, "act_fn", "silu", silu, NULL)) ||
        (st = not_null(&r, "norm_num_groups", "a UNet without group norms is not supported by dfx's sd_unet")) ||
        (st = dfxp_get_int(&r, "norm_num_groups", 32, 1, 65536, &c->groups)) ||
        (st = dfxp_get_number(&r, "norm_eps", 1e-5, &c->eps)) ||
        (st = per_block(&r, "cross_attention_dim", 1280, 1, 65536, L, context)) ||
        (st = per_block(&r, "transformer_layers_per_block", 1, 1, MAX_DEPTH, L, c->depth)) ||
        (st = must_be_null(&r, "reverse_transformer_layers_per_block", "an asymmetric UNet")) ||
        (st = must_be_null(&r, "encoder_hid_dim", "a projection of the encoder states")) ||
        (st = must_be_null(&r, "encoder_hid_dim_type", "a projection of the encoder states")) ||
        (st = per_block(&r, heads_key, 8, 1, 65536, L, c->heads)) ||
        (st = all_false(&r, "dual_cross_attention", "dual cross-attention")) ||
        (st = dfxp_get_bool(&r, "use_linear_projection", false, &linear_proj)) ||
        (st = must_be_null(&r, "class_embed_type", "a class embedding")) ||
        (st = must_be_null(&r, "num_class_embeds", "a class embedding")) ||
        (st = must_be_null(&r, "addition_embed_type", "an addition embedding")) ||
        (st = must_be_null(&r, "time_cond_proj_dim", "a timestep condition")) ||
        (st = dfxp_get_bool(&r, "upcast_attention", false, &upcast)) ||
        (st = dfxp_get_choice(&r, "resnet_time_scale_shift", "default", shifts, &shift)) ||
        (st = dfxp_get_choice(&r, "time_embedding_type", "positional", positional, NULL)) ||
        (st = dfxp_get_int(&r, "time_embedding_dim", 4 * c->ch[0], 1, 1 << 20, &c->temb_dim)) ||
        (st = optional_silu(&r, "time_embedding_act_fn", &c->temb_act_silu)) ||
        (st = optional_silu(&r, "timestep_post_act", &c->temb_post_silu)) ||
        (st = dfxp_get_int(&r, "conv_in_kernel", 3, 1, 15, &c->conv_in_k)) ||
        (st = dfxp_get_int(&r, "conv_out_kernel", 3, 1, 15, &c->conv_out_k)) ||
        (st = dfxp_get_choice(&r, "attention_type", "default", attn_types, NULL)))
        return st;
    /* upcast_attention casts q and k to float32 before the scores: dfx
     * computes in float32 throughout. use_linear_projection only changes how
     * proj_in/proj_out are stored (see transformer.h). */
    (void)upcast;
    (void)linear_proj;
    c->scale_shift = shift == 1;
    if (c->conv_in_k % 2 == 0 || c->conv_out_k % 2 == 0)
        return dfxp_field_error(&r, c->conv_in_k % 2 == 0 ? "conv_in_kernel" : "conv_out_kernel",
                                "an even kernel is not supported by dfx's sd_unet (its padding is uneven)");
    /* one context tensor feeds every block */
    c->context_dim = context[0];
    for (int64_t i = 1; i < L; i++)
        if (context[i] != context[0])
            return dfxp_field_error(&r, "cross_attention_dim",
                                    "different widths per block are not supported by dfx's sd_unet");
    for (int64_t i = 0; i < L; i++) {
        if (c->ch[i] % c->groups)
            return dfxp_field_error(&r, "norm_num_groups", "does not divide every entry of block_out_channels");
        if (c->heads[i] > c->ch[i])
            return dfxp_field_error(&r, heads_key, "more heads than channels in a block");
    }
    return DFX_OK;
}

/* ---- loading ---------------------------------------------------------- */

static dfx_status load_transformer(sdu_transformer *t, dfx_weights *w, const char *prefix, const config *c,
                                   int64_t level)
{
    sdu_transformer_params p = {c->ch[level], c->heads[level], c->depth[level], c->groups, c->context_dim};
    return sdu_transformer_load(t, w, prefix, &p);
}

/* Sets a loaded 3x3 layer's algorithm as the winograd option says (right
 * after its load, so that the F(4x4, 3x3) kernels AUTO made are freed
 * before the next layer loads). */
static dfx_status tune_conv(const sd_unet *u, dfx_conv2d *c)
{
    if (u->winograd == WINOGRAD_OFF)
        return dfx_conv2d_set_algo(c, DFX_CONV2D_ALGO_IM2COL);
    if (u->winograd == WINOGRAD_BALANCED && c->k == 3 && c->stride == 1 && c->cout > WIDE_CHANNELS)
        return dfx_conv2d_set_algo(c, DFX_CONV2D_ALGO_IM2COL);
    return DFX_OK;
}

static dfx_status load_conv(const sd_unet *u, dfx_conv2d *c, dfx_weights *w, const char *prefix, int64_t cin,
                            int64_t cout, int64_t k, int64_t stride, int64_t pad)
{
    dfx_status st = dfx_conv2d_load(c, w, prefix, cin, cout, k, stride, pad, true);
    return st ? st : tune_conv(u, c);
}

static dfx_status load_resblock(const sd_unet *u, dfx_resblock *r, dfx_weights *w, const char *prefix,
                                const dfx_resblock_params *p)
{
    dfx_status st = dfx_resblock_load(r, w, prefix, p);
    if (!st && !(st = tune_conv(u, &r->conv1)))
        st = tune_conv(u, &r->conv2);
    return st;
}

static dfx_status load_network(sd_unet *u, dfx_weights *w)
{
    const config *c = &u->cfg;
    const int64_t L = c->levels;
    char name[256];
    dfx_status st;
    dfx_resblock_params rp = {0, 0, c->temb_dim, c->groups, c->eps, c->scale_shift, 1.0};

    if ((st = load_conv(u, &u->conv_in, w, "conv_in", c->in_ch, c->ch[0], c->conv_in_k, 1, c->conv_in_k / 2)) ||
        (st = dfx_linear_load(&u->time_1, w, "time_embedding.linear_1", c->ch[0], c->temb_dim, true)) ||
        (st = dfx_linear_load(&u->time_2, w, "time_embedding.linear_2", c->temb_dim, c->temb_dim, true)))
        return st;

    int64_t prev = c->ch[0];
    for (int64_t i = 0; i < L; i++) {
        level *lv = &u->lv[i];
        for (int64_t j = 0; j < c->layers[i]; j++) {
            rp.cin = j == 0 ? prev : c->ch[i];
            rp.cout = c->ch[i];
            snprintf(name, sizeof name, "down_blocks.%lld.resnets.%lld", (long long)i, (long long)j);
            if ((st = load_resblock(u, &lv->down[j].res, w, name, &rp)))
                return st;
            if (c->down_attn[i]) {
                snprintf(name, sizeof name, "down_blocks.%lld.attentions.%lld", (long long)i, (long long)j);
                if ((st = load_transformer(&lv->down[j].attn, w, name, c, i)))
                    return st;
                lv->down[j].has_attn = true;
            }
        }
        if (i < L - 1) {
            snprintf(name, sizeof name, "down_blocks.%lld.downsamplers.0.conv", (long long)i);
            if ((st = dfx_conv2d_load(&lv->downsample, w, name, c->ch[i], c->ch[i], 3, 2, c->downsample_padding,
                                      true)))
                return st;
            /* Downsample2D with padding 0 pads right and bottom by one */
            if (c->downsample_padding == 0)
                lv->downsample.pad_bottom = lv->downsample.pad_right = 1;
        }
        prev = c->ch[i];
    }

    const int64_t top = c->ch[L - 1];
    dfx_resblock_params mp = {top, top, c->temb_dim, c->groups, c->eps, c->scale_shift, c->mid_scale};
    if ((st = load_resblock(u, &u->mid_res[0], w, "mid_block.resnets.0", &mp)) ||
        (st = load_transformer(&u->mid_attn, w, "mid_block.attentions.0", c, L - 1)) ||
        (st = load_resblock(u, &u->mid_res[1], w, "mid_block.resnets.1", &mp)))
        return st;

    /* up block b works at level L-1-b: its first resnet takes the previous
     * block's output, its last the skip of the level below */
    int64_t out_prev = top;
    for (int64_t b = 0; b < L; b++) {
        const int64_t i = L - 1 - b;
        level *lv = &u->lv[i];
        const int64_t in_ch = c->ch[i > 0 ? i - 1 : 0];
        for (int64_t j = 0; j <= c->layers[i]; j++) {
            const int64_t skip = j == c->layers[i] ? in_ch : c->ch[i];
            rp.cin = (j == 0 ? out_prev : c->ch[i]) + skip;
            rp.cout = c->ch[i];
            snprintf(name, sizeof name, "up_blocks.%lld.resnets.%lld", (long long)b, (long long)j);
            if ((st = load_resblock(u, &lv->up[j].res, w, name, &rp)))
                return st;
            if (c->up_attn[i]) {
                snprintf(name, sizeof name, "up_blocks.%lld.attentions.%lld", (long long)b, (long long)j);
                if ((st = load_transformer(&lv->up[j].attn, w, name, c, i)))
                    return st;
                lv->up[j].has_attn = true;
            }
        }
        if (i > 0) {
            snprintf(name, sizeof name, "up_blocks.%lld.upsamplers.0.conv", (long long)b);
            if ((st = load_conv(u, &lv->upsample, w, name, c->ch[i], c->ch[i], 3, 1, 1)))
                return st;
        }
        out_prev = c->ch[i];
    }
    if ((st = dfx_group_norm_load(&u->norm_out, w, "conv_norm_out", c->groups, c->ch[0], c->eps)) ||
        (st = load_conv(u, &u->conv_out, w, "conv_out", c->ch[0], c->out_ch, c->conv_out_k, 1,
                        c->conv_out_k / 2)))
        return st;
    return dfx_weights_check_used(w, "");
}

static void free_unit(unit *x)
{
    dfx_resblock_free(&x->res);
    sdu_transformer_free(&x->attn);
}

static void free_network(sd_unet *u)
{
    dfx_conv2d_free(&u->conv_in);
    dfx_conv2d_free(&u->conv_out);
    dfx_linear_free(&u->time_1);
    dfx_linear_free(&u->time_2);
    for (int i = 0; i < MAX_LEVELS; i++) {
        for (int j = 0; j < MAX_LAYERS; j++)
            free_unit(&u->lv[i].down[j]);
        for (int j = 0; j <= MAX_LAYERS; j++)
            free_unit(&u->lv[i].up[j]);
        dfx_conv2d_free(&u->lv[i].downsample);
        dfx_conv2d_free(&u->lv[i].upsample);
    }
    dfx_resblock_free(&u->mid_res[0]);
    dfx_resblock_free(&u->mid_res[1]);
    sdu_transformer_free(&u->mid_attn);
    dfx_group_norm_free(&u->norm_out);
}

static dfx_status sd_unet_init(void *priv)
{
    static const dfxp_component_files files = {"unet", "diffusion_pytorch_model", true};
    sd_unet *u = priv;
    if (!u->path)
        return dfx_error_set(DFX_ERR_CONFIG, "sd_unet: no checkpoint: set model.path to a Stable Diffusion "
                                             "checkpoint (a diffusers folder or a .safetensors/.ckpt file), "
                                             "e.g. --set model.path=v1-5-pruned-emaonly.safetensors; dfx ships "
                                             "no weights");
    dfxp_checkpoint ck;
    dfx_status st = dfxp_checkpoint_open_config(&ck, u->path, u->config, &files, u->variant, u->random_weights);
    if (st)
        return st;
    u->prediction = ck.prediction;
    if (!(st = read_config(ck.config_path, ck.config, &u->cfg)) && (st = load_network(u, ck.weights)))
        free_network(u);
    if (!st && !(st = dfx_arena_create(&u->arena))) {
        u->scheduler_config = ck.scheduler_config;
        ck.scheduler_config = NULL;
    }
    dfxp_checkpoint_close(&ck);
    return st;
}

static void sd_unet_fini(void *priv)
{
    sd_unet *u = priv;
    free_network(u);
    dfx_arena_destroy(u->arena);
    free(u->scheduler_config);
}

static void sd_unet_info(void *priv, dfx_model_info *info)
{
    const sd_unet *u = priv;
    memset(info, 0, sizeof *info);
    info->prediction = u->prediction;
    info->input_scale = DFX_INPUT_SCALE_VP;
    info->sample_ndim = 3;
    info->sample_shape[0] = u->cfg.in_ch;
    info->sample_shape[1] = u->cfg.sample_h;
    info->sample_shape[2] = u->cfg.sample_w;
    info->any_size = true;
    info->context_dim = u->cfg.context_dim;
    info->scheduler_config = u->scheduler_config;
}

/* ---- forward ---------------------------------------------------------- */

/* dst [n, c1 + c2, hw] = channels of a [n, c1, hw] then b [n, c2, hw] */
static void concat(float *dst, const float *a, int64_t c1, const float *b, int64_t c2, int64_t n, int64_t hw)
{
    for (int64_t i = 0; i < n; i++) {
        memcpy(dst + i * (c1 + c2) * hw, a + i * c1 * hw, (size_t)(c1 * hw) * sizeof(float));
        memcpy(dst + i * (c1 + c2) * hw + c1 * hw, b + i * c2 * hw, (size_t)(c2 * hw) * sizeof(float));
    }
}

/* torch's nearest source index (aten UpSample.h nearest_idx, no scale
 * given): exact for equal and doubled sizes, else floor(dst * in/out) in
 * float */
static int64_t nearest_index(int64_t dst, int64_t in, int64_t out)
{
    if (out == in)
        return dst;
    if (out == 2 * in)
        return dst >> 1;
    const float scale = (float)in / (float)out;
    const int64_t src = (int64_t)floorf((float)dst * scale);
    return src < in - 1 ? src : in - 1;
}

/* y [planes, ho, wo] = F.interpolate(x [planes, h, w], size=(ho, wo),
 * mode="nearest"), as Upsample2D does with the skip connection's size when
 * the input is not a multiple of the UNet's total downsampling */
static void upsample_to(const float *x, int64_t planes, int64_t h, int64_t w, int64_t ho, int64_t wo, float *y)
{
    if (ho == 2 * h && wo == 2 * w) {
        dfx_nn_upsample_nearest2x(x, planes, 1, h, w, y);
        return;
    }
    for (int64_t p = 0; p < planes; p++) {
        for (int64_t oy = 0; oy < ho; oy++) {
            const float *src = x + (p * h + nearest_index(oy, h, ho)) * w;
            float *dst = y + (p * ho + oy) * wo;
            for (int64_t ox = 0; ox < wo; ox++)
                dst[ox] = src[nearest_index(ox, w, wo)];
        }
    }
}

static dfx_status run_unit(const unit *x, const float *in, const float *temb, int64_t n, int64_t h, int64_t w,
                           const float *context, int64_t tokens, float *out, dfx_arena *a)
{
    dfx_status st = dfx_resblock_forward(&x->res, in, temb, n, h, w, out, a);
    if (!st && x->has_attn)
        st = sdu_transformer_forward(&x->attn, out, n, h * w, context, tokens, a);
    return st;
}

/* The conditioning: [B, tokens, context_dim] float32 with B = x's batch. */
static dfx_status check_context(const sd_unet *u, const dfx_model_input *in, int64_t n, int64_t *tokens)
{
    const dfx_tensor *ctx = in->cond ? in->cond->context : NULL;
    const long long dim = (long long)u->cfg.context_dim;
    if (!ctx)
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "sd_unet: no text conditioning: the model needs cross-attention states [B, tokens, "
                             "%lld] (give the pipeline a conditioner such as clip_text)",
                             dim);
    if (ctx->dtype != DFX_DTYPE_F32 || ctx->ndim != 3 || ctx->shape[0] != n || ctx->shape[1] < 1 ||
        ctx->shape[2] != u->cfg.context_dim) {
        char shape[128];
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "sd_unet: the conditioning is %s %s but the model expects float32 [%lld, tokens, "
                             "%lld] (the cross_attention_dim of its config)",
                             dfx_dtype_name(ctx->dtype), dfx_tensor_shape_str(ctx, shape, sizeof shape), (long long)n,
                             dim);
    }
    *tokens = ctx->shape[1];
    return DFX_OK;
}

/* Floats of the largest feature map of a pass (per batch item): at level
 * i a concatenation of ch[i] and a neighbour's channels, an upsampled
 * ch[i] at the level above, the input and output at level 0. */
static int64_t work_size(const config *c, const int64_t *hs, const int64_t *ws)
{
    int64_t m = (c->in_ch > c->out_ch ? c->in_ch : c->out_ch) * hs[0] * ws[0];
    for (int64_t i = 0; i < c->levels; i++) {
        int64_t adj = c->ch[i];
        if (i + 1 < c->levels && c->ch[i + 1] > adj)
            adj = c->ch[i + 1];
        if (i > 0 && c->ch[i - 1] > adj)
            adj = c->ch[i - 1];
        const int64_t cat = (c->ch[i] + adj) * hs[i] * ws[i];
        const int64_t up = i > 0 ? c->ch[i] * hs[i - 1] * ws[i - 1] : 0;
        m = cat > m ? cat : m;
        m = up > m ? up : m;
    }
    return m;
}

static dfx_status sd_unet_predict(void *priv, const dfx_model_input *in, dfx_tensor *out)
{
    sd_unet *u = priv;
    const config *c = &u->cfg;
    const int64_t L = c->levels;
    const dfx_tensor *x = in->x;
    dfx_arena *a = u->arena;
    if (x->dtype != DFX_DTYPE_F32 || x->ndim != 4 || x->shape[1] != c->in_ch)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "sd_unet: input must be float32 [B, %lld, H, W]",
                             (long long)c->in_ch);
    const int64_t n = x->shape[0];
    if (out->dtype != DFX_DTYPE_F32 || out->ndim != 4 || out->shape[0] != n || out->shape[1] != c->out_ch ||
        out->shape[2] != x->shape[2] || out->shape[3] != x->shape[3])
        return dfx_error_set(DFX_ERR_INVALID_ARG, "sd_unet: output must be float32 [%lld, %lld, %lld, %lld]",
                             (long long)n, (long long)c->out_ch, (long long)x->shape[2], (long long)x->shape[3]);
    int64_t tokens = 0;
    dfx_status st = check_context(u, in, n, &tokens);
    if (st)
        return st;
    const float *context = in->cond->context->data;

    /* the size of every level: each downsampling convolution's output; on
     * the way up, Upsample2D interpolates to the skip connection's size
     * (diffusers' upsample_size, which equals 2x when the input is a
     * multiple of 2^(levels-1)) */
    int64_t hs[MAX_LEVELS], ws[MAX_LEVELS];
    hs[0] = x->shape[2];
    ws[0] = x->shape[3];
    for (int64_t i = 0; i + 1 < L; i++) {
        dfx_conv2d_out_size(&u->lv[i].downsample, hs[i], ws[i], &hs[i + 1], &ws[i + 1]);
        if (hs[i + 1] < 1 || ws[i + 1] < 1 || hs[0] < 1 || ws[0] < 1)
            return dfx_error_set(DFX_ERR_INVALID_ARG, "sd_unet: a %lldx%lld input is too small for %lld levels",
                                 (long long)x->shape[2], (long long)x->shape[3], (long long)L);
    }
    const size_t mark = dfx_arena_mark(a);

    /* time embedding: sinusoid -> linear -> SiLU -> linear (-> post_act)
     * (-> time_embed_act), then SiLU once for every resnet's time_emb_proj */
    float *tproj = dfx_arena_alloc(a, (size_t)(n * c->ch[0]));
    float *temb_h = tproj ? dfx_arena_alloc(a, (size_t)(n * c->temb_dim)) : NULL;
    float *temb = temb_h ? dfx_arena_alloc(a, (size_t)(n * c->temb_dim)) : NULL;
    if (!temb)
        goto oom;
    dfx_nn_timestep_embedding(in->t_model, n, c->ch[0], c->flip_sin_to_cos, c->freq_shift, 1.0, 10000.0, tproj);
    dfx_linear_forward(&u->time_1, tproj, n, temb_h);
    dfx_nn_silu(temb_h, n * c->temb_dim);
    dfx_linear_forward(&u->time_2, temb_h, n, temb);
    if (c->temb_post_silu)
        dfx_nn_silu(temb, n * c->temb_dim);
    if (c->temb_act_silu)
        dfx_nn_silu(temb, n * c->temb_dim);
    dfx_nn_silu(temb, n * c->temb_dim);

    const size_t work = (size_t)(n * work_size(c, hs, ws));
    float *buf0 = dfx_arena_alloc(a, work), *buf1 = buf0 ? dfx_arena_alloc(a, work) : NULL;
    float *cat = buf1 ? dfx_arena_alloc(a, work) : NULL;
    if (!cat)
        goto oom;
    /* the skip connections live for the whole pass */
    float *skips[MAX_SKIPS];
    int64_t skip_c[MAX_SKIPS];
    int nskips = 0;
#define PUSH_SKIP(ptr, ch, hw)                                                   \
    do {                                                                         \
        float *s_ = dfx_arena_alloc(a, (size_t)(n * (ch) * (hw)));               \
        if (!s_)                                                                 \
            goto oom;                                                            \
        memcpy(s_, (ptr), (size_t)(n * (ch) * (hw)) * sizeof(float));            \
        skips[nskips] = s_;                                                      \
        skip_c[nskips++] = (ch);                                                 \
    } while (0)

    const float *xin = x->data;
    if (c->center_input) {
        const int64_t total = n * c->in_ch * hs[0] * ws[0];
        for (int64_t i = 0; i < total; i++)
            cat[i] = 2.0f * xin[i] - 1.0f;
        xin = cat;
    }
    float *cur = buf0, *nxt = buf1, *t;
    if ((st = dfx_conv2d_forward(&u->conv_in, xin, n, hs[0], ws[0], cur, a)))
        goto done;
    PUSH_SKIP(cur, c->ch[0], hs[0] * ws[0]);
    for (int64_t i = 0; i < L; i++) {
        const int64_t h = hs[i], w = ws[i];
        for (int64_t j = 0; j < c->layers[i]; j++) {
            if ((st = run_unit(&u->lv[i].down[j], cur, temb, n, h, w, context, tokens, nxt, a)))
                goto done;
            t = cur, cur = nxt, nxt = t;
            PUSH_SKIP(cur, c->ch[i], h * w);
        }
        if (i < L - 1) {
            if ((st = dfx_conv2d_forward(&u->lv[i].downsample, cur, n, h, w, nxt, a)))
                goto done;
            t = cur, cur = nxt, nxt = t;
            PUSH_SKIP(cur, c->ch[i], hs[i + 1] * ws[i + 1]);
        }
    }
#undef PUSH_SKIP

    /* mid block: resnet, transformer, resnet */
    if ((st = dfx_resblock_forward(&u->mid_res[0], cur, temb, n, hs[L - 1], ws[L - 1], nxt, a)) ||
        (st = sdu_transformer_forward(&u->mid_attn, nxt, n, hs[L - 1] * ws[L - 1], context, tokens, a)) ||
        (st = dfx_resblock_forward(&u->mid_res[1], nxt, temb, n, hs[L - 1], ws[L - 1], cur, a)))
        goto done;

    int64_t cur_c = c->ch[L - 1];
    for (int64_t i = L - 1; i >= 0; i--) {
        const int64_t h = hs[i], w = ws[i];
        for (int64_t j = 0; j <= c->layers[i]; j++) {
            nskips--;
            concat(cat, cur, cur_c, skips[nskips], skip_c[nskips], n, h * w);
            if ((st = run_unit(&u->lv[i].up[j], cat, temb, n, h, w, context, tokens, cur, a)))
                goto done;
            cur_c = c->ch[i];
        }
        if (i > 0) {
            upsample_to(cur, n * cur_c, h, w, hs[i - 1], ws[i - 1], nxt);
            if ((st = dfx_conv2d_forward(&u->lv[i].upsample, nxt, n, hs[i - 1], ws[i - 1], cur, a)))
                goto done;
        }
    }
    dfx_group_norm_forward(&u->norm_out, cur, n, hs[0] * ws[0], cur, true);
    st = dfx_conv2d_forward(&u->conv_out, cur, n, hs[0], ws[0], out->data, a);
    goto done;
oom:
    st = DFX_ERR_NO_MEMORY;
done:
    dfx_arena_release(a, mark);
    return st;
}

static const dfx_model_ops sd_unet_ops = {
    .info = sd_unet_info,
    .predict = sd_unet_predict,
};

static const dfx_component sd_unet_component = {
    DFX_KIND_MODEL, "sd_unet", "Stable Diffusion's UNet2DConditionModel (SD 1.x / 2.x): single files or diffusers folders",
    sizeof(sd_unet), sd_unet_options, sd_unet_init, sd_unet_fini, &sd_unet_ops,
};

static const dfx_component *const components[] = {&sd_unet_component, NULL};

static const dfx_plugin plugin = {
    DFX_ABI_VERSION, sizeof(dfx_plugin), "sd_unet", "1.0", "MIT", components,
};

DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void)
{
    return &plugin;
}
