/* AUTOMATIC1111's vocabulary: its sampler names as aliases of dfx samplers
 * and schedules, and the `parameters` text it writes into PNG files. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/run/run.h"

/* A1111 sampler names and the dfx sampler (with the options that make it
 * that sampler) each stands for. */
static const struct {
    const char *name;
    const char *type;
    const char *key, *value;   /* a sampler option the name implies, or NULL */
} samplers[] = {
    {"Euler a", "euler_ancestral", NULL, NULL},
    {"Euler", "euler", NULL, NULL},
    {"LMS", "lms", NULL, NULL},
    {"Heun", "heun", NULL, NULL},
    {"DPM++ 2M SDE", "dpmpp_2m", "noise", "sde"},
    {"DPM++ 2M", "dpmpp_2m", "noise", "none"},
    {"DDIM", "ddim", NULL, NULL},
    {"PLMS", "pndm", "skip_prk", "true"},
    {"PNDM", "pndm", "skip_prk", "false"},
    {"DDPM", "ddpm", NULL, NULL},
};

/* Schedule types: the suffix of an old-style name ("DPM++ 2M Karras") or
 * A1111's "Schedule type", and the betas schedulers' `sigmas` value. */
static const struct {
    const char *name;
    const char *sigmas;
} schedules[] = {
    {"Karras", "karras"},
    {"Exponential", "exponential"},
};

bool dfx__a1111_sampler(const char *name, dfx__a1111_alias *out)
{
    memset(out, 0, sizeof *out);
    size_t len = strlen(name);
    for (size_t k = 0; k < sizeof schedules / sizeof *schedules; k++) {
        const size_t n = strlen(schedules[k].name);
        if (len > n + 1 && name[len - n - 1] == ' ' && strcasecmp(name + len - n, schedules[k].name) == 0) {
            out->sigmas = schedules[k].sigmas;
            len -= n + 1;
            break;
        }
    }
    for (size_t i = 0; i < sizeof samplers / sizeof *samplers; i++) {
        if (strlen(samplers[i].name) == len && strncasecmp(name, samplers[i].name, len) == 0) {
            out->type = samplers[i].type;
            out->key = samplers[i].key;
            out->value = samplers[i].value;
            return true;
        }
    }
    return false;
}

const char *dfx__a1111_sampler_name(const char *type, const char *noise, const char *skip_prk)
{
    for (size_t i = 0; i < sizeof samplers / sizeof *samplers; i++) {
        if (strcmp(samplers[i].type, type) != 0)
            continue;
        const char *have = !samplers[i].key ? NULL
                           : strcmp(samplers[i].key, "noise") == 0 ? noise
                                                                    : skip_prk;
        if (!samplers[i].key || (have && strcmp(have, samplers[i].value) == 0))
            return samplers[i].name;
    }
    return type;
}

const char *dfx__a1111_schedule_name(const char *sigmas)
{
    for (size_t k = 0; sigmas && k < sizeof schedules / sizeof *schedules; k++)
        if (strcmp(sigmas, schedules[k].sigmas) == 0)
            return schedules[k].name;
    return "Automatic";
}

/* A value as A1111 quotes it (infotext_utils.quote): JSON when it holds a
 * comma, colon or newline, which would break the line into wrong pairs. */
static void put_value(FILE *f, const char *v)
{
    if (!strpbrk(v, ",:\n")) {
        fputs(v, f);
        return;
    }
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)v; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(f, "\\%c", *c);
        else if (*c == '\n')
            fputs("\\n", f);
        else if (*c < 0x20)
            fprintf(f, "\\u%04x", *c);
        else
            fputc(*c, f);
    }
    fputc('"', f);
}

char *dfx__a1111_text(const dfx__a1111_params *a)
{
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    if (!f)
        return NULL;
    if (a->prompt && *a->prompt)
        fprintf(f, "%s\n", a->prompt);
    if (a->negative_prompt && *a->negative_prompt)
        fprintf(f, "Negative prompt: %s\n", a->negative_prompt);
    fprintf(f, "Steps: %lld, Sampler: ", (long long)a->steps);
    put_value(f, a->sampler);
    fputs(", Schedule type: ", f);
    put_value(f, a->schedule);
    if (a->cfg_scale == a->cfg_scale)
        fprintf(f, ", CFG scale: %g", a->cfg_scale);
    fprintf(f, ", Seed: %lld", (long long)a->seed);
    if (a->width)
        fprintf(f, ", Size: %lldx%lld", (long long)a->width, (long long)a->height);
    fputs(", Model: ", f);
    put_value(f, a->model);
    if (a->denoising_strength == a->denoising_strength)
        fprintf(f, ", Denoising strength: %g", a->denoising_strength);
    if (fclose(f) != 0) {
        free(mem);
        return NULL;
    }
    return mem;
}
