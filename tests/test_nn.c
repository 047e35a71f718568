/* The nn layers against straightforward double-precision references written
 * here (naive convolution loops, two-pass norms, a full softmax), on random
 * inputs and weights of awkward sizes: non-square images, sizes that are not
 * multiples of any tile, batches and heads above one, token counts that need
 * several attention blocks. Weights go through a temporary .safetensors and
 * dfx_weights, which tests loading (dtypes, unaligned data, sharded sets,
 * legacy names, conv-shaped projections, the error messages) as well.
 *
 * Tolerances: the layers compute in float32 and the references in double,
 * so the difference is float rounding: about sqrt(K) * 6e-8 relative for a
 * K-term dot product. Every comparison is scaled by the largest reference
 * value and allows 1e-5 of it (2e-6 where no long sum is involved), 10-100x
 * above what is measured (printed by each test) and far below what a wrong
 * index, a missing bias or a misplaced block produces (O(1)). */
#include <stdint.h>

#include "dfx/nn.h"
#include "testutil.h"

/* ---- helpers ----------------------------------------------------------- */

static uint64_t rng_state;

static void rng_seed(uint64_t s)
{
    rng_state = s * 0x9e3779b97f4a7c15ull + 1;
}

/* splitmix64, mapped to a uniform double in [-1, 1) */
static double urand(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1p-52 - 1.0;
}

static float *rand_floats(int64_t n, double scale, double offset)
{
    float *p = malloc((size_t)(n ? n : 1) * sizeof *p);
    ck_assert(p != NULL);
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)(offset + scale * urand());
    return p;
}

static double *to_double(const float *x, int64_t n)
{
    double *d = malloc((size_t)(n ? n : 1) * sizeof *d);
    ck_assert(d != NULL);
    for (int64_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

static double *dalloc(int64_t n)
{
    double *d = calloc((size_t)(n ? n : 1), sizeof *d);
    ck_assert(d != NULL);
    return d;
}

/* max |got - ref| <= tol * max(|ref|, floor); prints the measured error */
static void check_close(const char *what, const float *got, const double *ref, int64_t n,
                        double tol)
{
    double err = 0, scale = 0;
    int64_t worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= err)) {
            err = isnan(d) ? INFINITY : d;
            worst = i;
        }
        scale = fabs(ref[i]) > scale ? fabs(ref[i]) : scale;
    }
    double floor_ = scale > 1e-30 ? scale : 1e-30;
    printf("%-44s max err %.3g (rel %.3g of max |ref| %.3g)\n", what, err, err / floor_, scale);
    ck_assert_msg(err <= tol * floor_, "%s: element %lld: got %.9g, reference %.9g (max |ref| %.3g, tol %.3g)",
                  what, (long long)worst, (double)got[worst], ref[worst], scale, tol * floor_);
}

/* A set of tensors to write to a temporary safetensors file. */
#define WSET_MAX 64
typedef struct wset {
    int n;
    const char *names[WSET_MAX];
    dfx_tensor *t[WSET_MAX];
} wset;

/* Adds a random F32 tensor and returns its data (owned by the set). */
static float *wset_rand(wset *s, const char *name, int ndim, const int64_t *shape, double scale,
                        double offset)
{
    ck_assert(s->n < WSET_MAX);
    dfx_tensor *t;
    ck_assert(dfx_tensor_create(&t, DFX_DTYPE_F32, ndim, shape) == DFX_OK);
    float *d = t->data;
    for (int64_t i = 0; i < dfx_tensor_numel(t); i++)
        d[i] = (float)(offset + scale * urand());
    s->names[s->n] = name;
    s->t[s->n++] = t;
    return d;
}

static float *wset_rand1(wset *s, const char *name, int64_t len, double scale, double offset)
{
    return wset_rand(s, name, 1, &len, scale, offset);
}

static void wset_write(wset *s, const char *path)
{
    ck_assert_msg(dfx_safetensors_write(path, s->n, s->names, (const dfx_tensor *const *)s->t, 0,
                                        NULL, NULL) == DFX_OK,
                  "%s", dfx_error_message());
}

static void wset_free(wset *s)
{
    for (int i = 0; i < s->n; i++)
        dfx_tensor_destroy(s->t[i]);
    s->n = 0;
}

/* Writes the set into a fresh temporary folder and opens it. */
static dfx_weights *wset_open(wset *s, char **dir, char *path, size_t size)
{
    *dir = test_tmpdir();
    snprintf(path, size, "%s/w.safetensors", *dir);
    wset_write(s, path);
    dfx_weights *w;
    ck_assert_msg(dfx_weights_open(&w, path) == DFX_OK, "%s", dfx_error_message());
    return w;
}

static void close_all(dfx_weights *w, wset *s, char *dir)
{
    ck_assert_msg(dfx_weights_check_used(w, "") == DFX_OK, "%s", dfx_error_message());
    dfx_weights_close(w);
    wset_free(s);
    test_rmtree(dir);
    free(dir);
}

/* ---- double references -------------------------------------------------- */

static double silu_d(double x)
{
    return x / (1.0 + exp(-x));
}

/* y [n, cout, ho, wo] = conv(x [n, cin, h, w]) with per-side zero padding */
static void conv_ref(const double *x, int64_t n, int64_t cin, int64_t h, int64_t w, const float *wt,
                     const float *b, int64_t cout, int64_t k, int64_t s, int64_t pt, int64_t pl,
                     int64_t pb, int64_t pr, double *y, int64_t *ho_out, int64_t *wo_out)
{
    int64_t ho = (h + pt + pb - k) / s + 1, wo = (w + pl + pr - k) / s + 1;
    for (int64_t i = 0; i < n; i++)
        for (int64_t co = 0; co < cout; co++)
            for (int64_t oy = 0; oy < ho; oy++)
                for (int64_t ox = 0; ox < wo; ox++) {
                    double acc = b ? b[co] : 0.0;
                    for (int64_t ci = 0; ci < cin; ci++)
                        for (int64_t ky = 0; ky < k; ky++)
                            for (int64_t kx = 0; kx < k; kx++) {
                                int64_t iy = oy * s + ky - pt, ix = ox * s + kx - pl;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                    continue;
                                acc += wt[((co * cin + ci) * k + ky) * k + kx] *
                                       x[((i * cin + ci) * h + iy) * w + ix];
                            }
                    y[((i * cout + co) * ho + oy) * wo + ox] = acc;
                }
    if (ho_out)
        *ho_out = ho;
    if (wo_out)
        *wo_out = wo;
}

/* two-pass group norm (mean, then the biased variance), optional SiLU */
static void gn_ref(const double *x, int64_t n, int64_t c, int64_t groups, int64_t hw,
                   const float *gamma, const float *beta, double eps, bool silu, double *y)
{
    int64_t cpg = c / groups, m = cpg * hw;
    for (int64_t i = 0; i < n; i++)
        for (int64_t g = 0; g < groups; g++) {
            const double *xs = x + (i * c + g * cpg) * hw;
            double mean = 0, var = 0;
            for (int64_t j = 0; j < m; j++)
                mean += xs[j];
            mean /= (double)m;
            for (int64_t j = 0; j < m; j++)
                var += (xs[j] - mean) * (xs[j] - mean);
            var /= (double)m;
            for (int64_t j = 0; j < m; j++) {
                int64_t ch = g * cpg + j / hw;
                double v = (xs[j] - mean) / sqrt(var + eps) * gamma[ch] + beta[ch];
                y[(i * c + g * cpg) * hw + j] = silu ? silu_d(v) : v;
            }
        }
}

/* y [rows, out] = x [rows, in] W^T + b */
static void linear_ref(const double *x, int64_t rows, int64_t in, const float *wt, const float *b,
                       int64_t out, double *y)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++) {
            double acc = b ? b[o] : 0.0;
            for (int64_t i = 0; i < in; i++)
                acc += x[r * in + i] * wt[o * in + i];
            y[r * out + o] = acc;
        }
}

/* full-softmax attention on strided token-major q, k, v */
static void attention_ref(const double *q, int64_t ldq, const double *k, int64_t ldk, const double *v,
                          int64_t ldv, int64_t b, int64_t heads, int64_t nq, int64_t nk, int64_t dh,
                          double scale, bool causal, double *out, int64_t ldo)
{
    double *p = dalloc(nk);
    for (int64_t bi = 0; bi < b; bi++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t i = 0; i < nq; i++) {
                const double *qi = q + (bi * nq + i) * ldq + h * dh;
                const int64_t seen = causal ? i + 1 : nk;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < seen; j++) {
                    const double *kj = k + (bi * nk + j) * ldk + h * dh;
                    double s = 0;
                    for (int64_t d = 0; d < dh; d++)
                        s += qi[d] * kj[d];
                    p[j] = s * scale;
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int64_t j = 0; j < seen; j++)
                    sum += p[j] = exp(p[j] - mx);
                for (int64_t d = 0; d < dh; d++) {
                    double acc = 0;
                    for (int64_t j = 0; j < seen; j++)
                        acc += p[j] * v[(bi * nk + j) * ldv + h * dh + d];
                    out[(bi * nq + i) * ldo + h * dh + d] = acc / sum;
                }
            }
    free(p);
}

/* ---- weights ------------------------------------------------------------ */

START_TEST(weights_load)
{
    rng_seed(1);
    char *dir = test_tmpdir(), path[4200];
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    /* an F16 tensor of 3 elements first, so the F32 data after it starts at
     * byte 6 of the data region: unaligned for float */
    const int64_t s3[1] = {3}, s23[2] = {2, 3}, s4[1] = {4}, s22[2] = {2, 2}, s5[1] = {5};
    dfx_tensor *h, *a, *bf, *d, *i32;
    ck_assert(dfx_tensor_create(&h, DFX_DTYPE_F16, 1, s3) == DFX_OK);
    ck_assert(dfx_tensor_create(&a, DFX_DTYPE_F32, 2, s23) == DFX_OK);
    ck_assert(dfx_tensor_create(&bf, DFX_DTYPE_BF16, 1, s4) == DFX_OK);
    ck_assert(dfx_tensor_create(&d, DFX_DTYPE_F64, 2, s22) == DFX_OK);
    ck_assert(dfx_tensor_create(&i32, DFX_DTYPE_I32, 1, s5) == DFX_OK);
    const float hv[3] = {0.5f, -1.25f, 1000.0f}, bv[4] = {1.0f, -2.5f, 0.0078125f, 262144.0f};
    for (int i = 0; i < 3; i++)
        ((uint16_t *)h->data)[i] = dfx_f32_to_f16(hv[i]);
    for (int i = 0; i < 6; i++)
        ((float *)a->data)[i] = (float)urand();
    for (int i = 0; i < 4; i++)
        ((uint16_t *)bf->data)[i] = dfx_f32_to_bf16(bv[i]);
    for (int i = 0; i < 4; i++)
        ((double *)d->data)[i] = 0.1 * (i + 1);
    for (int i = 0; i < 5; i++)
        ((int32_t *)i32->data)[i] = i - 2;
    const char *names[5] = {"h", "a.weight", "bf", "d", "ints"};
    const dfx_tensor *ts[5] = {h, a, bf, d, i32};
    ck_assert(dfx_safetensors_write(path, 5, names, ts, 0, NULL, NULL) == DFX_OK);

    dfx_weights *w;
    ck_assert_msg(dfx_weights_open(&w, path) == DFX_OK, "%s", dfx_error_message());
    ck_assert_str_eq(dfx_weights_path(w), path);
    ck_assert(dfx_weights_has(w, "a.weight"));
    ck_assert(!dfx_weights_has(w, "a.bias"));
    float *p;
    ck_assert_msg(dfx_weights_load(w, "a.weight", 2, s23, &p) == DFX_OK, "%s", dfx_error_message());
    ck_assert_uint_eq((uintptr_t)p % 64, 0);
    ck_assert_mem_eq(p, a->data, 6 * sizeof(float));
    free(p);
    ck_assert(dfx_weights_load(w, "h", 1, s3, &p) == DFX_OK);
    ck_assert_uint_eq((uintptr_t)p % 64, 0);
    for (int i = 0; i < 3; i++)
        ck_assert_float_eq(p[i], hv[i]);
    free(p);
    ck_assert(dfx_weights_load(w, "bf", 1, s4, &p) == DFX_OK);
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq(p[i], bv[i]);
    free(p);
    ck_assert(dfx_weights_load(w, "d", 2, s22, &p) == DFX_OK);
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq(p[i], (float)(0.1 * (i + 1)));
    free(p);

    /* wrong shape, missing tensor: the file, the tensor and both shapes */
    char want[4400];
    const int64_t s32[2] = {3, 2};
    p = (float *)1;
    ck_assert_int_eq(dfx_weights_load(w, "a.weight", 2, s32, &p), DFX_ERR_FORMAT);
    ck_assert_ptr_null(p);
    snprintf(want, sizeof want, "%s: tensor 'a.weight' has shape [2,3] but the model expects [3,2]", path);
    ck_assert_str_eq(dfx_error_message(), want);
    ck_assert_int_eq(dfx_weights_load(w, "a.bias", 1, s3, &p), DFX_ERR_NOT_FOUND);
    snprintf(want, sizeof want, "%s: tensor 'a.bias' is missing", path);
    ck_assert_str_eq(dfx_error_message(), want);
    const char *alts[3] = {"to_q.weight", "query.weight", NULL};
    ck_assert_int_eq(dfx_weights_load_any(w, alts, 1, s3, &p), DFX_ERR_NOT_FOUND);
    snprintf(want, sizeof want, "%s: tensor 'to_q.weight' is missing (nor 'query.weight')", path);
    ck_assert_str_eq(dfx_error_message(), want);

    /* "ints" never loaded: check_used names it; under another prefix all is
     * used */
    ck_assert_int_eq(dfx_weights_check_used(w, ""), DFX_ERR_FORMAT);
    ck_assert_msg(strstr(dfx_error_message(), ": 1 tensor is not used by the model: 'ints'"), "%s",
                  dfx_error_message());
    ck_assert_int_eq(dfx_weights_check_used(w, "a."), DFX_OK);
    ck_assert_int_eq(dfx_weights_check_used(w, "in"), DFX_ERR_FORMAT);
    ck_assert(dfx_weights_load(w, "ints", 1, s5, &p) == DFX_OK);
    for (int i = 0; i < 5; i++)
        ck_assert_float_eq(p[i], (float)(i - 2));
    free(p);
    ck_assert_int_eq(dfx_weights_check_used(w, ""), DFX_OK);
    dfx_weights_close(w);
    dfx_weights_close(NULL);

    ck_assert_int_eq(dfx_weights_open(&w, "/nonexistent/x.safetensors"), DFX_ERR_NOT_FOUND);
    ck_assert_ptr_null(w);
    dfx_tensor_destroy(h);
    dfx_tensor_destroy(a);
    dfx_tensor_destroy(bf);
    dfx_tensor_destroy(d);
    dfx_tensor_destroy(i32);
    test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(weights_unused_and_sharded)
{
    rng_seed(2);
    char *dir = test_tmpdir(), p1[4200], p2[4200], idx[4200];
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    wset s1 = {0}, s2 = {0};
    static const char *const n1[4] = {"blk.a", "blk.b", "blk.c", "blk.d"};
    static const char *const n2[4] = {"blk.e", "blk.f", "blk.g", "head.w"};
    float *vals[8];
    for (int i = 0; i < 4; i++) {
        vals[i] = wset_rand1(&s1, n1[i], 3, 1, 0);
        vals[4 + i] = wset_rand1(&s2, n2[i], 3, 1, 0);
    }
    wset_write(&s1, p1);
    wset_write(&s2, p2);
    FILE *fp = fopen(idx, "w");
    ck_assert(fp != NULL);
    fprintf(fp, "{\"metadata\": {}, \"weight_map\": {");
    for (int i = 0; i < 8; i++)
        fprintf(fp, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "",
                i < 4 ? n1[i] : n2[i - 4], i < 4 ? 1 : 2);
    fprintf(fp, "}}\n");
    fclose(fp);
    dfx_weights *w;
    ck_assert_msg(dfx_weights_open(&w, idx) == DFX_OK, "%s", dfx_error_message());
    const int64_t three = 3;
    float *p;
    ck_assert(dfx_weights_load(w, "head.w", 1, &three, &p) == DFX_OK);
    ck_assert_mem_eq(p, vals[7], 3 * sizeof(float));
    free(p);
    /* seven unused: the first five (in file order) and the count */
    ck_assert_int_eq(dfx_weights_check_used(w, ""), DFX_ERR_FORMAT);
    char want[4400];
    snprintf(want, sizeof want,
             "%s: 7 tensors are not used by the model: 'blk.a', 'blk.b', 'blk.c', 'blk.d', "
             "'blk.e' and 2 more (a checkpoint for another configuration?)",
             idx);
    ck_assert_str_eq(dfx_error_message(), want);
    ck_assert_int_eq(dfx_weights_check_used(w, "head."), DFX_OK);
    ck_assert_int_eq(dfx_weights_check_used(w, "blk."), DFX_ERR_FORMAT);
    ck_assert_msg(strstr(dfx_error_message(), "7 tensors under 'blk.' are not used"), "%s",
                  dfx_error_message());
    ck_assert(dfx_weights_load(w, "blk.f", 1, &three, &p) == DFX_OK);
    ck_assert_mem_eq(p, vals[5], 3 * sizeof(float));
    free(p);
    dfx_weights_close(w);
    wset_free(&s1);
    wset_free(&s2);
    test_rmtree(dir);
    free(dir);
}
END_TEST

/* ---- arena -------------------------------------------------------------- */

/* One "pass": nested allocations released in stack order. Records the
 * pointers and returns the peak of live bytes it should have caused. */
static size_t arena_pass(dfx_arena *a, float **ptrs)
{
    const size_t m0 = dfx_arena_mark(a);
    ptrs[0] = dfx_arena_alloc(a, 300000);   /* beyond the first 1 MiB chunk */
    ptrs[1] = dfx_arena_alloc(a, 1001);
    const size_t m1 = dfx_arena_mark(a);
    ptrs[2] = dfx_arena_alloc(a, 500000);
    for (int i = 0; i < 500000; i++)
        ptrs[2][i] = (float)i;
    dfx_arena_release(a, m1);
    ptrs[3] = dfx_arena_alloc(a, 700000);
    for (int i = 0; i < 700000; i++)
        ptrs[3][i] = 1.0f;
    ptrs[4] = dfx_arena_alloc(a, 0);
    for (int i = 0; i < 5; i++) {
        ck_assert_ptr_nonnull(ptrs[i]);
        ck_assert_uint_eq((uintptr_t)ptrs[i] % 64, 0);
    }
    dfx_arena_release(a, m0);
    /* sizes rounded up to 64 bytes: 300000 floats = 1200000 B, 1001 -> 4032 */
    return 1200000 + 4032 + 2800000;
}

START_TEST(arena_stack)
{
    dfx_arena *a;
    ck_assert(dfx_arena_create(&a) == DFX_OK);
    ck_assert_uint_eq(dfx_arena_peak(a), 0);
    ck_assert_uint_eq(dfx_arena_mark(a), 0);
    float *p = dfx_arena_alloc(a, 3);
    ck_assert_uint_eq((uintptr_t)p % 64, 0);
    ck_assert_uint_eq(dfx_arena_mark(a), 64);
    float *q = dfx_arena_alloc(a, 17);
    ck_assert_ptr_eq(q, p + 16);
    ck_assert_uint_eq(dfx_arena_mark(a), 192);
    dfx_arena_release(a, 64);
    ck_assert_ptr_eq(dfx_arena_alloc(a, 5), q);   /* stack: the same place again */
    dfx_arena_release(a, 0);
    ck_assert_uint_eq(dfx_arena_peak(a), 192);

    /* warm-up pass grows the arena by chunks; once released to empty it
     * becomes one block of the peak, and later passes reuse it: the same
     * pointers, contiguous, and no growth */
    float *first[5], *second[5], *third[5];
    size_t want = arena_pass(a, first);
    ck_assert_uint_eq(dfx_arena_peak(a), want);
    arena_pass(a, second);
    ck_assert_uint_eq(dfx_arena_peak(a), want);
    ck_assert_ptr_eq(second[1], second[0] + 300000);
    ck_assert_ptr_eq(second[2], second[1] + 1008);
    ck_assert_ptr_eq(second[3], second[2]);
    arena_pass(a, third);
    for (int i = 0; i < 5; i++)
        ck_assert_ptr_eq(third[i], second[i]);
    /* the whole block is exactly the peak: all of it is one allocation from
     * its base, and one more float needs a new chunk */
    float *all = dfx_arena_alloc(a, want / sizeof(float));
    ck_assert_ptr_eq(all, second[0]);
    float *more = dfx_arena_alloc(a, 1);
    ck_assert_ptr_nonnull(more);
    ck_assert_ptr_ne(more, all + want / sizeof(float));
    dfx_arena_release(a, 0);
    ck_assert_uint_eq(dfx_arena_peak(a), want + 64);
    dfx_arena_destroy(a);
    dfx_arena_destroy(NULL);
}
END_TEST

/* ---- elementwise -------------------------------------------------------- */

START_TEST(activations)
{
    /* a sweep over [-30, 30] plus the tails, long enough to be threaded */
    const int64_t n = 200003;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    double *ref = dalloc(n);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(-30.0 + 60.0 * (double)i / (double)(n - 1));
    x[0] = -200.0f;
    x[1] = 150.0f;
    x[2] = -1e-30f;
    x[3] = 0.0f;
    struct {
        const char *name;
        void (*fn)(float *, int64_t);
        int kind;
    } acts[4] = {{"silu", dfx_nn_silu, 0},
                 {"gelu", dfx_nn_gelu, 1},
                 {"gelu_tanh", dfx_nn_gelu_tanh, 2},
                 {"quick_gelu", dfx_nn_quick_gelu, 3}};
    for (int a = 0; a < 4; a++) {
        memcpy(y, x, n * sizeof *y);
        acts[a].fn(y, n);
        double worst = 0;
        for (int64_t i = 0; i < n; i++) {
            double v = x[i], r;
            switch (acts[a].kind) {
            case 0: r = silu_d(v); break;
            case 1: r = 0.5 * v * (1.0 + erf(v / sqrt(2.0))); break;
            case 2: r = 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v))); break;
            default: r = v / (1.0 + exp(-1.702 * v)); break;
            }
            ref[i] = r;
            /* a few float roundings of the result, or of 1 + erf/tanh (whose
             * cancellation leaves an absolute error of float eps times |x|) */
            double err = fabs(y[i] - r), tol = 8e-7 * fabs(r) + 1.2e-7 * fabs(v) + 1e-37;
            ck_assert_msg(err <= tol, "%s(%.9g) = %.9g, reference %.9g", acts[a].name, v, (double)y[i], r);
            worst = err / (fabs(r) + fabs(v) + 1e-30) > worst ? err / (fabs(r) + fabs(v) + 1e-30) : worst;
        }
        printf("%-44s max err / (|ref| + |x|) %.3g\n", acts[a].name, worst);
    }
    /* a NaN stays NaN (the fast exp must not turn it into a number) */
    for (int a = 0; a < 4; a++) {
        float v[3] = {NAN, 1.0f, -INFINITY};
        acts[a].fn(v, 3);
        ck_assert_msg(isnan(v[0]), "%s(NaN) = %g", acts[a].name, (double)v[0]);
        ck_assert(isfinite(v[1]));
    }
    /* add and the per-channel broadcast */
    float *b = malloc(n * sizeof *b);
    for (int64_t i = 0; i < n; i++)
        b[i] = (float)(i % 7);
    dfx_nn_add(y, x, b, n);
    for (int64_t i = 0; i < n; i++)
        ck_assert_float_eq(y[i], x[i] + b[i]);
    const int64_t nn = 3, c = 5, hw = 13331;
    float v[15];
    for (int i = 0; i < 15; i++)
        v[i] = (float)(i * i) - 3.5f;
    memcpy(y, x, nn * c * hw * sizeof *y);
    dfx_nn_add_channel(y, v, nn, c, hw);
    for (int64_t i = 0; i < nn * c * hw; i++)
        ck_assert_float_eq(y[i], x[i] + v[i / hw]);
    free(x);
    free(y);
    free(b);
    free(ref);
}
END_TEST

START_TEST(upsample_avgpool)
{
    rng_seed(3);
    const int64_t n = 2, c = 3, h = 5, w = 7;
    float *x = rand_floats(n * c * h * w, 1, 0), *up = malloc(n * c * 4 * h * w * sizeof(float));
    dfx_nn_upsample_nearest2x(x, n, c, h, w, up);
    for (int64_t p = 0; p < n * c; p++)
        for (int64_t i = 0; i < 2 * h; i++)
            for (int64_t j = 0; j < 2 * w; j++)
                ck_assert_float_eq(up[(p * 2 * h + i) * 2 * w + j], x[(p * h + i / 2) * w + j / 2]);
    /* odd sizes floor, as nn.AvgPool2d(2, 2) */
    float *dn = malloc(n * c * 2 * 3 * sizeof(float));
    dfx_nn_avgpool2x(x, n, c, h, w, dn);
    for (int64_t p = 0; p < n * c; p++)
        for (int64_t i = 0; i < 2; i++)
            for (int64_t j = 0; j < 3; j++) {
                const float *r = x + (p * h + 2 * i) * w + 2 * j;
                double ref = ((double)r[0] + r[1] + r[w] + r[w + 1]) / 4.0;
                ck_assert(fabs(dn[(p * 2 + i) * 3 + j] - ref) <= 4e-7);
            }
    /* up then down is the identity */
    float *back = malloc(n * c * h * w * sizeof(float));
    dfx_nn_avgpool2x(up, n, c, 2 * h, 2 * w, back);
    for (int64_t i = 0; i < n * c * h * w; i++)
        ck_assert_float_eq(back[i], x[i]);
    free(x);
    free(up);
    free(dn);
    free(back);
}
END_TEST

/* ---- linear, norms, embedding -------------------------------------------- */

START_TEST(linear_layer)
{
    rng_seed(4);
    const int64_t rows = 37, in = 29, out = 23;
    wset s = {0};
    const int64_t ws[2] = {out, in}, wc[4] = {out, in, 1, 1};
    float *w1 = wset_rand(&s, "l1.weight", 2, ws, 0.3, 0);
    float *b1 = wset_rand1(&s, "l1.bias", out, 0.5, 0);
    float *w2 = wset_rand(&s, "l2.weight", 4, wc, 0.3, 0);   /* 1x1-conv shaped */
    char *dir, path[4200];
    dfx_weights *w = wset_open(&s, &dir, path, sizeof path);
    dfx_linear l1, l2;
    ck_assert_msg(dfx_linear_load(&l1, w, "l1", in, out, true) == DFX_OK, "%s", dfx_error_message());
    ck_assert_msg(dfx_linear_load(&l2, w, "l2", in, out, false) == DFX_OK, "%s", dfx_error_message());
    ck_assert_ptr_null(l2.b);
    /* a bias that is not there */
    dfx_linear l3;
    ck_assert_int_eq(dfx_linear_load(&l3, w, "l2", in, out, true), DFX_ERR_NOT_FOUND);
    ck_assert_ptr_null(l3.w);
    ck_assert_msg(strstr(dfx_error_message(), "tensor 'l2.bias' is missing"), "%s", dfx_error_message());
    float *x = rand_floats(rows * in, 1, 0), *y = malloc(rows * out * sizeof(float));
    double *xd = to_double(x, rows * in), *ref = dalloc(rows * out);
    dfx_linear_forward(&l1, x, rows, y);
    linear_ref(xd, rows, in, w1, b1, out, ref);
    check_close("linear with bias", y, ref, rows * out, 1e-5);
    dfx_linear_forward(&l2, x, rows, y);
    linear_ref(xd, rows, in, w2, NULL, out, ref);
    check_close("linear, conv-shaped weight, no bias", y, ref, rows * out, 1e-5);
    dfx_linear_free(&l1);
    dfx_linear_free(&l2);
    close_all(w, &s, dir);
    free(x);
    free(y);
    free(xd);
    free(ref);
}
END_TEST

START_TEST(norms)
{
    rng_seed(5);
    const int64_t n = 3, c = 12, groups = 4, hw = 35, rows = 5, dim = 77;
    wset s = {0};
    float *g = wset_rand1(&s, "gn.weight", c, 0.5, 1), *b = wset_rand1(&s, "gn.bias", c, 0.5, 0);
    float *lg = wset_rand1(&s, "ln.weight", dim, 0.5, 1), *lb = wset_rand1(&s, "ln.bias", dim, 0.5, 0);
    char *dir, path[4200];
    dfx_weights *w = wset_open(&s, &dir, path, sizeof path);
    dfx_group_norm gn;
    dfx_layer_norm ln;
    dfx_group_norm bad;
    ck_assert_int_eq(dfx_group_norm_load(&bad, w, "gn", 5, c, 1e-5), DFX_ERR_INVALID_ARG);
    ck_assert_msg(dfx_group_norm_load(&gn, w, "gn", groups, c, 1e-5) == DFX_OK, "%s", dfx_error_message());
    ck_assert_msg(dfx_layer_norm_load(&ln, w, "ln", dim, 1e-6) == DFX_OK, "%s", dfx_error_message());

    /* a large common offset: statistics in float would lose digits here */
    float *x = rand_floats(n * c * hw, 2, 300), *y = malloc(n * c * hw * sizeof(float));
    double *xd = to_double(x, n * c * hw), *ref = dalloc(n * c * hw);
    for (int silu = 0; silu < 2; silu++) {
        dfx_group_norm_forward(&gn, x, n, hw, y, silu);
        gn_ref(xd, n, c, groups, hw, g, b, 1e-5, silu, ref);
        check_close(silu ? "group norm + silu (mean 300)" : "group norm (mean 300)", y, ref, n * c * hw,
                    2e-6);
    }
    memcpy(y, x, n * c * hw * sizeof *y);
    dfx_group_norm_forward(&gn, y, n, hw, y, true);   /* in place */
    gn_ref(xd, n, c, groups, hw, g, b, 1e-5, true, ref);
    check_close("group norm + silu in place", y, ref, n * c * hw, 2e-6);

    float *lx = rand_floats(rows * dim, 3, -1), *ly = malloc(rows * dim * sizeof(float));
    double *lref = dalloc(rows * dim);
    dfx_layer_norm_forward(&ln, lx, rows, ly);
    for (int64_t r = 0; r < rows; r++) {
        double mean = 0, var = 0;
        for (int64_t i = 0; i < dim; i++)
            mean += lx[r * dim + i];
        mean /= dim;
        for (int64_t i = 0; i < dim; i++)
            var += (lx[r * dim + i] - mean) * (lx[r * dim + i] - mean);
        var /= dim;
        for (int64_t i = 0; i < dim; i++)
            lref[r * dim + i] = (lx[r * dim + i] - mean) / sqrt(var + 1e-6) * lg[i] + lb[i];
    }
    check_close("layer norm", ly, lref, rows * dim, 2e-6);
    dfx_layer_norm_forward(&ln, lx, rows, lx);
    check_close("layer norm in place", lx, lref, rows * dim, 2e-6);

    dfx_group_norm_free(&gn);
    dfx_layer_norm_free(&ln);
    close_all(w, &s, dir);
    free(x);
    free(y);
    free(xd);
    free(ref);
    free(lx);
    free(ly);
    free(lref);
}
END_TEST

START_TEST(timestep_embedding)
{
    /* the formula with torch's float32 roundings of the exponent and the
     * argument, then sin and cos of that float argument in double. dfx's
     * frequency is torch's exp, which may be an ulp away from the correctly
     * rounded one computed here, and an ulp of a frequency moves the
     * argument by |t f| 2^-24: the tolerance allows that on top of the ulp
     * of sinf and cosf themselves. An error in the formula (the order of
     * the float roundings, the shift, the layout) moves it by far more. */
    const double t[4] = {0, 10, 500.5, 999};
    const struct {
        int64_t dim;
        bool flip;
        double shift, scale, max_period;
    } cases[4] = {{32, false, 1, 1, 10000}, {16, true, 0, 1, 10000}, {33, true, 1, 1, 10000},
                  {20, false, 0.5, 1000, 500}};
    for (int k = 0; k < 4; k++) {
        const int64_t dim = cases[k].dim, half = dim / 2;
        float out[4 * 33];
        double ref[4 * 33], tol[4 * 33];
        dfx_nn_timestep_embedding(t, 4, dim, cases[k].flip, cases[k].shift, cases[k].scale,
                                  cases[k].max_period, out);
        for (int b = 0; b < 4; b++) {
            for (int64_t i = 0; i < half; i++) {
                float e = (float)-log(cases[k].max_period) * (float)i;
                e = e / (float)(half - cases[k].shift);
                float f = (float)exp((double)e);
                float arg = (float)cases[k].scale * ((float)t[b] * f);
                ref[b * dim + (cases[k].flip ? half + i : i)] = sin((double)arg);
                ref[b * dim + (cases[k].flip ? i : half + i)] = cos((double)arg);
                tol[b * dim + i] = tol[b * dim + half + i] = 6e-8 + fabs((double)arg) * 0x1p-23;
            }
            if (dim % 2) {
                ref[b * dim + dim - 1] = 0;
                tol[b * dim + dim - 1] = 0;
            }
        }
        double worst = 0;
        for (int64_t i = 0; i < 4 * dim; i++) {
            double err = fabs(out[i] - ref[i]);
            ck_assert_msg(err <= tol[i], "dim %lld element %lld: %.9g, reference %.9g", (long long)dim,
                          (long long)i, (double)out[i], ref[i]);
            worst = err > worst ? err : worst;
        }
        printf("timestep embedding dim %-21lld max err %.3g\n", (long long)dim, worst);
    }
}
END_TEST

/* ---- convolution --------------------------------------------------------- */

typedef struct conv_case {
    int64_t n, cin, cout, h, w, k, s, pt, pl, pb, pr;
    bool bias, flat;   /* flat: [cout, cin] weight for a 1x1 */
    const char *what;
    dfx_conv2d_algo algo;
    double tol;        /* 0: 1e-5 */
} conv_case;

/* the algorithms, short for the case tables */
#define AUTO DFX_CONV2D_ALGO_AUTO
#define IM2COL DFX_CONV2D_ALGO_IM2COL
#define WG2 DFX_CONV2D_ALGO_WINOGRAD_2X2
#define WG4 DFX_CONV2D_ALGO_WINOGRAD_4X4

static void run_conv_case(const conv_case *cc)
{
    wset s = {0};
    const int64_t ws[4] = {cc->cout, cc->cin, cc->k, cc->k}, wf[2] = {cc->cout, cc->cin};
    float *wt = wset_rand(&s, "c.weight", cc->flat ? 2 : 4, cc->flat ? wf : ws,
                          1.0 / sqrt((double)(cc->cin * cc->k * cc->k)), 0);
    float *b = cc->bias ? wset_rand1(&s, "c.bias", cc->cout, 0.5, 0) : NULL;
    char *dir, path[4200];
    dfx_weights *w = wset_open(&s, &dir, path, sizeof path);
    dfx_conv2d conv;
    ck_assert_msg(dfx_conv2d_load(&conv, w, "c", cc->cin, cc->cout, cc->k, cc->s, cc->pt, cc->bias) == DFX_OK,
                  "%s", dfx_error_message());
    conv.pad_left = cc->pl;
    conv.pad_bottom = cc->pb;
    conv.pad_right = cc->pr;
    ck_assert_msg(dfx_conv2d_set_algo(&conv, cc->algo) == DFX_OK, "%s", dfx_error_message());
    int64_t ho, wo;
    dfx_conv2d_out_size(&conv, cc->h, cc->w, &ho, &wo);
    float *x = rand_floats(cc->n * cc->cin * cc->h * cc->w, 1, 0);
    double *xd = to_double(x, cc->n * cc->cin * cc->h * cc->w);
    int64_t rho, rwo;
    double *ref = dalloc(cc->n * cc->cout * ho * wo);
    conv_ref(xd, cc->n, cc->cin, cc->h, cc->w, wt, b, cc->cout, cc->k, cc->s, cc->pt, cc->pl, cc->pb, cc->pr,
             ref, &rho, &rwo);
    ck_assert_int_eq(ho, rho);
    ck_assert_int_eq(wo, rwo);
    /* a guard float after the output catches writes past its end */
    const int64_t ny = cc->n * cc->cout * ho * wo;
    float *y = malloc((ny + 1) * sizeof *y);
    y[ny] = 12345.0f;
    dfx_arena *a;
    ck_assert(dfx_arena_create(&a) == DFX_OK);
    ck_assert_msg(dfx_conv2d_forward(&conv, x, cc->n, cc->h, cc->w, y, a) == DFX_OK, "%s",
                  dfx_error_message());
    ck_assert_float_eq(y[ny], 12345.0f);
    ck_assert_uint_eq(dfx_arena_mark(a), 0);
    check_close(cc->what, y, ref, ny, cc->tol > 0 ? cc->tol : 1e-5);
    dfx_arena_destroy(a);
    dfx_conv2d_free(&conv);
    close_all(w, &s, dir);
    free(x);
    free(xd);
    free(ref);
    free(y);
}

START_TEST(conv2d)
{
    rng_seed(6);
    static const conv_case cases[] = {
        {2, 3, 5, 7, 11, 3, 1, 1, 1, 1, 1, true, false, "conv 3x3 pad 1, batch 2, 7x11", IM2COL, 0},
        {3, 4, 6, 9, 8, 3, 2, 0, 0, 1, 1, true, false, "conv 3x3 stride 2, pad right/bottom", IM2COL, 0},
        {2, 5, 3, 10, 13, 3, 2, 1, 1, 1, 1, false, false, "conv 3x3 stride 2 pad 1, no bias", IM2COL, 0},
        {2, 4, 7, 6, 9, 1, 1, 0, 0, 0, 0, true, false, "conv 1x1 (direct sgemm)", IM2COL, 0},
        {2, 3, 4, 7, 9, 1, 2, 0, 0, 0, 0, true, false, "conv 1x1 stride 2", IM2COL, 0},
        {3, 6, 5, 5, 7, 1, 1, 0, 0, 0, 0, true, true, "conv 1x1 with a [cout, cin] weight", IM2COL, 0},
        {2, 3, 4, 11, 8, 5, 1, 2, 2, 2, 2, true, false, "conv 5x5 pad 2", IM2COL, 0},
        {1, 2, 3, 3, 4, 3, 1, 2, 0, 1, 3, true, false, "conv 3x3, four different paddings", IM2COL, 0},
        /* 64 * 9 * 100 floats per output row: 36 rows per 8 MiB col tile,
         * so 80 rows take three tiles */
        {1, 64, 16, 80, 100, 3, 1, 1, 1, 1, 1, true, false, "conv 3x3 80x100x64 (row tiles)", IM2COL, 0},
        /* 300 output pixels per item: items batched 4 to a product */
        {5, 8, 6, 15, 20, 3, 1, 1, 1, 1, 1, true, false, "conv 3x3 batch 5 of 15x20 (batched)", IM2COL, 0},
        {6, 5, 4, 8, 6, 3, 2, 1, 1, 1, 1, true, false, "conv stride 2 batch 6 of 4x3 (batched)", IM2COL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        run_conv_case(&cases[i]);
}
END_TEST

START_TEST(conv2d_winograd)
{
    rng_seed(12);
    static const conv_case cases[] = {
        {2, 3, 5, 7, 11, 3, 1, 1, 1, 1, 1, true, false, "F4 3->5, batch 2, 7x11", WG4, 0},
        {2, 3, 5, 7, 11, 3, 1, 1, 1, 1, 1, true, false, "F2 3->5, batch 2, 7x11", WG2, 0},
        {1, 2, 3, 3, 4, 3, 1, 2, 0, 1, 3, true, false, "F4 four different paddings", WG4, 0},
        {1, 2, 3, 3, 4, 3, 1, 2, 0, 1, 3, true, false, "F2 four different paddings", WG2, 0},
        {3, 4, 6, 9, 8, 3, 1, 0, 0, 0, 0, false, false, "F4 unpadded, no bias", WG4, 0},
        {2, 5, 4, 1, 1, 3, 1, 1, 1, 1, 1, true, false, "F4 1x1 image", WG4, 0},
        {3, 17, 33, 13, 9, 3, 1, 1, 1, 1, 1, true, false, "F4 17->33, batch 3, 13x9", WG4, 0},
        {3, 17, 33, 13, 9, 3, 1, 1, 1, 1, 1, true, false, "F2 17->33, batch 3, 13x9", WG2, 0},
        {3, 17, 33, 13, 9, 3, 1, 1, 1, 1, 1, true, false, "im2col 17->33, batch 3, 13x9", IM2COL, 0},
        {2, 64, 48, 17, 30, 3, 1, 1, 1, 1, 1, true, false, "AUTO 64->48, batch 2, 17x30", AUTO, 0},
        {4, 128, 32, 5, 6, 3, 1, 1, 1, 1, 1, true, false, "F4 128->32, batch 4, 5x6", WG4, 0},
        /* 64 + 64 channels of 36 positions and 25 tiles a row: 36 of the
         * 40 tile rows fit the 16 MiB budget, so 2 chunks of 20, the second
         * starting at the second item */
        {2, 64, 64, 80, 100, 3, 1, 1, 1, 1, 1, true, false, "F4 64->64 80x100, batch 2 (2 chunks)", WG4, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        run_conv_case(&cases[i]);
}
END_TEST

START_TEST(conv2d_errors)
{
    rng_seed(7);
    wset s = {0};
    const int64_t ws[4] = {4, 3, 3, 3};
    wset_rand(&s, "c.weight", 4, ws, 1, 0);
    wset_rand1(&s, "c.bias", 4, 1, 0);
    char *dir, path[4200];
    dfx_weights *w = wset_open(&s, &dir, path, sizeof path);
    dfx_conv2d conv;
    ck_assert_int_eq(dfx_conv2d_load(&conv, w, "c", 3, 4, 1, 1, 0, true), DFX_ERR_FORMAT);
    char want[4400];
    snprintf(want, sizeof want, "%s: tensor 'c.weight' has shape [4,3,3,3] but the model expects [4,3,1,1]",
             path);
    ck_assert_str_eq(dfx_error_message(), want);
    ck_assert_ptr_null(conv.w);
    ck_assert_int_eq(dfx_conv2d_load(&conv, w, "d", 3, 4, 3, 1, 1, true), DFX_ERR_NOT_FOUND);
    ck_assert_msg(dfx_conv2d_load(&conv, w, "c", 3, 4, 3, 1, 0, true) == DFX_OK, "%s", dfx_error_message());
    dfx_arena *a;
    ck_assert(dfx_arena_create(&a) == DFX_OK);
    float x[3 * 2 * 2], y[16];
    ck_assert_int_eq(dfx_conv2d_forward(&conv, x, 1, 2, 2, y, a), DFX_ERR_INVALID_ARG);
    dfx_arena_destroy(a);
    dfx_conv2d_free(&conv);
    close_all(w, &s, dir);
}
END_TEST

/* ---- attention ------------------------------------------------------------ */

static void run_attention_mask(int64_t b, int64_t heads, int64_t nq, int64_t nk, int64_t dh, bool causal,
                               const char *what)
{
    /* q, k and v in one buffer with padded rows, as fused projections give
     * them; the output also strided, its padding checked untouched */
    const int64_t width = heads * dh, ld = 3 * width + 5, ldo = width + 3;
    const int64_t rows = nq > nk ? nq : nk;
    /* scores with a spread of about 3: peaked softmax rows, not averages */
    float *qkv = rand_floats(b * rows * ld, 3, 0);
    float *kv = nq == nk ? qkv : rand_floats(b * nk * ld, 3, 0);
    double *qd = to_double(qkv, b * rows * ld), *kd = to_double(kv, b * nk * ld);
    float *out = malloc(b * nq * ldo * sizeof *out);
    for (int64_t i = 0; i < b * nq * ldo; i++)
        out[i] = -7.0f;
    double *ref = dalloc(b * nq * ldo);
    const double scale = 1.0 / sqrt((double)dh);
    dfx_arena *a;
    ck_assert(dfx_arena_create(&a) == DFX_OK);
    const dfx_status st = causal ? dfx_nn_attention_causal(qkv, ld, kv + width, ld, kv + 2 * width, ld, b, heads,
                                                           nq, dh, (float)scale, out, ldo, a)
                                 : dfx_nn_attention(qkv, ld, kv + width, ld, kv + 2 * width, ld, b, heads, nq, nk,
                                                    dh, (float)scale, out, ldo, a);
    ck_assert_msg(st == DFX_OK, "%s", dfx_error_message());
    attention_ref(qd, ld, kd + width, ld, kd + 2 * width, ld, b, heads, nq, nk, dh, (double)(float)scale, causal,
                  ref, ldo);
    /* the padding untouched; the rows compacted for the comparison */
    for (int64_t r = 0; r < b * nq; r++) {
        for (int64_t j = width; j < ldo; j++)
            ck_assert_float_eq(out[r * ldo + j], -7.0f);
        memmove(out + r * width, out + r * ldo, width * sizeof *out);
        memmove(ref + r * width, ref + r * ldo, width * sizeof *ref);
    }
    check_close(what, out, ref, b * nq * width, 1e-5);
    ck_assert_uint_eq(dfx_arena_mark(a), 0);
    dfx_arena_destroy(a);
    free(qkv);
    if (kv != qkv)
        free(kv);
    free(qd);
    free(kd);
    free(out);
    free(ref);
}

static void run_attention(int64_t b, int64_t heads, int64_t nq, int64_t nk, int64_t dh, const char *what)
{
    run_attention_mask(b, heads, nq, nk, dh, false, what);
}

START_TEST(attention)
{
    rng_seed(8);
    run_attention(2, 3, 5, 5, 4, "attention tiny, batch 2, 3 heads");
    /* 1100 keys: 953 rows of scores fit the 4 MiB budget, so 1100 queries
     * take 2 blocks of 550, each of one (item, head) unit */
    run_attention(2, 2, 1100, 1100, 7, "attention 1100 tokens, 2 heads of 7");
    /* causal: a text encoder's 77 tokens, and 2 blocks whose second starts
     * at query 550 (its mask offset) */
    run_attention_mask(2, 12, 77, 77, 8, true, "causal attention 77 tokens, 12 heads");
    run_attention_mask(1, 2, 1100, 1100, 7, true, "causal attention 1100 tokens (2 blocks)");
    /* 300 x 300 scores: 11 units fit a block, so 15 units go in groups of
     * 11 and 4, across batch items */
    run_attention(3, 5, 300, 300, 3, "attention 300 tokens, batch 3 x 5 heads");
    run_attention(1, 3, 37, 1500, 8, "attention 37 queries on 1500 keys");
    /* 5000 keys: 209 rows fit, so 2 blocks of 150 */
    run_attention(1, 1, 300, 5000, 5, "attention 300 x 5000 (2 blocks)");
    dfx_arena *a;
    ck_assert(dfx_arena_create(&a) == DFX_OK);
    /* a NaN in one query gives NaN in that query's output, not a number */
    {
        const int64_t n = 50, dh = 4;
        float *qkv = rand_floats(n * 3 * dh, 1, 0), *o = malloc(n * dh * sizeof *o);
        qkv[7 * 3 * dh + 1] = NAN;
        ck_assert(dfx_nn_attention(qkv, 3 * dh, qkv + dh, 3 * dh, qkv + 2 * dh, 3 * dh, 1, 1, n, n, dh,
                                   0.5f, o, dh, a) == DFX_OK);
        for (int64_t i = 0; i < n * dh; i++)
            ck_assert_msg(i / dh == 7 ? isnan(o[i]) : isfinite(o[i]), "output %lld: %g", (long long)i,
                          (double)o[i]);
        free(qkv);
        free(o);
    }
    float buf[64];
    ck_assert_int_eq(dfx_nn_attention(buf, 3, buf, 4, buf, 4, 1, 1, 2, 2, 4, 1, buf, 4, a),
                     DFX_ERR_INVALID_ARG);
    dfx_arena_destroy(a);
}
END_TEST

/* ---- blocks -------------------------------------------------------------- */

typedef struct rb_case {
    int64_t n, cin, cout, temb, groups, h, w;
    bool scale_shift;
    double osf;
    const char *what;
} rb_case;

static void run_resblock(const rb_case *rc)
{
    wset s = {0};
    const int64_t cin = rc->cin, cout = rc->cout, hw = rc->h * rc->w, n = rc->n;
    const int64_t w1s[4] = {cout, cin, 3, 3}, w2s[4] = {cout, cout, 3, 3}, wss[4] = {cout, cin, 1, 1};
    const int64_t tw = rc->scale_shift ? 2 * cout : cout, wts[2] = {tw, rc->temb};
    float *g1 = wset_rand1(&s, "rb.norm1.weight", cin, 0.3, 1), *b1 = wset_rand1(&s, "rb.norm1.bias", cin, 0.3, 0);
    float *c1 = wset_rand(&s, "rb.conv1.weight", 4, w1s, 1.0 / sqrt(9.0 * cin), 0);
    float *c1b = wset_rand1(&s, "rb.conv1.bias", cout, 0.3, 0);
    float *tpw = NULL, *tpb = NULL;
    if (rc->temb) {
        tpw = wset_rand(&s, "rb.time_emb_proj.weight", 2, wts, 1.0 / sqrt((double)rc->temb), 0);
        tpb = wset_rand1(&s, "rb.time_emb_proj.bias", tw, 0.3, 0);
    }
    float *g2 = wset_rand1(&s, "rb.norm2.weight", cout, 0.3, 1), *b2 = wset_rand1(&s, "rb.norm2.bias", cout, 0.3, 0);
    float *c2 = wset_rand(&s, "rb.conv2.weight", 4, w2s, 1.0 / sqrt(9.0 * cout), 0);
    float *c2b = wset_rand1(&s, "rb.conv2.bias", cout, 0.3, 0);
    float *sw = NULL, *sb = NULL;
    if (cin != cout) {
        sw = wset_rand(&s, "rb.conv_shortcut.weight", 4, wss, 1.0 / sqrt((double)cin), 0);
        sb = wset_rand1(&s, "rb.conv_shortcut.bias", cout, 0.3, 0);
    }
    char *dir, path[4200];
    dfx_weights *w = wset_open(&s, &dir, path, sizeof path);
    dfx_resblock rb;
    dfx_resblock_params p = {cin, cout, rc->temb, rc->groups, 1e-5, rc->scale_shift, rc->osf};
    ck_assert_msg(dfx_resblock_load(&rb, w, "rb", &p) == DFX_OK, "%s", dfx_error_message());

    float *x = rand_floats(n * cin * hw, 1.5, 0.2), *temb = rc->temb ? rand_floats(n * rc->temb, 1, 0) : NULL;
    float *y = malloc(n * cout * hw * sizeof *y);
    dfx_arena *a;
    ck_assert(dfx_arena_create(&a) == DFX_OK);
    ck_assert_msg(dfx_resblock_forward(&rb, x, temb, n, rc->h, rc->w, y, a) == DFX_OK, "%s",
                  dfx_error_message());

    /* the reference, step by step as ResnetBlock2D.forward */
    double *xd = to_double(x, n * cin * hw), *h1 = dalloc(n * cin * hw), *h2 = dalloc(n * cout * hw);
    double *h3 = dalloc(n * cout * hw), *ref = dalloc(n * cout * hw), *tp = dalloc(n * tw);
    gn_ref(xd, n, cin, rc->groups, hw, g1, b1, 1e-5, true, h1);
    conv_ref(h1, n, cin, rc->h, rc->w, c1, c1b, cout, 3, 1, 1, 1, 1, 1, h2, NULL, NULL);
    if (temb) {
        double *td = to_double(temb, n * rc->temb);
        linear_ref(td, n, rc->temb, tpw, tpb, tw, tp);
        free(td);
    }
    if (temb && !rc->scale_shift)
        for (int64_t i = 0; i < n * cout * hw; i++)
            h2[i] += tp[(i / (cout * hw)) * tw + (i / hw) % cout];
    gn_ref(h2, n, cout, rc->groups, hw, g2, b2, 1e-5, false, h3);
    for (int64_t i = 0; i < n * cout * hw; i++) {
        int64_t item = i / (cout * hw), ch = (i / hw) % cout;
        if (rc->scale_shift)
            h3[i] = h3[i] * (1 + tp[item * tw + ch]) + tp[item * tw + cout + ch];
        h3[i] = silu_d(h3[i]);
    }
    conv_ref(h3, n, cout, rc->h, rc->w, c2, c2b, cout, 3, 1, 1, 1, 1, 1, ref, NULL, NULL);
    if (sw)
        conv_ref(xd, n, cin, rc->h, rc->w, sw, sb, cout, 1, 1, 0, 0, 0, 0, h2, NULL, NULL);
    for (int64_t i = 0; i < n * cout * hw; i++)
        ref[i] = ((sw ? h2[i] : xd[i]) + ref[i]) / rc->osf;
    check_close(rc->what, y, ref, n * cout * hw, 1e-5);

    /* a second pass on the warm arena: same result, no growth */
    size_t peak = dfx_arena_peak(a);
    ck_assert_uint_eq(dfx_arena_mark(a), 0);
    float *base = dfx_arena_alloc(a, 1);
    dfx_arena_release(a, 0);
    ck_assert_msg(dfx_resblock_forward(&rb, x, temb, n, rc->h, rc->w, y, a) == DFX_OK, "%s",
                  dfx_error_message());
    ck_assert_uint_eq(dfx_arena_peak(a), peak);
    ck_assert_ptr_eq(dfx_arena_alloc(a, peak / sizeof(float)), base);
    dfx_arena_release(a, 0);
    char again[128];
    snprintf(again, sizeof again, "%s, again", rc->what);
    check_close(again, y, ref, n * cout * hw, 1e-5);

    dfx_arena_destroy(a);
    dfx_resblock_free(&rb);
    close_all(w, &s, dir);
    free(x);
    free(temb);
    free(y);
    free(xd);
    free(h1);
    free(h2);
    free(h3);
    free(ref);
    free(tp);
}

START_TEST(resblock)
{
    rng_seed(9);
    static const rb_case cases[] = {
        {2, 8, 12, 10, 4, 5, 7, false, 1.0, "resblock 8->12, temb added, 5x7"},
        {3, 8, 8, 6, 2, 6, 5, true, 2.0, "resblock 8->8 scale_shift, osf 2"},
        {1, 6, 4, 0, 2, 9, 4, false, 1.0, "resblock 6->4 without time embedding"},
        {2, 16, 16, 12, 4, 33, 35, false, 1.0, "resblock 16->16 on 33x35"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        run_resblock(&cases[i]);
}
END_TEST

START_TEST(resblock_errors)
{
    rng_seed(10);
    wset s = {0};
    const int64_t w1s[4] = {4, 4, 3, 3};
    wset_rand1(&s, "rb.norm1.weight", 4, 1, 0);
    wset_rand1(&s, "rb.norm1.bias", 4, 1, 0);
    wset_rand(&s, "rb.conv1.weight", 4, w1s, 1, 0);
    char *dir, path[4200];
    dfx_weights *w = wset_open(&s, &dir, path, sizeof path);
    dfx_resblock rb;
    dfx_resblock_params p = {4, 4, 0, 2, 1e-5, false, 1.0};
    ck_assert_int_eq(dfx_resblock_load(&rb, w, "rb", &p), DFX_ERR_NOT_FOUND);
    char want[4400];
    snprintf(want, sizeof want, "%s: tensor 'rb.conv1.bias' is missing", path);
    ck_assert_str_eq(dfx_error_message(), want);
    ck_assert_ptr_null(rb.norm1.gamma);
    p.scale_shift = true;
    ck_assert_int_eq(dfx_resblock_load(&rb, w, "rb", &p), DFX_ERR_INVALID_ARG);
    dfx_weights_close(w);
    wset_free(&s);
    test_rmtree(dir);
    free(dir);
}
END_TEST

typedef struct sa_case {
    int64_t n, c, heads, groups, h, w;
    double rescale;
    bool legacy, conv_shaped;
    const char *what;
} sa_case;

static void run_spatial_attention(const sa_case *sc)
{
    wset s = {0};
    const int64_t c = sc->c, hw = sc->h * sc->w, n = sc->n, dh = c / sc->heads;
    const int64_t lin[2] = {c, c}, conv[4] = {c, c, 1, 1};
    static const char *const now[4][2] = {{"at.to_q.weight", "at.to_q.bias"},
                                          {"at.to_k.weight", "at.to_k.bias"},
                                          {"at.to_v.weight", "at.to_v.bias"},
                                          {"at.to_out.0.weight", "at.to_out.0.bias"}};
    static const char *const old[4][2] = {{"at.query.weight", "at.query.bias"},
                                          {"at.key.weight", "at.key.bias"},
                                          {"at.value.weight", "at.value.bias"},
                                          {"at.proj_attn.weight", "at.proj_attn.bias"}};
    float *g = NULL, *gb = NULL, *pw[4], *pb[4];
    if (sc->groups) {
        g = wset_rand1(&s, "at.group_norm.weight", c, 0.3, 1);
        gb = wset_rand1(&s, "at.group_norm.bias", c, 0.3, 0);
    }
    for (int i = 0; i < 4; i++) {
        pw[i] = wset_rand(&s, (sc->legacy ? old : now)[i][0], sc->conv_shaped ? 4 : 2,
                          sc->conv_shaped ? conv : lin, 1.0 / sqrt((double)c), 0);
        pb[i] = wset_rand1(&s, (sc->legacy ? old : now)[i][1], c, 0.3, 0);
    }
    char *dir, path[4200];
    dfx_weights *w = wset_open(&s, &dir, path, sizeof path);
    dfx_spatial_attention sa;
    ck_assert_msg(dfx_spatial_attention_load(&sa, w, "at", c, sc->heads, sc->groups, 1e-5, sc->rescale) ==
                      DFX_OK,
                  "%s", dfx_error_message());
    float *x = rand_floats(n * c * hw, 1.5, 0.1);
    double *xd = to_double(x, n * c * hw);
    dfx_arena *a;
    ck_assert(dfx_arena_create(&a) == DFX_OK);
    ck_assert_msg(dfx_spatial_attention_forward(&sa, x, n, sc->h, sc->w, a) == DFX_OK, "%s",
                  dfx_error_message());
    ck_assert_uint_eq(dfx_arena_mark(a), 0);

    /* reference: AttnProcessor on [n, c, h, w] */
    double *hn = dalloc(n * c * hw), *tok = dalloc(hw * c), *q = dalloc(hw * c), *k = dalloc(hw * c);
    double *v = dalloc(hw * c), *o = dalloc(hw * c), *r = dalloc(hw * c), *ref = dalloc(n * c * hw);
    if (g)
        gn_ref(xd, n, c, sc->groups, hw, g, gb, 1e-5, false, hn);
    else
        memcpy(hn, xd, n * c * hw * sizeof *hn);
    for (int64_t i = 0; i < n; i++) {
        for (int64_t t = 0; t < hw; t++)
            for (int64_t ch = 0; ch < c; ch++)
                tok[t * c + ch] = hn[(i * c + ch) * hw + t];
        linear_ref(tok, hw, c, pw[0], pb[0], c, q);
        linear_ref(tok, hw, c, pw[1], pb[1], c, k);
        linear_ref(tok, hw, c, pw[2], pb[2], c, v);
        attention_ref(q, c, k, c, v, c, 1, sc->heads, hw, hw, dh, (double)(float)pow((double)dh, -0.5), false, o,
                      c);
        linear_ref(o, hw, c, pw[3], pb[3], c, r);
        for (int64_t t = 0; t < hw; t++)
            for (int64_t ch = 0; ch < c; ch++)
                ref[(i * c + ch) * hw + t] = (r[t * c + ch] + xd[(i * c + ch) * hw + t]) / sc->rescale;
    }
    check_close(sc->what, x, ref, n * c * hw, 1e-5);
    dfx_arena_destroy(a);
    dfx_spatial_attention_free(&sa);
    close_all(w, &s, dir);
    free(x);
    free(xd);
    free(hn);
    free(tok);
    free(q);
    free(k);
    free(v);
    free(o);
    free(r);
    free(ref);
}

START_TEST(spatial_attention)
{
    rng_seed(11);
    static const sa_case cases[] = {
        {2, 16, 2, 4, 6, 5, 1.0, false, false, "spatial attention 16 ch, 2 heads, 6x5"},
        {1, 12, 3, 3, 4, 7, 2.0, true, true, "legacy names, [C,C,1,1] weights, rescale 2"},
        {2, 8, 1, 0, 3, 3, 1.0, false, false, "spatial attention without group norm"},
        /* 34 x 34 = 1156 tokens: 2 query blocks of 578 rows */
        {1, 8, 2, 2, 34, 34, 1.0, false, false, "spatial attention 1156 tokens"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        run_spatial_attention(&cases[i]);
}
END_TEST

static Suite *nn_suite(void)
{
    Suite *s = suite_create("nn");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, weights_load);
    tcase_add_test(tc, weights_unused_and_sharded);
    tcase_add_test(tc, arena_stack);
    tcase_add_test(tc, activations);
    tcase_add_test(tc, upsample_avgpool);
    tcase_add_test(tc, linear_layer);
    tcase_add_test(tc, norms);
    tcase_add_test(tc, timestep_embedding);
    tcase_add_test(tc, conv2d);
    tcase_add_test(tc, conv2d_winograd);
    tcase_add_test(tc, conv2d_errors);
    tcase_add_test(tc, attention);
    tcase_add_test(tc, resblock);
    tcase_add_test(tc, resblock_errors);
    tcase_add_test(tc, spatial_attention);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(nn_suite());
}
