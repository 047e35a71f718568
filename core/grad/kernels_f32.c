/* The tape's kernels for float32 (see kernels.h). */
#define REAL float
#define K(name) name##_f32
#define GEMM cblas_sgemm
#define EXP expf
#define LOG logf
#define SQRT sqrtf
#define ERF erff
#define TANH tanhf
#include "core/grad/kernels.h"
