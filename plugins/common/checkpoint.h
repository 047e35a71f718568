/* Where a network's weights and config come from (a static helper of the
 * model plugins): a diffusers pipeline folder (model_index.json and one
 * folder per component), a component folder itself, or an original
 * single-file checkpoint, always presented as diffusers tensor names and a
 * diffusers (or transformers) config document. */
#ifndef DFX_PLUGINS_CHECKPOINT_H
#define DFX_PLUGINS_CHECKPOINT_H

#include <stdbool.h>

#include "dfx/json.h"
#include "dfx/nn.h"
#include "dfx/plugin.h"

typedef struct dfxp_checkpoint {
    dfx_weights *weights;     /* tensors under the component's diffusers names */
    dfx_json *config;         /* the component's config document */
    char *config_path;        /* names the config in messages */
    char *dir;                /* the component folder (NULL for a single file) */
    char *scheduler_config;   /* absolute path of the pipeline folder's
                                 scheduler/scheduler_config.json, or NULL */
    dfx_prediction prediction; /* what a single file's UNet predicts (its ldm
                                  yaml's parameterization, else as diffusers
                                  assumes: v for SD 2.x); AUTO otherwise */
} dfxp_checkpoint;

/* What a component is called and how its weights file is named in a
 * diffusers pipeline folder: {"unet", "diffusion_pytorch_model"},
 * {"vae", "diffusion_pytorch_model"}, {"text_encoder", "model"}; and
 * whether it is a Stable Diffusion component, which original single-file
 * checkpoints also hold. */
typedef struct dfxp_component_files {
    const char *folder;
    const char *stem;
    bool single_file;
} dfxp_component_files;

/* Opens the component `files` of the checkpoint at `path`. A folder is a
 * pipeline folder when it holds model_index.json (the component is
 * files->folder under it), else the component folder itself; its weights
 * are STEM[.VARIANT].safetensors, a sharded STEM[.VARIANT].safetensors
 * .index.json, or STEM[.VARIANT].bin. With random_weights the weights are
 * dfx_weights_open_random(seed 0) and only the config is read. Errors name
 * what was looked for and where. */
dfx_status dfxp_checkpoint_open(dfxp_checkpoint *ck, const char *path, const dfxp_component_files *files,
                                const char *variant, bool random_weights);
/* As dfxp_checkpoint_open; `path` may also be an original single-file
 * Stable Diffusion checkpoint (.safetensors, .ckpt: see single_file.h),
 * whose component is then presented the same way. `config` (a plugin's
 * config option, may be NULL) is for single files only: the ldm yaml that
 * describes the file (default: STEM.yaml beside it, when there is one), or
 * the component's config.json. */
dfx_status dfxp_checkpoint_open_config(dfxp_checkpoint *ck, const char *path, const char *config,
                                       const dfxp_component_files *files, const char *variant,
                                       bool random_weights);
void dfxp_checkpoint_close(dfxp_checkpoint *ck);

#endif
