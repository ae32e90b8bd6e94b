/* The event queue behind a producer's buffer and the partition
 * dispatcher's per-partition queues (see gen_stage_internal.h). */
#include <stdlib.h>
#include <string.h>

#include "otp/gen_stage_internal.h"

/* Events per chunk: large enough that the arena and the chunk header are
 * a small part of the cost, small enough that a drained chunk is given
 * back soon. */
#define QCHUNK_EVENTS 64

struct kiln_stage_qchunk {
    struct kiln_stage_qchunk *next;
    kiln_msg *m;      /* the events' arena */
    size_t head, n;   /* live events are ev[head..n) */
    kiln_term ev[QCHUNK_EVENTS];
};

static void chunk_free(struct kiln_stage_qchunk *c)
{
    kiln_msg_free(c->m);
    free(c);
}

int kiln_stage_queue_push(kiln_stage_queue *q, kiln_term ev)
{
    struct kiln_stage_qchunk *c = q->last;
    if (!c || c->n == QCHUNK_EVENTS) {
        c = calloc(1, sizeof(*c));
        if (!c)
            return KILN_ENOMEM;
        c->m = kiln_msg_new(QCHUNK_EVENTS * 16);
        if (!c->m) {
            free(c);
            return KILN_ENOMEM;
        }
        if (q->last)
            q->last->next = c;
        else
            q->first = c;
        q->last = c;
    }
    kiln_term t = kiln_term_copy(c->m, ev);
    if (kiln_is_none(t)) {
        if (c->n == 0 && q->first == c) {
            /* A chunk made for this event alone: do not keep it empty. */
            q->first = q->last = NULL;
            chunk_free(c);
        }
        return KILN_ENOMEM;
    }
    c->ev[c->n++] = t;
    q->count++;
    return KILN_OK;
}

size_t kiln_stage_queue_front(const kiln_stage_queue *q, const kiln_term **run)
{
    const struct kiln_stage_qchunk *c = q->first;
    if (!c) {
        *run = NULL;
        return 0;
    }
    *run = c->ev + c->head;
    return c->n - c->head;
}

void kiln_stage_queue_peek(const kiln_stage_queue *q, size_t n, kiln_term *out)
{
    for (const struct kiln_stage_qchunk *c = q->first; c && n > 0; c = c->next) {
        size_t k = c->n - c->head;
        if (k > n)
            k = n;
        memcpy(out, c->ev + c->head, k * sizeof(*out));
        out += k;
        n -= k;
    }
}

void kiln_stage_queue_drop(kiln_stage_queue *q, size_t n)
{
    while (n > 0 && q->first) {
        struct kiln_stage_qchunk *c = q->first;
        size_t avail = c->n - c->head;
        size_t k = n < avail ? n : avail;
        c->head += k;
        q->count -= k;
        n -= k;
        if (c->head == c->n) {
            /* Drained: free it even when it is the last chunk, since an
             * arena cannot be emptied for reuse. */
            q->first = c->next;
            if (!q->first)
                q->last = NULL;
            chunk_free(c);
        }
    }
}

void kiln_stage_queue_clear(kiln_stage_queue *q)
{
    struct kiln_stage_qchunk *c = q->first;
    while (c) {
        struct kiln_stage_qchunk *next = c->next;
        chunk_free(c);
        c = next;
    }
    q->first = q->last = NULL;
    q->count = 0;
}
