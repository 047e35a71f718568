/* Original single-file Stable Diffusion checkpoints (CompVis/ldm SD 1.x,
 * Stability SD 2.x; .safetensors or torch .ckpt) seen as one diffusers
 * component: the tensors under the component's prefix are aliased to their
 * diffusers names (dfx_weights_alias) and the component's diffusers /
 * transformers config document is inferred from their shapes, with what an
 * ldm config yaml states taking precedence. A static helper of
 * plugins/common/checkpoint.c. */
#ifndef DFX_PLUGINS_SINGLE_FILE_H
#define DFX_PLUGINS_SINGLE_FILE_H

#include <stdbool.h>

#include "dfx/json.h"
#include "dfx/nn.h"
#include "dfx/plugin.h"

/* What one component of a single file gives a plugin. */
typedef struct dfxp_single_file {
    dfx_weights *weights;      /* aliased: answers to diffusers names only */
    dfx_json *config;          /* the inferred config document */
    char *config_path;         /* "FILE (unet config inferred from its tensors[ and YAML])" */
    dfx_prediction prediction; /* the UNet's (the yaml's parameterization, else
                                  v for SD 2.x as diffusers assumes); AUTO for the
                                  other components */
} dfxp_single_file;

/* Opens component `folder` ("unet", "vae" or "text_encoder", the diffusers
 * folder names) of the single file at `path`. `config` is an ldm yaml
 * (.yaml/.yml), or a diffusers/transformers config.json for the component
 * (.json, then used as it is instead of the inferred one), or NULL: then
 * STEM.yaml beside the file is read when it exists. With random_weights
 * the file's shapes still give the config, and the weights are
 * dfx_weights_open_random(seed 0). A tensor under the component's prefix
 * that has no place in the diffusers layout fails (naming it); tensors a
 * real file may carry but no model reads (position_ids, the last OpenCLIP
 * resblock, text_projection, logit_scale, ...) are skipped. */
dfx_status dfxp_single_file_open(dfxp_single_file *sf, const char *path, const char *config, const char *folder,
                                 bool random_weights);
void dfxp_single_file_close(dfxp_single_file *sf);

#endif
