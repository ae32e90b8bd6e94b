/* The epoll back end, for kernels or containers that refuse io_uring (and
 * forced by KILN_IO_BACKEND=epoll). Processes do their own non-blocking
 * system calls; only waiting is shared: a process that would block
 * registers itself as its socket's reader or writer and parks, and the
 * back end's thread wakes it when epoll reports the socket ready. A socket
 * joins the epoll set at its first wait and leaves it at kiln_io_close; it
 * is armed one-shot (EPOLLONESHOT) for the directions someone waits on, so
 * each wait costs one epoll_ctl (a MOD that re-arms it; an ADD and a DEL
 * before), and a closed peer with nobody reading is reported once, not
 * over and over to a spinning thread. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "io.h"
#include "rt.h"

struct waiter {
    kiln_term pid; /* 0 = nobody */
    uint64_t id;
};

struct fd_entry {
    struct waiter rd, wr;
    bool registered;
};

struct epoll_impl {
    int epfd, stopfd;
    pthread_t thread;
    pthread_mutex_t lock;
    struct fd_entry *fds; /* indexed by fd; under lock */
    size_t cap;
    kiln_rt *rt;
};

static uint32_t wanted(const struct fd_entry *e)
{
    return (e->rd.pid ? EPOLLIN | EPOLLRDHUP : 0) | (e->wr.pid ? EPOLLOUT : 0);
}

/* Arm fd for who waits on it. Under lock. 0, or the errno of a socket
 * that cannot be watched (EBADF: closed). With nobody waiting it is left
 * as it is: disarmed if its event came, else armed for one event nobody
 * takes, which the poller then drops. */
static int sync_fd(struct epoll_impl *ep, int fd)
{
    struct fd_entry *e = &ep->fds[fd];
    uint32_t ev = wanted(e);
    struct epoll_event eev = {.events = ev | EPOLLONESHOT, .data.fd = fd};
    if (!ev)
        return 0;
    if (e->registered && epoll_ctl(ep->epfd, EPOLL_CTL_MOD, fd, &eev) == 0)
        return 0;
    /* New, or the fd was closed and reopened behind our back (ENOENT). */
    if (epoll_ctl(ep->epfd, EPOLL_CTL_ADD, fd, &eev) == 0 ||
        (errno == EEXIST && epoll_ctl(ep->epfd, EPOLL_CTL_MOD, fd, &eev) == 0)) {
        e->registered = true;
        return 0;
    }
    e->registered = false;
    return errno;
}

/* closed: the socket is being closed (aux32 = 1 tells wait_ready). */
static void wake(kiln_rt *rt, struct waiter *w, bool closed)
{
    kiln_msg *m = kiln_signal_new(KILN_MK_WAKE, 0);
    if (!m) {
        fprintf(stderr, "kiln: out of memory waking a process waiting on a socket\n");
        abort();
    }
    m->aux = w->id;
    m->aux32 = closed;
    kiln_deliver_pid(rt, w->pid, m);
    w->pid = 0;
}

/* Take fd's reader (rd) and writer (wr) off it, bring the epoll set in
 * line, then wake them: in that order, so that whatever a woken process
 * does next (closing the socket, or telling another thread it may) comes
 * after this thread's last epoll_ctl on the fd, which might otherwise act
 * on a new socket that reused the number. Under lock. */
static void release_waiters(struct epoll_impl *ep, int fd, bool rd, bool wr, bool closed)
{
    struct fd_entry *e = &ep->fds[fd];
    struct waiter r = e->rd, w = e->wr;
    if (rd)
        e->rd.pid = 0;
    if (wr)
        e->wr.pid = 0;
    sync_fd(ep, fd);
    if (rd && r.pid)
        wake(ep->rt, &r, closed);
    if (wr && w.pid)
        wake(ep->rt, &w, closed);
}

static void *poller(void *arg)
{
    struct epoll_impl *ep = arg;
    struct epoll_event evs[128];
    for (;;) {
        int n = epoll_wait(ep->epfd, evs, 128, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "kiln: epoll_wait: %s\n", strerror(errno));
            abort();
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ep->stopfd)
                return NULL;
            uint32_t ev = evs[i].events;
            pthread_mutex_lock(&ep->lock);
            if ((size_t)fd < ep->cap) {
                bool err = ev & (EPOLLERR | EPOLLHUP);
                release_waiters(ep, fd, err || (ev & (EPOLLIN | EPOLLRDHUP)), err || (ev & EPOLLOUT), false);
            }
            pthread_mutex_unlock(&ep->lock);
        }
    }
}

static bool grow(struct epoll_impl *ep, int fd)
{
    if ((size_t)fd < ep->cap)
        return true;
    size_t ncap = ep->cap ? ep->cap : 64;
    while (ncap <= (size_t)fd)
        ncap *= 2;
    struct fd_entry *n = kiln_realloc(ep->fds, ncap * sizeof(*n));
    if (!n)
        return false;
    memset(n + ep->cap, 0, (ncap - ep->cap) * sizeof(*n));
    ep->fds = n;
    ep->cap = ncap;
    return true;
}

/* Park p until fd is ready for `write ? EPOLLOUT : EPOLLIN`, or deadline. */
static int wait_ready(struct kiln_proc *p, int fd, bool write, uint64_t deadline)
{
    struct epoll_impl *ep = p->rt->io->impl;
    if (fd < 0)
        return KILN_EINVAL;
    uint64_t id = kiln_ref_next(p->rt);
    pthread_mutex_lock(&ep->lock);
    if (!grow(ep, fd)) {
        pthread_mutex_unlock(&ep->lock);
        return KILN_ENOMEM;
    }
    struct waiter *w = write ? &ep->fds[fd].wr : &ep->fds[fd].rd;
    if (w->pid) {
        /* One reader and one writer per socket at a time. */
        pthread_mutex_unlock(&ep->lock);
        return KILN_EBUSY;
    }
    w->pid = p->pid;
    w->id = id;
    int err = sync_fd(ep, fd);
    if (err) {
        /* Closed (kiln_io_close holds the lock across the close, so it
         * came before us): waiting would be for good. */
        w->pid = 0;
        sync_fd(ep, fd);
        pthread_mutex_unlock(&ep->lock);
        return kiln_io_fail(p, err);
    }
    pthread_mutex_unlock(&ep->lock);

    struct kiln_proc_ext *e = kiln_proc_ext(p);
    if (e) {
        /* If we die waiting, the exit path takes us off the socket. */
        e->io_token = id;
        e->io_fd = fd;
        e->io_write = write;
    }
    kiln_msg *m;
    int rc = kiln_wait_wake(p, id, kiln_io_left(deadline), &m);
    if (e)
        e->io_token = 0;
    if (rc == KILN_OK) {
        bool closed = m->aux32;
        kiln_msg_free(m);
        return closed ? kiln_io_fail(p, EBADF) : KILN_OK;
    }
    pthread_mutex_lock(&ep->lock);
    if (w->pid == p->pid && w->id == id) {
        w->pid = 0;
        sync_fd(ep, fd);
    }
    pthread_mutex_unlock(&ep->lock);
    return rc;
}

static int e_accept(struct kiln_proc *p, int lfd, uint64_t deadline, int *fd)
{
    for (;;) {
        int s = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (s >= 0) {
            *fd = s;
            return KILN_OK;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return kiln_io_fail(p, errno);
        int rc = wait_ready(p, lfd, false, deadline);
        if (rc != KILN_OK)
            return rc;
    }
}

static int e_connect(struct kiln_proc *p, int fd, const struct sockaddr_in *sa, uint64_t deadline)
{
    if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
        return KILN_OK;
    if (errno != EINPROGRESS)
        return kiln_io_fail(p, errno);
    int rc = wait_ready(p, fd, true, deadline);
    if (rc != KILN_OK)
        return rc;
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    return err ? kiln_io_fail(p, err) : KILN_OK;
}

static int e_recv(struct kiln_proc *p, int fd, void *buf, size_t cap, uint64_t deadline, size_t *got)
{
    for (;;) {
        ssize_t n = recv(fd, buf, cap, MSG_DONTWAIT);
        if (n >= 0) {
            *got = (size_t)n;
            return KILN_OK;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return kiln_io_fail(p, errno);
        int rc = wait_ready(p, fd, false, deadline);
        if (rc != KILN_OK)
            return rc;
    }
}

static int e_send(struct kiln_proc *p, int fd, const struct iovec *iov, int iovcnt, uint64_t deadline, size_t *sent)
{
    struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    for (;;) {
        ssize_t n = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n >= 0) {
            *sent = (size_t)n;
            return KILN_OK;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return kiln_io_fail(p, errno);
        int rc = wait_ready(p, fd, true, deadline);
        if (rc != KILN_OK)
            return rc;
    }
}

static void e_abandon(kiln_rt *rt, struct kiln_proc *p)
{
    struct epoll_impl *ep = rt->io->impl;
    struct kiln_proc_ext *e = atomic_load_explicit(&p->ext, memory_order_relaxed);
    pthread_mutex_lock(&ep->lock);
    if (e->io_fd >= 0 && (size_t)e->io_fd < ep->cap) {
        struct waiter *w = e->io_write ? &ep->fds[e->io_fd].wr : &ep->fds[e->io_fd].rd;
        if (w->pid == p->pid && w->id == e->io_token) {
            w->pid = 0;
            sync_fd(ep, e->io_fd);
        }
    }
    pthread_mutex_unlock(&ep->lock);
}

/* Anyone still waiting fails with EBADF rather than try again: the socket
 * may still be open when it runs, and its retry would wait on it afresh,
 * after which the close would leave it waiting for good. The lock stays
 * held until e_close_done. */
static void e_close_begin(kiln_rt *rt, int fd)
{
    struct epoll_impl *ep = rt->io->impl;
    pthread_mutex_lock(&ep->lock);
    if (fd >= 0 && (size_t)fd < ep->cap) {
        release_waiters(ep, fd, true, true, true);
        /* Out of the set before the number can be reused (a duplicate of
         * the descriptor would keep it there past the close). */
        if (ep->fds[fd].registered)
            epoll_ctl(ep->epfd, EPOLL_CTL_DEL, fd, NULL);
        ep->fds[fd].registered = false;
    }
}

static void e_close_done(kiln_rt *rt, int fd)
{
    (void)fd;
    struct epoll_impl *ep = rt->io->impl;
    pthread_mutex_unlock(&ep->lock);
}

/* Waiters left on a number that was closed with plain close() are told as
 * at a kiln_io_close. */
static void e_forget_fd(kiln_rt *rt, int fd)
{
    e_close_begin(rt, fd);
    e_close_done(rt, fd);
}

static void e_stop(kiln_rt *rt)
{
    struct epoll_impl *ep = rt->io->impl;
    uint64_t one = 1;
    if (write(ep->stopfd, &one, sizeof(one)) != sizeof(one))
        abort();
    pthread_join(ep->thread, NULL);
    close(ep->stopfd);
    close(ep->epfd);
    kiln_free(ep->fds);
    pthread_mutex_destroy(&ep->lock);
    kiln_free(ep);
}

static const struct kiln_io_backend_ops epoll_ops = {
    .name = "epoll",
    .sock_flags = SOCK_NONBLOCK,
    .accept = e_accept,
    .connect = e_connect,
    .recv = e_recv,
    .send = e_send,
    .forget_fd = e_forget_fd,
    .close_begin = e_close_begin,
    .close_done = e_close_done,
    .abandon = e_abandon,
    .stop = e_stop,
};

int kiln_io_epoll_start(kiln_rt *rt, struct kiln_io *io)
{
    struct epoll_impl *ep = kiln_calloc(1, sizeof(*ep));
    if (!ep)
        return KILN_ENOMEM;
    ep->rt = rt;
    ep->epfd = epoll_create1(EPOLL_CLOEXEC);
    ep->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ep->stopfd};
    if (ep->epfd < 0 || ep->stopfd < 0 || epoll_ctl(ep->epfd, EPOLL_CTL_ADD, ep->stopfd, &ev) != 0) {
        if (ep->epfd >= 0)
            close(ep->epfd);
        if (ep->stopfd >= 0)
            close(ep->stopfd);
        kiln_free(ep);
        return KILN_ESYS;
    }
    pthread_mutex_init(&ep->lock, NULL);
    if (pthread_create(&ep->thread, NULL, poller, ep) != 0) {
        close(ep->epfd);
        close(ep->stopfd);
        pthread_mutex_destroy(&ep->lock);
        kiln_free(ep);
        return KILN_ESYS;
    }
    io->ops = &epoll_ops;
    io->impl = ep;
    return KILN_OK;
}
