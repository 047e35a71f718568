/* The plugin registry: each refusal of the loader pinned, message and status,
 * against the broken plugins of tests/plugins (a refusal leaves the registry
 * working), folder scans that record refusals and go on, the search order of
 * dfx_registry_create, and a conformance loop over every built-in component:
 * option table well-formed, defaults valid (each is instantiated and run
 * through a pipeline that gives it an empty section), and `describe` and the
 * resolved dump showing every option. */
#include <ftw.h>
#include <stdalign.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "testutil.h"

static char tmpdir[4096];
static char start_cwd[4096];
static char *start_plugin_path;

/* snprintf that fails the test rather than truncate. */
static void format(char *buf, size_t size, const char *fmt, ...) DFX_PRINTF(3, 4);

static void format(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    ck_assert_msg(n >= 0 && (size_t)n < size, "\"%.80s...\" is too long for its buffer", buf);
}

/* The folder meson built the test plugins in (tests/meson.build). */
static const char *test_plugins(void)
{
    const char *dir = getenv("DFX_TEST_PLUGINS");
    ck_assert_msg(dir && *dir, "DFX_TEST_PLUGINS is not set: run this test with `meson test`");
    return dir;
}

static const char *plugin_file(char *buf, size_t size, const char *name)
{
    format(buf, size, "%s/%s.so", test_plugins(), name);
    return buf;
}

/* tmpdir/rel, created with its parents. */
static const char *make_dir(char *buf, size_t size, const char *rel)
{
    format(buf, size, "%s/%s", tmpdir, rel);
    for (char *p = buf + strlen(tmpdir) + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(buf, 0700);
            *p = '/';
        }
    }
    ck_assert_msg(mkdir(buf, 0700) == 0, "cannot create %s", buf);
    return buf;
}

/* Puts test plugin `name` into folder dir as dir/name.so (a symbolic link). */
static void link_plugin(const char *dir, const char *name)
{
    char target[4096], link[4096];
    format(link, sizeof link, "%s/%s.so", dir, name);
    ck_assert_msg(symlink(plugin_file(target, sizeof target, name), link) == 0, "cannot link %s", link);
}

static dfx_registry *registry(const char *const *dirs, size_t ndirs)
{
    dfx_registry *reg = NULL;
    dfx_status st = dfx_registry_create(&reg, dirs, ndirs);
    ck_assert_msg(st == DFX_OK, "dfx_registry_create: %s", dfx_error_message());
    ck_assert_ptr_nonnull(reg);
    return reg;
}

static bool has_refusal(const dfx_registry *reg, const char *msg)
{
    for (size_t i = 0; i < dfx_registry_refusal_count(reg); i++)
        if (strcmp(dfx_registry_refusal(reg, i), msg) == 0)
            return true;
    return false;
}

/* All refusals, one a line, for assertion messages (static buffer). */
static const char *refusal_list(const dfx_registry *reg)
{
    static char buf[16384];
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < dfx_registry_refusal_count(reg); i++) {
        int n = snprintf(buf + used, sizeof buf - used, "\n  %s", dfx_registry_refusal(reg, i));
        if (n < 0 || (size_t)n >= sizeof buf - used)
            break;
        used += (size_t)n;
    }
    return buf;
}

static size_t count_kind(const dfx_registry *reg, dfx_kind kind)
{
    return dfx_registry_list(reg, kind, NULL, 0);
}

/* The component's origin, which must be dir/file. */
static void expect_origin(const dfx_registry *reg, dfx_kind kind, const char *name, const char *dir,
                          const char *file)
{
    char want[8192];
    const dfx_component *c = dfx_registry_find(reg, kind, name);
    ck_assert_msg(c != NULL, "%s '%s' is not registered", dfx_kind_name(kind), name);
    format(want, sizeof want, "%s/%s", dir, file);
    ck_assert_str_eq(dfx_registry_origin(reg, c), want);
}

/* Parses, resolves and runs a pipeline whose output.path is out; returns
 * its `samples` tensor as float32. */
static dfx_tensor *run_yaml(dfx_registry *reg, const char *yaml, const char *out)
{
    dfx_pipeline *p = NULL;
    dfx_safetensors *file = NULL;
    dfx_tensor *samples = NULL;
    dfx_status st = dfx_pipeline_parse(&p, yaml, strlen(yaml), "test_registry");
    ck_assert_msg(st == DFX_OK, "parse: %s\n%s", dfx_error_message(), yaml);
    st = dfx_pipeline_resolve(p, reg);
    ck_assert_msg(st == DFX_OK, "resolve: %s\n%s", dfx_error_message(), yaml);
    st = dfx_pipeline_run(p, NULL);
    ck_assert_msg(st == DFX_OK, "run: %s\n%s", dfx_error_message(), yaml);
    dfx_pipeline_destroy(p);
    st = dfx_safetensors_open(out, &file);
    ck_assert_msg(st == DFX_OK, "%s", dfx_error_message());
    st = dfx_safetensors_read(file, "samples", DFX_DTYPE_F32, &samples);
    ck_assert_msg(st == DFX_OK, "%s", dfx_error_message());
    dfx_safetensors_close(file);
    return samples;
}

/* A pipeline made only of good_plugin's components: good_fill fills x with
 * `value`, so the output shows that the plugin's code and options ran. */
static void run_good_plugin(dfx_registry *reg)
{
    char out[4096], yaml[8192];
    format(out, sizeof out, "%s/good.safetensors", tmpdir);
    format(yaml, sizeof yaml,
             "dfx: 1\npipeline: sample\nbatch: 2\nmodel: {type: good_zero}\n"
             "scheduler: {type: good_linear, steps: 3}\nsampler: {type: good_fill, value: 0.25}\n"
             "output: {path: \"%s\"}\n", out);
    dfx_tensor *x = run_yaml(reg, yaml, out);
    ck_assert_int_eq(x->ndim, 2);
    ck_assert_int_eq(x->shape[0], 2);
    ck_assert_int_eq(x->shape[1], 3);
    for (int64_t i = 0; i < 6; i++)
        ck_assert_float_eq(((float *)x->data)[i], 0.25f);
    dfx_tensor_destroy(x);
}

/* A pipeline of built-in components: a few DDIM steps on the probe model. */
static void run_builtin(dfx_registry *reg)
{
    char out[4096], yaml[8192];
    format(out, sizeof out, "%s/builtin.safetensors", tmpdir);
    format(yaml, sizeof yaml,
             "dfx: 1\npipeline: sample\nshape: [2, 3]\nmodel: {type: probe}\n"
             "scheduler: {type: linear, steps: 4}\nsampler: {type: ddim}\noutput: {path: \"%s\"}\n", out);
    dfx_tensor *x = run_yaml(reg, yaml, out);
    ck_assert_int_eq(dfx_tensor_numel(x), 6);
    ck_assert(dfx_ops_all_finite(x->data, 6));
    dfx_tensor_destroy(x);
}

/* ---- refusals ----------------------------------------------------------- */

/* How a refusal's reason is formed from its format. */
enum {
    REASON_FIXED,    /* the text as it is */
    REASON_ABI,      /* %u the plugin's ABI, %u this dfx's */
    REASON_SIZE,     /* %u the plugin's struct_size, %u the ABI, %zu sizeof(dfx_plugin) */
    REASON_BUILTIN,  /* %s the built-in folder */
    REASON_DLOPEN    /* "cannot load: " and the dynamic linker's words, which must hold `reason` */
};

typedef struct refusal {
    const char *plugin;   /* tests/plugins/<plugin>.c */
    dfx_status status;
    int form;
    const char *reason;   /* the message is "path: reason" */
    bool in_scan;         /* part of the scanned folder of broken plugins */
} refusal;

static const refusal refusals[] = {
    {"broken_abi_version", DFX_ERR_ABI, REASON_ABI,
     "built for dfx plugin ABI %u, but this dfx has ABI %u: rebuild the plugin against this dfx", true},
    {"broken_struct_size", DFX_ERR_ABI, REASON_SIZE,
     "descriptor struct_size is %u, but ABI %u's dfx_plugin has %zu bytes: rebuild the plugin against this dfx",
     true},
    {"broken_no_entry", DFX_ERR_PLUGIN, REASON_FIXED, "not a dfx plugin: no dfx_plugin_entry symbol", true},
    {"broken_entry_null", DFX_ERR_PLUGIN, REASON_FIXED, "dfx_plugin_entry returned NULL", true},
    {"broken_name_mismatch", DFX_ERR_PLUGIN, REASON_FIXED,
     "the plugin calls itself 'other_name' but its file is 'broken_name_mismatch.so': the names must match", true},
    {"broken_no_components", DFX_ERR_PLUGIN, REASON_FIXED, "plugin 'broken_no_components' provides no components",
     true},
    {"broken_null_components", DFX_ERR_PLUGIN, REASON_FIXED,
     "plugin 'broken_null_components' provides no components", true},
    {"broken_unknown_kind", DFX_ERR_PLUGIN, REASON_FIXED, "component 0 has unknown kind 7", true},
    {"broken_component_name", DFX_ERR_PLUGIN, REASON_FIXED,
     "sampler component 1: name 'my-sampler' is not an identifier", true},
    {"broken_null_summary", DFX_ERR_PLUGIN, REASON_FIXED, "sampler 'no_summary': summary is NULL", true},
    {"broken_null_ops", DFX_ERR_PLUGIN, REASON_FIXED, "model 'no_ops': ops is NULL (required)", true},
    {"broken_scheduler_no_plan", DFX_ERR_PLUGIN, REASON_FIXED, "scheduler 'no_plan': ops.plan is NULL (required)",
     true},
    {"broken_sampler_no_sample", DFX_ERR_PLUGIN, REASON_FIXED,
     "sampler 'no_sample': ops.sample is NULL (required)", true},
    {"broken_model_no_info", DFX_ERR_PLUGIN, REASON_FIXED, "model 'no_info': ops.info is NULL (required)", true},
    {"broken_model_no_predict", DFX_ERR_PLUGIN, REASON_FIXED, "model 'no_predict': ops.predict is NULL (required)",
     true},
    {"broken_option_name", DFX_ERR_PLUGIN, REASON_FIXED,
     "sampler 'bad_option_name': option 'step-size': the name must be an identifier", true},
    {"broken_option_duplicate", DFX_ERR_PLUGIN, REASON_FIXED,
     "sampler 'duplicate_option': option 'eta' is declared twice", true},
    {"broken_option_offset", DFX_ERR_PLUGIN, REASON_FIXED,
     "sampler 'offset_outside': option 'tail': offset 8 + size 8 lies outside priv_size 8", true},
    {"broken_option_default_range", DFX_ERR_PLUGIN, REASON_FIXED,
     "sampler 'default_outside': option 'eta': default 1.5 is outside its range [0, 1]", true},
    {"broken_option_enum_default", DFX_ERR_PLUGIN, REASON_FIXED,
     "sampler 'enum_default': option 'mode': default index 2 is not one of its 2 choices", true},
    {"broken_option_enum_empty", DFX_ERR_PLUGIN, REASON_FIXED,
     "sampler 'enum_empty': option 'mode': an enum needs choices", true},
    {"broken_option_no_help", DFX_ERR_PLUGIN, REASON_FIXED, "sampler 'no_help': option 'order' has no help text",
     true},
    {"broken_component_twice", DFX_ERR_PLUGIN, REASON_FIXED, "sampler 'twice' is declared twice", true},
    {"broken_unresolved_symbol", DFX_ERR_PLUGIN, REASON_DLOPEN, "undefined symbol: dfx_test_no_such_function",
     true},
    /* valid, but the built-in folder already provides its sampler 'ddim' */
    {"shadow_ddim", DFX_ERR_PLUGIN, REASON_BUILTIN, "sampler 'ddim' is already provided by %s/ddim.so", false},
    {"no_such_plugin", DFX_ERR_NOT_FOUND, REASON_FIXED, "no such file", false},
};

#define NREFUSALS (sizeof refusals / sizeof *refusals)

/* The message dfx_registry_add must give for r's plugin at path. */
static void expected_message(const refusal *r, const char *path, char *buf, size_t size)
{
    char reason[4096];
    switch (r->form) {
    case REASON_ABI:
        format(reason, sizeof reason, r->reason, DFX_ABI_VERSION + 1u, DFX_ABI_VERSION);
        break;
    case REASON_SIZE:
        format(reason, sizeof reason, r->reason, (unsigned)(2 * sizeof(uint32_t)), DFX_ABI_VERSION,
                 sizeof(dfx_plugin));
        break;
    case REASON_BUILTIN:
        format(reason, sizeof reason, r->reason, dfx_registry_builtin_dir());
        break;
    case REASON_DLOPEN:
        format(reason, sizeof reason, "cannot load: ");
        break;
    default:
        format(reason, sizeof reason, "%s", r->reason);
        break;
    }
    format(buf, size, "%s: %s", path, reason);
}

static void expect_message(const refusal *r, const char *path, const char *msg)
{
    char want[8192];
    expected_message(r, path, want, sizeof want);
    if (r->form != REASON_DLOPEN) {
        ck_assert_str_eq(msg, want);
        return;
    }
    ck_assert_msg(strncmp(msg, want, strlen(want)) == 0, "\"%s\" does not start with \"%s\"", msg, want);
    ck_assert_msg(strstr(msg, r->reason), "\"%s\" lacks \"%s\"", msg, r->reason);
    /* the dynamic linker's own copy of the path is left out */
    ck_assert_msg(!strstr(msg + strlen(path), path), "\"%s\" repeats the path", msg);
}

/* Every refusal alone: status, exact message, recorded as a refusal, nothing
 * of the plugin registered, and the registry (and process) working on. */
START_TEST(test_refusal)
{
    const refusal *r = &refusals[_i];
    char path[4096], good[4096], msg[8192];
    dfx_registry *reg = registry(NULL, 0);
    ck_assert_msg(dfx_registry_refusal_count(reg) == 0, "built-in plugins refused:%s", refusal_list(reg));
    size_t before[3] = {count_kind(reg, DFX_KIND_SCHEDULER), count_kind(reg, DFX_KIND_SAMPLER),
                        count_kind(reg, DFX_KIND_MODEL)};

    plugin_file(path, sizeof path, r->plugin);
    dfx_error_clear();
    dfx_status st = dfx_registry_add(reg, path);
    format(msg, sizeof msg, "%s", dfx_error_message());
    ck_assert_msg(st == r->status, "%s: status %d, want %d (%s)", r->plugin, st, r->status, msg);
    expect_message(r, path, msg);
    ck_assert_uint_eq(dfx_registry_refusal_count(reg), 1);
    ck_assert_str_eq(dfx_registry_refusal(reg, 0), msg);
    ck_assert_ptr_null(dfx_registry_refusal(reg, 1));
    ck_assert_uint_eq(count_kind(reg, DFX_KIND_SCHEDULER), before[0]);
    ck_assert_uint_eq(count_kind(reg, DFX_KIND_SAMPLER), before[1]);
    ck_assert_uint_eq(count_kind(reg, DFX_KIND_MODEL), before[2]);
    /* a valid first component of a refused plugin is not registered either */
    ck_assert_ptr_null(dfx_registry_find(reg, DFX_KIND_SAMPLER, "fine"));
    expect_origin(reg, DFX_KIND_SAMPLER, "ddim", dfx_registry_builtin_dir(), "ddim.so");

    /* refused again the same way: nothing was half-registered */
    ck_assert_int_eq(dfx_registry_add(reg, path), r->status);
    ck_assert_str_eq(dfx_error_message(), msg);
    ck_assert_uint_eq(dfx_registry_refusal_count(reg), 2);

    ck_assert_msg(dfx_registry_add(reg, plugin_file(good, sizeof good, "good_plugin")) == DFX_OK, "%s",
                  dfx_error_message());
    ck_assert_uint_eq(count_kind(reg, DFX_KIND_SAMPLER), before[1] + 1);
    run_good_plugin(reg);
    run_builtin(reg);
    dfx_registry_destroy(reg);
}
END_TEST

/* All of them into one registry, one after the other. */
START_TEST(test_refusals_in_a_row)
{
    char path[4096];
    dfx_registry *reg = registry(NULL, 0);
    for (size_t i = 0; i < NREFUSALS; i++) {
        ck_assert_int_eq(dfx_registry_add(reg, plugin_file(path, sizeof path, refusals[i].plugin)),
                         refusals[i].status);
        expect_message(&refusals[i], path, dfx_registry_refusal(reg, i));
    }
    ck_assert_uint_eq(dfx_registry_refusal_count(reg), NREFUSALS);
    ck_assert_int_eq(dfx_registry_add(reg, plugin_file(path, sizeof path, "good_plugin")), DFX_OK);
    /* adding the same file again is not an error and changes nothing */
    ck_assert_int_eq(dfx_registry_add(reg, path), DFX_OK);
    ck_assert_uint_eq(dfx_registry_refusal_count(reg), NREFUSALS);
    expect_origin(reg, DFX_KIND_SCHEDULER, "good_linear", test_plugins(), "good_plugin.so");
    expect_origin(reg, DFX_KIND_SAMPLER, "good_fill", test_plugins(), "good_plugin.so");
    expect_origin(reg, DFX_KIND_MODEL, "good_zero", test_plugins(), "good_plugin.so");
    ck_assert_str_eq(dfx_registry_plugin_of(reg, dfx_registry_find(reg, DFX_KIND_MODEL, "good_zero"))->name,
                     "good_plugin");
    run_good_plugin(reg);
    run_builtin(reg);
    dfx_registry_destroy(reg);
}
END_TEST

/* A folder holding every broken plugin and the good one: the scan records a
 * refusal for each broken file, loads the good one and goes on to the
 * built-in folder. */
START_TEST(test_scan_folder_with_broken_plugins)
{
    char dir[4096], path[4096], want[8192];
    size_t nbroken = 0;
    make_dir(dir, sizeof dir, "scan");
    for (size_t i = 0; i < NREFUSALS; i++)
        if (refusals[i].in_scan) {
            link_plugin(dir, refusals[i].plugin);
            nbroken++;
        }
    link_plugin(dir, "good_plugin");
    const char *dirs[] = {dir};
    dfx_registry *reg = registry(dirs, 1);
    ck_assert_msg(dfx_registry_refusal_count(reg) == nbroken, "%zu refusals, want %zu:%s",
                  dfx_registry_refusal_count(reg), nbroken, refusal_list(reg));
    for (size_t i = 0; i < NREFUSALS; i++) {
        if (!refusals[i].in_scan)
            continue;
        format(path, sizeof path, "%s/%s.so", dir, refusals[i].plugin);
        bool found = false;
        for (size_t k = 0; k < nbroken && !found; k++) {
            expected_message(&refusals[i], path, want, sizeof want);
            found = strncmp(dfx_registry_refusal(reg, k), want, strlen(want)) == 0;
            if (found)
                expect_message(&refusals[i], path, dfx_registry_refusal(reg, k));
        }
        ck_assert_msg(found, "no refusal for %s:%s", path, refusal_list(reg));
    }
    expect_origin(reg, DFX_KIND_SAMPLER, "good_fill", dir, "good_plugin.so");
    expect_origin(reg, DFX_KIND_SAMPLER, "ddim", dfx_registry_builtin_dir(), "ddim.so");
    expect_origin(reg, DFX_KIND_MODEL, "probe", dfx_registry_builtin_dir(), "probe.so");
    run_good_plugin(reg);
    run_builtin(reg);
    dfx_registry_destroy(reg);
}
END_TEST

/* ---- search order ------------------------------------------------------- */

/* Folders A (for `dirs`), B (for DFX_PLUGIN_PATH) and C (the working folder,
 * whose plugins/ is ./plugins), each holding one of the order_* plugins that
 * all provide sampler 'ordered'. */
static void order_folders(char *a, char *b, char *c, size_t size)
{
    char cp[4096];
    make_dir(a, size, "a");
    make_dir(b, size, "b");
    make_dir(c, size, "c");
    make_dir(cp, sizeof cp, "c/plugins");
    link_plugin(a, "order_dirs");
    link_plugin(b, "order_env");
    link_plugin(cp, "order_cwd");
}

static void expect_ordered(const dfx_registry *reg, const char *winner)
{
    const dfx_component *c = dfx_registry_find(reg, DFX_KIND_SAMPLER, "ordered");
    ck_assert_ptr_nonnull(c);
    ck_assert_str_eq(c->summary, winner);
}

/* "loser: sampler 'ordered' is already provided by winner" */
static void expect_shadowed(const dfx_registry *reg, const char *loser_dir, const char *loser,
                            const char *winner_dir, const char *winner)
{
    char want[8192];
    format(want, sizeof want, "%s/%s.so: sampler 'ordered' is already provided by %s/%s.so", loser_dir, loser,
             winner_dir, winner);
    ck_assert_msg(has_refusal(reg, want), "no refusal \"%s\" among:%s", want, refusal_list(reg));
}

START_TEST(test_order_dirs_env_cwd)
{
    char a[4096], b[4096], c[4096];
    order_folders(a, b, c, sizeof a);
    setenv("DFX_PLUGIN_PATH", b, 1);
    ck_assert_int_eq(chdir(c), 0);
    const char *dirs[] = {a};
    dfx_registry *reg = registry(dirs, 1);
    expect_ordered(reg, "order_dirs");
    expect_shadowed(reg, b, "order_env", a, "order_dirs");
    expect_shadowed(reg, "plugins", "order_cwd", a, "order_dirs");
    ck_assert_uint_eq(dfx_registry_refusal_count(reg), 2);
    dfx_registry_destroy(reg);

    /* without `dirs`, DFX_PLUGIN_PATH comes first */
    reg = registry(NULL, 0);
    expect_ordered(reg, "order_env");
    expect_shadowed(reg, "plugins", "order_cwd", b, "order_env");
    ck_assert_uint_eq(dfx_registry_refusal_count(reg), 1);
    dfx_registry_destroy(reg);

    /* then ./plugins */
    setenv("DFX_PLUGIN_PATH", "", 1);
    reg = registry(NULL, 0);
    expect_ordered(reg, "order_cwd");
    ck_assert_uint_eq(dfx_registry_refusal_count(reg), 0);
    dfx_registry_destroy(reg);
}
END_TEST

START_TEST(test_order_within_plugin_path)
{
    char a[4096], b[4096], c[4096], env[8192];
    order_folders(a, b, c, sizeof a);
    format(env, sizeof env, "%s:%s", b, a);
    setenv("DFX_PLUGIN_PATH", env, 1);
    dfx_registry *reg = registry(NULL, 0);
    expect_ordered(reg, "order_env");
    expect_shadowed(reg, a, "order_dirs", b, "order_env");
    dfx_registry_destroy(reg);

    format(env, sizeof env, "%s:%s", a, b);
    setenv("DFX_PLUGIN_PATH", env, 1);
    reg = registry(NULL, 0);
    expect_ordered(reg, "order_dirs");
    expect_shadowed(reg, b, "order_env", a, "order_dirs");
    dfx_registry_destroy(reg);

    /* several `dirs`: the first wins too */
    setenv("DFX_PLUGIN_PATH", "", 1);
    const char *dirs[] = {b, a};
    reg = registry(dirs, 2);
    expect_ordered(reg, "order_env");
    expect_shadowed(reg, a, "order_dirs", b, "order_env");
    ck_assert_uint_eq(dfx_registry_refusal_count(reg), 1);
    dfx_registry_destroy(reg);
}
END_TEST

/* ./plugins comes before the built-in folder: a plugin there that provides
 * 'ddim' wins, and the built-in ddim.so is refused naming both files. */
START_TEST(test_order_cwd_before_builtin)
{
    char c[4096], cp[4096], want[8192];
    make_dir(c, sizeof c, "c");
    make_dir(cp, sizeof cp, "c/plugins");
    link_plugin(cp, "shadow_ddim");
    ck_assert_int_eq(chdir(c), 0);
    dfx_registry *reg = registry(NULL, 0);
    expect_origin(reg, DFX_KIND_SAMPLER, "ddim", "plugins", "shadow_ddim.so");
    format(want, sizeof want, "%s/ddim.so: sampler 'ddim' is already provided by plugins/shadow_ddim.so",
             dfx_registry_builtin_dir());
    ck_assert_msg(has_refusal(reg, want), "no refusal \"%s\" among:%s", want, refusal_list(reg));
    ck_assert_uint_eq(dfx_registry_refusal_count(reg), 1);
    /* the other built-ins are unaffected */
    expect_origin(reg, DFX_KIND_SAMPLER, "euler", dfx_registry_builtin_dir(), "euler.so");
    dfx_registry_destroy(reg);
}
END_TEST

/* The same file reached through two folders is loaded once, silently; a
 * folder's subfolders are searched one level deep. */
START_TEST(test_same_file_and_subfolders)
{
    char a[4096], deep[4096], sub[4096];
    make_dir(a, sizeof a, "a");
    link_plugin(a, "order_dirs");
    setenv("DFX_PLUGIN_PATH", a, 1);
    const char *dirs[] = {a, a};
    dfx_registry *reg = registry(dirs, 2);
    ck_assert_msg(dfx_registry_refusal_count(reg) == 0, "%s", refusal_list(reg));
    expect_ordered(reg, "order_dirs");
    dfx_registry_destroy(reg);

    setenv("DFX_PLUGIN_PATH", "", 1);
    make_dir(sub, sizeof sub, "top/sub");
    make_dir(deep, sizeof deep, "top/sub/deeper");
    link_plugin(sub, "order_env");
    link_plugin(deep, "good_plugin");
    char t[4096];
    format(t, sizeof t, "%s/top", tmpdir);
    const char *top[] = {t};
    reg = registry(top, 1);
    expect_ordered(reg, "order_env");
    ck_assert_ptr_null(dfx_registry_find(reg, DFX_KIND_SAMPLER, "good_fill"));
    ck_assert_uint_eq(dfx_registry_refusal_count(reg), 0);
    dfx_registry_destroy(reg);
}
END_TEST

/* ---- the built-in components ------------------------------------------- */

static const dfx_kind all_kinds[] = {DFX_KIND_SCHEDULER, DFX_KIND_SAMPLER, DFX_KIND_MODEL};

/* The i-th registered component over all kinds (kinds in order, names sorted). */
static const dfx_component *nth_component(const dfx_registry *reg, size_t i)
{
    for (size_t k = 0; k < 3; k++) {
        size_t n = count_kind(reg, all_kinds[k]);
        if (i < n) {
            const dfx_component **list = calloc(n, sizeof *list);
            ck_assert_ptr_nonnull(list);
            dfx_registry_list(reg, all_kinds[k], list, n);
            const dfx_component *c = list[i];
            free(list);
            return c;
        }
        i -= n;
    }
    return NULL;
}

static size_t count_all(const dfx_registry *reg)
{
    return count_kind(reg, DFX_KIND_SCHEDULER) + count_kind(reg, DFX_KIND_SAMPLER) +
           count_kind(reg, DFX_KIND_MODEL);
}

/* Run from the build tree, the registry holds the build's plugins and only
 * them, none refused, at least one of each kind. */
START_TEST(test_builtins_present)
{
    dfx_registry *reg = registry(NULL, 0);
    ck_assert_str_eq(dfx_registry_builtin_dir(), DFX_BUILD_ROOT "/plugins");
    ck_assert_msg(dfx_registry_refusal_count(reg) == 0, "built-in plugins refused:%s", refusal_list(reg));
    for (size_t k = 0; k < 3; k++)
        ck_assert_msg(count_kind(reg, all_kinds[k]) > 0, "no built-in %s", dfx_kind_name(all_kinds[k]));
    for (size_t i = 0; i < count_all(reg); i++) {
        const dfx_component *c = nth_component(reg, i);
        const dfx_plugin *pl = dfx_registry_plugin_of(reg, c);
        char want[8192];
        format(want, sizeof want, "%s/%s.so", dfx_registry_builtin_dir(), pl->name);
        ck_assert_str_eq(dfx_registry_origin(reg, c), want);
    }
    dfx_registry_destroy(reg);
}
END_TEST

static bool is_identifier(const char *s)
{
    if (!s || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

/* Size and alignment of the field each option type writes (option.h). */
static void field_layout(dfx_option_type t, size_t *size, size_t *align)
{
    switch (t) {
    case DFX_OPTION_TYPE_BOOL: *size = sizeof(bool), *align = alignof(bool); return;
    case DFX_OPTION_TYPE_INT: *size = sizeof(int64_t), *align = alignof(int64_t); return;
    case DFX_OPTION_TYPE_FLOAT: *size = sizeof(double), *align = alignof(double); return;
    case DFX_OPTION_TYPE_ENUM: *size = sizeof(int), *align = alignof(int); return;
    case DFX_OPTION_TYPE_STRING:
    case DFX_OPTION_TYPE_PATH: *size = sizeof(char *), *align = alignof(char *); return;
    case DFX_OPTION_TYPE_FLOATS: *size = sizeof(dfx_floats), *align = alignof(dfx_floats); return;
    case DFX_OPTION_TYPE_INTS: *size = sizeof(dfx_ints), *align = alignof(dfx_ints); return;
    }
    *size = 0, *align = 1;
}

/* Keys the core reads from a component's section: an option of the same
 * name would never reach the component (core/run/pipeline.c). */
static bool is_core_key(dfx_kind kind, const char *name)
{
    static const char *const common[] = {"type", NULL}, *const sched[] = {"config", "steps", NULL},
                             *const model[] = {"prediction", NULL};
    const char *const *lists[2] = {common, kind == DFX_KIND_SCHEDULER ? sched : kind == DFX_KIND_MODEL ? model : NULL};
    for (int l = 0; l < 2; l++)
        for (const char *const *k = lists[l]; k && *k; k++)
            if (strcmp(*k, name) == 0)
                return true;
    return false;
}

/* The table checks of the loader, written again independently, plus what the
 * loader does not check: field alignment, bool defaults, enum choices unique
 * and non-empty, known flags, no clash with the core's keys. */
static void check_option_table(const dfx_component *c)
{
    const char *what = c->name;
    for (const dfx_option *o = c->options; o && o->name; o++) {
        size_t size, align;
        ck_assert_msg(is_identifier(o->name), "%s: option '%s' is not an identifier", what, o->name);
        ck_assert_msg(!is_core_key(c->kind, o->name), "%s: option '%s' is a key of the core", what, o->name);
        for (const dfx_option *p = c->options; p < o; p++)
            ck_assert_msg(strcmp(p->name, o->name) != 0, "%s: option '%s' twice", what, o->name);
        field_layout(o->type, &size, &align);
        ck_assert_msg(size > 0, "%s: option '%s' has type %d", what, o->name, (int)o->type);
        ck_assert_msg(o->offset <= c->priv_size && size <= c->priv_size - o->offset,
                      "%s: option '%s' lies outside priv", what, o->name);
        ck_assert_msg(o->offset % align == 0, "%s: option '%s' is misaligned (offset %zu): wrong field type?",
                      what, o->name, o->offset);
        ck_assert_msg(o->help && *o->help, "%s: option '%s' has no help", what, o->name);
        ck_assert_msg((o->flags & ~(unsigned)(DFX_OPTION_REQUIRED | DFX_OPTION_NULLABLE)) == 0,
                      "%s: option '%s' has unknown flags %#x", what, o->name, o->flags);
        switch (o->type) {
        case DFX_OPTION_TYPE_BOOL:
            ck_assert_msg(o->def == 0 || o->def == 1, "%s: bool '%s' defaults to %g", what, o->name, o->def);
            break;
        case DFX_OPTION_TYPE_INT:
        case DFX_OPTION_TYPE_FLOAT:
            ck_assert_msg(o->min <= o->max, "%s: option '%s' has an empty range", what, o->name);
            if (isnan(o->def))
                ck_assert_msg(o->type == DFX_OPTION_TYPE_FLOAT && (o->flags & DFX_OPTION_NULLABLE),
                              "%s: option '%s' defaults to NaN but is not a nullable float", what, o->name);
            else
                ck_assert_msg(o->def >= o->min && o->def <= o->max, "%s: option '%s': default %g outside [%g, %g]",
                              what, o->name, o->def, o->min, o->max);
            if (o->type == DFX_OPTION_TYPE_INT)
                ck_assert_msg(o->def == floor(o->def), "%s: int '%s' defaults to %g", what, o->name, o->def);
            break;
        case DFX_OPTION_TYPE_FLOATS:
        case DFX_OPTION_TYPE_INTS:
            ck_assert_msg(o->min <= o->max, "%s: option '%s' has an empty range", what, o->name);
            break;
        case DFX_OPTION_TYPE_ENUM: {
            size_t n = 0;
            ck_assert_msg(o->choices && o->choices[0], "%s: enum '%s' has no choices", what, o->name);
            for (; o->choices[n]; n++) {
                ck_assert_msg(*o->choices[n], "%s: enum '%s' has an empty choice", what, o->name);
                for (size_t j = 0; j < n; j++)
                    ck_assert_msg(strcmp(o->choices[j], o->choices[n]) != 0, "%s: enum '%s' lists '%s' twice",
                                  what, o->name, o->choices[n]);
            }
            ck_assert_msg(o->def >= 0 && o->def < (double)n && o->def == floor(o->def),
                          "%s: enum '%s' defaults to index %g of %zu", what, o->name, o->def, n);
            break;
        }
        default:
            break;
        }
    }
}

/* dfx_component_describe: the title line, then a header and one line per
 * option in table order with its name, type, default (where it has a plain
 * spelling), choices and help. */
static void check_describe(const dfx_component *c)
{
    char *text = NULL, title[1024], line[4096];
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    dfx_component_describe(c, f);
    ck_assert_int_eq(fclose(f), 0);
    format(title, sizeof title, "%s '%s': %s\n", dfx_kind_name(c->kind), c->name, c->summary);
    ck_assert_msg(strncmp(text, title, strlen(title)) == 0, "describe starts \"%.80s\"", text);
    const char *p = text + strlen(title);
    if (!c->options || !c->options->name) {
        ck_assert_msg(strncmp(p, "  (no options)\n", 15) == 0, "%s: describe:\n%s", c->name, text);
        p += 15;
    } else {
        ck_assert_msg(strncmp(p, "  option ", 9) == 0, "%s: no header line in describe:\n%s", c->name, text);
        p = strchr(p, '\n') + 1;
    }
    for (const dfx_option *o = c->options; o && o->name; o++) {
        size_t l = strcspn(p, "\n");
        char prefix[256], field[256];
        ck_assert_msg(p[l] == '\n', "%s: describe stops before option '%s':\n%s", c->name, o->name, text);
        format(line, sizeof line, "%.*s", (int)l, p);
        format(prefix, sizeof prefix, "  %s ", o->name);
        ck_assert_msg(strncmp(line, prefix, strlen(prefix)) == 0, "%s: option '%s' missing from describe:\n%s",
                      c->name, o->name, text);
        format(field, sizeof field, " %s ", dfx_option_type_name(o->type));
        ck_assert_msg(strstr(line, field), "%s: no type in \"%s\"", c->name, line);
        ck_assert_msg(strstr(line, o->help), "%s: no help in \"%s\"", c->name, line);
        field[0] = '\0';
        if (o->type == DFX_OPTION_TYPE_BOOL)
            format(field, sizeof field, " %s ", o->def ? "true" : "false");
        else if (o->type == DFX_OPTION_TYPE_INT)
            format(field, sizeof field, " %lld ", (long long)o->def);
        else if (o->type == DFX_OPTION_TYPE_ENUM)
            format(field, sizeof field, " %s ", o->choices[(int)o->def]);
        ck_assert_msg(!field[0] || strstr(line, field), "%s: default%sof '%s' not in \"%s\"", c->name, field,
                      o->name, line);
        for (size_t k = 0; o->type == DFX_OPTION_TYPE_ENUM && o->choices[k]; k++)
            ck_assert_msg(strstr(line, o->choices[k]), "%s: choice '%s' not in \"%s\"", c->name, o->choices[k],
                          line);
        p += l + 1;
    }
    /* then the keys the core reads from every section of this kind */
    char keys[128];
    format(keys, sizeof keys, "\n  keys of every %s section, read by dfx itself:\n", dfx_kind_name(c->kind));
    ck_assert_msg(strncmp(p, keys, strlen(keys)) == 0, "%s: describe has other lines after the options:\n%s",
                  c->name, p);
    ck_assert_msg(strstr(p, "\n  type ") != NULL, "%s: the core keys lack 'type':\n%s", c->name, p);
    free(text);
}

/* The resolved dump names every option of the component in its section. */
static void check_resolved_dump(dfx_pipeline *p, const dfx_component *c)
{
    char *text = NULL, head[64], key[256];
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(dfx_pipeline_write_resolved(p, f), DFX_OK);
    ck_assert_int_eq(fclose(f), 0);
    format(head, sizeof head, "\n%s:\n", dfx_kind_name(c->kind));
    char *sec = strstr(text, head);
    ck_assert_msg(sec, "no %s section in the resolved pipeline:\n%s", dfx_kind_name(c->kind), text);
    sec += strlen(head) - 1;
    for (char *e = sec; (e = strchr(e, '\n')) && e[1]; e++)
        if (e[1] != ' ') {
            e[1] = '\0';
            break;
        }
    for (const dfx_option *o = c->options; o && o->name; o++) {
        format(key, sizeof key, "\n  %s: ", o->name);
        ck_assert_msg(strstr(sec, key), "%s: option '%s' missing from the resolved pipeline:%s", c->name,
                      o->name, sec);
    }
    free(text);
}

/* The pipeline that gives component c an empty section (only `type`) and
 * otherwise built-ins: probe, linear, ddim. */
static void conformance_yaml(const dfx_component *c, const char *out, const char *shape, char *buf,
                             size_t size)
{
    switch (c->kind) {
    case DFX_KIND_SCHEDULER:
        format(buf, size,
                 "dfx: 1\npipeline: sample\nshape: [2, 3]\nmodel: {type: probe}\nscheduler: {type: %s}\n"
                 "sampler: {type: ddim}\noutput: {path: \"%s\"}\n", c->name, out);
        break;
    case DFX_KIND_SAMPLER:
        format(buf, size,
                 "dfx: 1\npipeline: sample\nshape: [2, 3]\nmodel: {type: probe}\n"
                 "scheduler: {type: linear, steps: 4}\nsampler: {type: %s}\noutput: {path: \"%s\"}\n",
                 c->name, out);
        break;
    case DFX_KIND_MODEL:
        format(buf, size,
                 "dfx: 1\npipeline: sample\n%s\nmodel: {type: %s}\nscheduler: {type: linear, steps: 4}\n"
                 "sampler: {type: ddim}\noutput: {path: \"%s\"}\n", shape, c->name, out);
        break;
    case DFX_KIND_CONDITIONER:
        format(buf, size,
                 "dfx: 1\npipeline: sample\n%s\nmodel: {type: gmm}\nconditioner: {type: %s}\n"
                 "guidance: {type: cfg}\nscheduler: {type: linear, steps: 4}\nsampler: {type: ddim}\n"
                 "output: {path: \"%s\"}\n", shape, c->name, out);
        break;
    case DFX_KIND_GUIDANCE:
        format(buf, size,
                 "dfx: 1\npipeline: sample\n%s\nmodel: {type: gmm}\nconditioner: {type: label, label: 1}\n"
                 "guidance: {type: %s}\nscheduler: {type: linear, steps: 4}\nsampler: {type: ddim}\n"
                 "output: {path: \"%s\"}\n", shape, c->name, out);
        break;
    case DFX_KIND_CODEC:
        format(buf, size,
                 "dfx: 1\npipeline: sample\n%s\nmodel: {type: probe}\ncodec: {type: %s}\n"
                 "scheduler: {type: linear, steps: 4}\nsampler: {type: ddim}\noutput: {path: \"%s\"}\n",
                 shape, c->name, out);
        break;
    }
}

/* Defaults are valid: the component resolves with an empty section and a
 * short run gives finite samples (schedulers also plan their default steps).
 * A component with required options must instead name the first one. */
static void check_defaults(dfx_registry *reg, const dfx_component *c)
{
    char out[4096], yaml[8192];
    const char *shape = "batch: 2";
    dfx_pipeline *p = NULL;
    format(out, sizeof out, "%s/%s.safetensors", tmpdir, c->name);
    conformance_yaml(c, out, shape, yaml, sizeof yaml);
    ck_assert_int_eq(dfx_pipeline_parse(&p, yaml, strlen(yaml), "conformance"), DFX_OK);
    dfx_status st = dfx_pipeline_resolve(p, reg);
    for (const dfx_option *o = c->options; o && o->name; o++) {
        if (o->flags & DFX_OPTION_REQUIRED) {
            char want[512];
            format(want, sizeof want, "option '%s' is required", o->name);
            ck_assert_msg(st == DFX_ERR_CONFIG && strstr(dfx_error_message(), want),
                          "%s: resolving without the required '%s' gave %d (%s)", c->name, o->name, st,
                          dfx_error_message());
            dfx_pipeline_destroy(p);
            return;
        }
    }
    /* A component that loads weights from an optional `path` (found in the
     * model section when absent) must say that no checkpoint was given. */
    for (const dfx_option *o = c->options; o && o->name; o++) {
        if (o->type == DFX_OPTION_TYPE_PATH && strcmp(o->name, "path") == 0 && !o->def_str) {
            ck_assert_msg(st == DFX_ERR_CONFIG && strstr(dfx_error_message(), "no checkpoint") &&
                              strstr(dfx_error_message(), "path"),
                          "%s: resolving without a checkpoint gave %d (%s)", c->name, st, dfx_error_message());
            dfx_pipeline_destroy(p);
            return;
        }
    }
    ck_assert_msg(st == DFX_OK, "%s '%s' with default options: %s", dfx_kind_name(c->kind), c->name,
                  dfx_error_message());
    check_resolved_dump(p, c);
    if (c->kind == DFX_KIND_SCHEDULER) {
        dfx_schedule s;
        ck_assert_msg(dfx_pipeline_plan(p, 0, &s) == DFX_OK, "%s: plan: %s", c->name, dfx_error_message());
        ck_assert_int_ge(s.steps, 1);
        double prev = INFINITY;
        for (int64_t i = 0; i <= s.steps; i++) {
            double sv = s.levels[i].alpha > 0 ? s.levels[i].sigma / s.levels[i].alpha : INFINITY;
            ck_assert_msg(sv <= prev, "%s: noise level %lld (%g) above the one before (%g)", c->name,
                          (long long)i, sv, prev);
            prev = sv;
        }
        dfx_schedule_fini(&s);
    }
    st = dfx_pipeline_run(p, NULL);
    if (c->kind == DFX_KIND_MODEL && st == DFX_ERR_CONFIG && strstr(dfx_error_message(), "no fixed sample shape")) {
        /* a model of any shape (like probe): give one */
        dfx_pipeline_destroy(p);
        shape = "shape: [2, 3]";
        conformance_yaml(c, out, shape, yaml, sizeof yaml);
        ck_assert_int_eq(dfx_pipeline_parse(&p, yaml, strlen(yaml), "conformance"), DFX_OK);
        ck_assert_int_eq(dfx_pipeline_resolve(p, reg), DFX_OK);
        st = dfx_pipeline_run(p, NULL);
    }
    ck_assert_msg(st == DFX_OK, "%s '%s': run with default options: %s", dfx_kind_name(c->kind), c->name,
                  dfx_error_message());
    dfx_pipeline_destroy(p);

    dfx_safetensors *file;
    dfx_tensor *x;
    ck_assert_int_eq(dfx_safetensors_open(out, &file), DFX_OK);
    ck_assert_int_eq(dfx_safetensors_read(file, "samples", DFX_DTYPE_F32, &x), DFX_OK);
    dfx_safetensors_close(file);
    ck_assert_int_ge(x->ndim, 2);
    ck_assert_int_eq(x->shape[0], 2);
    ck_assert_msg(dfx_ops_all_finite(x->data, dfx_tensor_numel(x)), "%s: samples are not finite", c->name);
    dfx_tensor_destroy(x);
}

START_TEST(test_conformance)
{
    dfx_registry *reg = registry(NULL, 0);
    const dfx_component *c = nth_component(reg, (size_t)_i);
    ck_assert_ptr_nonnull(c);
    const dfx_plugin *pl = dfx_registry_plugin_of(reg, c);
    ck_assert_ptr_nonnull(pl);
    ck_assert_msg(pl->version && *pl->version && pl->license && *pl->license,
                  "plugin '%s' gives no version or licence", pl->name);
    ck_assert_msg(is_identifier(c->name), "'%s' is not an identifier", c->name);
    ck_assert_msg(c->summary && *c->summary, "%s has no summary", c->name);
    switch (c->kind) {
    case DFX_KIND_SCHEDULER:
        ck_assert(((const dfx_scheduler_ops *)c->ops)->plan != NULL);
        break;
    case DFX_KIND_SAMPLER:
        ck_assert(((const dfx_sampler_ops *)c->ops)->sample != NULL);
        break;
    case DFX_KIND_MODEL:
        ck_assert(((const dfx_model_ops *)c->ops)->info != NULL);
        ck_assert(((const dfx_model_ops *)c->ops)->predict != NULL);
        break;
    case DFX_KIND_CONDITIONER:
        ck_assert(((const dfx_conditioner_ops *)c->ops)->encode != NULL);
        break;
    case DFX_KIND_GUIDANCE:
        ck_assert(((const dfx_guidance_ops *)c->ops)->guide != NULL);
        break;
    case DFX_KIND_CODEC:
        ck_assert(((const dfx_codec_ops *)c->ops)->info != NULL);
        ck_assert(((const dfx_codec_ops *)c->ops)->decode != NULL);
        break;
    }
    check_option_table(c);
    check_describe(c);
    check_defaults(reg, c);
    dfx_registry_destroy(reg);
}
END_TEST

/* ---- fixtures ------------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void setup(void)
{
    const char *base = getenv("TMPDIR");
    format(tmpdir, sizeof tmpdir, "%s/dfx_registry_XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    ck_assert_ptr_nonnull(getcwd(start_cwd, sizeof start_cwd));
    const char *env = getenv("DFX_PLUGIN_PATH");
    start_plugin_path = env ? strdup(env) : NULL;
}

/* Undoes chdir and setenv, for runs without fork (CK_FORK=no). */
static void teardown(void)
{
    if (chdir(start_cwd) != 0)
        perror(start_cwd);
    if (start_plugin_path)
        setenv("DFX_PLUGIN_PATH", start_plugin_path, 1);
    else
        unsetenv("DFX_PLUGIN_PATH");
    free(start_plugin_path);
    start_plugin_path = NULL;
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static Suite *registry_suite(size_t ncomponents)
{
    Suite *s = suite_create("registry");
    TCase *tc = tcase_create("loader");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_refusal, 0, (int)NREFUSALS);
    tcase_add_test(tc, test_refusals_in_a_row);
    tcase_add_test(tc, test_scan_folder_with_broken_plugins);
    suite_add_tcase(s, tc);

    tc = tcase_create("search_order");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_order_dirs_env_cwd);
    tcase_add_test(tc, test_order_within_plugin_path);
    tcase_add_test(tc, test_order_cwd_before_builtin);
    tcase_add_test(tc, test_same_file_and_subfolders);
    suite_add_tcase(s, tc);

    tc = tcase_create("builtins");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_builtins_present);
    tcase_add_loop_test(tc, test_conformance, 0, (int)ncomponents);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    /* one conformance test per built-in component, so each failure names
     * its component; test_builtins_present fails when there are none */
    dfx_registry *reg = NULL;
    size_t n = 0;
    if (dfx_registry_create(&reg, NULL, 0) == DFX_OK) {
        n = count_all(reg);
        dfx_registry_destroy(reg);
    }
    return test_run_suite(registry_suite(n));
}
