/* Message arenas: bump allocation inside one jemalloc block per message. */
#include "message.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"


/* No minimum size: a message that carries only an immediate is its header
 * alone (80 bytes), which matters when millions are queued. */
kiln_msg *kiln_msg_new_words(size_t n)
{
    if (n > (SIZE_MAX - sizeof(kiln_msg)) / 8)
        return NULL;
    kiln_msg *m = kiln_malloc_sized(sizeof(kiln_msg) + n * 8);
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
    kiln_free_sized(m, sizeof(kiln_msg) + m->inline_words * 8);
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
