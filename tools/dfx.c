/* dfx, the command-line tool: run pipelines, list and describe components,
 * inspect checkpoints, print noise schedules. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dfx/dfx.h"
#include "dfx/metrics.h"
#include "dfx/pipeline.h"
#include "dfx_config.h"

#define EXIT_USAGE 2
#define EXIT_INTERRUPTED 130

static const char usage_text[] =
    "usage: dfx [--plugin-dir DIR]... COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  run PIPELINE.yaml [--set key.path=value]... [--seed N] [--dry-run] [--trace FILE.safetensors] [--quiet]\n"
    "                      run a pipeline (--dry-run prints it resolved, every default explicit)\n"
    "  run IMAGE.png [--set key.path=value]... [--seed N] ...\n"
    "                      re-run the pipeline stored in a PNG that dfx made (into NAME-rerun.png when it\n"
    "                      would write over the image)\n"
    "  train PIPELINE.yaml [--resume] [--set key.path=value]... [--seed N] [--dry-run] [--quiet]\n"
    "                      train the model of a `pipeline: train` file, writing checkpoints (a diffusers\n"
    "                      folder) to output.path; --resume continues from the checkpoint there, as if\n"
    "                      never interrupted\n"
    "  eval fid A [B] [--classifier DIR] [--batch N] [--limit N] [--save-stats FILE]\n"
    "                      Frechet distance between two image sets in a classifier's feature space (A, B: a\n"
    "                      folder of PNGs, an idx file, a .safetensors file of dfx run, or FID statistics\n"
    "                      saved by --save-stats, which stores A's; images smaller than the classifier's\n"
    "                      are padded with -1, as 28x28 Fashion-MNIST is to 32x32)\n"
    "  eval is A [--classifier DIR] [--splits N] [--batch N] [--limit N]\n"
    "                      Inception Score of an image set from the classifier's class probabilities\n"
    "  eval accuracy IMAGES LABELS [--classifier DIR] [--batch N] [--limit N]\n"
    "                      a classifier's top-1 accuracy on idx images and labels, overall and per class\n"
    "                      (the classifier: a folder `dfx train` wrote; default models/fashion-classifier)\n"
    "  eval noise A OUT.safetensors [--count N] [--seed N] [--limit N]\n"
    "                      FID's noise baseline: Gaussian noise with the per-pixel mean and variance of A\n"
    "  list [KIND]         list components (KIND: scheduler, sampler, model, conditioner, guidance, codec)\n"
    "  describe KIND NAME  print a component's options: name, type, default, range/choices, help\n"
    "  inspect FILE        list a checkpoint's tensors, dtypes and shapes (.safetensors with its\n"
    "                      metadata, or a torch .ckpt/.pt/.pth/.bin, read without running its pickle)\n"
    "  convert IN.safetensors OUT.safetensors [--dtype F16|BF16|F32]\n"
    "                      rewrite a checkpoint's floating-point tensors in another dtype\n"
    "  schedule CONFIG [--steps N] [--dump FILE.safetensors] [--set key.path=value]...\n"
    "                      print the noise schedule of a diffusers scheduler_config.json or a pipeline\n"
    "  tokenize MODEL PROMPT [--no-ftfy]\n"
    "                      print a prompt's CLIP token ids and count (MODEL: a checkpoint file, a diffusers\n"
    "                      folder or a tokenizer folder with vocab.json and merges.txt)\n"
    "  version             print the version\n"
    "\n"
    "Plugins are searched in --plugin-dir folders, $DFX_PLUGIN_PATH, ./plugins and the built-in folder.\n";

static void die_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "dfx: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\n%s", usage_text);
    exit(EXIT_USAGE);
}

static int fail(dfx_status st)
{
    const char *msg = dfx_error_message();
    fprintf(stderr, "dfx: error: %s\n", *msg ? msg : dfx_status_text(st));
    return st == DFX_ERR_ABORTED ? EXIT_INTERRUPTED : EXIT_FAILURE;
}

static const char *plugin_dirs[64];
static size_t nplugin_dirs;

static dfx_registry *open_registry(void)
{
    dfx_registry *reg;
    dfx_status st = dfx_registry_create(&reg, plugin_dirs, nplugin_dirs);
    if (st)
        exit(fail(st));
    for (size_t i = 0; i < dfx_registry_refusal_count(reg); i++)
        fprintf(stderr, "dfx: warning: plugin refused: %s\n", dfx_registry_refusal(reg, i));
    return reg;
}

static void on_sigint(int sig)
{
    (void)sig;
    dfx_abort_request();
}

static void install_sigint(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = (int)SA_RESETHAND; /* a second Ctrl-C kills at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* Applies --set, --seed and --steps style overrides collected from argv. */
static int apply_overrides(dfx_pipeline *p, char **sets, int nsets)
{
    for (int i = 0; i < nsets; i++) {
        dfx_status st = dfx_pipeline_set(p, sets[i]);
        if (st)
            return fail(st);
    }
    return 0;
}

static const char *need_arg(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc)
        die_usage("%s needs a value", argv[*i]);
    return argv[++*i];
}

/* Whether the file starts with the PNG signature: `dfx run` re-runs an
 * image dfx made whatever the file is called. */
static bool is_png_file(const char *path)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    unsigned char buf[8];
    FILE *f = fopen(path, "rb");
    bool yes = f && fread(buf, 1, sizeof buf, f) == sizeof buf && memcmp(buf, sig, sizeof sig) == 0;
    if (f)
        fclose(f);
    return yes;
}

/* path's folder ("." when it names none) as a realpath, or NULL. */
static char *real_folder(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    char *real = dir ? realpath(dir, NULL) : NULL;
    free(dir);
    return real;
}

static bool same_file(const char *a, const char *b)
{
    char *ra = realpath(a, NULL), *rb = realpath(b, NULL);
    bool same = ra && rb && strcmp(ra, rb) == 0;
    free(ra);
    free(rb);
    return same;
}

/* Whether `image` is one of the files NAME-0000.png, NAME-0001.png, ... that
 * a batch run with output.path NAME.png writes. */
static bool in_batch_of(const char *image, const char *stored)
{
    size_t n = strlen(stored);
    if (n < 4 || strcasecmp(stored + n - 4, ".png") != 0)
        return false;
    const char *sbase = strrchr(stored, '/'), *ibase = strrchr(image, '/');
    sbase = sbase ? sbase + 1 : stored;
    ibase = ibase ? ibase + 1 : image;
    size_t stem = strlen(sbase) - 4, digits = 0;
    if (strncmp(ibase, sbase, stem) != 0 || ibase[stem] != '-')
        return false;
    while (ibase[stem + 1 + digits] >= '0' && ibase[stem + 1 + digits] <= '9')
        digits++;
    if (digits < 4 || strcasecmp(ibase + stem + 1 + digits, ".png") != 0)
        return false;
    char *a = real_folder(image), *b = real_folder(stored);
    bool same = a && b && strcmp(a, b) == 0;
    free(a);
    free(b);
    return same;
}

/* For `dfx run IMAGE.png`: *set becomes the --set that keeps the re-run
 * from writing over the image it came from, *target its path; both stay
 * NULL when the stored output.path does not write over it (or there is
 * none). It does when it is the image (a single image, or an image of a
 * per_image batch, which stores its own name) or when the image is one of
 * the files of the shared batch it stores; then NAME-rerun.png beside it
 * instead (a batch writes NAME-rerun-0000.png, ...). */
static dfx_status rerun_output(const char *image, const char *stored, char **target, char **set)
{
    *target = *set = NULL;
    if (!stored)
        return DFX_OK;
    char *abs = NULL;
    /* relative paths in the stored pipeline resolve against the image's folder */
    const char *slash = strrchr(image, '/');
    if (stored[0] != '/' && slash) {
        size_t n = (size_t)(slash - image) + strlen(stored) + 2;
        if (!(abs = malloc(n)))
            return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        snprintf(abs, n, "%.*s/%s", (int)(slash - image), image, stored);
        stored = abs;
    }
    dfx_status st = DFX_OK;
    if (same_file(stored, image) || in_batch_of(image, stored)) {
        size_t n = strlen(stored), stem = n >= 4 && strcasecmp(stored + n - 4, ".png") == 0 ? n - 4 : n;
        *target = malloc(n + sizeof "-rerun");
        /* a YAML single-quoted scalar: quotes doubled */
        *set = malloc(sizeof "output.path=''" + 2 * (n + sizeof "-rerun"));
        if (*target && *set) {
            snprintf(*target, n + sizeof "-rerun", "%.*s-rerun%s", (int)stem, stored, stored + stem);
            char *q = *set + sprintf(*set, "output.path='");
            for (const char *c = *target; *c; c++)
                if ((*q++ = *c) == '\'')
                    *q++ = '\'';
            strcpy(q, "'");
        } else {
            free(*target);
            free(*set);
            *target = *set = NULL;
            st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        }
    }
    free(abs);
    return st;
}

static int cmd_run(int argc, char **argv, bool train)
{
    const char *file = NULL, *trace = NULL;
    bool dry = false, quiet = false, resume = false;
    char **sets = calloc((size_t)argc + 1, sizeof *sets);
    char seedbuf[64];
    int nsets = 0;
    if (!sets)
        return EXIT_FAILURE;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--set")) {
            sets[nsets++] = (char *)need_arg(argc, argv, &i);
        } else if (!strcmp(argv[i], "--seed")) {
            const char *v = need_arg(argc, argv, &i);
            char *end;
            errno = 0;
            long long s = strtoll(v, &end, 10);
            if (errno || *end || s < 0 || end == v)
                die_usage("--seed: '%s' is not a non-negative integer", v);
            snprintf(seedbuf, sizeof seedbuf, "seed=%lld", s);
            sets[nsets++] = seedbuf;
        } else if (!strcmp(argv[i], "--dry-run")) {
            dry = true;
        } else if (!strcmp(argv[i], "--quiet")) {
            quiet = true;
        } else if (!strcmp(argv[i], "--trace") && !train) {
            trace = need_arg(argc, argv, &i);
        } else if (!strcmp(argv[i], "--resume") && train) {
            resume = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            die_usage(train ? "train: unknown option '%s'" : "run: unknown option '%s'", argv[i]);
        } else if (!file) {
            file = argv[i];
        } else {
            die_usage("run: more than one pipeline file ('%s')", argv[i]);
        }
    }
    if (!file)
        die_usage("%s", train ? "train: which pipeline? (dfx train PIPELINE.yaml)"
                              : "run: which pipeline? (dfx run PIPELINE.yaml)");

    dfx_pipeline *p;
    const bool image = is_png_file(file);
    dfx_status st = image ? dfx_pipeline_load_png(&p, file) : dfx_pipeline_load(&p, file);
    if (st) {
        free(sets);
        return fail(st);
    }
    bool own_output = false;
    for (int i = 0; i < nsets; i++)
        own_output = own_output || !strncmp(sets[i], "output.path=", 12) || !strncmp(sets[i], "output=", 7);
    if (image && !own_output) {
        char *target, *set;
        st = rerun_output(file, dfx_pipeline_get(p, "output.path"), &target, &set);
        if (!st && set) {
            fprintf(stderr, "dfx: %s: its pipeline would write over it; writing %s instead (--set "
                    "output.path=... to choose)\n", file, target);
            st = dfx_pipeline_set(p, set);
        }
        free(set);
        free(target);
        if (st) {
            free(sets);
            dfx_pipeline_destroy(p);
            return fail(st);
        }
    }
    int rc = apply_overrides(p, sets, nsets);
    free(sets);
    const char *task = dfx_pipeline_get(p, "pipeline");
    if (!rc && train != (task && !strcmp(task, "train"))) {
        fprintf(stderr, "dfx: %s: %s\n", file,
                train ? "not a training pipeline (pipeline: train); run it with `dfx run`"
                      : "a training pipeline (pipeline: train): run it with `dfx train`");
        rc = EXIT_USAGE;
    }
    dfx_registry *reg = NULL;
    if (!rc) {
        reg = open_registry();
        /* loading a full-size checkpoint takes seconds: say so on a terminal
         * (Ctrl-C meanwhile ends the process; nothing is written yet) */
        const bool tell = !quiet && !dry && isatty(STDERR_FILENO);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (tell)
            fprintf(stderr, "loading the pipeline's components...");
        st = dfx_pipeline_resolve(p, reg);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (tell)
            fprintf(stderr, "\rloaded the pipeline's components in %.1f s\n",
                    (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
        rc = st ? fail(st) : 0;
    }
    if (!rc && dry) {
        st = dfx_pipeline_write_resolved(p, stdout);
        rc = st ? fail(st) : 0;
    } else if (!rc) {
        dfx_run_params rp;
        dfx_run_params_init(&rp);
        rp.trace_path = trace;
        rp.progress = quiet ? NULL : stderr;
        rp.progress_tty = isatty(STDERR_FILENO);
        rp.resume = resume;
        install_sigint();
        st = dfx_pipeline_run(p, &rp);
        rc = st ? fail(st) : 0;
    }
    dfx_pipeline_destroy(p);
    dfx_registry_destroy(reg);
    return rc;
}

static int cmd_list(int argc, char **argv)
{
    dfx_kind kinds[6] = {DFX_KIND_SCHEDULER,   DFX_KIND_SAMPLER,  DFX_KIND_MODEL,
                         DFX_KIND_CONDITIONER, DFX_KIND_GUIDANCE, DFX_KIND_CODEC};
    int nk = 6;
    if (argc > 2)
        die_usage("%s", "list takes at most one KIND");
    if (argc == 2) {
        if (!dfx_kind_parse(argv[1], &kinds[0]))
            die_usage("list: unknown kind '%s' (scheduler, sampler, model, conditioner, guidance, codec)", argv[1]);
        nk = 1;
    }
    dfx_registry *reg = open_registry();
    bool first = true;
    for (int k = 0; k < nk; k++) {
        const dfx_component *cs[512];
        size_t n = dfx_registry_list(reg, kinds[k], cs, 512);
        if (!n && nk > 1)
            continue; /* a kind nothing provides yet */
        printf("%s%s%s:\n", first ? "" : "\n", dfx_kind_name(kinds[k]), kinds[k] == DFX_KIND_GUIDANCE ? "" : "s");
        first = false;
        for (size_t i = 0; i < n && i < 512; i++) {
            const dfx_plugin *pl = dfx_registry_plugin_of(reg, cs[i]);
            printf("  %-18s %-16s %s\n", cs[i]->name, pl ? pl->name : "?", cs[i]->summary);
        }
    }
    dfx_registry_destroy(reg);
    return 0;
}

static int cmd_describe(int argc, char **argv)
{
    dfx_kind kind;
    if (argc != 3)
        die_usage("%s", "describe needs KIND and NAME (e.g. dfx describe sampler ddim)");
    if (!dfx_kind_parse(argv[1], &kind))
        die_usage("describe: unknown kind '%s' (scheduler, sampler, model, conditioner, guidance, codec)", argv[1]);
    dfx_registry *reg = open_registry();
    const dfx_component *c = dfx_registry_find(reg, kind, argv[2]);
    int rc = 0;
    if (!c) {
        fprintf(stderr, "dfx: error: no %s named '%s'; `dfx list %s` shows them\n", argv[1], argv[2], argv[1]);
        rc = EXIT_FAILURE;
    } else {
        const dfx_plugin *pl = dfx_registry_plugin_of(reg, c);
        dfx_component_describe(c, stdout);
        printf("\n  from plugin '%s' %s (%s), %s\n", pl->name, pl->version ? pl->version : "",
               pl->license ? pl->license : "no licence given", dfx_registry_origin(reg, c));
    }
    dfx_registry_destroy(reg);
    return rc;
}

/* Lists a checkpoint through dfx_weights, so that every format it reads is
 * listed the same way; a safetensors file's metadata comes from its own
 * reader. */
/* Rewrites a checkpoint's floating-point tensors in another dtype (F16 to
 * ship trained weights at half the size); other tensors and the metadata
 * are copied as they are. */
static int cmd_convert(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *dtype_name = "F16";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dtype"))
            dtype_name = need_arg(argc, argv, &i);
        else if (argv[i][0] == '-' && argv[i][1])
            die_usage("convert: unknown option '%s'", argv[i]);
        else if (!in)
            in = argv[i];
        else if (!out)
            out = argv[i];
        else
            die_usage("convert: unexpected argument '%s'", argv[i]);
    }
    if (!in || !out)
        die_usage("%s", "convert needs IN.safetensors and OUT.safetensors");
    dfx_dtype dtype;
    if (!dfx_dtype_parse(dtype_name, &dtype) ||
        (dtype != DFX_DTYPE_F16 && dtype != DFX_DTYPE_BF16 && dtype != DFX_DTYPE_F32))
        die_usage("convert: --dtype '%s': expected F16, BF16 or F32", dtype_name);
    dfx_safetensors *f;
    dfx_status st = dfx_safetensors_open(in, &f);
    if (st)
        return fail(st);
    const int64_t n = dfx_safetensors_count(f), m = dfx_safetensors_metadata_count(f);
    const char **names = calloc((size_t)n + 1, sizeof *names);
    dfx_tensor **ts = calloc((size_t)n + 1, sizeof *ts);
    const char **keys = calloc((size_t)m + 1, sizeof *keys), **vals = calloc((size_t)m + 1, sizeof *vals);
    if (!names || !ts || !keys || !vals)
        st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    for (int64_t i = 0; !st && i < n; i++) {
        dfx_tensor v;
        names[i] = dfx_safetensors_name(f, i);
        if (!(st = dfx_safetensors_view(f, names[i], &v))) {
            const bool flt = v.dtype == DFX_DTYPE_F32 || v.dtype == DFX_DTYPE_F16 ||
                             v.dtype == DFX_DTYPE_BF16 || v.dtype == DFX_DTYPE_F64;
            st = dfx_tensor_convert(&v, flt ? dtype : v.dtype, &ts[i]);
        }
    }
    for (int64_t i = 0; !st && i < m; i++) {
        keys[i] = dfx_safetensors_metadata_key(f, i);
        vals[i] = dfx_safetensors_metadata(f, keys[i]);
    }
    if (!st)
        st = dfx_safetensors_write(out, n, names, (const dfx_tensor *const *)ts, m, keys, vals);
    for (int64_t i = 0; ts && i < n; i++)
        dfx_tensor_destroy(ts[i]);
    free(ts);
    free(names);
    free(keys);
    free(vals);
    dfx_safetensors_close(f);
    if (st)
        return fail(st);
    printf("%s: %lld tensors, floating point as %s\n", out, (long long)n, dfx_dtype_name(dtype));
    return 0;
}

static int cmd_inspect(int argc, char **argv)
{
    if (argc != 2)
        die_usage("%s", "inspect needs one FILE (.safetensors, .ckpt, .pt, .pth, .bin)");
    dfx_weights *w;
    dfx_status st = dfx_weights_open(&w, argv[1]);
    if (st)
        return fail(st);
    int64_t n = dfx_weights_count(w);
    const char *format = dfx_weights_format(w);
    size_t total = 0;
    if (strcmp(format, "safetensors") == 0)
        printf("%s: %lld tensors\n", argv[1], (long long)n);
    else
        printf("%s: %lld tensors (%s checkpoint)\n", argv[1], (long long)n, format);
    for (int64_t i = 0; i < n; i++) {
        dfx_tensor v;
        const char *name = dfx_weights_name(w, i);
        char shape[256];
        dfx_weights_view(w, name, &v);
        total += dfx_tensor_nbytes(&v);
        printf("  %-60s %-8s %s\n", name, dfx_dtype_name(v.dtype), dfx_tensor_shape_str(&v, shape, sizeof shape));
    }
    printf("  %zu bytes of data\n", total);
    dfx_safetensors *st_file = NULL;
    if (strcmp(format, "safetensors") == 0 && (st = dfx_safetensors_open(argv[1], &st_file))) {
        dfx_weights_close(w);
        return fail(st);
    }
    int64_t m = dfx_safetensors_metadata_count(st_file);
    if (m)
        printf("metadata:\n");
    for (int64_t i = 0; i < m; i++) {
        const char *k = dfx_safetensors_metadata_key(st_file, i);
        const char *v = dfx_safetensors_metadata(st_file, k);
        size_t len = strlen(v);
        printf("  %s: %.*s%s\n", k, len > 200 ? 200 : (int)len, v, len > 200 ? " ..." : "");
    }
    dfx_safetensors_close(st_file);
    dfx_weights_close(w);
    return 0;
}

static int cmd_schedule(int argc, char **argv)
{
    const char *config = NULL, *dump = NULL, *steps = NULL;
    char **sets = calloc((size_t)argc + 4, sizeof *sets);
    int nsets = 0;
    char stepbuf[64], dumpbuf[4096];
    if (!sets)
        return EXIT_FAILURE;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps"))
            steps = need_arg(argc, argv, &i);
        else if (!strcmp(argv[i], "--dump"))
            dump = need_arg(argc, argv, &i);
        else if (!strcmp(argv[i], "--set"))
            sets[nsets++] = (char *)need_arg(argc, argv, &i);
        else if (argv[i][0] == '-' && argv[i][1])
            die_usage("schedule: unknown option '%s'", argv[i]);
        else if (!config)
            config = argv[i];
        else
            die_usage("schedule: more than one CONFIG ('%s')", argv[i]);
    }
    if (!config)
        die_usage("%s", "schedule: which config? (a scheduler_config.json or a pipeline .yaml)");
    if (steps) {
        snprintf(stepbuf, sizeof stepbuf, "scheduler.steps=%s", steps);
        sets[nsets++] = stepbuf;
    }
    if (dump) {
        snprintf(dumpbuf, sizeof dumpbuf, "output.path='%s'", dump);
        sets[nsets++] = dumpbuf;
    }
    dfx_pipeline *p;
    dfx_status st;
    size_t len = strlen(config);
    if (len > 5 && !strcmp(config + len - 5, ".json")) {
        /* a diffusers config: a schedule-only pipeline around it */
        char *yaml = NULL;
        size_t ylen = 0;
        FILE *f = open_memstream(&yaml, &ylen);
        if (!f)
            return EXIT_FAILURE;
        fprintf(f, "dfx: 1\npipeline: schedule\nscheduler:\n  config: \"");
        for (const char *c = config; *c; c++)
            fprintf(f, *c == '"' || *c == '\\' ? "\\%c" : "%c", *c);
        fprintf(f, "\"\n");
        fclose(f);
        st = dfx_pipeline_parse(&p, yaml, ylen, "dfx schedule");
        free(yaml);
    } else {
        st = dfx_pipeline_load(&p, config);
        /* the schedule view of a pipeline: its model and sampler are not built */
        if (!st)
            st = dfx_pipeline_set(p, "pipeline=schedule");
    }
    if (st) {
        free(sets);
        return fail(st);
    }
    int rc = apply_overrides(p, sets, nsets);
    free(sets);
    dfx_registry *reg = NULL;
    if (!rc) {
        reg = open_registry();
        st = dfx_pipeline_resolve(p, reg);
        if (!st)
            st = dfx_pipeline_run(p, NULL);
        rc = st ? fail(st) : 0;
    }
    dfx_pipeline_destroy(p);
    dfx_registry_destroy(reg);
    return rc;
}

static bool is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* The tokenizer a MODEL argument stands for: a tokenizer folder, a
 * diffusers folder's tokenizer/, or for a checkpoint file OpenAI's CLIP
 * vocabulary that single files were trained with (padded with "!" when the
 * file's text encoder is SD 2.x's OpenCLIP). */
static dfx_status open_model_tokenizer(const char *model, dfx_clip_tokenizer **tok)
{
    char path[4200];
    if (is_dir(model)) {
        snprintf(path, sizeof path, "%s/vocab.json", model);
        if (access(path, F_OK) == 0)
            return dfx_clip_tokenizer_open(tok, model);
        snprintf(path, sizeof path, "%s/tokenizer", model);
        if (is_dir(path))
            return dfx_clip_tokenizer_open(tok, path);
        return dfx_error_set(DFX_ERR_NOT_FOUND,
                             "%s: no tokenizer: expected vocab.json and merges.txt in it or in its tokenizer/ "
                             "folder (a diffusers pipeline folder)", model);
    }
    dfx_weights *w;
    dfx_status st = dfx_weights_open(&w, model);
    if (st)
        return st;
    bool openclip = false;
    for (int64_t i = 0; i < dfx_weights_count(w) && !openclip; i++)
        openclip = strncmp(dfx_weights_name(w, i), "cond_stage_model.model.", 23) == 0;
    dfx_weights_close(w);
    return dfx_clip_tokenizer_open_default(tok, openclip);
}

static int cmd_tokenize(int argc, char **argv)
{
    bool ftfy = true;
    const char *args[2];
    int nargs = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--no-ftfy"))
            ftfy = false;
        else if (nargs < 2)
            args[nargs++] = argv[i];
        else
            die_usage("tokenize: unexpected argument '%s'", argv[i]);
    }
    if (nargs != 2)
        die_usage("%s", "tokenize needs MODEL and PROMPT (e.g. dfx tokenize model.safetensors \"a photo\")");
    dfx_clip_tokenizer *tok;
    dfx_status st = open_model_tokenizer(args[0], &tok);
    if (st)
        return fail(st);
    int64_t *ids = NULL, n = 0;
    if ((st = dfx_clip_tokenizer_encode(tok, args[1], ftfy, &ids, &n))) {
        dfx_clip_tokenizer_close(tok);
        return fail(st);
    }
    const int64_t fit = dfx_clip_tokenizer_max_length(tok) - 2, used = n - 2;
    printf("tokens: %lld of %lld (+ start and end)", (long long)used, (long long)fit);
    if (used > fit)
        printf(": the last %lld are dropped", (long long)(used - fit));
    printf("\nids:");
    for (int64_t i = 0; i < n; i++)
        printf(" %lld", (long long)ids[i]);
    printf("\nbpe:");
    for (int64_t i = 0; i < n; i++)
        printf(" %s", dfx_clip_tokenizer_token(tok, ids[i]));
    printf("\n");
    free(ids);
    dfx_clip_tokenizer_close(tok);
    return 0;
}

/* ---- dfx eval ------------------------------------------------------------ */

#define DEFAULT_CLASSIFIER "models/fashion-classifier"

static int64_t count_arg(const char *opt, const char *v, int64_t min)
{
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || *end || end == v || n < min) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s: '%%s' is not an integer >= %lld", opt, (long long)min);
        die_usage(msg, v);
    }
    return n;
}

/* The classifier instance over the checkpoint folder dir. */
static dfx_status open_classifier(dfx_registry *reg, const char *dir, bool given, dfx_instance **out,
                                  dfx_model_info *info)
{
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/classifier/model.safetensors", dir);
    if (given && !is_dir(dir))
        return dfx_error_set(DFX_ERR_NOT_FOUND, "--classifier %s: no such folder (give the folder `dfx train` "
                                                "wrote for a classifier, or its classifier/)", dir);
    if (!given && access(probe, F_OK) != 0)
        return dfx_error_set(DFX_ERR_NOT_FOUND,
                             "no trained classifier in %s (the default, relative to the current folder): pass "
                             "--classifier DIR, or train one with `dfx train "
                             "pipelines/train_fashion_classifier.yaml` and copy its output there", dir);
    /* a YAML single-quoted scalar: quotes doubled */
    size_t n = strlen(dir);
    char *yaml = malloc(2 * n + 64);
    if (!yaml)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    char *q = yaml + sprintf(yaml, "{type: classifier, path: '");
    for (const char *c = dir; *c; c++)
        if ((*q++ = *c) == '\'')
            *q++ = '\'';
    strcpy(q, "'}");
    dfx_status st = dfx_instance_create(out, reg, DFX_KIND_MODEL, yaml, "--classifier");
    free(yaml);
    if (!st && (st = dfx_classifier_info(*out, info))) {
        dfx_instance_destroy(*out);
        *out = NULL;
    }
    return st;
}

/* The FID statistics of A or B: a statistics file as saved, else the
 * classifier's features of the images. */
static dfx_status eval_stats(dfx_instance *cls, const dfx_model_info *info, const char *path,
                             dfx_classify_params *cp, dfx_fid_stats *s, bool *from_file)
{
    *from_file = dfx_fid_stats_is_file(path);
    if (*from_file) {
        dfx_status st = dfx_fid_stats_load(s, path);
        if (!st && s->d != info->features)
            st = dfx_error_set(DFX_ERR_INVALID_ARG, "%s: statistics of %lld features; the classifier gives %lld "
                                                    "(saved with another one?)",
                               path, (long long)s->d, (long long)info->features);
        return st;
    }
    dfx_image_set *set;
    dfx_status st = dfx_image_set_open(path, NULL, &set);
    if (!st)
        st = dfx_classifier_fid_stats(cls, set, cp, s);
    dfx_image_set_destroy(set);
    return st;
}

/* `eval noise`: writes the noise baseline of set A (count images, default
 * as many as it has) as a `dfx run` output that eval fid and is read. */
static int noise_baseline(const char *path, const char *out, int64_t limit, int64_t count, uint64_t seed)
{
    dfx_image_set *set;
    dfx_tensor *t = NULL;
    dfx_status st = dfx_image_set_open(path, NULL, &set);
    const int64_t have = st ? 0 : dfx_image_set_count(set), used = limit && limit < have ? limit : have;
    if (!st)
        st = dfx_image_set_noise_baseline(set, limit, count ? count : used, seed, &t);
    if (!st) {
        const char *names[] = {"samples"}, *keys[] = {"dfx_noise_baseline"};
        char what[4300];
        snprintf(what, sizeof what, "Gaussian noise matched in each pixel's mean and variance to the first %lld "
                 "images of %s, seed %llu", (long long)used, path, (unsigned long long)seed);
        const char *vals[] = {what};
        st = dfx_safetensors_write(out, 1, names, (const dfx_tensor *const *)&t, 1, keys, vals);
        if (!st)
            printf("%s: %lld images of %s\n", out, (long long)t->shape[0], what);
    }
    dfx_tensor_destroy(t);
    dfx_image_set_destroy(set);
    return st ? fail(st) : 0;
}

static int cmd_eval(int argc, char **argv)
{
    if (argc < 2)
        die_usage("%s", "eval needs a metric: fid, is, accuracy or noise");
    const char *metric = argv[1];
    const bool fid = !strcmp(metric, "fid"), is = !strcmp(metric, "is"), acc = !strcmp(metric, "accuracy"),
               noise = !strcmp(metric, "noise");
    if (!fid && !is && !acc && !noise)
        die_usage("eval: unknown metric '%s' (fid, is, accuracy, noise)", metric);
    const char *dir = DEFAULT_CLASSIFIER, *save = NULL, *args[2] = {NULL, NULL};
    bool given = false;
    int nargs = 0;
    dfx_classify_params cp;
    dfx_classify_params_init(&cp);
    int64_t splits = 10, count = 0, seed = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--classifier")) {
            dir = need_arg(argc, argv, &i);
            given = true;
        } else if (!strcmp(argv[i], "--batch")) {
            cp.batch = count_arg("--batch", need_arg(argc, argv, &i), 1);
        } else if (!strcmp(argv[i], "--limit")) {
            cp.limit = count_arg("--limit", need_arg(argc, argv, &i), 1);
        } else if (!strcmp(argv[i], "--splits") && is) {
            splits = count_arg("--splits", need_arg(argc, argv, &i), 1);
        } else if (!strcmp(argv[i], "--save-stats") && fid) {
            save = need_arg(argc, argv, &i);
        } else if (!strcmp(argv[i], "--count") && noise) {
            count = count_arg("--count", need_arg(argc, argv, &i), 1);
        } else if (!strcmp(argv[i], "--seed") && noise) {
            seed = count_arg("--seed", need_arg(argc, argv, &i), 0);
        } else if (argv[i][0] == '-' && argv[i][1]) {
            die_usage("eval: unknown option '%s'", argv[i]);
        } else if (nargs < (is ? 1 : 2)) {
            args[nargs++] = argv[i];
        } else {
            die_usage("eval: unexpected argument '%s'", argv[i]);
        }
    }
    if (fid && (nargs < 1 || (nargs < 2 && !save)))
        die_usage("%s", "eval fid needs two image sets A and B (or A and --save-stats FILE)");
    if (is && nargs != 1)
        die_usage("%s", "eval is needs one image set");
    if (acc && nargs != 2)
        die_usage("%s", "eval accuracy needs IMAGES and LABELS (idx files)");
    if (noise && nargs != 2)
        die_usage("%s", "eval noise needs an image set and OUT.safetensors");
    if (noise)
        return noise_baseline(args[0], args[1], cp.limit, count, (uint64_t)seed);

    /* Ctrl-C while loading stops the pass at its first batch */
    install_sigint();
    dfx_registry *reg = open_registry();
    dfx_instance *cls = NULL;
    dfx_model_info info;
    dfx_status st = open_classifier(reg, dir, given, &cls, &info);
    cp.progress = stderr;
    cp.progress_tty = isatty(STDERR_FILENO);
    if (!st && fid) {
        dfx_fid_stats s[2] = {{0}, {0}};
        bool file[2] = {false, false};
        for (int k = 0; !st && k < nargs; k++) {
            cp.label = k ? "features of B" : "features of A";
            st = eval_stats(cls, &info, args[k], &cp, &s[k], &file[k]);
        }
        if (!st && save && !(st = dfx_fid_stats_save(&s[0], save)))
            fprintf(stderr, "dfx: saved the statistics of %s (%lld images) to %s\n", args[0], (long long)s[0].n,
                    save);
        double v = NAN;
        if (!st && nargs == 2 && !(st = dfx_fid_compute(&s[0], &s[1], &v)))
            printf("FID %.6g (A: %lld images%s, B: %lld images%s; features: dfx classifier %s, %lld-d)\n", v,
                   (long long)s[0].n, file[0] ? " as saved statistics" : "", (long long)s[1].n,
                   file[1] ? " as saved statistics" : "", dir, (long long)info.features);
        dfx_fid_stats_fini(&s[0]);
        dfx_fid_stats_fini(&s[1]);
    } else if (!st && is) {
        dfx_image_set *set = NULL;
        float *probs = NULL;
        if (!(st = dfx_image_set_open(args[0], NULL, &set))) {
            const int64_t count = dfx_image_set_count(set);
            const int64_t n = cp.limit > 0 && cp.limit < count ? cp.limit : count;
            double mean, std;
            cp.label = "probabilities";
            if (!(probs = malloc((size_t)(n * info.classes) * sizeof *probs)))
                st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory for %lld images", (long long)n);
            if (!st && !(st = dfx_classifier_run(cls, set, &cp, NULL, probs)) &&
                !(st = dfx_inception_score_compute(probs, n, info.classes, splits, &mean, &std)))
                printf("IS %.4f \u00b1 %.4f (%lld images, %lld splits; classifier %s, %lld classes)\n", mean, std,
                       (long long)n, (long long)splits, dir, (long long)info.classes);
        }
        free(probs);
        dfx_image_set_destroy(set);
    } else if (!st && acc) {
        dfx_image_set *set = NULL;
        int64_t *conf = NULL, correct = 0, total = 0;
        cp.label = "images";
        if (!(conf = calloc((size_t)(info.classes * info.classes), sizeof *conf)))
            st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        if (!st && !(st = dfx_image_set_open(args[0], args[1], &set)) &&
            !(st = dfx_classifier_accuracy(cls, set, &cp, &correct, &total, conf))) {
            printf("accuracy %.4f (%lld of %lld images; classifier %s)\n", (double)correct / (double)total,
                   (long long)correct, (long long)total, dir);
            for (int64_t k = 0; k < info.classes; k++) {
                int64_t row = 0;
                for (int64_t j = 0; j < info.classes; j++)
                    row += conf[k * info.classes + j];
                if (row)
                    printf("  class %lld: %.4f (%lld of %lld)\n", (long long)k,
                           (double)conf[k * info.classes + k] / (double)row, (long long)conf[k * info.classes + k],
                           (long long)row);
            }
        }
        free(conf);
        dfx_image_set_destroy(set);
    }
    dfx_instance_destroy(cls);
    dfx_registry_destroy(reg);
    return st ? fail(st) : 0;
}

int main(int argc, char **argv)
{
    int i = 1;
    while (i < argc && !strcmp(argv[i], "--plugin-dir")) {
        if (i + 1 >= argc)
            die_usage("%s", "--plugin-dir needs a folder");
        if (nplugin_dirs < sizeof plugin_dirs / sizeof *plugin_dirs)
            plugin_dirs[nplugin_dirs++] = argv[i + 1];
        i += 2;
    }
    if (i >= argc || !strcmp(argv[i], "help") || !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
        fputs(usage_text, i >= argc ? stderr : stdout);
        return i >= argc ? EXIT_USAGE : 0;
    }
    const char *cmd = argv[i];
    int sub_argc = argc - i;
    char **sub_argv = argv + i;
    if (!strcmp(cmd, "run"))
        return cmd_run(sub_argc, sub_argv, false);
    if (!strcmp(cmd, "train"))
        return cmd_run(sub_argc, sub_argv, true);
    if (!strcmp(cmd, "eval"))
        return cmd_eval(sub_argc, sub_argv);
    if (!strcmp(cmd, "list"))
        return cmd_list(sub_argc, sub_argv);
    if (!strcmp(cmd, "describe"))
        return cmd_describe(sub_argc, sub_argv);
    if (!strcmp(cmd, "inspect"))
        return cmd_inspect(sub_argc, sub_argv);
    if (!strcmp(cmd, "convert"))
        return cmd_convert(sub_argc, sub_argv);
    if (!strcmp(cmd, "schedule"))
        return cmd_schedule(sub_argc, sub_argv);
    if (!strcmp(cmd, "tokenize"))
        return cmd_tokenize(sub_argc, sub_argv);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("dfx %s (plugin ABI %u, BLAS %s)\n", DFX_VERSION, DFX_ABI_VERSION, dfx_ops_blas_core());
        return 0;
    }
    die_usage("unknown command '%s'", cmd);
    return EXIT_USAGE;
}
