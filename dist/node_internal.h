/* Inside a distributed node: the node, its connections, and the functions
 * its files share (node.c, conn.c, ctrl_out.c, ctrl_in.c, epmd_client.c,
 * epmd_server.c, net_kernel.c, global.c). */
#ifndef KILN_DIST_NODE_INTERNAL_H
#define KILN_DIST_NODE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "kiln/etf.h"
#include "kiln/io.h"
#include "kiln/node.h"
#include "kiln/process.h"

#include "dist/atom_cache_out.h"
#include "dist/dist_flags.h"
#include "dist/epmd_proto.h"
#include "dist/frame.h"
#include "dist/handshake.h"

#define KILN_NODE_NAME_MAX 255
/* A frame bigger than this closes the connection: a hostile length never
 * becomes a huge allocation. */
#define KILN_DIST_MAX_FRAME (128u << 20)

enum kiln_conn_state { KILN_CONN_CONNECTING, KILN_CONN_UP, KILN_CONN_DOWN };

/* A small multiset of local pids (under the node lock). */
struct kiln_pidset {
    kiln_term *v;
    size_t n, cap;
};

struct kiln_conn {
    struct kiln_conn *next;
    kiln_term peer;                 /* the peer's node atom */
    char peer_text[KILN_NODE_NAME_MAX + 1];
    enum kiln_conn_state state;     /* under the node lock */
    uint64_t flags;                 /* negotiated */
    uint32_t peer_creation;
    int fd;                         /* owner's; -1 until connected */
    kiln_term owner;                /* the connection process (handshake, then reader) */
    kiln_term writer;               /* the writer process, once up */
    kiln_msg *pending, *pending_tail; /* {Ctrl, Msg} queued while connecting (under lock) */
    kiln_term *involved;            /* local pids with links/monitors across it */
    size_t ninvolved, capinvolved;
    kiln_term *waiters;             /* processes in kiln_node_connect */
    size_t nwaiters, capwaiters;
    size_t new_atoms;               /* atoms this peer's frames created (owner only) */
    kiln_frame_state rx;            /* atom cache and fragments coming in (owner only) */
    /* Senders encode without any lock and then take only this one to write
     * the header against the atom cache and hand the frames over in that
     * order; the node lock is for the table, not for traffic. */
    pthread_mutex_t tx_lock;
    bool tx_open;                   /* up and not yet down (under tx_lock) */
    kiln_out_cache tx;              /* atom cache going out (under tx_lock) */
    /* The table's reference and one per sender between its lookup and its
     * hand-over: a connection that goes down meanwhile is freed by the
     * last of them. */
    _Atomic unsigned refs;
    struct kiln_pidset node_monitors; /* monitor_node subscribers (a pid per true) */
};

/* A peer may create at most this many atoms; more closes its connection.
 * Atoms are never freed, so an endless stream of new ones would otherwise
 * fill the table for every other connection too. */
#define KILN_DIST_MAX_NEW_ATOMS 100000u

struct kiln_node {
    kiln_rt *rt;
    kiln_term name;
    char name_text[KILN_NODE_NAME_MAX + 1];
    char host[KILN_NODE_NAME_MAX + 1];
    uint32_t creation;
    uint8_t cookie[256];
    size_t cookie_len;
    uint64_t flags;
    bool hidden;
    unsigned ticktime;              /* seconds */
    uint16_t port, epmd_port;
    int lfd;                        /* distribution listener */
    kiln_etf_ctx ctx;
    kiln_term empty_atom;           /* '', the unused field of SEND and REG_SEND */

    pthread_mutex_t lock;           /* connections */
    struct kiln_conn *conns;
    struct kiln_conn **conn_index;  /* conns by peer atom (kiln_conn_reindex_locked) */
    size_t conn_index_cap;          /* a power of two; 0 without an index */
    bool stopping;

    /* processes the node runs */
    kiln_term acceptor, epmd_holder, net_kernel, rex, global;

    /* embedded EPMD, when this node serves it */
    _Atomic bool serves_epmd;       /* changes on takeover: read by any thread */
    bool embedded_epmd;             /* allowed to serve (start or takeover) */
    int epmd_lfd;
    kiln_term epmd_acceptor;
    pthread_mutex_t epmd_lock;
    kiln_epmd_server *epmd;
    int epmd_clients[1024];         /* client sockets, so stop can end them */
    size_t nepmd_clients;

    _Atomic uint64_t unlink_ids;
    struct rpc_registry *rpc;       /* C functions Erlang may call (rpc.c) */
    struct kiln_pidset nodes_monitors; /* monitor_nodes subscribers */
    size_t frag_size;               /* larger messages go out in fragments */
    _Atomic uint64_t frag_seq;      /* fragment sequence ids */
};

/* ---- node.c ---- */
/* The connection to peer, creating it (and starting a connector process)
 * when connect is set. Under no lock; returns with the node lock held when
 * the result is not NULL. */
struct kiln_conn *kiln_conn_get(kiln_node *n, kiln_term peer, bool connect);
/* Send control term ctrl (and msg, or KILN_NONE) to peer, connecting if
 * needed: encoded now for what the connection negotiated, or kept until
 * the handshake says (the terms are copied, the caller keeps its own). */
int kiln_dist_out(kiln_node *n, kiln_term peer, kiln_term ctrl, kiln_term msg);
/* Called by a connection process when its handshake is done: the
 * connection is up, pending frames go to the writer. */
void kiln_conn_up(kiln_node *n, struct kiln_conn *c);
/* The connection is gone: drop it, tell every involved process. */
void kiln_conn_down(kiln_node *n, struct kiln_conn *c, int err);
/* Find the entry for peer under the lock, or NULL. */
struct kiln_conn *kiln_conn_find_locked(kiln_node *n, kiln_term peer);
/* After any change to n->conns, under the lock. */
void kiln_conn_reindex_locked(kiln_node *n);
/* A zeroed entry holding the table's reference, or NULL. */
struct kiln_conn *kiln_conn_new(void);
/* Drop one reference; the last frees the entry. */
void kiln_conn_release(struct kiln_conn *c);

/* ---- conn.c ---- */
struct kiln_conn_start {
    kiln_node *node;
    struct kiln_conn *conn; /* initiator: the entry to fill; acceptor: NULL */
    int fd;                 /* acceptor: the accepted socket */
};
/* Process bodies: an outgoing connection (EPMD lookup, connect, handshake,
 * reader) and an accepted one. arg is a malloc'd struct kiln_conn_start. */
void kiln_conn_initiator_main(void *arg);
void kiln_conn_acceptor_main(void *arg);

/* ---- ctrl_out.c: control messages to peers ---- */
extern const struct kiln_dist_ops kiln_node_dist_ops;
/* Ctrl [+ Msg] encoded for flags, not framed yet. */
/* A run of bytes in a blob we hold a reference on. */
struct kiln_piece {
    kiln_bin *bin;
    size_t off, len;
};
typedef struct kiln_frames {
    uint64_t flags;
    kiln_bin *cb;             /* the control term's bytes */
    size_t clen, mlen;
    /* The message's bytes: the encoder's own output copied into one blob,
     * between the large binaries it holds, which are referenced, so a
     * 1 MB binary goes to the socket from where it already was. */
    struct kiln_piece *mp;
    size_t nmp;
    kiln_out_refs *refs;      /* their atoms, with DIST_HDR_ATOM_CACHE */
    bool refs_lent;           /* refs are the thread's own (ctrl_out.c) */
    /* A small frame (is_small): the control term's bytes, then the
     * message's, here instead of cb and mp. Also where a small control
     * term waits while the message is encoded. Last: not cleared. */
    bool is_small;
    uint8_t small[256];
} kiln_frames;
/* Encoding, with no lock: KILN_OK or KILN_ENOMEM (nothing to discard). */
int kiln_frames_prepare(kiln_node *n, uint64_t flags, kiln_term ctrl, kiln_term msg, kiln_frames *f);
/* Framing: a chain (through ->next) of frame messages, each an iolist the
 * writer sends as it is; NULL on failure. With DIST_HDR_ATOM_CACHE, cache
 * is the connection's (under the node lock, and the frames must reach the
 * writer before the lock is let go). Consumes f. */
kiln_msg *kiln_frames_finish(kiln_node *n, kiln_frames *f, kiln_out_cache *cache);
void kiln_frames_discard(kiln_frames *f);
/* Both steps at once (under the node lock when cache is given). */
kiln_msg *kiln_frames_encode(kiln_node *n, uint64_t flags, kiln_out_cache *cache, kiln_term ctrl, kiln_term msg);

/* ---- ctrl_in.c: control messages from peers ---- */
/* Handle one non-tick frame payload from c. KILN_OK, or an error that
 * closes the connection (malformed). */
int kiln_ctrl_dispatch(kiln_node *n, struct kiln_conn *c, const uint8_t *p, size_t len);
/* The same for a continuation fragment whose slice was received in place
 * (kiln_frame_slice_room); hdr holds its first 18 bytes. */
int kiln_ctrl_dispatch_placed(kiln_node *n, struct kiln_conn *c, const uint8_t *hdr, size_t len);

/* ---- rpc.c ---- */
int kiln_rpc_init(kiln_node *n);
void kiln_rpc_fini(kiln_node *n);
/* SPAWN_REQUEST {29, ReqId, From, GL, {M,F,A}, Opts} + Args from c. */
int kiln_rpc_spawn_request(kiln_node *n, struct kiln_conn *c, kiln_term ctrl, kiln_term args);
/* SPAWN_REPLY {31, ReqId, To, Flags, Result}: to the requesting process. */
int kiln_rpc_spawn_reply(kiln_node *n, kiln_term ctrl);

/* ---- epmd_client.c ---- */
/* Register name with the EPMD on epmd_port (holding the socket in a
 * process for the node's life); *creation on success. KILN_ESYS with
 * ECONNREFUSED when no EPMD listens. */
int kiln_epmd_register(kiln_node *n, uint32_t *creation);
/* This node as an EPMD entry (ALIVE2, or our own server's table). */
kiln_epmd_node kiln_epmd_self(const kiln_node *n);
/* PORT_PLEASE2 (in a process): the distribution port of alive@host. */
int kiln_epmd_port_please(kiln_node *n, const char *host, const char *alive, uint16_t *port);

/* ---- epmd_server.c ---- */
/* Serve EPMD on epmd_port from this node and register it there. */
int kiln_epmd_serve(kiln_node *n, uint32_t *creation);
void kiln_epmd_serve_stop(kiln_node *n);

/* ---- net_kernel.c ---- */
/* net_kernel (answers ping), and for visible nodes rex and (through
 * kiln_global_start) global_name_server, which OTP talks to on connect. */
int kiln_net_kernel_start(kiln_node *n);

/* ---- global.c ---- */
/* global_name_server for a visible node: answers OTP's global sync
 * (protocol version 8) so peers count this node as synced. */
int kiln_global_start(kiln_node *n);

/* ---- sync with a foreign thread ---- */
struct kiln_waitbox {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    int rc;
    uint32_t value;
};
void kiln_waitbox_init(struct kiln_waitbox *w);
void kiln_waitbox_post(struct kiln_waitbox *w, int rc, uint32_t value);
int kiln_waitbox_wait(struct kiln_waitbox *w, int64_t timeout_ms, uint32_t *value);
void kiln_waitbox_destroy(struct kiln_waitbox *w);

#endif
