/* Pipelines: the YAML tree with --set overrides, its validation against the
 * core's own option tables and the components' tables, instantiation from
 * the registry, the resolved dump, and the task runners. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base/options.h"
#include "core/internal.h"
#include "core/run/run.h"
#include "dfx/safetensors.h"

enum { TASK_SAMPLE, TASK_SCHEDULE, TASK_TRAIN };
enum { NOISE_SHARED, NOISE_PER_IMAGE };
enum { SCALE_AUTO, SCALE_UNIT, SCALE_SIGMA };

typedef struct task_opts {
    int64_t dfx;
    int pipeline;
    int64_t seed;
    dfx_ints shape;
    int64_t batch;
    int64_t width, height;
    int noise;
} task_opts;

typedef struct model_core {
    char *type;
    int prediction;
} model_core;

typedef struct scheduler_core {
    char *type;
    char *config;
    int64_t steps;
} scheduler_core;

/* the core's keys of a sampler, conditioner, guidance or codec section */
typedef struct typed_core {
    char *type;
} typed_core;

typedef struct init_opts {
    char *noise;
    int scale;
    char *image;
    double strength;
} init_opts;

typedef struct output_opts {
    char *path;
    int64_t grid;
} output_opts;

static const char *const task_names[] = {"sample", "schedule", "train", NULL};
static const char *const noise_names[] = {"shared", "per_image", NULL};
static const char *const scale_names[] = {"auto", "unit", "sigma", NULL};
static const char *const prediction_names[] = {"auto", "epsilon", "v_prediction", "sample", "score", NULL};

#define REQUIRED_INT(name, off, def, lo, hi, help) \
    { (name), DFX_OPTION_TYPE_INT, (off), (def), NULL, (lo), (hi), NULL, DFX_OPTION_REQUIRED, (help) }
#define REQUIRED_ENUM(name, off, choices, help) \
    { (name), DFX_OPTION_TYPE_ENUM, (off), 0, NULL, 0, 0, (choices), DFX_OPTION_REQUIRED, (help) }
#define REQUIRED_STRING(name, off, help) \
    { (name), DFX_OPTION_TYPE_STRING, (off), 0, NULL, 0, 0, NULL, DFX_OPTION_REQUIRED, (help) }

static const dfx_option task_options[] = {
    REQUIRED_INT("dfx", offsetof(task_opts, dfx), 1, 1, 1, "pipeline schema version; this dfx reads 1"),
    REQUIRED_ENUM("pipeline", offsetof(task_opts, pipeline), task_names,
                  "the task: sample (draw samples), schedule (plan the noise schedule only) or train (`dfx train`: "
                  "fit the model to the data section's items)"),
    DFX_OPTION_INT("seed", offsetof(task_opts, seed), 0, 0, 9223372036854775807.0,
                   "seed of the run's generator (torch.manual_seed)"),
    DFX_OPTION_INTS("shape", offsetof(task_opts, shape), 1, 1e9,
                    "shape of the sampled batch [B, ...]; default: [batch] + the model's sample shape"),
    DFX_OPTION_INT("batch", offsetof(task_opts, batch), 1, 1, 1e6, "batch size when shape is not given"),
    DFX_OPTION_INT("width", offsetof(task_opts, width), 0, 0, 1 << 20,
                   "width of the images in pixels (after the codec's decoding, when there is one); 0: the "
                   "model's default, or the init image's"),
    DFX_OPTION_INT("height", offsetof(task_opts, height), 0, 0, 1 << 20,
                   "height of the images in pixels; 0: the model's default, or the init image's"),
    DFX_OPTION_ENUM("noise", offsetof(task_opts, noise), NOISE_SHARED, noise_names,
                    "shared: one generator draws all noise in diffusers' order; per_image: item k has its "
                    "own generator seeded seed+k, so a batch equals single runs"),
    DFX_OPTION_END,
};

static const dfx_option model_core_options[] = {
    REQUIRED_STRING("type", offsetof(model_core, type), "the model component (`dfx list model`)"),
    DFX_OPTION_ENUM("prediction", offsetof(model_core, prediction), 0, prediction_names,
                    "what the network predicts; auto: as the model (or the scheduler config) declares"),
    DFX_OPTION_END,
};

static const dfx_option scheduler_core_options[] = {
    DFX_OPTION_STRING("type", offsetof(scheduler_core, type), NULL,
                      "the scheduler component (`dfx list scheduler`); required unless config is given"),
    DFX_OPTION_PATH("config", offsetof(scheduler_core, config),
                    "a diffusers scheduler_config.json: picks the scheduler, sampler and their options"),
    DFX_OPTION_INT("steps", offsetof(scheduler_core, steps), 50, 1, 1e8, "number of sampling steps"),
    DFX_OPTION_END,
};

static const dfx_option sampler_core_options[] = {
    REQUIRED_STRING("type", offsetof(typed_core, type),
                    "the sampler component (`dfx list sampler`), or an A1111 sampler name (\"Euler a\", "
                    "\"DPM++ 2M Karras\", ...)"),
    DFX_OPTION_END,
};

static const dfx_option conditioner_core_options[] = {
    REQUIRED_STRING("type", offsetof(typed_core, type),
                    "the conditioner component (`dfx list conditioner`); a `path` it leaves out is the "
                    "model's"),
    DFX_OPTION_END,
};

static const dfx_option guidance_core_options[] = {
    REQUIRED_STRING("type", offsetof(typed_core, type), "the guidance component (`dfx list guidance`)"),
    DFX_OPTION_END,
};

static const dfx_option codec_core_options[] = {
    REQUIRED_STRING("type", offsetof(typed_core, type),
                    "the codec component (`dfx list codec`): samples are its latents, outputs its decoded "
                    "data; a `path` it leaves out is the model's"),
    DFX_OPTION_END,
};

static const dfx_option init_options[] = {
    DFX_OPTION_PATH("noise", offsetof(init_opts, noise),
                    "FILE.safetensors#tensor: start from this noise instead of drawing it"),
    DFX_OPTION_ENUM("scale", offsetof(init_opts, scale), SCALE_AUTO, scale_names,
                    "how the unit noise is scaled: as the scheduler/sampler say (diffusers' "
                    "init_noise_sigma), unit variance, or sigma_max"),
    DFX_OPTION_PATH("image", offsetof(init_opts, image),
                    "a PNG to start from (img2img, SDEdit): encoded by the codec, noised to the level "
                    "`strength` picks, then denoised over the rest of the schedule"),
    DFX_OPTION_FLOAT("strength", offsetof(init_opts, strength), 0.8, 0, 1,
                     "with image: the part of the schedule that runs (diffusers' strength): the last "
                     "int(steps * strength) steps; 1 starts from pure noise"),
    DFX_OPTION_END,
};

static const dfx_option output_options[] = {
    DFX_OPTION_PATH("path", offsetof(output_opts, path),
                    "where the result goes: .safetensors (tensor 'samples', and 'image' [B, H, W, C] in "
                    "[0, 1] for images), .png (images [B, C, H, W], C = 1 or 3: one file each, NAME-0000.png "
                    "... when B > 1; 2-D points: a scatter plot)"),
    DFX_OPTION_INT("grid", offsetof(output_opts, grid), 0, 0, 1 << 16,
                   "with .png and a batch: one image of the batch tiled in rows of this many columns "
                   "(2 pixels apart) instead of a file each; 0: a file each"),
    DFX_OPTION_END,
};

static const dfx_option *core_options_of(dfx_kind kind)
{
    switch (kind) {
    case DFX_KIND_SCHEDULER:
        return scheduler_core_options;
    case DFX_KIND_MODEL:
        return model_core_options;
    case DFX_KIND_SAMPLER:
        return sampler_core_options;
    case DFX_KIND_CONDITIONER:
        return conditioner_core_options;
    case DFX_KIND_GUIDANCE:
        return guidance_core_options;
    case DFX_KIND_CODEC:
        return codec_core_options;
    }
    return sampler_core_options;
}

void dfx_component_describe(const dfx_component *c, FILE *out)
{
    const dfx_option *core = core_options_of(c->kind);
    fprintf(out, "%s '%s': %s\n", dfx_kind_name(c->kind), c->name, c->summary);
    dfx__options_describe(c->options, out);
    fprintf(out, "\n  keys of every %s section, read by dfx itself:\n", dfx_kind_name(c->kind));
    dfx__options_describe(core, out);
}

struct dfx_pipeline {
    dfx__node *root;
    char *origin;
    bool resolved;
    task_opts task;
    model_core mcore;
    scheduler_core score;
    typed_core pcore, ccore, gcore, kcore;  /* sampler, conditioner, guidance, codec */
    init_opts init;
    output_opts output;
    dfx__train_opts train;
    dfx__train_data data;
    bool has_model, has_sampler, has_init, has_output, has_train, has_data;
    bool has_conditioner, has_guidance, has_codec;
    dfx__instance model, scheduler, sampler, conditioner, guidance, codec;
    dfx_prediction prediction;
    dfx__node *implied_sched;   /* the scheduler section a model folder implied */
    dfx__node *implied_cond, *implied_codec;  /* sections given the model's path */
};

/* ---- loading and overrides -------------------------------------------- */

static dfx_status wrap(dfx_pipeline **out, dfx__node *root, const char *origin)
{
    dfx_pipeline *p = calloc(1, sizeof *p);
    if (!p || !(p->origin = strdup(origin))) {
        free(p);
        dfx__node_free(root);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    }
    if (root->type != DFX__NODE_MAP) {
        char where[512];
        dfx_error_set(DFX_ERR_CONFIG, "%s: a pipeline is a map of keys (dfx: 1, pipeline: ..., model: ...), "
                                      "not %s", dfx__node_where(root, where, sizeof where),
                      dfx__node_describe(root));
        dfx__node_free(root);
        free(p->origin);
        free(p);
        return DFX_ERR_CONFIG;
    }
    p->root = root;
    *out = p;
    return DFX_OK;
}

dfx_status dfx_pipeline_parse(dfx_pipeline **out, const char *text, size_t len, const char *origin)
{
    dfx__node *root;
    *out = NULL;
    dfx_status st = dfx__yaml_parse(text, len, origin, &root);
    return st ? st : wrap(out, root, origin);
}

dfx_status dfx_pipeline_load(dfx_pipeline **out, const char *path)
{
    char *text;
    size_t len;
    *out = NULL;
    dfx_status st = dfx__read_file(path, &text, &len);
    if (st)
        return st;
    st = dfx_pipeline_parse(out, text, len, path);
    free(text);
    return st;
}

dfx_status dfx_pipeline_load_png(dfx_pipeline **out, const char *path)
{
    dfx__png_image img;
    *out = NULL;
    dfx_status st = dfx__png_read(path, &img);
    if (st)
        return st;
    const char *yaml = dfx__png_image_text(&img, "dfx");
    if (!yaml) {
        st = dfx_error_set(DFX_ERR_NOT_FOUND, "%s has no dfx pipeline in its metadata (not made by dfx?)", path);
    } else {
        /* "IMAGE.png#dfx:3:5: ..." in messages; relative paths resolve
         * against the image's folder */
        size_t n = strlen(path) + sizeof "#dfx";
        char *origin = malloc(n);
        if (!origin) {
            st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        } else {
            snprintf(origin, n, "%s#dfx", path);
            st = dfx_pipeline_parse(out, yaml, strlen(yaml), origin);
            free(origin);
        }
    }
    dfx__png_image_fini(&img);
    return st;
}

dfx_status dfx_pipeline_set(dfx_pipeline *p, const char *assignment)
{
    char origin[1024];
    snprintf(origin, sizeof origin, "--set %s", assignment);
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return dfx_error_set(DFX_ERR_CONFIG, "%s: expected key.path=value", origin);
    if (p->resolved)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: the pipeline is already resolved", origin);
    char *path = strndup(assignment, (size_t)(eq - assignment));
    if (!path)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    dfx__node *value;
    const char *vtext = eq + 1;
    dfx_status st = *vtext ? dfx__yaml_parse(vtext, strlen(vtext), origin, &value) : DFX_OK;
    if (!*vtext)
        value = dfx__node_new_scalar("", false, origin, 0, 0);
    if (st) {
        free(path);
        return st;
    }
    /* positions inside a one-line value are noise: point at the --set */
    if (value->type == DFX__NODE_SCALAR || value->type == DFX__NODE_SEQ)
        value->line = value->col = 0;
    dfx__node *map = p->root;
    char *save = NULL, *key = strtok_r(path, ".", &save);
    while (key) {
        char *next = strtok_r(NULL, ".", &save);
        if (!*key) {
            st = dfx_error_set(DFX_ERR_CONFIG, "%s: empty key in the path", origin);
            break;
        }
        if (!next) {
            st = dfx__node_set(map, key, value);
            value = NULL;
            break;
        }
        dfx__node *child = dfx__node_get(map, key);
        if (!child) {
            child = dfx__node_new(DFX__NODE_MAP, origin, 0, 0);
            if (!child || (st = dfx__node_set(map, key, child))) {
                st = st ? st : dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
                break;
            }
        } else if (child->type != DFX__NODE_MAP) {
            char where[512];
            st = dfx_error_set(DFX_ERR_CONFIG, "%s: '%s' is a value (at %s), not a section with keys", origin,
                               key, dfx__node_where(child, where, sizeof where));
            break;
        }
        map = child;
        key = next;
    }
    dfx__node_free(value);
    free(path);
    return st;
}

const char *dfx_pipeline_get(const dfx_pipeline *p, const char *key)
{
    const dfx__node *n = p->root;
    for (const char *k = key; n;) {
        const char *dot = strchr(k, '.');
        size_t len = dot ? (size_t)(dot - k) : strlen(k);
        char part[256];
        if (n->type != DFX__NODE_MAP || len == 0 || len >= sizeof part)
            return NULL;
        memcpy(part, k, len);
        part[len] = '\0';
        n = dfx__node_get(n, part);
        if (!dot)
            break;
        k = dot + 1;
    }
    return n && n->type == DFX__NODE_SCALAR && dfx__scalar_kind_of(n) != DFX__SCALAR_NULL ? n->text : NULL;
}

/* ---- resolution ------------------------------------------------------- */

static const char *const top_sections[] = {"model",   "conditioner", "guidance", "codec", "scheduler",
                                           "sampler", "init",        "output",   "train", "data",
                                           NULL};

static dfx_status section_map(const dfx__node *root, const char *name, const dfx__node **out)
{
    const dfx__node *n = dfx__node_get(root, name);
    *out = NULL;
    if (!n)
        return DFX_OK;
    if (n->type != DFX__NODE_MAP) {
        char where[512];
        return dfx_error_set(DFX_ERR_CONFIG, "%s: '%s' must be a section of keys (e.g. %s: {type: ...}), not %s",
                             dfx__node_where(n, where, sizeof where), name, name, dfx__node_describe(n));
    }
    *out = n;
    return DFX_OK;
}

/* Option names of a table, NULL-terminated, into names[max]. */
static void option_names(const dfx_option *opts, const char **names, size_t max)
{
    size_t n = 0;
    for (const dfx_option *o = opts; o && o->name && n + 1 < max; o++)
        names[n++] = o->name;
    names[n] = NULL;
}

/* Reads a component section: the core keys, then the component's own. */
static dfx_status resolve_component(dfx_pipeline *p, dfx_registry *reg, dfx_kind kind,
                                    const dfx__node *sec, const dfx_option *core_opts, void *core,
                                    const char *type, dfx__instance *inst)
{
    char where[512];
    const char *kname = dfx_kind_name(kind);
    const dfx__node *tn = dfx__node_get(sec, "type");
    (void)p;
    const dfx_component *comp = dfx_registry_find(reg, kind, type);
    if (!comp)
        return dfx__registry_unknown(reg, kind, type, dfx__node_where(tn ? tn : sec, where, sizeof where));
    const char *core_names[16], *comp_names[256];
    option_names(core_opts, core_names, 16);
    option_names(comp->options, comp_names, 256);
    dfx_status st = dfx__instance_create(inst, comp, sec, core_names);
    if (st)
        return st;
    char what[64];
    snprintf(what, sizeof what, "%s section", kname);
    return dfx__options_apply(core_opts, core, sec, what, comp_names);
}

static dfx_status type_of(const dfx__node *sec, const char *section, const char **type)
{
    char where[512];
    const dfx__node *tn = dfx__node_get(sec, "type");
    *type = NULL;
    if (!tn)
        return DFX_OK;
    if (tn->type != DFX__NODE_SCALAR || dfx__scalar_kind_of(tn) == DFX__SCALAR_NULL)
        return dfx_error_set(DFX_ERR_CONFIG, "%s: %s.type: expected a component name, found %s",
                             dfx__node_where(tn, where, sizeof where), section, dfx__node_describe(tn));
    *type = tn->text;
    return DFX_OK;
}

static dfx_status resolve_scheduling(dfx_pipeline *p, dfx_registry *reg, const char *model_sched)
{
    const dfx__node *sched, *samp;
    dfx_status st;
    char where[512];
    dfx__imported im = {0};
    dfx__node *merged_sched = NULL, *merged_samp = NULL, *with_model;

    if ((st = section_map(p->root, "scheduler", &sched)) || (st = section_map(p->root, "sampler", &samp)))
        return st;
    if (model_sched && (!sched || (!dfx__node_get(sched, "type") && !dfx__node_get(sched, "config")))) {
        /* a section without type or config (steps only, say) takes the
         * model folder's scheduler_config.json */
        with_model = sched ? dfx__node_clone(sched) : dfx__node_new(DFX__NODE_MAP, p->origin, 0, 0);
        dfx__node *cfg = dfx__node_new_scalar(model_sched, true, "the model folder", 0, 0);
        if (!with_model || !cfg || (st = dfx__node_set(with_model, "config", cfg))) {
            dfx__node_free(with_model);
            return st ? st : dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        }
        /* kept until the pipeline is released: error paths below return early */
        dfx__node_free(p->implied_sched);
        p->implied_sched = with_model;
        sched = with_model;
    }
    if (!sched)
        return dfx_error_set(DFX_ERR_CONFIG, "%s: the pipeline needs a scheduler section (e.g. scheduler: "
                                             "{type: scaled_linear, steps: 30})", p->origin);
    const char *samp_type = NULL;
    if (samp && (st = type_of(samp, "sampler", &samp_type)))
        return st;
    const dfx__node *cfg = dfx__node_get(sched, "config");
    if (cfg && !(cfg->type == DFX__NODE_SCALAR && dfx__scalar_kind_of(cfg) == DFX__SCALAR_NULL)) {
        if (cfg->type != DFX__NODE_SCALAR)
            return dfx_error_set(DFX_ERR_CONFIG, "%s: scheduler.config: expected a path, found %s",
                                 dfx__node_where(cfg, where, sizeof where), dfx__node_describe(cfg));
        char *path = dfx__resolve_path(cfg->text, cfg);
        if (!path)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        st = dfx__diffusers_import(path, samp_type, &im);
        free(path);
        if (st)
            return dfx_error_prefix(st, "%s: scheduler.config: ", dfx__node_where(cfg, where, sizeof where));
        /* the pipeline's own keys win over the config's */
        merged_sched = im.scheduler;
        im.scheduler = NULL;
        dfx__node *user = dfx__node_clone(sched);
        if (!user || (st = dfx__node_merge_defaults(user, merged_sched))) {
            dfx__node_free(user);
            dfx__node_free(merged_sched);
            dfx__imported_fini(&im);
            return st ? st : dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        }
        dfx__node_free(merged_sched);
        merged_sched = user;
        const char *im_type = dfx__node_get(im.sampler, "type")->text;
        if (!samp) {
            merged_samp = im.sampler;
            im.sampler = NULL;
        } else if (!samp_type || strcmp(samp_type, im_type) == 0) {
            merged_samp = dfx__node_clone(samp);
            if (!merged_samp || (st = dfx__node_merge_defaults(merged_samp, im.sampler))) {
                dfx__node_free(merged_sched);
                dfx__node_free(merged_samp);
                dfx__imported_fini(&im);
                return st ? st : dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
            }
        }
        sched = merged_sched;
        if (merged_samp)
            samp = merged_samp;
    }

    const char *sched_type;
    if (!(st = type_of(sched, "scheduler", &sched_type)) && !sched_type)
        st = dfx_error_set(DFX_ERR_CONFIG, "%s: scheduler: give a type (e.g. type: scaled_linear) or a diffusers "
                                           "config (config: scheduler_config.json)",
                           dfx__node_where(sched, where, sizeof where));
    if (!st)
        st = resolve_component(p, reg, DFX_KIND_SCHEDULER, sched, scheduler_core_options, &p->score, sched_type,
                               &p->scheduler);
    if (!st && p->task.pipeline == TASK_SAMPLE) {
        if (!samp) {
            st = dfx_error_set(DFX_ERR_CONFIG, "%s: the pipeline needs a sampler section (e.g. sampler: {type: "
                                               "euler}) or a scheduler config that implies one", p->origin);
        } else if (!(st = type_of(samp, "sampler", &samp_type))) {
            if (!samp_type)
                st = dfx_error_set(DFX_ERR_CONFIG, "%s: sampler: give a type (e.g. type: euler)",
                                   dfx__node_where(samp, where, sizeof where));
            else
                st = resolve_component(p, reg, DFX_KIND_SAMPLER, samp, sampler_core_options, &p->pcore,
                                       samp_type, &p->sampler);
            p->has_sampler = !st;
        }
    }
    if (!st && im.prediction[0]) {
        for (int i = 0; prediction_names[i]; i++)
            if (strcmp(prediction_names[i], im.prediction) == 0)
                p->prediction = (dfx_prediction)i;
    }
    dfx__node_free(merged_sched);
    dfx__node_free(merged_samp);
    dfx__imported_fini(&im);
    return st;
}

static bool has_option(const dfx_component *c, const char *name)
{
    for (const dfx_option *o = c->options; o && o->name; o++)
        if (strcmp(o->name, name) == 0)
            return true;
    return false;
}

/* An optional conditioner, guidance or codec section. A conditioner or a
 * codec with a `path` option that is given none takes the model section's:
 * a checkpoint usually holds the text encoder and the autoencoder too. */
static bool ends_with(const char *s, const char *suffix)
{
    const size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

static dfx_status resolve_optional(dfx_pipeline *p, dfx_registry *reg, dfx_kind kind, typed_core *core,
                                   dfx__instance *inst, bool *has, dfx__node **implied)
{
    const char *name = dfx_kind_name(kind);
    const dfx__node *sec;
    const char *type;
    char where[512];
    dfx_status st = section_map(p->root, name, &sec);
    if (st || !sec)
        return st;
    if ((st = type_of(sec, name, &type)))
        return st;
    if (!type)
        return dfx_error_set(DFX_ERR_CONFIG, "%s: %s: give a type (`dfx list %s`)",
                             dfx__node_where(sec, where, sizeof where), name, name);
    const dfx_component *comp = dfx_registry_find(reg, kind, type);
    /* the checkpoint keys of the model section that a section of the same
     * checkpoint reads unless it sets them: the path, the variant, and an
     * ldm yaml (a config.json belongs to the model's own folder) */
    static const char *const shared[] = {"path", "variant", "config"};
    const dfx__node *model = dfx__node_get(p->root, "model");
    dfx__node *with = NULL;
    for (size_t i = 0; implied && comp && model && model->type == DFX__NODE_MAP && i < 3; i++) {
        const dfx__node *v = dfx__node_get(model, shared[i]);
        if (!v || dfx__node_get(sec, shared[i]) || !has_option(comp, shared[i]))
            continue;
        if (i == 2 && !(v->type == DFX__NODE_SCALAR && (ends_with(v->text, ".yaml") || ends_with(v->text, ".yml"))))
            continue;
        if (!with && !(with = dfx__node_clone(sec)))
            return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        dfx__node *copy = dfx__node_clone(v);
        if (!copy || (st = dfx__node_set(with, shared[i], copy))) {
            dfx__node_free(with);
            return st ? st : dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        }
    }
    if (with) {
        dfx__node_free(*implied);
        *implied = with;
        sec = with;
    }
    st = resolve_component(p, reg, kind, sec, core_options_of(kind), core, type, inst);
    *has = !st;
    return st;
}

/* A sampler named the A1111 way ("DPM++ 2M Karras") becomes the dfx
 * sampler with the options the name implies, and the schedule type a
 * `sigmas` key of the scheduler section; keys the pipeline sets itself
 * win. A registered component of that name wins over the alias. */
static dfx_status apply_sampler_alias(dfx_pipeline *p, dfx_registry *reg)
{
    dfx__node *samp = dfx__node_get(p->root, "sampler");
    dfx__node *tn = samp && samp->type == DFX__NODE_MAP ? dfx__node_get(samp, "type") : NULL;
    dfx__a1111_alias a;
    if (!tn || tn->type != DFX__NODE_SCALAR || dfx_registry_find(reg, DFX_KIND_SAMPLER, tn->text) ||
        !dfx__a1111_sampler(tn->text, &a))
        return DFX_OK;
    struct {
        dfx__node *map;
        const char *key, *value;
    } sets[3] = {{samp, "type", a.type}, {samp, a.key, a.value}, {NULL, "sigmas", a.sigmas}};
    if (a.sigmas) {
        dfx__node *sched = dfx__node_get(p->root, "scheduler");
        if (!sched) {
            dfx_status st;
            if (!(sched = dfx__node_new(DFX__NODE_MAP, tn->origin, tn->line, tn->col)))
                return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
            if ((st = dfx__node_set(p->root, "scheduler", sched)))
                return st;
        }
        sets[2].map = sched->type == DFX__NODE_MAP ? sched : NULL;
    }
    /* where the new keys come from: the type's place (tn is replaced first) */
    char origin[512];
    snprintf(origin, sizeof origin, "%s", tn->origin);
    const int line = tn->line, col = tn->col;
    for (int i = 0; i < 3; i++) {
        if (!sets[i].map || !sets[i].key || (i > 0 && dfx__node_get(sets[i].map, sets[i].key)))
            continue;
        dfx__node *v = dfx__node_new_scalar(sets[i].value, false, origin, line, col);
        dfx_status st = v ? dfx__node_set(sets[i].map, sets[i].key, v) : dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        if (st)
            return st;
    }
    return DFX_OK;
}

static dfx_status resolve_plain_section(dfx_pipeline *p, const char *name, const dfx_option *opts,
                                        void *priv, bool *present)
{
    const dfx__node *sec;
    dfx_status st = section_map(p->root, name, &sec);
    if (st)
        return st;
    *present = sec != NULL;
    char what[64];
    snprintf(what, sizeof what, "%s section", name);
    return dfx__options_apply(opts, priv, sec, what, NULL);
}

static dfx_status check_top_keys(const dfx_pipeline *p)
{
    const char *names[64];
    size_t n = 0;
    for (const dfx_option *o = task_options; o->name; o++)
        names[n++] = o->name;
    for (const char *const *s = top_sections; *s; s++)
        names[n++] = *s;
    for (size_t i = 0; i < p->root->count; i++) {
        bool known = false;
        for (size_t j = 0; j < n; j++)
            known = known || strcmp(p->root->keys[i], names[j]) == 0;
        if (!known) {
            char where[512];
            const char *s = dfx__suggest(p->root->keys[i], names, n);
            return dfx_error_set(DFX_ERR_CONFIG, "%s: unknown key '%s'%s%s%s",
                                 dfx__node_where(p->root->items[i], where, sizeof where), p->root->keys[i],
                                 s ? " (did you mean '" : "", s ? s : "", s ? "'?)" : "");
        }
    }
    return DFX_OK;
}

static void release_resolved(dfx_pipeline *p)
{
    dfx__instance_destroy(&p->model);
    dfx__instance_destroy(&p->scheduler);
    dfx__instance_destroy(&p->sampler);
    dfx__instance_destroy(&p->conditioner);
    dfx__instance_destroy(&p->guidance);
    dfx__instance_destroy(&p->codec);
    p->has_model = p->has_sampler = p->has_conditioner = p->has_guidance = p->has_codec = false;
    dfx__options_free(task_options, &p->task);
    dfx__options_free(model_core_options, &p->mcore);
    dfx__options_free(scheduler_core_options, &p->score);
    dfx__options_free(sampler_core_options, &p->pcore);
    dfx__options_free(conditioner_core_options, &p->ccore);
    dfx__options_free(guidance_core_options, &p->gcore);
    dfx__options_free(codec_core_options, &p->kcore);
    dfx__options_free(init_options, &p->init);
    dfx__options_free(output_options, &p->output);
    dfx__options_free(dfx__train_options, &p->train);
    dfx__options_free(dfx__train_data_options, &p->data);
    dfx__node_free(p->implied_sched);
    dfx__node_free(p->implied_cond);
    dfx__node_free(p->implied_codec);
    p->implied_sched = p->implied_cond = p->implied_codec = NULL;
    p->resolved = false;
}

dfx_status dfx_pipeline_resolve(dfx_pipeline *p, dfx_registry *reg)
{
    dfx_status st;
    char where[512];
    const dfx__node *sec;

    if (p->resolved)
        return DFX_OK;
    dfx__options_defaults(task_options, &p->task);
    dfx__options_defaults(model_core_options, &p->mcore);
    dfx__options_defaults(scheduler_core_options, &p->score);
    dfx__options_defaults(sampler_core_options, &p->pcore);
    dfx__options_defaults(conditioner_core_options, &p->ccore);
    dfx__options_defaults(guidance_core_options, &p->gcore);
    dfx__options_defaults(codec_core_options, &p->kcore);
    dfx__options_defaults(init_options, &p->init);
    dfx__options_defaults(output_options, &p->output);
    dfx__options_defaults(dfx__train_options, &p->train);
    dfx__options_defaults(dfx__train_data_options, &p->data);
    p->prediction = DFX_PREDICTION_AUTO;

    if ((st = check_top_keys(p)) ||
        (st = dfx__options_check_required(task_options, p->root, "the pipeline",
                                          dfx__node_where(p->root, where, sizeof where))) ||
        (st = dfx__options_apply(task_options, &p->task, p->root, "the pipeline", top_sections)))
        goto fail;
    if ((st = section_map(p->root, "model", &sec)))
        goto fail;
    if (p->task.pipeline != TASK_SCHEDULE) {
        const char *type;
        if (!sec) {
            st = dfx_error_set(DFX_ERR_CONFIG, "%s: the pipeline needs a model section (e.g. model: {type: "
                                               "gmm})", p->origin);
            goto fail;
        }
        if ((st = type_of(sec, "model", &type)))
            goto fail;
        if (!type) {
            st = dfx_error_set(DFX_ERR_CONFIG, "%s: model: give a type (`dfx list model`)",
                               dfx__node_where(sec, where, sizeof where));
            goto fail;
        }
        if ((st = resolve_component(p, reg, DFX_KIND_MODEL, sec, model_core_options, &p->mcore, type, &p->model)))
            goto fail;
        p->has_model = true;
    }
    if (p->task.pipeline == TASK_SAMPLE) {
        dfx_model_info info;
        ((const dfx_model_ops *)p->model.comp->ops)->info(p->model.priv, &info);
        if (info.classes > 0) {
            st = dfx_error_set(DFX_ERR_CONFIG, "%s: %s is a classifier, not a denoiser: it cannot sample "
                                               "(it serves `dfx eval` and trains with `dfx train`)",
                               p->origin, p->model.what);
            goto fail;
        }
        if ((st = resolve_optional(p, reg, DFX_KIND_CONDITIONER, &p->ccore, &p->conditioner, &p->has_conditioner,
                                   &p->implied_cond)) ||
            (st = resolve_optional(p, reg, DFX_KIND_GUIDANCE, &p->gcore, &p->guidance, &p->has_guidance, NULL)) ||
            (st = resolve_optional(p, reg, DFX_KIND_CODEC, &p->kcore, &p->codec, &p->has_codec,
                                   &p->implied_codec)))
            goto fail;
        if (p->has_guidance && !p->has_conditioner) {
            st = dfx_error_set(DFX_ERR_CONFIG, "%s: guidance needs a conditioner section to guide with (e.g. "
                                               "conditioner: {type: clip_text, prompt: ...})", p->origin);
            goto fail;
        }
    }
    if ((st = apply_sampler_alias(p, reg)))
        goto fail;
    /* the scheduler: as the pipeline says, else the one that came with the
     * model's weights */
    const char *model_sched = NULL;
    if (p->has_model) {
        dfx_model_info info;
        ((const dfx_model_ops *)p->model.comp->ops)->info(p->model.priv, &info);
        model_sched = info.scheduler_config;
    }
    const dfx__node *sched_sec;
    if ((st = section_map(p->root, "scheduler", &sched_sec)))
        goto fail;
    /* a classifier trains without a schedule */
    const bool no_schedule = p->task.pipeline == TASK_TRAIN && !sched_sec && !model_sched;
    if (!no_schedule && (st = resolve_scheduling(p, reg, model_sched)))
        goto fail;
    if ((st = resolve_plain_section(p, "init", init_options, &p->init, &p->has_init)) ||
        (st = resolve_plain_section(p, "output", output_options, &p->output, &p->has_output)) ||
        (st = resolve_plain_section(p, "train", dfx__train_options, &p->train, &p->has_train)) ||
        (st = resolve_plain_section(p, "data", dfx__train_data_options, &p->data, &p->has_data)))
        goto fail;
    if (p->task.pipeline != TASK_TRAIN && (p->has_train || p->has_data)) {
        st = dfx_error_set(DFX_ERR_CONFIG, "%s: train and data sections belong to `pipeline: train`",
                           p->origin);
        goto fail;
    }
    if (p->task.pipeline == TASK_TRAIN && !p->has_data) {
        st = dfx_error_set(DFX_ERR_CONFIG, "%s: a train pipeline needs a data section (data: {images: "
                                           "...})", p->origin);
        goto fail;
    }

    /* the prediction type: the pipeline's, else the model's, else the config's */
    if (p->has_model) {
        dfx_model_info info;
        const dfx_model_ops *mops = p->model.comp->ops;
        mops->info(p->model.priv, &info);
        if (p->mcore.prediction != DFX_PREDICTION_AUTO)
            p->prediction = (dfx_prediction)p->mcore.prediction;
        else if (info.prediction != DFX_PREDICTION_AUTO)
            p->prediction = info.prediction;
        else if (p->prediction == DFX_PREDICTION_AUTO)
            p->prediction = DFX_PREDICTION_EPSILON;
    }
    p->resolved = true;
    return DFX_OK;
fail:
    release_resolved(p);
    return st;
}

/* ---- single components ------------------------------------------------ */

struct dfx_instance {
    dfx__instance inst;
};

dfx_status dfx_instance_create(dfx_instance **out, dfx_registry *reg, dfx_kind kind, const char *yaml,
                               const char *origin)
{
    dfx__node *sec;
    const char *type;
    char where[512];
    *out = NULL;
    dfx_status st = dfx__yaml_parse(yaml, strlen(yaml), origin, &sec);
    if (st)
        return st;
    dfx_instance *i = calloc(1, sizeof *i);
    if (!i) {
        dfx__node_free(sec);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    }
    /* the core's keys of the section are validated, then dropped */
    union {
        model_core m;
        scheduler_core s;
        typed_core t;
    } core_keys;
    void *core_priv = &core_keys;
    const dfx_option *core = core_options_of(kind);
    dfx__options_defaults(core, core_priv);
    if (sec->type != DFX__NODE_MAP)
        st = dfx_error_set(DFX_ERR_CONFIG, "%s: expected a section of keys", origin);
    else if (!(st = type_of(sec, dfx_kind_name(kind), &type)) && !type)
        st = dfx_error_set(DFX_ERR_CONFIG, "%s: give a type", dfx__node_where(sec, where, sizeof where));
    if (!st)
        st = resolve_component(NULL, reg, kind, sec, core, core_priv, type, &i->inst);
    dfx__options_free(core, core_priv);
    dfx__node_free(sec);
    if (st) {
        free(i);
        return st;
    }
    *out = i;
    return DFX_OK;
}

void dfx_instance_destroy(dfx_instance *inst)
{
    if (!inst)
        return;
    dfx__instance_destroy(&inst->inst);
    free(inst);
}

const dfx_component *dfx_instance_component(const dfx_instance *inst)
{
    return inst->inst.comp;
}

void *dfx_instance_priv(dfx_instance *inst)
{
    return inst->inst.priv;
}

/* ---- the resolved dump ------------------------------------------------ */

static void dump_section(FILE *out, const char *name, const dfx_option *core_opts, const void *core,
                         const dfx__instance *inst)
{
    fprintf(out, "%s:\n", name);
    dfx__options_dump(core_opts, core, out, 2);
    if (inst)
        dfx__options_dump(inst->comp->options, inst->priv, out, 2);
}

dfx_status dfx_pipeline_write_resolved(const dfx_pipeline *p, FILE *out)
{
    if (!p->resolved)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "the pipeline is not resolved");
    dfx__options_dump(task_options, &p->task, out, 0);
    if (p->has_model) {
        model_core mc = p->mcore;
        mc.prediction = (int)p->prediction;
        dump_section(out, "model", model_core_options, &mc, &p->model);
    }
    scheduler_core sc = p->score;
    if (p->scheduler.comp) {
        sc.type = (char *)p->scheduler.comp->name;
        dump_section(out, "scheduler", scheduler_core_options, &sc, &p->scheduler);
    }
    if (p->has_sampler) {
        typed_core pc = {(char *)p->sampler.comp->name};
        dump_section(out, "sampler", sampler_core_options, &pc, &p->sampler);
    }
    const dfx__instance *extra[] = {&p->conditioner, &p->guidance, &p->codec};
    const bool has_extra[] = {p->has_conditioner, p->has_guidance, p->has_codec};
    for (int i = 0; i < 3; i++) {
        if (!has_extra[i])
            continue;
        typed_core tc = {(char *)extra[i]->comp->name};
        dump_section(out, dfx_kind_name(extra[i]->comp->kind), core_options_of(extra[i]->comp->kind), &tc,
                     extra[i]);
    }
    if (p->task.pipeline == TASK_SAMPLE)
        dump_section(out, "init", init_options, &p->init, NULL);
    if (p->task.pipeline == TASK_TRAIN) {
        dump_section(out, "train", dfx__train_options, &p->train, NULL);
        dump_section(out, "data", dfx__train_data_options, &p->data, NULL);
    }
    dump_section(out, "output", output_options, &p->output, NULL);
    return ferror(out) ? dfx_error_set(DFX_ERR_IO, "writing the resolved pipeline failed") : DFX_OK;
}

static char *resolved_text(const dfx_pipeline *p)
{
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    if (!f)
        return NULL;
    dfx_pipeline_write_resolved(p, f);
    fclose(f);
    return mem;
}

/* ---- running ---------------------------------------------------------- */

void dfx_run_params_init(dfx_run_params *params)
{
    memset(params, 0, sizeof *params);
}

dfx_status dfx_pipeline_plan(const dfx_pipeline *p, int64_t steps, dfx_schedule *out)
{
    if (!p->resolved)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "the pipeline is not resolved");
    if (!p->scheduler.comp)
        return dfx_error_set(DFX_ERR_CONFIG, "%s: the pipeline has no scheduler section", p->origin);
    const dfx_scheduler_ops *ops = p->scheduler.comp->ops;
    steps = steps > 0 ? steps : p->score.steps;
    bool cont = ops->continuous && ops->continuous(p->scheduler.priv);
    int64_t train = ops->train_steps ? ops->train_steps(p->scheduler.priv) : 0;
    dfx_status st = dfx_schedule_init(out, steps, cont, train);
    if (st)
        return st;
    dfx_error_clear();
    st = ops->plan(p->scheduler.priv, steps, out);
    if (st) {
        dfx_error_prefix(st, "%s: ", p->scheduler.what);
        dfx_schedule_fini(out);
        return st;
    }
    for (int64_t i = 0; i <= steps; i++) {
        const dfx_level *l = &out->levels[i];
        if (!(l->alpha >= 0 && l->sigma >= 0 && isfinite(l->alpha) && isfinite(l->sigma) &&
              l->alpha + l->sigma > 0)) {
            dfx_schedule_fini(out);
            return dfx_error_set(DFX_ERR_NUMERIC, "%s: level %lld has alpha %g, sigma %g", p->scheduler.what,
                                 (long long)i, l->alpha, l->sigma);
        }
    }
    return DFX_OK;
}

/* Reads "file.safetensors#name" (the name may be left out when the file
 * holds one tensor) as float32. */
static dfx_status read_tensor_ref(const char *ref, dfx_tensor **out)
{
    char *path = strdup(ref);
    if (!path)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    char *hash = strrchr(path, '#');
    if (hash)
        *hash++ = '\0';
    dfx_safetensors *st_file;
    dfx_status st = dfx_safetensors_open(path, &st_file);
    if (!st) {
        const char *name = hash;
        if (!name) {
            if (dfx_safetensors_count(st_file) != 1)
                st = dfx_error_set(DFX_ERR_CONFIG, "%s holds %lld tensors: name one as %s#NAME", path,
                                   (long long)dfx_safetensors_count(st_file), path);
            else
                name = dfx_safetensors_name(st_file, 0);
        }
        if (!st)
            st = dfx_safetensors_read(st_file, name, DFX_DTYPE_F32, out);
        dfx_safetensors_close(st_file);
    }
    free(path);
    return st;
}

/* Case-insensitive "ends with ext". */
static bool has_ext(const char *path, const char *ext)
{
    size_t n = strlen(path), e = strlen(ext);
    return n > e && strcasecmp(path + n - e, ext) == 0;
}

/* Samples that image outputs take: [B, C, H, W] with C = 1 (gray) or 3
 * (RGB), as diffusers' image processor does. */
static bool image_shaped(int ndim, const int64_t *shape)
{
    return ndim == 4 && (shape[1] == 1 || shape[1] == 3);
}

/* Whether output.path can take samples of this shape: called before
 * sampling, so a run does not end in an error it could have given first. */
static dfx_status check_output(const dfx_pipeline *p, int ndim, const int64_t *shape)
{
    const char *path = p->output.path;
    if (!path || has_ext(path, ".safetensors"))
        return DFX_OK;
    if (!has_ext(path, ".png"))
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "output.path '%s': unsupported extension (use .safetensors, "
                                                  "or .png for images [B, C, H, W] and 2-D points [B, 2])", path);
    if (ndim == 2 && shape[1] == 2)
        return DFX_OK;
    dfx_tensor t = dfx_tensor_view(DFX_DTYPE_F32, ndim, shape, NULL);
    char buf[128];
    dfx_tensor_shape_str(&t, buf, sizeof buf);
    if (ndim != 4)
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "output.path '%s': PNG output writes images [B, C, H, W] or "
                                                  "draws 2-D points [B, 2]; these samples are %s (write "
                                                  ".safetensors instead)", path, buf);
    if (shape[0] > INT_MAX)
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "output.path '%s': %lld images are more PNG files than dfx "
                                                  "writes in one run", path, (long long)shape[0]);
    if (!image_shaped(ndim, shape))
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "output.path '%s': PNG images have 1 (gray) or 3 (RGB) "
                                                  "channels; these samples are %s, %lld channels (write "
                                                  ".safetensors instead)", path, buf, (long long)shape[1]);
    if (shape[2] > DFX__PNG_MAX_SIDE || shape[3] > DFX__PNG_MAX_SIDE)
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "output.path '%s': these samples are %s; dfx writes PNG "
                                                  "images of at most %d pixels a side (write .safetensors "
                                                  "instead)", path, buf, DFX__PNG_MAX_SIDE);
    return DFX_OK;
}

/* diffusers' image post-processing (VaeImageProcessor.denormalize):
 * (x / 2 + 0.5).clamp(0, 1) in float32. */
static float denormalize(float x)
{
    float v = x / 2 + 0.5f;
    return v < 0 ? 0 : v > 1 ? 1 : v;
}

/* One image [C, H, W] as 8-bit rows of pixels, as diffusers' numpy_to_pil:
 * (image * 255).round() in float32, rounding half to even as numpy does
 * (rintf in the default rounding mode). */
static void image_pixels(const float *x, int64_t c, int64_t h, int64_t w, unsigned char *out)
{
    for (int64_t y = 0; y < h; y++)
        for (int64_t i = 0; i < w; i++)
            for (int64_t k = 0; k < c; k++)
                *out++ = (unsigned char)rintf(denormalize(x[(k * h + y) * w + i]) * 255);
}

/* Makes the path options of `priv` (a copy made to be dumped) absolute
 * against cwd; the new strings go to owned[*n] (at most max). */
static bool absolute_paths(const dfx_option *opts, void *priv, const char *cwd, char **owned, size_t *n,
                           size_t max)
{
    for (const dfx_option *o = opts; o && o->name; o++) {
        char **field = (char **)((char *)priv + o->offset);
        if (o->type != DFX_OPTION_TYPE_PATH || !*field || !**field || **field == '/')
            continue;
        if (*n == max || !(owned[*n] = dfx__path_join(cwd, *field)))
            return false;
        *field = owned[(*n)++];
    }
    return true;
}

/* The pipeline stored with an output (PNG text chunk `dfx`, safetensors
 * metadata) into *text: the resolved pipeline with every relative path made
 * absolute, so that it re-runs from any folder, and out_path as its output.
 *
 * What re-running it reproduces: with `image` < 0 the whole run. With
 * image = k, image k of a per_image batch alone: seed + k with batch 1,
 * which the per_image rule makes the same image. Under shared noise (or
 * init.noise) an image depends on its whole batch, so the caller stores the
 * whole run's pipeline and a re-run reproduces the whole batch. */
static dfx_status stored_pipeline(const dfx_pipeline *p, int64_t image, const char *out_path, char **text)
{
    enum { MAX_OWNED = 256 };
    char *owned[MAX_OWNED];
    size_t nowned = 0;
    enum { N = 6 };
    void *privs[N] = {NULL};
    *text = NULL;
    char *cwd = getcwd(NULL, 0);
    if (!cwd)
        return dfx_error_set(DFX_ERR_IO, "%s: cannot name the current folder for the stored pipeline's paths: "
                                         "%s", out_path, strerror(errno));
    /* a copy that is only dumped, never released: its path fields and the
     * components' options point at new strings and copies */
    dfx_pipeline c = *p;
    dfx__instance *insts[N] = {&c.model, &c.scheduler, &c.sampler, &c.conditioner, &c.guidance, &c.codec};
    const bool present[N] = {p->has_model, true, p->has_sampler, p->has_conditioner, p->has_guidance, p->has_codec};
    bool ok = true;
    for (int i = 0; i < N && ok; i++) {
        const dfx_component *comp = insts[i]->comp;
        if (!present[i] || !comp->priv_size)
            continue;
        ok = (privs[i] = malloc(comp->priv_size)) != NULL;
        if (ok) {
            memcpy(privs[i], insts[i]->priv, comp->priv_size);
            insts[i]->priv = privs[i];
            ok = absolute_paths(comp->options, privs[i], cwd, owned, &nowned, MAX_OWNED);
        }
    }
    c.output.path = (char *)out_path;
    ok = ok && absolute_paths(task_options, &c.task, cwd, owned, &nowned, MAX_OWNED) &&
         absolute_paths(model_core_options, &c.mcore, cwd, owned, &nowned, MAX_OWNED) &&
         absolute_paths(scheduler_core_options, &c.score, cwd, owned, &nowned, MAX_OWNED) &&
         absolute_paths(sampler_core_options, &c.pcore, cwd, owned, &nowned, MAX_OWNED) &&
         absolute_paths(init_options, &c.init, cwd, owned, &nowned, MAX_OWNED) &&
         absolute_paths(output_options, &c.output, cwd, owned, &nowned, MAX_OWNED);
    int64_t shape[DFX_MAX_DIMS];
    if (ok && image >= 0) {
        c.task.seed += image;
        c.task.batch = 1;
        if (c.task.shape.n > 0 && c.task.shape.n <= DFX_MAX_DIMS) {
            memcpy(shape, c.task.shape.v, (size_t)c.task.shape.n * sizeof *shape);
            shape[0] = 1;
            c.task.shape.v = shape;
        }
    }
    if (ok)
        *text = resolved_text(&c);
    for (size_t i = 0; i < nowned; i++)
        free(owned[i]);
    for (int i = 0; i < N; i++)
        free(privs[i]);
    free(cwd);
    return *text ? DFX_OK : dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory for the stored pipeline", out_path);
}

/* Option `name` of a component instance as YAML text in buf, or NULL when
 * it has no such option. */
static const char *option_text(const dfx__instance *inst, const char *name, char *buf, size_t size)
{
    for (const dfx_option *o = inst->comp->options; o && o->name; o++) {
        if (strcmp(o->name, name) == 0) {
            dfx__option_format(o, inst->priv, buf, size);
            return buf;
        }
    }
    return NULL;
}

/* What A1111 would write for this run (strings borrowed from p or held in
 * `model`, the checkpoint's name: its file or folder name without the
 * extension, else the model component's). */
static void a1111_of(const dfx_pipeline *p, dfx__a1111_params *a, char *model, size_t size)
{
    char noise[64], skip[64], sigmas[64], path[4096];
    memset(a, 0, sizeof *a);
    a->steps = p->score.steps;
    a->sampler = dfx__a1111_sampler_name(p->sampler.comp->name, option_text(&p->sampler, "noise", noise, sizeof noise),
                                         option_text(&p->sampler, "skip_prk", skip, sizeof skip));
    a->schedule = dfx__a1111_schedule_name(option_text(&p->scheduler, "sigmas", sigmas, sizeof sigmas));
    a->cfg_scale = NAN;
    a->denoising_strength = p->init.image ? p->init.strength : NAN;
    a->seed = p->task.seed;
    if (p->has_conditioner) {
        const dfx_conditioner_ops *ops = p->conditioner.comp->ops;
        dfx_conditioner_info ci = {NULL, NULL};
        if (ops->info)
            ops->info(p->conditioner.priv, &ci);
        a->prompt = ci.prompt;
        a->negative_prompt = ci.negative_prompt;
    }
    if (p->has_guidance) {
        const dfx_guidance_ops *ops = p->guidance.comp->ops;
        if (ops->scale)
            a->cfg_scale = ops->scale(p->guidance.priv);
    }
    const char *mp = option_text(&p->model, "path", path, sizeof path);
    if (mp && strcmp(mp, "null") != 0) {
        size_t n = strlen(mp);
        while (n > 1 && mp[n - 1] == '/')
            n--;
        const char *base = mp;
        for (size_t i = 0; i < n; i++)
            if (mp[i] == '/')
                base = mp + i + 1;
        size_t len = (size_t)(mp + n - base);
        const char *dot = memchr(base, '.', len);
        if (dot && dot != base && (strncmp(dot, ".safetensors", 12) == 0 || strncmp(dot, ".ckpt", 5) == 0 ||
                                   strncmp(dot, ".pt", 3) == 0 || strncmp(dot, ".bin", 4) == 0))
            len = (size_t)(dot - base);
        if (*base == '"' && len > 1)
            base++, len--;
        snprintf(model, size, "%.*s", (int)len, base);
    } else {
        snprintf(model, size, "%s", p->model.comp->name);
    }
    a->model = model;
}

static dfx_status write_plot(const dfx_pipeline *p, const dfx_tensor *x)
{
    enum { SIZE = 768 };
    const dfx_model_ops *mops = p->model.comp->ops;
    unsigned char *rgb = malloc((size_t)SIZE * SIZE * 3);
    if (!rgb)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory for the plot");
    dfx_status st = dfx__plot_points(rgb, SIZE, SIZE, x->data, x->shape[0], mops->log_density, p->model.priv);
    if (st) {
        free(rgb);
        return dfx_error_prefix(st, "%s: ", p->output.path);
    }
    /* the A1111-style summary (no Size: the points are not the picture),
     * and the pipeline that re-runs it */
    dfx__a1111_params a;
    char model[256];
    a1111_of(p, &a, model, sizeof model);
    char *params = dfx__a1111_text(&a), *yaml = NULL;
    if (!params)
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    else if (!(st = stored_pipeline(p, -1, p->output.path, &yaml))) {
        const dfx__png_text text[] = {{"parameters", params}, {"dfx", yaml}};
        st = dfx__png_write(p->output.path, rgb, SIZE, SIZE, 3, text, 2);
    }
    free(params);
    free(yaml);
    free(rgb);
    return st;
}

/* Whether image k's stored pipeline can be that image alone (see
 * stored_pipeline): per_image noise drawn by the run, and seed + k still a
 * valid seed. */
static bool image_alone(const dfx_pipeline *p, int64_t batch)
{
    return batch > 1 && p->task.noise == NOISE_PER_IMAGE && !p->init.noise && p->task.seed <= INT64_MAX - batch;
}

/* Images [B, C, H, W] as PNG files: output.path itself when B = 1, else
 * NAME-0000.png, NAME-0001.png, ... from NAME.png; all of them or none
 * (dfx__png_write_batch). Each carries its A1111 `parameters` and the
 * pipeline that re-runs it (`dfx`). */
/* The batch as one PNG: rows of output.grid images, 2 pixels apart. */
static dfx_status write_grid(const dfx_pipeline *p, const dfx_tensor *x)
{
    const int64_t batch = x->shape[0], c = x->shape[1], h = x->shape[2], w = x->shape[3];
    const int64_t cols = p->output.grid < batch ? p->output.grid : batch;
    const int64_t rows = (batch + cols - 1) / cols, gap = 2;
    const int64_t gw = cols * w + (cols - 1) * gap, gh = rows * h + (rows - 1) * gap;
    const size_t per = (size_t)(c * h * w);
    const char *path = p->output.path;
    if (gw > INT32_MAX / (c > 0 ? c : 1) || gh > INT32_MAX)
        return dfx_error_set(DFX_ERR_RANGE, "%s: a grid of %lld x %lld pixels is too large", path,
                             (long long)gw, (long long)gh);
    unsigned char *tile = malloc(per), *grid = calloc((size_t)(gw * gh * c), 1);
    char *params = NULL, *yaml = NULL;
    dfx_status st = DFX_OK;
    if (!tile || !grid)
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory for the grid", path);
    for (int64_t k = 0; k < batch && !st; k++) {
        image_pixels((const float *)x->data + (size_t)k * per, c, h, w, tile);
        const int64_t y0 = k / cols * (h + gap), x0 = k % cols * (w + gap);
        for (int64_t y = 0; y < h; y++)
            memcpy(grid + ((y0 + y) * gw + x0) * c, tile + y * w * c, (size_t)(w * c));
    }
    dfx__a1111_params a;
    char model[256];
    a1111_of(p, &a, model, sizeof model);
    a.seed = p->task.seed;
    a.width = w;
    a.height = h;
    if (!st && !(params = dfx__a1111_text(&a)))
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", path);
    if (!st)
        st = stored_pipeline(p, -1, path, &yaml);
    if (!st) {
        dfx__png_text text[2] = {{"parameters", params}, {"dfx", yaml}};
        dfx__png_item item = {path, grid, (int)gw, (int)gh, (int)c, text, 2};
        st = dfx__png_write_batch(&item, 1);
    }
    free(params);
    free(yaml);
    free(tile);
    free(grid);
    return st;
}

static dfx_status write_images(const dfx_pipeline *p, const dfx_tensor *x)
{
    if (p->output.grid > 0 && x->shape[0] > 1)
        return write_grid(p, x);
    const int64_t batch = x->shape[0], c = x->shape[1], h = x->shape[2], w = x->shape[3];
    const size_t per = (size_t)(c * h * w);
    const char *path = p->output.path;
    const size_t stem = strlen(path) - 4; /* check_output saw ".png" */
    const bool alone = image_alone(p, batch);
    dfx_status st = DFX_OK;
    unsigned char *pixels = malloc((size_t)batch * per);
    dfx__png_item *items = calloc((size_t)batch, sizeof *items);
    dfx__png_text *text = calloc((size_t)batch * 2, sizeof *text);
    char **strings = calloc((size_t)batch * 3, sizeof *strings); /* name, parameters, pipeline */
    if (!pixels || !items || !text || !strings)
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory for %lld images", path, (long long)batch);
    for (int64_t k = 0; k < batch && !st; k++) {
        char **name = &strings[3 * k], **params = name + 1, **yaml = name + 2;
        size_t n = strlen(path) + 32;
        if ((*name = malloc(n))) {
            if (batch == 1)
                snprintf(*name, n, "%s", path);
            else
                snprintf(*name, n, "%.*s-%04lld%s", (int)stem, path, (long long)k, path + stem);
        }
        image_pixels((const float *)x->data + (size_t)k * per, c, h, w, pixels + (size_t)k * per);
        dfx__a1111_params a;
        char model[256];
        a1111_of(p, &a, model, sizeof model);
        a.seed = alone ? p->task.seed + k : p->task.seed;
        a.width = w;
        a.height = h;
        if (!*name || !(*params = dfx__a1111_text(&a))) {
            st = dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", path);
            break;
        }
        /* a shared batch is re-run whole: its pipeline names the batch's path */
        if ((st = alone ? stored_pipeline(p, k, *name, yaml) : stored_pipeline(p, -1, path, yaml)))
            break;
        text[2 * k] = (dfx__png_text){"parameters", *params};
        text[2 * k + 1] = (dfx__png_text){"dfx", *yaml};
        items[k] = (dfx__png_item){*name, pixels + (size_t)k * per, (int)w, (int)h, (int)c, &text[2 * k], 2};
    }
    if (!st)
        st = dfx__png_write_batch(items, (int)batch);
    for (int64_t i = 0; strings && i < 3 * batch; i++)
        free(strings[i]);
    free(strings);
    free(text);
    free(items);
    free(pixels);
    return st;
}

/* The samples (tensor `samples`: the codec's latents when there is one)
 * and, for images, the image as diffusers' output_type="np" gives it
 * (tensor `image`: [B, H, W, C] float32 in [0, 1]), with the pipeline that
 * re-runs them in the metadata. `data` is the decoded samples (x itself
 * without a codec). */
static dfx_status write_tensors(const dfx_pipeline *p, const dfx_tensor *x, const dfx_tensor *data)
{
    const char *path = p->output.path;
    dfx_tensor *img = NULL;
    dfx_status st = DFX_OK;
    if (image_shaped(data->ndim, data->shape)) {
        const int64_t b = data->shape[0], c = data->shape[1], h = data->shape[2], w = data->shape[3];
        const int64_t nhwc[4] = {b, h, w, c};
        if ((st = dfx_tensor_create(&img, DFX_DTYPE_F32, 4, nhwc)))
            return st;
        const float *src = data->data;
        float *dst = img->data;
        for (int64_t n = 0; n < b; n++)
            for (int64_t y = 0; y < h; y++)
                for (int64_t i = 0; i < w; i++)
                    for (int64_t k = 0; k < c; k++)
                        *dst++ = denormalize(src[((n * c + k) * h + y) * w + i]);
    }
    char *yaml;
    if (!(st = stored_pipeline(p, -1, path, &yaml))) {
        const char *names[] = {"samples", "image"};
        const dfx_tensor *ts[] = {x, img};
        const char *mk[] = {"dfx_pipeline"};
        const char *mv[] = {yaml};
        st = dfx_safetensors_write(path, img ? 2 : 1, names, ts, 1, mk, mv);
        free(yaml);
    }
    dfx_tensor_destroy(img);
    return st;
}

static dfx_status write_samples(const dfx_pipeline *p, const dfx_tensor *x, const dfx_tensor *data)
{
    if (!has_ext(p->output.path, ".png"))
        return write_tensors(p, x, data);
    return data->ndim == 2 ? write_plot(p, data) : write_images(p, data);
}

/* The run's sample shape: `shape` as given, else [batch] + the model's
 * sample shape, its height and width set by `width` and `height` (those of
 * the decoded images when there is a codec; the init image's when not
 * given). */
static dfx_status sample_shape(const dfx_pipeline *p, const dfx_model_info *info, const dfx_codec_info *ci,
                               int64_t img_w, int64_t img_h, int *ndim, int64_t *shape)
{
    const int64_t f = ci ? ci->downscale : 1;
    int64_t width = p->task.width ? p->task.width : img_w, height = p->task.height ? p->task.height : img_h;
    if (p->task.shape.n) {
        if (p->task.width || p->task.height)
            return dfx_error_set(DFX_ERR_CONFIG, "%s: give shape or width/height, not both", p->origin);
        if (p->task.shape.n > DFX_MAX_DIMS)
            return dfx_error_set(DFX_ERR_CONFIG, "shape has %lld dimensions; at most %d", (long long)p->task.shape.n,
                                 DFX_MAX_DIMS);
        *ndim = (int)p->task.shape.n;
        memcpy(shape, p->task.shape.v, (size_t)*ndim * sizeof *shape);
    } else {
        if (!info->sample_ndim)
            return dfx_error_set(DFX_ERR_CONFIG, "%s has no fixed sample shape: give shape: [B, ...]", p->model.what);
        *ndim = info->sample_ndim + 1;
        shape[0] = p->task.batch;
        memcpy(shape + 1, info->sample_shape, (size_t)info->sample_ndim * sizeof *shape);
        if (width || height) {
            if (!info->any_size || *ndim < 3)
                return dfx_error_set(DFX_ERR_CONFIG, "%s makes samples of one size only: width and height do not "
                                                     "apply", p->model.what);
            int64_t *dims[2] = {&width, &height};
            const char *names[2] = {"width", "height"};
            for (int i = 0; i < 2; i++) {
                if (!*dims[i])
                    *dims[i] = shape[*ndim - 1 - i] * f;
                const int64_t v = *dims[i];
                if (v % f)
                    return dfx_error_set(DFX_ERR_CONFIG, "%s %lld is not a multiple of %lld (the codec's scale "
                                                         "factor): use %lld or %lld", names[i], (long long)v,
                                         (long long)f, (long long)(v / f * f > 0 ? v / f * f : f),
                                         (long long)(v / f * f + f));
                shape[*ndim - 1 - i] = v / f;
            }
        }
    }
    if (*ndim < 2)
        return dfx_error_set(DFX_ERR_CONFIG, "shape needs a batch and at least one more dimension, e.g. [1, 2]");
    if (info->sample_ndim) {
        bool ok = *ndim == info->sample_ndim + 1;
        const int fixed = info->any_size && info->sample_ndim >= 2 ? info->sample_ndim - 2 : info->sample_ndim;
        for (int i = 0; ok && i < fixed; i++)
            ok = shape[i + 1] == info->sample_shape[i];
        if (!ok)
            return dfx_error_set(DFX_ERR_CONFIG, "shape does not fit %s (its samples have %d dimensions%s)",
                                 p->model.what, info->sample_ndim,
                                 fixed < info->sample_ndim ? ", the leading ones fixed" : "");
    }
    if (ci && (*ndim != 4 || shape[1] != ci->latent_channels))
        return dfx_error_set(DFX_ERR_CONFIG, "%s encodes to [B, %lld, h, w] latents, which the sample shape does "
                                             "not match", p->codec.what, (long long)ci->latent_channels);
    return DFX_OK;
}

/* The conditioning of the run, checked against the model: a context of
 * the width it takes, one entry per batch item. */
static dfx_status conditioning(const dfx_pipeline *p, const dfx_model_info *info, int64_t batch,
                               dfx_conditioning *c)
{
    memset(c, 0, sizeof *c);
    if (!p->has_conditioner) {
        if (info->context_dim)
            return dfx_error_set(DFX_ERR_CONFIG, "%s takes %lld-wide text states: add a conditioner section (e.g. "
                                                 "conditioner: {type: clip_text, prompt: \"a lighthouse at dawn\"})",
                                 p->model.what, (long long)info->context_dim);
        return DFX_OK;
    }
    const dfx_guidance_ops *gops = p->has_guidance ? p->guidance.comp->ops : NULL;
    const bool uncond = gops && (!gops->needs_uncond || gops->needs_uncond(p->guidance.priv));
    const dfx_conditioner_ops *ops = p->conditioner.comp->ops;
    dfx_error_clear();
    dfx_status st = ops->encode(p->conditioner.priv, batch, uncond, c);
    if (st)
        return dfx_error_prefix(st, "%s: ", p->conditioner.what);
    const dfx_tensor *ts[] = {c->context, c->uncond_context, c->pooled, c->uncond_pooled};
    for (int i = 0; i < 4 && !st; i++) {
        const dfx_tensor *t = ts[i];
        if (!t)
            continue;
        if (t->dtype != DFX_DTYPE_F32 || t->ndim < 2 || t->shape[0] != batch ||
            (i < 2 && (t->ndim != 3 || (info->context_dim && t->shape[2] != info->context_dim)))) {
            char buf[128];
            st = dfx_error_set(DFX_ERR_CONFIG, "%s gives %s states %s, but %s takes [%lld, tokens, %lld]",
                               p->conditioner.what, i % 2 ? "unconditional" : "conditional",
                               dfx_tensor_shape_str(t, buf, sizeof buf), p->model.what, (long long)batch,
                               (long long)info->context_dim);
        }
    }
    if (!st && info->context_dim && !c->context)
        st = dfx_error_set(DFX_ERR_CONFIG, "%s gives no text states, which %s needs", p->conditioner.what,
                           p->model.what);
    if (!st && uncond && ((c->context && !c->uncond_context) || (c->pooled && !c->uncond_pooled) ||
                          (c->labels && !c->uncond_labels)))
        st = dfx_error_set(DFX_ERR_CONFIG, "%s gives no unconditional half, which guidance needs",
                           p->conditioner.what);
    if (st)
        dfx_conditioning_fini(c);
    return st;
}

/* A PNG as the data a run starts from: [1, C, H, W] in [-1, 1] as
 * diffusers' image processor makes it (x / 255 * 2 - 1 in float32); C = 3
 * (gray replicated, alpha dropped, as PIL's convert("RGB")) or 1 for gray
 * models. */
static dfx_status image_tensor(const dfx__png_image *img, int64_t channels, dfx_tensor **out)
{
    const int64_t shape[4] = {1, channels, img->height, img->width};
    dfx_status st = dfx_tensor_create(out, DFX_DTYPE_F32, 4, shape);
    if (st)
        return st;
    const int64_t hw = (int64_t)img->width * img->height;
    const int gray = img->channels < 3;
    float *d = (*out)->data;
    for (int64_t i = 0; i < hw; i++) {
        const unsigned char *px = img->pixels + i * img->channels;
        for (int64_t k = 0; k < channels; k++) {
            const unsigned char v = channels == 1 ? (gray ? px[0] : (unsigned char)((px[0] * 299 + px[1] * 587 +
                                                                                    px[2] * 114 + 500) / 1000))
                                                  : px[gray ? 0 : k];
            d[k * hw + i] = 2.0f * ((float)v / 255.0f) - 1.0f;
        }
    }
    return DFX_OK;
}

/* The clean samples img2img starts from, [B, ...] like x: the init image,
 * through the codec's encoder (its posterior sample drawn first from each
 * item's generator, as diffusers draws it before the noise). */
static dfx_status init_samples(const dfx_pipeline *p, const dfx__png_image *img, dfx_rng **rngs, int64_t nrngs,
                               const dfx_tensor *like, dfx_tensor **out)
{
    const int64_t batch = like->shape[0];
    const dfx_codec_ops *cops = p->has_codec ? p->codec.comp->ops : NULL;
    dfx_codec_info ci = {0, 1, like->shape[1]};
    if (cops)
        cops->info(p->codec.priv, &ci);
    if (!cops && like->shape[1] != 1 && like->shape[1] != 3)
        return dfx_error_set(DFX_ERR_CONFIG, "init.image: %s samples have %lld channels, not an image's",
                             p->model.what, (long long)like->shape[1]);
    if (cops && !cops->encode)
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "init.image: %s cannot encode images", p->codec.what);
    dfx_tensor *pix = NULL;
    dfx_status st = image_tensor(img, ci.data_channels, &pix);
    if (!st)
        st = dfx_tensor_create_like(out, like);
    const int64_t per = st ? 0 : dfx_tensor_numel(*out) / batch;
    for (int64_t i = 0; i < batch && !st; i++) {
        dfx_tensor item = **out;
        item.shape[0] = 1;
        item.data = (float *)(*out)->data + i * per;
        if (i > 0 && nrngs == 1) {
            memcpy(item.data, (*out)->data, (size_t)per * sizeof(float));
        } else if (!cops) {
            memcpy(item.data, pix->data, (size_t)per * sizeof(float));
        } else {
            dfx_error_clear();
            if ((st = cops->encode(p->codec.priv, pix, rngs[nrngs == 1 ? 0 : i], &item)))
                dfx_error_prefix(st, "init.image: %s: ", p->codec.what);
        }
    }
    dfx_tensor_destroy(pix);
    if (st) {
        dfx_tensor_destroy(*out);
        *out = NULL;
    }
    return st;
}

/* The steps from level t0 on, as a view of s (img2img). */
static dfx_schedule schedule_from(const dfx_schedule *s, int64_t t0)
{
    dfx_schedule v = *s;
    v.steps -= t0;
    v.levels += t0;
    v.targets = v.targets ? v.targets + t0 : NULL;
    v.time = v.time ? v.time + t0 : NULL;
    v.time_to = v.time_to ? v.time_to + t0 : NULL;
    v.sde_f = v.sde_f ? v.sde_f + t0 : NULL;
    v.sde_g2 = v.sde_g2 ? v.sde_g2 + t0 : NULL;
    return v;
}

/* data [B, ...] = the codec's decoding of x, one item at a time so that
 * memory does not grow with the batch. */
static dfx_status decode(const dfx_pipeline *p, const dfx_tensor *x, const int64_t *dshape,
                         const dfx_run_params *rp, dfx_tensor **out)
{
    const dfx_codec_ops *cops = p->codec.comp->ops;
    const int64_t batch = x->shape[0];
    dfx_status st = dfx_tensor_create(out, DFX_DTYPE_F32, 4, dshape);
    if (st)
        return st;
    dfx__progress progress;
    dfx__progress_start(&progress, rp->progress, rp->progress_tty, "decoding", batch);
    const int64_t per_x = dfx_tensor_numel(x) / batch, per_d = dfx_tensor_numel(*out) / batch;
    for (int64_t i = 0; i < batch && !st; i++) {
        dfx_tensor z = *x, d = **out;
        z.shape[0] = d.shape[0] = 1;
        z.data = (float *)x->data + i * per_x;
        d.data = (float *)(*out)->data + i * per_d;
        dfx_error_clear();
        if ((st = cops->decode(p->codec.priv, &z, &d)))
            dfx_error_prefix(st, "%s: ", p->codec.what);
        else if (!dfx_ops_all_finite(d.data, per_d))
            st = dfx_error_set(DFX_ERR_NUMERIC, "%s: the decoding of item %lld is not finite", p->codec.what,
                               (long long)i);
        else if (dfx__abort_flag)
            st = dfx_error_set(DFX_ERR_ABORTED, "interrupted while decoding");
        else
            dfx__progress_tick(&progress);
    }
    if (progress.out && progress.tty && st)
        fputc('\n', progress.out);
    if (!st)
        dfx__progress_end(&progress);
    if (st) {
        dfx_tensor_destroy(*out);
        *out = NULL;
    }
    return st;
}

static dfx_status run_sample(dfx_pipeline *p, const dfx_run_params *rp)
{
    dfx_schedule sched = {0};
    dfx_model_info info;
    dfx_codec_info ci = {0};
    dfx__png_image img = {0};
    dfx_conditioning cond = {0};
    const dfx_model_ops *mops = p->model.comp->ops;
    const dfx_sampler_ops *sops = p->sampler.comp->ops;
    const dfx_codec_ops *cops = p->has_codec ? p->codec.comp->ops : NULL;
    int64_t shape[DFX_MAX_DIMS], dshape[DFX_MAX_DIMS];
    int ndim = 0;
    dfx_rng *rngs_small[1] = {NULL};
    dfx_rng **rngs = rngs_small;
    int64_t nrngs = 0;
    dfx_tensor *x = NULL, *x0 = NULL, *data = NULL;
    dfx__trace *trace = NULL;
    dfx_sampling *s = NULL;
    dfx_status st;

    mops->info(p->model.priv, &info);
    if (cops)
        cops->info(p->codec.priv, &ci);
    if (p->init.image && (st = dfx__png_read(p->init.image, &img))) {
        dfx_error_prefix(st, "init.image: ");
        goto done;
    }
    if ((st = sample_shape(p, &info, cops ? &ci : NULL, img.width, img.height, &ndim, shape)))
        goto done;
    memcpy(dshape, shape, sizeof dshape);
    if (cops) {
        dshape[1] = ci.data_channels;
        dshape[2] *= ci.downscale;
        dshape[3] *= ci.downscale;
    }
    if (p->init.image && (ndim != 4 || dshape[3] != img.width || dshape[2] != img.height)) {
        st = dfx_error_set(DFX_ERR_CONFIG, "init.image '%s' is %dx%d but the run makes %lldx%lld images (dfx "
                                           "does not resize: give an image of that size, or leave width and "
                                           "height out)", p->init.image, img.width, img.height,
                           (long long)(ndim == 4 ? dshape[3] : 0), (long long)(ndim == 4 ? dshape[2] : 0));
        goto done;
    }
    if ((st = check_output(p, ndim, dshape)) || (st = dfx_pipeline_plan(p, 0, &sched)))
        goto done;
    const int64_t batch = shape[0];
    /* img2img: the last int(steps * strength) steps run (diffusers' get_timesteps) */
    int64_t t0 = 0;
    if (p->init.image) {
        const int64_t keep = (int64_t)((double)sched.steps * p->init.strength);
        t0 = sched.steps - (keep < sched.steps ? keep : sched.steps);
        if (t0 >= sched.steps) {
            st = dfx_error_set(DFX_ERR_CONFIG, "init.strength %g of %lld steps runs no step: raise strength or "
                                               "steps", p->init.strength, (long long)sched.steps);
            goto done;
        }
    }

    nrngs = p->task.noise == NOISE_PER_IMAGE ? batch : 1;
    if (nrngs > 1 && !(rngs = calloc((size_t)nrngs, sizeof *rngs))) {
        nrngs = 0;
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < nrngs && !st; i++)
        st = dfx_rng_create(&rngs[i], (uint64_t)p->task.seed + (uint64_t)i);
    if (st || (st = conditioning(p, &info, batch, &cond)))
        goto done;

    dfx_tensor want = dfx_tensor_view(DFX_DTYPE_F32, ndim, shape, NULL);
    if (p->init.image && (st = init_samples(p, &img, rngs, nrngs, &want, &x0)))
        goto done;
    if (p->init.noise) {
        if ((st = read_tensor_ref(p->init.noise, &x))) {
            dfx_error_prefix(st, "init.noise: ");
            goto done;
        }
        if (!dfx_tensor_same_shape(x, &want)) {
            char a[128], b[128];
            st = dfx_error_set(DFX_ERR_CONFIG, "init.noise '%s' has shape %s but the run samples %s", p->init.noise,
                               dfx_tensor_shape_str(x, a, sizeof a), dfx_tensor_shape_str(&want, b, sizeof b));
            goto done;
        }
    } else {
        if ((st = dfx_tensor_create(&x, DFX_DTYPE_F32, ndim, shape)))
            goto done;
        int64_t per = dfx_tensor_numel(x) / batch;
        if (nrngs == 1)
            dfx_rng_normal(rngs[0], x->data, dfx_tensor_numel(x));
        else
            for (int64_t i = 0; i < batch; i++)
                dfx_rng_normal(rngs[i], (float *)x->data + i * per, per);
    }

    const dfx_level *l0 = &sched.levels[t0];
    if (x0) {
        /* the image noised to the first level that runs (add_noise) */
        const float a = (float)l0->alpha, b = (float)l0->sigma;
        float *xd = x->data;
        const float *cd = x0->data;
        for (int64_t i = 0, n = dfx_tensor_numel(x); i < n; i++)
            xd[i] = a * cd[i] + b * xd[i];
    } else {
        int mode = p->init.scale;
        if (mode == SCALE_AUTO)
            mode = sched.init_noise == DFX_INIT_NOISE_UNIT    ? SCALE_UNIT
                   : sched.init_noise == DFX_INIT_NOISE_SIGMA ? SCALE_SIGMA
                   : sops->init_noise && sops->init_noise(p->sampler.priv) == DFX_INIT_NOISE_SIGMA ? SCALE_SIGMA
                                                                                                  : SCALE_UNIT;
        double k = mode != SCALE_SIGMA ? sqrt(l0->alpha * l0->alpha + l0->sigma * l0->sigma)
                   : sched.init_sigma > 0 ? sched.init_sigma
                                          : l0->sigma;
        if ((float)k != 1.0f)
            dfx_ops_scale(x->data, x->data, k, dfx_tensor_numel(x));
    }

    if (rp->trace_path && (st = dfx__trace_create(&trace)))
        goto done;
    const dfx_schedule run = schedule_from(&sched, t0);
    dfx__progress progress;
    int64_t total = sops->evaluations ? sops->evaluations(p->sampler.priv, &run) : run.steps;
    dfx__progress_start(&progress, rp->progress, rp->progress_tty, "sampling", total);
    dfx__sampling_params sp = {&p->model, p->prediction, &p->scheduler, rngs, nrngs, trace, &progress,
                               p->has_conditioner ? &cond : NULL, p->has_guidance ? &p->guidance : NULL};
    if ((st = dfx__sampling_create(&s, &sp, x)))
        goto done;
    dfx_error_clear();
    st = sops->sample(p->sampler.priv, s, &run, x);
    if (st && progress.out && progress.tty)
        fputc('\n', progress.out); /* end the progress line before the message */
    if (st) {
        if (st != DFX_ERR_ABORTED && st != DFX_ERR_NUMERIC)
            dfx_error_prefix(st, "%s: ", p->sampler.what);
        goto done;
    }
    dfx__progress_end(&progress);
    if (!dfx_ops_all_finite(x->data, dfx_tensor_numel(x))) {
        st = dfx_error_set(DFX_ERR_NUMERIC, "%s: the final sample is not finite", p->sampler.what);
        goto done;
    }
    if (cops && (p->output.path || trace) && (st = decode(p, x, dshape, rp, &data)))
        goto done;
    if (trace && data && (st = dfx__trace_add(trace, "decoded", data)))
        goto done;
    if (p->output.path && (st = write_samples(p, x, data ? data : x)))
        goto done;
    if (trace)
        st = dfx__trace_write(trace, rp->trace_path);
done:
    dfx__sampling_destroy(s);
    dfx__trace_destroy(trace);
    dfx_tensor_destroy(x);
    dfx_tensor_destroy(x0);
    dfx_tensor_destroy(data);
    dfx_conditioning_fini(&cond);
    for (int64_t i = 0; i < nrngs; i++)
        dfx_rng_destroy(rngs[i]);
    if (rngs != rngs_small)
        free(rngs);
    dfx__png_image_fini(&img);
    dfx_schedule_fini(&sched);
    return st;
}

static dfx_status run_schedule(dfx_pipeline *p)
{
    dfx_schedule s;
    dfx_status st = dfx_pipeline_plan(p, 0, &s);
    if (st)
        return st;
    const int64_t n = s.steps;
    printf("%s, %lld steps\n", p->scheduler.what, (long long)n);
    printf("%6s %14s %14s %14s %14s %16s\n", "level", "t_model", "alpha", "sigma", "sigma/alpha", "alpha_bar");
    for (int64_t i = 0; i <= n; i++) {
        const dfx_level *l = &s.levels[i];
        double nn = l->alpha * l->alpha + l->sigma * l->sigma;
        printf("%6lld %14.6f %14.9f %14.9f %14.6g %16.10g%s\n", (long long)i, l->t_model, l->alpha, l->sigma,
               dfx__level_sigma(l), l->alpha * l->alpha / nn, i == n ? "  (end)" : "");
    }
    if (p->output.path) {
        /* diffusers' names: timesteps, sigmas (k-diffusion form, ending in
         * the last level), alphas_cumprod of the levels and of training */
        dfx_tensor *t = NULL, *sig = NULL, *ab = NULL, *tab = NULL;
        int64_t a = n, b = n + 1;
        if (!(st = dfx_tensor_create(&t, DFX_DTYPE_F64, 1, &a)) &&
            !(st = dfx_tensor_create(&sig, DFX_DTYPE_F64, 1, &b)) &&
            !(st = dfx_tensor_create(&ab, DFX_DTYPE_F64, 1, &b)) &&
            !(st = dfx_tensor_create(&tab, DFX_DTYPE_F64, 1, &s.train_steps))) {
            for (int64_t i = 0; i <= n; i++) {
                const dfx_level *l = &s.levels[i];
                if (i < n)
                    ((double *)t->data)[i] = l->t_model;
                ((double *)sig->data)[i] = dfx__level_sigma(l);
                ((double *)ab->data)[i] = l->alpha * l->alpha / (l->alpha * l->alpha + l->sigma * l->sigma);
            }
            if (s.train_steps)
                memcpy(tab->data, s.train_alpha_bar, (size_t)s.train_steps * sizeof(double));
            const char *names[] = {"timesteps", "sigmas", "level_alphas_cumprod", "alphas_cumprod"};
            const dfx_tensor *ts[] = {t, sig, ab, tab};
            st = dfx_safetensors_write(p->output.path, s.train_steps ? 4 : 3, names, ts, 0, NULL, NULL);
        }
        dfx_tensor_destroy(t);
        dfx_tensor_destroy(sig);
        dfx_tensor_destroy(ab);
        dfx_tensor_destroy(tab);
    }
    dfx_schedule_fini(&s);
    return st;
}

static dfx_status run_train(dfx_pipeline *p, const dfx_run_params *rp)
{
    if (!p->output.path)
        return dfx_error_set(DFX_ERR_CONFIG, "%s: where do the checkpoints go? Set output.path to a folder "
                                             "(e.g. --set output.path=out/model)", p->origin);
    dfx_schedule sched = {0};
    dfx_status st = p->scheduler.comp ? dfx_pipeline_plan(p, 1, &sched) : DFX_OK;
    if (!st && p->scheduler.comp && !sched.train_steps) {
        /* a continuous schedule: training draws from 1000 of its levels */
        dfx_schedule_fini(&sched);
        st = dfx_pipeline_plan(p, 1000, &sched);
    }
    char *text = st ? NULL : resolved_text(p);
    if (!st && !text)
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    if (!st) {
        const dfx__train_job job = {
            .origin = p->origin,
            .model = &p->model,
            .prediction = p->prediction,
            .schedule = &sched,
            .seed = (uint64_t)p->task.seed,
            .data = &p->data,
            .opts = &p->train,
            .out = p->output.path,
            .pipeline_text = text,
            .resume = rp->resume,
            .progress = rp->progress,
            .progress_tty = rp->progress_tty,
        };
        st = dfx__train_run(&job);
    }
    free(text);
    dfx_schedule_fini(&sched);
    return st;
}

dfx_status dfx_pipeline_run(dfx_pipeline *p, const dfx_run_params *params)
{
    dfx_run_params defaults;
    if (!p->resolved)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "the pipeline is not resolved");
    if (!params) {
        dfx_run_params_init(&defaults);
        params = &defaults;
    }
    if (p->task.pipeline == TASK_SCHEDULE)
        return run_schedule(p);
    if (p->task.pipeline == TASK_TRAIN)
        return run_train(p, params);
    if (!p->output.path && !params->trace_path)
        return dfx_error_set(DFX_ERR_CONFIG, "%s: nothing to write: set output.path (e.g. --set output.path=out.safetensors)",
                             p->origin);
    return run_sample(p, params);
}

void dfx_pipeline_destroy(dfx_pipeline *p)
{
    if (!p)
        return;
    if (p->resolved)
        release_resolved(p);
    dfx__node_free(p->root);
    free(p->origin);
    free(p);
}
