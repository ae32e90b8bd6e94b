/* GenStage.DemandDispatcher: each batch goes to the consumer with the
 * highest pending demand (the first to have asked, among equals), so
 * events spread over consumers by how much they can take.
 *
 * Consumers are kept sorted by demand, highest first (sub->dcount).
 * pending is demand left behind by consumers that went away: it was
 * already forwarded upstream, so the next asks use it up before asking
 * for more, as GenStage does. */
#include <stdlib.h>
#include <string.h>

#include "otp/gen_stage_internal.h"

struct demand_disp {
    kiln_stage_sub **v; /* sorted by dcount, descending; FIFO among equals */
    size_t n, cap;
    int64_t pending;
};

static int dd_init(const kiln_stage_opts *opts, void **state)
{
    (void)opts;
    struct demand_disp *d = calloc(1, sizeof(*d));
    if (!d)
        return KILN_ENOMEM;
    *state = d;
    return KILN_OK;
}

static void dd_destroy(void *state)
{
    struct demand_disp *d = state;
    if (d) {
        free(d->v);
        free(d);
    }
}

static size_t find(const struct demand_disp *d, const kiln_stage_sub *sub)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->v[i] == sub)
            return i;
    return d->n;
}

static void remove_at(struct demand_disp *d, size_t i)
{
    memmove(d->v + i, d->v + i + 1, (d->n - i - 1) * sizeof(*d->v));
    d->n--;
}

/* Insert after every consumer whose demand is at least sub's: a consumer
 * that just got a batch goes behind those with the same demand. The
 * array has room (the caller removed sub or grew it). */
static void insert(struct demand_disp *d, kiln_stage_sub *sub)
{
    size_t i = 0;
    while (i < d->n && d->v[i]->dcount >= sub->dcount)
        i++;
    memmove(d->v + i + 1, d->v + i, (d->n - i) * sizeof(*d->v));
    d->v[i] = sub;
    d->n++;
}

static int dd_subscribe(void *state, kiln_stage_sub *sub, int64_t *demand, kiln_term *why, kiln_msg **why_msg)
{
    (void)why_msg;
    struct demand_disp *d = state;
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
    sub->dcount = 0;
    insert(d, sub);
    *demand = 0;
    return KILN_OK;
}

static int64_t dd_cancel(void *state, kiln_stage_sub *sub)
{
    struct demand_disp *d = state;
    size_t i = find(d, sub);
    if (i < d->n) {
        d->pending += sub->dcount;
        remove_at(d, i);
    }
    return 0;
}

static int64_t dd_ask(void *state, kiln_stage_sub *sub, int64_t n)
{
    struct demand_disp *d = state;
    size_t i = find(d, sub);
    if (i == d->n)
        return 0;
    remove_at(d, i);
    sub->dcount += n;
    insert(d, sub);
    int64_t already_sent = d->pending < n ? d->pending : n;
    d->pending -= already_sent;
    return n - already_sent;
}

static int dd_dispatch(void *state, const kiln_term *events, size_t n, size_t *sent, kiln_term *why,
                       kiln_msg **why_msg)
{
    (void)why;
    (void)why_msg;
    struct demand_disp *d = state;
    size_t done = 0;
    while (done < n && d->n > 0 && d->v[0]->dcount > 0) {
        kiln_stage_sub *sub = d->v[0];
        size_t k = n - done;
        if ((uint64_t)sub->dcount < k)
            k = (size_t)sub->dcount;
        kiln_stage_send_events(sub, events + done, k);
        done += k;
        remove_at(d, 0);
        sub->dcount -= (int64_t)k;
        insert(d, sub);
    }
    /* Events that found no demand are buffered; demand inherited from
     * departed consumers is considered spent on them, as GenStage does. */
    int64_t left = (int64_t)(n - done);
    d->pending = d->pending > left ? d->pending - left : 0;
    *sent = done;
    return KILN_OK;
}

const kiln_stage_dispatcher_ops kiln_stage_demand_dispatcher = {
    "demand", dd_init, dd_destroy, dd_subscribe, dd_cancel, dd_ask, dd_dispatch,
};
