/* rpc: Erlang calling C and C calling Erlang, the way OTP 25 does it.
 *
 * rpc:call/erpc:call reach a node only through SPAWN_REQUEST (brief
 * §6.4): the caller asks for a process running erpc:execute_call(ResRef,
 * M, F, A) with a monitor whose ref is the request id, and learns the
 * result from the process's exit reason: {ResRef, return, Value}, or
 * {ResRef, error|exit|throw, ...}. Here that process runs the C function
 * registered under M:F/length(A); an unknown one exits like an undefined
 * function does on a BEAM node. */
#include <string.h>

#include "dist/node_internal.h"
#include "runtime/alloc.h"
#include "runtime/dist_hooks.h"
#include "runtime/rt.h"

enum { DOP_SPAWN_REQUEST = 29, DOP_SPAWN_REPLY = 31 };
enum job_kind { JOB_CALL, JOB_CAST, JOB_SPAWN };

struct rpc_entry {
    kiln_term mod, fun;
    unsigned arity;
    kiln_rpc_fn fn;
    void *arg;
};

/* The registry is per node and small; registration is rare. */
struct rpc_registry {
    pthread_mutex_t lock;
    struct rpc_entry *v;
    size_t n, cap;
};

static struct rpc_registry *registry_of(kiln_node *n)
{
    return n->rpc;
}

int kiln_rpc_init(kiln_node *n)
{
    struct rpc_registry *r = kiln_calloc(1, sizeof(*r));
    if (!r)
        return KILN_ENOMEM;
    pthread_mutex_init(&r->lock, NULL);
    n->rpc = r;
    return KILN_OK;
}

void kiln_rpc_fini(kiln_node *n)
{
    struct rpc_registry *r = registry_of(n);
    if (!r)
        return;
    pthread_mutex_destroy(&r->lock);
    kiln_free(r->v);
    kiln_free(r);
    n->rpc = NULL;
}

int kiln_node_register_rpc(kiln_node *n, const char *module, const char *function, unsigned arity, kiln_rpc_fn fn,
                           void *arg)
{
    if (!n || !module || !function || !fn || arity > 255)
        return KILN_EINVAL;
    kiln_term m = kiln_atom_c(module), f = kiln_atom_c(function);
    if (kiln_is_none(m) || kiln_is_none(f))
        return KILN_EINVAL;
    struct rpc_registry *r = registry_of(n);
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n; i++) {
        if (r->v[i].mod == m && r->v[i].fun == f && r->v[i].arity == arity) {
            r->v[i].fn = fn;
            r->v[i].arg = arg;
            pthread_mutex_unlock(&r->lock);
            return KILN_OK;
        }
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        struct rpc_entry *v = kiln_realloc(r->v, cap * sizeof(*v));
        if (!v) {
            pthread_mutex_unlock(&r->lock);
            return KILN_ENOMEM;
        }
        r->v = v;
        r->cap = cap;
    }
    r->v[r->n++] = (struct rpc_entry){m, f, arity, fn, arg};
    pthread_mutex_unlock(&r->lock);
    return KILN_OK;
}

static bool lookup(kiln_node *n, kiln_term m, kiln_term f, unsigned arity, struct rpc_entry *out)
{
    struct rpc_registry *r = registry_of(n);
    pthread_mutex_lock(&r->lock);
    bool found = false;
    for (size_t i = 0; i < r->n && !found; i++) {
        if (r->v[i].mod == m && r->v[i].fun == f && r->v[i].arity == arity) {
            *out = r->v[i];
            found = true;
        }
    }
    pthread_mutex_unlock(&r->lock);
    return found;
}

/* ---- serving a request ---- */

struct job {
    kiln_node *node;
    kiln_term peer;
    kiln_msg *store;        /* owns the terms below */
    enum job_kind kind;
    kiln_term req_id, from, res_ref, mod, fun, args;
    bool link, monitor;
    bool found;
    struct rpc_entry entry;
};

static kiln_term undef_stack(kiln_msg *m, kiln_term mod, kiln_term fun, kiln_term args)
{
    kiln_term frame = kiln_tuple(m, 4, mod, fun, args, KILN_NIL);
    return kiln_list(m, 1, frame);
}

/* {31, ReqId, From, Flags, Result} to the requester's node. */
static void send_spawn_reply(kiln_node *n, kiln_term peer, kiln_term req_id, kiln_term from, int flags, kiln_term result)
{
    kiln_msg *s = kiln_msg_new(64);
    kiln_term rep = s ? kiln_tuple(s, 5, kiln_small(DOP_SPAWN_REPLY), req_id, from, kiln_small(flags), result) : KILN_NONE;
    if (!kiln_is_none(rep))
        kiln_dist_out(n, peer, rep, KILN_NONE);
    kiln_msg_free(s);
}

static void job_main(void *arg)
{
    struct job *j = arg;
    struct kiln_proc *p = kiln_current_proc();
    /* The reply comes from the new process itself, so it reaches the
     * requester before anything else the process sends, its exit above
     * all: OTP treats an exit before the spawn reply as a protocol error. */
    send_spawn_reply(j->node, j->peer, j->req_id, j->from, (j->link ? 1 : 0) | (j->monitor ? 2 : 0), p->pid);
    /* The spawn made the link and the monitor: the requester already
     * counts on them, so no LINK or MONITOR_P goes back. */
    if (j->link)
        kiln_link_add(p, j->from);
    if (j->monitor) {
        struct kiln_monitor mon = {0, j->from, KILN_NONE, j->req_id, NULL};
        kiln_monitor_add(p, false, &mon);
    }
    kiln_msg *result = NULL;
    int rc = KILN_OK;
    if (j->found)
        rc = j->entry.fn(j->args, &result, j->entry.arg);
    /* The exit reason is the answer; it is built with its own copies so
     * everything else can go before the process ends. */
    kiln_msg *r = kiln_msg_new(256);
    kiln_term reason = KILN_ATOM_NORMAL;
    if (r) {
        kiln_term value = result ? kiln_term_copy(r, kiln_msg_term(result)) : KILN_ATOM_OK;
        kiln_term res_ref = kiln_term_copy(r, j->res_ref);
        if (!j->found) {
            /* What BEAM does for an undefined function: error undef. */
            kiln_term st = undef_stack(r, j->mod, j->fun, kiln_term_copy(r, j->args));
            reason = j->kind == JOB_CALL ? kiln_tuple(r, 4, res_ref, KILN_ATOM_ERROR, kiln_atom_c("undef"), st)
                                         : kiln_tuple(r, 2, kiln_atom_c("undef"), st);
        } else if (j->kind == JOB_CALL) {
            reason = rc == KILN_OK ? kiln_tuple(r, 3, res_ref, kiln_atom_c("return"), value)
                                   : kiln_tuple(r, 4, res_ref, KILN_ATOM_ERROR,
                                                kiln_tuple(r, 2, kiln_atom_c("kiln_error"), kiln_small(rc)), KILN_NIL);
        }
        if (kiln_is_none(reason))
            reason = kiln_atom_c("system_limit");
        r->root = reason;
    }
    kiln_msg_free(result);
    kiln_msg_free(j->store);
    kiln_free(j);
    kiln_proc_exit(p, r);
}

static bool has_opt(kiln_term opts, kiln_term atom)
{
    for (kiln_term l = opts; kiln_is_cons(l); l = kiln_tl(l))
        if (kiln_hd(l) == atom)
            return true;
    return false;
}

int kiln_rpc_spawn_request(kiln_node *n, struct kiln_conn *c, kiln_term ctrl, kiln_term args)
{
    kiln_term mfa = kiln_tuple_get(ctrl, 4), opts = kiln_tuple_get(ctrl, 5);
    if (!kiln_is_tuple(mfa) || kiln_tuple_arity(mfa) != 3 || !kiln_is_atom(kiln_tuple_get(mfa, 0)) ||
        !kiln_is_atom(kiln_tuple_get(mfa, 1)) || kiln_list_length(args) < 0)
        return KILN_EPROTO;
    struct job *j = kiln_calloc(1, sizeof(*j));
    kiln_msg *store = kiln_msg_new(1024);
    kiln_term t_args = store ? kiln_term_copy(store, args) : KILN_NONE;
    if (!j || kiln_is_none(t_args)) {
        kiln_free(j);
        kiln_msg_free(store);
        return KILN_ENOMEM;
    }
    j->store = store;
    j->req_id = kiln_term_copy(store, kiln_tuple_get(ctrl, 1));
    j->from = kiln_term_copy(store, kiln_tuple_get(ctrl, 2));
    j->link = has_opt(opts, kiln_atom_c("link"));
    j->monitor = has_opt(opts, kiln_atom_c("monitor"));
    kiln_term m = kiln_tuple_get(mfa, 0), f = kiln_tuple_get(mfa, 1);
    int64_t len;
    if (m == kiln_atom_c("erpc") && f == kiln_atom_c("execute_call") && kiln_list_length(t_args) == 4) {
        j->kind = JOB_CALL;
        j->res_ref = kiln_hd(t_args);
        t_args = kiln_tl(t_args);
        j->mod = kiln_hd(t_args);
        j->fun = kiln_hd(kiln_tl(t_args));
        j->args = kiln_hd(kiln_tl(kiln_tl(t_args)));
    } else if (m == kiln_atom_c("erpc") && f == kiln_atom_c("execute_cast") && kiln_list_length(t_args) == 3) {
        j->kind = JOB_CAST;
        j->mod = kiln_hd(t_args);
        j->fun = kiln_hd(kiln_tl(t_args));
        j->args = kiln_hd(kiln_tl(kiln_tl(t_args)));
    } else {
        j->kind = JOB_SPAWN;
        j->mod = m;
        j->fun = f;
        j->args = t_args;
    }
    len = kiln_list_length(j->args);
    j->found = kiln_is_atom(j->mod) && kiln_is_atom(j->fun) && len >= 0 &&
               lookup(n, j->mod, j->fun, (unsigned)len, &j->entry);
    j->node = n;
    j->peer = c->peer;
    if (kiln_spawn_fn(n->rt, job_main, j, NULL, NULL) != KILN_OK) {
        send_spawn_reply(n, c->peer, kiln_tuple_get(ctrl, 1), kiln_tuple_get(ctrl, 2), 0, kiln_atom_c("system_limit"));
        kiln_msg_free(j->store);
        kiln_free(j);
    }
    return KILN_OK;
}

int kiln_rpc_spawn_reply(kiln_node *n, kiln_term ctrl)
{
    /* To the requester, as a message it picks out in kiln_erpc_call. */
    kiln_msg *m = kiln_msg_new(128);
    if (!m)
        return KILN_ENOMEM;
    kiln_msg_set_term(m, kiln_tuple(m, 4, kiln_atom_c("$kiln_spawn_reply"), kiln_term_copy(m, kiln_tuple_get(ctrl, 1)),
                                     kiln_tuple_get(ctrl, 3), kiln_term_copy(m, kiln_tuple_get(ctrl, 4))));
    return kiln_rt_send(n->rt, kiln_tuple_get(ctrl, 2), m);
}

/* ---- calling Erlang ---- */

struct waiting {
    kiln_rt *rt;
    kiln_term req_id;
    uint64_t n;
};

static bool is_answer(kiln_term t, void *arg)
{
    struct waiting *w = arg;
    if (!kiln_is_tuple(t))
        return false;
    if (kiln_tuple_arity(t) == 4 && kiln_tuple_get(t, 0) == kiln_atom_c("$kiln_spawn_reply"))
        return kiln_term_eq(kiln_tuple_get(t, 1), w->req_id);
    uint64_t got;
    kiln_term apid;
    return kiln_tuple_arity(t) == 5 && kiln_tuple_get(t, 0) == KILN_ATOM_DOWN &&
           kiln_ref_number(w->rt, kiln_tuple_get(t, 1), &got, &apid) && got == w->n;
}

int kiln_erpc_call(kiln_term node, const char *module, const char *function, kiln_term args, int64_t timeout_ms,
                   kiln_msg **result)
{
    struct kiln_proc *p = kiln_current_proc();
    if (!p)
        return KILN_ENOTPROC;
    if (!module || !function || !result || kiln_list_length(args) < 0 || !kiln_is_atom(node))
        return KILN_EINVAL;
    kiln_rt *rt = p->rt;
    void *ctx;
    if (kiln_rt_dist(rt, &ctx) != &kiln_node_dist_ops)
        return KILN_ENOTSUP;
    kiln_node *n = ctx;
    kiln_msg *s = kiln_msg_new(256);
    if (!s)
        return KILN_ENOMEM;
    uint64_t k = kiln_ref_next(rt);
    kiln_term req_id = kiln_ref_term(s, rt, k, KILN_NONE);
    kiln_term res_ref = kiln_ref_term(s, rt, kiln_ref_next(rt), KILN_NONE);
    kiln_term erpc = kiln_atom_c("erpc");
    kiln_term ctrl = kiln_tuple(s, 6, kiln_small(DOP_SPAWN_REQUEST), req_id, p->pid, p->pid,
                                kiln_tuple(s, 3, erpc, kiln_atom_c("execute_call"), kiln_small(4)),
                                kiln_list(s, 1, kiln_atom_c("monitor")));
    kiln_term alist = kiln_list(s, 4, res_ref, kiln_atom_c(module), kiln_atom_c(function), args);
    /* The monitor the request sets up is keyed by the request id; the
     * node atom stands for the process until we know it (noconnection). */
    struct kiln_monitor mon = {k, node, erpc, KILN_NONE, NULL};
    if (kiln_is_none(ctrl) || kiln_is_none(alist) || !kiln_monitor_add(p, true, &mon)) {
        kiln_msg_free(s);
        return KILN_ENOMEM;
    }
    kiln_dist_out(n, node, ctrl, alist);
    struct waiting w = {rt, req_id, k};
    uint64_t deadline = timeout_ms < 0 ? 0 : kiln_now_ms() + (uint64_t)timeout_ms;
    int rc;
    for (;;) {
        int64_t left = deadline ? (int64_t)(deadline > kiln_now_ms() ? deadline - kiln_now_ms() : 0) : -1;
        kiln_msg *m;
        rc = kiln_receive(is_answer, &w, left, &m);
        if (rc != KILN_OK) {
            kiln_monitor_del(p, true, k, NULL); /* a late DOWN is dropped */
            break;
        }
        kiln_term t = kiln_msg_term(m);
        if (kiln_tuple_arity(t) == 4) {
            /* The spawn reply: a pid (go on waiting for its exit) or an error atom. */
            kiln_term res = kiln_tuple_get(t, 3);
            if (kiln_is_pid(res)) {
                kiln_msg_free(m);
                continue;
            }
            kiln_monitor_del(p, true, k, NULL);
            m->root = kiln_tuple(m, 2, KILN_ATOM_ERROR, res);
            *result = m;
            rc = KILN_EREFUSED;
            break;
        }
        /* The DOWN: its reason is the outcome. */
        kiln_term why = kiln_tuple_get(t, 4), v;
        if (why == KILN_ATOM_NOCONNECTION) {
            m->root = why;
            *result = m;
            rc = KILN_ENOPROC;
        } else if (kiln_match(why, "{_,return,~t}", &v) == KILN_OK) {
            m->root = v;
            *result = m;
            rc = KILN_OK;
        } else {
            kiln_term cls, e;
            if (kiln_match(why, "{_,~A,~t,_}", &cls, &e) == KILN_OK || kiln_match(why, "{_,~A,~t}", &cls, &e) == KILN_OK)
                m->root = kiln_tuple(m, 2, cls, e);
            else
                m->root = kiln_tuple(m, 2, KILN_ATOM_EXIT, why);
            *result = m;
            rc = KILN_EEXIT;
        }
        break;
    }
    kiln_msg_free(s);
    return rc;
}
