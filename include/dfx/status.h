/* dfx status codes and the thread-local error message.
 *
 * Every fallible call returns a dfx_status; the human-readable detail of the
 * last failure on the calling thread is in dfx_error_message(). */
#ifndef DFX_STATUS_H
#define DFX_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define DFX_API __declspec(dllexport)
#else
#define DFX_API __attribute__((visibility("default")))
#endif

#if defined(__GNUC__)
#define DFX_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define DFX_NODISCARD __attribute__((warn_unused_result))
#else
#define DFX_PRINTF(fmt, args)
#define DFX_NODISCARD
#endif

#define DFX_STATUS_MAP(X)                                                      \
    X(OK, 0, "success")                                                        \
    X(ERR_INVALID_ARG, -1, "invalid argument")                                 \
    X(ERR_NO_MEMORY, -2, "out of memory")                                      \
    X(ERR_IO, -3, "i/o error")                                                 \
    X(ERR_CONFIG, -4, "invalid pipeline")                                      \
    X(ERR_RANGE, -5, "value out of range")                                     \
    X(ERR_NOT_FOUND, -6, "not found")                                          \
    X(ERR_PLUGIN, -7, "plugin load failed")                                    \
    X(ERR_ABI, -8, "incompatible ABI")                                         \
    X(ERR_FORMAT, -9, "malformed file")                                        \
    X(ERR_UNSUPPORTED, -10, "not supported")                                   \
    X(ERR_ABORTED, -11, "aborted")                                             \
    X(ERR_NUMERIC, -12, "numerical failure")

typedef enum dfx_status {
#define DFX_STATUS_ENUM_(name, value, text) DFX_##name = value,
    DFX_STATUS_MAP(DFX_STATUS_ENUM_)
#undef DFX_STATUS_ENUM_
} dfx_status;

/* Returns the fixed description of a status ("invalid argument"); never NULL. */
DFX_API const char *dfx_status_text(dfx_status status);

/* Records a formatted message for the calling thread and returns `status`,
 * so a failure reads `return dfx_error_set(DFX_ERR_RANGE, "...", ...);`.
 * The message replaces any earlier one. Thread-safe (thread-local storage). */
DFX_API dfx_status dfx_error_set(dfx_status status, const char *fmt, ...)
    DFX_PRINTF(2, 3);

/* Prepends context to the current message ("file.yaml:3:5: " + message) and
 * returns `status`. Use when passing a callee's failure up with more detail. */
DFX_API dfx_status dfx_error_prefix(dfx_status status, const char *fmt, ...)
    DFX_PRINTF(2, 3);

/* The calling thread's last message, or "" when none was set. The pointer is
 * valid until the next dfx_error_* call on this thread. */
DFX_API const char *dfx_error_message(void);

/* Forgets the calling thread's message. */
DFX_API void dfx_error_clear(void);

/* Warnings: something the user should know that does not stop the run (a
 * prompt truncated to the model's length). They go to the handler, or to
 * stderr as "dfx: warning: MESSAGE" when none is set. */
typedef void (*dfx_warning_handler)(const char *message, void *user);

DFX_API void dfx_warn(const char *fmt, ...) DFX_PRINTF(1, 2);
/* Sets the process-wide handler (NULL: back to stderr). Not thread-safe
 * against concurrent dfx_warn calls: set it before running pipelines. */
DFX_API void dfx_set_warning_handler(dfx_warning_handler handler, void *user);

#ifdef __cplusplus
}
#endif
#endif
