/* bench_unet: the UNet2DModel forward pass of DDPM's CIFAR-10 network
 * (google/ddpm-cifar10-32: channels 128,256,256,256, two resnets per level,
 * attention at 16x16, 32x32 input) with random weights, at batch 1 and 16:
 * seconds per forward, GFLOP/s (FLOPs counted from the architecture), the
 * ratio to the machine's raw sgemm rate, and, when python3 with torch is
 * installed, the ratio to PyTorch with the same thread count.
 *
 * usage: bench_unet [--batch 1,16] [--seconds S] [--no-torch] */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dfx/dfx.h"
#include "dfx_config.h"

static const char config_json[] =
    "{\"_class_name\": \"UNet2DModel\", \"sample_size\": 32, \"in_channels\": 3, \"out_channels\": 3,\n"
    " \"block_out_channels\": [128, 256, 256, 256], \"layers_per_block\": 2,\n"
    " \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\", \"DownBlock2D\", \"DownBlock2D\"],\n"
    " \"up_block_types\": [\"UpBlock2D\", \"UpBlock2D\", \"AttnUpBlock2D\", \"UpBlock2D\"],\n"
    " \"attention_head_dim\": null, \"norm_num_groups\": 32, \"norm_eps\": 1e-06, \"freq_shift\": 1,\n"
    " \"flip_sin_to_cos\": false, \"downsample_padding\": 0}\n";

static const int64_t ch[4] = {128, 256, 256, 256};
static const int attn_level = 1;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* FLOPs of one forward at batch 1: convolutions, linears and attention
 * products (2 per multiply-add); norms and activations are not counted. */
static double count_flops(void)
{
    double f = 0;
    int64_t hw = 32 * 32, temb = 4 * ch[0];
#define CONV(cin, cout, k, px) (f += 2.0 * (double)(cin) * (cout) * (k) * (k) * (double)(px))
#define RES(cin, cout, px)                                                                 \
    do {                                                                                   \
        CONV(cin, cout, 3, px);                                                            \
        CONV(cout, cout, 3, px);                                                           \
        if ((cin) != (cout))                                                               \
            CONV(cin, cout, 1, px);                                                        \
        f += 2.0 * temb * (cout);                                                          \
    } while (0)
#define ATTN(c, px) (f += 4 * 2.0 * (double)(c) * (c) * (double)(px) + 2 * 2.0 * (double)(px) * (px) * (c))
    f += 2.0 * ch[0] * temb + 2.0 * temb * temb;
    CONV(3, ch[0], 3, hw);
    int64_t skips[16], ns = 0, prev = ch[0];
    skips[ns++] = ch[0];
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 2; j++) {
            RES(prev, ch[i], hw);
            if (i == attn_level)
                ATTN(ch[i], hw);
            prev = ch[i];
            skips[ns++] = ch[i];
        }
        if (i < 3) {
            hw /= 4;
            CONV(ch[i], ch[i], 3, hw);
            skips[ns++] = ch[i];
        }
    }
    RES(prev, prev, hw);
    ATTN(prev, hw);
    RES(prev, prev, hw);
    for (int i = 3; i >= 0; i--) {
        for (int j = 0; j < 3; j++) {
            int64_t cin = prev + skips[--ns];
            RES(cin, ch[i], hw);
            if (i == attn_level)
                ATTN(ch[i], hw);
            prev = ch[i];
        }
        if (i > 0) {
            hw *= 4;
            CONV(ch[i], ch[i], 3, hw);
        }
    }
    CONV(ch[0], 3, 3, hw);
    return f;
}

static double sgemm_rate(double seconds)
{
    const int n = 2048;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    for (int i = 0; i < n * n; i++)
        a[i] = b[i] = (float)(i % 7) * 0.1f;
    double best = 1e30, start = now();
    do {
        double t = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        t = now() - t;
        best = t < best ? t : best;
    } while (now() - start < seconds);
    free(a), free(b), free(c);
    return 2.0 * n * n * (double)n / best;
}

static double torch_seconds(int batch, int threads, double seconds)
{
    /* the first python3 that has torch: the one on PATH, else Debian's */
    static const char *const pythons[] = {"python3", "/usr/bin/python3"};
    for (size_t i = 0; i < sizeof pythons / sizeof *pythons; i++) {
        char cmd[4096], out[128] = "";
        snprintf(cmd, sizeof cmd, "%s -c 'import torch' 2>/dev/null && %s '%s/tools/bench_unet_torch.py' %d %d %g",
                 pythons[i], pythons[i], DFX_SOURCE_ROOT, batch, threads, seconds);
        FILE *p = popen(cmd, "r");
        if (!p)
            continue;
        if (!fgets(out, sizeof out, p))
            out[0] = '\0';
        pclose(p);
        if (atof(out) > 0)
            return atof(out);
    }
    return 0;
}

int main(int argc, char **argv)
{
    char batches[256] = "1,16";
    double seconds = 3;
    bool torch = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            snprintf(batches, sizeof batches, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--no-torch"))
            torch = false;
        else {
            fprintf(stderr, "usage: %s [--batch 1,16] [--seconds S] [--no-torch]\n", argv[0]);
            return 2;
        }
    }
    char dir[] = "/tmp/bench_unet-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return 1;
    fputs(config_json, f);
    fclose(f);

    dfx_registry *reg;
    dfx_instance *m;
    char yaml[600];
    snprintf(yaml, sizeof yaml, "{type: unet2d, path: '%s', random_weights: true}", dir);
    if (dfx_registry_create(&reg, NULL, 0) || dfx_instance_create(&m, reg, DFX_KIND_MODEL, yaml, "bench")) {
        fprintf(stderr, "bench_unet: %s\n", dfx_error_message());
        return 1;
    }
    const dfx_model_ops *ops = dfx_instance_component(m)->ops;
    const double flops1 = count_flops();
    const double peak = sgemm_rate(seconds / 2);
    const int threads = openblas_get_num_threads();
    printf("UNet2DModel, ddpm-cifar10-32 architecture (35.7M parameters), random weights\n");
    printf("OpenBLAS core %s, %d threads; raw sgemm 2048^3: %.1f GFLOP/s; %.2f GFLOP per image\n",
           dfx_ops_blas_core(), threads, peak * 1e-9, flops1 * 1e-9);
    printf("%6s %12s %10s %10s %12s %10s\n", "batch", "s/forward", "GFLOP/s", "% sgemm", "torch s", "speedup");
    for (char *tok = strtok(batches, ","); tok; tok = strtok(NULL, ",")) {
        int batch = atoi(tok);
        int64_t shape[4] = {batch, 3, 32, 32}, oshape[4] = {batch, 3, 32, 32};
        dfx_tensor *x, *y;
        if (batch < 1 || dfx_tensor_create(&x, DFX_DTYPE_F32, 4, shape) ||
            dfx_tensor_create(&y, DFX_DTYPE_F32, 4, oshape))
            return 1;
        dfx_rng *rng;
        dfx_rng_create(&rng, 1);
        dfx_rng_normal(rng, x->data, dfx_tensor_numel(x));
        dfx_rng_destroy(rng);
        double *t = calloc((size_t)batch, sizeof *t), *s = calloc((size_t)batch, sizeof *s);
        for (int i = 0; i < batch; i++)
            t[i] = 500, s[i] = 1;
        dfx_model_input in = {x, t, s, NULL};
        if (ops->predict(dfx_instance_priv(m), &in, y)) {
            fprintf(stderr, "bench_unet: %s\n", dfx_error_message());
            return 1;
        }
        double best = 1e30, start = now();
        int reps = 0;
        while (now() - start < seconds || reps < 3) {
            double t0 = now();
            ops->predict(dfx_instance_priv(m), &in, y);
            double dt = now() - t0;
            best = dt < best ? dt : best;
            reps++;
        }
        double rate = flops1 * batch / best;
        double ts = torch ? torch_seconds(batch, threads, seconds) : 0;
        char tcol[32] = "-", scol[32] = "-";
        if (ts > 0) {
            snprintf(tcol, sizeof tcol, "%.4f", ts);
            snprintf(scol, sizeof scol, "%.2fx", ts / best);
        }
        printf("%6d %12.4f %10.1f %9.1f%% %12s %10s\n", batch, best, rate * 1e-9, 100 * rate / peak, tcol, scol);
        free(t);
        free(s);
        dfx_tensor_destroy(x);
        dfx_tensor_destroy(y);
    }
    dfx_instance_destroy(m);
    dfx_registry_destroy(reg);
    remove(path);
    rmdir(dir);
    return 0;
}
