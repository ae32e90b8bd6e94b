/* ETF codec API: legacy tags, local pid mapping, atom cache references,
 * lent binaries, decoding into an existing message, helpers. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "kiln/etf.h"
#include "runtime/message.h"

#define BYTES(...) (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})

static kiln_msg *decode_ok(const uint8_t *b, size_t n, const kiln_etf_decode_opts *o)
{
    kiln_msg *m = NULL;
    assert_int_equal(kiln_etf_decode(b, n, o, &m, NULL), KILN_OK);
    return m;
}

/* Encoding of t with term_to_binary defaults equals want. */
static void assert_encodes(kiln_term t, const kiln_t2b_opts *o, const uint8_t *want, size_t wn)
{
    uint8_t *b;
    size_t n;
    assert_int_equal(kiln_etf_term_to_bytes(t, o, &b, &n), KILN_OK);
    assert_int_equal(n, wn);
    assert_memory_equal(b, want, wn);
    free(b);
}

static void test_legacy_tags_reencode_canonically(void **state)
{
    (void)state;
    /* PID_EXT with an 8-bit creation comes back as NEW_PID_EXT. */
    kiln_msg *m = decode_ok(BYTES(131, 103, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 5, 0, 0, 0, 6, 2), NULL);
    assert_encodes(kiln_msg_term(m), NULL, BYTES(131, 88, 100, 0, 3, 'a', '@', 'b', 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 2));
    kiln_msg_free(m);
    /* PORT_EXT -> NEW_PORT_EXT; REFERENCE_EXT and NEW_REFERENCE_EXT -> NEWER. */
    m = decode_ok(BYTES(131, 102, 115, 1, 'n', 0, 0, 0, 9, 3), NULL);
    assert_encodes(kiln_msg_term(m), NULL, BYTES(131, 89, 100, 0, 1, 'n', 0, 0, 0, 9, 0, 0, 0, 3));
    kiln_msg_free(m);
    m = decode_ok(BYTES(131, 101, 115, 1, 'n', 0, 0, 0, 9, 3), NULL);
    assert_encodes(kiln_msg_term(m), NULL, BYTES(131, 90, 0, 1, 100, 0, 1, 'n', 0, 0, 0, 3, 0, 0, 0, 9));
    kiln_msg_free(m);
    m = decode_ok(BYTES(131, 114, 0, 2, 115, 1, 'n', 1, 0, 0, 0, 7, 0, 0, 0, 8), NULL);
    assert_encodes(kiln_msg_term(m), NULL, BYTES(131, 90, 0, 2, 100, 0, 1, 'n', 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 8));
    kiln_msg_free(m);
    /* FLOAT_EXT text. */
    uint8_t f[33] = {131, 99};
    memcpy(f + 2, "1.50000000000000000000e+00", 26);
    m = decode_ok(f, sizeof f, NULL);
    double d;
    assert_int_equal(kiln_get_double(kiln_msg_term(m), &d), KILN_OK);
    assert_true(d == 1.5);
    kiln_msg_free(m);
    /* Non-minimal integers are still those integers. */
    m = decode_ok(BYTES(131, 110, 8, 1, 5, 0, 0, 0, 0, 0, 0, 0), NULL);
    assert_true(kiln_msg_term(m) == kiln_small(-5));
    kiln_msg_free(m);
    m = decode_ok(BYTES(131, 111, 0, 0, 0, 0, 0), NULL);
    assert_true(kiln_msg_term(m) == kiln_small(0));
    kiln_msg_free(m);
    /* SMALL_ATOM_EXT Latin-1 becomes the UTF-8 atom. */
    m = decode_ok(BYTES(131, 115, 2, 0xE4, 0xF6), NULL);
    assert_true(kiln_msg_term(m) == kiln_atom_c("äö"));
    kiln_msg_free(m);
    /* STRING_EXT and a NIL-tailed LIST_EXT are the same value. */
    kiln_msg *a = decode_ok(BYTES(131, 107, 0, 2, 1, 2), NULL);
    kiln_msg *b = decode_ok(BYTES(131, 108, 0, 0, 0, 2, 97, 1, 97, 2, 106), NULL);
    assert_true(kiln_term_eq(kiln_msg_term(a), kiln_msg_term(b)));
    kiln_msg_free(a);
    kiln_msg_free(b);
}

static void test_local_pids(void **state)
{
    (void)state;
    kiln_etf_ctx ctx = {kiln_atom_c("kiln@host"), 0xABCD};
    kiln_etf_decode_opts o = {.ctx = &ctx};
    static const uint8_t mine[] = {131, 88, 119, 9, 'k', 'i', 'l', 'n', '@', 'h', 'o', 's', 't',
                                   0, 0, 0, 42, 0, 0, 0, 3, 0, 0, 0xAB, 0xCD};
    kiln_msg *m = decode_ok(mine, sizeof mine, &o);
    assert_true(kiln_msg_term(m) == kiln_local_pid(42, 3));
    kiln_msg_free(m);
    /* Same node, another creation: an older incarnation, so remote. */
    uint8_t other[sizeof mine];
    memcpy(other, mine, sizeof mine);
    other[sizeof other - 1] = 0xCE;
    m = decode_ok(other, sizeof other, &o);
    assert_true(kiln_is_box_of(kiln_msg_term(m), KILN_SUB_EXT_PID));
    kiln_msg_free(m);
    /* Encoding a local pid names our node and creation. */
    kiln_t2b_opts t = {0, 2, &ctx};
    assert_encodes(kiln_local_pid(42, 3), &t, mine, sizeof mine);
}

static int cache_cb(void *arg, kiln_term a)
{
    const kiln_term *refs = arg;
    for (int i = 0; i < 2; i++)
        if (refs[i] == a)
            return i;
    return -1;
}

static void test_atom_cache_refs(void **state)
{
    (void)state;
    kiln_term refs[2] = {kiln_atom_c("reg"), kiln_atom_c("call")};
    kiln_etf_decode_opts o = {.atom_refs = refs, .n_atom_refs = 2};
    static const uint8_t bare[] = {104, 3, 82, 1, 82, 0, 119, 1, 'x', 97, 9};
    kiln_msg *m = NULL;
    size_t used = 0;
    assert_int_equal(kiln_etf_decode_bare(bare, sizeof bare, &o, &m, &used), KILN_OK);
    assert_int_equal(used, sizeof bare - 2); /* the next term follows */
    kiln_term t = kiln_msg_term(m);
    assert_true(kiln_tuple_get(t, 0) == refs[1] && kiln_tuple_get(t, 1) == refs[0]);
    /* Index past the header's refs. */
    o.n_atom_refs = 1;
    kiln_msg *m2 = NULL;
    assert_int_equal(kiln_etf_decode_bare(bare, sizeof bare, &o, &m2, &used), KILN_EBADTERM);
    /* The encoder's hook chooses refs per atom. */
    kiln_etf_enc_opts eo = KILN_ETF_ENC_OPTS_DIST;
    eo.atom_ref = cache_cb;
    eo.atom_ref_arg = refs;
    kiln_etf_enc *e = kiln_etf_enc_new(&eo);
    assert_int_equal(kiln_etf_enc_term(e, t), KILN_OK);
    uint8_t out[16];
    assert_int_equal(kiln_etf_enc_size(e), sizeof bare - 2);
    kiln_etf_enc_copy(e, out);
    assert_memory_equal(out, bare, sizeof bare - 2);
    kiln_etf_enc_free(e);
    kiln_msg_free(m);
}

/* Builds the same fun with its atoms as cache refs (spell false) or
 * spelled out (spell true): fun(M, Pid on node N, free: Long, an inner
 * fun, fun M:N/1). */
struct fbuf {
    uint8_t b[1024];
    size_t n;
};

static void fput(struct fbuf *f, const void *p, size_t n)
{
    memcpy(f->b + f->n, p, n);
    f->n += n;
}

static void fatom(struct fbuf *f, const kiln_term *refs, int i, bool spell)
{
    if (!spell) {
        fput(f, (uint8_t[]){82, (uint8_t)i}, 2);
        return;
    }
    size_t len;
    const char *t = kiln_atom_text(refs[i], &len);
    if (len <= 255)
        fput(f, (uint8_t[]){119, (uint8_t)len}, 2);
    else
        fput(f, (uint8_t[]){118, (uint8_t)(len >> 8), (uint8_t)len}, 3);
    fput(f, t, len);
}

/* NEW_FUN_EXT from the tag; numfree inner terms written by body. */
static void ffun(struct fbuf *f, const kiln_term *refs, bool spell, uint32_t numfree,
                 void (*body)(struct fbuf *, const kiln_term *, bool))
{
    size_t at = f->n;
    fput(f, (uint8_t[]){112, 0, 0, 0, 0, 1}, 6);
    for (int i = 0; i < 16; i++)
        fput(f, (uint8_t[]){(uint8_t)(i + 1)}, 1);
    fput(f, (uint8_t[]){0, 0, 0, 3, (uint8_t)(numfree >> 24), (uint8_t)(numfree >> 16), (uint8_t)(numfree >> 8),
                        (uint8_t)numfree},
         8);
    fatom(f, refs, 0, spell);
    fput(f, (uint8_t[]){97, 3, 97, 7, 88}, 5);
    fatom(f, refs, 1, spell);
    fput(f, (uint8_t[]){0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 2}, 12);
    if (body)
        body(f, refs, spell);
    size_t size = f->n - at - 1;
    f->b[at + 1] = (uint8_t)(size >> 24);
    f->b[at + 2] = (uint8_t)(size >> 16);
    f->b[at + 3] = (uint8_t)(size >> 8);
    f->b[at + 4] = (uint8_t)size;
}

static void outer_body(struct fbuf *f, const kiln_term *refs, bool spell)
{
    fatom(f, refs, 2, spell);                  /* a 300-byte atom: ATOM_UTF8 */
    ffun(f, refs, spell, 0, NULL);             /* a fun in a free variable */
    fput(f, (uint8_t[]){104, 2, 113}, 3);      /* {fun M:N/1, M} */
    fatom(f, refs, 0, spell);
    fatom(f, refs, 1, spell);
    fput(f, (uint8_t[]){97, 1}, 2);
    fatom(f, refs, 0, spell);
}

static void test_fun_cache_refs_spelled_out(void **state)
{
    (void)state;
    char longname[301];
    for (int i = 0; i < 150; i++)
        memcpy(longname + 2 * i, "\xC3\xA4", 2);
    kiln_term refs[3] = {kiln_atom_c("lists"), kiln_atom_c("erl@host"), KILN_NONE};
    assert_int_equal(kiln_atom(longname, 300, &refs[2]), KILN_OK);
    struct fbuf in = {.n = 0}, want = {.n = 0};
    fput(&in, (uint8_t[]){104, 2}, 2); /* {Fun, lists}: refs outside funs too */
    ffun(&in, refs, false, 3, outer_body);
    fatom(&in, refs, 0, false);
    ffun(&want, refs, true, 3, outer_body);
    kiln_etf_decode_opts o = {.atom_refs = refs, .n_atom_refs = 3};
    kiln_msg *m = NULL;
    size_t used = 0;
    assert_int_equal(kiln_etf_decode_bare(in.b, in.n, &o, &m, &used), KILN_OK);
    assert_int_equal(used, in.n);
    kiln_term t = kiln_msg_term(m);
    assert_true(kiln_tuple_get(t, 1) == refs[0]);
    const uint8_t *kept;
    size_t kn;
    assert_int_equal(kiln_get_fun(kiln_tuple_get(t, 0), &kept, &kn), KILN_OK);
    assert_int_equal(kn, want.n - 1);
    assert_memory_equal(kept, want.b + 1, kn);
    /* The kept bytes stand alone: they decode with no header... */
    kiln_msg *m2 = NULL;
    assert_int_equal(kiln_etf_decode_bare(want.b, want.n, &(kiln_etf_decode_opts){0}, &m2, &used), KILN_OK);
    assert_true(kiln_term_eq(kiln_msg_term(m2), kiln_tuple_get(t, 0)));
    kiln_msg_free(m2);
    /* ...and measure agrees with what decoding took. */
    size_t words = 0;
    assert_int_equal(kiln_etf_measure(in.b, in.n, true, &o, &words, &used), KILN_OK);
    assert_int_equal(used, in.n);
    kiln_msg_free(m);
    /* Spelling out is bounded like inflating: refs to a long atom cannot
     * make a small packet cost much memory. */
    o.max_uncompressed = 100;
    assert_int_equal(kiln_etf_decode_bare(in.b, in.n, &o, &m, &used), KILN_ETOOBIG);
}

static void test_binaries_lent_not_copied(void **state)
{
    (void)state;
    kiln_msg *m = kiln_msg_new(256);
    uint8_t *data = malloc(10000);
    for (int i = 0; i < 10000; i++)
        data[i] = (uint8_t)(i * 7);
    kiln_term bin = kiln_binary(m, data, 10000);
    const uint8_t *stored;
    assert_int_equal(kiln_get_binary(bin, &stored, NULL), KILN_OK);
    kiln_etf_enc *e = kiln_etf_enc_new(NULL);
    assert_int_equal(kiln_etf_enc_whole(e, kiln_tuple(m, 2, kiln_atom_c("data"), bin)), KILN_OK);
    size_t n;
    const struct iovec *iov = kiln_etf_enc_iov(e, &n);
    assert_int_equal(n, 2);
    assert_ptr_equal(iov[1].iov_base, stored); /* the binary's own bytes */
    assert_int_equal(iov[1].iov_len, 10000);
    assert_int_equal(kiln_etf_enc_size(e), 1 + 2 + 7 + 5 + 10000);
    /* The encoder holds the blob: freeing the message keeps it readable. */
    kiln_msg_free(m);
    assert_memory_equal(iov[1].iov_base, data, 10000);
    /* Appending after the lent binary opens a new piece. */
    assert_int_equal(kiln_etf_enc_raw(e, "xy", 2), KILN_OK);
    iov = kiln_etf_enc_iov(e, &n);
    assert_int_equal(n, 3);
    assert_int_equal(iov[2].iov_len, 2);
    kiln_etf_enc_reset(e);
    assert_int_equal(kiln_etf_enc_size(e), 0);
    iov = kiln_etf_enc_iov(e, &n);
    assert_int_equal(n, 0);
    kiln_etf_enc_free(e);
    free(data);
}

/* Decoding from a refcounted blob: a large binary points into the blob
 * (which it keeps alive); a small one is copied, so as not to pin it. */
static void test_decode_shares_large_binaries(void **state)
{
    (void)state;
    enum { BIG = 100000, SMALL = 100 };
    kiln_msg *m = kiln_msg_new(256);
    uint8_t *big = malloc(BIG), small[SMALL];
    for (int i = 0; i < BIG; i++)
        big[i] = (uint8_t)(i * 13);
    memset(small, 0x5A, sizeof small);
    kiln_term t = kiln_tuple(m, 2, kiln_binary(m, big, BIG), kiln_binary(m, small, SMALL));
    uint8_t *bytes;
    size_t n;
    assert_int_equal(kiln_etf_term_to_bytes(t, NULL, &bytes, &n), KILN_OK);
    kiln_bin *src = kiln_bin_alloc(n);
    memcpy(kiln_bin_data(src), bytes, n);
    uintptr_t lo = (uintptr_t)kiln_bin_data(src), hi = lo + n;

    kiln_etf_decode_opts o = {.source = src};
    kiln_msg *d = NULL;
    assert_int_equal(kiln_etf_decode(kiln_bin_data(src), n, &o, &d, NULL), KILN_OK);
    const uint8_t *pb, *ps;
    size_t lb, ls;
    assert_int_equal(kiln_get_binary(kiln_tuple_get(kiln_msg_term(d), 0), &pb, &lb), KILN_OK);
    assert_int_equal(kiln_get_binary(kiln_tuple_get(kiln_msg_term(d), 1), &ps, &ls), KILN_OK);
    assert_int_equal(lb, BIG);
    assert_int_equal(ls, SMALL);
    assert_true((uintptr_t)pb >= lo && (uintptr_t)pb + lb <= hi);  /* shared */
    assert_false((uintptr_t)ps >= lo && (uintptr_t)ps < hi);        /* copied */
    /* The decoded message keeps the blob alive. */
    kiln_bin_decref(src);
    assert_memory_equal(pb, big, BIG);
    assert_memory_equal(ps, small, SMALL);
    kiln_msg_free(d);

    /* binary_to_term of a refcounted binary term: that binary is the
     * source. */
    kiln_term bt = kiln_binary(m, bytes, n);
    assert_int_equal(kiln_get_binary(bt, &pb, &lb), KILN_OK);
    lo = (uintptr_t)pb;
    hi = lo + lb;
    assert_int_equal(kiln_binary_to_term(bt, NULL, &d), KILN_OK);
    assert_int_equal(kiln_get_binary(kiln_tuple_get(kiln_msg_term(d), 0), &pb, &lb), KILN_OK);
    assert_true((uintptr_t)pb >= lo && (uintptr_t)pb + lb <= hi);
    assert_int_equal(kiln_get_binary(kiln_tuple_get(kiln_msg_term(d), 1), &ps, &ls), KILN_OK);
    assert_false((uintptr_t)ps >= lo && (uintptr_t)ps < hi);
    kiln_msg_free(d);

    /* Without a source, or from other memory, everything is copied. */
    assert_int_equal(kiln_etf_decode(bytes, n, NULL, &d, NULL), KILN_OK);
    assert_int_equal(kiln_get_binary(kiln_tuple_get(kiln_msg_term(d), 0), &pb, &lb), KILN_OK);
    assert_false((uintptr_t)pb >= (uintptr_t)bytes && (uintptr_t)pb < (uintptr_t)bytes + n);
    assert_memory_equal(pb, big, BIG);
    kiln_msg_free(d);
    free(bytes);
    free(big);
    kiln_msg_free(m);
}

static void test_encoder_error_rolls_back(void **state)
{
    (void)state;
    kiln_msg *m = kiln_msg_new(256);
    kiln_etf_enc *e = kiln_etf_enc_new(NULL);
    assert_int_equal(kiln_etf_enc_raw(e, "ab", 2), KILN_OK);
    /* 0x6D is a special-tagged word that is no term. */
    assert_int_equal(kiln_etf_enc_whole(e, kiln_tuple(m, 2, kiln_small(1), (kiln_term)0x6D)), KILN_EBADARG);
    assert_int_equal(kiln_etf_enc_size(e), 2);
    kiln_etf_enc_free(e);
    kiln_msg_free(m);
}

static void test_decode_into_and_measure(void **state)
{
    (void)state;
    /* Two terms back to back (control message and payload). */
    static const uint8_t two[] = {104, 2, 97, 2, 119, 1, 'x', 108, 0, 0, 0, 1, 97, 7, 106};
    size_t words, used;
    assert_int_equal(kiln_etf_measure(two, sizeof two, true, NULL, &words, &used), KILN_OK);
    assert_int_equal(used, 7);
    assert_int_equal(words, 3);
    kiln_msg *m = kiln_msg_new_words(5);
    kiln_term ctrl, payload;
    assert_int_equal(kiln_etf_decode_into(m, two, sizeof two, true, NULL, &ctrl, &used), KILN_OK);
    assert_int_equal(used, 7);
    size_t used2;
    assert_int_equal(kiln_etf_decode_into(m, two + used, sizeof two - used, true, NULL, &payload, &used2), KILN_OK);
    assert_int_equal(used2, sizeof two - 7);
    assert_int_equal(kiln_match(ctrl, "{2,x}"), KILN_OK);
    assert_int_equal(kiln_list_length(payload), 1);
    kiln_msg_free(m);
}

static void test_helpers(void **state)
{
    (void)state;
    kiln_msg *m = kiln_msg_new(1024);
    kiln_term l = KILN_NIL;
    for (int i = 0; i < 100; i++)
        l = kiln_cons(m, kiln_small(1), l);
    kiln_t2b_opts c = {-1, 1, NULL};
    kiln_term bin;
    assert_int_equal(kiln_term_to_binary(m, l, &c, &bin), KILN_OK);
    /* Same bytes OTP 25 writes for term_to_binary(lists:duplicate(100,1), [compressed]). */
    const uint8_t *b;
    size_t n;
    assert_int_equal(kiln_get_binary(bin, &b, &n), KILN_OK);
    static const uint8_t otp[] = {131, 80, 0, 0, 0, 103, 120, 156, 203, 102, 72, 97, 164, 3, 0, 0, 102, 162, 1, 52};
    assert_int_equal(n, sizeof otp);
    assert_memory_equal(b, otp, sizeof otp);
    kiln_msg *back = NULL;
    assert_int_equal(kiln_binary_to_term(bin, NULL, &back), KILN_OK);
    assert_true(kiln_term_eq(kiln_msg_term(back), l));
    kiln_msg_free(back);
    /* Too small to gain: stays plain. */
    assert_encodes(kiln_atom_c("abc"), &c, BYTES(131, 100, 0, 3, 'a', 'b', 'c'));
    /* minor_version 2 and 0. */
    kiln_t2b_opts v2 = {0, 2, NULL};
    assert_encodes(kiln_atom_c("abc"), &v2, BYTES(131, 119, 3, 'a', 'b', 'c'));
    kiln_t2b_opts v0 = {0, 0, NULL};
    uint8_t *fb;
    size_t fn;
    assert_int_equal(kiln_etf_term_to_bytes(kiln_float(m, 1.5), &v0, &fb, &fn), KILN_OK);
    assert_int_equal(fn, 33);
    assert_int_equal(fb[1], 99);
    assert_memory_equal(fb + 2, "1.50000000000000000000e+00\0\0\0\0\0", 31);
    free(fb);
    kiln_msg_free(m);
}

int main(void)
{
    assert_int_equal(kiln_atoms_init(), KILN_OK);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_legacy_tags_reencode_canonically),
        cmocka_unit_test(test_local_pids),
        cmocka_unit_test(test_atom_cache_refs),
        cmocka_unit_test(test_fun_cache_refs_spelled_out),
        cmocka_unit_test(test_binaries_lent_not_copied),
        cmocka_unit_test(test_decode_shares_large_binaries),
        cmocka_unit_test(test_encoder_error_rolls_back),
        cmocka_unit_test(test_decode_into_and_measure),
        cmocka_unit_test(test_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
