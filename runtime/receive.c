/* Selective receive. Messages the matcher passes over stay in the save
 * list in arrival order; a later receive scans them again, then the new
 * arrivals.
 *
 * Timeouts: a process has at most one receive timer. It is armed lazily
 * and left armed when a receive ends early: the next receive (a call
 * loop's, typically, with the same timeout) finds it due no later than its
 * own deadline and keeps it. When it fires before the current deadline,
 * the process re-arms for the rest. So a steady stream of calls with
 * timeouts does no timer work per call, and pending timers stay bounded
 * by the number of processes. */
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

void kiln_recv_timer_fired(struct kiln_proc *p, const kiln_msg *m)
{
    if (m->aux32 == p->recv_gen)
        p->recv_timer = 0;
}

void kiln_recv_timer_cancel(struct kiln_proc *p)
{
    if (p->recv_timer && kiln_cancel_timer(p->rt, p->recv_timer, NULL) == KILN_OK)
        p->recv_timer = 0;
}

/* Make sure a TIMEOUT arrives no later than deadline. */
static int arm(struct kiln_proc *p, uint64_t deadline, uint64_t now)
{
    if (p->recv_timer && p->recv_timer_at <= deadline)
        return KILN_OK;
    /* If the old one fired meanwhile its TIMEOUT is stale: the generation
     * moves on so it will not be taken for the new one. */
    if (p->recv_timer)
        kiln_cancel_timer(p->rt, p->recv_timer, NULL);
    p->recv_gen++;
    p->recv_timer_at = deadline;
    return kiln_timer_receive_timeout(p->rt, p->pid, p->recv_gen, deadline - now, &p->recv_timer);
}

/* skip_saved: the message wanted cannot be among those already saved
 * (kiln_proc_receive_new), so the scan starts after them. */
static int receive(struct kiln_proc *p, kiln_msg_match_fn match, void *arg, int64_t timeout_ms, bool skip_saved,
                   kiln_msg **out)
{
    uint64_t deadline = 0;
    if (p->max_mailbox) {
        kiln_proc_drain(p);
        kiln_proc_trim(p);
        /* That drain may have saved the very message waited for (a fast
         * WAKE), so nothing saved can be skipped; the bound keeps the
         * scan short. */
        skip_saved = false;
    }
    kiln_msg *prev = NULL;
    kiln_msg *m = p->save_head;
    if (skip_saved) {
        prev = p->save_tail;
        m = NULL;
        /* A TIMEOUT of the current timer could sit among the skipped
         * messages if it is due: then start a fresh timer generation.
         * One not yet due is kept (consecutive calls share it). */
        if (timeout_ms > 0 && p->recv_timer && kiln_now_ms() >= p->recv_timer_at) {
            kiln_cancel_timer(p->rt, p->recv_timer, NULL);
            p->recv_timer = 0;
        }
    }
    for (;;) {
        while (m) {
            kiln_msg *next = atomic_load_explicit(&m->next, memory_order_relaxed);
            if (m->kind == KILN_MK_TIMEOUT) {
                kiln_recv_timer_fired(p, m);
                unlink_saved(p, prev, m);
                kiln_msg_free(m);
                if (deadline && kiln_now_ms() >= deadline)
                    return KILN_ETIMEOUT;
                m = next;
                continue;
            }
            if (match(m, arg)) {
                unlink_saved(p, prev, m);
                if (m->kind != KILN_MK_WAKE)
                    kiln_proc_took(p);
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
        if (timeout_ms > 0) {
            uint64_t now = kiln_now_ms();
            if (!deadline)
                deadline = now + (uint64_t)timeout_ms;
            if (now >= deadline)
                return KILN_ETIMEOUT;
            int rc = arm(p, deadline, now);
            if (rc != KILN_OK)
                return rc;
        }
        kiln_sched_switch_out(p, KILN_V_BLOCKED);
        m = prev ? atomic_load_explicit(&prev->next, memory_order_relaxed) : p->save_head;
    }
}

int kiln_proc_receive(struct kiln_proc *p, kiln_msg_match_fn match, void *arg, int64_t timeout_ms, kiln_msg **out)
{
    return receive(p, match, arg, timeout_ms, false, out);
}

int kiln_proc_receive_new(struct kiln_proc *p, kiln_msg_match_fn match, void *arg, int64_t timeout_ms,
                          kiln_msg **out)
{
    return receive(p, match, arg, timeout_ms, true, out);
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

static bool match_wake(kiln_msg *m, void *arg)
{
    return m->kind == KILN_MK_WAKE && m->aux == *(const uint64_t *)arg;
}

int kiln_wait_wake(struct kiln_proc *p, uint64_t id, int64_t timeout_ms, kiln_msg **out)
{
    /* A process drains its mailbox only inside a receive, and it started
     * the operation after its last one: every message saved so far came
     * before the operation, so none is its WAKE. Skipping them keeps a
     * connection writer with thousands of frames queued from rescanning
     * them on every write (Erlang's receive markers do the same). */
    return kiln_proc_receive_new(p, match_wake, &id, timeout_ms, out);
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
