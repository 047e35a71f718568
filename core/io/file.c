/* Whole-file reads and atomic file writes (temporary file + rename), so an
 * interrupted or failed write never leaves a half-written output behind. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"

char *dfx__path_join(const char *dir, const char *name)
{
    const size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s/%s", dir, name);
    return s;
}

dfx_status dfx__read_file(const char *path, char **data, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    struct stat sb;
    char *buf;

    *data = NULL;
    *len = 0;
    if (!fp)
        return dfx_error_set(errno == ENOENT ? DFX_ERR_NOT_FOUND : DFX_ERR_IO,
                             "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(fp);
        return dfx_error_set(DFX_ERR_IO, "%s: not a regular file", path);
    }
    buf = malloc((size_t)sb.st_size + 1);
    if (!buf) {
        fclose(fp);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory reading %lld bytes",
                             path, (long long)sb.st_size);
    }
    size_t got = fread(buf, 1, (size_t)sb.st_size, fp);
    int err = ferror(fp);
    fclose(fp);
    if (err || got != (size_t)sb.st_size) {
        free(buf);
        return dfx_error_set(DFX_ERR_IO, "%s: read failed", path);
    }
    buf[got] = '\0';
    *data = buf;
    *len = got;
    return DFX_OK;
}

/* Creates the folders missing above path (as mkdir -p), so an output's
 * folder need not exist beforehand. *made is the top folder it
 * created (NULL when none), for remove_parents after a failed write. */
static dfx_status make_parents(const char *path, char **made)
{
    *made = NULL;
    char *dir = strdup(path);
    if (!dir)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
    char *slash = strrchr(dir, '/');
    struct stat sb;
    if (!slash || slash == dir || (*slash = '\0', stat(dir, &sb) == 0)) {
        free(dir);
        return DFX_OK;
    }
    dfx_status st = DFX_OK;
    for (char *q = dir + 1;; q++) {
        if (*q != '/' && *q != '\0')
            continue;
        const char end = *q;
        *q = '\0';
        if (mkdir(dir, 0777) == 0) {
            if (!*made && !(*made = strdup(dir)))
                st = dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory");
        } else if (errno != EEXIST) {
            st = dfx_error_set(DFX_ERR_IO, "%s: cannot create the folder %s: %s", path, dir, strerror(errno));
        }
        *q = end;
        if (st || !end)
            break;
    }
    free(dir);
    return st;
}

/* Removes the folders make_parents created above path (they are empty when
 * the write failed), deepest first, up to and including `made`. */
static void remove_parents(const char *path, const char *made)
{
    char *dir = strdup(path);
    size_t top = strlen(made);
    char *slash;
    while (dir && (slash = strrchr(dir, '/')) && (size_t)(slash - dir) >= top) {
        *slash = '\0';
        if (rmdir(dir) != 0)
            break;
    }
    free(dir);
}

static void outfile_release(dfx__outfile *f)
{
    free(f->path);
    free(f->tmp);
    free(f->made);
    f->path = f->tmp = f->made = NULL;
    f->fp = NULL;
}

/* After a failed write: the temporary file and any folder open created go. */
static void outfile_remove(dfx__outfile *f)
{
    unlink(f->tmp);
    if (f->made)
        remove_parents(f->path, f->made);
}

dfx_status dfx__outfile_open(dfx__outfile *f, const char *path)
{
    memset(f, 0, sizeof *f);
    size_t n = strlen(path);
    f->path = malloc(n + 1);
    f->tmp = malloc(n + 16);
    if (!f->path || !f->tmp) {
        outfile_release(f);
        return dfx_error_set(DFX_ERR_NO_MEMORY, "%s: out of memory", path);
    }
    memcpy(f->path, path, n + 1);
    memcpy(f->tmp, path, n);
    memcpy(f->tmp + n, ".tmp.XXXXXX", sizeof ".tmp.XXXXXX");
    dfx_status st = make_parents(path, &f->made);
    if (st) {
        outfile_release(f);
        return st;
    }
    int fd = mkstemp(f->tmp);
    if (fd < 0) {
        int e = errno;
        if (f->made)
            remove_parents(f->path, f->made);
        outfile_release(f);
        return dfx_error_set(DFX_ERR_IO, "%s: cannot create a temporary file beside it: %s",
                             path, strerror(e));
    }
    /* mkstemp creates 0600; outputs should follow the umask like fopen */
    mode_t mask = umask(0);
    umask(mask);
    if (fchmod(fd, 0666 & ~mask) != 0) {
        /* the file still works; its mode is only stricter */
    }
    f->fp = fdopen(fd, "wb");
    if (!f->fp) {
        int e = errno;
        close(fd);
        outfile_remove(f);
        outfile_release(f);
        return dfx_error_set(DFX_ERR_IO, "%s: %s", path, strerror(e));
    }
    return DFX_OK;
}

dfx_status dfx__outfile_commit(dfx__outfile *f)
{
    int err = 0;
    const char *what = "write";
    if (fflush(f->fp) != 0 || ferror(f->fp)) {
        err = errno ? errno : EIO;
    } else if (fsync(fileno(f->fp)) != 0) {
        err = errno;
        what = "sync";
    }
    if (fclose(f->fp) != 0 && !err) {
        err = errno;
        what = "close";
    }
    f->fp = NULL;
    if (!err && rename(f->tmp, f->path) != 0) {
        err = errno;
        what = "rename";
    }
    if (err) {
        outfile_remove(f);
        dfx_error_set(DFX_ERR_IO, "%s: %s failed: %s (the previous file, if any, is unchanged)",
                      f->path, what, strerror(err));
        outfile_release(f);
        return DFX_ERR_IO;
    }
    outfile_release(f);
    return DFX_OK;
}

void dfx__outfile_abort(dfx__outfile *f)
{
    if (f->fp)
        fclose(f->fp);
    if (f->tmp)
        outfile_remove(f);
    outfile_release(f);
}

void dfx__mapping_release(const void *map, size_t map_size, const void *p, size_t n)
{
    const uintptr_t lo = (uintptr_t)map, hi = lo + map_size;
    uintptr_t a = (uintptr_t)p, b = a + n;
    if (!map || a < lo || a >= hi)
        return;
    b = b > hi ? hi : b;
    const long page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        return;
    const uintptr_t pg = (uintptr_t)page;
    /* only the pages wholly inside: a neighbour's bytes may not be read yet */
    a = (a + pg - 1) / pg * pg;
    b = b / pg * pg;
    if (b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
}
