/* EPMD, the Erlang port mapper (TCP 4369): the wire format of every request
 * and response, an incremental request parser, and the request handling of
 * an embedded EPMD server as a pure object.
 *
 * Nothing here does I/O. Requests are `u16 Len` + Len bytes (code first);
 * responses carry no length, and most end when the server closes the
 * socket, so the parsers here take "the bytes buffered so far" and answer
 * KILN_EPMD_NEED_MORE, a result, or a distinct kiln_err. They never read
 * past the buffer, and every length is bounded before it is trusted.
 * Parsed names and extras point into the caller's buffer (no copies).
 *
 * Layouts: docs/dist.md and the brief (§1); OTP's erts/epmd/src/epmd_srv.c
 * and kernel's erl_epmd.erl are the reference implementations. */
#ifndef KILN_DIST_EPMD_PROTO_H
#define KILN_DIST_EPMD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"

#define KILN_EPMD_DEFAULT_PORT 4369

/* Request and response codes (the first byte). */
enum kiln_epmd_code {
    KILN_EPMD_ALIVE2_REQ = 120,     /* 'x' */
    KILN_EPMD_ALIVE2_X_RESP = 118,  /* 'v': 32-bit creation (HighestVersion >= 6) */
    KILN_EPMD_ALIVE2_RESP = 121,    /* 'y': 16-bit creation (older nodes) */
    KILN_EPMD_PORT_PLEASE2_REQ = 122, /* 'z' */
    KILN_EPMD_PORT2_RESP = 119,     /* 'w' */
    KILN_EPMD_NAMES_REQ = 110,      /* 'n' */
    KILN_EPMD_DUMP_REQ = 100,       /* 'd' */
    KILN_EPMD_KILL_REQ = 107,       /* 'k' */
    KILN_EPMD_STOP_REQ = 115        /* 's' */
};

#define KILN_EPMD_NODE_NORMAL 77 /* 'M' */
#define KILN_EPMD_NODE_HIDDEN 72 /* 'H' */
#define KILN_EPMD_PROTO_TCP 0    /* TCP (IPv4 or IPv6: OTP sends 0 for both) */
/* What Kiln registers: the v6 handshake, accepting v5 callers' version
 * negotiation (OTP 23/24 pick the handshake format from min(high, high)). */
#define KILN_EPMD_HIGHEST_VERSION 6
#define KILN_EPMD_LOWEST_VERSION 5

/* epmd's MAXSYMLEN: a node name (the part before '@') is at most 255
 * characters of UTF-8, 1020 bytes; Extra has the same byte cap. */
#define KILN_EPMD_MAX_NAME 1020u
#define KILN_EPMD_MAX_NAME_CHARS 255u
#define KILN_EPMD_MAX_EXTRA 1020u
/* Largest request body accepted: an ALIVE2_REQ with both at their caps.
 * Anything longer is refused before a byte of it is buffered. */
#define KILN_EPMD_MAX_REQ (13u + KILN_EPMD_MAX_NAME + KILN_EPMD_MAX_EXTRA)

/* Returned (> 0) by the parsers when the buffer ends before the message. */
#define KILN_EPMD_NEED_MORE 1
/* Returned (> 0) by kiln_epmd_names_next at the end of the lines. */
#define KILN_EPMD_END 2

/* One registered node, as in ALIVE2_REQ and PORT2_RESP. name/extra are
 * byte strings (name not NUL-terminated), borrowed from the caller. */
typedef struct kiln_epmd_node {
    uint16_t port;
    uint8_t type;       /* KILN_EPMD_NODE_NORMAL / _HIDDEN */
    uint8_t protocol;   /* KILN_EPMD_PROTO_TCP */
    uint16_t highest;
    uint16_t lowest;
    const uint8_t *name;
    size_t name_len;
    const uint8_t *extra;
    size_t extra_len;
} kiln_epmd_node;

/* A parsed request. ALIVE2 fills node; PORT_PLEASE2 and STOP fill name. */
typedef struct kiln_epmd_req {
    uint8_t code;
    kiln_epmd_node node;
    const uint8_t *name;
    size_t name_len;
} kiln_epmd_req;

/* ---- checks ---- */

/* A node name epmd accepts: 1..255 UTF-8 characters, no control
 * characters (NUL, newline, ...), at most KILN_EPMD_MAX_NAME bytes.
 * KILN_OK, KILN_EBADUTF8 or KILN_EBADNODE. */
int kiln_epmd_check_name(const uint8_t *name, size_t len);

/* ---- requests (client -> EPMD) ---- */

/* The encoders write one whole message into buf (cap bytes) and set *len
 * to its size. KILN_ENOSPC when cap is too small (*len is then the size
 * needed), KILN_EINVAL / KILN_EBADNODE for arguments the wire cannot carry. */
int kiln_epmd_enc_alive2_req(uint8_t *buf, size_t cap, const kiln_epmd_node *node, size_t *len);
int kiln_epmd_enc_port_please2_req(uint8_t *buf, size_t cap, const uint8_t *name, size_t name_len,
                                   size_t *len);
/* NAMES_REQ, DUMP_REQ or KILL_REQ: the code alone. */
int kiln_epmd_enc_simple_req(uint8_t *buf, size_t cap, uint8_t code, size_t *len);
int kiln_epmd_enc_stop_req(uint8_t *buf, size_t cap, const uint8_t *name, size_t name_len, size_t *len);

/* Parse the request at the front of buf (the bytes received so far).
 * KILN_OK: *req filled, *used = 2 + Len. KILN_EPMD_NEED_MORE: wait for
 * more bytes. Errors: KILN_ETOOBIG (Len over KILN_EPMD_MAX_REQ, reported as
 * soon as the length is known), KILN_EPROTO (Len 0), KILN_EBADREQ (unknown
 * code), KILN_ETRUNCATED (body shorter than the fixed fields),
 * KILN_EBADLENGTH (Nlen/Elen beyond the body), KILN_EBADNODE /
 * KILN_EBADUTF8 (name), KILN_EINVAL (Extra over its cap). Like epmd,
 * bytes after ALIVE2's Extra are ignored and PORT_PLEASE2/STOP names
 * may end in one NUL. */
int kiln_epmd_parse_req(const uint8_t *buf, size_t len, kiln_epmd_req *req, size_t *used);

/* ---- responses (EPMD -> client) ---- */

/* ALIVE2_X_RESP ('v', result, u32 creation) when x, else ALIVE2_RESP
 * ('y', result, u16 creation). */
int kiln_epmd_enc_alive2_resp(uint8_t *buf, size_t cap, bool x, uint8_t result, uint32_t creation,
                              size_t *len);
/* PORT2_RESP: node != NULL gives the ok form (119, 0, PortNo, NodeType,
 * Protocol, Highest, Lowest, Nlen, Name, Elen, Extra: Elen *before*
 * Extra), NULL the not-found form (119, 1). */
int kiln_epmd_enc_port2_resp(uint8_t *buf, size_t cap, const kiln_epmd_node *node, size_t *len);
/* NAMES/DUMP response header: the EPMD's own port as u32. */
int kiln_epmd_enc_names_header(uint8_t *buf, size_t cap, uint32_t epmd_port, size_t *len);
/* One NAMES line: "name <Name> at port <Port>\n". */
int kiln_epmd_enc_names_line(uint8_t *buf, size_t cap, const uint8_t *name, size_t name_len,
                             uint16_t port, size_t *len);

typedef struct kiln_epmd_alive2_resp {
    bool x;            /* 'v' (32-bit creation) rather than 'y' */
    uint8_t result;    /* 0 ok; > 0 refused (name taken) */
    uint32_t creation;
} kiln_epmd_alive2_resp;

/* Either reply form; *used is 6 or 4. KILN_EPROTO for another first byte. */
int kiln_epmd_parse_alive2_resp(const uint8_t *buf, size_t len, kiln_epmd_alive2_resp *out,
                                size_t *used);

typedef struct kiln_epmd_port2_resp {
    uint8_t result;       /* 0: node filled; else unknown name */
    kiln_epmd_node node;  /* name/extra point into the buffer */
} kiln_epmd_port2_resp;

/* PORT2_RESP, ok or error form. Errors: KILN_EPROTO (not 'w'),
 * KILN_EBADNODE (Nlen 0 or over the cap), KILN_EINVAL (Elen over its cap). */
int kiln_epmd_parse_port2_resp(const uint8_t *buf, size_t len, kiln_epmd_port2_resp *out,
                               size_t *used);

/* NAMES (and DUMP) responses: u32 EPMD port, then text lines until the
 * server closes. Walk them with an iterator over the bytes so far. */
typedef struct kiln_epmd_names_iter {
    const uint8_t *buf;
    size_t len;
    size_t pos;
} kiln_epmd_names_iter;

/* KILN_OK and *epmd_port (compare it with the port dialled, as
 * erl_epmd does), or KILN_EPMD_NEED_MORE before 4 bytes. */
int kiln_epmd_names_begin(kiln_epmd_names_iter *it, const uint8_t *buf, size_t len,
                          uint32_t *epmd_port);
/* Next "name N at port P\n" line: KILN_OK with *name (into the buffer) and
 * *port; KILN_EPMD_END when every byte is used; KILN_EPMD_NEED_MORE when
 * the rest is a line without its '\n' yet (an error once the socket has
 * closed); KILN_EPROTO for a malformed line. */
int kiln_epmd_names_next(kiln_epmd_names_iter *it, const uint8_t **name, size_t *name_len,
                         uint16_t *port);

/* KILL_REQ answer: *ok = "OK" (true) or "NO". KILN_EPROTO otherwise. */
int kiln_epmd_parse_kill_resp(const uint8_t *buf, size_t len, bool *ok);
/* STOP_REQ answer: *stopped = "STOPPED" (true) or "NOEXIST". */
int kiln_epmd_parse_stop_resp(const uint8_t *buf, size_t len, bool *stopped);

/* ---- embedded EPMD server ---- */

/* A growable output buffer for the server's replies (NAMES can be long). */
typedef struct kiln_epmd_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} kiln_epmd_buf;

void kiln_epmd_buf_free(kiln_epmd_buf *b);

typedef struct kiln_epmd_server_config {
    uint16_t port;       /* the port the server listens on (NAMES/DUMP header) */
    uint64_t seed;       /* creation seed; 0 = the real-time clock, like epmd */
    bool relaxed;        /* epmd -relaxed_command_check: STOP allowed, KILL with live nodes */
    size_t max_nodes;    /* live registrations; 0 = 4096 */
    size_t max_remembered; /* unregistered names kept for creation bumps; 0 = 1000 */
} kiln_epmd_server_config;

typedef struct kiln_epmd_server kiln_epmd_server;

/* What the owner does with the connection after a request. */
typedef enum kiln_epmd_action {
    KILN_EPMD_CLOSE = 0, /* write the reply (if any), then close: the client waits for the close */
    KILN_EPMD_KEEP,      /* ALIVE2 accepted: keep the socket; its close unregisters the name */
    KILN_EPMD_SHUTDOWN   /* KILL accepted: write "OK", close, stop serving */
} kiln_epmd_action;

typedef struct kiln_epmd_reply {
    kiln_epmd_action action;
    /* STOP accepted: the registration connection of the stopped node,
     * which the owner closes (epmd does). */
    bool close_other;
    uint64_t other_conn;
} kiln_epmd_reply;

/* One registry entry as the server sees it (for inspection and tests). */
typedef struct kiln_epmd_entry {
    kiln_epmd_node node; /* name/extra owned by the server */
    uint32_t creation;
    uint64_t conn;
} kiln_epmd_entry;

/* NULL cfg: port 4369, clock seed, strict. NULL on allocation failure. */
kiln_epmd_server *kiln_epmd_server_new(const kiln_epmd_server_config *cfg);
void kiln_epmd_server_free(kiln_epmd_server *s);

/* Handle one parsed request arriving on connection conn (any owner-chosen
 * id, e.g. the fd) from a loopback/own-address peer or not. Appends the
 * reply to out (nothing for requests that get no answer) and says what to
 * do with the socket. KILN_OK, KILN_ENOMEM (nothing appended, close),
 * or a request that is not answered: KILN_EINVAL (invalid ALIVE2 field),
 * KILN_EREFUSED (needs a local peer / relaxed mode); action CLOSE then. */
int kiln_epmd_server_handle(kiln_epmd_server *s, uint64_t conn, bool local_peer,
                            const kiln_epmd_req *req, kiln_epmd_buf *out, kiln_epmd_reply *reply);

/* Parse the request buffered on conn and handle it: KILN_EPMD_NEED_MORE
 * (keep reading; *used 0), KILN_OK (reply in out, *used bytes consumed),
 * or an error: nothing to send, close. */
int kiln_epmd_server_feed(kiln_epmd_server *s, uint64_t conn, bool local_peer, const uint8_t *buf,
                          size_t len, kiln_epmd_buf *out, kiln_epmd_reply *reply, size_t *used);

/* conn closed: drop the registration it held, if any (the name's creation
 * is remembered and bumped if it registers again). */
void kiln_epmd_server_closed(kiln_epmd_server *s, uint64_t conn);

/* Register directly (the embedding node itself, which needs no socket):
 * as ALIVE2 on conn. KILN_OK and *creation, KILN_ENAME_TAKEN,
 * KILN_ESYSTEM_LIMIT (table full), KILN_EINVAL, KILN_ENOMEM. */
int kiln_epmd_server_register(kiln_epmd_server *s, uint64_t conn, const kiln_epmd_node *node,
                              uint32_t *creation);

/* The live registration for name, or NULL. Valid until the next call
 * that changes the registry. */
const kiln_epmd_entry *kiln_epmd_server_lookup(const kiln_epmd_server *s, const uint8_t *name,
                                               size_t name_len);
size_t kiln_epmd_server_count(const kiln_epmd_server *s);

#endif
