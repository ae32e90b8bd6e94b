/* Processes: spawn, delivery into mailboxes, the behaviour batch loop, the
 * body of function processes, and exit. */
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "io.h"
#include "rt.h"

struct kiln_proc_ext *kiln_proc_ext(struct kiln_proc *p)
{
    struct kiln_proc_ext *e = atomic_load_explicit(&p->ext, memory_order_acquire);
    if (e)
        return e;
    /* register/2 from another thread may create it too: first one wins. */
    struct kiln_proc_ext *n = kiln_calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    n->name = KILN_NONE;
    n->io_fd = -1;
    n->io_owned_fd = -1;
    if (atomic_compare_exchange_strong_explicit(&p->ext, &e, n, memory_order_acq_rel, memory_order_acquire))
        return n;
    kiln_free(n);
    return e;
}

void kiln_proc_lock(struct kiln_proc *p)
{
    while (atomic_flag_test_and_set_explicit(&p->lock, memory_order_acquire))
        kiln_cpu_relax();
}

void kiln_proc_unlock(struct kiln_proc *p) { atomic_flag_clear_explicit(&p->lock, memory_order_release); }

/* ---- delivery ---- */

static bool counts_as_message(const kiln_msg *m)
{
    return m->kind == KILN_MK_USER || m->kind == KILN_MK_ALIAS_MSG;
}

/* Inside one of rt's process runs: the worker's epoch section is open. */
static bool in_run_of(const struct kiln_worker *w, const kiln_rt *rt) { return w && w->rt == rt && w->running; }

/* p was idle and whoever made it runnable schedules it. Forced inline:
 * as a call it cost the one-way send 6 instructions (perf/icount). */
static inline __attribute__((always_inline)) void wake(kiln_rt *rt, struct kiln_proc *p)
{
    struct kiln_worker *w = kiln_current_worker();
    bool from_proc = in_run_of(w, rt);
    if (!from_proc)
        kiln_sched_ready(rt, p, false);
    else if (atomic_load_explicit(&p->flags, memory_order_relaxed) & KILN_PF_DEFER)
        kiln_sched_requeue(w, p);
    else
        kiln_sched_ready_next(w, p);
}

/* p sleeps on an empty queue and its wake-up is ours: the message goes
 * where p's drain would put it, with no push for p to pop (mailbox.h): a
 * request to an idle server, a reply to a blocked caller. Out of line:
 * inside kiln_proc_deliver it made every push save more registers (+20
 * instructions per one-way message). */
static __attribute__((noinline)) int hand_over(kiln_rt *rt, struct kiln_proc *p, kiln_msg *m)
{
    kiln_proc_take_handed(p, m);
    wake(rt, p);
    return KILN_OK;
}

int kiln_proc_deliver(kiln_rt *rt, struct kiln_proc *p, kiln_msg *m)
{
    if (kiln_mb_is_idle(&p->mb) && counts_as_message(m) && !p->max_mailbox &&
        kiln_mb_claim_idle(&p->mb, &p->mbc))
        return hand_over(rt, p, m);
    if (counts_as_message(m)) {
        uint32_t max = p->max_mailbox;
        if (max && kiln_proc_queued(p) >= max) {
            if (p->overflow == KILN_OVERFLOW_FAIL) {
                kiln_msg_free(m);
                return KILN_EMAILBOX_FULL;
            }
            if (p->overflow == KILN_OVERFLOW_DROP_NEWEST) {
                kiln_msg_free(m);
                return KILN_OK;
            }
            /* DROP_OLDEST: the owner trims the front when it drains. */
        }
        atomic_fetch_add_explicit(&p->pushed, 1, memory_order_relaxed);
    }
    switch (kiln_mb_push(&p->mb, m)) {
    case KILN_MB_WAS_IDLE:
        wake(rt, p);
        break;
    case KILN_MB_WAS_ACTIVE:
    case KILN_MB_WAS_DEAD: /* reclaimed with the process after its grace period */
        break;
    }
    return KILN_OK;
}

int kiln_deliver_in_section(kiln_rt *rt, kiln_term pid, kiln_msg *m)
{
    struct kiln_proc *p = kiln_ptab_lookup(rt, pid);
    if (p)
        return kiln_proc_deliver(rt, p, m);
    kiln_signal_answer_dead(rt, pid, m);
    return KILN_ENOPROC;
}

int kiln_deliver_pid(kiln_rt *rt, kiln_term pid, kiln_msg *m)
{
    /* A process run is inside its worker's epoch section already; only
     * other callers need one of their own. */
    if (in_run_of(kiln_current_worker(), rt))
        return kiln_deliver_in_section(rt, pid, m);
    kiln_epoch_enter(rt);
    int rc = kiln_deliver_in_section(rt, pid, m);
    kiln_epoch_exit(rt);
    return rc;
}

/* ---- spawn ---- */

static int spawn_common(kiln_rt *rt, const kiln_behaviour *b, void (*fn)(void *), void *arg,
                        const kiln_spawn_opts *opts, kiln_term *pid_out)
{
    if (!rt || (!b && !fn) || (b && !b->handle))
        return KILN_EINVAL;
    if (atomic_load(&rt->closing))
        return KILN_ESTOPPED;
    struct kiln_proc *parent = kiln_current_proc();
    if (opts && (opts->link || opts->monitor) && (!parent || parent->rt != rt))
        return KILN_ENOTPROC;
    if (opts && opts->monitor && (!opts->monitor_ref || !opts->monitor_ref_msg))
        return KILN_EINVAL;
    kiln_term name = KILN_NONE;
    if (opts && opts->register_as) {
        name = kiln_atom_c(opts->register_as);
        if (kiln_is_none(name))
            return KILN_EINVAL;
    }

    struct kiln_proc *p = kiln_calloc(1, sizeof(*p));
    if (!p)
        return KILN_ENOMEM;
    kiln_mb_init(&p->mb, &p->mbc);
    p->rt = rt;
    atomic_flag_clear(&p->lock);
    p->beh = b;
    p->fn = fn;
    if (fn) {
        p->flags |= KILN_PF_FN;
        p->state = arg;
    } else {
        p->init_arg = arg;
    }
    if (opts) {
        if (opts->trap_exit)
            p->flags |= KILN_PF_TRAP_EXIT;
        if (opts->max_mailbox) {
            p->max_mailbox = opts->max_mailbox > UINT32_MAX ? UINT32_MAX : (uint32_t)opts->max_mailbox;
            p->overflow = (uint8_t)opts->overflow;
        }
    }
    int rc = kiln_ptab_add(rt, p);
    if (rc != KILN_OK) {
        kiln_free(p);
        return rc;
    }
    if (!kiln_is_none(name)) {
        rc = kiln_register(rt, name, p->pid);
        if (rc != KILN_OK) {
            kiln_ptab_remove(rt, p);
            kiln_free(p->ext);
            kiln_free(p);
            return rc;
        }
    }
    /* Link and monitor before the child can run: nobody else sees it yet,
     * so both sides are written directly. */
    if (opts && opts->link && (!kiln_link_add(parent, p->pid) || !kiln_link_add(p, parent->pid)))
        goto oom;
    if (opts && opts->monitor) {
        uint64_t ref = kiln_ref_next(rt);
        struct kiln_monitor mine = {ref, p->pid, KILN_NONE, KILN_NONE, NULL},
                            theirs = {ref, parent->pid, KILN_NONE, KILN_NONE, NULL};
        kiln_term rt_ref = kiln_ref_term(opts->monitor_ref_msg, rt, ref, KILN_NONE);
        if (kiln_is_none(rt_ref) || !kiln_monitor_add(parent, true, &mine) || !kiln_monitor_add(p, false, &theirs))
            goto oom;
        *opts->monitor_ref = rt_ref;
    }
    atomic_fetch_add(&rt->live, 1);
    atomic_fetch_add_explicit(&rt->spawned, 1, memory_order_relaxed);
    if (pid_out)
        *pid_out = p->pid;
    kiln_sched_ready(rt, p, false);
    return KILN_OK;

oom:
    /* Undo: the parent may hold a half-made link or monitor entry. */
    if (parent) {
        kiln_link_del(parent, p->pid);
        struct kiln_proc_ext *pe = parent->ext;
        struct kiln_monitor *mons = pe ? pe->monitors.items : NULL;
        for (uint32_t i = 0; pe && i < pe->monitors.len; i++)
            if (mons[i].pid == p->pid && kiln_monitor_del(parent, true, mons[i].ref, NULL))
                break;
    }
    if (!kiln_is_none(name))
        kiln_registry_drop(rt, name, p->pid);
    kiln_ptab_remove(rt, p);
    if (p->ext) {
        kiln_vec_free(&p->ext->links);
        kiln_vec_free(&p->ext->monitored_by);
        kiln_free(p->ext);
    }
    kiln_free(p);
    return KILN_ENOMEM;
}

int kiln_spawn(kiln_rt *rt, const kiln_behaviour *b, void *arg, const kiln_spawn_opts *opts, kiln_term *pid)
{
    return spawn_common(rt, b, NULL, arg, opts, pid);
}

int kiln_spawn_fn(kiln_rt *rt, void (*fn)(void *arg), void *arg, const kiln_spawn_opts *opts, kiln_term *pid)
{
    if (!fn)
        return KILN_EINVAL;
    return spawn_common(rt, NULL, fn, arg, opts, pid);
}

/* ---- running ---- */

static kiln_msg *reason_msg_atom(kiln_term atom)
{
    kiln_msg *m = kiln_msg_new_words(4);
    if (m)
        m->root = atom;
    return m;
}

static _Noreturn void exit_with_atom(struct kiln_proc *p, kiln_term atom)
{
    kiln_proc_exit(p, reason_msg_atom(atom));
}

enum kiln_verdict kiln_proc_run_batch(struct kiln_proc *p)
{
    if (!(p->flags & KILN_PF_STARTED)) {
        if (p->beh->init) {
            int rc = p->beh->init(p->init_arg, &p->state);
            if (rc != KILN_OK) {
                /* A failed init gets no terminate. */
                p->state = NULL;
                kiln_msg *r = kiln_msg_new_words(8);
                if (r)
                    r->root = kiln_tuple(r, 2, kiln_atom_c("init_failed"), kiln_small(rc));
                kiln_proc_exit(p, r);
            }
        } else {
            p->state = p->init_arg;
        }
        p->flags |= KILN_PF_STARTED;
        if (p->flags & KILN_PF_STOP) {
            /* init called kiln_stop (OTP's {stop, Reason}): end now. */
            kiln_msg *r = p->exit_reason;
            p->exit_reason = NULL;
            kiln_proc_exit(p, r ? r : reason_msg_atom(KILN_ATOM_NORMAL));
        }
    }
    unsigned budget = p->rt->cfg.batch_budget;
    for (unsigned i = 0; i < budget; i++) {
        kiln_msg *m = kiln_proc_next_message(p);
        if (!m)
            return KILN_V_IDLE;
        p->current = m;
        kiln_action a = p->beh->handle(p->state, m);
        /* The handler may have blocked and resumed: p is still p, but any
         * worker-local state must be read again. */
        if (p->current == m)
            kiln_msg_free(m);
        p->current = NULL;
        if (a == KILN_STOP || (p->flags & KILN_PF_STOP)) {
            kiln_msg *r = p->exit_reason;
            p->exit_reason = NULL;
            if (!r)
                r = reason_msg_atom(KILN_ATOM_NORMAL);
            kiln_proc_exit(p, r);
        }
    }
    return KILN_V_YIELD;
}

void kiln_proc_fiber_main(void *arg)
{
    struct kiln_proc *p = arg;
    kiln_fiber_started(p->fiber);
    p->flags |= KILN_PF_STARTED;
    p->fn(p->state);
    exit_with_atom(p, KILN_ATOM_NORMAL);
}

kiln_msg *kiln_msg_take(kiln_msg *msg)
{
    struct kiln_proc *p = kiln_current_proc();
    if (p && p->current == msg)
        p->current = NULL;
    return msg;
}

/* ---- exit ---- */

_Noreturn void kiln_proc_exit(struct kiln_proc *p, kiln_msg *reason_msg)
{
    kiln_rt *rt = p->rt;
    if (!reason_msg)
        reason_msg = reason_msg_atom(KILN_ATOM_NORMAL);
    /* Out of memory even for the reason: report it as killed, which needs no arena. */
    kiln_term reason = reason_msg ? reason_msg->root : KILN_ATOM_KILLED;
    p->flags |= KILN_PF_EXITING;
    atomic_store_explicit(&p->status, KILN_PS_EXITING, memory_order_relaxed);

    if (p->current) {
        kiln_msg_free(p->current);
        p->current = NULL;
    }
    /* A process killed while its init blocks gets terminate only if init
     * had already set its state: the user decides when a state is whole
     * enough to be freed. */
    if (p->beh && p->beh->terminate && ((p->flags & KILN_PF_STARTED) || p->state))
        p->beh->terminate(p->state, reason);

    kiln_proc_lock(p);
    kiln_term name = p->ext ? p->ext->name : KILN_NONE;
    if (p->ext)
        p->ext->name = KILN_NONE;
    kiln_proc_unlock(p);
    if (!kiln_is_none(name))
        kiln_registry_drop(rt, name, p->pid);

    kiln_recv_timer_cancel(p);
    kiln_io_abandon(p);
    kiln_ptab_remove(rt, p);
    kiln_mb_mark_dead(&p->mb);
    /* Whatever was queued before the mark is answered now; later arrivals
     * are answered when the struct is reclaimed (epoch.c). */
    kiln_msg *m;
    while ((m = kiln_mb_pop_wait(&p->mb, &p->mbc, NULL)))
        kiln_signal_answer_dead(rt, p->pid, m);
    while ((m = p->save_head)) {
        p->save_head = atomic_load_explicit(&m->next, memory_order_relaxed);
        kiln_signal_answer_dead(rt, p->pid, m);
    }
    p->save_tail = NULL;
    kiln_signals_on_exit(p, reason);
    kiln_msg_free(reason_msg);
    kiln_msg_free(p->exit_reason);
    p->exit_reason = NULL;

    atomic_fetch_add_explicit(&rt->exited, 1, memory_order_relaxed);
    if (atomic_fetch_sub(&rt->live, 1) == 1) {
        pthread_mutex_lock(&rt->live_lock);
        pthread_cond_broadcast(&rt->live_cond);
        pthread_mutex_unlock(&rt->live_lock);
    }
    kiln_epoch_retire_proc(rt, p);

    kiln_sched_switch_out(p, KILN_V_EXITED);
    /* Never resumed. */
    abort();
}

void kiln_proc_free(struct kiln_proc *p)
{
    if (p->ext) {
        kiln_vec_free(&p->ext->links);
        kiln_vec_free(&p->ext->monitors);
        kiln_vec_free(&p->ext->monitored_by);
        kiln_vec_free(&p->ext->aliases);
        kiln_free(p->ext);
    }
    kiln_free(p);
}

void kiln_proc_defer_wakeups(void)
{
    struct kiln_proc *p = kiln_current_proc();
    if (p)
        atomic_fetch_or_explicit(&p->flags, KILN_PF_DEFER, memory_order_relaxed);
}

/* ---- small queries ---- */

kiln_term kiln_self(void)
{
    struct kiln_proc *p = kiln_current_proc();
    return p ? p->pid : KILN_NONE;
}

kiln_rt *kiln_current_rt(void)
{
    struct kiln_proc *p = kiln_current_proc();
    return p ? p->rt : NULL;
}

bool kiln_trap_exit(bool on)
{
    struct kiln_proc *p = kiln_current_proc();
    if (!p)
        return false;
    bool old = (p->flags & KILN_PF_TRAP_EXIT) != 0;
    if (on)
        p->flags |= KILN_PF_TRAP_EXIT;
    else
        p->flags &= ~KILN_PF_TRAP_EXIT;
    return old;
}

kiln_action kiln_stop(kiln_term reason)
{
    struct kiln_proc *p = kiln_current_proc();
    if (!p)
        return KILN_STOP;
    kiln_msg *r = kiln_msg_new(64);
    if (r)
        r->root = kiln_term_copy(r, reason);
    if (r && kiln_is_none(r->root))
        r->root = KILN_ATOM_NORMAL;
    if (p->flags & KILN_PF_FN)
        kiln_proc_exit(p, r);
    kiln_msg_free(p->exit_reason);
    p->exit_reason = r;
    p->flags |= KILN_PF_STOP;
    return KILN_STOP;
}

bool kiln_is_alive(kiln_rt *rt, kiln_term pid)
{
    kiln_epoch_enter(rt);
    bool alive = kiln_ptab_lookup(rt, pid) != NULL;
    kiln_epoch_exit(rt);
    return alive;
}

int kiln_process_info(kiln_rt *rt, kiln_term pid, kiln_proc_info *out)
{
    memset(out, 0, sizeof(*out));
    kiln_epoch_enter(rt);
    struct kiln_proc *p = kiln_ptab_lookup(rt, pid);
    if (!p) {
        kiln_epoch_exit(rt);
        return KILN_ENOPROC;
    }
    /* A snapshot, as Erlang's own process_info is: every field read here is
     * an atomic the owner keeps current, or guarded by the process lock. */
    uint32_t st = atomic_load_explicit(&p->status, memory_order_relaxed);
    out->status = (kiln_proc_status)(st & 0xFFu);
    out->has_stack = (st & KILN_PS_STACK_BIT) != 0 || (kiln_current_proc() == p && p->fiber);
    out->message_queue_len = kiln_proc_queued(p);
    out->trap_exit = (atomic_load_explicit(&p->flags, memory_order_relaxed) & KILN_PF_TRAP_EXIT) != 0;
    out->memory = sizeof(*p);
    out->registered_name = KILN_NONE;
    struct kiln_proc_ext *e = atomic_load_explicit(&p->ext, memory_order_acquire);
    if (e) {
        out->links = atomic_load_explicit(&e->nlinks, memory_order_relaxed);
        out->monitors = atomic_load_explicit(&e->nmonitors, memory_order_relaxed);
        out->monitored_by = atomic_load_explicit(&e->nmonitored_by, memory_order_relaxed);
        out->memory += sizeof(*e);
    }
    kiln_proc_lock(p);
    if (e)
        out->registered_name = e->name;
    kiln_proc_unlock(p);
    if (out->has_stack)
        out->memory += rt->cfg.stack_size;
    kiln_epoch_exit(rt);
    return KILN_OK;
}
