/* kiln-node: a Kiln node an Erlang user can talk to from erl.
 *
 *   kiln-node [--name kiln] [--cookie kiln] [--epmd-port 4369] [--hidden]
 *             [--workers N] [--seconds N]
 *
 * It serves EPMD itself when nothing listens on the EPMD port, and hosts
 * a supervisor (one_for_one) with two gen_servers:
 *   echo     gen_server:call({echo, N}, X) returns X; a plain {From, Msg}
 *            is answered with From ! {EchoPid, Msg}
 *   counter  cast or call incr, call get; call crash makes it crash and
 *            the supervisor restart it at 0
 * and one function for rpc: rpc:call(N, kiln, info, []) returns a map.
 * It runs until SIGINT/SIGTERM (or --seconds). */
#define _POSIX_C_SOURCE 200809L /* sigwait, sigtimedwait, pthread_sigmask */

#include <kiln/kiln.h>

#include <pthread.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static kiln_rt *g_rt;
static kiln_node *g_node;
static uint64_t g_started_ms;

/* ---- echo ---- */

static kiln_gs_ret echo_init(void *arg, void **state)
{
    (void)arg;
    *state = NULL;
    return kiln_gs_ok();
}

static kiln_gs_ret echo_call(void *state, kiln_term request, kiln_term from)
{
    (void)state;
    (void)from;
    /* The request lives in the borrowed request message: reply with a copy. */
    kiln_msg *r = kiln_msg_new(256);
    if (!r)
        return kiln_gs_stop(KILN_ATOM_ERROR);
    kiln_msg_set_term(r, kiln_term_copy(r, request));
    return kiln_gs_reply_msg(r);
}

static kiln_gs_ret echo_info(void *state, kiln_msg *msg)
{
    (void)state;
    kiln_term from, body;
    if (kiln_match(kiln_msg_term(msg), "{~p,~t}", &from, &body) == KILN_OK) {
        kiln_msg *r = kiln_msg_new(256);
        if (r) {
            kiln_msg_set_term(r, kiln_tuple(r, 2, kiln_self(), kiln_term_copy(r, body)));
            kiln_send(from, r);
        }
    }
    return kiln_gs_noreply();
}

static const kiln_gen_server echo_gs = {
    .name = "echo", .init = echo_init, .handle_call = echo_call, .handle_info = echo_info};

/* ---- counter ---- */

static kiln_gs_ret counter_init(void *arg, void **state)
{
    (void)arg;
    int64_t *n = calloc(1, sizeof(*n));
    if (!n)
        return kiln_gs_stop(KILN_ATOM_ERROR);
    *state = n; /* a restart starts again at 0 */
    return kiln_gs_ok();
}

static kiln_gs_ret counter_call(void *state, kiln_term request, kiln_term from)
{
    (void)from;
    int64_t *n = state;
    if (request == kiln_atom_c("incr"))
        return kiln_gs_reply(kiln_small(++*n));
    if (request == kiln_atom_c("get"))
        return kiln_gs_reply(kiln_small(*n));
    if (request == kiln_atom_c("crash"))
        return kiln_gs_stop(kiln_atom_c("crash_requested"));
    return kiln_gs_reply(kiln_atom_c("unknown_request"));
}

static kiln_gs_ret counter_cast(void *state, kiln_term msg)
{
    int64_t *n = state;
    if (msg == kiln_atom_c("incr"))
        ++*n;
    return kiln_gs_noreply();
}

static void counter_terminate(void *state, kiln_term reason)
{
    (void)reason;
    free(state);
}

static const kiln_gen_server counter_gs = {.name = "counter",
                                           .init = counter_init,
                                           .handle_call = counter_call,
                                           .handle_cast = counter_cast,
                                           .terminate = counter_terminate};

/* ---- rpc kiln:info/0 ---- */

static int kiln_info(kiln_term args, kiln_msg **result, void *arg)
{
    (void)args;
    (void)arg;
    kiln_msg *m = kiln_msg_new(512);
    if (!m)
        return KILN_ENOMEM;
    kiln_rt_stats st;
    kiln_rt_get_stats(g_rt, &st);
    const char *io = kiln_io_backend_name(g_rt);
    kiln_term keys[] = {kiln_atom_c("node"),       kiln_atom_c("workers"),    kiln_atom_c("processes"),
                        kiln_atom_c("uptime_ms"),  kiln_atom_c("io_backend"), kiln_atom_c("serves_epmd"),
                        kiln_atom_c("spawned"),    kiln_atom_c("runtime")};
    kiln_term vals[] = {kiln_node_name(g_node),
                        kiln_small((int64_t)kiln_rt_workers(g_rt)),
                        kiln_small((int64_t)kiln_rt_process_count(g_rt)),
                        kiln_small((int64_t)(kiln_now_ms() - g_started_ms)),
                        kiln_atom_c(io),
                        kiln_node_serves_epmd(g_node) ? KILN_ATOM_TRUE : KILN_ATOM_FALSE,
                        kiln_small((int64_t)st.spawned),
                        kiln_atom_c("kiln")};
    kiln_msg_set_term(m, kiln_map(m, sizeof keys / sizeof keys[0], keys, vals));
    *result = m;
    return KILN_OK;
}

/* ---- main ---- */

static void usage(void)
{
    fprintf(stderr, "usage: kiln-node [--name NAME] [--cookie C] [--epmd-port P] [--hidden] [--workers N] [--seconds N]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *name = "kiln", *cookie = "kiln";
    unsigned epmd_port = 0, workers = 0, seconds = 0;
    bool hidden = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--name") && i + 1 < argc)
            name = argv[++i];
        else if (!strcmp(argv[i], "--cookie") && i + 1 < argc)
            cookie = argv[++i];
        else if (!strcmp(argv[i], "--epmd-port") && i + 1 < argc)
            epmd_port = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--workers") && i + 1 < argc)
            workers = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--hidden"))
            hidden = true;
        else
            usage();
    }
    /* Block the stop signals before threads start, then wait for them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    kiln_rt_config rc_cfg;
    kiln_rt_config_init(&rc_cfg);
    rc_cfg.workers = workers;
    int rc = kiln_rt_start(&rc_cfg, &g_rt);
    if (rc != KILN_OK) {
        fprintf(stderr, "kiln-node: runtime: %s\n", kiln_strerror(rc));
        return 1;
    }
    g_started_ms = kiln_now_ms();
    kiln_node_config nc = {.name = name, .cookie = cookie, .hidden = hidden, .epmd_port = (uint16_t)epmd_port};
    rc = kiln_node_start(g_rt, &nc, &g_node);
    if (rc != KILN_OK) {
        fprintf(stderr, "kiln-node: node: %s\n", kiln_strerror(rc));
        kiln_rt_stop(g_rt);
        return 1;
    }
    kiln_node_register_rpc(g_node, "kiln", "info", 0, kiln_info, NULL);

    static kiln_gs_child echo_child = {.gs = &echo_gs, .opts = {.name = "echo"}};
    static kiln_gs_child counter_child = {.gs = &counter_gs, .opts = {.name = "counter"}};
    kiln_child_spec children[] = {
        {.id = "echo", .start = kiln_gs_child_start, .arg = &echo_child, .restart = KILN_PERMANENT},
        {.id = "counter", .start = kiln_gs_child_start, .arg = &counter_child, .restart = KILN_PERMANENT},
    };
    kiln_sup_spec sup = {.strategy = KILN_ONE_FOR_ONE, .intensity = 10, .period_ms = 10000,
                         .children = children, .nchildren = 2};
    kiln_term sup_pid;
    kiln_msg *why = NULL;
    rc = kiln_sup_start(g_rt, &sup, "kiln_sup", &sup_pid, &why);
    if (rc != KILN_OK) {
        fprintf(stderr, "kiln-node: supervisor: %s\n", kiln_strerror(rc));
        kiln_msg_free(why);
        kiln_node_stop(g_node);
        kiln_rt_stop(g_rt);
        return 1;
    }
    size_t len;
    const char *self = kiln_atom_text(kiln_node_name(g_node), &len);
    printf("kiln-node: %.*s is up (%s node, cookie %s, io %s); %s EPMD on port %u, distribution on port %u\n",
           (int)len, self, hidden ? "hidden" : "visible", cookie, kiln_io_backend_name(g_rt),
           kiln_node_serves_epmd(g_node) ? "serving" : "registered with",
           epmd_port ? epmd_port : (getenv("ERL_EPMD_PORT") ? (unsigned)atoi(getenv("ERL_EPMD_PORT")) : 4369u),
           kiln_node_port(g_node));
    fflush(stdout);

    if (seconds) {
        struct timespec ts = {seconds, 0};
        sigtimedwait(&stop, NULL, &ts);
    } else {
        int sig;
        sigwait(&stop, &sig);
    }
    printf("kiln-node: stopping\n");
    fflush(stdout);
    kiln_node_stop(g_node);
    kiln_rt_stop(g_rt);
    return 0;
}
