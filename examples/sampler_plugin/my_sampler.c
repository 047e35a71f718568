/* my_sampler: an example dfx sampler plugin, written only against the public
 * plugin API (dfx/plugin.h). Copy this folder to start your own sampler.
 *
 * It integrates the probability-flow ODE in "DDIM coordinates" (Song, Meng &
 * Ermon 2021, sec. 4.3, eq. 14): with xbar = x / alpha and sigmabar =
 * sigma / alpha, the ODE reads d xbar = eps(xbar, sigmabar) d sigmabar, and
 *   order 1: the Euler step of it, which is deterministic DDIM (eq. 12 with
 *            eta = 0);
 *   order 2: Heun's method on it (Karras et al. 2022, Algorithm 1): an Euler
 *            predictor, a second model call at the next level and the
 *            trapezoidal corrector, which halves the error per step at twice
 *            the model calls. The last step, onto sigma = 0, stays Euler.
 *
 * Build:  cc -shared -fPIC my_sampler.c -o my_sampler.so $(pkg-config --cflags --libs dfx)
 * Use:    put my_sampler.so into ./plugins (or a DFX_PLUGIN_PATH folder, or
 *         --plugin-dir), then `sampler: {type: my_sampler, order: 2}`.
 *
 * The .so file's base name must equal the plugin name below ("my_sampler"):
 * rename both together. */
#include <math.h>
#include <stddef.h>

#include "dfx/plugin.h"

/* ---- options -----------------------------------------------------------
 * The core allocates one of these per pipeline (zeroed), writes the defaults
 * from the table below, then the values from the pipeline's sampler section,
 * validated against the table: type, range, unknown keys. The sampler never
 * parses anything itself; `dfx describe sampler my_sampler` prints the table. */
typedef struct my_sampler {
    int64_t order;   /* DFX_OPTION_INT writes an int64_t */
    double clip_x0;  /* DFX_OPTION_FLOAT(_OR_NULL) a double; NAN means null */
} my_sampler;

static const dfx_option my_sampler_options[] = {
    DFX_OPTION_INT("order", offsetof(my_sampler, order), 2, 1, 2,
                   "1: deterministic DDIM (Euler in DDIM coordinates); 2: Heun's correction, two model "
                   "calls per step"),
    DFX_OPTION_FLOAT_OR_NULL("clip_x0", offsetof(my_sampler, clip_x0), 0.0, INFINITY,
                             "clamp the predicted x0 to [-clip_x0, clip_x0] (1 for images in [-1, 1]) and "
                             "recompute eps from it; null: no clipping"),
    DFX_OPTION_END,
};

/* ---- one step's arithmetic ---------------------------------------------
 * A level is (t_model, alpha, sigma) with x = alpha * x0 + sigma * eps. The
 * schedule may be variance preserving (alpha^2 + sigma^2 = 1) or exploding
 * (alpha = 1); dividing by n = sqrt(alpha^2 + sigma^2) gives the
 * variance-preserving pair (a, b) that DDIM's formulas use. */
typedef struct vp {
    double n, a, b;
} vp;

static vp vp_of(const dfx_level *l)
{
    double n = sqrt(l->alpha * l->alpha + l->sigma * l->sigma);
    return (vp){n, l->alpha / n, l->sigma / n};
}

/* One model evaluation at level lv: x0 and eps predictions for x. The core's
 * denoiser handles whatever the model predicts (eps, v, x0, score) and any
 * guidance; a sampler only ever sees x0 and eps. */
static dfx_status denoise(const my_sampler *p, dfx_sampling *s, const dfx_tensor *x, const dfx_level *lv,
                          dfx_tensor *x0, dfx_tensor *eps)
{
    dfx_denoised out = {.x0 = x0, .eps = eps};
    dfx_status st = dfx_sampling_denoise(s, x, lv, &out);
    if (st || isnan(p->clip_x0))
        return st;
    const int64_t n = dfx_tensor_numel(x);
    const vp v = vp_of(lv);
    dfx_ops_clamp(x0->data, -p->clip_x0, p->clip_x0, n);
    if (v.b > 0) {
        /* eps = (x / n - a * x0) / b: the noise that leads to the clipped x0 */
        const float *in[2] = {x->data, x0->data};
        const double c[2] = {1 / (v.n * v.b), -v.a / v.b};
        dfx_ops_lincomb(eps->data, n, 2, c, in);
    }
    return DFX_OK;
}

/* Heun's correction needs both ends of the step at a finite sigmabar: not
 * onto clean data (b = 0) and not from alpha = 0 (zero terminal SNR). */
static bool corrects(const my_sampler *p, const dfx_level *from, const dfx_level *to)
{
    return p->order == 2 && from->alpha > 0 && to->sigma > 0;
}

/* ---- the sampler ---------------------------------------------------------
 * sample() owns the loop: x holds the initial noise at levels[0] (scaled by
 * the core) and must hold the sample at levels[steps] on return. targets[i]
 * is where step i lands: levels[i + 1], unless the scheduler mirrors a
 * reference that steps by a fixed stride. */
static dfx_status my_sampler_sample(void *priv, dfx_sampling *s, const dfx_schedule *sched, dfx_tensor *x)
{
    const my_sampler *p = priv;
    const int64_t n = dfx_tensor_numel(x);
    dfx_tensor *x0 = NULL, *eps = NULL, *eps2 = NULL, *xp = NULL;
    dfx_status st;

    /* scratch: allocated once per run, never per step */
    if ((st = dfx_tensor_create_like(&x0, x)) || (st = dfx_tensor_create_like(&eps, x)) ||
        (p->order == 2 && ((st = dfx_tensor_create_like(&eps2, x)) || (st = dfx_tensor_create_like(&xp, x)))))
        goto done;

    for (int64_t i = 0; i < sched->steps; i++) {
        const dfx_level *lv = &sched->levels[i], *to = &sched->targets[i];
        const vp v = vp_of(lv), w = vp_of(to);
        const bool heun = corrects(p, lv, to);
        if ((st = denoise(p, s, x, lv, x0, eps)))
            goto done;

        /* DDIM, eq. (12) with eta = 0: x' = n' (a' x0 + b' eps). For order 2
         * this is the predictor, kept in xp; x stays the step's start. */
        dfx_tensor *dst = heun ? xp : x;
        const float *in[3] = {x0->data, eps->data, NULL};
        double c[3] = {w.n * w.a, w.n * w.b, 0};
        dfx_ops_lincomb(dst->data, n, 2, c, in);
        /* every state after a model call goes to the trace, and this is
         * where a Ctrl-C (DFX_ERR_ABORTED) or a NaN stops the run */
        if ((st = dfx_sampling_report(s, dst)))
            goto done;
        if (!heun)
            continue;

        /* Heun: eps2 at the predicted point, then the trapezoid in DDIM
         * coordinates, xbar' = xbar + (sigmabar' - sigmabar) (eps + eps2) / 2,
         * i.e. x' = (n' a' / (n a)) x + (n' a' (sigmabar' - sigmabar) / 2) (eps + eps2) */
        if ((st = denoise(p, s, xp, to, x0, eps2)))
            goto done;
        const double h = w.n * w.a * (w.b / w.a - v.b / v.a) / 2;
        in[0] = x->data, in[1] = eps->data, in[2] = eps2->data;
        c[0] = w.n * w.a / (v.n * v.a), c[1] = h, c[2] = h;
        dfx_ops_lincomb(x->data, n, 3, c, in);
        if ((st = dfx_sampling_report(s, x)))
            goto done;
    }
done:
    dfx_tensor_destroy(x0);
    dfx_tensor_destroy(eps);
    dfx_tensor_destroy(eps2);
    dfx_tensor_destroy(xp);
    return st;
}

/* How many model calls sample() makes, for the progress bar. */
static int64_t my_sampler_evaluations(void *priv, const dfx_schedule *sched)
{
    const my_sampler *p = priv;
    int64_t calls = 0;
    for (int64_t i = 0; i < sched->steps; i++)
        calls += corrects(p, &sched->levels[i], &sched->targets[i]) ? 2 : 1;
    return calls;
}

static const dfx_sampler_ops my_sampler_ops = {
    .sample = my_sampler_sample,            /* required */
    .evaluations = my_sampler_evaluations,  /* optional: default `steps` */
    .init_noise = NULL,                     /* optional: default unit variance, as DDIM starts */
};

/* ---- the descriptor --------------------------------------------------------
 * Everything the loader checks when it opens the .so: ABI version, struct
 * size, plugin name == file name, required ops, the option table (names,
 * offsets inside priv_size, defaults inside their ranges). */
static const dfx_component my_sampler_component = {
    .kind = DFX_KIND_SAMPLER,
    .name = "my_sampler",  /* what pipelines write: sampler: {type: my_sampler} */
    .summary = "example plugin: DDIM (order 1) or Heun in DDIM coordinates (order 2)",
    .priv_size = sizeof(my_sampler),
    .options = my_sampler_options,
    .init = NULL,  /* optional: cross-checks of options and allocations after they are set */
    .fini = NULL,  /* optional: frees what init allocated */
    .ops = &my_sampler_ops,
};

static const dfx_component *const my_components[] = {&my_sampler_component, NULL};

static const dfx_plugin my_plugin = {
    .abi_version = DFX_ABI_VERSION,
    .struct_size = sizeof(dfx_plugin),
    .name = "my_sampler",  /* == the file name my_sampler.so */
    .version = "1.0",
    .license = "MIT",
    .components = my_components,
};

DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void)
{
    return &my_plugin;
}
