/* libFuzzer target: the ldm model config a single-file checkpoint may come
 * with (v1-inference.yaml), read from memory. An accepted config must hold
 * values in their documented ranges; a refusal must say why. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dfx/status.h"
#include "plugins/common/ldm_yaml.h"

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            __builtin_trap();                                                  \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dfxp_ldm_yaml y;
    if (dfxp_ldm_yaml_parse("fuzz.yaml", data, size, &y) == DFX_OK) {
        CHECK(y.num_heads == -1 || (y.num_heads >= 1 && y.num_heads <= 65536));
        CHECK(y.num_head_channels == -1 || (y.num_head_channels >= 1 && y.num_head_channels <= 65536));
        CHECK(y.context_dim >= 0 && y.context_dim <= 65536);
        CHECK(y.transformer_depth >= 0 && y.transformer_depth <= 65536);
        CHECK(y.linear >= -1 && y.linear <= 1);
        CHECK(isnan(y.scale_factor) || y.scale_factor > 0);
        CHECK(!*y.parameterization || !strcmp(y.parameterization, "eps") || !strcmp(y.parameterization, "v"));
        CHECK(memchr(y.cond_target, '\0', sizeof y.cond_target) && memchr(y.cond_layer, '\0', sizeof y.cond_layer));
    } else {
        CHECK(*dfx_error_message());
    }
    return 0;
}
