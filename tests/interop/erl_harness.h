/* A real erl for interop tests: started on a private epmd port (its own
 * ERL_EPMD_PORT), driven through a small read-eval-print loop on its
 * stdin/stdout, and stopped with its whole process group. erl missing is
 * a test failure, never a skip. Shared by the tests in this directory. */
#ifndef KILN_TEST_ERL_HARNESS_H
#define KILN_TEST_ERL_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define COOKIE "secret"
#define MAX_NODES 4
#define MAX_EPMDS 4

struct erl_node {
    pid_t pid;
    int in, out;
    char sname[64];
    char full[128];
    char *log;   /* every line that was not a result: erl's own reports */
    size_t log_len;
    char rbuf[65536];
    size_t rlen;
};

extern char g_host[64];

long now_ms(void);
void short_hostname(void);
void require_erl(void);
uint16_t free_port(void);
int listen_any(uint16_t port, uint16_t *bound);
int connect_local(uint16_t port);
void write_all(int fd, const void *p, size_t n);
ssize_t read_some(int fd, void *buf, size_t n, int ms);
size_t read_to_eof(int fd, uint8_t *buf, size_t cap, int ms);
void log_append(struct erl_node *n, const char *line, size_t len);
bool erl_line(struct erl_node *n, char *line, size_t cap, long deadline);
bool erl_result(struct erl_node *n, char *out, size_t cap, int ms);
void erl_eval(struct erl_node *n, const char *expr, char *out, size_t cap);
/* The same with its own limit, for work that is slow under sanitizers
 * (the 100 MB binaries); erl_eval waits 10 s. */
void erl_eval_within(struct erl_node *n, const char *expr, char *out, size_t cap, int ms);
struct erl_node *erl_start(const char *sname, uint16_t epmd_port);
void erl_stop(struct erl_node *n);
void epmd_kill(uint16_t port);
int teardown(void **state);
void erl_await(struct erl_node *n, const char *expr, const char *want, int ms);
bool log_has(struct erl_node *n, const char *text, int ms);

#endif
