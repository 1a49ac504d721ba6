/* libFuzzer target: the indexer's catalog loader (indexer/idx_catalog.h) on arbitrary bytes as
 * CATALOG; a catalog that loads is written back and loaded again, and must say the same. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idx_catalog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (dir[0] == '\0') {
        snprintf(dir, sizeof(dir), "/tmp/strata-fuzz-catalog-XXXXXX");
        if (mkdtemp(dir) == NULL)
            abort();
    }
    char path[128];
    snprintf(path, sizeof(path), "%s/CATALOG", dir);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, size, f) != size)
        abort();
    fclose(f);
    struct idx_catalog *c;
    struct st_err err = {0};
    if (idx_catalog_open(dir, &c, &err) != ST_OK)
        return 0;
    size_t n = c->n, ng = c->ngone, nu = c->nunits, nm = 0;
    for (size_t i = 0; i < c->nunits; i++)
        nm += c->units[i].nmem;
    if (idx_catalog_save(c, &err) != ST_OK)
        abort();
    idx_catalog_free(c);
    if (idx_catalog_open(dir, &c, &err) != ST_OK || c->n != n || c->ngone != ng || c->nunits != nu)
        abort(); /* what was written back must load as it was */
    for (size_t i = 0; i < c->nunits; i++)
        nm -= c->units[i].nmem;
    if (nm != 0)
        abort();
    idx_catalog_free(c);
    return 0;
}
