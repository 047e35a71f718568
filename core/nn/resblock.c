/* diffusers' ResnetBlock2D (models/resnet.py, the forward without up/down
 * sampling): norm1 -> SiLU -> conv1 -> (+ time_emb_proj(temb)) -> norm2
 * (scaled and shifted by the projection under "scale_shift") -> SiLU ->
 * conv2, plus the input (through conv_shortcut when the channels change),
 * over output_scale_factor. The additions ride on passes that happen anyway:
 * the time embedding joins conv1's bias, scale and shift join norm2's
 * affine, the shortcut or the input is the tile conv2 accumulates onto. */
#include <stdio.h>

#include "core/nn/internal.h"
#include "dfx/nn.h"

static const char *join(char *buf, size_t size, const char *prefix, const char *leaf)
{
    snprintf(buf, size, "%s%s%s", prefix, *prefix ? "." : "", leaf);
    return buf;
}

dfx_status dfx_resblock_load(dfx_resblock *r, dfx_weights *w, const char *prefix,
                             const dfx_resblock_params *p)
{
    if (!r || !p)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_resblock_load: NULL argument");
    *r = (dfx_resblock){0};
    if (p->cin <= 0 || p->cout <= 0 || p->temb < 0 || !(p->output_scale_factor != 0))
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "%s: resnet block '%s': invalid parameters (cin %lld, cout %lld, temb "
                             "%lld, output_scale_factor %g)",
                             dfx_weights_path(w), prefix, (long long)p->cin, (long long)p->cout,
                             (long long)p->temb, p->output_scale_factor);
    if (p->scale_shift && p->temb == 0)
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "%s: resnet block '%s': scale_shift needs a time embedding",
                             dfx_weights_path(w), prefix);
    r->cin = p->cin;
    r->cout = p->cout;
    r->scale_shift = p->scale_shift;
    r->output_scale_factor = p->output_scale_factor;
    char name[512];
    dfx_status st = dfx_group_norm_load(&r->norm1, w, join(name, sizeof name, prefix, "norm1"),
                                        p->groups, p->cin, p->eps);
    if (!st)
        st = dfx_conv2d_load(&r->conv1, w, join(name, sizeof name, prefix, "conv1"), p->cin,
                             p->cout, 3, 1, 1, true);
    if (!st && p->temb)
        st = dfx_linear_load(&r->time_proj, w, join(name, sizeof name, prefix, "time_emb_proj"),
                             p->temb, p->scale_shift ? 2 * p->cout : p->cout, true);
    if (!st)
        st = dfx_group_norm_load(&r->norm2, w, join(name, sizeof name, prefix, "norm2"), p->groups,
                                 p->cout, p->eps);
    if (!st)
        st = dfx_conv2d_load(&r->conv2, w, join(name, sizeof name, prefix, "conv2"), p->cout,
                             p->cout, 3, 1, 1, true);
    if (!st && p->cin != p->cout)
        st = dfx_conv2d_load(&r->shortcut, w, join(name, sizeof name, prefix, "conv_shortcut"),
                             p->cin, p->cout, 1, 1, 0, true);
    if (st)
        dfx_resblock_free(r);
    return st;
}

void dfx_resblock_free(dfx_resblock *r)
{
    if (!r)
        return;
    dfx_group_norm_free(&r->norm1);
    dfx_group_norm_free(&r->norm2);
    dfx_conv2d_free(&r->conv1);
    dfx_conv2d_free(&r->conv2);
    dfx_conv2d_free(&r->shortcut);
    dfx_linear_free(&r->time_proj);
}

dfx_status dfx_resblock_forward(const dfx_resblock *r, const float *x, const float *temb, int64_t n,
                                int64_t h, int64_t w, float *y, dfx_arena *a)
{
    if (r->scale_shift && !temb)
        return dfx_error_set(DFX_ERR_INVALID_ARG,
                             "resnet block: scale_shift needs the time embedding (temb is NULL)");
    const int64_t hw = h * w, cin = r->cin, cout = r->cout;
    const size_t mark = dfx_arena_mark(a);
    float *h1 = dfx_arena_alloc(a, (size_t)(n * cin * hw));
    float *h2 = h1 ? dfx_arena_alloc(a, (size_t)(n * cout * hw)) : NULL;
    float *tp = NULL;
    if (h2 && temb && r->time_proj.w)
        tp = dfx_arena_alloc(a, (size_t)(n * r->time_proj.out));
    if (!h2 || (temb && r->time_proj.w && !tp)) {
        dfx_arena_release(a, mark);
        return DFX_ERR_NO_MEMORY;
    }
    dfx_group_norm_forward(&r->norm1, x, n, hw, h1, true);
    if (tp)
        dfx_linear_forward(&r->time_proj, temb, n, tp);
    /* default: conv1(h) + temb[:, :, None, None], the projection as a
     * per-item bias of conv1 */
    dfx__conv_extra e1 = {!r->scale_shift ? tp : NULL, cout, NULL, false};
    dfx_status st = dfx__conv2d_forward_ex(&r->conv1, h1, n, h, w, h2, &e1, a);
    if (st) {
        dfx_arena_release(a, mark);
        return st;
    }
    if (r->scale_shift)
        /* torch.chunk(temb, 2, dim=1): scale is the first half */
        dfx__group_norm_modulated(&r->norm2, h2, n, hw, h2, true, tp, tp + cout, 2 * cout);
    else
        dfx_group_norm_forward(&r->norm2, h2, n, hw, h2, true);
    dfx__conv_extra e2 = {NULL, 0, NULL, false};
    if (r->shortcut.w) {
        st = dfx__conv2d_forward_ex(&r->shortcut, x, n, h, w, y, NULL, a);
        e2.accumulate = true;
    } else {
        e2.residual = x;
    }
    if (!st)
        st = dfx__conv2d_forward_ex(&r->conv2, h2, n, h, w, y, &e2, a);
    if (!st && r->output_scale_factor != 1.0) {
        const float osf = (float)r->output_scale_factor;
        const int64_t total = n * cout * hw;
#pragma omp parallel for if (DFX__NN_PAR(total)) schedule(static)
        for (int64_t i = 0; i < total; i++)
            y[i] = y[i] / osf;
    }
    dfx_arena_release(a, mark);
    return st;
}
