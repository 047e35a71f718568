/* diffusers' UNet2DModel (the DDPM / IDDPM architecture of
 * google/ddpm-cifar10-32, ddpm-celebahq-256 and learned-variance models),
 * loaded from a diffusers folder: config.json and
 * diffusion_pytorch_model.safetensors. Every config field that changes the
 * numbers is honoured; a field or value it cannot honour is an error naming
 * it. */
#include <errno.h>
#include <limits.h>
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

/* One resnet (+ attention) of a down or up block. */
typedef struct unit {
    dfx_resblock res;
    dfx_spatial_attention attn;
    bool has_attn;
} unit;

typedef struct level {
    unit down[MAX_LAYERS];
    unit up[MAX_LAYERS + 1];
    dfx_conv2d downsample;  /* w NULL on the last level */
    dfx_conv2d upsample;    /* w NULL on the first up block's last level */
    int64_t ch;
} level;

typedef struct config {
    int64_t in_ch, out_ch, sample_h, sample_w;
    bool center_input;
    bool flip_sin_to_cos;
    double freq_shift;
    int64_t levels, layers;
    int64_t ch[MAX_LEVELS];
    bool down_attn[MAX_LEVELS], up_attn[MAX_LEVELS];
    double mid_scale;
    int64_t downsample_padding;
    int64_t head_dim;      /* 0: one head per attention */
    int64_t groups, attn_groups;  /* attn_groups -1: as diffusers derives */
    double eps;
    bool scale_shift;
    bool add_attention;
} config;

typedef struct unet2d {
    char *path;
    char *config_file;
    char *variant;
    bool random_weights;
    int64_t seed;

    config cfg;
    char *scheduler_config; /* the pipeline folder's scheduler config, if any */
    int64_t temb_dim;
    dfx_conv2d conv_in, conv_out;
    dfx_linear time_1, time_2;
    level lv[MAX_LEVELS];
    dfx_resblock mid_res[2];
    dfx_spatial_attention mid_attn;
    dfx_group_norm norm_out;
    dfx_arena *arena;
    char *config_text;      /* config.json as read, for checkpoints written by training */
    size_t config_len;
} unet2d;

static const dfx_option unet2d_options[] = {
    DFX_OPTION_PATH("path", offsetof(unet2d, path),
                    "a diffusers pipeline folder (model_index.json and unet/) or a unet folder "
                    "(config.json and diffusion_pytorch_model.safetensors)"),
    DFX_OPTION_PATH("config", offsetof(unet2d, config_file),
                    "instead of path: a UNet2DModel config.json to build with seeded random weights "
                    "(training from scratch)"),
    DFX_OPTION_INT("seed", offsetof(unet2d, seed), 0, 0, 9223372036854775807.0,
                   "seed of the random weights a config builds"),
    DFX_OPTION_STRING("variant", offsetof(unet2d, variant), NULL,
                      "weights variant: reads diffusion_pytorch_model.VARIANT.safetensors (e.g. fp16)"),
    DFX_OPTION_BOOL("random_weights", offsetof(unet2d, random_weights), false,
                    "seeded random weights instead of the folder's (benchmarks): only config.json is read"),
    DFX_OPTION_END,
};

/* ---- config.json ------------------------------------------------------ */

/* Block types; absent means diffusers' default, attention on all but the
 * outermost of 4 levels ((Attn)DownBlock2D x 4 and the mirror image). */
static dfx_status block_types(const dfxp_config *r, const char *key, const char *plain, const char *attn,
                              int64_t n, bool *out)
{
    const dfx_json *v = dfx_json_get(r->root, key);
    if (!v) {
        if (n != 4)
            return dfxp_field_error(r, key, "the default lists 4 blocks but block_out_channels has another length");
        bool down = strcmp(plain, "DownBlock2D") == 0;
        for (int64_t i = 0; i < 4; i++)
            out[i] = down ? i > 0 : i < 3;
        return DFX_OK;
    }
    if (dfx_json_type_of(v) != DFX_JSON_ARRAY || dfx_json_size(v) != n)
        return dfxp_field_error(r, key, "expected a list with one block type per entry of block_out_channels");
    for (int64_t i = 0; i < n; i++) {
        const char *s = dfx_json_string(dfx_json_at(v, i));
        if (s && strcmp(s, plain) == 0) {
            out[i] = false;
        } else if (s && strcmp(s, attn) == 0) {
            out[i] = true;
        } else {
            char msg[256];
            snprintf(msg, sizeof msg, "block type '%s' is not supported (dfx's unet2d has %s and %s)",
                     s ? s : "?", plain, attn);
            return dfxp_field_error(r, key, msg);
        }
    }
    return DFX_OK;
}

/* Reads a UNet2DModel config.json (diffusers v0.27 fields and defaults). */
static dfx_status read_config(const char *path, const dfx_json *doc, config *c)
{
    dfx_status st = DFX_OK;
    dfxp_config r = {path, doc, "unet2d"};
    memset(c, 0, sizeof *c);
    const char *cls = dfx_json_string(dfx_json_get(doc, "_class_name"));
    if (dfx_json_type_of(doc) != DFX_JSON_OBJECT || !cls || strcmp(cls, "UNet2DModel") != 0) {
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: _class_name is '%s', not UNet2DModel", path,
                             cls ? cls : "(missing)");
    }
    /* every field of UNet2DModel's config, each either honoured or refused */
    static const char *const known[] = {
        "_class_name", "_diffusers_version", "_name_or_path", "sample_size", "in_channels", "out_channels",
        "center_input_sample", "time_embedding_type", "freq_shift", "flip_sin_to_cos", "down_block_types",
        "up_block_types", "block_out_channels", "layers_per_block", "mid_block_scale_factor",
        "downsample_padding", "downsample_type", "upsample_type", "dropout", "act_fn", "attention_head_dim",
        "norm_num_groups", "attn_norm_num_groups", "norm_eps", "resnet_time_scale_shift", "add_attention",
        "class_embed_type", "num_class_embeds", "num_train_timesteps", NULL};
    if ((st = dfxp_check_known(&r, known)))
        goto done;
    static const char *const positional[] = {"positional", NULL};
    static const char *const conv[] = {"conv", NULL};
    static const char *const silu[] = {"silu", "swish", NULL};
    static const char *const shifts[] = {"default", "scale_shift", NULL};
    int shift = 0;
    int64_t size = 0;
    const dfx_json *ss = dfx_json_get(doc, "sample_size");
    if (ss && dfx_json_type_of(ss) == DFX_JSON_ARRAY && dfx_json_size(ss) == 2 &&
        dfx_json_int(dfx_json_at(ss, 0), &c->sample_h) && dfx_json_int(dfx_json_at(ss, 1), &c->sample_w)) {
        size = c->sample_h;
    } else if ((st = dfxp_get_int(&r, "sample_size", 0, 0, 1 << 16, &size))) {
        goto done;
    } else {
        c->sample_h = c->sample_w = size;
    }
    const dfx_json *ch = dfx_json_get(doc, "block_out_channels");
    c->levels = dfx_json_size(ch);
    if (dfx_json_type_of(ch) != DFX_JSON_ARRAY || c->levels < 1 || c->levels > MAX_LEVELS) {
        st = dfxp_field_error(&r, "block_out_channels", "expected a list of 1 to 8 channel counts");
        goto done;
    }
    for (int64_t i = 0; i < c->levels; i++) {
        if (!dfx_json_int(dfx_json_at(ch, i), &c->ch[i]) || c->ch[i] < 1 || c->ch[i] > 65536) {
            st = dfxp_field_error(&r, "block_out_channels", "expected positive channel counts");
            goto done;
        }
    }
    int64_t head_dim;
    if ((st = dfxp_get_int(&r, "in_channels", 3, 1, 4096, &c->in_ch)) ||
        (st = dfxp_get_int(&r, "out_channels", 3, 1, 4096, &c->out_ch)) ||
        (st = dfxp_get_bool(&r, "center_input_sample", false, &c->center_input)) ||
        (st = dfxp_get_choice(&r, "time_embedding_type", "positional", positional, NULL)) ||
        (st = dfxp_get_number(&r, "freq_shift", 0, &c->freq_shift)) ||
        (st = dfxp_get_bool(&r, "flip_sin_to_cos", true, &c->flip_sin_to_cos)) ||
        (st = block_types(&r, "down_block_types", "DownBlock2D", "AttnDownBlock2D", c->levels, c->down_attn)) ||
        (st = block_types(&r, "up_block_types", "UpBlock2D", "AttnUpBlock2D", c->levels, c->up_attn)) ||
        (st = dfxp_get_int(&r, "layers_per_block", 2, 1, MAX_LAYERS, &c->layers)) ||
        (st = dfxp_get_number(&r, "mid_block_scale_factor", 1, &c->mid_scale)) ||
        (st = dfxp_get_int(&r, "downsample_padding", 1, 0, 1, &c->downsample_padding)) ||
        (st = dfxp_get_choice(&r, "downsample_type", "conv", conv, NULL)) ||
        (st = dfxp_get_choice(&r, "upsample_type", "conv", conv, NULL)) ||
        (st = dfxp_get_choice(&r, "act_fn", "silu", silu, NULL)) ||
        (st = dfxp_get_int(&r, "attention_head_dim", 8, 1, 65536, &head_dim)) ||
        (st = dfxp_get_int(&r, "norm_num_groups", 32, 1, 65536, &c->groups)) ||
        (st = dfxp_get_int(&r, "attn_norm_num_groups", -1, 1, 65536, &c->attn_groups)) ||
        (st = dfxp_get_number(&r, "norm_eps", 1e-5, &c->eps)) ||
        (st = dfxp_get_choice(&r, "resnet_time_scale_shift", "default", shifts, &shift)) ||
        (st = dfxp_get_bool(&r, "add_attention", true, &c->add_attention)))
        goto done;
    /* attention_head_dim: null means one head over all channels */
    const dfx_json *hd = dfx_json_get(doc, "attention_head_dim");
    c->head_dim = hd && dfx_json_type_of(hd) == DFX_JSON_NULL ? 0 : head_dim;
    c->scale_shift = shift == 1;
    const dfx_json *ce = dfx_json_get(doc, "class_embed_type"), *nc = dfx_json_get(doc, "num_class_embeds");
    if ((ce && dfx_json_type_of(ce) != DFX_JSON_NULL) || (nc && dfx_json_type_of(nc) != DFX_JSON_NULL)) {
        st = dfxp_field_error(&r, ce && dfx_json_type_of(ce) != DFX_JSON_NULL ? "class_embed_type" : "num_class_embeds",
                         "class-conditional UNet2DModel is not supported yet");
        goto done;
    }
    for (int64_t i = 0; i < c->levels; i++) {
        if (c->ch[i] % c->groups) {
            st = dfxp_field_error(&r, "norm_num_groups", "does not divide every entry of block_out_channels");
            goto done;
        }
        if (c->head_dim && c->ch[i] % c->head_dim) {
            st = dfxp_field_error(&r, "attention_head_dim", "does not divide every entry of block_out_channels");
            goto done;
        }
    }
done:
    return st;
}

/* ---- loading ---------------------------------------------------------- */

static dfx_status load_attention(dfx_spatial_attention *a, dfx_weights *w, const char *prefix, int64_t ch,
                                 int64_t groups, const config *c, double rescale)
{
    int64_t heads = c->head_dim ? ch / c->head_dim : 1;
    return dfx_spatial_attention_load(a, w, prefix, ch, heads, groups, c->eps, rescale);
}

static dfx_status load_network(unet2d *u, dfx_weights *w)
{
    const config *c = &u->cfg;
    char name[256];
    dfx_status st;
    u->temb_dim = 4 * c->ch[0];
    dfx_resblock_params rp = {0, 0, u->temb_dim, c->groups, c->eps, c->scale_shift, 1.0};

    if ((st = dfx_conv2d_load(&u->conv_in, w, "conv_in", c->in_ch, c->ch[0], 3, 1, 1, true)) ||
        (st = dfx_linear_load(&u->time_1, w, "time_embedding.linear_1", c->ch[0], u->temb_dim, true)) ||
        (st = dfx_linear_load(&u->time_2, w, "time_embedding.linear_2", u->temb_dim, u->temb_dim, true)))
        return st;

    /* down path */
    int64_t prev = c->ch[0];
    for (int64_t i = 0; i < c->levels; i++) {
        level *L = &u->lv[i];
        L->ch = c->ch[i];
        for (int64_t j = 0; j < c->layers; j++) {
            rp.cin = j == 0 ? prev : c->ch[i];
            rp.cout = c->ch[i];
            snprintf(name, sizeof name, "down_blocks.%lld.resnets.%lld", (long long)i, (long long)j);
            if ((st = dfx_resblock_load(&L->down[j].res, w, name, &rp)))
                return st;
            if (c->down_attn[i]) {
                snprintf(name, sizeof name, "down_blocks.%lld.attentions.%lld", (long long)i, (long long)j);
                if ((st = load_attention(&L->down[j].attn, w, name, c->ch[i], c->groups, c, 1.0)))
                    return st;
                L->down[j].has_attn = true;
            }
        }
        if (i < c->levels - 1) {
            snprintf(name, sizeof name, "down_blocks.%lld.downsamplers.0.conv", (long long)i);
            if ((st = dfx_conv2d_load(&L->downsample, w, name, c->ch[i], c->ch[i], 3, 2, c->downsample_padding,
                                      true)))
                return st;
            /* Downsample2D with padding 0 pads right and bottom by one */
            if (c->downsample_padding == 0)
                L->downsample.pad_bottom = L->downsample.pad_right = 1;
        }
        prev = c->ch[i];
    }

    /* middle */
    const int64_t top = c->ch[c->levels - 1];
    dfx_resblock_params mp = {top, top, u->temb_dim, c->groups, c->eps, c->scale_shift, c->mid_scale};
    if ((st = dfx_resblock_load(&u->mid_res[0], w, "mid_block.resnets.0", &mp)) ||
        (st = dfx_resblock_load(&u->mid_res[1], w, "mid_block.resnets.1", &mp)))
        return st;
    if (c->add_attention) {
        /* UNetMidBlock2D: attn_groups defaults to the resnet groups, or to
         * none (no norm) under scale_shift */
        int64_t g = c->attn_groups > 0 ? c->attn_groups : c->scale_shift ? 0 : c->groups;
        if ((st = load_attention(&u->mid_attn, w, "mid_block.attentions.0", top, g, c, c->mid_scale)))
            return st;
    }

    /* up path: up block b works at level (levels - 1 - b) */
    int64_t out_prev = top;
    for (int64_t b = 0; b < c->levels; b++) {
        int64_t i = c->levels - 1 - b;
        level *L = &u->lv[i];
        int64_t in_ch = c->ch[i > 0 ? i - 1 : 0];
        for (int64_t j = 0; j <= c->layers; j++) {
            int64_t skip = j == c->layers ? in_ch : c->ch[i];
            rp.cin = (j == 0 ? out_prev : c->ch[i]) + skip;
            rp.cout = c->ch[i];
            snprintf(name, sizeof name, "up_blocks.%lld.resnets.%lld", (long long)b, (long long)j);
            if ((st = dfx_resblock_load(&L->up[j].res, w, name, &rp)))
                return st;
            if (c->up_attn[b]) {
                snprintf(name, sizeof name, "up_blocks.%lld.attentions.%lld", (long long)b, (long long)j);
                if ((st = load_attention(&L->up[j].attn, w, name, c->ch[i], c->groups, c, 1.0)))
                    return st;
                L->up[j].has_attn = true;
            }
        }
        if (i > 0) {
            snprintf(name, sizeof name, "up_blocks.%lld.upsamplers.0.conv", (long long)b);
            if ((st = dfx_conv2d_load(&L->upsample, w, name, c->ch[i], c->ch[i], 3, 1, 1, true)))
                return st;
        }
        out_prev = c->ch[i];
    }
    if ((st = dfx_group_norm_load(&u->norm_out, w, "conv_norm_out", c->groups, c->ch[0], c->eps)) ||
        (st = dfx_conv2d_load(&u->conv_out, w, "conv_out", c->ch[0], c->out_ch, 3, 1, 1, true)))
        return st;
    return dfx_weights_check_used(w, "");
}

static void free_unit(unit *x)
{
    dfx_resblock_free(&x->res);
    if (x->has_attn)
        dfx_spatial_attention_free(&x->attn);
}

static void free_network(unet2d *u)
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
    if (u->cfg.add_attention)
        dfx_spatial_attention_free(&u->mid_attn);
    dfx_group_norm_free(&u->norm_out);
}

/* A network from a config.json alone, with seeded random weights. */
static dfx_status init_from_config(unet2d *u)
{
    dfx_json *doc = NULL;
    dfx_weights *w = NULL;
    dfx_status st = dfx_json_parse_file(u->config_file, &doc);
    if (!st && !(st = read_config(u->config_file, doc, &u->cfg)) &&
        !(st = dfx_weights_open_random(&w, (uint64_t)u->seed)) && (st = load_network(u, w)))
        free_network(u);
    if (!st)
        st = dfxp_read_text(u->config_file, &u->config_text, &u->config_len);
    dfx_weights_close(w);
    dfx_json_destroy(doc);
    return st;
}

static dfx_status unet2d_init(void *priv)
{
    static const dfxp_component_files files = {"unet", "diffusion_pytorch_model", false};
    unet2d *u = priv;
    if (!u->path && !u->config_file)
        return dfx_error_set(DFX_ERR_CONFIG, "unet2d: no checkpoint: give path (a diffusers folder), or "
                                             "config (a config.json) to start from random weights");
    if (u->path && u->config_file)
        return dfx_error_set(DFX_ERR_CONFIG, "unet2d: give path (a checkpoint) or config (random "
                                             "weights), not both");
    dfx_status st;
    if (u->config_file) {
        if (!(st = init_from_config(u)) && (st = dfx_arena_create(&u->arena)))
            free_network(u);
        return st;
    }
    dfxp_checkpoint ck;
    if ((st = dfxp_checkpoint_open(&ck, u->path, &files, u->variant, u->random_weights)))
        return st;
    if (!(st = read_config(ck.config_path, ck.config, &u->cfg)) && (st = load_network(u, ck.weights)))
        free_network(u);
    if (!st && (st = dfxp_read_text(ck.config_path, &u->config_text, &u->config_len)))
        free_network(u);
    if (!st && !(st = dfx_arena_create(&u->arena))) {
        u->scheduler_config = ck.scheduler_config;
        ck.scheduler_config = NULL;
    }
    dfxp_checkpoint_close(&ck);
    return st;
}

static void unet2d_fini(void *priv)
{
    unet2d *u = priv;
    free_network(u);
    dfx_arena_destroy(u->arena);
    free(u->scheduler_config);
    free(u->config_text);
}

static void unet2d_info(void *priv, dfx_model_info *info)
{
    const unet2d *u = priv;
    memset(info, 0, sizeof *info);
    info->prediction = DFX_PREDICTION_AUTO;
    info->input_scale = DFX_INPUT_SCALE_VP;
    info->learned_variance = u->cfg.out_ch == 2 * u->cfg.in_ch;
    if (u->cfg.sample_h > 0) {
        info->sample_ndim = 3;
        info->sample_shape[0] = u->cfg.in_ch;
        info->sample_shape[1] = u->cfg.sample_h;
        info->sample_shape[2] = u->cfg.sample_w;
    }
    info->scheduler_config = u->scheduler_config;
    info->checkpoint_folder = "unet";
    info->checkpoint_stem = "diffusion_pytorch_model";
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

static dfx_status run_unit(const unit *x, const float *in, const float *temb, int64_t n, int64_t h, int64_t w,
                           float *out, dfx_arena *a)
{
    dfx_status st = dfx_resblock_forward(&x->res, in, temb, n, h, w, out, a);
    if (!st && x->has_attn)
        st = dfx_spatial_attention_forward(&x->attn, out, n, h, w, a);
    return st;
}

static dfx_status unet2d_predict(void *priv, const dfx_model_input *in, dfx_tensor *out)
{
    unet2d *u = priv;
    const config *c = &u->cfg;
    const dfx_tensor *x = in->x;
    dfx_arena *a = u->arena;
    const int64_t n = x->shape[0];
    int64_t h = x->shape[2], w = x->shape[3];
    if (x->ndim != 4 || x->shape[1] != c->in_ch)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "unet2d: input must be [B, %lld, H, W]", (long long)c->in_ch);
    if (h % (1 << (c->levels - 1)) || w % (1 << (c->levels - 1)))
        return dfx_error_set(DFX_ERR_INVALID_ARG, "unet2d: height and width must be multiples of %d (got %lldx%lld)",
                             1 << (c->levels - 1), (long long)h, (long long)w);
    const size_t mark = dfx_arena_mark(a);
    dfx_status st = DFX_OK;

    /* time embedding: sinusoid -> linear -> SiLU -> linear, then SiLU once for
     * every resnet's time_emb_proj */
    float *tproj = dfx_arena_alloc(a, (size_t)(n * c->ch[0]));
    float *temb_h = dfx_arena_alloc(a, (size_t)(n * u->temb_dim));
    float *temb = dfx_arena_alloc(a, (size_t)(n * u->temb_dim));
    if (!tproj || !temb_h || !temb)
        goto oom;
    dfx_nn_timestep_embedding(in->t_model, n, c->ch[0], c->flip_sin_to_cos, c->freq_shift, 1.0, 10000.0, tproj);
    dfx_linear_forward(&u->time_1, tproj, n, temb_h);
    dfx_nn_silu(temb_h, n * u->temb_dim);
    dfx_linear_forward(&u->time_2, temb_h, n, temb);
    dfx_nn_silu(temb, n * u->temb_dim);

    /* the skip connections live for the whole pass */
    float *skips[1 + MAX_LEVELS * (MAX_LAYERS + 1)];
    int64_t skip_c[1 + MAX_LEVELS * (MAX_LAYERS + 1)];
    int nskips = 0;
    /* the largest working tensor: at level i (area h*w/4^i) a concatenation
     * of ch[i] with a neighbour's channels, or an upsampled ch[i] at 4x area */
    int64_t per_px = c->in_ch > c->ch[0] ? c->in_ch : c->ch[0];
    for (int64_t i = 0; i < c->levels; i++) {
        int64_t adj = c->ch[i];
        if (i + 1 < c->levels && c->ch[i + 1] > adj)
            adj = c->ch[i + 1];
        if (i > 0 && c->ch[i - 1] > adj)
            adj = c->ch[i - 1];
        /* channels per full-resolution pixel, rounded up */
        int64_t need = ((c->ch[i] + adj) + ((int64_t)1 << (2 * i)) - 1) >> (2 * i);
        int64_t up = i > 0 ? (c->ch[i] + ((int64_t)1 << (2 * (i - 1))) - 1) >> (2 * (i - 1)) : 0;
        per_px = need > per_px ? need : per_px;
        per_px = up > per_px ? up : per_px;
    }
    const size_t work = (size_t)(n * per_px * h * w);
    float *buf0 = dfx_arena_alloc(a, work), *buf1 = dfx_arena_alloc(a, work), *cat = dfx_arena_alloc(a, work);
    if (!buf0 || !buf1 || !cat)
        goto oom;

    const float *xin = x->data;
    if (c->center_input) {
        for (int64_t i = 0; i < n * c->in_ch * h * w; i++)
            cat[i] = 2.0f * xin[i] - 1.0f;
        xin = cat;
    }
    float *cur = buf0, *nxt = buf1, *t;
    if ((st = dfx_conv2d_forward(&u->conv_in, xin, n, h, w, cur, a)))
        goto done;
#define PUSH_SKIP(ptr, ch)                                                       \
    do {                                                                         \
        float *s_ = dfx_arena_alloc(a, (size_t)(n * (ch) * h * w));              \
        if (!s_)                                                                 \
            goto oom;                                                            \
        memcpy(s_, (ptr), (size_t)(n * (ch) * h * w) * sizeof(float));           \
        skips[nskips] = s_;                                                      \
        skip_c[nskips++] = (ch);                                                 \
    } while (0)
    PUSH_SKIP(cur, c->ch[0]);
    for (int64_t i = 0; i < c->levels; i++) {
        for (int64_t j = 0; j < c->layers; j++) {
            if ((st = run_unit(&u->lv[i].down[j], cur, temb, n, h, w, nxt, a)))
                goto done;
            t = cur, cur = nxt, nxt = t;
            PUSH_SKIP(cur, c->ch[i]);
        }
        if (i < c->levels - 1) {
            int64_t ho, wo;
            dfx_conv2d_out_size(&u->lv[i].downsample, h, w, &ho, &wo);
            if ((st = dfx_conv2d_forward(&u->lv[i].downsample, cur, n, h, w, nxt, a)))
                goto done;
            t = cur, cur = nxt, nxt = t;
            h = ho, w = wo;
            PUSH_SKIP(cur, c->ch[i]);
        }
    }
#undef PUSH_SKIP

    const int64_t top = c->ch[c->levels - 1];
    if ((st = dfx_resblock_forward(&u->mid_res[0], cur, temb, n, h, w, nxt, a)))
        goto done;
    t = cur, cur = nxt, nxt = t;
    if (c->add_attention && (st = dfx_spatial_attention_forward(&u->mid_attn, cur, n, h, w, a)))
        goto done;
    if ((st = dfx_resblock_forward(&u->mid_res[1], cur, temb, n, h, w, nxt, a)))
        goto done;
    t = cur, cur = nxt, nxt = t;

    int64_t cur_c = top;
    for (int64_t b = 0; b < c->levels; b++) {
        int64_t i = c->levels - 1 - b;
        for (int64_t j = 0; j <= c->layers; j++) {
            nskips--;
            concat(cat, cur, cur_c, skips[nskips], skip_c[nskips], n, h * w);
            if ((st = run_unit(&u->lv[i].up[j], cat, temb, n, h, w, cur, a)))
                goto done;
            cur_c = c->ch[i];
        }
        if (i > 0) {
            dfx_nn_upsample_nearest2x(cur, n, cur_c, h, w, nxt);
            h *= 2, w *= 2;
            if ((st = dfx_conv2d_forward(&u->lv[i].upsample, nxt, n, h, w, cur, a)))
                goto done;
        }
    }
    dfx_group_norm_forward(&u->norm_out, cur, n, h * w, cur, true);
    st = dfx_conv2d_forward(&u->conv_out, cur, n, h, w, out->data, a);
    goto done;
oom:
    st = DFX_ERR_NO_MEMORY;
done:
    dfx_arena_release(a, mark);
    return st;
}

/* ---- training --------------------------------------------------------- */

static dfx_status add_unit(dfx_params *p, unit *x, const char *block, int64_t b, int64_t j)
{
    char name[256];
    snprintf(name, sizeof name, "%s.%lld.resnets.%lld", block, (long long)b, (long long)j);
    dfx_status st = dfx_params_add_resblock(p, name, &x->res);
    if (!st && x->has_attn) {
        snprintf(name, sizeof name, "%s.%lld.attentions.%lld", block, (long long)b, (long long)j);
        st = dfx_params_add_spatial_attention(p, name, &x->attn);
    }
    return st;
}

/* every weight, under the names load_network reads (attention under the
 * current diffusers names) */
static dfx_status unet2d_train_params(void *priv, dfx_params *p)
{
    unet2d *u = priv;
    const config *c = &u->cfg;
    char name[256];
    dfx_status st;
    if ((st = dfx_params_add_conv2d(p, "conv_in", &u->conv_in)) ||
        (st = dfx_params_add_linear(p, "time_embedding.linear_1", &u->time_1)) ||
        (st = dfx_params_add_linear(p, "time_embedding.linear_2", &u->time_2)))
        return st;
    for (int64_t i = 0; i < c->levels; i++) {
        level *L = &u->lv[i];
        for (int64_t j = 0; j < c->layers; j++)
            if ((st = add_unit(p, &L->down[j], "down_blocks", i, j)))
                return st;
        if (L->downsample.w) {
            snprintf(name, sizeof name, "down_blocks.%lld.downsamplers.0.conv", (long long)i);
            if ((st = dfx_params_add_conv2d(p, name, &L->downsample)))
                return st;
        }
    }
    if ((st = dfx_params_add_resblock(p, "mid_block.resnets.0", &u->mid_res[0])) ||
        (st = dfx_params_add_resblock(p, "mid_block.resnets.1", &u->mid_res[1])) ||
        (c->add_attention &&
         (st = dfx_params_add_spatial_attention(p, "mid_block.attentions.0", &u->mid_attn))))
        return st;
    for (int64_t b = 0; b < c->levels; b++) {
        level *L = &u->lv[c->levels - 1 - b];
        for (int64_t j = 0; j <= c->layers; j++)
            if ((st = add_unit(p, &L->up[j], "up_blocks", b, j)))
                return st;
        if (L->upsample.w) {
            snprintf(name, sizeof name, "up_blocks.%lld.upsamplers.0.conv", (long long)b);
            if ((st = dfx_params_add_conv2d(p, name, &L->upsample)))
                return st;
        }
    }
    if ((st = dfx_params_add_group_norm(p, "conv_norm_out", &u->norm_out)))
        return st;
    return dfx_params_add_conv2d(p, "conv_out", &u->conv_out);
}

static dfx_var *train_unit(dfx_tape *t, const dfx_params *p, const unit *x, dfx_var *in,
                           dfx_var *temb)
{
    dfx_var *y = dfx_g_resblock(t, p, &x->res, in, temb);
    return x->has_attn ? dfx_g_spatial_attention(t, p, &x->attn, y) : y;
}

/* unet2d_predict on the tape */
static dfx_var *unet2d_train_forward(void *priv, dfx_tape *t, const dfx_params *p, dfx_var *x,
                                     const dfx_model_input *in)
{
    unet2d *u = priv;
    const config *c = &u->cfg;
    if (!x)
        return NULL;
    if (x->ndim != 4 || x->shape[1] != c->in_ch || x->shape[2] % (1 << (c->levels - 1)) ||
        x->shape[3] % (1 << (c->levels - 1)))
        return dfx_tape_fail(t, dfx_error_set(DFX_ERR_INVALID_ARG,
                                              "unet2d: input must be [B, %lld, H, W] with H and W "
                                              "multiples of %d",
                                              (long long)c->in_ch, 1 << (c->levels - 1)));
    if (c->center_input || c->scale_shift)
        return dfx_tape_fail(t, dfx_error_set(DFX_ERR_UNSUPPORTED,
                                              "unet2d: training a network with %s is not supported yet",
                                              c->center_input ? "center_input_sample"
                                                              : "resnet_time_scale_shift scale_shift"));
    const int64_t n = x->shape[0];
    const int64_t ts[2] = {n, c->ch[0]};
    dfx_var *tproj = dfx_tape_new(t, 2, ts, false);
    float *sin = tproj ? malloc((size_t)(n * c->ch[0]) * sizeof *sin) : NULL;
    if (!sin)
        return NULL;
    dfx_nn_timestep_embedding(in->t_model, n, c->ch[0], c->flip_sin_to_cos, c->freq_shift, 1.0,
                              10000.0, sin);
    memcpy(tproj->data, sin, (size_t)(n * c->ch[0]) * sizeof *sin);
    free(sin);
    dfx_var *temb = dfx_g_unary_op(t, DFX_G_SILU, dfx_g_linear_layer(t, p, &u->time_1, tproj));
    temb = dfx_g_unary_op(t, DFX_G_SILU, dfx_g_linear_layer(t, p, &u->time_2, temb));

    dfx_var *skips[1 + MAX_LEVELS * (MAX_LAYERS + 1)];
    int nskips = 0;
    dfx_var *cur = dfx_g_conv2d_layer(t, p, &u->conv_in, x);
    skips[nskips++] = cur;
    for (int64_t i = 0; i < c->levels; i++) {
        for (int64_t j = 0; j < c->layers; j++)
            skips[nskips++] = cur = train_unit(t, p, &u->lv[i].down[j], cur, temb);
        if (i < c->levels - 1)
            skips[nskips++] = cur = dfx_g_conv2d_layer(t, p, &u->lv[i].downsample, cur);
    }
    cur = dfx_g_resblock(t, p, &u->mid_res[0], cur, temb);
    if (c->add_attention)
        cur = dfx_g_spatial_attention(t, p, &u->mid_attn, cur);
    cur = dfx_g_resblock(t, p, &u->mid_res[1], cur, temb);
    for (int64_t b = 0; b < c->levels; b++) {
        const int64_t i = c->levels - 1 - b;
        for (int64_t j = 0; j <= c->layers; j++)
            cur = train_unit(t, p, &u->lv[i].up[j], dfx_g_concat1(t, cur, skips[--nskips]), temb);
        if (i > 0)
            cur = dfx_g_conv2d_layer(t, p, &u->lv[i].upsample, dfx_g_upsample2x(t, cur));
    }
    cur = dfx_g_unary_op(t, DFX_G_SILU, dfx_g_group_norm_layer(t, p, &u->norm_out, cur));
    return dfx_g_conv2d_layer(t, p, &u->conv_out, cur);
}

static dfx_status refresh_conv(dfx_conv2d *c)
{
    if (!c->w || !c->wino_w)
        return DFX_OK;
    /* the transformed kernels follow the new weights */
    const dfx_conv2d_algo algo = c->algo;
    dfx_status st = dfx_conv2d_set_algo(c, DFX_CONV2D_ALGO_IM2COL);
    return st ? st : dfx_conv2d_set_algo(c, algo);
}

static dfx_status refresh_resblock(dfx_resblock *r)
{
    dfx_status st = refresh_conv(&r->conv1);
    if (!st)
        st = refresh_conv(&r->conv2);
    return st ? st : refresh_conv(&r->shortcut);
}

static dfx_status unet2d_params_changed(void *priv)
{
    unet2d *u = priv;
    dfx_status st = refresh_conv(&u->conv_in);
    for (int i = 0; !st && i < MAX_LEVELS; i++) {
        level *L = &u->lv[i];
        for (int j = 0; !st && j < MAX_LAYERS; j++)
            st = refresh_resblock(&L->down[j].res);
        for (int j = 0; !st && j <= MAX_LAYERS; j++)
            st = refresh_resblock(&L->up[j].res);
        if (!st)
            st = refresh_conv(&L->downsample);
        if (!st)
            st = refresh_conv(&L->upsample);
    }
    if (!st)
        st = refresh_resblock(&u->mid_res[0]);
    if (!st)
        st = refresh_resblock(&u->mid_res[1]);
    return st ? st : refresh_conv(&u->conv_out);
}

static dfx_status unet2d_save_config(void *priv, const char *dir)
{
    const unet2d *u = priv;
    return dfxp_write_config(dir, u->config_text, u->config_len);
}

static const dfx_model_ops unet2d_ops = {
    .info = unet2d_info,
    .predict = unet2d_predict,
    .train_params = unet2d_train_params,
    .train_forward = unet2d_train_forward,
    .params_changed = unet2d_params_changed,
    .save_config = unet2d_save_config,
};

static const dfx_component unet2d_component = {
    DFX_KIND_MODEL, "unet2d", "diffusers UNet2DModel (DDPM, IDDPM; ddpm-cifar10, ddpm-celebahq)", sizeof(unet2d),
    unet2d_options, unet2d_init, unet2d_fini, &unet2d_ops,
};

static const dfx_component *const components[] = {&unet2d_component, NULL};

static const dfx_plugin plugin = {
    DFX_ABI_VERSION, sizeof(dfx_plugin), "unet2d", "1.0", "MIT", components,
};

DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void)
{
    return &plugin;
}
