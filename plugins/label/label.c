/* Class labels as conditioning: for class-conditional models (the gmm's
 * components, ADM's ImageNet classes). The unconditional half that
 * classifier-free guidance asks for is the null label. */
#include <stdlib.h>
#include <string.h>

#include "dfx/plugin.h"

typedef struct label {
    dfx_ints labels;
    int64_t null_label;
} label;

static const dfx_option label_options[] = {
    DFX_OPTION_INTS("labels", offsetof(label, labels), -1, 1e9,
                    "class labels: one for the whole batch, or one per batch item"),
    DFX_OPTION_INT("null_label", offsetof(label, null_label), -1, -1, 1e9,
                   "the label that means no class (the unconditional half of guidance): -1 for the gmm, "
                   "the class count for models trained with label dropout"),
    DFX_OPTION_END,
};

static dfx_status label_init(void *priv)
{
    const label *l = priv;
    if (l->labels.n == 0)
        return dfx_error_set(DFX_ERR_CONFIG, "label: give the class labels (e.g. labels: [3])");
    return DFX_OK;
}

static dfx_status fill(int64_t **out, int64_t batch, const int64_t *v, int64_t n)
{
    if (!(*out = malloc((size_t)batch * sizeof **out)))
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    for (int64_t i = 0; i < batch; i++)
        (*out)[i] = v[n == 1 ? 0 : i];
    return DFX_OK;
}

static dfx_status label_encode(void *priv, int64_t batch, bool uncond, dfx_conditioning *out)
{
    const label *l = priv;
    if (l->labels.n != 1 && l->labels.n != batch)
        return dfx_error_set(DFX_ERR_CONFIG, "label: %lld labels for a batch of %lld (give one, or one per item)",
                             (long long)l->labels.n, (long long)batch);
    dfx_status st = fill(&out->labels, batch, l->labels.v, l->labels.n);
    if (!st && uncond)
        st = fill(&out->uncond_labels, batch, &l->null_label, 1);
    return st;
}

static const dfx_conditioner_ops label_ops = {
    .encode = label_encode,
};

static const dfx_component label_component = {
    DFX_KIND_CONDITIONER, "label", "class labels (class-conditional models; the null label for guidance)",
    sizeof(label), label_options, label_init, NULL, &label_ops,
};

static const dfx_component *const components[] = {&label_component, NULL};

static const dfx_plugin plugin = {
    DFX_ABI_VERSION, sizeof(dfx_plugin), "label", "1.0", "MIT", components,
};

DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void)
{
    return &plugin;
}
