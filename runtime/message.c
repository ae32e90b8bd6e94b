/* Message arenas: bump allocation inside one jemalloc block per message. */
#include "message.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "tls.h"

/* Freed small messages kept per thread for the next allocations: up to
 * SPARE_COUNT blocks of each size up to SPARE_MAX. Most messages die on
 * the thread that receives them, which then builds the next ones of the
 * same shapes (a reply, the next decoded term, the next of a stream of
 * sends whose receiver runs on the same worker); reusing the blocks skips
 * the allocator's work on both ends (small-term decode: ~8% with one
 * block; one-way sends: see docs/design.md).
 *
 * Sizes are rounded up to jemalloc's own size classes (16 bytes apart up
 * to 128, 32 up to 256, 64 up to 512), which cost no memory jemalloc would
 * not spend anyway, leave twelve sizes, and give each its own slot: no
 * search, no eviction. Four slots shared by exact sizes, as before, ran
 * out: sizes seen only while a server started held them (every gen_server
 * call then took both its blocks from jemalloc, 11% of its instructions),
 * and a remote call's frames, decoded terms and control terms came in
 * more than four sizes (five of its twelve messages went to jemalloc).
 * Sanitizer builds go straight to malloc, so ASan still sees every
 * use-after-free. A thread that exits hands its blocks back (the table's
 * destructor). */
#if defined(KILN_ASAN) || defined(KILN_TSAN)
#define SPARE_MAX 0
#else
#define SPARE_MAX 512
#endif

#if SPARE_MAX > 0
#define SPARE_COUNT 64
#define SPARE_SLOTS 12 /* 80..128 by 16, 160..256 by 32, 320..512 by 64 */

_Static_assert(sizeof(kiln_msg) == 80, "the spare slots start at an 80-byte header");

/* A message's arena words (the block is an 80-byte header and 8 bytes a
 * word) decide its size class; the slot of n words, for every n a spare
 * block can hold, is one load from this table rather than a chain of
 * compares on each allocation and free. */
#define SPARE_WORDS ((SPARE_MAX - 80) / 8)
#define SLOT_OF_SIZE(z) ((z) <= 128 ? ((z) - 65) / 16 : (z) <= 256 ? 4 + ((z) - 129) / 32 : 8 + ((z) - 257) / 64)
#define SLOT_OF(n) [n] = SLOT_OF_SIZE(80 + 8 * (n))
#define SLOTS_OF_8(n) SLOT_OF(n), SLOT_OF(n + 1), SLOT_OF(n + 2), SLOT_OF(n + 3), SLOT_OF(n + 4), SLOT_OF(n + 5), \
                      SLOT_OF(n + 6), SLOT_OF(n + 7)
static const uint8_t slot_of_words[56] = {
    SLOTS_OF_8(0), SLOTS_OF_8(8), SLOTS_OF_8(16), SLOTS_OF_8(24), SLOTS_OF_8(32), SLOTS_OF_8(40), SLOTS_OF_8(48)};
_Static_assert(SPARE_WORDS < 56, "slot_of_words covers every spare size");
/* The arena words of each slot's class: 80..128 bytes by 16, 160..256 by
 * 32, 320..512 by 64. */
static const uint8_t slot_words[SPARE_SLOTS] = {0, 2, 4, 6, 10, 14, 18, 22, 30, 38, 46, 54};

static size_t slot_size(unsigned i) { return sizeof(kiln_msg) + 8 * (size_t)slot_words[i]; }

struct spares {
    unsigned n[SPARE_SLOTS];
    void *blk[SPARE_SLOTS][SPARE_COUNT];
};

static void spare_release(void *table)
{
    struct spares *s = table;
    for (unsigned i = 0; i < SPARE_SLOTS; i++)
        while (s->n[i])
            kiln_free_sized(s->blk[i][--s->n[i]], slot_size(i));
}

static struct kiln_tls_table spare_table = KILN_TLS_TABLE(sizeof(struct spares), spare_release);
static KILN_TLS void *tl_spares; /* NULL until the thread's first free of a small message */

/* i: a slot. */
static void *spare_take(unsigned i)
{
    struct spares *s = tl_spares;
    return s && s->n[i] ? s->blk[i][--s->n[i]] : NULL;
}

/* False when the block must go back to the allocator. */
static bool spare_keep(void *m, size_t words)
{
    unsigned i = slot_of_words[words];
    if (slot_words[i] != words)
        return false; /* not made by kiln_msg_new_words: no slot fits it */
    struct spares *s = tl_spares;
    if (!s && !(s = kiln_tls_table_new(&spare_table, &tl_spares)))
        return false;
    if (s->n[i] == SPARE_COUNT)
        return false;
    s->blk[i][s->n[i]++] = m;
    return true;
}
#endif

/* No minimum size: a message that carries only an immediate is its header
 * alone (80 bytes), which matters when millions are queued. */
size_t kiln_msg_arena_words(size_t n)
{
#if SPARE_MAX > 0
    if (n <= SPARE_WORDS)
        return slot_words[slot_of_words[n]];
#endif
    return n;
}

kiln_msg *kiln_msg_new_words(size_t n)
{
    kiln_msg *m = NULL;
#if SPARE_MAX > 0
    if (n <= SPARE_WORDS) {
        /* The arena gets the slack up to the class (inline_words records
         * it, so the block is freed at the size it was made with). */
        unsigned i = slot_of_words[n];
        n = slot_words[i];
        m = spare_take(i);
    }
#endif
    if (!m) {
        if (n > (SIZE_MAX - sizeof(kiln_msg)) / 8 || !(m = kiln_malloc_sized(sizeof(kiln_msg) + n * 8)))
            return NULL;
    }
    atomic_store_explicit(&m->next, NULL, memory_order_relaxed);
    m->kind = KILN_MK_USER;
    m->flags = 0;
    m->aux32 = 0;
    m->root = KILN_NIL;
    m->from = KILN_NONE;
    m->aux = KILN_NONE;
    m->cur = m->inline_data;
    m->end = m->inline_data + n;
    m->chunks = NULL;
    m->offheap = NULL;
    m->inline_words = n;
    return m;
}

kiln_msg *kiln_msg_new(size_t size_hint) { return kiln_msg_new_words((size_hint + 7) / 8); }

kiln_msg *kiln_signal_new(enum kiln_msg_kind kind, size_t words)
{
    kiln_msg *m = kiln_msg_new_words(words);
    if (m)
        m->kind = (uint16_t)kind;
    return m;
}

void kiln_msg_free(kiln_msg *m)
{
    if (!m)
        return;
    if (m->offheap)
        kiln_offheap_release(m);
    struct kiln_msg_chunk *c = m->chunks;
    while (c) {
        struct kiln_msg_chunk *next = c->next;
        kiln_free_sized(c, sizeof(*c) + c->words * 8);
        c = next;
    }
    size_t words = m->inline_words;
#if SPARE_MAX > 0
    if (words <= SPARE_WORDS && spare_keep(m, words))
        return;
#endif
    kiln_free_sized(m, sizeof(kiln_msg) + words * 8);
}

kiln_term *kiln_msg_alloc_words(kiln_msg *m, size_t n)
{
    return m ? kiln_arena_alloc(m, n) : NULL;
}

uint64_t *kiln_arena_grow(kiln_msg *m, size_t n)
{
    /* Grow geometrically so a message built word by word stays O(n). */
    size_t have = m->inline_words;
    for (struct kiln_msg_chunk *c = m->chunks; c; c = c->next)
        have += c->words;
    size_t want = n > have ? n : have;
    if (want > (SIZE_MAX - sizeof(struct kiln_msg_chunk)) / 8)
        return NULL;
    struct kiln_msg_chunk *c = kiln_malloc_sized(sizeof(*c) + want * 8);
    if (!c)
        return NULL;
    c->words = want;
    c->next = m->chunks;
    m->chunks = c;
    m->cur = c->data + n;
    m->end = c->data + want;
    return c->data;
}

kiln_term kiln_msg_term(const kiln_msg *m) { return m->root; }
void kiln_msg_set_term(kiln_msg *m, kiln_term t) { m->root = t; }

size_t kiln_msg_size(const kiln_msg *m)
{
    size_t words = m->inline_words;
    for (struct kiln_msg_chunk *c = m->chunks; c; c = c->next)
        words += c->words;
    return sizeof(kiln_msg) + words * 8;
}
