/* Erlang term order, =:= versus ==, map-key order, hashing, and deep or
 * long terms. Expected orders were checked against erl (OTP 25). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"
#include "runtime/message.h"

static kiln_msg *m;

static int setup(void **state)
{
    (void)state;
    m = kiln_msg_new(1024);
    return m ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    kiln_msg_free(m);
    return 0;
}

static kiln_term A(const char *s) { return kiln_atom_c(s); }
static kiln_term F(double d) { return kiln_float(m, d); }
static kiln_term I(int64_t v) { return kiln_int(m, v); }
static kiln_term B(const char *s, size_t n) { return kiln_binary(m, s, n); }

static kiln_term pow2(unsigned k, bool neg)
{
    uint64_t d[20] = {0};
    d[k / 64] = (uint64_t)1 << (k % 64);
    return kiln_bigint(m, neg, d, k / 64 + 1);
}

/* Each term strictly less than the next, in both directions. */
static void assert_ascending(const kiln_term *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++) {
            int c = kiln_term_cmp(t[i], t[j]);
            if ((i < j && c >= 0) || (i > j && c <= 0) || (i == j && c != 0)) {
                char x[128], y[128];
                kiln_term_print(x, sizeof x, t[i]);
                kiln_term_print(y, sizeof y, t[j]);
                print_error("order broken: %s vs %s gives %d\n", x, y, c);
            }
            if (i < j)
                assert_true(c < 0);
            else if (i > j)
                assert_true(c > 0);
            else
                assert_int_equal(c, 0);
        }
    }
}

static void test_type_order(void **state)
{
    (void)state;
    uint32_t w[1] = {1};
    uint8_t funb[40] = {0, 0, 0, 40};
    funb[29] = 119, funb[30] = 1, funb[31] = 'z';
    funb[32] = 97, funb[33] = 0, funb[34] = 97, funb[35] = 0;
    kiln_term order[] = {
        I(-5),
        F(1.5),
        I(2),
        A("a"),
        kiln_ref(m, KILN_ATOM_NONODE, 0, w, 1),
        kiln_fun_opaque(m, funb, 40),
        kiln_export(m, A("lists"), A("map"), 2),
        kiln_port(m, KILN_ATOM_NONODE, 1, 0),
        kiln_local_pid(1, 0),
        kiln_tuple(m, 0),
        kiln_tuple(m, 1, I(0)),
        kiln_map(m, 0, NULL, NULL),
        KILN_NIL,
        kiln_list(m, 1, I(0)),
        B("", 0),
        kiln_bitstring(m, "\x00", 1),
        B("a", 1),
    };
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        assert_true(order[i] != KILN_NONE);
    assert_ascending(order, sizeof order / sizeof order[0]);
}

static void test_numbers(void **state)
{
    (void)state;
    assert_int_equal(kiln_term_cmp(I(1), F(1.0)), 0);
    assert_false(kiln_term_eq(I(1), F(1.0)));
    assert_true(kiln_term_cmp(I(2), F(1.5)) > 0);
    assert_true(kiln_term_cmp(I(1), F(1.5)) < 0);
    assert_true(kiln_term_cmp(I(-1), F(-0.5)) < 0);
    assert_true(kiln_term_cmp(I(0), F(-0.0)) == 0);
    assert_true(kiln_term_eq(F(0.0), F(-0.0)));
    assert_true(kiln_term_hash(F(0.0)) == kiln_term_hash(F(-0.0)));
    assert_true(kiln_term_cmp(F(0.5), F(0.25)) > 0);
    /* Exact (map-key) order: all integers before all floats, as BEAM. */
    assert_true(kiln_term_cmp_exact(I(1), F(1.0)) < 0);
    assert_true(kiln_term_cmp_exact(F(1.0), I(1)) > 0);
    assert_true(kiln_term_cmp_exact(I(2), F(1.5)) < 0);
    assert_true(kiln_term_cmp_exact(I(1), I(2)) < 0);
    assert_true(kiln_term_cmp_exact(F(0.5), F(1.5)) < 0);
    assert_true(kiln_term_cmp_exact(I(5), A("a")) < 0);

    /* Bigs against smalls and each other. */
    kiln_term b64 = pow2(64, false), nb64 = pow2(64, true), b200 = pow2(200, false);
    assert_true(kiln_term_cmp(b64, I(INT64_MAX)) > 0);
    assert_true(kiln_term_cmp(nb64, I(INT64_MIN)) < 0);
    assert_true(kiln_term_cmp(nb64, b64) < 0);
    assert_true(kiln_term_cmp(b200, b64) > 0);
    assert_true(kiln_term_cmp(pow2(200, true), nb64) < 0);
    assert_true(kiln_term_cmp(I(KILN_SMALL_MAX + 1), I(KILN_SMALL_MAX)) > 0);
    assert_true(kiln_term_cmp(I(KILN_SMALL_MIN - 1), I(KILN_SMALL_MIN)) < 0);
    assert_true(kiln_term_eq(I(INT64_MAX), kiln_uint(m, INT64_MAX)));

    /* Integers against floats by exact value. */
    assert_int_equal(kiln_term_cmp(b64, F(18446744073709551616.0)), 0);
    uint64_t d[2] = {1, 1}; /* 2^64 + 1 */
    kiln_term b64p1 = kiln_bigint(m, false, d, 2);
    assert_true(kiln_term_cmp(b64p1, F(18446744073709551616.0)) > 0);
    assert_true(kiln_term_cmp(F(18446744073709551616.0), b64p1) < 0);
    kiln_term nb64p1 = kiln_bigint(m, true, d, 2);
    assert_true(kiln_term_cmp(nb64p1, F(-18446744073709551616.0)) < 0);
    assert_int_equal(kiln_term_cmp(nb64, F(-18446744073709551616.0)), 0);
    /* 2^60 - 1 is small; the float 2^60 is just above it. */
    assert_true(kiln_term_cmp(I(KILN_SMALL_MAX), F(1152921504606846976.0)) < 0);
    assert_int_equal(kiln_term_cmp(I(KILN_SMALL_MAX + 1), F(1152921504606846976.0)), 0);
    /* 2^53 + 1 is not a double; the nearest double is 2^53. */
    assert_true(kiln_term_cmp(I(9007199254740993), F(9007199254740992.0)) > 0);
    assert_true(kiln_term_cmp(pow2(1100, false), F(1.7976931348623157e308)) > 0);
    assert_true(kiln_term_cmp(pow2(1100, true), F(-1.7976931348623157e308)) < 0);
    assert_true(kiln_term_cmp(pow2(1023, false), F(8.98846567431158e307)) == 0);
    assert_true(kiln_term_cmp(b200, F(1e300)) < 0);
    assert_true(kiln_term_cmp(I(3), F(2.9999999999999996)) > 0);
    assert_true(kiln_term_cmp(I(-3), F(-2.9999999999999996)) < 0);
    assert_true(kiln_term_cmp(I(0), F(1e-300)) < 0);
}

static void test_atoms_tuples_lists(void **state)
{
    (void)state;
    kiln_term atoms[] = {A(""), A("B"), A("a"), A("ab"), A("b"), A("z"), A("\xC3\xA9"), A("\xE6\x97\xA5")};
    assert_ascending(atoms, sizeof atoms / sizeof atoms[0]);
    kiln_term tuples[] = {
        kiln_tuple(m, 0),
        kiln_tuple(m, 1, A("z")),
        kiln_tuple(m, 2, I(1), I(2)),
        kiln_tuple(m, 2, I(1), I(3)),
        kiln_tuple(m, 2, A("a"), I(0)),
    };
    assert_ascending(tuples, sizeof tuples / sizeof tuples[0]);
    kiln_term lists[] = {
        KILN_NIL,
        kiln_cons(m, I(1), I(2)),            /* [1|2] < [1]: 2 < [] */
        kiln_list(m, 1, I(1)),
        kiln_list(m, 2, I(1), I(2)),
        kiln_list(m, 3, I(1), I(2), I(0)),
        kiln_list(m, 2, I(1), I(3)),
        kiln_list(m, 1, A("a")),
    };
    assert_ascending(lists, sizeof lists / sizeof lists[0]);
    /* == is recursive: {1} == {1.0}, [1] == [1.0], but not =:=. */
    assert_int_equal(kiln_term_cmp(kiln_tuple(m, 1, I(1)), kiln_tuple(m, 1, F(1.0))), 0);
    assert_int_equal(kiln_term_cmp(kiln_list(m, 1, I(1)), kiln_list(m, 1, F(1.0))), 0);
    assert_false(kiln_term_eq(kiln_list(m, 1, I(1)), kiln_list(m, 1, F(1.0))));
    assert_true(kiln_term_cmp_exact(kiln_tuple(m, 1, I(1)), kiln_tuple(m, 1, F(0.5))) < 0);
    assert_true(kiln_term_eq(kiln_string(m, "abc", 3), kiln_list(m, 3, I('a'), I('b'), I('c'))));
}

static kiln_term map1(kiln_term k, kiln_term v) { return kiln_map(m, 1, &k, &v); }

static void test_maps(void **state)
{
    (void)state;
    kiln_term k2[2] = {A("a"), A("b")}, v2[2] = {I(1), I(1)};
    kiln_term maps[] = {
        kiln_map(m, 0, NULL, NULL),
        map1(I(1), A("a")),
        map1(F(1.0), A("a")),   /* keys compared in map-key order even for == */
        map1(A("a"), I(1)),
        map1(A("a"), I(2)),
        map1(A("b"), I(1)),     /* #{a => 2} < #{b => 1}: keys before values */
        map1(A("z"), I(0)),
        kiln_map(m, 2, k2, v2), /* size first */
    };
    assert_ascending(maps, sizeof maps / sizeof maps[0]);
    assert_false(kiln_term_eq(map1(I(1), A("a")), map1(F(1.0), A("a"))));
    /* Values compare with == under cmp. */
    assert_int_equal(kiln_term_cmp(map1(A("a"), I(1)), map1(A("a"), F(1.0))), 0);
    assert_false(kiln_term_eq(map1(A("a"), I(1)), map1(A("a"), F(1.0))));
    /* Insertion order does not matter. */
    kiln_term k3[3] = {A("x"), I(3), kiln_tuple(m, 1, I(1))}, v3[3] = {I(1), I(2), I(3)};
    kiln_term r3[3] = {k3[2], k3[0], k3[1]}, w3[3] = {v3[2], v3[0], v3[1]};
    kiln_term ma = kiln_map(m, 3, k3, v3), mb = kiln_map(m, 3, r3, w3);
    assert_true(kiln_term_eq(ma, mb));
    assert_true(kiln_term_hash(ma) == kiln_term_hash(mb));
}

static void test_bitstrings(void **state)
{
    (void)state;
    /* erl: lists:sort([<<1:1>>, <<128>>, <<0:1>>, <<0>>, <<1,2>>, <<1>>]) */
    uint8_t one = 0x80, zero = 0;
    kiln_term bits[] = {
        kiln_bitstring(m, &zero, 1),
        B("\x00", 1),
        B("\x01", 1),
        B("\x01\x02", 2),
        kiln_bitstring(m, &one, 1),
        B("\x80", 1),
    };
    assert_ascending(bits, sizeof bits / sizeof bits[0]);
    uint8_t big[100];
    memset(big, 1, sizeof big);
    kiln_term rb = kiln_binary(m, big, sizeof big);
    kiln_term sb = kiln_sub_binary(m, rb, 0, 8 * 10);
    assert_true(kiln_term_eq(sb, B("\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01", 10)));
    assert_true(kiln_term_hash(sb) == kiln_term_hash(B("\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01", 10)));
    assert_true(kiln_term_cmp(sb, rb) < 0);
}

static void test_pids_refs_ports_funs(void **state)
{
    (void)state;
    /* erl: lists:sort of <0.5.1>, <0.6.0>, <0.4.2>: serial, then id. */
    kiln_term pids[] = {kiln_local_pid(6, 0), kiln_local_pid(5, 1), kiln_local_pid(4, 2)};
    assert_ascending(pids, 3);
    /* Remote pids order by node name against the local node 'nonode@nohost'. */
    kiln_term mixed[] = {
        kiln_ext_pid(m, A("a@host"), 100, 100, 1),
        kiln_local_pid(1, 0),
        kiln_ext_pid(m, A("z@host"), 0, 0, 1),
        kiln_ext_pid(m, A("z@host"), 1, 0, 1),
        kiln_ext_pid(m, A("z@host"), 0, 1, 1),
        kiln_ext_pid(m, A("z@host"), 0, 1, 2),
    };
    assert_ascending(mixed, sizeof mixed / sizeof mixed[0]);
    assert_true(kiln_term_eq(kiln_ext_pid(m, A("z@host"), 0, 1, 2), kiln_ext_pid(m, A("z@host"), 0, 1, 2)));

    /* Refs: node, creation, then numbers from the most significant. */
    uint32_t w1[3] = {5, 0, 1}, w2[3] = {0, 1, 1}, w3[3] = {0, 0, 2};
    kiln_term refs[] = {
        kiln_ref(m, A("a@h"), 9, w3, 3),
        kiln_ref(m, A("b@h"), 1, w1, 3),
        kiln_ref(m, A("b@h"), 1, w2, 3),
        kiln_ref(m, A("b@h"), 1, w3, 3),
        kiln_ref(m, A("b@h"), 2, w1, 3),
    };
    assert_ascending(refs, sizeof refs / sizeof refs[0]);
    /* High zero words do not count. */
    uint32_t short_w[1] = {7}, long_w[3] = {7, 0, 0};
    kiln_term rs = kiln_ref(m, A("b@h"), 1, short_w, 1), rl = kiln_ref(m, A("b@h"), 1, long_w, 3);
    assert_true(kiln_term_eq(rs, rl));
    assert_true(kiln_term_hash(rs) == kiln_term_hash(rl));

    kiln_term ports[] = {kiln_port(m, A("a@h"), 9, 1), kiln_port(m, A("b@h"), 1, 1), kiln_port(m, A("b@h"), 2, 1)};
    assert_ascending(ports, 3);

    /* erl: [fun erlang:abs/1, fun lists:foldl/3, fun lists:map/2] is sorted. */
    kiln_term funs[] = {
        kiln_export(m, A("erlang"), A("abs"), 1),
        kiln_export(m, A("lists"), A("foldl"), 3),
        kiln_export(m, A("lists"), A("map"), 2),
        kiln_export(m, A("lists"), A("map"), 3),
    };
    assert_ascending(funs, 4);
}

static void test_deep_nesting(void **state)
{
    (void)state;
    enum { DEPTH = 100000 };
    kiln_term a = I(1), b = I(1), c = I(2);
    for (int i = 0; i < DEPTH; i++) {
        a = kiln_tuple(m, 2, kiln_list(m, 1, a), I(i));
        b = kiln_tuple(m, 2, kiln_list(m, 1, b), I(i));
        c = kiln_tuple(m, 2, kiln_list(m, 1, c), I(i));
    }
    assert_true(a != b);
    assert_int_equal(kiln_term_cmp(a, b), 0);
    assert_true(kiln_term_eq(a, b));
    assert_true(kiln_term_hash(a) == kiln_term_hash(b));
    assert_true(kiln_term_cmp(a, c) < 0);
    assert_true(kiln_term_cmp(c, a) > 0);
    assert_false(kiln_term_eq(a, c));
    /* 1000 levels of maps with a float at the bottom: == but not =:=. */
    kiln_term x = I(1), y = F(1.0);
    for (int i = 0; i < 1000; i++) {
        x = map1(A("k"), x);
        y = map1(A("k"), y);
    }
    assert_int_equal(kiln_term_cmp(x, y), 0);
    assert_false(kiln_term_eq(x, y));
    assert_true(kiln_term_cmp_exact(x, y) < 0);
}

static void test_long_lists(void **state)
{
    (void)state;
    enum { LEN = 10000000 };
    kiln_msg *big = kiln_msg_new_words(4 * (size_t)LEN + 64);
    assert_non_null(big);
    kiln_term a = KILN_NIL, b = KILN_NIL;
    b = kiln_cons(big, I(1), b);
    a = kiln_cons(big, I(1), a);
    for (int i = 1; i < LEN; i++) {
        a = kiln_cons(big, kiln_small(i & 7), a);
        b = kiln_cons(big, kiln_small(i & 7), b);
    }
    assert_true(kiln_term_eq(a, b));
    assert_int_equal(kiln_term_cmp(a, b), 0);
    assert_true(kiln_term_hash(a) == kiln_term_hash(b));
    assert_int_equal(kiln_list_length(a), LEN);
    kiln_term a2 = kiln_cons(big, I(0), a), b2 = kiln_cons(big, I(0), kiln_cons(big, I(0), b));
    assert_true(kiln_term_cmp(a2, b2) > 0); /* [0, x...] vs [0, 0, ...], x = 7 */
    kiln_term a3 = kiln_cons(big, I(3), a);
    kiln_term b3 = kiln_cons(big, I(3), kiln_cons(big, I(8), b));
    assert_true(kiln_term_cmp(a3, b3) < 0);
    kiln_msg_free(big);
}

static void test_hash(void **state)
{
    (void)state;
    assert_true(kiln_term_hash(I(1)) != kiln_term_hash(F(1.0)));
    assert_true(kiln_term_hash(I(1)) != kiln_term_hash(I(2)));
    assert_true(kiln_term_hash(kiln_list(m, 2, I(1), I(2))) == kiln_term_hash(kiln_list(m, 2, I(1), I(2))));
    assert_true(kiln_term_hash(kiln_list(m, 2, I(1), I(2))) != kiln_term_hash(kiln_list(m, 2, I(2), I(1))));
    assert_true(kiln_term_hash(kiln_tuple(m, 2, I(1), I(2))) != kiln_term_hash(kiln_list(m, 2, I(1), I(2))));
    assert_true(kiln_term_hash(pow2(100, false)) == kiln_term_hash(pow2(100, false)));
    assert_true(kiln_term_hash(pow2(100, false)) != kiln_term_hash(pow2(100, true)));
    assert_true(kiln_term_hash(B("abc", 3)) == kiln_term_hash(B("abc", 3)));
    assert_true(kiln_term_hash(B("abc", 3)) != kiln_term_hash(B("abd", 3)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_order),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_atoms_tuples_lists),
        cmocka_unit_test(test_maps),
        cmocka_unit_test(test_bitstrings),
        cmocka_unit_test(test_pids_refs_ports_funs),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_long_lists),
        cmocka_unit_test(test_hash),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
