/* The erl driver for interop tests (erl_harness.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "erl_harness.h"

char g_host[64];

/* ---- small helpers ---- */

long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

void short_hostname(void)
{
    /* erl -sname uses the host name up to the first dot. */
    if (g_host[0])
        return;
    assert_int_equal(gethostname(g_host, sizeof g_host - 1), 0);
    char *dot = strchr(g_host, '.');
    if (dot)
        *dot = 0;
}

void require_erl(void)
{
    const char *path = getenv("PATH");
    char buf[512];
    for (const char *p = path; p && *p;) {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        snprintf(buf, sizeof buf, "%.*s/erl", (int)n, p);
        if (access(buf, X_OK) == 0)
            return;
        p = e ? e + 1 : NULL;
    }
    fail_msg("erl not found in PATH: the interop tests need Erlang/OTP (apt-get install erlang)");
}

/* A port below the kernel's ephemeral range: a port from bind(0) is one
 * the kernel may hand the next listener or outgoing connection of any
 * process (a node's own distribution listener took one once, and its EPMD
 * registration then waited in its own backlog). Below the range only
 * another test picking the same number at random can clash. */
uint16_t free_port(void)
{
    unsigned lo = 32768;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%u", &lo) != 1)
            lo = 32768;
        fclose(f);
    }
    unsigned base = lo > 12000 ? lo - 10000 : 1024, span = lo > 12000 ? 10000 : lo - 1024;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned seed = (unsigned)getpid() * 2654435761u ^ (unsigned)ts.tv_nsec;
    for (int tries = 0; tries < 1000; tries++) {
        seed = seed * 1103515245u + 12345u;
        uint16_t port = (uint16_t)(base + (seed >> 8) % span);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
        int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok)
            return port;
    }
    fail_msg("no free port below the ephemeral range (from %u)", lo);
    return 0;
}

int listen_any(uint16_t port, uint16_t *bound)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 16), 0);
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    if (bound)
        *bound = ntohs(a.sin_port);
    return fd;
}

int connect_local(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

void write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        assert_true(w > 0);
        b += w;
        n -= (size_t)w;
    }
}

/* Read what arrives within ms; 0 on EOF, -1 on timeout. */
ssize_t read_some(int fd, void *buf, size_t n, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, ms);
    if (r <= 0)
        return -1;
    ssize_t got = read(fd, buf, n);
    return got < 0 ? 0 : got;
}

/* Read until the peer closes (EPMD responses end that way); returns bytes. */
size_t read_to_eof(int fd, uint8_t *buf, size_t cap, int ms)
{
    size_t len = 0;
    long end = now_ms() + ms;
    for (;;) {
        long left = end - now_ms();
        assert_true(left > 0);
        ssize_t n = read_some(fd, buf + len, cap - len, (int)left);
        assert_true(n >= 0);
        if (n == 0)
            return len;
        len += (size_t)n;
        assert_true(len < cap);
    }
}

/* ---- the erl node under test ---- */

static struct erl_node *g_nodes[MAX_NODES];
static uint16_t g_epmds[MAX_EPMDS];

/* Each line on stdin is evaluated; results come back as one "@@ " line. */
static const char REPL[] =
    "Loop = fun L() -> case io:get_line('') of eof -> halt(); Line -> "
    "R = try {ok, T, _} = erl_scan:string(Line), {ok, Es} = erl_parse:parse_exprs(T), "
    "{value, V, _} = erl_eval:exprs(Es, []), V catch C:E -> {C, E} end, "
    "io:format(\"@@ ~s~n\", [io_lib:print(R, 1, 1000000, -1)]), L() end end, "
    "io:format(\"@@ ready~n\"), Loop().";

void log_append(struct erl_node *n, const char *line, size_t len)
{
    n->log = realloc(n->log, n->log_len + len + 2);
    memcpy(n->log + n->log_len, line, len);
    n->log_len += len;
    n->log[n->log_len++] = '\n';
    n->log[n->log_len] = 0;
}

/* Next line from erl's stdout into line (NUL-terminated); false on timeout. */
bool erl_line(struct erl_node *n, char *line, size_t cap, long deadline)
{
    for (;;) {
        char *nl = memchr(n->rbuf, '\n', n->rlen);
        if (nl) {
            size_t len = (size_t)(nl - n->rbuf);
            size_t c = len < cap - 1 ? len : cap - 1;
            memcpy(line, n->rbuf, c);
            line[c] = 0;
            memmove(n->rbuf, nl + 1, n->rlen - len - 1);
            n->rlen -= len + 1;
            return true;
        }
        long left = deadline - now_ms();
        if (left <= 0 || n->rlen == sizeof n->rbuf)
            return false;
        ssize_t got = read_some(n->out, n->rbuf + n->rlen, sizeof n->rbuf - n->rlen, (int)left);
        if (got <= 0)
            return false;
        n->rlen += (size_t)got;
    }
}

/* The result line of the next "@@" answer; other lines go to the log. */
bool erl_result(struct erl_node *n, char *out, size_t cap, int ms)
{
    long deadline = now_ms() + ms;
    char line[8192];
    while (erl_line(n, line, sizeof line, deadline)) {
        if (strncmp(line, "@@ ", 3) == 0) {
            snprintf(out, cap, "%s", line + 3);
            return true;
        }
        log_append(n, line, strlen(line));
    }
    return false;
}

void erl_eval_within(struct erl_node *n, const char *expr, char *out, size_t cap, int ms)
{
    char cmd[4096];
    int k = snprintf(cmd, sizeof cmd, "%s\n", expr);
    write_all(n->in, cmd, (size_t)k);
    if (!erl_result(n, out, cap, ms))
        fail_msg("erl did not answer `%s` within %d ms; its output so far:\n%s", expr, ms, n->log ? n->log : "");
}

void erl_eval(struct erl_node *n, const char *expr, char *out, size_t cap)
{
    erl_eval_within(n, expr, out, cap, 10000);
}

struct erl_node *erl_start(const char *sname, uint16_t epmd_port)
{
    require_erl();
    short_hostname();
    struct erl_node *n = calloc(1, sizeof *n);
    snprintf(n->sname, sizeof n->sname, "%s", sname);
    snprintf(n->full, sizeof n->full, "%s@%s", sname, g_host);
    int pin[2], pout[2];
    assert_int_equal(pipe2(pin, O_CLOEXEC), 0);
    assert_int_equal(pipe2(pout, O_CLOEXEC), 0);
    char port[16];
    snprintf(port, sizeof port, "%u", (unsigned)epmd_port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0); /* so the whole erl process tree can be killed */
        dup2(pin[0], 0);
        dup2(pout[1], 1);
        dup2(pout[1], 2);
        setenv("ERL_EPMD_PORT", port, 1);
        execlp("erl", "erl", "-noshell", "-sname", sname, "-setcookie", COOKIE, "-eval", REPL, (char *)NULL);
        _exit(127);
    }
    close(pin[0]);
    close(pout[1]);
    n->pid = pid;
    n->in = pin[1];
    n->out = pout[0];
    for (int i = 0; i < MAX_NODES; i++)
        if (!g_nodes[i]) {
            g_nodes[i] = n;
            break;
        }
    for (int i = 0; i < MAX_EPMDS; i++)
        if (!g_epmds[i] || g_epmds[i] == epmd_port) {
            g_epmds[i] = epmd_port;
            break;
        }
    char res[256];
    if (!erl_result(n, res, sizeof res, 15000))
        fail_msg("erl -sname %s did not start; output:\n%s", sname, n->log ? n->log : "");
    assert_string_equal(res, "ready");
    return n;
}

void erl_stop(struct erl_node *n)
{
    if (!n)
        return;
    close(n->in);
    long end = now_ms() + 3000;
    int st;
    while (waitpid(n->pid, &st, WNOHANG) == 0) {
        if (now_ms() > end) {
            kill(-n->pid, SIGKILL);
            waitpid(n->pid, &st, 0);
            break;
        }
        usleep(20000);
    }
    kill(-n->pid, SIGKILL); /* stragglers of its group (erl_child_setup) */
    close(n->out);
    for (int i = 0; i < MAX_NODES; i++)
        if (g_nodes[i] == n)
            g_nodes[i] = NULL;
    free(n->log);
    free(n);
}

/* Stop the private epmd erl started (it daemonised out of erl's group). */
void epmd_kill(uint16_t port)
{
    char p[16];
    snprintf(p, sizeof p, "%u", (unsigned)port);
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execlp("epmd", "epmd", "-port", p, "-kill", (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
}

int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < MAX_NODES; i++)
        erl_stop(g_nodes[i]);
    for (int i = 0; i < MAX_EPMDS; i++) {
        if (g_epmds[i])
            epmd_kill(g_epmds[i]);
        g_epmds[i] = 0;
    }
    return 0;
}

/* Wait until an expression's printed result contains want. */
void erl_await(struct erl_node *n, const char *expr, const char *want, int ms)
{
    char res[8192];
    long end = now_ms() + ms;
    do {
        erl_eval(n, expr, res, sizeof res);
        if (strstr(res, want))
            return;
        usleep(100000);
    } while (now_ms() < end);
    fail_msg("`%s` gave %s, wanted %s", expr, res, want);
}

bool log_has(struct erl_node *n, const char *text, int ms)
{
    long end = now_ms() + ms;
    char res[256];
    for (;;) {
        if (n->log && strstr(n->log, text))
            return true;
        if (now_ms() > end)
            return false;
        erl_eval(n, "ok.", res, sizeof res); /* pulls in pending log lines */
        usleep(100000);
    }
}

