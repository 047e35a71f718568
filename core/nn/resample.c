/* The parameter-free halves of diffusers' Upsample2D and Downsample2D
 * (models/upsampling.py, downsampling.py): nearest-neighbour 2x upsampling
 * (F.interpolate(scale_factor=2.0, mode="nearest")) and 2x2 average pooling
 * (nn.AvgPool2d(2, 2)). The convolutions that may follow or replace them are
 * dfx_conv2d (Downsample2D with padding=0 pads only right and bottom: set
 * pad_bottom and pad_right to 1, pad_top and pad_left to 0). */
#include "core/nn/internal.h"
#include "dfx/nn.h"

void dfx_nn_upsample_nearest2x(const float *x, int64_t n, int64_t c, int64_t h, int64_t w, float *y)
{
    const int64_t planes = n * c, w2 = 2 * w;
#pragma omp parallel for if (DFX__NN_PAR(planes * h * w * 4)) schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        const float *src = x + p * h * w;
        float *dst = y + p * 4 * h * w;
        for (int64_t i = 0; i < h; i++) {
            float *row = dst + 2 * i * w2;
            for (int64_t j = 0; j < w; j++)
                row[2 * j] = row[2 * j + 1] = src[i * w + j];
            for (int64_t j = 0; j < w2; j++)
                row[w2 + j] = row[j];
        }
    }
}

void dfx_nn_avgpool2x(const float *x, int64_t n, int64_t c, int64_t h, int64_t w, float *y)
{
    const int64_t planes = n * c, ho = h / 2, wo = w / 2;
#pragma omp parallel for if (DFX__NN_PAR(planes * h * w)) schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        const float *src = x + p * h * w;
        float *dst = y + p * ho * wo;
        for (int64_t i = 0; i < ho; i++) {
            const float *r0 = src + 2 * i * w, *r1 = r0 + w;
            /* torch's avg_pool2d sums the window row by row, then divides
             * by the window size */
            for (int64_t j = 0; j < wo; j++)
                dst[i * wo + j] = (r0[2 * j] + r0[2 * j + 1] + r1[2 * j] + r1[2 * j + 1]) / 4.0f;
        }
    }
}
