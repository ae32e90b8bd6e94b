/* Printing in Erlang syntax. Every expected string is what erl (OTP 25)
 * prints for the same term with io:format("~p"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "runtime/message.h"

static kiln_msg *m;
static char buf[1 << 16];

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

static const char *P(kiln_term t)
{
    size_t n = kiln_term_print(buf, sizeof buf, t);
    assert_int_equal(n, strlen(buf));
    return buf;
}

static kiln_term A(const char *s) { return kiln_atom_c(s); }
static kiln_term I(int64_t v) { return kiln_int(m, v); }
static kiln_term F(double d) { return kiln_float(m, d); }
static kiln_term S(const char *s) { return kiln_string(m, s, strlen(s)); }
static kiln_term Bn(const char *s, size_t n) { return kiln_binary(m, s, n); }

static void test_atoms(void **state)
{
    (void)state;
    assert_string_equal(P(A("EXIT")), "'EXIT'");
    assert_string_equal(P(A("hello world")), "'hello world'");
    assert_string_equal(P(A("[]")), "'[]'");
    assert_string_equal(P(KILN_NIL), "[]");
    assert_string_equal(P(A("a@b")), "a@b");
    assert_string_equal(P(A("A")), "'A'");
    assert_string_equal(P(A("aB")), "aB");
    assert_string_equal(P(A("a.b")), "'a.b'");
    assert_string_equal(P(A("if")), "'if'");
    assert_string_equal(P(A("fun")), "'fun'");
    assert_string_equal(P(A("receive")), "'receive'");
    assert_string_equal(P(A("cond")), "'cond'");
    assert_string_equal(P(A("maybe")), "maybe");
    assert_string_equal(P(A("spec")), "spec");
    assert_string_equal(P(A("")), "''");
    assert_string_equal(P(A("a\nb")), "'a\\nb'");
    assert_string_equal(P(A("it's")), "'it\\'s'");
    assert_string_equal(P(A("a\\b")), "'a\\\\b'");
    assert_string_equal(P(A("a\"b")), "'a\"b'");
    assert_string_equal(P(A("true")), "true");
    assert_string_equal(P(A("_x")), "'_x'");
    assert_string_equal(P(A("a_1")), "a_1");
    assert_string_equal(P(A("$gen_call")), "'$gen_call'");
    assert_string_equal(P(A("nonode@nohost")), "nonode@nohost");
    /* Latin-1 letters are name characters; others are escaped. */
    assert_string_equal(P(A("\xC3\xA9")), "\xC3\xA9");                 /* é */
    assert_string_equal(P(A("a\xC3\x88")), "a\xC3\x88");               /* aÈ */
    assert_string_equal(P(A("\xC3\x9F" "x")), "\xC3\x9F" "x");         /* ßx */
    assert_string_equal(P(A("A\xC3\xA9")), "'A\xC3\xA9'");
    assert_string_equal(P(A("a\xC3\xB7")), "'a\xC3\xB7'");             /* a÷ */
    assert_string_equal(P(A("a\xC2\xA0")), "'a\xC2\xA0'");             /* a, nbsp */
    assert_string_equal(P(A("\xCE\xB1\xCE\xB2")), "'\\x{3B1}\\x{3B2}'"); /* αβ */
    assert_string_equal(P(A("a\xCE\xB1")), "'a\\x{3B1}'");
    kiln_term nul;
    assert_int_equal(kiln_atom("a\0", 2, &nul), KILN_OK);
    assert_string_equal(P(nul), "'a\\000'");
    assert_string_equal(P(A("a\x01" "b")), "'a\\001b'");
    assert_string_equal(P(A("a\x7f")), "'a\\d'");
}

static void test_numbers(void **state)
{
    (void)state;
    assert_string_equal(P(I(0)), "0");
    assert_string_equal(P(I(-42)), "-42");
    assert_string_equal(P(I(KILN_SMALL_MAX)), "1152921504606846975");
    assert_string_equal(P(I(KILN_SMALL_MIN)), "-1152921504606846976");
    assert_string_equal(P(I(INT64_MIN)), "-9223372036854775808");
    assert_string_equal(P(kiln_uint(m, UINT64_MAX)), "18446744073709551615");
    uint64_t d[2] = {UINT64_C(0x46bec9b16e398115), UINT64_C(0x27e41b32)};
    assert_string_equal(P(kiln_bigint(m, false, d, 2)), "12345678901234567890123456789");
    assert_string_equal(P(kiln_bigint(m, true, d, 2)), "-12345678901234567890123456789");
    uint64_t p128[3] = {0, 0, 1};
    assert_string_equal(P(kiln_bigint(m, false, p128, 3)), "340282366920938463463374607431768211456");
    uint64_t p64[2] = {0, 1};
    assert_string_equal(P(kiln_bigint(m, false, p64, 2)), "18446744073709551616");

    static const struct {
        double v;
        const char *s;
    } floats[] = {
        {1.0e10, "1.0e10"}, {0.1, "0.1"}, {3.14, "3.14"}, {1.0, "1.0"}, {100.0, "100.0"},
        {123456789.0, "123456789.0"}, {1.0e15, "1.0e15"}, {1.0e16, "1.0e16"}, {1.0e20, "1.0e20"},
        {1.0e21, "1.0e21"}, {1.0e22, "1.0e22"}, {0.001, "0.001"}, {0.0001, "0.0001"},
        {1.0e-5, "1.0e-5"}, {1.234e-7, "1.234e-7"}, {-0.0, "-0.0"}, {0.0, "0.0"},
        {5.0e-324, "5.0e-324"}, {1.7976931348623157e308, "1.7976931348623157e308"}, {2.5, "2.5"},
        {1.5e300, "1.5e300"}, {12345678901234567890.0, "1.2345678901234567e19"},
        {0.30000000000000004, "0.30000000000000004"}, {1.0e100, "1.0e100"}, {-1.0, "-1.0"},
        {1.5e-10, "1.5e-10"}, {9007199254740992.0, "9.007199254740992e15"},
        {9007199254740990.0, "9007199254740990.0"}, {4503599627370497.0, "4503599627370497.0"},
        {11060247373580932.0, "1.1060247373580932e16"}, {1.23e17, "1.23e17"},
        {2215046975097656300.0, "2.2150469750976563e18"},
    };
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++)
        assert_string_equal(P(F(floats[i].v)), floats[i].s);
}

static void test_lists_and_strings(void **state)
{
    (void)state;
    assert_string_equal(P(S("abc")), "\"abc\"");
    assert_string_equal(P(kiln_list_v(m, 2, (kiln_term[]){I(97), I(98)}, I(99))), "[97,98|99]");
    assert_string_equal(P(kiln_list(m, 3, I(1), I(2), I(3))), "[1,2,3]");
    assert_string_equal(P(S("a\nb\t\"c\\")), "\"a\\nb\\t\\\"c\\\\\"");
    assert_string_equal(P(kiln_list(m, 1, I(228))), "\"\xC3\xA4\"");
    assert_string_equal(P(kiln_list(m, 2, I(160), I(255))), "\"\xC2\xA0\xC3\xBF\"");
    assert_string_equal(P(kiln_list(m, 1, I(1000))), "[1000]");
    assert_string_equal(P(kiln_list(m, 1, I(7))), "[7]");
    assert_string_equal(P(kiln_list(m, 1, I(127))), "[127]");
    assert_string_equal(P(kiln_list(m, 1, I(159))), "[159]");
    assert_string_equal(P(S("\x1b")), "\"\\e\"");
    assert_string_equal(P(S("\b\t\n\v\f\r\x1b ")), "\"\\b\\t\\n\\v\\f\\r\\e \"");
    assert_string_equal(P(S("a\"b'c")), "\"a\\\"b'c\"");
    assert_string_equal(P(kiln_list(m, 1, KILN_NIL)), "[[]]");
    assert_string_equal(P(kiln_cons(m, I(1), I(2))), "[1|2]");
    assert_string_equal(P(kiln_list_v(m, 2, (kiln_term[]){I(1), I(2)}, I(3))), "[1,2|3]");
    assert_string_equal(P(kiln_list(m, 2, S("ab"), A("x"))), "[\"ab\",x]");
    /* A string with an improper tail is a list. */
    assert_string_equal(P(kiln_list_v(m, 1, (kiln_term[]){I(97)}, S("b"))), "\"ab\"");
    assert_string_equal(P(kiln_cons(m, I(97), A("b"))), "[97|b]");
}

static void test_binaries(void **state)
{
    (void)state;
    assert_string_equal(P(Bn("abc", 3)), "<<\"abc\">>");
    assert_string_equal(P(Bn("\x01\x02\x03", 3)), "<<1,2,3>>");
    uint8_t b = 0x20;
    assert_string_equal(P(kiln_bitstring(m, &b, 3)), "<<1:3>>");
    assert_string_equal(P(kiln_bitstring(m, "ab\x20", 19)), "<<97,98,1:3>>");
    assert_string_equal(P(Bn("", 0)), "<<>>");
    assert_string_equal(P(Bn("a\nb\"", 4)), "<<\"a\\nb\\\"\">>");
    assert_string_equal(P(Bn("\xE4", 1)), "<<\"\xC3\xA4\">>");
    assert_string_equal(P(Bn("\xC3\xA9", 2)), "<<\"\xC3\x83\xC2\xA9\">>");
    assert_string_equal(P(Bn("\0", 1)), "<<0>>");
    assert_string_equal(P(Bn("abc\0", 4)), "<<97,98,99,0>>");
    assert_string_equal(P(kiln_bitstring(m, "\xFF\x80", 9)), "<<255,1:1>>");
    assert_string_equal(P(Bn("\x7f", 1)), "<<127>>");
    assert_string_equal(P(Bn("a'b", 3)), "<<\"a'b\">>");
    char big[100];
    memset(big, 'x', sizeof big);
    char expect[120] = "<<\"";
    memcpy(expect + 3, big, 100);
    strcpy(expect + 103, "\">>");
    assert_string_equal(P(Bn(big, 100)), expect);
}

static void test_compound(void **state)
{
    (void)state;
    kiln_term k[3] = {A("a"), S("b"), kiln_tuple(m, 1, A("x"))};
    kiln_term v[3] = {I(1), Bn("c", 1), kiln_cons(m, I(1), I(2))};
    assert_string_equal(P(kiln_map(m, 3, k, v)), "#{a => 1,{x} => [1|2],\"b\" => <<\"c\">>}");
    assert_string_equal(P(kiln_map(m, 0, NULL, NULL)), "#{}");
    assert_string_equal(P(kiln_tuple(m, 0)), "{}");
    assert_string_equal(P(kiln_tuple(m, 3, A("a"), kiln_cons(m, I(1), I(2)),
                                     kiln_list_v(m, 2, (kiln_term[]){I(1), I(2)}, I(3)))),
                        "{a,[1|2],[1,2|3]}");
    kiln_term mk[5] = {I(2), F(1.0), I(1), F(3.0), F(0.5)};
    kiln_term mv[5] = {A("a"), A("b"), A("c"), A("d"), A("e")};
    /* erl: #{2 => a, 1.0 => b, 1 => c, 3.0 => d, 0.5 => e} */
    assert_string_equal(P(kiln_map(m, 5, mk, mv)), "#{1 => c,2 => a,0.5 => e,1.0 => b,3.0 => d}");
    assert_string_equal(P(kiln_tuple(m, 2, KILN_ATOM_OK, kiln_list(m, 3, I(1), I(2), I(3)))), "{ok,[1,2,3]}");
}

static void test_pids_refs_funs(void **state)
{
    (void)state;
    assert_string_equal(P(kiln_local_pid(12, 0)), "<0.12.0>");
    assert_string_equal(P(kiln_local_pid(4294967295u, 3)), "<0.4294967295.3>");
    assert_string_equal(P(kiln_ext_pid(m, A("a@host"), 5, 1, 2)), "<a@host.5.1>");
    uint32_t w[3] = {145897, 3163291649u, 665688845};
    assert_string_equal(P(kiln_ref(m, KILN_ATOM_NONODE, 0, w, 3)), "#Ref<0.665688845.3163291649.145897>");
    assert_string_equal(P(kiln_ref(m, A("b@h"), 1, w, 3)), "#Ref<b@h.665688845.3163291649.145897>");
    assert_string_equal(P(kiln_port(m, KILN_ATOM_NONODE, 7, 0)), "#Port<0.7>");
    assert_string_equal(P(kiln_export(m, A("lists"), A("map"), 2)), "fun lists:map/2");
    assert_string_equal(P(kiln_export(m, A("Elixir.Foo"), A("bar baz"), 0)), "fun 'Elixir.Foo':'bar baz'/0");
    /* NEW_FUN_EXT of erl's fun in module e: #Fun<e.0.114186241>. */
    uint8_t fb[64] = {0};
    size_t k = 29;
    fb[k++] = 119, fb[k++] = 1, fb[k++] = 'e';
    fb[k++] = 97, fb[k++] = 0;
    fb[k++] = 98, fb[k++] = 0x06, fb[k++] = 0xCE, fb[k++] = 0x58, fb[k++] = 0x01;
    fb[3] = (uint8_t)k;
    assert_string_equal(P(kiln_fun_opaque(m, fb, k)), "#Fun<e.0.114186241>");
}

static void test_truncation_and_fprint(void **state)
{
    (void)state;
    kiln_term t = kiln_tuple(m, 2, KILN_ATOM_OK, S("hello"));
    char small[8];
    memset(small, 'Z', sizeof small);
    assert_int_equal(kiln_term_print(small, sizeof small, t), strlen("{ok,\"hello\"}"));
    assert_string_equal(small, "{ok,\"he");
    assert_int_equal(kiln_term_print(NULL, 0, t), 12);
    char one[1] = {'Z'};
    assert_int_equal(kiln_term_print(one, 1, t), 12);
    assert_int_equal(one[0], '\0');
    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(kiln_term_fprint(f, t), KILN_OK);
    rewind(f);
    char rd[32] = {0};
    assert_int_equal(fread(rd, 1, sizeof rd - 1, f), 12);
    assert_string_equal(rd, "{ok,\"hello\"}");
    fclose(f);
}

static void test_deep_and_long(void **state)
{
    (void)state;
    enum { DEPTH = 100000, LEN = 1000000 };
    kiln_term d = KILN_NIL;
    for (int i = 0; i < DEPTH; i++)
        d = kiln_list(m, 1, d);
    size_t n = kiln_term_print(NULL, 0, d);
    assert_int_equal(n, 2 * (size_t)DEPTH + 2);
    kiln_term t = kiln_tuple(m, 1, KILN_NIL);
    for (int i = 0; i < 1000; i++)
        t = kiln_tuple(m, 1, t);
    char *out = malloc(4096);
    assert_int_equal(kiln_term_print(out, 4096, t), 1001 * 2 + 2);
    assert_memory_equal(out, "{{{{", 4);
    assert_memory_equal(out + 1001, "[]}}}}", 6);
    free(out);
    kiln_term l = KILN_NIL;
    for (int i = 0; i < LEN; i++)
        l = kiln_cons(m, I(5), l);
    /* "[5,5,...,5]" */
    assert_int_equal(kiln_term_print(NULL, 0, kiln_cons(m, I(1000), l)), 6 + 2 * (size_t)LEN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_atoms),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_lists_and_strings),
        cmocka_unit_test(test_binaries),
        cmocka_unit_test(test_compound),
        cmocka_unit_test(test_pids_refs_funs),
        cmocka_unit_test(test_truncation_and_fprint),
        cmocka_unit_test(test_deep_and_long),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
