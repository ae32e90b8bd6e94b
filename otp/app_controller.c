/* The application controller, after OTP's application_controller: one
 * gen_server per runtime, registered as application_controller, trapping
 * exits, linked to every application master.
 *
 * Start and stop do not block the controller: start spawns the master
 * (whose init is immediate), keeps the caller's From and answers when the
 * master reports {'$kiln_app_started', Master, Result}; stop sends the
 * master an exit signal and answers when the master's 'EXIT' arrives. So a
 * start callback may start other applications. Concurrent starts of one
 * application all wait for the same outcome (OTP's start_req).
 *
 * A master's exit that was not asked for is an application terminating:
 * by its type, reported only or the node stops. Stopping the node blocks
 * the controller (as OTP's terminate does): the masters are told to shut
 * down one at a time, most recently started first; meanwhile calls are
 * refused (kiln_app_node.stopping) so a stop callback cannot deadlock on
 * the controller. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "otp/app_internal.h"

struct ac {
    struct kiln_app_node *node;
    kiln_rt *rt;
};

static kiln_term A(const char *s) { return kiln_atom_c(s); }

/* ---- waiters: callers of start and stop awaiting the outcome ---- */

static void waiter_add(struct kiln_app_entry *e, kiln_term from)
{
    kiln_msg *kept = kiln_gs_from_keep(from);
    if (!kept)
        return; /* that caller waits until the controller goes: ESTOPPED */
    kiln_msg **w = realloc(e->waiters, (e->nwaiters + 1) * sizeof(*w));
    if (!w) {
        kiln_msg_free(kept);
        return;
    }
    e->waiters = w;
    e->waiters[e->nwaiters++] = kept;
}

struct waiters {
    kiln_msg **v;
    size_t n;
};

/* Under the lock: take e's waiters, to answer once the lock is released. */
static struct waiters waiters_take(struct kiln_app_entry *e)
{
    struct waiters w = {e->waiters, e->nwaiters};
    e->waiters = NULL;
    e->nwaiters = 0;
    return w;
}

static void waiters_answer(struct waiters w, kiln_term reply)
{
    for (size_t i = 0; i < w.n; i++) {
        kiln_gen_reply(kiln_msg_term(w.v[i]), reply);
        kiln_msg_free(w.v[i]);
    }
    free(w.v);
}

/* ---- reports and node stop ---- */

static void report(struct ac *ac, kiln_term app, kiln_term reason, kiln_app_type type)
{
    const kiln_app_config *c = &ac->node->cfg;
    if (c->report) {
        c->report(ac->rt, app, reason, type, c->arg);
        return;
    }
    char a[128], r[512];
    kiln_term_print(a, sizeof(a), app);
    kiln_term_print(r, sizeof(r), reason);
    fprintf(stderr, "=NOTICE REPORT==== application: %s, exited: %s, type: %s\n", a, r, kiln_app_type_name(type));
}

static bool is_down(kiln_term t, void *arg)
{
    const kiln_term *mref = arg;
    return kiln_is_tuple(t) && kiln_tuple_arity(t) == 5 && kiln_tuple_get(t, 0) == KILN_ATOM_DOWN &&
           kiln_term_eq(kiln_tuple_get(t, 1), *mref);
}

/* OTP's terminate: each master in turn, most recently started first (then
 * any still starting), gets exit(shutdown) and is waited for. */
static void stop_all(struct ac *ac)
{
    struct kiln_app_node *n = ac->node;
    pthread_mutex_lock(&kiln_app_mu);
    n->stopping = true;
    pthread_mutex_unlock(&kiln_app_mu);
    for (;;) {
        pthread_mutex_lock(&kiln_app_mu);
        struct kiln_app_entry *e = n->nrunning ? n->running[0] : NULL;
        for (size_t i = 0; !e && i < n->napps; i++)
            if (n->apps[i]->status == KILN_APP_ST_STARTING)
                e = n->apps[i];
        if (!e) {
            pthread_mutex_unlock(&kiln_app_mu);
            break;
        }
        bool was_starting = e->status == KILN_APP_ST_STARTING;
        kiln_term pid = e->master, app = e->atom;
        kiln_app_type type = e->type;
        e->status = KILN_APP_ST_STOPPING;
        pthread_mutex_unlock(&kiln_app_mu);

        kiln_msg *why = NULL;
        if (!kiln_is_none(pid)) {
            /* Unlinked first, so its exit does not come back as an
             * application terminating. */
            kiln_otp_unlink_flush(pid, NULL);
            kiln_msg *tm = kiln_msg_new(64);
            kiln_term mref = KILN_NONE;
            if (tm && kiln_monitor(pid, tm, &mref) == KILN_OK) {
                kiln_exit(pid, KILN_ATOM_SHUTDOWN);
                if (kiln_receive(is_down, &mref, -1, &why) == KILN_OK)
                    kiln_msg_set_term(why, kiln_tuple_get(kiln_msg_term(why), 4));
            } else {
                kiln_exit(pid, KILN_ATOM_KILL); /* no memory to wait: be sure */
            }
            kiln_msg_free(tm);
        }

        pthread_mutex_lock(&kiln_app_mu);
        kiln_app_running_del(n, e);
        e->status = KILN_APP_ST_IDLE;
        e->started = false;
        e->master = KILN_NONE;
        struct waiters w = waiters_take(e);
        pthread_mutex_unlock(&kiln_app_mu);

        kiln_msg *tmp = kiln_msg_new(32);
        if (tmp)
            waiters_answer(w, was_starting ? kiln_tuple(tmp, 2, KILN_ATOM_ERROR, A("stopping")) : KILN_ATOM_OK);
        else
            waiters_answer(w, KILN_ATOM_ERROR);
        kiln_msg_free(tmp);
        report(ac, app, why ? kiln_msg_term(why) : KILN_ATOM_SHUTDOWN, type);
        kiln_msg_free(why);
    }
}

/* Record why the node stops (reason is copied). */
static void set_stop_reason(struct kiln_app_node *n, kiln_term reason)
{
    kiln_msg *m = kiln_msg_new(128);
    kiln_term t = m ? kiln_term_copy(m, reason) : KILN_NONE;
    if (kiln_is_none(t)) {
        kiln_msg_free(m);
        return;
    }
    kiln_msg_set_term(m, t);
    pthread_mutex_lock(&kiln_app_mu);
    kiln_msg_free(n->stop_reason);
    n->stop_reason = m;
    pthread_mutex_unlock(&kiln_app_mu);
}

/* A permanent application (or transient one, abnormally) terminated or
 * failed to start: {Tag, App, Reason}. True when the node stops; the
 * controller must then stop with the recorded reason. */
static bool node_event(struct ac *ac, const char *tag, kiln_term app, kiln_term reason)
{
    kiln_msg *m = kiln_msg_new(128);
    kiln_term why = m ? kiln_tuple(m, 3, A(tag), app, kiln_term_copy(m, reason)) : KILN_NONE;
    if (kiln_is_none(why))
        why = A(tag);
    const kiln_app_config *c = &ac->node->cfg;
    bool stop = !c->node_stop || c->node_stop(ac->rt, why, c->arg);
    if (stop) {
        set_stop_reason(ac->node, why);
        stop_all(ac);
    }
    kiln_msg_free(m);
    return stop;
}

/* OTP's rule for whether an exit of an application stops the node. */
static bool fatal(kiln_app_type type, kiln_term reason)
{
    return type == KILN_APP_PERMANENT || (type == KILN_APP_TRANSIENT && reason != KILN_ATOM_NORMAL);
}

static kiln_gs_ret stop_node_now(struct ac *ac)
{
    kiln_term r = KILN_ATOM_SHUTDOWN;
    pthread_mutex_lock(&kiln_app_mu);
    if (ac->node->stop_reason)
        r = kiln_msg_term(ac->node->stop_reason); /* lives until the node is freed */
    pthread_mutex_unlock(&kiln_app_mu);
    return kiln_gs_stop(r);
}

/* ---- start ---- */

/* The outcome of a start: from the master's report, or a failed spawn
 * (master = KILN_NONE, found by name). */
static kiln_gs_ret start_result(struct ac *ac, kiln_term master, kiln_term app_if_no_master, kiln_term result)
{
    struct kiln_app_node *n = ac->node;
    pthread_mutex_lock(&kiln_app_mu);
    struct kiln_app_entry *e = NULL;
    if (kiln_is_none(master)) {
        e = kiln_app_entry_find(n, app_if_no_master, false);
    } else {
        for (size_t i = 0; !e && i < n->napps; i++)
            if (kiln_term_eq(n->apps[i]->master, master))
                e = n->apps[i];
    }
    if (!e || e->status != KILN_APP_ST_STARTING) {
        pthread_mutex_unlock(&kiln_app_mu);
        return kiln_gs_noreply(); /* stale: the node stopped it meanwhile */
    }
    kiln_term app = e->atom;
    kiln_app_type type = e->type;
    bool ok = result == KILN_ATOM_OK;
    if (ok) {
        e->status = KILN_APP_ST_RUNNING;
        e->started = true;
        kiln_app_running_add(n, e);
    } else {
        e->status = KILN_APP_ST_IDLE;
        e->master = KILN_NONE;
    }
    struct waiters w = waiters_take(e);
    pthread_mutex_unlock(&kiln_app_mu);

    waiters_answer(w, result);
    if (ok)
        return kiln_gs_noreply();
    kiln_term reason = KILN_ATOM_UNDEFINED;
    if (kiln_is_tuple(result) && kiln_tuple_arity(result) == 2)
        reason = kiln_tuple_get(result, 1);
    report(ac, app, reason, type);
    /* OTP's handle_application_started: a permanent start that fails
     * stops the node; a transient one too unless it ended normal. */
    if (fatal(type, reason) && node_event(ac, "application_start_failure", app, reason))
        return stop_node_now(ac);
    return kiln_gs_noreply();
}

static kiln_gs_ret do_start(struct ac *ac, kiln_term app, kiln_term type_atom, kiln_term from, kiln_msg *m)
{
    struct kiln_app_node *n = ac->node;
    kiln_app_type type;
    if (type_atom == A("permanent"))
        type = KILN_APP_PERMANENT;
    else if (type_atom == A("transient"))
        type = KILN_APP_TRANSIENT;
    else if (type_atom == A("temporary"))
        type = KILN_APP_TEMPORARY;
    else
        return kiln_gs_reply(kiln_tuple(m, 2, KILN_ATOM_ERROR,
                                        kiln_tuple(m, 2, A("invalid_restart_type"), type_atom)));

    kiln_term err = KILN_NONE;
    struct kiln_app_callbacks cb = {0};
    pthread_mutex_lock(&kiln_app_mu);
    struct kiln_app_entry *e = kiln_app_entry_find(n, app, false);
    if (n->stopping) {
        err = A("stopping");
    } else if (!e || !e->loaded) {
        err = kiln_tuple(m, 2, A("not_loaded"), app);
    } else if (e->status == KILN_APP_ST_STARTING) {
        waiter_add(e, from); /* OTP: a second start waits for the first */
        pthread_mutex_unlock(&kiln_app_mu);
        return kiln_gs_noreply();
    } else if (e->status != KILN_APP_ST_IDLE) {
        err = kiln_tuple(m, 2, A("already_started"), app);
    } else {
        /* OTP's check_start_cond: each dependency in the started list,
         * which keeps a temporary application that has exited. */
        for (size_t i = 0; i < e->ndeps && kiln_is_none(err); i++) {
            kiln_term d = kiln_atom_c(e->deps[i]);
            struct kiln_app_entry *de = kiln_app_entry_find(n, d, false);
            if (!de || !de->started)
                err = kiln_tuple(m, 2, A("not_started"), d);
        }
    }
    if (!kiln_is_none(err)) {
        pthread_mutex_unlock(&kiln_app_mu);
        return kiln_gs_reply(kiln_tuple(m, 2, KILN_ATOM_ERROR, err));
    }
    e->status = KILN_APP_ST_STARTING;
    e->type = type;
    e->master = KILN_NONE;
    waiter_add(e, from);
    cb = e->cb;
    if (!cb.start) {
        /* A library application: nothing to run (OTP: no mod key). */
        e->status = KILN_APP_ST_RUNNING;
        e->started = true;
        kiln_app_running_add(n, e);
        struct waiters w = waiters_take(e);
        pthread_mutex_unlock(&kiln_app_mu);
        waiters_answer(w, KILN_ATOM_OK);
        return kiln_gs_noreply();
    }
    pthread_mutex_unlock(&kiln_app_mu);

    kiln_term pid = KILN_NONE;
    int rc = kiln_app_master_start(&cb, &pid);
    if (rc != KILN_OK || kiln_is_none(pid)) {
        kiln_term why = kiln_tuple(m, 2, A("kiln_error"), kiln_small(rc != KILN_OK ? rc : KILN_ENOPROC));
        return start_result(ac, KILN_NONE, app, kiln_tuple(m, 2, KILN_ATOM_ERROR, why));
    }
    /* The entry cannot have gone: unload refuses a starting application. */
    pthread_mutex_lock(&kiln_app_mu);
    e->master = pid;
    pthread_mutex_unlock(&kiln_app_mu);
    return kiln_gs_noreply();
}

/* ---- stop ---- */

static kiln_gs_ret do_stop(struct ac *ac, kiln_term app, kiln_term from, kiln_msg *m)
{
    struct kiln_app_node *n = ac->node;
    pthread_mutex_lock(&kiln_app_mu);
    struct kiln_app_entry *e = kiln_app_entry_find(n, app, false);
    if (n->stopping) {
        pthread_mutex_unlock(&kiln_app_mu);
        return kiln_gs_reply(kiln_tuple(m, 2, KILN_ATOM_ERROR, A("stopping")));
    }
    if (e && (e->status == KILN_APP_ST_RUNNING || e->status == KILN_APP_ST_STOPPING) && !kiln_is_none(e->master)) {
        kiln_term pid = e->master;
        bool first = e->status == KILN_APP_ST_RUNNING;
        e->status = KILN_APP_ST_STOPPING;
        waiter_add(e, from);
        pthread_mutex_unlock(&kiln_app_mu);
        /* The master traps exits: its parent's exit makes it run
         * prep_stop, shut the tree down and run stop, then exit normal. */
        if (first)
            kiln_exit(pid, KILN_ATOM_NORMAL);
        return kiln_gs_noreply();
    }
    if (e && e->status == KILN_APP_ST_RUNNING) {
        /* A library application. */
        kiln_app_type type = e->type;
        e->status = KILN_APP_ST_IDLE;
        e->started = false;
        kiln_app_running_del(n, e);
        pthread_mutex_unlock(&kiln_app_mu);
        report(ac, app, A("stopped"), type);
        return kiln_gs_reply(KILN_ATOM_OK);
    }
    if (e && e->status == KILN_APP_ST_IDLE && e->started) {
        /* Exited on its own earlier: only forget that it was started. */
        e->started = false;
        pthread_mutex_unlock(&kiln_app_mu);
        return kiln_gs_reply(KILN_ATOM_OK);
    }
    pthread_mutex_unlock(&kiln_app_mu);
    return kiln_gs_reply(kiln_tuple(m, 2, KILN_ATOM_ERROR, kiln_tuple(m, 2, A("not_started"), app)));
}

/* ---- a master exited ---- */

static kiln_gs_ret master_exit(struct ac *ac, kiln_term pid, kiln_term reason)
{
    struct kiln_app_node *n = ac->node;
    pthread_mutex_lock(&kiln_app_mu);
    struct kiln_app_entry *e = NULL;
    for (size_t i = 0; !e && i < n->napps; i++)
        if (kiln_term_eq(n->apps[i]->master, pid))
            e = n->apps[i];
    if (!e) {
        pthread_mutex_unlock(&kiln_app_mu);
        return kiln_gs_noreply(); /* a master whose start failed */
    }
    kiln_app_status st = e->status;
    kiln_term app = e->atom;
    kiln_app_type type = e->type;
    e->status = KILN_APP_ST_IDLE;
    e->master = KILN_NONE;
    kiln_app_running_del(n, e);
    struct waiters w = waiters_take(e);
    if (st == KILN_APP_ST_STOPPING)
        e->started = false; /* OTP's stop_application drops it from started */
    pthread_mutex_unlock(&kiln_app_mu);

    if (st == KILN_APP_ST_STOPPING) {
        report(ac, app, A("stopped"), type);
        waiters_answer(w, KILN_ATOM_OK);
        return kiln_gs_noreply();
    }
    kiln_msg *tmp = kiln_msg_new(64);
    if (st == KILN_APP_ST_STARTING) {
        /* Died before reporting its start (killed): a failed start. */
        waiters_answer(w, tmp ? kiln_tuple(tmp, 2, KILN_ATOM_ERROR, reason) : KILN_ATOM_ERROR);
        kiln_msg_free(tmp);
        report(ac, app, reason, type);
        if (fatal(type, reason) && node_event(ac, "application_start_failure", app, reason))
            return stop_node_now(ac);
        return kiln_gs_noreply();
    }
    kiln_msg_free(tmp);
    waiters_answer(w, KILN_ATOM_OK); /* none expected */
    /* Running: the application terminated. It stays in the started list
     * (OTP), so applications depending on it can still be started. */
    report(ac, app, reason, type);
    if (fatal(type, reason) && node_event(ac, "application_terminated", app, reason))
        return stop_node_now(ac);
    return kiln_gs_noreply();
}

/* ---- gen_server callbacks ---- */

static void node_free_apps(struct kiln_app_node *n)
{
    for (size_t i = 0; i < n->napps; i++)
        kiln_app_entry_free(n->apps[i]);
    free(n->apps);
    n->apps = NULL;
    n->napps = n->appscap = 0;
    free(n->running);
    n->running = NULL;
    n->nrunning = n->runcap = 0;
}

static kiln_gs_ret ac_init(void *arg, void **state)
{
    struct ac *ac = calloc(1, sizeof(*ac));
    struct kiln_app_node *n = calloc(1, sizeof(*n));
    if (!ac || !n) {
        free(ac);
        free(n);
        return kiln_gs_stop(A("enomem"));
    }
    if (arg)
        n->cfg = *(const kiln_app_config *)arg;
    n->rt = kiln_current_rt();
    n->controller = kiln_self();
    n->refs = 2; /* the node list and this controller */
    pthread_cond_init(&n->cv, NULL);
    pthread_mutex_lock(&kiln_app_mu);
    int rc = kiln_app_node_install(n);
    pthread_mutex_unlock(&kiln_app_mu);
    if (rc != KILN_OK) {
        pthread_cond_destroy(&n->cv);
        free(n);
        free(ac);
        return kiln_gs_stop(A("already_started"));
    }
    ac->node = n;
    ac->rt = n->rt;
    *state = ac;
    return kiln_gs_ok();
}

static kiln_gs_ret ac_call(void *state, kiln_term req, kiln_term from)
{
    struct ac *ac = state;
    kiln_msg *m = kiln_msg_new(128);
    if (!m)
        return kiln_gs_reply(KILN_ATOM_ERROR);
    kiln_term app, type;
    kiln_gs_ret r;
    if (kiln_match(req, "{start_application,~A,~A}", &app, &type) == KILN_OK) {
        r = do_start(ac, app, type, from, m);
    } else if (kiln_match(req, "{stop_application,~A}", &app) == KILN_OK) {
        r = do_stop(ac, app, from, m);
    } else if (req == A("shutdown")) {
        /* Asynchronous, like init:stop: answer first, so a caller that is
         * itself an application's process cannot hold the shutdown up. */
        set_stop_reason(ac->node, KILN_ATOM_SHUTDOWN);
        pthread_mutex_lock(&kiln_app_mu);
        ac->node->stopping = true;
        pthread_mutex_unlock(&kiln_app_mu);
        kiln_gen_reply(from, KILN_ATOM_OK);
        stop_all(ac);
        r = kiln_gs_stop(KILN_ATOM_SHUTDOWN);
    } else {
        r = kiln_gs_reply(kiln_tuple(m, 2, KILN_ATOM_ERROR, A("badarg")));
    }
    /* Replies and reasons may live in m: the server frees it after acting. */
    return kiln_gs_hold(r, m);
}

static kiln_gs_ret ac_info(void *state, kiln_msg *msg)
{
    struct ac *ac = state;
    kiln_term t = kiln_msg_term(msg), pid, x;
    if (kiln_match(t, "{'$kiln_app_started',~p,~t}", &pid, &x) == KILN_OK)
        return start_result(ac, pid, KILN_NONE, x);
    if (kiln_match(t, "{'EXIT',~p,~t}", &pid, &x) == KILN_OK)
        return master_exit(ac, pid, x);
    return kiln_gs_noreply();
}

static void ac_terminate(void *state, kiln_term reason)
{
    struct ac *ac = state;
    /* In the loop the node has been stopped already (stop_all). From the
     * runtime's exit path (killed, kiln_rt_stop) nothing may block: the
     * masters get our exit through their links and stop themselves. */
    kiln_msg *m = kiln_msg_new(64);
    kiln_term r = m ? kiln_term_copy(m, reason) : KILN_NONE;
    if (!kiln_is_none(r))
        kiln_msg_set_term(m, r);
    pthread_mutex_lock(&kiln_app_mu);
    struct kiln_app_node *n = ac->node;
    if (!n->stop_reason && !kiln_is_none(r)) {
        n->stop_reason = m;
        m = NULL;
    }
    n->stopping = n->stopped = true;
    node_free_apps(n); /* the tombstone keeps only the reason */
    pthread_cond_broadcast(&n->cv);
    kiln_app_node_unref(n);
    pthread_mutex_unlock(&kiln_app_mu);
    kiln_msg_free(m);
    free(ac);
}

static const kiln_gen_server ac_gs = {
    .name = KILN_APP_AC_NAME,
    .init = ac_init,
    .handle_call = ac_call,
    .handle_info = ac_info,
    .terminate = ac_terminate,
};

int kiln_app_controller_start(kiln_rt *rt, const kiln_app_config *cfg)
{
    kiln_gs_opts o = {.name = KILN_APP_AC_NAME, .trap_exit = true};
    kiln_term pid;
    kiln_msg *why = NULL;
    int rc;
    /* The previous controller may be finishing its exit after the node
     * stopped; its name is free a moment later. */
    for (int i = 0;; i++) {
        rc = kiln_gs_start(rt, &ac_gs, (void *)cfg, &o, &pid, &why);
        kiln_msg_free(why);
        why = NULL;
        if (rc != KILN_ENAME_TAKEN || i == 5000 || !kiln_app_node_stopped(rt ? rt : kiln_current_rt()))
            return rc;
        kiln_app_nap(1);
    }
}
