/* libFuzzer target for the distribution handshake and the EPMD codec.
 *
 * The first byte picks the mode, the second the feed chunk size, the rest
 * is the input:
 *   mode % 5 == 0: EPMD requests, parsed one after another and handled by
 *                  an embedded server; every answer must parse back
 *   mode % 5 == 1: EPMD responses (ALIVE2, PORT2, NAMES lines, KILL, STOP)
 *   mode % 5 == 2: the acceptor (B) state machine fed the input in chunks
 *   mode % 5 == 3: the initiator (A), its first status already "ok" half
 *                  the time so the challenge parser is reached
 *   mode % 5 == 4: every handshake message parser on the input as a body
 * Invariants: nothing reads outside the input (ASan), consumed counts
 * never exceed what was given, parsed names point inside the input, and a
 * finished machine takes no more bytes.
 *
 * Seeds: run with FUZZ_HANDSHAKE_SEEDS=dir to write a seed corpus (real
 * handshake transcripts and EPMD traffic) and exit. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist_flags.h"
#include "dist/epmd_proto.h"
#include "dist/handshake.h"
#include "kiln/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define U8(s) ((const uint8_t *)(s))

static void check(int cond)
{
    if (!cond)
        abort();
}

static void inside(const void *p, size_t n, const uint8_t *buf, size_t len)
{
    if (n == 0)
        return;
    const uint8_t *q = p;
    check(q >= buf && q + n <= buf + len);
}

static void fuzz_epmd_requests(const uint8_t *d, size_t n)
{
    static kiln_epmd_server *srv;
    if (!srv) {
        kiln_epmd_server_config cfg = {.port = 4369, .seed = 1, .relaxed = true, .max_nodes = 8, .max_remembered = 8};
        srv = kiln_epmd_server_new(&cfg);
    }
    kiln_epmd_buf out = {0};
    size_t pos = 0;
    uint64_t conn = 0;
    while (pos < n) {
        kiln_epmd_req req;
        size_t used = 0;
        int rc = kiln_epmd_parse_req(d + pos, n - pos, &req, &used);
        if (rc != KILN_OK) {
            check(used == 0);
            break;
        }
        check(used >= 3 && used <= n - pos);
        if (req.code == KILN_EPMD_ALIVE2_REQ) {
            inside(req.node.name, req.node.name_len, d + pos, used);
            inside(req.node.extra, req.node.extra_len, d + pos, used);
        } else {
            inside(req.name, req.name_len, d + pos, used);
        }
        out.len = 0;
        kiln_epmd_reply rep;
        rc = kiln_epmd_server_handle(srv, conn, (conn & 1) == 0, &req, &out, &rep);
        if (rc == KILN_OK && out.len) {
            size_t u;
            switch (req.code) {
            case KILN_EPMD_ALIVE2_REQ: {
                kiln_epmd_alive2_resp a;
                check(kiln_epmd_parse_alive2_resp(out.data, out.len, &a, &u) == KILN_OK && u == out.len);
                check(a.result != 0 || a.creation != 0);
                break;
            }
            case KILN_EPMD_PORT_PLEASE2_REQ: {
                kiln_epmd_port2_resp p;
                check(kiln_epmd_parse_port2_resp(out.data, out.len, &p, &u) == KILN_OK && u == out.len);
                break;
            }
            case KILN_EPMD_NAMES_REQ: {
                kiln_epmd_names_iter it;
                uint32_t port;
                const uint8_t *nm;
                size_t nl;
                uint16_t pp;
                check(kiln_epmd_names_begin(&it, out.data, out.len, &port) == KILN_OK);
                while ((rc = kiln_epmd_names_next(&it, &nm, &nl, &pp)) == KILN_OK)
                    ;
                check(rc == KILN_EPMD_END);
                break;
            }
            default: break;
            }
        }
        /* Some connections close, which unregisters what they held. */
        if (conn % 3 == 2)
            kiln_epmd_server_closed(srv, conn - 1);
        conn++;
        pos += used;
    }
    kiln_epmd_buf_free(&out);
}

static void fuzz_epmd_responses(const uint8_t *d, size_t n)
{
    size_t used;
    kiln_epmd_alive2_resp a;
    if (kiln_epmd_parse_alive2_resp(d, n, &a, &used) == KILN_OK)
        check(used <= n);
    kiln_epmd_port2_resp p;
    if (kiln_epmd_parse_port2_resp(d, n, &p, &used) == KILN_OK) {
        check(used <= n);
        if (p.result == 0) {
            inside(p.node.name, p.node.name_len, d, n);
            inside(p.node.extra, p.node.extra_len, d, n);
        }
    }
    kiln_epmd_names_iter it;
    uint32_t port;
    if (kiln_epmd_names_begin(&it, d, n, &port) == KILN_OK) {
        const uint8_t *nm;
        size_t nl;
        uint16_t pp;
        while (kiln_epmd_names_next(&it, &nm, &nl, &pp) == KILN_OK)
            inside(nm, nl, d, n);
    }
    bool b;
    kiln_epmd_parse_kill_resp(d, n, &b);
    kiln_epmd_parse_stop_resp(d, n, &b);
}

static kiln_hs_peer hook_peer(void *arg, const char *name, size_t len)
{
    (void)name;
    return (kiln_hs_peer)((uintptr_t)arg + len) % 4;
}

static bool hook_pending(void *arg, const char *name, size_t len)
{
    (void)arg;
    (void)name;
    return len & 1;
}

static void fuzz_machine(kiln_hs_role role, uint8_t mode, size_t chunk, const uint8_t *d, size_t n)
{
    kiln_hs_config cfg = {
        .role = role,
        .name = "kiln@fuzzhost",
        .creation = 4,
        .flags = (mode & 8) ? KILN_DFLAGS_HIDDEN : KILN_DFLAGS_VISIBLE,
        .cookie = U8("cookie"),
        .cookie_len = 6,
        .peer = "erl@fuzzhost",
        .hooks = {hook_peer, hook_pending, (void *)(uintptr_t)mode},
    };
    kiln_hs *hs = kiln_hs_new(&cfg, NULL);
    check(hs != NULL);
    if (role == KILN_HS_INITIATOR && (mode & 16)) {
        size_t u;
        check(kiln_hs_feed(hs, "\0\3sok", 5, &u) == KILN_HS_RUNNING && u == 5);
    }
    size_t pos = 0;
    while (pos < n) {
        size_t k = n - pos < chunk ? n - pos : chunk;
        size_t used = (size_t)-1;
        kiln_hs_state st = kiln_hs_feed(hs, d + pos, k, &used);
        check(used <= k);
        size_t on;
        kiln_hs_output(hs, &on);
        if (on && (mode & 32))
            kiln_hs_output_advance(hs, on / 2 + 1);
        if (st == KILN_HS_WAIT_OLD)
            st = kiln_hs_resume(hs);
        if (st != KILN_HS_RUNNING) {
            size_t again = 99;
            check(kiln_hs_feed(hs, d, n, &again) == st || st == KILN_HS_WAIT_OLD);
            check(again == 0);
            const kiln_hs_result *r = kiln_hs_get_result(hs);
            check(r->state == st);
            check(st != KILN_HS_FAILED || r->err < 0);
            check(r->peer_name_len <= KILN_HS_MAX_NAME && strlen(r->peer_name) == r->peer_name_len);
            break;
        }
        check(used == k);
        pos += k;
    }
    kiln_hs_closed(hs);
    kiln_hs_free(hs);
}

static void fuzz_hs_parsers(const uint8_t *d, size_t n)
{
    kiln_hs_name_msg nm;
    if (kiln_hs_parse_name(d, n, &nm) == KILN_OK)
        inside(nm.name, nm.name_len, d, n);
    kiln_hs_challenge_msg ch;
    if (kiln_hs_parse_challenge(d, n, &ch) == KILN_OK)
        inside(ch.name, ch.name_len, d, n);
    kiln_hs_status st;
    kiln_hs_name_msg named;
    if (kiln_hs_parse_status(d, n, &st, &named) == KILN_OK && st == KILN_HS_ST_NAMED)
        inside(named.name, named.name_len, d, n);
    bool yes;
    kiln_hs_parse_alive_reply(d, n, &yes);
    uint32_t c;
    uint8_t dg[16];
    kiln_hs_parse_reply(d, n, &c, dg);
    kiln_hs_parse_ack(d, n, dg);
    const uint8_t *body;
    size_t bl, used;
    if (kiln_hs_frame(d, n, &body, &bl, &used) == KILN_OK)
        check(used == bl + 2 && used <= n);
    kiln_hs_name_valid((const char *)d, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t mode = data[0];
    size_t chunk = (size_t)data[1] % 64 + 1;
    const uint8_t *d = data + 2;
    size_t n = size - 2;
    switch (mode % 5) {
    case 0: fuzz_epmd_requests(d, n); break;
    case 1: fuzz_epmd_responses(d, n); break;
    case 2: fuzz_machine(KILN_HS_ACCEPTOR, mode, chunk, d, n); break;
    case 3: fuzz_machine(KILN_HS_INITIATOR, mode, chunk, d, n); break;
    default: fuzz_hs_parsers(d, n); break;
    }
    return 0;
}

/* ---- seed corpus ---- */

static void seed(const char *dir, const char *name, uint8_t mode, const uint8_t *b, size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return;
    uint8_t hdr[2] = {mode, 63};
    fwrite(hdr, 1, 2, f);
    fwrite(b, 1, n, f);
    fclose(f);
}

/* Run a real handshake in memory and keep what each side received. */
static void transcript(const char *dir)
{
    kiln_hs_config ca = {.role = KILN_HS_INITIATOR, .name = "erl@fuzzhost", .creation = 9, .flags = KILN_DFLAGS_VISIBLE,
                         .cookie = U8("cookie"), .cookie_len = 6, .peer = "kiln@fuzzhost"};
    kiln_hs_config cb = ca;
    cb.role = KILN_HS_ACCEPTOR;
    cb.name = "kiln@fuzzhost";
    kiln_hs *a = kiln_hs_new(&ca, NULL), *b = kiln_hs_new(&cb, NULL);
    uint8_t to_a[2048], to_b[2048];
    size_t na = 0, nb = 0;
    for (int i = 0; i < 8; i++) {
        size_t n;
        const uint8_t *p = kiln_hs_output(a, &n);
        if (n) {
            memcpy(to_b + nb, p, n);
            nb += n;
            kiln_hs_feed(b, p, n, NULL);
            kiln_hs_output_advance(a, n);
        }
        p = kiln_hs_output(b, &n);
        if (n) {
            memcpy(to_a + na, p, n);
            na += n;
            kiln_hs_feed(a, p, n, NULL);
            kiln_hs_output_advance(b, n);
        }
    }
    seed(dir, "hs_acceptor", 2, to_b, nb);
    seed(dir, "hs_initiator", 3, to_a, na);
    seed(dir, "hs_initiator_alive", 3, U8("\0\6salive"), 8);
    seed(dir, "hs_name_msg", 4, to_b + 2, nb > 2 ? (size_t)(to_b[0] << 8 | to_b[1]) : 0);
    kiln_hs_free(a);
    kiln_hs_free(b);
}

static void epmd_seeds(const char *dir)
{
    uint8_t b[512];
    size_t n, len = 0;
    kiln_epmd_node nd = {4242, 77, 0, 6, 5, U8("erl3"), 4, U8("x"), 1};
    kiln_epmd_enc_alive2_req(b, sizeof b, &nd, &n);
    len += n;
    kiln_epmd_enc_port_please2_req(b + len, sizeof b - len, U8("erl3"), 4, &n);
    len += n;
    kiln_epmd_enc_simple_req(b + len, sizeof b - len, KILN_EPMD_NAMES_REQ, &n);
    len += n;
    kiln_epmd_enc_simple_req(b + len, sizeof b - len, KILN_EPMD_DUMP_REQ, &n);
    len += n;
    kiln_epmd_enc_stop_req(b + len, sizeof b - len, U8("erl3"), 4, &n);
    len += n;
    kiln_epmd_enc_simple_req(b + len, sizeof b - len, KILN_EPMD_KILL_REQ, &n);
    len += n;
    seed(dir, "epmd_requests", 0, b, len);
    kiln_epmd_enc_port2_resp(b, sizeof b, &nd, &n);
    seed(dir, "epmd_port2", 1, b, n);
    kiln_epmd_enc_alive2_resp(b, sizeof b, true, 0, 123456, &n);
    seed(dir, "epmd_alive2", 1, b, n);
    kiln_epmd_enc_names_header(b, sizeof b, 4369, &n);
    len = n;
    kiln_epmd_enc_names_line(b + len, sizeof b - len, U8("erl3"), 4, 40000, &n);
    len += n;
    seed(dir, "epmd_names", 1, b, len);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("FUZZ_HANDSHAKE_SEEDS");
    if (dir && *dir) {
        transcript(dir);
        epmd_seeds(dir);
        exit(0);
    }
    return 0;
}
