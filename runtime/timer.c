/* Timers: one min-heap per worker (4-ary, keyed by deadline), guarded by a
 * mutex because a timer may be cancelled from any thread. Entries live in
 * a slot array with a free list, so a cancelled timer's memory is reused at
 * once. A handle is the worker and a 52-bit sequence number that is never
 * reused, found through a small hash map, so a stale handle can never
 * cancel a later timer. The worker fires due timers in its scheduling loop
 * and parks no longer than the next deadline. */
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "rt.h"

struct kiln_tentry {
    uint64_t deadline;
    uint64_t seq;      /* the handle's number */
    kiln_msg *msg;     /* NULL: free slot */
    kiln_term dest;    /* local pid or registered name */
    uint32_t heap_pos; /* or the next free slot, when free */
};

struct kiln_timers {
    pthread_mutex_t lock;
    struct kiln_tentry *slots;
    uint32_t nslots, cap;
    uint32_t free_head;       /* free list threaded through heap_pos; UINT32_MAX = none */
    uint32_t *heap;
    uint32_t heap_len;
    uint64_t next_seq;
    uint32_t *index;          /* seq -> slot, open addressing; NO_SLOT = empty */
    uint32_t index_cap;       /* power of two, at least twice the live timers */
    _Atomic uint64_t next_deadline; /* UINT64_MAX when empty: read without the lock */
};

#define NO_SLOT UINT32_MAX
#define SEQ_BITS 52u
#define SEQ_MASK ((1ull << SEQ_BITS) - 1)

uint64_t kiln_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int kiln_timers_init(struct kiln_worker *w)
{
    struct kiln_timers *t = kiln_calloc(1, sizeof(*t));
    if (!t)
        return KILN_ENOMEM;
    pthread_mutex_init(&t->lock, NULL);
    t->free_head = NO_SLOT;
    t->next_seq = 1;
    atomic_store(&t->next_deadline, UINT64_MAX);
    w->timers = t;
    return KILN_OK;
}

void kiln_timers_fini(struct kiln_worker *w)
{
    struct kiln_timers *t = w->timers;
    if (!t)
        return;
    for (uint32_t i = 0; i < t->heap_len; i++)
        kiln_msg_free(t->slots[t->heap[i]].msg);
    kiln_free(t->slots);
    kiln_free(t->heap);
    kiln_free(t->index);
    pthread_mutex_destroy(&t->lock);
    kiln_free(t);
    w->timers = NULL;
}

/* ---- seq -> slot index ---- */

static uint32_t index_home(const struct kiln_timers *t, uint64_t seq)
{
    return (uint32_t)((seq * 0x9E3779B97F4A7C15ull) >> 32) & (t->index_cap - 1);
}

static uint32_t index_find(const struct kiln_timers *t, uint64_t seq)
{
    if (!t->index_cap)
        return NO_SLOT;
    for (uint32_t i = index_home(t, seq);; i = (i + 1) & (t->index_cap - 1)) {
        uint32_t s = t->index[i];
        if (s == NO_SLOT || t->slots[s].seq == seq)
            return i;
    }
}

static bool index_grow(struct kiln_timers *t)
{
    uint32_t ncap = t->index_cap ? t->index_cap * 2 : 128;
    uint32_t *ni = kiln_malloc((size_t)ncap * sizeof(*ni));
    if (!ni)
        return false;
    for (uint32_t i = 0; i < ncap; i++)
        ni[i] = NO_SLOT;
    uint32_t *old = t->index, ocap = t->index_cap;
    t->index = ni;
    t->index_cap = ncap;
    for (uint32_t i = 0; i < ocap; i++)
        if (old[i] != NO_SLOT)
            t->index[index_find(t, t->slots[old[i]].seq)] = old[i];
    kiln_free(old);
    return true;
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void index_delete(struct kiln_timers *t, uint32_t i)
{
    uint32_t mask = t->index_cap - 1;
    for (uint32_t j = (i + 1) & mask;; j = (j + 1) & mask) {
        uint32_t s = t->index[j];
        if (s == NO_SLOT)
            break;
        uint32_t home = index_home(t, t->slots[s].seq);
        /* Move j back into the hole if its home does not lie in (i, j]. */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            t->index[i] = s;
            i = j;
        }
    }
    t->index[i] = NO_SLOT;
}

/* ---- heap ---- */

static bool earlier(struct kiln_timers *t, uint32_t a, uint32_t b)
{
    return t->slots[t->heap[a]].deadline < t->slots[t->heap[b]].deadline;
}

static void swap_pos(struct kiln_timers *t, uint32_t a, uint32_t b)
{
    uint32_t sa = t->heap[a], sb = t->heap[b];
    t->heap[a] = sb;
    t->heap[b] = sa;
    t->slots[sb].heap_pos = a;
    t->slots[sa].heap_pos = b;
}

static void sift_up(struct kiln_timers *t, uint32_t i)
{
    while (i > 0) {
        uint32_t parent = (i - 1) / 4;
        if (!earlier(t, i, parent))
            break;
        swap_pos(t, i, parent);
        i = parent;
    }
}

static void sift_down(struct kiln_timers *t, uint32_t i)
{
    for (;;) {
        uint32_t best = i;
        for (uint32_t c = 4 * i + 1; c <= 4 * i + 4 && c < t->heap_len; c++)
            if (earlier(t, c, best))
                best = c;
        if (best == i)
            break;
        swap_pos(t, i, best);
        i = best;
    }
}

static void heap_remove(struct kiln_timers *t, uint32_t pos)
{
    t->heap_len--;
    if (pos != t->heap_len) {
        swap_pos(t, pos, t->heap_len);
        sift_up(t, pos);
        sift_down(t, pos);
    }
}

static void update_next(struct kiln_timers *t)
{
    atomic_store_explicit(&t->next_deadline, t->heap_len ? t->slots[t->heap[0]].deadline : UINT64_MAX,
                          memory_order_release);
}

static void slot_free(struct kiln_timers *t, uint32_t s)
{
    index_delete(t, index_find(t, t->slots[s].seq));
    t->slots[s].msg = NULL;
    t->slots[s].heap_pos = t->free_head;
    t->free_head = s;
}

static bool grow(struct kiln_timers *t)
{
    uint32_t ncap = t->cap ? t->cap * 2 : 64;
    if (ncap <= t->cap)
        return false;
    struct kiln_tentry *ns = kiln_realloc(t->slots, (size_t)ncap * sizeof(*ns));
    if (!ns)
        return false;
    t->slots = ns;
    uint32_t *nh = kiln_realloc(t->heap, (size_t)ncap * sizeof(*nh));
    if (!nh)
        return false;
    t->heap = nh;
    t->cap = ncap;
    return true;
}

/* ---- scheduling ---- */

static struct kiln_worker *pick_worker(kiln_rt *rt)
{
    struct kiln_worker *w = kiln_current_worker();
    if (w && w->rt == rt)
        return w;
    static _Atomic unsigned rr;
    return &rt->workers[atomic_fetch_add_explicit(&rr, 1, memory_order_relaxed) % rt->nworkers];
}

static int timer_add(kiln_rt *rt, uint64_t ms, kiln_term dest, kiln_msg *msg, kiln_timer *out)
{
    struct kiln_worker *w = pick_worker(rt);
    struct kiln_timers *t = w->timers;
    uint64_t deadline = kiln_now_ms() + ms;
    pthread_mutex_lock(&t->lock);
    if ((t->heap_len + 1) * 2 > t->index_cap && !index_grow(t)) {
        pthread_mutex_unlock(&t->lock);
        kiln_msg_free(msg);
        return KILN_ENOMEM;
    }
    uint32_t s = t->free_head;
    if (s != NO_SLOT) {
        t->free_head = t->slots[s].heap_pos;
    } else {
        if (t->nslots == t->cap && !grow(t)) {
            pthread_mutex_unlock(&t->lock);
            kiln_msg_free(msg);
            return KILN_ENOMEM;
        }
        s = t->nslots++;
    }
    struct kiln_tentry *e = &t->slots[s];
    e->seq = t->next_seq++ & SEQ_MASK;
    t->index[index_find(t, e->seq)] = s;
    e->deadline = deadline;
    e->msg = msg;
    e->dest = dest;
    e->heap_pos = t->heap_len;
    t->heap[t->heap_len++] = s;
    sift_up(t, e->heap_pos);
    uint64_t before = atomic_load_explicit(&t->next_deadline, memory_order_relaxed);
    update_next(t);
    uint64_t seq = e->seq;
    pthread_mutex_unlock(&t->lock);
    if (out)
        *out = ((uint64_t)(w->index + 1) << SEQ_BITS) | seq;
    /* The owner may be parked until a later deadline: wake it. */
    if (deadline < before && w != kiln_current_worker())
        kiln_sched_kick_worker(w);
    return KILN_OK;
}

int kiln_send_after(kiln_rt *rt, uint64_t ms, kiln_term dest, kiln_msg *msg, kiln_timer *out)
{
    if (!rt || !msg || !(kiln_is_local_pid(dest) || kiln_is_atom(dest))) {
        kiln_msg_free(msg);
        return KILN_EBADARG;
    }
    msg->kind = KILN_MK_USER;
    return timer_add(rt, ms, dest, msg, out);
}

int kiln_timer_receive_timeout(kiln_rt *rt, kiln_term pid, uint32_t gen, uint64_t ms, kiln_timer *out)
{
    /* Allocated now so that firing never allocates. */
    kiln_msg *m = kiln_signal_new(KILN_MK_TIMEOUT, 0);
    if (!m)
        return KILN_ENOMEM;
    m->aux32 = gen;
    return timer_add(rt, ms, pid, m, out);
}

int kiln_cancel_timer(kiln_rt *rt, kiln_timer h, uint64_t *left_ms)
{
    uint64_t wi = h >> SEQ_BITS;
    if (!rt || wi == 0 || wi > rt->nworkers)
        return KILN_EINVAL;
    struct kiln_timers *t = rt->workers[wi - 1].timers;
    pthread_mutex_lock(&t->lock);
    uint32_t i = index_find(t, h & SEQ_MASK);
    uint32_t s = i == NO_SLOT ? NO_SLOT : t->index[i];
    if (s == NO_SLOT) {
        pthread_mutex_unlock(&t->lock);
        return KILN_ENOTREG;
    }
    struct kiln_tentry *e = &t->slots[s];
    kiln_msg *m = e->msg;
    uint64_t deadline = e->deadline;
    heap_remove(t, e->heap_pos);
    slot_free(t, s);
    update_next(t);
    pthread_mutex_unlock(&t->lock);
    kiln_msg_free(m);
    if (left_ms) {
        uint64_t now = kiln_now_ms();
        *left_ms = deadline > now ? deadline - now : 0;
    }
    return KILN_OK;
}

uint64_t kiln_timers_run(struct kiln_worker *w, uint64_t now)
{
    struct kiln_timers *t = w->timers;
    uint64_t next = atomic_load_explicit(&t->next_deadline, memory_order_acquire);
    if (next > now)
        return next == UINT64_MAX ? UINT64_MAX : next - now;
    kiln_rt *rt = w->rt;
    enum { BATCH = 64 };
    kiln_msg *msgs[BATCH];
    kiln_term dests[BATCH];
    for (;;) {
        unsigned n = 0;
        pthread_mutex_lock(&t->lock);
        while (n < BATCH && t->heap_len && t->slots[t->heap[0]].deadline <= now) {
            uint32_t s = t->heap[0];
            msgs[n] = t->slots[s].msg;
            dests[n] = t->slots[s].dest;
            n++;
            heap_remove(t, 0);
            slot_free(t, s);
        }
        update_next(t);
        pthread_mutex_unlock(&t->lock);
        kiln_epoch_enter(rt);
        for (unsigned i = 0; i < n; i++) {
            kiln_term pid = kiln_is_atom(dests[i]) ? kiln_whereis(rt, dests[i]) : dests[i];
            if (kiln_is_none(pid))
                kiln_msg_free(msgs[i]);
            else
                kiln_deliver_pid(rt, pid, msgs[i]);
        }
        kiln_epoch_exit(rt);
        if (n < BATCH)
            break;
    }
    next = atomic_load_explicit(&t->next_deadline, memory_order_acquire);
    return next == UINT64_MAX ? UINT64_MAX : (next > now ? next - now : 0);
}

uint64_t kiln_timers_pending(kiln_rt *rt)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        struct kiln_timers *t = rt->workers[i].timers;
        pthread_mutex_lock(&t->lock);
        n += t->heap_len;
        pthread_mutex_unlock(&t->lock);
    }
    return n;
}
