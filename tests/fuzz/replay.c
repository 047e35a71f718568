/* Replays fuzz inputs without libFuzzer: feeds every file of the folders (or
 * the files) named on the command line to LLVMFuzzerTestOneInput. Built with
 * the project's compiler as an ordinary test, so the seed corpora and every
 * crash reproducer in regressions/ run in each build, the sanitizer CI build
 * included. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Each input gets a buffer of exactly its size, so that a sanitizer sees any
 * read past the end. */
static int replay_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    struct stat sb;
    if (!fp || fstat(fileno(fp), &sb) != 0) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        if (fp)
            fclose(fp);
        return -1;
    }
    size_t n = (size_t)sb.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf || fread(buf, 1, n, fp) != n) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        free(buf);
        fclose(fp);
        return -1;
    }
    fclose(fp);
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, n);
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

static int skip_hidden(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

int main(int argc, char **argv)
{
    long total = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    for (int a = 1; a < argc; a++) {
        struct stat sb;
        /* git keeps no empty folders: a target without reproducers yet has
         * no regressions/<target>/ in a fresh checkout */
        if (stat(argv[a], &sb) != 0) {
            fprintf(stderr, "replay: %s does not exist, skipped\n", argv[a]);
            continue;
        }
        if (!S_ISDIR(sb.st_mode)) {
            if (replay_file(argv[a]) != 0)
                return 1;
            total++;
            continue;
        }
        struct dirent **list;
        int n = scandir(argv[a], &list, skip_hidden, alphasort);
        if (n < 0) {
            fprintf(stderr, "replay: cannot list %s\n", argv[a]);
            return 1;
        }
        int failed = 0;
        for (int i = 0; i < n; i++) {
            size_t len = strlen(argv[a]) + strlen(list[i]->d_name) + 2;
            char *path = malloc(len);
            if (!path)
                return 1;
            snprintf(path, len, "%s/%s", argv[a], list[i]->d_name);
            if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
                if (replay_file(path) != 0)
                    failed = 1;
                total++;
            }
            free(path);
            free(list[i]);
        }
        free(list);
        if (failed)
            return 1;
    }
    /* a misnamed folder must not pass as "nothing to replay" */
    if (total == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        return 1;
    }
    fprintf(stderr, "replay: %ld inputs, all passed\n", total);
    return 0;
}
