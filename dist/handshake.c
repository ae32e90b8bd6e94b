/* The version-6 distribution handshake as a pure state machine; see
 * handshake.h. The order of checks and the status logic follow OTP's
 * dist_util.erl (handshake_we_started / handshake_other_started). */
#include "dist/handshake.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "dist/dist_flags.h"
#include "runtime/alloc.h"

static inline uint16_t get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t get64(const uint8_t *p) { return ((uint64_t)get32(p) << 32) | get32(p + 4); }
static inline void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

/* ---- names, digest ---- */

bool kiln_hs_name_valid(const char *name, size_t len)
{
    if (!name || len < 3 || len > KILN_HS_MAX_NAME || memchr(name, 0, len))
        return false;
    const char *at = memchr(name, '@', len);
    if (!at || at == name || at == name + len - 1)
        return false;
    return memchr(at + 1, '@', len - (size_t)(at - name) - 1) == NULL;
}

bool kiln_hs_wins_simultaneous(const char *mine, size_t mine_len, const char *peer, size_t peer_len)
{
    /* Atom order is the order of the names' characters; ties (which a
     * correct peer never produces) go to us, so we answer nok. */
    size_t n = mine_len < peer_len ? mine_len : peer_len;
    int c = memcmp(mine, peer, n);
    return c > 0 || (c == 0 && mine_len >= peer_len);
}

int kiln_hs_digest(const uint8_t *cookie, size_t cookie_len, uint32_t challenge, uint8_t out[KILN_HS_DIGEST_LEN])
{
    /* OTP: erlang:md5([atom_to_list(Cookie) | integer_to_list(Challenge)]),
     * the challenge as unsigned decimal without padding. */
    char dec[16];
    int dn = snprintf(dec, sizeof dec, "%u", (unsigned)challenge);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int mdlen = 0;
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, cookie, cookie_len) == 1 &&
             EVP_DigestUpdate(ctx, dec, (size_t)dn) == 1 && EVP_DigestFinal_ex(ctx, out, &mdlen) == 1 &&
             mdlen == KILN_HS_DIGEST_LEN;
    EVP_MD_CTX_free(ctx);
    return ok ? KILN_OK : KILN_ESYS;
}

/* ---- encoders ---- */

static int fits(size_t need, size_t cap, size_t *len)
{
    *len = need;
    return need <= cap ? KILN_OK : KILN_ENOSPC;
}

int kiln_hs_enc_name(uint8_t *buf, size_t cap, uint64_t flags, uint32_t creation, const char *name,
                     size_t name_len, size_t *len)
{
    if (!len || !name || name_len > KILN_HS_MAX_NAME)
        return KILN_EINVAL;
    size_t body = 15 + name_len;
    int rc = fits(2 + body, cap, len);
    if (rc != KILN_OK)
        return rc;
    put16(buf, (uint16_t)body);
    buf[2] = 'N';
    put64(buf + 3, flags);
    put32(buf + 11, creation);
    put16(buf + 15, (uint16_t)name_len);
    memcpy(buf + 17, name, name_len);
    return KILN_OK;
}

static const char *const status_text[] = {
    [KILN_HS_ST_OK] = "ok",
    [KILN_HS_ST_OK_SIMULTANEOUS] = "ok_simultaneous",
    [KILN_HS_ST_NOK] = "nok",
    [KILN_HS_ST_NOT_ALLOWED] = "not_allowed",
    [KILN_HS_ST_ALIVE] = "alive",
};

static int enc_s_text(uint8_t *buf, size_t cap, const char *text, size_t *len)
{
    size_t n = strlen(text);
    int rc = fits(3 + n, cap, len);
    if (rc != KILN_OK)
        return rc;
    put16(buf, (uint16_t)(1 + n));
    buf[2] = 's';
    memcpy(buf + 3, text, n);
    return KILN_OK;
}

int kiln_hs_enc_status(uint8_t *buf, size_t cap, kiln_hs_status st, size_t *len)
{
    if (!len || st <= KILN_HS_ST_NONE || st >= KILN_HS_ST_NAMED)
        return KILN_EINVAL; /* "named:" carries data: kiln_hs_enc_named */
    return enc_s_text(buf, cap, status_text[st], len);
}

int kiln_hs_enc_alive_reply(uint8_t *buf, size_t cap, bool yes, size_t *len)
{
    if (!len)
        return KILN_EINVAL;
    return enc_s_text(buf, cap, yes ? "true" : "false", len);
}

int kiln_hs_enc_named(uint8_t *buf, size_t cap, const char *name, size_t name_len, uint32_t creation,
                      size_t *len)
{
    if (!len || !name || name_len > KILN_HS_MAX_NAME)
        return KILN_EINVAL;
    size_t body = 1 + 6 + 2 + name_len + 4;
    int rc = fits(2 + body, cap, len);
    if (rc != KILN_OK)
        return rc;
    put16(buf, (uint16_t)body);
    memcpy(buf + 2, "snamed:", 7);
    put16(buf + 9, (uint16_t)name_len);
    memcpy(buf + 11, name, name_len);
    put32(buf + 11 + name_len, creation);
    return KILN_OK;
}

int kiln_hs_enc_challenge(uint8_t *buf, size_t cap, uint64_t flags, uint32_t challenge, uint32_t creation,
                          const char *name, size_t name_len, size_t *len)
{
    if (!len || !name || name_len > KILN_HS_MAX_NAME)
        return KILN_EINVAL;
    size_t body = 19 + name_len;
    int rc = fits(2 + body, cap, len);
    if (rc != KILN_OK)
        return rc;
    put16(buf, (uint16_t)body);
    buf[2] = 'N';
    put64(buf + 3, flags);
    put32(buf + 11, challenge);
    put32(buf + 15, creation);
    put16(buf + 19, (uint16_t)name_len);
    memcpy(buf + 21, name, name_len);
    return KILN_OK;
}

int kiln_hs_enc_reply(uint8_t *buf, size_t cap, uint32_t challenge, const uint8_t digest[KILN_HS_DIGEST_LEN],
                      size_t *len)
{
    if (!len)
        return KILN_EINVAL;
    int rc = fits(2 + 21, cap, len);
    if (rc != KILN_OK)
        return rc;
    put16(buf, 21);
    buf[2] = 'r';
    put32(buf + 3, challenge);
    memcpy(buf + 7, digest, KILN_HS_DIGEST_LEN);
    return KILN_OK;
}

int kiln_hs_enc_ack(uint8_t *buf, size_t cap, const uint8_t digest[KILN_HS_DIGEST_LEN], size_t *len)
{
    if (!len)
        return KILN_EINVAL;
    int rc = fits(2 + 17, cap, len);
    if (rc != KILN_OK)
        return rc;
    put16(buf, 17);
    buf[2] = 'a';
    memcpy(buf + 3, digest, KILN_HS_DIGEST_LEN);
    return KILN_OK;
}

/* ---- parsers ---- */

int kiln_hs_frame(const uint8_t *buf, size_t len, const uint8_t **body, size_t *body_len, size_t *used)
{
    *used = 0;
    if (len < 2)
        return KILN_HS_NEED_MORE;
    size_t n = get16(buf);
    if (n == 0)
        return KILN_EPROTO; /* no ticks before the handshake is over */
    if (n > KILN_HS_MAX_MSG)
        return KILN_ETOOBIG;
    if (len - 2 < n)
        return KILN_HS_NEED_MORE;
    *body = buf + 2;
    *body_len = n;
    *used = 2 + n;
    return KILN_OK;
}

int kiln_hs_parse_name(const uint8_t *b, size_t len, kiln_hs_name_msg *out)
{
    if (len >= 1 && b[0] == 'n')
        return KILN_ENOTSUP; /* v5 send_name: never sent to a node registered with version 6 */
    if (len < 15 || b[0] != 'N')
        return KILN_EPROTO;
    size_t nlen = get16(b + 13);
    if (nlen > len - 15)
        return KILN_EBADLENGTH;
    out->flags = get64(b + 1);
    out->creation = get32(b + 9);
    out->name = (const char *)(b + 15);
    out->name_len = nlen;
    return KILN_OK; /* bytes after the name: ignored, as OTP does */
}

int kiln_hs_parse_challenge(const uint8_t *b, size_t len, kiln_hs_challenge_msg *out)
{
    if (len >= 1 && b[0] == 'n')
        return KILN_ENOTSUP;
    if (len < 19 || b[0] != 'N')
        return KILN_EPROTO;
    size_t nlen = get16(b + 17);
    if (nlen > len - 19)
        return KILN_EBADLENGTH;
    out->flags = get64(b + 1);
    out->challenge = get32(b + 9);
    out->creation = get32(b + 13);
    out->name = (const char *)(b + 19);
    out->name_len = nlen;
    return KILN_OK;
}

static bool text_is(const uint8_t *p, size_t n, const char *text)
{
    return n == strlen(text) && memcmp(p, text, n) == 0;
}

int kiln_hs_parse_status(const uint8_t *b, size_t len, kiln_hs_status *st, kiln_hs_name_msg *named)
{
    if (len < 1 || b[0] != 's')
        return KILN_EPROTO;
    const uint8_t *t = b + 1;
    size_t n = len - 1;
    if (n >= 6 && memcmp(t, "named:", 6) == 0) {
        /* named: Nlen Name Creation; trailing bytes ignored like OTP's match */
        if (n < 6 + 2 + 4)
            return KILN_EPROTO;
        size_t nlen = get16(t + 6);
        if (nlen > n - 12)
            return KILN_EBADLENGTH;
        if (named) {
            named->flags = 0;
            named->name = (const char *)(t + 8);
            named->name_len = nlen;
            named->creation = get32(t + 8 + nlen);
        }
        *st = KILN_HS_ST_NAMED;
        return KILN_OK;
    }
    for (int i = KILN_HS_ST_OK; i < KILN_HS_ST_NAMED; i++) {
        if (text_is(t, n, status_text[i])) {
            *st = (kiln_hs_status)i;
            return KILN_OK;
        }
    }
    return KILN_EPROTO;
}

int kiln_hs_parse_alive_reply(const uint8_t *b, size_t len, bool *yes)
{
    if (len < 1 || b[0] != 's')
        return KILN_EPROTO;
    if (text_is(b + 1, len - 1, "true"))
        *yes = true;
    else if (text_is(b + 1, len - 1, "false"))
        *yes = false;
    else
        return KILN_EPROTO;
    return KILN_OK;
}

int kiln_hs_parse_reply(const uint8_t *b, size_t len, uint32_t *challenge, uint8_t digest[KILN_HS_DIGEST_LEN])
{
    /* OTP matches [$r, C3..C0 | Sum] with length(Sum) =:= 16: exact size. */
    if (len != 21 || b[0] != 'r')
        return KILN_EPROTO;
    *challenge = get32(b + 1);
    memcpy(digest, b + 5, KILN_HS_DIGEST_LEN);
    return KILN_OK;
}

int kiln_hs_parse_ack(const uint8_t *b, size_t len, uint8_t digest[KILN_HS_DIGEST_LEN])
{
    if (len != 17 || b[0] != 'a')
        return KILN_EPROTO;
    memcpy(digest, b + 1, KILN_HS_DIGEST_LEN);
    return KILN_OK;
}

/* ---- the state machine ---- */

enum step {
    A_WAIT_STATUS,
    A_WAIT_CHALLENGE,
    A_WAIT_ACK,
    B_WAIT_NAME,
    B_WAIT_ALIVE_REPLY,
    B_WAIT_REPLY,
    B_WAIT_OLD,
    STEP_END
};

/* Room for everything one step queues: B's status plus its challenge is
 * the most (18 + 276 bytes). */
#define OUT_CAP 1024

struct kiln_hs {
    kiln_hs_result res;
    enum step step;
    kiln_hs_role role;
    kiln_hs_hooks hooks;
    uint64_t flags, required;
    uint32_t creation;
    uint32_t my_challenge;
    char name[KILN_HS_MAX_NAME + 1];
    size_t name_len;
    char peer[KILN_HS_MAX_NAME + 1]; /* A: the node dialled */
    size_t peer_len;
    uint8_t cookie[KILN_HS_MAX_COOKIE];
    size_t cookie_len;
    uint8_t ack_digest[KILN_HS_DIGEST_LEN]; /* B in WAIT_OLD: the ack to send */
    size_t in_len;                          /* bytes of the current frame buffered */
    uint8_t in[2 + KILN_HS_MAX_MSG];
    size_t out_off, out_len;
    uint8_t out[OUT_CAP];
};

static kiln_hs_state fail(kiln_hs *hs, int err)
{
    hs->res.state = KILN_HS_FAILED;
    hs->res.err = err;
    hs->step = STEP_END;
    return KILN_HS_FAILED;
}

/* Append the output of one encoder call to hs->out. OUT_CAP holds every
 * combination a step queues, so ENOSPC here is a bug, reported as EINVAL. */
#define QUEUE(hs, call)                                                  \
    do {                                                                 \
        size_t n_ = 0;                                                   \
        uint8_t *p_ = (hs)->out + (hs)->out_len;                         \
        size_t cap_ = OUT_CAP - (hs)->out_len;                           \
        (void)p_;                                                        \
        (void)cap_;                                                      \
        if ((call) != KILN_OK)                                           \
            return fail((hs), KILN_EINVAL);                              \
        (hs)->out_len += n_;                                             \
    } while (0)

static int random32(uint32_t *out)
{
    unsigned char b[4];
    if (RAND_bytes(b, sizeof b) != 1)
        return KILN_ESYS;
    *out = get32(b);
    return KILN_OK;
}

kiln_hs *kiln_hs_new(const kiln_hs_config *cfg, int *err)
{
    int dummy;
    if (!err)
        err = &dummy;
    *err = KILN_EINVAL;
    if (!cfg || !cfg->name || cfg->creation == 0 || (!cfg->cookie && cfg->cookie_len) ||
        cfg->cookie_len > KILN_HS_MAX_COOKIE)
        return NULL;
    if (cfg->role != KILN_HS_INITIATOR && cfg->role != KILN_HS_ACCEPTOR)
        return NULL;
    size_t nl = strlen(cfg->name);
    if (!kiln_hs_name_valid(cfg->name, nl))
        return NULL;
    size_t pl = 0;
    if (cfg->role == KILN_HS_INITIATOR) {
        if (!cfg->peer || !kiln_hs_name_valid(cfg->peer, pl = strlen(cfg->peer)))
            return NULL;
    }
    kiln_hs *hs = kiln_calloc(1, sizeof *hs);
    if (!hs) {
        *err = KILN_ENOMEM;
        return NULL;
    }
    hs->role = cfg->role;
    hs->hooks = cfg->hooks;
    hs->flags = cfg->flags;
    hs->required = cfg->required ? cfg->required : KILN_DFLAGS_REQUIRED;
    hs->creation = cfg->creation;
    memcpy(hs->name, cfg->name, nl);
    hs->name_len = nl;
    if (cfg->cookie_len)
        memcpy(hs->cookie, cfg->cookie, cfg->cookie_len);
    hs->cookie_len = cfg->cookie_len;
    hs->res.state = KILN_HS_RUNNING;
    if (cfg->role == KILN_HS_INITIATOR) {
        memcpy(hs->peer, cfg->peer, pl);
        hs->peer_len = pl;
        hs->step = A_WAIT_STATUS;
        size_t n = 0;
        kiln_hs_enc_name(hs->out, OUT_CAP, hs->flags, hs->creation, hs->name, hs->name_len, &n);
        hs->out_len = n;
    } else {
        hs->step = B_WAIT_NAME;
    }
    *err = KILN_OK;
    return hs;
}

void kiln_hs_free(kiln_hs *hs) { kiln_free(hs); }

static void set_peer_name(kiln_hs *hs, const char *name, size_t len)
{
    memcpy(hs->res.peer_name, name, len);
    hs->res.peer_name[len] = 0;
    hs->res.peer_name_len = len;
}

/* Record the peer's flags and check them; false when required ones are missing. */
static bool take_peer_flags(kiln_hs *hs, uint64_t peer_flags)
{
    hs->res.peer_flags = kiln_dflags_expand(peer_flags);
    hs->res.flags = kiln_dflags_negotiate(hs->flags, peer_flags);
    return kiln_dflags_missing(hs->res.peer_flags, hs->required) == 0;
}

/* B: queue the challenge ('N' with our flags, a fresh challenge). */
static kiln_hs_state b_send_challenge(kiln_hs *hs)
{
    if (random32(&hs->my_challenge) != KILN_OK)
        return fail(hs, KILN_ESYS);
    QUEUE(hs, kiln_hs_enc_challenge(p_, cap_, hs->flags, hs->my_challenge, hs->creation, hs->name,
                                    hs->name_len, &n_));
    hs->step = B_WAIT_REPLY;
    return KILN_HS_RUNNING;
}

static kiln_hs_state b_refuse(kiln_hs *hs, kiln_hs_status st, int err)
{
    hs->res.status = st;
    QUEUE(hs, kiln_hs_enc_status(p_, cap_, st, &n_));
    return fail(hs, err);
}

static kiln_hs_state b_on_name(kiln_hs *hs, const uint8_t *body, size_t len)
{
    kiln_hs_name_msg m;
    int rc = kiln_hs_parse_name(body, len, &m);
    if (rc != KILN_OK)
        return fail(hs, rc == KILN_EBADLENGTH ? KILN_EPROTO : rc);
    if (m.flags & KILN_DFLAG_NAME_ME) {
        /* Dynamic names need a name authority; Kiln is not one. */
        return b_refuse(hs, KILN_HS_ST_NOT_ALLOWED, KILN_ENOTSUP);
    }
    if (!kiln_hs_name_valid(m.name, m.name_len))
        return fail(hs, KILN_EBADNODE); /* OTP closes without a status */
    set_peer_name(hs, m.name, m.name_len);
    hs->res.peer_creation = m.creation;
    /* Flags first, then the connection table: dist_util checks the
     * mandatory flags before mark_pending. */
    if (!take_peer_flags(hs, m.flags))
        return b_refuse(hs, KILN_HS_ST_NOT_ALLOWED, KILN_EDFLAGS);
    kiln_hs_peer ps = hs->hooks.peer_state ? hs->hooks.peer_state(hs->hooks.arg, m.name, m.name_len)
                                           : KILN_HS_PEER_NONE;
    switch (ps) {
    case KILN_HS_PEER_REFUSE: return b_refuse(hs, KILN_HS_ST_NOT_ALLOWED, KILN_EREFUSED);
    case KILN_HS_PEER_PENDING:
        if (kiln_hs_wins_simultaneous(hs->name, hs->name_len, m.name, m.name_len))
            return b_refuse(hs, KILN_HS_ST_NOK, KILN_EREFUSED);
        hs->res.status = KILN_HS_ST_OK_SIMULTANEOUS;
        break;
    case KILN_HS_PEER_UP:
        hs->res.status = KILN_HS_ST_ALIVE;
        QUEUE(hs, kiln_hs_enc_status(p_, cap_, KILN_HS_ST_ALIVE, &n_));
        hs->step = B_WAIT_ALIVE_REPLY;
        return KILN_HS_RUNNING;
    case KILN_HS_PEER_NONE:
    default: hs->res.status = KILN_HS_ST_OK; break;
    }
    QUEUE(hs, kiln_hs_enc_status(p_, cap_, hs->res.status, &n_));
    return b_send_challenge(hs);
}

static kiln_hs_state b_on_alive_reply(kiln_hs *hs, const uint8_t *body, size_t len)
{
    bool yes;
    if (kiln_hs_parse_alive_reply(body, len, &yes) != KILN_OK)
        return fail(hs, KILN_EPROTO);
    if (!yes)
        return fail(hs, KILN_EREFUSED);
    hs->res.replaces_live = true;
    return b_send_challenge(hs);
}

/* B's last message; the handshake is complete once it is queued. */
static kiln_hs_state send_ack(kiln_hs *hs)
{
    QUEUE(hs, kiln_hs_enc_ack(p_, cap_, hs->ack_digest, &n_));
    hs->step = STEP_END;
    hs->res.state = KILN_HS_DONE;
    return KILN_HS_DONE;
}

static kiln_hs_state b_on_reply(kiln_hs *hs, const uint8_t *body, size_t len)
{
    uint32_t their;
    uint8_t got[KILN_HS_DIGEST_LEN], want[KILN_HS_DIGEST_LEN];
    if (kiln_hs_parse_reply(body, len, &their, got) != KILN_OK)
        return fail(hs, KILN_EPROTO);
    if (kiln_hs_digest(hs->cookie, hs->cookie_len, hs->my_challenge, want) != KILN_OK)
        return fail(hs, KILN_ESYS);
    /* Constant time: a timing oracle on the digest must not leak it. */
    if (CRYPTO_memcmp(got, want, KILN_HS_DIGEST_LEN) != 0)
        return fail(hs, KILN_EBADCOOKIE);
    if (kiln_hs_digest(hs->cookie, hs->cookie_len, their, hs->ack_digest) != KILN_OK)
        return fail(hs, KILN_ESYS);
    if (hs->res.replaces_live) {
        /* Like OTP's wait_pending: the ack goes out only once the old
         * connection is gone, so the peer never sees two at once. */
        hs->step = B_WAIT_OLD;
        hs->res.state = KILN_HS_WAIT_OLD;
        return KILN_HS_WAIT_OLD;
    }
    return send_ack(hs);
}

static kiln_hs_state a_on_status(kiln_hs *hs, const uint8_t *body, size_t len)
{
    kiln_hs_status st;
    if (kiln_hs_parse_status(body, len, &st, NULL) != KILN_OK)
        return fail(hs, KILN_EPROTO);
    hs->res.status = st;
    switch (st) {
    case KILN_HS_ST_OK:
    case KILN_HS_ST_OK_SIMULTANEOUS: hs->step = A_WAIT_CHALLENGE; return KILN_HS_RUNNING;
    case KILN_HS_ST_ALIVE: {
        bool yes = hs->hooks.still_pending ? hs->hooks.still_pending(hs->hooks.arg, hs->peer, hs->peer_len)
                                           : true;
        QUEUE(hs, kiln_hs_enc_alive_reply(p_, cap_, yes, &n_));
        if (!yes)
            return fail(hs, KILN_EBUSY);
        hs->step = A_WAIT_CHALLENGE;
        return KILN_HS_RUNNING;
    }
    case KILN_HS_ST_NOK:         /* B keeps its own attempt to us */
    case KILN_HS_ST_NOT_ALLOWED: return fail(hs, KILN_EREFUSED);
    case KILN_HS_ST_NAMED:       /* only an answer to NAME_ME, which we never send */
    default: return fail(hs, KILN_EPROTO);
    }
}

static kiln_hs_state a_on_challenge(kiln_hs *hs, const uint8_t *body, size_t len)
{
    kiln_hs_challenge_msg m;
    int rc = kiln_hs_parse_challenge(body, len, &m);
    if (rc != KILN_OK)
        return fail(hs, rc == KILN_EBADLENGTH ? KILN_EPROTO : rc);
    /* The node that answered must be the one we dialled. */
    if (m.name_len != hs->peer_len || memcmp(m.name, hs->peer, m.name_len) != 0)
        return fail(hs, KILN_EBADNODE);
    set_peer_name(hs, m.name, m.name_len);
    hs->res.peer_creation = m.creation;
    if (!take_peer_flags(hs, m.flags))
        return fail(hs, KILN_EDFLAGS); /* A just closes ("aborted") */
    uint8_t digest[KILN_HS_DIGEST_LEN];
    if (kiln_hs_digest(hs->cookie, hs->cookie_len, m.challenge, digest) != KILN_OK ||
        random32(&hs->my_challenge) != KILN_OK)
        return fail(hs, KILN_ESYS);
    QUEUE(hs, kiln_hs_enc_reply(p_, cap_, hs->my_challenge, digest, &n_));
    hs->step = A_WAIT_ACK;
    return KILN_HS_RUNNING;
}

static kiln_hs_state a_on_ack(kiln_hs *hs, const uint8_t *body, size_t len)
{
    uint8_t got[KILN_HS_DIGEST_LEN], want[KILN_HS_DIGEST_LEN];
    if (kiln_hs_parse_ack(body, len, got) != KILN_OK)
        return fail(hs, KILN_EPROTO);
    if (kiln_hs_digest(hs->cookie, hs->cookie_len, hs->my_challenge, want) != KILN_OK)
        return fail(hs, KILN_ESYS);
    if (CRYPTO_memcmp(got, want, KILN_HS_DIGEST_LEN) != 0)
        return fail(hs, KILN_EBADCOOKIE);
    hs->step = STEP_END;
    hs->res.state = KILN_HS_DONE;
    return KILN_HS_DONE;
}

static kiln_hs_state on_message(kiln_hs *hs, const uint8_t *body, size_t len)
{
    switch (hs->step) {
    case A_WAIT_STATUS: return a_on_status(hs, body, len);
    case A_WAIT_CHALLENGE: return a_on_challenge(hs, body, len);
    case A_WAIT_ACK: return a_on_ack(hs, body, len);
    case B_WAIT_NAME: return b_on_name(hs, body, len);
    case B_WAIT_ALIVE_REPLY: return b_on_alive_reply(hs, body, len);
    case B_WAIT_REPLY: return b_on_reply(hs, body, len);
    default: return fail(hs, KILN_EPROTO); /* B_WAIT_OLD: A must wait for our ack */
    }
}

kiln_hs_state kiln_hs_feed(kiln_hs *hs, const void *data, size_t len, size_t *used)
{
    const uint8_t *p = data;
    size_t pos = 0;
    while (hs->res.state == KILN_HS_RUNNING && pos < len) {
        /* Fill the 2-byte header, then exactly the frame's body: never
         * take a byte beyond the current message, so whatever follows
         * the last one stays with the caller. */
        size_t want = hs->in_len < 2 ? 2 : 2 + (size_t)get16(hs->in);
        size_t take = want - hs->in_len;
        if (take > len - pos)
            take = len - pos;
        memcpy(hs->in + hs->in_len, p + pos, take);
        hs->in_len += take;
        pos += take;
        if (hs->in_len == 2) {
            /* Judge the length as soon as it is known: a hostile one
             * fails before any of its body is buffered. */
            size_t n = get16(hs->in);
            if (n == 0)
                fail(hs, KILN_EPROTO); /* no ticks before the handshake is over */
            else if (n > KILN_HS_MAX_MSG)
                fail(hs, KILN_ETOOBIG);
        } else if (hs->in_len == want) {
            hs->in_len = 0;
            on_message(hs, hs->in + 2, want - 2);
        }
    }
    if (used)
        *used = pos;
    return hs->res.state;
}

kiln_hs_state kiln_hs_closed(kiln_hs *hs)
{
    if (hs->res.state == KILN_HS_DONE || hs->res.state == KILN_HS_FAILED)
        return hs->res.state;
    return fail(hs, hs->step == A_WAIT_ACK ? KILN_EBADCOOKIE : KILN_EREFUSED);
}

kiln_hs_state kiln_hs_resume(kiln_hs *hs)
{
    return hs->step == B_WAIT_OLD ? send_ack(hs) : hs->res.state;
}

const uint8_t *kiln_hs_output(const kiln_hs *hs, size_t *len)
{
    *len = hs->out_len - hs->out_off;
    return *len ? hs->out + hs->out_off : NULL;
}

void kiln_hs_output_advance(kiln_hs *hs, size_t n)
{
    size_t left = hs->out_len - hs->out_off;
    hs->out_off += n < left ? n : left;
    if (hs->out_off == hs->out_len)
        hs->out_off = hs->out_len = 0;
}

kiln_hs_state kiln_hs_get_state(const kiln_hs *hs) { return hs->res.state; }

const kiln_hs_result *kiln_hs_get_result(const kiln_hs *hs) { return &hs->res; }
