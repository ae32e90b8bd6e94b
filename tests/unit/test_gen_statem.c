/* gen_statem semantics, after OTP's gen_statem_SUITE: postponed events
 * replayed in order after a state change (and not after same-state
 * transitions), state enter calls with the right old state, event
 * timeouts cancelled by any event, state timeouts cancelled by a state
 * change only, generic timeouts by name, zero timeouts, next_event
 * ordering, reply actions, stop_and_reply, init ok/stop/ignore, call
 * timeouts, sys, the wire format, state_functions mode.
 *
 * Most tests drive one scripted machine (handle_event_function): a list
 * event is a list of commands ([{goto,S}], [{tmo,Ms,C}], ...); any other
 * event is logged and, in state hold, postponed; a non-command call is
 * answered {done, Req}. The machine logs every event as type:content@state
 * and the tests read that log with sys:get_state, which is not an event
 * and so leaves the event timeout alone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln/gen_statem.h"
#include "kiln/supervisor.h"
#include "testutil.h"

static kiln_term A(const char *s) { return kiln_atom_c(s); }

/* ---- the scripted machine ---- */

enum init_mode { INIT_OK, INIT_STOP, INIT_IGNORE, INIT_INSERT, INIT_POSTPONE };

struct ctl {
    enum init_mode mode;
    const char *init_state; /* NULL: idle */
    int term_sleep_ms;      /* terminate sleeps first (only when stopped from the loop) */
    bool term_stuck;        /* terminate blocks for good after freeing */
    _Atomic int terminated;
    _Atomic uint64_t term_reason; /* an atom, or a tuple reason's first element */
    _Atomic uint64_t term_state;
    _Atomic int inits;
};

struct data {
    struct ctl *c;
    kiln_msg *kept; /* a deferred call's From */
    size_t len;
    char log[4096];
};

static void log_add(struct data *d, const char *type, kiln_term content, kiln_term state)
{
    char c[256], s[64];
    kiln_term_print(c, sizeof(c), content);
    kiln_term_print(s, sizeof(s), state);
    int n = snprintf(d->log + d->len, sizeof(d->log) - d->len, "%s%s:%s@%s", d->len ? " " : "", type, c, s);
    if (n > 0 && (size_t)n < sizeof(d->log) - d->len)
        d->len += (size_t)n;
}

static void log_event(struct data *d, const kiln_gsm_event *ev, kiln_term state)
{
    static const char *names[] = {"?", "call", "cast", "info", "internal", "timeout", "state_timeout", "?", "enter"};
    char type[80];
    if (ev->type == KILN_GSM_GENERIC_TIMEOUT) {
        char n[48];
        kiln_term_print(n, sizeof(n), ev->name);
        snprintf(type, sizeof(type), "{timeout,%s}", n);
    } else {
        snprintf(type, sizeof(type), "%s", names[ev->type]);
    }
    log_add(d, type, ev->content, state);
}

/* One command of a list event; r is the result so far. */
static kiln_gsm_ret run_cmd(kiln_gsm *sm, struct data *d, const kiln_gsm_event *ev, kiln_term state, kiln_term cmd,
                            kiln_gsm_ret r)
{
    kiln_term a, b, c;
    int64_t ms;
    if (kiln_match(cmd, "{goto,~t}", &a) == KILN_OK)
        return kiln_gsm_next_state(a);
    if (cmd == A("same"))
        return kiln_gsm_next_state(state);
    if (cmd == A("repeat"))
        return kiln_gsm_repeat_state();
    if (cmd == A("postpone")) {
        kiln_gsm_postpone(sm);
    } else if (kiln_match(cmd, "{insert,~t}", &a) == KILN_OK) {
        for (; kiln_is_cons(a); a = kiln_tl(a))
            assert_int_equal(kiln_gsm_next_event(sm, KILN_GSM_INTERNAL, kiln_hd(a)), KILN_OK);
    } else if (kiln_match(cmd, "{tmo,~i,~t}", &ms, &a) == KILN_OK) {
        kiln_gsm_event_timeout(sm, ms, a);
    } else if (kiln_match(cmd, "{stmo,~i,~t}", &ms, &a) == KILN_OK) {
        kiln_gsm_state_timeout(sm, ms, a);
    } else if (kiln_match(cmd, "{gtmo,~t,~i,~t}", &a, &ms, &b) == KILN_OK) {
        kiln_gsm_generic_timeout(sm, a, ms, b);
    } else if (kiln_match(cmd, "{stop,~t}", &a) == KILN_OK) {
        return kiln_gsm_stop(a);
    } else if (kiln_match(cmd, "{stop_reply,~t,~t}", &a, &b) == KILN_OK) {
        kiln_gsm_reply(sm, ev->from, b);
        return kiln_gsm_stop_and_reply(a);
    } else if (kiln_match(cmd, "{reply,~t}", &a) == KILN_OK) {
        kiln_gsm_reply(sm, ev->from, a);
    } else if (cmd == A("defer")) {
        d->kept = kiln_gs_from_keep(ev->from);
    } else if (cmd == A("release") && d->kept) {
        kiln_gen_reply(kiln_msg_term(d->kept), A("released"));
        kiln_msg_free(d->kept);
        d->kept = NULL;
    } else if (kiln_match(cmd, "{sleep,~i}", &ms) == KILN_OK) {
        kiln_sleep((uint64_t)ms);
    } else if (kiln_match(cmd, "{insert_call,~t,~t}", &a, &c) == KILN_OK) {
        /* next_event {call, From}: From is this call's, so the inserted
         * event answers it. */
        (void)a;
        kiln_gsm_event ne = {KILN_GSM_CALL, c, ev->from, KILN_NONE};
        assert_int_equal(kiln_gsm_insert_event(sm, &ne), KILN_OK);
    }
    return r;
}

static kiln_gsm_ret enter(kiln_gsm *sm, struct data *d, kiln_term old, kiln_term state)
{
    if (state == A("bad_enter"))
        return kiln_gsm_next_state(A("elsewhere"));
    if (state == A("bad_enter_postpone"))
        kiln_gsm_postpone(sm);
    if (state == A("enter_stmo"))
        kiln_gsm_state_timeout(sm, 30, A("entered"));
    if (state == A("enter_repeat") && old != state)
        return kiln_gsm_repeat_state();
    if (state == A("enter_same"))
        return kiln_gsm_next_state(state); /* allowed: not a change */
    return kiln_gsm_keep_state();
}

static kiln_gsm_ret handle(kiln_gsm *sm, const kiln_gsm_event *ev, kiln_term state, void *data)
{
    struct data *d = data;
    log_event(d, ev, state);
    if (ev->type == KILN_GSM_ENTER)
        return enter(sm, d, ev->content, state);
    kiln_gsm_ret r = kiln_gsm_keep_state();
    if (kiln_is_list(ev->content)) {
        for (kiln_term l = ev->content; kiln_is_cons(l); l = kiln_tl(l))
            r = run_cmd(sm, d, ev, state, kiln_hd(l), r);
        return r;
    }
    if (state == A("hold")) {
        kiln_gsm_postpone(sm);
        return r;
    }
    if (ev->type == KILN_GSM_CALL) {
        kiln_msg *m = kiln_msg_new(64);
        kiln_term t = kiln_tuple(m, 2, A("done"), kiln_term_copy(m, ev->content));
        kiln_gsm_reply(sm, ev->from, t);
        kiln_msg_free(m); /* the reply action copied it */
    }
    return r;
}

static kiln_gsm_ret sm_init(kiln_gsm *sm, void *arg, void **data)
{
    struct ctl *c = arg;
    atomic_fetch_add(&c->inits, 1);
    if (c->mode == INIT_STOP)
        return kiln_gsm_stop(A("init_refused"));
    if (c->mode == INIT_IGNORE)
        return kiln_gsm_ignore();
    struct data *d = calloc(1, sizeof(*d));
    d->c = c;
    *data = d;
    if (c->mode == INIT_INSERT) {
        kiln_gsm_next_event(sm, KILN_GSM_INTERNAL, A("boot1"));
        kiln_gsm_next_event(sm, KILN_GSM_INTERNAL, A("boot2"));
    }
    if (c->mode == INIT_POSTPONE)
        assert_int_equal(kiln_gsm_postpone(sm), KILN_EINVAL);
    return kiln_gsm_ok(A(c->init_state ? c->init_state : "idle"));
}

static void sm_terminate(void *data, kiln_term state, kiln_term reason)
{
    struct data *d = data;
    struct ctl *c = d->c;
    if (c->term_sleep_ms)
        kiln_sleep((uint64_t)c->term_sleep_ms);
    kiln_msg_free(d->kept);
    free(d);
    atomic_store(&c->term_reason, kiln_is_tuple(reason) ? kiln_tuple_get(reason, 0) : reason);
    atomic_store(&c->term_state, state);
    atomic_store(&c->terminated, 1);
    if (c->term_stuck)
        kiln_sleep(1000000);
}

static kiln_term sm_format(void *data, kiln_msg *m)
{
    struct data *d = data;
    return kiln_binary(m, d->log, d->len);
}

static const kiln_gen_statem scripted = {
    .name = "scripted",
    .init = sm_init,
    .handle_event = handle,
    .terminate = sm_terminate,
    .format_data = sm_format,
};

static const kiln_gen_statem scripted_enter = {
    .name = "scripted_enter",
    .init = sm_init,
    .handle_event = handle,
    .state_enter = true,
    .terminate = sm_terminate,
    .format_data = sm_format,
};

/* ---- helpers ---- */

static void msleep(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static kiln_term start(kiln_rt *rt, const kiln_gen_statem *sm, struct ctl *c, const char *name)
{
    kiln_gs_opts o = {.name = name};
    kiln_term pid = KILN_NONE;
    assert_int_equal(kiln_gsm_start(rt, sm, c, &o, &pid, NULL), KILN_OK);
    assert_true(kiln_is_local_pid(pid));
    return pid;
}

static void cast(kiln_rt *rt, kiln_term pid, const char *fmt)
{
    assert_int_equal(kiln_gsm_cast(rt, pid, kiln_test_msg(fmt)), KILN_OK);
}

/* The machine's log and state, through sys:get_state. */
static void read_log(kiln_rt *rt, kiln_term pid, char *buf, size_t n, kiln_term *state)
{
    kiln_msg *m = NULL;
    assert_int_equal(kiln_sys_get_state(rt, pid, 5000, &m), KILN_OK);
    kiln_term st;
    const uint8_t *b;
    size_t len;
    assert_int_equal(kiln_match(kiln_msg_term(m), "{~t,~b}", &st, &b, &len), KILN_OK);
    snprintf(buf, n, "%.*s", (int)len, (const char *)b);
    if (state)
        *state = st; /* tests keep atom states only */
    kiln_msg_free(m);
}

/* Wait until the log contains needle (up to ms); returns the log. */
static const char *wait_log(kiln_rt *rt, kiln_term pid, const char *needle, int ms)
{
    static char buf[4096];
    for (int i = 0; i <= ms; i += 5) {
        read_log(rt, pid, buf, sizeof(buf), NULL);
        if (strstr(buf, needle))
            return buf;
        msleep(5);
    }
    fprintf(stderr, "log lacks \"%s\": %s\n", needle, buf);
    fail();
    return buf;
}

static void expect_log(kiln_rt *rt, kiln_term pid, const char *expected)
{
    char buf[4096];
    read_log(rt, pid, buf, sizeof(buf), NULL);
    assert_string_equal(buf, expected);
}

static kiln_term call_term(kiln_rt *rt, kiln_term pid, const char *req, char *out, size_t n)
{
    kiln_msg *reply = NULL;
    assert_int_equal(kiln_gsm_call(rt, pid, kiln_test_msg(req), 5000, &reply, NULL), KILN_OK);
    kiln_term t = kiln_msg_term(reply);
    kiln_term_print(out, n, t);
    kiln_msg_free(reply);
    return t;
}

/* A call from another process, reported through the struct. */
struct caller {
    kiln_term srv;
    const char *req;
    int64_t timeout_ms;
    int late_wait_ms; /* after a timeout: wait, then check nothing arrived */
    int rc;
    int late;
    char reply[128];
    _Atomic int done;
};

static void caller_body(void *arg)
{
    struct caller *c = arg;
    kiln_msg *reply = NULL;
    c->rc = kiln_gsm_call(NULL, c->srv, kiln_test_msg(c->req), c->timeout_ms ? c->timeout_ms : 5000, &reply, NULL);
    if (c->rc == KILN_OK)
        kiln_term_print(c->reply, sizeof(c->reply), kiln_msg_term(reply));
    kiln_msg_free(reply);
    if (c->late_wait_ms) {
        kiln_sleep((uint64_t)c->late_wait_ms);
        kiln_msg *m = NULL;
        c->late = kiln_receive(NULL, NULL, 0, &m);
        kiln_msg_free(m);
    }
    atomic_store(&c->done, 1);
}

static void spawn_caller(kiln_rt *rt, struct caller *c)
{
    kiln_term p;
    assert_int_equal(kiln_spawn_fn(rt, caller_body, c, NULL, &p), KILN_OK);
}

/* ---- tests ---- */

static void test_call_cast_info_stop(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    kiln_term pid = start(rt, &scripted, &c, NULL);
    char out[128];
    call_term(rt, pid, "hello", out, sizeof(out));
    assert_string_equal(out, "{done,hello}");
    cast(rt, pid, "c1");
    assert_int_equal(kiln_rt_send(rt, pid, kiln_test_msg("i1")), KILN_OK);
    /* A reply action together with a state change. */
    call_term(rt, pid, "[{goto,busy},{reply,ok}]", out, sizeof(out));
    assert_string_equal(out, "ok");
    kiln_term state;
    char log[4096];
    read_log(rt, pid, log, sizeof(log), &state);
    assert_int_equal(state, A("busy"));
    assert_string_equal(log, "call:hello@idle cast:c1@idle info:i1@idle call:[{goto,busy},{reply,ok}]@idle");
    /* gen_statem:stop: terminate gets the reason and the current state. */
    assert_int_equal(kiln_gsm_stop_server(rt, pid, A("normal"), 5000), KILN_OK);
    assert_false(kiln_is_alive(rt, pid));
    assert_int_equal(atomic_load(&c.terminated), 1);
    assert_int_equal(atomic_load(&c.term_reason), KILN_ATOM_NORMAL);
    assert_int_equal(atomic_load(&c.term_state), A("busy"));
    assert_int_equal(kiln_gsm_stop_server(rt, pid, A("normal"), 5000), KILN_ENOPROC);
    kiln_rt_stop(rt);
}

static void test_postpone_replays_in_order(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    kiln_term pid = start(rt, &scripted, &c, NULL);
    cast(rt, pid, "[{goto,hold}]");
    /* A postponed call is answered once it is handled in another state. */
    struct caller k = {.srv = pid, .req = "pc"};
    spawn_caller(rt, &k);
    wait_log(rt, pid, "call:pc@hold", 5000);
    cast(rt, pid, "a");
    assert_int_equal(kiln_rt_send(rt, pid, kiln_test_msg("b")), KILN_OK);
    /* Transitions to the same state, even repeat_state, replay nothing. */
    cast(rt, pid, "[same]");
    cast(rt, pid, "[repeat]");
    wait_log(rt, pid, "cast:[repeat]@hold", 5000);
    assert_int_equal(atomic_load(&k.done), 0);
    /* The state change replays them, oldest first, before newer events. */
    cast(rt, pid, "[{goto,run}]");
    cast(rt, pid, "e");
    assert_true(kiln_test_wait_flag(&k.done, 5000));
    assert_int_equal(k.rc, KILN_OK);
    assert_string_equal(k.reply, "{done,pc}");
    wait_log(rt, pid, "cast:e@run", 5000);
    expect_log(rt, pid,
               "cast:[{goto,hold}]@idle call:pc@hold cast:a@hold info:b@hold cast:[same]@hold cast:[repeat]@hold "
               "cast:[{goto,run}]@hold call:pc@run cast:a@run info:b@run cast:e@run");
    kiln_rt_stop(rt);
}

static void test_postpone_current_event_on_change(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    kiln_term pid = start(rt, &scripted, &c, NULL);
    /* An event postponed by the transition that changes the state is
     * retried at once in the new state, after the older postponed ones. */
    cast(rt, pid, "[{goto,hold}]");
    cast(rt, pid, "a");
    cast(rt, pid, "[postpone,{goto,s2}]");
    cast(rt, pid, "z");
    wait_log(rt, pid, "cast:z@s2", 5000);
    expect_log(rt, pid,
               "cast:[{goto,hold}]@idle cast:a@hold cast:[postpone,{goto,s2}]@hold cast:a@s2 "
               "cast:[postpone,{goto,s2}]@s2 cast:z@s2");
    kiln_rt_stop(rt);
}

static void test_state_enter(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {.init_state = "s1"};
    kiln_term pid = start(rt, &scripted_enter, &c, NULL);
    cast(rt, pid, "[{goto,s2}]");
    cast(rt, pid, "[same]");
    cast(rt, pid, "[repeat]");
    cast(rt, pid, "[{goto,enter_repeat}]");
    cast(rt, pid, "[{goto,enter_same}]");
    /* The enter call comes before the inserted events and the postponed. */
    cast(rt, pid, "[{goto,hold}]");
    cast(rt, pid, "p");
    cast(rt, pid, "[{insert,[n1]},{goto,s3}]");
    wait_log(rt, pid, "cast:p@s3", 5000);
    expect_log(rt, pid,
               "enter:s1@s1 "                                     /* initial: OldState = State */
               "cast:[{goto,s2}]@s1 enter:s1@s2 "                 /* change: the old state */
               "cast:[same]@s2 "                                  /* same state: no enter call */
               "cast:[repeat]@s2 enter:s2@s2 "                    /* repeat_state: enter again */
               "cast:[{goto,enter_repeat}]@s2 enter:s2@enter_repeat enter:enter_repeat@enter_repeat "
               "cast:[{goto,enter_same}]@enter_repeat enter:enter_repeat@enter_same "
               "cast:[{goto,hold}]@enter_same enter:enter_same@hold cast:p@hold "
               "cast:[{insert,[n1]},{goto,s3}]@hold enter:hold@s3 internal:n1@s3 cast:p@s3");

    /* An enter call may not change the state. */
    cast(rt, pid, "[{goto,bad_enter}]");
    assert_true(kiln_test_wait_flag(&c.terminated, 5000));
    assert_int_equal(atomic_load(&c.term_reason), A("bad_state_enter_return_from_state_function"));
    assert_int_equal(atomic_load(&c.term_state), A("bad_enter"));

    /* Nor postpone. */
    struct ctl c2 = {0};
    pid = start(rt, &scripted_enter, &c2, NULL);
    cast(rt, pid, "[{goto,bad_enter_postpone}]");
    assert_true(kiln_test_wait_flag(&c2.terminated, 5000));
    assert_int_equal(atomic_load(&c2.term_reason), A("bad_state_enter_action_from_state_function"));
    kiln_rt_stop(rt);
}

static void test_enter_sets_state_timeout(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    kiln_term pid = start(rt, &scripted_enter, &c, NULL);
    cast(rt, pid, "[{goto,enter_stmo}]");
    wait_log(rt, pid, "state_timeout:entered@enter_stmo", 5000);
    expect_log(rt, pid, "enter:idle@idle cast:[{goto,enter_stmo}]@idle enter:idle@enter_stmo "
                        "state_timeout:entered@enter_stmo");
    kiln_rt_stop(rt);
}

static void test_next_event_order(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    kiln_term pid = start(rt, &scripted, &c, NULL);
    /* Messages already in the mailbox wait for the inserted events: the
     * machine is suspended while they are queued. */
    assert_int_equal(kiln_sys_suspend(rt, pid, 5000), KILN_OK);
    cast(rt, pid, "[{insert,[i1,i2]}]");
    cast(rt, pid, "c1");
    cast(rt, pid, "c2");
    assert_int_equal(kiln_sys_resume(rt, pid, 5000), KILN_OK);
    wait_log(rt, pid, "cast:c2@idle", 5000);
    expect_log(rt, pid, "cast:[{insert,[i1,i2]}]@idle internal:i1@idle internal:i2@idle cast:c1@idle cast:c2@idle");

    /* An inserted event's own next_event goes ahead of the rest already
     * inserted; inserted events go ahead of replayed postponed ones. */
    struct ctl c2 = {0};
    pid = start(rt, &scripted, &c2, NULL);
    cast(rt, pid, "[{insert,[[{insert,[x]}],y]}]");
    cast(rt, pid, "[{goto,hold}]");
    cast(rt, pid, "a");
    cast(rt, pid, "[{insert,[n1,n2]},{goto,run}]");
    cast(rt, pid, "last");
    wait_log(rt, pid, "cast:last@run", 5000);
    expect_log(rt, pid,
               "cast:[{insert,[[{insert,[x]}],y]}]@idle internal:[{insert,[x]}]@idle internal:x@idle "
               "internal:y@idle cast:[{goto,hold}]@idle cast:a@hold cast:[{insert,[n1,n2]},{goto,run}]@hold "
               "internal:n1@run internal:n2@run cast:a@run cast:last@run");

    /* next_event {call, From}: the inserted call is answered. */
    char out[64];
    call_term(rt, pid, "[{insert_call,x,inner}]", out, sizeof(out));
    assert_string_equal(out, "{done,inner}");
    kiln_rt_stop(rt);
}

static void test_event_timeout(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    kiln_term pid = start(rt, &scripted, &c, NULL);
    /* Fires when nothing comes (sys:get_state polling is no event). */
    cast(rt, pid, "[{tmo,30,t1}]");
    wait_log(rt, pid, "timeout:t1@idle", 5000);
    /* Any event cancels it: a plain cast, */
    cast(rt, pid, "[{tmo,300,t2}]");
    cast(rt, pid, "x");
    /* a postponed event, */
    cast(rt, pid, "[{goto,hold},{tmo,300,t3}]");
    cast(rt, pid, "a");
    /* or another timeout firing. */
    cast(rt, pid, "[{goto,s2}]");
    cast(rt, pid, "[{stmo,20,st},{tmo,300,t4}]");
    wait_log(rt, pid, "state_timeout:st@s2", 5000);
    /* Infinity starts none. */
    cast(rt, pid, "[{tmo,-1,never}]");
    msleep(600);
    expect_log(rt, pid,
               "cast:[{tmo,30,t1}]@idle timeout:t1@idle cast:[{tmo,300,t2}]@idle cast:x@idle "
               "cast:[{goto,hold},{tmo,300,t3}]@idle cast:a@hold cast:[{goto,s2}]@hold cast:a@s2 "
               "cast:[{stmo,20,st},{tmo,300,t4}]@s2 state_timeout:st@s2 cast:[{tmo,-1,never}]@s2");
    kiln_rt_stop(rt);
}

static void test_zero_timeouts(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    kiln_term pid = start(rt, &scripted, &c, NULL);
    /* A zero timeout fires before messages not yet handled. */
    assert_int_equal(kiln_sys_suspend(rt, pid, 5000), KILN_OK);
    cast(rt, pid, "[{tmo,0,z}]");
    cast(rt, pid, "[{stmo,0,sz},{gtmo,g,0,gz}]");
    cast(rt, pid, "c");
    assert_int_equal(kiln_sys_resume(rt, pid, 5000), KILN_OK);
    wait_log(rt, pid, "cast:c@idle", 5000);
    /* With events queued, an event timeout is not started (the first
     * event would cancel it); a state timeout 0 queued behind an event
     * that changes the state is cancelled by that change. */
    cast(rt, pid, "[{insert,[n]},{tmo,0,never}]");
    cast(rt, pid, "[{insert,[[{goto,s2}]]},{stmo,0,never2}]");
    cast(rt, pid, "fin");
    wait_log(rt, pid, "cast:fin@s2", 5000);
    msleep(50);
    expect_log(rt, pid,
               "cast:[{tmo,0,z}]@idle timeout:z@idle cast:[{stmo,0,sz},{gtmo,g,0,gz}]@idle state_timeout:sz@idle "
               "{timeout,g}:gz@idle cast:c@idle cast:[{insert,[n]},{tmo,0,never}]@idle internal:n@idle "
               "cast:[{insert,[[{goto,s2}]]},{stmo,0,never2}]@idle internal:[{goto,s2}]@idle cast:fin@s2");
    kiln_rt_stop(rt);
}

static void test_state_timeout(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    kiln_term pid = start(rt, &scripted, &c, NULL);
    /* Not cancelled by events or by transitions to the same state. */
    cast(rt, pid, "[{stmo,200,st1}]");
    cast(rt, pid, "x");
    cast(rt, pid, "[same]");
    cast(rt, pid, "[repeat]");
    const char *log = wait_log(rt, pid, "state_timeout:st1@idle", 5000);
    assert_non_null(strstr(log, "cast:[repeat]@idle state_timeout:st1@idle"));
    /* Cancelled by a state change. */
    cast(rt, pid, "[{stmo,200,st2}]");
    cast(rt, pid, "[{goto,s2}]");
    /* Restarted by a new one; cancelled by infinity. */
    cast(rt, pid, "[{stmo,5000,st3}]");
    cast(rt, pid, "[{stmo,30,st4}]");
    wait_log(rt, pid, "state_timeout:st4@s2", 5000);
    cast(rt, pid, "[{stmo,100,st5}]");
    cast(rt, pid, "[{stmo,-1,x}]");
    /* One set by the transition that changes the state runs in the new state. */
    cast(rt, pid, "[{goto,s3},{stmo,30,st6}]");
    wait_log(rt, pid, "state_timeout:st6@s3", 5000);
    msleep(400);
    char buf[4096];
    read_log(rt, pid, buf, sizeof(buf), NULL);
    assert_null(strstr(buf, "st2@"));
    assert_null(strstr(buf, "st3@"));
    assert_null(strstr(buf, "st5@"));
    kiln_rt_stop(rt);
}

static void test_generic_timeouts(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    kiln_term pid = start(rt, &scripted, &c, NULL);
    /* Named timers run side by side, past events and state changes. */
    cast(rt, pid, "[{gtmo,g1,250,c1},{gtmo,g2,40,c2}]");
    cast(rt, pid, "[{goto,s2}]");
    cast(rt, pid, "x");
    const char *log = wait_log(rt, pid, "{timeout,g1}:c1@s2", 5000);
    const char *p2 = strstr(log, "{timeout,g2}:c2@s2"), *p1 = strstr(log, "{timeout,g1}:c1@s2");
    assert_non_null(p2);
    assert_true(p2 < p1);
    /* The same name restarts the timer; a negative time cancels it. */
    cast(rt, pid, "[{gtmo,g3,5000,old}]");
    cast(rt, pid, "[{gtmo,g3,30,new}]");
    cast(rt, pid, "[{gtmo,g4,100,x},{gtmo,g4,-1,x}]");
    cast(rt, pid, "[{gtmo,g5,100,y}]");
    cast(rt, pid, "[{gtmo,g5,-1,y}]");
    /* Any term can name one. */
    cast(rt, pid, "[{gtmo,{my,1},20,tuple_named}]");
    wait_log(rt, pid, "{timeout,g3}:new@s2", 5000);
    wait_log(rt, pid, "{timeout,{my,1}}:tuple_named@s2", 5000);
    msleep(400);
    char buf[4096];
    read_log(rt, pid, buf, sizeof(buf), NULL);
    assert_null(strstr(buf, ":old@"));
    assert_null(strstr(buf, "{timeout,g4}"));
    assert_null(strstr(buf, "{timeout,g5}"));
    kiln_rt_stop(rt);
}

static void test_reply_actions(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    kiln_term pid = start(rt, &scripted, &c, NULL);
    char out[64];
    call_term(rt, pid, "[{reply,r1}]", out, sizeof(out));
    assert_string_equal(out, "r1");
    /* A deferred reply: From kept, answered by a later event
     * (gen_statem:reply/2). */
    struct caller k = {.srv = pid, .req = "[defer]"};
    spawn_caller(rt, &k);
    wait_log(rt, pid, "call:[defer]@idle", 5000);
    assert_int_equal(atomic_load(&k.done), 0);
    cast(rt, pid, "[release]");
    assert_true(kiln_test_wait_flag(&k.done, 5000));
    assert_int_equal(k.rc, KILN_OK);
    assert_string_equal(k.reply, "released");
    kiln_rt_stop(rt);
}

static void test_stop_and_reply(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {.term_sleep_ms = 300};
    kiln_term pid = start(rt, &scripted, &c, NULL);
    char out[64];
    call_term(rt, pid, "[{stop_reply,bye,see_you}]", out, sizeof(out));
    assert_string_equal(out, "see_you");
    /* OTP's gen_statem order: the replies go out before terminate. */
    assert_int_equal(atomic_load(&c.terminated), 0);
    assert_true(kiln_test_wait_flag(&c.terminated, 5000));
    assert_int_equal(atomic_load(&c.term_reason), A("bye"));
    for (int i = 0; i < 5000 && kiln_is_alive(rt, pid); i++)
        msleep(1);
    assert_false(kiln_is_alive(rt, pid));

    /* A plain stop during a call: the caller sees the exit. */
    struct ctl c2 = {0};
    pid = start(rt, &scripted, &c2, NULL);
    kiln_msg *reply = NULL, *why = NULL;
    assert_int_equal(kiln_gsm_call(rt, pid, kiln_test_msg("[{stop,{shutdown,crashed}}]"), 5000, &reply, &why),
                     KILN_EEXIT);
    assert_int_equal(kiln_match(kiln_msg_term(why), "{shutdown,crashed}"), KILN_OK);
    kiln_msg_free(why);
    assert_int_equal(atomic_load(&c2.term_reason), KILN_ATOM_SHUTDOWN);
    kiln_rt_stop(rt);
}

/* A terminate that blocks for good is killed by runtime stop: the stop's
 * copy of the reason must go with the machine (ASan's leak check). */
static void test_killed_in_terminate_leaks_nothing(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {.term_stuck = true};
    kiln_term pid = start(rt, &scripted, &c, NULL);
    cast(rt, pid, "[{stop,{shutdown,going}}]");
    assert_true(kiln_test_wait_flag(&c.terminated, 5000));
    assert_true(kiln_is_alive(rt, pid));
    kiln_rt_stop(rt);
}

static void test_init_results(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    kiln_gs_opts o = {.name = "gsm_init"};
    /* {stop, Reason}: {error, Reason}; no terminate; the name is free. */
    struct ctl c = {.mode = INIT_STOP};
    kiln_term pid = A("x");
    kiln_msg *why = NULL;
    assert_int_equal(kiln_gsm_start(rt, &scripted, &c, &o, &pid, &why), KILN_EEXIT);
    assert_int_equal(kiln_msg_term(why), A("init_refused"));
    kiln_msg_free(why);
    assert_true(kiln_is_none(pid));
    assert_true(kiln_is_none(kiln_whereis(rt, A("gsm_init"))));
    assert_int_equal(atomic_load(&c.terminated), 0);
    /* ignore */
    struct ctl c2 = {.mode = INIT_IGNORE};
    pid = A("x");
    assert_int_equal(kiln_gsm_start(rt, &scripted, &c2, &o, &pid, NULL), KILN_OK);
    assert_true(kiln_is_none(pid));
    assert_int_equal(atomic_load(&c2.terminated), 0);
    /* {ok, State, Data, [{next_event, ...}]}: after the enter call. */
    struct ctl c3 = {.mode = INIT_INSERT};
    pid = start(rt, &scripted_enter, &c3, "gsm_init");
    wait_log(rt, pid, "internal:boot2@idle", 5000);
    expect_log(rt, pid, "enter:idle@idle internal:boot1@idle internal:boot2@idle");
    /* already_started */
    struct ctl c4 = {0};
    kiln_term other = KILN_NONE;
    assert_int_equal(kiln_gsm_start(rt, &scripted, &c4, &o, &other, NULL), KILN_ENAME_TAKEN);
    assert_true(kiln_term_eq(other, pid));
    assert_int_equal(atomic_load(&c4.inits), 0);
    char out[64];
    call_term(rt, A("gsm_init"), "byname", out, sizeof(out));
    assert_string_equal(out, "{done,byname}");
    /* postpone in init: started, then stops with OTP's reason. */
    struct ctl c5 = {.mode = INIT_POSTPONE};
    pid = start(rt, &scripted, &c5, NULL);
    assert_true(kiln_test_wait_flag(&c5.terminated, 5000));
    assert_int_equal(atomic_load(&c5.term_reason), A("bad_action_from_state_function"));
    /* Tables without init or callbacks are refused. */
    kiln_gen_statem bad = scripted;
    bad.handle_event = NULL;
    assert_int_equal(kiln_gsm_start(rt, &bad, &c4, NULL, &pid, NULL), KILN_EINVAL);
    assert_int_equal(kiln_gsm_start_link(&scripted, &c4, NULL, &pid, NULL), KILN_ENOTPROC);
    kiln_rt_stop(rt);
}

struct link_case {
    struct ctl *c;
    int rc;
    kiln_term why;
    int stray;
};

static void link_body(void *arg)
{
    struct link_case *l = arg;
    kiln_trap_exit(true);
    kiln_msg *why = NULL;
    kiln_term pid;
    l->rc = kiln_gsm_start_link(&scripted, l->c, NULL, &pid, &why);
    l->why = why ? kiln_msg_term(why) : KILN_NONE;
    kiln_msg_free(why);
    kiln_msg *m = NULL;
    l->stray = kiln_receive(NULL, NULL, 50, &m);
    kiln_msg_free(m);
}

static void test_start_link_init_stop(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {.mode = INIT_STOP};
    struct link_case l = {.c = &c};
    kiln_test_run_in_process(rt, link_body, &l, 5000);
    assert_int_equal(l.rc, KILN_EEXIT);
    assert_int_equal(l.why, A("init_refused"));
    assert_int_equal(l.stray, KILN_ETIMEOUT); /* the 'EXIT' was flushed */
    kiln_rt_stop(rt);
}

static void test_call_timeout(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {.init_state = "hold"};
    kiln_term pid = start(rt, &scripted, &c, NULL);
    /* In hold the call is postponed: the caller times out. When the
     * machine later answers it, the reply is dropped (the alias is gone). */
    struct caller k = {.srv = pid, .req = "slow", .timeout_ms = 50, .late_wait_ms = 400};
    uint64_t t0 = kiln_now_ms();
    spawn_caller(rt, &k);
    wait_log(rt, pid, "call:slow@hold", 5000);
    msleep(120);
    cast(rt, pid, "[{goto,run}]");
    wait_log(rt, pid, "call:slow@run", 5000);
    assert_true(kiln_test_wait_flag(&k.done, 5000));
    assert_int_equal(k.rc, KILN_ETIMEOUT);
    assert_int_equal(k.late, KILN_ETIMEOUT);
    assert_true(kiln_now_ms() - t0 >= 50);
    /* The machine is fine. */
    char out[64];
    call_term(rt, pid, "ping", out, sizeof(out));
    assert_string_equal(out, "{done,ping}");
    /* A dead machine: noproc at once. */
    assert_int_equal(kiln_gsm_stop_server(rt, pid, A("normal"), 5000), KILN_OK);
    kiln_msg *reply = NULL;
    assert_int_equal(kiln_gsm_call(rt, pid, kiln_test_msg("ping"), 5000, &reply, NULL), KILN_ENOPROC);
    kiln_rt_stop(rt);
}

static void test_sys(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    kiln_term pid = start(rt, &scripted, &c, "gsm_sys");
    cast(rt, pid, "[{goto,hold},{stmo,60000,later},{gtmo,g,60000,gc}]");
    cast(rt, pid, "a");
    wait_log(rt, pid, "cast:a@hold", 5000);
    kiln_msg *s = NULL;
    assert_int_equal(kiln_sys_get_status(rt, A("gsm_sys"), 5000, &s), KILN_OK);
    kiln_term p, data, hdr;
    assert_int_equal(kiln_match(kiln_msg_term(s), "{status,~p,{module,gen_statem},[[],running,_,[],[{header,~t},~t,_]]}",
                                &p, &hdr, &data),
                     KILN_OK);
    assert_true(kiln_term_eq(p, pid));
    char buf[512];
    kiln_term_print(buf, sizeof(buf), hdr);
    assert_string_equal(buf, "\"Status for state machine scripted\"");
    kiln_term_print(buf, sizeof(buf), data);
    assert_non_null(strstr(buf, "{\"Time-outs\",{2,[{state_timeout,later},{{timeout,g},gc}]}}"));
    assert_non_null(strstr(buf, "{\"Postponed\",[{cast,a}]}"));
    kiln_msg_free(s);
    /* Suspended: events wait in order; timers keep running. */
    assert_int_equal(kiln_sys_suspend(rt, pid, 5000), KILN_OK);
    cast(rt, pid, "[{goto,run}]");
    msleep(50);
    expect_log(rt, pid, "cast:[{goto,hold},{stmo,60000,later},{gtmo,g,60000,gc}]@idle cast:a@hold");
    assert_int_equal(kiln_sys_resume(rt, pid, 5000), KILN_OK);
    wait_log(rt, pid, "cast:a@run", 5000);
    kiln_rt_stop(rt);
}

/* What Erlang's gen_statem:call/cast send, with a plain reference tag. */
struct wire_case {
    kiln_term srv;
    int ok_call, ok_sys;
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
    kiln_send(w->srv, kiln_test_msg("{'$gen_cast',[{goto,wired}]}"));
    kiln_send(w->srv, kiln_test_msg("{'$gen_call',{~p,~t},q}", kiln_self(), ref));
    if (kiln_receive(tagged, &ref, 5000, &m) == KILN_OK) {
        w->ok_call = kiln_match(kiln_tuple_get(kiln_msg_term(m), 1), "{done,q}") == KILN_OK;
        kiln_msg_free(m);
    }
    kiln_send(w->srv, kiln_test_msg("{system,{~p,~t},get_state}", kiln_self(), ref));
    if (kiln_receive(tagged, &ref, 5000, &m) == KILN_OK) {
        w->ok_sys = kiln_match(kiln_tuple_get(kiln_msg_term(m), 1), "{ok,{wired,_}}") == KILN_OK;
        kiln_msg_free(m);
    }
    kiln_msg_free(refm);
}

static void test_wire_format(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    struct wire_case w = {.srv = start(rt, &scripted, &c, NULL)};
    kiln_test_run_in_process(rt, wire_body, &w, 10000);
    assert_true(w.ok_call);
    assert_true(w.ok_sys);
    kiln_rt_stop(rt);
}

/* ---- state_functions: OTP's code lock ---- */

struct lock {
    char code[8];
    char entered[8];
    size_t n;
    _Atomic int opened, relocked;
};

static kiln_gsm_ret lock_init(kiln_gsm *sm, void *arg, void **data)
{
    (void)sm;
    *data = arg;
    return kiln_gsm_ok(A("locked"));
}

static kiln_gsm_ret locked(kiln_gsm *sm, const kiln_gsm_event *ev, kiln_term state, void *data)
{
    (void)state;
    struct lock *l = data;
    int64_t digit;
    if (ev->type == KILN_GSM_ENTER) {
        l->n = 0;
        return kiln_gsm_keep_state();
    }
    if (ev->type == KILN_GSM_CALL && ev->content == A("which")) {
        kiln_gsm_reply(sm, ev->from, A("locked"));
        return kiln_gsm_keep_state();
    }
    if (ev->type == KILN_GSM_CAST && kiln_match(ev->content, "{button,~i}", &digit) == KILN_OK) {
        l->entered[l->n++] = (char)('0' + digit);
        if (l->n == strlen(l->code)) {
            bool ok = memcmp(l->entered, l->code, l->n) == 0;
            l->n = 0;
            if (ok)
                return kiln_gsm_next_state(A("open"));
        }
        /* Wrong digits are forgotten after a pause. */
        kiln_gsm_event_timeout(sm, 10000, A("button"));
        return kiln_gsm_keep_state();
    }
    if (ev->type == KILN_GSM_CAST && ev->content == A("break"))
        return kiln_gsm_next_state(A("broken")); /* no such state function */
    return kiln_gsm_keep_state();
}

static kiln_gsm_ret open_(kiln_gsm *sm, const kiln_gsm_event *ev, kiln_term state, void *data)
{
    (void)state;
    struct lock *l = data;
    if (ev->type == KILN_GSM_ENTER) {
        atomic_fetch_add(&l->opened, 1);
        kiln_gsm_state_timeout(sm, 200, A("lock"));
        return kiln_gsm_keep_state();
    }
    if (ev->type == KILN_GSM_STATE_TIMEOUT) {
        atomic_fetch_add(&l->relocked, 1);
        return kiln_gsm_next_state(A("locked"));
    }
    if (ev->type == KILN_GSM_CALL && ev->content == A("which")) {
        kiln_gsm_reply(sm, ev->from, A("open"));
        return kiln_gsm_keep_state();
    }
    /* Buttons while open wait until it locks again. */
    kiln_gsm_postpone(sm);
    return kiln_gsm_keep_state();
}

static const kiln_gsm_state lock_states[] = {{"locked", locked}, {"open", open_}};
static const kiln_gen_statem code_lock = {
    .name = "code_lock",
    .init = lock_init,
    .states = lock_states,
    .nstates = 2,
    .state_enter = true,
};

static void test_state_functions(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct lock l = {.code = "123"};
    kiln_term pid;
    assert_int_equal(kiln_gsm_start(rt, &code_lock, &l, NULL, &pid, NULL), KILN_OK);
    char out[64];
    call_term(rt, pid, "which", out, sizeof(out));
    assert_string_equal(out, "locked");
    cast(rt, pid, "{button,1}");
    cast(rt, pid, "{button,2}");
    cast(rt, pid, "{button,3}");
    call_term(rt, pid, "which", out, sizeof(out));
    assert_string_equal(out, "open");
    /* Postponed in open, handled once locked again. */
    cast(rt, pid, "{button,1}");
    cast(rt, pid, "{button,2}");
    cast(rt, pid, "{button,3}");
    for (int i = 0; i < 5000 && atomic_load(&l.opened) < 2; i++)
        msleep(1);
    assert_int_equal(atomic_load(&l.opened), 2);
    assert_true(atomic_load(&l.relocked) >= 1);
    /* A state without a function stops the machine. */
    for (int i = 0; i < 5000 && atomic_load(&l.relocked) < 2; i++)
        msleep(1);
    cast(rt, pid, "break");
    cast(rt, pid, "anything");
    for (int i = 0; i < 5000 && kiln_is_alive(rt, pid); i++)
        msleep(1);
    assert_false(kiln_is_alive(rt, pid));
    kiln_rt_stop(rt);
}

/* ---- parents and supervisors ---- */

struct parent_case {
    struct ctl *c;
    kiln_term child;
    int rc;
};

static void parent_body(void *arg)
{
    struct parent_case *p = arg;
    kiln_gs_opts o = {.trap_exit = true};
    p->rc = kiln_gsm_start_link(&scripted, p->c, &o, &p->child, NULL);
    /* The parent dies; its trapping child runs terminate with the reason. */
    kiln_stop(A("parent_died"));
}

static void test_parent_exit_runs_terminate(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {.init_state = "hold"};
    struct parent_case p = {.c = &c};
    kiln_term pp;
    assert_int_equal(kiln_spawn_fn(rt, parent_body, &p, NULL, &pp), KILN_OK);
    assert_true(kiln_test_wait_flag(&c.terminated, 5000));
    assert_int_equal(p.rc, KILN_OK);
    assert_int_equal(atomic_load(&c.term_reason), A("parent_died"));
    assert_int_equal(atomic_load(&c.term_state), A("hold"));
    kiln_rt_stop(rt);
}

static void test_supervised(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    kiln_gsm_child child = {.sm = &scripted, .arg = &c, .opts = {.name = "gsm_kid", .trap_exit = true}};
    const kiln_child_spec kids[] = {{.id = "kid", .start = kiln_gsm_child_start, .arg = &child}};
    const kiln_sup_spec spec = {.strategy = KILN_ONE_FOR_ONE, .intensity = 3, .children = kids, .nchildren = 1};
    kiln_term sup;
    assert_int_equal(kiln_sup_start(rt, &spec, "gsm_sup", &sup, NULL), KILN_OK);
    kiln_term first = kiln_whereis(rt, A("gsm_kid"));
    assert_true(kiln_is_local_pid(first));
    /* A crash (stop with a non-normal reason) is restarted. */
    cast(rt, first, "[{stop,crash}]");
    kiln_term second = KILN_NONE;
    for (int i = 0; i < 5000; i++) {
        second = kiln_whereis(rt, A("gsm_kid"));
        if (kiln_is_local_pid(second) && !kiln_term_eq(second, first))
            break;
        msleep(1);
    }
    assert_true(kiln_is_local_pid(second) && !kiln_term_eq(second, first));
    /* The name is registered at spawn, before init runs: once the new
     * child answers, its init is done. */
    char out[64];
    call_term(rt, A("gsm_kid"), "hi", out, sizeof(out));
    assert_string_equal(out, "{done,hi}");
    assert_int_equal(atomic_load(&c.inits), 2);
    /* The supervisor's shutdown reaches the trapping child as its
     * parent's exit: terminate(shutdown) runs in its loop. */
    atomic_store(&c.terminated, 0);
    assert_int_equal(kiln_gs_stop_server(rt, sup, KILN_ATOM_SHUTDOWN, 5000), KILN_OK);
    assert_int_equal(atomic_load(&c.terminated), 1);
    assert_int_equal(atomic_load(&c.term_reason), KILN_ATOM_SHUTDOWN);
    kiln_rt_stop(rt);
}

/* ---- ends from outside ---- */

static void test_kill_and_runtime_stop_terminate(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct ctl c = {0};
    kiln_term pid = start(rt, &scripted, &c, NULL);
    cast(rt, pid, "[{goto,hold},{gtmo,g,60000,x}]");
    cast(rt, pid, "a"); /* postponed: owned by the machine, freed at exit */
    wait_log(rt, pid, "cast:a@hold", 5000);
    assert_int_equal(kiln_rt_exit(rt, pid, KILN_ATOM_KILL), KILN_OK);
    assert_true(kiln_test_wait_flag(&c.terminated, 5000));
    assert_int_equal(atomic_load(&c.term_reason), KILN_ATOM_KILLED);
    assert_int_equal(atomic_load(&c.term_state), A("hold"));
    struct ctl cs[6] = {{0}};
    for (int i = 0; i < 6; i++) {
        kiln_term p = start(rt, &scripted, &cs[i], NULL);
        cast(rt, p, "[{stmo,60000,x}]");
    }
    kiln_rt_stop(rt);
    for (int i = 0; i < 6; i++)
        assert_int_equal(atomic_load(&cs[i].terminated), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_call_cast_info_stop),
        cmocka_unit_test(test_postpone_replays_in_order),
        cmocka_unit_test(test_postpone_current_event_on_change),
        cmocka_unit_test(test_state_enter),
        cmocka_unit_test(test_enter_sets_state_timeout),
        cmocka_unit_test(test_next_event_order),
        cmocka_unit_test(test_event_timeout),
        cmocka_unit_test(test_zero_timeouts),
        cmocka_unit_test(test_state_timeout),
        cmocka_unit_test(test_generic_timeouts),
        cmocka_unit_test(test_reply_actions),
        cmocka_unit_test(test_stop_and_reply),
        cmocka_unit_test(test_killed_in_terminate_leaks_nothing),
        cmocka_unit_test(test_init_results),
        cmocka_unit_test(test_start_link_init_stop),
        cmocka_unit_test(test_call_timeout),
        cmocka_unit_test(test_sys),
        cmocka_unit_test(test_wire_format),
        cmocka_unit_test(test_state_functions),
        cmocka_unit_test(test_parent_exit_runs_terminate),
        cmocka_unit_test(test_supervised),
        cmocka_unit_test(test_kill_and_runtime_stop_terminate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
