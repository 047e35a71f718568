/* dfx_rng without fixtures: the mt19937 reference values, the u32 budget of
 * each randn path, the scalar path's cached value, clone and reseed, and the
 * sign of zero, against values taken from torch 1.13. The bit-exact
 * comparison with torch.randn outputs is in test_rng_parity.c. */
#include <stdint.h>
#include <time.h>

#include "testutil.h"

static dfx_rng *rng_new(uint64_t seed)
{
    dfx_rng *g = NULL;
    ck_assert_int_eq(dfx_rng_create(&g, seed), DFX_OK);
    ck_assert_ptr_nonnull(g);
    return g;
}

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static void assert_same_bits(const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(float_bits(a[i]) == float_bits(b[i]),
                      "element %lld: %.9g (0x%08x) != %.9g (0x%08x)", (long long)i,
                      (double)a[i], float_bits(a[i]), (double)b[i], float_bits(b[i]));
}

/* The MT19937 reference (mt19937ar.c, and C++11 [rand.predef]: the 10000th
 * output of a default-constructed std::mt19937 is 4123659995). */
START_TEST(test_mt19937_reference)
{
    dfx_rng *g = rng_new(5489);
    ck_assert_uint_eq(dfx_rng_u32(g), 3499211612u);
    for (int i = 2; i < 10000; i++)
        dfx_rng_u32(g);
    ck_assert_uint_eq(dfx_rng_u32(g), 4123659995u);
    dfx_rng_destroy(g);
}
END_TEST

/* torch.manual_seed keeps the low 32 bits of the seed. */
START_TEST(test_seed_low_32_bits)
{
    dfx_rng *a = rng_new(5489);
    dfx_rng *b = rng_new((UINT64_C(7) << 32) | 5489u);
    for (int i = 0; i < 1000; i++)
        ck_assert_uint_eq(dfx_rng_u32(a), dfx_rng_u32(b));
    dfx_rng_destroy(a);
    dfx_rng_destroy(b);
}
END_TEST

START_TEST(test_uniform_is_low_24_bits)
{
    dfx_rng *g = rng_new(123);
    dfx_rng *c = NULL;
    ck_assert_int_eq(dfx_rng_clone(g, &c), DFX_OK);
    float u[1000];
    dfx_rng_uniform(g, u, 1000);
    for (int i = 0; i < 1000; i++) {
        float want = (float)(dfx_rng_u32(c) & 0xffffffu) * 0x1p-24f;
        ck_assert_msg(float_bits(u[i]) == float_bits(want), "element %d", i);
        ck_assert(u[i] >= 0.0f && u[i] < 1.0f);
    }
    dfx_rng_destroy(g);
    dfx_rng_destroy(c);
}
END_TEST

/* torch: manual_seed(0); randn(3) = [1.5409961, -0.2934289, -2.1787894] (the
 * scalar path), printed by torch 1.13 with 7 decimals. */
START_TEST(test_torch_first_values)
{
    dfx_rng *g = rng_new(0);
    float x[3];
    dfx_rng_normal(g, x, 3);
    ck_assert_double_eq_tol(x[0], 1.5409961, 1e-7);
    ck_assert_double_eq_tol(x[1], -0.2934289, 1e-7);
    ck_assert_double_eq_tol(x[2], -2.1787894, 1e-7);
    dfx_rng_destroy(g);
}
END_TEST

/* How many u32 a randn(n) takes: n (+ 16 for the tail redraw) on the 16-wide
 * path; 4 per pair on the scalar path, whose second value is cached. */
static int64_t u32_used(int64_t n)
{
    if (n >= 16)
        return n + (n % 16 ? 16 : 0);
    return 4 * ((n + 1) / 2);
}

START_TEST(test_u32_budget)
{
    static const int64_t sizes[] = {1, 2, 3, 15, 16, 17, 31, 32, 33, 100, 1024};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int64_t n = sizes[k];
        dfx_rng *g = rng_new(77);
        dfx_rng *h = rng_new(77);
        float *x = malloc((size_t)n * sizeof *x);
        ck_assert_ptr_nonnull(x);
        dfx_rng_normal(g, x, n);
        for (int64_t i = 0; i < u32_used(n); i++)
            dfx_rng_u32(h);
        ck_assert_msg(dfx_rng_u32(g) == dfx_rng_u32(h), "randn(%lld) used the wrong number of u32",
                      (long long)n);
        free(x);
        dfx_rng_destroy(g);
        dfx_rng_destroy(h);
    }
}
END_TEST

/* The scalar path's second value waits in the generator across calls, and
 * across 16-wide calls in between (which use the u32 stream only). */
START_TEST(test_cached_value_survives_calls)
{
    dfx_rng *ref = rng_new(9);
    float pair[2];
    dfx_rng_normal(ref, pair, 2);

    dfx_rng *g = rng_new(9);
    float a, b, big[40];
    dfx_rng_normal(g, &a, 1);
    dfx_rng_normal(g, big, 40);
    dfx_rng_normal(g, &b, 1);
    assert_same_bits(&a, &pair[0], 1);
    assert_same_bits(&b, &pair[1], 1);

    /* the big draw started right after the 4 u32 of the first pair */
    dfx_rng *h = rng_new(9);
    for (int i = 0; i < 4; i++)
        dfx_rng_u32(h);
    float big_ref[40];
    dfx_rng_normal(h, big_ref, 40);
    assert_same_bits(big, big_ref, 40);

    dfx_rng_destroy(ref);
    dfx_rng_destroy(g);
    dfx_rng_destroy(h);
}
END_TEST

START_TEST(test_reseed_drops_cached_value)
{
    dfx_rng *g = rng_new(5);
    float first, again;
    dfx_rng_normal(g, &first, 1);
    dfx_rng_seed(g, 5);
    dfx_rng_normal(g, &again, 1);
    assert_same_bits(&first, &again, 1);

    /* reseeding to another seed gives that seed's stream, not the cache */
    dfx_rng *h = rng_new(6);
    float want, got;
    dfx_rng_normal(h, &want, 1);
    dfx_rng_normal(g, &first, 1);   /* leaves a value cached */
    dfx_rng_seed(g, 6);
    dfx_rng_normal(g, &got, 1);
    assert_same_bits(&got, &want, 1);
    dfx_rng_destroy(g);
    dfx_rng_destroy(h);
}
END_TEST

START_TEST(test_clone_continues_identically)
{
    dfx_rng *g = rng_new(2024);
    float tmp[20];
    dfx_rng_normal(g, tmp, 1);      /* a cached value goes with the clone */
    dfx_rng_normal(g, tmp, 20);
    dfx_rng *c = NULL;
    ck_assert_int_eq(dfx_rng_clone(g, &c), DFX_OK);
    static const int64_t sizes[] = {1, 3, 16, 17, 5, 1000, 2};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        float x[1000], y[1000];
        dfx_rng_normal(g, x, sizes[k]);
        dfx_rng_normal(c, y, sizes[k]);
        assert_same_bits(x, y, sizes[k]);
    }
    ck_assert_uint_eq(dfx_rng_u32(g), dfx_rng_u32(c));
    /* independent: drawing from one does not move the other */
    dfx_rng_u32(g);
    dfx_rng *d = NULL;
    ck_assert_int_eq(dfx_rng_clone(c, &d), DFX_OK);
    ck_assert_uint_eq(dfx_rng_u32(c), dfx_rng_u32(d));
    dfx_rng_destroy(g);
    dfx_rng_destroy(c);
    dfx_rng_destroy(d);
}
END_TEST

/* The tail block overlaps the last full block: randn(17) agrees with
 * randn(16) in element 0 only; elements 1..16 come from 16 fresh uniforms. */
START_TEST(test_tail_redraw)
{
    dfx_rng *g16 = rng_new(0);
    dfx_rng *g17 = rng_new(0);
    float a[16], b[17];
    dfx_rng_normal(g16, a, 16);
    dfx_rng_normal(g17, b, 17);
    assert_same_bits(a, b, 1);
    int same = 0;
    for (int i = 1; i < 16; i++)
        same += float_bits(a[i]) == float_bits(b[i]);
    ck_assert_int_eq(same, 0);

    /* the tail equals a full block of the uniforms after the first 17 */
    dfx_rng *h = rng_new(0);
    for (int i = 0; i < 17; i++)
        dfx_rng_u32(h);
    float tail[16];
    dfx_rng_normal(h, tail, 16);
    assert_same_bits(b + 1, tail, 16);
    dfx_rng_destroy(g16);
    dfx_rng_destroy(g17);
    dfx_rng_destroy(h);
}
END_TEST

/* torch.manual_seed(341); torch.rand(53483); torch.randn(16) has u1 = 1 in
 * lane 0 (the next uniform is exactly 0), so radius = sqrt(-2 * log 1) = -0,
 * and theta = 2 pi * 0.249 has cos and sin > 0: radius * cos and radius * sin
 * are -0, and torch's final fmadd(n, 1, 0) makes both +0.0. */
START_TEST(test_zero_radius_gives_positive_zero)
{
    dfx_rng *g = rng_new(341);
    for (int i = 0; i < 53483; i++)
        dfx_rng_u32(g);
    dfx_rng *c = NULL;
    ck_assert_int_eq(dfx_rng_clone(g, &c), DFX_OK);
    float u[9];
    dfx_rng_uniform(c, u, 9);
    ck_assert(u[0] == 0.0f && u[8] > 0.0f && u[8] < 0.25f);
    float x[16];
    dfx_rng_normal(g, x, 16);
    ck_assert_uint_eq(float_bits(x[0]), 0);
    ck_assert_uint_eq(float_bits(x[8]), 0);
    dfx_rng_destroy(g);
    dfx_rng_destroy(c);
}
END_TEST

/* Box-Muller from 24-bit uniforms: |x| <= sqrt(-2 log 2^-24) < 5.8, and the
 * moments of 2^20 draws are those of N(0, 1). Prints the speed. */
START_TEST(test_moments_and_speed)
{
    const int64_t n = INT64_C(1) << 20;
    float *x = malloc((size_t)n * sizeof *x);
    ck_assert_ptr_nonnull(x);
    dfx_rng *g = rng_new(31337);
    dfx_rng_normal(g, x, n);        /* fault the pages in before timing */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    dfx_rng_normal(g, x, n);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("dfx_rng_normal: %.2f ms per million normals (%.1f M/s)\n",
           sec * 1e3 * 1e6 / (double)n, (double)n / sec / 1e6);
    double s1 = 0, s2 = 0;
    int64_t out_of_range = 0;      /* one assert: each ck_assert costs a pipe write */
    for (int64_t i = 0; i < n; i++) {
        out_of_range += !(fabsf(x[i]) < 5.8f);
        s1 += x[i];
        s2 += (double)x[i] * x[i];
    }
    ck_assert_int_eq(out_of_range, 0);
    double mean = s1 / (double)n, var = s2 / (double)n - mean * mean;
    ck_assert_double_le(fabs(mean), 5.0 / sqrt((double)n));
    ck_assert_double_le(fabs(var - 1.0), 5.0 * sqrt(2.0 / (double)n));
    free(x);
    dfx_rng_destroy(g);
}
END_TEST

START_TEST(test_empty_and_errors)
{
    dfx_rng *g = rng_new(0);
    float x = 42.0f;
    dfx_rng_normal(g, &x, 0);
    dfx_rng_uniform(g, &x, 0);
    ck_assert(x == 42.0f);
    ck_assert_uint_eq(dfx_rng_u32(g), 2357136044u);   /* untouched stream */
    ck_assert_int_eq(dfx_rng_create(NULL, 0), DFX_ERR_INVALID_ARG);
    ck_assert_int_eq(dfx_rng_clone(g, NULL), DFX_ERR_INVALID_ARG);
    dfx_rng *c = g;
    ck_assert_int_eq(dfx_rng_clone(NULL, &c), DFX_ERR_INVALID_ARG);
    ck_assert_ptr_null(c);
    dfx_rng_destroy(g);
    dfx_rng_destroy(NULL);
}
END_TEST

static Suite *rng_suite(void)
{
    Suite *s = suite_create("rng");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_mt19937_reference);
    tcase_add_test(tc, test_seed_low_32_bits);
    tcase_add_test(tc, test_uniform_is_low_24_bits);
    tcase_add_test(tc, test_torch_first_values);
    tcase_add_test(tc, test_u32_budget);
    tcase_add_test(tc, test_cached_value_survives_calls);
    tcase_add_test(tc, test_reseed_drops_cached_value);
    tcase_add_test(tc, test_clone_continues_identically);
    tcase_add_test(tc, test_tail_redraw);
    tcase_add_test(tc, test_zero_radius_gives_positive_zero);
    tcase_add_test(tc, test_moments_and_speed);
    tcase_add_test(tc, test_empty_and_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(rng_suite());
}
