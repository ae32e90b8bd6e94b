/* Internal structures shared by the runtime's files: the runtime, its
 * workers, processes. Nothing here is public API. */
#ifndef KILN_RUNTIME_RT_H
#define KILN_RUNTIME_RT_H

#include <ck_epoch.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "kiln/process.h"
#include "kiln/runtime.h"
#include "kiln/timer.h"

#include "cpu.h"
#include "fiber.h"
#include "mailbox.h"
#include "message.h"
#include "tls.h"
#include "runqueue.h"

#if defined(__SANITIZE_THREAD__) || defined(KILN_TSAN)
#include <sanitizer/tsan_interface.h>
#define KILN_TSAN_RELEASE(a) __tsan_release((void *)(a))
#define KILN_TSAN_ACQUIRE(a) __tsan_acquire((void *)(a))
#else
#define KILN_TSAN_RELEASE(a) ((void)0)
#define KILN_TSAN_ACQUIRE(a) ((void)0)
#endif

struct kiln_worker;
struct kiln_timers;

/* ---- processes ---- */

enum kiln_proc_flag {
    KILN_PF_TRAP_EXIT = 1u << 0,
    KILN_PF_FN = 1u << 1,         /* runs a function on its own fiber */
    KILN_PF_STARTED = 1u << 2,    /* init has run */
    KILN_PF_EXITING = 1u << 3,
    KILN_PF_STOP = 1u << 4,       /* a handler asked to stop */
    KILN_PF_DEFER = 1u << 5       /* made runnable: after what its waker's worker has queued */
};

/* A link kept by a process. Local pids are immediates; a remote pid is a
 * boxed term, copied into `store`, a small message the entry owns. */
struct kiln_link {
    kiln_term pid;
    kiln_msg *store;
};

/* A monitor: one I hold (ext->monitors) or one held on me
 * (ext->monitored_by). Local refs are known by their unique number; a
 * remote watcher's ref is kept whole in rref. Boxed parts live in store. */
struct kiln_monitor {
    uint64_t ref;       /* the ref's unique number (local refs) */
    kiln_term pid;      /* the other side */
    kiln_term name;     /* monitored by name: the atom, else KILN_NONE */
    kiln_term rref;     /* a remote watcher's ref, else KILN_NONE */
    kiln_msg *store;
};

struct kiln_vec {
    void *items;
    uint32_t len, cap;
};

/* Rarely used process state, allocated on first use so an idle process
 * with no links stays small. */
struct kiln_proc_ext {
    struct kiln_vec links;        /* struct kiln_link */
    struct kiln_vec monitors;     /* struct kiln_monitor: I watch them */
    struct kiln_vec monitored_by; /* struct kiln_monitor: they watch me */
    struct kiln_vec aliases;      /* uint64_t ref numbers, high bit = reply_once */
    kiln_term name;               /* registered name or KILN_NONE; under the proc lock */
    int io_errno;                 /* the last system error from kiln/io.h calls */
    /* The I/O operation this process waits on (the back end's token, 0 if
     * none) and a socket being connected on its behalf (-1 if none): a
     * process that dies while waiting abandons them (io.c). */
    uint64_t io_token;
    int io_fd;
    bool io_write;
    int io_owned_fd;
    /* The local call in flight (call.c): its monitor of call_target and its
     * reply alias share the number call_n (0: no call). A call makes and
     * drops both every time, so they live here rather than in the vectors;
     * a call made while one is in flight (from a terminate callback) uses
     * the vectors. */
    uint64_t call_n;
    kiln_term call_target;
    bool call_monitoring; /* the monitor has not fired (DOWN) yet */
    /* One local watcher's monitor on this process (by_n, 0: none), kept
     * out of monitored_by for the same reason: a server gets one with
     * every call and drops it with the reply. */
    uint64_t by_n;
    kiln_term by_pid;
    /* Sizes of the vectors above (monitors with the call's), readable by
     * other threads (process_info). */
    _Atomic uint32_t nlinks, nmonitors, nmonitored_by;
};

/* The watcher slot: set when a call arrives, cleared by its reply, so
 * inline. False when taken already (the vector holds the rest). */
static inline bool kiln_by_slot_take(struct kiln_proc_ext *e, uint64_t n, kiln_term pid)
{
    if (e->by_n)
        return false;
    e->by_n = n;
    e->by_pid = pid;
    atomic_store_explicit(&e->nmonitored_by, e->monitored_by.len + 1, memory_order_relaxed);
    return true;
}

/* The call slot's monitor gone (a DOWN came, or the call ends): false if
 * it was gone already. */
static inline bool kiln_call_slot_unmonitor(struct kiln_proc_ext *e)
{
    if (!e->call_monitoring)
        return false;
    e->call_monitoring = false;
    atomic_store_explicit(&e->nmonitors, e->monitors.len, memory_order_relaxed);
    return true;
}

static inline bool kiln_by_slot_drop(struct kiln_proc_ext *e, uint64_t n)
{
    if (!e || !n || e->by_n != n)
        return false;
    e->by_n = 0;
    atomic_store_explicit(&e->nmonitored_by, e->monitored_by.len, memory_order_relaxed);
    return true;
}

/* Status word: a kiln_proc_status, plus this bit while a waiting process
 * holds a stack (set by the scheduler, which owns it at that moment). */
#define KILN_PS_STACK_BIT 0x100u

struct kiln_proc {
    /* What senders touch on every message, in the first 32 bytes: the
     * mailbox's head and the count of messages pushed (both written), and
     * what a delivery reads. What the owner touches per message starts at
     * byte 80: with the 16-byte alignment the allocator gives, no cache
     * line holds both. (They shared one, which every message from another
     * core then moved back and forth: docs/design.md.) In between, fields
     * neither side touches per message. */
    struct kiln_mb_prod mb;
    _Atomic uint32_t pushed;      /* user messages pushed (or made by the owner) */
    uint32_t max_mailbox;         /* 0 = unbounded; set at spawn, read by senders */
    kiln_term pid;
    _Atomic uint32_t status;      /* kiln_proc_status, for process_info; set once per run */
    uint8_t overflow;             /* kiln_overflow */
    atomic_flag lock;             /* guards ext->name against register/exit races */

    void *init_arg;
    kiln_msg *exit_reason;        /* root = reason once stopping */
    struct kiln_proc_ext *_Atomic ext; /* written once by the owner, read by process_info */
    struct kiln_proc *grave_next;
    ck_epoch_entry_t epoch_entry;

    /* The owner's. */
    _Alignas(16) struct kiln_mb_cons mbc;
    _Atomic uint32_t popped;      /* user messages taken out: queued = pushed - popped */
    _Atomic uint32_t flags;       /* enum kiln_proc_flag; written by the owner only */
    uint32_t recv_gen;            /* generation of the armed receive timer */
    uint32_t save_len;
    void (*fn)(void *);
    kiln_rt *rt;
    const kiln_behaviour *beh;
    void *state;                  /* behaviour state, or fn argument */
    struct kiln_fiber *fiber;     /* held while blocked (and always for fn processes) */
    kiln_msg *save_head, *save_tail; /* drained, not yet consumed, in order */
    kiln_msg *current;            /* borrowed message in handle() */
    kiln_timer recv_timer;        /* the one receive timer, 0 when none is armed */
    uint64_t recv_timer_at;       /* when it fires (kiln_now_ms) */
};
/* Bytes 0..31 and 80.. of a 16-byte aligned struct never share a 64-byte
 * line. */
_Static_assert(offsetof(struct kiln_proc, lock) + sizeof(atomic_flag) <= 32 && offsetof(struct kiln_proc, mbc) >= 80,
               "a sender's and the owner's hot fields must be a cache line apart");

/* User messages in the mailbox and the save list. Two counters, one per
 * side, rather than one both sides write: popped first (acquire), so
 * pushed, read after it, is never behind it. */
static inline uint32_t kiln_proc_queued(const struct kiln_proc *p)
{
    uint32_t out = atomic_load_explicit(&p->popped, memory_order_acquire);
    return atomic_load_explicit(&p->pushed, memory_order_relaxed) - out;
}

/* The owner took a user message out. */
static inline void kiln_proc_took(struct kiln_proc *p)
{
    atomic_store_explicit(&p->popped, atomic_load_explicit(&p->popped, memory_order_relaxed) + 1,
                          memory_order_release);
}

/* ---- workers ---- */

enum kiln_verdict {
    KILN_V_IDLE,     /* wants to sleep: scheduler tries to mark the mailbox idle */
    KILN_V_YIELD,    /* budget used up, still has work */
    KILN_V_YIELD_STACK, /* kiln_yield inside a handler: keeps its stack, requeued */
    KILN_V_BLOCKED,  /* blocked in a receive: keeps its fiber, sleeps like IDLE */
    KILN_V_EXITED    /* gone: its fiber (if it was its own) is to be recycled */
};

struct kiln_worker {
    struct kiln_runq runq;
    _Alignas(KILN_CACHELINE) _Atomic(struct kiln_proc *) runnext;
    kiln_rt *rt;
    unsigned index;
    pthread_t thread;
    struct kiln_fiber sched;          /* the thread's own stack: start and stop only */
    struct kiln_fiber *loop_fiber;    /* the scheduler loop's stack (stackless handlers run on it) */
    struct kiln_fiber *spare_loop;    /* where the loop goes if such a handler blocks */
    struct kiln_fiber *cur_fiber;     /* fiber running right now */
    struct kiln_fiber *stack_pool;    /* spare stacks */
    unsigned stack_pool_len;
    struct kiln_proc *running;
    /* The run that just ended, for the loop to settle (scheduler.c). */
    struct kiln_proc *ran;
    struct kiln_fiber *ran_on;
    enum kiln_verdict verdict;
    uint64_t run_t0;                  /* when the run began, if long runs are reported */
    bool spinning;
    uint32_t tick;
    uint32_t gq_turn;                 /* the tick at which the global queue gets a look */
    uint32_t next_streak;             /* runnext picks in a row */
    uint32_t run_sends;               /* sends by the running process this run */
    uint64_t rng;
    _Atomic uint32_t parked;          /* futex word: 1 while asleep */
    _Atomic int polling;              /* asleep on the I/O ring, not the futex */
    struct kiln_worker *idle_next;
    ck_epoch_record_t epoch;
    bool in_section;                  /* an epoch section spans several runs */
    unsigned section_runs;
    struct kiln_proc *graveyard;      /* exited, grace period over: to free */
    struct kiln_timers *timers;
    /* Written by this worker only, read by kiln_rt_get_stats. */
    _Atomic uint64_t steals, parks, global_pops, long_schedules;
};

/* Single-writer counter: no locked instruction needed. */
#define KILN_STAT_INC(x) \
    atomic_store_explicit(&(x), atomic_load_explicit(&(x), memory_order_relaxed) + 1, memory_order_relaxed)

/* ---- the runtime ---- */

struct kiln_gq { /* global run queue: a growable ring under a mutex */
    pthread_mutex_t lock;
    struct kiln_proc **buf;
    size_t cap, head, len;
    _Atomic size_t approx_len;
};

struct kiln_rt {
    kiln_rt_config cfg;
    unsigned nworkers;
    struct kiln_worker *workers;
    struct kiln_gq global;
    _Atomic int stopping;             /* workers leave their loops */
    _Atomic int closing;              /* spawns are refused (rt_stop began) */

    /* I/O completions reaped by the first worker (io_uring): it holds
     * io_poll_lock while it looks at the ring; io_wake_fd interrupts its
     * wait; io_detached is set when the back end takes its ring back. */
    pthread_mutex_t io_poll_lock;
    int io_wake_fd;
    _Atomic int io_detached;
    bool io_stopped;

    /* parking */
    pthread_mutex_t idle_lock;
    struct kiln_worker *idle;
    _Atomic unsigned nidle;
    _Atomic unsigned nspinning;
    _Atomic uint64_t wakeups;

    /* process table: slot per id; pids carry a serial so dead ones never match */
    size_t max_procs;
    _Atomic(struct kiln_proc *) *slots;
    uint32_t *serials;
    _Atomic uint32_t next_fresh_id;
    pthread_mutex_t free_ids_lock;
    uint32_t *free_ids;
    size_t free_ids_len;
    _Atomic size_t live;
    _Atomic uint64_t spawned, exited;
    pthread_mutex_t live_lock;        /* kiln_rt_wait_idle */
    pthread_cond_t live_cond;

    /* registered names: atom index -> pid in a two-level table (registry.c) */
    _Atomic(kiln_term) *_Atomic *names;

    ck_epoch_t epoch;
    pthread_mutex_t foreign_lock;     /* non-worker threads share one epoch record */
    ck_epoch_record_t foreign_epoch;
    int tsan_epoch_sync;              /* address for TSan happens-before of epoch frees */

    kiln_term node;
    uint32_t creation;

    struct kiln_blocking_pool *blocking;
    struct kiln_io *io;
    /* The distribution layer, once a node is started (dist_hooks.h). */
    const struct kiln_dist_ops *_Atomic dist;
    void *_Atomic dist_ctx;
    _Atomic uint64_t stacks_in_use;
};

/* ---- thread-local context ---- */

/* A process may block on one worker and resume on another, so the worker
 * must be read afresh after anything that may switch stacks, never from a
 * thread pointer the compiler kept in a register. x86-64 compilers read a
 * thread-local through the %fs segment within the load itself (the
 * default -mtls-direct-seg-refs), and a switch is a call they cannot see
 * into, which makes them load again: there the read is inline. Elsewhere
 * (aarch64 reads the thread pointer into a register it may reuse) it is a
 * call the compiler cannot see into. */
#if defined(__x86_64__)
extern KILN_TLS struct kiln_worker *kiln_tls_worker;
static inline struct kiln_worker *kiln_current_worker(void) { return kiln_tls_worker; }
static inline struct kiln_proc *kiln_current_proc(void)
{
    struct kiln_worker *w = kiln_tls_worker;
    return w ? w->running : NULL;
}
#else
struct kiln_worker *kiln_current_worker(void);
struct kiln_proc *kiln_current_proc(void);
#endif
void kiln_set_current_worker(struct kiln_worker *w);

/* ---- scheduler.c ---- */
int kiln_sched_start(kiln_rt *rt);
void kiln_sched_stop(kiln_rt *rt);
/* Make p runnable (it must not be queued or running anywhere). */
void kiln_sched_ready(kiln_rt *rt, struct kiln_proc *p, bool next);
/* kiln_sched_ready(w->rt, p, true) from a process running on w. Thieves
 * only ever empty runnext, so an empty slot is filled with a plain store,
 * inline: that is what a request or a reply does on every local call, and
 * neither a locked instruction (about 3 ns each here) nor the call into
 * the scheduler is paid for it. */
static inline void kiln_sched_ready_next(struct kiln_worker *w, struct kiln_proc *p)
{
    if (atomic_load_explicit(&w->runnext, memory_order_relaxed)) {
        kiln_sched_ready(w->rt, p, true);
        return;
    }
    atomic_store_explicit(&p->status, KILN_PS_RUNNABLE, memory_order_relaxed);
    atomic_store_explicit(&w->runnext, p, memory_order_release);
}
/* Called by a process on its stack: give the CPU back with a verdict
 * (BLOCKED, YIELD_STACK or EXITED). Returns when the process is resumed;
 * never for EXITED. */
void kiln_sched_switch_out(struct kiln_proc *p, enum kiln_verdict v);
/* The running process is about to make a system call that does real work
 * (a socket send): if others wait on this worker, an idle worker is woken
 * to take them meanwhile. Yields do not wake anyone (scheduler.c). */
void kiln_sched_before_syscall(void);
/* The calling process, when a message makes it runnable, goes to the back
 * of the sender's worker queue rather than next in line: for a process
 * that batches what others send it (a connection's writer), so that the
 * senders queued there add to the batch first. */
void kiln_proc_defer_wakeups(void);
/* Queue p at the back of worker w's queue without waking anyone. */
void kiln_sched_requeue(struct kiln_worker *w, struct kiln_proc *p);
void kiln_sched_wake_one(kiln_rt *rt);
void kiln_sched_kick_worker(struct kiln_worker *w);

/* ---- proc_table.c ---- */
int kiln_ptab_init(kiln_rt *rt);
void kiln_ptab_fini(kiln_rt *rt);
int kiln_ptab_add(kiln_rt *rt, struct kiln_proc *p);
void kiln_ptab_remove(kiln_rt *rt, struct kiln_proc *p);
/* Caller must be inside an epoch section (kiln_epoch_enter). */
struct kiln_proc *kiln_ptab_lookup(kiln_rt *rt, kiln_term pid);

/* ---- epoch.c: safe reclamation of process structs ---- */
void kiln_epoch_enter(kiln_rt *rt);
void kiln_epoch_exit(kiln_rt *rt);
void kiln_epoch_retire_proc(kiln_rt *rt, struct kiln_proc *p);
void kiln_epoch_poll(struct kiln_worker *w);
void kiln_epoch_drain_all(kiln_rt *rt);
/* Wait until every epoch section open now has ended (from a thread that is
 * not a worker): after it, nothing still uses what was unpublished before. */
void kiln_epoch_synchronize(kiln_rt *rt);

/* ---- process.c ---- */
/* Push a message or signal to p and schedule it if it was idle. */
int kiln_proc_deliver(kiln_rt *rt, struct kiln_proc *p, kiln_msg *m);
/* Deliver to a pid: looks it up; a dead target frees m (returns ENOPROC
 * and calls on_dead(m) first when given, for signals that need answers). */
int kiln_deliver_pid(kiln_rt *rt, kiln_term pid, kiln_msg *m);
/* The same, for a caller already inside an epoch section of rt (a process
 * run of rt is). */
int kiln_deliver_in_section(kiln_rt *rt, kiln_term pid, kiln_msg *m);
/* The I/O back end takes its ring back from the first worker. */
void kiln_sched_io_detach(kiln_rt *rt);
/* Ends the current wait on the I/O ring (or the next one, at once). */
void kiln_sched_io_interrupt(kiln_rt *rt);
/* The process's body on a fiber, and its exit. */
void kiln_proc_fiber_main(void *arg);
/* Run up to the batch budget of a behaviour process's messages. */
enum kiln_verdict kiln_proc_run_batch(struct kiln_proc *p);
_Noreturn void kiln_proc_exit(struct kiln_proc *p, kiln_msg *reason_msg);
void kiln_proc_free(struct kiln_proc *p);
struct kiln_proc_ext *kiln_proc_ext(struct kiln_proc *p);
void kiln_proc_lock(struct kiln_proc *p);
void kiln_proc_unlock(struct kiln_proc *p);

/* ---- signal.c ---- */
/* Take the next message for p from its save list or its mailbox, handling
 * signals on the way (which may end the process). Returns NULL when none. */
kiln_msg *kiln_proc_next_message(struct kiln_proc *p);
/* Move everything queued in the mailbox into the save list (signals handled). */
void kiln_proc_drain_queue(struct kiln_proc *p);
/* Move what arrived to the save list, handling signals on the way. Half
 * the drains of a call find nothing: that look is inline. */
static inline void kiln_proc_drain(struct kiln_proc *p)
{
    if (!kiln_mb_empty(&p->mb, &p->mbc))
        kiln_proc_drain_queue(p);
}
/* Apply a DROP_OLDEST bound to the save list. Only where no receive holds
 * a position in the list. */
void kiln_proc_trim_oldest(struct kiln_proc *p);
/* A DROP_OLDEST bound's trim (only a bounded mailbox has anything to do). */
static inline void kiln_proc_trim(struct kiln_proc *p)
{
    if (p->max_mailbox)
        kiln_proc_trim_oldest(p);
}
/* Answer signals that reached a process after it died. */
void kiln_signal_answer_dead(kiln_rt *rt, kiln_term dead_pid, kiln_msg *m);
void kiln_signals_on_exit(struct kiln_proc *p, kiln_term reason);
kiln_msg *kiln_exit_signal_new(enum kiln_msg_kind kind, kiln_term from, kiln_term reason);
kiln_msg *kiln_down_signal_new(kiln_rt *rt, uint64_t ref, kiln_term from, kiln_term reason);
int kiln_send_signal(kiln_rt *rt, kiln_term to, kiln_msg *sig);
bool kiln_vec_grow(struct kiln_vec *v, size_t size);
/* Inline, so that each caller's item size is a constant and the copy a few
 * moves: every call adds and removes a monitor and an alias. */
static inline bool kiln_vec_push(struct kiln_vec *v, const void *item, size_t size)
{
    if (v->len == v->cap && !kiln_vec_grow(v, size))
        return false;
    memcpy((char *)v->items + (size_t)v->len * size, item, size);
    v->len++;
    return true;
}
/* Order does not matter in these sets: the last one moves into the gap. */
static inline void kiln_vec_remove(struct kiln_vec *v, uint32_t i, size_t size)
{
    v->len--;
    if (i != v->len)
        memcpy((char *)v->items + (size_t)i * size, (char *)v->items + (size_t)v->len * size, size);
}
bool kiln_link_add(struct kiln_proc *p, kiln_term pid);
bool kiln_link_del(struct kiln_proc *p, kiln_term pid);
/* Adds a copy of m (boxed parts copied into an owned store). */
bool kiln_monitor_add(struct kiln_proc *p, bool mine, const struct kiln_monitor *m);
/* Removes the entry for local ref number `ref`; with out, the caller gets
 * the entry and owns its store (kiln_monitor_release). */
bool kiln_monitor_del(struct kiln_proc *p, bool mine, uint64_t ref, struct kiln_monitor *out);
/* Removes a monitored_by entry keyed by a remote watcher's ref. */
bool kiln_monitor_del_rref(struct kiln_proc *p, kiln_term rref);
void kiln_monitor_release(struct kiln_monitor *m);
/* Tell the monitored side (local or remote) that mon is no more. */
void kiln_demonitor_target(struct kiln_proc *p, const struct kiln_monitor *mon);
void kiln_vec_free(struct kiln_vec *v);

/* ---- send.c ---- */
/* Route msg to a pid, name, alias or {Name, Node}, keeping its kind and
 * flags (kiln_rt_send resets them first). */
int kiln_route(kiln_rt *rt, kiln_term to, kiln_msg *msg);

/* ---- receive.c ---- */
typedef bool (*kiln_msg_match_fn)(kiln_msg *m, void *arg);
int kiln_proc_receive(struct kiln_proc *p, kiln_msg_match_fn match, void *arg, int64_t timeout_ms, kiln_msg **out);
/* The same for a message that cannot have arrived yet (a reply to a
 * request sent after the last receive): what is saved is not scanned,
 * as Erlang's receive markers do for a fresh reference. */
int kiln_proc_receive_new(struct kiln_proc *p, kiln_msg_match_fn match, void *arg, int64_t timeout_ms,
                          kiln_msg **out);
/* Wait for the WAKE signal tagged id (from the blocking pool or the I/O
 * layer); KILN_ETIMEOUT when timeout_ms passes first. */
int kiln_wait_wake(struct kiln_proc *p, uint64_t id, int64_t timeout_ms, kiln_msg **out);
/* A TIMEOUT signal was taken from the queue: forget the timer it came from. */
void kiln_recv_timer_fired(struct kiln_proc *p, const kiln_msg *m);
void kiln_recv_timer_cancel(struct kiln_proc *p);
void kiln_save_append(struct kiln_proc *p, kiln_msg *m);
/* A user or alias message for p from a sender that claimed p's wake-up
 * (kiln_mb_claim_idle): handled as p's drain would handle it. */
void kiln_proc_take_handed(struct kiln_proc *p, kiln_msg *m);

/* ---- ref.c ---- */
uint64_t kiln_ref_next(kiln_rt *rt);
kiln_term kiln_ref_term(kiln_msg *m, kiln_rt *rt, uint64_t n, kiln_term alias_pid);
/* The unique number of a local ref, and the pid an alias ref routes to. */
bool kiln_ref_number(kiln_rt *rt, kiln_term ref, uint64_t *n, kiln_term *alias_pid);
/* Index of alias number n in e's aliases (the top bit of an entry marks
 * reply-once), or -1. e may be NULL. */
int kiln_alias_index(const struct kiln_proc_ext *e, uint64_t n);

/* ---- registry.c ---- */
int kiln_registry_init(kiln_rt *rt);
void kiln_registry_fini(kiln_rt *rt);
void kiln_registry_drop(kiln_rt *rt, kiln_term name, kiln_term pid);

/* ---- timer.c ---- */
int kiln_timers_init(struct kiln_worker *w);
void kiln_timers_fini(struct kiln_worker *w);
/* Fire due timers; returns ms until the next one (UINT64_MAX if none). */
uint64_t kiln_timers_run(struct kiln_worker *w, uint64_t now);
/* Schedule a receive timeout for p: delivers KILN_MK_TIMEOUT(gen). */
int kiln_timer_receive_timeout(kiln_rt *rt, kiln_term pid, uint32_t gen, uint64_t ms, kiln_timer *out);

/* ---- blocking.c ---- */
int kiln_blocking_init(kiln_rt *rt);
void kiln_blocking_fini(kiln_rt *rt);

/* ---- stack_pool.c ---- */
struct kiln_fiber *kiln_stack_get(struct kiln_worker *w);
void kiln_stack_put(struct kiln_worker *w, struct kiln_fiber *f);
void kiln_stack_pool_fini(struct kiln_worker *w);

/* ---- guard.c ---- */
void kiln_guard_install(void);
void kiln_guard_thread_init(void);
void kiln_guard_thread_fini(void);

#endif
