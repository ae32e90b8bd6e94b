/* Processes through the public API: spawn, send, selective receive, calls,
 * sleep/yield, the blocking pool, stacks held only while blocked, bounded
 * mailboxes, pid uniqueness. */
#include "testutil.h"
#include "runtime/message.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a counting behaviour ---- */

struct counter {
    _Atomic long handled;
    _Atomic long out_of_order;
    _Atomic int terminated;
    long next;
    kiln_term last_reason;
};

static int counter_init(void *arg, void **state)
{
    *state = arg;
    return KILN_OK;
}

static kiln_action counter_handle(void *state, kiln_msg *m)
{
    struct counter *c = state;
    int64_t v;
    if (kiln_get_int64(kiln_msg_term(m), &v) == KILN_OK) {
        if (v != c->next)
            atomic_fetch_add(&c->out_of_order, 1);
        c->next = v + 1;
    }
    if (kiln_msg_term(m) == kiln_atom_c("stop"))
        return kiln_stop(kiln_atom_c("asked"));
    atomic_fetch_add(&c->handled, 1);
    return KILN_CONTINUE;
}

static void counter_terminate(void *state, kiln_term reason)
{
    struct counter *c = state;
    c->last_reason = reason;
    atomic_store(&c->terminated, 1);
}

static const kiln_behaviour counter_beh = {"counter", counter_init, counter_handle, counter_terminate};

static void test_behaviour_receives_in_order_and_stops(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct counter *c = calloc(1, sizeof(*c));
    kiln_term pid;
    assert_int_equal(kiln_spawn(rt, &counter_beh, c, NULL, &pid), KILN_OK);
    assert_true(kiln_is_local_pid(pid));
    for (int i = 0; i < 10000; i++) {
        kiln_msg *m = kiln_msg_new(8);
        kiln_msg_set_term(m, kiln_small(i));
        assert_int_equal(kiln_rt_send(rt, pid, m), KILN_OK);
    }
    assert_true(kiln_test_wait_count(&c->handled, 10000, 10000));
    assert_int_equal(atomic_load(&c->out_of_order), 0);
    assert_int_equal(kiln_rt_send(rt, pid, kiln_test_msg("stop")), KILN_OK);
    assert_true(kiln_test_wait_flag(&c->terminated, 5000));
    assert_int_equal(c->last_reason, kiln_atom_c("asked"));
    assert_int_equal(kiln_rt_wait_idle(rt, 5000), KILN_OK);
    assert_false(kiln_is_alive(rt, pid));
    kiln_rt_stop(rt);
    free(c);
}

/* ---- selective receive ---- */

struct sel {
    kiln_term self;
    kiln_term order[3];
    int rc_timeout;
    uint64_t waited_ms;
};

static bool is_b(kiln_term t, void *arg)
{
    (void)arg;
    return t == kiln_atom_c("b");
}

static void selective_body(void *arg)
{
    struct sel *s = arg;
    s->self = kiln_self();
    kiln_send(s->self, kiln_test_msg("a"));
    kiln_send(s->self, kiln_test_msg("c"));
    kiln_send(s->self, kiln_test_msg("b"));
    kiln_msg *m;
    /* b is taken first; a and c keep their order. */
    if (kiln_receive(is_b, NULL, 1000, &m) == KILN_OK) {
        s->order[0] = kiln_msg_term(m);
        kiln_msg_free(m);
    }
    for (int i = 1; i < 3; i++) {
        if (kiln_receive(kiln_test_any, NULL, 1000, &m) == KILN_OK) {
            s->order[i] = kiln_msg_term(m);
            kiln_msg_free(m);
        }
    }
    uint64_t t0 = kiln_now_ms();
    s->rc_timeout = kiln_receive(is_b, NULL, 50, &m);
    s->waited_ms = kiln_now_ms() - t0;
}

static void test_selective_receive_keeps_order(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct sel s = {0};
    kiln_test_run_in_process(rt, selective_body, &s, 5000);
    assert_int_equal(s.order[0], kiln_atom_c("b"));
    assert_int_equal(s.order[1], kiln_atom_c("a"));
    assert_int_equal(s.order[2], kiln_atom_c("c"));
    assert_int_equal(s.rc_timeout, KILN_ETIMEOUT);
    assert_true(s.waited_ms >= 50);
    kiln_rt_stop(rt);
}

/* ---- calls ---- */

struct server_ctl {
    _Atomic int delay_ms;
};

static kiln_action echo_handle(void *state, kiln_msg *m)
{
    struct server_ctl *ctl = state;
    kiln_term from, req;
    if (kiln_match_call(kiln_msg_term(m), &from, &req) != KILN_OK)
        return KILN_CONTINUE;
    if (req == kiln_atom_c("die"))
        return kiln_stop(kiln_atom_c("died_in_call"));
    int d = ctl ? atomic_load(&ctl->delay_ms) : 0;
    if (d)
        kiln_sleep((uint64_t)d);
    kiln_term first;
    if (kiln_match(req, "{first,~t}", &first) == KILN_OK) {
        /* A message to the caller ahead of the reply. */
        kiln_msg *x = kiln_msg_new(64);
        kiln_msg_set_term(x, kiln_term_copy(x, first));
        kiln_send(kiln_tuple_get(from, 0), x);
    }
    kiln_msg *r = kiln_msg_new(64);
    kiln_msg_set_term(r, kiln_term_copy(r, req));
    kiln_reply(from, r);
    return KILN_CONTINUE;
}

static const kiln_behaviour echo_beh = {"echo", NULL, echo_handle, NULL};

struct call_res {
    kiln_term server;
    int rc_ok, rc_dead, rc_timeout, rc_died;
    int64_t value;
    int late_rc;
    kiln_term died_reason;
    kiln_proc_info info_after;
};

static void caller_body(void *arg)
{
    struct call_res *r = arg;
    kiln_msg *reply = NULL, *reason = NULL;
    r->rc_ok = kiln_call(r->server, kiln_test_msg("~i", (int64_t)42), 1000, &reply, NULL);
    if (r->rc_ok == KILN_OK) {
        kiln_get_int64(kiln_msg_term(reply), &r->value);
        kiln_msg_free(reply);
    }
    r->rc_dead = kiln_call(kiln_atom_c("nobody_here"), kiln_test_msg("x"), 1000, &reply, NULL);
    kiln_process_info(kiln_current_rt(), kiln_self(), &r->info_after);
    r->rc_died = kiln_call(r->server, kiln_test_msg("die"), 1000, &reply, &reason);
    if (reason) {
        r->died_reason = kiln_msg_term(reason);
        kiln_msg_free(reason);
    }
}

static void test_call_reply_noproc_and_exit(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct call_res r = {0};
    assert_int_equal(kiln_spawn(rt, &echo_beh, NULL, NULL, &r.server), KILN_OK);
    kiln_test_run_in_process(rt, caller_body, &r, 5000);
    assert_int_equal(r.rc_ok, KILN_OK);
    assert_int_equal(r.value, 42);
    assert_int_equal(r.rc_dead, KILN_ENOPROC);
    /* A finished call leaves no monitor behind. */
    assert_int_equal(r.info_after.monitors, 0);
    assert_int_equal(r.rc_died, KILN_EEXIT);
    assert_int_equal(r.died_reason, kiln_atom_c("died_in_call"));
    kiln_rt_stop(rt);
}

/* KILN_CALL_ROOM and KILN_REPLY_ROOM are what kiln_call and kiln_reply
 * add to a message: sized with them, request and reply each stay one
 * block (a second one is an allocation per call). */
static kiln_action roomy_handle(void *state, kiln_msg *m)
{
    _Atomic int *request_chunked = state;
    kiln_term from, req;
    if (kiln_match_call(kiln_msg_term(m), &from, &req) != KILN_OK)
        return KILN_CONTINUE;
    atomic_store(request_chunked, m->chunks != NULL);
    kiln_msg *r = kiln_msg_new(KILN_REPLY_ROOM);
    kiln_msg_set_term(r, req);
    kiln_reply(from, r);
    return KILN_CONTINUE;
}

static const kiln_behaviour roomy_beh = {"roomy", NULL, roomy_handle, NULL};

struct room_res {
    kiln_term server;
    int rc;
    bool reply_chunked;
};

static void room_caller(void *arg)
{
    struct room_res *r = arg;
    kiln_msg *req = kiln_msg_new(KILN_CALL_ROOM);
    kiln_msg_set_term(req, kiln_atom_c("ping"));
    kiln_msg *reply = NULL;
    r->rc = kiln_call(r->server, req, 1000, &reply, NULL);
    if (r->rc == KILN_OK) {
        r->reply_chunked = reply->chunks != NULL;
        kiln_msg_free(reply);
    }
}

static void test_call_and_reply_room(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    _Atomic int request_chunked = -1;
    struct room_res r = {0};
    assert_int_equal(kiln_spawn(rt, &roomy_beh, &request_chunked, NULL, &r.server), KILN_OK);
    kiln_test_run_in_process(rt, room_caller, &r, 5000);
    assert_int_equal(r.rc, KILN_OK);
    assert_int_equal(atomic_load(&request_chunked), 0);
    assert_false(r.reply_chunked);
    kiln_rt_stop(rt);
}

/* Calls from a process with a backlog of saved messages: the reply (and
 * a DOWN) is found though the scan starts after the backlog, and the
 * backlog is still there, in order, afterwards. */
static bool never(kiln_term t, void *arg)
{
    (void)t;
    (void)arg;
    return false;
}

struct backlog_res {
    kiln_term server, dying;
    int ok_calls, rc_died, in_order, first_call;
    uint32_t queued;
};

static void backlog_caller(void *arg)
{
    struct backlog_res *r = arg;
    for (int64_t i = 0; i < 500; i++)
        kiln_send(kiln_self(), kiln_test_msg("~i", i));
    kiln_msg *m = NULL;
    kiln_receive(never, NULL, 0, &m); /* moves them all to the saved list */
    for (int64_t i = 0; i < 50; i++) {
        kiln_msg *reply = NULL;
        int64_t v = -1;
        if (kiln_call(r->server, kiln_test_msg("~i", 1000 + i), 1000, &reply, NULL) == KILN_OK &&
            kiln_get_int64(kiln_msg_term(reply), &v) == KILN_OK && v == 1000 + i)
            r->ok_calls++;
        kiln_msg_free(reply);
    }
    /* Replies taken by the calls are not counted as queued. */
    kiln_proc_info info;
    if (kiln_process_info(kiln_current_rt(), kiln_self(), &info) == KILN_OK)
        r->queued = info.message_queue_len;
    /* A message the server sends before its reply waits behind the
     * backlog, and the reply still ends the call. */
    kiln_msg *reply = NULL, *reason = NULL;
    r->first_call = kiln_call(r->server, kiln_test_msg("{first,500}"), 1000, &reply, NULL);
    kiln_msg_free(reply);
    reply = NULL;
    r->rc_died = kiln_call(r->dying, kiln_test_msg("die"), 1000, &reply, &reason);
    kiln_msg_free(reason);
    r->in_order = 1;
    for (int64_t i = 0; i <= 500; i++) {
        int64_t v = -1;
        if (kiln_receive(kiln_test_any, NULL, 0, &m) != KILN_OK ||
            kiln_get_int64(kiln_msg_term(m), &v) != KILN_OK || v != i)
            r->in_order = 0;
        kiln_msg_free(m);
        m = NULL;
    }
}

static void test_calls_with_a_backlog(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct backlog_res r = {0};
    assert_int_equal(kiln_spawn(rt, &echo_beh, NULL, NULL, &r.server), KILN_OK);
    assert_int_equal(kiln_spawn(rt, &echo_beh, NULL, NULL, &r.dying), KILN_OK);
    kiln_test_run_in_process(rt, backlog_caller, &r, 10000);
    assert_int_equal(r.ok_calls, 50);
    assert_int_equal(r.queued, 500);
    assert_int_equal(r.first_call, KILN_OK);
    assert_int_equal(r.rc_died, KILN_EEXIT);
    assert_int_equal(r.in_order, 1);
    kiln_rt_stop(rt);
}

static void timeout_caller(void *arg)
{
    struct call_res *r = arg;
    kiln_msg *reply = NULL;
    r->rc_timeout = kiln_call(r->server, kiln_test_msg("slow"), 30, &reply, NULL);
    /* The server replies later; the alias is gone so nothing arrives. */
    kiln_msg *m = NULL;
    r->late_rc = kiln_receive(kiln_test_any, NULL, 300, &m);
    if (m)
        kiln_msg_free(m);
}

static void test_call_timeout_drops_late_reply(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct server_ctl ctl = {100};
    struct call_res r = {0};
    assert_int_equal(kiln_spawn(rt, &echo_beh, &ctl, NULL, &r.server), KILN_OK);
    kiln_test_run_in_process(rt, timeout_caller, &r, 5000);
    assert_int_equal(r.rc_timeout, KILN_ETIMEOUT);
    assert_int_equal(r.late_rc, KILN_ETIMEOUT);
    kiln_rt_stop(rt);
}

/* A call's monitor and alias live in a slot of their own (call.c); a call
 * made while one waits (here from terminate, after an exit signal ended
 * the process in the middle of its call) uses the general tables. Both
 * must work, and both monitors show in process_info and go with the
 * process. */
struct nested {
    kiln_term silent, echo;
    _Atomic int inner_rc, terminated;
    _Atomic int64_t inner_value;
};

static kiln_action nested_handle(void *state, kiln_msg *m)
{
    struct nested *n = state;
    (void)m;
    kiln_msg *reply = NULL;
    kiln_call(n->silent, kiln_test_msg("hang"), -1, &reply, NULL); /* never answered */
    kiln_msg_free(reply);
    return KILN_CONTINUE;
}

static void nested_terminate(void *state, kiln_term reason)
{
    struct nested *n = state;
    (void)reason;
    kiln_msg *reply = NULL;
    int rc = kiln_call(n->echo, kiln_test_msg("~i", (int64_t)7), 1000, &reply, NULL);
    int64_t v = -1;
    if (rc == KILN_OK) {
        kiln_get_int64(kiln_msg_term(reply), &v);
        kiln_msg_free(reply);
    }
    atomic_store(&n->inner_value, v);
    atomic_store(&n->inner_rc, rc);
    atomic_store(&n->terminated, 1);
}

static const kiln_behaviour nested_beh = {"nested", counter_init, nested_handle, nested_terminate};

static bool wait_monitored_by(kiln_rt *rt, kiln_term pid, size_t want)
{
    kiln_proc_info info;
    for (int i = 0; i < 5000; i++) {
        if (kiln_process_info(rt, pid, &info) == KILN_OK && info.monitored_by == want)
            return true;
        usleep(1000);
    }
    return false;
}

static void test_call_in_terminate_while_a_call_waits(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct counter silent_state;
    struct nested n = {0};
    n.inner_rc = -1;
    assert_int_equal(kiln_spawn(rt, &counter_beh, &silent_state, NULL, &n.silent), KILN_OK);
    assert_int_equal(kiln_spawn(rt, &echo_beh, NULL, NULL, &n.echo), KILN_OK);
    kiln_term p;
    assert_int_equal(kiln_spawn(rt, &nested_beh, &n, NULL, &p), KILN_OK);
    kiln_rt_send(rt, p, kiln_test_msg("go"));
    assert_true(wait_monitored_by(rt, n.silent, 1));
    kiln_proc_info info;
    assert_int_equal(kiln_process_info(rt, p, &info), KILN_OK);
    assert_int_equal(info.monitors, 1);
    kiln_rt_exit(rt, p, kiln_atom_c("shutdown"));
    assert_true(kiln_test_wait_flag(&n.terminated, 5000));
    assert_int_equal(atomic_load(&n.inner_rc), KILN_OK);
    assert_int_equal(atomic_load(&n.inner_value), 7);
    /* The dead caller's monitors went with it: the silent server's too. */
    assert_true(wait_monitored_by(rt, n.silent, 0));
    assert_true(wait_monitored_by(rt, n.echo, 0));
    kiln_rt_stop(rt);
}

/* A server replying with kiln_reply to an alias its caller made itself
 * (not through kiln_call): the caller receives {[alias|Alias], Reply}, as
 * from gen:reply in Erlang. */
struct alias_res {
    kiln_term server;
    int rc;
    _Atomic int wrapped;
};

static void alias_caller(void *arg)
{
    struct alias_res *r = arg;
    kiln_msg *refm = kiln_msg_new(64), *req = kiln_msg_new(64);
    kiln_term alias;
    r->rc = kiln_alias(false, refm, &alias);
    if (r->rc != KILN_OK) {
        kiln_msg_free(refm);
        kiln_msg_free(req);
        return;
    }
    kiln_term tag = kiln_cons(req, kiln_atom_c("alias"), kiln_term_copy(req, alias));
    kiln_msg_set_term(req, kiln_tuple(req, 3, kiln_atom_c("$gen_call"), kiln_tuple(req, 2, kiln_self(), tag),
                                      kiln_atom_c("ping")));
    kiln_send(r->server, req);
    kiln_msg *m = NULL;
    r->rc = kiln_receive(kiln_test_any, NULL, 1000, &m);
    if (r->rc != KILN_OK) {
        kiln_msg_free(refm);
        return;
    }
    kiln_msg *want = kiln_msg_new(64);
    kiln_term w = kiln_tuple(want, 2, kiln_cons(want, kiln_atom_c("alias"), kiln_term_copy(want, alias)),
                             kiln_atom_c("ping"));
    atomic_store(&r->wrapped, kiln_term_eq(kiln_msg_term(m), w) ? 1 : 2);
    kiln_msg_free(want);
    kiln_msg_free(m);
    kiln_unalias(alias);
    kiln_msg_free(refm);
}

static void test_reply_to_a_user_alias_arrives_wrapped(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct alias_res r = {0};
    assert_int_equal(kiln_spawn(rt, &echo_beh, NULL, NULL, &r.server), KILN_OK);
    kiln_test_run_in_process(rt, alias_caller, &r, 5000);
    assert_int_equal(r.rc, KILN_OK);
    assert_int_equal(atomic_load(&r.wrapped), 1);
    kiln_rt_stop(rt);
}

/* ---- many calls with timeouts do not pile up timers ---- */

struct many_calls {
    kiln_term server;
    int failures;
    uint64_t max_pending;
};

static void many_calls_body(void *arg)
{
    struct many_calls *mc = arg;
    for (int i = 0; i < 20000; i++) {
        kiln_msg *reply;
        if (kiln_call(mc->server, kiln_test_msg("~i", (int64_t)i), 5000, &reply, NULL) != KILN_OK) {
            mc->failures++;
            continue;
        }
        kiln_msg_free(reply);
        uint64_t pend = kiln_timers_pending(kiln_current_rt());
        if (pend > mc->max_pending)
            mc->max_pending = pend;
    }
}

static void test_calls_with_timeouts_keep_timers_bounded(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct many_calls mc = {0};
    assert_int_equal(kiln_spawn(rt, &echo_beh, NULL, NULL, &mc.server), KILN_OK);
    kiln_test_run_in_process(rt, many_calls_body, &mc, 30000);
    assert_int_equal(mc.failures, 0);
    /* One lazily re-armed receive timer for the caller, not one per call. */
    assert_true(mc.max_pending <= 1);
    kiln_rt_stop(rt);
}

/* ---- stacks only while blocked ---- */

/* stacks_in_use once it reaches want, or after ms if it does not. */
static uint64_t stacks_in_use_after(kiln_rt *rt, uint64_t want, int ms)
{
    kiln_rt_stats st;
    for (int i = 0; i < ms; i++) {
        kiln_rt_get_stats(rt, &st);
        if (st.stacks_in_use == want)
            break;
        usleep(1000);
    }
    return st.stacks_in_use;
}

struct blocker {
    _Atomic long ready;
};

static void block_forever(void *arg)
{
    struct blocker *b = arg;
    atomic_fetch_add(&b->ready, 1);
    kiln_msg *m;
    kiln_receive(kiln_test_any, NULL, -1, &m);
    kiln_msg_free(m);
}

static void test_idle_processes_hold_no_stack(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    enum { N = 2000 };
    kiln_term idle[N];
    for (int i = 0; i < N; i++)
        assert_int_equal(kiln_spawn(rt, &echo_beh, NULL, NULL, &idle[i]), KILN_OK);
    struct blocker b = {0};
    kiln_term blocked[10];
    for (int i = 0; i < 10; i++)
        assert_int_equal(kiln_spawn_fn(rt, block_forever, &b, NULL, &blocked[i]), KILN_OK);
    assert_true(kiln_test_wait_count(&b.ready, 10, 5000));
    usleep(20000);
    kiln_rt_stats st;
    kiln_rt_get_stats(rt, &st);
    /* Only the ten blocked processes hold stacks, not the 2000 idle ones. */
    assert_int_equal(st.stacks_in_use, 10);
    kiln_proc_info info;
    assert_int_equal(kiln_process_info(rt, idle[0], &info), KILN_OK);
    assert_false(info.has_stack);
    assert_int_equal(info.status, KILN_PS_WAITING);
    assert_int_equal(kiln_process_info(rt, blocked[0], &info), KILN_OK);
    assert_true(info.has_stack);
    /* Wake them: they return, exit, and give their stacks back. */
    for (int i = 0; i < 10; i++)
        kiln_rt_send(rt, blocked[i], kiln_test_msg("go"));
    assert_int_equal(stacks_in_use_after(rt, 0, 1000), 0);
    kiln_rt_stop(rt);
}

/* Behaviour handlers run on the scheduler loop's own stack. One that
 * blocks keeps that stack, loop frames and all, and the loop goes on on a
 * spare; resumed (on either worker) and done, it returns into those
 * frames, which carry on as a loop. The processes must go on working, and
 * every stack must come back. */
struct parker {
    _Atomic long blocked, resumed, calls;
};

static bool is_go(kiln_term t, void *arg)
{
    (void)arg;
    return t == kiln_atom_c("go");
}

static kiln_action parker_handle(void *state, kiln_msg *m)
{
    struct parker *pk = state;
    kiln_term t = kiln_msg_term(m);
    if (t == kiln_atom_c("block") || t == kiln_atom_c("block_then_stop")) {
        atomic_fetch_add(&pk->blocked, 1);
        kiln_msg *go = NULL;
        if (kiln_receive(is_go, NULL, -1, &go) == KILN_OK)
            kiln_msg_free(go);
        /* Off the stack and back on it a few more times. */
        for (int i = 0; i < 3; i++)
            kiln_yield();
        atomic_fetch_add(&pk->resumed, 1);
        return t == kiln_atom_c("block") ? KILN_CONTINUE : kiln_stop(kiln_atom_c("normal"));
    }
    kiln_term from, req;
    if (kiln_match_call(t, &from, &req) == KILN_OK) {
        atomic_fetch_add(&pk->calls, 1);
        kiln_msg *r = kiln_msg_new(64);
        kiln_msg_set_term(r, kiln_term_copy(r, req));
        kiln_reply(from, r);
    }
    return KILN_CONTINUE;
}

static const kiln_behaviour parker_beh = {"parker", counter_init, parker_handle, NULL};

enum { PARKERS = 64, PARKERS_STOPPING = 8 };

struct parkers {
    kiln_term pid[PARKERS];
    int call_failures;
};

static void release_second_half(void *arg)
{
    struct parkers *ps = arg;
    for (int i = PARKERS / 2; i < PARKERS; i++)
        kiln_send(ps->pid[i], kiln_test_msg("go"));
}

static void call_survivors(void *arg)
{
    struct parkers *ps = arg;
    for (int round = 0; round < 3; round++) {
        for (int i = PARKERS_STOPPING; i < PARKERS; i++) {
            kiln_msg *reply = NULL;
            int64_t v = -1;
            if (kiln_call(ps->pid[i], kiln_test_msg("~i", (int64_t)i), 2000, &reply, NULL) != KILN_OK ||
                kiln_get_int64(kiln_msg_term(reply), &v) != KILN_OK || v != i)
                ps->call_failures++;
            kiln_msg_free(reply);
        }
    }
}

static void test_handlers_that_block_give_the_loop_stack_back(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct parker pk = {0};
    struct parkers ps = {0};
    for (int i = 0; i < PARKERS; i++)
        assert_int_equal(kiln_spawn(rt, &parker_beh, &pk, NULL, &ps.pid[i]), KILN_OK);
    for (int i = 0; i < PARKERS; i++)
        kiln_rt_send(rt, ps.pid[i], kiln_test_msg(i < PARKERS_STOPPING ? "block_then_stop" : "block"));
    assert_true(kiln_test_wait_count(&pk.blocked, PARKERS, 5000));
    usleep(20000);
    kiln_rt_stats st;
    kiln_rt_get_stats(rt, &st);
    assert_int_equal(st.stacks_in_use, PARKERS);
    /* Woken from outside the runtime and from a process. */
    for (int i = 0; i < PARKERS / 2; i++)
        kiln_rt_send(rt, ps.pid[i], kiln_test_msg("go"));
    kiln_test_run_in_process(rt, release_second_half, &ps, 5000);
    assert_true(kiln_test_wait_count(&pk.resumed, PARKERS, 5000));
    kiln_test_run_in_process(rt, call_survivors, &ps, 10000);
    assert_int_equal(ps.call_failures, 0);
    assert_int_equal(atomic_load(&pk.calls), 3 * (PARKERS - PARKERS_STOPPING));
    kiln_proc_info info;
    for (int i = 0; i < PARKERS_STOPPING; i++)
        assert_int_equal(kiln_process_info(rt, ps.pid[i], &info), KILN_ENOPROC);
    assert_int_equal(stacks_in_use_after(rt, 0, 1000), 0);
    kiln_rt_stop(rt);
}

/* ---- sleep, yield, blocking pool ---- */

struct timing {
    uint64_t slept_ms;
    int yield_rc;
    void *blocking_result;
    int blocking_rc;
    _Atomic long ticks;
};

static void *slow_syscall(void *arg)
{
    usleep(100000);
    return (char *)arg + 1;
}

static void sleeper(void *arg)
{
    struct timing *t = arg;
    uint64_t t0 = kiln_now_ms();
    kiln_sleep(60);
    t->slept_ms = kiln_now_ms() - t0;
    t->yield_rc = kiln_yield();
    static char token[2];
    t->blocking_rc = kiln_blocking(slow_syscall, token, &t->blocking_result);
}

static void ticker(void *arg)
{
    struct timing *t = arg;
    for (int i = 0; i < 50; i++) {
        atomic_fetch_add(&t->ticks, 1);
        kiln_sleep(2);
    }
}

static void test_sleep_yield_blocking_keep_others_running(void **state)
{
    (void)state;
    /* One worker: if sleeping or the blocking call held the thread, the
     * ticker could not run meanwhile. */
    kiln_rt *rt = kiln_test_rt(1, NULL);
    struct timing t = {0};
    kiln_term pid;
    assert_int_equal(kiln_spawn_fn(rt, ticker, &t, NULL, &pid), KILN_OK);
    kiln_test_run_in_process(rt, sleeper, &t, 5000);
    assert_true(t.slept_ms >= 60);
    assert_int_equal(t.yield_rc, KILN_OK);
    assert_int_equal(t.blocking_rc, KILN_OK);
    assert_non_null(t.blocking_result);
    assert_true(atomic_load(&t.ticks) >= 20);
    kiln_rt_stop(rt);
}

/* ---- bounded mailboxes ---- */

struct bounded {
    kiln_term target;
    int rcs[6];
    kiln_term got[6];
    int ngot;
};

static void bounded_body(void *arg)
{
    struct bounded *b = arg;
    for (int i = 0; i < 6; i++)
        b->rcs[i] = kiln_send(b->target, kiln_test_msg("~i", (int64_t)i));
}

static void drain_body(void *arg)
{
    struct bounded *b = arg;
    kiln_msg *m;
    while (b->ngot < 6 && kiln_receive(kiln_test_any, NULL, 0, &m) == KILN_OK) {
        b->got[b->ngot++] = kiln_msg_term(m);
        kiln_msg_free(m);
    }
}

struct gate {
    _Atomic int open;
};

static void gated_receiver(void *arg)
{
    struct gate *g = arg;
    /* Busy until opened, so messages pile up in the mailbox. */
    while (!atomic_load(&g->open))
        kiln_sleep(1);
    kiln_msg *m;
    int64_t v;
    while (kiln_receive(kiln_test_any, NULL, 200, &m) == KILN_OK) {
        kiln_get_int64(kiln_msg_term(m), &v);
        kiln_msg_free(m);
    }
}

static void test_bounded_mailbox_policies(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct gate g = {0};
    kiln_spawn_opts o = {.max_mailbox = 3, .overflow = KILN_OVERFLOW_FAIL};
    struct bounded b = {0};
    assert_int_equal(kiln_spawn_fn(rt, gated_receiver, &g, &o, &b.target), KILN_OK);
    kiln_test_run_in_process(rt, bounded_body, &b, 5000);
    for (int i = 0; i < 3; i++)
        assert_int_equal(b.rcs[i], KILN_OK);
    for (int i = 3; i < 6; i++)
        assert_int_equal(b.rcs[i], KILN_EMAILBOX_FULL);
    kiln_proc_info info;
    assert_int_equal(kiln_process_info(rt, b.target, &info), KILN_OK);
    assert_int_equal(info.message_queue_len, 3);
    atomic_store(&g.open, 1);
    kiln_rt_stop(rt);
}

static void newest_receiver(void *arg)
{
    kiln_sleep(100); /* let the sender fill the mailbox first */
    drain_body(arg);
}

static void test_bounded_drop_newest_and_oldest(void **state)
{
    (void)state;
    for (int policy = KILN_OVERFLOW_DROP_NEWEST; policy <= KILN_OVERFLOW_DROP_OLDEST; policy++) {
        kiln_rt *rt = kiln_test_rt(2, NULL);
        struct bounded b = {0};
        kiln_spawn_opts o = {.max_mailbox = 3, .overflow = (kiln_overflow)policy};
        struct bounded *rb = calloc(1, sizeof(*rb));
        assert_int_equal(kiln_spawn_fn(rt, newest_receiver, rb, &o, &b.target), KILN_OK);
        kiln_test_run_in_process(rt, bounded_body, &b, 5000);
        for (int i = 0; i < 6; i++)
            assert_int_equal(b.rcs[i], KILN_OK);
        assert_int_equal(kiln_rt_wait_idle(rt, 5000), KILN_OK);
        assert_int_equal(rb->ngot, 3);
        int64_t first;
        assert_int_equal(kiln_get_int64(rb->got[0], &first), KILN_OK);
        /* Newest dropped: 0,1,2 kept. Oldest dropped: 3,4,5 kept. */
        assert_int_equal(first, policy == KILN_OVERFLOW_DROP_NEWEST ? 0 : 3);
        kiln_rt_stop(rt);
        free(rb);
    }
}

/* A bounded mailbox drains its queue when a receive starts (to apply the
 * bound); a blocking wait whose answer came back that fast must still
 * find it. */
static void *answer_at_once(void *arg) { return arg; }

struct bounded_waits {
    _Atomic int done;
    int fails;
};

static void bounded_waiter(void *arg)
{
    struct bounded_waits *w = arg;
    for (int i = 0; i < 2000; i++) {
        void *r = NULL;
        if (kiln_blocking(answer_at_once, w, &r) != KILN_OK || r != w)
            w->fails++;
    }
    atomic_store(&w->done, 1);
}

static void test_bounded_mailbox_blocking_waits(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct bounded_waits w = {0};
    kiln_spawn_opts o = {.max_mailbox = 8, .overflow = KILN_OVERFLOW_DROP_OLDEST};
    assert_int_equal(kiln_spawn_fn(rt, bounded_waiter, &w, &o, NULL), KILN_OK);
    assert_true(kiln_test_wait_flag(&w.done, 20000));
    assert_int_equal(w.fails, 0);
    kiln_rt_stop(rt);
}

/* ---- init and terminate edge cases ---- */

struct life {
    _Atomic int terminated;
    _Atomic int in_init;
    kiln_term reason;
    int mode; /* 0: stop in init; 1/3: block in init before/after setting
               * the state; 2: block in terminate */
};

static int life_init(void *arg, void **state)
{
    struct life *l = arg;
    if (l->mode == 1) {
        /* Killed while here, before there is a state: no terminate. */
        atomic_store(&l->in_init, 1);
        kiln_sleep(3600 * 1000);
    }
    *state = l;
    if (l->mode == 0) {
        kiln_stop(kiln_atom_c("init_says_no"));
    } else if (l->mode == 3) {
        /* Killed while here, with a state set: terminate frees it. */
        atomic_store(&l->in_init, 1);
        kiln_sleep(3600 * 1000);
    }
    return KILN_OK;
}

static kiln_action life_handle(void *state, kiln_msg *m)
{
    (void)state;
    (void)m;
    return kiln_stop(kiln_atom_c("first"));
}

static void life_terminate(void *state, kiln_term reason)
{
    struct life *l = state;
    l->reason = reason;
    if (l->mode == 2) {
        atomic_store(&l->in_init, 1); /* reused: "terminate is running" */
        kiln_sleep(100); /* exit signals arrive meanwhile */
    }
    atomic_store(&l->terminated, 1);
}

static const kiln_behaviour life_beh = {"life", life_init, life_handle, life_terminate};

static void test_init_stop_killed_init_and_blocking_terminate(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    /* kiln_stop in init ends the process with that reason, terminate runs. */
    struct life *a = calloc(1, sizeof(*a));
    a->mode = 0;
    kiln_term pa;
    assert_int_equal(kiln_spawn(rt, &life_beh, a, NULL, &pa), KILN_OK);
    assert_true(kiln_test_wait_flag(&a->terminated, 5000));
    assert_int_equal(a->reason, kiln_atom_c("init_says_no"));
    /* Killed while init blocks: no terminate on a half-made state. */
    struct life *b = calloc(1, sizeof(*b));
    b->mode = 1;
    kiln_term pb;
    assert_int_equal(kiln_spawn(rt, &life_beh, b, NULL, &pb), KILN_OK);
    assert_true(kiln_test_wait_flag(&b->in_init, 5000));
    kiln_rt_exit(rt, pb, KILN_ATOM_KILL);
    for (int i = 0; i < 5000 && kiln_is_alive(rt, pb); i++)
        usleep(1000);
    assert_false(kiln_is_alive(rt, pb));
    assert_int_equal(atomic_load(&b->terminated), 0);
    struct life *d = calloc(1, sizeof(*d));
    d->mode = 3;
    kiln_term pd;
    assert_int_equal(kiln_spawn(rt, &life_beh, d, NULL, &pd), KILN_OK);
    assert_true(kiln_test_wait_flag(&d->in_init, 5000));
    kiln_rt_exit(rt, pd, KILN_ATOM_KILL);
    assert_true(kiln_test_wait_flag(&d->terminated, 5000));
    assert_int_equal(d->reason, KILN_ATOM_KILLED);
    free(d);
    /* A terminate that blocks while exit signals arrive: the first reason
     * stands and the process ends once. */
    struct life *c = calloc(1, sizeof(*c));
    c->mode = 2;
    kiln_term pc;
    assert_int_equal(kiln_spawn(rt, &life_beh, c, NULL, &pc), KILN_OK);
    kiln_rt_send(rt, pc, kiln_test_msg("go"));
    assert_true(kiln_test_wait_flag(&c->in_init, 5000));
    kiln_rt_exit(rt, pc, kiln_atom_c("second"));
    kiln_rt_exit(rt, pc, KILN_ATOM_KILL);
    assert_true(kiln_test_wait_flag(&c->terminated, 5000));
    assert_int_equal(c->reason, kiln_atom_c("first"));
    assert_int_equal(kiln_rt_wait_idle(rt, 5000), KILN_OK);
    kiln_rt_stop(rt);
    free(a);
    free(b);
    free(c);
}

/* ---- pids ---- */

static kiln_action quit_handle(void *state, kiln_msg *m)
{
    (void)state;
    (void)m;
    return KILN_STOP;
}
static const kiln_behaviour quit_beh = {"quit", NULL, quit_handle, NULL};

static void test_dead_pid_never_matches_new_process(void **state)
{
    (void)state;
    kiln_rt_config cfg;
    kiln_rt_config_init(&cfg);
    cfg.max_processes = 64; /* force slot reuse quickly */
    kiln_rt *rt = kiln_test_rt(2, &cfg);
    kiln_term first;
    assert_int_equal(kiln_spawn(rt, &quit_beh, NULL, NULL, &first), KILN_OK);
    kiln_rt_send(rt, first, kiln_test_msg("bye"));
    assert_int_equal(kiln_rt_wait_idle(rt, 5000), KILN_OK);
    for (int round = 0; round < 500; round++) {
        kiln_term p;
        assert_int_equal(kiln_spawn(rt, &quit_beh, NULL, NULL, &p), KILN_OK);
        assert_int_not_equal(p, first);
        /* The old pid is dead even when the new process sits in its slot. */
        assert_false(kiln_is_alive(rt, first));
        kiln_rt_send(rt, p, kiln_test_msg("bye"));
        assert_int_equal(kiln_rt_wait_idle(rt, 5000), KILN_OK);
    }
    /* Sending to a dead pid is not an error. */
    assert_int_equal(kiln_rt_send(rt, first, kiln_test_msg("late")), KILN_OK);
    kiln_rt_stop(rt);
}

static void test_process_table_limit(void **state)
{
    (void)state;
    kiln_rt_config cfg;
    kiln_rt_config_init(&cfg);
    cfg.max_processes = 16;
    kiln_rt *rt = kiln_test_rt(2, &cfg);
    kiln_term p;
    int n = 0, rc;
    while ((rc = kiln_spawn(rt, &echo_beh, NULL, NULL, &p)) == KILN_OK)
        n++;
    assert_int_equal(rc, KILN_ESYSTEM_LIMIT);
    assert_int_equal(n, 15); /* id 0 is never handed out */
    kiln_rt_stop(rt);
}

static void test_outside_process_calls_fail_cleanly(void **state)
{
    (void)state;
    kiln_msg *m;
    assert_int_equal(kiln_receive(kiln_test_any, NULL, 0, &m), KILN_ENOTPROC);
    assert_int_equal(kiln_sleep(1), KILN_ENOTPROC);
    assert_int_equal(kiln_send(kiln_small(1), kiln_msg_new(8)), KILN_ENOTPROC);
    assert_true(kiln_is_none(kiln_self()));
    assert_int_equal(kiln_spawn(NULL, &echo_beh, NULL, NULL, NULL), KILN_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_behaviour_receives_in_order_and_stops),
        cmocka_unit_test(test_selective_receive_keeps_order),
        cmocka_unit_test(test_call_reply_noproc_and_exit),
        cmocka_unit_test(test_call_and_reply_room),
        cmocka_unit_test(test_calls_with_a_backlog),
        cmocka_unit_test(test_call_timeout_drops_late_reply),
        cmocka_unit_test(test_call_in_terminate_while_a_call_waits),
        cmocka_unit_test(test_reply_to_a_user_alias_arrives_wrapped),
        cmocka_unit_test(test_calls_with_timeouts_keep_timers_bounded),
        cmocka_unit_test(test_idle_processes_hold_no_stack),
        cmocka_unit_test(test_handlers_that_block_give_the_loop_stack_back),
        cmocka_unit_test(test_sleep_yield_blocking_keep_others_running),
        cmocka_unit_test(test_bounded_mailbox_policies),
        cmocka_unit_test(test_bounded_drop_newest_and_oldest),
        cmocka_unit_test(test_bounded_mailbox_blocking_waits),
        cmocka_unit_test(test_init_stop_killed_init_and_blocking_terminate),
        cmocka_unit_test(test_dead_pid_never_matches_new_process),
        cmocka_unit_test(test_process_table_limit),
        cmocka_unit_test(test_outside_process_calls_fail_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
