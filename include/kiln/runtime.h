/* A Kiln runtime: worker threads, their run queues, the process table.
 * Several runtimes may live in one OS process (each is one node). */
#ifndef KILN_RUNTIME_H
#define KILN_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "kiln/term.h"

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)

typedef struct kiln_rt kiln_rt;

/* Called when a handler has run longer than long_schedule_ms, with the pid
 * and the time it took (like erlang:system_monitor long_schedule). */
typedef void (*kiln_long_schedule_fn)(kiln_rt *rt, kiln_term pid, uint64_t ms, void *arg);

typedef struct kiln_rt_config {
    unsigned workers;          /* worker threads; 0 = online CPUs */
    size_t max_processes;      /* process table size; 0 = 4194304 */
    size_t stack_size;         /* bytes per process stack; 0 = 64 KiB */
    unsigned batch_budget;     /* messages handled per run before yielding; 0 = 64 */
    unsigned send_budget;      /* sends a function process makes per run before kiln_send
                                * yields its worker (a send costs reductions in Erlang);
                                * 0 = batch_budget, UINT_MAX = never (kiln/process.h) */
    unsigned blocking_threads; /* threads for kiln_blocking; 0 = 4 */
    uint64_t long_schedule_ms; /* 0 = no long-schedule reports */
    kiln_long_schedule_fn long_schedule;
    void *long_schedule_arg;
    int io_backend;            /* kiln_io_backend (kiln/io.h); 0 = io_uring if allowed,
                                * else epoll; KILN_IO_BACKEND=epoll|io_uring overrides */
    int io_recv_multishot;     /* io_uring: 0 = multishot receives where the kernel has
                                * them, -1 = one operation per receive (kiln/io.h) */
    unsigned io_recv_buffers;  /* buffers shared by the multishot receives; 0 = 64 */
    unsigned io_recv_buffer_size; /* bytes per buffer; 0 = 131072 */
    const char *node_name;     /* NULL = "nonode@nohost" */
    uint32_t creation;         /* node creation; 0 = none yet */
} kiln_rt_config;

/* Fills cfg with the defaults. */
void kiln_rt_config_init(kiln_rt_config *cfg);

/* Starts the workers. cfg may be NULL for the defaults. */
int kiln_rt_start(const kiln_rt_config *cfg, kiln_rt **out);
/* Kills every process (reason shutdown), joins every thread and frees all
 * memory. Must not be called from inside one of rt's processes. */
int kiln_rt_stop(kiln_rt *rt);
/* Blocks the calling (non-Kiln) thread until no process is left alive, or
 * timeout_ms passes (-1 = forever). KILN_ETIMEOUT if processes remain. */
int kiln_rt_wait_idle(kiln_rt *rt, int64_t timeout_ms);

unsigned kiln_rt_workers(const kiln_rt *rt);
size_t kiln_rt_process_count(const kiln_rt *rt);
kiln_term kiln_rt_node(const kiln_rt *rt);
uint32_t kiln_rt_creation(const kiln_rt *rt);

/* Runtime counters, for tests and tuning. */
typedef struct kiln_rt_stats {
    uint64_t spawned, exited;
    uint64_t steals;          /* successful steals (each moves up to half a queue) */
    uint64_t parks, wakeups;  /* worker sleeps and targeted wake-ups */
    uint64_t global_pops;     /* runs taken from the global queue */
    uint64_t long_schedules;
    uint64_t stacks_in_use;   /* stacks held by blocked processes */
} kiln_rt_stats;
void kiln_rt_get_stats(const kiln_rt *rt, kiln_rt_stats *out);

/* Monotonic milliseconds, the clock timers use. */
uint64_t kiln_now_ms(void);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif
