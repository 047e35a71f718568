/* Core-internal pieces of a run: the per-call trace, the progress line, the
 * sampling context and component instances. */
#ifndef DFX_CORE_RUN_H
#define DFX_CORE_RUN_H

#include <math.h>
#include <signal.h>
#include <stdio.h>

#include "core/base/node.h"
#include "dfx/pipeline.h"
#include "dfx/plugin.h"

/* sigma / alpha of a level: its noise level in the variance-exploding form
 * (infinite at pure noise), what models receive as dfx_model_input.sigma. */
static inline double dfx__level_sigma(const dfx_level *l)
{
    return l->alpha > 0 ? l->sigma / l->alpha : INFINITY;
}

/* ---- trace: named series of tensors stacked along a new first axis ---- */

typedef struct dfx__trace dfx__trace;

dfx_status dfx__trace_create(dfx__trace **out);
/* Appends x to series `name` (all entries of a series share a shape). */
dfx_status dfx__trace_add(dfx__trace *t, const char *name, const dfx_tensor *x);
/* Appends a scalar to an F64 series. */
dfx_status dfx__trace_add_f64(dfx__trace *t, const char *name, double v);
/* Writes every series as a safetensors file (atomically). */
dfx_status dfx__trace_write(const dfx__trace *t, const char *path);
void dfx__trace_destroy(dfx__trace *t);

/* ---- progress --------------------------------------------------------- */

typedef struct dfx__progress {
    FILE *out;        /* NULL = silent */
    bool tty;         /* redraw a line in place */
    const char *label;
    int64_t total, done;
    int64_t first;    /* done when the job started (a resumed run): the rate counts from there */
    char note[80];    /* drawn after the counts ("loss 0.0312"), or empty */
    double t0, last;
} dfx__progress;

void dfx__progress_start(dfx__progress *p, FILE *out, bool tty, const char *label, int64_t total);
void dfx__progress_tick(dfx__progress *p);
void dfx__progress_end(dfx__progress *p);

/* ---- interruption ----------------------------------------------------- */

extern volatile sig_atomic_t dfx__abort_flag;

/* ---- component instances ---------------------------------------------- */

typedef struct dfx__instance {
    const dfx_component *comp;
    void *priv;
    bool inited;
    char what[160];   /* "sampler 'ddim'" for messages */
} dfx__instance;

/* Allocates priv, applies defaults and the section's values (keys in
 * `reserved` belong to the core), then calls init. */
dfx_status dfx__instance_create(dfx__instance *inst, const dfx_component *comp,
                                const dfx__node *section, const char *const *reserved);
void dfx__instance_destroy(dfx__instance *inst);

/* ---- sampling context ------------------------------------------------- */

typedef struct dfx__sampling_params {
    const dfx__instance *model;
    dfx_prediction prediction;       /* resolved (never AUTO) */
    const dfx__instance *scheduler;
    dfx_rng **rngs;                  /* one shared, or one per batch item */
    int64_t nrngs;
    dfx__trace *trace;               /* may be NULL */
    dfx__progress *progress;
    const dfx_conditioning *cond;    /* may be NULL */
    const dfx__instance *guidance;   /* may be NULL; needs cond */
} dfx__sampling_params;

dfx_status dfx__sampling_create(dfx_sampling **out, const dfx__sampling_params *params,
                                const dfx_tensor *like);
void dfx__sampling_destroy(dfx_sampling *s);

/* ---- training --------------------------------------------------------- */

typedef struct dfx__train_opts {
    int objective;                   /* 0 denoise, 1 classify */
    int loss;                        /* 0 simple, 1 hybrid */
    int64_t steps, batch;
    double lr;
    int64_t warmup;
    int lr_schedule;
    double beta1, beta2, eps, weight_decay, grad_clip, ema_decay;
    int64_t checkpoint_every, log_every;
} dfx__train_opts;

typedef struct dfx__train_data {
    char *images, *labels;
    dfx_ints pad_to;
    bool hflip, shuffle;
} dfx__train_data;

/* The options of a train pipeline's `train` and `data` sections. */
extern const dfx_option dfx__train_options[];
extern const dfx_option dfx__train_data_options[];

typedef struct dfx__train_job {
    const char *origin;              /* the pipeline, for messages */
    const dfx__instance *model;
    dfx_prediction prediction;       /* what the loss fits (never AUTO) */
    const dfx_schedule *schedule;    /* the training table */
    uint64_t seed;
    const dfx__train_data *data;
    const dfx__train_opts *opts;
    const char *out;                 /* the checkpoint folder */
    const char *pipeline_text;       /* the resolved pipeline, kept in the checkpoint */
    bool resume;
    FILE *progress;
    bool progress_tty;
} dfx__train_job;

/* Trains job->model (see core/run/train.c). */
dfx_status dfx__train_run(const dfx__train_job *job);

/* ---- AUTOMATIC1111 names and metadata --------------------------------- */

/* What an A1111 sampler name stands for: the dfx sampler, one sampler
 * option it implies (or NULL), and a `sigmas` value for the scheduler (or
 * NULL). */
typedef struct dfx__a1111_alias {
    const char *type;
    const char *key, *value;
    const char *sigmas;
} dfx__a1111_alias;

/* Reads "Euler a", "DPM++ 2M Karras", "LMS Exponential", ... (any case);
 * false when name is none of them. */
bool dfx__a1111_sampler(const char *name, dfx__a1111_alias *out);
/* A1111's name of a dfx sampler, given its `noise` and `skip_prk` option
 * values as YAML text (or NULL); the type itself when A1111 has none. */
const char *dfx__a1111_sampler_name(const char *type, const char *noise, const char *skip_prk);
/* A1111's schedule type for a `sigmas` value ("Karras"; "Automatic" for
 * the others and NULL). */
const char *dfx__a1111_schedule_name(const char *sigmas);

/* The settings of an image as A1111 writes them into its `parameters` text
 * chunk, which image tools (A1111's PNG Info, civitai, ComfyUI nodes) read:
 * the prompt, "Negative prompt: ...", then one line of "Key: value" pairs. */
typedef struct dfx__a1111_params {
    const char *prompt;            /* NULL or "": no prompt lines */
    const char *negative_prompt;   /* NULL or "": no negative prompt line */
    int64_t steps;
    const char *sampler, *schedule;
    double cfg_scale;              /* NAN: no guidance, no "CFG scale" */
    int64_t seed;
    int64_t width, height;         /* 0: no "Size" (the 2-D plot) */
    const char *model;
    double denoising_strength;     /* NAN: not img2img */
} dfx__a1111_params;

/* The text (malloc'ed), or NULL when out of memory. */
char *dfx__a1111_text(const dfx__a1111_params *a);

/* ---- diffusers scheduler_config.json ---------------------------------- */

typedef struct dfx__imported {
    dfx__node *scheduler;   /* map with "type" and options */
    dfx__node *sampler;     /* map with "type" and options */
    char prediction[32];    /* "epsilon", "v_prediction", "sample" or "" */
} dfx__imported;

/* Translates a diffusers scheduler config into dfx scheduler and sampler
 * sections. With `sampler_type` (the pipeline's explicit sampler), the
 * scheduler options are those diffusers' class for that sampler would derive
 * from the same config (SchedulerClass.from_config). Errors name the JSON
 * field and value. */
dfx_status dfx__diffusers_import(const char *path, const char *sampler_type, dfx__imported *out);
void dfx__imported_fini(dfx__imported *im);

#endif
