/* gen_server on a Kiln behaviour: the behaviour's handle is OTP's
 * handle_msg, dispatching calls, casts, system messages and infos to the
 * user's callbacks one message at a time, so an idle server holds no
 * stack. Start goes through the proc_lib handshake (proc_start.c); system
 * messages go to the sys protocol's server side (sys_server.c), which
 * gen_statem shares.
 *
 * Stopping from a callback runs the user's terminate inside handle, before
 * the process exits, so that terminate may block and, as in OTP, the reply
 * of a {stop, Reason, Reply} goes out after it. The runtime then calls our
 * behaviour terminate, which only frees. When the process is ended from
 * outside, that behaviour terminate is the only one and runs the user's. */
#include <stdlib.h>

#include "kiln/timer.h"
#include "otp/otp_internal.h"
#include "runtime/tls.h"

struct gs {
    const kiln_gen_server *cb;
    void *state;
    kiln_otp_sys sys; /* self, parent, suspended */
    bool init_done;   /* the user's init succeeded: terminate is owed */
    bool terminated;  /* the user's terminate has run */
    bool dying;       /* stop decided outside handle: exit at the next message */
    kiln_msg *stop_reason, *stop_reply; /* do_stop's, while terminate runs */
    void (*cut_cleanup)(void *state);   /* kiln_otp_terminate_guard's, until terminate returns */
    kiln_timer timer; /* the Timeout of the last result */
    uint64_t timer_gen;
    int64_t last_timeout;
};

static kiln_term atom_timeout_tag, atom_wake, atom_timeout;

static void atoms(void)
{
    /* Atoms are never freed, so racing initialisers store the same values. */
    if (!atom_timeout) {
        atom_timeout_tag = kiln_atom_c("$kiln_gs_timeout");
        atom_wake = kiln_atom_c("$kiln_gs_wake");
        atom_timeout = kiln_atom_c("timeout");
    }
}

/* ---- terminate ---- */

/* Which server's terminate runs from its loop on this thread; set before
 * every call of a user terminate (NULL on the runtime path) so the value
 * read on entry is always the current call's. */
static KILN_TLS struct gs *tl_loop_gs;

bool kiln_otp_terminate_in_loop(const void *state) { return state && tl_loop_gs && tl_loop_gs->state == state; }

void kiln_otp_terminate_guard(const void *state, void (*cleanup)(void *state))
{
    if (kiln_otp_terminate_in_loop(state))
        tl_loop_gs->cut_cleanup = cleanup;
}

static void user_terminate(struct gs *s, kiln_term reason, bool in_loop)
{
    if (!s->init_done || s->terminated)
        return;
    s->terminated = true;
    if (s->timer) {
        kiln_cancel_timer(kiln_current_rt(), s->timer, NULL);
        s->timer = 0;
    }
    if (s->cb->terminate) {
        tl_loop_gs = in_loop ? s : NULL;
        s->cb->terminate(s->state, reason);
        /* Returned: the guard's cleanup is its own business now. */
        s->cut_cleanup = NULL;
        tl_loop_gs = NULL;
    }
}

static void gs_terminate(void *state, kiln_term reason)
{
    struct gs *s = state;
    if (!s)
        return;
    user_terminate(s, reason, false);
    /* A terminate from the loop was killed while it blocked. */
    if (s->cut_cleanup)
        s->cut_cleanup(s->state);
    /* Held by a stop whose terminate was cut short (killed while it
     * blocked): nothing else will free them. */
    kiln_msg_free(s->stop_reason);
    kiln_msg_free(s->stop_reply);
    free(s);
}

/* Stop from the loop: terminate, then the optional reply, then exit. The
 * reason and reply are copied first: terminate may free what they live in
 * (and why_msg, the caller's message holding the reason, goes at once).
 * The copies are kept in s while terminate runs, since a terminate that
 * blocks can be killed there and never come back. */
static kiln_action do_stop(struct gs *s, kiln_term reason, kiln_msg *why_msg, kiln_term from, kiln_term reply,
                           kiln_msg *reply_msg)
{
    kiln_msg *rm = kiln_msg_new(64);
    kiln_term r = rm ? kiln_term_copy(rm, reason) : KILN_NONE;
    if (kiln_is_none(r))
        r = KILN_ATOM_KILLED; /* out of memory: an immediate reason needs no arena */
    kiln_msg_free(why_msg);
    if (!kiln_is_none(from) && !reply_msg && !kiln_is_none(reply)) {
        reply_msg = kiln_msg_new(64 + KILN_REPLY_ROOM);
        if (reply_msg)
            kiln_msg_set_term(reply_msg, kiln_term_copy(reply_msg, reply));
    }
    s->stop_reason = rm;
    s->stop_reply = reply_msg;
    user_terminate(s, r, true);
    s->stop_reason = s->stop_reply = NULL;
    if (reply_msg) {
        if (!kiln_is_none(from))
            kiln_reply(from, reply_msg);
        else
            kiln_msg_free(reply_msg);
    }
    kiln_stop(r);
    kiln_msg_free(rm);
    return KILN_STOP;
}

static kiln_action bad_return(struct gs *s, kiln_gs_ret r)
{
    kiln_msg *m = kiln_msg_new(64);
    kiln_term why = m ? kiln_tuple(m, 2, kiln_atom_c("bad_return_value"), kiln_small((int64_t)r.action)) : KILN_NONE;
    kiln_msg_free(r.reply_msg);
    return do_stop(s, kiln_is_none(why) ? kiln_atom_c("bad_return_value") : why, m, KILN_NONE, KILN_NONE, NULL);
}

/* ---- timeouts ---- */

static void arm_timeout(struct gs *s, int64_t ms)
{
    s->last_timeout = ms;
    if (ms < 0)
        return;
    kiln_msg *m = kiln_msg_new(32);
    if (!m)
        return;
    s->timer_gen++;
    kiln_msg_set_term(m, kiln_tuple(m, 2, atom_timeout_tag, kiln_int(m, (int64_t)s->timer_gen)));
    if (kiln_send_after(kiln_current_rt(), (uint64_t)ms, s->sys.self, m, &s->timer) != KILN_OK)
        s->timer = 0;
}

static void cancel_timeout(struct gs *s)
{
    if (s->timer) {
        /* If it already fired, its message carries an old generation. */
        kiln_cancel_timer(kiln_current_rt(), s->timer, NULL);
        s->timer = 0;
        s->timer_gen++;
    }
}

/* ---- acting on results ---- */

static void send_reply(kiln_term from, kiln_gs_ret *r)
{
    kiln_msg *m = r->reply_msg;
    r->reply_msg = NULL;
    if (!m) {
        m = kiln_msg_new(64 + KILN_REPLY_ROOM);
        if (!m)
            return;
        kiln_msg_set_term(m, kiln_term_copy(m, r->reply));
    }
    kiln_reply(from, m);
}

/* Act on r, then on the handle_continue chain it starts. from is the call
 * being answered, or KILN_NONE. */
static kiln_action act_one(struct gs *s, kiln_gs_ret *r, kiln_term from)
{
    switch (r->action) {
    case KILN_GS_REPLY:
        if (kiln_is_none(from))
            return bad_return(s, *r);
        send_reply(from, r);
        return KILN_CONTINUE;
    case KILN_GS_NOREPLY:
        kiln_msg_free(r->reply_msg);
        r->reply_msg = NULL;
        return KILN_CONTINUE;
    case KILN_GS_STOP:
        return do_stop(s, r->reason, NULL, from, r->reply, r->reply_msg);
    default:
        return bad_return(s, *r);
    }
}

static kiln_action act(struct gs *s, kiln_gs_ret r, kiln_term from)
{
    for (;;) {
        kiln_action a = act_one(s, &r, from);
        if (a == KILN_STOP || kiln_is_none(r.cont)) {
            if (a == KILN_CONTINUE)
                arm_timeout(s, r.timeout_ms);
            kiln_msg_free(r.hold);
            return a;
        }
        kiln_term cont = r.cont;
        if (!s->cb->handle_continue) {
            a = bad_return(s, r);
            kiln_msg_free(r.hold);
            return a;
        }
        from = KILN_NONE;
        kiln_gs_ret next = s->cb->handle_continue(s->state, cont);
        kiln_msg_free(r.hold);
        r = next;
    }
}

/* ---- system messages (sys_server.c) ---- */

static kiln_term sys_state(void *beh, kiln_msg *m)
{
    struct gs *s = beh;
    return s->cb->format_state ? s->cb->format_state(s->state, m) : KILN_ATOM_UNDEFINED;
}

static kiln_action sys_stop(void *beh, kiln_term reason)
{
    return do_stop(beh, reason, NULL, KILN_NONE, KILN_NONE, NULL);
}

static const kiln_otp_sys_ops gs_sys_ops = {"gen_server", "Status for generic server", sys_state, NULL, sys_stop};

/* ---- the loop ---- */

static kiln_action gs_handle(void *state, kiln_msg *msg)
{
    struct gs *s = state;
    if (s->dying)
        return KILN_STOP; /* the reason was set with kiln_stop already */
    kiln_term t = kiln_msg_term(msg);
    size_t n = kiln_is_tuple(t) ? kiln_tuple_arity(t) : 0;

    if (n == 2 && kiln_tuple_get(t, 0) == atom_timeout_tag) {
        int64_t gen = 0;
        if (kiln_get_int64(kiln_tuple_get(t, 1), &gen) != KILN_OK || !s->timer || (uint64_t)gen != s->timer_gen)
            return KILN_CONTINUE; /* stale: a message came first */
        s->timer = 0;
        if (!s->cb->handle_info)
            return KILN_CONTINUE;
        kiln_msg_set_term(msg, atom_timeout);
        return act(s, s->cb->handle_info(s->state, msg), KILN_NONE);
    }
    cancel_timeout(s);

    kiln_term from, req;
    if (kiln_match_call(t, &from, &req) == KILN_OK) {
        if (!s->cb->handle_call) {
            kiln_msg *m = kiln_msg_new(64);
            kiln_term why = m ? kiln_tuple(m, 2, kiln_atom_c("bad_call"), kiln_term_copy(m, req)) : KILN_NONE;
            return do_stop(s, kiln_is_none(why) ? kiln_atom_c("bad_call") : why, m, KILN_NONE, KILN_NONE, NULL);
        }
        kiln_gs_ret r = s->cb->handle_call(s->state, req, from);
        /* The usual answer, {reply, R, S}: nothing to continue, no
         * timeout to arm, nothing held. */
        if (r.action == KILN_GS_REPLY && kiln_is_none(r.cont) && r.timeout_ms < 0 && !r.hold) {
            s->last_timeout = -1;
            send_reply(from, &r);
            return KILN_CONTINUE;
        }
        return act(s, r, from);
    }
    if (n == 2 && kiln_tuple_get(t, 0) == KILN_ATOM_GEN_CAST) {
        if (!s->cb->handle_cast)
            return KILN_CONTINUE;
        return act(s, s->cb->handle_cast(s->state, kiln_tuple_get(t, 1)), KILN_NONE);
    }
    if (kiln_otp_sys_match(t, &from, &req)) {
        kiln_action a = kiln_otp_sys_handle(&s->sys, from, req);
        /* A system message keeps the pending Timeout, as OTP's loop does. */
        if (a == KILN_CONTINUE)
            arm_timeout(s, s->last_timeout);
        return a;
    }
    if (kiln_otp_is_parent_exit(&s->sys, t))
        return do_stop(s, kiln_tuple_get(t, 2), NULL, KILN_NONE, KILN_NONE, NULL);
    if (!s->cb->handle_info)
        return KILN_CONTINUE;
    return act(s, s->cb->handle_info(s->state, msg), KILN_NONE);
}

/* ---- init ---- */

/* End the process from init with the reason already given to kiln_stop:
 * a behaviour exits only after a handled message, so send one. */
static void die_soon(struct gs *s)
{
    s->dying = true;
    kiln_msg *m = kiln_msg_new(0);
    if (m) {
        kiln_msg_set_term(m, atom_wake);
        kiln_send(s->sys.self, m);
    }
}

static int gs_init(void *arg, void **state)
{
    struct kiln_otp_starting *st = arg;
    atoms();
    struct gs *s = calloc(1, sizeof(*s));
    if (!s)
        return KILN_ENOMEM; /* the starter sees the DOWN */
    /* Set now: if the process is killed while the user's init blocks, the
     * runtime's terminate still gets s and frees it. */
    *state = s;
    s->cb = st->impl;
    s->sys.ops = &gs_sys_ops;
    s->sys.beh = s;
    s->sys.name = s->cb->name;
    s->sys.self = kiln_self();
    s->sys.parent = kiln_is_none(st->parent) ? s->sys.self : st->parent;
    s->last_timeout = -1;

    kiln_gs_ret r = s->cb->init(st->arg, &s->state);
    kiln_msg *tmp = kiln_msg_new(64);
    if (!tmp) {
        kiln_msg_free(r.reply_msg);
        kiln_msg_free(r.hold);
        return KILN_ENOMEM;
    }
    kiln_term reason = KILN_NONE;
    switch (r.action) {
    case KILN_GS_NOREPLY:
        s->init_done = true;
        kiln_otp_ack(st, kiln_tuple(tmp, 2, KILN_ATOM_OK, s->sys.self));
        kiln_msg_free(tmp);
        if (act(s, r, KILN_NONE) == KILN_STOP)
            die_soon(s);
        return KILN_OK;
    case KILN_GS_IGNORE:
        kiln_otp_ack(st, kiln_atom_c("ignore"));
        reason = KILN_ATOM_NORMAL;
        break;
    case KILN_GS_STOP:
        reason = r.reason;
        kiln_otp_ack(st, kiln_tuple(tmp, 2, KILN_ATOM_ERROR, reason));
        break;
    default:
        reason = kiln_tuple(tmp, 2, kiln_atom_c("bad_return_value"), kiln_small((int64_t)r.action));
        kiln_otp_ack(st, kiln_tuple(tmp, 2, KILN_ATOM_ERROR, reason));
        break;
    }
    kiln_msg_free(r.reply_msg);
    kiln_stop(reason);
    kiln_msg_free(tmp);
    kiln_msg_free(r.hold);
    die_soon(s);
    return KILN_OK;
}

static const kiln_behaviour gs_beh = {"gen_server", gs_init, gs_handle, gs_terminate};

/* ---- public API ---- */

int kiln_gs_start_link(const kiln_gen_server *gs, void *arg, const kiln_gs_opts *opts, kiln_term *pid,
                       kiln_msg **reason)
{
    if (!gs || !gs->init)
        return KILN_EINVAL;
    return kiln_otp_start(kiln_current_rt(), &gs_beh, gs, arg, opts, true, pid, reason);
}

int kiln_gs_start(kiln_rt *rt, const kiln_gen_server *gs, void *arg, const kiln_gs_opts *opts, kiln_term *pid,
                  kiln_msg **reason)
{
    if (reason)
        *reason = NULL;
    if (!gs || !gs->init)
        return KILN_EINVAL;
    return kiln_otp_start_nolink(rt, &gs_beh, gs, arg, opts, pid, reason);
}

struct call_job {
    kiln_term server;
    kiln_msg *request;
    int64_t timeout_ms;
    kiln_msg *reply, *reason;
};

static int call_job_run(void *a)
{
    struct call_job *j = a;
    kiln_msg *req = j->request;
    j->request = NULL; /* consumed by kiln_call whatever happens */
    return kiln_call(j->server, req, j->timeout_ms, &j->reply, &j->reason);
}

int kiln_gs_call(kiln_rt *rt, kiln_term server, kiln_msg *request, int64_t timeout_ms, kiln_msg **reply,
                 kiln_msg **reason)
{
    if (reason)
        *reason = NULL;
    if (!reply) {
        kiln_msg_free(request);
        return KILN_EINVAL;
    }
    *reply = NULL;
    kiln_rt *cur = kiln_current_rt();
    if (cur && (!rt || rt == cur)) /* a process: no helper needed */
        return kiln_call(server, request, timeout_ms, reply, reason);
    struct call_job j = {server, request, timeout_ms, NULL, NULL};
    int rc = kiln_otp_run(rt, call_job_run, &j);
    kiln_msg_free(j.request); /* the job never ran */
    *reply = j.reply;
    if (reason)
        *reason = j.reason;
    else
        kiln_msg_free(j.reason);
    return rc;
}

int kiln_gs_cast(kiln_rt *rt, kiln_term server, kiln_msg *msg)
{
    if (!msg)
        return KILN_EINVAL;
    kiln_term t = kiln_tuple(msg, 2, KILN_ATOM_GEN_CAST, kiln_msg_term(msg));
    if (kiln_is_none(t)) {
        kiln_msg_free(msg);
        return KILN_ENOMEM;
    }
    kiln_msg_set_term(msg, t);
    int rc = kiln_current_rt() && (!rt || rt == kiln_current_rt()) ? kiln_send(server, msg)
                                                                     : kiln_rt_send(rt, server, msg);
    /* gen_server:cast never fails on a missing server. */
    return rc == KILN_EBADARG || rc == KILN_ENOPROC ? KILN_OK : rc;
}

struct stop_job {
    kiln_term server, reason;
    int64_t timeout_ms;
};

static int stop_job_run(void *a)
{
    struct stop_job *j = a;
    kiln_msg *req = kiln_msg_new(64), *why = NULL;
    if (!req)
        return KILN_ENOMEM;
    kiln_term t = kiln_tuple(req, 2, kiln_atom_c("terminate"), kiln_term_copy(req, j->reason));
    int rc = kiln_otp_sys_call(j->server, t, j->timeout_ms, NULL, &why);
    if (rc == KILN_EEXIT && why && kiln_term_eq(kiln_msg_term(why), j->reason))
        rc = KILN_OK;
    else if (rc == KILN_OK)
        rc = KILN_EBADARG; /* it answered: not a gen_server */
    kiln_msg_free(why);
    kiln_msg_free(req);
    return rc;
}

int kiln_gs_stop_server(kiln_rt *rt, kiln_term server, kiln_term reason, int64_t timeout_ms)
{
    struct stop_job j = {server, reason, timeout_ms};
    return kiln_otp_run(rt, stop_job_run, &j);
}

int kiln_gen_reply(kiln_term from, kiln_term reply)
{
    kiln_msg *m = kiln_msg_new(64 + KILN_REPLY_ROOM);
    if (!m)
        return KILN_ENOMEM;
    kiln_term t = kiln_term_copy(m, reply);
    if (kiln_is_none(t)) {
        kiln_msg_free(m);
        return KILN_ENOMEM;
    }
    kiln_msg_set_term(m, t);
    return kiln_reply(from, m);
}

kiln_msg *kiln_gs_from_keep(kiln_term from)
{
    kiln_msg *m = kiln_msg_new(64);
    if (!m)
        return NULL;
    kiln_term t = kiln_term_copy(m, from);
    if (kiln_is_none(t)) {
        kiln_msg_free(m);
        return NULL;
    }
    kiln_msg_set_term(m, t);
    return m;
}
