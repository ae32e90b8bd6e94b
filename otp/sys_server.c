/* The sys protocol, server side: what a behaviour's loop does with
 * {system, From, Req} (sys:get_state, get_status, suspend, resume,
 * terminate). Shared by gen_server and gen_statem, which differ only in
 * the state term, the status details and how they stop; those come in
 * through kiln_otp_sys_ops. The client side is in sys.c. */
#include <stdio.h>

#include "otp/otp_internal.h"

static void reply_term(kiln_term from, kiln_term t)
{
    kiln_msg *m = kiln_msg_new(64);
    if (!m)
        return;
    kiln_msg_set_term(m, kiln_term_copy(m, t));
    kiln_reply(from, m);
}

static kiln_term state_term(kiln_otp_sys *s, kiln_msg *m)
{
    kiln_term t = s->ops->state ? s->ops->state(s->beh, m) : KILN_ATOM_UNDEFINED;
    return kiln_is_none(t) ? KILN_ATOM_UNDEFINED : t;
}

static void reply_status(kiln_otp_sys *s, kiln_term from)
{
    /* sys:get_status's shape (the behaviours' default format_status). */
    kiln_msg *m = kiln_msg_new(512);
    if (!m)
        return;
    char header[200];
    snprintf(header, sizeof(header), "%s %s", s->ops->header, s->name ? s->name : "");
    kiln_term sys_state = kiln_atom_c(s->suspended ? "suspended" : "running");
    kiln_term extra = s->ops->status_data ? s->ops->status_data(s->beh, m) : KILN_NONE;
    if (kiln_is_none(extra))
        extra = kiln_build(m, "[{\"Logged events\",[]}]");
    kiln_term t = kiln_build(m,
                             "{status,~p,{module,~a},[[],~A,~p,[],"
                             "[{header,~s},{data,[{\"Status\",~A},{\"Parent\",~p}|~t]},"
                             "{data,[{\"State\",~t}]}]]}",
                             s->self, s->ops->module, sys_state, s->parent, header, sys_state, s->parent, extra,
                             state_term(s, m));
    if (kiln_is_none(t)) {
        kiln_msg_free(m);
        return;
    }
    kiln_msg_set_term(m, t);
    kiln_reply(from, m);
}

bool kiln_otp_sys_match(kiln_term t, kiln_term *from, kiln_term *req)
{
    if (!kiln_is_tuple(t) || kiln_tuple_arity(t) != 3 || kiln_tuple_get(t, 0) != kiln_atom_c("system"))
        return false;
    kiln_term f = kiln_tuple_get(t, 1);
    if (!kiln_is_tuple(f) || kiln_tuple_arity(f) != 2)
        return false;
    *from = f;
    *req = kiln_tuple_get(t, 2);
    return true;
}

bool kiln_otp_is_parent_exit(const kiln_otp_sys *s, kiln_term t)
{
    /* After a plain start the parent is the process itself: no parent to
     * watch. */
    return s->parent != s->self && kiln_is_tuple(t) && kiln_tuple_arity(t) == 3 &&
           kiln_tuple_get(t, 0) == KILN_ATOM_EXIT && kiln_term_eq(kiln_tuple_get(t, 1), s->parent);
}

static bool is_system_or_parent_exit(kiln_term t, void *arg)
{
    kiln_term from, req;
    return kiln_otp_sys_match(t, &from, &req) || kiln_otp_is_parent_exit(arg, t);
}

/* sys:suspend: only system messages and the parent's exit are handled
 * until resume; everything else waits in the mailbox in order. The server
 * holds a stack meanwhile (it is blocked in a receive). */
static kiln_action suspended_loop(kiln_otp_sys *s)
{
    while (s->suspended) {
        kiln_msg *m;
        if (kiln_receive(is_system_or_parent_exit, s, -1, &m) != KILN_OK)
            return KILN_CONTINUE;
        kiln_term t = kiln_msg_term(m), from, req;
        kiln_action a;
        if (kiln_otp_sys_match(t, &from, &req))
            a = kiln_otp_sys_handle(s, from, req);
        else
            a = s->ops->stop(s->beh, kiln_tuple_get(t, 2));
        kiln_msg_free(m);
        if (a == KILN_STOP)
            return a;
    }
    return KILN_CONTINUE;
}

kiln_action kiln_otp_sys_handle(kiln_otp_sys *s, kiln_term from, kiln_term req)
{
    if (req == kiln_atom_c("get_state")) {
        kiln_msg *m = kiln_msg_new(128);
        if (m) {
            kiln_msg_set_term(m, kiln_tuple(m, 2, KILN_ATOM_OK, state_term(s, m)));
            kiln_reply(from, m);
        }
    } else if (req == kiln_atom_c("get_status")) {
        reply_status(s, from);
    } else if (req == kiln_atom_c("suspend")) {
        reply_term(from, KILN_ATOM_OK);
        if (!s->suspended) {
            s->suspended = true;
            return suspended_loop(s);
        }
    } else if (req == kiln_atom_c("resume")) {
        s->suspended = false;
        reply_term(from, KILN_ATOM_OK);
    } else if (kiln_is_tuple(req) && kiln_tuple_arity(req) == 2 && kiln_tuple_get(req, 0) == kiln_atom_c("terminate")) {
        /* sys:terminate, which gen_server:stop and gen_statem:stop use: no
         * reply, the caller watches for the DOWN. */
        return s->ops->stop(s->beh, kiln_tuple_get(req, 1));
    } else {
        kiln_msg *m = kiln_msg_new(64);
        if (m) {
            kiln_term why = kiln_tuple(m, 2, kiln_atom_c("unknown_system_msg"), kiln_term_copy(m, req));
            kiln_msg_set_term(m, kiln_tuple(m, 2, KILN_ATOM_ERROR, why));
            kiln_reply(from, m);
        }
    }
    return KILN_CONTINUE;
}
