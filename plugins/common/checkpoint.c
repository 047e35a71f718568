#include "plugins/common/checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/common/config.h"
#include "plugins/common/single_file.h"

/* The weights file of a component folder: safetensors, a sharded set's
 * index, or a torch .bin, in diffusers' order of preference. */
static dfx_status find_weights(const char *dir, const char *stem, const char *variant, char **out)
{
    static const char *const exts[] = {".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json"};
    char name[512];
    *out = NULL;
    for (size_t i = 0; i < sizeof exts / sizeof *exts; i++) {
        snprintf(name, sizeof name, "%s%s%s%s", stem, variant ? "." : "", variant ? variant : "", exts[i]);
        char *p = dfxp_join(dir, name);
        if (!p)
            return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        if (dfxp_is_file(p)) {
            *out = p;
            return DFX_OK;
        }
        free(p);
    }
    snprintf(name, sizeof name, "%s%s%s.safetensors", stem, variant ? "." : "", variant ? variant : "");
    return dfx_error_set(DFX_ERR_NOT_FOUND, "%s/%s: not found (nor a sharded index or a .bin of that name)%s", dir,
                         name, variant ? "; check the variant option" : "");
}

/* An original single-file checkpoint's component. */
static dfx_status open_single_file(dfxp_checkpoint *ck, const char *path, const char *config,
                                   const dfxp_component_files *files, const char *variant, bool random_weights)
{
    if (variant)
        return dfx_error_set(DFX_ERR_CONFIG, "%s: a single-file checkpoint has no weights variants (variant "
                                             "'%s' names a diffusers folder's files)", path, variant);
    dfxp_single_file sf;
    dfx_status st = dfxp_single_file_open(&sf, path, config, files->folder, random_weights);
    if (st)
        return st;
    ck->weights = sf.weights;
    ck->config = sf.config;
    ck->config_path = sf.config_path;
    ck->prediction = sf.prediction;
    return DFX_OK;
}

dfx_status dfxp_checkpoint_open(dfxp_checkpoint *ck, const char *path, const dfxp_component_files *files,
                                const char *variant, bool random_weights)
{
    return dfxp_checkpoint_open_config(ck, path, NULL, files, variant, random_weights);
}

dfx_status dfxp_checkpoint_open_config(dfxp_checkpoint *ck, const char *path, const char *config,
                                       const dfxp_component_files *files, const char *variant,
                                       bool random_weights)
{
    dfx_status st = DFX_OK;
    char *weights = NULL;
    memset(ck, 0, sizeof *ck);
    if (!dfxp_is_dir(path)) {
        if (dfxp_is_file(path) && files->single_file)
            return open_single_file(ck, path, config, files, variant, random_weights);
        if (dfxp_is_file(path))
            return dfx_error_set(DFX_ERR_UNSUPPORTED, "%s: a single file; this model reads a diffusers folder "
                                                      "(with model_index.json and %s/, or the %s/ folder itself)",
                                 path, files->folder, files->folder);
        if (files->single_file)
            return dfx_error_set(DFX_ERR_NOT_FOUND, "%s: no such file or folder (give a diffusers pipeline folder, "
                                                    "its %s/, or a single-file checkpoint)", path, files->folder);
        return dfx_error_set(DFX_ERR_NOT_FOUND, "%s: no such folder (give a diffusers pipeline folder or its %s/)",
                             path, files->folder);
    }
    if (config)
        return dfx_error_set(DFX_ERR_CONFIG, "%s: a diffusers folder brings its own config; the config option "
                                             "('%s') is for single-file checkpoints", path, config);
    char *mi = dfxp_join(path, "model_index.json");
    if (!mi)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    const bool pipeline_dir = dfxp_is_file(mi);
    free(mi);
    ck->dir = pipeline_dir ? dfxp_join(path, files->folder) : strdup(path);
    if (!ck->dir)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    if (pipeline_dir) {
        if (!dfxp_is_dir(ck->dir)) {
            st = dfx_error_set(DFX_ERR_NOT_FOUND, "%s: the pipeline folder has no %s/ folder", path, files->folder);
            goto fail;
        }
        /* absolute, so the pipeline reads it from wherever it runs */
        char *rel = dfxp_join(path, "scheduler/scheduler_config.json");
        if (rel && dfxp_is_file(rel))
            ck->scheduler_config = realpath(rel, NULL);
        free(rel);
    }
    if (!(ck->config_path = dfxp_join(ck->dir, "config.json"))) {
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        goto fail;
    }
    if (!dfxp_is_file(ck->config_path)) {
        st = dfx_error_set(DFX_ERR_NOT_FOUND, "%s: not found (a diffusers %s folder has config.json)",
                           ck->config_path, files->folder);
        goto fail;
    }
    if ((st = dfx_json_parse_file(ck->config_path, &ck->config)))
        goto fail;
    if (dfx_json_type_of(ck->config) != DFX_JSON_OBJECT) {
        st = dfx_error_set(DFX_ERR_FORMAT, "%s: expected an object of config fields", ck->config_path);
        goto fail;
    }
    if (random_weights)
        st = dfx_weights_open_random(&ck->weights, 0);
    else if (!(st = find_weights(ck->dir, files->stem, variant, &weights)))
        st = dfx_weights_open(&ck->weights, weights);
    free(weights);
    if (st)
        goto fail;
    return DFX_OK;
fail:
    dfxp_checkpoint_close(ck);
    return st;
}

void dfxp_checkpoint_close(dfxp_checkpoint *ck)
{
    dfx_weights_close(ck->weights);
    dfx_json_destroy(ck->config);
    free(ck->config_path);
    free(ck->dir);
    free(ck->scheduler_config);
    memset(ck, 0, sizeof *ck);
}
