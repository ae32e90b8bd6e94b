/* The runtime's side of distribution, with a recording stand-in for the
 * node: what local processes send, link, exit and monitor across nodes
 * reaches the installed operations, and what a peer does (injected as the
 * node's connections do) reaches local processes with Erlang's semantics,
 * including noconnection when a node goes down. */
#include "testutil.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/dist_hooks.h"

enum op { OP_SEND, OP_LINK, OP_UNLINK, OP_EXIT, OP_MONITOR, OP_DEMONITOR, OP_DOWN, OP_INVOLVE };

struct call {
    enum op op;
    kiln_msg *store; /* owns copies of the terms below */
    kiln_term a, b, c, d;
    bool flag;
};

static struct {
    pthread_mutex_t lock;
    struct call calls[256];
    int n;
} rec = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void record(enum op op, kiln_term a, kiln_term b, kiln_term c, kiln_term d, bool flag)
{
    pthread_mutex_lock(&rec.lock);
    if (rec.n < 256) {
        struct call *k = &rec.calls[rec.n++];
        k->op = op;
        k->store = kiln_msg_new(256);
        k->a = kiln_is_none(a) ? KILN_NONE : kiln_term_copy(k->store, a);
        k->b = kiln_is_none(b) ? KILN_NONE : kiln_term_copy(k->store, b);
        k->c = kiln_is_none(c) ? KILN_NONE : kiln_term_copy(k->store, c);
        k->d = kiln_is_none(d) ? KILN_NONE : kiln_term_copy(k->store, d);
        k->flag = flag;
    }
    pthread_mutex_unlock(&rec.lock);
}

static void rec_reset(void)
{
    pthread_mutex_lock(&rec.lock);
    for (int i = 0; i < rec.n; i++)
        kiln_msg_free(rec.calls[i].store);
    rec.n = 0;
    pthread_mutex_unlock(&rec.lock);
}

/* Wait until a call of kind op has been recorded; returns its index. */
static int wait_op(enum op op)
{
    for (int t = 0; t < 5000; t++) {
        pthread_mutex_lock(&rec.lock);
        for (int i = 0; i < rec.n; i++) {
            if (rec.calls[i].op == op) {
                pthread_mutex_unlock(&rec.lock);
                return i;
            }
        }
        pthread_mutex_unlock(&rec.lock);
        usleep(1000);
    }
    fail_msg("operation %d never reached the distribution layer", op);
    return -1;
}

static bool has_op(enum op op)
{
    pthread_mutex_lock(&rec.lock);
    bool found = false;
    for (int i = 0; i < rec.n; i++)
        found |= rec.calls[i].op == op;
    pthread_mutex_unlock(&rec.lock);
    return found;
}

static int f_send(void *ctx, kiln_term from, kiln_term to, kiln_msg *msg)
{
    (void)ctx;
    record(OP_SEND, from, to, kiln_msg_term(msg), KILN_NONE, false);
    kiln_msg_free(msg);
    return KILN_OK;
}
static int f_link(void *ctx, kiln_term from, kiln_term to)
{
    (void)ctx;
    record(OP_LINK, from, to, KILN_NONE, KILN_NONE, false);
    return KILN_OK;
}
static int f_unlink(void *ctx, kiln_term from, kiln_term to)
{
    (void)ctx;
    record(OP_UNLINK, from, to, KILN_NONE, KILN_NONE, false);
    return KILN_OK;
}
static int f_exit(void *ctx, kiln_term from, kiln_term to, kiln_term reason, bool exit2)
{
    (void)ctx;
    record(OP_EXIT, from, to, reason, KILN_NONE, exit2);
    return KILN_OK;
}
static int f_monitor(void *ctx, kiln_term from, kiln_term target, kiln_term node, kiln_term ref)
{
    (void)ctx;
    record(OP_MONITOR, from, target, node, ref, false);
    return KILN_OK;
}
static int f_demonitor(void *ctx, kiln_term from, kiln_term target, kiln_term node, kiln_term ref)
{
    (void)ctx;
    record(OP_DEMONITOR, from, target, node, ref, false);
    return KILN_OK;
}
static int f_down(void *ctx, kiln_term what, kiln_term watcher, kiln_term ref, kiln_term reason)
{
    (void)ctx;
    record(OP_DOWN, what, watcher, ref, reason, false);
    return KILN_OK;
}
static void f_involve(void *ctx, kiln_term node, kiln_term pid)
{
    (void)ctx;
    record(OP_INVOLVE, node, pid, KILN_NONE, KILN_NONE, false);
}

static const struct kiln_dist_ops fake = {f_send, f_link, f_unlink, f_exit, f_monitor, f_demonitor, f_down, f_involve};

/* A peer node and one of its processes, as the tests see them. */
static kiln_msg *remote_store;
static kiln_term other_node, remote_pid, remote_ref;

static kiln_rt *setup(void)
{
    kiln_rt *rt = kiln_test_rt(2, NULL);
    kiln_rt_set_dist(rt, &fake, NULL);
    rec_reset();
    remote_store = kiln_msg_new(256);
    other_node = kiln_atom_c("other@host");
    remote_pid = kiln_ext_pid(remote_store, other_node, 77, 3, 9);
    uint32_t w[3] = {11, 22, 33};
    remote_ref = kiln_ref(remote_store, other_node, 9, w, 3);
    assert_false(kiln_is_none(remote_ref));
    return rt;
}

static void teardown_rt(kiln_rt *rt)
{
    kiln_rt_stop(rt);
    kiln_msg_free(remote_store);
    rec_reset();
}

/* ---- a local process that does things to the remote one ---- */

struct actor {
    _Atomic int step; /* the test moves it forward */
    _Atomic int done;
    int rc;
    kiln_term self;
    kiln_msg *got;    /* messages it received, kept for the test */
    kiln_msg *refs;
    kiln_term mref;
};

static bool any_msg(kiln_term t, void *a)
{
    (void)t;
    (void)a;
    return true;
}

static void wait_step(struct actor *a, int s)
{
    while (atomic_load(&a->step) < s)
        kiln_sleep(1);
}

static void sender_body(void *arg)
{
    struct actor *a = arg;
    a->self = kiln_self();
    a->rc = kiln_send(remote_pid, kiln_test_msg("{hello,~i}", (int64_t)1));
    kiln_msg *m = kiln_msg_new(64);
    kiln_term to = kiln_tuple(m, 2, kiln_atom_c("svc"), other_node);
    kiln_send(to, kiln_test_msg("via_name"));
    kiln_msg_free(m);
    atomic_store(&a->done, 1);
}

static void test_sends_go_to_the_node(void **state)
{
    (void)state;
    kiln_rt *rt = setup();
    struct actor a = {0};
    kiln_test_run_in_process(rt, sender_body, &a, 5000);
    assert_int_equal(a.rc, KILN_OK);
    int i = wait_op(OP_SEND);
    assert_true(kiln_term_eq(rec.calls[i].b, remote_pid));
    assert_int_equal(rec.calls[i].a, a.self);
    assert_int_equal(kiln_match(rec.calls[i].c, "{hello,1}"), KILN_OK);
    assert_int_equal(rec.n >= 2, 1);
    assert_int_equal(kiln_match(rec.calls[1].b, "{svc,'other@host'}"), KILN_OK);
    /* Without a node, remote destinations are not reachable. */
    kiln_rt_set_dist(rt, NULL, NULL);
    assert_int_equal(kiln_rt_send(rt, remote_pid, kiln_test_msg("x")), KILN_ENOTSUP);
    teardown_rt(rt);
}

static void linker_body(void *arg)
{
    struct actor *a = arg;
    a->self = kiln_self();
    kiln_trap_exit(true);
    a->rc = kiln_link(remote_pid);
    atomic_store(&a->done, 1);
    kiln_msg *m;
    if (kiln_receive(any_msg, NULL, 5000, &m) == KILN_OK)
        a->got = m;
    atomic_store(&a->done, 2);
}

static void test_link_out_and_exit_in(void **state)
{
    (void)state;
    kiln_rt *rt = setup();
    struct actor *a = calloc(1, sizeof(*a));
    kiln_term pid;
    assert_int_equal(kiln_spawn_fn(rt, linker_body, a, NULL, &pid), KILN_OK);
    assert_true(kiln_test_wait_flag(&a->done, 5000));
    assert_int_equal(a->rc, KILN_OK);
    int i = wait_op(OP_LINK);
    assert_int_equal(rec.calls[i].a, pid);
    assert_true(kiln_term_eq(rec.calls[i].b, remote_pid));
    /* The node learns that this process has something on other@host. */
    i = wait_op(OP_INVOLVE);
    assert_int_equal(rec.calls[i].a, other_node);
    /* The remote process dies: the trapping local one gets the 'EXIT'. */
    assert_int_equal(kiln_dist_in_exit(rt, remote_pid, pid, kiln_atom_c("boom"), false), KILN_OK);
    for (int t = 0; t < 5000 && atomic_load(&a->done) < 2; t++)
        usleep(1000);
    assert_non_null(a->got);
    kiln_term from;
    assert_int_equal(kiln_match(kiln_msg_term(a->got), "{'EXIT',~t,boom}", &from), KILN_OK);
    assert_true(kiln_term_eq(from, remote_pid));
    kiln_msg_free(a->got);
    teardown_rt(rt);
    free(a);
}

static void idle_body(void *arg)
{
    struct actor *a = arg;
    a->self = kiln_self();
    wait_step(a, 1);
    kiln_stop(kiln_atom_c("bye"));
}

static void test_link_in_then_local_death_goes_out(void **state)
{
    (void)state;
    kiln_rt *rt = setup();
    struct actor *a = calloc(1, sizeof(*a));
    kiln_term pid;
    assert_int_equal(kiln_spawn_fn(rt, idle_body, a, NULL, &pid), KILN_OK);
    assert_int_equal(kiln_dist_in_link(rt, remote_pid, pid), KILN_OK);
    assert_int_equal(kiln_dist_in_monitor(rt, remote_pid, pid, remote_ref), KILN_OK);
    /* Both arrive before the local process goes on (it waits on step). */
    for (int t = 0; t < 5000; t++) {
        kiln_proc_info info;
        if (kiln_process_info(rt, pid, &info) == KILN_OK && info.links == 1 && info.monitored_by == 1)
            break;
        usleep(1000);
    }
    atomic_store(&a->step, 1);
    int i = wait_op(OP_EXIT);
    assert_int_equal(rec.calls[i].a, pid);
    assert_true(kiln_term_eq(rec.calls[i].b, remote_pid));
    assert_int_equal(rec.calls[i].c, kiln_atom_c("bye"));
    assert_false(rec.calls[i].flag);
    i = wait_op(OP_DOWN);
    assert_int_equal(rec.calls[i].a, pid);
    assert_true(kiln_term_eq(rec.calls[i].b, remote_pid));
    assert_true(kiln_term_eq(rec.calls[i].c, remote_ref));
    assert_int_equal(rec.calls[i].d, kiln_atom_c("bye"));
    teardown_rt(rt);
    free(a);
}

static void test_remote_signals_to_the_dead_and_the_unregistered(void **state)
{
    (void)state;
    kiln_rt *rt = setup();
    struct actor *a = calloc(1, sizeof(*a));
    kiln_term pid;
    assert_int_equal(kiln_spawn_fn(rt, idle_body, a, NULL, &pid), KILN_OK);
    atomic_store(&a->step, 1);
    assert_int_equal(kiln_rt_wait_idle(rt, 5000), KILN_OK);
    /* Link to a dead process: the remote linker gets noproc. */
    assert_int_equal(kiln_dist_in_link(rt, remote_pid, pid), KILN_OK);
    int i = wait_op(OP_EXIT);
    assert_int_equal(rec.calls[i].c, KILN_ATOM_NOPROC);
    assert_true(kiln_term_eq(rec.calls[i].b, remote_pid));
    /* Monitor by an unregistered name: DOWN noproc naming the name. */
    assert_int_equal(kiln_dist_in_monitor(rt, remote_pid, kiln_atom_c("nobody"), remote_ref), KILN_OK);
    i = wait_op(OP_DOWN);
    assert_int_equal(rec.calls[i].a, kiln_atom_c("nobody"));
    assert_int_equal(rec.calls[i].d, KILN_ATOM_NOPROC);
    teardown_rt(rt);
    free(a);
}

static void watcher_body(void *arg)
{
    struct actor *a = arg;
    a->self = kiln_self();
    a->refs = kiln_msg_new(128);
    a->rc = kiln_monitor(remote_pid, a->refs, &a->mref);
    atomic_store(&a->done, 1);
    kiln_msg *m;
    if (kiln_receive(any_msg, NULL, 5000, &m) == KILN_OK)
        a->got = m;
    atomic_store(&a->done, 2);
}

static void test_monitor_out_and_down_in(void **state)
{
    (void)state;
    kiln_rt *rt = setup();
    struct actor *a = calloc(1, sizeof(*a));
    kiln_term pid;
    assert_int_equal(kiln_spawn_fn(rt, watcher_body, a, NULL, &pid), KILN_OK);
    assert_true(kiln_test_wait_flag(&a->done, 5000));
    assert_int_equal(a->rc, KILN_OK);
    int i = wait_op(OP_MONITOR);
    assert_int_equal(rec.calls[i].a, pid);
    assert_true(kiln_term_eq(rec.calls[i].b, remote_pid));
    assert_int_equal(rec.calls[i].c, other_node);
    assert_true(kiln_term_eq(rec.calls[i].d, a->mref));
    assert_int_equal(kiln_dist_in_down(rt, remote_pid, pid, a->mref, kiln_atom_c("gone")), KILN_OK);
    for (int t = 0; t < 5000 && atomic_load(&a->done) < 2; t++)
        usleep(1000);
    assert_non_null(a->got);
    kiln_term ref, what;
    assert_int_equal(kiln_match(kiln_msg_term(a->got), "{'DOWN',~t,process,~t,gone}", &ref, &what), KILN_OK);
    assert_true(kiln_term_eq(ref, a->mref));
    assert_true(kiln_term_eq(what, remote_pid));
    kiln_msg_free(a->got);
    teardown_rt(rt);
    kiln_msg_free(a->refs);
    free(a);
}

struct nd {
    _Atomic int ready;
    _Atomic int got_n;
    kiln_msg *got[2];
    kiln_msg *refs;
};

static void nodedown_trapper(void *arg)
{
    struct nd *n = arg;
    kiln_trap_exit(true);
    kiln_link(remote_pid);
    n->refs = kiln_msg_new(128);
    kiln_term mref;
    kiln_monitor(remote_pid, n->refs, &mref);
    atomic_store(&n->ready, 1);
    for (int i = 0; i < 2; i++) {
        kiln_msg *m;
        if (kiln_receive(any_msg, NULL, 5000, &m) != KILN_OK)
            break;
        n->got[i] = m;
        atomic_fetch_add(&n->got_n, 1);
    }
}

static void nodedown_victim(void *arg)
{
    struct nd *n = arg;
    kiln_link(remote_pid);
    atomic_store(&n->ready, 1);
    kiln_sleep(10000);
}

static void test_nodedown_fires_noconnection(void **state)
{
    (void)state;
    kiln_rt *rt = setup();
    struct nd *n = calloc(1, sizeof(*n));
    kiln_term pid;
    assert_int_equal(kiln_spawn_fn(rt, nodedown_trapper, n, NULL, &pid), KILN_OK);
    assert_true(kiln_test_wait_flag(&n->ready, 5000));
    assert_int_equal(kiln_dist_in_nodedown(rt, other_node, pid), KILN_OK);
    for (int t = 0; t < 5000 && atomic_load(&n->got_n) < 2; t++)
        usleep(1000);
    assert_int_equal(atomic_load(&n->got_n), 2);
    bool saw_exit = false, saw_down = false;
    for (int i = 0; i < 2; i++) {
        kiln_term t = kiln_msg_term(n->got[i]);
        saw_exit |= kiln_match(t, "{'EXIT',_,noconnection}") == KILN_OK;
        saw_down |= kiln_match(t, "{'DOWN',_,process,_,noconnection}") == KILN_OK;
        kiln_msg_free(n->got[i]);
    }
    assert_true(saw_exit);
    assert_true(saw_down);
    /* A process that does not trap exits dies with noconnection. */
    struct nd *v = calloc(1, sizeof(*v));
    kiln_term vp;
    assert_int_equal(kiln_spawn_fn(rt, nodedown_victim, v, NULL, &vp), KILN_OK);
    assert_true(kiln_test_wait_flag(&v->ready, 5000));
    assert_int_equal(kiln_dist_in_nodedown(rt, other_node, vp), KILN_OK);
    for (int t = 0; t < 5000 && kiln_is_alive(rt, vp); t++)
        usleep(1000);
    assert_false(kiln_is_alive(rt, vp));
    /* Nothing about the fired links and monitors goes to the gone node. */
    assert_false(has_op(OP_DEMONITOR));
    assert_false(has_op(OP_EXIT));
    teardown_rt(rt);
    kiln_msg_free(n->refs);
    free(n);
    free(v);
}

static void test_exit2_kill_from_remote(void **state)
{
    (void)state;
    kiln_rt *rt = setup();
    struct actor *a = calloc(1, sizeof(*a));
    kiln_term pid;
    kiln_spawn_opts o = {.trap_exit = true};
    assert_int_equal(kiln_spawn_fn(rt, idle_body, a, &o, &pid), KILN_OK);
    assert_int_equal(kiln_dist_in_exit(rt, remote_pid, pid, KILN_ATOM_KILL, true), KILN_OK);
    for (int t = 0; t < 5000 && kiln_is_alive(rt, pid); t++)
        usleep(1000);
    assert_false(kiln_is_alive(rt, pid));
    teardown_rt(rt);
    free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sends_go_to_the_node),
        cmocka_unit_test(test_link_out_and_exit_in),
        cmocka_unit_test(test_link_in_then_local_death_goes_out),
        cmocka_unit_test(test_remote_signals_to_the_dead_and_the_unregistered),
        cmocka_unit_test(test_monitor_out_and_down_in),
        cmocka_unit_test(test_nodedown_fires_noconnection),
        cmocka_unit_test(test_exit2_kill_from_remote),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
