/* Broken UNet2DModel folders, derived from fixtures/ddpm/ddpm_unet_a, each
 * run through `dfx run pipelines/ddpm.yaml`: a missing, misshapen or extra
 * tensor, a config that does not match the weights, an unsupported block
 * type or field, a non-finite output; each must fail with one clear message
 * and leave no image behind.
 *
 * usage: test_unet2d_errors DFX_EXECUTABLE SOURCE_ROOT */
#include <sys/stat.h>

#include "testutil.h"

static const char *dfx_exe, *source_root;

/* Copies the fixture's tensors into dir/unet/diffusion_pytorch_model.safetensors,
 * letting edit() drop (return false), reshape or change each one, plus an
 * optional extra tensor; writes config text (or the fixture's when NULL). */
typedef bool (*edit_fn)(const char *name, dfx_tensor *t);

static void make_folder(const char *dir, edit_fn edit, const char *extra, const char *config)
{
    char src[4200], path[4300];
    snprintf(src, sizeof src, "%s/ddpm/ddpm_unet_a/unet/diffusion_pytorch_model.safetensors", test_fixtures_dir());
    snprintf(path, sizeof path, "%s/unet", dir);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    snprintf(path, sizeof path, "%s/model_index.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"_class_name\": \"DDPMPipeline\"}\n", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/scheduler", dir);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", dir);
    f = fopen(path, "w");
    fputs("{\"_class_name\": \"DDPMScheduler\"}\n", f);
    fclose(f);
    if (!config) {
        char cfg[4300];
        snprintf(cfg, sizeof cfg, "%s/ddpm/ddpm_unet_a/unet/config.json", test_fixtures_dir());
        char *text;
        size_t len;
        FILE *in = fopen(cfg, "rb");
        ck_assert(in != NULL);
        fseek(in, 0, SEEK_END);
        len = (size_t)ftell(in);
        rewind(in);
        text = malloc(len + 1);
        ck_assert_uint_eq(fread(text, 1, len, in), len);
        fclose(in);
        text[len] = '\0';
        snprintf(path, sizeof path, "%s/unet/config.json", dir);
        f = fopen(path, "w");
        fputs(text, f);
        fclose(f);
        free(text);
    } else {
        snprintf(path, sizeof path, "%s/unet/config.json", dir);
        f = fopen(path, "w");
        fputs(config, f);
        fclose(f);
    }
    dfx_safetensors *st;
    ck_assert(dfx_safetensors_open(src, &st) == DFX_OK);
    int64_t n = dfx_safetensors_count(st);
    const char **names = calloc((size_t)n + 1, sizeof *names);
    dfx_tensor **ts = calloc((size_t)n + 1, sizeof *ts);
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        const char *name = dfx_safetensors_name(st, i);
        dfx_tensor *t;
        ck_assert(dfx_safetensors_read(st, name, DFX_DTYPE_F32, &t) == DFX_OK);
        if (edit && !edit(name, t)) {
            dfx_tensor_destroy(t);
            continue;
        }
        names[k] = name;
        ts[k++] = t;
    }
    if (extra) {
        int64_t shape[1] = {4};
        ck_assert(dfx_tensor_create(&ts[k], DFX_DTYPE_F32, 1, shape) == DFX_OK);
        names[k++] = extra;
    }
    snprintf(path, sizeof path, "%s/unet/diffusion_pytorch_model.safetensors", dir);
    ck_assert_msg(dfx_safetensors_write(path, k, names, (const dfx_tensor *const *)ts, 0, NULL, NULL) == DFX_OK,
                  "%s", dfx_error_message());
    for (int64_t i = 0; i < k; i++)
        dfx_tensor_destroy(ts[i]);
    free(names);
    free(ts);
    dfx_safetensors_close(st);
}

/* Runs the ddpm pipeline on dir; expects failure with `expect` and no image. */
static void expect_failure(const char *dir, const char *expect)
{
    char pipe[4200], set_model[4300], set_out[4400], out[4300];
    snprintf(pipe, sizeof pipe, "%s/pipelines/ddpm.yaml", source_root);
    snprintf(set_model, sizeof set_model, "model.path=%s", dir);
    snprintf(out, sizeof out, "%s/out.png", dir);
    snprintf(set_out, sizeof set_out, "output.path=%s", out);
    char *argv[] = {(char *)dfx_exe, "run", pipe, "--quiet", "--set", set_model, "--set", set_out, "--set",
                    "scheduler.steps=3", NULL};
    char *err = NULL;
    int rc = test_run(argv, NULL, &err);
    ck_assert_msg(rc == 1, "exit %d, stderr: %s", rc, err);
    ck_assert_msg(strstr(err, expect) != NULL, "expected \"%s\" in:\n%s", expect, err);
    ck_assert_int_ne(access(out, F_OK), 0);
    free(err);
}

static bool drop_conv_out_bias(const char *name, dfx_tensor *t)
{
    (void)t;
    return strcmp(name, "conv_out.bias") != 0;
}

static bool reshape_time(const char *name, dfx_tensor *t)
{
    if (strcmp(name, "time_embedding.linear_1.weight") == 0)
        t->shape[0] /= 2, t->shape[1] *= 2; /* same bytes, another shape */
    return true;
}

static bool nan_out(const char *name, dfx_tensor *t)
{
    if (strcmp(name, "conv_out.bias") == 0)
        ((float *)t->data)[1] = NAN;
    return true;
}

START_TEST(broken_folders)
{
    struct {
        edit_fn edit;
        const char *extra, *config, *expect;
    } cases[] = {
        {drop_conv_out_bias, NULL, NULL, "diffusion_pytorch_model.safetensors: tensor 'conv_out.bias' is missing"},
        {reshape_time, NULL, NULL,
         "tensor 'time_embedding.linear_1.weight' has shape [64,64] but the model expects [128,32]"},
        {NULL, "extra.weight", NULL, "1 tensor is not used by the model: 'extra.weight'"},
        {NULL, NULL,
         "{\"_class_name\": \"UNet2DModel\", \"block_out_channels\": [32, 32], \"layers_per_block\": 1,"
         " \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\"], \"up_block_types\": [\"AttnUpBlock2D\","
         " \"UpBlock2D\"], \"norm_num_groups\": 8, \"sample_size\": 16}",
         "but the model expects"},
        {NULL, NULL,
         "{\"_class_name\": \"UNet2DModel\", \"block_out_channels\": [32, 64], \"down_block_types\":"
         " [\"SkipDownBlock2D\", \"AttnDownBlock2D\"], \"up_block_types\": [\"AttnUpBlock2D\", \"UpBlock2D\"]}",
         "field 'down_block_types': block type 'SkipDownBlock2D' is not supported"},
        {NULL, NULL, "{\"_class_name\": \"UNet2DModel\", \"block_out_channels\": [32, 64], \"frobnicate\": 1}",
         "field 'frobnicate': unknown to dfx's unet2d"},
        {NULL, NULL, "{\"_class_name\": \"UNet2DConditionModel\"}", "_class_name is 'UNet2DConditionModel', not UNet2DModel"},
        {NULL, NULL,
         "{\"_class_name\": \"UNet2DModel\", \"block_out_channels\": [32, 64], \"act_fn\": \"mish\","
         " \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\"], \"up_block_types\": [\"AttnUpBlock2D\","
         " \"UpBlock2D\"]}",
         "field 'act_fn': 'mish' is not supported"},
        {NULL, NULL, "{\"_class_name\": \"UNet2DModel\", \"block_out_channels\": [32, 64]}",
         "field 'down_block_types' (absent, so diffusers' default): the default lists 4 blocks"},
        {nan_out, NULL, NULL, "output is not finite at model evaluation 1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *dir = test_tmpdir();
        make_folder(dir, cases[i].edit, cases[i].extra, cases[i].config);
        expect_failure(dir, cases[i].expect);
        test_rmtree(dir);
        free(dir);
    }
    expect_failure("/nonexistent/model", "/nonexistent/model: no such folder");
    /* a weights file alone: UNet2DModel has no single-file layout */
    char file[4200], want[4400];
    snprintf(file, sizeof file, "%s/ddpm/ddpm_unet_a/unet/diffusion_pytorch_model.safetensors", test_fixtures_dir());
    snprintf(want, sizeof want, "%s: a single file; this model reads a diffusers folder", file);
    expect_failure(file, want);
}
END_TEST

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s DFX SOURCE_ROOT\n", argv[0]);
        return EXIT_FAILURE;
    }
    dfx_exe = argv[1];
    source_root = argv[2];
    test_require_fixtures("unet2d bad input");
    Suite *s = suite_create("unet2d errors");
    TCase *tc = tcase_create("errors");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, broken_folders);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
