/* dfx_arena: a stack allocator for the temporaries of forward passes. It
 * grows by whole chunks while the first passes discover how much they need;
 * once the stack is empty again it trades its chunks for one block as large
 * as the deepest stack seen, so every later pass of the same shape is served
 * from that block with no allocation at all. */
#include <stdlib.h>

#include "core/internal.h"
#include "dfx/nn.h"

/* Every allocation is rounded up to this, which keeps each one 64-byte
 * aligned (a cache line, and the widest vector load) inside 64-byte aligned
 * chunks. */
#define ALIGN 64

/* Smallest chunk: a handful of small layers should not cost a malloc each. */
#define CHUNK_MIN ((size_t)1 << 20)

typedef struct chunk {
    unsigned char *base;
    size_t cap;     /* bytes */
    size_t start;   /* logical offset of base: the sum of earlier chunks' cap */
    size_t used;    /* bytes in use, from base */
} chunk;

/* Positions handed out by dfx_arena_mark are logical offsets: chunk i covers
 * [start, start + cap). Chunks below `cur` keep the `used` they had when the
 * stack moved on; their unused tails are skipped, not counted as live. */
struct dfx_arena {
    chunk *chunks;
    int nchunks, cap_chunks;
    int cur;
    size_t live;    /* bytes in use, all chunks */
    size_t peak;    /* the largest `live` seen */
};

dfx_status dfx_arena_create(dfx_arena **out)
{
    if (!out)
        return dfx_error_set(DFX_ERR_INVALID_ARG, "dfx_arena_create: out is NULL");
    *out = calloc(1, sizeof **out);
    if (!*out)
        return dfx_error_set(DFX_ERR_NO_MEMORY, "out of memory creating an arena");
    return DFX_OK;
}

static void free_chunks(dfx_arena *a)
{
    for (int i = 0; i < a->nchunks; i++)
        free(a->chunks[i].base);
    a->nchunks = 0;
    a->cur = 0;
}

void dfx_arena_destroy(dfx_arena *a)
{
    if (!a)
        return;
    free_chunks(a);
    free(a->chunks);
    free(a);
}

/* Appends a chunk of at least `bytes`; false when memory runs out. */
static bool add_chunk(dfx_arena *a, size_t bytes)
{
    if (a->nchunks == a->cap_chunks) {
        int cap = a->cap_chunks ? 2 * a->cap_chunks : 8;
        chunk *c = realloc(a->chunks, (size_t)cap * sizeof *c);
        if (!c)
            return false;
        a->chunks = c;
        a->cap_chunks = cap;
    }
    unsigned char *base = dfx__aligned_alloc(bytes);
    if (!base)
        return false;
    size_t start = 0;
    if (a->nchunks) {
        const chunk *last = &a->chunks[a->nchunks - 1];
        start = last->start + last->cap;
    }
    a->chunks[a->nchunks++] = (chunk){base, bytes, start, 0};
    return true;
}

float *dfx_arena_alloc(dfx_arena *a, size_t n)
{
    if (!a || n > (SIZE_MAX - ALIGN) / sizeof(float)) {
        dfx_error_set(DFX_ERR_NO_MEMORY, "arena: cannot allocate %zu floats", n);
        return NULL;
    }
    size_t bytes = (n * sizeof(float) + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    /* the current chunk, else a later one that is empty (stack discipline:
     * everything after cur is free), else a new one */
    while (a->cur < a->nchunks && a->chunks[a->cur].cap - a->chunks[a->cur].used < bytes) {
        if (a->cur + 1 >= a->nchunks)
            break;
        a->cur++;
    }
    if (a->cur >= a->nchunks || a->chunks[a->cur].cap - a->chunks[a->cur].used < bytes) {
        /* grow geometrically so a pass needs few chunks; the pages past
         * what is used are never touched, so the overshoot costs address
         * space, not memory */
        size_t total = a->nchunks ? a->chunks[a->nchunks - 1].start + a->chunks[a->nchunks - 1].cap : 0;
        size_t want = bytes > total ? bytes : total;
        want = want > CHUNK_MIN ? want : CHUNK_MIN;
        if (!add_chunk(a, want)) {
            dfx_error_set(DFX_ERR_NO_MEMORY, "arena: out of memory allocating %zu bytes", want);
            return NULL;
        }
        a->cur = a->nchunks - 1;
    }
    chunk *c = &a->chunks[a->cur];
    float *p = (float *)(void *)(c->base + c->used);
    c->used += bytes;
    a->live += bytes;
    if (a->live > a->peak)
        a->peak = a->live;
    return p;
}

size_t dfx_arena_mark(const dfx_arena *a)
{
    if (!a || a->cur >= a->nchunks)
        return 0;
    return a->chunks[a->cur].start + a->chunks[a->cur].used;
}

void dfx_arena_release(dfx_arena *a, size_t mark)
{
    if (!a || a->nchunks == 0)
        return;
    int i = a->cur;
    while (i > 0 && a->chunks[i].start > mark)
        i--;
    for (int j = i + 1; j <= a->cur; j++) {
        a->live -= a->chunks[j].used;
        a->chunks[j].used = 0;
    }
    chunk *c = &a->chunks[i];
    size_t keep = mark - c->start;
    if (keep < c->used) {
        a->live -= c->used - keep;
        c->used = keep;
    }
    a->cur = i;
    if (a->live == 0 && a->nchunks > 1) {
        /* one block for the deepest stack seen: a later pass that repeats
         * the same allocations fits it exactly. Failing here is harmless,
         * the next allocation will grow the arena again. */
        free_chunks(a);
        add_chunk(a, a->peak);
    }
}

size_t dfx_arena_peak(const dfx_arena *a)
{
    return a ? a->peak : 0;
}
