/* `pipeline: train` end to end on a tiny UNet2DModel and an idx dataset the
 * test writes: memorising 8 images (DDIM samples of the trained model land
 * on them), resuming equals an uninterrupted run bit for bit, a diverging
 * run stops at the step that broke and keeps its last good checkpoint, a
 * checkpoint that cannot be written (disk full) leaves the previous one
 * whole, Ctrl-C checkpoints the step it stopped at, and bad data files are
 * refused by name. */
#include <check.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dfx/dfx.h"
#include "dfx/grad.h"
#include "dfx/pipeline.h"
#include "dfx/safetensors.h"

#define N_IMAGES 8
#define SIDE 8

static dfx_registry *reg;
static char dir[256];
static int seed = 3;
static const char *dfx_exe;

static const char config_json[] =
    "{\"_class_name\": \"UNet2DModel\", \"sample_size\": 8, \"in_channels\": 1,"
    " \"out_channels\": 1, \"block_out_channels\": [16, 32], \"layers_per_block\": 1,"
    " \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\"],"
    " \"up_block_types\": [\"AttnUpBlock2D\", \"UpBlock2D\"],"
    " \"attention_head_dim\": 8, \"norm_num_groups\": 4}";

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

/* 8 random black-and-white 8x8 images (a fixed generator): no two are
 * shifts of each other, so a convolutional network cannot produce one from
 * another by translating */
static unsigned char pixel(int i, int y, int x)
{
    uint32_t h = (uint32_t)(i * 64 + y * 8 + x) * 2654435761u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    return h & 1 ? 255 : 0;
}

static void write_idx_images(const char *path)
{
    unsigned char buf[16 + N_IMAGES * SIDE * SIDE] = {0, 0, 0x08, 3, 0, 0, 0, N_IMAGES,
                                                      0, 0, 0, SIDE, 0, 0, 0, SIDE};
    for (int i = 0; i < N_IMAGES; i++)
        for (int y = 0; y < SIDE; y++)
            for (int x = 0; x < SIDE; x++)
                buf[16 + (i * SIDE + y) * SIDE + x] = pixel(i, y, x);
    write_file(path, buf, sizeof buf);
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/dfx_test_train_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, config_json, strlen(config_json));
    snprintf(path, sizeof path, "%s/images.idx", dir);
    write_idx_images(path);
    /* the same network learning its variance (IDDPM) */
    char lv[sizeof config_json + 8];
    snprintf(lv, sizeof lv, "%s", config_json);
    char *oc = strstr(lv, "\"out_channels\": 1");
    ck_assert_ptr_nonnull(oc);
    oc[16] = '2';
    mkdir(strcat(strcpy(path, dir), "/lv"), 0777);
    snprintf(path, sizeof path, "%s/lv/config.json", dir);
    write_file(path, lv, strlen(lv));
    ck_assert_msg(dfx_registry_create(&reg, NULL, 0) == DFX_OK, "%s", dfx_error_message());
}

static void teardown(void)
{
    dfx_registry_destroy(reg);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* runs a train pipeline with train options train_opts (YAML flow-map entries) */
static const char *prediction = "epsilon";
static const char *config_dir = "";   /* below dir: "" or "/lv" */
static const char *scheduler = "{type: linear, train_steps: 100}";

static int write_yaml(char *yaml, size_t size, const char *out, const char *train_opts,
                      const char *images)
{
    return snprintf(yaml, size,
                    "dfx: 1\npipeline: train\nseed: %d\n"
                    "model: {type: unet2d, config: %s%s/config.json, seed: 1, prediction: %s}\n"
                    "scheduler: %s\n"
                    "data: {images: %s}\n"
                    "train: {batch: 8, %s}\n"
                    "output: {path: %s/%s}\n",
                    seed, dir, config_dir, prediction, scheduler, images, train_opts, dir, out);
}

static dfx_status train(const char *out, const char *train_opts, bool resume, const char *images)
{
    char yaml[2048];
    write_yaml(yaml, sizeof yaml, out, train_opts, images);
    dfx_pipeline *p;
    dfx_status st = dfx_pipeline_parse(&p, yaml, strlen(yaml), "train.yaml");
    ck_assert_msg(st == DFX_OK, "%s", dfx_error_message());
    st = dfx_pipeline_resolve(p, reg);
    ck_assert_msg(st == DFX_OK, "%s", dfx_error_message());
    dfx_run_params rp;
    dfx_run_params_init(&rp);
    rp.resume = resume;
    st = dfx_pipeline_run(p, &rp);
    dfx_pipeline_destroy(p);
    return st;
}

/* runs a sample pipeline given as YAML text */
static void sample(const char *yaml)
{
    dfx_pipeline *p;
    ck_assert_int_eq(dfx_pipeline_parse(&p, yaml, strlen(yaml), "sample.yaml"), DFX_OK);
    ck_assert_msg(dfx_pipeline_resolve(p, reg) == DFX_OK, "%s", dfx_error_message());
    ck_assert_msg(dfx_pipeline_run(p, NULL) == DFX_OK, "%s", dfx_error_message());
    dfx_pipeline_destroy(p);
}

static char *images_path(void)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/images.idx", dir);
    return path;
}

static void read_all(const char *path, void **data, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s is missing", path);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc(*n);
    ck_assert_uint_eq(fread(*data, 1, *n, f), *n);
    fclose(f);
}

static const char *meta(const char *path, const char *key, char *buf, size_t size)
{
    dfx_safetensors *st;
    ck_assert_msg(dfx_safetensors_open(path, &st) == DFX_OK, "%s", dfx_error_message());
    const char *v = dfx_safetensors_metadata(st, key);
    snprintf(buf, size, "%s", v ? v : "");
    dfx_safetensors_close(st);
    return buf;
}

/* the last logged loss of train_log.csv over the first; *last_out the
 * last loss and *step_out (may be NULL) its step */
static double log_ratio(const char *out, double *last_out, long *step_out)
{
    char path[512], line[128];
    snprintf(path, sizeof path, "%s/%s/train_log.csv", dir, out);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    double first = NAN, last = NAN, loss;
    long step;
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    while (fgets(line, sizeof line, f) && sscanf(line, "%ld,%lf", &step, &loss) == 2) {
        first = isnan(first) ? loss : first;
        last = loss;
    }
    fclose(f);
    ck_assert(isfinite(first) && isfinite(last));
    *last_out = last;
    if (step_out)
        *step_out = step;
    return last / first;
}

/* What the trainer differentiates is what sampling evaluates: unet2d's tape
 * forward against its predict(), on random weights and mixed timesteps. */
START_TEST(test_forward_matches_predict)
{
    char yaml[512];
    snprintf(yaml, sizeof yaml, "{type: unet2d, config: %s/config.json, seed: 2}", dir);
    dfx_instance *inst;
    ck_assert_msg(dfx_instance_create(&inst, reg, DFX_KIND_MODEL, yaml, "test") == DFX_OK, "%s",
                  dfx_error_message());
    const dfx_model_ops *ops = dfx_instance_component(inst)->ops;
    void *priv = dfx_instance_priv(inst);
    const int64_t shape[4] = {3, 1, SIDE, SIDE};
    dfx_tensor *x, *out;
    ck_assert_int_eq(dfx_tensor_create(&x, DFX_DTYPE_F32, 4, shape), DFX_OK);
    ck_assert_int_eq(dfx_tensor_create(&out, DFX_DTYPE_F32, 4, shape), DFX_OK);
    dfx_rng *rng;
    ck_assert_int_eq(dfx_rng_create(&rng, 9), DFX_OK);
    dfx_rng_normal(rng, x->data, dfx_tensor_numel(x));
    const double t[3] = {0, 37, 99};
    const dfx_model_input in = {x, t, NULL, NULL};
    ck_assert_int_eq(ops->predict(priv, &in, out), DFX_OK);
    dfx_params *params;
    dfx_tape *tape;
    ck_assert_int_eq(dfx_params_create(&params), DFX_OK);
    ck_assert_int_eq(ops->train_params(priv, params), DFX_OK);
    ck_assert_ptr_nonnull(dfx_params_find_name(params, "down_blocks.1.attentions.0.to_q.weight"));
    ck_assert_int_eq(dfx_tape_create(&tape, DFX_DTYPE_F32), DFX_OK);
    dfx_var *y = ops->train_forward(priv, tape, params, dfx_tape_from_f32(tape, 4, shape, x->data,
                                                                         false), &in);
    ck_assert_msg(y != NULL, "%s", dfx_tape_status(tape) ? dfx_error_message() : "");
    const float *a = out->data, *b = y->data;
    float diff = 0, scale = 0;
    for (int64_t i = 0; i < y->numel; i++) {
        diff = fmaxf(diff, fabsf(a[i] - b[i]));
        scale = fmaxf(scale, fabsf(a[i]));
    }
    ck_assert_msg(scale > 0.1f && diff <= 1e-5f * scale, "tape %g from predict (max %g)", diff,
                  scale);
    dfx_tape_destroy(tape);
    dfx_params_destroy(params);
    dfx_rng_destroy(rng);
    dfx_tensor_destroy(x);
    dfx_tensor_destroy(out);
    dfx_instance_destroy(inst);
}
END_TEST

START_TEST(test_memorises)
{
    prediction = "sample";
    ck_assert_msg(train("m", "steps: 1500, lr: 2.0e-3, warmup: 50, ema_decay: 0.99, "
                             "checkpoint_every: 1500, log_every: 100",
                        false, images_path()) == DFX_OK,
                  "%s", dfx_error_message());
    /* the loss log: it falls well below its start */
    double last;
    long step;
    const double r = log_ratio("m", &last, &step);
    ck_assert_int_eq(step, 1500);
    ck_assert_msg(r < 0.25, "loss %g at the end, %g of its value over the first 100 steps", last, r);

    /* DDIM samples of the trained (averaged) weights are the training images */
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "dfx: 1\npipeline: sample\nseed: 5\nbatch: 16\n"
             "model: {type: unet2d, path: %s/m}\n"
             "scheduler: {steps: 50}\n"
             "sampler: {type: ddim}\noutput: {path: %s/samples.safetensors}\n",
             dir, dir);
    sample(yaml);
    char path[512];
    snprintf(path, sizeof path, "%s/samples.safetensors", dir);
    dfx_safetensors *st;
    ck_assert_int_eq(dfx_safetensors_open(path, &st), DFX_OK);
    dfx_tensor s;
    ck_assert_int_eq(dfx_safetensors_view(st, "samples", &s), DFX_OK);
    ck_assert_int_eq(s.shape[0], 16);
    const float *x = s.data;
    int hit[N_IMAGES] = {0}, close = 0;
    for (int b = 0; b < 16; b++) {
        double best = INFINITY;
        int which = -1;
        for (int i = 0; i < N_IMAGES; i++) {
            double d = 0;
            for (int y = 0; y < SIDE; y++)
                for (int xx = 0; xx < SIDE; xx++) {
                    const double ref = pixel(i, y, xx) / 127.5 - 1.0;
                    const double e = x[b * SIDE * SIDE + y * SIDE + xx] - ref;
                    d += e * e;
                }
            d /= SIDE * SIDE;
            if (d < best) {
                best = d;
                which = i;
            }
        }
        /* a memorised image: within 0.02 mean squared (pixels in [-1, 1]) */
        if (best < 0.02) {
            close++;
            hit[which] = 1;
        }
    }
    int distinct = 0;
    for (int i = 0; i < N_IMAGES; i++)
        distinct += hit[i];
    /* most, not all: a few samples may land between images (seen: 12 to 16
     * of 16 as the arithmetic's rounding changed) */
    ck_assert_msg(close >= 10, "only %d of 16 samples reproduce a training image", close);
    ck_assert_msg(distinct >= 4, "16 samples reproduce only %d of the 8 images", distinct);
    dfx_safetensors_close(st);
}
END_TEST

/* The checkpoints below dir/a and dir/b are the same, file by file. */
static void assert_same_checkpoints(const char *a, const char *b)
{
    const char *files[] = {"train_state.safetensors", "adam_m.safetensors", "adam_v.safetensors",
                           "unet/diffusion_pytorch_model.safetensors", "train_log.csv"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char pa[512], pb[512];
        snprintf(pa, sizeof pa, "%s/%s/%s", dir, a, files[i]);
        snprintf(pb, sizeof pb, "%s/%s/%s", dir, b, files[i]);
        void *da, *db;
        size_t na, nb;
        read_all(pa, &da, &na);
        read_all(pb, &db, &nb);
        ck_assert_msg(na == nb && !memcmp(da, db, na), "%s differs between %s and %s", files[i], a, b);
        free(da);
        free(db);
    }
}

START_TEST(test_resume_equals_uninterrupted)
{
    const char *opts = "lr: 1.0e-3, warmup: 5, ema_decay: 0.9, checkpoint_every: 4, log_every: 2";
    char o20[256], o8[256];
    snprintf(o20, sizeof o20, "steps: 20, %s", opts);
    snprintf(o8, sizeof o8, "steps: 8, %s", opts);
    ck_assert_msg(train("a", o20, false, images_path()) == DFX_OK, "%s", dfx_error_message());
    ck_assert_msg(train("b", o8, false, images_path()) == DFX_OK, "%s", dfx_error_message());
    ck_assert_msg(train("b", o20, true, images_path()) == DFX_OK, "%s", dfx_error_message());
    assert_same_checkpoints("a", "b");
    char buf[64], path[512];
    snprintf(path, sizeof path, "%s/b/train_state.safetensors", dir);
    ck_assert_str_eq(meta(path, "step", buf, sizeof buf), "20");

    /* a resume with another seed would not continue the run: refused */
    seed = 4;
    snprintf(o8, sizeof o8, "steps: 30, %s", opts);
    ck_assert_int_ne(train("b", o8, true, images_path()), DFX_OK);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "trained with seed 3"));
    seed = 3;
}
END_TEST

/* Rewrites a checkpoint file with one weight made NaN. */
static void poison(const char *path)
{
    dfx_safetensors *st;
    ck_assert_int_eq(dfx_safetensors_open(path, &st), DFX_OK);
    const int64_t n = dfx_safetensors_count(st);
    const char **names = calloc((size_t)n, sizeof *names);
    dfx_tensor **copies = calloc((size_t)n, sizeof *copies);
    for (int64_t i = 0; i < n; i++) {
        names[i] = dfx_safetensors_name(st, i);
        dfx_tensor v;
        ck_assert_int_eq(dfx_safetensors_view(st, names[i], &v), DFX_OK);
        ck_assert_int_eq(dfx_tensor_create(&copies[i], v.dtype, v.ndim, v.shape), DFX_OK);
        memcpy(copies[i]->data, v.data, dfx_tensor_nbytes(&v));
    }
    ((float *)copies[0]->data)[0] = NAN;
    const int64_t m = dfx_safetensors_metadata_count(st);
    const char **keys = calloc((size_t)m + 1, sizeof *keys), **vals = calloc((size_t)m + 1, sizeof *vals);
    for (int64_t i = 0; i < m; i++) {
        keys[i] = dfx_safetensors_metadata_key(st, i);
        vals[i] = dfx_safetensors_metadata(st, keys[i]);
    }
    ck_assert_int_eq(dfx_safetensors_write(path, n, names, (const dfx_tensor *const *)copies, m,
                                           keys, vals),
                     DFX_OK);
    for (int64_t i = 0; i < n; i++)
        dfx_tensor_destroy(copies[i]);
    free(copies);
    free(names);
    free(keys);
    free(vals);
    dfx_safetensors_close(st);
}

START_TEST(test_nan_keeps_last_good_checkpoint)
{
    ck_assert_msg(train("nan", "steps: 3, checkpoint_every: 1", false, images_path()) == DFX_OK,
                  "%s", dfx_error_message());
    char path[512], buf[64];
    snprintf(path, sizeof path, "%s/nan/train_state.safetensors", dir);
    poison(path);
    const dfx_status st = train("nan", "steps: 6, checkpoint_every: 1", true, images_path());
    ck_assert_int_eq(st, DFX_ERR_NUMERIC);
    ck_assert_msg(strstr(dfx_error_message(), "step 4: the loss is nan") &&
                      strstr(dfx_error_message(), "last good checkpoint (step 3)"),
                  "%s", dfx_error_message());
    ck_assert_str_eq(meta(path, "step", buf, sizeof buf), "3");
}
END_TEST

START_TEST(test_disk_full_keeps_previous_checkpoint)
{
    ck_assert_msg(train("full", "steps: 4, checkpoint_every: 4", false, images_path()) == DFX_OK,
                  "%s", dfx_error_message());
    char state[512], buf[64], yaml_path[512], err_path[512];
    snprintf(state, sizeof state, "%s/full/train_state.safetensors", dir);
    ck_assert_str_eq(meta(state, "step", buf, sizeof buf), "4");
    /* `dfx train --resume` whose files cannot grow past 4 KiB: its next
     * checkpoint fails part-way, as on a full disk */
    char yaml[2048];
    write_yaml(yaml, sizeof yaml, "full", "steps: 8, checkpoint_every: 4", images_path());
    snprintf(yaml_path, sizeof yaml_path, "%s/full.yaml", dir);
    write_file(yaml_path, yaml, strlen(yaml));
    snprintf(err_path, sizeof err_path, "%s/full.err", dir);
    fflush(NULL);
    const pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        const struct rlimit rl = {4096, 4096};
        setrlimit(RLIMIT_FSIZE, &rl);
        FILE *err = freopen(err_path, "w", stderr);
        if (!err)
            _exit(99);
        execl(dfx_exe, dfx_exe, "train", yaml_path, "--resume", "--quiet", (char *)NULL);
        _exit(98);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    void *msg;
    size_t len;
    read_all(err_path, &msg, &len);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1, "exit status %d", status);
    ck_assert_msg(memmem(msg, len, "not written (the previous one is kept)", 38) != NULL,
                  "%.*s", (int)len, (char *)msg);
    free(msg);
    ck_assert_str_eq(meta(state, "step", buf, sizeof buf), "4");
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s/full.tmp", dir);
    struct stat sb;
    ck_assert_int_ne(stat(tmp, &sb), 0);
    /* and the kept checkpoint resumes */
    ck_assert_msg(train("full", "steps: 8, checkpoint_every: 4", true, images_path()) == DFX_OK,
                  "%s", dfx_error_message());
    ck_assert_str_eq(meta(state, "step", buf, sizeof buf), "8");
}
END_TEST

/* Ctrl-C in `dfx train`: the run stops after the step under way, writes a
 * checkpoint there, says so and exits 130; --resume then ends where an
 * uninterrupted run ends, bit for bit. */
START_TEST(test_interrupt_then_resume)
{
    const char *opts = "steps: 60, lr: 1.0e-3, warmup: 5, ema_decay: 0.9, checkpoint_every: 100, log_every: 1";
    ck_assert_msg(train("a", opts, false, images_path()) == DFX_OK, "%s", dfx_error_message());
    char yaml[2048], yaml_path[512];
    write_yaml(yaml, sizeof yaml, "c", opts, images_path());
    snprintf(yaml_path, sizeof yaml_path, "%s/c.yaml", dir);
    write_file(yaml_path, yaml, strlen(yaml));
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    fflush(NULL);
    const pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        execl(dfx_exe, dfx_exe, "train", yaml_path, (char *)NULL);
        _exit(98);
    }
    close(fds[1]);
    /* Ctrl-C once the log shows step 3 */
    char log[16384];
    size_t len = 0;
    bool sent = false;
    for (ssize_t r; len < sizeof log - 1 && (r = read(fds[0], log + len, sizeof log - 1 - len)) > 0;) {
        len += (size_t)r;
        log[len] = '\0';
        if (!sent && strstr(log, "step 3/60")) {
            ck_assert_int_eq(kill(pid, SIGINT), 0);
            sent = true;
        }
    }
    close(fds[0]);
    log[len] = '\0';
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(sent, "no step 3 in the log:\n%s", log);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 130, "exit status %d:\n%s", status, log);
    const char *msg = strstr(log, "interrupted at step ");
    ck_assert_msg(msg && strstr(msg, "continues with --resume"), "%s", log);
    char state[512], buf[64];
    snprintf(state, sizeof state, "%s/c/train_state.safetensors", dir);
    const long at = atol(meta(state, "step", buf, sizeof buf));
    ck_assert_msg(at >= 3 && at < 60 && at == atol(msg + strlen("interrupted at step ")),
                  "checkpoint at step %ld after: %s", at, msg);
    ck_assert_msg(train("c", opts, true, images_path()) == DFX_OK, "%s", dfx_error_message());
    assert_same_checkpoints("a", "c");
}
END_TEST

START_TEST(test_bad_data)
{
    char path[512];
    snprintf(path, sizeof path, "%s/bad.idx", dir);
    const unsigned char junk[16] = {0x12, 0x34, 0x56, 0x78};
    write_file(path, junk, sizeof junk);
    ck_assert_int_ne(train("x", "steps: 2", false, path), DFX_OK);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), path));
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "not an idx file"));
    snprintf(path, sizeof path, "%s/none.idx", dir);
    ck_assert_int_ne(train("x", "steps: 2", false, path), DFX_OK);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), path));
    /* a resume without a checkpoint names what is missing */
    ck_assert_int_ne(train("never", "steps: 2", true, images_path()), DFX_OK);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "--resume"));
}
END_TEST

/* IDDPM's hybrid objective on a network that learns its variance: the loss
 * falls, and the checkpoint samples with the learned-range variance its
 * scheduler config names */
START_TEST(test_hybrid_loss)
{
    config_dir = "/lv";
    ck_assert_int_ne(train("h", "steps: 2", false, images_path()), DFX_OK);
    ck_assert_ptr_nonnull(strstr(dfx_error_message(), "train.loss: hybrid"));
    ck_assert_msg(train("h", "steps: 300, loss: hybrid, lr: 2.0e-3, warmup: 20, log_every: 50, "
                             "checkpoint_every: 300",
                        false, images_path()) == DFX_OK,
                  "%s", dfx_error_message());
    double last;
    const double r = log_ratio("h", &last, NULL);
    ck_assert_msg(r < 0.5, "hybrid loss fell only to %g of its start", r);
    char path[512];
    snprintf(path, sizeof path, "%s/h/scheduler/scheduler_config.json", dir);
    void *cfg;
    size_t n;
    read_all(path, &cfg, &n);
    ck_assert_ptr_nonnull(memmem(cfg, n, "\"learned_range\"", 15));
    free(cfg);
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "dfx: 1\npipeline: sample\nseed: 5\nbatch: 4\nmodel: {type: unet2d, path: %s/h}\n"
             "scheduler: {steps: 20}\noutput: {path: %s/hs.safetensors}\n",
             dir, dir);
    sample(yaml);
    config_dir = "";
}
END_TEST

/* Denoising score matching (Song & Ermon 2019, weighted by sigma^2) for a
 * score model on a continuous VE schedule: levels drawn uniformly in time
 * (geometric sigmas), the loss falls; the checkpoint samples with the
 * predictor-corrector sampler. */
START_TEST(test_score_matching)
{
    prediction = "score";
    scheduler = "{type: ve, sigma_min: 0.01, sigma_max: 10}";
    ck_assert_msg(train("dsm", "steps: 300, lr: 2.0e-3, warmup: 20, log_every: 50, "
                               "checkpoint_every: 300",
                        false, images_path()) == DFX_OK,
                  "%s", dfx_error_message());
    /* predicting a zero score scores E[eps^2] = 1 */
    double last;
    const double r = log_ratio("dsm", &last, NULL);
    ck_assert_msg(r < 0.85 && last < 0.7, "score matching loss fell only to %g of its start (%g)",
                  r, last);
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "dfx: 1\npipeline: sample\nseed: 5\nbatch: 4\n"
             "model: {type: unet2d, path: %s/dsm, prediction: score}\n"
             "scheduler: {type: ve, sigma_min: 0.01, sigma_max: 10, steps: 20}\n"
             "sampler: {type: pc}\noutput: {path: %s/dsm.safetensors}\n",
             dir, dir);
    sample(yaml);
    prediction = "epsilon";
    scheduler = "{type: linear, train_steps: 100}";
}
END_TEST

static Suite *train_suite(void)
{
    Suite *s = suite_create("train");
    TCase *mem = tcase_create("memorise");
    tcase_add_checked_fixture(mem, setup, teardown);
    tcase_set_timeout(mem, 600);
    tcase_add_test(mem, test_forward_matches_predict);
    tcase_add_test(mem, test_memorises);
    suite_add_tcase(s, mem);
    TCase *tc = tcase_create("checkpoints");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_resume_equals_uninterrupted);
    tcase_add_test(tc, test_nan_keeps_last_good_checkpoint);
    tcase_add_test(tc, test_disk_full_keeps_previous_checkpoint);
    tcase_add_test(tc, test_interrupt_then_resume);
    tcase_add_test(tc, test_bad_data);
    tcase_add_test(tc, test_hybrid_loss);
    tcase_add_test(tc, test_score_matching);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_train PATH/TO/dfx\n");
        return EXIT_FAILURE;
    }
    dfx_exe = argv[1];
    SRunner *sr = srunner_create(train_suite());
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
