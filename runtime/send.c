/* Routing a message to its destination: a pid, a registered name, an
 * alias, or {Name, Node}. Remote destinations go to the distribution
 * layer the node installed (dist_hooks.h). */
#include "alloc.h"
#include "dist_hooks.h"
#include "rt.h"

static int route_remote(kiln_rt *rt, kiln_term to, kiln_msg *msg)
{
    /* Reading the node's operations and calling them is one epoch
     * section, from workers and foreign threads alike: the node frees
     * itself only after every such section has ended. */
    void *ctx;
    kiln_epoch_enter(rt);
    const struct kiln_dist_ops *d = kiln_rt_dist(rt, &ctx);
    int rc = KILN_ENOTSUP; /* this node is not alive */
    if (d) {
        msg->kind = KILN_MK_USER;
        msg->flags = 0;
        rc = d->send(ctx, kiln_self(), to, msg);
    } else {
        kiln_msg_free(msg);
    }
    kiln_epoch_exit(rt);
    return rc;
}

int kiln_route(kiln_rt *rt, kiln_term to, kiln_msg *msg)
{
    if (kiln_is_local_pid(to)) {
        /* A dead pid is not an error: Erlang drops the message silently. */
        int rc = kiln_deliver_pid(rt, to, msg);
        return rc == KILN_ENOPROC ? KILN_OK : rc;
    }
    if (kiln_is_atom(to)) {
        kiln_term pid = kiln_whereis(rt, to);
        if (kiln_is_none(pid)) {
            kiln_msg_free(msg);
            return KILN_EBADARG;
        }
        int rc = kiln_deliver_pid(rt, pid, msg);
        return rc == KILN_ENOPROC ? KILN_OK : rc;
    }
    if (kiln_is_remote(rt, to))
        return route_remote(rt, to, msg);
    if (kiln_is_ref(to)) {
        uint64_t n;
        kiln_term pid;
        if (!kiln_ref_number(rt, to, &n, &pid) || kiln_is_none(pid)) {
            /* Not an alias of this node: dropped, as Erlang does. */
            kiln_msg_free(msg);
            return KILN_OK;
        }
        msg->kind = KILN_MK_ALIAS_MSG;
        msg->aux = n;
        int rc = kiln_deliver_pid(rt, pid, msg);
        return rc == KILN_ENOPROC ? KILN_OK : rc;
    }
    if (kiln_is_tuple(to) && kiln_tuple_arity(to) == 2 && kiln_is_atom(kiln_tuple_get(to, 0)) &&
        kiln_is_atom(kiln_tuple_get(to, 1))) {
        if (kiln_tuple_get(to, 1) == rt->node)
            return kiln_route(rt, kiln_tuple_get(to, 0), msg);
        return route_remote(rt, to, msg);
    }
    kiln_msg_free(msg);
    return KILN_EBADARG;
}

int kiln_rt_send(kiln_rt *rt, kiln_term to, kiln_msg *msg)
{
    if (!msg)
        return KILN_EINVAL;
    if (!rt) {
        kiln_msg_free(msg);
        return KILN_EINVAL;
    }
    /* Whatever the message was before (a received signal, a reply), it
     * leaves as a plain message. */
    msg->kind = KILN_MK_USER;
    msg->flags = 0;
    return kiln_route(rt, to, msg);
}

int kiln_send(kiln_term to, kiln_msg *msg)
{
    struct kiln_worker *w = kiln_current_worker();
    struct kiln_proc *p = w ? w->running : NULL;
    if (!p) {
        kiln_msg_free(msg);
        return KILN_ENOTPROC;
    }
    kiln_rt *rt = p->rt;
    /* Forwarding the borrowed message: the handler no longer owns it. */
    if (p->current == msg)
        p->current = NULL;
    int rc;
    if (msg && kiln_is_local_pid(to)) {
        /* The common case, without another look at the current worker:
         * a process run is already inside its worker's epoch section. */
        msg->kind = KILN_MK_USER;
        msg->flags = 0;
        rc = kiln_deliver_in_section(rt, to, msg);
        if (rc == KILN_ENOPROC)
            rc = KILN_OK; /* a dead pid is not an error */
    } else {
        rc = kiln_rt_send(rt, to, msg);
    }
    /* A function process that only sends never blocks, so without this it
     * would hold its worker until it is done: its receivers (often queued
     * on that same worker) wait while their mailboxes grow by millions of
     * messages, each a fresh page of memory, instead of being handled
     * while still in cache. Erlang charges reductions for a send for the
     * same reason. Behaviour handlers are bounded by batch_budget. */
    if ((p->flags & KILN_PF_FN) && ++w->run_sends >= rt->cfg.send_budget)
        kiln_sched_switch_out(p, KILN_V_YIELD_STACK);
    return rc;
}
