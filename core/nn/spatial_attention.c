/* diffusers' Attention with AttnProcessor on image features
 * (models/attention_processor.py), as UNet2DModel's attention blocks and the
 * VAE mid-block use it: group norm over [B, C, HW], tokens [HW, C], q/k/v
 * projections, multi-head attention with scale dim_head^-0.5, the output
 * projection, the residual, division by rescale_output_factor. Per item, the
 * projections read the channel-major features transposed inside sgemm, and
 * the output projection is accumulated onto x transposed back the same way,
 * so no transposed copy of the features is ever made. */
#include <math.h>
#include <stdio.h>

#include "core/nn/internal.h"
#include "dfx/nn.h"
#include "dfx/ops.h"

/* name lists for a projection: the current spelling first, the pre-0.14 one
 * (diffusers' AttentionBlock) second */
typedef struct names {
    char buf[4][512];
    const char *weight[3], *bias[3];
} names;

static void projection_names(names *nm, const char *prefix, const char *now, const char *old)
{
    const char *dot = *prefix ? "." : "";
    snprintf(nm->buf[0], sizeof nm->buf[0], "%s%s%s.weight", prefix, dot, now);
    snprintf(nm->buf[1], sizeof nm->buf[1], "%s%s%s.weight", prefix, dot, old);
    snprintf(nm->buf[2], sizeof nm->buf[2], "%s%s%s.bias", prefix, dot, now);
    snprintf(nm->buf[3], sizeof nm->buf[3], "%s%s%s.bias", prefix, dot, old);
    nm->weight[0] = nm->buf[0];
    nm->weight[1] = nm->buf[1];
    nm->weight[2] = NULL;
    nm->bias[0] = nm->buf[2];
    nm->bias[1] = nm->buf[3];
    nm->bias[2] = NULL;
}

dfx_status dfx_spatial_attention_load(dfx_spatial_attention *s, dfx_weights *w, const char *prefix,
                                      int64_t channels, int64_t heads, int64_t groups, double eps,
                                      double rescale)
{
    if (!s)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_spatial_attention_load: NULL layer");
    *s = (dfx_spatial_attention){0};
    if (channels <= 0 || heads <= 0 || channels % heads != 0 || groups < 0 || !(rescale != 0))
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "%s: attention '%s': invalid parameters (%lld channels, %lld heads, "
                             "%lld groups, rescale %g)",
                             dfx_weights_path(w), prefix, (long long)channels, (long long)heads,
                             (long long)groups, rescale);
    s->channels = channels;
    s->heads = heads;
    s->rescale = rescale;
    dfx_status st = DFX_OK;
    if (groups) {
        char name[512];
        snprintf(name, sizeof name, "%s%sgroup_norm", prefix, *prefix ? "." : "");
        st = dfx_group_norm_load(&s->norm, w, name, groups, channels, eps);
    }
    static const char *const spell[4][2] = {
        {"to_q", "query"}, {"to_k", "key"}, {"to_v", "value"}, {"to_out.0", "proj_attn"}};
    dfx_linear *proj[4] = {&s->q, &s->k, &s->v, &s->out};
    for (int i = 0; i < 4 && !st; i++) {
        names nm;
        projection_names(&nm, prefix, spell[i][0], spell[i][1]);
        st = dfx_linear_load_names(proj[i], w, nm.weight, nm.bias, channels, channels);
    }
    if (st)
        dfx_spatial_attention_free(s);
    return st;
}

void dfx_spatial_attention_free(dfx_spatial_attention *s)
{
    if (!s)
        return;
    dfx_group_norm_free(&s->norm);
    dfx_linear_free(&s->q);
    dfx_linear_free(&s->k);
    dfx_linear_free(&s->v);
    dfx_linear_free(&s->out);
}

dfx_status dfx_spatial_attention_forward(const dfx_spatial_attention *s, float *x, int64_t n,
                                         int64_t h, int64_t w, dfx_arena *a)
{
    const int64_t c = s->channels, hw = h * w, dh = c / s->heads;
    /* Attention.scale = dim_head**-0.5 in Python, rounded to float by baddbmm */
    const float scale = (float)pow((double)dh, -0.5);
    const size_t mark = dfx_arena_mark(a);
    float *hn = s->norm.gamma ? dfx_arena_alloc(a, (size_t)(c * hw)) : NULL;
    float *qkv = dfx_arena_alloc(a, (size_t)(3 * c * hw));
    float *o = qkv ? dfx_arena_alloc(a, (size_t)(c * hw)) : NULL;
    if (!o || (s->norm.gamma && !hn)) {
        dfx_arena_release(a, mark);
        return DFX_ERR_NO_MEMORY;
    }
    dfx_status st = DFX_OK;
    const float rescale = (float)s->rescale;
    for (int64_t i = 0; i < n && !st; i++) {
        float *xi = x + i * c * hw;
        const float *src = xi;
        if (hn) {
            dfx_group_norm_forward(&s->norm, xi, 1, hw, hn, false);
            src = hn;
        }
        /* Q, K, V side by side in one [hw, 3c] buffer */
        dfx__linear_apply(&s->q, true, src, hw, hw, qkv, 3 * c);
        dfx__linear_apply(&s->k, true, src, hw, hw, qkv + c, 3 * c);
        dfx__linear_apply(&s->v, true, src, hw, hw, qkv + 2 * c, 3 * c);
        st = dfx_nn_attention(qkv, 3 * c, qkv + c, 3 * c, qkv + 2 * c, 3 * c, 1, s->heads, hw, hw,
                              dh, scale, o, c, a);
        if (st)
            break;
        /* x [c, hw] += W_out O^T: the output projection lands transposed,
         * onto the residual */
        dfx_ops_matmul(false, true, c, hw, c, 1.0f, s->out.w, c, o, c, 1.0f, xi, hw);
        const float *b = s->out.b;
#pragma omp parallel for if (DFX__NN_PAR(c * hw)) schedule(static)
        for (int64_t ch = 0; ch < c; ch++) {
            float *row = xi + ch * hw;
            const float add = b ? b[ch] : 0.0f;
            if (rescale != 1.0f)
                for (int64_t j = 0; j < hw; j++)
                    row[j] = (row[j] + add) / rescale;
            else
                for (int64_t j = 0; j < hw; j++)
                    row[j] += add;
        }
    }
    dfx_arena_release(a, mark);
    return st;
}
