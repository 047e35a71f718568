/* The sinusoidal timestep embedding against diffusers + torch 1.13 itself:
 * the time_proj outputs recorded in the fixtures for the models whose
 * configurations set every variant (flip_sin_to_cos, freq_shift). torch
 * takes exp, sin and cos from SLEEF and dfx from libm, so single elements may
 * differ by an ulp (6e-8 near 1); anything in the formula itself (order of
 * the float roundings, the layout, the shift) shows as 1e-4 or more at
 * t = 999. */
#include "dfx/nn.h"
#include "testutil.h"

static const struct {
    const char *file, *tensor;
    int64_t dim;
    bool flip;
    double shift;
    double t[4];
    int64_t n;
} cases[] = {
    /* ddpm_unet_a: flip_sin_to_cos false, freq_shift 1 */
    {"ddpm/ddpm_unet_a/expected_forward.safetensors", "time_proj_t0_10_500_999", 32, false, 1,
     {0, 10, 500, 999}, 4},
    /* ddpm_unet_b: flip_sin_to_cos true, freq_shift 0 */
    {"ddpm/ddpm_unet_b/expected_forward.safetensors", "time_proj_t0_10_500_999", 16, true, 0,
     {0, 10, 500, 999}, 4},
    /* the Stable Diffusion settings */
    {"sd_tiny_expected/unet.safetensors", "time_proj_t1_500_999", 32, true, 0, {1, 500, 999}, 3},
    {"sd2_tiny_expected/unet.safetensors", "time_proj_t1_500_999", 32, true, 0, {1, 500, 999}, 3},
};

START_TEST(time_proj)
{
    int checked = 0;
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const char *path = test_fixture(cases[c].file);
        if (access(path, R_OK) != 0) {
            printf("note: %s is not in this fixtures copy\n", cases[c].file);
            continue;
        }
        dfx_safetensors *st;
        ck_assert_msg(dfx_safetensors_open(path, &st) == DFX_OK, "%s", dfx_error_message());
        dfx_tensor *ref;
        ck_assert_msg(dfx_safetensors_read(st, cases[c].tensor, DFX_DTYPE_F32, &ref) == DFX_OK, "%s",
                      dfx_error_message());
        ck_assert_int_eq(ref->ndim, 2);
        ck_assert_int_eq(ref->shape[0], cases[c].n);
        ck_assert_int_eq(ref->shape[1], cases[c].dim);
        float out[4 * 32];
        dfx_nn_timestep_embedding(cases[c].t, cases[c].n, cases[c].dim, cases[c].flip, cases[c].shift, 1.0,
                                  10000, out);
        const float *r = ref->data;
        int64_t n = cases[c].n * cases[c].dim, differ = 0;
        for (int64_t i = 0; i < n; i++)
            differ += out[i] != r[i];
        double err = test_max_abs_diff(out, r, n);
        printf("%s %s: max |dfx - torch| = %.3g, %lld of %lld elements differ\n", cases[c].file,
               cases[c].tensor, err, (long long)differ, (long long)n);
        /* two ulps of values near 1 */
        ck_assert_msg(err <= 1.2e-7, "%s: max error %.3g", cases[c].file, err);
        dfx_tensor_destroy(ref);
        dfx_safetensors_close(st);
        checked++;
    }
    ck_assert_msg(checked > 0, "none of the time_proj fixtures is present");
}
END_TEST

int main(void)
{
    test_require_fixtures("test_nn_parity");
    Suite *s = suite_create("nn_parity");
    TCase *tc = tcase_create("timestep_embedding");
    tcase_add_test(tc, time_proj);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
