/* The distribution frame parser on its own: the three framings, fragment
 * reassembly (interleaved sequences, small frames between fragments), the
 * atom cache, and every way a peer can break the rules, each with its own
 * error and nothing leaked (the ASan build checks that). */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "dist/frame.h"

typedef struct buf {
    uint8_t *p;
    size_t len;
} buf;

static void put(buf *b, const void *d, size_t n)
{
    b->p = realloc(b->p, b->len + n);
    assert_non_null(b->p);
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void put8(buf *b, uint8_t v) { put(b, &v, 1); }

static void put64(buf *b, uint64_t v)
{
    for (int i = 7; i >= 0; i--)
        put8(b, (uint8_t)(v >> (8 * i)));
}

/* A term's encoding, whole (with 131) or bare. */
static void put_term(buf *b, kiln_term t, bool whole)
{
    uint8_t *e;
    size_t n;
    kiln_t2b_opts o = KILN_T2B_OPTS_DEFAULT;
    assert_int_equal(kiln_etf_term_to_bytes(t, &o, &e, &n), KILN_OK);
    put(b, whole ? e : e + 1, whole ? n : n - 1);
    free(e);
}

/* A 131,68 frame without atom-cache refs: ctrl, then msg unless none. */
static buf header_frame(kiln_term ctrl, kiln_term msg)
{
    buf b = {0};
    put8(&b, 131), put8(&b, 68), put8(&b, 0);
    put_term(&b, ctrl, false);
    if (!kiln_is_none(msg))
        put_term(&b, msg, false);
    return b;
}

/* SEND's control tuple: {2, '', to}. The parser checks op and arity only. */
static kiln_msg *send_ctrl(void) { return kiln_test_msg("{~i,~a,~a}", 2L, "", "to"); }

static kiln_msg *big_payload(size_t n, uint8_t fill)
{
    uint8_t *d = malloc(n);
    assert_non_null(d);
    memset(d, fill, n);
    kiln_msg *m = kiln_test_msg("{~a,~b}", "big", d, n);
    free(d);
    return m;
}

static const kiln_etf_decode_opts opts0;

static int parse(kiln_frame_state *s, const buf *b, kiln_frame *f)
{
    return kiln_frame_parse(s, b->p, b->len, &opts0, f);
}

/* The payload's bare bytes, cut into count slices: fragment frames with
 * FragIds count..1, the control term in the first. */
static buf *fragments(uint64_t seq, kiln_msg *ctrl, kiln_msg *msg, size_t count)
{
    buf body = {0};
    put_term(&body, kiln_msg_term(msg), false);
    buf *out = calloc(count, sizeof(buf));
    size_t slice = body.len / count, off = 0;
    for (size_t i = 0; i < count; i++) {
        size_t n = i + 1 == count ? body.len - off : slice;
        put8(&out[i], 131);
        put8(&out[i], i == 0 ? 69 : 70);
        put64(&out[i], seq);
        put64(&out[i], count - i);
        if (i == 0) {
            put8(&out[i], 0); /* no atom-cache refs */
            put_term(&out[i], kiln_msg_term(ctrl), false);
        }
        put(&out[i], body.p + off, n);
        off += n;
    }
    free(body.p);
    return out;
}

static void free_frags(buf *f, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(f[i].p);
    free(f);
}

static void assert_big(const kiln_frame *f, size_t n, uint8_t fill)
{
    assert_int_equal(f->op, 2);
    assert_non_null(f->msg);
    const uint8_t *d;
    size_t len;
    assert_int_equal(kiln_match(kiln_msg_term(f->msg), "{big,~b}", &d, &len), KILN_OK);
    assert_int_equal(len, n);
    for (size_t i = 0; i < n; i++)
        if (d[i] != fill)
            fail_msg("byte %zu is %u", i, d[i]);
}

static void test_pass_through_and_header(void **state)
{
    (void)state;
    kiln_frame_state s;
    kiln_frame_state_init(&s);
    kiln_msg *ctrl = send_ctrl(), *msg = kiln_test_msg("{~a,~i}", "hello", 42L);
    kiln_frame f;

    buf p = {0};
    put8(&p, 'p');
    put_term(&p, kiln_msg_term(ctrl), true);
    put_term(&p, kiln_msg_term(msg), true);
    assert_int_equal(parse(&s, &p, &f), KILN_OK);
    assert_int_equal(f.op, 2);
    assert_int_equal(kiln_term_cmp_exact(kiln_msg_term(f.msg), kiln_msg_term(msg)), 0);
    kiln_frame_free(&f);

    buf h = header_frame(kiln_msg_term(ctrl), kiln_msg_term(msg));
    assert_int_equal(parse(&s, &h, &f), KILN_OK);
    assert_int_equal(kiln_term_cmp_exact(kiln_msg_term(f.msg), kiln_msg_term(msg)), 0);
    kiln_frame_free(&f);

    /* A byte too many after the payload. */
    put8(&h, 106);
    assert_int_equal(parse(&s, &h, &f), KILN_ETRAILING);
    /* SEND without its payload, and an op nobody defined. */
    buf np = {0};
    put8(&np, 'p');
    put_term(&np, kiln_msg_term(ctrl), true);
    assert_int_equal(parse(&s, &np, &f), KILN_EPROTO);
    kiln_msg *bad = kiln_test_msg("{~i,~a,~a}", 99L, "", "to");
    buf bo = {0};
    put8(&bo, 'p');
    put_term(&bo, kiln_msg_term(bad), true);
    assert_int_equal(parse(&s, &bo, &f), KILN_EPROTO);
    /* Neither 'p' nor 131,68/69/70. */
    const uint8_t junk[] = {131, 71, 0};
    assert_int_equal(kiln_frame_parse(&s, junk, sizeof junk, &opts0, &f), KILN_EPROTO);

    free(p.p), free(h.p), free(np.p), free(bo.p);
    kiln_msg_free(ctrl), kiln_msg_free(msg), kiln_msg_free(bad);
    kiln_frame_state_fini(&s);
}

/* SEND and SEND_SENDER to a process of this node, and ALIAS_SEND, come
 * out with no control tuple built, the destination in f.to; to anywhere
 * else, or with no_fast_send, the tuple is built as for every other op. */
static void test_send_to_local_pid(void **state)
{
    (void)state;
    kiln_etf_ctx me = {.node = kiln_atom_c("me@host"), .creation = 9};
    kiln_etf_decode_opts o = {.ctx = &me};
    kiln_msg *m = kiln_test_msg("{hello,~i}", 7L);
    kiln_msg *t = kiln_msg_new(512);
    kiln_term here = kiln_ext_pid(t, me.node, 5, 1, 9), other_creation = kiln_ext_pid(t, me.node, 5, 1, 8),
              elsewhere = kiln_ext_pid(t, kiln_atom_c("you@host"), 5, 1, 9);
    struct {
        kiln_term ctrl;
        bool fast;
    } cases[] = {
        {kiln_tuple(t, 3, kiln_small(2), kiln_atom_c(""), here), true},
        {kiln_tuple(t, 3, kiln_small(22), elsewhere, here), true},
        {kiln_tuple(t, 3, kiln_small(2), kiln_atom_c(""), other_creation), false},
        {kiln_tuple(t, 3, kiln_small(22), here, elsewhere), false},
        {kiln_tuple(t, 4, kiln_small(6), here, kiln_atom_c(""), kiln_atom_c("name")), false},
        {kiln_tuple(t, 3, kiln_small(33), elsewhere, kiln_ref(t, me.node, 9, (const uint32_t[]){1, 2, 3, 4}, 4)),
         true},
        {kiln_tuple(t, 3, kiln_small(33), here,
                    kiln_ref(t, kiln_atom_c("you@host"), 7, (const uint32_t[]){5, 6, 7, 8, 9}, 5)),
         true},
        {kiln_tuple(t, 3, kiln_small(33), here, kiln_ref(t, me.node, 0xFFFFFFFFu, (const uint32_t[]){10}, 1)), true},
        {kiln_tuple(t, 3, kiln_small(33), kiln_atom_c("notapid"), kiln_ref(t, me.node, 9, (const uint32_t[]){1}, 1)),
         false},
        {kiln_tuple(t, 3, kiln_small(33), here, here), false},
    };
    for (int plain = 0; plain < 2; plain++) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            kiln_frame_state s;
            kiln_frame_state_init(&s);
            s.no_fast_send = plain;
            buf h = header_frame(cases[i].ctrl, kiln_msg_term(m));
            kiln_frame f;
            assert_int_equal(kiln_frame_parse(&s, h.p, h.len, &o, &f), KILN_OK);
            assert_int_equal(f.op, kiln_small_value(kiln_tuple_get(cases[i].ctrl, 0)));
            assert_int_equal(kiln_term_cmp_exact(kiln_msg_term(f.msg), kiln_msg_term(m)), 0);
            if (cases[i].fast && !plain) {
                assert_null(f.ctrl);
                if (f.op == 33)
                    assert_int_equal(kiln_term_cmp_exact(f.to, kiln_tuple_get(cases[i].ctrl, 2)), 0);
                else
                    assert_true(f.to == kiln_local_pid(5, 1));
            } else {
                assert_non_null(f.ctrl);
            }
            kiln_frame_free(&f);
            /* Without its message, SEND is refused either way. */
            buf c = header_frame(cases[i].ctrl, KILN_NONE);
            if (kiln_small_value(kiln_tuple_get(cases[i].ctrl, 0)) != 6)
                assert_int_equal(kiln_frame_parse(&s, c.p, c.len, &o, &f), KILN_EPROTO);
            free(h.p), free(c.p);
            kiln_frame_state_fini(&s);
        }
    }
    kiln_msg_free(m), kiln_msg_free(t);
}

/* MONITOR_P and DEMONITOR_P to a process of this node or a name come
 * out with no control tuple built, watcher, target and reference in
 * f.from, f.to and f.ref as the tuple would hold them; any other target,
 * or something after the tuple, goes the general way. */
static void test_monitor_in_place(void **state)
{
    (void)state;
    kiln_etf_ctx me = {.node = kiln_atom_c("me@host"), .creation = 9};
    kiln_etf_decode_opts o = {.ctx = &me};
    kiln_msg *t = kiln_msg_new(1024);
    kiln_term here = kiln_ext_pid(t, me.node, 5, 1, 9), elsewhere = kiln_ext_pid(t, kiln_atom_c("you@host"), 5, 1, 9),
              ref = kiln_ref(t, kiln_atom_c("you@host"), 3, (const uint32_t[]){1, 2, 3}, 3);
    struct {
        kiln_term ctrl;
        bool fast;
    } cases[] = {
        {kiln_tuple(t, 4, kiln_small(19), elsewhere, here, ref), true},
        {kiln_tuple(t, 4, kiln_small(20), elsewhere, here, ref), true},
        {kiln_tuple(t, 4, kiln_small(19), elsewhere, kiln_atom_c("a_name"), ref), true},
        {kiln_tuple(t, 4, kiln_small(20), here, kiln_atom_c("a_name"), ref), true},
        {kiln_tuple(t, 4, kiln_small(19), here, elsewhere, ref), false},
        {kiln_tuple(t, 4, kiln_small(19), elsewhere, here, kiln_small(1)), false},
        {kiln_tuple(t, 4, kiln_small(20), kiln_atom_c("x"), here, ref), false},
    };
    for (int plain = 0; plain < 2; plain++) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            kiln_frame_state s;
            kiln_frame_state_init(&s);
            s.no_fast_send = plain;
            kiln_term c = cases[i].ctrl;
            buf h = header_frame(c, KILN_NONE);
            kiln_frame f;
            assert_int_equal(kiln_frame_parse(&s, h.p, h.len, &o, &f), KILN_OK);
            assert_int_equal(f.op, kiln_small_value(kiln_tuple_get(c, 0)));
            assert_null(f.msg);
            if (cases[i].fast && !plain) {
                assert_null(f.ctrl);
                kiln_term from = kiln_tuple_get(c, 1);
                if (from == here)
                    assert_true(f.from == kiln_local_pid(5, 1));
                else
                    assert_int_equal(kiln_term_cmp_exact(f.from, from), 0);
                if (kiln_tuple_get(c, 2) == here)
                    assert_true(f.to == kiln_local_pid(5, 1));
                else
                    assert_true(f.to == kiln_tuple_get(c, 2));
                assert_int_equal(kiln_term_cmp_exact(f.ref, ref), 0);
            } else {
                assert_non_null(f.ctrl);
            }
            kiln_frame_free(&f);
            /* With a term after it, refused either way. */
            buf b = header_frame(c, kiln_small(7));
            assert_int_equal(kiln_frame_parse(&s, b.p, b.len, &o, &f), KILN_EPROTO);
            free(h.p), free(b.p);
            kiln_frame_state_fini(&s);
        }
    }
    kiln_msg_free(t);
}

static void test_fragments_interleaved(void **state)
{
    (void)state;
    kiln_frame_state s;
    kiln_frame_state_init(&s);
    kiln_msg *ctrl = send_ctrl(), *a = big_payload(30000, 0xA1), *b = big_payload(20000, 0xB2);
    kiln_msg *small = kiln_test_msg("{~a}", "small");
    buf *fa = fragments(7, ctrl, a, 4), *fb = fragments(8, ctrl, b, 3);
    buf sm = {0};
    put8(&sm, 131);
    put8(&sm, 68);
    put8(&sm, 0);
    put_term(&sm, kiln_msg_term(ctrl), false);
    put_term(&sm, kiln_msg_term(small), false);

    kiln_frame f;
    /* a1 b1 small a2 b2 a3 small b3(last of b) a4(last of a) */
    assert_int_equal(parse(&s, &fa[0], &f), KILN_FRAME_PARTIAL);
    assert_int_equal(parse(&s, &fb[0], &f), KILN_FRAME_PARTIAL);
    assert_int_equal(parse(&s, &sm, &f), KILN_OK);
    assert_int_equal(kiln_term_cmp_exact(kiln_msg_term(f.msg), kiln_msg_term(small)), 0);
    kiln_frame_free(&f);
    assert_int_equal(parse(&s, &fa[1], &f), KILN_FRAME_PARTIAL);
    assert_int_equal(parse(&s, &fb[1], &f), KILN_FRAME_PARTIAL);
    assert_int_equal(parse(&s, &fa[2], &f), KILN_FRAME_PARTIAL);
    assert_int_equal(parse(&s, &sm, &f), KILN_OK);
    kiln_frame_free(&f);
    assert_int_equal(parse(&s, &fb[2], &f), KILN_OK);
    assert_big(&f, 20000, 0xB2);
    kiln_frame_free(&f);
    assert_int_equal(parse(&s, &fa[3], &f), KILN_OK);
    assert_big(&f, 30000, 0xA1);
    kiln_frame_free(&f);
    assert_int_equal(s.nseqs, 0);
    assert_int_equal(s.pending_bytes, 0);

    /* Sequence ids may be reused once finished; a sequence of one is a
     * whole message in a fragment header. */
    buf *one = fragments(7, ctrl, b, 1);
    assert_int_equal(parse(&s, &one[0], &f), KILN_OK);
    assert_big(&f, 20000, 0xB2);
    kiln_frame_free(&f);

    free_frags(fa, 4), free_frags(fb, 3), free_frags(one, 1), free(sm.p);
    kiln_msg_free(ctrl), kiln_msg_free(a), kiln_msg_free(b), kiln_msg_free(small);
    kiln_frame_state_fini(&s);
}

static void test_fragment_protocol_errors(void **state)
{
    (void)state;
    kiln_frame_state s;
    kiln_frame_state_init(&s);
    kiln_msg *ctrl = send_ctrl(), *a = big_payload(5000, 1);
    buf *fa = fragments(3, ctrl, a, 3);
    kiln_frame f;

    /* A continuation of a sequence never started. */
    assert_int_equal(parse(&s, &fa[1], &f), KILN_EPROTO);
    assert_int_equal(parse(&s, &fa[0], &f), KILN_FRAME_PARTIAL);
    /* The same SeqId started twice while under way. */
    assert_int_equal(parse(&s, &fa[0], &f), KILN_EPROTO);
    /* FragId 1 while 2 is due: out of order. */
    assert_int_equal(parse(&s, &fa[2], &f), KILN_EPROTO);
    /* Headers cut short. */
    assert_int_equal(kiln_frame_parse(&s, fa[1].p, 10, &opts0, &f), KILN_ETRUNCATED);
    buf t = {0};
    put8(&t, 131), put8(&t, 69), put64(&t, 4), put64(&t, 2);
    assert_int_equal(parse(&s, &t, &f), KILN_ETRUNCATED); /* no NumRefs */
    /* FragId 0 does not exist. */
    buf z = {0};
    put8(&z, 131), put8(&z, 69), put64(&z, 9), put64(&z, 0), put8(&z, 0);
    put_term(&z, kiln_msg_term(ctrl), false);
    assert_int_equal(parse(&s, &z, &f), KILN_EPROTO);
    /* The unfinished sequence 3 is dropped by fini; ASan checks it. */
    free_frags(fa, 3), free(z.p), free(t.p);
    kiln_msg_free(ctrl), kiln_msg_free(a);
    kiln_frame_state_fini(&s);
}

static void test_fragment_limits(void **state)
{
    (void)state;
    kiln_frame_state s;
    kiln_frame_state_init(&s);
    kiln_msg *ctrl = send_ctrl(), *a = big_payload(3000, 2);
    kiln_frame f;

    /* A message over max_message is refused while it grows, before it is
     * buffered whole. */
    s.max_message = 2000;
    buf *fa = fragments(1, ctrl, a, 3);
    assert_int_equal(parse(&s, &fa[0], &f), KILN_FRAME_PARTIAL);
    assert_int_equal(parse(&s, &fa[1], &f), KILN_ETOOBIG);
    free_frags(fa, 3);
    kiln_frame_state_fini(&s);

    /* At most 256 sequences under way per connection. */
    kiln_frame_state_init(&s);
    int partial = 0, refused = 0;
    for (uint64_t id = 1; id <= 300; id++) {
        buf *fx = fragments(id, ctrl, a, 2);
        int rc = parse(&s, &fx[0], &f);
        partial += rc == KILN_FRAME_PARTIAL;
        refused += rc == KILN_ETOOBIG;
        free_frags(fx, 2);
    }
    assert_int_equal(partial, 256);
    assert_int_equal(refused, 300 - 256);
    kiln_frame_state_fini(&s);
    kiln_msg_free(ctrl), kiln_msg_free(a);
}

/* The fragment count sizes the reassembly buffer once, so a megabyte in
 * four fragments is not copied again as its buffer doubles; but a count is
 * believed only up to 16 times what the peer has sent. */
static void test_fragment_count_sizes_buffer(void **state)
{
    (void)state;
    kiln_frame_state s;
    kiln_frame_state_init(&s);
    kiln_msg *ctrl = send_ctrl(), *a = big_payload(1 << 20, 7);
    kiln_frame f;
    buf *fa = fragments(1, ctrl, a, 4);
    assert_int_equal(parse(&s, &fa[0], &f), KILN_FRAME_PARTIAL);
    size_t reserved = s.reserved_bytes;
    assert_true(reserved >= (1u << 20));
    assert_int_equal(parse(&s, &fa[1], &f), KILN_FRAME_PARTIAL);
    assert_int_equal(parse(&s, &fa[2], &f), KILN_FRAME_PARTIAL);
    assert_int_equal(s.reserved_bytes, reserved); /* never grown */
    assert_int_equal(parse(&s, &fa[3], &f), KILN_OK);
    assert_big(&f, 1 << 20, 7);
    assert_int_equal(s.reserved_bytes, 0);
    kiln_frame_free(&f);
    free_frags(fa, 4);

    /* A small first fragment that claims 2^40 more. */
    kiln_msg *small = big_payload(1000, 3);
    buf *fs = fragments(2, ctrl, small, 2);
    for (int i = 0; i < 8; i++)
        fs[0].p[10 + i] = (uint8_t)((uint64_t)1 << 40 >> (8 * (7 - i)));
    assert_int_equal(parse(&s, &fs[0], &f), KILN_FRAME_PARTIAL);
    assert_true(s.reserved_bytes <= 16 * fs[0].len);
    /* Sequences that each claim much (16 x 128 KiB sent, 250 of them):
     * what they reserve beyond what they sent stays within 256 MiB. */
    kiln_msg *mid = big_payload(256 << 10, 5);
    for (uint64_t id = 3; id < 253; id++) {
        buf *fx = fragments(id, ctrl, mid, 2);
        for (int i = 0; i < 8; i++)
            fx[0].p[10 + i] = (uint8_t)((uint64_t)1 << 40 >> (8 * (7 - i)));
        assert_int_equal(parse(&s, &fx[0], &f), KILN_FRAME_PARTIAL);
        free_frags(fx, 2);
    }
    assert_true(s.reserved_bytes > ((size_t)200 << 20)); /* the claims were believed in part */
    assert_true(s.reserved_bytes <= ((size_t)256 << 20) + s.pending_bytes);
    kiln_frame_state_fini(&s);
    assert_int_equal(s.reserved_bytes, 0);
    free_frags(fs, 2);
    kiln_msg_free(ctrl), kiln_msg_free(a), kiln_msg_free(small), kiln_msg_free(mid);
}

/* A continuation fragment received in place: written where
 * kiln_frame_slice_room says, then taken by kiln_frame_parse_placed; and
 * every frame that cannot be placed is refused, for kiln_frame_parse. */
static void test_fragment_in_place(void **state)
{
    (void)state;
    kiln_frame_state s;
    kiln_frame_state_init(&s);
    kiln_msg *ctrl = send_ctrl(), *a = big_payload(300000, 9);
    kiln_frame f;
    uint8_t *dst;
    buf *fa = fragments(1, ctrl, a, 3);
    assert_false(kiln_frame_slice_room(&s, fa[1].p, fa[1].len, &dst)); /* no sequence yet */
    assert_false(kiln_frame_slice_room(&s, fa[0].p, fa[0].len, &dst)); /* a first fragment */
    assert_int_equal(parse(&s, &fa[0], &f), KILN_FRAME_PARTIAL);
    assert_false(kiln_frame_slice_room(&s, fa[2].p, fa[2].len, &dst)); /* FragId out of turn */
    for (int i = 1; i < 3; i++) {
        assert_true(kiln_frame_slice_room(&s, fa[i].p, fa[i].len, &dst));
        memcpy(dst, fa[i].p + 18, fa[i].len - 18);
        /* Only the header is read: the rest of the frame may be anything. */
        memset(fa[i].p + 18, 0xee, fa[i].len - 18);
        assert_int_equal(kiln_frame_parse_placed(&s, fa[i].p, fa[i].len, &opts0, &f),
                         i == 2 ? KILN_OK : KILN_FRAME_PARTIAL);
    }
    assert_big(&f, 300000, 9);
    kiln_frame_free(&f);
    free_frags(fa, 3);

    /* A slice bigger than the buffer has room for: refused here, grown by
     * kiln_frame_parse. */
    kiln_msg *small = big_payload(100, 1);
    buf *fs = fragments(2, ctrl, small, 2);
    buf *fb = fragments(2, ctrl, a, 2);
    assert_int_equal(parse(&s, &fs[0], &f), KILN_FRAME_PARTIAL);
    assert_false(kiln_frame_slice_room(&s, fb[1].p, fb[1].len, &dst));
    kiln_frame_state_fini(&s);
    free_frags(fs, 2), free_frags(fb, 2);
    kiln_msg_free(ctrl), kiln_msg_free(a), kiln_msg_free(small);
}

/* A first fragment may carry the control term and no payload at all (the
 * fuzzer found the empty slice). */
static void test_empty_first_slice(void **state)
{
    (void)state;
    kiln_frame_state s;
    kiln_frame_state_init(&s);
    kiln_msg *ctrl = send_ctrl(), *msg = kiln_test_msg("{~a,~i}", "late", 7L);
    buf first = {0}, cont = {0};
    put8(&first, 131), put8(&first, 69), put64(&first, 5), put64(&first, 2), put8(&first, 0);
    put_term(&first, kiln_msg_term(ctrl), false);
    put8(&cont, 131), put8(&cont, 70), put64(&cont, 5), put64(&cont, 1);
    put_term(&cont, kiln_msg_term(msg), false);
    kiln_frame f;
    assert_int_equal(parse(&s, &first, &f), KILN_FRAME_PARTIAL);
    assert_int_equal(parse(&s, &cont, &f), KILN_OK);
    assert_int_equal(kiln_term_cmp_exact(kiln_msg_term(f.msg), kiln_msg_term(msg)), 0);
    kiln_frame_free(&f);
    free(first.p), free(cont.p);
    kiln_msg_free(ctrl), kiln_msg_free(msg);
    kiln_frame_state_fini(&s);
}

/* Header with n atom-cache refs: flag nibbles (new entry bit 8, segment
 * 0), then each ref; new ones carry their text. */
static void put_refs(buf *b, size_t n, const bool *fresh, const uint8_t *idx, const char *const *text)
{
    put8(b, (uint8_t)n);
    uint8_t flags[128] = {0};
    for (size_t i = 0; i < n; i++)
        flags[i / 2] |= (uint8_t)((fresh[i] ? 8 : 0) << (4 * (i % 2)));
    put(b, flags, n / 2 + 1); /* the last nibble: short atoms */
    for (size_t i = 0; i < n; i++) {
        put8(b, idx[i]);
        if (fresh[i]) {
            put8(b, (uint8_t)strlen(text[i]));
            put(b, text[i], strlen(text[i]));
        }
    }
}

static void test_atom_cache(void **state)
{
    (void)state;
    kiln_frame_state s;
    kiln_frame_state_init(&s);
    kiln_frame f;
    /* {2, ref0, ref1} then message ref1: the refs become '' and 'kiln_to'. */
    const uint8_t body[] = {104, 3, 97, 2, 82, 0, 82, 1, 82, 1};
    buf h = {0};
    put8(&h, 131), put8(&h, 68);
    put_refs(&h, 2, (const bool[]){true, true}, (const uint8_t[]){5, 6}, (const char *const[]){"", "kiln_to"});
    put(&h, body, sizeof body);
    assert_int_equal(parse(&s, &h, &f), KILN_OK);
    assert_int_equal(f.op, 2);
    kiln_term to;
    assert_int_equal(kiln_atom("kiln_to", 7, &to), KILN_OK);
    assert_int_equal(kiln_term_cmp_exact(kiln_msg_term(f.msg), to), 0);
    kiln_frame_free(&f);

    /* Later frames refer to the cached entries without their text. */
    buf h2 = {0};
    put8(&h2, 131), put8(&h2, 68);
    put_refs(&h2, 2, (const bool[]){false, false}, (const uint8_t[]){5, 6}, NULL);
    put(&h2, body, sizeof body);
    assert_int_equal(parse(&s, &h2, &f), KILN_OK);
    assert_int_equal(kiln_term_cmp_exact(kiln_msg_term(f.msg), to), 0);
    kiln_frame_free(&f);

    /* An entry that was never filled, and a ref index past NumRefs. */
    buf h3 = {0};
    put8(&h3, 131), put8(&h3, 68);
    put_refs(&h3, 2, (const bool[]){false, false}, (const uint8_t[]){5, 77}, NULL);
    put(&h3, body, sizeof body);
    assert_int_equal(parse(&s, &h3, &f), KILN_EBADTERM);
    buf h4 = {0};
    put8(&h4, 131), put8(&h4, 68);
    put_refs(&h4, 1, (const bool[]){false}, (const uint8_t[]){5}, NULL);
    put(&h4, body, sizeof body);
    assert_int_equal(parse(&s, &h4, &f), KILN_EBADTERM);
    /* Flags promised but cut off. */
    const uint8_t cut[] = {131, 68, 3, 0x88};
    assert_int_equal(kiln_frame_parse(&s, cut, sizeof cut, &opts0, &f), KILN_ETRUNCATED);

    free(h.p), free(h2.p), free(h3.p), free(h4.p);
    kiln_frame_state_fini(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pass_through_and_header),
        cmocka_unit_test(test_send_to_local_pid),
        cmocka_unit_test(test_monitor_in_place),
        cmocka_unit_test(test_fragments_interleaved),
        cmocka_unit_test(test_fragment_protocol_errors),
        cmocka_unit_test(test_fragment_limits),
        cmocka_unit_test(test_fragment_count_sizes_buffer),
        cmocka_unit_test(test_fragment_in_place),
        cmocka_unit_test(test_empty_first_slice),
        cmocka_unit_test(test_atom_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
