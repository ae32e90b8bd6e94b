/* The mailbox queue (see mailbox.h for the protocol). */
#include "mailbox.h"

#include <sched.h>

#include "cpu.h"

static inline kiln_msg *stub_node(struct kiln_mb_cons *c) { return (kiln_msg *)(void *)&c->stub; }

void kiln_mb_init(struct kiln_mb_prod *pr, struct kiln_mb_cons *c)
{
    atomic_store_explicit(&c->stub.next, NULL, memory_order_relaxed);
    c->tail = stub_node(c);
    /* A new process is scheduled by spawn itself, so it starts active. */
    atomic_store_explicit(&pr->head, (uintptr_t)stub_node(c), memory_order_release);
}

kiln_mb_push_result kiln_mb_push(struct kiln_mb_prod *pr, kiln_msg *m)
{
    atomic_store_explicit(&m->next, NULL, memory_order_relaxed);
    uintptr_t prev = atomic_exchange_explicit(&pr->head, (uintptr_t)m, memory_order_acq_rel);
    kiln_msg *p = (kiln_msg *)(prev & ~KILN_MB_BITS);
    atomic_store_explicit(&p->next, m, memory_order_release);
    if (prev & KILN_MB_DEAD)
        return KILN_MB_WAS_DEAD;
    return (prev & KILN_MB_IDLE) ? KILN_MB_WAS_IDLE : KILN_MB_WAS_ACTIVE;
}

kiln_mb_pop_result kiln_mb_pop(struct kiln_mb_prod *pr, struct kiln_mb_cons *c, kiln_msg **out)
{
    kiln_msg *tail = c->tail;
    kiln_msg *next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (tail == stub_node(c)) {
        if (!next) {
            uintptr_t head = atomic_load_explicit(&pr->head, memory_order_acquire) & ~KILN_MB_BITS;
            return head == (uintptr_t)tail ? KILN_MB_EMPTY : KILN_MB_INFLIGHT;
        }
        c->tail = next;
        tail = next;
        next = atomic_load_explicit(&tail->next, memory_order_acquire);
    }
    if (next) {
        c->tail = next;
        *out = tail;
        return KILN_MB_GOT;
    }
    uintptr_t head = atomic_load_explicit(&pr->head, memory_order_acquire) & ~KILN_MB_BITS;
    if (head != (uintptr_t)tail)
        return KILN_MB_INFLIGHT;
    /* tail is the only node: put the stub behind it so tail can be handed out. */
    kiln_msg *stub = stub_node(c);
    atomic_store_explicit(&stub->next, NULL, memory_order_relaxed);
    uintptr_t prev = atomic_exchange_explicit(&pr->head, (uintptr_t)stub, memory_order_acq_rel);
    kiln_msg *p = (kiln_msg *)(prev & ~KILN_MB_BITS);
    atomic_store_explicit(&p->next, stub, memory_order_release);
    if (p == tail) {
        /* Nobody pushed between our look at head and the exchange. */
        c->tail = stub;
        *out = tail;
        return KILN_MB_GOT_LAST;
    }
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (next) {
        c->tail = next;
        *out = tail;
        return KILN_MB_GOT;
    }
    return KILN_MB_INFLIGHT;
}

kiln_msg *kiln_mb_pop_wait(struct kiln_mb_prod *pr, struct kiln_mb_cons *c, bool *emptied)
{
    kiln_msg *m;
    for (unsigned spins = 0;; spins++) {
        switch (kiln_mb_pop(pr, c, &m)) {
        case KILN_MB_GOT:
            if (emptied)
                *emptied = false;
            return m;
        case KILN_MB_GOT_LAST:
            if (emptied)
                *emptied = true;
            return m;
        case KILN_MB_EMPTY:
            if (emptied)
                *emptied = true;
            return NULL;
        case KILN_MB_INFLIGHT:
            /* The producer was preempted mid-push: give it the CPU. */
            if (spins < 64)
                kiln_cpu_relax();
            else
                sched_yield();
            break;
        }
    }
}

bool kiln_mb_try_idle(struct kiln_mb_prod *pr, struct kiln_mb_cons *c)
{
    uintptr_t expect = (uintptr_t)stub_node(c);
    if (c->tail != stub_node(c) || atomic_load_explicit(&c->stub.next, memory_order_acquire))
        return false;
    return atomic_compare_exchange_strong_explicit(&pr->head, &expect, expect | KILN_MB_IDLE,
                                                   memory_order_acq_rel, memory_order_acquire);
}

void kiln_mb_mark_dead(struct kiln_mb_prod *pr)
{
    uintptr_t cur = atomic_load_explicit(&pr->head, memory_order_acquire);
    while (!atomic_compare_exchange_weak_explicit(&pr->head, &cur, (cur & ~KILN_MB_IDLE) | KILN_MB_DEAD,
                                                  memory_order_acq_rel, memory_order_acquire))
        ;
}
