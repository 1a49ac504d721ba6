#include "st_checksum.h"

#include <xxhash.h>
#if defined(STRATA_HAVE_XXH_DISPATCH) && (defined(__x86_64__) || defined(__i386__))
/* XXH3 through the library's runtime dispatch (AVX-512, AVX2 or SSE2, whichever the CPU has):
 * the plain entry points of Debian's build are SSE2 only, ~1.7x slower on 3 KiB rows. Same
 * function, same values on every variant. */
#include <xxh_x86dispatch.h>
#endif

uint32_t st_checksum32(const void *data, size_t len)
{
    return (uint32_t)XXH3_64bits(data, len);
}

uint64_t st_hash64(const void *data, size_t len)
{
    return XXH3_64bits(data, len);
}

uint64_t st_hash64_seed(const void *data, size_t len, uint64_t seed)
{
    return XXH3_64bits_withSeed(data, len, seed);
}

struct st_hash_stream *st_hash_stream_new(void)
{
    XXH3_state_t *s = XXH3_createState();
    if (s == NULL)
        return NULL;
    XXH3_64bits_reset(s);
    return (struct st_hash_stream *)s;
}

void st_hash_stream_update(struct st_hash_stream *s, const void *data, size_t len)
{
    XXH3_64bits_update((XXH3_state_t *)s, data, len);
}

uint64_t st_hash_stream_digest(const struct st_hash_stream *s)
{
    return XXH3_64bits_digest((const XXH3_state_t *)s);
}

void st_hash_stream_reset(struct st_hash_stream *s)
{
    XXH3_64bits_reset((XXH3_state_t *)s);
}

void st_hash_stream_free(struct st_hash_stream *s)
{
    if (s != NULL)
        XXH3_freeState((XXH3_state_t *)s);
}
