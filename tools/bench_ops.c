/* bench_ops: dfx's matrix product next to raw cblas_sgemm, in GFLOP/s, at
 * square sizes and at the shapes diffusion networks use (im2col
 * convolutions, attention), with the OpenBLAS kernel in use.
 *
 * usage: bench_ops [--seconds S] [--kernels Haswell,SkylakeX,...]
 * --kernels re-runs the benchmark once per OPENBLAS_CORETYPE given (the
 * environment this process got is left as it is). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dfx/ops.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct shape {
    const char *what;
    int m, n, k;
} shape;

static const shape shapes[] = {
    {"square 256", 256, 256, 256},
    {"square 512", 512, 512, 512},
    {"square 1024", 1024, 1024, 1024},
    {"square 2048", 2048, 2048, 2048},
    {"SD conv 64x64, 320->320 (im2col)", 4096, 320, 2880},
    {"SD conv 32x32, 640->640 (im2col)", 1024, 640, 5760},
    {"SD attention QK^T 4096 tokens, d=40", 4096, 4096, 40},
    {"cifar conv 16x16, 256->256, batch 16", 4096, 256, 2304},
};

/* Best-of time for one product, repeating until `seconds` have passed. */
static double time_gemm(bool use_dfx, const shape *s, const float *a, const float *b, float *c, double seconds)
{
    double best = 1e30, start = now();
    int reps = 0;
    do {
        double t0 = now();
        if (use_dfx)
            dfx_ops_matmul(false, false, s->m, s->n, s->k, 1.0f, a, s->k, b, s->n, 0.0f, c, s->n);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->m, s->n, s->k, 1.0f, a, s->k, b, s->n,
                        0.0f, c, s->n);
        double t = now() - t0;
        best = t < best ? t : best;
        reps++;
    } while (now() - start < seconds || reps < 3);
    return best;
}

static int run(double seconds)
{
    printf("OpenBLAS %s, core %s, %d threads\n", OPENBLAS_VERSION, dfx_ops_blas_core(), dfx_ops_blas_threads());
    printf("%-40s %10s %10s %8s\n", "shape (m x n x k)", "sgemm", "dfx", "dfx/sgemm");
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        const shape *s = &shapes[i];
        size_t na = (size_t)s->m * s->k, nb = (size_t)s->k * s->n, nc = (size_t)s->m * s->n;
        float *a = malloc(na * sizeof *a), *b = malloc(nb * sizeof *b), *c = malloc(nc * sizeof *c);
        if (!a || !b || !c) {
            fprintf(stderr, "bench_ops: out of memory\n");
            return 1;
        }
        for (size_t j = 0; j < na; j++)
            a[j] = (float)((j * 2654435761u) % 1000) / 1000.0f - 0.5f;
        for (size_t j = 0; j < nb; j++)
            b[j] = (float)((j * 40503u) % 1000) / 1000.0f - 0.5f;
        double flops = 2.0 * s->m * s->n * s->k;
        double t_raw = time_gemm(false, s, a, b, c, seconds);
        double t_dfx = time_gemm(true, s, a, b, c, seconds);
        printf("%-40s %7.1f GF %7.1f GF %8.3f   (%d x %d x %d)\n", s->what, flops / t_raw * 1e-9,
               flops / t_dfx * 1e-9, t_raw / t_dfx, s->m, s->n, s->k);
        free(a);
        free(b);
        free(c);
    }
    return 0;
}

int main(int argc, char **argv)
{
    double seconds = 1.0;
    const char *kernels = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--kernels") && i + 1 < argc) {
            kernels = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--seconds S] [--kernels Haswell,SkylakeX,...]\n", argv[0]);
            return 2;
        }
    }
    if (!kernels) {
        const char *pinned = getenv("OPENBLAS_CORETYPE");
        printf("OPENBLAS_CORETYPE=%s\n", pinned ? pinned : "(not set: OpenBLAS picks the kernel)");
        return run(seconds);
    }
    /* one child per kernel: OpenBLAS reads OPENBLAS_CORETYPE once at load */
    char *list = strdup(kernels), *save = NULL;
    int rc = 0;
    for (char *k = strtok_r(list, ",", &save); k; k = strtok_r(NULL, ",", &save)) {
        char cmd[4096], secs[32];
        snprintf(secs, sizeof secs, "%g", seconds);
        snprintf(cmd, sizeof cmd, "OPENBLAS_CORETYPE=%s '%s' --seconds %s", k, argv[0], secs);
        printf("\n== OPENBLAS_CORETYPE=%s\n", k);
        fflush(stdout);
        int st = system(cmd);
        if (st != 0) {
            printf("   (could not run with this kernel: %s %d; the CPU may lack its instructions)\n",
                   WIFSIGNALED(st) ? "signal" : "exit status",
                   WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
            rc = 1;
        }
    }
    free(list);
    return rc != 0;
}
