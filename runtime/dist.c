/* The runtime's side of distribution: the installed operations, and the
 * signals a node's connections inject for their peers' control messages. */
#include "alloc.h"
#include "dist_hooks.h"
#include "rt.h"

void kiln_rt_set_dist(kiln_rt *rt, const struct kiln_dist_ops *ops, void *ctx)
{
    if (!ops) {
        /* The context stays: a caller that already read the operations
         * may still be using it. The node waits out those callers
         * (kiln_epoch_synchronize) before it frees the context. */
        atomic_store_explicit(&rt->dist, NULL, memory_order_release);
        return;
    }
    /* ctx first: a reader that sees ops must see its context. */
    atomic_store_explicit(&rt->dist_ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&rt->dist, ops, memory_order_release);
}

const struct kiln_dist_ops *kiln_rt_dist(kiln_rt *rt, void **ctx)
{
    const struct kiln_dist_ops *d = atomic_load_explicit(&rt->dist, memory_order_acquire);
    if (ctx)
        *ctx = atomic_load_explicit(&rt->dist_ctx, memory_order_relaxed);
    return d;
}

kiln_term kiln_pid_node(kiln_term t)
{
    kiln_term node;
    uint32_t id, serial, creation;
    if (!kiln_is_box_of(t, KILN_SUB_EXT_PID) || kiln_get_ext_pid(t, &node, &id, &serial, &creation) != KILN_OK)
        return KILN_NONE;
    return node;
}

bool kiln_is_remote(kiln_rt *rt, kiln_term t)
{
    kiln_term node = KILN_NONE;
    uint32_t creation = 0;
    if (kiln_is_box_of(t, KILN_SUB_EXT_PID)) {
        uint32_t id, serial;
        kiln_get_ext_pid(t, &node, &id, &serial, &creation);
    } else if (kiln_is_ref(t)) {
        /* Every alias send asks: the node and creation straight from the
         * box (kiln_ref's layout), not a copy of all its words. */
        const kiln_term *p = kiln_box_ptr(t);
        return p[1] != rt->node || (uint32_t)p[2] != rt->creation;
    } else if (kiln_is_box_of(t, KILN_SUB_PORT)) {
        uint64_t id;
        kiln_get_port(t, &node, &id, &creation);
    } else {
        return false;
    }
    return node != rt->node || creation != rt->creation;
}

/* Build a signal from a remote sender and deliver it to a local process;
 * a dead target answers as it would a local sender (signal.c). */
static int inject(kiln_rt *rt, kiln_term to, enum kiln_msg_kind kind, kiln_term from, kiln_term aux,
                  kiln_term root)
{
    if (!kiln_is_local_pid(to))
        return KILN_EBADARG;
    kiln_msg *m = kiln_signal_new(kind, 16);
    if (!m)
        return KILN_ENOMEM;
    m->from = kiln_term_copy(m, from);
    m->aux = kiln_is_none(aux) ? KILN_NONE : kiln_term_copy(m, aux);
    m->root = kiln_is_none(root) ? KILN_NONE : kiln_term_copy(m, root);
    if (kiln_is_none(m->from) || (kiln_is_none(m->aux) && !kiln_is_none(aux)) ||
        (kiln_is_none(m->root) && !kiln_is_none(root))) {
        kiln_msg_free(m);
        return KILN_ENOMEM;
    }
    int rc = kiln_deliver_pid(rt, to, m);
    return rc == KILN_ENOPROC ? KILN_OK : rc;
}

int kiln_dist_in_link(kiln_rt *rt, kiln_term remote_from, kiln_term local_to)
{
    return inject(rt, local_to, KILN_MK_LINK, remote_from, KILN_NONE, KILN_NONE);
}

int kiln_dist_in_unlink(kiln_rt *rt, kiln_term remote_from, kiln_term local_to)
{
    return inject(rt, local_to, KILN_MK_UNLINK, remote_from, KILN_NONE, KILN_NONE);
}

int kiln_dist_in_exit(kiln_rt *rt, kiln_term remote_from, kiln_term local_to, kiln_term reason, bool exit2)
{
    return inject(rt, local_to, exit2 ? KILN_MK_EXIT2 : KILN_MK_EXIT, remote_from, KILN_NONE, reason);
}

int kiln_dist_in_monitor(kiln_rt *rt, kiln_term remote_from, kiln_term target, kiln_term ref)
{
    kiln_term name = KILN_NONE, pid = target;
    if (kiln_is_atom(target)) {
        name = target;
        pid = kiln_whereis(rt, target);
        if (kiln_is_none(pid)) {
            /* Not registered: DOWN noproc at once, naming the name. */
            void *ctx;
            const struct kiln_dist_ops *d = kiln_rt_dist(rt, &ctx);
            return d ? d->down(ctx, name, remote_from, ref, KILN_ATOM_NOPROC) : KILN_ENOTSUP;
        }
    }
    return inject(rt, pid, KILN_MK_MONITOR, remote_from, ref, name);
}

int kiln_dist_in_demonitor(kiln_rt *rt, kiln_term remote_from, kiln_term target, kiln_term ref)
{
    kiln_term pid = kiln_is_atom(target) ? kiln_whereis(rt, target) : target;
    if (kiln_is_none(pid))
        return KILN_OK;
    return inject(rt, pid, KILN_MK_DEMONITOR, remote_from, ref, KILN_NONE);
}

int kiln_dist_in_down(kiln_rt *rt, kiln_term what, kiln_term local_watcher, kiln_term ref, kiln_term reason)
{
    if (!kiln_is_local_pid(local_watcher))
        return KILN_EBADARG;
    kiln_msg *m = kiln_signal_new(KILN_MK_DOWN, 32);
    if (!m)
        return KILN_ENOMEM;
    m->aux = kiln_term_copy(m, ref);
    m->from = kiln_term_copy(m, what);
    kiln_term r = kiln_term_copy(m, reason);
    m->root = kiln_tuple(m, 5, KILN_ATOM_DOWN, m->aux, KILN_ATOM_PROCESS, m->from, r);
    if (kiln_is_none(m->root)) {
        kiln_msg_free(m);
        return KILN_ENOMEM;
    }
    int rc = kiln_deliver_pid(rt, local_watcher, m);
    return rc == KILN_ENOPROC ? KILN_OK : rc;
}

int kiln_dist_in_nodedown(kiln_rt *rt, kiln_term node, kiln_term local_pid)
{
    if (!kiln_is_atom(node) || !kiln_is_local_pid(local_pid))
        return KILN_EBADARG;
    kiln_msg *m = kiln_signal_new(KILN_MK_NODEDOWN, 0);
    if (!m)
        return KILN_ENOMEM;
    m->root = node;
    m->from = node;
    int rc = kiln_deliver_pid(rt, local_pid, m);
    return rc == KILN_ENOPROC ? KILN_OK : rc;
}
