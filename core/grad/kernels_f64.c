/* The tape's kernels for float64, for gradient checks (see kernels.h). */
#define REAL double
#define K(name) name##_f64
#define GEMM cblas_dgemm
#define EXP exp
#define LOG log
#define SQRT sqrt
#define ERF erf
#define TANH tanh
#include "core/grad/kernels.h"
