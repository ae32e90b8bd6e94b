/* A worker's local run queue: a bounded ring the owner pushes and pops and
 * thieves take half of with one CAS (Go's runq). ck_ring was the first
 * choice; it dequeues one entry per CAS and its inline-asm atomics are
 * invisible to ThreadSanitizer, so the ring is ours (docs/design.md). */
#ifndef KILN_RUNTIME_RUNQUEUE_H
#define KILN_RUNTIME_RUNQUEUE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cpu.h"

struct kiln_proc;

#define KILN_RUNQ_SIZE 256u
/* runnext picks in a row before the local queue gets a turn. */
#define KILN_RUNNEXT_STREAK 32u

struct kiln_runq {
    _Alignas(KILN_CACHELINE) _Atomic uint32_t head; /* consumers (owner and thieves) */
    _Alignas(KILN_CACHELINE) _Atomic uint32_t tail; /* owner only */
    _Atomic(struct kiln_proc *) buf[KILN_RUNQ_SIZE];
};

void kiln_runq_init(struct kiln_runq *q);
/* Owner: false when full (the caller moves half to the global queue). */
bool kiln_runq_push(struct kiln_runq *q, struct kiln_proc *p);
/* Owner: NULL when empty. */
struct kiln_proc *kiln_runq_pop(struct kiln_runq *q);
/* Owner, when full: take half the queue plus p out into batch (returns count). */
uint32_t kiln_runq_grab_half(struct kiln_runq *q, struct kiln_proc **batch, uint32_t max);
/* Thief: move up to half of victim's entries into q (which must be empty).
 * Returns one stolen process to run now (NULL if nothing was taken). */
struct kiln_proc *kiln_runq_steal(struct kiln_runq *q, struct kiln_runq *victim, uint32_t *stolen);
uint32_t kiln_runq_len(struct kiln_runq *q);

#endif
