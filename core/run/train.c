/* The training driver of `pipeline: train`: batches from a dataset, the
 * forward process at uniformly drawn training steps, the model's output on
 * a tape, the loss, AdamW with warm-up and clipping, the EMA of the weights,
 * and checkpoints written as a whole folder that replaces the previous one
 * only once complete. Every random draw of step s comes from a generator
 * seeded with (seed, s) and the batches from the loader's pure function of
 * s, so a run resumed from a checkpoint continues exactly as an
 * uninterrupted one. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"
#include "core/run/run.h"
#include "dfx/data.h"
#include "dfx/grad.h"
#include "dfx/safetensors.h"

static const char *const lr_schedule_names[] = {"constant", "cosine", NULL};
static const char *const objective_names[] = {"denoise", "classify", NULL};
static const char *const loss_names[] = {"simple", "hybrid", NULL};

const dfx_option dfx__train_options[] = {
    DFX_OPTION_ENUM("objective", offsetof(dfx__train_opts, objective), 0, objective_names,
                    "denoise: the diffusion loss (MSE of the model's prediction at a uniformly drawn "
                    "training step, DDPM's L_simple for epsilon); classify: cross-entropy of a "
                    "classifier's logits against the data's labels"),
    DFX_OPTION_ENUM("loss", offsetof(dfx__train_opts, loss), 0, loss_names,
                    "with denoise: simple (the MSE of the prediction), or hybrid: IDDPM's L_simple + "
                    "L_vlb / 1000 per training step for a model that learns its variance (Nichol & "
                    "Dhariwal 2021, sec. 3.1), the vlb not reaching the mean"),
    DFX_OPTION_INT("steps", offsetof(dfx__train_opts, steps), 10000, 1, 1e12, "optimiser steps"),
    DFX_OPTION_INT("batch", offsetof(dfx__train_opts, batch), 64, 1, 1e6, "items a step"),
    DFX_OPTION_FLOAT("lr", offsetof(dfx__train_opts, lr), 2e-4, 0, 1, "peak learning rate"),
    DFX_OPTION_INT("warmup", offsetof(dfx__train_opts, warmup), 0, 0, 1e12,
                   "steps over which the learning rate rises linearly from 0 to lr"),
    DFX_OPTION_ENUM("lr_schedule", offsetof(dfx__train_opts, lr_schedule), 0, lr_schedule_names,
                    "after warm-up: constant, or cosine decay to 0 at the last step"),
    DFX_OPTION_FLOAT("beta1", offsetof(dfx__train_opts, beta1), 0.9, 0, 0.999999, "AdamW beta1"),
    DFX_OPTION_FLOAT("beta2", offsetof(dfx__train_opts, beta2), 0.999, 0, 0.999999, "AdamW beta2"),
    DFX_OPTION_FLOAT("eps", offsetof(dfx__train_opts, eps), 1e-8, 1e-30, 1, "AdamW epsilon"),
    DFX_OPTION_FLOAT("weight_decay", offsetof(dfx__train_opts, weight_decay), 0, 0, 1,
                     "AdamW decoupled weight decay"),
    DFX_OPTION_FLOAT("grad_clip", offsetof(dfx__train_opts, grad_clip), 1.0, 0, 1e12,
                     "largest global L2 norm of the gradients (clip_grad_norm_); 0: no clipping"),
    DFX_OPTION_FLOAT("ema_decay", offsetof(dfx__train_opts, ema_decay), 0.9999, 0, 0.999999999,
                     "decay of the weights' moving average (with diffusers' warm-up); 0: no EMA, "
                     "the checkpoint holds the raw weights"),
    DFX_OPTION_INT("checkpoint_every", offsetof(dfx__train_opts, checkpoint_every), 1000, 1, 1e12,
                   "steps between checkpoints (one is also written at the end and on interruption)"),
    DFX_OPTION_INT("log_every", offsetof(dfx__train_opts, log_every), 100, 1, 1e12,
                   "steps a line of the loss log covers (train_log.csv; printed when not on a "
                   "terminal)"),
    DFX_OPTION_END,
};

const dfx_option dfx__train_data_options[] = {
    DFX_OPTION_PATH("images", offsetof(dfx__train_data, images),
                    "an idx file of u8 images (.gz or not; Fashion-MNIST's train-images-idx3-ubyte.gz) "
                    "or a folder of PNGs"),
    DFX_OPTION_PATH("labels", offsetof(dfx__train_data, labels),
                    "with idx images: the idx file of their labels"),
    DFX_OPTION_INTS("pad_to", offsetof(dfx__train_data, pad_to), 1, 1 << 16,
                    "[height, width] the images are padded to (centred, border -1), e.g. [32, 32] "
                    "for 28x28 images"),
    DFX_OPTION_BOOL("hflip", offsetof(dfx__train_data, hflip), false,
                    "mirror each item left-right with probability 1/2"),
    DFX_OPTION_BOOL("shuffle", offsetof(dfx__train_data, shuffle), true,
                    "each epoch in its own random order"),
    DFX_OPTION_END,
};

/* ---- the run's state ---------------------------------------------------- */

typedef struct log_line {
    int64_t step;    /* the last step it covers */
    double loss;     /* mean over the steps it covers */
} log_line;

typedef struct trainer {
    const dfx__train_job *job;
    const dfx_model_ops *mops;
    void *model;
    dfx_params *params;
    dfx_adamw *opt;
    dfx_ema *ema;
    dfx_tape *tape;
    dfx_dataset *data;
    dfx_loader *loader;
    int64_t shape[4];       /* a batch */
    float *x0, *eps, *xt;
    double *t_model;
    int64_t *steps_drawn;
    float *sigma;                /* per item: sigma / |(alpha, sigma)| (alpha for VE) drawn */
    float *in_scale;             /* per item: what x_t is scaled by for the network */
    dfx_input_scale input_scale;
    int64_t *labels;
    dfx_vlb_item *vlb;           /* hybrid loss: the bound's coefficients per item */
    const char *folder, *stem;   /* the model's checkpoint layout */
    log_line *log;
    int64_t n_log, cap_log;
    double log_sum;
    int64_t log_count;
    int64_t done;           /* steps completed */
} trainer;

static uint64_t mix(uint64_t x)
{
    /* splitmix64's finaliser */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static double learning_rate(const dfx__train_opts *o, int64_t step)
{
    if (o->warmup > 0 && step < o->warmup)
        return o->lr * (double)(step + 1) / (double)o->warmup;
    if (o->lr_schedule == 1) {
        const double span = (double)(o->steps - o->warmup);
        const double pos = span > 0 ? (double)(step - o->warmup) / span : 1.0;
        return o->lr * 0.5 * (1.0 + cos(M_PI * pos));
    }
    return o->lr;
}

/* ---- checkpoints -------------------------------------------------------- */

static dfx_status write_text(const char *dir, const char *name, const char *text)
{
    char *path = dfx__path_join(dir, name);
    if (!path)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    FILE *f = fopen(path, "wb");
    dfx_status st = DFX_OK;
    if (!f || fputs(text, f) == EOF)
        st = dfx_error_set(DFX_ERR_IO, "%s: %s", path, strerror(errno));
    if (f && fclose(f) && !st)
        st = dfx_error_set(DFX_ERR_IO, "%s: %s", path, strerror(errno));
    free(path);
    return st;
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *sub = dfx__path_join(path, e->d_name);
        if (sub)
            remove_tree(sub);
        free(sub);
    }
    closedir(d);
    rmdir(path);
}

/* tensors named PREFIX + parameter name, over the arrays get(i) */
static dfx_status write_param_arrays(trainer *tr, const char *path, const char *prefix,
                                     float *(*get)(trainer *, int64_t), int64_t meta_count,
                                     const char *const *keys, const char *const *values)
{
    const int64_t n = dfx_params_count(tr->params);
    char **names = calloc((size_t)n, sizeof *names);
    dfx_tensor *views = calloc((size_t)n, sizeof *views);
    const dfx_tensor **ptrs = calloc((size_t)n, sizeof *ptrs);
    dfx_status st = DFX_OK;
    if (!names || !views || !ptrs)
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    for (int64_t i = 0; !st && i < n; i++) {
        const dfx_param *q = dfx_params_get(tr->params, i);
        const size_t len = strlen(prefix) + strlen(q->name) + 1;
        if (!(names[i] = malloc(len))) {
            st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
            break;
        }
        snprintf(names[i], len, "%s%s", prefix, q->name);
        views[i] = dfx_tensor_view(DFX_DTYPE_F32, q->ndim, q->shape, get(tr, i));
        ptrs[i] = &views[i];
    }
    if (!st)
        st = dfx_safetensors_write(path, n, (const char *const *)names, ptrs, meta_count, keys,
                                   values);
    for (int64_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    free(views);
    free(ptrs);
    return st;
}

static float *get_data(trainer *tr, int64_t i)
{
    return dfx_params_get(tr->params, i)->data;
}

static float *get_ema(trainer *tr, int64_t i)
{
    return dfx_ema_shadow(tr->ema, i);
}

static float *get_m(trainer *tr, int64_t i)
{
    return dfx_adamw_m(tr->opt, i);
}

static float *get_v(trainer *tr, int64_t i)
{
    return dfx_adamw_v(tr->opt, i);
}

static dfx_status write_log(const trainer *tr, const char *dir)
{
    char *path = dfx__path_join(dir, "train_log.csv");
    if (!path)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    FILE *f = fopen(path, "wb");
    dfx_status st = DFX_OK;
    if (!f) {
        st = dfx_error_set(DFX_ERR_IO, "%s: %s", path, strerror(errno));
    } else {
        fprintf(f, "step,loss\n");
        for (int64_t i = 0; i < tr->n_log; i++)
            fprintf(f, "%lld,%.9g\n", (long long)tr->log[i].step, tr->log[i].loss);
        if (ferror(f))
            st = dfx_error_set(DFX_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        if (fclose(f) && !st)
            st = dfx_error_set(DFX_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    }
    free(path);
    return st;
}

/* A diffusers DDPMScheduler config for the training table (as trained_betas,
 * which any schedule can be written as) and the prediction type, so that
 * the folder samples as it was trained. */
static dfx_status write_scheduler_config(const trainer *tr, const char *root)
{
    char *dir = dfx__path_join(root, "scheduler");
    if (!dir || mkdir(dir, 0777)) {
        dfx_status st = dfx_error_set(DFX_ERR_IO, "%s: %s", dir ? dir : root, strerror(errno));
        free(dir);
        return st;
    }
    const dfx_schedule *s = tr->job->schedule;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    dfx_status st = DFX_OK;
    if (!f) {
        free(dir);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    }
    static const char *const kinds[] = {"epsilon", "epsilon", "v_prediction", "sample", "epsilon"};
    fprintf(f, "{\n  \"_class_name\": \"DDPMScheduler\",\n  \"_diffusers_version\": \"0.27.2\",\n"
               "  \"num_train_timesteps\": %lld,\n  \"prediction_type\": \"%s\",\n"
               "  \"clip_sample\": true,\n  \"variance_type\": \"%s\",\n"
               "  \"trained_betas\": [",
            (long long)s->train_steps, kinds[tr->job->prediction],
            tr->vlb ? "learned_range" : "fixed_small");
    for (int64_t i = 0; i < s->train_steps; i++) {
        const double prev = i ? s->train_alpha_bar[i - 1] : 1.0;
        fprintf(f, "%s%.17g", i ? ", " : "", 1.0 - s->train_alpha_bar[i] / prev);
    }
    fprintf(f, "]\n}\n");
    fclose(f);
    if (!text)
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    else
        st = write_text(dir, "scheduler_config.json", text);
    free(text);
    free(dir);
    return st;
}

/* Writes the checkpoint of `done` steps into OUT.tmp, then swaps it in for
 * OUT: the previous checkpoint stays whole until the new one is. */
static dfx_status save_checkpoint(trainer *tr)
{
    const char *out = tr->job->out;
    char *tmp = malloc(strlen(out) + 8), *old = malloc(strlen(out) + 8);
    char *unet = NULL, *file = NULL, *state = NULL, *weights = NULL;
    dfx_status st = DFX_OK;
    if (!tmp || !old) {
        free(tmp);
        free(old);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    }
    sprintf(tmp, "%s.tmp", out);
    sprintf(old, "%s.old", out);
    remove_tree(tmp);
    if (mkdir(tmp, 0777) || !(unet = dfx__path_join(tmp, tr->folder)) || mkdir(unet, 0777)) {
        st = dfx_error_set(DFX_ERR_IO, "%s: cannot create the checkpoint folder: %s", tmp,
                           strerror(errno));
        goto done;
    }
    char step[32], ema_n[32], adam_n[32], seed[32];
    snprintf(step, sizeof step, "%lld", (long long)tr->done);
    snprintf(ema_n, sizeof ema_n, "%lld", tr->ema ? (long long)dfx_ema_updates(tr->ema) : 0LL);
    snprintf(adam_n, sizeof adam_n, "%lld", (long long)dfx_adamw_steps(tr->opt));
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)tr->job->seed);
    const char *keys[] = {"format", "step", "ema_updates", "adam_steps", "seed"};
    const char *values[] = {"dfx-train-1", step, ema_n, adam_n, seed};
    /* the weights a pipeline samples with: the average when there is one */
    const size_t wl = strlen(tr->stem) + 16;
    if ((weights = malloc(wl)))
        snprintf(weights, wl, "%s.safetensors", tr->stem);
    if (!weights || !(file = dfx__path_join(unet, weights)) ||
        !(state = dfx__path_join(tmp, "train_state.safetensors"))) {
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    const char *const wkeys[] = {"format", "step"};
    const char *const wvalues[] = {"pt", step};
    if ((st = write_param_arrays(tr, file, "", tr->ema ? get_ema : get_data, 2, wkeys, wvalues)) ||
        (st = tr->mops->save_config(tr->model, unet)) ||
        (tr->job->opts->objective == 0 && !strcmp(tr->folder, "unet") &&
         ((st = write_text(tmp, "model_index.json",
                           "{\n  \"_class_name\": \"DDPMPipeline\",\n  \"_diffusers_version\": "
                           "\"0.27.2\",\n  \"scheduler\": [\"diffusers\", \"DDPMScheduler\"],\n"
                           "  \"unet\": [\"diffusers\", \"UNet2DModel\"]\n}\n")) ||
          (st = write_scheduler_config(tr, tmp)))) ||
        (st = write_text(tmp, "train.yaml", tr->job->pipeline_text)) ||
        (st = write_log(tr, tmp)))
        goto done;
    /* the rest of the state: raw weights and the optimiser's moments */
    {
        dfx_status s1 = write_param_arrays(tr, state, "", get_data, 5, keys, values);
        char *mpath = s1 ? NULL : dfx__path_join(tmp, "adam_m.safetensors");
        char *vpath = s1 ? NULL : dfx__path_join(tmp, "adam_v.safetensors");
        if (!s1 && (!mpath || !vpath))
            s1 = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        if (!s1)
            s1 = write_param_arrays(tr, mpath, "", get_m, 0, NULL, NULL);
        if (!s1)
            s1 = write_param_arrays(tr, vpath, "", get_v, 0, NULL, NULL);
        free(mpath);
        free(vpath);
        if ((st = s1))
            goto done;
    }
    remove_tree(old);
    struct stat sb;
    const bool had = stat(out, &sb) == 0;
    if ((had && rename(out, old)) || rename(tmp, out)) {
        st = dfx_error_set(DFX_ERR_IO, "%s: cannot move the new checkpoint in place: %s", out,
                           strerror(errno));
        if (had)
            rename(old, out);
        goto done;
    }
    remove_tree(old);
done:
    if (st) {
        remove_tree(tmp);
        dfx_error_prefix(st, "checkpoint at step %lld not written (the previous one is kept): ",
                         (long long)tr->done);
    }
    free(unet);
    free(weights);
    free(file);
    free(state);
    free(tmp);
    free(old);
    return st;
}

/* reads the arrays of a checkpoint file into get(i), checking names and
 * shapes against the parameters */
static dfx_status read_param_arrays(trainer *tr, const char *dir, const char *name,
                                    float *(*get)(trainer *, int64_t), dfx_safetensors **keep)
{
    char *path = dfx__path_join(dir, name);
    if (!path)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    dfx_safetensors *st_file;
    dfx_status st = dfx_safetensors_open(path, &st_file);
    for (int64_t i = 0; !st && i < dfx_params_count(tr->params); i++) {
        const dfx_param *q = dfx_params_get(tr->params, i);
        dfx_tensor v;
        if ((st = dfx_safetensors_view(st_file, q->name, &v)))
            break;
        if (v.dtype != DFX_DTYPE_F32 || v.ndim != q->ndim ||
            memcmp(v.shape, q->shape, (size_t)q->ndim * sizeof *q->shape)) {
            st = dfx_error_set(DFX_ERR_FORMAT,
                               "%s: tensor '%s' does not match the model's parameter (a checkpoint "
                               "of another configuration?)", path, q->name);
            break;
        }
        memcpy(get(tr, i), v.data, (size_t)q->numel * sizeof(float));
    }
    if (!st && dfx_safetensors_count(st_file) != dfx_params_count(tr->params))
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: %lld tensors, the model has %lld parameters", path,
                           (long long)dfx_safetensors_count(st_file),
                           (long long)dfx_params_count(tr->params));
    if (!st && keep)
        *keep = st_file;
    else
        dfx_safetensors_close(st_file);
    free(path);
    return st;
}

static dfx_status meta_int(dfx_safetensors *f, const char *key, int64_t *out)
{
    const char *s = dfx_safetensors_metadata(f, key);
    char *end;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || errno || *end || v < 0)
        return dfx_error_set(DFX_ERR_FORMAT, "%s: metadata '%s' is missing or not a count",
                             dfx_safetensors_path(f), key);
    *out = v;
    return DFX_OK;
}

static dfx_status read_log(trainer *tr, const char *dir)
{
    char *path = dfx__path_join(dir, "train_log.csv");
    if (!path)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    dfx_csv *csv;
    dfx_status st = dfx_csv_read(path, NULL, &csv);
    free(path);
    if (st)
        return st;
    for (int64_t r = 0; !st && r < dfx_csv_rows(csv); r++) {
        double step, loss;
        if (!(st = dfx_csv_number(csv, r, 0, &step)) && !(st = dfx_csv_number(csv, r, 1, &loss))) {
            if (tr->n_log == tr->cap_log) {
                const int64_t cap = tr->cap_log ? 2 * tr->cap_log : 256;
                log_line *l = realloc(tr->log, (size_t)cap * sizeof *l);
                if (!l) {
                    st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
                    break;
                }
                tr->log = l;
                tr->cap_log = cap;
            }
            tr->log[tr->n_log++] = (log_line){(int64_t)step, loss};
        }
    }
    dfx_csv_destroy(csv);
    return st;
}

static dfx_status resume(trainer *tr)
{
    const char *dir = tr->job->out;
    dfx_safetensors *state = NULL;
    dfx_status st = read_param_arrays(tr, dir, "train_state.safetensors", get_data, &state);
    int64_t step = 0, ema_n = 0, adam_n = 0;
    if (!st && !(st = meta_int(state, "step", &step)) && !(st = meta_int(state, "ema_updates", &ema_n)))
        st = meta_int(state, "adam_steps", &adam_n);
    if (!st) {
        const char *seed = dfx_safetensors_metadata(state, "seed");
        char want[32];
        snprintf(want, sizeof want, "%llu", (unsigned long long)tr->job->seed);
        if (!seed || strcmp(seed, want))
            st = dfx_error_set(DFX_ERR_CONFIG,
                               "%s: the checkpoint was trained with seed %s, the pipeline says %s: "
                               "resuming would not continue that run", dir, seed ? seed : "?", want);
    }
    dfx_safetensors_close(state);
    if (!st)
        st = read_param_arrays(tr, dir, "adam_m.safetensors", get_m, NULL);
    if (!st)
        st = read_param_arrays(tr, dir, "adam_v.safetensors", get_v, NULL);
    if (!st && tr->ema) {
        char rel[512];
        snprintf(rel, sizeof rel, "%s/%s.safetensors", tr->folder, tr->stem);
        st = read_param_arrays(tr, dir, rel, get_ema, NULL);
    }
    if (!st)
        st = read_log(tr, dir);
    if (st)
        return dfx_error_prefix(st, "--resume: ");
    if (step > tr->job->opts->steps)
        return dfx_error_set(DFX_ERR_CONFIG, "--resume: %s is at step %lld, beyond train.steps %lld",
                             dir, (long long)step, (long long)tr->job->opts->steps);
    tr->done = step;
    dfx_adamw_set_steps(tr->opt, adam_n);
    if (tr->ema)
        dfx_ema_set_updates(tr->ema, ema_n);
    return DFX_OK;
}

/* ---- one step ----------------------------------------------------------- */

/* The posterior q(x_{t-1} | x_t, x0) of DDPM eq. 6-7 and the model's mean
 * through x0's estimate from eps, as L_vlb needs them (the variance
 * clipped at t = 0 to step 1's, as IDDPM does). */
static void vlb_coefficients(const dfx_schedule *s, int64_t t, dfx_vlb_item *it)
{
    const double *ab = s->train_alpha_bar;
    const double a = ab[t], ap = t ? ab[t - 1] : 1.0, beta = 1 - a / ap;
    const double post1 = (1 - ab[1] / ab[0]) * (1 - ab[0]) / (1 - ab[1]);
    const double post = t ? beta * (1 - ap) / (1 - a) : post1;
    const double c1 = beta * sqrt(ap) / (1 - a), c2 = (1 - ap) * sqrt(1 - beta) / (1 - a);
    *it = (dfx_vlb_item){c1, c2, c1 / sqrt(a) + c2, -c1 * sqrt(1 - a) / sqrt(a), log(post),
                         log(beta), t == 0};
}

/* x_t and the target of the model's prediction for batch `step` */
static dfx_status make_batch(trainer *tr, int64_t step, float *target)
{
    const dfx__train_job *job = tr->job;
    dfx_status st = dfx_loader_batch(tr->loader, step, tr->x0, tr->labels);
    if (st || job->opts->objective == 1)
        return st;
    dfx_rng *rng;
    if ((st = dfx_rng_create(&rng, mix(job->seed ^ mix((uint64_t)step)))))
        return st;
    const int64_t b = tr->shape[0], per = tr->shape[1] * tr->shape[2] * tr->shape[3];
    /* a step of the training table, or a level of a fine plan of a
     * continuous schedule (uniform in time: geometric sigmas for VE) */
    const dfx_schedule *sc = job->schedule;
    const int64_t T = sc->train_steps ? sc->train_steps : sc->steps;
    for (int64_t i = 0; i < b; i++) {
        /* uniform on [0, T) without modulo bias */
        const uint32_t lim = UINT32_MAX - UINT32_MAX % (uint32_t)T;
        uint32_t u;
        do
            u = dfx_rng_u32(rng);
        while (u >= lim);
        tr->steps_drawn[i] = u % (uint32_t)T;
        tr->t_model[i] = sc->train_steps ? (double)tr->steps_drawn[i]
                                         : sc->levels[tr->steps_drawn[i]].t_model;
    }
    dfx_rng_normal(rng, tr->eps, b * per);
    dfx_rng_destroy(rng);
    for (int64_t i = 0; tr->vlb && i < b; i++)
        vlb_coefficients(job->schedule, tr->steps_drawn[i], &tr->vlb[i]);
    for (int64_t i = 0; i < b; i++) {
        double ad, sd;
        if (sc->train_steps) {
            const double ab = sc->train_alpha_bar[tr->steps_drawn[i]];
            ad = sqrt(ab);
            sd = sqrt(1.0 - ab);
        } else {
            ad = sc->levels[tr->steps_drawn[i]].alpha;
            sd = sc->levels[tr->steps_drawn[i]].sigma;
        }
        /* what the sampler feeds the network (dfx_input_scale), computed
         * as it does: in double, so a variance-preserving level is not
         * scaled at all */
        const double k = tr->input_scale == DFX_INPUT_SCALE_VE ? ad : sqrt(ad * ad + sd * sd);
        tr->in_scale[i] = (float)(1.0 / k);
        /* the sampler's b: eps = -b * score (core/run/sampling.c) */
        tr->sigma[i] = (float)(sd / k);
        const float a = (float)ad, s = (float)sd;
        const float *x0 = tr->x0 + i * per, *e = tr->eps + i * per;
        float *xt = tr->xt + i * per, *tg = target + i * per;
        for (int64_t j = 0; j < per; j++) {
            xt[j] = a * x0[j] + s * e[j];
            switch (job->prediction) {
            case DFX_PREDICTION_V: tg[j] = a * e[j] - s * x0[j]; break;
            case DFX_PREDICTION_SAMPLE: tg[j] = x0[j]; break;
            /* denoising score matching weighted by sigma^2 (Song & Ermon
             * 2019): sigma * score against -eps */
            case DFX_PREDICTION_SCORE: tg[j] = -e[j]; break;
            default: tg[j] = e[j]; break;
            }
        }
    }
    return DFX_OK;
}

static dfx_status train_step(trainer *tr, int64_t step, double *loss_out)
{
    dfx_tape *t = tr->tape;
    dfx_tape_reset(t);
    dfx_var *x = dfx_tape_new(t, 4, tr->shape, false);
    dfx_var *target = dfx_tape_new(t, 4, tr->shape, false);
    if (!x || !target)
        return dfx_tape_status(t);
    dfx_status st = make_batch(tr, step, target->data);
    if (st)
        return st;
    const bool classify = tr->job->opts->objective == 1;
    const int64_t per = x->numel / tr->shape[0];
    if (classify) {
        memcpy(x->data, tr->x0, (size_t)x->numel * sizeof(float));
    } else {
        float *xd = x->data;
        for (int64_t i = 0; i < x->numel; i++)
            xd[i] = tr->xt[i] * tr->in_scale[i / per];
    }
    if (classify)
        memset(tr->t_model, 0, (size_t)tr->shape[0] * sizeof *tr->t_model);
    dfx_model_input in = {.x = NULL, .t_model = tr->t_model};
    dfx_var *out = tr->mops->train_forward(tr->model, t, tr->params, x, &in);
    dfx_var *loss;
    if (classify) {
        loss = dfx_g_cross_entropy(t, out, tr->labels);
    } else if (tr->vlb) {
        /* [eps, v]: L_simple on eps, the bound on v with eps held fixed,
         * weighted T / 1000 (IDDPM's lambda = 0.001 on the sum over T) */
        const int64_t c = tr->shape[1];
        dfx_var *eps = dfx_g_slice1(t, out, 0, c);
        dfx_var *vlb = eps ? dfx_g_iddpm_vlb(t, dfx_g_slice1(t, out, c, c), tr->x0, tr->xt,
                                             eps->data, tr->vlb)
                           : NULL;
        const int64_t one = 1;
        loss = dfx_g_add(t, dfx_g_reshape(t, dfx_g_mse(t, eps, target), 1, &one),
                         dfx_g_reshape(t, dfx_g_scale(t, vlb, (double)tr->job->schedule->train_steps /
                                                                  1000.0),
                                       1, &one));
    } else if (tr->job->prediction == DFX_PREDICTION_SCORE) {
        dfx_var *sig = dfx_tape_new(t, 4, tr->shape, false);
        for (int64_t i = 0; sig && i < sig->numel; i++)
            ((float *)sig->data)[i] = tr->sigma[i / per];
        loss = dfx_g_mse(t, dfx_g_mul(t, out, sig), target);
    } else {
        loss = dfx_g_mse(t, out, target);
    }
    if (!loss)
        return dfx_error_prefix(dfx_tape_status(t), "%s: ", tr->job->model->what);
    *loss_out = dfx_var_get(loss, 0);
    if (!isfinite(*loss_out))
        return DFX_OK;
    dfx_params_zero_grad(tr->params);
    if ((st = dfx_tape_backward(t, loss)))
        return st;
    const dfx__train_opts *o = tr->job->opts;
    dfx_params_clip_grad(tr->params, o->grad_clip);
    dfx_adamw_step(tr->opt, learning_rate(o, step));
    if (tr->ema)
        dfx_ema_update(tr->ema);
    return DFX_OK;
}

static dfx_status note_loss(trainer *tr, int64_t step, double loss)
{
    tr->log_sum += loss;
    tr->log_count++;
    if ((step + 1) % tr->job->opts->log_every && step + 1 != tr->job->opts->steps)
        return DFX_OK;
    if (tr->n_log == tr->cap_log) {
        const int64_t cap = tr->cap_log ? 2 * tr->cap_log : 256;
        log_line *l = realloc(tr->log, (size_t)cap * sizeof *l);
        if (!l)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        tr->log = l;
        tr->cap_log = cap;
    }
    tr->log[tr->n_log++] = (log_line){step + 1, tr->log_sum / (double)tr->log_count};
    tr->log_sum = 0;
    tr->log_count = 0;
    return DFX_OK;
}

/* ---- the run ------------------------------------------------------------ */

static dfx_status open_data(trainer *tr)
{
    const dfx__train_data *d = tr->job->data;
    if (!d->images)
        return dfx_error_set(DFX_ERR_CONFIG, "%s: data: give images (an idx file or a folder of PNGs)",
                             tr->job->origin);
    struct stat sb;
    dfx_status st = stat(d->images, &sb) == 0 && S_ISDIR(sb.st_mode)
                        ? dfx_dataset_open_png_dir(d->images, &tr->data)
                        : dfx_dataset_open_idx(d->images, d->labels, &tr->data);
    if (st)
        return dfx_error_prefix(st, "data: ");
    dfx_loader_options lo;
    dfx_loader_options_init(&lo);
    lo.shuffle = d->shuffle;
    lo.hflip = d->hflip;
    if (d->pad_to.n) {
        if (d->pad_to.n != 2)
            return dfx_error_set(DFX_ERR_CONFIG, "%s: data.pad_to: expected [height, width]",
                                 tr->job->origin);
        lo.pad_h = (int)d->pad_to.v[0];
        lo.pad_w = (int)d->pad_to.v[1];
    }
    if ((st = dfx_loader_create(tr->data, tr->job->opts->batch, tr->job->seed, &lo, &tr->loader)))
        return dfx_error_prefix(st, "data: ");
    dfx_loader_shape(tr->loader, tr->shape);
    return DFX_OK;
}

static dfx_status setup(trainer *tr)
{
    const dfx__train_job *job = tr->job;
    if (!tr->mops->train_params)
        return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s cannot be trained (the plugin has no training "
                                                  "ops)", job->model->what);
    dfx_model_info info;
    tr->mops->info(tr->model, &info);
    tr->folder = info.checkpoint_folder;
    tr->stem = info.checkpoint_stem;
    if (!tr->folder || !tr->stem)
        return dfx_error_set(DFX_ERR_PLUGIN, "%s: trains but names no checkpoint folder and stem",
                             job->model->what);
    const bool classify = job->opts->objective == 1;
    if (classify && info.classes < 1)
        return dfx_error_set(DFX_ERR_CONFIG, "%s: train.objective is classify but %s is not a "
                                             "classifier", job->origin, job->model->what);
    if (!classify && info.classes > 0)
        return dfx_error_set(DFX_ERR_CONFIG, "%s: %s is a classifier: set train.objective: classify",
                             job->origin, job->model->what);
    if (classify) {
        /* no schedule is used */
    } else if ((job->schedule->train_steps < 1 || !job->schedule->train_alpha_bar) &&
               job->schedule->steps < 2)
        return dfx_error_set(DFX_ERR_CONFIG, "%s: the scheduler has no training table (alphas_cumprod); "
                                             "training draws its steps from one (e.g. scheduler: "
                                             "{type: betas})", job->origin);
    if (!classify && job->opts->loss == 1 &&
        (!info.learned_variance || job->prediction != DFX_PREDICTION_EPSILON))
        return dfx_error_set(DFX_ERR_CONFIG, "%s: train.loss hybrid needs a model that predicts "
                                             "epsilon and learns its variance (out_channels twice "
                                             "in_channels)", job->origin);
    if (!classify && job->opts->loss == 0 && info.learned_variance)
        return dfx_error_set(DFX_ERR_CONFIG, "%s: the model learns its variance: train it with "
                                             "train.loss: hybrid", job->origin);
    if (!classify && job->opts->loss == 1 && job->schedule->train_steps < 1)
        return dfx_error_set(DFX_ERR_CONFIG, "%s: train.loss hybrid needs a discrete schedule with "
                                             "a training table (e.g. scheduler: {type: linear})",
                             job->origin);
    tr->input_scale = info.input_scale;
    dfx_status st = open_data(tr);
    if (st)
        return st;
    if (classify && !dfx_dataset_has_labels(tr->data))
        return dfx_error_set(DFX_ERR_CONFIG, "%s: classify needs labels: set data.labels", job->origin);
    const int64_t n = tr->shape[0] * tr->shape[1] * tr->shape[2] * tr->shape[3];
    tr->x0 = malloc((size_t)n * sizeof(float));
    tr->eps = malloc((size_t)n * sizeof(float));
    tr->xt = malloc((size_t)n * sizeof(float));
    tr->t_model = malloc((size_t)tr->shape[0] * sizeof(double));
    tr->steps_drawn = malloc((size_t)tr->shape[0] * sizeof(int64_t));
    tr->sigma = malloc((size_t)tr->shape[0] * sizeof(float));
    tr->in_scale = malloc((size_t)tr->shape[0] * sizeof(float));
    if (!tr->sigma || !tr->in_scale)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory for a batch");
    if (classify && !(tr->labels = malloc((size_t)tr->shape[0] * sizeof(int64_t))))
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory for a batch");
    if (!classify && job->opts->loss == 1 &&
        !(tr->vlb = malloc((size_t)tr->shape[0] * sizeof *tr->vlb)))
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory for a batch");
    if (!tr->x0 || !tr->eps || !tr->xt || !tr->t_model || !tr->steps_drawn)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory for a batch");
    dfx_adamw_params hp;
    dfx_adamw_params_init(&hp);
    hp.beta1 = job->opts->beta1;
    hp.beta2 = job->opts->beta2;
    hp.eps = job->opts->eps;
    hp.weight_decay = job->opts->weight_decay;
    if ((st = dfx_params_create(&tr->params)) ||
        (st = tr->mops->train_params(tr->model, tr->params)) ||
        (st = dfx_adamw_create(&tr->opt, tr->params, &hp)) ||
        (job->opts->ema_decay > 0 && (st = dfx_ema_create(&tr->ema, tr->params, job->opts->ema_decay))) ||
        (st = dfx_tape_create(&tr->tape, DFX_DTYPE_F32)))
        return st;
    return job->resume ? resume(tr) : DFX_OK;
}

static void teardown(trainer *tr)
{
    dfx_tape_destroy(tr->tape);
    dfx_ema_destroy(tr->ema);
    dfx_adamw_destroy(tr->opt);
    dfx_params_destroy(tr->params);
    dfx_loader_destroy(tr->loader);
    dfx_dataset_destroy(tr->data);
    free(tr->x0);
    free(tr->eps);
    free(tr->xt);
    free(tr->t_model);
    free(tr->steps_drawn);
    free(tr->sigma);
    free(tr->in_scale);
    free(tr->labels);
    free(tr->vlb);
    free(tr->log);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

dfx_status dfx__train_run(const dfx__train_job *job)
{
    trainer tr = {.job = job, .mops = job->model->comp->ops, .model = job->model->priv};
    dfx_status st = setup(&tr);
    const dfx__train_opts *o = job->opts;
    if (!st && job->progress)
        fprintf(job->progress, "training %s: %lld parameters, batches of [%lld,%lld,%lld,%lld], "
                "steps %lld to %lld\n", job->model->what, (long long)dfx_params_numel(tr.params),
                (long long)tr.shape[0], (long long)tr.shape[1], (long long)tr.shape[2],
                (long long)tr.shape[3], (long long)tr.done + 1, (long long)o->steps);
    dfx__progress pg;
    dfx__progress_start(&pg, job->progress_tty ? job->progress : NULL, true, "training", o->steps);
    pg.done = pg.first = tr.done;
    const double t0 = now();
    int64_t last_saved = tr.done;
    double smooth = NAN;
    while (!st && tr.done < o->steps) {
        const int64_t step = tr.done;
        double loss = NAN;
        if ((st = train_step(&tr, step, &loss)))
            break;
        if (!isfinite(loss)) {
            st = dfx_error_set(DFX_ERR_NUMERIC,
                               "step %lld: the loss is %g; training stopped. The last good "
                               "checkpoint (step %lld) is in %s", (long long)step + 1, loss,
                               (long long)last_saved, job->out);
            break;
        }
        tr.done++;
        smooth = isnan(smooth) ? loss : 0.98 * smooth + 0.02 * loss;
        snprintf(pg.note, sizeof pg.note, "loss %.4f  epoch %.2f", smooth,
                 dfx_loader_epochs_done(tr.loader, step));
        dfx__progress_tick(&pg);
        if ((st = note_loss(&tr, step, loss)))
            break;
        if (job->progress && !job->progress_tty && tr.done % o->log_every == 0) {
            const double el = now() - t0;
            const double ips = (double)(tr.done - pg.first) / (el > 0 ? el : 1);
            fprintf(job->progress, "step %lld/%lld  loss %.5f  %.2f it/s  ETA %.0f s\n",
                    (long long)tr.done, (long long)o->steps, tr.log[tr.n_log - 1].loss, ips,
                    (double)(o->steps - tr.done) / (ips > 0 ? ips : 1));
            fflush(job->progress);
        }
        const bool stop = dfx__abort_flag;
        if (tr.done % o->checkpoint_every == 0 || tr.done == o->steps || stop) {
            if ((st = save_checkpoint(&tr)))
                break;
            last_saved = tr.done;
        }
        if (stop)
            st = dfx_error_set(DFX_ERR_ABORTED, "interrupted at step %lld; the checkpoint in %s "
                               "continues with --resume", (long long)tr.done, job->out);
    }
    dfx__progress_end(&pg);
    if (!st && job->progress)
        fprintf(job->progress, "trained to step %lld in %.1f s; checkpoint in %s\n",
                (long long)tr.done, now() - t0, job->out);
    if (!st && tr.mops->params_changed)
        st = tr.mops->params_changed(tr.model);
    teardown(&tr);
    return st;
}
