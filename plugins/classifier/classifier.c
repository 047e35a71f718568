/* A small CNN image classifier whose penultimate features stand in for
 * Inception-v3's in FID and the Inception Score of small-image models, as
 * MNIST-scale papers evaluate: conv_in, per level a ResnetBlock2D and a 3x3
 * stride-2 convolution, group norm, SiLU, global average pooling, linear +
 * SiLU (the features), a linear head (the logits). predict() runs the
 * training forward on a float32 tape without recording: one network. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dfx/grad.h"
#include "dfx/json.h"
#include "dfx/nn.h"
#include "dfx/plugin.h"
#include "plugins/common/checkpoint.h"
#include "plugins/common/config.h"

#define MAX_LEVELS 6

typedef struct config {
    int64_t in_ch, sample_h, sample_w, classes, feature_dim, groups, levels;
    int64_t ch[MAX_LEVELS];
    double eps;
} config;

typedef struct level {
    dfx_resblock res;
    dfx_conv2d downsample;   /* w NULL on the last level */
} level;

typedef struct classifier {
    char *path;
    char *config_file;
    int64_t seed;

    config cfg;
    dfx_conv2d conv_in;
    level lv[MAX_LEVELS];
    dfx_group_norm norm_out;
    dfx_linear feature, head;
    dfx_tape *tape;          /* predict()'s, float32, not recording */
    char *config_text;       /* config.json as read, for checkpoints written by training */
    size_t config_len;
} classifier;

static const dfx_option classifier_options[] = {
    DFX_OPTION_PATH("path", offsetof(classifier, path),
                    "a trained classifier: the folder `dfx train` writes (with classifier/) or its "
                    "classifier/ folder (config.json and model.safetensors)"),
    DFX_OPTION_PATH("config", offsetof(classifier, config_file),
                    "instead of path: a DfxClassifier config.json to build with seeded random weights "
                    "(training from scratch)"),
    DFX_OPTION_INT("seed", offsetof(classifier, seed), 0, 0, 9223372036854775807.0,
                   "seed of the random weights a config builds"),
    DFX_OPTION_END,
};

/* ---- config.json ------------------------------------------------------ */

static dfx_status missing(const dfxp_config *r, const char *key, const char *what)
{
    return dfx_error_set(DFX_ERR_FORMAT, "%s: field '%s' is missing (%s)", r->path, key, what);
}

/* Reads a DfxClassifier config.json: every field but norm_eps required. */
static dfx_status read_config(const char *path, const dfx_json *doc, config *c)
{
    dfxp_config r = {path, doc, "classifier"};
    memset(c, 0, sizeof *c);
    const char *cls = dfx_json_string(dfx_json_get(doc, "_class_name"));
    if (dfx_json_type_of(doc) != DFX_JSON_OBJECT || !cls || strcmp(cls, "DfxClassifier") != 0)
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: _class_name is '%s', not DfxClassifier", path,
                             cls ? cls : "(missing)");
    static const char *const known[] = {"_class_name", "_dfx_version", "in_channels", "sample_size",
                                        "num_classes", "block_out_channels", "norm_num_groups",
                                        "norm_eps", "feature_dim", NULL};
    static const struct {
        const char *key, *what;
    } required[] = {
        {"in_channels", "the images' channels"},
        {"sample_size", "the images' side, or [height, width]"},
        {"num_classes", "the number of classes"},
        {"block_out_channels", "the channels of each level, e.g. [16, 32, 64]"},
        {"norm_num_groups", "the group norms' groups"},
        {"feature_dim", "the width of the features"},
    };
    dfx_status st = dfxp_check_known(&r, known);
    for (size_t i = 0; !st && i < sizeof required / sizeof *required; i++)
        if (!dfx_json_get(doc, required[i].key))
            st = missing(&r, required[i].key, required[i].what);
    if (st)
        return st;
    const dfx_json *ss = dfx_json_get(doc, "sample_size");
    if (dfx_json_type_of(ss) == DFX_JSON_ARRAY) {
        int64_t hw[2], n = 2;
        if ((st = dfxp_get_ints(&r, "sample_size", 1, 1 << 16, 2, hw, &n)))
            return st;
        c->sample_h = hw[0];
        c->sample_w = hw[1];
    } else {
        if ((st = dfxp_get_int(&r, "sample_size", 0, 1, 1 << 16, &c->sample_h)))
            return st;
        c->sample_w = c->sample_h;
    }
    if ((st = dfxp_get_int(&r, "in_channels", 0, 1, 4096, &c->in_ch)) ||
        (st = dfxp_get_int(&r, "num_classes", 0, 2, 1 << 20, &c->classes)) ||
        (st = dfxp_get_ints(&r, "block_out_channels", 1, 65536, MAX_LEVELS, c->ch, &c->levels)) ||
        (st = dfxp_get_int(&r, "norm_num_groups", 0, 1, 65536, &c->groups)) ||
        (st = dfxp_get_int(&r, "feature_dim", 0, 1, 16384, &c->feature_dim)) ||
        (st = dfxp_get_number(&r, "norm_eps", 1e-5, &c->eps)))
        return st;
    if (!(c->eps > 0))
        return dfxp_field_error(&r, "norm_eps", "expected a positive number");
    for (int64_t i = 0; i < c->levels; i++)
        if (c->ch[i] % c->groups)
            return dfxp_field_error(&r, "norm_num_groups", "does not divide every entry of block_out_channels");
    return DFX_OK;
}

/* ---- loading ---------------------------------------------------------- */

static dfx_status load_network(classifier *m, dfx_weights *w)
{
    const config *c = &m->cfg;
    char name[64];
    dfx_status st;
    if ((st = dfx_conv2d_load(&m->conv_in, w, "conv_in", c->in_ch, c->ch[0], 3, 1, 1, true)))
        return st;
    int64_t prev = c->ch[0];
    for (int64_t i = 0; i < c->levels; i++) {
        const dfx_resblock_params rp = {prev, c->ch[i], 0, c->groups, c->eps, false, 1.0};
        snprintf(name, sizeof name, "blocks.%lld.resnet", (long long)i);
        if ((st = dfx_resblock_load(&m->lv[i].res, w, name, &rp)))
            return st;
        if (i < c->levels - 1) {
            snprintf(name, sizeof name, "blocks.%lld.downsample", (long long)i);
            if ((st = dfx_conv2d_load(&m->lv[i].downsample, w, name, c->ch[i], c->ch[i], 3, 2, 1, true)))
                return st;
        }
        prev = c->ch[i];
    }
    if ((st = dfx_group_norm_load(&m->norm_out, w, "norm_out", c->groups, prev, c->eps)) ||
        (st = dfx_linear_load(&m->feature, w, "feature", prev, c->feature_dim, true)) ||
        (st = dfx_linear_load(&m->head, w, "head", c->feature_dim, c->classes, true)))
        return st;
    return dfx_weights_check_used(w, "");
}

static void free_network(classifier *m)
{
    dfx_conv2d_free(&m->conv_in);
    for (int i = 0; i < MAX_LEVELS; i++) {
        dfx_resblock_free(&m->lv[i].res);
        dfx_conv2d_free(&m->lv[i].downsample);
    }
    dfx_group_norm_free(&m->norm_out);
    dfx_linear_free(&m->feature);
    dfx_linear_free(&m->head);
}

/* Reads the config at path (parsed as doc) and loads the network from w. */
static dfx_status build(classifier *m, const char *path, const dfx_json *doc, dfx_weights *w)
{
    dfx_status st = read_config(path, doc, &m->cfg);
    if (!st && (st = load_network(m, w)))
        free_network(m);
    /* the tape convolves with the weights as they are: no Winograd
     * transforms are needed beside them */
    for (int64_t i = 0; !st && i < m->cfg.levels; i++)
        if ((st = dfx_conv2d_set_algo(&m->lv[i].res.conv1, DFX_CONV2D_ALGO_IM2COL)) ||
            (st = dfx_conv2d_set_algo(&m->lv[i].res.conv2, DFX_CONV2D_ALGO_IM2COL)))
            free_network(m);
    if (!st && (st = dfx_conv2d_set_algo(&m->conv_in, DFX_CONV2D_ALGO_IM2COL)))
        free_network(m);
    if (!st && (st = dfxp_read_text(path, &m->config_text, &m->config_len)))
        free_network(m);
    return st;
}

static dfx_status classifier_init(void *priv)
{
    static const dfxp_component_files files = {"classifier", "model", false};
    classifier *m = priv;
    if (m->path && m->config_file)
        return dfx_error_set(DFX_ERR_CONFIG, "classifier: give path (a trained classifier) or config (a "
                                             "config.json for random weights), not both");
    if (!m->path && !m->config_file)
        return dfx_error_set(DFX_ERR_CONFIG, "classifier: no checkpoint: set path to a trained "
                                             "classifier's folder, or config to a config.json (random "
                                             "weights, to train)");
    dfx_status st;
    if (m->config_file) {
        dfx_json *doc = NULL;
        dfx_weights *w = NULL;
        if (!(st = dfx_json_parse_file(m->config_file, &doc)) &&
            !(st = dfx_weights_open_random(&w, (uint64_t)m->seed)))
            st = build(m, m->config_file, doc, w);
        dfx_weights_close(w);
        dfx_json_destroy(doc);
    } else {
        /* the folder `dfx train` writes holds classifier/ beside its
         * training state, without a diffusers model_index.json */
        char *cfg = dfxp_join(m->path, "config.json"), *sub = dfxp_join(m->path, "classifier");
        if (!cfg || !sub) {
            free(cfg);
            free(sub);
            return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        }
        const char *dir = dfxp_is_dir(m->path) && !dfxp_is_file(cfg) && dfxp_is_dir(sub) ? sub : m->path;
        dfxp_checkpoint ck;
        if (!(st = dfxp_checkpoint_open(&ck, dir, &files, NULL, false))) {
            st = build(m, ck.config_path, ck.config, ck.weights);
            dfxp_checkpoint_close(&ck);
        }
        free(cfg);
        free(sub);
    }
    if (st)
        return st;
    if ((st = dfx_tape_create(&m->tape, DFX_DTYPE_F32))) {
        free_network(m);
        free(m->config_text);
        return st;
    }
    dfx_tape_set_recording(m->tape, false);
    return DFX_OK;
}

static void classifier_fini(void *priv)
{
    classifier *m = priv;
    free_network(m);
    dfx_tape_destroy(m->tape);
    free(m->config_text);
}

static void classifier_info(void *priv, dfx_model_info *info)
{
    const classifier *m = priv;
    memset(info, 0, sizeof *info);
    info->prediction = DFX_PREDICTION_AUTO;
    info->input_scale = DFX_INPUT_SCALE_VP;
    info->sample_ndim = 3;
    info->sample_shape[0] = m->cfg.in_ch;
    info->sample_shape[1] = m->cfg.sample_h;
    info->sample_shape[2] = m->cfg.sample_w;
    info->checkpoint_folder = "classifier";
    info->checkpoint_stem = "model";
    info->classes = m->cfg.classes;
    info->features = m->cfg.feature_dim;
}

/* ---- the network ------------------------------------------------------ */

/* The logits [n, classes] of x [n, in_ch, h, w], and in *features (may be
 * NULL) the features [n, feature_dim]. */
static dfx_var *network(const classifier *m, dfx_tape *t, const dfx_params *p, dfx_var *x,
                        dfx_var **features)
{
    const config *c = &m->cfg;
    if (!x)
        return NULL;
    if (x->ndim != 4 || x->shape[1] != c->in_ch)
        return dfx_tape_fail(t, dfx_error_set(DFX_ERR_INVALID_ARG,
                                              "classifier: input must be [B, %lld, H, W]",
                                              (long long)c->in_ch));
    dfx_var *cur = dfx_g_conv2d_layer(t, p, &m->conv_in, x);
    for (int64_t i = 0; i < c->levels; i++) {
        cur = dfx_g_resblock(t, p, &m->lv[i].res, cur, NULL);
        if (i < c->levels - 1)
            cur = dfx_g_conv2d_layer(t, p, &m->lv[i].downsample, cur);
    }
    cur = dfx_g_unary_op(t, DFX_G_SILU, dfx_g_group_norm_layer(t, p, &m->norm_out, cur));
    dfx_var *f = dfx_g_unary_op(t, DFX_G_SILU, dfx_g_linear_layer(t, p, &m->feature, dfx_g_mean_hw(t, cur)));
    if (features)
        *features = f;
    return dfx_g_linear_layer(t, p, &m->head, f);
}

static dfx_status classifier_predict(void *priv, const dfx_model_input *in, dfx_tensor *out)
{
    classifier *m = priv;
    const dfx_tensor *x = in->x;
    const int64_t nf = m->cfg.feature_dim, nk = m->cfg.classes;
    if (x->dtype != DFX_DTYPE_F32 || x->ndim != 4 || x->shape[1] != m->cfg.in_ch)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "classifier: input must be float32 [B, %lld, H, W]",
                             (long long)m->cfg.in_ch);
    const int64_t n = x->shape[0];
    if (out->dtype != DFX_DTYPE_F32 || dfx_tensor_numel(out) != n * (nf + nk))
        return dfx_error_set(DFX_ERR_INVALID_ARG, "classifier: the output must be float32 [%lld, %lld] "
                                                  "(features, then logits)",
                             (long long)n, (long long)(nf + nk));
    dfx_tape *t = m->tape;
    dfx_tape_reset(t);
    dfx_var *f = NULL;
    dfx_var *logits = network(m, t, NULL, dfx_tape_from_f32(t, 4, x->shape, x->data, false), &f);
    if (!logits) {
        dfx_status st = dfx_tape_status(t);
        dfx_tape_reset(t);
        return st;
    }
    const float *fv = f->data, *lv = logits->data;
    float *o = out->data;
    for (int64_t i = 0; i < n; i++) {
        memcpy(o + i * (nf + nk), fv + i * nf, (size_t)nf * sizeof *o);
        memcpy(o + i * (nf + nk) + nf, lv + i * nk, (size_t)nk * sizeof *o);
    }
    /* the activations of a large batch are not kept between calls */
    dfx_tape_reset(t);
    return DFX_OK;
}

/* ---- training --------------------------------------------------------- */

static dfx_status classifier_train_params(void *priv, dfx_params *p)
{
    classifier *m = priv;
    char name[64];
    dfx_status st = dfx_params_add_conv2d(p, "conv_in", &m->conv_in);
    for (int64_t i = 0; !st && i < m->cfg.levels; i++) {
        snprintf(name, sizeof name, "blocks.%lld.resnet", (long long)i);
        st = dfx_params_add_resblock(p, name, &m->lv[i].res);
        if (!st && m->lv[i].downsample.w) {
            snprintf(name, sizeof name, "blocks.%lld.downsample", (long long)i);
            st = dfx_params_add_conv2d(p, name, &m->lv[i].downsample);
        }
    }
    if (!st)
        st = dfx_params_add_group_norm(p, "norm_out", &m->norm_out);
    if (!st)
        st = dfx_params_add_linear(p, "feature", &m->feature);
    return st ? st : dfx_params_add_linear(p, "head", &m->head);
}

static dfx_var *classifier_train_forward(void *priv, dfx_tape *t, const dfx_params *p, dfx_var *x,
                                         const dfx_model_input *in)
{
    (void)in;
    return network(priv, t, p, x, NULL);
}

/* predict() reads the weights themselves: nothing derived to rebuild */
static dfx_status classifier_params_changed(void *priv)
{
    (void)priv;
    return DFX_OK;
}

static dfx_status classifier_save_config(void *priv, const char *dir)
{
    const classifier *m = priv;
    return dfxp_write_config(dir, m->config_text, m->config_len);
}

static const dfx_model_ops classifier_ops = {
    .info = classifier_info,
    .predict = classifier_predict,
    .train_params = classifier_train_params,
    .train_forward = classifier_train_forward,
    .params_changed = classifier_params_changed,
    .save_config = classifier_save_config,
};

static const dfx_component classifier_component = {
    DFX_KIND_MODEL, "classifier",
    "small CNN image classifier: its features serve FID and IS (`dfx eval`)", sizeof(classifier),
    classifier_options, classifier_init, classifier_fini, &classifier_ops,
};

static const dfx_component *const components[] = {&classifier_component, NULL};

static const dfx_plugin plugin = {
    DFX_ABI_VERSION, sizeof(dfx_plugin), "classifier", "1.0", "MIT", components,
};

DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void)
{
    return &plugin;
}
