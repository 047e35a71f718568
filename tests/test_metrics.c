/* Sample-quality metrics: FID statistics (incremental = one-shot, far-off
 * means, save/load), the Frechet distance against closed forms and against
 * scipy.linalg.sqrtm (tests/data/metrics, tools/gen_metrics_ref.py), the
 * symmetric matrix square root, the Inception Score on hand-computed cases,
 * and every error message. */
#include <time.h>

#include "dfx/metrics.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------- */

static dfx_rng *new_rng(uint64_t seed)
{
    dfx_rng *g;
    ck_assert_int_eq(dfx_rng_create(&g, seed), DFX_OK);
    return g;
}

static double *normal_doubles(dfx_rng *g, int64_t n)
{
    float *f = malloc((size_t)n * sizeof *f);
    double *x = malloc((size_t)n * sizeof *x);
    ck_assert(f && x);
    dfx_rng_normal(g, f, n);
    for (int64_t i = 0; i < n; i++)
        x[i] = f[i];
    free(f);
    return x;
}

/* c [m, n] = a [m, k] b [k, n] (or b^T with trans_b, b [n, k]), plain loops */
static void matmul(double *c, const double *a, const double *b, int64_t m, int64_t k, int64_t n,
                   bool trans_b)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            long double s = 0;
            for (int64_t l = 0; l < k; l++)
                s += (long double)a[i * k + l] * (trans_b ? b[j * k + l] : b[l * n + j]);
            c[i * n + j] = (double)s;
        }
}

/* A random SPD matrix B B^T / d + ridge I. */
static double *random_spd(dfx_rng *g, int64_t d, double ridge)
{
    double *b = normal_doubles(g, d * d), *s = malloc((size_t)(d * d) * sizeof *s);
    ck_assert_ptr_nonnull(s);
    matmul(s, b, b, d, d, d, true);
    for (int64_t i = 0; i < d * d; i++)
        s[i] /= (double)d;
    for (int64_t i = 0; i < d; i++)
        s[i * d + i] += ridge;
    free(b);
    return s;
}

/* A random orthogonal matrix (rows), Gram-Schmidt twice over normal rows. */
static double *random_orthogonal(dfx_rng *g, int64_t d)
{
    double *q = normal_doubles(g, d * d);
    for (int pass = 0; pass < 2; pass++)
        for (int64_t i = 0; i < d; i++) {
            for (int64_t j = 0; j < i; j++) {
                double dot = 0;
                for (int64_t l = 0; l < d; l++)
                    dot += q[i * d + l] * q[j * d + l];
                for (int64_t l = 0; l < d; l++)
                    q[i * d + l] -= dot * q[j * d + l];
            }
            double nrm = 0;
            for (int64_t l = 0; l < d; l++)
                nrm += q[i * d + l] * q[i * d + l];
            nrm = sqrt(nrm);
            for (int64_t l = 0; l < d; l++)
                q[i * d + l] /= nrm;
        }
    return q;
}

/* Q^T diag(e) Q */
static double *spectral(const double *q, const double *e, int64_t d)
{
    double *s = calloc((size_t)(d * d), sizeof *s);
    ck_assert_ptr_nonnull(s);
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++) {
            long double v = 0;
            for (int64_t l = 0; l < d; l++)
                v += (long double)q[l * d + i] * e[l] * q[l * d + j];
            s[i * d + j] = (double)v;
        }
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = i + 1; j < d; j++)
            s[i * d + j] = s[j * d + i] = 0.5 * (s[i * d + j] + s[j * d + i]);
    return s;
}

static double max_abs_d(const double *a, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs(a[i]));
    return m;
}

static double max_diff_d(const double *a, const double *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (!(d <= m))
            m = isnan(d) ? INFINITY : d;
    }
    return m;
}

static double trace(const double *s, int64_t d)
{
    double t = 0;
    for (int64_t i = 0; i < d; i++)
        t += s[i * d + i];
    return t;
}

/* Statistics with the given mean, covariance and n (closed forms). */
static void stats_set(dfx_fid_stats *s, int64_t d, int64_t n, const double *mean,
                      const double *cov)
{
    ck_assert_int_eq(dfx_fid_stats_init(s, d), DFX_OK);
    memcpy(s->mean, mean, (size_t)d * sizeof *mean);
    memcpy(s->cov, cov, (size_t)(d * d) * sizeof *cov);
    s->n = n;
}

static double fid_of(const dfx_fid_stats *a, const dfx_fid_stats *b)
{
    double f = 0;
    ck_assert_msg(dfx_fid_compute(a, b, &f) == DFX_OK, "%s", dfx_error_message());
    return f;
}

/* n x d float features mean + z L^T with z standard normal, L [d, d] */
static float *correlated_features(dfx_rng *g, int64_t n, int64_t d, const double *l, double offset)
{
    double *z = normal_doubles(g, n * d);
    float *x = malloc((size_t)(n * d) * sizeof *x);
    ck_assert_ptr_nonnull(x);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) {
            double v = offset + 0.1 * (double)j;
            for (int64_t k = 0; k < d; k++)
                v += z[i * d + k] * l[j * d + k];
            x[i * d + j] = (float)v;
        }
    free(z);
    return x;
}

static void expect_error(dfx_status got, dfx_status want, const char *sub)
{
    const char *msg = dfx_error_message();
    ck_assert_msg(got == want, "status %d, want %d (%s)", got, want, msg);
    ck_assert_msg(strstr(msg, sub), "message \"%s\" lacks \"%s\"", msg, sub);
}

static dfx_tensor *read_ref(const dfx_safetensors *st, const char *name)
{
    dfx_tensor *t;
    ck_assert_msg(dfx_safetensors_read(st, name, DFX_DTYPE_F64, &t) == DFX_OK, "%s: %s", name,
                  dfx_error_message());
    return t;
}

static const char *ref_path(void)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/tests/data/metrics/fid_ref.safetensors", DFX_SOURCE_ROOT);
    return buf;
}

/* ---- statistics ---------------------------------------------------------- */

/* Chunked adds (with blocks inside them) equal one-shot, and both equal a
 * two-pass long double reference, for features whose mean (1000) is far
 * from zero next to their spread (~1): shifted sums keep all digits. */
START_TEST(stats_incremental)
{
    const int64_t d = 300, n = 8000;   /* dfx_fid_stats_add blocks: 3495 rows */
    dfx_rng *g = new_rng(1);
    double *l = normal_doubles(g, d * d);
    for (int64_t i = 0; i < d * d; i++)
        l[i] /= sqrt((double)d);
    float *x = correlated_features(g, n, d, l, 1000.0);

    dfx_fid_stats one, inc, merged, part;
    ck_assert_int_eq(dfx_fid_stats_init(&one, d), DFX_OK);
    ck_assert_int_eq(dfx_fid_stats_add(&one, x, n), DFX_OK);
    ck_assert_int_eq(one.n, n);

    ck_assert_int_eq(dfx_fid_stats_init(&inc, d), DFX_OK);
    ck_assert_int_eq(dfx_fid_stats_init(&merged, d), DFX_OK);
    const int64_t chunks[] = {1, 1, 7, 0, 3999, 13, 2500, 1479};
    int64_t at = 0;
    for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) {
        ck_assert_int_eq(dfx_fid_stats_add(&inc, x + at * d, chunks[c]), DFX_OK);
        ck_assert_int_eq(dfx_fid_stats_init(&part, d), DFX_OK);
        ck_assert_int_eq(dfx_fid_stats_add(&part, x + at * d, chunks[c]), DFX_OK);
        ck_assert_int_eq(dfx_fid_stats_merge(&merged, &part), DFX_OK);
        dfx_fid_stats_fini(&part);
        at += chunks[c];
    }
    ck_assert_int_eq(at, n);
    ck_assert_int_eq(inc.n, n);
    ck_assert_int_eq(merged.n, n);

    /* two-pass reference */
    double *mean = calloc((size_t)d, sizeof *mean), *cov = calloc((size_t)(d * d), sizeof *cov);
    for (int64_t j = 0; j < d; j++) {
        long double s = 0;
        for (int64_t i = 0; i < n; i++)
            s += x[i * d + j];
        mean[j] = (double)(s / n);
    }
    double *xc = malloc((size_t)(n * d) * sizeof *xc);
    for (int64_t i = 0; i < n * d; i++)
        xc[i] = (double)x[i] - mean[i % d];
    for (int64_t a = 0; a < d; a++)
        for (int64_t b = a; b < d; b++) {
            long double s = 0;
            for (int64_t i = 0; i < n; i++)
                s += (long double)xc[i * d + a] * xc[i * d + b];
            cov[a * d + b] = cov[b * d + a] = (double)(s / (n - 1));
        }

    const double cscale = max_abs_d(cov, d * d), mscale = max_abs_d(mean, d);
    ck_assert(cscale > 0.5 && cscale < 5);
    const dfx_fid_stats *all[3] = {&one, &inc, &merged};
    for (int k = 0; k < 3; k++) {
        double em = max_diff_d(all[k]->mean, mean, d), ec = max_diff_d(all[k]->cov, cov, d * d);
        ck_assert_msg(em <= 1e-14 * mscale, "stats %d: mean off by %g", k, em);
        ck_assert_msg(ec <= 1e-12 * cscale, "stats %d: covariance off by %g", k, ec);
        for (int64_t a = 0; a < d; a++)
            for (int64_t b = 0; b < a; b++)
                ck_assert(all[k]->cov[a * d + b] == all[k]->cov[b * d + a]);
    }
    /* incremental against one-shot */
    ck_assert(max_diff_d(inc.mean, one.mean, d) <= 1e-12 * mscale);
    ck_assert(max_diff_d(inc.cov, one.cov, d * d) <= 1e-12 * cscale);

    free(mean);
    free(cov);
    free(xc);
    free(x);
    free(l);
    dfx_fid_stats_fini(&one);
    dfx_fid_stats_fini(&inc);
    dfx_fid_stats_fini(&merged);
    dfx_rng_destroy(g);
}
END_TEST

/* Two samples: the unbiased covariance (x1 - x2)(x1 - x2)^T / 2; one
 * sample: covariance zero; init/fini edge cases. */
START_TEST(stats_small)
{
    dfx_fid_stats s;
    const float x[6] = {1, 2, 3, 4, 6, 8};
    ck_assert_int_eq(dfx_fid_stats_init(&s, 3), DFX_OK);
    ck_assert_int_eq(dfx_fid_stats_add(&s, x, 0), DFX_OK);
    ck_assert_int_eq(s.n, 0);
    ck_assert_int_eq(dfx_fid_stats_add(&s, x, 1), DFX_OK);
    ck_assert_int_eq(s.n, 1);
    ck_assert(s.mean[0] == 1 && s.mean[1] == 2 && s.mean[2] == 3);
    ck_assert(max_abs_d(s.cov, 9) == 0);
    ck_assert_int_eq(dfx_fid_stats_add(&s, x + 3, 1), DFX_OK);
    const double want_mean[3] = {2.5, 4, 5.5};
    const double dx[3] = {3, 4, 5};
    for (int i = 0; i < 3; i++) {
        ck_assert_double_eq(s.mean[i], want_mean[i]);
        for (int j = 0; j < 3; j++)
            ck_assert_double_eq_tol(s.cov[i * 3 + j], dx[i] * dx[j] / 2, 1e-14);
    }
    dfx_fid_stats_fini(&s);
    dfx_fid_stats_fini(&s);
    dfx_fid_stats_fini(NULL);
    expect_error(dfx_fid_stats_init(&s, 0), DFX_ERR_INVALID_ARG,
                 "fid stats: feature size 0 is out of [1, 16384]");
    ck_assert_ptr_null(s.mean);
    expect_error(dfx_fid_stats_add(&s, x, 1), DFX_ERR_INVALID_ARG, "not initialised");
}
END_TEST

START_TEST(stats_save_load)
{
    const int64_t d = 37;
    dfx_rng *g = new_rng(2);
    double *l = normal_doubles(g, d * d);
    float *x = correlated_features(g, 100, d, l, -3.0);
    dfx_fid_stats s, r;
    ck_assert_int_eq(dfx_fid_stats_init(&s, d), DFX_OK);
    ck_assert_int_eq(dfx_fid_stats_add(&s, x, 100), DFX_OK);
    char *dir = test_tmpdir(), path[4200], bad[4200];
    snprintf(path, sizeof path, "%s/ref/stats.safetensors", dir);
    ck_assert_msg(dfx_fid_stats_save(&s, path) == DFX_OK, "%s", dfx_error_message());
    ck_assert_msg(dfx_fid_stats_load(&r, path) == DFX_OK, "%s", dfx_error_message());
    ck_assert_int_eq(r.d, d);
    ck_assert_int_eq(r.n, 100);
    ck_assert(memcmp(r.mean, s.mean, (size_t)d * sizeof(double)) == 0);
    ck_assert(memcmp(r.cov, s.cov, (size_t)(d * d) * sizeof(double)) == 0);
    ck_assert(fabs(fid_of(&s, &r)) < 1e-9 * trace(s.cov, d));
    dfx_fid_stats_fini(&r);

    /* the file as the brief names it: mu F64 [d], sigma F64 [d,d], n */
    dfx_safetensors *st;
    ck_assert_int_eq(dfx_safetensors_open(path, &st), DFX_OK);
    ck_assert_str_eq(dfx_safetensors_metadata(st, "n"), "100");
    dfx_tensor v;
    ck_assert_int_eq(dfx_safetensors_view(st, "sigma", &v), DFX_OK);
    ck_assert(v.dtype == DFX_DTYPE_F64 && v.ndim == 2 && v.shape[0] == d && v.shape[1] == d);
    dfx_safetensors_close(st);

    /* malformed files */
    const int64_t sh1[1] = {3}, sh2[2] = {3, 4};
    double buf[12] = {0};
    dfx_tensor mu = dfx_tensor_view(DFX_DTYPE_F64, 1, sh1, buf);
    dfx_tensor sg = dfx_tensor_view(DFX_DTYPE_F64, 2, sh2, buf);
    const char *names[2] = {"mu", "sigma"};
    const dfx_tensor *ts[2] = {&mu, &sg};
    const char *keys[1] = {"n"}, *vals[1] = {"10"}, *badvals[1] = {"ten"};
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    ck_assert_int_eq(dfx_safetensors_write(bad, 2, names, ts, 1, keys, vals), DFX_OK);
    expect_error(dfx_fid_stats_load(&r, bad), DFX_ERR_FORMAT,
                 "bad.safetensors: fid stats: 'sigma' has shape [3,4], expected [3,3]");
    ck_assert_ptr_null(r.mean);
    ck_assert_int_eq(dfx_safetensors_write(bad, 1, names, ts, 1, keys, vals), DFX_OK);
    expect_error(dfx_fid_stats_load(&r, bad), DFX_ERR_NOT_FOUND, "'sigma'");
    sg.shape[1] = 3;
    ck_assert_int_eq(dfx_safetensors_write(bad, 2, names, ts, 0, NULL, NULL), DFX_OK);
    expect_error(dfx_fid_stats_load(&r, bad), DFX_ERR_FORMAT,
                 "fid stats: metadata 'n' is missing (the sample count)");
    ck_assert_int_eq(dfx_safetensors_write(bad, 2, names, ts, 1, keys, badvals), DFX_OK);
    expect_error(dfx_fid_stats_load(&r, bad), DFX_ERR_FORMAT,
                 "fid stats: metadata 'n' is 'ten', not a sample count");
    ck_assert_int_eq(dfx_safetensors_write(bad, 2, names, ts, 1, keys, vals), DFX_OK);
    ck_assert_msg(dfx_fid_stats_load(&r, bad) == DFX_OK, "%s", dfx_error_message());
    ck_assert_int_eq(r.n, 10);
    dfx_fid_stats_fini(&r);

    test_rmtree(dir);
    free(dir);
    free(x);
    free(l);
    dfx_fid_stats_fini(&s);
    dfx_rng_destroy(g);
}
END_TEST

/* ---- Frechet distance ---------------------------------------------------- */

/* The same features twice: FID ~ 0, also for a singular covariance (fewer
 * samples than features), where rounding makes eigenvalues of either sign
 * around zero. */
START_TEST(fid_self)
{
    const int64_t d = 64, ns[2] = {500, 40};
    dfx_rng *g = new_rng(3);
    double *l = normal_doubles(g, d * d);
    for (int c = 0; c < 2; c++) {
        float *x = correlated_features(g, ns[c], d, l, 5.0);
        dfx_fid_stats a, b;
        ck_assert_int_eq(dfx_fid_stats_init(&a, d), DFX_OK);
        ck_assert_int_eq(dfx_fid_stats_init(&b, d), DFX_OK);
        ck_assert_int_eq(dfx_fid_stats_add(&a, x, ns[c]), DFX_OK);
        ck_assert_int_eq(dfx_fid_stats_add(&b, x, 17), DFX_OK);
        ck_assert_int_eq(dfx_fid_stats_add(&b, x + 17 * d, ns[c] - 17), DFX_OK);
        const double scale = trace(a.cov, d);
        ck_assert(scale > 10);
        double f = fid_of(&a, &a), f2 = fid_of(&a, &b);
        ck_assert_msg(fabs(f) < 1e-9 * scale, "n %lld: FID(a, a) %g (scale %g)",
                      (long long)ns[c], f, scale);
        ck_assert_msg(fabs(f2) < 1e-9 * scale, "n %lld: FID(a, b) %g (scale %g)",
                      (long long)ns[c], f2, scale);
        /* and a shifted copy: exactly the squared shift */
        for (int64_t i = 0; i < ns[c] * d; i++)
            x[i] += 0.5f;
        dfx_fid_stats_fini(&b);
        ck_assert_int_eq(dfx_fid_stats_init(&b, d), DFX_OK);
        ck_assert_int_eq(dfx_fid_stats_add(&b, x, ns[c]), DFX_OK);
        double fs = fid_of(&a, &b);
        ck_assert_msg(fabs(fs - 0.25 * (double)d) < 1e-6 * scale, "shift: %.12g", fs);
        dfx_fid_stats_fini(&a);
        dfx_fid_stats_fini(&b);
        free(x);
    }
    free(l);
    dfx_rng_destroy(g);
}
END_TEST

/* Closed forms at the statistics level: equal covariances give the squared
 * mean distance; commuting ones sum (sqrt(s1_i) - sqrt(s2_i))^2 over the
 * shared eigenbasis. */
START_TEST(fid_closed_form)
{
    const int64_t d = 48;
    dfx_rng *g = new_rng(4);
    double *mu1 = normal_doubles(g, d), *mu2 = normal_doubles(g, d);
    double dist2 = 0;
    for (int64_t j = 0; j < d; j++)
        dist2 += (mu1[j] - mu2[j]) * (mu1[j] - mu2[j]);

    /* equal SPD covariances */
    double *s = random_spd(g, d, 0.05);
    dfx_fid_stats a, b;
    stats_set(&a, d, 1000, mu1, s);
    stats_set(&b, d, 50, mu2, s);
    double f = fid_of(&a, &b);
    ck_assert_msg(fabs(f - dist2) <= 1e-9 * fmax(dist2, trace(s, d)), "FID %.15g, want %.15g", f,
                  dist2);
    dfx_fid_stats_fini(&a);
    dfx_fid_stats_fini(&b);

    /* diagonal */
    double *e1 = malloc((size_t)d * sizeof *e1), *e2 = malloc((size_t)d * sizeof *e2);
    double *s1 = calloc((size_t)(d * d), sizeof *s1), *s2 = calloc((size_t)(d * d), sizeof *s2);
    double want = dist2, scale = 0;
    for (int64_t i = 0; i < d; i++) {
        e1[i] = 0.01 + (double)((i * 7) % d) / 4;
        e2[i] = 0.03 + (double)((i * 11) % d) / 5;
        s1[i * d + i] = e1[i];
        s2[i * d + i] = e2[i];
        want += (sqrt(e1[i]) - sqrt(e2[i])) * (sqrt(e1[i]) - sqrt(e2[i]));
        scale += e1[i] + e2[i];
    }
    stats_set(&a, d, 10, mu1, s1);
    stats_set(&b, d, 10, mu2, s2);
    f = fid_of(&a, &b);
    ck_assert_msg(fabs(f - want) <= 1e-10 * scale, "diagonal: FID %.15g, want %.15g", f, want);
    dfx_fid_stats_fini(&a);
    dfx_fid_stats_fini(&b);

    /* commuting, not diagonal: Q^T diag(e) Q, one eigenvalue 0 in S1 */
    e1[5] = 0;
    want = dist2;
    for (int64_t i = 0; i < d; i++)
        want += (sqrt(e1[i]) - sqrt(e2[i])) * (sqrt(e1[i]) - sqrt(e2[i]));
    double *q = random_orthogonal(g, d);
    double *c1 = spectral(q, e1, d), *c2 = spectral(q, e2, d);
    stats_set(&a, d, 10, mu1, c1);
    stats_set(&b, d, 10, mu2, c2);
    f = fid_of(&a, &b);
    /* the zero eigenvalue's rounding (~1e-15) enters through a square root */
    ck_assert_msg(fabs(f - want) <= 1e-9 * scale, "commuting: FID %.15g, want %.15g", f, want);
    /* symmetric in its arguments */
    double fr = fid_of(&b, &a);
    ck_assert_msg(fabs(fr - f) <= 1e-9 * scale, "FID(b, a) %.15g vs %.15g", fr, f);
    dfx_fid_stats_fini(&a);
    dfx_fid_stats_fini(&b);

    free(q);
    free(c1);
    free(c2);
    free(e1);
    free(e2);
    free(s1);
    free(s2);
    free(s);
    free(mu1);
    free(mu2);
    dfx_rng_destroy(g);
}
END_TEST

/* Non-commuting SPD covariances against pytorch-fid's formula with
 * scipy.linalg.sqrtm (tools/gen_metrics_ref.py). */
START_TEST(fid_scipy_reference)
{
    dfx_safetensors *st;
    ck_assert_msg(dfx_safetensors_open(ref_path(), &st) == DFX_OK, "%s", dfx_error_message());
    const char *cases[2] = {"a.", "b."};
    for (int c = 0; c < 2; c++) {
        char name[32];
#define REF(x) (snprintf(name, sizeof name, "%s%s", cases[c], x), read_ref(st, name))
        dfx_tensor *mu1 = REF("mu1"), *mu2 = REF("mu2"), *s1 = REF("s1"), *s2 = REF("s2");
        dfx_tensor *sq = REF("sqrt_s1"), *want = REF("fid");
#undef REF
        const int64_t d = mu1->shape[0];
        dfx_fid_stats a, b;
        stats_set(&a, d, 2, mu1->data, s1->data);
        stats_set(&b, d, 2, mu2->data, s2->data);
        const double scale = trace(s1->data, d) + trace(s2->data, d);
        const double w = *(const double *)want->data, f = fid_of(&a, &b);
        ck_assert_msg(fabs(f - w) <= 1e-10 * scale, "case %s: FID %.15g, scipy %.15g", cases[c], f,
                      w);
        /* not the commuting formula: the test would catch a trace of
         * sqrt(S1) sqrt(S2) instead of sqrt(S1 S2) */
        double *r1 = malloc((size_t)(d * d) * sizeof *r1);
        double *r2 = malloc((size_t)(d * d) * sizeof *r2);
        double *p = malloc((size_t)(d * d) * sizeof *p);
        ck_assert_int_eq(dfx_matrix_sqrt_sym(r1, s1->data, d), DFX_OK);
        ck_assert_int_eq(dfx_matrix_sqrt_sym(r2, s2->data, d), DFX_OK);
        matmul(p, r1, r2, d, d, d, false);
        double naive = 0;
        for (int64_t j = 0; j < d; j++) {
            double dm = ((double *)mu1->data)[j] - ((double *)mu2->data)[j];
            naive += dm * dm;
        }
        naive += scale - 2 * trace(p, d);
        ck_assert_msg(fabs(naive - w) > 5e-4 * scale, "case %s: reference is degenerate", cases[c]);
        /* matrix sqrt against scipy.linalg.sqrtm */
        const double e = max_diff_d(r1, sq->data, d * d), m = max_abs_d(sq->data, d * d);
        ck_assert_msg(e <= 1e-10 * m, "case %s: sqrt off scipy by %g of %g", cases[c], e, m);
        free(r1);
        free(r2);
        free(p);
        dfx_fid_stats_fini(&a);
        dfx_fid_stats_fini(&b);
        dfx_tensor_destroy(mu1);
        dfx_tensor_destroy(mu2);
        dfx_tensor_destroy(s1);
        dfx_tensor_destroy(s2);
        dfx_tensor_destroy(sq);
        dfx_tensor_destroy(want);
    }
    dfx_safetensors_close(st);
}
END_TEST

/* Samples of N(mu1, I) and N(mu2, c I), n 20000 each, d 4: FID = |mu1 -
 * mu2|^2 + d (sqrt(c) - 1)^2 plus a bias of order d^2 / n (sample means
 * add d/n each; sample covariances a little more), within a few percent. */
START_TEST(fid_samples)
{
    const int64_t n = 20000, d = 4;
    dfx_rng *g = new_rng(5);
    float *x = malloc((size_t)(n * d) * sizeof *x), *y = malloc((size_t)(n * d) * sizeof *y);
    const double scales[2] = {1.0, 2.0};
    for (int c = 0; c < 2; c++) {
        dfx_rng_normal(g, x, n * d);
        dfx_rng_normal(g, y, n * d);
        for (int64_t i = 0; i < n * d; i++) {
            x[i] += 3.0f;
            y[i] = (float)(scales[c] * y[i]) + 2.0f;   /* mu2 - mu1 = -1 per feature */
        }
        dfx_fid_stats a, b;
        ck_assert_int_eq(dfx_fid_stats_init(&a, d), DFX_OK);
        ck_assert_int_eq(dfx_fid_stats_init(&b, d), DFX_OK);
        ck_assert_int_eq(dfx_fid_stats_add(&a, x, n), DFX_OK);
        for (int64_t r = 0; r < n; r += 999)
            ck_assert_int_eq(dfx_fid_stats_add(&b, y + r * d, r + 999 <= n ? 999 : n - r), DFX_OK);
        const double want = (double)d + (double)d * (scales[c] - 1) * (scales[c] - 1) +
                            (double)d * (1 + scales[c] * scales[c]) / (double)n;
        double f = fid_of(&a, &b);
        ck_assert_msg(fabs(f - want) < 0.03 * want, "scale %g: FID %g, want %g", scales[c], f,
                      want);
        dfx_fid_stats_fini(&a);
        dfx_fid_stats_fini(&b);
    }
    free(x);
    free(y);
    dfx_rng_destroy(g);
}
END_TEST

START_TEST(matrix_sqrt)
{
    dfx_rng *g = new_rng(6);
    const int64_t d = 40;
    double *s = random_spd(g, d, 0.01), *a = malloc((size_t)(d * d) * sizeof *a);
    double *aa = malloc((size_t)(d * d) * sizeof *aa);
    ck_assert_int_eq(dfx_matrix_sqrt_sym(a, s, d), DFX_OK);
    matmul(aa, a, a, d, d, d, false);
    const double m = max_abs_d(s, d * d);
    ck_assert_msg(max_diff_d(aa, s, d * d) <= 1e-10 * m, "A A off S by %g",
                  max_diff_d(aa, s, d * d));
    for (int64_t i = 0; i < d; i++) {
        ck_assert(a[i * d + i] > 0);
        for (int64_t j = 0; j < i; j++)
            ck_assert(a[i * d + j] == a[j * d + i]);
    }
    /* in place */
    double *c = malloc((size_t)(d * d) * sizeof *c);
    memcpy(c, s, (size_t)(d * d) * sizeof *c);
    ck_assert_int_eq(dfx_matrix_sqrt_sym(c, c, d), DFX_OK);
    ck_assert(memcmp(c, a, (size_t)(d * d) * sizeof *c) == 0);

    /* singular PSD (rank 10): eigenvalues of either sign around zero */
    double *b = normal_doubles(g, 10 * d), *p = malloc((size_t)(d * d) * sizeof *p);
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++) {
            double v = 0;
            for (int64_t k = 0; k < 10; k++)
                v += b[k * d + i] * b[k * d + j];
            p[i * d + j] = v;
        }
    ck_assert_msg(dfx_matrix_sqrt_sym(a, p, d) == DFX_OK, "%s", dfx_error_message());
    matmul(aa, a, a, d, d, d, false);
    ck_assert(max_diff_d(aa, p, d * d) <= 1e-10 * max_abs_d(p, d * d));

    /* 1 x 1 */
    double one = 6.25, r = 0;
    ck_assert_int_eq(dfx_matrix_sqrt_sym(&r, &one, 1), DFX_OK);
    ck_assert_double_eq_tol(r, 2.5, 1e-15);

    /* errors leave out untouched */
    double neg[4] = {1, 2, 2, 1}, out[4] = {7, 7, 7, 7};   /* eigenvalues 3, -1 */
    expect_error(dfx_matrix_sqrt_sym(out, neg, 2), DFX_ERR_NUMERIC,
                 "matrix sqrt: the matrix is not positive semidefinite: it has eigenvalue -1");
    ck_assert(out[0] == 7 && out[3] == 7);
    double asym[4] = {1, 0.5, 0.25, 1};
    expect_error(dfx_matrix_sqrt_sym(out, asym, 2), DFX_ERR_NUMERIC,
                 "matrix sqrt: the matrix is not symmetric: [0, 1] is 0.5 but [1, 0] is 0.25");
    double nan4[4] = {1, 0, 0, NAN};
    expect_error(dfx_matrix_sqrt_sym(out, nan4, 2), DFX_ERR_NUMERIC,
                 "matrix sqrt: the matrix is not finite at [1, 1]");
    expect_error(dfx_matrix_sqrt_sym(out, neg, 0), DFX_ERR_INVALID_ARG, "size 0 is out of");

    free(s);
    free(a);
    free(aa);
    free(c);
    free(b);
    free(p);
    dfx_rng_destroy(g);
}
END_TEST

START_TEST(fid_errors)
{
    dfx_fid_stats a, b, c;
    const double mean[4] = {0}, id[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    stats_set(&a, 4, 10, mean, id);
    stats_set(&b, 3, 10, mean, id);
    double f = 0;
    expect_error(dfx_fid_compute(&a, &b, &f), DFX_ERR_INVALID_ARG,
                 "fid: the statistics have 4 and 3 features");
    ck_assert(isnan(f));
    dfx_fid_stats_fini(&b);

    stats_set(&b, 4, 1, mean, id);
    expect_error(dfx_fid_compute(&a, &b, &f), DFX_ERR_INVALID_ARG,
                 "fid: the second statistics hold 1 sample (a covariance needs at least 2)");
    b.n = 0;
    expect_error(dfx_fid_compute(&b, &a, &f), DFX_ERR_INVALID_ARG,
                 "fid: the first statistics hold 0 samples");
    b.n = 10;
    ck_assert_double_eq_tol(fid_of(&a, &b), 0, 1e-12);

    /* NaN features are refused and leave the statistics as they were */
    float x[8] = {1, 2, 3, 4, 5, 6, NAN, 8};
    ck_assert_int_eq(dfx_fid_stats_init(&c, 4), DFX_OK);
    expect_error(dfx_fid_stats_add(&c, x, 2), DFX_ERR_NUMERIC,
                 "fid stats: feature [row 1, column 2] is not finite (nan)");
    ck_assert_int_eq(c.n, 0);
    x[6] = -INFINITY;
    expect_error(dfx_fid_stats_add(&c, x, 2), DFX_ERR_NUMERIC, "is not finite (-inf)");
    expect_error(dfx_fid_stats_add(&c, x, -1), DFX_ERR_INVALID_ARG, "fid stats: -1 rows");
    dfx_fid_stats d3;
    ck_assert_int_eq(dfx_fid_stats_init(&d3, 3), DFX_OK);
    expect_error(dfx_fid_stats_merge(&c, &d3), DFX_ERR_INVALID_ARG,
                 "fid stats: cannot merge statistics of 4 and 3 features");
    dfx_fid_stats_fini(&d3);
    dfx_fid_stats_fini(&c);

    /* bad covariances and means */
    b.cov[5] = NAN;
    expect_error(dfx_fid_compute(&a, &b, &f), DFX_ERR_NUMERIC,
                 "fid: the second statistics' covariance is not finite at [1, 1]");
    b.cov[5] = 1;
    b.cov[1] = 0.5;
    expect_error(dfx_fid_compute(&b, &a, &f), DFX_ERR_NUMERIC,
                 "fid: the first statistics' covariance is not symmetric: [0, 1] is 0.5 but "
                 "[1, 0] is 0");
    b.cov[4] = 0.5;   /* symmetric now, still PSD */
    ck_assert(fid_of(&a, &b) > 0);
    b.cov[1] = b.cov[4] = 3;   /* [[1, 3], [3, 1]] block: eigenvalue -2 */
    expect_error(dfx_fid_compute(&a, &b, &f), DFX_ERR_NUMERIC,
                 "fid: the second statistics' covariance is not positive semidefinite: it has "
                 "eigenvalue -2 (largest magnitude 4)");
    expect_error(dfx_fid_compute(&b, &a, &f), DFX_ERR_NUMERIC,
                 "fid: the first statistics' covariance is not positive semidefinite");
    ck_assert(isnan(f));
    b.cov[1] = b.cov[4] = 0;
    b.mean[2] = INFINITY;
    expect_error(dfx_fid_compute(&a, &b, &f), DFX_ERR_NUMERIC,
                 "fid: the second statistics' mean is not finite at [2]");
    expect_error(dfx_fid_compute(&a, &b, NULL), DFX_ERR_INVALID_ARG, "fid: NULL output");
    dfx_fid_stats_fini(&a);
    dfx_fid_stats_fini(&b);
    expect_error(dfx_fid_compute(&a, &b, &f), DFX_ERR_INVALID_ARG,
                 "fid: the first statistics are not initialised");
}
END_TEST

/* ---- Inception Score ----------------------------------------------------- */

START_TEST(inception_score)
{
    double m, s;
    const int64_t k = 10, n = 60;
    float *p = malloc((size_t)(n * k) * sizeof *p);

    /* uniform predictions: every KL is 0 */
    for (int64_t i = 0; i < n * k; i++)
        p[i] = 1.0f / (float)k;
    ck_assert_int_eq(dfx_inception_score_compute(p, n, k, 3, &m, &s), DFX_OK);
    ck_assert_double_eq_tol(m, 1.0, 1e-12);
    ck_assert_double_eq_tol(s, 0.0, 1e-12);

    /* one-hot predictions spread evenly: log k each */
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < k; c++)
            p[i * k + c] = c == i % k ? 1.0f : 0.0f;
    ck_assert_int_eq(dfx_inception_score_compute(p, n, k, 1, &m, &s), DFX_OK);
    ck_assert_double_eq_tol(m, 10.0, 1e-12);
    ck_assert_double_eq_tol(s, 0.0, 1e-12);
    ck_assert_int_eq(dfx_inception_score_compute(p, n, k, 6, &m, &s), DFX_OK);
    ck_assert_double_eq_tol(m, 10.0, 1e-12);
    /* 4 splits of 15: classes 0-4 twice and 5-9 once in the first chunk,
     * p(y) = 2/15 or 1/15: KL = (10 log(15/2) + 5 log 15) / 15 */
    ck_assert_int_eq(dfx_inception_score_compute(p, n, k, 4, &m, &s), DFX_OK);
    const double s15 = exp((10 * log(7.5) + 5 * log(15.0)) / 15);
    ck_assert_double_eq_tol(m, (s15 + s15 + s15 + s15) / 4, 1e-12);
    ck_assert_double_eq_tol(s, 0.0, 1e-12);

    /* crafted: rows [1,0],[0,1] | [.5,.5],[1,0],[1,0] (n 5, 2 splits: 2 + 3 rows).
     * Chunk 1: p(y) = (.5,.5), KL = log 2 each: score 2.
     * Chunk 2: p(y) = (5/6, 1/6); KL row 1 = .5 log(.5/(5/6)) + .5 log(.5/(1/6))
     * = .5 log(9/5); rows 2, 3: log(6/5); score exp((.5 log 1.8 + 2 log 1.2) / 3). */
    const float q[10] = {1, 0, 0, 1, 0.5f, 0.5f, 1, 0, 1, 0};
    ck_assert_int_eq(dfx_inception_score_compute(q, 5, 2, 2, &m, &s), DFX_OK);
    const double c2 = exp((0.5 * log(1.8) + 2 * log(1.2)) / 3);
    ck_assert_double_eq_tol(m, (2 + c2) / 2, 1e-12);
    ck_assert_double_eq_tol(s, (2 - c2) / 2, 1e-12);
    ck_assert(c2 > 1.2 && c2 < 1.3);
    /* one split of all five: p(y) = (.7, .3) */
    ck_assert_int_eq(dfx_inception_score_compute(q, 5, 2, 1, &m, &s), DFX_OK);
    const double kl = (log(1 / 0.7) + log(1 / 0.3) + 0.5 * log(0.5 / 0.7) + 0.5 * log(0.5 / 0.3) +
                       2 * log(1 / 0.7)) / 5;
    ck_assert_double_eq_tol(m, exp(kl), 1e-12);
    ck_assert_double_eq(s, 0);

    /* from logits: softmax(0, log 3) = (1/4, 3/4); huge logits stay finite */
    float lg[4] = {0, logf(3), 1000, -1000};
    float pr[4];
    ck_assert_int_eq(dfx_softmax_rows(pr, lg, 2, 2), DFX_OK);
    ck_assert_double_eq_tol(pr[0], 0.25, 1e-7);
    ck_assert_double_eq_tol(pr[1], 0.75, 1e-7);
    ck_assert(pr[2] == 1.0f && pr[3] == 0.0f);
    ck_assert_int_eq(dfx_softmax_rows(lg, lg, 2, 2), DFX_OK);   /* in place */
    ck_assert(memcmp(lg, pr, sizeof pr) == 0);
    ck_assert_int_eq(dfx_inception_score_compute(pr, 2, 2, 1, &m, &s), DFX_OK);
    /* p(y) = (5/8, 3/8) */
    const double kl2 = (0.25 * log(0.25 / 0.625) + 0.75 * log(0.75 / 0.375) + log(1 / 0.625)) / 2;
    ck_assert_double_eq_tol(m, exp(kl2), 1e-6);
    free(p);
}
END_TEST

START_TEST(inception_score_errors)
{
    double m = 0, s = 0;
    float p[6] = {0.5f, 0.5f, 0.2f, 0.7f, 1, 0};
    expect_error(dfx_inception_score_compute(p, 3, 2, 1, &m, &s), DFX_ERR_INVALID_ARG,
                 "inception score: row 1 sums to 0.9, not 1 (tolerance 1e-3)");
    ck_assert(isnan(m) && isnan(s));
    p[2] = 0.3f;
    ck_assert_int_eq(dfx_inception_score_compute(p, 3, 2, 1, &m, &s), DFX_OK);
    p[2] = 0.3005f;   /* within 1e-3 */
    ck_assert_int_eq(dfx_inception_score_compute(p, 3, 2, 1, &m, &s), DFX_OK);
    p[4] = 1.1f;
    p[5] = -0.1f;
    expect_error(dfx_inception_score_compute(p, 3, 2, 1, &m, &s), DFX_ERR_INVALID_ARG,
                 "inception score: row 2 has the negative probability -0.1 at class 1");
    p[5] = NAN;
    expect_error(dfx_inception_score_compute(p, 3, 2, 1, &m, &s), DFX_ERR_NUMERIC,
                 "inception score: row 2 is not finite at class 1");
    p[4] = 1;
    p[5] = 0;
    expect_error(dfx_inception_score_compute(p, 3, 2, 4, &m, &s), DFX_ERR_INVALID_ARG,
                 "inception score: 4 splits of 3 samples");
    expect_error(dfx_inception_score_compute(p, 3, 2, 0, &m, &s), DFX_ERR_INVALID_ARG,
                 "inception score: 0 splits of 3 samples");
    expect_error(dfx_inception_score_compute(p, 0, 2, 1, &m, &s), DFX_ERR_INVALID_ARG,
                 "inception score: 0 samples of 2 classes");
    float lg[2] = {0, INFINITY};
    expect_error(dfx_softmax_rows(p, lg, 1, 2), DFX_ERR_NUMERIC,
                 "softmax: logit [row 0, class 1] is not finite (inf)");
    ck_assert(p[0] == 0.5f);
}
END_TEST

/* B B^T / d + 0.01 I through sgemm, for the large timing cases */
static double *fast_spd(dfx_rng *g, int64_t d)
{
    float *b = malloc((size_t)(d * d) * sizeof *b), *p = malloc((size_t)(d * d) * sizeof *p);
    double *s = malloc((size_t)(d * d) * sizeof *s);
    ck_assert(b && p && s);
    dfx_rng_normal(g, b, d * d);
    dfx_ops_matmul(false, true, d, d, d, 1.0f / (float)d, b, d, b, d, 0.0f, p, d);
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++)
            s[i * d + j] = 0.5 * ((double)p[i * d + j] + p[j * d + i]) + (i == j ? 0.01 : 0);
    free(b);
    free(p);
    return s;
}

/* FID of d 512 (and 2048 with DFX_TEST_SLOW) timed and printed: ~0.1 s at
 * d 512 on 2 idle cores. Asserted only against pathological slowness: with
 * other processes on the cores, the spinning OpenMP threads of OpenBLAS's
 * threaded dsyevd make it 10-50x slower. */
START_TEST(fid_timing)
{
    const int64_t dims[2] = {512, 2048};
    const int count = getenv("DFX_TEST_SLOW") ? 2 : 1;
    dfx_rng *g = new_rng(7);
    for (int c = 0; c < count; c++) {
        const int64_t d = dims[c];
        double *mu = normal_doubles(g, d);
        dfx_fid_stats a, b;
        double *s1 = fast_spd(g, d), *s2 = fast_spd(g, d);
        stats_set(&a, d, 10000, mu, s1);
        stats_set(&b, d, 10000, mu, s2);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        double f = fid_of(&a, &b);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        printf("fid d %lld: %.3f s (FID %.6g, BLAS %s, %d threads)\n", (long long)d, secs, f,
               dfx_ops_blas_core(), dfx_ops_blas_threads());
        ck_assert(f > 0 && isfinite(f));
        if (d == 512)
            ck_assert_msg(secs < 60, "FID at d 512 took %.2f s", secs);
        dfx_fid_stats_fini(&a);
        dfx_fid_stats_fini(&b);
        free(mu);
        free(s1);
        free(s2);
    }
    dfx_rng_destroy(g);
}
END_TEST

static Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, stats_incremental);
    tcase_add_test(tc, stats_small);
    tcase_add_test(tc, stats_save_load);
    tcase_add_test(tc, fid_self);
    tcase_add_test(tc, fid_closed_form);
    tcase_add_test(tc, fid_scipy_reference);
    tcase_add_test(tc, fid_samples);
    tcase_add_test(tc, matrix_sqrt);
    tcase_add_test(tc, fid_errors);
    tcase_add_test(tc, inception_score);
    tcase_add_test(tc, inception_score_errors);
    tcase_add_test(tc, fid_timing);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(metrics_suite());
}
