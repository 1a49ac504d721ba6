/*
 * Replays a fuzz target's corpus without libFuzzer: every regular file under the directories
 * (or files) named on the command line goes through LLVMFuzzerTestOneInput once. Linked with
 * each target in the normal build so the checked-in corpus (seeds and past findings) runs as
 * a unit test, also under ASan + UBSan. Fails when no file was found (an empty replay proves
 * nothing) or a file cannot be read; a finding crashes the process.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    for (size_t got; buf != NULL && (got = fread(buf + len, 1, cap - len, f)) > 0;) {
        len += got;
        if (len == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    int bad = ferror(f) || buf == NULL;
    fclose(f);
    if (bad) {
        fprintf(stderr, "%s: read failed\n", path);
        free(buf);
        return -1;
    }
    /* An exact-size copy, so reading one byte past the input is caught by ASan. */
    uint8_t *exact = malloc(len ? len : 1);
    if (exact == NULL) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    return 0;
}

static int replay(const char *path, size_t *n)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        perror(path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        (*n)++;
        return replay_file(path);
    }
    struct dirent **ents;
    int k = scandir(path, &ents, NULL, alphasort);
    if (k < 0) {
        perror(path);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < k; i++) {
        if (rc == 0 && ents[i]->d_name[0] != '.') {
            char *p = malloc(strlen(path) + strlen(ents[i]->d_name) + 2);
            if (p == NULL) {
                rc = -1;
            } else {
                sprintf(p, "%s/%s", path, ents[i]->d_name);
                rc = replay(p, n);
                free(p);
            }
        }
        free(ents[i]);
    }
    free(ents);
    return rc;
}

int main(int argc, char **argv)
{
    size_t n = 0;
    for (int i = 1; i < argc; i++)
        if (replay(argv[i], &n) != 0)
            return 1;
    if (n == 0) {
        fprintf(stderr, "replay: no corpus files under the given paths\n");
        return 1;
    }
    printf("replay: %zu inputs, no crash\n", n);
    return 0;
}
