/* Reads a diffusers scheduler_config.json and translates it into dfx
 * scheduler and sampler sections, reproducing what the diffusers class of
 * that name (v0.27) computes: its defaults for missing fields, and every
 * field that changes the numbers. A field dfx does not know, or a value it
 * cannot honour, is an error that names it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/options.h"
#include "core/run/run.h"
#include "dfx/json.h"

enum {
    C_DDPM = 1 << 0, C_DDIM = 1 << 1, C_PNDM = 1 << 2, C_EULER = 1 << 3, C_EULER_A = 1 << 4,
    C_HEUN = 1 << 5, C_LMS = 1 << 6, C_DPM = 1 << 7, C_VE = 1 << 8, C_VP = 1 << 9,
    C_BETA = C_DDPM | C_DDIM | C_PNDM | C_EULER | C_EULER_A | C_HEUN | C_LMS | C_DPM,
    C_KDIFF = C_EULER | C_EULER_A | C_HEUN | C_LMS,
};

static const struct {
    const char *name;
    int cls;
    const char *sampler;
} classes[] = {
    {"DDPMScheduler", C_DDPM, "ddpm"},
    {"DDIMScheduler", C_DDIM, "ddim"},
    {"PNDMScheduler", C_PNDM, "pndm"},
    {"EulerDiscreteScheduler", C_EULER, "euler"},
    {"EulerAncestralDiscreteScheduler", C_EULER_A, "euler_ancestral"},
    {"HeunDiscreteScheduler", C_HEUN, "heun"},
    {"LMSDiscreteScheduler", C_LMS, "lms"},
    {"DPMSolverMultistepScheduler", C_DPM, "dpmpp_2m"},
    {"ScoreSdeVeScheduler", C_VE, "pc"},
    {"ScoreSdeVpScheduler", C_VP, "pc"},
};

enum ftype { F_INT, F_FLOAT, F_BOOL, F_STRING, F_LIST };

/* Every field dfx knows, the classes that take it, and its default there. */
enum fid {
    NO_FIELD = -1,
    NUM_TRAIN, BETA_START, BETA_END, BETA_SCHEDULE, TRAINED_BETAS, PREDICTION, SPACING, STEPS_OFFSET,
    ZERO_SNR, CLIP, CLIP_RANGE, THRESHOLDING, THR_RATIO, THR_MAX, ALPHA_TO_ONE, VARIANCE, SKIP_PRK,
    KARRAS, SIGMA_MIN, SIGMA_MAX, INTERPOLATION, TIMESTEP_TYPE, ALGORITHM, ORDER, SOLVER_TYPE,
    LOWER_FINAL, EULER_FINAL, FINAL_SIGMAS, LAMBDA_MIN, LU, SNR, SAMPLING_EPS, CORRECT_STEPS, BETA_MIN,
    BETA_MAX, NFIELDS
};

static const struct field {
    const char *name;
    enum ftype type;
    int cls;
} fields[NFIELDS] = {
    [NUM_TRAIN] = {"num_train_timesteps", F_INT, C_BETA | C_VE | C_VP},
    [BETA_START] = {"beta_start", F_FLOAT, C_BETA},
    [BETA_END] = {"beta_end", F_FLOAT, C_BETA},
    [BETA_SCHEDULE] = {"beta_schedule", F_STRING, C_BETA},
    [TRAINED_BETAS] = {"trained_betas", F_LIST, C_BETA},
    [PREDICTION] = {"prediction_type", F_STRING, C_BETA},
    [SPACING] = {"timestep_spacing", F_STRING, C_BETA},
    [STEPS_OFFSET] = {"steps_offset", F_INT, C_BETA},
    [ZERO_SNR] = {"rescale_betas_zero_snr", F_BOOL, C_DDPM | C_DDIM | C_EULER | C_EULER_A | C_DPM},
    [CLIP] = {"clip_sample", F_BOOL, C_DDPM | C_DDIM | C_HEUN},
    [CLIP_RANGE] = {"clip_sample_range", F_FLOAT, C_DDPM | C_DDIM | C_HEUN},
    [THRESHOLDING] = {"thresholding", F_BOOL, C_DDPM | C_DDIM | C_DPM},
    [THR_RATIO] = {"dynamic_thresholding_ratio", F_FLOAT, C_DDPM | C_DDIM | C_DPM},
    [THR_MAX] = {"sample_max_value", F_FLOAT, C_DDPM | C_DDIM | C_DPM},
    [ALPHA_TO_ONE] = {"set_alpha_to_one", F_BOOL, C_DDIM | C_PNDM},
    [VARIANCE] = {"variance_type", F_STRING, C_DDPM | C_DPM},
    [SKIP_PRK] = {"skip_prk_steps", F_BOOL, C_PNDM},
    [KARRAS] = {"use_karras_sigmas", F_BOOL, C_EULER | C_HEUN | C_LMS | C_DPM},
    [SIGMA_MIN] = {"sigma_min", F_FLOAT, C_EULER | C_VE},
    [SIGMA_MAX] = {"sigma_max", F_FLOAT, C_EULER | C_VE},
    [INTERPOLATION] = {"interpolation_type", F_STRING, C_EULER},
    [TIMESTEP_TYPE] = {"timestep_type", F_STRING, C_EULER},
    [ALGORITHM] = {"algorithm_type", F_STRING, C_DPM},
    [ORDER] = {"solver_order", F_INT, C_DPM},
    [SOLVER_TYPE] = {"solver_type", F_STRING, C_DPM},
    [LOWER_FINAL] = {"lower_order_final", F_BOOL, C_DPM},
    [EULER_FINAL] = {"euler_at_final", F_BOOL, C_DPM},
    [FINAL_SIGMAS] = {"final_sigmas_type", F_STRING, C_DPM},
    [LAMBDA_MIN] = {"lambda_min_clipped", F_FLOAT, C_DPM},
    [LU] = {"use_lu_lambdas", F_BOOL, C_DPM},
    [SNR] = {"snr", F_FLOAT, C_VE},
    [SAMPLING_EPS] = {"sampling_eps", F_FLOAT, C_VE | C_VP},
    [CORRECT_STEPS] = {"correct_steps", F_INT, C_VE},
    [BETA_MIN] = {"beta_min", F_FLOAT, C_VP},
    [BETA_MAX] = {"beta_max", F_FLOAT, C_VP},
};

/* A field's value: given in the config (with its position) or a default. */
typedef struct value {
    bool given;
    bool null;
    int64_t i;
    double f;
    bool b;
    const char *s;
    const dfx_json *json;
} value;

typedef struct ctx {
    const char *path;
    int cls;
    value v[NFIELDS];
    dfx__node *sched, *samp;
} ctx;

static dfx_status field_error(const ctx *c, const dfx_json *j, const char *name, const char *msg)
{
    return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s:%d:%d: field '%s': %s", c->path, j ? dfx_json_line(j) : 0,
                         j ? dfx_json_column(j) : 0, name, msg);
}

/* diffusers' defaults for the target class. */
static void set_defaults(ctx *c)
{
    value *v = c->v;
    memset(v, 0, sizeof c->v);
    bool kd = c->cls & (C_KDIFF | C_DPM);
    v[NUM_TRAIN].i = c->cls & (C_VE | C_VP) ? 2000 : 1000;
    v[BETA_START].f = 0.0001;
    v[BETA_END].f = 0.02;
    v[BETA_SCHEDULE].s = "linear";
    v[TRAINED_BETAS].null = true;
    v[PREDICTION].s = "epsilon";
    v[SPACING].s = kd ? "linspace" : "leading";
    v[CLIP].b = c->cls & (C_DDPM | C_DDIM);
    v[CLIP_RANGE].f = 1.0;
    v[THR_RATIO].f = 0.995;
    v[THR_MAX].f = 1.0;
    v[ALPHA_TO_ONE].b = c->cls & C_DDIM;
    v[VARIANCE].s = c->cls & C_DDPM ? "fixed_small" : NULL;
    v[VARIANCE].null = !(c->cls & C_DDPM);
    v[SIGMA_MIN].null = v[SIGMA_MAX].null = !(c->cls & C_VE);
    v[SIGMA_MIN].f = 0.01;
    v[SIGMA_MAX].f = 1348.0;
    v[INTERPOLATION].s = "linear";
    v[TIMESTEP_TYPE].s = "discrete";
    v[ALGORITHM].s = "dpmsolver++";
    v[ORDER].i = 2;
    v[SOLVER_TYPE].s = "midpoint";
    v[LOWER_FINAL].b = true;
    v[FINAL_SIGMAS].s = "zero";
    v[LAMBDA_MIN].f = -INFINITY;
    v[SNR].f = 0.15;
    v[SAMPLING_EPS].f = c->cls & C_VP ? 1e-3 : 1e-5;
    v[CORRECT_STEPS].i = 1;
    v[BETA_MIN].f = 0.1;
    v[BETA_MAX].f = 20;
}

static dfx_status read_field(ctx *c, enum fid id, const dfx_json *j)
{
    value *v = &c->v[id];
    const struct field *f = &fields[id];
    dfx_json_type t = dfx_json_type_of(j);
    v->given = true;
    v->json = j;
    v->null = t == DFX_JSON_NULL;
    if (v->null)
        return DFX_OK;
    switch (f->type) {
    case F_INT:
        if (!dfx_json_int(j, &v->i))
            return field_error(c, j, f->name, "expected an integer");
        break;
    case F_FLOAT:
        if (t != DFX_JSON_NUMBER)
            return field_error(c, j, f->name, "expected a number");
        v->f = dfx_json_number(j);
        break;
    case F_BOOL:
        if (t != DFX_JSON_BOOL)
            return field_error(c, j, f->name, "expected true or false");
        v->b = dfx_json_bool(j);
        break;
    case F_STRING:
        if (t != DFX_JSON_STRING)
            return field_error(c, j, f->name, "expected a string");
        v->s = dfx_json_string(j);
        break;
    case F_LIST:
        if (t != DFX_JSON_ARRAY)
            return field_error(c, j, f->name, "expected a list of numbers");
        for (int64_t i = 0; i < dfx_json_size(j); i++)
            if (dfx_json_type_of(dfx_json_at(j, i)) != DFX_JSON_NUMBER)
                return field_error(c, dfx_json_at(j, i), f->name, "expected a list of numbers");
        break;
    }
    return DFX_OK;
}

/* Adds key: text to map, positioned at the field's JSON value. */
static dfx_status put(ctx *c, dfx__node *map, const char *key, const char *text, enum fid from)
{
    const dfx_json *j = from != NO_FIELD ? c->v[from].json : NULL;
    dfx__node *n = dfx__node_new_scalar(text, false, c->path, j ? dfx_json_line(j) : 0, j ? dfx_json_column(j) : 0);
    if (!n)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    return dfx__node_set(map, key, n);
}

static dfx_status put_float(ctx *c, dfx__node *map, const char *key, enum fid id)
{
    char buf[64];
    if (c->v[id].null)
        snprintf(buf, sizeof buf, "~");
    else
        dfx__format_double(c->v[id].f, buf, sizeof buf);
    return put(c, map, key, buf, id);
}

static dfx_status put_int(ctx *c, dfx__node *map, const char *key, enum fid id)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)c->v[id].i);
    return put(c, map, key, buf, id);
}

static dfx_status put_bool(ctx *c, dfx__node *map, const char *key, enum fid id)
{
    return put(c, map, key, c->v[id].b ? "true" : "false", id);
}

static bool str_is(const value *v, const char *s)
{
    return !v->null && v->s && strcmp(v->s, s) == 0;
}

/* value must be one of the choices; returns its index or an error */
static dfx_status choose(ctx *c, enum fid id, const char *const *choices, int *out)
{
    const value *v = &c->v[id];
    for (int i = 0; choices[i]; i++) {
        if (str_is(v, choices[i])) {
            *out = i;
            return DFX_OK;
        }
    }
    char msg[512];
    size_t used = (size_t)snprintf(msg, sizeof msg, "'%s' is not supported by dfx; supported: ",
                                   v->null ? "null" : v->s);
    for (int i = 0; choices[i] && used < sizeof msg; i++)
        used += (size_t)snprintf(msg + used, sizeof msg - used, "%s%s", i ? ", " : "", choices[i]);
    return field_error(c, v->json, fields[id].name, msg);
}

static dfx_status x0_fix(ctx *c)
{
    dfx_status st;
    if (c->cls & (C_DDPM | C_DDIM | C_HEUN))
        if ((st = put_bool(c, c->samp, "clip_sample", CLIP)) || (st = put_float(c, c->samp, "clip_sample_range", CLIP_RANGE)))
            return st;
    if (c->cls & (C_DDPM | C_DDIM | C_DPM))
        if ((st = put_bool(c, c->samp, "thresholding", THRESHOLDING)) ||
            (st = put_float(c, c->samp, "dynamic_thresholding_ratio", THR_RATIO)) ||
            (st = put_float(c, c->samp, "sample_max_value", THR_MAX)))
            return st;
    return DFX_OK;
}

static dfx_status beta_scheduler(ctx *c, char *prediction)
{
    value *v = c->v;
    dfx_status st;
    static const char *const schedules[] = {"linear", "scaled_linear", "squaredcos_cap_v2", NULL};
    static const char *const types[] = {"linear", "scaled_linear", "cosine"};
    static const char *const spacings[] = {"leading", "trailing", "linspace", NULL};
    static const char *const predictions[] = {"epsilon", "v_prediction", "sample", "original_sample", NULL};
    int sched = 0, spacing = 0, pred = 0;
    if ((st = choose(c, BETA_SCHEDULE, schedules, &sched)) || (st = choose(c, SPACING, spacings, &spacing)) ||
        (st = choose(c, PREDICTION, predictions, &pred)))
        return st;
    snprintf(prediction, 32, "%s", pred == 3 ? "sample" : predictions[pred]);
    if ((st = put(c, c->sched, "type", types[sched], BETA_SCHEDULE)) ||
        (st = put_int(c, c->sched, "train_steps", NUM_TRAIN)))
        return st;
    if (sched < 2 && ((st = put_float(c, c->sched, "beta_start", BETA_START)) ||
                      (st = put_float(c, c->sched, "beta_end", BETA_END))))
        return st;
    if (!v[TRAINED_BETAS].null) {
        dfx__node *seq = dfx__node_new(DFX__NODE_SEQ, c->path, dfx_json_line(v[TRAINED_BETAS].json),
                                       dfx_json_column(v[TRAINED_BETAS].json));
        if (!seq)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        for (int64_t i = 0; i < dfx_json_size(v[TRAINED_BETAS].json); i++) {
            char buf[64];
            dfx__format_double(dfx_json_number(dfx_json_at(v[TRAINED_BETAS].json, i)), buf, sizeof buf);
            dfx__node *e = dfx__node_new_scalar(buf, false, c->path, 0, 0);
            if (!e || (st = dfx__node_append(seq, e))) {
                dfx__node_free(seq);
                return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
            }
        }
        if ((st = dfx__node_set(c->sched, "trained_betas", seq)))
            return st;
    }
    if ((st = put(c, c->sched, "spacing", spacings[spacing], SPACING)) ||
        (st = put_int(c, c->sched, "steps_offset", STEPS_OFFSET)))
        return st;
    if (c->cls & fields[ZERO_SNR].cls) {
        if ((st = put_bool(c, c->sched, "zero_snr", ZERO_SNR)))
            return st;
        /* diffusers' Euler and DPM schedulers keep sigma_max finite */
        if (v[ZERO_SNR].b && (c->cls & (C_EULER | C_EULER_A | C_DPM)) &&
            (st = put(c, c->sched, "terminal_alpha_bar", "5.9604644775390625e-08", ZERO_SNR)))
            return st;
    }
    bool kd = c->cls & C_KDIFF;
    if ((st = put(c, c->sched, "round_timesteps", kd ? "false" : "true", NO_FIELD)) ||
        (st = put(c, c->sched, "step", c->cls & (C_DDPM | C_DDIM | C_PNDM) ? "stride" : "next", NO_FIELD)))
        return st;
    if (c->cls & (C_DDIM | C_PNDM) && (st = put(c, c->sched, "final", v[ALPHA_TO_ONE].b ? "clean" : "first", ALPHA_TO_ONE)))
        return st;
    if (kd && ((st = put(c, c->sched, "init_noise", spacing == 0 ? "unit" : "sigma", SPACING)) ||
               (st = put(c, c->sched, "levels", "ve", NO_FIELD))))
        return st;
    if (c->cls & fields[KARRAS].cls) {
        bool lu = (c->cls & C_DPM) && v[LU].b && !v[KARRAS].b;
        if ((v[KARRAS].b || lu) && (st = put(c, c->sched, "sigmas", v[KARRAS].b ? "karras" : "exponential",
                                             v[KARRAS].b ? KARRAS : LU)))
            return st;
    }
    if (c->cls & C_EULER) {
        static const char *const interps[] = {"linear", NULL};
        static const char *const ttypes[] = {"discrete", NULL};
        int dummy = 0;
        if ((st = choose(c, INTERPOLATION, interps, &dummy)) || (st = choose(c, TIMESTEP_TYPE, ttypes, &dummy)) ||
            (st = put_float(c, c->sched, "sigma_min", SIGMA_MIN)) || (st = put_float(c, c->sched, "sigma_max", SIGMA_MAX)))
            return st;
    }
    if (c->cls & C_DPM) {
        static const char *const finals[] = {"zero", "sigma_min", NULL};
        int fin = 0;
        if ((st = choose(c, FINAL_SIGMAS, finals, &fin)) ||
            (st = put(c, c->sched, "final", fin ? "first" : "clean", FINAL_SIGMAS)) ||
            (st = put(c, c->sched, "skip_zero", "true", NO_FIELD)) ||
            (st = put(c, c->sched, "sigma_bounds", "full", NO_FIELD)) ||
            (st = put_float(c, c->sched, "lambda_min_clipped", LAMBDA_MIN)))
            return st;
    }
    return DFX_OK;
}

static dfx_status beta_sampler(ctx *c)
{
    value *v = c->v;
    dfx_status st = x0_fix(c);
    if (st)
        return st;
    if (c->cls & C_DDPM) {
        static const char *const vars[] = {"fixed_small", "fixed_small_log", "fixed_large", "learned_range", NULL};
        int var = 0;
        if ((st = choose(c, VARIANCE, vars, &var)) || (st = put(c, c->samp, "variance", vars[var], VARIANCE)))
            return st;
    }
    if (c->cls & C_PNDM && (st = put_bool(c, c->samp, "skip_prk", SKIP_PRK)))
        return st;
    if (c->cls & C_DPM) {
        static const char *const algos[] = {"dpmsolver++", "sde-dpmsolver++", NULL};
        static const char *const solvers[] = {"midpoint", "heun", NULL};
        int algo = 0, solver = 0;
        if (!v[VARIANCE].null && !str_is(&v[VARIANCE], "learned") && !str_is(&v[VARIANCE], "learned_range"))
            return field_error(c, v[VARIANCE].json, "variance_type", "expected null, learned or learned_range");
        if (v[ORDER].i != 1 && v[ORDER].i != 2)
            return field_error(c, v[ORDER].json, "solver_order", "dfx implements orders 1 and 2 (DPM-Solver++(2M))");
        if ((st = choose(c, ALGORITHM, algos, &algo)) || (st = choose(c, SOLVER_TYPE, solvers, &solver)) ||
            (st = put_int(c, c->samp, "order", ORDER)) ||
            (st = put(c, c->samp, "solver_type", solvers[solver], SOLVER_TYPE)) ||
            (st = put(c, c->samp, "noise", algo ? "sde" : "none", ALGORITHM)) ||
            (st = put_bool(c, c->samp, "lower_order_final", LOWER_FINAL)) ||
            (st = put_bool(c, c->samp, "euler_at_final", EULER_FINAL)))
            return st;
    }
    return DFX_OK;
}

static dfx_status sde_sections(ctx *c, char *prediction)
{
    dfx_status st;
    if (c->cls & C_VE) {
        prediction[0] = '\0';
        if ((st = put(c, c->sched, "type", "ve", NO_FIELD)) || (st = put_float(c, c->sched, "sigma_min", SIGMA_MIN)) ||
            (st = put_float(c, c->sched, "sigma_max", SIGMA_MAX)) ||
            (st = put_float(c, c->sched, "sampling_eps", SAMPLING_EPS)) ||
            (st = put(c, c->samp, "predictor", "reverse_diffusion", NO_FIELD)) ||
            (st = put(c, c->samp, "corrector", "langevin", NO_FIELD)) || (st = put_float(c, c->samp, "snr", SNR)) ||
            (st = put_int(c, c->samp, "corrector_steps", CORRECT_STEPS)))
            return st;
        return DFX_OK;
    }
    snprintf(prediction, 32, "epsilon");
    if ((st = put(c, c->sched, "type", "vp", NO_FIELD)) || (st = put_float(c, c->sched, "beta_min", BETA_MIN)) ||
        (st = put_float(c, c->sched, "beta_max", BETA_MAX)) ||
        (st = put_float(c, c->sched, "sampling_eps", SAMPLING_EPS)) ||
        (st = put(c, c->samp, "predictor", "euler_maruyama", NO_FIELD)) || (st = put(c, c->samp, "corrector", "none", NO_FIELD)))
        return st;
    return DFX_OK;
}

dfx_status dfx__diffusers_import(const char *path, const char *sampler_type, dfx__imported *out)
{
    dfx_json *doc;
    dfx_status st;
    ctx c = {.path = path};
    memset(out, 0, sizeof *out);
    if ((st = dfx_json_parse_file(path, &doc)))
        return st;
    const dfx_json *cn = dfx_json_get(doc, "_class_name");
    const char *cname = dfx_json_string(cn);
    int src = -1, dst = -1;
    for (size_t i = 0; cname && i < sizeof classes / sizeof *classes; i++)
        if (strcmp(classes[i].name, cname) == 0)
            src = (int)i;
    if (dfx_json_type_of(doc) != DFX_JSON_OBJECT || src < 0) {
        st = dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: _class_name %s%s%s is not a scheduler dfx can read (it reads "
                                                "DDPM, DDIM, PNDM, Euler, EulerAncestral, Heun, LMS, "
                                                "DPMSolverMultistep, ScoreSdeVe, ScoreSdeVp)",
                           path, cname ? "'" : "", cname ? cname : "(missing)", cname ? "'" : "");
        dfx_json_destroy(doc);
        return st;
    }
    dst = src;
    /* an explicit sampler of another diffusers class: derive the schedule as
     * that class's from_config would */
    for (size_t i = 0; sampler_type && i < sizeof classes / sizeof *classes; i++)
        if (strcmp(classes[i].sampler, sampler_type) == 0 && (classes[i].cls & C_BETA) &&
            (classes[src].cls & C_BETA))
            dst = (int)i;
    c.cls = classes[dst].cls;
    set_defaults(&c);
    for (int64_t i = 0; i < dfx_json_size(doc) && !st; i++) {
        const char *key = dfx_json_key_at(doc, i);
        if (key[0] == '_')
            continue;
        int id = -1;
        for (int f = 0; f < NFIELDS; f++)
            if (strcmp(fields[f].name, key) == 0)
                id = f;
        if (id < 0) {
            st = field_error(&c, dfx_json_value_at(doc, i), key,
                             "dfx does not know this field, so it cannot reproduce its effect");
            break;
        }
        if (fields[id].cls & c.cls)
            st = read_field(&c, (enum fid)id, dfx_json_value_at(doc, i));
    }
    c.sched = dfx__node_new(DFX__NODE_MAP, path, 0, 0);
    c.samp = dfx__node_new(DFX__NODE_MAP, path, 0, 0);
    if (!st && (!c.sched || !c.samp))
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    if (!st)
        st = put(&c, c.samp, "type", classes[dst].sampler, NO_FIELD);
    if (!st)
        st = c.cls & C_BETA ? beta_scheduler(&c, out->prediction) : sde_sections(&c, out->prediction);
    if (!st && (c.cls & C_BETA))
        st = beta_sampler(&c);
    dfx_json_destroy(doc);
    if (st) {
        dfx__node_free(c.sched);
        dfx__node_free(c.samp);
        return st;
    }
    out->scheduler = c.sched;
    out->sampler = c.samp;
    return DFX_OK;
}

void dfx__imported_fini(dfx__imported *im)
{
    dfx__node_free(im->scheduler);
    dfx__node_free(im->sampler);
    im->scheduler = im->sampler = NULL;
}
