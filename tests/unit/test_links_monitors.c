/* Links, exit signals and monitors, checked against Erlang's semantics:
 * link propagation and trap_exit, exit/2 (normal, kill, other reasons),
 * link/unlink edge cases, monitors and demonitor (with and without flush),
 * monitors by registered name, the link/monitor spawn options, the
 * link/monitor counts of process_info, and a long chain of links.
 *
 * Processes report to the test thread through static structs of atomics;
 * every cmocka assertion runs in the test thread. Process bodies never hold
 * a message across a blocking call that could be cut short by a kill, so a
 * killed process leaks nothing (monitor refs live in messages owned by the
 * test, freed after kiln_rt_stop). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

#define WAIT_MS 5000

/* ---- small helpers ---- */

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* kiln_test_msg without cmocka assertions: safe inside processes. */
static kiln_msg *mk(const char *fmt, ...)
{
    kiln_msg *m = kiln_msg_new(128);
    if (!m)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    kiln_term t = kiln_vbuild(m, fmt, ap);
    va_end(ap);
    if (kiln_is_none(t)) {
        kiln_msg_free(m);
        return NULL;
    }
    kiln_msg_set_term(m, t);
    return m;
}

static bool is_immediate(kiln_term t) { return !kiln_is_boxed(t) && !kiln_is_cons(t); }

static kiln_term atom(const char *s)
{
    kiln_term a = kiln_atom_c(s);
    assert_false(kiln_is_none(a));
    return a;
}

/* Send a command message to a process from the test thread. */
static void send_cmd(kiln_rt *rt, kiln_term to, const char *fmt, ...)
{
    kiln_msg *m = kiln_msg_new(128);
    assert_non_null(m);
    va_list ap;
    va_start(ap, fmt);
    kiln_term t = kiln_vbuild(m, fmt, ap);
    va_end(ap);
    assert_false(kiln_is_none(t));
    kiln_msg_set_term(m, t);
    assert_int_equal(kiln_rt_send(rt, to, m), KILN_OK);
}

enum info_field { F_LINKS, F_MONITORS, F_MONITORED_BY };

/* Wait until the given process_info count of pid equals want (the process
 * must stay alive). */
static bool wait_info(kiln_rt *rt, kiln_term pid, enum info_field f, size_t want, int ms)
{
    for (int i = 0; i <= ms; i++) {
        kiln_proc_info info;
        if (kiln_process_info(rt, pid, &info) != KILN_OK)
            return false;
        size_t v = f == F_LINKS ? info.links : f == F_MONITORS ? info.monitors : info.monitored_by;
        if (v == want)
            return true;
        nap_ms(1);
    }
    return false;
}

static bool wait_dead(kiln_rt *rt, kiln_term pid, int ms)
{
    for (int i = 0; i <= ms; i++) {
        if (!kiln_is_alive(rt, pid))
            return true;
        nap_ms(1);
    }
    return false;
}

static bool wait_procs(kiln_rt *rt, size_t n, int ms)
{
    for (int i = 0; i <= ms; i++) {
        if (kiln_rt_process_count(rt) == n)
            return true;
        nap_ms(1);
    }
    return false;
}

/* ---- the puppet: a function process driven by messages ----
 *   {exit, Reason}   stop with Reason (return, for normal)
 *   {exit_with, R}   stop with any term R (the message is kept in hold)
 *   {ping, From}     answer {pong, Self}
 *   {link, Pid}      kiln_link(Pid), result in link_rc
 *   {unlink, Pid}    kiln_unlink(Pid), result in link_rc
 *   {'EXIT', F, R}   (when trapping) recorded
 */
struct puppet {
    _Atomic int link_rc;
    _Atomic long cmds;
    _Atomic long exits;
    _Atomic uint64_t exit_from, exit_reason;
    _Atomic int exit_reason_shutdown42; /* the reason was {shutdown, 42} */
    kiln_msg *hold; /* the command message of {exit_with, R}; the test frees it */
};

static bool is_shutdown42(kiln_term t)
{
    int64_t n;
    return kiln_match(t, "{shutdown,~i}", &n) == KILN_OK && n == 42;
}

static void puppet_loop(struct puppet *pp)
{
    for (;;) {
        kiln_msg *m = NULL;
        if (kiln_receive(NULL, NULL, -1, &m) != KILN_OK)
            return;
        kiln_term t = kiln_msg_term(m), x, y;
        if (kiln_match(t, "{exit,~A}", &x) == KILN_OK) {
            kiln_msg_free(m);
            if (x == KILN_ATOM_NORMAL)
                return;
            kiln_stop(x);
            return; /* not reached */
        }
        if (pp && kiln_match(t, "{exit_with,~t}", &x) == KILN_OK) {
            /* kiln_stop does not return: the reason's message must be
             * reachable from outside to be freed. */
            pp->hold = m;
            kiln_stop(x);
            return; /* not reached */
        }
        if (kiln_match(t, "{ping,~p}", &x) == KILN_OK) {
            kiln_send(x, mk("{pong,~p}", kiln_self()));
        } else if (pp && kiln_match(t, "{link,~p}", &x) == KILN_OK) {
            atomic_store(&pp->link_rc, kiln_link(x));
            atomic_fetch_add(&pp->cmds, 1);
        } else if (pp && kiln_match(t, "{unlink,~p}", &x) == KILN_OK) {
            atomic_store(&pp->link_rc, kiln_unlink(x));
            atomic_fetch_add(&pp->cmds, 1);
        } else if (pp && kiln_match(t, "{'EXIT',~t,~t}", &x, &y) == KILN_OK) {
            atomic_store(&pp->exit_from, is_immediate(x) ? x : KILN_NONE);
            atomic_store(&pp->exit_reason, is_immediate(y) ? y : KILN_NONE);
            atomic_store(&pp->exit_reason_shutdown42, is_shutdown42(y));
            atomic_fetch_add(&pp->exits, 1);
        }
        kiln_msg_free(m);
    }
}

static void puppet_body(void *arg) { puppet_loop(arg); }

static kiln_term spawn_puppet(kiln_rt *rt, struct puppet *pp, bool trap, const char *name)
{
    if (pp)
        memset(pp, 0, sizeof(*pp));
    kiln_spawn_opts o;
    memset(&o, 0, sizeof o);
    o.trap_exit = trap;
    o.register_as = name;
    kiln_term pid = KILN_NONE;
    assert_int_equal(kiln_spawn_fn(rt, puppet_body, pp, &o, &pid), KILN_OK);
    assert_true(kiln_is_local_pid(pid));
    return pid;
}

/* Make puppet a (context pa) link to b; waits until both sides count it. */
static void puppet_link(kiln_rt *rt, kiln_term a, struct puppet *pa, kiln_term b)
{
    long before = atomic_load(&pa->cmds);
    send_cmd(rt, a, "{link,~p}", b);
    assert_true(kiln_test_wait_count(&pa->cmds, before + 1, WAIT_MS));
    assert_int_equal(atomic_load(&pa->link_rc), KILN_OK);
    assert_true(wait_info(rt, a, F_LINKS, 1, WAIT_MS));
    assert_true(wait_info(rt, b, F_LINKS, 1, WAIT_MS));
}

/* A pid that is certainly dead. */
static void empty_body(void *arg) { (void)arg; }

static kiln_term dead_pid(kiln_rt *rt)
{
    kiln_term pid;
    assert_int_equal(kiln_spawn_fn(rt, empty_body, NULL, NULL, &pid), KILN_OK);
    assert_true(wait_dead(rt, pid, WAIT_MS));
    return pid;
}

/* ---- ping: proves a process is alive and has handled every signal sent
 * to it before the ping ---- */

struct ping_ctx {
    kiln_term target;
    _Atomic int ok;
};

static bool is_pong_from(kiln_term t, void *arg)
{
    kiln_term from;
    return kiln_match(t, "{pong,~p}", &from) == KILN_OK && from == *(kiln_term *)arg;
}

static void ping_body(void *arg)
{
    struct ping_ctx *c = arg;
    if (kiln_send(c->target, mk("{ping,~p}", kiln_self())) != KILN_OK)
        return;
    kiln_msg *m = NULL;
    if (kiln_receive(is_pong_from, &c->target, WAIT_MS, &m) == KILN_OK) {
        atomic_store(&c->ok, 1);
        kiln_msg_free(m);
    }
}

static bool ping(kiln_rt *rt, kiln_term pid)
{
    static struct ping_ctx c;
    memset(&c, 0, sizeof c);
    c.target = pid;
    kiln_test_run_in_process(rt, ping_body, &c, 2 * WAIT_MS);
    return atomic_load(&c.ok) != 0;
}

/* ---- the watcher: a process that monitors a target and records the DOWN ---- */

struct watch {
    kiln_term target; /* pid or registered name */
    kiln_msg *refm;   /* holds the ref; owned by the test thread */
    _Atomic int mon_rc, ready, done;
    _Atomic int shape_ok, ref_ok;
    _Atomic uint64_t obj;                /* 4th element, if immediate */
    _Atomic uint64_t obj_name, obj_node; /* 4th element, if {Name, Node} */
    _Atomic uint64_t reason;             /* 5th element, if immediate */
    _Atomic int reason_shutdown42;       /* 5th element is {shutdown, 42} */
};

static void watch_body(void *arg)
{
    struct watch *w = arg;
    kiln_term ref = KILN_NONE;
    int rc = kiln_monitor(w->target, w->refm, &ref);
    atomic_store(&w->mon_rc, rc);
    atomic_store(&w->ready, 1);
    if (rc != KILN_OK)
        return;
    kiln_msg *m = NULL;
    if (kiln_receive(NULL, NULL, -1, &m) != KILN_OK)
        return;
    kiln_term r, obj, reason;
    if (kiln_match(kiln_msg_term(m), "{'DOWN',~t,process,~t,~t}", &r, &obj, &reason) == KILN_OK) {
        atomic_store(&w->shape_ok, 1);
        atomic_store(&w->ref_ok, kiln_term_eq(r, ref) ? 1 : 0);
        atomic_store(&w->obj, is_immediate(obj) ? obj : KILN_NONE);
        kiln_term n, nd;
        if (kiln_match(obj, "{~A,~A}", &n, &nd) == KILN_OK) {
            atomic_store(&w->obj_name, n);
            atomic_store(&w->obj_node, nd);
        }
        atomic_store(&w->reason, is_immediate(reason) ? reason : KILN_NONE);
        atomic_store(&w->reason_shutdown42, is_shutdown42(reason));
    }
    kiln_msg_free(m);
    atomic_store(&w->done, 1);
}

/* Start watching target. For a live pid, waits until the target has taken
 * the monitor in, so the DOWN carries the real exit reason. */
static void watch_start(kiln_rt *rt, struct watch *w, kiln_term target)
{
    memset(w, 0, sizeof(*w));
    w->target = target;
    w->obj = w->obj_name = w->obj_node = w->reason = KILN_NONE;
    w->refm = kiln_msg_new(64);
    assert_non_null(w->refm);
    assert_int_equal(kiln_spawn_fn(rt, watch_body, w, NULL, NULL), KILN_OK);
    assert_true(kiln_test_wait_flag(&w->ready, WAIT_MS));
    assert_int_equal(atomic_load(&w->mon_rc), KILN_OK);
    kiln_term pid = kiln_is_atom(target) ? kiln_whereis(rt, target) : target;
    if (!kiln_is_none(pid) && kiln_is_alive(rt, pid)) {
        /* Either the monitor is in place, or the target already died. */
        for (int i = 0; i < WAIT_MS; i++) {
            kiln_proc_info info;
            if (kiln_process_info(rt, pid, &info) != KILN_OK || info.monitored_by >= 1)
                break;
            nap_ms(1);
        }
    }
}

/* The DOWN's reason (waits for it; fails the test if none arrives). */
static kiln_term watch_reason(struct watch *w)
{
    assert_true(kiln_test_wait_flag(&w->done, WAIT_MS));
    assert_true(atomic_load(&w->shape_ok));
    assert_true(atomic_load(&w->ref_ok));
    return atomic_load(&w->reason);
}

static void watch_free(struct watch *w)
{
    kiln_msg_free(w->refm);
    w->refm = NULL;
}

/* ---- exit/2 from inside a process ---- */

struct exit_ctx {
    kiln_term target, reason;
    bool then_ping;
    _Atomic int rc, pong;
    _Atomic uint64_t self;
};

static void exit_body(void *arg)
{
    struct exit_ctx *c = arg;
    atomic_store(&c->self, kiln_self());
    atomic_store(&c->rc, kiln_exit(c->target, c->reason));
    if (!c->then_ping)
        return;
    /* Signals from one sender arrive in order: the pong proves the exit
     * signal was handled and survived. */
    kiln_send(c->target, mk("{ping,~p}", kiln_self()));
    kiln_msg *m = NULL;
    if (kiln_receive(is_pong_from, &c->target, WAIT_MS, &m) == KILN_OK) {
        atomic_store(&c->pong, 1);
        kiln_msg_free(m);
    }
}

static void exit_from_process(kiln_rt *rt, struct exit_ctx *c, kiln_term target, kiln_term reason, bool then_ping)
{
    memset(c, 0, sizeof(*c));
    c->target = target;
    c->reason = reason;
    c->then_ping = then_ping;
    atomic_store(&c->rc, -999);
    kiln_test_run_in_process(rt, exit_body, c, 2 * WAIT_MS);
}

/* ============ reasons, link sets, the trap flag, signal order ============ */

/* A compound exit reason ({shutdown, 42}) reaches links and monitors
 * intact (it is copied out of the dead process). */
static void test_compound_exit_reason_reaches_links_and_monitors(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet a, b;
    static struct watch wb;
    kiln_term pa = spawn_puppet(rt, &a, true, NULL), pb = spawn_puppet(rt, &b, false, NULL);
    puppet_link(rt, pa, &a, pb);
    watch_start(rt, &wb, pb);
    send_cmd(rt, pb, "{exit_with,{shutdown,42}}");
    assert_true(kiln_test_wait_flag(&wb.done, WAIT_MS));
    assert_true(atomic_load(&wb.shape_ok));
    assert_true(atomic_load(&wb.reason_shutdown42));
    assert_true(kiln_test_wait_count(&a.exits, 1, WAIT_MS));
    assert_true(atomic_load(&a.exit_from) == pb);
    assert_true(atomic_load(&a.exit_reason_shutdown42));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    kiln_msg_free(b.hold);
    watch_free(&wb);
}

/* Links are a set: linking twice makes one link, which one unlink removes;
 * linking to oneself does nothing. */
static void test_link_twice_is_one_link(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet a, b;
    kiln_term pa = spawn_puppet(rt, &a, false, NULL), pb = spawn_puppet(rt, &b, false, NULL);
    puppet_link(rt, pa, &a, pb);
    puppet_link(rt, pa, &a, pb); /* still exactly 1 on both sides */
    send_cmd(rt, pa, "{link,~p}", pa);
    assert_true(kiln_test_wait_count(&a.cmds, 3, WAIT_MS));
    assert_int_equal(atomic_load(&a.link_rc), KILN_OK);
    assert_true(ping(rt, pa));
    assert_true(ping(rt, pb));
    kiln_proc_info info;
    assert_int_equal(kiln_process_info(rt, pa, &info), KILN_OK);
    assert_int_equal(info.links, 1);
    assert_int_equal(kiln_process_info(rt, pb, &info), KILN_OK);
    assert_int_equal(info.links, 1);
    send_cmd(rt, pa, "{unlink,~p}", pb);
    assert_true(kiln_test_wait_count(&a.cmds, 4, WAIT_MS));
    assert_true(wait_info(rt, pa, F_LINKS, 0, WAIT_MS));
    assert_true(wait_info(rt, pb, F_LINKS, 0, WAIT_MS));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* process_flag(trap_exit, V) returns the old value; process_info shows it. */
struct trapflag_ctx {
    _Atomic int first, second, third, info_on, info_off;
};

static void trapflag_body(void *arg)
{
    struct trapflag_ctx *c = arg;
    kiln_rt *rt = kiln_current_rt();
    kiln_proc_info info;
    atomic_store(&c->first, kiln_trap_exit(true));
    if (kiln_process_info(rt, kiln_self(), &info) == KILN_OK)
        atomic_store(&c->info_on, info.trap_exit);
    atomic_store(&c->second, kiln_trap_exit(false));
    if (kiln_process_info(rt, kiln_self(), &info) == KILN_OK)
        atomic_store(&c->info_off, !info.trap_exit);
    atomic_store(&c->third, kiln_trap_exit(false));
}

static void test_trap_exit_flag_returns_old_value(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct trapflag_ctx c;
    memset(&c, 0, sizeof c);
    atomic_store(&c.first, -1);
    atomic_store(&c.second, -1);
    atomic_store(&c.third, -1);
    kiln_test_run_in_process(rt, trapflag_body, &c, WAIT_MS);
    assert_int_equal(atomic_load(&c.first), 0);
    assert_int_equal(atomic_load(&c.second), 1);
    assert_int_equal(atomic_load(&c.third), 0);
    assert_true(atomic_load(&c.info_on));
    assert_true(atomic_load(&c.info_off));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* exit/2 to a pid that is already dead is not an error (exit/2 -> true). */
static void test_exit_to_dead_pid_is_ok(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct exit_ctx x;
    kiln_term dead = dead_pid(rt);
    exit_from_process(rt, &x, dead, atom("foo"), false);
    assert_int_equal(atomic_load(&x.rc), KILN_OK);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* Signal order: messages a process sent before it died arrive before its
 * 'EXIT' and 'DOWN'. */
struct order_ctx {
    kiln_msg *refm;
    _Atomic int spawn_rc, bad_order, got_exit, got_down;
    _Atomic long msgs;
};

static void burst_then_die_body(void *arg)
{
    kiln_term parent = (kiln_term)(uintptr_t)arg;
    for (int i = 1; i <= 3; i++)
        kiln_send(parent, mk("{n,~i}", (int64_t)i));
    kiln_stop(kiln_atom_c("foo"));
}

static void order_parent_body(void *arg)
{
    struct order_ctx *c = arg;
    kiln_rt *rt = kiln_current_rt();
    kiln_trap_exit(true);
    kiln_spawn_opts o;
    memset(&o, 0, sizeof o);
    kiln_term ref = KILN_NONE;
    o.link = true;
    o.monitor = true;
    o.monitor_ref_msg = c->refm;
    o.monitor_ref = &ref;
    atomic_store(&c->spawn_rc,
                 kiln_spawn_fn(rt, burst_then_die_body, (void *)(uintptr_t)kiln_self(), &o, NULL));
    for (int i = 0; i < 5; i++) {
        kiln_msg *m = NULL;
        if (kiln_receive(NULL, NULL, WAIT_MS, &m) != KILN_OK)
            return;
        kiln_term t = kiln_msg_term(m);
        int64_t n;
        if (kiln_match(t, "{n,~i}", &n) == KILN_OK) {
            if (n != atomic_load(&c->msgs) + 1 || atomic_load(&c->got_exit) || atomic_load(&c->got_down))
                atomic_store(&c->bad_order, 1);
            atomic_fetch_add(&c->msgs, 1);
        } else if (kiln_match(t, "{'EXIT',_,foo}") == KILN_OK) {
            atomic_store(&c->got_exit, 1);
        } else if (kiln_match(t, "{'DOWN',_,process,_,foo}") == KILN_OK) {
            atomic_store(&c->got_down, 1);
        } else {
            atomic_store(&c->bad_order, 1);
        }
        kiln_msg_free(m);
    }
}

static void test_messages_before_exit_arrive_before_exit_and_down(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct order_ctx c;
    memset(&c, 0, sizeof c);
    c.refm = kiln_msg_new(64);
    assert_non_null(c.refm);
    kiln_test_run_in_process(rt, order_parent_body, &c, 2 * WAIT_MS);
    assert_int_equal(atomic_load(&c.spawn_rc), KILN_OK);
    assert_int_equal(atomic_load(&c.msgs), 3);
    assert_true(atomic_load(&c.got_exit));
    assert_true(atomic_load(&c.got_down));
    assert_false(atomic_load(&c.bad_order));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    kiln_msg_free(c.refm);
}

/* ======================= links ======================= */

/* B exits with foo: A, linked and not trapping, dies with foo too. */
static void test_link_abnormal_exit_kills_linked_process(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet a, b;
    static struct watch wa;
    kiln_term pa = spawn_puppet(rt, &a, false, NULL), pb = spawn_puppet(rt, &b, false, NULL);
    puppet_link(rt, pa, &a, pb);
    watch_start(rt, &wa, pa);
    send_cmd(rt, pb, "{exit,foo}");
    assert_true(watch_reason(&wa) == atom("foo"));
    assert_true(wait_dead(rt, pb, WAIT_MS));
    assert_false(kiln_is_alive(rt, pa));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    watch_free(&wa);
}

/* B exits normal: A, linked and not trapping, survives and loses the link. */
static void test_link_normal_exit_does_not_kill(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet a, b;
    static struct watch wb;
    kiln_term pa = spawn_puppet(rt, &a, false, NULL), pb = spawn_puppet(rt, &b, false, NULL);
    puppet_link(rt, pa, &a, pb);
    watch_start(rt, &wb, pb);
    send_cmd(rt, pb, "{exit,normal}");
    assert_true(watch_reason(&wb) == KILN_ATOM_NORMAL);
    /* B sent A its exit signal before the DOWN: the ping is handled after it. */
    assert_true(ping(rt, pa));
    assert_true(kiln_is_alive(rt, pa));
    assert_true(wait_info(rt, pa, F_LINKS, 0, WAIT_MS));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    watch_free(&wb);
}

/* A traps exits: B's exit with foo becomes the message {'EXIT', B, foo}. */
static void test_trap_exit_turns_exit_into_message(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet a, b;
    kiln_term pa = spawn_puppet(rt, &a, true, NULL), pb = spawn_puppet(rt, &b, false, NULL);
    puppet_link(rt, pa, &a, pb);
    send_cmd(rt, pb, "{exit,foo}");
    assert_true(kiln_test_wait_count(&a.exits, 1, WAIT_MS));
    assert_true(atomic_load(&a.exit_from) == pb);
    assert_true(atomic_load(&a.exit_reason) == atom("foo"));
    assert_true(ping(rt, pa));
    assert_int_equal(atomic_load(&a.exits), 1);
    assert_true(wait_info(rt, pa, F_LINKS, 0, WAIT_MS));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* A trapping process linked to a process that exits with reason normal
 * still gets {'EXIT', B, normal}. */
static void test_trap_exit_sees_normal_exit_of_link(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet a, b;
    kiln_term pa = spawn_puppet(rt, &a, true, NULL), pb = spawn_puppet(rt, &b, false, NULL);
    puppet_link(rt, pa, &a, pb);
    send_cmd(rt, pb, "{exit,normal}");
    assert_true(kiln_test_wait_count(&a.exits, 1, WAIT_MS));
    assert_true(atomic_load(&a.exit_from) == pb);
    assert_true(atomic_load(&a.exit_reason) == KILN_ATOM_NORMAL);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* exit(B, kill): B dies with killed even though it traps exits; A, linked
 * and trapping, gets {'EXIT', B, killed}. */
static void test_exit_kill_linked_trapper_sees_killed(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet a, b;
    static struct watch wb;
    static struct exit_ctx x;
    kiln_term pa = spawn_puppet(rt, &a, true, NULL), pb = spawn_puppet(rt, &b, true, NULL);
    puppet_link(rt, pa, &a, pb);
    watch_start(rt, &wb, pb);
    exit_from_process(rt, &x, pb, KILN_ATOM_KILL, false);
    assert_int_equal(atomic_load(&x.rc), KILN_OK);
    assert_true(watch_reason(&wb) == KILN_ATOM_KILLED);
    assert_true(kiln_test_wait_count(&a.exits, 1, WAIT_MS));
    assert_true(atomic_load(&a.exit_from) == pb);
    assert_true(atomic_load(&a.exit_reason) == KILN_ATOM_KILLED);
    assert_int_equal(atomic_load(&b.exits), 0); /* kill cannot be trapped */
    assert_true(kiln_is_alive(rt, pa));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    watch_free(&wb);
}

/* A process that exits with reason kill (not exit/2) sends its links an
 * ordinary exit signal: a trapping link gets {'EXIT', B, kill}, not killed. */
static void test_link_exit_reason_kill_is_trappable(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet a, b;
    kiln_term pa = spawn_puppet(rt, &a, true, NULL), pb = spawn_puppet(rt, &b, false, NULL);
    puppet_link(rt, pa, &a, pb);
    send_cmd(rt, pb, "{exit,kill}");
    assert_true(kiln_test_wait_count(&a.exits, 1, WAIT_MS));
    assert_true(atomic_load(&a.exit_from) == pb);
    assert_true(atomic_load(&a.exit_reason) == KILN_ATOM_KILL);
    assert_true(ping(rt, pa));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* ======================= exit/2 ======================= */

/* exit(B, normal) is ignored by a process that does not trap exits. */
static void test_exit_normal_ignored_when_not_trapping(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet b;
    static struct exit_ctx x;
    kiln_term pb = spawn_puppet(rt, &b, false, NULL);
    exit_from_process(rt, &x, pb, KILN_ATOM_NORMAL, true);
    assert_int_equal(atomic_load(&x.rc), KILN_OK);
    assert_true(atomic_load(&x.pong));
    assert_true(kiln_is_alive(rt, pb));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* exit(B, normal) reaches a trapping B as {'EXIT', From, normal}. */
static void test_exit_normal_delivered_when_trapping(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet b;
    static struct exit_ctx x;
    kiln_term pb = spawn_puppet(rt, &b, true, NULL);
    exit_from_process(rt, &x, pb, KILN_ATOM_NORMAL, true);
    assert_int_equal(atomic_load(&x.rc), KILN_OK);
    assert_true(atomic_load(&x.pong));
    assert_int_equal(atomic_load(&b.exits), 1);
    assert_true(atomic_load(&b.exit_from) == atomic_load(&x.self));
    assert_true(atomic_load(&b.exit_reason) == KILN_ATOM_NORMAL);
    assert_true(kiln_is_alive(rt, pb));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* exit(B, foo) reaches a trapping B as {'EXIT', From, foo}, and B lives. */
static void test_exit_reason_delivered_when_trapping(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet b;
    static struct exit_ctx x;
    kiln_term pb = spawn_puppet(rt, &b, true, NULL);
    exit_from_process(rt, &x, pb, atom("foo"), true);
    assert_int_equal(atomic_load(&x.rc), KILN_OK);
    assert_true(atomic_load(&x.pong));
    assert_int_equal(atomic_load(&b.exits), 1);
    assert_true(atomic_load(&b.exit_from) == atomic_load(&x.self));
    assert_true(atomic_load(&b.exit_reason) == atom("foo"));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* exit(B, kill) kills a trapping process; its monitor sees killed. */
static void test_exit_kill_kills_trapping_process(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet b;
    static struct watch wb;
    static struct exit_ctx x;
    kiln_term pb = spawn_puppet(rt, &b, true, NULL);
    watch_start(rt, &wb, pb);
    exit_from_process(rt, &x, pb, KILN_ATOM_KILL, false);
    assert_int_equal(atomic_load(&x.rc), KILN_OK);
    assert_true(watch_reason(&wb) == KILN_ATOM_KILLED);
    assert_true(atomic_load(&wb.obj) == pb);
    assert_int_equal(atomic_load(&b.exits), 0);
    assert_false(kiln_is_alive(rt, pb));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    watch_free(&wb);
}

/* exit(B, foo) kills a process that does not trap exits, with reason foo. */
static void test_exit_reason_kills_non_trapping_process(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet b;
    static struct watch wb;
    static struct exit_ctx x;
    kiln_term pb = spawn_puppet(rt, &b, false, NULL);
    watch_start(rt, &wb, pb);
    exit_from_process(rt, &x, pb, atom("foo"), false);
    assert_int_equal(atomic_load(&x.rc), KILN_OK);
    assert_true(watch_reason(&wb) == atom("foo"));
    assert_false(kiln_is_alive(rt, pb));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    watch_free(&wb);
}

/* exit(self(), normal) ends a process that does not trap exits. */
static void self_exit_body(void *arg)
{
    _Atomic int *after = arg;
    kiln_exit(kiln_self(), KILN_ATOM_NORMAL);
    /* The signal is handled at the next receive at the latest. */
    kiln_msg *m = NULL;
    if (kiln_receive(NULL, NULL, 200, &m) == KILN_OK)
        kiln_msg_free(m);
    atomic_store(after, 1);
}

static void test_exit_self_normal_ends_process(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static _Atomic int after;
    atomic_store(&after, 0);
    kiln_term pid;
    assert_int_equal(kiln_spawn_fn(rt, self_exit_body, (void *)&after, NULL, &pid), KILN_OK);
    assert_true(wait_dead(rt, pid, WAIT_MS));
    /* It died in the receive: the code after it never ran. */
    assert_int_equal(atomic_load(&after), 0);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* kiln_rt_exit from a thread that is not a process. */
static void test_rt_exit_from_foreign_thread(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet b;
    static struct watch wb;
    kiln_term pb = spawn_puppet(rt, &b, false, NULL);
    watch_start(rt, &wb, pb);
    int rc = kiln_rt_exit(rt, pb, atom("foo"));
    if (rc != KILN_OK)
        print_message("kiln_rt_exit(pid, foo) from the test thread -> %d (%s)\n", rc, kiln_strerror(rc));
    assert_int_equal(rc, KILN_OK);
    assert_true(watch_reason(&wb) == atom("foo"));
    assert_false(kiln_is_alive(rt, pb));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    watch_free(&wb);
}

/* kiln_rt_exit(pid, kill) from a foreign thread kills a trapping process. */
static void test_rt_exit_kill_from_foreign_thread(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet b;
    static struct watch wb;
    kiln_term pb = spawn_puppet(rt, &b, true, NULL);
    watch_start(rt, &wb, pb);
    int rc = kiln_rt_exit(rt, pb, KILN_ATOM_KILL);
    if (rc != KILN_OK)
        print_message("kiln_rt_exit(pid, kill) from the test thread -> %d (%s)\n", rc, kiln_strerror(rc));
    assert_int_equal(rc, KILN_OK);
    assert_true(watch_reason(&wb) == KILN_ATOM_KILLED);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    watch_free(&wb);
}

/* ======================= link edge cases ======================= */

struct linkdead_ctx {
    kiln_term dead;
    bool trap;
    _Atomic int link_rc, recv_rc, got_exit;
    _Atomic uint64_t from, reason;
};

static void linkdead_body(void *arg)
{
    struct linkdead_ctx *c = arg;
    kiln_trap_exit(c->trap);
    atomic_store(&c->link_rc, kiln_link(c->dead));
    kiln_msg *m = NULL;
    int rc = kiln_receive(NULL, NULL, c->trap ? WAIT_MS : 100, &m);
    atomic_store(&c->recv_rc, rc);
    if (rc == KILN_OK) {
        kiln_term f, r;
        if (kiln_match(kiln_msg_term(m), "{'EXIT',~t,~t}", &f, &r) == KILN_OK) {
            atomic_store(&c->from, f);
            atomic_store(&c->reason, is_immediate(r) ? r : KILN_NONE);
            atomic_store(&c->got_exit, 1);
        }
        kiln_msg_free(m);
    }
}

/* link/1 to a dead process without trapping: the call fails with noproc
 * and the caller lives on. */
static void test_link_dead_pid_not_trapping_enoproc(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct linkdead_ctx c;
    memset(&c, 0, sizeof c);
    c.dead = dead_pid(rt);
    c.trap = false;
    kiln_test_run_in_process(rt, linkdead_body, &c, 2 * WAIT_MS);
    assert_int_equal(atomic_load(&c.link_rc), KILN_ENOPROC);
    assert_int_equal(atomic_load(&c.recv_rc), KILN_ETIMEOUT);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* link/1 to a dead process while trapping: ok, then {'EXIT', Pid, noproc}. */
static void test_link_dead_pid_trapping_gets_noproc_exit(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct linkdead_ctx c;
    memset(&c, 0, sizeof c);
    c.dead = dead_pid(rt);
    c.trap = true;
    kiln_test_run_in_process(rt, linkdead_body, &c, 2 * WAIT_MS);
    assert_int_equal(atomic_load(&c.link_rc), KILN_OK);
    assert_int_equal(atomic_load(&c.recv_rc), KILN_OK);
    assert_true(atomic_load(&c.got_exit));
    assert_true(atomic_load(&c.from) == c.dead);
    assert_true(atomic_load(&c.reason) == KILN_ATOM_NOPROC);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* After unlink(B), B's exit with foo does not touch A; both sides forget
 * the link. */
static void test_unlink_stops_propagation(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet a, b;
    static struct watch wb;
    kiln_term pa = spawn_puppet(rt, &a, false, NULL), pb = spawn_puppet(rt, &b, false, NULL);
    puppet_link(rt, pa, &a, pb);
    send_cmd(rt, pa, "{unlink,~p}", pb);
    assert_true(kiln_test_wait_count(&a.cmds, 2, WAIT_MS));
    assert_int_equal(atomic_load(&a.link_rc), KILN_OK);
    assert_true(wait_info(rt, pa, F_LINKS, 0, WAIT_MS));
    assert_true(wait_info(rt, pb, F_LINKS, 0, WAIT_MS));
    watch_start(rt, &wb, pb);
    send_cmd(rt, pb, "{exit,foo}");
    assert_true(watch_reason(&wb) == atom("foo"));
    assert_true(ping(rt, pa));
    assert_true(kiln_is_alive(rt, pa));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    watch_free(&wb);
}

/* unlink/1's guarantee: once it has returned, the link has no effect on
 * the caller, even if the partner dies before it handles the unlink (and
 * so still sends an exit signal over the link). The partner never
 * receives, so the unlink signal waits in its mailbox while it exits. */
struct unlink_race_ctx {
    _Atomic int go, spawn_rc, unlink_rc, recv_rc, survived;
    _Atomic uint64_t child;
};

static void spin_then_die_body(void *arg)
{
    struct unlink_race_ctx *c = arg;
    while (!atomic_load(&c->go))
        kiln_yield();
    kiln_stop(kiln_atom_c("foo"));
}

static void unlink_race_body(void *arg)
{
    struct unlink_race_ctx *c = arg;
    kiln_spawn_opts o;
    memset(&o, 0, sizeof o);
    o.link = true;
    kiln_term child = KILN_NONE;
    atomic_store(&c->spawn_rc, kiln_spawn_fn(kiln_current_rt(), spin_then_die_body, c, &o, &child));
    atomic_store(&c->child, child);
    atomic_store(&c->unlink_rc, kiln_unlink(child));
    atomic_store(&c->go, 1);
    /* Give the child time to die and any exit signal time to arrive. */
    kiln_msg *m = NULL;
    int rc = kiln_receive(NULL, NULL, 300, &m);
    if (rc == KILN_OK)
        kiln_msg_free(m);
    atomic_store(&c->recv_rc, rc);
    atomic_store(&c->survived, 1);
}

static void test_unlink_guarantee_when_partner_dies_first(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct unlink_race_ctx c;
    memset(&c, 0, sizeof c);
    kiln_term parent;
    assert_int_equal(kiln_spawn_fn(rt, unlink_race_body, &c, NULL, &parent), KILN_OK);
    assert_true(wait_dead(rt, parent, WAIT_MS));
    assert_int_equal(atomic_load(&c.spawn_rc), KILN_OK);
    assert_int_equal(atomic_load(&c.unlink_rc), KILN_OK);
    assert_true(wait_dead(rt, atomic_load(&c.child), WAIT_MS));
    /* It ended by returning, not by the child's exit signal. */
    assert_true(atomic_load(&c.survived));
    assert_int_equal(atomic_load(&c.recv_rc), KILN_ETIMEOUT);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* link counts in process_info: 1 on both sides, 0 on the survivor after
 * the partner exits. */
static void test_link_counts_drop_after_partner_dies(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet a, b;
    kiln_term pa = spawn_puppet(rt, &a, true, NULL), pb = spawn_puppet(rt, &b, false, NULL);
    puppet_link(rt, pa, &a, pb); /* checks links == 1 on both sides */
    kiln_proc_info info;
    assert_int_equal(kiln_process_info(rt, pa, &info), KILN_OK);
    assert_int_equal(info.links, 1);
    send_cmd(rt, pb, "{exit,normal}");
    assert_true(kiln_test_wait_count(&a.exits, 1, WAIT_MS));
    assert_int_equal(kiln_process_info(rt, pa, &info), KILN_OK);
    assert_int_equal(info.links, 0);
    assert_int_equal(kiln_process_info(rt, pb, &info), KILN_ENOPROC);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* ======================= monitors ======================= */

/* DOWN is {'DOWN', Ref, process, Pid, Reason} with the exit reason. */
static void test_monitor_down_carries_reason(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet b;
    static struct watch wb;
    kiln_term pb = spawn_puppet(rt, &b, false, NULL);
    watch_start(rt, &wb, pb);
    assert_true(wait_info(rt, pb, F_MONITORED_BY, 1, WAIT_MS));
    send_cmd(rt, pb, "{exit,foo}");
    assert_true(watch_reason(&wb) == atom("foo"));
    assert_true(atomic_load(&wb.obj) == pb);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    watch_free(&wb);
}

/* A normal exit is reported too: DOWN with normal. */
static void test_monitor_down_on_normal_exit(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet b;
    static struct watch wb;
    kiln_term pb = spawn_puppet(rt, &b, false, NULL);
    watch_start(rt, &wb, pb);
    send_cmd(rt, pb, "{exit,normal}");
    assert_true(watch_reason(&wb) == KILN_ATOM_NORMAL);
    assert_true(atomic_load(&wb.obj) == pb);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    watch_free(&wb);
}

/* Monitoring a dead pid gives DOWN with noproc at once. */
static void test_monitor_dead_pid_noproc(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct watch w;
    kiln_term dead = dead_pid(rt);
    watch_start(rt, &w, dead);
    assert_true(watch_reason(&w) == KILN_ATOM_NOPROC);
    assert_true(atomic_load(&w.obj) == dead);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    watch_free(&w);
}

/* demonitor(Ref, [flush]) after the target died: the queued DOWN is gone. */
struct dmon_ctx {
    kiln_term target;
    kiln_msg *refm;
    _Atomic int rc1, rc2, got_down2, queued_before, dem_rc, after_rc, later_rc;
    _Atomic long queued_after;
    _Atomic int done;
};

struct ref_arg {
    kiln_term ref;
};

static bool is_down_for(kiln_term t, void *arg)
{
    struct ref_arg *r = arg;
    kiln_term ref;
    return kiln_match(t, "{'DOWN',~t,process,_,_}", &ref) == KILN_OK && kiln_term_eq(ref, r->ref);
}

static bool match_nothing(kiln_term t, void *arg)
{
    (void)t;
    (void)arg;
    return false;
}

static void demonitor_flush_body(void *arg)
{
    struct dmon_ctx *c = arg;
    kiln_term ref1 = KILN_NONE, ref2 = KILN_NONE;
    atomic_store(&c->rc1, kiln_monitor(c->target, c->refm, &ref1));
    atomic_store(&c->rc2, kiln_monitor(c->target, c->refm, &ref2));
    kiln_send(c->target, mk("{exit,foo}"));
    /* Wait for the second DOWN only: the first one is queued meanwhile. */
    struct ref_arg r2 = {ref2};
    kiln_msg *m = NULL;
    if (kiln_receive(is_down_for, &r2, WAIT_MS, &m) == KILN_OK) {
        atomic_store(&c->got_down2, 1);
        kiln_msg_free(m);
    }
    /* The two DOWNs may come in either order: drain the mailbox until the
     * first monitor's DOWN sits in the queue as a message. */
    kiln_proc_info info;
    for (int i = 0; i < WAIT_MS; i++) {
        kiln_msg *none = NULL;
        if (kiln_receive(match_nothing, NULL, 0, &none) == KILN_OK)
            kiln_msg_free(none);
        if (kiln_process_info(kiln_current_rt(), kiln_self(), &info) == KILN_OK && info.message_queue_len >= 1)
            break;
        kiln_sleep(1);
    }
    if (kiln_process_info(kiln_current_rt(), kiln_self(), &info) == KILN_OK)
        atomic_store(&c->queued_before, (int)info.message_queue_len);
    atomic_store(&c->dem_rc, kiln_demonitor(ref1, true));
    m = NULL;
    int rc = kiln_receive(NULL, NULL, 0, &m);
    atomic_store(&c->after_rc, rc);
    if (rc == KILN_OK)
        kiln_msg_free(m);
    /* And nothing turns up later either. */
    m = NULL;
    rc = kiln_receive(NULL, NULL, 100, &m);
    atomic_store(&c->later_rc, rc);
    if (rc == KILN_OK)
        kiln_msg_free(m);
    if (kiln_process_info(kiln_current_rt(), kiln_self(), &info) == KILN_OK)
        atomic_store(&c->queued_after, (long)info.message_queue_len);
    atomic_store(&c->done, 1);
}

static void test_demonitor_flush_removes_queued_down(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet b;
    static struct dmon_ctx c;
    memset(&c, 0, sizeof c);
    c.target = spawn_puppet(rt, &b, false, NULL);
    c.refm = kiln_msg_new(128);
    assert_non_null(c.refm);
    atomic_store(&c.queued_after, -1);
    kiln_test_run_in_process(rt, demonitor_flush_body, &c, 3 * WAIT_MS);
    assert_int_equal(atomic_load(&c.rc1), KILN_OK);
    assert_int_equal(atomic_load(&c.rc2), KILN_OK);
    assert_true(atomic_load(&c.got_down2));
    /* The DOWN for the first monitor was queued before the flush... */
    assert_int_equal(atomic_load(&c.queued_before), 1);
    assert_int_equal(atomic_load(&c.dem_rc), KILN_OK);
    /* ...and is gone after it. */
    assert_int_equal(atomic_load(&c.after_rc), KILN_ETIMEOUT);
    assert_int_equal(atomic_load(&c.later_rc), KILN_ETIMEOUT);
    assert_int_equal(atomic_load(&c.queued_after), 0);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    kiln_msg_free(c.refm);
}

/* demonitor without flush before the target dies: no DOWN ever, and the
 * target forgets the monitor. */
struct dmon2_ctx {
    kiln_term target;
    kiln_msg *refm;
    _Atomic int rc1, dem_rc, pong, monitored_by_after, rc2, got_down2, stray_rc;
};

static void demonitor_early_body(void *arg)
{
    struct dmon2_ctx *c = arg;
    kiln_rt *rt = kiln_current_rt();
    kiln_term ref1 = KILN_NONE, ref2 = KILN_NONE;
    atomic_store(&c->rc1, kiln_monitor(c->target, c->refm, &ref1));
    atomic_store(&c->dem_rc, kiln_demonitor(ref1, false));
    /* The pong proves the target handled both signals. */
    kiln_send(c->target, mk("{ping,~p}", kiln_self()));
    kiln_msg *m = NULL;
    if (kiln_receive(is_pong_from, &c->target, WAIT_MS, &m) == KILN_OK) {
        atomic_store(&c->pong, 1);
        kiln_msg_free(m);
    }
    kiln_proc_info info;
    atomic_store(&c->monitored_by_after, -1);
    if (kiln_process_info(rt, c->target, &info) == KILN_OK)
        atomic_store(&c->monitored_by_after, (int)info.monitored_by);
    /* A second monitor tells us when the target is gone. */
    atomic_store(&c->rc2, kiln_monitor(c->target, c->refm, &ref2));
    kiln_send(c->target, mk("{exit,foo}"));
    struct ref_arg r2 = {ref2};
    m = NULL;
    if (kiln_receive(is_down_for, &r2, WAIT_MS, &m) == KILN_OK) {
        atomic_store(&c->got_down2, 1);
        kiln_msg_free(m);
    }
    m = NULL;
    int rc = kiln_receive(NULL, NULL, 100, &m);
    atomic_store(&c->stray_rc, rc);
    if (rc == KILN_OK)
        kiln_msg_free(m);
}

static void test_demonitor_before_death_no_down(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet b;
    static struct dmon2_ctx c;
    memset(&c, 0, sizeof c);
    c.target = spawn_puppet(rt, &b, false, NULL);
    c.refm = kiln_msg_new(128);
    assert_non_null(c.refm);
    kiln_test_run_in_process(rt, demonitor_early_body, &c, 3 * WAIT_MS);
    assert_int_equal(atomic_load(&c.rc1), KILN_OK);
    assert_int_equal(atomic_load(&c.dem_rc), KILN_OK);
    assert_true(atomic_load(&c.pong));
    assert_int_equal(atomic_load(&c.monitored_by_after), 0);
    assert_int_equal(atomic_load(&c.rc2), KILN_OK);
    assert_true(atomic_load(&c.got_down2));
    assert_int_equal(atomic_load(&c.stray_rc), KILN_ETIMEOUT);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    kiln_msg_free(c.refm);
}

/* monitor by registered name: the DOWN names {Name, Node}. */
static void test_monitor_by_name_down_names_name_node(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet b;
    static struct watch w;
    kiln_term name = atom("lm_named_target");
    kiln_term pb = spawn_puppet(rt, &b, false, "lm_named_target");
    assert_true(kiln_whereis(rt, name) == pb);
    watch_start(rt, &w, name);
    assert_true(wait_info(rt, pb, F_MONITORED_BY, 1, WAIT_MS));
    send_cmd(rt, pb, "{exit,foo}");
    assert_true(watch_reason(&w) == atom("foo"));
    assert_true(atomic_load(&w.obj_name) == name);
    assert_true(atomic_load(&w.obj_node) == kiln_rt_node(rt));
    assert_true(kiln_rt_node(rt) == atom("nonode@nohost"));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    watch_free(&w);
}

/* monitor of a name nobody has: DOWN noproc at once, naming {Name, Node}. */
static void test_monitor_unregistered_name_noproc(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct watch w;
    kiln_term name = atom("lm_nobody_here");
    assert_true(kiln_is_none(kiln_whereis(rt, name)));
    watch_start(rt, &w, name);
    assert_true(watch_reason(&w) == KILN_ATOM_NOPROC);
    assert_true(atomic_load(&w.obj_name) == name);
    assert_true(atomic_load(&w.obj_node) == kiln_rt_node(rt));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    watch_free(&w);
}

/* monitor/demonitor counts: monitors on the watcher, monitored_by on the
 * target, both back to 0 after demonitor. */
struct mcount_ctx {
    kiln_term target;
    kiln_msg *refm;
    _Atomic int mon_rc, mine_during, mine_after, pong;
};

static void monitor_count_body(void *arg)
{
    struct mcount_ctx *c = arg;
    kiln_rt *rt = kiln_current_rt();
    kiln_term ref;
    kiln_proc_info info;
    atomic_store(&c->mon_rc, kiln_monitor(c->target, c->refm, &ref));
    atomic_store(&c->mine_during, -1);
    if (kiln_process_info(rt, kiln_self(), &info) == KILN_OK)
        atomic_store(&c->mine_during, (int)info.monitors);
    kiln_send(c->target, mk("{ping,~p}", kiln_self()));
    kiln_msg *m = NULL;
    if (kiln_receive(is_pong_from, &c->target, WAIT_MS, &m) == KILN_OK) {
        atomic_store(&c->pong, 1);
        kiln_msg_free(m);
    }
    /* Stay until the test thread has looked at the target's count. */
    m = NULL;
    if (kiln_receive(NULL, NULL, WAIT_MS, &m) == KILN_OK)
        kiln_msg_free(m);
    kiln_demonitor(ref, true);
    atomic_store(&c->mine_after, -1);
    if (kiln_process_info(rt, kiln_self(), &info) == KILN_OK)
        atomic_store(&c->mine_after, (int)info.monitors);
}

static void test_monitor_counts_in_process_info(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct puppet b;
    static struct mcount_ctx c;
    memset(&c, 0, sizeof c);
    c.target = spawn_puppet(rt, &b, false, NULL);
    c.refm = kiln_msg_new(64);
    assert_non_null(c.refm);
    kiln_term p;
    assert_int_equal(kiln_spawn_fn(rt, monitor_count_body, &c, NULL, &p), KILN_OK);
    assert_true(kiln_test_wait_flag(&c.pong, WAIT_MS));
    assert_int_equal(atomic_load(&c.mon_rc), KILN_OK);
    assert_int_equal(atomic_load(&c.mine_during), 1);
    kiln_proc_info info;
    assert_int_equal(kiln_process_info(rt, c.target, &info), KILN_OK);
    assert_int_equal(info.monitored_by, 1);
    assert_int_equal(info.monitors, 0);
    send_cmd(rt, p, "go");
    assert_true(wait_dead(rt, p, WAIT_MS));
    assert_int_equal(atomic_load(&c.mine_after), 0);
    assert_true(wait_info(rt, c.target, F_MONITORED_BY, 0, WAIT_MS));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    kiln_msg_free(c.refm);
}

/* ======================= spawn options ======================= */

static void stop_foo_body(void *arg)
{
    (void)arg;
    kiln_stop(kiln_atom_c("foo"));
}

static void wait_forever_body(void *arg) { puppet_loop(arg); }

/* spawn with link from a trapping process: the child's exit arrives as
 * {'EXIT', Child, foo}, and the parent's link count drops to 0. */
struct slink_ctx {
    _Atomic int spawn_rc, got_exit, links_after;
    _Atomic uint64_t child, from, reason;
};

static void spawn_link_body(void *arg)
{
    struct slink_ctx *c = arg;
    kiln_rt *rt = kiln_current_rt();
    kiln_trap_exit(true);
    kiln_spawn_opts o;
    memset(&o, 0, sizeof o);
    o.link = true;
    kiln_term child = KILN_NONE;
    atomic_store(&c->spawn_rc, kiln_spawn_fn(rt, stop_foo_body, NULL, &o, &child));
    atomic_store(&c->child, child);
    kiln_msg *m = NULL;
    if (kiln_receive(NULL, NULL, WAIT_MS, &m) == KILN_OK) {
        kiln_term f, r;
        if (kiln_match(kiln_msg_term(m), "{'EXIT',~t,~t}", &f, &r) == KILN_OK) {
            atomic_store(&c->from, f);
            atomic_store(&c->reason, is_immediate(r) ? r : KILN_NONE);
            atomic_store(&c->got_exit, 1);
        }
        kiln_msg_free(m);
    }
    kiln_proc_info info;
    atomic_store(&c->links_after, -1);
    if (kiln_process_info(rt, kiln_self(), &info) == KILN_OK)
        atomic_store(&c->links_after, (int)info.links);
}

static void test_spawn_opts_link_delivers_exit(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct slink_ctx c;
    memset(&c, 0, sizeof c);
    kiln_test_run_in_process(rt, spawn_link_body, &c, 2 * WAIT_MS);
    assert_int_equal(atomic_load(&c.spawn_rc), KILN_OK);
    assert_true(atomic_load(&c.got_exit));
    assert_true(atomic_load(&c.from) == atomic_load(&c.child));
    assert_true(atomic_load(&c.reason) == atom("foo"));
    assert_int_equal(atomic_load(&c.links_after), 0);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* A link made by spawn must show in process_info on both sides, like one
 * made by link/1 (spawn_link then process_info(self(), links) -> [Child]). */
struct scount_ctx {
    bool monitor;
    kiln_msg *refm;
    _Atomic int spawn_rc, done;
    _Atomic int parent_links, parent_monitors;
    _Atomic uint64_t child;
};

static void spawn_count_body(void *arg)
{
    struct scount_ctx *c = arg;
    kiln_rt *rt = kiln_current_rt();
    kiln_spawn_opts o;
    memset(&o, 0, sizeof o);
    kiln_term ref = KILN_NONE;
    if (c->monitor) {
        o.monitor = true;
        o.monitor_ref_msg = c->refm;
        o.monitor_ref = &ref;
    } else {
        o.link = true;
    }
    kiln_term child = KILN_NONE;
    atomic_store(&c->spawn_rc, kiln_spawn_fn(rt, wait_forever_body, NULL, &o, &child));
    atomic_store(&c->child, child);
    kiln_proc_info info;
    atomic_store(&c->parent_links, -1);
    atomic_store(&c->parent_monitors, -1);
    if (kiln_process_info(rt, kiln_self(), &info) == KILN_OK) {
        atomic_store(&c->parent_links, (int)info.links);
        atomic_store(&c->parent_monitors, (int)info.monitors);
    }
    atomic_store(&c->done, 1);
    /* Stay alive (and linked/monitoring) until the runtime stops. */
    kiln_msg *m = NULL;
    while (kiln_receive(NULL, NULL, -1, &m) == KILN_OK)
        kiln_msg_free(m);
}

static void test_spawn_opts_link_shows_in_process_info(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct scount_ctx c;
    memset(&c, 0, sizeof c);
    c.monitor = false;
    kiln_term parent;
    assert_int_equal(kiln_spawn_fn(rt, spawn_count_body, &c, NULL, &parent), KILN_OK);
    assert_true(kiln_test_wait_flag(&c.done, WAIT_MS));
    assert_int_equal(atomic_load(&c.spawn_rc), KILN_OK);
    kiln_proc_info info;
    assert_int_equal(kiln_process_info(rt, atomic_load(&c.child), &info), KILN_OK);
    size_t child_links = info.links;
    assert_int_equal(kiln_process_info(rt, parent, &info), KILN_OK);
    size_t parent_links = info.links;
    print_message("spawn link: parent sees %d link(s) from inside, %zu from outside; child %zu\n",
                  atomic_load(&c.parent_links), parent_links, child_links);
    assert_int_equal(atomic_load(&c.parent_links), 1);
    assert_int_equal(parent_links, 1);
    assert_int_equal(child_links, 1);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

static void test_spawn_opts_monitor_shows_in_process_info(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct scount_ctx c;
    memset(&c, 0, sizeof c);
    c.monitor = true;
    c.refm = kiln_msg_new(64);
    assert_non_null(c.refm);
    kiln_term parent;
    assert_int_equal(kiln_spawn_fn(rt, spawn_count_body, &c, NULL, &parent), KILN_OK);
    assert_true(kiln_test_wait_flag(&c.done, WAIT_MS));
    assert_int_equal(atomic_load(&c.spawn_rc), KILN_OK);
    kiln_proc_info info;
    assert_int_equal(kiln_process_info(rt, atomic_load(&c.child), &info), KILN_OK);
    size_t child_monitored_by = info.monitored_by;
    print_message("spawn monitor: parent sees %d monitor(s); child monitored_by %zu\n",
                  atomic_load(&c.parent_monitors), child_monitored_by);
    assert_int_equal(atomic_load(&c.parent_monitors), 1);
    assert_int_equal(child_monitored_by, 1);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    kiln_msg_free(c.refm);
}

/* spawn with monitor: the returned ref is the one in the child's DOWN. */
struct smon_ctx {
    kiln_msg *refm;
    _Atomic int spawn_rc, got_down, ref_ok, monitors_after;
    _Atomic uint64_t child, obj, reason;
};

static void spawn_monitor_body(void *arg)
{
    struct smon_ctx *c = arg;
    kiln_rt *rt = kiln_current_rt();
    kiln_spawn_opts o;
    memset(&o, 0, sizeof o);
    kiln_term ref = KILN_NONE;
    o.monitor = true;
    o.monitor_ref_msg = c->refm;
    o.monitor_ref = &ref;
    kiln_term child = KILN_NONE;
    atomic_store(&c->spawn_rc, kiln_spawn_fn(rt, stop_foo_body, NULL, &o, &child));
    atomic_store(&c->child, child);
    kiln_msg *m = NULL;
    if (kiln_receive(NULL, NULL, WAIT_MS, &m) == KILN_OK) {
        kiln_term r, obj, reason;
        if (kiln_match(kiln_msg_term(m), "{'DOWN',~t,process,~t,~t}", &r, &obj, &reason) == KILN_OK) {
            atomic_store(&c->got_down, 1);
            atomic_store(&c->ref_ok, kiln_is_ref(ref) && kiln_term_eq(r, ref));
            atomic_store(&c->obj, is_immediate(obj) ? obj : KILN_NONE);
            atomic_store(&c->reason, is_immediate(reason) ? reason : KILN_NONE);
        }
        kiln_msg_free(m);
    }
    kiln_proc_info info;
    atomic_store(&c->monitors_after, -1);
    if (kiln_process_info(rt, kiln_self(), &info) == KILN_OK)
        atomic_store(&c->monitors_after, (int)info.monitors);
}

static void test_spawn_opts_monitor_delivers_down(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct smon_ctx c;
    memset(&c, 0, sizeof c);
    c.refm = kiln_msg_new(64);
    assert_non_null(c.refm);
    kiln_test_run_in_process(rt, spawn_monitor_body, &c, 2 * WAIT_MS);
    assert_int_equal(atomic_load(&c.spawn_rc), KILN_OK);
    assert_true(atomic_load(&c.got_down));
    assert_true(atomic_load(&c.ref_ok));
    assert_true(atomic_load(&c.obj) == atomic_load(&c.child));
    assert_true(atomic_load(&c.reason) == atom("foo"));
    assert_int_equal(atomic_load(&c.monitors_after), 0);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    kiln_msg_free(c.refm);
}

/* link/monitor spawn options need a calling process. */
static void test_spawn_opts_link_outside_process_enotproc(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    kiln_spawn_opts o;
    memset(&o, 0, sizeof o);
    o.link = true;
    kiln_term pid = KILN_NONE;
    assert_int_equal(kiln_spawn_fn(rt, empty_body, NULL, &o, &pid), KILN_ENOTPROC);
    assert_int_equal(kiln_rt_process_count(rt), 0);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* ======================= a chain of links ======================= */

#define CHAIN_LEN 100

struct chain;
struct chain_node {
    struct chain *c;
    int i;
};
struct chain {
    kiln_rt *rt;
    struct chain_node nodes[CHAIN_LEN];
    _Atomic uint64_t pids[CHAIN_LEN];
    _Atomic long up;
    _Atomic int spawn_failed;
};

static void chain_body(void *arg)
{
    struct chain_node *n = arg;
    struct chain *c = n->c;
    atomic_store(&c->pids[n->i], kiln_self());
    if (n->i + 1 < CHAIN_LEN) {
        kiln_spawn_opts o;
        memset(&o, 0, sizeof o);
        o.link = true;
        if (kiln_spawn_fn(c->rt, chain_body, &c->nodes[n->i + 1], &o, NULL) != KILN_OK)
            atomic_store(&c->spawn_failed, 1);
    }
    atomic_fetch_add(&c->up, 1);
    puppet_loop(NULL);
}

/* 100 processes linked head to tail; the head exits with boom: every one
 * dies, and the tail dies with boom too. */
static void test_link_chain_propagates_to_all(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct chain c;
    static struct watch tail, mid;
    memset(&c, 0, sizeof c);
    c.rt = rt;
    for (int i = 0; i < CHAIN_LEN; i++)
        c.nodes[i] = (struct chain_node){&c, i};
    assert_int_equal(kiln_spawn_fn(rt, chain_body, &c.nodes[0], NULL, NULL), KILN_OK);
    assert_true(kiln_test_wait_count(&c.up, CHAIN_LEN, WAIT_MS));
    assert_false(atomic_load(&c.spawn_failed));
    assert_int_equal(kiln_rt_process_count(rt), CHAIN_LEN);
    watch_start(rt, &tail, atomic_load(&c.pids[CHAIN_LEN - 1]));
    watch_start(rt, &mid, atomic_load(&c.pids[CHAIN_LEN / 2]));
    send_cmd(rt, atomic_load(&c.pids[0]), "{exit,boom}");
    /* Everyone goes, the two watchers included once they have their DOWN. */
    assert_true(wait_procs(rt, 0, 2 * WAIT_MS));
    assert_true(watch_reason(&tail) == atom("boom"));
    assert_true(watch_reason(&mid) == atom("boom"));
    for (int i = 0; i < CHAIN_LEN; i++)
        assert_false(kiln_is_alive(rt, atomic_load(&c.pids[i])));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
    watch_free(&tail);
    watch_free(&mid);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_link_abnormal_exit_kills_linked_process),
        cmocka_unit_test(test_compound_exit_reason_reaches_links_and_monitors),
        cmocka_unit_test(test_link_twice_is_one_link),
        cmocka_unit_test(test_trap_exit_flag_returns_old_value),
        cmocka_unit_test(test_exit_to_dead_pid_is_ok),
        cmocka_unit_test(test_messages_before_exit_arrive_before_exit_and_down),
        cmocka_unit_test(test_link_normal_exit_does_not_kill),
        cmocka_unit_test(test_trap_exit_turns_exit_into_message),
        cmocka_unit_test(test_trap_exit_sees_normal_exit_of_link),
        cmocka_unit_test(test_exit_kill_linked_trapper_sees_killed),
        cmocka_unit_test(test_link_exit_reason_kill_is_trappable),
        cmocka_unit_test(test_exit_normal_ignored_when_not_trapping),
        cmocka_unit_test(test_exit_normal_delivered_when_trapping),
        cmocka_unit_test(test_exit_reason_delivered_when_trapping),
        cmocka_unit_test(test_exit_kill_kills_trapping_process),
        cmocka_unit_test(test_exit_reason_kills_non_trapping_process),
        cmocka_unit_test(test_exit_self_normal_ends_process),
        cmocka_unit_test(test_rt_exit_from_foreign_thread),
        cmocka_unit_test(test_rt_exit_kill_from_foreign_thread),
        cmocka_unit_test(test_link_dead_pid_not_trapping_enoproc),
        cmocka_unit_test(test_link_dead_pid_trapping_gets_noproc_exit),
        cmocka_unit_test(test_unlink_stops_propagation),
        cmocka_unit_test(test_unlink_guarantee_when_partner_dies_first),
        cmocka_unit_test(test_link_counts_drop_after_partner_dies),
        cmocka_unit_test(test_monitor_down_carries_reason),
        cmocka_unit_test(test_monitor_down_on_normal_exit),
        cmocka_unit_test(test_monitor_dead_pid_noproc),
        cmocka_unit_test(test_demonitor_flush_removes_queued_down),
        cmocka_unit_test(test_demonitor_before_death_no_down),
        cmocka_unit_test(test_monitor_by_name_down_names_name_node),
        cmocka_unit_test(test_monitor_unregistered_name_noproc),
        cmocka_unit_test(test_monitor_counts_in_process_info),
        cmocka_unit_test(test_spawn_opts_link_delivers_exit),
        cmocka_unit_test(test_spawn_opts_link_shows_in_process_info),
        cmocka_unit_test(test_spawn_opts_monitor_shows_in_process_info),
        cmocka_unit_test(test_spawn_opts_monitor_delivers_down),
        cmocka_unit_test(test_spawn_opts_link_outside_process_enotproc),
        cmocka_unit_test(test_link_chain_propagates_to_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
