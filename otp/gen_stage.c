/* gen_stage: Elixir's GenStage (lib/gen_stage.ex) as a gen_server whose
 * callbacks are the stage machinery below, the way GenStage itself is a
 * GenServer. The start handshake, calls, casts, sys and stop therefore
 * come from gen_server.c; this file adds the subscription protocol, the
 * demand bookkeeping, the producer's buffer and the producer_consumer's
 * queue. The dispatchers are in gen_stage_dispatch_*.c.
 *
 * Control flow follows GenStage's closely (the function names here are
 * its names), so its documented behaviour carries over: a consumer asks
 * max_demand at once and tops up to max_demand whenever what it is owed
 * falls to min_demand or below, handing its callback batches of at most
 * max_demand - min_demand events; a producer serves demand from its
 * buffer before calling handle_demand; a producer_consumer only takes
 * the events it has received into handle_events while its own consumers
 * have demand, which is what carries back-pressure up a pipeline.
 *
 * A stop decided anywhere in that flow (a callback's stop result, a
 * permanent subscription's cancel) sets s->stop; every loop checks it,
 * and the gen_server callback that started the work returns the stop. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "otp/gen_stage_internal.h"
#include "otp/otp_internal.h"

/* ---- atoms ---- */

static kiln_term a_gen_producer, a_gen_consumer, a_subscribe, a_ask, a_cancel, a_nil, a_permanent, a_transient,
    a_temporary, a_max_demand, a_min_demand, a_partition, a_dsubscribe, a_ddemand, a_dcount, a_ddiscarded,
    a_forward, a_accumulate, a_down, a_unknown_subscription, a_duplicated_subscription, a_already_subscribed,
    a_not_a_consumer, a_bad_opts, a_bad_return_value, a_bad_call;
static pthread_once_t atoms_once = PTHREAD_ONCE_INIT;

static void atoms_make(void)
{
    a_gen_producer = kiln_atom_c("$gen_producer");
    a_gen_consumer = kiln_atom_c("$gen_consumer");
    a_subscribe = kiln_atom_c("subscribe");
    a_ask = kiln_atom_c("ask");
    a_cancel = kiln_atom_c("cancel");
    a_nil = kiln_atom_c("nil"); /* Elixir's nil */
    a_permanent = kiln_atom_c("permanent");
    a_transient = kiln_atom_c("transient");
    a_temporary = kiln_atom_c("temporary");
    a_max_demand = kiln_atom_c("max_demand");
    a_min_demand = kiln_atom_c("min_demand");
    a_partition = kiln_atom_c("partition");
    a_dsubscribe = kiln_atom_c("$subscribe");
    a_ddemand = kiln_atom_c("$demand");
    a_dcount = kiln_atom_c("$estimate_buffered_count");
    a_ddiscarded = kiln_atom_c("$kiln_discarded_count");
    a_forward = kiln_atom_c("forward");
    a_accumulate = kiln_atom_c("accumulate");
    a_down = kiln_atom_c("down");
    a_unknown_subscription = kiln_atom_c("unknown_subscription");
    a_duplicated_subscription = kiln_atom_c("duplicated_subscription");
    a_already_subscribed = kiln_atom_c("already_subscribed");
    a_not_a_consumer = kiln_atom_c("not_a_consumer");
    a_bad_opts = kiln_atom_c("bad_opts");
    a_bad_return_value = kiln_atom_c("bad_return_value");
    a_bad_call = kiln_atom_c("bad_call");
}

/* Called by every entry point that may run before any stage started. */
static void atoms(void) { pthread_once(&atoms_once, atoms_make); }

/* ---- the stage ---- */

struct vec {
    kiln_term *v;
    size_t n, cap;
};

/* Demand mode accumulate: demand and emitted events wait here, in
 * order, until the mode becomes forward. */
struct acc_entry {
    struct acc_entry *next;
    int64_t demand; /* > 0: a demand; else events */
    kiln_msg *m;    /* events: root is the list */
};

/* A producer_consumer's input: events received while its consumers had
 * no demand, and cancellations that must not overtake them. */
enum pc_kind { PC_EVENTS, PC_CANCEL };
struct pc_entry {
    struct pc_entry *next;
    enum pc_kind kind;
    kiln_msg *m;        /* EVENTS: the '$gen_consumer' message; CANCEL: a copy of the terms */
    kiln_term ref;      /* EVENTS */
    kiln_term events;   /* EVENTS */
    kiln_term from;     /* {ProducerPid, Ref} */
    kiln_term kind_atom, reason; /* CANCEL */
    kiln_stage_cancel_mode mode; /* CANCEL */
};

struct stage {
    const kiln_gen_stage *cb;
    void *state; /* the user's */
    kiln_stage_type type;
    kiln_stage_sub *producers; /* subscriptions we consume from */
    kiln_stage_sub *consumers; /* subscriptions we produce for */
    /* Subscriptions between lists while a user callback runs: a callback
     * may block, and a process killed while blocked never returns to free
     * what only a local variable held. */
    kiln_stage_sub *leaving;
    kiln_msg *cb_batch;  /* the batch handle_events is looking at */
    kiln_msg *cb_cancel; /* the reason handle_cancel is looking at */
    /* producer, producer_consumer */
    const kiln_stage_dispatcher_ops *dops;
    void *dstate;
    kiln_stage_queue buffer;
    int64_t buffer_size; /* KILN_STAGE_INFINITY or > 0 */
    bool keep_first;
    int64_t discarded;
    bool accumulate;
    struct acc_entry *acc_head, *acc_tail;
    /* producer_consumer */
    struct pc_entry *pcq_head, *pcq_tail;
    int64_t pc_demand; /* what our consumers may still take */
    /* scratch: events of a result (vec), a batch being built (bvec) */
    struct vec vec, bvec;
    /* a stop decided during the current message */
    bool stop;
    kiln_term stop_reason;
    kiln_msg *stop_hold;
};

/* ---- small helpers ---- */

static int vec_gather(struct vec *v, kiln_term list)
{
    v->n = 0;
    for (kiln_term t = list; kiln_is_cons(t); t = kiln_tl(t)) {
        if (v->n == v->cap) {
            size_t cap = v->cap ? v->cap * 2 : 64;
            kiln_term *nv = realloc(v->v, cap * sizeof(*nv));
            if (!nv)
                return KILN_ENOMEM;
            v->v = nv;
            v->cap = cap;
        }
        v->v[v->n++] = kiln_hd(t);
    }
    return KILN_OK;
}

kiln_term kiln_stage_kw_get(kiln_term list, kiln_term key)
{
    for (kiln_term t = list; kiln_is_cons(t); t = kiln_tl(t)) {
        kiln_term h = kiln_hd(t);
        if (kiln_is_tuple(h) && kiln_tuple_arity(h) == 2 && kiln_tuple_get(h, 0) == key)
            return kiln_tuple_get(h, 1);
    }
    return KILN_NONE;
}

static bool is_tuple_n(kiln_term t, size_t n) { return kiln_is_tuple(t) && kiln_tuple_arity(t) == n; }

/* normal, shutdown and {shutdown, _}: the exits a transient subscription
 * survives. */
static bool transient_shutdown(kiln_term reason)
{
    return reason == KILN_ATOM_NORMAL || reason == KILN_ATOM_SHUTDOWN ||
           (is_tuple_n(reason, 2) && kiln_tuple_get(reason, 0) == KILN_ATOM_SHUTDOWN);
}

/* The reason is copied: it often lives in a message that is freed before
 * the gen_server acts on the stop. The first stop stands. */
static void set_stop(struct stage *s, kiln_term reason)
{
    if (s->stop)
        return;
    kiln_msg *m = kiln_msg_new(64);
    kiln_term r = m ? kiln_term_copy(m, reason) : KILN_NONE;
    if (kiln_is_none(r))
        r = KILN_ATOM_KILLED; /* out of memory: an immediate needs no arena */
    s->stop = true;
    s->stop_reason = r;
    s->stop_hold = m;
}

static void stop_tagged(struct stage *s, kiln_term tag, kiln_term what)
{
    kiln_msg *m = kiln_msg_new(64);
    kiln_term r = m ? kiln_tuple(m, 2, tag, kiln_term_copy(m, what)) : KILN_NONE;
    set_stop(s, kiln_is_none(r) ? tag : r);
    kiln_msg_free(m);
}

static kiln_stage_sub *sub_new(void)
{
    kiln_stage_sub *sub = calloc(1, sizeof(*sub));
    if (!sub)
        return NULL;
    sub->m = kiln_msg_new(256);
    if (!sub->m) {
        free(sub);
        return NULL;
    }
    sub->pid = sub->ref = sub->from = sub->mon = KILN_NONE;
    sub->opts = KILN_NIL;
    return sub;
}

static void sub_free(kiln_stage_sub *sub)
{
    if (sub) {
        kiln_msg_free(sub->m);
        free(sub);
    }
}

static void free_subs(kiln_stage_sub *list)
{
    for (kiln_stage_sub *next; list; list = next) {
        next = list->next;
        sub_free(list);
    }
}

static kiln_stage_sub *find_ref(kiln_stage_sub *list, kiln_term ref)
{
    for (; list; list = list->next)
        if (kiln_term_eq(list->ref, ref))
            return list;
    return NULL;
}

static kiln_stage_sub *find_mon(kiln_stage_sub *list, kiln_term mon)
{
    for (; list; list = list->next)
        if (kiln_term_eq(list->mon, mon))
            return list;
    return NULL;
}

static void unlink_sub(kiln_stage_sub **list, kiln_stage_sub *sub)
{
    for (kiln_stage_sub **pp = list; *pp; pp = &(*pp)->next) {
        if (*pp == sub) {
            *pp = sub->next;
            sub->next = NULL;
            return;
        }
    }
}

static void park_sub(struct stage *s, kiln_stage_sub *sub)
{
    sub->next = s->leaving;
    s->leaving = sub;
}

static void drop_sub(struct stage *s, kiln_stage_sub *sub)
{
    unlink_sub(&s->leaving, sub);
    sub_free(sub);
}

/* {Tag, {Self, Ref}, {Atom, Value}} to pid, in a process. Value is copied. */
static int send_proto(kiln_term to, kiln_term tag, kiln_term ref, kiln_term atom, kiln_term value)
{
    kiln_msg *m = kiln_msg_new(128);
    if (!m)
        return KILN_ENOMEM;
    kiln_term t = kiln_tuple(m, 3, tag, kiln_tuple(m, 2, kiln_self(), kiln_term_copy(m, ref)),
                             kiln_tuple(m, 2, atom, kiln_term_copy(m, value)));
    if (kiln_is_none(t)) {
        kiln_msg_free(m);
        return KILN_ENOMEM;
    }
    kiln_msg_set_term(m, t);
    return kiln_send(to, m);
}

static void send_ask(const kiln_stage_sub *sub, int64_t n)
{
    if (n > 0) {
        kiln_msg *tmp = kiln_msg_new(32);
        if (!tmp)
            return;
        send_proto(sub->pid, a_gen_producer, sub->ref, a_ask, kiln_int(tmp, n));
        kiln_msg_free(tmp);
    }
}

int kiln_stage_send_events(const kiln_stage_sub *sub, const kiln_term *events, size_t n)
{
    /* Out of memory loses the batch; the consumer's demand for it stays
     * outstanding, as if the events were still on their way. */
    kiln_msg *m = kiln_msg_new(96 + n * 24);
    if (!m)
        return KILN_ENOMEM;
    kiln_term list = KILN_NIL;
    for (size_t i = n; i-- > 0;)
        list = kiln_cons(m, kiln_term_copy(m, events[i]), list);
    kiln_term t = kiln_tuple(m, 3, a_gen_consumer, kiln_tuple(m, 2, kiln_self(), kiln_term_copy(m, sub->ref)), list);
    if (kiln_is_none(t)) {
        kiln_msg_free(m);
        return KILN_ENOMEM;
    }
    kiln_msg_set_term(m, t);
    return kiln_send(sub->pid, m);
}

/* ---- producer: dispatching and the buffer ---- */

static void dispatch_events(struct stage *s, const kiln_term *ev, size_t n);

/* Offer events to the dispatcher; returns how many it took from the
 * front. A producer_consumer's demand goes down by as many. */
static size_t dispatch_core(struct stage *s, const kiln_term *ev, size_t n)
{
    size_t sent = 0;
    kiln_term why = KILN_NONE;
    kiln_msg *wm = NULL;
    if (s->dops->dispatch(s->dstate, ev, n, &sent, &why, &wm) != KILN_OK) {
        set_stop(s, kiln_is_none(why) ? kiln_atom_c("dispatch_failed") : why);
        kiln_msg_free(wm);
        return 0;
    }
    kiln_msg_free(wm);
    if (s->type == KILN_STAGE_PRODUCER_CONSUMER) {
        s->pc_demand -= (int64_t)sent;
        if (s->pc_demand < 0)
            s->pc_demand = 0;
    }
    return sent;
}

static void count_discarded(struct stage *s, int64_t excess)
{
    if (excess <= 0)
        return;
    s->discarded += excess;
    /* GenStage logs unless format_discarded returns false; Kiln has no
     * logger, so the callback is only told. */
    if (s->cb->format_discarded)
        (void)s->cb->format_discarded(s->state, excess);
}

/* Events the dispatcher could not take, into the buffer, dropping by
 * buffer_keep when it is full. */
static void buffer_events(struct stage *s, const kiln_term *ev, size_t n)
{
    if (n == 0)
        return;
    int64_t excess = 0;
    size_t from = 0;
    if (s->buffer_size != KILN_STAGE_INFINITY) {
        size_t max = (size_t)s->buffer_size;
        if (s->keep_first) {
            size_t room = max > s->buffer.count ? max - s->buffer.count : 0;
            if (n > room) {
                excess = (int64_t)(n - room);
                n = room;
            }
        } else {
            /* Keep the newest max of (buffer + ev): drop from the buffer's
             * front, and the oldest of ev when ev alone is too many. */
            if (n > max) {
                from = n - max;
                excess += (int64_t)from;
            }
            size_t keep_new = n - from;
            size_t total = s->buffer.count + keep_new;
            if (total > max) {
                size_t drop = total - max;
                kiln_stage_queue_drop(&s->buffer, drop);
                excess += (int64_t)drop;
            }
        }
    }
    for (size_t i = from; i < n; i++)
        if (kiln_stage_queue_push(&s->buffer, ev[i]) != KILN_OK)
            excess++;
    count_discarded(s, excess);
}

/* Serve up to counter from the buffer; returns the demand left. */
static int64_t take_from_buffer(struct stage *s, int64_t counter)
{
    while (counter > 0 && s->buffer.count > 0 && !s->stop) {
        const kiln_term *run;
        size_t len = kiln_stage_queue_front(&s->buffer, &run);
        size_t k = (uint64_t)counter < len ? (size_t)counter : len;
        /* The run is read in place: the dispatcher copies what it sends
         * before the drop frees anything. */
        size_t sent = dispatch_core(s, run, k);
        kiln_stage_queue_drop(&s->buffer, sent);
        counter -= (int64_t)k;
        if (sent < k)
            break; /* the dispatcher had less demand than it reported */
    }
    return counter;
}

static void acc_append(struct stage *s, struct acc_entry *e)
{
    if (s->acc_tail)
        s->acc_tail->next = e;
    else
        s->acc_head = e;
    s->acc_tail = e;
}

static void acc_push_demand(struct stage *s, int64_t demand)
{
    struct acc_entry *e = calloc(1, sizeof(*e));
    if (!e)
        return;
    e->demand = demand;
    acc_append(s, e);
}

static void acc_push_events(struct stage *s, const kiln_term *ev, size_t n)
{
    struct acc_entry *e = calloc(1, sizeof(*e));
    kiln_msg *m = kiln_msg_new(64 + n * 24);
    kiln_term list = KILN_NIL;
    for (size_t i = n; m && i-- > 0;)
        list = kiln_cons(m, kiln_term_copy(m, ev[i]), list);
    if (!e || !m || kiln_is_none(list)) {
        free(e);
        kiln_msg_free(m);
        count_discarded(s, (int64_t)n);
        return;
    }
    kiln_msg_set_term(m, list);
    e->m = m;
    acc_append(s, e);
}

/* Events from a callback: to the dispatcher, the rest to the buffer. */
static void dispatch_events(struct stage *s, const kiln_term *ev, size_t n)
{
    if (n == 0 || s->stop)
        return;
    if (s->type == KILN_STAGE_CONSUMER)
        return; /* GenStage logs and drops them: consumers cannot emit */
    if (s->type == KILN_STAGE_PRODUCER && s->accumulate) {
        acc_push_events(s, ev, n);
        return;
    }
    size_t sent = dispatch_core(s, ev, n);
    if (!s->stop)
        buffer_events(s, ev + sent, n - sent);
}

static void dispatch_list(struct stage *s, kiln_term events)
{
    if (!kiln_is_cons(events) || s->stop)
        return;
    if (vec_gather(&s->vec, events) != KILN_OK) {
        set_stop(s, kiln_atom_c("enomem"));
        return;
    }
    dispatch_events(s, s->vec.v, s->vec.n);
}

/* GenStage's noreply_callback: act on a result that cannot reply. */
static void apply_noreply(struct stage *s, kiln_stage_ret r)
{
    switch (r.action) {
    case KILN_STAGE_NOREPLY:
        dispatch_list(s, r.events);
        break;
    case KILN_STAGE_STOP:
        set_stop(s, r.reason);
        break;
    default:
        stop_tagged(s, a_bad_return_value, kiln_small((int64_t)r.action));
        break;
    }
    kiln_msg_free(r.hold);
}

static void take_from_buffer_or_handle_demand(struct stage *s, int64_t counter)
{
    counter = take_from_buffer(s, counter);
    if (counter <= 0 || s->stop)
        return;
    if (s->accumulate) {
        acc_push_demand(s, counter);
        return;
    }
    apply_noreply(s, s->cb->handle_demand(s->state, counter));
}

static void take_pc_events(struct stage *s);

/* What the dispatcher says may be produced now. */
static void handle_dispatcher_result(struct stage *s, int64_t counter)
{
    if (s->stop)
        return;
    if (s->type == KILN_STAGE_PRODUCER_CONSUMER) {
        s->pc_demand += counter;
        take_from_buffer(s, s->pc_demand);
        take_pc_events(s);
    } else {
        take_from_buffer_or_handle_demand(s, counter);
    }
}

/* GenStage.demand(stage, :forward): replay what accumulated, in order. */
static void demand_forward(struct stage *s)
{
    s->accumulate = false;
    while (s->acc_head && !s->stop) {
        struct acc_entry *e = s->acc_head;
        s->acc_head = e->next;
        if (!s->acc_head)
            s->acc_tail = NULL;
        if (e->demand > 0) {
            take_from_buffer_or_handle_demand(s, e->demand);
        } else if (vec_gather(&s->vec, kiln_msg_term(e->m)) == KILN_OK) {
            dispatch_events(s, s->vec.v, s->vec.n);
        }
        kiln_msg_free(e->m);
        free(e);
    }
}

/* ---- producer: subscriptions ---- */

static void call_handle_cancel(struct stage *s, kiln_term kind, kiln_term reason, kiln_term from)
{
    if (!s->cb->handle_cancel)
        return;
    kiln_msg *m = kiln_msg_new(64);
    kiln_term kr = m ? kiln_tuple(m, 2, kind, kiln_term_copy(m, reason)) : KILN_NONE;
    if (kiln_is_none(kr)) {
        kiln_msg_free(m);
        set_stop(s, kiln_atom_c("enomem"));
        return;
    }
    s->cb_cancel = m;
    apply_noreply(s, s->cb->handle_cancel(s->state, kr, from));
    s->cb_cancel = NULL;
    kiln_msg_free(m);
}

/* GenStage's producer_cancel. The confirmation goes to the consumer we
 * have on record. Unlike GenStage, the dispatcher forgets the consumer
 * before handle_cancel runs, so events that callback emits cannot go to
 * the consumer that is leaving; the demand the dispatcher frees is acted
 * on afterwards, as in GenStage. */
static void producer_cancel(struct stage *s, kiln_stage_sub *sub, kiln_term kind, kiln_term reason)
{
    unlink_sub(&s->consumers, sub);
    park_sub(s, sub);
    if (!kiln_is_none(sub->mon))
        kiln_demonitor(sub->mon, true);
    send_proto(sub->pid, a_gen_consumer, sub->ref, a_cancel, reason);
    int64_t demand = s->dops->cancel(s->dstate, sub);
    call_handle_cancel(s, kind, reason, sub->from);
    drop_sub(s, sub);
    handle_dispatcher_result(s, demand);
}

static void producer_subscribe(struct stage *s, kiln_term cpid, kiln_term ref, kiln_term current, kiln_term opts)
{
    if (find_ref(s->consumers, ref)) {
        send_proto(cpid, a_gen_consumer, ref, a_cancel, a_duplicated_subscription);
        return;
    }
    if (is_tuple_n(current, 2)) {
        /* A resubscription: the old one goes first. */
        kiln_stage_sub *old = find_ref(s->consumers, kiln_tuple_get(current, 0));
        if (old)
            producer_cancel(s, old, a_cancel, kiln_tuple_get(current, 1));
        if (s->stop)
            return;
    }
    kiln_stage_sub *sub = sub_new();
    if (!sub) {
        send_proto(cpid, a_gen_consumer, ref, a_cancel, kiln_atom_c("enomem"));
        return;
    }
    sub->pid = kiln_term_copy(sub->m, cpid);
    sub->ref = kiln_term_copy(sub->m, ref);
    sub->opts = kiln_term_copy(sub->m, opts);
    sub->from = kiln_tuple(sub->m, 2, sub->pid, sub->ref);
    if (kiln_is_none(sub->from) || kiln_is_none(sub->opts) ||
        kiln_monitor(cpid, sub->m, &sub->mon) != KILN_OK) {
        send_proto(cpid, a_gen_consumer, ref, a_cancel, kiln_atom_c("enomem"));
        sub_free(sub);
        return;
    }
    sub->next = s->consumers;
    s->consumers = sub;
    if (s->cb->handle_subscribe) {
        kiln_stage_ret r = s->cb->handle_subscribe(s->state, KILN_STAGE_CONSUMER, sub->opts, sub->from);
        /* A producer's subscriptions are always automatic. */
        if (r.action == KILN_STAGE_STOP)
            set_stop(s, r.reason);
        else if (r.action != KILN_STAGE_NOREPLY)
            stop_tagged(s, a_bad_return_value, kiln_small((int64_t)r.action));
        kiln_msg_free(r.hold);
        if (s->stop)
            return;
    }
    /* The dispatcher after the callback: it may generate demand, and the
     * callback must know of the consumer first. */
    int64_t demand = 0;
    kiln_term why = KILN_NONE;
    kiln_msg *wm = NULL;
    if (s->dops->subscribe(s->dstate, sub, &demand, &why, &wm) != KILN_OK) {
        producer_cancel(s, sub, a_cancel, kiln_is_none(why) ? kiln_atom_c("rejected") : why);
        kiln_msg_free(wm);
        return;
    }
    handle_dispatcher_result(s, demand);
}

/* ---- consumer ---- */

/* One step of GenStage's split_batches: the next batch's size and what to
 * ask after it, updating old (what the producer still owes, for spotting
 * excess) and cur (the demand the consumer counts on). */
static void batch_step(const kiln_stage_sub *sub, size_t remaining, int64_t *old, int64_t *cur, size_t *size,
                       int64_t *ask)
{
    int64_t limit = sub->max - sub->min;
    size_t bs = (uint64_t)limit < remaining ? (size_t)limit : remaining;
    int64_t counted = (int64_t)bs;
    if (*old - counted < 0) {
        /* More than was asked: GenStage logs an error and counts only
         * what was owed. */
        counted = *old;
        *old = 0;
    } else {
        *old -= counted;
    }
    int64_t diff = *cur - counted;
    if (diff <= sub->min) {
        *cur = sub->max;
        *ask = sub->max - diff;
    } else {
        *cur = diff;
        *ask = 0;
    }
    *size = bs;
}

/* GenStage's consumer_receive + consumer_dispatch: run handle_events on
 * the events in batches and ask for more after each. sub is NULL for
 * events that were queued before their subscription was cancelled. */
static void consumer_dispatch(struct stage *s, kiln_stage_sub *sub, kiln_term events, kiln_term from)
{
    if (!kiln_is_cons(events))
        return;
    if (!sub || sub->manual) {
        apply_noreply(s, s->cb->handle_events(s->state, events, from));
        return;
    }
    size_t len = 0;
    for (kiln_term t = events; kiln_is_cons(t); t = kiln_tl(t))
        len++;
    /* The new demand is recorded before any callback runs, as GenStage
     * does; the batches are then replayed with the same arithmetic. */
    int64_t old = sub->demand, cur = sub->demand, ask = 0;
    size_t bs = 0;
    {
        int64_t o = old, c = cur, a;
        size_t b;
        for (size_t left = len; left > 0; left -= b)
            batch_step(sub, left, &o, &c, &b, &a);
        sub->demand = c;
    }
    kiln_term cursor = events;
    for (size_t left = len; left > 0 && !s->stop; left -= bs) {
        batch_step(sub, left, &old, &cur, &bs, &ask);
        kiln_term batch;
        kiln_msg *bm = NULL;
        if (bs == len) {
            batch = events; /* the common case: one batch, no copy */
            cursor = KILN_NIL;
        } else {
            s->bvec.n = 0;
            if (s->bvec.cap < bs) {
                kiln_term *nv = realloc(s->bvec.v, bs * sizeof(*nv));
                if (!nv) {
                    set_stop(s, kiln_atom_c("enomem"));
                    return;
                }
                s->bvec.v = nv;
                s->bvec.cap = bs;
            }
            for (size_t i = 0; i < bs; i++, cursor = kiln_tl(cursor))
                s->bvec.v[i] = kiln_hd(cursor);
            /* Only the cons cells are new; the events stay where they are. */
            bm = kiln_msg_new(bs * 16 + 16);
            batch = bm ? kiln_list_v(bm, bs, s->bvec.v, KILN_NIL) : KILN_NONE;
            if (kiln_is_none(batch)) {
                kiln_msg_free(bm);
                set_stop(s, kiln_atom_c("enomem"));
                return;
            }
        }
        s->cb_batch = bm;
        apply_noreply(s, s->cb->handle_events(s->state, batch, from));
        s->cb_batch = NULL;
        kiln_msg_free(bm);
        if (!s->stop)
            send_ask(sub, ask);
    }
}

/* GenStage's invoke_cancel: tell the callback, then exit by the mode. */
static void invoke_cancel(struct stage *s, kiln_stage_cancel_mode mode, kiln_term kind, kiln_term reason,
                          kiln_term from)
{
    call_handle_cancel(s, kind, reason, from);
    if (s->stop)
        return;
    bool exits = mode == KILN_STAGE_PERMANENT || (mode == KILN_STAGE_TRANSIENT && !transient_shutdown(reason));
    /* already_subscribed is a refused duplicate: the first subscription
     * is still there. */
    if (exits && reason != a_already_subscribed)
        set_stop(s, reason);
}

static void pc_append(struct stage *s, struct pc_entry *e)
{
    if (s->pcq_tail)
        s->pcq_tail->next = e;
    else
        s->pcq_head = e;
    s->pcq_tail = e;
}

static void consumer_cancel(struct stage *s, kiln_stage_sub *sub, kiln_term kind, kiln_term reason)
{
    unlink_sub(&s->producers, sub);
    park_sub(s, sub);
    kiln_demonitor(sub->ref, true);
    if (s->type == KILN_STAGE_PRODUCER_CONSUMER && s->pcq_head) {
        /* Events of this producer are still queued: they are handled
         * first, then the cancellation. */
        struct pc_entry *e = calloc(1, sizeof(*e));
        kiln_msg *m = kiln_msg_new(128);
        if (e && m) {
            e->kind = PC_CANCEL;
            e->m = m;
            e->mode = sub->cancel;
            e->kind_atom = kind;
            e->reason = kiln_term_copy(m, reason);
            e->from = kiln_term_copy(m, sub->from);
            if (!kiln_is_none(e->reason) && !kiln_is_none(e->from)) {
                pc_append(s, e);
                drop_sub(s, sub);
                return;
            }
        }
        free(e);
        kiln_msg_free(m);
        /* No memory to queue it: cancel now rather than lose it. */
    }
    invoke_cancel(s, sub->cancel, kind, reason, sub->from);
    drop_sub(s, sub);
}

static void take_pc_events(struct stage *s)
{
    while (s->pc_demand > 0 && s->pcq_head && !s->stop) {
        struct pc_entry *e = s->pcq_head;
        s->pcq_head = e->next;
        if (!s->pcq_head)
            s->pcq_tail = NULL;
        if (e->kind == PC_EVENTS)
            consumer_dispatch(s, find_ref(s->producers, e->ref), e->events, e->from);
        else
            invoke_cancel(s, e->mode, e->kind_atom, e->reason, e->from);
        kiln_msg_free(e->m);
        free(e);
    }
}

static kiln_msg *reply_of(kiln_term a, kiln_term b)
{
    kiln_msg *m = kiln_msg_new(128);
    if (!m)
        return NULL;
    kiln_term t = kiln_is_none(b) ? kiln_term_copy(m, a) : kiln_tuple(m, 2, a, kiln_term_copy(m, b));
    if (kiln_is_none(t)) {
        kiln_msg_free(m);
        return NULL;
    }
    kiln_msg_set_term(m, t);
    return m;
}

static kiln_msg *bad_opts_reply(const char *text)
{
    kiln_msg *m = kiln_msg_new(128);
    if (!m)
        return NULL;
    kiln_term t = kiln_tuple(m, 2, KILN_ATOM_ERROR, kiln_tuple(m, 2, a_bad_opts, kiln_binary(m, text, strlen(text))));
    if (kiln_is_none(t)) {
        kiln_msg_free(m);
        return NULL;
    }
    kiln_msg_set_term(m, t);
    return m;
}

/* {ok, Ref} with a fresh reference: GenStage's answer when the producer
 * is not there. */
static kiln_msg *ok_fresh_ref(void)
{
    kiln_msg *m = kiln_msg_new(64);
    if (!m)
        return NULL;
    kiln_msg_set_term(m, kiln_tuple(m, 2, KILN_ATOM_OK, kiln_make_ref(m)));
    return m;
}

/* GenStage's consumer_subscribe. *reply gets the answer for a
 * '$subscribe' call ({ok, Ref} or {error, _}); NULL when the stage
 * stopped without one. */
static void consumer_subscribe(struct stage *s, kiln_term current, kiln_term to, kiln_term opts, kiln_msg **reply)
{
    *reply = NULL;
    if (s->type == KILN_STAGE_PRODUCER) {
        *reply = reply_of(KILN_ATOM_ERROR, a_not_a_consumer);
        return;
    }
    int64_t max = 1000, min, v;
    kiln_term t = kiln_stage_kw_get(opts, a_max_demand);
    if (!kiln_is_none(t)) {
        if (kiln_get_int64(t, &v) != KILN_OK || v < 1) {
            *reply = bad_opts_reply("expected :max_demand to be an integer equal to or greater than 1");
            return;
        }
        max = v;
    }
    min = max / 2;
    t = kiln_stage_kw_get(opts, a_min_demand);
    if (!kiln_is_none(t)) {
        if (kiln_get_int64(t, &v) != KILN_OK || v < 0 || v > max - 1) {
            *reply = bad_opts_reply("expected :min_demand to be an integer from 0 to max_demand - 1");
            return;
        }
        min = v;
    }
    kiln_stage_cancel_mode mode = KILN_STAGE_PERMANENT;
    t = kiln_stage_kw_get(opts, a_cancel);
    if (!kiln_is_none(t)) {
        if (t == a_permanent)
            mode = KILN_STAGE_PERMANENT;
        else if (t == a_transient)
            mode = KILN_STAGE_TRANSIENT;
        else if (t == a_temporary)
            mode = KILN_STAGE_TEMPORARY;
        else {
            *reply = bad_opts_reply("expected :cancel to be one of [:temporary, :transient, :permanent]");
            return;
        }
    }
    /* GenServer.whereis: local names resolve now; pids and remote names
     * go as they are (the monitor tells if they are gone). */
    kiln_rt *rt = kiln_current_rt();
    kiln_term pid = to;
    if (kiln_is_atom(to))
        pid = kiln_whereis(rt, to);
    else if (is_tuple_n(to, 2) && kiln_tuple_get(to, 1) == kiln_rt_node(rt))
        pid = kiln_whereis(rt, kiln_tuple_get(to, 0));
    else if (!kiln_is_pid(to) && !is_tuple_n(to, 2))
        pid = KILN_NONE;
    kiln_stage_sub *sub = kiln_is_none(pid) ? NULL : sub_new();
    if (sub && kiln_monitor(pid, sub->m, &sub->ref) != KILN_OK) {
        sub_free(sub);
        sub = NULL;
    }
    if (!sub) {
        if (mode != KILN_STAGE_TEMPORARY)
            set_stop(s, KILN_ATOM_NOPROC);
        *reply = ok_fresh_ref();
        return;
    }
    park_sub(s, sub);
    sub->pid = kiln_term_copy(sub->m, pid);
    sub->opts = kiln_term_copy(sub->m, opts);
    sub->from = kiln_tuple(sub->m, 2, sub->pid, sub->ref);
    sub->cancel = mode;
    sub->min = min;
    sub->max = max;
    kiln_msg *m = kiln_msg_new(256);
    kiln_term msg = m ? kiln_tuple(m, 3, a_gen_producer, kiln_tuple(m, 2, kiln_self(), kiln_term_copy(m, sub->ref)),
                                   kiln_tuple(m, 3, a_subscribe,
                                              is_tuple_n(current, 2) ? kiln_term_copy(m, current) : a_nil,
                                              kiln_term_copy(m, opts)))
                      : KILN_NONE;
    if (kiln_is_none(msg) || kiln_is_none(sub->from) || kiln_is_none(sub->opts)) {
        kiln_msg_free(m);
        kiln_demonitor(sub->ref, true);
        drop_sub(s, sub);
        set_stop(s, kiln_atom_c("enomem"));
        return;
    }
    kiln_msg_set_term(m, msg);
    kiln_send(pid, m);

    kiln_stage_ret r = s->cb->handle_subscribe
                           ? s->cb->handle_subscribe(s->state, KILN_STAGE_PRODUCER, sub->opts, sub->from)
                           : kiln_stage_automatic();
    if (r.action == KILN_STAGE_NOREPLY || r.action == KILN_STAGE_MANUAL) {
        sub->manual = r.action == KILN_STAGE_MANUAL;
        if (!sub->manual) {
            send_ask(sub, max);
            sub->demand = max;
        }
        unlink_sub(&s->leaving, sub);
        sub->next = s->producers;
        s->producers = sub;
        *reply = reply_of(KILN_ATOM_OK, sub->ref);
    } else {
        if (r.action == KILN_STAGE_STOP)
            set_stop(s, r.reason);
        else
            stop_tagged(s, a_bad_return_value, kiln_small((int64_t)r.action));
        kiln_demonitor(sub->ref, true);
        drop_sub(s, sub);
    }
    kiln_msg_free(r.hold);
}

/* ---- messages ---- */

/* {'$gen_producer', {ConsumerPid, Ref}, Body}: we are the producer. */
static bool on_gen_producer(struct stage *s, kiln_term from, kiln_term body)
{
    if (!is_tuple_n(from, 2) || !kiln_is_tuple(body))
        return false;
    if (s->type == KILN_STAGE_CONSUMER)
        return true; /* GenStage logs and ignores it */
    kiln_term cpid = kiln_tuple_get(from, 0), ref = kiln_tuple_get(from, 1);
    size_t n = kiln_tuple_arity(body);
    kiln_term tag = kiln_tuple_get(body, 0);
    if (n == 3 && tag == a_subscribe) {
        producer_subscribe(s, cpid, ref, kiln_tuple_get(body, 1), kiln_tuple_get(body, 2));
        return true;
    }
    int64_t counter;
    if (n == 2 && tag == a_ask && kiln_get_int64(kiln_tuple_get(body, 1), &counter) == KILN_OK) {
        kiln_stage_sub *sub = find_ref(s->consumers, ref);
        if (!sub) {
            send_proto(cpid, a_gen_consumer, ref, a_cancel, a_unknown_subscription);
        } else if (counter > 0) {
            handle_dispatcher_result(s, s->dops->ask(s->dstate, sub, counter));
        }
        return true;
    }
    if (n == 2 && tag == a_cancel) {
        kiln_stage_sub *sub = find_ref(s->consumers, ref);
        if (sub)
            producer_cancel(s, sub, a_cancel, kiln_tuple_get(body, 1));
        return true;
    }
    return false;
}

/* {'$gen_consumer', {ProducerPid, Ref}, Body}: we are the consumer. msg
 * is the borrowed gen_server message (a producer_consumer keeps it). */
static bool on_gen_consumer(struct stage *s, kiln_term from, kiln_term body, kiln_msg *msg)
{
    if (!is_tuple_n(from, 2))
        return false;
    if (s->type == KILN_STAGE_PRODUCER)
        return true; /* GenStage logs and ignores it */
    kiln_term ppid = kiln_tuple_get(from, 0), ref = kiln_tuple_get(from, 1);
    if (is_tuple_n(body, 2) && kiln_tuple_get(body, 0) == a_cancel) {
        kiln_stage_sub *sub = find_ref(s->producers, ref);
        if (sub)
            consumer_cancel(s, sub, a_cancel, kiln_tuple_get(body, 1));
        return true;
    }
    if (!kiln_is_list(body))
        return false;
    kiln_stage_sub *sub = find_ref(s->producers, ref);
    if (!sub) {
        send_proto(ppid, a_gen_producer, ref, a_cancel, a_unknown_subscription);
        return true;
    }
    if (s->type == KILN_STAGE_PRODUCER_CONSUMER) {
        struct pc_entry *e = calloc(1, sizeof(*e));
        if (!e) {
            set_stop(s, kiln_atom_c("enomem"));
            return true;
        }
        e->kind = PC_EVENTS;
        e->m = kiln_msg_take(msg);
        e->ref = ref;
        e->events = body;
        e->from = from;
        pc_append(s, e);
        take_pc_events(s);
        return true;
    }
    consumer_dispatch(s, sub, body, sub->from);
    return true;
}

/* {'DOWN', MRef, process, Pid, Reason}: a producer or a consumer died. */
static bool on_down(struct stage *s, kiln_term t)
{
    kiln_term mref = kiln_tuple_get(t, 1), reason = kiln_tuple_get(t, 4);
    kiln_stage_sub *sub = find_ref(s->producers, mref);
    if (sub) {
        consumer_cancel(s, sub, a_down, reason);
        return true;
    }
    sub = find_mon(s->consumers, mref);
    if (sub) {
        producer_cancel(s, sub, a_down, reason);
        return true;
    }
    return false;
}

/* The gen_server result for the work done on this message. */
static kiln_gs_ret finish(struct stage *s)
{
    if (!s->stop)
        return kiln_gs_noreply();
    kiln_gs_ret r = kiln_gs_hold(kiln_gs_stop(s->stop_reason), s->stop_hold);
    s->stop_hold = NULL;
    return r;
}

/* ---- the gen_server callbacks ---- */

struct stage_start {
    const kiln_gen_stage *cb;
    void *arg;
};

static void stage_free(struct stage *s)
{
    free_subs(s->producers);
    free_subs(s->consumers);
    free_subs(s->leaving);
    kiln_msg_free(s->cb_batch);
    kiln_msg_free(s->cb_cancel);
    if (s->dops)
        s->dops->destroy(s->dstate);
    kiln_stage_queue_clear(&s->buffer);
    for (struct acc_entry *e = s->acc_head, *next; e; e = next) {
        next = e->next;
        kiln_msg_free(e->m);
        free(e);
    }
    for (struct pc_entry *e = s->pcq_head, *next; e; e = next) {
        next = e->next;
        kiln_msg_free(e->m);
        free(e);
    }
    free(s->vec.v);
    free(s->bvec.v);
    kiln_msg_free(s->stop_hold);
    free(s);
}

/* Options init returned: NULL if fine, else what is wrong. */
static const char *setup(struct stage *s, const kiln_stage_opts *o)
{
    s->type = o->type;
    if (o->type != KILN_STAGE_PRODUCER && o->type != KILN_STAGE_CONSUMER && o->type != KILN_STAGE_PRODUCER_CONSUMER)
        return "expected the stage type to be producer, consumer or producer_consumer";
    if (o->type == KILN_STAGE_PRODUCER && !s->cb->handle_demand)
        return "a producer needs handle_demand";
    if (o->type != KILN_STAGE_PRODUCER && !s->cb->handle_events)
        return "a consumer needs handle_events";
    if (o->type == KILN_STAGE_PRODUCER && o->nsubscribe_to)
        return "unknown options [:subscribe_to]";
    if (o->type == KILN_STAGE_CONSUMER)
        return NULL;
    if (o->buffer_size < KILN_STAGE_INFINITY)
        return "expected :buffer_size to be an integer equal to or greater than 0";
    s->buffer_size = o->buffer_size ? o->buffer_size
                                    : o->type == KILN_STAGE_PRODUCER ? 10000 : KILN_STAGE_INFINITY;
    s->keep_first = o->buffer_keep == KILN_STAGE_KEEP_FIRST;
    s->accumulate = o->type == KILN_STAGE_PRODUCER && o->demand_accumulate;
    switch (o->dispatcher) {
    case KILN_STAGE_DISPATCH_DEMAND: s->dops = &kiln_stage_demand_dispatcher; break;
    case KILN_STAGE_DISPATCH_BROADCAST: s->dops = &kiln_stage_broadcast_dispatcher; break;
    case KILN_STAGE_DISPATCH_PARTITION: s->dops = &kiln_stage_partition_dispatcher; break;
    default: return "unknown :dispatcher";
    }
    if (s->dops->init(o, &s->dstate) != KILN_OK) {
        s->dops = NULL;
        return "the dispatcher refused its options (partitions must be > 0)";
    }
    return NULL;
}

static kiln_gs_ret init_stop(kiln_term tag, kiln_term what)
{
    kiln_msg *m = kiln_msg_new(128);
    kiln_term r = m ? kiln_tuple(m, 2, tag, kiln_term_copy(m, what)) : KILN_NONE;
    return kiln_gs_hold(kiln_gs_stop(kiln_is_none(r) ? tag : r), m);
}

static kiln_gs_ret sg_init(void *arg, void **state)
{
    const struct stage_start *ss = arg;
    atoms();
    struct stage *s = calloc(1, sizeof(*s));
    if (!s)
        return kiln_gs_stop(kiln_atom_c("enomem"));
    s->cb = ss->cb;
    kiln_stage_opts o;
    memset(&o, 0, sizeof(o));
    o.type = ss->cb->type;
    kiln_stage_ret r = ss->cb->init(ss->arg, &s->state, &o);
    switch (r.action) {
    case KILN_STAGE_NOREPLY:
        kiln_msg_free(r.hold);
        break;
    case KILN_STAGE_IGNORE:
        kiln_msg_free(r.hold);
        stage_free(s);
        return kiln_gs_ignore();
    case KILN_STAGE_STOP:
        stage_free(s);
        return kiln_gs_hold(kiln_gs_stop(r.reason), r.hold);
    default:
        kiln_msg_free(r.hold);
        stage_free(s);
        return init_stop(a_bad_return_value, kiln_small((int64_t)r.action));
    }
    /* From here the user's init has succeeded: a failure still owes its
     * terminate (Kiln's rule: C state must be freed), though GenStage
     * would not call it. */
    const char *bad = setup(s, &o);
    if (bad) {
        kiln_msg *m = kiln_msg_new(256);
        kiln_term why = m ? kiln_tuple(m, 2, a_bad_opts, kiln_binary(m, bad, strlen(bad))) : KILN_NONE;
        if (kiln_is_none(why))
            why = a_bad_opts;
        if (s->cb->terminate)
            s->cb->terminate(s->state, why);
        stage_free(s);
        return kiln_gs_hold(kiln_gs_stop(why), m);
    }
    for (size_t i = 0; i < o.nsubscribe_to && !s->stop; i++) {
        kiln_msg *m = kiln_msg_new(256);
        kiln_term opts = m ? kiln_stage_sub_opts_term(m, &o.subscribe_to[i]) : KILN_NONE;
        kiln_msg *reply = NULL;
        if (kiln_is_none(opts))
            set_stop(s, kiln_atom_c("enomem"));
        else
            consumer_subscribe(s, a_nil, o.subscribe_to[i].to, opts, &reply);
        /* {error, {bad_opts, _}} from a subscribe_to entry fails the start. */
        if (!s->stop && reply && is_tuple_n(kiln_msg_term(reply), 2) &&
            kiln_tuple_get(kiln_msg_term(reply), 0) == KILN_ATOM_ERROR)
            set_stop(s, kiln_tuple_get(kiln_msg_term(reply), 1));
        kiln_msg_free(reply);
        kiln_msg_free(m);
    }
    if (s->stop) {
        kiln_gs_ret g = finish(s);
        if (s->cb->terminate)
            s->cb->terminate(s->state, g.reason);
        stage_free(s);
        return g;
    }
    *state = s;
    return kiln_gs_ok();
}

static kiln_gs_ret reply_int(int64_t v)
{
    kiln_msg *m = kiln_msg_new(32);
    if (!m)
        return kiln_gs_reply(KILN_ATOM_ERROR);
    kiln_msg_set_term(m, kiln_int(m, v));
    return kiln_gs_reply_msg(m);
}

static kiln_gs_ret sg_call(void *state, kiln_term req, kiln_term from)
{
    struct stage *s = state;
    if (req == a_ddemand)
        return kiln_gs_reply(s->accumulate ? a_accumulate : a_forward);
    if (req == a_dcount)
        return reply_int((int64_t)s->buffer.count);
    if (req == a_ddiscarded)
        return reply_int(s->discarded);
    if (is_tuple_n(req, 4) && kiln_tuple_get(req, 0) == a_dsubscribe) {
        kiln_msg *reply = NULL;
        consumer_subscribe(s, kiln_tuple_get(req, 1), kiln_tuple_get(req, 2), kiln_tuple_get(req, 3), &reply);
        if (s->stop) {
            kiln_gs_ret r = finish(s);
            r.reply_msg = reply;
            return r;
        }
        return reply ? kiln_gs_reply_msg(reply) : kiln_gs_reply(KILN_ATOM_ERROR);
    }
    if (!s->cb->handle_call) {
        stop_tagged(s, a_bad_call, req);
        return finish(s);
    }
    kiln_stage_ret r = s->cb->handle_call(s->state, req, from);
    switch (r.action) {
    case KILN_STAGE_REPLY: {
        /* GenStage replies after the events are dispatched. */
        dispatch_list(s, r.events);
        if (s->stop) {
            kiln_gs_ret g = finish(s);
            g.reply_msg = reply_of(r.reply, KILN_NONE);
            kiln_msg_free(r.hold);
            return g;
        }
        return kiln_gs_hold(kiln_gs_reply(r.reply), r.hold);
    }
    case KILN_STAGE_STOP: {
        set_stop(s, r.reason);
        kiln_gs_ret g = finish(s);
        if (!kiln_is_none(r.reply))
            g.reply_msg = reply_of(r.reply, KILN_NONE);
        kiln_msg_free(r.hold);
        return g;
    }
    default:
        apply_noreply(s, r);
        return finish(s);
    }
}

static kiln_gs_ret sg_cast(void *state, kiln_term msg)
{
    struct stage *s = state;
    if (is_tuple_n(msg, 2) && kiln_tuple_get(msg, 0) == a_ddemand) {
        kiln_term mode = kiln_tuple_get(msg, 1);
        /* Only a producer has a demand mode; GenStage logs otherwise. */
        if (s->type == KILN_STAGE_PRODUCER) {
            if (mode == a_forward && s->accumulate)
                demand_forward(s);
            else if (mode == a_accumulate)
                s->accumulate = true;
        }
        return finish(s);
    }
    if (is_tuple_n(msg, 4) && kiln_tuple_get(msg, 0) == a_dsubscribe) {
        kiln_msg *reply = NULL;
        consumer_subscribe(s, kiln_tuple_get(msg, 1), kiln_tuple_get(msg, 2), kiln_tuple_get(msg, 3), &reply);
        kiln_msg_free(reply);
        return finish(s);
    }
    if (s->cb->handle_cast)
        apply_noreply(s, s->cb->handle_cast(s->state, msg));
    return finish(s);
}

static kiln_gs_ret sg_info(void *state, kiln_msg *msg)
{
    struct stage *s = state;
    kiln_term t = kiln_msg_term(msg);
    bool done = false;
    if (is_tuple_n(t, 3)) {
        kiln_term tag = kiln_tuple_get(t, 0);
        if (tag == a_gen_producer)
            done = on_gen_producer(s, kiln_tuple_get(t, 1), kiln_tuple_get(t, 2));
        else if (tag == a_gen_consumer)
            done = on_gen_consumer(s, kiln_tuple_get(t, 1), kiln_tuple_get(t, 2), msg);
    } else if (is_tuple_n(t, 5) && kiln_tuple_get(t, 0) == KILN_ATOM_DOWN) {
        done = on_down(s, t);
    }
    if (!done && s->cb->handle_info)
        apply_noreply(s, s->cb->handle_info(s->state, msg));
    return finish(s);
}

static void free_cut(void *state) { stage_free(state); }

static void sg_terminate(void *state, kiln_term reason)
{
    struct stage *s = state;
    /* The user's terminate may block; killed there, the stage still goes. */
    kiln_otp_terminate_guard(s, free_cut);
    if (s->cb->terminate)
        s->cb->terminate(s->state, reason);
    stage_free(s);
}

static kiln_term sg_format(void *state, kiln_msg *m)
{
    struct stage *s = state;
    return s->cb->format_state ? s->cb->format_state(s->state, m) : KILN_ATOM_UNDEFINED;
}

static const kiln_gen_server stage_gs = {
    .name = "gen_stage",
    .init = sg_init,
    .handle_call = sg_call,
    .handle_cast = sg_cast,
    .handle_info = sg_info,
    .terminate = sg_terminate,
    .format_state = sg_format,
};

/* ---- public API ---- */

int kiln_stage_start_link(const kiln_gen_stage *stage, void *arg, const kiln_gs_opts *opts, kiln_term *pid,
                          kiln_msg **reason)
{
    if (reason)
        *reason = NULL;
    if (!stage || !stage->init)
        return KILN_EINVAL;
    /* The starter waits for init, so the start record may live here. */
    struct stage_start ss = {stage, arg};
    return kiln_gs_start_link(&stage_gs, &ss, opts, pid, reason);
}

int kiln_stage_start(kiln_rt *rt, const kiln_gen_stage *stage, void *arg, const kiln_gs_opts *opts,
                     kiln_term *pid, kiln_msg **reason)
{
    if (reason)
        *reason = NULL;
    if (!stage || !stage->init)
        return KILN_EINVAL;
    struct stage_start ss = {stage, arg};
    return kiln_gs_start(rt, &stage_gs, &ss, opts, pid, reason);
}

kiln_term kiln_stage_sub_opts_term(kiln_msg *m, const kiln_stage_sub_opts *o)
{
    atoms();
    int64_t max = o->max_demand > 0 ? o->max_demand : 1000;
    int64_t min = o->min_demand == 0 ? max / 2 : o->min_demand == KILN_STAGE_DEMAND_ZERO ? 0 : o->min_demand;
    kiln_term mode = o->cancel == KILN_STAGE_TRANSIENT   ? a_transient
                     : o->cancel == KILN_STAGE_TEMPORARY ? a_temporary
                                                         : a_permanent;
    kiln_term list = o->extra && !kiln_is_none(o->extra) ? kiln_term_copy(m, o->extra) : KILN_NIL;
    if (o->partition && !kiln_is_none(o->partition))
        list = kiln_cons(m, kiln_tuple(m, 2, a_partition, kiln_term_copy(m, o->partition)), list);
    list = kiln_cons(m, kiln_tuple(m, 2, a_cancel, mode), list);
    list = kiln_cons(m, kiln_tuple(m, 2, a_min_demand, kiln_int(m, min)), list);
    return kiln_cons(m, kiln_tuple(m, 2, a_max_demand, kiln_int(m, max)), list);
}

/* {'$subscribe', nil, To, Opts} in a new message. */
static kiln_msg *subscribe_request(const kiln_stage_sub_opts *o)
{
    kiln_msg *m = kiln_msg_new(256);
    if (!m)
        return NULL;
    kiln_term t = kiln_tuple(m, 4, a_dsubscribe, a_nil, kiln_term_copy(m, o->to), kiln_stage_sub_opts_term(m, o));
    if (kiln_is_none(t)) {
        kiln_msg_free(m);
        return NULL;
    }
    kiln_msg_set_term(m, t);
    return m;
}

int kiln_stage_subscribe(kiln_rt *rt, kiln_term consumer, const kiln_stage_sub_opts *opts, int64_t timeout_ms,
                         kiln_msg **tag)
{
    if (tag)
        *tag = NULL;
    if (!opts)
        return KILN_EINVAL;
    atoms();
    kiln_msg *req = subscribe_request(opts);
    if (!req)
        return KILN_ENOMEM;
    kiln_msg *reply = NULL;
    int rc = kiln_gs_call(rt, consumer, req, timeout_ms, &reply, NULL);
    if (rc != KILN_OK)
        return rc;
    kiln_term t = kiln_msg_term(reply);
    if (is_tuple_n(t, 2) && kiln_tuple_get(t, 0) == KILN_ATOM_OK) {
        if (tag) {
            kiln_msg_set_term(reply, kiln_tuple_get(t, 1));
            *tag = reply;
            return KILN_OK;
        }
    } else if (is_tuple_n(t, 2) && kiln_tuple_get(t, 1) == a_not_a_consumer) {
        rc = KILN_EBADARG;
    } else {
        rc = KILN_EINVAL;
    }
    kiln_msg_free(reply);
    return rc;
}

int kiln_stage_async_subscribe(kiln_rt *rt, kiln_term consumer, const kiln_stage_sub_opts *opts)
{
    if (!opts)
        return KILN_EINVAL;
    atoms();
    kiln_msg *req = subscribe_request(opts);
    if (!req)
        return KILN_ENOMEM;
    return kiln_gs_cast(rt, consumer, req);
}

int kiln_stage_ask(kiln_term from, int64_t demand)
{
    if (demand == 0)
        return KILN_OK;
    if (demand < 0 || !is_tuple_n(from, 2))
        return KILN_EINVAL;
    if (kiln_is_none(kiln_self()))
        return KILN_ENOTPROC;
    atoms();
    kiln_msg *tmp = kiln_msg_new(32);
    if (!tmp)
        return KILN_ENOMEM;
    int rc = send_proto(kiln_tuple_get(from, 0), a_gen_producer, kiln_tuple_get(from, 1), a_ask, kiln_int(tmp, demand));
    kiln_msg_free(tmp);
    return rc;
}

int kiln_stage_cancel(kiln_rt *rt, kiln_term from, kiln_term reason)
{
    if (!is_tuple_n(from, 2))
        return KILN_EINVAL;
    atoms();
    kiln_rt *cur = kiln_current_rt();
    if (cur && (!rt || rt == cur))
        return send_proto(kiln_tuple_get(from, 0), a_gen_producer, kiln_tuple_get(from, 1), a_cancel, reason);
    if (!rt)
        return KILN_ENOTPROC;
    /* Outside a process: the message names no sender pid (the producer
     * goes by Ref alone for a cancel). */
    kiln_msg *m = kiln_msg_new(128);
    if (!m)
        return KILN_ENOMEM;
    kiln_term t = kiln_tuple(m, 3, a_gen_producer,
                             kiln_tuple(m, 2, KILN_ATOM_UNDEFINED, kiln_term_copy(m, kiln_tuple_get(from, 1))),
                             kiln_tuple(m, 2, a_cancel, kiln_term_copy(m, reason)));
    if (kiln_is_none(t)) {
        kiln_msg_free(m);
        return KILN_ENOMEM;
    }
    kiln_msg_set_term(m, t);
    return kiln_rt_send(rt, kiln_tuple_get(from, 0), m);
}

int kiln_stage_set_demand(kiln_rt *rt, kiln_term stage, bool accumulate)
{
    atoms();
    kiln_msg *m = kiln_msg_new(32);
    if (!m)
        return KILN_ENOMEM;
    kiln_msg_set_term(m, kiln_tuple(m, 2, a_ddemand, accumulate ? a_accumulate : a_forward));
    return kiln_gs_cast(rt, stage, m);
}

static int call_simple(kiln_rt *rt, kiln_term stage, kiln_term req, int64_t timeout_ms, kiln_msg **reply)
{
    kiln_msg *m = kiln_msg_new(0);
    if (!m)
        return KILN_ENOMEM;
    kiln_msg_set_term(m, req);
    return kiln_gs_call(rt, stage, m, timeout_ms, reply, NULL);
}

int kiln_stage_get_demand(kiln_rt *rt, kiln_term stage, int64_t timeout_ms, bool *accumulate)
{
    atoms();
    kiln_msg *reply = NULL;
    int rc = call_simple(rt, stage, a_ddemand, timeout_ms, &reply);
    if (rc == KILN_OK && accumulate)
        *accumulate = kiln_msg_term(reply) == a_accumulate;
    kiln_msg_free(reply);
    return rc;
}

static int call_int(kiln_rt *rt, kiln_term stage, kiln_term req, int64_t timeout_ms, int64_t *out)
{
    atoms();
    kiln_msg *reply = NULL;
    int rc = call_simple(rt, stage, req, timeout_ms, &reply);
    if (rc == KILN_OK) {
        int64_t v = 0;
        rc = kiln_get_int64(kiln_msg_term(reply), &v);
        if (rc == KILN_OK && out)
            *out = v;
    }
    kiln_msg_free(reply);
    return rc;
}

int kiln_stage_estimate_buffered_count(kiln_rt *rt, kiln_term stage, int64_t timeout_ms, int64_t *count)
{
    atoms();
    return call_int(rt, stage, a_dcount, timeout_ms, count);
}

int kiln_stage_discarded_count(kiln_rt *rt, kiln_term stage, int64_t timeout_ms, int64_t *count)
{
    atoms();
    return call_int(rt, stage, a_ddiscarded, timeout_ms, count);
}
