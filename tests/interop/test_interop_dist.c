/* EPMD and handshake against a real Erlang/OTP node.
 *
 * The test is the I/O driver: plain blocking POSIX sockets feed the pure
 * protocol cores (dist/epmd_proto, dist/handshake). Each scenario starts
 * its own `erl -noshell -sname ...` with ERL_EPMD_PORT set to a free port,
 * so it talks to a private epmd, and controls it through a tiny
 * read-eval-print loop on erl's stdin/stdout. erl missing is a failure,
 * never a skip. Run one scenario with `test_interop_dist <name>`. */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "erl_harness.h"
#include "dist/dist_flags.h"
#include "dist/epmd_proto.h"
#include "dist/handshake.h"

#define U8(s) ((const uint8_t *)(s))
/* What 25.2.3 sends in send_name (brief §2); the checks need only the bits. */
#define OTP25_FLAGS 0xD07DF7FBDull

/* ---- EPMD client helpers (our encoders/parsers over a socket) ---- */

/* ALIVE2 on a new socket, kept open; returns the fd, *creation. */
static int epmd_register(uint16_t epmd_port, const char *name, uint16_t port, uint8_t *result, uint32_t *creation)
{
    int fd = connect_local(epmd_port);
    assert_true(fd >= 0);
    uint8_t b[128];
    size_t n;
    kiln_epmd_node nd = {port, KILN_EPMD_NODE_NORMAL, KILN_EPMD_PROTO_TCP, KILN_EPMD_HIGHEST_VERSION,
                         KILN_EPMD_LOWEST_VERSION, U8(name), strlen(name), NULL, 0};
    assert_int_equal(kiln_epmd_enc_alive2_req(b, sizeof b, &nd, &n), KILN_OK);
    write_all(fd, b, n);
    uint8_t r[16];
    size_t have = 0, used;
    kiln_epmd_alive2_resp a;
    int rc;
    while ((rc = kiln_epmd_parse_alive2_resp(r, have, &a, &used)) == KILN_EPMD_NEED_MORE) {
        ssize_t got = read_some(fd, r + have, sizeof r - have, 5000);
        assert_true(got > 0);
        have += (size_t)got;
    }
    assert_int_equal(rc, KILN_OK);
    assert_true(a.x); /* a v6 registration gets the 32-bit form */
    *result = a.result;
    *creation = a.creation;
    return fd;
}

static bool epmd_port_please(uint16_t epmd_port, const char *name, kiln_epmd_node *out, char *name_out)
{
    int fd = connect_local(epmd_port);
    assert_true(fd >= 0);
    uint8_t b[2048];
    size_t n, used;
    assert_int_equal(kiln_epmd_enc_port_please2_req(b, sizeof b, U8(name), strlen(name), &n), KILN_OK);
    write_all(fd, b, n);
    /* Like erl_epmd: the answer is complete when epmd closes. */
    n = read_to_eof(fd, b, sizeof b, 5000);
    close(fd);
    kiln_epmd_port2_resp p;
    assert_int_equal(kiln_epmd_parse_port2_resp(b, n, &p, &used), KILN_OK);
    assert_int_equal(used, n);
    if (p.result != 0)
        return false;
    *out = p.node;
    memcpy(name_out, p.node.name, p.node.name_len);
    name_out[p.node.name_len] = 0;
    out->name = NULL;
    out->extra = NULL;
    return true;
}

/* NAMES: does the list hold name at port? (and the header's port is epmd's) */
static bool epmd_names_has(uint16_t epmd_port, const char *name, uint16_t port)
{
    int fd = connect_local(epmd_port);
    assert_true(fd >= 0);
    uint8_t b[8192];
    size_t n;
    assert_int_equal(kiln_epmd_enc_simple_req(b, sizeof b, KILN_EPMD_NAMES_REQ, &n), KILN_OK);
    write_all(fd, b, n);
    n = read_to_eof(fd, b, sizeof b, 5000);
    close(fd);
    kiln_epmd_names_iter it;
    uint32_t eport;
    assert_int_equal(kiln_epmd_names_begin(&it, b, n, &eport), KILN_OK);
    assert_int_equal(eport, epmd_port);
    const uint8_t *nm;
    size_t nl;
    uint16_t p;
    bool found = false;
    int rc;
    while ((rc = kiln_epmd_names_next(&it, &nm, &nl, &p)) == KILN_OK)
        if (nl == strlen(name) && memcmp(nm, name, nl) == 0 && (port == 0 || p == port))
            found = true;
    assert_int_equal(rc, KILN_EPMD_END);
    return found;
}

/* ---- driving a handshake over a socket ---- */

struct hs_run {
    kiln_hs_state st;
    uint8_t left[256]; /* bytes after the last handshake message */
    size_t left_len;
};

static struct hs_run drive(kiln_hs *hs, int fd, int ms)
{
    struct hs_run r = {0};
    long end = now_ms() + ms;
    uint8_t buf[4096];
    for (;;) {
        size_t n;
        const uint8_t *o = kiln_hs_output(hs, &n);
        if (n) {
            write_all(fd, o, n);
            kiln_hs_output_advance(hs, n);
        }
        r.st = kiln_hs_get_state(hs);
        if (r.st != KILN_HS_RUNNING)
            return r;
        long left = end - now_ms();
        if (left <= 0)
            fail_msg("handshake timed out");
        ssize_t got = read_some(fd, buf, sizeof buf, (int)left);
        if (got < 0)
            fail_msg("handshake timed out waiting for the peer");
        if (got == 0) {
            r.st = kiln_hs_closed(hs);
            return r;
        }
        size_t used;
        r.st = kiln_hs_feed(hs, buf, (size_t)got, &used);
        if (r.st == KILN_HS_DONE) {
            r.left_len = (size_t)got - used < sizeof r.left ? (size_t)got - used : sizeof r.left;
            memcpy(r.left, buf + used, r.left_len);
        }
    }
}

static kiln_hs *new_hs(kiln_hs_role role, const char *me, const char *peer, const char *cookie, uint64_t flags,
                       uint32_t creation)
{
    kiln_hs_config cfg = {.role = role, .name = me, .creation = creation, .flags = flags, .cookie = U8(cookie),
                          .cookie_len = strlen(cookie), .peer = peer};
    int err;
    kiln_hs *hs = kiln_hs_new(&cfg, &err);
    assert_non_null(hs);
    return hs;
}

static uint32_t erl_creation(struct erl_node *n)
{
    char res[64];
    erl_eval(n, "erlang:system_info(creation).", res, sizeof res);
    return (uint32_t)strtoul(res, NULL, 10);
}

/* Accept one connection within ms. */
static int accept_within(int lfd, int ms)
{
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    if (poll(&p, 1, ms) != 1)
        fail_msg("erl did not connect within %d ms", ms);
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    assert_true(fd >= 0);
    return fd;
}

static void names(char *sname, size_t sz, const char *tag)
{
    snprintf(sname, sz, "%s%ld", tag, (long)getpid());
}

/* ---- scenarios ---- */

/* (a) Our EPMD client against OTP's epmd: register, be listed by erl's
 * net_adm:names(), look erl up, list names, unregister on close, KILL. */
static void test_epmd(void **state)
{
    (void)state;
    uint16_t eport = free_port();
    char sname[64], fake[64];
    names(sname, sizeof sname, "te");
    names(fake, sizeof fake, "kfake");
    struct erl_node *e = erl_start(sname, eport);

    uint8_t result;
    uint32_t creation;
    int afd = epmd_register(eport, fake, 12345, &result, &creation);
    assert_int_equal(result, 0);
    assert_true(creation >= 4); /* 32-bit, clock-seeded, never 0..3 */
    /* The same name again is refused while the first socket is open. */
    uint32_t c2;
    int dfd = epmd_register(eport, fake, 12346, &result, &c2);
    assert_int_not_equal(result, 0);
    close(dfd);

    char want[128];
    snprintf(want, sizeof want, "{\"%s\",12345}", fake);
    erl_await(e, "net_adm:names().", want, 3000);

    /* PORT_PLEASE2 for erl itself: what a 25.2.3 node registers. */
    kiln_epmd_node nd;
    char got_name[1100];
    assert_true(epmd_port_please(eport, sname, &nd, got_name));
    assert_string_equal(got_name, sname);
    assert_int_equal(nd.type, KILN_EPMD_NODE_NORMAL);
    assert_int_equal(nd.protocol, 0);
    assert_int_equal(nd.highest, 6);
    assert_int_equal(nd.lowest, 5);
    assert_int_equal(nd.extra_len, 0);
    assert_true(nd.port != 0);
    assert_false(epmd_port_please(eport, "nosuchnode", &nd, got_name));
    assert_true(epmd_port_please(eport, fake, &nd, got_name));
    assert_int_equal(nd.port, 12345);

    /* NAMES from our client: both nodes, erl at the port PORT2 gave. */
    kiln_epmd_node en;
    assert_true(epmd_port_please(eport, sname, &en, got_name));
    assert_true(epmd_names_has(eport, sname, en.port));
    assert_true(epmd_names_has(eport, fake, 12345));

    /* Closing the registration socket unregisters; a new registration of
     * the name gets a bumped creation. */
    close(afd);
    snprintf(want, sizeof want, "\"%s\"", fake);
    long end = now_ms() + 3000;
    while (epmd_names_has(eport, fake, 0) && now_ms() < end)
        usleep(50000);
    assert_false(epmd_names_has(eport, fake, 0));
    char res[4096];
    erl_eval(e, "net_adm:names().", res, sizeof res);
    assert_null(strstr(res, want));
    afd = epmd_register(eport, fake, 12345, &result, &c2);
    assert_int_equal(result, 0);
    assert_int_equal(c2, creation + 1 < 4 ? 4 : creation + 1);
    close(afd);

    /* KILL: refused while erl is registered, accepted after. */
    erl_stop(e);
    end = now_ms() + 3000;
    while (epmd_names_has(eport, sname, 0) && now_ms() < end)
        usleep(50000);
    int kfd = connect_local(eport);
    uint8_t b[16];
    size_t n;
    assert_int_equal(kiln_epmd_enc_simple_req(b, sizeof b, KILN_EPMD_KILL_REQ, &n), KILN_OK);
    write_all(kfd, b, n);
    n = read_to_eof(kfd, b, sizeof b, 3000);
    close(kfd);
    bool ok;
    assert_int_equal(kiln_epmd_parse_kill_resp(b, n, &ok), KILN_OK);
    assert_true(ok);
}

/* (b) erl dials us: net_adm:ping('kiln...@host') finds us through epmd and
 * our acceptor completes the handshake. */
static void test_accept(void **state)
{
    (void)state;
    uint16_t eport = free_port();
    char sname[64], me_s[64], me[128];
    names(sname, sizeof sname, "ta");
    names(me_s, sizeof me_s, "kilnb");
    struct erl_node *e = erl_start(sname, eport);
    snprintf(me, sizeof me, "%s@%s", me_s, g_host);
    uint32_t ecreation = erl_creation(e);

    uint16_t lport;
    int lfd = listen_any(0, &lport);
    uint8_t result;
    uint32_t creation;
    int afd = epmd_register(eport, me_s, lport, &result, &creation);
    assert_int_equal(result, 0);

    char cmd[256], res[4096];
    snprintf(cmd, sizeof cmd, "spawn(fun() -> net_adm:ping('%s') end), ok.", me);
    erl_eval(e, cmd, res, sizeof res);
    int fd = accept_within(lfd, 10000);
    kiln_hs *hs = new_hs(KILN_HS_ACCEPTOR, me, NULL, COOKIE, KILN_DFLAGS_VISIBLE, creation);
    struct hs_run r = drive(hs, fd, 10000);
    const kiln_hs_result *hr = kiln_hs_get_result(hs);
    if (r.st != KILN_HS_DONE)
        fail_msg("handshake failed: %s; erl log:\n%s", kiln_strerror(hr->err), e->log ? e->log : "");
    assert_string_equal(hr->peer_name, e->full);
    assert_int_equal(hr->peer_creation, ecreation);
    assert_int_equal(hr->peer_flags & OTP25_FLAGS, OTP25_FLAGS);
    assert_int_equal(hr->flags, KILN_DFLAGS_VISIBLE);
    assert_int_equal(hr->status, KILN_HS_ST_OK);

    /* erl counts us as a connected visible node. */
    snprintf(cmd, sizeof cmd, "lists:member('%s', nodes()).", me);
    erl_await(e, cmd, "true", 3000);
    /* Its first packets use u32 framing and, without atom cache or
     * fragments negotiated, the pass-through 'p' form. */
    uint8_t pkt[8192];
    size_t have = r.left_len;
    memcpy(pkt, r.left, have);
    bool seen = false;
    long end = now_ms() + 5000;
    while (!seen && now_ms() < end) {
        while (have >= 4) {
            uint32_t len = ((uint32_t)pkt[0] << 24) | ((uint32_t)pkt[1] << 16) | ((uint32_t)pkt[2] << 8) | pkt[3];
            if (len == 0) { /* a tick */
                memmove(pkt, pkt + 4, have - 4);
                have -= 4;
                continue;
            }
            if (have < 6)
                break;
            assert_int_equal(pkt[4], 112);
            assert_int_equal(pkt[5], 131);
            seen = true;
            break;
        }
        if (seen)
            break;
        ssize_t got = read_some(fd, pkt + have, sizeof pkt - have, 500);
        if (got == 0)
            fail_msg("erl closed the connection");
        if (got > 0)
            have += (size_t)got;
    }
    assert_true(seen);
    assert_false(log_has(e, "rejected", 200));
    assert_false(log_has(e, "not_allowed", 0));
    kiln_hs_free(hs);
    close(fd);
    close(afd);
    close(lfd);
    erl_stop(e);
}

/* (c) We dial erl: PORT_PLEASE2, connect, initiator handshake; then dial
 * again under the same name, so erl answers "alive" and replaces the
 * first connection. */
static void test_connect(void **state)
{
    (void)state;
    uint16_t eport = free_port();
    char sname[64], me[128];
    names(sname, sizeof sname, "tc");
    struct erl_node *e = erl_start(sname, eport);
    snprintf(me, sizeof me, "kilnc%ld@%s", (long)getpid(), g_host);
    uint32_t ecreation = erl_creation(e);
    kiln_epmd_node nd;
    char got_name[1100];
    assert_true(epmd_port_please(eport, sname, &nd, got_name));

    int fd = connect_local(nd.port);
    assert_true(fd >= 0);
    kiln_hs *hs = new_hs(KILN_HS_INITIATOR, me, e->full, COOKIE, KILN_DFLAGS_VISIBLE, 4242);
    struct hs_run r = drive(hs, fd, 10000);
    const kiln_hs_result *hr = kiln_hs_get_result(hs);
    if (r.st != KILN_HS_DONE)
        fail_msg("handshake failed: %s; erl log:\n%s", kiln_strerror(hr->err), e->log ? e->log : "");
    assert_int_equal(hr->status, KILN_HS_ST_OK);
    assert_string_equal(hr->peer_name, e->full);
    assert_int_equal(hr->peer_creation, ecreation);
    assert_int_equal(hr->flags, KILN_DFLAGS_VISIBLE);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "lists:member('%s', nodes()).", me);
    erl_await(e, cmd, "true", 3000);

    /* Same name again while the first connection is up: "alive". Our hook
     * default says true; erl drops the old connection, then acks. */
    int fd2 = connect_local(nd.port);
    kiln_hs *hs2 = new_hs(KILN_HS_INITIATOR, me, e->full, COOKIE, KILN_DFLAGS_VISIBLE, 4243);
    r = drive(hs2, fd2, 10000);
    if (r.st != KILN_HS_DONE)
        fail_msg("second handshake failed: %s; erl log:\n%s", kiln_strerror(kiln_hs_get_result(hs2)->err),
                 e->log ? e->log : "");
    assert_int_equal(kiln_hs_get_result(hs2)->status, KILN_HS_ST_ALIVE);
    /* The old socket is closed by erl. */
    uint8_t buf[4096];
    long end = now_ms() + 5000;
    ssize_t got;
    do {
        got = read_some(fd, buf, sizeof buf, 500);
    } while (got != 0 && now_ms() < end);
    assert_int_equal(got, 0);
    erl_await(e, cmd, "true", 3000);
    kiln_hs_free(hs);
    kiln_hs_free(hs2);
    close(fd);
    close(fd2);
    erl_stop(e);
}

/* (d) Refusals: a wrong cookie both ways, and missing mandatory flags. */
static void test_refusals(void **state)
{
    (void)state;
    uint16_t eport = free_port();
    char sname[64], me[128], me_s[64];
    names(sname, sizeof sname, "tr");
    struct erl_node *e = erl_start(sname, eport);
    kiln_epmd_node nd;
    char got_name[1100];
    assert_true(epmd_port_please(eport, sname, &nd, got_name));

    /* We dial with the wrong cookie: erl checks our digest and closes. */
    snprintf(me, sizeof me, "kilnr%ld@%s", (long)getpid(), g_host);
    int fd = connect_local(nd.port);
    kiln_hs *hs = new_hs(KILN_HS_INITIATOR, me, e->full, "wrong", KILN_DFLAGS_VISIBLE, 77);
    struct hs_run r = drive(hs, fd, 10000);
    assert_int_equal(r.st, KILN_HS_FAILED);
    assert_int_equal(kiln_hs_get_result(hs)->err, KILN_EBADCOOKIE);
    assert_true(log_has(e, "Invalid challenge reply", 3000));
    kiln_hs_free(hs);
    close(fd);

    /* We dial without MAP_TAG: erl answers not_allowed. */
    snprintf(me, sizeof me, "kilnf%ld@%s", (long)getpid(), g_host);
    fd = connect_local(nd.port);
    uint64_t weak = KILN_DFLAGS_VISIBLE & ~(KILN_DFLAG_MAP_TAG | KILN_DFLAG_MANDATORY_25_DIGEST);
    hs = new_hs(KILN_HS_INITIATOR, me, e->full, COOKIE, weak, 78);
    r = drive(hs, fd, 10000);
    assert_int_equal(r.st, KILN_HS_FAILED);
    assert_int_equal(kiln_hs_get_result(hs)->err, KILN_EREFUSED);
    assert_int_equal(kiln_hs_get_result(hs)->status, KILN_HS_ST_NOT_ALLOWED);
    assert_true(log_has(e, "MAP_TAG", 3000));
    kiln_hs_free(hs);
    close(fd);

    /* erl dials us and we hold another cookie: our acceptor refuses. */
    names(me_s, sizeof me_s, "kilnw");
    snprintf(me, sizeof me, "%s@%s", me_s, g_host);
    uint16_t lport;
    int lfd = listen_any(0, &lport);
    uint8_t result;
    uint32_t creation;
    int afd = epmd_register(eport, me_s, lport, &result, &creation);
    assert_int_equal(result, 0);
    char cmd[256], res[256];
    snprintf(cmd, sizeof cmd, "spawn(fun() -> net_adm:ping('%s') end), ok.", me);
    erl_eval(e, cmd, res, sizeof res);
    fd = accept_within(lfd, 10000);
    hs = new_hs(KILN_HS_ACCEPTOR, me, NULL, "wrong", KILN_DFLAGS_VISIBLE, creation);
    r = drive(hs, fd, 10000);
    assert_int_equal(r.st, KILN_HS_FAILED);
    assert_int_equal(kiln_hs_get_result(hs)->err, KILN_EBADCOOKIE);
    assert_string_equal(kiln_hs_get_result(hs)->peer_name, e->full);
    kiln_hs_free(hs);
    close(fd);
    snprintf(cmd, sizeof cmd, "lists:member('%s', nodes()).", me);
    erl_await(e, cmd, "false", 1000);
    close(afd);
    close(lfd);
    erl_stop(e);
}

/* ---- (e) our embedded EPMD server serving a real erl ---- */

struct epmd_srv_thread {
    kiln_epmd_server *srv;
    pthread_mutex_t mu;
    int lfd;
    int stop_pipe[2];
    pthread_t th;
};

struct conn {
    int fd;
    uint8_t buf[4096];
    size_t len;
    bool keep;
};

static void *epmd_thread(void *arg)
{
    struct epmd_srv_thread *t = arg;
    struct conn conns[64];
    int nconns = 0;
    kiln_epmd_buf out = {0};
    for (;;) {
        struct pollfd p[66];
        p[0] = (struct pollfd){.fd = t->stop_pipe[0], .events = POLLIN};
        p[1] = (struct pollfd){.fd = t->lfd, .events = POLLIN};
        for (int i = 0; i < nconns; i++)
            p[2 + i] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
        if (poll(p, (nfds_t)(2 + nconns), -1) < 0)
            continue;
        if (p[0].revents)
            break;
        if ((p[1].revents & POLLIN) && nconns < 64) {
            int fd = accept4(t->lfd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0)
                conns[nconns++] = (struct conn){.fd = fd};
        }
        for (int i = 0; i < nconns; i++) {
            if (!p[2 + i].revents)
                continue;
            struct conn *c = &conns[i];
            ssize_t got = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
            bool close_it = got <= 0;
            if (got > 0 && !c->keep) {
                c->len += (size_t)got;
                kiln_epmd_reply rep;
                size_t used;
                out.len = 0;
                pthread_mutex_lock(&t->mu);
                /* Everything here comes over loopback: a local peer. */
                int rc = kiln_epmd_server_feed(t->srv, (uint64_t)c->fd, true, c->buf, c->len, &out, &rep, &used);
                pthread_mutex_unlock(&t->mu);
                if (rc != KILN_EPMD_NEED_MORE) {
                    if (out.len)
                        write_all(c->fd, out.data, out.len);
                    c->keep = rc == KILN_OK && rep.action == KILN_EPMD_KEEP;
                    close_it = !c->keep;
                }
            }
            if (close_it) {
                pthread_mutex_lock(&t->mu);
                kiln_epmd_server_closed(t->srv, (uint64_t)c->fd);
                pthread_mutex_unlock(&t->mu);
                close(c->fd);
                conns[i] = conns[--nconns];
                p[2 + i] = p[2 + nconns];
                i--;
            }
        }
    }
    for (int i = 0; i < nconns; i++)
        close(conns[i].fd);
    kiln_epmd_buf_free(&out);
    return NULL;
}

static void test_embedded_epmd(void **state)
{
    (void)state;
    uint16_t eport;
    struct epmd_srv_thread t = {0};
    t.lfd = listen_any(0, &eport);
    kiln_epmd_server_config cfg = {.port = eport};
    t.srv = kiln_epmd_server_new(&cfg);
    pthread_mutex_init(&t.mu, NULL);
    assert_int_equal(pipe2(t.stop_pipe, O_CLOEXEC), 0);
    pthread_create(&t.th, NULL, epmd_thread, &t);

    /* The embedding node registers itself directly, no socket. */
    char me_s[64], me[128], sname[64];
    names(me_s, sizeof me_s, "kilne");
    names(sname, sizeof sname, "tm");
    uint16_t lport;
    int lfd = listen_any(0, &lport);
    uint32_t creation;
    kiln_epmd_node self = {lport, KILN_EPMD_NODE_NORMAL, 0, 6, 5, U8(me_s), strlen(me_s), NULL, 0};
    pthread_mutex_lock(&t.mu);
    assert_int_equal(kiln_epmd_server_register(t.srv, UINT64_MAX, &self, &creation), KILN_OK);
    pthread_mutex_unlock(&t.mu);

    /* erl's own `epmd -daemon` cannot bind the port we hold, so erl
     * registers with our server. */
    struct erl_node *e = erl_start(sname, eport);
    snprintf(me, sizeof me, "%s@%s", me_s, g_host);
    pthread_mutex_lock(&t.mu);
    const kiln_epmd_entry *ent = kiln_epmd_server_lookup(t.srv, U8(sname), strlen(sname));
    assert_non_null(ent);
    assert_int_equal(ent->node.highest, 6);
    assert_int_equal(ent->node.lowest, 5);
    assert_true(ent->creation >= 4);
    uint32_t ecr = ent->creation;
    pthread_mutex_unlock(&t.mu);
    /* The creation we handed out is the one erl uses. */
    assert_int_equal(erl_creation(e), ecr);
    char want[128];
    snprintf(want, sizeof want, "{\"%s\",%u}", me_s, (unsigned)lport);
    erl_await(e, "net_adm:names().", want, 3000);

    /* erl pings us: PORT_PLEASE2 through our server (answered, then
     * closed, which erl waits for), then the handshake with our acceptor. */
    char cmd[256], res[256];
    snprintf(cmd, sizeof cmd, "spawn(fun() -> net_adm:ping('%s') end), ok.", me);
    erl_eval(e, cmd, res, sizeof res);
    int fd = accept_within(lfd, 10000);
    kiln_hs *hs = new_hs(KILN_HS_ACCEPTOR, me, NULL, COOKIE, KILN_DFLAGS_VISIBLE, creation);
    struct hs_run r = drive(hs, fd, 10000);
    if (r.st != KILN_HS_DONE)
        fail_msg("handshake failed: %s", kiln_strerror(kiln_hs_get_result(hs)->err));
    assert_int_equal(kiln_hs_get_result(hs)->peer_creation, ecr);
    snprintf(cmd, sizeof cmd, "lists:member('%s', nodes()).", me);
    erl_await(e, cmd, "true", 3000);
    kiln_hs_free(hs);
    close(fd);

    /* erl going away closes its registration socket: unregistered. */
    erl_stop(e);
    long end = now_ms() + 3000;
    bool gone = false;
    while (!gone && now_ms() < end) {
        pthread_mutex_lock(&t.mu);
        gone = kiln_epmd_server_lookup(t.srv, U8(sname), strlen(sname)) == NULL;
        pthread_mutex_unlock(&t.mu);
        usleep(20000);
    }
    assert_true(gone);

    assert_int_equal(write(t.stop_pipe[1], "x", 1), 1);
    pthread_join(t.th, NULL);
    close(t.stop_pipe[0]);
    close(t.stop_pipe[1]);
    close(t.lfd);
    close(lfd);
    kiln_epmd_server_free(t.srv);
    pthread_mutex_destroy(&t.mu);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_epmd, teardown),
        cmocka_unit_test_teardown(test_accept, teardown),
        cmocka_unit_test_teardown(test_connect, teardown),
        cmocka_unit_test_teardown(test_refusals, teardown),
        cmocka_unit_test_teardown(test_embedded_epmd, teardown),
    };
    if (argc > 1) {
        static char pattern[128];
        snprintf(pattern, sizeof pattern, "test_%s", argv[1]);
        cmocka_set_test_filter(pattern);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
