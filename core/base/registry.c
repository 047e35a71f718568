/* The plugin registry: scans plugin folders, dlopens each .so, checks its
 * descriptor (ABI first, then struct size, name == file name, required ops,
 * option tables, unique component names) and indexes components by kind and
 * name. A plugin that fails a check is refused with "path: reason"; it never
 * takes the process down. */
#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/base/options.h"
#include "core/internal.h"
#include "dfx/dfx.h"
#include "dfx_config.h"
#include "dfx_core_paths.h"

typedef struct plugin_entry {
    char *path;
    char *real;
    void *handle;
    const dfx_plugin *desc;
} plugin_entry;

typedef struct comp_entry {
    const dfx_component *comp;
    size_t plugin;
} comp_entry;

struct dfx_registry {
    plugin_entry *plugins;
    size_t nplugins, cap_plugins;
    comp_entry *comps;
    size_t ncomps, cap_comps;
    char **refusals;
    size_t nrefusals, cap_refusals;
};

const char *dfx_kind_name(dfx_kind kind)
{
    switch (kind) {
    case DFX_KIND_SCHEDULER: return "scheduler";
    case DFX_KIND_SAMPLER: return "sampler";
    case DFX_KIND_MODEL: return "model";
    case DFX_KIND_CONDITIONER: return "conditioner";
    case DFX_KIND_GUIDANCE: return "guidance";
    case DFX_KIND_CODEC: return "codec";
    }
    return NULL;
}

bool dfx_kind_parse(const char *name, dfx_kind *out)
{
    for (int k = DFX_KIND_SCHEDULER; k <= DFX_KIND_CODEC; k++) {
        if (strcmp(name, dfx_kind_name((dfx_kind)k)) == 0) {
            *out = (dfx_kind)k;
            return true;
        }
    }
    return false;
}

/* any object inside libdfx, to ask the dynamic linker where libdfx is */
static const char self_marker;

static char builtin_dir[PATH_MAX];
static pthread_once_t builtin_dir_once = PTHREAD_ONCE_INIT;

/* The built-in plugins are found relative to the libdfx that is running, not
 * at a path fixed at compile time: libdfx in its build folder uses the build
 * tree's plugins; any other copy uses <its folder>/dfx/plugins, which is where
 * `meson install` puts them (plugin_install_dir = <libdir>/dfx/plugins). An
 * installed tree thus keeps its plugins when it is staged under a DESTDIR,
 * packaged, or moved to another prefix, and never picks up the plugins of
 * another dfx installed at the configured prefix. The compile-time
 * DFX_PLUGIN_INSTALL_DIR is only the fallback for when the dynamic linker
 * cannot say where libdfx is. */
static void find_builtin_dir(void)
{
    Dl_info info;
    char lib[PATH_MAX], build[PATH_MAX];
    snprintf(builtin_dir, sizeof builtin_dir, "%s", DFX_PLUGIN_INSTALL_DIR);
    if (!dladdr(&self_marker, &info) || !info.dli_fname || !realpath(info.dli_fname, lib))
        return;
    char *slash = strrchr(lib, '/');
    if (!slash)
        return;
    *slash = '\0'; /* lib is now libdfx's folder, symbolic links resolved */
    if (realpath(DFX_LIB_BUILD_DIR, build) && strcmp(lib, build) == 0) {
        snprintf(builtin_dir, sizeof builtin_dir, "%s", DFX_PLUGIN_BUILD_DIR);
    } else {
        int n = snprintf(builtin_dir, sizeof builtin_dir, "%s/%s", lib, DFX_PLUGIN_LIBDIR_SUBDIR);
        if (n < 0 || (size_t)n >= sizeof builtin_dir)
            snprintf(builtin_dir, sizeof builtin_dir, "%s", DFX_PLUGIN_INSTALL_DIR);
    }
}

const char *dfx_registry_builtin_dir(void)
{
    pthread_once(&builtin_dir_once, find_builtin_dir);
    return builtin_dir;
}

static dfx_status refuse(dfx_registry *reg, dfx_status st, const char *path)
{
    dfx_error_prefix(st, "%s: ", path);
    if (reg->nrefusals == reg->cap_refusals) {
        size_t cap = reg->cap_refusals ? 2 * reg->cap_refusals : 8;
        char **r = realloc(reg->refusals, cap * sizeof *r);
        if (!r)
            return st;
        reg->refusals = r;
        reg->cap_refusals = cap;
    }
    char *msg = strdup(dfx_error_message());
    if (msg)
        reg->refusals[reg->nrefusals++] = msg;
    return st;
}

static bool is_identifier(const char *s)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
              (p != s && *p >= '0' && *p <= '9')))
            return false;
    return true;
}

static dfx_status check_ops(const dfx_component *c)
{
    const char *kind = dfx_kind_name(c->kind);
    if (!c->ops)
        return dfx_error_set(DFX_ERR_PLUGIN, "%s '%s': ops is NULL (required)", kind, c->name);
    switch (c->kind) {
    case DFX_KIND_SCHEDULER:
        if (!((const dfx_scheduler_ops *)c->ops)->plan)
            return dfx_error_set(DFX_ERR_PLUGIN, "scheduler '%s': ops.plan is NULL (required)", c->name);
        break;
    case DFX_KIND_SAMPLER:
        if (!((const dfx_sampler_ops *)c->ops)->sample)
            return dfx_error_set(DFX_ERR_PLUGIN, "sampler '%s': ops.sample is NULL (required)", c->name);
        break;
    case DFX_KIND_MODEL: {
        const dfx_model_ops *m = c->ops;
        if (!m->info)
            return dfx_error_set(DFX_ERR_PLUGIN, "model '%s': ops.info is NULL (required)", c->name);
        if (!m->predict)
            return dfx_error_set(DFX_ERR_PLUGIN, "model '%s': ops.predict is NULL (required)", c->name);
        const int train = !!m->train_params + !!m->train_forward + !!m->params_changed + !!m->save_config;
        if (train != 0 && train != 4)
            return dfx_error_set(DFX_ERR_PLUGIN,
                                 "model '%s': has %d of the 4 training ops (train_params, train_forward, "
                                 "params_changed, save_config): all or none", c->name, train);
        break;
    }
    case DFX_KIND_CONDITIONER:
        if (!((const dfx_conditioner_ops *)c->ops)->encode)
            return dfx_error_set(DFX_ERR_PLUGIN, "conditioner '%s': ops.encode is NULL (required)", c->name);
        break;
    case DFX_KIND_GUIDANCE:
        if (!((const dfx_guidance_ops *)c->ops)->guide)
            return dfx_error_set(DFX_ERR_PLUGIN, "guidance '%s': ops.guide is NULL (required)", c->name);
        break;
    case DFX_KIND_CODEC: {
        const dfx_codec_ops *k = c->ops;
        if (!k->info)
            return dfx_error_set(DFX_ERR_PLUGIN, "codec '%s': ops.info is NULL (required)", c->name);
        if (!k->decode)
            return dfx_error_set(DFX_ERR_PLUGIN, "codec '%s': ops.decode is NULL (required)", c->name);
        break;
    }
    }
    return DFX_OK;
}

/* Keys the core reads from a component's section itself; an option of the
 * same name would never be set. */
static dfx_status check_core_keys(const dfx_component *c)
{
    static const char *const common[] = {"type", NULL};
    static const char *const scheduler[] = {"type", "config", "steps", NULL};
    static const char *const model[] = {"type", "prediction", NULL};
    const char *const *keys = c->kind == DFX_KIND_SCHEDULER ? scheduler : c->kind == DFX_KIND_MODEL ? model : common;
    for (const dfx_option *o = c->options; o && o->name; o++)
        for (const char *const *k = keys; *k; k++)
            if (strcmp(o->name, *k) == 0)
                return dfx_error_set(DFX_ERR_PLUGIN, "%s '%s': option '%s' is a key the core reads itself; "
                                                     "rename it", dfx_kind_name(c->kind), c->name, o->name);
    return DFX_OK;
}

static const comp_entry *find_entry(const dfx_registry *reg, dfx_kind kind, const char *name)
{
    for (size_t i = 0; i < reg->ncomps; i++)
        if (reg->comps[i].comp->kind == kind && strcmp(reg->comps[i].comp->name, name) == 0)
            return &reg->comps[i];
    return NULL;
}

/* Every check on the descriptor, in the order that keeps each one safe: the
 * ABI version is read before any field whose layout it governs. */
static dfx_status check_descriptor(const dfx_registry *reg, const dfx_plugin *d,
                                   const char *path)
{
    if (d->abi_version != DFX_ABI_VERSION)
        return dfx_error_set(DFX_ERR_ABI,
                             "built for dfx plugin ABI %u, but this dfx has ABI %u: rebuild the plugin against this dfx",
                             d->abi_version, DFX_ABI_VERSION);
    if (d->struct_size != sizeof(dfx_plugin))
        return dfx_error_set(DFX_ERR_ABI,
                             "descriptor struct_size is %u, but ABI %u's dfx_plugin has %zu bytes: rebuild the plugin against this dfx",
                             d->struct_size, DFX_ABI_VERSION, sizeof(dfx_plugin));
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t blen = strlen(base);
    if (blen > 3 && strcmp(base + blen - 3, ".so") == 0)
        blen -= 3;
    if (!d->name || strlen(d->name) != blen || strncmp(d->name, base, blen) != 0)
        return dfx_error_set(DFX_ERR_PLUGIN,
                             "the plugin calls itself '%s' but its file is '%s': the names must match",
                             d->name ? d->name : "(null)", base);
    if (!d->components || !d->components[0])
        return dfx_error_set(DFX_ERR_PLUGIN, "plugin '%s' provides no components", d->name);
    for (size_t i = 0; d->components[i]; i++) {
        const dfx_component *c = d->components[i];
        const char *kind = dfx_kind_name(c->kind);
        dfx_status st;
        if (!kind)
            return dfx_error_set(DFX_ERR_PLUGIN, "component %zu has unknown kind %d", i, (int)c->kind);
        if (!is_identifier(c->name))
            return dfx_error_set(DFX_ERR_PLUGIN, "%s component %zu: name '%s' is not an identifier",
                                 kind, i, c->name ? c->name : "(null)");
        if (!c->summary)
            return dfx_error_set(DFX_ERR_PLUGIN, "%s '%s': summary is NULL", kind, c->name);
        if ((st = check_ops(c)))
            return st;
        if ((st = dfx__options_check_table(c->options, c->priv_size)))
            return dfx_error_prefix(st, "%s '%s': ", kind, c->name);
        if ((st = check_core_keys(c)))
            return st;
        for (size_t j = 0; j < i; j++)
            if (d->components[j]->kind == c->kind && strcmp(d->components[j]->name, c->name) == 0)
                return dfx_error_set(DFX_ERR_PLUGIN, "%s '%s' is declared twice", kind, c->name);
        const comp_entry *dup = find_entry(reg, c->kind, c->name);
        if (dup)
            return dfx_error_set(DFX_ERR_PLUGIN, "%s '%s' is already provided by %s", kind, c->name,
                                 reg->plugins[dup->plugin].path);
    }
    return DFX_OK;
}

static int grow_arrays(dfx_registry *reg, size_t ncomp_more)
{
    if (reg->nplugins == reg->cap_plugins) {
        size_t cap = reg->cap_plugins ? 2 * reg->cap_plugins : 16;
        plugin_entry *p = realloc(reg->plugins, cap * sizeof *p);
        if (!p)
            return -1;
        reg->plugins = p;
        reg->cap_plugins = cap;
    }
    while (reg->ncomps + ncomp_more > reg->cap_comps) {
        size_t cap = reg->cap_comps ? 2 * reg->cap_comps : 32;
        comp_entry *c = realloc(reg->comps, cap * sizeof *c);
        if (!c)
            return -1;
        reg->comps = c;
        reg->cap_comps = cap;
    }
    return 0;
}

dfx_status dfx_registry_add(dfx_registry *reg, const char *path)
{
    char real[PATH_MAX];
    if (!realpath(path, real))
        return refuse(reg, dfx_error_set(DFX_ERR_NOT_FOUND, "no such file"), path);
    for (size_t i = 0; i < reg->nplugins; i++)
        if (strcmp(reg->plugins[i].real, real) == 0)
            return DFX_OK; /* the same file reached through two folders */

    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        size_t plen = strlen(path);
        /* glibc says "PATH: undefined symbol: x"; refuse() names the path already */
        if (e && strncmp(e, path, plen) == 0 && strncmp(e + plen, ": ", 2) == 0)
            e += plen + 2;
        return refuse(reg, dfx_error_set(DFX_ERR_PLUGIN, "cannot load: %s", e ? e : "unknown error"), path);
    }
    dlerror();
    dfx_plugin_entry_fn entry;
    *(void **)&entry = dlsym(h, "dfx_plugin_entry");
    if (!entry) {
        dlclose(h);
        return refuse(reg, dfx_error_set(DFX_ERR_PLUGIN, "not a dfx plugin: no dfx_plugin_entry symbol"), path);
    }
    const dfx_plugin *d = entry();
    if (!d) {
        dlclose(h);
        return refuse(reg, dfx_error_set(DFX_ERR_PLUGIN, "dfx_plugin_entry returned NULL"), path);
    }
    dfx_status st = check_descriptor(reg, d, path);
    if (st) {
        dlclose(h);
        return refuse(reg, st, path);
    }
    size_t n = 0;
    while (d->components[n])
        n++;
    if (grow_arrays(reg, n)) {
        dlclose(h);
        return refuse(reg, dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory"), path);
    }
    plugin_entry *pe = &reg->plugins[reg->nplugins];
    pe->path = strdup(path);
    pe->real = strdup(real);
    if (!pe->path || !pe->real) {
        free(pe->path);
        free(pe->real);
        dlclose(h);
        return refuse(reg, dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory"), path);
    }
    pe->handle = h;
    pe->desc = d;
    for (size_t i = 0; i < n; i++)
        reg->comps[reg->ncomps++] = (comp_entry){d->components[i], reg->nplugins};
    reg->nplugins++;
    return DFX_OK;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Loads every *.so in dir and in its immediate subfolders (the build tree
 * keeps each plugin in a folder of its own), in name order. */
static void scan_dir(dfx_registry *reg, const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 32;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn)
                break;
            names = nn;
        }
        if (!(names[n] = strdup(e->d_name)))
            break;
        n++;
    }
    closedir(d);
    if (n) /* names is NULL for an empty folder, and qsort(NULL, 0) is undefined */
        qsort(names, n, sizeof *names, cmp_names);
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        size_t l = strlen(names[i]);
        if (stat(path, &sb) == 0) {
            if (S_ISDIR(sb.st_mode) && depth == 0)
                scan_dir(reg, path, 1);
            else if (S_ISREG(sb.st_mode) && l > 3 && strcmp(names[i] + l - 3, ".so") == 0)
                dfx_registry_add(reg, path);
        }
        free(names[i]);
    }
    free(names);
}

dfx_status dfx_registry_create(dfx_registry **out, const char *const *dirs, size_t ndirs)
{
    dfx_registry *reg = calloc(1, sizeof *reg);
    *out = NULL;
    if (!reg)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < ndirs; i++)
        scan_dir(reg, dirs[i], 0);
    const char *env = getenv("DFX_PLUGIN_PATH");
    if (env && *env) {
        char *copy = strdup(env), *save = NULL;
        for (char *p = copy ? strtok_r(copy, ":", &save) : NULL; p; p = strtok_r(NULL, ":", &save))
            scan_dir(reg, p, 0);
        free(copy);
    }
    scan_dir(reg, "plugins", 0);
    scan_dir(reg, dfx_registry_builtin_dir(), 0);
    *out = reg;
    return DFX_OK;
}

void dfx_registry_destroy(dfx_registry *reg)
{
    if (!reg)
        return;
    for (size_t i = 0; i < reg->nplugins; i++) {
        /* plugins stay mapped: components may have left pointers (option
         * tables, static strings) in structures that outlive the registry */
        free(reg->plugins[i].path);
        free(reg->plugins[i].real);
    }
    for (size_t i = 0; i < reg->nrefusals; i++)
        free(reg->refusals[i]);
    free(reg->plugins);
    free(reg->comps);
    free(reg->refusals);
    free(reg);
}

size_t dfx_registry_refusal_count(const dfx_registry *reg)
{
    return reg->nrefusals;
}

const char *dfx_registry_refusal(const dfx_registry *reg, size_t i)
{
    return i < reg->nrefusals ? reg->refusals[i] : NULL;
}

static int cmp_comp(const void *a, const void *b)
{
    const dfx_component *x = *(const dfx_component *const *)a, *y = *(const dfx_component *const *)b;
    return strcmp(x->name, y->name);
}

size_t dfx_registry_list(const dfx_registry *reg, dfx_kind kind,
                         const dfx_component **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < reg->ncomps; i++) {
        if (reg->comps[i].comp->kind != kind)
            continue;
        if (out && n < max)
            out[n] = reg->comps[i].comp;
        n++;
    }
    if (out)
        qsort(out, n < max ? n : max, sizeof *out, cmp_comp);
    return n;
}

const dfx_component *dfx_registry_find(const dfx_registry *reg, dfx_kind kind,
                                       const char *name)
{
    const comp_entry *e = find_entry(reg, kind, name);
    return e ? e->comp : NULL;
}

const char *dfx_registry_origin(const dfx_registry *reg, const dfx_component *c)
{
    for (size_t i = 0; i < reg->ncomps; i++)
        if (reg->comps[i].comp == c)
            return reg->plugins[reg->comps[i].plugin].path;
    return NULL;
}

const dfx_plugin *dfx_registry_plugin_of(const dfx_registry *reg, const dfx_component *c)
{
    for (size_t i = 0; i < reg->ncomps; i++)
        if (reg->comps[i].comp == c)
            return reg->plugins[reg->comps[i].plugin].desc;
    return NULL;
}

dfx_status dfx__registry_unknown(const dfx_registry *reg, dfx_kind kind, const char *name,
                                const char *where)
{
    const char *names[512];
    size_t n = 0;
    for (size_t i = 0; i < reg->ncomps && n < 512; i++)
        if (reg->comps[i].comp->kind == kind)
            names[n++] = reg->comps[i].comp->name;
    const char *s = dfx__suggest(name, names, n);
    return dfx_error_set(DFX_ERR_NOT_FOUND, "%s: unknown %s '%s'%s%s%s; `dfx list %s` shows the installed ones",
                         where, dfx_kind_name(kind), name, s ? " (did you mean '" : "", s ? s : "",
                         s ? "'?)" : "", dfx_kind_name(kind));
}
