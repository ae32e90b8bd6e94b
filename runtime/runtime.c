/* Runtime life cycle: configuration, start, orderly stop, statistics. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "io.h"
#include "rt.h"
#include "term_layout.h"

void kiln_rt_config_init(kiln_rt_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
}

static void apply_defaults(kiln_rt_config *c)
{
    if (!c->workers) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->workers = n > 0 ? (unsigned)n : 1;
    }
    if (!c->max_processes)
        c->max_processes = 4u << 20;
    if (!c->stack_size)
        c->stack_size = 64u << 10;
    if (!c->batch_budget)
        c->batch_budget = 64;
    if (!c->send_budget)
        c->send_budget = c->batch_budget;
    if (!c->blocking_threads)
        c->blocking_threads = 4;
}

static void rt_free(kiln_rt *rt)
{
    if (rt->workers) {
        for (unsigned i = 0; i < rt->nworkers; i++) {
            struct kiln_worker *w = &rt->workers[i];
            kiln_timers_fini(w);
            kiln_stack_pool_fini(w);
            ck_epoch_unregister(&w->epoch);
        }
    }
    kiln_io_fini(rt);
    if (rt->io_wake_fd >= 0)
        close(rt->io_wake_fd);
    pthread_mutex_destroy(&rt->io_poll_lock);
    kiln_blocking_fini(rt);
    kiln_registry_fini(rt);
    kiln_ptab_fini(rt);
    kiln_free(rt->global.buf);
    free(rt->workers); /* aligned_alloc'd */
    kiln_free(rt);
}

int kiln_rt_start(const kiln_rt_config *cfg, kiln_rt **out)
{
    if (!out)
        return KILN_EINVAL;
    int rc = kiln_atoms_init();
    if (rc != KILN_OK)
        return rc;
    kiln_rt *rt = kiln_calloc(1, sizeof(*rt));
    if (!rt)
        return KILN_ENOMEM;
    if (cfg)
        rt->cfg = *cfg;
    apply_defaults(&rt->cfg);
    if (rt->cfg.workers > 4095 || rt->cfg.max_processes > (1u << 31)) {
        kiln_free(rt);
        return KILN_EINVAL;
    }
    rt->nworkers = rt->cfg.workers;
    rt->max_procs = rt->cfg.max_processes;
    const char *node = rt->cfg.node_name ? rt->cfg.node_name : "nonode@nohost";
    rc = kiln_atom(node, strlen(node), &rt->node);
    if (rc != KILN_OK) {
        kiln_free(rt);
        return rc;
    }
    rt->creation = rt->cfg.creation;
    /* Term order places local pids on the local node; with several
     * runtimes in one process the last one started names it. */
    kiln_term_set_local_node(rt->node, rt->creation);

    pthread_mutex_init(&rt->global.lock, NULL);
    pthread_mutex_init(&rt->idle_lock, NULL);
    pthread_mutex_init(&rt->io_poll_lock, NULL);
    rt->io_wake_fd = -1;
    pthread_mutex_init(&rt->live_lock, NULL);
    pthread_cond_init(&rt->live_cond, NULL);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&rt->foreign_lock, &ma);
    pthread_mutexattr_destroy(&ma);
    ck_epoch_init(&rt->epoch);
    ck_epoch_register(&rt->epoch, &rt->foreign_epoch, NULL);

    /* Workers are cache-line aligned: their queues are written by thieves. */
    size_t wbytes = sizeof(struct kiln_worker) * rt->nworkers;
    wbytes = (wbytes + KILN_CACHELINE - 1) & ~(size_t)(KILN_CACHELINE - 1);
    rt->workers = aligned_alloc(KILN_CACHELINE, wbytes);
    if (!rt->workers)
        goto fail;
    memset(rt->workers, 0, wbytes);
    for (unsigned i = 0; i < rt->nworkers; i++) {
        struct kiln_worker *w = &rt->workers[i];
        kiln_runq_init(&w->runq);
        w->rt = rt;
        w->index = i;
        w->gq_turn = 61;
        w->rng = 0x9E3779B97F4A7C15ull * (i + 1);
        ck_epoch_register(&rt->epoch, &w->epoch, NULL);
        if (kiln_timers_init(w) != KILN_OK)
            goto fail;
    }
    if (kiln_ptab_init(rt) != KILN_OK || kiln_registry_init(rt) != KILN_OK)
        goto fail;
    if ((rc = kiln_blocking_init(rt)) != KILN_OK)
        goto fail_rc;
    if ((rc = kiln_io_start(rt)) != KILN_OK)
        goto fail_rc;
    kiln_guard_install();
    if ((rc = kiln_sched_start(rt)) != KILN_OK)
        goto fail_rc;
    *out = rt;
    return KILN_OK;
fail:
    rc = KILN_ENOMEM;
fail_rc:
    rt_free(rt);
    return rc;
}

/* Ask every process to die with reason shutdown. */
static void kill_all(kiln_rt *rt)
{
    uint32_t hi = atomic_load(&rt->next_fresh_id);
    if (hi > rt->max_procs)
        hi = (uint32_t)rt->max_procs;
    kiln_epoch_enter(rt);
    for (uint32_t id = 1; id < hi; id++) {
        struct kiln_proc *p = atomic_load_explicit(&rt->slots[id], memory_order_acquire);
        if (!p)
            continue;
        kiln_msg *m = kiln_signal_new(KILN_MK_STOP, 2);
        if (!m)
            continue;
        m->root = KILN_ATOM_SHUTDOWN;
        kiln_proc_deliver(rt, p, m);
    }
    kiln_epoch_exit(rt);
}

int kiln_rt_stop(kiln_rt *rt)
{
    if (!rt)
        return KILN_EINVAL;
    struct kiln_worker *cw = kiln_current_worker();
    if (cw && cw->rt == rt)
        return KILN_EBUSY;
    /* New spawns are refused from here on, while the workers keep running
     * so that every process can exit. */
    atomic_store(&rt->closing, 1);
    for (unsigned round = 0; atomic_load(&rt->live) > 0; round++) {
        kill_all(rt);
        if (kiln_rt_wait_idle(rt, 1000) == KILN_OK)
            break;
        if (round % 5 == 4)
            fprintf(stderr, "kiln: rt_stop: %zu processes have not exited yet (a handler that never returns?)\n",
                    atomic_load(&rt->live));
    }
    /* Every process is gone: operations still in flight are cancelled and
     * their messages freed before the workers stop. */
    kiln_io_stop(rt);
    kiln_sched_stop(rt);
    kiln_epoch_drain_all(rt);
    rt_free(rt);
    return KILN_OK;
}

int kiln_rt_wait_idle(kiln_rt *rt, int64_t timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    if (timeout_ms >= 0) {
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&rt->live_lock);
    int rc = KILN_OK;
    while (atomic_load(&rt->live) > 0) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&rt->live_cond, &rt->live_lock);
        } else if (pthread_cond_timedwait(&rt->live_cond, &rt->live_lock, &deadline) != 0) {
            rc = atomic_load(&rt->live) > 0 ? KILN_ETIMEOUT : KILN_OK;
            break;
        }
    }
    pthread_mutex_unlock(&rt->live_lock);
    return rc;
}

unsigned kiln_rt_workers(const kiln_rt *rt) { return rt->nworkers; }
size_t kiln_rt_process_count(const kiln_rt *rt) { return atomic_load(&((kiln_rt *)rt)->live); }
kiln_term kiln_rt_node(const kiln_rt *rt) { return rt->node; }
uint32_t kiln_rt_creation(const kiln_rt *rt) { return rt->creation; }

void kiln_rt_get_stats(const kiln_rt *crt, kiln_rt_stats *out)
{
    kiln_rt *rt = (kiln_rt *)crt;
    memset(out, 0, sizeof(*out));
    out->spawned = atomic_load(&rt->spawned);
    out->exited = atomic_load(&rt->exited);
    out->wakeups = atomic_load(&rt->wakeups);
    out->stacks_in_use = atomic_load(&rt->stacks_in_use);
    for (unsigned i = 0; i < rt->nworkers; i++) {
        struct kiln_worker *w = &rt->workers[i];
        out->steals += atomic_load_explicit(&w->steals, memory_order_relaxed);
        out->parks += atomic_load_explicit(&w->parks, memory_order_relaxed);
        out->global_pops += atomic_load_explicit(&w->global_pops, memory_order_relaxed);
        out->long_schedules += atomic_load_explicit(&w->long_schedules, memory_order_relaxed);
    }
}
