/* Processes: spawn, send, receive, call, links, monitors, names, aliases.
 *
 * A process is either a behaviour (callbacks run by a worker, one message
 * at a time, on a shared stack) or a function that runs on its own stack.
 * Either may block (kiln_receive, kiln_call, kiln_sleep, kiln_blocking);
 * a blocked process holds a stack, an idle one holds none.
 *
 * Calls marked "in a process" use the calling process (kiln_self) and
 * return KILN_ENOTPROC elsewhere. A process that is killed while blocked
 * never returns from the blocking call: its stack is dropped, so memory it
 * holds only through locals on that stack is lost. Keep resources in the
 * behaviour state, where terminate can free them.
 */
#ifndef KILN_PROCESS_H
#define KILN_PROCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "kiln/runtime.h"
#include "kiln/term.h"

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)

/* What a handler asks for after a message. */
typedef enum kiln_action { KILN_CONTINUE = 0, KILN_STOP = 1 } kiln_action;

typedef struct kiln_behaviour {
    const char *name; /* for reports */
    /* Runs in the new process. Return KILN_OK (and set *state), or an error
     * code: the process then exits with reason {init_failed, Code}. To end
     * with a reason of your own, call kiln_stop(Reason) and return KILN_OK:
     * the process ends as soon as init returns (terminate is called). */
    int (*init)(void *arg, void **state);
    /* Handles one message (user messages and, when trapping exits,
     * {'EXIT', From, Reason}, and {'DOWN', Ref, process, Pid, Reason}).
     * msg is borrowed: the runtime frees it after the call unless the
     * handler forwarded it (kiln_send) or took it (kiln_msg_take). */
    kiln_action (*handle)(void *state, kiln_msg *msg);
    /* Called whenever the process ends after a successful init, for any
     * reason (KILN_STOP, an exit signal, kill, runtime shutdown), so C state
     * can always be freed; reason is the exit reason. Also when it is
     * killed while init blocks, if init had set *state by then. It may
     * block; exit signals that arrive meanwhile are ignored (the first
     * reason stands). May be NULL. */
    void (*terminate)(void *state, kiln_term reason);
} kiln_behaviour;

typedef enum kiln_overflow {
    KILN_OVERFLOW_DROP_NEWEST = 0, /* the new message is dropped, the send succeeds */
    KILN_OVERFLOW_DROP_OLDEST,     /* the oldest queued message is dropped */
    KILN_OVERFLOW_FAIL             /* the send returns KILN_EMAILBOX_FULL */
} kiln_overflow;

typedef struct kiln_spawn_opts {
    bool link;            /* link to the spawner (in a process) */
    bool monitor;         /* monitor from the spawner; ref in *monitor_ref */
    kiln_msg *monitor_ref_msg; /* where the monitor ref term is allocated */
    kiln_term *monitor_ref;
    bool trap_exit;
    const char *register_as; /* register under this name; spawn fails if taken */
    size_t max_mailbox;   /* 0 = unbounded (Erlang's default) */
    kiln_overflow overflow;
} kiln_spawn_opts;

/* Spawn a behaviour process. opts may be NULL. Callable from any thread
 * (link/monitor need a calling process). */
int kiln_spawn(kiln_rt *rt, const kiln_behaviour *b, void *arg, const kiln_spawn_opts *opts, kiln_term *pid);
/* Spawn a process that runs fn(arg) on its own stack; it exits with reason
 * normal when fn returns. */
int kiln_spawn_fn(kiln_rt *rt, void (*fn)(void *arg), void *arg, const kiln_spawn_opts *opts, kiln_term *pid);

/* The calling process, or KILN_NONE outside one. */
kiln_term kiln_self(void);
/* The runtime of the calling process, or NULL. */
kiln_rt *kiln_current_rt(void);

/* Send msg to a pid, a registered name (atom) or an alias (reference).
 * Ownership of msg passes to the runtime in every case, also on error.
 * Sending to a dead pid is not an error (Erlang semantics: the message is
 * dropped); sending to an unregistered name is KILN_EBADARG, as in Erlang.
 * In a function process, every send_budget-th send in one run yields the
 * worker to other processes before it returns (kiln_rt_config). */
int kiln_send(kiln_term to, kiln_msg *msg);
/* Same, from any thread, naming the runtime. */
int kiln_rt_send(kiln_rt *rt, kiln_term to, kiln_msg *msg);

/* Keep the borrowed message handed to a behaviour's handle: the runtime
 * will not free it; the caller must (or send it on). */
kiln_msg *kiln_msg_take(kiln_msg *msg);

/* Selective receive (in a process). match(term, arg) picks a message;
 * NULL matches anything. Messages that do not match stay queued in order.
 * timeout_ms: -1 = infinity, 0 = poll. On KILN_OK *out is the caller's. */
typedef bool (*kiln_match_fn)(kiln_term msg, void *arg);
int kiln_receive(kiln_match_fn match, void *arg, int64_t timeout_ms, kiln_msg **out);

/* Synchronous call (in a process), the gen_server protocol: sends
 * {'$gen_call', {Self, [alias|Ref]}, Request} with request's root as
 * Request, waits for {[alias|Ref], Reply}. request is consumed; to is a
 * pid, a registered name or {Name, Node}. On KILN_OK *reply is a message
 * whose root is Reply. Errors: KILN_ETIMEOUT (a late reply never arrives),
 * KILN_ENOPROC (no such process: returned at once), KILN_EEXIT (it died
 * before replying). With ENOPROC and EEXIT, *reason (when not NULL) gets
 * a message whose root is the exit reason. The wrapping goes into
 * request's own arena: a request message with KILN_CALL_ROOM bytes to
 * spare beyond its term needs no second block. */
int kiln_call(kiln_term to, kiln_msg *request, int64_t timeout_ms, kiln_msg **reply, kiln_msg **reason);
#define KILN_CALL_ROOM 112 /* the reference, [alias|Ref] and the two tuples */
/* Answer a call. from is the {Pid, Tag} term from the request (it may live
 * in the borrowed request message); reply is consumed. The reply is
 * wrapped in {Tag, Reply} in its own message: a reply message with
 * KILN_REPLY_ROOM bytes to spare beyond its term needs no second block. */
int kiln_reply(kiln_term from, kiln_msg *reply);
#define KILN_REPLY_ROOM 88 /* [alias|Ref] (a remote caller's Ref may have 5 words) and the 2-tuple */
/* Parses {'$gen_call', From, Request}: KILN_OK with From and Request, or
 * KILN_ENOMATCH. */
int kiln_match_call(kiln_term msg, kiln_term *from, kiln_term *request);

/* Sleep (in a process; other processes run meanwhile). */
int kiln_sleep(uint64_t ms);
/* Let other processes run, then continue (in a process). */
int kiln_yield(void);
/* Run fn(arg) on the blocking-call thread pool while this process waits
 * (in a process); returns fn's result through *result. For C calls that
 * block the thread (file I/O, getaddrinfo, a lock). */
int kiln_blocking(void *(*fn)(void *arg), void *arg, void **result);

/* ---- links, exits, monitors ---- */

int kiln_link(kiln_term pid);   /* in a process; noproc exit if dead and not trapping */
int kiln_unlink(kiln_term pid); /* in a process */
/* exit/2: send an exit signal to pid with reason (copied). From any thread
 * with a runtime via kiln_rt_exit. */
int kiln_exit(kiln_term pid, kiln_term reason);
int kiln_rt_exit(kiln_rt *rt, kiln_term pid, kiln_term reason);
/* The calling process stops with reason after the current handler returns
 * (behaviour), or at once (function process: does not return). */
kiln_action kiln_stop(kiln_term reason);
/* process_flag(trap_exit, on): returns the old value (in a process). */
bool kiln_trap_exit(bool on);
/* monitor(process, Target) (in a process): target is a pid or a registered
 * name. The ref term is written into ref_msg's arena. A dead target gives a
 * DOWN with noproc. */
int kiln_monitor(kiln_term target, kiln_msg *ref_msg, kiln_term *ref);
/* demonitor; with flush, a DOWN already queued for ref is removed. */
int kiln_demonitor(kiln_term ref, bool flush);

/* ---- registered names ---- */

int kiln_register(kiln_rt *rt, kiln_term name, kiln_term pid);
int kiln_unregister(kiln_rt *rt, kiln_term name);
/* KILN_NONE when the name is free. */
kiln_term kiln_whereis(kiln_rt *rt, kiln_term name);

/* ---- aliases (OTP 24) ---- */

/* alias(): a new reference that routes messages to the calling process
 * until kiln_unalias; with reply_once it also ends after the first message
 * it delivers (OTP's {alias, reply_demonitor} style). */
int kiln_alias(bool reply_once, kiln_msg *ref_msg, kiln_term *alias);
int kiln_unalias(kiln_term alias);

/* ---- references ---- */

/* make_ref(): a node-unique reference allocated in m. */
kiln_term kiln_make_ref(kiln_msg *m);

/* ---- process info ---- */

typedef enum kiln_proc_status {
    KILN_PS_RUNNABLE, KILN_PS_RUNNING, KILN_PS_WAITING, KILN_PS_EXITING
} kiln_proc_status;

typedef struct kiln_proc_info {
    kiln_proc_status status;
    size_t message_queue_len; /* messages received but not yet handled */
    size_t links, monitors, monitored_by;
    kiln_term registered_name; /* KILN_NONE if none */
    bool trap_exit;
    bool has_stack;           /* blocked processes hold a stack */
    size_t memory;            /* bytes: the process, its queue, its stack */
} kiln_proc_info;

/* KILN_ENOPROC if the pid is dead. Racy by nature: a snapshot. */
int kiln_process_info(kiln_rt *rt, kiln_term pid, kiln_proc_info *out);
bool kiln_is_alive(kiln_rt *rt, kiln_term pid);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif
