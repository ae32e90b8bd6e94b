/* Control messages to peers: the node's implementation of the runtime's
 * distribution operations (runtime/dist_hooks.h). Each operation becomes
 * a frame, encoded on the sender's own thread and handed to the
 * connection's writer.
 *
 * Frames use the pass-through form ('p', then each term with its 131):
 * Kiln does not advertise FRAGMENTS or DIST_HDR_ATOM_CACHE yet, and OTP
 * uses this form exactly when neither is negotiated. */
#include <string.h>

#include "dist/node_internal.h"
#include "runtime/alloc.h"
#include "runtime/dist_hooks.h"
#include "runtime/rt.h"

enum dop {
    DOP_LINK = 1, DOP_SEND = 2, DOP_EXIT = 3, DOP_REG_SEND = 6, DOP_EXIT2 = 8, DOP_MONITOR_P = 19,
    DOP_DEMONITOR_P = 20, DOP_MONITOR_P_EXIT = 21, DOP_ALIAS_SEND = 33, DOP_UNLINK_ID = 35
};

kiln_msg *kiln_frame_new(kiln_node *n, kiln_term ctrl, kiln_term msg)
{
    kiln_etf_enc_opts o = {.ctx = &n->ctx, .minor_version = 2};
    kiln_etf_enc *e = kiln_etf_enc_new(&o);
    if (!e)
        return NULL;
    static const uint8_t head[5] = {0, 0, 0, 0, 'p'}; /* length patched below */
    int rc = kiln_etf_enc_raw(e, head, sizeof head);
    if (rc == KILN_OK)
        rc = kiln_etf_enc_whole(e, ctrl);
    if (rc == KILN_OK && !kiln_is_none(msg))
        rc = kiln_etf_enc_whole(e, msg);
    size_t size = kiln_etf_enc_size(e);
    kiln_bin *b = rc == KILN_OK && size - 4 <= KILN_DIST_MAX_FRAME ? kiln_bin_alloc(size) : NULL;
    kiln_msg *m = b ? kiln_msg_new(64) : NULL;
    if (m) {
        uint8_t *d = kiln_bin_data(b);
        kiln_etf_enc_copy(e, d);
        uint32_t len = (uint32_t)(size - 4);
        d[0] = (uint8_t)(len >> 24);
        d[1] = (uint8_t)(len >> 16);
        d[2] = (uint8_t)(len >> 8);
        d[3] = (uint8_t)len;
        kiln_msg_set_term(m, kiln_binary_from_bin(m, b, 0, size));
        if (kiln_is_none(kiln_msg_term(m))) {
            kiln_msg_free(m);
            m = NULL;
        }
    }
    if (b)
        kiln_bin_decref(b);
    kiln_etf_enc_free(e);
    return m;
}

/* A pid to stand for "from" when a foreign thread sends: OTP wants a pid
 * of this node in REG_SEND and exit signals. */
static kiln_term from_or_node(kiln_node *n, kiln_term from)
{
    return kiln_is_none(from) ? n->net_kernel : from;
}

static int out(kiln_node *n, kiln_term peer, kiln_msg *scratch, kiln_term ctrl, kiln_term msg)
{
    kiln_msg *frame = kiln_is_none(ctrl) ? NULL : kiln_frame_new(n, ctrl, msg);
    kiln_msg_free(scratch);
    if (!frame)
        return KILN_ENOMEM;
    return kiln_conn_send_frame(n, peer, frame);
}

static kiln_term ref_node(kiln_term ref)
{
    kiln_term node;
    uint32_t creation, w[KILN_REF_MAX_WORDS];
    size_t nw = KILN_REF_MAX_WORDS;
    return kiln_get_ref(ref, &node, &creation, w, &nw) == KILN_OK ? node : KILN_NONE;
}

static int op_send(void *ctx, kiln_term from, kiln_term to, kiln_msg *msg)
{
    kiln_node *n = ctx;
    kiln_msg *s = kiln_msg_new(64);
    kiln_term ctrl = KILN_NONE, peer = KILN_NONE;
    if (s && kiln_is_pid(to)) {
        peer = kiln_pid_node(to);
        ctrl = kiln_tuple(s, 3, kiln_small(DOP_SEND), kiln_atom_c(""), to);
    } else if (s && kiln_is_tuple(to)) {
        peer = kiln_tuple_get(to, 1);
        ctrl = kiln_tuple(s, 4, kiln_small(DOP_REG_SEND), from_or_node(n, from), kiln_atom_c(""), kiln_tuple_get(to, 0));
    } else if (s && kiln_is_ref(to)) {
        peer = ref_node(to);
        ctrl = kiln_tuple(s, 3, kiln_small(DOP_ALIAS_SEND), from_or_node(n, from), to);
    }
    int rc = kiln_is_none(peer) ? KILN_EBADARG : out(n, peer, NULL, ctrl, kiln_msg_term(msg));
    kiln_msg_free(s);
    kiln_msg_free(msg);
    return rc;
}

static int op_link(void *ctx, kiln_term from, kiln_term to)
{
    kiln_node *n = ctx;
    kiln_msg *s = kiln_msg_new(64);
    kiln_term ctrl = s ? kiln_tuple(s, 3, kiln_small(DOP_LINK), from, to) : KILN_NONE;
    return out(n, kiln_pid_node(to), s, ctrl, KILN_NONE);
}

static int op_unlink(void *ctx, kiln_term from, kiln_term to)
{
    kiln_node *n = ctx;
    kiln_msg *s = kiln_msg_new(64);
    uint64_t id = atomic_fetch_add(&n->unlink_ids, 1);
    kiln_term ctrl = s ? kiln_tuple(s, 4, kiln_small(DOP_UNLINK_ID), kiln_uint(s, id), from, to) : KILN_NONE;
    return out(n, kiln_pid_node(to), s, ctrl, KILN_NONE);
}

static int op_exit(void *ctx, kiln_term from, kiln_term to, kiln_term reason, bool exit2)
{
    kiln_node *n = ctx;
    kiln_msg *s = kiln_msg_new(64);
    kiln_term ctrl = s ? kiln_tuple(s, 4, kiln_small(exit2 ? DOP_EXIT2 : DOP_EXIT), from_or_node(n, from), to, reason)
                       : KILN_NONE;
    return out(n, kiln_pid_node(to), s, ctrl, KILN_NONE);
}

static int op_monitor(void *ctx, kiln_term from, kiln_term target, kiln_term node, kiln_term ref)
{
    kiln_node *n = ctx;
    kiln_msg *s = kiln_msg_new(64);
    kiln_term ctrl = s ? kiln_tuple(s, 4, kiln_small(DOP_MONITOR_P), from, target, ref) : KILN_NONE;
    return out(n, node, s, ctrl, KILN_NONE);
}

static int op_demonitor(void *ctx, kiln_term from, kiln_term target, kiln_term node, kiln_term ref)
{
    kiln_node *n = ctx;
    kiln_msg *s = kiln_msg_new(64);
    kiln_term ctrl = s ? kiln_tuple(s, 4, kiln_small(DOP_DEMONITOR_P), from, target, ref) : KILN_NONE;
    return out(n, node, s, ctrl, KILN_NONE);
}

static int op_down(void *ctx, kiln_term what, kiln_term watcher, kiln_term ref, kiln_term reason)
{
    kiln_node *n = ctx;
    kiln_msg *s = kiln_msg_new(64);
    kiln_term ctrl = s ? kiln_tuple(s, 5, kiln_small(DOP_MONITOR_P_EXIT), what, watcher, ref, reason) : KILN_NONE;
    return out(n, kiln_pid_node(watcher), s, ctrl, KILN_NONE);
}

static void op_involve(void *ctx, kiln_term node, kiln_term pid)
{
    kiln_node *n = ctx;
    /* A link or monitor may come before any traffic: connect now, so the
     * process hears noconnection if the node cannot be reached. */
    struct kiln_conn *c = kiln_conn_get(n, node, true);
    if (!c) {
        kiln_dist_in_nodedown(n->rt, node, pid);
        return;
    }
    for (size_t i = 0; i < c->ninvolved; i++) {
        if (c->involved[i] == pid) {
            pthread_mutex_unlock(&n->lock);
            return;
        }
    }
    if (c->ninvolved == c->capinvolved) {
        size_t cap = c->capinvolved ? c->capinvolved * 2 : 8;
        kiln_term *v = kiln_realloc(c->involved, cap * sizeof(*v));
        if (!v) {
            pthread_mutex_unlock(&n->lock);
            return;
        }
        c->involved = v;
        c->capinvolved = cap;
    }
    c->involved[c->ninvolved++] = pid;
    pthread_mutex_unlock(&n->lock);
}

const struct kiln_dist_ops kiln_node_dist_ops = {
    .send = op_send,
    .link = op_link,
    .unlink = op_unlink,
    .exit = op_exit,
    .monitor = op_monitor,
    .demonitor = op_demonitor,
    .down = op_down,
    .involve = op_involve,
};
