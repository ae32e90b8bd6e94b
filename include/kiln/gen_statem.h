/* gen_statem: OTP's generic state machine on a Kiln behaviour process.
 *
 * A machine is a table of C callbacks (kiln_gen_statem), a state (any
 * term, usually an atom) and a void *data that init creates and terminate
 * frees. Both of OTP's callback modes exist:
 *   - handle_event_function: one handle_event callback for every state;
 *   - state_functions: a table mapping state names (atoms) to callbacks.
 * Every event reaches a callback as a kiln_gsm_event: call (with From),
 * cast, info, internal, timeout (the event timeout), state_timeout,
 * {timeout, Name} (generic timeouts), and enter (state enter calls, when
 * state_enter is set). The callback returns a kiln_gsm_ret (next_state,
 * keep_state, repeat_state, stop) and asks for actions during the call
 * with the kiln_gsm_* action functions on its kiln_gsm *: reply,
 * postpone, next_event, the three kinds of timeout, hibernate.
 *
 * Semantics are OTP's: actions run in order once the callback returns;
 * postponed events are retried after a state change, oldest first;
 * next_event events are handled before anything already queued, and
 * before retried postponed events; the event timeout is cancelled by any
 * event; a state timeout by a state change (not by a transition to the
 * same state); generic timeouts only by their own restart or cancel.
 *
 * The wire format is gen_server's ({'$gen_call', From, Req},
 * {'$gen_cast', Msg}, {system, From, Req}), as in OTP, so Erlang's
 * gen_statem:call/cast and sys:get_state reach a Kiln machine unchanged
 * and the client calls are gen_server's (kiln_gsm_call is kiln_gs_call).
 *
 * Terms passed to callbacks (event content, From, states) are borrowed
 * for the duration of the callback. Terms given to actions are copied.
 * A state in a result is copied when the machine takes it; terms in a
 * kiln_gsm_ret (state, reason) must stay valid until the result has been
 * acted on: immediates, terms of the event, or terms in a message handed
 * over with kiln_gsm_hold.
 */
#ifndef KILN_GEN_STATEM_H
#define KILN_GEN_STATEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "kiln/gen_server.h"
#include "kiln/process.h"
#include "kiln/runtime.h"
#include "kiln/term.h"

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)

/* The running machine, handed to every callback for its actions. Valid
 * only during that callback. */
typedef struct kiln_gsm kiln_gsm;

/* OTP's event types. */
typedef enum kiln_gsm_event_type {
    KILN_GSM_CALL = 1,        /* {call, From}: from is set */
    KILN_GSM_CAST,            /* cast */
    KILN_GSM_INFO,            /* info: any other message; content is it */
    KILN_GSM_INTERNAL,        /* internal: only from next_event */
    KILN_GSM_TIMEOUT,         /* timeout: the event timeout fired */
    KILN_GSM_STATE_TIMEOUT,   /* state_timeout */
    KILN_GSM_GENERIC_TIMEOUT, /* {timeout, Name}: name is set */
    KILN_GSM_ENTER            /* enter: a state enter call; content is OldState */
} kiln_gsm_event_type;

typedef struct kiln_gsm_event {
    kiln_gsm_event_type type;
    kiln_term content; /* EventContent (enter: the old state) */
    kiln_term from;    /* CALL: {Pid, Tag}; otherwise KILN_NONE */
    kiln_term name;    /* GENERIC_TIMEOUT: Name; otherwise KILN_NONE */
} kiln_gsm_event;

typedef enum kiln_gsm_result {
    KILN_GSM_KEEP_STATE = 0, /* keep_state, keep_state_and_data */
    KILN_GSM_NEXT_STATE,     /* next_state (init: ok) */
    KILN_GSM_REPEAT_STATE,   /* repeat_state: the same state, enter call again */
    KILN_GSM_STOP,           /* stop, stop_and_reply (init: {stop, Reason}) */
    KILN_GSM_IGNORE          /* init only */
} kiln_gsm_result;

/* A callback's result. Build it with the constructors. */
typedef struct kiln_gsm_ret {
    kiln_gsm_result result;
    kiln_term state;  /* NEXT_STATE: the new state (copied by the machine) */
    kiln_term reason; /* STOP */
    kiln_msg *hold;   /* freed once the result has been acted on */
} kiln_gsm_ret;

static inline kiln_gsm_ret kiln_gsm_keep_state(void)
{
    kiln_gsm_ret r = {KILN_GSM_KEEP_STATE, KILN_NONE, KILN_NONE, NULL};
    return r;
}
/* {next_state, State, Data, Actions}: a state change when State differs
 * (=/=) from the current one, else a transition to the same state. */
static inline kiln_gsm_ret kiln_gsm_next_state(kiln_term state)
{
    kiln_gsm_ret r = kiln_gsm_keep_state();
    r.result = KILN_GSM_NEXT_STATE;
    r.state = state;
    return r;
}
/* init's {ok, State, Data, Actions}. */
static inline kiln_gsm_ret kiln_gsm_ok(kiln_term state) { return kiln_gsm_next_state(state); }
/* repeat_state: stay, but make the state enter call again. */
static inline kiln_gsm_ret kiln_gsm_repeat_state(void)
{
    kiln_gsm_ret r = kiln_gsm_keep_state();
    r.result = KILN_GSM_REPEAT_STATE;
    return r;
}
/* {stop, Reason, Data}: replies already asked for (kiln_gsm_reply) are
 * sent, then terminate runs; other actions are dropped. From init: the
 * start fails with Reason. */
static inline kiln_gsm_ret kiln_gsm_stop(kiln_term reason)
{
    kiln_gsm_ret r = kiln_gsm_keep_state();
    r.result = KILN_GSM_STOP;
    r.reason = reason;
    return r;
}
/* {stop_and_reply, Reason, Replies, Data}, with Replies given by
 * kiln_gsm_reply during the callback: sent before terminate, as in OTP. */
static inline kiln_gsm_ret kiln_gsm_stop_and_reply(kiln_term reason) { return kiln_gsm_stop(reason); }
static inline kiln_gsm_ret kiln_gsm_ignore(void)
{
    kiln_gsm_ret r = kiln_gsm_keep_state();
    r.result = KILN_GSM_IGNORE;
    return r;
}
/* Hands m to the machine with the result, for terms built just for it. */
static inline kiln_gsm_ret kiln_gsm_hold(kiln_gsm_ret r, kiln_msg *m)
{
    r.hold = m;
    return r;
}

/* One callback type serves both modes: state is the current state (a
 * state function may ignore it), data the machine's data. */
typedef kiln_gsm_ret (*kiln_gsm_state_fn)(kiln_gsm *sm, const kiln_gsm_event *ev, kiln_term state, void *data);

/* state_functions: the callback for the state that is the atom name. */
typedef struct kiln_gsm_state {
    const char *name;
    kiln_gsm_state_fn fn;
} kiln_gsm_state;

typedef struct kiln_gen_statem {
    const char *name; /* for sys:get_status */
    /* Runs in the new process while the starter waits. Set *data, return
     * kiln_gsm_ok(initial_state) (with actions asked for on sm, postpone
     * excepted), kiln_gsm_stop(reason) or kiln_gsm_ignore(). Required. */
    kiln_gsm_ret (*init)(kiln_gsm *sm, void *arg, void **data);
    /* handle_event_function mode: every event goes here. */
    kiln_gsm_state_fn handle_event;
    /* state_functions mode (when handle_event is NULL): the state must be
     * an atom named in states; an event in any other state stops the
     * machine with {undef_state_function, State}. */
    const kiln_gsm_state *states;
    size_t nstates;
    /* callback_mode's state_enter: after every state change (and for the
     * initial state, with OldState = State) the callback gets an
     * KILN_GSM_ENTER event. It may keep or repeat the state (or "next"
     * to the same state), reply, set timeouts or stop; changing the
     * state, postpone and next_event stop the machine with
     * {bad_state_enter_return_from_state_function, State} or
     * {bad_state_enter_action_from_state_function, Action}. */
    bool state_enter;
    /* Called exactly once after a successful init, whatever ends the
     * process, with the state at that time. Same rules as gen_server's:
     * it may block when the machine stops itself (a stop result,
     * kiln_gsm_stop_server, its parent's exit while trapping), and must
     * only free when the process is ended from outside. May be NULL. */
    void (*terminate)(void *data, kiln_term state, kiln_term reason);
    /* The data as a term for sys (get_state returns {State, Data}); built
     * in m. NULL: undefined. */
    kiln_term (*format_data)(void *data, kiln_msg *m);
} kiln_gen_statem;

/* ---- actions, from inside a callback (sm is its argument) ----
 * Each returns KILN_OK; KILN_ENOMEM; KILN_EBADARG for a malformed argument
 * (the action is not taken); KILN_EINVAL outside a callback, or when the
 * action is not allowed there: postpone in init, postpone or next_event
 * in a state enter call, which also stops the machine once the callback
 * returns, with OTP's reason ({bad_action_from_state_function, postpone},
 * {bad_state_enter_action_from_state_function, Action}). Terms are
 * copied; a KILN_NONE content stands for []. */

/* {reply, From, Reply}: sent when the callback returns, before a state
 * enter call and before terminate (stop_and_reply). */
int kiln_gsm_reply(kiln_gsm *sm, kiln_term from, kiln_term reply);
/* postpone: retry this event after the next state change. */
int kiln_gsm_postpone(kiln_gsm *sm);
/* {next_event, Type, Content}: handled before any queued event; several
 * keep their order. ev->type CALL needs ev->from, GENERIC_TIMEOUT
 * ev->name; ENTER is not an event to insert. */
int kiln_gsm_insert_event(kiln_gsm *sm, const kiln_gsm_event *ev);
static inline int kiln_gsm_next_event(kiln_gsm *sm, kiln_gsm_event_type type, kiln_term content)
{
    kiln_gsm_event ev = {type, content, KILN_NONE, KILN_NONE};
    return kiln_gsm_insert_event(sm, &ev);
}
/* {timeout, Ms, Content}: a timeout event unless another event comes
 * first. ms < 0 is infinity (none); 0 fires before any message not yet
 * received, unless events are already queued (they would cancel it). */
int kiln_gsm_event_timeout(kiln_gsm *sm, int64_t ms, kiln_term content);
/* {state_timeout, Ms, Content}: a state_timeout event unless the state
 * changes first; restarts a running one. ms < 0 cancels it. */
int kiln_gsm_state_timeout(kiln_gsm *sm, int64_t ms, kiln_term content);
/* {{timeout, Name}, Ms, Content}: a {timeout, Name} event; restarts the
 * timer of that name. ms < 0 cancels it. */
int kiln_gsm_generic_timeout(kiln_gsm *sm, kiln_term name, int64_t ms, kiln_term content);
/* hibernate: accepted and ignored (an idle Kiln machine holds no stack). */
int kiln_gsm_hibernate(kiln_gsm *sm);

/* ---- starting, calling, stopping ---- */

/* gen_statem:start_link (in a process) and gen_statem:start (from any
 * thread). Results as kiln_gs_start_link / kiln_gs_start: KILN_OK with
 * *pid (KILN_NONE after ignore), KILN_EEXIT with *reason when init
 * stopped, KILN_ENAME_TAKEN, KILN_ETIMEOUT; KILN_EINVAL for a table
 * without init or without handle_event and states. */
int kiln_gsm_start_link(const kiln_gen_statem *sm, void *arg, const kiln_gs_opts *opts, kiln_term *pid,
                        kiln_msg **reason);
int kiln_gsm_start(kiln_rt *rt, const kiln_gen_statem *sm, void *arg, const kiln_gs_opts *opts, kiln_term *pid,
                   kiln_msg **reason);

/* gen_statem:call, cast and stop/3 speak gen_server's protocol: these are
 * kiln_gs_call, kiln_gs_cast and kiln_gs_stop_server. A deferred reply
 * (gen_statem:reply/2) is kiln_gen_reply on a From kept with
 * kiln_gs_from_keep. */
static inline int kiln_gsm_call(kiln_rt *rt, kiln_term server, kiln_msg *request, int64_t timeout_ms,
                                kiln_msg **reply, kiln_msg **reason)
{
    return kiln_gs_call(rt, server, request, timeout_ms, reply, reason);
}
static inline int kiln_gsm_cast(kiln_rt *rt, kiln_term server, kiln_msg *msg)
{
    return kiln_gs_cast(rt, server, msg);
}
static inline int kiln_gsm_stop_server(kiln_rt *rt, kiln_term server, kiln_term reason, int64_t timeout_ms)
{
    return kiln_gs_stop_server(rt, server, reason, timeout_ms);
}

/* A supervisor child that is a gen_statem: kiln_gsm_child_start's arg is
 * a kiln_gsm_child (see kiln/supervisor.h). */
typedef struct kiln_gsm_child {
    const kiln_gen_statem *sm;
    void *arg;
    kiln_gs_opts opts;
} kiln_gsm_child;
int kiln_gsm_child_start(void *arg, kiln_term extra, kiln_term *pid);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif
