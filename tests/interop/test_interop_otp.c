/* Kiln's OTP behaviours seen from a real Erlang/OTP node: Erlang's own
 * gen_server, gen_statem and supervisor client functions, and a consumer
 * speaking GenStage's message protocol by hand, against Kiln processes
 * across the distribution. Each scenario is its own ctest test. Every
 * check is on what Erlang observes (or what the Kiln callbacks recorded),
 * never on how long something took. */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "erl_harness.h"
#include "kiln/gen_server.h"
#include "kiln/gen_stage.h"
#include "kiln/gen_statem.h"
#include "kiln/node.h"
#include "kiln/supervisor.h"

static kiln_rt *g_rt;
static kiln_node *g_node;
static uint16_t g_epmd;
static char g_kiln[128]; /* kiln@host, quoted where it goes into Erlang text */

static void start_node(void)
{
    g_epmd = free_port();
    short_hostname();
    snprintf(g_kiln, sizeof g_kiln, "kiln@%s", g_host);
    g_rt = kiln_test_rt(2, NULL);
    kiln_node_config c = {.name = "kiln", .cookie = COOKIE, .epmd_port = g_epmd, .net_ticktime = 8};
    assert_int_equal(kiln_node_start(g_rt, &c, &g_node), KILN_OK);
}

static int node_teardown(void **state)
{
    teardown(state); /* the erl nodes first: they are the clients */
    if (g_node)
        kiln_node_stop(g_node);
    if (g_rt)
        kiln_rt_stop(g_rt);
    g_node = NULL;
    g_rt = NULL;
    return 0;
}

static void eval_expect(struct erl_node *e, const char *expr, const char *want)
{
    char res[16384];
    erl_eval(e, expr, res, sizeof res);
    if (!strstr(res, want))
        fail_msg("`%s` gave %s, wanted %s\nerl log:\n%s", expr, res, want, e->log ? e->log : "");
}

/* The REPL forgets bindings between lines (state that must outlive a line
 * goes in the REPL process's dictionary), so every expression starts by
 * binding K to the Kiln node's name. */
static void eval_k(struct erl_node *e, const char *tmpl, const char *want)
{
    char expr[4000];
    int k = snprintf(expr, sizeof expr, "K = '%s', %s", g_kiln, tmpl);
    assert_true(k > 0 && (size_t)k < sizeof expr);
    eval_expect(e, expr, want);
}

static void await_k(struct erl_node *e, const char *tmpl, const char *want, int ms)
{
    char expr[4000];
    int k = snprintf(expr, sizeof expr, "K = '%s', %s", g_kiln, tmpl);
    assert_true(k > 0 && (size_t)k < sizeof expr);
    erl_await(e, expr, want, ms);
}

/* ---- 1: a counter gen_server ---- */

struct counter {
    int64_t n;
};

static kiln_gs_ret counter_init(void *arg, void **state)
{
    (void)arg;
    *state = calloc(1, sizeof(struct counter));
    return *state ? kiln_gs_ok() : kiln_gs_stop(kiln_atom_c("enomem"));
}

static kiln_gs_ret counter_call(void *state, kiln_term req, kiln_term from)
{
    (void)from;
    struct counter *c = state;
    int64_t by;
    if (req == kiln_atom_c("get"))
        return kiln_gs_reply(kiln_small(c->n));
    if (req == kiln_atom_c("whoami"))
        return kiln_gs_reply(kiln_self());
    if (kiln_match(req, "{add,~i}", &by) == KILN_OK) {
        c->n += by;
        kiln_msg *m = kiln_msg_new(64);
        kiln_msg_set_term(m, kiln_build(m, "{ok,~i}", c->n));
        return kiln_gs_reply_msg(m);
    }
    return kiln_gs_reply(kiln_atom_c("unknown"));
}

static kiln_gs_ret counter_cast(void *state, kiln_term msg)
{
    struct counter *c = state;
    int64_t by;
    if (kiln_match(msg, "{add,~i}", &by) == KILN_OK)
        c->n += by;
    return kiln_gs_noreply();
}

static kiln_term counter_format(void *state, kiln_msg *m)
{
    const struct counter *c = state;
    return kiln_build(m, "{count,~i}", c->n);
}

static void counter_terminate(void *state, kiln_term reason)
{
    (void)reason;
    free(state);
}

static const kiln_gen_server counter_gs = {
    .name = "kcount",
    .init = counter_init,
    .handle_call = counter_call,
    .handle_cast = counter_cast,
    .terminate = counter_terminate,
    .format_state = counter_format,
};

static void test_gen_server(void **state)
{
    (void)state;
    start_node();
    kiln_gs_opts o = {.name = "kcount"};
    kiln_term pid;
    assert_int_equal(kiln_gs_start(g_rt, &counter_gs, NULL, &o, &pid, NULL), KILN_OK);
    struct erl_node *e = erl_start("tgs", g_epmd);

    eval_k(e, "gen_server:call({kcount, K}, get, 5000).", "0");
    eval_k(e, "gen_server:call({kcount, K}, {add, 2}, 5000).", "{ok,2}");
    /* A cast is sent before the call that follows it, so the call sees
     * its effect. */
    eval_k(e, "ok = gen_server:cast({kcount, K}, {add, 5}), gen_server:call({kcount, K}, get, 5000).", "7");
    /* The pid behind the name answers too, and lives on the Kiln node. */
    eval_k(e,
           "P = gen_server:call({kcount, K}, whoami, 5000), "
           "{is_pid(P) orelse P, node(P) =:= K orelse P, gen_server:call(P, get, 5000)}.",
           "{true,true,7}");
    eval_k(e, "R = gen_server:multi_call([K], kcount, get), {R =:= {[{K, 7}], []}, R}.", "{true,");
    /* A node that does not exist is a bad node; the call still reaches
     * the one that does. */
    eval_k(e,
           "[_, H] = string:split(atom_to_list(K), \"@\"), Bad = list_to_atom(\"nobody@\" ++ H), "
           "R = gen_server:multi_call([K, Bad], kcount, {add, 1}), {R =:= {[{K, {ok, 8}}], [Bad]}, R}.",
           "{true,");
    /* A name not registered on Kiln: that node is a bad node. */
    eval_k(e, "R = gen_server:multi_call([K], nosuch, get), {R =:= {[], [K]}, R}.", "{true,");
    eval_k(e, "sys:get_state({kcount, K}).", "{count,8}");
    eval_k(e, "case catch gen_server:call({nosuch, K}, get, 5000) of {'EXIT', {noproc, _}} -> noproc_ok; O -> O end.",
           "noproc_ok");
}

/* ---- 2: a door gen_statem ---- */

#define DOOR_CODE 42

struct door {
    int64_t opens;   /* how many times it was unlocked */
    int64_t waiting; /* wait_open calls postponed until it opens */
};

static kiln_gsm_ret door_init(kiln_gsm *sm, void *arg, void **data)
{
    (void)sm;
    (void)arg;
    *data = calloc(1, sizeof(struct door));
    return *data ? kiln_gsm_ok(kiln_atom_c("locked")) : kiln_gsm_stop(kiln_atom_c("enomem"));
}

static void door_reply(kiln_gsm *sm, kiln_term from, const char *fmt, ...)
{
    kiln_msg *m = kiln_msg_new(128);
    va_list ap;
    va_start(ap, fmt);
    kiln_term t = kiln_vbuild(m, fmt, ap);
    va_end(ap);
    kiln_gsm_reply(sm, from, t);
    kiln_msg_free(m); /* the reply action copied it */
}

static kiln_gsm_ret door_event(kiln_gsm *sm, const kiln_gsm_event *ev, kiln_term st, void *data)
{
    struct door *d = data;
    bool locked = st == kiln_atom_c("locked");
    int64_t code;
    if (ev->type == KILN_GSM_CALL) {
        if (ev->content == kiln_atom_c("state")) {
            door_reply(sm, ev->from, "{~A,~i,~i}", st, d->opens, d->waiting);
            return kiln_gsm_keep_state();
        }
        if (kiln_match(ev->content, "{unlock,~i}", &code) == KILN_OK) {
            if (!locked) {
                door_reply(sm, ev->from, "{error,already_open}");
                return kiln_gsm_keep_state();
            }
            if (code != DOOR_CODE) {
                door_reply(sm, ev->from, "{error,wrong_code}");
                return kiln_gsm_keep_state();
            }
            d->opens++;
            door_reply(sm, ev->from, "ok");
            return kiln_gsm_next_state(kiln_atom_c("open"));
        }
        if (ev->content == kiln_atom_c("wait_open")) {
            /* Answered after the next state change: the caller's From
             * must survive the postponement. */
            if (locked) {
                d->waiting++;
                kiln_gsm_postpone(sm);
            } else {
                d->waiting--;
                door_reply(sm, ev->from, "opened");
            }
            return kiln_gsm_keep_state();
        }
        door_reply(sm, ev->from, "{error,bad_request}");
        return kiln_gsm_keep_state();
    }
    if (ev->type == KILN_GSM_CAST && ev->content == kiln_atom_c("lock"))
        return locked ? kiln_gsm_keep_state() : kiln_gsm_next_state(kiln_atom_c("locked"));
    return kiln_gsm_keep_state();
}

static void door_terminate(void *data, kiln_term st, kiln_term reason)
{
    (void)st;
    (void)reason;
    free(data);
}

static const kiln_gen_statem door_sm = {
    .name = "door",
    .init = door_init,
    .handle_event = door_event,
    .terminate = door_terminate,
};

static void test_gen_statem(void **state)
{
    (void)state;
    start_node();
    kiln_gs_opts o = {.name = "door"};
    kiln_term pid;
    assert_int_equal(kiln_gsm_start(g_rt, &door_sm, NULL, &o, &pid, NULL), KILN_OK);
    struct erl_node *e = erl_start("tsm", g_epmd);

    eval_k(e,
           "D = {door, K}, {gen_statem:call(D, state), gen_statem:call(D, {unlock, 1}), "
           "gen_statem:call(D, {unlock, 42}), gen_statem:call(D, state), gen_statem:call(D, {unlock, 42}), "
           "gen_statem:cast(D, lock), gen_statem:call(D, state, 5000)}.",
           "{{locked,0,0},{error,wrong_code},ok,{open,1,0},{error,already_open},ok,{locked,1,0}}");
    /* A call postponed while locked is answered once the door opens. */
    eval_k(e, "Self = self(), spawn(fun() -> Self ! {waited, gen_statem:call({door, K}, wait_open)} end), ok.", "ok");
    await_k(e, "gen_statem:call({door, K}, state).", "{locked,1,1}", 15000);
    eval_k(e,
           "{gen_statem:call({door, K}, {unlock, 42}), receive {waited, W} -> W after 10000 -> timeout end, "
           "gen_statem:call({door, K}, state)}.",
           "{ok,opened,{open,2,0}}");
    eval_k(e, "sys:get_state({door, K}).", "{open,undefined}");
    /* A name Kiln does not have: noproc, caught as gen_statem:call exits. */
    eval_k(e,
           "case catch gen_statem:call({nosuch, K}, state) of {'EXIT', {noproc, {gen_statem, call, _}}} -> noproc_ok; "
           "O -> O end.",
           "noproc_ok");
}

/* ---- 3: a supervisor restarts a child Erlang killed ---- */

static _Atomic int g_worker_inits;

static kiln_gs_ret worker_init(void *arg, void **state)
{
    (void)arg;
    *state = NULL;
    atomic_fetch_add(&g_worker_inits, 1);
    return kiln_gs_ok();
}

static kiln_gs_ret worker_call(void *state, kiln_term req, kiln_term from)
{
    (void)state;
    (void)from;
    if (req == kiln_atom_c("whoami"))
        return kiln_gs_reply(kiln_self());
    return kiln_gs_reply(kiln_atom_c("unknown"));
}

static const kiln_gen_server worker_gs = {.name = "kworker", .init = worker_init, .handle_call = worker_call};
static kiln_gs_child g_worker_child = {.gs = &worker_gs, .opts = {.name = "kworker"}};

static void test_supervisor_restart(void **state)
{
    (void)state;
    atomic_store(&g_worker_inits, 0);
    start_node();
    static const kiln_child_spec child = {
        .id = "kworker", .start = kiln_gs_child_start, .arg = &g_worker_child, .restart = KILN_PERMANENT};
    kiln_sup_spec spec = {
        .strategy = KILN_ONE_FOR_ONE, .intensity = 3, .period_ms = 5000, .children = &child, .nchildren = 1};
    kiln_term sup;
    assert_int_equal(kiln_sup_start(g_rt, &spec, "ksup", &sup, NULL), KILN_OK);
    kiln_term old = kiln_whereis(g_rt, kiln_atom_c("kworker"));
    assert_false(kiln_is_none(old));
    assert_int_equal(atomic_load(&g_worker_inits), 1);
    struct erl_node *e = erl_start("tsup", g_epmd);

    /* Erlang gets the child's pid from the child itself and kills it. */
    eval_k(e,
           "P1 = gen_server:call({kworker, K}, whoami, 5000), put(p1, P1), M = monitor(process, P1), "
           "exit(P1, kill), R = receive {'DOWN', M, process, P1, Why} -> Why after 10000 -> timeout end, "
           "{node(P1) =:= K, R}.",
           "{true,killed}");
    /* The supervisor restarts it under the same name, with a new pid. */
    await_k(e,
            "P = (catch gen_server:call({kworker, K}, whoami, 2000)), {is_pid(P) andalso P =/= get(p1), P}.",
            "{true,", 20000);
    eval_k(e,
           "P2 = gen_server:call({kworker, K}, whoami, 5000), "
           "{P2 =/= get(p1), node(P2) =:= K, gen_server:call(P2, whoami, 5000) =:= P2}.",
           "{true,true,true}");
    /* Erlang's supervisor client agrees: one child, the new pid. */
    eval_k(e,
           "P3 = gen_server:call({kworker, K}, whoami, 5000), "
           "case supervisor:which_children({ksup, K}) of [{kworker, P3, worker, _}] -> same_child; O -> O end.",
           "same_child");
    eval_k(e, "supervisor:count_children({ksup, K}).", "[{specs,1},{active,1},{supervisors,0},{workers,1}]");

    kiln_term now = kiln_whereis(g_rt, kiln_atom_c("kworker"));
    assert_false(kiln_is_none(now));
    assert_false(kiln_term_eq(now, old));
    assert_int_equal(atomic_load(&g_worker_inits), 2); /* exactly one restart */
    assert_true(kiln_term_eq(kiln_whereis(g_rt, kiln_atom_c("ksup")), sup));
}

/* ---- 4: an Erlang consumer on a Kiln producer, by GenStage's protocol ---- */

/* The producer emits two more events than asked on every demand, so a
 * consumer could only get exactly what it asked for if the producer's
 * buffer holds the excess back. */
#define PROD_EXCESS 2

struct producer {
    int64_t next;
};

static _Atomic int g_subscribes;
static _Atomic int g_cancels;
static char g_cancel_reason[4][128]; /* written before g_cancels is bumped */

static kiln_stage_ret prod_init(void *arg, void **state, kiln_stage_opts *opts)
{
    (void)arg;
    (void)opts;
    struct producer *p = calloc(1, sizeof(*p));
    if (!p)
        return kiln_stage_stop(kiln_atom_c("enomem"));
    p->next = 1;
    *state = p;
    return kiln_stage_ok();
}

static kiln_stage_ret prod_demand(void *state, int64_t demand)
{
    struct producer *p = state;
    int64_t n = demand + PROD_EXCESS;
    kiln_msg *m = kiln_msg_new((size_t)n * 24 + 64);
    kiln_term events = KILN_NIL;
    for (int64_t i = n - 1; i >= 0; i--)
        events = kiln_cons(m, kiln_int(m, p->next + i), events);
    p->next += n;
    return kiln_stage_hold(kiln_stage_emit(events), m);
}

static kiln_stage_ret prod_subscribe(void *state, kiln_stage_type peer, kiln_term opts, kiln_term from)
{
    (void)state;
    (void)opts;
    (void)from;
    if (peer == KILN_STAGE_CONSUMER)
        atomic_fetch_add(&g_subscribes, 1);
    return kiln_stage_automatic();
}

static kiln_stage_ret prod_cancel(void *state, kiln_term reason, kiln_term from)
{
    (void)state;
    (void)from;
    int i = atomic_load(&g_cancels);
    if (i < 4) {
        kiln_term_print(g_cancel_reason[i], sizeof g_cancel_reason[i], reason);
        atomic_fetch_add(&g_cancels, 1);
    }
    return kiln_stage_noreply();
}

static void prod_terminate(void *state, kiln_term reason)
{
    (void)reason;
    free(state);
}

static const kiln_gen_stage producer_stage = {
    .name = "kprod",
    .type = KILN_STAGE_PRODUCER,
    .init = prod_init,
    .handle_demand = prod_demand,
    .handle_subscribe = prod_subscribe,
    .handle_cancel = prod_cancel,
    .terminate = prod_terminate,
};

/* Erlang text: Collect(Ref, N) receives '$gen_consumer' event lists for
 * Ref until it has N events (or more, which the checks then show),
 * remembering the producer pid they came from. The events come back as a
 * tuple: the shell would print [8] as "\b". */
#define COLLECT                                                                                                      \
    "Collect = fun C(Ref, N, Acc) when length(Acc) >= N -> list_to_tuple(Acc); C(Ref, N, Acc) -> "                   \
    "receive {'$gen_consumer', {Pp, Ref}, Es} when is_list(Es) -> put(prod, Pp), C(Ref, N, Acc ++ Es) "             \
    "after 10000 -> {timeout, Acc} end end, "
/* A call to the producer answered after everything it sent before, then
 * whatever events are already here: none if it sent no more than asked. */
#define SYNC_EXTRA                                                                                                   \
    "B = gen_server:call(get(prod), '$estimate_buffered_count', 5000), "                                             \
    "X = receive {'$gen_consumer', _, Xs} -> {extra, Xs} after 0 -> none end, "

static void test_gen_stage(void **state)
{
    (void)state;
    atomic_store(&g_subscribes, 0);
    atomic_store(&g_cancels, 0);
    start_node();
    kiln_gs_opts o = {.name = "kprod"};
    kiln_term pid;
    assert_int_equal(kiln_stage_start(g_rt, &producer_stage, NULL, &o, &pid, NULL), KILN_OK);
    struct erl_node *e = erl_start("tstage", g_epmd);

    /* Subscribe (Ref is our monitor of the producer, as GenStage's), then
     * ask 3: events 1..5 are produced, 1..3 arrive, 4..5 wait. */
    eval_k(e,
           "Ref = monitor(process, {kprod, K}), put(ref, Ref), "
           "{kprod, K} ! {'$gen_producer', {self(), Ref}, {subscribe, nil, [{max_demand, 10}]}}, "
           "{kprod, K} ! {'$gen_producer', {self(), Ref}, {ask, 3}}, " COLLECT "Evs = Collect(Ref, 3, []), " SYNC_EXTRA
           "{Evs, B, X, node(get(prod)) =:= K}.",
           "{{1,2,3},2,none,true}");
    /* Ask 4: the buffer's 4, 5, then 6, 7 of the next 4 produced. */
    eval_k(e,
           "Ref = get(ref), {kprod, K} ! {'$gen_producer', {self(), Ref}, {ask, 4}}, " COLLECT
           "Evs = Collect(Ref, 4, []), " SYNC_EXTRA "{Evs, B, X}.",
           "{{4,5,6,7},2,none}");
    /* A second subscribe with the same Ref is refused; the first
     * subscription goes on. */
    eval_k(e,
           "Ref = get(ref), {kprod, K} ! {'$gen_producer', {self(), Ref}, {subscribe, nil, []}}, "
           "Dup = receive {'$gen_consumer', {_, Ref}, {cancel, Why}} -> Why after 10000 -> timeout end, "
           "{kprod, K} ! {'$gen_producer', {self(), Ref}, {ask, 1}}, " COLLECT "Evs = Collect(Ref, 1, []), " SYNC_EXTRA
           "{Dup, Evs, B, X}.",
           "{duplicated_subscription,{8},1,none}");
    assert_int_equal(atomic_load(&g_subscribes), 1);
    assert_int_equal(atomic_load(&g_cancels), 0);
    /* Cancel: confirmed to the consumer with the same reason, then the
     * Ref is unknown to the producer. */
    eval_k(e,
           "Ref = get(ref), {kprod, K} ! {'$gen_producer', {self(), Ref}, {cancel, done}}, "
           "C1 = receive {'$gen_consumer', {P1, Ref}, {cancel, R1}} -> {P1 =:= get(prod), R1} after 10000 -> "
           "timeout end, "
           "{kprod, K} ! {'$gen_producer', {self(), Ref}, {ask, 1}}, "
           "C2 = receive {'$gen_consumer', {_, Ref}, {cancel, R2}} -> R2; {'$gen_consumer', {_, Ref}, Es} -> "
           "{events, Es} after 10000 -> timeout end, {C1, C2}.",
           "{{true,done},unknown_subscription}");
    assert_true(kiln_test_wait_flag(&g_cancels, 10000));
    assert_int_equal(atomic_load(&g_cancels), 1);
    assert_string_equal(g_cancel_reason[0], "{cancel,done}");
    /* The producer lives on, its buffer (9) intact, for a new consumer;
     * when that consumer dies the producer's monitor tells handle_cancel. */
    eval_k(e,
           "Self = self(), spawn(fun() -> R = monitor(process, {kprod, K}), "
           "{kprod, K} ! {'$gen_producer', {self(), R}, {subscribe, nil, []}}, "
           "{kprod, K} ! {'$gen_producer', {self(), R}, {ask, 2}}, " COLLECT
           "Self ! {c2, Collect(R, 2, [])}, exit(bye) end), "
           "receive {c2, Evs} -> Evs after 15000 -> timeout end.",
           "{9,10}");
    for (int i = 0; i < 1500 && atomic_load(&g_cancels) < 2; i++)
        usleep(10000);
    assert_int_equal(atomic_load(&g_cancels), 2);
    assert_string_equal(g_cancel_reason[1], "{down,bye}");
    assert_int_equal(atomic_load(&g_subscribes), 2);
    assert_true(kiln_term_eq(kiln_whereis(g_rt, kiln_atom_c("kprod")), pid));
    eval_k(e, "gen_server:call({kprod, K}, '$estimate_buffered_count', 5000).", "2");
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_gen_server, node_teardown),
        cmocka_unit_test_teardown(test_gen_statem, node_teardown),
        cmocka_unit_test_teardown(test_supervisor_restart, node_teardown),
        cmocka_unit_test_teardown(test_gen_stage, node_teardown),
    };
    if (argc > 1) {
        static char pattern[128];
        snprintf(pattern, sizeof pattern, "test_%s", argv[1]);
        cmocka_set_test_filter(pattern);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
