/* GenStage.PartitionDispatcher: a hash function picks each event's
 * partition, and each partition has at most one consumer, which names it
 * with the subscription option {partition, P}.
 *
 * The producer cannot tell which partition a demand is for, so demand is
 * pooled: waiting is what consumers asked in total and has not been
 * dispatched. Events beyond their partition's own demand (or for a
 * partition nobody has subscribed to yet) wait in that partition's queue
 * until its consumer asks; they already counted against waiting. So a
 * partition whose consumer is slow, or that gets more than its share of
 * events, grows its queue: GenStage assumes an even distribution too.
 * pending is demand of cancelled consumers, reused before asking again.
 *
 * Differences from GenStage: a bad {partition, P} cancels that
 * subscription (reason partition_required, {unknown_partition, P} or
 * {partition_taken, P}) instead of crashing the producer; the hash
 * returns an index rather than {Event, Partition}, so it cannot rewrite
 * the event. */
#include <stdlib.h>
#include <string.h>

#include "otp/gen_stage_internal.h"

struct partition {
    kiln_stage_sub *sub;   /* NULL: no consumer */
    int64_t demand;        /* 0 whenever queue is not empty */
    kiln_stage_queue queue;
};

struct part_disp {
    size_t n;
    struct partition *p;
    kiln_msg *names_msg;   /* copies of the names, if any */
    kiln_term *names;
    int64_t (*hash)(kiln_term event, void *arg);
    void *hash_arg;
    int64_t waiting, pending;
    /* Scratch for dispatch, kept to avoid an allocation per batch. */
    int64_t *idx;
    size_t *order, *start;
    kiln_term *tmp;
    size_t scap, tcap;
};

static void pd_destroy(void *state)
{
    struct part_disp *d = state;
    if (!d)
        return;
    for (size_t i = 0; i < d->n && d->p; i++)
        kiln_stage_queue_clear(&d->p[i].queue);
    free(d->p);
    free(d->names);
    kiln_msg_free(d->names_msg);
    free(d->idx);
    free(d->order);
    free(d->start);
    free(d->tmp);
    free(d);
}

static int pd_init(const kiln_stage_opts *opts, void **state)
{
    const kiln_stage_partition_opts *po = &opts->partition;
    if (po->partitions == 0)
        return KILN_EINVAL;
    struct part_disp *d = calloc(1, sizeof(*d));
    if (!d)
        return KILN_ENOMEM;
    d->n = po->partitions;
    d->hash = po->hash;
    d->hash_arg = po->hash_arg;
    d->p = calloc(d->n, sizeof(*d->p));
    d->start = calloc(d->n + 1, sizeof(*d->start));
    if (!d->p || !d->start) {
        pd_destroy(d);
        return KILN_ENOMEM;
    }
    if (po->names) {
        d->names = calloc(d->n, sizeof(*d->names));
        d->names_msg = kiln_msg_new(64);
        if (!d->names || !d->names_msg) {
            pd_destroy(d);
            return KILN_ENOMEM;
        }
        for (size_t i = 0; i < d->n; i++) {
            d->names[i] = kiln_term_copy(d->names_msg, po->names[i]);
            if (kiln_is_none(d->names[i])) {
                pd_destroy(d);
                return KILN_ENOMEM;
            }
        }
    }
    *state = d;
    return KILN_OK;
}

/* The index named by a {partition, P} option, or d->n. */
static size_t lookup(const struct part_disp *d, kiln_term name)
{
    if (d->names) {
        for (size_t i = 0; i < d->n; i++)
            if (kiln_term_eq(d->names[i], name))
                return i;
        return d->n;
    }
    int64_t i;
    if (kiln_get_int64(name, &i) != KILN_OK || i < 0 || (uint64_t)i >= d->n)
        return d->n;
    return (size_t)i;
}

static int pd_subscribe(void *state, kiln_stage_sub *sub, int64_t *demand, kiln_term *why, kiln_msg **why_msg)
{
    struct part_disp *d = state;
    kiln_term name = kiln_stage_kw_get(sub->opts, kiln_atom_c("partition"));
    sub->dindex = d->n;
    if (kiln_is_none(name)) {
        *why = kiln_atom_c("partition_required");
        return KILN_EINVAL;
    }
    size_t i = lookup(d, name);
    if (i == d->n || d->p[i].sub) {
        kiln_msg *m = kiln_msg_new(64);
        *why_msg = m;
        *why = m ? kiln_tuple(m, 2, kiln_atom_c(i == d->n ? "unknown_partition" : "partition_taken"),
                              kiln_term_copy(m, name))
                 : kiln_atom_c("enomem");
        if (kiln_is_none(*why))
            *why = kiln_atom_c("enomem");
        return i == d->n ? KILN_EINVAL : KILN_EBUSY;
    }
    d->p[i].sub = sub;
    sub->dindex = i;
    *demand = 0;
    return KILN_OK;
}

static int64_t pd_cancel(void *state, kiln_stage_sub *sub)
{
    struct part_disp *d = state;
    if (sub->dindex >= d->n || d->p[sub->dindex].sub != sub)
        return 0; /* its subscribe failed */
    struct partition *p = &d->p[sub->dindex];
    p->sub = NULL;
    int64_t demand = 0;
    if (p->queue.count > 0) {
        /* The queued events are lost with their consumer; they had been
         * counted against waiting, so ask for as many again. */
        demand = (int64_t)p->queue.count;
        d->waiting += demand;
        kiln_stage_queue_clear(&p->queue);
    } else {
        d->pending += p->demand;
    }
    p->demand = 0;
    return demand;
}

static int grow_tmp(struct part_disp *d, size_t n)
{
    if (n <= d->tcap)
        return KILN_OK;
    kiln_term *t = realloc(d->tmp, n * sizeof(*t));
    if (!t)
        return KILN_ENOMEM;
    d->tmp = t;
    d->tcap = n;
    return KILN_OK;
}

/* Send up to n queued events of p to its consumer, as one message. */
static int64_t send_from_queue(struct part_disp *d, struct partition *p, int64_t n)
{
    size_t k = p->queue.count;
    if ((uint64_t)n < k)
        k = (size_t)n;
    if (k == 0 || grow_tmp(d, k) != KILN_OK)
        return 0;
    /* The copied terms stay valid until the drop below. */
    kiln_stage_queue_peek(&p->queue, k, d->tmp);
    kiln_stage_send_events(p->sub, d->tmp, k);
    kiln_stage_queue_drop(&p->queue, k);
    return (int64_t)k;
}

static int64_t pd_ask(void *state, kiln_stage_sub *sub, int64_t n)
{
    struct part_disp *d = state;
    if (sub->dindex >= d->n || d->p[sub->dindex].sub != sub)
        return 0;
    struct partition *p = &d->p[sub->dindex];
    int64_t left = n;
    if (p->queue.count > 0)
        left -= send_from_queue(d, p, left);
    if (p->queue.count == 0)
        p->demand += left;
    int64_t already_sent = d->pending < n ? d->pending : n;
    d->pending -= already_sent;
    int64_t up = n - already_sent;
    d->waiting += up;
    return up;
}

static int grow_scratch(struct part_disp *d, size_t n)
{
    if (n <= d->scap)
        return KILN_OK;
    int64_t *idx = realloc(d->idx, n * sizeof(*idx));
    if (!idx)
        return KILN_ENOMEM;
    d->idx = idx;
    size_t *order = realloc(d->order, n * sizeof(*order));
    if (!order)
        return KILN_ENOMEM;
    d->order = order;
    d->scap = n;
    return KILN_OK;
}

static int pd_dispatch(void *state, const kiln_term *events, size_t n, size_t *sent, kiln_term *why,
                       kiln_msg **why_msg)
{
    struct part_disp *d = state;
    *sent = 0;
    if (d->waiting <= 0 || n == 0)
        return KILN_OK;
    if (grow_scratch(d, n) != KILN_OK) {
        *why = kiln_atom_c("enomem");
        return KILN_ENOMEM;
    }
    /* Hash first, so an unknown partition stops the producer before any
     * event of the batch went out. Discarded events do not use demand. */
    size_t taken = 0;
    int64_t waiting = d->waiting;
    memset(d->start, 0, (d->n + 1) * sizeof(*d->start));
    while (taken < n && waiting > 0) {
        int64_t i = d->hash ? d->hash(events[taken], d->hash_arg)
                            : (int64_t)(kiln_term_hash(events[taken]) % (uint64_t)d->n);
        if (i < -1 || i >= (int64_t)d->n) {
            kiln_msg *m = kiln_msg_new(32);
            *why_msg = m;
            *why = m ? kiln_tuple(m, 2, kiln_atom_c("unknown_partition"), kiln_int(m, i)) : KILN_NONE;
            if (kiln_is_none(*why))
                *why = kiln_atom_c("unknown_partition");
            return KILN_EINVAL;
        }
        d->idx[taken] = i;
        if (i >= 0) {
            d->start[i + 1]++;
            waiting--;
        }
        taken++;
    }
    d->waiting = waiting;
    /* Counting sort by partition, keeping each partition's order. */
    for (size_t i = 0; i < d->n; i++)
        d->start[i + 1] += d->start[i];
    size_t total = d->start[d->n];
    if (grow_tmp(d, total) != KILN_OK) {
        *why = kiln_atom_c("enomem");
        return KILN_ENOMEM;
    }
    for (size_t e = 0; e < taken; e++)
        if (d->idx[e] >= 0)
            d->order[d->start[d->idx[e]]++] = e;
    /* start[i] is now the end of partition i's run. */
    size_t begin = 0;
    for (size_t i = 0; i < d->n; i++) {
        size_t end = d->start[i], cnt = end - begin;
        if (cnt == 0) {
            begin = end;
            continue;
        }
        struct partition *p = &d->p[i];
        size_t now = 0;
        if (p->sub && p->queue.count == 0 && p->demand > 0)
            now = (uint64_t)p->demand < cnt ? (size_t)p->demand : cnt;
        for (size_t j = 0; j < now; j++)
            d->tmp[j] = events[d->order[begin + j]];
        if (now > 0) {
            kiln_stage_send_events(p->sub, d->tmp, now);
            p->demand -= (int64_t)now;
        }
        for (size_t j = now; j < cnt; j++)
            if (kiln_stage_queue_push(&p->queue, events[d->order[begin + j]]) != KILN_OK) {
                *why = kiln_atom_c("enomem");
                return KILN_ENOMEM;
            }
        begin = end;
    }
    *sent = taken;
    return KILN_OK;
}

const kiln_stage_dispatcher_ops kiln_stage_partition_dispatcher = {
    "partition", pd_init, pd_destroy, pd_subscribe, pd_cancel, pd_ask, pd_dispatch,
};
