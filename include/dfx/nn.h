/* Neural-network building blocks shared by every model plugin: named weights,
 * scratch memory, and the layers of diffusion networks (convolution, norms,
 * linear, activations, timestep embeddings, attention, residual blocks,
 * up/down-sampling). float32, NCHW for images, [rows, features] for tokens.
 *
 * Every matrix product goes through OpenBLAS sgemm, called from the calling
 * thread (Winograd convolutions run their independent products side by
 * side on OpenMP threads, one thread each); elementwise work is threaded
 * with OpenMP when that cannot slow the products down: with OpenBLAS's
 * pthreads build, idle OpenMP threads spin for milliseconds after each
 * parallel region and starve the sgemm that follows, so the passes run on
 * the calling thread unless OMP_WAIT_POLICY is passive (or OpenBLAS is
 * single-threaded or built with OpenMP). Layers keep their weights
 * converted to float32 once, at load; a forward pass takes its
 * temporaries from a dfx_arena, so repeated passes allocate nothing. Forward
 * functions are not reentrant on the same arena; layers themselves are
 * read-only and may be shared. */
#ifndef DFX_NN_H
#define DFX_NN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dfx/status.h"
#include "dfx/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- weights ---------------------------------------------------------- */

/* A set of named tensors read from a checkpoint, remembering which were
 * used so that unknown extra tensors can be reported. Loads update that
 * record: one thread at a time per set. */
typedef struct dfx_weights dfx_weights;

/* Opens a .safetensors file, a sharded set (its *.index.json), or a
 * torch.save checkpoint (.ckpt, .pt, .pth, .bin; the zip format and the
 * legacy one), the format told by the file's first bytes. A checkpoint's
 * pickle is read by a restricted unpickler that never runs anything: a
 * global other than the tensor-rebuild and container names torch.save
 * writes (and the inert objects Lightning checkpoints carry) is refused
 * with DFX_ERR_FORMAT "FILE: refuses to unpickle global 'os.system' (only
 * tensor data and plain containers are read)". The tensors are the
 * top-level dict's, or its "state_dict" entry's when that is a dict;
 * entries that are not tensors are skipped. Non-contiguous tensors are
 * copied at open; the others stay in the mapped file. */
DFX_API dfx_status dfx_weights_open(dfx_weights **out, const char *path);
/* A source of seeded random weights of whatever shape is asked (norm
 * scales 1, biases 0, others N(0, 1/fan_in)): full-size networks for
 * benchmarks without a checkpoint. Every name exists; none is unused. */
DFX_API dfx_status dfx_weights_open_random(dfx_weights **out, uint64_t seed);
DFX_API void dfx_weights_close(dfx_weights *w);
DFX_API const char *dfx_weights_path(const dfx_weights *w);

DFX_API bool dfx_weights_has(const dfx_weights *w, const char *name);

/* Loads tensor `name`, converted to float32, into a new 64-byte aligned
 * array (free with free()). Its shape must equal shape[0..ndim). Errors
 * name the file and the tensor: DFX_ERR_NOT_FOUND "FILE: tensor 'NAME' is
 * missing", DFX_ERR_FORMAT "FILE: tensor 'NAME' has shape [a,b] but the
 * model expects [c,d]"; *out is NULL then. The tensor counts as used. */
DFX_API dfx_status dfx_weights_load(dfx_weights *w, const char *name, int ndim,
                                    const int64_t *shape, float **out);

/* As dfx_weights_load, trying each name in turn (NULL-terminated list;
 * newer names first, then legacy ones); the message names the first, then
 * the others in parentheses. */
DFX_API dfx_status dfx_weights_load_any(dfx_weights *w, const char *const *names,
                                        int ndim, const int64_t *shape,
                                        float **out);

/* Fails (DFX_ERR_FORMAT) when tensors under `prefix` ("" for all) were
 * never loaded, naming the first five in file order and counting the rest:
 * a checkpoint with tensors the model does not use is the wrong checkpoint
 * for this configuration. */
DFX_API dfx_status dfx_weights_check_used(const dfx_weights *w, const char *prefix);

/* Makes `name` stand for the stored tensor `stored`, or with rows > 0 for
 * rows [row0, row0 + rows) of its first dimension (a slice of a fused
 * q,k,v projection): a checkpoint in another layout (an original Stable
 * Diffusion single file) presented under the names a model loads. Once a
 * set has an alias, aliases are the only names it answers to (has, load,
 * load_any, view; count and name still list the stored tensors), a load
 * also accepts a stored shape that is the expected one with trailing
 * size-1 dimensions added (a [C, C, 1, 1] kernel for a [C, C] weight),
 * and check_used reports the aliases never loaded, by their stored names.
 * Errors: DFX_ERR_NOT_FOUND "FILE: tensor 'STORED' is missing",
 * DFX_ERR_FORMAT when the rows do not exist, DFX_ERR_INVALID_ARG when
 * `name` already has a source. A no-op for a random source. */
DFX_API dfx_status dfx_weights_alias(dfx_weights *w, const char *name, const char *stored,
                                     int64_t row0, int64_t rows);

/* Writes into buf (size bytes) how the file would spell the tensor the
 * model calls `name`; false when the layout has no such tensor. */
typedef bool (*dfx_weights_namer)(const void *ctx, const char *name, char *buf, size_t size);

/* For an aliased set: a load of a name without alias then fails with
 * "FILE: tensor 'SPELLED' is missing (what the model calls 'NAME')", so
 * the message names what the user's file lacks. The set keeps a copy of
 * ctx[0..ctx_size) for the namer (plain data: no pointers it must free).
 * namer NULL removes it. */
DFX_API dfx_status dfx_weights_set_namer(dfx_weights *w, dfx_weights_namer namer,
                                         const void *ctx, size_t ctx_size);

/* What the set holds, for listings (`dfx inspect`): its tensors in file
 * order (0 and NULL for a random source or an index out of range), and the
 * format: "safetensors", "torch zip", "torch legacy" or "random". */
DFX_API int64_t dfx_weights_count(const dfx_weights *w);
DFX_API const char *dfx_weights_name(const dfx_weights *w, int64_t i);
DFX_API const char *dfx_weights_format(const dfx_weights *w);

/* Tensor `name` as stored: its dtype and shape, and a read-only view of its
 * data, valid until close, that may be unaligned for its dtype. Does not
 * count as a use. DFX_ERR_NOT_FOUND names the file and the tensor. */
DFX_API dfx_status dfx_weights_view(const dfx_weights *w, const char *name, dfx_tensor *out);

/* ---- scratch memory --------------------------------------------------- */

/* A stack of float buffers for the temporaries of a forward pass. It grows
 * during the first passes and then serves every later pass from one block. */
typedef struct dfx_arena dfx_arena;

DFX_API dfx_status dfx_arena_create(dfx_arena **out);
DFX_API void dfx_arena_destroy(dfx_arena *a);

/* n floats, 64-byte aligned, uninitialised; NULL (with the error message set)
 * when memory runs out. Valid until the arena is released below its mark. */
DFX_API float *dfx_arena_alloc(dfx_arena *a, size_t n);

/* Stack discipline: release everything allocated after `mark`. */
DFX_API size_t dfx_arena_mark(const dfx_arena *a);
DFX_API void dfx_arena_release(dfx_arena *a, size_t mark);

/* Bytes of the largest footprint seen (for benchmarks and memory budgets). */
DFX_API size_t dfx_arena_peak(const dfx_arena *a);

/* ---- elementwise ------------------------------------------------------ */

DFX_API void dfx_nn_silu(float *x, int64_t n);
DFX_API void dfx_nn_gelu(float *x, int64_t n);        /* exact, with erf */
DFX_API void dfx_nn_gelu_tanh(float *x, int64_t n);   /* tanh approximation */
DFX_API void dfx_nn_quick_gelu(float *x, int64_t n);  /* x * sigmoid(1.702 x) */

/* y[i] = a[i] + b[i] (y may alias a or b). */
DFX_API void dfx_nn_add(float *y, const float *a, const float *b, int64_t n);

/* x [n, c, hw] += v [n, c] broadcast over hw (per-channel bias or embedding). */
DFX_API void dfx_nn_add_channel(float *x, const float *v, int64_t n, int64_t c, int64_t hw);

/* ---- linear ----------------------------------------------------------- */

typedef struct dfx_linear {
    int64_t in, out;
    float *w;   /* [out, in] as PyTorch stores it */
    float *b;   /* [out] or NULL */
} dfx_linear;

/* Loads prefix.weight [out, in] and, with bias, prefix.bias [out]. */
DFX_API dfx_status dfx_linear_load(dfx_linear *l, dfx_weights *w, const char *prefix,
                                   int64_t in, int64_t out, bool bias);
/* The same from explicit tensor names (for renamed checkpoints). */
DFX_API dfx_status dfx_linear_load_names(dfx_linear *l, dfx_weights *w,
                                         const char *const *weight_names,
                                         const char *const *bias_names,
                                         int64_t in, int64_t out);
DFX_API void dfx_linear_free(dfx_linear *l);

/* y [rows, out] = x [rows, in] W^T + b. */
DFX_API void dfx_linear_forward(const dfx_linear *l, const float *x, int64_t rows, float *y);

/* ---- convolution ------------------------------------------------------ */

/* How dfx_conv2d_forward computes a convolution. im2col + sgemm serves
 * every geometry. Winograd minimal filtering (Lavin & Gray 2016) serves
 * 3x3 stride-1 kernels with any zero padding: F(4x4, 3x3) does 4x fewer
 * multiplies than im2col with an error of about 4e-6 of the output's
 * largest value (im2col: 1e-6), F(2x2, 3x3) 2.25x fewer at 5e-7. AUTO takes
 * F(4x4, 3x3) for 3x3 stride-1 layers of 16 channels or more in and out
 * whenever the call has enough tiles to keep the products efficient, and
 * im2col otherwise. */
typedef enum dfx_conv2d_algo {
    DFX_CONV2D_ALGO_AUTO = 0,
    DFX_CONV2D_ALGO_IM2COL,
    DFX_CONV2D_ALGO_WINOGRAD_2X2,
    DFX_CONV2D_ALGO_WINOGRAD_4X4,
} dfx_conv2d_algo;

typedef struct dfx_conv2d {
    int64_t cin, cout, k;      /* square kernel k x k */
    int64_t stride;
    int64_t pad_top, pad_left, pad_bottom, pad_right;
    float *w;                  /* [cout, cin, k, k] */
    float *b;                  /* [cout] or NULL */
    /* set by dfx_conv2d_load and dfx_conv2d_set_algo, read-only elsewhere */
    dfx_conv2d_algo algo;
    int64_t wino_tile;         /* m of wino_w's F(m x m, 3x3): 2, 4, or 0 for none */
    float *wino_w;             /* [(m+2)^2, cout, cin]: G g G^T of every kernel, or NULL */
} dfx_conv2d;

/* Loads prefix.weight [cout, cin, k, k] (and prefix.bias); padding `pad` on
 * every side. A [cout, cin] weight is accepted for k = 1 (a linear layer
 * applied per pixel, as some checkpoints store 1x1 convolutions). The
 * algorithm is AUTO: a 3x3 stride-1 layer of 16 channels or more in and out
 * also keeps its kernels transformed for F(4x4, 3x3), 4x the memory of w. */
DFX_API dfx_status dfx_conv2d_load(dfx_conv2d *c, dfx_weights *w, const char *prefix,
                                   int64_t cin, int64_t cout, int64_t k, int64_t stride,
                                   int64_t pad, bool bias);
DFX_API void dfx_conv2d_free(dfx_conv2d *c);

/* Chooses how a loaded layer runs from now on, transforming its kernels
 * when the algorithm needs another transform than the one it holds (and
 * freeing them for IM2COL, or for AUTO on a layer AUTO never runs with
 * Winograd). A forced Winograd algorithm then runs for every input size.
 * DFX_ERR_UNSUPPORTED for Winograd on a kernel other than 3x3 stride 1;
 * DFX_ERR_NO_MEMORY leaves the layer as it was. Not thread-safe against
 * forward calls on the same layer. */
DFX_API dfx_status dfx_conv2d_set_algo(dfx_conv2d *c, dfx_conv2d_algo algo);

/* Output height and width for an input h x w. */
DFX_API void dfx_conv2d_out_size(const dfx_conv2d *c, int64_t h, int64_t w,
                                 int64_t *ho, int64_t *wo);

/* y [n, cout, ho, wo] = conv(x [n, cin, h, w]). Scratch (im2col tiles of
 * about 8 MiB, or Winograd's transformed tiles and products, about 16 MiB
 * and at least one row of tiles) comes from the arena and is bounded
 * independently of n * h * w. */
DFX_API dfx_status dfx_conv2d_forward(const dfx_conv2d *c, const float *x, int64_t n,
                                      int64_t h, int64_t w, float *y, dfx_arena *a);

/* ---- normalisation ---------------------------------------------------- */

typedef struct dfx_group_norm {
    int64_t groups, channels;
    double eps;
    float *gamma, *beta;   /* [channels] */
} dfx_group_norm;

DFX_API dfx_status dfx_group_norm_load(dfx_group_norm *g, dfx_weights *w, const char *prefix,
                                       int64_t groups, int64_t channels, double eps);
DFX_API void dfx_group_norm_free(dfx_group_norm *g);

/* y [n, c, hw] = GroupNorm(x), followed by SiLU when `silu` (fused).
 * Statistics are accumulated in double. y may alias x. */
DFX_API void dfx_group_norm_forward(const dfx_group_norm *g, const float *x, int64_t n,
                                    int64_t hw, float *y, bool silu);

typedef struct dfx_layer_norm {
    int64_t dim;
    double eps;
    float *gamma, *beta;   /* [dim] */
} dfx_layer_norm;

DFX_API dfx_status dfx_layer_norm_load(dfx_layer_norm *l, dfx_weights *w, const char *prefix,
                                       int64_t dim, double eps);
DFX_API void dfx_layer_norm_free(dfx_layer_norm *l);

/* y [rows, dim] = LayerNorm(x) over the last dimension. y may alias x. */
DFX_API void dfx_layer_norm_forward(const dfx_layer_norm *l, const float *x, int64_t rows, float *y);

/* ---- embeddings ------------------------------------------------------- */

/* The sinusoidal timestep embedding of diffusers' get_timestep_embedding,
 * in float32 as torch computes it: for each of the n timesteps t (cast to
 * float32), half = dim/2 frequencies f_i = exp(-ln(max_period) * i /
 * (half - freq_shift)), arguments scale * t * f_i, output [sin, cos] (or
 * [cos, sin] with flip_sin_to_cos), zero-padded when dim is odd. */
DFX_API void dfx_nn_timestep_embedding(const double *t, int64_t n, int64_t dim,
                                       bool flip_sin_to_cos, double freq_shift,
                                       double scale, double max_period, float *out);

/* ---- attention -------------------------------------------------------- */

/* Scaled dot-product attention for `heads` heads of width dh:
 * out [b, nq, heads*dh] = softmax(scale * Q K^T) V with Q [b, nq, heads*dh],
 * K and V [b, nk, heads*dh] (token-major, heads side by side, as the
 * projections produce them). Strides ldq/ldk/ldv/ldo are the row lengths of
 * the stored matrices (>= heads*dh), so Q, K and V can live in one fused
 * buffer. Computed one block of queries at a time (of one head, or of
 * several heads when one head's block is small; blocks of one head each on
 * the OpenMP threads when the layers thread) with a fused softmax, so the
 * scores held at once stay under 4 MiB a thread (4096-token self-attention
 * never materialises heads x 4096 x 4096). NaN in the inputs gives NaN in the
 * rows it reaches. */
DFX_API dfx_status dfx_nn_attention(const float *q, int64_t ldq, const float *k, int64_t ldk,
                                    const float *v, int64_t ldv, int64_t b, int64_t heads,
                                    int64_t nq, int64_t nk, int64_t dh, float scale,
                                    float *out, int64_t ldo, dfx_arena *a);
/* The same with a causal mask over n queries and n keys (a text encoder's
 * self-attention): query i attends to keys 0..i only. */
DFX_API dfx_status dfx_nn_attention_causal(const float *q, int64_t ldq, const float *k, int64_t ldk,
                                           const float *v, int64_t ldv, int64_t b, int64_t heads,
                                           int64_t n, int64_t dh, float scale, float *out, int64_t ldo,
                                           dfx_arena *a);

/* ---- blocks ----------------------------------------------------------- */

/* diffusers' ResnetBlock2D: norm1 -> SiLU -> conv1 (3x3), plus the projected
 * time embedding (added, or as scale and shift after norm2 with
 * time_scale_shift), norm2 -> SiLU -> conv2, shortcut (1x1 conv when the
 * channels change), sum divided by output_scale_factor. */
typedef struct dfx_resblock {
    int64_t cin, cout;
    bool scale_shift;
    double output_scale_factor;
    dfx_group_norm norm1, norm2;
    dfx_conv2d conv1, conv2, shortcut;  /* shortcut.w NULL when cin == cout */
    dfx_linear time_proj;               /* w NULL without time embedding */
} dfx_resblock;

typedef struct dfx_resblock_params {
    int64_t cin, cout;
    int64_t temb;                /* time embedding width, 0 for none */
    int64_t groups;
    double eps;
    bool scale_shift;            /* resnet_time_scale_shift "scale_shift" */
    double output_scale_factor;  /* 1 normally */
} dfx_resblock_params;

/* Loads prefix.{norm1,conv1,time_emb_proj,norm2,conv2,conv_shortcut}. */
DFX_API dfx_status dfx_resblock_load(dfx_resblock *r, dfx_weights *w, const char *prefix,
                                     const dfx_resblock_params *p);
DFX_API void dfx_resblock_free(dfx_resblock *r);

/* y [n, cout, h, w] = block(x [n, cin, h, w], temb [n, temb] or NULL). The
 * time embedding is used as given (the caller applies the SiLU diffusers
 * puts before time_emb_proj). y must not alias x. */
DFX_API dfx_status dfx_resblock_forward(const dfx_resblock *r, const float *x, const float *temb,
                                        int64_t n, int64_t h, int64_t w, float *y, dfx_arena *a);

/* diffusers' spatial self-attention (Attention with group norm, residual
 * connection and rescale_output_factor, as UNet2DModel's attention blocks
 * and the VAE mid-block use it). */
typedef struct dfx_spatial_attention {
    int64_t channels, heads;
    double rescale;
    dfx_group_norm norm;       /* gamma NULL when there is no norm */
    dfx_linear q, k, v, out;
} dfx_spatial_attention;

/* Loads prefix.{group_norm, to_q, to_k, to_v, to_out.0}, or the pre-0.14
 * names prefix.{group_norm, query, key, value, proj_attn}; 1x1 convolution
 * weights [C, C, 1, 1] are accepted for the projections. groups 0: no
 * group norm (diffusers' mid-block attention under scale_shift has none). */
DFX_API dfx_status dfx_spatial_attention_load(dfx_spatial_attention *s, dfx_weights *w,
                                              const char *prefix, int64_t channels,
                                              int64_t heads, int64_t groups, double eps,
                                              double rescale);
DFX_API void dfx_spatial_attention_free(dfx_spatial_attention *s);

/* x [n, c, h, w] = (x + attention(norm(x))) / rescale, in place. */
DFX_API dfx_status dfx_spatial_attention_forward(const dfx_spatial_attention *s, float *x, int64_t n,
                                                 int64_t h, int64_t w, dfx_arena *a);

/* Nearest-neighbour 2x upsampling: y [n, c, 2h, 2w]. */
DFX_API void dfx_nn_upsample_nearest2x(const float *x, int64_t n, int64_t c, int64_t h, int64_t w,
                                       float *y);

/* 2x2 average pooling with stride 2: y [n, c, h/2, w/2]. */
DFX_API void dfx_nn_avgpool2x(const float *x, int64_t n, int64_t c, int64_t h, int64_t w, float *y);

#ifdef __cplusplus
}
#endif
#endif
