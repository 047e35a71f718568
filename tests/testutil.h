/* Helpers shared by the Check suites: fixture lookup (with a loud SKIP when
 * the fixtures are missing), tensor comparison and temporary paths. */
#ifndef DFX_TESTUTIL_H
#define DFX_TESTUTIL_H

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dfx/dfx.h"
#include "dfx_config.h"

/* meson treats this exit status as "skipped" */
#define TEST_EXIT_SKIP 77

/* The fixtures folder: $DFX_FIXTURES, else ../shared/fixtures beside the
 * source tree. Returns NULL when it does not exist. */
static inline const char *test_fixtures_dir(void)
{
    static char buf[4096];
    const char *env = getenv("DFX_FIXTURES");
    if (env && *env)
        snprintf(buf, sizeof buf, "%s", env);
    else
        snprintf(buf, sizeof buf, "%s/../shared/fixtures", DFX_SOURCE_ROOT);
    return access(buf, R_OK | X_OK) == 0 ? buf : NULL;
}

/* For parity suites: exits with the SKIP status and a loud message when the
 * fixtures are missing, so a missing folder is never a silent pass. */
static inline const char *test_require_fixtures(const char *suite)
{
    const char *dir = test_fixtures_dir();
    if (!dir) {
        fprintf(stderr,
                "\n*** SKIP %s: fixtures folder not found (set DFX_FIXTURES or put "
                "../shared/fixtures beside the source tree). These parity tests "
                "did NOT run. ***\n\n", suite);
        exit(TEST_EXIT_SKIP);
    }
    return dir;
}

/* Path of a fixture file (static buffer, overwritten by the next call). */
static inline const char *test_fixture(const char *rel)
{
    static char buf[4096];
    int n = snprintf(buf, sizeof buf, "%s/%s", test_fixtures_dir(), rel);
    ck_assert_msg(n > 0 && (size_t)n < sizeof buf, "fixture path too long: %s", rel);
    return buf;
}

/* A fresh temporary folder (mkdtemp under $TMPDIR or /tmp); the caller
 * removes it with test_rmtree. */
static inline char *test_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/dfx-test-XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    ck_assert_msg(d != NULL, "mkdtemp failed");
    return strdup(d);
}

static inline void test_rmtree(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* Runs argv (argv[0] is the program path) with stdin from /dev/null and
 * returns its exit status (128 + signal when killed); *out and *err receive
 * heap copies of what it printed (pass NULL to drop them). */
static inline int test_run(char *const argv[], char **out, char **err)
{
    char tmpl_o[] = "/tmp/dfx-out-XXXXXX", tmpl_e[] = "/tmp/dfx-err-XXXXXX";
    int fo = mkstemp(tmpl_o), fe = mkstemp(tmpl_e);
    ck_assert(fo >= 0 && fe >= 0);
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        int nul = open("/dev/null", O_RDONLY);
        dup2(nul, 0);
        dup2(fo, 1);
        dup2(fe, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    char **dst[2] = {out, err};
    int fds[2] = {fo, fe};
    for (int i = 0; i < 2; i++) {
        off_t len = lseek(fds[i], 0, SEEK_END);
        if (dst[i]) {
            *dst[i] = calloc((size_t)len + 1, 1);
            ck_assert(*dst[i] != NULL);
            ck_assert_int_eq(pread(fds[i], *dst[i], (size_t)len, 0), len);
        }
        close(fds[i]);
    }
    unlink(tmpl_o);
    unlink(tmpl_e);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* A fixture safetensors file (rel to the fixtures folder), opened or the
 * test fails with the reader's message. */
static inline dfx_safetensors *test_open_fixture(const char *rel)
{
    dfx_safetensors *st;
    ck_assert_msg(dfx_safetensors_open(test_fixture(rel), &st) == DFX_OK, "%s", dfx_error_message());
    return st;
}

/* Tensor name of st as float32, or the test fails naming it. */
static inline dfx_tensor *test_read_f32(const dfx_safetensors *st, const char *name)
{
    dfx_tensor *t;
    ck_assert_msg(dfx_safetensors_read(st, name, DFX_DTYPE_F32, &t) == DFX_OK, "%s: %s", name,
                  dfx_error_message());
    return t;
}

/* Largest |a[i] - b[i]| over n floats (NaN counts as infinite). */
static inline double test_max_abs_diff(const float *a, const float *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m))
            m = isnan(d) ? INFINITY : d;
    }
    return m;
}

static inline double test_max_abs(const float *a, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(a[i]) > m)
            m = fabs(a[i]);
    return m;
}

/* Runs a suite and returns the process exit status meson expects. */
static inline int test_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
