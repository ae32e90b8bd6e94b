/* A Kiln node among real Erlang nodes (brief §7): the C node starts first
 * on a private EPMD port and serves EPMD; erl -sname then registers with it
 * and talks to it as to any node. Each scenario is its own ctest test. */
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "erl_harness.h"
#include "kiln/node.h"
#include "dist/handshake.h"
#include "dist/dist_flags.h"
#include "kiln/etf.h"

static kiln_rt *g_rt;
static kiln_node *g_node;
static uint16_t g_epmd;
static char g_kiln[128]; /* 'kiln@host' */

/* ---- the C side's processes ---- */

/* echo: {From, Msg} -> From ! {self(), Msg}; {From, die} -> exit(bye). */
static kiln_action echo_handle(void *st, kiln_msg *m)
{
    (void)st;
    kiln_term from, msg;
    if (kiln_match(kiln_msg_term(m), "{~p,die}", &from) == KILN_OK)
        return kiln_stop(kiln_atom_c("bye"));
    if (kiln_match(kiln_msg_term(m), "{~p,~t}", &from, &msg) == KILN_OK) {
        kiln_msg *r = kiln_msg_new(256);
        kiln_msg_set_term(r, kiln_tuple(r, 2, kiln_self(), kiln_term_copy(r, msg)));
        kiln_send(from, r);
    }
    return KILN_CONTINUE;
}
static const kiln_behaviour echo_beh = {"echo", NULL, echo_handle, NULL};

/* cserver: a gen_server answering ping with pong, anything else echoed. */
static kiln_action cserver_handle(void *st, kiln_msg *m)
{
    (void)st;
    kiln_term from, req;
    if (kiln_match_call(kiln_msg_term(m), &from, &req) != KILN_OK)
        return KILN_CONTINUE;
    kiln_msg *r = kiln_msg_new(128);
    kiln_msg_set_term(r, req == kiln_atom_c("ping") ? kiln_atom_c("pong") : kiln_term_copy(r, req));
    kiln_reply(from, r);
    return KILN_CONTINUE;
}
static const kiln_behaviour cserver_beh = {"cserver", NULL, cserver_handle, NULL};

/* watcher: traps exits; answers {From, whoami} with {whoami, self()} and
 * forwards everything else it receives to {t, ErlNode}. */
static kiln_term g_erl_node;
static kiln_action watcher_handle(void *st, kiln_msg *m)
{
    (void)st;
    kiln_term from;
    kiln_msg *out = kiln_msg_new(256);
    if (kiln_match(kiln_msg_term(m), "{~p,whoami}", &from) == KILN_OK) {
        kiln_msg_set_term(out, kiln_build(out, "{whoami,~p}", kiln_self()));
        kiln_send(from, out);
        return KILN_CONTINUE;
    }
    kiln_msg_set_term(out, kiln_term_copy(out, kiln_msg_term(m)));
    kiln_msg *to = kiln_msg_new(32);
    kiln_send(kiln_tuple(to, 2, kiln_atom_c("t"), g_erl_node), out);
    kiln_msg_free(to);
    return KILN_CONTINUE;
}
static int watcher_init(void *arg, void **st)
{
    (void)arg;
    *st = NULL;
    kiln_trap_exit(true);
    return KILN_OK;
}
static const kiln_behaviour watcher_beh = {"watcher", watcher_init, watcher_handle, NULL};

static void start_node(bool hidden)
{
    g_epmd = free_port();
    short_hostname();
    snprintf(g_kiln, sizeof g_kiln, "kiln@%s", g_host);
    g_rt = kiln_test_rt(2, NULL);
    kiln_node_config c = {.name = "kiln", .cookie = COOKIE, .epmd_port = g_epmd, .hidden = hidden,
                          .net_ticktime = 8};
    assert_int_equal(kiln_node_start(g_rt, &c, &g_node), KILN_OK);
    assert_true(kiln_node_serves_epmd(g_node));
    kiln_spawn_opts o = {.register_as = "echo"};
    assert_int_equal(kiln_spawn(g_rt, &echo_beh, NULL, &o, NULL), KILN_OK);
    o.register_as = "cserver";
    assert_int_equal(kiln_spawn(g_rt, &cserver_beh, NULL, &o, NULL), KILN_OK);
}

/* More Kiln nodes in this OS process, each on its own runtime. */
static kiln_rt *g_more_rt[2];
static kiln_node *g_more[2];

static int node_teardown(void **state)
{
    teardown(state); /* erl nodes first: they were our clients */
    for (int i = 0; i < 2; i++) {
        if (g_more[i])
            kiln_node_stop(g_more[i]);
        if (g_more_rt[i])
            kiln_rt_stop(g_more_rt[i]);
        g_more[i] = NULL;
        g_more_rt[i] = NULL;
    }
    if (g_node)
        kiln_node_stop(g_node);
    if (g_rt)
        kiln_rt_stop(g_rt);
    g_node = NULL;
    g_rt = NULL;
    return 0;
}

static void eval_expect_within(struct erl_node *e, const char *expr, const char *want, int ms)
{
    char res[16384];
    erl_eval_within(e, expr, res, sizeof res, ms);
    if (!strstr(res, want))
        fail_msg("`%s` gave %s, wanted %s\nerl log:\n%s", expr, res, want, e->log ? e->log : "");
}

static void eval_expect(struct erl_node *e, const char *expr, const char *want)
{
    eval_expect_within(e, expr, want, 10000);
}

static struct erl_node *erl_with_t(const char *sname)
{
    struct erl_node *e = erl_start(sname, g_epmd);
    /* The REPL process receives what the C side sends to {t, Node}. */
    eval_expect(e, "register(t, self()).", "true");
    return e;
}

/* The node's connected peers once there are n of them (5 s at most):
 * how many there are, and up to four of them in list. */
static size_t await_peers(size_t n, kiln_term list[4])
{
    size_t have = kiln_node_list(g_node, list, 4);
    for (int i = 0; i < 500 && have != n; i++) {
        usleep(10000);
        have = kiln_node_list(g_node, list, 4);
    }
    return have;
}

/* ---- scenarios ---- */

static void test_ping_and_names(void **state)
{
    (void)state;
    start_node(false);
    struct erl_node *e = erl_with_t("tping");
    char expr[512];
    eval_expect(e, "{ok, Ns} = net_adm:names(), lists:keymember(\"kiln\", 1, Ns).", "true");
    snprintf(expr, sizeof expr, "net_adm:ping('%s').", g_kiln);
    eval_expect(e, expr, "pong");
    snprintf(expr, sizeof expr, "lists:member('%s', nodes()).", g_kiln);
    eval_expect(e, expr, "true");
    /* It knows us under our name too. */
    kiln_term list[4];
    assert_int_equal(await_peers(1, list), 1);
    char want[128];
    snprintf(want, sizeof want, "t%s@%s", "ping", g_host);
    size_t len;
    const char *txt = kiln_atom_text(list[0], &len);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(txt, want, len);
}

static void test_hidden_node(void **state)
{
    (void)state;
    start_node(true);
    struct erl_node *e = erl_with_t("thid");
    char expr[512];
    snprintf(expr, sizeof expr, "{net_adm:ping('%s'), nodes(), lists:member('%s', nodes(hidden))}.", g_kiln, g_kiln);
    eval_expect(e, expr, "{pong,[],true}");
    eval_expect(e, "Self = self(), spawn(fun() -> Self ! {s, global:sync()} end), receive {s, S} -> S after 3000 -> "
                   "timeout end.",
                "ok");
}

static void test_echo_terms(void **state)
{
    (void)state;
    start_node(false);
    struct erl_node *e = erl_with_t("techo");
    char expr[4096];
    snprintf(expr, sizeof expr,
             "Ts = [1, -1, 255, 256, 1 bsl 70, -(1 bsl 64), 3.14, -0.0, <<1,2>>, <<1:3>>, \"str\", [1|2], "
             "#{a => 1, {x, y} => []}, make_ref(), self(), fun lists:sum/1, fun(X) -> X + 1 end, "
             "list_to_atom([228,246]), list_to_tuple(lists:seq(1, 300)), binary:copy(<<7>>, 100000), "
             "lists:seq(1, 2000), {deep, [[[[[[{x}]]]]]]}], "
             "[begin {echo, '%s'} ! {self(), T}, receive {_, R} -> R =:= T after 3000 -> timeout end end || T <- Ts].",
             g_kiln);
    char res[16384];
    erl_eval(e, expr, res, sizeof res);
    if (strstr(res, "false") || strstr(res, "timeout") || !strstr(res, "true"))
        fail_msg("round trips: %s\nerl log:\n%s", res, e->log ? e->log : "");
}

struct sender {
    char target[128];
    int rc_connect, rc_send;
    _Atomic int done;
};

static void kiln_sends_first(void *arg)
{
    struct sender *s = arg;
    kiln_term node = kiln_atom_c(s->target);
    s->rc_connect = kiln_node_connect(node, 5000);
    kiln_msg *to = kiln_msg_new(64);
    kiln_msg *m = kiln_msg_new(64);
    kiln_msg_set_term(m, kiln_build(m, "{hi,from_kiln,~p}", kiln_self()));
    s->rc_send = kiln_send(kiln_tuple(to, 2, kiln_atom_c("t"), node), m);
    kiln_msg_free(to);
    atomic_store(&s->done, 1);
}

static void test_kiln_connects_and_sends(void **state)
{
    (void)state;
    start_node(false);
    struct erl_node *e = erl_with_t("tsend");
    struct sender *s = calloc(1, sizeof(*s));
    snprintf(s->target, sizeof s->target, "%s", e->full);
    assert_int_equal(kiln_spawn_fn(g_rt, kiln_sends_first, s, NULL, NULL), KILN_OK);
    assert_true(kiln_test_wait_flag(&s->done, 10000));
    assert_int_equal(s->rc_connect, KILN_OK);
    assert_int_equal(s->rc_send, KILN_OK);
    eval_expect(e, "receive {hi, from_kiln, P} when is_pid(P) -> node(P) after 3000 -> timeout end.", "kiln@");
    char expr[1024];
    snprintf(expr, sizeof expr, "lists:member('%s', nodes(connected)).", g_kiln);
    eval_expect(e, expr, "true");
    free(s);
}

static void test_calls(void **state)
{
    (void)state;
    start_node(false);
    struct erl_node *e = erl_with_t("tcall");
    char expr[512];
    snprintf(expr, sizeof expr, "gen_server:call({cserver, '%s'}, ping, 1000).", g_kiln);
    eval_expect(e, expr, "pong");
    snprintf(expr, sizeof expr, "gen_server:call({cserver, '%s'}, {any, [term], <<1>>}, 1000).", g_kiln);
    eval_expect(e, expr, "{any,[term],<<1>>}");
    /* An unknown name fails at once with noproc, not after the timeout. */
    snprintf(expr, sizeof expr,
             "T0 = erlang:monotonic_time(millisecond), R = (catch gen_server:call({nosuch, '%s'}, x, 2000)), "
             "{element(1, element(2, R)), erlang:monotonic_time(millisecond) - T0 < 1500}.",
             g_kiln);
    eval_expect(e, expr, "{noproc,true}");
}

static void test_monitor_and_down(void **state)
{
    (void)state;
    start_node(false);
    struct erl_node *e = erl_with_t("tmon");
    char expr[512];
    snprintf(expr, sizeof expr,
             "M = monitor(process, {echo, '%s'}), {echo, '%s'} ! {self(), die}, "
             "receive {'DOWN', M, process, Who, R} -> {Who, R} after 3000 -> timeout end.",
             g_kiln, g_kiln);
    eval_expect(e, expr, "{{echo,kiln@");
    eval_expect(e, "ok.", "ok");
    snprintf(expr, sizeof expr,
             "M2 = monitor(process, {echo, '%s'}), receive {'DOWN', M2, process, _, R2} -> R2 after 3000 -> timeout end.",
             g_kiln);
    eval_expect(e, expr, "noproc");
}

static void test_links(void **state)
{
    (void)state;
    start_node(false);
    struct erl_node *e = erl_with_t("tlink");
    g_erl_node = kiln_atom_c(e->full);
    kiln_spawn_opts o = {.register_as = "watcher"};
    assert_int_equal(kiln_spawn(g_rt, &watcher_beh, NULL, &o, NULL), KILN_OK);
    char expr[1024];
    /* A trapping C process linked to an Erlang process that dies with
     * boom receives {'EXIT', Pid, boom} (it forwards it to t). */
    snprintf(expr, sizeof expr,
             "{watcher, '%s'} ! {self(), whoami}, W = receive {whoami, P} -> P after 3000 -> timeout end, "
             "L = spawn(fun() -> link(W), receive go -> exit(boom) end end), timer:sleep(200), L ! go, "
             "receive {'EXIT', L, R} -> R after 3000 -> timeout end.",
             g_kiln);
    eval_expect(e, expr, "boom");
    /* A C process that does not trap exits dies with the same reason. */
    snprintf(expr, sizeof expr,
             "{echo, '%s'} ! {self(), ping}, receive {EchoPid, ping} -> "
             "L2 = spawn(fun() -> link(EchoPid), receive go -> exit(boom) end end), "
             "timer:sleep(200), L2 ! go, ok after 3000 -> timeout end.",
             g_kiln);
    eval_expect(e, expr, "ok");
    for (int i = 0; i < 300 && !kiln_is_none(kiln_whereis(g_rt, kiln_atom_c("echo"))); i++)
        usleep(10000);
    assert_true(kiln_is_none(kiln_whereis(g_rt, kiln_atom_c("echo"))));
    /* exit/2 from Erlang with kill ends even a trapping process. */
    snprintf(expr, sizeof expr,
             "{watcher, '%s'} ! {self(), whoami}, W2 = receive {whoami, P2} -> P2 after 3000 -> timeout end, "
             "M = monitor(process, W2), exit(W2, kill), "
             "receive {'DOWN', M, process, _, R2} -> R2 after 3000 -> timeout end.",
             g_kiln);
    eval_expect(e, expr, "killed");
}

struct nc {
    kiln_term erl_node;
    _Atomic int ready;
    _Atomic int got;
    char down[512];
};

static bool any(kiln_term t, void *a)
{
    (void)t;
    (void)a;
    return true;
}

static void noconn_body(void *arg)
{
    struct nc *s = arg;
    kiln_msg *refs = kiln_msg_new(128);
    kiln_msg *to = kiln_msg_new(64);
    kiln_term mref;
    kiln_monitor(kiln_tuple(to, 2, kiln_atom_c("t"), s->erl_node), refs, &mref);
    atomic_store(&s->ready, 1);
    kiln_msg *m;
    if (kiln_receive(any, NULL, 15000, &m) == KILN_OK) {
        kiln_term_print(s->down, sizeof s->down, kiln_msg_term(m));
        kiln_msg_free(m);
        atomic_store(&s->got, 1);
    }
    kiln_msg_free(refs);
    kiln_msg_free(to);
}

static void test_kill_erl_gives_noconnection(void **state)
{
    (void)state;
    start_node(false);
    struct erl_node *e = erl_with_t("tkill");
    char expr[1024];
    snprintf(expr, sizeof expr, "net_adm:ping('%s').", g_kiln);
    eval_expect(e, expr, "pong");
    struct nc *s = calloc(1, sizeof(*s));
    s->erl_node = kiln_atom_c(e->full);
    assert_int_equal(kiln_spawn_fn(g_rt, noconn_body, s, NULL, NULL), KILN_OK);
    assert_true(kiln_test_wait_flag(&s->ready, 5000));
    usleep(300000); /* the MONITOR_P reaches erl */
    kill(-e->pid, SIGKILL);
    assert_true(kiln_test_wait_flag(&s->got, 15000));
    if (!strstr(s->down, "noconnection"))
        fail_msg("wanted a DOWN with noconnection, got %s", s->down);
    free(s);
}

static void test_wrong_cookie_pang(void **state)
{
    (void)state;
    start_node(false);
    struct erl_node *e = erl_with_t("tcookie");
    char expr[1024];
    snprintf(expr, sizeof expr, "erlang:set_cookie('%s', wrong), net_adm:ping('%s').", g_kiln, g_kiln);
    eval_expect(e, expr, "pang");
    /* The node is still up for the right cookie. */
    snprintf(expr, sizeof expr, "erlang:set_cookie('%s', secret), net_adm:ping('%s').", g_kiln, g_kiln);
    eval_expect(e, expr, "pong");
}

struct caller {
    char node[128];
    int rc_ok, rc_noproc, rc_timeout;
    char reply[256];
    _Atomic int done;
};

static void kiln_calls_erlang(void *arg)
{
    struct caller *c = arg;
    kiln_term node = kiln_atom_c(c->node);
    kiln_msg *to = kiln_msg_new(64);
    kiln_msg *req = kiln_msg_new(64), *reply = NULL;
    kiln_msg_set_term(req, kiln_build(req, "{add,~i}", (int64_t)5));
    c->rc_ok = kiln_call(kiln_tuple(to, 2, kiln_atom_c("esrv"), node), req, 5000, &reply, NULL);
    if (reply) {
        kiln_term_print(c->reply, sizeof c->reply, kiln_msg_term(reply));
        kiln_msg_free(reply);
    }
    req = kiln_msg_new(16);
    kiln_msg_set_term(req, kiln_atom_c("x"));
    c->rc_noproc = kiln_call(kiln_tuple(to, 2, kiln_atom_c("nobody"), node), req, 5000, &reply, NULL);
    req = kiln_msg_new(16);
    kiln_msg_set_term(req, kiln_atom_c("slow"));
    c->rc_timeout = kiln_call(kiln_tuple(to, 2, kiln_atom_c("esrv"), node), req, 200, &reply, NULL);
    kiln_msg_free(to);
    atomic_store(&c->done, 1);
}

static void test_kiln_calls_erlang_gen_server(void **state)
{
    (void)state;
    start_node(false);
    struct erl_node *e = erl_with_t("tkcall");
    /* An Erlang gen_server written in the shell: add N, or sleep on slow. */
    eval_expect(e,
                "Srv = spawn(fun Loop() -> receive {'$gen_call', From, {add, N}} -> gen:reply(From, {sum, N + 37}), "
                "Loop(); {'$gen_call', _From, slow} -> timer:sleep(1000), Loop() end end), "
                "register(esrv, Srv).",
                "true");
    struct caller *c = calloc(1, sizeof(*c));
    snprintf(c->node, sizeof c->node, "%s", e->full);
    assert_int_equal(kiln_spawn_fn(g_rt, kiln_calls_erlang, c, NULL, NULL), KILN_OK);
    assert_true(kiln_test_wait_flag(&c->done, 15000));
    assert_int_equal(c->rc_ok, KILN_OK);
    assert_string_equal(c->reply, "{sum,42}");
    assert_int_equal(c->rc_noproc, KILN_ENOPROC);
    assert_int_equal(c->rc_timeout, KILN_ETIMEOUT);
    free(c);
}

static int rpc_add(kiln_term args, kiln_msg **result, void *arg)
{
    (void)arg;
    int64_t a, b;
    if (kiln_match(args, "[~i,~i]", &a, &b) != KILN_OK)
        return KILN_EBADARG;
    *result = kiln_msg_new(32);
    kiln_msg_set_term(*result, kiln_int(*result, a + b));
    return KILN_OK;
}

static _Atomic int g_casts;
static int rpc_note(kiln_term args, kiln_msg **result, void *arg)
{
    (void)args;
    (void)arg;
    (void)result;
    atomic_fetch_add(&g_casts, 1);
    return KILN_OK;
}

struct erpc_res {
    char node[128];
    int rc_node, rc_sum, rc_error, rc_nonode;
    char v_node[128], v_sum[64], v_error[128];
    _Atomic int done;
};

static void kiln_erpcs(void *arg)
{
    struct erpc_res *r = arg;
    kiln_term node = kiln_atom_c(r->node);
    kiln_msg *res = NULL, *a = kiln_msg_new(64);
    r->rc_node = kiln_erpc_call(node, "erlang", "node", KILN_NIL, 5000, &res);
    if (res) {
        kiln_term_print(r->v_node, sizeof r->v_node, kiln_msg_term(res));
        kiln_msg_free(res);
        res = NULL;
    }
    r->rc_sum = kiln_erpc_call(node, "lists", "sum", kiln_build(a, "[[1,2,3]]"), 5000, &res);
    if (res) {
        kiln_term_print(r->v_sum, sizeof r->v_sum, kiln_msg_term(res));
        kiln_msg_free(res);
        res = NULL;
    }
    r->rc_error = kiln_erpc_call(node, "erlang", "error", kiln_build(a, "[foo]"), 5000, &res);
    if (res) {
        kiln_term_print(r->v_error, sizeof r->v_error, kiln_msg_term(res));
        kiln_msg_free(res);
        res = NULL;
    }
    r->rc_nonode = kiln_erpc_call(kiln_atom_c("nobody@nowhere"), "erlang", "node", KILN_NIL, 3000, &res);
    kiln_msg_free(res);
    kiln_msg_free(a);
    atomic_store(&r->done, 1);
}

static void test_rpc_both_ways(void **state)
{
    (void)state;
    start_node(false);
    assert_int_equal(kiln_node_register_rpc(g_node, "kiln", "add", 2, rpc_add, NULL), KILN_OK);
    assert_int_equal(kiln_node_register_rpc(g_node, "kiln", "note", 0, rpc_note, NULL), KILN_OK);
    struct erl_node *e = erl_with_t("trpc");
    char expr[512];
    snprintf(expr, sizeof expr, "rpc:call('%s', kiln, add, [2, 40], 2000).", g_kiln);
    eval_expect(e, expr, "42");
    snprintf(expr, sizeof expr, "erpc:call('%s', kiln, add, [1, 2]).", g_kiln);
    eval_expect(e, expr, "3");
    snprintf(expr, sizeof expr, "rpc:call('%s', kiln, nosuch, [1], 2000).", g_kiln);
    eval_expect(e, expr, "{badrpc,{'EXIT',{undef,[{kiln,nosuch,[1],[]}]}}}");
    snprintf(expr, sizeof expr, "rpc:call('%s', kiln, add, [a, b], 2000).", g_kiln);
    eval_expect(e, expr, "{badrpc,{'EXIT',{{kiln_error,");
    snprintf(expr, sizeof expr, "erpc:cast('%s', kiln, note, []), P = spawn('%s', kiln, note, []), is_pid(P).",
             g_kiln, g_kiln);
    eval_expect(e, expr, "true");
    for (int i = 0; i < 300 && atomic_load(&g_casts) < 2; i++)
        usleep(10000);
    assert_int_equal(atomic_load(&g_casts), 2);
    /* And Kiln calls Erlang, with erpc's semantics. */
    struct erpc_res *r = calloc(1, sizeof(*r));
    snprintf(r->node, sizeof r->node, "%s", e->full);
    assert_int_equal(kiln_spawn_fn(g_rt, kiln_erpcs, r, NULL, NULL), KILN_OK);
    assert_true(kiln_test_wait_flag(&r->done, 20000));
    assert_int_equal(r->rc_node, KILN_OK);
    assert_string_equal(r->v_node, e->full);
    assert_int_equal(r->rc_sum, KILN_OK);
    assert_string_equal(r->v_sum, "6");
    assert_int_equal(r->rc_error, KILN_EEXIT);
    assert_string_equal(r->v_error, "{error,foo}");
    assert_int_not_equal(r->rc_nonode, KILN_OK);
    free(r);
}

/* With DIST_HDR_ATOM_CACHE agreed, erl writes cache refs inside funs too;
 * the funs Kiln keeps must still be callable when they come back. */
static void test_atom_cache(void **state)
{
    (void)state;
    start_node(false);
    struct erl_node *e = erl_with_t("tcache");
    char expr[4096];
    snprintf(expr, sizeof expr,
             "K = {echo, '%s'}, Echo = fun(T) -> K ! {self(), T}, receive {_, R} -> R after 5000 -> timeout end end, "
             "A = free_atom, L = [x, y], F2 = fun(X) -> {A, L, X, node()} end, F3 = fun(Y) -> F2(Y) end, "
             "R1 = Echo(fun lists:reverse/1), R2 = Echo(F2), R3 = Echo({F3, [F2, fun erlang:node/0]}), "
             "{R3f, [R3a, R3b]} = R3, "
             "{R1([1,2,3]), R2(7) =:= {free_atom, [x, y], 7, node()}, R3f(8) =:= F2(8), R3a(9) =:= F2(9), "
             "R3b() =:= node(), R1 =:= fun lists:reverse/1, R2 =:= F2}.",
             g_kiln);
    eval_expect(e, expr, "{[3,2,1],true,true,true,true,true,true}");
    /* Many messages reusing a few atoms, long atoms (over 255 bytes of
     * UTF-8), more distinct atoms in one message than a header can cache
     * and than the cache has slots, and a fragmented message with atoms:
     * all come back equal and in order. */
    snprintf(expr, sizeof expr,
             "K = {echo, '%s'}, Long = list_to_atom(lists:duplicate(200, 228)), "
             "Many = [list_to_atom(\"cache_atom_\" ++ integer_to_list(I)) || I <- lists:seq(1, 3000)], "
             "Big = {frag, binary:copy(<<7>>, 300000), lists:sublist(Many, 400), Long}, "
             "Ts = [{I, ok, error, Long, lists:nth(I rem 3000 + 1, Many), [reply, #{key => value}]} "
             "|| I <- lists:seq(1, 3000)] ++ [Many, Big, {after_big, Long}], "
             "[K ! {self(), T} || T <- Ts], "
             "Got = [receive {_, R} -> R after 10000 -> timeout end || _ <- Ts], Got =:= Ts.",
             g_kiln);
    eval_expect_within(e, expr, "true", 60000);
}

/* ---- volume, size, and a peer that comes back ---- */

static void test_many_and_big(void **state)
{
    (void)state;
    start_node(false);
    struct erl_node *e = erl_with_t("tbig");
    char expr[1024];
    /* 10 000 messages in flight at once come back complete and in order. */
    snprintf(expr, sizeof expr,
             "N = 10000, [{echo, '%s'} ! {self(), I} || I <- lists:seq(1, N)], "
             "Got = [receive {_, I} -> I after 10000 -> timeout end || _ <- lists:seq(1, N)], "
             "Got =:= lists:seq(1, N).",
             g_kiln);
    eval_expect(e, expr, "true");
    /* Hundreds of 5000-byte binaries in one message: Kiln's frames
     * reference binaries of 4 KiB and more where they lie, and a fragment
     * spanning more than a few of them is copied instead; both must come
     * back exact. */
    snprintf(expr, sizeof expr,
             "L = [binary:copy(<<I>>, 5000) || I <- lists:seq(1, 300)], "
             "M = {many, L, binary:copy(<<7>>, 300000), L}, {echo, '%s'} ! {self(), M}, "
             "receive {_, R2} -> R2 =:= M after 30000 -> timeout end.",
             g_kiln);
    eval_expect_within(e, expr, "true", 35000);
    /* A 100 MB binary, to Kiln and back. */
    snprintf(expr, sizeof expr,
             "B = binary:copy(<<\"0123456789\">>, 10000000), {echo, '%s'} ! {self(), B}, "
             "receive {_, R} -> {byte_size(R), R =:= B} after 60000 -> timeout end.",
             g_kiln);
    /* Seconds plain, tens of seconds under TSan on a loaded machine. */
    eval_expect_within(e, expr, "{100000000,true}", 65000);
}

static void test_peer_restarts(void **state)
{
    (void)state;
    start_node(false);
    struct erl_node *e = erl_with_t("tback");
    char expr[512];
    snprintf(expr, sizeof expr, "net_adm:ping('%s').", g_kiln);
    eval_expect(e, expr, "pong");
    kill(-e->pid, SIGKILL);
    /* The node notices (the socket ends), and the name is free again. */
    kiln_term list[4];
    assert_int_equal(await_peers(0, list), 0);
    erl_stop(e);
    struct erl_node *e2 = erl_with_t("tback");
    eval_expect(e2, expr, "pong");
    /* And Kiln reaches the new incarnation on its own. */
    struct sender *s = calloc(1, sizeof(*s));
    snprintf(s->target, sizeof s->target, "%s", e2->full);
    assert_int_equal(kiln_spawn_fn(g_rt, kiln_sends_first, s, NULL, NULL), KILN_OK);
    assert_true(kiln_test_wait_flag(&s->done, 10000));
    assert_int_equal(s->rc_send, KILN_OK);
    eval_expect(e2, "receive {hi, from_kiln, P} when is_pid(P) -> ok after 3000 -> timeout end.", "ok");
    free(s);
}

/* Senders flooding a peer while its node is killed and restarted: each
 * send holds the connection between its lookup and its hand-over, so one
 * that is going down must outlive them (ASan and TSan run this too). The
 * node stays up, no send fails, and the new incarnation hears from it. */
#define FLOODERS 4

struct flood {
    char target[128];
    _Atomic int stop, done;
    _Atomic long sent;
    _Atomic int rc; /* the first send that failed */
};

static void flood_body(void *arg)
{
    struct flood *f = arg;
    kiln_msg *to = kiln_msg_new(64);
    kiln_term dest = kiln_tuple(to, 2, kiln_atom_c("sink"), kiln_atom_c(f->target));
    for (long i = 0; !atomic_load(&f->stop); i++) {
        kiln_msg *m = kiln_msg_new(64);
        kiln_msg_set_term(m, kiln_build(m, "{flood,~p,~i}", kiln_self(), (int64_t)i));
        int rc = kiln_send(dest, m);
        int none = KILN_OK;
        if (rc != KILN_OK)
            atomic_compare_exchange_strong(&f->rc, &none, rc);
        atomic_fetch_add(&f->sent, 1);
        if (i % 64 == 63)
            kiln_sleep(1); /* a flood, not a memory test of erl's mailbox */
    }
    kiln_msg_free(to);
    atomic_fetch_add(&f->done, 1);
}

/* A sink that drops everything, after telling t about the first one. */
#define SINK                                                                                              \
    "register(sink, spawn(fun() -> receive M -> t ! {got, M} end, "                                      \
    "L = fun L() -> receive _ -> L() end end, L() end))."

static void test_senders_across_a_dropped_connection(void **state)
{
    (void)state;
    start_node(false);
    struct erl_node *e = erl_with_t("tflood");
    eval_expect(e, SINK, "true");
    struct flood *f = calloc(1, sizeof(*f));
    snprintf(f->target, sizeof f->target, "%s", e->full);
    for (int i = 0; i < FLOODERS; i++)
        assert_int_equal(kiln_spawn_fn(g_rt, flood_body, f, NULL, NULL), KILN_OK);
    eval_expect(e, "receive {got, {flood, P, _}} when is_pid(P) -> ok after 5000 -> timeout end.", "ok");
    long before = atomic_load(&f->sent);
    kill(-e->pid, SIGKILL);
    kiln_term list[4];
    assert_int_equal(await_peers(0, list), 0);
    erl_stop(e);
    /* Still sending into the void, then to the new incarnation. */
    usleep(200000);
    assert_true(atomic_load(&f->sent) > before);
    struct erl_node *e2 = erl_with_t("tflood");
    eval_expect(e2, SINK, "true");
    eval_expect(e2, "receive {got, {flood, P, _}} when is_pid(P) -> ok after 10000 -> timeout end.", "ok");
    atomic_store(&f->stop, 1);
    for (int i = 0; i < 500 && atomic_load(&f->done) < FLOODERS; i++)
        usleep(10000);
    assert_int_equal(atomic_load(&f->done), FLOODERS);
    assert_int_equal(atomic_load(&f->rc), KILN_OK);
    char expr[512];
    snprintf(expr, sizeof expr, "net_adm:ping('%s').", g_kiln);
    eval_expect(e2, expr, "pong");
    free(f);
}

/* Sends to many peers that do not exist (each a connection attempt that
 * fails) mixed with sends to one that does: the connection table keeps
 * finding the right entry as entries come and go in numbers. */
#define GHOSTS 200

struct many {
    char target[128];
    _Atomic int done;
    int rc;
};

static void many_body(void *arg)
{
    struct many *w = arg;
    kiln_msg *to = kiln_msg_new(64);
    kiln_term real = kiln_tuple(to, 2, kiln_atom_c("t"), kiln_atom_c(w->target));
    for (int i = 0; i < GHOSTS && w->rc == KILN_OK; i++) {
        char ghost[160];
        snprintf(ghost, sizeof ghost, "ghost%d@%s", i, g_host);
        kiln_msg *g = kiln_msg_new(64);
        kiln_msg_set_term(g, kiln_atom_c("boo"));
        kiln_msg *gt = kiln_msg_new(64);
        w->rc = kiln_send(kiln_tuple(gt, 2, kiln_atom_c("t"), kiln_atom_c(ghost)), g);
        kiln_msg_free(gt);
        kiln_msg *m = kiln_msg_new(64);
        kiln_msg_set_term(m, kiln_build(m, "{n,~i}", (int64_t)i));
        if (w->rc == KILN_OK)
            w->rc = kiln_send(real, m);
        else
            kiln_msg_free(m);
    }
    kiln_msg_free(to);
    atomic_store(&w->done, 1);
}

static void test_many_peers(void **state)
{
    (void)state;
    start_node(false);
    struct erl_node *e = erl_with_t("tmany");
    struct many *w = calloc(1, sizeof(*w));
    snprintf(w->target, sizeof w->target, "%s", e->full);
    assert_int_equal(kiln_spawn_fn(g_rt, many_body, w, NULL, NULL), KILN_OK);
    assert_true(kiln_test_wait_flag(&w->done, 20000));
    assert_int_equal(w->rc, KILN_OK);
    /* All of them, in order, and nothing for the ghosts. */
    eval_expect(e,
                "L = [receive {n, I} -> I after 5000 -> timeout end || _ <- lists:seq(1, 200)], "
                "L =:= lists:seq(0, 199).",
                "true");
    kiln_term list[4];
    assert_int_equal(await_peers(1, list), 1);
    assert_true(list[0] == kiln_atom_c(e->full));
    free(w);
}

/* ---- global ---- */

/* global:sync() on erl, in a spawned process: {ok,true} when it returned
 * ok in under 5 s, timeout when it still hangs after 8 s. */
#define GLOBAL_SYNC                                                                                              \
    "Self = self(), T0 = erlang:monotonic_time(millisecond), "                                                  \
    "spawn(fun() -> Self ! {s, global:sync()} end), "                                                            \
    "receive {s, S} -> {S, erlang:monotonic_time(millisecond) - T0 < 5000} after 8000 -> timeout end."

/* Nothing in erl's own reports (errors, warnings, and with the level
 * lowered, global's info notes) about its dealings with us. */
static void assert_quiet_log(struct erl_node *e)
{
    char res[256];
    erl_eval(e, "ok.", res, sizeof res); /* pulls in pending log lines */
    const char *log = e->log ? e->log : "";
    if (strstr(log, "REPORT") || strstr(log, "global") || strstr(log, g_kiln))
        fail_msg("erl %s logged:\n%s", e->sname, log);
}

static void test_global_sync(void **state)
{
    (void)state;
    start_node(false);
    struct erl_node *e = erl_with_t("tglob");
    eval_expect(e, "logger:set_primary_config(level, info), "
                    "logger:add_primary_filter(noprog, {fun logger_filters:progress/2, stop}).", "ok");
    char expr[1024];
    snprintf(expr, sizeof expr, "net_adm:ping('%s').", g_kiln);
    eval_expect(e, expr, "pong");
    /* With a visible Kiln node connected, sync returns, and quickly. */
    eval_expect(e, GLOBAL_SYNC, "{ok,true}");
    /* The Kiln node now counts as synced: registration goes through it. */
    eval_expect(e, "{global:register_name(gx, self()), global:whereis_name(gx) =:= self()}.", "{yes,true}");
    eval_expect(e, "lists:member(gx, global:registered_names()).", "true");
    eval_expect(e, GLOBAL_SYNC, "{ok,true}");

    /* A second erl that only meets the first learns of us through it (its
     * global connects to us and sends in_sync), syncs, and sees the name. */
    struct erl_node *e2 = erl_with_t("tglob2");
    eval_expect(e2, "logger:set_primary_config(level, info), "
                    "logger:add_primary_filter(noprog, {fun logger_filters:progress/2, stop}).", "ok");
    snprintf(expr, sizeof expr, "net_adm:ping('%s').", e->full);
    eval_expect(e2, expr, "pong");
    eval_expect(e2, GLOBAL_SYNC, "{ok,true}");
    /* global connects it to us in the background, then sync covers us. */
    snprintf(expr, sizeof expr, "lists:member('%s', nodes()) andalso lists:member('%s', nodes()).", g_kiln, e->full);
    erl_await(e2, expr, "true", 10000);
    eval_expect(e2, GLOBAL_SYNC, "{ok,true}");
    snprintf(expr, sizeof expr, "node(global:whereis_name(gx)) =:= '%s'.", e->full);
    eval_expect(e2, expr, "true");
    /* And the other way: a name registered on the second is seen on the first. */
    eval_expect(e2, "global:register_name(gy, self()).", "yes");
    snprintf(expr, sizeof expr, "node(global:whereis_name(gy)) =:= '%s'.", e2->full);
    eval_expect(e, expr, "true");
    eval_expect(e, GLOBAL_SYNC, "{ok,true}");
    eval_expect(e2, "global:unregister_name(gy), global:whereis_name(gy).", "undefined");
    /* A third erl that connects to us first also syncs with both. */
    struct erl_node *e3 = erl_with_t("tglob3");
    eval_expect(e3, "logger:set_primary_config(level, info), "
                    "logger:add_primary_filter(noprog, {fun logger_filters:progress/2, stop}).", "ok");
    snprintf(expr, sizeof expr, "{net_adm:ping('%s'), net_adm:ping('%s')}.", g_kiln, e2->full);
    eval_expect(e3, expr, "{pong,pong}");
    eval_expect(e3, GLOBAL_SYNC, "{ok,true}");
    snprintf(expr, sizeof expr, "node(global:whereis_name(gx)) =:= '%s'.", e->full);
    eval_expect(e3, expr, "true");
    assert_quiet_log(e);
    assert_quiet_log(e2);
    assert_quiet_log(e3);
}

/* ---- node monitoring ---- */

struct nodemon {
    char target[128];
    _Atomic int ready;
    _Atomic int got;
    char seen[4][128];
};

static void node_watcher(void *arg)
{
    struct nodemon *w = arg;
    kiln_term node = kiln_atom_c(w->target);
    kiln_monitor_nodes(true);
    kiln_monitor_node(node, true);
    /* A node that cannot be reached: nodedown at once. */
    kiln_monitor_node(kiln_atom_c("nobody@nowhere"), true);
    atomic_store(&w->ready, 1);
    for (int i = 0; i < 4; i++) {
        kiln_msg *m;
        if (kiln_receive(any, NULL, 15000, &m) != KILN_OK)
            break;
        kiln_term_print(w->seen[i], sizeof w->seen[i], kiln_msg_term(m));
        kiln_msg_free(m);
        atomic_fetch_add(&w->got, 1);
    }
}

static void test_monitor_node(void **state)
{
    (void)state;
    start_node(false);
    struct erl_node *e = erl_with_t("tnmon");
    struct nodemon *w = calloc(1, sizeof(*w));
    snprintf(w->target, sizeof w->target, "%s", e->full);
    assert_int_equal(kiln_spawn_fn(g_rt, node_watcher, w, NULL, NULL), KILN_OK);
    assert_true(kiln_test_wait_flag(&w->ready, 5000));
    /* monitor_node connected us (nodeup), then the node is killed. */
    for (int i = 0; i < 500 && atomic_load(&w->got) < 2; i++)
        usleep(10000);
    kill(-e->pid, SIGKILL);
    for (int i = 0; i < 1500 && atomic_load(&w->got) < 4; i++)
        usleep(10000);
    assert_int_equal(atomic_load(&w->got), 4);
    char want_up[160], want_down[160];
    snprintf(want_up, sizeof want_up, "{nodeup,%s}", e->full);
    snprintf(want_down, sizeof want_down, "{nodedown,%s}", e->full);
    int ups = 0, downs = 0, nobody = 0;
    for (int i = 0; i < 4; i++) {
        ups += strcmp(w->seen[i], want_up) == 0;
        downs += strcmp(w->seen[i], want_down) == 0;
        nobody += strcmp(w->seen[i], "{nodedown,nobody@nowhere}") == 0;
    }
    if (ups != 1 || downs != 2 || nobody != 1)
        fail_msg("saw %s %s %s %s", w->seen[0], w->seen[1], w->seen[2], w->seen[3]);
    /* nodeup (monitor_nodes), nodedown twice (monitor_node and
     * monitor_nodes), and nodedown for the unreachable node. */
    assert_int_equal(ups, 1);
    assert_int_equal(downs, 2);
    assert_int_equal(nobody, 1);
    free(w);
}

/* ---- hostile peers ---- */

/* Connect to port, send bytes, and report whether the node closed the
 * connection (EOF or reset) within ms. */
static bool closes_after(uint16_t port, const void *bytes, size_t len, int ms)
{
    int fd = connect_local(port);
    if (fd < 0)
        return false;
    write_all(fd, bytes, len);
    uint8_t buf[256];
    long end = now_ms() + ms;
    for (;;) {
        ssize_t got = read_some(fd, buf, sizeof buf, (int)(end - now_ms()));
        if (got <= 0) {
            close(fd);
            return got == 0 || now_ms() < end; /* EOF or reset before the deadline */
        }
        if (now_ms() >= end) {
            close(fd);
            return false;
        }
    }
}

/* A fake node that completes a real handshake with us (initiator), so
 * that what it sends next reaches the frame parser. */
static int handshaken_peer(const char *me)
{
    int fd = connect_local(kiln_node_port(g_node));
    assert_true(fd >= 0);
    kiln_hs_config cfg = {.role = KILN_HS_INITIATOR, .name = me, .creation = 77, .flags = KILN_DFLAGS_HIDDEN,
                          .cookie = (const uint8_t *)COOKIE, .cookie_len = strlen(COOKIE), .peer = g_kiln};
    int err;
    kiln_hs *hs = kiln_hs_new(&cfg, &err);
    assert_non_null(hs);
    uint8_t buf[4096];
    long end = now_ms() + 5000;
    while (kiln_hs_get_state(hs) == KILN_HS_RUNNING && now_ms() < end) {
        size_t olen;
        const uint8_t *o = kiln_hs_output(hs, &olen);
        if (olen) {
            write_all(fd, o, olen);
            kiln_hs_output_advance(hs, olen);
        }
        ssize_t got = read_some(fd, buf, sizeof buf, 1000);
        if (got > 0) {
            size_t used;
            kiln_hs_feed(hs, buf, (size_t)got, &used);
        }
    }
    size_t olen;
    const uint8_t *o = kiln_hs_output(hs, &olen);
    if (olen)
        write_all(fd, o, olen);
    assert_int_equal(kiln_hs_get_state(hs), KILN_HS_DONE);
    kiln_hs_free(hs);
    return fd;
}

static bool peer_closed(int fd, int ms)
{
    uint8_t buf[4096];
    long end = now_ms() + ms;
    while (now_ms() < end) {
        ssize_t got = read_some(fd, buf, sizeof buf, (int)(end - now_ms()));
        if (got <= 0)
            return true; /* EOF or reset: closed; ticks (0,0,0,0) only keep it open */
    }
    return false;
}

static void test_bad_input(void **state)
{
    (void)state;
    start_node(false);
    /* Garbage on the distribution port is refused at once; a truncated
     * handshake when its step times out (net_setuptime, 7 s). */
    static const uint8_t junk[] = {0, 5, 'X', 1, 2, 3, 4, 5, 6, 7};
    long t0 = now_ms();
    assert_true(closes_after(kiln_node_port(g_node), junk, sizeof junk, 10000));
    assert_true(now_ms() - t0 < 2000);
    static const uint8_t truncated[] = {0, 40, 'N', 0, 0, 0, 0};
    assert_true(closes_after(kiln_node_port(g_node), truncated, sizeof truncated, 10000));
    /* The EPMD port (which the node serves): an unknown request at once,
     * an over-long one at once, a truncated one after its read timeout. */
    static const uint8_t bad_req[] = {0, 3, 200, 1, 2};
    t0 = now_ms();
    assert_true(closes_after(g_epmd, bad_req, sizeof bad_req, 10000));
    assert_true(now_ms() - t0 < 2000);
    static const uint8_t huge_epmd[] = {0xFF, 0xFF, 120};
    assert_true(closes_after(g_epmd, huge_epmd, sizeof huge_epmd, 10000));
    static const uint8_t short_epmd[] = {0, 20, 120, 1};
    assert_true(closes_after(g_epmd, short_epmd, sizeof short_epmd, 10000));
    /* After a real handshake: a 4 GB length is refused, not allocated. */
    char me[128];
    snprintf(me, sizeof me, "fake1@%s", g_host);
    int fd = handshaken_peer(me);
    static const uint8_t huge[] = {0xFF, 0xFF, 0xFF, 0xF0, 'p'};
    write_all(fd, huge, sizeof huge);
    assert_true(peer_closed(fd, 10000));
    close(fd);
    /* An endless stream of new atoms: the connection is closed well before
     * the atom table fills. */
    snprintf(me, sizeof me, "fake2@%s", g_host);
    fd = handshaken_peer(me);
    kiln_etf_ctx ctx = {.node = kiln_atom_c(me), .creation = 77};
    size_t before = kiln_atom_count();
    bool closed = false;
    for (int i = 0; i < 150000 && !closed; i++) {
        /* {6, Pid, '', nobody} + {atom_i}: REG_SEND of a fresh atom each time. */
        uint8_t frame[128];
        char name[32];
        int nl = snprintf(name, sizeof name, "a%dz", i);
        size_t k = 4;
        frame[k++] = 'p';
        static const uint8_t ctrl[] = {131, 104, 4, 97, 6};
        memcpy(frame + k, ctrl, sizeof ctrl);
        k += sizeof ctrl;
        /* the sender pid: NEW_PID_EXT on node fake2 */
        frame[k++] = 88;
        frame[k++] = 119;
        frame[k++] = (uint8_t)strlen(me);
        memcpy(frame + k, me, strlen(me));
        k += strlen(me);
        static const uint8_t pidrest[] = {0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 77};
        memcpy(frame + k, pidrest, sizeof pidrest);
        k += sizeof pidrest;
        static const uint8_t tail[] = {119, 0, 119, 6, 'n', 'o', 'b', 'o', 'd', 'y'};
        memcpy(frame + k, tail, sizeof tail);
        k += sizeof tail;
        frame[k++] = 131;
        frame[k++] = 119;
        frame[k++] = (uint8_t)nl;
        memcpy(frame + k, name, (size_t)nl);
        k += (size_t)nl;
        uint32_t len = (uint32_t)(k - 4);
        frame[0] = (uint8_t)(len >> 24);
        frame[1] = (uint8_t)(len >> 16);
        frame[2] = (uint8_t)(len >> 8);
        frame[3] = (uint8_t)len;
        if (send(fd, frame, k, MSG_NOSIGNAL) < 0)
            closed = true;
        if (i % 10000 == 9999)
            closed = closed || peer_closed(fd, 1);
    }
    closed = closed || peer_closed(fd, 10000);
    assert_true(closed);
    assert_true(kiln_atom_count() - before < 110000 + 10000);
    close(fd);
    (void)ctx;
    /* And the node still serves a real peer. */
    struct erl_node *e = erl_with_t("tbad");
    char expr[256];
    snprintf(expr, sizeof expr, "net_adm:ping('%s').", g_kiln);
    eval_expect(e, expr, "pong");
}

/* The node serving EPMD stops: one of the Kiln nodes left takes over the
 * port, the other registers with it, and an erl started afterwards finds
 * both through it. */
static void test_epmd_takeover(void **state)
{
    (void)state;
    start_node(false);
    const char *names[2] = {"kilnb", "kilnc"};
    for (int i = 0; i < 2; i++) {
        g_more_rt[i] = kiln_test_rt(1, NULL);
        kiln_node_config c = {.name = names[i], .cookie = COOKIE, .epmd_port = g_epmd};
        assert_int_equal(kiln_node_start(g_more_rt[i], &c, &g_more[i]), KILN_OK);
        assert_false(kiln_node_serves_epmd(g_more[i]));
    }
    kiln_node_stop(g_node);
    kiln_rt_stop(g_rt);
    g_node = NULL;
    g_rt = NULL;

    long end = now_ms() + 10000;
    while (!kiln_node_serves_epmd(g_more[0]) && !kiln_node_serves_epmd(g_more[1]) && now_ms() < end)
        usleep(10000);
    int serving = kiln_node_serves_epmd(g_more[0]) + kiln_node_serves_epmd(g_more[1]);
    assert_int_equal(serving, 1);

    struct erl_node *e = erl_start("ttake", g_epmd);
    char expr[256];
    /* The other node's ALIVE2 may still be a few retries away. */
    snprintf(expr, sizeof expr,
             "lists:sort([N || {N, _} <- element(2, net_adm:names()), lists:prefix(\"kiln\", N)]).");
    erl_await(e, expr, "[\"kilnb\",\"kilnc\"]", 10000);
    for (int i = 0; i < 2; i++) {
        snprintf(expr, sizeof expr, "net_adm:ping('%s@%s').", names[i], g_host);
        eval_expect(e, expr, "pong");
    }
    /* Still serving after erl is gone; the other stays registered. */
    erl_stop(e);
    assert_int_equal(kiln_node_serves_epmd(g_more[0]) + kiln_node_serves_epmd(g_more[1]), 1);
}

/* Kiln calls Kiln across the wire: every call's monitor is dropped on the
 * server again (the DEMONITOR names the call's alias reference exactly). */
struct k2k {
    char target[128];
    int calls, pongs;
    _Atomic int done;
};

static void k2k_caller(void *arg)
{
    struct k2k *c = arg;
    kiln_msg *to = kiln_msg_new(64);
    kiln_term dest = kiln_tuple(to, 2, kiln_atom_c("cserver"), kiln_atom_c(c->target));
    for (int i = 0; i < c->calls; i++) {
        kiln_msg *reply = NULL;
        if (kiln_call(dest, kiln_test_msg("ping"), 5000, &reply, NULL) == KILN_OK &&
            kiln_msg_term(reply) == kiln_atom_c("pong"))
            c->pongs++;
        kiln_msg_free(reply);
    }
    kiln_msg_free(to);
    atomic_store(&c->done, 1);
}

static void test_kiln_to_kiln_calls(void **state)
{
    (void)state;
    start_node(false);
    g_more_rt[0] = kiln_test_rt(1, NULL);
    kiln_node_config c = {.name = "kilnb", .cookie = COOKIE, .epmd_port = g_epmd};
    assert_int_equal(kiln_node_start(g_more_rt[0], &c, &g_more[0]), KILN_OK);
    struct k2k *k = calloc(1, sizeof(*k));
    snprintf(k->target, sizeof k->target, "%s", g_kiln);
    k->calls = 300;
    assert_int_equal(kiln_spawn_fn(g_more_rt[0], k2k_caller, k, NULL, NULL), KILN_OK);
    assert_true(kiln_test_wait_flag(&k->done, 30000));
    assert_int_equal(k->pongs, 300);
    kiln_term srv = kiln_whereis(g_rt, kiln_atom_c("cserver"));
    kiln_proc_info info = {0};
    long end = now_ms() + 5000;
    do {
        assert_int_equal(kiln_process_info(g_rt, srv, &info), KILN_OK);
        if (info.monitored_by == 0)
            break;
        usleep(10000);
    } while (now_ms() < end);
    assert_int_equal(info.monitored_by, 0);
    free(k);
}

/* A node told to listen on its own EPMD port is refused with a clear
 * error instead of registering with itself; the runtime stays usable and
 * a node started right after on it is fine. */
static void test_port_clash(void **state)
{
    (void)state;
    g_epmd = free_port();
    g_rt = kiln_test_rt(2, NULL);
    kiln_node_config c = {.name = "kiln", .cookie = COOKIE, .epmd_port = g_epmd, .port = g_epmd};
    assert_int_equal(kiln_node_start(g_rt, &c, &g_node), KILN_EINVAL);
    assert_null(g_node);
    c.port = 0;
    assert_int_equal(kiln_node_start(g_rt, &c, &g_node), KILN_OK);
    assert_true(kiln_node_serves_epmd(g_node));
    assert_int_not_equal(kiln_node_port(g_node), g_epmd);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_ping_and_names, node_teardown),
        cmocka_unit_test_teardown(test_hidden_node, node_teardown),
        cmocka_unit_test_teardown(test_echo_terms, node_teardown),
        cmocka_unit_test_teardown(test_kiln_connects_and_sends, node_teardown),
        cmocka_unit_test_teardown(test_calls, node_teardown),
        cmocka_unit_test_teardown(test_monitor_and_down, node_teardown),
        cmocka_unit_test_teardown(test_links, node_teardown),
        cmocka_unit_test_teardown(test_kill_erl_gives_noconnection, node_teardown),
        cmocka_unit_test_teardown(test_wrong_cookie_pang, node_teardown),
        cmocka_unit_test_teardown(test_rpc_both_ways, node_teardown),
        cmocka_unit_test_teardown(test_kiln_calls_erlang_gen_server, node_teardown),
        cmocka_unit_test_teardown(test_bad_input, node_teardown),
        cmocka_unit_test_teardown(test_many_and_big, node_teardown),
        cmocka_unit_test_teardown(test_peer_restarts, node_teardown),
        cmocka_unit_test_teardown(test_senders_across_a_dropped_connection, node_teardown),
        cmocka_unit_test_teardown(test_many_peers, node_teardown),
        cmocka_unit_test_teardown(test_monitor_node, node_teardown),
        cmocka_unit_test_teardown(test_epmd_takeover, node_teardown),
        cmocka_unit_test_teardown(test_kiln_to_kiln_calls, node_teardown),
        cmocka_unit_test_teardown(test_global_sync, node_teardown),
        cmocka_unit_test_teardown(test_atom_cache, node_teardown),
        cmocka_unit_test_teardown(test_port_clash, node_teardown),
    };
    if (argc > 1) {
        static char pattern[128];
        snprintf(pattern, sizeof pattern, "test_%s", argv[1]);
        cmocka_set_test_filter(pattern);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
