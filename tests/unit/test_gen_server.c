/* gen_server semantics, after OTP's gen_server_SUITE: start (ok, stop,
 * ignore, continue, timeout, names), call/cast/info, deferred replies,
 * stop with reply, call timeouts, noproc, parent exits, stop/3, Timeout
 * results, sys messages, and the raw OTP wire format. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln/gen_server.h"
#include "testutil.h"

/* ---- a counter server, steered by a control block the test owns ---- */

enum init_mode { INIT_OK, INIT_STOP, INIT_IGNORE, INIT_CONTINUE, INIT_SLEEP, INIT_TIMEOUT, INIT_TRAP };

struct ctl {
    enum init_mode mode;
    _Atomic int terminated;
    _Atomic uint64_t term_reason; /* an atom, or the first element of a tuple reason */
    _Atomic long infos, timeouts, casts;
    _Atomic int log_len;
    char log[64]; /* one letter per callback, in order */
    _Atomic int observed_terminated_at_reply;
};

struct st {
    struct ctl *c;
    int64_t n;
    kiln_msg *pending; /* a kept From */
};

static void logc(struct ctl *c, char ch)
{
    int i = atomic_fetch_add(&c->log_len, 1);
    if (i < (int)sizeof(c->log) - 1)
        c->log[i] = ch;
}

static kiln_term A(const char *s) { return kiln_atom_c(s); }

static const kiln_behaviour replier_beh;

static kiln_gs_ret srv_init(void *arg, void **state)
{
    struct ctl *c = arg;
    logc(c, 'i');
    switch (c->mode) {
    case INIT_STOP:
        return kiln_gs_stop(A("init_refused"));
    case INIT_IGNORE:
        return kiln_gs_ignore();
    case INIT_SLEEP:
        kiln_sleep(2000);
        break;
    default:
        break;
    }
    struct st *s = calloc(1, sizeof(*s));
    s->c = c;
    *state = s;
    if (c->mode == INIT_CONTINUE)
        return kiln_gs_continue(A("warm_up"));
    if (c->mode == INIT_TIMEOUT)
        return kiln_gs_timeout(kiln_gs_ok(), 20);
    if (c->mode == INIT_TRAP)
        kiln_trap_exit(true);
    return kiln_gs_ok();
}

static kiln_gs_ret srv_call(void *state, kiln_term req, kiln_term from)
{
    struct st *s = state;
    logc(s->c, 'h');
    int64_t v;
    if (kiln_match(req, "{add,~i}", &v) == KILN_OK) {
        s->n += v;
        kiln_msg *m = kiln_msg_new(32);
        kiln_msg_set_term(m, kiln_int(m, s->n));
        return kiln_gs_reply_msg(m);
    }
    if (req == A("get"))
        return kiln_gs_reply(kiln_small(s->n));
    if (req == A("defer")) {
        s->pending = kiln_gs_from_keep(from);
        return kiln_gs_noreply();
    }
    if (req == A("defer_other")) {
        /* Hand From to another process, which answers (gen_server:reply
         * works from anywhere). */
        kiln_msg *m = kiln_gs_from_keep(from);
        kiln_term helper;
        kiln_spawn(kiln_current_rt(), &replier_beh, m, NULL, &helper);
        return kiln_gs_noreply();
    }
    kiln_term r;
    if (kiln_match(req, "{stop,~t}", &r) == KILN_OK)
        return kiln_gs_stop_reply(r, A("stopped"));
    if (kiln_match(req, "{stop_noreply,~t}", &r) == KILN_OK)
        return kiln_gs_stop(r);
    if (kiln_match(req, "{sleep,~i}", &v) == KILN_OK) {
        kiln_sleep((uint64_t)v);
        return kiln_gs_reply(KILN_ATOM_OK);
    }
    if (req == A("then_continue"))
        return kiln_gs_then(kiln_gs_reply(A("before_continue")), A("more"));
    if (req == A("continue_stop"))
        return kiln_gs_then(kiln_gs_reply(A("ok")), A("stop"));
    return kiln_gs_reply(A("unknown"));
}

static kiln_gs_ret srv_cast(void *state, kiln_term msg)
{
    struct st *s = state;
    logc(s->c, 'a');
    atomic_fetch_add(&s->c->casts, 1);
    int64_t v;
    if (msg == A("release") && s->pending) {
        kiln_gen_reply(kiln_msg_term(s->pending), A("released"));
        kiln_msg_free(s->pending);
        s->pending = NULL;
    } else if (kiln_match(msg, "{add,~i}", &v) == KILN_OK) {
        s->n += v;
    } else if (kiln_match(msg, "{timeout_me,~i}", &v) == KILN_OK) {
        return kiln_gs_timeout(kiln_gs_noreply(), v);
    }
    return kiln_gs_noreply();
}

static kiln_gs_ret srv_info(void *state, kiln_msg *msg)
{
    struct st *s = state;
    if (kiln_msg_term(msg) == A("timeout")) {
        logc(s->c, 'T');
        atomic_fetch_add(&s->c->timeouts, 1);
    } else {
        logc(s->c, 'o');
        atomic_fetch_add(&s->c->infos, 1);
    }
    return kiln_gs_noreply();
}

static kiln_gs_ret srv_continue(void *state, kiln_term cont)
{
    struct st *s = state;
    logc(s->c, 'c');
    if (cont == A("warm_up"))
        s->n = 1000;
    else if (cont == A("more"))
        s->n += 100;
    else if (cont == A("stop"))
        return kiln_gs_stop(A("continue_stopped"));
    return kiln_gs_noreply();
}

static void srv_terminate(void *state, kiln_term reason)
{
    struct st *s = state;
    logc(s->c, 't');
    kiln_term r = kiln_is_tuple(reason) ? kiln_tuple_get(reason, 0) : reason;
    atomic_store(&s->c->term_reason, r);
    atomic_store(&s->c->terminated, 1);
    kiln_msg_free(s->pending);
    free(s);
}

static kiln_term srv_format(void *state, kiln_msg *m)
{
    struct st *s = state;
    return kiln_build(m, "{counter,~i}", s->n);
}

static const kiln_gen_server counter = {
    .name = "counter",
    .init = srv_init,
    .handle_call = srv_call,
    .handle_cast = srv_cast,
    .handle_info = srv_info,
    .handle_continue = srv_continue,
    .terminate = srv_terminate,
    .format_state = srv_format,
};

/* The process that answers a deferred call for defer_other. */
static int replier_init(void *arg, void **state)
{
    kiln_msg *from = arg;
    kiln_gen_reply(kiln_msg_term(from), A("from_elsewhere"));
    kiln_msg_free(from);
    *state = NULL;
    kiln_msg *m = kiln_msg_new(0);
    kiln_msg_set_term(m, KILN_NIL);
    kiln_send(kiln_self(), m);
    return KILN_OK;
}
static kiln_action replier_handle(void *state, kiln_msg *msg) { return KILN_STOP; }
static const kiln_behaviour replier_beh = {"replier", replier_init, replier_handle, NULL};

/* ---- helpers ---- */

static int64_t call_int(kiln_rt *rt, kiln_term srv, const char *fmt, int64_t arg)
{
    kiln_msg *reply = NULL;
    int rc = kiln_gs_call(rt, srv, kiln_test_msg(fmt, arg), 5000, &reply, NULL);
    assert_int_equal(rc, KILN_OK);
    int64_t v = -1;
    assert_int_equal(kiln_get_int64(kiln_msg_term(reply), &v), KILN_OK);
    kiln_msg_free(reply);
    return v;
}

static kiln_term call_atom(kiln_rt *rt, kiln_term srv, const char *req)
{
    kiln_msg *reply = NULL;
    int rc = kiln_gs_call(rt, srv, kiln_test_msg(req), 5000, &reply, NULL);
    assert_int_equal(rc, KILN_OK);
    kiln_term t = kiln_msg_term(reply);
    assert_true(kiln_is_atom(t));
    kiln_msg_free(reply);
    return t;
}

static void wait_dead(kiln_rt *rt, kiln_term pid)
{
    for (int i = 0; i < 5000 && kiln_is_alive(rt, pid); i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    assert_false(kiln_is_alive(rt, pid));
}

static kiln_term start(kiln_rt *rt, struct ctl *c, const char *name)
{
    kiln_gs_opts o = {.name = name};
    kiln_term pid = KILN_NONE;
    assert_int_equal(kiln_gs_start(rt, &counter, c, &o, &pid, NULL), KILN_OK);
    assert_true(kiln_is_local_pid(pid));
    return pid;
}

/* ---- tests ---- */

static void test_start_call_cast_info_stop(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    kiln_term pid = start(rt, &c, NULL); /* from a non-Kiln thread */
    assert_int_equal(call_int(rt, pid, "{add,~i}", 5), 5);
    assert_int_equal(kiln_gs_cast(rt, pid, kiln_test_msg("{add,~i}", (int64_t)10)), KILN_OK);
    assert_int_equal(kiln_rt_send(rt, pid, kiln_test_msg("hello")), KILN_OK);
    /* Messages from one sender stay in order: the call sees the cast. */
    assert_int_equal(call_int(rt, pid, "{add,~i}", 0), 15);
    assert_int_equal(atomic_load(&c.infos), 1);
    assert_int_equal(kiln_gs_stop_server(rt, pid, A("normal"), 5000), KILN_OK);
    assert_false(kiln_is_alive(rt, pid));
    assert_int_equal(atomic_load(&c.terminated), 1);
    assert_int_equal(atomic_load(&c.term_reason), KILN_ATOM_NORMAL);
    assert_string_equal(c.log, "ihaoht");
    /* gen_server:stop of a dead server: noproc. */
    assert_int_equal(kiln_gs_stop_server(rt, pid, A("normal"), 5000), KILN_ENOPROC);
    kiln_rt_stop(rt);
}

static void test_named_start(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0}, c2 = {0};
    kiln_term pid = start(rt, &c, "gs_named");
    assert_true(kiln_term_eq(kiln_whereis(rt, A("gs_named")), pid));
    assert_int_equal(call_int(rt, A("gs_named"), "{add,~i}", 7), 7);
    /* {error, {already_started, Pid}} */
    kiln_gs_opts o = {.name = "gs_named"};
    kiln_term other = KILN_NONE;
    assert_int_equal(kiln_gs_start(rt, &counter, &c2, &o, &other, NULL), KILN_ENAME_TAKEN);
    assert_true(kiln_term_eq(other, pid));
    assert_int_equal(atomic_load(&c2.log_len), 0); /* its init never ran */
    /* Stop by name with a custom reason. */
    assert_int_equal(kiln_gs_stop_server(rt, A("gs_named"), A("bye"), 5000), KILN_OK);
    assert_int_equal(atomic_load(&c.term_reason), A("bye"));
    assert_true(kiln_is_none(kiln_whereis(rt, A("gs_named"))));
    assert_int_equal(kiln_gs_stop_server(rt, A("gs_named"), A("bye"), 5000), KILN_ENOPROC);
    kiln_rt_stop(rt);
}

static void test_init_stop_and_ignore(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {.mode = INIT_STOP};
    kiln_gs_opts o = {.name = "gs_init"};
    kiln_term pid = A("x");
    kiln_msg *why = NULL;
    assert_int_equal(kiln_gs_start(rt, &counter, &c, &o, &pid, &why), KILN_EEXIT);
    assert_non_null(why);
    assert_int_equal(kiln_msg_term(why), A("init_refused"));
    kiln_msg_free(why);
    assert_true(kiln_is_none(pid));
    /* The process is gone and its name free when start returns. */
    assert_true(kiln_is_none(kiln_whereis(rt, A("gs_init"))));
    assert_int_equal(atomic_load(&c.terminated), 0); /* no terminate after a failed init */

    struct ctl c2 = {.mode = INIT_IGNORE};
    pid = A("x");
    assert_int_equal(kiln_gs_start(rt, &counter, &c2, &o, &pid, NULL), KILN_OK);
    assert_true(kiln_is_none(pid));
    assert_true(kiln_is_none(kiln_whereis(rt, A("gs_init"))));
    assert_int_equal(atomic_load(&c2.terminated), 0);
    assert_int_equal(kiln_rt_wait_idle(rt, 5000), KILN_OK);
    kiln_rt_stop(rt);
}

static void test_continue(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {.mode = INIT_CONTINUE};
    kiln_term pid = start(rt, &c, NULL);
    /* handle_continue ran before the first call. */
    assert_int_equal(call_int(rt, pid, "{add,~i}", 1), 1001);
    /* A reply with {continue, more}: the reply first, then the continue,
     * before the next message. */
    assert_int_equal(call_atom(rt, pid, "then_continue"), A("before_continue"));
    assert_int_equal(call_int(rt, pid, "{add,~i}", 0), 1101);
    /* A continue that stops. */
    assert_int_equal(call_atom(rt, pid, "continue_stop"), A("ok"));
    wait_dead(rt, pid);
    assert_int_equal(atomic_load(&c.term_reason), A("continue_stopped"));
    assert_string_equal(c.log, "ichhchhct");
    kiln_rt_stop(rt);
}

struct deferred {
    kiln_term srv;
    int rc1, rc2;
    kiln_term r1, r2;
};

static void deferred_body(void *arg)
{
    struct deferred *d = arg;
    kiln_msg *reply = NULL;
    /* The server answers only when a cast releases the kept From. */
    kiln_term srv = d->srv;
    d->rc1 = kiln_gs_call(NULL, srv, kiln_test_msg("defer"), 5000, &reply, NULL);
    d->r1 = d->rc1 == KILN_OK ? kiln_msg_term(reply) : KILN_NONE;
    kiln_msg_free(reply);
    d->rc2 = kiln_gs_call(NULL, srv, kiln_test_msg("defer_other"), 5000, &reply, NULL);
    d->r2 = d->rc2 == KILN_OK ? kiln_msg_term(reply) : KILN_NONE;
    kiln_msg_free(reply);
}

static void releaser(void *arg)
{
    kiln_term srv = *(kiln_term *)arg;
    kiln_sleep(50);
    kiln_gs_cast(NULL, srv, kiln_test_msg("release"));
}

static void test_noreply_then_reply(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    struct deferred d = {.srv = start(rt, &c, NULL)};
    kiln_term p;
    assert_int_equal(kiln_spawn_fn(rt, releaser, &d.srv, NULL, &p), KILN_OK);
    kiln_test_run_in_process(rt, deferred_body, &d, 10000);
    assert_int_equal(d.rc1, KILN_OK);
    assert_int_equal(d.r1, A("released"));
    assert_int_equal(d.rc2, KILN_OK);
    assert_int_equal(d.r2, A("from_elsewhere"));
    kiln_rt_stop(rt);
}

static void test_stop_with_reply(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    kiln_term pid = start(rt, &c, NULL);
    kiln_msg *reply = NULL;
    assert_int_equal(kiln_gs_call(rt, pid, kiln_test_msg("{stop,shutdown}"), 5000, &reply, NULL), KILN_OK);
    assert_int_equal(kiln_msg_term(reply), A("stopped"));
    kiln_msg_free(reply);
    /* OTP order: terminate runs before the reply is sent. */
    assert_int_equal(atomic_load(&c.terminated), 1);
    assert_int_equal(atomic_load(&c.term_reason), A("shutdown"));
    wait_dead(rt, pid);

    /* {stop, Reason, State} from a call: the caller sees the exit. */
    struct ctl c2 = {0};
    pid = start(rt, &c2, NULL);
    kiln_msg *why = NULL;
    assert_int_equal(kiln_gs_call(rt, pid, kiln_test_msg("{stop_noreply,crashed}"), 5000, &reply, &why),
                     KILN_EEXIT);
    assert_non_null(why);
    assert_int_equal(kiln_msg_term(why), A("crashed"));
    kiln_msg_free(why);
    assert_int_equal(atomic_load(&c2.term_reason), A("crashed"));
    kiln_rt_stop(rt);
}

struct timeout_case {
    kiln_term srv;
    int rc;
    int late; /* KILN_OK if anything reached the mailbox afterwards */
    int64_t took_ms;
};

static void call_timeout_body(void *arg)
{
    struct timeout_case *t = arg;
    kiln_msg *reply = NULL;
    uint64_t t0 = kiln_now_ms();
    t->rc = kiln_gs_call(NULL, t->srv, kiln_test_msg("{sleep,~i}", (int64_t)300), 50, &reply, NULL);
    t->took_ms = (int64_t)(kiln_now_ms() - t0);
    /* The server replies at ~300 ms: nothing may land here. */
    kiln_sleep(500);
    kiln_msg *m = NULL;
    t->late = kiln_receive(NULL, NULL, 0, &m);
    kiln_msg_free(m);
}

static void test_call_timeout_no_late_reply(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    struct timeout_case t = {.srv = start(rt, &c, NULL)};
    kiln_test_run_in_process(rt, call_timeout_body, &t, 10000);
    assert_int_equal(t.rc, KILN_ETIMEOUT);
    assert_true(t.took_ms >= 50 && t.took_ms < 290);
    assert_int_equal(t.late, KILN_ETIMEOUT);
    /* The server is fine and answered into the void. */
    assert_int_equal(call_int(rt, t.srv, "{add,~i}", 2), 2);
    kiln_rt_stop(rt);
}

static void test_call_noproc(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    kiln_term pid = start(rt, &c, NULL);
    assert_int_equal(kiln_gs_stop_server(rt, pid, A("normal"), 5000), KILN_OK);
    kiln_msg *reply = NULL, *why = NULL;
    uint64_t t0 = kiln_now_ms();
    assert_int_equal(kiln_gs_call(rt, pid, kiln_test_msg("get"), 10000, &reply, &why), KILN_ENOPROC);
    assert_int_equal(kiln_msg_term(why), KILN_ATOM_NOPROC);
    kiln_msg_free(why);
    assert_int_equal(kiln_gs_call(rt, A("no_such_server"), kiln_test_msg("get"), 10000, &reply, NULL),
                     KILN_ENOPROC);
    assert_true(kiln_now_ms() - t0 < 2000); /* at once, not after the timeout */
    /* Casts to dead or unknown servers are not errors. */
    assert_int_equal(kiln_gs_cast(rt, pid, kiln_test_msg("x")), KILN_OK);
    assert_int_equal(kiln_gs_cast(rt, A("no_such_server"), kiln_test_msg("x")), KILN_OK);
    kiln_rt_stop(rt);
}

struct parent_case {
    struct ctl *c;
    kiln_term child;
    int rc;
};

static void parent_body(void *arg)
{
    struct parent_case *p = arg;
    kiln_gs_opts o = {.trap_exit = true};
    p->rc = kiln_gs_start_link(&counter, p->c, &o, &p->child, NULL);
    /* The parent dies; its trapping child runs terminate with the reason. */
    kiln_stop(A("parent_died"));
}

static void test_parent_exit_runs_terminate(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    struct parent_case p = {.c = &c};
    kiln_term pp;
    assert_int_equal(kiln_spawn_fn(rt, parent_body, &p, NULL, &pp), KILN_OK);
    assert_true(kiln_test_wait_flag(&c.terminated, 5000));
    assert_int_equal(p.rc, KILN_OK);
    assert_int_equal(atomic_load(&c.term_reason), A("parent_died"));
    wait_dead(rt, p.child);
    kiln_rt_stop(rt);
}

/* An exit signal from someone other than the parent, trapped: just an info. */
static void test_trapped_exit_from_other_is_info(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {.mode = INIT_TRAP};
    kiln_term pid = start(rt, &c, NULL);
    assert_int_equal(kiln_rt_exit(rt, pid, A("whatever")), KILN_OK);
    assert_true(kiln_test_wait_count(&c.infos, 1, 5000));
    assert_true(kiln_is_alive(rt, pid));
    /* kill cannot be trapped; terminate still runs (Kiln's rule: C state
     * is always freed). */
    assert_int_equal(kiln_rt_exit(rt, pid, KILN_ATOM_KILL), KILN_OK);
    assert_true(kiln_test_wait_flag(&c.terminated, 5000));
    assert_int_equal(atomic_load(&c.term_reason), KILN_ATOM_KILLED);
    kiln_rt_stop(rt);
}

struct link_fail_case {
    int rc;
    kiln_term pid;
    kiln_term why;
    int stray; /* a queued message after start returned */
};

static void link_fail_body(void *arg)
{
    struct link_fail_case *l = arg;
    static struct ctl c = {.mode = INIT_STOP};
    kiln_trap_exit(true);
    kiln_msg *why = NULL;
    l->rc = kiln_gs_start_link(&counter, &c, NULL, &l->pid, &why);
    l->why = why ? kiln_msg_term(why) : KILN_NONE;
    kiln_msg_free(why);
    kiln_msg *m = NULL;
    l->stray = kiln_receive(NULL, NULL, 50, &m);
    kiln_msg_free(m);
}

static void test_start_link_init_stop_trapping(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct link_fail_case l = {0};
    kiln_test_run_in_process(rt, link_fail_body, &l, 5000);
    assert_int_equal(l.rc, KILN_EEXIT);
    assert_int_equal(l.why, A("init_refused"));
    assert_int_equal(l.stray, KILN_ETIMEOUT); /* the 'EXIT' was flushed */
    kiln_rt_stop(rt);
}

static void test_start_link_needs_process(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    kiln_term pid;
    assert_int_equal(kiln_gs_start_link(&counter, &c, NULL, &pid, NULL), KILN_ENOTPROC);
    kiln_rt_stop(rt);
}

static void test_start_timeout(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {.mode = INIT_SLEEP};
    kiln_gs_opts o = {.name = "gs_slow", .timeout_ms = 50};
    kiln_term pid;
    uint64_t t0 = kiln_now_ms();
    assert_int_equal(kiln_gs_start(rt, &counter, &c, &o, &pid, NULL), KILN_ETIMEOUT);
    assert_true(kiln_now_ms() - t0 < 1500);
    /* The slow child was killed: no process, no name. */
    assert_true(kiln_is_none(kiln_whereis(rt, A("gs_slow"))));
    assert_int_equal(kiln_rt_wait_idle(rt, 5000), KILN_OK);
    assert_int_equal(atomic_load(&c.terminated), 0);
    kiln_rt_stop(rt);
}

static void blocking_terminate(void *state, kiln_term reason)
{
    kiln_sleep(400); /* a slow terminate, from the loop: may block */
    srv_terminate(state, reason);
}

static void test_stop_timeout(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    kiln_gen_server slow = counter;
    slow.terminate = blocking_terminate;
    struct ctl c = {0};
    kiln_term pid;
    assert_int_equal(kiln_gs_start(rt, &slow, &c, NULL, &pid, NULL), KILN_OK);
    assert_int_equal(kiln_gs_stop_server(rt, pid, A("normal"), 50), KILN_ETIMEOUT);
    /* It still finishes stopping. */
    assert_true(kiln_test_wait_flag(&c.terminated, 5000));
    wait_dead(rt, pid);
    kiln_rt_stop(rt);
}

static void test_timeout_result(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    /* {ok, State, 20}: handle_info(timeout) when nothing comes. */
    struct ctl c = {.mode = INIT_TIMEOUT};
    kiln_term pid = start(rt, &c, NULL);
    assert_true(kiln_test_wait_count(&c.timeouts, 1, 5000));
    /* A message before the Timeout cancels it. */
    assert_int_equal(kiln_gs_cast(rt, pid, kiln_test_msg("{timeout_me,~i}", (int64_t)300)), KILN_OK);
    assert_true(kiln_test_wait_count(&c.casts, 1, 5000));
    assert_int_equal(kiln_gs_cast(rt, pid, kiln_test_msg("{add,~i}", (int64_t)1)), KILN_OK);
    assert_true(kiln_test_wait_count(&c.casts, 2, 5000));
    struct timespec ts = {0, 600 * 1000000L};
    nanosleep(&ts, NULL);
    assert_int_equal(atomic_load(&c.timeouts), 1);
    /* And one that is left alone fires. */
    assert_int_equal(kiln_gs_cast(rt, pid, kiln_test_msg("{timeout_me,~i}", (int64_t)10)), KILN_OK);
    assert_true(kiln_test_wait_count(&c.timeouts, 2, 5000));
    kiln_rt_stop(rt);
}

static void test_sys_messages(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    kiln_term pid = start(rt, &c, "gs_sys");
    call_int(rt, pid, "{add,~i}", 42);
    kiln_msg *s = NULL;
    assert_int_equal(kiln_sys_get_state(rt, A("gs_sys"), 5000, &s), KILN_OK);
    int64_t n = 0;
    assert_int_equal(kiln_match(kiln_msg_term(s), "{counter,~i}", &n), KILN_OK);
    assert_int_equal(n, 42);
    kiln_msg_free(s);

    assert_int_equal(kiln_sys_get_status(rt, pid, 5000, &s), KILN_OK);
    kiln_term p, misc;
    assert_int_equal(kiln_match(kiln_msg_term(s), "{status,~p,{module,gen_server},[[],running,_,[],~t]}", &p, &misc),
                     KILN_OK);
    assert_true(kiln_term_eq(p, pid));
    assert_int_equal(kiln_list_length(misc), 3);
    kiln_msg_free(s);

    /* Suspended: casts wait, system messages are served. */
    assert_int_equal(kiln_sys_suspend(rt, pid, 5000), KILN_OK);
    assert_int_equal(kiln_gs_cast(rt, pid, kiln_test_msg("{add,~i}", (int64_t)1)), KILN_OK);
    assert_int_equal(kiln_sys_get_status(rt, pid, 5000, &s), KILN_OK);
    assert_int_equal(kiln_match(kiln_msg_term(s), "{status,_,_,[_,suspended|_]}"), KILN_OK);
    kiln_msg_free(s);
    assert_int_equal(atomic_load(&c.casts), 0);
    assert_int_equal(kiln_sys_resume(rt, pid, 5000), KILN_OK);
    assert_true(kiln_test_wait_count(&c.casts, 1, 5000));
    assert_int_equal(call_int(rt, pid, "{add,~i}", 0), 43);
    kiln_rt_stop(rt);
}

/* What Erlang's gen_server:call/cast and sys send, byte for byte in term
 * form, with old-style plain reference tags. */
struct wire_case {
    kiln_term srv;
    int ok_call, ok_sys, ok_unknown;
};

static bool tagged(kiln_term t, void *ref)
{
    return kiln_is_tuple(t) && kiln_tuple_arity(t) == 2 && kiln_term_eq(kiln_tuple_get(t, 0), *(kiln_term *)ref);
}

static void wire_body(void *arg)
{
    struct wire_case *w = arg;
    kiln_msg *refm = kiln_msg_new(64);
    kiln_term ref = kiln_make_ref(refm);
    kiln_msg *m;

    kiln_send(w->srv, kiln_test_msg("{'$gen_cast',{add,~i}}", (int64_t)3));
    kiln_send(w->srv, kiln_test_msg("{'$gen_call',{~p,~t},{add,~i}}", kiln_self(), ref, (int64_t)4));
    if (kiln_receive(tagged, &ref, 5000, &m) == KILN_OK) {
        int64_t v = 0;
        w->ok_call = kiln_get_int64(kiln_tuple_get(kiln_msg_term(m), 1), &v) == KILN_OK && v == 7;
        kiln_msg_free(m);
    }
    kiln_send(w->srv, kiln_test_msg("{system,{~p,~t},get_state}", kiln_self(), ref));
    if (kiln_receive(tagged, &ref, 5000, &m) == KILN_OK) {
        w->ok_sys = kiln_match(kiln_tuple_get(kiln_msg_term(m), 1), "{ok,{counter,7}}") == KILN_OK;
        kiln_msg_free(m);
    }
    kiln_send(w->srv, kiln_test_msg("{system,{~p,~t},frobnicate}", kiln_self(), ref));
    if (kiln_receive(tagged, &ref, 5000, &m) == KILN_OK) {
        w->ok_unknown =
            kiln_match(kiln_tuple_get(kiln_msg_term(m), 1), "{error,{unknown_system_msg,frobnicate}}") == KILN_OK;
        kiln_msg_free(m);
    }
    kiln_msg_free(refm);
}

static void test_wire_format(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    struct wire_case w = {.srv = start(rt, &c, NULL)};
    kiln_test_run_in_process(rt, wire_body, &w, 10000);
    assert_true(w.ok_call);
    assert_true(w.ok_sys);
    assert_true(w.ok_unknown);
    kiln_rt_stop(rt);
}

static void test_bad_call_without_handler(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    kiln_gen_server castonly = counter;
    castonly.handle_call = NULL;
    struct ctl c = {0};
    kiln_term pid;
    assert_int_equal(kiln_gs_start(rt, &castonly, &c, NULL, &pid, NULL), KILN_OK);
    kiln_msg *reply = NULL, *why = NULL;
    assert_int_equal(kiln_gs_call(rt, pid, kiln_test_msg("get"), 5000, &reply, &why), KILN_EEXIT);
    assert_int_equal(kiln_match(kiln_msg_term(why), "{bad_call,get}"), KILN_OK);
    kiln_msg_free(why);
    assert_int_equal(atomic_load(&c.term_reason), A("bad_call"));
    kiln_rt_stop(rt);
}

/* Servers left running are terminated by runtime stop: terminate frees. */
static void test_runtime_stop_terminates(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c[8] = {{0}};
    for (int i = 0; i < 8; i++)
        start(rt, &c[i], NULL);
    kiln_rt_stop(rt);
    for (int i = 0; i < 8; i++)
        assert_int_equal(atomic_load(&c[i].terminated), 1);
}

/* A terminate that blocks for good, run from the loop by {stop, Reason,
 * Reply}, is killed by runtime stop: what the server loop allocated for the
 * stop (the reason's and the reply's copies) must go with it (ASan's leak
 * check is the assertion; without ASan the test checks the order). */
static void stuck_terminate(void *state, kiln_term reason)
{
    srv_terminate(state, reason); /* frees the user's state first */
    kiln_sleep(1000000);
}

static void test_killed_in_terminate_leaks_nothing(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    kiln_gen_server stuck = counter;
    stuck.terminate = stuck_terminate;
    struct ctl c = {0};
    kiln_term pid;
    assert_int_equal(kiln_gs_start(rt, &stuck, &c, NULL, &pid, NULL), KILN_OK);
    kiln_msg *reply = NULL;
    /* The reply goes out after terminate, which never finishes. */
    assert_int_equal(kiln_gs_call(rt, pid, kiln_test_msg("{stop,~a}", "going"), 200, &reply, NULL), KILN_ETIMEOUT);
    assert_true(kiln_test_wait_flag(&c.terminated, 5000));
    assert_true(kiln_is_alive(rt, pid));
    kiln_rt_stop(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_call_cast_info_stop),
        cmocka_unit_test(test_named_start),
        cmocka_unit_test(test_init_stop_and_ignore),
        cmocka_unit_test(test_continue),
        cmocka_unit_test(test_noreply_then_reply),
        cmocka_unit_test(test_stop_with_reply),
        cmocka_unit_test(test_call_timeout_no_late_reply),
        cmocka_unit_test(test_call_noproc),
        cmocka_unit_test(test_parent_exit_runs_terminate),
        cmocka_unit_test(test_trapped_exit_from_other_is_info),
        cmocka_unit_test(test_start_link_init_stop_trapping),
        cmocka_unit_test(test_start_link_needs_process),
        cmocka_unit_test(test_start_timeout),
        cmocka_unit_test(test_stop_timeout),
        cmocka_unit_test(test_timeout_result),
        cmocka_unit_test(test_sys_messages),
        cmocka_unit_test(test_wire_format),
        cmocka_unit_test(test_bad_call_without_handler),
        cmocka_unit_test(test_runtime_stop_terminates),
        cmocka_unit_test(test_killed_in_terminate_leaks_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
