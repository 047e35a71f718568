/* bench_nn: the nn layers at the shapes diffusion networks run, in GFLOP/s
 * and as a fraction of raw cblas_sgemm on the equivalent product measured in
 * the same run: a convolution against the one sgemm [cout x (n ho wo) x
 * cin k k] its im2col form amounts to, attention against the two products
 * per head (Q K^T and P V) at full size. What the layer adds beyond those
 * products (im2col, the softmax, bias and epilogue passes, tiling) is the
 * gap between the two.
 *
 * usage: bench_nn [--seconds S] [--filter TEXT] [--kernels Haswell,SkylakeX,...]
 * --filter runs only the benchmarks whose name holds TEXT; --kernels re-runs
 * everything once per OPENBLAS_CORETYPE given. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "dfx/nn.h"
#include "dfx/ops.h"
#include "dfx/safetensors.h"

static double seconds = 1.0;
static const char *filter;   /* run only the benchmarks whose name holds this */

static bool skip(const char *what)
{
    return filter && !strstr(what, filter);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *fill(size_t n, unsigned seed)
{
    float *p = malloc(n * sizeof *p);
    if (!p) {
        fprintf(stderr, "bench_nn: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        p[i] = (float)(((i + seed) * 2654435761u) % 1000) / 1000.0f - 0.5f;
    return p;
}

/* Best time of fn(ctx), repeated until `seconds` have passed (3 runs at
 * least, after one warm-up run). */
static double best_time(void (*fn)(void *), void *ctx)
{
    fn(ctx);
    double best = 1e30, start = now();
    int reps = 0;
    do {
        double t0 = now();
        fn(ctx);
        double t = now() - t0;
        best = t < best ? t : best;
        reps++;
    } while (now() - start < seconds || reps < 3);
    return best;
}

typedef struct gemm_ctx {
    int m, n, k;
    bool trans_b;
    float *a, *b, *c;
} gemm_ctx;

static void run_gemm(void *p)
{
    gemm_ctx *g = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, g->trans_b ? CblasTrans : CblasNoTrans, g->m, g->n, g->k, 1.0f,
                g->a, g->k, g->b, g->trans_b ? g->k : g->n, 0.0f, g->c, g->n);
}

/* Raw sgemm time for C[m,n] = A[m,k] op(B). */
static double time_sgemm(int m, int n, int k, bool trans_b)
{
    gemm_ctx g = {m, n, k, trans_b, fill((size_t)m * k, 1), fill((size_t)k * n, 2), fill((size_t)m * n, 3)};
    double t = best_time(run_gemm, &g);
    free(g.a);
    free(g.b);
    free(g.c);
    return t;
}

/* Writes one tensor of random values to a temporary safetensors file. */
static char tmp_path[64];

static dfx_weights *weights_with(int count, const char *const *names, const int *ndims,
                                 const int64_t (*shapes)[4])
{
    dfx_tensor *ts[16];
    if (count > 16)
        exit(1);
    for (int i = 0; i < count; i++) {
        if (dfx_tensor_create(&ts[i], DFX_DTYPE_F32, ndims[i], shapes[i]) != DFX_OK)
            exit(1);
        float *d = ts[i]->data;
        for (int64_t j = 0; j < dfx_tensor_numel(ts[i]); j++)
            d[j] = (float)((j * 40503u) % 1000) / 20000.0f - 0.025f;
    }
    snprintf(tmp_path, sizeof tmp_path, "/tmp/bench_nn_%d.safetensors", (int)getpid());
    dfx_weights *w;
    if (dfx_safetensors_write(tmp_path, count, names, (const dfx_tensor *const *)ts, 0, NULL, NULL) ||
        dfx_weights_open(&w, tmp_path)) {
        fprintf(stderr, "bench_nn: %s\n", dfx_error_message());
        exit(1);
    }
    for (int i = 0; i < count; i++)
        dfx_tensor_destroy(ts[i]);
    return w;
}

typedef struct conv_ctx {
    dfx_conv2d conv;
    float *x, *y;
    int64_t n, h, w;
    dfx_arena *a;
} conv_ctx;

static void run_conv(void *p)
{
    conv_ctx *c = p;
    if (dfx_conv2d_forward(&c->conv, c->x, c->n, c->h, c->w, c->y, c->a)) {
        fprintf(stderr, "bench_nn: %s\n", dfx_error_message());
        exit(1);
    }
}

static const char *const algo_names[] = {"auto", "im2col", "F(2x2,3x3)", "F(4x4,3x3)"};

/* One convolution layer with the given algorithm, its time against the raw
 * sgemm of its im2col form; GF/s count the direct convolution's FLOPs, so
 * Winograd's fewer multiplies show as a rate above sgemm's. */
static void bench_conv_algo(const char *what, int64_t n, int64_t cin, int64_t cout, int64_t h,
                            int64_t w, int64_t k, int64_t stride, int64_t pad, dfx_conv2d_algo algo)
{
    char name[128];
    snprintf(name, sizeof name, "%s%s%s", what, algo ? ", " : "", algo ? algo_names[algo] : "");
    if (skip(name))
        return;
    const char *names[2] = {"c.weight", "c.bias"};
    const int ndims[2] = {4, 1};
    const int64_t shapes[2][4] = {{cout, cin, k, k}, {cout}};
    dfx_weights *wt = weights_with(2, names, ndims, shapes);
    conv_ctx c = {.n = n, .h = h, .w = w};
    if (dfx_conv2d_load(&c.conv, wt, "c", cin, cout, k, stride, pad, true) || dfx_arena_create(&c.a)) {
        fprintf(stderr, "bench_nn: %s\n", dfx_error_message());
        exit(1);
    }
    dfx_weights_close(wt);
    remove(tmp_path);
    if (dfx_conv2d_set_algo(&c.conv, algo)) {
        fprintf(stderr, "bench_nn: %s\n", dfx_error_message());
        exit(1);
    }
    int64_t ho, wo;
    dfx_conv2d_out_size(&c.conv, h, w, &ho, &wo);
    c.x = fill((size_t)(n * cin * h * w), 4);
    c.y = fill((size_t)(n * cout * ho * wo), 5);
    double t = best_time(run_conv, &c);
    const int m = (int)cout, nn = (int)(n * ho * wo), kk = (int)(cin * k * k);
    double ts = time_sgemm(m, nn, kk, false);
    double flops = 2.0 * m * (double)nn * kk;
    printf("%-46s %7.2f ms %7.1f GF/s | sgemm %5d x %6d x %5d %7.1f GF/s | %5.1f%%  arena %.1f MiB\n", name,
           t * 1e3, flops / t * 1e-9, m, nn, kk, flops / ts * 1e-9, 100.0 * ts / t,
           (double)dfx_arena_peak(c.a) / (1 << 20));
    dfx_conv2d_free(&c.conv);
    dfx_arena_destroy(c.a);
    free(c.x);
    free(c.y);
}

static void bench_conv(const char *what, int64_t n, int64_t cin, int64_t cout, int64_t h, int64_t w,
                       int64_t k, int64_t stride, int64_t pad)
{
    bench_conv_algo(what, n, cin, cout, h, w, k, stride, pad, DFX_CONV2D_ALGO_AUTO);
}

/* A 3x3 stride-1 convolution under every algorithm. */
static void bench_conv_all(const char *what, int64_t n, int64_t cin, int64_t cout, int64_t h, int64_t w)
{
    for (int algo = DFX_CONV2D_ALGO_IM2COL; algo <= DFX_CONV2D_ALGO_WINOGRAD_4X4; algo++)
        bench_conv_algo(what, n, cin, cout, h, w, 3, 1, 1, (dfx_conv2d_algo)algo);
}

typedef struct attn_ctx {
    float *qkv, *out;
    int64_t b, heads, nq, nk, dh;
    dfx_arena *a;
} attn_ctx;

static void run_attn(void *p)
{
    attn_ctx *c = p;
    const int64_t wd = c->heads * c->dh;
    if (dfx_nn_attention(c->qkv, 3 * wd, c->qkv + wd, 3 * wd, c->qkv + 2 * wd, 3 * wd, c->b, c->heads, c->nq,
                         c->nk, c->dh, (float)(1.0 / sqrt((double)c->dh)), c->out, wd, c->a)) {
        fprintf(stderr, "bench_nn: %s\n", dfx_error_message());
        exit(1);
    }
}

static void bench_attention(const char *what, int64_t b, int64_t heads, int64_t nq, int64_t nk, int64_t dh)
{
    if (skip(what))
        return;
    attn_ctx c = {.b = b, .heads = heads, .nq = nq, .nk = nk, .dh = dh};
    const int64_t rows = nq > nk ? nq : nk;
    c.qkv = fill((size_t)(b * rows * 3 * heads * dh), 6);
    c.out = fill((size_t)(b * nq * heads * dh), 7);
    if (dfx_arena_create(&c.a))
        exit(1);
    double t = best_time(run_attn, &c);
    /* the two products of one head at full size, times heads and batch */
    double ts = (time_sgemm((int)nq, (int)nk, (int)dh, true) + time_sgemm((int)nq, (int)dh, (int)nk, false)) *
                (double)(b * heads);
    double flops = 4.0 * (double)(b * heads) * (double)nq * (double)nk * (double)dh;
    printf("%-46s %7.2f ms %7.1f GF/s | sgemm QK^T + PV %22.1f GF/s | %5.1f%%  arena %.1f MiB\n", what,
           t * 1e3, flops / t * 1e-9, flops / ts * 1e-9, 100.0 * ts / t, (double)dfx_arena_peak(c.a) / (1 << 20));
    dfx_arena_destroy(c.a);
    free(c.qkv);
    free(c.out);
}

typedef struct rb_ctx {
    dfx_resblock rb;
    float *x, *temb, *y;
    int64_t n, h, w;
    dfx_arena *a;
} rb_ctx;

static void run_rb(void *p)
{
    rb_ctx *c = p;
    if (dfx_resblock_forward(&c->rb, c->x, c->temb, c->n, c->h, c->w, c->y, c->a)) {
        fprintf(stderr, "bench_nn: %s\n", dfx_error_message());
        exit(1);
    }
}

/* A whole ResnetBlock2D (norms, SiLU, time embedding unless temb is 0,
 * residual) against the raw sgemm of its two 3x3 convolutions. */
static void bench_resblock(const char *what, int64_t n, int64_t c, int64_t h, int64_t w, int64_t temb)
{
    if (skip(what))
        return;
    const char *names[8] = {"r.norm1.weight", "r.norm1.bias", "r.conv1.weight", "r.conv1.bias",
                            "r.time_emb_proj.weight", "r.time_emb_proj.bias", "r.conv2.weight", "r.conv2.bias"};
    const int ndims[8] = {1, 1, 4, 1, 2, 1, 4, 1};
    const int64_t shapes[8][4] = {{c}, {c}, {c, c, 3, 3}, {c}, {c, temb ? temb : 1}, {c}, {c, c, 3, 3}, {c}};
    dfx_weights *wt = weights_with(8, names, ndims, shapes);
    rb_ctx r = {.n = n, .h = h, .w = w};
    /* norm2 shares norm1's tensors: load them under both roles */
    dfx_status st = dfx_arena_create(&r.a);
    if (!st)
        st = dfx_group_norm_load(&r.rb.norm1, wt, "r.norm1", 32, c, 1e-5);
    if (!st)
        st = dfx_group_norm_load(&r.rb.norm2, wt, "r.norm1", 32, c, 1e-5);
    if (!st)
        st = dfx_conv2d_load(&r.rb.conv1, wt, "r.conv1", c, c, 3, 1, 1, true);
    if (!st)
        st = dfx_conv2d_load(&r.rb.conv2, wt, "r.conv2", c, c, 3, 1, 1, true);
    if (!st && temb)
        st = dfx_linear_load(&r.rb.time_proj, wt, "r.time_emb_proj", temb, c, true);
    if (st) {
        fprintf(stderr, "bench_nn: %s\n", dfx_error_message());
        exit(1);
    }
    r.rb.cin = r.rb.cout = c;
    r.rb.output_scale_factor = 1.0;
    dfx_weights_close(wt);
    remove(tmp_path);
    r.x = fill((size_t)(n * c * h * w), 8);
    r.y = fill((size_t)(n * c * h * w), 9);
    r.temb = temb ? fill((size_t)(n * temb), 10) : NULL;
    double t = best_time(run_rb, &r);
    double ts = 2 * time_sgemm((int)c, (int)(n * h * w), (int)(9 * c), false);
    double flops = 2 * 2.0 * (double)c * (double)(n * h * w) * (double)(9 * c);
    printf("%-46s %7.2f ms %7.1f GF/s | sgemm of both convs %18.1f GF/s | %5.1f%%  arena %.1f MiB\n", what,
           t * 1e3, flops / t * 1e-9, flops / ts * 1e-9, 100.0 * ts / t, (double)dfx_arena_peak(r.a) / (1 << 20));
    dfx_resblock_free(&r.rb);
    dfx_arena_destroy(r.a);
    free(r.x);
    free(r.y);
    free(r.temb);
}

typedef struct sa_ctx {
    dfx_spatial_attention sa;
    float *x;
    int64_t n, h, w;
    dfx_arena *a;
} sa_ctx;

static void run_sa(void *p)
{
    sa_ctx *c = p;
    if (dfx_spatial_attention_forward(&c->sa, c->x, c->n, c->h, c->w, c->a)) {
        fprintf(stderr, "bench_nn: %s\n", dfx_error_message());
        exit(1);
    }
}

/* A whole spatial attention block (group norm, the four projections,
 * attention, residual) against the raw sgemm of its products at full
 * size. */
static void bench_spatial_attention(const char *what, int64_t n, int64_t c, int64_t heads, int64_t h,
                                    int64_t w)
{
    if (skip(what))
        return;
    const char *names[10] = {"s.group_norm.weight", "s.group_norm.bias", "s.to_q.weight", "s.to_q.bias",
                             "s.to_k.weight", "s.to_k.bias", "s.to_v.weight", "s.to_v.bias",
                             "s.to_out.0.weight", "s.to_out.0.bias"};
    const int ndims[10] = {1, 1, 2, 1, 2, 1, 2, 1, 2, 1};
    const int64_t shapes[10][4] = {{c}, {c}, {c, c}, {c}, {c, c}, {c}, {c, c}, {c}, {c, c}, {c}};
    dfx_weights *wt = weights_with(10, names, ndims, shapes);
    sa_ctx s = {.n = n, .h = h, .w = w};
    if (dfx_arena_create(&s.a) || dfx_spatial_attention_load(&s.sa, wt, "s", c, heads, 32, 1e-6, 1.0)) {
        fprintf(stderr, "bench_nn: %s\n", dfx_error_message());
        exit(1);
    }
    dfx_weights_close(wt);
    remove(tmp_path);
    s.x = fill((size_t)(n * c * h * w), 11);
    double t = best_time(run_sa, &s);
    const int64_t hw = h * w, dh = c / heads;
    double ts = 4 * time_sgemm((int)(n * hw), (int)c, (int)c, false) +
                (time_sgemm((int)hw, (int)hw, (int)dh, true) + time_sgemm((int)hw, (int)dh, (int)hw, false)) *
                    (double)(n * heads);
    double flops = 4 * 2.0 * (double)(n * hw) * (double)c * (double)c + 4.0 * (double)(n * heads) * (double)hw *
                   (double)hw * (double)dh;
    printf("%-46s %7.2f ms %7.1f GF/s | sgemm of its products %16.1f GF/s | %5.1f%%  arena %.1f MiB\n", what,
           t * 1e3, flops / t * 1e-9, flops / ts * 1e-9, 100.0 * ts / t, (double)dfx_arena_peak(s.a) / (1 << 20));
    dfx_spatial_attention_free(&s.sa);
    dfx_arena_destroy(s.a);
    free(s.x);
}

static int run(void)
{
    printf("OpenBLAS %s, core %s, %d threads\n", OPENBLAS_VERSION, dfx_ops_blas_core(), dfx_ops_blas_threads());
    printf("%-46s %10s %12s | %-35s | %s\n", "layer", "time", "rate", "equivalent raw sgemm", "of sgemm");
    bench_conv("conv 3x3 320->320 64x64 batch 1 (SD)", 1, 320, 320, 64, 64, 3, 1, 1);
    bench_conv_all("conv 3x3 320->320 64x64 batch 2 (SD, CFG)", 2, 320, 320, 64, 64);
    bench_conv_all("conv 3x3 640->640 32x32 batch 2 (SD)", 2, 640, 640, 32, 32);
    bench_conv_all("conv 3x3 1280->1280 16x16 batch 2 (SD)", 2, 1280, 1280, 16, 16);
    bench_conv_all("conv 3x3 1280->1280 8x8 batch 2 (SD)", 2, 1280, 1280, 8, 8);
    /* the ddpm-cifar10-32 UNet's 3x3 convolutions */
    bench_conv_all("conv 3x3 128->128 32x32 batch 16 (cifar)", 16, 128, 128, 32, 32);
    bench_conv_all("conv 3x3 384->128 32x32 batch 16 (cifar)", 16, 384, 128, 32, 32);
    bench_conv_all("conv 3x3 256->256 32x32 batch 16 (cifar)", 16, 256, 256, 32, 32);
    bench_conv_all("conv 3x3 256->256 16x16 batch 16 (cifar)", 16, 256, 256, 16, 16);
    bench_conv_all("conv 3x3 512->256 16x16 batch 16 (cifar)", 16, 512, 256, 16, 16);
    bench_conv_all("conv 3x3 256->256 8x8 batch 16 (cifar)", 16, 256, 256, 8, 8);
    bench_conv_all("conv 3x3 512->256 4x4 batch 16 (cifar)", 16, 512, 256, 4, 4);
    bench_conv_all("conv 3x3 256->256 4x4 batch 16 (cifar)", 16, 256, 256, 4, 4);
    bench_conv_all("conv 3x3 128->128 32x32 batch 1 (cifar)", 1, 128, 128, 32, 32);
    bench_conv_all("conv 3x3 256->256 16x16 batch 1 (cifar)", 1, 256, 256, 16, 16);
    bench_conv_all("conv 3x3 256->256 8x8 batch 1 (cifar)", 1, 256, 256, 8, 8);
    bench_conv_all("conv 3x3 256->256 4x4 batch 1 (cifar)", 1, 256, 256, 4, 4);
    bench_conv("conv 3x3 128->128 256x256 batch 1 (VAE)", 1, 128, 128, 256, 256, 3, 1, 1);
    bench_conv("conv 3x3 4->320 64x64 batch 2 (SD conv_in)", 2, 4, 320, 64, 64, 3, 1, 1);
    bench_conv("conv 3x3 s2 320->320 64x64 batch 2 (down)", 2, 320, 320, 64, 64, 3, 2, 1);
    bench_conv("conv 1x1 640->320 64x64 batch 2 (shortcut)", 2, 640, 320, 64, 64, 1, 1, 0);
    bench_resblock("resblock 320 64x64 batch 2, temb 1280 (SD)", 2, 320, 64, 64, 1280);
    bench_resblock("resblock 128 256x256 batch 1 (VAE)", 1, 128, 256, 256, 0);
    bench_attention("attention 4096 tok, 8 x 40, batch 2 (SD)", 2, 8, 4096, 4096, 40);
    bench_attention("attention 1024 tok, 8 x 80, batch 2 (SD)", 2, 8, 1024, 1024, 80);
    bench_attention("cross-attention 4096 x 77, 8 x 40, batch 2", 2, 8, 4096, 77, 40);
    bench_attention("attention 256 tok, 1 x 256, batch 16 (cifar)", 16, 1, 256, 256, 256);
    bench_spatial_attention("spatial attention 256 ch 16x16 batch 16 (cifar)", 16, 256, 1, 16, 16);
    bench_spatial_attention("spatial attention 256 ch 16x16 batch 1 (cifar)", 1, 256, 1, 16, 16);
    bench_conv("conv 1x1 384->128 32x32 batch 16 (cifar)", 16, 384, 128, 32, 32, 1, 1, 0);
    bench_conv("conv 1x1 512->256 16x16 batch 16 (cifar)", 16, 512, 256, 16, 16, 1, 1, 0);
    bench_conv("conv 1x1 512->256 4x4 batch 16 (cifar)", 16, 512, 256, 4, 4, 1, 1, 0);
    bench_conv("conv 3x3 s2 128->128 32x32 batch 16 (cifar)", 16, 128, 128, 32, 32, 3, 2, 1);
    return 0;
}

int main(int argc, char **argv)
{
    const char *kernels = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--kernels") && i + 1 < argc) {
            kernels = argv[++i];
        } else if (!strcmp(argv[i], "--filter") && i + 1 < argc) {
            filter = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--seconds S] [--filter TEXT] [--kernels Haswell,SkylakeX,...]\n",
                    argv[0]);
            return 2;
        }
    }
    if (!kernels) {
        const char *pinned = getenv("OPENBLAS_CORETYPE");
        printf("OPENBLAS_CORETYPE=%s\n", pinned ? pinned : "(not set: OpenBLAS picks the kernel)");
        return run();
    }
    /* one child per kernel: OpenBLAS reads OPENBLAS_CORETYPE once at load */
    char *list = strdup(kernels), *save = NULL;
    int rc = 0;
    for (char *k = strtok_r(list, ",", &save); k; k = strtok_r(NULL, ",", &save)) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd, "OPENBLAS_CORETYPE=%s '%s' --seconds %g%s%s%s", k, argv[0], seconds,
                 filter ? " --filter '" : "", filter ? filter : "", filter ? "'" : "");
        printf("\n== OPENBLAS_CORETYPE=%s\n", k);
        fflush(stdout);
        int st = system(cmd);
        if (st != 0) {
            printf("   (could not run with this kernel: %s %d; the CPU may lack its instructions)\n",
                   WIFSIGNALED(st) ? "signal" : "exit status", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
            rc = 1;
        }
    }
    free(list);
    return rc != 0;
}
