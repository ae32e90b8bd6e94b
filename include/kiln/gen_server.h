/* gen_server: OTP's generic server on a Kiln behaviour process.
 *
 * A server is a table of C callbacks (kiln_gen_server) and a void *state
 * that init creates and terminate frees. Each callback returns a
 * kiln_gs_ret made with the constructors below, OTP's {reply, ...},
 * {noreply, ...}, {stop, ...}, {continue, ...}, ignore. The wire format is
 * OTP's: {'$gen_call', {Pid, Tag}, Req}, {'$gen_cast', Msg}, {system, From,
 * Msg}, so Erlang's gen_server:call/cast/multi_call and sys:get_state reach
 * a Kiln server unchanged.
 *
 * Terms in a kiln_gs_ret (reply, reason, continue) are borrowed: they must
 * stay valid until the callback's result is acted on, which happens before
 * the next message. Immediates, terms inside the message being handled and
 * terms in messages the state owns all qualify. A reply built in a fresh
 * message is handed over with kiln_gs_reply_msg (no copy); other terms
 * built for the result can live in a message handed over with
 * kiln_gs_hold, freed once the result has been acted on.
 *
 * Functions taking a kiln_rt * work from any thread: rt may be NULL inside
 * a process (the caller's runtime is used). Outside a process they run the
 * operation in a short-lived helper process and block the calling thread
 * until it is done, so main() can start a top supervisor or call a server.
 */
#ifndef KILN_GEN_SERVER_H
#define KILN_GEN_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "kiln/error.h"
#include "kiln/process.h"
#include "kiln/runtime.h"
#include "kiln/term.h"

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)

typedef enum kiln_gs_action {
    KILN_GS_NOREPLY = 0, /* also init's "ok" */
    KILN_GS_REPLY,
    KILN_GS_STOP,
    KILN_GS_IGNORE       /* init only */
} kiln_gs_action;

/* A callback's result. Build it with the constructors; the fields are
 * public so a callback can inspect or adjust one. */
typedef struct kiln_gs_ret {
    kiln_gs_action action;
    kiln_term reply;      /* REPLY, or STOP with a reply; KILN_NONE = none */
    kiln_msg *reply_msg;  /* a reply whose root is the answer; handed over */
    kiln_term reason;     /* STOP */
    kiln_term cont;       /* not KILN_NONE: handle_continue(cont) runs next */
    int64_t timeout_ms;   /* >= 0: handle_info gets 'timeout' if no message comes */
    kiln_msg *hold;       /* freed once the result has been acted on */
} kiln_gs_ret;

static inline kiln_gs_ret kiln_gs_noreply(void)
{
    kiln_gs_ret r = {KILN_GS_NOREPLY, KILN_NONE, NULL, KILN_NONE, KILN_NONE, -1, NULL};
    return r;
}
/* init's {ok, State}: the same as noreply. */
static inline kiln_gs_ret kiln_gs_ok(void) { return kiln_gs_noreply(); }
static inline kiln_gs_ret kiln_gs_ignore(void)
{
    kiln_gs_ret r = kiln_gs_noreply();
    r.action = KILN_GS_IGNORE;
    return r;
}
/* {reply, Reply, State}: reply is copied into the answer. */
static inline kiln_gs_ret kiln_gs_reply(kiln_term reply)
{
    kiln_gs_ret r = kiln_gs_noreply();
    r.action = KILN_GS_REPLY;
    r.reply = reply;
    return r;
}
/* {reply, Reply, State} where Reply is m's root; m is consumed. */
static inline kiln_gs_ret kiln_gs_reply_msg(kiln_msg *m)
{
    kiln_gs_ret r = kiln_gs_noreply();
    r.action = KILN_GS_REPLY;
    r.reply_msg = m;
    return r;
}
/* {stop, Reason, State} (from init: the start fails with Reason). */
static inline kiln_gs_ret kiln_gs_stop(kiln_term reason)
{
    kiln_gs_ret r = kiln_gs_noreply();
    r.action = KILN_GS_STOP;
    r.reason = reason;
    return r;
}
/* {stop, Reason, Reply, State}: terminate runs, then the caller gets Reply. */
static inline kiln_gs_ret kiln_gs_stop_reply(kiln_term reason, kiln_term reply)
{
    kiln_gs_ret r = kiln_gs_stop(reason);
    r.reply = reply;
    return r;
}
/* {noreply, State, {continue, Cont}} (init: {ok, State, {continue, Cont}}). */
static inline kiln_gs_ret kiln_gs_continue(kiln_term cont)
{
    kiln_gs_ret r = kiln_gs_noreply();
    r.cont = cont;
    return r;
}
/* Adds {continue, Cont} to any result: kiln_gs_then(kiln_gs_reply(x), c). */
static inline kiln_gs_ret kiln_gs_then(kiln_gs_ret r, kiln_term cont)
{
    r.cont = cont;
    return r;
}
/* Hands m to the server with the result: the result's terms may live in
 * it (kiln_gs_stop(kiln_build(m, "{bad_config,~i}", n)) with m held). */
static inline kiln_gs_ret kiln_gs_hold(kiln_gs_ret r, kiln_msg *m)
{
    r.hold = m;
    return r;
}
/* Adds a Timeout to any result: handle_info(state, 'timeout') runs if no
 * message arrives within ms (0 = at once if the mailbox is empty). */
static inline kiln_gs_ret kiln_gs_timeout(kiln_gs_ret r, int64_t ms)
{
    r.timeout_ms = ms;
    return r;
}

typedef struct kiln_gen_server {
    const char *name; /* for reports and sys:get_status */
    /* Runs in the new process while the starter waits. Set *state, return
     * kiln_gs_ok(), kiln_gs_continue(c), kiln_gs_stop(reason) or
     * kiln_gs_ignore(). Required. */
    kiln_gs_ret (*init)(void *arg, void **state);
    /* A call. from ({Pid, Tag}) is borrowed: to answer later, keep a copy
     * (kiln_gs_from_keep) and use kiln_gen_reply. NULL: the server stops
     * with {bad_call, Request}. */
    kiln_gs_ret (*handle_call)(void *state, kiln_term request, kiln_term from);
    /* A cast. NULL: casts are dropped. */
    kiln_gs_ret (*handle_cast)(void *state, kiln_term msg);
    /* Any other message (also 'timeout', trapped {'EXIT', ...} from
     * processes other than the parent, DOWNs). msg is borrowed; it may be
     * kept with kiln_msg_take. NULL: dropped. */
    kiln_gs_ret (*handle_info)(void *state, kiln_msg *msg);
    /* Runs right after a callback that returned a continue term, before
     * any other message. NULL with a continue result: stop, {bad_return_value, ...}. */
    kiln_gs_ret (*handle_continue)(void *state, kiln_term cont);
    /* Called exactly once after a successful init, whatever ends the
     * process. It may block (call, wait) when the server stops itself: a
     * stop result, kiln_gs_stop_server, or its parent's exit while
     * trapping exits. When the process is ended from outside (kill, an
     * exit signal it does not trap, runtime stop) it runs in the runtime's
     * exit path and must only free memory. May be NULL. */
    void (*terminate)(void *state, kiln_term reason);
    /* The state as a term, for sys:get_state and sys:get_status; built in
     * m. NULL: the atom undefined. */
    kiln_term (*format_state)(void *state, kiln_msg *m);
} kiln_gen_server;

typedef struct kiln_gs_opts {
    const char *name;   /* register locally under this name (OTP {local, Name}) */
    int64_t timeout_ms; /* how long init may take; 0 = infinity; then the
                         * child is killed and start returns KILN_ETIMEOUT */
    bool trap_exit;     /* trap exits from the first instruction of init */
    size_t max_mailbox; /* as in kiln_spawn_opts */
    kiln_overflow overflow;
} kiln_gs_opts;

/* gen_server:start_link (in a process). Returns when init has returned:
 *   KILN_OK         *pid is the server; KILN_NONE if init returned ignore
 *   KILN_EEXIT      init returned stop: the process has exited with that
 *                   reason (*reason, when not NULL, gets it). As in OTP the
 *                   link delivers that exit: it kills a caller that does
 *                   not trap exits unless the reason is normal; a trapping
 *                   caller finds no stray 'EXIT' message.
 *   KILN_ENAME_TAKEN the name is registered: *pid is its owner
 *                   ({error, {already_started, Pid}})
 *   KILN_ETIMEOUT   init did not finish in opts->timeout_ms
 * opts may be NULL. */
int kiln_gs_start_link(const kiln_gen_server *gs, void *arg, const kiln_gs_opts *opts, kiln_term *pid,
                       kiln_msg **reason);
/* gen_server:start: the same without a link, from any thread. */
int kiln_gs_start(kiln_rt *rt, const kiln_gen_server *gs, void *arg, const kiln_gs_opts *opts, kiln_term *pid,
                  kiln_msg **reason);

/* gen_server:call: kiln_call, also from outside a process. server is a
 * pid, a registered name or {Name, Node}. request is consumed. */
int kiln_gs_call(kiln_rt *rt, kiln_term server, kiln_msg *request, int64_t timeout_ms, kiln_msg **reply,
                 kiln_msg **reason);
/* gen_server:cast: sends {'$gen_cast', Msg} with msg's root as Msg (msg
 * is consumed and reused, no copy). As in OTP, a dead or unknown server
 * is not an error. */
int kiln_gs_cast(kiln_rt *rt, kiln_term server, kiln_msg *msg);
/* gen_server:stop(Server, Reason, Timeout): the server runs terminate and
 * exits with reason. KILN_OK once it is gone with that reason,
 * KILN_ENOPROC if it was not alive, KILN_EEXIT if it exited with another
 * reason, KILN_ETIMEOUT (-1 = infinity). */
int kiln_gs_stop_server(kiln_rt *rt, kiln_term server, kiln_term reason, int64_t timeout_ms);

/* gen_server:reply: answer a call whose from was kept. reply is copied.
 * Works from any process (not only the server). */
int kiln_gen_reply(kiln_term from, kiln_term reply);
/* A copy of from in a message of its own (its root), for a reply later;
 * the caller frees it. NULL on allocation failure. */
kiln_msg *kiln_gs_from_keep(kiln_term from);

/* sys:get_state: *state gets a message whose root is format_state's term. */
int kiln_sys_get_state(kiln_rt *rt, kiln_term server, int64_t timeout_ms, kiln_msg **state);
/* sys:get_status: OTP's {status, Pid, {module, gen_server}, [...]} term. */
int kiln_sys_get_status(kiln_rt *rt, kiln_term server, int64_t timeout_ms, kiln_msg **status);
/* sys:suspend / sys:resume: a suspended server handles only system
 * messages (and its parent's exit); other messages wait in order. */
int kiln_sys_suspend(kiln_rt *rt, kiln_term server, int64_t timeout_ms);
int kiln_sys_resume(kiln_rt *rt, kiln_term server, int64_t timeout_ms);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif
