/* link/1, unlink/1 and exit/2, to local and (through the distribution
 * layer) remote processes. */
#include "alloc.h"
#include "dist_hooks.h"
#include "rt.h"

int kiln_link(kiln_term pid)
{
    struct kiln_proc *p = kiln_current_proc();
    if (!p)
        return KILN_ENOTPROC;
    if (pid == p->pid)
        return KILN_OK;
    kiln_rt *rt = p->rt;
    if (kiln_is_pid(pid) && kiln_is_remote(rt, pid)) {
        void *ctx;
        const struct kiln_dist_ops *d = kiln_rt_dist(rt, &ctx);
        if (!d)
            return KILN_ENOTSUP;
        /* A peer that cannot be reached answers with noconnection. */
        if (!kiln_link_add(p, pid))
            return KILN_ENOMEM;
        return d->link(ctx, p->pid, pid);
    }
    if (!kiln_is_local_pid(pid))
        return KILN_EBADARG;
    if (!kiln_is_alive(rt, pid)) {
        /* Erlang: noproc error, or an 'EXIT' message when trapping. */
        if (!(atomic_load_explicit(&p->flags, memory_order_relaxed) & KILN_PF_TRAP_EXIT))
            return KILN_ENOPROC;
        kiln_msg *m = kiln_msg_new_words(8);
        if (!m)
            return KILN_ENOMEM;
        m->root = kiln_tuple(m, 3, KILN_ATOM_EXIT, pid, KILN_ATOM_NOPROC);
        return kiln_proc_deliver(rt, p, m);
    }
    if (!kiln_link_add(p, pid))
        return KILN_ENOMEM;
    kiln_msg *sig = kiln_signal_new(KILN_MK_LINK, 4);
    if (!sig) {
        kiln_link_del(p, pid);
        return KILN_ENOMEM;
    }
    sig->from = p->pid;
    /* If it died since we looked, the dead side answers with noproc. */
    kiln_deliver_pid(rt, pid, sig);
    return KILN_OK;
}

int kiln_unlink(kiln_term pid)
{
    struct kiln_proc *p = kiln_current_proc();
    if (!p)
        return KILN_ENOTPROC;
    if (!kiln_is_pid(pid))
        return KILN_EBADARG;
    if (!kiln_link_del(p, pid))
        return KILN_OK;
    if (!kiln_is_local_pid(pid)) {
        void *ctx;
        const struct kiln_dist_ops *d = kiln_rt_dist(p->rt, &ctx);
        return d ? d->unlink(ctx, p->pid, pid) : KILN_OK;
    }
    kiln_msg *sig = kiln_signal_new(KILN_MK_UNLINK, 4);
    if (!sig)
        return KILN_ENOMEM;
    sig->from = p->pid;
    kiln_deliver_pid(p->rt, pid, sig);
    return KILN_OK;
}

int kiln_rt_exit(kiln_rt *rt, kiln_term pid, kiln_term reason)
{
    if (!rt)
        return KILN_EINVAL;
    kiln_term self = KILN_NONE;
    struct kiln_proc *p = kiln_current_proc();
    if (p && p->rt == rt)
        self = p->pid;
    if (kiln_is_pid(pid) && kiln_is_remote(rt, pid)) {
        void *ctx;
        kiln_epoch_enter(rt); /* see route_remote in send.c */
        const struct kiln_dist_ops *d = kiln_rt_dist(rt, &ctx);
        int rc = d ? d->exit(ctx, self, pid, reason, true) : KILN_ENOTSUP;
        kiln_epoch_exit(rt);
        return rc;
    }
    if (!kiln_is_local_pid(pid))
        return KILN_EBADARG;
    kiln_msg *sig = kiln_exit_signal_new(KILN_MK_EXIT2, self, reason);
    if (!sig)
        return KILN_ENOMEM;
    int rc = kiln_deliver_pid(rt, pid, sig);
    return rc == KILN_ENOPROC ? KILN_OK : rc;
}

int kiln_exit(kiln_term pid, kiln_term reason)
{
    kiln_rt *rt = kiln_current_rt();
    if (!rt)
        return KILN_ENOTPROC;
    return kiln_rt_exit(rt, pid, reason);
}
