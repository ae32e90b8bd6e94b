/* application: the public calls and the table they share with the
 * controller (OTP's application.erl and ac_tab).
 *
 * Load, unload and the environment work on the table under kiln_app_mu,
 * as OTP reads ac_tab without calling the controller: a start or stop
 * callback that reads its configuration must not wait for the controller,
 * which may be busy stopping the node. Start and stop are calls to the
 * controller process (app_controller.c). ensure_all_started is a client
 * loop over start, as in OTP. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "otp/app_internal.h"

pthread_mutex_t kiln_app_mu = PTHREAD_MUTEX_INITIALIZER;

/* Every node ever installed and not yet replaced: live ones and the
 * tombstone of each runtime's last controller (it keeps the stop reason
 * for a late kiln_app_wait). The list holds one reference. */
static struct kiln_app_node *nodes;

static kiln_term A(const char *s) { return kiln_atom_c(s); }

const char *kiln_app_type_name(kiln_app_type type)
{
    switch (type) {
    case KILN_APP_PERMANENT:
        return "permanent";
    case KILN_APP_TRANSIENT:
        return "transient";
    default:
        return "temporary";
    }
}

/* ---- the table (under kiln_app_mu) ---- */

static struct kiln_app_node *node_any(kiln_rt *rt)
{
    for (struct kiln_app_node *n = nodes; n; n = n->next)
        if (n->rt == rt)
            return n;
    return NULL;
}

struct kiln_app_node *kiln_app_node_find(kiln_rt *rt)
{
    struct kiln_app_node *n = node_any(rt);
    return n && !n->stopped ? n : NULL;
}

/* Frees what e holds, not e. */
static void entry_clear(struct kiln_app_entry *e)
{
    free(e->description);
    free(e->vsn);
    for (size_t i = 0; i < e->ndeps; i++)
        free(e->deps[i]);
    free(e->deps);
    for (size_t i = 0; i < e->nenv; i++)
        kiln_msg_free(e->env[i].val);
    free(e->env);
    for (size_t i = 0; i < e->nwaiters; i++)
        kiln_msg_free(e->waiters[i]);
    free(e->waiters);
}

void kiln_app_entry_free(struct kiln_app_entry *e)
{
    if (!e)
        return;
    entry_clear(e);
    free(e);
}

void kiln_app_node_unref(struct kiln_app_node *n)
{
    if (--n->refs > 0)
        return;
    for (size_t i = 0; i < n->napps; i++)
        kiln_app_entry_free(n->apps[i]);
    free(n->apps);
    free(n->running);
    kiln_msg_free(n->stop_reason);
    pthread_cond_destroy(&n->cv);
    free(n);
}

int kiln_app_node_install(struct kiln_app_node *n)
{
    struct kiln_app_node *old = node_any(n->rt);
    if (old && !old->stopped)
        return KILN_ENAME_TAKEN;
    if (old) {
        /* The runtime's previous controller: its tombstone goes. */
        for (struct kiln_app_node **pp = &nodes; *pp; pp = &(*pp)->next) {
            if (*pp == old) {
                *pp = old->next;
                break;
            }
        }
        kiln_app_node_unref(old);
    }
    n->next = nodes;
    nodes = n;
    return KILN_OK;
}

bool kiln_app_node_stopped(kiln_rt *rt)
{
    pthread_mutex_lock(&kiln_app_mu);
    struct kiln_app_node *n = node_any(rt);
    bool r = n && n->stopped;
    pthread_mutex_unlock(&kiln_app_mu);
    return r;
}

void kiln_app_nap(uint64_t ms)
{
    if (kiln_current_rt()) {
        kiln_sleep(ms);
        return;
    }
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

struct kiln_app_entry *kiln_app_entry_find(struct kiln_app_node *n, kiln_term atom, bool create)
{
    for (size_t i = 0; i < n->napps; i++)
        if (n->apps[i]->atom == atom)
            return n->apps[i];
    if (!create)
        return NULL;
    if (n->napps == n->appscap) {
        size_t ncap = n->appscap ? n->appscap * 2 : 8;
        struct kiln_app_entry **a = realloc(n->apps, ncap * sizeof(*a));
        if (!a)
            return NULL;
        n->apps = a;
        n->appscap = ncap;
    }
    struct kiln_app_entry *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->atom = atom;
    e->master = KILN_NONE;
    n->apps[n->napps++] = e;
    return e;
}

static void entry_remove(struct kiln_app_node *n, struct kiln_app_entry *e)
{
    for (size_t i = 0; i < n->napps; i++) {
        if (n->apps[i] == e) {
            memmove(&n->apps[i], &n->apps[i + 1], (n->napps - i - 1) * sizeof(*n->apps));
            n->napps--;
            break;
        }
    }
    kiln_app_entry_free(e);
}

void kiln_app_running_add(struct kiln_app_node *n, struct kiln_app_entry *e)
{
    if (n->nrunning == n->runcap) {
        size_t ncap = n->runcap ? n->runcap * 2 : 8;
        struct kiln_app_entry **r = realloc(n->running, ncap * sizeof(*r));
        if (!r)
            return; /* it runs, but which_applications will not list it */
        n->running = r;
        n->runcap = ncap;
    }
    /* OTP's keyreplaceadd prepends: the most recent start comes first. */
    memmove(&n->running[1], &n->running[0], n->nrunning * sizeof(*n->running));
    n->running[0] = e;
    n->nrunning++;
}

void kiln_app_running_del(struct kiln_app_node *n, struct kiln_app_entry *e)
{
    for (size_t i = 0; i < n->nrunning; i++) {
        if (n->running[i] == e) {
            memmove(&n->running[i], &n->running[i + 1], (n->nrunning - i - 1) * sizeof(*n->running));
            n->nrunning--;
            return;
        }
    }
}

/* Set key to val (consumed) in e's environment. */
static bool env_put(struct kiln_app_entry *e, kiln_term key, kiln_msg *val)
{
    for (size_t i = 0; i < e->nenv; i++) {
        if (e->env[i].key == key) {
            kiln_msg_free(e->env[i].val);
            e->env[i].val = val;
            return true;
        }
    }
    if (e->nenv == e->envcap) {
        size_t ncap = e->envcap ? e->envcap * 2 : 8;
        struct kiln_app_envvar *v = realloc(e->env, ncap * sizeof(*v));
        if (!v) {
            kiln_msg_free(val);
            return false;
        }
        e->env = v;
        e->envcap = ncap;
    }
    e->env[e->nenv].key = key;
    e->env[e->nenv].val = val;
    e->nenv++;
    return true;
}

static kiln_rt *rt_of(kiln_rt *rt) { return rt ? rt : kiln_current_rt(); }

/* An atom for a name; KILN_NONE for NULL, "" or a bad name. */
static kiln_term name_atom(const char *s) { return s && *s ? kiln_atom_c(s) : KILN_NONE; }

/* ---- load, unload ---- */

static char *dup_or_empty(const char *s) { return strdup(s ? s : ""); }

int kiln_app_load(kiln_rt *rt, const kiln_application *app)
{
    rt = rt_of(rt);
    if (!rt || !app)
        return KILN_EINVAL;
    kiln_term atom = name_atom(app->name);
    if (kiln_is_none(atom) || (app->napplications && !app->applications) || (app->nenv && !app->env))
        return KILN_EINVAL;
    for (size_t i = 0; i < app->napplications; i++)
        if (kiln_is_none(name_atom(app->applications[i])))
            return KILN_EINVAL;

    /* Everything is built before taking the lock. */
    struct kiln_app_entry tmp = {0};
    int rc = KILN_OK;
    tmp.description = dup_or_empty(app->description);
    tmp.vsn = dup_or_empty(app->vsn);
    tmp.deps = calloc(app->napplications ? app->napplications : 1, sizeof(*tmp.deps));
    tmp.env = calloc(app->nenv ? app->nenv : 1, sizeof(*tmp.env));
    if (!tmp.description || !tmp.vsn || !tmp.deps || !tmp.env)
        rc = KILN_ENOMEM;
    for (size_t i = 0; rc == KILN_OK && i < app->napplications; i++) {
        if (!(tmp.deps[i] = strdup(app->applications[i])))
            rc = KILN_ENOMEM;
        tmp.ndeps = i + 1;
    }
    for (size_t i = 0; rc == KILN_OK && i < app->nenv; i++) {
        const kiln_app_env *ev = &app->env[i];
        /* A directive would read variadic arguments that are not there. */
        if (!ev->value || strchr(ev->value, '~') || kiln_is_none(name_atom(ev->key))) {
            rc = KILN_EINVAL;
            break;
        }
        kiln_msg *m = kiln_msg_new(64);
        kiln_term v = m ? kiln_build(m, ev->value) : KILN_NONE;
        if (kiln_is_none(v)) {
            kiln_msg_free(m);
            rc = m ? KILN_EINVAL : KILN_ENOMEM;
            break;
        }
        kiln_msg_set_term(m, v);
        tmp.env[i].key = kiln_atom_c(ev->key);
        tmp.env[i].val = m;
        tmp.nenv = i + 1;
    }
    if (rc != KILN_OK) {
        entry_clear(&tmp);
        return rc;
    }

    pthread_mutex_lock(&kiln_app_mu);
    struct kiln_app_node *n = kiln_app_node_find(rt);
    struct kiln_app_entry *e = n ? kiln_app_entry_find(n, atom, true) : NULL;
    if (!n)
        rc = KILN_ESTOPPED;
    else if (!e)
        rc = KILN_ENOMEM;
    else if (e->loaded)
        rc = KILN_ENAME_TAKEN;
    if (rc == KILN_OK) {
        e->loaded = true;
        e->description = tmp.description;
        e->vsn = tmp.vsn;
        e->deps = tmp.deps;
        e->ndeps = tmp.ndeps;
        e->cb.app = atom;
        e->cb.start = app->start;
        e->cb.start_arg = app->start_arg;
        e->cb.prep_stop = app->prep_stop;
        e->cb.stop = app->stop;
        /* OTP's add_env: the defaults overwrite keys set before the load. */
        for (size_t i = 0; i < tmp.nenv; i++)
            env_put(e, tmp.env[i].key, tmp.env[i].val);
        free(tmp.env);
    }
    pthread_mutex_unlock(&kiln_app_mu);
    if (rc != KILN_OK)
        entry_clear(&tmp);
    return rc;
}

int kiln_app_unload(kiln_rt *rt, const char *name)
{
    rt = rt_of(rt);
    kiln_term atom = name_atom(name);
    if (!rt || kiln_is_none(atom))
        return KILN_EINVAL;
    int rc = KILN_OK;
    pthread_mutex_lock(&kiln_app_mu);
    struct kiln_app_node *n = kiln_app_node_find(rt);
    struct kiln_app_entry *e = n ? kiln_app_entry_find(n, atom, false) : NULL;
    if (!n)
        rc = KILN_ESTOPPED;
    else if (!e || !e->loaded)
        rc = KILN_ENOTREG;
    else if (e->status != KILN_APP_ST_IDLE)
        rc = KILN_EBUSY;
    else
        entry_remove(n, e); /* OTP's unload: del_env too */
    pthread_mutex_unlock(&kiln_app_mu);
    return rc;
}

/* ---- environment ---- */

int kiln_app_get_env(kiln_rt *rt, const char *app, const char *key, kiln_msg *out, kiln_term *value)
{
    rt = rt_of(rt);
    kiln_term a = name_atom(app), k = name_atom(key);
    if (!rt || !out || !value || kiln_is_none(a) || kiln_is_none(k))
        return KILN_EINVAL;
    int rc = KILN_ENOTREG;
    pthread_mutex_lock(&kiln_app_mu);
    struct kiln_app_node *n = kiln_app_node_find(rt);
    struct kiln_app_entry *e = n ? kiln_app_entry_find(n, a, false) : NULL;
    if (!n)
        rc = KILN_ESTOPPED;
    for (size_t i = 0; e && i < e->nenv; i++) {
        if (e->env[i].key == k) {
            kiln_term v = kiln_term_copy(out, kiln_msg_term(e->env[i].val));
            rc = kiln_is_none(v) ? KILN_ENOMEM : KILN_OK;
            if (rc == KILN_OK)
                *value = v;
            break;
        }
    }
    pthread_mutex_unlock(&kiln_app_mu);
    return rc;
}

int kiln_app_set_env(kiln_rt *rt, const char *app, const char *key, kiln_term value)
{
    rt = rt_of(rt);
    kiln_term a = name_atom(app), k = name_atom(key);
    if (!rt || kiln_is_none(a) || kiln_is_none(k) || kiln_is_none(value))
        return KILN_EINVAL;
    kiln_msg *m = kiln_msg_new(64);
    kiln_term v = m ? kiln_term_copy(m, value) : KILN_NONE;
    if (kiln_is_none(v)) {
        kiln_msg_free(m);
        return KILN_ENOMEM;
    }
    kiln_msg_set_term(m, v);
    int rc = KILN_OK;
    pthread_mutex_lock(&kiln_app_mu);
    struct kiln_app_node *n = kiln_app_node_find(rt);
    struct kiln_app_entry *e = n ? kiln_app_entry_find(n, a, true) : NULL;
    if (!n)
        rc = KILN_ESTOPPED;
    else if (!e)
        rc = KILN_ENOMEM;
    else if (!env_put(e, k, m)) /* consumes m either way */
        rc = KILN_ENOMEM;
    pthread_mutex_unlock(&kiln_app_mu);
    if (!n || !e)
        kiln_msg_free(m);
    return rc;
}

int kiln_app_unset_env(kiln_rt *rt, const char *app, const char *key)
{
    rt = rt_of(rt);
    kiln_term a = name_atom(app), k = name_atom(key);
    if (!rt || kiln_is_none(a) || kiln_is_none(k))
        return KILN_EINVAL;
    int rc = KILN_OK;
    pthread_mutex_lock(&kiln_app_mu);
    struct kiln_app_node *n = kiln_app_node_find(rt);
    struct kiln_app_entry *e = n ? kiln_app_entry_find(n, a, false) : NULL;
    if (!n)
        rc = KILN_ESTOPPED;
    for (size_t i = 0; e && i < e->nenv; i++) {
        if (e->env[i].key == k) {
            kiln_msg_free(e->env[i].val);
            memmove(&e->env[i], &e->env[i + 1], (e->nenv - i - 1) * sizeof(*e->env));
            e->nenv--;
            break;
        }
    }
    pthread_mutex_unlock(&kiln_app_mu);
    return rc;
}

int kiln_app_get_all_env(kiln_rt *rt, const char *app, kiln_msg **env)
{
    rt = rt_of(rt);
    kiln_term a = name_atom(app);
    if (!rt || !env || kiln_is_none(a))
        return KILN_EINVAL;
    *env = NULL;
    kiln_msg *m = kiln_msg_new(256);
    if (!m)
        return KILN_ENOMEM;
    int rc = KILN_OK;
    kiln_term list = KILN_NIL;
    pthread_mutex_lock(&kiln_app_mu);
    struct kiln_app_node *n = kiln_app_node_find(rt);
    struct kiln_app_entry *e = n ? kiln_app_entry_find(n, a, false) : NULL;
    if (!n)
        rc = KILN_ESTOPPED;
    for (size_t i = e ? e->nenv : 0; i-- > 0;)
        list = kiln_cons(m, kiln_tuple(m, 2, e->env[i].key, kiln_term_copy(m, kiln_msg_term(e->env[i].val))), list);
    pthread_mutex_unlock(&kiln_app_mu);
    if (rc == KILN_OK && kiln_is_none(list))
        rc = KILN_ENOMEM;
    if (rc != KILN_OK) {
        kiln_msg_free(m);
        return rc;
    }
    kiln_msg_set_term(m, list);
    *env = m;
    return KILN_OK;
}

/* ---- listing ---- */

static kiln_term app_tuple(kiln_msg *m, const struct kiln_app_entry *e)
{
    const char *d = e->description ? e->description : "", *v = e->vsn ? e->vsn : "";
    return kiln_tuple(m, 3, e->atom, kiln_string(m, d, strlen(d)), kiln_string(m, v, strlen(v)));
}

static int list_apps(kiln_rt *rt, kiln_msg **apps, bool running)
{
    rt = rt_of(rt);
    if (!rt || !apps)
        return KILN_EINVAL;
    *apps = NULL;
    kiln_msg *m = kiln_msg_new(256);
    if (!m)
        return KILN_ENOMEM;
    int rc = KILN_OK;
    kiln_term list = KILN_NIL;
    pthread_mutex_lock(&kiln_app_mu);
    struct kiln_app_node *n = kiln_app_node_find(rt);
    if (!n)
        rc = KILN_ESTOPPED;
    else if (running)
        for (size_t i = n->nrunning; i-- > 0;)
            list = kiln_cons(m, app_tuple(m, n->running[i]), list);
    else
        for (size_t i = n->napps; i-- > 0;)
            if (n->apps[i]->loaded)
                list = kiln_cons(m, app_tuple(m, n->apps[i]), list);
    pthread_mutex_unlock(&kiln_app_mu);
    if (rc == KILN_OK && kiln_is_none(list))
        rc = KILN_ENOMEM;
    if (rc != KILN_OK) {
        kiln_msg_free(m);
        return rc;
    }
    kiln_msg_set_term(m, list);
    *apps = m;
    return KILN_OK;
}

int kiln_app_which_applications(kiln_rt *rt, kiln_msg **apps) { return list_apps(rt, apps, true); }

int kiln_app_loaded_applications(kiln_rt *rt, kiln_msg **apps) { return list_apps(rt, apps, false); }

/* ---- calls to the controller ---- */

/* OTP's {error, Reason} replies as codes; *reason gets Reason. */
static int decode(kiln_msg *reply, kiln_msg **reason)
{
    kiln_term r = kiln_msg_term(reply), x;
    if (r == KILN_ATOM_OK) {
        kiln_msg_free(reply);
        return KILN_OK;
    }
    int rc = KILN_EEXIT;
    if (kiln_match(r, "{error,~t}", &x) != KILN_OK) {
        kiln_msg_free(reply);
        return KILN_EBADARG;
    }
    if (x == A("stopping"))
        rc = KILN_ESTOPPED;
    else if (x == A("badarg"))
        rc = KILN_EINVAL;
    else if (kiln_match(x, "{not_loaded,_}") == KILN_OK)
        rc = KILN_ENOTREG;
    else if (kiln_match(x, "{already_started,_}") == KILN_OK)
        rc = KILN_ENAME_TAKEN;
    else if (kiln_match(x, "{not_started,_}") == KILN_OK)
        rc = KILN_ENOPROC;
    if (reason) {
        kiln_msg_set_term(reply, x);
        *reason = reply;
    } else {
        kiln_msg_free(reply);
    }
    return rc;
}

/* A call to rt's controller; req is consumed. */
static int ac_call(kiln_rt *rt, kiln_msg *req, kiln_msg **reason)
{
    if (reason)
        *reason = NULL;
    if (!req)
        return KILN_ENOMEM;
    if (kiln_is_none(kiln_msg_term(req))) {
        kiln_msg_free(req);
        return KILN_ENOMEM;
    }
    pthread_mutex_lock(&kiln_app_mu);
    struct kiln_app_node *n = kiln_app_node_find(rt);
    /* While the node stops, the controller waits for the masters: a stop
     * callback calling it would never get an answer. */
    bool up = n && !n->stopping;
    pthread_mutex_unlock(&kiln_app_mu);
    if (!up) {
        kiln_msg_free(req);
        return KILN_ESTOPPED;
    }
    kiln_term ac = kiln_atom_c(KILN_APP_AC_NAME);
    if (kiln_current_rt() == rt && kiln_term_eq(kiln_self(), kiln_whereis(rt, ac))) {
        kiln_msg_free(req);
        return KILN_EINVAL; /* a hook calling its own controller */
    }
    kiln_msg *reply = NULL;
    int rc = kiln_gs_call(rt, ac, req, -1, &reply, NULL);
    if (rc == KILN_ENOPROC || rc == KILN_EEXIT)
        return KILN_ESTOPPED; /* no controller, or it stopped meanwhile */
    if (rc != KILN_OK)
        return rc;
    return decode(reply, reason);
}

static int start_atom(kiln_rt *rt, kiln_term app, kiln_app_type type, kiln_msg **reason)
{
    kiln_msg *req = kiln_msg_new(64);
    if (req)
        kiln_msg_set_term(req, kiln_tuple(req, 3, A("start_application"), app, A(kiln_app_type_name(type))));
    return ac_call(rt, req, reason);
}

int kiln_app_start(kiln_rt *rt, const char *name, kiln_app_type type, kiln_msg **reason)
{
    if (reason)
        *reason = NULL;
    rt = rt_of(rt);
    kiln_term a = name_atom(name);
    if (!rt || kiln_is_none(a) || type > KILN_APP_PERMANENT)
        return KILN_EINVAL;
    return start_atom(rt, a, type, reason);
}

int kiln_app_ensure_started(kiln_rt *rt, const char *name, kiln_app_type type, kiln_msg **reason)
{
    kiln_msg *why = NULL;
    int rc = kiln_app_start(rt, name, type, &why);
    if (rc == KILN_ENAME_TAKEN)
        rc = KILN_OK;
    if (reason && rc != KILN_OK)
        *reason = why;
    else
        kiln_msg_free(why);
    return rc;
}

int kiln_app_stop(kiln_rt *rt, const char *name)
{
    rt = rt_of(rt);
    kiln_term a = name_atom(name);
    if (!rt || kiln_is_none(a))
        return KILN_EINVAL;
    kiln_msg *req = kiln_msg_new(64);
    if (req)
        kiln_msg_set_term(req, kiln_tuple(req, 2, A("stop_application"), a));
    return ac_call(rt, req, NULL);
}

int kiln_app_shutdown(kiln_rt *rt)
{
    rt = rt_of(rt);
    if (!rt)
        return KILN_EINVAL;
    kiln_msg *req = kiln_msg_new(0);
    if (req)
        kiln_msg_set_term(req, A("shutdown"));
    return ac_call(rt, req, NULL);
}

/* ---- ensure_all_started ---- */

struct order {
    kiln_term *v;
    size_t n, cap;
    kiln_term *path; /* the dependency chain being walked, for cycles */
    size_t depth, pathcap;
    kiln_term bad, why; /* the failure: application and atom reason */
    kiln_term dep;      /* its dependency, for not_loaded and cycles */
};

static bool has(const kiln_term *v, size_t n, kiln_term a)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == a)
            return true;
    return false;
}

static bool push(kiln_term **v, size_t *n, size_t *cap, kiln_term a)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        kiln_term *nv = realloc(*v, ncap * sizeof(*nv));
        if (!nv)
            return false;
        *v = nv;
        *cap = ncap;
    }
    (*v)[(*n)++] = a;
    return true;
}

/* Depth first: the dependencies in their listed order, then a. Under
 * kiln_app_mu. */
static int walk(struct kiln_app_node *n, struct order *o, kiln_term a)
{
    if (has(o->v, o->n, a))
        return KILN_OK;
    if (has(o->path, o->depth, a)) {
        o->bad = o->path[o->depth - 1];
        o->why = A("circular_dependencies");
        o->dep = a;
        return KILN_EINVAL;
    }
    struct kiln_app_entry *e = kiln_app_entry_find(n, a, false);
    if (!e || !e->loaded) {
        o->bad = a;
        o->why = A("not_loaded");
        o->dep = a;
        return KILN_ENOTREG;
    }
    if (!push(&o->path, &o->depth, &o->pathcap, a))
        return KILN_ENOMEM;
    for (size_t i = 0; i < e->ndeps; i++) {
        int rc = walk(n, o, kiln_atom_c(e->deps[i]));
        if (rc != KILN_OK)
            return rc;
    }
    o->depth--;
    return push(&o->v, &o->n, &o->cap, a) ? KILN_OK : KILN_ENOMEM;
}

int kiln_app_ensure_all_started(kiln_rt *rt, const char *name, kiln_app_type type, kiln_msg **started,
                                kiln_msg **reason)
{
    if (started)
        *started = NULL;
    if (reason)
        *reason = NULL;
    rt = rt_of(rt);
    kiln_term a = name_atom(name);
    if (!rt || kiln_is_none(a) || type > KILN_APP_PERMANENT)
        return KILN_EINVAL;

    struct order o = {0};
    o.bad = o.why = o.dep = KILN_NONE;
    pthread_mutex_lock(&kiln_app_mu);
    struct kiln_app_node *n = kiln_app_node_find(rt);
    int rc = n ? walk(n, &o, a) : KILN_ESTOPPED;
    pthread_mutex_unlock(&kiln_app_mu);

    kiln_term *done = NULL;
    size_t ndone = 0, donecap = 0;
    kiln_msg *why = NULL;
    if (rc == KILN_OK) {
        for (size_t i = 0; i < o.n; i++) {
            rc = start_atom(rt, o.v[i], type, &why);
            if (rc == KILN_ENAME_TAKEN) { /* already running */
                kiln_msg_free(why);
                why = NULL;
                rc = KILN_OK;
                continue;
            }
            if (rc != KILN_OK) {
                o.bad = o.v[i];
                break;
            }
            if (!push(&done, &ndone, &donecap, o.v[i])) {
                rc = KILN_ENOMEM;
                o.bad = o.v[i];
                break;
            }
        }
    }
    if (rc != KILN_OK) {
        /* As OTP: undo what this call started, most recent first. */
        for (size_t i = ndone; i-- > 0;) {
            size_t len;
            const char *txt = kiln_atom_text(done[i], &len);
            char buf[256];
            if (txt && len < sizeof(buf)) {
                memcpy(buf, txt, len);
                buf[len] = '\0';
                kiln_app_stop(rt, buf);
            }
        }
        if (reason) {
            kiln_msg *m = kiln_msg_new(128);
            if (m) {
                kiln_term r;
                if (why)
                    r = kiln_term_copy(m, kiln_msg_term(why));
                else if (!kiln_is_none(o.why))
                    r = kiln_tuple(m, 2, o.why, o.dep);
                else
                    r = kiln_tuple(m, 2, A("kiln_error"), kiln_small(rc));
                kiln_msg_set_term(m, kiln_tuple(m, 2, kiln_is_none(o.bad) ? a : o.bad, r));
                *reason = m;
            }
        }
    } else if (started) {
        kiln_msg *m = kiln_msg_new(64);
        kiln_term list = m ? kiln_list_v(m, ndone, done, KILN_NIL) : KILN_NONE;
        if (kiln_is_none(list)) {
            kiln_msg_free(m);
        } else {
            kiln_msg_set_term(m, list);
            *started = m;
        }
    }
    kiln_msg_free(why);
    free(done);
    free(o.v);
    free(o.path);
    return rc;
}

/* ---- waiting for the node to stop ---- */

int kiln_app_wait(kiln_rt *rt, int64_t timeout_ms, kiln_msg **reason)
{
    if (reason)
        *reason = NULL;
    if (!rt || kiln_current_rt())
        return KILN_EINVAL; /* a worker must not sleep on a condition variable */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    if (timeout_ms > 0) {
        until.tv_sec += timeout_ms / 1000;
        until.tv_nsec += (timeout_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&kiln_app_mu);
    struct kiln_app_node *n = node_any(rt);
    if (!n) {
        pthread_mutex_unlock(&kiln_app_mu);
        return KILN_ENOPROC;
    }
    n->refs++;
    int rc = KILN_OK;
    while (!n->stopped) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&n->cv, &kiln_app_mu);
        } else if (timeout_ms == 0 || pthread_cond_timedwait(&n->cv, &kiln_app_mu, &until) != 0) {
            if (!n->stopped)
                rc = KILN_ETIMEOUT;
            break;
        }
    }
    if (rc == KILN_OK && reason && n->stop_reason) {
        kiln_msg *m = kiln_msg_new(128);
        kiln_term t = m ? kiln_term_copy(m, kiln_msg_term(n->stop_reason)) : KILN_NONE;
        if (kiln_is_none(t)) {
            kiln_msg_free(m);
        } else {
            kiln_msg_set_term(m, t);
            *reason = m;
        }
    }
    kiln_term ac = n->controller;
    kiln_app_node_unref(n);
    pthread_mutex_unlock(&kiln_app_mu);
    /* stopped is set in the controller's terminate: let it finish exiting,
     * so its name is free when this returns (a new controller may start). */
    while (rc == KILN_OK && kiln_is_alive(rt, ac))
        kiln_app_nap(1);
    return rc;
}
