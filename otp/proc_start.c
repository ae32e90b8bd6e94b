/* proc_lib's start handshake: the starter spawns the process and waits
 * until its init says how it went (an ack), so start returns the result of
 * init, as gen_server:start does.
 *
 * The ack goes to an alias of the starter: if the start times out, the
 * alias is dropped and a late ack never lands in its mailbox. The starter
 * also monitors the child, so a child that dies before acking (killed,
 * crashed in init) ends the wait at once. When init fails the starter
 * waits for the DOWN, so the exit has happened (and the name is free) when
 * start returns, and it removes the {'EXIT', Pid, _} a trapping starter
 * would otherwise find. */
#include <stdlib.h>

#include "otp/otp_internal.h"

struct ack_wait {
    kiln_term alias;
    kiln_term mref;
};

static bool is_ack_or_down(kiln_term t, void *arg)
{
    const struct ack_wait *w = arg;
    if (!kiln_is_tuple(t))
        return false;
    size_t n = kiln_tuple_arity(t);
    if (n == 2)
        return kiln_term_eq(kiln_tuple_get(t, 0), w->alias);
    return n == 5 && kiln_tuple_get(t, 0) == KILN_ATOM_DOWN && kiln_term_eq(kiln_tuple_get(t, 1), w->mref);
}

static bool is_down(kiln_term t, void *arg)
{
    const struct ack_wait *w = arg;
    return kiln_is_tuple(t) && kiln_tuple_arity(t) == 5 && kiln_tuple_get(t, 0) == KILN_ATOM_DOWN &&
           kiln_term_eq(kiln_tuple_get(t, 1), w->mref);
}

static bool is_exit_from(kiln_term t, void *arg)
{
    const kiln_term *pid = arg;
    return kiln_is_tuple(t) && kiln_tuple_arity(t) == 3 && kiln_tuple_get(t, 0) == KILN_ATOM_EXIT &&
           kiln_term_eq(kiln_tuple_get(t, 1), *pid);
}

void kiln_otp_unlink_flush(kiln_term pid, kiln_msg **why)
{
    if (why)
        *why = NULL;
    kiln_unlink(pid);
    kiln_msg *m;
    if (kiln_receive(is_exit_from, &pid, 0, &m) != KILN_OK)
        return;
    if (why) {
        kiln_msg_set_term(m, kiln_tuple_get(kiln_msg_term(m), 2));
        *why = m;
    } else {
        kiln_msg_free(m);
    }
}

/* Wait for the child's DOWN; returns the message (root = the reason). */
static kiln_msg *await_down(struct ack_wait *w)
{
    kiln_msg *m;
    if (kiln_receive(is_down, w, -1, &m) != KILN_OK)
        return NULL;
    kiln_msg_set_term(m, kiln_tuple_get(kiln_msg_term(m), 4));
    return m;
}

int kiln_otp_start(kiln_rt *rt, const kiln_behaviour *beh, const void *impl, void *arg, const kiln_gs_opts *opts,
                   bool link, kiln_term *pid, kiln_msg **reason)
{
    kiln_term self = kiln_self();
    if (reason)
        *reason = NULL;
    if (pid)
        *pid = KILN_NONE;
    if (kiln_is_none(self))
        return KILN_ENOTPROC;
    if (!rt)
        rt = kiln_current_rt();
    struct kiln_otp_starting *st = calloc(1, sizeof(*st));
    kiln_msg *tm = kiln_msg_new(128);
    if (!st || !tm) {
        free(st);
        kiln_msg_free(tm);
        return KILN_ENOMEM;
    }
    st->impl = impl;
    st->arg = arg;
    st->parent = link ? self : KILN_NONE;
    st->tag_msg = tm;
    struct ack_wait w = {KILN_NONE, KILN_NONE};
    int rc = kiln_alias(false, tm, &w.alias);
    if (rc != KILN_OK) {
        free(st);
        kiln_msg_free(tm);
        return rc;
    }
    st->alias = w.alias;

    kiln_spawn_opts so = {0};
    so.link = link;
    so.monitor = true;
    so.monitor_ref_msg = tm;
    so.monitor_ref = &w.mref;
    if (opts) {
        so.trap_exit = opts->trap_exit;
        so.register_as = opts->name;
        so.max_mailbox = opts->max_mailbox;
        so.overflow = opts->overflow;
    }
    kiln_term child;
    rc = kiln_spawn(rt, beh, st, &so, &child);
    if (rc != KILN_OK) {
        if (rc == KILN_ENAME_TAKEN && pid)
            *pid = kiln_whereis(rt, kiln_atom_c(opts->name));
        kiln_unalias(w.alias);
        free(st);
        kiln_msg_free(tm);
        return rc;
    }

    int64_t timeout = opts && opts->timeout_ms > 0 ? opts->timeout_ms : -1;
    kiln_msg *m = NULL;
    rc = kiln_receive(is_ack_or_down, &w, timeout, &m);
    kiln_unalias(w.alias);
    if (rc == KILN_ETIMEOUT) {
        /* proc_lib kills a child that is too slow; it must not outlive the
         * start that gave up on it, nor read st after we free it. */
        if (link)
            kiln_unlink(child);
        kiln_exit(child, KILN_ATOM_KILL);
        kiln_msg_free(await_down(&w));
        if (link)
            kiln_otp_unlink_flush(child, NULL);
        free(st);
        kiln_msg_free(tm);
        return KILN_ETIMEOUT;
    }
    if (rc != KILN_OK) {
        free(st);
        kiln_msg_free(tm);
        return rc;
    }

    kiln_term t = kiln_msg_term(m);
    kiln_msg *why = NULL;
    if (kiln_tuple_arity(t) == 5) {
        /* Died before acking. */
        kiln_msg_set_term(m, kiln_tuple_get(t, 4));
        why = m;
        m = NULL;
        rc = KILN_EEXIT;
    } else {
        kiln_term res = kiln_tuple_get(t, 1);
        if (kiln_is_tuple(res) && kiln_tuple_arity(res) == 2 && kiln_tuple_get(res, 0) == KILN_ATOM_OK) {
            kiln_demonitor(w.mref, true);
            kiln_msg_free(m);
            free(st);
            kiln_msg_free(tm);
            if (pid)
                *pid = child;
            return KILN_OK;
        }
        bool ignored = res == kiln_atom_c("ignore");
        kiln_msg_free(m);
        /* The child exits after a failed init, with the reason init gave
         * (normal for ignore): wait until it has, and report that reason. */
        why = await_down(&w);
        if (ignored) {
            kiln_msg_free(why);
            why = NULL;
            rc = KILN_OK;
        } else {
            rc = KILN_EEXIT;
        }
    }
    if (link) {
        kiln_msg *ex = NULL;
        kiln_otp_unlink_flush(child, &ex);
        kiln_msg_free(ex);
    }
    free(st);
    kiln_msg_free(tm);
    if (reason)
        *reason = why;
    else
        kiln_msg_free(why);
    return rc;
}

void kiln_otp_ack(struct kiln_otp_starting *st, kiln_term result)
{
    kiln_msg *m = kiln_msg_new(64);
    if (!m)
        return; /* the starter still sees our DOWN */
    kiln_term alias = kiln_term_copy(m, st->alias);
    kiln_msg_set_term(m, kiln_tuple(m, 2, alias, kiln_term_copy(m, result)));
    kiln_send(alias, m);
}

/* gen_server:start and gen_statem:start work from any thread (main()
 * starting a top server), so the handshake runs in a helper process when
 * the caller is not one of rt's processes. */
struct start_job {
    kiln_rt *rt;
    const kiln_behaviour *beh;
    const void *impl;
    void *arg;
    const kiln_gs_opts *opts;
    kiln_term pid;
    kiln_msg *reason;
};

static int start_job_run(void *a)
{
    struct start_job *j = a;
    return kiln_otp_start(j->rt, j->beh, j->impl, j->arg, j->opts, false, &j->pid, &j->reason);
}

int kiln_otp_start_nolink(kiln_rt *rt, const kiln_behaviour *beh, const void *impl, void *arg,
                          const kiln_gs_opts *opts, kiln_term *pid, kiln_msg **reason)
{
    if (reason)
        *reason = NULL;
    if (!rt)
        rt = kiln_current_rt();
    struct start_job j = {rt, beh, impl, arg, opts, KILN_NONE, NULL};
    int rc = kiln_otp_run(rt, start_job_run, &j);
    if (pid)
        *pid = j.pid;
    if (reason)
        *reason = j.reason;
    else
        kiln_msg_free(j.reason);
    return rc;
}
