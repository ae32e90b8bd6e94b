/* Network I/O for processes. Every call here blocks the calling process,
 * not its worker: the process parks while the operation is in flight and
 * other processes run. The runtime drives the sockets with io_uring, or
 * with epoll where io_uring is refused (EPERM/ENOSYS: containers,
 * kernel.io_uring_disabled) or where the configuration or the environment
 * variable KILN_IO_BACKEND=epoll asks for it.
 *
 * Sockets made by kiln_tcp_* belong to the runtime that made them (their
 * blocking mode depends on the back end); close them with kiln_io_close.
 * A timeout of -1 waits forever. On KILN_ESYS, kiln_io_errno() tells the
 * calling process what the system said. */
#ifndef KILN_IO_H
#define KILN_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "kiln/error.h"
#include "kiln/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)

typedef enum kiln_io_backend {
    KILN_IO_AUTO = 0, /* io_uring if the kernel allows it, else epoll */
    KILN_IO_URING,
    KILN_IO_EPOLL
} kiln_io_backend;

/* The back end rt runs: "io_uring" or "epoll". */
const char *kiln_io_backend_name(const kiln_rt *rt);

/* How receives have been done, for tests and tuning. With io_uring a
 * socket's first receive starts a multishot receive into buffers the
 * runtime provides (kernel 6.0 and later), and later receives take what
 * it has filled; kiln_rt_config's io_recv_* fields size it, and
 * KILN_IO_MULTISHOT=0 (or 1) overrides the configuration. */
typedef struct kiln_io_stats {
    int recv_multishot;         /* 1 while receives use multishot receives */
    uint64_t multishot_arms;    /* multishot receives started */
    uint64_t multishot_buffers; /* buffers the kernel filled for them */
    uint64_t buffer_shortages;  /* multishot receives ended with every buffer in use */
    uint64_t oneshot_recvs;     /* receives that waited through a one-shot operation */
} kiln_io_stats;
/* All zero for the epoll back end. */
int kiln_io_get_stats(const kiln_rt *rt, kiln_io_stats *out);

/* Listen on addr:port (addr NULL or "" = all IPv4 addresses; port 0 = any;
 * the port bound is written to *bound_port when not NULL). Callable from
 * any thread. */
int kiln_tcp_listen(kiln_rt *rt, const char *addr, uint16_t port, int backlog, int *fd, uint16_t *bound_port);
/* Accept one connection (in a process). */
int kiln_tcp_accept(int listen_fd, int64_t timeout_ms, int *fd);
/* Connect to addr (a dotted IPv4 address or a host name) : port (in a process). */
int kiln_tcp_connect(const char *addr, uint16_t port, int64_t timeout_ms, int *fd);
/* Receive up to cap bytes (in a process). *got = 0 means the peer closed. */
int kiln_io_recv(int fd, void *buf, size_t cap, int64_t timeout_ms, size_t *got);
/* Send all len bytes (in a process); several frames in one iovec array go
 * out in one submission. */
int kiln_io_send(int fd, const void *buf, size_t len, int64_t timeout_ms);
int kiln_io_sendv(int fd, const struct iovec *iov, int iovcnt, int64_t timeout_ms);
/* Close fd, from any thread or process. A process waiting on fd (a
 * receive, send or accept) is woken and its call fails with KILN_ESYS,
 * kiln_io_errno() EBADF, as gen_tcp:recv returns {error, closed} when
 * another process closes the socket. A process that only starts a call on
 * fd after it is closed may meet a new socket with the same number, as
 * with close(2) itself. */
int kiln_io_close(int fd);
/* errno of the calling process's last KILN_ESYS from this API. */
int kiln_io_errno(void);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif
