/* Receives on io_uring as streams: the first receive on a socket starts
 * one multishot receive, and from then on the kernel fills buffers from a
 * ring shared by the runtime's sockets as data arrives, whether or not
 * anyone is asking. A receive takes what has arrived without a system
 * call, and a process that has to wait costs no submission: the
 * completion that fills the next buffer wakes it.
 *
 * Buffers are bounded: a stream holding more than hold_max of them (its
 * reader is slow) has its receive cancelled until it has read them, so
 * one reader cannot take every buffer from the others. When the kernel
 * does find the ring empty it ends the receive (ENOBUFS) and that
 * stream's next ONESHOTS_AFTER_SHORTAGE receives are one-shot ones
 * (io_uring.c), after which the stream starts again.
 *
 * A caller that asks for a lot at once (the rest of a large frame) is
 * better served by reading straight into its own memory than through
 * buffers and a second copy: such a receive pauses the stream and goes
 * one-shot; the next small receive starts the stream again.
 *
 * Lock order: a stream's lock, then the ring's submission lock or the
 * buffer ring's lock; never the other way round. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "alloc.h"
#include "io_uring_impl.h"

#define BGID 0
#define DEFAULT_BUFS 64u
/* Large buffers cost little: the kernel touches only the pages it fills,
 * and a small message fills part of one page. Fewer, larger completions
 * carry a bulk transfer (docs/design.md has the measurements). */
#define DEFAULT_BUFSIZE (128u * 1024u)
#define MAX_BUFS 32768u /* buffer ids are 16 bits */
#define BULK_MIN(rx) (4u * (size_t)(rx)->bufsize)
/* With more busy sockets than buffers, starting a stream that the ring
 * cannot feed costs a submission and a completion per receive for
 * nothing: such a stream stays one-shot for a while. */
#define ONESHOTS_AFTER_SHORTAGE 16u

struct rx_chunk {
    uint32_t len, off;
    uint16_t bid;
};

struct ustream {
    struct uring_impl *u;
    pthread_mutex_t lock;
    int fd;
    int end;         /* 0; 1 = the peer closed; -errno: an error. After the queued data. */
    bool armed;      /* the kernel holds a multishot receive for us */
    bool cancelling; /* and has been asked to end it */
    bool detached;   /* fd closed: freed once unused */
    unsigned oneshots; /* receives left to do one-shot after the ring ran dry */
    bool waiting;    /* a process is between parking and re-checking */
    struct ustream *next_pending;
    kiln_msg *waiter; /* its WAKE, until a completion hands it over */
    unsigned head, count; /* queue of filled buffers, rx.nbufs slots */
    struct rx_chunk q[];
};

/* KILN_IO_MULTISHOT=0|1 overrides the configuration. */
static bool wanted(const kiln_rt_config *cfg)
{
    const char *e = getenv("KILN_IO_MULTISHOT");
    if (e && (strcmp(e, "0") == 0 || strcmp(e, "1") == 0))
        return e[0] == '1';
    return cfg->io_recv_multishot >= 0;
}

void kiln_uring_rx_init(struct uring_impl *u, const kiln_rt_config *cfg)
{
    struct uring_rx *rx = &u->rx;
    atomic_store(&rx->on, false);
    pthread_mutex_init(&rx->buf_lock, NULL);
    pthread_mutex_init(&rx->table_lock, NULL);
    if (!wanted(cfg))
        return;
    unsigned n = cfg->io_recv_buffers ? cfg->io_recv_buffers : DEFAULT_BUFS;
    if (n > MAX_BUFS)
        n = MAX_BUFS;
    unsigned nbufs = 1;
    while (nbufs < n)
        nbufs <<= 1;
    unsigned size = cfg->io_recv_buffer_size ? cfg->io_recv_buffer_size : DEFAULT_BUFSIZE;
    long page = sysconf(_SC_PAGESIZE);
    size_t br_bytes = ((size_t)nbufs * sizeof(struct io_uring_buf) + (size_t)page - 1) & ~((size_t)page - 1);
    void *br = mmap(NULL, br_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (br == MAP_FAILED)
        return;
    /* Pages are committed as the kernel first fills them. */
    size_t pool_bytes = (size_t)nbufs * size;
    void *pool = mmap(NULL, pool_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pool == MAP_FAILED) {
        munmap(br, br_bytes);
        return;
    }
    struct io_uring_buf_reg reg = {.ring_addr = (uint64_t)(uintptr_t)br, .ring_entries = nbufs, .bgid = BGID};
    if (io_uring_register_buf_ring(&u->ring, &reg, 0) != 0) {
        /* Before 5.19: no buffer rings; receives stay one-shot. */
        munmap(pool, pool_bytes);
        munmap(br, br_bytes);
        return;
    }
    rx->br = br;
    rx->br_bytes = br_bytes;
    rx->pool = pool;
    rx->pool_bytes = pool_bytes;
    rx->nbufs = nbufs;
    rx->bufsize = size;
    rx->hold_max = nbufs / 4 > 2 ? nbufs / 4 : 2;
    io_uring_buf_ring_init(rx->br);
    for (unsigned i = 0; i < nbufs; i++)
        io_uring_buf_ring_add(rx->br, rx->pool + (size_t)i * size, size, (unsigned short)i,
                              io_uring_buf_ring_mask(nbufs), (int)i);
    io_uring_buf_ring_advance(rx->br, (int)nbufs);
    atomic_store(&rx->on, true);
}

void kiln_uring_rx_fini(struct uring_impl *u)
{
    struct uring_rx *rx = &u->rx;
    if (rx->br) {
        io_uring_unregister_buf_ring(&u->ring, BGID);
        munmap(rx->pool, rx->pool_bytes);
        munmap(rx->br, rx->br_bytes);
    }
    kiln_free(rx->table);
    pthread_mutex_destroy(&rx->buf_lock);
    pthread_mutex_destroy(&rx->table_lock);
}

/* ---- buffers ---- */

static uint8_t *buf_addr(struct uring_rx *rx, uint16_t bid) { return rx->pool + (size_t)bid * rx->bufsize; }

static void give_back(struct uring_rx *rx, const uint16_t *bids, unsigned n)
{
    if (!n)
        return;
    int mask = io_uring_buf_ring_mask(rx->nbufs);
    pthread_mutex_lock(&rx->buf_lock);
    for (unsigned i = 0; i < n; i++)
        io_uring_buf_ring_add(rx->br, buf_addr(rx, bids[i]), rx->bufsize, bids[i], mask, (int)i);
    io_uring_buf_ring_advance(rx->br, (int)n);
    pthread_mutex_unlock(&rx->buf_lock);
}

/* ---- streams ---- */

static struct ustream *stream_find(struct uring_rx *rx, int fd, bool create, struct uring_impl *u)
{
    pthread_mutex_lock(&rx->table_lock);
    struct ustream *s = (size_t)fd < rx->table_cap ? rx->table[fd] : NULL;
    if (s || !create)
        goto out;
    if ((size_t)fd >= rx->table_cap) {
        size_t ncap = rx->table_cap ? rx->table_cap : 64;
        while (ncap <= (size_t)fd)
            ncap *= 2;
        struct ustream **t = kiln_realloc(rx->table, ncap * sizeof(*t));
        if (!t)
            goto out;
        memset(t + rx->table_cap, 0, (ncap - rx->table_cap) * sizeof(*t));
        rx->table = t;
        rx->table_cap = ncap;
    }
    s = kiln_calloc(1, sizeof(*s) + (size_t)rx->nbufs * sizeof(struct rx_chunk));
    if (!s)
        goto out;
    s->u = u;
    s->fd = fd;
    pthread_mutex_init(&s->lock, NULL);
    rx->table[fd] = s;
out:
    pthread_mutex_unlock(&rx->table_lock);
    return s;
}

static void stream_free(struct uring_rx *rx, struct ustream *s)
{
    uint16_t bids[64];
    unsigned n = 0;
    while (s->count) {
        bids[n++] = s->q[s->head].bid;
        s->head = (s->head + 1) & (rx->nbufs - 1);
        s->count--;
        if (n == 64) {
            give_back(rx, bids, n);
            n = 0;
        }
    }
    give_back(rx, bids, n);
    if (s->waiter)
        kiln_msg_free(s->waiter);
    pthread_mutex_destroy(&s->lock);
    kiln_free(s);
}

/* Nothing refers to s any more: not the table, the kernel or a process. */
static bool unused(const struct ustream *s) { return s->detached && !s->armed && !s->waiting; }

/* The kernel runs a receive's completion work on the thread that
 * submitted it, interrupting that thread if it sleeps elsewhere. A
 * multishot receive lives long, so it is submitted by the thread that
 * waits on the ring: its completions then cost one wake-up, not two (a
 * worker parked on its futex, then the ring's waiter). The stream counts
 * as armed from here. Caller holds s->lock. */
static int arm(struct uring_impl *u, struct ustream *s)
{
    pthread_mutex_lock(&u->lock);
    if (u->stopping) {
        pthread_mutex_unlock(&u->lock);
        return KILN_ESTOPPED;
    }
    s->armed = true;
    s->cancelling = false;
    atomic_fetch_add(&u->rx.armed, 1);
    s->next_pending = u->rx.pending;
    if (!u->rx.pending)
        atomic_store(&u->rx.pending_since, kiln_now_ms());
    u->rx.pending = s;
    atomic_store(&u->rx.any_pending, true);
    pthread_mutex_unlock(&u->lock);
    kiln_sched_io_interrupt(u->rt);
    return KILN_OK;
}

bool kiln_uring_rx_late(struct uring_impl *u)
{
    return atomic_load_explicit(&u->rx.any_pending, memory_order_acquire) &&
           kiln_now_ms() - atomic_load(&u->rx.pending_since) >= PENDING_LATE_MS;
}

void kiln_uring_rx_flush(struct uring_impl *u, bool waiting)
{
    if (!atomic_load_explicit(&u->rx.any_pending, memory_order_acquire))
        return;
    if (!waiting && !kiln_uring_rx_late(u))
        return;
    pthread_mutex_lock(&u->lock);
    struct ustream *s = u->rx.pending;
    u->rx.pending = NULL;
    atomic_store(&u->rx.any_pending, false);
    pthread_mutex_unlock(&u->lock);
    while (s) {
        struct ustream *next = s->next_pending;
        pthread_mutex_lock(&s->lock);
        bool started = false;
        if (!s->detached && !s->cancelling) {
            pthread_mutex_lock(&u->lock);
            struct io_uring_sqe *sqe = u->stopping ? NULL : kiln_uring_sqe_locked(u);
            if (sqe) {
                io_uring_prep_recv_multishot(sqe, s->fd, NULL, 0, 0);
                sqe->flags |= IOSQE_BUFFER_SELECT;
                sqe->buf_group = BGID;
                io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)s | UD_STREAM);
                KILN_TSAN_RELEASE(s);
                io_uring_submit(&u->ring);
                atomic_fetch_add_explicit(&u->rx.arms, 1, memory_order_relaxed);
                started = true;
            }
            pthread_mutex_unlock(&u->lock);
        }
        kiln_msg *w = NULL;
        if (!started) {
            /* Closed or stopping before it began: nothing to wait for. */
            s->armed = false;
            s->cancelling = false;
            atomic_fetch_sub(&u->rx.armed, 1);
            w = s->waiter;
            s->waiter = NULL;
        }
        bool free_it = unused(s);
        pthread_mutex_unlock(&s->lock);
        if (w)
            kiln_deliver_pid(u->rt, w->root, w);
        if (free_it)
            stream_free(&u->rx, s);
        s = next;
    }
}

/* Caller holds s->lock; s is armed (or pending: then it never starts). */
static void cancel(struct uring_impl *u, struct ustream *s)
{
    if (s->cancelling)
        return;
    pthread_mutex_lock(&u->lock);
    struct io_uring_sqe *sqe = kiln_uring_sqe_locked(u);
    if (sqe) {
        io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)s | UD_STREAM, 0);
        io_uring_sqe_set_data64(sqe, UD_IGNORE);
        io_uring_submit(&u->ring);
        s->cancelling = true;
    }
    pthread_mutex_unlock(&u->lock);
}

/* Moves up to cap queued bytes to buf; buffers read to the end go back to
 * the ring. Caller holds s->lock. */
static size_t take_queued(struct uring_rx *rx, struct ustream *s, uint8_t *buf, size_t cap)
{
    size_t n = 0;
    uint16_t done[64];
    unsigned ndone = 0;
    while (s->count && n < cap && ndone < 64) {
        struct rx_chunk *c = &s->q[s->head];
        size_t k = c->len - c->off;
        if (k > cap - n)
            k = cap - n;
        memcpy(buf + n, buf_addr(rx, c->bid) + c->off, k);
        n += k;
        c->off += (uint32_t)k;
        if (c->off == c->len) {
            done[ndone++] = c->bid;
            s->head = (s->head + 1) & (rx->nbufs - 1);
            s->count--;
        }
    }
    give_back(rx, done, ndone);
    return n;
}

int kiln_uring_rx_recv(struct kiln_proc *p, int fd, void *buf, size_t cap, uint64_t deadline, size_t *got)
{
    struct uring_impl *u = p->rt->io->impl;
    struct uring_rx *rx = &u->rx;
    if (fd < 0 || !atomic_load_explicit(&rx->on, memory_order_relaxed))
        return KILN_ENOTSUP;
    struct ustream *s = stream_find(rx, fd, true, u);
    if (!s)
        return KILN_ENOTSUP; /* out of memory for the stream: a one-shot receive needs none */
    struct kiln_proc_ext *e = kiln_proc_ext(p);
    if (!e)
        return KILN_ENOMEM;
    pthread_mutex_lock(&s->lock);
    int rc;
    for (;;) {
        if (s->count) {
            *got = take_queued(rx, s, buf, cap);
            rc = KILN_OK;
            break;
        }
        if (s->end) {
            *got = 0;
            rc = s->end > 0 ? KILN_OK : kiln_io_fail(p, -s->end);
            break;
        }
        if (s->waiter || s->waiting) {
            rc = KILN_EBUSY; /* one reader per socket at a time */
            break;
        }
        bool bulk = cap >= BULK_MIN(rx);
        if (!s->armed) {
            if (s->oneshots || bulk || !atomic_load_explicit(&rx->on, memory_order_relaxed)) {
                if (s->oneshots)
                    s->oneshots--;
                rc = KILN_ENOTSUP;
                break;
            }
            rc = arm(u, s);
            if (rc != KILN_OK)
                break;
        } else if (bulk) {
            cancel(u, s); /* its end wakes us; then we read directly */
        }
        kiln_msg *m = kiln_signal_new(KILN_MK_WAKE, 0);
        if (!m) {
            rc = KILN_ENOMEM;
            break;
        }
        uint64_t id = kiln_ref_next(p->rt);
        m->aux = id;
        m->root = p->pid;
        s->waiter = m;
        s->waiting = true;
        pthread_mutex_unlock(&s->lock);
        /* If we die waiting, the exit path takes our WAKE back by this. */
        e->io_token = (uint64_t)(uintptr_t)s | UD_STREAM;
        kiln_msg *w;
        rc = kiln_wait_wake(p, id, kiln_io_left(deadline), &w);
        e->io_token = 0;
        pthread_mutex_lock(&s->lock);
        s->waiting = false;
        if (rc == KILN_OK) {
            kiln_msg_free(w);
            if (!s->detached)
                continue;
            rc = kiln_io_fail(p, EBADF); /* closed under us */
        } else if (s->waiter == m) {
            /* Timed out with nothing arrived; a WAKE handed over meanwhile
             * is dropped as a leftover by a later receive. */
            s->waiter = NULL;
            kiln_msg_free(m);
        }
        break;
    }
    bool free_it = unused(s);
    pthread_mutex_unlock(&s->lock);
    if (free_it)
        stream_free(rx, s);
    return rc;
}

kiln_msg *kiln_uring_rx_complete(struct uring_impl *u, const struct io_uring_cqe *cqe)
{
    struct uring_rx *rx = &u->rx;
    struct ustream *s = (struct ustream *)(uintptr_t)(cqe->user_data & ~(uint64_t)7);
    KILN_TSAN_ACQUIRE(s);
    int res = cqe->res;
    bool more = cqe->flags & IORING_CQE_F_MORE;
    pthread_mutex_lock(&s->lock);
    if (res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
        uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        atomic_fetch_add_explicit(&rx->buffers, 1, memory_order_relaxed);
        if (s->detached) {
            give_back(rx, &bid, 1);
        } else {
            unsigned slot = (s->head + s->count) & (rx->nbufs - 1);
            s->q[slot] = (struct rx_chunk){.len = (uint32_t)res, .off = 0, .bid = bid};
            s->count++;
            if (more && s->count >= rx->hold_max)
                cancel(u, s); /* a slow reader: pause until it has read these */
        }
    } else if (res == 0) {
        s->end = 1;
    } else if (res == -ENOBUFS) {
        s->oneshots = ONESHOTS_AFTER_SHORTAGE;
        atomic_fetch_add_explicit(&rx->shortages, 1, memory_order_relaxed);
    } else if (res == -EINVAL) {
        /* Buffer rings without multishot receives (5.19): one-shot from now on. */
        atomic_store(&rx->on, false);
    } else if (res != -ECANCELED) {
        s->end = res;
    }
    if (!more) {
        s->armed = false;
        s->cancelling = false;
        atomic_fetch_sub(&rx->armed, 1);
    }
    kiln_msg *w = s->waiter;
    s->waiter = NULL;
    bool free_it = unused(s);
    pthread_mutex_unlock(&s->lock);
    if (free_it)
        stream_free(rx, s);
    if (w) {
        w->kind = KILN_MK_WAKE;
        pthread_mutex_lock(&u->lock);
        bool stopping = u->stopping;
        pthread_mutex_unlock(&u->lock);
        if (stopping) {
            kiln_msg_free(w);
            w = NULL;
        }
    }
    return w;
}

void kiln_uring_rx_forget(struct uring_impl *u, int fd)
{
    struct uring_rx *rx = &u->rx;
    if (fd < 0 || !rx->br)
        return;
    pthread_mutex_lock(&rx->table_lock);
    struct ustream *s = (size_t)fd < rx->table_cap ? rx->table[fd] : NULL;
    if (s)
        rx->table[fd] = NULL;
    pthread_mutex_unlock(&rx->table_lock);
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->detached = true;
    if (s->armed)
        cancel(u, s); /* else the kernel keeps the socket open */
    kiln_msg *w = s->waiter;
    s->waiter = NULL;
    bool free_it = unused(s);
    pthread_mutex_unlock(&s->lock);
    if (w)
        kiln_deliver_pid(u->rt, w->root, w); /* a reader still waiting learns of the close */
    if (free_it)
        stream_free(rx, s);
}

void kiln_uring_rx_abandon(struct uring_impl *u, struct kiln_proc *p, uint64_t token)
{
    struct ustream *s = (struct ustream *)(uintptr_t)(token & ~(uint64_t)7);
    pthread_mutex_lock(&s->lock);
    if (s->waiter && s->waiter->root == p->pid) {
        kiln_msg_free(s->waiter);
        s->waiter = NULL;
    }
    s->waiting = false;
    bool free_it = unused(s);
    pthread_mutex_unlock(&s->lock);
    if (free_it)
        stream_free(&u->rx, s);
}

void kiln_uring_rx_stop(struct uring_impl *u)
{
    struct uring_rx *rx = &u->rx;
    pthread_mutex_lock(&rx->table_lock);
    for (size_t fd = 0; fd < rx->table_cap; fd++) {
        struct ustream *s = rx->table[fd];
        rx->table[fd] = NULL;
        if (s)
            stream_free(rx, s);
    }
    pthread_mutex_unlock(&rx->table_lock);
}

void kiln_io_uring_stats(struct uring_impl *u, kiln_io_stats *out)
{
    struct uring_rx *rx = &u->rx;
    out->recv_multishot = atomic_load(&rx->on) ? 1 : 0;
    out->multishot_arms = atomic_load_explicit(&rx->arms, memory_order_relaxed);
    out->multishot_buffers = atomic_load_explicit(&rx->buffers, memory_order_relaxed);
    out->buffer_shortages = atomic_load_explicit(&rx->shortages, memory_order_relaxed);
    out->oneshot_recvs = atomic_load_explicit(&rx->oneshot, memory_order_relaxed);
}
