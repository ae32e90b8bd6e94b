/* Term constructors and accessors, maps, big integers, binaries (inline,
 * refcounted, sub-binaries) and deep copy. */
#include <math.h>
#include <string.h>

#include "testutil.h"
#include "runtime/message.h"
#include "runtime/term_layout.h"

static size_t refc(kiln_bin *b) { return atomic_load(&b->refc); }

static void test_small_and_big_ints(void **state)
{
    (void)state;
    kiln_msg *m = kiln_msg_new(256);
    int64_t v;
    uint64_t u;
    kiln_term t = kiln_int(m, KILN_SMALL_MAX);
    assert_true(kiln_is_small(t));
    assert_int_equal(kiln_get_int64(t, &v), KILN_OK);
    assert_true(v == KILN_SMALL_MAX);
    t = kiln_int(m, KILN_SMALL_MAX + 1);
    assert_true(kiln_is_big(t));
    assert_int_equal(kiln_type_of(t), KILN_T_INTEGER);
    assert_int_equal(kiln_get_int64(t, &v), KILN_OK);
    assert_true(v == KILN_SMALL_MAX + 1);
    t = kiln_int(m, KILN_SMALL_MIN);
    assert_true(kiln_is_small(t));
    assert_true(kiln_small_value(t) == KILN_SMALL_MIN);
    t = kiln_int(m, KILN_SMALL_MIN - 1);
    assert_true(kiln_is_big(t));
    assert_int_equal(kiln_box_subtag(t), KILN_SUB_NEG_BIG);
    t = kiln_int(m, INT64_MIN);
    assert_int_equal(kiln_get_int64(t, &v), KILN_OK);
    assert_true(v == INT64_MIN);
    assert_int_equal(kiln_get_uint64(t, &u), KILN_EBADARG);
    t = kiln_int(m, INT64_MAX);
    assert_int_equal(kiln_get_int64(t, &v), KILN_OK);
    assert_true(v == INT64_MAX);
    t = kiln_uint(m, UINT64_MAX);
    assert_true(kiln_is_big(t));
    assert_int_equal(kiln_get_int64(t, &v), KILN_EBADARG);
    assert_int_equal(kiln_get_uint64(t, &u), KILN_OK);
    assert_true(u == UINT64_MAX);
    t = kiln_uint(m, 7);
    assert_true(t == kiln_small(7));
    assert_int_equal(kiln_get_uint64(kiln_small(-1), &u), KILN_EBADARG);
    assert_int_equal(kiln_get_int64(KILN_ATOM_OK, &v), KILN_EBADARG);
    kiln_msg_free(m);
}

static void test_bigint_normalises(void **state)
{
    (void)state;
    kiln_msg *m = kiln_msg_new(256);
    uint64_t d[3] = {5, 0, 0};
    assert_true(kiln_bigint(m, false, d, 3) == kiln_small(5));
    assert_true(kiln_bigint(m, true, d, 3) == kiln_small(-5));
    uint64_t z[2] = {0, 0};
    assert_true(kiln_bigint(m, true, z, 2) == kiln_small(0));
    assert_true(kiln_bigint(m, false, NULL, 0) == kiln_small(0));
    uint64_t edge = (uint64_t)1 << 60;
    assert_true(kiln_bigint(m, true, &edge, 1) == kiln_small(KILN_SMALL_MIN));
    kiln_term big = kiln_bigint(m, false, &edge, 1);
    assert_true(kiln_is_big(big));
    uint64_t two[3] = {1, 1, 0};
    big = kiln_bigint(m, true, two, 3);
    assert_true(kiln_is_big(big));
    assert_int_equal(kiln_box_size(big), 2);
    bool neg;
    const uint64_t *digits;
    size_t n;
    uint64_t scratch;
    assert_int_equal(kiln_get_bigint(big, &neg, &digits, &n, &scratch), KILN_OK);
    assert_true(neg);
    assert_int_equal(n, 2);
    assert_true(digits[0] == 1 && digits[1] == 1);
    assert_int_equal(kiln_get_bigint(kiln_small(-9), &neg, &digits, &n, &scratch), KILN_OK);
    assert_true(neg);
    assert_int_equal(n, 1);
    assert_true(digits == &scratch && scratch == 9);
    assert_int_equal(kiln_get_bigint(kiln_small(0), &neg, &digits, &n, &scratch), KILN_OK);
    assert_int_equal(n, 0);
    assert_int_equal(kiln_get_bigint(KILN_NIL, &neg, &digits, &n, &scratch), KILN_EBADARG);
    kiln_msg_free(m);
}

static void test_float(void **state)
{
    (void)state;
    kiln_msg *m = kiln_msg_new(64);
    kiln_term f = kiln_float(m, 1.5);
    assert_true(kiln_is_float(f));
    assert_int_equal(kiln_type_of(f), KILN_T_FLOAT);
    double d = 0;
    assert_int_equal(kiln_get_double(f, &d), KILN_OK);
    assert_true(d == 1.5);
    assert_int_equal(kiln_get_double(kiln_small(1), &d), KILN_EBADARG);
    assert_true(kiln_float(m, NAN) == KILN_NONE);
    assert_true(kiln_float(m, INFINITY) == KILN_NONE);
    assert_true(kiln_float(NULL, 1.0) == KILN_NONE);
    kiln_msg_free(m);
}

static void test_tuples(void **state)
{
    (void)state;
    kiln_msg *m = kiln_msg_new(64);
    kiln_term t = kiln_tuple(m, 3, KILN_ATOM_OK, kiln_small(1), KILN_NIL);
    assert_true(kiln_is_tuple(t));
    assert_int_equal(kiln_type_of(t), KILN_T_TUPLE);
    assert_int_equal(kiln_tuple_arity(t), 3);
    assert_true(kiln_tuple_get(t, 0) == KILN_ATOM_OK);
    assert_true(kiln_tuple_get(t, 1) == kiln_small(1));
    assert_true(kiln_tuple_get(t, 2) == KILN_NIL);
    kiln_term e = kiln_tuple(m, 0);
    assert_int_equal(kiln_tuple_arity(e), 0);
    kiln_term n = kiln_tuple_new(m, 2);
    assert_true(kiln_tuple_get(n, 1) == KILN_NIL);
    kiln_tuple_set(n, 1, kiln_small(42));
    kiln_tuple_set(n, 5, kiln_small(43)); /* out of range: ignored */
    assert_true(kiln_tuple_get(n, 1) == kiln_small(42));
    kiln_term elems[2] = {kiln_small(1), KILN_ATOM_ERROR};
    kiln_term v = kiln_tuple_v(m, 2, elems);
    assert_true(kiln_tuple_get(v, 1) == KILN_ATOM_ERROR);
    assert_true(kiln_tuple(m, 2, kiln_small(1), KILN_NONE) == KILN_NONE);
    elems[0] = KILN_NONE;
    assert_true(kiln_tuple_v(m, 2, elems) == KILN_NONE);
    assert_true(kiln_tuple(NULL, 1, kiln_small(1)) == KILN_NONE);
    kiln_msg_free(m);
}

static void test_lists(void **state)
{
    (void)state;
    kiln_msg *m = kiln_msg_new(64);
    kiln_term l = kiln_list(m, 3, kiln_small(1), kiln_small(2), kiln_small(3));
    assert_true(kiln_is_cons(l));
    assert_int_equal(kiln_type_of(l), KILN_T_LIST);
    assert_int_equal(kiln_list_length(l), 3);
    assert_true(kiln_hd(l) == kiln_small(1));
    assert_true(kiln_hd(kiln_tl(kiln_tl(l))) == kiln_small(3));
    assert_true(kiln_tl(kiln_tl(kiln_tl(l))) == KILN_NIL);
    assert_true(kiln_list(m, 0) == KILN_NIL);
    assert_int_equal(kiln_list_length(KILN_NIL), 0);
    assert_int_equal(kiln_type_of(KILN_NIL), KILN_T_NIL);
    kiln_term imp = kiln_cons(m, kiln_small(1), kiln_small(2));
    assert_int_equal(kiln_list_length(imp), -1);
    assert_int_equal(kiln_list_length(kiln_small(2)), -1);
    kiln_term s = kiln_string(m, "ab\xff", 3);
    assert_int_equal(kiln_list_length(s), 3);
    assert_true(kiln_hd(s) == kiln_small('a'));
    assert_true(kiln_hd(kiln_tl(kiln_tl(s))) == kiln_small(255));
    assert_true(kiln_string(m, "", 0) == KILN_NIL);
    kiln_term elems[2] = {KILN_ATOM_OK, KILN_ATOM_ERROR};
    kiln_term lv = kiln_list_v(m, 2, elems, KILN_ATOM_TRUE);
    assert_int_equal(kiln_list_length(lv), -1);
    assert_true(kiln_tl(kiln_tl(lv)) == KILN_ATOM_TRUE);
    assert_true(kiln_list_v(m, 0, NULL, kiln_small(5)) == kiln_small(5));
    assert_true(kiln_list_v(m, 2, elems, KILN_NONE) == KILN_NONE);
    assert_true(kiln_cons(m, KILN_NONE, KILN_NIL) == KILN_NONE);
    assert_true(kiln_list(m, 2, kiln_small(1), KILN_NONE) == KILN_NONE);
    kiln_msg_free(m);
}

static void test_maps(void **state)
{
    (void)state;
    kiln_msg *m = kiln_msg_new(64);
    kiln_term a = kiln_atom_c("a"), b = kiln_atom_c("b");
    kiln_term one_f = kiln_float(m, 1.0);
    kiln_term keys[5] = {b, a, kiln_small(1), a, one_f};
    kiln_term vals[5] = {kiln_small(10), kiln_small(20), kiln_small(30), kiln_small(40), kiln_small(50)};
    kiln_term map = kiln_map(m, 5, keys, vals);
    assert_true(kiln_is_map(map));
    assert_int_equal(kiln_type_of(map), KILN_T_MAP);
    /* The duplicate a collapses (later wins); 1 and 1.0 stay apart; ints
     * sort before floats, numbers before atoms. */
    assert_int_equal(kiln_map_size(map), 4);
    assert_true(kiln_map_key(map, 0) == kiln_small(1));
    assert_true(kiln_map_key(map, 1) == one_f);
    assert_true(kiln_map_key(map, 2) == a);
    assert_true(kiln_map_key(map, 3) == b);
    assert_true(kiln_map_key(map, 4) == KILN_NONE);
    assert_true(kiln_map_value(map, 2) == kiln_small(40));
    assert_true(kiln_map_get(map, a) == kiln_small(40));
    assert_true(kiln_map_get(map, b) == kiln_small(10));
    assert_true(kiln_map_get(map, kiln_small(1)) == kiln_small(30));
    assert_true(kiln_map_get(map, kiln_float(m, 1.0)) == kiln_small(50));
    assert_true(kiln_map_get(map, kiln_atom_c("c")) == KILN_NONE);

    kiln_term m2 = kiln_map_put(m, map, kiln_atom_c("c"), kiln_small(60));
    assert_int_equal(kiln_map_size(m2), 5);
    assert_int_equal(kiln_map_size(map), 4);
    assert_true(kiln_map_get(m2, kiln_atom_c("c")) == kiln_small(60));
    assert_true(kiln_map_get(map, kiln_atom_c("c")) == KILN_NONE);
    assert_true(kiln_map_key(m2, 4) == kiln_atom_c("c"));
    kiln_term m3 = kiln_map_put(m, m2, a, kiln_small(0));
    assert_int_equal(kiln_map_size(m3), 5);
    assert_true(kiln_map_get(m3, a) == kiln_small(0));
    assert_true(kiln_map_get(m2, a) == kiln_small(40));
    kiln_term m4 = kiln_map_put(m, m3, kiln_small(0), KILN_NIL);
    assert_true(kiln_map_key(m4, 0) == kiln_small(0));

    kiln_term empty = kiln_map(m, 0, NULL, NULL);
    assert_int_equal(kiln_map_size(empty), 0);
    assert_true(kiln_map_get(empty, a) == KILN_NONE);
    kiln_term e1 = kiln_map_put(m, empty, a, b);
    assert_true(kiln_map_get(e1, a) == b);
    assert_true(kiln_map_put(m, KILN_NIL, a, b) == KILN_NONE);
    keys[1] = KILN_NONE;
    assert_true(kiln_map(m, 5, keys, vals) == KILN_NONE);

    /* A larger map, keys inserted in reverse, is found by binary search. */
    enum { N = 1000 };
    static kiln_term ks[N], vs[N];
    for (int i = 0; i < N; i++) {
        ks[i] = kiln_small(N - i);
        vs[i] = kiln_small(i);
    }
    kiln_term big = kiln_map(m, N, ks, vs);
    assert_int_equal(kiln_map_size(big), N);
    for (int i = 0; i < N; i++)
        assert_true(kiln_map_get(big, kiln_small(N - i)) == kiln_small(i));
    for (size_t i = 1; i < N; i++)
        assert_true(kiln_term_cmp_exact(kiln_map_key(big, i - 1), kiln_map_key(big, i)) < 0);
    kiln_msg_free(m);
}

static void test_small_binary_inline(void **state)
{
    (void)state;
    kiln_msg *m = kiln_msg_new(64);
    kiln_term b = kiln_binary(m, "hello", 5);
    assert_true(kiln_is_bitstring(b));
    assert_int_equal(kiln_type_of(b), KILN_T_BITSTRING);
    const uint8_t *data;
    size_t len;
    assert_int_equal(kiln_get_binary(b, &data, &len), KILN_OK);
    assert_int_equal(len, 5);
    assert_memory_equal(data, "hello", 5);
    assert_null(kiln_binary_box(b)->owner);
    assert_null(m->offheap);
    kiln_term e = kiln_binary(m, NULL, 0);
    assert_int_equal(kiln_get_binary(e, &data, &len), KILN_OK);
    assert_int_equal(len, 0);
    uint8_t big[KILN_REFC_BIN_MIN - 1];
    memset(big, 7, sizeof big);
    kiln_term b63 = kiln_binary(m, big, sizeof big);
    assert_null(kiln_binary_box(b63)->owner);
    assert_true(kiln_binary(m, NULL, 3) == KILN_NONE);
    kiln_msg_free(m);
}

static void test_large_binary_refcounted(void **state)
{
    (void)state;
    uint8_t bytes[KILN_REFC_BIN_MIN];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (uint8_t)i;
    kiln_msg *m = kiln_msg_new(64);
    kiln_term b = kiln_binary(m, bytes, sizeof bytes);
    const struct kiln_binary_box *box = kiln_binary_box(b);
    assert_non_null(box->owner);
    assert_int_equal(refc(box->owner), 1);
    assert_true(m->offheap == box);
    const uint8_t *data;
    size_t len;
    assert_int_equal(kiln_get_binary(b, &data, &len), KILN_OK);
    assert_int_equal(len, sizeof bytes);
    assert_memory_equal(data, bytes, sizeof bytes);
    assert_true(data != bytes);

    /* Copying into another message shares the blob. */
    kiln_msg *m2 = kiln_msg_new(64);
    kiln_term c = kiln_term_copy(m2, kiln_tuple(m, 1, b));
    kiln_term cb = kiln_tuple_get(c, 0);
    assert_true(kiln_binary_box(cb)->owner == box->owner);
    assert_true(kiln_binary_box(cb)->data == box->data);
    kiln_bin *owner = box->owner;
    kiln_bin_incref(owner); /* keep it observable */
    assert_int_equal(refc(owner), 3);
    kiln_msg_free(m);
    assert_int_equal(refc(owner), 2);
    assert_true(kiln_term_eq(cb, cb));
    assert_int_equal(kiln_get_binary(cb, &data, &len), KILN_OK);
    assert_memory_equal(data, bytes, sizeof bytes);
    kiln_msg_free(m2);
    assert_int_equal(refc(owner), 1);
    kiln_bin_decref(owner);
}

static void test_binary_from_bin(void **state)
{
    (void)state;
    kiln_bin *bin = kiln_bin_alloc(100);
    assert_non_null(bin);
    assert_int_equal(kiln_bin_len(bin), 100);
    for (int i = 0; i < 100; i++)
        kiln_bin_data(bin)[i] = (uint8_t)(i * 3);
    kiln_msg *m = kiln_msg_new(64);
    kiln_term t = kiln_binary_from_bin(m, bin, 10, 20);
    assert_int_equal(refc(bin), 2);
    const uint8_t *data;
    size_t len;
    assert_int_equal(kiln_get_binary(t, &data, &len), KILN_OK);
    assert_int_equal(len, 20);
    assert_true(data == kiln_bin_data(bin) + 10);
    assert_true(kiln_binary_from_bin(m, bin, 90, 11) == KILN_NONE);
    assert_true(kiln_binary_from_bin(m, bin, 101, 0) == KILN_NONE);
    assert_true(kiln_binary_from_bin(m, bin, SIZE_MAX, 2) == KILN_NONE);
    assert_int_equal(refc(bin), 2);
    kiln_term whole = kiln_binary_from_bin(m, bin, 0, 100);
    assert_int_equal(refc(bin), 3);
    /* Byte-aligned sub-binary of a refcounted binary shares the blob. */
    kiln_term sub = kiln_sub_binary(m, whole, 8 * 50, 8 * 30);
    assert_int_equal(refc(bin), 4);
    assert_int_equal(kiln_get_binary(sub, &data, &len), KILN_OK);
    assert_int_equal(len, 30);
    assert_true(data == kiln_bin_data(bin) + 50);
    kiln_msg_free(m);
    assert_int_equal(refc(bin), 1);
    kiln_bin_decref(bin);
}

static void test_bitstrings_and_sub_binaries(void **state)
{
    (void)state;
    kiln_msg *m = kiln_msg_new(64);
    uint8_t ff = 0xFF;
    kiln_term b3 = kiln_bitstring(m, &ff, 3);
    const uint8_t *data;
    size_t nbits, len;
    assert_int_equal(kiln_get_bits(b3, &data, &nbits), KILN_OK);
    assert_int_equal(nbits, 3);
    assert_int_equal(data[0], 0xE0); /* unused low bits cleared */
    assert_int_equal(kiln_get_binary(b3, &data, &len), KILN_EBADARG);

    uint8_t src[3] = {0xAB, 0xCD, 0xEF};
    kiln_term b = kiln_binary(m, src, 3);
    kiln_term s = kiln_sub_binary(m, b, 4, 12);
    assert_int_equal(kiln_get_bits(s, &data, &nbits), KILN_OK);
    assert_int_equal(nbits, 12);
    assert_int_equal(data[0], 0xBC);
    assert_int_equal(data[1], 0xD0);
    s = kiln_sub_binary(m, b, 8, 16);
    assert_int_equal(kiln_get_binary(s, &data, &len), KILN_OK);
    assert_int_equal(len, 2);
    assert_int_equal(data[0], 0xCD);
    assert_int_equal(data[1], 0xEF);
    s = kiln_sub_binary(m, b, 24, 0);
    assert_int_equal(kiln_get_bits(s, &data, &nbits), KILN_OK);
    assert_int_equal(nbits, 0);
    assert_true(kiln_sub_binary(m, b, 20, 5) == KILN_NONE);
    assert_true(kiln_sub_binary(m, b, 25, 0) == KILN_NONE);
    assert_true(kiln_sub_binary(m, kiln_small(1), 0, 0) == KILN_NONE);

    /* Unaligned sub-binary of a large refcounted binary is a fresh copy
     * (also refcounted, being large) with correct bits. */
    uint8_t big[200];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7 + 1);
    kiln_term lb = kiln_binary(m, big, sizeof big);
    kiln_term us = kiln_sub_binary(m, lb, 3, 8 * 100 + 5);
    assert_int_equal(kiln_get_bits(us, &data, &nbits), KILN_OK);
    assert_int_equal(nbits, 805);
    assert_true(kiln_binary_box(us)->owner != kiln_binary_box(lb)->owner);
    for (size_t i = 0; i < 100; i++)
        assert_int_equal(data[i], (uint8_t)((big[i] << 3) | (big[i + 1] >> 5)));
    assert_int_equal(data[100], (uint8_t)((big[100] << 3) & 0xF8));
    /* A sub-binary of a sub-binary whose parent is in another message. */
    kiln_msg *m2 = kiln_msg_new(64);
    kiln_term ss = kiln_sub_binary(m2, us, 5, 8);
    assert_int_equal(kiln_get_bits(ss, &data, &nbits), KILN_OK);
    assert_int_equal(nbits, 8);
    uint8_t expect = big[1]; /* bits 3+5 .. 3+5+8 of big */
    kiln_msg_free(m);
    assert_int_equal(data[0], expect);
    kiln_msg_free(m2);
}

static void test_pids_ports_refs_funs(void **state)
{
    (void)state;
    kiln_msg *m = kiln_msg_new(64);
    kiln_term node = kiln_atom_c("a@host");
    kiln_term p = kiln_ext_pid(m, node, 12, 3, 7);
    assert_true(kiln_is_pid(p));
    assert_int_equal(kiln_type_of(p), KILN_T_PID);
    kiln_term n;
    uint32_t id, serial, creation;
    assert_int_equal(kiln_get_ext_pid(p, &n, &id, &serial, &creation), KILN_OK);
    assert_true(n == node);
    assert_int_equal(id, 12);
    assert_int_equal(serial, 3);
    assert_int_equal(creation, 7);
    kiln_term lp = kiln_local_pid(99, 5);
    assert_int_equal(kiln_type_of(lp), KILN_T_PID);
    n = KILN_ATOM_OK;
    creation = 77;
    assert_int_equal(kiln_get_ext_pid(lp, &n, &id, &serial, &creation), KILN_OK);
    assert_int_equal(id, 99);
    assert_int_equal(serial, 5);
    assert_true(n == KILN_ATOM_OK); /* local: the caller supplies node and creation */
    assert_int_equal(creation, 77);
    assert_true(kiln_ext_pid(m, kiln_small(1), 1, 1, 1) == KILN_NONE);
    assert_int_equal(kiln_get_ext_pid(KILN_NIL, &n, &id, &serial, &creation), KILN_EBADARG);

    kiln_term port = kiln_port(m, node, UINT64_C(0x123456789), 2);
    assert_int_equal(kiln_type_of(port), KILN_T_PORT);
    uint64_t pid64;
    assert_int_equal(kiln_get_port(port, &n, &pid64, &creation), KILN_OK);
    assert_true(pid64 == UINT64_C(0x123456789));
    assert_int_equal(creation, 2);

    uint32_t words[3] = {1, 2, 3};
    kiln_term ref = kiln_ref(m, node, 9, words, 3);
    assert_true(kiln_is_ref(ref));
    assert_int_equal(kiln_type_of(ref), KILN_T_REF);
    uint32_t out[KILN_REF_MAX_WORDS] = {0};
    size_t nw;
    assert_int_equal(kiln_get_ref(ref, &n, &creation, out, &nw), KILN_OK);
    assert_int_equal(nw, 3);
    assert_int_equal(creation, 9);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 2);
    assert_int_equal(out[2], 3);
    assert_true(kiln_ref(m, node, 0, words, 0) == KILN_NONE);
    uint32_t six[6] = {0};
    assert_true(kiln_ref(m, node, 0, six, 6) == KILN_NONE);

    kiln_term ex = kiln_export(m, kiln_atom_c("lists"), kiln_atom_c("map"), 2);
    assert_int_equal(kiln_type_of(ex), KILN_T_FUN);
    kiln_term mod, fun;
    unsigned arity;
    assert_int_equal(kiln_get_export(ex, &mod, &fun, &arity), KILN_OK);
    assert_true(mod == kiln_atom_c("lists"));
    assert_true(fun == kiln_atom_c("map"));
    assert_int_equal(arity, 2);
    assert_true(kiln_export(m, mod, fun, 256) == KILN_NONE);

    /* NEW_FUN_EXT of fun e:'-main/0-fun-0-'/0: module e, OldIndex 0, OldUniq 114186241. */
    uint8_t fb[64] = {0};
    size_t k = 4;
    fb[k++] = 0;                       /* arity */
    for (int i = 0; i < 16; i++)
        fb[k++] = (uint8_t)i;          /* uniq */
    k += 4;                            /* index */
    k += 4;                            /* numfree */
    fb[k++] = 119, fb[k++] = 1, fb[k++] = 'e';
    fb[k++] = 97, fb[k++] = 0;
    fb[k++] = 98, fb[k++] = 0x06, fb[k++] = 0xCE, fb[k++] = 0x58, fb[k++] = 0x01;
    fb[k++] = 88, fb[k++] = 119, fb[k++] = 1, fb[k++] = 'n';
    k += 12;                           /* id, serial, creation */
    fb[3] = (uint8_t)k;
    kiln_term f = kiln_fun_opaque(m, fb, k);
    assert_int_equal(kiln_type_of(f), KILN_T_FUN);
    const uint8_t *eb;
    size_t elen;
    assert_int_equal(kiln_get_fun(f, &eb, &elen), KILN_OK);
    assert_int_equal(elen, k);
    assert_memory_equal(eb, fb, k);
    assert_true(kiln_fun_box(f)->module == kiln_atom_c("e"));
    assert_int_equal(kiln_fun_box(f)->old_uniq, 114186241);
    assert_true(kiln_fun_opaque(m, fb, k - 1) == KILN_NONE); /* Size mismatch */
    assert_true(kiln_fun_opaque(m, fb, 10) == KILN_NONE);
    assert_int_equal(kiln_get_fun(ex, &eb, &elen), KILN_EBADARG);
    kiln_msg_free(m);
}

static void test_type_of(void **state)
{
    (void)state;
    assert_int_equal(kiln_type_of(kiln_small(1)), KILN_T_INTEGER);
    assert_int_equal(kiln_type_of(KILN_ATOM_OK), KILN_T_ATOM);
    assert_int_equal(kiln_type_of(KILN_NONE), KILN_T_INVALID);
    assert_int_equal(kiln_type_of(0), KILN_T_INVALID);
}

/* Builds {N, [N, "str", <<big>>], #{k => {N}}} nested depth times. */
static kiln_term nested(kiln_msg *m, int depth, kiln_term big)
{
    kiln_term t = KILN_NIL;
    for (int i = 0; i < depth; i++) {
        kiln_term mp = kiln_map(m, 1, (kiln_term[]){kiln_atom_c("k")}, (kiln_term[]){kiln_tuple(m, 1, kiln_int(m, INT64_MAX - i))});
        t = kiln_tuple(m, 3, kiln_small(i),
                       kiln_list(m, 4, kiln_small(i), kiln_string(m, "str", 3), big, t), mp);
    }
    return t;
}

static void test_copy(void **state)
{
    (void)state;
    kiln_msg *a = kiln_msg_new(64), *b = kiln_msg_new(64), *c = kiln_msg_new(64);
    uint8_t bytes[100];
    memset(bytes, 0x5A, sizeof bytes);
    kiln_term big = kiln_binary(a, bytes, sizeof bytes);
    kiln_term small_bin = kiln_binary(a, "xy", 2);
    kiln_term t = kiln_tuple(a, 2, nested(a, 50, big), small_bin);
    kiln_term expect = kiln_tuple(c, 2, nested(c, 50, kiln_binary(c, bytes, sizeof bytes)),
                                  kiln_binary(c, "xy", 2));
    kiln_term copy = kiln_term_copy(b, t);
    assert_true(copy != KILN_NONE);
    assert_true(copy != t);
    assert_true(kiln_term_eq(copy, t));
    kiln_msg_free(a); /* the copy must not refer into a */
    assert_true(kiln_term_eq(copy, expect));
    assert_true(kiln_term_hash(copy) == kiln_term_hash(expect));
    /* Immediates copy as themselves; NONE stays NONE. */
    assert_true(kiln_term_copy(b, kiln_small(5)) == kiln_small(5));
    assert_true(kiln_term_copy(b, KILN_ATOM_OK) == KILN_ATOM_OK);
    assert_true(kiln_term_copy(b, kiln_local_pid(1, 2)) == kiln_local_pid(1, 2));
    assert_true(kiln_term_copy(b, KILN_NONE) == KILN_NONE);
    kiln_msg_free(b);
    kiln_msg_free(c);
}

/* Lists whose heads need no copying are copied a run of cells at a time:
 * runs broken by a boxed head, improper tails (immediate and boxed), and
 * runs longer than one pass takes must all come out equal and whole. */
static void test_copy_lists_of_immediates(void **state)
{
    (void)state;
    kiln_msg *a = kiln_msg_new(64), *b = kiln_msg_new(64);
    kiln_term cases[8];
    size_t n = 0;
    cases[n++] = kiln_string(a, "hello world", 11);
    cases[n++] = kiln_build(a, "[1,2,{x},3,4,5|six]");
    cases[n++] = kiln_build(a, "[a,b|{c,d}]");
    cases[n++] = kiln_build(a, "[1|2]");
    cases[n++] = kiln_build(a, "[[1,2],[3,4],\"ab\"|[]]");
    kiln_term big = KILN_NIL, tail = kiln_tuple(a, 1, KILN_ATOM_OK);
    for (int i = 0; i < 10000; i++)
        big = kiln_cons(a, i == 5000 ? kiln_tuple(a, 1, kiln_small(i)) : kiln_small(i), i == 0 ? tail : big);
    cases[n++] = big;
    kiln_term copies[8];
    for (size_t i = 0; i < n; i++) {
        assert_true(cases[i] != KILN_NONE);
        copies[i] = kiln_term_copy(b, cases[i]);
        assert_true(copies[i] != KILN_NONE);
        assert_true(kiln_term_eq(copies[i], cases[i]));
    }
    /* A copy lays its cells out one after the other, which the next copy
     * steps through by address (kiln_cons above laid them out backwards). */
    kiln_msg *b2 = kiln_msg_new(64);
    for (size_t i = 0; i < n; i++) {
        kiln_term again = kiln_term_copy(b2, copies[i]);
        assert_true(again != KILN_NONE);
        assert_true(kiln_term_eq(again, cases[i]));
    }
    kiln_msg_free(b2);
    /* Built again after a is gone: the copies hold nothing of a. */
    kiln_msg_free(a);
    kiln_msg *c = kiln_msg_new(64);
    assert_true(kiln_term_eq(copies[0], kiln_string(c, "hello world", 11)));
    assert_true(kiln_term_eq(copies[1], kiln_build(c, "[1,2,{x},3,4,5|six]")));
    assert_true(kiln_term_eq(copies[2], kiln_build(c, "[a,b|{c,d}]")));
    assert_true(kiln_term_eq(copies[3], kiln_build(c, "[1|2]")));
    assert_true(kiln_term_eq(copies[4], kiln_build(c, "[[1,2],[3,4],\"ab\"]")));
    kiln_term l = copies[5];
    for (int i = 9999; i >= 0; i--, l = kiln_tl(l)) {
        assert_true(kiln_is_cons(l));
        kiln_term h = kiln_hd(l);
        assert_true(i == 5000 ? kiln_term_eq(h, kiln_tuple(c, 1, kiln_small(i))) : h == kiln_small(i));
    }
    assert_true(kiln_term_eq(l, kiln_tuple(c, 1, KILN_ATOM_OK)));
    kiln_msg_free(b);
    kiln_msg_free(c);
}

static void test_copy_long_and_deep(void **state)
{
    (void)state;
    kiln_msg *a = kiln_msg_new(64), *b = kiln_msg_new(64);
    enum { LEN = 2000000, DEPTH = 100000 };
    kiln_term l = KILN_NIL;
    for (int i = 0; i < LEN; i++)
        l = kiln_cons(a, kiln_tuple(a, 1, kiln_small(i)), l);
    kiln_term d = KILN_NIL;
    for (int i = 0; i < DEPTH; i++)
        d = kiln_cons(a, d, KILN_NIL);
    kiln_term both = kiln_tuple(a, 2, l, d);
    kiln_term c = kiln_term_copy(b, both);
    assert_true(c != KILN_NONE);
    kiln_msg_free(a);
    kiln_term cl = kiln_tuple_get(c, 0);
    assert_int_equal(kiln_list_length(cl), LEN);
    assert_true(kiln_tuple_get(kiln_hd(cl), 0) == kiln_small(LEN - 1));
    kiln_term cd = kiln_tuple_get(c, 1);
    int depth = 0;
    while (kiln_is_cons(cd)) {
        cd = kiln_hd(cd);
        depth++;
    }
    assert_int_equal(depth, DEPTH);
    kiln_msg_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_and_big_ints),
        cmocka_unit_test(test_bigint_normalises),
        cmocka_unit_test(test_float),
        cmocka_unit_test(test_tuples),
        cmocka_unit_test(test_lists),
        cmocka_unit_test(test_maps),
        cmocka_unit_test(test_small_binary_inline),
        cmocka_unit_test(test_large_binary_refcounted),
        cmocka_unit_test(test_binary_from_bin),
        cmocka_unit_test(test_bitstrings_and_sub_binaries),
        cmocka_unit_test(test_pids_ports_refs_funs),
        cmocka_unit_test(test_type_of),
        cmocka_unit_test(test_copy),
        cmocka_unit_test(test_copy_lists_of_immediates),
        cmocka_unit_test(test_copy_long_and_deep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
