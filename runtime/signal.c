/* Signals: exit, link, unlink, monitor, demonitor, down, alias messages.
 * They travel through the mailbox with ordinary messages, so the order
 * between a sender's messages and its signals is kept (Erlang's signal
 * ordering guarantee), and the owner handles them as it drains its queue. */
#include <string.h>

#include "alloc.h"
#include "io.h"
#include "rt.h"

/* ---- small vectors ---- */

bool kiln_vec_push(struct kiln_vec *v, const void *item, size_t size)
{
    if (v->len == v->cap) {
        uint32_t ncap = v->cap ? v->cap * 2 : 4;
        void *n = kiln_realloc(v->items, (size_t)ncap * size);
        if (!n)
            return false;
        v->items = n;
        v->cap = ncap;
    }
    memcpy((char *)v->items + (size_t)v->len * size, item, size);
    v->len++;
    return true;
}

void kiln_vec_remove(struct kiln_vec *v, uint32_t i, size_t size)
{
    /* Order does not matter in these sets: move the last one in. */
    v->len--;
    if (i != v->len)
        memcpy((char *)v->items + (size_t)i * size, (char *)v->items + (size_t)v->len * size, size);
}

void kiln_vec_free(struct kiln_vec *v)
{
    kiln_free(v->items);
    v->items = NULL;
    v->len = v->cap = 0;
}

static void publish_counts(struct kiln_proc_ext *e)
{
    atomic_store_explicit(&e->nlinks, e->links.len, memory_order_relaxed);
    atomic_store_explicit(&e->nmonitors, e->monitors.len, memory_order_relaxed);
    atomic_store_explicit(&e->nmonitored_by, e->monitored_by.len, memory_order_relaxed);
}

static int find_link(struct kiln_proc_ext *e, kiln_term pid)
{
    if (!e)
        return -1;
    kiln_term *l = e->links.items;
    for (uint32_t i = 0; i < e->links.len; i++)
        if (kiln_term_eq(l[i], pid))
            return (int)i;
    return -1;
}

static int find_monitor(struct kiln_vec *v, uint64_t ref)
{
    struct kiln_monitor *m = v->items;
    for (uint32_t i = 0; i < v->len; i++)
        if (m[i].ref == ref)
            return (int)i;
    return -1;
}

bool kiln_link_add(struct kiln_proc *p, kiln_term pid)
{
    struct kiln_proc_ext *e = kiln_proc_ext(p);
    if (!e)
        return false;
    if (find_link(e, pid) >= 0)
        return true;
    bool ok = kiln_vec_push(&e->links, &pid, sizeof(pid));
    publish_counts(e);
    return ok;
}

bool kiln_link_del(struct kiln_proc *p, kiln_term pid)
{
    struct kiln_proc_ext *e = p->ext;
    int i = find_link(e, pid);
    if (i < 0)
        return false;
    kiln_vec_remove(&e->links, (uint32_t)i, sizeof(kiln_term));
    publish_counts(e);
    return true;
}

bool kiln_monitor_add(struct kiln_proc *p, bool mine, const struct kiln_monitor *m)
{
    struct kiln_proc_ext *e = kiln_proc_ext(p);
    if (!e)
        return false;
    bool ok = kiln_vec_push(mine ? &e->monitors : &e->monitored_by, m, sizeof(*m));
    publish_counts(e);
    return ok;
}

bool kiln_monitor_del(struct kiln_proc *p, bool mine, uint64_t ref, struct kiln_monitor *out)
{
    struct kiln_proc_ext *e = p->ext;
    if (!e)
        return false;
    struct kiln_vec *v = mine ? &e->monitors : &e->monitored_by;
    int i = find_monitor(v, ref);
    if (i < 0)
        return false;
    if (out)
        *out = ((struct kiln_monitor *)v->items)[i];
    kiln_vec_remove(v, (uint32_t)i, sizeof(struct kiln_monitor));
    publish_counts(e);
    return true;
}

/* ---- building signals ---- */

kiln_msg *kiln_exit_signal_new(enum kiln_msg_kind kind, kiln_term from, kiln_term reason)
{
    /* Room for the reason and for the {'EXIT', From, Reason} tuple the
     * receiver makes when it traps exits. */
    kiln_msg *m = kiln_signal_new(kind, 16);
    if (!m)
        return NULL;
    /* A signal sent from outside any process has no sender (KILN_NONE). */
    m->from = kiln_is_none(from) ? KILN_NONE : kiln_term_copy(m, from);
    m->root = kiln_term_copy(m, reason);
    if (kiln_is_none(m->root) || (kiln_is_none(m->from) && !kiln_is_none(from))) {
        kiln_msg_free(m);
        return NULL;
    }
    return m;
}

kiln_msg *kiln_down_signal_new(kiln_rt *rt, uint64_t ref, kiln_term from, kiln_term reason)
{
    kiln_msg *m = kiln_signal_new(KILN_MK_DOWN, 32);
    if (!m)
        return NULL;
    m->aux = kiln_ref_term(m, rt, ref, KILN_NONE);
    m->from = kiln_term_copy(m, from);
    kiln_term r = kiln_term_copy(m, reason);
    m->root = kiln_tuple(m, 5, KILN_ATOM_DOWN, m->aux, KILN_ATOM_PROCESS, m->from, r);
    if (kiln_is_none(m->root)) {
        kiln_msg_free(m);
        return NULL;
    }
    return m;
}

int kiln_send_signal(kiln_rt *rt, kiln_term to, kiln_msg *sig)
{
    if (!sig)
        return KILN_ENOMEM;
    return kiln_deliver_pid(rt, to, sig);
}

/* What a dead process owes the senders of signals it will never handle. */
void kiln_signal_answer_dead(kiln_rt *rt, kiln_term dead_pid, kiln_msg *m)
{
    switch (m->kind) {
    case KILN_MK_LINK:
        /* link/1 to a process that is gone: the linker gets noproc. */
        kiln_send_signal(rt, m->from, kiln_exit_signal_new(KILN_MK_EXIT, dead_pid, KILN_ATOM_NOPROC));
        break;
    case KILN_MK_MONITOR: {
        uint64_t ref;
        kiln_term alias_pid;
        if (kiln_ref_number(rt, m->aux, &ref, &alias_pid)) {
            kiln_term obj = dead_pid;
            kiln_msg *tmp = NULL;
            if (!kiln_is_none(m->root)) {
                /* Monitored by name: DOWN names {Name, Node}. */
                tmp = kiln_msg_new_words(4);
                obj = tmp ? kiln_tuple(tmp, 2, m->root, rt->node) : KILN_NONE;
            }
            if (!kiln_is_none(obj))
                kiln_send_signal(rt, m->from, kiln_down_signal_new(rt, ref, obj, KILN_ATOM_NOPROC));
            kiln_msg_free(tmp);
        }
        break;
    }
    case KILN_MK_USER:
        /* A call whose monitor never got established: the caller needs its DOWN. */
        if (m->flags & KILN_MF_MONITOR)
            kiln_send_signal(rt, m->from, kiln_down_signal_new(rt, m->aux, dead_pid, KILN_ATOM_NOPROC));
        break;
    case KILN_MK_WAKE:
        kiln_io_drop_wake(m);
        break;
    default: /* messages and other signals: nothing is owed */
        break;
    }
    kiln_msg_free(m);
}

/* ---- the owner's side ---- */

static bool alias_active(struct kiln_proc *p, uint64_t n, bool consume)
{
    struct kiln_proc_ext *e = p->ext;
    if (!e)
        return false;
    uint64_t *a = e->aliases.items;
    for (uint32_t i = 0; i < e->aliases.len; i++) {
        if ((a[i] & ~(1ull << 63)) == n) {
            if (consume && (a[i] >> 63))
                kiln_vec_remove(&e->aliases, i, sizeof(uint64_t));
            return true;
        }
    }
    return false;
}

static _Noreturn void die(struct kiln_proc *p, kiln_msg *m, kiln_term reason)
{
    m->root = reason;
    kiln_proc_exit(p, m);
}

static kiln_msg *as_exit_message(struct kiln_proc *p, kiln_msg *m)
{
    kiln_term from = kiln_is_none(m->from) ? KILN_ATOM_UNDEFINED : m->from;
    kiln_term t = kiln_tuple(m, 3, KILN_ATOM_EXIT, from, m->root);
    if (kiln_is_none(t)) {
        kiln_msg_free(m);
        return NULL;
    }
    m->root = t;
    m->kind = KILN_MK_USER;
    atomic_fetch_add_explicit(&p->queued, 1, memory_order_relaxed);
    return m;
}

/* Handle one entry taken from the mailbox. Returns the message if user
 * code should see it (user messages, trapped exits, DOWNs, live alias
 * messages, timeouts and wakes for receive), NULL if it was consumed.
 * May end the process (never returns then). */
static kiln_msg *handle_incoming(struct kiln_proc *p, kiln_msg *m)
{
    kiln_rt *rt = p->rt;
    bool trapping = (atomic_load_explicit(&p->flags, memory_order_relaxed) & KILN_PF_TRAP_EXIT) != 0;
    switch ((enum kiln_msg_kind)m->kind) {
    case KILN_MK_USER:
        if (m->flags & KILN_MF_MONITOR) {
            /* A call that carries its monitor (call.c). */
            struct kiln_monitor mon = {m->aux, m->from, KILN_NONE};
            m->flags &= (uint16_t)~KILN_MF_MONITOR;
            if (!kiln_monitor_add(p, false, &mon))
                kiln_send_signal(rt, m->from, kiln_down_signal_new(rt, mon.ref, p->pid, kiln_atom_c("system_limit")));
        }
        return m;
    case KILN_MK_TIMEOUT:
    case KILN_MK_WAKE:
        return m;
    case KILN_MK_ALIAS_MSG: {
        if (alias_active(p, m->aux, true))
            return m;
        atomic_fetch_sub_explicit(&p->queued, 1, memory_order_relaxed);
        kiln_msg_free(m);
        return NULL;
    }
    case KILN_MK_EXIT:
        /* From a link: ignored if we unlinked meanwhile (the unlink race). */
        if (!kiln_link_del(p, m->from)) {
            kiln_msg_free(m);
            return NULL;
        }
        if (trapping)
            return as_exit_message(p, m);
        if (m->root == KILN_ATOM_NORMAL) {
            kiln_msg_free(m);
            return NULL;
        }
        die(p, m, m->root);
    case KILN_MK_EXIT2:
        if (m->root == KILN_ATOM_KILL)
            die(p, m, KILN_ATOM_KILLED);
        if (trapping)
            return as_exit_message(p, m);
        if (m->root == KILN_ATOM_NORMAL) {
            /* exit(self(), normal) does end the caller. */
            if (m->from == p->pid)
                die(p, m, KILN_ATOM_NORMAL);
            kiln_msg_free(m);
            return NULL;
        }
        die(p, m, m->root);
    case KILN_MK_STOP:
        die(p, m, m->root);
    case KILN_MK_LINK:
        if (!kiln_link_add(p, m->from))
            kiln_send_signal(rt, m->from, kiln_exit_signal_new(KILN_MK_EXIT, p->pid, kiln_atom_c("system_limit")));
        kiln_msg_free(m);
        return NULL;
    case KILN_MK_UNLINK:
        kiln_link_del(p, m->from);
        kiln_msg_free(m);
        return NULL;
    case KILN_MK_MONITOR: {
        uint64_t n;
        kiln_term apid;
        if (kiln_ref_number(rt, m->aux, &n, &apid)) {
            struct kiln_monitor mon = {n, m->from, m->root};
            if (!kiln_monitor_add(p, false, &mon))
                kiln_send_signal(rt, m->from, kiln_down_signal_new(rt, n, p->pid, kiln_atom_c("system_limit")));
        }
        kiln_msg_free(m);
        return NULL;
    }
    case KILN_MK_DEMONITOR: {
        uint64_t n;
        kiln_term apid;
        if (kiln_ref_number(rt, m->aux, &n, &apid))
            kiln_monitor_del(p, false, n, NULL);
        kiln_msg_free(m);
        return NULL;
    }
    case KILN_MK_DOWN: {
        uint64_t n;
        kiln_term apid;
        /* A DOWN for a monitor we already dropped (demonitor) is stale. */
        if (!kiln_ref_number(rt, m->aux, &n, &apid) || !kiln_monitor_del(p, true, n, NULL)) {
            kiln_msg_free(m);
            return NULL;
        }
        m->kind = KILN_MK_USER;
        atomic_fetch_add_explicit(&p->queued, 1, memory_order_relaxed);
        return m;
    }
    }
    kiln_msg_free(m);
    return NULL;
}

void kiln_save_append(struct kiln_proc *p, kiln_msg *m)
{
    atomic_store_explicit(&m->next, NULL, memory_order_relaxed);
    if (p->save_tail)
        atomic_store_explicit(&p->save_tail->next, m, memory_order_relaxed);
    else
        p->save_head = m;
    p->save_tail = m;
    p->save_len++;
}

static bool is_countable(const kiln_msg *m)
{
    return m->kind == KILN_MK_USER || m->kind == KILN_MK_ALIAS_MSG;
}

void kiln_proc_trim(struct kiln_proc *p)
{
    /* DROP_OLDEST bound: drop from the front until the queue fits. */
    while (p->max_mailbox && p->overflow == KILN_OVERFLOW_DROP_OLDEST &&
           atomic_load_explicit(&p->queued, memory_order_relaxed) > p->max_mailbox) {
        kiln_msg *prev = NULL, *m = p->save_head;
        while (m && !is_countable(m)) {
            prev = m;
            m = atomic_load_explicit(&m->next, memory_order_relaxed);
        }
        if (!m)
            return;
        kiln_msg *next = atomic_load_explicit(&m->next, memory_order_relaxed);
        if (prev)
            atomic_store_explicit(&prev->next, next, memory_order_relaxed);
        else
            p->save_head = next;
        if (p->save_tail == m)
            p->save_tail = prev;
        p->save_len--;
        atomic_fetch_sub_explicit(&p->queued, 1, memory_order_relaxed);
        kiln_msg_free(m);
    }
}

void kiln_proc_drain(struct kiln_proc *p)
{
    kiln_msg *m;
    while ((m = kiln_mb_pop_wait(&p->mb))) {
        m = handle_incoming(p, m);
        if (m)
            kiln_save_append(p, m);
    }
}

kiln_msg *kiln_proc_next_message(struct kiln_proc *p)
{
    if (!p->save_head) {
        kiln_proc_drain(p);
        /* Trimming here, not in drain: a receive in progress holds a
         * position in the save list that trimming could remove. */
        kiln_proc_trim(p);
    }
    for (;;) {
        kiln_msg *m = p->save_head;
        if (!m)
            return NULL;
        p->save_head = atomic_load_explicit(&m->next, memory_order_relaxed);
        if (!p->save_head)
            p->save_tail = NULL;
        p->save_len--;
        if (m->kind == KILN_MK_TIMEOUT || m->kind == KILN_MK_WAKE) {
            /* Left over from a receive that already finished. */
            if (m->kind == KILN_MK_TIMEOUT)
                kiln_recv_timer_fired(p, m);
            else
                kiln_io_drop_wake(m);
            kiln_msg_free(m);
            continue;
        }
        atomic_fetch_sub_explicit(&p->queued, 1, memory_order_relaxed);
        return m;
    }
}

/* ---- on exit ---- */

void kiln_signals_on_exit(struct kiln_proc *p, kiln_term reason)
{
    kiln_rt *rt = p->rt;
    struct kiln_proc_ext *e = p->ext;
    if (!e)
        return;
    kiln_term *links = e->links.items;
    for (uint32_t i = 0; i < e->links.len; i++)
        kiln_send_signal(rt, links[i], kiln_exit_signal_new(KILN_MK_EXIT, p->pid, reason));
    struct kiln_monitor *by = e->monitored_by.items;
    for (uint32_t i = 0; i < e->monitored_by.len; i++) {
        kiln_term obj = p->pid;
        kiln_msg *tmp = NULL;
        if (!kiln_is_none(by[i].name)) {
            tmp = kiln_msg_new_words(4);
            obj = tmp ? kiln_tuple(tmp, 2, by[i].name, rt->node) : KILN_NONE;
        }
        if (!kiln_is_none(obj))
            kiln_send_signal(rt, by[i].pid, kiln_down_signal_new(rt, by[i].ref, obj, reason));
        kiln_msg_free(tmp);
    }
    struct kiln_monitor *mine = e->monitors.items;
    for (uint32_t i = 0; i < e->monitors.len; i++) {
        kiln_msg *d = kiln_signal_new(KILN_MK_DEMONITOR, 8);
        if (!d)
            continue;
        d->from = p->pid;
        d->aux = kiln_ref_term(d, rt, mine[i].ref, KILN_NONE);
        kiln_send_signal(rt, mine[i].pid, d);
    }
    e->links.len = e->monitored_by.len = e->monitors.len = e->aliases.len = 0;
    publish_counts(e);
}
