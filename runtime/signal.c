/* Signals: exit, link, unlink, monitor, demonitor, down, alias messages.
 * They travel through the mailbox with ordinary messages, so the order
 * between a sender's messages and its signals is kept (Erlang's signal
 * ordering guarantee), and the owner handles them as it drains its queue. */
#include <string.h>

#include "alloc.h"
#include "dist_hooks.h"
#include "io.h"
#include "rt.h"
#include "term_layout.h"

/* ---- small vectors ---- */

bool kiln_vec_grow(struct kiln_vec *v, size_t size)
{
    uint32_t ncap = v->cap ? v->cap * 2 : 4;
    void *n = kiln_realloc(v->items, (size_t)ncap * size);
    if (!n)
        return false;
    v->items = n;
    v->cap = ncap;
    return true;
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
    atomic_store_explicit(&e->nmonitors, e->monitors.len + e->call_monitoring, memory_order_relaxed);
    atomic_store_explicit(&e->nmonitored_by, e->monitored_by.len + (e->by_n != 0), memory_order_relaxed);
}

static int find_link(struct kiln_proc_ext *e, kiln_term pid)
{
    if (!e)
        return -1;
    struct kiln_link *l = e->links.items;
    for (uint32_t i = 0; i < e->links.len; i++)
        if (kiln_term_eq(l[i].pid, pid))
            return (int)i;
    return -1;
}

static int find_monitor(struct kiln_vec *v, uint64_t ref)
{
    struct kiln_monitor *m = v->items;
    for (uint32_t i = 0; i < v->len; i++)
        if (kiln_is_none(m[i].rref) && m[i].ref == ref)
            return (int)i;
    return -1;
}

static void involve(struct kiln_proc *p, kiln_term remote)
{
    void *ctx;
    const struct kiln_dist_ops *d = kiln_rt_dist(p->rt, &ctx);
    kiln_term node = kiln_is_atom(remote) ? remote : kiln_pid_node(remote);
    if (d && d->involve && !kiln_is_none(node))
        d->involve(ctx, node, p->pid);
}

bool kiln_link_add(struct kiln_proc *p, kiln_term pid)
{
    struct kiln_proc_ext *e = kiln_proc_ext(p);
    if (!e)
        return false;
    if (find_link(e, pid) >= 0)
        return true;
    struct kiln_link l = {pid, NULL};
    if (kiln_is_boxed(pid)) {
        /* A remote pid: the entry keeps its own copy. */
        l.store = kiln_msg_new_words(8);
        l.pid = l.store ? kiln_term_copy(l.store, pid) : KILN_NONE;
        if (kiln_is_none(l.pid)) {
            kiln_msg_free(l.store);
            return false;
        }
    }
    bool ok = kiln_vec_push(&e->links, &l, sizeof(l));
    if (!ok)
        kiln_msg_free(l.store);
    else if (l.store)
        involve(p, l.pid);
    publish_counts(e);
    return ok;
}

bool kiln_link_del(struct kiln_proc *p, kiln_term pid)
{
    struct kiln_proc_ext *e = p->ext;
    int i = find_link(e, pid);
    if (i < 0)
        return false;
    kiln_msg_free(((struct kiln_link *)e->links.items)[i].store);
    kiln_vec_remove(&e->links, (uint32_t)i, sizeof(struct kiln_link));
    publish_counts(e);
    return true;
}

void kiln_monitor_release(struct kiln_monitor *m)
{
    kiln_msg_free(m->store);
    m->store = NULL;
}

bool kiln_monitor_add(struct kiln_proc *p, bool mine, const struct kiln_monitor *m)
{
    struct kiln_proc_ext *e = kiln_proc_ext(p);
    if (!e)
        return false;
    if (!mine && m->ref && kiln_is_local_pid(m->pid) && kiln_is_none(m->name) && kiln_is_none(m->rref) &&
        kiln_by_slot_take(e, m->ref, m->pid))
        return true;
    struct kiln_monitor c = *m;
    c.store = NULL;
    if (kiln_is_boxed(c.pid) || kiln_is_boxed(c.rref)) {
        c.store = kiln_msg_new_words(16);
        if (!c.store)
            return false;
        c.pid = kiln_term_copy(c.store, m->pid);
        c.rref = kiln_term_copy(c.store, m->rref);
        if ((kiln_is_none(c.pid) && !kiln_is_none(m->pid)) || (kiln_is_none(c.rref) && !kiln_is_none(m->rref))) {
            kiln_msg_free(c.store);
            return false;
        }
    }
    bool ok = kiln_vec_push(mine ? &e->monitors : &e->monitored_by, &c, sizeof(c));
    if (!ok)
        kiln_msg_free(c.store);
    else if (kiln_is_boxed(c.pid) || (mine && kiln_is_atom(c.pid)))
        involve(p, c.pid); /* a remote pid, or the node of a remote name */
    publish_counts(e);
    return ok;
}

static void take_monitor(struct kiln_proc_ext *e, struct kiln_vec *v, int i, struct kiln_monitor *out)
{
    struct kiln_monitor *m = &((struct kiln_monitor *)v->items)[i];
    if (out)
        *out = *m;
    else
        kiln_msg_free(m->store);
    kiln_vec_remove(v, (uint32_t)i, sizeof(struct kiln_monitor));
    publish_counts(e);
}

bool kiln_monitor_del(struct kiln_proc *p, bool mine, uint64_t ref, struct kiln_monitor *out)
{
    struct kiln_proc_ext *e = p->ext;
    if (!e)
        return false;
    if (mine && ref == e->call_n && kiln_call_slot_unmonitor(e)) {
        if (out)
            *out = (struct kiln_monitor){ref, e->call_target, KILN_NONE, KILN_NONE, NULL};
        return true;
    }
    kiln_term by_pid = e->by_pid;
    if (!mine && kiln_by_slot_drop(e, ref)) {
        if (out)
            *out = (struct kiln_monitor){ref, by_pid, KILN_NONE, KILN_NONE, NULL};
        return true;
    }
    struct kiln_vec *v = mine ? &e->monitors : &e->monitored_by;
    int i = find_monitor(v, ref);
    if (i < 0)
        return false;
    take_monitor(e, v, i, out);
    return true;
}

bool kiln_monitor_del_rref(struct kiln_proc *p, kiln_term rref)
{
    struct kiln_proc_ext *e = p->ext;
    if (!e)
        return false;
    struct kiln_monitor *m = e->monitored_by.items;
    for (uint32_t i = 0; i < e->monitored_by.len; i++) {
        if (!kiln_is_none(m[i].rref) && kiln_term_eq(m[i].rref, rref)) {
            take_monitor(e, &e->monitored_by, (int)i, NULL);
            return true;
        }
    }
    return false;
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

/* {Name, Node} in a fresh message, for DOWNs of name monitors. */
static kiln_term name_node(kiln_msg **tmp, kiln_term name, kiln_term node)
{
    *tmp = kiln_msg_new_words(4);
    return *tmp ? kiln_tuple(*tmp, 2, name, node) : KILN_NONE;
}

/* What a dead process owes the senders of signals it will never handle. */
void kiln_signal_answer_dead(kiln_rt *rt, kiln_term dead_pid, kiln_msg *m)
{
    void *ctx;
    const struct kiln_dist_ops *d = kiln_rt_dist(rt, &ctx);
    switch (m->kind) {
    case KILN_MK_LINK:
        /* link/1 to a process that is gone: the linker gets noproc. */
        if (kiln_is_local_pid(m->from))
            kiln_send_signal(rt, m->from, kiln_exit_signal_new(KILN_MK_EXIT, dead_pid, KILN_ATOM_NOPROC));
        else if (d)
            d->exit(ctx, dead_pid, m->from, KILN_ATOM_NOPROC, false);
        break;
    case KILN_MK_MONITOR: {
        kiln_msg *tmp = NULL;
        /* Monitored by name: the DOWN names {Name, Node}. */
        kiln_term obj = kiln_is_none(m->root) ? dead_pid : name_node(&tmp, m->root, rt->node);
        uint64_t ref;
        kiln_term apid;
        if (kiln_is_none(obj))
            ;
        else if (kiln_is_local_pid(m->from)) {
            if (kiln_ref_number(rt, m->aux, &ref, &apid))
                kiln_send_signal(rt, m->from, kiln_down_signal_new(rt, ref, obj, KILN_ATOM_NOPROC));
        } else if (d) {
            d->down(ctx, obj, m->from, m->aux, KILN_ATOM_NOPROC);
        }
        kiln_msg_free(tmp);
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
    if (e && n == e->call_n)
        return true;
    int i = kiln_alias_index(e, n);
    if (i < 0)
        return false;
    if (consume && (((uint64_t *)e->aliases.items)[i] >> 63))
        kiln_vec_remove(&e->aliases, (uint32_t)i, sizeof(uint64_t));
    return true;
}

static bool exiting(struct kiln_proc *p)
{
    return (atomic_load_explicit(&p->flags, memory_order_relaxed) & KILN_PF_EXITING) != 0;
}

/* Ends the process, unless it is ending already: a terminate callback that
 * blocks can meet exit signals, and the first reason stands. */
static kiln_msg *die(struct kiln_proc *p, kiln_msg *m, kiln_term reason)
{
    if (exiting(p)) {
        kiln_msg_free(m);
        return NULL;
    }
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
    atomic_fetch_add_explicit(&p->pushed, 1, memory_order_relaxed);
    return m;
}

/* A reply made for a local call that reached another alias of ours (one
 * made with kiln_alias, passed on in a From): as Erlang delivers it. */
static kiln_msg *as_reply_message(struct kiln_proc *p, kiln_msg *m)
{
    kiln_term ref = kiln_ref_term(m, p->rt, m->aux, p->pid);
    kiln_term tag = kiln_cons(m, KILN_ATOM_ALIAS, ref);
    kiln_term t = kiln_tuple2(m, tag, m->root);
    if (kiln_is_none(t)) {
        kiln_proc_took(p);
        kiln_msg_free(m);
        return NULL;
    }
    m->root = t;
    m->flags &= (uint16_t)~KILN_MF_REPLY;
    return m;
}

static bool on_node(kiln_term t, kiln_term node)
{
    return kiln_is_atom(t) ? t == node : kiln_pid_node(t) == node;
}

/* The connection to node went down: everything that crosses it fires with
 * noconnection, as if each remote process had died with that reason. */
static void nodedown(struct kiln_proc *p, kiln_term node)
{
    kiln_rt *rt = p->rt;
    struct kiln_proc_ext *e = p->ext;
    if (!e)
        return;
    struct kiln_monitor *mine = e->monitors.items;
    for (uint32_t i = e->monitors.len; i-- > 0;) {
        if (!on_node(mine[i].pid, node))
            continue;
        struct kiln_monitor mon;
        take_monitor(e, &e->monitors, (int)i, &mon);
        kiln_msg *tmp = NULL;
        kiln_term what = kiln_is_atom(mon.pid) ? name_node(&tmp, mon.name, mon.pid) : mon.pid;
        kiln_msg *down = kiln_is_none(what) ? NULL : kiln_down_signal_new(rt, mon.ref, what, KILN_ATOM_NOCONNECTION);
        kiln_msg_free(tmp);
        kiln_monitor_release(&mon);
        if (down) {
            down->kind = KILN_MK_USER;
            atomic_fetch_add_explicit(&p->pushed, 1, memory_order_relaxed);
            kiln_save_append(p, down);
        }
    }
    struct kiln_monitor *by = e->monitored_by.items;
    for (uint32_t i = e->monitored_by.len; i-- > 0;)
        if (on_node(by[i].pid, node))
            take_monitor(e, &e->monitored_by, (int)i, NULL);
    bool trapping = (atomic_load_explicit(&p->flags, memory_order_relaxed) & KILN_PF_TRAP_EXIT) != 0;
    struct kiln_link *links = e->links.items;
    for (uint32_t i = e->links.len; i-- > 0;) {
        if (!on_node(links[i].pid, node))
            continue;
        kiln_msg *x = kiln_exit_signal_new(KILN_MK_EXIT, links[i].pid, KILN_ATOM_NOCONNECTION);
        kiln_msg_free(links[i].store);
        kiln_vec_remove(&e->links, i, sizeof(struct kiln_link));
        publish_counts(e);
        links = e->links.items;
        if (!x)
            continue;
        if (!trapping && !exiting(p)) {
            x->root = KILN_ATOM_NOCONNECTION;
            kiln_proc_exit(p, x);
        }
        x->root = kiln_tuple(x, 3, KILN_ATOM_EXIT, x->from, KILN_ATOM_NOCONNECTION);
        x->kind = KILN_MK_USER;
        atomic_fetch_add_explicit(&p->pushed, 1, memory_order_relaxed);
        kiln_save_append(p, x);
    }
}

/* The two kinds a sender may hand over (kiln_proc_take_handed) besides
 * the drain; neither ends the process. */
static inline kiln_msg *user_in(struct kiln_proc *p, kiln_msg *m)
{
    if (m->flags & KILN_MF_MONITOR) {
        /* A call that carries its monitor (call.c); from is a local pid. */
        struct kiln_monitor mon = {m->aux, m->from, KILN_NONE, KILN_NONE, NULL};
        m->flags &= (uint16_t)~KILN_MF_MONITOR;
        if ((!p->ext || !kiln_by_slot_take(p->ext, m->aux, m->from)) && !kiln_monitor_add(p, false, &mon))
            kiln_send_signal(p->rt, m->from, kiln_down_signal_new(p->rt, mon.ref, p->pid, kiln_atom_c("system_limit")));
    }
    return m;
}

static inline kiln_msg *alias_in(struct kiln_proc *p, kiln_msg *m)
{
    if (alias_active(p, m->aux, true))
        return (m->flags & KILN_MF_REPLY) && m->aux != p->ext->call_n ? as_reply_message(p, m) : m;
    kiln_proc_took(p);
    kiln_msg_free(m);
    return NULL;
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
        return user_in(p, m);
    case KILN_MK_TIMEOUT:
    case KILN_MK_WAKE:
        return m;
    case KILN_MK_ALIAS_MSG:
        return alias_in(p, m);
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
        return die(p, m, m->root);
    case KILN_MK_EXIT2:
        if (m->root == KILN_ATOM_KILL)
            return die(p, m, KILN_ATOM_KILLED);
        if (trapping)
            return as_exit_message(p, m);
        if (m->root == KILN_ATOM_NORMAL) {
            /* exit(self(), normal) does end the caller. */
            if (m->from == p->pid)
                return die(p, m, KILN_ATOM_NORMAL);
            kiln_msg_free(m);
            return NULL;
        }
        return die(p, m, m->root);
    case KILN_MK_STOP:
        return die(p, m, m->root);
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
        uint64_t n = 0;
        kiln_term apid;
        /* A local watcher's ref is one of ours, known by its number; a
         * remote watcher's is kept whole, to name it in the DOWN. */
        bool local = kiln_ref_number(rt, m->aux, &n, &apid);
        struct kiln_monitor mon = {n, m->from, m->root, local ? KILN_NONE : m->aux, NULL};
        if (!kiln_monitor_add(p, false, &mon) && local)
            kiln_send_signal(rt, m->from, kiln_down_signal_new(rt, n, p->pid, kiln_atom_c("system_limit")));
        kiln_msg_free(m);
        return NULL;
    }
    case KILN_MK_DEMONITOR: {
        uint64_t n;
        kiln_term apid;
        if (kiln_ref_number(rt, m->aux, &n, &apid))
            kiln_monitor_del(p, false, n, NULL);
        else
            kiln_monitor_del_rref(p, m->aux);
        kiln_msg_free(m);
        return NULL;
    }
    case KILN_MK_NODEDOWN: {
        /* Freed first: nodedown may end the process and never return. */
        kiln_term node = m->root;
        kiln_msg_free(m);
        nodedown(p, node);
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
        atomic_fetch_add_explicit(&p->pushed, 1, memory_order_relaxed);
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

void kiln_proc_trim_oldest(struct kiln_proc *p)
{
    /* DROP_OLDEST bound: drop from the front until the queue fits. */
    while (p->max_mailbox && p->overflow == KILN_OVERFLOW_DROP_OLDEST &&
           kiln_proc_queued(p) > p->max_mailbox) {
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
        kiln_proc_took(p);
        kiln_msg_free(m);
    }
}

void kiln_proc_take_handed(struct kiln_proc *p, kiln_msg *m)
{
    /* p cannot run until its claimer schedules it, so its side is the
     * claimer's meanwhile. The message was not counted as pushed: the
     * taken count is wound back instead, as the owner would (its reader
     * sees the message queued, and the take that follows evens it out).
     */
    atomic_store_explicit(&p->popped, atomic_load_explicit(&p->popped, memory_order_relaxed) - 1,
                          memory_order_release);
    m = m->kind == KILN_MK_USER ? user_in(p, m) : alias_in(p, m);
    if (m)
        kiln_save_append(p, m);
}

void kiln_proc_drain_queue(struct kiln_proc *p)
{
    kiln_msg *m;
    bool emptied = false;
    /* Stopping at the pop that emptied the queue saves the empty pop after
     * it, two of the six pops of a local call. */
    while (!emptied && (m = kiln_mb_pop_wait(&p->mb, &p->mbc, &emptied))) {
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
        kiln_proc_took(p);
        return m;
    }
}

/* ---- on exit ---- */

void kiln_demonitor_target(struct kiln_proc *p, const struct kiln_monitor *mon)
{
    kiln_rt *rt = p->rt;
    if (kiln_is_none(mon->pid))
        return; /* an unregistered name: nobody holds the other side */
    kiln_msg *dm = kiln_signal_new(KILN_MK_DEMONITOR, 8);
    if (!dm)
        return;
    dm->from = p->pid;
    /* The DEMONITOR must carry the very reference the MONITOR did: a
     * call's monitor reference is also its reply alias (call.c), which
     * adds words, and a remote node matches references whole. */
    kiln_term alias = mon->ref == p->ext->call_n || kiln_alias_index(p->ext, mon->ref) >= 0 ? p->pid : KILN_NONE;
    dm->aux = kiln_ref_term(dm, rt, mon->ref, alias);
    if (kiln_is_local_pid(mon->pid)) {
        kiln_send_signal(rt, mon->pid, dm);
        return;
    }
    void *ctx;
    const struct kiln_dist_ops *d = kiln_rt_dist(rt, &ctx);
    if (d) {
        /* Remote by name: pid holds the node atom (monitor.c). */
        kiln_term node = kiln_is_atom(mon->pid) ? mon->pid : kiln_pid_node(mon->pid);
        kiln_term target = kiln_is_atom(mon->pid) ? mon->name : mon->pid;
        d->demonitor(ctx, p->pid, target, node, dm->aux);
    }
    kiln_msg_free(dm);
}

void kiln_signals_on_exit(struct kiln_proc *p, kiln_term reason)
{
    kiln_rt *rt = p->rt;
    struct kiln_proc_ext *e = p->ext;
    if (!e)
        return;
    void *ctx;
    const struct kiln_dist_ops *d = kiln_rt_dist(rt, &ctx);
    struct kiln_link *links = e->links.items;
    for (uint32_t i = 0; i < e->links.len; i++) {
        if (kiln_is_local_pid(links[i].pid))
            kiln_send_signal(rt, links[i].pid, kiln_exit_signal_new(KILN_MK_EXIT, p->pid, reason));
        else if (d)
            d->exit(ctx, p->pid, links[i].pid, reason, false);
        kiln_msg_free(links[i].store);
    }
    struct kiln_monitor *by = e->monitored_by.items;
    for (uint32_t i = 0; i < e->monitored_by.len; i++) {
        kiln_msg *tmp = NULL;
        kiln_term obj = kiln_is_none(by[i].name) ? p->pid : name_node(&tmp, by[i].name, rt->node);
        if (kiln_is_none(obj))
            ;
        else if (kiln_is_none(by[i].rref))
            kiln_send_signal(rt, by[i].pid, kiln_down_signal_new(rt, by[i].ref, obj, reason));
        else if (d)
            d->down(ctx, kiln_is_none(by[i].name) ? p->pid : by[i].name, by[i].pid, by[i].rref, reason);
        kiln_msg_free(tmp);
        kiln_msg_free(by[i].store);
    }
    if (e->by_n)
        kiln_send_signal(rt, e->by_pid, kiln_down_signal_new(rt, e->by_n, p->pid, reason));
    e->by_n = 0;
    struct kiln_monitor *mine = e->monitors.items;
    for (uint32_t i = 0; i < e->monitors.len; i++) {
        kiln_demonitor_target(p, &mine[i]);
        kiln_msg_free(mine[i].store);
    }
    struct kiln_monitor call;
    if (e->call_monitoring && kiln_monitor_del(p, true, e->call_n, &call))
        kiln_demonitor_target(p, &call);
    e->call_n = 0;
    e->links.len = e->monitored_by.len = e->monitors.len = e->aliases.len = 0;
    publish_counts(e);
}
