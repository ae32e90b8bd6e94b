/* The user guide's example: a behaviour server answering calls, a function
 * process calling it, a monitor that sees the server go. */
#include <kiln/kiln.h>
#include <stdio.h>

/* The server: state is a counter; {add, N} adds, get returns it. */
static int counter_init(void *arg, void **state)
{
    static int64_t total;
    total = arg ? *(int64_t *)arg : 0;
    *state = &total;
    return KILN_OK;
}

static kiln_action counter_handle(void *state, kiln_msg *msg)
{
    int64_t *total = state, n;
    kiln_term from, req;
    if (kiln_match_call(kiln_msg_term(msg), &from, &req) != KILN_OK)
        return KILN_CONTINUE; /* not a call: ignore it */
    kiln_msg *reply = kiln_msg_new(32);
    if (kiln_match(req, "{add,~i}", &n) == KILN_OK) {
        *total += n;
        kiln_msg_set_term(reply, KILN_ATOM_OK);
    } else if (kiln_match(req, "get") == KILN_OK) {
        kiln_msg_set_term(reply, kiln_int(reply, *total));
    } else if (kiln_match(req, "stop") == KILN_OK) {
        kiln_msg_set_term(reply, KILN_ATOM_OK);
        kiln_reply(from, reply);
        return kiln_stop(kiln_atom_c("asked_to"));
    } else {
        kiln_msg_set_term(reply, kiln_build(reply, "{error,unknown_request}"));
    }
    kiln_reply(from, reply);
    return KILN_CONTINUE;
}

static const kiln_behaviour counter = {
    .name = "counter", .init = counter_init, .handle = counter_handle};

static bool is_down(kiln_term t, void *arg)
{
    (void)arg;
    return kiln_match(t, "{'DOWN',_,process,_,_}") == KILN_OK;
}

/* The client runs on its own stack and may block anywhere. */
static void client(void *arg)
{
    kiln_term server = *(kiln_term *)arg;
    kiln_msg *ref_store = kiln_msg_new(64), *reply, *down;
    kiln_term mref;
    kiln_monitor(server, ref_store, &mref);
    for (int64_t i = 1; i <= 10; i++) {
        kiln_msg *req = kiln_msg_new(32);
        kiln_msg_set_term(req, kiln_build(req, "{add,~i}", i));
        if (kiln_call(server, req, 1000, &reply, NULL) == KILN_OK)
            kiln_msg_free(reply);
    }
    kiln_msg *get = kiln_msg_new(16);
    kiln_msg_set_term(get, kiln_atom_c("get"));
    if (kiln_call(server, get, 1000, &reply, NULL) == KILN_OK) {
        printf("total: ");
        kiln_term_fprint(stdout, kiln_msg_term(reply));
        printf("\n");
        kiln_msg_free(reply);
    }
    kiln_msg *stop = kiln_msg_new(16);
    kiln_msg_set_term(stop, kiln_atom_c("stop"));
    if (kiln_call(server, stop, 1000, &reply, NULL) == KILN_OK)
        kiln_msg_free(reply);
    if (kiln_receive(is_down, NULL, 1000, &down) == KILN_OK) {
        printf("monitor: ");
        kiln_term_fprint(stdout, kiln_msg_term(down));
        printf("\n");
        kiln_msg_free(down);
    }
    kiln_msg_free(ref_store);
}

int main(void)
{
    kiln_rt *rt;
    int rc = kiln_rt_start(NULL, &rt);
    if (rc != KILN_OK) {
        fprintf(stderr, "start: %s\n", kiln_strerror(rc));
        return 1;
    }
    int64_t start = 100;
    kiln_term server;
    kiln_spawn_opts opts = {.register_as = "counter"};
    kiln_spawn(rt, &counter, &start, &opts, &server);
    kiln_spawn_fn(rt, client, &server, NULL, NULL);
    kiln_rt_wait_idle(rt, 5000);
    kiln_rt_stop(rt);
    return 0;
}
