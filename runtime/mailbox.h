/* A process mailbox: intrusive Vyukov MPSC queue of kiln_msg.
 *
 * Producers push with one atomic exchange on `head`. The low bits of head
 * carry the owner's state so that a push also tells the sender what to do:
 *   IDLE: the owner went to sleep on an empty queue; exactly one pusher sees
 *         the bit (the exchange replaces it) and must schedule the owner.
 *   DEAD: the owner has exited; nobody schedules it.
 * A sender may also take the wake-up of an idle owner whose queue is empty
 * with one compare-and-swap instead of pushing (kiln_mb_claim_idle): any
 * push in between replaces the head, and the claim fails. Until the
 * claimer schedules the owner, nobody else can, so the owner's side of the
 * queue is the claimer's meanwhile (signal.c hands the message over).
 */
#ifndef KILN_RUNTIME_MAILBOX_H
#define KILN_RUNTIME_MAILBOX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "message.h"

#define KILN_MB_IDLE ((uintptr_t)1)
#define KILN_MB_DEAD ((uintptr_t)2)
#define KILN_MB_BITS ((uintptr_t)3)

struct kiln_mb_stub {
    _Atomic(kiln_msg *) next; /* same offset as kiln_msg.next */
};

/* The two ends live apart: every sender exchanges head, the owner moves
 * tail on every pop. Kept in one cache line, a stream of messages from
 * another core passes that line back and forth twice per message; the
 * embedding struct puts them at least a line apart (struct kiln_proc). */
struct kiln_mb_prod {
    _Atomic(uintptr_t) head; /* last pushed node | state bits */
};

struct kiln_mb_cons {
    kiln_msg *tail; /* next node to pop */
    struct kiln_mb_stub stub;
};

/* Both ends in one place, where nothing crosses cores (tests). */
struct kiln_mailbox {
    struct kiln_mb_prod p;
    struct kiln_mb_cons c;
};

typedef enum kiln_mb_push_result {
    KILN_MB_WAS_ACTIVE = 0, /* owner running or queued: nothing to do */
    KILN_MB_WAS_IDLE = 1,   /* caller must schedule the owner */
    KILN_MB_WAS_DEAD = 2    /* owner exited; the message is reclaimed with it */
} kiln_mb_push_result;

void kiln_mb_init(struct kiln_mb_prod *pr, struct kiln_mb_cons *c);
kiln_mb_push_result kiln_mb_push(struct kiln_mb_prod *pr, kiln_msg *m);

typedef enum kiln_mb_pop_result {
    KILN_MB_GOT,
    KILN_MB_GOT_LAST, /* and the queue was empty right after: no push came before the pop */
    KILN_MB_EMPTY,
    KILN_MB_INFLIGHT
} kiln_mb_pop_result;
/* Owner only. INFLIGHT: a producer is between its exchange and its link;
 * the message will be visible in a few instructions. */
kiln_mb_pop_result kiln_mb_pop(struct kiln_mb_prod *pr, struct kiln_mb_cons *c, kiln_msg **out);
/* Owner only: pop, waiting out an in-flight push. NULL when empty. With
 * emptied, also says whether the queue was empty right after this pop, so
 * a drain can stop without one more pop to find out (a push after that
 * point is after the drain, as if it had come a moment later). */
kiln_msg *kiln_mb_pop_wait(struct kiln_mb_prod *pr, struct kiln_mb_cons *c, bool *emptied);
/* Owner only: nothing in the queue, not even a push in flight (what
 * kiln_mb_pop would answer EMPTY), in a few loads rather than a call. */
static inline bool kiln_mb_empty(struct kiln_mb_prod *pr, struct kiln_mb_cons *c)
{
    kiln_msg *stub = (kiln_msg *)(void *)&c->stub;
    return c->tail == stub && !atomic_load_explicit(&c->stub.next, memory_order_acquire) &&
           (atomic_load_explicit(&pr->head, memory_order_acquire) & ~KILN_MB_BITS) == (uintptr_t)stub;
}
/* Owner only: mark idle if the queue is empty. False if messages arrived
 * (the owner must keep running). */
bool kiln_mb_try_idle(struct kiln_mb_prod *pr, struct kiln_mb_cons *c);
/* Anyone: take the wake-up of an idle owner with an empty queue (true),
 * leaving the mailbox active; the caller must then schedule the owner. */
static inline bool kiln_mb_claim_idle(struct kiln_mb_prod *pr, struct kiln_mb_cons *c)
{
    uintptr_t expect = (uintptr_t)(void *)&c->stub | KILN_MB_IDLE;
    return atomic_load_explicit(&pr->head, memory_order_relaxed) == expect &&
           atomic_compare_exchange_strong_explicit(&pr->head, &expect, (uintptr_t)(void *)&c->stub,
                                                   memory_order_acq_rel, memory_order_relaxed);
}
/* Owner only, on exit: later pushes will not schedule the owner. */
void kiln_mb_mark_dead(struct kiln_mb_prod *pr);
/* Anyone: a glance (it may change at once) at whether the owner is idle,
 * e.g. ahead of kiln_mb_claim_idle: a busy owner's senders pay a load and
 * a test. */
static inline bool kiln_mb_is_idle(struct kiln_mb_prod *pr)
{
    return __builtin_expect((atomic_load_explicit(&pr->head, memory_order_relaxed) & KILN_MB_IDLE) != 0, 0);
}

#endif
