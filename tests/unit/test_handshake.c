/* The version-6 handshake: message bytes, flag rules, and both state
 * machines driving each other in memory (whole messages, byte at a time,
 * odd chunks), through every status and every failure. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "dist/dist_flags.h"
#include "dist/handshake.h"

#define BYTES(...) (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})
#define U8(s) ((const uint8_t *)(s))

/* What OTP 25.2.3 sends in its send_name (brief §2, observed). */
#define OTP25_FLAGS 0xD07DF7FBDull

static void assert_bytes(const uint8_t *got, size_t gn, const uint8_t *want, size_t wn)
{
    assert_int_equal(gn, wn);
    assert_memory_equal(got, want, wn);
}

static void test_flag_sets(void **state)
{
    (void)state;
    assert_int_equal(KILN_DFLAGS_MANDATORY_25, 0x1070F94ull);
    assert_int_equal(KILN_DFLAGS_HIDDEN, 0xD07070FBCull);
    assert_int_equal(KILN_DFLAGS_VISIBLE, 0xD07070FBDull);
    assert_int_equal(KILN_DFLAGS_MANDATORY_26 & ~KILN_DFLAGS_HIDDEN, 0);
    /* The digest bit stands for the whole OTP-25 set. */
    assert_int_equal(kiln_dflags_expand(KILN_DFLAG_MANDATORY_25_DIGEST),
                     KILN_DFLAG_MANDATORY_25_DIGEST | KILN_DFLAGS_MANDATORY_25);
    assert_int_equal(kiln_dflags_expand(KILN_DFLAG_PUBLISHED), KILN_DFLAG_PUBLISHED);
    assert_int_equal(kiln_dflags_missing(kiln_dflags_expand(KILN_DFLAG_MANDATORY_25_DIGEST), KILN_DFLAGS_MANDATORY_25), 0);
    assert_int_equal(kiln_dflags_missing(KILN_DFLAGS_MANDATORY_25 & ~KILN_DFLAG_MAP_TAG, KILN_DFLAGS_MANDATORY_25),
                     KILN_DFLAG_MAP_TAG);
    /* Against a 25.2.3 node everything Kiln offers is accepted... */
    assert_int_equal(kiln_dflags_negotiate(KILN_DFLAGS_VISIBLE, OTP25_FLAGS), KILN_DFLAGS_VISIBLE);
    /* ...and PUBLISHED survives only when both sides are visible. */
    assert_int_equal(kiln_dflags_negotiate(KILN_DFLAGS_HIDDEN, OTP25_FLAGS) & KILN_DFLAG_PUBLISHED, 0);
    assert_int_equal(kiln_dflags_negotiate(KILN_DFLAGS_VISIBLE, OTP25_FLAGS & ~1ull) & KILN_DFLAG_PUBLISHED, 0);
}

static void test_digest(void **state)
{
    (void)state;
    uint8_t d[16];
    /* erl: erlang:md5([atom_to_list(secret) | integer_to_list(12345)]) */
    assert_int_equal(kiln_hs_digest(U8("secret"), 6, 12345, d), KILN_OK);
    assert_bytes(d, 16, BYTES(212, 4, 125, 62, 86, 230, 214, 214, 63, 125, 22, 184, 92, 210, 250, 136));
    /* Unsigned decimal, no sign, no padding: 4294967295 and 0. */
    assert_int_equal(kiln_hs_digest(U8("secret"), 6, 0xFFFFFFFFu, d), KILN_OK);
    assert_bytes(d, 16, BYTES(0x5d, 0xfd, 0x18, 0x1e, 0x69, 0xaa, 0x58, 0x7c, 0xc8, 0x12, 0xeb, 0x33, 0x3e, 0x65, 0x36, 0xb6));
    assert_int_equal(kiln_hs_digest(U8(""), 0, 0, d), KILN_OK);
    assert_bytes(d, 16, BYTES(0xcf, 0xcd, 0x20, 0x84, 0x95, 0xd5, 0x65, 0xef, 0x66, 0xe7, 0xdf, 0xf9, 0xf9, 0x87, 0x64, 0xda));
}

static void test_encoders(void **state)
{
    (void)state;
    uint8_t b[64];
    size_t n;
    assert_int_equal(kiln_hs_enc_name(b, sizeof b, 0x0102030405060708ull, 0xA0B0C0D0, "a@h", 3, &n), KILN_OK);
    assert_bytes(b, n, BYTES(0, 18, 'N', 1, 2, 3, 4, 5, 6, 7, 8, 0xA0, 0xB0, 0xC0, 0xD0, 0, 3, 'a', '@', 'h'));
    assert_int_equal(kiln_hs_enc_status(b, sizeof b, KILN_HS_ST_OK, &n), KILN_OK);
    assert_bytes(b, n, BYTES(0, 3, 's', 'o', 'k'));
    assert_int_equal(kiln_hs_enc_status(b, sizeof b, KILN_HS_ST_OK_SIMULTANEOUS, &n), KILN_OK);
    assert_bytes(b, n, U8("\0\x10sok_simultaneous"), 18);
    assert_int_equal(kiln_hs_enc_status(b, sizeof b, KILN_HS_ST_NOK, &n), KILN_OK);
    assert_bytes(b, n, U8("\0\x04snok"), 6);
    assert_int_equal(kiln_hs_enc_status(b, sizeof b, KILN_HS_ST_NOT_ALLOWED, &n), KILN_OK);
    assert_bytes(b, n, U8("\0\x0csnot_allowed"), 14);
    assert_int_equal(kiln_hs_enc_status(b, sizeof b, KILN_HS_ST_ALIVE, &n), KILN_OK);
    assert_bytes(b, n, U8("\0\x06salive"), 8);
    assert_int_equal(kiln_hs_enc_status(b, sizeof b, KILN_HS_ST_NAMED, &n), KILN_EINVAL);
    assert_int_equal(kiln_hs_enc_alive_reply(b, sizeof b, true, &n), KILN_OK);
    assert_bytes(b, n, U8("\0\x05strue"), 7);
    assert_int_equal(kiln_hs_enc_alive_reply(b, sizeof b, false, &n), KILN_OK);
    assert_bytes(b, n, U8("\0\x06sfalse"), 8);
    assert_int_equal(kiln_hs_enc_named(b, sizeof b, "x@h", 3, 7, &n), KILN_OK);
    assert_bytes(b, n, BYTES(0, 16, 's', 'n', 'a', 'm', 'e', 'd', ':', 0, 3, 'x', '@', 'h', 0, 0, 0, 7));
    assert_int_equal(kiln_hs_enc_challenge(b, sizeof b, 0x4, 0x11223344, 0x55667788, "b@h", 3, &n), KILN_OK);
    assert_bytes(b, n, BYTES(0, 22, 'N', 0, 0, 0, 0, 0, 0, 0, 4, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0, 3, 'b', '@', 'h'));
    static const uint8_t dg[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    assert_int_equal(kiln_hs_enc_reply(b, sizeof b, 0xDEADBEEF, dg, &n), KILN_OK);
    assert_bytes(b, n, BYTES(0, 21, 'r', 0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16));
    assert_int_equal(kiln_hs_enc_ack(b, sizeof b, dg, &n), KILN_OK);
    assert_bytes(b, n, BYTES(0, 17, 'a', 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16));
    assert_int_equal(kiln_hs_enc_ack(b, 5, dg, &n), KILN_ENOSPC);
    assert_int_equal(n, 19);
    char longname[300];
    memset(longname, 'a', sizeof longname);
    assert_int_equal(kiln_hs_enc_name(b, sizeof b, 0, 1, longname, 256, &n), KILN_EINVAL);
}

static void test_parsers(void **state)
{
    (void)state;
    kiln_hs_name_msg nm;
    kiln_hs_challenge_msg ch;
    kiln_hs_status st;
    bool yes;
    uint32_t c;
    uint8_t d[16];
    /* send_name with trailing bytes after the name: ignored. */
    assert_int_equal(kiln_hs_parse_name(BYTES('N', 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 5, 0, 3, 'a', '@', 'h', 'X', 'Y'), &nm),
                     KILN_OK);
    assert_int_equal(nm.flags, 9);
    assert_int_equal(nm.creation, 5);
    assert_int_equal(nm.name_len, 3);
    assert_memory_equal(nm.name, "a@h", 3);
    assert_int_equal(kiln_hs_parse_name(BYTES('N', 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 5, 0, 4, 'a', '@', 'h'), &nm),
                     KILN_EBADLENGTH);
    assert_int_equal(kiln_hs_parse_name(BYTES('N', 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 5, 0), &nm), KILN_EPROTO);
    assert_int_equal(kiln_hs_parse_name(BYTES('n', 0, 5, 0, 0, 0, 0, 'a', '@', 'h'), &nm), KILN_ENOTSUP);
    assert_int_equal(kiln_hs_parse_name(BYTES('X'), &nm), KILN_EPROTO);
    /* Challenge, trailing ignored. */
    assert_int_equal(kiln_hs_parse_challenge(BYTES('N', 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0, 8, 0, 1, 'b', 0), &ch),
                     KILN_OK);
    assert_int_equal(ch.flags, 4);
    assert_int_equal(ch.challenge, 7);
    assert_int_equal(ch.creation, 8);
    assert_int_equal(ch.name_len, 1);
    assert_int_equal(kiln_hs_parse_challenge(BYTES('N', 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0, 8, 0, 2, 'b'), &ch),
                     KILN_EBADLENGTH);
    assert_int_equal(kiln_hs_parse_challenge(BYTES('N', 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0, 8, 0), &ch),
                     KILN_EPROTO);
    /* Statuses, exact text. */
    assert_int_equal(kiln_hs_parse_status(U8("sok"), 3, &st, NULL), KILN_OK);
    assert_int_equal(st, KILN_HS_ST_OK);
    assert_int_equal(kiln_hs_parse_status(U8("sok_simultaneous"), 16, &st, NULL), KILN_OK);
    assert_int_equal(st, KILN_HS_ST_OK_SIMULTANEOUS);
    assert_int_equal(kiln_hs_parse_status(U8("snok"), 4, &st, NULL), KILN_OK);
    assert_int_equal(st, KILN_HS_ST_NOK);
    assert_int_equal(kiln_hs_parse_status(U8("snot_allowed"), 12, &st, NULL), KILN_OK);
    assert_int_equal(st, KILN_HS_ST_NOT_ALLOWED);
    assert_int_equal(kiln_hs_parse_status(U8("salive"), 6, &st, NULL), KILN_OK);
    assert_int_equal(st, KILN_HS_ST_ALIVE);
    assert_int_equal(kiln_hs_parse_status(U8("sokay"), 5, &st, NULL), KILN_EPROTO);
    assert_int_equal(kiln_hs_parse_status(U8("s"), 1, &st, NULL), KILN_EPROTO);
    assert_int_equal(kiln_hs_parse_status(U8("xok"), 3, &st, NULL), KILN_EPROTO);
    kiln_hs_name_msg named;
    assert_int_equal(kiln_hs_parse_status(BYTES('s', 'n', 'a', 'm', 'e', 'd', ':', 0, 3, 'x', '@', 'h', 0, 0, 1, 0), &st, &named),
                     KILN_OK);
    assert_int_equal(st, KILN_HS_ST_NAMED);
    assert_int_equal(named.name_len, 3);
    assert_int_equal(named.creation, 256);
    assert_int_equal(kiln_hs_parse_status(BYTES('s', 'n', 'a', 'm', 'e', 'd', ':', 0, 9, 'x', '@', 'h', 0, 0, 1, 0), &st, &named),
                     KILN_EBADLENGTH);
    assert_int_equal(kiln_hs_parse_alive_reply(U8("strue"), 5, &yes), KILN_OK);
    assert_true(yes);
    assert_int_equal(kiln_hs_parse_alive_reply(U8("sfalse"), 6, &yes), KILN_OK);
    assert_false(yes);
    assert_int_equal(kiln_hs_parse_alive_reply(U8("sok"), 3, &yes), KILN_EPROTO);
    /* Reply and ack: exactly their size, as OTP's match requires. */
    uint8_t r[22] = {'r', 0, 0, 0, 42};
    assert_int_equal(kiln_hs_parse_reply(r, 21, &c, d), KILN_OK);
    assert_int_equal(c, 42);
    assert_int_equal(kiln_hs_parse_reply(r, 20, &c, d), KILN_EPROTO);
    assert_int_equal(kiln_hs_parse_reply(r, 22, &c, d), KILN_EPROTO);
    uint8_t a[18] = {'a'};
    assert_int_equal(kiln_hs_parse_ack(a, 17, d), KILN_OK);
    assert_int_equal(kiln_hs_parse_ack(a, 18, d), KILN_EPROTO);
    assert_int_equal(kiln_hs_parse_ack(a, 16, d), KILN_EPROTO);
    r[0] = 'a';
    assert_int_equal(kiln_hs_parse_reply(r, 21, &c, d), KILN_EPROTO);
}

static void test_frame(void **state)
{
    (void)state;
    const uint8_t *body;
    size_t bl, used;
    assert_int_equal(kiln_hs_frame(BYTES(0), &body, &bl, &used), KILN_HS_NEED_MORE);
    assert_int_equal(kiln_hs_frame(BYTES(0, 2, 'a'), &body, &bl, &used), KILN_HS_NEED_MORE);
    assert_int_equal(kiln_hs_frame(BYTES(0, 2, 'a', 'b', 'c'), &body, &bl, &used), KILN_OK);
    assert_int_equal(bl, 2);
    assert_int_equal(used, 4);
    assert_int_equal(kiln_hs_frame(BYTES(0, 0), &body, &bl, &used), KILN_EPROTO);
    assert_int_equal(kiln_hs_frame(BYTES(0xFF, 0xFF), &body, &bl, &used), KILN_ETOOBIG);
    assert_int_equal(kiln_hs_frame(BYTES(KILN_HS_MAX_MSG >> 8, (KILN_HS_MAX_MSG & 0xFF) + 1), &body, &bl, &used),
                     KILN_ETOOBIG);
    assert_true(kiln_hs_name_valid("a@b", 3));
    assert_false(kiln_hs_name_valid("ab", 2));
    assert_false(kiln_hs_name_valid("@b", 2));
    assert_false(kiln_hs_name_valid("a@", 2));
    assert_false(kiln_hs_name_valid("a@b@c", 5));
    assert_false(kiln_hs_name_valid("a@\0b", 4));
    /* Atom order: the greater name wins a simultaneous connect. */
    assert_true(kiln_hs_wins_simultaneous("b@h", 3, "a@h", 3));
    assert_false(kiln_hs_wins_simultaneous("a@h", 3, "b@h", 3));
    assert_true(kiln_hs_wins_simultaneous("ab@h", 4, "a@h", 3));
    assert_false(kiln_hs_wins_simultaneous("a@h", 3, "a@hh", 4));
}

/* ---- two machines in memory ---- */

struct hooks_state {
    kiln_hs_peer peer;
    bool pending;
    int peer_calls, pending_calls;
    char asked[256];
};

static kiln_hs_peer peer_state_hook(void *arg, const char *name, size_t len)
{
    struct hooks_state *h = arg;
    h->peer_calls++;
    memcpy(h->asked, name, len);
    h->asked[len] = 0;
    return h->peer;
}

static bool still_pending_hook(void *arg, const char *name, size_t len)
{
    struct hooks_state *h = arg;
    h->pending_calls++;
    memcpy(h->asked, name, len);
    h->asked[len] = 0;
    return h->pending;
}

static kiln_hs *mk(kiln_hs_role role, const char *name, const char *peer, const char *cookie, uint64_t flags,
                   uint32_t creation, struct hooks_state *h)
{
    kiln_hs_config cfg = {
        .role = role,
        .name = name,
        .creation = creation,
        .flags = flags,
        .cookie = U8(cookie),
        .cookie_len = strlen(cookie),
        .peer = peer,
        .hooks = {h ? peer_state_hook : NULL, h ? still_pending_hook : NULL, h},
    };
    int err = -1;
    kiln_hs *hs = kiln_hs_new(&cfg, &err);
    assert_non_null(hs);
    assert_int_equal(err, KILN_OK);
    return hs;
}

/* Move from's output into to, chunk bytes per feed; what `to` does not take
 * (it has finished) is dropped. Returns true if anything moved. */
static bool move(kiln_hs *from, kiln_hs *to, size_t chunk)
{
    size_t n;
    const uint8_t *p = kiln_hs_output(from, &n);
    if (!n)
        return false;
    size_t off = 0;
    while (off < n && kiln_hs_get_state(to) == KILN_HS_RUNNING) {
        size_t k = n - off < chunk ? n - off : chunk;
        size_t used = 0;
        kiln_hs_feed(to, p + off, k, &used);
        assert_true(used <= k);
        if (kiln_hs_get_state(to) == KILN_HS_RUNNING)
            assert_int_equal(used, k); /* a running machine takes everything */
        off += k;
    }
    kiln_hs_output_advance(from, n);
    return true;
}

static void pump(kiln_hs *a, kiln_hs *b, size_t chunk)
{
    for (int i = 0; i < 20; i++) {
        bool m1 = move(a, b, chunk);
        bool m2 = move(b, a, chunk);
        if (!m1 && !m2)
            return;
    }
    fail_msg("handshake did not settle");
}

static void check_done_pair(kiln_hs *a, kiln_hs *b, uint64_t fa, uint64_t fb)
{
    const kiln_hs_result *ra = kiln_hs_get_result(a), *rb = kiln_hs_get_result(b);
    assert_int_equal(ra->state, KILN_HS_DONE);
    assert_int_equal(rb->state, KILN_HS_DONE);
    assert_string_equal(ra->peer_name, "bee@host");
    assert_int_equal(ra->peer_name_len, 8);
    assert_string_equal(rb->peer_name, "ant@host");
    assert_int_equal(ra->peer_creation, 2002);
    assert_int_equal(rb->peer_creation, 1001);
    assert_int_equal(ra->peer_flags, kiln_dflags_expand(fb));
    assert_int_equal(rb->peer_flags, kiln_dflags_expand(fa));
    assert_int_equal(ra->flags, fa & kiln_dflags_expand(fb));
    assert_int_equal(rb->flags, fb & kiln_dflags_expand(fa));
}

static void run_ok(size_t chunk, uint64_t fa, uint64_t fb)
{
    kiln_hs *a = mk(KILN_HS_INITIATOR, "ant@host", "bee@host", "cookie", fa, 1001, NULL);
    kiln_hs *b = mk(KILN_HS_ACCEPTOR, "bee@host", NULL, "cookie", fb, 2002, NULL);
    pump(a, b, chunk);
    check_done_pair(a, b, fa, fb);
    assert_int_equal(kiln_hs_get_result(a)->status, KILN_HS_ST_OK);
    assert_int_equal(kiln_hs_get_result(b)->status, KILN_HS_ST_OK);
    kiln_hs_free(a);
    kiln_hs_free(b);
}

static void test_pair_ok(void **state)
{
    (void)state;
    run_ok(1 << 20, KILN_DFLAGS_VISIBLE, KILN_DFLAGS_VISIBLE);
    run_ok(1, KILN_DFLAGS_VISIBLE, KILN_DFLAGS_HIDDEN); /* byte at a time */
    run_ok(3, KILN_DFLAGS_HIDDEN, OTP25_FLAGS);
    run_ok(7, OTP25_FLAGS, KILN_DFLAGS_VISIBLE);
    /* A peer that sends only the digest bit for the mandatory set passes. */
    run_ok(5, KILN_DFLAG_MANDATORY_25_DIGEST | KILN_DFLAG_PUBLISHED, KILN_DFLAGS_VISIBLE);
    kiln_hs *a = mk(KILN_HS_INITIATOR, "ant@host", "bee@host", "c", KILN_DFLAGS_VISIBLE, 1001, NULL);
    kiln_hs *b = mk(KILN_HS_ACCEPTOR, "bee@host", NULL, "c", KILN_DFLAGS_VISIBLE, 2002, NULL);
    /* Partial writes: the output survives being sent a byte at a time. */
    for (int i = 0; i < 40; i++) {
        size_t n;
        const uint8_t *p = kiln_hs_output(a, &n);
        if (!n)
            break;
        size_t used;
        kiln_hs_feed(b, p, 1, &used);
        assert_int_equal(used, 1);
        kiln_hs_output_advance(a, 1);
    }
    pump(a, b, 64);
    assert_int_equal(kiln_hs_get_state(a), KILN_HS_DONE);
    assert_int_equal(kiln_hs_get_state(b), KILN_HS_DONE);
    /* Finished machines take nothing more and queue nothing. */
    size_t used = 99, n;
    assert_int_equal(kiln_hs_feed(a, "xyz", 3, &used), KILN_HS_DONE);
    assert_int_equal(used, 0);
    assert_null(kiln_hs_output(a, &n));
    assert_int_equal(n, 0);
    assert_int_equal(kiln_hs_closed(a), KILN_HS_DONE);
    kiln_hs_free(a);
    kiln_hs_free(b);
}

/* The first dist packet arrives in the same read as 'a': A stops exactly
 * after the ack and leaves the rest to the caller. */
static void test_leftover_after_ack(void **state)
{
    (void)state;
    kiln_hs *a = mk(KILN_HS_INITIATOR, "ant@host", "bee@host", "cookie", KILN_DFLAGS_VISIBLE, 1001, NULL);
    kiln_hs *b = mk(KILN_HS_ACCEPTOR, "bee@host", NULL, "cookie", KILN_DFLAGS_VISIBLE, 2002, NULL);
    move(a, b, 1000); /* N */
    move(b, a, 1000); /* s + challenge */
    move(a, b, 1000); /* r */
    assert_int_equal(kiln_hs_get_state(b), KILN_HS_DONE);
    size_t n;
    const uint8_t *p = kiln_hs_output(b, &n);
    assert_int_equal(n, 19);
    uint8_t buf[64];
    memcpy(buf, p, n);
    memcpy(buf + n, "\0\0\0\0\0\0\0\3p!!", 11); /* a tick, then a packet */
    size_t used;
    assert_int_equal(kiln_hs_feed(a, buf, n + 11, &used), KILN_HS_DONE);
    assert_int_equal(used, 19);
    /* And split across reads: the ack's last byte with the packet. */
    kiln_hs_free(a);
    kiln_hs_free(b);
    a = mk(KILN_HS_INITIATOR, "ant@host", "bee@host", "cookie", KILN_DFLAGS_VISIBLE, 1001, NULL);
    b = mk(KILN_HS_ACCEPTOR, "bee@host", NULL, "cookie", KILN_DFLAGS_VISIBLE, 2002, NULL);
    move(a, b, 1000);
    move(b, a, 1000);
    move(a, b, 1000);
    p = kiln_hs_output(b, &n);
    memcpy(buf, p, n);
    memcpy(buf + n, "XYZ", 3);
    assert_int_equal(kiln_hs_feed(a, buf, 10, &used), KILN_HS_RUNNING);
    assert_int_equal(used, 10);
    assert_int_equal(kiln_hs_feed(a, buf + 10, n + 3 - 10, &used), KILN_HS_DONE);
    assert_int_equal(used, n - 10);
    kiln_hs_free(a);
    kiln_hs_free(b);
}

static void test_wrong_cookie(void **state)
{
    (void)state;
    for (size_t chunk = 1; chunk <= 1000; chunk *= 10) {
        kiln_hs *a = mk(KILN_HS_INITIATOR, "ant@host", "bee@host", "cookieA", KILN_DFLAGS_VISIBLE, 1001, NULL);
        kiln_hs *b = mk(KILN_HS_ACCEPTOR, "bee@host", NULL, "cookieB", KILN_DFLAGS_VISIBLE, 2002, NULL);
        pump(a, b, chunk);
        /* B sees the bad digest and closes without a word... */
        assert_int_equal(kiln_hs_get_state(b), KILN_HS_FAILED);
        assert_int_equal(kiln_hs_get_result(b)->err, KILN_EBADCOOKIE);
        size_t n;
        assert_null(kiln_hs_output(b, &n));
        /* ...which A, waiting for the ack, reads as a cookie mismatch. */
        assert_int_equal(kiln_hs_get_state(a), KILN_HS_RUNNING);
        assert_int_equal(kiln_hs_closed(a), KILN_HS_FAILED);
        assert_int_equal(kiln_hs_get_result(a)->err, KILN_EBADCOOKIE);
        kiln_hs_free(a);
        kiln_hs_free(b);
    }
    /* A forged ack (B has the wrong cookie but answers anyway): A checks it. */
    kiln_hs *a = mk(KILN_HS_INITIATOR, "ant@host", "bee@host", "cookieA", KILN_DFLAGS_VISIBLE, 1001, NULL);
    kiln_hs *b = mk(KILN_HS_ACCEPTOR, "bee@host", NULL, "cookieA", KILN_DFLAGS_VISIBLE, 2002, NULL);
    move(a, b, 1000);
    move(b, a, 1000);
    kiln_hs_output_advance(a, 1000); /* drop A's reply; send a bad ack instead */
    uint8_t ack[19];
    size_t n;
    static const uint8_t zero[16];
    assert_int_equal(kiln_hs_enc_ack(ack, sizeof ack, zero, &n), KILN_OK);
    assert_int_equal(kiln_hs_feed(a, ack, n, NULL), KILN_HS_FAILED);
    assert_int_equal(kiln_hs_get_result(a)->err, KILN_EBADCOOKIE);
    kiln_hs_free(a);
    kiln_hs_free(b);
}

static void test_mandatory_flags(void **state)
{
    (void)state;
    /* A lacks MAP_TAG: B answers not_allowed and fails; A reads the status. */
    uint64_t weak = KILN_DFLAGS_VISIBLE & ~(KILN_DFLAG_MAP_TAG | KILN_DFLAG_MANDATORY_25_DIGEST);
    kiln_hs *a = mk(KILN_HS_INITIATOR, "ant@host", "bee@host", "c", weak, 1001, NULL);
    kiln_hs *b = mk(KILN_HS_ACCEPTOR, "bee@host", NULL, "c", KILN_DFLAGS_VISIBLE, 2002, NULL);
    pump(a, b, 1);
    assert_int_equal(kiln_hs_get_state(b), KILN_HS_FAILED);
    assert_int_equal(kiln_hs_get_result(b)->err, KILN_EDFLAGS);
    assert_int_equal(kiln_hs_get_result(b)->status, KILN_HS_ST_NOT_ALLOWED);
    assert_int_equal(kiln_hs_get_state(a), KILN_HS_FAILED);
    assert_int_equal(kiln_hs_get_result(a)->err, KILN_EREFUSED);
    assert_int_equal(kiln_hs_get_result(a)->status, KILN_HS_ST_NOT_ALLOWED);
    kiln_hs_free(a);
    kiln_hs_free(b);
    /* B lacks one: A aborts on the challenge without sending anything. */
    a = mk(KILN_HS_INITIATOR, "ant@host", "bee@host", "c", KILN_DFLAGS_VISIBLE, 1001, NULL);
    b = mk(KILN_HS_ACCEPTOR, "bee@host", NULL, "c", weak, 2002, NULL);
    pump(a, b, 1000);
    assert_int_equal(kiln_hs_get_state(a), KILN_HS_FAILED);
    assert_int_equal(kiln_hs_get_result(a)->err, KILN_EDFLAGS);
    size_t n;
    assert_null(kiln_hs_output(a, &n));
    assert_int_equal(kiln_hs_get_state(b), KILN_HS_RUNNING);
    kiln_hs_free(a);
    kiln_hs_free(b);
    /* A stricter requirement (OTP 26's set) refuses a 25-level peer. */
    kiln_hs_config cfg = {.role = KILN_HS_ACCEPTOR, .name = "bee@host", .creation = 5, .flags = KILN_DFLAGS_VISIBLE,
                          .required = KILN_DFLAGS_MANDATORY_26, .cookie = U8("c"), .cookie_len = 1};
    b = kiln_hs_new(&cfg, NULL);
    a = mk(KILN_HS_INITIATOR, "ant@host", "bee@host", "c", KILN_DFLAGS_MANDATORY_25, 1001, NULL);
    pump(a, b, 1000);
    assert_int_equal(kiln_hs_get_result(b)->err, KILN_EDFLAGS);
    kiln_hs_free(a);
    kiln_hs_free(b);
}

static void test_name_mismatch(void **state)
{
    (void)state;
    /* A dialled bee@host but the node answering is wasp@host. */
    kiln_hs *a = mk(KILN_HS_INITIATOR, "ant@host", "bee@host", "c", KILN_DFLAGS_VISIBLE, 1001, NULL);
    kiln_hs *b = mk(KILN_HS_ACCEPTOR, "wasp@host", NULL, "c", KILN_DFLAGS_VISIBLE, 2002, NULL);
    pump(a, b, 1000);
    assert_int_equal(kiln_hs_get_state(a), KILN_HS_FAILED);
    assert_int_equal(kiln_hs_get_result(a)->err, KILN_EBADNODE);
    kiln_hs_free(a);
    kiln_hs_free(b);
    /* A malformed name in send_name: B closes without a status. */
    b = mk(KILN_HS_ACCEPTOR, "bee@host", NULL, "c", KILN_DFLAGS_VISIBLE, 2002, NULL);
    uint8_t buf[64];
    size_t n;
    assert_int_equal(kiln_hs_enc_name(buf, sizeof buf, KILN_DFLAGS_VISIBLE, 1, "noat", 4, &n), KILN_OK);
    assert_int_equal(kiln_hs_feed(b, buf, n, NULL), KILN_HS_FAILED);
    assert_int_equal(kiln_hs_get_result(b)->err, KILN_EBADNODE);
    assert_null(kiln_hs_output(b, &n));
    kiln_hs_free(b);
}

static void test_simultaneous(void **state)
{
    (void)state;
    /* B ("bee") has its own attempt pending to A ("ant"): bee > ant, so B
     * wins and answers nok; A stops. */
    struct hooks_state hb = {.peer = KILN_HS_PEER_PENDING};
    kiln_hs *a = mk(KILN_HS_INITIATOR, "ant@host", "bee@host", "c", KILN_DFLAGS_VISIBLE, 1001, NULL);
    kiln_hs *b = mk(KILN_HS_ACCEPTOR, "bee@host", NULL, "c", KILN_DFLAGS_VISIBLE, 2002, &hb);
    pump(a, b, 1000);
    assert_int_equal(hb.peer_calls, 1);
    assert_string_equal(hb.asked, "ant@host");
    assert_int_equal(kiln_hs_get_result(b)->status, KILN_HS_ST_NOK);
    assert_int_equal(kiln_hs_get_result(b)->err, KILN_EREFUSED);
    assert_int_equal(kiln_hs_get_result(a)->status, KILN_HS_ST_NOK);
    assert_int_equal(kiln_hs_get_result(a)->err, KILN_EREFUSED);
    kiln_hs_free(a);
    kiln_hs_free(b);
    /* Names the other way round: B ("ant") loses, answers ok_simultaneous
     * (and must drop its own attempt), and the handshake completes. */
    struct hooks_state ha = {.peer = KILN_HS_PEER_PENDING};
    a = mk(KILN_HS_INITIATOR, "bee@host", "ant@host", "c", KILN_DFLAGS_VISIBLE, 1001, NULL);
    b = mk(KILN_HS_ACCEPTOR, "ant@host", NULL, "c", KILN_DFLAGS_VISIBLE, 2002, &ha);
    pump(a, b, 2);
    assert_int_equal(kiln_hs_get_state(a), KILN_HS_DONE);
    assert_int_equal(kiln_hs_get_state(b), KILN_HS_DONE);
    assert_int_equal(kiln_hs_get_result(b)->status, KILN_HS_ST_OK_SIMULTANEOUS);
    assert_int_equal(kiln_hs_get_result(a)->status, KILN_HS_ST_OK_SIMULTANEOUS);
    kiln_hs_free(a);
    kiln_hs_free(b);
    /* The allow-list hook refuses. */
    struct hooks_state hr = {.peer = KILN_HS_PEER_REFUSE};
    a = mk(KILN_HS_INITIATOR, "ant@host", "bee@host", "c", KILN_DFLAGS_VISIBLE, 1001, NULL);
    b = mk(KILN_HS_ACCEPTOR, "bee@host", NULL, "c", KILN_DFLAGS_VISIBLE, 2002, &hr);
    pump(a, b, 1000);
    assert_int_equal(kiln_hs_get_result(b)->status, KILN_HS_ST_NOT_ALLOWED);
    assert_int_equal(kiln_hs_get_result(b)->err, KILN_EREFUSED);
    assert_int_equal(kiln_hs_get_result(a)->status, KILN_HS_ST_NOT_ALLOWED);
    kiln_hs_free(a);
    kiln_hs_free(b);
}

static void test_alive(void **state)
{
    (void)state;
    /* B still has a live connection from "ant"; A still wants this one:
     * "true", cookie checked, then B waits for the owner to drop the old
     * connection before it acks. */
    struct hooks_state hb = {.peer = KILN_HS_PEER_UP};
    struct hooks_state ha = {.pending = true};
    kiln_hs *a = mk(KILN_HS_INITIATOR, "ant@host", "bee@host", "c", KILN_DFLAGS_VISIBLE, 1001, &ha);
    kiln_hs *b = mk(KILN_HS_ACCEPTOR, "bee@host", NULL, "c", KILN_DFLAGS_VISIBLE, 2002, &hb);
    pump(a, b, 1);
    assert_int_equal(ha.pending_calls, 1);
    assert_string_equal(ha.asked, "bee@host");
    assert_int_equal(kiln_hs_get_result(a)->status, KILN_HS_ST_ALIVE);
    assert_int_equal(kiln_hs_get_state(b), KILN_HS_WAIT_OLD);
    assert_true(kiln_hs_get_result(b)->replaces_live);
    assert_int_equal(kiln_hs_get_state(a), KILN_HS_RUNNING);
    size_t n;
    assert_null(kiln_hs_output(b, &n));
    assert_int_equal(kiln_hs_resume(b), KILN_HS_DONE);
    pump(a, b, 1);
    assert_int_equal(kiln_hs_get_state(a), KILN_HS_DONE);
    kiln_hs_free(a);
    kiln_hs_free(b);
    /* A no longer wants it: "false", both stop. */
    hb = (struct hooks_state){.peer = KILN_HS_PEER_UP};
    ha = (struct hooks_state){.pending = false};
    a = mk(KILN_HS_INITIATOR, "ant@host", "bee@host", "c", KILN_DFLAGS_VISIBLE, 1001, &ha);
    b = mk(KILN_HS_ACCEPTOR, "bee@host", NULL, "c", KILN_DFLAGS_VISIBLE, 2002, &hb);
    pump(a, b, 1000);
    assert_int_equal(kiln_hs_get_result(a)->err, KILN_EBUSY);
    assert_int_equal(kiln_hs_get_result(b)->err, KILN_EREFUSED);
    assert_false(kiln_hs_get_result(b)->replaces_live);
    kiln_hs_free(a);
    kiln_hs_free(b);
    /* Without a hook A says true. */
    hb = (struct hooks_state){.peer = KILN_HS_PEER_UP};
    a = mk(KILN_HS_INITIATOR, "ant@host", "bee@host", "c", KILN_DFLAGS_VISIBLE, 1001, NULL);
    b = mk(KILN_HS_ACCEPTOR, "bee@host", NULL, "c", KILN_DFLAGS_VISIBLE, 2002, &hb);
    pump(a, b, 1000);
    assert_int_equal(kiln_hs_get_state(b), KILN_HS_WAIT_OLD);
    /* The peer closing while B waits is a failure, not a success. */
    assert_int_equal(kiln_hs_closed(b), KILN_HS_FAILED);
    assert_int_equal(kiln_hs_resume(b), KILN_HS_FAILED);
    kiln_hs_free(a);
    kiln_hs_free(b);
}

static void test_name_me_refused(void **state)
{
    (void)state;
    kiln_hs *b = mk(KILN_HS_ACCEPTOR, "bee@host", NULL, "c", KILN_DFLAGS_VISIBLE, 2002, NULL);
    uint8_t buf[64];
    size_t n;
    assert_int_equal(kiln_hs_enc_name(buf, sizeof buf, KILN_DFLAGS_VISIBLE | KILN_DFLAG_NAME_ME, 0, "host", 4, &n),
                     KILN_OK);
    assert_int_equal(kiln_hs_feed(b, buf, n, NULL), KILN_HS_FAILED);
    assert_int_equal(kiln_hs_get_result(b)->err, KILN_ENOTSUP);
    const uint8_t *o = kiln_hs_output(b, &n);
    assert_bytes(o, n, U8("\0\x0csnot_allowed"), 14);
    kiln_hs_free(b);
}

/* Feed bytes to a fresh machine, expect failure with err. */
static void expect_fail(kiln_hs_role role, const uint8_t *bytes, size_t n, int err)
{
    kiln_hs *hs = role == KILN_HS_ACCEPTOR ? mk(role, "bee@host", NULL, "c", KILN_DFLAGS_VISIBLE, 2, NULL)
                                           : mk(role, "ant@host", "bee@host", "c", KILN_DFLAGS_VISIBLE, 1, NULL);
    size_t used;
    assert_int_equal(kiln_hs_feed(hs, bytes, n, &used), KILN_HS_FAILED);
    assert_int_equal(kiln_hs_get_result(hs)->err, err);
    kiln_hs_free(hs);
}

static void test_hostile_input(void **state)
{
    (void)state;
    /* An oversized length fails on its two bytes, nothing buffered. */
    expect_fail(KILN_HS_ACCEPTOR, BYTES(0xFF, 0xFF), KILN_ETOOBIG);
    expect_fail(KILN_HS_INITIATOR, BYTES(0x08, 0x01), KILN_ETOOBIG);
    expect_fail(KILN_HS_ACCEPTOR, BYTES(0, 0), KILN_EPROTO);
    /* Wrong message for the step. */
    expect_fail(KILN_HS_ACCEPTOR, BYTES(0, 3, 's', 'o', 'k'), KILN_EPROTO);
    expect_fail(KILN_HS_ACCEPTOR, BYTES(0, 4, 'n', 0, 5, 0), KILN_ENOTSUP);
    expect_fail(KILN_HS_INITIATOR, BYTES(0, 1, 'a'), KILN_EPROTO);
    expect_fail(KILN_HS_INITIATOR, BYTES(0, 6, 's', 'w', 'h', 'a', 't', '?'), KILN_EPROTO);
    expect_fail(KILN_HS_INITIATOR, BYTES(0, 16, 's', 'n', 'a', 'm', 'e', 'd', ':', 0, 3, 'x', '@', 'h', 0, 0, 0, 1),
                KILN_EPROTO);
    /* A status then a challenge with a name running past its frame. */
    expect_fail(KILN_HS_INITIATOR,
                BYTES(0, 3, 's', 'o', 'k', 0, 20, 'N', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 9, 'x'),
                KILN_EPROTO);
    /* A challenge that arrives after ok but is a reply-shaped message. */
    expect_fail(KILN_HS_INITIATOR, BYTES(0, 3, 's', 'o', 'k', 0, 1, 'r'), KILN_EPROTO);
    /* An 'N' whose name field is longer than a node name can be. */
    uint8_t big[2 + 15 + 300];
    size_t n = 0;
    memset(big, 'a', sizeof big);
    big[150] = '@';
    n = sizeof big;
    big[0] = (uint8_t)((n - 2) >> 8);
    big[1] = (uint8_t)(n - 2);
    big[2] = 'N';
    memset(big + 3, 0, 12);
    big[15] = 300 >> 8;
    big[16] = 300 & 0xFF;
    expect_fail(KILN_HS_ACCEPTOR, big, n, KILN_EBADNODE);
    /* The peer closes before anything: refused. */
    kiln_hs *b = mk(KILN_HS_ACCEPTOR, "bee@host", NULL, "c", KILN_DFLAGS_VISIBLE, 2, NULL);
    assert_int_equal(kiln_hs_closed(b), KILN_HS_FAILED);
    assert_int_equal(kiln_hs_get_result(b)->err, KILN_EREFUSED);
    kiln_hs_free(b);
}

static void test_config_checks(void **state)
{
    (void)state;
    int err = 0;
    kiln_hs_config good = {.role = KILN_HS_INITIATOR, .name = "a@h", .creation = 1, .flags = KILN_DFLAGS_VISIBLE,
                           .cookie = U8("c"), .cookie_len = 1, .peer = "b@h"};
    kiln_hs *hs = kiln_hs_new(&good, &err);
    assert_non_null(hs);
    /* A queued its send_name at once. */
    size_t n;
    const uint8_t *o = kiln_hs_output(hs, &n);
    assert_int_equal(n, 2 + 15 + 3);
    assert_int_equal(o[2], 'N');
    kiln_hs_output_advance(hs, 5);
    o = kiln_hs_output(hs, &n);
    assert_int_equal(n, 15);
    kiln_hs_output_advance(hs, 100);
    assert_null(kiln_hs_output(hs, &n));
    kiln_hs_free(hs);
    kiln_hs_config c = good;
    c.creation = 0;
    assert_null(kiln_hs_new(&c, &err));
    assert_int_equal(err, KILN_EINVAL);
    c = good;
    c.name = "nohost";
    assert_null(kiln_hs_new(&c, &err));
    c = good;
    c.peer = NULL;
    assert_null(kiln_hs_new(&c, &err));
    c = good;
    c.peer = "b@h@x";
    assert_null(kiln_hs_new(&c, &err));
    c = good;
    c.cookie_len = KILN_HS_MAX_COOKIE + 1;
    assert_null(kiln_hs_new(&c, &err));
    c = good;
    c.role = (kiln_hs_role)7;
    assert_null(kiln_hs_new(&c, &err));
    assert_null(kiln_hs_new(NULL, &err));
    /* B needs no peer. */
    c = good;
    c.role = KILN_HS_ACCEPTOR;
    c.peer = NULL;
    hs = kiln_hs_new(&c, &err);
    assert_non_null(hs);
    assert_null(kiln_hs_output(hs, &n));
    kiln_hs_free(hs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flag_sets),
        cmocka_unit_test(test_digest),
        cmocka_unit_test(test_encoders),
        cmocka_unit_test(test_parsers),
        cmocka_unit_test(test_frame),
        cmocka_unit_test(test_pair_ok),
        cmocka_unit_test(test_leftover_after_ack),
        cmocka_unit_test(test_wrong_cookie),
        cmocka_unit_test(test_mandatory_flags),
        cmocka_unit_test(test_name_mismatch),
        cmocka_unit_test(test_simultaneous),
        cmocka_unit_test(test_alive),
        cmocka_unit_test(test_name_me_refused),
        cmocka_unit_test(test_hostile_input),
        cmocka_unit_test(test_config_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
