/* The io_uring back end's state, shared by its two files: io_uring.c (the
 * ring, one-shot operations, reaping) and io_uring_stream.c (multishot
 * receives into provided buffers). */
#ifndef KILN_RUNTIME_IO_URING_IMPL_H
#define KILN_RUNTIME_IO_URING_IMPL_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "io.h"
#include "rt.h"

/* user_data of what is not an operation's message (messages are 8-byte
 * aligned, so the low bits tell them apart). */
#define UD_IGNORE 0ull /* linked timeouts and cancels: nothing to deliver */
#define UD_WAKEFD 1ull /* the read on the scheduler's eventfd */
#define UD_STREAM 2ull /* low bits of a receive stream's multishot receive */

struct ustream;

/* Multishot receives: one buffer ring shared by every socket of the
 * runtime; each socket read this way has a stream (io_uring_stream.c). */
struct uring_rx {
    _Atomic bool on;      /* cleared for good if the kernel refuses multishot receives */
    unsigned nbufs;       /* a power of two */
    unsigned bufsize;
    unsigned hold_max;    /* buffers one stream may hold before its receive is paused */
    struct io_uring_buf_ring *br;
    size_t br_bytes;
    uint8_t *pool;
    size_t pool_bytes;
    pthread_mutex_t buf_lock; /* the buffer ring's producer (tail) side */
    pthread_mutex_t table_lock;
    struct ustream **table; /* by fd */
    size_t table_cap;
    _Atomic size_t armed;   /* multishot receives the kernel holds, or will (pending) */
    struct ustream *pending; /* to be started by the thread that waits on the ring; under lock */
    _Atomic bool any_pending;
    _Atomic uint64_t pending_since; /* kiln_now_ms() of the oldest pending one */
    _Atomic uint64_t arms, buffers, shortages, oneshot;
};

struct uring_impl {
    struct io_uring ring;
    pthread_mutex_t lock; /* the submission side; taken after a stream's lock, never before */
    kiln_rt *rt;
    size_t inflight;   /* one-shot operations, under lock */
    bool stopping;     /* under lock */
    uint64_t wake_buf; /* the eventfd read lands here */
    bool wake_armed;   /* under lock */
    struct uring_rx rx;
};

/* A free submission entry (submitting what is queued if the ring is
 * full), or NULL. Caller holds u->lock. */
struct io_uring_sqe *kiln_uring_sqe_locked(struct uring_impl *u);

/* ---- io_uring_stream.c ---- */

/* Sets up the buffer ring; leaves rx.on false where the kernel or the
 * configuration says no. Never fails the back end. */
void kiln_uring_rx_init(struct uring_impl *u, const kiln_rt_config *cfg);
void kiln_uring_rx_fini(struct uring_impl *u);
/* A receive through fd's stream; KILN_ENOTSUP means "use a one-shot
 * receive this time" (multishot off, or no buffer was free). */
int kiln_uring_rx_recv(struct kiln_proc *p, int fd, void *buf, size_t cap, uint64_t deadline, size_t *got);
/* Starts the pending multishot receives. Called with the scheduler's
 * io_poll_lock held by the thread about to wait on the ring, or (late)
 * by any thread that looks at the ring when none has waited on it for
 * PENDING_LATE_MS. */
#define PENDING_LATE_MS 5u
void kiln_uring_rx_flush(struct uring_impl *u, bool waiting);
bool kiln_uring_rx_late(struct uring_impl *u);
/* A completion whose user_data has UD_STREAM: returns the waiting
 * process's WAKE to deliver, or NULL. Called by the reaping thread. */
kiln_msg *kiln_uring_rx_complete(struct uring_impl *u, const struct io_uring_cqe *cqe);
/* fd is being closed: its multishot receive is cancelled, its stream
 * freed once the kernel lets go of it. */
void kiln_uring_rx_forget(struct uring_impl *u, int fd);
/* p dies while it waits on the stream named by token. */
void kiln_uring_rx_abandon(struct uring_impl *u, struct kiln_proc *p, uint64_t token);
/* Every multishot receive has ended (the ring is drained): free the streams. */
void kiln_uring_rx_stop(struct uring_impl *u);
void kiln_io_uring_stats(struct uring_impl *u, kiln_io_stats *out);

#endif
