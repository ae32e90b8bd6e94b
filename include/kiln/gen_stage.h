/* gen_stage: Elixir's GenStage on Kiln. Stages exchange events (any
 * kiln_term) with back-pressure: a consumer asks a producer for N events
 * and is never sent more than it asked for.
 *
 * A stage is a producer, a consumer or a producer_consumer. It runs as a
 * gen_server (kiln/gen_server.h), so kiln_gs_call, kiln_gs_cast,
 * kiln_gen_reply, kiln_gs_stop_server and the kiln_sys_* calls work on a
 * stage unchanged; the stage's own callbacks are the table below.
 *
 * The messages between stages are GenStage's, so an Elixir stage can
 * subscribe to a Kiln producer and a Kiln consumer to an Elixir producer
 * (once distribution carries them); Elixir's nil is the atom nil:
 *
 *   consumer -> producer
 *     {'$gen_producer', {ConsumerPid, Ref}, {subscribe, Current, Opts}}
 *         Current is nil or {OldRef, Reason} (cancel that one first);
 *         Opts a keyword list ({max_demand, N}, {min_demand, N},
 *         {cancel, Mode}, {partition, P}, ...). Ref is the consumer's
 *         monitor reference of the producer.
 *     {'$gen_producer', {ConsumerPid, Ref}, {ask, N}}
 *     {'$gen_producer', {ConsumerPid, Ref}, {cancel, Reason}}
 *   producer -> consumer
 *     {'$gen_consumer', {ProducerPid, Ref}, [Event, ...]}
 *     {'$gen_consumer', {ProducerPid, Ref}, {cancel, Reason}}
 *   calls and casts to a stage (GenStage's internal requests)
 *     {'$subscribe', Current, To, Opts} (call: {ok, Ref} | {error, _}),
 *     '$demand' (call), {'$demand', forward | accumulate} (cast),
 *     '$estimate_buffered_count' (call)
 *
 * Terms in a kiln_stage_ret (events, reply, reason) are borrowed, as in
 * kiln_gs_ret: they must stay valid until the result has been acted on,
 * which happens before the callback's caller goes on. Events are copied
 * when they are sent or buffered. Terms built for a result can live in a
 * message handed over with kiln_stage_hold.
 *
 * Functions taking a kiln_rt * work from any thread (rt may be NULL in a
 * process), as kiln_gs_call does.
 */
#ifndef KILN_GEN_STAGE_H
#define KILN_GEN_STAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "kiln/gen_server.h"
#include "kiln/process.h"
#include "kiln/runtime.h"
#include "kiln/term.h"

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)

typedef enum kiln_stage_type {
    KILN_STAGE_PRODUCER = 1,
    KILN_STAGE_CONSUMER = 2,
    KILN_STAGE_PRODUCER_CONSUMER = 3
} kiln_stage_type;

/* What a consumer does when its producer exits or cancels the
 * subscription (GenStage's :cancel subscription option). */
typedef enum kiln_stage_cancel_mode {
    KILN_STAGE_PERMANENT = 0, /* exit with the same reason (default) */
    KILN_STAGE_TRANSIENT,     /* exit unless normal, shutdown or {shutdown, _} */
    KILN_STAGE_TEMPORARY      /* never exit: handle_cancel is told */
} kiln_stage_cancel_mode;

typedef enum kiln_stage_keep {
    KILN_STAGE_KEEP_LAST = 0, /* a full buffer drops its oldest events (default) */
    KILN_STAGE_KEEP_FIRST     /* a full buffer drops the new events */
} kiln_stage_keep;

typedef enum kiln_stage_dispatcher {
    KILN_STAGE_DISPATCH_DEMAND = 0, /* GenStage.DemandDispatcher (default) */
    KILN_STAGE_DISPATCH_BROADCAST,  /* GenStage.BroadcastDispatcher */
    KILN_STAGE_DISPATCH_PARTITION   /* GenStage.PartitionDispatcher */
} kiln_stage_dispatcher;

#define KILN_STAGE_INFINITY (-1)
/* min_demand's zero value means "default"; this asks for a real 0. */
#define KILN_STAGE_DEMAND_ZERO (-1)

/* PartitionDispatcher options. A consumer names its partition with the
 * subscription option {partition, P}: P is one of names[] when names is
 * set, else an integer 0..partitions-1. */
typedef struct kiln_stage_partition_opts {
    size_t partitions;      /* how many; required (> 0) */
    const kiln_term *names; /* NULL: 0..partitions-1; else partitions names (copied) */
    /* The partition (index into 0..partitions-1) of an event, or -1 to
     * discard it. NULL: kiln_term_hash(event) % partitions. An index out
     * of range stops the producer with {unknown_partition, Index}. */
    int64_t (*hash)(kiln_term event, void *arg);
    void *hash_arg;
} kiln_stage_partition_opts;

/* One subscription, as a consumer asks for it. Zero is the default for
 * every field but to. */
typedef struct kiln_stage_sub_opts {
    kiln_term to;                  /* the producer: pid, registered name, {Name, Node} */
    int64_t max_demand;            /* 0 = 1000 */
    int64_t min_demand;            /* 0 = max_demand / 2; KILN_STAGE_DEMAND_ZERO = 0 */
    kiln_stage_cancel_mode cancel;
    kiln_term partition;           /* {partition, P} when not 0/KILN_NONE */
    kiln_term extra;               /* a keyword list appended to the options, or 0/KILN_NIL */
} kiln_stage_sub_opts;

/* What init may set; it is filled with the defaults first (type from the
 * callback table). */
typedef struct kiln_stage_opts {
    kiln_stage_type type;
    /* producer, producer_consumer */
    int64_t buffer_size;          /* events kept without demand; 0 = default
                                   * (10000 for a producer, infinity for a
                                   * producer_consumer); KILN_STAGE_INFINITY */
    kiln_stage_keep buffer_keep;
    kiln_stage_dispatcher dispatcher;
    kiln_stage_partition_opts partition;
    bool demand_accumulate;       /* producer: start in demand mode accumulate */
    /* consumer, producer_consumer: subscribed to during init, in order
     * (the array is read before init's caller returns) */
    const kiln_stage_sub_opts *subscribe_to;
    size_t nsubscribe_to;
} kiln_stage_opts;

typedef enum kiln_stage_action {
    KILN_STAGE_NOREPLY = 0, /* also init's ok and handle_subscribe's automatic */
    KILN_STAGE_REPLY,
    KILN_STAGE_STOP,
    KILN_STAGE_IGNORE,      /* init only */
    KILN_STAGE_MANUAL       /* handle_subscribe on a consumer only */
} kiln_stage_action;

typedef struct kiln_stage_ret {
    kiln_stage_action action;
    kiln_term events;   /* a proper list of events to dispatch; KILN_NIL = none */
    kiln_term reply;    /* REPLY, or STOP with a reply; KILN_NONE = none */
    kiln_term reason;   /* STOP */
    kiln_msg *hold;     /* freed once the result has been acted on */
} kiln_stage_ret;

static inline kiln_stage_ret kiln_stage_noreply(void)
{
    kiln_stage_ret r = {KILN_STAGE_NOREPLY, KILN_NIL, KILN_NONE, KILN_NONE, NULL};
    return r;
}
/* init's {Type, State}. */
static inline kiln_stage_ret kiln_stage_ok(void) { return kiln_stage_noreply(); }
/* {noreply, Events, State}. */
static inline kiln_stage_ret kiln_stage_emit(kiln_term events)
{
    kiln_stage_ret r = kiln_stage_noreply();
    r.events = events;
    return r;
}
/* {reply, Reply, [], State}; the reply goes out after the events. */
static inline kiln_stage_ret kiln_stage_reply(kiln_term reply)
{
    kiln_stage_ret r = kiln_stage_noreply();
    r.action = KILN_STAGE_REPLY;
    r.reply = reply;
    return r;
}
/* {stop, Reason, State}. From init: the start fails with Reason. */
static inline kiln_stage_ret kiln_stage_stop(kiln_term reason)
{
    kiln_stage_ret r = kiln_stage_noreply();
    r.action = KILN_STAGE_STOP;
    r.reason = reason;
    return r;
}
/* {stop, Reason, Reply, State}: terminate runs, then the caller gets Reply. */
static inline kiln_stage_ret kiln_stage_stop_reply(kiln_term reason, kiln_term reply)
{
    kiln_stage_ret r = kiln_stage_stop(reason);
    r.reply = reply;
    return r;
}
static inline kiln_stage_ret kiln_stage_ignore(void)
{
    kiln_stage_ret r = kiln_stage_noreply();
    r.action = KILN_STAGE_IGNORE;
    return r;
}
/* handle_subscribe's {automatic, State} and {manual, State}. */
static inline kiln_stage_ret kiln_stage_automatic(void) { return kiln_stage_noreply(); }
static inline kiln_stage_ret kiln_stage_manual(void)
{
    kiln_stage_ret r = kiln_stage_noreply();
    r.action = KILN_STAGE_MANUAL;
    return r;
}
/* Adds events to a noreply or reply result. */
static inline kiln_stage_ret kiln_stage_with_events(kiln_stage_ret r, kiln_term events)
{
    r.events = events;
    return r;
}
/* Hands m over with the result: its terms may live in m. */
static inline kiln_stage_ret kiln_stage_hold(kiln_stage_ret r, kiln_msg *m)
{
    r.hold = m;
    return r;
}

typedef struct kiln_gen_stage {
    const char *name;
    kiln_stage_type type; /* the default for opts->type in init */
    /* Runs in the new process while the starter waits: set *state and
     * adjust *opts; return kiln_stage_ok(), kiln_stage_stop(reason) or
     * kiln_stage_ignore(). Required. */
    kiln_stage_ret (*init)(void *arg, void **state, kiln_stage_opts *opts);
    /* Producers: consumers asked for demand more events (beyond what the
     * buffer held). Emit up to (or more than: the excess is buffered)
     * that many; a producer that has fewer must remember the demand.
     * Required for producers. */
    kiln_stage_ret (*handle_demand)(void *state, int64_t demand);
    /* Consumers and producer_consumers: events (a non-empty list, at most
     * max_demand - min_demand long with automatic demand) from the
     * subscription from ({ProducerPid, Ref}). Both are borrowed. A
     * producer_consumer emits its output in the result. Required for them. */
    kiln_stage_ret (*handle_events)(void *state, kiln_term events, kiln_term from);
    /* A new subscription. peer is KILN_STAGE_PRODUCER on the consumer (we
     * subscribed to a producer), KILN_STAGE_CONSUMER on the producer.
     * Return kiln_stage_automatic(), kiln_stage_manual() (consumer only:
     * demand is then sent with kiln_stage_ask) or kiln_stage_stop(r).
     * from and opts are borrowed: keep a copy to ask later. NULL: automatic. */
    kiln_stage_ret (*handle_subscribe)(void *state, kiln_stage_type peer, kiln_term opts, kiln_term from);
    /* A subscription ended. reason is {cancel, R} (kiln_stage_cancel or a
     * producer's cancel) or {down, R} (the other side exited with R).
     * Runs before the consumer exits for a permanent or transient
     * subscription. NULL: noreply. */
    kiln_stage_ret (*handle_cancel)(void *state, kiln_term reason, kiln_term from);
    /* As gen_server's; they may emit events. handle_call NULL: the stage
     * stops with {bad_call, Request}; handle_cast / handle_info NULL: dropped. */
    kiln_stage_ret (*handle_call)(void *state, kiln_term request, kiln_term from);
    kiln_stage_ret (*handle_cast)(void *state, kiln_term msg);
    kiln_stage_ret (*handle_info)(void *state, kiln_msg *msg);
    /* A full buffer dropped discarded events. GenStage logs a warning
     * when this returns true; Kiln has no logger and only counts them
     * (kiln_stage_discarded_count). NULL: counted. */
    bool (*format_discarded)(void *state, int64_t discarded);
    /* As gen_server's terminate: called exactly once after a successful
     * init, whatever ends the stage (also when subscribe_to fails). */
    void (*terminate)(void *state, kiln_term reason);
    kiln_term (*format_state)(void *state, kiln_msg *m);
} kiln_gen_stage;

/* GenStage.start_link / start: the gen_server start handshake; results
 * and opts as kiln_gs_start_link / kiln_gs_start. An init result naming
 * an invalid type or options fails with {bad_opts, Text}. */
int kiln_stage_start_link(const kiln_gen_stage *stage, void *arg, const kiln_gs_opts *opts, kiln_term *pid,
                          kiln_msg **reason);
int kiln_stage_start(kiln_rt *rt, const kiln_gen_stage *stage, void *arg, const kiln_gs_opts *opts,
                     kiln_term *pid, kiln_msg **reason);

/* GenStage.sync_subscribe: the consumer subscribes to opts->to. KILN_OK
 * once the subscribe message is sent (not yet confirmed); *tag (may be
 * NULL) gets a message whose root is the subscription reference.
 * KILN_EBADARG: the stage is not a consumer ({error, not_a_consumer});
 * KILN_EINVAL: bad options. If the producer is not alive, a permanent or
 * transient consumer exits with noproc (the call still returns KILN_OK,
 * as in GenStage). */
int kiln_stage_subscribe(kiln_rt *rt, kiln_term consumer, const kiln_stage_sub_opts *opts, int64_t timeout_ms,
                         kiln_msg **tag);
/* GenStage.async_subscribe: the same as a cast. */
int kiln_stage_async_subscribe(kiln_rt *rt, kiln_term consumer, const kiln_stage_sub_opts *opts);
/* The options term a kiln_stage_sub_opts stands for (without to), built
 * in m: [{max_demand, N}, {min_demand, N}, {cancel, Mode} | ...]. */
kiln_term kiln_stage_sub_opts_term(kiln_msg *m, const kiln_stage_sub_opts *opts);

/* GenStage.ask: demand more events on a manual subscription. In a
 * process: the consumer itself (the producer sends to the asking pid).
 * from is {ProducerPid, Ref} as handle_subscribe got it. demand 0 is a
 * no-op. */
int kiln_stage_ask(kiln_term from, int64_t demand);
/* GenStage.cancel: ask the producer to cancel the subscription; the
 * consumer then reacts by its cancel mode (a permanent one exits with
 * reason). From any thread. */
int kiln_stage_cancel(kiln_rt *rt, kiln_term from, kiln_term reason);

/* GenStage.demand/2: set a producer's demand mode. Accumulate holds
 * demand (and events emitted meanwhile) until forward. Asynchronous. */
int kiln_stage_set_demand(kiln_rt *rt, kiln_term stage, bool accumulate);
/* GenStage.demand/1: *accumulate gets the mode. */
int kiln_stage_get_demand(kiln_rt *rt, kiln_term stage, int64_t timeout_ms, bool *accumulate);
/* GenStage.estimate_buffered_count: events in a producer's buffer. */
int kiln_stage_estimate_buffered_count(kiln_rt *rt, kiln_term stage, int64_t timeout_ms, int64_t *count);
/* Events a producer's full buffer has dropped so far (Kiln only). */
int kiln_stage_discarded_count(kiln_rt *rt, kiln_term stage, int64_t timeout_ms, int64_t *count);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif
