/* Control messages from peers: decode a frame's control tuple (and the
 * message or reason after it) and turn it into what a local process
 * would have done: a delivery, a link, an exit signal, a monitor, a DOWN.
 * Malformed input closes the connection; the node stays up. */
#include <stdio.h>
#include <string.h>

#include "dist/node_internal.h"
#include "runtime/dist_hooks.h"
#include "runtime/rt.h"

enum dop {
    DOP_LINK = 1, DOP_SEND = 2, DOP_EXIT = 3, DOP_UNLINK = 4, DOP_REG_SEND = 6, DOP_GROUP_LEADER = 7,
    DOP_EXIT2 = 8, DOP_MONITOR_P = 19, DOP_DEMONITOR_P = 20, DOP_MONITOR_P_EXIT = 21, DOP_SEND_SENDER = 22,
    DOP_PAYLOAD_EXIT = 24, DOP_PAYLOAD_EXIT2 = 26, DOP_PAYLOAD_MONITOR_P_EXIT = 28, DOP_SPAWN_REQUEST = 29,
    DOP_SPAWN_REPLY = 31, DOP_ALIAS_SEND = 33, DOP_UNLINK_ID = 35, DOP_UNLINK_ID_ACK = 36
};

static kiln_term el(kiln_term t, size_t i) { return kiln_tuple_get(t, i); }

static int reply_frame(kiln_node *n, struct kiln_conn *c, kiln_term ctrl)
{
    kiln_msg *f = kiln_frame_new(n, ctrl, KILN_NONE);
    return f ? kiln_conn_send_frame(n, c->peer, f) : KILN_ENOMEM;
}

int kiln_ctrl_dispatch(kiln_node *n, struct kiln_conn *c, const uint8_t *p, size_t len)
{
    kiln_rt *rt = n->rt;
    kiln_etf_decode_opts opts = {.ctx = &n->ctx};
    size_t off, used;
    kiln_msg *cm = NULL, *mm = NULL;
    int rc;
    if (p[0] == 'p') {
        off = 1;
        rc = kiln_etf_decode(p + off, len - off, &opts, &cm, &used);
        if (rc != KILN_OK)
            return rc;
        off += used;
        if (off < len) {
            rc = kiln_etf_decode(p + off, len - off, &opts, &mm, &used);
            if (rc != KILN_OK) {
                kiln_msg_free(cm);
                return rc;
            }
            off += used;
        }
    } else if (len >= 3 && p[0] == 131 && p[1] == 68 && p[2] == 0) {
        /* A header with no atom-cache refs: bare terms follow. */
        off = 3;
        rc = kiln_etf_decode_bare(p + off, len - off, &opts, &cm, &used);
        if (rc != KILN_OK)
            return rc;
        off += used;
        if (off < len) {
            rc = kiln_etf_decode_bare(p + off, len - off, &opts, &mm, &used);
            if (rc != KILN_OK) {
                kiln_msg_free(cm);
                return rc;
            }
            off += used;
        }
    } else {
        /* Atom-cache headers and fragments are never negotiated by Kiln. */
        return KILN_EPROTO;
    }
    if (off != len) {
        kiln_msg_free(cm);
        kiln_msg_free(mm);
        return KILN_ETRAILING;
    }
    kiln_term t = kiln_msg_term(cm);
    int64_t op;
    if (!kiln_is_tuple(t) || kiln_tuple_arity(t) < 1 || kiln_get_int64(el(t, 0), &op) != KILN_OK) {
        kiln_msg_free(cm);
        kiln_msg_free(mm);
        return KILN_EPROTO;
    }
    size_t ar = kiln_tuple_arity(t);
    kiln_term msg = mm ? kiln_msg_term(mm) : KILN_NONE;
    rc = KILN_OK;
#define NEED(a, withmsg)                                                                               \
    do {                                                                                               \
        if (ar != (a) || (withmsg) != (mm != NULL)) {                                                  \
            rc = KILN_EPROTO;                                                                          \
            goto done;                                                                                 \
        }                                                                                              \
    } while (0)
    switch (op) {
    case DOP_SEND:
    case DOP_SEND_SENDER:
        NEED(3, true);
        /* Dead or unknown pids drop the message, as Erlang does. */
        kiln_rt_send(rt, el(t, 2), mm);
        mm = NULL;
        break;
    case DOP_REG_SEND:
        NEED(4, true);
        kiln_rt_send(rt, el(t, 3), mm);
        mm = NULL;
        break;
    case DOP_ALIAS_SEND:
        NEED(3, true);
        kiln_rt_send(rt, el(t, 2), mm);
        mm = NULL;
        break;
    case DOP_LINK:
        NEED(3, false);
        kiln_dist_in_link(rt, el(t, 1), el(t, 2));
        break;
    case DOP_UNLINK:
        NEED(3, false);
        kiln_dist_in_unlink(rt, el(t, 1), el(t, 2));
        break;
    case DOP_UNLINK_ID: {
        NEED(4, false);
        kiln_dist_in_unlink(rt, el(t, 2), el(t, 3));
        /* Always acknowledged, before any other signal to the unlinker. */
        kiln_msg *s = kiln_msg_new(64);
        kiln_term ack = s ? kiln_tuple(s, 4, kiln_small(DOP_UNLINK_ID_ACK), el(t, 1), el(t, 3), el(t, 2)) : KILN_NONE;
        if (!kiln_is_none(ack))
            reply_frame(n, c, ack);
        kiln_msg_free(s);
        break;
    }
    case DOP_UNLINK_ID_ACK:
        NEED(4, false);
        break; /* our side dropped the link when it sent UNLINK_ID */
    case DOP_EXIT:
    case DOP_EXIT2:
        NEED(4, false);
        kiln_dist_in_exit(rt, el(t, 1), el(t, 2), el(t, 3), op == DOP_EXIT2);
        break;
    case DOP_PAYLOAD_EXIT:
    case DOP_PAYLOAD_EXIT2:
        NEED(3, true);
        kiln_dist_in_exit(rt, el(t, 1), el(t, 2), msg, op == DOP_PAYLOAD_EXIT2);
        break;
    case DOP_MONITOR_P:
        NEED(4, false);
        kiln_dist_in_monitor(rt, el(t, 1), el(t, 2), el(t, 3));
        break;
    case DOP_DEMONITOR_P:
        NEED(4, false);
        kiln_dist_in_demonitor(rt, el(t, 1), el(t, 2), el(t, 3));
        break;
    case DOP_MONITOR_P_EXIT:
    case DOP_PAYLOAD_MONITOR_P_EXIT: {
        bool payload = op == DOP_PAYLOAD_MONITOR_P_EXIT;
        NEED(payload ? 4 : 5, payload);
        kiln_term what = el(t, 1);
        kiln_msg *s = NULL;
        if (kiln_is_atom(what)) {
            /* Monitored by name: the DOWN says {Name, Node}. */
            s = kiln_msg_new(32);
            what = s ? kiln_tuple(s, 2, what, c->peer) : KILN_NONE;
        }
        if (!kiln_is_none(what))
            kiln_dist_in_down(rt, what, el(t, 2), el(t, 3), payload ? msg : el(t, 4));
        kiln_msg_free(s);
        break;
    }
    case DOP_SPAWN_REQUEST:
        NEED(6, true);
        rc = kiln_rpc_spawn_request(n, c, t, msg);
        break;
    case DOP_SPAWN_REPLY:
        NEED(5, false);
        kiln_rpc_spawn_reply(n, t);
        break;
    case DOP_GROUP_LEADER:
        break; /* Kiln processes have no group leaders */
    default:
        fprintf(stderr, "kiln: %s sent unsupported control message %lld; ignored\n", c->peer_text, (long long)op);
        break;
    }
#undef NEED
done:
    kiln_msg_free(cm);
    kiln_msg_free(mm);
    return rc;
}
