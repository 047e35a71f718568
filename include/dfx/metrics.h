/* Sample-quality metrics of the DDPM paper (Ho et al. 2020, table 1): the
 * Frechet Inception Distance (Heusel et al. 2017) from feature statistics
 * accumulated batch by batch, and the Inception Score (Salimans et al.
 * 2016) from class probabilities. The statistics take any feature
 * extractor's outputs as float arrays; the last part of this header runs a
 * classifier model (a component whose info.classes > 0, such as the
 * `classifier` plugin's: MNIST-scale work uses a trained classifier instead
 * of Inception-v3) over a set of images for them (`dfx eval`).
 *
 * Everything accumulates in double. Matrix work goes through OpenBLAS and
 * its LAPACK (dsyevd); the functions keep no global state and may run on
 * different threads on different objects. */
#ifndef DFX_METRICS_H
#define DFX_METRICS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "dfx/pipeline.h"
#include "dfx/plugin.h"
#include "dfx/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest feature size accepted (a covariance of 2 GiB; above it
 * LAPACK's 32-bit workspace sizes overflow soon after). */
#define DFX_FID_MAX_D 16384

/* ---- feature statistics ------------------------------------------------ */

/* The mean and covariance of n feature vectors of size d. Caller-owned:
 * dfx_fid_stats_init allocates the arrays, dfx_fid_stats_fini frees them.
 * The fields may be read at any time and written directly (statistics
 * known in closed form: set mean, cov and n); while accumulating, cov
 * always holds the unbiased covariance of the n samples so far (the n - 1
 * denominator of numpy.cov and pytorch-fid), all zero while n < 2. */
typedef struct dfx_fid_stats {
    int64_t d;      /* feature size */
    int64_t n;      /* samples accumulated */
    double *mean;   /* [d] */
    double *cov;    /* [d, d] row-major, symmetric */
} dfx_fid_stats;

/* Zero statistics of feature size d (n 0, mean and cov zero). Errors:
 * DFX_ERR_INVALID_ARG "fid stats: feature size 0 is out of [1, 16384]",
 * DFX_ERR_NO_MEMORY; *s is all zero then (fini is safe). */
DFX_API dfx_status dfx_fid_stats_init(dfx_fid_stats *s, int64_t d);

/* Frees the arrays and zeroes *s. NULL and a zeroed struct are no-ops. */
DFX_API void dfx_fid_stats_fini(dfx_fid_stats *s);

/* Adds `rows` feature vectors (features [rows, d], row-major float32) to
 * the statistics: a batch of any size, so that a large sample set never
 * needs to be in memory at once. The batch is processed in blocks of a few
 * MiB: each block's mean and centred co-moment (Xc^T Xc, dsyrk) merged
 * into the running ones as Chan, Golub and LeVeque (1979) pair their
 * partial sums, which keeps the result accurate however far the mean lies
 * from zero; any split into batches gives the same statistics to about
 * 1e-14 of the covariance's largest entry. rows 0 is a no-op. Errors, with
 * *s unchanged: DFX_ERR_NUMERIC "fid stats: feature [row 3, column 17] is
 * not finite (nan)", the row counted within this batch;
 * DFX_ERR_INVALID_ARG for a negative rows, NULL features or statistics not
 * initialised; DFX_ERR_NO_MEMORY. Not thread-safe on the same s. */
DFX_API dfx_status dfx_fid_stats_add(dfx_fid_stats *s, const float *features,
                                     int64_t rows);

/* Adds the samples of `other` (same d) to s, as if its features had been
 * added: for statistics accumulated in parallel. Errors: DFX_ERR_INVALID_ARG
 * "fid stats: cannot merge statistics of 64 and 2048 features". */
DFX_API dfx_status dfx_fid_stats_merge(dfx_fid_stats *s,
                                       const dfx_fid_stats *other);

/* Writes the statistics to a safetensors file: "mu" F64 [d], "sigma" F64
 * [d, d] and the metadata "n" (decimal), as pytorch-fid's .npz holds mu and
 * sigma, so a reference set's statistics are computed once. The write is
 * atomic (dfx_safetensors_write). */
DFX_API dfx_status dfx_fid_stats_save(const dfx_fid_stats *s, const char *path);

/* Reads a file in the format of dfx_fid_stats_save into *s, which must not
 * hold arrays (it is overwritten; fini it afterwards). mu and sigma may be
 * of any float dtype (converted to double; F64 is read bit-exact). Errors
 * name the file: DFX_ERR_NOT_FOUND "FILE: no tensor named 'sigma'",
 * DFX_ERR_FORMAT "FILE: fid stats: 'sigma' has shape [4,3], expected [4,4]"
 * or "FILE: fid stats: metadata 'n' is missing (the sample count)" or
 * "... metadata 'n' is 'x', not a sample count", and those of
 * dfx_safetensors_open; *s is all zero then. Values are checked when used
 * (dfx_fid_compute), not here. */
DFX_API dfx_status dfx_fid_stats_load(dfx_fid_stats *s, const char *path);

/* Whether path is a statistics file: a safetensors file, whatever its
 * name, that holds tensors "mu" and "sigma" (false for anything else or
 * unreadable). */
DFX_API bool dfx_fid_stats_is_file(const char *path);

/* ---- Frechet Inception Distance ---------------------------------------- */

/* FID = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2))
 * (Heusel et al. 2017; pytorch-fid's calculate_frechet_distance) into
 * *out. The trace of the square root is computed without a general
 * (non-symmetric) matrix square root: S1 = V diag(w) V^T (dsyevd), and the
 * eigenvalues of S1 S2 are those of the symmetric PSD matrix
 * diag(w)^(1/2) V^T S2 V diag(w)^(1/2) (orthogonally similar to
 * S1^(1/2) S2 S1^(1/2)), whose square roots are summed. The result may be a
 * rounding error below zero for equal statistics.
 *
 * Both covariances must be finite, symmetric to 1e-6 of their largest
 * entry (the symmetric part is used), and positive semidefinite: an
 * eigenvalue below -1e-9 times the largest eigenvalue magnitude is an
 * error; a negative one above that is rounding and counts as zero
 * (covariances of fewer samples than features are singular, and their zero
 * eigenvalues come out around +-1e-16 of the largest). The eigenvalues of the product
 * matrix are clipped at zero without that test: for PSD inputs a negative
 * one can only be rounding.
 *
 * Costs two d x d matrix products and three symmetric eigenvalue problems
 * (one with eigenvectors), and about 5 d^2 doubles of memory (d 2048:
 * 170 MB); on 2 idle cores (OpenBLAS Zen kernels) 0.08 s at d 512, 2.5 s
 * at d 2048. Only reads a and b.
 *
 * Errors, with *out NaN: DFX_ERR_INVALID_ARG "fid: the statistics have 64
 * and 2048 features", "fid: the first statistics hold 1 sample (a
 * covariance needs at least 2)"; DFX_ERR_NUMERIC "fid: the second
 * statistics' covariance is not finite at [3, 5]", "fid: the first
 * statistics' mean is not finite at [7]", "fid: the first statistics'
 * covariance is not symmetric: [0, 1] is 0.5 but [1, 0] is 0.25",
 * "fid: the second statistics' covariance is not positive semidefinite: it
 * has eigenvalue -0.5 (largest magnitude 3)", or "fid: LAPACK dsyevd failed
 * (info 3)"; DFX_ERR_NO_MEMORY. */
DFX_API dfx_status dfx_fid_compute(const dfx_fid_stats *a,
                                   const dfx_fid_stats *b, double *out);

/* The symmetric positive semidefinite square root A of the symmetric PSD
 * matrix s [d, d] (row-major): A = A^T, A A = s, from s = V diag(w) V^T as
 * V diag(w)^(1/2) V^T, with the checks and the -1e-9 threshold of
 * dfx_fid_compute (eigenvalues within it count as zero). out [d, d] may be
 * s. For a singular s the result is accurate to about the square root of
 * the rounding in s (sqrt is not Lipschitz at zero). Errors, with out
 * untouched: DFX_ERR_INVALID_ARG for d out of [1, 16384] or NULL;
 * DFX_ERR_NUMERIC "matrix sqrt: the matrix is not finite at [i, j]" / "is
 * not symmetric: ..." / "is not positive semidefinite: ...";
 * DFX_ERR_NO_MEMORY. */
DFX_API dfx_status dfx_matrix_sqrt_sym(double *out, const double *s, int64_t d);

/* ---- Inception Score ---------------------------------------------------- */

/* IS = exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016, sec. 4) of n
 * class distributions probs [n, k] (row-major float32), as the reference
 * implementation (openai/improved-gan, inception_score.py) computes it: the
 * rows are cut into `splits` consecutive chunks [i n / splits,
 * (i + 1) n / splits), p(y) is a chunk's mean row, and the score of each
 * chunk is exp of the mean over its rows of sum_y p log(p / p(y)), with
 * 0 log 0 = 0; *mean and *std are the mean and the population standard
 * deviation (numpy.std, ddof 0) over the chunks. Accumulates in double.
 * Uniform rows give 1; one-hot rows spread evenly over k classes, k.
 *
 * Errors, with *mean and *std NaN: DFX_ERR_INVALID_ARG "inception score:
 * 10 splits of 4 samples" (1 <= splits <= n), "inception score: row 3 sums
 * to 0.9, not 1 (tolerance 1e-3)", "inception score: row 3 has the
 * negative probability -0.1 at class 2"; DFX_ERR_NUMERIC "inception score:
 * row 3 is not finite at class 2". */
DFX_API dfx_status dfx_inception_score_compute(const float *probs, int64_t n,
                                               int64_t k, int64_t splits,
                                               double *mean, double *std);

/* probs [n, k] = softmax of each row of logits [n, k] (max-shifted,
 * summed in double), so that a classifier's logits can feed
 * dfx_inception_score_compute. probs may be logits. Errors, with probs
 * untouched: DFX_ERR_NUMERIC "softmax: logit [row 3, class 2] is not
 * finite (inf)"; DFX_ERR_INVALID_ARG for a negative n or k < 1. */
DFX_API dfx_status dfx_softmax_rows(float *probs, const float *logits,
                                    int64_t n, int64_t k);

/* ---- image sets --------------------------------------------------------- */

/* N images of one shape [C, H, W] as float32 in [-1, 1], to evaluate. Read-
 * only once opened: safe to share between threads. */
typedef struct dfx_image_set dfx_image_set;

/* Opens the images at path:
 *   a folder of .safetensors files: all of them, in name order, each read
 *     as the single file below (a sample run split into several `dfx run`
 *     outputs); their images must have one shape;
 *   another folder: every *.png in it (dfx_dataset_open_png_dir), as `dfx
 *     run` writes a batch (NAME-0000.png, ...);
 *   a .safetensors file that `dfx run` wrote: its tensor "image" [N, H, W,
 *     C] in [0, 1] when it has one (the decoded images, clamped as the PNGs
 *     are, not rounded to 8 bits), else "samples" [N, C, H, W] (any float
 *     dtype) as they are;
 *   anything else: an idx file of u8 images, plain or gzip-compressed
 *     (dfx_dataset_open_idx), with labels_path its labels (or NULL).
 * labels_path is for idx images only; a single .png file is an error
 * (give its folder). Errors name the file:
 * DFX_ERR_NOT_FOUND "FILE: no tensor 'image' or 'samples' (not written by
 * dfx run?)", DFX_ERR_FORMAT "FILE: 'samples' has shape [4,3] (expected
 * [N, C, H, W])" or "FILE: 'samples' is not finite at image 3", and those
 * of the readers; DFX_ERR_INVALID_ARG for labels with PNGs or samples. *out
 * is NULL on failure. */
DFX_API dfx_status dfx_image_set_open(const char *path, const char *labels_path,
                                      dfx_image_set **out);
/* NULL is a no-op. */
DFX_API void dfx_image_set_destroy(dfx_image_set *set);
/* The path as given to open. */
DFX_API const char *dfx_image_set_path(const dfx_image_set *set);
DFX_API int64_t dfx_image_set_count(const dfx_image_set *set);
/* shape[0..3) = C, H, W. */
DFX_API void dfx_image_set_shape(const dfx_image_set *set, int64_t shape[3]);
DFX_API bool dfx_image_set_has_labels(const dfx_image_set *set);

/* Images [first, first + n) into x [n, C, height, width], each centred in
 * a border of -1 when height and width exceed its own (28x28 in 32x32, as
 * dfx_loader pads training data; an odd excess goes to the bottom and
 * right), and their labels into labels [n] (NULL: not wanted).
 * DFX_ERR_RANGE for images out of range or a size smaller than the
 * images'; DFX_ERR_INVALID_ARG for labels asked of a set without. */
DFX_API dfx_status dfx_image_set_read(const dfx_image_set *set, int64_t first, int64_t n,
                                      int64_t height, int64_t width, float *x,
                                      int64_t *labels);

/* FID's reference point for "no model at all": count images of Gaussian
 * noise whose every pixel has the mean and variance of that pixel over the
 * set's first `limit` images (0: all), drawn by dfx_rng from seed, into a
 * new *out [count, C, H, W] (float32, not clamped). DFX_ERR_INVALID_ARG for
 * count < 1 or limit < 0. */
DFX_API dfx_status dfx_image_set_noise_baseline(const dfx_image_set *set, int64_t limit,
                                                int64_t count, uint64_t seed,
                                                dfx_tensor **out);

/* ---- classifier features ----------------------------------------------- */

typedef struct dfx_classify_params {
    int64_t batch;       /* images a forward pass: 100 */
    int64_t limit;       /* 0: every image; else at most the first `limit` */
    FILE *progress;      /* NULL: silent; else a progress line, redrawn in
                            place when progress_tty (nothing otherwise) */
    bool progress_tty;
    const char *label;   /* what the progress line names: "images" */
} dfx_classify_params;

/* Fills the defaults (above). */
DFX_API void dfx_classify_params_init(dfx_classify_params *p);

/* The model's info, checked to be a classifier of images (classes and
 * features > 0, samples [C, H, W]); DFX_ERR_INVALID_ARG "model 'unet2d'
 * is not a classifier (it gives no class scores)" otherwise. */
DFX_API dfx_status dfx_classifier_info(dfx_instance *model, dfx_model_info *info);

/* Runs the classifier model over the first n images of set (n: the count,
 * or p->limit when smaller; p NULL: the defaults), each padded to the
 * classifier's sample size as dfx_image_set_read pads, in batches of
 * p->batch, and writes their features [n, info.features] and class
 * probabilities (the softmax of the logits) [n, info.classes]; either may
 * be NULL. Checks dfx_abort_request between batches (DFX_ERR_ABORTED
 * "interrupted after 200 of 10000 images"). Errors: DFX_ERR_INVALID_ARG
 * "FILE: images of 3x32x32 (channels x height x width); the classifier
 * takes 1x32x32 (smaller images are padded with -1)", those of
 * dfx_classifier_info and of the model. One call at a time per model. */
DFX_API dfx_status dfx_classifier_run(dfx_instance *model, const dfx_image_set *set,
                                      const dfx_classify_params *p, float *features,
                                      float *probs);

/* As dfx_classifier_run, accumulating the features into *out (initialised
 * here with d = info.features; fini it in any case) instead of keeping
 * them. */
DFX_API dfx_status dfx_classifier_fid_stats(dfx_instance *model, const dfx_image_set *set,
                                            const dfx_classify_params *p, dfx_fid_stats *out);

/* As dfx_classifier_run on a set with labels: *correct receives the
 * number of images whose most probable class (the first, on a tie) is
 * their label, *total the number of images, and confusion (NULL: not
 * wanted) [classes, classes] the count of each (label, prediction) pair,
 * row by label. DFX_ERR_INVALID_ARG "FILE: no labels" or "FILE: image 5
 * has label 12, outside the classifier's 10 classes". */
DFX_API dfx_status dfx_classifier_accuracy(dfx_instance *model, const dfx_image_set *set,
                                           const dfx_classify_params *p, int64_t *correct,
                                           int64_t *total, int64_t *confusion);

#ifdef __cplusplus
}
#endif
#endif
