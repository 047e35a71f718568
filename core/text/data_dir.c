/* Where dfx's shipped data files (data/ in the source tree: CLIP's BPE
 * merges) are: found relative to the running libdfx, as the built-in
 * plugins are (base/registry.c), so a build tree uses the source tree's
 * data/ and an installed tree its own <datadir>/dfx wherever it was staged
 * or moved. */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/text_internal.h"
#include "dfx_core_paths.h"

/* any object inside libdfx, to ask the dynamic linker where libdfx is */
static const char self_marker;

static char data_dir[PATH_MAX];
static pthread_once_t data_dir_once = PTHREAD_ONCE_INIT;

/* DFX_DATA_FROM_LIBDIR is <datadir>/dfx relative to <libdir> (empty when
 * either was configured as an absolute path: then only the configured
 * DFX_DATA_INSTALL_DIR is used). */
static void find_data_dir(void)
{
    Dl_info info;
    char lib[PATH_MAX], build[PATH_MAX];
    snprintf(data_dir, sizeof data_dir, "%s", DFX_DATA_INSTALL_DIR);
    if (!dladdr(&self_marker, &info) || !info.dli_fname || !realpath(info.dli_fname, lib))
        return;
    char *slash = strrchr(lib, '/');
    if (!slash)
        return;
    *slash = '\0'; /* libdfx's folder, symbolic links resolved */
    if (realpath(DFX_LIB_BUILD_DIR, build) && strcmp(lib, build) == 0) {
        snprintf(data_dir, sizeof data_dir, "%s", DFX_DATA_BUILD_DIR);
    } else if (DFX_DATA_FROM_LIBDIR[0]) {
        char dir[PATH_MAX];
        int n = snprintf(dir, sizeof dir, "%s/%s", lib, DFX_DATA_FROM_LIBDIR);
        if (n > 0 && (size_t)n < sizeof dir)
            snprintf(data_dir, sizeof data_dir, "%s", dir);
    }
}

const char *dfx__data_dir(void)
{
    pthread_once(&data_dir_once, find_data_dir);
    return data_dir;
}
