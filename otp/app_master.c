/* An application's master, after OTP's application_master: a gen_server
 * that traps exits, runs the application's start callback, and links to
 * the top supervisor it returns. OTP splits this into the master and a
 * helper process (the master is a group leader and must keep answering
 * I/O); Kiln has no group leaders, so one process does both.
 *
 * Start runs in handle_continue, after init has acked: the controller
 * that starts the master is not blocked while start runs, so start may
 * call the controller (start another application, say). The outcome goes
 * to the controller as a message.
 *
 * The master is linked to the controller but is its own gen_server parent
 * (started unlinked, then linked by the controller), so the controller's
 * exit signals reach handle_info: kiln_exit(master, normal) for
 * kiln_app_stop, shutdown when the node stops, or the controller's own
 * death. The blocking part of stopping (prep_stop, shutting the tree down
 * and waiting) therefore runs in handle_info, never in terminate: a
 * process killed while it blocks in handle still gets terminate from the
 * runtime's exit path, which runs stop and frees; one killed while it
 * blocks in terminate would lose its state. terminate only runs stop.
 *
 * When the top supervisor terminates on its own, prep_stop and stop run
 * and the master exits with the supervisor's reason, which is how the
 * controller learns it. */
#include <stdlib.h>

#include "otp/app_internal.h"

struct master {
    struct kiln_app_callbacks cb;
    kiln_term controller;
    kiln_term sup;   /* KILN_NONE before start and once it is gone */
    void *state;     /* the application's, from start */
    bool started;    /* start succeeded: prep_stop/stop are owed */
};

struct master_arg {
    const struct kiln_app_callbacks *cb;
    kiln_term controller;
};

static kiln_gs_ret m_init(void *arg, void **state)
{
    struct master *m = calloc(1, sizeof(*m));
    if (!m)
        return kiln_gs_stop(kiln_atom_c("enomem"));
    const struct master_arg *a = arg;
    m->cb = *a->cb;
    m->controller = a->controller;
    m->sup = KILN_NONE;
    *state = m;
    return kiln_gs_continue(kiln_atom_c("$kiln_app_start"));
}

static void tell_controller(struct master *m, kiln_term result)
{
    kiln_msg *msg = kiln_msg_new(128);
    if (!msg)
        return; /* the controller still sees our exit */
    kiln_term t = kiln_tuple(msg, 3, kiln_atom_c("$kiln_app_started"), kiln_self(), kiln_term_copy(msg, result));
    if (kiln_is_none(t)) {
        kiln_msg_free(msg);
        return;
    }
    kiln_msg_set_term(msg, t);
    kiln_send(m->controller, msg);
}

static kiln_gs_ret m_continue(void *state, kiln_term cont)
{
    (void)cont;
    struct master *m = state;
    kiln_term sup = KILN_NONE;
    void *app_state = NULL;
    int rc = m->cb.start(m->cb.start_arg, &sup, &app_state);
    kiln_msg *tmp = kiln_msg_new(64);
    if (!tmp)
        return kiln_gs_stop(kiln_atom_c("enomem"));
    if (rc == KILN_OK && kiln_is_local_pid(sup)) {
        /* Linking again is harmless; a supervisor started without a link
         * would otherwise end unnoticed. If it is already dead the trapped
         * {'EXIT', Sup, noproc} arrives and the application ends. */
        kiln_link(sup);
        m->sup = sup;
        m->state = app_state;
        m->started = true;
        tell_controller(m, KILN_ATOM_OK);
        kiln_msg_free(tmp);
        return kiln_gs_noreply();
    }
    kiln_term why = rc != KILN_OK ? kiln_tuple(tmp, 2, kiln_atom_c("kiln_error"), kiln_small(rc))
                                  : kiln_tuple(tmp, 2, kiln_atom_c("bad_return"), KILN_ATOM_UNDEFINED);
    tell_controller(m, kiln_tuple(tmp, 2, KILN_ATOM_ERROR, why));
    /* As OTP's start_it: a failed start ends the master, and the
     * controller has its answer already, so the exit itself is normal. */
    kiln_msg_free(tmp);
    return kiln_gs_stop(KILN_ATOM_NORMAL);
}

static bool is_exit_from(kiln_term t, void *arg)
{
    const kiln_term *pid = arg;
    return kiln_is_tuple(t) && kiln_tuple_arity(t) == 3 && kiln_tuple_get(t, 0) == KILN_ATOM_EXIT &&
           kiln_term_eq(kiln_tuple_get(t, 1), *pid);
}

/* prep_stop while the tree still runs, then exit(TopSup, shutdown) and
 * wait for it (infinity, as OTP's shutdown of a supervisor child). */
static void shut_down_tree(struct master *m)
{
    if (!m->started)
        return;
    if (m->cb.prep_stop)
        m->cb.prep_stop(m->state);
    if (kiln_is_none(m->sup))
        return;
    kiln_exit(m->sup, KILN_ATOM_SHUTDOWN);
    kiln_msg *ex = NULL;
    if (kiln_receive(is_exit_from, &m->sup, -1, &ex) == KILN_OK)
        kiln_msg_free(ex);
    m->sup = KILN_NONE;
}

static kiln_gs_ret m_info(void *state, kiln_msg *msg)
{
    struct master *m = state;
    kiln_term pid, reason;
    if (kiln_match(kiln_msg_term(msg), "{'EXIT',~p,~t}", &pid, &reason) != KILN_OK)
        return kiln_gs_noreply();
    if (!kiln_is_none(m->sup) && kiln_term_eq(pid, m->sup)) {
        /* OTP's loop_it: forward every reason of the top supervisor,
         * normal included; prep_stop now, stop in terminate. */
        m->sup = KILN_NONE;
        if (m->cb.prep_stop)
            m->cb.prep_stop(m->state);
        return kiln_gs_stop(reason);
    }
    if (kiln_term_eq(pid, m->controller)) {
        /* Told to stop, or the controller is gone: either way the
         * application ends, with that reason. */
        shut_down_tree(m);
        return kiln_gs_stop(reason);
    }
    return kiln_gs_noreply();
}

static void m_terminate(void *state, kiln_term reason)
{
    (void)reason;
    struct master *m = state;
    /* Whatever path got here, prep_stop (if due) has run in handle_info
     * and the tree is down, or the master was killed: then its supervisor
     * gets our exit through its link and stop can only free. */
    if (m->started && m->cb.stop)
        m->cb.stop(m->state);
    free(m);
}

static const kiln_gen_server master_gs = {
    .name = "application_master",
    .init = m_init,
    .handle_info = m_info,
    .handle_continue = m_continue,
    .terminate = m_terminate,
};

int kiln_app_master_start(const struct kiln_app_callbacks *cb, kiln_term *pid)
{
    kiln_gs_opts o = {.trap_exit = true};
    struct master_arg a = {cb, kiln_self()};
    kiln_msg *why = NULL;
    /* Unlinked start, then the link: see the top of the file. A master
     * that dies in between reaches the trapping controller as
     * {'EXIT', Master, noproc}. */
    int rc = kiln_gs_start(kiln_current_rt(), &master_gs, &a, &o, pid, &why);
    kiln_msg_free(why);
    if (rc == KILN_OK && kiln_is_local_pid(*pid))
        kiln_link(*pid);
    return rc;
}
