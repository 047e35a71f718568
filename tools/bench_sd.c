/* bench_sd: Stable Diffusion 1.5 at full size on the CPU, 512x512 with
 * classifier-free guidance (UNet batch 2 on 64x64 latents, 77-token text
 * states): seconds per UNet step, for the text encoder (the prompt and the
 * negative prompt in one pass) and for the VAE decode of one image; GFLOP/s
 * with the FLOPs counted from the configs below (convolutions, linear layers
 * and attention products, 2 per multiply-add; norms and activations not
 * counted); the ratio to the raw sgemm rate measured in the same run; and
 * the process's peak RSS after each stage.
 *
 * The networks have seeded random weights and the configs of
 * runwayml/stable-diffusion-v1-5, unless a checkpoint is given: a diffusers
 * folder, or (where dfx reads them) an original single-file checkpoint such
 * as the one tools/gen_sd_checkpoint.py writes
 * (python3 tools/gen_sd_checkpoint.py --dtype f16 sd15-random.safetensors).
 *
 * usage: bench_sd [--steps N] [--seconds S] [--winograd fast|balanced|off]
 *                 [--no-text] [--no-vae] [CHECKPOINT]
 * Threads: OPENBLAS_NUM_THREADS (and OMP_NUM_THREADS), as for every dfx run. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dfx/dfx.h"
#include "dfx_config.h"

#define LATENT 64   /* 512 / 8 */
#define TOKENS 77
#define PROMPT "a photo of an astronaut riding a horse on mars"

/* runwayml/stable-diffusion-v1-5's unet, vae and text_encoder configs (the
 * fields that matter; the others take diffusers' and transformers' defaults,
 * which are SD 1.5's) */
static const int64_t unet_ch[4] = {320, 640, 1280, 1280};
static const int64_t unet_layers = 2, unet_context = 768;
static const bool unet_attn[4] = {true, true, true, false};
static const char unet_json[] =
    "{\"_class_name\": \"UNet2DConditionModel\", \"sample_size\": 64, \"in_channels\": 4, \"out_channels\": 4,\n"
    " \"block_out_channels\": [320, 640, 1280, 1280], \"layers_per_block\": 2, \"cross_attention_dim\": 768,\n"
    " \"attention_head_dim\": 8, \"down_block_types\": [\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\",\n"
    " \"CrossAttnDownBlock2D\", \"DownBlock2D\"], \"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\",\n"
    " \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\"], \"norm_num_groups\": 32, \"norm_eps\": 1e-05,\n"
    " \"flip_sin_to_cos\": true, \"freq_shift\": 0, \"downsample_padding\": 1, \"act_fn\": \"silu\"}\n";

static const int64_t vae_ch[4] = {128, 256, 512, 512};
static const int64_t vae_layers = 2, vae_latent = 4;
static const char vae_json[] =
    "{\"_class_name\": \"AutoencoderKL\", \"in_channels\": 3, \"out_channels\": 3,\n"
    " \"block_out_channels\": [128, 256, 512, 512], \"layers_per_block\": 2, \"latent_channels\": 4,\n"
    " \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\",\n"
    " \"DownEncoderBlock2D\"], \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\",\n"
    " \"UpDecoderBlock2D\", \"UpDecoderBlock2D\"], \"norm_num_groups\": 32, \"act_fn\": \"silu\",\n"
    " \"sample_size\": 512, \"scaling_factor\": 0.18215}\n";

static const int64_t text_hidden = 768, text_layers = 12, text_inter = 3072;
static const char text_json[] =
    "{\"architectures\": [\"CLIPTextModel\"], \"model_type\": \"clip_text_model\", \"hidden_size\": 768,\n"
    " \"intermediate_size\": 3072, \"num_hidden_layers\": 12, \"num_attention_heads\": 12,\n"
    " \"max_position_embeddings\": 77, \"hidden_act\": \"quick_gelu\", \"vocab_size\": 49408,\n"
    " \"layer_norm_eps\": 1e-05, \"projection_dim\": 768, \"bos_token_id\": 0, \"eos_token_id\": 2,\n"
    " \"pad_token_id\": 1}\n";

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double peak_rss_gib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / (1024.0 * 1024.0);  /* ru_maxrss is in KiB */
}

/* ---- FLOPs ------------------------------------------------------------- */

static double conv_flops(int64_t cin, int64_t cout, int64_t k, int64_t px)
{
    return 2.0 * (double)cin * (double)cout * (double)(k * k) * (double)px;
}

/* ResnetBlock2D: two 3x3 convolutions and a 1x1 shortcut when the channels
 * change (the time projection is negligible) */
static double resnet_flops(int64_t cin, int64_t cout, int64_t px)
{
    return conv_flops(cin, cout, 3, px) + conv_flops(cout, cout, 3, px) +
           (cin != cout ? conv_flops(cin, cout, 1, px) : 0);
}

/* Transformer2DModel of c channels on px pixels: proj_in/out, self-attention
 * (q, k, v, out and both products), cross-attention on `tokens` states of
 * width ctx, GEGLU feed-forward (c -> 8c, 4c -> c) */
static double transformer_flops(int64_t c, int64_t px, int64_t tokens, int64_t ctx)
{
    const double p = (double)px, cc = (double)c * (double)c;
    double f = 2 * 2.0 * cc * p;                                  /* proj_in, proj_out */
    f += 4 * 2.0 * cc * p + 2 * 2.0 * p * p * (double)c;          /* self-attention */
    f += 2 * 2.0 * cc * p + 2 * 2.0 * (double)ctx * (double)c * (double)tokens +
         2 * 2.0 * p * (double)tokens * (double)c;                /* cross-attention */
    f += 2.0 * (double)c * 8.0 * (double)c * p + 2.0 * 4.0 * cc * p; /* feed-forward */
    return f;
}

/* one UNet2DConditionModel forward of one item on an s x s latent */
static double unet_flops(int64_t s)
{
    int64_t px = s * s, prev = unet_ch[0], skips[16], ns = 0;
    double f = 2.0 * 320 * 1280 + 2.0 * 1280 * 1280 + conv_flops(4, unet_ch[0], 3, px);
    skips[ns++] = unet_ch[0];
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < unet_layers; j++) {
            f += resnet_flops(prev, unet_ch[i], px);
            if (unet_attn[i])
                f += transformer_flops(unet_ch[i], px, TOKENS, unet_context);
            prev = unet_ch[i];
            skips[ns++] = prev;
        }
        if (i < 3) {
            px /= 4;
            f += conv_flops(prev, prev, 3, px);
            skips[ns++] = prev;
        }
    }
    f += 2 * resnet_flops(prev, prev, px) + transformer_flops(prev, px, TOKENS, unet_context);
    for (int i = 3; i >= 0; i--) {
        for (int j = 0; j <= unet_layers; j++) {
            f += resnet_flops(prev + skips[--ns], unet_ch[i], px);
            if (unet_attn[i])
                f += transformer_flops(unet_ch[i], px, TOKENS, unet_context);
            prev = unet_ch[i];
        }
        if (i > 0) {
            px *= 4;
            f += conv_flops(prev, prev, 3, px);
        }
    }
    return f + conv_flops(unet_ch[0], 4, 3, px);
}

/* AutoencoderKL's decoder (with post_quant_conv) on an s x s latent */
static double vae_decode_flops(int64_t s)
{
    int64_t px = s * s, prev = vae_ch[3];
    const double c = (double)prev, p = (double)px;
    double f = conv_flops(vae_latent, vae_latent, 1, px) + conv_flops(vae_latent, prev, 3, px);
    /* mid block: resnet, single-head attention on every pixel, resnet */
    f += 2 * resnet_flops(prev, prev, px) + 4 * 2.0 * c * c * p + 2 * 2.0 * p * p * c;
    for (int b = 0; b < 4; b++) {
        const int64_t out = vae_ch[3 - b];
        for (int j = 0; j <= vae_layers; j++) {
            f += resnet_flops(prev, out, px);
            prev = out;
        }
        if (b < 3) {
            px *= 4;
            f += conv_flops(prev, prev, 3, px);
        }
    }
    return f + conv_flops(prev, 3, 3, px);
}

/* CLIPTextModel on n sequences of TOKENS */
static double text_flops(int64_t n)
{
    const double t = (double)(n * TOKENS), h = (double)text_hidden;
    return (double)text_layers * t * (4 * 2.0 * h * h + 2 * 2.0 * h * (double)text_inter + 2 * 2.0 * TOKENS * h);
}

static double sgemm_rate(double seconds)
{
    const int n = 2048;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    if (!a || !b || !c)
        return 1;
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

/* ---- the run ----------------------------------------------------------- */

static int fail(const char *what)
{
    fprintf(stderr, "bench_sd: %s: %s\n", what, dfx_error_message());
    return 1;
}

static bool write_file(const char *dir, const char *sub, const char *text)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    if (mkdir(path, 0700) != 0)
        return false;
    snprintf(path, sizeof path, "%s/%s/config.json", dir, sub);
    FILE *f = fopen(path, "w");
    if (!f)
        return false;
    fputs(text, f);
    return fclose(f) == 0;
}

static void remove_tree(const char *dir)
{
    static const char *const subs[] = {"unet", "vae", "text_encoder"};
    char path[600];
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s/config.json", dir, subs[i]);
        remove(path);
        snprintf(path, sizeof path, "%s/%s", dir, subs[i]);
        rmdir(path);
    }
    rmdir(dir);
}

/* "path: '<ckpt>'" or "path: '<dir>/<sub>', random_weights: true" */
static void source(char *buf, size_t size, const char *ckpt, const char *dir, const char *sub)
{
    if (ckpt)
        snprintf(buf, size, "path: '%s'", ckpt);
    else
        snprintf(buf, size, "path: '%s/%s', random_weights: true", dir, sub);
}

static void row(const char *what, double seconds, double flops, double peak)
{
    const double rate = flops / seconds;
    printf("%-34s %10.3f %10.1f %9.1f%% %10.2f\n", what, seconds, rate * 1e-9, 100 * rate / peak, peak_rss_gib());
}

int main(int argc, char **argv)
{
    int steps = 3;
    double seconds = 2;
    bool text = true, vae = true;
    const char *ckpt = NULL, *winograd = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--winograd") && i + 1 < argc)
            winograd = argv[++i];
        else if (!strcmp(argv[i], "--no-text"))
            text = false;
        else if (!strcmp(argv[i], "--no-vae"))
            vae = false;
        else if (argv[i][0] != '-' && !ckpt)
            ckpt = argv[i];
        else {
            fprintf(stderr,
                    "usage: %s [--steps N] [--seconds S] [--winograd fast|balanced|off] [--no-text] [--no-vae] "
                    "[CHECKPOINT]\n"
                    "  full-size SD 1.5 with random weights, or CHECKPOINT (a diffusers folder or a single-file\n"
                    "  checkpoint; python3 tools/gen_sd_checkpoint.py --dtype f16 OUT.safetensors writes one\n"
                    "  with random weights in the original layout)\n",
                    argv[0]);
            return 2;
        }
    }
    if (steps < 1)
        steps = 1;
    char dir[] = "/tmp/bench_sd-XXXXXX";
    if (!mkdtemp(dir) || !write_file(dir, "unet", unet_json) || !write_file(dir, "vae", vae_json) ||
        !write_file(dir, "text_encoder", text_json)) {
        perror("bench_sd: config folder");
        return 1;
    }
    dfx_registry *reg;
    if (dfx_registry_create(&reg, NULL, 0))
        return fail("plugins");

    const double peak = sgemm_rate(seconds / 2);
    printf("Stable Diffusion 1.5, 512x512, CFG (UNet batch 2 on 4x64x64, %d tokens), %s\n", TOKENS,
           ckpt ? ckpt : "random weights");
    printf("OpenBLAS core %s, %d threads; raw sgemm 2048^3: %.1f GFLOP/s\n", dfx_ops_blas_core(),
           openblas_get_num_threads(), peak * 1e-9);
    printf("GFLOP: UNet step %.1f, text encoder %.1f, VAE decode %.1f\n", 2 * unet_flops(LATENT) * 1e-9,
           text_flops(2) * 1e-9, vae_decode_flops(LATENT) * 1e-9);

    char src[1200], yaml[1600];
    int rc = 1;
    dfx_instance *cond = NULL, *unet = NULL, *codec = NULL;
    dfx_tensor *x = NULL, *y = NULL, *ctx = NULL, *z = NULL, *img = NULL;
    dfx_conditioning cd = {0};

    /* the conditioning: prompt and negative prompt; zeros when not timed */
    const int64_t cshape[3] = {2, TOKENS, unet_context};
    if (dfx_tensor_create(&ctx, DFX_DTYPE_F32, 3, cshape))
        goto done;
    memset(ctx->data, 0, dfx_tensor_nbytes(ctx));
    double t0 = now();
    if (text) {
        source(src, sizeof src, ckpt, dir, "text_encoder");
        snprintf(yaml, sizeof yaml, "{type: clip_text, %s, prompt: '%s'}", src, PROMPT);
        if (dfx_instance_create(&cond, reg, DFX_KIND_CONDITIONER, yaml, "bench_sd")) {
            fail("text encoder");
            goto done;
        }
    }
    printf("loaded the text encoder in %.1f s (peak RSS %.2f GiB)\n", now() - t0, peak_rss_gib());
    t0 = now();
    source(src, sizeof src, ckpt, dir, "unet");
    snprintf(yaml, sizeof yaml, "{type: sd_unet, %s%s%s}", src, winograd ? ", winograd: " : "",
             winograd ? winograd : "");
    if (dfx_instance_create(&unet, reg, DFX_KIND_MODEL, yaml, "bench_sd")) {
        fail("unet");
        goto done;
    }
    printf("loaded the UNet in %.1f s (peak RSS %.2f GiB)\n", now() - t0, peak_rss_gib());
    if (vae) {
        t0 = now();
        source(src, sizeof src, ckpt, dir, "vae");
        snprintf(yaml, sizeof yaml, "{type: vae, %s}", src);
        if (dfx_instance_create(&codec, reg, DFX_KIND_CODEC, yaml, "bench_sd")) {
            fail("vae");
            goto done;
        }
        printf("loaded the VAE in %.1f s (peak RSS %.2f GiB)\n", now() - t0, peak_rss_gib());
    }
    printf("%-34s %10s %10s %10s %10s\n", "stage (best of runs)", "seconds", "GFLOP/s", "of sgemm", "peak GiB");

    if (text) {
        const dfx_conditioner_ops *ops = dfx_instance_component(cond)->ops;
        double best = 1e30;
        for (int r = 0; r < 3; r++) {
            dfx_conditioning_fini(&cd);
            double t = now();
            if (ops->encode(dfx_instance_priv(cond), 1, true, &cd)) {
                fail("text encode");
                goto done;
            }
            t = now() - t;
            best = t < best ? t : best;
        }
        const size_t half = dfx_tensor_nbytes(cd.context);
        if (half * 2 != dfx_tensor_nbytes(ctx)) {
            fprintf(stderr, "bench_sd: the text states are not [1, %d, %lld]\n", TOKENS, (long long)unet_context);
            goto done;
        }
        memcpy(ctx->data, cd.uncond_context->data, half);
        memcpy((char *)ctx->data + half, cd.context->data, half);
        row("text encode (prompt + negative)", best, text_flops(2), peak);
    }

    const int64_t xshape[4] = {2, 4, LATENT, LATENT};
    if (dfx_tensor_create(&x, DFX_DTYPE_F32, 4, xshape) || dfx_tensor_create(&y, DFX_DTYPE_F32, 4, xshape))
        goto done;
    dfx_rng *rng;
    if (dfx_rng_create(&rng, 0))
        goto done;
    dfx_rng_normal(rng, x->data, dfx_tensor_numel(x));
    dfx_rng_destroy(rng);
    {
        const dfx_model_ops *ops = dfx_instance_component(unet)->ops;
        const double t[2] = {981, 981}, sigma[2] = {1, 1};
        dfx_cond c = {ctx, NULL, NULL};
        dfx_model_input in = {x, t, sigma, &c};
        double first = now();
        if (ops->predict(dfx_instance_priv(unet), &in, y)) {
            fail("unet step");
            goto done;
        }
        first = now() - first;
        double best = 1e30, sum = 0;
        for (int s = 0; s < steps; s++) {
            double dt = now();
            if (ops->predict(dfx_instance_priv(unet), &in, y)) {
                fail("unet step");
                goto done;
            }
            dt = now() - dt;
            sum += dt;
            best = dt < best ? dt : best;
        }
        const double f = 2 * unet_flops(LATENT);
        row("UNet step, first (arena growth)", first, f, peak);
        row("UNet step, best", best, f, peak);
        row("UNet step, mean", sum / steps, f, peak);
    }

    if (vae) {
        const dfx_codec_ops *ops = dfx_instance_component(codec)->ops;
        const int64_t zshape[4] = {1, 4, LATENT, LATENT}, ishape[4] = {1, 3, 8 * LATENT, 8 * LATENT};
        if (dfx_tensor_create(&z, DFX_DTYPE_F32, 4, zshape) || dfx_tensor_create(&img, DFX_DTYPE_F32, 4, ishape))
            goto done;
        memcpy(z->data, y->data, dfx_tensor_nbytes(z));
        double best = 1e30;
        for (int r = 0; r < 2; r++) {
            double t = now();
            if (ops->decode(dfx_instance_priv(codec), z, img)) {
                fail("vae decode");
                goto done;
            }
            t = now() - t;
            best = t < best ? t : best;
        }
        row("VAE decode (1 image)", best, vae_decode_flops(LATENT), peak);
    }
    printf("peak RSS of the whole run: %.2f GiB\n", peak_rss_gib());
    rc = 0;
done:
    dfx_conditioning_fini(&cd);
    dfx_tensor_destroy(x);
    dfx_tensor_destroy(y);
    dfx_tensor_destroy(ctx);
    dfx_tensor_destroy(z);
    dfx_tensor_destroy(img);
    dfx_instance_destroy(cond);
    dfx_instance_destroy(unet);
    dfx_instance_destroy(codec);
    dfx_registry_destroy(reg);
    remove_tree(dir);
    return rc;
}
