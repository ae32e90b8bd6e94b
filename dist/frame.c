/* Distribution frame parsing (see frame.h). */
#include "dist/frame.h"

#include <stdbool.h>

enum dop {
    DOP_LINK = 1, DOP_SEND = 2, DOP_EXIT = 3, DOP_UNLINK = 4, DOP_REG_SEND = 6, DOP_GROUP_LEADER = 7,
    DOP_EXIT2 = 8, DOP_SEND_TT = 12, DOP_EXIT_TT = 13, DOP_REG_SEND_TT = 16, DOP_EXIT2_TT = 18,
    DOP_MONITOR_P = 19, DOP_DEMONITOR_P = 20, DOP_MONITOR_P_EXIT = 21, DOP_SEND_SENDER = 22,
    DOP_SEND_SENDER_TT = 23, DOP_PAYLOAD_EXIT = 24, DOP_PAYLOAD_EXIT_TT = 25, DOP_PAYLOAD_EXIT2 = 26,
    DOP_PAYLOAD_EXIT2_TT = 27, DOP_PAYLOAD_MONITOR_P_EXIT = 28, DOP_SPAWN_REQUEST = 29, DOP_SPAWN_REQUEST_TT = 30,
    DOP_SPAWN_REPLY = 31, DOP_SPAWN_REPLY_TT = 32, DOP_ALIAS_SEND = 33, DOP_ALIAS_SEND_TT = 34,
    DOP_UNLINK_ID = 35, DOP_UNLINK_ID_ACK = 36
};

/* Arity of each op's tuple and whether a term follows it (brief §4). */
static bool shape(int64_t op, size_t *arity, bool *payload)
{
    switch (op) {
    case DOP_LINK: case DOP_UNLINK: case DOP_GROUP_LEADER: *arity = 3; *payload = false; return true;
    case DOP_SEND: case DOP_SEND_SENDER: case DOP_ALIAS_SEND: *arity = 3; *payload = true; return true;
    case DOP_SEND_TT: case DOP_SEND_SENDER_TT: case DOP_ALIAS_SEND_TT: *arity = 4; *payload = true; return true;
    case DOP_EXIT: case DOP_EXIT2: *arity = 4; *payload = false; return true;
    case DOP_EXIT_TT: case DOP_EXIT2_TT: *arity = 5; *payload = false; return true;
    case DOP_REG_SEND: *arity = 4; *payload = true; return true;
    case DOP_REG_SEND_TT: *arity = 5; *payload = true; return true;
    case DOP_MONITOR_P: case DOP_DEMONITOR_P: *arity = 4; *payload = false; return true;
    case DOP_MONITOR_P_EXIT: *arity = 5; *payload = false; return true;
    case DOP_PAYLOAD_EXIT: case DOP_PAYLOAD_EXIT2: *arity = 3; *payload = true; return true;
    case DOP_PAYLOAD_EXIT_TT: case DOP_PAYLOAD_EXIT2_TT: *arity = 4; *payload = true; return true;
    case DOP_PAYLOAD_MONITOR_P_EXIT: *arity = 4; *payload = true; return true;
    case DOP_SPAWN_REQUEST: *arity = 6; *payload = true; return true;
    case DOP_SPAWN_REQUEST_TT: *arity = 7; *payload = true; return true;
    case DOP_SPAWN_REPLY: *arity = 5; *payload = false; return true;
    case DOP_SPAWN_REPLY_TT: *arity = 6; *payload = false; return true;
    case DOP_UNLINK_ID: case DOP_UNLINK_ID_ACK: *arity = 4; *payload = false; return true;
    default: return false;
    }
}

void kiln_frame_free(kiln_frame *f)
{
    kiln_msg_free(f->ctrl);
    kiln_msg_free(f->msg);
    f->ctrl = f->msg = NULL;
}

int kiln_frame_parse(const uint8_t *p, size_t len, const kiln_etf_decode_opts *opts, kiln_frame *out)
{
    out->ctrl = out->msg = NULL;
    out->op = 0;
    bool bare;
    size_t off;
    if (len >= 1 && p[0] == 'p') {
        bare = false;
        off = 1;
    } else if (len >= 3 && p[0] == 131 && p[1] == 68 && p[2] == 0) {
        /* A header with no atom-cache refs: bare terms follow. */
        bare = true;
        off = 3;
    } else {
        /* Atom-cache headers and fragments are never negotiated by Kiln. */
        return KILN_EPROTO;
    }
    size_t used = 0;
    int rc = bare ? kiln_etf_decode_bare(p + off, len - off, opts, &out->ctrl, &used)
                  : kiln_etf_decode(p + off, len - off, opts, &out->ctrl, &used);
    if (rc != KILN_OK)
        return rc;
    off += used;
    if (off < len) {
        rc = bare ? kiln_etf_decode_bare(p + off, len - off, opts, &out->msg, &used)
                  : kiln_etf_decode(p + off, len - off, opts, &out->msg, &used);
        if (rc != KILN_OK) {
            kiln_frame_free(out);
            return rc;
        }
        off += used;
    }
    kiln_term t = kiln_msg_term(out->ctrl);
    size_t arity;
    bool payload;
    if (off != len) {
        rc = KILN_ETRAILING;
    } else if (!kiln_is_tuple(t) || kiln_tuple_arity(t) < 1 || kiln_get_int64(kiln_tuple_get(t, 0), &out->op) != KILN_OK ||
               !shape(out->op, &arity, &payload) || kiln_tuple_arity(t) != arity || payload != (out->msg != NULL)) {
        rc = KILN_EPROTO;
    }
    if (rc != KILN_OK)
        kiln_frame_free(out);
    return rc;
}
