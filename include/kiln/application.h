/* application: OTP's applications, after application.erl and
 * application_controller.erl.
 *
 * An application is a C struct (kiln_application): a name, a list of
 * applications it depends on, a start callback that starts its top
 * supervisor, prep_stop and stop callbacks, and a default environment.
 * One application controller per runtime (a process registered as
 * application_controller, started with kiln_app_controller_start) keeps
 * what is loaded and started; each started application has a master
 * process that runs start, watches the top supervisor and runs prep_stop
 * and stop.
 *
 * Start types and what happens when an application's top supervisor
 * terminates (not through kiln_app_stop):
 *   KILN_APP_PERMANENT  the node stops, whatever the reason
 *   KILN_APP_TRANSIENT  the node stops unless the reason is normal
 *   KILN_APP_TEMPORARY  reported only; the others keep running
 * The same holds when a permanent (or transient, unless normal) start
 * fails. "The node stops" means: kiln_app_config.node_stop is asked (if
 * set; it may veto), then every running application is stopped, most
 * recently started first, the controller exits and kiln_app_wait returns
 * with the reason, so main() can stop the runtime and exit. Stopping an
 * application with kiln_app_stop never stops the node, whatever its type.
 *
 * The loaded/started table and the environments are kept like OTP's
 * ac_tab ETS table: load, unload and the env calls read and write it
 * under a lock, without a round trip to the controller, so start and stop
 * callbacks may use them. Start and stop go through the controller, which
 * serialises them and never blocks on an application's callbacks (except
 * while the node stops).
 *
 * Every call takes the runtime; rt may be NULL inside one of its
 * processes. Calls work from any thread (outside a process the controller
 * is called from a helper process, as kiln_gs_call does), except
 * kiln_app_wait, which is for threads that are not Kiln processes.
 * Errors common to the calls that reach the controller:
 *   KILN_ESTOPPED  no controller runs (not started, or the node stopped
 *                  or is stopping)
 *   KILN_EINVAL    a bad argument, or called from the controller itself
 *                  (a node_stop or report callback), which would deadlock
 */
#ifndef KILN_APPLICATION_H
#define KILN_APPLICATION_H

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

/* The start type (OTP's RestartType). Zero is OTP's default, temporary. */
typedef enum kiln_app_type {
    KILN_APP_TEMPORARY = 0,
    KILN_APP_TRANSIENT,
    KILN_APP_PERMANENT
} kiln_app_type;

/* "temporary", "transient" or "permanent" (for report hooks). */
const char *kiln_app_type_name(kiln_app_type type);

/* A default environment entry: key is an atom; value is a literal in
 * kiln_build's format language without directives ("8080", "{pool,[a,b]}",
 * "\"localhost\"", "#{retries => 3}"). */
typedef struct kiln_app_env {
    const char *key;
    const char *value;
} kiln_app_env;

/* OTP's application resource file and callback module. Everything is
 * copied by kiln_app_load except start_arg and what the callbacks use. */
typedef struct kiln_application {
    const char *name;          /* required; an atom */
    const char *description;   /* may be NULL */
    const char *vsn;           /* may be NULL */
    /* Applications that must be started before this one (OTP's
     * applications key), by name. */
    const char *const *applications;
    size_t napplications;
    /* Mod:start(normal, StartArgs). Runs in the application's master
     * process (which traps exits): start the top supervisor linked to it
     * (kiln_sup_start_link), set *sup to its pid and *state to anything
     * prep_stop and stop need. Return KILN_OK, or an error code: the start
     * fails with reason {kiln_error, Code}. NULL: a library application,
     * started and stopped without any process (OTP: no mod key). */
    int (*start)(void *start_arg, kiln_term *sup, void **state);
    void *start_arg;
    /* Mod:prep_stop(State): runs before the supervision tree is shut
     * down when the application is stopped (kiln_app_stop, node stop), or
     * after the top supervisor has terminated on its own. May block and
     * call other processes. May be NULL. */
    void (*prep_stop)(void *state);
    /* Mod:stop(State): runs once the supervision tree is down. When the
     * master is ended from outside (killed, kiln_rt_stop) it runs in the
     * runtime's exit path, without prep_stop, and must only free: keep it
     * to releasing state. May be NULL. */
    void (*stop)(void *state);
    const kiln_app_env *env;   /* default environment, set by load */
    size_t nenv;
} kiln_application;

typedef struct kiln_app_config {
    /* The node must stop: reason is {application_terminated, App, Reason}
     * or {application_start_failure, App, Reason} (borrowed). Runs in the
     * controller (it must not call kiln_app_start, _stop, _shutdown;
     * kiln_app_get_env and friends are fine). Return true to stop the
     * node, false to keep running (the application stays exited, as if it
     * were temporary). NULL: always stop (OTP's behaviour; OTP's kernel
     * shutdown_func is this hook without the veto). */
    bool (*node_stop)(kiln_rt *rt, kiln_term reason, void *arg);
    /* An application has exited (OTP's "application: A, exited: R, type:
     * T" report): reason is stopped after kiln_app_stop, otherwise the
     * master's exit reason (the top supervisor's reason, shutdown when the
     * node stops, the start failure's reason). Runs in the controller, same
     * rules as node_stop. NULL: one line on stderr. */
    void (*report)(kiln_rt *rt, kiln_term app, kiln_term reason, kiln_app_type type, void *arg);
    void *arg;
} kiln_app_config;

/* Starts rt's application controller, registered as
 * application_controller. cfg (may be NULL) is copied.
 * KILN_ENAME_TAKEN if one already runs. */
int kiln_app_controller_start(kiln_rt *rt, const kiln_app_config *cfg);

/* application:load: registers app and sets its default environment
 * (overwriting keys already set). KILN_ENAME_TAKEN ({already_loaded, A}),
 * KILN_EINVAL (no name, a NULL dependency name, a bad env literal). */
int kiln_app_load(kiln_rt *rt, const kiln_application *app);
/* application:unload: forgets app and its environment.
 * KILN_ENOTREG ({not_loaded, A}), KILN_EBUSY ({running, A}: starting,
 * running or stopping). */
int kiln_app_unload(kiln_rt *rt, const char *name);

/* application:start(Name, Type). Returns once start has run:
 *   KILN_OK
 *   KILN_ENOTREG      not loaded            ({not_loaded, A})
 *   KILN_ENOPROC      a dependency is not started ({not_started, Dep})
 *   KILN_ENAME_TAKEN  already running       ({already_started, A})
 *   KILN_EEXIT        start failed ({kiln_error, Code}, or
 *                     {bad_return, undefined} when no pid was given)
 * *reason (may be NULL) gets a message whose root is OTP's Reason of
 * {error, Reason}; NULL on success. A start while the same application is
 * starting waits for that start and gets its result. A failed permanent
 * start stops the node (see above). */
int kiln_app_start(kiln_rt *rt, const char *name, kiln_app_type type, kiln_msg **reason);
/* application:ensure_started: KILN_OK also when already running. */
int kiln_app_ensure_started(kiln_rt *rt, const char *name, kiln_app_type type, kiln_msg **reason);
/* application:ensure_all_started: starts the dependencies that are not
 * running, depth first in their listed order, then name, all with type.
 * *started (may be NULL) gets a message whose root is the list of the
 * applications it started, in start order. On an error the ones it
 * started are stopped again (most recent first) and *reason is
 * {App, Reason} for the application that failed; a dependency cycle is
 * KILN_EINVAL with {App, {circular_dependencies, Dep}}. */
int kiln_app_ensure_all_started(kiln_rt *rt, const char *name, kiln_app_type type, kiln_msg **started,
                                kiln_msg **reason);
/* application:stop: prep_stop, the supervision tree shut down, stop; the
 * application stays loaded. Returns when it is done. KILN_ENOPROC
 * ({not_started, A}; also while it is still starting). An application
 * that exited on its own (temporary) is only marked not started. Never
 * stops the node. */
int kiln_app_stop(kiln_rt *rt, const char *name);

/* application:get_env(App, Key): KILN_OK and *value, a copy made in out
 * (the caller's message; its root is left alone); KILN_ENOTREG when
 * undefined. */
int kiln_app_get_env(kiln_rt *rt, const char *app, const char *key, kiln_msg *out, kiln_term *value);
/* application:set_env: value is copied. As in OTP the application need
 * not be loaded (a later load sets its defaults over it; unload clears). */
int kiln_app_set_env(kiln_rt *rt, const char *app, const char *key, kiln_term value);
/* application:unset_env. KILN_OK also when the key was not set. */
int kiln_app_unset_env(kiln_rt *rt, const char *app, const char *key);
/* application:get_all_env: *env gets a message whose root is the list of
 * {Key, Value}, in the order the keys were first set. */
int kiln_app_get_all_env(kiln_rt *rt, const char *app, kiln_msg **env);

/* application:which_applications: *apps gets a message whose root is
 * [{Name, Description, Vsn}] (description and vsn as strings) of the
 * running applications, most recently started first, as OTP lists them. */
int kiln_app_which_applications(kiln_rt *rt, kiln_msg **apps);
/* application:loaded_applications: the same shape, every loaded one. */
int kiln_app_loaded_applications(kiln_rt *rt, kiln_msg **apps);

/* init:stop: asynchronous, as OTP's. Returns once the controller has
 * accepted (further start/stop calls get KILN_ESTOPPED); it then stops
 * every running application, most recently started first, and exits;
 * kiln_app_wait returns with reason shutdown. node_stop is not asked. */
int kiln_app_shutdown(kiln_rt *rt);

/* Blocks a thread that is not a Kiln process (main()) until rt's
 * controller has stopped, or timeout_ms passes (-1 = forever). KILN_OK:
 * *reason (may be NULL) gets why ({application_terminated, App, R},
 * {application_start_failure, App, R}, shutdown, or the controller's exit
 * reason if it was killed). Returns at once if the last controller of rt
 * has already stopped. KILN_ENOPROC if none was ever started on rt,
 * KILN_ETIMEOUT, KILN_EINVAL from inside a process. */
int kiln_app_wait(kiln_rt *rt, int64_t timeout_ms, kiln_msg **reason);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif
