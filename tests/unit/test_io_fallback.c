/* When the kernel refuses io_uring, or part of it, the runtime falls back
 * by itself. Each case runs in a forked child under a seccomp filter that
 * makes one system call fail the way a container or an older kernel
 * would, starts a runtime there, and checks which back end it chose and
 * that a real echo over loopback still works. */
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__x86_64__)
#define THIS_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define THIS_ARCH AUDIT_ARCH_AARCH64
#else
#error "seccomp architecture for this test"
#endif

#define IORING_REGISTER_PBUF_RING_OP 22u /* io_uring_register opcode of buffer rings */
#define ANY_OPCODE UINT32_MAX

/* Makes syscall nr (only with opcode as its second argument, unless
 * ANY_OPCODE) fail with err in this process and its threads. */
static int refuse(long nr, uint32_t opcode, int err)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, THIS_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, opcode, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, opcode == ANY_OPCODE ? SECCOMP_RET_ERRNO | (uint32_t)err : SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (uint32_t)err),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -1;
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
}

static void echo_once(void *arg)
{
    int lfd = (int)(intptr_t)arg, fd;
    if (kiln_tcp_accept(lfd, 5000, &fd) != KILN_OK)
        return;
    char buf[64];
    size_t got;
    for (int i = 0; i < 3; i++) {
        if (kiln_io_recv(fd, buf, sizeof buf, 5000, &got) != KILN_OK || got == 0)
            break;
        if (kiln_io_send(fd, buf, got, 5000) != KILN_OK)
            break;
    }
    kiln_io_close(fd);
}

/* A blocking client on this thread: three round trips through a Kiln
 * process. */
static bool echo_works(kiln_rt *rt)
{
    int lfd;
    uint16_t port;
    if (kiln_tcp_listen(rt, "127.0.0.1", 0, 4, &lfd, &port) != KILN_OK)
        return false;
    if (kiln_spawn_fn(rt, echo_once, (void *)(intptr_t)lfd, NULL, NULL) != KILN_OK)
        return false;
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = c >= 0 && connect(c, (struct sockaddr *)&sa, sizeof sa) == 0;
    /* Let the echo process block in its first receive: a receive that
     * finds data already there takes it without any ring operation, and
     * the one-shot case must see one (it failed ~1 run in 20 without). */
    usleep(50 * 1000);
    for (int i = 0; ok && i < 3; i++) {
        char out[8], in[8];
        snprintf(out, sizeof out, "ping%d", i);
        size_t n = strlen(out), have = 0;
        ok = write(c, out, n) == (ssize_t)n;
        while (ok && have < n) {
            ssize_t r = read(c, in + have, n - have);
            ok = r > 0;
            have += ok ? (size_t)r : 0;
        }
        ok = ok && memcmp(in, out, n) == 0;
    }
    if (c >= 0)
        close(c);
    kiln_rt_wait_idle(rt, 5000);
    close(lfd);
    return ok;
}

enum { EXPECT_EPOLL, EXPECT_URING_ONESHOT };

/* Exit status: 0 if the runtime behaved, else a step number. */
static int child(long nr, uint32_t opcode, int err, int expect)
{
    if (refuse(nr, opcode, err) != 0) {
        perror("seccomp");
        return 10;
    }
    kiln_rt_config cfg;
    kiln_rt_config_init(&cfg);
    cfg.workers = 2;
    if (expect == EXPECT_EPOLL) {
        /* Asked for by name, io_uring is an error, not a silent switch. */
        cfg.io_backend = KILN_IO_URING;
        kiln_rt *rt = NULL;
        int rc = kiln_rt_start(&cfg, &rt);
        if (rc == KILN_OK) {
            fprintf(stderr, "io_uring forced: started anyway on %s\n", kiln_io_backend_name(rt));
            kiln_rt_stop(rt);
            return 11;
        }
        cfg.io_backend = KILN_IO_AUTO;
    }
    kiln_rt *rt = NULL;
    int rc = kiln_rt_start(&cfg, &rt);
    if (rc != KILN_OK) {
        fprintf(stderr, "kiln_rt_start: %s\n", kiln_strerror(rc));
        return 12;
    }
    const char *want = expect == EXPECT_EPOLL ? "epoll" : "io_uring";
    if (strcmp(kiln_io_backend_name(rt), want) != 0) {
        fprintf(stderr, "back end %s, expected %s\n", kiln_io_backend_name(rt), want);
        return 13;
    }
    if (!echo_works(rt)) {
        fprintf(stderr, "echo failed on %s\n", want);
        return 14;
    }
    kiln_io_stats st;
    kiln_io_get_stats(rt, &st);
    if (st.recv_multishot || st.multishot_arms) {
        fprintf(stderr, "multishot receives in use (%d, %lu arms)\n", st.recv_multishot,
                (unsigned long)st.multishot_arms);
        return 15;
    }
    if (expect == EXPECT_URING_ONESHOT && st.oneshot_recvs == 0) {
        fprintf(stderr, "no one-shot receive counted\n");
        return 16;
    }
    kiln_rt_stop(rt);
    return 0;
}

static void run_case(const char *what, long nr, uint32_t opcode, int err, int expect)
{
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(child(nr, opcode, err, expect));
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "%s: child status %d\n", what, status);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* A container's seccomp profile, or kernel.io_uring_disabled. */
static void test_eperm_gives_epoll(void **state)
{
    (void)state;
    run_case("io_uring_setup EPERM", SYS_io_uring_setup, ANY_OPCODE, EPERM, EXPECT_EPOLL);
}

/* A kernel built without io_uring. */
static void test_enosys_gives_epoll(void **state)
{
    (void)state;
    run_case("io_uring_setup ENOSYS", SYS_io_uring_setup, ANY_OPCODE, ENOSYS, EXPECT_EPOLL);
}

/* A kernel before 5.19: io_uring, but no provided buffer rings. */
static void test_no_buffer_rings_gives_oneshot_receives(void **state)
{
    (void)state;
    run_case("no PBUF_RING", SYS_io_uring_register, IORING_REGISTER_PBUF_RING_OP, EINVAL, EXPECT_URING_ONESHOT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eperm_gives_epoll),
        cmocka_unit_test(test_enosys_gives_epoll),
        cmocka_unit_test(test_no_buffer_rings_gives_oneshot_receives),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
