/* Per-thread tables behind one small thread-local pointer (see tls.h). */
#include "tls.h"

#include <stdbool.h>
#include <stdlib.h>

#include "alloc.h"

struct header {
    struct kiln_tls_table *t;
    void **slot;
    max_align_t data[];
};

static void release(void *arg)
{
    struct header *h = arg;
    if (h->t->fini)
        h->t->fini(h->data);
    /* Destructors run on the ending thread, so slot is still its own. */
    *h->slot = NULL;
    kiln_free(h);
}

static pthread_mutex_t key_lock = PTHREAD_MUTEX_INITIALIZER;

static bool make_key(struct kiln_tls_table *t)
{
    if (atomic_load_explicit(&t->ready, memory_order_acquire))
        return true;
    pthread_mutex_lock(&key_lock);
    if (!atomic_load_explicit(&t->ready, memory_order_relaxed) && pthread_key_create(&t->key, release) == 0)
        atomic_store_explicit(&t->ready, true, memory_order_release);
    pthread_mutex_unlock(&key_lock);
    return atomic_load_explicit(&t->ready, memory_order_relaxed);
}

void *kiln_tls_table_new(struct kiln_tls_table *t, void **slot)
{
    if (!make_key(t))
        return NULL;
    struct header *h = kiln_calloc(1, sizeof(*h) + t->size);
    if (!h)
        return NULL;
    h->t = t;
    h->slot = slot;
    /* Without the key's destructor the table would outlive its thread. */
    if (pthread_setspecific(t->key, h) != 0) {
        kiln_free(h);
        return NULL;
    }
    return *slot = h->data;
}
