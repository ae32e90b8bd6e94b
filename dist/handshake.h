/* The Erlang distribution handshake, protocol version 6 (OTP 23+), as a
 * pure state machine for both sides: A, the initiator (connecting side),
 * and B, the acceptor. It does no I/O: the owner feeds it the bytes it
 * read and writes out the bytes it asks for, so any I/O layer can drive it.
 *
 *   A --N(name)--> B,  A <--s(status)-- B,  [A --s(true|false)--> B after "alive"],
 *   A <--N(challenge)-- B,  A --r(challenge, digest)--> B,  A <--a(digest)-- B
 *
 * Every handshake message is `u16 Len` + body; after the last one both
 * sides switch to `u32 Len` framing (not this module's business).
 * digest = MD5(cookie ‖ decimal(challenge)). See docs/dist.md.
 *
 * Driving it:
 *   hs = kiln_hs_new(&cfg, &err);            (A has queued its send_name)
 *   loop:
 *     write kiln_hs_output() bytes, then kiln_hs_output_advance(n);
 *     read; st = kiln_hs_feed(hs, data, len, &used);
 *     RUNNING: keep going; WAIT_OLD: drop the old connection to the peer,
 *     then kiln_hs_resume(); DONE: flush the output, switch framing, the
 *     len - used bytes after `used` are the first post-handshake data;
 *     FAILED: flush the output (it may hold a refusal status), close.
 *   peer closed the socket first: kiln_hs_closed(hs).
 * Each step must finish within the peer's net_setuptime (7 s by default);
 * the timer is the owner's. */
#ifndef KILN_DIST_HANDSHAKE_H
#define KILN_DIST_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"

#define KILN_HS_VERSION 6
/* Node names in the handshake are atoms sent as Latin-1 bytes (OTP uses
 * atom_to_binary(Node, latin1)); an atom is at most 255 characters. */
#define KILN_HS_MAX_NAME 255u
/* Cookies are atoms too, hashed as their Latin-1 bytes. */
#define KILN_HS_MAX_COOKIE 255u
/* Largest handshake message accepted. The biggest real one is a challenge
 * with a 255-byte name (274 bytes); the slack covers trailing fields a
 * later OTP may add to 'N' (which must be ignored). Anything larger is a
 * hostile length and fails before it is buffered. */
#define KILN_HS_MAX_MSG 2048u
#define KILN_HS_DIGEST_LEN 16

typedef enum kiln_hs_role {
    KILN_HS_INITIATOR = 0, /* A: we connected */
    KILN_HS_ACCEPTOR       /* B: we accepted */
} kiln_hs_role;

typedef enum kiln_hs_state {
    KILN_HS_RUNNING = 0,
    KILN_HS_WAIT_OLD, /* B: cookie verified, peer said "true" to "alive": the owner must
                         take down its old connection to this node, then kiln_hs_resume */
    KILN_HS_DONE,
    KILN_HS_FAILED
} kiln_hs_state;

/* The status message of step 2. */
typedef enum kiln_hs_status {
    KILN_HS_ST_NONE = 0,
    KILN_HS_ST_OK,
    KILN_HS_ST_OK_SIMULTANEOUS, /* B had its own attempt to A and drops it (A's name is greater) */
    KILN_HS_ST_NOK,             /* B wins a simultaneous connect; A gives up this attempt */
    KILN_HS_ST_NOT_ALLOWED,     /* refused: missing mandatory flags, allow-list */
    KILN_HS_ST_ALIVE,           /* B still has a connection from A's name; A answers true/false */
    KILN_HS_ST_NAMED            /* "named:" reply to a NAME_ME request (Kiln never asks) */
} kiln_hs_status;

/* B's view of the node that is connecting, from its connection table. */
typedef enum kiln_hs_peer {
    KILN_HS_PEER_NONE = 0, /* nothing: status ok */
    KILN_HS_PEER_PENDING,  /* our own outgoing attempt to it is under way: ok_simultaneous
                              or nok, decided by comparing the node names */
    KILN_HS_PEER_UP,       /* a live connection to it exists: status alive */
    KILN_HS_PEER_REFUSE    /* not allowed (allow-list): status not_allowed */
} kiln_hs_peer;

/* The owner's answers (the connection manager's). Either may be NULL. */
typedef struct kiln_hs_hooks {
    /* B, after the peer's send_name passed the checks: what do we have
     * with node `name`? NULL: KILN_HS_PEER_NONE. */
    kiln_hs_peer (*peer_state)(void *arg, const char *name, size_t len);
    /* A, when B answers "alive": is this attempt still wanted (do we
     * still have it pending)? true sends "true" (B drops its old
     * connection), false sends "false" and fails. NULL: true. */
    bool (*still_pending)(void *arg, const char *name, size_t len);
    void *arg;
} kiln_hs_hooks;

typedef struct kiln_hs_config {
    kiln_hs_role role;
    const char *name;       /* our full node name, alive@host (NUL-terminated) */
    uint32_t creation;      /* non-zero, from EPMD; the same one every pid/ref carries */
    uint64_t flags;         /* usually KILN_DFLAGS_VISIBLE or KILN_DFLAGS_HIDDEN */
    uint64_t required;      /* flags the peer must have; 0: KILN_DFLAGS_REQUIRED */
    const uint8_t *cookie;  /* the shared secret's bytes */
    size_t cookie_len;
    const char *peer;       /* A: the node we dial, alive@host; ignored for B */
    kiln_hs_hooks hooks;
} kiln_hs_config;

typedef struct kiln_hs_result {
    kiln_hs_state state;
    int err;                /* FAILED: why (kiln_err, see kiln_hs_feed) */
    kiln_hs_status status;  /* A: status received; B: status sent */
    bool replaces_live;     /* B: the peer answered "true" to "alive" */
    char peer_name[KILN_HS_MAX_NAME + 1]; /* NUL-terminated once known */
    size_t peer_name_len;
    uint64_t peer_flags;    /* as the peer sent them, MANDATORY_25_DIGEST expanded */
    uint64_t flags;         /* negotiated: ours & the peer's */
    uint32_t peer_creation;
} kiln_hs_result;

typedef struct kiln_hs kiln_hs;

/* Validate cfg and start. A's send_name is queued at once. NULL with *err:
 * KILN_EINVAL (bad name, peer, cookie, creation 0), KILN_ENOMEM. */
kiln_hs *kiln_hs_new(const kiln_hs_config *cfg, int *err);
void kiln_hs_free(kiln_hs *hs);

/* Feed received bytes. Consumes whole messages until the handshake ends
 * or the input runs out (a partial message is buffered inside, bounded by
 * KILN_HS_MAX_MSG); *used says how many bytes were taken. Once DONE,
 * data[*used..len) is the first post-handshake traffic, not consumed.
 * Failure reasons in kiln_hs_result()->err:
 *   KILN_EPROTO       unexpected or malformed message, empty frame
 *   KILN_ETOOBIG      a frame longer than KILN_HS_MAX_MSG
 *   KILN_ENOTSUP      legacy 'n' send_name (version 5), or a NAME_ME request
 *   KILN_EBADNODE     peer name malformed, or B's name is not the node A dialled
 *   KILN_EDFLAGS      the peer lacks required flags (B sends not_allowed first)
 *   KILN_EBADCOOKIE   digest mismatch (the peer has another cookie)
 *   KILN_EREFUSED     status not_allowed/nok received, or B sent nok / not_allowed
 *                     (status says which), or the peer closed the socket
 *   KILN_EBUSY        A answered "false" to "alive" (already connected)
 *   KILN_ESYS         no randomness for the challenge, or MD5 unavailable
 * Feeding a finished handshake consumes nothing. */
kiln_hs_state kiln_hs_feed(kiln_hs *hs, const void *data, size_t len, size_t *used);

/* The peer closed the connection: FAILED unless already DONE. Closing right
 * after our challenge reply is how OTP rejects a wrong digest, so an A
 * waiting for the ack reports KILN_EBADCOOKIE; otherwise KILN_EREFUSED. */
kiln_hs_state kiln_hs_closed(kiln_hs *hs);

/* WAIT_OLD -> the ack is queued, DONE. */
kiln_hs_state kiln_hs_resume(kiln_hs *hs);

/* Bytes waiting to be sent (NULL/0 when none), and how many were sent. */
const uint8_t *kiln_hs_output(const kiln_hs *hs, size_t *len);
void kiln_hs_output_advance(kiln_hs *hs, size_t n);

kiln_hs_state kiln_hs_get_state(const kiln_hs *hs);
const kiln_hs_result *kiln_hs_get_result(const kiln_hs *hs);

/* ---- message codecs (used by the machine; exposed for tests and tools) ---- */

/* Encoders write `u16 Len` + body into buf; *len = the total. KILN_ENOSPC
 * (with *len the size needed) or KILN_EINVAL (name/status too long). */
int kiln_hs_enc_name(uint8_t *buf, size_t cap, uint64_t flags, uint32_t creation, const char *name,
                     size_t name_len, size_t *len);
int kiln_hs_enc_status(uint8_t *buf, size_t cap, kiln_hs_status st, size_t *len);
/* "strue" / "sfalse": A's answer to "alive". */
int kiln_hs_enc_alive_reply(uint8_t *buf, size_t cap, bool yes, size_t *len);
int kiln_hs_enc_named(uint8_t *buf, size_t cap, const char *name, size_t name_len, uint32_t creation,
                      size_t *len);
int kiln_hs_enc_challenge(uint8_t *buf, size_t cap, uint64_t flags, uint32_t challenge,
                          uint32_t creation, const char *name, size_t name_len, size_t *len);
int kiln_hs_enc_reply(uint8_t *buf, size_t cap, uint32_t challenge,
                      const uint8_t digest[KILN_HS_DIGEST_LEN], size_t *len);
int kiln_hs_enc_ack(uint8_t *buf, size_t cap, const uint8_t digest[KILN_HS_DIGEST_LEN], size_t *len);

/* Split one `u16 Len` frame off the front of buf: KILN_OK with *body,
 * *body_len and *used; KILN_HS_NEED_MORE; KILN_EPROTO (Len 0) or
 * KILN_ETOOBIG (Len > KILN_HS_MAX_MSG, known from the first 2 bytes). */
#define KILN_HS_NEED_MORE 1
int kiln_hs_frame(const uint8_t *buf, size_t len, const uint8_t **body, size_t *body_len, size_t *used);

/* Parsers take one message body (after the u16 length). Names point into
 * the body. send_name and challenge ignore bytes after the name; reply
 * and ack must be exactly their size. KILN_EPROTO (wrong tag or size),
 * KILN_EBADLENGTH (Nlen past the body), KILN_ENOTSUP (legacy 'n'). */
typedef struct kiln_hs_name_msg {
    uint64_t flags;
    uint32_t creation;
    const char *name;
    size_t name_len;
} kiln_hs_name_msg;
int kiln_hs_parse_name(const uint8_t *body, size_t len, kiln_hs_name_msg *out);

typedef struct kiln_hs_challenge_msg {
    uint64_t flags;
    uint32_t challenge;
    uint32_t creation;
    const char *name;
    size_t name_len;
} kiln_hs_challenge_msg;
int kiln_hs_parse_challenge(const uint8_t *body, size_t len, kiln_hs_challenge_msg *out);

/* A status message. For "named:" the assigned name and creation are
 * returned in named (may be NULL otherwise). Unknown text: KILN_EPROTO. */
int kiln_hs_parse_status(const uint8_t *body, size_t len, kiln_hs_status *st, kiln_hs_name_msg *named);
/* "strue" / "sfalse". */
int kiln_hs_parse_alive_reply(const uint8_t *body, size_t len, bool *yes);
int kiln_hs_parse_reply(const uint8_t *body, size_t len, uint32_t *challenge,
                        uint8_t digest[KILN_HS_DIGEST_LEN]);
int kiln_hs_parse_ack(const uint8_t *body, size_t len, uint8_t digest[KILN_HS_DIGEST_LEN]);

/* MD5(cookie ‖ decimal(challenge)), OTP's gen_digest. KILN_ESYS if the
 * crypto library refuses MD5 (a FIPS-only build). */
int kiln_hs_digest(const uint8_t *cookie, size_t cookie_len, uint32_t challenge,
                   uint8_t out[KILN_HS_DIGEST_LEN]);

/* A full node name as OTP's is_node_name checks it: exactly one '@' with
 * something on both sides, at most KILN_HS_MAX_NAME bytes, no NUL. */
bool kiln_hs_name_valid(const char *name, size_t len);

/* Simultaneous connect: does B (us, `mine`) win against A (`peer`)? OTP
 * compares the node atoms; the greater name keeps its own attempt. */
bool kiln_hs_wins_simultaneous(const char *mine, size_t mine_len, const char *peer, size_t peer_len);

#endif
