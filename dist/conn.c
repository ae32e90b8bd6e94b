/* Distribution connections. Each connection is two processes:
 *  - the owner: makes or accepts the socket, runs the handshake, then reads
 *    frames and dispatches them (ctrl_in.c); it notices silence (ticks)
 *    and the end, and cleans up;
 *  - the writer: its mailbox is the connection's out-queue. Senders encode
 *    frames on their own threads and send them to it; it writes whatever
 *    has queued up in one system call, and ticks when it has nothing to
 *    say. If writing fails it shuts the socket, which ends the owner. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dist/node_internal.h"
#include "runtime/alloc.h"
#include "runtime/rt.h"

#define READ_CHUNK 65536u
#define WRITE_BATCH 64 /* frames per write */
#define WRITE_IOV 256  /* pieces per write */

/* ---- writer ---- */

/* Owned by the connection's owner, which frees it once it has seen the
 * writer's DOWN. */
struct writer_arg {
    kiln_node *node;
    int fd;
    unsigned tick_ms;
    /* The frames being written. Not on the writer's stack: the writer is
     * killed when the connection goes down, possibly in the middle of a
     * write, and the owner frees what it left. */
    kiln_msg *batch[WRITE_BATCH];
    int nbatch;
};

static void free_batch(struct writer_arg *wa)
{
    for (int i = 0; i < wa->nbatch; i++)
        kiln_msg_free(wa->batch[i]);
    wa->nbatch = 0;
}

static void writer_main(void *arg)
{
    struct writer_arg *wa = arg;
    static const uint8_t tick[4] = {0, 0, 0, 0};
    struct iovec iov[WRITE_IOV];
    /* Processes that send on this connection and are queued on the same
     * worker run before the writer does, so their frames share a write. */
    kiln_proc_defer_wakeups();
    for (;;) {
        kiln_msg *m;
        int rc = kiln_receive(NULL, NULL, wa->tick_ms, &m);
        if (rc == KILN_ETIMEOUT) {
            /* Nothing written for a tick interval: the peer must hear from us. */
            if (kiln_io_send(wa->fd, tick, sizeof tick, 10000) != KILN_OK)
                break;
            continue;
        }
        if (rc != KILN_OK)
            break;
        /* Everything queued behind it goes out in the same write. A frame
         * is an iolist of binaries (its header, then a shared slice of the
         * encoded message): each piece is one iovec, nothing is copied. */
        int k = 0;
        for (;;) {
            wa->batch[wa->nbatch++] = m;
            for (kiln_term l = kiln_msg_term(m); kiln_is_cons(l) && k < WRITE_IOV; l = kiln_tl(l)) {
                const uint8_t *data;
                size_t len;
                if (kiln_get_binary(kiln_hd(l), &data, &len) == KILN_OK && len) {
                    iov[k].iov_base = (void *)data;
                    iov[k].iov_len = len;
                    k++;
                }
            }
            if (wa->nbatch == WRITE_BATCH || k > WRITE_IOV - 4 || kiln_receive(NULL, NULL, 0, &m) != KILN_OK)
                break;
        }
        rc = kiln_io_sendv(wa->fd, iov, k, 30000);
        free_batch(wa);
        if (rc != KILN_OK)
            break;
    }
    /* The owner is in a read on this socket: ending the socket ends it. */
    shutdown(wa->fd, SHUT_RDWR);
}

struct down_of {
    kiln_term ref;
};

static bool is_down_of(kiln_term t, void *arg)
{
    const struct down_of *d = arg;
    kiln_term ref;
    return kiln_match(t, "{'DOWN',~t,process,_,_}", &ref) == KILN_OK && kiln_term_eq(ref, d->ref);
}

/* ---- handshake over the socket ---- */

static kiln_hs_peer peer_state(void *arg, const char *name, size_t len)
{
    kiln_node *n = arg;
    kiln_term peer;
    if (kiln_atom(name, len, &peer) != KILN_OK)
        return KILN_HS_PEER_REFUSE;
    pthread_mutex_lock(&n->lock);
    struct kiln_conn *c = kiln_conn_find_locked(n, peer);
    kiln_hs_peer st = !c ? KILN_HS_PEER_NONE : c->state == KILN_CONN_UP ? KILN_HS_PEER_UP : KILN_HS_PEER_PENDING;
    pthread_mutex_unlock(&n->lock);
    return st;
}

/* Drive the handshake state machine with the socket; leftover bytes (the
 * first frames may share the last read) are copied to buf (*have bytes). */
static int handshake(kiln_node *n, int fd, kiln_hs_role role, const char *peer, uint8_t *buf, size_t *have,
                     kiln_hs_result *res)
{
    kiln_hs_config cfg = {
        .role = role,
        .name = n->name_text,
        .creation = n->creation,
        .flags = n->flags,
        .cookie = n->cookie,
        .cookie_len = n->cookie_len,
        .peer = peer,
        .hooks = {.peer_state = peer_state, .arg = n},
    };
    int err = KILN_OK;
    kiln_hs *hs = kiln_hs_new(&cfg, &err);
    if (!hs)
        return err;
    uint8_t in[4096];
    /* net_setuptime: each step must finish within 7 s, or OTP gives up. */
    int64_t step_ms = 7000;
    for (;;) {
        size_t olen;
        const uint8_t *out = kiln_hs_output(hs, &olen);
        if (olen) {
            int rc = kiln_io_send(fd, out, olen, step_ms);
            if (rc != KILN_OK) {
                kiln_hs_free(hs);
                return rc;
            }
            kiln_hs_output_advance(hs, olen);
        }
        kiln_hs_state st = kiln_hs_get_state(hs);
        if (st == KILN_HS_WAIT_OLD) {
            /* The peer restarted: its old connection is dead. */
            st = kiln_hs_resume(hs);
            continue;
        }
        if (st == KILN_HS_DONE || st == KILN_HS_FAILED) {
            *res = *kiln_hs_get_result(hs);
            kiln_hs_free(hs);
            return st == KILN_HS_DONE ? KILN_OK : (res->err ? res->err : KILN_EREFUSED);
        }
        size_t got;
        int rc = kiln_io_recv(fd, in, sizeof in, step_ms, &got);
        if (rc != KILN_OK) {
            kiln_hs_free(hs);
            return rc;
        }
        if (got == 0) {
            st = kiln_hs_closed(hs);
            *res = *kiln_hs_get_result(hs);
            kiln_hs_free(hs);
            return st == KILN_HS_DONE ? KILN_OK : (res->err ? res->err : KILN_EREFUSED);
        }
        /* Partial messages stay buffered inside the state machine; what
         * follows the last handshake message is the first traffic. */
        size_t used = 0;
        if (kiln_hs_feed(hs, in, got, &used) == KILN_HS_DONE && used < got) {
            memcpy(buf, in + used, got - used);
            *have = got - used;
        }
    }
}

/* ---- reading ---- */

/* Read frames until the connection ends; returns why. buf (cap bytes,
 * have of them filled) is ours to grow and free. */
/* Up to room bytes from the peer into dst; *got == 0 when it closed.
 * Four silent tick intervals: the peer is gone (Erlang's rule). */
static int recv_some(struct kiln_conn *c, uint8_t *dst, size_t room, unsigned tick_ms, unsigned *silent, size_t *got)
{
    for (;;) {
        int rc = kiln_io_recv(c->fd, dst, room, tick_ms, got);
        if (rc != KILN_ETIMEOUT) {
            if (rc == KILN_OK)
                *silent = 0;
            return rc;
        }
        if (++*silent >= 4) {
            fprintf(stderr, "kiln: node %s not responding; closing the connection\n", c->peer_text);
            return rc;
        }
    }
}

/* A frame's dispatch result; an error (the connection closes) is logged. */
static int refused(const struct kiln_conn *c, int rc)
{
    if (rc != KILN_OK)
        fprintf(stderr, "kiln: bad distribution message from %s (%s); closing the connection\n", c->peer_text,
                kiln_strerror(rc));
    return rc;
}

/* Slices at least this big are received straight into their message's
 * reassembly buffer: no copy through the read buffer. */
#define PLACED_MIN (16u * 1024u)

/* buf holds the start (have bytes, the 18-byte fragment header included)
 * of a continuation fragment of flen bytes whose slice fits its
 * sequence's buffer at dst: the rest of the slice is received there.
 * *closed when the peer closed before it was whole. */
static int fill_placed(struct kiln_conn *c, const uint8_t *buf, size_t have, size_t flen, uint8_t *dst,
                       unsigned tick_ms, unsigned *silent, bool *closed)
{
    size_t slice = flen - 18, done = have - 4 - 18;
    memcpy(dst, buf + 4 + 18, done);
    *closed = false;
    while (done < slice) {
        size_t got;
        int rc = recv_some(c, dst + done, slice - done, tick_ms, silent, &got);
        if (rc != KILN_OK)
            return rc;
        if (got == 0) {
            *closed = true;
            return KILN_OK;
        }
        done += got;
    }
    return KILN_OK;
}

static int read_loop(kiln_node *n, struct kiln_conn *c, uint8_t *buf, size_t have, size_t cap)
{
    unsigned silent = 0;
    unsigned tick_ms = n->ticktime * 1000u / 4u;
    int rc = KILN_OK;
    for (;;) {
        size_t off = 0;
        uint32_t need = 0; /* bytes the next, incomplete frame needs in all */
        while (have - off >= 4) {
            const uint8_t *q = buf + off;
            uint32_t len = (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3];
            if (len > KILN_DIST_MAX_FRAME) {
                rc = KILN_EBADLENGTH;
                goto out;
            }
            if (have - off - 4 < len) {
                need = len + 4;
                break;
            }
            if (len) { /* zero-length frames are ticks */
                if ((rc = refused(c, kiln_ctrl_dispatch(n, c, q + 4, len))) != KILN_OK)
                    goto out;
            }
            off += 4 + (size_t)len;
        }
        /* Only when frames were taken: a large frame arriving in pieces
         * would otherwise be moved onto itself after every read (glibc
         * copies even then), quadratic in its size. */
        if (off) {
            if (have > off) /* mostly every byte was taken */
                memmove(buf, buf + off, have - off);
            have -= off;
        }
        uint8_t *dst;
        if (need >= PLACED_MIN && have >= 4 + 18 && kiln_frame_slice_room(&c->rx, buf + 4, need - 4, &dst)) {
            bool closed;
            rc = fill_placed(c, buf, have, need - 4, dst, tick_ms, &silent, &closed);
            if (rc != KILN_OK || closed)
                goto out;
            if ((rc = refused(c, kiln_ctrl_dispatch_placed(n, c, buf + 4, need - 4))) != KILN_OK)
                goto out;
            have = 0;
            continue;
        }
        /* Room for the frame under way (its length is bounded above), and
         * never less than a chunk to read into. */
        size_t want = need > READ_CHUNK ? need : READ_CHUNK;
        if (cap < want) {
            uint8_t *nb = kiln_realloc(buf, want);
            if (!nb) {
                rc = KILN_ENOMEM;
                goto out;
            }
            buf = nb;
            cap = want;
        }
        size_t got;
        rc = recv_some(c, buf + have, cap - have, tick_ms, &silent, &got);
        if (rc != KILN_OK || got == 0)
            goto out;
        have += got;
    }
out:
    kiln_free(buf);
    return rc;
}

/* After a successful handshake: the writer, the table, then reading. */
static void run_connection(kiln_node *n, struct kiln_conn *c, uint8_t *buf, size_t have)
{
    struct writer_arg *wa = kiln_calloc(1, sizeof(*wa));
    kiln_msg *mref_msg = kiln_msg_new(64);
    struct down_of wd = {KILN_NONE};
    kiln_term writer = KILN_NONE;
    if (wa && mref_msg) {
        wa->node = n;
        wa->fd = c->fd;
        wa->tick_ms = n->ticktime * 1000u / 4u;
        if (kiln_spawn_fn(n->rt, writer_main, wa, NULL, &writer) != KILN_OK)
            writer = KILN_NONE;
        else if (kiln_monitor(writer, mref_msg, &wd.ref) != KILN_OK)
            wd.ref = KILN_NONE;
    }
    if (kiln_is_none(writer)) {
        kiln_free(wa);
        kiln_msg_free(mref_msg);
        kiln_free(buf);
        close(c->fd);
        kiln_conn_down(n, c, KILN_ENOMEM);
        return;
    }
    c->writer = writer;
    kiln_conn_up(n, c);
    int rc = read_loop(n, c, buf, have, READ_CHUNK);
    int fd = c->fd;
    kiln_conn_down(n, c, rc == KILN_OK ? KILN_OK : rc); /* kills the writer */
    /* Only once the writer is gone are the frames it was writing ours to
     * free, and the socket ours to close. Should it somehow not go, its
     * state is leaked rather than freed under it. */
    kiln_msg *down = NULL;
    if (!kiln_is_none(wd.ref) && kiln_receive(is_down_of, &wd, 30000, &down) == KILN_OK) {
        kiln_msg_free(down);
        free_batch(wa);
        kiln_free(wa);
    }
    kiln_io_close(fd);
    kiln_msg_free(mref_msg);
}

/* ---- the two kinds of connection process ---- */

void kiln_conn_initiator_main(void *arg)
{
    struct kiln_conn_start cs = *(struct kiln_conn_start *)arg;
    kiln_free(arg);
    kiln_node *n = cs.node;
    struct kiln_conn *c = cs.conn;
    const char *at = strchr(c->peer_text, '@');
    char alive[KILN_NODE_NAME_MAX + 1], host[KILN_NODE_NAME_MAX + 1];
    snprintf(alive, sizeof alive, "%.*s", (int)(at - c->peer_text), c->peer_text);
    snprintf(host, sizeof host, "%s", at + 1);
    uint16_t port = 0;
    int rc = kiln_epmd_port_please(n, host, alive, &port);
    int fd = -1;
    if (rc == KILN_OK)
        rc = kiln_tcp_connect(host, port, 7000, &fd);
    uint8_t *buf = NULL;
    size_t have = 0;
    kiln_hs_result res;
    if (rc == KILN_OK) {
        buf = kiln_malloc(READ_CHUNK);
        rc = buf ? handshake(n, fd, KILN_HS_INITIATOR, c->peer_text, buf, &have, &res) : KILN_ENOMEM;
    }
    if (rc != KILN_OK) {
        if (rc == KILN_EBADCOOKIE)
            fprintf(stderr, "kiln: connection to %s refused: the cookies differ\n", c->peer_text);
        kiln_free(buf);
        if (fd >= 0)
            kiln_io_close(fd);
        kiln_conn_down(n, c, rc);
        return;
    }
    pthread_mutex_lock(&n->lock);
    c->fd = fd;
    c->flags = res.flags;
    c->peer_creation = res.peer_creation;
    pthread_mutex_unlock(&n->lock);
    run_connection(n, c, buf, have);
}

static void accepted_main(void *arg)
{
    struct kiln_conn_start cs = *(struct kiln_conn_start *)arg;
    kiln_free(arg);
    kiln_node *n = cs.node;
    uint8_t *buf = kiln_malloc(READ_CHUNK);
    size_t have = 0;
    kiln_hs_result res;
    int rc = buf ? handshake(n, cs.fd, KILN_HS_ACCEPTOR, NULL, buf, &have, &res) : KILN_ENOMEM;
    if (rc != KILN_OK) {
        if (rc == KILN_EBADCOOKIE)
            fprintf(stderr, "kiln: connection attempt refused: digest mismatch (another cookie)\n");
        else if (rc != KILN_EREFUSED)
            fprintf(stderr, "kiln: handshake with a connecting node failed: %s\n", kiln_strerror(rc));
        kiln_free(buf);
        kiln_io_close(cs.fd);
        return;
    }
    kiln_term peer;
    if (kiln_atom(res.peer_name, res.peer_name_len, &peer) != KILN_OK) {
        kiln_free(buf);
        kiln_io_close(cs.fd);
        return;
    }
    /* Our own attempt to this node lost the simultaneous connect, or it
     * is an old connection the peer says is dead: this one takes over. */
    pthread_mutex_lock(&n->lock);
    struct kiln_conn *c = kiln_conn_find_locked(n, peer);
    if (c && c->state == KILN_CONN_UP && c->fd >= 0)
        shutdown(c->fd, SHUT_RDWR);
    struct kiln_conn *nc = kiln_conn_new();
    if (!nc) {
        pthread_mutex_unlock(&n->lock);
        kiln_free(buf);
        kiln_io_close(cs.fd);
        return;
    }
    nc->peer = peer;
    snprintf(nc->peer_text, sizeof nc->peer_text, "%s", res.peer_name);
    nc->state = KILN_CONN_CONNECTING;
    nc->fd = cs.fd;
    nc->flags = res.flags;
    nc->peer_creation = res.peer_creation;
    nc->owner = kiln_self();
    if (c && c->state == KILN_CONN_CONNECTING) {
        /* Frames and waiters queued for our own attempt move here. */
        nc->pending = c->pending;
        nc->pending_tail = c->pending_tail;
        c->pending = c->pending_tail = NULL;
    }
    nc->next = n->conns;
    n->conns = nc;
    kiln_conn_reindex_locked(n);
    pthread_mutex_unlock(&n->lock);
    run_connection(n, nc, buf, have);
}

void kiln_conn_acceptor_main(void *arg)
{
    struct kiln_conn_start cs = *(struct kiln_conn_start *)arg;
    kiln_free(arg);
    for (;;) {
        int fd;
        int rc = kiln_tcp_accept(cs.fd, -1, &fd);
        if (rc != KILN_OK) {
            if (rc == KILN_ESTOPPED)
                return;
            kiln_sleep(10); /* out of descriptors, say: do not spin */
            continue;
        }
        struct kiln_conn_start *a = kiln_calloc(1, sizeof(*a));
        if (a) {
            a->node = cs.node;
            a->fd = fd;
        }
        if (!a || kiln_spawn_fn(cs.node->rt, accepted_main, a, NULL, NULL) != KILN_OK) {
            kiln_free(a);
            close(fd);
        }
    }
}
