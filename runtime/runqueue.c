/* Local run queue (see runqueue.h). Slots are relaxed atomics because a
 * thief may read a slot the owner is about to reuse; the CAS on head
 * decides whose copy counts. */
#include "runqueue.h"

#include <stddef.h>

void kiln_runq_init(struct kiln_runq *q)
{
    atomic_store_explicit(&q->head, 0, memory_order_relaxed);
    atomic_store_explicit(&q->tail, 0, memory_order_relaxed);
    for (uint32_t i = 0; i < KILN_RUNQ_SIZE; i++)
        atomic_store_explicit(&q->buf[i], NULL, memory_order_relaxed);
}

bool kiln_runq_push(struct kiln_runq *q, struct kiln_proc *p)
{
    uint32_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
    uint32_t h = atomic_load_explicit(&q->head, memory_order_acquire);
    if (t - h >= KILN_RUNQ_SIZE)
        return false;
    atomic_store_explicit(&q->buf[t % KILN_RUNQ_SIZE], p, memory_order_relaxed);
    atomic_store_explicit(&q->tail, t + 1, memory_order_release);
    return true;
}

struct kiln_proc *kiln_runq_pop(struct kiln_runq *q)
{
    uint32_t h = atomic_load_explicit(&q->head, memory_order_acquire);
    for (;;) {
        uint32_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
        if (t == h)
            return NULL;
        struct kiln_proc *p = atomic_load_explicit(&q->buf[h % KILN_RUNQ_SIZE], memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&q->head, &h, h + 1, memory_order_release,
                                                  memory_order_acquire))
            return p;
    }
}

uint32_t kiln_runq_grab_half(struct kiln_runq *q, struct kiln_proc **batch, uint32_t max)
{
    uint32_t h = atomic_load_explicit(&q->head, memory_order_acquire);
    for (;;) {
        uint32_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
        uint32_t n = (t - h) / 2;
        if (n > max)
            n = max;
        if (n == 0)
            return 0;
        for (uint32_t i = 0; i < n; i++)
            batch[i] = atomic_load_explicit(&q->buf[(h + i) % KILN_RUNQ_SIZE], memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&q->head, &h, h + n, memory_order_release,
                                                  memory_order_acquire))
            return n;
    }
}

struct kiln_proc *kiln_runq_steal(struct kiln_runq *q, struct kiln_runq *victim, uint32_t *stolen)
{
    *stolen = 0;
    uint32_t h = atomic_load_explicit(&victim->head, memory_order_acquire);
    for (;;) {
        uint32_t t = atomic_load_explicit(&victim->tail, memory_order_acquire);
        uint32_t n = t - h;
        n -= n / 2;
        if (n == 0)
            return NULL;
        if (n > KILN_RUNQ_SIZE / 2) {
            /* h and t were read at different moments: read again. */
            h = atomic_load_explicit(&victim->head, memory_order_acquire);
            continue;
        }
        uint32_t qt = atomic_load_explicit(&q->tail, memory_order_relaxed);
        for (uint32_t i = 0; i < n; i++) {
            struct kiln_proc *p = atomic_load_explicit(&victim->buf[(h + i) % KILN_RUNQ_SIZE], memory_order_relaxed);
            atomic_store_explicit(&q->buf[(qt + i) % KILN_RUNQ_SIZE], p, memory_order_relaxed);
        }
        if (atomic_compare_exchange_weak_explicit(&victim->head, &h, h + n, memory_order_release,
                                                  memory_order_acquire)) {
            *stolen = n;
            /* Run the last one now; publish the rest in our queue. */
            n--;
            struct kiln_proc *run = atomic_load_explicit(&q->buf[(qt + n) % KILN_RUNQ_SIZE], memory_order_relaxed);
            if (n)
                atomic_store_explicit(&q->tail, qt + n, memory_order_release);
            return run;
        }
    }
}

uint32_t kiln_runq_len(struct kiln_runq *q)
{
    uint32_t h = atomic_load_explicit(&q->head, memory_order_acquire);
    uint32_t t = atomic_load_explicit(&q->tail, memory_order_acquire);
    return t - h;
}
