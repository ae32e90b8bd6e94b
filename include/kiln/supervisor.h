/* supervisor: OTP's supervisor, a gen_server that traps exits, starts its
 * children in order, restarts them by strategy within a restart intensity,
 * and shuts them down in reverse order.
 *
 * Children are C child specs. A child's start function runs inside the
 * supervisor and must start the child linked to it (kiln_gs_start_link,
 * kiln_sup_start_link, or kiln_spawn with .link): the link is how the
 * supervisor learns of the exit. kiln_gs_child_start and
 * kiln_sup_child_start are ready-made start functions.
 *
 * The management calls speak OTP's protocol (which_children,
 * count_children, {start_child, _}, {terminate_child, Id}, ...), so
 * Erlang's supervisor:which_children and friends work on a Kiln
 * supervisor; child ids are atoms made from the spec's id string.
 * Errors map to kiln_err codes:
 *   {error, not_found}              KILN_ENOTREG
 *   {error, running | restarting}   KILN_EBUSY
 *   {error, simple_one_for_one}     KILN_ENOTSUP (wrong call for the strategy)
 *   {error, already_present}        KILN_ENAME_TAKEN, *pid = KILN_NONE
 *   {error, {already_started, P}}   KILN_ENAME_TAKEN, *pid = P
 *   a bad child spec                KILN_EINVAL
 *   a failed child start            the start function's code
 */
#ifndef KILN_SUPERVISOR_H
#define KILN_SUPERVISOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "kiln/gen_server.h"
#include "kiln/runtime.h"
#include "kiln/term.h"

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)

typedef enum kiln_sup_strategy {
    KILN_ONE_FOR_ONE = 0,
    KILN_ONE_FOR_ALL,
    KILN_REST_FOR_ONE,
    KILN_SIMPLE_ONE_FOR_ONE
} kiln_sup_strategy;

typedef enum kiln_restart {
    KILN_PERMANENT = 0, /* always restarted */
    KILN_TRANSIENT,     /* restarted unless it exits normal, shutdown or {shutdown, _} */
    KILN_TEMPORARY      /* never restarted */
} kiln_restart;

typedef enum kiln_child_type { KILN_WORKER = 0, KILN_SUPERVISOR } kiln_child_type;

typedef enum kiln_auto_shutdown {
    KILN_AUTO_SHUTDOWN_NEVER = 0,
    KILN_AUTO_SHUTDOWN_ANY_SIGNIFICANT, /* stop when any significant child ends by itself */
    KILN_AUTO_SHUTDOWN_ALL_SIGNIFICANT  /* stop when all significant children have */
} kiln_auto_shutdown;

/* kiln_child_spec.shutdown_ms: a timeout in milliseconds (exit(Child,
 * shutdown), then kill when it passes), or one of these. */
#define KILN_SHUTDOWN_DEFAULT 0        /* 5000 for a worker, infinity for a supervisor */
#define KILN_SHUTDOWN_INFINITY (-1)
#define KILN_SHUTDOWN_BRUTAL_KILL (-2) /* exit(Child, kill) */

/* Starts a child linked to the calling supervisor. Return KILN_OK with
 * *pid, KILN_OK with *pid = KILN_NONE for OTP's ignore, or an error code.
 * extra is KILN_NIL for ordinary children; for simple_one_for_one it is
 * the term given to kiln_sup_start_child_extra (borrowed: copy what you
 * keep). */
typedef int (*kiln_child_start_fn)(void *arg, kiln_term extra, kiln_term *pid);

typedef struct kiln_child_spec {
    const char *id;            /* unique in the supervisor; becomes an atom */
    kiln_child_start_fn start;
    void *arg;                 /* for start; must outlive the child's restarts */
    kiln_restart restart;
    int64_t shutdown_ms;       /* see KILN_SHUTDOWN_* */
    kiln_child_type type;
    bool significant;          /* only transient or temporary children */
} kiln_child_spec;

typedef struct kiln_sup_spec {
    kiln_sup_strategy strategy;
    /* At most intensity restarts within period_ms, or the supervisor
     * shuts down its children and exits with reason shutdown. Literal, as
     * in OTP: 0 means no restart is allowed (OTP's default is 1 in 5 s). */
    int intensity;
    uint64_t period_ms;        /* 0 = 5000 */
    kiln_auto_shutdown auto_shutdown;
    const kiln_child_spec *children; /* started in this order; copied by init */
    size_t nchildren;          /* simple_one_for_one: exactly 1, the template */
} kiln_sup_spec;

/* supervisor:start_link (in a process) and start (from any thread), with
 * an optional local name. Results as kiln_gs_start_link; a child that
 * fails to start makes it KILN_EEXIT with reason
 * {shutdown, {failed_to_start_child, Id, {kiln_error, Code}}}, after the
 * children already started were shut down. The spec is only read while
 * this call runs. */
int kiln_sup_start_link(const kiln_sup_spec *spec, const char *name, kiln_term *pid, kiln_msg **reason);
int kiln_sup_start(kiln_rt *rt, const kiln_sup_spec *spec, const char *name, kiln_term *pid, kiln_msg **reason);

/* supervisor:start_child with a spec (not simple_one_for_one): the spec is
 * copied. *pid gets the child, or KILN_NONE if its start returned ignore. */
int kiln_sup_start_child(kiln_rt *rt, kiln_term sup, const kiln_child_spec *spec, kiln_term *pid);
/* supervisor:start_child(Sup, ExtraArgs) for simple_one_for_one: starts
 * the template with extra (copied) as its start function's extra. */
int kiln_sup_start_child_extra(kiln_rt *rt, kiln_term sup, kiln_term extra, kiln_term *pid);
/* id is the child's id atom (kiln_atom_c("db")) or its pid; for
 * simple_one_for_one only a pid. A temporary child's spec is deleted. */
int kiln_sup_terminate_child(kiln_rt *rt, kiln_term sup, kiln_term id);
int kiln_sup_restart_child(kiln_rt *rt, kiln_term sup, kiln_term id, kiln_term *pid);
int kiln_sup_delete_child(kiln_rt *rt, kiln_term sup, kiln_term id);
/* supervisor:which_children: *children gets a message whose root is OTP's
 * list of {Id, Pid | restarting | undefined, worker | supervisor, []}, in
 * start order. */
int kiln_sup_which_children(kiln_rt *rt, kiln_term sup, kiln_msg **children);

typedef struct kiln_sup_counts {
    size_t specs, active, supervisors, workers;
} kiln_sup_counts;
int kiln_sup_count_children(kiln_rt *rt, kiln_term sup, kiln_sup_counts *out);

/* Ready-made start functions. kiln_gs_child_start's arg is a
 * kiln_gs_child; kiln_sup_child_start's arg is a kiln_sup_spec (started
 * anonymous). */
typedef struct kiln_gs_child {
    const kiln_gen_server *gs;
    void *arg;
    kiln_gs_opts opts;
} kiln_gs_child;
int kiln_gs_child_start(void *arg, kiln_term extra, kiln_term *pid);
int kiln_sup_child_start(void *arg, kiln_term extra, kiln_term *pid);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif
