/* Status descriptions and the per-thread error message buffer. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "dfx/status.h"

#define DFX_ERROR_MAX 4096

static _Thread_local char error_buf[DFX_ERROR_MAX];

const char *dfx_status_text(dfx_status status)
{
    switch (status) {
#define DFX_STATUS_CASE_(name, value, text) \
    case DFX_##name:                        \
        return text;
        DFX_STATUS_MAP(DFX_STATUS_CASE_)
#undef DFX_STATUS_CASE_
    }
    return "unknown status";
}

dfx_status dfx_error_set(dfx_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_buf, sizeof error_buf, fmt, ap);
    va_end(ap);
    return status;
}

dfx_status dfx_error_prefix(dfx_status status, const char *fmt, ...)
{
    char prefix[DFX_ERROR_MAX];
    char old[DFX_ERROR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, error_buf, sizeof old);
    if (old[0] == '\0')
        snprintf(old, sizeof old, "%s", dfx_status_text(status));
    snprintf(error_buf, sizeof error_buf, "%s%s", prefix, old);
    return status;
}

const char *dfx_error_message(void)
{
    return error_buf;
}

void dfx_error_clear(void)
{
    error_buf[0] = '\0';
}

static dfx_warning_handler warn_handler;
static void *warn_user;

void dfx_warn(const char *fmt, ...)
{
    char msg[DFX_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (warn_handler)
        warn_handler(msg, warn_user);
    else
        fprintf(stderr, "dfx: warning: %s\n", msg);
}

void dfx_set_warning_handler(dfx_warning_handler handler, void *user)
{
    warn_handler = handler;
    warn_user = user;
}
