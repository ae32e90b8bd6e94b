/* Control messages from peers: decode a frame's control tuple (and the
 * message or reason after it) and turn it into what a local process
 * would have done: a delivery, a link, an exit signal, a monitor, a DOWN.
 * Malformed input closes the connection; the node stays up. */
#include <stdio.h>
#include <string.h>

#include "dist/frame.h"
#include "dist/node_internal.h"
#include "runtime/dist_hooks.h"
#include "runtime/rt.h"

enum dop {
    DOP_LINK = 1, DOP_SEND = 2, DOP_EXIT = 3, DOP_UNLINK = 4, DOP_REG_SEND = 6, DOP_GROUP_LEADER = 7,
    DOP_EXIT2 = 8, DOP_SEND_TT = 12, DOP_EXIT_TT = 13, DOP_REG_SEND_TT = 16, DOP_EXIT2_TT = 18,
    DOP_SEND_SENDER_TT = 23, DOP_PAYLOAD_EXIT_TT = 25, DOP_PAYLOAD_EXIT2_TT = 27, DOP_ALIAS_SEND_TT = 34,
    DOP_MONITOR_P = 19, DOP_DEMONITOR_P = 20, DOP_MONITOR_P_EXIT = 21, DOP_SEND_SENDER = 22,
    DOP_PAYLOAD_EXIT = 24, DOP_PAYLOAD_EXIT2 = 26, DOP_PAYLOAD_MONITOR_P_EXIT = 28, DOP_SPAWN_REQUEST = 29,
    DOP_SPAWN_REPLY = 31, DOP_ALIAS_SEND = 33, DOP_UNLINK_ID = 35, DOP_UNLINK_ID_ACK = 36
};

static kiln_term el(kiln_term t, size_t i) { return kiln_tuple_get(t, i); }

static int reply_frame(kiln_node *n, struct kiln_conn *c, kiln_term ctrl)
{
    return kiln_dist_out(n, c->peer, ctrl, KILN_NONE);
}

static int dispatch(kiln_node *n, struct kiln_conn *c, const uint8_t *p, size_t len, bool placed);

int kiln_ctrl_dispatch(kiln_node *n, struct kiln_conn *c, const uint8_t *p, size_t len)
{
    return dispatch(n, c, p, len, false);
}

int kiln_ctrl_dispatch_placed(kiln_node *n, struct kiln_conn *c, const uint8_t *hdr, size_t len)
{
    return dispatch(n, c, hdr, len, true);
}

static int dispatch(kiln_node *n, struct kiln_conn *c, const uint8_t *p, size_t len, bool placed)
{
    kiln_rt *rt = n->rt;
    kiln_etf_decode_opts opts = {.ctx = &n->ctx};
    /* Near the table's limit, a peer gets only atoms that exist already
     * (binary_to_term's [safe]): the table is shared by everyone. */
    size_t before = kiln_atom_count();
    opts.existing_atoms_only = c->new_atoms >= KILN_DIST_MAX_NEW_ATOMS;
    kiln_frame f;
    int rc = placed ? kiln_frame_parse_placed(&c->rx, p, len, &opts, &f) : kiln_frame_parse(&c->rx, p, len, &opts, &f);
    /* Counted from the table's size, so atoms others made meanwhile count
     * against this peer too: the error is on the safe side. */
    c->new_atoms += kiln_atom_count() - before;
    if (rc == KILN_FRAME_PARTIAL)
        return KILN_OK; /* a fragment: the message is not whole yet */
    if (rc == KILN_ENOTREG || (rc == KILN_OK && c->new_atoms > KILN_DIST_MAX_NEW_ATOMS)) {
        fprintf(stderr, "kiln: %s created more than %u atoms; closing the connection\n", c->peer_text,
                KILN_DIST_MAX_NEW_ATOMS);
        if (rc == KILN_OK)
            kiln_frame_free(&f);
        return KILN_ESYSTEM_LIMIT;
    }
    if (rc != KILN_OK)
        return rc;
    if (!f.ctrl) {
        /* Read without building the control tuple (frame.h); each as
         * below. */
        if (f.op == DOP_MONITOR_P)
            kiln_dist_in_monitor(rt, f.from, f.to, f.ref);
        else if (f.op == DOP_DEMONITOR_P)
            kiln_dist_in_demonitor(rt, f.from, f.to, f.ref);
        else
            kiln_rt_send(rt, f.to, f.msg); /* SEND, SEND_SENDER, ALIAS_SEND */
        return KILN_OK;
    }
    kiln_msg *cm = f.ctrl, *mm = f.msg;
    kiln_term t = kiln_msg_term(cm);
    int64_t op = f.op;
    kiln_term msg = mm ? kiln_msg_term(mm) : KILN_NONE;
    /* kiln_frame_parse checked each op's arity and payload already. The
     * _TT variants carry a seq_trace token, which Kiln does not trace:
     * they are handled as the plain ops. */
    switch (op) {
    case DOP_SEND:
    case DOP_SEND_SENDER:
    case DOP_SEND_TT:
    case DOP_SEND_SENDER_TT:
    case DOP_ALIAS_SEND_TT:
        /* Dead or unknown pids drop the message, as Erlang does. */
        kiln_rt_send(rt, el(t, 2), mm);
        mm = NULL;
        break;
    case DOP_REG_SEND:
    case DOP_REG_SEND_TT:
        kiln_rt_send(rt, el(t, 3), mm);
        mm = NULL;
        break;
    case DOP_ALIAS_SEND:
        kiln_rt_send(rt, el(t, 2), mm);
        mm = NULL;
        break;
    case DOP_LINK:
        kiln_dist_in_link(rt, el(t, 1), el(t, 2));
        break;
    case DOP_UNLINK:
        kiln_dist_in_unlink(rt, el(t, 1), el(t, 2));
        break;
    case DOP_UNLINK_ID: {
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
        break; /* our side dropped the link when it sent UNLINK_ID */
    case DOP_EXIT:
    case DOP_EXIT2:
        kiln_dist_in_exit(rt, el(t, 1), el(t, 2), el(t, 3), op == DOP_EXIT2);
        break;
    case DOP_EXIT_TT:
    case DOP_EXIT2_TT:
        kiln_dist_in_exit(rt, el(t, 1), el(t, 2), el(t, 4), op == DOP_EXIT2_TT);
        break;
    case DOP_PAYLOAD_EXIT:
    case DOP_PAYLOAD_EXIT2:
    case DOP_PAYLOAD_EXIT_TT:
    case DOP_PAYLOAD_EXIT2_TT:
        kiln_dist_in_exit(rt, el(t, 1), el(t, 2), msg, op == DOP_PAYLOAD_EXIT2 || op == DOP_PAYLOAD_EXIT2_TT);
        break;
    case DOP_MONITOR_P:
        kiln_dist_in_monitor(rt, el(t, 1), el(t, 2), el(t, 3));
        break;
    case DOP_DEMONITOR_P:
        kiln_dist_in_demonitor(rt, el(t, 1), el(t, 2), el(t, 3));
        break;
    case DOP_MONITOR_P_EXIT:
    case DOP_PAYLOAD_MONITOR_P_EXIT: {
        bool payload = op == DOP_PAYLOAD_MONITOR_P_EXIT;
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
        rc = kiln_rpc_spawn_request(n, c, t, msg);
        break;
    case DOP_SPAWN_REPLY:
        kiln_rpc_spawn_reply(n, t);
        break;
    case DOP_GROUP_LEADER:
        break; /* Kiln processes have no group leaders */
    default:
        fprintf(stderr, "kiln: %s sent unsupported control message %lld; ignored\n", c->peer_text, (long long)op);
        break;
    }
    kiln_msg_free(cm);
    kiln_msg_free(mm);
    return rc;
}
