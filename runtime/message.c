/* Message arenas: bump allocation inside one jemalloc block per message. */
#include "message.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "tls.h"

/* Freed small messages kept per thread for the next allocations: up to
 * SPARE_COUNT blocks of each of SPARE_CLASSES sizes. Most messages die on
 * the thread that receives them, which then builds the next ones of the
 * same shapes (a reply, the next decoded term, the next of a stream of
 * sends whose receiver runs on the same worker); reusing the blocks skips
 * the allocator's work on both ends (small-term decode: ~8% with one
 * block; one-way sends: see docs/design.md). A call has two shapes, the
 * request and the reply, built and freed on one worker: with one size
 * kept, the other went to the allocator every time (gen_server calls,
 * whose reply is sized apart from the request). A block whose size has no
 * class takes an empty class, or else the least recently used one, whose
 * blocks go back to the allocator: classes were once kept until they ran
 * empty, and sizes seen only while a server started could hold all four
 * for good (a gen_server call then took both its blocks from jemalloc,
 * 11% of its instructions). Sizes are exact, not rounded to classes: a
 * queued message that is only a header stays 80 bytes. Sanitizer builds go straight to
 * malloc, so ASan still sees every use-after-free. A thread that exits
 * hands its blocks back (the key's destructor). */
#if defined(KILN_ASAN) || defined(KILN_TSAN)
#define SPARE_MAX 0
#else
#define SPARE_MAX 512
#endif
#define SPARE_COUNT 64
#define SPARE_CLASSES 4

struct spare_class {
    size_t size;
    unsigned n;
    uint32_t used; /* the thread's tick at its last keep (a class in use keeps blocks often) */
    void *blk[SPARE_COUNT];
};

struct spares {
    uint32_t tick;
    struct spare_class cls[SPARE_CLASSES];
};

static void spare_release(void *table)
{
    struct spares *s = table;
    for (unsigned c = 0; c < SPARE_CLASSES; c++)
        while (s->cls[c].n)
            kiln_free_sized(s->cls[c].blk[--s->cls[c].n], s->cls[c].size);
}

static struct kiln_tls_table spare_table = KILN_TLS_TABLE(sizeof(struct spares), spare_release);
static KILN_TLS void *tl_spares; /* NULL until the thread's first free of a small message */

static void *spare_take(size_t size)
{
    struct spares *s = tl_spares;
    if (!s)
        return NULL;
    for (unsigned c = 0; c < SPARE_CLASSES; c++)
        if (s->cls[c].n && s->cls[c].size == size)
            return s->cls[c].blk[--s->cls[c].n];
    return NULL;
}

/* False when the block must go back to the allocator. */
static bool spare_keep(void *m, size_t size)
{
    struct spares *s = tl_spares;
    if (!s && !(s = kiln_tls_table_new(&spare_table, &tl_spares)))
        return false;
    for (unsigned c = 0; c < SPARE_CLASSES; c++) {
        struct spare_class *k = &s->cls[c];
        if (k->n && k->size == size) {
            if (k->n == SPARE_COUNT)
                return false;
            k->used = ++s->tick;
            k->blk[k->n++] = m;
            return true;
        }
    }
    /* An empty class first, else the one kept into longest ago (the tick
     * wraps, so "ago" is measured from now). */
    struct spare_class *victim = &s->cls[0];
    for (unsigned c = 1; c < SPARE_CLASSES && victim->n; c++) {
        struct spare_class *k = &s->cls[c];
        if (!k->n || s->tick - k->used > s->tick - victim->used)
            victim = k;
    }
    while (victim->n)
        kiln_free_sized(victim->blk[--victim->n], victim->size);
    victim->size = size;
    victim->used = ++s->tick;
    victim->blk[victim->n++] = m;
    return true;
}

/* No minimum size: a message that carries only an immediate is its header
 * alone (80 bytes), which matters when millions are queued. */
kiln_msg *kiln_msg_new_words(size_t n)
{
    if (n > (SIZE_MAX - sizeof(kiln_msg)) / 8)
        return NULL;
    size_t need = sizeof(kiln_msg) + n * 8;
    /* The same size only: a message's arena is what was asked for (the
     * decoder's sizing is exact), and the block is freed at the size it
     * was allocated with. */
    kiln_msg *m = need <= SPARE_MAX ? spare_take(need) : NULL;
    if (!m)
        m = kiln_malloc_sized(need);
    if (!m)
        return NULL;
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
    size_t size = sizeof(kiln_msg) + m->inline_words * 8;
    if (size <= SPARE_MAX && spare_keep(m, size))
        return;
    kiln_free_sized(m, size);
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
