/* Reverse-mode differentiation: a tape that records each operation of a
 * forward pass, then walks it backwards from a scalar to accumulate the
 * gradient of every variable that needs one.
 *
 * A tape computes in float32 (training) or float64 (gradient checks against
 * finite differences); every variable of a tape has the tape's element
 * type. Variables live in the tape's memory until dfx_tape_reset, which
 * starts the next step and reuses that memory. Parameters (dfx_params)
 * outlive tapes: a tape sees a parameter through dfx_tape_param, and
 * backward adds into the parameter's own gradient buffer.
 *
 * Operations do not return a status: the first failure (a shape mismatch,
 * memory) is kept in the tape, later operations on a failed tape return
 * NULL and do nothing, and dfx_tape_status reports the failure once the
 * graph is built, so model code reads like the forward pass it is. Every
 * operation accepts NULL inputs and then returns NULL. A tape is used by one
 * thread at a time; the kernels themselves thread through OpenBLAS. */
#ifndef DFX_GRAD_H
#define DFX_GRAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dfx/nn.h"
#include "dfx/status.h"
#include "dfx/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- parameters ------------------------------------------------------- */

/* A trainable tensor: a name (the checkpoint's), a shape, and float32 data
 * owned by whoever registered it (a layer's weights), plus a gradient
 * buffer the set owns. */
typedef struct dfx_param {
    const char *name;
    int ndim;
    int64_t shape[DFX_MAX_DIMS];
    int64_t numel;
    float *data;
    float *grad;    /* [numel], zeroed by dfx_params_zero_grad */
} dfx_param;

typedef struct dfx_params dfx_params;

DFX_API dfx_status dfx_params_create(dfx_params **out);
DFX_API void dfx_params_destroy(dfx_params *p);

/* Registers data (numel = product of shape, not copied, must outlive the
 * set) as parameter `name`. DFX_ERR_INVALID_ARG when the name or the data
 * is already registered. */
DFX_API dfx_status dfx_params_add(dfx_params *p, const char *name, float *data, int ndim,
                                  const int64_t *shape);
DFX_API int64_t dfx_params_count(const dfx_params *p);
DFX_API dfx_param *dfx_params_get(dfx_params *p, int64_t i);
/* The parameter whose data is `data`, or NULL. */
DFX_API dfx_param *dfx_params_find(const dfx_params *p, const float *data);
DFX_API dfx_param *dfx_params_find_name(const dfx_params *p, const char *name);
/* Total number of scalars. */
DFX_API int64_t dfx_params_numel(const dfx_params *p);
DFX_API void dfx_params_zero_grad(dfx_params *p);
/* sqrt(sum of squared gradients), in double. */
DFX_API double dfx_params_grad_norm(const dfx_params *p);

/* The layers' weights under the names their load functions read (prefix
 * "" for none): conv prefix.weight/.bias, group norm prefix.weight/.bias,
 * linear prefix.weight/.bias, resblock and spatial attention their sub-
 * layers. Weights already registered are an error. */
DFX_API dfx_status dfx_params_add_linear(dfx_params *p, const char *prefix, dfx_linear *l);
DFX_API dfx_status dfx_params_add_conv2d(dfx_params *p, const char *prefix, dfx_conv2d *c);
DFX_API dfx_status dfx_params_add_group_norm(dfx_params *p, const char *prefix, dfx_group_norm *g);
DFX_API dfx_status dfx_params_add_resblock(dfx_params *p, const char *prefix, dfx_resblock *r);
DFX_API dfx_status dfx_params_add_spatial_attention(dfx_params *p, const char *prefix,
                                                    dfx_spatial_attention *s);

/* ---- optimisation ----------------------------------------------------- */

/* AdamW (Loshchilov & Hutter 2019) as torch.optim.AdamW computes it: decay
 * p *= 1 - lr * weight_decay, then m and v moments with bias correction,
 * p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps). */
typedef struct dfx_adamw_params {
    double beta1, beta2, eps, weight_decay;
} dfx_adamw_params;

/* beta1 0.9, beta2 0.999, eps 1e-8, weight_decay 0 */
DFX_API void dfx_adamw_params_init(dfx_adamw_params *p);

typedef struct dfx_adamw dfx_adamw;

/* An optimiser over every parameter of params (which must not gain
 * parameters afterwards), with zeroed moments. */
DFX_API dfx_status dfx_adamw_create(dfx_adamw **out, dfx_params *params,
                                    const dfx_adamw_params *hp);
DFX_API void dfx_adamw_destroy(dfx_adamw *o);
/* One update of every parameter from its gradient at learning rate lr. */
DFX_API void dfx_adamw_step(dfx_adamw *o, double lr);
/* Updates taken so far (restored with the moments on resume). */
DFX_API int64_t dfx_adamw_steps(const dfx_adamw *o);
DFX_API void dfx_adamw_set_steps(dfx_adamw *o, int64_t steps);
/* Parameter i's first and second moments [numel] (read and written when
 * saving and resuming). */
DFX_API float *dfx_adamw_m(dfx_adamw *o, int64_t i);
DFX_API float *dfx_adamw_v(dfx_adamw *o, int64_t i);

/* Scales every gradient so that their global L2 norm is at most max_norm
 * (torch.nn.utils.clip_grad_norm_); returns the norm before clipping.
 * max_norm <= 0 only measures. */
DFX_API double dfx_params_clip_grad(dfx_params *p, double max_norm);

/* An exponential moving average of the parameters: shadow = d * shadow +
 * (1 - d) * p with d = min(decay, (1 + n) / (10 + n)) at the n-th update
 * (diffusers' EMAModel warm-up), the shadow starting as a copy. */
typedef struct dfx_ema dfx_ema;

DFX_API dfx_status dfx_ema_create(dfx_ema **out, const dfx_params *params, double decay);
DFX_API void dfx_ema_destroy(dfx_ema *e);
DFX_API void dfx_ema_update(dfx_ema *e);
DFX_API int64_t dfx_ema_updates(const dfx_ema *e);
DFX_API void dfx_ema_set_updates(dfx_ema *e, int64_t n);
/* The shadow of parameter i [numel]. */
DFX_API float *dfx_ema_shadow(dfx_ema *e, int64_t i);
/* Exchanges the parameters' data with the shadow (twice restores both):
 * evaluate or save the averaged weights in between. */
DFX_API void dfx_ema_swap(dfx_ema *e);

/* ---- tapes and variables ---------------------------------------------- */

typedef struct dfx_tape dfx_tape;

/* A value on a tape. data and grad hold numel elements of the tape's type
 * (float or double); grad is NULL until backward reaches the variable (and
 * stays NULL for variables that need no gradient). Read-only for callers
 * except through data before backward (inputs they fill). */
typedef struct dfx_var {
    dfx_dtype dtype;           /* the tape's */
    int ndim;
    int64_t shape[DFX_MAX_DIMS];
    int64_t numel;
    void *data;
    void *grad;
    bool requires_grad;
    struct dfx_param *param;   /* the parameter this variable shows, or NULL */
} dfx_var;

/* dtype DFX_DTYPE_F32 or DFX_DTYPE_F64. */
DFX_API dfx_status dfx_tape_create(dfx_tape **out, dfx_dtype dtype);
DFX_API void dfx_tape_destroy(dfx_tape *t);
DFX_API dfx_dtype dfx_tape_dtype(const dfx_tape *t);

/* Forgets every variable and recorded operation (their memory is reused)
 * and clears the failure. Parameters are untouched. */
DFX_API void dfx_tape_reset(dfx_tape *t);

/* DFX_OK, or the first failure of an operation since the last reset (the
 * message is set again on the calling thread). */
DFX_API dfx_status dfx_tape_status(const dfx_tape *t);

/* Makes st, with the calling thread's current error message, the tape's
 * failure (when it has none yet); returns NULL. For model code that fails
 * outside the tape's operations. */
DFX_API dfx_var *dfx_tape_fail(dfx_tape *t, dfx_status st);

/* Without recording (false), operations only compute: no gradient can be
 * taken, and no memory is kept for one (evaluation). Default true. */
DFX_API void dfx_tape_set_recording(dfx_tape *t, bool on);

/* Bytes of tape memory in use, and the most since creation. */
DFX_API size_t dfx_tape_bytes(const dfx_tape *t);
DFX_API size_t dfx_tape_peak(const dfx_tape *t);

/* A new variable of the given shape, uninitialised (zeroed for _zeros),
 * needing no gradient unless requires_grad. */
DFX_API dfx_var *dfx_tape_new(dfx_tape *t, int ndim, const int64_t *shape, bool requires_grad);
DFX_API dfx_var *dfx_tape_zeros(dfx_tape *t, int ndim, const int64_t *shape, bool requires_grad);
/* A variable holding a copy of float data (converted to the tape's type). */
DFX_API dfx_var *dfx_tape_from_f32(dfx_tape *t, int ndim, const int64_t *shape,
                                   const float *data, bool requires_grad);
/* A parameter on a float32 tape: data shared, gradient added into
 * param->grad by backward. NULL param gives NULL. */
DFX_API dfx_var *dfx_tape_param(dfx_tape *t, dfx_param *param);
/* The variable for layer weights `data` of the given shape: the parameter
 * registered for it in `params` (which may be NULL), else a constant that
 * shares the data. float32 tapes only. */
DFX_API dfx_var *dfx_tape_weight(dfx_tape *t, const dfx_params *params, float *data, int ndim,
                                 const int64_t *shape);

/* Element i of a variable, as double (tests, losses). */
DFX_API double dfx_var_get(const dfx_var *v, int64_t i);
DFX_API double dfx_var_grad(const dfx_var *v, int64_t i);

/* Accumulates d(loss)/d(v) for every recorded variable that needs it;
 * loss must have one element. Gradients add to what is there (parameters'
 * until dfx_params_zero_grad, variables' until reset). */
DFX_API dfx_status dfx_tape_backward(dfx_tape *t, dfx_var *loss);

/* ---- operations ------------------------------------------------------- */

/* Same shape in, same shape out. */
DFX_API dfx_var *dfx_g_add(dfx_tape *t, dfx_var *a, dfx_var *b);
DFX_API dfx_var *dfx_g_sub(dfx_tape *t, dfx_var *a, dfx_var *b);
DFX_API dfx_var *dfx_g_mul(dfx_tape *t, dfx_var *a, dfx_var *b);
DFX_API dfx_var *dfx_g_scale(dfx_tape *t, dfx_var *a, double s);

typedef enum dfx_g_unary {
    DFX_G_SILU = 0,
    DFX_G_GELU,       /* exact, with erf */
    DFX_G_RELU,
    DFX_G_TANH,
    DFX_G_SIGMOID,
    DFX_G_EXP,
    DFX_G_LOG,
    DFX_G_SQUARE,
} dfx_g_unary;
DFX_API dfx_var *dfx_g_unary_op(dfx_tape *t, dfx_g_unary op, dfx_var *a);

/* x [n, c, rest...] + v [n, c] broadcast over the rest (time embeddings),
 * or + v [c] broadcast over n and the rest (biases). */
DFX_API dfx_var *dfx_g_add_channel(dfx_tape *t, dfx_var *x, dfx_var *v);

/* Views and copies: the same elements in another shape (numel equal);
 * [n, a, b] -> [n, b, a]; concatenation and a slice along dimension 1. */
DFX_API dfx_var *dfx_g_reshape(dfx_tape *t, dfx_var *a, int ndim, const int64_t *shape);
DFX_API dfx_var *dfx_g_transpose12(dfx_tape *t, dfx_var *a);
DFX_API dfx_var *dfx_g_concat1(dfx_tape *t, dfx_var *a, dfx_var *b);
DFX_API dfx_var *dfx_g_slice1(dfx_tape *t, dfx_var *a, int64_t start, int64_t len);

/* y [rows, out] = x [rows, in] w^T + b; w [out, in], b [out] or NULL. x may
 * have more dimensions: its last is `in`, the others are rows. */
DFX_API dfx_var *dfx_g_linear(dfx_tape *t, dfx_var *x, dfx_var *w, dfx_var *b);

/* y [n, cout, ho, wo] = conv(x [n, cin, h, w]) with w [cout, cin, k, k],
 * b [cout] or NULL, zero padding (top, left, bottom, right). */
DFX_API dfx_var *dfx_g_conv2d(dfx_tape *t, dfx_var *x, dfx_var *w, dfx_var *b, int64_t stride,
                              const int64_t pad[4]);

/* GroupNorm over x [n, c, rest...] with gamma, beta [c] (or NULL: no affine). */
DFX_API dfx_var *dfx_g_group_norm(dfx_tape *t, dfx_var *x, dfx_var *gamma, dfx_var *beta,
                                  int64_t groups, double eps);
/* LayerNorm over the last dimension, gamma, beta [dim] or NULL. */
DFX_API dfx_var *dfx_g_layer_norm(dfx_tape *t, dfx_var *x, dfx_var *gamma, dfx_var *beta,
                                  double eps);

/* Scaled dot-product attention: q [b, nq, heads*dh], k and v [b, nk,
 * heads*dh] -> [b, nq, heads*dh]; causal masks key j > query i. */
DFX_API dfx_var *dfx_g_attention(dfx_tape *t, dfx_var *q, dfx_var *k, dfx_var *v, int64_t heads,
                                 double scale, bool causal);

/* Nearest-neighbour 2x upsampling of [n, c, h, w]. */
DFX_API dfx_var *dfx_g_upsample2x(dfx_tape *t, dfx_var *x);

/* The mean over the last two dimensions of [n, c, h, w]: [n, c] (global
 * average pooling), summed in double. */
DFX_API dfx_var *dfx_g_mean_hw(dfx_tape *t, dfx_var *x);

/* Rows of table [rows, dim] picked by ids [n] (each in [0, rows)): [n, dim]. */
DFX_API dfx_var *dfx_g_embedding(dfx_tape *t, dfx_var *table, const int64_t *ids, int64_t n);

/* Scalars: the sum and mean of all elements; mean((a - b)^2); the mean over
 * rows of -log softmax(logits [n, k])[label]. */
DFX_API dfx_var *dfx_g_sum(dfx_tape *t, dfx_var *a);
DFX_API dfx_var *dfx_g_mean(dfx_tape *t, dfx_var *a);
DFX_API dfx_var *dfx_g_mse(dfx_tape *t, dfx_var *a, dfx_var *b);
DFX_API dfx_var *dfx_g_cross_entropy(dfx_tape *t, dfx_var *logits, const int64_t *labels);

/* IDDPM's variational bound L_vlb (Nichol & Dhariwal 2021, eq. 4-6) with
 * the learned-range variance of eq. 15, as the hybrid objective uses it:
 * the model's mean (from its noise prediction eps) is held fixed, so only
 * v [n, ...] (the variance channels, in [-1, 1]) receives a gradient.
 * Per item: the posterior mean's coefficients of x0 and x_t, the model
 * mean's of x_t and eps (through x0's estimate), log of the clipped
 * posterior variance (min_log, also the true variance) and log beta_t
 * (max_log), and whether t = 0 (then the term is the discretized Gaussian
 * likelihood of x0 on 256 levels in [-1, 1], else the KL divergence). x0,
 * xt and eps have v's element count. The result is the mean over all
 * elements, in bits. */
typedef struct dfx_vlb_item {
    double true_x0, true_xt;
    double model_xt, model_eps;
    double min_log, max_log;
    bool first;
} dfx_vlb_item;

DFX_API dfx_var *dfx_g_iddpm_vlb(dfx_tape *t, dfx_var *v, const float *x0, const float *xt,
                                 const float *eps, const dfx_vlb_item *items);

/* ---- layers ----------------------------------------------------------- */

/* The nn layers' forward passes on a float32 tape, their weights taken
 * through dfx_tape_weight (trainable where registered in params), with the
 * inference forward's arithmetic (tests hold the two together). */
DFX_API dfx_var *dfx_g_linear_layer(dfx_tape *t, const dfx_params *p, const dfx_linear *l,
                                    dfx_var *x);
DFX_API dfx_var *dfx_g_conv2d_layer(dfx_tape *t, const dfx_params *p, const dfx_conv2d *c,
                                    dfx_var *x);
DFX_API dfx_var *dfx_g_group_norm_layer(dfx_tape *t, const dfx_params *p, const dfx_group_norm *g,
                                        dfx_var *x);
/* temb [n, temb] after the caller's SiLU, or NULL. */
DFX_API dfx_var *dfx_g_resblock(dfx_tape *t, const dfx_params *p, const dfx_resblock *r,
                                dfx_var *x, dfx_var *temb);
DFX_API dfx_var *dfx_g_spatial_attention(dfx_tape *t, const dfx_params *p,
                                         const dfx_spatial_attention *s, dfx_var *x);

#ifdef __cplusplus
}
#endif
#endif
