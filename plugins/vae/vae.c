/* diffusers' AutoencoderKL (the Stable Diffusion VAE) as a codec: decode
 * maps diffusion latents to images in [-1, 1], encode maps images to
 * latents (a posterior sample, or its mean), both scaled by the VAE's
 * scaling_factor (and shift_factor) as diffusers' pipelines do. Loaded from
 * a diffusers folder; every config field is honoured or refused by name. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dfx/json.h"
#include "dfx/nn.h"
#include "dfx/plugin.h"
#include "plugins/common/checkpoint.h"
#include "plugins/common/config.h"

#define MAX_LEVELS 8
#define MAX_LAYERS 8

/* diffusers builds every norm of the VAE with eps 1e-6 (resnet_eps) */
#define VAE_EPS 1e-6

typedef struct config {
    int64_t in_ch, out_ch, latent_ch;
    int64_t levels, layers, groups;
    int64_t ch[MAX_LEVELS];
    double scaling_factor, shift_factor;  /* shift_factor 0 when null */
    bool quant_conv, post_quant_conv, mid_attention;
} config;

/* UNetMidBlock2D without time embedding: resnet, single-head attention
 * over all channels, resnet */
typedef struct mid_block {
    dfx_resblock res[2];
    dfx_spatial_attention attn;
    bool has_attn;
} mid_block;

typedef struct vae {
    char *path;
    char *config;
    char *variant;
    double scaling_factor;  /* NAN: the config's */
    bool random_weights;

    config cfg;
    float scale, shift;     /* what decode divides by and adds, encode subtracts and multiplies by */
    /* Encoder + quant_conv */
    dfx_conv2d enc_in;
    dfx_resblock enc_res[MAX_LEVELS][MAX_LAYERS];
    dfx_conv2d enc_down[MAX_LEVELS];  /* w NULL on the last level */
    mid_block enc_mid;
    dfx_group_norm enc_norm;
    dfx_conv2d enc_out, quant;       /* quant.w NULL without quant_conv */
    /* post_quant_conv + Decoder; up block b works at level levels-1-b */
    dfx_conv2d post_quant, dec_in;
    mid_block dec_mid;
    dfx_resblock dec_res[MAX_LEVELS][MAX_LAYERS + 1];
    dfx_conv2d dec_up[MAX_LEVELS];    /* w NULL on the last up block */
    dfx_group_norm dec_norm;
    dfx_conv2d dec_out;
    dfx_arena *arena;
} vae;

static const dfx_option vae_options[] = {
    DFX_OPTION_PATH("path", offsetof(vae, path),
                    "an original single-file checkpoint (.safetensors, .ckpt), a diffusers pipeline folder "
                    "(model_index.json and vae/) or a vae folder (config.json and "
                    "diffusion_pytorch_model.safetensors); by default the model's path"),
    DFX_OPTION_PATH("config", offsetof(vae, config),
                    "a single-file checkpoint's ldm yaml (default: STEM.yaml beside it, if any) or vae config.json"),
    DFX_OPTION_STRING("variant", offsetof(vae, variant), NULL,
                      "weights variant: reads diffusion_pytorch_model.VARIANT.safetensors (e.g. fp16)"),
    DFX_OPTION_FLOAT_OR_NULL("scaling_factor", offsetof(vae, scaling_factor), 1e-6, 1e6,
                             "latents = scaling_factor * VAE latents; null: the config's (0.18215 when it has none)"),
    DFX_OPTION_BOOL("random_weights", offsetof(vae, random_weights), false,
                    "seeded random weights instead of the folder's (benchmarks): only config.json is read"),
    DFX_OPTION_END,
};

/* ---- config.json ------------------------------------------------------ */

/* A list of n block types that must all be `type`; absent is diffusers'
 * default, one such block. */
static dfx_status block_types(const dfxp_config *r, const char *key, const char *type, int64_t n)
{
    const dfx_json *v = dfx_json_get(r->root, key);
    char msg[256];
    if (!v || dfx_json_type_of(v) == DFX_JSON_NULL) {
        if (n == 1)
            return DFX_OK;
        snprintf(msg, sizeof msg, "the default lists one %s but block_out_channels has %lld entries", type,
                 (long long)n);
        return dfxp_field_error(r, key, msg);
    }
    if (dfx_json_type_of(v) != DFX_JSON_ARRAY || dfx_json_size(v) != n) {
        snprintf(msg, sizeof msg, "expected a list of %lld block types, one per entry of block_out_channels",
                 (long long)n);
        return dfxp_field_error(r, key, msg);
    }
    for (int64_t i = 0; i < n; i++) {
        const char *s = dfx_json_string(dfx_json_at(v, i));
        if (!s || strcmp(s, type) != 0) {
            snprintf(msg, sizeof msg, "block type '%s' is not supported (dfx's vae has %s only)", s ? s : "?",
                     type);
            return dfxp_field_error(r, key, msg);
        }
    }
    return DFX_OK;
}

/* A field that must be absent or null. */
static dfx_status refuse_non_null(const dfxp_config *r, const char *key, const char *msg)
{
    const dfx_json *v = dfx_json_get(r->root, key);
    return v && dfx_json_type_of(v) != DFX_JSON_NULL ? dfxp_field_error(r, key, msg) : DFX_OK;
}

/* Reads an AutoencoderKL config.json (diffusers' fields and defaults). */
static dfx_status read_config(const char *path, const dfx_json *doc, config *c)
{
    dfx_status st;
    dfxp_config r = {path, doc, "vae"};
    memset(c, 0, sizeof *c);
    const char *cls = dfx_json_string(dfx_json_get(doc, "_class_name"));
    if (!cls || strcmp(cls, "AutoencoderKL") != 0)
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: _class_name is '%s', not AutoencoderKL", path,
                             cls ? cls : "(missing)");
    static const char *const known[] = {
        "_class_name", "_diffusers_version", "_name_or_path", "_use_default_values", "in_channels",
        "out_channels", "down_block_types", "up_block_types", "block_out_channels", "layers_per_block", "act_fn",
        "latent_channels", "norm_num_groups", "sample_size", "scaling_factor", "shift_factor", "latents_mean",
        "latents_std", "force_upcast", "use_quant_conv", "use_post_quant_conv", "mid_block_add_attention", NULL};
    static const char *const silu[] = {"silu", "swish", NULL};
    bool upcast;
    if ((st = dfxp_check_known(&r, known)))
        return st;
    if (dfx_json_get(doc, "block_out_channels")) {
        if ((st = dfxp_get_ints(&r, "block_out_channels", 1, 65536, MAX_LEVELS, c->ch, &c->levels)))
            return st;
    } else {
        c->levels = 1;
        c->ch[0] = 64;
    }
    if ((st = block_types(&r, "down_block_types", "DownEncoderBlock2D", c->levels)) ||
        (st = block_types(&r, "up_block_types", "UpDecoderBlock2D", c->levels)) ||
        (st = dfxp_get_int(&r, "in_channels", 3, 1, 4096, &c->in_ch)) ||
        (st = dfxp_get_int(&r, "out_channels", 3, 1, 4096, &c->out_ch)) ||
        (st = dfxp_get_int(&r, "latent_channels", 4, 1, 4096, &c->latent_ch)) ||
        (st = dfxp_get_int(&r, "layers_per_block", 1, 1, MAX_LAYERS, &c->layers)) ||
        (st = dfxp_get_int(&r, "norm_num_groups", 32, 1, 65536, &c->groups)) ||
        (st = dfxp_get_choice(&r, "act_fn", "silu", silu, NULL)) ||
        (st = dfxp_get_number(&r, "scaling_factor", 0.18215, &c->scaling_factor)) ||
        (st = dfxp_get_number(&r, "shift_factor", 0, &c->shift_factor)) ||
        /* float32 compute throughout: upcasting changes nothing */
        (st = dfxp_get_bool(&r, "force_upcast", true, &upcast)) ||
        (st = dfxp_get_bool(&r, "use_quant_conv", true, &c->quant_conv)) ||
        (st = dfxp_get_bool(&r, "use_post_quant_conv", true, &c->post_quant_conv)) ||
        (st = dfxp_get_bool(&r, "mid_block_add_attention", true, &c->mid_attention)))
        return st;
    static const char *const norm_msg =
        "per-channel latent normalisation (latents_mean / latents_std) is not supported by dfx's vae";
    if ((st = refuse_non_null(&r, "latents_mean", norm_msg)) || (st = refuse_non_null(&r, "latents_std", norm_msg)))
        return st;
    if (!(c->scaling_factor > 0) || !isfinite(c->scaling_factor))
        return dfxp_field_error(&r, "scaling_factor", "expected a positive number");
    if (!isfinite(c->shift_factor))
        return dfxp_field_error(&r, "shift_factor", "expected a finite number");
    for (int64_t i = 0; i < c->levels; i++)
        if (c->ch[i] % c->groups)
            return dfxp_field_error(&r, "norm_num_groups", "does not divide every entry of block_out_channels");
    return DFX_OK;
}

/* ---- loading ---------------------------------------------------------- */

static dfx_status load_mid(mid_block *m, dfx_weights *w, const char *prefix, int64_t ch, const config *c)
{
    char name[256];
    dfx_resblock_params p = {ch, ch, 0, c->groups, VAE_EPS, false, 1.0};
    dfx_status st;
    for (int i = 0; i < 2; i++) {
        snprintf(name, sizeof name, "%s.resnets.%d", prefix, i);
        if ((st = dfx_resblock_load(&m->res[i], w, name, &p)))
            return st;
    }
    if (!c->mid_attention)
        return DFX_OK;
    /* attention_head_dim = channels: one head */
    snprintf(name, sizeof name, "%s.attentions.0", prefix);
    if ((st = dfx_spatial_attention_load(&m->attn, w, name, ch, 1, c->groups, VAE_EPS, 1.0)))
        return st;
    m->has_attn = true;
    return DFX_OK;
}

static dfx_status load_encoder(vae *v, dfx_weights *w)
{
    const config *c = &v->cfg;
    char name[256];
    dfx_status st;
    dfx_resblock_params p = {0, 0, 0, c->groups, VAE_EPS, false, 1.0};
    if ((st = dfx_conv2d_load(&v->enc_in, w, "encoder.conv_in", c->in_ch, c->ch[0], 3, 1, 1, true)))
        return st;
    int64_t prev = c->ch[0];
    for (int64_t i = 0; i < c->levels; i++) {
        for (int64_t j = 0; j < c->layers; j++) {
            p.cin = j == 0 ? prev : c->ch[i];
            p.cout = c->ch[i];
            snprintf(name, sizeof name, "encoder.down_blocks.%lld.resnets.%lld", (long long)i, (long long)j);
            if ((st = dfx_resblock_load(&v->enc_res[i][j], w, name, &p)))
                return st;
        }
        if (i < c->levels - 1) {
            snprintf(name, sizeof name, "encoder.down_blocks.%lld.downsamplers.0.conv", (long long)i);
            if ((st = dfx_conv2d_load(&v->enc_down[i], w, name, c->ch[i], c->ch[i], 3, 2, 0, true)))
                return st;
            /* Downsample2D with padding 0 pads (0, 1, 0, 1): right and bottom */
            v->enc_down[i].pad_bottom = v->enc_down[i].pad_right = 1;
        }
        prev = c->ch[i];
    }
    const int64_t top = c->ch[c->levels - 1];
    if ((st = load_mid(&v->enc_mid, w, "encoder.mid_block", top, c)) ||
        (st = dfx_group_norm_load(&v->enc_norm, w, "encoder.conv_norm_out", c->groups, top, VAE_EPS)) ||
        (st = dfx_conv2d_load(&v->enc_out, w, "encoder.conv_out", top, 2 * c->latent_ch, 3, 1, 1, true)))
        return st;
    if (c->quant_conv)
        st = dfx_conv2d_load(&v->quant, w, "quant_conv", 2 * c->latent_ch, 2 * c->latent_ch, 1, 1, 0, true);
    return st;
}

static dfx_status load_decoder(vae *v, dfx_weights *w)
{
    const config *c = &v->cfg;
    char name[256];
    dfx_status st;
    const int64_t top = c->ch[c->levels - 1];
    if (c->post_quant_conv &&
        (st = dfx_conv2d_load(&v->post_quant, w, "post_quant_conv", c->latent_ch, c->latent_ch, 1, 1, 0, true)))
        return st;
    if ((st = dfx_conv2d_load(&v->dec_in, w, "decoder.conv_in", c->latent_ch, top, 3, 1, 1, true)) ||
        (st = load_mid(&v->dec_mid, w, "decoder.mid_block", top, c)))
        return st;
    dfx_resblock_params p = {0, 0, 0, c->groups, VAE_EPS, false, 1.0};
    int64_t prev = top;
    for (int64_t b = 0; b < c->levels; b++) {
        const int64_t out = c->ch[c->levels - 1 - b];
        for (int64_t j = 0; j <= c->layers; j++) {
            p.cin = j == 0 ? prev : out;
            p.cout = out;
            snprintf(name, sizeof name, "decoder.up_blocks.%lld.resnets.%lld", (long long)b, (long long)j);
            if ((st = dfx_resblock_load(&v->dec_res[b][j], w, name, &p)))
                return st;
        }
        if (b < c->levels - 1) {
            snprintf(name, sizeof name, "decoder.up_blocks.%lld.upsamplers.0.conv", (long long)b);
            if ((st = dfx_conv2d_load(&v->dec_up[b], w, name, out, out, 3, 1, 1, true)))
                return st;
        }
        prev = out;
    }
    if ((st = dfx_group_norm_load(&v->dec_norm, w, "decoder.conv_norm_out", c->groups, c->ch[0], VAE_EPS)) ||
        (st = dfx_conv2d_load(&v->dec_out, w, "decoder.conv_out", c->ch[0], c->out_ch, 3, 1, 1, true)))
        return st;
    return DFX_OK;
}

static void free_mid(mid_block *m)
{
    dfx_resblock_free(&m->res[0]);
    dfx_resblock_free(&m->res[1]);
    dfx_spatial_attention_free(&m->attn);
}

static void free_network(vae *v)
{
    dfx_conv2d_free(&v->enc_in);
    for (int i = 0; i < MAX_LEVELS; i++) {
        for (int j = 0; j < MAX_LAYERS; j++)
            dfx_resblock_free(&v->enc_res[i][j]);
        for (int j = 0; j <= MAX_LAYERS; j++)
            dfx_resblock_free(&v->dec_res[i][j]);
        dfx_conv2d_free(&v->enc_down[i]);
        dfx_conv2d_free(&v->dec_up[i]);
    }
    free_mid(&v->enc_mid);
    free_mid(&v->dec_mid);
    dfx_group_norm_free(&v->enc_norm);
    dfx_group_norm_free(&v->dec_norm);
    dfx_conv2d_free(&v->enc_out);
    dfx_conv2d_free(&v->quant);
    dfx_conv2d_free(&v->post_quant);
    dfx_conv2d_free(&v->dec_in);
    dfx_conv2d_free(&v->dec_out);
}

static dfx_status vae_init(void *priv)
{
    static const dfxp_component_files files = {"vae", "diffusion_pytorch_model", true};
    vae *v = priv;
    if (!v->path)
        return dfx_error_set(DFX_ERR_CONFIG,
                             "vae: no checkpoint: set codec.path (or model.path) to a diffusers pipeline folder or "
                             "its vae/ folder");
    dfxp_checkpoint ck;
    dfx_status st = dfxp_checkpoint_open_config(&ck, v->path, v->config, &files, v->variant, v->random_weights);
    if (st)
        return st;
    if (!(st = read_config(ck.config_path, ck.config, &v->cfg)) &&
        ((st = load_encoder(v, ck.weights)) || (st = load_decoder(v, ck.weights)) ||
         (st = dfx_weights_check_used(ck.weights, ""))))
        free_network(v);
    dfxp_checkpoint_close(&ck);
    if (st)
        return st;
    if ((st = dfx_arena_create(&v->arena))) {
        free_network(v);
        return st;
    }
    v->scale = (float)(isnan(v->scaling_factor) ? v->cfg.scaling_factor : v->scaling_factor);
    v->shift = (float)v->cfg.shift_factor;
    return DFX_OK;
}

static void vae_fini(void *priv)
{
    vae *v = priv;
    free_network(v);
    dfx_arena_destroy(v->arena);
}

static void vae_info(void *priv, dfx_codec_info *info)
{
    const vae *v = priv;
    info->latent_channels = v->cfg.latent_ch;
    info->downscale = (int64_t)1 << (v->cfg.levels - 1);
    info->data_channels = v->cfg.out_ch;
}

/* ---- forward ---------------------------------------------------------- */

static void swap(float **a, float **b)
{
    float *t = *a;
    *a = *b;
    *b = t;
}

/* x = mid(x) for one item in *cur, using *nxt */
static dfx_status mid_forward(const mid_block *m, float *cur, float *nxt, int64_t h, int64_t w, dfx_arena *a)
{
    dfx_status st = dfx_resblock_forward(&m->res[0], cur, NULL, 1, h, w, nxt, a);
    if (!st && m->has_attn)
        st = dfx_spatial_attention_forward(&m->attn, nxt, 1, h, w, a);
    if (!st)
        st = dfx_resblock_forward(&m->res[1], nxt, NULL, 1, h, w, cur, a);
    return st;
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

/* The largest activation of one item's decode from h x w latents. */
static int64_t decode_work(const config *c, int64_t h, int64_t w)
{
    int64_t area = h * w, most = c->ch[c->levels - 1] * area;
    for (int64_t b = 0; b < c->levels; b++) {
        const int64_t ch = c->ch[c->levels - 1 - b];
        most = max64(most, ch * area);
        if (b < c->levels - 1) {
            area *= 4;
            most = max64(most, ch * area);
        }
    }
    return most;
}

/* out [out_ch, h*f, w*f] = Decoder(post_quant_conv(z)) for one item whose
 * latents are already unscaled in lat [latent_ch, h, w]. */
static dfx_status decode_one(const vae *v, float *lat, int64_t h, int64_t w, float *cur, float *nxt, float *out)
{
    const config *c = &v->cfg;
    dfx_arena *a = v->arena;
    dfx_status st;
    const float *z = lat;
    if (v->post_quant.w) {
        if ((st = dfx_conv2d_forward(&v->post_quant, lat, 1, h, w, nxt, a)))
            return st;
        z = nxt;
    }
    if ((st = dfx_conv2d_forward(&v->dec_in, z, 1, h, w, cur, a)) ||
        (st = mid_forward(&v->dec_mid, cur, nxt, h, w, a)))
        return st;
    for (int64_t b = 0; b < c->levels; b++) {
        for (int64_t j = 0; j <= c->layers; j++) {
            if ((st = dfx_resblock_forward(&v->dec_res[b][j], cur, NULL, 1, h, w, nxt, a)))
                return st;
            swap(&cur, &nxt);
        }
        if (b < c->levels - 1) {
            dfx_nn_upsample_nearest2x(cur, 1, c->ch[c->levels - 1 - b], h, w, nxt);
            h *= 2, w *= 2;
            if ((st = dfx_conv2d_forward(&v->dec_up[b], nxt, 1, h, w, cur, a)))
                return st;
        }
    }
    dfx_group_norm_forward(&v->dec_norm, cur, 1, h * w, cur, true);
    return dfx_conv2d_forward(&v->dec_out, cur, 1, h, w, out, a);
}

static dfx_status vae_decode(void *priv, const dfx_tensor *z, dfx_tensor *out)
{
    vae *v = priv;
    const config *c = &v->cfg;
    const int64_t f = (int64_t)1 << (c->levels - 1);
    char got[128], got_out[128];
    if (z->dtype != DFX_DTYPE_F32 || z->ndim != 4 || z->shape[1] != c->latent_ch || z->shape[0] < 1 ||
        z->shape[2] < 1 || z->shape[3] < 1)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "vae: decode takes float32 latents [B, %lld, h, w], got %s %s",
                             (long long)c->latent_ch, dfx_dtype_name(z->dtype),
                             dfx_tensor_shape_str(z, got, sizeof got));
    const int64_t n = z->shape[0], h = z->shape[2], w = z->shape[3];
    if (out->dtype != DFX_DTYPE_F32 || out->ndim != 4 || out->shape[0] != n || out->shape[1] != c->out_ch ||
        out->shape[2] != h * f || out->shape[3] != w * f)
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "vae: decode of latents %s writes float32 [%lld,%lld,%lld,%lld], got %s %s",
                             dfx_tensor_shape_str(z, got, sizeof got), (long long)n, (long long)c->out_ch,
                             (long long)(h * f), (long long)(w * f), dfx_dtype_name(out->dtype),
                             dfx_tensor_shape_str(out, got_out, sizeof got_out));
    dfx_arena *a = v->arena;
    const size_t mark = dfx_arena_mark(a);
    const int64_t lat_n = c->latent_ch * h * w, work = decode_work(c, h, w);
    float *lat = dfx_arena_alloc(a, (size_t)lat_n);
    float *cur = lat ? dfx_arena_alloc(a, (size_t)work) : NULL;
    float *nxt = cur ? dfx_arena_alloc(a, (size_t)work) : NULL;
    dfx_status st = nxt ? DFX_OK : DFX_ERR_NO_MEMORY;
    /* one item at a time: every layer works per item, so the result is the
     * batch's, in the memory of one image */
    for (int64_t i = 0; i < n && !st; i++) {
        const float *zi = (const float *)z->data + i * lat_n;
        /* latents / scaling_factor + shift_factor, as the pipelines unscale */
        for (int64_t k = 0; k < lat_n; k++)
            lat[k] = zi[k] / v->scale + v->shift;
        st = decode_one(v, lat, h, w, cur, nxt, (float *)out->data + i * c->out_ch * h * f * w * f);
    }
    dfx_arena_release(a, mark);
    return st;
}

/* The largest activation of one item's encode of an H x W image. */
static int64_t encode_work(const config *c, int64_t h, int64_t w)
{
    int64_t area = h * w, most = c->ch[0] * area;
    for (int64_t i = 0; i < c->levels; i++) {
        most = max64(most, max64(c->ch[i], i ? c->ch[i - 1] : c->ch[0]) * area);
        if (i < c->levels - 1)
            area /= 4;
    }
    return max64(most, 2 * c->latent_ch * area);
}

/* moments [2 * latent_ch, H/f, W/f] = quant_conv(Encoder(x)) for one item. */
static dfx_status encode_one(const vae *v, const float *x, int64_t h, int64_t w, float *cur, float *nxt,
                             float *moments)
{
    const config *c = &v->cfg;
    dfx_arena *a = v->arena;
    dfx_status st = dfx_conv2d_forward(&v->enc_in, x, 1, h, w, cur, a);
    for (int64_t i = 0; i < c->levels && !st; i++) {
        for (int64_t j = 0; j < c->layers && !st; j++) {
            st = dfx_resblock_forward(&v->enc_res[i][j], cur, NULL, 1, h, w, nxt, a);
            swap(&cur, &nxt);
        }
        if (!st && i < c->levels - 1) {
            st = dfx_conv2d_forward(&v->enc_down[i], cur, 1, h, w, nxt, a);
            swap(&cur, &nxt);
            h /= 2, w /= 2;
        }
    }
    if (st || (st = mid_forward(&v->enc_mid, cur, nxt, h, w, a)))
        return st;
    dfx_group_norm_forward(&v->enc_norm, cur, 1, h * w, cur, true);
    if (!v->quant.w)
        return dfx_conv2d_forward(&v->enc_out, cur, 1, h, w, moments, a);
    if ((st = dfx_conv2d_forward(&v->enc_out, cur, 1, h, w, nxt, a)))
        return st;
    return dfx_conv2d_forward(&v->quant, nxt, 1, h, w, moments, a);
}

/* "496 or 504" for 500 and f = 8; "8" for 3 */
static void nearest_sizes(int64_t x, int64_t f, char *buf, size_t size)
{
    const int64_t lo = x / f * f;
    if (lo == 0)
        snprintf(buf, size, "%lld", (long long)f);
    else
        snprintf(buf, size, "%lld or %lld", (long long)lo, (long long)(lo + f));
}

static dfx_status vae_encode(void *priv, const dfx_tensor *x, dfx_rng *rng, dfx_tensor *out)
{
    vae *v = priv;
    const config *c = &v->cfg;
    const int64_t f = (int64_t)1 << (c->levels - 1);
    char got[128], got_out[128], near[64];
    if (x->dtype != DFX_DTYPE_F32 || x->ndim != 4 || x->shape[1] != c->in_ch || x->shape[0] < 1 ||
        x->shape[2] < 1 || x->shape[3] < 1)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "vae: encode takes float32 images [B, %lld, H, W], got %s %s",
                             (long long)c->in_ch, dfx_dtype_name(x->dtype), dfx_tensor_shape_str(x, got, sizeof got));
    const int64_t n = x->shape[0], h = x->shape[2], w = x->shape[3];
    for (int d = 2; d < 4; d++) {
        if (x->shape[d] % f) {
            nearest_sizes(x->shape[d], f, near, sizeof near);
            return dfx_error_set(DFX_ERR_INVALID_ARG,
                                 "vae: image %s %lld is not a multiple of %lld, the VAE's downscale factor "
                                 "(nearest valid: %s)",
                                 d == 2 ? "height" : "width", (long long)x->shape[d], (long long)f, near);
        }
    }
    const int64_t lh = h / f, lw = w / f, lat_n = c->latent_ch * lh * lw;
    if (out->dtype != DFX_DTYPE_F32 || out->ndim != 4 || out->shape[0] != n || out->shape[1] != c->latent_ch ||
        out->shape[2] != lh || out->shape[3] != lw)
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "vae: encode of images %s writes float32 [%lld,%lld,%lld,%lld], got %s %s",
                             dfx_tensor_shape_str(x, got, sizeof got), (long long)n, (long long)c->latent_ch,
                             (long long)lh, (long long)lw, dfx_dtype_name(out->dtype),
                             dfx_tensor_shape_str(out, got_out, sizeof got_out));
    dfx_arena *a = v->arena;
    const size_t mark = dfx_arena_mark(a);
    const int64_t work = encode_work(c, h, w);
    float *moments = dfx_arena_alloc(a, (size_t)(2 * lat_n));
    float *std = moments ? dfx_arena_alloc(a, (size_t)(n * lat_n)) : NULL;
    float *cur = std ? dfx_arena_alloc(a, (size_t)work) : NULL;
    float *nxt = cur ? dfx_arena_alloc(a, (size_t)work) : NULL;
    float *eps = nxt && rng ? dfx_arena_alloc(a, (size_t)(n * lat_n)) : NULL;
    dfx_status st = nxt && (eps || !rng) ? DFX_OK : DFX_ERR_NO_MEMORY;
    float *mean = out->data;
    for (int64_t i = 0; i < n && !st; i++) {
        const float *xi = (const float *)x->data + i * c->in_ch * h * w;
        if ((st = encode_one(v, xi, h, w, cur, nxt, moments)))
            break;
        /* DiagonalGaussianDistribution: mean, logvar = chunk(moments, 2);
         * logvar clamped to [-30, 20]; std = exp(0.5 * logvar) */
        memcpy(mean + i * lat_n, moments, (size_t)lat_n * sizeof(float));
        for (int64_t k = 0; k < lat_n; k++) {
            float lv = moments[lat_n + k];
            lv = lv < -30.0f ? -30.0f : lv > 20.0f ? 20.0f : lv;
            std[i * lat_n + k] = expf(0.5f * lv);
        }
    }
    if (!st) {
        /* sample(): mean + std * randn(mean.shape), one draw over the batch */
        if (rng) {
            dfx_rng_normal(rng, eps, n * lat_n);
            for (int64_t k = 0; k < n * lat_n; k++)
                mean[k] = mean[k] + std[k] * eps[k];
        }
        /* (latents - shift_factor) * scaling_factor, as the pipelines scale */
        for (int64_t k = 0; k < n * lat_n; k++)
            mean[k] = (mean[k] - v->shift) * v->scale;
    }
    dfx_arena_release(a, mark);
    return st;
}

static const dfx_codec_ops vae_ops = {
    .info = vae_info,
    .decode = vae_decode,
    .encode = vae_encode,
};

static const dfx_component vae_component = {
    DFX_KIND_CODEC, "vae", "diffusers AutoencoderKL: Stable Diffusion latents <-> images", sizeof(vae),
    vae_options, vae_init, vae_fini, &vae_ops,
};

static const dfx_component *const components[] = {&vae_component, NULL};

static const dfx_plugin plugin = {
    DFX_ABI_VERSION, sizeof(dfx_plugin), "vae", "1.0", "MIT", components,
};

DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void)
{
    return &plugin;
}
