/* Image datasets (8-bit samples, [N, C, H, W], optional labels) from idx
 * files or a folder of PNGs, and the batch loader: batch `step` is a pure
 * function of (seed, step), the items walking through per-epoch
 * Fisher-Yates permutations, the flips drawn from a counter-based hash, so
 * that a resumed training run sees exactly the batches of an uninterrupted
 * one whatever the thread count. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/data/internal.h"
#include "core/internal.h"
#include "core/nn/internal.h"
#include "dfx/rng.h"

struct dfx_dataset {
    int64_t n, c, h, w;
    uint8_t *pixels;    /* [n, c, h, w] */
    int64_t *labels;    /* [n] or NULL */
};

static dfx_status dataset_alloc(int64_t n, int64_t c, int64_t h, int64_t w, bool labels, const char *what,
                                dfx_dataset **out)
{
    *out = NULL;
    if (n < 1 || c < 1 || h < 1 || w < 1)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: a dataset of %lld items of [%lld,%lld,%lld] (every size "
                             "must be at least 1)", what, (long long)n, (long long)c, (long long)h, (long long)w);
    if (n > (int64_t)UINT32_MAX)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: %lld items, more than the loader's %lu", what,
                             (long long)n, (unsigned long)UINT32_MAX);
    size_t bytes;
    if (__builtin_mul_overflow((size_t)n, (size_t)c, &bytes) || __builtin_mul_overflow(bytes, (size_t)h, &bytes) ||
        __builtin_mul_overflow(bytes, (size_t)w, &bytes) || bytes > (size_t)PTRDIFF_MAX)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "%s: %lld items of [%lld,%lld,%lld] make more bytes than "
                             "memory holds", what, (long long)n, (long long)c, (long long)h, (long long)w);
    dfx_dataset *ds = calloc(1, sizeof *ds);
    if (ds) {
        ds->pixels = malloc(bytes);
        ds->labels = labels ? malloc((size_t)n * sizeof *ds->labels) : NULL;
    }
    if (!ds || !ds->pixels || (labels && !ds->labels)) {
        dfx_dataset_destroy(ds);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory for %zu bytes of images", what, bytes);
    }
    ds->n = n;
    ds->c = c;
    ds->h = h;
    ds->w = w;
    *out = ds;
    return DFX_OK;
}

static size_t item_bytes(const dfx_dataset *ds)
{
    return (size_t)(ds->c * ds->h * ds->w);
}

dfx_status dfx_dataset_create(int64_t n, int channels, int height, int width, const uint8_t *pixels,
                              const int64_t *labels, dfx_dataset **out)
{
    if (out)
        *out = NULL;
    if (!pixels || !out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_dataset_create: pixels and out must not be NULL");
    dfx_dataset *ds;
    dfx_status st = dataset_alloc(n, channels, height, width, labels != NULL, "dfx_dataset_create", &ds);
    if (st)
        return st;
    memcpy(ds->pixels, pixels, (size_t)n * item_bytes(ds));
    if (labels)
        memcpy(ds->labels, labels, (size_t)n * sizeof *labels);
    *out = ds;
    return DFX_OK;
}

void dfx_dataset_destroy(dfx_dataset *ds)
{
    if (!ds)
        return;
    free(ds->pixels);
    free(ds->labels);
    free(ds);
}

int64_t dfx_dataset_count(const dfx_dataset *ds)
{
    return ds->n;
}

void dfx_dataset_shape(const dfx_dataset *ds, int64_t shape[3])
{
    shape[0] = ds->c;
    shape[1] = ds->h;
    shape[2] = ds->w;
}

bool dfx_dataset_has_labels(const dfx_dataset *ds)
{
    return ds->labels != NULL;
}

/* x / 127.5 - 1 for every byte: 0 -> -1, 255 -> 1 */
static void make_lut(float lut[256])
{
    for (int v = 0; v < 256; v++)
        lut[v] = (float)(v / 127.5 - 1.0);
}

dfx_status dfx_dataset_item(const dfx_dataset *ds, int64_t i, float *x, int64_t *label)
{
    if (i < 0 || i >= ds->n)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dataset: item %lld is out of range (it has %lld)",
                             (long long)i, (long long)ds->n);
    if (label && !ds->labels)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dataset: a label was asked of a dataset without labels");
    float lut[256];
    make_lut(lut);
    const size_t n = item_bytes(ds);
    const uint8_t *src = ds->pixels + (size_t)i * n;
    for (size_t k = 0; k < n; k++)
        x[k] = lut[src[k]];
    if (label)
        *label = ds->labels[i];
    return DFX_OK;
}

/* ---- from idx files --------------------------------------------------- */

static dfx_status idx_labels(const char *path, const char *images, int64_t n, int64_t *labels)
{
    dfx_tensor *t;
    dfx_status st = dfx_idx_read(path, &t);
    if (st)
        return st;
    char sbuf[96];
    if (t->ndim != 1) {
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: labels of shape %s (expected [N])", path,
                           dfx_tensor_shape_str(t, sbuf, sizeof sbuf));
    } else if (t->shape[0] != n) {
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: %lld labels for the %lld images of %s", path,
                           (long long)t->shape[0], (long long)n, images);
    } else {
        for (int64_t i = 0; i < n && !st; i++) {
            switch (t->dtype) {
            case DFX_DTYPE_U8: labels[i] = ((const uint8_t *)t->data)[i]; break;
            case DFX_DTYPE_I8: labels[i] = ((const int8_t *)t->data)[i]; break;
            case DFX_DTYPE_I16: labels[i] = ((const int16_t *)t->data)[i]; break;
            case DFX_DTYPE_I32: labels[i] = ((const int32_t *)t->data)[i]; break;
            default:
                st = dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: labels must be integers, not %s", path,
                                   dfx_dtype_name(t->dtype));
            }
        }
    }
    dfx_tensor_destroy(t);
    return st;
}

dfx_status dfx_dataset_open_idx(const char *images_path, const char *labels_path, dfx_dataset **out)
{
    if (out)
        *out = NULL;
    if (!images_path || !out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_dataset_open_idx: images_path and out must not be NULL");
    dfx_tensor *t;
    dfx_status st = dfx_idx_read(images_path, &t);
    if (st)
        return st;
    char sbuf[96];
    if (t->dtype != DFX_DTYPE_U8) {
        st = dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: images must be u8 (idx type 0x08), not %s", images_path,
                           dfx_dtype_name(t->dtype));
        dfx_tensor_destroy(t);
        return st;
    }
    if (t->ndim != 3 && t->ndim != 4) {
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: images of shape %s (expected [N,H,W] or [N,H,W,C])", images_path,
                           dfx_tensor_shape_str(t, sbuf, sizeof sbuf));
        dfx_tensor_destroy(t);
        return st;
    }
    const int64_t n = t->shape[0], h = t->shape[1], w = t->shape[2], c = t->ndim == 4 ? t->shape[3] : 1;
    dfx_dataset *ds;
    if ((st = dataset_alloc(n, c, h, w, labels_path != NULL, images_path, &ds))) {
        dfx_tensor_destroy(t);
        return st;
    }
    const uint8_t *src = t->data;
    if (c == 1) {
        memcpy(ds->pixels, src, (size_t)(n * h * w));
    } else {
        /* [N, H, W, C] -> [N, C, H, W] */
        const size_t plane = (size_t)(h * w), item = (size_t)c * plane;
        for (int64_t i = 0; i < n; i++)
            for (size_t p = 0; p < plane; p++)
                for (int64_t k = 0; k < c; k++)
                    ds->pixels[(size_t)i * item + (size_t)k * plane + p] = src[(size_t)i * item + p * (size_t)c + (size_t)k];
    }
    dfx_tensor_destroy(t);
    if (labels_path && (st = idx_labels(labels_path, images_path, n, ds->labels))) {
        dfx_dataset_destroy(ds);
        return st;
    }
    *out = ds;
    return DFX_OK;
}

/* ---- from a folder of PNGs -------------------------------------------- */

static const char *colour_name(int64_t channels)
{
    static const char *const names[] = {"?", "gray", "gray+alpha", "RGB", "RGBA"};
    return channels >= 1 && channels <= 4 ? names[channels] : "?";
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* The folder's *.png regular files (not hidden), sorted in byte order, as
 * full paths. */
static dfx_status list_pngs(const char *dir, char ***out, size_t *count)
{
    *out = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d)
        return dfx_error_set(DFX_ERR_NOT_FOUND, "%s: cannot open the folder: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    dfx_status st = DFX_OK;
    for (struct dirent *e; !st && (e = readdir(d));) {
        const size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 5 || strcmp(e->d_name + len - 4, ".png") != 0)
            continue;
        char *path = dfx__path_join(dir, e->d_name);
        if (!path) {
            st = dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", dir);
            break;
        }
        struct stat sb;
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            free(path);
            continue;
        }
        if (n == cap) {
            size_t ncap = cap ? 2 * cap : 64;
            char **b = realloc(names, ncap * sizeof *b);
            if (!b) {
                free(path);
                st = dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", dir);
                break;
            }
            names = b;
            cap = ncap;
        }
        names[n++] = path;
    }
    closedir(d);
    if (!st && n == 0)
        st = dfx_error_set(DFX_ERR_NOT_FOUND, "%s: no *.png files", dir);
    if (st) {
        free_names(names, n);
        return st;
    }
    qsort(names, n, sizeof *names, compare_names);
    *out = names;
    *count = n;
    return DFX_OK;
}

/* Reads names[i] into item i of ds (HWC -> CHW). Thread-safe; the message
 * of a failure is left on the calling thread. */
static dfx_status read_png(dfx_dataset *ds, char *const *names, size_t i)
{
    dfx__png_image img;
    dfx_status st = dfx__png_read(names[i], &img);
    if (st)
        return st;
    if (img.width != ds->w || img.height != ds->h || img.channels != ds->c) {
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: %dx%d %s, expected %lldx%lld %s like %s (the first image)",
                           names[i], img.width, img.height, colour_name(img.channels), (long long)ds->w,
                           (long long)ds->h, colour_name(ds->c), names[0]);
        dfx__png_image_fini(&img);
        return st;
    }
    const size_t plane = (size_t)(ds->h * ds->w);
    uint8_t *dst = ds->pixels + i * (size_t)ds->c * plane;
    for (size_t p = 0; p < plane; p++)
        for (int64_t k = 0; k < ds->c; k++)
            dst[(size_t)k * plane + p] = img.pixels[p * (size_t)ds->c + (size_t)k];
    dfx__png_image_fini(&img);
    return DFX_OK;
}

dfx_status dfx_dataset_open_png_dir(const char *dir, dfx_dataset **out)
{
    if (out)
        *out = NULL;
    if (!dir || !out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_dataset_open_png_dir: dir and out must not be NULL");
    char **names;
    size_t n;
    dfx_status st = list_pngs(dir, &names, &n);
    if (st)
        return st;
    dfx__png_image first;
    if ((st = dfx__png_read(names[0], &first))) {
        free_names(names, n);
        return st;
    }
    dfx_dataset *ds;
    st = dataset_alloc((int64_t)n, first.channels, first.height, first.width, false, dir, &ds);
    dfx__png_image_fini(&first);
    if (st) {
        free_names(names, n);
        return st;
    }
    dfx_status *status = calloc(n, sizeof *status);
    if (!status) {
        free_names(names, n);
        dfx_dataset_destroy(ds);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", dir);
    }
    /* decoding is the work: one file a thread at a time. Read once at
     * setup, not between the matrix products of training: no need to keep
     * off the threads there (see DFX__NN_PAR). */
#pragma omp parallel for if (n > 4) schedule(dynamic)
    for (size_t i = 0; i < n; i++)
        status[i] = read_png(ds, names, i);
    /* the first failure in name order, read again on this thread for its
     * message (a worker's message stays on the worker) */
    for (size_t i = 0; i < n && !st; i++)
        if (status[i])
            st = read_png(ds, names, i);
    free(status);
    free_names(names, n);
    if (st) {
        dfx_dataset_destroy(ds);
        return st;
    }
    *out = ds;
    return DFX_OK;
}

/* ---- the loader ----------------------------------------------------------- */

/* The permutations kept: a batch spans at most two epochs unless it is
 * larger than the dataset. */
enum { PERM_SLOTS = 2 };

struct dfx_loader {
    const dfx_dataset *ds;
    int64_t batch;
    uint64_t seed;
    dfx_loader_options opt;
    int64_t oh, ow, top, left;
    float lut[256];
    dfx_rng *rng;
    uint32_t *perm[PERM_SLOTS];
    int64_t perm_epoch[PERM_SLOTS];   /* -1: empty */
    int next_slot;
    int64_t *items;                   /* [batch]: the dataset index of each item */
    unsigned char *flips;             /* [batch] */
};

void dfx_loader_options_init(dfx_loader_options *opt)
{
    opt->shuffle = true;
    opt->hflip = false;
    opt->pad_h = 0;
    opt->pad_w = 0;
}

/* SplitMix64's finaliser (Steele, Lea and Flood 2014): a bijection of 64
 * bits that mixes every input bit into every output bit. */
static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15u;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* The dfx_rng seed of epoch e's permutation (dfx_rng keeps 32 bits). */
static uint32_t epoch_seed(uint64_t seed, int64_t e)
{
    return (uint32_t)mix64(mix64(seed) ^ (uint64_t)e);
}

/* Whether the item at place i of epoch e is mirrored: one bit of a hash of
 * (seed, e, i), distinct from the permutation's by its constant. */
static bool flip_bit(uint64_t seed, int64_t e, int64_t i)
{
    return mix64(mix64(mix64(seed ^ 0x666c6970666c6970u) ^ (uint64_t)e) ^ (uint64_t)i) >> 63;
}

/* Uniform in [0, bound) from the generator, without modulo bias (Lemire
 * 2019's rejection threshold). */
static uint32_t uniform_below(dfx_rng *rng, uint32_t bound)
{
    const uint32_t threshold = (uint32_t)(0u - bound) % bound;
    for (;;) {
        uint32_t r = dfx_rng_u32(rng);
        if (r >= threshold)
            return r % bound;
    }
}

/* Epoch e's order (Fisher-Yates, Knuth TAOCP 3.4.2 algorithm P). */
static const uint32_t *permutation(dfx_loader *l, int64_t e)
{
    for (int s = 0; s < PERM_SLOTS; s++)
        if (l->perm_epoch[s] == e)
            return l->perm[s];
    const int s = l->next_slot;
    l->next_slot = (s + 1) % PERM_SLOTS;
    uint32_t *p = l->perm[s];
    const uint32_t n = (uint32_t)l->ds->n;
    for (uint32_t i = 0; i < n; i++)
        p[i] = i;
    dfx_rng_seed(l->rng, epoch_seed(l->seed, e));
    for (uint32_t i = n - 1; i > 0; i--) {
        uint32_t j = uniform_below(l->rng, i + 1), t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    l->perm_epoch[s] = e;
    return p;
}

dfx_status dfx_loader_create(const dfx_dataset *ds, int64_t batch_size, uint64_t seed,
                             const dfx_loader_options *opt, dfx_loader **out)
{
    if (out)
        *out = NULL;
    if (!ds || !out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_loader_create: ds and out must not be NULL");
    if (batch_size < 1 || batch_size > (int64_t)1 << 32)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "loader: batch size %lld (expected 1 to 2^32)",
                             (long long)batch_size);
    dfx_loader_options o;
    if (opt)
        o = *opt;
    else
        dfx_loader_options_init(&o);
    if (o.pad_h < 0 || o.pad_w < 0 || (o.pad_h && o.pad_h < ds->h) || (o.pad_w && o.pad_w < ds->w))
        return dfx_error_set(DFX_ERR_RANGE, "loader: pad_to %dx%d is smaller than the images (%lldx%lld)", o.pad_h,
                             o.pad_w, (long long)ds->h, (long long)ds->w);
    dfx_loader *l = calloc(1, sizeof *l);
    if (!l)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "loader: out of memory");
    l->ds = ds;
    l->batch = batch_size;
    l->seed = seed;
    l->opt = o;
    l->oh = o.pad_h ? o.pad_h : ds->h;
    l->ow = o.pad_w ? o.pad_w : ds->w;
    l->top = (l->oh - ds->h) / 2;
    l->left = (l->ow - ds->w) / 2;
    make_lut(l->lut);
    bool ok = (l->items = malloc((size_t)batch_size * sizeof *l->items)) &&
              (l->flips = malloc((size_t)batch_size));
    for (int s = 0; s < PERM_SLOTS; s++) {
        l->perm_epoch[s] = -1;
        if (ok && o.shuffle)
            ok = (l->perm[s] = malloc((size_t)ds->n * sizeof *l->perm[s])) != NULL;
    }
    if (!ok || (o.shuffle && dfx_rng_create(&l->rng, 0) != DFX_OK)) {
        dfx_loader_destroy(l);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "loader: out of memory");
    }
    *out = l;
    return DFX_OK;
}

void dfx_loader_destroy(dfx_loader *l)
{
    if (!l)
        return;
    for (int s = 0; s < PERM_SLOTS; s++)
        free(l->perm[s]);
    dfx_rng_destroy(l->rng);
    free(l->items);
    free(l->flips);
    free(l);
}

void dfx_loader_shape(const dfx_loader *l, int64_t shape[4])
{
    shape[0] = l->batch;
    shape[1] = l->ds->c;
    shape[2] = l->oh;
    shape[3] = l->ow;
}

/* The position of batch step's first item; false when it or the batch's
 * last overflows. */
static bool first_position(const dfx_loader *l, int64_t step, int64_t *p0)
{
    int64_t last;
    return step >= 0 && !__builtin_mul_overflow(step, l->batch, p0) &&
           !__builtin_add_overflow(*p0, l->batch - 1, &last);
}

/* One item into out [C, oh, ow]: mirrored when flip, centred in a border
 * of -1. */
static void put_item(const dfx_loader *l, int64_t index, bool flip, float *out)
{
    const dfx_dataset *ds = l->ds;
    const int64_t h = ds->h, w = ds->w, oh = l->oh, ow = l->ow;
    const uint8_t *src = ds->pixels + (size_t)index * item_bytes(ds);
    if (oh != h || ow != w)
        for (int64_t k = 0; k < ds->c * oh * ow; k++)
            out[k] = -1.0f;
    for (int64_t c = 0; c < ds->c; c++)
        for (int64_t y = 0; y < h; y++) {
            const uint8_t *row = src + (c * h + y) * w;
            float *dst = out + (c * oh + l->top + y) * ow + l->left;
            if (flip)
                for (int64_t x = 0; x < w; x++)
                    dst[x] = l->lut[row[w - 1 - x]];
            else
                for (int64_t x = 0; x < w; x++)
                    dst[x] = l->lut[row[x]];
        }
}

dfx_status dfx_loader_batch(dfx_loader *l, int64_t step, float *x, int64_t *labels)
{
    int64_t p0;
    if (!l || !x)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_loader_batch: loader and x must not be NULL");
    if (!first_position(l, step, &p0))
        return dfx_error_set(DFX_ERR_RANGE, "loader: step %lld is out of range (0 to %lld)", (long long)step,
                             (long long)(INT64_MAX / l->batch - 1));
    if (labels && !l->ds->labels)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "loader: labels were asked of a dataset without labels");
    const int64_t n = l->ds->n;
    const uint32_t *perm = NULL;
    int64_t perm_e = -1;
    for (int64_t k = 0; k < l->batch; k++) {
        const int64_t p = p0 + k, e = p / n, i = p % n;
        if (l->opt.shuffle && e != perm_e) {
            perm = permutation(l, e);
            perm_e = e;
        }
        l->items[k] = l->opt.shuffle ? perm[i] : i;
        l->flips[k] = l->opt.hflip && flip_bit(l->seed, e, i);
    }
    const int64_t per_item = l->ds->c * l->oh * l->ow;
#pragma omp parallel for if (DFX__NN_PAR(l->batch * per_item)) schedule(static)
    for (int64_t k = 0; k < l->batch; k++)
        put_item(l, l->items[k], l->flips[k], x + k * per_item);
    if (labels)
        for (int64_t k = 0; k < l->batch; k++)
            labels[k] = l->ds->labels[l->items[k]];
    return DFX_OK;
}

int64_t dfx_loader_epoch_of(const dfx_loader *l, int64_t step)
{
    int64_t p0;
    return first_position(l, step, &p0) ? p0 / l->ds->n : -1;
}

double dfx_loader_epochs_done(const dfx_loader *l, int64_t step)
{
    int64_t p0;
    if (!first_position(l, step, &p0))
        return -1;
    return ((double)p0 + (double)l->batch) / (double)l->ds->n;
}
