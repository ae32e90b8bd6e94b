/* Calls, in the gen_server protocol so that the same bytes work across
 * nodes: the caller monitors the server with a reference that is also an
 * alias, sends {'$gen_call', {Self, [alias|Ref]}, Request}, and waits for
 * {[alias|Ref], Reply} or the DOWN. Dropping the alias on timeout is what
 * keeps a late reply out of the caller's mailbox.
 *
 * Locally the monitor rides on the request (KILN_MF_MONITOR) instead of a
 * separate MONITOR signal, and a server that replies itself drops the
 * monitor on its side and says so on the reply (KILN_MF_DEMONITORED), so
 * the common call costs two messages, as it would without monitoring. */
#include "alloc.h"
#include "dist_hooks.h"
#include "rt.h"
#include "term_layout.h"

struct call_wait {
    kiln_rt *rt;
    uint64_t n;
};

static bool tag_is_ours(kiln_rt *rt, kiln_term tag, uint64_t n)
{
    uint64_t got;
    kiln_term apid;
    if (kiln_is_cons(tag) && kiln_hd(tag) == KILN_ATOM_ALIAS)
        tag = kiln_tl(tag);
    return kiln_ref_number(rt, tag, &got, &apid) && got == n;
}

static bool match_reply(kiln_msg *m, void *arg)
{
    struct call_wait *cw = arg;
    if (m->flags & KILN_MF_REPLY)
        return m->aux == cw->n;
    if (m->kind != KILN_MK_USER && m->kind != KILN_MK_ALIAS_MSG)
        return false;
    kiln_term t = m->root;
    if (!kiln_is_tuple(t))
        return false;
    size_t n = kiln_tuple_arity(t);
    if (n == 2)
        return tag_is_ours(cw->rt, kiln_tuple_get(t, 0), cw->n);
    if (n == 5 && kiln_tuple_get(t, 0) == KILN_ATOM_DOWN)
        return tag_is_ours(cw->rt, kiln_tuple_get(t, 1), cw->n);
    return false;
}

/* Drop the call's monitor and alias; tell the target (DEMONITOR) unless
 * target is KILN_NONE because it already dropped its side. */
static void forget(struct kiln_proc *p, uint64_t n, kiln_term target)
{
    struct kiln_proc_ext *e = p->ext;
    if (n == e->call_n) {
        /* The DEMONITOR names the alias: sent before call_n is cleared. */
        if (kiln_call_slot_unmonitor(e) && !kiln_is_none(target))
            kiln_demonitor_target(p, &(struct kiln_monitor){n, e->call_target, KILN_NONE, KILN_NONE, NULL});
        e->call_n = 0;
        return;
    }
    struct kiln_monitor mon;
    if (kiln_monitor_del(p, true, n, &mon)) {
        if (!kiln_is_none(target))
            kiln_demonitor_target(p, &mon);
        kiln_monitor_release(&mon);
    }
    int i = kiln_alias_index(p->ext, n);
    if (i >= 0)
        kiln_vec_remove(&p->ext->aliases, (uint32_t)i, sizeof(uint64_t));
}

static int noproc(kiln_msg **reason)
{
    if (reason) {
        *reason = kiln_msg_new_words(4);
        if (*reason)
            (*reason)->root = KILN_ATOM_NOPROC;
    }
    return KILN_ENOPROC;
}

/* The answer to a call: the reply, or the DOWN's reason. */
static int finish(struct kiln_proc *p, uint64_t n, kiln_term target, kiln_msg *m, kiln_msg **reply,
                  kiln_msg **reason)
{
    kiln_term t = m->root;
    if (!(m->flags & KILN_MF_REPLY) && kiln_tuple_arity(t) == 5) {
        /* DOWN: the monitor is already gone; drop the alias. */
        forget(p, n, target);
        kiln_term why = kiln_tuple_get(t, 4);
        int rc = why == KILN_ATOM_NOPROC ? KILN_ENOPROC : KILN_EEXIT;
        if (reason) {
            m->root = why;
            m->kind = KILN_MK_USER;
            *reason = m;
        } else {
            kiln_msg_free(m);
        }
        return rc;
    }
    /* A local server that replied itself dropped its side of the monitor. */
    forget(p, n, (m->flags & KILN_MF_DEMONITORED) ? KILN_NONE : target);
    if (!(m->flags & KILN_MF_REPLY))
        m->root = kiln_tuple_get(t, 1);
    m->kind = KILN_MK_USER;
    m->flags = 0;
    *reply = m;
    return KILN_OK;
}

/* {'$gen_call', {Self, [alias|Ref]}, Request} around the request, Ref
 * being n and an alias of p, in one piece of the request's arena (14
 * words; KILN_CALL_ROOM leaves room for them). KILN_NONE when out of
 * memory; *ref (if not NULL) gets Ref. */
static kiln_term call_term(kiln_msg *request, struct kiln_proc *p, uint64_t n, kiln_term *ref)
{
    uint64_t *w = kiln_is_none(request->root) ? NULL : kiln_arena_alloc(request, 14);
    if (!w)
        return KILN_NONE;
    w[5] = KILN_ATOM_ALIAS;
    w[6] = kiln_ref_put(w, p->rt->node, p->rt->creation, n, p->pid);
    if (ref)
        *ref = w[6];
    w[7] = kiln_make_header(2, KILN_SUB_TUPLE);
    w[8] = p->pid;
    w[9] = kiln_cons_term(w + 5);
    w[10] = kiln_make_header(3, KILN_SUB_TUPLE);
    w[11] = KILN_ATOM_GEN_CALL;
    w[12] = kiln_box_term(w + 7);
    w[13] = request->root;
    return kiln_box_term(w + 10);
}

/* The call's alias and monitor in the process's vectors (where the call
 * slot is taken, or for a remote call). False when out of memory, with
 * nothing left behind. */
static bool remember(struct kiln_proc *p, struct kiln_proc_ext *e, const struct kiln_monitor *mon)
{
    uint64_t alias_entry = mon->ref;
    if (!kiln_vec_push(&e->aliases, &alias_entry, sizeof(alias_entry)))
        return false;
    if (!kiln_monitor_add(p, true, mon)) {
        forget(p, mon->ref, KILN_NONE);
        return false;
    }
    return true;
}

/* A call to a process on another node: as OTP does it, a monitor whose
 * reference is also the reply alias, sent through the node; the reply
 * comes back as ALIAS_SEND and the DOWN (noproc, the exit reason, or
 * noconnection) as MONITOR_P_EXIT. */
static int call_remote(struct kiln_proc *p, kiln_term to, kiln_msg *request, int64_t timeout_ms, kiln_msg **reply,
                       kiln_msg **reason)
{
    kiln_rt *rt = p->rt;
    void *ctx;
    const struct kiln_dist_ops *d = kiln_rt_dist(rt, &ctx);
    if (!d) {
        kiln_msg_free(request);
        return KILN_ENOTSUP;
    }
    bool by_name = kiln_is_tuple(to);
    kiln_term node = by_name ? kiln_tuple_get(to, 1) : kiln_pid_node(to);
    kiln_term name = by_name ? kiln_tuple_get(to, 0) : KILN_NONE;
    uint64_t n = kiln_ref_next(rt);
    struct kiln_proc_ext *e = kiln_proc_ext(p);
    kiln_term mref;
    kiln_term call = call_term(request, p, n, &mref);
    /* A remote name monitor keeps the node atom where the pid would be. */
    struct kiln_monitor mon = {n, by_name ? node : to, name, KILN_NONE, NULL};
    if (!e || kiln_is_none(call) || !remember(p, e, &mon)) {
        kiln_msg_free(request);
        return KILN_ENOMEM;
    }
    d->monitor(ctx, p->pid, by_name ? name : to, node, mref);
    request->root = call;
    kiln_rt_send(rt, to, request);
    struct call_wait cw = {rt, n};
    kiln_msg *m;
    int rc = kiln_proc_receive_new(p, match_reply, &cw, timeout_ms, &m);
    if (rc != KILN_OK) {
        forget(p, n, mon.pid);
        return rc;
    }
    return finish(p, n, mon.pid, m, reply, reason);
}

int kiln_call(kiln_term to, kiln_msg *request, int64_t timeout_ms, kiln_msg **reply, kiln_msg **reason)
{
    struct kiln_proc *p = kiln_current_proc();
    if (reason)
        *reason = NULL;
    if (!p) {
        kiln_msg_free(request);
        return KILN_ENOTPROC;
    }
    if (!request || !reply) {
        kiln_msg_free(request);
        return KILN_EINVAL;
    }
    kiln_rt *rt = p->rt;
    kiln_term target = to;
    bool by_name = kiln_is_tuple(to) && kiln_tuple_arity(to) == 2 && kiln_is_atom(kiln_tuple_get(to, 0)) &&
                   kiln_is_atom(kiln_tuple_get(to, 1));
    if ((kiln_is_pid(to) && kiln_is_remote(rt, to)) || (by_name && kiln_tuple_get(to, 1) != rt->node))
        return call_remote(p, to, request, timeout_ms, reply, reason);
    if (kiln_is_atom(to))
        target = kiln_whereis(rt, to);
    else if (by_name)
        target = kiln_whereis(rt, kiln_tuple_get(to, 0));
    /* A dead target is found by the delivery below, which answers the
     * call's monitor with DOWN noproc: no look-up of its own first. */
    if (!kiln_is_local_pid(target)) {
        kiln_msg_free(request);
        return kiln_is_none(target) ? noproc(reason) : KILN_ENOTSUP;
    }

    uint64_t n = kiln_ref_next(rt);
    struct kiln_proc_ext *e = kiln_proc_ext(p);
    kiln_term call = call_term(request, p, n, NULL);
    if (!e || kiln_is_none(call)) {
        kiln_msg_free(request);
        return KILN_ENOMEM;
    }
    if (!e->call_n) {
        e->call_n = n;
        e->call_target = target;
        e->call_monitoring = true;
        atomic_store_explicit(&e->nmonitors, e->monitors.len + 1, memory_order_relaxed);
    } else if (!remember(p, e, &(struct kiln_monitor){n, target, KILN_NONE, KILN_NONE, NULL})) {
        kiln_msg_free(request);
        return KILN_ENOMEM;
    }
    request->root = call;
    request->kind = KILN_MK_USER;
    request->flags = KILN_MF_MONITOR;
    request->from = p->pid;
    request->aux = n;
    /* Inside a process run, so inside its worker's epoch section. */
    kiln_deliver_in_section(rt, target, request);

    struct call_wait cw = {rt, n};
    kiln_msg *m;
    int rc = kiln_proc_receive_new(p, match_reply, &cw, timeout_ms, &m);
    if (rc != KILN_OK) {
        forget(p, n, target);
        return rc;
    }
    return finish(p, n, target, m, reply, reason);
}

int kiln_reply(kiln_term from, kiln_msg *reply)
{
    struct kiln_proc *self = kiln_current_proc();
    kiln_rt *rt = self ? self->rt : NULL;
    if (!reply)
        return KILN_EINVAL;
    if (!rt) {
        kiln_msg_free(reply);
        return KILN_ENOTPROC;
    }
    if (!kiln_is_tuple(from) || kiln_tuple_arity(from) != 2) {
        kiln_msg_free(reply);
        return KILN_EBADARG;
    }
    if (self->current == reply)
        self->current = NULL;
    reply->kind = KILN_MK_USER;
    reply->flags = 0;
    kiln_term pid = kiln_tuple_get(from, 0);
    kiln_term src_tag = kiln_tuple_get(from, 1);
    /* gen:reply's rule: an [alias|Ref] tag goes to the alias. */
    bool to_alias = kiln_is_cons(src_tag) && kiln_hd(src_tag) == KILN_ATOM_ALIAS;
    kiln_term dest = to_alias ? kiln_tl(src_tag) : pid;
    uint64_t n;
    kiln_term apid, tag;
    bool ours = to_alias && kiln_ref_local(dest, rt->node, rt->creation, &n, &apid);
    if (ours && !kiln_is_none(apid)) {
        /* A local caller's alias: the reply goes as it is, flagged, and the
         * caller's call takes it without the {[alias|Ref], Reply} wrapping;
         * anyone else it reaches gets it wrapped at the drain (signal.c). */
        if (kiln_by_slot_drop(self->ext, n) || kiln_monitor_del(self, false, n, NULL))
            reply->flags |= KILN_MF_DEMONITORED;
        reply->flags |= KILN_MF_REPLY;
        reply->kind = KILN_MK_ALIAS_MSG;
        reply->aux = n;
        int rc = kiln_deliver_in_section(rt, apid, reply);
        return rc == KILN_ENOPROC ? KILN_OK : rc;
    }
    if (ours) {
        /* Our own reference: rebuild [alias|Ref] rather than deep-copy it. */
        if (kiln_monitor_del(self, false, n, NULL))
            reply->flags |= KILN_MF_DEMONITORED;
        tag = kiln_cons(reply, KILN_ATOM_ALIAS, kiln_ref_term(reply, rt, n, apid));
    } else {
        tag = kiln_term_copy(reply, src_tag);
    }
    kiln_term t = kiln_tuple2(reply, tag, reply->root);
    if (kiln_is_none(t)) {
        kiln_msg_free(reply);
        return KILN_ENOMEM;
    }
    reply->root = t;
    return kiln_route(rt, dest, reply);
}

int kiln_match_call(kiln_term msg, kiln_term *from, kiln_term *request)
{
    if (!kiln_is_tuple(msg) || kiln_tuple_arity(msg) != 3 || kiln_tuple_get(msg, 0) != KILN_ATOM_GEN_CALL)
        return KILN_ENOMATCH;
    kiln_term f = kiln_tuple_get(msg, 1);
    if (!kiln_is_tuple(f) || kiln_tuple_arity(f) != 2)
        return KILN_ENOMATCH;
    if (from)
        *from = f;
    if (request)
        *request = kiln_tuple_get(msg, 2);
    return KILN_OK;
}
