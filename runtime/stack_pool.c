/* Per-worker pools of process stacks: blocking and resuming must not cost
 * an mmap each time. */
#include "rt.h"

#define KILN_STACK_POOL_MAX 64

struct kiln_fiber *kiln_stack_get(struct kiln_worker *w)
{
    struct kiln_fiber *f = w->stack_pool;
    if (f) {
        w->stack_pool = f->pool_next;
        w->stack_pool_len--;
        f->pool_next = NULL;
        return f;
    }
    return kiln_fiber_create(w->rt->cfg.stack_size);
}

void kiln_stack_put(struct kiln_worker *w, struct kiln_fiber *f)
{
    if (w->stack_pool_len >= KILN_STACK_POOL_MAX) {
        kiln_fiber_destroy(f);
        return;
    }
    f->pool_next = w->stack_pool;
    w->stack_pool = f;
    w->stack_pool_len++;
}

void kiln_stack_pool_fini(struct kiln_worker *w)
{
    struct kiln_fiber *f = w->stack_pool;
    while (f) {
        struct kiln_fiber *next = f->pool_next;
        kiln_fiber_destroy(f);
        f = next;
    }
    w->stack_pool = NULL;
    w->stack_pool_len = 0;
    kiln_fiber_destroy(w->loop_fiber);
    kiln_fiber_destroy(w->spare_loop);
    w->loop_fiber = w->spare_loop = NULL;
}
