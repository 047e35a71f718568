/* Helpers shared by the Check suites: fixture lookup (with a loud SKIP when
 * the fixtures are missing), tensor comparison and temporary paths. */
#ifndef DFX_TESTUTIL_H
#define DFX_TESTUTIL_H

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    snprintf(buf, sizeof buf, "%s/%s", test_fixtures_dir(), rel);
    return buf;
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
