/* Built against an installed Kiln: one process, one message, one reply. */
#include <kiln/kiln.h>
#include <stdio.h>

static bool any(kiln_term t, void *arg)
{
    (void)t;
    (void)arg;
    return true;
}

static void echo_once(void *arg)
{
    (void)arg;
    kiln_msg *m;
    if (kiln_receive(any, NULL, 5000, &m) == KILN_OK) {
        kiln_term from;
        int64_t n;
        if (kiln_match(kiln_msg_term(m), "{~p,~i}", &from, &n) == KILN_OK) {
            kiln_msg *r = kiln_msg_new(32);
            kiln_msg_set_term(r, kiln_build(r, "{echo,~i}", n + 1));
            kiln_send(from, r);
        }
        kiln_msg_free(m);
    }
}

int main(void)
{
    kiln_rt *rt;
    if (kiln_rt_start(NULL, &rt) != KILN_OK)
        return 1;
    kiln_term pid;
    kiln_spawn_fn(rt, echo_once, NULL, NULL, &pid);
    kiln_msg *m = kiln_msg_new(32);
    kiln_msg_set_term(m, kiln_build(m, "{~p,~i}", pid, (int64_t)41));
    kiln_rt_send(rt, pid, m);
    int rc = kiln_rt_wait_idle(rt, 5000);
    kiln_rt_stop(rt);
    printf("hello from an installed kiln: %s\n", rc == KILN_OK ? "ok" : kiln_strerror(rc));
    return rc == KILN_OK ? 0 : 1;
}
