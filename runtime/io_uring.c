/* The io_uring back end. Processes put operations on one shared ring (a
 * mutex serialises the submission side). Completions are reaped by the
 * first worker: it waits on the ring when it parks, and looks at it
 * between runs when busy, so a completion's process is made runnable on
 * the thread that saw it, with no hand-over from an I/O thread to a parked
 * worker (that costs a wake-up per completion; see docs/design.md). The
 * scheduler interrupts the wait through an eventfd whose read is kept on
 * the ring. Receives and sends first try a non-blocking call and use the
 * ring only to wait (see done_now).
 *
 * Each operation is a message whose arena is its buffer: the kernel reads
 * and writes that memory, never the caller's. The completion fills it and
 * the thread delivers that same message to the process as its WAKE. A
 * process killed while it waits thus costs nothing: its stack (and the
 * caller's buffer on it) can be reused at once, and the late completion is
 * freed like any message to a dead process. A timeout is a linked timeout
 * on the operation, so the operation itself always completes and always
 * hands its message back. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "io_uring_impl.h"

#define RING_ENTRIES 1024u
/* Receives go through the operation's own buffer; bigger reads take
 * several rounds. */
#define RECV_CHUNK (256u * 1024u)

struct uring_op {
    struct __kernel_timespec ts;
    struct sockaddr_in sa;
    socklen_t salen;
};

static struct uring_op *op_of(kiln_msg *m) { return (struct uring_op *)(void *)m->inline_data; }
static uint8_t *data_of(kiln_msg *m) { return (uint8_t *)(op_of(m) + 1); }

static kiln_msg *op_new(struct kiln_proc *p, size_t data)
{
    size_t words = (sizeof(struct uring_op) + data + 7) / 8;
    kiln_msg *m = kiln_msg_new_words(words);
    if (!m)
        return NULL;
    memset(op_of(m), 0, sizeof(struct uring_op));
    m->aux = kiln_ref_next(p->rt);
    m->root = p->pid;
    return m;
}

struct io_uring_sqe *kiln_uring_sqe_locked(struct uring_impl *u)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (!sqe) {
        io_uring_submit(&u->ring);
        sqe = io_uring_get_sqe(&u->ring);
    }
    return sqe;
}

/* Keeps a read on the scheduler's eventfd on the ring, so that a write
 * to it ends a wait. Caller holds u->lock. */
static void arm_wake_locked(struct uring_impl *u)
{
    if (u->wake_armed || u->stopping || u->rt->io_wake_fd < 0)
        return;
    struct io_uring_sqe *sqe = kiln_uring_sqe_locked(u);
    if (!sqe)
        return;
    io_uring_prep_read(sqe, u->rt->io_wake_fd, &u->wake_buf, sizeof u->wake_buf, 0);
    io_uring_sqe_set_data64(sqe, UD_WAKEFD);
    u->wake_armed = true;
    io_uring_submit(&u->ring);
}

/* Takes what completed; the operations' messages, turned into WAKEs, go
 * to out (up to cap) for the caller to deliver. Consumer side of the ring:
 * one thread at a time (the scheduler's io_poll_lock). */
static size_t take(struct uring_impl *u, kiln_msg **out, size_t cap)
{
    size_t got = 0;
    unsigned head, n = 0;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&u->ring, head, cqe)
    {
        if (got == cap)
            break;
        n++;
        if (cqe->user_data == UD_IGNORE)
            continue;
        if (cqe->user_data == UD_WAKEFD) {
            /* Re-armed by the next thread to wait (u_wait). */
            pthread_mutex_lock(&u->lock);
            u->wake_armed = false;
            pthread_mutex_unlock(&u->lock);
            continue;
        }
        if (cqe->user_data & UD_STREAM) {
            kiln_msg *w = kiln_uring_rx_complete(u, cqe);
            if (w)
                out[got++] = w;
            continue;
        }
        kiln_msg *m = (kiln_msg *)(uintptr_t)cqe->user_data;
        /* Handed over through the kernel, which TSan cannot see. */
        KILN_TSAN_ACQUIRE(m);
        m->kind = KILN_MK_WAKE;
        m->from = (kiln_term)(int64_t)cqe->res;
        pthread_mutex_lock(&u->lock);
        u->inflight--;
        bool stopping = u->stopping;
        pthread_mutex_unlock(&u->lock);
        if (stopping)
            kiln_msg_free(m);
        else
            out[got++] = m;
    }
    io_uring_cq_advance(&u->ring, n);
    return got;
}

static size_t u_wait(kiln_rt *rt, int64_t timeout_ms, kiln_msg **out, size_t cap)
{
    struct uring_impl *u = rt->io->impl;
    if (timeout_ms != 0) {
        /* What is submitted here has its completion work run by this
         * thread, which is about to sleep where that work wakes it. */
        pthread_mutex_lock(&u->lock);
        arm_wake_locked(u);
        pthread_mutex_unlock(&u->lock);
    }
    kiln_uring_rx_flush(u, timeout_ms != 0);
    if (timeout_ms != 0 && !io_uring_cq_ready(&u->ring)) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts, *tsp = NULL;
        if (timeout_ms > 0) {
            ts.tv_sec = timeout_ms / 1000;
            ts.tv_nsec = (timeout_ms % 1000) * 1000000;
            tsp = &ts;
        }
        int rc = io_uring_wait_cqe_timeout(&u->ring, &cqe, tsp);
        if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN) {
            fprintf(stderr, "kiln: io_uring_wait_cqe: %s\n", strerror(-rc));
            abort();
        }
    }
    return take(u, out, cap);
}

/* Queue the prepared operation (and its linked timeout) and submit. */
static int submit(struct kiln_proc *p, kiln_msg *m, void (*prep)(struct io_uring_sqe *, kiln_msg *, void *), void *arg,
                  uint64_t deadline)
{
    struct uring_impl *u = p->rt->io->impl;
    pthread_mutex_lock(&u->lock);
    if (u->stopping) {
        pthread_mutex_unlock(&u->lock);
        kiln_msg_free(m);
        return KILN_ESTOPPED;
    }
    unsigned need = deadline ? 2 : 1;
    if (io_uring_sq_space_left(&u->ring) < need)
        io_uring_submit(&u->ring);
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (!sqe) {
        pthread_mutex_unlock(&u->lock);
        kiln_msg_free(m);
        return KILN_EBUSY;
    }
    prep(sqe, m, arg);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)m);
    KILN_TSAN_RELEASE(m);
    if (deadline) {
        int64_t left = kiln_io_left(deadline);
        op_of(m)->ts.tv_sec = left / 1000;
        op_of(m)->ts.tv_nsec = (left % 1000) * 1000000;
        sqe->flags |= IOSQE_IO_LINK;
        struct io_uring_sqe *t = io_uring_get_sqe(&u->ring);
        io_uring_prep_link_timeout(t, &op_of(m)->ts, 0);
        io_uring_sqe_set_data64(t, UD_IGNORE);
    }
    u->inflight++;
    io_uring_submit(&u->ring);
    pthread_mutex_unlock(&u->lock);
    return KILN_OK;
}

/* Submit m and wait for it to come back; returns the completion's result
 * in *res and the message (the caller frees it). */
static int run_op(struct kiln_proc *p, kiln_msg *m, void (*prep)(struct io_uring_sqe *, kiln_msg *, void *), void *arg,
                  uint64_t deadline, int *res, kiln_msg **back)
{
    uint64_t id = m->aux;
    struct kiln_proc_ext *e = kiln_proc_ext(p);
    if (!e) {
        kiln_msg_free(m);
        return KILN_ENOMEM;
    }
    uint64_t token = (uint64_t)(uintptr_t)m;
    int rc = submit(p, m, prep, arg, deadline);
    if (rc != KILN_OK)
        return rc;
    /* If we die waiting, the exit path cancels the operation by this. */
    e->io_token = token;
    kiln_msg *w;
    rc = kiln_wait_wake(p, id, -1, &w);
    e->io_token = 0;
    if (rc != KILN_OK)
        return rc;
    *res = (int)(int64_t)w->from;
    *back = w;
    return KILN_OK;
}

static int result(struct kiln_proc *p, int res, uint64_t deadline)
{
    /* Cancelled by the linked timeout, which runs on kiln_now_ms's clock
     * and so never ends before the deadline; before it, by kiln_io_close
     * (or a runtime that stops), which the caller hears as the socket
     * being gone, as from the epoll back end. */
    if (res == -ECANCELED && deadline && kiln_io_left(deadline) == 0)
        return KILN_ETIMEOUT;
    return kiln_io_fail(p, res == -ECANCELED ? EBADF : -res);
}

/* ---- operations ---- */

struct fd_arg {
    int fd;
    size_t len;
    unsigned flags;
};

static void prep_accept(struct io_uring_sqe *sqe, kiln_msg *m, void *arg)
{
    struct fd_arg *a = arg;
    op_of(m)->salen = sizeof(op_of(m)->sa);
    io_uring_prep_accept(sqe, a->fd, (struct sockaddr *)&op_of(m)->sa, &op_of(m)->salen, SOCK_CLOEXEC);
}

static int u_accept(struct kiln_proc *p, int lfd, uint64_t deadline, int *fd)
{
    kiln_msg *m = op_new(p, 0), *back;
    if (!m)
        return KILN_ENOMEM;
    m->flags |= KILN_MF_IO_FD; /* the new socket is closed if nobody takes it */
    struct fd_arg a = {.fd = lfd};
    int res, rc = run_op(p, m, prep_accept, &a, deadline, &res, &back);
    if (rc != KILN_OK)
        return rc;
    kiln_msg_free(back);
    if (res < 0)
        return result(p, res, deadline);
    *fd = res;
    return KILN_OK;
}

static void prep_connect(struct io_uring_sqe *sqe, kiln_msg *m, void *arg)
{
    struct fd_arg *a = arg;
    io_uring_prep_connect(sqe, a->fd, (struct sockaddr *)&op_of(m)->sa, sizeof(op_of(m)->sa));
}

static int u_connect(struct kiln_proc *p, int fd, const struct sockaddr_in *sa, uint64_t deadline)
{
    kiln_msg *m = op_new(p, 0), *back;
    if (!m)
        return KILN_ENOMEM;
    op_of(m)->sa = *sa;
    struct fd_arg a = {.fd = fd};
    int res, rc = run_op(p, m, prep_connect, &a, deadline, &res, &back);
    if (rc != KILN_OK)
        return rc;
    kiln_msg_free(back);
    return res < 0 ? result(p, res, deadline) : KILN_OK;
}

static void prep_recv(struct io_uring_sqe *sqe, kiln_msg *m, void *arg)
{
    struct fd_arg *a = arg;
    io_uring_prep_recv(sqe, a->fd, data_of(m), a->len, 0);
}

/* What the socket already holds, or can take, is moved at once with a
 * non-blocking call: an operation on the ring costs a completion and a
 * wake-up of the waiting process, which is worth paying only to wait.
 * Under load (a stream, a large message arriving in pieces) most calls
 * find data or room, as a poll-based runtime's read loop does.
 * false: go through the ring; true: done, with *rc (and *n on success). */
static bool done_now(struct kiln_proc *p, ssize_t r, size_t *n, int *rc)
{
    if (r >= 0) {
        *n = (size_t)r;
        *rc = KILN_OK;
        return true;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return false;
    *rc = kiln_io_fail(p, errno);
    return true;
}

static int u_recv(struct kiln_proc *p, int fd, void *buf, size_t cap, uint64_t deadline, size_t *got)
{
    int rc = kiln_uring_rx_recv(p, fd, buf, cap, deadline, got);
    if (rc != KILN_ENOTSUP)
        return rc;
    if (done_now(p, recv(fd, buf, cap, MSG_DONTWAIT), got, &rc))
        return rc;
    struct uring_impl *u = p->rt->io->impl;
    atomic_fetch_add_explicit(&u->rx.oneshot, 1, memory_order_relaxed);
    size_t len = cap < RECV_CHUNK ? cap : RECV_CHUNK;
    kiln_msg *m = op_new(p, len), *back;
    if (!m)
        return KILN_ENOMEM;
    struct fd_arg a = {.fd = fd, .len = len};
    int res;
    rc = run_op(p, m, prep_recv, &a, deadline, &res, &back);
    if (rc != KILN_OK)
        return rc;
    if (res >= 0) {
        memcpy(buf, data_of(back), (size_t)res);
        *got = (size_t)res;
    }
    kiln_msg_free(back);
    return res < 0 ? result(p, res, deadline) : KILN_OK;
}

static void prep_send(struct io_uring_sqe *sqe, kiln_msg *m, void *arg)
{
    struct fd_arg *a = arg;
    io_uring_prep_send(sqe, a->fd, data_of(m), a->len, MSG_NOSIGNAL);
}

static int u_send(struct kiln_proc *p, int fd, const struct iovec *iov, int iovcnt, uint64_t deadline, size_t *sent)
{
    struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    int rc;
    if (done_now(p, sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL), sent, &rc))
        return rc;
    /* All the frames go out as one operation on one buffer: one
     * submission, one system call's worth of work for the kernel. */
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (total > RECV_CHUNK * 16)
        total = RECV_CHUNK * 16; /* bounded copy; the caller sends the rest next round */
    kiln_msg *m = op_new(p, total), *back;
    if (!m)
        return KILN_ENOMEM;
    size_t off = 0;
    for (int i = 0; i < iovcnt && off < total; i++) {
        size_t n = iov[i].iov_len < total - off ? iov[i].iov_len : total - off;
        memcpy(data_of(m) + off, iov[i].iov_base, n);
        off += n;
    }
    struct fd_arg a = {.fd = fd, .len = total};
    int res;
    rc = run_op(p, m, prep_send, &a, deadline, &res, &back);
    if (rc != KILN_OK)
        return rc;
    kiln_msg_free(back);
    if (res < 0)
        return result(p, res, deadline);
    *sent = (size_t)res;
    return KILN_OK;
}

static void u_abandon(kiln_rt *rt, struct kiln_proc *p)
{
    struct uring_impl *u = rt->io->impl;
    struct kiln_proc_ext *e = atomic_load_explicit(&p->ext, memory_order_relaxed);
    if (e->io_token & UD_STREAM) {
        kiln_uring_rx_abandon(u, p, e->io_token);
        return;
    }
    pthread_mutex_lock(&u->lock);
    struct io_uring_sqe *sqe = kiln_uring_sqe_locked(u);
    if (!sqe) {
        pthread_mutex_unlock(&u->lock);
        return; /* cannot happen with nothing else holding the lock: the ring was just submitted */
    }
    /* The operation then completes (cancelled, or done just before) and
     * its message goes to the dead process, which frees it. */
    io_uring_prep_cancel64(sqe, e->io_token, 0);
    io_uring_sqe_set_data64(sqe, UD_IGNORE);
    io_uring_submit(&u->ring);
    pthread_mutex_unlock(&u->lock);
}

/* A multishot receive would hold the socket open. */
static void u_forget_fd(kiln_rt *rt, int fd)
{
    kiln_uring_rx_forget(rt->io->impl, fd);
}

/* An operation in flight holds the socket's file: after close() alone its
 * process would wait (and the connection stay open) until data came. Every
 * operation on fd is cancelled (its process gets EBADF, see result()), and
 * the lock, which every submission takes, is held until the close is done:
 * an operation submitted after the cancel would hold the file again. */
static void u_close_begin(kiln_rt *rt, int fd)
{
    struct uring_impl *u = rt->io->impl;
    kiln_uring_rx_forget(u, fd);
    pthread_mutex_lock(&u->lock);
    struct io_uring_sqe *sqe = u->stopping ? NULL : kiln_uring_sqe_locked(u);
    if (sqe) {
        io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(sqe, UD_IGNORE);
        io_uring_submit(&u->ring);
    }
}

static void u_close_done(kiln_rt *rt, int fd)
{
    (void)fd;
    struct uring_impl *u = rt->io->impl;
    pthread_mutex_unlock(&u->lock);
}

static void u_stop(kiln_rt *rt)
{
    struct uring_impl *u = rt->io->impl;
    /* The first worker stops reaping: from here the ring is ours. */
    kiln_sched_io_detach(rt);
    pthread_mutex_lock(&u->lock);
    u->stopping = true;
    /* Operations that would wait forever (an accept nobody answers) are
     * cancelled, so every message comes back and is freed. */
    struct io_uring_sqe *sqe = kiln_uring_sqe_locked(u);
    if (sqe) {
        io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
        io_uring_sqe_set_data64(sqe, UD_IGNORE);
        io_uring_submit(&u->ring);
    }
    pthread_mutex_unlock(&u->lock);
    for (;;) {
        pthread_mutex_lock(&u->lock);
        bool done = u->inflight == 0 && !u->wake_armed && atomic_load(&u->rx.armed) == 0;
        pthread_mutex_unlock(&u->lock);
        if (done)
            break;
        kiln_msg *none[1]; /* stopping: what completes is freed, not handed out */
        u_wait(rt, -1, none, 1);
    }
    kiln_uring_rx_stop(u);
}

static void u_fini(kiln_rt *rt)
{
    struct uring_impl *u = rt->io->impl;
    kiln_uring_rx_fini(u);
    io_uring_queue_exit(&u->ring);
    pthread_mutex_destroy(&u->lock);
    kiln_free(u);
}

/* A hint read without the consumer's lock (the first worker re-checks
 * under it), so both ends are read atomically; liburing's
 * io_uring_cq_ready reads the head plainly. */
static bool u_ready(kiln_rt *rt)
{
    struct uring_impl *u = rt->io->impl;
    return __atomic_load_n(u->ring.cq.ktail, __ATOMIC_ACQUIRE) != __atomic_load_n(u->ring.cq.khead, __ATOMIC_RELAXED) ||
           kiln_uring_rx_late(u);
}

static void u_stats(kiln_rt *rt, kiln_io_stats *out) { kiln_io_uring_stats(rt->io->impl, out); }

static const struct kiln_io_backend_ops uring_ops = {
    .name = "io_uring",
    .sock_flags = 0, /* io_uring returns -EAGAIN on O_NONBLOCK sockets */
    .accept = u_accept,
    .connect = u_connect,
    .recv = u_recv,
    .send = u_send,
    .forget_fd = u_forget_fd,
    .close_begin = u_close_begin,
    .close_done = u_close_done,
    .abandon = u_abandon,
    .stop = u_stop,
    .fini = u_fini,
    .wait = u_wait,
    .ready = u_ready,
    .stats = u_stats,
};

int kiln_io_uring_start(kiln_rt *rt, struct kiln_io *io)
{
    struct uring_impl *u = kiln_calloc(1, sizeof(*u));
    if (!u)
        return KILN_ENOMEM;
    /* A completion for a thread that is running does not interrupt it
     * (no IPI): its work runs at that thread's next entry into the kernel
     * (a system call, or at the latest the next timer tick), and at once
     * for a thread asleep, like the first worker waiting on the ring. */
    int rc = io_uring_queue_init(RING_ENTRIES, &u->ring, IORING_SETUP_COOP_TASKRUN);
    if (rc == -EINVAL) /* before 5.19 */
        rc = io_uring_queue_init(RING_ENTRIES, &u->ring, 0);
    if (rc < 0) {
        kiln_free(u);
        return rc == -ENOMEM ? KILN_ENOMEM : KILN_ENOTSUP;
    }
    if (rt->io_wake_fd < 0)
        rt->io_wake_fd = eventfd(0, EFD_CLOEXEC); /* blocking: io_uring refuses O_NONBLOCK reads with -EAGAIN */
    pthread_mutex_init(&u->lock, NULL);
    u->rt = rt;
    pthread_mutex_lock(&u->lock);
    arm_wake_locked(u);
    bool armed = u->wake_armed;
    pthread_mutex_unlock(&u->lock);
    if (!armed) {
        io_uring_queue_exit(&u->ring);
        pthread_mutex_destroy(&u->lock);
        kiln_free(u);
        return KILN_ESYS;
    }
    kiln_uring_rx_init(u, &rt->cfg);
    io->ops = &uring_ops;
    io->impl = u;
    return KILN_OK;
}
