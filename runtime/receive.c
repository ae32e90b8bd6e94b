/* Selective receive. Messages the matcher passes over stay in the save
 * list in arrival order; a later receive scans them again, then the new
 * arrivals. A timeout is a timer that sends the process a TIMEOUT signal
 * carrying the receive's generation, so a late one is recognised and
 * dropped. */
#include "alloc.h"
#include "rt.h"

static void unlink_saved(struct kiln_proc *p, kiln_msg *prev, kiln_msg *m)
{
    kiln_msg *next = atomic_load_explicit(&m->next, memory_order_relaxed);
    if (prev)
        atomic_store_explicit(&prev->next, next, memory_order_relaxed);
    else
        p->save_head = next;
    if (p->save_tail == m)
        p->save_tail = prev;
    p->save_len--;
}

int kiln_proc_receive(struct kiln_proc *p, kiln_msg_match_fn match, void *arg, int64_t timeout_ms, kiln_msg **out)
{
    kiln_rt *rt = p->rt;
    uint32_t gen = ++p->recv_gen;
    kiln_timer timer = 0;
    if (p->max_mailbox) {
        kiln_proc_drain(p);
        kiln_proc_trim(p);
    }
    kiln_msg *prev = NULL;
    kiln_msg *m = p->save_head;
    for (;;) {
        while (m) {
            kiln_msg *next = atomic_load_explicit(&m->next, memory_order_relaxed);
            if (m->kind == KILN_MK_TIMEOUT) {
                bool ours = m->aux32 == gen;
                unlink_saved(p, prev, m);
                kiln_msg_free(m);
                if (ours)
                    return KILN_ETIMEOUT; /* the timer fired: nothing to cancel */
                m = next;
                continue;
            }
            if (match(m, arg)) {
                unlink_saved(p, prev, m);
                if (m->kind != KILN_MK_WAKE)
                    atomic_fetch_sub_explicit(&p->queued, 1, memory_order_relaxed);
                if (timer)
                    kiln_cancel_timer(rt, timer, NULL);
                *out = m;
                return KILN_OK;
            }
            prev = m;
            m = next;
        }
        kiln_proc_drain(p);
        m = prev ? atomic_load_explicit(&prev->next, memory_order_relaxed) : p->save_head;
        if (m)
            continue;
        if (timeout_ms == 0)
            return KILN_ETIMEOUT;
        if (timeout_ms > 0 && !timer) {
            int rc = kiln_timer_receive_timeout(rt, p->pid, gen, (uint64_t)timeout_ms, &timer);
            if (rc != KILN_OK)
                return rc;
        }
        kiln_sched_switch_out(p, KILN_V_BLOCKED);
        m = prev ? atomic_load_explicit(&prev->next, memory_order_relaxed) : p->save_head;
    }
}

struct user_match {
    kiln_match_fn fn;
    void *arg;
};

static bool match_user(kiln_msg *m, void *arg)
{
    struct user_match *u = arg;
    if (m->kind != KILN_MK_USER && m->kind != KILN_MK_ALIAS_MSG)
        return false;
    return !u->fn || u->fn(m->root, u->arg);
}

int kiln_receive(kiln_match_fn match, void *arg, int64_t timeout_ms, kiln_msg **out)
{
    struct kiln_proc *p = kiln_current_proc();
    if (!p)
        return KILN_ENOTPROC;
    if (!out)
        return KILN_EINVAL;
    struct user_match u = {match, arg};
    return kiln_proc_receive(p, match_user, &u, timeout_ms, out);
}

static bool match_nothing(kiln_msg *m, void *arg)
{
    (void)m;
    (void)arg;
    return false;
}

int kiln_sleep(uint64_t ms)
{
    struct kiln_proc *p = kiln_current_proc();
    if (!p)
        return KILN_ENOTPROC;
    if (ms == 0)
        return kiln_yield();
    kiln_msg *never;
    int64_t t = ms > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)ms;
    int rc = kiln_proc_receive(p, match_nothing, NULL, t, &never);
    return rc == KILN_ETIMEOUT ? KILN_OK : rc;
}

int kiln_yield(void)
{
    struct kiln_proc *p = kiln_current_proc();
    if (!p)
        return KILN_ENOTPROC;
    kiln_sched_switch_out(p, KILN_V_YIELD_STACK);
    return KILN_OK;
}
