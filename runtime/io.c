/* Network I/O for processes: back-end choice, sockets, deadlines, and the
 * calls of kiln/io.h on top of whichever back end the runtime runs. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "io.h"
#include "rt.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define KILN_HAVE_VALGRIND 1
#endif
#endif

/* Every running back end. kiln_io_close tells each of them, since a
 * socket may be closed by a thread outside any runtime, or by a process of
 * another runtime than the one whose back end waits on it. */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kiln_io *live_head;

static int choose(const kiln_rt *rt)
{
    const char *env = getenv("KILN_IO_BACKEND");
    if (env && strcmp(env, "epoll") == 0)
        return KILN_IO_EPOLL;
    if (env && strcmp(env, "io_uring") == 0)
        return KILN_IO_URING;
#ifdef KILN_HAVE_VALGRIND
    /* Valgrind (3.19) holds its one-thread-at-a-time lock through a
     * blocking io_uring_enter, so a worker waiting on the ring stops every
     * other thread, the ones that would wake it included, until its wait
     * times out (docs/design.md): unless asked for, epoll does the job. */
    if (rt->cfg.io_backend == KILN_IO_AUTO && RUNNING_ON_VALGRIND)
        return KILN_IO_EPOLL;
#endif
    return rt->cfg.io_backend;
}

int kiln_io_start(kiln_rt *rt)
{
    struct kiln_io *io = kiln_calloc(1, sizeof(*io));
    if (!io)
        return KILN_ENOMEM;
    int want = choose(rt), rc = KILN_ENOTSUP;
    if (want != KILN_IO_EPOLL) {
        rc = kiln_io_uring_start(rt, io);
        /* Refused by the kernel (EPERM in containers, ENOSYS, or the
         * io_uring_disabled sysctl): epoll does the same job. */
        if (rc != KILN_OK && want == KILN_IO_URING) {
            kiln_free(io);
            return rc;
        }
    }
    if (rc != KILN_OK)
        rc = kiln_io_epoll_start(rt, io);
    if (rc != KILN_OK) {
        kiln_free(io);
        return rc;
    }
    rt->io = io;
    io->rt = rt;
    pthread_mutex_lock(&live_lock);
    io->next_live = live_head;
    live_head = io;
    pthread_mutex_unlock(&live_lock);
    return KILN_OK;
}

void kiln_io_stop(kiln_rt *rt)
{
    if (!rt->io || rt->io_stopped)
        return;
    /* First out of the list: no close reaches a back end that stops. */
    pthread_mutex_lock(&live_lock);
    for (struct kiln_io **pp = &live_head; *pp; pp = &(*pp)->next_live)
        if (*pp == rt->io) {
            *pp = rt->io->next_live;
            break;
        }
    pthread_mutex_unlock(&live_lock);
    rt->io->ops->stop(rt);
    rt->io_stopped = true;
}

void kiln_io_fini(kiln_rt *rt)
{
    if (!rt->io)
        return;
    kiln_io_stop(rt);
    if (rt->io->ops->fini)
        rt->io->ops->fini(rt);
    kiln_free(rt->io);
    rt->io = NULL;
}

const char *kiln_io_backend_name(const kiln_rt *rt)
{
    return rt && rt->io ? rt->io->ops->name : "none";
}

int kiln_io_get_stats(const kiln_rt *rt, kiln_io_stats *out)
{
    if (!rt || !out)
        return KILN_EINVAL;
    memset(out, 0, sizeof(*out));
    if (rt->io && rt->io->ops->stats)
        rt->io->ops->stats((kiln_rt *)rt, out);
    return KILN_OK;
}

uint64_t kiln_io_deadline(int64_t timeout_ms)
{
    if (timeout_ms < 0)
        return 0;
    return kiln_now_ms() + (uint64_t)timeout_ms + (timeout_ms == 0);
}

int64_t kiln_io_left(uint64_t deadline)
{
    if (!deadline)
        return -1;
    uint64_t now = kiln_now_ms();
    return deadline > now ? (int64_t)(deadline - now) : 0;
}

int kiln_io_fail(struct kiln_proc *p, int err)
{
    struct kiln_proc_ext *e = kiln_proc_ext(p);
    if (e)
        e->io_errno = err;
    return KILN_ESYS;
}

void kiln_io_abandon(struct kiln_proc *p)
{
    struct kiln_proc_ext *e = atomic_load_explicit(&p->ext, memory_order_relaxed);
    if (!e || !p->rt->io)
        return;
    if (e->io_token) {
        p->rt->io->ops->abandon(p->rt, p);
        e->io_token = 0;
    }
    if (e->io_owned_fd >= 0) {
        close(e->io_owned_fd);
        e->io_owned_fd = -1;
    }
}

void kiln_io_drop_wake(kiln_msg *m)
{
    if ((m->flags & KILN_MF_IO_FD) && (int64_t)m->from >= 0)
        close((int)(int64_t)m->from);
}

int kiln_io_errno(void)
{
    struct kiln_proc *p = kiln_current_proc();
    struct kiln_proc_ext *e = p ? atomic_load_explicit(&p->ext, memory_order_relaxed) : NULL;
    return e ? e->io_errno : 0;
}

static struct kiln_proc *io_proc(void)
{
    struct kiln_proc *p = kiln_current_proc();
    return p && p->rt->io ? p : NULL;
}

/* ---- sockets ---- */

int kiln_tcp_listen(kiln_rt *rt, const char *addr, uint16_t port, int backlog, int *fd, uint16_t *bound_port)
{
    if (!rt || !rt->io || !fd)
        return KILN_EINVAL;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (addr && *addr) {
        if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
            return KILN_EINVAL;
    } else {
        sa.sin_addr.s_addr = htonl(INADDR_ANY);
    }
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | rt->io->ops->sock_flags, 0);
    if (s < 0)
        return KILN_ESYS;
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(s, backlog > 0 ? backlog : 128) != 0) {
        int e = errno;
        close(s);
        errno = e;
        return e == EADDRINUSE ? KILN_EBUSY : KILN_ESYS;
    }
    if (bound_port) {
        socklen_t len = sizeof(sa);
        getsockname(s, (struct sockaddr *)&sa, &len);
        *bound_port = ntohs(sa.sin_port);
    }
    *fd = s;
    return KILN_OK;
}

int kiln_tcp_accept(int listen_fd, int64_t timeout_ms, int *fd)
{
    struct kiln_proc *p = io_proc();
    if (!p)
        return KILN_ENOTPROC;
    if (!fd)
        return KILN_EINVAL;
    int rc = p->rt->io->ops->accept(p, listen_fd, kiln_io_deadline(timeout_ms), fd);
    if (rc == KILN_OK) {
        /* A number the kernel hands out again was closed behind our back
         * (close() rather than kiln_io_close): what we kept for it is stale. */
        p->rt->io->ops->forget_fd(p->rt, *fd);
        int one = 1;
        setsockopt(*fd, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof(one));
    }
    return rc;
}

struct resolve {
    const char *host;
    struct in_addr addr;
    int rc;
};

static void *resolve_blocking(void *arg)
{
    struct resolve *r = arg;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    r->rc = getaddrinfo(r->host, NULL, &hints, &res);
    if (r->rc == 0) {
        r->addr = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
        freeaddrinfo(res);
    }
    return NULL;
}

int kiln_tcp_connect(const char *addr, uint16_t port, int64_t timeout_ms, int *fd)
{
    struct kiln_proc *p = io_proc();
    if (!p)
        return KILN_ENOTPROC;
    if (!addr || !fd)
        return KILN_EINVAL;
    uint64_t deadline = kiln_io_deadline(timeout_ms);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        /* Name lookups can block for seconds: not on a worker thread. */
        struct resolve r = {.host = addr};
        int rc = kiln_blocking(resolve_blocking, &r, NULL);
        if (rc != KILN_OK)
            return rc;
        if (r.rc != 0)
            return kiln_io_fail(p, EHOSTUNREACH);
        sa.sin_addr = r.addr;
    }
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | p->rt->io->ops->sock_flags, 0);
    if (s < 0)
        return kiln_io_fail(p, errno);
    p->rt->io->ops->forget_fd(p->rt, s); /* as in kiln_tcp_accept */
    struct kiln_proc_ext *e = kiln_proc_ext(p);
    if (!e) {
        close(s);
        return KILN_ENOMEM;
    }
    /* Closed by the exit path if the process dies while connecting. */
    e->io_owned_fd = s;
    int rc = p->rt->io->ops->connect(p, s, &sa, deadline);
    e->io_owned_fd = -1;
    if (rc != KILN_OK) {
        p->rt->io->ops->forget_fd(p->rt, s);
        close(s);
        return rc;
    }
    int one = 1;
    setsockopt(s, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof(one));
    *fd = s;
    return KILN_OK;
}

int kiln_io_recv(int fd, void *buf, size_t cap, int64_t timeout_ms, size_t *got)
{
    struct kiln_proc *p = io_proc();
    if (!p)
        return KILN_ENOTPROC;
    if (!buf || !cap || !got)
        return KILN_EINVAL;
    return p->rt->io->ops->recv(p, fd, buf, cap, kiln_io_deadline(timeout_ms), got);
}

int kiln_io_sendv(int fd, const struct iovec *iov, int iovcnt, int64_t timeout_ms)
{
    struct kiln_proc *p = io_proc();
    if (!p)
        return KILN_ENOTPROC;
    if (iovcnt < 0 || (iovcnt > 0 && !iov))
        return KILN_EINVAL;
    uint64_t deadline = kiln_io_deadline(timeout_ms);
    kiln_sched_before_syscall();
    /* The back end may send less than asked: walk on through the array. */
    struct iovec local[64];
    while (iovcnt > 0) {
        int n = iovcnt < 64 ? iovcnt : 64;
        memcpy(local, iov, (size_t)n * sizeof(*iov));
        struct iovec *cur = local;
        while (n > 0) {
            if (cur->iov_len == 0) {
                cur++;
                n--;
                iov++;
                iovcnt--;
                continue;
            }
            size_t sent = 0;
            int rc = p->rt->io->ops->send(p, fd, cur, n, deadline, &sent);
            if (rc != KILN_OK)
                return rc;
            while (n > 0 && sent >= cur->iov_len) {
                sent -= cur->iov_len;
                cur++;
                n--;
                iov++;
                iovcnt--;
            }
            if (n > 0 && sent) {
                cur->iov_base = (char *)cur->iov_base + sent;
                cur->iov_len -= sent;
            }
        }
    }
    return KILN_OK;
}

int kiln_io_send(int fd, const void *buf, size_t len, int64_t timeout_ms)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    return kiln_io_sendv(fd, &iov, 1, timeout_ms);
}

int kiln_io_close(int fd)
{
    /* Whoever waits on fd is woken (and the kernel lets go of it) before
     * the number is free to be reused. The back ends' locks are taken in
     * the list's order, and only here while another is held. */
    pthread_mutex_lock(&live_lock);
    for (struct kiln_io *io = live_head; io; io = io->next_live)
        io->ops->close_begin(io->rt, fd);
    int rc = close(fd) == 0 ? KILN_OK : KILN_ESYS;
    int err = errno;
    for (struct kiln_io *io = live_head; io; io = io->next_live)
        io->ops->close_done(io->rt, fd);
    pthread_mutex_unlock(&live_lock);
    errno = err;
    return rc;
}
