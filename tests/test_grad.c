/* The tape: every operation's backward against central finite differences
 * in float64 on small random inputs, the layers' tape forward against their
 * inference forward, and failures carried by the tape. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dfx/grad.h"
#include "dfx/nn.h"
#include "dfx/rng.h"

#define MAX_IN 4

/* One operation under test: builds its output from the inputs. */
typedef dfx_var *(*build_fn)(dfx_tape *t, dfx_var **in, const void *ctx);

typedef struct input {
    int ndim;
    int64_t shape[4];
    bool positive;   /* values in [0.5, 1.5] (log) */
} input;

static double uniform(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*s >> 11) / 9007199254740992.0;
}

static int64_t numel_of(const input *in)
{
    int64_t n = 1;
    for (int i = 0; i < in->ndim; i++)
        n *= in->shape[i];
    return n;
}

/* loss = sum(out * r): its gradient with respect to out is r */
static double evaluate(dfx_tape *t, build_fn build, const void *ctx, int n_in, const input *ins,
                       double *const *vals, bool grad, double **grads)
{
    dfx_tape_reset(t);
    dfx_var *in[MAX_IN];
    for (int i = 0; i < n_in; i++) {
        in[i] = dfx_tape_new(t, ins[i].ndim, ins[i].shape, true);
        ck_assert_ptr_nonnull(in[i]);
        memcpy(in[i]->data, vals[i], (size_t)in[i]->numel * sizeof(double));
    }
    dfx_var *out = build(t, in, ctx);
    ck_assert_msg(out != NULL, "build failed: %s",
                  dfx_tape_status(t) ? dfx_error_message() : "no message");
    dfx_var *r = dfx_tape_new(t, out->ndim, out->shape, false);
    uint64_t s = 99;
    for (int64_t i = 0; i < r->numel; i++)
        ((double *)r->data)[i] = uniform(&s) * 2 - 1;
    dfx_var *loss = dfx_g_sum(t, dfx_g_mul(t, out, r));
    ck_assert_int_eq(dfx_tape_status(t), DFX_OK);
    const double v = dfx_var_get(loss, 0);
    if (grad) {
        ck_assert_int_eq(dfx_tape_backward(t, loss), DFX_OK);
        for (int i = 0; i < n_in; i++)
            for (int64_t j = 0; j < in[i]->numel; j++)
                grads[i][j] = dfx_var_grad(in[i], j);
    }
    return v;
}

static void gradcheck(const char *what, build_fn build, const void *ctx, int n_in,
                      const input *ins)
{
    dfx_tape *t;
    ck_assert_int_eq(dfx_tape_create(&t, DFX_DTYPE_F64), DFX_OK);
    double *vals[MAX_IN], *grads[MAX_IN];
    uint64_t s = 12345;
    for (int i = 0; i < n_in; i++) {
        const int64_t n = numel_of(&ins[i]);
        vals[i] = malloc((size_t)n * sizeof(double));
        grads[i] = malloc((size_t)n * sizeof(double));
        for (int64_t j = 0; j < n; j++)
            vals[i][j] = ins[i].positive ? 0.5 + uniform(&s) : uniform(&s) * 2 - 1;
    }
    evaluate(t, build, ctx, n_in, ins, vals, true, grads);
    const double h = 1e-6;
    double worst = 0;
    int checked = 0;
    for (int i = 0; i < n_in; i++) {
        const int64_t n = numel_of(&ins[i]);
        /* every element of small inputs, a spread of 40 of larger ones */
        const int64_t stride = n > 40 ? n / 40 : 1;
        for (int64_t j = 0; j < n; j += stride) {
            const double keep = vals[i][j];
            vals[i][j] = keep + h;
            const double up = evaluate(t, build, ctx, n_in, ins, vals, false, NULL);
            vals[i][j] = keep - h;
            const double down = evaluate(t, build, ctx, n_in, ins, vals, false, NULL);
            vals[i][j] = keep;
            const double fd = (up - down) / (2 * h);
            const double err = fabs(fd - grads[i][j]) / fmax(1.0, fabs(fd));
            worst = fmax(worst, err);
            checked++;
            ck_assert_msg(err < 1e-6, "%s: input %d element %lld: backward %.10g, finite "
                          "differences %.10g", what, i, (long long)j, grads[i][j], fd);
        }
    }
    ck_assert_int_gt(checked, 0);
    for (int i = 0; i < n_in; i++) {
        free(vals[i]);
        free(grads[i]);
    }
    dfx_tape_destroy(t);
}

/* ---- the operations ---------------------------------------------------- */

static dfx_var *b_add(dfx_tape *t, dfx_var **in, const void *c)
{
    (void)c;
    return dfx_g_add(t, dfx_g_sub(t, in[0], in[1]), dfx_g_mul(t, in[0], in[1]));
}

static dfx_var *b_scale(dfx_tape *t, dfx_var **in, const void *c)
{
    (void)c;
    return dfx_g_scale(t, dfx_g_mul(t, in[0], in[0]), -1.75);
}

static dfx_var *b_unary(dfx_tape *t, dfx_var **in, const void *c)
{
    return dfx_g_unary_op(t, *(const dfx_g_unary *)c, in[0]);
}

static dfx_var *b_add_channel(dfx_tape *t, dfx_var **in, const void *c)
{
    (void)c;
    return dfx_g_add_channel(t, dfx_g_add_channel(t, in[0], in[1]), in[2]);
}

static dfx_var *b_views(dfx_tape *t, dfx_var **in, const void *c)
{
    (void)c;
    /* [2, 3, 4] and [2, 2, 4]: concat [2, 5, 4], slice [2, 3, 4] from 1,
     * transpose [2, 4, 3], reshape [8, 3] */
    dfx_var *y = dfx_g_slice1(t, dfx_g_concat1(t, in[0], in[1]), 1, 3);
    const int64_t shape[2] = {8, 3};
    return dfx_g_reshape(t, dfx_g_transpose12(t, y), 2, shape);
}

static dfx_var *b_linear(dfx_tape *t, dfx_var **in, const void *c)
{
    return dfx_g_linear(t, in[0], in[1], c ? in[2] : NULL);
}

typedef struct conv_case {
    int64_t stride, pad[4];
    bool bias;
} conv_case;

static dfx_var *b_conv(dfx_tape *t, dfx_var **in, const void *c)
{
    const conv_case *cc = c;
    return dfx_g_conv2d(t, in[0], in[1], cc->bias ? in[2] : NULL, cc->stride, cc->pad);
}

static dfx_var *b_group_norm(dfx_tape *t, dfx_var **in, const void *c)
{
    return c ? dfx_g_group_norm(t, in[0], in[1], in[2], 2, 1e-5)
             : dfx_g_group_norm(t, in[0], NULL, NULL, 3, 1e-6);
}

static dfx_var *b_layer_norm(dfx_tape *t, dfx_var **in, const void *c)
{
    (void)c;
    return dfx_g_layer_norm(t, in[0], in[1], in[2], 1e-5);
}

static dfx_var *b_attention(dfx_tape *t, dfx_var **in, const void *c)
{
    return dfx_g_attention(t, in[0], in[1], in[2], 2, 0.61, c != NULL);
}

static dfx_var *b_upsample(dfx_tape *t, dfx_var **in, const void *c)
{
    (void)c;
    return dfx_g_upsample2x(t, in[0]);
}

static dfx_var *b_mean_hw(dfx_tape *t, dfx_var **in, const void *c)
{
    (void)c;
    /* squared first, so that the gradient differs element by element */
    return dfx_g_mean_hw(t, dfx_g_mul(t, in[0], in[0]));
}

static dfx_var *b_embedding(dfx_tape *t, dfx_var **in, const void *c)
{
    (void)c;
    static const int64_t ids[5] = {3, 0, 3, 1, 4};
    return dfx_g_embedding(t, in[0], ids, 5);
}

static dfx_var *b_losses(dfx_tape *t, dfx_var **in, const void *c)
{
    (void)c;
    static const int64_t labels[3] = {2, 0, 3};
    dfx_var *ce = dfx_g_cross_entropy(t, in[0], labels);
    dfx_var *mse = dfx_g_mse(t, in[0], in[1]);
    dfx_var *m = dfx_g_mean(t, dfx_g_mul(t, in[1], in[1]));
    const int64_t one = 1;
    return dfx_g_add(t, dfx_g_add(t, dfx_g_reshape(t, ce, 1, &one), dfx_g_reshape(t, mse, 1, &one)),
                     dfx_g_reshape(t, m, 1, &one));
}

/* IDDPM's L_vlb at training steps 0, 1, 40 and 99 of a 100-step linear
 * schedule; x0 has pixels at -1 and 1 (the likelihood's edge bins) */
typedef struct vlb_case {
    float x0[4 * 6], xt[4 * 6], eps[4 * 6];
    dfx_vlb_item items[4];
} vlb_case;

static void vlb_item(int step, dfx_vlb_item *it)
{
    double beta[100], ab[100], post[100];
    for (int i = 0; i < 100; i++) {
        beta[i] = 1e-3 + (0.2 - 1e-3) * i / 99.0;
        ab[i] = (i ? ab[i - 1] : 1.0) * (1 - beta[i]);
        post[i] = beta[i] * (1 - (i ? ab[i - 1] : 1.0)) / (1 - ab[i]);
    }
    const double ap = step ? ab[step - 1] : 1.0, a = ab[step], b = beta[step];
    const double c1 = b * sqrt(ap) / (1 - a), c2 = (1 - ap) * sqrt(1 - b) / (1 - a);
    /* the clipped posterior variance: step 1's at step 0 */
    *it = (dfx_vlb_item){c1, c2, c1 / sqrt(a) + c2, -c1 * sqrt(1 - a) / sqrt(a),
                         log(step ? post[step] : post[1]), log(b), step == 0};
}

static void vlb_setup(vlb_case *vc)
{
    const int steps[4] = {0, 1, 40, 99};
    uint64_t s = 7;
    for (int i = 0; i < 4; i++) {
        vlb_item(steps[i], &vc->items[i]);
        for (int j = 0; j < 6; j++) {
            const int k = i * 6 + j;
            vc->x0[k] = j == 0 ? -1.0f : j == 1 ? 1.0f : (float)(uniform(&s) * 2 - 1);
            vc->eps[k] = (float)(uniform(&s) * 2 - 1);
            vc->xt[k] = (float)(0.9 * vc->x0[k] + 0.3 * vc->eps[k]);
        }
    }
}

static dfx_var *b_vlb(dfx_tape *t, dfx_var **in, const void *c)
{
    const vlb_case *vc = c;
    /* v in (-1, 1) */
    return dfx_g_iddpm_vlb(t, dfx_g_unary_op(t, DFX_G_TANH, in[0]), vc->x0, vc->xt, vc->eps,
                           vc->items);
}

START_TEST(test_iddpm_vlb)
{
    vlb_case vc;
    vlb_setup(&vc);
    const input v = {2, {4, 6}, false};
    gradcheck("iddpm_vlb", b_vlb, &vc, 1, &v);
    /* the model's mean and variance equal to the posterior's: the KL terms
     * vanish, leaving item 0's likelihood term */
    dfx_tape *t;
    ck_assert_int_eq(dfx_tape_create(&t, DFX_DTYPE_F64), DFX_OK);
    const int64_t shape[2] = {4, 6};
    dfx_var *vm = dfx_tape_new(t, 2, shape, true);
    for (int k = 0; k < 24; k++) {
        const dfx_vlb_item *it = &vc.items[k / 6];
        /* eps such that the model's mean is the true one, v = -1: min_log */
        const double tm = it->true_x0 * vc.x0[k] + it->true_xt * vc.xt[k];
        vc.eps[k] = (float)((tm - it->model_xt * vc.xt[k]) / it->model_eps);
        ((double *)vm->data)[k] = -1;
    }
    dfx_var *kl = dfx_g_iddpm_vlb(t, vm, vc.x0, vc.xt, vc.eps, vc.items);
    ck_assert_ptr_nonnull(kl);
    double nll = 0;
    for (int j = 0; j < 6; j++) {
        /* t = 0: -log of the probability of x0's bin under N(mean, e^min_log) */
        const dfx_vlb_item *it = &vc.items[0];
        const double mean = it->true_x0 * vc.x0[j] + it->true_xt * vc.xt[j];
        const double sd = exp(0.5 * it->min_log);
        const double hi = vc.x0[j] > 0.999 ? INFINITY : (vc.x0[j] - mean + 1.0 / 255) / sd;
        const double lo = vc.x0[j] < -0.999 ? -INFINITY : (vc.x0[j] - mean - 1.0 / 255) / sd;
        const double p = 0.5 * (erf(hi / sqrt(2)) - erf(lo / sqrt(2)));
        nll += -log(fmax(p, 1e-12));
    }
    /* guided-diffusion's tanh approximation of the normal CDF is within
     * 1e-3 of erf's */
    ck_assert_double_eq_tol(dfx_var_get(kl, 0), nll / (24 * log(2.0)), 2e-3);
    dfx_tape_destroy(t);
}
END_TEST

START_TEST(test_elementwise)
{
    const input two[2] = {{2, {3, 4}, false}, {2, {3, 4}, false}};
    gradcheck("add/sub/mul", b_add, NULL, 2, two);
    gradcheck("scale", b_scale, NULL, 1, two);
    const dfx_g_unary ops[] = {DFX_G_SILU, DFX_G_GELU, DFX_G_RELU, DFX_G_TANH,
                               DFX_G_SIGMOID, DFX_G_EXP, DFX_G_LOG, DFX_G_SQUARE};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
        const input one = {2, {3, 5}, ops[i] == DFX_G_LOG};
        gradcheck("unary", b_unary, &ops[i], 1, &one);
    }
    const input ch[3] = {{4, {2, 3, 2, 2}, false}, {2, {2, 3}, false}, {1, {3}, false}};
    gradcheck("add_channel", b_add_channel, NULL, 3, ch);
}
END_TEST

START_TEST(test_views)
{
    const input in[2] = {{3, {2, 3, 4}, false}, {3, {2, 2, 4}, false}};
    gradcheck("concat/slice/transpose/reshape", b_views, NULL, 2, in);
    const input up = {4, {2, 2, 3, 2}, false};
    gradcheck("upsample2x", b_upsample, NULL, 1, &up);
    const input pool = {4, {2, 3, 3, 2}, false};
    gradcheck("mean_hw", b_mean_hw, NULL, 1, &pool);
    const input table = {2, {5, 3}, false};
    gradcheck("embedding", b_embedding, NULL, 1, &table);
}
END_TEST

START_TEST(test_linear)
{
    const input in[3] = {{3, {2, 3, 4}, false}, {2, {5, 4}, false}, {1, {5}, false}};
    gradcheck("linear", b_linear, in, 3, in);
    gradcheck("linear without bias", b_linear, NULL, 2, in);
}
END_TEST

START_TEST(test_conv2d)
{
    const conv_case cases[] = {
        {1, {1, 1, 1, 1}, true},    /* 3x3 same */
        {2, {0, 0, 1, 1}, true},    /* stride 2, padding on one side */
        {2, {1, 1, 1, 1}, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const input in[3] = {{4, {2, 3, 5, 6}, false}, {4, {4, 3, 3, 3}, false},
                             {1, {4}, false}};
        gradcheck("conv2d 3x3", b_conv, &cases[i], cases[i].bias ? 3 : 2, in);
    }
    const conv_case pw = {1, {0, 0, 0, 0}, true};
    const input in[3] = {{4, {2, 3, 4, 3}, false}, {4, {5, 3, 1, 1}, false}, {1, {5}, false}};
    gradcheck("conv2d 1x1", b_conv, &pw, 3, in);
}
END_TEST

START_TEST(test_norms)
{
    const input gn[3] = {{4, {2, 6, 2, 3}, false}, {1, {6}, false}, {1, {6}, false}};
    gradcheck("group_norm", b_group_norm, gn, 3, gn);
    gradcheck("group_norm without affine", b_group_norm, NULL, 1, gn);
    const input ln[3] = {{3, {2, 3, 5}, false}, {1, {5}, false}, {1, {5}, false}};
    gradcheck("layer_norm", b_layer_norm, NULL, 3, ln);
}
END_TEST

START_TEST(test_attention)
{
    const input in[3] = {{3, {2, 3, 4}, false}, {3, {2, 5, 4}, false}, {3, {2, 5, 4}, false}};
    gradcheck("attention", b_attention, NULL, 3, in);
    const input self[3] = {{3, {2, 4, 6}, false}, {3, {2, 4, 6}, false}, {3, {2, 4, 6}, false}};
    gradcheck("causal attention", b_attention, self, 3, self);
}
END_TEST

START_TEST(test_losses)
{
    const input in[2] = {{2, {3, 4}, false}, {2, {3, 4}, false}};
    gradcheck("cross_entropy + mse + mean", b_losses, NULL, 2, in);
}
END_TEST

/* ---- values ------------------------------------------------------------ */

START_TEST(test_values)
{
    dfx_tape *t;
    ck_assert_int_eq(dfx_tape_create(&t, DFX_DTYPE_F64), DFX_OK);
    const int64_t shape[2] = {2, 3};
    dfx_var *x = dfx_tape_new(t, 2, shape, true);
    const double v[6] = {1, 2, 3, -1, 0, 4};
    memcpy(x->data, v, sizeof v);
    /* softmax cross entropy of row [1 2 3] label 2 and row [-1 0 4] label 0 */
    const int64_t labels[2] = {2, 0};
    dfx_var *ce = dfx_g_cross_entropy(t, x, labels);
    const double l0 = log(exp(1) + exp(2) + exp(3)) - 3;
    const double l1 = log(exp(-1) + exp(0) + exp(4)) + 1;
    ck_assert_double_eq_tol(dfx_var_get(ce, 0), (l0 + l1) / 2, 1e-12);
    ck_assert_int_eq(dfx_tape_backward(t, ce), DFX_OK);
    /* d/dx of row 0 at the label: (softmax - 1) / 2 */
    const double p02 = exp(3) / (exp(1) + exp(2) + exp(3));
    ck_assert_double_eq_tol(dfx_var_grad(x, 2), (p02 - 1) / 2, 1e-12);
    /* a conv of a delta reproduces the flipped-free kernel (cross-correlation) */
    dfx_tape_reset(t);
    const int64_t xs[4] = {1, 1, 3, 3}, ws[4] = {1, 1, 3, 3};
    dfx_var *img = dfx_tape_zeros(t, 4, xs, false);
    dfx_var *k = dfx_tape_new(t, 4, ws, false);
    ((double *)img->data)[4] = 1;
    for (int i = 0; i < 9; i++)
        ((double *)k->data)[i] = i + 1;
    const int64_t pad[4] = {1, 1, 1, 1};
    dfx_var *y = dfx_g_conv2d(t, img, k, NULL, 1, pad);
    for (int i = 0; i < 9; i++)
        ck_assert_double_eq(dfx_var_get(y, i), 9 - i);
    /* mean_hw: [1, 2, 1, 3] -> the mean of each channel's three values */
    dfx_tape_reset(t);
    const int64_t ps[4] = {1, 2, 1, 3};
    dfx_var *pool = dfx_tape_new(t, 4, ps, false);
    const double pv[6] = {1, 2, 6, -3, 0, 0.5};
    memcpy(pool->data, pv, sizeof pv);
    dfx_var *m = dfx_g_mean_hw(t, pool);
    ck_assert_int_eq(m->ndim, 2);
    ck_assert_int_eq(m->shape[1], 2);
    ck_assert_double_eq_tol(dfx_var_get(m, 0), 3.0, 1e-15);
    ck_assert_double_eq_tol(dfx_var_get(m, 1), -2.5 / 3, 1e-15);
    ck_assert_ptr_null(dfx_g_mean_hw(t, dfx_tape_new(t, 2, shape, false)));
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "mean_hw of [2,3]"));
    dfx_tape_destroy(t);
}
END_TEST

START_TEST(test_failures)
{
    dfx_tape *t;
    ck_assert_int_eq(dfx_tape_create(&t, DFX_DTYPE_F32), DFX_OK);
    const int64_t a[2] = {2, 3}, b[2] = {3, 2};
    dfx_var *x = dfx_tape_zeros(t, 2, a, true);
    dfx_var *y = dfx_tape_zeros(t, 2, b, true);
    ck_assert_ptr_null(dfx_g_add(t, x, y));
    /* later operations do nothing and the first failure is reported */
    ck_assert_ptr_null(dfx_g_unary_op(t, DFX_G_SILU, x));
    ck_assert_int_eq(dfx_tape_status(t), DFX_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "add of [2,3] and [3,2]"));
    dfx_tape_reset(t);
    ck_assert_int_eq(dfx_tape_status(t), DFX_OK);
    x = dfx_tape_zeros(t, 2, a, false);
    dfx_var *s = dfx_g_sum(t, x);
    ck_assert_int_eq(dfx_tape_backward(t, s), DFX_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "needs a gradient"));
    const int64_t bad[1] = {7};
    ck_assert_ptr_null(dfx_g_embedding(t, x, bad, 1));
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "outside [0, 2)"));
    dfx_tape_destroy(t);
}
END_TEST

/* ---- layers against inference ----------------------------------------- */

static float max_abs_diff(const float *a, const float *b, int64_t n, float *scale)
{
    float d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        d = fmaxf(d, fabsf(a[i] - b[i]));
        m = fmaxf(m, fabsf(b[i]));
    }
    *scale = m;
    return d;
}

START_TEST(test_layers_match_inference)
{
    dfx_weights *w;
    ck_assert_int_eq(dfx_weights_open_random(&w, 7), DFX_OK);
    dfx_resblock r;
    const dfx_resblock_params rp = {.cin = 8, .cout = 16, .temb = 12, .groups = 4, .eps = 1e-5,
                                    .output_scale_factor = 1.0};
    ck_assert_int_eq(dfx_resblock_load(&r, w, "res", &rp), DFX_OK);
    dfx_spatial_attention sa;
    ck_assert_int_eq(dfx_spatial_attention_load(&sa, w, "attn", 16, 2, 4, 1e-5, 1.0), DFX_OK);
    /* random group norm scales, so an affine mistake shows */
    dfx_rng *rng;
    ck_assert_int_eq(dfx_rng_create(&rng, 3), DFX_OK);
    dfx_rng_normal(rng, r.norm1.gamma, 8);
    dfx_rng_normal(rng, sa.norm.beta, 16);
    const int64_t n = 2, h = 5, wd = 6;
    float *x = malloc(sizeof(float) * n * 8 * h * wd), *temb = malloc(sizeof(float) * n * 12);
    float *y = malloc(sizeof(float) * n * 16 * h * wd);
    dfx_rng_normal(rng, x, n * 8 * h * wd);
    dfx_rng_normal(rng, temb, n * 12);
    dfx_arena *a;
    ck_assert_int_eq(dfx_arena_create(&a), DFX_OK);
    ck_assert_int_eq(dfx_resblock_forward(&r, x, temb, n, h, wd, y, a), DFX_OK);
    ck_assert_int_eq(dfx_spatial_attention_forward(&sa, y, n, h, wd, a), DFX_OK);

    dfx_params *p;
    ck_assert_int_eq(dfx_params_create(&p), DFX_OK);
    ck_assert_int_eq(dfx_params_add_resblock(p, "res", &r), DFX_OK);
    ck_assert_int_eq(dfx_params_add_spatial_attention(p, "attn", &sa), DFX_OK);
    ck_assert_ptr_nonnull(dfx_params_find_name(p, "res.conv_shortcut.weight"));
    ck_assert_ptr_nonnull(dfx_params_find_name(p, "attn.to_out.0.bias"));
    dfx_tape *t;
    ck_assert_int_eq(dfx_tape_create(&t, DFX_DTYPE_F32), DFX_OK);
    const int64_t xs[4] = {n, 8, h, wd}, ts[2] = {n, 12};
    dfx_var *vx = dfx_tape_from_f32(t, 4, xs, x, false);
    dfx_var *vt = dfx_tape_from_f32(t, 2, ts, temb, false);
    dfx_var *vy = dfx_g_spatial_attention(t, p, &sa, dfx_g_resblock(t, p, &r, vx, vt));
    ck_assert_int_eq(dfx_tape_status(t), DFX_OK);
    float scale;
    const float d = max_abs_diff(vy->data, y, vy->numel, &scale);
    ck_assert_msg(d <= 1e-5f * scale, "tape forward differs from inference by %g (max %g)", d,
                  scale);

    /* a parameter's gradient against float32 finite differences */
    dfx_var *loss = dfx_g_mean(t, dfx_g_unary_op(t, DFX_G_SQUARE, vy));
    ck_assert_int_eq(dfx_tape_backward(t, loss), DFX_OK);
    const char *names[] = {"res.conv1.weight", "res.norm2.bias", "attn.to_k.weight",
                           "res.time_emb_proj.weight", "attn.group_norm.weight"};
    dfx_tape_set_recording(t, false);
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        dfx_param *q = dfx_params_find_name(p, names[i]);
        ck_assert_ptr_nonnull(q);
        for (int64_t j = 0; j < q->numel; j += q->numel / 3 + 1) {
            const float keep = q->data[j], hstep = 1e-2f;
            double f[2];
            for (int s = 0; s < 2; s++) {
                q->data[j] = keep + (s ? -hstep : hstep);
                dfx_tape_reset(t);
                vx = dfx_tape_from_f32(t, 4, xs, x, false);
                vt = dfx_tape_from_f32(t, 2, ts, temb, false);
                vy = dfx_g_spatial_attention(t, p, &sa, dfx_g_resblock(t, p, &r, vx, vt));
                f[s] = dfx_var_get(dfx_g_mean(t, dfx_g_unary_op(t, DFX_G_SQUARE, vy)), 0);
            }
            q->data[j] = keep;
            const double fd = (f[0] - f[1]) / (2 * hstep);
            ck_assert_msg(fabs(fd - q->grad[j]) <= 2e-2 * fmax(fabs(fd), 1e-2),
                          "%s[%lld]: backward %g, finite differences %g", names[i], (long long)j,
                          q->grad[j], fd);
        }
    }
    dfx_tape_destroy(t);
    dfx_params_destroy(p);
    dfx_arena_destroy(a);
    dfx_rng_destroy(rng);
    free(x);
    free(temb);
    free(y);
    dfx_resblock_free(&r);
    dfx_spatial_attention_free(&sa);
    dfx_weights_close(w);
}
END_TEST

static Suite *grad_suite(void)
{
    Suite *s = suite_create("grad");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_elementwise);
    tcase_add_test(tc, test_views);
    tcase_add_test(tc, test_linear);
    tcase_add_test(tc, test_conv2d);
    tcase_add_test(tc, test_norms);
    tcase_add_test(tc, test_attention);
    tcase_add_test(tc, test_losses);
    tcase_add_test(tc, test_iddpm_vlb);
    tcase_add_test(tc, test_values);
    tcase_add_test(tc, test_failures);
    tcase_add_test(tc, test_layers_match_inference);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(grad_suite());
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
