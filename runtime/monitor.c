/* monitor/2 and demonitor/2. */
#include "alloc.h"
#include "dist_hooks.h"
#include "rt.h"

/* A monitor on another node: the entry names the remote pid, or for a
 * name the node atom (in pid) and the name; the distribution layer sends
 * MONITOR_P and later delivers the DOWN (or noconnection). */
static int monitor_remote(struct kiln_proc *p, kiln_term pid, kiln_term name, kiln_term node, uint64_t n,
                          kiln_term ref)
{
    void *ctx;
    const struct kiln_dist_ops *d = kiln_rt_dist(p->rt, &ctx);
    if (!d)
        return KILN_ENOTSUP;
    struct kiln_monitor mon = {n, kiln_is_none(pid) ? node : pid, name, KILN_NONE, NULL};
    if (!kiln_monitor_add(p, true, &mon))
        return KILN_ENOMEM;
    return d->monitor(ctx, p->pid, kiln_is_none(pid) ? name : pid, node, ref);
}

int kiln_monitor(kiln_term target, kiln_msg *ref_msg, kiln_term *ref)
{
    struct kiln_proc *p = kiln_current_proc();
    if (!p)
        return KILN_ENOTPROC;
    if (!ref_msg || !ref)
        return KILN_EINVAL;
    kiln_rt *rt = p->rt;
    kiln_term name = KILN_NONE, pid = target;
    if (kiln_is_tuple(target) && kiln_tuple_arity(target) == 2 && kiln_is_atom(kiln_tuple_get(target, 0)) &&
        kiln_is_atom(kiln_tuple_get(target, 1))) {
        kiln_term node = kiln_tuple_get(target, 1);
        if (node != rt->node) {
            uint64_t n = kiln_ref_next(rt);
            kiln_term r = kiln_ref_term(ref_msg, rt, n, KILN_NONE);
            if (kiln_is_none(r))
                return KILN_ENOMEM;
            *ref = r;
            return monitor_remote(p, KILN_NONE, kiln_tuple_get(target, 0), node, n, r);
        }
        target = kiln_tuple_get(target, 0);
    }
    if (kiln_is_atom(target)) {
        name = target;
        pid = kiln_whereis(rt, target);
    } else if (kiln_is_remote(rt, target) && kiln_is_pid(target)) {
        uint64_t n = kiln_ref_next(rt);
        kiln_term r = kiln_ref_term(ref_msg, rt, n, KILN_NONE);
        if (kiln_is_none(r))
            return KILN_ENOMEM;
        *ref = r;
        return monitor_remote(p, target, KILN_NONE, kiln_pid_node(target), n, r);
    } else if (!kiln_is_local_pid(target)) {
        return KILN_EBADARG;
    }
    uint64_t n = kiln_ref_next(rt);
    kiln_term r = kiln_ref_term(ref_msg, rt, n, KILN_NONE);
    if (kiln_is_none(r))
        return KILN_ENOMEM;
    struct kiln_monitor mon = {n, pid, name, KILN_NONE, NULL};
    if (!kiln_monitor_add(p, true, &mon))
        return KILN_ENOMEM;
    *ref = r;
    if (kiln_is_none(pid)) {
        /* An unregistered name: DOWN {Name, Node} noproc at once. */
        kiln_msg *tmp = kiln_msg_new_words(4);
        kiln_term obj = tmp ? kiln_tuple(tmp, 2, name, rt->node) : KILN_NONE;
        kiln_msg *down = kiln_is_none(obj) ? NULL : kiln_down_signal_new(rt, n, obj, KILN_ATOM_NOPROC);
        kiln_msg_free(tmp);
        if (!down)
            return KILN_ENOMEM;
        return kiln_proc_deliver(rt, p, down);
    }
    kiln_msg *sig = kiln_signal_new(KILN_MK_MONITOR, 8);
    if (!sig)
        return KILN_ENOMEM;
    sig->from = p->pid;
    sig->root = name;
    sig->aux = kiln_ref_term(sig, rt, n, KILN_NONE);
    /* A dead target answers with DOWN noproc (signal.c). */
    kiln_deliver_pid(rt, pid, sig);
    return KILN_OK;
}

static bool is_down_for(kiln_rt *rt, kiln_msg *m, uint64_t n)
{
    kiln_term t = m->root;
    uint64_t got;
    kiln_term apid;
    return m->kind == KILN_MK_USER && kiln_is_tuple(t) && kiln_tuple_arity(t) == 5 &&
           kiln_tuple_get(t, 0) == KILN_ATOM_DOWN &&
           kiln_ref_number(rt, kiln_tuple_get(t, 1), &got, &apid) && got == n;
}

int kiln_demonitor(kiln_term ref, bool flush)
{
    struct kiln_proc *p = kiln_current_proc();
    if (!p)
        return KILN_ENOTPROC;
    kiln_rt *rt = p->rt;
    uint64_t n;
    kiln_term apid;
    if (!kiln_ref_number(rt, ref, &n, &apid))
        return KILN_EBADARG;
    struct kiln_monitor mon;
    if (kiln_monitor_del(p, true, n, &mon)) {
        kiln_demonitor_target(p, &mon);
        kiln_monitor_release(&mon);
    }
    if (flush) {
        /* A DOWN that already became a message is removed; one still in
         * the inbox is dropped on arrival because the monitor is gone. The
         * inbox is not drained here: that would act on exit signals too,
         * and a process must not die inside a call that does not block
         * (its caller would lose whatever only it held). */
        kiln_msg *prev = NULL, *m = p->save_head;
        while (m) {
            kiln_msg *next = atomic_load_explicit(&m->next, memory_order_relaxed);
            if (is_down_for(rt, m, n)) {
                if (prev)
                    atomic_store_explicit(&prev->next, next, memory_order_relaxed);
                else
                    p->save_head = next;
                if (p->save_tail == m)
                    p->save_tail = prev;
                p->save_len--;
                kiln_proc_took(p);
                kiln_msg_free(m);
            } else {
                prev = m;
            }
            m = next;
        }
    }
    return KILN_OK;
}
