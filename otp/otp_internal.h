/* Shared by the OTP behaviours in otp/: the proc_lib start handshake, the
 * sys call protocol, and running an operation from a non-Kiln thread. */
#ifndef KILN_OTP_INTERNAL_H
#define KILN_OTP_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "kiln/gen_server.h"
#include "kiln/process.h"
#include "kiln/term.h"

/* What a starter hands the process it starts (proc_lib's Starter/Parent). */
struct kiln_otp_starting {
    const void *impl;   /* the behaviour's callbacks (a kiln_gen_server) */
    void *arg;          /* the user's init argument */
    kiln_term parent;   /* the linked starter, or KILN_NONE (parent = self) */
    kiln_msg *tag_msg;  /* owns alias and the monitor ref */
    kiln_term alias;    /* where the ack goes */
};

/* proc_lib:start / start_link from a process: spawn beh with a
 * kiln_otp_starting as its init argument and wait for kiln_otp_ack. */
int kiln_otp_start(kiln_rt *rt, const kiln_behaviour *beh, const void *impl, void *arg, const kiln_gs_opts *opts,
                   bool link, kiln_term *pid, kiln_msg **reason);
/* proc_lib:init_ack / init_fail, from the starting process's init. result
 * is {ok, Pid}, {error, Reason} or ignore (copied). st must not be touched
 * afterwards: the starter may free it at once. */
void kiln_otp_ack(struct kiln_otp_starting *st, kiln_term result);

/* Run fn(arg) in a process: directly when the caller is one of rt's
 * processes, else in a helper process while this thread waits. */
int kiln_otp_run(kiln_rt *rt, int (*fn)(void *arg), void *arg);

/* gen:start with nolink from any thread: kiln_otp_start (no link) run
 * through kiln_otp_run. rt may be NULL inside a process. */
int kiln_otp_start_nolink(kiln_rt *rt, const kiln_behaviour *beh, const void *impl, void *arg,
                          const kiln_gs_opts *opts, kiln_term *pid, kiln_msg **reason);

/* A call in the sys protocol: {system, {Self, [alias|A]}, Req} (in a
 * process). Same results as kiln_call; req is copied. */
int kiln_otp_sys_call(kiln_term to, kiln_term req, int64_t timeout_ms, kiln_msg **reply, kiln_msg **reason);

/* The server side of the sys protocol (sys_server.c). A behaviour keeps
 * a kiln_otp_sys in its state and hands it every {system, From, Req}. */
typedef struct kiln_otp_sys_ops {
    const char *module; /* {module, M} in get_status: "gen_server" */
    const char *header; /* get_status header, before the name: "Status for generic server" */
    /* The state as sys:get_state returns it, built in m; KILN_NONE = undefined. */
    kiln_term (*state)(void *beh, kiln_msg *m);
    /* get_status's items after Status and Parent, a proper list built in
     * m. NULL: [{"Logged events", []}], gen_server's. */
    kiln_term (*status_data)(void *beh, kiln_msg *m);
    /* Stop from the loop with reason (sys:terminate, the parent's exit
     * while suspended): run terminate, exit; returns KILN_STOP. */
    kiln_action (*stop)(void *beh, kiln_term reason);
} kiln_otp_sys_ops;

typedef struct kiln_otp_sys {
    const kiln_otp_sys_ops *ops;
    void *beh;        /* handed to the ops */
    const char *name; /* the callback table's name, for the header */
    kiln_term self, parent;
    bool suspended;
} kiln_otp_sys;

/* t is {system, From, Req} with a {Pid, Tag} From: sets *from and *req. */
bool kiln_otp_sys_match(kiln_term t, kiln_term *from, kiln_term *req);
/* t is {'EXIT', Parent, _} and the process has a parent other than itself. */
bool kiln_otp_is_parent_exit(const kiln_otp_sys *s, kiln_term t);
/* Answer one system message. A suspend blocks here, serving system
 * messages and the parent's exit, until resume. KILN_STOP when the
 * process is stopping (ops->stop ran). */
kiln_action kiln_otp_sys_handle(kiln_otp_sys *s, kiln_term from, kiln_term req);

/* True when the gen_server terminate now running for state was called
 * from the server's own loop (it may block) rather than the runtime's exit
 * path. Valid only as the first thing terminate does. */
bool kiln_otp_terminate_in_loop(const void *state);
/* For a terminate called from the loop that frees state itself once it is
 * done but may block first: should it be killed while it blocks, cleanup
 * runs on the exit path instead (it must not block). Same validity as
 * kiln_otp_terminate_in_loop; a no-op on the exit path. */
void kiln_otp_terminate_guard(const void *state, void (*cleanup)(void *state));

/* Resolve a server reference (pid, local name, {Name, Node} of this node)
 * to a local pid; KILN_NONE if not alive or not registered. */
kiln_term kiln_otp_resolve(kiln_rt *rt, kiln_term server);

/* Unlink pid and drop a trapped {'EXIT', Pid, _} already queued; returns
 * its reason (in *why, allocated) if there was one. */
void kiln_otp_unlink_flush(kiln_term pid, kiln_msg **why);

#endif
