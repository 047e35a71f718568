/* Classifier-free guidance (Ho & Salimans 2022) as diffusers' pipelines
 * apply it: out = u + s (c - u) on the raw model outputs of the
 * unconditional and conditional halves, with the optional rescale of Lin et
 * al. 2023 ("Common Diffusion Noise Schedules and Sample Steps are Flawed",
 * section 3.4: guidance_rescale). A scale of 1 or less is no guidance at
 * all, as in diffusers: the conditional output alone. */
#include <math.h>
#include <string.h>

#include "dfx/plugin.h"

typedef struct cfg {
    double scale;
    double rescale;
} cfg;

static const dfx_option cfg_options[] = {
    DFX_OPTION_FLOAT("scale", offsetof(cfg, scale), 7.5, 0, 1000,
                     "guidance scale s (A1111's CFG scale): u + s (c - u); s <= 1: the conditional output "
                     "alone, as diffusers does"),
    DFX_OPTION_FLOAT("rescale", offsetof(cfg, rescale), 0, 0, 1,
                     "guidance_rescale phi: blend with the guided output rescaled to the conditional one's "
                     "standard deviation (Lin et al. 2023; 0.7 with zero-SNR v-prediction models)"),
    DFX_OPTION_END,
};

static bool cfg_needs_uncond(void *priv)
{
    const cfg *c = priv;
    return c->scale > 1;
}

static double cfg_scale(void *priv)
{
    const cfg *c = priv;
    return c->scale;
}

/* Unbiased standard deviation of x[0..n), as torch.std. */
static double stddev(const float *x, int64_t n)
{
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < n; i++)
        sum += x[i];
    const double mean = sum / (double)n;
    for (int64_t i = 0; i < n; i++)
        sq += (x[i] - mean) * (x[i] - mean);
    return n > 1 ? sqrt(sq / (double)(n - 1)) : 0;
}

static dfx_status cfg_guide(void *priv, dfx_guiding *g, const dfx_tensor *x, const dfx_level *lv, dfx_tensor *out)
{
    const cfg *c = priv;
    const dfx_tensor *u = NULL, *t;
    const int64_t n = dfx_tensor_numel(out);
    dfx_status st = dfx_guiding_model(g, x, lv, cfg_needs_uncond(priv) ? &u : NULL, &t);
    if (st)
        return st;
    const float *tc = t->data;
    float *o = out->data;
    if (!u) {
        memcpy(o, tc, (size_t)n * sizeof *o);
        return DFX_OK;
    }
    /* in float32, in diffusers' order: u + s * (c - u) */
    const float s = (float)c->scale, *uc = u->data;
    for (int64_t i = 0; i < n; i++)
        o[i] = uc[i] + s * (tc[i] - uc[i]);
    if (c->rescale > 0) {
        const int64_t batch = out->shape[0], per = n / batch;
        const float phi = (float)c->rescale, rest = (float)(1 - c->rescale);
        for (int64_t b = 0; b < batch; b++) {
            float *ob = o + b * per;
            const double sd_cfg = stddev(ob, per);
            if (!(sd_cfg > 0))
                continue; /* a constant output has nothing to rescale */
            const float k = (float)(stddev(tc + b * per, per) / sd_cfg);
            for (int64_t i = 0; i < per; i++)
                ob[i] = phi * (ob[i] * k) + rest * ob[i];
        }
    }
    return DFX_OK;
}

static const dfx_guidance_ops cfg_ops = {
    .guide = cfg_guide,
    .needs_uncond = cfg_needs_uncond,
    .scale = cfg_scale,
};

static const dfx_component cfg_component = {
    DFX_KIND_GUIDANCE, "cfg", "classifier-free guidance (diffusers' guidance_scale and guidance_rescale)",
    sizeof(cfg), cfg_options, NULL, NULL, &cfg_ops,
};

static const dfx_component *const components[] = {&cfg_component, NULL};

static const dfx_plugin plugin = {
    DFX_ABI_VERSION, sizeof(dfx_plugin), "cfg", "1.0", "MIT", components,
};

DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void)
{
    return &plugin;
}
