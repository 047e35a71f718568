/* Evaluation inputs and a classifier's outputs over them: image sets read
 * from PNG folders, `dfx run` safetensors outputs (one file or a folder of
 * them) and idx files, padded to
 * the classifier's size as training data are, then run through the
 * classifier in batches into features, class probabilities, FID
 * statistics or an accuracy (`dfx eval`). */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/internal.h"
#include "core/run/run.h"
#include "dfx/data.h"
#include "dfx/metrics.h"
#include "dfx/rng.h"
#include "dfx/safetensors.h"

struct dfx_image_set {
    char *path;
    dfx_dataset *ds;       /* a PNG folder or idx images, or NULL */
    float *samples;        /* [n, c, h, w] in [-1, 1] from a safetensors file, or NULL */
    int64_t n, c, h, w;
};

/* ---- image sets --------------------------------------------------------- */

bool dfx_fid_stats_is_file(const char *path)
{
    struct stat sb;
    if (!path || stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return false;
    /* whatever its name: --save-stats takes any */
    dfx_safetensors *f;
    if (dfx_safetensors_open(path, &f))
        return false;
    const bool yes = dfx_safetensors_has(f, "mu") && dfx_safetensors_has(f, "sigma");
    dfx_safetensors_close(f);
    return yes;
}

static bool has_ext(const char *path, const char *ext)
{
    const size_t n = strlen(path), e = strlen(ext);
    return n >= e && strcmp(path + n - e, ext) == 0;
}

/* "image" [N, H, W, C] in [0, 1] (the decoded images) or "samples" [N, C,
 * H, W] of a `dfx run` output, as NCHW in [-1, 1] */
static dfx_status open_tensors(dfx_image_set *s)
{
    dfx_safetensors *f;
    dfx_status st = dfx_safetensors_open(s->path, &f);
    if (st)
        return st;
    const bool image = dfx_safetensors_has(f, "image");
    const char *name = image ? "image" : "samples";
    dfx_tensor *t = NULL;
    char shape[96];
    if (!image && !dfx_safetensors_has(f, "samples"))
        st = dfx_error_set(DFX_ERR_NOT_FOUND, "%s: no tensor 'image' or 'samples' (not written by dfx run?)%s",
                           s->path, dfx_safetensors_has(f, "mu") ? "; it holds FID statistics" : "");
    else if (!(st = dfx_safetensors_read(f, name, DFX_DTYPE_F32, &t)) &&
             (t->ndim != 4 || dfx_tensor_numel(t) < 1))
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: '%s' has shape %s (expected %s)", s->path, name,
                           dfx_tensor_shape_str(t, shape, sizeof shape),
                           image ? "[N, H, W, C]" : "[N, C, H, W]");
    dfx_safetensors_close(f);
    if (st) {
        dfx_tensor_destroy(t);
        return st;
    }
    s->n = t->shape[0];
    s->c = image ? t->shape[3] : t->shape[1];
    s->h = image ? t->shape[1] : t->shape[2];
    s->w = image ? t->shape[2] : t->shape[3];
    const int64_t per = s->c * s->h * s->w;
    if (!(s->samples = malloc((size_t)(s->n * per) * sizeof(float)))) {
        dfx_tensor_destroy(t);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory for %lld images", s->path, (long long)s->n);
    }
    const float *src = t->data;
    for (int64_t i = 0; !st && i < s->n; i++) {
        float *dst = s->samples + i * per;
        for (int64_t k = 0; k < s->c; k++)
            for (int64_t y = 0; y < s->h; y++)
                for (int64_t x = 0; x < s->w; x++) {
                    const float v = image ? src[((i * s->h + y) * s->w + x) * s->c + k] * 2 - 1
                                          : src[((i * s->c + k) * s->h + y) * s->w + x];
                    dst[(k * s->h + y) * s->w + x] = v;
                }
        for (int64_t j = 0; j < per; j++)
            if (!isfinite(dst[j])) {
                st = dfx_error_set(DFX_ERR_FORMAT, "%s: '%s' is not finite at image %lld", s->path, name,
                                   (long long)i);
                break;
            }
    }
    dfx_tensor_destroy(t);
    return st;
}

static int is_tensor_file(const struct dirent *e)
{
    return e->d_name[0] != '.' && has_ext(e->d_name, ".safetensors");
}

/* Every *.safetensors file of folder s->path, in name order, as one set (a
 * sample run split into several `dfx run` outputs); *found is false when
 * there are none. */
static dfx_status open_tensor_folder(dfx_image_set *s, bool *found)
{
    struct dirent **names;
    const int k = scandir(s->path, &names, is_tensor_file, alphasort);
    *found = k > 0;
    if (k < 0)
        return dfx_error_set(DFX_ERR_IO, "%s: cannot list: %s", s->path, strerror(errno));
    dfx_status st = DFX_OK;
    for (int i = 0; i < k; i++) {
        dfx_image_set part = {0};
        if (!st && !(part.path = dfx__path_join(s->path, names[i]->d_name)))
            st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        if (!st)
            st = open_tensors(&part);
        if (!st && i > 0 && (part.c != s->c || part.h != s->h || part.w != s->w))
            st = dfx_error_set(DFX_ERR_FORMAT, "%s: images of %lldx%lldx%lld, the folder's first file has "
                               "%lldx%lldx%lld", part.path, (long long)part.c, (long long)part.h,
                               (long long)part.w, (long long)s->c, (long long)s->h, (long long)s->w);
        const int64_t per = part.c * part.h * part.w;
        float *grown = st ? NULL : realloc(s->samples, (size_t)((s->n + part.n) * per) * sizeof(float));
        if (!st && !grown)
            st = dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", part.path);
        if (!st) {
            memcpy(grown + s->n * per, part.samples, (size_t)(part.n * per) * sizeof(float));
            s->samples = grown;
            s->n += part.n;
            s->c = part.c;
            s->h = part.h;
            s->w = part.w;
        }
        free(part.samples);
        free(part.path);
        free(names[i]);
    }
    free(names);
    return st;
}

dfx_status dfx_image_set_open(const char *path, const char *labels_path, dfx_image_set **out)
{
    if (out)
        *out = NULL;
    if (!path || !out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_image_set_open: path and out must not be NULL");
    dfx_image_set *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    }
    struct stat sb;
    const bool dir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
    const bool tensors = !dir && has_ext(path, ".safetensors");
    bool found;
    dfx_status st = DFX_OK;
    if (labels_path && (dir || tensors))
        st = dfx_error_set(DFX_ERR_INVALID_ARG, "%s: labels (%s) go with idx images only", path, labels_path);
    else if (tensors)
        st = open_tensors(s);
    else if (dir) {
        if (!(st = open_tensor_folder(s, &found)) && !found)
            st = dfx_dataset_open_png_dir(path, &s->ds);
    } else if (has_ext(path, ".png") || has_ext(path, ".PNG"))
        st = dfx_error_set(DFX_ERR_INVALID_ARG, "%s: one image; give the folder of the PNGs to evaluate", path);
    else
        st = dfx_dataset_open_idx(path, labels_path, &s->ds);
    if (!st && s->ds) {
        int64_t shape[3];
        dfx_dataset_shape(s->ds, shape);
        s->n = dfx_dataset_count(s->ds);
        s->c = shape[0];
        s->h = shape[1];
        s->w = shape[2];
    }
    if (st) {
        dfx_image_set_destroy(s);
        return st;
    }
    *out = s;
    return DFX_OK;
}

void dfx_image_set_destroy(dfx_image_set *set)
{
    if (!set)
        return;
    dfx_dataset_destroy(set->ds);
    free(set->samples);
    free(set->path);
    free(set);
}

const char *dfx_image_set_path(const dfx_image_set *set)
{
    return set->path;
}

int64_t dfx_image_set_count(const dfx_image_set *set)
{
    return set->n;
}

void dfx_image_set_shape(const dfx_image_set *set, int64_t shape[3])
{
    shape[0] = set->c;
    shape[1] = set->h;
    shape[2] = set->w;
}

bool dfx_image_set_has_labels(const dfx_image_set *set)
{
    return set->ds && dfx_dataset_has_labels(set->ds);
}

dfx_status dfx_image_set_read(const dfx_image_set *set, int64_t first, int64_t n, int64_t height,
                              int64_t width, float *x, int64_t *labels)
{
    if (!set || !x)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_image_set_read: set and x must not be NULL");
    if (first < 0 || n < 0 || first > set->n || n > set->n - first)
        return dfx_error_set(DFX_ERR_RANGE, "%s: images [%lld, %lld) are out of range (it has %lld)", set->path,
                             (long long)first, (long long)(first + n), (long long)set->n);
    if (height < set->h || width < set->w)
        return dfx_error_set(DFX_ERR_RANGE, "%s: %lldx%lld is smaller than the images (%lldx%lld)", set->path,
                             (long long)height, (long long)width, (long long)set->h, (long long)set->w);
    if (labels && !dfx_image_set_has_labels(set))
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: no labels", set->path);
    const int64_t per = set->c * set->h * set->w, top = (height - set->h) / 2, left = (width - set->w) / 2;
    const bool pad = height != set->h || width != set->w;
    float *item = pad ? malloc((size_t)per * sizeof *item) : NULL;
    if (pad && !item)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    dfx_status st = DFX_OK;
    for (int64_t i = 0; !st && i < n; i++) {
        float *dst = x + i * set->c * height * width;
        float *src = pad ? item : dst;
        if (set->samples)
            memcpy(src, set->samples + (first + i) * per, (size_t)per * sizeof *src);
        else
            st = dfx_dataset_item(set->ds, first + i, src, labels ? &labels[i] : NULL);
        if (st || !pad)
            continue;
        for (int64_t k = 0; k < set->c * height * width; k++)
            dst[k] = -1.0f;
        for (int64_t k = 0; k < set->c; k++)
            for (int64_t y = 0; y < set->h; y++)
                memcpy(dst + (k * height + top + y) * width + left, src + (k * set->h + y) * set->w,
                       (size_t)set->w * sizeof *dst);
    }
    free(item);
    return st;
}

dfx_status dfx_image_set_noise_baseline(const dfx_image_set *set, int64_t limit, int64_t count, uint64_t seed,
                                        dfx_tensor **out)
{
    if (out)
        *out = NULL;
    if (!set || !out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_image_set_noise_baseline: set and out must not be NULL");
    if (count < 1 || limit < 0)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "noise baseline: count %lld and limit %lld (expected >= 1 and >= 0)",
                             (long long)count, (long long)limit);
    const int64_t n = limit && limit < set->n ? limit : set->n, per = set->c * set->h * set->w;
    double *sum = calloc((size_t)per * 2, sizeof *sum), *sq = sum + per;
    float *x = malloc((size_t)per * sizeof *x);
    dfx_rng *rng = NULL;
    dfx_status st = !sum || !x ? dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory") : DFX_OK;
    for (int64_t i = 0; !st && i < n; i++) {
        if ((st = dfx_image_set_read(set, i, 1, set->h, set->w, x, NULL)))
            break;
        for (int64_t j = 0; j < per; j++) {
            sum[j] += x[j];
            sq[j] += (double)x[j] * x[j];
        }
    }
    const int64_t shape[4] = {count, set->c, set->h, set->w};
    if (!st && !(st = dfx_tensor_create(out, DFX_DTYPE_F32, 4, shape)))
        st = dfx_rng_create(&rng, seed);
    if (!st) {
        float *y = (*out)->data;
        dfx_rng_normal(rng, y, count * per);
        for (int64_t j = 0; j < per; j++) {
            const double mean = sum[j] / (double)n, var = fmax(sq[j] / (double)n - mean * mean, 0);
            const double sd = sqrt(var);
            for (int64_t i = 0; i < count; i++)
                y[i * per + j] = (float)(mean + sd * y[i * per + j]);
        }
    } else {
        dfx_tensor_destroy(*out);
        *out = NULL;
    }
    dfx_rng_destroy(rng);
    free(x);
    free(sum);
    return st;
}

/* ---- classifier features ------------------------------------------------ */

void dfx_classify_params_init(dfx_classify_params *p)
{
    memset(p, 0, sizeof *p);
    p->batch = 100;
    p->label = "images";
}

dfx_status dfx_classifier_info(dfx_instance *model, dfx_model_info *info)
{
    const dfx_component *c = model ? dfx_instance_component(model) : NULL;
    if (!c || !info)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_classifier_info: model and info must not be NULL");
    if (c->kind != DFX_KIND_MODEL)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s '%s' is not a model", dfx_kind_name(c->kind), c->name);
    ((const dfx_model_ops *)c->ops)->info(dfx_instance_priv(model), info);
    if (info->classes < 1 || info->features < 1)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "model '%s' is not a classifier (it gives no %s)", c->name,
                             info->classes < 1 ? "class scores" : "features");
    if (info->sample_ndim != 3)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "model '%s' does not classify images [C, H, W]", c->name);
    return DFX_OK;
}

/* What receives each batch's outputs out [n, features + classes] of images
 * [first, first + n) with their labels (or NULL). */
typedef dfx_status (*sink_fn)(void *ctx, const dfx_model_info *info, int64_t first, int64_t n,
                              const float *out, const int64_t *labels);

static dfx_status run_batches(dfx_instance *model, const dfx_image_set *set, const dfx_classify_params *p,
                              bool labels, sink_fn sink, void *ctx)
{
    dfx_classify_params defaults;
    if (!p) {
        dfx_classify_params_init(&defaults);
        p = &defaults;
    }
    dfx_model_info info;
    dfx_status st = set ? dfx_classifier_info(model, &info)
                        : dfx_error_set(DFX_ERR_INVALID_ARG, "the image set must not be NULL");
    if (st)
        return st;
    const int64_t c = info.sample_shape[0], h = info.sample_shape[1], w = info.sample_shape[2];
    if (set->c != c || set->h > h || set->w > w)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: images of %lldx%lldx%lld (channels x height x width); the "
                                                  "classifier takes %lldx%lldx%lld (smaller images are padded with "
                                                  "-1)", set->path, (long long)set->c, (long long)set->h,
                             (long long)set->w, (long long)c, (long long)h, (long long)w);
    if (p->batch < 1)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "batch %lld: expected at least 1", (long long)p->batch);
    if (labels && !dfx_image_set_has_labels(set))
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: no labels (give the idx file of its labels)", set->path);
    const int64_t n = p->limit > 0 && p->limit < set->n ? p->limit : set->n;
    const int64_t b = p->batch < n ? p->batch : n, width = info.features + info.classes;
    float *x = malloc((size_t)(b * c * h * w) * sizeof *x);
    float *out = malloc((size_t)(b * width) * sizeof *out);
    double *zeros = calloc((size_t)b, sizeof *zeros);
    int64_t *lab = labels ? malloc((size_t)b * sizeof *lab) : NULL;
    if (!x || !out || !zeros || (labels && !lab)) {
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory for a batch of %lld images", (long long)b);
        goto done;
    }
    const dfx_model_ops *ops = dfx_instance_component(model)->ops;
    void *priv = dfx_instance_priv(model);
    dfx__progress pg;
    dfx__progress_start(&pg, p->progress_tty ? p->progress : NULL, true, p->label ? p->label : "images", n);
    for (int64_t first = 0; !st && first < n; first += b) {
        if (dfx__abort_flag) {
            st = dfx_error_set(DFX_ERR_ABORTED, "interrupted after %lld of %lld images", (long long)first,
                               (long long)n);
            break;
        }
        const int64_t m = n - first < b ? n - first : b;
        const int64_t xs[4] = {m, c, h, w}, os[2] = {m, width};
        dfx_tensor xt = dfx_tensor_view(DFX_DTYPE_F32, 4, xs, x);
        dfx_tensor ot = dfx_tensor_view(DFX_DTYPE_F32, 2, os, out);
        const dfx_model_input in = {.x = &xt, .t_model = zeros, .sigma = zeros, .cond = NULL};
        if ((st = dfx_image_set_read(set, first, m, h, w, x, lab)))
            break;
        if ((st = ops->predict(priv, &in, &ot))) {
            dfx_error_prefix(st, "%s: ", dfx_instance_component(model)->name);
            break;
        }
        st = sink(ctx, &info, first, m, out, lab);
        pg.done += m - 1;
        dfx__progress_tick(&pg);
    }
    dfx__progress_end(&pg);
done:
    free(x);
    free(out);
    free(zeros);
    free(lab);
    return st;
}

typedef struct run_ctx {
    float *features, *probs;
} run_ctx;

static dfx_status run_sink(void *vctx, const dfx_model_info *info, int64_t first, int64_t n, const float *out,
                           const int64_t *labels)
{
    (void)labels;
    run_ctx *ctx = vctx;
    const int64_t nf = info->features, nk = info->classes;
    for (int64_t i = 0; i < n; i++) {
        const float *row = out + i * (nf + nk);
        if (ctx->features)
            memcpy(ctx->features + (first + i) * nf, row, (size_t)nf * sizeof(float));
        if (ctx->probs) {
            dfx_status st = dfx_softmax_rows(ctx->probs + (first + i) * nk, row + nf, 1, nk);
            if (st)
                return dfx_error_prefix(st, "image %lld: ", (long long)(first + i));
        }
    }
    return DFX_OK;
}

dfx_status dfx_classifier_run(dfx_instance *model, const dfx_image_set *set, const dfx_classify_params *p,
                              float *features, float *probs)
{
    run_ctx ctx = {features, probs};
    return run_batches(model, set, p, false, run_sink, &ctx);
}

static dfx_status stats_sink(void *ctx, const dfx_model_info *info, int64_t first, int64_t n, const float *out,
                             const int64_t *labels)
{
    (void)labels;
    dfx_fid_stats *s = ctx;
    const int64_t nf = info->features, nk = info->classes;
    /* the features of each row, packed (the logits follow them) */
    float *f = malloc((size_t)(n * nf) * sizeof *f);
    if (!f)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    for (int64_t i = 0; i < n; i++)
        memcpy(f + i * nf, out + i * (nf + nk), (size_t)nf * sizeof *f);
    dfx_status st = dfx_fid_stats_add(s, f, n);
    free(f);
    return st ? dfx_error_prefix(st, "images %lld to %lld: ", (long long)first, (long long)(first + n - 1)) : DFX_OK;
}

dfx_status dfx_classifier_fid_stats(dfx_instance *model, const dfx_image_set *set, const dfx_classify_params *p,
                                    dfx_fid_stats *out)
{
    if (!out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_classifier_fid_stats: out must not be NULL");
    memset(out, 0, sizeof *out);
    dfx_model_info info;
    dfx_status st = dfx_classifier_info(model, &info);
    if (!st)
        st = dfx_fid_stats_init(out, info.features);
    return st ? st : run_batches(model, set, p, false, stats_sink, out);
}

typedef struct accuracy_ctx {
    const dfx_image_set *set;
    int64_t correct, total;
    int64_t *confusion;
} accuracy_ctx;

static dfx_status accuracy_sink(void *vctx, const dfx_model_info *info, int64_t first, int64_t n,
                                const float *out, const int64_t *labels)
{
    accuracy_ctx *ctx = vctx;
    const int64_t nf = info->features, nk = info->classes;
    for (int64_t i = 0; i < n; i++) {
        const float *logits = out + i * (nf + nk) + nf;
        if (labels[i] < 0 || labels[i] >= nk)
            return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: image %lld has label %lld, outside the classifier's "
                                                      "%lld classes", ctx->set->path, (long long)(first + i),
                                 (long long)labels[i], (long long)nk);
        int64_t best = 0;
        for (int64_t k = 0; k < nk; k++) {
            if (!isfinite(logits[k]))
                return dfx_error_set(DFX_ERR_NUMERIC, "%s: the logits of image %lld are not finite",
                                     ctx->set->path, (long long)(first + i));
            if (logits[k] > logits[best])
                best = k;
        }
        ctx->correct += best == labels[i];
        ctx->total++;
        if (ctx->confusion)
            ctx->confusion[labels[i] * nk + best]++;
    }
    return DFX_OK;
}

dfx_status dfx_classifier_accuracy(dfx_instance *model, const dfx_image_set *set, const dfx_classify_params *p,
                                   int64_t *correct, int64_t *total, int64_t *confusion)
{
    if (!correct || !total)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_classifier_accuracy: correct and total must not be NULL");
    dfx_model_info info;
    dfx_status st = dfx_classifier_info(model, &info);
    if (st)
        return st;
    if (confusion)
        memset(confusion, 0, (size_t)(info.classes * info.classes) * sizeof *confusion);
    accuracy_ctx ctx = {set, 0, 0, confusion};
    st = run_batches(model, set, p, true, accuracy_sink, &ctx);
    *correct = ctx.correct;
    *total = ctx.total;
    return st;
}
