/* supervisor, after OTP's supervisor.erl, as a Kiln gen_server that traps
 * exits. Children are kept in start order; restarts, intensity, shutdown
 * and auto_shutdown follow OTP's rules (do_restart, add_restart,
 * shutdown/2, terminate_children).
 *
 * Shutting a child down blocks the supervisor in a receive, as in OTP: it
 * handles nothing else meanwhile. A restart whose start fails marks the
 * child restarting and retries through a message to itself, so other
 * messages (and the intensity count) get their turn between attempts. */
#include <stdlib.h>
#include <string.h>

#include "kiln/supervisor.h"
#include "otp/otp_internal.h"

struct child {
    kiln_child_spec spec; /* spec.id points at id_str */
    char *id_str;
    kiln_term id;         /* atom; undefined for simple_one_for_one */
    kiln_term pid;        /* KILN_NONE = undefined */
    bool restarting;
    kiln_msg *extra;      /* simple_one_for_one: the start's extra */
    uint64_t key;         /* names the child in retry messages */
};

struct sup {
    kiln_sup_strategy strategy;
    int intensity;
    uint64_t period_ms;
    kiln_auto_shutdown auto_shutdown;
    struct child **kids;  /* start order */
    size_t n, cap;
    kiln_child_spec tmpl; /* simple_one_for_one */
    char *tmpl_id;
    uint64_t *restarts;   /* times of recent restarts, oldest first */
    size_t nrestarts, restarts_cap;
    uint64_t next_key;
    /* What a shutdown in progress allocated: the wait can be killed. */
    kiln_msg *wait_msg;
    struct down_wait *wait_refs;
    struct child **wait_live;
};

static kiln_term A(const char *s) { return kiln_atom_c(s); }

/* ---- children ---- */

static bool simple(const struct sup *s) { return s->strategy == KILN_SIMPLE_ONE_FOR_ONE; }

static void child_free(struct child *c)
{
    if (!c)
        return;
    free(c->id_str);
    kiln_msg_free(c->extra);
    free(c);
}

static int64_t shutdown_of(const kiln_child_spec *spec)
{
    if (spec->shutdown_ms != KILN_SHUTDOWN_DEFAULT)
        return spec->shutdown_ms;
    return spec->type == KILN_SUPERVISOR ? KILN_SHUTDOWN_INFINITY : 5000;
}

static int validate(const kiln_child_spec *spec)
{
    if (!spec || !spec->id || !spec->start || spec->restart > KILN_TEMPORARY || spec->type > KILN_SUPERVISOR ||
        spec->shutdown_ms < KILN_SHUTDOWN_BRUTAL_KILL)
        return KILN_EINVAL;
    if (spec->significant && spec->restart == KILN_PERMANENT)
        return KILN_EINVAL; /* OTP: a significant child cannot be permanent */
    if (kiln_is_none(kiln_atom_c(spec->id)))
        return KILN_EINVAL;
    return KILN_OK;
}

static struct child *child_new(struct sup *s, const kiln_child_spec *spec, kiln_term extra)
{
    struct child *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->spec = *spec;
    c->id_str = strdup(spec->id);
    c->spec.id = c->id_str;
    c->id = simple(s) ? KILN_ATOM_UNDEFINED : kiln_atom_c(spec->id);
    c->pid = KILN_NONE;
    c->key = ++s->next_key;
    if (!kiln_is_none(extra)) {
        c->extra = kiln_msg_new(64);
        if (c->extra)
            kiln_msg_set_term(c->extra, kiln_term_copy(c->extra, extra));
        if (!c->extra || kiln_is_none(kiln_msg_term(c->extra))) {
            child_free(c);
            return NULL;
        }
    }
    if (!c->id_str) {
        child_free(c);
        return NULL;
    }
    return c;
}

static bool append(struct sup *s, struct child *c)
{
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 8;
        struct child **k = realloc(s->kids, ncap * sizeof(*k));
        if (!k)
            return false;
        s->kids = k;
        s->cap = ncap;
    }
    s->kids[s->n++] = c;
    return true;
}

static size_t index_of(const struct sup *s, const struct child *c)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->kids[i] == c)
            return i;
    return s->n;
}

static void remove_child(struct sup *s, struct child *c)
{
    size_t i = index_of(s, c);
    if (i == s->n)
        return;
    memmove(&s->kids[i], &s->kids[i + 1], (s->n - i - 1) * sizeof(*s->kids));
    s->n--;
    child_free(c);
}

static struct child *find_pid(const struct sup *s, kiln_term pid)
{
    for (size_t i = 0; i < s->n; i++)
        if (!kiln_is_none(s->kids[i]->pid) && kiln_term_eq(s->kids[i]->pid, pid))
            return s->kids[i];
    return NULL;
}

static struct child *find_id(const struct sup *s, kiln_term id)
{
    if (kiln_is_pid(id))
        return find_pid(s, id);
    if (simple(s))
        return NULL;
    for (size_t i = 0; i < s->n; i++)
        if (s->kids[i]->id == id)
            return s->kids[i];
    return NULL;
}

static struct child *find_key(const struct sup *s, uint64_t key)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->kids[i]->key == key)
            return s->kids[i];
    return NULL;
}

/* ---- starting ---- */

static int start_one(struct child *c)
{
    kiln_term pid = KILN_NONE;
    int rc = c->spec.start(c->spec.arg, c->extra ? kiln_msg_term(c->extra) : KILN_NIL, &pid);
    if (rc != KILN_OK)
        return rc;
    c->pid = kiln_is_local_pid(pid) || kiln_is_pid(pid) ? pid : KILN_NONE;
    c->restarting = false;
    return KILN_OK;
}

/* ---- shutting down (OTP's shutdown/2) ---- */

struct down_wait {
    kiln_term mref;
};

static bool is_down(kiln_term t, void *arg)
{
    const struct down_wait *w = arg;
    return kiln_is_tuple(t) && kiln_tuple_arity(t) == 5 && kiln_tuple_get(t, 0) == KILN_ATOM_DOWN &&
           kiln_term_eq(kiln_tuple_get(t, 1), w->mref);
}

static int wait_down(struct down_wait *w, int64_t timeout_ms)
{
    kiln_msg *m = NULL;
    int rc = kiln_receive(is_down, w, timeout_ms, &m);
    if (rc == KILN_OK)
        kiln_msg_free(m);
    return rc;
}

/* Ask the children in kids[0..n) to stop, all at once, then wait for each
 * within its own shutdown time (counted from the request), killing the
 * ones that take longer. One child is the sequential case. */
static void shutdown_children(struct sup *s, struct child **kids, size_t n)
{
    kiln_msg *tm = kiln_msg_new(64 + n * 48);
    struct down_wait *w = calloc(n ? n : 1, sizeof(*w));
    s->wait_msg = tm;
    s->wait_refs = w;
    if (!tm || !w) {
        /* No memory to watch them: kill, which needs no wait to be sure. */
        for (size_t i = 0; i < n; i++) {
            if (!kiln_is_none(kids[i]->pid)) {
                kiln_exit(kids[i]->pid, KILN_ATOM_KILL);
                kiln_otp_unlink_flush(kids[i]->pid, NULL);
            }
        }
        kiln_msg_free(tm);
        free(w);
        s->wait_msg = NULL;
        s->wait_refs = NULL;
        return;
    }
    uint64_t t0 = kiln_now_ms();
    for (size_t i = 0; i < n; i++) {
        w[i].mref = KILN_NONE;
        if (kiln_is_none(kids[i]->pid) || kiln_monitor(kids[i]->pid, tm, &w[i].mref) != KILN_OK)
            continue;
        bool brutal = shutdown_of(&kids[i]->spec) == KILN_SHUTDOWN_BRUTAL_KILL;
        kiln_exit(kids[i]->pid, brutal ? KILN_ATOM_KILL : KILN_ATOM_SHUTDOWN);
    }
    for (size_t i = 0; i < n; i++) {
        if (kiln_is_none(w[i].mref))
            continue;
        int64_t sd = shutdown_of(&kids[i]->spec);
        int64_t left = -1;
        if (sd >= 0) {
            uint64_t spent = kiln_now_ms() - t0;
            left = spent >= (uint64_t)sd ? 0 : sd - (int64_t)spent;
        }
        if (wait_down(&w[i], sd == KILN_SHUTDOWN_BRUTAL_KILL ? -1 : left) == KILN_ETIMEOUT) {
            kiln_exit(kids[i]->pid, KILN_ATOM_KILL);
            wait_down(&w[i], -1);
        }
        /* The DOWN came after the 'EXIT' (links go first): drop it. */
        kiln_otp_unlink_flush(kids[i]->pid, NULL);
        kids[i]->pid = KILN_NONE;
    }
    kiln_msg_free(tm);
    free(w);
    s->wait_msg = NULL;
    s->wait_refs = NULL;
}

static void shutdown_child(struct sup *s, struct child *c)
{
    if (!kiln_is_none(c->pid))
        shutdown_children(s, &c, 1);
}

/* OTP's terminate_children over kids[from..): in reverse start order, one
 * at a time (all at once for simple_one_for_one); temporary children are
 * removed, the others kept for a restart. except is left alone. */
static void terminate_range(struct sup *s, size_t from, struct child *except)
{
    if (simple(s)) {
        size_t m = 0;
        struct child **live = malloc((s->n ? s->n : 1) * sizeof(*live));
        for (size_t i = from; live && i < s->n; i++)
            if (s->kids[i] != except)
                live[m++] = s->kids[i];
        s->wait_live = live;
        if (live)
            shutdown_children(s, live, m);
        free(live);
        s->wait_live = NULL;
    } else {
        for (size_t i = s->n; i-- > from;)
            if (s->kids[i] != except)
                shutdown_child(s, s->kids[i]);
    }
    for (size_t i = s->n; i-- > from;) {
        struct child *c = s->kids[i];
        if (c == except)
            continue;
        c->restarting = false;
        if (c->spec.restart == KILN_TEMPORARY || simple(s))
            remove_child(s, c);
    }
}

/* ---- restarts ---- */

static bool add_restart(struct sup *s)
{
    uint64_t now = kiln_now_ms();
    size_t keep = 0;
    for (size_t i = 0; i < s->nrestarts; i++)
        if (s->restarts[i] + s->period_ms > now)
            s->restarts[keep++] = s->restarts[i];
    s->nrestarts = keep;
    if (s->nrestarts == s->restarts_cap) {
        size_t ncap = s->restarts_cap ? s->restarts_cap * 2 : 8;
        uint64_t *r = realloc(s->restarts, ncap * sizeof(*r));
        if (!r)
            return false;
        s->restarts = r;
        s->restarts_cap = ncap;
    }
    s->restarts[s->nrestarts++] = now;
    return s->nrestarts <= (size_t)(s->intensity < 0 ? 0 : s->intensity);
}

static void schedule_retry(struct child *c)
{
    c->restarting = true;
    c->pid = KILN_NONE;
    kiln_msg *m = kiln_msg_new(32);
    if (!m)
        return;
    kiln_msg_set_term(m, kiln_tuple(m, 2, A("$kiln_sup_retry"), kiln_int(m, (int64_t)c->key)));
    kiln_send(kiln_self(), m);
}

/* Start kids[from..) that are not running, in order; a failure marks
 * that child for a retry and leaves the rest for it. */
static void start_range(struct sup *s, size_t from)
{
    for (size_t i = from; i < s->n; i++) {
        struct child *c = s->kids[i];
        if (!kiln_is_none(c->pid))
            continue;
        if (start_one(c) != KILN_OK) {
            schedule_retry(c);
            return;
        }
    }
}

/* OTP's restart/2 for c, whose process is gone. false: the intensity is
 * exceeded and the supervisor must stop. */
static bool restart(struct sup *s, struct child *c)
{
    if (!add_restart(s)) {
        c->pid = KILN_NONE;
        c->restarting = false;
        if (c->spec.restart == KILN_TEMPORARY || simple(s))
            remove_child(s, c);
        return false;
    }
    c->pid = KILN_NONE;
    switch (s->strategy) {
    case KILN_ONE_FOR_ONE:
        if (start_one(c) != KILN_OK)
            schedule_retry(c);
        break;
    case KILN_SIMPLE_ONE_FOR_ONE:
        if (start_one(c) != KILN_OK)
            schedule_retry(c);
        else if (kiln_is_none(c->pid))
            remove_child(s, c); /* ignore on restart */
        break;
    case KILN_REST_FOR_ONE: {
        size_t i = index_of(s, c);
        terminate_range(s, i + 1, NULL);
        start_range(s, index_of(s, c));
        break;
    }
    case KILN_ONE_FOR_ALL:
        terminate_range(s, 0, c);
        start_range(s, 0);
        break;
    }
    return true;
}

static bool normal_exit(kiln_term reason)
{
    return reason == KILN_ATOM_NORMAL || reason == KILN_ATOM_SHUTDOWN ||
           (kiln_is_tuple(reason) && kiln_tuple_arity(reason) == 2 && kiln_tuple_get(reason, 0) == KILN_ATOM_SHUTDOWN);
}

/* OTP's do_auto_shutdown after a significant child ended by itself. */
static bool auto_shutdown(struct sup *s, bool significant)
{
    if (!significant || s->auto_shutdown == KILN_AUTO_SHUTDOWN_NEVER)
        return false;
    if (s->auto_shutdown == KILN_AUTO_SHUTDOWN_ANY_SIGNIFICANT)
        return true;
    for (size_t i = 0; i < s->n; i++)
        if (s->kids[i]->spec.significant && !kiln_is_none(s->kids[i]->pid))
            return false;
    return true;
}

/* A child exited with reason: OTP's do_restart. false: stop the supervisor. */
static bool child_exited(struct sup *s, struct child *c, kiln_term reason)
{
    bool again = c->spec.restart == KILN_PERMANENT || (c->spec.restart == KILN_TRANSIENT && !normal_exit(reason));
    if (again)
        return restart(s, c);
    bool significant = c->spec.significant;
    c->pid = KILN_NONE;
    if (c->spec.restart == KILN_TEMPORARY || simple(s))
        remove_child(s, c);
    return !auto_shutdown(s, significant);
}

/* ---- gen_server callbacks ---- */

static void sup_free(struct sup *s)
{
    for (size_t i = 0; i < s->n; i++)
        child_free(s->kids[i]);
    free(s->kids);
    free(s->restarts);
    free(s->tmpl_id);
    kiln_msg_free(s->wait_msg);
    free(s->wait_refs);
    free(s->wait_live);
    free(s);
}

/* init's failures carry a term reason built in a message of its own. */
static kiln_gs_ret init_fail(struct sup *s, const char *fmt, kiln_term a, int64_t b)
{
    if (s)
        sup_free(s);
    kiln_msg *m = kiln_msg_new(128);
    kiln_term r = m ? kiln_build(m, fmt, a, b) : KILN_NONE;
    return kiln_gs_hold(kiln_gs_stop(kiln_is_none(r) ? KILN_ATOM_SHUTDOWN : r), m);
}

static kiln_gs_ret sup_init(void *arg, void **state)
{
    const kiln_sup_spec *spec = arg;
    kiln_trap_exit(true);
    if (!spec || spec->strategy > KILN_SIMPLE_ONE_FOR_ONE || spec->auto_shutdown > KILN_AUTO_SHUTDOWN_ALL_SIGNIFICANT ||
        (spec->nchildren && !spec->children) || (spec->strategy == KILN_SIMPLE_ONE_FOR_ONE && spec->nchildren != 1))
        return kiln_gs_stop(A("bad_supervisor_spec"));
    struct sup *s = calloc(1, sizeof(*s));
    if (!s)
        return kiln_gs_stop(A("enomem"));
    s->strategy = spec->strategy;
    s->intensity = spec->intensity;
    s->period_ms = spec->period_ms ? spec->period_ms : 5000;
    s->auto_shutdown = spec->auto_shutdown;

    for (size_t i = 0; i < spec->nchildren; i++) {
        const kiln_child_spec *cs = &spec->children[i];
        if (validate(cs) != KILN_OK)
            return init_fail(s, "{bad_child_spec,~t,~i}", cs->id ? kiln_atom_c(cs->id) : KILN_ATOM_UNDEFINED,
                             (int64_t)i);
        if (simple(s)) {
            s->tmpl = *cs;
            s->tmpl_id = strdup(cs->id);
            s->tmpl.id = s->tmpl_id;
            if (!s->tmpl_id)
                return init_fail(s, "{enomem,~t,~i}", KILN_NIL, 0);
            continue;
        }
        if (find_id(s, kiln_atom_c(cs->id)))
            return init_fail(s, "{duplicate_child_name,~t,~i}", kiln_atom_c(cs->id), (int64_t)i);
        struct child *c = child_new(s, cs, KILN_NONE);
        if (!c || !append(s, c)) {
            child_free(c);
            return init_fail(s, "{enomem,~t,~i}", KILN_NIL, 0);
        }
    }
    /* OTP's init_children: in order; on a failure, shut down the ones
     * already started (in reverse) and fail naming the child. */
    for (size_t i = 0; i < s->n; i++) {
        struct child *c = s->kids[i];
        int rc = start_one(c);
        if (rc == KILN_OK) {
            if (kiln_is_none(c->pid) && c->spec.restart == KILN_TEMPORARY) {
                remove_child(s, c);
                i--;
            }
            continue;
        }
        kiln_term id = c->id;
        terminate_range(s, 0, NULL);
        return init_fail(s, "{shutdown,{failed_to_start_child,~t,{kiln_error,~i}}}", id, (int64_t)rc);
    }
    *state = s;
    return kiln_gs_ok();
}

/* ---- management calls (OTP's requests and replies) ---- */

static kiln_term which_children(struct sup *s, kiln_msg *m)
{
    kiln_term list = KILN_NIL;
    for (size_t i = s->n; i-- > 0;) {
        struct child *c = s->kids[i];
        kiln_term p = !kiln_is_none(c->pid) ? c->pid : A(c->restarting ? "restarting" : "undefined");
        kiln_term type = A(c->spec.type == KILN_SUPERVISOR ? "supervisor" : "worker");
        list = kiln_cons(m, kiln_tuple(m, 4, c->id, p, type, KILN_NIL), list);
    }
    return list;
}

static kiln_term count_children(struct sup *s, kiln_msg *m)
{
    int64_t active = 0, sups = 0, workers = 0;
    for (size_t i = 0; i < s->n; i++) {
        struct child *c = s->kids[i];
        active += !kiln_is_none(c->pid);
        if (c->spec.type == KILN_SUPERVISOR)
            sups++;
        else
            workers++;
    }
    int64_t specs = simple(s) ? 1 : (int64_t)s->n;
    return kiln_build(m, "[{specs,~i},{active,~i},{supervisors,~i},{workers,~i}]", specs, active, sups, workers);
}

static kiln_term err(kiln_msg *m, kiln_term what) { return kiln_tuple(m, 2, KILN_ATOM_ERROR, what); }

static kiln_term start_error(kiln_msg *m, int rc)
{
    return err(m, kiln_tuple(m, 2, A("kiln_error"), kiln_small(rc)));
}

/* A C child spec travels as {'$kiln_child_spec', <<struct, id>>}: a copy,
 * so the caller's spec may go away whatever happens to the call. */
static bool spec_from_binary(kiln_term bin, kiln_child_spec *spec, char *id, size_t idcap)
{
    const uint8_t *d;
    size_t len;
    if (kiln_get_binary(bin, &d, &len) != KILN_OK || len <= sizeof(*spec) || len - sizeof(*spec) > idcap)
        return false;
    memcpy(spec, d, sizeof(*spec));
    memcpy(id, d + sizeof(*spec), len - sizeof(*spec));
    if (id[len - sizeof(*spec) - 1] != '\0')
        return false;
    spec->id = id;
    return true;
}

static kiln_term do_start_child(struct sup *s, kiln_term arg, kiln_msg *m)
{
    struct child *c;
    if (simple(s)) {
        c = child_new(s, &s->tmpl, arg);
        if (!c)
            return start_error(m, KILN_ENOMEM);
    } else {
        kiln_child_spec spec;
        char id[256];
        kiln_term bin;
        if (kiln_match(arg, "{'$kiln_child_spec',~t}", &bin) != KILN_OK || !spec_from_binary(bin, &spec, id, sizeof(id)) ||
            validate(&spec) != KILN_OK)
            return err(m, A("invalid_child_spec"));
        struct child *old = find_id(s, kiln_atom_c(spec.id));
        if (old) {
            if (!kiln_is_none(old->pid))
                return err(m, kiln_tuple(m, 2, A("already_started"), old->pid));
            return err(m, A("already_present"));
        }
        c = child_new(s, &spec, KILN_NONE);
        if (!c)
            return start_error(m, KILN_ENOMEM);
    }
    int rc = start_one(c);
    if (rc != KILN_OK) {
        child_free(c);
        return start_error(m, rc);
    }
    kiln_term pid = c->pid;
    bool keep = !kiln_is_none(pid) || (!simple(s) && c->spec.restart != KILN_TEMPORARY);
    if (!keep || !append(s, c)) {
        if (keep) {
            /* No room to track it: it must not run unsupervised. */
            shutdown_child(s, c);
            child_free(c);
            return start_error(m, KILN_ENOMEM);
        }
        child_free(c);
    }
    return kiln_tuple(m, 2, KILN_ATOM_OK, kiln_is_none(pid) ? KILN_ATOM_UNDEFINED : pid);
}

static kiln_term do_terminate_child(struct sup *s, kiln_term id, kiln_msg *m)
{
    if (simple(s) && !kiln_is_pid(id))
        return err(m, A("simple_one_for_one"));
    struct child *c = find_id(s, id);
    if (!c)
        return err(m, A("not_found"));
    shutdown_child(s, c);
    c->restarting = false;
    if (simple(s) || c->spec.restart == KILN_TEMPORARY)
        remove_child(s, c);
    return KILN_ATOM_OK;
}

static kiln_term do_restart_child(struct sup *s, kiln_term id, kiln_msg *m)
{
    if (simple(s))
        return err(m, A("simple_one_for_one"));
    struct child *c = find_id(s, id);
    if (!c)
        return err(m, A("not_found"));
    if (c->restarting)
        return err(m, A("restarting"));
    if (!kiln_is_none(c->pid))
        return err(m, A("running"));
    int rc = start_one(c);
    if (rc != KILN_OK)
        return start_error(m, rc);
    return kiln_tuple(m, 2, KILN_ATOM_OK, kiln_is_none(c->pid) ? KILN_ATOM_UNDEFINED : c->pid);
}

static kiln_term do_delete_child(struct sup *s, kiln_term id, kiln_msg *m)
{
    if (simple(s))
        return err(m, A("simple_one_for_one"));
    struct child *c = find_id(s, id);
    if (!c)
        return err(m, A("not_found"));
    if (c->restarting)
        return err(m, A("restarting"));
    if (!kiln_is_none(c->pid))
        return err(m, A("running"));
    remove_child(s, c);
    return KILN_ATOM_OK;
}

static kiln_gs_ret sup_call(void *state, kiln_term req, kiln_term from)
{
    (void)from;
    struct sup *s = state;
    kiln_msg *m = kiln_msg_new(256);
    if (!m)
        return kiln_gs_reply(A("enomem"));
    kiln_term x, r;
    if (req == A("which_children"))
        r = which_children(s, m);
    else if (req == A("count_children"))
        r = count_children(s, m);
    else if (kiln_match(req, "{start_child,~t}", &x) == KILN_OK)
        r = do_start_child(s, x, m);
    else if (kiln_match(req, "{terminate_child,~t}", &x) == KILN_OK)
        r = do_terminate_child(s, x, m);
    else if (kiln_match(req, "{restart_child,~t}", &x) == KILN_OK)
        r = do_restart_child(s, x, m);
    else if (kiln_match(req, "{delete_child,~t}", &x) == KILN_OK)
        r = do_delete_child(s, x, m);
    else
        r = err(m, kiln_tuple(m, 2, A("unknown_call"), kiln_term_copy(m, req)));
    kiln_msg_set_term(m, kiln_is_none(r) ? A("enomem") : r);
    return kiln_gs_reply_msg(m);
}

static kiln_gs_ret sup_info(void *state, kiln_msg *msg)
{
    struct sup *s = state;
    kiln_term t = kiln_msg_term(msg), pid, reason;
    int64_t key;
    if (kiln_match(t, "{'EXIT',~p,~t}", &pid, &reason) == KILN_OK) {
        struct child *c = find_pid(s, pid);
        if (c && !child_exited(s, c, reason))
            return kiln_gs_stop(KILN_ATOM_SHUTDOWN);
    } else if (kiln_match(t, "{'$kiln_sup_retry',~i}", &key) == KILN_OK) {
        struct child *c = find_key(s, (uint64_t)key);
        if (c && c->restarting && !restart(s, c))
            return kiln_gs_stop(KILN_ATOM_SHUTDOWN);
    }
    return kiln_gs_noreply();
}

static void free_cut(void *state) { sup_free(state); }

static void sup_terminate(void *state, kiln_term reason)
{
    (void)reason;
    struct sup *s = state;
    /* From the runtime's exit path (killed) nothing may block; the
     * children then get our exit through their links, as in OTP. So does
     * a kill that comes while we wait for them here. */
    if (kiln_otp_terminate_in_loop(s)) {
        kiln_otp_terminate_guard(s, free_cut);
        terminate_range(s, 0, NULL);
    }
    sup_free(s);
}

static const kiln_gen_server sup_gs = {
    .name = "supervisor",
    .init = sup_init,
    .handle_call = sup_call,
    .handle_info = sup_info,
    .terminate = sup_terminate,
};

/* ---- public API ---- */

int kiln_sup_start_link(const kiln_sup_spec *spec, const char *name, kiln_term *pid, kiln_msg **reason)
{
    kiln_gs_opts o = {.name = name, .trap_exit = true};
    return kiln_gs_start_link(&sup_gs, (void *)spec, &o, pid, reason);
}

int kiln_sup_start(kiln_rt *rt, const kiln_sup_spec *spec, const char *name, kiln_term *pid, kiln_msg **reason)
{
    kiln_gs_opts o = {.name = name, .trap_exit = true};
    return kiln_gs_start(rt, &sup_gs, (void *)spec, &o, pid, reason);
}

/* OTP's reply to a C result. */
static int decode(kiln_term r, kiln_term *pid)
{
    kiln_term x;
    if (pid)
        *pid = KILN_NONE;
    if (r == KILN_ATOM_OK)
        return KILN_OK;
    if (kiln_match(r, "{ok,~t}", &x) == KILN_OK) {
        if (pid && kiln_is_pid(x))
            *pid = x;
        return KILN_OK;
    }
    if (kiln_match(r, "{error,~t}", &x) != KILN_OK)
        return KILN_EBADARG;
    int64_t code;
    kiln_term p;
    if (x == A("not_found"))
        return KILN_ENOTREG;
    if (x == A("running") || x == A("restarting"))
        return KILN_EBUSY;
    if (x == A("simple_one_for_one"))
        return KILN_ENOTSUP;
    if (x == A("already_present"))
        return KILN_ENAME_TAKEN;
    if (kiln_match(x, "{already_started,~p}", &p) == KILN_OK) {
        if (pid)
            *pid = p;
        return KILN_ENAME_TAKEN;
    }
    if (x == A("invalid_child_spec"))
        return KILN_EINVAL;
    if (kiln_match(x, "{kiln_error,~i}", &code) == KILN_OK && code < 0 && code >= KILN_ELAST)
        return (int)code;
    return KILN_EBADARG;
}

/* Supervisor calls wait forever, as OTP's do (infinity). */
static int sup_request(kiln_rt *rt, kiln_term sup, kiln_msg *req, kiln_term *pid)
{
    if (!req)
        return KILN_ENOMEM;
    kiln_msg *reply = NULL;
    int rc = kiln_gs_call(rt, sup, req, -1, &reply, NULL);
    if (rc != KILN_OK)
        return rc;
    rc = decode(kiln_msg_term(reply), pid);
    kiln_msg_free(reply);
    return rc;
}

static kiln_msg *request(const char *tag, kiln_term arg)
{
    kiln_msg *m = kiln_msg_new(64);
    if (!m)
        return NULL;
    kiln_term t = kiln_tuple(m, 2, A(tag), kiln_term_copy(m, arg));
    if (kiln_is_none(t)) {
        kiln_msg_free(m);
        return NULL;
    }
    kiln_msg_set_term(m, t);
    return m;
}

int kiln_sup_start_child(kiln_rt *rt, kiln_term sup, const kiln_child_spec *spec, kiln_term *pid)
{
    if (pid)
        *pid = KILN_NONE;
    if (validate(spec) != KILN_OK)
        return KILN_EINVAL;
    size_t idlen = strlen(spec->id) + 1;
    if (idlen > 256)
        return KILN_EINVAL;
    uint8_t buf[sizeof(*spec) + 256];
    memcpy(buf, spec, sizeof(*spec));
    memcpy(buf + sizeof(*spec), spec->id, idlen);
    kiln_msg *m = kiln_msg_new(sizeof(buf) + 64);
    if (!m)
        return KILN_ENOMEM;
    kiln_term arg = kiln_tuple(m, 2, A("$kiln_child_spec"), kiln_binary(m, buf, sizeof(*spec) + idlen));
    kiln_msg_set_term(m, kiln_tuple(m, 2, A("start_child"), arg));
    if (kiln_is_none(kiln_msg_term(m))) {
        kiln_msg_free(m);
        return KILN_ENOMEM;
    }
    return sup_request(rt, sup, m, pid);
}

int kiln_sup_start_child_extra(kiln_rt *rt, kiln_term sup, kiln_term extra, kiln_term *pid)
{
    return sup_request(rt, sup, request("start_child", extra), pid);
}

int kiln_sup_terminate_child(kiln_rt *rt, kiln_term sup, kiln_term id)
{
    return sup_request(rt, sup, request("terminate_child", id), NULL);
}

int kiln_sup_restart_child(kiln_rt *rt, kiln_term sup, kiln_term id, kiln_term *pid)
{
    return sup_request(rt, sup, request("restart_child", id), pid);
}

int kiln_sup_delete_child(kiln_rt *rt, kiln_term sup, kiln_term id)
{
    return sup_request(rt, sup, request("delete_child", id), NULL);
}

int kiln_sup_which_children(kiln_rt *rt, kiln_term sup, kiln_msg **children)
{
    if (!children)
        return KILN_EINVAL;
    kiln_msg *req = kiln_msg_new(0);
    if (!req)
        return KILN_ENOMEM;
    kiln_msg_set_term(req, A("which_children"));
    return kiln_gs_call(rt, sup, req, -1, children, NULL);
}

int kiln_sup_count_children(kiln_rt *rt, kiln_term sup, kiln_sup_counts *out)
{
    if (!out)
        return KILN_EINVAL;
    kiln_msg *req = kiln_msg_new(0), *reply = NULL;
    if (!req)
        return KILN_ENOMEM;
    kiln_msg_set_term(req, A("count_children"));
    int rc = kiln_gs_call(rt, sup, req, -1, &reply, NULL);
    if (rc != KILN_OK)
        return rc;
    int64_t sp, ac, su, wo;
    if (kiln_match(kiln_msg_term(reply), "[{specs,~i},{active,~i},{supervisors,~i},{workers,~i}]", &sp, &ac, &su,
                   &wo) == KILN_OK) {
        out->specs = (size_t)sp;
        out->active = (size_t)ac;
        out->supervisors = (size_t)su;
        out->workers = (size_t)wo;
    } else {
        rc = KILN_EBADARG;
    }
    kiln_msg_free(reply);
    return rc;
}

int kiln_gs_child_start(void *arg, kiln_term extra, kiln_term *pid)
{
    (void)extra;
    const kiln_gs_child *c = arg;
    return kiln_gs_start_link(c->gs, c->arg, &c->opts, pid, NULL);
}

int kiln_sup_child_start(void *arg, kiln_term extra, kiln_term *pid)
{
    (void)extra;
    return kiln_sup_start_link(arg, NULL, pid, NULL);
}
