/* Running dfx from an application: the plugin registry, pipelines (YAML files
 * with --set overrides), and interruption. */
#ifndef DFX_PIPELINE_H
#define DFX_PIPELINE_H

#include <stdbool.h>
#include <stdio.h>

#include "dfx/plugin.h"
#include "dfx/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- registry --------------------------------------------------------- */

typedef struct dfx_registry dfx_registry;

/* Scans plugin folders, in this order (the first plugin to provide a name
 * wins): `dirs`, each folder of $DFX_PLUGIN_PATH (colon-separated),
 * ./plugins, and the built-in folder. Each folder is searched for *.so files
 * and one level of subfolders. Plugins that fail a check are refused and
 * listed by dfx_registry_refusal(); that is not an error of this call. */
DFX_API dfx_status dfx_registry_create(dfx_registry **out, const char *const *dirs,
                                       size_t ndirs);
DFX_API void dfx_registry_destroy(dfx_registry *reg);

/* Loads one plugin file. On refusal returns DFX_ERR_PLUGIN or DFX_ERR_ABI
 * with the message "path: reason", which is also recorded as a refusal. */
DFX_API dfx_status dfx_registry_add(dfx_registry *reg, const char *path);

DFX_API size_t dfx_registry_refusal_count(const dfx_registry *reg);
DFX_API const char *dfx_registry_refusal(const dfx_registry *reg, size_t i);

/* Components of one kind sorted by name: writes up to max pointers into out
 * (out may be NULL) and returns how many there are. */
DFX_API size_t dfx_registry_list(const dfx_registry *reg, dfx_kind kind,
                                 const dfx_component **out, size_t max);
DFX_API const dfx_component *dfx_registry_find(const dfx_registry *reg,
                                               dfx_kind kind, const char *name);
/* The file a component came from, and its plugin's descriptor. */
DFX_API const char *dfx_registry_origin(const dfx_registry *reg,
                                        const dfx_component *c);
DFX_API const dfx_plugin *dfx_registry_plugin_of(const dfx_registry *reg,
                                                 const dfx_component *c);
/* The folder of the plugins that came with this libdfx. */
DFX_API const char *dfx_registry_builtin_dir(void);

/* Parses "scheduler", "sampler", "model". */
DFX_API bool dfx_kind_parse(const char *name, dfx_kind *out);

/* Prints the option table of a component as `dfx describe` shows it. */
DFX_API void dfx_component_describe(const dfx_component *c, FILE *out);

/* ---- single components ------------------------------------------------ */

/* One component instantiated outside a pipeline (a model to call directly,
 * say): `yaml` is its section as YAML text, "{type: unet2d, path: DIR}". */
typedef struct dfx_instance dfx_instance;

DFX_API dfx_status dfx_instance_create(dfx_instance **out, dfx_registry *reg, dfx_kind kind,
                                       const char *yaml, const char *origin);
DFX_API void dfx_instance_destroy(dfx_instance *inst);
DFX_API const dfx_component *dfx_instance_component(const dfx_instance *inst);
/* The component's private state, to pass to its ops. */
DFX_API void *dfx_instance_priv(dfx_instance *inst);

/* ---- pipelines -------------------------------------------------------- */

typedef struct dfx_pipeline dfx_pipeline;

/* Reads a pipeline file (YAML, schema `dfx: 1`). Syntax errors name
 * file:line:col; the content is validated by dfx_pipeline_resolve. */
DFX_API dfx_status dfx_pipeline_load(dfx_pipeline **out, const char *path);

/* The same from text; `origin` names it in messages. */
DFX_API dfx_status dfx_pipeline_parse(dfx_pipeline **out, const char *text,
                                      size_t len, const char *origin);

/* Applies one override "key.path=value"; the value is YAML ("0.5", "true",
 * "[1, 4, 8, 8]", "'text'"). Intermediate maps are created; whether the key
 * exists is checked by dfx_pipeline_resolve, which names the --set. */
DFX_API dfx_status dfx_pipeline_set(dfx_pipeline *p, const char *assignment);

/* Reads the pipeline that dfx stored in a PNG it wrote (the `dfx` text
 * chunk: the resolved pipeline, its paths absolute, set up to reproduce that
 * image). The file is read strictly: a file that is not a PNG, or is
 * corrupt or truncated, is refused with a message naming it; a PNG without
 * the chunk is DFX_ERR_NOT_FOUND, "IMAGE.png has no dfx pipeline in its
 * metadata (not made by dfx?)". Messages about the pipeline name
 * "IMAGE.png#dfx:line:col"; a relative path in it resolves against the
 * image's folder. */
DFX_API dfx_status dfx_pipeline_load_png(dfx_pipeline **out, const char *path);

/* The text of the scalar at "key.path" (as dfx_pipeline_set names keys) in
 * the pipeline as loaded and overridden; NULL when the key is absent, null
 * or not a scalar. Valid until the next dfx_pipeline_set or destroy. */
DFX_API const char *dfx_pipeline_get(const dfx_pipeline *p, const char *key);

/* Validates everything and instantiates the components from the registry
 * (which must outlive the pipeline). Errors name file:line:col or --set. */
DFX_API dfx_status dfx_pipeline_resolve(dfx_pipeline *p, dfx_registry *reg);

/* Writes the resolved pipeline as YAML, every default explicit, so that it
 * runs again as it is. Requires a resolved pipeline. */
DFX_API dfx_status dfx_pipeline_write_resolved(const dfx_pipeline *p, FILE *out);

typedef struct dfx_run_params {
    const char *trace_path;   /* safetensors file for the per-call trace, or NULL */
    FILE *progress;           /* where progress goes, or NULL for none */
    bool progress_tty;        /* redraw one line (a terminal) instead of staying quiet */
    bool resume;              /* a train pipeline continues from the checkpoint in output.path */
} dfx_run_params;

DFX_API void dfx_run_params_init(dfx_run_params *params);

/* Runs a resolved pipeline. Outputs are written atomically; on failure or
 * interruption (DFX_ERR_ABORTED) no output file is left behind. */
DFX_API dfx_status dfx_pipeline_run(dfx_pipeline *p, const dfx_run_params *params);

DFX_API void dfx_pipeline_destroy(dfx_pipeline *p);

/* Asks the running pipeline to stop at its next step. Async-signal-safe:
 * call it from a SIGINT handler. */
DFX_API void dfx_abort_request(void);
/* Clears a pending request. */
DFX_API void dfx_abort_reset(void);

/* ---- schedules -------------------------------------------------------- */

/* Plans the schedule of a resolved pipeline's scheduler for `steps` steps
 * (0 = the pipeline's own steps). Free with dfx_schedule_fini. */
DFX_API dfx_status dfx_pipeline_plan(const dfx_pipeline *p, int64_t steps,
                                     dfx_schedule *out);

#ifdef __cplusplus
}
#endif
#endif
