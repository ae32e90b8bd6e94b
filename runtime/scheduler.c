/* The M:N scheduler: one worker thread per core, each with a local run
 * queue and a runnext slot; a global queue for overflow and foreign
 * threads; idle workers steal half a victim's queue, spin, then park on a
 * futex. Wake-ups are targeted: at most one spinning worker at a time is
 * woken to look for new work (Go's wakep rule). */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "io.h"
#include "rt.h"
#include "tls.h"

/* The current worker (rt.h says how it is read). */
#if defined(__x86_64__)
KILN_TLS struct kiln_worker *kiln_tls_worker;
#define tls_worker kiln_tls_worker
#else
static KILN_TLS struct kiln_worker *tls_worker;

__attribute__((noinline)) struct kiln_worker *kiln_current_worker(void)
{
    __asm__ __volatile__("" ::: "memory");
    return tls_worker;
}

__attribute__((noinline)) struct kiln_proc *kiln_current_proc(void)
{
    __asm__ __volatile__("" ::: "memory");
    struct kiln_worker *w = tls_worker;
    return w ? w->running : NULL;
}
#endif

void kiln_set_current_worker(struct kiln_worker *w) { tls_worker = w; }

static long futex(_Atomic uint32_t *addr, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, (uint32_t *)addr, op | FUTEX_PRIVATE_FLAG, val, ts, NULL, 0);
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* ---- global queue ---- */

static bool gq_push_locked(struct kiln_gq *q, struct kiln_proc *p)
{
    if (q->len == q->cap) {
        size_t ncap = q->cap ? q->cap * 2 : 1024;
        struct kiln_proc **nb = kiln_malloc(ncap * sizeof(*nb));
        if (!nb)
            return false;
        for (size_t i = 0; i < q->len; i++)
            nb[i] = q->buf[(q->head + i) % q->cap];
        kiln_free(q->buf);
        q->buf = nb;
        q->cap = ncap;
        q->head = 0;
    }
    q->buf[(q->head + q->len) % q->cap] = p;
    q->len++;
    atomic_store_explicit(&q->approx_len, q->len, memory_order_release);
    return true;
}

static void gq_push_batch(kiln_rt *rt, struct kiln_proc **ps, size_t n)
{
    pthread_mutex_lock(&rt->global.lock);
    for (size_t i = 0; i < n; i++) {
        /* Growing the queue failed: there is no memory to keep a runnable
         * process anywhere, and dropping it would hang it forever. */
        if (!gq_push_locked(&rt->global, ps[i])) {
            fprintf(stderr, "kiln: out of memory growing the global run queue\n");
            abort();
        }
    }
    pthread_mutex_unlock(&rt->global.lock);
}

/* Take one process to run and move a fair share of the rest into w's queue. */
static struct kiln_proc *gq_pop(kiln_rt *rt, struct kiln_worker *w)
{
    if (atomic_load_explicit(&rt->global.approx_len, memory_order_acquire) == 0)
        return NULL;
    pthread_mutex_lock(&rt->global.lock);
    struct kiln_gq *q = &rt->global;
    if (q->len == 0) {
        pthread_mutex_unlock(&q->lock);
        return NULL;
    }
    size_t n = q->len / rt->nworkers + 1;
    if (n > KILN_RUNQ_SIZE / 2)
        n = KILN_RUNQ_SIZE / 2;
    if (n > q->len)
        n = q->len;
    struct kiln_proc *first = q->buf[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    for (size_t i = 1; i < n; i++) {
        if (!kiln_runq_push(&w->runq, q->buf[q->head]))
            break;
        q->head = (q->head + 1) % q->cap;
        q->len--;
    }
    atomic_store_explicit(&q->approx_len, q->len, memory_order_release);
    pthread_mutex_unlock(&q->lock);
    KILN_STAT_INC(w->global_pops);
    return first;
}

/* ---- I/O completions on the first worker ---- */

#define IO_BATCH 64

static bool io_reaps(kiln_rt *rt)
{
    return !atomic_load_explicit(&rt->io_detached, memory_order_acquire) && rt->io && rt->io->ops->wait;
}

static void idle_remove_locked(kiln_rt *rt, struct kiln_worker *w);

/* What completed, delivered from this worker: the waiting processes land
 * on its own queue (a dead one frees its message). One worker at a time
 * is on the ring; false when another is. A parked worker stops counting
 * as idle before it delivers, so the deliveries do not wake it again. */
static bool io_take(struct kiln_worker *w, int64_t timeout_ms, bool parked)
{
    kiln_rt *rt = w->rt;
    kiln_msg *got[IO_BATCH];
    size_t n = 0;
    if (pthread_mutex_trylock(&rt->io_poll_lock) != 0)
        return false;
    if (parked)
        atomic_store(&w->polling, 1);
    kiln_full_fence();
    /* Woken (parked cleared) between our look and now: no waiting. */
    if (parked && (atomic_load(&w->parked) != 1 || atomic_load(&rt->stopping)))
        timeout_ms = 0;
    if (io_reaps(rt))
        n = rt->io->ops->wait(rt, timeout_ms, got, IO_BATCH);
    pthread_mutex_unlock(&rt->io_poll_lock);
    if (parked) {
        atomic_store(&w->polling, 0);
        pthread_mutex_lock(&rt->idle_lock);
        if (atomic_load(&w->parked) == 1) {
            idle_remove_locked(rt, w);
            atomic_store(&w->parked, 0);
        }
        pthread_mutex_unlock(&rt->idle_lock);
    }
    for (size_t i = 0; i < n; i++)
        kiln_deliver_pid(rt, got[i]->root, got[i]);
    return true;
}

/* Between runs: a look at the ring, no system call. */
static void io_glance(struct kiln_worker *w)
{
    kiln_rt *rt = w->rt;
    if (io_reaps(rt) && rt->io->ops->ready(rt))
        io_take(w, 0, false);
}

static void interrupt_io_wait(kiln_rt *rt)
{
    uint64_t one = 1;
    if (rt->io_wake_fd >= 0 && write(rt->io_wake_fd, &one, sizeof one) < 0) {
        /* Only a full counter fails, and then a wake-up is pending anyway. */
    }
}

void kiln_sched_io_interrupt(kiln_rt *rt) { interrupt_io_wait(rt); }

void kiln_sched_io_detach(kiln_rt *rt)
{
    atomic_store(&rt->io_detached, 1);
    interrupt_io_wait(rt);
    /* Once we hold the lock, the first worker is off the ring for good. */
    pthread_mutex_lock(&rt->io_poll_lock);
    pthread_mutex_unlock(&rt->io_poll_lock);
}

/* A parked worker is woken where it sleeps: the futex, or the ring. The
 * caller has cleared w->parked; the worker sets polling before it checks
 * parked, so one of the two sees the other. */
static void wake_parked(kiln_rt *rt, struct kiln_worker *w)
{
    kiln_full_fence();
    if (atomic_load(&w->polling))
        interrupt_io_wait(rt);
    else
        futex(&w->parked, FUTEX_WAKE, 1, NULL);
}

/* ---- parking ---- */

static void idle_remove_locked(kiln_rt *rt, struct kiln_worker *w)
{
    for (struct kiln_worker **pp = &rt->idle; *pp; pp = &(*pp)->idle_next) {
        if (*pp == w) {
            *pp = w->idle_next;
            w->idle_next = NULL;
            atomic_fetch_sub(&rt->nidle, 1);
            return;
        }
    }
}

void kiln_sched_kick_worker(struct kiln_worker *w)
{
    kiln_rt *rt = w->rt;
    pthread_mutex_lock(&rt->idle_lock);
    bool was_parked = atomic_load(&w->parked) == 1;
    if (was_parked) {
        idle_remove_locked(rt, w);
        atomic_store(&w->parked, 0);
    }
    pthread_mutex_unlock(&rt->idle_lock);
    if (was_parked)
        wake_parked(rt, w);
}

void kiln_sched_wake_one(kiln_rt *rt)
{
    kiln_full_fence();
    if (atomic_load(&rt->nidle) == 0)
        return;
    unsigned zero = 0;
    /* Someone already looks for work: it will find this too. */
    if (!atomic_compare_exchange_strong(&rt->nspinning, &zero, 1))
        return;
    pthread_mutex_lock(&rt->idle_lock);
    struct kiln_worker *w = rt->idle;
    if (w) {
        rt->idle = w->idle_next;
        w->idle_next = NULL;
        atomic_fetch_sub(&rt->nidle, 1);
        w->spinning = true; /* counted in nspinning on its behalf */
        atomic_store(&w->parked, 0);
    }
    pthread_mutex_unlock(&rt->idle_lock);
    if (!w) {
        atomic_fetch_sub(&rt->nspinning, 1);
        return;
    }
    atomic_fetch_add_explicit(&rt->wakeups, 1, memory_order_relaxed);
    wake_parked(rt, w);
}

static bool any_work_visible(kiln_rt *rt)
{
    if (atomic_load(&rt->global.approx_len) != 0)
        return true;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        struct kiln_worker *v = &rt->workers[i];
        if (kiln_runq_len(&v->runq) || atomic_load(&v->runnext))
            return true;
    }
    return false;
}

static void stop_spinning(struct kiln_worker *w)
{
    if (w->spinning) {
        w->spinning = false;
        atomic_fetch_sub(&w->rt->nspinning, 1);
    }
}

#define PARK_MAX_MS 50

static void park(struct kiln_worker *w, uint64_t timeout_ms)
{
    kiln_rt *rt = w->rt;
    pthread_mutex_lock(&rt->idle_lock);
    atomic_store(&w->parked, 1);
    w->idle_next = rt->idle;
    rt->idle = w;
    atomic_fetch_add(&rt->nidle, 1);
    pthread_mutex_unlock(&rt->idle_lock);

    /* A producer may have queued work after we last looked but before we
     * became visible as idle: look once more. The producer fences between
     * queueing and reading nidle (kiln_sched_wake_one), so one of us sees
     * the other. */
    kiln_full_fence();
    if (!atomic_load(&rt->stopping) && !any_work_visible(rt)) {
        KILN_STAT_INC(w->parks);
        /* No sleep lasts longer than PARK_MAX_MS. A process that yields is
         * requeued without waking anyone (kiln_sched_requeue), so two busy processes
         * can end up sharing one worker while this one sleeps; the next
         * look steals one of them, as Erlang's periodic balancing would.
         * The looks also bound how long a long run on the first worker (or
         * a glance that kept it off the ring) can hold completions back. */
        if (timeout_ms > PARK_MAX_MS)
            timeout_ms = PARK_MAX_MS;
        struct timespec ts = {(time_t)(timeout_ms / 1000), (long)(timeout_ms % 1000) * 1000000L};
        bool on_ring = false;
        /* The first worker sleeps on the ring: a completion wakes it
         * directly, and so does the scheduler (interrupt_io_wait). Keeping
         * it on one worker keeps the processes it wakes there (measured:
         * 0.45-0.6 of the old remote call time, against 0.65-0.9 when any
         * parked worker took the ring). */
        if (io_reaps(rt) && w->index == 0)
            on_ring = io_take(w, (int64_t)timeout_ms, true);
        while (!on_ring && atomic_load(&w->parked) == 1 && !atomic_load(&rt->stopping)) {
            long r = futex(&w->parked, FUTEX_WAIT, 1, &ts);
            if (r != 0 && errno == ETIMEDOUT)
                break;
        }
    }
    pthread_mutex_lock(&rt->idle_lock);
    if (atomic_load(&w->parked) == 1) {
        idle_remove_locked(rt, w);
        atomic_store(&w->parked, 0);
    }
    pthread_mutex_unlock(&rt->idle_lock);
}

/* ---- making processes runnable ---- */

void kiln_sched_ready(kiln_rt *rt, struct kiln_proc *p, bool next)
{
    atomic_store_explicit(&p->status, KILN_PS_RUNNABLE, memory_order_relaxed);
    struct kiln_worker *w = kiln_current_worker();
    if (!w || w->rt != rt) {
        gq_push_batch(rt, &p, 1);
        kiln_sched_wake_one(rt);
        return;
    }
    if (next) {
        /* Request/reply pairs stay on this core's cache; the previous
         * occupant goes to the back of the queue. An empty slot is filled
         * inline by kiln_sched_ready_next (rt.h). */
        p = atomic_exchange_explicit(&w->runnext, p, memory_order_acq_rel);
        if (!p)
            return;
    }
    if (!kiln_runq_push(&w->runq, p)) {
        struct kiln_proc *batch[KILN_RUNQ_SIZE / 2 + 1];
        uint32_t n = kiln_runq_grab_half(&w->runq, batch, KILN_RUNQ_SIZE / 2);
        batch[n++] = p;
        gq_push_batch(rt, batch, n);
    }
    kiln_sched_wake_one(rt);
}

/* A process that yielded goes to the back of its worker's queue with no
 * wake-up: nothing new became runnable. Waking an idle worker here only
 * gave it the yielding process to steal, which then ran on the other
 * core from the processes it feeds (see docs/design.md, "Sends count"). */
void kiln_sched_requeue(struct kiln_worker *w, struct kiln_proc *p)
{
    atomic_store_explicit(&p->status, KILN_PS_RUNNABLE, memory_order_relaxed);
    if (!kiln_runq_push(&w->runq, p))
        kiln_sched_ready(w->rt, p, false); /* overflow: the global queue, and a wake-up */
}

void kiln_sched_before_syscall(void)
{
    struct kiln_worker *w = kiln_current_worker();
    if (w && (kiln_runq_len(&w->runq) || atomic_load_explicit(&w->runnext, memory_order_relaxed)))
        kiln_sched_wake_one(w->rt);
}

/* ---- finding work ---- */

/* Empty a worker's runnext, owner or thief: an exchange only when the
 * load saw a process (an empty slot costs no locked instruction). */
static inline struct kiln_proc *take_runnext(struct kiln_worker *w)
{
    return atomic_load_explicit(&w->runnext, memory_order_relaxed)
               ? atomic_exchange_explicit(&w->runnext, NULL, memory_order_acq_rel)
               : NULL;
}

static struct kiln_proc *steal_work(struct kiln_worker *w)
{
    kiln_rt *rt = w->rt;
    unsigned n = rt->nworkers;
    for (int round = 0; round < 4; round++) {
        unsigned start = (unsigned)(rng_next(&w->rng) % n);
        for (unsigned k = 0; k < n; k++) {
            struct kiln_worker *v = &rt->workers[(start + k) % n];
            if (v == w)
                continue;
            uint32_t got;
            struct kiln_proc *p = kiln_runq_steal(&w->runq, &v->runq, &got);
            if (p) {
                KILN_STAT_INC(w->steals);
                return p;
            }
            /* An empty ring but a waiting runnext: the owner is busy with
             * something long; take it rather than let it wait. */
            if (round == 3 && (p = take_runnext(v))) {
                KILN_STAT_INC(w->steals);
                return p;
            }
        }
    }
    return NULL;
}

/* A spinning worker that found work stops spinning; if it was the last
 * one, another is woken to keep looking (there may be more work). */
static struct kiln_proc *found(struct kiln_worker *w, struct kiln_proc *p)
{
    if (w->spinning) {
        w->spinning = false;
        if (atomic_fetch_sub(&w->rt->nspinning, 1) == 1)
            kiln_sched_wake_one(w->rt);
    }
    return p;
}

/* One epoch section covers up to SECTION_RUNS process runs: entering one
 * is an atomic exchange, too dear to pay on every run of a request/reply
 * pair. It ends before the worker looks for work elsewhere or parks, so
 * grace periods still advance. */
#define SECTION_RUNS 64

static void section_begin(struct kiln_worker *w)
{
    if (!w->in_section) {
        ck_epoch_begin(&w->epoch, NULL);
        w->in_section = true;
        w->section_runs = 0;
    }
}

static void section_end(struct kiln_worker *w)
{
    if (w->in_section) {
        KILN_TSAN_RELEASE(&w->rt->tsan_epoch_sync);
        ck_epoch_end(&w->epoch, NULL);
        w->in_section = false;
    }
}

static struct kiln_proc *find_work(struct kiln_worker *w)
{
    kiln_rt *rt = w->rt;
    for (;;) {
        struct kiln_proc *p;
        /* A periodic look at the global queue keeps two processes that feed
         * each other from starving everything queued there. */
        if (++w->tick == w->gq_turn && (w->gq_turn += 61, p = gq_pop(rt, w)))
            return found(w, p);
        /* runnext keeps a request/reply pair on one core, but a pair that
         * wakes each other forever would hold it for good: after a run of
         * runnext picks the local queue gets a turn (Go caps the same
         * chain with a shared time slice). */
        bool fair = w->next_streak >= KILN_RUNNEXT_STREAK;
        if (!fair && (p = take_runnext(w))) {
            w->next_streak++;
            return found(w, p);
        }
        w->next_streak = 0;
        io_glance(w);
        if ((p = kiln_runq_pop(&w->runq)))
            return found(w, p);
        if (fair && (p = take_runnext(w)))
            return found(w, p);
        if ((p = gq_pop(rt, w)))
            return found(w, p);
        /* Only once the queues are empty: the runtime stops after its
         * last process has exited, so nothing runnable is left behind. */
        if (atomic_load_explicit(&rt->stopping, memory_order_acquire))
            return NULL;
        section_end(w);
        if (w->tick % 64 == 0)
            kiln_epoch_poll(w);

        uint64_t next_timer = kiln_timers_run(w, kiln_now_ms());
        if (kiln_runq_len(&w->runq) || atomic_load(&w->runnext))
            continue;
        kiln_epoch_poll(w);

        if (!w->spinning) {
            /* Spin only while fewer than half the busy workers already do. */
            unsigned busy = rt->nworkers - atomic_load(&rt->nidle);
            if (2 * atomic_load(&rt->nspinning) < busy || atomic_load(&rt->nspinning) == 0) {
                w->spinning = true;
                atomic_fetch_add(&rt->nspinning, 1);
            }
        }
        if (w->spinning) {
            if ((p = steal_work(w)))
                return found(w, p);
            for (int i = 0; i < 64; i++)
                kiln_cpu_relax();
            if (kiln_runq_len(&w->runq) || atomic_load(&w->runnext) || atomic_load(&rt->global.approx_len))
                continue;
        }
        stop_spinning(w);
        park(w, next_timer);
    }
}

/* ---- running a process ---- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The scheduler loop runs on a fiber stack, not the thread's own, so
 * that a stackless handler runs on it directly: a plain call, no switch.
 * If that handler blocks, the process keeps the stack (the loop's frames
 * below its own) and the loop goes on on the spare stack; when the process
 * is resumed and its handler returns, it returns into those old loop
 * frames, which take over as the worker's loop and drop the stack the loop
 * had been waiting on. A process with its own stack (a function process,
 * or one blocked earlier) is switched to and switches back to the loop.
 * A local call thus costs two switches (client out, client back in)
 * instead of four, and no trip through the thread's stack.
 *
 * Every stack the loop runs on may have started on another worker, and a
 * handler may resume on another worker than it blocked on: the worker is
 * read afresh after anything that may have switched. */

static void loop_main(void *arg);

static void stacks_in_use_add(kiln_rt *rt, int64_t d)
{
    atomic_fetch_add_explicit(&rt->stacks_in_use, (uint64_t)d, memory_order_relaxed);
}

/* A run is over: the loop settles it next (run_ended). */
static void run_over(struct kiln_worker *w, struct kiln_proc *p, enum kiln_verdict v)
{
    w->ran = p;
    w->ran_on = w->cur_fiber;
    w->verdict = v;
}

void kiln_sched_switch_out(struct kiln_proc *p, enum kiln_verdict v)
{
    struct kiln_worker *w = kiln_current_worker();
    struct kiln_fiber *cur = w->cur_fiber;
    bool gone = v == KILN_V_EXITED;
    run_over(w, p, v);
    if (cur == w->loop_fiber) {
        /* A handler run directly on the loop's stack: the stack is the
         * process's now (or abandoned, if it exited), the loop moves to
         * the spare, which run_process made sure of. */
        struct kiln_fiber *next = w->spare_loop;
        w->spare_loop = NULL;
        kiln_fiber_prepare(next, loop_main, next);
        w->loop_fiber = next;
        if (!gone) {
            p->fiber = cur;
            stacks_in_use_add(w->rt, 1);
        }
    } else if (gone) {
        stacks_in_use_add(w->rt, -1); /* its own stack, recycled by the loop */
    }
    w->cur_fiber = w->loop_fiber;
    kiln_fiber_jump(cur, w->loop_fiber, gone);
}

/* The end of a run, seen from the loop: recycle, requeue or put to sleep. */
static void run_ended(struct kiln_worker *w)
{
    struct kiln_proc *p = w->ran;
    if (!p)
        return;
    kiln_rt *rt = w->rt;
    enum kiln_verdict v = w->verdict;
    w->ran = NULL;
    w->running = NULL;
    if (w->run_t0) {
        uint64_t ms = (now_ns() - w->run_t0) / 1000000u;
        if (ms >= rt->cfg.long_schedule_ms) {
            KILN_STAT_INC(w->long_schedules);
            /* p is retired at most, not freed: we are inside the epoch section. */
            if (rt->cfg.long_schedule)
                rt->cfg.long_schedule(rt, p->pid, ms, rt->cfg.long_schedule_arg);
        }
    }
    if (v == KILN_V_EXITED) {
        /* The stack it left holds abandoned frames. */
        kiln_stack_put(w, w->ran_on);
    } else if (v == KILN_V_YIELD || v == KILN_V_YIELD_STACK) {
        kiln_sched_requeue(w, p);
    } else {
        /* IDLE or BLOCKED: sleep unless something arrived meanwhile. Done
         * here, off the process's stack, so a sender that wakes it cannot
         * resume the stack while it is still in use. */
        atomic_store_explicit(&p->status, KILN_PS_WAITING | (p->fiber ? KILN_PS_STACK_BIT : 0),
                              memory_order_relaxed);
        if (!kiln_mb_try_idle(&p->mb, &p->mbc))
            kiln_sched_ready(rt, p, false);
    }
    if (++w->section_runs >= SECTION_RUNS) {
        section_end(w);
        /* Busy workers must reclaim too, not only idle ones. */
        kiln_epoch_poll(w);
    }
}

/* No memory for a stack: try again later rather than lose the process. */
static void no_stack(kiln_rt *rt, struct kiln_proc *p)
{
    fprintf(stderr, "kiln: no stack for process <0.%u.%u>; retrying\n", kiln_local_pid_id(p->pid),
            kiln_local_pid_serial(p->pid));
    kiln_sched_ready(rt, p, false);
}

static void run_process(struct kiln_worker *w, struct kiln_proc *p)
{
    kiln_rt *rt = w->rt;
    struct kiln_fiber *f = p->fiber;
    if (!f && (p->flags & KILN_PF_FN)) {
        if (!(f = kiln_stack_get(w))) {
            no_stack(rt, p);
            return;
        }
        kiln_fiber_prepare(f, kiln_proc_fiber_main, p);
        p->fiber = f;
        stacks_in_use_add(rt, 1);
    } else if (!f && !w->spare_loop && !(w->spare_loop = kiln_stack_get(w))) {
        /* Should the handler block, the loop would have nowhere to go. */
        no_stack(rt, p);
        return;
    }
    w->running = p;
    w->run_sends = 0;
    w->run_t0 = rt->cfg.long_schedule_ms ? now_ns() : 0;
    atomic_store_explicit(&p->status, KILN_PS_RUNNING, memory_order_relaxed);
    if (f) {
        w->cur_fiber = f;
        kiln_fiber_jump(w->loop_fiber, f, false);
        return; /* it switched out (kiln_sched_switch_out) */
    }
    enum kiln_verdict v = kiln_proc_run_batch(p);
    w = kiln_current_worker();
    if (p->fiber) {
        /* It blocked in this run and took the stack; resumed, it finished
         * here, on the loop frames it had kept: they are the worker's loop
         * from now on, and the stack the loop had been waiting on is
         * abandoned. */
        kiln_stack_put(w, w->loop_fiber);
        w->loop_fiber = p->fiber;
        p->fiber = NULL;
        stacks_in_use_add(w->rt, -1);
    }
    run_over(w, p, v);
}

static _Noreturn void run_loop(void)
{
    for (;;) {
        struct kiln_worker *w = kiln_current_worker();
        run_ended(w);
        struct kiln_proc *p = find_work(w);
        if (!p) {
            section_end(w);
            stop_spinning(w);
            w->cur_fiber = &w->sched;
            kiln_fiber_jump(w->loop_fiber, &w->sched, true);
            abort(); /* never resumed */
        }
        section_begin(w);
        run_process(w, p);
    }
}

static void loop_main(void *arg)
{
    kiln_fiber_started(arg);
    run_loop();
}

static void *worker_main(void *arg)
{
    struct kiln_worker *w = arg;
    kiln_set_current_worker(w);
    kiln_fiber_init_thread(&w->sched);
    kiln_guard_thread_init();
    kiln_fiber_prepare(w->loop_fiber, loop_main, w->loop_fiber);
    w->cur_fiber = w->loop_fiber;
    kiln_fiber_jump(&w->sched, w->loop_fiber, false);
    /* The loop saw the stop. Its stacks are freed with the worker. */
    w->cur_fiber = NULL;
    kiln_guard_thread_fini();
    kiln_fiber_fini_thread(&w->sched);
    kiln_set_current_worker(NULL);
    return NULL;
}

int kiln_sched_start(kiln_rt *rt)
{
    /* Each loop's stack and its spare exist before any thread starts: a
     * worker with nowhere to run its loop could do nothing. */
    for (unsigned i = 0; i < rt->nworkers; i++) {
        struct kiln_worker *w = &rt->workers[i];
        if (!(w->loop_fiber = kiln_stack_get(w)) || !(w->spare_loop = kiln_stack_get(w)))
            return KILN_ENOMEM;
    }
    for (unsigned i = 0; i < rt->nworkers; i++) {
        struct kiln_worker *w = &rt->workers[i];
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            atomic_store(&rt->stopping, 1);
            for (unsigned j = 0; j < i; j++) {
                kiln_sched_kick_worker(&rt->workers[j]);
                pthread_join(rt->workers[j].thread, NULL);
            }
            return KILN_ESYS;
        }
    }
    return KILN_OK;
}

void kiln_sched_stop(kiln_rt *rt)
{
    atomic_store(&rt->stopping, 1);
    interrupt_io_wait(rt);
    for (unsigned i = 0; i < rt->nworkers; i++) {
        struct kiln_worker *w = &rt->workers[i];
        atomic_store(&w->parked, 0);
        futex(&w->parked, FUTEX_WAKE, INT_MAX, NULL);
    }
    for (unsigned i = 0; i < rt->nworkers; i++)
        pthread_join(rt->workers[i].thread, NULL);
}
