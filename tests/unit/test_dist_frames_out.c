/* The framer on its own (dist/ctrl_out.c): whatever it builds for each
 * framing a connection can agree ('p' pass-through, a header without the
 * atom cache, a header with it) parses back, through dist/frame.c, to the
 * same control term and message: small frames built whole, messages in
 * pieces around a shared binary, and fragments. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "dist/dist_flags.h"
#include "dist/frame.h"
#include "dist/node_internal.h"
#include "runtime/message.h"

static const uint64_t framings[] = {
    0,
    KILN_DFLAG_FRAGMENTS,
    KILN_DFLAG_FRAGMENTS | KILN_DFLAG_DIST_HDR_ATOM_CACHE,
};

/* One frame message's bytes, its iolist flattened; *pieces says how many
 * binaries it held. */
static uint8_t *flatten(kiln_msg *m, size_t *len, size_t *pieces)
{
    *len = *pieces = 0;
    uint8_t *out = NULL;
    for (kiln_term l = kiln_msg_term(m); kiln_is_cons(l); l = kiln_tl(l)) {
        const uint8_t *d;
        size_t n;
        assert_int_equal(kiln_get_binary(kiln_hd(l), &d, &n), KILN_OK);
        out = realloc(out, *len + n + 1);
        assert_non_null(out);
        memcpy(out + *len, d, n);
        *len += n;
        ++*pieces;
    }
    return out;
}

/* Frames ctrl and msg (msg may be KILN_NONE) with flags, parses every frame
 * back and checks the result; returns the number of frames and, through
 * pieces, the binaries of the first one. */
static size_t round_trip(kiln_node *n, kiln_out_cache *tx, kiln_frame_state *rx, uint64_t flags, kiln_term ctrl,
                         kiln_term msg, size_t *pieces)
{
    kiln_msg *chain = kiln_frames_encode(n, flags, (flags & KILN_DFLAG_DIST_HDR_ATOM_CACHE) ? tx : NULL, ctrl, msg);
    assert_non_null(chain);
    static const kiln_etf_decode_opts opts;
    size_t frames = 0;
    bool whole = false;
    while (chain) {
        kiln_msg *next = atomic_load_explicit(&chain->next, memory_order_relaxed);
        size_t len, np;
        uint8_t *b = flatten(chain, &len, &np);
        if (frames == 0)
            *pieces = np;
        assert_true(len >= 4);
        uint32_t flen = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
        assert_int_equal(flen, len - 4);
        kiln_frame f;
        int rc = kiln_frame_parse(rx, b + 4, len - 4, &opts, &f);
        assert_false(whole);
        if (rc == KILN_OK) {
            whole = true;
            assert_int_equal(kiln_term_cmp_exact(kiln_msg_term(f.ctrl), ctrl), 0);
            if (kiln_is_none(msg))
                assert_null(f.msg);
            else
                assert_int_equal(kiln_term_cmp_exact(kiln_msg_term(f.msg), msg), 0);
            kiln_frame_free(&f);
        } else {
            assert_int_equal(rc, KILN_FRAME_PARTIAL);
        }
        free(b);
        kiln_msg_free(chain);
        chain = next;
        frames++;
    }
    assert_true(whole);
    return frames;
}

static void test_every_framing_round_trips(void **state)
{
    (void)state;
    kiln_node *n = calloc(1, sizeof(*n));
    kiln_out_cache *tx = calloc(1, sizeof(*tx));
    assert_non_null(n);
    assert_non_null(tx);
    n->frag_size = 64 * 1024;
    size_t big_len = 200 * 1024;
    uint8_t *big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (uint8_t)(i * 7);
    /* The parser checks a control term's op and arity only. */
    kiln_msg *m = kiln_test_msg("{~i,~a,~a}", 2L, "", "to");
    kiln_msg *link = kiln_test_msg("{~i,~a,~a}", 1L, "from", "to");
    kiln_msg *small = kiln_test_msg("{hello,~i,[a,b,c]}", 42L);
    kiln_msg *mid = kiln_test_msg("{mid,~b}", big, (size_t)300);
    kiln_msg *shared = kiln_test_msg("{shared,~b}", big, (size_t)(8 * 1024));
    kiln_msg *frag = kiln_test_msg("{frag,~b,~b}", big, big_len, big, (size_t)5000);
    /* A control term too big to wait inline for its message. */
    kiln_msg *long_ctrl = kiln_test_msg("{~i,~b,~a,~a}", 6L, big, (size_t)400, "", "name");
    for (size_t k = 0; k < sizeof framings / sizeof framings[0]; k++) {
        kiln_frame_state rx;
        kiln_frame_state_init(&rx);
        memset(tx, 0, sizeof *tx);
        size_t pieces;
        /* Twice each: the second time the atoms go as cache refs. */
        for (int again = 0; again < 2; again++) {
            assert_int_equal(round_trip(n, tx, &rx, framings[k], kiln_msg_term(m), kiln_msg_term(small), &pieces), 1);
            assert_int_equal(pieces, 1); /* built whole */
            assert_int_equal(round_trip(n, tx, &rx, framings[k], kiln_msg_term(link), KILN_NONE, &pieces), 1);
            assert_int_equal(pieces, 1);
            assert_int_equal(round_trip(n, tx, &rx, framings[k], kiln_msg_term(m), kiln_msg_term(mid), &pieces), 1);
            assert_int_equal(round_trip(n, tx, &rx, framings[k], kiln_msg_term(m), kiln_msg_term(shared), &pieces), 1);
            assert_true(pieces > 1); /* the binary referenced, not copied */
            assert_int_equal(round_trip(n, tx, &rx, framings[k], kiln_msg_term(long_ctrl), kiln_msg_term(small),
                                        &pieces),
                             1);
            size_t frames = round_trip(n, tx, &rx, framings[k], kiln_msg_term(m), kiln_msg_term(frag), &pieces);
            assert_int_equal(frames, (framings[k] & KILN_DFLAG_FRAGMENTS) ? 4 : 1);
        }
        kiln_frame_state_fini(&rx);
    }
    kiln_msg_free(m), kiln_msg_free(small), kiln_msg_free(mid), kiln_msg_free(shared), kiln_msg_free(frag);
    kiln_msg_free(long_ctrl), kiln_msg_free(link);
    free(big);
    free(tx);
    free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_framing_round_trips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
