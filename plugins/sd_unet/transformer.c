/* Transformer2DModel for sd_unet (see transformer.h). The features stay
 * channel-major [C, hw] outside and token-major [hw, inner] inside: proj_in
 * reads the normalised features transposed inside sgemm and proj_out
 * accumulates its product onto the residual transposed back the same way,
 * so no transposed copy is made. Every residual is accumulated onto the
 * token states by the product that computes it (sgemm's beta = 1). */
#include "plugins/sd_unet/transformer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "dfx/ops.h"

/* Rows of the feed-forward computed at once: its [rows, 2 * ff] activations
 * stay a few MiB whatever the image size (8 MiB at SD's top level). */
#define FF_ROWS 1024

void sdu_transformer_free(sdu_transformer *t)
{
    if (!t)
        return;
    dfx_group_norm_free(&t->norm);
    dfx_linear_free(&t->proj_in);
    dfx_linear_free(&t->proj_out);
    for (int64_t i = 0; t->blocks && i < t->depth; i++) {
        sdu_block *b = &t->blocks[i];
        dfx_layer_norm_free(&b->norm1);
        dfx_layer_norm_free(&b->norm2);
        dfx_layer_norm_free(&b->norm3);
        sdu_attention *at[2] = {&b->attn1, &b->attn2};
        for (int j = 0; j < 2; j++) {
            dfx_linear_free(&at[j]->q);
            dfx_linear_free(&at[j]->k);
            dfx_linear_free(&at[j]->v);
            dfx_linear_free(&at[j]->out);
        }
        dfx_linear_free(&b->ff_in);
        dfx_linear_free(&b->ff_out);
    }
    free(t->blocks);
    t->blocks = NULL;
}

static dfx_status load_attention(sdu_attention *at, dfx_weights *w, const char *prefix, int64_t inner,
                                 int64_t kv_dim)
{
    char name[640];
    dfx_status st;
    snprintf(name, sizeof name, "%s.to_q", prefix);
    if ((st = dfx_linear_load(&at->q, w, name, inner, inner, false)))
        return st;
    snprintf(name, sizeof name, "%s.to_k", prefix);
    if ((st = dfx_linear_load(&at->k, w, name, kv_dim, inner, false)))
        return st;
    snprintf(name, sizeof name, "%s.to_v", prefix);
    if ((st = dfx_linear_load(&at->v, w, name, kv_dim, inner, false)))
        return st;
    snprintf(name, sizeof name, "%s.to_out.0", prefix);
    return dfx_linear_load(&at->out, w, name, inner, inner, true);
}

static dfx_status load_block(sdu_block *b, dfx_weights *w, const char *prefix, const sdu_transformer *t)
{
    char name[576];
    dfx_status st;
    /* BasicTransformerBlock's LayerNorms: norm_eps 1e-5, with affine */
    dfx_layer_norm *norms[3] = {&b->norm1, &b->norm2, &b->norm3};
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "%s.norm%d", prefix, i + 1);
        if ((st = dfx_layer_norm_load(norms[i], w, name, t->inner, 1e-5)))
            return st;
    }
    snprintf(name, sizeof name, "%s.attn1", prefix);
    if ((st = load_attention(&b->attn1, w, name, t->inner, t->inner)))
        return st;
    snprintf(name, sizeof name, "%s.attn2", prefix);
    if ((st = load_attention(&b->attn2, w, name, t->inner, t->context_dim)))
        return st;
    snprintf(name, sizeof name, "%s.ff.net.0.proj", prefix);
    if ((st = dfx_linear_load(&b->ff_in, w, name, t->inner, 2 * t->ff, true)))
        return st;
    snprintf(name, sizeof name, "%s.ff.net.2", prefix);
    return dfx_linear_load(&b->ff_out, w, name, t->ff, t->inner, true);
}

dfx_status sdu_transformer_load(sdu_transformer *t, dfx_weights *w, const char *prefix,
                                const sdu_transformer_params *p)
{
    *t = (sdu_transformer){0};
    t->channels = p->channels;
    t->heads = p->heads;
    t->head_dim = p->heads > 0 ? p->channels / p->heads : 0;
    t->inner = t->heads * t->head_dim;
    t->context_dim = p->context_dim;
    t->ff = 4 * t->inner;
    t->depth = p->depth;
    if (t->head_dim < 1 || t->depth < 1 || p->context_dim < 1)
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "%s: transformer '%s': invalid geometry (%lld channels, %lld heads, depth %lld, "
                             "context %lld)",
                             dfx_weights_path(w), prefix, (long long)p->channels, (long long)p->heads,
                             (long long)p->depth, (long long)p->context_dim);
    t->blocks = calloc((size_t)t->depth, sizeof *t->blocks);
    if (!t->blocks)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    char name[512];
    dfx_status st;
    /* Transformer2DModel's GroupNorm has eps 1e-6, whatever the UNet's */
    snprintf(name, sizeof name, "%s.norm", prefix);
    if ((st = dfx_group_norm_load(&t->norm, w, name, p->groups, t->channels, 1e-6)))
        goto fail;
    snprintf(name, sizeof name, "%s.proj_in", prefix);
    if ((st = dfx_linear_load(&t->proj_in, w, name, t->channels, t->inner, true)))
        goto fail;
    for (int64_t i = 0; i < t->depth; i++) {
        snprintf(name, sizeof name, "%s.transformer_blocks.%lld", prefix, (long long)i);
        if ((st = load_block(&t->blocks[i], w, name, t)))
            goto fail;
    }
    snprintf(name, sizeof name, "%s.proj_out", prefix);
    if ((st = dfx_linear_load(&t->proj_out, w, name, t->inner, t->channels, true)))
        goto fail;
    return DFX_OK;
fail:
    sdu_transformer_free(t);
    return st;
}

/* y [rows, cols] (row stride ldy) += b broadcast over the rows */
static void add_bias_rows(float *y, int64_t ldy, const float *b, int64_t rows, int64_t cols)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++)
            y[r * ldy + j] += b[j];
}

/* y [rows, out] (row stride ldy) = x W^T + b, W [out, in] with row stride
 * in (a block of a larger weight's rows). */
static void project(const float *wt, const float *b, int64_t in, int64_t out, const float *x, int64_t ldx,
                    int64_t rows, float *y, int64_t ldy)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < out; j++)
            y[r * ldy + j] = b[j];
    dfx_ops_matmul(false, true, rows, out, in, 1.0f, x, ldx, wt, in, 1.0f, y, ldy);
}

/* tok [n * nq, inner] += attention(xq [n * nq, inner], kv [n * nk, kv_dim]);
 * q, k, v, o are scratch of n * max(nq, nk) * inner floats */
static dfx_status attend(const sdu_attention *at, const sdu_transformer *t, float *tok, const float *xq,
                         int64_t n, int64_t nq, const float *kv, int64_t nk, float *q, float *k, float *v,
                         float *o, dfx_arena *a)
{
    const int64_t inner = t->inner;
    /* Attention.scale = dim_head**-0.5 in Python, rounded to float by baddbmm */
    const float scale = (float)pow((double)t->head_dim, -0.5);
    dfx_linear_forward(&at->q, xq, n * nq, q);
    dfx_linear_forward(&at->k, kv, n * nk, k);
    dfx_linear_forward(&at->v, kv, n * nk, v);
    dfx_status st = dfx_nn_attention(q, inner, k, inner, v, inner, n, t->heads, nq, nk, t->head_dim, scale, o,
                                     inner, a);
    if (st)
        return st;
    /* to_out.0, then the residual: tok + b + o W^T */
    add_bias_rows(tok, inner, at->out.b, n * nq, inner);
    dfx_ops_matmul(false, true, n * nq, inner, inner, 1.0f, o, inner, at->out.w, inner, 1.0f, tok, inner);
    return DFX_OK;
}

/* tok [rows, inner] += FeedForward(x): GEGLU (value * gelu(gate), exact
 * erf GELU) then the output projection, FF_ROWS rows at a time */
static void feed_forward(const sdu_block *b, const sdu_transformer *t, float *tok, const float *x, int64_t rows,
                         float *hval, float *hgate)
{
    const int64_t inner = t->inner, ff = t->ff;
    add_bias_rows(tok, inner, b->ff_out.b, rows, inner);
    for (int64_t r0 = 0; r0 < rows; r0 += FF_ROWS) {
        const int64_t m = rows - r0 < FF_ROWS ? rows - r0 : FF_ROWS;
        /* proj(x).chunk(2, dim=-1): the first half is the value, the second the gate */
        project(b->ff_in.w, b->ff_in.b, inner, ff, x + r0 * inner, inner, m, hval, ff);
        project(b->ff_in.w + ff * inner, b->ff_in.b + ff, inner, ff, x + r0 * inner, inner, m, hgate, ff);
        dfx_nn_gelu(hgate, m * ff);
        for (int64_t i = 0; i < m * ff; i++)
            hval[i] *= hgate[i];
        dfx_ops_matmul(false, true, m, inner, ff, 1.0f, hval, ff, b->ff_out.w, ff, 1.0f, tok + r0 * inner, inner);
    }
}

dfx_status sdu_transformer_forward(const sdu_transformer *t, float *x, int64_t n, int64_t hw,
                                   const float *context, int64_t tokens, dfx_arena *a)
{
    const int64_t c = t->channels, inner = t->inner, rows = n * hw;
    const int64_t kv_rows = n * (hw > tokens ? hw : tokens);
    const int64_t ff_rows = rows < FF_ROWS ? rows : FF_ROWS;
    const size_t mark = dfx_arena_mark(a);
    float *hn = dfx_arena_alloc(a, (size_t)(n * c * hw));
    float *tok = hn ? dfx_arena_alloc(a, (size_t)(rows * inner)) : NULL;
    float *nrm = tok ? dfx_arena_alloc(a, (size_t)(rows * inner)) : NULL;
    float *q = nrm ? dfx_arena_alloc(a, (size_t)(rows * inner)) : NULL;
    float *o = q ? dfx_arena_alloc(a, (size_t)(rows * inner)) : NULL;
    float *k = o ? dfx_arena_alloc(a, (size_t)(kv_rows * inner)) : NULL;
    float *v = k ? dfx_arena_alloc(a, (size_t)(kv_rows * inner)) : NULL;
    float *hval = v ? dfx_arena_alloc(a, (size_t)(ff_rows * t->ff)) : NULL;
    float *hgate = hval ? dfx_arena_alloc(a, (size_t)(ff_rows * t->ff)) : NULL;
    if (!hgate) {
        dfx_arena_release(a, mark);
        return DFX_ERR_NO_MEMORY;
    }
    dfx_status st = DFX_OK;
    dfx_group_norm_forward(&t->norm, x, n, hw, hn, false);
    /* proj_in on every pixel: tok_i [hw, inner] = hn_i^T W^T + b */
    for (int64_t i = 0; i < n; i++) {
        float *ti = tok + i * hw * inner;
        for (int64_t r = 0; r < hw; r++)
            for (int64_t j = 0; j < inner; j++)
                ti[r * inner + j] = t->proj_in.b[j];
        dfx_ops_matmul(true, true, hw, inner, c, 1.0f, hn + i * c * hw, hw, t->proj_in.w, c, 1.0f, ti, inner);
    }
    for (int64_t d = 0; d < t->depth && !st; d++) {
        const sdu_block *b = &t->blocks[d];
        dfx_layer_norm_forward(&b->norm1, tok, rows, nrm);
        if ((st = attend(&b->attn1, t, tok, nrm, n, hw, nrm, hw, q, k, v, o, a)))
            break;
        dfx_layer_norm_forward(&b->norm2, tok, rows, nrm);
        if ((st = attend(&b->attn2, t, tok, nrm, n, hw, context, tokens, q, k, v, o, a)))
            break;
        dfx_layer_norm_forward(&b->norm3, tok, rows, nrm);
        feed_forward(b, t, tok, nrm, rows, hval, hgate);
    }
    /* proj_out back to channel-major, onto the residual: x_i [c, hw] +=
     * W tok_i^T + b */
    for (int64_t i = 0; i < n && !st; i++) {
        float *xi = x + i * c * hw;
        dfx_ops_matmul(false, true, c, hw, inner, 1.0f, t->proj_out.w, inner, tok + i * hw * inner, inner, 1.0f,
                       xi, hw);
        dfx_nn_add_channel(xi, t->proj_out.b, 1, c, hw);
    }
    dfx_arena_release(a, mark);
    return st;
}
