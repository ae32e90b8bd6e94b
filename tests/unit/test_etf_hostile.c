/* Hostile ETF input: every kind of damage gets its own error, nothing
 * crashes, and nothing makes the decoder allocate far beyond the input. */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "testutil.h"
#include "kiln/etf.h"
#include "runtime/message.h"

static int dec(const void *b, size_t n)
{
    kiln_msg *m = NULL;
    int rc = kiln_etf_decode(b, n, NULL, &m, NULL);
    if (rc == KILN_OK) {
        /* Whatever decodes stays within a small multiple of the input. */
        assert_true(kiln_msg_size(m) <= sizeof(kiln_msg) + 64 + 16 * n);
        kiln_msg_free(m);
    } else {
        assert_null(m);
    }
    return rc;
}

#define DEC(...) dec((const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__}))

static void test_truncated(void **state)
{
    (void)state;
    assert_int_equal(dec("", 0), KILN_ETRUNCATED);
    assert_int_equal(DEC(131), KILN_ETRUNCATED);
    assert_int_equal(DEC(131, 97), KILN_ETRUNCATED);
    assert_int_equal(DEC(131, 98, 0, 0), KILN_ETRUNCATED);
    assert_int_equal(DEC(131, 70, 1, 2, 3), KILN_ETRUNCATED);
    assert_int_equal(DEC(131, 104, 2, 97, 1), KILN_ETRUNCATED);
    assert_int_equal(DEC(131, 88, 119, 1, 'a', 0, 0), KILN_ETRUNCATED);
    assert_int_equal(DEC(131, 90, 0), KILN_ETRUNCATED);
    /* Every proper prefix of a rich term fails, with a truncation error. */
    static const uint8_t good[] = {131, 104, 7, 97, 1, 98, 0, 0, 1, 0, 70, 64, 9, 33, 251, 84, 68, 45, 24,
                                   108, 0, 0, 0, 2, 119, 1, 'a', 107, 0, 2, 'h', 'i', 109, 0, 0, 0, 1, 7,
                                   116, 0, 0, 0, 1, 97, 1, 106, 77, 0, 0, 0, 1, 3, 224, 110, 9, 0,
                                   1, 2, 3, 4, 5, 6, 7, 8, 9};
    assert_int_equal(dec(good, sizeof good), KILN_OK);
    for (size_t n = 0; n < sizeof good; n++) {
        int rc = dec(good, n);
        assert_true(rc == KILN_ETRUNCATED || rc == KILN_EBADLENGTH);
    }
}

static void test_lengths_beyond_input(void **state)
{
    (void)state;
    /* A 10-byte input claiming 4 G list elements must fail before any
     * allocation sized by the claim. */
    assert_int_equal(DEC(131, 108, 255, 255, 255, 255, 106, 106, 106, 106), KILN_EBADLENGTH);
    assert_int_equal(DEC(131, 105, 255, 255, 255, 255, 106), KILN_EBADLENGTH);
    assert_int_equal(DEC(131, 116, 128, 0, 0, 0, 97, 1, 97, 2), KILN_EBADLENGTH);
    assert_int_equal(DEC(131, 109, 255, 255, 255, 255, 1, 2), KILN_EBADLENGTH);
    assert_int_equal(DEC(131, 77, 0, 0, 0, 9, 3, 1), KILN_EBADLENGTH);
    assert_int_equal(DEC(131, 107, 255, 255, 'a'), KILN_EBADLENGTH);
    assert_int_equal(DEC(131, 118, 0, 10, 'a'), KILN_EBADLENGTH);
    assert_int_equal(DEC(131, 119, 10, 'a'), KILN_EBADLENGTH);
    assert_int_equal(DEC(131, 111, 255, 255, 255, 255, 0, 1), KILN_EBADLENGTH);
    assert_int_equal(DEC(131, 110, 200, 0, 1), KILN_EBADLENGTH);
    assert_int_equal(DEC(131, 112, 255, 255, 255, 255, 1), KILN_ETRUNCATED);
    /* A tuple of n needs n more bytes at least. */
    assert_int_equal(DEC(131, 104, 3, 106, 106), KILN_EBADLENGTH);
    assert_int_equal(DEC(131, 104, 2, 98, 0), KILN_ETRUNCATED);
    /* A list of n needs n elements and a tail. */
    assert_int_equal(DEC(131, 108, 0, 0, 0, 2, 106, 106), KILN_EBADLENGTH);
    assert_int_equal(DEC(131, 108, 0, 0, 0, 2, 106, 106, 106), KILN_OK);
}

static void test_allocation_bounded(void **state)
{
    (void)state;
    /* Worst cases per input byte: lists and strings (two words per byte). */
    size_t n = 100000;
    uint8_t *b = malloc(n + 8);
    b[0] = 131;
    b[1] = 108;
    b[2] = (uint8_t)((n - 7) >> 24);
    b[3] = (uint8_t)((n - 7) >> 16);
    b[4] = (uint8_t)((n - 7) >> 8);
    b[5] = (uint8_t)(n - 7);
    memset(b + 6, 106, n - 6);
    assert_int_equal(dec(b, n), KILN_OK);
    size_t words = 0;
    assert_int_equal(kiln_etf_measure(b, n, false, NULL, &words, NULL), KILN_OK);
    assert_int_equal(words, 2 * (n - 7));
    free(b);
}

static uint8_t *nested(size_t depth, uint8_t open1, uint8_t open2, size_t *len)
{
    /* depth containers of one element each around a NIL. */
    size_t per = open1 == 108 ? 5 : 2;
    size_t n = 1 + depth * (per + (open1 == 108 ? 1 : 0)) + 1;
    uint8_t *b = malloc(n);
    size_t i = 0;
    b[i++] = 131;
    for (size_t d = 0; d < depth; d++) {
        b[i++] = open1;
        if (open1 == 108) {
            b[i++] = 0;
            b[i++] = 0;
            b[i++] = 0;
            b[i++] = 1;
        } else {
            b[i++] = open2;
        }
    }
    b[i++] = 106;
    if (open1 == 108)
        for (size_t d = 0; d < depth; d++)
            b[i++] = 106; /* the tails */
    *len = i;
    return b;
}

static void test_depth_limit(void **state)
{
    (void)state;
    size_t len;
    uint8_t *b = nested(20000, 104, 1, &len);
    assert_int_equal(dec(b, len), KILN_ETOODEEP);
    kiln_etf_decode_opts o = {.max_depth = 30000};
    kiln_msg *m = NULL;
    assert_int_equal(kiln_etf_decode(b, len, &o, &m, NULL), KILN_OK);
    kiln_msg_free(m);
    free(b);

    b = nested(5, 104, 1, &len);
    o.max_depth = 5;
    assert_int_equal(kiln_etf_decode(b, len, &o, &m, NULL), KILN_OK);
    kiln_msg_free(m);
    o.max_depth = 4;
    assert_int_equal(kiln_etf_decode(b, len, &o, &m, NULL), KILN_ETOODEEP);
    free(b);

    /* Lists nested in head position count... */
    b = nested(20000, 108, 0, &len);
    assert_int_equal(dec(b, len), KILN_ETOODEEP);
    free(b);
    /* ...but a chain of LIST_EXT tails is one level, however long. */
    size_t k = 200000;
    b = malloc(1 + k * 6 + 1);
    size_t i = 0;
    b[i++] = 131;
    for (size_t d = 0; d < k; d++) {
        b[i++] = 108;
        b[i++] = 0;
        b[i++] = 0;
        b[i++] = 0;
        b[i++] = 1;
        b[i++] = 106;
    }
    b[i++] = 106;
    assert_int_equal(kiln_etf_decode(b, i, NULL, &m, NULL), KILN_OK);
    assert_int_equal(kiln_list_length(kiln_msg_term(m)), (int64_t)k);
    kiln_msg_free(m);
    free(b);
}

static void test_bad_utf8_and_long_atoms(void **state)
{
    (void)state;
    assert_int_equal(DEC(131, 119, 2, 0xC3, 0x28), KILN_EBADUTF8);
    assert_int_equal(DEC(131, 119, 2, 0xC0, 0x80), KILN_EBADUTF8);        /* overlong */
    assert_int_equal(DEC(131, 119, 3, 0xED, 0xA0, 0x80), KILN_EBADUTF8);  /* surrogate */
    assert_int_equal(DEC(131, 119, 4, 0xF4, 0x90, 0x80, 0x80), KILN_EBADUTF8); /* > U+10FFFF */
    assert_int_equal(DEC(131, 118, 0, 1, 0xFF), KILN_EBADUTF8);
    assert_int_equal(DEC(131, 119, 1, 0xC3), KILN_EBADUTF8);
    /* Latin-1 forms take any byte. */
    assert_int_equal(DEC(131, 115, 2, 0xFF, 0xE4), KILN_OK);

    uint8_t b[4 + 600];
    b[0] = 131;
    b[1] = 100;
    b[2] = 1;
    b[3] = 0; /* 256 Latin-1 characters */
    memset(b + 4, 'x', 256);
    assert_int_equal(dec(b, 4 + 256), KILN_EATOM_TOO_LONG);
    b[1] = 118;
    b[2] = 2;
    b[3] = 0; /* 512 bytes = 256 two-byte characters */
    for (int i = 0; i < 256; i++) {
        b[4 + 2 * i] = 0xC3;
        b[5 + 2 * i] = 0xA4;
    }
    assert_int_equal(dec(b, 4 + 512), KILN_EATOM_TOO_LONG);
    b[2] = 1;
    b[3] = 0xFE; /* 255 characters: fine */
    assert_int_equal(dec(b, 4 + 510), KILN_OK);
}

static void test_unknown_and_unsupported(void **state)
{
    (void)state;
    assert_int_equal(DEC(131, 1), KILN_EBADTAG);
    assert_int_equal(DEC(131, 200, 0, 0), KILN_EBADTAG);
    assert_int_equal(DEC(131, 104, 1, 255), KILN_EBADTAG);
    assert_int_equal(DEC(130, 97, 1), KILN_EBADVERSION);
    assert_int_equal(DEC(131, 121, 0, 0, 0, 0), KILN_EUNSUPPORTED_TERM); /* LOCAL_EXT */
    assert_int_equal(DEC(131, 117, 0, 0, 0, 0), KILN_EUNSUPPORTED_TERM); /* FUN_EXT */
    assert_int_equal(DEC(131, 97, 1, 0), KILN_ETRAILING);
    assert_int_equal(DEC(131, 80, 0, 0, 0, 1), KILN_EZLIB);
    /* Compressed markers are for the top level only. */
    assert_int_equal(DEC(131, 104, 1, 80, 0, 0, 0, 1, 0), KILN_EBADTAG);
}

static void test_bad_terms(void **state)
{
    (void)state;
    assert_int_equal(DEC(131, 77, 0, 0, 0, 1, 0, 255), KILN_EBADTERM);  /* 0 bits used */
    assert_int_equal(DEC(131, 77, 0, 0, 0, 1, 9, 255), KILN_EBADTERM);  /* 9 bits used */
    assert_int_equal(DEC(131, 77, 0, 0, 0, 0, 3), KILN_EBADTERM);       /* bits of nothing */
    assert_int_equal(DEC(131, 116, 0, 0, 0, 2, 97, 1, 97, 2, 97, 1, 97, 3), KILN_EBADTERM); /* dup key */
    assert_int_equal(DEC(131, 70, 0x7F, 0xF0, 0, 0, 0, 0, 0, 0), KILN_EBADTERM);            /* inf */
    assert_int_equal(DEC(131, 70, 0x7F, 0xF8, 0, 0, 0, 0, 0, 1), KILN_EBADTERM);            /* NaN */
    assert_int_equal(DEC(131, 110, 1, 2, 5), KILN_EBADTERM);             /* sign 2 */
    assert_int_equal(DEC(131, 90, 0, 6, 119, 1, 'a', 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4,
                         0, 0, 0, 5, 0, 0, 0, 6),
                     KILN_EBADTERM); /* 6 ref words */
    assert_int_equal(DEC(131, 88, 97, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1), KILN_EBADTERM); /* node not atom */
    assert_int_equal(DEC(131, 113, 119, 1, 'm', 119, 1, 'f', 98, 0, 0, 0, 1), KILN_EBADTERM); /* arity tag */
    assert_int_equal(DEC(131, 82, 0), KILN_EBADTERM); /* cache ref without a header */
    /* A fun whose inner terms overrun its declared size. */
    static const uint8_t fun[] = {131, 112, 0, 0, 0, 36, 0, /* Size 36, arity 0 */
                                  1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 0, 0, 0, 0, 0, 0, 0, 0,
                                  119, 1, 'm', 97, 0, 97, 0, 88, 119, 1, 'n', 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1};
    assert_int_equal(dec(fun, sizeof fun), KILN_EBADTERM);
    uint8_t fixed[sizeof fun];
    memcpy(fixed, fun, sizeof fun);
    fixed[5] = (uint8_t)(sizeof fun - 2);
    assert_int_equal(dec(fixed, sizeof fixed), KILN_OK);
    /* A header-relative atom cache reference inside is spelled out, and
     * the Size grows to match (the kept bytes are the fixed fun's). */
    static const uint8_t cached_fun[] = {131, 112, 0, 0, 0, 51, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                                         16, 0, 0, 0, 0, 0, 0, 0, 0, 82, 0, 97, 0, 97, 0, 88, 119, 1, 'n', 0, 0, 0,
                                         1, 0, 0, 0, 1, 0, 0, 0, 1};
    kiln_term refs[1] = {kiln_atom_c("m")};
    kiln_etf_decode_opts o = {.atom_refs = refs, .n_atom_refs = 1};
    kiln_msg *m = NULL;
    assert_int_equal(kiln_etf_decode(cached_fun, sizeof cached_fun, &o, &m, NULL), KILN_OK);
    const uint8_t *kept;
    size_t kn;
    assert_int_equal(kiln_get_fun(kiln_msg_term(m), &kept, &kn), KILN_OK);
    assert_int_equal(kn, sizeof fixed - 2);
    assert_memory_equal(kept, fixed + 2, kn);
    kiln_msg_free(m);
    /* The ref must still name one of the header's atoms. */
    o.n_atom_refs = 0;
    assert_int_equal(kiln_etf_decode(cached_fun, sizeof cached_fun, &o, &m, NULL), KILN_EBADTERM);
}

static void test_compressed_lies(void **state)
{
    (void)state;
    uint8_t plain[] = {104, 2, 97, 1, 97, 2};
    uint8_t z[64];
    uLongf zn = sizeof z;
    assert_int_equal(compress(z, &zn, plain, sizeof plain), Z_OK);
    uint8_t b[80] = {131, 80, 0, 0, 0, sizeof plain};
    memcpy(b + 6, z, zn);
    assert_int_equal(dec(b, 6 + zn), KILN_OK);
    b[5] = sizeof plain + 1; /* says more than it holds */
    assert_int_equal(dec(b, 6 + zn), KILN_EBADLENGTH);
    b[5] = sizeof plain - 1; /* says less */
    assert_int_equal(dec(b, 6 + zn), KILN_EBADLENGTH);
    /* A claim of 4 GB is refused before inflating anything. */
    b[2] = b[3] = b[4] = b[5] = 0xFF;
    assert_int_equal(dec(b, 6 + zn), KILN_ETOOBIG);
    /* 60 MB claimed (under the cap) for 6 real bytes: no 60 MB buffer. */
    b[2] = 3;
    b[3] = 0x93;
    b[4] = 0x87;
    b[5] = 0;
    assert_int_equal(dec(b, 6 + zn), KILN_EBADLENGTH);
    kiln_etf_decode_opts o = {.max_uncompressed = 5};
    kiln_msg *m = NULL;
    b[2] = b[3] = b[4] = 0;
    b[5] = sizeof plain;
    assert_int_equal(kiln_etf_decode(b, 6 + zn, &o, &m, NULL), KILN_ETOOBIG);
    /* Corrupt stream. */
    b[8] ^= 0xFF;
    int rc = dec(b, 6 + zn);
    assert_true(rc == KILN_EZLIB || rc == KILN_EBADLENGTH);
}

/* Random damage to valid terms: any result but a crash (ASan builds check
 * the memory side). */
static void test_mutations(void **state)
{
    (void)state;
    kiln_msg *m = kiln_msg_new(4096);
    kiln_term t = kiln_tuple(m, 6, kiln_int(m, INT64_MIN), kiln_float(m, 2.5), kiln_atom_c("héllo"),
                             kiln_list(m, 3, kiln_small(1), kiln_binary(m, "abc", 3), KILN_NIL),
                             kiln_map(m, 1, (kiln_term[]){kiln_small(1)}, (kiln_term[]){kiln_bitstring(m, "\xE0", 3)}),
                             kiln_ext_pid(m, kiln_atom_c("a@b"), 1, 2, 3));
    uint8_t *bytes;
    size_t n;
    assert_int_equal(kiln_etf_term_to_bytes(t, NULL, &bytes, &n), KILN_OK);
    uint8_t *buf = malloc(n);
    srand(12345);
    for (int iter = 0; iter < 200000; iter++) {
        memcpy(buf, bytes, n);
        int flips = 1 + rand() % 3;
        for (int f = 0; f < flips; f++)
            buf[rand() % n] = (uint8_t)rand();
        size_t len = (size_t)(rand() % 8 == 0 ? rand() % (int)n : (int)n);
        kiln_msg *out = NULL;
        if (kiln_etf_decode(buf, len, NULL, &out, NULL) == KILN_OK) {
            /* Whatever decodes must re-encode. */
            uint8_t *again;
            size_t an;
            assert_int_equal(kiln_etf_term_to_bytes(kiln_msg_term(out), NULL, &again, &an), KILN_OK);
            free(again);
            kiln_msg_free(out);
        }
    }
    free(buf);
    free(bytes);
    kiln_msg_free(m);
}

/* A short input is decoded in one pass, but an atom is only made once the
 * whole input has proved good: bad input leaves the atom table alone. */
static void test_bad_input_makes_no_atoms(void **state)
{
    (void)state;
    kiln_term a;
    /* {new_atom_one, <<truncated>>}, {new_atom_two} with a trailing byte,
     * [new_atom_three | bad tag]. */
    static const uint8_t truncated[] = {131, 104, 2, 119, 12, 'n', 'e', 'w', '_', 'a', 't', 'o', 'm', '_',
                                        'o', 'n', 'e', 109, 0, 0, 0, 9, 'x'};
    static const uint8_t trailing[] = {131, 104, 1, 119, 12, 'n', 'e', 'w', '_', 'a', 't', 'o', 'm', '_',
                                       't', 'w', 'o', 106};
    static const uint8_t badtag[] = {131, 108, 0, 0, 0, 1, 119, 14, 'n', 'e', 'w', '_', 'a', 't', 'o', 'm',
                                     '_', 't', 'h', 'r', 'e', 'e', 3};
    kiln_msg *m = NULL;
    assert_int_equal(kiln_etf_decode(truncated, sizeof truncated, NULL, &m, NULL), KILN_EBADLENGTH);
    assert_int_equal(kiln_etf_decode(trailing, sizeof trailing, NULL, &m, NULL), KILN_ETRAILING);
    assert_int_equal(kiln_etf_decode(badtag, sizeof badtag, NULL, &m, NULL), KILN_EBADTAG);
    assert_null(m);
    assert_int_equal(kiln_atom_existing("new_atom_one", 12, &a), KILN_ENOTREG);
    assert_int_equal(kiln_atom_existing("new_atom_two", 12, &a), KILN_ENOTREG);
    assert_int_equal(kiln_atom_existing("new_atom_three", 14, &a), KILN_ENOTREG);
    /* The same atoms in good input are made. */
    assert_int_equal(kiln_etf_decode(trailing, sizeof trailing - 1, NULL, &m, NULL), KILN_OK);
    kiln_msg_free(m);
    assert_int_equal(kiln_atom_existing("new_atom_two", 12, &a), KILN_OK);
}

/* Last: it fills the atom table. */
static void test_atom_table_full(void **state)
{
    (void)state;
    assert_int_equal(kiln_atom_set_limit(kiln_atom_count() + 3), KILN_OK);
    kiln_term a;
    char name[32];
    int rc = KILN_OK;
    for (int i = 0; rc == KILN_OK; i++) {
        snprintf(name, sizeof name, "filler_%d", i);
        rc = kiln_atom(name, strlen(name), &a);
    }
    assert_int_equal(rc, KILN_ESYSTEM_LIMIT);
    assert_int_equal(DEC(131, 119, 9, 'b', 'r', 'a', 'n', 'd', '_', 'n', 'e', 'w'), KILN_ESYSTEM_LIMIT);
    /* Atoms that exist still decode. */
    assert_int_equal(DEC(131, 119, 8, 'f', 'i', 'l', 'l', 'e', 'r', '_', '0'), KILN_OK);
    /* existing_atoms_only refuses new ones with its own error. */
    kiln_etf_decode_opts o = {.existing_atoms_only = true};
    static const uint8_t b[] = {131, 119, 5, 'z', 'z', 'z', 'z', 'z'};
    kiln_msg *m = NULL;
    assert_int_equal(kiln_etf_decode(b, sizeof b, &o, &m, NULL), KILN_ENOTREG);
}

int main(void)
{
    assert_int_equal(kiln_atoms_init(), KILN_OK);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_lengths_beyond_input),
        cmocka_unit_test(test_allocation_bounded),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_bad_utf8_and_long_atoms),
        cmocka_unit_test(test_unknown_and_unsupported),
        cmocka_unit_test(test_bad_terms),
        cmocka_unit_test(test_compressed_lies),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_bad_input_makes_no_atoms),
        cmocka_unit_test(test_atom_table_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
