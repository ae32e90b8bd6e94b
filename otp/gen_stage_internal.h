/* Shared by gen_stage.c and the dispatchers (gen_stage_dispatch_*.c):
 * the subscription record, the event queue, the dispatcher interface. */
#ifndef KILN_GEN_STAGE_INTERNAL_H
#define KILN_GEN_STAGE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/gen_stage.h"

/* ---- event queue ----
 * Events copied into arenas the queue owns, in chunks, so a long buffer
 * costs one arena per chunk rather than per event, and a chunk is freed
 * as soon as its last event has left. The front of the queue is readable
 * in place (a contiguous run of one chunk) so events can be sent from it
 * without another copy. */
struct kiln_stage_qchunk;
typedef struct kiln_stage_queue {
    struct kiln_stage_qchunk *first, *last;
    size_t count;
} kiln_stage_queue;

/* Append a copy of ev. KILN_ENOMEM leaves the queue as it was. */
int kiln_stage_queue_push(kiln_stage_queue *q, kiln_term ev);
/* The first contiguous run of events (valid until the next push or drop);
 * returns its length, 0 when empty. */
size_t kiln_stage_queue_front(const kiln_stage_queue *q, const kiln_term **run);
/* Copy the first n (<= count) events' terms into out, across chunks;
 * they stay valid until the next drop. */
void kiln_stage_queue_peek(const kiln_stage_queue *q, size_t n, kiln_term *out);
/* Remove n (<= count) events from the front. */
void kiln_stage_queue_drop(kiln_stage_queue *q, size_t n);
void kiln_stage_queue_clear(kiln_stage_queue *q);

/* ---- subscriptions ----
 * One record per subscription at each end. The stage core owns it; a
 * producer's dispatcher keeps pointers to it from subscribe until cancel
 * (cancel is always called before the record is freed). */
typedef struct kiln_stage_sub {
    struct kiln_stage_sub *next;
    kiln_msg *m;       /* owns the terms below */
    kiln_term pid;     /* the stage at the other end */
    kiln_term ref;     /* the subscription tag (the consumer's monitor ref) */
    kiln_term from;    /* {Pid, Ref}, as callbacks get it */
    kiln_term mon;     /* producer end: our monitor of the consumer */
    kiln_term opts;    /* the subscribe options (keyword list) */
    /* consumer end */
    kiln_stage_cancel_mode cancel;
    bool manual;
    int64_t demand, min, max; /* outstanding demand, and the bounds */
    /* producer end: free for the dispatcher */
    int64_t dcount;
    size_t dindex;
} kiln_stage_sub;

/* {'$gen_consumer', {Self, Ref}, [events...]} to sub's consumer (events
 * copied). n must be > 0. From the producer process only. */
int kiln_stage_send_events(const kiln_stage_sub *sub, const kiln_term *events, size_t n);
/* Value of key in a keyword list, or KILN_NONE. */
kiln_term kiln_stage_kw_get(kiln_term list, kiln_term key);

/* ---- dispatchers ----
 * GenStage.Dispatcher as C: the stage core calls these and acts on the
 * demand they return (demand to take from the buffer or to ask
 * handle_demand for). Errors carry a reason term: an atom, or built in a
 * message the dispatcher allocates into *why_msg (the caller frees it). */
typedef struct kiln_stage_dispatcher_ops {
    const char *name;
    int (*init)(const kiln_stage_opts *opts, void **state);
    void (*destroy)(void *state);
    /* A new consumer (sub->opts holds its options). KILN_OK with *demand,
     * or an error with *why: the subscription is then cancelled with that
     * reason. */
    int (*subscribe)(void *state, kiln_stage_sub *sub, int64_t *demand, kiln_term *why, kiln_msg **why_msg);
    /* The consumer is gone; returns demand to forward upstream. */
    int64_t (*cancel)(void *state, kiln_stage_sub *sub);
    /* The consumer asked n (> 0); returns demand to forward upstream. */
    int64_t (*ask)(void *state, kiln_stage_sub *sub, int64_t n);
    /* Send what demand allows of events[0..n); *sent is how many from the
     * front were taken (the rest is buffered by the caller). An error
     * stops the producer with *why. */
    int (*dispatch)(void *state, const kiln_term *events, size_t n, size_t *sent, kiln_term *why,
                    kiln_msg **why_msg);
} kiln_stage_dispatcher_ops;

extern const kiln_stage_dispatcher_ops kiln_stage_demand_dispatcher;
extern const kiln_stage_dispatcher_ops kiln_stage_broadcast_dispatcher;
extern const kiln_stage_dispatcher_ops kiln_stage_partition_dispatcher;

#endif
