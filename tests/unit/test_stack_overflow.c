/* A process that overflows its stack hits the guard page and is reported
 * with its pid instead of corrupting memory: a function process on its own
 * stack, and a behaviour's handler on the scheduler loop's stack. Runs in
 * a forked child, since the report ends the OS process. */
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile unsigned depth_sink;
static volatile unsigned depth_limit = 0xFFFFFFFFu; /* never reached: the stack is 64 KiB */

__attribute__((noinline)) static unsigned recurse(unsigned n)
{
    volatile char pad[512];
    pad[0] = (char)n;
    depth_sink = pad[0];
    if (n >= depth_limit)
        return 0;
    return recurse(n + 1) + pad[0];
}

static void overflow_body(void *arg)
{
    (void)arg;
    /* Wait until main has printed our pid: the overflow would otherwise
     * abort the child before the line the parent looks for is out. */
    kiln_msg *go;
    if (kiln_receive(kiln_test_any, NULL, 10000, &go) == KILN_OK)
        kiln_msg_free(go);
    depth_sink = recurse(0);
}

static kiln_action overflow_handle(void *state, kiln_msg *m)
{
    (void)state;
    (void)m;
    depth_sink = recurse(0);
    return KILN_CONTINUE;
}

static const kiln_behaviour overflow_beh = {"overflow", NULL, overflow_handle, NULL};

static void expect_overflow_report(bool in_handler)
{
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        kiln_rt_config cfg;
        kiln_rt_config_init(&cfg);
        cfg.workers = 1;
        cfg.stack_size = 64 * 1024;
        kiln_rt *rt;
        if (kiln_rt_start(&cfg, &rt) != KILN_OK)
            _exit(3);
        kiln_term pid;
        if (in_handler)
            kiln_spawn(rt, &overflow_beh, NULL, NULL, &pid);
        else
            kiln_spawn_fn(rt, overflow_body, NULL, NULL, &pid);
        fprintf(stderr, "spawned <0.%u.%u>\n", kiln_local_pid_id(pid), kiln_local_pid_serial(pid));
        fflush(stderr);
        kiln_rt_send(rt, pid, kiln_msg_new(0));
        kiln_rt_wait_idle(rt, 10000);
        _exit(0); /* not reached if the overflow is caught */
    }
    close(pipefd[1]);
    char buf[8192];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof(buf) - 1 && (r = read(pipefd[0], buf + len, sizeof(buf) - 1 - len)) > 0)
        len += (size_t)r;
    buf[len] = 0;
    close(pipefd[0]);
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    /* It must not have finished normally. */
    assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char expect[64];
    unsigned id, serial;
    assert_int_equal(sscanf(buf, "spawned <0.%u.%u>", &id, &serial), 2);
    snprintf(expect, sizeof expect, "stack overflow in process <0.%u.%u>", id, serial);
    if (!strstr(buf, expect))
        fail_msg("expected '%s' (status %d) in: %s", expect, status, buf);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
}

static void test_overflow_is_reported_with_pid(void **state)
{
    (void)state;
    expect_overflow_report(false);
}

static void test_overflow_in_a_handler_is_reported_with_pid(void **state)
{
    (void)state;
    expect_overflow_report(true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overflow_is_reported_with_pid),
        cmocka_unit_test(test_overflow_in_a_handler_is_reported_with_pid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
