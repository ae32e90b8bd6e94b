/* The I/O layer's inside: one back end per runtime (io_uring or epoll)
 * turns completions or readiness into WAKE signals for the waiting
 * processes: epoll from its own thread, io_uring from the scheduler's
 * first worker (see wait below). */
#ifndef KILN_RUNTIME_IO_H
#define KILN_RUNTIME_IO_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "kiln/io.h"

struct kiln_proc;
struct kiln_rt;

struct kiln_io_backend_ops {
    const char *name;
    int sock_flags; /* extra socket() / accept4() flags the back end needs */
    int (*accept)(struct kiln_proc *p, int lfd, uint64_t deadline, int *fd);
    int (*connect)(struct kiln_proc *p, int fd, const struct sockaddr_in *sa, uint64_t deadline);
    /* One receive: *got > 0, or 0 at end of stream. */
    int (*recv)(struct kiln_proc *p, int fd, void *buf, size_t cap, uint64_t deadline, size_t *got);
    /* One send of at most the iovecs given; *sent may be short. */
    int (*send)(struct kiln_proc *p, int fd, const struct iovec *iov, int iovcnt, uint64_t deadline, size_t *sent);
    /* What the back end keeps for fd's number is stale: a fresh socket
     * got the number (the old one was closed with plain close()). */
    void (*forget_fd)(struct kiln_rt *rt, int fd);
    /* fd is being closed: whoever waits on it is woken or cancelled and
     * fails with EBADF. The back end's lock is held from close_begin to
     * close_done, across the close() itself, so nobody starts waiting on
     * the socket in between (a wait started after it fails). */
    void (*close_begin)(struct kiln_rt *rt, int fd);
    void (*close_done)(struct kiln_rt *rt, int fd);
    /* p is dying while it waits on the operation named by p's io_token. */
    void (*abandon)(struct kiln_rt *rt, struct kiln_proc *p);
    /* Every operation is back and freed; the state stays until fini
     * (the first worker may still look at it until the workers stop). */
    void (*stop)(struct kiln_rt *rt);
    void (*fini)(struct kiln_rt *rt); /* optional */
    /* Optional: completions are reaped by the first worker, not by a
     * thread of the back end. Waits up to timeout_ms (0: only looks; -1:
     * no limit) until something completes or the scheduler's eventfd is
     * written, and returns up to cap WAKE messages to deliver. */
    size_t (*wait)(struct kiln_rt *rt, int64_t timeout_ms, kiln_msg **out, size_t cap);
    bool (*ready)(struct kiln_rt *rt); /* with wait: anything to take? */
    void (*stats)(struct kiln_rt *rt, kiln_io_stats *out); /* optional */
};

struct kiln_io {
    const struct kiln_io_backend_ops *ops;
    void *impl;
    struct kiln_rt *rt;
    struct kiln_io *next_live; /* io.c's list of running back ends */
};

/* Start the back end cfg asks for (or the environment); falls back from
 * io_uring to epoll when the kernel refuses io_uring. */
int kiln_io_start(struct kiln_rt *rt);
void kiln_io_stop(struct kiln_rt *rt);
void kiln_io_fini(struct kiln_rt *rt); /* after the workers stopped */

int kiln_io_uring_start(struct kiln_rt *rt, struct kiln_io *io);
int kiln_io_epoll_start(struct kiln_rt *rt, struct kiln_io *io);

/* Deadline helpers: 0 = none; otherwise kiln_now_ms() at which to give up. */
uint64_t kiln_io_deadline(int64_t timeout_ms);
/* Milliseconds left until deadline for a receive (-1 for none, 0 if past). */
int64_t kiln_io_left(uint64_t deadline);
/* Record errno for kiln_io_errno and return KILN_ESYS. */
int kiln_io_fail(struct kiln_proc *p, int err);
/* Called by a dying process: give up its pending I/O. */
void kiln_io_abandon(struct kiln_proc *p);
/* A WAKE that nobody will take: release what it carries. */
void kiln_io_drop_wake(kiln_msg *m);

#endif
