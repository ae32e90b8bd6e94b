/* The scheduler: an idle runtime sleeps, a flooding process cannot starve
 * others, long handlers are reported, work spreads over workers, and stop
 * is clean with processes in every state. */
#include "testutil.h"
#include "runtime/rt.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

static double wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static kiln_action ignore_handle(void *state, kiln_msg *m)
{
    (void)state;
    (void)m;
    return KILN_CONTINUE;
}
static const kiln_behaviour ignore_beh = {"ignore", NULL, ignore_handle, NULL};

static void test_idle_runtime_uses_no_cpu(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(0, NULL);
    /* Some idle processes and a pending timer far away, as in real life. */
    for (int i = 0; i < 100; i++)
        assert_int_equal(kiln_spawn(rt, &ignore_beh, NULL, NULL, NULL), KILN_OK);
    kiln_term p;
    assert_int_equal(kiln_spawn(rt, &ignore_beh, NULL, NULL, &p), KILN_OK);
    kiln_timer t;
    assert_int_equal(kiln_send_after(rt, 3600 * 1000, p, kiln_test_msg("later"), &t), KILN_OK);
    usleep(200000); /* let start-up work settle */
    double c0 = cpu_seconds(), w0 = wall_seconds();
    sleep(2);
    double used = cpu_seconds() - c0, wall = wall_seconds() - w0;
    print_message("idle: %.4f s CPU over %.2f s wall (%.2f%%)\n", used, wall, 100.0 * used / wall);
    assert_true(used < 0.02 * wall);
    kiln_rt_stop(rt);
}

/* ---- fairness ---- */

struct flood {
    kiln_term self;
    _Atomic long floods;
    _Atomic int stop;
};

static kiln_action flood_handle(void *state, kiln_msg *m)
{
    struct flood *f = state;
    atomic_fetch_add(&f->floods, 1);
    if (!atomic_load(&f->stop)) {
        /* Every message makes another: this process never runs dry. */
        kiln_send(kiln_self(), kiln_msg_take(m));
    }
    return KILN_CONTINUE;
}
static int flood_init(void *arg, void **state)
{
    *state = arg;
    return KILN_OK;
}
static const kiln_behaviour flood_beh = {"flood", flood_init, flood_handle, NULL};

struct pong {
    _Atomic long handled;
};
static kiln_action pong_handle(void *state, kiln_msg *m)
{
    (void)m;
    atomic_fetch_add(&((struct pong *)state)->handled, 1);
    return KILN_CONTINUE;
}
static const kiln_behaviour pong_beh = {"pong", flood_init, pong_handle, NULL};

static void test_flooding_process_does_not_starve_others(void **state)
{
    (void)state;
    /* One worker: the flood and the victim must share it. */
    kiln_rt *rt = kiln_test_rt(1, NULL);
    struct flood *f = calloc(1, sizeof(*f));
    struct pong *v = calloc(1, sizeof(*v));
    kiln_term fp, vp;
    assert_int_equal(kiln_spawn(rt, &flood_beh, f, NULL, &fp), KILN_OK);
    for (int i = 0; i < 4; i++)
        kiln_rt_send(rt, fp, kiln_test_msg("x"));
    assert_int_equal(kiln_spawn(rt, &pong_beh, v, NULL, &vp), KILN_OK);
    for (int i = 0; i < 100; i++) {
        kiln_rt_send(rt, vp, kiln_test_msg("ping"));
        usleep(1000);
    }
    assert_true(kiln_test_wait_count(&v->handled, 100, 5000));
    assert_true(atomic_load(&f->floods) > 1000);
    atomic_store(&f->stop, 1);
    kiln_rt_stop(rt);
    free(f);
    free(v);
}

/* A function process that only sends never blocks: each kiln_send counts
 * against send_budget, and when that is spent the sender yields, so the
 * receiver on its worker handles messages during the flood instead of
 * after it (and its mailbox stays short). */
struct sendflood {
    kiln_term to;
    long n;
    _Atomic long handled_at_end; /* the receiver's count when the last send returned */
    _Atomic int done;
};
static struct pong sendflood_rx;

static void sendflood_main(void *arg)
{
    struct sendflood *sf = arg;
    for (long i = 0; i < sf->n; i++)
        assert_int_equal(kiln_send(sf->to, kiln_test_msg("x")), KILN_OK);
    atomic_store(&sf->handled_at_end, atomic_load(&sendflood_rx.handled));
    atomic_store(&sf->done, 1);
}

static long sendflood_run(unsigned send_budget)
{
    kiln_rt_config cfg;
    kiln_rt_config_init(&cfg);
    cfg.send_budget = send_budget;
    /* One worker: the sender and the receiver must share it. */
    kiln_rt *rt = kiln_test_rt(1, &cfg);
    atomic_store(&sendflood_rx.handled, 0);
    struct sendflood sf = {.n = 20000};
    assert_int_equal(kiln_spawn(rt, &pong_beh, &sendflood_rx, NULL, &sf.to), KILN_OK);
    assert_int_equal(kiln_spawn_fn(rt, sendflood_main, &sf, NULL, NULL), KILN_OK);
    assert_true(kiln_test_wait_flag(&sf.done, 10000));
    assert_true(kiln_test_wait_count(&sendflood_rx.handled, sf.n, 10000));
    kiln_rt_stop(rt);
    return atomic_load(&sf.handled_at_end);
}

static void test_sending_function_process_yields(void **state)
{
    (void)state;
    /* The receiver handles up to batch_budget (64) per run and the sender
     * sends 64 per run, so it lags by a few runs' worth at most. */
    long handled = sendflood_run(0);
    print_message("default budget: receiver had handled %ld of 20000 when the sender finished\n", handled);
    assert_true(handled >= 20000 - 4 * 64);
    /* UINT_MAX: the sender keeps its worker until it is done. */
    handled = sendflood_run(UINT_MAX);
    print_message("no budget: receiver had handled %ld of 20000\n", handled);
    assert_int_equal(handled, 0);
}

/* Two busy processes that yield, the second woken by a message from the
 * first: it waits in the first's runnext, and a yield wakes nobody, so
 * both share one worker while the other sleeps. That worker's periodic
 * look (at most every 50 ms, on either I/O back end) must still take one
 * of them. They count the moments both were running at once: never while
 * they share a worker. */
struct busy_pair {
    _Atomic int running[2];
    _Atomic long overlaps;
    _Atomic int stop;
    kiln_term second;
};

static void busy_slices(struct busy_pair *bp, int me, double seconds)
{
    double end = wall_seconds() + seconds;
    while (!atomic_load(&bp->stop) && wall_seconds() < end) {
        atomic_store(&bp->running[me], 1);
        double t0 = wall_seconds();
        bool seen = false;
        while (wall_seconds() - t0 < 0.0002)
            seen |= atomic_load(&bp->running[1 - me]) != 0;
        atomic_store(&bp->running[me], 0);
        if (seen)
            atomic_fetch_add(&bp->overlaps, 1);
        kiln_yield();
    }
}

static void busy_second(void *arg)
{
    struct busy_pair *bp = arg;
    kiln_msg *go;
    assert_int_equal(kiln_receive(kiln_test_any, NULL, -1, &go), KILN_OK);
    kiln_msg_free(go);
    busy_slices(bp, 1, 10);
}

static void busy_first(void *arg)
{
    struct busy_pair *bp = arg;
    /* Alone for a while, so the other worker gives up and sleeps. */
    busy_slices(bp, 0, 0.2);
    kiln_send(bp->second, kiln_test_msg("go"));
    busy_slices(bp, 0, 10);
}

static void busy_pair_run(int backend)
{
    kiln_rt_config cfg;
    kiln_rt_config_init(&cfg);
    cfg.io_backend = backend;
    kiln_rt *rt = kiln_test_rt(2, &cfg);
    struct busy_pair *bp = calloc(1, sizeof(*bp));
    assert_int_equal(kiln_spawn_fn(rt, busy_second, bp, NULL, &bp->second), KILN_OK);
    usleep(50000); /* blocked in its receive */
    assert_int_equal(kiln_spawn_fn(rt, busy_first, bp, NULL, NULL), KILN_OK);
    long seen = 0;
    for (int i = 0; i < 300 && (seen = atomic_load(&bp->overlaps)) < 20; i++)
        usleep(10000);
    print_message("backend %d: both busy at once %ld times\n", backend, seen);
    atomic_store(&bp->stop, 1);
    kiln_rt_stop(rt);
    free(bp);
    assert_true(seen >= 20);
}

static void test_parked_worker_takes_a_share_of_busy_pair(void **state)
{
    (void)state;
    busy_pair_run(KILN_IO_AUTO);
    busy_pair_run(KILN_IO_EPOLL);
}

/* A process that defers its wake-ups (a connection's writer) runs after
 * the processes already queued on its waker's worker, so what they send
 * it arrives as one batch: ten senders released at once, one worker, and
 * the batcher's first look at its mailbox finds all ten messages (it would
 * find one if the first sender put it next in line). */
#define DEFER_SENDERS 10
struct defer_case {
    kiln_term batcher, senders[DEFER_SENDERS];
    _Atomic long first_batch;
    _Atomic int ready, done;
};

static void batcher_main(void *arg)
{
    struct defer_case *dc = arg;
    kiln_proc_defer_wakeups();
    atomic_store(&dc->ready, 1);
    kiln_msg *m;
    assert_int_equal(kiln_receive(kiln_test_any, NULL, -1, &m), KILN_OK);
    kiln_msg_free(m);
    long n = 1;
    while (kiln_receive(kiln_test_any, NULL, 0, &m) == KILN_OK) {
        kiln_msg_free(m);
        n++;
    }
    atomic_store(&dc->first_batch, n);
    atomic_store(&dc->done, 1);
}

static kiln_action defer_sender_handle(void *state, kiln_msg *m)
{
    (void)m;
    struct defer_case *dc = state;
    kiln_send(dc->batcher, kiln_test_msg("frame"));
    return KILN_CONTINUE;
}
static const kiln_behaviour defer_sender_beh = {"defer_sender", flood_init, defer_sender_handle, NULL};

static void defer_starter(void *arg)
{
    struct defer_case *dc = arg;
    /* Sent from a process: each sender goes next in line and pushes the
     * one before it to the back of the queue. */
    for (int i = 0; i < DEFER_SENDERS; i++)
        kiln_send(dc->senders[i], kiln_test_msg("go"));
}

static void test_deferred_wakeup_collects_a_batch(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(1, NULL);
    struct defer_case *dc = calloc(1, sizeof(*dc));
    assert_int_equal(kiln_spawn_fn(rt, batcher_main, dc, NULL, &dc->batcher), KILN_OK);
    assert_true(kiln_test_wait_flag(&dc->ready, 5000));
    for (int i = 0; i < DEFER_SENDERS; i++)
        assert_int_equal(kiln_spawn(rt, &defer_sender_beh, dc, NULL, &dc->senders[i]), KILN_OK);
    usleep(50000); /* all idle */
    assert_int_equal(kiln_spawn_fn(rt, defer_starter, dc, NULL, NULL), KILN_OK);
    assert_true(kiln_test_wait_flag(&dc->done, 5000));
    print_message("first batch: %ld of %d\n", atomic_load(&dc->first_batch), DEFER_SENDERS);
    assert_int_equal(atomic_load(&dc->first_batch), DEFER_SENDERS);
    kiln_rt_stop(rt);
    free(dc);
}

/* Two processes that wake each other pass the worker back and forth
 * through runnext; a process they woke earlier waits in the local queue
 * and must still get its turn. */
struct rally {
    kiln_term a, b, v;
    _Atomic long hits;
    _Atomic int stop;
};
static kiln_action rally_handle(void *state, kiln_msg *m)
{
    struct rally *r = state;
    (void)m;
    if (atomic_load(&r->stop))
        return KILN_CONTINUE;
    long n = atomic_fetch_add(&r->hits, 1);
    /* The victim goes into runnext first, then the partner displaces it
     * into the local run queue. */
    if (n % 1000 == 0)
        kiln_send(r->v, kiln_test_msg("ping"));
    kiln_send(kiln_self() == r->a ? r->b : r->a, kiln_test_msg("ball"));
    return KILN_CONTINUE;
}
static int rally_init(void *arg, void **state)
{
    *state = arg;
    return KILN_OK;
}
static const kiln_behaviour rally_beh = {"rally", rally_init, rally_handle, NULL};

static void test_runnext_pair_does_not_starve_local_queue(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(1, NULL);
    struct rally *r = calloc(1, sizeof(*r));
    struct pong *v = calloc(1, sizeof(*v));
    assert_int_equal(kiln_spawn(rt, &pong_beh, v, NULL, &r->v), KILN_OK);
    assert_int_equal(kiln_spawn(rt, &rally_beh, r, NULL, &r->a), KILN_OK);
    assert_int_equal(kiln_spawn(rt, &rally_beh, r, NULL, &r->b), KILN_OK);
    kiln_rt_send(rt, r->a, kiln_test_msg("ball"));
    assert_true(kiln_test_wait_count(&r->hits, 200000, 10000));
    /* Every 1000th hit sent the victim a ping; it must have run. */
    assert_true(kiln_test_wait_count(&v->handled, 50, 10000));
    atomic_store(&r->stop, 1);
    kiln_rt_stop(rt);
    free(r);
    free(v);
}

/* ---- long schedule ---- */

struct longsched {
    _Atomic int reported;
    kiln_term pid;
    uint64_t ms;
};

static void on_long(kiln_rt *rt, kiln_term pid, uint64_t ms, void *arg)
{
    (void)rt;
    struct longsched *ls = arg;
    ls->pid = pid;
    ls->ms = ms;
    atomic_store(&ls->reported, 1);
}

static kiln_action slow_handle(void *state, kiln_msg *m)
{
    (void)state;
    (void)m;
    double t0 = wall_seconds();
    while (wall_seconds() - t0 < 0.08)
        ;
    return KILN_CONTINUE;
}
static const kiln_behaviour slow_beh = {"slow", NULL, slow_handle, NULL};

static void test_long_handler_is_reported_with_pid(void **state)
{
    (void)state;
    struct longsched ls = {0};
    kiln_rt_config cfg;
    kiln_rt_config_init(&cfg);
    cfg.long_schedule_ms = 30;
    cfg.long_schedule = on_long;
    cfg.long_schedule_arg = &ls;
    kiln_rt *rt = kiln_test_rt(2, &cfg);
    kiln_term p;
    assert_int_equal(kiln_spawn(rt, &slow_beh, NULL, NULL, &p), KILN_OK);
    kiln_rt_send(rt, p, kiln_test_msg("work"));
    assert_true(kiln_test_wait_flag(&ls.reported, 5000));
    assert_int_equal(ls.pid, p);
    assert_true(ls.ms >= 30);
    kiln_rt_stats st;
    kiln_rt_get_stats(rt, &st);
    assert_true(st.long_schedules >= 1);
    kiln_rt_stop(rt);
}

/* ---- spreading work ---- */

struct spread {
    pthread_t seen[64];
    _Atomic int nseen;
    pthread_mutex_t lock;
    _Atomic long done;
};

static void cpu_work(void *arg)
{
    struct spread *s = arg;
    volatile double x = 0;
    for (int i = 0; i < 200000; i++)
        x += i * 0.5;
    (void)x; /* the work is the point (clang counts the volatile as unused) */
    pthread_t me = pthread_self();
    pthread_mutex_lock(&s->lock);
    int n = atomic_load(&s->nseen), found = 0;
    for (int i = 0; i < n; i++)
        found |= pthread_equal(s->seen[i], me);
    if (!found && n < 64)
        s->seen[atomic_fetch_add(&s->nseen, 1)] = me;
    pthread_mutex_unlock(&s->lock);
    atomic_fetch_add(&s->done, 1);
}

static void spawner(void *arg)
{
    /* All spawned from one process on one worker: the others must steal. */
    for (int i = 0; i < 400; i++)
        kiln_spawn_fn(kiln_current_rt(), cpu_work, arg, NULL, NULL);
}

static void test_work_spreads_over_workers(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct spread *s = calloc(1, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    kiln_test_run_in_process(rt, spawner, s, 10000);
    assert_true(kiln_test_wait_count(&s->done, 400, 30000));
    kiln_rt_stats st;
    kiln_rt_get_stats(rt, &st);
    print_message("workers used %d, steals %llu, global pops %llu, wakeups %llu\n", atomic_load(&s->nseen),
                  (unsigned long long)st.steals, (unsigned long long)st.global_pops, (unsigned long long)st.wakeups);
    assert_int_equal(atomic_load(&s->nseen), 2);
    assert_true(st.steals + st.global_pops > 0);
    kiln_rt_stop(rt);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* ---- stop ---- */

static void waits_forever(void *arg)
{
    (void)arg;
    kiln_msg *m;
    kiln_receive(kiln_test_any, NULL, -1, &m);
}

static void sleeps_long(void *arg)
{
    (void)arg;
    kiln_sleep(3600 * 1000);
}

static void test_stop_with_processes_in_every_state(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(kiln_spawn(rt, &ignore_beh, NULL, NULL, NULL), KILN_OK);
        assert_int_equal(kiln_spawn_fn(rt, waits_forever, NULL, NULL, NULL), KILN_OK);
        assert_int_equal(kiln_spawn_fn(rt, sleeps_long, NULL, NULL, NULL), KILN_OK);
    }
    kiln_term p;
    assert_int_equal(kiln_spawn(rt, &ignore_beh, NULL, NULL, &p), KILN_OK);
    for (int i = 0; i < 1000; i++)
        kiln_rt_send(rt, p, kiln_test_msg("queued"));
    assert_true(kiln_rt_process_count(rt) >= 3000);
    /* Every thread joined, every process and message freed: ASan's leak
     * checker verifies the "freed" part at exit. */
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

static void test_many_idle_processes(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
    enum { N = 20000 }; /* sanitizers are 5-15x slower; the point is the same */
#else
    enum { N = 100000 };
#endif
    for (int i = 0; i < N; i++)
        assert_int_equal(kiln_spawn(rt, &ignore_beh, NULL, NULL, NULL), KILN_OK);
    assert_int_equal(kiln_rt_process_count(rt), N);
    kiln_rt_stats st;
    kiln_rt_get_stats(rt, &st);
    assert_int_equal(st.spawned, N);
    kiln_rt_stop(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_runtime_uses_no_cpu),
        cmocka_unit_test(test_flooding_process_does_not_starve_others),
        cmocka_unit_test(test_sending_function_process_yields),
        cmocka_unit_test(test_parked_worker_takes_a_share_of_busy_pair),
        cmocka_unit_test(test_deferred_wakeup_collects_a_batch),
        cmocka_unit_test(test_runnext_pair_does_not_starve_local_queue),
        cmocka_unit_test(test_long_handler_is_reported_with_pid),
        cmocka_unit_test(test_work_spreads_over_workers),
        cmocka_unit_test(test_stop_with_processes_in_every_state),
        cmocka_unit_test(test_many_idle_processes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
