/* GenStage.BroadcastDispatcher: every consumer gets every event, so the
 * producer can only go as fast as the slowest consumer.
 *
 * Demand is kept relative: waiting is what every consumer can take (the
 * minimum of their demands), and each consumer's dcount is its demand
 * above that. requested is what has been asked upstream and not yet
 * dispatched, so the same minimum is never asked for twice. A pid may
 * subscribe only once (it would otherwise get every event twice).
 * GenStage's :selector option (a fun) has no C equivalent here. */
#include <stdlib.h>
#include <string.h>

#include "otp/gen_stage_internal.h"

struct bcast_disp {
    kiln_stage_sub **v;
    size_t n, cap;
    int64_t waiting, requested;
};

static int bd_init(const kiln_stage_opts *opts, void **state)
{
    (void)opts;
    struct bcast_disp *d = calloc(1, sizeof(*d));
    if (!d)
        return KILN_ENOMEM;
    *state = d;
    return KILN_OK;
}

static void bd_destroy(void *state)
{
    struct bcast_disp *d = state;
    if (d) {
        free(d->v);
        free(d);
    }
}

/* Move the common minimum into waiting; returns what to ask upstream. */
static int64_t sync_demands(struct bcast_disp *d)
{
    if (d->n == 0)
        return 0;
    int64_t min = d->v[0]->dcount;
    for (size_t i = 1; i < d->n; i++)
        if (d->v[i]->dcount < min)
            min = d->v[i]->dcount;
    if (min < 0)
        min = 0;
    for (size_t i = 0; i < d->n; i++)
        d->v[i]->dcount -= min;
    d->waiting += min;
    int64_t request = d->waiting - d->requested;
    if (request < 0)
        request = 0;
    d->requested += request;
    return request;
}

static int bd_subscribe(void *state, kiln_stage_sub *sub, int64_t *demand, kiln_term *why, kiln_msg **why_msg)
{
    (void)why_msg;
    struct bcast_disp *d = state;
    for (size_t i = 0; i < d->n; i++) {
        if (kiln_term_eq(d->v[i]->pid, sub->pid)) {
            *why = kiln_atom_c("already_subscribed");
            return KILN_EBUSY;
        }
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        kiln_stage_sub **v = realloc(d->v, cap * sizeof(*v));
        if (!v) {
            *why = kiln_atom_c("enomem");
            return KILN_ENOMEM;
        }
        d->v = v;
        d->cap = cap;
    }
    /* The newcomer has no demand, so nothing is common any more: give
     * waiting back to the others. */
    for (size_t i = 0; i < d->n; i++)
        d->v[i]->dcount += d->waiting;
    d->waiting = 0;
    sub->dcount = 0;
    d->v[d->n++] = sub;
    *demand = 0;
    return KILN_OK;
}

static int64_t bd_cancel(void *state, kiln_stage_sub *sub)
{
    struct bcast_disp *d = state;
    for (size_t i = 0; i < d->n; i++) {
        if (d->v[i] == sub) {
            memmove(d->v + i, d->v + i + 1, (d->n - i - 1) * sizeof(*d->v));
            d->n--;
            break;
        }
    }
    if (d->n == 0) {
        d->waiting = 0;
        return 0;
    }
    /* The slowest consumer may have left: that can free demand. */
    return sync_demands(d);
}

static int64_t bd_ask(void *state, kiln_stage_sub *sub, int64_t n)
{
    struct bcast_disp *d = state;
    sub->dcount += n;
    return sync_demands(d);
}

static int bd_dispatch(void *state, const kiln_term *events, size_t n, size_t *sent, kiln_term *why,
                       kiln_msg **why_msg)
{
    (void)why;
    (void)why_msg;
    struct bcast_disp *d = state;
    size_t k = n;
    if ((uint64_t)d->waiting < k)
        k = (size_t)d->waiting;
    if (k > 0) {
        for (size_t i = 0; i < d->n; i++)
            kiln_stage_send_events(d->v[i], events, k);
        d->waiting -= (int64_t)k;
        d->requested -= (int64_t)k;
    }
    *sent = k;
    return KILN_OK;
}

const kiln_stage_dispatcher_ops kiln_stage_broadcast_dispatcher = {
    "broadcast", bd_init, bd_destroy, bd_subscribe, bd_cancel, bd_ask, bd_dispatch,
};
