/* The sys protocol, client side: {system, {Self, [alias|A]}, Req}, the way
 * sys:get_state and friends (gen:call with the label system) send it, and
 * the public kiln_sys_* calls built on it. The server side is in
 * sys_server.c. */
#include "otp/otp_internal.h"

kiln_term kiln_otp_resolve(kiln_rt *rt, kiln_term server)
{
    kiln_term pid = server;
    if (kiln_is_atom(server))
        pid = kiln_whereis(rt, server);
    else if (kiln_is_tuple(server) && kiln_tuple_arity(server) == 2 && kiln_tuple_get(server, 1) == kiln_rt_node(rt))
        pid = kiln_whereis(rt, kiln_tuple_get(server, 0));
    if (!kiln_is_local_pid(pid) || !kiln_is_alive(rt, pid))
        return KILN_NONE;
    return pid;
}

struct sys_wait {
    kiln_term tag;
    kiln_term mref;
};

static bool is_reply_or_down(kiln_term t, void *arg)
{
    const struct sys_wait *w = arg;
    if (!kiln_is_tuple(t))
        return false;
    size_t n = kiln_tuple_arity(t);
    if (n == 2)
        return kiln_term_eq(kiln_tuple_get(t, 0), w->tag);
    return n == 5 && kiln_tuple_get(t, 0) == KILN_ATOM_DOWN && kiln_term_eq(kiln_tuple_get(t, 1), w->mref);
}

static int noproc(kiln_msg **reason)
{
    if (reason && (*reason = kiln_msg_new(0)))
        kiln_msg_set_term(*reason, KILN_ATOM_NOPROC);
    return KILN_ENOPROC;
}

int kiln_otp_sys_call(kiln_term to, kiln_term req, int64_t timeout_ms, kiln_msg **reply, kiln_msg **reason)
{
    kiln_rt *rt = kiln_current_rt();
    if (reply)
        *reply = NULL;
    if (reason)
        *reason = NULL;
    if (!rt)
        return KILN_ENOTPROC;
    if (kiln_is_pid(to) && !kiln_is_local_pid(to))
        return KILN_ENOTSUP;
    kiln_term pid = kiln_otp_resolve(rt, to);
    if (kiln_is_none(pid))
        return noproc(reason);

    kiln_msg *tm = kiln_msg_new(160), *m = kiln_msg_new(128);
    struct sys_wait w = {KILN_NONE, KILN_NONE};
    kiln_term alias = KILN_NONE;
    int rc = tm && m ? KILN_OK : KILN_ENOMEM;
    if (rc == KILN_OK)
        rc = kiln_alias(false, tm, &alias);
    if (rc == KILN_OK && (rc = kiln_monitor(pid, tm, &w.mref)) != KILN_OK)
        kiln_unalias(alias);
    if (rc != KILN_OK) {
        kiln_msg_free(tm);
        kiln_msg_free(m);
        return rc;
    }
    w.tag = kiln_cons(tm, KILN_ATOM_ALIAS, alias);
    kiln_term from = kiln_tuple(m, 2, kiln_self(), kiln_term_copy(m, w.tag));
    kiln_msg_set_term(m, kiln_tuple(m, 3, kiln_atom_c("system"), from, kiln_term_copy(m, req)));
    if (kiln_is_none(kiln_msg_term(m)) || kiln_is_none(w.tag)) {
        kiln_msg_free(m);
        rc = KILN_ENOMEM;
    } else {
        kiln_send(pid, m);
        kiln_msg *got = NULL;
        rc = kiln_receive(is_reply_or_down, &w, timeout_ms, &got);
        if (rc == KILN_OK) {
            kiln_term t = kiln_msg_term(got);
            if (kiln_tuple_arity(t) == 5) {
                kiln_term why = kiln_tuple_get(t, 4);
                rc = why == KILN_ATOM_NOPROC ? KILN_ENOPROC : KILN_EEXIT;
                kiln_msg_set_term(got, why);
                if (reason)
                    *reason = got;
                else
                    kiln_msg_free(got);
            } else {
                kiln_msg_set_term(got, kiln_tuple_get(t, 1));
                if (reply)
                    *reply = got;
                else
                    kiln_msg_free(got);
            }
        }
    }
    /* After a timeout the alias is gone, so a late reply is dropped. */
    kiln_unalias(alias);
    kiln_demonitor(w.mref, true);
    kiln_msg_free(tm);
    return rc;
}

struct sys_job {
    kiln_term server, req;
    int64_t timeout_ms;
    kiln_msg *reply;
};

static int sys_job_run(void *arg)
{
    struct sys_job *j = arg;
    return kiln_otp_sys_call(j->server, j->req, j->timeout_ms, &j->reply, NULL);
}

static int sys_op(kiln_rt *rt, kiln_term server, kiln_term req, int64_t timeout_ms, kiln_msg **reply)
{
    struct sys_job j = {server, req, timeout_ms, NULL};
    int rc = kiln_otp_run(rt, sys_job_run, &j);
    if (rc == KILN_OK && reply)
        *reply = j.reply;
    else
        kiln_msg_free(j.reply);
    return rc;
}

int kiln_sys_get_state(kiln_rt *rt, kiln_term server, int64_t timeout_ms, kiln_msg **state)
{
    if (!state)
        return KILN_EINVAL;
    *state = NULL;
    kiln_msg *r = NULL;
    int rc = sys_op(rt, server, kiln_atom_c("get_state"), timeout_ms, &r);
    if (rc != KILN_OK)
        return rc;
    kiln_term t = kiln_msg_term(r);
    if (!kiln_is_tuple(t) || kiln_tuple_arity(t) != 2 || kiln_tuple_get(t, 0) != KILN_ATOM_OK) {
        kiln_msg_free(r);
        return KILN_EBADARG;
    }
    kiln_msg_set_term(r, kiln_tuple_get(t, 1));
    *state = r;
    return KILN_OK;
}

int kiln_sys_get_status(kiln_rt *rt, kiln_term server, int64_t timeout_ms, kiln_msg **status)
{
    if (!status)
        return KILN_EINVAL;
    *status = NULL;
    return sys_op(rt, server, kiln_atom_c("get_status"), timeout_ms, status);
}

int kiln_sys_suspend(kiln_rt *rt, kiln_term server, int64_t timeout_ms)
{
    return sys_op(rt, server, kiln_atom_c("suspend"), timeout_ms, NULL);
}

int kiln_sys_resume(kiln_rt *rt, kiln_term server, int64_t timeout_ms)
{
    return sys_op(rt, server, kiln_atom_c("resume"), timeout_ms, NULL);
}
