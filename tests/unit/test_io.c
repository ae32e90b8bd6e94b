/* Network I/O for processes over real loopback sockets, in each mode the
 * runtime has: io_uring with multishot receives (the default), io_uring
 * with one operation per receive, and epoll (forced through the
 * configuration). */
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <string.h>
#include <unistd.h>

enum { MULTISHOT, ONESHOT, EPOLL, NMODES };
static const char *const backend_names[] = {"io_uring", "io_uring", "epoll"};
static const char *const mode_names[] = {"io_uring multishot", "io_uring one-shot", "epoll"};

static kiln_rt *rt_with(int mode)
{
    kiln_rt_config cfg;
    kiln_rt_config_init(&cfg);
    cfg.io_backend = mode == EPOLL ? KILN_IO_EPOLL : KILN_IO_URING;
    cfg.io_recv_multishot = mode == ONESHOT ? -1 : 0;
    return kiln_test_rt(2, &cfg);
}

/* ---- echo server ---- */

struct server {
    int lfd;
    uint16_t port;
    _Atomic long served;
    int clients;
};

static void echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[7000]; /* odd size: reads and writes do not line up with the client's */
    for (;;) {
        size_t got;
        if (kiln_io_recv(fd, buf, sizeof buf, 5000, &got) != KILN_OK || got == 0)
            break;
        if (kiln_io_send(fd, buf, got, 5000) != KILN_OK)
            break;
    }
    kiln_io_close(fd);
}

static void acceptor(void *arg)
{
    struct server *s = arg;
    for (int i = 0; i < s->clients; i++) {
        int fd;
        if (kiln_tcp_accept(s->lfd, 5000, &fd) != KILN_OK)
            return;
        kiln_spawn_fn(kiln_current_rt(), echo_conn, (void *)(intptr_t)fd, NULL, NULL);
        atomic_fetch_add(&s->served, 1);
    }
}

struct client {
    uint16_t port;
    size_t bytes;
    _Atomic long ok;
    _Atomic long failed;
};

static void client_body(void *arg)
{
    struct client *c = arg;
    int fd;
    if (kiln_tcp_connect("127.0.0.1", c->port, 5000, &fd) != KILN_OK) {
        atomic_fetch_add(&c->failed, 1);
        return;
    }
    uint8_t *out = malloc(c->bytes), *in = malloc(c->bytes);
    for (size_t i = 0; i < c->bytes; i++)
        out[i] = (uint8_t)(i * 7 + (uintptr_t)&fd);
    bool good = true;
    /* Send in pieces and read back concurrently, so neither side's socket
     * buffer has to hold everything. */
    size_t sent = 0, recvd = 0;
    while (good && recvd < c->bytes) {
        if (sent < c->bytes) {
            size_t n = c->bytes - sent < 65536 ? c->bytes - sent : 65536;
            good = kiln_io_send(fd, out + sent, n, 5000) == KILN_OK;
            sent += n;
        }
        while (good && recvd < sent) {
            size_t got;
            good = kiln_io_recv(fd, in + recvd, sent - recvd, 5000, &got) == KILN_OK && got > 0;
            recvd += got;
        }
    }
    good = good && memcmp(out, in, c->bytes) == 0;
    kiln_io_close(fd);
    free(out);
    free(in);
    atomic_fetch_add(good ? &c->ok : &c->failed, 1);
}

static void test_echo_many_clients(void **state)
{
    (void)state;
    for (int b = 0; b < NMODES; b++) {
        kiln_rt *rt = rt_with(b);
        assert_string_equal(kiln_io_backend_name(rt), backend_names[b]);
        struct server *s = calloc(1, sizeof(*s));
        s->clients = 51;
        assert_int_equal(kiln_tcp_listen(rt, "127.0.0.1", 0, 128, &s->lfd, &s->port), KILN_OK);
        assert_int_not_equal(s->port, 0);
        assert_int_equal(kiln_spawn_fn(rt, acceptor, s, NULL, NULL), KILN_OK);
        struct client *big = calloc(1, sizeof(*big)), *small = calloc(1, sizeof(*small));
        big->port = small->port = s->port;
        big->bytes = 1 << 20;
        small->bytes = 1000;
        assert_int_equal(kiln_spawn_fn(rt, client_body, big, NULL, NULL), KILN_OK);
        for (int i = 0; i < 50; i++)
            assert_int_equal(kiln_spawn_fn(rt, client_body, small, NULL, NULL), KILN_OK);
        assert_true(kiln_test_wait_count(&small->ok, 50, 20000));
        assert_true(kiln_test_wait_count(&big->ok, 1, 20000));
        assert_int_equal(atomic_load(&small->failed) + atomic_load(&big->failed), 0);
        assert_int_equal(atomic_load(&s->served), 51);
        assert_int_equal(kiln_rt_wait_idle(rt, 10000), KILN_OK);
        kiln_io_stats st;
        assert_int_equal(kiln_io_get_stats(rt, &st), KILN_OK);
        if (b == MULTISHOT) {
            /* The data came through provided buffers, not one operation each. */
            assert_int_equal(st.recv_multishot, 1);
            assert_true(st.multishot_arms >= 102);
            assert_true(st.multishot_buffers >= 102);
        } else {
            assert_int_equal(st.recv_multishot, 0);
            assert_int_equal(st.multishot_arms, 0);
            assert_int_equal(st.multishot_buffers, 0);
            if (b == ONESHOT)
                assert_true(st.oneshot_recvs > 0);
        }
        close(s->lfd);
        kiln_rt_stop(rt);
        free(s);
        free(big);
        free(small);
    }
}

/* ---- timeouts, refusals, closes ---- */

struct edge {
    uint16_t port, closed_port;
    int rc_recv_timeout;
    uint64_t waited;
    int rc_refused, refused_errno;
    int rc_eof;
    size_t eof_got;
    int rc_accept_timeout;
    int lfd;
};

static void closer(void *arg)
{
    struct edge *e = arg;
    int fd;
    if (kiln_tcp_accept(e->lfd, 5000, &fd) != KILN_OK)
        return;
    kiln_sleep(150); /* long enough for the client's timed-out receive */
    kiln_io_close(fd);
}

static void edge_body(void *arg)
{
    struct edge *e = arg;
    int fd;
    if (kiln_tcp_connect("127.0.0.1", e->port, 5000, &fd) != KILN_OK)
        return;
    char buf[16];
    size_t got = 99;
    uint64_t t0 = kiln_now_ms();
    e->rc_recv_timeout = kiln_io_recv(fd, buf, sizeof buf, 50, &got);
    e->waited = kiln_now_ms() - t0;
    /* The server closes: the next receive sees the end of the stream. */
    e->rc_eof = kiln_io_recv(fd, buf, sizeof buf, 5000, &e->eof_got);
    kiln_io_close(fd);
    int fd2;
    e->rc_refused = kiln_tcp_connect("127.0.0.1", e->closed_port, 2000, &fd2);
    e->refused_errno = kiln_io_errno();
    int fd3;
    e->rc_accept_timeout = kiln_tcp_accept(e->lfd, 30, &fd3);
}

static void test_timeouts_refusal_and_eof(void **state)
{
    (void)state;
    for (int b = 0; b < NMODES; b++) {
        kiln_rt *rt = rt_with(b);
        struct edge *e = calloc(1, sizeof(*e));
        assert_int_equal(kiln_tcp_listen(rt, "127.0.0.1", 0, 16, &e->lfd, &e->port), KILN_OK);
        /* A port nobody listens on: bind one, note it, close it. */
        int tmp;
        assert_int_equal(kiln_tcp_listen(rt, "127.0.0.1", 0, 1, &tmp, &e->closed_port), KILN_OK);
        close(tmp);
        assert_int_equal(kiln_spawn_fn(rt, closer, e, NULL, NULL), KILN_OK);
        kiln_test_run_in_process(rt, edge_body, e, 10000);
        assert_int_equal(e->rc_recv_timeout, KILN_ETIMEOUT);
        assert_true(e->waited >= 50 && e->waited < 2000);
        assert_int_equal(e->rc_eof, KILN_OK);
        assert_int_equal(e->eof_got, 0);
        assert_int_equal(e->rc_refused, KILN_ESYS);
        assert_int_equal(e->refused_errno, ECONNREFUSED);
        assert_int_equal(e->rc_accept_timeout, KILN_ETIMEOUT);
        close(e->lfd);
        kiln_rt_stop(rt);
        free(e);
    }
}

/* A process killed while an operation is in flight: nothing leaks, nothing
 * writes into freed memory (ASan checks both), and stop is clean. */
struct killme {
    int lfd;
    _Atomic int waiting;
};

static void blocked_accept(void *arg)
{
    struct killme *k = arg;
    atomic_store(&k->waiting, 1);
    int fd;
    kiln_tcp_accept(k->lfd, -1, &fd);
}

static void blocked_recv(void *arg)
{
    struct killme *k = arg;
    int fd;
    uint16_t port;
    (void)port;
    if (kiln_tcp_accept(k->lfd, -1, &fd) != KILN_OK)
        return;
    char buf[4096];
    size_t got;
    atomic_store(&k->waiting, 2);
    kiln_io_recv(fd, buf, sizeof buf, -1, &got);
}

static void connect_and_idle(void *arg)
{
    uint16_t port = (uint16_t)(uintptr_t)arg;
    int fd;
    if (kiln_tcp_connect("127.0.0.1", port, 5000, &fd) == KILN_OK)
        kiln_sleep(3600 * 1000);
}

static void test_kill_during_io(void **state)
{
    (void)state;
    for (int b = 0; b < NMODES; b++) {
        kiln_rt *rt = rt_with(b);
        struct killme *k = calloc(1, sizeof(*k));
        uint16_t port;
        assert_int_equal(kiln_tcp_listen(rt, "127.0.0.1", 0, 16, &k->lfd, &port), KILN_OK);
        kiln_term acc;
        assert_int_equal(kiln_spawn_fn(rt, blocked_accept, k, NULL, &acc), KILN_OK);
        assert_true(kiln_test_wait_flag(&k->waiting, 5000));
        usleep(20000);
        assert_int_equal(kiln_rt_exit(rt, acc, KILN_ATOM_KILL), KILN_OK);
        for (int i = 0; i < 500 && kiln_is_alive(rt, acc); i++)
            usleep(1000);
        assert_false(kiln_is_alive(rt, acc));
        /* Now one blocked in a receive on an idle connection, left for stop. */
        atomic_store(&k->waiting, 0);
        assert_int_equal(kiln_spawn_fn(rt, blocked_recv, k, NULL, NULL), KILN_OK);
        assert_int_equal(kiln_spawn_fn(rt, connect_and_idle, (void *)(uintptr_t)port, NULL, NULL), KILN_OK);
        for (int i = 0; i < 5000 && atomic_load(&k->waiting) != 2; i++)
            usleep(1000);
        assert_int_equal(atomic_load(&k->waiting), 2);
        assert_int_equal(kiln_rt_stop(rt), KILN_OK);
        close(k->lfd);
        free(k);
    }
}

/* ---- a long run does not hold completions back ----
 *
 * With io_uring the first worker reaps completions; a process that runs a
 * long time on it must not keep a receive on another process from
 * completing while a second worker is free. */

struct held {
    int lfd;
    _Atomic int waiting, got, hog_stop, hog_done;
};

/* A plain blocking client on the test's thread. */
static int connect_blocking(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void held_reader(void *arg)
{
    struct held *h = arg;
    int fd;
    if (kiln_tcp_accept(h->lfd, 5000, &fd) != KILN_OK)
        return;
    atomic_store(&h->waiting, 1);
    char buf[16];
    size_t got;
    if (kiln_io_recv(fd, buf, sizeof buf, 10000, &got) == KILN_OK && got > 0)
        atomic_store(&h->got, 1);
    kiln_io_close(fd);
}

static void hog(void *arg)
{
    struct held *h = arg;
    /* Never blocks, never yields, never enters the kernel (the clock is
     * read in user space): holds its worker until told to stop. Work the
     * kernel owes this thread (io_uring completions with COOP_TASKRUN)
     * then waits for a timer tick. */
    uint64_t end = kiln_now_ms() + 10000;
    while (!atomic_load(&h->hog_stop) && kiln_now_ms() < end) {
    }
    atomic_store(&h->hog_done, 1);
}

static void test_long_run_does_not_hold_io(void **state)
{
    (void)state;
    for (int b = 0; b < NMODES; b++) {
        /* Several rounds: the hog lands on either worker. */
        for (int round = 0; round < 12; round++) {
            kiln_rt *rt = rt_with(b);
            struct held *h = calloc(1, sizeof(*h));
            uint16_t port;
            assert_int_equal(kiln_tcp_listen(rt, "127.0.0.1", 0, 4, &h->lfd, &port), KILN_OK);
            assert_int_equal(kiln_spawn_fn(rt, held_reader, h, NULL, NULL), KILN_OK);
            int c = connect_blocking(port);
            assert_true(c >= 0);
            assert_true(kiln_test_wait_flag(&h->waiting, 5000));
            assert_int_equal(kiln_spawn_fn(rt, hog, h, NULL, NULL), KILN_OK);
            usleep(30000); /* the hog has a worker, the reader waits */
            assert_int_equal(write(c, "ping", 4), 4);
            bool got = kiln_test_wait_flag(&h->got, 3000);
            bool hog_still_ran = !atomic_load(&h->hog_done);
            atomic_store(&h->hog_stop, 1);
            if (!got || !hog_still_ran)
                fprintf(stderr, "%s round %d: got=%d hog_done=%d\n", mode_names[b], round, got,
                        !hog_still_ran);
            assert_true(got);
            assert_true(hog_still_ran);
            close(c);
            assert_int_equal(kiln_rt_stop(rt), KILN_OK);
            close(h->lfd);
            free(h);
        }
    }
}

/* ---- multishot receives: few buffers, and closing ---- */

/* Four 4 KiB buffers for 21 busy connections: the ring runs dry again
 * and again, streams fall back to one-shot receives and start over, and
 * every byte still arrives in order. */
static void test_multishot_short_of_buffers(void **state)
{
    (void)state;
    kiln_rt_config cfg;
    kiln_rt_config_init(&cfg);
    cfg.io_backend = KILN_IO_URING;
    cfg.io_recv_buffers = 4;
    cfg.io_recv_buffer_size = 4096; /* receives of 7000 bytes stay below the bulk size */
    kiln_rt *rt = kiln_test_rt(2, &cfg);
    struct server *s = calloc(1, sizeof(*s));
    s->clients = 21;
    assert_int_equal(kiln_tcp_listen(rt, "127.0.0.1", 0, 128, &s->lfd, &s->port), KILN_OK);
    assert_int_equal(kiln_spawn_fn(rt, acceptor, s, NULL, NULL), KILN_OK);
    struct client *big = calloc(1, sizeof(*big)), *mid = calloc(1, sizeof(*mid));
    big->port = mid->port = s->port;
    big->bytes = 1 << 20;
    mid->bytes = 64 << 10;
    assert_int_equal(kiln_spawn_fn(rt, client_body, big, NULL, NULL), KILN_OK);
    for (int i = 0; i < 20; i++)
        assert_int_equal(kiln_spawn_fn(rt, client_body, mid, NULL, NULL), KILN_OK);
    assert_true(kiln_test_wait_count(&mid->ok, 20, 30000));
    assert_true(kiln_test_wait_count(&big->ok, 1, 30000));
    assert_int_equal(atomic_load(&mid->failed) + atomic_load(&big->failed), 0);
    assert_int_equal(kiln_rt_wait_idle(rt, 10000), KILN_OK);
    kiln_io_stats st;
    assert_int_equal(kiln_io_get_stats(rt, &st), KILN_OK);
    assert_int_equal(st.recv_multishot, 1);
    assert_true(st.buffer_shortages > 0);
    assert_true(st.oneshot_recvs > 0);
    close(s->lfd);
    kiln_rt_stop(rt);
    free(s);
    free(big);
    free(mid);
}

struct closing {
    int lfd;
    int fd;
    bool close_in_process;
    _Atomic int have_read, release;
};

static void read_once_then_idle(void *arg)
{
    struct closing *c = arg;
    if (kiln_tcp_accept(c->lfd, 5000, &c->fd) != KILN_OK)
        return;
    char buf[16];
    size_t got;
    if (kiln_io_recv(c->fd, buf, sizeof buf, 5000, &got) != KILN_OK || got == 0)
        return;
    if (c->close_in_process)
        kiln_io_close(c->fd);
    atomic_store(&c->have_read, 1);
    while (!atomic_load(&c->release))
        kiln_sleep(5);
}

/* After a receive the kernel holds the socket for the next one; closing
 * it, from the process or from another thread, must still end the
 * connection (the peer reads the end of the stream). */
static void test_close_ends_the_connection(void **state)
{
    (void)state;
    for (int b = 0; b < NMODES; b++) {
        for (int in_process = 0; in_process < 2; in_process++) {
            kiln_rt *rt = rt_with(b);
            struct closing *c = calloc(1, sizeof(*c));
            c->close_in_process = in_process;
            uint16_t port;
            assert_int_equal(kiln_tcp_listen(rt, "127.0.0.1", 0, 4, &c->lfd, &port), KILN_OK);
            assert_int_equal(kiln_spawn_fn(rt, read_once_then_idle, c, NULL, NULL), KILN_OK);
            int peer = connect_blocking(port);
            assert_true(peer >= 0);
            assert_int_equal(write(peer, "hi", 2), 2);
            assert_true(kiln_test_wait_flag(&c->have_read, 5000));
            if (!in_process)
                assert_int_equal(kiln_io_close(c->fd), KILN_OK);
            struct timeval tv = {.tv_sec = 3};
            setsockopt(peer, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            char buf[4];
            ssize_t r = read(peer, buf, sizeof buf);
            if (r != 0)
                fprintf(stderr, "%s, closed %s: read gave %zd (errno %d)\n", mode_names[b],
                        in_process ? "in the process" : "from another thread", r, errno);
            assert_int_equal(r, 0);
            atomic_store(&c->release, 1);
            close(peer);
            assert_int_equal(kiln_rt_stop(rt), KILN_OK);
            close(c->lfd);
            free(c);
        }
    }
}

/* close() instead of kiln_io_close leaves the runtime's pending receive
 * on the old socket; the next socket to get the same number must still
 * read its own bytes, not the old connection's. */
struct reuse {
    int lfd;
    int fd1, fd2;
    _Atomic int step;
    char got[16];
    size_t ngot;
    int rc;
};

static void reuse_body(void *arg)
{
    struct reuse *r = arg;
    char buf[16];
    size_t got;
    if (kiln_tcp_accept(r->lfd, 5000, &r->fd1) != KILN_OK ||
        kiln_io_recv(r->fd1, buf, sizeof buf, 5000, &got) != KILN_OK)
        return;
    close(r->fd1); /* the wrong call, on purpose */
    atomic_store(&r->step, 1);
    if (kiln_tcp_accept(r->lfd, 5000, &r->fd2) != KILN_OK)
        return;
    atomic_store(&r->step, 2);
    while (atomic_load(&r->step) != 3)
        kiln_sleep(2);
    r->rc = kiln_io_recv(r->fd2, r->got, sizeof r->got, 5000, &r->ngot);
    kiln_io_close(r->fd2);
    atomic_store(&r->step, 4);
}

enum wait_kind { WAIT_RECV, WAIT_SEND, WAIT_ACCEPT, NWAITS };
static const char *const wait_names[] = {"a receive", "a send", "an accept"};

struct waiting_io {
    enum wait_kind kind;
    int lfd;
    _Atomic int fd; /* what gets closed: the connection, or lfd for an accept */
    _Atomic int waiting, done, rc, err;
};

#define SEND_BYTES (64 << 20) /* more than loopback buffers hold when nobody reads */

static void wait_on_socket(void *arg)
{
    struct waiting_io *w = arg;
    int fd = w->lfd;
    if (w->kind != WAIT_ACCEPT && kiln_tcp_accept(w->lfd, 5000, &fd) != KILN_OK)
        return;
    atomic_store(&w->fd, fd);
    char *big = w->kind == WAIT_SEND ? calloc(1, SEND_BYTES) : NULL;
    atomic_store(&w->waiting, 1);
    int rc;
    if (w->kind == WAIT_RECV) {
        char buf[16];
        size_t got;
        rc = kiln_io_recv(fd, buf, sizeof buf, 20000, &got);
    } else if (w->kind == WAIT_SEND) {
        rc = big ? kiln_io_send(fd, big, SEND_BYTES, 20000) : KILN_ENOMEM;
        free(big);
    } else {
        int conn;
        rc = kiln_tcp_accept(fd, 20000, &conn);
    }
    atomic_store(&w->rc, rc);
    atomic_store(&w->err, kiln_io_errno());
    atomic_store(&w->done, 1);
}

static void close_it(void *arg) { kiln_io_close(atomic_load((_Atomic int *)arg)); }

/* The process has been waiting in the same blocked state for 50 ms. */
static bool settled_in_wait(kiln_rt *rt, kiln_term pid)
{
    int steady = 0;
    for (int i = 0; i < 1000 && steady < 5; i++) {
        kiln_proc_info info;
        bool waiting = kiln_process_info(rt, pid, &info) == KILN_OK && info.status == KILN_PS_WAITING;
        steady = waiting ? steady + 1 : 0;
        usleep(10 * 1000);
    }
    return steady >= 5;
}

/* A process waiting on a socket (to receive, to send into full buffers, or
 * to accept) that someone else closes hears of it at once, as
 * gen_tcp:recv returns {error, closed}, whoever closed it: a process of
 * the same runtime, or a thread outside any runtime. */
static void test_close_wakes_the_waiting_process(void **state)
{
    (void)state;
    int failures = 0;
    for (int b = 0; b < NMODES; b++) {
        for (int kind = 0; kind < NWAITS; kind++) {
            for (int by_process = 0; by_process < 2; by_process++) {
                kiln_rt *rt = rt_with(b);
                struct waiting_io *w = calloc(1, sizeof(*w));
                w->kind = (enum wait_kind)kind;
                uint16_t port;
                assert_int_equal(kiln_tcp_listen(rt, "127.0.0.1", 0, 4, &w->lfd, &port), KILN_OK);
                kiln_term waiter;
                assert_int_equal(kiln_spawn_fn(rt, wait_on_socket, w, NULL, &waiter), KILN_OK);
                int peer = kind == WAIT_ACCEPT ? -1 : connect_blocking(port);
                assert_true(kind == WAIT_ACCEPT || peer >= 0);
                assert_true(kiln_test_wait_flag(&w->waiting, 5000));
                /* Into the wait: a send first fills the buffers, which takes
                 * a while under the sanitizers. Closing a socket while a
                 * call is still using it is another matter (close(2)'s). */
                assert_true(settled_in_wait(rt, waiter));
                if (by_process)
                    assert_int_equal(kiln_spawn_fn(rt, close_it, &w->fd, NULL, NULL), KILN_OK);
                else
                    assert_int_equal(kiln_io_close(atomic_load(&w->fd)), KILN_OK);
                bool done = kiln_test_wait_flag(&w->done, 5000);
                int rc = atomic_load(&w->rc), err = atomic_load(&w->err);
                bool ok = done && rc == KILN_ESYS && err == EBADF;
                if (!ok)
                    fprintf(stderr, "%s, %s closed by %s: %s (%s, errno %d)\n", mode_names[b], wait_names[kind],
                            by_process ? "a process" : "another thread",
                            done ? "returned" : "still waits after 5 s", kiln_strerror(rc), err);
                failures += !ok;
                if (peer >= 0)
                    close(peer);
                assert_int_equal(kiln_rt_stop(rt), KILN_OK);
                if (kind != WAIT_ACCEPT)
                    close(w->lfd);
                free(w);
            }
        }
    }
    assert_int_equal(failures, 0);
}

static void test_fd_number_reused_after_plain_close(void **state)
{
    (void)state;
    for (int b = 0; b < NMODES; b++) {
        kiln_rt *rt = rt_with(b);
        struct reuse *r = calloc(1, sizeof(*r));
        uint16_t port;
        assert_int_equal(kiln_tcp_listen(rt, "127.0.0.1", 0, 4, &r->lfd, &port), KILN_OK);
        assert_int_equal(kiln_spawn_fn(rt, reuse_body, r, NULL, NULL), KILN_OK);
        /* Both client sockets exist before the server's close, so the
         * number it frees goes to its next accept. */
        int c2 = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(c2 >= 0);
        int c1 = connect_blocking(port);
        assert_true(c1 >= 0);
        assert_int_equal(write(c1, "first", 5), 5);
        for (int i = 0; i < 5000 && atomic_load(&r->step) < 1; i++)
            usleep(1000);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(connect(c2, (struct sockaddr *)&sa, sizeof sa), 0);
        for (int i = 0; i < 5000 && atomic_load(&r->step) < 2; i++)
            usleep(1000);
        assert_int_equal(atomic_load(&r->step), 2);
        /* The old connection talks first: its bytes must go nowhere. */
        ssize_t w1 = write(c1, "stale", 5);
        (void)w1;
        usleep(20000);
        assert_int_equal(write(c2, "fresh", 5), 5);
        atomic_store(&r->step, 3);
        for (int i = 0; i < 5000 && atomic_load(&r->step) < 4; i++)
            usleep(1000);
        if (r->ngot != 5 || memcmp(r->got, "fresh", 5) != 0)
            fprintf(stderr, "%s: fds %d then %d, read \"%.*s\"\n", mode_names[b], r->fd1, r->fd2, (int)r->ngot,
                    r->got);
        assert_int_equal(r->fd1, r->fd2); /* else this tests nothing */
        assert_int_equal(r->rc, KILN_OK);
        assert_int_equal(r->ngot, 5);
        assert_memory_equal(r->got, "fresh", 5);
        close(c1);
        close(c2);
        assert_int_equal(kiln_rt_stop(rt), KILN_OK);
        close(r->lfd);
        free(r);
    }
}

static void test_environment_forces_epoll(void **state)
{
    (void)state;
    setenv("KILN_IO_BACKEND", "epoll", 1);
    kiln_rt *rt = kiln_test_rt(1, NULL);
    assert_string_equal(kiln_io_backend_name(rt), "epoll");
    kiln_rt_stop(rt);
    unsetenv("KILN_IO_BACKEND");
    rt = kiln_test_rt(1, NULL);
    /* Unforced: io_uring wherever the kernel allows it (it does here). */
    assert_string_equal(kiln_io_backend_name(rt), "io_uring");
    kiln_rt_stop(rt);
}

static void test_calls_outside_a_process(void **state)
{
    (void)state;
    int fd;
    size_t got;
    char buf[4];
    assert_int_equal(kiln_tcp_accept(0, 0, &fd), KILN_ENOTPROC);
    assert_int_equal(kiln_tcp_connect("127.0.0.1", 1, 0, &fd), KILN_ENOTPROC);
    assert_int_equal(kiln_io_recv(0, buf, sizeof buf, 0, &got), KILN_ENOTPROC);
    assert_int_equal(kiln_io_send(0, buf, sizeof buf, 0), KILN_ENOTPROC);
    kiln_rt *rt = kiln_test_rt(1, NULL);
    assert_int_equal(kiln_tcp_listen(rt, "not-an-address", 0, 1, &fd, NULL), KILN_EINVAL);
    kiln_rt_stop(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo_many_clients),
        cmocka_unit_test(test_timeouts_refusal_and_eof),
        cmocka_unit_test(test_kill_during_io),
        cmocka_unit_test(test_long_run_does_not_hold_io),
        cmocka_unit_test(test_multishot_short_of_buffers),
        cmocka_unit_test(test_close_ends_the_connection),
        cmocka_unit_test(test_close_wakes_the_waiting_process),
        cmocka_unit_test(test_fd_number_reused_after_plain_close),
        cmocka_unit_test(test_environment_forces_epoll),
        cmocka_unit_test(test_calls_outside_a_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
