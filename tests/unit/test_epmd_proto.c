/* EPMD wire format and the embedded server: every request and response
 * encodes to the bytes OTP's epmd/erl_epmd use, every parser takes input
 * byte by byte and rejects damage with its own error, and the server keeps
 * epmd's rules (duplicates refused, creations >= 4 and bumped, answers only
 * to valid requests, close/keep semantics). */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "dist/epmd_proto.h"

#define BYTES(...) (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})
#define U8(s) ((const uint8_t *)(s))

static kiln_epmd_node node_named(const char *name, uint16_t port)
{
    kiln_epmd_node n = {port, KILN_EPMD_NODE_NORMAL, KILN_EPMD_PROTO_TCP, 6, 5, U8(name), strlen(name), NULL, 0};
    return n;
}

static void assert_bytes(const uint8_t *got, size_t gn, const uint8_t *want, size_t wn)
{
    assert_int_equal(gn, wn);
    assert_memory_equal(got, want, wn);
}

static void test_alive2_req_encoding(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n;
    kiln_epmd_node nd = node_named("erl3", 0x1234);
    assert_int_equal(kiln_epmd_enc_alive2_req(buf, sizeof buf, &nd, &n), KILN_OK);
    assert_bytes(buf, n, BYTES(0, 17, 120, 0x12, 0x34, 77, 0, 0, 6, 0, 5, 0, 4, 'e', 'r', 'l', '3', 0, 0));
    /* Extra travels after its length; a hidden C node says 'H'. */
    nd.type = KILN_EPMD_NODE_HIDDEN;
    nd.extra = U8("xy");
    nd.extra_len = 2;
    assert_int_equal(kiln_epmd_enc_alive2_req(buf, sizeof buf, &nd, &n), KILN_OK);
    assert_bytes(buf, n, BYTES(0, 19, 120, 0x12, 0x34, 72, 0, 0, 6, 0, 5, 0, 4, 'e', 'r', 'l', '3', 0, 2, 'x', 'y'));
    /* Too small a buffer says how much is needed and writes nothing. */
    memset(buf, 0xAA, sizeof buf);
    assert_int_equal(kiln_epmd_enc_alive2_req(buf, 10, &nd, &n), KILN_ENOSPC);
    assert_int_equal(n, 21);
    assert_int_equal(buf[0], 0xAA);
    /* Names the wire cannot carry. */
    nd.name_len = 0;
    assert_int_equal(kiln_epmd_enc_alive2_req(buf, sizeof buf, &nd, &n), KILN_EBADNODE);
    nd = node_named("a\xff", 1);
    assert_int_equal(kiln_epmd_enc_alive2_req(buf, sizeof buf, &nd, &n), KILN_EBADUTF8);
    nd = node_named("ok", 1);
    nd.extra_len = KILN_EPMD_MAX_EXTRA + 1;
    nd.extra = U8("");
    assert_int_equal(kiln_epmd_enc_alive2_req(buf, sizeof buf, &nd, &n), KILN_EINVAL);
}

static void test_other_requests_encoding(void **state)
{
    (void)state;
    uint8_t buf[32];
    size_t n;
    assert_int_equal(kiln_epmd_enc_port_please2_req(buf, sizeof buf, U8("erl3"), 4, &n), KILN_OK);
    assert_bytes(buf, n, BYTES(0, 5, 122, 'e', 'r', 'l', '3'));
    assert_int_equal(kiln_epmd_enc_simple_req(buf, sizeof buf, KILN_EPMD_NAMES_REQ, &n), KILN_OK);
    assert_bytes(buf, n, BYTES(0, 1, 110));
    assert_int_equal(kiln_epmd_enc_simple_req(buf, sizeof buf, KILN_EPMD_DUMP_REQ, &n), KILN_OK);
    assert_bytes(buf, n, BYTES(0, 1, 100));
    assert_int_equal(kiln_epmd_enc_simple_req(buf, sizeof buf, KILN_EPMD_KILL_REQ, &n), KILN_OK);
    assert_bytes(buf, n, BYTES(0, 1, 107));
    assert_int_equal(kiln_epmd_enc_simple_req(buf, sizeof buf, KILN_EPMD_ALIVE2_REQ, &n), KILN_EINVAL);
    assert_int_equal(kiln_epmd_enc_stop_req(buf, sizeof buf, U8("x"), 1, &n), KILN_OK);
    assert_bytes(buf, n, BYTES(0, 2, 115, 'x'));
    assert_int_equal(kiln_epmd_enc_port_please2_req(buf, 3, U8("erl3"), 4, &n), KILN_ENOSPC);
    assert_int_equal(n, 7);
}

/* Every request parses the same whole or byte by byte, with NEED_MORE on
 * every proper prefix and *used = the whole frame. */
static void parse_incrementally(const uint8_t *b, size_t n, kiln_epmd_req *req)
{
    size_t used;
    for (size_t i = 0; i < n; i++)
        assert_int_equal(kiln_epmd_parse_req(b, i, req, &used), KILN_EPMD_NEED_MORE);
    assert_int_equal(kiln_epmd_parse_req(b, n, req, &used), KILN_OK);
    assert_int_equal(used, n);
}

static void test_request_parsing(void **state)
{
    (void)state;
    kiln_epmd_req r;
    uint8_t buf[64];
    size_t n, used;
    kiln_epmd_node nd = node_named("erl3", 4242);
    nd.extra = U8("ex");
    nd.extra_len = 2;
    assert_int_equal(kiln_epmd_enc_alive2_req(buf, sizeof buf, &nd, &n), KILN_OK);
    parse_incrementally(buf, n, &r);
    assert_int_equal(r.code, KILN_EPMD_ALIVE2_REQ);
    assert_int_equal(r.node.port, 4242);
    assert_int_equal(r.node.type, 77);
    assert_int_equal(r.node.protocol, 0);
    assert_int_equal(r.node.highest, 6);
    assert_int_equal(r.node.lowest, 5);
    assert_int_equal(r.node.name_len, 4);
    assert_memory_equal(r.node.name, "erl3", 4);
    assert_int_equal(r.node.extra_len, 2);
    assert_memory_equal(r.node.extra, "ex", 2);
    /* Two requests back to back: the parser takes exactly the first. */
    memcpy(buf + n, (const uint8_t[]){0, 1, 110}, 3);
    assert_int_equal(kiln_epmd_parse_req(buf, n + 3, &r, &used), KILN_OK);
    assert_int_equal(used, n);
    assert_int_equal(kiln_epmd_parse_req(buf + used, 3, &r, &used), KILN_OK);
    assert_int_equal(r.code, KILN_EPMD_NAMES_REQ);

    parse_incrementally(BYTES(0, 5, 122, 'e', 'r', 'l', '3'), &r);
    assert_int_equal(r.code, KILN_EPMD_PORT_PLEASE2_REQ);
    assert_int_equal(r.name_len, 4);
    /* One trailing NUL (old C clients) is dropped, like epmd does. */
    parse_incrementally(BYTES(0, 6, 122, 'e', 'r', 'l', '3', 0), &r);
    assert_int_equal(r.name_len, 4);
    parse_incrementally(BYTES(0, 3, 115, 'a', 'b'), &r);
    assert_int_equal(r.code, KILN_EPMD_STOP_REQ);
    assert_int_equal(r.name_len, 2);
    parse_incrementally(BYTES(0, 1, 100), &r);
    assert_int_equal(r.code, KILN_EPMD_DUMP_REQ);
    parse_incrementally(BYTES(0, 1, 107), &r);
    assert_int_equal(r.code, KILN_EPMD_KILL_REQ);
    /* Bytes after ALIVE2's Extra are ignored (epmd checks only the minimum). */
    parse_incrementally(BYTES(0, 16, 120, 0, 9, 77, 0, 0, 6, 0, 5, 0, 1, 'a', 0, 0, 7, 7), &r);
    assert_int_equal(r.node.name_len, 1);
}

static void test_request_errors(void **state)
{
    (void)state;
    kiln_epmd_req r;
    size_t used;
#define PARSE(...) kiln_epmd_parse_req(BYTES(__VA_ARGS__), &r, &used)
    assert_int_equal(PARSE(0, 0), KILN_EPROTO);
    /* The length alone is enough to refuse an oversized request. */
    assert_int_equal(PARSE(0xFF, 0xFF), KILN_ETOOBIG);
    assert_int_equal(kiln_epmd_parse_req(BYTES((KILN_EPMD_MAX_REQ + 1) >> 8, (KILN_EPMD_MAX_REQ + 1) & 0xFF), &r, &used),
                     KILN_ETOOBIG);
    assert_int_equal(PARSE(0, 1, 'Q'), KILN_EBADREQ);
    assert_int_equal(PARSE(0, 1, 120), KILN_ETRUNCATED);
    assert_int_equal(PARSE(0, 13, 120, 0, 9, 77, 0, 0, 6, 0, 5, 0, 1, 'a', 0), KILN_ETRUNCATED);
    /* Nlen past the body; Elen past the body. */
    assert_int_equal(PARSE(0, 14, 120, 0, 9, 77, 0, 0, 6, 0, 5, 0, 9, 'a', 0, 0), KILN_EBADLENGTH);
    assert_int_equal(PARSE(0, 14, 120, 0, 9, 77, 0, 0, 6, 0, 5, 0, 1, 'a', 0, 1), KILN_EBADLENGTH);
    /* Empty name, NUL inside, bad UTF-8. */
    assert_int_equal(PARSE(0, 14, 120, 0, 9, 77, 0, 0, 6, 0, 5, 0, 0, 0, 0, 0), KILN_EBADNODE);
    assert_int_equal(PARSE(0, 15, 120, 0, 9, 77, 0, 0, 6, 0, 5, 0, 2, 'a', 0, 0, 0), KILN_EBADNODE);
    assert_int_equal(PARSE(0, 14, 120, 0, 9, 77, 0, 0, 6, 0, 5, 0, 1, 0xC0, 0, 0), KILN_EBADUTF8);
    assert_int_equal(PARSE(0, 1, 122), KILN_EBADNODE);
    assert_int_equal(PARSE(0, 2, 122, 0), KILN_EBADNODE);
    assert_int_equal(PARSE(0, 4, 122, 'a', 0, 'b'), KILN_EBADNODE);
    assert_int_equal(PARSE(0, 3, 122, 0xE2, 0x82), KILN_EBADUTF8);
    assert_int_equal(PARSE(0, 4, 122, 0xED, 0xA0, 0x80), KILN_EBADUTF8); /* a surrogate */
#undef PARSE
    /* 255 characters are a name, 256 are not (epmd counts characters). */
    uint8_t big[2 + 1 + 600];
    big[2] = 122;
    for (int i = 0; i < 256; i++) {
        big[3 + 2 * i] = 0xC3;
        big[4 + 2 * i] = 0xA4; /* 'ä' */
    }
    big[0] = (uint8_t)((1 + 510) >> 8);
    big[1] = (uint8_t)((1 + 510) & 0xFF);
    assert_int_equal(kiln_epmd_parse_req(big, 2 + 1 + 510, &r, &used), KILN_OK);
    big[0] = (uint8_t)((1 + 512) >> 8);
    big[1] = (uint8_t)((1 + 512) & 0xFF);
    assert_int_equal(kiln_epmd_parse_req(big, 2 + 1 + 512, &r, &used), KILN_EBADNODE);
}

static void test_alive2_responses(void **state)
{
    (void)state;
    uint8_t buf[8];
    size_t n, used;
    kiln_epmd_alive2_resp a;
    assert_int_equal(kiln_epmd_enc_alive2_resp(buf, sizeof buf, true, 0, 0x01020304, &n), KILN_OK);
    assert_bytes(buf, n, BYTES(118, 0, 1, 2, 3, 4));
    for (size_t i = 0; i < n; i++)
        assert_int_equal(kiln_epmd_parse_alive2_resp(buf, i, &a, &used), KILN_EPMD_NEED_MORE);
    assert_int_equal(kiln_epmd_parse_alive2_resp(buf, n, &a, &used), KILN_OK);
    assert_true(a.x);
    assert_int_equal(a.result, 0);
    assert_int_equal(a.creation, 0x01020304);
    assert_int_equal(used, 6);
    assert_int_equal(kiln_epmd_enc_alive2_resp(buf, sizeof buf, false, 1, 3, &n), KILN_OK);
    assert_bytes(buf, n, BYTES(121, 1, 0, 3));
    assert_int_equal(kiln_epmd_parse_alive2_resp(buf, 3, &a, &used), KILN_EPMD_NEED_MORE);
    assert_int_equal(kiln_epmd_parse_alive2_resp(buf, n, &a, &used), KILN_OK);
    assert_false(a.x);
    assert_int_equal(a.result, 1);
    assert_int_equal(a.creation, 3);
    assert_int_equal(used, 4);
    assert_int_equal(kiln_epmd_enc_alive2_resp(buf, sizeof buf, false, 0, 0x10000, &n), KILN_EINVAL);
    assert_int_equal(kiln_epmd_parse_alive2_resp(BYTES(119, 0), &a, &used), KILN_EPROTO);
}

static void test_port2_responses(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n, used;
    kiln_epmd_port2_resp p;
    /* The bytes a 25.2.3 node's registration produced (brief §1). */
    kiln_epmd_node nd = node_named("erl3", 0x9ABC);
    assert_int_equal(kiln_epmd_enc_port2_resp(buf, sizeof buf, &nd, &n), KILN_OK);
    assert_bytes(buf, n, BYTES(119, 0, 0x9A, 0xBC, 77, 0, 0, 6, 0, 5, 0, 4, 'e', 'r', 'l', '3', 0, 0));
    for (size_t i = 0; i < n; i++)
        assert_int_equal(kiln_epmd_parse_port2_resp(buf, i, &p, &used), KILN_EPMD_NEED_MORE);
    assert_int_equal(kiln_epmd_parse_port2_resp(buf, n, &p, &used), KILN_OK);
    assert_int_equal(used, n);
    assert_int_equal(p.result, 0);
    assert_int_equal(p.node.port, 0x9ABC);
    assert_int_equal(p.node.highest, 6);
    assert_int_equal(p.node.lowest, 5);
    assert_int_equal(p.node.name_len, 4);
    assert_memory_equal(p.node.name, "erl3", 4);
    /* Extra comes after Elen (ergo's order is wrong); non-empty extra
     * is where the difference shows. */
    nd.extra = U8("EX");
    nd.extra_len = 2;
    assert_int_equal(kiln_epmd_enc_port2_resp(buf, sizeof buf, &nd, &n), KILN_OK);
    assert_bytes(buf, n, BYTES(119, 0, 0x9A, 0xBC, 77, 0, 0, 6, 0, 5, 0, 4, 'e', 'r', 'l', '3', 0, 2, 'E', 'X'));
    for (size_t i = 0; i < n; i++)
        assert_int_equal(kiln_epmd_parse_port2_resp(buf, i, &p, &used), KILN_EPMD_NEED_MORE);
    assert_int_equal(kiln_epmd_parse_port2_resp(buf, n, &p, &used), KILN_OK);
    assert_int_equal(p.node.extra_len, 2);
    assert_memory_equal(p.node.extra, "EX", 2);
    /* ergo's layout (Extra before Elen) reads as a 0x4558-byte extra: refused. */
    assert_int_equal(kiln_epmd_parse_port2_resp(BYTES(119, 0, 0, 9, 77, 0, 0, 6, 0, 5, 0, 1, 'a', 'E', 'X', 0, 2),
                                                &p, &used),
                     KILN_EINVAL);
    /* Error form: two bytes, whatever follows is not ours. */
    assert_int_equal(kiln_epmd_enc_port2_resp(buf, sizeof buf, NULL, &n), KILN_OK);
    assert_bytes(buf, n, BYTES(119, 1));
    assert_int_equal(kiln_epmd_parse_port2_resp(buf, 1, &p, &used), KILN_EPMD_NEED_MORE);
    assert_int_equal(kiln_epmd_parse_port2_resp(BYTES(119, 1, 9, 9), &p, &used), KILN_OK);
    assert_int_equal(p.result, 1);
    assert_int_equal(used, 2);
    assert_int_equal(kiln_epmd_parse_port2_resp(BYTES(118, 0), &p, &used), KILN_EPROTO);
    assert_int_equal(kiln_epmd_parse_port2_resp(BYTES(119, 0, 0, 9, 77, 0, 0, 6, 0, 5, 0, 0), &p, &used),
                     KILN_EBADNODE);
}

static void test_names_response(void **state)
{
    (void)state;
    uint8_t buf[128];
    size_t n, len = 0;
    assert_int_equal(kiln_epmd_enc_names_header(buf, sizeof buf, 4369, &n), KILN_OK);
    assert_bytes(buf, n, BYTES(0, 0, 0x11, 0x11));
    len += n;
    assert_int_equal(kiln_epmd_enc_names_line(buf + len, sizeof buf - len, U8("erl3"), 4, 40123, &n), KILN_OK);
    assert_bytes(buf + len, n, U8("name erl3 at port 40123\n"), 24);
    len += n;
    assert_int_equal(kiln_epmd_enc_names_line(buf + len, sizeof buf - len, U8("a b"), 3, 7, &n), KILN_OK);
    len += n;

    kiln_epmd_names_iter it;
    uint32_t eport;
    const uint8_t *name;
    size_t nl;
    uint16_t port;
    assert_int_equal(kiln_epmd_names_begin(&it, buf, 3, &eport), KILN_EPMD_NEED_MORE);
    /* A prefix ending mid-line: NEED_MORE for the partial line. */
    assert_int_equal(kiln_epmd_names_begin(&it, buf, len - 3, &eport), KILN_OK);
    assert_int_equal(eport, 4369);
    assert_int_equal(kiln_epmd_names_next(&it, &name, &nl, &port), KILN_OK);
    assert_int_equal(kiln_epmd_names_next(&it, &name, &nl, &port), KILN_EPMD_NEED_MORE);
    assert_int_equal(kiln_epmd_names_begin(&it, buf, len, &eport), KILN_OK);
    assert_int_equal(kiln_epmd_names_next(&it, &name, &nl, &port), KILN_OK);
    assert_int_equal(nl, 4);
    assert_memory_equal(name, "erl3", 4);
    assert_int_equal(port, 40123);
    assert_int_equal(kiln_epmd_names_next(&it, &name, &nl, &port), KILN_OK);
    assert_int_equal(nl, 3);
    assert_memory_equal(name, "a b", 3);
    assert_int_equal(port, 7);
    assert_int_equal(kiln_epmd_names_next(&it, &name, &nl, &port), KILN_EPMD_END);

    static const char *bad[] = {"nam x at port 1\n", "name x at port\n", "name x at port 1a\n",
                                "name x at port 65536\n", "name x at port 123456\n", "name  at port 1\n",
                                "name x on port 1\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        uint8_t b[64] = {0, 0, 0, 1};
        memcpy(b + 4, bad[i], strlen(bad[i]));
        assert_int_equal(kiln_epmd_names_begin(&it, b, 4 + strlen(bad[i]), &eport), KILN_OK);
        assert_int_equal(kiln_epmd_names_next(&it, &name, &nl, &port), KILN_EPROTO);
    }
}

static void test_kill_stop_responses(void **state)
{
    (void)state;
    bool ok;
    assert_int_equal(kiln_epmd_parse_kill_resp(U8("O"), 1, &ok), KILN_EPMD_NEED_MORE);
    assert_int_equal(kiln_epmd_parse_kill_resp(U8("OK"), 2, &ok), KILN_OK);
    assert_true(ok);
    assert_int_equal(kiln_epmd_parse_kill_resp(U8("NO"), 2, &ok), KILN_OK);
    assert_false(ok);
    assert_int_equal(kiln_epmd_parse_kill_resp(U8("XX"), 2, &ok), KILN_EPROTO);
    assert_int_equal(kiln_epmd_parse_stop_resp(U8("STOP"), 4, &ok), KILN_EPMD_NEED_MORE);
    assert_int_equal(kiln_epmd_parse_stop_resp(U8("STOPPED"), 7, &ok), KILN_OK);
    assert_true(ok);
    assert_int_equal(kiln_epmd_parse_stop_resp(U8("NOEXIST"), 7, &ok), KILN_OK);
    assert_false(ok);
    assert_int_equal(kiln_epmd_parse_stop_resp(U8("STOPX"), 5, &ok), KILN_EPROTO);
}

/* ---- server ---- */

static kiln_epmd_server *server(bool relaxed)
{
    kiln_epmd_server_config cfg = {.port = 4369, .seed = 12345, .relaxed = relaxed};
    kiln_epmd_server *s = kiln_epmd_server_new(&cfg);
    assert_non_null(s);
    return s;
}

/* Feed one encoded request on conn; return the rc, reply in out. */
static int feed(kiln_epmd_server *s, uint64_t conn, bool local, const uint8_t *req, size_t n,
                kiln_epmd_buf *out, kiln_epmd_reply *rep)
{
    size_t used;
    out->len = 0;
    int rc = kiln_epmd_server_feed(s, conn, local, req, n, out, rep, &used);
    if (rc == KILN_OK)
        assert_int_equal(used, n);
    return rc;
}

static int alive2(kiln_epmd_server *s, uint64_t conn, const char *name, uint16_t port, uint16_t high,
                  kiln_epmd_buf *out, kiln_epmd_reply *rep)
{
    uint8_t b[64];
    size_t n;
    kiln_epmd_node nd = node_named(name, port);
    nd.highest = high;
    assert_int_equal(kiln_epmd_enc_alive2_req(b, sizeof b, &nd, &n), KILN_OK);
    return feed(s, conn, true, b, n, out, rep);
}

static uint32_t creation_of(const kiln_epmd_buf *out, uint8_t want_result)
{
    kiln_epmd_alive2_resp a;
    size_t used;
    assert_int_equal(kiln_epmd_parse_alive2_resp(out->data, out->len, &a, &used), KILN_OK);
    assert_int_equal(used, out->len);
    assert_int_equal(a.result, want_result);
    return a.creation;
}

static void test_server_register_and_lookup(void **state)
{
    (void)state;
    kiln_epmd_server *s = server(false);
    kiln_epmd_buf out = {0};
    kiln_epmd_reply rep;
    assert_int_equal(alive2(s, 10, "erl3", 40000, 6, &out, &rep), KILN_OK);
    assert_int_equal(rep.action, KILN_EPMD_KEEP);
    assert_int_equal(out.data[0], 'v');
    uint32_t c1 = creation_of(&out, 0);
    assert_true(c1 >= 4);
    assert_int_equal(kiln_epmd_server_count(s), 1);

    /* The same name again, from another connection: result 1, socket closes. */
    assert_int_equal(alive2(s, 11, "erl3", 40001, 6, &out, &rep), KILN_OK);
    assert_int_equal(rep.action, KILN_EPMD_CLOSE);
    creation_of(&out, 1);
    assert_int_equal(kiln_epmd_server_count(s), 1);

    /* PORT_PLEASE2 answers and closes. */
    assert_int_equal(feed(s, 12, false, BYTES(0, 5, 122, 'e', 'r', 'l', '3'), &out, &rep), KILN_OK);
    assert_int_equal(rep.action, KILN_EPMD_CLOSE);
    kiln_epmd_port2_resp p;
    size_t used;
    assert_int_equal(kiln_epmd_parse_port2_resp(out.data, out.len, &p, &used), KILN_OK);
    assert_int_equal(used, out.len);
    assert_int_equal(p.result, 0);
    assert_int_equal(p.node.port, 40000);
    assert_int_equal(p.node.highest, 6);
    assert_int_equal(feed(s, 12, false, BYTES(0, 3, 122, 'n', 'o'), &out, &rep), KILN_OK);
    assert_bytes(out.data, out.len, BYTES(119, 1));
    assert_int_equal(rep.action, KILN_EPMD_CLOSE);

    /* Closing the registering socket unregisters; registering again
     * bumps the creation. */
    kiln_epmd_server_closed(s, 10);
    assert_null(kiln_epmd_server_lookup(s, U8("erl3"), 4));
    assert_int_equal(kiln_epmd_server_count(s), 0);
    assert_int_equal(alive2(s, 13, "erl3", 40002, 6, &out, &rep), KILN_OK);
    uint32_t c2 = creation_of(&out, 0);
    assert_int_equal(c2, c1 + 1 < 4 ? 4 : c1 + 1);
    const kiln_epmd_entry *e = kiln_epmd_server_lookup(s, U8("erl3"), 4);
    assert_non_null(e);
    assert_int_equal(e->node.port, 40002);
    assert_int_equal(e->conn, 13);
    assert_int_equal(e->creation, c2);

    /* Direct registration for the embedding node itself. */
    kiln_epmd_node me = node_named("kiln", 5555);
    uint32_t c3 = 0;
    assert_int_equal(kiln_epmd_server_register(s, 99, &me, &c3), KILN_OK);
    assert_true(c3 >= 4);
    assert_int_equal(kiln_epmd_server_register(s, 98, &me, &c3), KILN_ENAME_TAKEN);
    kiln_epmd_buf_free(&out);
    kiln_epmd_server_free(s);
}

static void test_server_creations(void **state)
{
    (void)state;
    /* Same seed, same creations: they come from the seed, not a counter
     * that starts at 1. Different names get unrelated values >= 4. */
    kiln_epmd_server *s = server(false);
    kiln_epmd_buf out = {0};
    kiln_epmd_reply rep;
    uint32_t seen[64];
    for (int i = 0; i < 64; i++) {
        char name[16];
        snprintf(name, sizeof name, "n%d", i);
        assert_int_equal(alive2(s, (uint64_t)i, name, 1000, 6, &out, &rep), KILN_OK);
        seen[i] = creation_of(&out, 0);
        assert_true(seen[i] >= 4);
        for (int j = 0; j < i; j++)
            assert_int_not_equal(seen[i], seen[j]);
    }
    /* Re-registration bumps, again and again. */
    for (int k = 1; k <= 3; k++) {
        kiln_epmd_server_closed(s, 5);
        assert_int_equal(alive2(s, 5, "n5", 1000, 6, &out, &rep), KILN_OK);
        assert_int_equal(creation_of(&out, 0), seen[5] + (uint32_t)k);
    }
    /* An old (HighestVersion 5) node gets 'y' and a 2-bit creation. */
    assert_int_equal(alive2(s, 100, "old", 1000, 5, &out, &rep), KILN_OK);
    assert_int_equal(out.data[0], 'y');
    assert_int_equal(out.len, 4);
    uint32_t oc = creation_of(&out, 0);
    assert_true(oc >= 1 && oc <= 3);
    kiln_epmd_server_closed(s, 100);
    assert_int_equal(alive2(s, 101, "old", 1000, 5, &out, &rep), KILN_OK);
    assert_int_equal(creation_of(&out, 0), oc % 3 + 1);
    kiln_epmd_buf_free(&out);
    kiln_epmd_server_free(s);
}

static void test_server_names_dump(void **state)
{
    (void)state;
    kiln_epmd_server *s = server(false);
    kiln_epmd_buf out = {0};
    kiln_epmd_reply rep;
    assert_int_equal(alive2(s, 1, "alpha", 1111, 6, &out, &rep), KILN_OK);
    assert_int_equal(alive2(s, 2, "beta", 2222, 6, &out, &rep), KILN_OK);
    assert_int_equal(alive2(s, 3, "gamma", 3333, 6, &out, &rep), KILN_OK);
    kiln_epmd_server_closed(s, 2);
    assert_int_equal(feed(s, 9, false, BYTES(0, 1, 110), &out, &rep), KILN_OK);
    assert_int_equal(rep.action, KILN_EPMD_CLOSE);
    kiln_epmd_names_iter it;
    uint32_t eport;
    const uint8_t *name;
    size_t nl;
    uint16_t port;
    assert_int_equal(kiln_epmd_names_begin(&it, out.data, out.len, &eport), KILN_OK);
    assert_int_equal(eport, 4369);
    int seen = 0;
    int rc;
    while ((rc = kiln_epmd_names_next(&it, &name, &nl, &port)) == KILN_OK) {
        if (nl == 5 && memcmp(name, "alpha", 5) == 0)
            assert_int_equal(port, 1111), seen |= 1;
        else if (nl == 5 && memcmp(name, "gamma", 5) == 0)
            assert_int_equal(port, 3333), seen |= 2;
        else
            fail_msg("unexpected name in NAMES");
    }
    assert_int_equal(rc, KILN_EPMD_END);
    assert_int_equal(seen, 3);
    /* DUMP: local only; mentions the live and the old name. */
    assert_int_equal(feed(s, 9, false, BYTES(0, 1, 100), &out, &rep), KILN_EREFUSED);
    assert_int_equal(out.len, 0);
    assert_int_equal(feed(s, 9, true, BYTES(0, 1, 100), &out, &rep), KILN_OK);
    assert_true(out.len > 4);
    char *text = strndup((const char *)out.data + 4, out.len - 4);
    assert_non_null(strstr(text, "active name     <alpha> at port 1111"));
    assert_non_null(strstr(text, "old/unused name <beta>"));
    free(text);
    kiln_epmd_buf_free(&out);
    kiln_epmd_server_free(s);
}

static void test_server_refusals(void **state)
{
    (void)state;
    kiln_epmd_server *s = server(false);
    kiln_epmd_buf out = {0};
    kiln_epmd_reply rep;
    uint8_t b[64];
    size_t n;
    /* ALIVE2 from a remote peer: no answer, close. */
    kiln_epmd_node nd = node_named("x", 1);
    assert_int_equal(kiln_epmd_enc_alive2_req(b, sizeof b, &nd, &n), KILN_OK);
    assert_int_equal(feed(s, 1, false, b, n, &out, &rep), KILN_EREFUSED);
    assert_int_equal(out.len, 0);
    assert_int_equal(rep.action, KILN_EPMD_CLOSE);
    /* Invalid fields: port 0, unknown type, protocol, versions. */
    kiln_epmd_node bad[4] = {node_named("x", 0), node_named("x", 1), node_named("x", 1), node_named("x", 1)};
    bad[1].type = 'Z';
    bad[2].protocol = 1;
    bad[3].lowest = 7;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(kiln_epmd_enc_alive2_req(b, sizeof b, &bad[i], &n), KILN_OK);
        assert_int_equal(feed(s, 1, true, b, n, &out, &rep), KILN_EINVAL);
        assert_int_equal(out.len, 0);
        assert_int_equal(rep.action, KILN_EPMD_CLOSE);
    }
    assert_int_equal(kiln_epmd_server_count(s), 0);
    /* Garbage: an error and nothing to send. */
    assert_int_equal(feed(s, 1, true, BYTES(0, 1, 'Q'), &out, &rep), KILN_EBADREQ);
    assert_int_equal(out.len, 0);
    size_t used;
    assert_int_equal(kiln_epmd_server_feed(s, 1, true, BYTES(0, 5, 122), &out, &rep, &used), KILN_EPMD_NEED_MORE);
    assert_int_equal(used, 0);
    /* KILL: "NO" while nodes are registered, "OK" + shutdown once empty. */
    assert_int_equal(alive2(s, 7, "live", 1, 6, &out, &rep), KILN_OK);
    assert_int_equal(feed(s, 8, true, BYTES(0, 1, 107), &out, &rep), KILN_OK);
    assert_bytes(out.data, out.len, U8("NO"), 2);
    assert_int_equal(rep.action, KILN_EPMD_CLOSE);
    assert_int_equal(feed(s, 8, false, BYTES(0, 1, 107), &out, &rep), KILN_EREFUSED);
    /* STOP: refused without relaxed command checking. */
    assert_int_equal(feed(s, 8, true, BYTES(0, 5, 115, 'l', 'i', 'v', 'e'), &out, &rep), KILN_EREFUSED);
    assert_int_equal(out.len, 0);
    kiln_epmd_server_closed(s, 7);
    assert_int_equal(feed(s, 8, true, BYTES(0, 1, 107), &out, &rep), KILN_OK);
    assert_bytes(out.data, out.len, U8("OK"), 2);
    assert_int_equal(rep.action, KILN_EPMD_SHUTDOWN);
    kiln_epmd_buf_free(&out);
    kiln_epmd_server_free(s);
}

/* NAMES answers one line per node, so a newline in a name would break the
 * reply for every client (the handshake fuzzer found it): names with
 * control characters are refused like any other bad name. */
static void test_server_refuses_control_characters(void **state)
{
    (void)state;
    assert_int_equal(kiln_epmd_check_name(U8("a\nb"), 3), KILN_EBADNODE);
    assert_int_equal(kiln_epmd_check_name(U8("a\x7f"), 2), KILN_EBADNODE);
    assert_int_equal(kiln_epmd_check_name(U8("\tab"), 3), KILN_EBADNODE);
    assert_int_equal(kiln_epmd_check_name(U8("k\xc3\xa4se"), 5), KILN_OK); /* UTF-8 stays */
    kiln_epmd_server *s = server(false);
    kiln_epmd_buf out = {0};
    kiln_epmd_reply rep;
    /* ALIVE2 for "a\nb" on port 4242, written by hand: the encoder refuses it. */
    static const uint8_t raw[] = {0, 16, 'x', 0x10, 0x92, 'M', 0, 0, 6, 0, 5, 0, 3, 'a', '\n', 'b', 0, 0};
    assert_int_not_equal(feed(s, 1, true, raw, sizeof raw, &out, &rep), KILN_OK);
    assert_int_equal(out.len, 0);
    assert_int_equal(kiln_epmd_server_count(s), 0);
    /* Every NAMES reply still parses line by line. */
    assert_int_equal(alive2(s, 2, "good", 1111, 6, &out, &rep), KILN_OK);
    assert_int_equal(feed(s, 9, true, BYTES(0, 1, 110), &out, &rep), KILN_OK);
    kiln_epmd_names_iter it;
    uint32_t eport;
    const uint8_t *name;
    size_t nl;
    uint16_t port;
    assert_int_equal(kiln_epmd_names_begin(&it, out.data, out.len, &eport), KILN_OK);
    assert_int_equal(kiln_epmd_names_next(&it, &name, &nl, &port), KILN_OK);
    assert_bytes(name, nl, U8("good"), 4);
    assert_int_equal(kiln_epmd_names_next(&it, &name, &nl, &port), KILN_EPMD_END);
    kiln_epmd_buf_free(&out);
    kiln_epmd_server_free(s);
}

static void test_server_relaxed_stop(void **state)
{
    (void)state;
    kiln_epmd_server *s = server(true);
    kiln_epmd_buf out = {0};
    kiln_epmd_reply rep;
    assert_int_equal(alive2(s, 7, "live", 1, 6, &out, &rep), KILN_OK);
    assert_int_equal(feed(s, 8, true, BYTES(0, 5, 115, 'l', 'i', 'v', 'e'), &out, &rep), KILN_OK);
    assert_bytes(out.data, out.len, U8("STOPPED"), 7);
    assert_true(rep.close_other);
    assert_int_equal(rep.other_conn, 7);
    assert_int_equal(kiln_epmd_server_count(s), 0);
    assert_int_equal(feed(s, 8, true, BYTES(0, 5, 115, 'l', 'i', 'v', 'e'), &out, &rep), KILN_OK);
    assert_bytes(out.data, out.len, U8("NOEXIST"), 7);
    assert_false(rep.close_other);
    /* KILL with live nodes is fine in relaxed mode. */
    assert_int_equal(alive2(s, 9, "again", 1, 6, &out, &rep), KILN_OK);
    assert_int_equal(feed(s, 8, true, BYTES(0, 1, 107), &out, &rep), KILN_OK);
    assert_int_equal(rep.action, KILN_EPMD_SHUTDOWN);
    kiln_epmd_buf_free(&out);
    kiln_epmd_server_free(s);
}

static void test_server_limits(void **state)
{
    (void)state;
    kiln_epmd_server_config cfg = {.port = 4369, .seed = 1, .max_nodes = 3, .max_remembered = 2};
    kiln_epmd_server *s = kiln_epmd_server_new(&cfg);
    kiln_epmd_buf out = {0};
    kiln_epmd_reply rep;
    assert_int_equal(alive2(s, 1, "a", 1, 6, &out, &rep), KILN_OK);
    assert_int_equal(alive2(s, 2, "b", 1, 6, &out, &rep), KILN_OK);
    assert_int_equal(alive2(s, 3, "c", 1, 6, &out, &rep), KILN_OK);
    uint32_t ca = 0;
    /* Table full: refused like a duplicate (result 1), socket closes. */
    assert_int_equal(alive2(s, 4, "d", 1, 6, &out, &rep), KILN_OK);
    creation_of(&out, 1);
    assert_int_equal(rep.action, KILN_EPMD_CLOSE);
    /* Remembered names are bounded: after three unregistrations the
     * oldest ("a") is forgotten and gets a fresh creation, the newer ones
     * still bump. */
    const kiln_epmd_entry *e = kiln_epmd_server_lookup(s, U8("a"), 1);
    ca = e->creation;
    uint32_t cc = kiln_epmd_server_lookup(s, U8("c"), 1)->creation;
    kiln_epmd_server_closed(s, 1);
    kiln_epmd_server_closed(s, 2);
    kiln_epmd_server_closed(s, 3);
    assert_int_equal(alive2(s, 5, "c", 1, 6, &out, &rep), KILN_OK);
    assert_int_equal(creation_of(&out, 0), cc + 1);
    assert_int_equal(alive2(s, 6, "a", 1, 6, &out, &rep), KILN_OK);
    assert_int_not_equal(creation_of(&out, 0), ca + 1);
    kiln_epmd_buf_free(&out);
    kiln_epmd_server_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alive2_req_encoding),
        cmocka_unit_test(test_other_requests_encoding),
        cmocka_unit_test(test_request_parsing),
        cmocka_unit_test(test_request_errors),
        cmocka_unit_test(test_alive2_responses),
        cmocka_unit_test(test_port2_responses),
        cmocka_unit_test(test_names_response),
        cmocka_unit_test(test_kill_stop_responses),
        cmocka_unit_test(test_server_register_and_lookup),
        cmocka_unit_test(test_server_creations),
        cmocka_unit_test(test_server_names_dump),
        cmocka_unit_test(test_server_refusals),
        cmocka_unit_test(test_server_refuses_control_characters),
        cmocka_unit_test(test_server_relaxed_stop),
        cmocka_unit_test(test_server_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
