/* supervisor semantics, after OTP's supervisor_SUITE: the strategies and
 * their order of termination and restart, restart types, restart
 * intensity and period, escalation, shutdown brutal_kill / timeout /
 * infinity, the child management calls, init failures, significant
 * children and auto_shutdown, retries after a failed restart. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln/supervisor.h"
#include "testutil.h"

#define NW 8

/* What every worker reports, reset per test. */
static struct world {
    _Atomic long starts[NW], terms[NW];
    _Atomic int fail_starts[NW]; /* this many next starts fail */
    _Atomic int ignore[NW];      /* the next start returns ignore */
    _Atomic int len;
    char log[512];               /* "s1" start of worker 1, "t1" its terminate */
} W;

static void reset(void) { memset(&W, 0, sizeof(W)); }

static void logev(char what, int i)
{
    int at = atomic_fetch_add(&W.len, 2);
    if (at + 2 < (int)sizeof(W.log)) {
        W.log[at] = what;
        W.log[at + 1] = (char)('0' + i);
    }
}

static kiln_term A(const char *s) { return kiln_atom_c(s); }

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- a gen_server worker, id i, registered as "w<i>" ---- */

struct wst {
    int i;
};

static kiln_gs_ret w_init(void *arg, void **state)
{
    int i = (int)(intptr_t)arg;
    if (atomic_load(&W.fail_starts[i]) > 0) {
        atomic_fetch_sub(&W.fail_starts[i], 1);
        return kiln_gs_stop(A("start_refused"));
    }
    if (atomic_exchange(&W.ignore[i], 0))
        return kiln_gs_ignore();
    struct wst *s = malloc(sizeof(*s));
    s->i = i;
    *state = s;
    /* Log first: a test that waits for the counter then sees the entry. */
    logev('s', i);
    atomic_fetch_add(&W.starts[i], 1);
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

static kiln_gs_ret w_call(void *state, kiln_term req, kiln_term from)
{
    (void)state;
    (void)req;
    (void)from;
    return kiln_gs_reply(KILN_ATOM_OK);
}

static void w_terminate(void *state, kiln_term reason)
{
    struct wst *s = state;
    logev('t', s->i);
    atomic_fetch_add(&W.terms[s->i], 1);
    free(s);
}

static const kiln_gen_server worker = {
    .name = "worker", .init = w_init, .handle_call = w_call, .handle_cast = w_cast, .terminate = w_terminate};

static const char *const wnames[NW] = {"w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7"};
static kiln_gs_child wchild[NW];

static kiln_child_spec wspec(int i, kiln_restart restart)
{
    wchild[i] = (kiln_gs_child){.gs = &worker, .arg = (void *)(intptr_t)i, .opts = {.name = wnames[i]}};
    return (kiln_child_spec){.id = wnames[i], .start = kiln_gs_child_start, .arg = &wchild[i], .restart = restart};
}

/* Make worker i exit with reason (a term built from fmt). */
static void crash(kiln_rt *rt, int i, const char *reason_fmt)
{
    kiln_msg *m = kiln_msg_new(64);
    kiln_msg_set_term(m, kiln_tuple(m, 2, A("exit"), kiln_build(m, reason_fmt)));
    assert_int_equal(kiln_gs_cast(rt, A(wnames[i]), m), KILN_OK);
}

static kiln_term wpid(kiln_rt *rt, int i) { return kiln_whereis(rt, A(wnames[i])); }

/* Wait until worker i runs as a new, initialised process (restarted).
 * The name is registered at spawn, before init has run (or failed), so a
 * call makes sure init is done. */
static kiln_term wait_new_pid(kiln_rt *rt, int i, kiln_term old)
{
    for (int k = 0; k < 5000; k++) {
        kiln_term p = wpid(rt, i);
        kiln_msg *reply = NULL;
        if (kiln_is_local_pid(p) && !kiln_term_eq(p, old) &&
            kiln_gs_call(rt, p, kiln_test_msg("ping"), 5000, &reply, NULL) == KILN_OK) {
            kiln_msg_free(reply);
            return p;
        }
        sleep_ms(1);
    }
    fail_msg("worker %d was not restarted", i);
    return KILN_NONE;
}

static void wait_dead(kiln_rt *rt, kiln_term pid)
{
    for (int k = 0; k < 5000 && kiln_is_alive(rt, pid); k++)
        sleep_ms(1);
    assert_false(kiln_is_alive(rt, pid));
}

/* ---- a watcher: records how a process ended ---- */

struct watch {
    kiln_term pid;
    _Atomic int ready, done;
    _Atomic uint64_t reason; /* an atom, or a tuple's first element */
};

static bool any_down(kiln_term t, void *arg)
{
    (void)arg;
    return kiln_is_tuple(t) && kiln_tuple_arity(t) == 5 && kiln_tuple_get(t, 0) == KILN_ATOM_DOWN;
}

static void watch_body(void *arg)
{
    struct watch *w = arg;
    kiln_msg *rm = kiln_msg_new(64), *m;
    kiln_term ref;
    kiln_monitor(w->pid, rm, &ref);
    atomic_store(&w->ready, 1);
    if (kiln_receive(any_down, NULL, -1, &m) == KILN_OK) {
        kiln_term r = kiln_tuple_get(kiln_msg_term(m), 4);
        atomic_store(&w->reason, kiln_is_tuple(r) ? kiln_tuple_get(r, 0) : r);
        kiln_msg_free(m);
    }
    kiln_msg_free(rm);
    atomic_store(&w->done, 1);
}

static void watch(kiln_rt *rt, struct watch *w, kiln_term pid)
{
    memset(w, 0, sizeof(*w));
    w->pid = pid;
    kiln_term p;
    assert_int_equal(kiln_spawn_fn(rt, watch_body, w, NULL, &p), KILN_OK);
    assert_true(kiln_test_wait_flag(&w->ready, 5000));
}

/* Sync with a supervisor: every signal sent to it before is handled. */
static kiln_sup_counts counts(kiln_rt *rt, kiln_term sup)
{
    kiln_sup_counts c;
    assert_int_equal(kiln_sup_count_children(rt, sup, &c), KILN_OK);
    return c;
}

/* The counts once the supervisor shows specs and active (within 5 s). A
 * child seen dead may not be handled yet: its 'EXIT' and our call reach
 * the supervisor from two senders, in no set order. */
static kiln_sup_counts counts_once(kiln_rt *rt, kiln_term sup, size_t specs, size_t active)
{
    kiln_sup_counts c = counts(rt, sup);
    for (int i = 0; i < 5000 && !(c.specs == specs && c.active == active); i++) {
        sleep_ms(1);
        c = counts(rt, sup);
    }
    return c;
}

static kiln_term start_sup(kiln_rt *rt, kiln_sup_strategy strat, int intensity, const kiln_child_spec *kids,
                           size_t n)
{
    kiln_sup_spec spec = {.strategy = strat, .intensity = intensity, .period_ms = 5000, .children = kids, .nchildren = n};
    kiln_term pid = KILN_NONE;
    assert_int_equal(kiln_sup_start(rt, &spec, NULL, &pid, NULL), KILN_OK);
    return pid;
}

static kiln_rt *setup(void)
{
    reset();
    return kiln_test_rt(2, NULL);
}

/* ---- tests ---- */

static void test_start_which_count_stop(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    kiln_child_spec kids[3] = {wspec(0, KILN_PERMANENT), wspec(1, KILN_PERMANENT), wspec(2, KILN_PERMANENT)};
    kiln_term sup = start_sup(rt, KILN_ONE_FOR_ONE, 1, kids, 3);
    assert_string_equal(W.log, "s0s1s2");

    kiln_msg *m;
    assert_int_equal(kiln_sup_which_children(rt, sup, &m), KILN_OK);
    kiln_term l = kiln_msg_term(m), p0, p1, p2;
    assert_int_equal(kiln_match(l, "[{w0,~p,worker,[]},{w1,~p,worker,[]},{w2,~p,worker,[]}]", &p0, &p1, &p2), KILN_OK);
    assert_true(kiln_term_eq(p0, wpid(rt, 0)) && kiln_term_eq(p2, wpid(rt, 2)));
    kiln_msg_free(m);
    kiln_sup_counts c = counts(rt, sup);
    assert_int_equal(c.specs, 3);
    assert_int_equal(c.active, 3);
    assert_int_equal(c.workers, 3);
    assert_int_equal(c.supervisors, 0);

    /* Stopping the supervisor shuts the children down in reverse order. */
    assert_int_equal(kiln_gs_stop_server(rt, sup, KILN_ATOM_SHUTDOWN, 10000), KILN_OK);
    assert_string_equal(W.log, "s0s1s2t2t1t0");
    assert_int_equal(kiln_rt_wait_idle(rt, 5000), KILN_OK);
    kiln_rt_stop(rt);
}

static void test_one_for_one(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    kiln_child_spec kids[3] = {wspec(0, KILN_PERMANENT), wspec(1, KILN_PERMANENT), wspec(2, KILN_PERMANENT)};
    kiln_term sup = start_sup(rt, KILN_ONE_FOR_ONE, 3, kids, 3);
    kiln_term p0 = wpid(rt, 0), p1 = wpid(rt, 1), p2 = wpid(rt, 2);
    crash(rt, 1, "boom");
    kiln_term n1 = wait_new_pid(rt, 1, p1);
    assert_false(kiln_term_eq(n1, p1));
    assert_true(kiln_term_eq(wpid(rt, 0), p0));
    assert_true(kiln_term_eq(wpid(rt, 2), p2));
    assert_int_equal(atomic_load(&W.starts[0]), 1);
    assert_int_equal(atomic_load(&W.starts[1]), 2);
    assert_int_equal(atomic_load(&W.starts[2]), 1);
    /* A permanent child is restarted even after a normal exit. */
    crash(rt, 0, "normal");
    wait_new_pid(rt, 0, p0);
    assert_int_equal(atomic_load(&W.starts[0]), 2);
    assert_true(kiln_is_alive(rt, sup));
    kiln_rt_stop(rt);
}

static void test_transient_and_temporary(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    kiln_child_spec kids[3] = {wspec(0, KILN_TRANSIENT), wspec(1, KILN_TRANSIENT), wspec(2, KILN_TEMPORARY)};
    kiln_term sup = start_sup(rt, KILN_ONE_FOR_ONE, 10, kids, 3);
    /* transient: normal, shutdown and {shutdown, _} are not restarted... */
    kiln_term p0 = wpid(rt, 0);
    crash(rt, 0, "normal");
    wait_dead(rt, p0);
    kiln_term p1 = wpid(rt, 1);
    crash(rt, 1, "{shutdown,done}");
    wait_dead(rt, p1);
    kiln_sup_counts c = counts_once(rt, sup, 3, 1);
    assert_int_equal(c.specs, 3);
    assert_int_equal(c.active, 1);
    assert_int_equal(atomic_load(&W.starts[0]), 1);
    assert_int_equal(atomic_load(&W.starts[1]), 1);
    kiln_msg *m;
    assert_int_equal(kiln_sup_which_children(rt, sup, &m), KILN_OK);
    assert_int_equal(kiln_match(kiln_msg_term(m), "[{w0,undefined,worker,[]},{w1,undefined,worker,[]},{w2,_,worker,[]}]"),
                     KILN_OK);
    kiln_msg_free(m);
    /* ...an abnormal exit is. */
    assert_int_equal(kiln_sup_restart_child(rt, sup, A("w0"), &p0), KILN_OK);
    crash(rt, 0, "boom");
    wait_new_pid(rt, 0, p0);
    assert_int_equal(atomic_load(&W.starts[0]), 3);
    /* temporary: never restarted, and its spec is gone. */
    kiln_term p2 = wpid(rt, 2);
    crash(rt, 2, "boom");
    wait_dead(rt, p2);
    c = counts_once(rt, sup, 2, 1);
    assert_int_equal(c.specs, 2);
    assert_int_equal(atomic_load(&W.starts[2]), 1);
    kiln_rt_stop(rt);
}

static void test_one_for_all(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    kiln_child_spec kids[3] = {wspec(0, KILN_PERMANENT), wspec(1, KILN_PERMANENT), wspec(2, KILN_PERMANENT)};
    kiln_term sup = start_sup(rt, KILN_ONE_FOR_ALL, 3, kids, 3);
    kiln_term p0 = wpid(rt, 0), p2 = wpid(rt, 2);
    crash(rt, 1, "boom");
    assert_true(kiln_test_wait_count(&W.starts[2], 2, 5000));
    counts(rt, sup);
    /* The others stop in reverse order, then all start in order. */
    assert_string_equal(W.log, "s0s1s2t1t2t0s0s1s2");
    assert_false(kiln_is_alive(rt, p0));
    assert_false(kiln_is_alive(rt, p2));
    kiln_rt_stop(rt);
}

static void test_rest_for_one(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    kiln_child_spec kids[4] = {wspec(0, KILN_PERMANENT), wspec(1, KILN_PERMANENT), wspec(2, KILN_PERMANENT),
                               wspec(3, KILN_PERMANENT)};
    kiln_term sup = start_sup(rt, KILN_REST_FOR_ONE, 3, kids, 4);
    kiln_term p0 = wpid(rt, 0);
    crash(rt, 1, "boom");
    assert_true(kiln_test_wait_count(&W.starts[3], 2, 5000));
    counts(rt, sup);
    /* Only the children after the failed one: stopped last-first, then
     * restarted in order with it. */
    assert_string_equal(W.log, "s0s1s2s3t1t3t2s1s2s3");
    assert_true(kiln_term_eq(wpid(rt, 0), p0));
    kiln_rt_stop(rt);
}

static void test_intensity_exceeded(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    kiln_child_spec kids[2] = {wspec(0, KILN_PERMANENT), wspec(1, KILN_PERMANENT)};
    kiln_term sup = start_sup(rt, KILN_ONE_FOR_ONE, 2, kids, 2);
    struct watch w;
    watch(rt, &w, sup);
    counts(rt, sup);
    for (int k = 1; k <= 2; k++) {
        kiln_term p = wpid(rt, 0);
        crash(rt, 0, "boom");
        wait_new_pid(rt, 0, p);
    }
    assert_true(kiln_is_alive(rt, sup)); /* 2 restarts in the period: allowed */
    crash(rt, 0, "boom");                /* the third is one too many */
    assert_true(kiln_test_wait_flag(&w.done, 5000));
    assert_int_equal(atomic_load(&w.reason), KILN_ATOM_SHUTDOWN);
    /* The other child was shut down with it. */
    assert_int_equal(atomic_load(&W.terms[1]), 1);
    assert_int_equal(atomic_load(&W.starts[0]), 3);
    kiln_rt_stop(rt);
}

static void test_intensity_period(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    kiln_child_spec kids[1] = {wspec(0, KILN_PERMANENT)};
    kiln_sup_spec spec = {.strategy = KILN_ONE_FOR_ONE, .intensity = 1, .period_ms = 150, .children = kids, .nchildren = 1};
    kiln_term sup;
    assert_int_equal(kiln_sup_start(rt, &spec, NULL, &sup, NULL), KILN_OK);
    /* One restart per 150 ms is fine when they are spaced further apart. */
    for (int k = 0; k < 3; k++) {
        kiln_term p = wpid(rt, 0);
        crash(rt, 0, "boom");
        wait_new_pid(rt, 0, p);
        sleep_ms(250);
    }
    assert_true(kiln_is_alive(rt, sup));
    /* Two within the period are not. */
    kiln_term p = wpid(rt, 0);
    crash(rt, 0, "boom");
    wait_new_pid(rt, 0, p);
    crash(rt, 0, "boom");
    wait_dead(rt, sup);
    kiln_rt_stop(rt);
}

/* A supervisor that exceeds its intensity exits with shutdown; its
 * supervisor sees a (permanent) child exit and restarts it. */
static void test_escalation(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    static kiln_child_spec inner_kids[1];
    inner_kids[0] = wspec(0, KILN_PERMANENT);
    static kiln_sup_spec inner = {.strategy = KILN_ONE_FOR_ONE, .intensity = 0, .children = inner_kids, .nchildren = 1};
    kiln_child_spec outer_kids[2] = {
        {.id = "inner", .start = kiln_sup_child_start, .arg = &inner, .type = KILN_SUPERVISOR},
        wspec(1, KILN_PERMANENT),
    };
    kiln_term top = start_sup(rt, KILN_ONE_FOR_ONE, 5, outer_kids, 2);
    kiln_msg *m;
    kiln_term inner1, inner2;
    assert_int_equal(kiln_sup_which_children(rt, top, &m), KILN_OK);
    assert_int_equal(kiln_match(kiln_msg_term(m), "[{inner,~p,supervisor,[]},{w1,_,worker,[]}]", &inner1), KILN_OK);
    kiln_msg_free(m);
    kiln_sup_counts c = counts(rt, top);
    assert_int_equal(c.supervisors, 1);
    assert_int_equal(c.workers, 1);

    kiln_term p0 = wpid(rt, 0), p1 = wpid(rt, 1);
    crash(rt, 0, "boom"); /* intensity 0: the inner supervisor gives up */
    wait_new_pid(rt, 0, p0);
    wait_dead(rt, inner1);
    /* Dead, and then restarted by the top once it has the 'EXIT'. */
    for (int i = 0; i < 5000; i++) {
        assert_int_equal(kiln_sup_which_children(rt, top, &m), KILN_OK);
        assert_int_equal(kiln_match(kiln_msg_term(m), "[{inner,~t,supervisor,[]}|_]", &inner2), KILN_OK);
        kiln_msg_free(m);
        if (kiln_is_pid(inner2) && !kiln_term_eq(inner1, inner2))
            break;
        sleep_ms(1);
    }
    assert_true(kiln_is_pid(inner2));
    assert_false(kiln_term_eq(inner1, inner2));
    assert_true(kiln_term_eq(wpid(rt, 1), p1)); /* one_for_one at the top */
    assert_int_equal(atomic_load(&W.starts[0]), 2);
    kiln_rt_stop(rt);
}

/* ---- shutdown ---- */

struct stubborn {
    int64_t linger_ms; /* after the shutdown request; < 0: never leaves */
    _Atomic int got_shutdown;
};

static void stubborn_body(void *arg)
{
    struct stubborn *s = arg;
    kiln_trap_exit(true);
    kiln_msg *m;
    for (;;) {
        if (kiln_receive(NULL, NULL, -1, &m) != KILN_OK)
            continue;
        bool shut = kiln_match(kiln_msg_term(m), "{'EXIT',_,shutdown}") == KILN_OK;
        kiln_msg_free(m);
        if (shut) {
            atomic_store(&s->got_shutdown, 1);
            if (s->linger_ms >= 0) {
                kiln_sleep((uint64_t)s->linger_ms);
                kiln_stop(KILN_ATOM_SHUTDOWN);
            }
        }
    }
}

static int stubborn_start(void *arg, kiln_term extra, kiln_term *pid)
{
    (void)extra;
    kiln_spawn_opts o = {.link = true};
    return kiln_spawn_fn(kiln_current_rt(), stubborn_body, arg, &o, pid);
}

static int64_t timed_terminate(kiln_rt *rt, kiln_term sup, const char *id)
{
    uint64_t t0 = kiln_now_ms();
    assert_int_equal(kiln_sup_terminate_child(rt, sup, A(id)), KILN_OK);
    return (int64_t)(kiln_now_ms() - t0);
}

static void test_shutdown_modes(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    struct stubborn never = {.linger_ms = -1}, never2 = {.linger_ms = -1}, slow = {.linger_ms = 300};
    kiln_child_spec kids[3] = {
        {.id = "brutal", .start = stubborn_start, .arg = &never, .shutdown_ms = KILN_SHUTDOWN_BRUTAL_KILL},
        {.id = "timeout", .start = stubborn_start, .arg = &never2, .shutdown_ms = 100},
        {.id = "infinity", .start = stubborn_start, .arg = &slow, .shutdown_ms = KILN_SHUTDOWN_INFINITY},
    };
    kiln_term sup = start_sup(rt, KILN_ONE_FOR_ONE, 1, kids, 3);
    kiln_msg *m;
    kiln_term pb, pt, pi;
    assert_int_equal(kiln_sup_which_children(rt, sup, &m), KILN_OK);
    assert_int_equal(kiln_match(kiln_msg_term(m), "[{brutal,~p,_,_},{timeout,~p,_,_},{infinity,~p,_,_}]", &pb, &pt, &pi),
                     KILN_OK);
    kiln_msg_free(m);

    /* brutal_kill: killed at once, never asked. */
    assert_true(timed_terminate(rt, sup, "brutal") < 1000);
    assert_false(kiln_is_alive(rt, pb));
    assert_int_equal(atomic_load(&never.got_shutdown), 0);
    /* A timeout: asked, then killed when it passes. */
    int64_t took = timed_terminate(rt, sup, "timeout");
    assert_true(took >= 100 && took < 2000);
    assert_int_equal(atomic_load(&never2.got_shutdown), 1);
    assert_false(kiln_is_alive(rt, pt));
    /* infinity: waits as long as the child takes. */
    took = timed_terminate(rt, sup, "infinity");
    assert_true(took >= 300);
    assert_false(kiln_is_alive(rt, pi));
    /* Terminated by the supervisor: not restarted, specs kept. */
    kiln_sup_counts c = counts(rt, sup);
    assert_int_equal(c.specs, 3);
    assert_int_equal(c.active, 0);
    kiln_rt_stop(rt);
}

/* ---- child management ---- */

static int failing_start(void *arg, kiln_term extra, kiln_term *pid)
{
    (void)arg;
    (void)extra;
    (void)pid;
    return KILN_ESYS;
}

static void test_child_management(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    kiln_child_spec kids[1] = {wspec(0, KILN_PERMANENT)};
    kiln_term sup = start_sup(rt, KILN_ONE_FOR_ONE, 3, kids, 1);
    kiln_term p;
    /* start_child */
    kiln_child_spec s1 = wspec(1, KILN_PERMANENT);
    assert_int_equal(kiln_sup_start_child(rt, sup, &s1, &p), KILN_OK);
    assert_true(kiln_term_eq(p, wpid(rt, 1)));
    kiln_term again;
    assert_int_equal(kiln_sup_start_child(rt, sup, &s1, &again), KILN_ENAME_TAKEN); /* already_started */
    assert_true(kiln_term_eq(again, p));
    /* running children cannot be restarted or deleted */
    assert_int_equal(kiln_sup_restart_child(rt, sup, A("w1"), &again), KILN_EBUSY);
    assert_int_equal(kiln_sup_delete_child(rt, sup, A("w1")), KILN_EBUSY);
    /* terminate_child keeps the spec (permanent) and does not restart */
    assert_int_equal(kiln_sup_terminate_child(rt, sup, A("w1")), KILN_OK);
    assert_false(kiln_is_alive(rt, p));
    assert_int_equal(atomic_load(&W.starts[1]), 1);
    assert_int_equal(kiln_sup_start_child(rt, sup, &s1, &again), KILN_ENAME_TAKEN); /* already_present */
    assert_true(kiln_is_none(again));
    assert_int_equal(kiln_sup_restart_child(rt, sup, A("w1"), &p), KILN_OK);
    assert_true(kiln_term_eq(p, wpid(rt, 1)));
    /* by pid also works for a static supervisor */
    assert_int_equal(kiln_sup_terminate_child(rt, sup, p), KILN_OK);
    assert_int_equal(kiln_sup_delete_child(rt, sup, A("w1")), KILN_OK);
    assert_int_equal(kiln_sup_delete_child(rt, sup, A("w1")), KILN_ENOTREG);
    assert_int_equal(kiln_sup_restart_child(rt, sup, A("nope"), &p), KILN_ENOTREG);
    assert_int_equal(kiln_sup_terminate_child(rt, sup, A("nope")), KILN_ENOTREG);
    /* a failing start is the start's error; the spec is not kept */
    kiln_child_spec bad = {.id = "bad", .start = failing_start};
    assert_int_equal(kiln_sup_start_child(rt, sup, &bad, &p), KILN_ESYS);
    /* ignore: {ok, undefined}, the spec is kept */
    atomic_store(&W.ignore[2], 1);
    kiln_child_spec s2 = wspec(2, KILN_PERMANENT);
    assert_int_equal(kiln_sup_start_child(rt, sup, &s2, &p), KILN_OK);
    assert_true(kiln_is_none(p));
    /* invalid specs */
    kiln_child_spec sig = wspec(3, KILN_PERMANENT);
    sig.significant = true;
    assert_int_equal(kiln_sup_start_child(rt, sup, &sig, &p), KILN_EINVAL);
    kiln_sup_counts c = counts(rt, sup);
    assert_int_equal(c.specs, 2); /* w0, w2 */
    assert_int_equal(c.active, 1);
    /* terminating a temporary child deletes its spec */
    kiln_child_spec t4 = wspec(4, KILN_TEMPORARY);
    assert_int_equal(kiln_sup_start_child(rt, sup, &t4, &p), KILN_OK);
    assert_int_equal(kiln_sup_terminate_child(rt, sup, A("w4")), KILN_OK);
    assert_int_equal(kiln_sup_restart_child(rt, sup, A("w4"), &p), KILN_ENOTREG);
    kiln_rt_stop(rt);
}

static void test_init_failure(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    atomic_store(&W.fail_starts[2], 1);
    kiln_child_spec kids[4] = {wspec(0, KILN_PERMANENT), wspec(1, KILN_PERMANENT), wspec(2, KILN_PERMANENT),
                               wspec(3, KILN_PERMANENT)};
    kiln_sup_spec spec = {.strategy = KILN_ONE_FOR_ONE, .intensity = 1, .children = kids, .nchildren = 4};
    kiln_term sup;
    kiln_msg *why = NULL;
    assert_int_equal(kiln_sup_start(rt, &spec, "failing_sup", &sup, &why), KILN_EEXIT);
    assert_non_null(why);
    assert_int_equal(kiln_match(kiln_msg_term(why), "{shutdown,{failed_to_start_child,w2,{kiln_error,_}}}"), KILN_OK);
    kiln_msg_free(why);
    /* The ones already started were shut down, last first; w3 never ran. */
    assert_string_equal(W.log, "s0s1t1t0");
    assert_true(kiln_is_none(kiln_whereis(rt, A("failing_sup"))));
    /* Bad specs fail the start too. */
    kiln_child_spec perm_sig = wspec(0, KILN_PERMANENT);
    perm_sig.significant = true;
    spec.children = &perm_sig;
    spec.nchildren = 1;
    assert_int_equal(kiln_sup_start(rt, &spec, NULL, &sup, NULL), KILN_EEXIT);
    kiln_child_spec dup[2] = {wspec(0, KILN_PERMANENT), wspec(0, KILN_PERMANENT)};
    spec.children = dup;
    spec.nchildren = 2;
    assert_int_equal(kiln_sup_start(rt, &spec, NULL, &sup, NULL), KILN_EEXIT);
    kiln_rt_stop(rt);
}

/* ---- simple_one_for_one ---- */

struct sworker {
    int64_t i;
};

static kiln_gs_ret sw_init(void *arg, void **state)
{
    struct sworker *s = malloc(sizeof(*s));
    s->i = (int64_t)(intptr_t)arg;
    *state = s;
    atomic_fetch_add(&W.starts[s->i], 1);
    return kiln_gs_ok();
}

static void sw_terminate(void *state, kiln_term reason)
{
    struct sworker *s = state;
    atomic_fetch_add(&W.terms[s->i], 1);
    free(s);
}

static const kiln_gen_server sworker_gs = {.name = "sworker", .init = sw_init, .handle_cast = w_cast, .terminate = sw_terminate};

/* extra is {Index}: the child's arg comes from start_child. */
static int sw_start(void *arg, kiln_term extra, kiln_term *pid)
{
    (void)arg;
    int64_t i;
    if (kiln_match(extra, "{~i}", &i) != KILN_OK)
        return KILN_EBADARG;
    return kiln_gs_start_link(&sworker_gs, (void *)(intptr_t)i, NULL, pid, NULL);
}

static void test_simple_one_for_one(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    kiln_child_spec tmpl = {.id = "sw", .start = sw_start, .restart = KILN_PERMANENT, .shutdown_ms = 1000};
    kiln_term sup = start_sup(rt, KILN_SIMPLE_ONE_FOR_ONE, 5, &tmpl, 1);
    kiln_term pids[3];
    kiln_msg *m = kiln_msg_new(64);
    for (int64_t i = 0; i < 3; i++)
        assert_int_equal(kiln_sup_start_child_extra(rt, sup, kiln_build(m, "{~i}", i), &pids[i]), KILN_OK);
    kiln_msg_free(m);
    kiln_sup_counts c = counts(rt, sup);
    assert_int_equal(c.specs, 1);
    assert_int_equal(c.active, 3);
    assert_int_equal(c.workers, 3);
    assert_int_equal(kiln_sup_which_children(rt, sup, &m), KILN_OK);
    assert_int_equal(kiln_list_length(kiln_msg_term(m)), 3);
    assert_int_equal(kiln_match(kiln_msg_term(m), "[{undefined,_,worker,[]}|_]"), KILN_OK);
    kiln_msg_free(m);

    /* A crash restarts that child with its own extra. */
    kiln_msg *cm = kiln_test_msg("{exit,boom}");
    assert_int_equal(kiln_gs_cast(rt, pids[1], cm), KILN_OK);
    assert_true(kiln_test_wait_count(&W.starts[1], 2, 5000));
    assert_int_equal(atomic_load(&W.starts[0]), 1);
    assert_int_equal(atomic_load(&W.starts[2]), 1);
    assert_int_equal(counts(rt, sup).active, 3);

    /* terminate_child takes a pid; an id is the wrong call here. */
    assert_int_equal(kiln_sup_terminate_child(rt, sup, pids[0]), KILN_OK);
    assert_false(kiln_is_alive(rt, pids[0]));
    assert_int_equal(counts(rt, sup).active, 2);
    assert_int_equal(kiln_sup_terminate_child(rt, sup, A("sw")), KILN_ENOTSUP);
    kiln_term none;
    assert_int_equal(kiln_sup_restart_child(rt, sup, A("sw"), &none), KILN_ENOTSUP);
    assert_int_equal(kiln_sup_delete_child(rt, sup, A("sw")), KILN_ENOTSUP);
    assert_int_equal(kiln_sup_terminate_child(rt, sup, pids[0]), KILN_ENOTREG);

    /* Stopping the supervisor stops all children. */
    assert_int_equal(kiln_gs_stop_server(rt, sup, KILN_ATOM_SHUTDOWN, 10000), KILN_OK);
    assert_int_equal(atomic_load(&W.terms[1]), 2);
    assert_int_equal(atomic_load(&W.terms[2]), 1);
    assert_int_equal(kiln_rt_wait_idle(rt, 5000), KILN_OK);
    kiln_rt_stop(rt);
}

/* ---- significant children ---- */

static void test_auto_shutdown(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    kiln_child_spec kids[3] = {wspec(0, KILN_TRANSIENT), wspec(1, KILN_PERMANENT), wspec(2, KILN_TEMPORARY)};
    kids[0].significant = true;
    kiln_sup_spec any = {.strategy = KILN_ONE_FOR_ONE, .intensity = 3, .auto_shutdown = KILN_AUTO_SHUTDOWN_ANY_SIGNIFICANT,
                         .children = kids, .nchildren = 3};
    kiln_term sup;
    assert_int_equal(kiln_sup_start(rt, &any, NULL, &sup, NULL), KILN_OK);
    struct watch w;
    watch(rt, &w, sup);
    counts(rt, sup);
    /* An abnormal exit of a transient significant child: just a restart. */
    kiln_term p0 = wpid(rt, 0);
    crash(rt, 0, "boom");
    wait_new_pid(rt, 0, p0);
    assert_true(kiln_is_alive(rt, sup));
    /* Terminated by the supervisor itself: no auto shutdown. */
    assert_int_equal(kiln_sup_terminate_child(rt, sup, A("w0")), KILN_OK);
    assert_true(kiln_is_alive(rt, sup));
    assert_int_equal(kiln_sup_restart_child(rt, sup, A("w0"), &p0), KILN_OK);
    /* A normal exit of it: the supervisor shuts down. */
    crash(rt, 0, "normal");
    assert_true(kiln_test_wait_flag(&w.done, 5000));
    assert_int_equal(atomic_load(&w.reason), KILN_ATOM_SHUTDOWN);
    assert_int_equal(atomic_load(&W.terms[1]), 1);
    kiln_rt_stop(rt);

    rt = setup();
    kiln_child_spec two[3] = {wspec(0, KILN_TEMPORARY), wspec(1, KILN_TEMPORARY), wspec(2, KILN_PERMANENT)};
    two[0].significant = two[1].significant = true;
    kiln_sup_spec all = {.strategy = KILN_ONE_FOR_ONE, .intensity = 3, .auto_shutdown = KILN_AUTO_SHUTDOWN_ALL_SIGNIFICANT,
                         .children = two, .nchildren = 3};
    assert_int_equal(kiln_sup_start(rt, &all, NULL, &sup, NULL), KILN_OK);
    watch(rt, &w, sup);
    counts(rt, sup);
    kiln_term p = wpid(rt, 0);
    crash(rt, 0, "boom"); /* temporary: any exit counts */
    wait_dead(rt, p);
    assert_int_equal(counts_once(rt, sup, 2, 2).specs, 2);
    assert_true(kiln_is_alive(rt, sup));
    crash(rt, 1, "normal");
    assert_true(kiln_test_wait_flag(&w.done, 5000));
    assert_int_equal(atomic_load(&w.reason), KILN_ATOM_SHUTDOWN);
    kiln_rt_stop(rt);
}

/* A restart whose start fails is retried (the child shows restarting),
 * each attempt counting against the intensity. */
static void test_failed_restart_retried(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    kiln_child_spec kids[2] = {wspec(0, KILN_PERMANENT), wspec(1, KILN_PERMANENT)};
    kiln_term sup = start_sup(rt, KILN_ONE_FOR_ONE, 5, kids, 2);
    atomic_store(&W.fail_starts[0], 2);
    kiln_term p0 = wpid(rt, 0);
    crash(rt, 0, "boom");
    wait_new_pid(rt, 0, p0);
    assert_int_equal(atomic_load(&W.fail_starts[0]), 0);
    assert_int_equal(atomic_load(&W.starts[0]), 2);
    assert_true(kiln_is_alive(rt, sup));

    /* A start that keeps failing exhausts the intensity. */
    struct watch w;
    watch(rt, &w, sup);
    counts(rt, sup);
    atomic_store(&W.fail_starts[0], 1000);
    crash(rt, 0, "boom");
    assert_true(kiln_test_wait_flag(&w.done, 5000));
    assert_int_equal(atomic_load(&w.reason), KILN_ATOM_SHUTDOWN);
    assert_int_equal(atomic_load(&W.terms[1]), 1);
    kiln_rt_stop(rt);
}

/* The supervisor's parent exits: children are shut down, then it exits
 * with the same reason (gen_server's parent rule, trapping exits). */
struct parent_case {
    kiln_term sup;
    int rc;
};

static void parent_body(void *arg)
{
    struct parent_case *pc = arg;
    static kiln_child_spec kids[2];
    kids[0] = wspec(0, KILN_PERMANENT);
    kids[1] = wspec(1, KILN_PERMANENT);
    kiln_sup_spec spec = {.strategy = KILN_ONE_FOR_ONE, .intensity = 1, .children = kids, .nchildren = 2};
    pc->rc = kiln_sup_start_link(&spec, "linked_sup", &pc->sup, NULL);
    kiln_stop(A("parent_gone"));
}

static void test_parent_exit(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    struct parent_case pc = {0};
    kiln_term pp;
    assert_int_equal(kiln_spawn_fn(rt, parent_body, &pc, NULL, &pp), KILN_OK);
    assert_true(kiln_test_wait_count(&W.terms[0], 1, 5000));
    assert_int_equal(pc.rc, KILN_OK);
    assert_string_equal(W.log, "s0s1t1t0");
    wait_dead(rt, pc.sup);
    kiln_rt_stop(rt);
}

/* Killed supervisor: its children die through their links. */
static void test_killed_supervisor(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    kiln_child_spec kids[2] = {wspec(0, KILN_PERMANENT), wspec(1, KILN_PERMANENT)};
    kiln_term sup = start_sup(rt, KILN_ONE_FOR_ONE, 1, kids, 2);
    kiln_term p0 = wpid(rt, 0), p1 = wpid(rt, 1);
    assert_int_equal(kiln_rt_exit(rt, sup, KILN_ATOM_KILL), KILN_OK);
    wait_dead(rt, p0);
    wait_dead(rt, p1);
    assert_int_equal(atomic_load(&W.terms[0]), 1);
    assert_int_equal(atomic_load(&W.terms[1]), 1);
    kiln_rt_stop(rt);
}

/* A supervisor stopped while a child with shutdown infinity ignores the
 * shutdown waits in its terminate; runtime stop then kills both. The
 * supervisor's own state must not be lost with the wait (ASan's leak
 * check is the assertion). */
static void test_killed_while_shutting_down(void **st)
{
    (void)st;
    kiln_rt *rt = setup();
    struct stubborn never = {.linger_ms = -1};
    kiln_child_spec kids[1] = {
        {.id = "deaf", .start = stubborn_start, .arg = &never, .shutdown_ms = KILN_SHUTDOWN_INFINITY},
    };
    kiln_term sup = start_sup(rt, KILN_ONE_FOR_ONE, 1, kids, 1);
    assert_int_equal(kiln_gs_stop_server(rt, sup, KILN_ATOM_SHUTDOWN, 200), KILN_ETIMEOUT);
    assert_int_equal(atomic_load(&never.got_shutdown), 1);
    assert_true(kiln_is_alive(rt, sup));
    kiln_rt_stop(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_which_count_stop),
        cmocka_unit_test(test_one_for_one),
        cmocka_unit_test(test_transient_and_temporary),
        cmocka_unit_test(test_one_for_all),
        cmocka_unit_test(test_rest_for_one),
        cmocka_unit_test(test_intensity_exceeded),
        cmocka_unit_test(test_intensity_period),
        cmocka_unit_test(test_escalation),
        cmocka_unit_test(test_shutdown_modes),
        cmocka_unit_test(test_child_management),
        cmocka_unit_test(test_init_failure),
        cmocka_unit_test(test_simple_one_for_one),
        cmocka_unit_test(test_auto_shutdown),
        cmocka_unit_test(test_failed_restart_retried),
        cmocka_unit_test(test_parent_exit),
        cmocka_unit_test(test_killed_supervisor),
        cmocka_unit_test(test_killed_while_shutting_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
