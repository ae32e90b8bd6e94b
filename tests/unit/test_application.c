/* application semantics, after OTP's application_SUITE: load/unload,
 * dependencies and ensure_all_started order, which_applications order,
 * the start types (permanent, transient, temporary) when the top
 * supervisor terminates, the node stop hook and kiln_app_wait, stop's
 * prep_stop / tree shutdown / stop order, the environment, and the
 * error cases (unknown application, started twice, failed start). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln/application.h"
#include "kiln/supervisor.h"
#include "testutil.h"

#define NAPP 6

static kiln_term A(const char *s) { return kiln_atom_c(s); }

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- the event log: "s1" start of app 1, "p1" its prep_stop, "t1" its
 * worker's terminate, "x1" its stop, "R1:reason" a report ---- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char elog[2048];

static void logf_(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_mu);
    strncat(elog, buf, sizeof(elog) - strlen(elog) - 1);
    pthread_mutex_unlock(&log_mu);
}

static bool log_has(const char *s)
{
    pthread_mutex_lock(&log_mu);
    bool r = strstr(elog, s) != NULL;
    pthread_mutex_unlock(&log_mu);
    return r;
}

static void wait_log(const char *s)
{
    for (int i = 0; i < 5000 && !log_has(s); i++)
        sleep_ms(1);
    if (!log_has(s))
        fail_msg("log lacks \"%s\": %s", s, elog);
}

static void assert_log(const char *expect)
{
    pthread_mutex_lock(&log_mu);
    char copy[sizeof(elog)];
    memcpy(copy, elog, sizeof(copy));
    pthread_mutex_unlock(&log_mu);
    assert_string_equal(copy, expect);
}

/* The log with reports removed: callbacks only. */
static void callbacks_log(char *out, size_t size)
{
    pthread_mutex_lock(&log_mu);
    size_t o = 0;
    for (const char *p = elog; *p && o + 1 < size;) {
        if (*p == 'R') {
            while (*p && *p != ';')
                p++;
            if (*p)
                p++;
            continue;
        }
        out[o++] = *p++;
    }
    out[o] = '\0';
    pthread_mutex_unlock(&log_mu);
}

/* ---- a worker gen_server: the child of each application's supervisor,
 * or the top process itself (top_is_worker) ---- */

static kiln_gs_ret w_init(void *arg, void **state)
{
    *state = arg;
    return kiln_gs_ok();
}

static kiln_gs_ret w_cast(void *state, kiln_term msg)
{
    (void)state;
    kiln_term r;
    if (kiln_match(msg, "{exit,~t}", &r) == KILN_OK)
        return kiln_gs_stop(r);
    return kiln_gs_noreply();
}

static void w_terminate(void *state, kiln_term reason)
{
    (void)reason;
    logf_("t%d", (int)(intptr_t)state);
}

static const kiln_gen_server worker = {.name = "worker", .init = w_init, .handle_cast = w_cast, .terminate = w_terminate};

/* ---- a test application ---- */

struct tapp {
    int id;
    char name[16], wname[16], supname[16];
    int fail_start;     /* start returns this code (0: starts) */
    bool top_is_worker; /* the top process is a worker, not a supervisor */
    const char *start_also; /* start callback ensure_starts this application */
    kiln_gs_child wchild;
    kiln_child_spec kid;
    kiln_sup_spec spec;
    _Atomic int sup_alive_in_prep, sup_alive_in_stop, worker_alive_in_stop;
    _Atomic uint64_t sup;
    _Atomic int env_seen;  /* the env value port read inside start */
    bool check_in_stop;    /* stop looks at the tree (in the loop only) */
    kiln_application app;
};

static struct tapp T[NAPP];

static int t_start(void *arg, kiln_term *sup, void **state)
{
    struct tapp *t = arg;
    if (t->fail_start)
        return t->fail_start;
    if (t->start_also && kiln_app_ensure_started(NULL, t->start_also, KILN_APP_TEMPORARY, NULL) != KILN_OK)
        return KILN_EINVAL;
    /* The environment is readable while the controller waits for us. */
    kiln_msg *m = kiln_msg_new(32);
    kiln_term v;
    int64_t port = 0;
    if (kiln_app_get_env(NULL, t->name, "port", m, &v) == KILN_OK && kiln_get_int64(v, &port) == KILN_OK)
        atomic_store(&t->env_seen, (int)port);
    kiln_msg_free(m);
    int rc;
    if (t->top_is_worker) {
        kiln_gs_opts o = {.name = t->supname};
        rc = kiln_gs_start_link(&worker, (void *)(intptr_t)t->id, &o, sup, NULL);
    } else {
        rc = kiln_sup_start_link(&t->spec, t->supname, sup, NULL);
    }
    if (rc != KILN_OK)
        return rc;
    atomic_store(&t->sup, *sup);
    *state = t;
    logf_("s%d", t->id);
    return KILN_OK;
}

static void t_prep_stop(void *state)
{
    struct tapp *t = state;
    atomic_store(&t->sup_alive_in_prep, kiln_is_alive(kiln_current_rt(), atomic_load(&t->sup)));
    logf_("p%d", t->id);
}

static void t_stop(void *state)
{
    struct tapp *t = state;
    kiln_rt *rt = kiln_current_rt();
    if (t->check_in_stop && rt) {
        atomic_store(&t->sup_alive_in_stop, kiln_is_alive(rt, atomic_load(&t->sup)));
        kiln_term w = kiln_whereis(rt, A(t->wname));
        atomic_store(&t->worker_alive_in_stop, kiln_is_local_pid(w) && kiln_is_alive(rt, w));
    }
    logf_("x%d", t->id);
}

static const kiln_app_env default_env[] = {
    {"port", "8080"},
    {"pool", "{pool,[a,b],\"db\"}"},
};

/* App i named "app<i>", depending on the listed apps. */
static kiln_application *tapp(int i, const char *const *deps, size_t ndeps)
{
    struct tapp *t = &T[i];
    memset(t, 0, sizeof(*t));
    t->id = i;
    snprintf(t->name, sizeof(t->name), "app%d", i);
    snprintf(t->wname, sizeof(t->wname), "w%d", i);
    snprintf(t->supname, sizeof(t->supname), "sup%d", i);
    t->wchild = (kiln_gs_child){.gs = &worker, .arg = (void *)(intptr_t)i, .opts = {.name = t->wname}};
    t->kid = (kiln_child_spec){.id = "w", .start = kiln_gs_child_start, .arg = &t->wchild, .restart = KILN_PERMANENT};
    t->spec = (kiln_sup_spec){.strategy = KILN_ONE_FOR_ONE, .intensity = 1, .children = &t->kid, .nchildren = 1};
    t->app = (kiln_application){
        .name = t->name,
        .description = "test application",
        .vsn = "1.0",
        .applications = deps,
        .napplications = ndeps,
        .start = t_start,
        .start_arg = t,
        .prep_stop = t_prep_stop,
        .stop = t_stop,
        .env = default_env,
        .nenv = 2,
    };
    t->sup = KILN_NONE;
    return &t->app;
}

/* ---- hooks ---- */

static _Atomic int node_stop_calls;
static _Atomic int node_stop_veto;
static char node_stop_reason[256];

static bool on_node_stop(kiln_rt *rt, kiln_term reason, void *arg)
{
    (void)rt;
    (void)arg;
    kiln_term_print(node_stop_reason, sizeof(node_stop_reason), reason);
    atomic_fetch_add(&node_stop_calls, 1);
    logf_("N;");
    return !atomic_load(&node_stop_veto);
}

static void on_report(kiln_rt *rt, kiln_term app, kiln_term reason, kiln_app_type type, void *arg)
{
    (void)rt;
    (void)arg;
    char a[32], r[128];
    kiln_term_print(a, sizeof(a), app);
    kiln_term_print(r, sizeof(r), reason);
    /* "app1" is logged as "R1", other names as they are. */
    logf_("R%s:%s:%s;", strncmp(a, "app", 3) == 0 ? a + 3 : a, r, kiln_app_type_name(type));
}

static const kiln_app_config test_cfg = {.node_stop = on_node_stop, .report = on_report};

static kiln_rt *setup(void)
{
    pthread_mutex_lock(&log_mu);
    elog[0] = '\0';
    pthread_mutex_unlock(&log_mu);
    atomic_store(&node_stop_calls, 0);
    atomic_store(&node_stop_veto, 0);
    node_stop_reason[0] = '\0';
    kiln_rt *rt = kiln_test_rt(2, NULL);
    assert_int_equal(kiln_app_controller_start(rt, &test_cfg), KILN_OK);
    return rt;
}

/* The way main() ends: the node first, then the runtime. kiln_rt_stop
 * alone would kill supervisors that may be shutting their children down,
 * and a gen_server killed inside a blocking terminate loses its state. */
static void teardown(kiln_rt *rt)
{
    int rc = kiln_app_shutdown(rt);
    assert_true(rc == KILN_OK || rc == KILN_ESTOPPED);
    assert_int_equal(kiln_app_wait(rt, 10000, NULL), KILN_OK);
    kiln_rt_stop(rt);
}

static void load(kiln_rt *rt, kiln_application *app) { assert_int_equal(kiln_app_load(rt, app), KILN_OK); }

static void assert_term(kiln_term t, const char *expect)
{
    char buf[512];
    kiln_term_print(buf, sizeof(buf), t);
    assert_string_equal(buf, expect);
}

static void assert_msg(kiln_msg *m, const char *expect)
{
    assert_non_null(m);
    assert_term(kiln_msg_term(m), expect);
    kiln_msg_free(m);
}

static void assert_which(kiln_rt *rt, const char *expect)
{
    kiln_msg *m = NULL;
    assert_int_equal(kiln_app_which_applications(rt, &m), KILN_OK);
    /* Only the names: descriptions and versions make it long. */
    char buf[256] = "";
    for (kiln_term l = kiln_msg_term(m); kiln_is_cons(l); l = kiln_tl(l)) {
        char n[32];
        kiln_term_print(n, sizeof(n), kiln_tuple_get(kiln_hd(l), 0));
        strncat(buf, n, sizeof(buf) - strlen(buf) - 2);
        strcat(buf, " ");
    }
    kiln_msg_free(m);
    assert_string_equal(buf, expect);
}

static kiln_term sup_of(kiln_rt *rt, int i) { return kiln_whereis(rt, A(T[i].supname)); }

static void wait_dead(kiln_rt *rt, kiln_term pid)
{
    for (int k = 0; k < 5000 && kiln_is_alive(rt, pid); k++)
        sleep_ms(1);
    assert_false(kiln_is_alive(rt, pid));
}

/* ---- tests ---- */

/* ensure_all_started walks dependencies depth first in their listed
 * order; which_applications lists the most recent start first, like
 * OTP's [{stdlib,...},{kernel,...}]; start refuses a dependency that is
 * not started. */
static void test_dependency_order(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    static const char *const deps2[] = {"app1"};
    static const char *const deps3[] = {"app2", "app1", "app4"};
    load(rt, tapp(1, NULL, 0));
    load(rt, tapp(2, deps2, 1));
    load(rt, tapp(3, deps3, 3));
    load(rt, tapp(4, NULL, 0));

    kiln_msg *why = NULL;
    assert_int_equal(kiln_app_start(rt, "app2", KILN_APP_TEMPORARY, &why), KILN_ENOPROC);
    assert_msg(why, "{not_started,app1}");

    kiln_msg *started = NULL;
    assert_int_equal(kiln_app_ensure_all_started(rt, "app3", KILN_APP_TEMPORARY, &started, &why), KILN_OK);
    assert_null(why);
    assert_msg(started, "[app1,app2,app4,app3]");
    assert_log("s1s2s4s3");
    assert_which(rt, "app3 app4 app2 app1 ");

    /* Nothing left to start: an empty list. */
    assert_int_equal(kiln_app_ensure_all_started(rt, "app3", KILN_APP_TEMPORARY, &started, NULL), KILN_OK);
    assert_msg(started, "[]");

    kiln_msg *m = NULL;
    assert_int_equal(kiln_app_which_applications(rt, &m), KILN_OK);
    assert_term(kiln_hd(kiln_msg_term(m)), "{app3,\"test application\",\"1.0\"}");
    kiln_msg_free(m);

    assert_int_equal(kiln_app_unload(rt, "app1"), KILN_EBUSY);
    assert_int_equal(kiln_app_stop(rt, "app1"), KILN_OK);
    assert_int_equal(kiln_app_unload(rt, "app1"), KILN_OK);
    assert_int_equal(kiln_app_unload(rt, "app1"), KILN_ENOTREG);
    assert_which(rt, "app3 app4 app2 ");
    teardown(rt);
}

/* A dependency that is not loaded, and a cycle, fail ensure_all_started;
 * what it started before the failure is stopped again. */
static void test_ensure_all_started_errors(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    static const char *const deps1[] = {"app2", "nope"};
    static const char *const deps3[] = {"app4"};
    static const char *const deps4[] = {"app3"};
    load(rt, tapp(1, deps1, 2));
    load(rt, tapp(2, NULL, 0));
    load(rt, tapp(3, deps3, 1));
    load(rt, tapp(4, deps4, 1));
    kiln_msg *why = NULL, *started = NULL;
    assert_int_equal(kiln_app_ensure_all_started(rt, "app1", KILN_APP_TEMPORARY, &started, &why), KILN_ENOTREG);
    assert_null(started);
    assert_msg(why, "{nope,{not_loaded,nope}}");
    assert_int_equal(kiln_app_ensure_all_started(rt, "app3", KILN_APP_TEMPORARY, &started, &why), KILN_EINVAL);
    assert_msg(why, "{app4,{circular_dependencies,app3}}");
    assert_log(""); /* nothing started: the walk comes first */

    /* A start that fails midway: app2 started, app5 fails, app2 stopped. */
    static const char *const deps5[] = {"app2"};
    load(rt, tapp(5, deps5, 1));
    T[5].fail_start = KILN_EBUSY;
    assert_int_equal(kiln_app_ensure_all_started(rt, "app5", KILN_APP_TEMPORARY, &started, &why), KILN_EEXIT);
    char expect[64];
    snprintf(expect, sizeof(expect), "{app5,{kiln_error,%d}}", KILN_EBUSY);
    assert_msg(why, expect);
    assert_which(rt, "");
    wait_log("R2:stopped:temporary;");
    assert_int_equal(atomic_load(&node_stop_calls), 0);
    teardown(rt);
}

/* The top supervisor of a permanent application dies: the node stops.
 * The hook sees {application_terminated, App, Reason}, every other
 * application is stopped most recent first (prep_stop, tree, stop), the
 * controller exits and kiln_app_wait returns the reason. */
static void test_permanent_stops_node(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    load(rt, tapp(1, NULL, 0));
    load(rt, tapp(2, NULL, 0));
    load(rt, tapp(3, NULL, 0));
    assert_int_equal(kiln_app_start(rt, "app1", KILN_APP_TEMPORARY, NULL), KILN_OK);
    assert_int_equal(kiln_app_start(rt, "app2", KILN_APP_PERMANENT, NULL), KILN_OK);
    assert_int_equal(kiln_app_start(rt, "app3", KILN_APP_TRANSIENT, NULL), KILN_OK);

    assert_int_equal(kiln_app_wait(rt, 0, NULL), KILN_ETIMEOUT);
    /* A supervisor traps exits: only kill ends it from outside. */
    assert_int_equal(kiln_rt_exit(rt, sup_of(rt, 2), KILN_ATOM_KILL), KILN_OK);

    kiln_msg *why = NULL;
    assert_int_equal(kiln_app_wait(rt, 10000, &why), KILN_OK);
    assert_msg(why, "{application_terminated,app2,killed}");
    assert_int_equal(atomic_load(&node_stop_calls), 1);
    assert_string_equal(node_stop_reason, "{application_terminated,app2,killed}");
    /* app2's master ran prep_stop and stop when its supervisor died; then
     * app3 and app1 are stopped, most recent first. */
    /* app2's worker dies through its link to the killed supervisor, at
     * any moment: take it out of the order. */
    wait_log("t2");
    char cb[256];
    callbacks_log(cb, sizeof(cb));
    char *t2 = strstr(cb, "t2");
    memmove(t2, t2 + 2, strlen(t2 + 2) + 1);
    assert_string_equal(cb, "s1s2s3p2x2N;p3t3x3p1t1x1");
    /* Reported first, then the hook (t2 may fall in between). */
    pthread_mutex_lock(&log_mu);
    const char *rep = strstr(elog, "R2:killed:permanent;"), *hook = strstr(elog, "N;");
    bool in_order = rep && hook && rep < hook;
    pthread_mutex_unlock(&log_mu);
    assert_true(in_order);
    assert_true(log_has("R3:shutdown:transient;"));
    assert_true(log_has("R1:shutdown:temporary;"));
    assert_false(kiln_is_local_pid(kiln_whereis(rt, A("application_controller"))));

    /* The node is down: calls say so; a second wait returns at once. */
    assert_int_equal(kiln_app_start(rt, "app1", KILN_APP_TEMPORARY, NULL), KILN_ESTOPPED);
    assert_int_equal(kiln_app_load(rt, tapp(4, NULL, 0)), KILN_ESTOPPED);
    assert_int_equal(kiln_app_wait(rt, -1, &why), KILN_OK);
    assert_msg(why, "{application_terminated,app2,killed}");
    teardown(rt);
}

/* The default when no node_stop hook is set: the node stops anyway. And a
 * hook that vetoes keeps it running. */
static void test_node_stop_default_and_veto(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    pthread_mutex_lock(&log_mu);
    elog[0] = '\0';
    pthread_mutex_unlock(&log_mu);
    kiln_app_config cfg = {.report = on_report}; /* node_stop = NULL */
    assert_int_equal(kiln_app_controller_start(rt, &cfg), KILN_OK);
    assert_int_equal(kiln_app_controller_start(rt, &cfg), KILN_ENAME_TAKEN);
    load(rt, tapp(1, NULL, 0));
    assert_int_equal(kiln_app_start(rt, "app1", KILN_APP_PERMANENT, NULL), KILN_OK);
    assert_int_equal(kiln_rt_exit(rt, sup_of(rt, 1), KILN_ATOM_KILL), KILN_OK);
    kiln_msg *why = NULL;
    assert_int_equal(kiln_app_wait(rt, 10000, &why), KILN_OK);
    assert_msg(why, "{application_terminated,app1,killed}");

    /* A new controller on the same runtime replaces the tombstone. */
    assert_int_equal(kiln_app_controller_start(rt, &test_cfg), KILN_OK);
    atomic_store(&node_stop_veto, 1);
    load(rt, tapp(1, NULL, 0));
    load(rt, tapp(2, NULL, 0));
    assert_int_equal(kiln_app_start(rt, "app1", KILN_APP_PERMANENT, NULL), KILN_OK);
    assert_int_equal(kiln_app_start(rt, "app2", KILN_APP_TEMPORARY, NULL), KILN_OK);
    assert_int_equal(kiln_rt_exit(rt, sup_of(rt, 1), KILN_ATOM_KILL), KILN_OK);
    wait_log("N;");
    assert_int_equal(kiln_app_wait(rt, 50, NULL), KILN_ETIMEOUT);
    assert_which(rt, "app2 ");
    teardown(rt);
}

/* Transient: a normal exit of the top process is only reported; an
 * abnormal one stops the node. */
static void test_transient(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    load(rt, tapp(1, NULL, 0));
    load(rt, tapp(2, NULL, 0));
    T[1].top_is_worker = true;
    assert_int_equal(kiln_app_start(rt, "app1", KILN_APP_TRANSIENT, NULL), KILN_OK);
    assert_int_equal(kiln_app_start(rt, "app2", KILN_APP_TRANSIENT, NULL), KILN_OK);

    assert_int_equal(kiln_gs_cast(rt, A(T[1].supname), kiln_test_msg("{exit,normal}")), KILN_OK);
    wait_log("R1:normal:transient;");
    assert_int_equal(kiln_app_wait(rt, 50, NULL), KILN_ETIMEOUT);
    assert_int_equal(atomic_load(&node_stop_calls), 0);
    assert_which(rt, "app2 ");
    /* It ran prep_stop and stop; it can be started again. */
    assert_true(log_has("t1p1x1"));
    assert_int_equal(kiln_app_start(rt, "app1", KILN_APP_TRANSIENT, NULL), KILN_OK);
    assert_which(rt, "app1 app2 ");

    assert_int_equal(kiln_gs_cast(rt, A(T[1].supname), kiln_test_msg("{exit,bad}")), KILN_OK);
    kiln_msg *why = NULL;
    assert_int_equal(kiln_app_wait(rt, 10000, &why), KILN_OK);
    assert_msg(why, "{application_terminated,app1,bad}");
    assert_true(log_has("R2:shutdown:transient;"));
    teardown(rt);
}

/* Temporary: reported only; the others keep running, and an application
 * depending on it can still start (it stays in the started list). */
static void test_temporary(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    static const char *const deps3[] = {"app1"};
    load(rt, tapp(1, NULL, 0));
    load(rt, tapp(2, NULL, 0));
    load(rt, tapp(3, deps3, 1));
    assert_int_equal(kiln_app_start(rt, "app1", KILN_APP_TEMPORARY, NULL), KILN_OK);
    assert_int_equal(kiln_app_start(rt, "app2", KILN_APP_PERMANENT, NULL), KILN_OK);
    kiln_term sup1 = sup_of(rt, 1);
    assert_int_equal(kiln_rt_exit(rt, sup1, KILN_ATOM_KILL), KILN_OK);
    wait_dead(rt, sup1);
    wait_log("R1:killed:temporary;");
    assert_int_equal(atomic_load(&node_stop_calls), 0);
    assert_int_equal(kiln_app_wait(rt, 50, NULL), KILN_ETIMEOUT);
    assert_which(rt, "app2 ");
    assert_true(kiln_is_alive(rt, sup_of(rt, 2)));

    assert_int_equal(kiln_app_start(rt, "app3", KILN_APP_TEMPORARY, NULL), KILN_OK);
    /* Stopping an exited application only forgets it was started. */
    assert_int_equal(kiln_app_stop(rt, "app1"), KILN_OK);
    assert_int_equal(kiln_app_stop(rt, "app1"), KILN_ENOPROC);
    assert_int_equal(kiln_app_start(rt, "app1", KILN_APP_TEMPORARY, NULL), KILN_OK);
    assert_which(rt, "app1 app3 app2 ");
    teardown(rt);
}

/* stop: prep_stop while the tree runs, then the tree is shut down, then
 * stop; reported as stopped; a permanent application stopped this way
 * does not stop the node. */
static void test_stop_order(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    load(rt, tapp(1, NULL, 0));
    T[1].check_in_stop = true;
    assert_int_equal(kiln_app_start(rt, "app1", KILN_APP_PERMANENT, NULL), KILN_OK);
    kiln_term sup = sup_of(rt, 1), w = kiln_whereis(rt, A("w1"));
    assert_true(kiln_is_local_pid(sup));
    assert_int_equal(kiln_app_stop(rt, "app1"), KILN_OK);
    char cb[128];
    callbacks_log(cb, sizeof(cb));
    assert_string_equal(cb, "s1p1t1x1");
    assert_true(log_has("R1:stopped:permanent;"));
    assert_int_equal(atomic_load(&T[1].sup_alive_in_prep), 1);
    assert_int_equal(atomic_load(&T[1].sup_alive_in_stop), 0);
    assert_int_equal(atomic_load(&T[1].worker_alive_in_stop), 0);
    assert_false(kiln_is_alive(rt, sup));
    assert_false(kiln_is_alive(rt, w));
    assert_int_equal(atomic_load(&node_stop_calls), 0);
    assert_int_equal(kiln_app_wait(rt, 20, NULL), KILN_ETIMEOUT);
    assert_int_equal(kiln_app_stop(rt, "app1"), KILN_ENOPROC);
    assert_which(rt, "");
    /* Still loaded: it starts again. */
    assert_int_equal(kiln_app_start(rt, "app1", KILN_APP_TEMPORARY, NULL), KILN_OK);
    teardown(rt);
}

/* Unknown application, started twice, loaded twice, a failed start. */
static void test_errors(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    kiln_msg *why = NULL;
    assert_int_equal(kiln_app_start(rt, "nope", KILN_APP_TEMPORARY, &why), KILN_ENOTREG);
    assert_msg(why, "{not_loaded,nope}");
    assert_int_equal(kiln_app_stop(rt, "nope"), KILN_ENOPROC);
    assert_int_equal(kiln_app_unload(rt, "nope"), KILN_ENOTREG);
    assert_int_equal(kiln_app_start(rt, NULL, KILN_APP_TEMPORARY, NULL), KILN_EINVAL);

    load(rt, tapp(1, NULL, 0));
    assert_int_equal(kiln_app_load(rt, &T[1].app), KILN_ENAME_TAKEN);
    assert_int_equal(kiln_app_start(rt, "app1", KILN_APP_TEMPORARY, NULL), KILN_OK);
    assert_int_equal(kiln_app_start(rt, "app1", KILN_APP_TEMPORARY, &why), KILN_ENAME_TAKEN);
    assert_msg(why, "{already_started,app1}");
    assert_int_equal(kiln_app_ensure_started(rt, "app1", KILN_APP_TEMPORARY, NULL), KILN_OK);

    /* A bad env literal is refused at load. */
    kiln_application bad = {.name = "bad", .env = (const kiln_app_env[]){{"k", "{unclosed"}}, .nenv = 1};
    assert_int_equal(kiln_app_load(rt, &bad), KILN_EINVAL);

    /* A temporary start that fails: an error, the node runs on. */
    load(rt, tapp(2, NULL, 0));
    T[2].fail_start = KILN_ENOMEM;
    assert_int_equal(kiln_app_start(rt, "app2", KILN_APP_TEMPORARY, &why), KILN_EEXIT);
    char expect[64];
    snprintf(expect, sizeof(expect), "{kiln_error,%d}", KILN_ENOMEM);
    assert_msg(why, expect);
    assert_int_equal(atomic_load(&node_stop_calls), 0);
    assert_which(rt, "app1 ");

    /* A permanent start that fails stops the node (OTP's
     * application_start_failure). */
    assert_int_equal(kiln_app_start(rt, "app2", KILN_APP_PERMANENT, &why), KILN_EEXIT);
    kiln_msg_free(why);
    assert_int_equal(kiln_app_wait(rt, 10000, &why), KILN_OK);
    snprintf(expect, sizeof(expect), "{application_start_failure,app2,{kiln_error,%d}}", KILN_ENOMEM);
    assert_msg(why, expect);
    assert_true(log_has("p1t1x1"));
    teardown(rt);
}

/* get_env / set_env / unset_env / get_all_env: defaults from the spec,
 * copies both ways, readable inside start, cleared by unload. */
static void test_env(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    kiln_msg *out = kiln_msg_new(64);
    kiln_term v;
    assert_int_equal(kiln_app_get_env(rt, "app1", "port", out, &v), KILN_ENOTREG);

    /* Set before load: the default then overwrites it, as OTP's add_env. */
    assert_int_equal(kiln_app_set_env(rt, "app1", "port", kiln_small(1)), KILN_OK);
    assert_int_equal(kiln_app_set_env(rt, "app1", "extra", A("kept")), KILN_OK);
    load(rt, tapp(1, NULL, 0));
    assert_int_equal(kiln_app_get_env(rt, "app1", "port", out, &v), KILN_OK);
    assert_term(v, "8080");
    assert_int_equal(kiln_app_get_env(rt, "app1", "pool", out, &v), KILN_OK);
    assert_term(v, "{pool,[a,b],\"db\"}");
    assert_int_equal(kiln_app_get_env(rt, "app1", "extra", out, &v), KILN_OK);
    assert_term(v, "kept");

    /* set_env copies: the caller's message may go. */
    kiln_msg *m = kiln_msg_new(64);
    kiln_term big = kiln_build(m, "{cfg,~i,[~s],#{k => v}}", (int64_t)1 << 62, "x");
    assert_int_equal(kiln_app_set_env(rt, "app1", "cfg", big), KILN_OK);
    kiln_msg_free(m);
    assert_int_equal(kiln_app_set_env(rt, "app1", "port", kiln_small(9090)), KILN_OK);
    kiln_msg_free(out);
    out = kiln_msg_new(16);
    assert_int_equal(kiln_app_get_env(rt, "app1", "cfg", out, &v), KILN_OK);
    assert_term(v, "{cfg,4611686018427387904,[\"x\"],#{k => v}}");

    kiln_msg *all = NULL;
    assert_int_equal(kiln_app_get_all_env(rt, "app1", &all), KILN_OK);
    assert_msg(all, "[{port,9090},{extra,kept},{pool,{pool,[a,b],\"db\"}},"
                    "{cfg,{cfg,4611686018427387904,[\"x\"],#{k => v}}}]");

    /* start reads its env without waiting for the controller. */
    assert_int_equal(kiln_app_start(rt, "app1", KILN_APP_TEMPORARY, NULL), KILN_OK);
    assert_int_equal(atomic_load(&T[1].env_seen), 9090);

    assert_int_equal(kiln_app_unset_env(rt, "app1", "port"), KILN_OK);
    assert_int_equal(kiln_app_unset_env(rt, "app1", "port"), KILN_OK);
    assert_int_equal(kiln_app_get_env(rt, "app1", "port", out, &v), KILN_ENOTREG);

    assert_int_equal(kiln_app_stop(rt, "app1"), KILN_OK);
    assert_int_equal(kiln_app_unload(rt, "app1"), KILN_OK);
    assert_int_equal(kiln_app_get_env(rt, "app1", "cfg", out, &v), KILN_ENOTREG);
    kiln_msg_free(out);
    teardown(rt);
}

/* kiln_app_shutdown: every application stopped, most recent first; wait
 * returns shutdown; the hook is not asked. A library application (no
 * start callback) runs without processes. */
static void test_shutdown_and_library(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    kiln_application lib = {.name = "lib", .vsn = "2"};
    static const char *const deps2[] = {"lib"};
    assert_int_equal(kiln_app_load(rt, &lib), KILN_OK);
    load(rt, tapp(1, NULL, 0));
    load(rt, tapp(2, deps2, 1));
    kiln_msg *started = NULL;
    assert_int_equal(kiln_app_ensure_all_started(rt, "app2", KILN_APP_PERMANENT, &started, NULL), KILN_OK);
    assert_msg(started, "[lib,app2]");
    assert_int_equal(kiln_app_start(rt, "app1", KILN_APP_PERMANENT, NULL), KILN_OK);
    assert_which(rt, "app1 app2 lib ");

    kiln_msg *loaded = NULL;
    assert_int_equal(kiln_app_loaded_applications(rt, &loaded), KILN_OK);
    assert_int_equal(kiln_list_length(kiln_msg_term(loaded)), 3);
    kiln_msg_free(loaded);

    assert_int_equal(kiln_app_shutdown(rt), KILN_OK);
    kiln_msg *why = NULL;
    assert_int_equal(kiln_app_wait(rt, 10000, &why), KILN_OK);
    assert_msg(why, "shutdown");
    char cb[128];
    callbacks_log(cb, sizeof(cb));
    assert_string_equal(cb, "s2s1p1t1x1p2t2x2");
    assert_true(log_has("Rlib:shutdown:permanent;"));
    assert_int_equal(atomic_load(&node_stop_calls), 0);
    teardown(rt);
}

/* From inside a process (rt NULL), and a start callback that starts
 * another application: the controller is not blocked while start runs. */
struct inproc {
    int rc1, rc2;
};

static void inproc_body(void *arg)
{
    struct inproc *p = arg;
    p->rc1 = kiln_app_start(NULL, "app1", KILN_APP_TEMPORARY, NULL);
    p->rc2 = kiln_app_stop(NULL, "app2");
}

static void test_in_process_and_nested_start(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    load(rt, tapp(1, NULL, 0));
    load(rt, tapp(2, NULL, 0));
    T[1].start_also = "app2";
    struct inproc p = {0};
    kiln_test_run_in_process(rt, inproc_body, &p, 10000);
    assert_int_equal(p.rc1, KILN_OK);
    assert_int_equal(p.rc2, KILN_OK);
    assert_which(rt, "app1 ");
    assert_true(log_has("s2s1"));
    teardown(rt);
}

/* kiln_rt_stop with applications running: the masters are ended from
 * outside; stop still runs (in the exit path) so state can be freed. */
static void test_rt_stop_with_apps(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    load(rt, tapp(1, NULL, 0));
    /* A worker as the top process: a supervisor killed in the middle of
     * shutting its children down leaks (see teardown). */
    T[1].top_is_worker = true;
    assert_int_equal(kiln_app_start(rt, "app1", KILN_APP_PERMANENT, NULL), KILN_OK);
    kiln_term sup = sup_of(rt, 1);
    assert_true(kiln_is_local_pid(sup));
    kiln_rt_stop(rt);
    assert_true(log_has("x1"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dependency_order),
        cmocka_unit_test(test_ensure_all_started_errors),
        cmocka_unit_test(test_permanent_stops_node),
        cmocka_unit_test(test_node_stop_default_and_veto),
        cmocka_unit_test(test_transient),
        cmocka_unit_test(test_temporary),
        cmocka_unit_test(test_stop_order),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_shutdown_and_library),
        cmocka_unit_test(test_in_process_and_nested_start),
        cmocka_unit_test(test_rt_stop_with_apps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
