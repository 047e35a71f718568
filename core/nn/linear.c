/* dfx_linear: y = x W^T + b (torch.nn.Linear) as one sgemm. The bias is
 * written into y first and the product accumulated onto it (beta = 1):
 * OpenBLAS clears C in a separate pass for beta = 0, so this costs nothing
 * extra. */
#include <stdio.h>
#include <stdlib.h>

#include "core/nn/internal.h"
#include "dfx/nn.h"
#include "dfx/ops.h"

dfx_status dfx_linear_load_names(dfx_linear *l, dfx_weights *w, const char *const *weight_names,
                                 const char *const *bias_names, int64_t in, int64_t out)
{
    if (!l)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_linear_load: NULL layer");
    *l = (dfx_linear){in, out, NULL, NULL};
    const int64_t wshape[2] = {out, in}, wconv[4] = {out, in, 1, 1};
    /* a 1x1 convolution weight has the same element order */
    dfx_status st = dfx__weights_load_alt(w, weight_names, 2, wshape, 4, wconv, &l->w);
    if (!st && bias_names)
        st = dfx_weights_load_any(w, bias_names, 1, &out, &l->b);
    if (st)
        dfx_linear_free(l);
    return st;
}

/* "prefix.weight" / "prefix.bias" into buf (truncation only for absurd
 * prefixes, which then fail as missing tensors). */
static const char *join(char *buf, size_t size, const char *prefix, const char *leaf)
{
    snprintf(buf, size, "%s%s%s", prefix, *prefix ? "." : "", leaf);
    return buf;
}

dfx_status dfx_linear_load(dfx_linear *l, dfx_weights *w, const char *prefix, int64_t in,
                           int64_t out, bool bias)
{
    char wn[512], bn[512];
    const char *wnames[2] = {join(wn, sizeof wn, prefix, "weight"), NULL};
    const char *bnames[2] = {join(bn, sizeof bn, prefix, "bias"), NULL};
    return dfx_linear_load_names(l, w, wnames, bias ? bnames : NULL, in, out);
}

void dfx_linear_free(dfx_linear *l)
{
    if (!l)
        return;
    free(l->w);
    free(l->b);
    l->w = l->b = NULL;
}

void dfx__linear_apply(const dfx_linear *l, bool trans_x, const float *x, int64_t ldx,
                       int64_t rows, float *y, int64_t ldy)
{
    const int64_t out = l->out;
    if (rows <= 0)
        return;
    if (l->b) {
#pragma omp parallel for if (DFX__NN_PAR(rows * out)) schedule(static)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < out; j++)
                y[r * ldy + j] = l->b[j];
    }
    dfx_ops_matmul(trans_x, true, rows, out, l->in, 1.0f, x, ldx, l->w, l->in, l->b ? 1.0f : 0.0f, y,
                   ldy);
}

void dfx_linear_forward(const dfx_linear *l, const float *x, int64_t rows, float *y)
{
    dfx__linear_apply(l, false, x, l->in, rows, y, l->out);
}
