/* Sample-quality metrics: FID feature statistics (blocks merged as Chan,
 * Golub and LeVeque pair partial sums), the Frechet distance through
 * symmetric eigendecompositions (LAPACK dsyevd, exported by OpenBLAS), and
 * the Inception Score. */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dfx/metrics.h"
#include "dfx/safetensors.h"
#include "dfx/tensor.h"

/* LAPACK's symmetric eigensolver (divide and conquer) from the OpenBLAS
 * library dfx links, with its 32-bit integers (OPENBLAS_USE64BITINT is not
 * set). gfortran passes the lengths of CHARACTER arguments as trailing
 * hidden size_t arguments; they are passed here so that the call matches
 * the Fortran ABI exactly. */
extern void dsyevd_(const char *jobz, const char *uplo, const int *n,
                    double *a, const int *lda, double *w, double *work,
                    const int *lwork, int *iwork, const int *liwork,
                    int *info, size_t jobz_len, size_t uplo_len);

/* Centred rows of one block of dfx_fid_stats_add, as doubles: 8 MiB. */
#define BLOCK_DOUBLES ((int64_t)1 << 20)

/* Covariances must be symmetric to this fraction of their largest entry. */
#define SYM_TOL 1e-6

/* An eigenvalue below -PSD_TOL times the largest eigenvalue magnitude
 * makes a covariance "not positive semidefinite"; those above are rounding
 * (a backward-stable eigensolver on a PSD matrix with rounded entries
 * gives errors of a small multiple of d * 1e-16 of the largest: ~1e-12 at
 * d 2048, 1000 times below this) and count as zero. */
#define PSD_TOL 1e-9

/* The IS rows must sum to 1 within this. */
#define IS_SUM_TOL 1e-3

static double *alloc_doubles(int64_t count)
{
    return malloc((size_t)(count > 0 ? count : 1) * sizeof(double));
}

static bool stats_ready(const dfx_fid_stats *s)
{
    return s && s->mean && s->cov && s->d >= 1 && s->d <= DFX_FID_MAX_D;
}

dfx_status dfx_fid_stats_init(dfx_fid_stats *s, int64_t d)
{
    if (!s)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "fid stats: NULL statistics");
    memset(s, 0, sizeof *s);
    if (d < 1 || d > DFX_FID_MAX_D)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "fid stats: feature size %lld is out of [1, %d]",
                             (long long)d, DFX_FID_MAX_D);
    double *mean = calloc((size_t)d, sizeof(double));
    double *cov = calloc((size_t)d * (size_t)d, sizeof(double));
    if (!mean || !cov) {
        free(mean);
        free(cov);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "fid stats: out of memory for %lld features",
                             (long long)d);
    }
    s->d = d;
    s->mean = mean;
    s->cov = cov;
    return DFX_OK;
}

void dfx_fid_stats_fini(dfx_fid_stats *s)
{
    if (!s)
        return;
    free(s->mean);
    free(s->cov);
    memset(s, 0, sizeof *s);
}

/* a[j][i] = a[i][j] below the diagonal, each times `scale`. */
static void mirror_upper_scaled(double *a, int64_t d, double scale)
{
    for (int64_t i = 0; i < d; i++) {
        for (int64_t j = i; j < d; j++) {
            a[i * d + j] *= scale;
            a[j * d + i] = a[i * d + j];
        }
    }
}

dfx_status dfx_fid_stats_add(dfx_fid_stats *s, const float *features, int64_t rows)
{
    if (!stats_ready(s))
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "fid stats: statistics not initialised (dfx_fid_stats_init)");
    if (rows < 0)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "fid stats: %lld rows", (long long)rows);
    if (rows == 0)
        return DFX_OK;
    if (!features)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "fid stats: NULL features");
    const int64_t d = s->d;
    for (int64_t i = 0; i < rows * d; i++) {
        if (!isfinite(features[i]))
            return dfx_error_set(DFX_ERR_NUMERIC,
                                 "fid stats: feature [row %lld, column %lld] is not finite (%g)",
                                 (long long)(i / d), (long long)(i % d), (double)features[i]);
    }
    int64_t block = BLOCK_DOUBLES / d;
    if (block < 1)
        block = 1;
    if (block > rows)
        block = rows;
    double *xc = alloc_doubles(block * d), *mb = alloc_doubles(d);
    if (!xc || !mb) {
        free(xc);
        free(mb);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "fid stats: out of memory for a block of %lld rows",
                             (long long)block);
    }

    /* cov holds the co-moment sum M2 = sum (x - mean)(x - mean)^T, upper
     * triangle, while the blocks merge */
    double *m2 = s->cov;
    int64_t n = s->n;
    if (n >= 2) {
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = i; j < d; j++)
                m2[i * d + j] *= (double)(n - 1);
    }
    for (int64_t r0 = 0; r0 < rows; r0 += block) {
        const int64_t nb = rows - r0 < block ? rows - r0 : block;
        const float *xb = features + r0 * d;
        for (int64_t j = 0; j < d; j++)
            mb[j] = 0;
        for (int64_t i = 0; i < nb; i++)
            for (int64_t j = 0; j < d; j++)
                mb[j] += xb[i * d + j];
        for (int64_t j = 0; j < d; j++)
            mb[j] /= (double)nb;
        for (int64_t i = 0; i < nb; i++)
            for (int64_t j = 0; j < d; j++)
                xc[i * d + j] = (double)xb[i * d + j] - mb[j];
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)d, (blasint)nb, 1.0, xc,
                    (blasint)d, 1.0, m2, (blasint)d);
        if (n == 0) {
            memcpy(s->mean, mb, (size_t)d * sizeof(double));
        } else {
            /* Chan et al.: M2 = M2a + M2b + delta delta^T na nb / n */
            const double nt = (double)(n + nb);
            for (int64_t j = 0; j < d; j++) {
                mb[j] -= s->mean[j];
                s->mean[j] += mb[j] * ((double)nb / nt);
            }
            cblas_dsyr(CblasRowMajor, CblasUpper, (blasint)d, (double)n * (double)nb / nt, mb, 1,
                       m2, (blasint)d);
        }
        n += nb;
    }
    s->n = n;
    mirror_upper_scaled(m2, d, n >= 2 ? 1.0 / (double)(n - 1) : 0.0);
    free(xc);
    free(mb);
    return DFX_OK;
}

dfx_status dfx_fid_stats_merge(dfx_fid_stats *s, const dfx_fid_stats *other)
{
    if (!stats_ready(s) || !stats_ready(other))
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "fid stats: statistics not initialised (dfx_fid_stats_init)");
    if (s->d != other->d)
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "fid stats: cannot merge statistics of %lld and %lld features",
                             (long long)s->d, (long long)other->d);
    if (other->n < 0 || s->n < 0)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "fid stats: a negative sample count");
    if (other->n == 0)
        return DFX_OK;
    const int64_t d = s->d;
    double *delta = alloc_doubles(d);
    if (!delta)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "fid stats: out of memory");
    const double na = (double)s->n, nb = (double)other->n, nt = na + nb;
    const double wa = na >= 2 ? na - 1 : 0, wb = nb >= 2 ? nb - 1 : 0;
    const double cross = na * nb / nt, inv = nt >= 2 ? 1.0 / (nt - 1) : 0.0;
    for (int64_t j = 0; j < d; j++)
        delta[j] = other->mean[j] - s->mean[j];
    /* element by element: s == other reads each entry before writing it */
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++)
            s->cov[i * d + j] = (s->cov[i * d + j] * wa + other->cov[i * d + j] * wb +
                                 delta[i] * delta[j] * cross) * inv;
    for (int64_t j = 0; j < d; j++)
        s->mean[j] += delta[j] * (nb / nt);
    s->n += other->n;
    free(delta);
    return DFX_OK;
}

dfx_status dfx_fid_stats_save(const dfx_fid_stats *s, const char *path)
{
    if (!stats_ready(s) || !path)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "fid stats: nothing to save (%s)",
                             path ? "statistics not initialised" : "NULL path");
    const int64_t shape_mu[1] = {s->d}, shape_sigma[2] = {s->d, s->d};
    /* the views are only read */
    dfx_tensor mu = dfx_tensor_view(DFX_DTYPE_F64, 1, shape_mu, s->mean);
    dfx_tensor sigma = dfx_tensor_view(DFX_DTYPE_F64, 2, shape_sigma, s->cov);
    const char *names[2] = {"mu", "sigma"};
    const dfx_tensor *tensors[2] = {&mu, &sigma};
    char nbuf[32];
    snprintf(nbuf, sizeof nbuf, "%lld", (long long)s->n);
    const char *keys[1] = {"n"}, *values[1] = {nbuf};
    return dfx_safetensors_write(path, 2, names, tensors, 1, keys, values);
}

dfx_status dfx_fid_stats_load(dfx_fid_stats *s, const char *path)
{
    if (!s || !path)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "fid stats: NULL %s", s ? "path" : "statistics");
    memset(s, 0, sizeof *s);
    dfx_safetensors *st = NULL;
    dfx_status status = dfx_safetensors_open(path, &st);
    if (status != DFX_OK)
        return status;
    dfx_tensor *mu = NULL, *sigma = NULL;
    char got[128];
    if ((status = dfx_safetensors_read(st, "mu", DFX_DTYPE_F64, &mu)) != DFX_OK)
        goto done;
    if ((status = dfx_safetensors_read(st, "sigma", DFX_DTYPE_F64, &sigma)) != DFX_OK)
        goto done;
    if (mu->ndim != 1 || mu->shape[0] < 1 || mu->shape[0] > DFX_FID_MAX_D) {
        status = dfx_error_set(DFX_ERR_FORMAT, "%s: fid stats: 'mu' has shape %s, expected [d] "
                               "with d in [1, %d]", path,
                               dfx_tensor_shape_str(mu, got, sizeof got), DFX_FID_MAX_D);
        goto done;
    }
    const int64_t d = mu->shape[0];
    if (sigma->ndim != 2 || sigma->shape[0] != d || sigma->shape[1] != d) {
        status = dfx_error_set(DFX_ERR_FORMAT, "%s: fid stats: 'sigma' has shape %s, expected "
                               "[%lld,%lld]", path, dfx_tensor_shape_str(sigma, got, sizeof got),
                               (long long)d, (long long)d);
        goto done;
    }
    const char *nv = dfx_safetensors_metadata(st, "n");
    if (!nv) {
        status = dfx_error_set(DFX_ERR_FORMAT, "%s: fid stats: metadata 'n' is missing (the sample "
                               "count)", path);
        goto done;
    }
    char *end = NULL;
    errno = 0;
    long long n = strtoll(nv, &end, 10);
    if (!*nv || *end || errno || n < 0) {
        status = dfx_error_set(DFX_ERR_FORMAT, "%s: fid stats: metadata 'n' is '%s', not a sample "
                               "count", path, nv);
        goto done;
    }
    if ((status = dfx_fid_stats_init(s, d)) != DFX_OK)
        goto done;
    memcpy(s->mean, mu->data, (size_t)d * sizeof(double));
    memcpy(s->cov, sigma->data, (size_t)d * (size_t)d * sizeof(double));
    s->n = n;
done:
    dfx_tensor_destroy(mu);
    dfx_tensor_destroy(sigma);
    dfx_safetensors_close(st);
    return status;
}

/* ---- symmetric matrices -------------------------------------------------- */

/* a = the symmetric part of s [d, d] after checking that s is finite and
 * symmetric to SYM_TOL of its largest entry; `what` names s in messages. */
static dfx_status sym_part(double *a, const double *s, int64_t d, const char *what)
{
    double big = 0;
    for (int64_t i = 0; i < d * d; i++) {
        if (!isfinite(s[i]))
            return dfx_error_set(DFX_ERR_NUMERIC, "%s is not finite at [%lld, %lld]", what,
                                 (long long)(i / d), (long long)(i % d));
        if (fabs(s[i]) > big)
            big = fabs(s[i]);
    }
    for (int64_t i = 0; i < d; i++) {
        a[i * d + i] = s[i * d + i];
        for (int64_t j = i + 1; j < d; j++) {
            const double u = s[i * d + j], l = s[j * d + i];
            if (fabs(u - l) > SYM_TOL * big)
                return dfx_error_set(DFX_ERR_NUMERIC,
                                     "%s is not symmetric: [%lld, %lld] is %.17g but [%lld, %lld] "
                                     "is %.17g", what, (long long)i, (long long)j, u, (long long)j,
                                     (long long)i, l);
            a[i * d + j] = a[j * d + i] = 0.5 * (u + l);
        }
    }
    return DFX_OK;
}

/* Eigenvalues of the symmetric a [d, d] into w (ascending); with vectors,
 * a is overwritten by the eigenvectors as rows (dsyevd returns eigenvector
 * j in column j of its column-major array: row j of the row-major one),
 * otherwise a is destroyed. */
static dfx_status eig_sym(double *a, int64_t d, double *w, bool vectors, const char *who)
{
    const char jobz = vectors ? 'V' : 'N', uplo = 'U';
    const int n = (int)d, query = -1;
    int info = 0, iwork_size = 0;
    double work_size = 0;
    dsyevd_(&jobz, &uplo, &n, a, &n, w, &work_size, &query, &iwork_size, &query, &info, 1, 1);
    if (info != 0)
        return dfx_error_set(DFX_ERR_NUMERIC, "%s: LAPACK dsyevd failed (info %d)", who, info);
    const int lwork = (int)work_size, liwork = iwork_size;
    double *work = alloc_doubles(lwork);
    int *iwork = malloc((size_t)(liwork > 0 ? liwork : 1) * sizeof(int));
    if (!work || !iwork) {
        free(work);
        free(iwork);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory for a %lld x %lld "
                             "eigendecomposition", who, (long long)d, (long long)d);
    }
    dsyevd_(&jobz, &uplo, &n, a, &n, w, work, &lwork, iwork, &liwork, &info, 1, 1);
    free(work);
    free(iwork);
    if (info != 0)
        return dfx_error_set(DFX_ERR_NUMERIC, "%s: LAPACK dsyevd failed (info %d)", who, info);
    return DFX_OK;
}

/* Fails when the ascending eigenvalues w hold one below -PSD_TOL times the
 * largest magnitude. */
static dfx_status check_psd(const double *w, int64_t d, const char *what)
{
    const double big = fmax(fabs(w[0]), fabs(w[d - 1]));
    if (w[0] < -PSD_TOL * big)
        return dfx_error_set(DFX_ERR_NUMERIC, "%s is not positive semidefinite: it has eigenvalue "
                             "%.6g (largest magnitude %.6g)", what, w[0], big);
    return DFX_OK;
}

dfx_status dfx_matrix_sqrt_sym(double *out, const double *s, int64_t d)
{
    if (!out || !s)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "matrix sqrt: NULL matrix");
    if (d < 1 || d > DFX_FID_MAX_D)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "matrix sqrt: size %lld is out of [1, %d]",
                             (long long)d, DFX_FID_MAX_D);
    double *e = alloc_doubles(d * d), *w = alloc_doubles(d);
    dfx_status status;
    if (!e || !w) {
        status = dfx_error_set(DFX_ERR_NO_MEMORY, "matrix sqrt: out of memory for %lld x %lld",
                               (long long)d, (long long)d);
        goto done;
    }
    if ((status = sym_part(e, s, d, "matrix sqrt: the matrix")) != DFX_OK ||
        (status = eig_sym(e, d, w, true, "matrix sqrt")) != DFX_OK ||
        (status = check_psd(w, d, "matrix sqrt: the matrix")) != DFX_OK)
        goto done;
    /* A = E^T diag(w)^(1/2) E = C^T C with C = diag(w)^(1/4) E */
    for (int64_t i = 0; i < d; i++) {
        const double f = sqrt(sqrt(fmax(w[i], 0.0)));
        for (int64_t j = 0; j < d; j++)
            e[i * d + j] *= f;
    }
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)d, (blasint)d, 1.0, e, (blasint)d,
                0.0, out, (blasint)d);
    mirror_upper_scaled(out, d, 1.0);
done:
    free(e);
    free(w);
    return status;
}

/* ---- Frechet distance ---------------------------------------------------- */

static const char *const which[2] = {"first", "second"};

static dfx_status check_stats(const dfx_fid_stats *s, int k)
{
    if (!stats_ready(s))
        return dfx_error_set(DFX_ERR_INVALID_ARG, "fid: the %s statistics are not initialised",
                             which[k]);
    if (s->n < 2)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "fid: the %s statistics hold %lld sample%s (a "
                             "covariance needs at least 2)", which[k], (long long)s->n,
                             s->n == 1 ? "" : "s");
    for (int64_t j = 0; j < s->d; j++) {
        if (!isfinite(s->mean[j]))
            return dfx_error_set(DFX_ERR_NUMERIC, "fid: the %s statistics' mean is not finite at "
                                 "[%lld]", which[k], (long long)j);
    }
    return DFX_OK;
}

dfx_status dfx_fid_compute(const dfx_fid_stats *a, const dfx_fid_stats *b, double *out)
{
    if (!out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "fid: NULL output");
    *out = NAN;
    dfx_status status;
    if ((status = check_stats(a, 0)) != DFX_OK || (status = check_stats(b, 1)) != DFX_OK)
        return status;
    if (a->d != b->d)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "fid: the statistics have %lld and %lld features",
                             (long long)a->d, (long long)b->d);
    const int64_t d = a->d;
    double *s1 = alloc_doubles(d * d), *s2 = alloc_doubles(d * d), *t = alloc_doubles(d * d);
    double *w1 = alloc_doubles(d), *w2 = alloc_doubles(d);
    if (!s1 || !s2 || !t || !w1 || !w2) {
        status = dfx_error_set(DFX_ERR_NO_MEMORY, "fid: out of memory for %lld features",
                               (long long)d);
        goto done;
    }
    if ((status = sym_part(s1, a->cov, d, "fid: the first statistics' covariance")) != DFX_OK ||
        (status = sym_part(s2, b->cov, d, "fid: the second statistics' covariance")) != DFX_OK)
        goto done;

    double mean_term = 0, tr1 = 0, tr2 = 0;
    for (int64_t j = 0; j < d; j++) {
        const double diff = a->mean[j] - b->mean[j];
        mean_term += diff * diff;
        tr1 += s1[j * d + j];
        tr2 += s2[j * d + j];
    }

    /* S2's eigenvalues, for the PSD check only */
    memcpy(t, s2, (size_t)(d * d) * sizeof(double));
    if ((status = eig_sym(t, d, w2, false, "fid")) != DFX_OK ||
        (status = check_psd(w2, d, "fid: the second statistics' covariance")) != DFX_OK)
        goto done;
    /* S1 = E^T diag(w1) E */
    if ((status = eig_sym(s1, d, w1, true, "fid")) != DFX_OK ||
        (status = check_psd(w1, d, "fid: the first statistics' covariance")) != DFX_OK)
        goto done;

    /* N = diag(r) E S2 E^T diag(r), r = w1^(1/2): E^T N E = S1^(1/2) S2 S1^(1/2),
     * whose eigenvalues are those of S1 S2 */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)d, (blasint)d, (blasint)d, 1.0,
                s1, (blasint)d, s2, (blasint)d, 0.0, t, (blasint)d);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)d, (blasint)d, (blasint)d, 1.0, t,
                (blasint)d, s1, (blasint)d, 0.0, s2, (blasint)d);
    for (int64_t j = 0; j < d; j++)
        w1[j] = sqrt(fmax(w1[j], 0.0));
    for (int64_t i = 0; i < d; i++) {
        for (int64_t j = i; j < d; j++) {
            const double v = 0.5 * (s2[i * d + j] + s2[j * d + i]) * w1[i] * w1[j];
            s2[i * d + j] = s2[j * d + i] = v;
        }
    }
    if ((status = eig_sym(s2, d, w2, false, "fid")) != DFX_OK)
        goto done;
    double tr_sqrt = 0;
    for (int64_t j = 0; j < d; j++)
        tr_sqrt += sqrt(fmax(w2[j], 0.0));
    *out = mean_term + tr1 + tr2 - 2 * tr_sqrt;
done:
    free(s1);
    free(s2);
    free(t);
    free(w1);
    free(w2);
    return status;
}

/* ---- Inception Score ----------------------------------------------------- */

dfx_status dfx_inception_score_compute(const float *probs, int64_t n, int64_t k, int64_t splits,
                                       double *mean, double *std)
{
    if (!mean || !std)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "inception score: NULL output");
    *mean = *std = NAN;
    if (!probs || n < 1 || k < 1)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "inception score: %lld samples of %lld classes%s",
                             (long long)n, (long long)k, probs ? "" : " (NULL)");
    if (splits < 1 || splits > n)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "inception score: %lld splits of %lld samples",
                             (long long)splits, (long long)n);
    for (int64_t i = 0; i < n; i++) {
        const float *p = probs + i * k;
        double sum = 0;
        for (int64_t c = 0; c < k; c++) {
            if (!isfinite(p[c]))
                return dfx_error_set(DFX_ERR_NUMERIC, "inception score: row %lld is not finite at "
                                     "class %lld", (long long)i, (long long)c);
            if (p[c] < 0)
                return dfx_error_set(DFX_ERR_INVALID_ARG, "inception score: row %lld has the "
                                     "negative probability %g at class %lld", (long long)i,
                                     (double)p[c], (long long)c);
            sum += p[c];
        }
        if (fabs(sum - 1) > IS_SUM_TOL)
            return dfx_error_set(DFX_ERR_INVALID_ARG, "inception score: row %lld sums to %.6g, not "
                                 "1 (tolerance 1e-3)", (long long)i, sum);
    }
    double *log_py = alloc_doubles(k), *scores = alloc_doubles(splits);
    if (!log_py || !scores) {
        free(log_py);
        free(scores);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "inception score: out of memory");
    }
    for (int64_t sp = 0; sp < splits; sp++) {
        const int64_t i0 = sp * n / splits, i1 = (sp + 1) * n / splits;
        for (int64_t c = 0; c < k; c++)
            log_py[c] = 0;
        for (int64_t i = i0; i < i1; i++)
            for (int64_t c = 0; c < k; c++)
                log_py[c] += probs[i * k + c];
        /* p(y) is 0 only where every p(y|x) of the chunk is: unused */
        for (int64_t c = 0; c < k; c++)
            log_py[c] = log_py[c] > 0 ? log(log_py[c] / (double)(i1 - i0)) : 0;
        double kl = 0;
        for (int64_t i = i0; i < i1; i++) {
            const float *p = probs + i * k;
            for (int64_t c = 0; c < k; c++)
                if (p[c] > 0)
                    kl += p[c] * (log(p[c]) - log_py[c]);
        }
        scores[sp] = exp(kl / (double)(i1 - i0));
    }
    double m = 0, v = 0;
    for (int64_t sp = 0; sp < splits; sp++)
        m += scores[sp];
    m /= (double)splits;
    for (int64_t sp = 0; sp < splits; sp++)
        v += (scores[sp] - m) * (scores[sp] - m);
    *mean = m;
    *std = sqrt(v / (double)splits);
    free(log_py);
    free(scores);
    return DFX_OK;
}

dfx_status dfx_softmax_rows(float *probs, const float *logits, int64_t n, int64_t k)
{
    if (n < 0 || k < 1)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "softmax: %lld rows of %lld classes",
                             (long long)n, (long long)k);
    if (n > 0 && (!probs || !logits))
        return dfx_error_set(DFX_ERR_INVALID_ARG, "softmax: NULL array");
    for (int64_t i = 0; i < n * k; i++) {
        if (!isfinite(logits[i]))
            return dfx_error_set(DFX_ERR_NUMERIC, "softmax: logit [row %lld, class %lld] is not "
                                 "finite (%g)", (long long)(i / k), (long long)(i % k),
                                 (double)logits[i]);
    }
    for (int64_t i = 0; i < n; i++) {
        const float *x = logits + i * k;
        float *y = probs + i * k;
        double mx = x[0], sum = 0;
        for (int64_t c = 1; c < k; c++)
            mx = fmax(mx, x[c]);
        for (int64_t c = 0; c < k; c++)
            sum += exp((double)x[c] - mx);
        for (int64_t c = 0; c < k; c++)
            y[c] = (float)(exp((double)x[c] - mx) / sum);
    }
    return DFX_OK;
}
