/* A distributed node: start and stop, the connection table, and waiting
 * for connections. The wire work is in conn.c (connections), ctrl_out.c
 * and ctrl_in.c (control messages), epmd_*.c and net_kernel.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dist/node_internal.h"
#include "runtime/alloc.h"
#include "runtime/dist_hooks.h"
#include "runtime/rt.h"
#include "runtime/term_layout.h"

/* The node of the runtime a process runs in: one per runtime. */
static kiln_node *node_of_rt(kiln_rt *rt)
{
    void *ctx;
    const struct kiln_dist_ops *d = kiln_rt_dist(rt, &ctx);
    return d == &kiln_node_dist_ops ? ctx : NULL;
}

/* ---- a mailbox-free wait for foreign threads (node start) ---- */

void kiln_waitbox_init(struct kiln_waitbox *w)
{
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->done = false;
    w->rc = KILN_OK;
    w->value = 0;
}

void kiln_waitbox_post(struct kiln_waitbox *w, int rc, uint32_t value)
{
    pthread_mutex_lock(&w->lock);
    w->done = true;
    w->rc = rc;
    w->value = value;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

int kiln_waitbox_wait(struct kiln_waitbox *w, int64_t timeout_ms, uint32_t *value)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->lock);
    while (!w->done)
        if (pthread_cond_timedwait(&w->cond, &w->lock, &dl) != 0)
            break;
    int rc = w->done ? w->rc : KILN_ETIMEOUT;
    if (value)
        *value = w->value;
    pthread_mutex_unlock(&w->lock);
    return rc;
}

void kiln_waitbox_destroy(struct kiln_waitbox *w)
{
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
}

/* ---- pid sets ---- */

static bool pidset_add(struct kiln_pidset *s, kiln_term pid)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4;
        kiln_term *v = kiln_realloc(s->v, cap * sizeof(*v));
        if (!v)
            return false;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = pid;
    return true;
}

/* Remove one occurrence (or all, for a dead process). */
static void pidset_del(struct kiln_pidset *s, kiln_term pid, bool all)
{
    for (size_t i = s->n; i-- > 0;) {
        if (s->v[i] == pid) {
            s->v[i] = s->v[--s->n];
            if (!all)
                return;
        }
    }
}

static void pidset_free(struct kiln_pidset *s)
{
    kiln_free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

/* {Tag, Node} to every subscriber; the dead are dropped on the way. */
static void notify(kiln_node *n, struct kiln_pidset *s, kiln_term tag, kiln_term node)
{
    for (size_t i = s->n; i-- > 0;) {
        if (!kiln_is_alive(n->rt, s->v[i])) {
            s->v[i] = s->v[--s->n];
            continue;
        }
        kiln_msg *m = kiln_msg_new(32);
        if (!m)
            continue;
        kiln_msg_set_term(m, kiln_tuple(m, 2, tag, node));
        kiln_rt_send(n->rt, s->v[i], m);
    }
}

/* ---- configuration ---- */

static int read_cookie(kiln_node *n, const char *cookie)
{
    char buf[256];
    if (!cookie) {
        const char *home = getenv("HOME");
        char path[4096];
        snprintf(path, sizeof path, "%s/.erlang.cookie", home ? home : ".");
        FILE *f = fopen(path, "r");
        if (!f)
            return KILN_EINVAL;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
            len--;
        buf[len] = 0;
        cookie = buf;
    }
    size_t len = strlen(cookie);
    if (len == 0 || len > 255)
        return KILN_EINVAL;
    memcpy(n->cookie, cookie, len);
    n->cookie_len = len;
    return KILN_OK;
}

static int set_name(kiln_node *n, const char *name)
{
    if (!name || !*name)
        return KILN_EINVAL;
    const char *at = strchr(name, '@');
    if (at) {
        snprintf(n->host, sizeof n->host, "%s", at + 1);
        if (snprintf(n->name_text, sizeof n->name_text, "%s", name) >= (int)sizeof n->name_text)
            return KILN_EBADNODE;
    } else {
        /* Like erl -sname: the short host name. */
        if (gethostname(n->host, sizeof n->host) != 0)
            return KILN_ESYS;
        n->host[sizeof n->host - 1] = 0;
        char *dot = strchr(n->host, '.');
        if (dot)
            *dot = 0;
        if (snprintf(n->name_text, sizeof n->name_text, "%s@%s", name, n->host) >= (int)sizeof n->name_text)
            return KILN_EBADNODE;
    }
    if (at == name || !*n->host)
        return KILN_EBADNODE;
    return kiln_atom(n->name_text, strlen(n->name_text), &n->name);
}

static uint16_t default_epmd_port(void)
{
    const char *env = getenv("ERL_EPMD_PORT");
    long p = env ? strtol(env, NULL, 10) : 0;
    return p > 0 && p < 65536 ? (uint16_t)p : KILN_EPMD_DEFAULT_PORT;
}

/* ---- start and stop ---- */

int kiln_node_start(kiln_rt *rt, const kiln_node_config *cfg, kiln_node **out)
{
    if (!rt || !cfg || !out)
        return KILN_EINVAL;
    if (kiln_rt_dist(rt, NULL))
        return KILN_EBUSY; /* one node per runtime */
    kiln_node *n = kiln_calloc(1, sizeof(*n));
    if (!n)
        return KILN_ENOMEM;
    n->rt = rt;
    n->lfd = n->epmd_lfd = -1;
    /* Every remote send takes this lock for a few hundred nanoseconds;
     * senders on two workers then met it held often enough that sleeping
     * in the kernel for it (a futex wait and wake per meeting) was half of
     * a busy node's futex calls. Spinning a little first avoids most. */
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&n->lock, &ma);
    pthread_mutexattr_destroy(&ma);
    pthread_mutex_init(&n->epmd_lock, NULL);
    int rc = set_name(n, cfg->name);
    if (rc == KILN_OK)
        rc = read_cookie(n, cfg->cookie);
    if (rc != KILN_OK)
        goto fail;
    n->hidden = cfg->hidden;
    n->flags = cfg->hidden ? KILN_DFLAGS_HIDDEN : KILN_DFLAGS_VISIBLE;
    n->ticktime = cfg->net_ticktime ? cfg->net_ticktime : 60;
    /* 256 KiB, not OTP's 64 KiB: a 1 MB call between two Kiln nodes took
     * 1.3-1.9 ms with 128 KiB-1 MiB fragments against 2.3 ms with 64 KiB
     * (perf/kiln_bench --fragment-size), and a 256 KiB slice is still
     * tens of microseconds on the wire for small messages to wait. */
    n->frag_size = cfg->fragment_size ? cfg->fragment_size : 262144;
    /* Fragments and the atom cache both ways (frame.c, ctrl_out.c,
     * atom_cache_out.c; cache refs inside funs are spelled out by the
     * decoder, so kept funs stay valid anywhere). SEND_SENDER and
     * EXIT_PAYLOAD only change which ops OTP sends us, and ctrl_in.c takes
     * both forms. */
    n->flags |= KILN_DFLAG_FRAGMENTS | KILN_DFLAG_DIST_HDR_ATOM_CACHE | KILN_DFLAG_SEND_SENDER |
                KILN_DFLAG_EXIT_PAYLOAD;
    n->epmd_port = cfg->epmd_port ? cfg->epmd_port : default_epmd_port();
    if (cfg->port && cfg->port == n->epmd_port) {
        rc = KILN_EINVAL;
        goto fail;
    }
    atomic_store(&n->unlink_ids, 1);
    if ((rc = kiln_rpc_init(n)) != KILN_OK)
        goto fail;

    rc = kiln_tcp_listen(rt, NULL, cfg->port, 128, &n->lfd, &n->port);
    if (rc == KILN_OK && n->port == n->epmd_port) {
        /* An EPMD port in the ephemeral range (private clusters, tests)
         * can be the very port the kernel hands our listener before any
         * EPMD is up. Registering would then connect to ourselves and
         * wait in our own backlog until it timed out. Listen again while
         * still holding that port, so the kernel must choose another. */
        int clash = n->lfd;
        n->lfd = -1;
        rc = kiln_tcp_listen(rt, NULL, 0, 128, &n->lfd, &n->port);
        close(clash);
    }
    if (rc != KILN_OK)
        goto fail;

    /* The node's name first (creation follows from EPMD): every pid and
     * ref made from now on carries it. */
    uint32_t creation = 0;
    n->embedded_epmd = !cfg->no_embedded_epmd;
    rc = kiln_epmd_register(n, &creation);
    if (rc == KILN_ESYS && n->embedded_epmd)
        rc = kiln_epmd_serve(n, &creation);
    if (rc != KILN_OK)
        goto fail;
    n->creation = creation;
    n->ctx.node = n->name;
    n->ctx.creation = creation;
    n->empty_atom = kiln_atom_c("");
    rt->node = n->name;
    rt->creation = creation;
    kiln_term_set_local_node(n->name, creation);
    kiln_rt_set_dist(rt, &kiln_node_dist_ops, n);

    rc = kiln_net_kernel_start(n);
    if (rc != KILN_OK)
        goto fail_dist;
    struct kiln_conn_start *cs = kiln_calloc(1, sizeof(*cs));
    if (!cs) {
        rc = KILN_ENOMEM;
        goto fail_dist;
    }
    cs->node = n;
    cs->fd = n->lfd;
    rc = kiln_spawn_fn(rt, kiln_conn_acceptor_main, cs, NULL, &n->acceptor);
    if (rc != KILN_OK) {
        kiln_free(cs);
        goto fail_dist;
    }
    *out = n;
    return KILN_OK;

fail_dist:
    kiln_rt_set_dist(rt, NULL, NULL);
    kiln_epoch_synchronize(rt);
fail:
    kiln_node_stop(n);
    return rc;
}

static void kill_proc(kiln_rt *rt, kiln_term pid)
{
    if (!kiln_is_none(pid) && pid)
        kiln_rt_exit(rt, pid, KILN_ATOM_KILL);
}

/* Up to 5 s for a killed process to be gone. */
static void await_dead(kiln_rt *rt, kiln_term pid)
{
    for (int t = 0; t < 5000 && pid && !kiln_is_none(pid) && kiln_is_alive(rt, pid); t++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

int kiln_node_stop(kiln_node *n)
{
    if (!n)
        return KILN_EINVAL;
    kiln_rt *rt = n->rt;
    pthread_mutex_lock(&n->lock);
    n->stopping = true;
    /* Shutting the sockets down makes each connection's reader see the
     * end, clean up and exit by itself. */
    for (struct kiln_conn *c = n->conns; c; c = c->next)
        if (c->fd >= 0)
            shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&n->lock);
    for (int i = 0; i < 5000; i++) {
        pthread_mutex_lock(&n->lock);
        bool empty = n->conns == NULL;
        pthread_mutex_unlock(&n->lock);
        if (empty)
            break;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    kill_proc(rt, n->acceptor);
    kill_proc(rt, n->net_kernel);
    kill_proc(rt, n->rex);
    kill_proc(rt, n->global);
    kill_proc(rt, n->epmd_holder);
    /* The holder may be taking over EPMD (epmd_client.c): it must be gone
     * before the server it may have started is stopped. */
    await_dead(rt, n->epmd_holder);
    kiln_epmd_serve_stop(n);
    if (kiln_rt_dist(rt, NULL) == &kiln_node_dist_ops) {
        kiln_rt_set_dist(rt, NULL, NULL);
        /* Processes may be inside one of our operations: wait them out
         * before the node's memory goes. */
        kiln_epoch_synchronize(rt);
    }
    /* Killed processes must be gone before their node's memory is. */
    kiln_term pids[] = {n->acceptor, n->net_kernel, n->rex, n->global, n->epmd_holder};
    for (size_t i = 0; i < sizeof pids / sizeof pids[0]; i++)
        await_dead(rt, pids[i]);
    if (n->lfd >= 0)
        close(n->lfd);
    /* Connections that never got a process to clean them up. */
    while (n->conns) {
        struct kiln_conn *c = n->conns;
        n->conns = c->next;
        while (c->pending) {
            kiln_msg *m = c->pending;
            c->pending = atomic_load_explicit(&m->next, memory_order_relaxed);
            kiln_msg_free(m);
        }
        kiln_free(c->involved);
        kiln_free(c->waiters);
        pidset_free(&c->node_monitors);
        kiln_frame_state_fini(&c->rx);
        kiln_conn_release(c);
    }
    kiln_free(n->conn_index);
    pidset_free(&n->nodes_monitors);
    kiln_rpc_fini(n);
    pthread_mutex_destroy(&n->lock);
    pthread_mutex_destroy(&n->epmd_lock);
    kiln_free(n);
    return KILN_OK;
}

kiln_term kiln_node_name(const kiln_node *n) { return n->name; }
uint32_t kiln_node_creation(const kiln_node *n) { return n->creation; }
bool kiln_node_serves_epmd(const kiln_node *n) { return n->serves_epmd; }
uint16_t kiln_node_port(const kiln_node *n) { return n->port; }

/* ---- the connection table ---- */

/* Every remote send looks its peer up under the node lock, so the lookup
 * must not grow with the number of peers: an open-addressed index by node
 * atom beside the list (which keeps a takeover's two entries for one
 * peer, newest first). Rebuilt whenever the list changes, which is rare;
 * without memory for it the list is scanned. */
static size_t peer_slot(kiln_term peer, size_t mask)
{
    return (size_t)((peer * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}

void kiln_conn_reindex_locked(kiln_node *n)
{
    size_t count = 0, cap = 8;
    for (struct kiln_conn *c = n->conns; c; c = c->next)
        count++;
    while (cap < 2 * count)
        cap *= 2;
    if (cap != n->conn_index_cap) {
        kiln_free(n->conn_index);
        n->conn_index = kiln_calloc(cap, sizeof(*n->conn_index));
        n->conn_index_cap = n->conn_index ? cap : 0;
        if (!n->conn_index)
            return;
    } else {
        memset(n->conn_index, 0, cap * sizeof(*n->conn_index));
    }
    size_t mask = cap - 1;
    for (struct kiln_conn *c = n->conns; c; c = c->next) {
        size_t i = peer_slot(c->peer, mask);
        while (n->conn_index[i] && n->conn_index[i]->peer != c->peer)
            i = (i + 1) & mask;
        if (!n->conn_index[i])
            n->conn_index[i] = c; /* the newest of a peer's entries, as a scan finds */
    }
}

struct kiln_conn *kiln_conn_find_locked(kiln_node *n, kiln_term peer)
{
    if (n->conn_index) {
        size_t mask = n->conn_index_cap - 1;
        for (size_t i = peer_slot(peer, mask); n->conn_index[i]; i = (i + 1) & mask)
            if (n->conn_index[i]->peer == peer)
                return n->conn_index[i];
        return NULL;
    }
    for (struct kiln_conn *c = n->conns; c; c = c->next)
        if (c->peer == peer)
            return c;
    return NULL;
}

struct kiln_conn *kiln_conn_new(void)
{
    struct kiln_conn *c = kiln_calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    if (pthread_mutex_init(&c->tx_lock, NULL) != 0) {
        kiln_free(c);
        return NULL;
    }
    atomic_init(&c->refs, 1);
    return c;
}

void kiln_conn_release(struct kiln_conn *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_mutex_destroy(&c->tx_lock);
    kiln_free(c);
}

struct kiln_conn *kiln_conn_get(kiln_node *n, kiln_term peer, bool connect)
{
    pthread_mutex_lock(&n->lock);
    struct kiln_conn *c = kiln_conn_find_locked(n, peer);
    if (c || !connect || n->stopping || peer == n->name) {
        if (c)
            return c;
        pthread_mutex_unlock(&n->lock);
        return NULL;
    }
    size_t len;
    const char *text = kiln_atom_text(peer, &len);
    if (!text || len > KILN_NODE_NAME_MAX || !memchr(text, '@', len)) {
        pthread_mutex_unlock(&n->lock);
        return NULL;
    }
    c = kiln_conn_new();
    struct kiln_conn_start *cs = kiln_calloc(1, sizeof(*cs));
    if (!c || !cs) {
        if (c)
            kiln_conn_release(c);
        kiln_free(cs);
        pthread_mutex_unlock(&n->lock);
        return NULL;
    }
    c->peer = peer;
    memcpy(c->peer_text, text, len);
    c->state = KILN_CONN_CONNECTING;
    c->fd = -1;
    c->next = n->conns;
    n->conns = c;
    kiln_conn_reindex_locked(n);
    cs->node = n;
    cs->conn = c;
    cs->fd = -1;
    /* The connector runs as its own process: whoever asked carries on. */
    if (kiln_spawn_fn(n->rt, kiln_conn_initiator_main, cs, NULL, &c->owner) != KILN_OK) {
        n->conns = c->next;
        kiln_conn_reindex_locked(n);
        kiln_conn_release(c);
        kiln_free(cs);
        pthread_mutex_unlock(&n->lock);
        return NULL;
    }
    return c;
}

static void send_chain(kiln_node *n, kiln_term writer, kiln_msg *m)
{
    while (m) {
        kiln_msg *next = atomic_load_explicit(&m->next, memory_order_relaxed);
        kiln_rt_send(n->rt, writer, m);
        m = next;
    }
}

int kiln_dist_out(kiln_node *n, kiln_term peer, kiln_term ctrl, kiln_term msg)
{
    struct kiln_conn *c = kiln_conn_get(n, peer, true);
    if (!c) {
        /* Unreachable or not a node name: dropped, as Erlang drops
         * messages to nodes it cannot reach. */
        return KILN_OK;
    }
    if (c->state == KILN_CONN_UP) {
        uint64_t flags = c->flags;
        kiln_term writer = c->writer;
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
        pthread_mutex_unlock(&n->lock);
        /* Encoded here, on the sender's thread, not by the writer. */
        kiln_frames f;
        int rc = kiln_frames_prepare(n, flags, ctrl, msg, &f);
        if (rc == KILN_OK && !(flags & KILN_DFLAG_DIST_HDR_ATOM_CACHE)) {
            kiln_msg *frames = kiln_frames_finish(n, &f, NULL);
            if (frames)
                send_chain(n, writer, frames);
            else
                rc = KILN_ENOMEM;
        } else if (rc == KILN_OK) {
            /* The header is written against the connection's atom cache
             * and its frames handed to the writer under one lock: the peer
             * must see cache updates in the order they were decided. */
            pthread_mutex_lock(&c->tx_lock);
            if (c->tx_open) {
                kiln_msg *frames = kiln_frames_finish(n, &f, &c->tx);
                send_chain(n, writer, frames);
                rc = frames ? KILN_OK : KILN_ENOMEM;
            } else {
                /* The connection went meanwhile: dropped, as on a disconnect. */
                kiln_frames_discard(&f);
            }
            pthread_mutex_unlock(&c->tx_lock);
        }
        kiln_conn_release(c);
        return rc;
    }
    /* Connecting: how to encode depends on the handshake. Keep the terms. */
    kiln_msg *item = kiln_msg_new(256);
    kiln_term t = item ? kiln_tuple(item, 2, kiln_term_copy(item, ctrl),
                                    kiln_is_none(msg) ? kiln_atom_c("$kiln_none") : kiln_term_copy(item, msg))
                       : KILN_NONE;
    if (kiln_is_none(t)) {
        pthread_mutex_unlock(&n->lock);
        kiln_msg_free(item);
        return KILN_ENOMEM;
    }
    kiln_msg_set_term(item, t);
    atomic_store_explicit(&item->next, NULL, memory_order_relaxed);
    if (c->pending_tail)
        atomic_store_explicit(&c->pending_tail->next, item, memory_order_relaxed);
    else
        c->pending = item;
    c->pending_tail = item;
    pthread_mutex_unlock(&n->lock);
    return KILN_OK;
}

static void tell_waiters(kiln_node *n, struct kiln_conn *c, kiln_term result)
{
    for (size_t i = 0; i < c->nwaiters; i++) {
        kiln_msg *m = kiln_msg_new(64);
        if (!m)
            continue;
        kiln_msg_set_term(m, kiln_tuple(m, 3, kiln_atom_c("$kiln_connect"), c->peer, result));
        kiln_rt_send(n->rt, c->waiters[i], m);
    }
    c->nwaiters = 0;
}

void kiln_conn_up(kiln_node *n, struct kiln_conn *c)
{
    pthread_mutex_lock(&n->lock);
    /* What was queued goes to the writer before the connection counts as
     * up, all under the lock: a sender that finds it up afterwards sends
     * after its own earlier messages, never before. */
    pthread_mutex_lock(&c->tx_lock);
    kiln_msg *m = c->pending;
    c->pending = c->pending_tail = NULL;
    while (m) {
        kiln_msg *next = atomic_load_explicit(&m->next, memory_order_relaxed);
        kiln_term t = kiln_msg_term(m);
        kiln_term body = kiln_tuple_get(t, 1);
        kiln_msg *frames = kiln_frames_encode(n, c->flags, &c->tx, kiln_tuple_get(t, 0),
                                              body == kiln_atom_c("$kiln_none") ? KILN_NONE : body);
        send_chain(n, c->writer, frames);
        kiln_msg_free(m);
        m = next;
    }
    c->tx_open = true;
    pthread_mutex_unlock(&c->tx_lock);
    c->state = KILN_CONN_UP;
    tell_waiters(n, c, KILN_ATOM_OK);
    notify(n, &n->nodes_monitors, kiln_atom_c("nodeup"), c->peer);
    pthread_mutex_unlock(&n->lock);
}

void kiln_conn_down(kiln_node *n, struct kiln_conn *c, int err)
{
    pthread_mutex_lock(&n->lock);
    for (struct kiln_conn **pp = &n->conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    kiln_conn_reindex_locked(n);
    kiln_term result = err == KILN_OK ? kiln_atom_c("closed") : kiln_atom_c(kiln_strerror(err));
    tell_waiters(n, c, result);
    /* nodedown for every monitor_node, and for monitor_nodes if it was up. */
    notify(n, &c->node_monitors, kiln_atom_c("nodedown"), c->peer);
    if (c->state == KILN_CONN_UP)
        notify(n, &n->nodes_monitors, kiln_atom_c("nodedown"), c->peer);
    c->state = KILN_CONN_DOWN;
    pthread_mutex_unlock(&n->lock);
    /* Senders still holding it drop what they encoded from here on. */
    pthread_mutex_lock(&c->tx_lock);
    c->tx_open = false;
    pthread_mutex_unlock(&c->tx_lock);
    /* Every link and monitor across it fires with noconnection. */
    for (size_t i = 0; i < c->ninvolved; i++)
        kiln_dist_in_nodedown(n->rt, c->peer, c->involved[i]);
    while (c->pending) {
        kiln_msg *m = c->pending;
        c->pending = atomic_load_explicit(&m->next, memory_order_relaxed);
        kiln_msg_free(m);
    }
    if (!kiln_is_none(c->writer) && c->writer)
        kiln_rt_exit(n->rt, c->writer, KILN_ATOM_KILL);
    kiln_free(c->involved);
    kiln_free(c->waiters);
    pidset_free(&c->node_monitors);
    kiln_frame_state_fini(&c->rx); /* partial sequences are discarded */
    kiln_conn_release(c);
}

/* ---- monitor_node, monitor_nodes ---- */

int kiln_monitor_node(kiln_term node, bool on)
{
    kiln_rt *rt = kiln_current_rt();
    if (!rt)
        return KILN_ENOTPROC;
    kiln_node *n = node_of_rt(rt);
    if (!n)
        return KILN_ENOTSUP;
    if (!kiln_is_atom(node))
        return KILN_EBADARG;
    kiln_term self = kiln_self();
    if (node == n->name)
        return KILN_OK; /* this node does not go down under its own processes */
    struct kiln_conn *c = kiln_conn_get(n, node, on);
    if (!c) {
        if (!on)
            return KILN_OK;
        /* Not a node we can reach: nodedown at once, as Erlang does. */
        kiln_msg *m = kiln_msg_new(32);
        if (!m)
            return KILN_ENOMEM;
        kiln_msg_set_term(m, kiln_tuple(m, 2, kiln_atom_c("nodedown"), node));
        return kiln_send(self, m);
    }
    int rc = KILN_OK;
    if (on)
        rc = pidset_add(&c->node_monitors, self) ? KILN_OK : KILN_ENOMEM;
    else
        pidset_del(&c->node_monitors, self, false);
    pthread_mutex_unlock(&n->lock);
    return rc;
}

int kiln_monitor_nodes(bool on)
{
    kiln_rt *rt = kiln_current_rt();
    if (!rt)
        return KILN_ENOTPROC;
    kiln_node *n = node_of_rt(rt);
    if (!n)
        return KILN_ENOTSUP;
    kiln_term self = kiln_self();
    pthread_mutex_lock(&n->lock);
    pidset_del(&n->nodes_monitors, self, true);
    int rc = on && !pidset_add(&n->nodes_monitors, self) ? KILN_ENOMEM : KILN_OK;
    pthread_mutex_unlock(&n->lock);
    return rc;
}

/* ---- connect_node and nodes() ---- */

static bool is_connect_reply(kiln_term t, void *peer)
{
    return kiln_is_tuple(t) && kiln_tuple_arity(t) == 3 && kiln_tuple_get(t, 0) == kiln_atom_c("$kiln_connect") &&
           kiln_tuple_get(t, 1) == *(kiln_term *)peer;
}

int kiln_node_connect(kiln_term node, int64_t timeout_ms)
{
    kiln_rt *rt = kiln_current_rt();
    if (!rt)
        return KILN_ENOTPROC;
    kiln_node *n = node_of_rt(rt);
    if (!n)
        return KILN_ENOTSUP;
    if (node == n->name)
        return KILN_OK;
    struct kiln_conn *c = kiln_conn_get(n, node, true);
    if (!c)
        return KILN_EBADNODE;
    if (c->state == KILN_CONN_UP) {
        pthread_mutex_unlock(&n->lock);
        return KILN_OK;
    }
    if (c->nwaiters == c->capwaiters) {
        size_t cap = c->capwaiters ? c->capwaiters * 2 : 4;
        kiln_term *w = kiln_realloc(c->waiters, cap * sizeof(*w));
        if (!w) {
            pthread_mutex_unlock(&n->lock);
            return KILN_ENOMEM;
        }
        c->waiters = w;
        c->capwaiters = cap;
    }
    c->waiters[c->nwaiters++] = kiln_self();
    pthread_mutex_unlock(&n->lock);
    kiln_msg *m;
    int rc = kiln_receive(is_connect_reply, &node, timeout_ms, &m);
    if (rc != KILN_OK)
        return rc;
    kiln_term result = kiln_tuple_get(kiln_msg_term(m), 2);
    rc = result == KILN_ATOM_OK ? KILN_OK : KILN_EREFUSED;
    kiln_msg_free(m);
    return rc;
}

size_t kiln_node_list(kiln_node *n, kiln_term *out, size_t cap)
{
    size_t k = 0;
    pthread_mutex_lock(&n->lock);
    for (struct kiln_conn *c = n->conns; c; c = c->next) {
        if (c->state != KILN_CONN_UP)
            continue;
        if (k < cap)
            out[k] = c->peer;
        k++;
    }
    pthread_mutex_unlock(&n->lock);
    return k;
}
