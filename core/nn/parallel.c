/* Whether the nn layers may run their elementwise passes on OpenMP threads.
 * With OpenBLAS's pthreads build (what Debian installs as libopenblas0 by
 * default) there are two thread pools: OpenBLAS's and the OpenMP runtime's.
 * After a parallel region, OpenMP's idle threads keep spinning for a while
 * (libgomp: 300000 spins, several milliseconds, unless OMP_WAIT_POLICY says
 * passive; LLVM's libomp: 200 ms, KMP_BLOCKTIME), and the sgemm that
 * follows runs its lock-stepped threads on cores those spinners occupy. On
 * 2 cores a 3x3 convolution whose im2col fill is threaded then runs at 20-50%
 * of sgemm's rate, against 95% with the fill on one thread. So the layers
 * thread their passes only when nothing spins into the next product:
 * OpenBLAS single-threaded, or threaded with OpenMP itself (one shared pool),
 * or an OpenMP runtime told to sleep at once. */
#include <cblas.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <strings.h>

#include "core/nn/internal.h"

/* 0 unknown, 1 serial, 2 parallel */
static atomic_int mode;

static bool env_is(const char *name, const char *value)
{
    const char *v = getenv(name);
    return v && strcasecmp(v, value) == 0;
}

static bool env_below(const char *name, long limit)
{
    const char *v = getenv(name);
    char *end;
    if (!v || !*v)
        return false;
    long n = strtol(v, &end, 10);
    return *end == '\0' && n >= 0 && n <= limit;
}

bool dfx__nn_parallel(void)
{
    int m = atomic_load_explicit(&mode, memory_order_relaxed);
    if (m == 0) {
        bool ok = openblas_get_parallel() != OPENBLAS_THREAD || openblas_get_num_threads() <= 1 ||
                  env_is("OMP_WAIT_POLICY", "passive") || env_below("GOMP_SPINCOUNT", 10000) ||
                  env_is("KMP_BLOCKTIME", "0");
        m = ok ? 2 : 1;
        atomic_store_explicit(&mode, m, memory_order_relaxed);
    }
    return m == 2;
}
