/* Fixed amounts of work for perf/icount, which runs this under callgrind
 * and reports instructions per operation. This VM's timings drift by
 * ±30% from one minute to the next; an instruction count does not, so a
 * change worth 3% shows (docs/design.md, "Measured").
 *
 *   kiln_icount call|gs_call|oneway N
 *   kiln_icount remote_call N PEER_NODE CLIENT_NAME COOKIE
 *
 * call: one client function process makes N kiln_calls to an echo server;
 * gs_call: the same through kiln_gs_call to a kiln_gen_server; oneway: a
 * function process sends N messages to a behaviour that counts them;
 * remote_call: this program becomes node CLIENT_NAME, asks PEER_NODE (a
 * `kiln_bench --serve`) for its echo server and makes N kiln_calls to it,
 * so the count is the client side of a remote call. One worker, so the
 * count does not depend on how two threads interleave, and the epoll back
 * end: valgrind holds every other thread while one blocks in
 * io_uring_enter, so the first worker's waits on the ring stall under it
 * (docs/design.md). */
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/kiln.h"

static sem_t done;
static long n_ops;
static kiln_term server;
static long received;
static const char *peer_name;

static void die(const char *what, int rc)
{
    fprintf(stderr, "kiln_icount: %s: %s\n", what, kiln_strerror(rc));
    exit(1);
}

static int echo_init(void *arg, void **state)
{
    *state = arg;
    return KILN_OK;
}

static kiln_action echo_handle(void *state, kiln_msg *msg)
{
    (void)state;
    kiln_term from, req;
    if (kiln_match_call(kiln_msg_term(msg), &from, &req) == KILN_OK) {
        kiln_msg *r = kiln_msg_new(64 + KILN_REPLY_ROOM);
        if (!r)
            die("kiln_msg_new", KILN_ENOMEM);
        kiln_msg_set_term(r, kiln_term_copy(r, req));
        kiln_reply(from, r);
    }
    return KILN_CONTINUE;
}

static const kiln_behaviour echo = {.name = "icount_echo", .init = echo_init, .handle = echo_handle};

static kiln_gs_ret gs_init(void *arg, void **state)
{
    *state = arg;
    return kiln_gs_ok();
}

static kiln_gs_ret gs_call(void *state, kiln_term request, kiln_term from)
{
    (void)state;
    (void)from;
    return kiln_gs_reply(request);
}

static const kiln_gen_server gs_echo = {.name = "icount_gs", .init = gs_init, .handle_call = gs_call};

static void call_n(bool through_gs)
{
    for (long i = 0; i < n_ops; i++) {
        kiln_msg *req = kiln_msg_new(64 + KILN_CALL_ROOM);
        if (!req)
            die("kiln_msg_new", KILN_ENOMEM);
        kiln_msg_set_term(req, kiln_int(req, 12345));
        kiln_msg *reply = NULL;
        int rc = through_gs ? kiln_gs_call(NULL, server, req, -1, &reply, NULL)
                            : kiln_call(server, req, -1, &reply, NULL);
        if (rc != KILN_OK)
            die("call", rc);
        kiln_msg_free(reply);
    }
}

static void caller(void *arg)
{
    call_n(arg != NULL);
    sem_post(&done);
}

static bool is_servers(kiln_term t, void *arg)
{
    (void)arg;
    return kiln_match(t, "{servers,_,_,_,_}") == KILN_OK;
}

/* kiln_bench --serve's handshake: {hello, self()} to its perf_ctl, which
 * answers {servers, Echo, Par, Receivers, Gs}; then the calls. */
static void remote_caller(void *arg)
{
    (void)arg;
    kiln_term peer = kiln_atom_c(peer_name);
    int rc = kiln_node_connect(peer, 10000);
    if (rc != KILN_OK)
        die("kiln_node_connect", rc);
    kiln_msg *to_m = kiln_msg_new(64);
    kiln_msg *hello = kiln_msg_new(64);
    if (!to_m || !hello)
        die("kiln_msg_new", KILN_ENOMEM);
    kiln_term to = kiln_build(to_m, "{perf_ctl,~A}", peer);
    kiln_msg_set_term(hello, kiln_build(hello, "{hello,~p}", kiln_self()));
    rc = kiln_send(to, hello);
    if (rc != KILN_OK)
        die("kiln_send(hello)", rc);
    kiln_msg_free(to_m);
    kiln_msg *r = NULL;
    rc = kiln_receive(is_servers, NULL, 10000, &r);
    if (rc != KILN_OK)
        die("no {servers, ...} reply from the peer's perf_ctl", rc);
    if (kiln_match(kiln_msg_term(r), "{servers,~p,_,_,_}", &server) != KILN_OK)
        die("malformed servers reply", KILN_EBADTERM);
    call_n(false);
    kiln_msg_free(r);
    sem_post(&done);
}

static kiln_action count_handle(void *state, kiln_msg *msg)
{
    (void)state;
    (void)msg;
    if (++received == n_ops)
        sem_post(&done);
    return KILN_CONTINUE;
}

static const kiln_behaviour counter = {.name = "icount_counter", .init = echo_init, .handle = count_handle};

static void sender(void *arg)
{
    (void)arg;
    for (long i = 0; i < n_ops; i++) {
        kiln_msg *m = kiln_msg_new(0);
        if (!m)
            die("kiln_msg_new", KILN_ENOMEM);
        kiln_msg_set_term(m, kiln_small(1));
        int rc = kiln_send(server, m);
        if (rc != KILN_OK)
            die("kiln_send", rc);
    }
}

int main(int argc, char **argv)
{
    const char *sc = argc > 1 ? argv[1] : "";
    bool remote = strcmp(sc, "remote_call") == 0;
    if (argc != (remote ? 6 : 3) || (n_ops = atol(argv[2])) <= 0) {
        fprintf(stderr, "usage: kiln_icount call|gs_call|oneway N\n"
                        "       kiln_icount remote_call N PEER_NODE CLIENT_NAME COOKIE\n");
        return 2;
    }
    kiln_rt_config cfg;
    kiln_rt_config_init(&cfg);
    cfg.workers = 1;
    cfg.io_backend = KILN_IO_EPOLL;
    kiln_rt *rt;
    int rc = kiln_rt_start(&cfg, &rt);
    if (rc != KILN_OK)
        die("kiln_rt_start", rc);
    sem_init(&done, 0, 0);
    kiln_node *node = NULL;
    kiln_term pid;
    if (remote) {
        kiln_node_config nc;
        memset(&nc, 0, sizeof nc);
        nc.name = argv[4];
        nc.cookie = argv[5];
        /* perf/icount starts a private EPMD; not finding it is an error. */
        nc.no_embedded_epmd = true;
        peer_name = argv[3];
        rc = kiln_node_start(rt, &nc, &node);
        if (rc == KILN_OK)
            rc = kiln_spawn_fn(rt, remote_caller, NULL, NULL, &pid);
    } else if (strcmp(sc, "call") == 0) {
        rc = kiln_spawn(rt, &echo, NULL, NULL, &server);
        if (rc == KILN_OK)
            rc = kiln_spawn_fn(rt, caller, NULL, NULL, &pid);
    } else if (strcmp(sc, "gs_call") == 0) {
        rc = kiln_gs_start(rt, &gs_echo, NULL, NULL, &server, NULL);
        if (rc == KILN_OK)
            rc = kiln_spawn_fn(rt, caller, &server, NULL, &pid);
    } else if (strcmp(sc, "oneway") == 0) {
        rc = kiln_spawn(rt, &counter, NULL, NULL, &server);
        if (rc == KILN_OK)
            rc = kiln_spawn_fn(rt, sender, NULL, NULL, &pid);
    } else {
        fprintf(stderr, "kiln_icount: unknown scenario %s\n", sc);
        return 2;
    }
    if (rc != KILN_OK)
        die("spawn", rc);
    while (sem_wait(&done) != 0)
        ;
    if (node && (rc = kiln_node_stop(node)) != KILN_OK)
        die("kiln_node_stop", rc);
    rc = kiln_rt_stop(rt);
    if (rc != KILN_OK)
        die("kiln_rt_stop", rc);
    return 0;
}
