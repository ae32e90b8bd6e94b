/* The Kiln half of the benchmarks: the same scenarios as
 * perf/erlang/perf_bench.erl, driven by perf/run.
 *
 *   kiln_bench SCENARIO [--quick] [--reps N] [--workers N] [--send-budget N]
 *   kiln_bench SCENARIO_remote ... --node NAME --peer NODE [--cookie C]
 *   kiln_bench --serve NAME [--cookie C] [--workers N]
 *   kiln_bench --list
 *
 * prints one line per timed repetition, which perf/run parses:
 *
 *   RESULT <scenario> <unit> <value>
 *
 * and "INFO <scenario> <text>" lines for humans. On failure: an "ERROR"
 * line on stderr and exit status 1. --serve makes this program a server
 * node for the *_remote scenarios of either language (see "distribution"
 * below); it prints "READY <node>" and runs until killed.
 *
 * Both halves follow the same recipe so their numbers compare: the same
 * request terms, the same process topology, the clock started and stopped
 * at the same points, the same calibration (double a probe run until it
 * lasts long enough, then size the timed runs to ~0.6 s each).
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kiln/kiln.h>

#define MAX_REPS 32
#define PAR_PAIRS 30
#define RING_SIZE 1000
#define SPAWN_FULL 1000000u
#define SPAWN_QUICK 100000u
#define SPAWN_WARM 10000u
/* One-way senders outrun their receivers, so every message sent may sit in
 * a queue at once: cap the count to keep memory bounded. */
#define ONEWAY_MAX 10000000u
#define BINARY_SIZE (1024u * 1024u)
/* Arena room for a request's or reply's term: the longest, "hello world"
 * as a list, is 11 cons cells of 16 bytes. With the room kiln_call and
 * kiln_reply add for their wrapping, no message grows a second block. */
#define REQ_TERM 176
#define REQ_HINT (REQ_TERM + KILN_CALL_ROOM)
#define REPLY_HINT (REQ_TERM + KILN_REPLY_ROOM)

static struct {
    bool quick;
    int reps;
    unsigned workers;
    unsigned send_budget; /* 0: the runtime's default */
    kiln_rt *rt;
    /* Distribution (the *_remote scenarios and --serve). */
    const char *node_name, *peer, *cookie;
    size_t fragment_size; /* 0: the node's default */
    kiln_node *node;
} g = {.reps = 3};

/* ---- helpers ---- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Benchmarks have no recovery story: report and leave. _Exit, because this
 * may run on a worker thread while the runtime is busy. */
static _Noreturn void die(const char *what, int rc)
{
    fflush(stdout);
    fprintf(stderr, "ERROR %s: %s (%d)\n", what, kiln_strerror(rc), rc);
    fflush(stderr);
    _Exit(1);
}

static void report(const char *scenario, const char *unit, double value)
{
    printf("RESULT %s %s %.3f\n", scenario, unit, value);
    fflush(stdout);
}

static void info(const char *scenario, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("INFO %s ", scenario);
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
    fflush(stdout);
}

static void wait_sem(sem_t *s)
{
    while (sem_wait(s) != 0)
        if (errno != EINTR)
            die("sem_wait", KILN_ESYS);
}

static void start_rt(void)
{
    kiln_rt_config cfg;
    kiln_rt_config_init(&cfg);
    cfg.workers = g.workers;
    cfg.send_budget = g.send_budget;
    int rc = kiln_rt_start(&cfg, &g.rt);
    if (rc != KILN_OK)
        die("kiln_rt_start", rc);
}

static void stop_rt(void)
{
    int rc = kiln_rt_stop(g.rt);
    if (rc != KILN_OK)
        die("kiln_rt_stop", rc);
    g.rt = NULL;
}

/* Sends a small integer from outside the runtime: the control messages
 * (go, token, stop) the main thread hands to processes. */
static void send_small(kiln_term to, int64_t v)
{
    kiln_msg *m = kiln_msg_new(0);
    if (!m)
        die("kiln_msg_new", KILN_ENOMEM);
    kiln_msg_set_term(m, kiln_small(v));
    int rc = kiln_rt_send(g.rt, to, m);
    if (rc != KILN_OK)
        die("kiln_rt_send", rc);
}

/* run(ctx, n) performs n units of work and returns the elapsed ns. The
 * doubling probe runs are also the warm-up. Returns n for the timed runs. */
typedef uint64_t (*run_fn)(void *ctx, uint64_t n);

static uint64_t calibrate(run_fn run, void *ctx, uint64_t min, uint64_t max)
{
    const double probe = g.quick ? 10e6 : 100e6;
    const double target = g.quick ? 50e6 : 600e6;
    uint64_t n = min;
    for (;;) {
        uint64_t t = run(ctx, n);
        if (t == 0)
            t = 1;
        if ((double)t >= probe || n >= max) {
            double want = (double)n * target / (double)t;
            if (want < (double)min)
                return min;
            if (want > (double)max)
                return max;
            return (uint64_t)want;
        }
        n = n * 2 > max ? max : n * 2;
    }
}

/* ---- the echo server of the call scenarios ---- */

static int echo_init(void *arg, void **state)
{
    *state = arg;
    return KILN_OK;
}

/* gen_server's handle_call(Req, _From, S) -> {reply, Req, S}. */
static kiln_action echo_handle(void *state, kiln_msg *msg)
{
    (void)state;
    kiln_term from, req;
    if (kiln_match_call(kiln_msg_term(msg), &from, &req) != KILN_OK)
        return KILN_CONTINUE;
    kiln_msg *reply = kiln_msg_new(REPLY_HINT);
    if (!reply)
        die("kiln_msg_new", KILN_ENOMEM);
    kiln_term copy = kiln_term_copy(reply, req);
    if (kiln_is_none(copy))
        die("kiln_term_copy", KILN_ENOMEM);
    kiln_msg_set_term(reply, copy);
    int rc = kiln_reply(from, reply);
    if (rc != KILN_OK)
        die("kiln_reply", rc);
    return KILN_CONTINUE;
}

static const kiln_behaviour echo_behaviour = {
    .name = "perf_echo", .init = echo_init, .handle = echo_handle, .terminate = NULL};

static kiln_term spawn_echo(void)
{
    kiln_term pid;
    int rc = kiln_spawn(g.rt, &echo_behaviour, NULL, NULL, &pid);
    if (rc != KILN_OK)
        die("kiln_spawn(echo)", rc);
    return pid;
}

/* ---- call_seq_local_*: one client, one server, sequential calls ---- */

enum req_kind { REQ_NUMBER, REQ_STRING, REQ_PID, REQ_BINARY, REQ_ATOM };

struct call_spec {
    enum req_kind kind;
    kiln_bin *bin;   /* REQ_BINARY: one 1 MB blob every request shares */
    kiln_term atom;  /* REQ_ATOM */
    bool gen_server; /* call through kiln_gs_call rather than kiln_call */
};

/* The request is built afresh in each call's message, as Erlang builds (or
 * copies) it into each message it sends. */
static kiln_term make_request(kiln_msg *m, const struct call_spec *spec)
{
    switch (spec->kind) {
    case REQ_NUMBER: return kiln_int(m, 12345);
    case REQ_STRING: return kiln_string(m, "hello world", 11);
    case REQ_PID: return kiln_self();
    case REQ_BINARY: return kiln_binary_from_bin(m, spec->bin, 0, BINARY_SIZE);
    case REQ_ATOM: return spec->atom;
    }
    return KILN_NONE;
}

static void call_n(kiln_term server, const struct call_spec *spec, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        kiln_msg *req = kiln_msg_new(REQ_HINT);
        if (!req)
            die("kiln_msg_new", KILN_ENOMEM);
        kiln_term t = make_request(req, spec);
        if (kiln_is_none(t))
            die("make_request", KILN_ENOMEM);
        kiln_msg_set_term(req, t);
        kiln_msg *reply = NULL;
        int rc = spec->gen_server ? kiln_gs_call(NULL, server, req, -1, &reply, NULL)
                                  : kiln_call(server, req, -1, &reply, NULL);
        if (rc != KILN_OK)
            die("kiln_call", rc);
        kiln_msg_free(reply);
    }
}

/* One call whose reply must equal the request: a benchmark of a server
 * that answers wrongly would measure nothing. */
static void check_echo(kiln_term server, const struct call_spec *spec)
{
    kiln_msg *expect = kiln_msg_new(REQ_TERM);
    kiln_msg *req = kiln_msg_new(REQ_HINT);
    if (!expect || !req)
        die("kiln_msg_new", KILN_ENOMEM);
    kiln_term want = make_request(expect, spec);
    kiln_msg_set_term(req, make_request(req, spec));
    kiln_msg *reply = NULL;
    int rc = kiln_call(server, req, -1, &reply, NULL);
    if (rc != KILN_OK)
        die("kiln_call", rc);
    if (!kiln_term_eq(kiln_msg_term(reply), want))
        die("echo reply differs from the request", KILN_EBADTERM);
    kiln_msg_free(reply);
    kiln_msg_free(expect);
}

struct seq_ctx {
    kiln_term server;
    struct call_spec spec;
    uint64_t min_calls;
    uint64_t n;
    double ns_per_call[MAX_REPS];
    sem_t done;
};

static uint64_t seq_run(void *arg, uint64_t n)
{
    struct seq_ctx *c = arg;
    uint64_t t0 = now_ns();
    call_n(c->server, &c->spec, n);
    return now_ns() - t0;
}

/* The client is a process (kiln_call needs one) on its own stack. */
static void seq_client(void *arg)
{
    struct seq_ctx *c = arg;
    check_echo(c->server, &c->spec);
    c->n = calibrate(seq_run, c, c->min_calls, 100000000);
    for (int r = 0; r < g.reps; r++)
        c->ns_per_call[r] = (double)seq_run(c, c->n) / (double)c->n;
    sem_post(&c->done);
}

/* server: KILN_NONE for a new local echo server. min_calls: the first probe
 * run, small for remote servers (a 1 MiB call over TCP takes milliseconds). */
static void bench_call_seq(const char *name, enum req_kind kind, kiln_term server,
                           uint64_t min_calls)
{
    static struct seq_ctx c; /* static: the client's stack is small */
    memset(&c, 0, sizeof c);
    sem_init(&c.done, 0, 0);
    c.spec.kind = kind;
    c.min_calls = min_calls;
    if (kind == REQ_BINARY) {
        c.spec.bin = kiln_bin_alloc(BINARY_SIZE);
        if (!c.spec.bin)
            die("kiln_bin_alloc", KILN_ENOMEM);
        memset(kiln_bin_data(c.spec.bin), 0, BINARY_SIZE);
    }
    c.server = kiln_is_none(server) ? spawn_echo() : server;
    kiln_term client;
    int rc = kiln_spawn_fn(g.rt, seq_client, &c, NULL, &client);
    if (rc != KILN_OK)
        die("kiln_spawn_fn(client)", rc);
    wait_sem(&c.done);
    info(name, "calls_per_run=%" PRIu64, c.n);
    for (int r = 0; r < g.reps; r++)
        report(name, "ns/call", c.ns_per_call[r]);
    if (c.spec.bin)
        kiln_bin_decref(c.spec.bin); /* messages still alive hold their own refs */
    sem_destroy(&c.done);
}

/* ---- call_par_local: 30 client/server pairs calling at once ---- */

struct par_ctx {
    kiln_term servers[PAR_PAIRS], clients[PAR_PAIRS];
    struct call_spec spec;
    _Atomic unsigned remaining;
    sem_t done;
};

struct par_client_arg {
    struct par_ctx *ctx;
    kiln_term server;
};

/* Waits for "go N", makes N calls, reports; "go 0" ends it. */
static void par_client(void *arg)
{
    struct par_client_arg *a = arg;
    for (;;) {
        kiln_msg *m = NULL;
        int rc = kiln_receive(NULL, NULL, -1, &m);
        if (rc != KILN_OK)
            die("kiln_receive", rc);
        int64_t n = kiln_small_value(kiln_msg_term(m));
        kiln_msg_free(m);
        if (n <= 0)
            return;
        call_n(a->server, &a->ctx->spec, (uint64_t)n);
        if (atomic_fetch_sub(&a->ctx->remaining, 1) == 1)
            sem_post(&a->ctx->done);
    }
}

static uint64_t par_run(void *arg, uint64_t n)
{
    struct par_ctx *c = arg;
    atomic_store(&c->remaining, PAR_PAIRS);
    uint64_t t0 = now_ns();
    for (int i = 0; i < PAR_PAIRS; i++)
        send_small(c->clients[i], (int64_t)n);
    wait_sem(&c->done);
    return now_ns() - t0;
}

/* servers: PAR_PAIRS remote echo servers, or NULL for new local ones. */
static void bench_call_par(const char *name, const kiln_term *servers)
{
    static struct par_ctx c;
    static struct par_client_arg args[PAR_PAIRS];
    memset(&c, 0, sizeof c);
    sem_init(&c.done, 0, 0);
    c.spec.kind = REQ_ATOM;
    c.spec.atom = kiln_atom_c("ping");
    for (int i = 0; i < PAR_PAIRS; i++) {
        c.servers[i] = servers ? servers[i] : spawn_echo();
        args[i] = (struct par_client_arg){.ctx = &c, .server = c.servers[i]};
        int rc = kiln_spawn_fn(g.rt, par_client, &args[i], NULL, &c.clients[i]);
        if (rc != KILN_OK)
            die("kiln_spawn_fn(client)", rc);
    }
    uint64_t n = calibrate(par_run, &c, 100, 10000000);
    info(name, "pairs=%d calls_per_client=%" PRIu64, PAR_PAIRS, n);
    for (int r = 0; r < g.reps; r++)
        report(name, "ns/call", (double)par_run(&c, n) / (double)(n * PAR_PAIRS));
    for (int i = 0; i < PAR_PAIRS; i++)
        send_small(c.clients[i], 0);
}

/* ---- oneway_local_*: fire-and-forget sends, `pairs` senders each to its
 * own receiver (ergo's local 1-1 and N-N ping); timed until every receiver
 * has counted all its messages. ---- */

struct ow_ctx;

struct ow_receiver {
    struct ow_ctx *ctx;
    uint64_t count, target; /* set by main while the receiver is idle */
};

struct ow_sender_arg {
    kiln_term dest;
    uint64_t n;
};

struct ow_ctx {
    unsigned pairs;
    struct ow_receiver recv[2];
    struct ow_sender_arg send[2];
    kiln_term rpids[2];
    _Atomic unsigned remaining;
    sem_t done;
};

static int ow_recv_init(void *arg, void **state)
{
    *state = arg;
    return KILN_OK;
}

static kiln_action ow_recv_handle(void *state, kiln_msg *msg)
{
    struct ow_receiver *r = state;
    (void)msg;
    if (++r->count == r->target && atomic_fetch_sub(&r->ctx->remaining, 1) == 1)
        sem_post(&r->ctx->done);
    return KILN_CONTINUE;
}

static const kiln_behaviour ow_receiver_behaviour = {
    .name = "perf_oneway_receiver", .init = ow_recv_init, .handle = ow_recv_handle};

static void ow_sender(void *arg)
{
    /* Copied: a send may yield, and the last one can return after the
     * count was reached and the next run has rewritten *arg. */
    const struct ow_sender_arg a = *(const struct ow_sender_arg *)arg;
    for (uint64_t i = 0; i < a.n; i++) {
        kiln_msg *m = kiln_msg_new(0);
        if (!m)
            die("kiln_msg_new", KILN_ENOMEM);
        kiln_msg_set_term(m, kiln_small(1));
        int rc = kiln_send(a.dest, m);
        if (rc != KILN_OK)
            die("kiln_send", rc);
    }
}

static uint64_t ow_run(void *arg, uint64_t n)
{
    struct ow_ctx *c = arg;
    /* The receivers are idle here; the spawn and the sends that follow
     * publish these writes to them. */
    for (unsigned i = 0; i < c->pairs; i++) {
        c->recv[i].count = 0;
        c->recv[i].target = n;
        c->send[i] = (struct ow_sender_arg){.dest = c->rpids[i], .n = n};
    }
    atomic_store(&c->remaining, c->pairs);
    uint64_t t0 = now_ns();
    for (unsigned i = 0; i < c->pairs; i++) {
        kiln_term pid;
        int rc = kiln_spawn_fn(g.rt, ow_sender, &c->send[i], NULL, &pid);
        if (rc != KILN_OK)
            die("kiln_spawn_fn(sender)", rc);
    }
    wait_sem(&c->done);
    return now_ns() - t0;
}

static void bench_oneway(const char *name, unsigned pairs)
{
    static struct ow_ctx c;
    memset(&c, 0, sizeof c);
    sem_init(&c.done, 0, 0);
    c.pairs = pairs;
    for (unsigned i = 0; i < pairs; i++) {
        c.recv[i] = (struct ow_receiver){.ctx = &c, .count = 0, .target = UINT64_MAX};
        int rc = kiln_spawn(g.rt, &ow_receiver_behaviour, &c.recv[i], NULL, &c.rpids[i]);
        if (rc != KILN_OK)
            die("kiln_spawn(receiver)", rc);
    }
    uint64_t n = calibrate(ow_run, &c, 10000, ONEWAY_MAX);
    info(name, "pairs=%u msgs_per_sender=%" PRIu64, pairs, n);
    for (int r = 0; r < g.reps; r++) {
        uint64_t t = ow_run(&c, n);
        report(name, "msgs/s", (double)(n * pairs) * 1e9 / (double)t);
    }
}

/* ---- ring: 1000 processes pass a token round and round ---- */

struct ring_ctx;

struct ring_node {
    struct ring_ctx *ctx;
    kiln_term next;
};

struct ring_ctx {
    struct ring_node nodes[RING_SIZE];
    kiln_term pids[RING_SIZE];
    sem_t done;
};

static int ring_init(void *arg, void **state)
{
    *state = arg;
    return KILN_OK;
}

/* The token is the number of hops left. Each hop sends a new message, as
 * Erlang's Next ! H - 1 does, rather than forwarding the borrowed one. */
static kiln_action ring_handle(void *state, kiln_msg *msg)
{
    struct ring_node *node = state;
    int64_t left = kiln_small_value(kiln_msg_term(msg));
    if (left == 0) {
        sem_post(&node->ctx->done);
        return KILN_CONTINUE;
    }
    kiln_msg *m = kiln_msg_new(0);
    if (!m)
        die("kiln_msg_new", KILN_ENOMEM);
    kiln_msg_set_term(m, kiln_small(left - 1));
    int rc = kiln_send(node->next, m);
    if (rc != KILN_OK)
        die("kiln_send", rc);
    return KILN_CONTINUE;
}

static const kiln_behaviour ring_behaviour = {
    .name = "perf_ring", .init = ring_init, .handle = ring_handle};

static uint64_t ring_run(void *arg, uint64_t laps)
{
    struct ring_ctx *c = arg;
    uint64_t t0 = now_ns();
    send_small(c->pids[0], (int64_t)(laps * RING_SIZE));
    wait_sem(&c->done);
    return now_ns() - t0;
}

static void bench_ring(const char *name)
{
    static struct ring_ctx c;
    memset(&c, 0, sizeof c);
    sem_init(&c.done, 0, 0);
    for (int i = 0; i < RING_SIZE; i++) {
        c.nodes[i].ctx = &c;
        int rc = kiln_spawn(g.rt, &ring_behaviour, &c.nodes[i], NULL, &c.pids[i]);
        if (rc != KILN_OK)
            die("kiln_spawn(ring)", rc);
    }
    /* No token moves before ring_run, whose send publishes these. */
    for (int i = 0; i < RING_SIZE; i++)
        c.nodes[i].next = c.pids[(i + 1) % RING_SIZE];
    uint64_t laps = calibrate(ring_run, &c, g.quick ? 10 : 1000, 1000000);
    info(name, "processes=%d laps=%" PRIu64, RING_SIZE, laps);
    for (int r = 0; r < g.reps; r++)
        report(name, "ns/hop", (double)ring_run(&c, laps) / (double)(laps * RING_SIZE));
}

/* ---- spawn_1m and mem_per_process: idle processes ---- */

struct spawn_ctx {
    uint64_t n;
    kiln_term *pids;          /* when not NULL, every pid (warm-up only) */
    kiln_term last;           /* the last pid spawned */
    uint64_t t0, t_loop_end;  /* the spawner's loop */
    _Atomic uint64_t started;
    _Atomic uint64_t t_last;  /* when the n-th process ran its init */
    sem_t done;               /* posted by the n-th init and by the spawner */
};

/* An idle process counts itself in and then waits; the one that completes
 * the count stops the clock, so the timing covers every init having run
 * (Erlang's side does the same with atomics:add_get). */
static int idle_init(void *arg, void **state)
{
    struct spawn_ctx *c = arg;
    *state = NULL;
    if (atomic_fetch_add(&c->started, 1) + 1 == c->n) {
        atomic_store(&c->t_last, now_ns());
        sem_post(&c->done);
    }
    return KILN_OK;
}

/* Any message stops it: the warm-up cleans up that way. */
static kiln_action idle_handle(void *state, kiln_msg *msg)
{
    (void)state;
    (void)msg;
    return KILN_STOP;
}

static const kiln_behaviour idle_behaviour = {
    .name = "perf_idle", .init = idle_init, .handle = idle_handle};

/* The spawner is a process, as Erlang's spawner is. */
static void spawner(void *arg)
{
    struct spawn_ctx *c = arg;
    kiln_term pid = KILN_NONE;
    c->t0 = now_ns();
    for (uint64_t i = 0; i < c->n; i++) {
        int rc = kiln_spawn(g.rt, &idle_behaviour, c, NULL, &pid);
        if (rc != KILN_OK)
            die("kiln_spawn(idle)", rc);
        if (c->pids)
            c->pids[i] = pid;
    }
    c->last = pid;
    c->t_loop_end = now_ns();
    sem_post(&c->done);
}

/* Spawns n idle processes from a spawner process; returns ns from the
 * first spawn until both the n-th init has run and the spawner's loop has
 * ended (an init may run before its kiln_spawn returns). */
static uint64_t spawn_idle(struct spawn_ctx *c, uint64_t n, kiln_term *pids)
{
    memset(c, 0, sizeof *c);
    sem_init(&c->done, 0, 0);
    c->n = n;
    c->pids = pids;
    kiln_term sp;
    int rc = kiln_spawn_fn(g.rt, spawner, c, NULL, &sp);
    if (rc != KILN_OK)
        die("kiln_spawn_fn(spawner)", rc);
    wait_sem(&c->done);
    wait_sem(&c->done);
    sem_destroy(&c->done);
    uint64_t t_last = atomic_load(&c->t_last);
    return (t_last > c->t_loop_end ? t_last : c->t_loop_end) - c->t0;
}

static void wait_process_count(size_t want)
{
    uint64_t deadline = now_ns() + 60000000000u;
    while (kiln_rt_process_count(g.rt) > want) {
        if (now_ns() > deadline)
            die("idle processes did not stop", KILN_ETIMEOUT);
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
}

/* A small batch first, so the timed run does not pay for first-touch set-up
 * that any long-lived runtime has already paid. */
static void spawn_warm_up(void)
{
    static kiln_term pids[SPAWN_WARM];
    static struct spawn_ctx c;
    size_t base = kiln_rt_process_count(g.rt);
    spawn_idle(&c, SPAWN_WARM, pids);
    for (size_t i = 0; i < SPAWN_WARM; i++)
        send_small(pids[i], 0);
    wait_process_count(base);
}

static uint64_t spawn_count(void) { return g.quick ? SPAWN_QUICK : SPAWN_FULL; }

static void bench_spawn(const char *name)
{
    static struct spawn_ctx c;
    uint64_t n = spawn_count();
    for (int r = 0; r < g.reps; r++) {
        /* A repetition kills its n processes the quick way: a new runtime.
         * perf/run uses a fresh OS process per repetition anyway. */
        if (r > 0) {
            stop_rt();
            start_rt();
        }
        spawn_warm_up();
        uint64_t t = spawn_idle(&c, n, NULL);
        report(name, "ns/spawn", (double)t / (double)n);
        /* The spawner may not have finished exiting yet: it is counted. */
        info(name, "alive=%zu", kiln_rt_process_count(g.rt));
    }
}

/* Resident set size, from /proc/self/statm (the Erlang side reads the same
 * file of its own VM). */
static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, resident = 0;
    if (!f || fscanf(f, "%llu %llu", &size, &resident) != 2)
        die("reading /proc/self/statm", KILN_ESYS);
    fclose(f);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* No warm-up: the baseline is the runtime at rest, so the delta charges the
 * processes with everything they make the runtime allocate. */
static void bench_mem(const char *name)
{
    static struct spawn_ctx c;
    uint64_t n = spawn_count();
    for (int r = 0; r < g.reps; r++) {
        if (r > 0) {
            stop_rt();
            start_rt();
        }
        uint64_t rss0 = rss_bytes();
        spawn_idle(&c, n, NULL);
        uint64_t rss1 = rss_bytes();
        report(name, "bytes/proc", ((double)rss1 - (double)rss0) / (double)n);
        kiln_proc_info pi;
        memset(&pi, 0, sizeof pi);
        int rc = kiln_process_info(g.rt, c.last, &pi);
        kiln_rt_stats st;
        kiln_rt_get_stats(g.rt, &st);
        info(name,
             "processes=%" PRIu64 " rss_delta=%" PRIu64 " process_info_memory=%zu (rc %d) "
             "stacks_in_use=%" PRIu64,
             n, rss1 - rss0, pi.memory, rc, st.stacks_in_use);
    }
}

/* ---- etf_encode / etf_decode: a mixed corpus through the ETF codec ----
 *
 * The corpus (perf/README.md defines it; perf_bench.erl builds the same):
 *   tuples      1000 terms {ok, I, <<"abc">>}, I = 0..999
 *   map_1k      one map #{K => <<K,K,K,K,K,K,K,K,K>>}, K = 0..63 (1030 bytes)
 *   pids_200    one list of 200 pids of live idle processes
 *   binary_1mb  one 1 MiB binary, byte i = i mod 256 (refcounted)
 * Each of the 1003 terms is encoded (or decoded) on its own, with its 131
 * version byte, as term_to_binary/binary_to_term handle one term per call.
 * MB/s = ETF bytes (10^6 per MB) per second of wall time.
 */

#define ETF_TUPLES 1000
#define ETF_MAP_KEYS 64
#define ETF_MAP_VALUE 9
#define ETF_PIDS 200
#define ETF_TERMS (ETF_TUPLES + 3)

enum { PART_TUPLES, PART_MAP, PART_PIDS, PART_BINARY, N_PARTS };
static const char *const part_names[N_PARTS] = {"tuples", "map_1k", "pids_200", "binary_1mb"};

struct etf_ctx;
/* One encode or decode of corpus term i; returns the ETF bytes it handled,
 * which the run checks against the corpus size (and which keeps the work
 * observable to the compiler). */
typedef size_t (*etf_op)(struct etf_ctx *c, size_t i);

struct etf_ctx {
    kiln_msg *m;                   /* owns every corpus term */
    kiln_term terms[ETF_TERMS];
    size_t first[N_PARTS + 1];     /* part p is terms[first[p] .. first[p + 1]) */
    kiln_term pids[ETF_PIDS];
    uint8_t *bytes[ETF_TERMS];     /* each term's flat encoding, for decoding */
    size_t len[ETF_TERMS];
    kiln_msg *bm;                  /* owns bins */
    kiln_term bins[ETF_TERMS];     /* the same encodings as binary terms */
    size_t part_bytes[N_PARTS], total_bytes;
    kiln_etf_enc *enc;             /* reused across terms and runs */
    etf_op op;
    uint64_t part_ns[N_PARTS];     /* of the last run */
};

/* The pids of the corpus belong to live processes, as on the Erlang side;
 * each waits for one message and ends. */
static void etf_pid_holder(void *arg)
{
    (void)arg;
    kiln_msg *m = NULL;
    int rc = kiln_receive(NULL, NULL, -1, &m);
    if (rc != KILN_OK)
        die("kiln_receive", rc);
    kiln_msg_free(m);
}

static void etf_build_corpus(struct etf_ctx *c)
{
    /* Room for the tuples and the map without growing chunks. */
    c->m = kiln_msg_new(128 * 1024);
    if (!c->m)
        die("kiln_msg_new", KILN_ENOMEM);
    size_t k = 0;
    c->first[PART_TUPLES] = k;
    for (int64_t i = 0; i < ETF_TUPLES; i++)
        c->terms[k++] = kiln_tuple(c->m, 3, KILN_ATOM_OK, kiln_small(i), kiln_binary(c->m, "abc", 3));

    c->first[PART_MAP] = k;
    kiln_term keys[ETF_MAP_KEYS], values[ETF_MAP_KEYS];
    for (int64_t i = 0; i < ETF_MAP_KEYS; i++) {
        uint8_t v[ETF_MAP_VALUE];
        memset(v, (int)i, sizeof v);
        keys[i] = kiln_small(i);
        values[i] = kiln_binary(c->m, v, sizeof v);
    }
    c->terms[k++] = kiln_map(c->m, ETF_MAP_KEYS, keys, values);

    c->first[PART_PIDS] = k;
    for (int i = 0; i < ETF_PIDS; i++) {
        int rc = kiln_spawn_fn(g.rt, etf_pid_holder, NULL, NULL, &c->pids[i]);
        if (rc != KILN_OK)
            die("kiln_spawn_fn(pid holder)", rc);
    }
    c->terms[k++] = kiln_list_v(c->m, ETF_PIDS, c->pids, KILN_NIL);

    c->first[PART_BINARY] = k;
    /* At least KILN_REFC_BIN_MIN bytes, so kiln_binary makes it refcounted:
     * the kind of binary the encoder may hand out by reference. */
    uint8_t *blob = malloc(BINARY_SIZE);
    if (!blob)
        die("malloc", KILN_ENOMEM);
    for (size_t i = 0; i < BINARY_SIZE; i++)
        blob[i] = (uint8_t)i;
    c->terms[k++] = kiln_binary(c->m, blob, BINARY_SIZE);
    free(blob);
    c->first[N_PARTS] = k;

    for (size_t i = 0; i < k; i++)
        if (kiln_is_none(c->terms[i]))
            die("building the ETF corpus", KILN_ENOMEM);

    /* Flat encodings: what etf_decode decodes, the byte counts of both
     * scenarios, and a round-trip check (a codec that loses information
     * would be fast for nothing). */
    for (int p = 0; p < N_PARTS; p++) {
        for (size_t i = c->first[p]; i < c->first[p + 1]; i++) {
            int rc = kiln_etf_term_to_bytes(c->terms[i], NULL, &c->bytes[i], &c->len[i]);
            if (rc != KILN_OK)
                die("kiln_etf_term_to_bytes", rc);
            kiln_msg *back = NULL;
            rc = kiln_etf_decode(c->bytes[i], c->len[i], NULL, &back, NULL);
            if (rc != KILN_OK)
                die("kiln_etf_decode", rc);
            if (!kiln_term_eq(kiln_msg_term(back), c->terms[i]))
                die("ETF round trip changed a corpus term", KILN_EBADTERM);
            kiln_msg_free(back);
            c->part_bytes[p] += c->len[i];
        }
        c->total_bytes += c->part_bytes[p];
    }
    /* As binary terms, what binary_to_term is given: the 1 MiB one is
     * refcounted (the small ones sit in the arena). */
    c->bm = kiln_msg_new(64 * 1024);
    if (!c->bm)
        die("kiln_msg_new", KILN_ENOMEM);
    for (size_t i = 0; i < k; i++)
        if (kiln_is_none(c->bins[i] = kiln_binary(c->bm, c->bytes[i], c->len[i])))
            die("kiln_binary", KILN_ENOMEM);
    c->enc = kiln_etf_enc_new(NULL); /* minor_version 1: term_to_binary/1 of OTP 25 */
    if (!c->enc)
        die("kiln_etf_enc_new", KILN_ENOMEM);
}

static void etf_free_corpus(struct etf_ctx *c)
{
    kiln_etf_enc_free(c->enc);
    for (size_t i = 0; i < ETF_TERMS; i++)
        free(c->bytes[i]);
    kiln_msg_free(c->bm);
    kiln_msg_free(c->m);
    for (int i = 0; i < ETF_PIDS; i++)
        send_small(c->pids[i], 0);
}

/* The design: the reused encoder's output as iovecs, ready for writev; the
 * 1 MiB binary is referenced there, not copied. */
static size_t etf_enc_iov(struct etf_ctx *c, size_t i)
{
    kiln_etf_enc_reset(c->enc);
    int rc = kiln_etf_enc_whole(c->enc, c->terms[i]);
    if (rc != KILN_OK)
        die("kiln_etf_enc_whole", rc);
    size_t n;
    const struct iovec *iov = kiln_etf_enc_iov(c->enc, &n);
    if (!iov)
        die("kiln_etf_enc_iov", KILN_ENOMEM);
    return kiln_etf_enc_size(c->enc);
}

/* What term_to_binary returns: one new flat buffer per term, every byte
 * copied into it (the same encoder, then kiln_etf_enc_copy). */
static size_t etf_enc_flat(struct etf_ctx *c, size_t i)
{
    kiln_etf_enc_reset(c->enc);
    int rc = kiln_etf_enc_whole(c->enc, c->terms[i]);
    if (rc != KILN_OK)
        die("kiln_etf_enc_whole", rc);
    size_t n = kiln_etf_enc_size(c->enc);
    uint8_t *out = malloc(n);
    if (!out)
        die("malloc", KILN_ENOMEM);
    kiln_etf_enc_copy(c->enc, out);
    free(out);
    return n;
}

/* The one-call user API, kiln_etf_term_to_bytes: a new encoder per term. */
static size_t etf_enc_oneshot(struct etf_ctx *c, size_t i)
{
    uint8_t *out;
    size_t n;
    int rc = kiln_etf_term_to_bytes(c->terms[i], NULL, &out, &n);
    if (rc != KILN_OK)
        die("kiln_etf_term_to_bytes", rc);
    free(out);
    return n;
}

/* binary_to_term: a new message per term, freed at once (Erlang's decoded
 * terms become garbage its GC collects). The design: the input is a binary
 * term, and a refcounted one lends its bytes to the large binaries inside
 * (the 1 MiB binary is shared, not copied). */
static size_t etf_b2t(struct etf_ctx *c, size_t i)
{
    kiln_msg *m = NULL;
    int rc = kiln_binary_to_term(c->bins[i], NULL, &m);
    if (rc != KILN_OK)
        die("kiln_binary_to_term", rc);
    kiln_msg_free(m);
    return c->len[i];
}

/* The same from plain bytes (kiln_etf_decode): every byte copied. */
static size_t etf_dec(struct etf_ctx *c, size_t i)
{
    kiln_msg *m = NULL;
    int rc = kiln_etf_decode(c->bytes[i], c->len[i], NULL, &m, NULL);
    if (rc != KILN_OK)
        die("kiln_etf_decode", rc);
    kiln_msg_free(m);
    return c->len[i];
}

/* n passes over the corpus, part by part (so each part's time is known);
 * returns the total ns. */
static uint64_t etf_run(void *arg, uint64_t n)
{
    struct etf_ctx *c = arg;
    uint64_t total = 0;
    for (int p = 0; p < N_PARTS; p++) {
        size_t bytes = 0;
        uint64_t t0 = now_ns();
        for (uint64_t r = 0; r < n; r++)
            for (size_t i = c->first[p]; i < c->first[p + 1]; i++)
                bytes += c->op(c, i);
        c->part_ns[p] = now_ns() - t0;
        total += c->part_ns[p];
        if (bytes != c->part_bytes[p] * n)
            die("ETF byte count differs from the corpus's", KILN_EBADTERM);
    }
    return total;
}

static double mb_per_s(size_t bytes, uint64_t n, uint64_t ns)
{
    return (double)bytes * (double)n * 1e3 / (double)(ns ? ns : 1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Calibrates and times one path; each repetition is a RESULT line when
 * `result` (the path in the table), else only INFO lines, the last giving
 * the median of the repetitions. */
static void etf_path(const char *name, struct etf_ctx *c, etf_op op, const char *path,
                     bool result)
{
    c->op = op;
    uint64_t n = calibrate(etf_run, c, 1, 1000000);
    double v[MAX_REPS];
    for (int r = 0; r < g.reps; r++) {
        uint64_t t = etf_run(c, n);
        v[r] = mb_per_s(c->total_bytes, n, t);
        info(name, "path=%s rep=%d passes=%" PRIu64 " MB/s: total=%.1f %s=%.1f %s=%.1f %s=%.1f %s=%.1f",
             path, r + 1, n, v[r], part_names[0], mb_per_s(c->part_bytes[0], n, c->part_ns[0]),
             part_names[1], mb_per_s(c->part_bytes[1], n, c->part_ns[1]), part_names[2],
             mb_per_s(c->part_bytes[2], n, c->part_ns[2]), part_names[3],
             mb_per_s(c->part_bytes[3], n, c->part_ns[3]));
        if (result)
            report(name, "MB/s", v[r]);
    }
    qsort(v, (size_t)g.reps, sizeof v[0], cmp_double);
    info(name, "path=%s median MB/s=%.1f%s", path, v[g.reps / 2],
         result ? " (the table's number)" : " (not in the table)");
}

static void etf_info_bytes(const char *name, const struct etf_ctx *c)
{
    /* perf/run compares this line between the two sides: they must have
     * encoded the same corpus to the same bytes. */
    info(name, "etf_bytes=%zu %s=%zu %s=%zu %s=%zu %s=%zu", c->total_bytes, part_names[0],
         c->part_bytes[0], part_names[1], c->part_bytes[1], part_names[2], c->part_bytes[2],
         part_names[3], c->part_bytes[3]);
}

/* Runs on the main thread: the codec needs no process, and the runtime's
 * workers stay idle (the pid holders wait in kiln_receive). */
static void bench_etf_encode(const char *name)
{
    static struct etf_ctx c; /* static: large, and zeroed */
    etf_build_corpus(&c);
    etf_info_bytes(name, &c);
    /* Show that the binary really leaves as a borrowed segment. */
    etf_enc_iov(&c, c.first[PART_BINARY]);
    size_t niov;
    kiln_etf_enc_iov(c.enc, &niov);
    info(name, "binary_1mb_iovecs=%zu", niov);
    etf_path(name, &c, etf_enc_iov, "iov", true);
    etf_path(name, &c, etf_enc_flat, "flat", false);
    etf_path(name, &c, etf_enc_oneshot, "term_to_bytes", false);
    etf_free_corpus(&c);
}

static void bench_etf_decode(const char *name)
{
    static struct etf_ctx c;
    etf_build_corpus(&c);
    etf_info_bytes(name, &c);
    etf_path(name, &c, etf_b2t, "binary_to_term", true);
    etf_path(name, &c, etf_dec, "copy", false);
    etf_free_corpus(&c);
}

/* ---- gen_server_call_local: the same echo as a kiln_gen_server ----
 *
 * Called with kiln_gs_call (gen_server:call). Each repetition also times
 * the bare behaviour echo of call_seq_local_number with the same number of
 * calls, right after, so perf/run can show what the gen_server layer costs
 * over a bare kiln_call without comparing two separate runs. */

static kiln_gs_ret gs_echo_init(void *arg, void **state)
{
    *state = arg;
    return kiln_gs_ok();
}

/* handle_call(Req, _From, S) -> {reply, Req, S}: kiln_gs_reply copies it. */
static kiln_gs_ret gs_echo_call(void *state, kiln_term request, kiln_term from)
{
    (void)state;
    (void)from;
    return kiln_gs_reply(request);
}

static const kiln_gen_server gs_echo = {
    .name = "perf_gs_echo", .init = gs_echo_init, .handle_call = gs_echo_call};

static kiln_term start_gs_echo(void)
{
    kiln_term pid;
    int rc = kiln_gs_start(g.rt, &gs_echo, NULL, NULL, &pid, NULL);
    if (rc != KILN_OK)
        die("kiln_gs_start(echo)", rc);
    return pid;
}

struct gsl_ctx {
    struct seq_ctx gs, bare;
    double gs_ns[MAX_REPS], bare_ns[MAX_REPS];
    sem_t done;
};

/* Each rep interleaves the two paths in GSL_SLICES slices, the first of
 * each pair alternating: a rep measured as one gen_server run then one
 * bare run read the machine's drift between them as overhead (single runs
 * from -31% to +32% on this VM). */
#define GSL_SLICES 10

static void gsl_client(void *arg)
{
    struct gsl_ctx *c = arg;
    check_echo(c->gs.server, &c->gs.spec);
    check_echo(c->bare.server, &c->bare.spec);
    c->gs.n = calibrate(seq_run, &c->gs, 1000, 100000000);
    uint64_t slice = c->gs.n / GSL_SLICES ? c->gs.n / GSL_SLICES : 1;
    seq_run(&c->bare, c->gs.n); /* the bare path's warm-up */
    for (int r = 0; r < g.reps; r++) {
        uint64_t gs = 0, bare = 0;
        for (int k = 0; k < GSL_SLICES; k++) {
            if (k % 2 == 0) {
                gs += seq_run(&c->gs, slice);
                bare += seq_run(&c->bare, slice);
            } else {
                bare += seq_run(&c->bare, slice);
                gs += seq_run(&c->gs, slice);
            }
        }
        c->gs_ns[r] = (double)gs / (double)(slice * GSL_SLICES);
        c->bare_ns[r] = (double)bare / (double)(slice * GSL_SLICES);
    }
    sem_post(&c->done);
}

static void bench_gs_local(const char *name)
{
    static struct gsl_ctx c;
    memset(&c, 0, sizeof c);
    sem_init(&c.done, 0, 0);
    c.gs.spec = (struct call_spec){.kind = REQ_NUMBER, .gen_server = true};
    c.bare.spec = (struct call_spec){.kind = REQ_NUMBER};
    c.gs.server = start_gs_echo();
    c.bare.server = spawn_echo();
    kiln_term client;
    int rc = kiln_spawn_fn(g.rt, gsl_client, &c, NULL, &client);
    if (rc != KILN_OK)
        die("kiln_spawn_fn(client)", rc);
    wait_sem(&c.done);
    info(name, "calls_per_run=%" PRIu64, c.gs.n);
    for (int r = 0; r < g.reps; r++) {
        report(name, "ns/call", c.gs_ns[r]);
        /* perf/run reads these for the gen_server-over-kiln_call overhead. */
        info(name, "rep=%d bare_kiln_call_ns=%.3f", r + 1, c.bare_ns[r]);
    }
    sem_destroy(&c.done);
}

/* ---- tcp_pingpong and tcp_echo_1mb: the floors under a remote call ----
 *
 * A message to an echo in another OS process over loopback TCP and back
 * (TCP_NODELAY on both ends, blocking reads and writes): what a remote call
 * could cost if distribution added nothing to the two trips through the
 * kernel. A forked child echoes, so the round trip crosses processes as a
 * call between two nodes does. tcp_pingpong sends 64 bytes; tcp_echo_1mb
 * sends a megabyte, read whole before it is sent back, as a call's server
 * must have the whole request before it can answer. */

#define TCP_MSG 64
#define TCP_BIG (1u << 20)

static void write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("tcp write", KILN_ESYS);
        p += w;
        n -= (size_t)w;
    }
}

/* false on EOF before anything was read. */
static bool read_all(int fd, uint8_t *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0 && got == 0)
            return false;
        if (r <= 0)
            die("tcp read", KILN_ESYS);
        got += (size_t)r;
    }
    return true;
}

static void set_nodelay(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
        die("setsockopt(TCP_NODELAY)", KILN_ESYS);
}

/* The forked child: only system calls and _exit, as a child of a process
 * with threads (the runtime's workers) may safely do; its buffer was
 * allocated by the parent before the fork. */
static _Noreturn void tcp_echo_child(int lfd, uint8_t *buf, size_t size)
{
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        _exit(1);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (;;) {
        size_t got = 0;
        while (got < size) {
            ssize_t r = read(fd, buf + got, size - got);
            if (r == 0)
                _exit(0);
            if (r < 0 && errno != EINTR)
                _exit(1);
            if (r > 0)
                got += (size_t)r;
        }
        size_t put = 0;
        while (put < size) {
            ssize_t w = write(fd, buf + put, size - put);
            if (w < 0 && errno != EINTR)
                _exit(1);
            if (w > 0)
                put += (size_t)w;
        }
    }
}

struct tcp_ctx {
    int fd;
    size_t size;
    uint8_t *msg, *back;
};

static uint64_t tcp_run(void *arg, uint64_t n)
{
    struct tcp_ctx *c = arg;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        write_all(c->fd, c->msg, c->size);
        if (!read_all(c->fd, c->back, c->size))
            die("tcp echo closed the connection", KILN_ESYS);
    }
    return now_ns() - t0;
}

static void bench_tcp(const char *name, size_t size, uint64_t min_rounds)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0)
        die("socket", KILN_ESYS);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 1) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0)
        die("bind/listen", KILN_ESYS);
    struct tcp_ctx c = {.size = size, .msg = malloc(size), .back = malloc(size)};
    uint8_t *echo_buf = malloc(size);
    if (!c.msg || !c.back || !echo_buf)
        die("malloc", KILN_ENOMEM);
    memset(c.msg, 1, size);
    fflush(stdout);
    pid_t child = fork();
    if (child < 0)
        die("fork", KILN_ESYS);
    if (child == 0)
        tcp_echo_child(lfd, echo_buf, size);
    close(lfd);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        die("connect", KILN_ESYS);
    set_nodelay(fd);
    c.fd = fd;
    uint64_t n = calibrate(tcp_run, &c, min_rounds, 100000000);
    info(name, "message_bytes=%zu round_trips_per_run=%" PRIu64, size, n);
    for (int r = 0; r < g.reps; r++)
        report(name, "ns/rt", (double)tcp_run(&c, n) / (double)n);
    close(fd);
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    free(c.msg);
    free(c.back);
    free(echo_buf);
}

/* ---- distribution: the server node (--serve) and the *_remote clients ----
 *
 * A server node runs, for whatever client connects:
 *   echo       the bare echo behaviour of the call_seq scenarios
 *   par        PAR_PAIRS more echoes, for call_par_remote
 *   receivers  two one-way receivers (below)
 *   gs         the kiln_gen_server echo
 * and a process registered as perf_ctl that answers {hello, From} with
 * {servers, Echo, [Par], [Receivers], Gs}. perf_bench.erl's serve/1 runs
 * the same set on an Erlang node, so a client of either language can use a
 * server of either language. */

#define REMOTE_RECEIVERS 2
/* Across a socket the sender's lead over its receiver is bounded by the
 * connection's buffers (or not at all): a lower cap than local. */
#define ONEWAY_REMOTE_MAX 5000000u

static void start_node(const char *name)
{
    kiln_node_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.name = name;
    cfg.cookie = g.cookie;
    /* perf/run starts a private EPMD and names it in ERL_EPMD_PORT; not
     * finding it is an error, not a reason to become one. */
    cfg.no_embedded_epmd = true;
    cfg.fragment_size = g.fragment_size;
    int rc = kiln_node_start(g.rt, &cfg, &g.node);
    if (rc != KILN_OK)
        die("kiln_node_start", rc);
}

static void stop_node(void)
{
    int rc = kiln_node_stop(g.node);
    if (rc != KILN_OK)
        die("kiln_node_stop", rc);
    g.node = NULL;
}

/* {Tag, self()} to `to`. */
static void send_tagged(kiln_term to, const char *tag)
{
    kiln_msg *m = kiln_msg_new(64);
    if (!m)
        die("kiln_msg_new", KILN_ENOMEM);
    kiln_term t = kiln_build(m, "{~a,~p}", tag, kiln_self());
    if (kiln_is_none(t))
        die("kiln_build", KILN_ENOMEM);
    kiln_msg_set_term(m, t);
    int rc = kiln_send(to, m);
    if (rc != KILN_OK)
        die("kiln_send", rc);
}

/* A one-way receiver for remote senders, which cannot share a semaphore:
 * {expect, N, From} answers {ready, self()}, then after N more messages of
 * any kind it sends {done, self()} to From (perf_bench.erl's
 * remote_receiver/0 does the same). */
struct rrecv {
    kiln_msg *expect; /* holds notify */
    kiln_term notify;
    uint64_t count, target;
};

static int rrecv_init(void *arg, void **state)
{
    (void)arg;
    struct rrecv *r = calloc(1, sizeof *r);
    if (!r)
        return KILN_ENOMEM;
    r->target = UINT64_MAX;
    *state = r;
    return KILN_OK;
}

static kiln_action rrecv_handle(void *state, kiln_msg *msg)
{
    struct rrecv *r = state;
    int64_t n;
    kiln_term from;
    /* The counted messages are integers: a type test first, as an Erlang
     * receive clause compiles to, rather than a format parsed per message. */
    kiln_term t = kiln_msg_term(msg);
    if (kiln_is_tuple(t) && kiln_match(t, "{expect,~i,~p}", &n, &from) == KILN_OK) {
        kiln_msg_free(r->expect);
        r->expect = kiln_msg_take(msg);
        r->notify = from;
        r->count = 0;
        r->target = (uint64_t)n;
        send_tagged(from, "ready");
    } else if (++r->count == r->target) {
        send_tagged(r->notify, "done");
    }
    return KILN_CONTINUE;
}

static void rrecv_terminate(void *state, kiln_term reason)
{
    (void)reason;
    struct rrecv *r = state;
    kiln_msg_free(r->expect);
    free(r);
}

static const kiln_behaviour rrecv_behaviour = {.name = "perf_remote_receiver",
                                               .init = rrecv_init,
                                               .handle = rrecv_handle,
                                               .terminate = rrecv_terminate};

struct serve_ctx {
    kiln_term echo, gs, par[PAR_PAIRS], recv[REMOTE_RECEIVERS];
};

static int ctl_init(void *arg, void **state)
{
    *state = arg;
    return KILN_OK;
}

static kiln_action ctl_handle(void *state, kiln_msg *msg)
{
    const struct serve_ctx *s = state;
    kiln_term from;
    if (kiln_match(kiln_msg_term(msg), "{hello,~p}", &from) != KILN_OK)
        return KILN_CONTINUE;
    kiln_msg *m = kiln_msg_new(1024);
    if (!m)
        die("kiln_msg_new", KILN_ENOMEM);
    kiln_term t = kiln_tuple(m, 5, kiln_atom_c("servers"), s->echo,
                             kiln_list_v(m, PAR_PAIRS, s->par, KILN_NIL),
                             kiln_list_v(m, REMOTE_RECEIVERS, s->recv, KILN_NIL), s->gs);
    if (kiln_is_none(t))
        die("building the servers reply", KILN_ENOMEM);
    kiln_msg_set_term(m, t);
    int rc = kiln_send(from, m);
    if (rc != KILN_OK)
        die("kiln_send", rc);
    return KILN_CONTINUE;
}

static const kiln_behaviour ctl_behaviour = {
    .name = "perf_ctl", .init = ctl_init, .handle = ctl_handle};

/* Runs until killed: perf/run ends the server with SIGTERM. */
static void serve(void)
{
    static struct serve_ctx s;
    start_rt();
    start_node(g.node_name);
    s.echo = spawn_echo();
    for (int i = 0; i < PAR_PAIRS; i++)
        s.par[i] = spawn_echo();
    for (int i = 0; i < REMOTE_RECEIVERS; i++) {
        int rc = kiln_spawn(g.rt, &rrecv_behaviour, NULL, NULL, &s.recv[i]);
        if (rc != KILN_OK)
            die("kiln_spawn(receiver)", rc);
    }
    s.gs = start_gs_echo();
    kiln_spawn_opts o;
    memset(&o, 0, sizeof o);
    o.register_as = "perf_ctl";
    kiln_term ctl;
    int rc = kiln_spawn(g.rt, &ctl_behaviour, &s, &o, &ctl);
    if (rc != KILN_OK)
        die("kiln_spawn(perf_ctl)", rc);
    size_t len;
    const char *txt = kiln_atom_text(kiln_node_name(g.node), &len);
    printf("READY %.*s\n", (int)len, txt);
    fflush(stdout);
    for (;;)
        pause();
}

/* What a client learnt from the server node's perf_ctl. */
static struct {
    kiln_msg *msg; /* owns the pids */
    kiln_term echo, gs, par[PAR_PAIRS], recv[REMOTE_RECEIVERS];
    sem_t done;
} g_remote;

static bool is_servers(kiln_term t, void *arg)
{
    (void)arg;
    return kiln_match(t, "{servers,_,_,_,_}") == KILN_OK;
}

static void list_pids(kiln_term list, kiln_term *out, size_t n)
{
    size_t i = 0;
    for (; kiln_is_cons(list) && i < n; list = kiln_tl(list))
        out[i++] = kiln_hd(list);
    if (i != n || !kiln_is_nil(list))
        die("the servers reply has the wrong number of pids", KILN_EBADTERM);
}

static void hello_fn(void *arg)
{
    (void)arg;
    kiln_term peer = kiln_atom_c(g.peer);
    int rc = kiln_node_connect(peer, 10000);
    if (rc != KILN_OK)
        die("kiln_node_connect", rc);
    kiln_msg *to_m = kiln_msg_new(64);
    if (!to_m)
        die("kiln_msg_new", KILN_ENOMEM);
    kiln_term to = kiln_build(to_m, "{perf_ctl,~A}", peer);
    send_tagged(to, "hello");
    kiln_msg_free(to_m);
    kiln_msg *r = NULL;
    rc = kiln_receive(is_servers, NULL, 10000, &r);
    if (rc != KILN_OK)
        die("no {servers, ...} reply from the server node's perf_ctl", rc);
    kiln_term pars, recvs;
    if (kiln_match(kiln_msg_term(r), "{servers,~p,~t,~t,~p}", &g_remote.echo, &pars, &recvs,
                   &g_remote.gs) != KILN_OK)
        die("malformed servers reply", KILN_EBADTERM);
    list_pids(pars, g_remote.par, PAR_PAIRS);
    list_pids(recvs, g_remote.recv, REMOTE_RECEIVERS);
    g_remote.msg = r;
    sem_post(&g_remote.done);
}

static void remote_hello(void)
{
    sem_init(&g_remote.done, 0, 0);
    kiln_term pid;
    int rc = kiln_spawn_fn(g.rt, hello_fn, NULL, NULL, &pid);
    if (rc != KILN_OK)
        die("kiln_spawn_fn(hello)", rc);
    wait_sem(&g_remote.done);
}

/* oneway_remote_*: the local one-way scenario's senders, but the receivers
 * are on the server node and report through messages, so the timing runs
 * in a process here. */
struct owr_ctx {
    unsigned pairs;
    struct ow_sender_arg send[REMOTE_RECEIVERS];
    uint64_t n;
    double rate[MAX_REPS];
    sem_t done;
};

static bool is_ready(kiln_term t, void *arg)
{
    (void)arg;
    return kiln_match(t, "{ready,_}") == KILN_OK;
}

static bool is_done(kiln_term t, void *arg)
{
    (void)arg;
    return kiln_match(t, "{done,_}") == KILN_OK;
}

static void expect_reply(kiln_match_fn match, int64_t timeout_ms, const char *what)
{
    kiln_msg *m = NULL;
    int rc = kiln_receive(match, NULL, timeout_ms, &m);
    if (rc != KILN_OK)
        die(what, rc);
    kiln_msg_free(m);
}

static uint64_t owr_run(void *arg, uint64_t n)
{
    struct owr_ctx *c = arg;
    /* The receiver must know n before the first message lands. */
    for (unsigned i = 0; i < c->pairs; i++) {
        kiln_msg *m = kiln_msg_new(64);
        if (!m)
            die("kiln_msg_new", KILN_ENOMEM);
        kiln_msg_set_term(m, kiln_build(m, "{expect,~i,~p}", (int64_t)n, kiln_self()));
        int rc = kiln_send(g_remote.recv[i], m);
        if (rc != KILN_OK)
            die("kiln_send", rc);
    }
    for (unsigned i = 0; i < c->pairs; i++)
        expect_reply(is_ready, 10000, "no {ready, _} from a remote receiver");
    uint64_t t0 = now_ns();
    for (unsigned i = 0; i < c->pairs; i++) {
        c->send[i] = (struct ow_sender_arg){.dest = g_remote.recv[i], .n = n};
        kiln_term pid;
        int rc = kiln_spawn_fn(g.rt, ow_sender, &c->send[i], NULL, &pid);
        if (rc != KILN_OK)
            die("kiln_spawn_fn(sender)", rc);
    }
    /* A receiver that never reaches n means messages were lost: fail
     * rather than hang until perf/run's timeout. */
    for (unsigned i = 0; i < c->pairs; i++)
        expect_reply(is_done, 120000, "a remote receiver did not count every message (lost?)");
    return now_ns() - t0;
}

static void owr_driver(void *arg)
{
    struct owr_ctx *c = arg;
    c->n = calibrate(owr_run, c, 10000, ONEWAY_REMOTE_MAX);
    for (int r = 0; r < g.reps; r++)
        c->rate[r] = (double)(c->n * c->pairs) * 1e9 / (double)owr_run(c, c->n);
    sem_post(&c->done);
}

static void bench_oneway_remote(const char *name, unsigned pairs)
{
    static struct owr_ctx c;
    memset(&c, 0, sizeof c);
    sem_init(&c.done, 0, 0);
    c.pairs = pairs;
    kiln_term pid;
    int rc = kiln_spawn_fn(g.rt, owr_driver, &c, NULL, &pid);
    if (rc != KILN_OK)
        die("kiln_spawn_fn(driver)", rc);
    wait_sem(&c.done);
    info(name, "pairs=%u msgs_per_sender=%" PRIu64, pairs, c.n);
    for (int r = 0; r < g.reps; r++)
        report(name, "msgs/s", c.rate[r]);
    sem_destroy(&c.done);
}

/* ---- main ---- */

struct scenario {
    const char *name;
    void (*run)(const char *name);
    bool remote; /* needs --node, --peer: talks to a server node */
};

static void s_number(const char *name) { bench_call_seq(name, REQ_NUMBER, KILN_NONE, 1000); }
static void s_string(const char *name) { bench_call_seq(name, REQ_STRING, KILN_NONE, 1000); }
static void s_pid(const char *name) { bench_call_seq(name, REQ_PID, KILN_NONE, 1000); }
static void s_binary(const char *name) { bench_call_seq(name, REQ_BINARY, KILN_NONE, 1000); }
static void s_par(const char *name) { bench_call_par(name, NULL); }
static void s_1to1(const char *name) { bench_oneway(name, 1); }
static void s_2to2(const char *name) { bench_oneway(name, 2); }
static void s_spawn(const char *name) { bench_spawn(name); }
static void s_mem(const char *name) { bench_mem(name); }
static void s_ring(const char *name) { bench_ring(name); }
static void s_etf_encode(const char *name) { bench_etf_encode(name); }
static void s_etf_decode(const char *name) { bench_etf_decode(name); }
static void s_gs_local(const char *name) { bench_gs_local(name); }
static void s_tcp(const char *name) { bench_tcp(name, TCP_MSG, 1000); }
static void s_tcp_big(const char *name) { bench_tcp(name, TCP_BIG, 10); }
/* Remote calls start at 100 calls, 10 for the megabyte. */
static void s_rnumber(const char *name) { bench_call_seq(name, REQ_NUMBER, g_remote.echo, 100); }
static void s_rstring(const char *name) { bench_call_seq(name, REQ_STRING, g_remote.echo, 100); }
static void s_rpid(const char *name) { bench_call_seq(name, REQ_PID, g_remote.echo, 100); }
static void s_rbinary(const char *name) { bench_call_seq(name, REQ_BINARY, g_remote.echo, 10); }
static void s_rpar(const char *name) { bench_call_par(name, g_remote.par); }
static void s_r1to1(const char *name) { bench_oneway_remote(name, 1); }
static void s_r2to2(const char *name) { bench_oneway_remote(name, 2); }

static const struct scenario scenarios[] = {
    {"call_seq_local_number", s_number, false},
    {"call_seq_local_string", s_string, false},
    {"call_seq_local_pid", s_pid, false},
    {"call_seq_local_binary_1mb", s_binary, false},
    {"call_par_local", s_par, false},
    {"oneway_local_1to1", s_1to1, false},
    {"oneway_local_2to2", s_2to2, false},
    {"spawn_1m", s_spawn, false},
    {"mem_per_process", s_mem, false},
    {"ring", s_ring, false},
    {"etf_encode", s_etf_encode, false},
    {"etf_decode", s_etf_decode, false},
    {"gen_server_call_local", s_gs_local, false},
    {"tcp_pingpong", s_tcp, false},
    {"tcp_echo_1mb", s_tcp_big, false},
    {"call_seq_remote_number", s_rnumber, true},
    {"call_seq_remote_string", s_rstring, true},
    {"call_seq_remote_pid", s_rpid, true},
    {"call_seq_remote_binary_1mb", s_rbinary, true},
    {"call_par_remote", s_rpar, true},
    {"oneway_remote_1to1", s_r1to1, true},
    {"oneway_remote_2to2", s_r2to2, true},
};

static _Noreturn void usage(void)
{
    fprintf(stderr, "usage: kiln_bench SCENARIO [--quick] [--reps N] [--workers N] [--send-budget N]\n"
                    "                  [--node NAME --peer NODE] [--cookie C] [--fragment-size B]   (*_remote)\n"
                    "       kiln_bench --serve NAME [--cookie C] [--workers N]\n"
                    "       kiln_bench --list\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const struct scenario *sc = NULL;
    bool serving = false;
    size_t nsc = sizeof scenarios / sizeof scenarios[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--list") == 0) {
            for (size_t k = 0; k < nsc; k++)
                puts(scenarios[k].name);
            return 0;
        } else if (strcmp(a, "--quick") == 0) {
            g.quick = true;
        } else if (strcmp(a, "--reps") == 0 && i + 1 < argc) {
            g.reps = atoi(argv[++i]);
            if (g.reps < 1 || g.reps > MAX_REPS)
                usage();
        } else if (strcmp(a, "--workers") == 0 && i + 1 < argc) {
            g.workers = (unsigned)atoi(argv[++i]);
        } else if (strcmp(a, "--send-budget") == 0 && i + 1 < argc) {
            g.send_budget = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (strcmp(a, "--serve") == 0 && i + 1 < argc) {
            serving = true;
            g.node_name = argv[++i];
        } else if (strcmp(a, "--node") == 0 && i + 1 < argc) {
            g.node_name = argv[++i];
        } else if (strcmp(a, "--peer") == 0 && i + 1 < argc) {
            g.peer = argv[++i];
        } else if (strcmp(a, "--cookie") == 0 && i + 1 < argc) {
            g.cookie = argv[++i];
        } else if (strcmp(a, "--fragment-size") == 0 && i + 1 < argc) {
            g.fragment_size = (size_t)strtoull(argv[++i], NULL, 10);
        } else if (a[0] != '-' && !sc) {
            for (size_t k = 0; k < nsc; k++)
                if (strcmp(a, scenarios[k].name) == 0)
                    sc = &scenarios[k];
            if (!sc) {
                fprintf(stderr, "kiln_bench: unknown scenario '%s' (see --list)\n", a);
                return 2;
            }
        } else {
            usage();
        }
    }
    if (serving) {
        if (sc)
            usage();
        serve();
    }
    if (!sc || (sc->remote && (!g.node_name || !g.peer)))
        usage();
    start_rt();
    if (sc->remote) {
        start_node(g.node_name);
        remote_hello();
    }
    sc->run(sc->name);
    if (sc->remote) {
        kiln_msg_free(g_remote.msg);
        stop_node();
    }
    stop_rt();
    return 0;
}
