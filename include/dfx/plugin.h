/* Everything a dfx plugin author needs: the descriptor the loader checks, the
 * component kinds and their ops, the schedule every sampler reads, and the
 * sampling context a sampler talks to (denoiser, noise, progress).
 *
 * A plugin is a shared object named NAME.so that exports
 *     DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void);
 * returning a static descriptor whose name is NAME. Build one with
 *     cc -shared -fPIC my_sampler.c -o my_sampler.so $(pkg-config --cflags --libs dfx)
 *
 * The one diffusion convention: x_t = alpha_t * x_0 + sigma_t * eps. A
 * schedule is a list of noise levels (t_model, alpha, sigma) from most noisy
 * to the end of sampling; samplers see only that list and the denoiser, so any
 * sampler runs with any schedule and any model. */
#ifndef DFX_PLUGIN_H
#define DFX_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dfx/grad.h"
#include "dfx/ops.h"
#include "dfx/option.h"
#include "dfx/rng.h"
#include "dfx/status.h"
#include "dfx/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a struct below changes layout or meaning. The loader
 * refuses a plugin whose dfx_plugin.abi_version differs, before reading any
 * other field. */
#define DFX_ABI_VERSION 2u

#define DFX_PLUGIN_EXPORT DFX_API

typedef enum dfx_kind {
    DFX_KIND_SCHEDULER = 1,
    DFX_KIND_SAMPLER = 2,
    DFX_KIND_MODEL = 3,
    DFX_KIND_CONDITIONER = 4,
    DFX_KIND_GUIDANCE = 5,
    DFX_KIND_CODEC = 6
} dfx_kind;

/* "scheduler", "sampler", "model", "conditioner", "guidance", "codec";
 * NULL for an unknown value. */
DFX_API const char *dfx_kind_name(dfx_kind kind);

typedef struct dfx_component {
    dfx_kind kind;
    const char *name;            /* unique within its kind across all plugins */
    const char *summary;         /* one line for `dfx list` */
    size_t priv_size;            /* the core callocs this much for each instance */
    const dfx_option *options;   /* ended by DFX_OPTION_END; may be NULL */
    /* optional: called after defaults and pipeline values are in priv;
     * cross-field checks and allocations. A failure sets the error message. */
    dfx_status (*init)(void *priv);
    /* optional: releases what init allocated (options are freed by the core) */
    void (*fini)(void *priv);
    const void *ops;             /* dfx_scheduler_ops / dfx_sampler_ops / dfx_model_ops */
} dfx_component;

typedef struct dfx_plugin {
    uint32_t abi_version;        /* DFX_ABI_VERSION */
    uint32_t struct_size;        /* sizeof(dfx_plugin) */
    const char *name;            /* == the .so file's base name */
    const char *version;
    const char *license;
    const dfx_component *const *components;  /* NULL-terminated */
} dfx_plugin;

typedef const dfx_plugin *(*dfx_plugin_entry_fn)(void);

/* ---- schedules -------------------------------------------------------- */

/* One noise level: x = alpha * x0 + sigma * eps, and what the network is fed
 * (a training index, possibly fractional; a continuous time; or sigma). */
typedef struct dfx_level {
    double t_model;
    double alpha;
    double sigma;
} dfx_level;

/* How the starting noise z ~ N(0, I) is scaled into x at levels[0]. */
typedef enum dfx_init_noise {
    DFX_INIT_NOISE_AUTO = 0,  /* as the sampler prefers */
    DFX_INIT_NOISE_UNIT,      /* unit variance after normalising to alpha^2 + sigma^2 = 1 */
    DFX_INIT_NOISE_SIGMA      /* sigma of levels[0] (k-diffusion: z * sigma_max) */
} dfx_init_noise;

typedef enum dfx_prediction {
    DFX_PREDICTION_AUTO = 0,
    DFX_PREDICTION_EPSILON,
    DFX_PREDICTION_V,
    DFX_PREDICTION_SAMPLE,
    DFX_PREDICTION_SCORE
} dfx_prediction;

/* Filled by a scheduler's plan(); allocated and freed by the core. */
typedef struct dfx_schedule {
    int64_t steps;          /* levels[0 .. steps-1] are evaluated; levels[steps] is the end */
    dfx_level *levels;      /* [steps + 1] */
    dfx_level *targets;     /* [steps]: where step i lands. The core sets it to
                               levels[i + 1]; a scheduler whose reference takes
                               steps of a fixed stride (t - T/N, as diffusers'
                               DDPM/DDIM/PNDM do) writes that level instead. */
    double *time;           /* [steps + 1] continuous time in [0, 1], or NULL */
    double *time_to;        /* [steps] the time step i lands on, or NULL */
    double *sde_f;          /* [steps + 1] drift coefficient f(t) of the forward
                               SDE dx = f x dt + g dW, or NULL */
    double *sde_g2;         /* [steps + 1] g(t)^2, or NULL */
    dfx_init_noise init_noise;
    double init_sigma;      /* > 0: the scale DFX_INIT_NOISE_SIGMA uses (the
                               reference's init_noise_sigma) instead of
                               levels[0].sigma */
    bool float32;           /* the reference evaluates step coefficients in
                               float32 (diffusers); samplers that mirror a
                               diffusers scheduler then do the same, so their
                               rounding matches too */
    int64_t train_steps;    /* length of the training table below, 0 if none */
    double *train_alpha_bar;/* [train_steps] alphas_cumprod of the training process, or NULL */
} dfx_schedule;

/* Allocates the arrays of a schedule of `steps` steps (zeroed; targets, time,
 * sde arrays and the training table only when asked). Used by the core and
 * by tests; a scheduler receives a schedule already allocated. */
DFX_API dfx_status dfx_schedule_init(dfx_schedule *s, int64_t steps,
                                     bool continuous, int64_t train_steps);
DFX_API void dfx_schedule_fini(dfx_schedule *s);

typedef struct dfx_scheduler_ops {
    /* required: fill s (already allocated for `steps` steps by the core, with
     * `time`/`sde_*` arrays when continuous() says so and the training table
     * when train_steps() > 0). targets[] is preset to the next level. */
    dfx_status (*plan)(void *priv, int64_t steps, dfx_schedule *s);
    /* optional: true when the schedule is continuous-time (fills time, sde_f, sde_g2) */
    bool (*continuous)(void *priv);
    /* optional: length of the training table (0 when none) */
    int64_t (*train_steps)(void *priv);
    /* optional: the level at model time t_model, between or beyond plan()'s
     * levels (PNDM's Runge-Kutta warm-up evaluates half-way) */
    dfx_status (*level_at)(void *priv, double t_model, dfx_level *out);
    /* optional: the model time for a VE noise level sigma/alpha (log-sigma
     * interpolation over the training table, as k-diffusion does) */
    dfx_status (*t_model_of)(void *priv, double sigma_ve, double *t_model);
} dfx_scheduler_ops;

/* ---- models ----------------------------------------------------------- */

typedef enum dfx_input_scale {
    DFX_INPUT_SCALE_VP = 0,  /* the network sees x / sqrt(alpha^2 + sigma^2) */
    DFX_INPUT_SCALE_VE       /* the network sees x / alpha */
} dfx_input_scale;

typedef struct dfx_model_info {
    dfx_prediction prediction;  /* what predict() returns; AUTO = epsilon unless
                                   the scheduler config says otherwise */
    dfx_input_scale input_scale;
    bool learned_variance;      /* predict() writes 2*C channels: the prediction,
                                   then IDDPM's v in [-1, 1] (eq. 14) */
    int sample_ndim;            /* shape of one sample, without the batch; 0 = any */
    int64_t sample_shape[DFX_MAX_DIMS - 1];
    bool any_size;              /* the last two entries of sample_shape are only a
                                   default: any height and width work (a
                                   convolutional network) */
    int64_t context_dim;        /* width of the cross-attention states it takes
                                   (dfx_cond.context [B, tokens, context_dim]);
                                   0: none */
    const char *scheduler_config; /* the scheduler config that came with the
                                     weights (a diffusers folder's), or NULL;
                                     used when the pipeline names no scheduler */
    /* A model that trains: the folder of a checkpoint that holds its
     * config and weights ("unet"), and the weights' file stem
     * ("diffusion_pytorch_model" for STEM.safetensors). */
    const char *checkpoint_folder;
    const char *checkpoint_stem;
    /* A classifier (classes > 0) maps images x [B, C, H, W] in [-1, 1] to
     * class scores: its predict() ignores t_model, sigma and cond and
     * writes out [B, features + classes], each row the penultimate
     * features (what FID and the Inception Score are computed from) then
     * the logits; out is allocated so by the caller, not shaped like x.
     * `dfx train` with objective classify fits train_forward's logits
     * [B, classes] to the data's labels. */
    int64_t classes;            /* the class count; 0 for a denoiser */
    int64_t features;           /* the width of the penultimate features */
} dfx_model_info;

/* What a model is conditioned on for one evaluation (borrowed; any field
 * may be NULL). Models that take none ignore it. */
typedef struct dfx_cond {
    const dfx_tensor *context;  /* [B, tokens, dim]: cross-attention states */
    const dfx_tensor *pooled;   /* [B, dim]: a pooled embedding */
    const int64_t *labels;      /* [B]: class labels */
} dfx_cond;

/* One model evaluation's input. */
typedef struct dfx_model_input {
    const dfx_tensor *x;     /* [B, ...], scaled as info.input_scale says */
    const double *t_model;   /* [B] what the network is fed (see dfx_level) */
    const double *sigma;     /* [B] the noise level of x as sigma/alpha; networks
                                ignore it, analytic models (gmm) need it */
    const dfx_cond *cond;    /* conditioning, or NULL */
} dfx_model_input;

typedef struct dfx_model_ops {
    /* required: describes the network; called after init */
    void (*info)(void *priv, dfx_model_info *info);
    /* required: out = network(in) for a batch; out is preallocated with x's
     * shape (C doubled with learned variance; [B, features + classes] for a
     * classifier, see dfx_model_info). Called from one thread at a time. */
    dfx_status (*predict)(void *priv, const dfx_model_input *in, dfx_tensor *out);
    /* optional: log-density of the data distribution at points x [N, D]
     * (analytic models; used to draw the density under a scatter plot) */
    dfx_status (*log_density)(void *priv, const dfx_tensor *x, double *out);

    /* Training (`dfx train`): a model that trains has all four. */
    /* optional: registers the weights it trains in params, under the names
     * its checkpoint files use; the data is the same predict() reads */
    dfx_status (*train_params)(void *priv, dfx_params *params);
    /* optional: the network's output for x (a variable [B, ...] on a
     * float32 tape, scaled as info.input_scale says) with in->t_model and
     * in->cond (in->x unused), built from the tape's operations with the
     * weights taken through dfx_tape_weight(tape, params, ...): the same
     * function as predict(). NULL on failure, kept in the tape. */
    dfx_var *(*train_forward)(void *priv, dfx_tape *tape, const dfx_params *params, dfx_var *x,
                              const dfx_model_input *in);
    /* optional: the trained weights changed (an optimiser step, a loaded
     * checkpoint): rebuild what predict() derives from them */
    dfx_status (*params_changed)(void *priv);
    /* optional: writes what, beside the weights, makes a checkpoint folder
     * the model reads back (a diffusers folder's config.json) into dir */
    dfx_status (*save_config)(void *priv, const char *dir);
} dfx_model_ops;

/* ---- samplers --------------------------------------------------------- */

/* The core's side of a sampling run: the denoiser (model, its adapter and any
 * guidance), the run's noise generator, progress, trace and interruption. */
typedef struct dfx_sampling dfx_sampling;

/* What a denoiser call returns. Set the fields you want to tensors shaped
 * like x (var: like x too); leave the others NULL. */
typedef struct dfx_denoised {
    dfx_tensor *x0;    /* required: the x0 prediction */
    dfx_tensor *eps;   /* optional: the noise prediction */
    dfx_tensor *var;   /* optional: IDDPM's learned-range value v; an error
                          when the model does not learn its variance */
    dfx_tensor *score; /* optional: grad log p(x) = -eps / sigma (a score
                          model's own output, not a round trip through eps) */
} dfx_denoised;

/* Evaluates the denoiser on x at level lv (any parametrisation of the noise
 * level: the model input is normalised by the core). Counts one model
 * evaluation for progress. Returns DFX_ERR_NUMERIC when the model output is
 * not finite. */
DFX_API dfx_status dfx_sampling_denoise(dfx_sampling *s, const dfx_tensor *x,
                                        const dfx_level *lv, dfx_denoised *out);

/* Fills out with N(0, 1) noise from the run's generator(s), in the order a
 * diffusers scheduler draws it. */
DFX_API dfx_status dfx_sampling_noise(dfx_sampling *s, dfx_tensor *out);

/* Call after every update that follows a denoiser evaluation, with the new
 * state: records it in the trace, checks it for NaN, and returns
 * DFX_ERR_ABORTED when the user interrupted the run. */
DFX_API dfx_status dfx_sampling_report(dfx_sampling *s, const dfx_tensor *x);

/* The scheduler's level at model time t_model (see level_at); an error when
 * the scheduler cannot interpolate. */
DFX_API dfx_status dfx_sampling_level_at(dfx_sampling *s, double t_model,
                                         dfx_level *out);

/* The scheduler's model time for a noise level given as sigma/alpha (see
 * t_model_of); an error when the scheduler cannot map it. */
DFX_API dfx_status dfx_sampling_t_model(dfx_sampling *s, double sigma_ve,
                                        double *t_model);

/* ---- conditioners ----------------------------------------------------- */

/* What a conditioner produces for a batch: the conditional and, for
 * guidance, the unconditional conditioning (tensors owned by the core once
 * returned; allocate them with dfx_tensor_create). */
typedef struct dfx_conditioning {
    dfx_tensor *context, *uncond_context;  /* [B, tokens, dim] */
    dfx_tensor *pooled, *uncond_pooled;    /* [B, dim] */
    int64_t *labels, *uncond_labels;       /* [B], malloc'ed */
} dfx_conditioning;

/* Frees what a dfx_conditioning holds and zeroes it. */
DFX_API void dfx_conditioning_fini(dfx_conditioning *c);

/* A conditioner's description of what it encoded, for an image's metadata. */
typedef struct dfx_conditioner_info {
    const char *prompt;           /* or NULL */
    const char *negative_prompt;  /* or NULL */
} dfx_conditioner_info;

typedef struct dfx_conditioner_ops {
    /* required: the conditioning of `batch` samples; the unconditional
     * half only when `uncond` (guidance asks for it) */
    dfx_status (*encode)(void *priv, int64_t batch, bool uncond, dfx_conditioning *out);
    /* optional: what it encodes, for metadata */
    void (*info)(void *priv, dfx_conditioner_info *info);
} dfx_conditioner_ops;

/* ---- guidance --------------------------------------------------------- */

/* The core's side of one guided evaluation: the model and both
 * conditionings. */
typedef struct dfx_guiding dfx_guiding;

/* Evaluates the model on its input x (a batch of B, already scaled as the
 * model takes it) at level lv with the unconditional and the conditional
 * conditioning, as one batch of 2B (unconditional first, as diffusers
 * does). *uncond and *cond receive the raw outputs, [B, ...] each, shaped
 * as the model's output (C doubled with learned variance); they belong to
 * the core and stay valid until the next call. Pass NULL for either to
 * evaluate only the other half (B items). */
DFX_API dfx_status dfx_guiding_model(dfx_guiding *g, const dfx_tensor *x, const dfx_level *lv,
                                     const dfx_tensor **uncond, const dfx_tensor **cond);

typedef struct dfx_guidance_ops {
    /* required: out = the guided raw model output for the model input x at
     * lv, mixed in the model's own prediction space (noise, v, ...), as
     * diffusers mixes noise predictions. With learned variance the core
     * then replaces the variance channels by the conditional ones. */
    dfx_status (*guide)(void *priv, dfx_guiding *g, const dfx_tensor *x, const dfx_level *lv, dfx_tensor *out);
    /* optional: whether guide() needs the unconditional conditioning
     * (default true) */
    bool (*needs_uncond)(void *priv);
    /* optional: the scale to report in metadata ("CFG scale") */
    double (*scale)(void *priv);
} dfx_guidance_ops;

/* ---- codecs ----------------------------------------------------------- */

typedef struct dfx_codec_info {
    int64_t latent_channels;  /* channels of the diffusion space */
    int64_t downscale;        /* data height / latent height */
    int64_t data_channels;    /* 3 for RGB images */
} dfx_codec_info;

typedef struct dfx_codec_ops {
    /* required */
    void (*info)(void *priv, dfx_codec_info *info);
    /* required: data [B, data_channels, h*f, w*f] in [-1, 1] from latents
     * [B, latent_channels, h, w] (any scaling factor is the codec's) */
    dfx_status (*decode)(void *priv, const dfx_tensor *z, dfx_tensor *out);
    /* optional: latents from data; a posterior sample drawn with rng, or
     * its mean when rng is NULL */
    dfx_status (*encode)(void *priv, const dfx_tensor *x, dfx_rng *rng, dfx_tensor *out);
} dfx_codec_ops;

typedef struct dfx_sampler_ops {
    /* required: integrate x in place from levels[0] to levels[steps]. x is in
     * the schedule's parametrisation at both ends. Allocate scratch here, not
     * per step. */
    dfx_status (*sample)(void *priv, dfx_sampling *s, const dfx_schedule *sched,
                         dfx_tensor *x);
    /* optional: model evaluations sample() will make (default: steps) */
    int64_t (*evaluations)(void *priv, const dfx_schedule *sched);
    /* optional: the initial-noise scale the sampler expects when the schedule
     * says AUTO (default: UNIT) */
    dfx_init_noise (*init_noise)(void *priv);
} dfx_sampler_ops;

#ifdef __cplusplus
}
#endif
#endif
