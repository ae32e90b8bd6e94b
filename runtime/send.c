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
    kiln_rt *rt = kiln_current_rt();
    if (!rt) {
        kiln_msg_free(msg);
        return KILN_ENOTPROC;
    }
    struct kiln_proc *p = kiln_current_proc();
    /* Forwarding the borrowed message: the handler no longer owns it. */
    if (p->current == msg)
        p->current = NULL;
    return kiln_rt_send(rt, to, msg);
}
