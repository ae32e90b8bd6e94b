/* Shared by otp/application.c (the public calls and the table),
 * otp/app_controller.c (the controller process) and otp/app_master.c (an
 * application's master process).
 *
 * The table is OTP's ac_tab: one kiln_app_node per runtime, found by rt
 * in a global list, every field guarded by kiln_app_mu. Nobody calls a
 * user callback or blocks while holding the lock: start callbacks read
 * the environment, and the controller runs report hooks. */
#ifndef KILN_APP_INTERNAL_H
#define KILN_APP_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/application.h"
#include "otp/otp_internal.h"

#define KILN_APP_AC_NAME "application_controller"

typedef enum kiln_app_status {
    KILN_APP_ST_IDLE = 0, /* loaded (or env only), not running */
    KILN_APP_ST_STARTING, /* master runs start */
    KILN_APP_ST_RUNNING,
    KILN_APP_ST_STOPPING  /* master told to stop; waiting for its exit */
} kiln_app_status;

struct kiln_app_envvar {
    kiln_term key; /* atom */
    kiln_msg *val; /* root = the value */
};

/* What a master needs: copied out of the entry, because the master may
 * outlive the table (the controller killed by kiln_rt_stop). */
struct kiln_app_callbacks {
    kiln_term app; /* name atom */
    int (*start)(void *start_arg, kiln_term *sup, void **state);
    void *start_arg;
    void (*prep_stop)(void *state);
    void (*stop)(void *state);
};

struct kiln_app_entry {
    kiln_term atom;
    bool loaded;
    char *description, *vsn;
    char **deps;
    size_t ndeps;
    struct kiln_app_callbacks cb;
    struct kiln_app_envvar *env;
    size_t nenv, envcap;
    /* controller-owned */
    kiln_app_status status;
    bool started;          /* OTP's started list: running, or exited on its own */
    kiln_app_type type;
    kiln_term master;      /* KILN_NONE: none (also a running library app) */
    kiln_msg **waiters;    /* kept froms of start/stop calls to answer */
    size_t nwaiters;
};

struct kiln_app_node {
    struct kiln_app_node *next;
    kiln_rt *rt;
    kiln_term controller;  /* its pid */
    int refs;              /* the controller, kiln_app_wait callers */
    pthread_cond_t cv;     /* with kiln_app_mu: stopped became true */
    bool stopping;         /* the node stops: start/stop calls are refused */
    bool stopped;          /* the controller is gone; a tombstone */
    kiln_msg *stop_reason;
    kiln_app_config cfg;
    struct kiln_app_entry **apps;
    size_t napps, appscap;
    struct kiln_app_entry **running; /* most recently started first */
    size_t nrunning, runcap;
};

extern pthread_mutex_t kiln_app_mu;

/* The live (not stopped) node of rt, or NULL. Under kiln_app_mu. */
struct kiln_app_node *kiln_app_node_find(kiln_rt *rt);
/* The entry named atom, or NULL; with create, a new idle one (NULL on
 * allocation failure). Under kiln_app_mu. */
struct kiln_app_entry *kiln_app_entry_find(struct kiln_app_node *n, kiln_term atom, bool create);
/* Under kiln_app_mu. */
void kiln_app_running_add(struct kiln_app_node *n, struct kiln_app_entry *e);
void kiln_app_running_del(struct kiln_app_node *n, struct kiln_app_entry *e);
/* Drop a reference (under kiln_app_mu); the last one frees the node. */
void kiln_app_node_unref(struct kiln_app_node *n);
/* Install a new node for rt (replacing a stopped one). Under kiln_app_mu.
 * KILN_ENAME_TAKEN if a live one exists. */
int kiln_app_node_install(struct kiln_app_node *n);
/* rt's node is a tombstone (its controller is ending or gone). */
bool kiln_app_node_stopped(kiln_rt *rt);
/* Sleep ms, in a process or in a plain thread. */
void kiln_app_nap(uint64_t ms);
/* Free an entry's contents and the entry. */
void kiln_app_entry_free(struct kiln_app_entry *e);

/* Start an application's master (in the controller), linked to it but
 * its own gen_server parent. The master runs start after its init and
 * then sends the controller
 * {'$kiln_app_started', Master, ok | {error, Reason}}. */
int kiln_app_master_start(const struct kiln_app_callbacks *cb, kiln_term *pid);

#endif
