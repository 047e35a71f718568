/* Pipelines: the YAML tree with --set overrides, its validation against the
 * core's own option tables and the components' tables, instantiation from
 * the registry, the resolved dump, and the task runners. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core/base/options.h"
#include "core/internal.h"
#include "core/run/run.h"
#include "dfx/safetensors.h"

enum { TASK_SAMPLE, TASK_SCHEDULE };
enum { NOISE_SHARED, NOISE_PER_IMAGE };
enum { SCALE_AUTO, SCALE_UNIT, SCALE_SIGMA };

typedef struct task_opts {
    int64_t dfx;
    int pipeline;
    int64_t seed;
    dfx_ints shape;
    int64_t batch;
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

typedef struct sampler_core {
    char *type;
} sampler_core;

typedef struct init_opts {
    char *noise;
    int scale;
} init_opts;

typedef struct output_opts {
    char *path;
} output_opts;

static const char *const task_names[] = {"sample", "schedule", NULL};
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
                  "the task: sample (draw samples) or schedule (plan the noise schedule only)"),
    DFX_OPTION_INT("seed", offsetof(task_opts, seed), 0, 0, 9223372036854775807.0,
                   "seed of the run's generator (torch.manual_seed)"),
    DFX_OPTION_INTS("shape", offsetof(task_opts, shape), 1, 1e9,
                    "shape of the sampled batch [B, ...]; default: [batch] + the model's sample shape"),
    DFX_OPTION_INT("batch", offsetof(task_opts, batch), 1, 1, 1e6, "batch size when shape is not given"),
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
    REQUIRED_STRING("type", offsetof(sampler_core, type), "the sampler component (`dfx list sampler`)"),
    DFX_OPTION_END,
};

static const dfx_option init_options[] = {
    DFX_OPTION_PATH("noise", offsetof(init_opts, noise),
                    "FILE.safetensors#tensor: start from this noise instead of drawing it"),
    DFX_OPTION_ENUM("scale", offsetof(init_opts, scale), SCALE_AUTO, scale_names,
                    "how the unit noise is scaled: as the scheduler/sampler say (diffusers' "
                    "init_noise_sigma), unit variance, or sigma_max"),
    DFX_OPTION_END,
};

static const dfx_option output_options[] = {
    DFX_OPTION_PATH("path", offsetof(output_opts, path),
                    "where the result goes: .safetensors (tensor 'samples'), .png (2-D points: a scatter "
                    "plot)"),
    DFX_OPTION_END,
};

void dfx_component_describe(const dfx_component *c, FILE *out)
{
    const dfx_option *core = c->kind == DFX_KIND_SCHEDULER ? scheduler_core_options
                             : c->kind == DFX_KIND_MODEL   ? model_core_options
                                                           : sampler_core_options;
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
    sampler_core pcore;
    init_opts init;
    output_opts output;
    bool has_model, has_sampler, has_init, has_output;
    dfx__instance model, scheduler, sampler;
    dfx_prediction prediction;
    dfx__node *implied_sched;   /* the scheduler section a model folder implied */
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

/* ---- resolution ------------------------------------------------------- */

static const char *const top_sections[] = {"model", "scheduler", "sampler", "init", "output", NULL};

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
    dfx__options_free(task_options, &p->task);
    dfx__options_free(model_core_options, &p->mcore);
    dfx__options_free(scheduler_core_options, &p->score);
    dfx__options_free(sampler_core_options, &p->pcore);
    dfx__options_free(init_options, &p->init);
    dfx__options_free(output_options, &p->output);
    dfx__node_free(p->implied_sched);
    p->implied_sched = NULL;
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
    dfx__options_defaults(init_options, &p->init);
    dfx__options_defaults(output_options, &p->output);
    p->prediction = DFX_PREDICTION_AUTO;

    if ((st = check_top_keys(p)) ||
        (st = dfx__options_check_required(task_options, p->root, "the pipeline",
                                          dfx__node_where(p->root, where, sizeof where))) ||
        (st = dfx__options_apply(task_options, &p->task, p->root, "the pipeline", top_sections)))
        goto fail;
    if ((st = section_map(p->root, "model", &sec)))
        goto fail;
    if (p->task.pipeline == TASK_SAMPLE) {
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
    /* the scheduler: as the pipeline says, else the one that came with the
     * model's weights */
    const char *model_sched = NULL;
    if (p->has_model) {
        dfx_model_info info;
        ((const dfx_model_ops *)p->model.comp->ops)->info(p->model.priv, &info);
        model_sched = info.scheduler_config;
    }
    if ((st = resolve_scheduling(p, reg, model_sched)))
        goto fail;
    if ((st = resolve_plain_section(p, "init", init_options, &p->init, &p->has_init)) ||
        (st = resolve_plain_section(p, "output", output_options, &p->output, &p->has_output)))
        goto fail;

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
    model_core mc;
    scheduler_core sc;
    sampler_core pc;
    const dfx_option *core = kind == DFX_KIND_MODEL ? model_core_options
                             : kind == DFX_KIND_SCHEDULER ? scheduler_core_options
                                                          : sampler_core_options;
    void *core_priv = kind == DFX_KIND_MODEL ? (void *)&mc : kind == DFX_KIND_SCHEDULER ? (void *)&sc : (void *)&pc;
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
    sc.type = (char *)p->scheduler.comp->name;
    dump_section(out, "scheduler", scheduler_core_options, &sc, &p->scheduler);
    if (p->has_sampler) {
        sampler_core pc = {(char *)p->sampler.comp->name};
        dump_section(out, "sampler", sampler_core_options, &pc, &p->sampler);
    }
    if (p->task.pipeline == TASK_SAMPLE)
        dump_section(out, "init", init_options, &p->init, NULL);
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

/* Whether output.path can take samples of this shape: called before
 * sampling, so a run does not end in an error it could have given first. */
static dfx_status check_output(const dfx_pipeline *p, int ndim, const int64_t *shape)
{
    const char *path = p->output.path;
    if (!path || has_ext(path, ".safetensors"))
        return DFX_OK;
    if (!has_ext(path, ".png"))
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "output.path '%s': unsupported extension (use .safetensors, "
                                                  "or .png for 2-D points)", path);
    if (ndim != 2 || shape[1] != 2) {
        dfx_tensor t = dfx_tensor_view(DFX_DTYPE_F32, ndim, shape, NULL);
        char buf[128];
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "output.path '%s': PNG output draws 2-D points; these samples "
                                                  "are %s (write .safetensors instead)", path,
                             dfx_tensor_shape_str(&t, buf, sizeof buf));
    }
    return DFX_OK;
}

static dfx_status write_png(const dfx_pipeline *p, const dfx_tensor *x)
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
    /* the A1111-style summary, and the resolved pipeline that re-runs it */
    char params[512];
    snprintf(params, sizeof params, "Steps: %lld, Sampler: %s, Scheduler: %s, Seed: %lld, Model: %s",
             (long long)p->score.steps, p->sampler.comp->name, p->scheduler.comp->name, (long long)p->task.seed,
             p->model.comp->name);
    char *yaml = resolved_text(p);
    if (!yaml) {
        free(rgb);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    }
    const dfx__png_text text[] = {{"parameters", params}, {"dfx", yaml}};
    st = dfx__png_write(p->output.path, rgb, SIZE, SIZE, 3, text, 2);
    free(yaml);
    free(rgb);
    return st;
}

static dfx_status write_samples(const dfx_pipeline *p, const dfx_tensor *x)
{
    const char *path = p->output.path;
    dfx_status st = check_output(p, x->ndim, x->shape);
    if (st)
        return st;
    if (has_ext(path, ".png")) {
        st = write_png(p, x);
    } else {
        char *yaml = resolved_text(p);
        const char *names[] = {"samples"};
        const dfx_tensor *ts[] = {x};
        const char *mk[] = {"dfx_pipeline"};
        const char *mv[] = {yaml ? yaml : ""};
        st = dfx_safetensors_write(path, 1, names, ts, 1, mk, mv);
        free(yaml);
    }
    return st;
}

static dfx_status run_sample(dfx_pipeline *p, const dfx_run_params *rp)
{
    dfx_schedule sched;
    dfx_status st = dfx_pipeline_plan(p, 0, &sched);
    if (st)
        return st;
    dfx_model_info info;
    const dfx_model_ops *mops = p->model.comp->ops;
    const dfx_sampler_ops *sops = p->sampler.comp->ops;
    mops->info(p->model.priv, &info);

    int64_t shape[DFX_MAX_DIMS];
    int ndim;
    if (p->task.shape.n) {
        if (p->task.shape.n > DFX_MAX_DIMS) {
            dfx_schedule_fini(&sched);
            return dfx_error_set(DFX_ERR_CONFIG, "shape has %lld dimensions; at most %d", (long long)p->task.shape.n,
                                 DFX_MAX_DIMS);
        }
        ndim = (int)p->task.shape.n;
        memcpy(shape, p->task.shape.v, (size_t)ndim * sizeof *shape);
    } else {
        if (!info.sample_ndim) {
            dfx_schedule_fini(&sched);
            return dfx_error_set(DFX_ERR_CONFIG, "%s has no fixed sample shape: give shape: [B, ...]", p->model.what);
        }
        ndim = info.sample_ndim + 1;
        shape[0] = p->task.batch;
        memcpy(shape + 1, info.sample_shape, (size_t)info.sample_ndim * sizeof *shape);
    }
    if (info.sample_ndim) {
        bool ok = ndim == info.sample_ndim + 1;
        for (int i = 0; ok && i < info.sample_ndim; i++)
            ok = shape[i + 1] == info.sample_shape[i];
        if (!ok) {
            dfx_schedule_fini(&sched);
            return dfx_error_set(DFX_ERR_CONFIG, "shape does not fit %s (its samples have %d dimensions)",
                                 p->model.what, info.sample_ndim);
        }
    }
    if (ndim < 2) {
        dfx_schedule_fini(&sched);
        return dfx_error_set(DFX_ERR_CONFIG, "shape needs a batch and at least one more dimension, e.g. [1, 2]");
    }
    if ((st = check_output(p, ndim, shape))) {
        dfx_schedule_fini(&sched);
        return st;
    }
    const int64_t batch = shape[0];

    dfx_rng *rngs_small[1];
    dfx_rng **rngs = rngs_small;
    int64_t nrngs = p->task.noise == NOISE_PER_IMAGE ? batch : 1;
    dfx_tensor *x = NULL;
    dfx__trace *trace = NULL;
    dfx_sampling *s = NULL;
    if (nrngs > 1 && !(rngs = calloc((size_t)nrngs, sizeof *rngs))) {
        dfx_schedule_fini(&sched);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    }
    for (int64_t i = 0; i < nrngs && !st; i++)
        st = dfx_rng_create(&rngs[i], (uint64_t)p->task.seed + (uint64_t)i);
    if (st)
        goto done;

    if (p->init.noise) {
        if ((st = read_tensor_ref(p->init.noise, &x))) {
            dfx_error_prefix(st, "init.noise: ");
            goto done;
        }
        dfx_tensor want = dfx_tensor_view(DFX_DTYPE_F32, ndim, shape, NULL);
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

    int mode = p->init.scale;
    if (mode == SCALE_AUTO)
        mode = sched.init_noise == DFX_INIT_NOISE_UNIT    ? SCALE_UNIT
               : sched.init_noise == DFX_INIT_NOISE_SIGMA ? SCALE_SIGMA
               : sops->init_noise && sops->init_noise(p->sampler.priv) == DFX_INIT_NOISE_SIGMA ? SCALE_SIGMA
                                                                                              : SCALE_UNIT;
    const dfx_level *l0 = &sched.levels[0];
    double k = mode != SCALE_SIGMA ? sqrt(l0->alpha * l0->alpha + l0->sigma * l0->sigma)
               : sched.init_sigma > 0 ? sched.init_sigma
                                      : l0->sigma;
    if ((float)k != 1.0f)
        dfx_ops_scale(x->data, x->data, k, dfx_tensor_numel(x));

    if (rp->trace_path && (st = dfx__trace_create(&trace)))
        goto done;
    dfx__progress progress;
    int64_t total = sops->evaluations ? sops->evaluations(p->sampler.priv, &sched) : sched.steps;
    dfx__progress_start(&progress, rp->progress, rp->progress_tty, "sampling", total);
    dfx__sampling_params sp = {&p->model, p->prediction, &p->scheduler, rngs, nrngs, trace, &progress};
    if ((st = dfx__sampling_create(&s, &sp, x)))
        goto done;
    dfx_error_clear();
    st = sops->sample(p->sampler.priv, s, &sched, x);
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
    if (p->output.path && (st = write_samples(p, x)))
        goto done;
    if (trace)
        st = dfx__trace_write(trace, rp->trace_path);
done:
    dfx__sampling_destroy(s);
    dfx__trace_destroy(trace);
    dfx_tensor_destroy(x);
    for (int64_t i = 0; i < nrngs; i++)
        dfx_rng_destroy(rngs[i]);
    if (rngs != rngs_small)
        free(rngs);
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
               l->alpha > 0 ? l->sigma / l->alpha : INFINITY, l->alpha * l->alpha / nn, i == n ? "  (end)" : "");
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
                ((double *)sig->data)[i] = l->alpha > 0 ? l->sigma / l->alpha : INFINITY;
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
