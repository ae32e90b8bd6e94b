/* Reverse round trip: terms built in C, encoded by Kiln, are decoded by erl
 * (check_reverse.escript) and compared with the value the expected Erlang
 * expression evaluates to.
 *
 * Record format: ExpLen:32, Expression (UTF-8 Erlang source), Len:32, Bytes.
 * Usage: test_etf_reverse OUT.bin */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/etf.h"
#include "kiln/kiln.h"

static FILE *out;
static int failures, count;

static void put32(uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    fwrite(b, 1, 4, out);
}

static void record(const char *expect, const uint8_t *bytes, size_t len)
{
    put32((uint32_t)strlen(expect));
    fwrite(expect, 1, strlen(expect), out);
    put32((uint32_t)len);
    fwrite(bytes, 1, len, out);
    count++;
}

/* Encodes t three ways: term_to_binary defaults, the given options, and the
 * distribution encoder (UTF-8 atoms, large binaries lent as iovecs). */
static void emit_opts(const char *expect, kiln_term t, int compressed, int minor)
{
    if (t == KILN_NONE) {
        fprintf(stderr, "could not build the term for %s\n", expect);
        failures++;
        return;
    }
    kiln_t2b_opts o = {compressed, minor, NULL};
    uint8_t *b;
    size_t n;
    int rc = kiln_etf_term_to_bytes(t, &o, &b, &n);
    if (rc != KILN_OK) {
        fprintf(stderr, "encode failed for %s: %s\n", expect, kiln_strerror(rc));
        failures++;
        return;
    }
    record(expect, b, n);
    free(b);
}

static void emit(const char *expect, kiln_term t)
{
    emit_opts(expect, t, 0, 1);
    if (t == KILN_NONE)
        return;
    kiln_etf_enc_opts eo = KILN_ETF_ENC_OPTS_DIST;
    eo.iov_threshold = 100;
    kiln_etf_enc *e = kiln_etf_enc_new(&eo);
    if (!e || kiln_etf_enc_raw(e, "\x83", 1) != KILN_OK || kiln_etf_enc_term(e, t) != KILN_OK) {
        fprintf(stderr, "dist encode failed for %s\n", expect);
        failures++;
        kiln_etf_enc_free(e);
        return;
    }
    size_t n = kiln_etf_enc_size(e);
    uint8_t *b = malloc(n);
    size_t niov, off = 0;
    const struct iovec *iov = kiln_etf_enc_iov(e, &niov);
    for (size_t i = 0; i < niov; i++) {
        memcpy(b + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    if (off != n) {
        fprintf(stderr, "iovecs cover %zu of %zu bytes for %s\n", off, n, expect);
        failures++;
    }
    record(expect, b, n);
    free(b);
    kiln_etf_enc_free(e);
}

static kiln_term atom(const char *s) { return kiln_atom_c(s); }

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT.bin\n", argv[0]);
        return 2;
    }
    if (kiln_atoms_init() != KILN_OK)
        return 1;
    out = fopen(argv[1], "wb");
    if (!out) {
        perror(argv[1]);
        return 1;
    }
    kiln_msg *m = kiln_msg_new(1 << 16);

    /* integers at every encoding boundary */
    emit("0", kiln_small(0));
    emit("255", kiln_small(255));
    emit("256", kiln_small(256));
    emit("-1", kiln_small(-1));
    emit("2147483647", kiln_int(m, 2147483647));
    emit("2147483648", kiln_int(m, 2147483648LL));
    emit("-2147483648", kiln_int(m, -2147483648LL));
    emit("-2147483649", kiln_int(m, -2147483649LL));
    emit("(1 bsl 60) - 1", kiln_int(m, KILN_SMALL_MAX));
    emit("1 bsl 60", kiln_int(m, KILN_SMALL_MAX + 1));
    emit("-(1 bsl 60)", kiln_int(m, KILN_SMALL_MIN));
    emit("-(1 bsl 60) - 1", kiln_int(m, KILN_SMALL_MIN - 1));
    emit("-9223372036854775808", kiln_int(m, INT64_MIN));
    emit("18446744073709551615", kiln_uint(m, UINT64_MAX));
    {
        uint64_t d[4] = {0, 0, 0, 1};
        emit("1 bsl 192", kiln_bigint(m, false, d, 4));
        emit("-(1 bsl 192)", kiln_bigint(m, true, d, 4));
        uint64_t big[40];
        for (int i = 0; i < 40; i++)
            big[i] = UINT64_MAX;
        emit("(1 bsl 2560) - 1", kiln_bigint(m, false, big, 40));
    }

    /* floats */
    emit("0.0", kiln_float(m, 0.0));
    emit("-0.0", kiln_float(m, -0.0));
    emit("3.14", kiln_float(m, 3.14));
    emit("1.7976931348623157e308", kiln_float(m, DBL_MAX));
    emit("5.0e-324", kiln_float(m, 5e-324));
    emit_opts("-2.5", kiln_float(m, -2.5), 0, 0);
    emit_opts("0.1", kiln_float(m, 0.1), 0, 0);
    emit_opts("1.0e300", kiln_float(m, 1e300), 0, 0);

    /* atoms */
    emit("ok", atom("ok"));
    emit("''", atom(""));
    emit("'hello world'", atom("hello world"));
    emit("'äö'", atom("äö"));
    emit("'日本'", atom("日本"));
    emit_opts("'äö'", atom("äö"), 0, 2);
    emit_opts("'日本'", atom("日本"), 0, 0);
    {
        char s[256];
        memset(s, 'z', 255);
        s[255] = 0;
        emit("list_to_atom(lists:duplicate(255, $z))", atom(s));
        char u[2 * 255 + 1];
        for (int i = 0; i < 255; i++) {
            u[2 * i] = (char)0xC3;
            u[2 * i + 1] = (char)0xA4;
        }
        u[510] = 0;
        emit("list_to_atom(lists:duplicate(255, 228))", atom(u));
        emit_opts("list_to_atom(lists:duplicate(255, 228))", atom(u), 0, 2);
    }

    /* tuples, lists */
    emit("{}", kiln_tuple(m, 0));
    emit("{1,two,\"three\"}", kiln_tuple(m, 3, kiln_small(1), atom("two"), kiln_string(m, "three", 5)));
    {
        kiln_term el[300];
        for (int i = 0; i < 300; i++)
            el[i] = kiln_small(i + 1);
        emit("list_to_tuple(lists:seq(1, 300))", kiln_tuple_v(m, 300, el));
        emit("lists:seq(1, 300)", kiln_list_v(m, 300, el, KILN_NIL));
        emit("lists:seq(1, 255) ++ [256 | 257]", kiln_list_v(m, 256, el, kiln_small(257)));
    }
    emit("[]", KILN_NIL);
    emit("\"abc\"", kiln_string(m, "abc", 3));
    emit("[1 | 2]", kiln_cons(m, kiln_small(1), kiln_small(2)));
    emit("[a, b | c]", kiln_cons(m, atom("a"), kiln_cons(m, atom("b"), atom("c"))));
    emit("[1000, 2000]", kiln_list(m, 2, kiln_small(1000), kiln_small(2000)));
    {
        kiln_msg *lm = kiln_msg_new(70000 * 16);
        kiln_term l = KILN_NIL;
        for (int i = 70000; i >= 1; i--)
            l = kiln_cons(lm, kiln_small(i), l);
        emit("lists:seq(1, 70000)", l);
        kiln_term d = atom("leaf");
        for (int i = 0; i < 1000; i++)
            d = kiln_tuple(lm, 1, d);
        emit("lists:foldl(fun(_, A) -> {A} end, leaf, lists:seq(1, 1000))", d);
        kiln_term dl = KILN_NIL;
        for (int i = 0; i < 1000; i++)
            dl = kiln_cons(lm, dl, KILN_NIL);
        emit("lists:foldl(fun(_, A) -> [A] end, [], lists:seq(1, 1000))", dl);
        kiln_msg_free(lm);
    }

    /* binaries */
    emit("<<>>", kiln_binary(m, "", 0));
    emit("<<1,2,3>>", kiln_binary(m, "\x01\x02\x03", 3));
    {
        uint8_t *big = malloc(10000);
        for (int i = 0; i < 10000; i++)
            big[i] = (uint8_t)i;
        kiln_term b = kiln_binary(m, big, 10000);
        emit("list_to_binary([I rem 256 || I <- lists:seq(0, 9999)])", b);
        emit_opts("list_to_binary([I rem 256 || I <- lists:seq(0, 9999)])", b, -1, 1);
        emit("binary:part(list_to_binary([I rem 256 || I <- lists:seq(0, 9999)]), 100, 5000)",
             kiln_sub_binary(m, b, 800, 5000 * 8));
        emit("begin <<_:3, R:4000/bits, _/bits>> = list_to_binary([I rem 256 || I <- lists:seq(0, 9999)]), R end",
             kiln_sub_binary(m, b, 3, 4000));
        emit("{list_to_binary([I rem 256 || I <- lists:seq(0, 9999)]), <<5:3>>}",
             kiln_tuple(m, 2, b, kiln_bitstring(m, "\xA0", 3)));
        free(big);
    }
    emit("<<5:3>>", kiln_bitstring(m, "\xBF", 3));
    emit("<<1, 2, 1:1>>", kiln_bitstring(m, "\x01\x02\xFF", 17));

    /* maps */
    {
        kiln_term k[100], v[100];
        emit("#{}", kiln_map(m, 0, k, v));
        k[0] = atom("a");
        v[0] = kiln_small(1);
        k[1] = atom("b");
        v[1] = kiln_list(m, 1, kiln_small(2));
        emit("#{a => 1, b => [2]}", kiln_map(m, 2, k, v));
        k[0] = kiln_small(1);
        k[1] = kiln_float(m, 1.0);
        k[2] = kiln_tuple(m, 2, atom("x"), atom("y"));
        v[2] = kiln_small(3);
        emit("#{1 => 1, 1.0 => [2], {x, y} => 3}", kiln_map(m, 3, k, v));
        for (int i = 0; i < 100; i++) {
            k[i] = kiln_small(i + 1);
            v[i] = kiln_small(2 * (i + 1));
        }
        emit("maps:from_list([{I, 2 * I} || I <- lists:seq(1, 100)])", kiln_map(m, 100, k, v));
        emit_opts("maps:from_list([{I, 2 * I} || I <- lists:seq(1, 100)])", kiln_map(m, 100, k, v), 9, 1);
    }

    /* pids, ports, refs, exports */
    emit("list_to_pid(\"<0.5.7>\")", kiln_local_pid(5, 7));
    emit("pid('kiln@remote', 123, 4, 16#DEADBEEF)", kiln_ext_pid(m, atom("kiln@remote"), 123, 4, 0xDEADBEEF));
    emit("pid('kiln@remote', 16#FFFFFFFF, 16#FFFFFFFF, 1)",
         kiln_ext_pid(m, atom("kiln@remote"), 0xFFFFFFFF, 0xFFFFFFFF, 1));
    emit("port('kiln@remote', 77, 16#DEADBEEF)", kiln_port(m, atom("kiln@remote"), 77, 0xDEADBEEF));
    emit("port('kiln@remote', 1 bsl 40, 5)", kiln_port(m, atom("kiln@remote"), 1ULL << 40, 5));
    {
        uint32_t w[5] = {1, 2, 3, 4, 5};
        emit("ref('kiln@remote', 16#CAFEBABE, [1, 2, 3])", kiln_ref(m, atom("kiln@remote"), 0xCAFEBABE, w, 3));
        emit("ref('kiln@remote', 9, [1, 2, 3, 4, 5])", kiln_ref(m, atom("kiln@remote"), 9, w, 5));
    }
    emit("fun lists:sum/1", kiln_export(m, atom("lists"), atom("sum"), 1));
    emit("fun 'ä':'ö'/0", kiln_export(m, atom("ä"), atom("ö"), 0));
    emit_opts("{'$gen_call', {list_to_pid(\"<0.5.7>\"), [alias | ref('kiln@remote', 3, [7, 8, 9])]}, {is_auth, 'c@h'}}",
              kiln_tuple(m, 3, atom("$gen_call"),
                         kiln_tuple(m, 2, kiln_local_pid(5, 7),
                                    kiln_cons(m, atom("alias"),
                                              kiln_ref(m, atom("kiln@remote"), 3, (const uint32_t[]){7, 8, 9}, 3))),
                         kiln_tuple(m, 2, atom("is_auth"), atom("c@h"))),
              -1, 2);
    {
        kiln_term l = KILN_NIL;
        for (int i = 0; i < 1000; i++)
            l = kiln_cons(m, kiln_tuple(m, 2, atom("hello"), atom("world")), l);
        emit_opts("lists:duplicate(1000, {hello, world})", l, -1, 1);
        emit_opts("lists:duplicate(1000, {hello, world})", l, 1, 2);
    }

    kiln_msg_free(m);
    fclose(out);
    printf("etf reverse: wrote %d Kiln encodings, %d build/encode failures\n", count, failures);
    return failures ? 1 : 0;
}
