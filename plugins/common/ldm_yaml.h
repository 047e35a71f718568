/* The parts of an ldm (CompVis / Stability) model config that a
 * single-file checkpoint's tensors cannot say: head counts, the
 * cross-attention width, linear projections, the parameterization (eps or
 * v), the latent scale factor, and which text encoder and layer. */
#ifndef DFX_PLUGINS_LDM_YAML_H
#define DFX_PLUGINS_LDM_YAML_H

#include <stddef.h>
#include <stdint.h>

#include "dfx/status.h"

/* -1, 0, NAN or "" where the config says nothing. */
typedef struct dfxp_ldm_yaml {
    int64_t num_heads, num_head_channels, context_dim, transformer_depth;
    int linear;               /* use_linear_in_transformer: -1 unsaid */
    char parameterization[16];
    double scale_factor;
    char cond_target[128];
    char cond_layer[32];
} dfxp_ldm_yaml;

void dfxp_ldm_yaml_defaults(dfxp_ldm_yaml *y);
/* Reads file; errors name file:line:col and the key. */
dfx_status dfxp_ldm_yaml_read(const char *file, dfxp_ldm_yaml *y);
/* The same from memory; `name` stands for the file in messages (the fuzzer
 * calls it directly). */
dfx_status dfxp_ldm_yaml_parse(const char *name, const void *text, size_t len, dfxp_ldm_yaml *y);

#endif
