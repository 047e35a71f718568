/* The dfx random generator: PyTorch's CPU generator (torch 1.13), bit for bit.
 *
 * dfx_rng_create(&g, s) then dfx_rng_normal(g, out, n) gives the same float32
 * values as `torch.manual_seed(s); torch.randn(n)` on an AVX2 CPU, including
 * the state carried between calls (the scalar path's cached second value and
 * the 16-wide path's tail redraw). This is what makes a seeded dfx run equal a
 * seeded diffusers CPU run. Not thread-safe: one generator per thread. */
#ifndef DFX_RNG_H
#define DFX_RNG_H

#include <stdint.h>

#include "dfx/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dfx_rng dfx_rng;

/* A generator seeded as torch.manual_seed(seed) (the low 32 bits count). */
DFX_API dfx_status dfx_rng_create(dfx_rng **out, uint64_t seed);
DFX_API void dfx_rng_destroy(dfx_rng *rng);

/* Re-seeds in place; drops any cached normal value. */
DFX_API void dfx_rng_seed(dfx_rng *rng, uint64_t seed);

/* An independent copy of the whole state. */
DFX_API dfx_status dfx_rng_clone(const dfx_rng *rng, dfx_rng **out);

/* One raw 32-bit output of the mt19937 engine. */
DFX_API uint32_t dfx_rng_u32(dfx_rng *rng);

/* torch.randn(n) for a contiguous float32 tensor of n elements. */
DFX_API void dfx_rng_normal(dfx_rng *rng, float *out, int64_t n);

/* torch.rand(n): uniform floats in [0, 1), 24 random bits each. */
DFX_API void dfx_rng_uniform(dfx_rng *rng, float *out, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
