/* The nn layers on a tape: their weights registered as parameters under
 * the names their load functions read, and their forward passes built from
 * the tape's operations with the inference code's arithmetic. */
#include <math.h>
#include <stdio.h>

#include "core/grad/internal.h"

static const char *join(char *buf, size_t size, const char *prefix, const char *leaf)
{
    snprintf(buf, size, "%s%s%s", prefix, *prefix ? "." : "", leaf);
    return buf;
}

static dfx_status add_vector(dfx_params *p, const char *prefix, const char *leaf, float *data,
                             int64_t n)
{
    if (!data)
        return DFX_OK;
    char name[512];
    return dfx_params_add(p, join(name, sizeof name, prefix, leaf), data, 1, &n);
}

dfx_status dfx_params_add_linear(dfx_params *p, const char *prefix, dfx_linear *l)
{
    char name[512];
    const int64_t shape[2] = {l->out, l->in};
    dfx_status st = dfx_params_add(p, join(name, sizeof name, prefix, "weight"), l->w, 2, shape);
    return st ? st : add_vector(p, prefix, "bias", l->b, l->out);
}

dfx_status dfx_params_add_conv2d(dfx_params *p, const char *prefix, dfx_conv2d *c)
{
    char name[512];
    const int64_t shape[4] = {c->cout, c->cin, c->k, c->k};
    dfx_status st = dfx_params_add(p, join(name, sizeof name, prefix, "weight"), c->w, 4, shape);
    return st ? st : add_vector(p, prefix, "bias", c->b, c->cout);
}

dfx_status dfx_params_add_group_norm(dfx_params *p, const char *prefix, dfx_group_norm *g)
{
    dfx_status st = add_vector(p, prefix, "weight", g->gamma, g->channels);
    return st ? st : add_vector(p, prefix, "bias", g->beta, g->channels);
}

dfx_status dfx_params_add_resblock(dfx_params *p, const char *prefix, dfx_resblock *r)
{
    char name[512];
    dfx_status st = dfx_params_add_group_norm(p, join(name, sizeof name, prefix, "norm1"),
                                              &r->norm1);
    if (!st)
        st = dfx_params_add_conv2d(p, join(name, sizeof name, prefix, "conv1"), &r->conv1);
    if (!st && r->time_proj.w)
        st = dfx_params_add_linear(p, join(name, sizeof name, prefix, "time_emb_proj"),
                                   &r->time_proj);
    if (!st)
        st = dfx_params_add_group_norm(p, join(name, sizeof name, prefix, "norm2"), &r->norm2);
    if (!st)
        st = dfx_params_add_conv2d(p, join(name, sizeof name, prefix, "conv2"), &r->conv2);
    if (!st && r->shortcut.w)
        st = dfx_params_add_conv2d(p, join(name, sizeof name, prefix, "conv_shortcut"),
                                   &r->shortcut);
    return st;
}

dfx_status dfx_params_add_spatial_attention(dfx_params *p, const char *prefix,
                                            dfx_spatial_attention *s)
{
    char name[512];
    dfx_status st = DFX_OK;
    if (s->norm.gamma)
        st = dfx_params_add_group_norm(p, join(name, sizeof name, prefix, "group_norm"), &s->norm);
    if (!st)
        st = dfx_params_add_linear(p, join(name, sizeof name, prefix, "to_q"), &s->q);
    if (!st)
        st = dfx_params_add_linear(p, join(name, sizeof name, prefix, "to_k"), &s->k);
    if (!st)
        st = dfx_params_add_linear(p, join(name, sizeof name, prefix, "to_v"), &s->v);
    if (!st)
        st = dfx_params_add_linear(p, join(name, sizeof name, prefix, "to_out.0"), &s->out);
    return st;
}

static dfx_var *vector(dfx_tape *t, const dfx_params *p, float *data, int64_t n)
{
    return dfx_tape_weight(t, p, data, 1, &n);
}

dfx_var *dfx_g_linear_layer(dfx_tape *t, const dfx_params *p, const dfx_linear *l, dfx_var *x)
{
    const int64_t shape[2] = {l->out, l->in};
    dfx_var *w = dfx_tape_weight(t, p, l->w, 2, shape);
    return dfx_g_linear(t, x, w, l->b ? vector(t, p, l->b, l->out) : NULL);
}

dfx_var *dfx_g_conv2d_layer(dfx_tape *t, const dfx_params *p, const dfx_conv2d *c, dfx_var *x)
{
    const int64_t shape[4] = {c->cout, c->cin, c->k, c->k};
    const int64_t pad[4] = {c->pad_top, c->pad_left, c->pad_bottom, c->pad_right};
    dfx_var *w = dfx_tape_weight(t, p, c->w, 4, shape);
    return dfx_g_conv2d(t, x, w, c->b ? vector(t, p, c->b, c->cout) : NULL, c->stride, pad);
}

dfx_var *dfx_g_group_norm_layer(dfx_tape *t, const dfx_params *p, const dfx_group_norm *g,
                                dfx_var *x)
{
    return dfx_g_group_norm(t, x, vector(t, p, g->gamma, g->channels),
                            vector(t, p, g->beta, g->channels), g->groups, g->eps);
}

dfx_var *dfx_g_resblock(dfx_tape *t, const dfx_params *p, const dfx_resblock *r, dfx_var *x,
                        dfx_var *temb)
{
    if (r->scale_shift)
        return dfx__tape_fail(t, DFX_ERR_UNSUPPORTED,
                              "tape: a resnet block with the scale_shift time embedding cannot be "
                              "trained yet");
    dfx_var *h = dfx_g_unary_op(t, DFX_G_SILU, dfx_g_group_norm_layer(t, p, &r->norm1, x));
    h = dfx_g_conv2d_layer(t, p, &r->conv1, h);
    if (temb && r->time_proj.w)
        h = dfx_g_add_channel(t, h, dfx_g_linear_layer(t, p, &r->time_proj, temb));
    h = dfx_g_unary_op(t, DFX_G_SILU, dfx_g_group_norm_layer(t, p, &r->norm2, h));
    h = dfx_g_conv2d_layer(t, p, &r->conv2, h);
    dfx_var *skip = r->shortcut.w ? dfx_g_conv2d_layer(t, p, &r->shortcut, x) : x;
    h = dfx_g_add(t, h, skip);
    return r->output_scale_factor != 1.0 ? dfx_g_scale(t, h, 1.0 / r->output_scale_factor) : h;
}

dfx_var *dfx_g_spatial_attention(dfx_tape *t, const dfx_params *p, const dfx_spatial_attention *s,
                                 dfx_var *x)
{
    if (!x)
        return NULL;
    if (x->ndim != 4)
        return dfx__tape_fail(t, DFX_ERR_INVALID_ARG, "tape: spatial attention needs [n, c, h, w]");
    const int64_t n = x->shape[0], c = x->shape[1], hw = x->shape[2] * x->shape[3];
    const int64_t flat[3] = {n, c, hw};
    dfx_var *h = s->norm.gamma ? dfx_g_group_norm_layer(t, p, &s->norm, x) : x;
    h = dfx_g_transpose12(t, dfx_g_reshape(t, h, 3, flat));
    dfx_var *q = dfx_g_linear_layer(t, p, &s->q, h);
    dfx_var *k = dfx_g_linear_layer(t, p, &s->k, h);
    dfx_var *v = dfx_g_linear_layer(t, p, &s->v, h);
    /* the inference scale: dim_head^-0.5 rounded to float */
    const float scale = (float)pow((double)(c / s->heads), -0.5);
    h = dfx_g_attention(t, q, k, v, s->heads, scale, false);
    h = dfx_g_transpose12(t, dfx_g_linear_layer(t, p, &s->out, h));
    h = dfx_g_add(t, dfx_g_reshape(t, h, 4, x->shape), x);
    return s->rescale != 1.0 ? dfx_g_scale(t, h, 1.0 / s->rescale) : h;
}
