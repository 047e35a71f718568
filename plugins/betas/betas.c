/* Discrete-time noise schedules defined by a table of betas (DDPM, Ho et al.
 * 2020): linear, scaled_linear (Stable Diffusion), cosine (IDDPM's
 * squaredcos_cap_v2, Nichol & Dhariwal 2021 eq. 17) and sqrt (Diffusion-LM,
 * Li et al. 2022), with every timestep layout diffusers and IDDPM use.
 *
 * The table is computed in float32 exactly as diffusers/torch do (so levels
 * match diffusers' alphas_cumprod to the bit) or in float64 as the original
 * IDDPM/guided-diffusion numpy code does. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dfx/plugin.h"

enum { PREC_F32, PREC_F64 };
enum { SPACING_LEADING, SPACING_TRAILING, SPACING_LINSPACE, SPACING_RESPACED };
enum { SIGMAS_DEFAULT, SIGMAS_KARRAS, SIGMAS_EXPONENTIAL };
enum { BOUNDS_SPACED, BOUNDS_FULL };
enum { INTERP_LINEAR, INTERP_LOG };
enum { STEP_NEXT, STEP_STRIDE };
enum { FINAL_CLEAN, FINAL_FIRST };
enum { LEVELS_VP, LEVELS_VE };
enum { FORMULA_LINEAR, FORMULA_SCALED_LINEAR, FORMULA_COSINE, FORMULA_SQRT };

typedef struct betas {
    int formula; /* set by each component's init wrapper */
    int64_t train_steps;
    double beta_start, beta_end, max_beta;
    dfx_floats trained_betas;
    bool zero_snr;
    double terminal_alpha_bar;
    int precision;
    int spacing;
    char *respacing;
    int64_t steps_offset;
    bool round_timesteps;
    bool skip_zero;
    double lambda_min_clipped;
    int sigmas;
    int sigma_bounds;
    double rho, sigma_min, sigma_max;
    int interpolation;
    int step;
    int final;
    int init_noise;
    int levels;

    double *alpha_bar;    /* [train_steps] */
    double *sigma_ve;     /* [train_steps] sqrt((1 - a) / a), float32-rounded in F32 mode */
    double *log_sigma;    /* [train_steps] */
} betas;

static const char *const precision_names[] = {"float32", "float64", NULL};
static const char *const spacing_names[] = {"leading", "trailing", "linspace", "respaced", NULL};
static const char *const sigmas_names[] = {"default", "karras", "exponential", NULL};
static const char *const bounds_names[] = {"spaced", "full", NULL};
static const char *const interp_names[] = {"linear", "log", NULL};
static const char *const step_names[] = {"next", "stride", NULL};
static const char *const final_names[] = {"clean", "first", NULL};
static const char *const init_names[] = {"auto", "unit", "sigma", NULL};
static const char *const levels_names[] = {"vp", "ve", NULL};

#define OFF(f) offsetof(betas, f)

#define COMMON_OPTIONS                                                                                \
    DFX_OPTION_INT("train_steps", OFF(train_steps), 1000, 2, 1000000,                                 \
                   "length T of the training process (num_train_timesteps)"),                         \
    DFX_OPTION_FLOATS("trained_betas", OFF(trained_betas), 0, 1,                                       \
                      "explicit betas (T values) replacing the formula"),                             \
    DFX_OPTION_BOOL("zero_snr", OFF(zero_snr), false,                                                  \
                    "rescale to zero terminal SNR (Lin et al. 2023, Algorithm 1); needs v-prediction"), \
    DFX_OPTION_FLOAT_OR_NULL("terminal_alpha_bar", OFF(terminal_alpha_bar), 0, 1,                      \
                             "overwrite alpha_bar of the last training step (diffusers' Euler and DPM " \
                             "schedulers use 2^-24 with zero_snr)"),                                   \
    DFX_OPTION_ENUM("precision", OFF(precision), PREC_F32, precision_names,                            \
                    "arithmetic of the table: float32 as diffusers, float64 as IDDPM/guided-diffusion"), \
    DFX_OPTION_ENUM("spacing", OFF(spacing), SPACING_LEADING, spacing_names,                           \
                    "timestep layout (Lin et al. 2023, Table 2), or IDDPM respacing"),                \
    DFX_OPTION_STRING("respacing", OFF(respacing), NULL,                                               \
                      "with spacing: respaced, IDDPM section counts: \"250\", \"10,15,20\" or \"ddim\"" \
                      " (evenly strided, as \"ddimN\")"),                                             \
    DFX_OPTION_INT("steps_offset", OFF(steps_offset), 0, 0, 1000000,                                   \
                   "added to every leading-spaced timestep (SD uses 1)"),                              \
    DFX_OPTION_BOOL("round_timesteps", OFF(round_timesteps), true,                                     \
                    "feed integer training timesteps (DDPM/DDIM/PNDM/DPM) or keep linspace's "       \
                    "fractions (Euler/Heun/LMS)"),                                                     \
    DFX_OPTION_BOOL("skip_zero", OFF(skip_zero), false,                                                \
                    "leading/linspace: lay out steps+1 timesteps and drop t = 0 "                      \
                    "(DPMSolverMultistepScheduler)"),                                                  \
    DFX_OPTION_FLOAT("lambda_min_clipped", OFF(lambda_min_clipped), -INFINITY, -INFINITY, INFINITY,    \
                     "drop training steps whose log-SNR/2 is below this (DPM-Solver)"),               \
    DFX_OPTION_ENUM("sigmas", OFF(sigmas), SIGMAS_DEFAULT, sigmas_names,                               \
                    "noise levels: at the spaced timesteps, or Karras et al. 2022 (eq. 5), or "       \
                    "geometric"),                                                                     \
    DFX_OPTION_ENUM("sigma_bounds", OFF(sigma_bounds), BOUNDS_SPACED, bounds_names,                    \
                    "karras/exponential range: from the spaced timesteps (Euler/Heun/LMS) or the "    \
                    "whole table (DPM-Solver)"),                                                      \
    DFX_OPTION_FLOAT("rho", OFF(rho), 7.0, 1e-3, 1000, "Karras rho"),                                  \
    DFX_OPTION_FLOAT_OR_NULL("sigma_min", OFF(sigma_min), 0, INFINITY,                                 \
                             "karras/exponential: smallest sigma (default from the table)"),          \
    DFX_OPTION_FLOAT_OR_NULL("sigma_max", OFF(sigma_max), 0, INFINITY,                                 \
                             "karras/exponential: largest sigma (default from the table)"),           \
    DFX_OPTION_ENUM("interpolation", OFF(interpolation), INTERP_LINEAR, interp_names,                  \
                    "sigma between training steps: linear in t (diffusers) or in log sigma "          \
                    "(k-diffusion)"),                                                                 \
    DFX_OPTION_ENUM("step", OFF(step), STEP_NEXT, step_names,                                          \
                    "where a step lands: the next level, or t - T/steps as diffusers' "               \
                    "DDPM/DDIM/PNDM compute it"),                                                     \
    DFX_OPTION_ENUM("final", OFF(final), FINAL_CLEAN, final_names,                                     \
                    "the level after the last step: clean data, or alpha_bar[0] (DDIM's "             \
                    "set_alpha_to_one: false)"),                                                      \
    DFX_OPTION_ENUM("init_noise", OFF(init_noise), 0, init_names,                                      \
                    "initial noise scale: as the sampler prefers, unit variance, or sigma_max"),            \
    DFX_OPTION_ENUM("levels", OFF(levels), LEVELS_VP, levels_names,                                     \
                    "parametrisation of the levels: vp (alpha = sqrt(alpha_bar)) or ve (alpha = 1, "    \
                    "sigma = sqrt((1 - alpha_bar) / alpha_bar) in the table's precision, as "           \
                    "k-diffusion and diffusers' Euler/Heun/LMS hold them)")

static const dfx_option linear_options[] = {
    DFX_OPTION_FLOAT("beta_start", OFF(beta_start), 0.0001, 0, 1, "beta of the first training step"),
    DFX_OPTION_FLOAT("beta_end", OFF(beta_end), 0.02, 0, 1, "beta of the last training step"),
    COMMON_OPTIONS,
    DFX_OPTION_END,
};

static const dfx_option scaled_linear_options[] = {
    DFX_OPTION_FLOAT("beta_start", OFF(beta_start), 0.00085, 0, 1, "beta of the first training step"),
    DFX_OPTION_FLOAT("beta_end", OFF(beta_end), 0.012, 0, 1, "beta of the last training step"),
    COMMON_OPTIONS,
    DFX_OPTION_END,
};

static const dfx_option alpha_bar_options[] = {
    DFX_OPTION_FLOAT("max_beta", OFF(max_beta), 0.999, 0, 1, "betas are capped here (IDDPM)"),
    COMMON_OPTIONS,
    DFX_OPTION_END,
};

/* ---- the training table ------------------------------------------------ */

/* IDDPM's betas_for_alpha_bar: beta_i = min(1 - abar((i+1)/T) / abar(i/T), max_beta). */
static double cosine_abar(double t)
{
    double c = cos((t + 0.008) / 1.008 * M_PI / 2);
    return c * c;
}

static double sqrt_abar(double t)
{
    return 1 - sqrt(t + 0.0001);
}

static dfx_status build_table(betas *b)
{
    const int64_t T = b->train_steps;
    const bool f32 = b->precision == PREC_F32;
    double *beta = malloc((size_t)T * sizeof *beta);
    float *tmp = malloc((size_t)T * sizeof *tmp);
    b->alpha_bar = calloc((size_t)T, sizeof *b->alpha_bar);
    b->sigma_ve = malloc((size_t)T * sizeof *b->sigma_ve);
    b->log_sigma = malloc((size_t)T * sizeof *b->log_sigma);
    if (!beta || !tmp || !b->alpha_bar || !b->sigma_ve || !b->log_sigma) {
        free(beta);
        free(tmp);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory for a %lld-step table", (long long)T);
    }

    if (b->trained_betas.n) {
        if (b->trained_betas.n != T) {
            free(beta);
            free(tmp);
            return dfx_error_set(DFX_ERR_CONFIG, "trained_betas has %lld values but train_steps is %lld",
                                 (long long)b->trained_betas.n, (long long)T);
        }
        for (int64_t i = 0; i < T; i++)
            beta[i] = f32 ? (float)b->trained_betas.v[i] : b->trained_betas.v[i];
    } else if (b->formula == FORMULA_LINEAR || b->formula == FORMULA_SCALED_LINEAR) {
        bool sq = b->formula == FORMULA_SCALED_LINEAR;
        double s = sq ? sqrt(b->beta_start) : b->beta_start, e = sq ? sqrt(b->beta_end) : b->beta_end;
        if (f32) {
            dfx_ops_linspace_f32(tmp, s, e, T);
            for (int64_t i = 0; i < T; i++)
                beta[i] = sq ? tmp[i] * tmp[i] : tmp[i];
        } else {
            /* numpy.linspace */
            for (int64_t i = 0; i < T; i++) {
                double v = i == T - 1 ? e : s + (e - s) / (double)(T - 1) * (double)i;
                beta[i] = sq ? v * v : v;
            }
        }
    } else {
        double (*abar)(double) = b->formula == FORMULA_COSINE ? cosine_abar : sqrt_abar;
        for (int64_t i = 0; i < T; i++) {
            double v = 1 - abar((double)(i + 1) / (double)T) / abar((double)i / (double)T);
            v = v < b->max_beta ? v : b->max_beta;
            beta[i] = f32 ? (float)v : v;
        }
    }

    if (b->zero_snr) {
        /* Lin et al. 2023, Algorithm 1, in the table's precision */
        double *sq = b->alpha_bar; /* scratch */
        double acc = 1;
        for (int64_t i = 0; i < T; i++) {
            acc *= f32 ? (double)(float)(1.0f - (float)beta[i]) : 1 - beta[i];
            sq[i] = f32 ? sqrtf((float)acc) : sqrt(acc);
        }
        double s0 = sq[0], sT = sq[T - 1];
        double scale = f32 ? (double)((float)s0 / ((float)s0 - (float)sT)) : s0 / (s0 - sT);
        for (int64_t i = 0; i < T; i++) {
            double v = f32 ? (double)((float)sq[i] - (float)sT) : sq[i] - sT;
            v = f32 ? (double)((float)v * (float)scale) : v * scale;
            sq[i] = f32 ? (double)((float)v * (float)v) : v * v; /* alpha_bar */
        }
        for (int64_t i = T - 1; i >= 0; i--) {
            double a = i == 0 ? sq[0] : (f32 ? (double)((float)sq[i] / (float)sq[i - 1]) : sq[i] / sq[i - 1]);
            beta[i] = f32 ? (double)(1.0f - (float)a) : 1 - a;
        }
    }

    /* torch.cumprod on CPU accumulates in double and stores each product */
    double acc = 1;
    for (int64_t i = 0; i < T; i++) {
        if (!(beta[i] >= 0 && beta[i] <= 1)) {
            dfx_error_set(DFX_ERR_CONFIG, "beta[%lld] = %g is outside [0, 1]", (long long)i, beta[i]);
            free(beta);
            free(tmp);
            return DFX_ERR_CONFIG;
        }
        acc *= f32 ? (double)(1.0f - (float)beta[i]) : 1 - beta[i];
        b->alpha_bar[i] = f32 ? (double)(float)acc : acc;
    }
    if (!isnan(b->terminal_alpha_bar))
        b->alpha_bar[T - 1] = b->terminal_alpha_bar;
    for (int64_t i = 0; i < T; i++) {
        double a = b->alpha_bar[i];
        double s = f32 ? (double)sqrtf((1.0f - (float)a) / (float)a) : sqrt((1 - a) / a);
        b->sigma_ve[i] = s;
        b->log_sigma[i] = f32 ? (double)(float)log(s) : log(s);
    }
    free(beta);
    free(tmp);
    return DFX_OK;
}

/* ---- levels ------------------------------------------------------------ */

/* The level at a noise level given as sigma/alpha, in the configured
 * parametrisation. */
static dfx_level level_from_sigma_ve(const betas *b, double s, double t)
{
    if (b->levels == LEVELS_VE)
        return (dfx_level){t, 1, s};
    if (isinf(s))
        return (dfx_level){t, 0, 1};
    double a = 1 / sqrt(1 + s * s);
    return (dfx_level){t, a, s * a};
}

/* The level of training step i (i = -1: the clean end). */
static dfx_level level_at_step(const betas *b, int64_t i, double t)
{
    if (i < 0)
        return (dfx_level){t, 1, 0};
    if (b->levels == LEVELS_VE)
        return (dfx_level){t, 1, b->sigma_ve[i]};
    double abar = b->alpha_bar[i];
    return (dfx_level){t, sqrt(abar), sqrt(1 - abar)};
}

/* sigma at a fractional training time: numpy.interp over the table, or
 * k-diffusion's log-linear interpolation. */
static double sigma_at(const betas *b, double t)
{
    const int64_t T = b->train_steps;
    if (t <= 0)
        return b->sigma_ve[0];
    if (t >= (double)(T - 1))
        return b->sigma_ve[T - 1];
    int64_t lo = (int64_t)floor(t);
    double w = t - (double)lo;
    if (w == 0)
        return b->sigma_ve[lo];
    if (b->interpolation == INTERP_LOG)
        return exp((1 - w) * b->log_sigma[lo] + w * b->log_sigma[lo + 1]);
    return b->sigma_ve[lo] + (b->sigma_ve[lo + 1] - b->sigma_ve[lo]) * w;
}

static dfx_status betas_level_at(void *priv, double t, dfx_level *out)
{
    const betas *b = priv;
    if (!(t >= 0 && t <= (double)(b->train_steps - 1)))
        return dfx_error_set(DFX_ERR_RANGE, "timestep %g is outside the training range [0, %lld]", t,
                             (long long)(b->train_steps - 1));
    if (t == floor(t))
        *out = level_at_step(b, (int64_t)t, t);
    else
        *out = level_from_sigma_ve(b, sigma_at(b, t), t);
    return DFX_OK;
}

/* diffusers' _sigma_to_t: log-sigma interpolation over the table. */
static dfx_status betas_t_model_of(void *priv, double sigma, double *t)
{
    const betas *b = priv;
    const int64_t T = b->train_steps;
    double ls = log(sigma > 1e-10 ? sigma : 1e-10);
    int64_t lo = 0;
    for (int64_t i = 0; i < T; i++)
        if (ls - b->log_sigma[i] >= 0)
            lo = i;
    if (lo > T - 2)
        lo = T - 2;
    double low = b->log_sigma[lo], high = b->log_sigma[lo + 1];
    double w = (low - ls) / (low - high);
    w = w < 0 ? 0 : (w > 1 ? 1 : w);
    *t = (1 - w) * (double)lo + w * (double)(lo + 1);
    return DFX_OK;
}

/* numpy.arange(start, stop, step) for a negative float step: length
 * ceil((stop - start) / step), values start + i * ((start + step) - start). */
static double arange_value(double start, double step, int64_t i)
{
    return start + (double)i * ((start + step) - start);
}

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* IDDPM's space_timesteps: the kept training steps for section counts. */
static dfx_status respaced(const betas *b, int64_t steps, double *ts)
{
    const int64_t T = b->train_steps;
    const char *spec = b->respacing ? b->respacing : "";
    int64_t n = 0;
    if (strncmp(spec, "ddim", 4) == 0) {
        int64_t want = spec[4] ? strtoll(spec + 4, NULL, 10) : steps;
        if (want != steps)
            return dfx_error_set(DFX_ERR_CONFIG, "respacing '%s' gives %lld steps but steps is %lld", spec,
                                 (long long)want, (long long)steps);
        for (int64_t stride = 1; stride < T; stride++) {
            if ((T + stride - 1) / stride == steps) {
                for (int64_t t = 0; t < T; t += stride)
                    ts[n++] = (double)t;
                break;
            }
        }
        if (!n)
            return dfx_error_set(DFX_ERR_CONFIG, "respacing 'ddim': no integer stride gives exactly %lld of %lld steps",
                                 (long long)steps, (long long)T);
    } else {
        int64_t counts[256], nsec = 0, total = 0;
        const char *p = spec;
        while (*p && nsec < 256) {
            char *end;
            long long c = strtoll(p, &end, 10);
            if (end == p || c < 1 || (*end && *end != ','))
                return dfx_error_set(DFX_ERR_CONFIG,
                                     "respacing '%s': expected comma-separated positive counts or 'ddimN'", spec);
            counts[nsec++] = c;
            total += c;
            p = *end ? end + 1 : end;
        }
        if (!nsec)
            return dfx_error_set(DFX_ERR_CONFIG, "spacing 'respaced' needs respacing (e.g. \"250\" or \"ddim50\")");
        if (total != steps)
            return dfx_error_set(DFX_ERR_CONFIG, "respacing '%s' gives %lld steps but steps is %lld; set steps: %lld",
                                 spec, (long long)total, (long long)steps, (long long)total);
        int64_t size = T / nsec, extra = T % nsec, start = 0;
        for (int64_t i = 0; i < nsec; i++) {
            int64_t sz = size + (i < extra);
            if (counts[i] > sz)
                return dfx_error_set(DFX_ERR_CONFIG, "respacing '%s': cannot take %lld steps from a section of %lld",
                                     spec, (long long)counts[i], (long long)sz);
            double stride = counts[i] > 1 ? (double)(sz - 1) / (double)(counts[i] - 1) : 1;
            double cur = 0;
            for (int64_t j = 0; j < counts[i]; j++) {
                ts[n++] = (double)start + rint(cur);
                cur += stride;
            }
            start += sz;
        }
    }
    qsort(ts, (size_t)n, sizeof *ts, cmp_desc);
    for (int64_t i = 1; i < n; i++)
        if (ts[i] == ts[i - 1])
            return dfx_error_set(DFX_ERR_CONFIG, "respacing '%s' repeats timestep %g", spec, ts[i]);
    return DFX_OK;
}

/* The spaced timesteps in descending order (diffusers' set_timesteps). */
static dfx_status spaced_timesteps(const betas *b, int64_t steps, double *ts, bool *fractional)
{
    const int64_t T = b->train_steps;
    int64_t last = T;
    *fractional = false;
    if (isfinite(b->lambda_min_clipped)) {
        /* lambda_t = log(alpha_t) - log(sigma_t) decreases with t */
        int64_t clipped = 0;
        for (int64_t i = T - 1; i >= 0; i--) {
            double l = 0.5 * log(b->alpha_bar[i]) - 0.5 * log(1 - b->alpha_bar[i]);
            if (l < b->lambda_min_clipped)
                clipped++;
        }
        last = T - clipped;
    }
    const int64_t m = b->skip_zero ? steps + 1 : steps;
    switch (b->spacing) {
    case SPACING_LEADING: {
        int64_t ratio = last / m;
        if (ratio < 1)
            return dfx_error_set(DFX_ERR_CONFIG, "%lld leading steps do not fit %lld training steps",
                                 (long long)steps, (long long)last);
        for (int64_t i = 0; i < steps; i++)
            ts[i] = (double)((m - 1 - i) * ratio + b->steps_offset);
        break;
    }
    case SPACING_TRAILING: {
        double ratio = (double)T / (double)steps;
        for (int64_t i = 0; i < steps; i++)
            ts[i] = rint(arange_value((double)last, -ratio, i)) - 1;
        break;
    }
    case SPACING_LINSPACE: {
        double step = m > 1 ? (double)(last - 1) / (double)(m - 1) : 0;
        for (int64_t i = 0; i < steps; i++) {
            int64_t k = m - 1 - i; /* numpy.linspace, reversed */
            double v = k == m - 1 && m > 1 ? (double)(last - 1) : (double)k * step;
            if (b->round_timesteps) {
                ts[i] = rint(v);
            } else {
                ts[i] = (float)v; /* diffusers keeps these as float32 */
                *fractional = *fractional || ts[i] != floor(ts[i]);
            }
        }
        break;
    }
    default:
        return respaced(b, steps, ts);
    }
    for (int64_t i = 0; i < steps; i++)
        if (ts[i] < 0 || ts[i] > (double)(T - 1))
            return dfx_error_set(DFX_ERR_CONFIG, "timestep %g lies outside the %lld training steps (steps_offset %lld too large?)",
                                 ts[i], (long long)T, (long long)b->steps_offset);
    return DFX_OK;
}

static dfx_status betas_plan(void *priv, int64_t steps, dfx_schedule *s)
{
    betas *b = priv;
    const int64_t T = b->train_steps;
    bool fractional;
    dfx_status st;

    if (steps > T)
        return dfx_error_set(DFX_ERR_CONFIG, "%lld steps exceed the %lld training steps", (long long)steps,
                             (long long)T);
    double *ts = malloc((size_t)(T > steps ? T : steps) * sizeof *ts);
    if (!ts)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    if ((st = spaced_timesteps(b, steps, ts, &fractional))) {
        free(ts);
        return st;
    }

    if (b->sigmas == SIGMAS_DEFAULT) {
        for (int64_t i = 0; i < steps; i++)
            s->levels[i] = fractional && ts[i] != floor(ts[i])
                               ? level_from_sigma_ve(b, (float)sigma_at(b, ts[i]), ts[i])
                               : level_at_step(b, (int64_t)ts[i], ts[i]);
    } else {
        double hi = b->sigma_bounds == BOUNDS_FULL ? b->sigma_ve[T - 1] : sigma_at(b, ts[0]);
        double lo = b->sigma_bounds == BOUNDS_FULL ? b->sigma_ve[0] : sigma_at(b, ts[steps - 1]);
        hi = isnan(b->sigma_max) ? hi : b->sigma_max;
        lo = isnan(b->sigma_min) ? lo : b->sigma_min;
        if (!(lo > 0 && hi >= lo)) {
            free(ts);
            return dfx_error_set(DFX_ERR_CONFIG, "sigma range [%g, %g] is empty or not positive", lo, hi);
        }
        for (int64_t i = 0; i < steps; i++) {
            double r = steps > 1 ? (double)i / (double)(steps - 1) : 0;
            double sig;
            if (b->sigmas == SIGMAS_KARRAS) {
                double a = pow(hi, 1 / b->rho), z = pow(lo, 1 / b->rho);
                sig = pow(a + r * (z - a), b->rho);
            } else {
                sig = exp(log(hi) + r * (log(lo) - log(hi)));
            }
            double t;
            betas_t_model_of(b, sig, &t);
            if (b->round_timesteps)
                t = rint(t);
            s->levels[i] = level_from_sigma_ve(b, (float)sig, t);
        }
    }

    dfx_level end = level_at_step(b, b->final == FINAL_FIRST ? 0 : -1, -1);
    s->levels[steps] = end;
    for (int64_t i = 0; i < steps; i++) {
        s->targets[i] = s->levels[i + 1];
        if (b->step == STEP_STRIDE) {
            double prev = s->levels[i].t_model - (double)(T / steps);
            s->targets[i] = prev >= 0 ? level_at_step(b, (int64_t)prev, prev) : end;
            s->targets[i].t_model = prev;
        }
    }
    s->init_noise = (dfx_init_noise)b->init_noise;
    s->float32 = b->precision == PREC_F32;
    memcpy(s->train_alpha_bar, b->alpha_bar, (size_t)T * sizeof *b->alpha_bar);
    free(ts);
    return DFX_OK;
}

static int64_t betas_train_steps(void *priv)
{
    return ((betas *)priv)->train_steps;
}

static void betas_fini(void *priv);

static dfx_status betas_init(betas *b, int formula)
{
    b->formula = formula;
    if (b->step == STEP_STRIDE && (b->sigmas != SIGMAS_DEFAULT || !b->round_timesteps))
        return dfx_error_set(DFX_ERR_CONFIG, "step: stride needs integer timesteps (round_timesteps: true, sigmas: default)");
    if (b->spacing == SPACING_RESPACED && (!b->respacing || !*b->respacing))
        return dfx_error_set(DFX_ERR_CONFIG, "spacing: respaced needs respacing (e.g. \"250\", \"10,15,20\" or \"ddim\")");
    if (b->spacing != SPACING_RESPACED && b->respacing && *b->respacing)
        return dfx_error_set(DFX_ERR_CONFIG, "respacing '%s' is only read with spacing: respaced", b->respacing);
    dfx_status st = build_table(b);
    if (st)
        betas_fini(b); /* fini runs only after a successful init */
    return st;
}

static void betas_fini(void *priv)
{
    betas *b = priv;
    free(b->alpha_bar);
    free(b->sigma_ve);
    free(b->log_sigma);
    b->alpha_bar = b->sigma_ve = b->log_sigma = NULL;
}

static dfx_status linear_init(void *p) { return betas_init(p, FORMULA_LINEAR); }
static dfx_status scaled_linear_init(void *p) { return betas_init(p, FORMULA_SCALED_LINEAR); }
static dfx_status cosine_init(void *p) { return betas_init(p, FORMULA_COSINE); }
static dfx_status sqrt_init(void *p) { return betas_init(p, FORMULA_SQRT); }

static const dfx_scheduler_ops betas_ops = {
    .plan = betas_plan,
    .train_steps = betas_train_steps,
    .level_at = betas_level_at,
    .t_model_of = betas_t_model_of,
};

static const dfx_component linear = {
    DFX_KIND_SCHEDULER, "linear", "DDPM's linear betas (Ho et al. 2020)", sizeof(betas),
    linear_options, linear_init, betas_fini, &betas_ops,
};
static const dfx_component scaled_linear = {
    DFX_KIND_SCHEDULER, "scaled_linear", "betas linear in sqrt(beta) (Stable Diffusion)", sizeof(betas),
    scaled_linear_options, scaled_linear_init, betas_fini, &betas_ops,
};
static const dfx_component cosine = {
    DFX_KIND_SCHEDULER, "cosine", "IDDPM cosine alpha_bar (squaredcos_cap_v2, Nichol & Dhariwal eq. 17)",
    sizeof(betas), alpha_bar_options, cosine_init, betas_fini, &betas_ops,
};
static const dfx_component sqrt_schedule = {
    DFX_KIND_SCHEDULER, "sqrt", "Diffusion-LM sqrt alpha_bar = 1 - sqrt(t + 1e-4) (Li et al. 2022)",
    sizeof(betas), alpha_bar_options, sqrt_init, betas_fini, &betas_ops,
};

static const dfx_component *const components[] = {&linear, &scaled_linear, &cosine, &sqrt_schedule, NULL};

static const dfx_plugin plugin = {
    DFX_ABI_VERSION, sizeof(dfx_plugin), "betas", "1.0", "MIT", components,
};

DFX_PLUGIN_EXPORT const dfx_plugin *dfx_plugin_entry(void)
{
    return &plugin;
}
